/* The sampler (daemon/runtime/sampler.c) against a plain reference of its documented math,
 * written here with a comparison sort: the same token for every case, at the real
 * vocabulary (129,280), with ties, -inf and NaN logits, and every filter combination; the
 * penalties and logit bias against values computed by hand; logprobs (dsv_logprobs) against
 * a log-softmax in double and a comparison sort, with ties, -inf and NaN. */
#include "config.h"

#include <float.h>
#include <math.h>

#include "daemon/rng.h"
#include "daemon/runtime/sampler.h"
#include "daemon/util.h"
#include "tests/check.h"

struct cand {
        float p;
        int32_t id;
};

static int cmp_desc(const void *a, const void *b) {
        const struct cand *x = a, *y = b;
        if (x->p != y->p)
                return x->p > y->p ? -1 : 1;
        return x->id < y->id ? -1 : (x->id > y->id);
}

static int32_t ref_argmax(const float *v, int n) {
        int32_t best = 0;
        for (int i = 1; i < n; i++)
                if (v[i] > v[best])
                        best = i;
        return best;
}

static int32_t ref_sample(struct cand *c, const float *logits, int n, const struct dsv_sampling *p, uint64_t step) {
        int k = 0;
        double sum = 0;
        if (p->temperature <= 0.0f || p->top_k == 1)
                return ref_argmax(logits, n);
        float mx = logits[ref_argmax(logits, n)], inv_t = 1.0f / p->temperature;
        for (int i = 0; i < n; i++) {
                float e = expf((logits[i] - mx) * inv_t);
                if (e >= 1e-12f && isfinite(logits[i]))
                        c[k++] = (struct cand){e, i};
        }
        if (k == 0)
                return ref_argmax(logits, n);
        qsort(c, (size_t)k, sizeof(*c), cmp_desc);
        if (p->top_k > 0 && p->top_k < k)
                k = p->top_k;
        if (p->min_p > 0.0f) {
                int j = 1;
                while (j < k && c[j].p >= p->min_p * c[0].p)
                        j++;
                k = j;
        }
        for (int i = 0; i < k; i++)
                sum += c[i].p;
        if (p->top_p > 0.0f && p->top_p < 1.0f) {
                double want = (double)p->top_p * sum, acc = 0;
                int j = 0;
                while (j < k) {
                        acc += c[j++].p;
                        if (acc >= want)
                                break;
                }
                k = j;
                sum = acc;
        }
        double u = dsv_rand_u01(dsv_mix64(p->seed ^ 0x5eed5eed5eedull), step) * sum, acc = 0;
        for (int i = 0; i < k; i++) {
                acc += c[i].p;
                if (u < acc)
                        return c[i].id;
        }
        return c[k - 1].id;
}

/* Penalties and logit bias against values computed by hand (sampler.h's formulas): 8 logits,
 * prompt {0, 1}, output {3, 3, 5, 1}, repetition 2, frequency 0.5, presence 0.25, bias
 * {7: -10, 2: +1}. */
static void test_penalties(void) {
        static const float logits[8] = {2, -1, 0.5f, 3, -2, 1, 0, 4};
        static const int32_t hist[6] = {0, 1, 3, 3, 5, 1};
        static const struct dsv_logit_bias bias[2] = {{7, -10}, {2, 1}};
        /* repetition: 0 -> 2/2, 1 -> -1*2, 3 -> 3/2, 5 -> 1/2; then output counts 3:2 5:1 1:1:
         * 3 -> 1.5 - 1 - 0.25, 5 -> 0.5 - 0.5 - 0.25, 1 -> -2 - 0.5 - 0.25; bias 7 -> -6, 2 -> 1.5 */
        static const float want[8] = {1, -2.75f, 1.5f, 0.25f, -2, -0.25f, 0, -6};
        static const float rep_only[8] = {1, -2, 0.5f, 1.5f, -2, 0.5f, 0, 4};
        struct dsv_sampling p = {.repetition_penalty = 2, .frequency_penalty = 0.5f, .presence_penalty = 0.25f,
                                 .bias = bias, .n_bias = 2};
        struct dsv_sampler s;
        const float *l;

        REQUIRE(dsv_sampler_init(&s, 8) == 0, "oom");
        for (int round = 0; round < 2; round++) { /* the second: nothing left over from the first */
                l = dsv_sampler_adjust(&s, logits, &p, hist, 2, 6);
                for (int i = 0; i < 8; i++)
                        CHECK(fabsf(l[i] - want[i]) < 1e-6f, "round %d: logit %d is %g, by hand %g", round, i, l[i], want[i]);
                for (int i = 0; i < 8; i++)
                        CHECK(s.count[i] == 0, "count[%d] left at %d", i, s.count[i]);
        }
        CHECK(dsv_sample(&s, l, &p, 0) == 2, "greedy after the adjustments takes token 2");
        CHECK(dsv_sample(&s, logits, &p, 0) == 7, "greedy before them takes token 7");
        p = (struct dsv_sampling){.repetition_penalty = 2};
        l = dsv_sampler_adjust(&s, logits, &p, hist, 2, 6);
        for (int i = 0; i < 8; i++)
                CHECK(fabsf(l[i] - rep_only[i]) < 1e-6f, "repetition only: logit %d is %g, by hand %g", i, l[i], rep_only[i]);
        /* presence only with negative sign (encourages), over the output alone: the prompt's 0 is untouched */
        p = (struct dsv_sampling){.presence_penalty = -1};
        l = dsv_sampler_adjust(&s, logits, &p, hist, 2, 6);
        CHECK(l[0] == 2 && l[3] == 4 && l[1] == 0 && l[5] == 2 && l[7] == 4, "presence -1: %g %g %g %g", l[0], l[3], l[1], l[5]);
        /* none asked for: the row itself, no copy */
        p = (struct dsv_sampling){.repetition_penalty = 1};
        CHECK(dsv_sampler_adjust(&s, logits, &p, hist, 2, 6) == logits, "no adjustment copies the row");
        p = (struct dsv_sampling){0};
        CHECK(dsv_sampler_adjust(&s, logits, &p, hist, 2, 6) == logits && !dsv_sampling_adjusts(&p), "a zeroed struct is off");
        dsv_sampler_done(&s);
}

