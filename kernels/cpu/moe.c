/* Mixture-of-experts routing, dispatch, grouped expert evaluation and combine on the CPU.
 *
 * Gate (fp32), token x, experts e, groups g of E/G experts:
 *   s_e = sigmoid(x . W_e);  b_e = s_e + bias_e
 *   score_g = b_(1) + b_(2)   (the two largest b of group g)
 *   keep the topk_group best groups (ties: lower group), others' b := -inf
 *   ids = top-k experts by b (ties: lower id);  w_j = s_ids[j] / sum_j s_ids[j] * route_scale
 * (the sum runs in rank order, as the reference sums its top-k output). ids come out
 * ascending with their weights.
 *
 * Dispatch: each expert's slots t*k + j, ascending; counts, offsets, the permutation.
 * Grouped: y[slot] = expert(x[t]) for every dispatched slot, the weights read through the
 *   expert table (kernels/backend.h), a zero row for slots of no expert here;
 *   expert(x) = w2(bf16(silu(bf16(w1 x)) * bf16(w3 x)))   (faithful; act_quant before each)
 * Combine: out[t] = sum over t's slots in ascending (id, slot) of w * y[slot] in fp32. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "kernels/cpu/cpu.h"

static inline bool better(float a, int ia, float b, int ib) { return a > b || (a == b && ia < ib); }

/* indices of the k best of v[0..n) in rank order (best first); n is small (experts, groups) */
static void rank_topk(const float *v, int n, int k, int *out) {
        for (int j = 0; j < k; j++) {
                int best = -1;
                for (int i = 0; i < n; i++) {
                        bool taken = false;
                        for (int m = 0; m < j; m++)
                                taken |= out[m] == i;
                        if (taken)
                                continue;
                        float vi = v[i] != v[i] ? -INFINITY : v[i];
                        if (best < 0 || better(vi, i, v[best] != v[best] ? -INFINITY : v[best], best))
                                best = i;
                }
                out[j] = best;
        }
}

struct gate_ctx {
        const struct dsv_op_moe_gate *p;
        _Atomic int err;
};

#define GATE_EB 16 /* experts per block of transposed weights: one vector of lanes */
#define GATE_TT 4  /* tokens per pass over a block */

/* BF16 gate logits of tokens [t0, t1), every expert: acc[t][e] = sum over i in order of
 * x[t][i] * w[e][i], each product and sum rounded on its own: the scalar loop's bits, with
 * 16 experts in the lanes of a vector instead of one at a time. The weights of 16 experts
 * are transposed into wt[i][16] (f32, exact) once per call and reused by every token. */
DSV_HOT static void gate_logits_bf16(const struct dsv_op_moe_gate *p, int64_t t0, int64_t t1, float *wt, float *acc_out) {
        const int64_t D = p->x->ne[0], E = p->w->ne[1];
        for (int64_t e0 = 0; e0 < E; e0 += GATE_EB) {
                const int ne = (int)MIN(GATE_EB, E - e0);
                for (int j = 0; j < GATE_EB; j++) {
                        const uint16_t *row = j < ne ? dsv_tensor_row(p->w, e0 + j) : NULL;
                        for (int64_t i = 0; i < D; i++)
                                wt[i * GATE_EB + j] = row ? dsv_bf16_to_f32(row[i]) : 0.0f;
                }
                if (t1 - t0 == 1) { /* decode: one token, the same sums without the 3 idle ones */
                        const float *x = dsv_tensor_row(p->x, t0);
                        float acc[GATE_EB] = {0};
                        for (int64_t i = 0; i < D; i++) {
                                const float xi = x[i], *w = wt + i * GATE_EB;
                                OMP(simd)
                                for (int j = 0; j < GATE_EB; j++)
                                        acc[j] += xi * w[j];
                        }
                        memcpy(acc_out + e0, acc, (size_t)ne * sizeof(float));
                        continue;
                }
                for (int64_t t = t0; t < t1; t += GATE_TT) {
                        const int nt = (int)MIN(GATE_TT, t1 - t);
                        const float *x[GATE_TT];
                        float acc[GATE_TT][GATE_EB] = {{0}};
                        for (int u = 0; u < GATE_TT; u++)
                                x[u] = dsv_tensor_row(p->x, t + (u < nt ? u : 0));
                        for (int64_t i = 0; i < D; i++) {
                                const float *w = wt + i * GATE_EB;
                                for (int u = 0; u < GATE_TT; u++) {
                                        const float xi = x[u][i];
                                        OMP(simd)
                                        for (int j = 0; j < GATE_EB; j++)
                                                acc[u][j] += xi * w[j];
                                }
                        }
                        for (int u = 0; u < nt; u++)
                                memcpy(acc_out + (t + u - t0) * E + e0, acc[u], (size_t)ne * sizeof(float));
                }
        }
}

