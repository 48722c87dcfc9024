/* The canonical-order linear kernel of gemm.h written once with GCC vector extensions.
 * gemm_portable.c, gemm_avx2.c and gemm_avx512.c each include it after their own
 * `#pragma GCC target`, so the same operations compile for each instruction set (lanes are
 * independent IEEE operations and -ffp-contract=off keeps products and sums apart: the
 * three give identical bits). GEMM_NAME names the function.
 *
 * Work: weight rows are converted GR at a time into lane order (fp32, scratch), then every
 * token of the range runs over them: a weight byte is read from memory once per call. */
#include <errno.h>
#include <string.h>

#include "kernels/cpu/cpu.h"
#include "kernels/cpu/gemm.h"

#ifndef GEMM_NAME
#error "define GEMM_NAME before including gemm_generic.h"
#endif

typedef float gf16 __attribute__((vector_size(64)));
typedef uint32_t gu16 __attribute__((vector_size(64)));
typedef int32_t gi16 __attribute__((vector_size(64)));
typedef uint8_t gb16 __attribute__((vector_size(16)));
typedef uint8_t gb64 __attribute__((vector_size(64)));

#define GR 4 /* weight rows converted and multiplied together */

/* loads and stores of 16 floats at any alignment (macros: 64-byte vectors passed by value
 * would change the ABI between instruction sets) */
#define GLD(p)                                  \
        ({                                      \
                gf16 v_;                        \
                memcpy(&v_, (p), sizeof(v_));   \
                v_;                             \
        })
#define GST(p, v)                               \
        do {                                    \
                gf16 v_ = (v);                  \
                memcpy((p), &v_, sizeof(v_));   \
        } while (0)

/* 16 e4m3 codes to floats, exactly dsv_e4m3_to_f32 (NaN codes give 0x7fc00000) */
static inline void g_e4m3(const uint8_t *q, float *out) {
        gb16 b8;
        memcpy(&b8, q, sizeof(b8));
        gu16 b = __builtin_convertvector(b8, gu16);
        gu16 em = b & 0x7fu;
        gu16 sign = (b & 0x80u) << 24;
        gu16 normal = (em << 20) + (120u << 23);
        gf16 subf = __builtin_convertvector((gi16)(em & 7u), gf16) * 0x1p-9f;
        gu16 sub = (gu16)subf | sign;
        gu16 is_normal = (gu16)(em >= 8u);
        gu16 v = ((normal | sign) & is_normal) | (sub & ~is_normal);
        gu16 is_nan = (gu16)(em == 0x7fu);
        v = (v & ~is_nan) | (0x7fc00000u & is_nan);
        GST(out, (gf16)v);
}

/* Lane order of one 64-code half of an FP8 block: out[32 h + 16 e + j] = in[16 (j/4) + 8 h + 2 (j%4) + e] */
#define P4(h, e, j0) 16 * (j0 / 4) + 8 * h + 2 * (j0 % 4) + e
#define P16(h, e)                                                                                                   \
        P4(h, e, 0), P4(h, e, 1), P4(h, e, 2), P4(h, e, 3), P4(h, e, 4), P4(h, e, 5), P4(h, e, 6), P4(h, e, 7),     \
                P4(h, e, 8), P4(h, e, 9), P4(h, e, 10), P4(h, e, 11), P4(h, e, 12), P4(h, e, 13), P4(h, e, 14), \
                P4(h, e, 15)

