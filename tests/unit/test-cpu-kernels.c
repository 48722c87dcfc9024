/* The CPU linear kernels of every instruction set this machine runs (portable, avx2, avx512,
 * avx512bf16) against a plain scalar transcription of the canonical order in gemm.h: the
 * same bits, on random shapes with partial blocks in K and N, odd token counts, FP8 weights
 * (act_quant'ed or not, bf16 output or not), BF16 weights (bf16-valued activations, which
 * take the bf16 path, and arbitrary ones) and F32 weights; NaN codes and NaN activations
 * give NaN in the same places (token counts of 6 and more take the wide prefill tile). Each token's result is also the same alone as in the batch,
 * and on 1 or 2 pool threads. Paths this CPU lacks are reported and skipped;
 * dsv_cpu_isa_select refuses them.
 *
 * Also the vectorised act_quant (dsv_quant_row) and BF16 MoE gate against their scalar
 * definitions.
 *
 * `--supported` lists the paths this CPU runs. With DSV32_CPU_KERNELS set, also checks that the choice followed it (a name this CPU runs)
 * or was reported as not followed (anything else). */
#include "config.h"

#include "daemon/rng.h"
#include "kernels/cpu/cpu.h"
#include "kernels/cpu/fp8_rows.h"
#include "kernels/cpu/gemm.h"
#include "tests/unit/testutil.h"

static uint64_t rctr;
static float rnd(void) { return (float)dsv_rand_normal(7, rctr++); }

/* lane position of gemm.h */
static int64_t lane_k(bool fp8, int64_t kb, int s, int j, int e) {
        if (fp8)
                return kb * 128 + 64 * (s / 2) + 16 * (j / 4) + 8 * (s % 2) + 2 * (j % 4) + e;
        return kb * 128 + 32 * s + 2 * j + e;
}

static float wval(const struct dsv_tensor *w, int64_t n, int64_t k) {
        const void *row = dsv_tensor_row(w, n);
        if (k >= w->ne[0])
                return 0;
        switch (w->type) {
        case DSV_F8_E4M3:
                return dsv_e4m3_to_f32(((const uint8_t *)row)[k]);
        case DSV_BF16:
                return dsv_bf16_to_f32(((const uint16_t *)row)[k]);
        default:
                return ((const float *)row)[k];
        }
}

/* The canonical order, written out from gemm.h's comment. volatile: one rounding per step. */
static void canon_linear(const struct dsv_op_linear *p, float *out) {
        const int64_t T = p->x->ne[1], K = p->x->ne[0], N = p->w->ne[1], nbk = DIV_ROUND_UP(K, 128);
        const bool fp8 = p->w->type == DSV_F8_E4M3, quant = p->quant_in && fp8;
        float *xv = malloc((size_t)(nbk * 128) * sizeof(float)), *xs = malloc((size_t)nbk * sizeof(float));
        uint8_t *q = malloc((size_t)K);
        REQUIRE(xv && xs && q, "oom");
        for (int64_t t = 0; t < T; t++) {
                const float *x = dsv_tensor_row(p->x, t);
                for (int64_t k = 0; k < nbk * 128; k++)
                        xv[k] = 0;
                if (quant) {
                        dsv_quant_row(x, K, q, xs);
                        for (int64_t k = 0; k < K; k++)
                                xv[k] = dsv_e4m3_to_f32(q[k]);
                } else {
                        memcpy(xv, x, (size_t)K * sizeof(float));
                }
                for (int64_t n = 0; n < N; n++) {
                        volatile float tot[16] = {0};
                        for (int64_t kb = 0; kb < nbk; kb++) {
                                volatile float acc[16] = {0};
                                for (int s = 0; s < 4; s++)
                                        for (int j = 0; j < 16; j++)
                                                for (int e = 1; e >= 0; e--) {
                                                        int64_t k = lane_k(fp8, kb, s, j, e);
                                                        volatile float prod = xv[k] * wval(p->w, n, k);
                                                        acc[j] = acc[j] + prod;
                                                }
                                float as = quant ? xs[kb] : 1.0f;
                                float ws = fp8 ? ((const float *)dsv_tensor_row(p->w->scale, n / 128))[kb] : 1.0f;
                                volatile float sc = as * ws;
                                for (int j = 0; j < 16; j++) {
                                        volatile float m = acc[j] * sc;
                                        tot[j] = tot[j] + m;
                                }
                        }
                        volatile float r8[8], r4[4], r2[2], r;
                        for (int i = 0; i < 8; i++)
                                r8[i] = tot[i] + tot[i + 8];
                        for (int i = 0; i < 4; i++)
                                r4[i] = r8[i] + r8[i + 4];
                        for (int i = 0; i < 2; i++)
                                r2[i] = r4[i] + r4[i + 2];
                        r = r2[0] + r2[1];
                        out[t * N + n] = p->round_out ? dsv_round_bf16(r) : r;
                }
        }
        free(xv);
        free(xs);
        free(q);
}

