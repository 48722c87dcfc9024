/* CUDA backend vs CPU reference: the MoE ops, with known-pattern inputs so that a mis-route,
 * a lost token or a double-counted expert is an exact failure, not a tolerance question.
 *
 * Gate: small-integer activations and gate weights (multiples of 1/8, bf16) make every logit
 * exact on both sides, so the sigmoid, bias, group limit and top-k see identical values: ids
 * must be identical and ties (frequent with integers) broken the same way (lower index); the
 * weights and the optional scores compared tightly; forced rows; decode and prefill sizes.
 *
 * Routed experts, as the three ops dispatch, grouped (over an expert table) and combine:
 * expert e's down projection writes only its own block of output columns [e*c, e*c + c), and
 * every activation, weight and routing weight is positive, so a slot's row of y and out[t]
 * are non-zero in exactly the blocks of their experts: a block that is zero where it should
 * not be (lost row, unrouted expert), non-zero where it should be zero (mis-route, a doubled
 * row) or off by a factor (double count) fails; the dispatch must be identical on both
 * backends and its counts the ids'. Ids are chosen by the test: experts that receive no token
 * (half of them absent from the table), one that receives every token (several 64-row tiles),
 * a slot of no expert here (id -1: a zero row), chunked launches (DSV_CUDA_MOE_TOKENS); a row
 * for an absent expert must fail with -EPROTO and an id past the experts with -EINVAL on both
 * backends; faithful
 * (FP8 activations, bf16 intermediates) and exact numerics. Faithful values must match the CPU
 * bit for bit on the CPU emulation of CUDA (every sum is exact, the libm is the same); exact
 * numerics (fp32 intermediates) and a device's expf within 1e-5.
 * Device widths: 256 experts of 7168 -> 2048; on the emulation: 16 and 64 experts of 256 -> 128. */
#include "config.h"

#include "tests/gpu/gputest.h"

static struct gt g;

