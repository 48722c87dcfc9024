/* FP8 weight rows as floats by per-block table (fp8_rows.h): the tables and the lookup, one
 * lookup per instruction set, chosen by the caller (dsv_cpu_isa_current()). */
#include "config.h"

#include <pthread.h>
#include <string.h>

#include "kernels/cpu/cpu.h"
#include "kernels/cpu/fp8_rows.h"

static float e4m3_values[256] __attribute__((aligned(64)));
static pthread_once_t values_once = PTHREAD_ONCE_INIT;

static void values_init(void) {
        for (int c = 0; c < 256; c++)
                e4m3_values[c] = dsv_e4m3_to_f32((uint8_t)c);
}

/* dsv_round_bf16 spelled without a call, so that the loop below vectorizes: the same bits
 * (NaN: its top half with the quiet bit set, as dsv_f32_to_bf16 does). */
static inline float round_bf16_inl(float x) {
        uint32_t u;
        memcpy(&u, &x, sizeof(u));
        uint32_t r = (u & 0x7fffffffu) > 0x7f800000u ? (u & 0xffff0000u) | 0x00400000u
                                                     : (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
        memcpy(&x, &r, sizeof(x));
        return x;
}

DSV_HOT static void tab_values(float *f, float s, bool round_bf16) {
        if (round_bf16) {
                OMP(simd)
                for (int c = 0; c < 256; c++)
                        f[c] = round_bf16_inl(e4m3_values[c] * s);
        } else {
                OMP(simd)
                for (int c = 0; c < 256; c++)
                        f[c] = e4m3_values[c] * s;
        }
}

#if defined(__x86_64__) && defined(__GNUC__)
static void tab_bytes_avx512(struct dsv_fp8_tab *t, float s, bool round_bf16);
#endif

void dsv_fp8_tab_make(struct dsv_fp8_tab *t, float s, bool round_bf16, enum dsv_cpu_isa isa) {
        pthread_once(&values_once, values_init);
#if defined(__x86_64__) && defined(__GNUC__)
        if (isa == DSV_CPU_ISA_AVX512BF16) {
                tab_bytes_avx512(t, s, round_bf16);
                return;
        }
#endif
        tab_values(t->f, s, round_bf16);
        t->bf16 = round_bf16;
}

DSV_HOT static void axpy_plain(float *y, float a, const float *x, int64_t n) {
        OMP(simd)
        for (int64_t i = 0; i < n; i++)
                y[i] += a * x[i];
}

static void row_portable(const uint8_t *code, int64_t n, const struct dsv_fp8_tab *tabs, float *out) {
        for (int64_t j = 0; j < n; j++)
                out[j] = tabs[j >> 7].f[code[j]];
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

__attribute__((target("avx2,fma"))) static void row_avx2(const uint8_t *code, int64_t n, const struct dsv_fp8_tab *tabs,
                                                         float *out) {
        int64_t j = 0;
        for (; j + 8 <= n; j += 8) {
                __m256i idx = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(code + j)));
                _mm256_storeu_ps(out + j, _mm256_i32gather_ps(tabs[j >> 7].f, idx, 4));
        }
        for (; j < n; j++)
                out[j] = tabs[j >> 7].f[code[j]];
}

__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl"))) static void
row_avx512(const uint8_t *code, int64_t n, const struct dsv_fp8_tab *tabs, float *out) {
        int64_t j = 0;
        for (; j + 16 <= n; j += 16) {
                __m512i idx = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(code + j)));
                _mm512_storeu_ps(out + j, _mm512_i32gather_ps(idx, tabs[j >> 7].f, 4));
        }
        for (; j < n; j++)
                out[j] = tabs[j >> 7].f[code[j]];
}

