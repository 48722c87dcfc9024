/* Linear layers on the GPU (the kernels and their plain math are in linear.cuh).
 *
 * Paths, chosen per call:
 *   F8 weights, quantized input (faithful):
 *     - few tokens (T <= gemv_max_tokens): dcu_gemv_fp8_kernel, weight-bandwidth bound;
 *     - otherwise cuBLASLt's block-scaled FP8 matmul (128x128 weight blocks, 1x128 activation
 *       blocks, fp32 accumulation) when its start-up self-check against our tiled kernel
 *       passed on this device; else dcu_gemm_tiled_kernel (SIMT, fp32).
 *   F8 weights, f32 input (exact): the gemv or tiled kernel with unquantized input.
 *   BF16 weights (lm_head, weights_proj, gate): cuBLAS bf16 GEMM with fp32 accumulation on x
 *     split into three bf16 planes x = b0 + b1 + b2 (exact for 2^-100 <= |x| <= 3e38), so the result
 *     is the fp32 product the CPU computes, for any input; the planes are stacked along M,
 *     which costs nothing while the weight read dominates (decode, lm_head).
 *   F32 weights (tests, exact checkpoints): cuBLAS SGEMM.
 * DSV_CUDA_FP8_PATH=auto|tiled|gemv|cublaslt forces an FP8 path (harnesses, tests). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda.h>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/linear.cuh"

/* cuBLASLt's 1x128 / 128x128 block scaling came with CUDA 12.9; older toolkits build without it */
#if CUDA_VERSION >= 12090
#define DCU_HAVE_LT_BLOCK_SCALING 1
#endif

/* ------------------------------------------------------------------ helpers */
static bool aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

/* x[T][K] f32 -> planes[3][T][ldp] bf16 with x = p0 + p1 + p2. */
__global__ void dcu_split_bf16_kernel(const float *x, int64_t ldx, int64_t K, uint16_t *planes, int64_t ldp, int64_t plane) {
        const int64_t t = blockIdx.x;
        for (int64_t k = threadIdx.x; k < K; k += blockDim.x)
                dcu_split3_bf16(x[t * ldx + k], &planes[t * ldp + k], &planes[plane + t * ldp + k], &planes[2 * plane + t * ldp + k]);
}

/* out[t][n] = (p0 + p1) + p2 (bf16 when round); p planes [3][T][ldp]. */
__global__ void dcu_sum_planes_kernel(float *out, int64_t ldo, const float *p, int64_t ldp, int64_t plane, int64_t N, int round) {
        const int64_t t = blockIdx.x;
        for (int64_t n = threadIdx.x; n < N; n += blockDim.x) {
                float v = __fadd_rn(__fadd_rn(p[t * ldp + n], p[plane + t * ldp + n]), p[2 * plane + t * ldp + n]);
                out[t * ldo + n] = round ? dcu_round_bf16(v) : v;
        }
}

/* D (fp32 or bf16, [M][ldd]) rows 0..T -> out, optionally rounded. */
__global__ void dcu_widen_rows_kernel(float *out, int64_t ldo, const void *d, int64_t ldd, int64_t N, int d_bf16, int round) {
        const int64_t t = blockIdx.x;
        for (int64_t n = threadIdx.x; n < N; n += blockDim.x) {
                float v = d_bf16 ? dcu_bf16_to_f32(((const uint16_t *)d)[t * ldd + n]) : ((const float *)d)[t * ldd + n];
                out[t * ldo + n] = round ? dcu_round_bf16(v) : v;
        }
}

/* ------------------------------------------------------------------ our kernels */
static int launch_tiled(struct dcu_ctx *c, float *out, int64_t ldo, const void *a, int64_t lda, bool acodes, const float *as,
                        int64_t as_rs, int64_t as_cs, const struct dsv_tensor *w, int T, int N, int K, bool round) {
        dim3 grid((unsigned)dcu_ceil_div(N, DCU_GEMM_BN), (unsigned)dcu_ceil_div(T, DCU_GEMM_BM));
        const float *ws = w->type == DSV_F8_E4M3 ? (const float *)w->scale->data : NULL;
        const int64_t ws_ld = w->type == DSV_F8_E4M3 ? dcu_ld(w->scale) : 0;
        const int64_t ldw = dcu_ld(w);
        if (grid.y > 65535u)
                return dcu_fail(-EINVAL, __FILE__, __LINE__, "linear: too many rows for one launch");
#define TILED(AC, WT)                                                                                                   \
        dcu_gemm_tiled_kernel<AC, WT><<<grid, 256, 0, c->stream>>>(out, ldo, a, lda, as, as_rs, as_cs, w->data, ldw, ws, ws_ld, \
                                                                    T, N, K, round)
        switch (w->type) {
        case DSV_F8_E4M3:
                if (acodes)
                        TILED(true, DCU_W_F8);
                else
                        TILED(false, DCU_W_F8);
                break;
        case DSV_BF16:
                TILED(false, DCU_W_BF16);
                break;
        default:
                TILED(false, DCU_W_F32);
                break;
        }
#undef TILED
        DCU_LAUNCHED();
        return 0;
}

