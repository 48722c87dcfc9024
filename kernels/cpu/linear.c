/* FP8 block-scaled linear layers and act_quant on the CPU.
 *
 * Equivalent math (reference `linear` with FP8 weights, faithful numerics):
 *   xq, xs = act_quant(x)                   # per 128 values: ue8m0 scale, e4m3 codes
 *   for kb in K blocks:                      # fp32
 *       acc += (sum_{k in kb} xq[k] * w8[n,k]) * (xs[kb] * ws[n/128, kb])
 *   out[n] = bf16(acc)
 * Exact numerics use x unquantized (xs = 1) and no output rounding; with power-of-two weight
 * scales that equals x . dequant(W) up to fp32 summation order. BF16/F32 weights (lm_head,
 * weights_proj, gate) use the same blocked loop with scale 1. Partial last blocks are fine. */
#include "config.h"

#include <errno.h>
#include <stdlib.h>

#include "kernels/cpu/cpu.h"

void dsv_quant_row(const float *x, int64_t n, uint8_t *q, float *s) {
        for (int64_t b = 0; b * DSV_QBLOCK < n; b++) {
                int64_t k0 = b * DSV_QBLOCK, len = MIN(n - k0, DSV_QBLOCK);
                float amax = 0;
                bool nan = false;
                for (int64_t k = 0; k < len; k++) {
                        float a = fabsf(x[k0 + k]);
                        nan |= a != a;
                        amax = a > amax ? a : amax;
                }
                float sc = nan ? NAN : dsv_act_scale(amax);
                float inv = 1.0f / sc;
                s[b] = sc;
                for (int64_t k = 0; k < len; k++)
                        q[k0 + k] = nan ? 0x7f : dsv_quant_e4m3(x[k0 + k], inv);
        }
}

/* 16 lanes of e4m3 -> f32 with integer ops and blends (no branches, no table):
 *   normal (exponent field != 0): bits = sign | (em << 20) + (120 << 23)
 *   subnormal: (em & 7) * 2^-9;  em == 0x7f: NaN */
typedef uint8_t v16b __attribute__((vector_size(16)));
typedef uint32_t v16u __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));
typedef float v16f __attribute__((vector_size(64)));

DSV_HOT void dsv_e4m3_row_to_f32(const uint8_t *q, int64_t n, float *out) {
        int64_t i = 0;
        for (; i + 16 <= n; i += 16) {
                v16b b8;
                memcpy(&b8, q + i, sizeof(b8));
                v16u b = __builtin_convertvector(b8, v16u);
                v16u em = b & 0x7fu;
                v16u sign = (b & 0x80u) << 24;
                v16u normal = (em << 20) + (120u << 23);
                v16f subf = __builtin_convertvector((v16i)(em & 7u), v16f) * 0x1p-9f;
                v16u sub = (v16u)subf;
                v16u is_normal = (v16u)(em >= 8u);
                v16u mag = (normal & is_normal) | (sub & ~is_normal);
                v16u is_nan = (v16u)(em == 0x7fu);
                mag = (mag & ~is_nan) | (0x7fc00000u & is_nan);
                v16f f = (v16f)(mag | sign);
                memcpy(out + i, &f, sizeof(f));
        }
        for (; i < n; i++)
                out[i] = dsv_e4m3_to_f32(q[i]);
}

int dsv_cpu_act_quant(const struct dsv_op_act_quant *p) {
        const int64_t T = p->x->ne[1], K = p->x->ne[0];
        OMP(parallel for schedule(static) if (T * K * 8 >= DSV_PAR_MIN))
        for (int64_t t = 0; t < T; t++)
                dsv_quant_row(dsv_tensor_row(p->x, t), K, dsv_tensor_row(p->q, t), dsv_tensor_row(p->s, t));
        return 0;
}

/* Converts row n of W (all K columns) to fp32, zero-padded to Kp. */
static inline void load_row(const struct dsv_tensor *w, int64_t n, int64_t K, int64_t Kp, float *out) {
        const void *row = dsv_tensor_row(w, n);
        switch (w->type) {
        case DSV_F8_E4M3:
                dsv_e4m3_row_to_f32(row, K, out);
                break;
        case DSV_BF16:
                OMP(simd)
                for (int64_t k = 0; k < K; k++)
                        out[k] = dsv_bf16_to_f32(((const uint16_t *)row)[k]);
                break;
        default:
                memcpy(out, row, (size_t)K * sizeof(float));
                break;
        }
        for (int64_t k = K; k < Kp; k++)
                out[k] = 0;
}

/* 16 floats: one AVX-512 register, two AVX2 or four SSE registers depending on the clone. */
typedef float v16 __attribute__((vector_size(64)));
/* macros, not functions: passing 64-byte vectors by value would change the ABI per clone */
#define ld16(p)                                         \
        ({                                              \
                v16 v_;                                 \
                memcpy(&v_, (p), sizeof(v_));           \
                v_;                                     \
        })
static inline float hsum16(const v16 *v) {
        float s = 0;
        for (int i = 0; i < 16; i++)
                s += (*v)[i];
        return s;
}

#define TT 4 /* tokens per tile */
#define DSV_UNROLL _Pragma("GCC unroll 8")
#define TN 2 /* weight rows per tile */

/* Output rows [n0, n1) for all T tokens. xa: T x Kp activations (codes or values, zero
 * padded), xs: T x nbk activation scales (NULL: 1). Each 128-wide block's products are summed
 * in vector lanes, scaled by a_scale * w_scale and added to per-lane totals (fp32); the lanes
 * are summed once at the end. */
