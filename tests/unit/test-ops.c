/* Every CPU op against straightforward double-precision math on random inputs (and known
 * patterns for routing), in both numerics where they differ. Tolerances are per op. */
#include "config.h"

#include "daemon/kv_cache.h"
#include "daemon/model_config.h"
#include "daemon/rng.h"
#include "kernels/cpu/cpu.h"
#include "kernels/cpu/gemm.h"
#include "tests/unit/testutil.h"

static uint64_t rkey = 42;
static uint64_t rctr;
static float rnd(void) { return (float)dsv_rand_normal(rkey, rctr++); }
static float *rvec(size_t n, float sd) {
        float *v = malloc(n * sizeof(float));
        REQUIRE(v, "oom");
        for (size_t i = 0; i < n; i++)
                v[i] = rnd() * sd;
        return v;
}

/* An FP8 weight with power-of-two block scales from a random fp32 matrix. */
struct fp8w {
        struct dsv_tensor w, s;
        uint8_t *q;
        float *sc;
        double *deq; /* dequantized, row-major */
};
static void make_fp8(struct fp8w *f, int64_t N, int64_t K, float sd) {
        float *w = rvec((size_t)(N * K), sd);
        int64_t br = DIV_ROUND_UP(N, 128), bc = DIV_ROUND_UP(K, 128);
        f->q = malloc((size_t)(N * K));
        f->sc = malloc((size_t)(br * bc) * sizeof(float));
        f->deq = malloc((size_t)(N * K) * sizeof(double));
        for (int64_t bi = 0; bi < br; bi++)
                for (int64_t bj = 0; bj < bc; bj++) {
                        float amax = 0;
                        for (int64_t i = bi * 128; i < MIN(N, bi * 128 + 128); i++)
                                for (int64_t j = bj * 128; j < MIN(K, bj * 128 + 128); j++)
                                        amax = fmaxf(amax, fabsf(w[i * K + j]));
                        float s = dsv_act_scale(amax) * 0.5f; /* not the act_quant scale: any power of 2 */
                        f->sc[bi * bc + bj] = s;
                        for (int64_t i = bi * 128; i < MIN(N, bi * 128 + 128); i++)
                                for (int64_t j = bj * 128; j < MIN(K, bj * 128 + 128); j++) {
                                        f->q[i * K + j] = dsv_quant_e4m3(w[i * K + j], 1 / s);
                                        f->deq[i * K + j] = (double)dsv_e4m3_to_f32(f->q[i * K + j]) * s;
                                }
                }
        f->s = dsv_tensor_2d(DSV_F32, f->sc, br, bc);
        f->w = dsv_tensor_2d(DSV_F8_E4M3, f->q, N, K);
        f->w.scale = &f->s;
        free(w);
}
static void free_fp8(struct fp8w *f) {
        free(f->q);
        free(f->sc);
        free(f->deq);
}

/* bf16 "ulp" of x: tolerance for outputs rounded to bf16 */
static double bulp(double x) { return fmax(fabs(x), 1e-30) * 0x1p-8; }

static void test_linear(void) {
        const int64_t T = 5, K = 300, N = 200; /* partial blocks in both dims */
        struct fp8w f;
        make_fp8(&f, N, K, 0.05f);
        float *x = rvec((size_t)(T * K), 1.0f), *y = malloc((size_t)(T * N) * sizeof(float));
        struct dsv_tensor X = dsv_tensor_2d(DSV_F32, x, T, K), Y = dsv_tensor_2d(DSV_F32, y, T, N);
        /* faithful: act_quant'ed input, per-block sums, bf16 output */
        struct dsv_op_linear op = {.out = &Y, .x = &X, .w = &f.w, .quant_in = true, .round_out = true};
        REQUIRE(dsv_cpu_linear(&op) == 0, "linear");
        int64_t nbk = DIV_ROUND_UP(K, 128);
        for (int64_t t = 0; t < T; t++) {
                uint8_t q[300];
                float s[3];
                dsv_quant_row(x + t * K, K, q, s);
                for (int64_t n = 0; n < N; n++) {
                        double acc = 0;
                        for (int64_t kb = 0; kb < nbk; kb++) {
                                double b = 0;
                                for (int64_t k = kb * 128; k < MIN(K, kb * 128 + 128); k++)
                                        b += (double)dsv_e4m3_to_f32(q[k]) * dsv_e4m3_to_f32(f.q[n * K + k]);
                                acc += b * s[kb] * f.sc[(n / 128) * DIV_ROUND_UP(K, 128) + kb];
                        }
                        CHECK(fabs(y[t * N + n] - acc) <= bulp(acc) + 1e-6, "faithful linear [%lld,%lld] %g vs %g",
                              (long long)t, (long long)n, y[t * N + n], acc);
                        CHECK(y[t * N + n] == dsv_round_bf16(y[t * N + n]), "faithful output not bf16");
                }
        }
        /* exact: dequantized weights, fp32 input, no rounding */
        op.quant_in = op.round_out = false;
        REQUIRE(dsv_cpu_linear(&op) == 0, "linear");
        for (int64_t t = 0; t < T; t++)
                for (int64_t n = 0; n < N; n++) {
                        double acc = 0, mag = 0;
                        for (int64_t k = 0; k < K; k++) {
                                acc += (double)x[t * K + k] * f.deq[n * K + k];
                                mag += fabs((double)x[t * K + k] * f.deq[n * K + k]);
                        }
                        CHECK(fabs(y[t * N + n] - acc) <= 1e-6 * mag + 1e-9, "exact linear %g vs %g", y[t * N + n], acc);
                }
        /* BF16 and F32 weights */
        uint16_t *wb = malloc((size_t)(N * K) * 2);
        float *wf = malloc((size_t)(N * K) * 4);
        for (int64_t i = 0; i < N * K; i++) {
                wf[i] = rnd() * 0.05f;
                wb[i] = dsv_f32_to_bf16(wf[i]);
        }
        struct dsv_tensor WB = dsv_tensor_2d(DSV_BF16, wb, N, K), WF = dsv_tensor_2d(DSV_F32, wf, N, K);
        for (int v = 0; v < 2; v++) {
                struct dsv_op_linear o2 = {.out = &Y, .x = &X, .w = v ? &WF : &WB};
                REQUIRE(dsv_cpu_linear(&o2) == 0, "linear");
                for (int64_t t = 0; t < T; t++)
                        for (int64_t n = 0; n < N; n++) {
                                double acc = 0, mag = 0;
                                for (int64_t k = 0; k < K; k++) {
                                        double w = v ? wf[n * K + k] : dsv_bf16_to_f32(wb[n * K + k]);
                                        acc += x[t * K + k] * w;
                                        mag += fabs(x[t * K + k] * w);
                                }
                                CHECK(fabs(y[t * N + n] - acc) <= 1e-6 * mag + 1e-9, "%s linear", v ? "f32" : "bf16");
                        }
        }
        free(wb);
        free(wf);
        free(x);
        free(y);
        free_fp8(&f);
}

static void test_norms(void) {
        const int T = 3, N = 200;
        float *x = rvec(T * N, 0.5f), *res = rvec(T * N, 1.0f), *w = rvec(N, 0.1f), *o = malloc(T * N * sizeof(float));
        float *res0 = malloc(T * N * sizeof(float));
        memcpy(res0, res, T * N * sizeof(float));
        for (int i = 0; i < N; i++)
                w[i] += 1;
        struct dsv_tensor X = dsv_tensor_2d(DSV_F32, x, T, N), R = dsv_tensor_2d(DSV_F32, res, T, N),
                          W = dsv_tensor_2d(DSV_F32, w, 1, N), O = dsv_tensor_2d(DSV_F32, o, T, N);
        for (int faithful = 0; faithful < 2; faithful++) {
                memcpy(res, res0, T * N * sizeof(float));
                struct dsv_op_rmsnorm op = {.out = &O, .res = &R, .x = &X, .w = &W, .eps = 1e-6f};
                REQUIRE(dsv_cpu_rmsnorm(&op, faithful) == 0, "rmsnorm");
                for (int t = 0; t < T; t++) {
                        double ss = 0;
                        for (int i = 0; i < N; i++) {
                                double s = (double)(res0[t * N + i] + x[t * N + i]);
                                ss += s * s;
                        }
                        double r = 1 / sqrt(ss / N + 1e-6);
                        for (int i = 0; i < N; i++) {
                                float s = res0[t * N + i] + x[t * N + i];
                                double want = w[i] * s * r;
                                CHECK(res[t * N + i] == (faithful ? dsv_round_bf16(s) : s), "residual update");
                                CHECK(fabs(o[t * N + i] - want) <= (faithful ? bulp(want) : 1e-6 * fabs(want)) + 1e-7,
                                      "rmsnorm %g vs %g", o[t * N + i], want);
                        }
                }
        }
        /* layernorm with bias */
        float *b = rvec(N, 0.1f);
        struct dsv_tensor B = dsv_tensor_2d(DSV_F32, b, 1, N);
        struct dsv_op_layernorm ln = {.out = &O, .x = &X, .w = &W, .b = &B, .eps = 1e-6f};
        REQUIRE(dsv_cpu_layernorm(&ln, false) == 0, "layernorm");
        for (int t = 0; t < T; t++) {
                double mean = 0, var = 0;
                for (int i = 0; i < N; i++)
                        mean += x[t * N + i];
                mean /= N;
                for (int i = 0; i < N; i++)
                        var += (x[t * N + i] - mean) * (x[t * N + i] - mean);
                var /= N;
                for (int i = 0; i < N; i++) {
                        double want = (x[t * N + i] - mean) / sqrt(var + 1e-6) * w[i] + b[i];
                        CHECK(fabs(o[t * N + i] - want) <= 1e-5 * (1 + fabs(want)), "layernorm %g vs %g", o[t * N + i], want);
                }
        }
        free(x);
        free(res);
        free(res0);
        free(w);
        free(o);
        free(b);
}

