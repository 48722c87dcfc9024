/* CUDA backend vs CPU reference: embedding gather, row gather, weight dequantization (FP8
 * with partial scale blocks, BF16, F32 into F32, bf16-rounded F32 and BF16), SwiGLU, add,
 * RoPE (both pairings, large positions), Hadamard, fill_random (bit-exact). Shapes include the 671B widths (7168, 128 heads x
 * 192, 64 indexer heads x 128), odd sizes, strided views and single tokens. */
#include "config.h"

#include "tests/gpu/gputest.h"

static struct gt g;
static const struct gt_tol EXACT = {0, 0, 0, 0};
/* bf16 outputs computed through libm functions (exp, cos, sin) that may differ by an ulp */
static const struct gt_tol BF16_LIBM = {1e-8, 1e-30, 1.0 / 128, 0};

static void test_embed(int64_t V, int64_t D, int64_t T) {
        struct gbuf table, ids, out;
        char what[128];
        uint16_t *tb = malloc((size_t)(V * D) * 2);
        int32_t *id = malloc((size_t)T * 4);
        float *r0 = malloc((size_t)(T * D) * 4), *r1 = malloc((size_t)(T * D) * 4);
        REQUIRE(tb && id && r0 && r1, "oom");
        for (int64_t i = 0; i < V * D; i++)
                tb[i] = dsv_f32_to_bf16(gt_randn(1, (uint64_t)i));
        for (int64_t t = 0; t < T; t++)
                id[t] = t == 0 ? 0 : (t == 1 ? (int32_t)(V - 1) : (int32_t)(gt_u01(2, (uint64_t)t) * (double)V));
        gb_new(&g, &table, DSV_BF16, V, D, 0);
        gb_new(&g, &ids, DSV_I32, 1, T, 0);
        gb_new(&g, &out, DSV_F32, T, D, 3);
        gb_set(&g, &table, tb);
        gb_set(&g, &ids, id);
        gb_poison(&g, &out);
        struct dsv_op ops[2];
        for (int s = 0; s < 2; s++) {
                ops[s] = (struct dsv_op){.type = DSV_OP_EMBED};
                ops[s].embed = (struct dsv_op_embed){.out = &out.t[s], .table = &table.t[s], .ids = &ids.t[s]};
        }
        snprintf(what, sizeof(what), "embed V=%lld D=%lld T=%lld", (long long)V, (long long)D, (long long)T);
        if (gt_run(&g, ops, what) == 0) {
                gb_get(&g, &out, 0, r0, what);
                gb_get(&g, &out, 1, r1, what);
                gt_cmp_f32(what, r0, r1, (size_t)(T * D), EXACT);
        }
        gb_free(&g, &table);
        gb_free(&g, &ids);
        gb_free(&g, &out);
        free(tb);
        free(id);
        free(r0);
        free(r1);
}

static void test_get_rows(int64_t X, int64_t D, int64_t n) {
        struct gbuf x, rows, out;
        char what[128];
        float *xv = malloc((size_t)(X * D) * 4), *r0 = malloc((size_t)(n * D) * 4), *r1 = malloc((size_t)(n * D) * 4);
        int32_t *rv = malloc((size_t)n * 4);
        REQUIRE(xv && r0 && r1 && rv, "oom");
        gt_fill_randn(xv, (size_t)(X * D), 1, 3);
        for (int64_t i = 0; i < n; i++)
                rv[i] = (int32_t)(gt_u01(4, (uint64_t)i) * (double)X);
        gb_new(&g, &x, DSV_F32, X, D, 1);
        gb_new(&g, &rows, DSV_I32, 1, n, 0);
        gb_new(&g, &out, DSV_F32, n, D, 0);
        gb_set(&g, &x, xv);
        gb_set(&g, &rows, rv);
        gb_poison(&g, &out);
        struct dsv_op ops[2];
        for (int s = 0; s < 2; s++) {
                ops[s] = (struct dsv_op){.type = DSV_OP_GET_ROWS};
                ops[s].get_rows = (struct dsv_op_get_rows){.out = &out.t[s], .x = &x.t[s], .rows = &rows.t[s]};
        }
        snprintf(what, sizeof(what), "get_rows X=%lld D=%lld n=%lld", (long long)X, (long long)D, (long long)n);
        if (gt_run(&g, ops, what) == 0) {
                gb_get(&g, &out, 0, r0, what);
                gb_get(&g, &out, 1, r1, what);
                gt_cmp_f32(what, r0, r1, (size_t)(n * D), EXACT);
        }
        gb_free(&g, &x);
        gb_free(&g, &rows);
        gb_free(&g, &out);
        free(xv);
        free(rv);
        free(r0);
        free(r1);
}

