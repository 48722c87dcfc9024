/* The number formats of kernels/numerics.h (bf16, FP8 e4m3fn, ue8m0 act_quant scales) under
 * the dcu_ names the CUDA code uses: numerics.h is host and device code itself, so a value
 * rounds the same way on the GPU as in the CPU reference (tests/gpu/test-cuda-plan.c checks it
 * on every e4m3 code, every bf16 pattern and millions of random floats), plus the counter-based
 * random numbers of daemon/rng.h for on-device sampling.
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

#include "kernels/numerics.h"

/* kernels/numerics.h is host/device code itself: the dcu_ names are the same functions */
#define DCU_FP8_MAX DSV_FP8_MAX
#define DCU_QBLOCK DSV_QBLOCK
#define dcu_f32_bits dsv_f32_bits
#define dcu_bits_f32 dsv_bits_f32
#define dcu_nan dsv_nan
#define dcu_isnan dsv_isnan
#define dcu_bf16_to_f32 dsv_bf16_to_f32
#define dcu_f32_to_bf16 dsv_f32_to_bf16
#define dcu_round_bf16 dsv_round_bf16
#define dcu_e4m3_to_f32 dsv_e4m3_to_f32
#define dcu_f32_to_e4m3 dsv_f32_to_e4m3
#define dcu_act_scale dsv_act_scale
#define dcu_quant_e4m3 dsv_quant_e4m3
DCU_HD float dcu_rnd(float f, int faithful) { return faithful ? dsv_round_bf16(f) : f; }

/* Counter-based random numbers (kernels/numerics.h), for on-device sampling. */
#define dcu_mix64 dsv_mix64
#define dcu_rand_u01 dsv_rand_u01
