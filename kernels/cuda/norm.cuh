/* Kernels of kernels/cuda/norm.cu: RMSNorm (fused residual add), LayerNorm and act_quant
 * (plain math in norm.cu). */
#pragma once

#include "kernels/cuda/plan.h"
#include "kernels/cuda/quant.cuh"
#include "kernels/cuda/reduce.cuh"

static __device__ __forceinline__ float load_w(const float *w, int64_t i) { return w[i]; }
static __device__ __forceinline__ float load_w(const uint16_t *w, int64_t i) { return dcu_bf16_to_f32(w[i]); }

/* RMSNorm, one block per row t (x or res may be absent):
 *   s = res + x (fp32);  res := bf16(s);  ss = sum s^2 (double)
 *   out = bf16(w * (s * r)),  r = 1 / sqrtf(float(ss / N) + eps) */
template <typename W>
__global__ void dcu_rmsnorm_kernel(float *out, int64_t ldo, float *res, int64_t ldr, const float *x, int64_t ldx, const W *w,
                                   int64_t N, float eps, int faithful) {
        __shared__ double sh[32];
        const int64_t t = blockIdx.x;
        float *o = out + t * ldo;
        float *r = res ? res + t * ldr : NULL;
        const float *xr = x ? x + t * ldx : NULL;
        double ss = 0;
        for (int64_t i = threadIdx.x; i < N; i += blockDim.x) {
                float s = r ? (xr ? __fadd_rn(r[i], xr[i]) : r[i]) : xr[i];
                o[i] = s;
                ss += (double)s * s;
        }
        if (r)
                for (int64_t i = threadIdx.x; i < N; i += blockDim.x)
                        r[i] = dcu_rnd(o[i], faithful);
        ss = dcu_block_sum(ss, sh);
        const float rs = 1.0f / sqrtf((float)(ss / (double)N) + eps);
        for (int64_t i = threadIdx.x; i < N; i += blockDim.x)
                o[i] = dcu_rnd(__fmul_rn(load_w(w, i), __fmul_rn(o[i], rs)), faithful);
}

/* LayerNorm, one block per row (out may be x):
 *   mean = float(sum x / N) (double sum);  var = sum (x - mean)^2 / N (double)
 *   out = bf16(((x - mean) * r) * w + b),  r = 1 / sqrtf(float(var) + eps) */
template <typename W>
__global__ void dcu_layernorm_kernel(float *out, int64_t ldo, const float *x, int64_t ldx, const W *w, const W *b, int64_t N,
                                     float eps, int faithful) {
        __shared__ double sh[32];
        const int64_t t = blockIdx.x;
        const float *xr = x + t * ldx;
        float *o = out + t * ldo;
        double sum = 0, ss = 0;
        for (int64_t i = threadIdx.x; i < N; i += blockDim.x)
                sum += xr[i];
        sum = dcu_block_sum(sum, sh);
        const float mean = (float)(sum / (double)N);
        for (int64_t i = threadIdx.x; i < N; i += blockDim.x) {
                double d = (double)xr[i] - mean;
                ss += d * d;
        }
        ss = dcu_block_sum(ss, sh); /* ends with a barrier: every x read before any write */
        const float rs = 1.0f / sqrtf((float)(ss / (double)N) + eps);
        for (int64_t i = threadIdx.x; i < N; i += blockDim.x) {
                float v = __fadd_rn(__fmul_rn(__fmul_rn(__fsub_rn(xr[i], mean), rs), load_w(w, i)), load_w(b, i));
                o[i] = dcu_rnd(v, faithful);
        }
}

/* act_quant, one warp per (row, 128-block b); 8 warps per block of 256 threads:
 *   amax = max |x| over the block (NaN anywhere: scale NaN, codes 0x7f)
 *   scale = ue8m0(amax / 448);  q = e4m3(clamp(x / scale, +-448))
 *   codes to q[r * ldq + k], the scale to s[r * s_rs + b * s_cs] */
__global__ void dcu_quant_kernel(const float *x, int64_t ldx, int64_t rows, int64_t cols, uint8_t *q, int64_t ldq, float *s,
                                 int64_t s_rs, int64_t s_cs) {
        const int lane = threadIdx.x & 31;
        const int64_t nb = (cols + DCU_QBLOCK - 1) / DCU_QBLOCK;
        const int64_t job = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
        if (job >= rows * nb)
                return;
        const int64_t r = job / nb, b = job % nb, k0 = b * DCU_QBLOCK;
        const int64_t len = cols - k0 < DCU_QBLOCK ? cols - k0 : DCU_QBLOCK;
        const float sc = dcu_warp_quant(x + r * ldx + k0, (int)len, q + r * ldq + k0);
        if (lane == 0)
                s[r * s_rs + b * s_cs] = sc;
}
