/* Shared pieces of the kernel harnesses in kernels/dev/ (standalone programs, not part of
 * the daemon): argument helpers, a CUDA/cuBLAS check that aborts the harness with the
 * failing statement, random device data, an L2 flush, event timing (median of repeats, each
 * after a flush), and the ceilings measured in the same run:
 *   copy   device-to-device cudaMemcpy bandwidth, bytes read + written (GB/s)
 *   bf16   cuBLAS bf16 GEMM 8192^3, fp32 accumulation (TFLOP/s)
 *   fp8    cuBLASLt FP8 e4m3 GEMM 8192^3 with tensor-wide scales, bf16 out (TFLOP/s)
 * DSV_CEILINGS="copy=4300,bf16=780,fp8=1400" skips the measurement (run-device.sh measures
 * once and passes them on). Results go to stdout as a table and, with --csv FILE, as CSV rows
 *   harness,variant,shape,ms,value,unit,ceiling_name,ceiling,fraction,max_err,status */
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <string>
#include <vector>

#define HCHECK(stmt)                                                                                                    \
        do {                                                                                                            \
                cudaError_t e_ = (stmt);                                                                                \
                if (e_ != cudaSuccess) {                                                                                \
                        fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #stmt, cudaGetErrorString(e_));  \
                        exit(2);                                                                                        \
                }                                                                                                       \
        } while (0)
#define HBLAS(stmt)                                                                                                     \
        do {                                                                                                            \
                cublasStatus_t s_ = (stmt);                                                                             \
                if (s_ != CUBLAS_STATUS_SUCCESS) {                                                                      \
                        fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #stmt, cublasGetStatusString(s_)); \
                        exit(2);                                                                                        \
                }                                                                                                       \
        } while (0)

struct h_ceilings {
        double copy_gbps, bf16_tflops, fp8_tflops;
};

struct h_ctx {
        cudaStream_t stream;
        cublasHandle_t blas;
        cublasLtHandle_t lt;
        void *flush_buf;
        size_t flush_bytes;
        int reps, warmup;
        FILE *csv;
        const char *name;
        struct h_ceilings ceil;
        int failures;
};

/* ------------------------------------------------------------------ random data */
__global__ void h_fill_f32_kernel(float *p, size_t n, uint64_t seed, float sd) {
        for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
                uint64_t z = (seed ^ (i * 0x9e3779b97f4a7c15ull)) + 0x632be59bd9b4e019ull;
                z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
                z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
                z ^= z >> 31;
                /* sum of 4 uniforms ~ normal */
                double s = (double)(z & 0xffff) + (double)((z >> 16) & 0xffff) + (double)((z >> 32) & 0xffff) + (double)(z >> 48);
                p[i] = (float)((s / 65536.0 - 2.0) * 1.7320508) * sd;
        }
}
__global__ void h_f32_to_bf16_kernel(const float *s, uint16_t *d, size_t n) {
        for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
                d[i] = (uint16_t)(__float_as_uint(s[i]) >> 16);
}
/* e4m3 codes of magnitude < 8 (no NaN) */
__global__ void h_fill_codes_kernel(uint8_t *p, size_t n, uint64_t seed) {
        for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
                uint64_t z = (seed ^ (i * 0x9e3779b97f4a7c15ull)) * 0xbf58476d1ce4e5b9ull;
                z ^= z >> 29;
                uint8_t b = (uint8_t)(z >> 17);
                uint8_t em = b & 0x7f;
                if (em > 0x4f)
                        em = (uint8_t)(em % 0x50);
                p[i] = (uint8_t)((b & 0x80) | em);
        }
}
static inline void h_fill_f32(struct h_ctx *h, float *p, size_t n, uint64_t seed, float sd) {
        h_fill_f32_kernel<<<1024, 256, 0, h->stream>>>(p, n, seed, sd);
        HCHECK(cudaGetLastError());
}
static inline void h_fill_codes(struct h_ctx *h, uint8_t *p, size_t n, uint64_t seed) {
        h_fill_codes_kernel<<<1024, 256, 0, h->stream>>>(p, n, seed);
        HCHECK(cudaGetLastError());
}
template <typename T> static inline T *h_alloc(size_t n) {
        void *p;
        HCHECK(cudaMalloc(&p, n * sizeof(T) + 256));
        return (T *)p;
}
template <typename T> static inline std::vector<T> h_download(struct h_ctx *h, const T *d, size_t n) {
        std::vector<T> v(n);
        HCHECK(cudaMemcpyAsync(v.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost, h->stream));
        HCHECK(cudaStreamSynchronize(h->stream));
        return v;
}

/* ------------------------------------------------------------------ timing */
static inline void h_flush(struct h_ctx *h) {
        HCHECK(cudaMemsetAsync(h->flush_buf, (int)(rand() & 0xff), h->flush_bytes, h->stream));
}