static void test_binary(enum dsv_op_type type, int64_t T, int64_t N, int64_t pad, bool faithful) {
        struct gbuf a, b, out;
        char what[128];
        size_t n = (size_t)(T * N);
        float *av = malloc(n * 4), *bv = malloc(n * 4), *r0 = malloc(n * 4), *r1 = malloc(n * 4);
        REQUIRE(av && bv && r0 && r1, "oom");
        gt_fill_randn(av, n, 3, 5);
        gt_fill_randn(bv, n, 1, 6);
        if (n > 8) { /* special values travel through */
                av[0] = INFINITY;
                av[1] = -INFINITY;
                av[2] = NAN;
                bv[3] = NAN;
                av[4] = 100.0f; /* exp(-100) underflow in silu */
                av[5] = -100.0f;
        }
        gb_new(&g, &a, DSV_F32, T, N, pad);
        gb_new(&g, &b, DSV_F32, T, N, 0);
        gb_new(&g, &out, DSV_F32, T, N, pad);
        gb_set(&g, &a, av);
        gb_set(&g, &b, bv);
        gb_poison(&g, &out);
        struct dsv_op ops[2];
        for (int s = 0; s < 2; s++) {
                ops[s] = (struct dsv_op){.type = type, .faithful = faithful};
                if (type == DSV_OP_SWIGLU)
                        ops[s].swiglu = (struct dsv_op_swiglu){.out = &out.t[s], .a = &a.t[s], .b = &b.t[s]};
                else
                        ops[s].add = (struct dsv_op_add){.out = &out.t[s], .a = &a.t[s], .b = &b.t[s]};
        }
        snprintf(what, sizeof(what), "%s T=%lld N=%lld pad=%lld %s", type == DSV_OP_SWIGLU ? "swiglu" : "add", (long long)T,
                 (long long)N, (long long)pad, faithful ? "faithful" : "exact");
        if (gt_run(&g, ops, what) == 0) {
                gb_get(&g, &out, 0, r0, what);
                gb_get(&g, &out, 1, r1, what);
                gt_cmp_f32(what, r0, r1, n, type == DSV_OP_SWIGLU ? (faithful ? BF16_LIBM : (struct gt_tol){1e-12, 0, 4e-7, 0}) : EXACT);
        }
        gb_free(&g, &a);
        gb_free(&g, &b);
        gb_free(&g, &out);
        free(av);
        free(bv);
        free(r0);
        free(r1);
}

