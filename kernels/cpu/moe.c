/* Mixture-of-experts routing and expert evaluation on the CPU.
 *
 * Gate (fp32), token x, experts e, groups g of E/G experts:
 *   s_e = sigmoid(x . W_e);  b_e = s_e + bias_e
 *   score_g = b_(1) + b_(2)   (the two largest b of group g)
 *   keep the topk_group best groups (ties: lower group), others' b := -inf
 *   ids = top-k experts by b (ties: lower id);  w_j = s_ids[j] / sum_j s_ids[j] * route_scale
 * (the sum runs in rank order, as the reference sums its top-k output). ids come out
 * ascending with their weights.
 *
 * Experts: out[t] = sum over t's experts in ascending id of w * expert(x[t]) in fp32,
 *   expert(x) = w2(bf16(silu(bf16(w1 x)) * bf16(w3 x)))   (faithful; act_quant before each) */
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

/* Experts run in batches of consecutive ids whose tokens fit in T rows (the workspace of
 * one dense pass): the gate and up projections of every expert of the batch in one pool job,
 * SwiGLU over all their rows, the down projections in a second job, then each token's sum
 * in ascending expert id. Each expert's weights are read once per call, whatever the number
 * of its tokens. */
int dsv_cpu_moe_experts(const struct dsv_op_moe_experts *p) {
        const int64_t T = p->x->ne[1], D = p->x->ne[0];
        const int K = (int)p->ids->ne[0], I = p->inter, E = p->n_experts;
        const bool f = p->faithful;
        int32_t *cnt = calloc((size_t)E + 1, sizeof(int32_t));
        int32_t *rows = NULL;
        float *buf = NULL;
        struct dsv_tensor *tv = malloc((size_t)E * 5 * sizeof(*tv));
        struct dsv_op_linear *lin = malloc((size_t)E * 3 * sizeof(*lin));
        const struct dsv_op_linear **ops = malloc((size_t)E * 2 * sizeof(*ops));
        int64_t cap = MAX(T, 1);
        int r = 0;

        if (!cnt || !tv || !lin || !ops) {
                r = -ENOMEM;
                goto out;
        }
        for (int64_t t = 0; t < T; t++) {
                const int32_t *ids = dsv_tensor_row(p->ids, t);
                memset(dsv_tensor_row(p->out, t), 0, (size_t)D * sizeof(float));
                for (int j = 0; j < K; j++)
                        if (ids[j] >= 0 && ids[j] < E)
                                cap = MAX(cap, ++cnt[ids[j]]); /* a forced list may repeat an expert */
        }
        rows = malloc((size_t)cap * 2 * sizeof(int32_t));
        buf = malloc(((size_t)cap * (size_t)D * 2 + (size_t)cap * (size_t)I * 3) * sizeof(float));
        if (!rows || !buf) {
                r = -ENOMEM;
                goto out;
        }
        float *xe = buf, *oe = xe + (size_t)cap * D, *h1 = oe + (size_t)cap * D, *h3 = h1 + (size_t)cap * I, *g = h3 + (size_t)cap * I;
        int32_t *slot = rows + cap;
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
                        for (int64_t t = 0; t < T; t++) {
                                const int32_t *ids = dsv_tensor_row(p->ids, t);
                                for (int j = 0; j < K; j++)
                                        if (ids[j] == e) {
                                                rows[m] = (int32_t)t;
                                                slot[m] = j;
                                                memcpy(xe + m * D, dsv_tensor_row(p->x, t), (size_t)D * sizeof(float));
                                                m++;
                                        }
                        }
                        const struct dsv_moe_expert_weights *ew = &p->experts[e];
                        struct dsv_tensor *X = &tv[5 * nb], *H1 = X + 1, *H3 = X + 2, *G = X + 3, *O = X + 4;
                        *X = dsv_tensor_2d(DSV_F32, xe + r0 * D, cnt[e], D);
                        *H1 = dsv_tensor_2d(DSV_F32, h1 + r0 * I, cnt[e], I);
                        *H3 = dsv_tensor_2d(DSV_F32, h3 + r0 * I, cnt[e], I);
                        *G = dsv_tensor_2d(DSV_F32, g + r0 * I, cnt[e], I);
                        *O = dsv_tensor_2d(DSV_F32, oe + r0 * D, cnt[e], D);
                        lin[3 * nb] = (struct dsv_op_linear){.out = H1, .x = X, .w = ew->w1, .quant_in = f, .round_out = f};
                        lin[3 * nb + 1] = (struct dsv_op_linear){.out = H3, .x = X, .w = ew->w3, .quant_in = f, .round_out = f};
                        lin[3 * nb + 2] = (struct dsv_op_linear){.out = O, .x = G, .w = ew->w2, .quant_in = f, .round_out = f};
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
                /* rows are grouped by ascending expert: each token's sum runs in ascending id */
                for (int64_t k = 0; k < m; k++) {
                        float *o = dsv_tensor_row(p->out, rows[k]);
                        float w = ((const float *)dsv_tensor_row(p->weights, rows[k]))[slot[k]];
                        const float *src = oe + k * D;
                        for (int64_t i = 0; i < D; i++)
                                o[i] += src[i] * w;
                }
        }
out:
        free(cnt);
        free(rows);
        free(buf);
        free(tv);
        free(lin);
        free(ops);
        return r;
}
