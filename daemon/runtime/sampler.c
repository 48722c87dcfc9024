/* Sampling (see sampler.h). */
#include "config.h"

#include "daemon/runtime/sampler.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/rng.h"
#include "daemon/util.h"

int dsv_sampler_init(struct dsv_sampler *s, int n_vocab) {
        s->n_vocab = n_vocab;
        s->cand = malloc((size_t)n_vocab * sizeof(*s->cand));
        s->tmp = malloc((size_t)n_vocab * sizeof(*s->tmp));
        s->adj = malloc((size_t)n_vocab * sizeof(*s->adj));
        s->count = calloc((size_t)n_vocab, sizeof(*s->count));
        if (!s->cand || !s->tmp || !s->adj || !s->count) {
                dsv_sampler_done(s);
                return -ENOMEM;
        }
        return 0;
}

void dsv_sampler_done(struct dsv_sampler *s) {
        free(s->cand);
        free(s->tmp);
        free(s->adj);
        free(s->count);
        s->cand = s->tmp = NULL;
        s->adj = NULL;
        s->count = NULL;
}

/* Sorts c[0, n) by descending p, ties by ascending id, given in ascending id order: a stable
 * LSD radix sort (3 passes of 11 bits) on the complement of p's bits (p > 0 and finite, so
 * the bit pattern orders like the value). Returns the buffer that holds the result. */
static struct dsv_cand *sort_desc(struct dsv_cand *c, struct dsv_cand *t, int n) {
        for (int shift = 0; shift < 33; shift += 11) {
                uint32_t count[2048] = {0}, sum = 0;
                for (int i = 0; i < n; i++) {
                        uint32_t key;
                        memcpy(&key, &c[i].p, 4);
                        count[(~key >> shift) & 2047]++;
                }
                for (int b = 0; b < 2048; b++) {
                        uint32_t k = count[b];
                        count[b] = sum;
                        sum += k;
                }
                for (int i = 0; i < n; i++) {
                        uint32_t key;
                        memcpy(&key, &c[i].p, 4);
                        t[count[(~key >> shift) & 2047]++] = c[i];
                }
                struct dsv_cand *x = c;
                c = t;
                t = x;
        }
        return c;
}

/* The first i whose v[i] is greater than every v before it, as the plain loop
 *   best = 0; for i: if (v[i] > v[best]) best = i
 * finds it: 0 when v[0] is NaN (nothing compares greater), else the first index holding the
 * largest non-NaN value (NaNs never win; +0 and -0 tie, the first stays). In two passes that
 * vectorise: the largest value in 16 independent lanes (each lane the same "greater" rule, so
 * NaNs are skipped), then the first index equal to it; the plain loop's load of v[best] and
 * its unpredictable branch cost ~4 ns a logit (~0.1 ms a decode step at a 32K vocabulary). */
int32_t dsv_sample_greedy(const float *v, int n) {
        enum { L = 16 };
        float lane[L];
        int i = 0;
        if (n <= 0 || v[0] != v[0])
                return 0;
        for (int j = 0; j < L; j++)
                lane[j] = v[0];
        for (; i + L <= n; i += L)
                for (int j = 0; j < L; j++)
                        lane[j] = v[i + j] > lane[j] ? v[i + j] : lane[j];
        float m = lane[0];
        for (int j = 1; j < L; j++)
                m = lane[j] > m ? lane[j] : m;
        for (; i < n; i++)
                m = v[i] > m ? v[i] : m;
        for (i = 0; i < n; i++)
                if (v[i] == m)
                        break;
        return i;
}

double dsv_sample_u01(uint64_t seed, uint64_t stream, uint64_t step) {
        return dsv_rand_u01(dsv_mix64(seed ^ 0x5eed5eed5eedull ^ stream), step);
}

bool dsv_sampling_adjusts(const struct dsv_sampling *p) {
        return (p->repetition_penalty > 0.0f && p->repetition_penalty != 1.0f) || p->frequency_penalty != 0.0f ||
               p->presence_penalty != 0.0f || p->n_bias > 0;
}

const float *dsv_sampler_adjust(struct dsv_sampler *s, const float *logits, const struct dsv_sampling *p,
                                const int32_t *tokens, int n_prompt, int n) {
        float *l = s->adj;
        const float rp = p->repetition_penalty;

        if (!dsv_sampling_adjusts(p))
                return logits;
        memcpy(l, logits, (size_t)s->n_vocab * sizeof(float));
        if (rp > 0.0f && rp != 1.0f) {
                /* each distinct token once: count marks those done */
                for (int i = 0; i < n; i++) {
                        int32_t t = tokens[i];
                        if (s->count[t])
                                continue;
                        s->count[t] = 1;
                        l[t] = l[t] > 0.0f ? l[t] / rp : l[t] * rp;
                }
                for (int i = 0; i < n; i++)
                        s->count[tokens[i]] = 0;
        }
        if (p->frequency_penalty != 0.0f || p->presence_penalty != 0.0f) {
                for (int i = n_prompt; i < n; i++)
                        s->count[tokens[i]]++;
                for (int i = n_prompt; i < n; i++) {
                        int32_t t = tokens[i];
                        if (!s->count[t])
                                continue;
                        l[t] -= (float)s->count[t] * p->frequency_penalty + p->presence_penalty;
                        s->count[t] = 0;
                }
        }
        for (uint32_t i = 0; i < p->n_bias; i++)
                l[p->bias[i].id] += p->bias[i].bias;
        return l;
}