static bool same(float a, float b) { return (a != a && b != b) || memcmp(&a, &b, sizeof(a)) == 0; }

struct weights {
        struct dsv_tensor w, s;
        void *data;
        float *scales;
};

/* N x K weights of the type; FP8 with power-of-two block scales (or any scales: pow2 false) */
static void make_weights(struct weights *W, enum dsv_dtype type, int64_t N, int64_t K, bool pow2, bool nan) {
        const size_t es = dsv_dtype_size(type);
        W->data = malloc((size_t)(N * K) * es + 64);
        REQUIRE(W->data, "oom");
        for (int64_t i = 0; i < N * K; i++) {
                float v = rnd();
                if (type == DSV_F8_E4M3)
                        ((uint8_t *)W->data)[i] = dsv_quant_e4m3(v * 64, 1.0f);
                else if (type == DSV_BF16)
                        ((uint16_t *)W->data)[i] = dsv_f32_to_bf16(v * 0.05f);
                else
                        ((float *)W->data)[i] = v * 0.05f;
        }
        if (nan && type == DSV_F8_E4M3)
                ((uint8_t *)W->data)[K / 2] = 0x7f; /* row 0 */
        W->w = dsv_tensor_2d(type, W->data, N, K);
        W->scales = NULL;
        if (type == DSV_F8_E4M3) {
                int64_t br = DIV_ROUND_UP(N, 128), bc = DIV_ROUND_UP(K, 128);
                W->scales = malloc((size_t)(br * bc) * sizeof(float));
                REQUIRE(W->scales, "oom");
                for (int64_t i = 0; i < br * bc; i++)
                        W->scales[i] = pow2 ? ldexpf(1.0f, -8 - (int)(i % 5)) : 0.0013f * (float)(i + 1);
                W->s = dsv_tensor_2d(DSV_F32, W->scales, br, bc);
                W->w.scale = &W->s;
        }
}

static int n_cases;

/* dsv_quant_row (branch-free, vectorised) against dsv_quant_e4m3 value by value, on values
 * over the whole e4m3 range, ties, subnormals, zeros and saturation */
