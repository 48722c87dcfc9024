/* Kernels of kernels/cuda/elementwise.cu (embedding and row gathers, SwiGLU, add, RoPE,
 * Hadamard, row copies): one block per row, every row pointer honouring the byte stride.
 * Products and sums the CPU evaluates as separate fp32 operations use __fmul_rn / __fadd_rn
 * so the compiler cannot fuse them into an FMA: bit-exact against the reference except where
 * a libm function (expf, cosf, sinf) differs by an ulp. */
#pragma once

#include "kernels/cuda/plan.h"
#include "kernels/cuda/reduce.cuh"

/* out[t, :] = float(table[ids[t], :]); an id outside [0, V) writes NaN and flags the error. */
__global__ void dcu_embed_kernel(float *out, int64_t ldo, const uint16_t *table, int64_t ldt, int64_t V, const int32_t *ids,
                                 int64_t D, unsigned *err) {
        const int64_t t = blockIdx.x;
        const int32_t id = ids[t];
        float *o = out + t * ldo;
        if (id < 0 || id >= V) {
                if (threadIdx.x == 0)
                        atomicOr(err, DCU_ERR_INDEX);
                for (int64_t i = threadIdx.x; i < D; i += blockDim.x)
                        o[i] = dcu_nan();
                return;
        }
        const uint16_t *row = table + id * ldt;
        for (int64_t i = threadIdx.x; i < D; i += blockDim.x)
                o[i] = dcu_bf16_to_f32(row[i]);
}

/* out[i] = x[rows[i]] */
__global__ void dcu_get_rows_kernel(float *out, int64_t ldo, const float *x, int64_t ldx, int64_t X, const int32_t *rows,
                                    int64_t D, unsigned *err) {
        const int64_t i = blockIdx.x;
        const int32_t r = rows[i];
        float *o = out + i * ldo;
        if (r < 0 || r >= X) {
                if (threadIdx.x == 0)
                        atomicOr(err, DCU_ERR_INDEX);
                for (int64_t k = threadIdx.x; k < D; k += blockDim.x)
                        o[k] = dcu_nan();
                return;
        }
        for (int64_t k = threadIdx.x; k < D; k += blockDim.x)
                o[k] = x[r * ldx + k];
}

/* Row r of a weight as numbers (struct dsv_op_dequant): W_TYPE 0 FP8 codes times the row's
 * block scales (scale: the F32 scale row of r / 128), 1 BF16, 2 F32; out F32 (rounded to bf16
 * values when round) or, with OUT_BF16, BF16. One fp32 product and one rounding per element,
 * as on the CPU. */
template <int W_TYPE, bool OUT_BF16>
__global__ void dcu_dequant_kernel(void *out, int64_t ldo, const void *w, int64_t ldw, const float *scale, int64_t lds,
                                   int64_t K, int round) {
        const int64_t r = blockIdx.x;
        const float *sc = W_TYPE == 0 ? scale + (r / DCU_QBLOCK) * lds : nullptr;
        for (int64_t j = threadIdx.x; j < K; j += blockDim.x) {
                float x;
                if (W_TYPE == 0)
                        x = __fmul_rn(dcu_e4m3_to_f32(((const uint8_t *)w)[r * ldw + j]), sc[j / DCU_QBLOCK]);
                else if (W_TYPE == 1)
                        x = dcu_bf16_to_f32(((const uint16_t *)w)[r * ldw + j]);
                else
                        x = ((const float *)w)[r * ldw + j];
                if (OUT_BF16)
                        ((uint16_t *)out)[r * ldo + j] = dcu_f32_to_bf16(x);
                else
                        ((float *)out)[r * ldo + j] = round ? dcu_round_bf16(x) : x;
        }
}

