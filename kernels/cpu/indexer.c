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

/* Three parallel steps, so that one decoding token's scores also spread over the pool:
 * each row's query is prepared (prep), its scores are computed in chunks of positions that
 * are independent work items (score_chunks: a score's arithmetic does not depend on the
 * chunking, the thread count or the batch), then each row selects its top-k (select_rows).
 * Rows whose context fits in topk, with no scores wanted, select everything and skip the rest. */
#define IDX_CHUNK 64 /* positions per work item */
#define IDX_RUN   16 /* rows of one sequence per work item, sharing its converted keys */
/* Scores held at once (floats, 64 MB): a batch whose rows' contexts add up to more (a long
 * prefill chunk at a long context) is taken in groups of rows up to this, at least one row. */
#define IDX_SCORES_MAX ((int64_t)1 << 24)

struct idx_ctx {
        const struct dsv_op_indexer_topk *p;
        int64_t base;   /* the group's first row: work index t is the op's row base + t */
        int64_t *off;   /* row t's scores start at off[t] (off[T] in all; off[t+1] == off[t]: not scored) */
        int64_t *item;  /* work item i: rows [item[3i], item[3i+1]) of one sequence, first position item[3i+2] */
        float *scores;  /* off[T] */
        float *qf, *wh; /* per row: H*d query floats, H head weights */
        _Atomic int err;
};

static void prep_rows(void *v, int64_t t0, int64_t t1, int thread) {
        struct idx_ctx *ic = v;
        const struct dsv_op_indexer_topk *p = ic->p;
        const int H = p->n_heads, d = p->head_dim, nbh = DIV_ROUND_UP(d, DSV_QBLOCK);
        for (int64_t t = t0; t < t1; t++) {
                if (ic->off[t + 1] == ic->off[t])
                        continue;
                float *qf = ic->qf + (size_t)t * H * d, *wh = ic->wh + (size_t)t * H;
                const float *w = dsv_tensor_row(p->w, ic->base + t);
                if (p->faithful) {
                        const float *qs = dsv_tensor_row(p->q_scale, ic->base + t);
                        dsv_e4m3_row_to_f32(dsv_tensor_row(p->q, ic->base + t), (int64_t)H * d, qf);
                        for (int h = 0; h < H; h++) /* one scale per head: d <= 128 */
                                wh[h] = ((w[h] * p->w_scale1) * qs[h * nbh]) * p->w_scale2;
                } else {
                        memcpy(qf, dsv_tensor_row(p->q, ic->base + t), (size_t)H * d * sizeof(float));
                        for (int h = 0; h < H; h++)
                                wh[h] = (w[h] * p->w_scale1) * p->w_scale2;
                }
        }
}

/* Per-ISA clones (DSV_HOT): the head dots were 4-wide SSE2 in the baseline build, and a long
 * prefill's scores (every key of every earlier token) were ~1/5 of its time.
 *
 * A work item is a chunk of IDX_CHUNK positions for a run of up to IDX_RUN rows of one
 * sequence (rows that read the same keys): the chunk's keys are converted to f32 once
 * (kf[s - s0], d floats each) and each row of the run scores the positions it has. Before,
 * every row converted every key again (~1/5 of the indexer's CPU time at 512 tokens). A score is the
 * same sequence of operations on the same values whichever rows share its item, so it does
 * not depend on the runs, the chunking, the thread count or the batch. */
DSV_HOT static void score_chunks(void *v, int64_t i0, int64_t i1, int thread) {
        struct idx_ctx *ic = v;
        const struct dsv_op_indexer_topk *p = ic->p;
        const struct dsv_kv_layout *L = p->kv.layout;
        const int H = p->n_heads, d = p->head_dim;
        const int32_t *seq = p->at.tok_seq->data;
        float *kf = dsv_cpu_scratch(0, ((size_t)IDX_CHUNK * d + IDX_CHUNK) * sizeof(float));
        if (!kf) {
                atomic_store(&ic->err, -ENOMEM);
                return;
        }
        float *ksc = kf + (size_t)IDX_CHUNK * d;
        for (int64_t it = i0; it < i1; it++) {
                const int64_t ta = ic->item[3 * it], tb = ic->item[3 * it + 1], s0 = ic->item[3 * it + 2];
                const int32_t *pages = dsv_tensor_row(p->at.block_table, seq[ic->base + ta]);
                int64_t s_end = s0;
                for (int64_t t = ta; t < tb; t++)
                        s_end = MAX(s_end, MIN(s0 + IDX_CHUNK, ic->off[t + 1] - ic->off[t]));
                for (int64_t s = s0; s < s_end; s++) {
                        int64_t slot = dsv_kv_slot(L, pages, (int32_t)s);
                        float *k = kf + (size_t)(s - s0) * d;
                        if (p->faithful) {
                                const float *ksp;
                                dsv_e4m3_row_to_f32(idx_key(&p->kv, slot, &ksp), d, k);
                                ksc[s - s0] = ksp[0];
                        } else {
                                memcpy(k, idx_key(&p->kv, slot, NULL), (size_t)d * sizeof(float));
                                ksc[s - s0] = 1.0f;
                        }
                }
                for (int64_t t = ta; t < tb; t++) {
                        const int64_t s1 = MIN(s0 + IDX_CHUNK, ic->off[t + 1] - ic->off[t]);
                        const float *qf = ic->qf + (size_t)t * H * d, *wh = ic->wh + (size_t)t * H;
                        float *scores = ic->scores + ic->off[t];
                        for (int64_t s = s0; s < s1; s++) {
                                const float *k = kf + (size_t)(s - s0) * d;
                                float acc = 0;
                                for (int h = 0; h < H; h++) {
                                        const float *q = qf + (size_t)h * d;
                                        float dot = 0;
                                        OMP(simd reduction(+ : dot))
                                        for (int i = 0; i < d; i++)
                                                dot += q[i] * k[i];
                                        acc += (dot > 0 ? dot : 0) * wh[h];
                                }
                                scores[s] = acc * ksc[s - s0];
                        }
                }
        }
}

