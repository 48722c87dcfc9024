/* Speculative decoding's acceptance rule: a draft token is drawn from the draft model's
 * distribution q (the MTP layer's logits through the request's own sampling filters), the
 * main model's distribution p at that position decides.
 *
 * Plain math (Leviathan et al. 2023, Chen et al. 2023), for draft d ~ q at one position:
 *   accept d with probability min(1, p(d) / q(d))        (u < p(d) / q(d), u = U[0,1))
 *   else emit a token from r(x) = max(0, p(x) - q(x)) / sum_y max(0, p(y) - q(y))
 * The emitted token is then distributed exactly as p: speculation changes the cost, never the
 * output distribution. After k accepted drafts the verify pass's last row gives one more
 * token, drawn from p as plain sampling draws it. Greedy (temperature 0 or top_k 1) makes p
 * and q point masses at their argmax: a draft is accepted iff it is the main model's argmax,
 * a rejection emits that argmax, so the tokens are plain greedy decoding's, one for one.
 *
 * Randomness is counter-based per generated-token index (`step`, 0 for the first generated
 * token) and purpose (draft, accept, residual; a bonus or plain token uses dsv_sample's own
 * stream), so the same seed and the same request give the same tokens. With speculation the
 * sampled tokens differ from those of plain sampling with the same seed (other draws decide
 * them), with the same distribution. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "daemon/runtime/sampler.h"

/* A draft token and the distribution it was drawn from (a copy: the sampler's buffers are
 * reused by the next call). */
struct dsv_draft {
        int32_t token;
        struct dsv_cand *cand;
        int n, cap;
        double sum;
};

/* The rule's scratch: a dense view of one draft's q. */
struct dsv_speculator {
        int n_vocab;
        float *q; /* [n_vocab], zero outside the draft being verified */
};

int dsv_speculator_init(struct dsv_speculator *sp, int n_vocab);
void dsv_speculator_done(struct dsv_speculator *sp);
void dsv_draft_done(struct dsv_draft *d);

/* Draws the draft for generated-token index `step` from draft logits (q = the sampling
 * parameters' distribution of them). -ENOMEM. */
int dsv_spec_draft(struct dsv_sampler *s, const float *draft_logits, const struct dsv_sampling *p, uint64_t step,
                   struct dsv_draft *d);

/* Decides generated-token index `step` from the main model's logits at that position: returns
 * true and *token = d->token when the draft is accepted, false and *token = the residual's
 * draw when it is rejected. */
bool dsv_spec_verify(struct dsv_speculator *sp, struct dsv_sampler *s, const float *logits, const struct dsv_sampling *p,
                     uint64_t step, const struct dsv_draft *d, int32_t *token);