static void check_quant_row(void) {
        enum { N = 128 * 512 };
        float *x = malloc(N * sizeof(float));
        uint8_t *q = malloc(N);
        float s[512];
        int bad = 0;
        REQUIRE(x && q, "oom");
        for (int i = 0; i < N; i++) {
                int b = i / 128;
                float v = rnd() * ldexpf(1.0f, b % 40 - 20);
                if (i % 7 == 0) /* exact e4m3 values and midpoints between them, after scaling */
                        v = dsv_e4m3_to_f32((uint8_t)(i & 0x7e)) * (i % 3 ? 1.0f : 1.0625f) * ldexpf(1.0f, b % 9);
                if (i % 128 == 5)
                        v = -0.0f;
                x[i] = v;
        }
        x[1000] = 1e30f; /* one block with a huge value: the others in it underflow to 0 */
        x[128 * 7 + 77] = NAN; /* a NaN block: scale NaN, every code 0x7f */
        /* a row whose length is no multiple of the block or of the vector width: a short
         * last block */
        const int n = N - 37;
        dsv_quant_row(x, n, q, s);
        for (int b = 0; b * 128 < n; b++) {
                float amax = 0;
                bool nan = false;
                for (int i = b * 128; i < MIN(n, (b + 1) * 128); i++) {
                        nan |= x[i] != x[i];
                        amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
                }
                float want = nan ? NAN : dsv_act_scale(amax);
                if (!(s[b] == want || (nan && s[b] != s[b])) && bad++ < 3)
                        CHECK(false, "act_quant block %d: scale %a, want %a", b, s[b], want);
        }
        for (int i = 0; i < n; i++) {
                uint8_t want = s[i / 128] != s[i / 128] ? 0x7f : dsv_quant_e4m3(x[i], 1.0f / s[i / 128]);
                if (q[i] != want && bad++ < 3)
                        CHECK(false, "act_quant of %a (scale %a): %#x, want %#x", x[i], s[i / 128], q[i], want);
        }
        CHECK(bad == 0, "act_quant: %d codes or scales differ from dsv_act_scale/dsv_quant_e4m3", bad);
        free(x);
        free(q);
}

/* The MoE gate with BF16 weights (several tokens: 16 experts per vector) against the scalar
 * definition, sigmoid(sum over i in order of x[i] * w[e][i]) + bias, and against the same
 * tokens one at a time (one token has a loop of its own): the same scores, ids and weights, bit for bit.
 * Odd sizes: experts no multiple of 16, tokens no multiple of 4, D no multiple of 16. */
static void check_gate_bf16(void) {
        enum { T = 23, D = 301, E = 40, K = 6 };
        float *x = malloc(sizeof(float) * T * D), bias[E], sc[T * E], wt[T * K], sc1[E], wt1[K];
        uint16_t *w = malloc(sizeof(uint16_t) * E * D);
        int32_t ids[T * K], ids1[K];
        int bad = 0;
        REQUIRE(x && w, "oom");
        for (int i = 0; i < T * D; i++)
                x[i] = rnd();
        for (int i = 0; i < E * D; i++)
                w[i] = dsv_f32_to_bf16(rnd() * 0.05f);
        for (int e = 0; e < E; e++)
                bias[e] = rnd() * 0.01f;
        struct dsv_tensor X = dsv_tensor_2d(DSV_F32, x, T, D), W = dsv_tensor_2d(DSV_BF16, w, E, D),
                          B = dsv_tensor_2d(DSV_F32, bias, 1, E), ID = dsv_tensor_2d(DSV_I32, ids, T, K),
                          WT = dsv_tensor_2d(DSV_F32, wt, T, K), SC = dsv_tensor_2d(DSV_F32, sc, T, E);
        struct dsv_op_moe_gate op = {.ids = &ID, .weights = &WT, .scores = &SC, .x = &X, .w = &W, .bias = &B, .n_group = 4,
                                     .topk_group = 2, .k = K, .route_scale = 2.5f, .norm_topk_prob = true};
        REQUIRE(dsv_cpu_moe_gate(&op) == 0, "gate");
        for (int t = 0; t < T; t++) {
                for (int e = 0; e < E; e++) {
                        float acc = 0;
                        for (int i = 0; i < D; i++) {
                                volatile float prod = x[t * D + i] * dsv_bf16_to_f32(w[e * D + i]); /* never fused */
                                acc += prod;
                        }
                        float want = 1.0f / (1.0f + expf(-acc)) + bias[e];
                        if (memcmp(&want, &sc[t * E + e], sizeof(float)) != 0 && bad++ < 3)
                                CHECK(false, "gate score token %d expert %d: %a, want %a", t, e, sc[t * E + e], want);
                }
                struct dsv_tensor X1 = dsv_tensor_2d(DSV_F32, x + t * D, 1, D), ID1 = dsv_tensor_2d(DSV_I32, ids1, 1, K),
                                  WT1 = dsv_tensor_2d(DSV_F32, wt1, 1, K), SC1 = dsv_tensor_2d(DSV_F32, sc1, 1, E);
                struct dsv_op_moe_gate one = op;
                one.x = &X1;
                one.ids = &ID1;
                one.weights = &WT1;
                one.scores = &SC1;
                REQUIRE(dsv_cpu_moe_gate(&one) == 0, "gate, one token");
                if ((memcmp(sc1, sc + t * E, sizeof(sc1)) || memcmp(ids1, ids + t * K, sizeof(ids1)) ||
                     memcmp(wt1, wt + t * K, sizeof(wt1))) &&
                    bad++ < 3)
                        CHECK(false, "gate: token %d alone differs from the batch", t);
        }
        CHECK(bad == 0, "BF16 gate: %d results differ from the scalar definition", bad);
        free(x);
        free(w);
}

