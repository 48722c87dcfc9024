/* The multi-token-prediction layer's forward pass (see model.h): the draft of the token after
 * next from the next token's embedding and the main model's hidden state.
 *
 * Equivalent math, per token (faithful rounding points in brackets):
 *   e  = enorm(embed(t_{p+1}))                 RMSNorm                           [bf16]
 *   g  = hnorm(h_p)                            RMSNorm of the main model's final
 *                                              normed state at p                 [bf16]
 *   x  = eh_proj([e; g])                       FP8 linear over 2 * hidden        [bf16]
 *   y  = block(x)                              attention + MoE, x the residual
 *   logits = shared_head.head(shared_head.norm(y))                               fp32
 * The order [embedding; hidden] is the one the released weights were trained with (vLLM's
 * deepseek_mtp.py and SGLang's deepseek_nextn.py both concatenate the embedding first; the
 * technical report's formula writes the hidden state first). vLLM also zeroes the embedding
 * of the token at position 0; SGLang does not, neither do we: the MTP row at position 0 sees
 * the embedding of token 1 like any other row. */
#include "config.h"

#include "daemon/model/internal.h"

bool dsv_model_has_mtp(const struct dsv_model *m) { return m->has_mtp; }
int dsv_model_kv_layers(const struct dsv_model *m) { return m->n_layers; }

/* The rows of hidden_in (batch order) into the workspace's h, row order. */
static int upload_hidden(struct fwd *F, const float *hidden_in) {
        struct ws *w = &F->m->ws;
        const size_t D = (size_t)F->m->cfg.hidden_size;
        uint8_t *tmp = calloc((size_t)F->T, w->h.stride);
        int r;
        if (!tmp)
                return -ENOMEM;
        for (int t = 0; t < F->T; t++)
                memcpy(tmp + (size_t)t * w->h.stride, hidden_in + (size_t)F->p->perm[t] * D, D * sizeof(float));
        r = dsv_fwd_upload(F, w->h.data, tmp, (size_t)F->T * w->h.stride);
        free(tmp);
        return r;
}

static int mtp_layers(struct fwd *F, const float *hidden_in) {
        struct dsv_model *m = F->m;
        struct ws *w = &m->ws;
        const int D = m->cfg.hidden_size;
        struct dsv_tensor e_half = dsv_view_cols(&w->eh, 0, D), h_half = dsv_view_cols(&w->eh, D, D);
        struct dsv_op op = {.type = DSV_OP_EMBED};
        int r;

        op.embed = (struct dsv_op_embed){.out = &w->res, .table = m->mtp.embed, .ids = &w->ids};
        if ((r = dsv_fwd_run(F, &op)) < 0 || (r = upload_hidden(F, hidden_in)) < 0 ||
            (r = dsv_fwd_rmsnorm(F, &e_half, NULL, &w->res, m->mtp.enorm)) < 0 ||
            (r = dsv_fwd_rmsnorm(F, &h_half, NULL, &w->h, m->mtp.hnorm)) < 0 ||
            (r = dsv_fwd_linear(F, &w->res, &w->eh, m->mtp.eh_proj)) < 0 ||
            (r = dsv_fwd_block(F, m->cfg.num_hidden_layers, true)) < 0)
                return r;
        return dsv_fwd_rmsnorm(F, &w->h, &w->res, &w->branch, m->mtp.head_norm);
}

int dsv_model_mtp_forward(struct dsv_model *m, struct dsv_kv_pool *kv, const struct dsv_batch *b, const float *hidden_in,
                          float *logits, float *hidden_out, struct dsv_error *err) {
        struct dsv_batch_plan plan = {0};
        struct dsv_kv_seq *shadow = NULL, **sp = NULL;
        bool *dec = NULL;
        struct dsv_batch mb = *b;
        struct fwd F = {.m = m, .kv = kv, .b = &mb, .err = err};
        int r;

        if (!m->has_mtp)
                return dsv_error_set(err, EOPNOTSUPP, "The model was loaded without an MTP layer (the checkpoint has none, or it was not asked for)");
        if (kv->layout.n_layers < m->n_layers)
                return dsv_error_set(err, EINVAL, "The KV pool has %d layers; the MTP layer needs %d (dsv_model_kv_layers)",
                                     kv->layout.n_layers, m->n_layers);
        if (m->dp) {
                /* collective (model.h dsv_model_opts.dp): one pass on every rank, with no rows of
                 * its own on a rank that has none */
                const int own = b->n_tokens > 0;
                if ((r = dsv_fwd_dp_agree(m, DP_MTP, own, NULL, err)) < 0)
                        return r;
                if (!own)
                        return r ? dsv_fwd_dp_idle(m, m->cfg.num_hidden_layers, m->cfg.num_hidden_layers, err) : 0;
        }
        if (b->n_tokens <= 0)
                return 0;
        if (!hidden_in)
                return dsv_error_set(err, EINVAL, "MTP forward without the previous hidden states");
        /* the plan checks positions against len: give it each sequence with len = mtp_len (same
         * pages), and every sequence's tokens as decode rows */
        shadow = calloc((size_t)MAX(b->n_seqs, 1), sizeof(*shadow));
        sp = calloc((size_t)MAX(b->n_seqs, 1), sizeof(*sp));
        dec = malloc((size_t)MAX(b->n_seqs, 1));
        if (!shadow || !sp || !dec) {
                r = -ENOMEM;
                goto out;
        }
        for (int s = 0; s < b->n_seqs; s++) {
                if (!b->seqs || !b->seqs[s]) {
                        r = dsv_error_set(err, EINVAL, "batch sequence %d is missing", s);
                        goto out;
                }
                shadow[s] = *b->seqs[s];
                shadow[s].len = b->seqs[s]->mtp_len;
                sp[s] = &shadow[s];
                dec[s] = true;
        }
        mb.seqs = sp;
        mb.as_decode = dec;
        if ((r = dsv_fwd_begin(&F, &plan, true)) < 0 || (r = mtp_layers(&F, hidden_in)) < 0 ||
            (r = dsv_fwd_head(&F, m->mtp.head, logits)) < 0 || (hidden_out && (r = dsv_fwd_download_hidden(&F, hidden_out)) < 0))
                goto out;
        for (int s = 0; s < b->n_seqs; s++)
                b->seqs[s]->mtp_len += plan.count[s];
        r = 0;
out:
        dsv_batch_plan_done(&plan);
        free(shadow);
        free(sp);
        free(dec);
        return r;
}
