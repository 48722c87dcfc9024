/* Harness: FP8 block-scaled linear, out[M, N] = x8[M, K] W8[N, K]^T with 1x128 activation
 * scales and 128x128 weight scales, fp32 accumulation per 128-block (plain math in
 * kernels/cuda/linear.cuh).
 *
 *   variant 0  dcu_gemm_tiled_kernel (the backend's fallback; SIMT fp32)
 *   variant 1  dcu_gemv_fp8_kernel (the backend's path for M <= 16; weight streaming)
 *   variant 2  cuBLASLt block-scaled FP8 (BLK128x128 weights, VEC128 activations), as the
 *              backend calls it: A = W (op T), B = x, D = out [M][N] (scales [K/128][M
 *              rounded to 4], D fp32)
 *   variant 3  the other orientation, as NVIDIA's LtBlk128x128Fp8Matmul sample: A = x
 *              (op T, VEC128), B = W (BLK128x128), D = out^T; if only this one is supported
 *              on the device, the backend should switch (and transpose D)
 *
 * Usage: fp8_gemm [--variant N]... [--shape M,N,K]... [--reps R] [--csv FILE]
 * Default shapes: the 671B projections at decode (M = 1, 4, 16, 64) and prefill (M = 4096).
 * Each configuration is validated (a sample of rows and columns against a double-precision
 * host reference) before it is timed. Decode shapes are judged by weight bytes per second
 * against the copy ceiling (target >= 70%), prefill shapes by TFLOP/s against the measured
 * cuBLASLt FP8 dense rate (target >= 60%). */
#include <cuda.h>

#include "kernels/cuda/linear.cuh"
#include "kernels/dev/harness.cuh"

#if CUDA_VERSION < 12090
#error "this harness needs cuBLASLt block scaling (CUDA >= 12.9)"
#endif

struct shape {
        int M, N, K;
};

/* double-precision reference of out[m][n] */
static double ref_at(const std::vector<uint8_t> &x, const std::vector<float> &xs, const std::vector<uint8_t> &w,
                     const std::vector<float> &ws, int K, int m, int n) {
        const int nbk = K / 128;
        double acc = 0;
        for (int kb = 0; kb < nbk; kb++) {
                double d = 0;
                for (int k = kb * 128; k < kb * 128 + 128; k++)
                        d += (double)dcu_e4m3_to_f32(x[(size_t)m * K + k]) * dcu_e4m3_to_f32(w[(size_t)n * K + k]);
                acc += d * xs[(size_t)m * nbk + kb] * ws[(size_t)(n / 128) * nbk + kb];
        }
        return acc;
}

/* swapped: operand A = x [M4][K] (VEC128 scales xs_t), B = W [N][K] (BLK128x128), D [N][M4] = out^T */
static int lt_gemm(struct h_ctx *h, const uint8_t *w, const float *ws, const uint8_t *x, const float *xs_t, int N, int K, int M4,
                   float *d, void *wsp, size_t wsb, cublasLtMatmulAlgo_t *algo, bool *have, bool swapped = false) {
        cublasLtMatmulDesc_t op;
        cublasLtMatrixLayout_t la, lb, ld;
        const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
        const int32_t blk = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F, vec = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
        const int32_t sa = swapped ? vec : blk, sb = swapped ? blk : vec;
        const void *pa = swapped ? (const void *)x : (const void *)w, *pb = swapped ? (const void *)w : (const void *)x;
        const float *psa = swapped ? xs_t : ws, *psb = swapped ? ws : xs_t;
        const int rows_d = swapped ? M4 : N, cols_d = swapped ? N : M4;
        const float one = 1, zero = 0;
        HBLAS(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
        HBLAS(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
        HBLAS(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
        HBLAS(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &sa, sizeof(sa)));
        HBLAS(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &sb, sizeof(sb)));
        HBLAS(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &psa, sizeof(psa)));
        HBLAS(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &psb, sizeof(psb)));
        HBLAS(cublasLtMatrixLayoutCreate(&la, CUDA_R_8F_E4M3, K, swapped ? M4 : N, K));
        HBLAS(cublasLtMatrixLayoutCreate(&lb, CUDA_R_8F_E4M3, K, swapped ? N : M4, K));
        HBLAS(cublasLtMatrixLayoutCreate(&ld, CUDA_R_32F, rows_d, cols_d, rows_d));
        if (!*have) {
                cublasLtMatmulPreference_t pref;
                cublasLtMatmulHeuristicResult_t res;
                int got = 0;
                HBLAS(cublasLtMatmulPreferenceCreate(&pref));
                HBLAS(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof(wsb)));
                cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(h->lt, op, la, lb, ld, ld, pref, 1, &res, &got);
                cublasLtMatmulPreferenceDestroy(pref);
                if (s != CUBLAS_STATUS_SUCCESS || got == 0) {
                        cublasLtMatrixLayoutDestroy(la);
                        cublasLtMatrixLayoutDestroy(lb);
                        cublasLtMatrixLayoutDestroy(ld);
                        cublasLtMatmulDescDestroy(op);
                        return -1;
                }
                *algo = res.algo;
                *have = true;
        }
        HBLAS(cublasLtMatmul(h->lt, op, &one, pa, la, pb, lb, &zero, d, ld, d, ld, algo, wsp, wsb, h->stream));
        cublasLtMatrixLayoutDestroy(la);
        cublasLtMatrixLayoutDestroy(lb);
        cublasLtMatrixLayoutDestroy(ld);
        cublasLtMatmulDescDestroy(op);
        return 0;
}

