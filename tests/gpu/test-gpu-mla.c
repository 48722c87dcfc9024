/* CUDA backend vs CPU reference: MLA attention. Decode (absorbed, over the paged FP8 cache of
 * 656-byte records, or the f32 layout): 128 heads, kv_lora 512, rope 64, top-2048 index
 * lists that are -1 padded (contexts shorter than top-k), random sorted subsets (longer
 * contexts), a single token, a batch; prefill (expanded through kv_b) on a chunk with causal
 * lists. Faithful numerics round many intermediates to bf16, and a different fp32 summation
 * order flips an occasional rounding, hence the looser faithful tolerance. On the CPU emulation
 * of CUDA the same cases run at reduced widths (20 heads, kv_lora 256, top-128). */
#include "config.h"

#include "tests/gpu/gputest.h"

static struct gt g;

static struct gt_tol mla_tol(const float *ref, size_t n, bool faithful) {
        double ss = 0;
        for (size_t i = 0; i < n; i++)
                if (isfinite(ref[i]))
                        ss += (double)ref[i] * ref[i];
        double rms = n ? sqrt(ss / (double)n) : 0;
        if (faithful)
                return (struct gt_tol){3e-5, 5e-3 * rms, 1.0 / 32, n / 200};
        return (struct gt_tol){1e-9, 1e-5 * rms, 1e-4, 0};
}

/* idx row for a token at position p: all of 0..p (-1 padded) when p < K, else K distinct
 * sorted positions of [0, p] with a few -1 holes. */
static void make_idx(int32_t *row, int K, int32_t p, uint64_t key) {
        if (p + 1 <= K) {
                for (int j = 0; j < K; j++)
                        row[j] = j <= p ? j : -1;
                return;
        }
        /* choose K of p+1 by a selection sampling pass (sorted output) */
        int need = K, left = p + 1, j = 0;
        for (int32_t s = 0; s <= p && need > 0; s++, left--) {
                if (gt_u01(key, (uint64_t)s) * left < need) {
                        row[j++] = s;
                        need--;
                }
        }
        for (int i = 0; i < K; i += 97)
                row[i] = -1; /* holes */
}

struct mq {
        int seq;
        int32_t pos;
};