static void test_rope(void) {
        struct dsv_model_config c;
        float inv[32];
        int low, high;
        dsv_model_config_v32(&c);
        dsv_cfg_yarn_range(&c, &low, &high);
        CHECK(low == 10 && high == 23, "YaRN range for the 671B config: [%d, %d], want [10, 23]", low, high);
        dsv_cfg_rope_inv_freq(&c, inv);
        for (int i = 0; i < 32; i++) {
                double base = pow(10000.0, -2.0 * i / 64);
                double ramp = fmin(fmax((i - 10.0) / (23.0 - 10.0), 0), 1);
                double want = base / 40 * ramp + base * (1 - ramp);
                CHECK(fabs(inv[i] - want) <= 1e-6 * want, "inv_freq[%d] %g vs %g", i, inv[i], want);
        }
        double sc = dsv_cfg_softmax_scale(&c), m = 0.1 * log(40.0) + 1;
        CHECK(fabs(sc - m * m / sqrt(192.0)) < 1e-12, "softmax scale %g", sc);

        /* interleaved (MLA) and half-split (indexer), two heads, rope on a sub-range */
        const int T = 4, H = 2, stride = 48, off = 16, rd = 32;
        int32_t pos[4] = {0, 1, 1000, 65000};
        for (int il = 0; il < 2; il++) {
                float *x = rvec(T * H * stride, 1.0f), *x0 = malloc(T * H * stride * sizeof(float));
                memcpy(x0, x, T * H * stride * sizeof(float));
                struct dsv_tensor X = dsv_tensor_2d(DSV_F32, x, T, H * stride), P = dsv_tensor_2d(DSV_I32, pos, 1, T),
                                  I = dsv_tensor_2d(DSV_F32, inv, 1, 16);
                struct dsv_op_rope op = {.x = &X, .pos = &P, .inv_freq = &I, .n_heads = H, .head_stride = stride, .offset = off,
                                         .rope_dim = rd, .interleaved = il};
                REQUIRE(dsv_cpu_rope(&op, false) == 0, "rope");
                for (int t = 0; t < T; t++)
                        for (int h = 0; h < H; h++) {
                                const float *a = x0 + t * H * stride + h * stride, *b = x + t * H * stride + h * stride;
                                for (int i = 0; i < off; i++)
                                        CHECK(a[i] == b[i], "rope touched a non-rope dim");
                                for (int i = 0; i < rd / 2; i++) {
                                        int p = off + (il ? 2 * i : i), q = off + (il ? 2 * i + 1 : i + rd / 2);
                                        double ang = (double)(float)((float)pos[t] * inv[i]);
                                        double re = a[p] * cos(ang) - a[q] * sin(ang), im = a[p] * sin(ang) + a[q] * cos(ang);
                                        CHECK(fabs(b[p] - re) < 1e-5 && fabs(b[q] - im) < 1e-5, "rope %s t%d i%d",
                                              il ? "interleaved" : "half-split", t, i);
                                }
                        }
                free(x);
                free(x0);
        }
}

static void test_hadamard(void) {
        const int d = 128, T = 2;
        float *x = rvec(T * 2 * d, 1.0f), *x0 = malloc(T * 2 * d * sizeof(float));
        memcpy(x0, x, T * 2 * d * sizeof(float));
        struct dsv_tensor X = dsv_tensor_2d(DSV_F32, x, T, 2 * d);
        struct dsv_op_hadamard op = {.x = &X, .d = d};
        REQUIRE(dsv_cpu_hadamard(&op, false) == 0, "hadamard");
        for (int g = 0; g < T * 2; g++)
                for (int i = 0; i < d; i++) {
                        double s = 0;
                        for (int j = 0; j < d; j++)
                                s += (__builtin_popcount((unsigned)(i & j)) & 1 ? -1.0 : 1.0) * x0[g * d + j];
                        s /= sqrt(d);
                        CHECK(fabs(x[g * d + i] - s) < 1e-5, "hadamard group %d [%d] %g vs %g", g, i, x[g * d + i], s);
                }
        /* orthonormal: applying it twice is the identity */
        REQUIRE(dsv_cpu_hadamard(&op, false) == 0, "hadamard");
        CHECK(max_abs_diff(x, x0, T * 2 * d, NULL) < 1e-5, "H H != I");
        free(x);
        free(x0);
}

static void test_elementwise(void) {
        const int N = 100;
        float *a = rvec(N, 2), *b = rvec(N, 1), *o = malloc(N * sizeof(float));
        struct dsv_tensor A = dsv_tensor_2d(DSV_F32, a, 1, N), B = dsv_tensor_2d(DSV_F32, b, 1, N), O = dsv_tensor_2d(DSV_F32, o, 1, N);
        struct dsv_op_swiglu sw = {.out = &O, .a = &A, .b = &B};
        REQUIRE(dsv_cpu_swiglu(&sw, true) == 0, "swiglu");
        for (int i = 0; i < N; i++) {
                double want = a[i] / (1 + exp(-(double)a[i])) * b[i];
                CHECK(fabs(o[i] - want) <= bulp(want) + 1e-7 && o[i] == dsv_round_bf16(o[i]), "swiglu %g vs %g", o[i], want);
        }
        struct dsv_op_add ad = {.out = &O, .a = &A, .b = &B};
        REQUIRE(dsv_cpu_add(&ad, false) == 0, "add");
        for (int i = 0; i < N; i++)
                CHECK(o[i] == a[i] + b[i], "add");
        /* embed and get_rows */
        uint16_t tab[4 * 3];
        for (int i = 0; i < 12; i++)
                tab[i] = dsv_f32_to_bf16((float)i);
        int32_t ids[2] = {3, 1}, bad[1] = {4};
        struct dsv_tensor TB = dsv_tensor_2d(DSV_BF16, tab, 4, 3), ID = dsv_tensor_2d(DSV_I32, ids, 1, 2),
                          E = dsv_tensor_2d(DSV_F32, o, 2, 3), BD = dsv_tensor_2d(DSV_I32, bad, 1, 1),
                          E1 = dsv_tensor_2d(DSV_F32, o, 1, 3);
        struct dsv_op_embed em = {.out = &E, .table = &TB, .ids = &ID};
        REQUIRE(dsv_cpu_embed(&em) == 0, "embed");
        CHECK(o[0] == 9 && o[2] == 11 && o[3] == 3 && o[5] == 5, "embed rows");
        struct dsv_op_embed em2 = {.out = &E1, .table = &TB, .ids = &BD};
        CHECK(dsv_cpu_embed(&em2) == -EINVAL, "embed rejects an id outside the table");
        free(a);
        free(b);
        free(o);
}