void dsv_sampler_dist(struct dsv_sampler *s, const float *logits, const struct dsv_sampling *p, struct dsv_dist *d) {
        int n = s->n_vocab, k = 0;
        float mx, inv_t;
        double sum = 0;

        if (p->temperature <= 0.0f || p->top_k == 1)
                goto greedy;
        mx = logits[dsv_sample_greedy(logits, n)];
        inv_t = 1.0f / p->temperature;
        /* unnormalised probabilities; drop those below 1e-12 of the best, which no top-p or
         * draw in double precision can reach, to keep the sort short */
        for (int i = 0; i < n; i++) {
                float e = expf((logits[i] - mx) * inv_t);
                if (e >= 1e-12f && isfinite(logits[i])) {
                        s->cand[k].p = e;
                        s->cand[k].id = i;
                        k++;
                }
        }
        if (k == 0)
                goto greedy;
        struct dsv_cand *cand = sort_desc(s->cand, s->tmp, k);
        if (p->top_k > 0 && p->top_k < k)
                k = p->top_k;
        if (p->min_p > 0.0f) {
                float thr = p->min_p * cand[0].p;
                int j = 1;
                while (j < k && cand[j].p >= thr)
                        j++;
                k = j;
        }
        for (int i = 0; i < k; i++)
                sum += cand[i].p;
        if (p->top_p > 0.0f && p->top_p < 1.0f) { /* 0 or 1: off */
                double want = (double)p->top_p * sum, c = 0;
                int j = 0;
                while (j < k) {
                        c += cand[j].p;
                        j++;
                        if (c >= want)
                                break;
                }
                k = j;
                sum = c;
        }
        *d = (struct dsv_dist){.c = cand, .n = k, .sum = sum};
        return;
greedy:
        s->one = (struct dsv_cand){.p = 1.0f, .id = dsv_sample_greedy(logits, n)};
        *d = (struct dsv_dist){.c = &s->one, .n = 1, .sum = 1.0};
}

int32_t dsv_dist_draw(const struct dsv_dist *d, double u) {
        double acc = 0, x = u * d->sum;
        for (int i = 0; i < d->n; i++) {
                acc += d->c[i].p;
                if (x < acc)
                        return d->c[i].id;
        }
        return d->c[d->n - 1].id;
}

int32_t dsv_sample(struct dsv_sampler *s, const float *logits, const struct dsv_sampling *p, uint64_t step) {
        struct dsv_dist d;
        dsv_sampler_dist(s, logits, p, &d);
        if (d.c == &s->one)
                return d.c[0].id;
        return dsv_dist_draw(&d, dsv_sample_u01(p->seed, 0, step));
}

static float finite_lp(double v) { return v > -FLT_MAX ? (float)v : -FLT_MAX; }

float dsv_logprobs(const float *v, int n, int32_t chosen, struct dsv_logprob *top, int n_top) {
        float mx = -INFINITY;
        double sum = 0, lse;
        int k = 0;

        /* the top n_top by insertion (ascending ids: a later equal logit never moves ahead) */
        for (int i = 0; i < n; i++) {
                float x = v[i];
                if (isnan(x))
                        continue;
                if (x > mx)
                        mx = x;
                if (n_top > 0 && (k < n_top || x > top[k - 1].lp)) {
                        int j = k < n_top ? k++ : n_top - 1;
                        while (j > 0 && x > top[j - 1].lp) {
                                top[j] = top[j - 1];
                                j--;
                        }
                        top[j] = (struct dsv_logprob){.id = i, .lp = x};
                }
        }
        if (!isfinite(mx)) { /* no finite logit: nothing is more likely than anything else */
                for (int j = 0; j < k; j++)
                        top[j].lp = -logf((float)n);
                return -logf((float)n);
        }
        /* expf of values <= 0 summed in double: the sum's error stays near float's epsilon
         * (a double exp costs about twice as much at the real vocabulary) */
        for (int i = 0; i < n; i++)
                if (v[i] > -INFINITY) /* not NaN nor -inf */
                        sum += expf(v[i] - mx);
        lse = (double)mx + log(sum);
        for (int j = 0; j < k; j++)
                top[j].lp = finite_lp((double)top[j].lp - lse);
        return isnan(v[chosen]) ? -FLT_MAX : finite_lp((double)v[chosen] - lse);
}