/* Median milliseconds of fn() over reps runs, each after an L2 flush, after warm-up runs. */
template <typename F> static double h_time(struct h_ctx *h, F fn) {
        cudaEvent_t a, b;
        std::vector<float> ms;
        HCHECK(cudaEventCreate(&a));
        HCHECK(cudaEventCreate(&b));
        for (int i = 0; i < h->warmup; i++)
                fn();
        for (int i = 0; i < h->reps; i++) {
                h_flush(h);
                HCHECK(cudaEventRecord(a, h->stream));
                fn();
                HCHECK(cudaEventRecord(b, h->stream));
                HCHECK(cudaEventSynchronize(b));
                float t;
                HCHECK(cudaEventElapsedTime(&t, a, b));
                ms.push_back(t);
        }
        HCHECK(cudaGetLastError());
        HCHECK(cudaEventDestroy(a));
        HCHECK(cudaEventDestroy(b));
        std::sort(ms.begin(), ms.end());
        return ms.empty() ? 0 : ms[ms.size() / 2];
}

/* ------------------------------------------------------------------ ceilings */
static void h_measure_ceilings(struct h_ctx *h) {
        const char *env = getenv("DSV_CEILINGS");
        if (env && sscanf(env, "copy=%lf,bf16=%lf,fp8=%lf", &h->ceil.copy_gbps, &h->ceil.bf16_tflops, &h->ceil.fp8_tflops) == 3)
                return;
        /* copy: 2 GiB each way */
        const size_t cb = (size_t)2 << 30;
        void *s = h_alloc<uint8_t>(cb), *d = h_alloc<uint8_t>(cb);
        HCHECK(cudaMemsetAsync(s, 1, cb, h->stream));
        double ms = h_time(h, [&] { HCHECK(cudaMemcpyAsync(d, s, cb, cudaMemcpyDeviceToDevice, h->stream)); });
        h->ceil.copy_gbps = 2.0 * (double)cb / (ms * 1e-3) / 1e9;
        HCHECK(cudaFree(s));
        HCHECK(cudaFree(d));

        const int n = 8192;
        const double flop = 2.0 * n * (double)n * n;
        /* bf16 through cuBLAS, random data */
        uint16_t *A = h_alloc<uint16_t>((size_t)n * n), *B = h_alloc<uint16_t>((size_t)n * n);
        float *C = h_alloc<float>((size_t)n * n);
        float *tmp = h_alloc<float>((size_t)n * n);
        h_fill_f32(h, tmp, (size_t)n * n, 1, 1.0f);
        /* bf16 = upper half of the float bits */
        h_f32_to_bf16_kernel<<<1024, 256, 0, h->stream>>>(tmp, A, (size_t)n * n);
        h_fill_f32(h, tmp, (size_t)n * n, 4, 1.0f);
        h_f32_to_bf16_kernel<<<1024, 256, 0, h->stream>>>(tmp, B, (size_t)n * n);
        HCHECK(cudaGetLastError());
        const float one = 1.0f, zero = 0.0f;
        ms = h_time(h, [&] {
                HBLAS(cublasGemmEx(h->blas, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, &one, A, CUDA_R_16BF, n, B, CUDA_R_16BF, n, &zero, C,
                                   CUDA_R_32F, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        });
        h->ceil.bf16_tflops = flop / (ms * 1e-3) / 1e12;

        /* fp8 through cuBLASLt, tensor-wide scales, bf16 out */
        uint8_t *A8 = (uint8_t *)A, *B8 = (uint8_t *)B;
        h_fill_codes(h, A8, (size_t)n * n, 2);
        h_fill_codes(h, B8, (size_t)n * n, 3);
        float *sc = h_alloc<float>(2);
        const float sv[2] = {1.0f, 1.0f};
        HCHECK(cudaMemcpy(sc, sv, sizeof(sv), cudaMemcpyHostToDevice));
        cublasLtMatmulDesc_t op;
        cublasLtMatrixLayout_t la, lb, lc;
        cublasLtMatmulPreference_t pref;
        cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
        HBLAS(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
        HBLAS(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
        HBLAS(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
        const float *sa = sc, *sb = sc + 1;
        HBLAS(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &sa, sizeof(sa)));
        HBLAS(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &sb, sizeof(sb)));
        HBLAS(cublasLtMatrixLayoutCreate(&la, CUDA_R_8F_E4M3, n, n, n));
        HBLAS(cublasLtMatrixLayoutCreate(&lb, CUDA_R_8F_E4M3, n, n, n));
        HBLAS(cublasLtMatrixLayoutCreate(&lc, CUDA_R_16BF, n, n, n));
        size_t wsb = 64u << 20;
        void *ws = h_alloc<uint8_t>(wsb);
        HBLAS(cublasLtMatmulPreferenceCreate(&pref));
        HBLAS(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof(wsb)));
        cublasLtMatmulHeuristicResult_t res;
        int got = 0;
        HBLAS(cublasLtMatmulAlgoGetHeuristic(h->lt, op, la, lb, lc, lc, pref, 1, &res, &got));
        if (got > 0) {
                ms = h_time(h, [&] {
                        HBLAS(cublasLtMatmul(h->lt, op, &one, A8, la, B8, lb, &zero, C, lc, C, lc, &res.algo, ws, wsb, h->stream));
                });
                h->ceil.fp8_tflops = flop / (ms * 1e-3) / 1e12;
        }
        cublasLtMatmulPreferenceDestroy(pref);
        cublasLtMatrixLayoutDestroy(la);
        cublasLtMatrixLayoutDestroy(lb);
        cublasLtMatrixLayoutDestroy(lc);
        cublasLtMatmulDescDestroy(op);
        HCHECK(cudaFree(A));
        HCHECK(cudaFree(B));
        HCHECK(cudaFree(C));
        HCHECK(cudaFree(tmp));
        HCHECK(cudaFree(sc));
        HCHECK(cudaFree(ws));
}

/* ------------------------------------------------------------------ set-up, reporting */
static void h_init(struct h_ctx *h, const char *name, int argc, char **argv) {
        memset(h, 0, sizeof(*h));
        h->name = name;
        h->reps = 20;
        h->warmup = 3;
        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--csv") == 0 && i + 1 < argc) {
                        h->csv = fopen(argv[++i], "a");
                        if (!h->csv) {
                                perror(argv[i]);
                                exit(2);
                        }
                } else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
                        h->reps = atoi(argv[++i]);
                }
        }
        int n = 0;
        if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
                printf("%s: no CUDA device, nothing to measure\n", name);
                exit(77);
        }
        cudaDeviceProp prop;
        HCHECK(cudaGetDeviceProperties(&prop, 0));
        HCHECK(cudaStreamCreateWithFlags(&h->stream, cudaStreamNonBlocking));
        HBLAS(cublasCreate(&h->blas));
        HBLAS(cublasSetStream(h->blas, h->stream));
        HBLAS(cublasLtCreate(&h->lt));
        h->flush_bytes = (size_t)prop.l2CacheSize * 4;
        h->flush_buf = h_alloc<uint8_t>(h->flush_bytes);
        h_measure_ceilings(h);
        printf("%s on %s (%d SMs, L2 %d MB): ceilings copy %.0f GB/s, bf16 %.0f TFLOP/s, fp8 %.0f TFLOP/s\n", name, prop.name,
               prop.multiProcessorCount, prop.l2CacheSize >> 20, h->ceil.copy_gbps, h->ceil.bf16_tflops, h->ceil.fp8_tflops);
        if (h->csv) {
                fprintf(h->csv, "%s,ceiling,copy,0,%.1f,GB/s,,,,,\n", name, h->ceil.copy_gbps);
                fprintf(h->csv, "%s,ceiling,bf16_gemm_8192,0,%.1f,TFLOP/s,,,,,\n", name, h->ceil.bf16_tflops);
                fprintf(h->csv, "%s,ceiling,fp8_gemm_8192,0,%.1f,TFLOP/s,,,,,\n", name, h->ceil.fp8_tflops);
        }
}