static int launch_gemv(struct dcu_ctx *c, float *out, int64_t ldo, const void *a, int64_t lda, bool acodes, const float *as,
                       int64_t as_rs, int64_t as_cs, const struct dsv_tensor *w, int T, int N, int K, bool round) {
        const unsigned grid = (unsigned)dcu_ceil_div(N, 8);
        const uint8_t *wq = (const uint8_t *)w->data;
        const float *ws = (const float *)w->scale->data;
        const int64_t ldw = dcu_ld(w), ws_ld = dcu_ld(w->scale);
#define GEMV(MT)                                                                                                              \
        do {                                                                                                                  \
                if (acodes)                                                                                                   \
                        dcu_gemv_fp8_kernel<MT, true><<<grid, 256, 0, c->stream>>>(out, ldo, a, lda, as, as_rs, as_cs, wq, ldw, ws, \
                                                                                    ws_ld, T, N, K, round);                   \
                else                                                                                                          \
                        dcu_gemv_fp8_kernel<MT, false><<<grid, 256, 0, c->stream>>>(out, ldo, a, lda, as, as_rs, as_cs, wq, ldw, ws, \
                                                                                     ws_ld, T, N, K, round);                  \
        } while (0)
        if (T <= 1)
                GEMV(1);
        else if (T <= 2)
                GEMV(2);
        else if (T <= 4)
                GEMV(4);
        else if (T <= 8)
                GEMV(8);
        else if (T <= 16)
                GEMV(16);
        else
                return dcu_fail(-EINVAL, __FILE__, __LINE__, "gemv: more than 16 tokens");
#undef GEMV
        DCU_LAUNCHED();
        return 0;
}

/* Whether the weight-streaming kernel takes this shape. */
static bool gemv_ok(const struct dsv_tensor *w, int T, int K, const void *a, int64_t lda_bytes) {
        return w->type == DSV_F8_E4M3 && T >= 1 && T <= 16 && K % 16 == 0 && w->stride % 16 == 0 && aligned16(w->data) &&
               aligned16(a) && lda_bytes % 16 == 0;
}

/* ------------------------------------------------------------------ cuBLASLt FP8 */
/* D[M4][ldd] = xq[M4][K] (1x128 scales xs_t[kb][M4]) times wq[N][K]^T (128x128 scales ws,
 * [ceil(N/128)][K/128] row-major), fp32 accumulation. Column-major view: A = W (K x N, op T,
 * scale mode BLK128x128), B = x (K x M4, op N, scale mode VEC128), D = N x M4. Returns
 * -EOPNOTSUPP when cuBLASLt has no algorithm for it. */
