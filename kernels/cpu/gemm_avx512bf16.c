/* The linear kernel for AVX-512 BF16 (+ VBMI): vdpbf16ps performs the canonical order of
 * gemm.h natively. Every e4m3 value and every bf16 is exact in bf16 and every product of two
 * is exact in fp32, so the dot products are the reference's, bit for bit.
 *
 * FP8 weights become bf16 by table lookup, 64 codes at a time:
 *   hi = T_hi[code & 0x7f] | (code & 0x80)     vpermt2b (128-entry byte table) + vpternlogd
 *   lo = T_lo[code & 0x7f]                     vpermt2b
 *   w0 = unpacklo_epi8(lo, hi), w1 = unpackhi_epi8(lo, hi)     (bf16 words)
 * unpack interleaves within 128-bit lanes, which is where the FP8 lane order of gemm.h comes
 * from: word 2j+e of w_h holds code 16 (j/4) + 8 h + 2 (j%4) + e. BF16 weights are used as
 * they are. A group of 4 weight rows is converted once into scratch (the next group's rows
 * prefetched meanwhile), then every token of the range runs over it in tiles of 4 rows x 6
 * tokens (wide_6, totals in L1) and the last 1-5 tokens in tiles of 4 rows x 3, 2 or 1 held
 * in registers; a single token
 * (decode) takes FP8 rows straight from memory into the multiplies instead (rows_token).
 * NaN codes give NaN with the code's sign (the portable kernel's NaN is positive): any NaN. */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "kernels/cpu/cpu.h"
#include "kernels/cpu/gemm.h"

#if defined(__x86_64__)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vbmi,avx512bf16,avx2,fma"))), \
                             apply_to = function)
#else
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx512vbmi,avx512bf16,avx2,fma")
#endif
#include <immintrin.h>

#define BR 4 /* weight rows converted and multiplied together */

static uint8_t tab_lo[128] __attribute__((aligned(64))), tab_hi[128] __attribute__((aligned(64)));
static pthread_once_t tab_once = PTHREAD_ONCE_INIT;

/* bf16 bits of every e4m3 magnitude (exact: e4m3 has 3 mantissa bits) */
static void tab_init(void) {
        for (int em = 0; em < 128; em++) {
                uint16_t b = dsv_f32_to_bf16(dsv_e4m3_to_f32((uint8_t)em));
                tab_lo[em] = (uint8_t)(b & 0xff);
                tab_hi[em] = (uint8_t)(b >> 8);
        }
}

/* 64 e4m3 codes as 64 bf16 words in lane order: magnitude by table, then the sign bit. */
static inline void codes64(__m512i c, uint16_t *dst, const __m512i tl[2], const __m512i th[2]) {
        const __m512i sign = _mm512_set1_epi8((char)0x80);
        __m512i lo = _mm512_permutex2var_epi8(tl[0], c, tl[1]);
        __m512i hi = _mm512_permutex2var_epi8(th[0], c, th[1]);
        hi = _mm512_ternarylogic_epi32(hi, c, sign, 0xF8); /* hi | (c & 0x80) */
        _mm512_storeu_si512(dst, _mm512_unpacklo_epi8(lo, hi));
        _mm512_storeu_si512(dst + 32, _mm512_unpackhi_epi8(lo, hi));
}

/* Row n's K weights as bf16 words in lane order, zeros up to Kp. */
static void convert_row(const struct dsv_gemm *g, const uint8_t *row, uint16_t *dst, const __m512i tl[2], const __m512i th[2]) {
        for (int64_t k = 0; k < g->Kp; k += 64) {
                const int64_t left = g->K - k;
                if (g->wtype == DSV_F8_E4M3) {
                        __m512i c = left >= 64 ? _mm512_loadu_si512(row + k)
                                               : _mm512_maskz_loadu_epi8(left > 0 ? (((__mmask64)1 << left) - 1) : 0, row + k);
                        codes64(c, dst + k, tl, th);
                } else { /* BF16: already in lane order */
                        for (int h = 0; h < 2; h++) {
                                int64_t l = left - 32 * h;
                                __mmask32 m = l >= 32 ? ~(__mmask32)0 : l > 0 ? (((__mmask32)1 << l) - 1) : 0;
                                _mm512_storeu_si512(dst + k + 32 * h,
                                                    _mm512_maskz_loadu_epi16(m, (const uint16_t *)row + k + 32 * h));
                        }
                }
        }
}