static void test_decode(bool faithful, int H, int nope, int rope, int V, int C, int K, int n_seq, const int64_t *ctx,
                        const struct mq *qs, int T, float scale, const char *label) {
        struct dsv_kv_layout L;
        char what[200];
        const int n_layers = 2, layer = 0, qk = nope + rope;
        dsv_kv_layout_make(&L, faithful ? DSV_KV_FP8 : DSV_KV_F32, n_layers, C, rope, 128, 64);
        int64_t max_pages = 0, total_pages = 0, total_tok = 0;
        for (int s = 0; s < n_seq; s++) {
                max_pages = MAX(max_pages, DIV_ROUND_UP(ctx[s], 64));
                total_pages += DIV_ROUND_UP(ctx[s], 64);
                total_tok += ctx[s];
        }
        const size_t pool_bytes = (size_t)total_pages * n_layers * L.layer_page_bytes;
        int32_t *bt = malloc((size_t)(n_seq * max_pages) * 4), *slots = malloc((size_t)total_tok * 4);
        REQUIRE(bt && slots, "oom");
        int64_t next = 0, tok = 0;
        for (int s = 0; s < n_seq; s++) {
                for (int64_t p = 0; p < max_pages; p++)
                        bt[s * max_pages + p] = p < DIV_ROUND_UP(ctx[s], 64) ? (int32_t)(total_pages - 1 - next++) : -1;
                for (int64_t p = 0; p < ctx[s]; p++)
                        slots[tok++] = bt[s * max_pages + p / 64] * 64 + (int32_t)(p % 64);
        }
        /* fill the cache through the CPU reference's kv_store */
        struct gbuf pool, gslots, lat, kpe, key;
        gb_new(&g, &pool, DSV_U8, 1, (int64_t)pool_bytes, 0);
        gb_new(&g, &gslots, DSV_I32, 1, total_tok, 0);
        gb_new(&g, &lat, DSV_F32, total_tok, C, 0);
        gb_new(&g, &kpe, DSV_F32, total_tok, rope, 0);
        gb_new(&g, &key, DSV_F32, total_tok, 128, 0);
        float *tmp = malloc((size_t)(total_tok * C) * 4);
        uint8_t *pb = calloc(pool_bytes, 1);
        REQUIRE(tmp && pb, "oom");
        gb_set(&g, &pool, pb);
        gb_set(&g, &gslots, slots);
        gt_fill_randn(tmp, (size_t)(total_tok * C), 1.0f, 60);
        gb_set(&g, &lat, tmp);
        gt_fill_randn(tmp, (size_t)(total_tok * rope), 1.0f, 61);
        gb_set(&g, &kpe, tmp);
        gt_fill_randn(tmp, (size_t)(total_tok * 128), 1.0f, 62);
        gb_set(&g, &key, tmp);
        struct dsv_op st = {.type = DSV_OP_KV_STORE, .faithful = faithful};
        st.kv_store = (struct dsv_op_kv_store){.kv = {&L, pool.t[0].data, layer}, .slots = &gslots.t[0], .latent = &lat.t[0],
                                               .k_pe = &kpe.t[0], .idx_key = &key.t[0]};
        REQUIRE(g.be[0]->ops->compute(g.be[0], &st) == 0, "kv_store");
        gb_get(&g, &pool, 0, pb, "pool");
        gb_set(&g, &pool, pb);

        /* queries */
        int32_t *seq = malloc((size_t)T * 4), *pos = malloc((size_t)T * 4), *idx = malloc((size_t)T * K * 4);
        float *qv = malloc((size_t)T * H * qk * 4), *wv = malloc((size_t)H * (nope + V) * C * 4);
        REQUIRE(seq && pos && idx && qv && wv, "oom");
        for (int t = 0; t < T; t++) {
                seq[t] = qs[t].seq;
                pos[t] = qs[t].pos;
                make_idx(idx + (size_t)t * K, K, qs[t].pos, 63 + (uint64_t)t);
        }
        gt_fill_randn(qv, (size_t)T * H * qk, 1.0f, 64);
        gt_fill_randn(wv, (size_t)H * (nope + V) * C, 0.05f, 65);
        if (faithful) {
                gt_round_bf16(qv, (size_t)T * H * qk);
                gt_round_bf16(wv, (size_t)H * (nope + V) * C);
        }
        struct gbuf gbt, gseq, gpos, gidx, gq, gw, gout;
        gb_new(&g, &gbt, DSV_I32, n_seq, max_pages, 0);
        gb_new(&g, &gseq, DSV_I32, 1, T, 0);
        gb_new(&g, &gpos, DSV_I32, 1, T, 0);
        gb_new(&g, &gidx, DSV_I32, T, K, 0);
        gb_new(&g, &gq, DSV_F32, T, (int64_t)H * qk, 0);
        gb_new(&g, &gw, DSV_F32, (int64_t)H * (nope + V), C, 0);
        gb_new(&g, &gout, DSV_F32, T, (int64_t)H * V, 8);
        gb_set(&g, &gbt, bt);
        gb_set(&g, &gseq, seq);
        gb_set(&g, &gpos, pos);
        gb_set(&g, &gidx, idx);
        gb_set(&g, &gq, qv);
        gb_set(&g, &gw, wv);
        gb_poison(&g, &gout);
        struct dsv_op ops[2];
        for (int s = 0; s < 2; s++) {
                ops[s] = (struct dsv_op){.type = DSV_OP_MLA_DECODE, .faithful = faithful};
                ops[s].mla_decode = (struct dsv_op_mla_decode){
                        .out = &gout.t[s], .q = &gq.t[s], .wkv_b = &gw.t[s], .idx = &gidx.t[s], .kv = {&L, pool.t[s].data, layer},
                        .at = {&gseq.t[s], &gpos.t[s], &gbt.t[s]}, .n_heads = H, .nope = nope, .rope = rope, .v = V, .kv_lora = C,
                        .scale = scale, .faithful = faithful};
        }
        snprintf(what, sizeof(what), "mla_decode %s %s H=%d C=%d rope=%d K=%d T=%d", label, faithful ? "fp8 faithful" : "f32 exact",
                 H, C, rope, K, T);
        double t0 = gt_now();
        if (gt_run(&g, ops, what) == 0) {
                const size_t n = (size_t)T * H * V;
                float *o0 = malloc(n * 4), *o1 = malloc(n * 4);
                REQUIRE(o0 && o1, "oom");
                gb_get(&g, &gout, 0, o0, what);
                gb_get(&g, &gout, 1, o1, what);
                gt_cmp_f32(what, o0, o1, n, mla_tol(o0, n, faithful));
                printf("    (%.2f s)\n", gt_now() - t0);
                free(o0);
                free(o1);
        }
        struct gbuf *bufs[] = {&pool, &gslots, &lat, &kpe, &key, &gbt, &gseq, &gpos, &gidx, &gq, &gw, &gout};
        for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++)
                gb_free(&g, bufs[i]);
        free(bt);
        free(slots);
        free(tmp);
        free(pb);
        free(seq);
        free(pos);
        free(idx);
        free(qv);
        free(wv);
}

