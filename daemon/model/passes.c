/* The public forward entry (model.h): a batch of more tokens than one pass may hold is run as
 * several passes, so the activation workspace (workspace.c, ~100 KB a token on the small
 * presets) stays bounded however long a prompt or large a batch the caller hands in.
 *
 * Cutting keeps the results bit for bit: a sequence's tokens go to the passes in position
 * order, so a later pass reads the earlier ones' keys from the KV cache exactly as the rows of
 * one pass would; and a sequence that brings two or more tokens never gets a piece of one
 * token, which would take the absorbed decode attention path instead of the prefill path (the
 * same in exact arithmetic, not in the last bits: plan.h). Sequences marked as_decode (a
 * speculative verify, a few tokens) are never cut. Every row op works row by row, so which
 * other rows share a pass changes nothing (batch invariance, tested).
 *
 * The cap: max_pass_tokens of the load options, or by default the largest power of two (16 at
 * least) whose workspace stays within 1/32 of the weights' bytes, which keeps peak memory near
 * weights + KV pool (issue 16's 1.1x) without cutting the passes of a large model at all. */
#include "config.h"

#include "daemon/model/internal.h"

int dsv_model_pass_tokens(struct dsv_model *m) {
        if (m->max_pass_tokens <= 0) {
                const size_t budget = m->wbytes / 32;
                int n = DSV_MODEL_MIN_PASS_TOKENS;
                while (n < DSV_MODEL_MAX_PASS_TOKENS && dsv_ws_bytes_for(m, 2 * n) <= budget)
                        n *= 2;
                m->max_pass_tokens = n;
        }
        return m->max_pass_tokens;
}

void dsv_model_set_pass_tokens(struct dsv_model *m, int n) {
        m->max_pass_tokens = MIN(MAX(n, DSV_MODEL_MIN_PASS_TOKENS), DSV_MODEL_MAX_PASS_TOKENS);
}

struct dsv_model_pass_stats dsv_model_pass_stats(const struct dsv_model *m) {
        return m->pass_stats;
}

struct cut {
        int32_t *token, *pos, *seq, *lrow, *hrow;
        bool *want;
        int n;
        bool dry;     /* count the passes (passes), run nothing */
        int passes;
};

static void put(struct cut *c, const struct dsv_batch *b, const int *dest_of, int i) {
        c->token[c->n] = b->token[i];
        c->pos[c->n] = b->pos[i];
        c->seq[c->n] = b->seq[i];
        c->want[c->n] = !b->want_logits || b->want_logits[i];
        c->lrow[c->n] = dest_of[i];
        c->hrow[c->n] = i;
        c->n++;
}

static int run_cut(struct dsv_model *m, struct dsv_kv_pool *kv, const struct dsv_batch *b, struct cut *c, float *logits,
                   float *hidden, struct dsv_error *err) {
        struct dsv_batch pb = {.n_tokens = c->n, .token = c->token, .pos = c->pos, .seq = c->seq, .want_logits = c->want,
                               .n_seqs = b->n_seqs, .seqs = b->seqs, .as_decode = b->as_decode,
                               .logits_row = c->lrow, .hidden_row = c->hrow};
        int r = 0;
        if (c->n && !c->dry)
                r = dsv_fwd_pass(m, kv, &pb, logits, hidden, err);
        c->passes += c->n > 0;
        c->n = 0;
        return r;
}

/* Data-parallel attention (model.h dsv_model_opts.dp): after this rank's own passes, the
 * passes it lacks to the group's largest number, with no rows (their dispatches only). */
static int dp_finish(struct dsv_model *m, int r, int own, int all, struct dsv_error *err) {
        for (int i = own; r >= 0 && i < all; i++)
                r = dsv_fwd_dp_idle(m, 0, m->cfg.num_hidden_layers - 1, err);
        return r;
}