static void test_rope(int64_t T, int n_heads, int head_stride, int offset, int rope_dim, bool interleaved, bool faithful,
                      int32_t max_pos) {
        struct gbuf x, pos, invf;
        char what[160];
        const int64_t cols = (int64_t)n_heads * head_stride;
        size_t n = (size_t)(T * cols);
        float *xv = malloc(n * 4), *r0 = malloc(n * 4), *r1 = malloc(n * 4), *fv = malloc((size_t)rope_dim / 2 * 4);
        int32_t *pv = malloc((size_t)T * 4);
        REQUIRE(xv && r0 && r1 && fv && pv, "oom");
        gt_fill_randn(xv, n, 1, 7);
        if (faithful)
                gt_round_bf16(xv, n);
        for (int i = 0; i < rope_dim / 2; i++) /* theta 10000, a YaRN-like damping of the low frequencies */
                fv[i] = (float)(pow(10000.0, -2.0 * i / rope_dim) * (i > rope_dim / 4 ? 1.0 / 40 : 1.0));
        for (int64_t t = 0; t < T; t++)
                pv[t] = t == 0 ? 0 : (t == 1 ? max_pos : (int32_t)(gt_u01(8, (uint64_t)t) * max_pos));
        gb_new(&g, &x, DSV_F32, T, cols, 2);
        gb_new(&g, &pos, DSV_I32, 1, T, 0);
        gb_new(&g, &invf, DSV_F32, 1, rope_dim / 2, 0);
        gb_set(&g, &x, xv);
        gb_set(&g, &pos, pv);
        gb_set(&g, &invf, fv);
        struct dsv_op ops[2];
        for (int s = 0; s < 2; s++) {
                ops[s] = (struct dsv_op){.type = DSV_OP_ROPE, .faithful = faithful};
                ops[s].rope = (struct dsv_op_rope){.x = &x.t[s], .pos = &pos.t[s], .inv_freq = &invf.t[s], .n_heads = n_heads,
                                                   .head_stride = head_stride, .offset = offset, .rope_dim = rope_dim,
                                                   .interleaved = interleaved};
        }
        snprintf(what, sizeof(what), "rope T=%lld %dx%d off=%d r=%d %s pos<=%d %s", (long long)T, n_heads, head_stride, offset,
                 rope_dim, interleaved ? "interleaved" : "half-split", max_pos, faithful ? "faithful" : "exact");
        if (gt_run(&g, ops, what) == 0) {
                gb_get(&g, &x, 0, r0, what);
                gb_get(&g, &x, 1, r1, what);
                /* sinf/cosf of angles up to 1e6 rad: both libraries are accurate to ~1 ulp */
                gt_cmp_f32(what, r0, r1, n, faithful ? BF16_LIBM : (struct gt_tol){1e-12, 1e-6, 1e-5, 0});
        }
        gb_free(&g, &x);
        gb_free(&g, &pos);
        gb_free(&g, &invf);
        free(xv);
        free(r0);
        free(r1);
        free(fv);
        free(pv);
}

static void test_hadamard(int64_t T, int64_t N, int d, bool faithful) {
        struct gbuf x;
        char what[128];
        size_t n = (size_t)(T * N);
        float *xv = malloc(n * 4), *r0 = malloc(n * 4), *r1 = malloc(n * 4);
        REQUIRE(xv && r0 && r1, "oom");
        gt_fill_randn(xv, n, 1, 9);
        gb_new(&g, &x, DSV_F32, T, N, 5);
        gb_set(&g, &x, xv);
        struct dsv_op ops[2];
        for (int s = 0; s < 2; s++) {
                ops[s] = (struct dsv_op){.type = DSV_OP_HADAMARD, .faithful = faithful};
                ops[s].hadamard = (struct dsv_op_hadamard){.x = &x.t[s], .d = d};
        }
        snprintf(what, sizeof(what), "hadamard T=%lld N=%lld d=%d %s", (long long)T, (long long)N, d, faithful ? "faithful" : "exact");
        if (gt_run(&g, ops, what) == 0) {
                gb_get(&g, &x, 0, r0, what);
                gb_get(&g, &x, 1, r1, what);
                gt_cmp_f32(what, r0, r1, n, EXACT); /* same butterflies in the same order */
        }
        gb_free(&g, &x);
        free(xv);
        free(r0);
        free(r1);
}

/* out = w as numbers (the absorbed kv_b table): bit-exact, every element one product and one
 * rounding. ot: out's type; round: bf16-rounded F32; wpad/opad: row padding (views). */