/* One operand set on the current kernels vs the transcription, then token by token. */
static void check_case(const char *what, enum dsv_dtype type, int64_t T, int64_t K, int64_t N, bool quant, bool round,
                       bool bf16_x, bool pow2, bool nan) {
        struct weights W;
        float *x = malloc((size_t)(T * K) * sizeof(float)), *want = malloc((size_t)(T * N) * sizeof(float));
        float *got = malloc((size_t)(T * N) * sizeof(float)), *one = malloc((size_t)N * sizeof(float));
        REQUIRE(x && want && got && one, "oom");
        make_weights(&W, type, N, K, pow2, nan);
        for (int64_t i = 0; i < T * K; i++) {
                x[i] = rnd() * (i % 97 == 0 ? 40.0f : 1.0f);
                if (bf16_x)
                        x[i] = dsv_round_bf16(x[i]);
        }
        if (nan)
                x[(T - 1) * K + K / 3] = NAN;
        struct dsv_tensor X = dsv_tensor_2d(DSV_F32, x, T, K), Y = dsv_tensor_2d(DSV_F32, got, T, N);
        struct dsv_op_linear op = {.out = &Y, .x = &X, .w = &W.w, .quant_in = quant, .round_out = round};
        canon_linear(&op, want);
        REQUIRE(dsv_cpu_linear(&op) == 0, "linear");
        int bad = 0;
        for (int64_t i = 0; i < T * N; i++)
                if (!same(got[i], want[i]) && bad++ < 3)
                        CHECK(false, "%s %s [%lld,%lld] T=%lld K=%lld N=%lld: %a, want %a", dsv_cpu_isa_name(dsv_cpu_isa_current()),
                              what, (long long)(i / N), (long long)(i % N), (long long)T, (long long)K, (long long)N, got[i], want[i]);
        CHECK(bad == 0, "%s %s: %d of %lld outputs differ from the canonical order", dsv_cpu_isa_name(dsv_cpu_isa_current()), what,
              bad, (long long)(T * N));
        /* alone == in the batch */
        for (int64_t t = 0; t < T; t++) {
                struct dsv_tensor X1 = dsv_tensor_2d(DSV_F32, x + t * K, 1, K), Y1 = dsv_tensor_2d(DSV_F32, one, 1, N);
                struct dsv_op_linear o1 = {.out = &Y1, .x = &X1, .w = &W.w, .quant_in = quant, .round_out = round};
                REQUIRE(dsv_cpu_linear(&o1) == 0, "linear");
                for (int64_t n = 0; n < N; n++)
                        if (!same(one[n], got[t * N + n])) {
                                CHECK(false, "%s %s: token %lld alone differs from the batch at %lld", dsv_cpu_isa_name(dsv_cpu_isa_current()),
                                      what, (long long)t, (long long)n);
                                break;
                        }
        }
        n_cases++;
        free(W.data);
        free(W.scales);
        free(x);
        free(want);
        free(got);
        free(one);
}

/* FP8 rows by per-block table (fp8_rows.h) on the current path against the definition
 * rnd(e4m3(code) * s), as floats and as y += a * row: every code (NaN included: any NaN) under random scales (not powers of
 * two, negative ones too), rows of 1..300 columns (partial blocks and vector tails), rounded
 * to bf16 or not, at unaligned addresses. */
