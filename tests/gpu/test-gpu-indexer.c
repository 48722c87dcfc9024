/* CUDA backend vs CPU reference: the lightning indexer + top-k op. 64 heads x 128 dims,
 * top-2048, FP8 (faithful) and f32 (exact) key caches; several sequences with shuffled page
 * tables; contexts of 1 token, shorter than, equal to and just above top-k, 70K, and 1M
 * candidates (1 head x 16 dims, so the CPU reference stays quick); all-tied scores (w = 0),
 * NaN and inf key scales. Scores are compared with a tolerance; selections must be the same
 * sets, except that an element may swap with another whose reference score lies within a
 * rounding-sized distance of the k-th best (the GPU sums in a different order). On the CPU
 * emulation of CUDA: 8 heads x 128 dims, top-64, contexts up to 3000 (same edge cases). */
#include "config.h"

#include "tests/gpu/gputest.h"

static struct gt g;

struct iq {
        int seq;
        int32_t pos;
        bool zero_w; /* all-tied scores */
};

static int cmp_desc_f(const void *a, const void *b) {
        float x = *(const float *)a, y = *(const float *)b;
        return (x < y) - (x > y);
}

/* Checks one query's GPU selection against the CPU's, given the CPU scores of that query. */
static void check_selection(const char *what, int64_t t, const int32_t *ref, const int32_t *got, int topk, int64_t n,
                            const float *sc) {
        const int k = (int)(n < topk ? n : topk);
        int bad_order = 0, bad_pad = 0;
        for (int i = 0; i < topk; i++) {
                if (i < k) {
                        bad_order += got[i] < 0 || got[i] >= n || (i > 0 && got[i] <= got[i - 1]);
                } else {
                        bad_pad += got[i] != -1;
                }
        }
        CHECK(bad_order == 0 && bad_pad == 0, "%s: query %lld: selection not ascending/in range (%d) or not -1 padded (%d)", what,
                 (long long)t, bad_order, bad_pad);
        if (memcmp(ref, got, (size_t)topk * 4) == 0)
                return;
        /* sets differ: every difference must sit at the threshold */
        float *tmp = malloc((size_t)n * 4);
        REQUIRE(tmp, "oom");
        double amax = 0;
        for (int64_t s = 0; s < n; s++) {
                tmp[s] = sc[s] != sc[s] ? -INFINITY : sc[s];
                if (isfinite(tmp[s]))
                        amax = fmax(amax, fabs(tmp[s]));
        }
        qsort(tmp, (size_t)n, 4, cmp_desc_f);
        const double thr = tmp[k - 1], eps = 1e-5 * amax;
        free(tmp);
        int i = 0, j = 0, swaps = 0, far = 0;
        while (i < k || j < k) {
                if (j >= k || (i < k && ref[i] < got[j])) { /* only the CPU has ref[i] */
                        far += !(fabs((double)(sc[ref[i]] != sc[ref[i]] ? -INFINITY : sc[ref[i]]) - thr) <= eps);
                        swaps++;
                        i++;
                } else if (i >= k || got[j] < ref[i]) { /* only the GPU has got[j] */
                        far += !(fabs((double)(sc[got[j]] != sc[got[j]] ? -INFINITY : sc[got[j]]) - thr) <= eps);
                        swaps++;
                        j++;
                } else {
                        i++;
                        j++;
                }
        }
        printf("    query %lld: %d elements swapped at the threshold %.6g (eps %.2g), %d far from it\n", (long long)t, swaps, thr, eps,
               far);
        CHECK(far == 0, "%s: query %lld: %d selected elements differ away from the threshold", what, (long long)t, far);
}

