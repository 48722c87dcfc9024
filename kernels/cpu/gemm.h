/* The CPU linear layer's inner kernels, one per instruction set, and the choice among them.
 *
 * Every kernel computes the same numbers, bit for bit: each output is the fixed sequence of
 * fp32 operations below (the "canonical order"), which AVX-512 BF16's vdpbf16ps performs
 * natively and the other kernels spell out. For output row n and token t:
 *
 *   tot[j] = 0                                   j = 0..15, one fp32 lane each
 *   for each 128-wide block kb of K (a partial last block is padded with zeros):
 *       acc[j] = 0
 *       for s = 0..3:
 *           acc[j] = acc[j] + x[k(kb,s,j,1)] * w[n, k(kb,s,j,1)]     (the odd element first,
 *           acc[j] = acc[j] + x[k(kb,s,j,0)] * w[n, k(kb,s,j,0)]      as vdpbf16ps does)
 *       tot[j] = tot[j] + acc[j] * (a_scale[t,kb] * w_scale[n/128,kb])
 *   out[t,n] = r2[0] + r2[1], the halving tree   r8[i] = tot[i] + tot[i+8]   (i < 8)
 *                                                r4[i] = r8[i] + r8[i+4]     (i < 4)
 *                                                r2[i] = r4[i] + r4[i+2]     (i < 2)
 *              rounded to bf16 when asked
 *
 * Products and sums are rounded separately (never fused) unless the result is the same: a
 * product of two values exact in bf16 (e4m3 codes, bf16 weights times bf16 activations) is
 * exact in fp32, and a power-of-two scale multiplies exactly. Which k goes to which lane:
 *   FP8 weights:       k(kb,s,j,e) = 128 kb + 64 (s/2) + 16 (j/4) + 8 (s%2) + 2 (j%4) + e
 *                      (the order AVX-512 byte unpacking produces, see gemm_avx512bf16.c)
 *   BF16/F32 weights:  k(kb,s,j,e) = 128 kb + 32 s + 2 j + e
 * The order depends on nothing but K: not on the batch, the thread count or the kernel, so
 * a row's result is the same alone or in any batch on any of these paths. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kernels/dtype.h"

struct dsv_gemm {
        /* weights: N rows of K values (row stride in bytes); F8 block scales or NULL */
        enum dsv_dtype wtype; /* DSV_F8_E4M3, DSV_BF16 or DSV_F32 */
        const uint8_t *w;
        size_t w_stride;
        const float *ws;
        size_t ws_stride; /* floats between block rows of ws */
        int64_t N, K, Kp, nbk; /* Kp = 128 nbk >= K */
        /* activations of T tokens, Kp values each, in lane order (zeros past K):
         *   xf[t][128 kb + 32 s + 16 e + j] = x[t][k(kb,s,j,e)]           (F32, all kernels)
         *   xb[t][128 kb + 32 s + 2 j + e]  = bf16(x[t][k(kb,s,j,e)])     (when exact in bf16) */
        int64_t T;
        const float *xf;
        const uint16_t *xb; /* NULL unless every x value is a bf16 and the weights are F8/BF16 */
        const float *xs;    /* [T][nbk] activation block scales, NULL: 1 */
        bool xs_pow2;       /* every activation scale is a tame power of two (dsv_scale_pow2): with
                             * the weight scales of its rows also tame, a kernel may fuse the block
                             * scaling (the product multiplies exactly; the kernel checks its rows) */
        float *out;
        size_t out_stride; /* floats between output rows (tokens) */
        bool round_out;
};

/* A power of two whose products with the other scales and the block sums stay exact. */
static inline bool dsv_scale_pow2(float s) {
        uint32_t u;
        memcpy(&u, &s, sizeof(u));
        u &= 0x7fffffffu;
        int e = (int)(u >> 23) - 127;
        return (u & 0x7fffffu) == 0 && e >= -60 && e <= 60;
}

/* Rows [n0, n1) for tokens [t0, t1). n0 is a multiple of 4. Scratch from dsv_cpu_scratch
 * slot 2. 0 or -ENOMEM. */
typedef int (*dsv_gemm_fn)(const struct dsv_gemm *g, int64_t n0, int64_t n1, int64_t t0, int64_t t1);

enum dsv_cpu_isa {
        DSV_CPU_ISA_PORTABLE,
        DSV_CPU_ISA_AVX2,
        DSV_CPU_ISA_AVX512,
        DSV_CPU_ISA_AVX512BF16,
        DSV_CPU_ISA_MAX,
};

int dsv_gemm_portable(const struct dsv_gemm *g, int64_t n0, int64_t n1, int64_t t0, int64_t t1);
int dsv_gemm_avx2(const struct dsv_gemm *g, int64_t n0, int64_t n1, int64_t t0, int64_t t1);
int dsv_gemm_avx512(const struct dsv_gemm *g, int64_t n0, int64_t n1, int64_t t0, int64_t t1);
/* Only for g->xb != NULL (else the avx512 kernel runs). */
int dsv_gemm_avx512bf16(const struct dsv_gemm *g, int64_t n0, int64_t n1, int64_t t0, int64_t t1);

/* Kp FP8 codes (Kp a multiple of 128; codes past K zero) as bf16 words in the FP8 lane order
 * above, xb[128 kb + 32 s + 2 j + e] = bf16(code[k(kb,s,j,e)]): the activations of the
 * avx512bf16 kernel, by the same table lookup as its weights. 0, or -ENOTSUP where that
 * kernel is not built (not x86-64). */
int dsv_gemm_avx512bf16_codes(const uint8_t *q, int64_t Kp, uint16_t *xb);

const char *dsv_cpu_isa_name(enum dsv_cpu_isa isa);
/* -1 for an unknown name. */
int dsv_cpu_isa_from_name(const char *s);
/* Whether this CPU (and OS) runs the kernel of that instruction set. */
bool dsv_cpu_isa_supported(enum dsv_cpu_isa isa);
/* The kernels in use: the best this CPU runs, or DSV32_CPU_KERNELS when set to a supported
 * name (chosen once, at the first use). */
enum dsv_cpu_isa dsv_cpu_isa_current(void);
/* Switches the kernels (tests): -ENOTSUP when this CPU cannot run them. */
int dsv_cpu_isa_select(enum dsv_cpu_isa isa);
/* One line on the choice, e.g. "avx512bf16 kernels (best this CPU runs)" or the reason a
 * DSV32_CPU_KERNELS value was not followed. */
const char *dsv_cpu_isa_describe(void);
/* The kernel for these operands on the current instruction set. */
dsv_gemm_fn dsv_cpu_gemm_kernel(const struct dsv_gemm *g);
