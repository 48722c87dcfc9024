/* A batch larger than one pass (model/passes.c) is run as several passes with the results of
 * one pass bit for bit, in both numerics: a mixed batch (long prefills cut into pieces, a
 * prefill of cap + 1 tokens that must not leave a one-token piece, decode tokens, a speculative
 * verify run marked as_decode, a two-token chunk), in shuffled batch order, with a subset of
 * logits wanted, compared with a model whose pass holds the whole batch: logits, hidden rows,
 * sequence lengths, and the next decode step of every sequence (so the KV written by the cut
 * passes is the same too). Also: the passes really were cut (counted, none over the cap), a
 * refused batch changes no sequence, the default cap is a power of two. */
#include "config.h"

#include "tests/unit/modelutil.h"

#define S 6
#define CAP 16

struct side {
        struct dsv_model *m;
        struct dsv_kv_pool *kv;
        struct dsv_kv_seq seqs[S];
        struct dsv_kv_seq *sp[S];
};

static struct dsv_model *load_cap(struct dsv_backend *be, const char *dir, enum dsv_numerics num, int cap) {
        struct dsv_model_opts mo = {.numerics = num, .max_pass_tokens = cap};
        struct dsv_error err = {{0}};
        struct dsv_model *m = NULL;
        REQUIRE(dsv_model_load(dir, be, &mo, &m, &err) == 0, "load: %s", err.msg);
        return m;
}

/* prefix lengths fed first (one pass each, under the cap), then the batch's new tokens */
static const int prefix[S] = {0, 10, 3, 5, 7, 0};
static const int fresh[S] = {40, 1, CAP + 1, 3, 2, 33};

static void side_open(struct side *sd, struct dsv_model *m, enum dsv_numerics num, const int32_t (*toks)[64]) {
        const struct dsv_model_config *c = dsv_model_get_config(m);
        struct dsv_error err = {{0}};
        sd->m = m;
        REQUIRE(dsv_kv_pool_new(dsv_model_backend(m), c, dsv_numerics_kv_format(num), S * 5, &sd->kv) == 0, "pool");
        for (int s = 0; s < S; s++) {
                memset(&sd->seqs[s], 0, sizeof(sd->seqs[s]));
                sd->sp[s] = &sd->seqs[s];
                REQUIRE(dsv_kv_seq_reserve(sd->kv, &sd->seqs[s], 64) == 0, "reserve");
        }
        for (int s = 0; s < S; s++) {
                int32_t pos[64], sq[64];
                if (!prefix[s])
                        continue;
                for (int i = 0; i < prefix[s]; i++)
                        pos[i] = i, sq[i] = s;
                struct dsv_batch b = {.n_tokens = prefix[s], .token = toks[s], .pos = pos, .seq = sq, .n_seqs = S, .seqs = sd->sp};
                float *lg = malloc((size_t)prefix[s] * c->vocab_size * sizeof(float));
                REQUIRE(lg && dsv_model_forward(m, sd->kv, &b, lg, &err) == 0, "prefix: %s", err.msg);
                free(lg);
        }
}

static void side_close(struct side *sd) {
        for (int s = 0; s < S; s++)
                dsv_kv_seq_release(sd->kv, &sd->seqs[s]);
        dsv_kv_pool_free(sd->kv);
}

