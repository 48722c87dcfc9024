/* The number formats of kernels/numerics.h (bf16, FP8 e4m3fn, ue8m0 act_quant scales) as
 * functions callable from CUDA device code and host code alike. The bodies repeat
 * numerics.h's operation for operation, so a value rounds the same way on the GPU as in the
 * CPU reference; tests/gpu/test-cuda-plan.c checks that on every e4m3 code, every bf16
 * pattern and millions of random floats.
 *
 * The header is plain C when no CUDA compiler reads it (DCU_HD = static inline), so the CPU
 * tests compile it with gcc. */
#pragma once

#include <stdint.h>

#if defined(__CUDACC__)
#define DCU_HD static __host__ __device__ __forceinline__
#else
#include <string.h>
#define DCU_HD static inline
#endif

#define DCU_FP8_MAX 448.0f
#define DCU_QBLOCK 128

DCU_HD uint32_t dcu_f32_bits(float f) {
#if defined(__CUDA_ARCH__)
        return __float_as_uint(f);
#else
        uint32_t u;
        memcpy(&u, &f, 4);
        return u;
#endif
}

DCU_HD float dcu_bits_f32(uint32_t u) {
#if defined(__CUDA_ARCH__)
        return __uint_as_float(u);
#else
        float f;
        memcpy(&f, &u, 4);
        return f;
#endif
}

DCU_HD float dcu_nan(void) { return dcu_bits_f32(0x7fc00000u); }
DCU_HD int dcu_isnan(float f) { return (dcu_f32_bits(f) & 0x7fffffffu) > 0x7f800000u; }

/* bf16 -> f32 is exact. */
DCU_HD float dcu_bf16_to_f32(uint16_t h) { return dcu_bits_f32((uint32_t)h << 16); }

/* f32 -> bf16, round to nearest even; NaN stays NaN (quiet). */
DCU_HD uint16_t dcu_f32_to_bf16(float f) {
        uint32_t u = dcu_f32_bits(f);
        if ((u & 0x7fffffffu) > 0x7f800000u)
                return (uint16_t)((u >> 16) | 0x40);
        u += 0x7fffu + ((u >> 16) & 1u);
        return (uint16_t)(u >> 16);
}

/* The value f takes once stored as bf16. */
DCU_HD float dcu_round_bf16(float f) { return dcu_bf16_to_f32(dcu_f32_to_bf16(f)); }
DCU_HD float dcu_rnd(float f, int faithful) { return faithful ? dcu_round_bf16(f) : f; }

/* e4m3fn -> f32, exact. Normals: 2^(e-7) * (1 + m/8); subnormals: m * 2^-9; 0x7f/0xff NaN. */
DCU_HD float dcu_e4m3_to_f32(uint8_t b) {
        uint32_t sign = (uint32_t)(b & 0x80u) << 24;
        uint32_t em = b & 0x7fu;
        float normal = dcu_bits_f32(sign | ((em << 20) + (120u << 23)));
        float sub = (float)(em & 7u) * 0x1p-9f;
        float v = (em >> 3) ? normal : (sign ? -sub : sub);
        return em == 0x7fu ? dcu_nan() : v;
}

/* f32 -> e4m3fn, round to nearest even; |f| >= 448 saturates, NaN -> 0x7f. */
DCU_HD uint8_t dcu_f32_to_e4m3(float f) {
        uint32_t u = dcu_f32_bits(f);
        uint8_t sign = (uint8_t)((u >> 24) & 0x80u);
        u &= 0x7fffffffu;
        if (u > 0x7f800000u)
                return 0x7f;
        if (u >= 0x43e00000u) /* 448.0f */
                return sign | 0x7e;
        if (u < 0x3c800000u) { /* below 2^-6: e4m3 subnormal, step 2^-9 */
                float a = dcu_bits_f32(u) * 512.0f;
                float r = (a + 0x1p23f) - 0x1p23f; /* round half even, a < 2^23 */
                return sign | (uint8_t)r;
        }
        uint32_t r = u + 0x7ffffu + ((u >> 20) & 1u);
        uint32_t e = (r >> 23) - 120u;
        uint32_t code = (e << 3) | ((r >> 20) & 7u);
        return sign | (uint8_t)(code > 0x7eu ? 0x7eu : code);
}

/* act_quant's ue8m0 scale of a block with absolute maximum amax (NaN amax -> NaN):
 *   scale = 2^ceil(log2(max(amax, 1e-4) / 448)) */
DCU_HD float dcu_act_scale(float amax) {
        if (dcu_isnan(amax))
                return dcu_nan();
        if (amax < 1e-4f)
                amax = 1e-4f;
        float r = amax * (1.0f / DCU_FP8_MAX);
        uint32_t u = dcu_f32_bits(r);
        int e = (int)((u >> 23) & 0xff) - 127 + ((u & 0x7fffffu) != 0);
        if (e > 127)
                e = 127;
        return dcu_bits_f32((uint32_t)(e + 127) << 23);
}

/* e4m3(clamp(x / scale, +-448)) with inv_scale = 1 / scale (exact: scale is a power of two). */
DCU_HD uint8_t dcu_quant_e4m3(float x, float inv_scale) {
        float y = x * inv_scale;
        y = y > DCU_FP8_MAX ? DCU_FP8_MAX : (y < -DCU_FP8_MAX ? -DCU_FP8_MAX : y);
        return dcu_f32_to_e4m3(y);
}

/* Counter-based random numbers of daemon/rng.h (splitmix64), for on-device sampling. */
DCU_HD uint64_t dcu_mix64(uint64_t z) {
        z += 0x9e3779b97f4a7c15ull;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
}

/* uniform in [0, 1) */
DCU_HD double dcu_rand_u01(uint64_t key, uint64_t i) { return (double)(dcu_mix64(key ^ dcu_mix64(i)) >> 11) * 0x1p-53; }
