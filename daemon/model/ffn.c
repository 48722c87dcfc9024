/* The feed-forward half of a layer: the dense SwiGLU MLP, and the MoE (router with the test
 * hooks, routed experts on this rank or split over an expert-parallel group, with every rank
 * holding every token or, under data-parallel attention, its own tokens only: then the rows
 * travel by all-to-all; shared expert). */
#include "config.h"

#include <math.h>

#include "daemon/model/internal.h"

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

/* The routed experts of slots ids [T,k] (an id < 0: not served here) over rows x [T, dim]
 * into y [T*k, dim], one row per slot, unweighted: dispatch, then the grouped op over the
 * layer's expert table. cnt, off and perm hold the dispatch (backend tensors). */
static int moe_grouped(struct fwd *F, int layer, struct dsv_tensor *y, const struct dsv_tensor *x, const struct dsv_tensor *ids,
                       struct dsv_tensor *cnt, struct dsv_tensor *off, struct dsv_tensor *perm) {
        const struct dsv_model_config *c = &F->m->cfg;
        const struct layer *l = &F->m->layers[layer];
        struct dsv_op op = {.type = DSV_OP_MOE_DISPATCH};
        int r;
        op.moe_dispatch = (struct dsv_op_moe_dispatch){.counts = cnt, .offsets = off, .perm = perm, .ids = ids,
                                                       .n_experts = c->n_routed_experts};
        if ((r = dsv_fwd_run(F, &op)) < 0)
                return r;
        op = (struct dsv_op){.type = DSV_OP_MOE_GROUPED};
        op.moe_grouped = (struct dsv_op_moe_grouped){.y = y, .x = x, .ids = ids, .counts = cnt, .offsets = off, .perm = perm,
                                                     .table = &l->expert_table, .n_experts = c->n_routed_experts,
                                                     .inter = c->moe_intermediate_size, .weight_type = l->expert_type,
                                                     .faithful = F->f};
        return dsv_fwd_run(F, &op);
}

/* out = the weighted sum of each token's slot rows y, ascending expert id (the combine op). */
static int moe_combine(struct fwd *F, struct dsv_tensor *out, const struct dsv_tensor *y) {
        struct ws *w = &F->m->ws;
        struct dsv_op op = {.type = DSV_OP_MOE_COMBINE};
        op.moe_combine = (struct dsv_op_moe_combine){.out = out, .y = y, .ids = &w->moe_ids, .weights = &w->moe_w,
                                                     .n_experts = F->m->cfg.n_routed_experts};
        return dsv_fwd_run(F, &op);
}

/* Expert parallelism (model.h): every rank holds every token's row (attention is replicated),
 * so there is no dispatch. This rank runs its own experts over its slots (the ids of other
 * ranks' experts masked to -1: zero rows); one all-reduce gives every rank every slot's row
 * (one contributor each: x + 0 is exact), and the combine op sums them as one rank does. Per
 * layer the group moves T * k * hidden_size floats per rank (all-to-all would move only the
 * owned rows: the next step when attention is no longer replicated). */
static int moe_experts_ep(struct fwd *F, int layer) {
        struct dsv_model *m = F->m;
        struct ws *w = &m->ws;
        const struct dsv_model_config *c = &m->cfg;
        const int K = c->num_experts_per_tok, E = c->n_routed_experts;
        const int64_t D = c->hidden_size, R = (int64_t)F->T * K;
        struct dsv_comm *ep = m->ep;
        int r;

        for (int t = 0; t < F->T; t++) {
                const int32_t *ids = dsv_tensor_row(&w->moe_ids, t);
                int32_t *mine_ids = dsv_tensor_row(&w->moe_ids_mine, t);
                for (int j = 0; j < K; j++) {
                        const int e = ids[j];
                        const bool mine = e >= 0 && e < E && dsv_model_owns_expert(m, e);
                        mine_ids[j] = mine ? e : -1;
                        if (mine && m->hooks.on_expert_row)
                                m->hooks.on_expert_row(m->hooks.ud, layer, ep->rank, F->p->row_seq[t], F->p->row_pos[t], j, e);
                }
        }
        if ((r = moe_grouped(F, layer, &w->moe_y, &w->h, &w->moe_ids_mine, &w->moe_cnt, &w->moe_off, &w->moe_perm)) < 0)
                return r;
        if ((r = dsv_comm_all_reduce(ep, w->moe_y.data, w->moe_y.data, (size_t)R * D, DSV_F32, DSV_REDUCE_SUM)) < 0)
                return dsv_error_set(F->err, r, "expert-parallel combine of layer %d on rank %d of %d: %s", layer, ep->rank,
                                     ep->size, dsv_comm_why(ep, r));
        return moe_combine(F, &w->moe_out, &w->moe_y);
}

