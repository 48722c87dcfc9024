/* Throughput over wall time (see rates.h). */
#include "config.h"

#include "daemon/server/rates.h"

void dsv_rates_sample(struct dsv_rates *r, uint64_t now_ns, uint64_t decoded, uint64_t prefilled) {
        r->head = r->n ? (r->head + 1) % DSV_RATES_SAMPLES : 0;
        r->s[r->head].t_ns = now_ns;
        r->s[r->head].decoded = decoded;
        r->s[r->head].prefilled = prefilled;
        if (r->n < DSV_RATES_SAMPLES)
                r->n++;
}

void dsv_rates_get(const struct dsv_rates *r, uint64_t now_ns, uint64_t decoded, uint64_t prefilled, float *decode_per_s,
                   float *prefill_per_s, uint32_t *window_ms) {
        unsigned k = r->head;
        double dt;
        *decode_per_s = *prefill_per_s = 0;
        *window_ms = 0;
        if (!r->n)
                return;
        /* walk back from the newest sample to the first one a window old */
        for (unsigned i = 0; i + 1 < r->n && now_ns - r->s[k].t_ns < DSV_RATES_WINDOW_NS; i++)
                k = (k + DSV_RATES_SAMPLES - 1) % DSV_RATES_SAMPLES;
        if (now_ns <= r->s[k].t_ns)
                return;
        dt = (double)(now_ns - r->s[k].t_ns) / 1e9;
        *decode_per_s = decoded >= r->s[k].decoded ? (float)((double)(decoded - r->s[k].decoded) / dt) : 0;
        *prefill_per_s = prefilled >= r->s[k].prefilled ? (float)((double)(prefilled - r->s[k].prefilled) / dt) : 0;
        *window_ms = (uint32_t)((now_ns - r->s[k].t_ns) / 1000000ull);
}