static int lt_fp8(struct dcu_ctx *c, const uint8_t *wq, int64_t ldw, const float *ws, const uint8_t *xq, int64_t ldx,
                  const float *xs_t, int64_t N, int64_t K, int64_t M4, void *d, int dtype_d, int64_t ldd) {
#ifndef DCU_HAVE_LT_BLOCK_SCALING
        return -EOPNOTSUPP;
#else
        cublasLtMatmulDesc_t op = NULL;
        cublasLtMatrixLayout_t la = NULL, lb = NULL, ld = NULL;
        cublasLtMatmulPreference_t pref = NULL;
        const cudaDataType_t dt = (cudaDataType_t)dtype_d;
        const float alpha = 1.0f, beta = 0.0f;
        cublasStatus_t st;
        struct dcu_lt_algo *hit = NULL;
        int r = 0;

#define LT(stmt)                                                                     \
        do {                                                                         \
                st = (stmt);                                                         \
                if (st != CUBLAS_STATUS_SUCCESS) {                                   \
                        r = dcu_fail_cublas(st, #stmt, __FILE__, __LINE__);          \
                        goto out;                                                    \
                }                                                                    \
        } while (0)
        {
                const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
                const int32_t sa = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F, sb = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
                LT(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
                LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
                LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
                LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &sa, sizeof(sa)));
                LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &sb, sizeof(sb)));
                LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &ws, sizeof(ws)));
                LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &xs_t, sizeof(xs_t)));
                LT(cublasLtMatrixLayoutCreate(&la, CUDA_R_8F_E4M3, (uint64_t)K, (uint64_t)N, ldw));
                LT(cublasLtMatrixLayoutCreate(&lb, CUDA_R_8F_E4M3, (uint64_t)K, (uint64_t)M4, ldx));
                LT(cublasLtMatrixLayoutCreate(&ld, dt, (uint64_t)N, (uint64_t)M4, ldd));
        }
        for (int i = 0; i < DCU_LT_CACHE; i++) {
                struct dcu_lt_algo *e = &c->lt_cache[i];
                if (e->n == N && e->k == K && e->m == M4 && e->ldw == ldw && e->ldd == ldd && e->dtype_d == dtype_d) {
                        hit = e;
                        break;
                }
        }
        if (!hit) {
                cublasLtMatmulHeuristicResult_t res;
                int got = 0;
                memset(&res, 0, sizeof(res));
                LT(cublasLtMatmulPreferenceCreate(&pref));
                LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &c->lt_ws_bytes,
                                                        sizeof(c->lt_ws_bytes)));
                st = cublasLtMatmulAlgoGetHeuristic(c->lt, op, la, lb, ld, ld, pref, 1, &res, &got);
                hit = &c->lt_cache[c->lt_cache_next];
                c->lt_cache_next = (c->lt_cache_next + 1) % DCU_LT_CACHE;
                hit->n = N;
                hit->k = K;
                hit->m = M4;
                hit->ldw = ldw;
                hit->ldd = ldd;
                hit->dtype_d = dtype_d;
                hit->ok = st == CUBLAS_STATUS_SUCCESS && got > 0 && res.state == CUBLAS_STATUS_SUCCESS;
                if (hit->ok)
                        hit->algo = res.algo;
        }
        if (!hit->ok) {
                r = -EOPNOTSUPP;
                goto out;
        }
        LT(cublasLtMatmul(c->lt, op, &alpha, wq, la, xq, lb, &beta, d, ld, d, ld, &hit->algo, c->lt_ws, c->lt_ws_bytes,
                          c->stream));
#undef LT
out:
        if (pref)
                cublasLtMatmulPreferenceDestroy(pref);
        if (ld)
                cublasLtMatrixLayoutDestroy(ld);
        if (lb)
                cublasLtMatrixLayoutDestroy(lb);
        if (la)
                cublasLtMatrixLayoutDestroy(la);
        if (op)
                cublasLtMatmulDescDestroy(op);
        return r;
#endif
}

/* Whether the cuBLASLt path takes this weight: K a multiple of 128 with its K-block count a
 * multiple of 4 (the scale rows are then 16-byte multiples), scales stored densely. */
static bool lt_ok(const struct dsv_tensor *w, int K) {
        const int64_t kb = K / DCU_QBLOCK;
        return w->type == DSV_F8_E4M3 && K % DCU_QBLOCK == 0 && kb % 4 == 0 && w->stride % 16 == 0 && aligned16(w->data) &&
               w->scale->stride == (size_t)kb * sizeof(float) && aligned16(w->scale->data);
}

