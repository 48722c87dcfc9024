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

DSV_HOT void dsv_e4m3_row_to_f32(const uint8_t *q, int64_t n, float *out) {
        OMP(simd)
        for (int64_t i = 0; i < n; i++)
                out[i] = dsv_e4m3_to_f32(q[i]);
}

int dsv_cpu_act_quant(const struct dsv_op_act_quant *p) {
        const int64_t T = p->x->ne[1], K = p->x->ne[0];
        OMP(parallel for schedule(static) if (T * K * 8 >= DSV_PAR_MIN))
        for (int64_t t = 0; t < T; t++)
                dsv_quant_row(dsv_tensor_row(p->x, t), K, dsv_tensor_row(p->q, t), dsv_tensor_row(p->s, t));
        return 0;
}

static inline void load_block(const struct dsv_tensor *w, int64_t n, int64_t k0, int64_t len, float *wf) {
        const void *row = dsv_tensor_row(w, n);
        switch (w->type) {
        case DSV_F8_E4M3:
                dsv_e4m3_row_to_f32((const uint8_t *)row + k0, len, wf);
                break;
        case DSV_BF16:
                OMP(simd)
                for (int64_t k = 0; k < len; k++)
                        wf[k] = dsv_bf16_to_f32(((const uint16_t *)row)[k0 + k]);
                break;
        default:
                memcpy(wf, (const float *)row + k0, (size_t)len * sizeof(float));
                break;
        }
}

DSV_HOT static float dot_f32(const float *a, const float *b, int64_t n) {
        float s = 0;
        OMP(simd reduction(+ : s))
        for (int64_t i = 0; i < n; i++)
                s += a[i] * b[i];
        return s;
}

/* Rows [n0, n1) of the output for all T tokens. xa: T x K activations (codes or values),
 * xs: T x nbk scales (NULL: 1). */
DSV_HOT static void linear_rows(const struct dsv_op_linear *p, const float *xa, size_t xa_stride, const float *xs,
                                int64_t nbk, int64_t n0, int64_t n1, float *acc, float *wf) {
        const int64_t T = p->x->ne[1], K = p->x->ne[0];
        const struct dsv_tensor *w = p->w;
        const float *ws = w->type == DSV_F8_E4M3 ? w->scale->data : NULL;
        const size_t ws_stride = w->type == DSV_F8_E4M3 ? w->scale->stride / sizeof(float) : 0;

        for (int64_t n = n0; n < n1; n++) {
                for (int64_t t = 0; t < T; t++)
                        acc[t] = 0;
                for (int64_t kb = 0; kb < nbk; kb++) {
                        int64_t k0 = kb * DSV_QBLOCK, len = MIN(K - k0, DSV_QBLOCK);
                        float wsc = ws ? ws[(size_t)(n / DSV_QBLOCK) * ws_stride + (size_t)kb] : 1.0f;
                        load_block(w, n, k0, len, wf);
                        for (int64_t t = 0; t < T; t++) {
                                float d = dot_f32(xa + (size_t)t * xa_stride + k0, wf, len);
                                acc[t] += xs ? d * (xs[t * nbk + kb] * wsc) : d * wsc;
                        }
                }
                for (int64_t t = 0; t < T; t++) {
                        float *o = dsv_tensor_row(p->out, t);
                        o[n] = p->round_out ? dsv_round_bf16(acc[t]) : acc[t];
                }
        }
}

int dsv_cpu_linear(const struct dsv_op_linear *p) {
        const int64_t T = p->x->ne[1], K = p->x->ne[0], N = p->w->ne[1];
        const int64_t nbk = DIV_ROUND_UP(K, DSV_QBLOCK);
        const bool quant = p->quant_in && p->w->type == DSV_F8_E4M3;
        float *xa = NULL, *xs = NULL;
        size_t xa_stride;
        int err = 0;

        if (T == 0 || N == 0)
                return 0;
        if (quant) {
                uint8_t *q = malloc((size_t)T * (size_t)K);
                xa = malloc((size_t)T * (size_t)K * sizeof(float));
                xs = malloc((size_t)T * (size_t)nbk * sizeof(float));
                if (!q || !xa || !xs) {
                        free(q);
                        free(xa);
                        free(xs);
                        return -ENOMEM;
                }
                OMP(parallel for schedule(static) if (T * K * 8 >= DSV_PAR_MIN))
                for (int64_t t = 0; t < T; t++) {
                        uint8_t *qt = q + (size_t)t * (size_t)K;
                        dsv_quant_row(dsv_tensor_row(p->x, t), K, qt, xs + t * nbk);
                        dsv_e4m3_row_to_f32(qt, K, xa + (size_t)t * (size_t)K);
                }
                free(q);
                xa_stride = (size_t)K;
        } else {
                xa = p->x->data;
                xa_stride = p->x->stride / sizeof(float);
        }

        OMP(parallel if (T * N * K >= DSV_PAR_MIN))
        {
                int nt = omp_get_max_threads(), id = omp_get_thread_num();
#ifdef _OPENMP
                nt = omp_get_num_threads();
#endif
                int64_t per = DIV_ROUND_UP(N, nt);
                int64_t n0 = MIN(N, per * id), n1 = MIN(N, n0 + per);
                float *acc = malloc((size_t)T * sizeof(float) + DSV_QBLOCK * sizeof(float));
                if (!acc) {
                        OMP(atomic write)
                        err = -ENOMEM;
                } else {
                        linear_rows(p, xa, xa_stride, quant ? xs : NULL, nbk, n0, n1, acc, acc + T);
                        free(acc);
                }
        }
        if (quant) {
                free(xa);
                free(xs);
        }
        return err;
}
