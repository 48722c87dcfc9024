/* Model invariants in exact numerics on the tiny checkpoint (DESIGN section 4):
 *   prefill == token-by-token decode;  chunked prefill == whole prefill;
 *   context <= index_topk gives dense attention (and a longer context does not);
 *   a batch of sequences at different positions == each alone;
 *   well-conditioned: a 1e-6 perturbation of the embeddings moves logits ~1e-5 and flips
 *   no selection; selection margins stay far above the numerical noise. */
#include "config.h"

#include "tests/unit/modelutil.h"

#define N_TOK 48

static double rel_diff(const float *a, const float *b, size_t n) {
        size_t w;
        double d = max_abs_diff(a, b, n, &w);
        return d / fmax(max_abs(a, n), 1e-30);
}

/* ---- selection recording */
struct rec {
        int32_t topk[8][N_TOK][64];
        int32_t experts[8][N_TOK][16];
        double min_index_margin, min_router_margin;
        int index_boundaries, router_boundaries, zero_ties, sparse, beyond_prefix;
        double perturb;
        uint64_t key;
};

static void on_topk(void *ud, int layer, int seq, int pos, const int32_t *idx, int k, const float *scores, int n) {
        struct rec *r = ud;
        if (layer < 8 && pos < N_TOK && seq == 0)
                memcpy(r->topk[layer][pos], idx, (size_t)MIN(k, 64) * sizeof(int32_t));
        if (n > k) {
                /* a sparse choice that is not simply the first k positions */
                r->sparse++;
                r->beyond_prefix += idx[k - 1] >= k;
        }
        if (scores && n > k) {
                /* margin between the k-th and (k+1)-th score, relative to the score spread */
                float *s = malloc((size_t)n * sizeof(float));
                float hi = -INFINITY, lo = INFINITY;
                memcpy(s, scores, (size_t)n * sizeof(float));
                for (int i = 0; i < n; i++) {
                        hi = fmaxf(hi, s[i]);
                        lo = fminf(lo, s[i]);
                }
                /* partial selection sort for the top k+1 */
                for (int i = 0; i <= k; i++)
                        for (int j = i + 1; j < n; j++)
                                if (s[j] > s[i]) {
                                        float t = s[i];
                                        s[i] = s[j];
                                        s[j] = t;
                                }
                /* ties at exactly zero (every head's relu at zero) break by position in every
                 * implementation alike; any other tie or near-tie is fragile */
                if (!(s[k - 1] == 0 && s[k] == 0)) {
                        double m = (s[k - 1] - s[k]) / fmax(hi - lo, 1e-30);
                        if (getenv("DEBUG_MARGIN") && m < 1e-3)
                                fprintf(stderr, "layer %d pos %d: s[k-1]=%g s[k]=%g range [%g, %g]\n", layer, pos, s[k - 1], s[k], lo, hi);
                        r->min_index_margin = fmin(r->min_index_margin, m);
                        r->index_boundaries++;
                } else {
                        r->zero_ties++;
                }
                free(s);
        }
}

static void on_experts(void *ud, int layer, int seq, int pos, const int32_t *ids, const float *w, int k,
                       const float *scores, int n) {
        struct rec *r = ud;
        if (layer < 8 && pos < N_TOK && seq == 0)
                memcpy(r->experts[layer][pos], ids, (size_t)MIN(k, 16) * sizeof(int32_t));
        if (scores) {
                /* margin of the weakest chosen expert over the best unchosen one (biased scores) */
                float weakest = INFINITY, best_out = -INFINITY;
                for (int e = 0; e < n; e++) {
                        bool in = false;
                        for (int j = 0; j < k; j++)
                                in |= ids[j] == e;
                        if (in)
                                weakest = fminf(weakest, scores[e]);
                        else
                                best_out = fmaxf(best_out, scores[e]);
                }
                /* only meaningful when the best unchosen expert is not excluded by its group;
                 * record the smallest positive gap as a conservative margin */
                double g = fabs((double)weakest - best_out);
                r->min_router_margin = fmin(r->min_router_margin, g);
                r->router_boundaries++;
        }
}