static void gate_rows(void *v, int64_t t0, int64_t t1, int thread) {
        struct gate_ctx *gc = v;
        const struct dsv_op_moe_gate *p = gc->p;
        const int64_t D = p->x->ne[0], E = p->w->ne[1];
        const int G = p->n_group, per = (int)(E / G), K = p->k;
        /* BF16 logits of every token first, 16 experts at a time (scratch slot 3, the linear's
         * prep slot: never in use while a gate runs); also for one token (decode), where the
         * scalar loop below is one chain of E * D dependent additions (~4x slower) */
        float *logit = NULL;
        if (p->w->type == DSV_BF16 && t1 - t0 >= 1) {
                float *wt = dsv_cpu_scratch(3, ((size_t)D * GATE_EB + (size_t)(t1 - t0) * (size_t)E) * sizeof(float));
                if (wt) {
                        logit = wt + (size_t)D * GATE_EB;
                        gate_logits_bf16(p, t0, t1, wt, logit);
                }
        }
        for (int64_t t = t0; t < t1; t++) {
                const float *x = dsv_tensor_row(p->x, t);
                float s[4096], b[4096], gs[4096];
                int rank[4096], grank[4096];
                int32_t *ids = dsv_tensor_row(p->ids, t);
                float *wt = dsv_tensor_row(p->weights, t);
                for (int64_t e = 0; e < E; e++) {
                        const void *row = dsv_tensor_row(p->w, e);
                        float acc = 0;
                        if (logit) {
                                acc = logit[(t - t0) * E + e];
                        } else if (p->w->type == DSV_BF16) {
                                for (int64_t i = 0; i < D; i++)
                                        acc += x[i] * dsv_bf16_to_f32(((const uint16_t *)row)[i]);
                        } else {
                                const float *wr = row;
                                OMP(simd reduction(+ : acc))
                                for (int64_t i = 0; i < D; i++)
                                        acc += x[i] * wr[i];
                        }
                        s[e] = 1.0f / (1.0f + expf(-acc));
                        b[e] = s[e] + (p->bias ? dsv_load_f(p->bias->data, p->bias->type, e) : 0.0f);
                }
                if (p->scores)
                        memcpy(dsv_tensor_row(p->scores, t), b, (size_t)E * sizeof(float));
                const int32_t *f = p->forced_ids ? dsv_tensor_row(p->forced_ids, t) : NULL;
                if (f && f[0] >= 0) {
                        bool ok = true;
                        for (int j = 0; j < K; j++) {
                                ok &= f[j] >= 0 && f[j] < E;
                                rank[j] = ok ? f[j] : 0;
                        }
                        if (!ok) {
                                atomic_store(&gc->err, -EINVAL);
                                continue;
                        }
                } else {
                        if (G > 1) {
                                for (int g = 0; g < G; g++) {
                                        int two[2];
                                        rank_topk(b + g * per, per, 2, two);
                                        gs[g] = b[g * per + two[0]] + b[g * per + two[1]];
                                }
                                rank_topk(gs, G, p->topk_group, grank);
                                for (int g = 0; g < G; g++) {
                                        bool keep = false;
                                        for (int m = 0; m < p->topk_group; m++)
                                                keep |= grank[m] == g;
                                        if (!keep)
                                                for (int i = 0; i < per; i++)
                                                        b[g * per + i] = -INFINITY;
                                }
                        }
                        rank_topk(b, (int)E, K, rank);
                }
                float sum = 0;
                for (int j = 0; j < K; j++)
                        sum += s[rank[j]];
                /* ascending ids, weights alongside (insertion sort, K is small) */
                for (int j = 0; j < K; j++) {
                        int e = rank[j], m = j;
                        float w = p->norm_topk_prob ? s[e] / sum : s[e];
                        w *= p->route_scale;
                        while (m > 0 && ids[m - 1] > e) {
                                ids[m] = ids[m - 1];
                                wt[m] = wt[m - 1];
                                m--;
                        }
                        ids[m] = e;
                        wt[m] = w;
                }
        }
}