static void test_dequant(int64_t N, int64_t K, enum dsv_dtype wt, enum dsv_dtype ot, bool round, int64_t wpad, int64_t opad) {
        struct gbuf w, ws, out;
        char what[160];
        const int64_t br = DIV_ROUND_UP(N, 128), bc = DIV_ROUND_UP(K, 128);
        const size_t nw = (size_t)(N * K), eo = dsv_dtype_size(ot);
        void *wv = malloc(nw * dsv_dtype_size(wt)), *r0 = malloc(nw * eo), *r1 = malloc(nw * eo);
        float *sv = malloc((size_t)(br * bc) * 4);
        REQUIRE(wv && r0 && r1 && sv, "oom");
        if (wt == DSV_F8_E4M3)
                gt_make_fp8(wv, sv, N, K, 41, false);
        else if (wt == DSV_BF16)
                for (size_t i = 0; i < nw; i++)
                        ((uint16_t *)wv)[i] = dsv_f32_to_bf16(gt_randn(42, i));
        else
                gt_fill_randn(wv, nw, 1.0f, 43);
        gb_new(&g, &w, wt, N, K, wpad);
        gb_new(&g, &ws, DSV_F32, br, bc, 0);
        gb_new(&g, &out, ot, N, K, opad);
        gb_set(&g, &w, wv);
        gb_set(&g, &ws, sv);
        gb_poison(&g, &out);
        struct dsv_op ops[2];
        for (int s = 0; s < 2; s++) {
                w.t[s].scale = wt == DSV_F8_E4M3 ? &ws.t[s] : NULL;
                ops[s] = (struct dsv_op){.type = DSV_OP_DEQUANT};
                ops[s].dequant = (struct dsv_op_dequant){.out = &out.t[s], .w = &w.t[s], .round_bf16 = round};
        }
        snprintf(what, sizeof(what), "dequant %s -> %s%s N=%lld K=%lld pads %lld/%lld", dsv_dtype_name(wt), dsv_dtype_name(ot),
                 round ? " (bf16 values)" : "", (long long)N, (long long)K, (long long)wpad, (long long)opad);
        if (gt_run(&g, ops, what) == 0) {
                gb_get(&g, &out, 0, r0, what);
                gb_get(&g, &out, 1, r1, what);
                CHECK(memcmp(r0, r1, nw * eo) == 0, "%s: the CUDA backend's values differ from the CPU's", what);
                if (wt == DSV_F8_E4M3 && ot == DSV_F32 && !round) { /* and they are the codes times their scales */
                        size_t bad = 0;
                        for (int64_t i = 0; i < N; i++)
                                for (int64_t j = 0; j < K; j++)
                                        bad += ((float *)r0)[i * K + j] !=
                                               dsv_e4m3_to_f32(((uint8_t *)wv)[i * K + j]) * sv[(i / 128) * bc + j / 128];
                        CHECK(bad == 0, "%s: %zu values are not code x scale", what, bad);
                }
        }
        gb_free(&g, &w);
        gb_free(&g, &ws);
        gb_free(&g, &out);
        free(wv);
        free(sv);
        free(r0);
        free(r1);
}

/* fill_random: bit-exact on both backends, padding untouched (gb_get checks it), and the
 * values what the op promises: e4m3 codes of +-[0.25, 3.75] (no NaN, no zero), or
 * (center + k) * 2^(exp2 - j) within the bounds; a second key gives other values. */
static void test_fill_random(int64_t R, int64_t K, enum dsv_dtype t, int64_t pad, int32_t center, int32_t spread, int32_t exp2,
                             int32_t exp2_spread) {
        struct gbuf out;
        char what[160];
        const size_t n = (size_t)(R * K), es = dsv_dtype_size(t);
        uint8_t *r0 = malloc(n * es + 1), *r1 = malloc(n * es + 1), *r2 = malloc(n * es + 1);
        REQUIRE(r0 && r1 && r2, "oom");
        gb_new(&g, &out, t, R, K, pad);
        gb_poison(&g, &out);
        struct dsv_op ops[2];
        for (int s = 0; s < 2; s++) {
                ops[s] = (struct dsv_op){.type = DSV_OP_FILL_RANDOM};
                ops[s].fill_random = (struct dsv_op_fill_random){.out = &out.t[s], .key = 0x5eed0000u + (uint64_t)R * 31 + (uint64_t)K,
                                                                 .center = center, .spread = spread, .exp2 = exp2,
                                                                 .exp2_spread = exp2_spread};
        }
        snprintf(what, sizeof(what), "fill_random %s [%lld x %lld] pad %lld (%d +- %d) * 2^(%d - [0, %d])", dsv_dtype_name(t),
                 (long long)R, (long long)K, (long long)pad, center, spread, exp2, exp2_spread);
        if (gt_run(&g, ops, what) == 0) {
                gb_get(&g, &out, 0, r0, what);
                gb_get(&g, &out, 1, r1, what);
                gt_cmp_bytes(what, r0, r1, n * es, 0);
                size_t bad = 0;
                for (size_t i = 0; i < n; i++) {
                        if (t == DSV_F8_E4M3) {
                                const float v = fabsf(dsv_e4m3_to_f32(r0[i]));
                                bad += !(v >= 0.25f && v <= 3.75f);
                                continue;
                        }
                        const float v = t == DSV_BF16 ? dsv_bf16_to_f32(((uint16_t *)r0)[i]) : ((float *)r0)[i];
                        int ok = 0;
                        for (int j = 0; j <= exp2_spread && !ok; j++) {
                                const float m = ldexpf(v, -(exp2 - j));
                                ok = m == floorf(m) && m >= (float)(center - spread) && m <= (float)(center + spread);
                        }
                        bad += !ok;
                }
                CHECK(bad == 0, "%s: %zu values outside what the op promises", what, bad);
                /* another key: other values (at two possible values, half of them stay by chance) */
                ops[0].fill_random.key ^= 1;
                if (n >= 64 && ops[0].fill_random.spread + ops[0].fill_random.exp2_spread > 0 &&
                    g.be[0]->ops->compute(g.be[0], &ops[0]) == 0) {
                        gb_get(&g, &out, 0, r2, what);
                        size_t same = 0;
                        for (size_t i = 0; i < n; i++)
                                same += memcmp(r0 + i * es, r2 + i * es, es) == 0;
                        CHECK(same < n * 3 / 4, "%s: another key left %zu of %zu values the same", what, same, n);
                }
        }
        gb_free(&g, &out);
        free(r0);
        free(r1);
        free(r2);
}