static void test_topk(void) {
        float v[300];
        int32_t out[300];
        void *scratch = malloc(300 * 16);
        for (int trial = 0; trial < 200; trial++) {
                int n = 1 + (int)(dsv_rand_u01(7, (uint64_t)trial) * 299), k = 1 + (int)(dsv_rand_u01(8, (uint64_t)trial) * n);
                for (int i = 0; i < n; i++)
                        v[i] = (float)(int)(rnd() * 4); /* many ties */
                if (trial % 5 == 0)
                        v[trial % n] = NAN;
                int got = dsv_topk_select(v, n, k, out, scratch);
                CHECK(got == k, "count");
                /* reference: stable order by (value desc, index asc), NaN last */
                int32_t want[300];
                int m = 0;
                bool used[300] = {0};
                for (int j = 0; j < k; j++) {
                        int best = -1;
                        for (int i = 0; i < n; i++) {
                                if (used[i])
                                        continue;
                                float vi = isnan(v[i]) ? -INFINITY : v[i], vb = best < 0 ? 0 : (isnan(v[best]) ? -INFINITY : v[best]);
                                if (best < 0 || vi > vb)
                                        best = i;
                        }
                        used[best] = true;
                        want[m++] = best;
                }
                for (int j = 0; j < k; j++) {
                        bool found = false;
                        for (int i = 0; i < k; i++)
                                found |= out[i] == want[j];
                        CHECK(found, "topk trial %d: %d missing", trial, want[j]);
                }
                for (int j = 1; j < k; j++)
                        CHECK(out[j - 1] < out[j], "topk output not ascending");
        }
        free(scratch);
}

/* The first n rows of t. */
static struct dsv_tensor first_rows(const struct dsv_tensor *t, int64_t n) {
        struct dsv_tensor v = *t;
        v.ne[1] = n;
        return v;
}

/* A small paged cache with random contents for the attention ops. */
struct cache {
        struct dsv_kv_layout L;
        void *base;
        int32_t pages[4];
        float *lat, *kpe, *key; /* what was stored, per position */
};
static void make_cache(struct cache *c, enum dsv_kv_format fmt, int n, int kv_lora, int rope, int idim) {
        struct dsv_model_config cfg = {.num_hidden_layers = 2, .kv_lora_rank = kv_lora, .qk_rope_head_dim = rope, .index_head_dim = idim};
        dsv_kv_layout_init(&c->L, &cfg, fmt, 64);
        size_t bytes = 4 * 2 * c->L.layer_page_bytes;
        c->base = calloc(1, bytes);
        int32_t perm[4] = {2, 0, 3, 1}; /* non-trivial page table */
        memcpy(c->pages, perm, sizeof(perm));
        c->lat = rvec((size_t)n * kv_lora, 1);
        c->kpe = rvec((size_t)n * rope, 1);
        c->key = rvec((size_t)n * idim, 1);
        int32_t *slots = malloc((size_t)n * sizeof(int32_t));
        for (int i = 0; i < n; i++)
                slots[i] = (int32_t)dsv_kv_slot(&c->L, c->pages, i);
        struct dsv_tensor S = dsv_tensor_2d(DSV_I32, slots, 1, n), La = dsv_tensor_2d(DSV_F32, c->lat, n, kv_lora),
                          Kp = dsv_tensor_2d(DSV_F32, c->kpe, n, rope), Ky = dsv_tensor_2d(DSV_F32, c->key, n, idim);
        struct dsv_op_kv_store st = {.kv = {&c->L, c->base, 1}, .slots = &S, .latent = &La, .k_pe = &Kp, .idx_key = &Ky};
        REQUIRE(dsv_cpu_kv_store(&st) == 0, "kv_store");
        free(slots);
        if (fmt == DSV_KV_FP8) /* what the cache can hold */
                for (int i = 0; i < n; i++) {
                        uint8_t q[1024];
                        float s[16];
                        dsv_quant_row(c->lat + (size_t)i * kv_lora, kv_lora, q, s);
                        for (int j = 0; j < kv_lora; j++)
                                c->lat[(size_t)i * kv_lora + j] = dsv_e4m3_to_f32(q[j]) * s[j / 128];
                        for (int j = 0; j < rope; j++)
                                c->kpe[(size_t)i * rope + j] = dsv_round_bf16(c->kpe[(size_t)i * rope + j]);
                        dsv_quant_row(c->key + (size_t)i * idim, idim, q, s);
                        for (int j = 0; j < idim; j++)
                                c->key[(size_t)i * idim + j] = dsv_e4m3_to_f32(q[j]) * s[j / 128];
                }
}
static void free_cache(struct cache *c) {
        free(c->base);
        free(c->lat);
        free(c->kpe);
        free(c->key);
}

static void test_kv(void) {
        for (int fmt = 0; fmt < 2; fmt++) {
                struct cache c;
                const int n = 150, kl = 512, rope = 64;
                make_cache(&c, (enum dsv_kv_format)fmt, n, kl, rope, 128);
                if (fmt == DSV_KV_FP8)
                        CHECK(c.L.mla_rec == 656 && c.L.idx_rec + c.L.idx_scale_rec == 132, "FP8 record sizes %zu + %zu",
                              c.L.mla_rec, c.L.idx_rec + c.L.idx_scale_rec);
                float *lat = malloc((size_t)n * kl * 4), *kpe = malloc((size_t)n * rope * 4);
                struct dsv_tensor La = dsv_tensor_2d(DSV_F32, lat, n, kl), Kp = dsv_tensor_2d(DSV_F32, kpe, n, rope),
                                  P = dsv_tensor_2d(DSV_I32, c.pages, 1, 4);
                struct dsv_op_kv_gather g = {.kv = {&c.L, c.base, 1}, .latent = &La, .k_pe = &Kp, .pages = &P, .n = n};
                REQUIRE(dsv_cpu_kv_gather(&g) == 0, "gather");
                CHECK(memcmp(lat, c.lat, (size_t)n * kl * 4) == 0, "%s latent round trip is not lossless", fmt ? "F32" : "FP8");
                CHECK(memcmp(kpe, c.kpe, (size_t)n * rope * 4) == 0, "%s k_pe round trip", fmt ? "F32" : "FP8");
                /* layer 0 untouched */
                struct dsv_op_kv_gather g0 = g;
                g0.kv.layer = 0;
                REQUIRE(dsv_cpu_kv_gather(&g0) == 0, "gather");
                CHECK(max_abs(lat, (size_t)n * kl) == 0, "store wrote into another layer");
                free(lat);
                free(kpe);
                free_cache(&c);
        }
}

