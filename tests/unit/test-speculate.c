/* Speculative decoding's acceptance rule (daemon/runtime/speculate.c): drafts drawn from q,
 * decided against p, over many seeds on a small vocabulary, with several filter settings:
 *   - the emitted token is distributed as p (each frequency within 5 standard errors), the
 *     drafts as q, and the acceptance rate is sum_x min(p(x), q(x));
 *   - greedy: the token is p's argmax and a draft is accepted iff it is that argmax;
 *   - the same seed gives the same draft, decision and token. */
#include "config.h"

#include <math.h>

#include "daemon/runtime/speculate.h"
#include "daemon/util.h"
#include "tests/check.h"

#define V 12
#define N 100000

static void probs(struct dsv_sampler *s, const float *logits, const struct dsv_sampling *sp, double *out) {
        struct dsv_dist d;
        memset(out, 0, V * sizeof(double));
        dsv_sampler_dist(s, logits, sp, &d);
        for (int i = 0; i < d.n; i++)
                out[d.c[i].id] = d.c[i].p / d.sum;
}

static void distribution(const char *name, const float *lp, const float *lq, struct dsv_sampling sp) {
        struct dsv_sampler s;
        struct dsv_speculator spec;
        struct dsv_draft d = {0};
        double p[V], q[V], emitted[V] = {0}, drafted[V] = {0}, overlap = 0;
        long accepted = 0;
        REQUIRE(dsv_sampler_init(&s, V) == 0 && dsv_speculator_init(&spec, V) == 0, "init");
        probs(&s, lp, &sp, p);
        probs(&s, lq, &sp, q);
        for (int x = 0; x < V; x++)
                overlap += fmin(p[x], q[x]);
        for (int i = 0; i < N; i++) {
                int32_t tok;
                sp.seed = (uint64_t)i * 7919 + 1;
                REQUIRE(dsv_spec_draft(&s, lq, &sp, 3, &d) == 0, "draft");
                accepted += dsv_spec_verify(&spec, &s, lp, &sp, 3, &d, &tok);
                REQUIRE(tok >= 0 && tok < V, "token %d", tok);
                emitted[tok]++;
                drafted[d.token]++;
        }
        double worst = 0;
        for (int x = 0; x < V; x++) {
                double se_p = sqrt(fmax(p[x] * (1 - p[x]), 1e-12) / N), se_q = sqrt(fmax(q[x] * (1 - q[x]), 1e-12) / N);
                double zp = fabs(emitted[x] / N - p[x]) / se_p, zq = fabs(drafted[x] / N - q[x]) / se_q;
                worst = fmax(worst, zp);
                CHECK(zp < 5, "%s: token %d emitted %.5f of the time, p = %.5f (%.1f standard errors)", name, x, emitted[x] / N,
                      p[x], zp);
                CHECK(zq < 5, "%s: token %d drafted %.5f of the time, q = %.5f", name, x, drafted[x] / N, q[x]);
                CHECK(p[x] > 0 || emitted[x] == 0, "%s: token %d outside p's support emitted", name, x);
        }
        double rate = (double)accepted / N, se = sqrt(overlap * (1 - overlap) / N);
        CHECK(fabs(rate - overlap) < 5 * se + 1e-9, "%s: acceptance %.4f, sum min(p, q) = %.4f", name, rate, overlap);
        printf("%s: acceptance %.4f (sum min(p,q) %.4f), largest deviation from p %.2f standard errors\n", name, rate, overlap,
               worst);
        dsv_draft_done(&d);
        dsv_speculator_done(&spec);
        dsv_sampler_done(&s);
}

int main(void) {
        float lp[V], lq[V];
        for (int x = 0; x < V; x++) {
                lp[x] = (float)sin(1.7 * x) * 2.0f;
                lq[x] = (float)cos(0.9 * x + 0.3) * 1.5f;
        }
        lq[5] = -INFINITY; /* q cannot draft 5; p can emit it (only through the residual) */
        distribution("temperature 1", lp, lq, (struct dsv_sampling){.temperature = 1.0f});
        distribution("temperature 0.7, top_k 6", lp, lq, (struct dsv_sampling){.temperature = 0.7f, .top_k = 6});
        distribution("top_p 0.8, min_p 0.05", lp, lq, (struct dsv_sampling){.temperature = 1.3f, .top_p = 0.8f, .min_p = 0.05f});
        /* q == p: every draft accepted */
        distribution("q == p", lp, lp, (struct dsv_sampling){.temperature = 1.0f});

        /* greedy: p's argmax, accepted iff the draft is it; and reproducible by seed */
        {
                struct dsv_sampler s;
                struct dsv_speculator spec;
                struct dsv_draft d = {0}, d2 = {0};
                REQUIRE(dsv_sampler_init(&s, V) == 0 && dsv_speculator_init(&spec, V) == 0, "init");
                int agree = 0;
                for (int i = 0; i < 1000; i++) {
                        float a[V], b[V];
                        uint64_t x = (uint64_t)i * 0x9e3779b97f4a7c15ull + 7;
                        for (int k = 0; k < V; k++) {
                                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                                a[k] = (float)(x % 1000) / 100.0f;
                                b[k] = k == (int)(x % V) ? 20.0f : a[k];
                        }
                        struct dsv_sampling g = {.temperature = 0.0f, .seed = (uint64_t)i};
                        int32_t tok, am = dsv_sample_greedy(a, V);
                        REQUIRE(dsv_spec_draft(&s, b, &g, (uint64_t)i, &d) == 0, "draft");
                        bool acc = dsv_spec_verify(&spec, &s, a, &g, (uint64_t)i, &d, &tok);
                        CHECK(d.token == dsv_sample_greedy(b, V), "greedy draft %d", d.token);
                        CHECK(tok == am && acc == (d.token == am), "greedy: token %d (argmax %d), draft %d accepted %d", tok, am,
                              d.token, acc);
                        agree += acc;
                        /* sampled, twice with the same seed */
                        struct dsv_sampling t = {.temperature = 0.9f, .top_p = 0.95f, .seed = (uint64_t)i};
                        int32_t t1, t2;
                        REQUIRE(dsv_spec_draft(&s, b, &t, 5, &d) == 0 && dsv_spec_draft(&s, b, &t, 5, &d2) == 0, "draft");
                        bool a1 = dsv_spec_verify(&spec, &s, a, &t, 5, &d, &t1), a2 = dsv_spec_verify(&spec, &s, a, &t, 5, &d2, &t2);
                        CHECK(d.token == d2.token && a1 == a2 && t1 == t2, "seed %d: not reproducible", i);
                }
                CHECK(agree > 0 && agree < 1000, "greedy: %d of 1000 drafts accepted (both outcomes expected)", agree);
                for (int k = 0; k < V; k++)
                        CHECK(spec.q[k] == 0, "scratch left dirty at %d", k);
                dsv_draft_done(&d);
                dsv_draft_done(&d2);
                dsv_speculator_done(&spec);
                dsv_sampler_done(&s);
        }
        return test_result("test-speculate");
}