static void check_fp8_rows(void) {
        enum { NMAX = 300, NB = (NMAX + 127) / 128 };
        static struct dsv_fp8_tab tabs[NB];
        uint8_t code[NMAX + 1];
        float out[NMAX + 2], sc[NB];
        const enum dsv_cpu_isa isa = dsv_cpu_isa_current();
        int bad = 0, cases = 0;
        for (int round = 0; round < 2; round++)
                for (int n = 1; n <= NMAX; n += n < 70 ? 1 : 23) {
                        for (int b = 0; b < NB; b++) {
                                sc[b] = rnd() * 0.01f;
                                dsv_fp8_tab_make(&tabs[b], sc[b], round, isa);
                        }
                        for (int j = 0; j < n; j++) /* every code within the first 256 columns */
                                code[1 + j] = (uint8_t)(j < 256 ? (j * 167 + n) & 255 : rctr++ & 255);
                        out[1 + n] = 12345.0f; /* guard */
                        dsv_fp8_row_f32(code + 1, n, tabs, out + 1, isa);
                        for (int j = 0; j < n; j++) {
                                float want = dsv_e4m3_to_f32(code[1 + j]) * sc[j / 128];
                                want = round ? dsv_round_bf16(want) : want;
                                if (!same(out[1 + j], want) && bad++ < 5)
                                        CHECK(false, "%s fp8 row n=%d round=%d: column %d code 0x%02x gives %a, want %a",
                                              dsv_cpu_isa_name(isa), n, round, j, code[1 + j], out[1 + j], want);
                        }
                        CHECK(out[1 + n] == 12345.0f, "%s fp8 row n=%d: wrote past the row", dsv_cpu_isa_name(isa), n);
                        /* y += a * row: the product and the sum rounded separately */
                        float y[NMAX + 2], y0[NMAX + 1], buf[NMAX], a = rnd();
                        for (int j = 0; j < n; j++)
                                y0[j] = y[1 + j] = rnd();
                        y[1 + n] = 12345.0f;
                        dsv_fp8_row_axpy(code + 1, n, tabs, a, y + 1, buf, isa);
                        for (int j = 0; j < n; j++) {
                                float v = dsv_e4m3_to_f32(code[1 + j]) * sc[j / 128];
                                volatile float prod = a * (round ? dsv_round_bf16(v) : v);
                                float want = y0[j] + prod;
                                if (!same(y[1 + j], want) && bad++ < 5)
                                        CHECK(false, "%s fp8 axpy n=%d round=%d: column %d code 0x%02x gives %a, want %a",
                                              dsv_cpu_isa_name(isa), n, round, j, code[1 + j], y[1 + j], want);
                        }
                        CHECK(y[1 + n] == 12345.0f, "%s fp8 axpy n=%d: wrote past the row", dsv_cpu_isa_name(isa), n);
                        cases++;
                }
        CHECK(bad == 0, "%s fp8 rows: %d values differ from the definition", dsv_cpu_isa_name(isa), bad);
        n_cases += cases;
}