static void test_indexer(void) {
        for (int faithful = 0; faithful < 2; faithful++) {
                const int n = 100, H = 4, d = 128, topk = 16, T = 3;
                struct cache c;
                make_cache(&c, faithful ? DSV_KV_FP8 : DSV_KV_F32, n, 64, 32, d);
                float *q = rvec((size_t)T * H * d, 1), *w = rvec((size_t)T * H, 1);
                uint8_t *q8 = malloc((size_t)T * H * d);
                float *qs = malloc((size_t)T * H * 4), *sc = malloc((size_t)T * n * 4);
                int32_t idx[3 * 16], seq[3] = {0, 0, 0}, pos[3] = {99, 40, 5};
                for (int t = 0; t < T; t++)
                        for (int h = 0; h < H; h++)
                                dsv_quant_row(q + ((size_t)t * H + h) * d, d, q8 + ((size_t)t * H + h) * d, qs + t * H + h);
                struct dsv_tensor I = dsv_tensor_2d(DSV_I32, idx, T, topk), S = dsv_tensor_2d(DSV_F32, sc, T, n),
                                  Q = faithful ? dsv_tensor_2d(DSV_U8, q8, T, H * d) : dsv_tensor_2d(DSV_F32, q, T, H * d),
                                  QS = dsv_tensor_2d(DSV_F32, qs, T, H), W = dsv_tensor_2d(DSV_F32, w, T, H),
                                  TS = dsv_tensor_2d(DSV_I32, seq, 1, T), TP = dsv_tensor_2d(DSV_I32, pos, 1, T),
                                  BT = dsv_tensor_2d(DSV_I32, c.pages, 1, 4);
                struct dsv_op_indexer_topk op = {.idx = &I, .scores = &S, .q = &Q, .q_scale = &QS, .w = &W,
                                                 .kv = {&c.L, c.base, 1}, .at = {&TS, &TP, &BT}, .n_heads = H, .head_dim = d,
                                                 .topk = topk, .w_scale1 = 0.5f, .w_scale2 = 0.25f, .faithful = faithful};
                REQUIRE(dsv_cpu_indexer_topk(&op) == 0, "indexer");
                for (int t = 0; t < T; t++) {
                        double want[100];
                        for (int s = 0; s <= pos[t]; s++) {
                                double acc = 0;
                                for (int h = 0; h < H; h++) {
                                        double dot = 0;
                                        for (int i = 0; i < d; i++)
                                                dot += (faithful ? dsv_e4m3_to_f32(q8[((size_t)t * H + h) * d + i]) * (double)qs[t * H + h]
                                                                 : q[((size_t)t * H + h) * d + i]) *
                                                       c.key[(size_t)s * d + i];
                                        acc += w[t * H + h] * 0.5 * 0.25 * fmax(dot, 0);
                                }
                                want[s] = acc;
                                CHECK(fabs(sc[t * n + s] - acc) < 1e-4 * (1 + fabs(acc)), "%s score t%d s%d %g vs %g",
                                      faithful ? "faithful" : "exact", t, s, sc[t * n + s], acc);
                        }
                        for (int s = pos[t] + 1; s < n; s++)
                                CHECK(isinf(sc[t * n + s]) && sc[t * n + s] < 0, "score beyond the position");
                        int k = MIN(topk, pos[t] + 1);
                        /* selected set = top k of want */
                        for (int j = 0; j < k; j++) {
                                int sel = idx[t * topk + j], better = 0;
                                CHECK(sel >= 0 && sel <= pos[t], "selected %d outside 0..%d", sel, pos[t]);
                                for (int s = 0; s <= pos[t]; s++)
                                        better += want[s] > want[sel] + 1e-9;
                                CHECK(better < k, "t%d: position %d is not among the top %d", t, sel, k);
                        }
                        for (int j = k; j < topk; j++)
                                CHECK(idx[t * topk + j] == -1, "padding");
                }
                /* on a 2-thread pool, the batch and each row alone (a decoding token's scores
                 * are split over the pool in chunks of positions), with and without the scores
                 * output: the same scores and selections, bit for bit */
                REQUIRE(dsv_cpu_pool_acquire(2) == 0, "pool");
                int32_t idx2[3 * 16];
                float *sc2 = malloc((size_t)T * n * 4);
                REQUIRE(sc2, "oom");
                for (int pass = 0; pass < 3; pass++) {
                        memset(idx2, 0x55, sizeof(idx2));
                        for (int t = 0; t < T; t++) {
                                const int t0 = pass == 1 ? t : 0, nt = pass == 1 ? 1 : T;
                                struct dsv_tensor I2 = dsv_tensor_2d(DSV_I32, idx2 + t0 * topk, nt, topk),
                                                  S2 = dsv_tensor_2d(DSV_F32, sc2 + (size_t)t0 * n, nt, n),
                                                  Q2 = faithful ? dsv_tensor_2d(DSV_U8, q8 + (size_t)t0 * H * d, nt, H * d)
                                                                : dsv_tensor_2d(DSV_F32, q + (size_t)t0 * H * d, nt, H * d),
                                                  QS2 = dsv_tensor_2d(DSV_F32, qs + t0 * H, nt, H), W2 = dsv_tensor_2d(DSV_F32, w + t0 * H, nt, H),
                                                  TS2 = dsv_tensor_2d(DSV_I32, seq + t0, 1, nt), TP2 = dsv_tensor_2d(DSV_I32, pos + t0, 1, nt);
                                struct dsv_op_indexer_topk op2 = op;
                                op2.idx = &I2;
                                op2.scores = pass == 2 ? NULL : &S2;
                                op2.q = &Q2;
                                op2.q_scale = &QS2;
                                op2.w = &W2;
                                op2.at = (struct dsv_kv_index){&TS2, &TP2, &BT};
                                REQUIRE(dsv_cpu_indexer_topk(&op2) == 0, "indexer on the pool");
                                if (pass != 1)
                                        break;
                        }
                        CHECK(memcmp(idx2, idx, sizeof(idx2)) == 0, "%s indexer on 2 threads (%s): other selections",
                              faithful ? "faithful" : "exact", pass == 1 ? "row by row" : "batch");
                        if (pass < 2)
                                CHECK(memcmp(sc2, sc, (size_t)T * n * 4) == 0, "%s indexer on 2 threads (%s): other scores",
                                      faithful ? "faithful" : "exact", pass == 1 ? "row by row" : "batch");
                }
                dsv_cpu_pool_release();
                free(sc2);
                free(q);
                free(w);
                free(q8);
                free(qs);
                free(sc);
                free_cache(&c);
        }
}

/* The indexer shares each chunk's converted keys among runs of rows of one sequence: a
 * batch of two sequences (their pages in other orders, so the same position holds another
 * key), runs longer than one work item's and broken by the other sequence, contexts over
 * several chunks with tails, gives each row the scores and selection it gets alone, bit for
 * bit, on one thread and on two. */
static void test_indexer_runs(void) {
        enum { T = 40, n = 256, H = 3, d = 128, topk = 16 };
        for (int faithful = 0; faithful < 2; faithful++) {
                struct cache c;
                make_cache(&c, faithful ? DSV_KV_FP8 : DSV_KV_F32, n, 64, 32, d);
                int32_t bt[2][4] = {{2, 0, 3, 1}, {1, 3, 0, 2}}, seq[T], pos[T], idx[T * topk], idx1[topk];
                for (int t = 0; t < T; t++) {
                        seq[t] = t >= 20 && t < 23; /* 20 rows of 0, 3 of 1, 17 of 0 */
                        pos[t] = t < 20 ? 180 + t : t < 23 ? (int32_t[]){70, 5, 130}[t - 20] : 7 * t - 131;
                }
                float *q = rvec((size_t)T * H * d, 1), *w = rvec((size_t)T * H, 1), *qs = malloc((size_t)T * H * 4);
                float *sc = malloc((size_t)T * n * 4), *sc1 = malloc((size_t)n * 4);
                uint8_t *q8 = malloc((size_t)T * H * d);
                REQUIRE(qs && sc && sc1 && q8, "oom");
                for (int i = 0; i < T * H; i++)
                        dsv_quant_row(q + (size_t)i * d, d, q8 + (size_t)i * d, qs + i);
                for (int threads = 1; threads <= 2; threads++) {
                        if (threads == 2)
                                REQUIRE(dsv_cpu_pool_acquire(2) == 0, "pool");
                        for (int t0 = -1; t0 < T; t0++) { /* -1: the batch, then each row alone */
                                const int r0 = t0 < 0 ? 0 : t0, nt = t0 < 0 ? T : 1;
                                struct dsv_tensor I = dsv_tensor_2d(DSV_I32, t0 < 0 ? idx : idx1, nt, topk),
                                                  S = dsv_tensor_2d(DSV_F32, t0 < 0 ? sc : sc1, nt, n),
                                                  Q = faithful ? dsv_tensor_2d(DSV_U8, q8 + (size_t)r0 * H * d, nt, H * d)
                                                               : dsv_tensor_2d(DSV_F32, q + (size_t)r0 * H * d, nt, H * d),
                                                  QS = dsv_tensor_2d(DSV_F32, qs + r0 * H, nt, H), W = dsv_tensor_2d(DSV_F32, w + r0 * H, nt, H),
                                                  TS = dsv_tensor_2d(DSV_I32, seq + r0, 1, nt), TP = dsv_tensor_2d(DSV_I32, pos + r0, 1, nt),
                                                  BT = dsv_tensor_2d(DSV_I32, bt, 2, 4);
                                struct dsv_op_indexer_topk op = {.idx = &I, .scores = &S, .q = &Q, .q_scale = &QS, .w = &W,
                                                                 .kv = {&c.L, c.base, 1}, .at = {&TS, &TP, &BT}, .n_heads = H,
                                                                 .head_dim = d, .topk = topk, .w_scale1 = 0.5f, .w_scale2 = 0.25f,
                                                                 .faithful = faithful};
                                REQUIRE(dsv_cpu_indexer_topk(&op) == 0, "indexer");
                                if (t0 < 0)
                                        continue;
                                CHECK(memcmp(sc1, sc + (size_t)t0 * n, (size_t)n * 4) == 0, "%s, %d threads: row %d scored otherwise in the batch",
                                      faithful ? "faithful" : "exact", threads, t0);
                                CHECK(memcmp(idx1, idx + t0 * topk, sizeof(idx1)) == 0,
                                      "%s, %d threads: row %d selected otherwise in the batch", faithful ? "faithful" : "exact", threads, t0);
                        }
                        if (threads == 2)
                                dsv_cpu_pool_release();
                }
                free(q);
                free(w);
                free(qs);
                free(sc);
                free(sc1);
                free(q8);
                free_cache(&c);
        }
}

/* MLA decode's two ways (a shared gather and (token, head) items for a few tokens per
 * thread; tokens gathering into their own scratch for more) give each token the bits it
 * gets alone: a batch on one thread and on two, a batch small enough for the shared way on
 * two, against each token alone. Rows of other lengths (-1 padding), both numerics. */
