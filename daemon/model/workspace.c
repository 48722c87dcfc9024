/* The activation workspace (see internal.h). Every size of a call is rounded up to a bucket
 * (a power of two, with a floor) and the buffers are carved for the bucket, so the address
 * of every tensor depends only on the bucket: the decode steps of a running batch see the
 * same addresses step after step (what a captured CUDA graph needs), and the buffer grows
 * only when a bigger bucket comes. Tensors carry the call's actual row counts. */
#include "config.h"

#include "daemon/model/internal.h"

static int bucket(int n, int floor) {
        int b = floor;
        while (b < n && b < (1 << 30))
                b *= 2;
        return MAX(b, n);
}

struct carve {
        uint8_t *base;
        size_t off;
};

/* A tensor of rows x cols (row stride from cols) at the next 64-byte boundary, with room
 * for alloc_rows rows. */
static void carve(struct carve *c, struct dsv_tensor *t, enum dsv_dtype type, int64_t rows, int64_t alloc_rows, int64_t cols) {
        c->off = ALIGN_UP(c->off, 64);
        *t = dsv_tensor_2d(type, c->base ? c->base + c->off : NULL, rows, cols);
        c->off += (size_t)MAX(MAX(alloc_rows, rows), 1) * t->stride;
}

static void layout(struct dsv_model *m, struct ws *w, uint8_t *base, size_t *bytes) {
        const struct dsv_model_config *c = &m->cfg;
        const struct ws_dims *d = &w->d, *B = &w->bucket;
        const int T = d->T, BT = B->T, H = c->num_attention_heads;
        const int C = MAX(d->C, 1), BC = MAX(B->C, 1);
        const int inter = MAX(c->intermediate_size, c->n_shared_experts * c->moe_intermediate_size);
        const int n_out = MAX(d->n_out, 1), Bn_out = MAX(B->n_out, 1);
        const bool scores = m->hooks.want_index_scores;
        struct carve cv = {base, 0};

        carve(&cv, &w->ids, DSV_I32, 1, 1, BT);
        w->ids.ne[0] = T;
        carve(&cv, &w->pos, DSV_I32, 1, 1, BT);
        w->pos.ne[0] = T;
        carve(&cv, &w->tok_seq, DSV_I32, 1, 1, BT);
        w->tok_seq.ne[0] = T;
        carve(&cv, &w->slots, DSV_I32, 1, 1, BT);
        w->slots.ne[0] = T;
        /* the page table is as wide as the bucket (padded with page 0): a fixed stride */
        carve(&cv, &w->block_table, DSV_I32, d->n_seqs, B->n_seqs, B->max_pages);
        carve(&cv, &w->out_rows, DSV_I32, 1, 1, Bn_out);
        w->out_rows.ne[0] = n_out;
        carve(&cv, &w->res, DSV_F32, T, BT, c->hidden_size);
        carve(&cv, &w->h, DSV_F32, T, BT, c->hidden_size);
        carve(&cv, &w->branch, DSV_F32, T, BT, c->hidden_size);
        carve(&cv, &w->q_a, DSV_F32, T, BT, c->q_lora_rank);
        carve(&cv, &w->qr, DSV_F32, T, BT, c->q_lora_rank);
        carve(&cv, &w->q, DSV_F32, T, BT, (int64_t)H * dsv_cfg_qk_head_dim(c));
        carve(&cv, &w->kv_a, DSV_F32, T, BT, c->kv_lora_rank + c->qk_rope_head_dim);
        carve(&cv, &w->c, DSV_F32, T, BT, c->kv_lora_rank);
        carve(&cv, &w->iq, DSV_F32, T, BT, (int64_t)c->index_n_heads * c->index_head_dim);
        carve(&cv, &w->ik, DSV_F32, T, BT, c->index_head_dim);
        carve(&cv, &w->iw, DSV_F32, T, BT, c->index_n_heads);
        carve(&cv, &w->iq8, DSV_U8, T, BT, (int64_t)c->index_n_heads * c->index_head_dim);
        carve(&cv, &w->iqs, DSV_F32, T, BT, (int64_t)c->index_n_heads * DIV_ROUND_UP(c->index_head_dim, 128));
        /* K is index_topk except in force-dense tests, where it follows the context */
        cv.off = ALIGN_UP(cv.off, 64);
        w->idx = dsv_tensor_2d(DSV_I32, base ? base + cv.off : NULL, T, d->K);
        cv.off += (size_t)BT * (size_t)MAX(d->K, B->K) * sizeof(int32_t);
        carve(&cv, &w->o, DSV_F32, T, BT, (int64_t)H * c->v_head_dim);
        carve(&cv, &w->lat, DSV_F32, C, BC, c->kv_lora_rank);
        carve(&cv, &w->kpe, DSV_F32, C, BC, c->qk_rope_head_dim);
        carve(&cv, &w->kvb, DSV_F32, C, BC, (int64_t)H * (c->qk_nope_head_dim + c->v_head_dim));
        /* the routed experts' slot rows y [T*k, hidden] share the bytes of g1, g3 and gs: those
         * hold the dense MLP's and the shared expert's intermediates, which are made after the
         * combine has read y (ffn.c), never while y is live; so y costs no pass tokens where
         * 3 * inter >= k * hidden (the 671B widths: about, not quite) */
        cv.off = ALIGN_UP(cv.off, 64);
        const size_t mlp_at = cv.off;
        carve(&cv, &w->g1, DSV_F32, T, BT, inter);
        carve(&cv, &w->g3, DSV_F32, T, BT, inter);
        carve(&cv, &w->gs, DSV_F32, T, BT, inter);
        {
                struct carve yc = {base, mlp_at};
                carve(&yc, &w->moe_y, DSV_F32, (int64_t)T * c->num_experts_per_tok, (int64_t)BT * c->num_experts_per_tok,
                      c->hidden_size);
                cv.off = MAX(cv.off, yc.off);
        }
        carve(&cv, &w->shared, DSV_F32, T, BT, c->hidden_size);
        carve(&cv, &w->moe_out, DSV_F32, T, BT, c->hidden_size);
        carve(&cv, &w->moe_ids, DSV_I32, T, BT, c->num_experts_per_tok);
        carve(&cv, &w->moe_w, DSV_F32, T, BT, c->num_experts_per_tok);
        carve(&cv, &w->forced_ids, DSV_I32, T, BT, c->num_experts_per_tok);
        carve(&cv, &w->moe_cnt, DSV_I32, 1, 1, MAX(c->n_routed_experts, 1));
        carve(&cv, &w->moe_off, DSV_I32, 1, 1, (int64_t)c->n_routed_experts + 1);
        carve(&cv, &w->moe_perm, DSV_I32, 1, 1, MAX((int64_t)BT * c->num_experts_per_tok, 1));
        w->moe_perm.ne[0] = (int64_t)T * c->num_experts_per_tok;
        carve(&cv, &w->moe_ids_mine, DSV_I32, T, BT, c->num_experts_per_tok);
        carve(&cv, &w->rscores, DSV_F32, T, BT, c->n_routed_experts);
        /* index scores only for the hooks that ask for them (rows as wide as the context) */
        cv.off = ALIGN_UP(cv.off, 64);
        w->iscores = dsv_tensor_2d(DSV_F32, base ? base + cv.off : NULL, scores ? T : 1, scores ? d->ctx : 1);
        cv.off += scores ? (size_t)BT * (size_t)B->ctx * sizeof(float) : sizeof(float);
        carve(&cv, &w->hout, DSV_F32, n_out, Bn_out, c->hidden_size);
        carve(&cv, &w->logits, DSV_F32, n_out, Bn_out, c->vocab_size);
        /* the MTP layer's eh_proj input, only once an MTP pass has asked for it (it then stays,
         * so main and MTP passes of the same bucket see the same addresses) */
        if (B->eh)
                carve(&cv, &w->eh, DSV_F32, T, BT, 2 * (int64_t)c->hidden_size);
        else
                w->eh = (struct dsv_tensor){0};
        w->k_pe = dsv_view_cols(&w->kv_a, c->kv_lora_rank, c->qk_rope_head_dim);
        *bytes = cv.off;
}