/* ------------------------------------------------------------------ gate */
static void test_gate(int T, int D, int E, int G, int TG, int K, bool force, const char *label) {
        struct gbuf x, w, bias, ids, wt, sc, fid;
        char what[200];
        float *xv = malloc((size_t)T * D * 4), *bv = malloc((size_t)E * 4);
        uint16_t *wv = malloc((size_t)E * D * 2);
        int32_t *fv = malloc((size_t)T * K * 4);
        REQUIRE(xv && bv && wv && fv, "oom");
        for (int64_t i = 0; i < (int64_t)T * D; i++)
                xv[i] = (float)((int)(gt_u01(300, (uint64_t)i) * 7) - 3);
        for (int64_t i = 0; i < (int64_t)E * D; i++)
                wv[i] = dsv_f32_to_bf16((float)((int)(gt_u01(301, (uint64_t)i) * 7) - 3) / 8.0f);
        for (int e = 0; e < E; e++)
                bv[e] = (float)((int)(gt_u01(302, (uint64_t)e) * 9) - 4) / 64.0f;
        for (int t = 0; t < T; t++)
                for (int j = 0; j < K; j++)
                        fv[t * K + j] = force && t % 3 == 1 ? (t + 5 * j) % E : -1; /* every third row forced */
        gb_new(&g, &x, DSV_F32, T, D, 3);
        gb_new(&g, &w, DSV_BF16, E, D, 0);
        gb_new(&g, &bias, DSV_F32, 1, E, 0);
        gb_new(&g, &ids, DSV_I32, T, K, 1);
        gb_new(&g, &wt, DSV_F32, T, K, 0);
        gb_new(&g, &sc, DSV_F32, T, E, 2);
        gb_new(&g, &fid, DSV_I32, T, K, 0);
        gb_set(&g, &x, xv);
        gb_set(&g, &w, wv);
        gb_set(&g, &bias, bv);
        gb_set(&g, &fid, fv);
        gb_poison(&g, &ids);
        gb_poison(&g, &wt);
        gb_poison(&g, &sc);
        struct dsv_op ops[2];
        for (int s = 0; s < 2; s++) {
                ops[s] = (struct dsv_op){.type = DSV_OP_MOE_GATE, .faithful = true};
                ops[s].moe_gate = (struct dsv_op_moe_gate){.ids = &ids.t[s], .weights = &wt.t[s], .scores = &sc.t[s], .x = &x.t[s],
                                                           .w = &w.t[s], .bias = &bias.t[s], .forced_ids = force ? &fid.t[s] : NULL,
                                                           .n_group = G, .topk_group = TG, .k = K, .route_scale = 2.5f,
                                                           .norm_topk_prob = true};
        }
        snprintf(what, sizeof(what), "moe_gate %s T=%d D=%d E=%d G=%d/%d K=%d%s", label, T, D, E, TG, G, K, force ? " forced" : "");
        if (gt_run(&g, ops, what) == 0) {
                int32_t *i0 = malloc((size_t)T * K * 4), *i1 = malloc((size_t)T * K * 4);
                float *w0 = malloc((size_t)T * K * 4), *w1 = malloc((size_t)T * K * 4);
                float *s0 = malloc((size_t)T * E * 4), *s1 = malloc((size_t)T * E * 4);
                REQUIRE(i0 && i1 && w0 && w1 && s0 && s1, "oom");
                gb_get(&g, &ids, 0, i0, what);
                gb_get(&g, &ids, 1, i1, what);
                gb_get(&g, &wt, 0, w0, what);
                gb_get(&g, &wt, 1, w1, what);
                gb_get(&g, &sc, 0, s0, what);
                gb_get(&g, &sc, 1, s1, what);
                const struct gt_tol tol = g.emulated ? (struct gt_tol){0, 0, 0, 0} : (struct gt_tol){1e-12, 1e-6, 1e-6, 0};
                char w2[240];
                snprintf(w2, sizeof(w2), "%s (scores)", what);
                gt_cmp_f32(w2, s0, s1, (size_t)T * E, tol);
                snprintf(w2, sizeof(w2), "%s (expert ids)", what);
                gt_cmp_bytes(w2, i0, i1, (size_t)T * K * 4, 0);
                snprintf(w2, sizeof(w2), "%s (weights)", what);
                gt_cmp_f32(w2, w0, w1, (size_t)T * K, tol);
                int unsorted = 0;
                for (int t = 0; t < T; t++)
                        for (int j = 1; j < K; j++)
                                unsorted += i1[t * K + j] < i1[t * K + j - 1];
                CHECK(unsorted == 0, "%s: ids not ascending in %d places", what, unsorted);
                free(i0);
                free(i1);
                free(w0);
                free(w1);
                free(s0);
                free(s1);
        }
        gb_free(&g, &x);
        gb_free(&g, &w);
        gb_free(&g, &bias);
        gb_free(&g, &ids);
        gb_free(&g, &wt);
        gb_free(&g, &sc);
        gb_free(&g, &fid);
        free(xv);
        free(bv);
        free(wv);
        free(fv);
}

/* ------------------------------------------------------------------ experts */
struct moe_case {
        int E, D, I, K, T;
        int idle;      /* experts e with e % idle == idle - 1 receive no token (0: none idle) */
        bool oddities; /* a slot of no expert here (id -1) in row 1 */
};

/* the ids of token t: expert 0 always, the rest distinct, ascending, skipping idle experts */
static void make_ids(const struct moe_case *mc, int32_t *ids) {
        for (int t = 0; t < mc->T; t++) {
                int32_t *row = ids + (size_t)t * mc->K;
                int n = 0;
                row[n++] = 0;
                for (int e = 1 + (int)(gt_u01(400, (uint64_t)t) * 3); n < mc->K; e += 1 + (int)(gt_u01(401, (uint64_t)(t * 64 + n)) * 2)) {
                        int ee = e % mc->E;
                        bool used = false;
                        for (int j = 0; j < n; j++)
                                used |= row[j] == ee;
                        if (used || (mc->idle && ee % mc->idle == mc->idle - 1))
                                continue;
                        row[n++] = ee;
                }
                for (int j = 1; j < n; j++) /* ascending, as the gate writes them */
                        for (int m = j; m > 0 && row[m - 1] > row[m]; m--) {
                                int32_t tmp = row[m];
                                row[m] = row[m - 1];
                                row[m - 1] = tmp;
                        }
        }
        if (mc->oddities && mc->T >= 2 && mc->K >= 2)
                ids[mc->K + 1] = -1; /* row 1: a slot no expert here serves (another rank's): a zero row, no term */
}