/* swiglu: out = bf16(silu(a) * b), silu(a) = a / (1 + exp(-a));  add: out = bf16(a + b) */
template <bool SWIGLU>
__global__ void dcu_binary_kernel(float *out, int64_t ldo, const float *a, int64_t lda, const float *b, int64_t ldb, int64_t N,
                                  int faithful) {
        const int64_t t = blockIdx.x;
        float *o = out + t * ldo;
        const float *ra = a + t * lda, *rb = b + t * ldb;
        for (int64_t i = threadIdx.x; i < N; i += blockDim.x) {
                float x = ra[i], y = rb[i], v;
                if (SWIGLU) {
                        float s = __fdiv_rn(x, __fadd_rn(1.0f, expf(-x)));
                        v = __fmul_rn(s, y);
                } else {
                        v = __fadd_rn(x, y);
                }
                o[i] = dcu_rnd(v, faithful);
        }
}

/* RoPE, token t (one block), head h, pair i < rope_dim/2:
 *   angle = float(pos[t]) * inv_freq[i]
 *   interleaved: (a, b) = (x[2i], x[2i+1]);  half-split: (a, b) = (x[i], x[i + rope_dim/2])
 *   a' = a cos - b sin,  b' = a sin + b cos   (bf16 in faithful mode) */
__global__ void dcu_rope_kernel(float *x, int64_t ldx, const int32_t *pos, const float *inv_freq, int n_heads, int head_stride,
                                int offset, int half, int interleaved, int faithful) {
        DCU_DYN_SMEM(float, cs); /* [half] cos, [half] sin */
        float *sn = cs + half;
        const int64_t t = blockIdx.x;
        const float p = (float)pos[t];
        for (int i = threadIdx.x; i < half; i += blockDim.x) {
                float a = __fmul_rn(p, inv_freq[i]);
                cs[i] = cosf(a);
                sn[i] = sinf(a);
        }
        __syncthreads();
        float *row = x + t * ldx;
        const int n = n_heads * half;
        for (int e = threadIdx.x; e < n; e += blockDim.x) {
                int h = e / half, i = e % half;
                float *xh = row + (int64_t)h * head_stride + offset;
                float *pa = interleaved ? &xh[2 * i] : &xh[i];
                float *pb = interleaved ? &xh[2 * i + 1] : &xh[i + half];
                float a = *pa, b = *pb;
                *pa = dcu_rnd(__fsub_rn(__fmul_rn(a, cs[i]), __fmul_rn(b, sn[i])), faithful);
                *pb = dcu_rnd(__fadd_rn(__fmul_rn(a, sn[i]), __fmul_rn(b, cs[i])), faithful);
        }
}

/* Walsh-Hadamard (Sylvester order, orthonormal) of each d-wide group of a row; one block per
 * (row, group), the group in shared memory:
 *   for h = 1, 2, 4, ... < d:  (x[j], x[j+h]) := (x[j] + x[j+h], x[j] - x[j+h])
 *   x := bf16(x * scale), scale = fp32(1/sqrt(d))
 * Each level's pairs are independent, so the values equal the CPU's sequential loop. */
__global__ void dcu_hadamard_kernel(float *x, int64_t ldx, int64_t groups, int d, float scale, int faithful) {
        DCU_DYN_SMEM(float, v);
        const int64_t t = blockIdx.x / groups, g = blockIdx.x % groups;
        float *row = x + t * ldx + g * d;
        for (int j = threadIdx.x; j < d; j += blockDim.x)
                v[j] = row[j];
        __syncthreads();
        for (int h = 1; h < d; h *= 2) {
                for (int q = threadIdx.x; q < d / 2; q += blockDim.x) {
                        int i = (q / h) * 2 * h + (q % h);
                        float a = v[i], b = v[i + h];
                        v[i] = __fadd_rn(a, b);
                        v[i + h] = __fsub_rn(a, b);
                }
                __syncthreads();
        }
        for (int j = threadIdx.x; j < d; j += blockDim.x)
                row[j] = dcu_rnd(__fmul_rn(v[j], scale), faithful);
}

/* dst[r][i] = src[r][i] (bf16-rounded when round); in place when dst == src. */
__global__ void dcu_copy_rows_kernel(float *dst, int64_t ldd, const float *src, int64_t lds, int64_t cols, int round) {
        const int64_t r = blockIdx.x;
        for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
                float v = src[r * lds + i];
                dst[r * ldd + i] = round ? dcu_round_bf16(v) : v;
        }
}
