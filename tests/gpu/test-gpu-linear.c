/* CUDA backend vs CPU reference: the linear op on every path the backend has (FP8 weights:
 * cuBLASLt block-scaled, weight-streaming gemv, tiled SIMT; bf16 weights: cuBLAS on three
 * bf16 planes; f32 weights: SGEMM), each forced through DSV_CUDA_FP8_PATH on its own
 * backend instance, in faithful (act_quant'ed input, bf16 output) and exact numerics.
 * Shapes: the 671B projections (q_a 7168->1536, q_b 1536->24576, kv_a 7168->576, wo
 * 16384->7168, indexer wq_b/wk, kv_b 512->32768, lm_head 7168->129280 bf16, weights_proj
 * 7168->64 bf16) at decode (1..16 tokens) and prefill-like (64..256) row counts, and odd
 * sizes (partial 128-blocks in N and K, K not a multiple of 16). On the CPU emulation of CUDA
 * (where cuBLASLt has no FP8 algorithm, so that path checks the fallback) the same paths and
 * edge cases run at tiny-model widths. */
#include "config.h"

#include "tests/gpu/gputest.h"

static struct gt g;
static const char *const path_names[] = {"auto", "tiled", "gemv", "cublaslt"};
static struct dsv_backend *paths[4];

/* tolerance from the reference's scale: bf16 outputs may differ by an ulp where the fp32
 * sums (different order) straddle a rounding boundary */
static struct gt_tol lin_tol(const float *ref, size_t n, bool faithful) {
        double ss = 0;
        for (size_t i = 0; i < n; i++)
                if (isfinite(ref[i]))
                        ss += (double)ref[i] * ref[i];
        double rms = n ? sqrt(ss / (double)n) : 0;
        if (faithful)
                return (struct gt_tol){2e-6, 1e-3 * rms, 1.0 / 128, n / 2000};
        return (struct gt_tol){1e-10, 1e-5 * rms, 1e-5, 0};
}

static void test_linear(int64_t T, int64_t N, int64_t K, enum dsv_dtype wt, bool faithful, int64_t xpad, int64_t opad) {
        struct gbuf x, w, ws, out;
        char what[200];
        const int64_t br = DIV_ROUND_UP(N, 128), bc = DIV_ROUND_UP(K, 128);
        const size_t nx = (size_t)(T * K), nw = (size_t)(N * K), no = (size_t)(T * N);
        float *xv = malloc(nx * 4), *o0 = malloc(no * 4), *o1 = malloc(no * 4);
        void *wv = malloc(nw * (wt == DSV_F32 ? 4 : 2));
        float *sv = malloc((size_t)(br * bc) * 4);
        double t0 = gt_now();
        REQUIRE(xv && o0 && o1 && wv && sv, "oom");
        gt_fill_randn(xv, nx, 1.0f, 20 + (uint64_t)T);
        if (faithful)
                gt_round_bf16(xv, nx); /* activations are bf16 values at the reference's rounding points */
        if (wt == DSV_F8_E4M3) {
                gt_make_fp8(wv, sv, N, K, 21, N % 2 == 0);
        } else if (wt == DSV_BF16) {
                for (size_t i = 0; i < nw; i++)
                        ((uint16_t *)wv)[i] = dsv_f32_to_bf16(gt_randn(22, i) * 0.02f);
        } else {
                gt_fill_randn(wv, nw, 0.05f, 23);
        }
        gb_new(&g, &x, DSV_F32, T, K, xpad);
        gb_new(&g, &w, wt, N, K, 0);
        gb_new(&g, &ws, DSV_F32, br, bc, 0);
        gb_new(&g, &out, DSV_F32, T, N, opad);
        gb_set(&g, &x, xv);
        gb_set(&g, &w, wv);
        gb_set(&g, &ws, sv);
        for (int s = 0; s < 2; s++)
                w.t[s].scale = wt == DSV_F8_E4M3 ? &ws.t[s] : NULL;
        const bool quant = faithful && wt == DSV_F8_E4M3;

        /* reference */
        struct dsv_op op = {.type = DSV_OP_LINEAR, .faithful = faithful};
        op.linear = (struct dsv_op_linear){.out = &out.t[0], .x = &x.t[0], .w = &w.t[0], .quant_in = quant, .round_out = faithful};
        gb_poison(&g, &out);
        int r = g.be[0]->ops->compute(g.be[0], &op);
        CHECK(r == 0, "cpu linear: %s", strerror(-r));
        double t_cpu = gt_now() - t0;
        gb_get(&g, &out, 0, o0, "linear (cpu)");
        const struct gt_tol tol = lin_tol(o0, no, faithful);

        for (int pi = 0; pi < 4; pi++) {
                if (wt != DSV_F8_E4M3 && pi >= 2)
                        break; /* one non-tiled and the tiled path for bf16/f32 weights */
                struct dsv_backend *be = paths[pi];
                snprintf(what, sizeof(what), "linear %s T=%lld N=%lld K=%lld %s [%s]", dsv_dtype_name(wt), (long long)T, (long long)N,
                         (long long)K, faithful ? "faithful" : "exact", path_names[pi]);
                /* the buffers belong to g.be[1]; every path backend shares the device and its memory */
                gb_poison(&g, &out);
                REQUIRE(g.be[1]->ops->synchronize(g.be[1]) == 0, "sync"); /* another stream computes next */
                op.linear = (struct dsv_op_linear){.out = &out.t[1], .x = &x.t[1], .w = &w.t[1], .quant_in = quant, .round_out = faithful};
                CHECK(be->ops->supports_op(be, &op), "%s: not supported", what);
                r = be->ops->compute(be, &op);
                if (r == 0)
                        r = be->ops->synchronize(be);
                CHECK(r == 0, "%s: %s %s", what, strerror(-r), dsv_backend_last_error(be));
                if (r)
                        continue;
                gb_get(&g, &out, 1, o1, what);
                gt_cmp_f32(what, o0, o1, no, tol);
                gt_census(&op);
        }
        printf("    (cpu reference %.2f s)\n", t_cpu);
        gb_free(&g, &x);
        gb_free(&g, &w);
        gb_free(&g, &ws);
        gb_free(&g, &out);
        free(xv);
        free(o0);
        free(o1);
        free(wv);
        free(sv);
}