static void test_mla_decode_batch(void) {
        enum { H = 4, nope = 16, rope = 8, V = 12, C = 128, n = 200, T = 9, K = 24 };
        for (int faithful = 0; faithful < 2; faithful++) {
                struct cache c;
                make_cache(&c, faithful ? DSV_KV_FP8 : DSV_KV_F32, n, C, rope, 128);
                float *wkvb = rvec((size_t)H * (nope + V) * C, 0.1f), *q = rvec((size_t)T * H * (nope + rope), 1.0f);
                float *alone = malloc((size_t)T * H * V * 4), *out = malloc((size_t)T * H * V * 4);
                int32_t idx[T * K], seq[T] = {0}, pos[T];
                REQUIRE(wkvb && q && alone && out, "oom");
                for (size_t i = 0; i < (size_t)H * (nope + V) * C; i++)
                        wkvb[i] = dsv_round_bf16(wkvb[i]);
                for (int t = 0; t < T; t++) {
                        pos[t] = 20 * t + 30;
                        for (int j = 0; j < K; j++) /* row t has K - 2t positions, then -1 */
                                idx[t * K + j] = j < K - 2 * t ? (j * 7 + t * 11) % (pos[t] + 1) : -1;
                }
                for (int threads = 1; threads <= 2; threads++) {
                        if (threads == 2)
                                REQUIRE(dsv_cpu_pool_acquire(2) == 0, "pool");
                        /* each row alone first (t0 >= 0), then t0 == -2: the whole batch; -1: rows 3..5 */
                        for (int k = 0; k < T + 2; k++) {
                                const int t0 = k < T ? k : k - T - 2;
                                const int r0 = t0 == -1 ? 3 : t0 < 0 ? 0 : t0, nt = t0 == -2 ? T : t0 == -1 ? 3 : 1;
                                float *o = t0 < 0 ? out : alone + (size_t)t0 * H * V;
                                struct dsv_tensor O = dsv_tensor_2d(DSV_F32, o, nt, H * V),
                                                  Q = dsv_tensor_2d(DSV_F32, q + (size_t)r0 * H * (nope + rope), nt, H * (nope + rope)),
                                                  W = dsv_tensor_2d(DSV_F32, wkvb, H * (nope + V), C),
                                                  I = dsv_tensor_2d(DSV_I32, idx + r0 * K, nt, K), TS = dsv_tensor_2d(DSV_I32, seq + r0, 1, nt),
                                                  TP = dsv_tensor_2d(DSV_I32, pos + r0, 1, nt), BT = dsv_tensor_2d(DSV_I32, c.pages, 1, 4);
                                struct dsv_op_mla_decode op = {.out = &O, .q = &Q, .wkv_b = &W, .idx = &I, .kv = {&c.L, c.base, 1},
                                                               .at = {&TS, &TP, &BT}, .n_heads = H, .nope = nope, .rope = rope,
                                                               .v = V, .kv_lora = C, .scale = 0.3f, .faithful = faithful};
                                if (threads == 2 && t0 >= 0)
                                        continue; /* alone: computed on one thread */
                                REQUIRE(dsv_cpu_mla_decode(&op) == 0, "mla decode");
                                if (t0 >= 0)
                                        continue;
                                CHECK(memcmp(out, alone + (size_t)r0 * H * V, (size_t)nt * H * V * 4) == 0,
                                      "%s mla decode, %d threads: %d tokens from %d differ from each alone", faithful ? "faithful" : "exact",
                                      threads, nt, r0);
                        }
                        if (threads == 2)
                                dsv_cpu_pool_release();
                }
                /* each alone is the attention's math (a finite, non-zero output for each head) */
                for (int i = 0; i < T * H * V; i++)
                        CHECK(isfinite(alone[i]), "mla decode output %d not finite", i);
                free(wkvb);
                free(q);
                free(alone);
                free(out);
                free_cache(&c);
        }
}

/* MLA prefill reads each selected position's K/V row once for all heads: every row of a
 * batch gets the bits it gets alone, on one thread and on two, rows with -1 padding and a
 * row with nothing selected (all zeros) included. */
static void test_mla_prefill_batch(void) {
        enum { H = 5, nope = 16, rope = 8, V = 12, n = 90, T = 7, K = 20 };
        float *kvb = rvec((size_t)n * H * (nope + V), 1.0f), *kpe = rvec((size_t)n * rope, 1.0f),
              *q = rvec((size_t)T * H * (nope + rope), 1.0f);
        float *alone = malloc((size_t)T * H * V * 4), *out = malloc((size_t)T * H * V * 4);
        int32_t idx[T * K];
        REQUIRE(kvb && kpe && q && alone && out, "oom");
        for (int t = 0; t < T; t++)
                for (int j = 0; j < K; j++) /* row t selects K - 3t positions; row 6 none */
                        idx[t * K + j] = j < K - 3 * t - (t == 6) * 2 ? (j * 13 + t * 5) % n : -1;
        for (int faithful = 0; faithful < 2; faithful++)
                for (int threads = 1; threads <= 2; threads++) {
                        if (threads == 2)
                                REQUIRE(dsv_cpu_pool_acquire(2) == 0, "pool");
                        for (int k = 0; k <= T; k++) { /* each row alone, then the batch */
                                const int r0 = k < T ? k : 0, nt = k < T ? 1 : T;
                                float *o = k < T ? alone + (size_t)k * H * V : out;
                                struct dsv_tensor O = dsv_tensor_2d(DSV_F32, o, nt, H * V),
                                                  Q = dsv_tensor_2d(DSV_F32, q + (size_t)r0 * H * (nope + rope), nt, H * (nope + rope)),
                                                  KVB = dsv_tensor_2d(DSV_F32, kvb, n, H * (nope + V)),
                                                  KPE = dsv_tensor_2d(DSV_F32, kpe, n, rope), I = dsv_tensor_2d(DSV_I32, idx + r0 * K, nt, K);
                                struct dsv_op_mla_prefill pf = {.out = &O, .q = &Q, .kvb = &KVB, .k_pe = &KPE, .idx = &I,
                                                                .n_heads = H, .nope = nope, .rope = rope, .v = V, .scale = 0.2f,
                                                                .faithful = faithful};
                                REQUIRE(dsv_cpu_mla_prefill(&pf) == 0, "mla prefill");
                        }
                        CHECK(memcmp(out, alone, (size_t)T * H * V * 4) == 0, "%s mla prefill, %d threads: the batch differs from each row alone",
                              faithful ? "faithful" : "exact", threads);
                        for (int i = 0; i < H * V; i++)
                                CHECK(alone[(size_t)6 * H * V + i] == 0, "mla prefill: a row with nothing selected gives %g",
                                      alone[(size_t)6 * H * V + i]);
                        for (int i = 0; i < 6 * H * V; i++)
                                CHECK(isfinite(alone[i]) && (!faithful || alone[i] == dsv_round_bf16(alone[i])),
                                      "mla prefill output %d: %g", i, alone[i]);
                        if (threads == 2)
                                dsv_cpu_pool_release();
                }
        free(kvb);
        free(kpe);
        free(q);
        free(alone);
        free(out);
}

