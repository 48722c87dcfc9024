/* Stop strings (GENERATE key 14): a matcher over a request's detokenised text stream. It
 * owns the rule of which bytes may be shown: it holds back only the longest tail of the
 * stream that could still begin a stop string, and when a stop string completes it releases
 * what precedes it and drops the rest for good. The match reported is the first to complete
 * in the stream (the smallest end offset; at the same end the longest string, then the
 * lowest index), so the released text and the match do not depend on how the stream was cut
 * into pieces (tokens). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/util.h"

#define DSV_STOP_MAX_STRINGS 8
#define DSV_STOP_MAX_BYTES 64

struct dsv_stop {
        uint32_t n;
        uint8_t len[DSV_STOP_MAX_STRINGS];
        char s[DSV_STOP_MAX_STRINGS][DSV_STOP_MAX_BYTES];
        char held[DSV_STOP_MAX_BYTES]; /* the tail that could still begin a stop string */
        uint32_t n_held;
        int matched; /* index of the string that matched, or -1 */
};

/* Sets up m for n strings (each 1..DSV_STOP_MAX_BYTES bytes). -EINVAL (with nothing set up)
 * for too many strings or a length out of range. */
int dsv_stop_init(struct dsv_stop *m, const char *const *s, const uint32_t *len, uint32_t n);

/* Feeds the next n bytes of the stream: appends to out what can be shown, and returns the
 * index of the stop string this completed, -1 when none did, or -ENOMEM. After a match every
 * further byte is dropped. */
int dsv_stop_feed(struct dsv_stop *m, const char *p, size_t n, struct dsv_strbuf *out);

/* The stream ended without a match: appends what was held back. */
int dsv_stop_finish(struct dsv_stop *m, struct dsv_strbuf *out);
