/* MLA attention and the lightning indexer of one layer, for the rows of a forward pass:
 * projections, the KV store, the top-k selection (with the test hooks), the absorbed path
 * for decode rows and the expanded path through the FP8 wkv_b for prefill chunks. */
#include "config.h"

#include <math.h>

#include "daemon/model/internal.h"

/* Indexer selections: computed, then (tests) observed or replaced. */
static int select_topk(struct fwd *F, int layer) {
        struct dsv_model *m = F->m;
        struct ws *w = &m->ws;
        const struct dsv_model_config *c = &m->cfg;
        const struct dsv_model_hooks *hk = &m->hooks;
        int r;

        if (hk->force_dense) {
                int32_t *idx = malloc((size_t)F->T * w->d.K * sizeof(int32_t));
                if (!idx)
                        return -ENOMEM;
                for (int t = 0; t < F->T; t++)
                        for (int j = 0; j < w->d.K; j++)
                                idx[(size_t)t * w->d.K + j] = j <= F->p->row_pos[t] ? j : -1;
                r = dsv_fwd_upload(F, w->idx.data, idx, (size_t)F->T * w->d.K * sizeof(int32_t));
                free(idx);
                return r;
        }
        struct dsv_op op = {.type = DSV_OP_INDEXER_TOPK};
        op.indexer_topk = (struct dsv_op_indexer_topk){
                .idx = &w->idx, .scores = hk->want_index_scores ? &w->iscores : NULL,
                .q = F->f ? &w->iq8 : &w->iq, .q_scale = &w->iqs, .w = &w->iw,
                .kv = {&F->kv->layout, F->kv->base, layer},
                .at = {&w->tok_seq, &w->pos, &w->block_table},
                .n_heads = c->index_n_heads, .head_dim = c->index_head_dim, .topk = c->index_topk,
                .w_scale1 = 1.0f / sqrtf((float)c->index_n_heads), .w_scale2 = 1.0f / sqrtf((float)c->index_head_dim),
                .faithful = F->f};
        /* the reference's scales: python floats n ** -0.5, used in fp32 */
        op.indexer_topk.w_scale1 = (float)pow(c->index_n_heads, -0.5);
        op.indexer_topk.w_scale2 = (float)pow(c->index_head_dim, -0.5);
        if ((r = dsv_fwd_run(F, &op)) < 0)
                return r;
        if (!hk->force_topk && !hk->on_topk)
                return 0;

        size_t n = (size_t)F->T * w->d.K;
        int32_t *idx = malloc(n * sizeof(int32_t));
        float *sc = hk->want_index_scores ? malloc((size_t)F->T * w->d.ctx * sizeof(float)) : NULL;
        bool changed = false;
        if (!idx || (hk->want_index_scores && !sc)) {
                free(idx);
                free(sc);
                return -ENOMEM;
        }
        if ((r = dsv_fwd_download(F, idx, w->idx.data, n * sizeof(int32_t))) < 0 ||
            (sc && (r = dsv_fwd_download(F, sc, w->iscores.data, (size_t)F->T * w->d.ctx * sizeof(float))) < 0))
                goto out;
        for (int t = 0; t < F->T; t++) {
                int32_t *row = idx + (size_t)t * w->d.K;
                if (hk->force_topk && hk->force_topk(hk->ud, layer, F->p->row_seq[t], F->p->row_pos[t], row, c->index_topk))
                        changed = true;
                if (hk->on_topk)
                        hk->on_topk(hk->ud, layer, F->p->row_seq[t], F->p->row_pos[t], row, c->index_topk,
                                    sc ? sc + (size_t)t * w->d.ctx : NULL, F->p->row_pos[t] + 1);
        }
        if (changed)
                r = dsv_fwd_upload(F, w->idx.data, idx, n * sizeof(int32_t));
out:
        free(idx);
        free(sc);
        return r;
}

/* The columns [lo, hi) of t's rows in a share's frame (tp.c): the whole width when the
 * tensor is not split. */
static struct dsv_tensor share_cols(const struct dsv_tensor *t, const struct dsv_tp_slice *sl, bool frame) {
        if (sl->dim < 0)
                return *t;
        return frame ? dsv_view_cols(t, sl->a0, sl->a1 - sl->a0) : dsv_view_cols(t, sl->lo, sl->hi - sl->lo);
}