/* The byte planes of the magnitudes' values, 16 at a time: the same product and rounding
 * as tab_values (round to nearest even on the top half; NaN: top half, quiet bit set). */
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl"))) static void tab_bytes_avx512(struct dsv_fp8_tab *t,
                                                                                           float s, bool round_bf16) {
        const __m512 vs = _mm512_set1_ps(s);
        const __m512i hi = _mm512_set1_epi32((int)0xffff0000u), bias = _mm512_set1_epi32(0x7fff),
                      one = _mm512_set1_epi32(1), absm = _mm512_set1_epi32(0x7fffffff),
                      inf = _mm512_set1_epi32(0x7f800000), quiet = _mm512_set1_epi32(0x00400000);
        for (int m = 0; m < 128; m += 16) {
                __m512i u = _mm512_castps_si512(_mm512_mul_ps(_mm512_load_ps(e4m3_values + m), vs));
                if (round_bf16) {
                        __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, absm), inf);
                        __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), one);
                        __m512i r = _mm512_and_si512(_mm512_add_epi32(_mm512_add_epi32(u, bias), lsb), hi);
                        u = _mm512_mask_or_epi32(r, nan, _mm512_and_si512(u, hi), quiet);
                }
                for (int k = 0; k < 4; k++)
                        _mm_store_si128((__m128i *)(t->b[k] + m), _mm512_cvtepi32_epi8(_mm512_srli_epi32(u, 8 * k)));
        }
        t->bf16 = round_bf16;
}

/* 64 codes at a time (a 64-column chunk lies in one 128-column block):
 *   codes' 4-byte groups transposed across the 128-bit lanes (vpermd), so that the unpacks
 *   below leave the values in column order: group 4L + q of the vector holds codes
 *   16 q + 4 L .. + 3 (L the 128-bit lane, q = 0..3);
 *   p_k = b[k][code & 0x7f]                    vpermt2b (bit 6 picks the table's half)
 *   p_3 ^= code & 0x80                         the sign bit: -x is x with its sign flipped
 *   bytes p_0..p_3 of each code into its fp32 word: unpack bytes (p0,p1), (p2,p3) into
 *   16-bit halves, then halves into words; lane L of unpack output q holds codes
 *   16 q + 4 L .. + 3 in order, i.e. output q is columns 16 q .. 16 q + 15.
 * bf16-valued tables (b[0], b[1] all zero) skip p_0 and p_1. */
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vbmi"))) static inline void
codes64_f32(const uint8_t *code, int64_t left, const struct dsv_fp8_tab *t, bool bf16, __m512 v[4]) {
        const __m512i perm = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
        const __m512i sign = _mm512_set1_epi8((char)0x80);
        __m512i c = left >= 64 ? _mm512_loadu_si512(code) : _mm512_maskz_loadu_epi8(((__mmask64)1 << left) - 1, code);
        c = _mm512_permutexvar_epi32(perm, c);
        __m512i p2 = _mm512_permutex2var_epi8(_mm512_load_si512(t->b[2]), c, _mm512_load_si512(t->b[2] + 64));
        __m512i p3 = _mm512_permutex2var_epi8(_mm512_load_si512(t->b[3]), c, _mm512_load_si512(t->b[3] + 64));
        p3 = _mm512_ternarylogic_epi32(p3, c, sign, 0x78); /* p3 ^ (c & 0x80) */
        __m512i lo23 = _mm512_unpacklo_epi8(p2, p3), hi23 = _mm512_unpackhi_epi8(p2, p3), lo01, hi01;
        if (bf16)
                lo01 = hi01 = _mm512_setzero_si512();
        else {
                __m512i p0 = _mm512_permutex2var_epi8(_mm512_load_si512(t->b[0]), c, _mm512_load_si512(t->b[0] + 64));
                __m512i p1 = _mm512_permutex2var_epi8(_mm512_load_si512(t->b[1]), c, _mm512_load_si512(t->b[1] + 64));
                lo01 = _mm512_unpacklo_epi8(p0, p1);
                hi01 = _mm512_unpackhi_epi8(p0, p1);
        }
        v[0] = _mm512_castsi512_ps(_mm512_unpacklo_epi16(lo01, lo23));
        v[1] = _mm512_castsi512_ps(_mm512_unpackhi_epi16(lo01, lo23));
        v[2] = _mm512_castsi512_ps(_mm512_unpacklo_epi16(hi01, hi23));
        v[3] = _mm512_castsi512_ps(_mm512_unpackhi_epi16(hi01, hi23));
}