/* ------------------------------------------------------------------ the op */
static int linear_fp8(struct dcu_ctx *c, const struct dsv_op_linear *p) {
        const int T = (int)dcu_rows(p->x), N = (int)dcu_rows(p->w), K = (int)dcu_cols(p->x);
        float *out = (float *)p->out->data;
        const int64_t ldo = dcu_ld(p->out);
        const int64_t nbk = dcu_ceil_div(K, DCU_QBLOCK);
        int path = c->fp8_path;

        if (!p->quant_in) {
                /* exact numerics: f32 input, no activation quantization */
                const void *x = p->x->data;
                if ((path == DCU_FP8_GEMV || (path == DCU_FP8_AUTO && T <= c->gemv_max_tokens)) &&
                    gemv_ok(p->w, T, K, x, (int64_t)p->x->stride))
                        return launch_gemv(c, out, ldo, x, dcu_ld(p->x), false, NULL, 0, 0, p->w, T, N, K, p->round_out);
                return launch_tiled(c, out, ldo, x, dcu_ld(p->x), false, NULL, 0, 0, p->w, T, N, K, p->round_out);
        }

        /* quantize x: codes [M4][ldq], scales either [T][nbk] or (cuBLASLt) [nbk][M4] */
        const int64_t M4 = dcu_round_up(T, 4), ldq = dcu_round_up(K, 16);
        const bool want_lt = lt_ok(p->w, K) && c->lt_fp8_ok &&
                             (path == DCU_FP8_CUBLASLT || (path == DCU_FP8_AUTO && T > c->gemv_max_tokens));
        const size_t qbytes = (size_t)dcu_round_up(M4 * ldq, 256), sbytes = (size_t)(nbk * M4) * sizeof(float);
        const int dtype_d = c->lt_fp8_dtype;
        const size_t dbytes = want_lt ? (size_t)(M4 * N) * (dtype_d == CUDA_R_16BF ? 2 : 4) : 0;
        uint8_t *buf = NULL;
        int r;

        DCU_TRY(dcu_scratch(c, qbytes + sbytes + dbytes + 256, (void **)&buf));
        uint8_t *xq = buf;
        float *xs = (float *)(buf + qbytes);
        void *d = buf + qbytes + dcu_round_up((int64_t)sbytes, 256);
        if (want_lt) {
                r = cudaMemsetAsync(buf, 0, qbytes + sbytes, c->stream) == cudaSuccess ? 0 : -EIO;
                if (r == 0)
                        r = dcu_quant_rows(c, (const float *)p->x->data, dcu_ld(p->x), T, K, xq, ldq, xs, 1, M4);
                if (r == 0) {
                        r = lt_fp8(c, (const uint8_t *)p->w->data, dcu_ld(p->w), (const float *)p->w->scale->data, xq, ldq, xs, N, K,
                                   M4, d, dtype_d, N);
                        if (r == 0)
                                dcu_widen_rows_kernel<<<dcu_grid(T), 256, 0, c->stream>>>(out, ldo, d, N, N, dtype_d == CUDA_R_16BF,
                                                                                         p->round_out);
                        if (r == 0 && cudaGetLastError() != cudaSuccess)
                                r = -EIO;
                }
                if (r != -EOPNOTSUPP) {
                        dcu_scratch_free(c, buf);
                        return r;
                }
                /* no cuBLASLt algorithm for this shape: our kernel, with [T][nbk] scales */
        }
        r = dcu_quant_rows(c, (const float *)p->x->data, dcu_ld(p->x), T, K, xq, ldq, xs, nbk, 1);
        if (r == 0) {
                if ((path == DCU_FP8_GEMV || (path == DCU_FP8_AUTO && T <= c->gemv_max_tokens)) && gemv_ok(p->w, T, K, xq, ldq))
                        r = launch_gemv(c, out, ldo, xq, ldq, true, xs, nbk, 1, p->w, T, N, K, p->round_out);
                else
                        r = launch_tiled(c, out, ldo, xq, ldq, true, xs, nbk, 1, p->w, T, N, K, p->round_out);
        }
        dcu_scratch_free(c, buf);
        return r;
}

static int linear_bf16(struct dcu_ctx *c, const struct dsv_op_linear *p) {
        const int64_t T = dcu_rows(p->x), N = dcu_rows(p->w), K = dcu_cols(p->x);
        const int64_t ldp = dcu_round_up(K, 8), plane = T * ldp, pplane = T * N;
        const size_t xbytes = (size_t)dcu_round_up(3 * plane * 2, 256);
        uint8_t *buf;
        int r = 0;
        if (c->fp8_path == DCU_FP8_TILED) /* reference path for tests */
                return launch_tiled(c, (float *)p->out->data, dcu_ld(p->out), p->x->data, dcu_ld(p->x), false, NULL, 0, 0, p->w,
                                    (int)T, (int)N, (int)K, p->round_out);
        DCU_TRY(dcu_scratch(c, xbytes + (size_t)(3 * pplane) * sizeof(float), (void **)&buf));
        uint16_t *planes = (uint16_t *)buf;
        float *prod = (float *)(buf + xbytes);
        const float alpha = 1.0f, beta = 0.0f;
        dcu_split_bf16_kernel<<<dcu_grid(T), 256, 0, c->stream>>>((const float *)p->x->data, dcu_ld(p->x), K, planes, ldp, plane);
        cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess)
                r = dcu_fail_cuda(e, "dcu_split_bf16_kernel", __FILE__, __LINE__);
        if (r == 0) {
                cublasStatus_t s = cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)N, (int)(3 * T), (int)K, &alpha, p->w->data,
                                                CUDA_R_16BF, (int)dcu_ld(p->w), planes, CUDA_R_16BF, (int)ldp, &beta, prod,
                                                CUDA_R_32F, (int)N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
                if (s != CUBLAS_STATUS_SUCCESS)
                        r = dcu_fail_cublas(s, "cublasGemmEx(bf16)", __FILE__, __LINE__);
        }
        if (r == 0) {
                dcu_sum_planes_kernel<<<dcu_grid(T), 256, 0, c->stream>>>((float *)p->out->data, dcu_ld(p->out), prod, N, pplane, N,
                                                                         p->round_out);
                e = cudaGetLastError();
                if (e != cudaSuccess)
                        r = dcu_fail_cuda(e, "dcu_sum_planes_kernel", __FILE__, __LINE__);
        }
        dcu_scratch_free(c, buf);
        return r;
}