/* FP8 codes 1..4 (exact small integers) in [r0, r1) of every row block that `own` says, 0 elsewhere */
static void make_codes(uint8_t *q, int64_t rows, int64_t cols, uint64_t key) {
        for (int64_t i = 0; i < rows * cols; i++)
                q[i] = dsv_f32_to_e4m3((float)(1 + (int)(gt_u01(key, (uint64_t)i) * 4)));
}

/* An op on side s (0 CPU, 1 CUDA) to its end: compute's error, else synchronize's (where a
 * device reports what its kernels met). */
static int run_one(struct dsv_backend *be, const struct dsv_op *op) {
        int r = be->ops->compute(be, op);
        int r2 = be->ops->synchronize(be);
        return r < 0 ? r : r2;
}

/* The three ops of the routed experts on both backends, known pattern: expert e's down
 * projection writes only its own block of output columns [e*c, e*c + c), and every
 * activation, weight and routing weight is positive, so a slot row of y is non-zero in
 * exactly its expert's block and out[t] in exactly the blocks of t's experts: a block that is
 * zero where it should not be (lost row, unrouted expert), non-zero where it should be zero
 * (mis-route, a row doubled into another slot) or off by a factor (double count) fails. The
 * dispatch (counts, offsets, perm) must be identical on both. Experts with e % idle == idle - 1
 * receive no token; every other one of them is absent from the table (another rank's). */