int dsv_fwd_attention(struct fwd *F, int layer) {
        struct dsv_model *m = F->m;
        struct ws *w = &m->ws;
        const struct dsv_model_config *c = &m->cfg;
        struct layer *l = &m->layers[layer];
        const int nope = c->qk_nope_head_dim, rope_d = c->qk_rope_head_dim;
        const int qk = nope + rope_d;
        /* this rank's heads (all of them without tensor parallelism), at their global columns
         * of the full-width q, kvb and o: a share's frame is written, its heads read */
        const int H = l->q_sl.dim < 0 ? c->num_attention_heads : (int)((l->q_sl.hi - l->q_sl.lo) / qk);
        struct dsv_tensor q_frame = share_cols(&w->q, &l->q_sl, true), q_all = share_cols(&w->q, &l->q_sl, false);
        struct dsv_tensor o_frame = share_cols(&w->o, &l->o_sl, true), o_all = share_cols(&w->o, &l->o_sl, false);
        struct dsv_tensor wkv_b_dec, wkv_b_scale;
        struct dsv_kv_ref kvr = {&F->kv->layout, F->kv->base, layer};
        struct dsv_op op;
        int r;

        /* MLA projections */
        if ((r = dsv_fwd_linear(F, &w->q_a, &w->h, l->wq_a)) < 0 || (r = dsv_fwd_rmsnorm(F, &w->qr, NULL, &w->q_a, l->q_norm)) < 0 ||
            (r = dsv_fwd_linear(F, &q_frame, &w->qr, l->wq_b)) < 0 || (r = dsv_fwd_rope(F, &q_all, H, qk, nope, true)) < 0 ||
            (r = dsv_fwd_linear(F, &w->kv_a, &w->h, l->wkv_a)) < 0)
                return r;
        struct dsv_tensor latent = dsv_view_cols(&w->kv_a, 0, c->kv_lora_rank);
        if ((r = dsv_fwd_rmsnorm(F, &w->c, NULL, &latent, l->kv_norm)) < 0 || (r = dsv_fwd_rope(F, &w->k_pe, 1, rope_d, 0, true)) < 0)
                return r;

        /* indexer projections */
        if ((r = dsv_fwd_linear(F, &w->iq, &w->qr, l->iwq_b)) < 0 ||
            (r = dsv_fwd_rope(F, &w->iq, c->index_n_heads, c->index_head_dim, 0, false)) < 0)
                return r;
        op = (struct dsv_op){.type = DSV_OP_HADAMARD};
        op.hadamard = (struct dsv_op_hadamard){.x = &w->iq, .d = c->index_head_dim};
        if ((r = dsv_fwd_run(F, &op)) < 0 || (r = dsv_fwd_linear(F, &w->ik, &w->h, l->iwk)) < 0)
                return r;
        op = (struct dsv_op){.type = DSV_OP_LAYERNORM};
        op.layernorm = (struct dsv_op_layernorm){.out = &w->ik, .x = &w->ik, .w = l->ik_norm_w, .b = l->ik_norm_b, .eps = 1e-6f};
        if ((r = dsv_fwd_run(F, &op)) < 0 || (r = dsv_fwd_rope(F, &w->ik, 1, c->index_head_dim, 0, false)) < 0)
                return r;
        op = (struct dsv_op){.type = DSV_OP_HADAMARD};
        op.hadamard = (struct dsv_op_hadamard){.x = &w->ik, .d = c->index_head_dim};
        if ((r = dsv_fwd_run(F, &op)) < 0)
                return r;
        op = (struct dsv_op){.type = DSV_OP_LINEAR};
        op.linear = (struct dsv_op_linear){.out = &w->iw, .x = &w->h, .w = l->iw_proj}; /* fp32, like x.float() */
        if ((r = dsv_fwd_run(F, &op)) < 0)
                return r;
        if (F->f) {
                op = (struct dsv_op){.type = DSV_OP_ACT_QUANT};
                op.act_quant = (struct dsv_op_act_quant){.q = &w->iq8, .s = &w->iqs, .x = &w->iq};
                if ((r = dsv_fwd_run(F, &op)) < 0)
                        return r;
        }

        /* cache, then select */
        op = (struct dsv_op){.type = DSV_OP_KV_STORE};
        op.kv_store = (struct dsv_op_kv_store){.kv = kvr, .slots = &w->slots, .latent = &w->c, .k_pe = &w->k_pe, .idx_key = &w->ik};
        if ((r = dsv_fwd_run(F, &op)) < 0 || (r = select_topk(F, layer)) < 0)
                return r;

        /* a frame wider than this rank's heads: the columns around them feed o_proj zeros */
        if (l->o_sl.dim >= 0 && (l->o_sl.a0 < l->o_sl.lo || l->o_sl.hi < l->o_sl.a1) &&
            (r = m->be->ops->fill(m->be, w->o.data, 0, (size_t)F->T * w->o.stride)) < 0)
                return r;
        /* decode rows (and a graph step's padding rows): absorbed */
        if (F->n_dec > 0) {
                struct dsv_tensor o = dsv_view_rows(&o_all, 0, F->n_dec), q = dsv_view_rows(&q_all, 0, F->n_dec),
                                  idx = dsv_view_rows(&w->idx, 0, F->n_dec), ts = dsv_view_cols(&w->tok_seq, 0, F->n_dec),
                                  tp = dsv_view_cols(&w->pos, 0, F->n_dec);
                if ((r = dsv_wkv_b_decode(l, l->wkv_b_direct, &wkv_b_dec, &wkv_b_scale)) < 0)
                        return r; /* load.c made sure it is not */
                op = (struct dsv_op){.type = DSV_OP_MLA_DECODE};
                op.mla_decode = (struct dsv_op_mla_decode){
                        .out = &o, .q = &q, .wkv_b = &wkv_b_dec, .idx = &idx, .kv = kvr, .at = {&ts, &tp, &w->block_table},
                        .n_heads = H, .nope = nope, .rope = rope_d, .v = c->v_head_dim, .kv_lora = c->kv_lora_rank,
                        .scale = m->softmax_scale, .faithful = F->f};
                if ((r = dsv_fwd_run(F, &op)) < 0)
                        return r;
        }
        /* prefill chunks: expanded through kv_b */
        for (int ch = 0; ch < F->p->n_chunks; ch++) {
                int r0 = F->p->chunk_start[ch], n = F->p->chunk_len[ch];
                int ctx = F->p->row_pos[r0 + n - 1] + 1;
                struct dsv_tensor pages = dsv_view_rows(&w->block_table, F->p->chunk_seq[ch], 1);
                struct dsv_tensor lat = dsv_view_rows(&w->lat, 0, ctx), kpe = dsv_view_rows(&w->kpe, 0, ctx),
                                  kvb = dsv_view_rows(&w->kvb, 0, ctx);
                op = (struct dsv_op){.type = DSV_OP_KV_GATHER};
                op.kv_gather = (struct dsv_op_kv_gather){.kv = kvr, .latent = &lat, .k_pe = &kpe, .pages = &pages, .n = ctx};
                struct dsv_tensor kvb_frame = share_cols(&kvb, &l->kv_sl, true), kvb_heads = share_cols(&kvb, &l->kv_sl, false);
                if ((r = dsv_fwd_run(F, &op)) < 0 || (r = dsv_fwd_linear(F, &kvb_frame, &lat, l->wkv_b)) < 0)
                        return r;
                struct dsv_tensor o = dsv_view_rows(&o_all, r0, n), q = dsv_view_rows(&q_all, r0, n), idx = dsv_view_rows(&w->idx, r0, n);
                op = (struct dsv_op){.type = DSV_OP_MLA_PREFILL};
                op.mla_prefill = (struct dsv_op_mla_prefill){.out = &o, .q = &q, .kvb = &kvb_heads, .k_pe = &kpe, .idx = &idx,
                                                             .n_heads = H, .nope = nope, .rope = rope_d, .v = c->v_head_dim,
                                                             .scale = m->softmax_scale, .faithful = F->f};
                if ((r = dsv_fwd_run(F, &op)) < 0)
                        return r;
        }
        if (l->o_sl.dim < 0)
                return dsv_fwd_linear(F, &w->branch, &w->o, l->wo);
        /* tensor parallelism: this rank's heads' part of o_proj, summed over the group (tp.c) */
        op = (struct dsv_op){.type = DSV_OP_LINEAR};
        op.linear = (struct dsv_op_linear){.out = &w->branch, .x = &o_frame, .w = l->wo, .quant_in = F->f};
        if ((r = dsv_fwd_run(F, &op)) < 0)
                return r;
        char what[48];
        snprintf(what, sizeof(what), "o_proj of layer %d", layer);
        return dsv_tp_all_reduce(F, &w->branch, what);
}
