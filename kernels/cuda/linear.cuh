/* Linear-layer kernels, shared by the backend (linear.cu) and the harness kernels/dev/fp8_gemm.cu.
 *
 * Equivalent math (the CPU's dsv_cpu_linear), out[T, N] = x[T, K] W[N, K]^T:
 *   for kb in K blocks of 128 (the last may be partial):
 *       d = sum_{k in kb} a[m, k] * w[n, k]                     (fp32)
 *       acc[m, n] += d * (a_scale[m, kb] * w_scale[n/128, kb])  (fp32)
 *   out = bf16(acc) when round
 * a is either act_quant codes (e4m3, with their ue8m0 scales) or plain f32 values (scale 1);
 * w is e4m3 codes with 128x128 block scales, bf16 or f32 (scale 1). e4m3 x e4m3 products are
 * exact in fp32, so the only difference from the CPU is the order of the fp32 sums. */
#pragma once

#include "kernels/cuda/plan.h"

enum dcu_wtype { DCU_W_F8 = 0, DCU_W_BF16 = 1, DCU_W_F32 = 2 };

template <int WT> static __device__ __forceinline__ float dcu_load_wt(const void *w, int64_t ldw, int64_t n, int64_t k) {
        if (WT == DCU_W_F8)
                return dcu_e4m3_to_f32(((const uint8_t *)w)[n * ldw + k]);
        if (WT == DCU_W_BF16)
                return dcu_bf16_to_f32(((const uint16_t *)w)[n * ldw + k]);
        return ((const float *)w)[n * ldw + k];
}

template <bool ACODES> static __device__ __forceinline__ float dcu_load_a(const void *a, int64_t lda, int64_t m, int64_t k) {
        if (ACODES)
                return dcu_e4m3_to_f32(((const uint8_t *)a)[m * lda + k]);
        return ((const float *)a)[m * lda + k];
}

/* The tiled kernel: block (blockIdx.x, blockIdx.y) computes out[m0 .. m0+64, n0 .. n0+64),
 * thread (ty, tx) = (tid / 16, tid % 16) the 4x4 outputs dcu_gemm_row(m0, ty, i),
 * dcu_gemm_col(n0, tx, j) (plan.h). A and W slices of 32 k go through shared memory as
 * floats. a_scale[m, kb] is as[m * as_rs + kb * as_cs] (codes only); w_scale[n/128, kb] is
 * ws[(n/128) * ws_ld + kb] (F8 only). All four columns of a thread share n/128 because tiles
 * are 64 wide and start at multiples of 64. */
template <bool ACODES, int WT>
__global__ void __launch_bounds__(256) dcu_gemm_tiled_kernel(float *out, int64_t ldo, const void *a, int64_t lda, const float *as,
                                                             int64_t as_rs, int64_t as_cs, const void *w, int64_t ldw,
                                                             const float *ws, int64_t ws_ld, int M, int N, int K, int round) {
        __shared__ float As[DCU_GEMM_BK][DCU_GEMM_BM + 4];
        __shared__ float Bs[DCU_GEMM_BK][DCU_GEMM_BN + 4];
        const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
        const int m0 = blockIdx.y * DCU_GEMM_BM, n0 = blockIdx.x * DCU_GEMM_BN;
        float acc[4][4], blk[4][4];
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++)
                        acc[i][j] = blk[i][j] = 0.0f;
        const int nbk = (K + DCU_QBLOCK - 1) / DCU_QBLOCK;
        for (int kb = 0; kb < nbk; kb++) {
                const int kend = min(K, (kb + 1) * DCU_QBLOCK);
                for (int k0 = kb * DCU_QBLOCK; k0 < kend; k0 += DCU_GEMM_BK) {
#pragma unroll
                        for (int e = 0; e < 8; e++) {
                                int r, cc;
                                dcu_gemm_load_idx(tid, e, &r, &cc);
                                const int k = k0 + cc, m = m0 + r, n = n0 + r;
                                As[cc][r] = (m < M && k < kend) ? dcu_load_a<ACODES>(a, lda, m, k) : 0.0f;
                                Bs[cc][r] = (n < N && k < kend) ? dcu_load_wt<WT>(w, ldw, n, k) : 0.0f;
                        }
                        __syncthreads();
#pragma unroll 8
                        for (int kk = 0; kk < DCU_GEMM_BK; kk++) {
                                float av[4], bv[4];
#pragma unroll
                                for (int i = 0; i < 4; i++)
                                        av[i] = As[kk][ty * 4 + i];
#pragma unroll
                                for (int j = 0; j < 4; j++)
                                        bv[j] = Bs[kk][tx * 4 + j];
#pragma unroll
                                for (int i = 0; i < 4; i++)
#pragma unroll
                                        for (int j = 0; j < 4; j++)
                                                blk[i][j] = fmaf(av[i], bv[j], blk[i][j]);
                        }
                        __syncthreads();
                }
                const int nc = dcu_gemm_col(n0, tx, 0);
                const float wsc = (WT == DCU_W_F8 && nc < N) ? ws[(int64_t)(nc / DCU_QBLOCK) * ws_ld + kb] : 1.0f;
#pragma unroll
                for (int i = 0; i < 4; i++) {
                        const int m = dcu_gemm_row(m0, ty, i);
                        const float asc = (ACODES && m < M) ? as[(int64_t)m * as_rs + (int64_t)kb * as_cs] : 1.0f;
                        const float f = __fmul_rn(asc, wsc);
#pragma unroll
                        for (int j = 0; j < 4; j++) {
                                acc[i][j] = __fadd_rn(acc[i][j], __fmul_rn(blk[i][j], f));
                                blk[i][j] = 0.0f;
                        }
                }
        }
