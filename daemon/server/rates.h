/* Throughput over wall time for `dsv32 status`: the event loop samples the engine's token
 * counters every tick and a rate is the counter's growth over the last second of wall
 * time, so it falls to 0 within a second of the daemon going idle and a long idle gap
 * never averages into the next figure. (The engine's own per-step figure froze at the last
 * busy step.) */
#pragma once

#include <stdint.h>

#define DSV_RATES_WINDOW_NS 1000000000ull
#define DSV_RATES_SAMPLES 32 /* at a 100 ms tick: 3.2 s of history */

struct dsv_rates {
        struct {
                uint64_t t_ns, decoded, prefilled;
        } s[DSV_RATES_SAMPLES];
        unsigned head, n; /* s[head] is the newest of n samples */
};

/* Records the counters (monotonic: tokens generated, tokens prefilled) at time now_ns. */
void dsv_rates_sample(struct dsv_rates *r, uint64_t now_ns, uint64_t decoded, uint64_t prefilled);
/* Tokens per second from the newest sample at least DSV_RATES_WINDOW_NS before now_ns (or
 * the oldest one) to the counters now; *window_ms gets the span used (0 and rates 0 when
 * there is no sample yet). */
void dsv_rates_get(const struct dsv_rates *r, uint64_t now_ns, uint64_t decoded, uint64_t prefilled, float *decode_per_s,
                   float *prefill_per_s, uint32_t *window_ms);
