/* Token sampling from one row of logits: greedy, temperature, top-k, top-p, min-p, with a
 * counter-based random stream so that the same seed and the same request give the same
 * tokens, whatever else shares the batch.
 *
 * Plain math (p = softmax(logits / T)):
 *   greedy (T == 0 or top_k == 1): argmax, the lowest id on ties
 *   keep the top_k largest p (top_k > 0), then those with p >= min_p * max p (min_p > 0),
 *   then the smallest prefix of the rest, by descending p, whose mass reaches top_p;
 *   renormalise and draw u = U[0,1) from (seed, step): the first token whose cumulative
 *   probability exceeds u.
 * Candidates are ordered by a radix sort (descending p, ascending id on ties: the total
 * order a comparison sort would give), linear in the vocabulary: a comparison sort of the
 * real vocabulary (129,280) took milliseconds per token on the engine thread.
 *
 * Penalties and logit bias change the logits before any of that (dsv_sampler_adjust), in
 * this order, over the request's history (prompt, then the tokens generated so far):
 *   repetition r (HF/vLLM): each distinct token of prompt and output: l / r if l > 0, else l * r
 *   frequency f and presence q (OpenAI): each token generated c > 0 times: l - c * f - q
 *   logit bias: l + bias[id]
 * Greedy decoding takes the argmax of the adjusted logits too.
 *
 * Logprobs (dsv_logprobs) are those of the model's own distribution: log-softmax of the raw
 * row of logits, before penalties, logit bias, temperature and the filters (OpenAI's and
 * vLLM's default), whatever was sampled from. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dsv_logit_bias {
        int32_t id; /* < the vocabulary (the caller checks) */
        float bias;
};

struct dsv_sampling {
        float temperature;
        float top_p;
        float min_p;
        int32_t top_k;
        uint64_t seed;
        float repetition_penalty; /* 0 or 1: off */
        float frequency_penalty, presence_penalty; /* 0: off */
        const struct dsv_logit_bias *bias; /* n_bias entries, owned by the caller */
        uint32_t n_bias;
};

#define DSV_LOGPROBS_MAX 20 /* top alternatives per token */

/* A token and its log-probability. */
struct dsv_logprob {
        int32_t id;
        float lp;
};

struct dsv_cand {
        float p;
        int32_t id;
};

struct dsv_sampler {
        int n_vocab;
        struct dsv_cand *cand, *tmp; /* candidates and the radix sort's second buffer */
        struct dsv_cand one;         /* the greedy distribution's only candidate */
        float *adj;                  /* dsv_sampler_adjust's logits */
        int32_t *count;              /* per token, zero between calls */
};

/* The distribution a row of logits is sampled from, after every filter: n candidates in
 * descending p (ascending id on ties) with unnormalised weights p summing to sum; the
 * probability of a candidate is p / sum, of any other token 0. Greedy: the argmax alone.
 * The candidates live in the sampler until its next call. */
struct dsv_dist {
        const struct dsv_cand *c;
        int n;
        double sum;
};

int dsv_sampler_init(struct dsv_sampler *s, int n_vocab);
void dsv_sampler_done(struct dsv_sampler *s);
/* The greedy token of a row of logits: the highest, the lowest id on ties. */
int32_t dsv_sample_greedy(const float *logits, int n_vocab);
void dsv_sampler_dist(struct dsv_sampler *s, const float *logits, const struct dsv_sampling *p, struct dsv_dist *d);
/* Whether p has penalties or a logit bias. */
bool dsv_sampling_adjusts(const struct dsv_sampling *p);
/* The logits after p's penalties and bias (see above) over the history tokens[0, n), of
 * which the first n_prompt are the prompt: `logits` itself when p asks for none, else the
 * sampler's copy (valid until its next call). */
const float *dsv_sampler_adjust(struct dsv_sampler *s, const float *logits, const struct dsv_sampling *p,
                                const int32_t *tokens, int n_prompt, int n);
/* The token of d at u in [0, 1): the first candidate whose cumulative probability exceeds u. */
int32_t dsv_dist_draw(const struct dsv_dist *d, double u);
/* u in [0, 1) of a random stream (seed, stream) at step: counter-based, so a step's value does
 * not depend on how many were drawn before. Stream 0 is dsv_sample's. */
double dsv_sample_u01(uint64_t seed, uint64_t stream, uint64_t step);
/* Token for step `step` (0 for the first generated token): dsv_sampler_dist, then
 * dsv_dist_draw at dsv_sample_u01(seed, 0, step). */
int32_t dsv_sample(struct dsv_sampler *s, const float *logits, const struct dsv_sampling *p, uint64_t step);
/* Log-softmax of a raw row of logits (n_vocab values): returns the logprob of `chosen`
 * and fills top[0, n_top) (n_top <= DSV_LOGPROBS_MAX) with the n_top most likely tokens,
 * descending, the lower id first on ties. In float, from a double sum; -inf (a logit of
 * -inf, or one whose probability underflows) is given as -FLT_MAX, so every value is
 * finite. One pass for the maximum and the top, one for the sum: call it only for requests
 * that asked. */
float dsv_logprobs(const float *logits, int n_vocab, int32_t chosen, struct dsv_logprob *top, int n_top);