DSV_HOT static void linear_rows(const struct dsv_op_linear *p, const float *xa, int64_t Kp, const float *xs, int64_t nbk,
                                int64_t n0, int64_t n1, float *wrow) {
        const int64_t T = p->x->ne[1], K = p->x->ne[0];
        const struct dsv_tensor *w = p->w;
        const float *ws = w->type == DSV_F8_E4M3 ? w->scale->data : NULL;
        const size_t ws_stride = w->type == DSV_F8_E4M3 ? w->scale->stride / sizeof(float) : 0;

        for (int64_t n = n0; n < n1; n += TN) {
                const int nn = (int)MIN(TN, n1 - n);
                float wsc[TN][256];
                for (int j = 0; j < nn; j++) {
                        load_row(w, n + j, K, Kp, wrow + (size_t)j * (size_t)Kp);
                        for (int64_t kb = 0; kb < nbk; kb++)
                                wsc[j][kb] = ws ? ws[(size_t)((n + j) / DSV_QBLOCK) * ws_stride + (size_t)kb] : 1.0f;
                }
                for (int j = nn; j < TN; j++) {
                        memset(wrow + (size_t)j * (size_t)Kp, 0, (size_t)Kp * sizeof(float));
                        for (int64_t kb = 0; kb < nbk; kb++)
                                wsc[j][kb] = 0;
                }
                for (int64_t t = 0; t < T; t += TT) {
                        const int tt = (int)MIN(TT, T - t);
                        const float *xr[TT];
                        v16 tot[TT][TN];
                        for (int i = 0; i < TT; i++) {
                                xr[i] = xa + (size_t)(t + MIN(i, tt - 1)) * (size_t)Kp;
                                for (int j = 0; j < TN; j++)
                                        tot[i][j] = (v16){0};
                        }
                        for (int64_t kb = 0; kb < nbk; kb++) {
                                v16 acc[TT][TN];
                                DSV_UNROLL
                                for (int i = 0; i < TT; i++)
                                        DSV_UNROLL
                                        for (int j = 0; j < TN; j++)
                                                acc[i][j] = (v16){0};
                                for (int64_t k = kb * DSV_QBLOCK; k < (kb + 1) * DSV_QBLOCK; k += 16) {
                                        v16 wv[TN];
                                        DSV_UNROLL
                                        for (int j = 0; j < TN; j++)
                                                wv[j] = ld16(wrow + (size_t)j * (size_t)Kp + k);
                                        DSV_UNROLL
                                        for (int i = 0; i < TT; i++) {
                                                v16 xv = ld16(xr[i] + k);
                                                DSV_UNROLL
                                                for (int j = 0; j < TN; j++)
                                                        acc[i][j] += xv * wv[j];
                                        }
                                }
                                DSV_UNROLL
                                for (int i = 0; i < TT; i++) {
                                        float as = xs ? xs[(t + MIN(i, tt - 1)) * nbk + kb] : 1.0f;
                                        DSV_UNROLL
                                        for (int j = 0; j < TN; j++)
                                                tot[i][j] += acc[i][j] * (as * wsc[j][kb]);
                                }
                        }
                        for (int i = 0; i < tt; i++) {
                                float *o = dsv_tensor_row(p->out, t + i);
                                for (int j = 0; j < nn; j++) {
                                        float v = hsum16(&tot[i][j]);
                                        o[n + j] = p->round_out ? dsv_round_bf16(v) : v;
                                }
                        }
                }
        }
}

int dsv_cpu_linear(const struct dsv_op_linear *p) {
        const int64_t T = p->x->ne[1], K = p->x->ne[0], N = p->w->ne[1];
        const int64_t nbk = DIV_ROUND_UP(K, DSV_QBLOCK), Kp = nbk * DSV_QBLOCK;
        const bool quant = p->quant_in && p->w->type == DSV_F8_E4M3;
        float *xa, *xs = NULL;
        int err = 0;

        if (T == 0 || N == 0)
                return 0;
        if (nbk > 256)
                return -E2BIG; /* K <= 32768 */
        /* activations: act_quant'ed codes (faithful FP8) or values, zero-padded to whole blocks */
        xa = dsv_cpu_scratch(0, (size_t)T * (size_t)Kp * sizeof(float));
        if (quant)
                xs = dsv_cpu_scratch(1, (size_t)T * (size_t)nbk * sizeof(float));
        if (!xa || (quant && !xs))
                return -ENOMEM;
        OMP(parallel for schedule(static) if (T * K * 8 >= DSV_PAR_MIN))
        for (int64_t t = 0; t < T; t++) {
                const float *x = dsv_tensor_row(p->x, t);
                float *dst = xa + (size_t)t * (size_t)Kp;
                if (quant) {
                        uint8_t q[32768];
                        dsv_quant_row(x, K, q, xs + t * nbk);
                        dsv_e4m3_row_to_f32(q, K, dst);
                } else {
                        memcpy(dst, x, (size_t)K * sizeof(float));
                }
                memset(dst + K, 0, (size_t)(Kp - K) * sizeof(float));
        }

        OMP(parallel if (T * N * K >= DSV_PAR_MIN))
        {
                int nt = 1, id = 0;
#ifdef _OPENMP
                nt = omp_get_num_threads();
                id = omp_get_thread_num();
#endif
                /* contiguous row ranges, TN-aligned */
                int64_t per = ALIGN_UP(DIV_ROUND_UP(N, nt), TN);
                int64_t n0 = MIN(N, per * id), n1 = MIN(N, n0 + per);
                float *wrow = dsv_cpu_scratch(2, (size_t)TN * (size_t)Kp * sizeof(float));
                if (!wrow) {
                        OMP(atomic write)
                        err = -ENOMEM;
                } else if (n0 < n1) {
                        linear_rows(p, xa, Kp, xs, nbk, n0, n1, wrow);
                }
        }
        return err;
}