static void test_prefill(bool faithful, int H, int nope, int rope, int V, int K, int64_t n_ctx, int T, float scale) {
        char what[200];
        const int qk = nope + rope;
        const int64_t kvw = (int64_t)H * (nope + V);
        float *kv = malloc((size_t)(n_ctx * kvw) * 4), *pe = malloc((size_t)(n_ctx * rope) * 4), *qv = malloc((size_t)T * H * qk * 4);
        int32_t *idx = malloc((size_t)T * K * 4);
        REQUIRE(kv && pe && qv && idx, "oom");
        gt_fill_randn(kv, (size_t)(n_ctx * kvw), 0.5f, 70);
        gt_fill_randn(pe, (size_t)(n_ctx * rope), 1.0f, 71);
        gt_fill_randn(qv, (size_t)T * H * qk, 0.3f, 72);
        if (faithful) {
                gt_round_bf16(kv, (size_t)(n_ctx * kvw));
                gt_round_bf16(pe, (size_t)(n_ctx * rope));
                gt_round_bf16(qv, (size_t)T * H * qk);
        }
        for (int t = 0; t < T; t++) /* the chunk's last T positions */
                make_idx(idx + (size_t)t * K, K, (int32_t)(n_ctx - T + t), 73 + (uint64_t)t);
        struct gbuf gkv, gpe, gq, gidx, gout;
        gb_new(&g, &gkv, DSV_F32, n_ctx, kvw, 0);
        gb_new(&g, &gpe, DSV_F32, n_ctx, rope, 0);
        gb_new(&g, &gq, DSV_F32, T, (int64_t)H * qk, 0);
        gb_new(&g, &gidx, DSV_I32, T, K, 0);
        gb_new(&g, &gout, DSV_F32, T, (int64_t)H * V, 0);
        gb_set(&g, &gkv, kv);
        gb_set(&g, &gpe, pe);
        gb_set(&g, &gq, qv);
        gb_set(&g, &gidx, idx);
        gb_poison(&g, &gout);
        struct dsv_op ops[2];
        for (int s = 0; s < 2; s++) {
                ops[s] = (struct dsv_op){.type = DSV_OP_MLA_PREFILL, .faithful = faithful};
                ops[s].mla_prefill = (struct dsv_op_mla_prefill){.out = &gout.t[s], .q = &gq.t[s], .kvb = &gkv.t[s], .k_pe = &gpe.t[s],
                                                                 .idx = &gidx.t[s], .n_heads = H, .nope = nope, .rope = rope, .v = V,
                                                                 .scale = scale, .faithful = faithful};
        }
        snprintf(what, sizeof(what), "mla_prefill %s H=%d K=%d n_ctx=%lld T=%d", faithful ? "faithful" : "exact", H, K,
                 (long long)n_ctx, T);
        if (gt_run(&g, ops, what) == 0) {
                const size_t n = (size_t)T * H * V;
                float *o0 = malloc(n * 4), *o1 = malloc(n * 4);
                REQUIRE(o0 && o1, "oom");
                gb_get(&g, &gout, 0, o0, what);
                gb_get(&g, &gout, 1, o1, what);
                gt_cmp_f32(what, o0, o1, n, mla_tol(o0, n, faithful));
                free(o0);
                free(o1);
        }
        gb_free(&g, &gkv);
        gb_free(&g, &gpe);
        gb_free(&g, &gq);
        gb_free(&g, &gidx);
        gb_free(&g, &gout);
        free(kv);
        free(pe);
        free(qv);
        free(idx);
}