static struct ws_dims bucket_of(const struct ws_dims *d, bool eh) {
        return (struct ws_dims){.T = bucket(d->T, 16), .C = bucket(d->C, 64), .K = bucket(d->K, 8),
                                .ctx = bucket(d->ctx, 64), .n_out = bucket(d->n_out, 4),
                                .n_seqs = bucket(d->n_seqs, 4), .max_pages = bucket(d->max_pages, 4), .eh = eh};
}

size_t dsv_ws_min_bytes(struct dsv_model *m) {
        const struct ws_dims one = {.T = 1, .C = 1, .K = 1, .ctx = 1, .n_out = 1, .n_seqs = 1, .max_pages = 1};
        struct ws w = {.d = one, .bucket = bucket_of(&one, false)};
        size_t bytes;
        layout(m, &w, NULL, &bytes);
        return bytes;
}

size_t dsv_ws_bytes_for(struct dsv_model *m, int n) {
        const struct ws_dims d = {.T = n, .C = n, .K = m->cfg.index_topk, .ctx = n, .n_out = 1, .n_seqs = 1, .max_pages = 1};
        struct ws w = {.d = d, .bucket = bucket_of(&d, false)};
        size_t bytes;
        layout(m, &w, NULL, &bytes);
        return bytes;
}

int dsv_ws_prepare(struct dsv_model *m, const struct ws_dims *d) {
        struct ws *w = &m->ws;
        struct ws nw = {.d = *d};
        size_t bytes;
        int r;

        /* the same bucket as before when it fits: the addresses stay */
        if (w->buf && d->T <= w->bucket.T && d->C <= w->bucket.C && d->K <= w->bucket.K && d->ctx <= w->bucket.ctx &&
            d->n_out <= w->bucket.n_out && d->n_seqs <= w->bucket.n_seqs && d->max_pages <= w->bucket.max_pages &&
            (!d->eh || w->bucket.eh))
                nw.bucket = w->bucket;
        else if (w->buf) {
                /* grow only: a bigger context must not shrink the row buckets (and move every
                 * tensor, which would cost each captured decode graph a new recording) */
                const struct ws_dims *o = &w->bucket;
                const struct ws_dims grown = {.T = MAX(d->T, o->T), .C = MAX(d->C, o->C), .K = MAX(d->K, o->K),
                                              .ctx = MAX(d->ctx, o->ctx), .n_out = MAX(d->n_out, o->n_out),
                                              .n_seqs = MAX(d->n_seqs, o->n_seqs), .max_pages = MAX(d->max_pages, o->max_pages)};
                nw.bucket = bucket_of(&grown, d->eh || o->eh);
        } else
                nw.bucket = bucket_of(d, d->eh);
        layout(m, &nw, NULL, &bytes);
        if (!w->buf || bytes > w->bytes) {
                /* exactly the bucket's layout: buckets already grow by doubling, and a margin
                 * beyond them would only add to the resident set (a 128-token pass then held
                 * 1.5x its 11.4 MB on m474) */
                void *buf;
                size_t want = bytes;
                if (w->buf)
                        m->be->ops->dealloc(m->be, w->buf, w->bytes);
                w->buf = NULL;
                w->bytes = 0;
                r = m->be->ops->alloc(m->be, want, &buf);
                if (r < 0)
                        return r;
                w->buf = buf;
                w->bytes = want;
        }
        nw.buf = w->buf;
        nw.bytes = w->bytes;
        layout(m, &nw, w->buf, &bytes);
        *w = nw;
        return 0;
}

void dsv_ws_free(struct dsv_model *m) {
        if (m->ws.buf)
                m->be->ops->dealloc(m->be, m->ws.buf, m->ws.bytes);
        memset(&m->ws, 0, sizeof(m->ws));
}