static void on_embed(void *ud, int seq, int pos, float *x, int dim) {
        struct rec *r = ud;
        for (int i = 0; i < dim; i++) {
                r->key = r->key * 6364136223846793005ull + 1442695040888963407ull;
                x[i] += (float)(r->perturb * ((r->key >> 63) ? 1.0 : -1.0));
        }
}

int main(void) {
        struct dsv_backend *be;
        REQUIRE(dsv_backend_cpu_new(0, &be) == 0, "backend");
        const char *dir = fixture_tiny("invariants-tiny", 7);
        struct dsv_model *m = load_model(be, dir, DSV_NUMERICS_EXACT);
        const struct dsv_model_config *c = dsv_model_get_config(m);
        const int V = c->vocab_size;
        int32_t toks[N_TOK];
        float *whole = malloc((size_t)N_TOK * V * sizeof(float)), *other = malloc((size_t)N_TOK * V * sizeof(float));
        REQUIRE(whole && other, "oom");
        make_tokens(toks, N_TOK, V, 3);

        /* prefill == decode, chunked == whole */
        run_prompt(m, toks, N_TOK, N_TOK, whole);
        run_prompt(m, toks, N_TOK, 1, other);
        double d = rel_diff(whole, other, (size_t)N_TOK * V);
        printf("prefill vs token-by-token decode: max rel diff %.3g\n", d);
        CHECK(d < 1e-5, "prefill != decode (%.3g)", d);
        int chunks[] = {5, 16, 17};
        for (size_t i = 0; i < ARRAY_SIZE(chunks); i++) {
                run_prompt(m, toks, N_TOK, chunks[i], other);
                d = rel_diff(whole, other, (size_t)N_TOK * V);
                printf("chunked prefill (%d) vs whole: max rel diff %.3g\n", chunks[i], d);
                CHECK(d < 1e-5, "chunk %d != whole (%.3g)", chunks[i], d);
        }

        /* context <= index_topk: sparse == dense exactly; longer contexts differ */
        {
                struct dsv_model_hooks h = {.force_dense = true};
                int n = c->index_topk;
                run_prompt(m, toks, n, n, whole);
                dsv_model_set_hooks(m, &h);
                run_prompt(m, toks, n, n, other);
                d = max_abs_diff(whole, other, (size_t)n * V, NULL);
                printf("context %d <= index_topk: sparse vs dense max diff %.3g\n", n, d);
                CHECK(d == 0, "sparse != dense at context <= index_topk (%.3g)", d);
                run_prompt(m, toks, N_TOK, N_TOK, other);
                dsv_model_set_hooks(m, NULL);
                run_prompt(m, toks, N_TOK, N_TOK, whole);
                d = rel_diff(whole + (size_t)(N_TOK - 1) * V, other + (size_t)(N_TOK - 1) * V, (size_t)V);
                printf("context %d > index_topk: sparse vs dense last-position rel diff %.3g (must differ)\n", N_TOK, d);
                CHECK(d > 1e-4, "sparse selection has no effect at context %d", N_TOK);
        }

        /* batch of sequences at different positions == each alone */
        {
                enum { S = 3 };
                int plen[S] = {11, 30, 1}, step_new[S] = {1, 5, 1};
                int32_t st[S][48];
                struct dsv_kv_pool *kv;
                struct dsv_kv_seq seqs[S] = {{0}};
                struct dsv_kv_seq *sp[S] = {&seqs[0], &seqs[1], &seqs[2]};
                struct dsv_error err = {{0}};
                float *batched = malloc((size_t)7 * V * sizeof(float));
                REQUIRE(batched, "oom");
                REQUIRE(dsv_kv_pool_new(be, c, DSV_KV_F32, 8, &kv) == 0, "pool");
                for (int s = 0; s < S; s++) {
                        make_tokens(st[s], 48, V, 100 + (uint64_t)s);
                        REQUIRE(dsv_kv_seq_reserve(kv, &seqs[s], 48) == 0, "reserve");
                        /* prefill each alone to its own length */
                        int32_t pos[48], sq[48] = {0};
                        for (int i = 0; i < plen[s]; i++)
                                pos[i] = i;
                        struct dsv_kv_seq *one[1] = {&seqs[s]};
                        struct dsv_batch b = {.n_tokens = plen[s], .token = st[s], .pos = pos, .seq = sq, .n_seqs = 1, .seqs = one};
                        bool want[48] = {0};
                        b.want_logits = want;
                        REQUIRE(dsv_model_forward(m, kv, &b, batched, &err) == 0, "%s", err.msg);
                }
                /* one mixed batch, tokens interleaved: seq0 decodes 1, seq1 prefills 5, seq2 decodes 1 */
                int32_t tok[7], pos[7], sq[7];
                int order[7][2] = {{1, 2}, {0, 0}, {1, 0}, {2, 0}, {1, 4}, {1, 1}, {1, 3}}; /* (seq, j) */
                for (int i = 0; i < 7; i++) {
                        int s = order[i][0], j = order[i][1];
                        tok[i] = st[s][plen[s] + j];
                        pos[i] = plen[s] + j;
                        sq[i] = s;
                }
                struct dsv_batch b = {.n_tokens = 7, .token = tok, .pos = pos, .seq = sq, .n_seqs = S, .seqs = sp};
                REQUIRE(dsv_model_forward(m, kv, &b, batched, &err) == 0, "%s", err.msg);
                for (int s = 0; s < S; s++)
                        CHECK(seqs[s].len == plen[s] + step_new[s], "seq %d len %d", s, seqs[s].len);
                /* regression: one sequence repeating a position (a malformed batch) is refused,
                 * named, and changes nothing (it crashed in the forward pass) */
                {
                        int32_t rt[2] = {st[1][0], st[1][1]}, rp[2] = {seqs[1].len, seqs[1].len}, rs[2] = {1, 1};
                        struct dsv_batch rb = {.n_tokens = 2, .token = rt, .pos = rp, .seq = rs, .n_seqs = S, .seqs = sp};
                        int len_before = seqs[1].len;
                        CHECK(dsv_model_forward(m, kv, &rb, batched, &err) == -EINVAL && strstr(err.msg, "appears twice"),
                              "repeated position: %s", err.msg);
                        CHECK(seqs[1].len == len_before, "a refused batch advanced the sequence");
                }
                /* each alone */
                double worst = 0;
                for (int s = 0; s < S; s++) {
                        int n = plen[s] + step_new[s];
                        float *alone = malloc((size_t)n * V * sizeof(float));
                        REQUIRE(alone, "oom");
                        run_prompt(m, st[s], plen[s], plen[s], alone);
                        /* continue in the same way the batch did: one decode or a 5-token chunk */
                        float *full = malloc((size_t)n * V * sizeof(float));
                        REQUIRE(full, "oom");
                        /* run prefix then step as one sequence */
                        {
                                struct dsv_kv_pool *kv2;
                                struct dsv_kv_seq q = {0};
                                struct dsv_kv_seq *one[1] = {&q};
                                int32_t p2[48], s2[48] = {0};
                                REQUIRE(dsv_kv_pool_new(be, c, DSV_KV_F32, 2, &kv2) == 0 && dsv_kv_seq_reserve(kv2, &q, 48) == 0, "pool");
                                for (int i = 0; i < n; i++)
                                        p2[i] = i;
                                struct dsv_batch b1 = {.n_tokens = plen[s], .token = st[s], .pos = p2, .seq = s2, .n_seqs = 1, .seqs = one};
                                REQUIRE(dsv_model_forward(m, kv2, &b1, full, &err) == 0, "%s", err.msg);
                                struct dsv_batch b2 = {.n_tokens = step_new[s], .token = st[s] + plen[s], .pos = p2 + plen[s],
                                                       .seq = s2, .n_seqs = 1, .seqs = one};
                                REQUIRE(dsv_model_forward(m, kv2, &b2, full + (size_t)plen[s] * V, &err) == 0, "%s", err.msg);
                                dsv_kv_seq_release(kv2, &q);
                                dsv_kv_pool_free(kv2);
                        }
                        for (int i = 0; i < 7; i++) {
                                if (sq[i] != s)
                                        continue;
                                double dd = rel_diff(full + (size_t)pos[i] * V, batched + (size_t)i * V, (size_t)V);
                                worst = fmax(worst, dd);
                                CHECK(dd < 1e-5, "batch row %d (seq %d pos %d) differs from alone: %.3g", i, s, pos[i], dd);
                        }
                        free(alone);
                        free(full);
                }
                printf("mixed batch (decode + prefill chunk + decode) vs each alone: max rel diff %.3g\n", worst);
                for (int s = 0; s < S; s++)
                        dsv_kv_seq_release(kv, &seqs[s]);
                dsv_kv_pool_free(kv);
                free(batched);
        }

        /* conditioning: perturbation and selection margins */
        {
                struct rec *r0 = calloc(1, sizeof(*r0)), *r1 = calloc(1, sizeof(*r1));
                REQUIRE(r0 && r1, "oom");
                r0->min_index_margin = r0->min_router_margin = INFINITY;
                r1->min_index_margin = r1->min_router_margin = INFINITY;
                struct dsv_model_hooks h = {.ud = r0, .on_topk = on_topk, .on_experts = on_experts, .want_index_scores = true,
                                            .want_router_scores = true};
                dsv_model_set_hooks(m, &h);
                run_prompt(m, toks, N_TOK, N_TOK, whole);
                r1->perturb = 1e-6;
                r1->key = 99;
                h.ud = r1;
                h.on_embed = on_embed;
                dsv_model_set_hooks(m, &h);
                run_prompt(m, toks, N_TOK, N_TOK, other);
                dsv_model_set_hooks(m, NULL);
                d = max_abs_diff(whole, other, (size_t)N_TOK * V, NULL);
                printf("embedding perturbation 1e-6: max |d logits| = %.3g (gain %.3g)\n", d, d / 1e-6);
                CHECK(d > 1e-8 && d < 1e-4, "logits moved by %.3g for a 1e-6 input perturbation", d);
                CHECK(memcmp(r0->topk, r1->topk, sizeof(r0->topk)) == 0, "a 1e-6 perturbation changed an indexer selection");
                CHECK(memcmp(r0->experts, r1->experts, sizeof(r0->experts)) == 0,
                      "a 1e-6 perturbation changed an expert selection");
                printf("indexer: min margin at the top-k boundary %.3g of the score range over %d selections (%d ties at zero)\n",
                       r0->min_index_margin, r0->index_boundaries, r0->zero_ties);
                printf("router: min gap between chosen and unchosen biased scores %.3g over %d tokens\n",
                       r0->min_router_margin, r0->router_boundaries);
                printf("indexer: %d sparse selections, %d of them reach past the first index_topk positions\n", r0->sparse,
                       r0->beyond_prefix);
                CHECK(r0->sparse > 0 && r0->beyond_prefix > r0->sparse / 4, "sparse selection is not exercised");
                CHECK(r0->index_boundaries == 0 || r0->min_index_margin > 1e-3, "indexer margin %.3g too small", r0->min_index_margin);
                CHECK(r0->min_router_margin > 1e-3, "router margin %.3g too small", r0->min_router_margin);
                /* routing is not collapsed: many distinct experts are used */
                int used[64] = {0}, n_used = 0;
                for (int l = c->first_k_dense_replace; l < c->num_hidden_layers; l++)
                        for (int p = 0; p < N_TOK; p++)
                                for (int j = 0; j < c->num_experts_per_tok; j++)
                                        used[r0->experts[l][p][j] & 63] = 1;
                for (int e = 0; e < 64; e++)
                        n_used += used[e];
                printf("experts used: %d of %d\n", n_used, c->n_routed_experts);
                CHECK(n_used >= c->n_routed_experts * 3 / 4, "routing collapsed: %d experts used", n_used);
                free(r0);
                free(r1);
        }

        /* logits are not degenerate */
        {
                int distinct = 0;
                int seen[N_TOK];
                for (int p = 0; p < N_TOK; p++) {
                        const float *l = whole + (size_t)p * V;
                        int a = 0;
                        for (int i = 1; i < V; i++)
                                a = l[i] > l[a] ? i : a;
                        bool dup = false;
                        for (int q = 0; q < distinct; q++)
                                dup |= seen[q] == a;
                        if (!dup)
                                seen[distinct++] = a;
                }
                printf("distinct argmax over %d positions: %d\n", N_TOK, distinct);
                CHECK(distinct > N_TOK / 2, "logits look degenerate (%d distinct argmax)", distinct);
        }

        free(whole);
        free(other);
        dsv_model_free(m);
        dsv_backend_free(be);
        return test_result("test-model-invariants");
}