static void check_all_shapes(void) {
        /* T >= 6 takes the wide prefill tile of avx512bf16 (6 tokens), the rest the narrow
         * tiles (T = 29, 16, 13, 8 leave 5, 4, 1, 2), with rows past N in the last group */
        static const int64_t shapes[][3] = {{1, 128, 4},  {1, 300, 33},  {1, 2048, 64}, {3, 1024, 130}, {7, 257, 9},
                                            {2, 2112, 17}, {4, 64, 5},   {13, 300, 37}, {29, 1024, 70}, {8, 257, 12},
                                            {6, 128, 4},  {17, 640, 133}, {16, 384, 21}, {10, 1024, 8}};
        for (size_t i = 0; i < ARRAY_SIZE(shapes); i++) {
                int64_t T = shapes[i][0], K = shapes[i][1], N = shapes[i][2];
                check_case("fp8 faithful", DSV_F8_E4M3, T, K, N, true, true, false, true, false);
                check_case("fp8 exact", DSV_F8_E4M3, T, K, N, false, false, false, true, false);
                check_case("bf16 x bf16-valued", DSV_BF16, T, K, N, false, false, true, true, false);
                check_case("bf16 x fp32", DSV_BF16, T, K, N, false, false, false, true, false);
                check_case("f32", DSV_F32, T, K, N, false, i % 2, false, true, false);
        }
        check_case("fp8 faithful, scales not powers of two", DSV_F8_E4M3, 3, 300, 20, true, true, false, false, false);
        check_case("fp8 exact, scales not powers of two", DSV_F8_E4M3, 2, 300, 20, false, false, false, false, false);
        check_case("fp8 faithful, scales not powers of two, wide tile", DSV_F8_E4M3, 14, 300, 150, true, true, false, false, false);
        check_case("fp8 act_quant, fp32 out, scales not powers of two, wide tile", DSV_F8_E4M3, 14, 300, 150, true, false, false, false, false);
        check_case("fp8 act_quant, fp32 out, scales not powers of two, wide tile + 5", DSV_F8_E4M3, 17, 300, 36, true, false, false, false, false);
        check_case("fp8 act_quant, fp32 out, scales not powers of two, wide tile + 4", DSV_F8_E4M3, 16, 300, 36, true, false, false, false, false);
        check_case("fp8 faithful with NaNs, wide tile", DSV_F8_E4M3, 9, 256, 8, true, true, false, true, true);
        check_case("fp8 with a NaN code and a NaN activation", DSV_F8_E4M3, 2, 256, 8, false, false, false, true, true);
        check_case("fp8 faithful with NaNs", DSV_F8_E4M3, 2, 256, 8, true, true, false, true, true);
}

/* dsv_cpu_linear_multi prepares the activations of all its jobs in one pool job: every op's
 * output equals the canonical order, with ops that share their activations (an expert's w1
 * and w3), an exact op whose activations are not bf16 values (prepared again as f32), a BF16
 * op, an op of no tokens and one over the wide tile, in one call. */
static void check_linear_multi(void) {
        enum { NOPS = 6 };
        static const struct {
                enum dsv_dtype type;
                int64_t T, K, N;
                bool quant, bf16_x;
                int x; /* activations: the op's own, or those of op x */
        } c[NOPS] = {{DSV_F8_E4M3, 7, 300, 33, true, false, 0},   {DSV_F8_E4M3, 7, 300, 20, true, false, 0},
                     {DSV_F8_E4M3, 13, 257, 12, false, false, 2}, {DSV_BF16, 1, 128, 9, false, true, 3},
                     {DSV_F8_E4M3, 0, 128, 8, true, false, 4},    {DSV_F8_E4M3, 29, 1024, 70, true, false, 5}};
        struct weights W[NOPS];
        struct dsv_tensor X[NOPS], Y[NOPS];
        struct dsv_op_linear op[NOPS];
        const struct dsv_op_linear *ops[NOPS];
        float *x[NOPS], *got[NOPS], *want[NOPS];
        for (int i = 0; i < NOPS; i++) {
                make_weights(&W[i], c[i].type, c[i].N, c[i].K, true, false);
                x[i] = malloc((size_t)(c[i].T * c[i].K + 1) * sizeof(float));
                got[i] = malloc((size_t)(c[i].T * c[i].N + 1) * sizeof(float));
                want[i] = malloc((size_t)(c[i].T * c[i].N + 1) * sizeof(float));
                REQUIRE(x[i] && got[i] && want[i], "oom");
                for (int64_t k = 0; k < c[i].T * c[i].K; k++)
                        x[i][k] = c[i].bf16_x ? dsv_round_bf16(rnd()) : rnd();
                X[i] = dsv_tensor_2d(DSV_F32, x[c[i].x], c[i].T, c[i].K);
                Y[i] = dsv_tensor_2d(DSV_F32, got[i], c[i].T, c[i].N);
                op[i] = (struct dsv_op_linear){.out = &Y[i], .x = &X[i], .w = &W[i].w, .quant_in = c[i].quant, .round_out = c[i].quant};
                ops[i] = &op[i];
                canon_linear(&op[i], want[i]);
        }
        REQUIRE(dsv_cpu_linear_multi(ops, NOPS) == 0, "linear_multi");
        for (int i = 0; i < NOPS; i++) {
                int bad = 0;
                for (int64_t k = 0; k < c[i].T * c[i].N; k++)
                        bad += !same(got[i][k], want[i][k]);
                CHECK(bad == 0, "%s linear_multi op %d (T=%lld K=%lld N=%lld): %d outputs differ from the canonical order",
                      dsv_cpu_isa_name(dsv_cpu_isa_current()), i, (long long)c[i].T, (long long)c[i].K, (long long)c[i].N, bad);
                free(W[i].data);
                free(W[i].scales);
                free(x[i]);
                free(got[i]);
                free(want[i]);
        }
        n_cases++;
}