int dsv_cpu_moe_gate(const struct dsv_op_moe_gate *p) {
        const int64_t T = p->x->ne[1], D = p->x->ne[0], E = p->w->ne[1];
        const int G = p->n_group, K = p->k;
        struct gate_ctx gc = {.p = p};

        if (E > 4096 || G <= 0 || E % G || K > E || p->topk_group > G)
                return -EINVAL;
        atomic_init(&gc.err, 0);
        dsv_par_for(T, T * E * D, gate_rows, &gc);
        return atomic_load(&gc.err);
}

/* ------------------------------------------------------------------ dispatch */
int dsv_cpu_moe_dispatch(const struct dsv_op_moe_dispatch *p) {
        const int E = p->n_experts;
        if (!p->ids || !p->counts || !p->offsets || !p->perm || p->ids->type != DSV_I32 || E < 1)
                return -EINVAL;
        const int64_t T = p->ids->ne[1], K = p->ids->ne[0], R = T * K;
        if (p->counts->ne[0] * p->counts->ne[1] < E || p->offsets->ne[0] * p->offsets->ne[1] < E + 1 ||
            p->perm->ne[0] * p->perm->ne[1] < R || R > INT32_MAX)
                return -EINVAL;
        for (int64_t t = 0; t < T; t++) {
                const int32_t *ids = dsv_tensor_row(p->ids, t);
                for (int64_t j = 0; j < K; j++)
                        if (ids[j] >= E)
                                return -EINVAL;
        }
        int32_t *cnt = p->counts->data, *off = p->offsets->data, *perm = p->perm->data;
        memset(cnt, 0, (size_t)E * sizeof(int32_t));
        for (int64_t t = 0; t < T; t++) {
                const int32_t *ids = dsv_tensor_row(p->ids, t);
                for (int64_t j = 0; j < K; j++)
                        if (ids[j] >= 0)
                                cnt[ids[j]]++;
        }
        off[0] = 0;
        for (int e = 0; e < E; e++)
                off[e + 1] = off[e] + cnt[e];
        /* counts serve as each expert's cursor, ending where they began */
        memset(cnt, 0, (size_t)E * sizeof(int32_t));
        for (int64_t t = 0; t < T; t++) {
                const int32_t *ids = dsv_tensor_row(p->ids, t);
                for (int64_t j = 0; j < K; j++)
                        if (ids[j] >= 0)
                                perm[off[ids[j]] + cnt[ids[j]]++] = (int32_t)(t * K + j);
        }
        for (int64_t i = off[E]; i < R; i++)
                perm[i] = -1;
        return 0;
}

/* ------------------------------------------------------------------ grouped experts */
/* A view of one weight of the table (host memory on the CPU backend). */
static void weight_view(const struct dsv_moe_weight *w, struct dsv_tensor *t, struct dsv_tensor *s) {
        *t = (struct dsv_tensor){.type = (enum dsv_dtype)w->type, .ne = {w->cols, w->rows}, .stride = (size_t)w->stride,
                                 .data = (void *)(uintptr_t)w->data};
        if (w->type == DSV_F8_E4M3) {
                *s = (struct dsv_tensor){.type = DSV_F32, .ne = {(w->cols + 127) / 128, (w->rows + 127) / 128},
                                         .stride = (size_t)w->scale_stride, .data = (void *)(uintptr_t)w->scale};
                t->scale = s;
        }
}

