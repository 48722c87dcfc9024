/* The linear kernel (gemm_generic.h) compiled for AVX2 + FMA (x86-64-v3): chosen at run time
 * on CPUs that have it (gemm_isa.c); bit-identical to the portable kernel. */
#include "config.h"

#include <errno.h>

#include "kernels/cpu/gemm.h"

#if defined(__x86_64__)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC target("avx2,fma")
#endif
#define GEMM_NAME dsv_gemm_avx2
#include "kernels/cpu/gemm_generic.h"
#if defined(__clang__)
#pragma clang attribute pop
#endif
#else
int dsv_gemm_avx2(const struct dsv_gemm *g, int64_t n0, int64_t n1, int64_t t0, int64_t t1) { return -ENOTSUP; }
#endif
