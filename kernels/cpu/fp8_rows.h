/* Rows of an FP8 (e4m3) weight with 128x128 block scales, as the floats its dequantized table
 * would hold, for kernels that read such a weight in place of a second, dequantized copy (the
 * absorbed MLA decode's kv_b). Every value is one fp32 product and at most one rounding:
 *
 *   out[j] = rnd(e4m3(code[j]) * s[j / 128])     rnd: to the nearest bf16 value (round_bf16)
 *                                                     or none: the dequant op's F32/BF16 forms
 *
 * The products of one block take at most 256 values, so a block's scale becomes a table of
 * them (dsv_fp8_tab_make, computed by the same expression as the dequant op) and a row is
 * table lookups: scalar (portable), gathers (avx2, avx512), or in registers (avx512bf16:
 * AVX-512 VBMI's vpermt2b, a 128-entry byte table per byte of the fp32 value, the sign bit
 * applied after). Every path gives the portable path's bits, except that a NaN code (0x7f,
 * 0xff) may come out as a NaN of the other sign on avx512bf16. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "kernels/cpu/gemm.h"

/* One block's table. f: the 256 codes' values (portable, avx2, avx512; not filled on
 * avx512bf16); b: byte k of the value of each magnitude 0..127 (avx512bf16 only). */
struct dsv_fp8_tab {
        float f[256];
        uint8_t b[4][128];
        bool bf16; /* b[0] and b[1] are zero (values rounded to bf16) */
} __attribute__((aligned(64)));

/* The table of a block with scale s on instruction set isa. */
void dsv_fp8_tab_make(struct dsv_fp8_tab *t, float s, bool round_bf16, enum dsv_cpu_isa isa);

/* out[j] = tabs[j / 128] at code[j], j < n (code and out need no alignment). */
void dsv_fp8_row_f32(const uint8_t *code, int64_t n, const struct dsv_fp8_tab *tabs, float *out, enum dsv_cpu_isa isa);
/* y[j] += a * (the same value), the product and the sum rounded separately, for j < n: in
 * registers on avx512bf16, else through buf (n floats). */
void dsv_fp8_row_axpy(const uint8_t *code, int64_t n, const struct dsv_fp8_tab *tabs, float a, float *y, float *buf,
                      enum dsv_cpu_isa isa);