/* MLA decode and prefill against the math in double; decode == prefill in exact numerics */
static void test_mla(void) {
        const int H = 3, nope = 16, rope = 8, V = 12, C = 128, n = 70, T = 2, K = 20;
        struct cache c;
        make_cache(&c, DSV_KV_F32, n, C, rope, 128);
        float *wkvb = rvec((size_t)H * (nope + V) * C, 0.1f), *q = rvec((size_t)T * H * (nope + rope), 1.0f);
        int32_t idx[2 * 20], seq[2] = {0, 0}, pos[2] = {69, 30};
        for (int j = 0; j < K; j++) {
                idx[j] = j * 3;           /* 0..57 */
                idx[K + j] = j < 15 ? 2 * j : -1; /* 0..28, padded */
        }
        float *out = malloc((size_t)T * H * V * 4), *out2 = malloc((size_t)T * H * V * 4);
        struct dsv_tensor O = dsv_tensor_2d(DSV_F32, out, T, H * V), Q = dsv_tensor_2d(DSV_F32, q, T, H * (nope + rope)),
                          W = dsv_tensor_2d(DSV_F32, wkvb, H * (nope + V), C), I = dsv_tensor_2d(DSV_I32, idx, T, K),
                          TS = dsv_tensor_2d(DSV_I32, seq, 1, T), TP = dsv_tensor_2d(DSV_I32, pos, 1, T),
                          BT = dsv_tensor_2d(DSV_I32, c.pages, 1, 4);
        const float scale = 0.3f;
        struct dsv_op_mla_decode op = {.out = &O, .q = &Q, .wkv_b = &W, .idx = &I, .kv = {&c.L, c.base, 1}, .at = {&TS, &TP, &BT},
                                       .n_heads = H, .nope = nope, .rope = rope, .v = V, .kv_lora = C, .scale = scale};
        REQUIRE(dsv_cpu_mla_decode(&op) == 0, "mla decode");
        /* expanded K/V for prefill: kvb[j] = W c_j */
        float *kvb = malloc((size_t)n * H * (nope + V) * 4);
        for (int j = 0; j < n; j++)
                for (int r = 0; r < H * (nope + V); r++) {
                        double s = 0;
                        for (int i = 0; i < C; i++)
                                s += (double)wkvb[(size_t)r * C + i] * c.lat[(size_t)j * C + i];
                        kvb[(size_t)j * H * (nope + V) + r] = (float)s;
                }
        struct dsv_tensor O2 = dsv_tensor_2d(DSV_F32, out2, T, H * V), KVB = dsv_tensor_2d(DSV_F32, kvb, n, H * (nope + V)),
                          KPE = dsv_tensor_2d(DSV_F32, c.kpe, n, rope);
        struct dsv_op_mla_prefill pf = {.out = &O2, .q = &Q, .kvb = &KVB, .k_pe = &KPE, .idx = &I, .n_heads = H, .nope = nope,
                                        .rope = rope, .v = V, .scale = scale};
        REQUIRE(dsv_cpu_mla_prefill(&pf) == 0, "mla prefill");
        for (int t = 0; t < T; t++)
                for (int h = 0; h < H; h++) {
                        double s[20], mx = -1e300, sum = 0, o[12] = {0};
                        int m = 0;
                        const float *qh = q + ((size_t)t * H + h) * (nope + rope);
                        for (int j = 0; j < K; j++) {
                                int p = idx[t * K + j];
                                if (p < 0)
                                        continue;
                                double dot = 0;
                                for (int d = 0; d < nope; d++)
                                        dot += qh[d] * (double)kvb[(size_t)p * H * (nope + V) + h * (nope + V) + d];
                                for (int d = 0; d < rope; d++)
                                        dot += qh[nope + d] * (double)c.kpe[(size_t)p * rope + d];
                                s[m] = dot * scale;
                                mx = fmax(mx, s[m]);
                                m++;
                        }
                        for (int j = 0; j < m; j++)
                                sum += exp(s[j] - mx);
                        for (int j = 0, mm = 0; j < K; j++) {
                                int p = idx[t * K + j];
                                if (p < 0)
                                        continue;
                                double pj = exp(s[mm++] - mx) / sum;
                                for (int d = 0; d < V; d++)
                                        o[d] += pj * kvb[(size_t)p * H * (nope + V) + h * (nope + V) + nope + d];
                        }
                        for (int d = 0; d < V; d++) {
                                CHECK(fabs(out[t * H * V + h * V + d] - o[d]) < 1e-5 * (1 + fabs(o[d])), "mla decode t%d h%d d%d %g vs %g",
                                      t, h, d, out[t * H * V + h * V + d], o[d]);
                                CHECK(fabs(out2[t * H * V + h * V + d] - o[d]) < 1e-5 * (1 + fabs(o[d])), "mla prefill %g vs %g",
                                      out2[t * H * V + h * V + d], o[d]);
                        }
                }
        /* faithful: same math within bf16 rounding */
        op.faithful = pf.faithful = true;
        REQUIRE(dsv_cpu_mla_decode(&op) == 0 && dsv_cpu_mla_prefill(&pf) == 0, "faithful mla");
        double rms = 0;
        for (int i = 0; i < T * H * V; i++)
                rms += (double)out2[i] * out2[i];
        rms = sqrt(rms / (T * H * V));
        for (int i = 0; i < T * H * V; i++)
                CHECK(fabs(out[i] - out2[i]) < 0.05 * rms && out[i] == dsv_round_bf16(out[i]),
                      "faithful decode vs prefill [%d] %g vs %g (rms %g)", i, out[i], out2[i], rms);
        /* faithful with a bf16-valued table: held as BF16 (half the bytes, what the loader
         * keeps on the CPU backend) it gives the same bits as held as F32 */
        uint16_t *wb = malloc((size_t)H * (nope + V) * C * sizeof(uint16_t));
        REQUIRE(wb, "oom");
        for (size_t i = 0; i < (size_t)H * (nope + V) * C; i++) {
                wkvb[i] = dsv_round_bf16(wkvb[i]);
                wb[i] = dsv_f32_to_bf16(wkvb[i]);
        }
        REQUIRE(dsv_cpu_mla_decode(&op) == 0, "faithful mla, F32 table");
        struct dsv_tensor WB = dsv_tensor_2d(DSV_BF16, wb, H * (nope + V), C);
        op.wkv_b = &WB;
        op.out = &O2;
        REQUIRE(dsv_cpu_mla_decode(&op) == 0, "faithful mla, BF16 table");
        CHECK(memcmp(out, out2, (size_t)T * H * V * sizeof(float)) == 0, "faithful mla decode: the BF16 table differs from the F32 one");
        /* and the same in exact numerics (a BF16 table there is only a test's choice) */
        op.faithful = false;
        REQUIRE(dsv_cpu_mla_decode(&op) == 0, "exact mla, BF16 table");
        op.wkv_b = &W;
        op.out = &O;
        REQUIRE(dsv_cpu_mla_decode(&op) == 0, "exact mla, F32 table");
        CHECK(memcmp(out, out2, (size_t)T * H * V * sizeof(float)) == 0, "exact mla decode: the BF16 table differs from the F32 one");
        free(wb);
        free(wkvb);
        free(q);
        free(out);
        free(out2);
        free(kvb);
        free_cache(&c);
}

static float logit_of(float s) { return logf(s / (1 - s)); }

static void test_moe_gate(void) {
        /* 16 experts in 4 groups, 2 groups kept, top-4. Scores designed so that the best
         * single expert (e0) sits in a group whose top-2 sum loses: the group limit matters. */
        const int E = 16;
        float s[16] = {0.95f, 0.10f, 0.10f, 0.10f, 0.60f, 0.59f, 0.10f, 0.10f,
                       0.58f, 0.57f, 0.56f, 0.10f, 0.30f, 0.30f, 0.30f, 0.30f};
        float x[16], wg[16 * 16] = {0}, bias[16] = {0}, wt[4], sc[16];
        int32_t ids[4], forced[4] = {0, 1, 2, 12};
        for (int e = 0; e < E; e++) {
                x[e] = logit_of(s[e]);
                wg[e * 16 + e] = 1; /* logits = x */
        }
        struct dsv_tensor X = dsv_tensor_2d(DSV_F32, x, 1, 16), W = dsv_tensor_2d(DSV_F32, wg, 16, 16),
                          B = dsv_tensor_2d(DSV_F32, bias, 1, 16), ID = dsv_tensor_2d(DSV_I32, ids, 1, 4),
                          WT = dsv_tensor_2d(DSV_F32, wt, 1, 4), SC = dsv_tensor_2d(DSV_F32, sc, 1, 16),
                          F = dsv_tensor_2d(DSV_I32, forced, 1, 4);
        struct dsv_op_moe_gate op = {.ids = &ID, .weights = &WT, .scores = &SC, .x = &X, .w = &W, .bias = &B, .n_group = 4,
                                     .topk_group = 2, .k = 4, .route_scale = 2.5f, .norm_topk_prob = true};
        REQUIRE(dsv_cpu_moe_gate(&op) == 0, "gate");
        int want1[4] = {4, 5, 8, 9};
        for (int j = 0; j < 4; j++)
                CHECK(ids[j] == want1[j], "group-limited routing: ids[%d] = %d, want %d", j, ids[j], want1[j]);
        double sum = 0.60 + 0.59 + 0.58 + 0.57;
        CHECK(fabs(wt[0] - 0.60 / sum * 2.5) < 1e-5 && fabs(wt[3] - 0.57 / sum * 2.5) < 1e-5, "weights %g %g", wt[0], wt[3]);
        /* without the group limit e0 would win */
        op.n_group = 1;
        op.topk_group = 1;
        REQUIRE(dsv_cpu_moe_gate(&op) == 0, "gate");
        CHECK(ids[0] == 0, "ungrouped routing picks e0 (got %d)", ids[0]);
        op.n_group = 4;
        op.topk_group = 2;
        /* the correction bias changes the choice (e10 in), weights still from unbiased s */
        bias[10] = 0.05f;
        REQUIRE(dsv_cpu_moe_gate(&op) == 0, "gate");
        int want2[4] = {4, 5, 8, 10};
        for (int j = 0; j < 4; j++)
                CHECK(ids[j] == want2[j], "biased routing: ids[%d] = %d, want %d", j, ids[j], want2[j]);
        sum = 0.60 + 0.59 + 0.58 + 0.56;
        CHECK(fabs(wt[3] - 0.56 / sum * 2.5) < 1e-5, "bias must not enter the weights (%g)", wt[3]);
        CHECK(fabs(sc[10] - (0.56f + 0.05f)) < 1e-6, "scores output is the biased score");
        /* a bias large enough to lift a whole group */
        bias[12] = bias[13] = 0.5f;
        REQUIRE(dsv_cpu_moe_gate(&op) == 0, "gate");
        CHECK(ids[0] == 4 && ids[2] == 12 && ids[3] == 13, "group 3 lifted by bias: %d %d %d %d", ids[0], ids[1], ids[2], ids[3]);
        /* forced experts: weights follow them */
        op.forced_ids = &F;
        REQUIRE(dsv_cpu_moe_gate(&op) == 0, "gate");
        sum = 0.95 + 0.10 + 0.10 + 0.30;
        CHECK(ids[0] == 0 && ids[1] == 1 && ids[2] == 2 && ids[3] == 12, "forced ids");
        CHECK(fabs(wt[0] - 0.95 / sum * 2.5) < 1e-5, "forced weights %g", wt[0]);
        forced[0] = 99;
        CHECK(dsv_cpu_moe_gate(&op) == -EINVAL, "forced id outside the experts is rejected");
}

