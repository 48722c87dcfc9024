/* The forward pass (see model.h): plan the batch, fill the workspace's index tensors, then
 * the model as a page of layer calls.
 *
 * Per layer, for the batch's tokens (rows), with faithful rounding points in brackets:
 *   h      = RMSNorm(res [+ branch])                  res := bf16(sum)           [bf16]
 *   branch = attention(h)          MLA + lightning indexer (attention.c)
 *   h      = RMSNorm(res + branch)
 *   branch = dense SwiGLU MLP, or MoE: routed experts (fp32 sum, ascending ids) + shared
 * then logits = lm_head(RMSNorm(res + branch)) in fp32 for the rows asked for (head.c), and
 * on request the RMSNorm's rows themselves (the MTP layer's input, mtp.c runs the same block). */
#include "config.h"

#include "daemon/model/internal.h"

/* Test hook: the residual stream after a layer (fp32 sum the next norm sees). */
static int report_layer(struct fwd *F, int layer) {
        struct dsv_model *m = F->m;
        const int D = m->cfg.hidden_size;
        float *res = malloc((size_t)F->T * D * sizeof(float) * 2);
        int r;
        if (!res)
                return -ENOMEM;
        float *br = res + (size_t)F->T * D;
        if ((r = dsv_fwd_download(F, res, m->ws.res.data, (size_t)F->T * D * sizeof(float))) >= 0 &&
            (r = dsv_fwd_download(F, br, m->ws.branch.data, (size_t)F->T * D * sizeof(float))) >= 0)
                for (int t = 0; t < F->T; t++) {
                        float *x = res + (size_t)t * D;
                        for (int i = 0; i < D; i++)
                                x[i] += br[(size_t)t * D + i];
                        m->hooks.on_layer(m->hooks.ud, layer, F->p->row_seq[t], F->p->row_pos[t], x, D);
                }
        free(res);
        return r;
}

/* Test hook: the embedded rows, which the hook may change. */
static int report_embed(struct fwd *F) {
        struct ws *w = &F->m->ws;
        size_t bytes = (size_t)F->T * w->res.stride;
        float *x = malloc(bytes);
        int r;
        if (!x)
                return -ENOMEM;
        if ((r = dsv_fwd_download(F, x, w->res.data, bytes)) >= 0) {
                for (int t = 0; t < F->T; t++)
                        F->m->hooks.on_embed(F->m->hooks.ud, F->p->row_seq[t], F->p->row_pos[t],
                                             x + (size_t)t * (w->res.stride / sizeof(float)), F->m->cfg.hidden_size);
                r = dsv_fwd_upload(F, w->res.data, x, bytes);
        }
        free(x);
        return r;
}

/* Token ids, positions, sequences, cache slots, page tables and wanted rows into the
 * workspace's index tensors. Rows past the batch's (a graph bucket's padding, graphs.c)
 * repeat row 0. */
static int upload_indices(struct fwd *F) {
        const struct dsv_batch *b = F->b;
        const struct dsv_batch_plan *p = F->p;
        struct ws *w = &F->m->ws;
        const int T = F->T, n_out = MAX(p->n_out, 1), bt_cols = (int)w->block_table.ne[0];
        int32_t *host = malloc(((size_t)T * 4 + (size_t)b->n_seqs * bt_cols + (size_t)n_out) * sizeof(int32_t));
        int r;
        if (!host)
                return -ENOMEM;
        int32_t *ids = host, *pos = ids + T, *seq = pos + T, *slots = seq + T, *bt = slots + T,
                *orow = bt + (size_t)b->n_seqs * bt_cols;
        for (int t = 0; t < T; t++) {
                int i = p->perm[t < p->n_rows ? t : 0];
                const struct dsv_kv_seq *q = b->seqs[b->seq[i]];
                ids[t] = b->token[i];
                pos[t] = b->pos[i];
                seq[t] = b->seq[i];
                slots[t] = (int32_t)dsv_kv_slot(&F->kv->layout, q->pages, b->pos[i]);
        }
        for (int s = 0; s < b->n_seqs; s++)
                for (int j = 0; j < bt_cols; j++)
                        bt[(size_t)s * bt_cols + j] = j < b->seqs[s]->n_pages ? b->seqs[s]->pages[j] : 0;
        orow[0] = 0;
        for (int j = 0; j < p->n_out; j++)
                orow[j] = p->out_rows[j];
        if ((r = dsv_fwd_upload(F, w->ids.data, ids, (size_t)T * 4)) >= 0 &&
            (r = dsv_fwd_upload(F, w->pos.data, pos, (size_t)T * 4)) >= 0 &&
            (r = dsv_fwd_upload(F, w->tok_seq.data, seq, (size_t)T * 4)) >= 0 &&
            (r = dsv_fwd_upload(F, w->slots.data, slots, (size_t)T * 4)) >= 0 &&
            (r = dsv_fwd_upload(F, w->block_table.data, bt, (size_t)b->n_seqs * bt_cols * 4)) >= 0)
                r = dsv_fwd_upload(F, w->out_rows.data, orow, (size_t)n_out * 4);
        free(host);
        return r;
}

/* One transformer block on the rows of res (+ branch, the previous block's output, unless
 * first: then res alone is the input, as the reference's layer 0 and the MTP block take it). */
