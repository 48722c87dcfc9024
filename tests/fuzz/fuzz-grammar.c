/* libFuzzer target: the structured-output grammar (daemon/grammar). Input: a JSON schema,
 * then a NUL byte, then bytes for its matcher. A schema that compiles gets its matcher fed
 * those bytes one at a time (never crashing, done only at depth 0), and at every state the
 * mask over a small vocabulary (every single byte, some multi-byte pieces) must equal a
 * brute-force check of each token on a copy of the state. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "daemon/grammar/grammar.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const pieces[] = {"\"", "\":", "\",\"", "{\"", "}", "]", "[", ",", "\\u00", "\\", "e9", "12",
                                     "-0.5e+", "true", "null", "\xc3\xa9", "\xe2\x82", "\xac", "ab", "a\"}"};
#define N_PIECES (sizeof(pieces) / sizeof(*pieces))
#define N_VOCAB (256 + N_PIECES + 1) /* the last id: EOS */

static bool token(void *ud, int32_t id, const char **p, size_t *n) {
        static char bytes[256];
        (void)ud;
        if (id < 256) {
                bytes[id] = (char)id;
                *p = &bytes[id];
                *n = 1;
                return true;
        }
        if (id < 256 + (int32_t)N_PIECES) {
                *p = pieces[id - 256];
                *n = strlen(*p);
                return true;
        }
        return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        const uint8_t *nul = memchr(data, 0, size);
        size_t slen = nul ? (size_t)(nul - data) : size;
        struct dsv_grammar *g = NULL;
        struct dsv_gvocab *v = NULL;
        struct dsv_gmatch *m = NULL, *t = NULL;
        struct dsv_error err;
        uint32_t mask[(N_VOCAB + 31) / 32];

        if (dsv_grammar_compile((const char *)data, slen, &g, &err) < 0)
                return 0;
        if (dsv_gvocab_new(N_VOCAB, N_VOCAB - 1, token, NULL, &v) < 0 || dsv_gmatch_new(g, &m) < 0 || dsv_gmatch_new(g, &t) < 0)
                abort();
        for (size_t i = slen + 1; i <= size; i++) {
                int32_t allowed = dsv_gvocab_mask(v, m, mask), brute = 0;
                for (int32_t id = 0; id < (int32_t)N_VOCAB; id++) {
                        const char *p;
                        size_t n;
                        bool ok;
                        if (id == N_VOCAB - 1)
                                ok = dsv_gmatch_can_end(m);
                        else {
                                token(NULL, id, &p, &n);
                                dsv_gmatch_copy(t, m);
                                ok = dsv_gmatch_feed(t, p, n) == 0;
                        }
                        if (ok != (bool)(mask[id >> 5] >> (id & 31) & 1))
                                abort();
                        brute += ok;
                }
                if (brute != allowed || (dsv_gmatch_done(m) && !dsv_gmatch_can_end(m)))
                        abort();
                if (i == size || dsv_gmatch_feed(m, &data[i], 1) < 0)
                        break;
        }
        dsv_gmatch_free(m);
        dsv_gmatch_free(t);
        dsv_gvocab_free(v);
        dsv_grammar_free(g);
        return 0;
}
