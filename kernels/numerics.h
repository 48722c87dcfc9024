/* Number formats of DeepSeek-V3.2 checkpoints and of the reference numerics:
 * bf16, FP8 e4m3fn (OCP "fn": no infinities, 0x7f/0xff are NaN, max 448) and the ue8m0
 * (power-of-two) block scales of act_quant. Everything here is plain C, inline, and
 * written so that compilers vectorise loops over it. */
#pragma once

#include <math.h>
#include <stdint.h>
#include <string.h>

/* The same functions serve host C and CUDA device code (kernels/cuda), so a value rounds the
 * same way on the GPU as in the CPU reference. */
#if defined(__CUDACC__)
#define DSV_HD static __host__ __device__ __forceinline__
#else
#define DSV_HD static inline
#endif

/* Counter-based random numbers (splitmix64; daemon/rng.h builds on these): value i of the
 * stream `key` is a pure function of (key, i), the same on the host and on the device (the
 * GPU sampler draws exactly what the CPU one does). */
DSV_HD uint64_t dsv_mix64(uint64_t z) {
        z += 0x9e3779b97f4a7c15ull;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
}

/* uniform in [0, 1) */
DSV_HD double dsv_rand_u01(uint64_t key, uint64_t i) { return (double)(dsv_mix64(key ^ dsv_mix64(i)) >> 11) * 0x1p-53; }

#define DSV_FP8_MAX 448.0f
#define DSV_QBLOCK 128 /* quantization block: 128 contiguous values / 128x128 weights */

DSV_HD uint32_t dsv_f32_bits(float f) {
#if defined(__CUDA_ARCH__)
        return __float_as_uint(f);
#else
        uint32_t u;
        memcpy(&u, &f, 4);
        return u;
#endif
}
DSV_HD float dsv_bits_f32(uint32_t u) {
#if defined(__CUDA_ARCH__)
        return __uint_as_float(u);
#else
        float f;
        memcpy(&f, &u, 4);
        return f;
#endif
}
DSV_HD float dsv_nan(void) { return dsv_bits_f32(0x7fc00000u); }
DSV_HD int dsv_isnan(float f) { return (dsv_f32_bits(f) & 0x7fffffffu) > 0x7f800000u; }

/* bf16 -> f32 is exact. */
DSV_HD float dsv_bf16_to_f32(uint16_t h) { return dsv_bits_f32((uint32_t)h << 16); }

/* f32 -> bf16, round to nearest even; NaN stays NaN (quiet). */
DSV_HD uint16_t dsv_f32_to_bf16(float f) {
        uint32_t u = dsv_f32_bits(f);
        if ((u & 0x7fffffffu) > 0x7f800000u)
                return (uint16_t)((u >> 16) | 0x40);
        u += 0x7fffu + ((u >> 16) & 1u);
        return (uint16_t)(u >> 16);
}

/* The value f takes once stored as bf16 (the reference's .to(torch.bfloat16)). */
DSV_HD float dsv_round_bf16(float f) { return dsv_bf16_to_f32(dsv_f32_to_bf16(f)); }

/* e4m3fn -> f32, exact. Normals: 2^(e-7) * (1 + m/8); subnormals: m * 2^-9. */
DSV_HD float dsv_e4m3_to_f32(uint8_t b) {
        uint32_t sign = (uint32_t)(b & 0x80u) << 24;
        uint32_t em = b & 0x7fu;
        float normal = dsv_bits_f32(sign | ((em << 20) + (120u << 23)));
        float sub = (float)(em & 7u) * 0x1p-9f;
        float v = (em >> 3) ? normal : (sign ? -sub : sub);
        return em == 0x7fu ? dsv_nan() : v;
}

/* f32 -> e4m3fn, round to nearest even. Magnitudes >= 448 saturate to 448 (callers clamp
 * first, as the reference does); NaN maps to 0x7f. */
DSV_HD uint8_t dsv_f32_to_e4m3(float f) {
        uint32_t u = dsv_f32_bits(f);
        uint8_t sign = (uint8_t)((u >> 24) & 0x80u);
        u &= 0x7fffffffu;
        if (u > 0x7f800000u)
                return 0x7f;
        if (u >= 0x43e00000u) /* 448.0f */
                return sign | 0x7e;
        if (u < 0x3c800000u) { /* below 2^-6: e4m3 subnormal, step 2^-9 */
                float a = dsv_bits_f32(u) * 512.0f;
                float r = (a + 0x1p23f) - 0x1p23f; /* round half even, a < 2^23 */
                return sign | (uint8_t)r;
        }
        uint32_t r = u + 0x7ffffu + ((u >> 20) & 1u);
        uint32_t e = (r >> 23) - 120u;
        uint32_t code = (e << 3) | ((r >> 20) & 7u);
        return sign | (uint8_t)(code > 0x7eu ? 0x7eu : code);
}

/* act_quant's scale for one block with absolute maximum amax:
 *   scale = 2^ceil(log2(max(amax, 1e-4) * (1/448)))        (ue8m0, "round_scale")
 * computed exactly as the reference: the product in fp32, then the ceiling of its log2 read
 * off the exponent and mantissa bits. */
DSV_HD float dsv_act_scale(float amax) {
        if (dsv_isnan(amax))
                return dsv_nan();
        if (amax < 1e-4f)
                amax = 1e-4f;
        float r = amax * (1.0f / DSV_FP8_MAX);
        uint32_t u = dsv_f32_bits(r);
        int e = (int)((u >> 23) & 0xff) - 127 + ((u & 0x7fffffu) != 0);
        if (e > 127)
                e = 127;
        return dsv_bits_f32((uint32_t)(e + 127) << 23);
}

/* Quantize one value with its block scale: e4m3(clamp(x / scale, +-448)). */
DSV_HD uint8_t dsv_quant_e4m3(float x, float inv_scale) {
        float y = x * inv_scale; /* scale is a power of two: exact */
        y = y > DSV_FP8_MAX ? DSV_FP8_MAX : (y < -DSV_FP8_MAX ? -DSV_FP8_MAX : y);
        return dsv_f32_to_e4m3(y);
}
