/* Generation of one sequence, plain or speculative (see generate.h). */
#include "config.h"

#include "daemon/runtime/generate.h"

#include "daemon/util.h"

struct gen {
        struct dsv_runtime *rt;
        const struct dsv_generate_opts *o;
        struct dsv_error *err;
        int V, D, n_prompt, rows; /* rows: the most tokens one pass takes */
        struct dsv_kv_seq seq;
        struct dsv_kv_seq *seqs[1];
        int32_t *all;      /* the prompt, then the generated tokens: position p holds all[p] */
        float *logits;     /* [rows, V] */
        float *hidden;     /* [rows, D]: main hidden states of positions [seq.mtp_len, seq.len) */
        float *mtp_hidden; /* [rows, D]: the MTP layer's own (chained drafts) */
        int32_t *pos, *sq;
        bool *want;
        struct dsv_sampler sampler;
        struct dsv_speculator spec;
        struct dsv_draft *drafts;
};

static int report(struct gen *G, int p0, int n) {
        for (int i = 0; i < n && G->o->on_logits; i++) {
                int r = G->o->on_logits(G->o->ud, p0 + i, G->logits + (size_t)i * G->V, G->V);
                if (r < 0)
                        return dsv_error_set(G->err, r, "the logits consumer failed at position %d: %s", p0 + i, strerror(-r));
        }
        return 0;
}

/* Feeds all[p0 .. p0 + n) to the main model; logits of every row (want_all) or of the last
 * at logits row 0; the hidden states when hidden is given. */
static int forward(struct gen *G, int p0, int n, bool want_all, bool as_decode, float *hidden) {
        static const bool dec = true;
        for (int i = 0; i < n; i++) {
                G->pos[i] = p0 + i;
                G->sq[i] = 0;
                G->want[i] = want_all || i == n - 1;
        }
        struct dsv_batch b = {.n_tokens = n, .token = G->all + p0, .pos = G->pos, .seq = G->sq, .want_logits = G->want,
                              .n_seqs = 1, .seqs = G->seqs, .as_decode = as_decode ? &dec : NULL};
        return dsv_model_forward_hidden(G->rt->model, G->rt->kv, &b, G->logits, hidden, G->err);
}

/* The MTP layer over positions [p0, p0 + n) (token p + 1, previous hidden states h), the
 * logits of the last row at logits row 0 when want_last, its own hidden states when h_out. */
static int mtp(struct gen *G, int p0, int n, const float *h, bool want_last, float *h_out) {
        for (int i = 0; i < n; i++) {
                G->pos[i] = p0 + i;
                G->sq[i] = 0;
                G->want[i] = want_last && i == n - 1;
        }
        struct dsv_batch b = {.n_tokens = n, .token = G->all + p0 + 1, .pos = G->pos, .seq = G->sq, .want_logits = G->want,
                              .n_seqs = 1, .seqs = G->seqs};
        return dsv_model_mtp_forward(G->rt->model, G->rt->kv, &b, h, G->logits, h_out, G->err);
}

/* Catches the MTP layer up to the decided token at position len and drafts nd tokens for
 * positions len + 1 .. len + nd (generated-token indices g ..), into all[] and drafts[]. */
static int draft(struct gen *G, int nd, uint64_t g) {
        const int L = G->seq.len, m0 = G->seq.mtp_len;
        const size_t D = (size_t)G->D;
        int r;

        if ((r = mtp(G, m0, L - m0, G->hidden, nd > 0, nd > 1 ? G->mtp_hidden : NULL)) < 0)
                return r;
        for (int j = 0; j < nd; j++) {
                if (j > 0) {
                        /* chained: position L + j - 1, token d_j, the layer's own previous state */
                        memmove(G->mtp_hidden, G->mtp_hidden + (size_t)(j == 1 ? L - m0 - 1 : 0) * D, D * sizeof(float));
                        if ((r = mtp(G, L + j - 1, 1, G->mtp_hidden, true, j + 1 < nd ? G->mtp_hidden : NULL)) < 0)
                                return r;
                }
                if ((r = dsv_spec_draft(&G->sampler, G->logits, &G->o->sampling, g + (uint64_t)j, &G->drafts[j])) < 0)
                        return dsv_error_set(G->err, r, "out of memory for a draft");
                G->all[L + 1 + j] = G->drafts[j].token;
        }
        /* records past L - 1 came from drafts: the next catch-up recomputes them */
        G->seq.mtp_len = MIN(G->seq.mtp_len, L);
        return 0;
}