static bool weight_ok(const struct dsv_moe_weight *w, enum dsv_dtype type, int64_t rows, int64_t cols) {
        return w->type == (int32_t)type && w->rows == rows && w->cols == cols &&
               w->stride >= (uint64_t)cols * dsv_dtype_size(type) && (type != DSV_F8_E4M3 || (w->scale && w->scale_stride));
}

/* Every input checked before anything is written: the counts and offsets agree with each
 * other and with the ids, perm lists each dispatched slot once, and every active expert is
 * present in the table with weights of the op's type and shapes. */
static int grouped_check(const struct dsv_op_moe_grouped *p, int64_t T, int64_t K, int64_t D, int64_t *max_count) {
        const int E = p->n_experts, I = p->inter;
        const int32_t *cnt = p->counts->data, *off = p->offsets->data, *perm = p->perm->data;
        const struct dsv_moe_expert *tab = p->table->data;
        const int64_t R = T * K;
        int64_t routed = 0, mc = 0;
        if (off[0] != 0)
                return -EINVAL;
        for (int e = 0; e < E; e++) {
                if (cnt[e] < 0 || off[e + 1] != off[e] + cnt[e])
                        return -EINVAL;
                mc = MAX(mc, cnt[e]);
        }
        for (int64_t t = 0; t < T; t++) {
                const int32_t *ids = dsv_tensor_row(p->ids, t);
                for (int64_t j = 0; j < K; j++) {
                        if (ids[j] >= E)
                                return -EINVAL;
                        routed += ids[j] >= 0;
                }
        }
        if (off[E] != routed || routed > R)
                return -EINVAL;
        for (int e = 0; e < E; e++)
                for (int32_t i = off[e]; i < off[e + 1]; i++) {
                        const int32_t s = perm[i];
                        if (s < 0 || s >= R || ((const int32_t *)dsv_tensor_row(p->ids, s / K))[s % K] != e)
                                return -EINVAL;
                }
        for (int e = 0; e < E; e++) {
                if (cnt[e] == 0)
                        continue;
                const struct dsv_moe_expert *x = &tab[e];
                if (!x->w1.data || !x->w3.data || !x->w2.data)
                        return -EPROTO; /* another rank's expert */
                if (!weight_ok(&x->w1, p->weight_type, I, D) || !weight_ok(&x->w3, p->weight_type, I, D) ||
                    !weight_ok(&x->w2, p->weight_type, D, I))
                        return -EINVAL;
        }
        *max_count = mc;
        return 0;
}

/* Experts run in batches of consecutive ids whose rows fit in T rows (the workspace of
 * one dense pass): the gate and up projections of every expert of the batch in one pool job,
 * SwiGLU over all their rows, the down projections in a second job, then each row to its
 * slot of y. Each expert's weights are read once per call, whatever the number of its rows. */