static void test_indexer(bool faithful, int H, int d, int topk, int n_seq, const int64_t *ctx, const struct iq *qs, int T,
                         bool want_scores, const char *label) {
        struct dsv_kv_layout L;
        char what[200];
        const int layer = 1, n_layers = 2;
        dsv_kv_layout_make(&L, faithful ? DSV_KV_FP8 : DSV_KV_F32, n_layers, 128, 16, d, 64);
        int64_t max_pages = 0, total_pages = 0;
        for (int s = 0; s < n_seq; s++) {
                int64_t p = DIV_ROUND_UP(ctx[s], 64);
                max_pages = p > max_pages ? p : max_pages;
                total_pages += p;
        }
        const int64_t max_ctx = max_pages * 64;
        const size_t pool_bytes = (size_t)total_pages * (size_t)n_layers * L.layer_page_bytes;
        uint8_t *pool = calloc(pool_bytes, 1);
        int32_t *bt = malloc((size_t)(n_seq * max_pages) * 4), *perm = malloc((size_t)total_pages * 4);
        REQUIRE(pool && bt && perm, "oom (pool %zu bytes)", pool_bytes);
        for (int64_t i = 0; i < total_pages; i++)
                perm[i] = (int32_t)i;
        for (int64_t i = total_pages - 1; i > 0; i--) {
                int64_t j = (int64_t)(gt_u01(40, (uint64_t)i) * (double)(i + 1));
                int32_t x = perm[i];
                perm[i] = perm[j];
                perm[j] = x;
        }
        /* page tables and keys */
        float *kf = malloc((size_t)d * 4);
        uint8_t *kq = malloc((size_t)d);
        REQUIRE(kf && kq, "oom");
        int64_t next = 0;
        for (int s = 0; s < n_seq; s++) {
                for (int64_t p = 0; p < max_pages; p++)
                        bt[s * max_pages + p] = p < DIV_ROUND_UP(ctx[s], 64) ? perm[next++] : -1;
                for (int64_t pos = 0; pos < ctx[s]; pos++) {
                        int64_t page = bt[s * max_pages + pos / 64], off = pos % 64;
                        uint8_t *lp = pool + ((size_t)page * n_layers + layer) * L.layer_page_bytes;
                        for (int i = 0; i < d; i++)
                                kf[i] = gt_randn(41 + (uint64_t)s, (uint64_t)(pos * d + i));
                        if (faithful) {
                                float sc = dsv_act_scale(0);
                                float amax = 0;
                                for (int i = 0; i < d; i++)
                                        amax = fmaxf(amax, fabsf(kf[i]));
                                sc = dsv_act_scale(amax);
                                for (int i = 0; i < d; i++)
                                        kq[i] = dsv_quant_e4m3(kf[i], 1.0f / sc);
                                if (pos == 5)
                                        sc = NAN; /* a NaN score */
                                if (pos == 7)
                                        sc = INFINITY; /* +inf (or NaN where the sum is 0) */
                                memcpy(lp + L.idx_off + (size_t)off * L.idx_rec, kq, (size_t)d);
                                memcpy(lp + L.idx_scale_off + (size_t)off * L.idx_scale_rec, &sc, 4);
                        } else {
                                memcpy(lp + L.idx_off + (size_t)off * L.idx_rec, kf, (size_t)d * 4);
                        }
                }
        }
        /* queries */
        const int nbh = DIV_ROUND_UP(d, 128);
        uint8_t *q8 = malloc((size_t)T * H * d);
        float *qf = malloc((size_t)T * H * d * 4), *qsc = malloc((size_t)T * H * nbh * 4), *wv = malloc((size_t)T * H * 4);
        int32_t *seq = malloc((size_t)T * 4), *pos = malloc((size_t)T * 4);
        REQUIRE(q8 && qf && qsc && wv && seq && pos, "oom");
        for (int t = 0; t < T; t++) {
                seq[t] = qs[t].seq;
                pos[t] = qs[t].pos;
                for (int h = 0; h < H; h++) {
                        float *qh = qf + ((size_t)t * H + h) * d;
                        float amax = 0;
                        for (int i = 0; i < d; i++) {
                                qh[i] = gt_randn(50 + (uint64_t)t, (uint64_t)(h * d + i));
                                amax = fmaxf(amax, fabsf(qh[i]));
                        }
                        float sc = dsv_act_scale(amax);
                        for (int i = 0; i < d; i++)
                                q8[((size_t)t * H + h) * d + i] = dsv_quant_e4m3(qh[i], 1.0f / sc);
                        qsc[(size_t)t * H * nbh + (size_t)h * nbh] = sc;
                        wv[(size_t)t * H + h] = qs[t].zero_w ? 0.0f : gt_randn(51, (uint64_t)(t * H + h));
                }
        }
        struct gbuf gpool, gbt, gseq, gpos, gq, gqs, gw, gidx, gsc;
        gb_new(&g, &gpool, DSV_U8, 1, (int64_t)pool_bytes, 0);
        gb_new(&g, &gbt, DSV_I32, n_seq, max_pages, 0);
        gb_new(&g, &gseq, DSV_I32, 1, T, 0);
        gb_new(&g, &gpos, DSV_I32, 1, T, 0);
        gb_new(&g, &gq, faithful ? DSV_U8 : DSV_F32, T, (int64_t)H * d, 0);
        gb_new(&g, &gqs, DSV_F32, T, (int64_t)H * nbh, 0);
        gb_new(&g, &gw, DSV_F32, T, H, 0);
        gb_new(&g, &gidx, DSV_I32, T, topk, 1);
        const int64_t W = max_ctx + 5; /* wider than any context: -inf tail */
        gb_new(&g, &gsc, DSV_F32, T, W, 0);
        gb_set(&g, &gpool, pool);
        gb_set(&g, &gbt, bt);
        gb_set(&g, &gseq, seq);
        gb_set(&g, &gpos, pos);
        gb_set(&g, &gq, faithful ? (void *)q8 : (void *)qf);
        gb_set(&g, &gqs, qsc);
        gb_set(&g, &gw, wv);
        gb_poison(&g, &gidx);
        gb_poison(&g, &gsc);
        struct dsv_op ops[2];
        for (int s = 0; s < 2; s++) {
                ops[s] = (struct dsv_op){.type = DSV_OP_INDEXER_TOPK, .faithful = faithful};
                ops[s].indexer_topk = (struct dsv_op_indexer_topk){
                        .idx = &gidx.t[s], .scores = (s == 0 || want_scores) ? &gsc.t[s] : NULL, .q = &gq.t[s], .q_scale = &gqs.t[s],
                        .w = &gw.t[s], .kv = {&L, gpool.t[s].data, layer}, .at = {&gseq.t[s], &gpos.t[s], &gbt.t[s]}, .n_heads = H,
                        .head_dim = d, .topk = topk, .w_scale1 = (float)pow(H, -0.5), .w_scale2 = (float)pow(d, -0.5),
                        .faithful = faithful};
        }
        snprintf(what, sizeof(what), "indexer %s %s H=%d d=%d topk=%d T=%d max_ctx=%lld%s", label, faithful ? "fp8" : "f32", H, d, topk,
                 T, (long long)max_ctx, want_scores ? " +scores" : "");
        double t0 = gt_now();
        if (gt_run(&g, ops, what) == 0) {
                int32_t *i0 = malloc((size_t)T * topk * 4), *i1 = malloc((size_t)T * topk * 4);
                float *s0 = malloc((size_t)(T * W) * 4), *s1 = malloc((size_t)(T * W) * 4);
                REQUIRE(i0 && i1 && s0 && s1, "oom");
                gb_get(&g, &gidx, 0, i0, what);
                gb_get(&g, &gidx, 1, i1, what);
                gb_get(&g, &gsc, 0, s0, what);
                if (want_scores) {
                        gb_get(&g, &gsc, 1, s1, what);
                        gt_cmp_f32(what, s0, s1, (size_t)(T * W), (struct gt_tol){1e-9, 1e-6, 1e-4, 0});
                }
                int same = 0;
                for (int t = 0; t < T; t++) {
                        same += memcmp(i0 + (size_t)t * topk, i1 + (size_t)t * topk, (size_t)topk * 4) == 0;
                        check_selection(what, t, i0 + (size_t)t * topk, i1 + (size_t)t * topk, topk, (int64_t)pos[t] + 1,
                                        s0 + (size_t)t * W);
                }
                printf("  %-58s %d of %d selections identical (%.2f s)\n", what, same, T, gt_now() - t0);
                free(i0);
                free(i1);
                free(s0);
                free(s1);
        }
        gb_free(&g, &gpool);
        gb_free(&g, &gbt);
        gb_free(&g, &gseq);
        gb_free(&g, &gpos);
        gb_free(&g, &gq);
        gb_free(&g, &gqs);
        gb_free(&g, &gw);
        gb_free(&g, &gidx);
        gb_free(&g, &gsc);
        free(pool);
        free(bt);
        free(perm);
        free(kf);
        free(kq);
        free(q8);
        free(qf);
        free(qsc);
        free(wv);
        free(seq);
        free(pos);
}