GT_MAIN(mla) {
        int r = gt_open(&g, "test-gpu-mla");
        if (r)
                return r;
        const float scale = 0.1f;
        if (g.emulated) {
                /* the CPU emulation of CUDA: the same cases at reduced widths (several head tiles,
                 * padded and holed index lists, contexts past top-k, scattered pages) */
                for (int f = 1; f >= 0; f--) {
                        const int64_t c1[1] = {1};
                        const struct mq q1[1] = {{0, 0}};
                        test_decode(f, 20, 32, 16, 32, 256, 128, 1, c1, q1, 1, scale, "single token");
                        const int64_t c2[3] = {129, 300, 41};
                        const struct mq q2[4] = {{2, 40}, {0, 127}, {0, 128}, {1, 299}};
                        test_decode(f, 20, 32, 16, 32, 256, 128, 3, c2, q2, 4, scale, "mixed");
                        const int64_t c4[1] = {90};
                        const struct mq q4[2] = {{0, 89}, {0, 10}};
                        test_decode(f, 3, 24, 16, 40, 256, 50, 1, c4, q4, 2, scale, "odd");
                        test_prefill(f, 20, 32, 16, 32, 128, 200, 5, scale);
                        test_prefill(f, 5, 24, 16, 40, 60, 70, 3, scale);
                }
                gt_close(&g);
                return test_result("test-gpu-mla");
        }
        for (int f = 1; f >= 0; f--) {
                const int64_t c1[1] = {1};
                const struct mq q1[1] = {{0, 0}};
                test_decode(f, 128, 128, 64, 128, 512, 2048, 1, c1, q1, 1, scale, "single token");
                const int64_t c2[3] = {2049, 5000, 101};
                const struct mq q2[4] = {{2, 100}, {0, 2047}, {0, 2048}, {1, 4999}};
                test_decode(f, 128, 128, 64, 128, 512, 2048, 3, c2, q2, 4, scale, "mixed");
                const int64_t c3[2] = {4096, 4096};
                struct mq q3[16];
                for (int t = 0; t < 16; t++)
                        q3[t] = (struct mq){t % 2, 4095 - t};
                test_decode(f, 128, 128, 64, 128, 512, 2048, 2, c3, q3, 16, scale, "batch");
                const int64_t c4[1] = {90};
                const struct mq q4[2] = {{0, 89}, {0, 10}};
                test_decode(f, 3, 24, 16, 40, 256, 50, 1, c4, q4, 2, scale, "odd");
                test_prefill(f, 128, 128, 64, 128, 2048, 300, 16, scale);
                test_prefill(f, 128, 128, 64, 128, 2048, 3000, 4, scale);
                test_prefill(f, 5, 24, 16, 40, 60, 70, 3, scale);
        }
        gt_close(&g);
        return test_result("test-gpu-mla");
}