/* The routed experts as three ops: dispatch, grouped over an expert table, combine. */
static void test_moe_split(void) {
        /* known pattern: expert e's down projection writes e+1 into coordinate e; the slot rows
         * show which expert ran for which (token, slot), the combine their weighted sums */
        enum { E = 8, D = 16, I = 4, T = 3, k = 2, R = T * k };
        float *w1 = calloc(E * I * D, 4), *w3 = calloc(E * I * D, 4), *w2 = calloc(E * D * I, 4);
        struct dsv_moe_expert tab[E];
        REQUIRE(w1 && w3 && w2, "oom");
        for (int e = 0; e < E; e++) {
                /* w1 row 0 picks x[0] (a large positive input: silu ~ x), w3 row 0 gives 1 via x[1] = 1 */
                w1[e * I * D + 0] = 1;
                w3[e * I * D + 1] = 1;
                w2[e * D * I + e * I + 0] = (float)(e + 1) / 8.0f; /* out[e] = silu(x0) * 1 * (e+1)/8 */
                struct dsv_tensor t1 = dsv_tensor_2d(DSV_F32, w1 + e * I * D, I, D), t3 = dsv_tensor_2d(DSV_F32, w3 + e * I * D, I, D),
                                  t2 = dsv_tensor_2d(DSV_F32, w2 + e * D * I, D, I);
                tab[e] = (struct dsv_moe_expert){dsv_moe_weight_of(&t1), dsv_moe_weight_of(&t3), dsv_moe_weight_of(&t2)};
        }
        float x[T * D] = {0}, y[R * D], out[T * D], wts[R] = {1, 1, 1, 1, 0.5f, 2};
        /* token 1 names expert 3 twice (a forced list may), token 2 lists its experts descending */
        int32_t ids[R] = {0, 3, 3, 3, 2, 1}, cnt[E], off[E + 1], perm[R];
        for (int t = 0; t < T; t++) {
                x[t * D] = 8;
                x[t * D + 1] = 1;
        }
        struct dsv_tensor X = dsv_tensor_2d(DSV_F32, x, T, D), Y = dsv_tensor_2d(DSV_F32, y, R, D), O = dsv_tensor_2d(DSV_F32, out, T, D),
                          ID = dsv_tensor_2d(DSV_I32, ids, T, k), WT = dsv_tensor_2d(DSV_F32, wts, T, k),
                          CN = dsv_tensor_2d(DSV_I32, cnt, 1, E), OF = dsv_tensor_2d(DSV_I32, off, 1, E + 1),
                          PE = dsv_tensor_2d(DSV_I32, perm, 1, R), TB = dsv_tensor_2d(DSV_U8, tab, E, sizeof(struct dsv_moe_expert));
        struct dsv_op_moe_dispatch dp = {.counts = &CN, .offsets = &OF, .perm = &PE, .ids = &ID, .n_experts = E};
        struct dsv_op_moe_grouped gp = {.y = &Y, .x = &X, .ids = &ID, .counts = &CN, .offsets = &OF, .perm = &PE, .table = &TB,
                                        .n_experts = E, .inter = I, .weight_type = DSV_F32};
        struct dsv_op_moe_combine cp = {.out = &O, .y = &Y, .ids = &ID, .weights = &WT, .n_experts = E};

        REQUIRE(dsv_cpu_moe_dispatch(&dp) == 0, "dispatch");
        const int32_t want_cnt[E] = {1, 1, 1, 3, 0, 0, 0, 0}, want_perm[R] = {0, 5, 4, 1, 2, 3};
        for (int e = 0; e < E; e++)
                CHECK(cnt[e] == want_cnt[e] && off[e + 1] == off[e] + cnt[e], "dispatch: expert %d count %d offset %d", e, cnt[e], off[e]);
        CHECK(off[0] == 0 && off[E] == R, "dispatch: offsets %d..%d", off[0], off[E]);
        for (int i = 0; i < R; i++)
                CHECK(perm[i] == want_perm[i], "dispatch: perm[%d] = %d, want %d (ascending expert, then slot)", i, perm[i], want_perm[i]);

        REQUIRE(dsv_cpu_moe_grouped(&gp) == 0, "grouped");
        const double si = 8 / (1 + exp(-8.0));
        for (int s = 0; s < R; s++)
                for (int d = 0; d < D; d++) {
                        const double want = d == ids[s] ? si * (d + 1) / 8.0 : 0.0;
                        CHECK(fabs(y[s * D + d] - want) < 1e-5, "grouped: slot %d coord %d = %g, want %g (unweighted)", s, d, y[s * D + d], want);
                }
        REQUIRE(dsv_cpu_moe_combine(&cp) == 0, "combine");
        for (int t = 0; t < T; t++)
                for (int d = 0; d < D; d++) {
                        double want = 0;
                        for (int j = 0; j < k; j++)
                                if (ids[t * k + j] == d)
                                        want += wts[t * k + j] * si * (d + 1) / 8.0;
                        CHECK(fabs(out[t * D + d] - want) < 1e-5, "combine: token %d coord %d = %g, want %g", t, d, out[t * D + d], want);
                }
        /* each term is y * weight of its own slot (token 2 lists expert 2 before expert 1) */
        CHECK(out[2 * D + 1] == 0.0f + y[5 * D + 1] * 2.0f && out[2 * D + 2] == y[4 * D + 2] * 0.5f, "combine: each slot its own weight");

        /* a slot with id -1 (another rank's expert): not dispatched, a zero row, no term */
        ids[1] = -1;
        for (int i = 0; i < R * D; i++)
                y[i] = 12345.0f;
        REQUIRE(dsv_cpu_moe_dispatch(&dp) == 0 && dsv_cpu_moe_grouped(&gp) == 0 && dsv_cpu_moe_combine(&cp) == 0, "with a -1 slot");
        CHECK(cnt[3] == 2 && off[E] == R - 1 && perm[R - 1] == -1, "dispatch skips the -1 slot (count %d, rows %d, tail %d)", cnt[3], off[E], perm[R - 1]);
        bool zero = true;
        for (int d = 0; d < D; d++)
                zero &= y[1 * D + d] == 0.0f;
        CHECK(zero, "grouped: the -1 slot's row is zero");
        CHECK(out[0 * D + 3] == 0.0f && out[0 * D + 0] != 0.0f, "combine: the -1 slot adds nothing");
        ids[1] = 3;

        /* bad input: an id past the experts, in each op */
        ids[4] = E;
        CHECK(dsv_cpu_moe_dispatch(&dp) == -EINVAL, "dispatch: id %d of %d experts is rejected", E, E);
        CHECK(dsv_cpu_moe_combine(&cp) == -EINVAL, "combine: id out of range is rejected");
        ids[4] = 2;
        REQUIRE(dsv_cpu_moe_dispatch(&dp) == 0, "dispatch");
        ids[4] = E + 5;
        CHECK(dsv_cpu_moe_grouped(&gp) == -EINVAL, "grouped: id out of range is rejected");
        ids[4] = 2;
        /* a dispatch that does not match the ids (a lost or doubled row) is rejected */
        perm[1] = perm[0];
        CHECK(dsv_cpu_moe_grouped(&gp) == -EINVAL, "grouped: a perm naming a slot twice is rejected");
        REQUIRE(dsv_cpu_moe_dispatch(&dp) == 0, "dispatch");
        off[4] = 99;
        CHECK(dsv_cpu_moe_grouped(&gp) == -EINVAL, "grouped: offsets that disagree with the counts are rejected");
        REQUIRE(dsv_cpu_moe_dispatch(&dp) == 0, "dispatch");
        /* an absent expert (another rank owns it) with a row: -EPROTO, y untouched */
        const struct dsv_moe_expert keep = tab[3];
        memset(&tab[3], 0, sizeof(tab[3]));
        for (int i = 0; i < R * D; i++)
                y[i] = 7.0f;
        CHECK(dsv_cpu_moe_grouped(&gp) == -EPROTO, "grouped: a row for an absent expert is -EPROTO");
        CHECK(y[0] == 7.0f && y[R * D - 1] == 7.0f, "grouped: nothing written when it fails");
        /* an absent expert with no row is fine */
        tab[3] = keep;
        memset(&tab[6], 0, sizeof(tab[6]));
        CHECK(dsv_cpu_moe_grouped(&gp) == 0, "grouped: an absent expert without rows is fine");
        /* a weight of another type than the op says, or another shape */
        gp.weight_type = DSV_BF16;
        CHECK(dsv_cpu_moe_grouped(&gp) == -EINVAL, "grouped: weights of another type are rejected");
        gp.weight_type = DSV_F32;
        gp.inter = I + 1;
        CHECK(dsv_cpu_moe_grouped(&gp) == -EINVAL, "grouped: weights of another shape are rejected");
        gp.inter = I;
        free(w1);
        free(w2);
        free(w3);
}