static void test_experts(const struct moe_case *mc, bool faithful, struct dsv_backend *be_gpu, const char *label) {
        const int E = mc->E, D = mc->D, I = mc->I, K = mc->K, T = mc->T, c = D / E, R = T * K;
        const int64_t bI = DIV_ROUND_UP(I, 128), bD = DIV_ROUND_UP(D, 128);
        const size_t tab_bytes = (size_t)E * sizeof(struct dsv_moe_expert);
        struct gbuf x, ids, wt, out, w1, w3, w2, s1, s3, s2, cnt, off, perm, y, tab;
        char what[200], w2n[240];
        REQUIRE(D % E == 0 && I % 128 == 0 && D % 128 == 0, "test shapes");
        float *xv = malloc((size_t)T * D * 4), *wv = malloc((size_t)T * K * 4);
        int32_t *iv = malloc((size_t)T * K * 4);
        uint8_t *q13 = malloc((size_t)E * I * D), *q2 = calloc((size_t)E * D * I, 1);
        float *sc13 = malloc((size_t)E * bI * bD * 4), *sc2 = malloc((size_t)E * bD * bI * 4);
        REQUIRE(xv && wv && iv && q13 && q2 && sc13 && sc2, "oom");
        for (int64_t i = 0; i < (int64_t)T * D; i++)
                xv[i] = (float)(1 + (int)(gt_u01(410, (uint64_t)i) * 4)); /* 1..4: act_quant is exact */
        for (int64_t i = 0; i < (int64_t)T * K; i++)
                wv[i] = 0.25f + (float)gt_u01(411, (uint64_t)i);
        make_ids(mc, iv);
        for (int64_t i = 0; i < (int64_t)E * bI * bD; i++)
                sc13[i] = 1.0f / 64;
        for (int64_t i = 0; i < (int64_t)E * bD * bI; i++)
                sc2[i] = 1.0f / 128;
        /* w2 of expert e: rows [e*c, e*c + c) only (its block of output columns) */
        for (int e = 0; e < E; e++)
                make_codes(q2 + ((size_t)e * D + (size_t)e * c) * I, c, I, 420 + (uint64_t)e);

        gb_new(&g, &x, DSV_F32, T, D, 2);
        gb_new(&g, &ids, DSV_I32, T, K, 0);
        gb_new(&g, &wt, DSV_F32, T, K, 1);
        gb_new(&g, &out, DSV_F32, T, D, 3);
        gb_new(&g, &y, DSV_F32, R, D, 1);
        gb_new(&g, &cnt, DSV_I32, 1, E, 0);
        gb_new(&g, &off, DSV_I32, 1, E + 1, 0);
        gb_new(&g, &perm, DSV_I32, 1, R, 0);
        gb_new(&g, &tab, DSV_U8, E, (int64_t)sizeof(struct dsv_moe_expert), 0);
        gb_new(&g, &w1, DSV_F8_E4M3, (int64_t)E * I, D, 0);
        gb_new(&g, &w3, DSV_F8_E4M3, (int64_t)E * I, D, 0);
        gb_new(&g, &w2, DSV_F8_E4M3, (int64_t)E * D, I, 0);
        gb_new(&g, &s1, DSV_F32, E * bI, bD, 0);
        gb_new(&g, &s3, DSV_F32, E * bI, bD, 0);
        gb_new(&g, &s2, DSV_F32, E * bD, bI, 0);
        gb_set(&g, &x, xv);
        gb_set(&g, &ids, iv);
        gb_set(&g, &wt, wv);
        make_codes(q13, (int64_t)E * I, D, 412);
        gb_set(&g, &w1, q13);
        make_codes(q13, (int64_t)E * I, D, 413);
        gb_set(&g, &w3, q13);
        gb_set(&g, &w2, q2);
        gb_set(&g, &s1, sc13);
        gb_set(&g, &s3, sc13);
        gb_set(&g, &s2, sc2);

        /* each side's expert table: the addresses of its own copies of the stacked weights */
        struct dsv_moe_expert *tv = calloc((size_t)E, sizeof(*tv));
        REQUIRE(tv, "oom");
        for (int s = 0; s < 2; s++) {
                for (int e = 0; e < E; e++) {
                        struct dsv_tensor v[6];
                        v[0] = dsv_tensor_2d(DSV_F8_E4M3, (uint8_t *)w1.t[s].data + (size_t)e * I * D, I, D);
                        v[1] = dsv_tensor_2d(DSV_F8_E4M3, (uint8_t *)w3.t[s].data + (size_t)e * I * D, I, D);
                        v[2] = dsv_tensor_2d(DSV_F8_E4M3, (uint8_t *)w2.t[s].data + (size_t)e * D * I, D, I);
                        v[3] = dsv_tensor_2d(DSV_F32, (float *)s1.t[s].data + (size_t)e * bI * bD, bI, bD);
                        v[4] = dsv_tensor_2d(DSV_F32, (float *)s3.t[s].data + (size_t)e * bI * bD, bI, bD);
                        v[5] = dsv_tensor_2d(DSV_F32, (float *)s2.t[s].data + (size_t)e * bD * bI, bD, bI);
                        v[0].scale = &v[3];
                        v[1].scale = &v[4];
                        v[2].scale = &v[5];
                        const bool absent = mc->idle && e % (2 * mc->idle) == mc->idle - 1; /* idle, and another rank's */
                        tv[e] = absent ? (struct dsv_moe_expert){0}
                                       : (struct dsv_moe_expert){dsv_moe_weight_of(&v[0]), dsv_moe_weight_of(&v[1]), dsv_moe_weight_of(&v[2])};
                }
                REQUIRE(g.be[s]->ops->upload(g.be[s], tab.t[s].data, tv, tab_bytes) == 0, "table upload");
        }
        struct dsv_op dop[2], gop[2], cop[2];
        for (int s = 0; s < 2; s++) {
                dop[s] = (struct dsv_op){.type = DSV_OP_MOE_DISPATCH};
                dop[s].moe_dispatch = (struct dsv_op_moe_dispatch){.counts = &cnt.t[s], .offsets = &off.t[s], .perm = &perm.t[s],
                                                                   .ids = &ids.t[s], .n_experts = E};
                gop[s] = (struct dsv_op){.type = DSV_OP_MOE_GROUPED, .faithful = faithful};
                gop[s].moe_grouped = (struct dsv_op_moe_grouped){.y = &y.t[s], .x = &x.t[s], .ids = &ids.t[s], .counts = &cnt.t[s],
                                                                 .offsets = &off.t[s], .perm = &perm.t[s], .table = &tab.t[s],
                                                                 .n_experts = E, .inter = I, .weight_type = DSV_F8_E4M3,
                                                                 .faithful = faithful};
                cop[s] = (struct dsv_op){.type = DSV_OP_MOE_COMBINE};
                cop[s].moe_combine = (struct dsv_op_moe_combine){.out = &out.t[s], .y = &y.t[s], .ids = &ids.t[s], .weights = &wt.t[s],
                                                                 .n_experts = E};
        }
        snprintf(what, sizeof(what), "moe %s E=%d D=%d I=%d K=%d T=%d %s", label, E, D, I, K, T, faithful ? "faithful" : "exact");
        gb_poison(&g, &cnt);
        gb_poison(&g, &off);
        gb_poison(&g, &perm);
        gb_poison(&g, &y);
        gb_poison(&g, &out);
        REQUIRE(g.be[1]->ops->synchronize(g.be[1]) == 0, "sync"); /* the poison is done before another stream computes */
        struct dsv_backend *keep = g.be[1];
        g.be[1] = be_gpu; /* the same device: buffers are shared by its backends */
        snprintf(w2n, sizeof(w2n), "%s (dispatch)", what);
        int rr = gt_run(&g, dop, w2n);
        if (rr == 0) {
                int32_t *a0 = malloc((size_t)(R + E + 1) * 4), *a1 = malloc((size_t)(R + E + 1) * 4);
                REQUIRE(a0 && a1, "oom");
                gb_get(&g, &cnt, 0, a0, w2n);
                gb_get(&g, &cnt, 1, a1, w2n);
                gt_cmp_bytes("  counts", a0, a1, (size_t)E * 4, 0);
                /* the counts are the ids' (a row lost or doubled in the dispatch fails here) */
                int badc = 0;
                for (int e = 0; e < E; e++) {
                        int n = 0;
                        for (int i = 0; i < R; i++)
                                n += iv[i] == e;
                        badc += a1[e] != n;
                }
                CHECK(badc == 0, "%s: %d experts' counts are not the ids'", w2n, badc);
                gb_get(&g, &off, 0, a0, w2n);
                gb_get(&g, &off, 1, a1, w2n);
                gt_cmp_bytes("  offsets", a0, a1, (size_t)(E + 1) * 4, 0);
                gb_get(&g, &perm, 0, a0, w2n);
                gb_get(&g, &perm, 1, a1, w2n);
                gt_cmp_bytes("  perm", a0, a1, (size_t)R * 4, 0);
                free(a0);
                free(a1);
                snprintf(w2n, sizeof(w2n), "%s (grouped)", what);
                rr = gt_run(&g, gop, w2n);
        }
        if (rr == 0) {
                float *o0 = malloc((size_t)R * D * 4), *o1 = malloc((size_t)R * D * 4);
                REQUIRE(o0 && o1, "oom");
                gb_get(&g, &y, 0, o0, w2n);
                gb_get(&g, &y, 1, o1, w2n);
                /* structure: slot row k non-zero exactly in its expert's block */
                int bad_rows = 0, bad_ref = 0;
                for (int k = 0; k < R; k++)
                        for (int e = 0; e < E; e++) {
                                bool nz0 = false, nz1 = false;
                                for (int d = e * c; d < e * c + c; d++) {
                                        nz0 |= o0[(size_t)k * D + d] != 0.0f;
                                        nz1 |= o1[(size_t)k * D + d] != 0.0f;
                                }
                                const bool routed = iv[k] == e;
                                if (nz1 != routed && bad_rows++ < 5)
                                        printf("    slot %d expert %d: %s on the GPU\n", k, e, routed ? "lost (block is zero)" : "mis-routed (block is non-zero)");
                                bad_ref += nz0 != routed;
                        }
                CHECK(bad_ref == 0, "%s: the CPU reference breaks the pattern in %d blocks (test bug)", w2n, bad_ref);
                CHECK(bad_rows == 0, "%s: %d (slot, expert) blocks routed wrongly", w2n, bad_rows);
                /* faithful: every sum is exact, so only libm can differ; exact numerics keep fp32
                 * intermediates whose sums depend on the order */
                const struct gt_tol tol = g.emulated && faithful ? (struct gt_tol){0, 0, 0, 0} : (struct gt_tol){1e-10, 0, 1e-5, 0};
                gt_cmp_f32(w2n, o0, o1, (size_t)R * D, tol);
                snprintf(w2n, sizeof(w2n), "%s (combine)", what);
                if (gt_run(&g, cop, w2n) == 0) {
                        gb_get(&g, &out, 0, o0, w2n);
                        gb_get(&g, &out, 1, o1, w2n);
                        int bad_blocks = 0;
                        bad_ref = 0;
                        for (int t = 0; t < T; t++)
                                for (int e = 0; e < E; e++) {
                                        bool routed = false;
                                        for (int j = 0; j < K; j++)
                                                routed |= iv[t * K + j] == e;
                                        bool nz0 = false, nz1 = false;
                                        for (int d = e * c; d < e * c + c; d++) {
                                                nz0 |= o0[(size_t)t * D + d] != 0.0f;
                                                nz1 |= o1[(size_t)t * D + d] != 0.0f;
                                        }
                                        if (nz1 != routed && bad_blocks++ < 5)
                                                printf("    token %d expert %d: %s on the GPU\n", t, e,
                                                       routed ? "lost (block is zero)" : "mis-routed (block is non-zero)");
                                        bad_ref += nz0 != routed;
                                }
                        CHECK(bad_ref == 0, "%s: the CPU reference breaks the pattern in %d blocks (test bug)", w2n, bad_ref);
                        CHECK(bad_blocks == 0, "%s: %d (token, expert) blocks routed wrongly", w2n, bad_blocks);
                        gt_cmp_f32(w2n, o0, o1, (size_t)T * D, tol);
                }
                free(o0);
                free(o1);
        }
        /* errors, on both backends alike: a row routed to an absent expert (-EPROTO), an id
         * past the experts (-EINVAL) */
        if (rr == 0 && mc->T >= 1) {
                for (int s = 0; s < 2; s++) {
                        struct dsv_moe_expert none = {0};
                        REQUIRE(g.be[s]->ops->upload(g.be[s], tab.t[s].data, &none, sizeof(none)) == 0, "table upload"); /* expert 0 */
                }
                for (int s = 0; s < 2; s++) {
                        const int r = run_one(g.be[s], &gop[s]);
                        CHECK(r == -EPROTO, "%s: %s backend: a row for an absent expert gave %d, not -EPROTO", what, g.be[s]->ops->name, r);
                }
                const int32_t bad = E;
                for (int s = 0; s < 2; s++)
                        REQUIRE(g.be[s]->ops->upload(g.be[s], ids.t[s].data, &bad, sizeof(bad)) == 0, "ids upload");
                for (int s = 0; s < 2; s++) {
                        int r = run_one(g.be[s], &dop[s]);
                        CHECK(r == -EINVAL, "%s: %s backend: dispatch of id %d of %d experts gave %d, not -EINVAL", what, g.be[s]->ops->name,
                              E, E, r);
                        r = run_one(g.be[s], &cop[s]);
                        CHECK(r == -EINVAL, "%s: %s backend: combine of id %d of %d experts gave %d, not -EINVAL", what, g.be[s]->ops->name,
                              E, E, r);
                }
        }
        g.be[1] = keep;
        gb_free(&g, &x);
        gb_free(&g, &ids);
        gb_free(&g, &wt);
        gb_free(&g, &out);
        gb_free(&g, &y);
        gb_free(&g, &cnt);
        gb_free(&g, &off);
        gb_free(&g, &perm);
        gb_free(&g, &tab);
        gb_free(&g, &w1);
        gb_free(&g, &w3);
        gb_free(&g, &w2);
        gb_free(&g, &s1);
        gb_free(&g, &s3);
        gb_free(&g, &s2);
        free(tv);
        free(xv);
        free(wv);
        free(iv);
        free(q13);
        free(q2);
        free(sc13);
        free(sc2);
}

