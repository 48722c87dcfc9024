/* The lightning indexer and top-k selection on the CPU.
 *
 * Equivalent math for query token t at position p, heads h, keys of positions s <= p:
 *   wh = ((w[t,h] * n_heads^-0.5) * q_scale[t,h]) * head_dim^-0.5     (exact: no q_scale)
 *   faithful: score[s] = k_scale[s] * sum_h wh * relu(q8[t,h] . k8[s])
 *   exact:    score[s] = sum_h wh * relu(q[t,h] . k[s])
 *   idx[t] = positions of the top min(topk, p+1) scores, ascending, -1 padded.
 * Ties prefer the lower position; NaN ranks lowest. */
#include "config.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "kernels/cpu/cpu.h"

struct scored {
        float v;
        int32_t i;
};

/* a ranks before b */
static inline bool better(struct scored a, struct scored b) { return a.v > b.v || (a.v == b.v && a.i < b.i); }

static int cmp_i32(const void *a, const void *b) {
        int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
        return (x > y) - (x < y);
}

int dsv_topk_select(const float *v, int n, int k, int32_t *out, void *scratch) {
        struct scored *a = scratch;
        int lo = 0, hi = n - 1;
        if (k > n)
                k = n;
        if (k <= 0)
                return 0;
        for (int i = 0; i < n; i++) {
                a[i].v = v[i] != v[i] ? -INFINITY : v[i];
                a[i].i = i;
        }
        /* quickselect: the k best end up in a[0..k) */
        while (lo < hi) {
                struct scored pivot = a[lo + (hi - lo) / 2];
                int i = lo, j = hi;
                while (i <= j) {
                        while (better(a[i], pivot))
                                i++;
                        while (better(pivot, a[j]))
                                j--;
                        if (i <= j) {
                                struct scored tmp = a[i];
                                a[i] = a[j];
                                a[j] = tmp;
                                i++;
                                j--;
                        }
                }
                if (k - 1 <= j)
                        hi = j;
                else if (k - 1 >= i)
                        lo = i;
                else
                        break;
        }
        for (int i = 0; i < k; i++)
                out[i] = a[i].i;
        qsort(out, (size_t)k, sizeof(int32_t), cmp_i32);
        return k;
}

static const uint8_t *idx_key(const struct dsv_kv_ref *kv, int64_t slot, const float **scale) {
        const struct dsv_kv_layout *L = kv->layout;
        uint8_t *page = dsv_kv_layer_page(kv, slot / L->page_tokens);
        int64_t off = slot % L->page_tokens;
        if (scale)
                *scale = (const float *)(page + L->idx_scale_off + (size_t)off * L->idx_scale_rec);
        return page + L->idx_off + (size_t)off * L->idx_rec;
}

struct idx_ctx {
        const struct dsv_op_indexer_topk *p;
        _Atomic int err;
};

static void indexer_rows(void *v, int64_t t0, int64_t t1, int thread) {
        struct idx_ctx *ic = v;
        const struct dsv_op_indexer_topk *p = ic->p;
        const struct dsv_kv_layout *L = p->kv.layout;
        const int H = p->n_heads, d = p->head_dim, topk = p->topk;
        const int nbh = DIV_ROUND_UP(d, DSV_QBLOCK);
        const int32_t *seq = p->at.tok_seq->data, *pos = p->at.tok_pos->data;

        for (int64_t t = t0; t < t1; t++) {
                int32_t *out = dsv_tensor_row(p->idx, t);
                const int32_t *pages = dsv_tensor_row(p->at.block_table, seq[t]);
                const int n = pos[t] + 1;
                int k = MIN(topk, n);
                float *sc_out = p->scores ? dsv_tensor_row(p->scores, t) : NULL;

                if (n <= topk && !sc_out) {
                        for (int i = 0; i < n; i++)
                                out[i] = i;
                        for (int i = n; i < topk; i++)
                                out[i] = -1;
                        continue;
                }
                float *scores = malloc((size_t)n * sizeof(float) + (size_t)n * sizeof(struct scored) +
                                       (size_t)H * d * sizeof(float) + (size_t)H * sizeof(float) + (size_t)d * sizeof(float));
                if (!scores) {
                        atomic_store(&ic->err, -ENOMEM);
                        continue;
                }
                void *scratch = scores + n;
                float *qf = (float *)((struct scored *)scratch + n), *wh = qf + (size_t)H * d, *kf = wh + H;
                const float *w = dsv_tensor_row(p->w, t);

                if (p->faithful) {
                        const float *qs = dsv_tensor_row(p->q_scale, t);
                        dsv_e4m3_row_to_f32(dsv_tensor_row(p->q, t), (int64_t)H * d, qf);
                        for (int h = 0; h < H; h++) /* one scale per head: d <= 128 */
                                wh[h] = ((w[h] * p->w_scale1) * qs[h * nbh]) * p->w_scale2;
                } else {
                        memcpy(qf, dsv_tensor_row(p->q, t), (size_t)H * d * sizeof(float));
                        for (int h = 0; h < H; h++)
                                wh[h] = (w[h] * p->w_scale1) * p->w_scale2;
                }
                for (int s = 0; s < n; s++) {
                        int64_t slot = dsv_kv_slot(L, pages, s);
                        float ks = 1.0f, acc = 0;
                        if (p->faithful) {
                                const float *ksp;
                                dsv_e4m3_row_to_f32(idx_key(&p->kv, slot, &ksp), d, kf);
                                ks = ksp[0];
                        } else {
                                memcpy(kf, idx_key(&p->kv, slot, NULL), (size_t)d * sizeof(float));
                        }
                        for (int h = 0; h < H; h++) {
                                const float *q = qf + (size_t)h * d;
                                float dot = 0;
                                OMP(simd reduction(+ : dot))
                                for (int i = 0; i < d; i++)
                                        dot += q[i] * kf[i];
                                acc += (dot > 0 ? dot : 0) * wh[h];
                        }
                        scores[s] = acc * ks;
                }
                if (sc_out) {
                        int64_t W = p->scores->ne[0];
                        for (int64_t s = 0; s < W; s++)
                                sc_out[s] = s < n ? scores[s] : -INFINITY;
                }
                dsv_topk_select(scores, n, k, out, scratch);
                for (int i = k; i < topk; i++)
                        out[i] = -1;
                free(scores);
        }
}

int dsv_cpu_indexer_topk(const struct dsv_op_indexer_topk *p) {
        const int64_t T = p->idx->ne[1];
        const int32_t *pos = p->at.tok_pos->data;
        struct idx_ctx ic = {.p = p};

        if (p->faithful != (p->kv.layout->format == DSV_KV_FP8))
                return -EINVAL;
        atomic_init(&ic.err, 0);
        dsv_par_for_dyn(T, 1, T > 1 ? T * p->n_heads * p->head_dim * (int64_t)pos[T - 1] : 0, indexer_rows, &ic);
        return atomic_load(&ic.err);
}
