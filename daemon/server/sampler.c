/* Sampling (see sampler.h). */
#include "config.h"

#include "daemon/server/sampler.h"

#include <math.h>
#include <stdlib.h>

#include "daemon/rng.h"
#include "daemon/util.h"

int dsv_sampler_init(struct dsv_sampler *s, int n_vocab) {
        s->n_vocab = n_vocab;
        s->cand = malloc((size_t)n_vocab * sizeof(*s->cand));
        return s->cand ? 0 : -ENOMEM;
}

void dsv_sampler_done(struct dsv_sampler *s) {
        free(s->cand);
        s->cand = NULL;
}

static int cmp_desc(const void *a, const void *b) {
        const struct dsv_cand *x = a, *y = b;
        if (x->p != y->p)
                return x->p > y->p ? -1 : 1;
        return x->id < y->id ? -1 : (x->id > y->id);
}

static int32_t argmax(const float *v, int n) {
        int32_t best = 0;
        for (int i = 1; i < n; i++)
                if (v[i] > v[best])
                        best = i;
        return best;
}

int32_t dsv_sample(struct dsv_sampler *s, const float *logits, const struct dsv_sampling *p, uint64_t step) {
        int n = s->n_vocab, k = 0;
        float mx, inv_t;
        double sum = 0, u, acc;

        if (p->temperature <= 0.0f || p->top_k == 1)
                return argmax(logits, n);
        mx = logits[argmax(logits, n)];
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
                return argmax(logits, n);
        qsort(s->cand, (size_t)k, sizeof(*s->cand), cmp_desc);
        if (p->top_k > 0 && p->top_k < k)
                k = p->top_k;
        if (p->min_p > 0.0f) {
                float thr = p->min_p * s->cand[0].p;
                int j = 1;
                while (j < k && s->cand[j].p >= thr)
                        j++;
                k = j;
        }
        for (int i = 0; i < k; i++)
                sum += s->cand[i].p;
        if (p->top_p > 0.0f && p->top_p < 1.0f) { /* 0 or 1: off */
                double want = (double)p->top_p * sum, c = 0;
                int j = 0;
                while (j < k) {
                        c += s->cand[j].p;
                        j++;
                        if (c >= want)
                                break;
                }
                k = j;
                sum = c;
        }
        u = dsv_rand_u01(dsv_mix64(p->seed ^ 0x5eed5eed5eedull), step) * sum;
        acc = 0;
        for (int i = 0; i < k; i++) {
                acc += s->cand[i].p;
                if (u < acc)
                        return s->cand[i].id;
        }
        return s->cand[k - 1].id;
}
