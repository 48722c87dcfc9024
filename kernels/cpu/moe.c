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

static void gate_rows(void *v, int64_t t0, int64_t t1, int thread) {
        struct gate_ctx *gc = v;
        const struct dsv_op_moe_gate *p = gc->p;
        const int64_t D = p->x->ne[0], E = p->w->ne[1];
        const int G = p->n_group, per = (int)(E / G), K = p->k;
        for (int64_t t = t0; t < t1; t++) {
                const float *x = dsv_tensor_row(p->x, t);
                float s[4096], b[4096], gs[4096];
                int rank[4096], grank[4096];
                int32_t *ids = dsv_tensor_row(p->ids, t);
                float *wt = dsv_tensor_row(p->weights, t);
                for (int64_t e = 0; e < E; e++) {
                        const void *row = dsv_tensor_row(p->w, e);
                        float acc = 0;
                        if (p->w->type == DSV_BF16) {
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

int dsv_cpu_moe_experts(const struct dsv_op_moe_experts *p) {
        const int64_t T = p->x->ne[1], D = p->x->ne[0];
        const int K = (int)p->ids->ne[0], I = p->inter;
        const bool f = p->faithful;
        int32_t *rows = malloc((size_t)T * K * sizeof(int32_t) * 2);
        float *buf = malloc(((size_t)T * D * 2 + (size_t)T * I * 3) * sizeof(float));
        int r = 0;

        if (!rows || !buf) {
                r = -ENOMEM;
                goto out;
        }
        for (int64_t t = 0; t < T; t++)
                memset(dsv_tensor_row(p->out, t), 0, (size_t)D * sizeof(float));

        float *xe = buf, *oe = xe + (size_t)T * D, *h1 = oe + (size_t)T * D, *h3 = h1 + (size_t)T * I, *g = h3 + (size_t)T * I;
        int32_t *slot = rows + (size_t)T * K;
        for (int e = 0; e < p->n_experts; e++) {
                int64_t n = 0;
                for (int64_t t = 0; t < T; t++) {
                        const int32_t *ids = dsv_tensor_row(p->ids, t);
                        for (int j = 0; j < K; j++)
                                if (ids[j] == e) {
                                        rows[n] = (int32_t)t;
                                        slot[n] = j;
                                        memcpy(xe + n * D, dsv_tensor_row(p->x, t), (size_t)D * sizeof(float));
                                        n++;
                                }
                }
                if (n == 0)
                        continue;
                const struct dsv_moe_expert_weights *ew = &p->experts[e];
                struct dsv_tensor X = dsv_tensor_2d(DSV_F32, xe, n, D), H1 = dsv_tensor_2d(DSV_F32, h1, n, I),
                                  H3 = dsv_tensor_2d(DSV_F32, h3, n, I), Gt = dsv_tensor_2d(DSV_F32, g, n, I),
                                  O = dsv_tensor_2d(DSV_F32, oe, n, D);
                struct dsv_op_linear l1 = {.out = &H1, .x = &X, .w = ew->w1, .quant_in = f, .round_out = f};
                struct dsv_op_linear l3 = {.out = &H3, .x = &X, .w = ew->w3, .quant_in = f, .round_out = f};
                struct dsv_op_swiglu sw = {.out = &Gt, .a = &H1, .b = &H3};
                struct dsv_op_linear l2 = {.out = &O, .x = &Gt, .w = ew->w2, .quant_in = f, .round_out = f};
                if ((r = dsv_cpu_linear(&l1)) < 0 || (r = dsv_cpu_linear(&l3)) < 0 || (r = dsv_cpu_swiglu(&sw, f)) < 0 ||
                    (r = dsv_cpu_linear(&l2)) < 0)
                        goto out;
                for (int64_t m = 0; m < n; m++) {
                        float *o = dsv_tensor_row(p->out, rows[m]);
                        float w = ((const float *)dsv_tensor_row(p->weights, rows[m]))[slot[m]];
                        const float *src = oe + m * D;
                        for (int64_t i = 0; i < D; i++)
                                o[i] += src[i] * w;
                }
        }
out:
        free(rows);
        free(buf);
        return r;
}