static void compare(struct dsv_backend *be, const char *dir, enum dsv_numerics num) {
        struct dsv_model *mc = load_cap(be, dir, num, CAP), *mw = load_cap(be, dir, num, 1 << 16);
        const struct dsv_model_config *c = dsv_model_get_config(mc);
        const size_t V = (size_t)c->vocab_size, D = (size_t)c->hidden_size;
        int32_t toks[S][64];
        struct side a, w;
        struct dsv_error err = {{0}};
        int T = 0;

        CHECK(dsv_model_pass_tokens(mc) == CAP && dsv_model_pass_tokens(mw) == 1 << 16, "caps %d %d",
              dsv_model_pass_tokens(mc), dsv_model_pass_tokens(mw));
        for (int s = 0; s < S; s++) {
                make_tokens(toks[s], 64, c->vocab_size, 100 + (uint64_t)s);
                T += fresh[s];
        }
        side_open(&a, mc, num, (const int32_t(*)[64])toks);
        side_open(&w, mw, num, (const int32_t(*)[64])toks);

        /* the batch: every sequence's new tokens, interleaved by a fixed shuffle */
        int32_t tok[128], pos[128], sq[128];
        bool want[128], as_decode[S] = {false, false, false, true, false, false};
        int n = 0;
        for (int s = 0; s < S; s++)
                for (int i = 0; i < fresh[s]; i++, n++) {
                        tok[n] = toks[s][prefix[s] + i];
                        pos[n] = prefix[s] + i;
                        sq[n] = s;
                }
        uint64_t x = 7;
        for (int i = n - 1; i > 0; i--) {
                x = x * 6364136223846793005ull + 1442695040888963407ull;
                int j = (int)((x >> 33) % (uint64_t)(i + 1));
                int32_t t;
                t = tok[i], tok[i] = tok[j], tok[j] = t;
                t = pos[i], pos[i] = pos[j], pos[j] = t;
                t = sq[i], sq[i] = sq[j], sq[j] = t;
        }
        int n_want = 0;
        for (int i = 0; i < n; i++)
                n_want += want[i] = i % 3 == 1 || pos[i] == prefix[sq[i]] + fresh[sq[i]] - 1;
        struct dsv_batch b = {.n_tokens = n, .token = tok, .pos = pos, .seq = sq, .want_logits = want, .n_seqs = S,
                              .as_decode = as_decode};
        float *la = calloc((size_t)n_want * V, sizeof(float)), *lw = calloc((size_t)n_want * V, sizeof(float));
        float *ha = calloc((size_t)n * D, sizeof(float)), *hw = calloc((size_t)n * D, sizeof(float));
        REQUIRE(la && lw && ha && hw, "oom");

        /* bad input first: a repeated position is refused before any pass, nothing moves */
        {
                int32_t keep = pos[0];
                pos[0] = pos[1] == pos[0] ? pos[0] : (sq[1] == sq[0] ? pos[1] : pos[0] + 1000);
                b.seqs = a.sp;
                uint64_t before = dsv_model_pass_stats(mc).passes;
                int r = dsv_model_forward_hidden(mc, a.kv, &b, la, ha, &err);
                CHECK(r == -EINVAL, "a malformed batch of %d tokens: %d (%s)", n, r, err.msg);
                CHECK(dsv_model_pass_stats(mc).passes == before, "a refused batch ran passes");
                for (int s = 0; s < S; s++)
                        CHECK(a.seqs[s].len == prefix[s], "seq %d moved to %d", s, a.seqs[s].len);
                pos[0] = keep;
        }

        uint64_t p0 = dsv_model_pass_stats(mc).passes;
        b.seqs = a.sp;
        REQUIRE(dsv_model_forward_hidden(mc, a.kv, &b, la, ha, &err) == 0, "cut: %s", err.msg);
        b.seqs = w.sp;
        REQUIRE(dsv_model_forward_hidden(mw, w.kv, &b, lw, hw, &err) == 0, "whole: %s", err.msg);
        struct dsv_model_pass_stats ps = dsv_model_pass_stats(mc);
        printf("%s: %d tokens in %llu passes of at most %d (cap %d)\n", dsv_numerics_name(num), n,
               (unsigned long long)(ps.passes - p0), ps.largest, CAP);
        CHECK(ps.passes - p0 >= (uint64_t)DIV_ROUND_UP(n, CAP), "only %llu passes", (unsigned long long)(ps.passes - p0));
        CHECK(ps.largest <= CAP, "a pass of %d tokens", ps.largest);
        CHECK(dsv_model_pass_stats(mw).largest == n, "the uncut model ran %d tokens at most", dsv_model_pass_stats(mw).largest);
        CHECK(memcmp(la, lw, (size_t)n_want * V * sizeof(float)) == 0, "logits differ (max %.3g)",
              max_abs_diff(la, lw, (size_t)n_want * V, &(size_t){0}));
        CHECK(memcmp(ha, hw, (size_t)n * D * sizeof(float)) == 0, "hidden rows differ (max %.3g)",
              max_abs_diff(ha, hw, (size_t)n * D, &(size_t){0}));
        for (int s = 0; s < S; s++)
                CHECK(a.seqs[s].len == prefix[s] + fresh[s] && w.seqs[s].len == a.seqs[s].len, "seq %d: len %d / %d", s,
                      a.seqs[s].len, w.seqs[s].len);

        /* one decode step of every sequence reads the KV both wrote */
        {
                int32_t dt[S], dp[S], ds[S];
                float *da = malloc(S * V * sizeof(float)), *dw = malloc(S * V * sizeof(float));
                REQUIRE(da && dw, "oom");
                for (int s = 0; s < S; s++)
                        dt[s] = toks[s][prefix[s] + fresh[s]], dp[s] = prefix[s] + fresh[s], ds[s] = s;
                struct dsv_batch d = {.n_tokens = S, .token = dt, .pos = dp, .seq = ds, .n_seqs = S, .seqs = a.sp};
                REQUIRE(dsv_model_forward(mc, a.kv, &d, da, &err) == 0, "%s", err.msg);
                d.seqs = w.sp;
                REQUIRE(dsv_model_forward(mw, w.kv, &d, dw, &err) == 0, "%s", err.msg);
                CHECK(memcmp(da, dw, S * V * sizeof(float)) == 0, "the next step differs (max %.3g)",
                      max_abs_diff(da, dw, S * V, &(size_t){0}));
                free(da);
                free(dw);
        }

        /* pages that cannot hold the batch: refused, nothing moves */
        {
                struct dsv_kv_seq q = {0};
                struct dsv_kv_seq *one[1] = {&q};
                int32_t p[DSV_KV_PAGE_TOKENS + 8], z[DSV_KV_PAGE_TOKENS + 8] = {0}, tt[DSV_KV_PAGE_TOKENS + 8];
                const int nb = DSV_KV_PAGE_TOKENS + 8;
                REQUIRE(dsv_kv_seq_reserve(a.kv, &q, 20) == 0, "reserve");
                make_tokens(tt, nb, c->vocab_size, 9);
                for (int i = 0; i < nb; i++)
                        p[i] = i;
                struct dsv_batch big = {.n_tokens = nb, .token = tt, .pos = p, .seq = z, .n_seqs = 1, .seqs = one};
                float *lg = malloc((size_t)nb * V * sizeof(float));
                REQUIRE(lg, "oom");
                uint64_t before = dsv_model_pass_stats(mc).passes;
                int r = dsv_model_forward(mc, a.kv, &big, lg, &err);
                CHECK(r == -ENOSPC && q.len == 0 && dsv_model_pass_stats(mc).passes == before,
                      "%d tokens in pages for %d: %d, len %d", nb, q.n_pages * DSV_KV_PAGE_TOKENS, r, q.len);
                free(lg);
                dsv_kv_seq_release(a.kv, &q);
        }

        side_close(&a);
        side_close(&w);
        free(la);
        free(lw);
        free(ha);
        free(hw);
        dsv_model_free(mc);
        dsv_model_free(mw);
}

int main(void) {
        struct dsv_backend *be = NULL;
        const char *dir = fixture_tiny("passes-tiny", 1);
        REQUIRE(dsv_backend_cpu_new(0, &be) == 0, "backend");
        compare(be, dir, DSV_NUMERICS_FAITHFUL);
        compare(be, dir, DSV_NUMERICS_EXACT);

        /* the default cap: a power of two, at least the minimum */
        struct dsv_model *m = load_model(be, dir, DSV_NUMERICS_FAITHFUL);
        int cap = dsv_model_pass_tokens(m);
        printf("default pass cap on tiny: %d tokens\n", cap);
        CHECK(cap >= DSV_MODEL_MIN_PASS_TOKENS && cap <= DSV_MODEL_MAX_PASS_TOKENS && (cap & (cap - 1)) == 0, "cap %d", cap);
        dsv_model_free(m);
        dsv_backend_free(be);
        return test_result("test-model-passes");
}