int dsv_gemm_avx512bf16_codes(const uint8_t *q, int64_t Kp, uint16_t *xb) {
        pthread_once(&tab_once, tab_init);
        const __m512i tl[2] = {_mm512_load_si512(tab_lo), _mm512_load_si512(tab_lo + 64)};
        const __m512i th[2] = {_mm512_load_si512(tab_hi), _mm512_load_si512(tab_hi + 64)};
        for (int64_t k = 0; k < Kp; k += 64)
                codes64(_mm512_loadu_si512(q + k), xb + k, tl, th);
        return 0;
}

/* The halving tree of gemm.h: lanes i + i+8, then + i+4, then + i+2, then + i+1. */
static inline float hsum_tree(__m512 v) {
        __m256 r8 = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
        __m128 r4 = _mm_add_ps(_mm256_castps256_ps128(r8), _mm256_extractf128_ps(r8, 1));
        __m128 r2 = _mm_add_ps(r4, _mm_movehl_ps(r4, r4));
        return _mm_cvtss_f32(_mm_add_ss(r2, _mm_shuffle_ps(r2, r2, 1)));
}

/* tile_R_TT(g, wb, ws, wsc, n, nr, t, fuse): rows [n, n+R) (bf16 in lane order, ws words apart: wb; block scales
 * wsc[r * nbk + kb]) for tokens [t, t+TT), accumulators in registers; fuse: every scale product is
 * exact, so the block scaling may be one fma (the same bits as its multiply and add). */
#define TILE_R 4
#define TILE_TT 3
#include "kernels/cpu/gemm_avx512bf16_tile.h"
#define TILE_TT 2
#include "kernels/cpu/gemm_avx512bf16_tile.h"
#define TILE_TT 1
#include "kernels/cpu/gemm_avx512bf16_tile.h"
#undef TILE_R

/* wide_TT(g, wb, ws, wsc, n, nr, t, fuse): the same for TT tokens of a long range (prefill),
 * totals in L1 and one block scale per token (gemm_avx512bf16_wide.h) */
#define WIDE_TT 6
#include "kernels/cpu/gemm_avx512bf16_wide.h"

/* One token (decode) times FP8 weight rows [n, n+nr): the codes become bf16 words in
 * registers, 64 at a time, and go straight into vdpbf16ps instead of through scratch. The
 * same operations in the same order as tile_4_1 over convert_row's output (per block kb,
 * s = 2h and 2h+1 come from unpacklo/unpackhi of half h; zeros past K), so the same bits.
 * At one token the step is memory-bound: each row is read front to back, one stream at a
 * time as convert_row reads it (4 rows read side by side, 64 bytes each in turn, streamed
 * ~35% slower from memory), with up to 4 blocks' sums in flight so that vdpbf16ps's latency
 * does not serialise the row. */
static void rows_token(const struct dsv_gemm *g, int64_t n, int nr, int64_t t, const __m512i tl[2], const __m512i th[2]) {
        const int64_t Kp = g->Kp, nbk = g->nbk;
        const __m512i sign = _mm512_set1_epi8((char)0x80);
        const uint16_t *xb = g->xb + t * Kp;
        float *out = g->out + (size_t)t * g->out_stride + n;
        for (int r = 0; r < nr; r++) {
                const uint8_t *row = g->w + (size_t)(n + r) * g->w_stride;
                const float *wsr = g->ws ? g->ws + (size_t)((n + r) / DSV_QBLOCK) * g->ws_stride : NULL;
                __m512 tot = _mm512_setzero_ps();
                for (int64_t kb0 = 0; kb0 < nbk; kb0 += 4) {
                        const int nb = (int)MIN(4, nbk - kb0);
                        __m512 acc[4];
                        _Pragma("GCC unroll 4")
                        for (int q = 0; q < 4; q++) {
                                acc[q] = _mm512_setzero_ps();
                                if (q >= nb)
                                        continue;
                                _Pragma("GCC unroll 2")
                                for (int h = 0; h < 2; h++) {
                                        const int64_t k = (kb0 + q) * DSV_QBLOCK + 64 * h, left = g->K - k;
                                        __m512i c = left >= 64 ? _mm512_loadu_si512(row + k)
                                                               : _mm512_maskz_loadu_epi8(left > 0 ? (((__mmask64)1 << left) - 1) : 0, row + k);
                                        __m512i lo = _mm512_permutex2var_epi8(tl[0], c, tl[1]);
                                        __m512i hi = _mm512_permutex2var_epi8(th[0], c, th[1]);
                                        hi = _mm512_ternarylogic_epi32(hi, c, sign, 0xF8);
                                        acc[q] = _mm512_dpbf16_ps(acc[q], (__m512bh)_mm512_unpacklo_epi8(lo, hi),
                                                                  (__m512bh)_mm512_loadu_si512(xb + k));
                                        acc[q] = _mm512_dpbf16_ps(acc[q], (__m512bh)_mm512_unpackhi_epi8(lo, hi),
                                                                  (__m512bh)_mm512_loadu_si512(xb + k + 32));
                                }
                        }
                        for (int q = 0; q < nb; q++) {
                                const int64_t kb = kb0 + q;
                                const float ws = wsr ? wsr[kb] : 1.0f, as = g->xs ? g->xs[t * nbk + kb] : 1.0f;
                                const __m512 sc = _mm512_set1_ps(as * ws);
                                tot = g->xs_pow2 && dsv_scale_pow2(ws) ? _mm512_fmadd_ps(acc[q], sc, tot)
                                                                       : _mm512_add_ps(tot, _mm512_mul_ps(acc[q], sc));
                        }
                }
                float v = hsum_tree(tot);
                out[r] = g->round_out ? dsv_round_bf16(v) : v;
        }
}