GT_MAIN(linear) {
        int r = gt_open(&g, "test-gpu-linear");
        if (r)
                return r;
        for (int pi = 0; pi < 4; pi++) {
                struct dsv_error err;
                setenv("DSV_CUDA_FP8_PATH", path_names[pi], 1);
                r = dsv_backend_open("cuda", NULL, &paths[pi], &err);
                REQUIRE(r == 0, "opening the %s path backend: %s", path_names[pi], err.msg);
                printf("path %-8s: %s\n", path_names[pi], dsv_backend_describe(paths[pi]));
        }
        unsetenv("DSV_CUDA_FP8_PATH");

        if (g.emulated) {
                static const int64_t edec[] = {1, 4, 16};
                for (int f = 1; f >= 0; f--) {
                        for (size_t i = 0; i < sizeof(edec) / sizeof(edec[0]); i++) {
                                test_linear(edec[i], 256, 1024, DSV_F8_E4M3, f, 0, 0);
                                test_linear(edec[i], 160, 1024, DSV_F8_E4M3, f, 0, 0); /* partial scale row */
                        }
                        test_linear(70, 384, 512, DSV_F8_E4M3, f, 0, 0);  /* prefill-like: several tiles, a partial one */
                        test_linear(3, 77, 200, DSV_F8_E4M3, f, 1, 2);   /* odd: K % 16 != 0, partial blocks, views */
                        test_linear(5, 130, 144, DSV_F8_E4M3, f, 4, 0);
                        test_linear(1, 1, 16, DSV_F8_E4M3, f, 0, 0);
                        test_linear(20, 64, 384, DSV_BF16, f, 0, 0);
                        test_linear(9, 100, 300, DSV_F32, f, 3, 1);
                }
                test_linear(2, 4096, 256, DSV_BF16, true, 0, 0); /* the tiny model's lm_head */
                for (int pi = 0; pi < 4; pi++)
                        dsv_backend_free(paths[pi]);
                gt_close(&g);
                return test_result("test-gpu-linear");
        }
        static const int64_t dec[] = {1, 4, 8, 16};
        for (int f = 1; f >= 0; f--) {
                for (size_t i = 0; i < sizeof(dec) / sizeof(dec[0]); i++) {
                        test_linear(dec[i], 1536, 7168, DSV_F8_E4M3, f, 0, 0);  /* q_a */
                        test_linear(dec[i], 576, 7168, DSV_F8_E4M3, f, 0, 0);   /* kv_a: partial scale row */
                }
                test_linear(4, 24576, 1536, DSV_F8_E4M3, f, 0, 0);  /* q_b */
                test_linear(4, 7168, 16384, DSV_F8_E4M3, f, 0, 0);  /* wo */
                test_linear(64, 8192, 1536, DSV_F8_E4M3, f, 0, 0);  /* indexer wq_b */
                test_linear(64, 128, 7168, DSV_F8_E4M3, f, 0, 0);   /* indexer wk */
                test_linear(256, 1536, 7168, DSV_F8_E4M3, f, 0, 0); /* prefill-like */
                test_linear(300, 32768, 512, DSV_F8_E4M3, f, 0, 0); /* kv_b expansion of a 300-token context */
                test_linear(3, 77, 200, DSV_F8_E4M3, f, 1, 2);      /* odd: K % 16 != 0, partial blocks, views */
                test_linear(5, 130, 144, DSV_F8_E4M3, f, 4, 0);
                test_linear(1, 1, 16, DSV_F8_E4M3, f, 0, 0);
                test_linear(64, 64, 7168, DSV_BF16, f, 0, 0);       /* weights_proj */
                test_linear(9, 100, 300, DSV_F32, f, 3, 1);
        }
        test_linear(2, 129280, 7168, DSV_BF16, true, 0, 0); /* lm_head */
        for (int pi = 0; pi < 4; pi++)
                dsv_backend_free(paths[pi]);
        gt_close(&g);
        return test_result("test-gpu-linear");
}