/* Data-parallel attention (model.h, dsv_model_opts.dp): this rank holds its own tokens only.
 * Per MoE layer, with n ranks and rows (t, j) = token t's slot j:
 *   counts    each rank's rows per destination (the owner of the slot's expert), all-gathered
 *   dispatch  all_to_allv of the rows of h (D floats) and of their (expert, slot, seq, pos),
 *             each rank's rows to a destination in (t, j) order
 *   compute   the received rows (one slot each) through the owner's experts: dispatch and
 *             the grouped op, unweighted
 *   return    all_to_allv of the results back, the reverse counts: row for row the order sent
 *   combine   the combine op over each token's K rows, ascending expert id: one rank's bits
 * A rank with no rows (an idle pass: F->T == 0) sends nothing and still computes and returns
 * what it receives. A received row whose expert this rank does not own is a protocol error
 * (EPROTO), never computed. Host scratch: m->dp_host (the CPU backend is host memory). */
enum { DP_META = 4 }; /* expert, slot, seq, pos */

static int dp_fail(struct fwd *F, int r, int layer, const char *what) {
        struct dsv_comm *ep = F->m->ep;
        return dsv_error_set(F->err, r, "data-parallel %s of layer %d on rank %d of %d: %s", what, layer, ep->rank, ep->size,
                             dsv_comm_why(ep, r));
}