static int linear_f32(struct dcu_ctx *c, const struct dsv_op_linear *p) {
        const int64_t T = dcu_rows(p->x), N = dcu_rows(p->w), K = dcu_cols(p->x);
        const float alpha = 1.0f, beta = 0.0f;
        if (c->fp8_path == DCU_FP8_TILED)
                return launch_tiled(c, (float *)p->out->data, dcu_ld(p->out), p->x->data, dcu_ld(p->x), false, NULL, 0, 0, p->w,
                                    (int)T, (int)N, (int)K, p->round_out);
        DCU_CUBLAS(cublasSgemm(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)N, (int)T, (int)K, &alpha, (const float *)p->w->data,
                               (int)dcu_ld(p->w), (const float *)p->x->data, (int)dcu_ld(p->x), &beta, (float *)p->out->data,
                               (int)dcu_ld(p->out)));
        if (p->round_out)
                return dcu_round_rows(c, (float *)p->out->data, dcu_ld(p->out), T, N);
        return 0;
}

int dcu_linear(struct dcu_ctx *c, const struct dsv_op_linear *p) {
        if (dcu_rows(p->x) == 0 || dcu_rows(p->w) == 0)
                return 0;
        if (dcu_cols(p->x) == 0)
                return cudaMemset2DAsync(p->out->data, p->out->stride, 0, (size_t)dcu_rows(p->w) * sizeof(float), (size_t)dcu_rows(p->x),
                                         c->stream) == cudaSuccess
                               ? 0
                               : -EIO;
        switch (p->w->type) {
        case DSV_F8_E4M3:
                return linear_fp8(c, p);
        case DSV_BF16:
                return linear_bf16(c, p);
        default:
                return linear_f32(c, p);
        }
}

/* ------------------------------------------------------------------ start-up self-check
 * cuBLASLt's block-scaled FP8 layout rules (scale tensor orders, padding) cannot be checked
 * without the device, so the backend checks them on it: a random 6 x 512 x 384 problem
 * through cuBLASLt and through our tiled kernel must agree to summation noise (Hopper's FP8
 * MMA keeps ~14 mantissa bits inside a 128-block: NMSE ~1e-9, a wrong layout ~1). Until
 * then (and if it fails) the tiled kernel serves. */
__global__ void dcu_fill_random_kernel(uint8_t *codes, int64_t n_codes, float *wsc, int64_t n_ws, float *xs, int64_t n_xs,
                                       uint64_t seed) {
        const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
        if (i < n_codes) {
                uint8_t b = (uint8_t)(dcu_mix64(seed ^ (uint64_t)i) >> 13);
                codes[i] = (uint8_t)(b & 0xbf); /* magnitudes < 2^1: no NaN, sums stay small */
        }
        if (i < n_ws)
                wsc[i] = 0.25f + 1.5f * (float)dcu_rand_u01(seed + 1, (uint64_t)i); /* not powers of two on purpose */
        if (i < n_xs)
                xs[i] = ldexpf(1.0f, (int)(dcu_mix64(seed + 2 + (uint64_t)i) % 9) - 4);
}