__global__ void transpose_scales(const float *xs, float *xs_t, int M, int M4, int nbk) {
        int i = blockIdx.x * blockDim.x + threadIdx.x;
        if (i < M4 * nbk) {
                int kb = i / M4, m = i % M4;
                xs_t[i] = m < M ? xs[m * nbk + kb] : 0.0f;
        }
}

int main(int argc, char **argv) {
        struct h_ctx h;
        h_init(&h, "fp8_gemm", argc, argv);
        std::vector<shape> shapes;
        for (int i = 1; i + 1 < argc; i++)
                if (strcmp(argv[i], "--shape") == 0) {
                        shape s;
                        if (sscanf(argv[i + 1], "%d,%d,%d", &s.M, &s.N, &s.K) == 3 && s.K % 128 == 0)
                                shapes.push_back(s);
                }
        if (shapes.empty()) {
                const int nk[][2] = {{1536, 7168}, {24576, 1536}, {576, 7168}, {7168, 16384}, {18432, 7168}};
                for (int M : {1, 4, 16, 64})
                        for (auto &p : nk)
                                shapes.push_back({M, p[0], p[1]});
                for (auto &p : nk)
                        shapes.push_back({4096, p[0], p[1]});
        }
        size_t wsb = 64u << 20;
        void *wsp = h_alloc<uint8_t>(wsb);
        for (const shape &s : shapes) {
                const int M = s.M, N = s.N, K = s.K, nbk = K / 128, nbn = (N + 127) / 128, M4 = (M + 3) / 4 * 4;
                uint8_t *w = h_alloc<uint8_t>((size_t)N * K), *x = h_alloc<uint8_t>((size_t)M4 * K);
                float *ws = h_alloc<float>((size_t)nbn * nbk), *xs = h_alloc<float>((size_t)M * nbk), *xs_t = h_alloc<float>((size_t)M4 * nbk);
                float *out = h_alloc<float>((size_t)M4 * N);
                h_fill_codes(&h, w, (size_t)N * K, 11);
                HCHECK(cudaMemsetAsync(x, 0, (size_t)M4 * K, h.stream));
                h_fill_codes(&h, x, (size_t)M * K, 12);
                h_fill_f32(&h, ws, (size_t)nbn * nbk, 13, 0.01f);
                h_fill_f32(&h, xs, (size_t)M * nbk, 14, 0.5f);
                transpose_scales<<<(M4 * nbk + 255) / 256, 256, 0, h.stream>>>(xs, xs_t, M, M4, nbk);
                HCHECK(cudaGetLastError());
                std::vector<uint8_t> hw = h_download(&h, w, (size_t)N * K), hx = h_download(&h, x, (size_t)M * K);
                std::vector<float> hws = h_download(&h, ws, (size_t)nbn * nbk), hxs = h_download(&h, xs, (size_t)M * nbk);
                char shp[64];
                snprintf(shp, sizeof(shp), "M=%d N=%d K=%d", M, N, K);
                const double flop = 2.0 * M * (double)N * K, wbytes = (double)N * K;
                const bool decode = M <= 64;

                auto validate = [&](int ldo, double *max_err, bool transposed = false) {
                        std::vector<float> o = h_download(&h, out, transposed ? (size_t)N * M4 : (size_t)M * ldo);
                        double worst = 0;
                        const int rows = std::min(M, 8), cols = std::min(N, 192);
                        for (int ri = 0; ri < rows; ri++) {
                                const int m = (int)((int64_t)ri * M / rows);
                                double rms = 0;
                                std::vector<double> r(cols);
                                for (int ci = 0; ci < cols; ci++) {
                                        const int n = (int)((int64_t)ci * N / cols);
                                        r[ci] = ref_at(hx, hxs, hw, hws, K, m, n);
                                        rms += r[ci] * r[ci];
                                }
                                rms = sqrt(rms / cols) + 1e-30;
                                for (int ci = 0; ci < cols; ci++) {
                                        const int n = (int)((int64_t)ci * N / cols);
                                        const float g = transposed ? o[(size_t)n * M4 + m] : o[(size_t)m * ldo + n];
                                        worst = std::max(worst, fabs((double)g - r[ci]) / rms);
                                }
                        }
                        *max_err = worst;
                        return worst < 1e-4;
                };
                auto report = [&](const char *var, double ms, double err, bool ok) {
                        if (decode)
                                h_report(&h, var, shp, ms, wbytes / (ms * 1e-3) / 1e9, "GB/s", "copy", h.ceil.copy_gbps, err, ok);
                        else
                                h_report(&h, var, shp, ms, flop / (ms * 1e-3) / 1e12, "TFLOP/s", "fp8", h.ceil.fp8_tflops, err, ok);
                };

                if (h_want_variant(argc, argv, 0)) {
                        dim3 grid((N + 63) / 64, (M + 63) / 64);
                        auto run = [&] {
                                dcu_gemm_tiled_kernel<true, DCU_W_F8><<<grid, 256, 0, h.stream>>>(out, N, x, K, xs, nbk, 1, w, K, ws, nbk, M,
                                                                                                 N, K, 0);
                        };
                        run();
                        HCHECK(cudaGetLastError());
                        double err;
                        bool ok = validate(N, &err);
                        report("0 tiled", ok ? h_time(&h, run) : 0, err, ok);
                }
                if (h_want_variant(argc, argv, 1) && M <= 16) {
                        const unsigned grid = (unsigned)((N + 7) / 8);
                        auto run = [&] {
                                if (M <= 1)
                                        dcu_gemv_fp8_kernel<1, true><<<grid, 256, 0, h.stream>>>(out, N, x, K, xs, nbk, 1, w, K, ws, nbk, M, N, K, 0);
                                else if (M <= 4)
                                        dcu_gemv_fp8_kernel<4, true><<<grid, 256, 0, h.stream>>>(out, N, x, K, xs, nbk, 1, w, K, ws, nbk, M, N, K, 0);
                                else
                                        dcu_gemv_fp8_kernel<16, true><<<grid, 256, 0, h.stream>>>(out, N, x, K, xs, nbk, 1, w, K, ws, nbk, M, N, K, 0);
                        };
                        run();
                        HCHECK(cudaGetLastError());
                        double err;
                        bool ok = validate(N, &err);
                        report("1 gemv", ok ? h_time(&h, run) : 0, err, ok);
                }
                if (h_want_variant(argc, argv, 2) && nbk % 4 == 0) {
                        cublasLtMatmulAlgo_t algo;
                        bool have = false;
                        if (lt_gemm(&h, w, ws, x, xs_t, N, K, M4, out, wsp, wsb, &algo, &have) < 0) {
                                printf("  %-26s %-34s no cuBLASLt algorithm\n", "2 cublaslt-blockscaled", shp);
                        } else {
                                double err;
                                bool ok = validate(N, &err);
                                double ms = ok ? h_time(&h, [&] { lt_gemm(&h, w, ws, x, xs_t, N, K, M4, out, wsp, wsb, &algo, &have); }) : 0;
                                report("2 cublaslt-blockscaled", ms, err, ok);
                        }
                }
                if (h_want_variant(argc, argv, 3) && nbk % 4 == 0) {
                        cublasLtMatmulAlgo_t algo;
                        bool have = false;
                        if (lt_gemm(&h, w, ws, x, xs_t, N, K, M4, out, wsp, wsb, &algo, &have, true) < 0) {
                                printf("  %-26s %-34s no cuBLASLt algorithm\n", "3 cublaslt-swapped", shp);
                        } else {
                                double err;
                                bool ok = validate(N, &err, true);
                                double ms = ok ? h_time(&h, [&] { lt_gemm(&h, w, ws, x, xs_t, N, K, M4, out, wsp, wsb, &algo, &have, true); }) : 0;
                                report("3 cublaslt-swapped", ms, err, ok);
                        }
                }
                HCHECK(cudaFree(w));
                HCHECK(cudaFree(x));
                HCHECK(cudaFree(ws));
                HCHECK(cudaFree(xs));
                HCHECK(cudaFree(xs_t));
                HCHECK(cudaFree(out));
        }
        HCHECK(cudaFree(wsp));
        return h_finish(&h);
}