/* Block kb of one weight row in lane order: wl[32 s + 16 e + j] = w[k(kb,s,j,e)], zeros past K. */
static inline void g_row_block(const struct dsv_gemm *g, const uint8_t *row, int64_t kb, float *wl) {
        const size_t es = dsv_dtype_size(g->wtype);
        const int64_t k0 = kb * DSV_QBLOCK, len = MIN(DSV_QBLOCK, g->K - k0);
        uint8_t tmp[DSV_QBLOCK * 4];
        const uint8_t *src = row + (size_t)k0 * es;
        if (len < DSV_QBLOCK) {
                memset(tmp, 0, sizeof(tmp));
                memcpy(tmp, src, (size_t)len * es);
                src = tmp;
        }
        if (g->wtype == DSV_F8_E4M3) {
                for (int half = 0; half < 2; half++) {
                        gb64 c, p;
                        memcpy(&c, src + 64 * half, sizeof(c));
                        p = __builtin_shufflevector(c, c, P16(0, 0), P16(0, 1), P16(1, 0), P16(1, 1));
                        for (int i = 0; i < 4; i++)
                                g_e4m3((const uint8_t *)&p + 16 * i, wl + 64 * half + 16 * i);
                }
        } else if (g->wtype == DSV_BF16) {
                for (int s = 0; s < 4; s++) {
                        gu16 u;
                        memcpy(&u, src + 64 * s, sizeof(u));
                        GST(wl + 32 * s, (gf16)(u << 16));                 /* even k */
                        GST(wl + 32 * s + 16, (gf16)(u & 0xffff0000u));   /* odd k */
                }
        } else {
                for (int s = 0; s < 4; s++) {
                        gf16 a = GLD(src + 128 * s), b = GLD(src + 128 * s + 64);
                        GST(wl + 32 * s, __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30));
                        GST(wl + 32 * s + 16, __builtin_shufflevector(a, b, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31));
                }
        }
}

static inline float g_finish(const gf16 *v, bool round) {
        float r8[8], r4[4], r2[2], r;
        for (int i = 0; i < 8; i++)
                r8[i] = (*v)[i] + (*v)[i + 8];
        for (int i = 0; i < 4; i++)
                r4[i] = r8[i] + r8[i + 4];
        for (int i = 0; i < 2; i++)
                r2[i] = r4[i] + r4[i + 2];
        r = r2[0] + r2[1];
        return round ? dsv_round_bf16(r) : r;
}

int GEMM_NAME(const struct dsv_gemm *g, int64_t n0, int64_t n1, int64_t t0, int64_t t1) {
        const int64_t Kp = g->Kp, nbk = g->nbk;
        float *wl = dsv_cpu_scratch(2, (size_t)(GR * Kp + GR * nbk) * sizeof(float));
        if (!wl)
                return -ENOMEM;
        float *wsc = wl + GR * Kp;

        for (int64_t n = n0; n < n1; n += GR) {
                const int nr = (int)MIN(GR, n1 - n);
                for (int r = 0; r < GR; r++)
                        for (int64_t kb = 0; kb < nbk; kb++) {
                                if (r < nr) {
                                        g_row_block(g, g->w + (size_t)(n + r) * g->w_stride, kb, wl + r * Kp + kb * DSV_QBLOCK);
                                        wsc[r * nbk + kb] = g->ws ? g->ws[(size_t)((n + r) / DSV_QBLOCK) * g->ws_stride + (size_t)kb] : 1.0f;
                                } else {
                                        memset(wl + r * Kp + kb * DSV_QBLOCK, 0, DSV_QBLOCK * sizeof(float));
                                        wsc[r * nbk + kb] = 0;
                                }
                        }
                for (int64_t t = t0; t < t1; t++) {
                        const float *x = g->xf + t * Kp, *xs = g->xs ? g->xs + t * nbk : NULL;
                        gf16 tot[GR];
                        for (int r = 0; r < GR; r++)
                                tot[r] = (gf16){0};
                        for (int64_t kb = 0; kb < nbk; kb++) {
                                gf16 acc[GR];
                                for (int r = 0; r < GR; r++)
                                        acc[r] = (gf16){0};
                                for (int s = 0; s < 4; s++) {
                                        const int64_t o = kb * DSV_QBLOCK + 32 * s;
                                        gf16 xo = GLD(x + o + 16), xe = GLD(x + o);
                                        for (int r = 0; r < GR; r++) {
                                                acc[r] = acc[r] + xo * GLD(wl + r * Kp + o + 16);
                                                acc[r] = acc[r] + xe * GLD(wl + r * Kp + o);
                                        }
                                }
                                for (int r = 0; r < GR; r++)
                                        tot[r] = tot[r] + acc[r] * ((xs ? xs[kb] : 1.0f) * wsc[r * nbk + kb]);
                        }
                        float *out = g->out + (size_t)t * g->out_stride + n;
                        for (int r = 0; r < nr; r++)
                                out[r] = g_finish(&tot[r], g->round_out);
                }
        }
        return 0;
}