/* Whether the user asked for this variant (--variant N, repeatable; none: all). */
static bool h_want_variant(int argc, char **argv, int v) {
        bool any = false;
        for (int i = 1; i + 1 < argc; i++)
                if (strcmp(argv[i], "--variant") == 0) {
                        any = true;
                        if (atoi(argv[i + 1]) == v)
                                return true;
                }
        return !any;
}

static void h_report(struct h_ctx *h, const char *variant, const char *shape, double ms, double value, const char *unit,
                     const char *ceil_name, double ceil, double max_err, bool valid) {
        const double frac = ceil > 0 ? value / ceil : 0;
        printf("  %-26s %-34s %9.4f ms %10.1f %-8s %5.1f%% of %-5s err %.2e %s\n", variant, shape, ms, value, unit, 100 * frac,
               ceil_name, max_err, valid ? "ok" : "INVALID");
        if (h->csv)
                fprintf(h->csv, "%s,%s,%s,%.5f,%.2f,%s,%s,%.2f,%.4f,%.3e,%s\n", h->name, variant, shape, ms, value, unit, ceil_name,
                        ceil, frac, max_err, valid ? "ok" : "INVALID");
        if (!valid)
                h->failures++;
}

static int h_finish(struct h_ctx *h) {
        if (h->csv)
                fclose(h->csv);
        if (h->failures)
                printf("%s: %d configuration(s) failed validation\n", h->name, h->failures);
        return h->failures ? 1 : 0;
}