static int prefill(struct gen *G) {
        const struct dsv_generate_opts *o = G->o;
        const int step = o->chunk > 0 ? o->chunk : G->n_prompt;
        int r;
        for (int s = 0; s < G->n_prompt; s += step) {
                int n = MIN(step, G->n_prompt - s);
                bool last = s + n == G->n_prompt;
                if ((r = forward(G, s, n, o->on_logits != NULL, false, o->speculate ? G->hidden : NULL)) < 0 ||
                    (r = report(G, s, o->on_logits ? n : 0)) < 0)
                        return r;
                /* the MTP layer follows chunk by chunk; the last chunk's last row waits for the
                 * first generated token */
                if (o->speculate && !last && (r = draft(G, 0, 0)) < 0)
                        return r;
                if (last && !o->on_logits)
                        continue;
                if (last) /* logits row 0 must be the last position's */
                        memmove(G->logits, G->logits + (size_t)(n - 1) * G->V, (size_t)G->V * sizeof(float));
        }
        return 0;
}

/* One speculative step from g decided tokens (the last, at position len, not yet fed):
 * returns the new count of decided tokens. */

/* Logits row `row` after the sampling's penalties and logit bias over the first n tokens of
 * the sequence (daemon/runtime/sampler.h). */
static const float *adjusted(struct gen *G, const float *row, int n) {
        return dsv_sampler_adjust(&G->sampler, row, &G->o->sampling, G->all, G->n_prompt, n);
}
static int spec_step(struct gen *G, int g, struct dsv_generate_stats *st) {
        const struct dsv_generate_opts *o = G->o;
        const int L = G->seq.len, nd = MIN(o->n_draft, o->n_gen - g);
        int n_acc = 0, decided, r;

        if ((r = draft(G, nd, (uint64_t)g)) < 0 || (r = forward(G, L, nd + 1, true, true, G->hidden)) < 0)
                return r;
        st->forward_passes++;
        st->drafted += nd;
        for (int i = 0; i < nd; i++) {
                int32_t tok;
                bool ok = dsv_spec_verify(&G->spec, &G->sampler, adjusted(G, G->logits + (size_t)i * G->V, L + 1 + i),
                                          &o->sampling, (uint64_t)(g + i), &G->drafts[i], &tok);
                G->all[L + 1 + i] = tok;
                if (!ok)
                        break;
                n_acc++;
        }
        st->accepted += n_acc;
        if (n_acc < nd)
                decided = g + n_acc + 1; /* the replacement of the rejected draft */
        else if (g + nd < o->n_gen) {
                G->all[L + nd + 1] = dsv_sample(&G->sampler, adjusted(G, G->logits + (size_t)nd * G->V, L + nd + 1), &o->sampling,
                                                (uint64_t)(g + nd));
                decided = g + nd + 1;
        } else
                decided = g + nd;
        /* positions L .. L + n_acc stay; the rejected drafts' records go */
        if ((r = dsv_kv_seq_truncate(G->rt->kv, &G->seq, L + n_acc + 1)) < 0 ||
            (r = dsv_kv_seq_reserve(G->rt->kv, &G->seq, G->n_prompt + o->n_gen + 1)) < 0)
                return dsv_error_set(G->err, -r, "cannot roll the sequence back to %d tokens: %s", L + n_acc + 1, strerror(-r));
        if ((r = report(G, L, n_acc + 1)) < 0)
                return r;
        return decided;
}

static void gen_free(struct gen *G) {
        if (G->rt)
                dsv_kv_seq_release(G->rt->kv, &G->seq);
        if (G->drafts)
                for (int j = 0; j < G->o->n_draft; j++)
                        dsv_draft_done(&G->drafts[j]);
        free(G->drafts);
        dsv_speculator_done(&G->spec);
        dsv_sampler_done(&G->sampler);
        free(G->all);
        free(G->logits);
        free(G->hidden);
        free(G->mtp_hidden);
        free(G->pos);
        free(G->sq);
        free(G->want);
}