GT_MAIN(elementwise) {
        int r = gt_open(&g, "test-gpu-elementwise");
        if (r)
                return r;
        test_embed(1000, 7168, 64);
        test_embed(129280, 64, 7);
        test_embed(5, 13, 1);
        test_get_rows(50, 7168, 17);
        test_get_rows(3, 1, 1);
        test_dequant(4096, 512, DSV_F8_E4M3, DSV_BF16, false, 0, 0); /* kv_b of 16 heads, faithful */
        test_dequant(300, 200, DSV_F8_E4M3, DSV_F32, true, 8, 3);   /* partial scale blocks, views */
        test_dequant(130, 257, DSV_F8_E4M3, DSV_F32, false, 0, 0);
        test_dequant(64, 96, DSV_BF16, DSV_F32, false, 2, 0);
        test_dequant(7, 33, DSV_F32, DSV_BF16, false, 0, 1);
        test_dequant(1, 1, DSV_F32, DSV_F32, true, 0, 0);
        test_fill_random(300, 200, DSV_F8_E4M3, 0, 0, 0, 0, 0);    /* partial 128-blocks */
        test_fill_random(129, 257, DSV_F8_E4M3, 5, 0, 0, 0, 0);    /* tails, padded rows */
        test_fill_random(1000, 64, DSV_BF16, 0, 0, 127, -6, 0);    /* an embedding */
        test_fill_random(1, 7, DSV_BF16, 1, 64, 8, -6, 0);         /* a norm weight, 1-D */
        test_fill_random(33, 17, DSV_F32, 3, 1, 0, -9, 1);         /* power-of-two block scales */
        test_fill_random(1, 300, DSV_F32, 0, 0, 8, -10, 0);        /* a correction bias */
        test_fill_random(0, 5, DSV_F32, 0, 0, 8, -10, 0);          /* empty */
        for (int f = 0; f < 2; f++) {
                test_binary(DSV_OP_SWIGLU, 64, 2048, 0, f);
                test_binary(DSV_OP_SWIGLU, 3, 1001, 7, f);
                test_binary(DSV_OP_ADD, 64, 7168, 0, f);
                test_binary(DSV_OP_ADD, 1, 5, 3, f);
                test_rope(33, 128, 192, 128, 64, true, f, 1 << 20);  /* MLA q_pe */
                test_rope(33, 1, 64, 0, 64, true, f, 163839);        /* k_pe */
                test_rope(17, 64, 128, 0, 64, false, f, 131071);     /* indexer q */
                test_rope(1, 3, 10, 2, 6, false, f, 7);
                test_hadamard(64, 64 * 128, 128, f);
                test_hadamard(1, 128, 128, f);
                test_hadamard(3, 4096, 4096, f);
                test_hadamard(5, 8, 2, f);
        }
        gt_close(&g);
        return test_result("test-gpu-elementwise");
}