int dsv_cpu_moe_grouped(const struct dsv_op_moe_grouped *p) {
        if (!p->y || !p->x || !p->ids || !p->counts || !p->offsets || !p->perm || !p->table || p->n_experts < 1 ||
            p->inter < 1 || p->x->type != DSV_F32 || p->y->type != DSV_F32 || p->ids->type != DSV_I32)
                return -EINVAL;
        const int64_t T = p->x->ne[1], D = p->x->ne[0], K = p->ids->ne[0], R = T * K;
        const int I = p->inter, E = p->n_experts;
        const bool f = p->faithful;
        if (p->ids->ne[1] != T || p->y->ne[1] != R || p->y->ne[0] != D || p->counts->ne[0] * p->counts->ne[1] < E ||
            p->offsets->ne[0] * p->offsets->ne[1] < E + 1 || p->perm->ne[0] * p->perm->ne[1] < R || p->table->ne[1] < E ||
            p->table->ne[0] < (int64_t)sizeof(struct dsv_moe_expert) || R > INT32_MAX)
                return -EINVAL;
        int64_t cap = 0;
        int r = grouped_check(p, T, K, D, &cap);
        if (r < 0)
                return r;
        const int32_t *cnt = p->counts->data, *off = p->offsets->data, *perm = p->perm->data;
        const struct dsv_moe_expert *tab = p->table->data;
        cap = MAX(cap, MAX(T, 1));
        int32_t *rows = malloc((size_t)cap * sizeof(int32_t));
        float *buf = malloc(((size_t)cap * (size_t)D * 2 + (size_t)cap * (size_t)I * 3) * sizeof(float));
        struct dsv_tensor *tv = malloc((size_t)E * 11 * sizeof(*tv));
        struct dsv_op_linear *lin = malloc((size_t)E * 3 * sizeof(*lin));
        const struct dsv_op_linear **ops = malloc((size_t)E * 2 * sizeof(*ops));

        if (!rows || !buf || !tv || !lin || !ops) {
                r = -ENOMEM;
                goto out;
        }
        /* slots no expert of this op serves: a zero row */
        for (int64_t k = 0; k < R; k++)
                if (((const int32_t *)dsv_tensor_row(p->ids, k / K))[k % K] < 0)
                        memset(dsv_tensor_row(p->y, k), 0, (size_t)D * sizeof(float));
        float *xe = buf, *oe = xe + (size_t)cap * D, *h1 = oe + (size_t)cap * D, *h3 = h1 + (size_t)cap * I, *g = h3 + (size_t)cap * I;
        for (int e0 = 0; e0 < E;) {
                /* the batch [e0, e1): consecutive experts whose rows fit */
                int e1 = e0;
                int64_t n = 0;
                while (e1 < E && n + cnt[e1] <= cap)
                        n += cnt[e1++];
                int nb = 0;
                int64_t m = 0;
                for (int e = e0; e < e1; e++) {
                        if (cnt[e] == 0)
                                continue;
                        const int64_t r0 = m;
                        for (int32_t i = off[e]; i < off[e + 1]; i++, m++) {
                                rows[m] = perm[i];
                                memcpy(xe + m * D, dsv_tensor_row(p->x, perm[i] / K), (size_t)D * sizeof(float));
                        }
                        struct dsv_tensor *X = &tv[11 * nb], *H1 = X + 1, *H3 = X + 2, *G = X + 3, *O = X + 4, *W = X + 5;
                        *X = dsv_tensor_2d(DSV_F32, xe + r0 * D, cnt[e], D);
                        *H1 = dsv_tensor_2d(DSV_F32, h1 + r0 * I, cnt[e], I);
                        *H3 = dsv_tensor_2d(DSV_F32, h3 + r0 * I, cnt[e], I);
                        *G = dsv_tensor_2d(DSV_F32, g + r0 * I, cnt[e], I);
                        *O = dsv_tensor_2d(DSV_F32, oe + r0 * D, cnt[e], D);
                        weight_view(&tab[e].w1, &W[0], &W[3]);
                        weight_view(&tab[e].w3, &W[1], &W[4]);
                        weight_view(&tab[e].w2, &W[2], &W[5]);
                        lin[3 * nb] = (struct dsv_op_linear){.out = H1, .x = X, .w = &W[0], .quant_in = f, .round_out = f};
                        lin[3 * nb + 1] = (struct dsv_op_linear){.out = H3, .x = X, .w = &W[1], .quant_in = f, .round_out = f};
                        lin[3 * nb + 2] = (struct dsv_op_linear){.out = O, .x = G, .w = &W[2], .quant_in = f, .round_out = f};
                        nb++;
                }
                e0 = e1;
                if (nb == 0)
                        continue;
                for (int i = 0; i < nb; i++) {
                        ops[2 * i] = &lin[3 * i];
                        ops[2 * i + 1] = &lin[3 * i + 1];
                }
                struct dsv_tensor A = dsv_tensor_2d(DSV_F32, h1, m, I), B = dsv_tensor_2d(DSV_F32, h3, m, I), Gt = dsv_tensor_2d(DSV_F32, g, m, I);
                struct dsv_op_swiglu sw = {.out = &Gt, .a = &A, .b = &B};
                if ((r = dsv_cpu_linear_multi(ops, 2 * nb)) < 0 || (r = dsv_cpu_swiglu(&sw, f)) < 0)
                        goto out;
                for (int i = 0; i < nb; i++)
                        ops[i] = &lin[3 * i + 2];
                if ((r = dsv_cpu_linear_multi(ops, nb)) < 0)
                        goto out;
                for (int64_t k = 0; k < m; k++)
                        memcpy(dsv_tensor_row(p->y, rows[k]), oe + k * D, (size_t)D * sizeof(float));
        }
out:
        free(rows);
        free(buf);
        free(tv);
        free(lin);
        free(ops);
        return r;
}