#pragma unroll
        for (int i = 0; i < 4; i++) {
                const int m = dcu_gemm_row(m0, ty, i);
#pragma unroll
                for (int j = 0; j < 4; j++) {
                        const int n = dcu_gemm_col(n0, tx, j);
                        if (m < M && n < N)
                                out[(int64_t)m * ldo + n] = round ? dcu_round_bf16(acc[i][j]) : acc[i][j];
                }
        }
}

/* The weight-streaming kernel for few tokens (T <= MT), F8 weights: one warp per output
 * row n, so the weight matrix is read exactly once, 16 bytes per lane per load. Lane l of a
 * 512-wide step covers k = dcu_gemv_k(k0, l) .. +16 inside block dcu_gemv_kb(k0, l); the
 * 8 lanes of a block xor-shuffle their partial dots into the block sum d, the first of them
 * adds d * (a_scale * w_scale), and a final xor over the 4 groups sums the row.
 * Needs K % 16 == 0, 16-byte aligned rows of w and of a (codes) / 16-byte aligned a rows. */
template <int MT, bool ACODES>
__global__ void __launch_bounds__(256) dcu_gemv_fp8_kernel(float *out, int64_t ldo, const void *a, int64_t lda, const float *as,
                                                           int64_t as_rs, int64_t as_cs, const uint8_t *w, int64_t ldw,
                                                           const float *ws, int64_t ws_ld, int T, int N, int K, int round) {
        const int lane = threadIdx.x & 31;
        const int n = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
        if (n >= N)
                return; /* whole warp */
        float acc[MT];
#pragma unroll
        for (int t = 0; t < MT; t++)
                acc[t] = 0.0f;
        const uint8_t *wr = w + (int64_t)n * ldw;
        const float *wsr = ws + (int64_t)(n / DCU_QBLOCK) * ws_ld;
        for (int k0 = 0; k0 < K; k0 += DCU_GEMV_STEP) {
                const int k = dcu_gemv_k(k0, lane), kb = dcu_gemv_kb(k0, lane);
                const bool valid = k < K;
                float wf[16];
                if (valid) {
                        const uint4 raw = *(const uint4 *)(wr + k);
                        const uint32_t wd[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
                        for (int i = 0; i < 16; i++)
                                wf[i] = dcu_e4m3_to_f32((uint8_t)(wd[i / 4] >> (8 * (i % 4))));
                } else {
#pragma unroll
                        for (int i = 0; i < 16; i++)
                                wf[i] = 0.0f;
                }
                const float wsc = valid ? wsr[kb] : 0.0f;
#pragma unroll
                for (int t = 0; t < MT; t++) {
                        if (t >= T)
                                break;
                        float xv[16];
                        if (valid) {
                                if (ACODES) {
                                        const uint4 raw = *(const uint4 *)((const uint8_t *)a + (int64_t)t * lda + k);
                                        const uint32_t xd[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
                                        for (int i = 0; i < 16; i++)
                                                xv[i] = dcu_e4m3_to_f32((uint8_t)(xd[i / 4] >> (8 * (i % 4))));
                                } else {
                                        const float4 *xp = (const float4 *)((const float *)a + (int64_t)t * lda + k);
#pragma unroll
                                        for (int i = 0; i < 4; i++) {
                                                float4 f = xp[i];
                                                xv[4 * i] = f.x;
                                                xv[4 * i + 1] = f.y;
                                                xv[4 * i + 2] = f.z;
                                                xv[4 * i + 3] = f.w;
                                        }
                                }
                        } else {
#pragma unroll
                                for (int i = 0; i < 16; i++)
                                        xv[i] = 0.0f;
                        }
                        float p = 0.0f;
#pragma unroll
                        for (int i = 0; i < 16; i++)
                                p = fmaf(wf[i], xv[i], p);
                        p += __shfl_xor_sync(0xffffffffu, p, 1);
                        p += __shfl_xor_sync(0xffffffffu, p, 2);
                        p += __shfl_xor_sync(0xffffffffu, p, 4);
                        if ((lane & 7) == 0 && valid) {
                                const float asc = ACODES ? as[(int64_t)t * as_rs + (int64_t)kb * as_cs] : 1.0f;
                                acc[t] = __fadd_rn(acc[t], __fmul_rn(p, __fmul_rn(asc, wsc)));
                        }
                }
        }
#pragma unroll
        for (int t = 0; t < MT; t++) {
                if (t >= T)
                        break;
                float v = acc[t];
                v += __shfl_xor_sync(0xffffffffu, v, 8);
                v += __shfl_xor_sync(0xffffffffu, v, 16);
                if (lane == 0)
                        out[(int64_t)t * ldo + n] = round ? dcu_round_bf16(v) : v;
        }
}
