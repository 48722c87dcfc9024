/* CUDA backend vs CPU reference: RMSNorm (alone, with the fused residual add, residual only),
 * LayerNorm (in place, as the indexer's k_norm runs), act_quant (partial blocks, NaN blocks).
 * Widths 7168 (hidden), 1536 (q_lora), 512 (kv_lora), 128 (index head), odd ones. */
#include "config.h"

#include "tests/gpu/gputest.h"

static struct gt g;

/* statistics in double on both sides, the normalisation op for op: bf16 outputs may still
 * differ by one ulp when the double sums round differently */
static const struct gt_tol NORM_F = {1e-9, 1e-30, 1.0 / 128, 4};
static const struct gt_tol NORM_X = {1e-12, 1e-30, 1e-6, 0};

static void test_rmsnorm(int64_t T, int64_t N, bool with_x, bool with_res, bool w_bf16, bool faithful, int64_t pad) {
        struct gbuf x, res, w, out;
        char what[160];
        size_t n = (size_t)(T * N);
        float *xv = malloc(n * 4), *rv = malloc(n * 4), *wv = malloc((size_t)N * 4), *o0 = malloc(n * 4), *o1 = malloc(n * 4);
        float *s0 = malloc(n * 4), *s1 = malloc(n * 4);
        uint16_t *wb = malloc((size_t)N * 2);
        REQUIRE(xv && rv && wv && o0 && o1 && s0 && s1 && wb, "oom");
        gt_fill_randn(xv, n, 0.2f, 10);
        gt_fill_randn(rv, n, 1.0f, 11);
        gt_fill_randn(wv, (size_t)N, 0.3f, 12);
        for (int64_t i = 0; i < N; i++)
                wb[i] = dsv_f32_to_bf16(wv[i] + 1.0f);
        if (faithful) {
                gt_round_bf16(xv, n);
                gt_round_bf16(rv, n);
        }
        gb_new(&g, &x, DSV_F32, T, N, pad);
        gb_new(&g, &res, DSV_F32, T, N, pad);
        gb_new(&g, &w, w_bf16 ? DSV_BF16 : DSV_F32, 1, N, 0);
        gb_new(&g, &out, DSV_F32, T, N, 0);
        gb_set(&g, &x, xv);
        gb_set(&g, &res, rv);
        gb_set(&g, &w, w_bf16 ? (void *)wb : (void *)wv);
        gb_poison(&g, &out);
        struct dsv_op ops[2];
        for (int s = 0; s < 2; s++) {
                ops[s] = (struct dsv_op){.type = DSV_OP_RMSNORM, .faithful = faithful};
                ops[s].rmsnorm = (struct dsv_op_rmsnorm){.out = &out.t[s], .res = with_res ? &res.t[s] : NULL,
                                                         .x = with_x ? &x.t[s] : NULL, .w = &w.t[s], .eps = 1e-6f};
        }
        snprintf(what, sizeof(what), "rmsnorm T=%lld N=%lld%s%s w=%s %s", (long long)T, (long long)N, with_x ? " x" : "",
                 with_res ? " +res" : "", w_bf16 ? "bf16" : "f32", faithful ? "faithful" : "exact");
        if (gt_run(&g, ops, what) == 0) {
                gb_get(&g, &out, 0, o0, what);
                gb_get(&g, &out, 1, o1, what);
                gt_cmp_f32(what, o0, o1, n, faithful ? NORM_F : NORM_X);
                if (with_res) {
                        char w2[200];
                        snprintf(w2, sizeof(w2), "%s (residual)", what);
                        gb_get(&g, &res, 0, s0, w2);
                        gb_get(&g, &res, 1, s1, w2);
                        gt_cmp_f32(w2, s0, s1, n, (struct gt_tol){0, 0, 0, 0});
                }
        }
        gb_free(&g, &x);
        gb_free(&g, &res);
        gb_free(&g, &w);
        gb_free(&g, &out);
        free(xv);
        free(rv);
        free(wv);
        free(o0);
        free(o1);
        free(s0);
        free(s1);
        free(wb);
}