static inline __mmask16 tail16(int64_t l) {
        return l >= 16 ? (__mmask16)0xffff : l > 0 ? (__mmask16)((1u << l) - 1) : 0;
}

__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vbmi"))) static void
row_avx512vbmi(const uint8_t *code, int64_t n, const struct dsv_fp8_tab *tabs, float *out) {
        for (int64_t j = 0; j < n; j += 64) {
                const struct dsv_fp8_tab *t = &tabs[j >> 7];
                const int64_t left = n - j;
                __m512 v[4];
                codes64_f32(code + j, left, t, t->bf16, v);
                if (left >= 64)
                        for (int q = 0; q < 4; q++)
                                _mm512_storeu_ps(out + j + 16 * q, v[q]);
                else
                        for (int q = 0; q < 4; q++)
                                _mm512_mask_storeu_ps(out + j + 16 * q, tail16(left - 16 * q), v[q]);
        }
}

/* y += a * row, the product and the sum rounded separately (as axpy with -ffp-contract=off) */
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vbmi"))) static void
axpy_avx512vbmi(const uint8_t *code, int64_t n, const struct dsv_fp8_tab *tabs, float a, float *y) {
        const __m512 va = _mm512_set1_ps(a);
        for (int64_t j = 0; j < n; j += 64) {
                const struct dsv_fp8_tab *t = &tabs[j >> 7];
                const int64_t left = n - j;
                __m512 v[4];
                codes64_f32(code + j, left, t, t->bf16, v);
                if (left >= 64) {
                        for (int q = 0; q < 4; q++)
                                _mm512_storeu_ps(y + j + 16 * q, _mm512_add_ps(_mm512_loadu_ps(y + j + 16 * q),
                                                                               _mm512_mul_ps(va, v[q])));
                        continue;
                }
                for (int q = 0; q < 4; q++) {
                        const __mmask16 m = tail16(left - 16 * q);
                        __m512 yq = _mm512_maskz_loadu_ps(m, y + j + 16 * q);
                        _mm512_mask_storeu_ps(y + j + 16 * q, m, _mm512_add_ps(yq, _mm512_mul_ps(va, v[q])));
                }
        }
}
#endif

void dsv_fp8_row_axpy(const uint8_t *code, int64_t n, const struct dsv_fp8_tab *tabs, float a, float *y, float *buf,
                      enum dsv_cpu_isa isa) {
#if defined(__x86_64__) && defined(__GNUC__)
        if (isa == DSV_CPU_ISA_AVX512BF16) {
                axpy_avx512vbmi(code, n, tabs, a, y);
                return;
        }
#endif
        dsv_fp8_row_f32(code, n, tabs, buf, isa);
        axpy_plain(y, a, buf, n);
}

void dsv_fp8_row_f32(const uint8_t *code, int64_t n, const struct dsv_fp8_tab *tabs, float *out, enum dsv_cpu_isa isa) {
#if defined(__x86_64__) && defined(__GNUC__)
        switch (isa) {
        case DSV_CPU_ISA_AVX512BF16:
                row_avx512vbmi(code, n, tabs, out);
                return;
        case DSV_CPU_ISA_AVX512:
                row_avx512(code, n, tabs, out);
                return;
        case DSV_CPU_ISA_AVX2:
                row_avx2(code, n, tabs, out);
                return;
        default:
                break;
        }
#endif
        row_portable(code, n, tabs, out);
}