int dsv_fwd_block(struct fwd *F, int layer, bool first) {
        struct dsv_model *m = F->m;
        struct ws *w = &m->ws;
        const struct layer *l = &m->layers[layer];
        int r;
        if ((r = dsv_fwd_rmsnorm(F, &w->h, &w->res, first ? NULL : &w->branch, l->attn_norm)) < 0 ||
            (r = dsv_fwd_attention(F, layer)) < 0 || (r = dsv_fwd_rmsnorm(F, &w->h, &w->res, &w->branch, l->ffn_norm)) < 0 ||
            (r = l->moe ? dsv_fwd_moe(F, layer) : dsv_fwd_mlp(F, &w->branch, l->w1, l->w2, l->w3)) < 0 ||
            (m->hooks.on_layer && (r = report_layer(F, layer)) < 0))
                return r;
        return 0;
}

static int layers(struct fwd *F) {
        struct dsv_model *m = F->m;
        struct ws *w = &m->ws;
        struct dsv_op op = {.type = DSV_OP_EMBED};
        int r;

        op.embed = (struct dsv_op_embed){.out = &w->res, .table = m->embed, .ids = &w->ids};
        if ((r = dsv_fwd_run(F, &op)) < 0 || (m->hooks.on_embed && (r = report_embed(F)) < 0))
                return r;
        /* layer 0's residual is the embedding itself */
        for (int layer = 0; layer < m->cfg.num_hidden_layers; layer++)
                if ((r = dsv_fwd_block(F, layer, layer == 0)) < 0)
                        return r;
        return dsv_fwd_rmsnorm(F, &w->h, &w->res, &w->branch, m->final_norm);
}

/* The normed rows of h (what the head sees) to the caller, batch order. */
int dsv_fwd_download_hidden(struct fwd *F, float *hidden) {
        struct ws *w = &F->m->ws;
        const size_t D = (size_t)F->m->cfg.hidden_size;
        const void *tmp;
        int r;
        if ((r = dsv_fwd_fetch(F, w->h.data, (size_t)F->T * w->h.stride, &tmp)) < 0)
                return r;
        for (int t = 0; t < F->p->n_rows; t++) {
                /* the caller's row: the batch index, or where a cut batch puts it (passes.c) */
                const int i = F->p->perm[t], row = F->b->hidden_row ? F->b->hidden_row[i] : i;
                memcpy(hidden + (size_t)row * D, (const uint8_t *)tmp + (size_t)t * w->h.stride, D * sizeof(float));
        }
        return 0;
}

/* Plans the batch (into *plan, which the caller frees with dsv_batch_plan_done even on
 * failure), prepares the workspace for it and uploads its index tensors. */
int dsv_fwd_begin(struct fwd *F, struct dsv_batch_plan *plan, bool eh) {
        struct dsv_model *m = F->m;
        const struct dsv_model_config *c = &m->cfg;
        struct ws_dims d;
        int r;

        F->p = plan;
        F->f = m->numerics == DSV_NUMERICS_FAITHFUL;
        F->T = F->b->n_tokens;
        if (F->kv->layout.format != dsv_numerics_kv_format(m->numerics) || F->kv->layout.n_layers < c->num_hidden_layers)
                return dsv_error_set(F->err, EINVAL, "KV pool format does not match the model's %s numerics",
                                     dsv_numerics_name(m->numerics));
        if ((r = dsv_batch_plan_make(F->b, F->kv->layout.page_tokens, c->vocab_size, plan, F->err)) < 0)
                return r;
        F->T = dsv_graph_rows(F, eh);
        F->n_dec = plan->n_dec + (F->T - plan->n_rows);
        d = (struct ws_dims){.T = F->T, .C = plan->max_chunk_ctx, .K = c->index_topk, .ctx = plan->ctx, .n_out = plan->n_out,
                             .n_seqs = F->b->n_seqs, .max_pages = plan->max_pages, .eh = eh};
        if (m->hooks.force_dense)
                d.K = MAX(d.K, plan->ctx);
        if ((r = dsv_ws_prepare(m, &d)) < 0)
                return dsv_error_set(F->err, r, "Cannot allocate the %s workspace for %d tokens", m->be->ops->name, F->T);
        return upload_indices(F);
}

int dsv_fwd_pass(struct dsv_model *m, struct dsv_kv_pool *kv, const struct dsv_batch *b, float *logits, float *hidden,
                 struct dsv_error *err) {
        struct dsv_batch_plan plan = {0};
        struct fwd F = {.m = m, .kv = kv, .b = b, .err = err};
        int r;

        if (b->n_tokens <= 0)
                return 0;
        if ((r = dsv_fwd_begin(&F, &plan, false)) < 0 || (r = F.graph ? dsv_graph_run(&F, layers) : layers(&F)) < 0 ||
            (r = dsv_fwd_head(&F, m->lm_head, logits)) < 0 || (hidden && (r = dsv_fwd_download_hidden(&F, hidden)) < 0))
                goto out;
        for (int s = 0; s < b->n_seqs; s++)
                b->seqs[s]->len += plan.count[s];
        m->pass_stats.passes++;
        m->pass_stats.largest = MAX(m->pass_stats.largest, b->n_tokens);
        r = 0;
out:
        dsv_batch_plan_done(&plan);
        return r;
}

