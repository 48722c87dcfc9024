/* What a step's logits become (see core.h): each sequence with a logits row samples its
 * next token (daemon/runtime/sampler.c: the same seed and request give the same tokens
 * whatever shares the batch); EOS (unless ignored) and the request's stop tokens end it
 * without being emitted; otherwise the token goes to the request's history and its pending
 * output with the text it completes (streaming detokenization never splits a UTF-8
 * character), max_tokens and the context window end it, and a streaming request is
 * flushed to its client at once. A request that was preempted feeds the tokens it had
 * generated again (scheduler.c): while the next token is one it knows, nothing is sampled
 * or sent. */
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

void output_step(struct dsv_core *c) {
        const size_t V = (size_t)c->p.vocab_size;
        for (int s = 0; s < c->b_n_seqs; s++) {
                struct request *r = c->b_req[s];
                int32_t t;
                if (c->b_row[s] < 0)
                        continue;
                if (r->state == REQ_WAITING) {
                        r->state = REQ_RUNNING;
                        if (!r->t_first)
                                r->t_first = dsv_now_ns();
                }
                if (r->seq.len < r->n_tokens)
                        continue; /* replaying after a preemption: the next token is known */
                t = dsv_sample(&c->sampler, c->logits + (size_t)c->b_row[s] * V, &r->sp, (uint64_t)r->n_generated);
                r->n_generated++;
                DSV_METRIC_ADD(c->metrics, generated_tokens_total, 1);
                if (is_stop(c, r, t)) {
                        request_finish(r, DSV_ENGINE_FINISH_STOP);
                } else {
                        r->tokens[r->n_tokens++] = t;
                        if (request_push_token(c, r, t) < 0) {
                                request_fail(r, ENOMEM, "out of memory");
                                continue;
                        }
                        if ((uint32_t)r->n_generated >= r->in->max_tokens)
                                request_finish(r, DSV_ENGINE_FINISH_LENGTH);
                        else if (r->n_tokens >= r->total)
                                request_finish(r, DSV_ENGINE_FINISH_CONTEXT);
                }
                if (r->state == REQ_RUNNING && r->in->stream)
                        request_flush(c, r);
        }
}
