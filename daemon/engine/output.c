/* What a step's logits become (see core.h): each sequence with a logits row samples its
 * next token (daemon/runtime/sampler.c: the same seed and request give the same tokens
 * whatever shares the batch); EOS (unless ignored) and the request's stop tokens end it
 * without being emitted; otherwise the token goes to the request's history and its pending
 * output with the text it completes (streaming detokenization never splits a UTF-8
 * character), max_tokens and the context window end it, and a streaming request is
 * flushed to its client at once. A request that was preempted feeds the tokens it had
 * generated again (scheduler.c): while the next token is one it knows, nothing is sampled
 * or sent.
 *
 * A request that verified k drafts (draft.c) has k + 1 rows, decided in order by the rule of
 * daemon/runtime/speculate.h: row i accepts draft i + 1 or replaces it (and the rest of the
 * drafts go), the last row gives one more token when every draft was accepted. Each decided
 * token passes the stop rules above one by one, so nothing after a stop is emitted; then the
 * KV of the positions that hold rejected drafts (or tokens after a stop) is dropped, and the
 * request is where k + 1 plain decode steps would have left it.
 *
 * Every row is sampled after the request's penalties and logit bias over its history at
 * that point (daemon/runtime/sampler.h), drafts accepted before it included, and for a
 * request with a schema after its mask (constrain.c), which also ends it when its value is
 * complete.
 *
 * A request that asked for logprobs gets, with each token it is sent, the log-softmax of
 * the raw row that token was decided on (before penalties, bias and temperature: a draft's
 * row on a verify pass is the same row a plain decode step would have computed), computed
 * only for tokens that are emitted. */
#include "config.h"

#include "daemon/engine/core.h"

static bool is_stop(const struct dsv_core *c, const struct request *r, int32_t t) {
        if (t == c->p.eos_id && !r->in->ignore_eos)
                return true;
        for (uint32_t i = 0; i < r->in->n_stop_tokens; i++)
                if (r->in->stop_tokens[i] == t)
                        return true;
        return false;
}

/* A row of logits after the request's penalties and logit bias over its history so far. */
static const float *adjusted(struct dsv_core *c, const struct request *r, const float *row) {
        return dsv_sampler_adjust(&c->sampler, row, &r->sp, r->tokens, r->n_prompt, r->n_tokens);
}

/* One generated token, decided on the raw logits row `raw`, through the stop rules into the
 * request's output; false when the request ended (finished or failed). */
static bool take(struct dsv_core *c, struct request *r, int32_t t, const float *raw) {
        struct dsv_logprob top[DSV_LOGPROBS_MAX];
        float lp = 0.0f;

        r->n_generated++;
        DSV_METRIC_ADD(c->metrics, generated_tokens_total, 1);
        if (is_stop(c, r, t)) {
                request_finish(r, DSV_ENGINE_FINISH_STOP);
                return false;
        }
        r->tokens[r->n_tokens++] = t;
        if (r->in->logprobs)
                lp = dsv_logprobs(raw, c->p.vocab_size, t, top, (int)r->in->top_logprobs);
        if (request_push_token(c, r, t, lp, top) < 0) {
                request_fail(r, ENOMEM, "out of memory");
                return false;
        }
        if (r->state == REQ_FINISHING)
                return false; /* a stop string completed */
        if (r->gm && constrain_take(c, r, t))
                return false; /* the value is complete */
        if ((uint32_t)r->n_generated >= r->in->max_tokens) {
                request_finish(r, DSV_ENGINE_FINISH_LENGTH);
                return false;
        }
        if (r->n_tokens >= r->total) {
                request_finish(r, DSV_ENGINE_FINISH_CONTEXT);
                return false;
        }
        return true;
}

/* Sequence s verified k = rows - 1 drafts at positions L + 1 .. L + k (its pending token at L). */
static void verify(struct dsv_core *c, int s) {
        const size_t V = (size_t)c->p.vocab_size;
        struct request *r = c->b_req[s];
        const float *lg = c->logits + (size_t)c->b_row[s] * V;
        const int k = c->b_nrows[s] - 1, L = r->seq.len - k - 1;
        const int pt = (int)c->p.kv_page_tokens, cap = r->seq.n_pages * pt;
        int n_acc = 0, accepted = 0, keep, rc;

        for (int i = 0; i <= k; i++) {
                int32_t t;
                bool ok = false;
                const float *row = adjusted(c, r, lg + (size_t)i * V);
                if (i < k) {
                        ok = dsv_spec_verify(&c->spec, &c->sampler, row, &r->sp, (uint64_t)r->n_generated, &r->drafts[i], &t);
                        accepted += ok;
                } else {
                        t = dsv_sample(&c->sampler, row, &r->sp, (uint64_t)r->n_generated);
                }
                if (!take(c, r, t, lg + (size_t)i * V) || !ok)
                        break;
                n_acc++;
        }
        r->n_draft = 0;
        r->spec_drafted += (uint32_t)k;
        r->spec_accepted += (uint32_t)accepted;
        DSV_METRIC_ADD(c->metrics, spec_drafted_total, k);
        DSV_METRIC_ADD(c->metrics, spec_accepted_total, accepted);
        /* positions L .. L + n_acc hold the tokens decided; the history (tokens) may end sooner
         * after a stop */
        keep = MIN(L + 1 + n_acc, r->n_tokens);
        if (keep < r->seq.len) {
                /* the dropped positions were written by this pass alone: no page is shared, and the
                 * pages go back to this sequence at once (the MTP layer's chained drafts write there) */
                if ((rc = dsv_kv_seq_truncate(core_pool(c, &r->seq), &r->seq, keep)) < 0) {
                        request_fail(r, -rc, "cannot drop the rejected drafts' KV: %s", strerror(-rc));
                        return;
                }
                dsv_kv_seq_reserve(core_pool(c, &r->seq), &r->seq, cap);
        }
}

void output_step(struct dsv_core *c) {
        const size_t V = (size_t)c->p.vocab_size;
        for (int s = 0; s < c->b_n_seqs; s++) {
                struct request *r = c->b_req[s];
                if (c->b_row[s] < 0)
                        continue;
                if (r->state == REQ_WAITING) {
                        r->state = REQ_RUNNING;
                        if (!r->t_first)
                                r->t_first = dsv_now_ns();
                }
                if (r->seq.len < r->n_tokens)
                        continue; /* replaying after a preemption: the next token is known */
                if (c->b_nrows[s] > 1)
                        verify(c, s);
                else {
                        const float *raw = c->logits + (size_t)c->b_row[s] * V, *row = adjusted(c, r, raw);
                        int32_t t;
                        if (r->gm && !(row = constrain_row(c, r, row)))
                                continue; /* nothing can continue the value: r failed */
                        t = dsv_sample(&c->sampler, row, &r->sp, (uint64_t)r->n_generated);
                        if (r->gm && !constrain_allowed(c, t)) /* every allowed logit was -inf */
                                t = constrain_first_allowed(c);
                        if (c->n_forced) /* tests: a scripted output (core.h) */
                                t = (size_t)r->n_generated < c->n_forced ? c->forced[r->n_generated] : c->p.eos_id;
                        take(c, r, t, raw);
                }
                if (r->state == REQ_RUNNING && r->in->stream)
                        request_flush(c, r);
        }
}
