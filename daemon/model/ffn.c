/* The feed-forward half of a layer: the dense SwiGLU MLP, and the MoE (router with the test
 * hooks, routed experts on this rank or split over an expert-parallel group, shared expert). */
#include "config.h"

#include <math.h>

#include "daemon/model/internal.h"
#include "kernels/moe_combine.h"

/* With tensor parallelism this rank holds a share of the intermediate dimension (w1/w3
 * rows, w2 columns; possibly none: its part is zeros): its partial output, unrounded, is
 * summed over the group and rounded once as one rank's down_proj would round it (tp.c). */
int dsv_fwd_mlp(struct fwd *F, struct dsv_tensor *out, const struct dsv_tensor *w1, const struct dsv_tensor *w2,
               const struct dsv_tensor *w3) {
        struct dsv_model *m = F->m;
        struct ws *w = &m->ws;
        const int64_t I = w1->ne[1];
        struct dsv_tensor g1 = dsv_view_cols(&w->g1, 0, I), g3 = dsv_view_cols(&w->g3, 0, I), gs = dsv_view_cols(&w->gs, 0, I);
        struct dsv_op op = {.type = DSV_OP_SWIGLU};
        int r;
        if (I == 0) {
                if ((r = m->be->ops->fill(m->be, out->data, 0, (size_t)F->T * out->stride)) < 0 || !m->tp)
                        return r;
        } else {
                op.swiglu = (struct dsv_op_swiglu){.out = &gs, .a = &g1, .b = &g3};
                if ((r = dsv_fwd_linear(F, &g1, &w->h, w1)) < 0 || (r = dsv_fwd_linear(F, &g3, &w->h, w3)) < 0 ||
                    (r = dsv_fwd_run(F, &op)) < 0)
                        return r;
                if (!m->tp)
                        return dsv_fwd_linear(F, out, &gs, w2);
                op = (struct dsv_op){.type = DSV_OP_LINEAR};
                op.linear = (struct dsv_op_linear){.out = out, .x = &gs, .w = w2, .quant_in = F->f};
                if ((r = dsv_fwd_run(F, &op)) < 0)
                        return r;
        }
        return dsv_tp_all_reduce(F, out, "an MLP's down_proj");
}

/* Expert parallelism (model.h): every rank holds every token's row (attention is replicated),
 * so there is no dispatch. This rank runs its own experts over one row per (token, slot),
 * weight 1 (exact: the row is the expert's output itself), a zero row for the slots of other
 * ranks' experts; one all-reduce gives every rank every slot's row (one contributor each:
 * x + 0 is exact), and the combine sums them as the one-rank kernel does. Per layer the group
 * moves T * k * hidden_size floats per rank (all-to-all would move only the owned rows: the
 * next step when attention is no longer replicated). */
static int moe_experts_ep(struct fwd *F, int layer) {
        struct dsv_model *m = F->m;
        struct ws *w = &m->ws;
        const struct dsv_model_config *c = &m->cfg;
        const struct layer *l = &m->layers[layer];
        const int K = c->num_experts_per_tok, E = c->n_routed_experts;
        const int64_t D = c->hidden_size, R = (int64_t)F->T * K;
        const size_t need = (size_t)R * ((size_t)D * 2 + 2) * sizeof(float);
        struct dsv_comm *ep = m->ep;
        int r;

        if (need > m->ep_bytes) {
                void *nb;
                if ((r = m->be->ops->alloc(m->be, need, &nb)) < 0)
                        return dsv_error_set(F->err, r, "Cannot allocate %zu bytes for the expert-parallel rows", need);
                if (m->ep_buf)
                        m->be->ops->dealloc(m->be, m->ep_buf, m->ep_bytes);
                m->ep_buf = nb;
                m->ep_bytes = need;
        }
        float *xs = m->ep_buf, *ys = xs + (size_t)R * D, *ws1 = ys + (size_t)R * D;
        int32_t *ids1 = (int32_t *)(ws1 + R);
        for (int t = 0; t < F->T; t++) {
                const int32_t *ids = dsv_tensor_row(&w->moe_ids, t);
                for (int j = 0; j < K; j++) {
                        const int64_t k = (int64_t)t * K + j;
                        const int e = ids[j];
                        const bool mine = e >= 0 && e < E && dsv_model_owns_expert(m, e);
                        ids1[k] = mine ? e : -1;
                        ws1[k] = 1.0f;
                        if (!mine)
                                continue;
                        memcpy(xs + (size_t)k * D, dsv_tensor_row(&w->h, t), (size_t)D * sizeof(float));
                        if (m->hooks.on_expert_row)
                                m->hooks.on_expert_row(m->hooks.ud, layer, ep->rank, F->p->row_seq[t], F->p->row_pos[t], j, e);
                }
        }
        struct dsv_tensor X = dsv_tensor_2d(DSV_F32, xs, R, D), Y = dsv_tensor_2d(DSV_F32, ys, R, D),
                          I1 = dsv_tensor_2d(DSV_I32, ids1, R, 1), W1 = dsv_tensor_2d(DSV_F32, ws1, R, 1);
        struct dsv_op op = {.type = DSV_OP_MOE_EXPERTS};
        op.moe_experts = (struct dsv_op_moe_experts){.out = &Y, .x = &X, .ids = &I1, .weights = &W1, .experts = l->experts,
                                                     .n_experts = E, .inter = c->moe_intermediate_size, .faithful = F->f};
        if ((r = dsv_fwd_run(F, &op)) < 0)
                return r;
        if ((r = dsv_comm_all_reduce(ep, ys, ys, (size_t)R * D, DSV_F32, DSV_REDUCE_SUM)) < 0)
                return dsv_error_set(F->err, r, "expert-parallel combine of layer %d on rank %d of %d: %s", layer, ep->rank,
                                     ep->size, dsv_comm_last_error(ep)[0] ? dsv_comm_last_error(ep) : strerror(-r));
        return dsv_moe_combine(w->moe_out.data, w->moe_out.stride / sizeof(float), ys, w->moe_ids.data,
                               w->moe_ids.stride / sizeof(int32_t), w->moe_w.data, w->moe_w.stride / sizeof(float), F->T, K,
                               D, E);
}

