/* On-device sampling, the optional sample op (DSV_OP_SAMPLE) of the CUDA backend, vs the
 * daemon's CPU sampler (daemon/runtime/sampler.c; the CPU backend has no sample op, which is
 * checked too) on the vocabulary size of the 671B model: greedy rows must agree exactly;
 * sampled rows (temperature, top-k, top-p, min-p) draw with the same (seed, step) random
 * numbers and must agree except where a draw lands within rounding of a boundary between two
 * candidates (the GPU sums probabilities in a tree, the CPU left to right), so at least 99% of
 * them. Special rows: NaN and inf logits, all-equal logits. Bad arguments are refused
 * (supports_op false, -EINVAL). Odd steps go through the op directly (tokens in device
 * memory), even ones through dsv_backend_sample. On the CPU emulation of CUDA: a vocabulary
 * of 5000 (still several 1024-wide scan tiles) and 20 steps. Also a family of test-gpu-ops
 * (GT_CONFORMANCE), where its op runs count in the census. */
#include "config.h"

#include "daemon/runtime/sampler.h"
#include "tests/gpu/gputest.h"

static struct gt g;

GT_MAIN(sample) {
        int r = gt_open(&g, "test-gpu-sample");
        if (r)
                return r;
        const int V = g.emulated ? 5000 : 129280, n = 10, steps = g.emulated ? 20 : 100;
        const struct dsv_sample_params base[10] = {
                {0.0f, 1.0f, 0.0f, 0, 1, 0},     /* greedy */
                {0.7f, 1.0f, 0.0f, 1, 2, 0},     /* top_k 1: greedy */
                {0.7f, 0.9f, 0.0f, 0, 3, 0},     /* temperature + top-p */
                {1.0f, 1.0f, 0.0f, 0, 4, 0},     /* the full distribution */
                {1.0f, 1.0f, 0.05f, 0, 5, 0},    /* min-p */
                {0.8f, 0.95f, 0.0f, 50, 6, 0},   /* top-k + top-p */
                {1.5f, 0.5f, 0.0f, 0, 7, 0},     /* hot, narrow top-p */
                {1.0f, 1.0f, 0.0f, 0, 8, 0},     /* row with NaN / inf logits */
                {0.0f, 1.0f, 0.0f, 0, 9, 0},     /* greedy over all-equal logits: id 0 */
                {1.0f, 1.0f, 0.0f, 0, 10, 0},    /* sampled over all-equal logits */
        };
        float *lg = malloc((size_t)n * V * 4);
        REQUIRE(lg, "oom");
        for (int t = 0; t < n; t++) {
                float *row = lg + (size_t)t * V;
                for (int i = 0; i < V; i++)
                        row[i] = gt_randn(80 + (uint64_t)t, (uint64_t)i) * 3.0f;
                row[(t * 7919) % V] += 12.0f; /* a clear favourite, and a runner-up */
                row[(t * 104729) % V] += 10.0f;
        }
        float *r7 = lg + (size_t)7 * V;
        r7[3] = NAN;
        r7[10] = INFINITY;
        r7[11] = -INFINITY;
        for (int i = 0; i < V; i++) {
                lg[(size_t)8 * V + i] = 1.5f;
                lg[(size_t)9 * V + i] = 0.25f;
        }
        /* row 7 has +inf: the CPU's max is inf, every (l - inf) is -inf or NaN: no candidate but
         * the argmax itself is inf... both must pick the same */
        void *dev, *dtok;
        struct dsv_backend *be = g.be[1];
        REQUIRE(be->ops->alloc(be, (size_t)n * V * 4, &dev) == 0, "alloc");
        REQUIRE(be->ops->alloc(be, (size_t)n * 4, &dtok) == 0, "alloc");
        REQUIRE(be->ops->upload(be, dev, lg, (size_t)n * V * 4) == 0, "upload");
        struct dsv_tensor logits = dsv_tensor_2d(DSV_F32, dev, n, V), dtokens = dsv_tensor_2d(DSV_I32, dtok, 1, n);
        struct dsv_op op = {.type = DSV_OP_SAMPLE};
        int32_t none[16];

        /* the op is optional: the CUDA backend has it, the CPU backend does not */
        op.sample = (struct dsv_op_sample){.tokens = &dtokens, .logits = &logits, .params = base};
        CHECK(be->ops->supports_op(be, &op), "the cuda backend has no sample op");
        CHECK(!g.be[0]->ops->supports_op(g.be[0], &op), "the cpu backend claims a sample op");
        CHECK(dsv_backend_sample(g.be[0], &logits, base, n, none) == -EOPNOTSUPP, "dsv_backend_sample on the cpu backend");
        /* bad arguments: refused, nothing run */
        struct dsv_tensor wrong = dsv_tensor_2d(DSV_F32, dtok, 1, n), few = dsv_tensor_2d(DSV_I32, dtok, 1, n - 1);
        op.sample.tokens = &wrong;
        CHECK(!be->ops->supports_op(be, &op), "sample op with F32 tokens accepted");
        op.sample.tokens = &few;
        CHECK(!be->ops->supports_op(be, &op), "sample op with fewer tokens than rows accepted");
        op.sample = (struct dsv_op_sample){.tokens = &dtokens, .logits = &logits, .params = NULL};
        CHECK(!be->ops->supports_op(be, &op), "sample op without params accepted");
        CHECK(dsv_backend_sample(be, &logits, base, n + 1, none) == -EINVAL, "more rows than the logits have");
        CHECK(dsv_backend_sample(be, NULL, base, n, none) == -EINVAL, "no logits");
        CHECK(dsv_backend_sample(be, &logits, base, 0, NULL) == -EINVAL, "no tokens");
        struct dsv_sampler smp;
        REQUIRE(dsv_sampler_init(&smp, V) == 0, "sampler");
        int agree[10] = {0};
        int32_t tok[10];
        struct dsv_sample_params p[10];
        double t0 = gt_now(), t_gpu = 0;
        for (int s = 0; s < steps; s++) {
                for (int t = 0; t < n; t++) {
                        p[t] = base[t];
                        p[t].step = (uint64_t)s;
                }
                double t1 = gt_now();
                if (s & 1) { /* the op: tokens stay in device memory */
                        op.sample = (struct dsv_op_sample){.tokens = &dtokens, .logits = &logits, .params = p};
                        r = be->ops->compute(be, &op);
                        if (r == 0)
                                r = be->ops->download(be, tok, dtok, sizeof(tok));
                        if (r == 0)
                                gt_census(&op);
                } else {
                        r = dsv_backend_sample(be, &logits, p, n, tok);
                }
                t_gpu += gt_now() - t1;
                CHECK(r == 0, "sample: %s %s", strerror(-r), dsv_backend_last_error(be));
                if (r)
                        break;
                for (int t = 0; t < n; t++) {
                        struct dsv_sampling cp = {.temperature = p[t].temperature, .top_p = p[t].top_p, .min_p = p[t].min_p,
                                                  .top_k = p[t].top_k, .seed = p[t].seed};
                        int32_t ref = dsv_sample(&smp, lg + (size_t)t * V, &cp, (uint64_t)s);
                        agree[t] += ref == tok[t];
                        if (ref != tok[t] && agree[t] + 5 > s)
                                printf("    row %d step %d: cpu %d gpu %d\n", t, s, ref, tok[t]);
                }
        }
        for (int t = 0; t < n; t++) {
                const bool greedy = base[t].temperature <= 0 || base[t].top_k == 1;
                printf("  row %d (T=%.2f top_p=%.2f min_p=%.2f top_k=%d): %d/%d agree %s\n", t, base[t].temperature, base[t].top_p,
                       base[t].min_p, base[t].top_k, agree[t], steps, greedy ? "(greedy: all required)" : "");
                if (greedy)
                        CHECK(agree[t] == steps, "row %d: greedy tokens differ", t);
                else
                        CHECK(agree[t] >= steps * 99 / 100, "row %d: only %d of %d sampled tokens agree", t, agree[t], steps);
        }
        printf("  %d steps x %d rows: %.2f ms per GPU call (V=%d), %.1f s in all\n", steps, n, 1e3 * t_gpu / steps, V, gt_now() - t0);
        dsv_sampler_done(&smp);
        be->ops->dealloc(be, dev, (size_t)n * V * 4);
        be->ops->dealloc(be, dtok, (size_t)n * 4);
        free(lg);
        gt_close(&g);
        return test_result("test-gpu-sample");
}