int dcu_linear_init(struct dcu_ctx *c) {
        const int T = 6, M4 = 8, N = 384, K = 512, KB = K / DCU_QBLOCK, NB = N / DCU_QBLOCK;
        const int64_t n_codes = (int64_t)N * K + (int64_t)M4 * K;
        uint8_t *buf = NULL;
        float ref[6 * 384], got[6 * 384];
        int r;
        c->lt_fp8_ok = false;
        snprintf(c->lt_fp8_note, sizeof(c->lt_fp8_note), "not checked");
        const size_t bytes = (size_t)n_codes + (size_t)(NB * KB + KB * M4 + T * KB) * sizeof(float) + 3 * (size_t)M4 * N * sizeof(float);
        if (cudaMalloc((void **)&buf, bytes + 1024) != cudaSuccess) {
                cudaGetLastError();
                snprintf(c->lt_fp8_note, sizeof(c->lt_fp8_note), "self-check: no memory");
                return 0;
        }
        uint8_t *wq = buf, *xq = buf + (size_t)N * K;
        float *ws = (float *)(buf + dcu_round_up(n_codes, 256));
        float *xs_t = ws + NB * KB;  /* [KB][M4] */
        float *xs = xs_t + KB * M4;  /* [T][KB] */
        float *d_ref = xs + dcu_round_up(T * KB, 64);
        float *d_lt = d_ref + M4 * N, *d_wide = d_lt + M4 * N;
        dcu_fill_random_kernel<<<(unsigned)dcu_ceil_div(n_codes, 256), 256, 0, c->stream>>>(wq, n_codes, ws, NB * KB, xs_t, KB * M4,
                                                                                          0x5eedull);
        /* the same activation scales in both layouts */
        for (int t = 0; t < T; t++)
                for (int kb = 0; kb < KB; kb++)
                        cudaMemcpyAsync(xs + t * KB + kb, xs_t + kb * M4 + t, sizeof(float), cudaMemcpyDeviceToDevice, c->stream);
        struct dsv_tensor wsc = {DSV_F32, {KB, NB}, (size_t)KB * sizeof(float), ws, NULL};
        struct dsv_tensor w = {DSV_F8_E4M3, {K, N}, (size_t)K, wq, &wsc};
        r = launch_tiled(c, d_ref, N, xq, K, true, xs, KB, 1, &w, T, N, K, false);
        const int dtypes[2] = {CUDA_R_32F, CUDA_R_16BF};
        for (int di = 0; r == 0 && di < 2 && !c->lt_fp8_ok; di++) {
                int lr = lt_fp8(c, wq, K, ws, xq, K, xs_t, N, K, M4, d_lt, dtypes[di], N);
                if (lr == -EOPNOTSUPP) {
                        snprintf(c->lt_fp8_note, sizeof(c->lt_fp8_note), "cuBLASLt: no block-scaled FP8 algorithm on this device");
                        continue;
                }
                if (lr < 0) {
                        snprintf(c->lt_fp8_note, sizeof(c->lt_fp8_note), "cuBLASLt failed: %.150s", dcu_last_error());
                        continue;
                }
                dcu_widen_rows_kernel<<<T, 256, 0, c->stream>>>(d_wide, N, d_lt, N, N, dtypes[di] == CUDA_R_16BF, 0);
                if (cudaMemcpyAsync(ref, d_ref, sizeof(ref), cudaMemcpyDeviceToHost, c->stream) != cudaSuccess ||
                    cudaMemcpyAsync(got, d_wide, sizeof(got), cudaMemcpyDeviceToHost, c->stream) != cudaSuccess ||
                    cudaStreamSynchronize(c->stream) != cudaSuccess) {
                        snprintf(c->lt_fp8_note, sizeof(c->lt_fp8_note), "self-check copy failed");
                        break;
                }
                double num = 0, den = 0;
                for (int i = 0; i < T * N; i++) {
                        double e = (double)got[i] - ref[i];
                        num += e * e;
                        den += (double)ref[i] * ref[i];
                }
                double nmse = den > 0 ? num / den : (num > 0 ? 1 : 0);
                if (nmse < (dtypes[di] == CUDA_R_16BF ? 1e-4 : 1e-6)) { /* a layout error gives ~1 */
                        c->lt_fp8_ok = true;
                        c->lt_fp8_dtype = dtypes[di];
                        snprintf(c->lt_fp8_note, sizeof(c->lt_fp8_note), "cuBLASLt block-scaled FP8 (D %s), self-check NMSE %.2e",
                                 di ? "bf16" : "fp32", nmse);
                } else {
                        snprintf(c->lt_fp8_note, sizeof(c->lt_fp8_note),
                                 "cuBLASLt block-scaled FP8 disagrees with the tiled kernel (D %s, NMSE %.2e): not used",
                                 di ? "bf16" : "fp32", nmse);
                }
        }
        cudaStreamSynchronize(c->stream);
        cudaGetLastError();
        cudaFree(buf);
        return r;
}
