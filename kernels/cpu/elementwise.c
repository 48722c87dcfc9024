/* Embedding gather, row gather, SwiGLU, residual add and weight dequantization on the CPU. */
#include "config.h"

#include <errno.h>
#include <math.h>

#include "kernels/cpu/cpu.h"

static void embed_rows(void *v, int64_t t0, int64_t t1, int thread) {
        const struct dsv_op_embed *p = v;
        const int64_t D = p->out->ne[0];
        const int32_t *ids = p->ids->data;
        for (int64_t t = t0; t < t1; t++) {
                const void *row = dsv_tensor_row(p->table, ids[t]);
                float *o = dsv_tensor_row(p->out, t);
                for (int64_t i = 0; i < D; i++)
                        o[i] = dsv_load_f(row, p->table->type, i);
        }
}

/* out[t, :] = float(table[ids[t], :]) */
int dsv_cpu_embed(const struct dsv_op_embed *p) {
        const int64_t T = p->out->ne[1], D = p->out->ne[0], V = p->table->ne[1];
        const int32_t *ids = p->ids->data;
        for (int64_t t = 0; t < T; t++)
                if (ids[t] < 0 || ids[t] >= V)
                        return -EINVAL;
        dsv_par_for(T, T * D, embed_rows, (void *)p);
        return 0;
}

/* out[i] = x[rows[i]] */
int dsv_cpu_get_rows(const struct dsv_op_get_rows *p) {
        const int64_t n = p->out->ne[1], X = p->x->ne[1];
        const int32_t *rows = p->rows->data;
        for (int64_t i = 0; i < n; i++) {
                if (rows[i] < 0 || rows[i] >= X)
                        return -EINVAL;
                memcpy(dsv_tensor_row(p->out, i), dsv_tensor_row(p->x, rows[i]), (size_t)p->out->ne[0] * sizeof(float));
        }
        return 0;
}

/* out = w as numbers (struct dsv_op_dequant): one fp32 product (FP8 code x block scale) and
 * one rounding per element, as the CUDA kernel does. */
bool dsv_cpu_dequant_ok(const struct dsv_op_dequant *p) { return dsv_dequant_ok(p); }

static void dequant_rows(void *v, int64_t r0, int64_t r1, int thread) {
        const struct dsv_op_dequant *p = v;
        const struct dsv_tensor *w = p->w;
        const int64_t K = w->ne[0];
        for (int64_t r = r0; r < r1; r++) {
                const void *row = dsv_tensor_row(w, r);
                const float *sc = w->type == DSV_F8_E4M3 ? dsv_tensor_row(w->scale, r / DSV_QBLOCK) : NULL;
                float *of = p->out->type == DSV_F32 ? dsv_tensor_row(p->out, r) : NULL;
                uint16_t *ob = of ? NULL : dsv_tensor_row(p->out, r);
                for (int64_t j = 0; j < K; j++) {
                        float x = sc ? dsv_e4m3_to_f32(((const uint8_t *)row)[j]) * sc[j / DSV_QBLOCK]
                                     : dsv_load_f(row, w->type, j);
                        if (of)
                                of[j] = p->round_bf16 ? dsv_round_bf16(x) : x;
                        else
                                ob[j] = dsv_f32_to_bf16(x);
                }
        }
}

int dsv_cpu_dequant(const struct dsv_op_dequant *p) {
        const int64_t N = p->w->ne[1];
        dsv_par_for(N, N * p->w->ne[0], dequant_rows, (void *)p);
        return 0;
}

/* out = bf16(silu(a) * b), silu(a) = a * sigmoid(a), fp32 */
struct swiglu_ctx {
        const struct dsv_op_swiglu *p;
        bool faithful;
};

static void swiglu_rows(void *v, int64_t t0, int64_t t1, int thread) {
        const struct dsv_op_swiglu *p = ((struct swiglu_ctx *)v)->p;
        const bool faithful = ((struct swiglu_ctx *)v)->faithful;
        const int64_t N = p->out->ne[0];
        for (int64_t t = t0; t < t1; t++) {
                const float *a = dsv_tensor_row(p->a, t), *b = dsv_tensor_row(p->b, t);
                float *o = dsv_tensor_row(p->out, t);
                for (int64_t i = 0; i < N; i++) {
                        float s = a[i] / (1.0f + expf(-a[i]));
                        o[i] = dsv_rnd(s * b[i], faithful);
                }
        }
}

int dsv_cpu_swiglu(const struct dsv_op_swiglu *p, bool faithful) {
        const int64_t T = p->out->ne[1], N = p->out->ne[0];
        struct swiglu_ctx c = {p, faithful};
        dsv_par_for(T, T * N * 16, swiglu_rows, &c);
        return 0;
}

/* out = bf16(a + b) */
int dsv_cpu_add(const struct dsv_op_add *p, bool faithful) {
        const int64_t T = p->out->ne[1], N = p->out->ne[0];
        for (int64_t t = 0; t < T; t++) {
                const float *a = dsv_tensor_row(p->a, t), *b = dsv_tensor_row(p->b, t);
                float *o = dsv_tensor_row(p->out, t);
                for (int64_t i = 0; i < N; i++)
                        o[i] = dsv_rnd(a[i] + b[i], faithful);
        }
        return 0;
}