/* ------------------------------------------------------------------ combine */
struct combine_ctx {
        const struct dsv_op_moe_combine *p;
        int64_t K, D;
};

static void combine_rows(void *v, int64_t t0, int64_t t1, int thread) {
        const struct combine_ctx *cc = v;
        const struct dsv_op_moe_combine *p = cc->p;
        const int64_t K = cc->K, D = cc->D;
        (void)thread;
        for (int64_t t = t0; t < t1; t++) {
                const int32_t *id = dsv_tensor_row(p->ids, t);
                const float *wt = dsv_tensor_row(p->weights, t);
                float *o = dsv_tensor_row(p->out, t);
                int order[64], n = 0;
                /* the valid slots sorted by (id, slot): insertion keeps slot order among equals */
                for (int j = 0; j < K; j++) {
                        if (id[j] < 0)
                                continue;
                        int i = n++;
                        while (i > 0 && id[order[i - 1]] > id[j]) {
                                order[i] = order[i - 1];
                                i--;
                        }
                        order[i] = j;
                }
                memset(o, 0, (size_t)D * sizeof(float));
                for (int k = 0; k < n; k++) {
                        const float *src = dsv_tensor_row(p->y, t * K + order[k]);
                        const float s = wt[order[k]];
                        for (int64_t i = 0; i < D; i++)
                                o[i] += src[i] * s;
                }
        }
}

int dsv_cpu_moe_combine(const struct dsv_op_moe_combine *p) {
        if (!p->out || !p->y || !p->ids || !p->weights || p->out->type != DSV_F32 || p->y->type != DSV_F32 ||
            p->ids->type != DSV_I32 || p->weights->type != DSV_F32)
                return -EINVAL;
        const int64_t T = p->out->ne[1], D = p->out->ne[0], K = p->ids->ne[0];
        if (K < 1 || K > 64 || p->ids->ne[1] != T || p->weights->ne[1] != T || p->weights->ne[0] != K || p->y->ne[1] != T * K ||
            p->y->ne[0] != D)
                return -EINVAL;
        for (int64_t t = 0; t < T; t++) {
                const int32_t *id = dsv_tensor_row(p->ids, t);
                for (int64_t j = 0; j < K; j++)
                        if (id[j] >= p->n_experts)
                                return -EINVAL;
        }
        struct combine_ctx cc = {.p = p, .K = K, .D = D};
        dsv_par_for(T, T * K * D, combine_rows, &cc);
        return 0;
}

/* supports_op of the three: the tensors there with the types the code above takes (their
 * shapes are checked by the ops, which answer -EINVAL). */
bool dsv_cpu_moe_ok(const struct dsv_op *op) {
        const struct dsv_op_moe_dispatch *d = &op->moe_dispatch;
        const struct dsv_op_moe_grouped *g = &op->moe_grouped;
        const struct dsv_op_moe_combine *c = &op->moe_combine;
        switch (op->type) {
        case DSV_OP_MOE_DISPATCH:
                return d->ids && d->ids->type == DSV_I32 && d->counts && d->offsets && d->perm && d->n_experts >= 1;
        case DSV_OP_MOE_GROUPED:
                return g->y && g->y->type == DSV_F32 && g->x && g->x->type == DSV_F32 && g->ids && g->counts && g->offsets &&
                       g->perm && g->table && g->n_experts >= 1 && g->inter >= 1 &&
                       (g->weight_type == DSV_F8_E4M3 || g->weight_type == DSV_BF16 || g->weight_type == DSV_F32);
        case DSV_OP_MOE_COMBINE:
                return c->out && c->out->type == DSV_F32 && c->y && c->y->type == DSV_F32 && c->ids && c->weights &&
                       c->weights->type == DSV_F32;
        default:
                return false;
        }
}