static void test_layernorm(int64_t T, int64_t N, bool in_place, bool faithful) {
        struct gbuf x, w, b, out;
        char what[128];
        size_t n = (size_t)(T * N);
        float *xv = malloc(n * 4), *wv = malloc((size_t)N * 4), *bv = malloc((size_t)N * 4), *o0 = malloc(n * 4), *o1 = malloc(n * 4);
        REQUIRE(xv && wv && bv && o0 && o1, "oom");
        gt_fill_randn(xv, n, 2.0f, 13);
        for (size_t i = 0; i < n; i++)
                xv[i] += 0.5f; /* a mean to remove */
        gt_fill_randn(wv, (size_t)N, 0.3f, 14);
        gt_fill_randn(bv, (size_t)N, 0.1f, 15);
        gb_new(&g, &x, DSV_F32, T, N, 0);
        gb_new(&g, &w, DSV_F32, 1, N, 0);
        gb_new(&g, &b, DSV_F32, 1, N, 0);
        if (!in_place)
                gb_new(&g, &out, DSV_F32, T, N, 3);
        gb_set(&g, &x, xv);
        gb_set(&g, &w, wv);
        gb_set(&g, &b, bv);
        if (!in_place)
                gb_poison(&g, &out);
        struct gbuf *o = in_place ? &x : &out;
        struct dsv_op ops[2];
        for (int s = 0; s < 2; s++) {
                ops[s] = (struct dsv_op){.type = DSV_OP_LAYERNORM, .faithful = faithful};
                ops[s].layernorm = (struct dsv_op_layernorm){.out = &o->t[s], .x = &x.t[s], .w = &w.t[s], .b = &b.t[s], .eps = 1e-6f};
        }
        snprintf(what, sizeof(what), "layernorm T=%lld N=%lld %s %s", (long long)T, (long long)N, in_place ? "in place" : "",
                 faithful ? "faithful" : "exact");
        if (gt_run(&g, ops, what) == 0) {
                gb_get(&g, o, 0, o0, what);
                gb_get(&g, o, 1, o1, what);
                gt_cmp_f32(what, o0, o1, n, faithful ? NORM_F : NORM_X);
        }
        gb_free(&g, &x);
        gb_free(&g, &w);
        gb_free(&g, &b);
        if (!in_place)
                gb_free(&g, &out);
        free(xv);
        free(wv);
        free(bv);
        free(o0);
        free(o1);
}

static void test_act_quant(int64_t T, int64_t K, bool specials) {
        struct gbuf x, q, sc;
        char what[128];
        const int64_t nb = DIV_ROUND_UP(K, 128);
        size_t n = (size_t)(T * K);
        float *xv = malloc(n * 4), *s0 = malloc((size_t)(T * nb) * 4), *s1 = malloc((size_t)(T * nb) * 4);
        uint8_t *q0 = malloc(n), *q1 = malloc(n);
        REQUIRE(xv && s0 && s1 && q0 && q1, "oom");
        gt_fill_randn(xv, n, 1.0f, 16);
        for (size_t i = 0; i < n; i++) /* a spread of magnitudes over the blocks */
                xv[i] *= ldexpf(1.0f, (int)((i / 128) % 24) - 12);
        if (specials && K >= 300) {
                xv[5] = NAN;          /* block 0 becomes NaN */
                xv[130] = INFINITY;   /* block 1: amax inf */
                for (int i = 256; i < 256 + 44 && i < K; i++)
                        xv[i] = 0.0f; /* part of block 2 zero */
                for (int i = 256; i < 384 && i < K; i++)
                        xv[i] = 0.0f; /* block 2 all zero: amax clamps to 1e-4 */
        }
        gb_new(&g, &x, DSV_F32, T, K, 1);
        gb_new(&g, &q, DSV_U8, T, K, 16);
        gb_new(&g, &sc, DSV_F32, T, nb, 2);
        gb_set(&g, &x, xv);
        gb_poison(&g, &q);
        gb_poison(&g, &sc);
        struct dsv_op ops[2];
        for (int s = 0; s < 2; s++) {
                ops[s] = (struct dsv_op){.type = DSV_OP_ACT_QUANT, .faithful = true};
                ops[s].act_quant = (struct dsv_op_act_quant){.q = &q.t[s], .s = &sc.t[s], .x = &x.t[s]};
        }
        snprintf(what, sizeof(what), "act_quant T=%lld K=%lld%s", (long long)T, (long long)K, specials ? " specials" : "");
        if (gt_run(&g, ops, what) == 0) {
                gb_get(&g, &q, 0, q0, what);
                gb_get(&g, &q, 1, q1, what);
                gb_get(&g, &sc, 0, s0, what);
                gb_get(&g, &sc, 1, s1, what);
                gt_cmp_bytes(what, q0, q1, n, 0);
                gt_cmp_f32("  (scales)", s0, s1, (size_t)(T * nb), (struct gt_tol){0, 0, 0, 0});
        }
        gb_free(&g, &x);
        gb_free(&g, &q);
        gb_free(&g, &sc);
        free(xv);
        free(s0);
        free(s1);
        free(q0);
        free(q1);
}

GT_MAIN(norm) {
        int r = gt_open(&g, "test-gpu-norm");
        if (r)
                return r;
        for (int f = 0; f < 2; f++) {
                test_rmsnorm(64, 7168, true, true, true, f, 0);   /* attention norm, fused residual */
                test_rmsnorm(64, 7168, true, false, true, f, 0);
                test_rmsnorm(7, 7168, false, true, false, f, 4);  /* residual only, strided */
                test_rmsnorm(33, 1536, true, false, false, f, 0); /* q_a norm */
                test_rmsnorm(33, 512, true, false, true, f, 64);  /* kv_a norm on a view of [512 | 64] */
                test_rmsnorm(1, 1001, true, true, false, f, 3);
                test_layernorm(64, 128, true, f);
                test_layernorm(5, 7168, false, f);
                test_layernorm(1, 3, false, f);
        }
        test_act_quant(64, 7168, true);
        test_act_quant(33, 1536, false);
        test_act_quant(7, 576, true); /* partial last block */
        test_act_quant(1, 100, false);
        test_act_quant(3, 64 * 128, true);
        gt_close(&g);
        return test_result("test-gpu-norm");
}