static void select_rows(void *v, int64_t t0, int64_t t1, int thread) {
        struct idx_ctx *ic = v;
        const struct dsv_op_indexer_topk *p = ic->p;
        const int topk = p->topk;
        const int32_t *pos = p->at.tok_pos->data;

        for (int64_t t = t0; t < t1; t++) {
                int32_t *out = dsv_tensor_row(p->idx, ic->base + t);
                const int n = pos[ic->base + t] + 1, k = MIN(topk, n);
                if (ic->off[t + 1] == ic->off[t]) {
                        for (int i = 0; i < n; i++)
                                out[i] = i;
                        for (int i = n; i < topk; i++)
                                out[i] = -1;
                        continue;
                }
                const float *scores = ic->scores + ic->off[t];
                if (p->scores) {
                        float *sc_out = dsv_tensor_row(p->scores, ic->base + t);
                        int64_t W = p->scores->ne[0];
                        for (int64_t s = 0; s < W; s++)
                                sc_out[s] = s < n ? scores[s] : -INFINITY;
                }
                void *scratch = dsv_cpu_scratch(0, (size_t)n * sizeof(struct scored));
                if (!scratch) {
                        atomic_store(&ic->err, -ENOMEM);
                        return;
                }
                dsv_topk_select(scores, n, k, out, scratch);
                for (int i = k; i < topk; i++)
                        out[i] = -1;
        }
}

/* Rows base .. base + T - 1 of the op, in the three steps. */
static int topk_group(const struct dsv_op_indexer_topk *p, int64_t base, int64_t T) {
        const int32_t *pos = (const int32_t *)p->at.tok_pos->data + base;
        const int H = p->n_heads, d = p->head_dim;
        struct idx_ctx ic = {.p = p, .base = base};
        int64_t n_items = 0, n_scored = 0;
        int r = -ENOMEM;

        atomic_init(&ic.err, 0);
        ic.off = malloc((size_t)(T + 1) * sizeof(int64_t));
        if (!ic.off)
                return -ENOMEM;
        ic.off[0] = 0;
        for (int64_t t = 0; t < T; t++) {
                const int64_t n = (int64_t)pos[t] + 1;
                const bool scored = n > p->topk || p->scores;
                ic.off[t + 1] = ic.off[t] + (scored ? n : 0);
                n_items += scored ? DIV_ROUND_UP(n, IDX_CHUNK) : 0; /* at most: one row a run */
                n_scored += scored;
        }
        ic.item = malloc((size_t)MAX(n_items, 1) * 3 * sizeof(int64_t));
        ic.scores = malloc((size_t)MAX(ic.off[T], 1) * sizeof(float));
        ic.qf = malloc((size_t)(n_scored ? T : 1) * ((size_t)H * d + (size_t)H) * sizeof(float));
        if (!ic.item || !ic.scores || !ic.qf)
                goto out;
        ic.wh = ic.qf + (size_t)(n_scored ? T : 1) * H * d;
        /* runs: consecutive scored rows of one sequence, up to IDX_RUN; the items of a run
         * cover the positions of its longest row */
        n_items = 0;
        for (int64_t ta = 0, tb; ta < T; ta = tb) {
                const int32_t *seq = (const int32_t *)p->at.tok_seq->data + base;
                int64_t longest = ic.off[ta + 1] - ic.off[ta];
                for (tb = ta + 1;
                     tb < T && tb - ta < IDX_RUN && seq[tb] == seq[ta] && longest > 0 && ic.off[tb + 1] > ic.off[tb];
                     tb++)
                        longest = MAX(longest, ic.off[tb + 1] - ic.off[tb]);
                for (int64_t s0 = 0; s0 < longest; s0 += IDX_CHUNK, n_items++) {
                        ic.item[3 * n_items] = ta;
                        ic.item[3 * n_items + 1] = tb;
                        ic.item[3 * n_items + 2] = s0;
                }
        }
        if (n_scored) {
                dsv_par_for(T, n_scored * H * d, prep_rows, &ic);
                dsv_par_for_dyn(n_items, 1, ic.off[T] * H * d * 2, score_chunks, &ic);
        }
        /* top-k: ~ n log k compares a row */
        dsv_par_for_dyn(T, 1, n_scored > 1 ? ic.off[T] * 8 : 0, select_rows, &ic);
        r = atomic_load(&ic.err);
out:
        free(ic.qf);
        free(ic.scores);
        free(ic.item);
        free(ic.off);
        return r;
}

int dsv_cpu_indexer_topk(const struct dsv_op_indexer_topk *p) {
        const int64_t T = p->idx->ne[1];
        const int32_t *pos = p->at.tok_pos->data;
        int r;

        if (p->faithful != (p->kv.layout->format == DSV_KV_FP8))
                return -EINVAL;
        for (int64_t t0 = 0, t1; t0 < T; t0 = t1) {
                int64_t held = (int64_t)pos[t0] + 1;
                for (t1 = t0 + 1; t1 < T && held + pos[t1] + 1 <= IDX_SCORES_MAX; t1++)
                        held += (int64_t)pos[t1] + 1;
                if ((r = topk_group(p, t0, t1 - t0)) < 0)
                        return r;
        }
        return 0;
}