int dsv_gemm_avx512bf16(const struct dsv_gemm *g, int64_t n0, int64_t n1, int64_t t0, int64_t t1) {
        const int64_t Kp = g->Kp, nbk = g->nbk;
        uint16_t *wb = dsv_cpu_scratch(2, (size_t)BR * (size_t)Kp * 2 + (size_t)(BR * nbk) * sizeof(float));
        __m512i tl[2], th[2];

        if (!wb)
                return -ENOMEM;
        float *wsc = (float *)(wb + BR * Kp);
        pthread_once(&tab_once, tab_init);
        tl[0] = _mm512_load_si512(tab_lo);
        tl[1] = _mm512_load_si512(tab_lo + 64);
        th[0] = _mm512_load_si512(tab_hi);
        th[1] = _mm512_load_si512(tab_hi + 64);

        for (int64_t n = n0; n < n1; n += BR) {
                const int nr = (int)MIN(BR, n1 - n);
                if (t1 - t0 == 1 && g->wtype == DSV_F8_E4M3) {
                        rows_token(g, n, nr, t0, tl, th);
                        continue;
                }
                /* the next group's weight rows on their way while this one computes: they are
                 * cold (read once per call), and waiting for them was ~1/6 of a prefill's kernel time */
                for (int64_t r = n + BR; r < MIN(n + 2 * BR, n1); r++)
                        for (size_t b = 0; b < (size_t)g->K * dsv_dtype_size(g->wtype); b += 64)
                                _mm_prefetch((const char *)(g->w + (size_t)r * g->w_stride + b), _MM_HINT_T0);
                const uint16_t *rows = wb;
                size_t ws = (size_t)Kp;
                if (g->wtype == DSV_BF16 && g->K == Kp && nr == BR && g->w_stride % 2 == 0) {
                        /* whole bf16 rows are already in lane order: read them in place */
                        rows = (const uint16_t *)(g->w + (size_t)n * g->w_stride);
                        ws = g->w_stride / 2;
                }
                bool fuse = g->xs_pow2;
                for (int r = 0; r < BR; r++) {
                        if (rows == wb && r < nr)
                                convert_row(g, g->w + (size_t)(n + r) * g->w_stride, wb + r * Kp, tl, th);
                        else if (rows == wb)
                                memset(wb + r * Kp, 0, (size_t)Kp * 2);
                        for (int64_t kb = 0; kb < nbk; kb++)
                                wsc[r * nbk + kb] = r < nr && g->ws ? g->ws[(size_t)((n + r) / DSV_QBLOCK) * g->ws_stride + (size_t)kb]
                                                                    : (r < nr ? 1.0f : 0.0f);
                        for (int64_t kb = 0; kb < nbk && fuse; kb++)
                                fuse &= r >= nr || dsv_scale_pow2(wsc[r * nbk + kb]);
                }
                int64_t t = t0;
                for (; t + 6 <= t1; t += 6)
                        wide_6(g, rows, ws, wsc, n, nr, t, fuse);
                for (; t + 3 <= t1; t += 3)
                        tile_4_3(g, rows, ws, wsc, n, nr, t, fuse);
                if (t1 - t == 2)
                        tile_4_2(g, rows, ws, wsc, n, nr, t, fuse);
                else if (t1 - t == 1)
                        tile_4_1(g, rows, ws, wsc, n, nr, t, fuse);
        }
        return 0;
}

#if defined(__clang__)
#pragma clang attribute pop
#endif
#else
int dsv_gemm_avx512bf16(const struct dsv_gemm *g, int64_t n0, int64_t n1, int64_t t0, int64_t t1) { return -ENOTSUP; }
int dsv_gemm_avx512bf16_codes(const uint8_t *q, int64_t Kp, uint16_t *xb) { return -ENOTSUP; }
#endif