int main(int argc, char **argv) {
        const char *env = getenv("DSV32_CPU_KERNELS");
        int ran = 0;

        if (argc == 2 && strcmp(argv[1], "--supported") == 0) {
                /* for tests/cpu-paths.sh: the paths to force, one per line */
                for (int isa = 0; isa < DSV_CPU_ISA_MAX; isa++)
                        if (dsv_cpu_isa_supported((enum dsv_cpu_isa)isa))
                                printf("%s\n", dsv_cpu_isa_name((enum dsv_cpu_isa)isa));
                return 0;
        }

        /* the choice of the environment variable (it is read at the first use) */
        if (env && *env) {
                int want = dsv_cpu_isa_from_name(env);
                const char *d = dsv_cpu_isa_describe();
                printf("DSV32_CPU_KERNELS=%s: %s\n", env, d);
                if (want >= 0 && dsv_cpu_isa_supported((enum dsv_cpu_isa)want))
                        CHECK(dsv_cpu_isa_current() == (enum dsv_cpu_isa)want && strstr(d, "forced"), "the variable was not followed");
                else
                        CHECK(strstr(d, "DSV32_CPU_KERNELS=") != NULL && strstr(d, "forced") == NULL,
                              "an unusable DSV32_CPU_KERNELS is not reported: %s", d);
        }
        CHECK(dsv_cpu_isa_from_name("avx3") == -1 && dsv_cpu_isa_from_name("avx512bf16") == DSV_CPU_ISA_AVX512BF16, "names");
        CHECK(dsv_cpu_isa_supported(DSV_CPU_ISA_PORTABLE), "portable runs everywhere");
        check_quant_row();

        for (int threads = 1; threads <= 2; threads++) {
                REQUIRE(dsv_cpu_pool_acquire(threads) == 0, "pool");
                for (int isa = 0; isa < DSV_CPU_ISA_MAX; isa++) {
                        if (!dsv_cpu_isa_supported((enum dsv_cpu_isa)isa)) {
                                CHECK(dsv_cpu_isa_select((enum dsv_cpu_isa)isa) == -ENOTSUP, "an unsupported path was selected");
                                if (threads == 1)
                                        printf("%s: not supported by this CPU, skipped\n", dsv_cpu_isa_name((enum dsv_cpu_isa)isa));
                                continue;
                        }
                        REQUIRE(dsv_cpu_isa_select((enum dsv_cpu_isa)isa) == 0, "select");
                        if (isa == 0)
                                check_gate_bf16(); /* on 1 and 2 threads */
                        int before = n_cases;
                        check_all_shapes();
                        check_linear_multi();
                        if (threads == 1)
                                check_fp8_rows();
                        printf("%s, %d pool thread%s: %d cases equal to the canonical order\n", dsv_cpu_isa_name((enum dsv_cpu_isa)isa),
                               dsv_cpu_pool_threads(), threads == 1 ? "" : "s", n_cases - before);
                        ran++;
                }
                dsv_cpu_pool_release();
        }
        CHECK(dsv_cpu_isa_select(DSV_CPU_ISA_MAX) == -ENOTSUP, "an unknown path was selected");
        CHECK(ran >= 2, "no kernel ran");
        return test_result("test-cpu-kernels");
}