int dsv_runtime_generate(struct dsv_runtime *rt, const int32_t *prompt, int n_prompt, const struct dsv_generate_opts *o,
                         int32_t *out, struct dsv_generate_stats *st, struct dsv_error *err) {
        struct gen G = {.rt = rt, .o = o, .err = err, .V = rt->cfg->vocab_size, .D = rt->cfg->hidden_size, .n_prompt = n_prompt};
        struct dsv_generate_stats stats = {0};
        const int k = o->speculate ? o->n_draft : 0;
        uint64_t t0;
        int g = 0, r;

        if (n_prompt <= 0 || o->n_gen < 0 || (o->speculate && o->n_draft < 1))
                return dsv_error_set(err, EINVAL, "generate: %d prompt tokens, %d to generate, %d drafts per step", n_prompt,
                                     o->n_gen, o->n_draft);
        if (o->speculate && !dsv_model_has_mtp(rt->model))
                return dsv_error_set(err, EOPNOTSUPP, "speculative decoding needs the checkpoint's MTP layer, which is not loaded");
        G.seqs[0] = &G.seq;
        G.rows = MAX(MAX(o->chunk > 0 ? o->chunk : n_prompt, k + 1), 1);
        G.all = malloc(((size_t)n_prompt + (size_t)o->n_gen + (size_t)k + 2) * sizeof(int32_t));
        G.logits = malloc((size_t)(o->on_logits ? G.rows : k + 1) * G.V * sizeof(float));
        G.pos = malloc((size_t)G.rows * sizeof(int32_t));
        G.sq = malloc((size_t)G.rows * sizeof(int32_t));
        G.want = malloc((size_t)G.rows);
        if (o->speculate) {
                G.hidden = malloc((size_t)G.rows * G.D * sizeof(float));
                G.mtp_hidden = malloc((size_t)G.rows * G.D * sizeof(float));
                G.drafts = calloc((size_t)o->n_draft, sizeof(*G.drafts));
        }
        if (!G.all || !G.logits || !G.pos || !G.sq || !G.want || (o->speculate && (!G.hidden || !G.mtp_hidden || !G.drafts)) ||
            dsv_sampler_init(&G.sampler, G.V) < 0 || (o->speculate && dsv_speculator_init(&G.spec, G.V) < 0)) {
                r = dsv_error_set(err, ENOMEM, "out of memory for a generation of %d + %d tokens", n_prompt, o->n_gen);
                goto out;
        }
        memcpy(G.all, prompt, (size_t)n_prompt * sizeof(int32_t));
        if ((r = dsv_kv_seq_reserve(rt->kv, &G.seq, n_prompt + o->n_gen + 1)) < 0) {
                r = dsv_error_set(err, -r, "cannot reserve the KV cache for %d tokens", n_prompt + o->n_gen + 1);
                goto out;
        }

        t0 = dsv_now_ns();
        if ((r = prefill(&G)) < 0)
                goto out;
        stats.prefill_ns = dsv_now_ns() - t0;
        t0 = dsv_now_ns();
        if (o->n_gen > 0) {
                G.all[n_prompt] = dsv_sample(&G.sampler, adjusted(&G, G.logits, n_prompt), &o->sampling, 0);
                g = 1;
        }
        while (g < o->n_gen) {
                if (o->speculate) {
                        if ((r = spec_step(&G, g, &stats)) < 0)
                                goto out;
                        g = r;
                        continue;
                }
                if ((r = forward(&G, G.seq.len, 1, true, false, NULL)) < 0 || (r = report(&G, G.seq.len - 1, 1)) < 0)
                        goto out;
                stats.forward_passes++;
                G.all[n_prompt + g] = dsv_sample(&G.sampler, adjusted(&G, G.logits, n_prompt + g), &o->sampling, (uint64_t)g);
                g++;
        }
        /* the last token, when asked for and not fed by a verify pass */
        if (o->feed_last && o->n_gen > 0 && G.seq.len < n_prompt + o->n_gen) {
                if ((r = forward(&G, G.seq.len, 1, true, false, NULL)) < 0 || (r = report(&G, G.seq.len - 1, 1)) < 0)
                        goto out;
                stats.forward_passes++;
        }
        stats.decode_ns = dsv_now_ns() - t0;
        memcpy(out, G.all + n_prompt, (size_t)o->n_gen * sizeof(int32_t));
        if (st)
                *st = stats;
        r = 0;
out:
        gen_free(&G);
        return r;
}