/* MLA decode reading an FP8 kv_b (codes with block scales, as the CPU loader passes
 * kv_b_proj) gives the bits of the same op on the table the dequant op makes of it (F32 in
 * exact numerics; bf16-rounded F32 and BF16 in faithful), on every instruction set this CPU
 * runs, on 1 and 2 threads, for 1, 3 and 7 tokens, with odd head counts, kv_lora with a
 * partial block, and heads whose rows straddle 128-row blocks; scales that are not powers
 * of two. supports_op refuses FP8 without scales of the right shape. */
static void test_mla_fp8(void) {
        static const struct {
                int H, nope, rope, V, C;
        } sh[] = {{3, 16, 8, 12, 200}, {5, 64, 8, 64, 256}, {1, 40, 8, 24, 130}, {7, 48, 16, 32, 72}};
        enum { n = 200, TMAX = 7, K = 24 };
        const enum dsv_cpu_isa isa0 = dsv_cpu_isa_current();
        int compared = 0;
        for (size_t si = 0; si < sizeof(sh) / sizeof(sh[0]); si++)
                for (int faithful = 0; faithful < 2; faithful++) {
                        const int H = sh[si].H, nope = sh[si].nope, rope = sh[si].rope, V = sh[si].V, C = sh[si].C, R = H * (nope + V);
                        struct cache c;
                        struct fp8w f;
                        make_cache(&c, faithful ? DSV_KV_FP8 : DSV_KV_F32, n, C, rope, 128);
                        make_fp8(&f, R, C, 0.1f);
                        for (int64_t i = 0; i < f.s.ne[0] * f.s.ne[1]; i++)
                                f.sc[i] *= 1.0f + 0.3f * fabsf(rnd());
                        float *tf = malloc((size_t)R * C * 4), *q = rvec((size_t)TMAX * H * (nope + rope), 1.0f);
                        uint16_t *tb = malloc((size_t)R * C * 2);
                        float *o8 = malloc((size_t)TMAX * H * V * 4), *ot = malloc((size_t)TMAX * H * V * 4);
                        REQUIRE(tf && tb && q && o8 && ot, "oom");
                        struct dsv_tensor TF = dsv_tensor_2d(DSV_F32, tf, R, C), TB = dsv_tensor_2d(DSV_BF16, tb, R, C);
                        struct dsv_op_dequant dq = {.out = &TF, .w = &f.w, .round_bf16 = faithful};
                        REQUIRE(dsv_cpu_dequant(&dq) == 0, "dequant");
                        dq = (struct dsv_op_dequant){.out = &TB, .w = &f.w};
                        REQUIRE(dsv_cpu_dequant(&dq) == 0, "dequant");
                        int32_t idx[TMAX * K], seq[TMAX] = {0}, pos[TMAX];
                        for (int t = 0; t < TMAX; t++) {
                                pos[t] = 20 * t + 30;
                                for (int j = 0; j < K; j++)
                                        idx[t * K + j] = j < K - 2 * t ? (j * 7 + t * 11) % (pos[t] + 1) : -1;
                        }
                        struct dsv_tensor I = dsv_tensor_2d(DSV_I32, idx, TMAX, K), TS = dsv_tensor_2d(DSV_I32, seq, 1, TMAX),
                                          TP = dsv_tensor_2d(DSV_I32, pos, 1, TMAX), BT = dsv_tensor_2d(DSV_I32, c.pages, 1, 4);
                        struct dsv_op_mla_decode op = {.q = NULL, .wkv_b = &f.w, .idx = &I, .kv = {&c.L, c.base, 1}, .at = {&TS, &TP, &BT},
                                                       .n_heads = H, .nope = nope, .rope = rope, .v = V, .kv_lora = C, .scale = 0.3f,
                                                       .faithful = faithful};
                        CHECK(dsv_cpu_mla_decode_ok(&op), "mla decode refuses an FP8 kv_b");
                        for (int isa = 0; isa < DSV_CPU_ISA_MAX; isa++) {
                                if (dsv_cpu_isa_select((enum dsv_cpu_isa)isa) < 0)
                                        continue;
                                for (int threads = 1; threads <= 2; threads++) {
                                        if (threads == 2)
                                                REQUIRE(dsv_cpu_pool_acquire(2) == 0, "pool");
                                        static const int nts[] = {1, 3, TMAX};
                                        for (int k = 0; k < 3; k++) {
                                                const int nt = nts[k];
                                                struct dsv_tensor Q = dsv_tensor_2d(DSV_F32, q, nt, H * (nope + rope)),
                                                                  O8 = dsv_tensor_2d(DSV_F32, o8, nt, H * V),
                                                                  OT = dsv_tensor_2d(DSV_F32, ot, nt, H * V), In = first_rows(&I, nt);
                                                op.q = &Q;
                                                op.idx = &In;
                                                op.out = &O8;
                                                op.wkv_b = &f.w;
                                                REQUIRE(dsv_cpu_mla_decode(&op) == 0, "mla decode, FP8 kv_b");
                                                for (int form = 0; form < 1 + faithful; form++) {
                                                        op.out = &OT;
                                                        op.wkv_b = form ? &TB : &TF;
                                                        REQUIRE(dsv_cpu_mla_decode(&op) == 0, "mla decode, table");
                                                        CHECK(memcmp(o8, ot, (size_t)nt * H * V * 4) == 0,
                                                              "%s mla decode H=%d nope=%d V=%d C=%d, %s, %d thread(s), %d token(s): FP8 kv_b "
                                                              "differs from the %s table",
                                                              dsv_cpu_isa_name((enum dsv_cpu_isa)isa), H, nope, V, C,
                                                              faithful ? "faithful" : "exact", threads, nt, form ? "BF16" : "F32");
                                                        compared++;
                                                }
                                                for (int i = 0; i < nt * H * V; i++)
                                                        CHECK(isfinite(o8[i]), "mla decode, FP8 kv_b: output %d not finite", i);
                                        }
                                        if (threads == 2)
                                                dsv_cpu_pool_release();
                                }
                        }
                        /* scales missing or of the wrong shape, a row width other than kv_lora */
                        op.wkv_b = &f.w;
                        struct dsv_tensor w2 = f.w, s2 = f.s;
                        w2.scale = NULL;
                        op.wkv_b = &w2;
                        CHECK(!dsv_cpu_mla_decode_ok(&op), "mla decode takes FP8 without scales");
                        s2.ne[1]++;
                        w2.scale = &s2;
                        CHECK(!dsv_cpu_mla_decode_ok(&op), "mla decode takes FP8 scales of the wrong shape");
                        op.wkv_b = &f.w;
                        op.kv_lora = C - 1;
                        CHECK(!dsv_cpu_mla_decode_ok(&op), "mla decode takes an FP8 kv_b wider than kv_lora");
                        free(tf);
                        free(tb);
                        free(q);
                        free(o8);
                        free(ot);
                        free_fp8(&f);
                        free_cache(&c);
                }
        REQUIRE(dsv_cpu_isa_select(isa0) == 0, "select");
        CHECK(compared >= 4 * 3 * 3 * 2 * 2, "mla decode, FP8 kv_b: only %d comparisons", compared);
}

int main(void) {
        test_linear();
        test_norms();
        test_rope();
        test_hadamard();
        test_elementwise();
        test_topk();
        test_kv();
        test_indexer();
        test_indexer_runs();
        test_mla();
        test_mla_decode_batch();
        test_mla_prefill_batch();
        test_mla_fp8();
        test_moe_gate();
        test_moe_split();
        return test_result("test-ops");
}