GT_MAIN(indexer) {
        int r = gt_open(&g, "test-gpu-indexer");
        if (r)
                return r;
        if (g.emulated) {
                for (int f = 1; f >= 0; f--) {
                        const int64_t ctx[3] = {65, 300, 40};
                        const struct iq qs[] = {{0, 0, false},  {0, 30, false},  {0, 63, false}, {0, 64, false}, {1, 299, false},
                                                {1, 150, false}, {1, 299, true}, {2, 39, false}, {1, 200, false}};
                        const int T = (int)(sizeof(qs) / sizeof(qs[0]));
                        test_indexer(f, 8, 128, 64, 3, ctx, qs, T, false, "mixed");
                        test_indexer(f, 8, 128, 64, 3, ctx, qs, T, true, "mixed");
                        const int64_t ctx1[1] = {1};
                        const struct iq q1[] = {{0, 0, false}};
                        test_indexer(f, 8, 128, 64, 1, ctx1, q1, 1, true, "single token");
                        const int64_t ctx2[1] = {3000};
                        const struct iq q2[] = {{0, 2999, false}, {0, 2000, false}, {0, 2048, true}, {0, 64, false}};
                        test_indexer(f, 2, 128, 64, 1, ctx2, q2, 4, false, "3000");
                        const int64_t ctx4[1] = {777};
                        const struct iq q4[] = {{0, 776, false}, {0, 500, false}};
                        test_indexer(f, 3, 40, 100, 1, ctx4, q4, 2, true, "odd");
                }
                gt_close(&g);
                return test_result("test-gpu-indexer");
        }
        for (int f = 1; f >= 0; f--) {
                const int64_t ctx[3] = {2049, 5000, 300};
                const struct iq qs[] = {{0, 0, false},    {0, 100, false},  {0, 2047, false}, {0, 2048, false}, {1, 4999, false},
                                        {1, 3000, false}, {1, 4999, true},  {2, 299, false},  {1, 2500, false}};
                const int T = (int)(sizeof(qs) / sizeof(qs[0]));
                test_indexer(f, 64, 128, 2048, 3, ctx, qs, T, false, "mixed");
                test_indexer(f, 64, 128, 2048, 3, ctx, qs, T, true, "mixed");
                const int64_t ctx1[1] = {1};
                const struct iq q1[] = {{0, 0, false}};
                test_indexer(f, 64, 128, 2048, 1, ctx1, q1, 1, true, "single token");
                const int64_t ctx2[1] = {70000};
                const struct iq q2[] = {{0, 69999, false}, {0, 40000, false}, {0, 65536, true}, {0, 2048, false}};
                test_indexer(f, 64, 128, 2048, 1, ctx2, q2, 4, false, "70K");
                const int64_t ctx3[2] = {1 << 20, 700001};
                const struct iq q3[] = {{0, (1 << 20) - 1, false}, {1, 700000, false}, {0, 1000000, true}};
                test_indexer(f, 1, 16, 2048, 2, ctx3, q3, 3, false, "1M candidates");
                const int64_t ctx4[1] = {777};
                const struct iq q4[] = {{0, 776, false}, {0, 500, false}};
                test_indexer(f, 3, 40, 100, 1, ctx4, q4, 2, true, "odd");
        }
        gt_close(&g);
        return test_result("test-gpu-indexer");
}
