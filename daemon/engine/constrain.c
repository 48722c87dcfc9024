/* Structured output in the engine (see core.h): a request with a compiled schema
 * (in->grammar) gets a matcher at intake; each row it samples is masked first (tokens the
 * matcher cannot take next get -inf, after penalties and logit bias and before temperature
 * and the filters, so sampling inside the constraint stays reproducible by seed); each
 * token it takes advances the matcher, and the request ends (finish reason stop) the moment
 * the value is complete. EOS is allowed exactly where the value may end (a number that
 * could still grow); max_tokens or the context cutting a value short end it with their own
 * reason (length, context), never as a complete value. A request without a schema does none
 * of this: one pointer test per sampled row.
 *
 * Combinations: a schema with thinking or with tools is refused (the constraint would have
 * to skip the reasoning or the tool calls); stop strings still apply (a match cuts the
 * value, finish reason stop string); stop tokens, and EOS with ignore_eos, are never
 * sampled (they would end or corrupt the value). Speculative decoding is off for a
 * constrained request (its drafts would need masks of their own). */
#include "config.h"

#include <math.h>

#include "daemon/engine/core.h"
#include "daemon/engine/text.h"
#include "daemon/grammar/grammar.h"

static bool token_bytes(void *ud, int32_t id, const char **p, size_t *n) {
        return dsv_text_token_bytes(ud, id, p, n);
}

bool constrain_admit(struct dsv_core *c, struct request *r) {
        struct dsv_engine_request *in = r->in;
        int rc;

        if (!in->grammar)
                return true;
        if (in->thinking) {
                request_fail(r, EINVAL, "a schema cannot be combined with thinking: ask without thinking (the constraint "
                                        "applies to the whole output)");
                return false;
        }
        if (in->n_tools) {
                request_fail(r, EINVAL, "a schema cannot be combined with tools");
                return false;
        }
        if (!c->text) {
                request_fail(r, ENOTSUP, "a schema needs the vocabulary's text: %s", dsv_text_unavailable());
                return false;
        }
        if (!c->gvocab) {
                uint64_t t0 = dsv_now_ns();
                if ((rc = dsv_gvocab_new(c->p.vocab_size, c->p.eos_id, token_bytes, (void *)c->text, &c->gvocab)) < 0 ||
                    !(c->gmask = malloc(dsv_gvocab_mask_words(c->gvocab) * sizeof(uint32_t)))) {
                        dsv_gvocab_free(TAKE_PTR(c->gvocab));
                        request_fail(r, ENOMEM, "cannot index the vocabulary for a schema: out of memory");
                        return false;
                }
                log_info("Engine: the vocabulary's trie for structured output took %.1f ms",
                         (double)(dsv_now_ns() - t0) / 1e6);
        }
        if (dsv_gmatch_new(in->grammar, &r->gm) < 0) {
                request_fail(r, ENOMEM, "out of memory");
                return false;
        }
        return true;
}

/* Clears token t's bit of the mask; 1 when it was set. */
static int clear_bit(struct dsv_core *c, int32_t t) {
        uint32_t bit;
        if (t < 0 || t >= c->p.vocab_size)
                return 0;
        bit = 1u << (t & 31);
        if (!(c->gmask[t >> 5] & bit))
                return 0;
        c->gmask[t >> 5] &= ~bit;
        return 1;
}

const float *constrain_row(struct dsv_core *c, struct request *r, const float *row) {
        const size_t words = dsv_gvocab_mask_words(c->gvocab);
        const int V = c->p.vocab_size;
        float *out = c->sampler.adj;
        const uint64_t t0 = dsv_now_ns();
        int32_t allowed = dsv_gvocab_mask(c->gvocab, r->gm, c->gmask);

        /* a stop token inside the value would end it cut short with finish stop, the reason
         * that means complete; with ignore_eos, EOS would be emitted as text: neither is
         * sampled (the value completes without them: a number closes at its digit limits) */
        for (uint32_t i = 0; i < r->in->n_stop_tokens; i++)
                allowed -= clear_bit(c, r->in->stop_tokens[i]);
        if (r->in->ignore_eos)
                allowed -= clear_bit(c, c->p.eos_id);
        if (allowed == 0) {
                request_fail(r, EINVAL, "structured output: no token of the vocabulary continues the value here (a "
                                        "schema that nests deeper than %d values, or whose strings need bytes that no "
                                        "token has)",
                             DSV_GRAMMAR_STACK_MAX);
                return NULL;
        }
        if (row != out)
                memcpy(out, row, (size_t)V * sizeof(float));
        for (size_t w = 0; w < words; w++) {
                uint32_t keep = c->gmask[w];
                int base = (int)(w * 32);
                if (keep == UINT32_MAX)
                        continue;
                for (int b = 0; b < 32 && base + b < V; b++)
                        if (!(keep >> b & 1))
                                out[base + b] = -INFINITY;
        }
        r->mask_ns += dsv_now_ns() - t0;
        r->n_masks++;
        return out;
}

bool constrain_allowed(const struct dsv_core *c, int32_t t) { return c->gmask[t >> 5] >> (t & 31) & 1; }

int32_t constrain_first_allowed(const struct dsv_core *c) {
        for (int32_t t = 0; t < c->p.vocab_size; t++)
                if (constrain_allowed(c, t))
                        return t;
        return c->p.eos_id;
}

bool constrain_take(struct dsv_core *c, struct request *r, int32_t t) {
        const char *p;
        size_t n;
        if (!dsv_text_token_bytes(c->text, t, &p, &n) || dsv_gmatch_feed(r->gm, p, n) < 0) {
                /* only a scripted (DSV32_TEST_FORCE_TOKENS) token can get here */
                request_fail(r, EINVAL, "structured output: token %d does not continue the value", t);
                return true;
        }
        if (dsv_gmatch_done(r->gm)) {
                request_finish(r, DSV_ENGINE_FINISH_STOP);
                return true;
        }
        return false;
}

void constrain_report(const struct request *r) {
        if (r->n_masks)
                log_info("Request %llu: structured output: %u masks took %.2f ms (%.1f us each)", (unsigned long long)r->id,
                         r->n_masks, (double)r->mask_ns / 1e6, (double)r->mask_ns / 1e3 / r->n_masks);
}

void constrain_free(struct dsv_core *c) {
        dsv_gvocab_free(TAKE_PTR(c->gvocab));
        free(TAKE_PTR(c->gmask));
}