/* dsv_logprobs on v against the reference: log-softmax in double over the non-NaN values,
 * the top n by a comparison sort (descending, ascending id on ties; NaN never listed). */
static void check_logprobs(const float *v, int n, struct cand *c, int n_top, const char *what) {
        struct dsv_logprob top[DSV_LOGPROBS_MAX];
        double mx = -INFINITY, sum = 0, lse;
        int k = 0;
        for (int i = 0; i < n; i++)
                if (!isnan(v[i]))
                        mx = fmax(mx, v[i]);
        for (int i = 0; i < n; i++)
                if (!isnan(v[i]) && v[i] > -INFINITY)
                        sum += exp((double)v[i] - mx);
        lse = mx + log(sum);
        for (int i = 0; i < n; i++)
                if (!isnan(v[i]))
                        c[k++] = (struct cand){.p = v[i], .id = i};
        qsort(c, (size_t)k, sizeof(*c), cmp_desc);
        for (int32_t chosen = 0; chosen < n; chosen += n / 7 + 1) {
                float lp = dsv_logprobs(v, n, chosen, top, n_top);
                double want = isnan(v[chosen]) || v[chosen] == -INFINITY ? -FLT_MAX : v[chosen] - lse;
                CHECK(fabs(lp - want) <= 1e-6 * fmax(1, fabs(want)), "%s: logprob of %d is %.9g, reference %.9g", what,
                      chosen, lp, want);
        }
        dsv_logprobs(v, n, 0, top, n_top);
        for (int j = 0; j < n_top && j < k; j++) {
                double want = c[j].p == -INFINITY ? -FLT_MAX : c[j].p - lse;
                CHECK(top[j].id == c[j].id && fabs(top[j].lp - want) <= 1e-6 * fmax(1, fabs(want)),
                      "%s: top %d of %d is %d %.9g, reference %d %.9g", what, j, n_top, top[j].id, top[j].lp, c[j].id, want);
        }
}

static void test_logprobs(struct cand *c) {
        enum { V = 129280 };
        float *v = malloc(V * sizeof(float));
        REQUIRE(v, "oom");
        for (int trial = 0; trial < 6; trial++) {
                for (int i = 0; i < V; i++) {
                        double x = dsv_rand_normal(500 + (uint64_t)trial, (uint64_t)i) * (trial + 1);
                        v[i] = trial % 2 ? (float)(round(x * 4) / 4) : (float)x; /* odd trials: many ties */
                }
                if (trial >= 4) {
                        v[3] = NAN;
                        v[9] = -INFINITY;
                        v[V / 2] = 40; /* one that dominates: the rest underflow towards -FLT_MAX */
                }
                for (int n_top = 0; n_top <= DSV_LOGPROBS_MAX; n_top += trial % 2 ? 7 : 10) {
                        char what[64];
                        snprintf(what, sizeof(what), "logprobs trial %d top %d", trial, n_top);
                        check_logprobs(v, V, c, n_top, what);
                }
        }
        /* all tied: the lowest ids, each log(1/n) */
        for (int i = 0; i < 100; i++)
                v[i] = 1.5f;
        check_logprobs(v, 100, c, 20, "100 tied logits");
        free(v);
}