static int moe_experts_dp(struct fwd *F, int layer) {
        struct dsv_model *m = F->m;
        struct ws *w = &m->ws;
        const struct dsv_model_config *c = &m->cfg;
        const struct dsv_model_hooks *hk = &m->hooks;
        struct dsv_comm *ep = m->ep;
        const int K = c->num_experts_per_tok, E = c->n_routed_experts, n = ep->size, me = ep->rank;
        const int64_t D = c->hidden_size, R = (int64_t)F->T * K;
        /* per rank: rows sent and received, and the same in floats and in meta ints, with offsets */
        _cleanup_free_ size_t *cnt = calloc((size_t)n * 10, sizeof(size_t));
        _cleanup_free_ int32_t *all = malloc((size_t)n * n * sizeof(int32_t) + (size_t)MAX(R, 1) * sizeof(int32_t));
        int r;

        if (!cnt || !all)
                return dsv_error_set(F->err, ENOMEM, "out of memory for the data-parallel dispatch");
        size_t *s_rows = cnt, *r_rows = s_rows + n, *sf = r_rows + n, *sfo = sf + n, *rf = sfo + n, *rfo = rf + n,
               *si = rfo + n, *sio = si + n, *ri = sio + n, *rio = ri + n;
        int32_t *where = all + (size_t)n * n; /* [R] slot k's index among the rows sent, -1: none */
        int32_t mine[256] = {0};
        for (int64_t k = 0; k < R; k++) {
                const int e = ((const int32_t *)dsv_tensor_row(&w->moe_ids, k / K))[k % K];
                where[k] = e >= 0 && e < E ? dsv_expert_owner(e, E, n) : -1;
                if (where[k] >= 0)
                        s_rows[where[k]]++;
        }
        for (int p = 0; p < n; p++)
                mine[p] = (int32_t)s_rows[p];
        if ((r = dsv_comm_all_gather(ep, mine, all, (size_t)n, DSV_I32)) < 0)
                return dp_fail(F, r, layer, "dispatch counts");
        size_t Rs = 0, Rr = 0;
        for (int p = 0; p < n; p++) {
                r_rows[p] = (size_t)all[(size_t)p * n + me];
                sf[p] = s_rows[p] * D, sfo[p] = Rs * D, si[p] = s_rows[p] * DP_META, sio[p] = Rs * DP_META;
                rf[p] = r_rows[p] * D, rfo[p] = Rr * D, ri[p] = r_rows[p] * DP_META, rio[p] = Rr * DP_META;
                Rs += s_rows[p];
                Rr += r_rows[p];
        }
        /* floats: xs, yb [Rs x D], xr, yr [Rr x D], ys [R x D]; ints: meta_s, meta_r, ids_r, and the
         * dispatch of the received rows (counts [E], offsets [E+1], perm [Rr]) */
        const size_t nf = (Rs * 2 + Rr * 2 + (size_t)R) * (size_t)D, ni = (Rs + Rr) * DP_META + Rr * 2 + (size_t)E * 2 + 1;
        /* at least one line: no pointer arithmetic on NULL when nothing moves (an idle pass) */
        const size_t need = MAX(((nf + ni) * 4 + 63) / 64 * 64, (size_t)64);
        if (need > m->dp_host.bytes) {
                void *nb = aligned_alloc(64, need);
                if (!nb)
                        return dsv_error_set(F->err, ENOMEM, "Cannot allocate %zu bytes for the data-parallel rows", need);
                free(m->dp_host.p);
                m->dp_host.p = nb;
                m->dp_host.bytes = need;
        }
        float *xs = m->dp_host.p, *yb = xs + Rs * D, *xr = yb + Rs * D, *yr = xr + Rr * D, *ys = yr + Rr * D;
        int32_t *meta_s = (int32_t *)(ys + (size_t)R * D), *meta_r = meta_s + Rs * DP_META, *ids_r = meta_r + Rr * DP_META,
                *d_cnt = ids_r + Rr, *d_off = d_cnt + E, *d_perm = d_off + E + 1;
        {
                size_t at[256];
                for (int p = 0; p < n; p++)
                        at[p] = sfo[p] / (size_t)D;
                for (int64_t k = 0; k < R; k++) {
                        if (where[k] < 0)
                                continue;
                        const int64_t t = k / K;
                        const size_t i = at[where[k]]++;
                        int32_t *mt = meta_s + i * DP_META;
                        mt[0] = ((const int32_t *)dsv_tensor_row(&w->moe_ids, t))[k % K];
                        mt[1] = (int32_t)(k % K);
                        mt[2] = t < F->p->n_rows ? F->p->row_seq[t] : -1;
                        mt[3] = t < F->p->n_rows ? F->p->row_pos[t] : -1;
                        memcpy(xs + i * D, dsv_tensor_row(&w->h, t), (size_t)D * sizeof(float));
                        where[k] = (int32_t)i;
                }
        }
        if ((r = dsv_comm_all_to_allv(ep, meta_s, si, sio, meta_r, ri, rio, DSV_I32)) < 0 ||
            (r = dsv_comm_all_to_allv(ep, xs, sf, sfo, xr, rf, rfo, DSV_F32)) < 0)
                return dp_fail(F, r, layer, "dispatch");
        for (int p = 0, i = 0; p < n; p++)
                for (size_t q = 0; q < r_rows[p]; q++, i++) {
                        const int32_t *mt = meta_r + (size_t)i * DP_META;
                        if (mt[0] < 0 || mt[0] >= E || !dsv_model_owns_expert(m, mt[0]) || mt[1] < 0 || mt[1] >= K) {
                                dsv_comm_abort(ep);
                                return dsv_error_set(F->err, EPROTO,
                                                     "data-parallel dispatch of layer %d: rank %d received from rank %d a "
                                                     "row for expert %d slot %d, which it does not own",
                                                     layer, me, p, mt[0], mt[1]);
                        }
                        ids_r[i] = mt[0];
                        if (hk->on_expert_dispatch)
                                hk->on_expert_dispatch(hk->ud, layer, me, p, mt[2], mt[3], mt[1], mt[0]);
                }
        if (Rr) {
                struct dsv_tensor X = dsv_tensor_2d(DSV_F32, xr, (int64_t)Rr, D), Y = dsv_tensor_2d(DSV_F32, yr, (int64_t)Rr, D),
                                  I1 = dsv_tensor_2d(DSV_I32, ids_r, (int64_t)Rr, 1), C1 = dsv_tensor_2d(DSV_I32, d_cnt, 1, E),
                                  O1 = dsv_tensor_2d(DSV_I32, d_off, 1, E + 1), P1 = dsv_tensor_2d(DSV_I32, d_perm, 1, (int64_t)Rr);
                if ((r = moe_grouped(F, layer, &Y, &X, &I1, &C1, &O1, &P1)) < 0)
                        return r;
        }
        if ((r = dsv_comm_all_to_allv(ep, yr, rf, rfo, yb, sf, sfo, DSV_F32)) < 0)
                return dp_fail(F, r, layer, "return");
        if (F->T == 0)
                return 0;
        for (int64_t k = 0; k < R; k++) {
                if (where[k] < 0)
                        continue;
                memcpy(ys + (size_t)k * D, yb + (size_t)where[k] * D, (size_t)D * sizeof(float));
                if (hk->on_expert_return) {
                        const int32_t *mt = meta_s + (size_t)where[k] * DP_META;
                        hk->on_expert_return(hk->ud, layer, me, dsv_expert_owner(mt[0], E, n), mt[2], mt[3], mt[1], mt[0]);
                }
        }
        struct dsv_tensor Ys = dsv_tensor_2d(DSV_F32, ys, R, D);
        return moe_combine(F, &w->moe_out, &Ys);
}

int dsv_fwd_dp_idle(struct dsv_model *m, int first, int last, struct dsv_error *err) {
        struct fwd F = {.m = m, .err = err, .f = m->numerics == DSV_NUMERICS_FAITHFUL, .T = 0};
        int r;
        for (int layer = first; layer <= last; layer++)
                if (m->layers[layer].moe && (r = moe_experts_dp(&F, layer)) < 0)
                        return r;
        return 0;
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
                if ((r = m->dp ? moe_experts_dp(F, layer) : moe_experts_ep(F, layer)) < 0)
                        return r;
        } else {
                if ((r = moe_grouped(F, layer, &w->moe_y, &w->h, &w->moe_ids, &w->moe_cnt, &w->moe_off, &w->moe_perm)) < 0 ||
                    (r = moe_combine(F, &w->moe_out, &w->moe_y)) < 0)
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
