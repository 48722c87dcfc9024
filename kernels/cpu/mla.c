/* Multi-head latent attention over the selected positions, on the CPU.
 *
 * Decode ("absorbed"), token t, head h (W_UK = kv_b rows h*(nope+v) + [0, nope),
 * W_UV = rows h*(nope+v) + [nope, nope+v), each row kv_lora wide):
 *   q_c[c]   = sum_d q_nope[d] W_UK[d][c]
 *   s_j      = (q_c . c_j + q_pe . kpe_j) * scale        j in idx[t]
 *   p        = softmax(s)
 *   o_c      = sum_j p_j c_j
 *   out[d]   = sum_c o_c[c] W_UV[d][c]
 * faithful: q_c, both score terms, their sum, the scaled score, p, o_c and out are bf16, as in
 * the reference's bf16 einsums.
 *
 * Prefill ("expanded", one sequence): k_j = [k_nope_j ; kpe_j], v_j from kv_b(c_j):
 *   s_j = (q . k_j) * scale;  p = softmax(s);  out = sum_j p_j v_j
 * faithful: the dot product, the scaled score, p and out are bf16. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "kernels/cpu/cpu.h"

void dsv_softmax(float *s, int n) {
        float m = -INFINITY, sum = 0;
        for (int j = 0; j < n; j++)
                m = s[j] > m ? s[j] : m;
        for (int j = 0; j < n; j++) {
                s[j] = expf(s[j] - m);
                sum += s[j];
        }
        float inv = 1.0f / sum;
        for (int j = 0; j < n; j++)
                s[j] *= inv;
}

DSV_HOT static float dotf(const float *a, const float *b, int n) {
        float s = 0;
        OMP(simd reduction(+ : s))
        for (int i = 0; i < n; i++)
                s += a[i] * b[i];
        return s;
}

DSV_HOT static void axpy(float *y, float a, const float *x, int n) {
        OMP(simd)
        for (int i = 0; i < n; i++)
                y[i] += a * x[i];
}

struct mla_ctx {
        const void *p;
        _Atomic int err;
};

static void mla_decode_rows(void *v, int64_t t0, int64_t t1, int thread) {
        struct mla_ctx *mc = v;
        const struct dsv_op_mla_decode *p = mc->p;
        const struct dsv_kv_layout *L = p->kv.layout;
        const int H = p->n_heads, nope = p->nope, rope = p->rope, V = p->v, C = p->kv_lora;
        const int K = (int)p->idx->ne[0];
        const int qk = nope + rope;
        const bool f = p->faithful;
        const int32_t *seq = p->at.tok_seq->data;

        for (int64_t t = t0; t < t1; t++) {
                const int32_t *idx = dsv_tensor_row(p->idx, t);
                const int32_t *pages = dsv_tensor_row(p->at.block_table, seq[t]);
                const float *q = dsv_tensor_row(p->q, t);
                float *out = dsv_tensor_row(p->out, t);
                int n = 0;
                for (int j = 0; j < K; j++)
                        n += idx[j] >= 0;
                float *lat = malloc(((size_t)n * (C + rope) + (size_t)C * 2 + (size_t)n) * sizeof(float));
                if (!lat) {
                        atomic_store(&mc->err, -ENOMEM);
                        continue;
                }
                float *kpe = lat + (size_t)n * C, *qc = kpe + (size_t)n * rope, *oc = qc + C, *s = oc + C;
                for (int j = 0, m = 0; j < K; j++)
                        if (idx[j] >= 0) {
                                dsv_kv_read_mla(&p->kv, dsv_kv_slot(L, pages, idx[j]), lat + (size_t)m * C,
                                                kpe + (size_t)m * rope);
                                m++;
                        }
                for (int h = 0; h < H; h++) {
                        const float *qn = q + (size_t)h * qk, *qp = qn + nope;
                        const float *wuk = dsv_tensor_row(p->wkv_b, (int64_t)h * (nope + V));
                        const size_t wst = p->wkv_b->stride / sizeof(float);
                        memset(qc, 0, (size_t)C * sizeof(float));
                        for (int d = 0; d < nope; d++)
                                axpy(qc, qn[d], wuk + (size_t)d * wst, C);
                        for (int c = 0; c < C; c++)
                                qc[c] = dsv_rnd(qc[c], f);
                        for (int j = 0; j < n; j++) {
                                float a = dsv_rnd(dotf(qc, lat + (size_t)j * C, C), f);
                                float b = dsv_rnd(dotf(qp, kpe + (size_t)j * rope, rope), f);
                                s[j] = dsv_rnd(dsv_rnd(a + b, f) * p->scale, f);
                        }
                        dsv_softmax(s, n);
                        memset(oc, 0, (size_t)C * sizeof(float));
                        for (int j = 0; j < n; j++)
                                axpy(oc, dsv_rnd(s[j], f), lat + (size_t)j * C, C);
                        for (int c = 0; c < C; c++)
                                oc[c] = dsv_rnd(oc[c], f);
                        const float *wuv = wuk + (size_t)nope * wst;
                        for (int d = 0; d < V; d++)
                                out[h * V + d] = dsv_rnd(dotf(oc, wuv + (size_t)d * wst, C), f);
                }
                free(lat);
        }
}

int dsv_cpu_mla_decode(const struct dsv_op_mla_decode *p) {
        const int64_t T = p->out->ne[1];
        struct mla_ctx mc = {.p = p};
        atomic_init(&mc.err, 0);
        dsv_par_for_dyn(T, 1, T > 1 ? T * p->n_heads * p->idx->ne[0] * 256 : 0, mla_decode_rows, &mc);
        return atomic_load(&mc.err);
}

static void mla_prefill_rows(void *vc, int64_t t0, int64_t t1, int thread) {
        struct mla_ctx *mc = vc;
        const struct dsv_op_mla_prefill *p = mc->p;
        const int H = p->n_heads, nope = p->nope, rope = p->rope, V = p->v;
        const int K = (int)p->idx->ne[0];
        const int qk = nope + rope;
        const bool f = p->faithful;

        for (int64_t t = t0; t < t1; t++) {
                const int32_t *idx = dsv_tensor_row(p->idx, t);
                const float *q = dsv_tensor_row(p->q, t);
                float *out = dsv_tensor_row(p->out, t);
                float *s = malloc(((size_t)K + V) * sizeof(float));
                if (!s) {
                        atomic_store(&mc->err, -ENOMEM);
                        continue;
                }
                float *o = s + K;
                for (int h = 0; h < H; h++) {
                        const float *qh = q + (size_t)h * qk;
                        int n = 0;
                        for (int j = 0; j < K; j++) {
                                if (idx[j] < 0)
                                        continue;
                                const float *kv = (const float *)dsv_tensor_row(p->kvb, idx[j]) + (size_t)h * (nope + V);
                                const float *kpe = dsv_tensor_row(p->k_pe, idx[j]);
                                float dot = dotf(qh, kv, nope) + dotf(qh + nope, kpe, rope);
                                s[n++] = dsv_rnd(dsv_rnd(dot, f) * p->scale, f);
                        }
                        dsv_softmax(s, n);
                        memset(o, 0, (size_t)V * sizeof(float));
                        for (int j = 0, m = 0; j < K; j++) {
                                if (idx[j] < 0)
                                        continue;
                                const float *v = (const float *)dsv_tensor_row(p->kvb, idx[j]) + (size_t)h * (nope + V) + nope;
                                axpy(o, dsv_rnd(s[m++], f), v, V);
                        }
                        for (int d = 0; d < V; d++)
                                out[h * V + d] = dsv_rnd(o[d], f);
                }
                free(s);
        }
}

int dsv_cpu_mla_prefill(const struct dsv_op_mla_prefill *p) {
        const int64_t T = p->out->ne[1];
        struct mla_ctx mc = {.p = p};
        atomic_init(&mc.err, 0);
        dsv_par_for_dyn(T, 1, T > 1 ? T * p->n_heads * p->idx->ne[0] * 256 : 0, mla_prefill_rows, &mc);
        return atomic_load(&mc.err);
}