GT_MAIN(moe) {
        int r = gt_open(&g, "test-gpu-moe");
        if (r)
                return r;
        struct dsv_backend *chunked = NULL;
        struct dsv_error err;
        setenv("DSV_CUDA_MOE_TOKENS", "7", 1);
        r = dsv_backend_open("cuda", NULL, &chunked, &err);
        unsetenv("DSV_CUDA_MOE_TOKENS");
        REQUIRE(r == 0, "a second backend with 7-token MoE launches: %s", err.msg);

        /* supports_op: the shapes the kernels take */
        for (int t = DSV_OP_MOE_DISPATCH; t <= DSV_OP_MOE_COMBINE; t++) {
                struct dsv_op op = {.type = (enum dsv_op_type)t};
                CHECK(!g.be[1]->ops->supports_op(g.be[1], &op), "an empty %s op is refused", dsv_op_name(op.type));
        }

        const int pre = g.emulated ? 70 : 300;
        if (g.emulated) {
                test_gate(1, 256, 16, 4, 2, 4, false, "decode");
                test_gate(5, 256, 16, 4, 2, 4, true, "batch");
                test_gate(pre, 256, 64, 8, 4, 6, true, "prefill");
                test_gate(3, 128, 32, 1, 1, 8, false, "no groups");
        } else {
                test_gate(1, 7168, 256, 8, 4, 8, false, "decode");
                test_gate(64, 7168, 256, 8, 4, 8, true, "batch");
                test_gate(pre, 7168, 256, 8, 4, 8, true, "prefill");
                test_gate(3, 256, 32, 1, 1, 8, false, "no groups");
        }
        for (int f = 1; f >= 0; f--) {
                if (g.emulated) {
                        const struct moe_case dec = {16, 256, 128, 4, 1, 3, false};
                        const struct moe_case bat = {16, 256, 128, 4, 5, 4, true};
                        const struct moe_case pf = {16, 256, 128, 4, pre, 5, true};
                        const struct moe_case wide = {64, 256, 128, 6, 9, 7, false};
                        const struct moe_case none = {16, 256, 128, 4, 0, 3, false};
                        test_experts(&none, f, g.be[1], "no token");
                        test_experts(&dec, f, g.be[1], "decode");
                        test_experts(&bat, f, g.be[1], "batch");
                        test_experts(&pf, f, g.be[1], "prefill");
                        test_experts(&pf, f, chunked, "prefill, 7-token launches");
                        test_experts(&wide, f, g.be[1], "64 experts");
                } else {
                        const struct moe_case dec = {256, 7168, 2048, 8, 1, 3, false};
                        const struct moe_case bat = {256, 7168, 2048, 8, 64, 5, true};
                        const struct moe_case pf = {256, 7168, 2048, 8, pre, 7, true};
                        test_experts(&dec, f, g.be[1], "decode");
                        test_experts(&bat, f, g.be[1], "batch");
                        test_experts(&pf, f, g.be[1], "prefill");
                        test_experts(&bat, f, chunked, "batch, 7-token launches");
                }
        }
        dsv_backend_free(chunked);
        gt_close(&g);
        return test_result("test-gpu-moe");
}
