/* Shared test fixture: a generated tiny checkpoint and helpers to run prompts. */
#pragma once

#include "daemon/model/model.h"
#include "daemon/synth.h"
#include "tests/unit/testutil.h"

/* Writes preset `preset` ("tiny", "small", ...) with the given seed into tests/tmp/<name>
 * (afresh: a stale copy from an older build would hide changes) and returns it. */
static inline const char *fixture_preset(const char *name, const char *preset, uint64_t seed) {
        static char dir[4200];
        struct dsv_model_config cfg;
        struct dsv_synth_opts so = {.seed = seed, .n_shards = 2};
        struct dsv_error err = {{0}};
        snprintf(dir, sizeof(dir), "%s/%s", test_dir(), name);
        REQUIRE(dsv_model_config_preset(preset, &cfg, &err) == 0, "%s", err.msg);
        REQUIRE(dsv_synth_write(dir, &cfg, &so, &err) == 0, "%s", err.msg);
        return dir;
}

/* The tiny preset (fixture_preset). */
static inline const char *fixture_tiny(const char *name, uint64_t seed) { return fixture_preset(name, "tiny", seed); }

static inline struct dsv_model *load_model(struct dsv_backend *be, const char *dir, enum dsv_numerics num) {
        struct dsv_model_opts mo = {.numerics = num};
        struct dsv_error err = {{0}};
        struct dsv_model *m = NULL;
        int r = dsv_model_load(dir, be, &mo, &m, &err);
        REQUIRE(r == 0, "load %s: %s", dir, err.msg);
        return m;
}

/* Runs one sequence's prompt in chunks of `chunk` tokens (1 = decode path token by token),
 * writing all positions' logits. */
static inline void run_prompt(struct dsv_model *m, const int32_t *toks, int n, int chunk, float *logits) {
        const struct dsv_model_config *c = dsv_model_get_config(m);
        struct dsv_kv_pool *kv = NULL;
        struct dsv_kv_seq seq = {0};
        struct dsv_kv_seq *seqs[1] = {&seq};
        struct dsv_error err = {{0}};
        int32_t *pos = malloc((size_t)n * sizeof(int32_t)), *sq = calloc((size_t)n, sizeof(int32_t));
        REQUIRE(pos && sq, "oom");
        REQUIRE(dsv_kv_pool_new(dsv_model_backend(m), c, dsv_numerics_kv_format(dsv_model_numerics(m)),
                                DIV_ROUND_UP(n, DSV_KV_PAGE_TOKENS) + 1, &kv) == 0,
                "kv pool");
        REQUIRE(dsv_kv_seq_reserve(kv, &seq, n) == 0, "reserve");
        for (int s = 0; s < n; s += chunk) {
                int k = MIN(chunk, n - s);
                for (int i = 0; i < k; i++)
                        pos[i] = s + i;
                struct dsv_batch b = {.n_tokens = k, .token = toks + s, .pos = pos, .seq = sq, .n_seqs = 1, .seqs = seqs};
                int r = dsv_model_forward(m, kv, &b, logits + (size_t)s * c->vocab_size, &err);
                REQUIRE(r == 0, "forward: %s", err.msg);
        }
        dsv_kv_seq_release(kv, &seq);
        dsv_kv_pool_free(kv);
        free(pos);
        free(sq);
}

static inline void make_tokens(int32_t *t, int n, int vocab, uint64_t seed) {
        uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
        for (int i = 0; i < n; i++) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                t[i] = (int32_t)(x % (uint64_t)vocab);
        }
}