int dsv_fwd_moe(struct fwd *F, int layer) {
        struct dsv_model *m = F->m;
        struct ws *w = &m->ws;
        const struct dsv_model_config *c = &m->cfg;
        const struct dsv_model_hooks *hk = &m->hooks;
        struct layer *l = &m->layers[layer];
        const int K = c->num_experts_per_tok;
        struct dsv_op op;
        int r;
        bool forced = false;

        if (hk->force_experts) {
                /* rows the hook does not force keep their own routing (first id -1) */
                int32_t *f = malloc((size_t)F->T * K * sizeof(int32_t));
                if (!f)
                        return -ENOMEM;
                for (int t = 0; t < F->T; t++) {
                        int32_t *row = f + (size_t)t * K;
                        if (hk->force_experts(hk->ud, layer, F->p->row_seq[t], F->p->row_pos[t], row, K))
                                forced = true;
                        else
                                row[0] = -1;
                }
                r = forced ? dsv_fwd_upload(F, w->forced_ids.data, f, (size_t)F->T * K * sizeof(int32_t)) : 0;
                free(f);
                if (r < 0)
                        return r;
        }
        op = (struct dsv_op){.type = DSV_OP_MOE_GATE};
        op.moe_gate = (struct dsv_op_moe_gate){
                .ids = &w->moe_ids, .weights = &w->moe_w, .scores = (hk->want_router_scores && hk->on_experts) ? &w->rscores : NULL,
                .x = &w->h, .w = l->gate_w, .bias = l->gate_bias, .forced_ids = forced ? &w->forced_ids : NULL,
                .n_group = c->n_group, .topk_group = c->topk_group, .k = K, .route_scale = (float)c->routed_scaling_factor,
                .norm_topk_prob = c->norm_topk_prob};
        if ((r = dsv_fwd_run(F, &op)) < 0)
                return r;
        if (hk->on_experts) {
                int32_t *ids = malloc((size_t)F->T * K * sizeof(int32_t));
                float *wt = malloc((size_t)F->T * K * sizeof(float));
                float *sc = op.moe_gate.scores ? malloc((size_t)F->T * c->n_routed_experts * sizeof(float)) : NULL;
                if (!ids || !wt || (op.moe_gate.scores && !sc))
                        r = -ENOMEM;
                else if ((r = dsv_fwd_download(F, ids, w->moe_ids.data, (size_t)F->T * K * sizeof(int32_t))) >= 0 &&
                         (r = dsv_fwd_download(F, wt, w->moe_w.data, (size_t)F->T * K * sizeof(float))) >= 0 &&
                         (!sc || (r = dsv_fwd_download(F, sc, w->rscores.data, (size_t)F->T * c->n_routed_experts * sizeof(float))) >= 0))
                        for (int t = 0; t < F->T; t++)
                                hk->on_experts(hk->ud, layer, F->p->row_seq[t], F->p->row_pos[t], ids + (size_t)t * K,
                                               wt + (size_t)t * K, K, sc ? sc + (size_t)t * c->n_routed_experts : NULL,
                                               c->n_routed_experts);
                free(ids);
                free(wt);
                free(sc);
                if (r < 0)
                        return r;
        }
        if (m->ep) {
                if ((r = moe_experts_ep(F, layer)) < 0)
                        return r;
        } else {
                op = (struct dsv_op){.type = DSV_OP_MOE_EXPERTS};
                op.moe_experts = (struct dsv_op_moe_experts){.out = &w->moe_out, .x = &w->h, .ids = &w->moe_ids,
                                                             .weights = &w->moe_w, .experts = l->experts,
                                                             .n_experts = c->n_routed_experts,
                                                             .inter = c->moe_intermediate_size, .faithful = F->f};
                if ((r = dsv_fwd_run(F, &op)) < 0)
                        return r;
        }
        if (l->w1) {
                if ((r = dsv_fwd_mlp(F, &w->shared, l->w1, l->w2, l->w3)) < 0)
                        return r;
        } else if ((r = m->be->ops->fill(m->be, w->shared.data, 0, (size_t)F->T * w->shared.stride)) < 0)
                return r;
        op = (struct dsv_op){.type = DSV_OP_ADD};
        op.add = (struct dsv_op_add){.out = &w->branch, .a = &w->moe_out, .b = &w->shared};
        return dsv_fwd_run(F, &op);
}