/* Cuts the batch into passes of at most cap tokens (see above) and runs them (c->dry: counts). */
static int cut_all(struct dsv_model *m, struct dsv_kv_pool *kv, const struct dsv_batch *b, const struct dsv_batch_plan *pp,
                   int cap, const int *dest_of, struct cut *cp, float *logits, float *hidden, struct dsv_error *err) {
        const struct dsv_batch_plan plan = *pp;
        struct cut c = *cp;
        int r = 0;
        /* decode rows (whole sequences: one token each, or an as_decode verify run), in
         * position order within a sequence as one pass needs them */
        for (int t = 0; t < plan.n_dec; t++) {
                const int i = plan.perm[t], s = b->seq[i];
                if (b->pos[i] != plan.first_pos[s])
                        continue; /* a later token of an as_decode sequence: placed with its first */
                if (c.n + plan.count[s] > cap && (r = run_cut(m, kv, b, &c, logits, hidden, err)) < 0)
                        goto out;
                if (plan.count[s] == 1)
                        put(&c, b, dest_of, i);
                else
                        for (int u = t; u < plan.n_dec; u++)
                                if (b->seq[plan.perm[u]] == s)
                                        put(&c, b, dest_of, plan.perm[u]);
        }
        /* prefill chunks, cut into pieces of two tokens or more */
        for (int k = 0; k < plan.n_chunks; k++) {
                int row = plan.chunk_start[k], left = plan.chunk_len[k];
                while (left > 0) {
                        int take = MIN(left, cap - c.n);
                        if (left - take == 1)
                                take--;
                        /* an empty pass always takes something (a 1-token
                         * chunk included), so the loop cannot spin */
                        if (take < 2 && c.n > 0) {
                                if ((r = run_cut(m, kv, b, &c, logits, hidden, err)) < 0)
                                        goto out;
                                continue;
                        }
                        for (int j = 0; j < take; j++)
                                put(&c, b, dest_of, plan.perm[row + j]);
                        row += take;
                        left -= take;
                }
        }
        r = run_cut(m, kv, b, &c, logits, hidden, err);
out:
        *cp = c;
        return r;
}

int dsv_model_forward_hidden(struct dsv_model *m, struct dsv_kv_pool *kv, const struct dsv_batch *b, float *logits,
                             float *hidden, struct dsv_error *err) {
        const int cap = dsv_model_pass_tokens(m);
        struct dsv_batch_plan plan = {0};
        struct cut c = {0};
        int *len0 = NULL, *dest_of = NULL, r, n_all = 0;

        if (b->n_tokens <= cap || b->logits_row || b->hidden_row) {
                if (!m->dp)
                        return dsv_fwd_pass(m, kv, b, logits, hidden, err);
                /* one pass (none for an empty batch); the batch is checked after the agreement,
                 * so a bad one fails this rank without leaving the others waiting here */
                const int own = b->n_tokens > 0;
                if ((n_all = dsv_fwd_dp_agree(m, DP_FORWARD, own, NULL, err)) < 0)
                        return n_all;
                r = own ? dsv_fwd_pass(m, kv, b, logits, hidden, err) : 0;
                return dp_finish(m, r, own, n_all, err);
        }
        /* the plan checks the batch (same errors as one pass) and orders each sequence's rows */
        if ((r = dsv_batch_plan_make(b, kv->layout.page_tokens, m->cfg.vocab_size, &plan, err)) < 0)
                return r;
        const size_t T = (size_t)b->n_tokens;
        c.token = malloc(T * 5 * sizeof(int32_t) + T * sizeof(bool));
        dest_of = malloc(T * sizeof(int));
        len0 = malloc((size_t)MAX(b->n_seqs, 1) * sizeof(int));
        if (!c.token || !dest_of || !len0) {
                r = -ENOMEM;
                goto out;
        }
        c.pos = c.token + T;
        c.seq = c.pos + T;
        c.lrow = c.seq + T;
        c.hrow = c.lrow + T;
        c.want = (bool *)(c.hrow + T);
        for (size_t i = 0, k = 0; i < T; i++)
                dest_of[i] = (!b->want_logits || b->want_logits[i]) ? (int)k++ : -1;
        for (int s = 0; s < b->n_seqs; s++)
                len0[s] = b->seqs[s]->len;

        if (m->dp) {
                c.dry = true;
                if ((r = cut_all(m, kv, b, &plan, cap, dest_of, &c, logits, hidden, err)) < 0 ||
                    (n_all = dsv_fwd_dp_agree(m, DP_FORWARD, c.passes, NULL, err)) < 0) {
                        r = n_all < 0 ? n_all : r;
                        goto out;
                }
                c.dry = false;
                c.passes = 0;
        }
        r = cut_all(m, kv, b, &plan, cap, dest_of, &c, logits, hidden, err);
        if (m->dp)
                r = dp_finish(m, r, c.passes, n_all, err);
out:
        /* a failed call leaves every sequence as it found it (model.h) */
        if (r < 0 && len0)
                for (int s = 0; s < b->n_seqs; s++)
                        b->seqs[s]->len = len0[s];
        free(len0);
        free(dest_of);
        free(c.token);
        dsv_batch_plan_done(&plan);
        return r < 0 ? r : 0;
}

int dsv_model_forward(struct dsv_model *m, struct dsv_kv_pool *kv, const struct dsv_batch *b, float *logits,
                      struct dsv_error *err) {
        return dsv_model_forward_hidden(m, kv, b, logits, NULL, err);
}
