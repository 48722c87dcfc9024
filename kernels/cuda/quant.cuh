/* act_quant of one 128-value block by one warp, shared by the kernels that quantize
 * (act_quant itself, the KV-cache store). */
#pragma once

#include "kernels/cuda/plan.h"
#include "kernels/cuda/reduce.cuh"

/* The n <= 128 values x[0, n) as e4m3 codes in q[0, n) (lane k writes codes k, k+32, ...);
 * returns the block's scale, in every lane:
 *   amax = max |x| (NaN anywhere: scale NaN, codes 0x7f)
 *   scale = ue8m0(amax / 448);  q = e4m3(clamp(x / scale, +-448)) */
static __device__ __forceinline__ float dcu_warp_quant(const float *x, int n, uint8_t *q) {
        const int lane = threadIdx.x & 31;
        float v[4], amax = 0;
        int nan = 0;
#pragma unroll
        for (int j = 0; j < 4; j++) {
                int k = lane + 32 * j;
                v[j] = k < n ? x[k] : 0.0f;
                float a = fabsf(v[j]);
                nan |= dcu_isnan(a);
                amax = a > amax ? a : amax;
        }
        amax = dcu_warp_max(amax);
        nan = __any_sync(0xffffffffu, nan);
        const float sc = nan ? dcu_nan() : dcu_act_scale(amax);
        const float inv = 1.0f / sc;
#pragma unroll
        for (int j = 0; j < 4; j++) {
                int k = lane + 32 * j;
                if (k < n)
                        q[k] = nan ? (uint8_t)0x7f : dcu_quant_e4m3(v[j], inv);
        }
        return sc;
}