/* dsv_sample_greedy (two vectorised passes) against the plain loop it replaces, at lengths
 * around its 16 lanes and at the real vocabulary: coarse values (ties), NaN first, NaN
 * elsewhere, +0 and -0, all -inf, +inf, the maximum in the tail. */
static int plain_greedy(const float *v, int n) {
        int best = 0;
        for (int i = 1; i < n; i++)
                if (v[i] > v[best])
                        best = i;
        return best;
}

static void test_greedy(float *v) {
        static const int lens[] = {1, 2, 15, 16, 17, 31, 33, 100, 129280};
        int cases = 0;
        for (size_t li = 0; li < ARRAY_SIZE(lens); li++)
                for (int kind = 0; kind < 8; kind++) {
                        const int n = lens[li];
                        for (int i = 0; i < n; i++) {
                                double x = dsv_rand_normal(7000 + (uint64_t)kind * 31 + li, (uint64_t)i);
                                v[i] = kind == 5 ? -INFINITY : (float)(round(x * 2) / 2);
                        }
                        if (kind == 1)
                                v[0] = NAN;
                        if (kind == 2)
                                for (int i = 1; i < n; i += 3)
                                        v[i] = NAN;
                        if (kind == 3)
                                for (int i = 0; i < n; i++)
                                        v[i] = i % 2 ? -0.0f : 0.0f;
                        if (kind == 4)
                                for (int i = 0; i < n; i++)
                                        v[i] = i % 2 ? 0.0f : -0.0f;
                        if (kind == 6)
                                v[n / 2] = INFINITY;
                        if (kind == 7)
                                v[n - 1] = 1e30f;
                        int want = plain_greedy(v, n), got = dsv_sample_greedy(v, n);
                        CHECK(got == want, "greedy, %d logits, case %d: %d, the plain loop %d", n, kind, got, want);
                        cases++;
                }
        CHECK(cases == (int)ARRAY_SIZE(lens) * 8, "greedy cases");
}

int main(void) {
        enum { V = 129280 };
        struct dsv_sampler s;
        float *logits = malloc(V * sizeof(float));
        struct cand *c = malloc(V * sizeof(*c));
        int cases = 0;
        REQUIRE(logits && c && dsv_sampler_init(&s, V) == 0, "oom");
        test_penalties();
        test_logprobs(c);
        test_greedy(logits);
        for (int trial = 0; trial < 48; trial++) {
                double scale = trial % 3 == 0 ? 1.0 : trial % 3 == 1 ? 4.0 : 0.25;
                for (int i = 0; i < V; i++) {
                        /* coarse values make many ties; a few -inf and NaN */
                        double x = dsv_rand_normal(1000 + (uint64_t)trial, (uint64_t)i) * scale;
                        logits[i] = trial % 2 ? (float)(round(x * 8) / 8) : (float)x;
                }
                if (trial % 4 == 1) {
                        logits[17] = -INFINITY;
                        logits[V - 1] = NAN;
                }
                struct dsv_sampling p = {.temperature = (float)(0.3 + 0.2 * (trial % 6)),
                                         .top_p = trial % 5 == 0 ? 1.0f : (float)(0.5 + 0.1 * (trial % 5)),
                                         .min_p = trial % 7 == 3 ? 0.05f : 0.0f,
                                         .top_k = trial % 4 == 2 ? 40 : trial % 4 == 3 ? 2000 : 0,
                                         .seed = 77 + (uint64_t)trial};
                for (uint64_t step = 0; step < 6; step++) {
                        int32_t want = ref_sample(c, logits, V, &p, step), got = dsv_sample(&s, logits, &p, step);
                        CHECK(got == want, "trial %d step %llu (T %.2f top_p %.2f min_p %.2f top_k %d): %d, reference %d", trial,
                              (unsigned long long)step, p.temperature, p.top_p, p.min_p, p.top_k, got, want);
                        cases++;
                }
        }
        /* a flat distribution (every candidate tied): the draw walks ids in ascending order */
        for (int i = 0; i < V; i++)
                logits[i] = 0.5f;
        struct dsv_sampling flat = {.temperature = 1.0f, .top_p = 1.0f, .seed = 5};
        for (uint64_t step = 0; step < 8; step++)
                CHECK(dsv_sample(&s, logits, &flat, step) == ref_sample(c, logits, V, &flat, step), "flat step %llu",
                      (unsigned long long)step);
        printf("%d sampled cases equal the reference\n", cases);
        dsv_sampler_done(&s);
        free(logits);
        free(c);
        return test_result("test-sampler");
}
