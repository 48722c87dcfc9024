/* CPU checks of the CUDA backend's host-visible logic (always built, no GPU needed):
 *   - kernels/cuda/numerics_cu.h against kernels/numerics.h on every e4m3 code, every bf16
 *     pattern, millions of random floats and the rounding boundaries;
 *   - kernels/cuda/plan.h's KV addressing against what the CPU reference's kv_store writes,
 *     at the 671B layout and odd ones, and 64-bit offsets of a 1M-token pool;
 *   - the radix top-k of topk.cuh, emulated step by step (passes, digit picks, the 32 warp
 *     ranges, ballots) against dsv_topk_select, with ties, NaN, infinities and signed zeros,
 *     up to 1M candidates;
 *   - the tiled and weight-streaming linear kernels of linear.cuh, emulated with the same
 *     index helpers and the same per-128-block scaling, against the CPU linear op;
 *   - coverage of the tile/lane mappings and the chunk planner. */
#include "config.h"

#include "daemon/rng.h"
#include "kernels/cpu/cpu.h"
#include "kernels/cuda/plan.h"
#include "tests/unit/testutil.h"

static uint32_t bits(float f) { return dsv_f32_bits(f); }
static bool same_f(float a, float b) { return (a != a && b != b) || bits(a) == bits(b); }

static float rand_float_bits(uint64_t i) { return dsv_bits_f32((uint32_t)dsv_mix64(0xf1 ^ i)); }

static void test_numerics(void) {
        int bad = 0;
        for (int c = 0; c < 256; c++)
                bad += !same_f(dcu_e4m3_to_f32((uint8_t)c), dsv_e4m3_to_f32((uint8_t)c));
        CHECK(bad == 0, "%d e4m3 codes decode differently", bad);

        bad = 0;
        for (uint32_t h = 0; h < 65536; h++) {
                float f = dsv_bits_f32(h << 16);
                bad += dcu_f32_to_e4m3(f) != dsv_f32_to_e4m3(f);
                bad += dcu_f32_to_bf16(f) != dsv_f32_to_bf16(f);
                bad += !same_f(dcu_act_scale(fabsf(f)), dsv_act_scale(fabsf(f)));
        }
        CHECK(bad == 0, "%d bf16 patterns convert differently", bad);

        bad = 0;
        for (uint64_t i = 0; i < (1u << 24); i++) {
                float f = rand_float_bits(i);
                bad += dcu_f32_to_e4m3(f) != dsv_f32_to_e4m3(f);
                bad += dcu_f32_to_bf16(f) != dsv_f32_to_bf16(f);
                bad += !same_f(dcu_round_bf16(f), dsv_round_bf16(f));
                if ((i & 15) == 0) {
                        float a = fabsf(f);
                        bad += !same_f(dcu_act_scale(a), dsv_act_scale(a));
                        float inv = 1.0f / dsv_act_scale(a);
                        float x = rand_float_bits(i + 1) * 1e-3f;
                        bad += dcu_quant_e4m3(x, inv) != dsv_quant_e4m3(x, inv);
                }
        }
        CHECK(bad == 0, "%d random floats convert differently", bad);

        /* around every e4m3 rounding boundary: midpoints between codes, +-1 ulp */
        bad = 0;
        for (int c = 0; c < 126; c++) {
                float a = dsv_e4m3_to_f32((uint8_t)c), b = dsv_e4m3_to_f32((uint8_t)(c + 1));
                float mid = (a + b) / 2;
                for (int d = -2; d <= 2; d++) {
                        float f = dsv_bits_f32(bits(mid) + (uint32_t)d);
                        bad += dcu_f32_to_e4m3(f) != dsv_f32_to_e4m3(f) || dcu_f32_to_e4m3(-f) != dsv_f32_to_e4m3(-f);
                }
        }
        /* act_scale's boundaries: amax = 448 * 2^k and its neighbours */
        for (int k = -40; k < 40; k++) {
                float a = ldexpf(448.0f, k);
                for (int d = -2; d <= 2; d++) {
                        float f = dsv_bits_f32(bits(a) + (uint32_t)d);
                        bad += !same_f(dcu_act_scale(f), dsv_act_scale(f));
                }
        }
        float sp[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 1e-4f, 9.99e-5f, 448.0f, 464.0f, 1e-45f, 3.4e38f};
        for (size_t i = 0; i < sizeof(sp) / sizeof(sp[0]); i++) {
                bad += dcu_f32_to_e4m3(sp[i]) != dsv_f32_to_e4m3(sp[i]) || dcu_f32_to_bf16(sp[i]) != dsv_f32_to_bf16(sp[i]);
                bad += !same_f(dcu_act_scale(sp[i]), dsv_act_scale(sp[i]));
        }
        CHECK(bad == 0, "%d boundary values convert differently", bad);

        bad = 0;
        for (uint64_t i = 0; i < 100000; i++) {
                uint64_t key = dsv_mix64(i * 3 + 1);
                bad += dcu_mix64(i) != dsv_mix64(i) || dcu_rand_u01(key, i) != dsv_rand_u01(key, i);
        }
        CHECK(bad == 0, "%d random numbers differ from daemon/rng.h", bad);

        /* the three-plane bf16 split is exact */
        bad = 0;
        for (uint64_t i = 0; i < (1u << 22); i++) {
                float f = rand_float_bits(i + 99);
                if (!(fabsf(f) <= 3.0e38f) || fabsf(f) < 0x1p-100f)
                        continue; /* below 2^-100 the residuals would be bf16 subnormals */
                uint16_t b0, b1, b2;
                dcu_split3_bf16(f, &b0, &b1, &b2);
                double sum = (double)dsv_bf16_to_f32(b0) + (double)dsv_bf16_to_f32(b1) + (double)dsv_bf16_to_f32(b2);
                float back = (dsv_bf16_to_f32(b0) + dsv_bf16_to_f32(b1)) + dsv_bf16_to_f32(b2);
                bad += sum != (double)f || !same_f(back, f);
        }
        CHECK(bad == 0, "%d floats are not the sum of their three bf16 planes", bad);
}

/* ------------------------------------------------------------------ KV addressing */
static struct dcu_kv kv_of(const struct dsv_kv_layout *L, int layer) {
        /* as backend_cuda.cu's dcu_kv_of */
        struct dcu_kv k = {.fp8 = L->format == DSV_KV_FP8, .page_tokens = L->page_tokens, .n_layers = L->n_layers, .layer = layer,
                           .kv_lora = L->kv_lora, .rope = L->rope, .index_dim = L->index_dim, .mla_rec = (int64_t)L->mla_rec,
                           .idx_rec = (int64_t)L->idx_rec, .idx_scale_rec = (int64_t)L->idx_scale_rec,
                           .idx_off = (int64_t)L->idx_off, .idx_scale_off = (int64_t)L->idx_scale_off,
                           .layer_page_bytes = (int64_t)L->layer_page_bytes};
        return k;
}

static void test_kv_addressing(enum dsv_kv_format fmt, int n_layers, int layer, int kv_lora, int rope, int index_dim) {
        struct dsv_kv_layout L;
        dsv_kv_layout_make(&L, fmt, n_layers, kv_lora, rope, index_dim, 64);
        const int n_pages = 5, T = 40;
        const size_t bytes = (size_t)n_pages * n_layers * L.layer_page_bytes;
        uint8_t *pool = calloc(bytes, 1);
        float *lat = malloc((size_t)T * kv_lora * 4), *pe = malloc((size_t)T * rope * 4), *key = malloc((size_t)T * index_dim * 4);
        int32_t slots[40];
        REQUIRE(pool && lat && pe && key, "oom");
        for (int t = 0; t < T; t++)
                slots[t] = (int32_t)((dsv_mix64((uint64_t)t) % (uint64_t)(n_pages * 64)));
        for (int t = 0; t < T; t++) /* distinct slots */
                for (int u = 0; u < t; u++)
                        if (slots[u] == slots[t]) {
                                slots[t] = (slots[t] + 1) % (n_pages * 64);
                                u = -1;
                        }
        for (int i = 0; i < T * kv_lora; i++)
                lat[i] = (float)dsv_rand_normal(1, (uint64_t)i);
        for (int i = 0; i < T * rope; i++)
                pe[i] = (float)dsv_rand_normal(2, (uint64_t)i);
        for (int i = 0; i < T * index_dim; i++)
                key[i] = (float)dsv_rand_normal(3, (uint64_t)i);
        struct dsv_tensor ts = dsv_tensor_2d(DSV_I32, slots, 1, T), tl = dsv_tensor_2d(DSV_F32, lat, T, kv_lora),
                          tp = dsv_tensor_2d(DSV_F32, pe, T, rope), tk = dsv_tensor_2d(DSV_F32, key, T, index_dim);
        struct dsv_op_kv_store st = {.kv = {&L, pool, layer}, .slots = &ts, .latent = &tl, .k_pe = &tp, .idx_key = &tk};
        REQUIRE(dsv_cpu_kv_store(&st) == 0, "kv_store");

        const struct dcu_kv k = kv_of(&L, layer);
        int bad = 0;
        uint8_t *q = malloc((size_t)(kv_lora > index_dim ? kv_lora : index_dim));
        float sc[64];
        REQUIRE(q, "oom");
        for (int t = 0; t < T; t++) {
                const uint8_t *rec = pool + dcu_kv_mla_off(&k, slots[t]);
                const uint8_t *kq = pool + dcu_kv_idx_off(&k, slots[t]);
                bad += rec != dsv_kv_layer_page(&st.kv, slots[t] / 64) + (size_t)(slots[t] % 64) * L.mla_rec;
                if (fmt == DSV_KV_FP8) {
                        dsv_quant_row(lat + (size_t)t * kv_lora, kv_lora, q, sc);
                        bad += memcmp(rec, q, (size_t)kv_lora) != 0;
                        bad += memcmp(rec + dcu_kv_mla_scales(&k), sc, 4 * (size_t)DIV_ROUND_UP(kv_lora, 128)) != 0;
                        for (int i = 0; i < rope; i++) {
                                uint16_t h;
                                memcpy(&h, rec + dcu_kv_mla_kpe(&k) + 2 * i, 2);
                                bad += h != dsv_f32_to_bf16(pe[(size_t)t * rope + i]);
                        }
                        dsv_quant_row(key + (size_t)t * index_dim, index_dim, q, sc);
                        bad += memcmp(kq, q, (size_t)index_dim) != 0;
                        bad += memcmp(pool + dcu_kv_idx_scale_off(&k, slots[t]), sc, L.idx_scale_rec) != 0;
                } else {
                        bad += memcmp(rec, lat + (size_t)t * kv_lora, (size_t)kv_lora * 4) != 0;
                        bad += memcmp(rec + 4 * (size_t)kv_lora, pe + (size_t)t * rope, (size_t)rope * 4) != 0;
                        bad += memcmp(kq, key + (size_t)t * index_dim, (size_t)index_dim * 4) != 0;
                }
        }
        CHECK(bad == 0, "kv addressing %s lora=%d rope=%d idx=%d layer %d/%d: %d mismatches", fmt == DSV_KV_FP8 ? "fp8" : "f32",
              kv_lora, rope, index_dim, layer, n_layers, bad);
        /* dcu_kv_slot = dsv_kv_slot on a page table */
        int32_t pages[7] = {4, 0, 3, 1, 2, 6, 5};
        for (int64_t pos = 0; pos < 7 * 64; pos += 13)
                CHECK(dcu_kv_slot(pages, 64, pos) == dsv_kv_slot(&L, pages, pos), "slot of %lld", (long long)pos);
        free(pool);
        free(lat);
        free(pe);
        free(key);
        free(q);
}

static void test_kv_large(void) {
        /* 1M tokens x 61 layers: offsets beyond 2^32 stay exact */
        struct dsv_kv_layout L;
        dsv_kv_layout_make(&L, DSV_KV_FP8, 61, 512, 64, 128, 64);
        const struct dcu_kv k = kv_of(&L, 60);
        const int64_t slot = (1 << 20) - 1;
        const unsigned __int128 want = ((unsigned __int128)(slot / 64) * 61 + 60) * L.layer_page_bytes + (slot % 64) * L.mla_rec;
        CHECK((unsigned __int128)dcu_kv_mla_off(&k, slot) == want, "64-bit MLA offset");
        CHECK(dcu_kv_mla_off(&k, slot) > ((int64_t)1 << 32), "the test reaches past 4 GiB (%lld)", (long long)dcu_kv_mla_off(&k, slot));
        CHECK(L.mla_rec == 656 && L.idx_rec + L.idx_scale_rec == 132, "671B record sizes");
}

/* ------------------------------------------------------------------ top-k emulation */
/* topk.cuh's dcu_topk_kernel, one thread at a time. */
static void emulate_topk(const float *row, int64_t n, int topk, int32_t *o) {
        if (topk <= 0)
                return;
        if (n <= topk) {
                for (int i = 0; i < topk; i++)
                        o[i] = i < n ? i : -1;
                return;
        }
        uint32_t prefix = 0, krem = (uint32_t)topk, hist[256];
        for (int pass = 0; pass < 4; pass++) {
                const int shift = 24 - 8 * pass;
                const uint32_t mask = pass == 0 ? 0u : 0xffffffffu << (32 - 8 * pass);
                memset(hist, 0, sizeof(hist));
                for (int64_t i = 0; i < n; i++) {
                        uint32_t u = dcu_topk_key(row[i]);
                        if ((u & mask) == prefix)
                                hist[(u >> shift) & 255u]++;
                }
                uint32_t k2, d = dcu_radix_pick(hist, krem, &k2);
                prefix |= d << shift;
                krem = k2;
        }
        const uint32_t thr = prefix, take_eq = krem;
        enum { NW = 32 };
        uint32_t w_gt[NW], w_eq[NW], w_out[NW], w_eqb[NW];
        for (int w = 0; w < NW; w++) {
                int64_t b, e;
                dcu_topk_warp_range(n, w, NW, &b, &e);
                w_gt[w] = w_eq[w] = 0;
                for (int64_t base = b; base < e; base += 32)
                        for (int lane = 0; lane < 32; lane++) {
                                int64_t i = base + lane;
                                uint32_t u = i < e ? dcu_topk_key(row[i]) : 0u;
                                w_gt[w] += i < e && u > thr;
                                w_eq[w] += i < e && u == thr;
                        }
        }
        uint32_t eqb = 0, ob = 0;
        for (int w = 0; w < NW; w++) {
                uint32_t left = take_eq > eqb ? take_eq - eqb : 0, te = w_eq[w] < left ? w_eq[w] : left;
                w_eqb[w] = eqb;
                w_out[w] = ob;
                eqb += w_eq[w];
                ob += w_gt[w] + te;
        }
        for (int w = 0; w < NW; w++) {
                int64_t b, e;
                dcu_topk_warp_range(n, w, NW, &b, &e);
                uint32_t eq_rank = w_eqb[w], pos = w_out[w];
                for (int64_t base = b; base < e; base += 32) {
                        uint32_t eqm = 0, selm = 0;
                        bool is_gt[32], is_eq[32];
                        for (int lane = 0; lane < 32; lane++) {
                                int64_t i = base + lane;
                                uint32_t u = i < e ? dcu_topk_key(row[i]) : 0u;
                                is_gt[lane] = i < e && u > thr;
                                is_eq[lane] = i < e && u == thr;
                                eqm |= (uint32_t)is_eq[lane] << lane;
                        }
                        for (int lane = 0; lane < 32; lane++) {
                                uint32_t lt = (1u << lane) - 1u;
                                bool sel = is_gt[lane] || (is_eq[lane] && eq_rank + (uint32_t)__builtin_popcount(eqm & lt) < take_eq);
                                selm |= (uint32_t)sel << lane;
                        }
                        for (int lane = 0; lane < 32; lane++)
                                if (selm >> lane & 1u)
                                        o[pos + (uint32_t)__builtin_popcount(selm & ((1u << lane) - 1u))] = (int32_t)(base + lane);
                        pos += (uint32_t)__builtin_popcount(selm);
                        eq_rank += (uint32_t)__builtin_popcount(eqm);
                }
        }
}

static void test_topk_case(const char *what, const float *v, int64_t n, int topk) {
        int32_t *a = malloc((size_t)topk * 4), *b = malloc((size_t)topk * 4);
        void *scratch = malloc((size_t)n * 8 + 8);
        REQUIRE(a && b && scratch, "oom");
        int k = dsv_topk_select(v, (int)n, topk, a, scratch);
        for (int i = k; i < topk; i++)
                a[i] = -1;
        for (int i = 0; i < topk; i++)
                b[i] = -2;
        emulate_topk(v, n, topk, b);
        int diff = 0;
        for (int i = 0; i < topk; i++)
                diff += a[i] != b[i];
        CHECK(diff == 0, "top-k %s n=%lld k=%d: %d positions differ", what, (long long)n, topk, diff);
        free(a);
        free(b);
        free(scratch);
}

static void test_topk(void) {
        const int64_t ns[] = {1, 2, 31, 32, 33, 100, 2047, 2048, 2049, 3000, 5000, 131072, 1 << 20};
        const int ks[] = {1, 7, 2048};
        float *v = malloc(((size_t)1 << 20) * 4);
        REQUIRE(v, "oom");
        for (size_t a = 0; a < sizeof(ns) / sizeof(ns[0]); a++) {
                const int64_t n = ns[a];
                for (int kind = 0; kind < 5; kind++) {
                        for (int64_t i = 0; i < n; i++) {
                                double r = dsv_rand_normal(7 + (uint64_t)kind, (uint64_t)i);
                                switch (kind) {
                                case 0: /* distinct-ish */
                                        v[i] = (float)r;
                                        break;
                                case 1: /* heavy ties: 16 levels */
                                        v[i] = (float)((int)(r * 4) / 4.0);
                                        break;
                                case 2: /* specials sprinkled */
                                        v[i] = (float)r;
                                        if (i % 97 == 3)
                                                v[i] = NAN;
                                        if (i % 89 == 5)
                                                v[i] = -INFINITY;
                                        if (i % 211 == 7)
                                                v[i] = INFINITY;
                                        if (i % 13 == 1)
                                                v[i] = (i & 2) ? 0.0f : -0.0f;
                                        break;
                                case 3: /* all equal */
                                        v[i] = 0.5f;
                                        break;
                                default: /* the threshold among signed zeros (relu'd scores) */
                                        v[i] = i % 3 == 0 ? -0.0f : (i % 3 == 1 ? 0.0f : (float)(-1.0 - fabs(r)));
                                        break;
                                }
                        }
                        for (size_t b = 0; b < sizeof(ks) / sizeof(ks[0]); b++) {
                                static const char *const kn[] = {"random", "ties", "specials", "equal", "zeros"};
                                if (n == (1 << 20) && kind == 1 && ks[b] != 2048)
                                        continue;
                                test_topk_case(kn[kind], v, n, ks[b]);
                        }
                }
        }
        /* n larger than max_n and empty rows behave as the kernel's clamps say */
        int32_t o[4] = {9, 9, 9, 9};
        emulate_topk(v, 0, 4, o);
        CHECK(o[0] == -1 && o[3] == -1, "empty row: all -1");
        free(v);
}

/* ------------------------------------------------------------------ linear emulation */
struct lin {
        int M, N, K;
        const float *a;    /* [M][K] values (codes decoded) */
        const float *as;   /* [M][nbk] or NULL */
        const uint8_t *w;  /* [N][K] e4m3 */
        const float *ws;   /* [ceil(N/128)][nbk] */
};

/* linear.cuh's tiled kernel over all blocks and threads, sequentially */
static void emulate_tiled(const struct lin *p, float *out) {
        const int nbk = DIV_ROUND_UP(p->K, 128);
        for (int by = 0; by * DCU_GEMM_BM < p->M; by++)
                for (int bx = 0; bx * DCU_GEMM_BN < p->N; bx++)
                        for (int tid = 0; tid < 256; tid++) {
                                const int tx = tid % 16, ty = tid / 16, m0 = by * DCU_GEMM_BM, n0 = bx * DCU_GEMM_BN;
                                float acc[4][4] = {{0}}, blk[4][4] = {{0}};
                                for (int kb = 0; kb < nbk; kb++) {
                                        const int kend = MIN(p->K, (kb + 1) * 128);
                                        for (int k0 = kb * 128; k0 < kend; k0 += DCU_GEMM_BK)
                                                for (int kk = 0; kk < DCU_GEMM_BK; kk++)
                                                        for (int i = 0; i < 4; i++)
                                                                for (int j = 0; j < 4; j++) {
                                                                        int m = dcu_gemm_row(m0, ty, i), n = dcu_gemm_col(n0, tx, j), k = k0 + kk;
                                                                        float av = (m < p->M && k < kend) ? p->a[(size_t)m * p->K + k] : 0;
                                                                        float bv = (n < p->N && k < kend) ? dsv_e4m3_to_f32(p->w[(size_t)n * p->K + k]) : 0;
                                                                        blk[i][j] = fmaf(av, bv, blk[i][j]);
                                                                }
                                        const int nc = dcu_gemm_col(n0, tx, 0);
                                        const float wsc = nc < p->N ? p->ws[(nc / 128) * nbk + kb] : 1.0f;
                                        for (int i = 0; i < 4; i++) {
                                                const int m = dcu_gemm_row(m0, ty, i);
                                                const float asc = (p->as && m < p->M) ? p->as[(size_t)m * nbk + kb] : 1.0f;
                                                for (int j = 0; j < 4; j++) {
                                                        int n = dcu_gemm_col(n0, tx, j);
                                                        if (n < p->N)
                                                                CHECK(n / 128 == nc / 128, "tile columns share a scale row");
                                                        acc[i][j] += blk[i][j] * (asc * wsc);
                                                        blk[i][j] = 0;
                                                }
                                        }
                                }
                                for (int i = 0; i < 4; i++)
                                        for (int j = 0; j < 4; j++) {
                                                int m = dcu_gemm_row(m0, ty, i), n = dcu_gemm_col(n0, tx, j);
                                                if (m < p->M && n < p->N)
                                                        out[(size_t)m * p->N + n] = acc[i][j];
                                        }
                        }
}

/* linear.cuh's gemv kernel: per row a warp, lanes by dcu_gemv_k, xor-shuffle sums */
static void emulate_gemv(const struct lin *p, float *out) {
        const int nbk = DIV_ROUND_UP(p->K, 128);
        for (int n = 0; n < p->N; n++)
                for (int t = 0; t < p->M; t++) {
                        float acc[32] = {0};
                        for (int k0 = 0; k0 < p->K; k0 += DCU_GEMV_STEP) {
                                float part[32];
                                for (int lane = 0; lane < 32; lane++) {
                                        int k = dcu_gemv_k(k0, lane);
                                        float s = 0;
                                        for (int i = 0; i < 16 && k < p->K; i++)
                                                s = fmaf(dsv_e4m3_to_f32(p->w[(size_t)n * p->K + k + i]), p->a[(size_t)t * p->K + k + i], s);
                                        part[lane] = s;
                                }
                                for (int o = 1; o <= 4; o <<= 1) { /* xor shuffles within 8 lanes */
                                        float nx[32];
                                        for (int lane = 0; lane < 32; lane++)
                                                nx[lane] = part[lane] + part[lane ^ o];
                                        memcpy(part, nx, sizeof(nx));
                                }
                                for (int lane = 0; lane < 32; lane += 8) {
                                        int k = dcu_gemv_k(k0, lane), kb = dcu_gemv_kb(k0, lane);
                                        if (k < p->K) {
                                                CHECK(kb == k / 128 && dcu_gemv_kb(k0, lane + 7) == kb, "gemv lane group inside one block");
                                                float asc = p->as ? p->as[(size_t)t * nbk + kb] : 1.0f;
                                                acc[lane] += part[lane] * (asc * p->ws[(n / 128) * nbk + kb]);
                                        }
                                }
                        }
                        out[(size_t)t * p->N + n] = ((acc[0] + acc[8]) + (acc[16] + acc[24]));
                }
}

static void test_linear_emulation(int M, int N, int K, bool quant) {
        const int nbk = DIV_ROUND_UP(K, 128), nbr = DIV_ROUND_UP(N, 128);
        float *x = malloc((size_t)M * K * 4), *a = malloc((size_t)M * K * 4), *as = malloc((size_t)M * nbk * 4);
        float *ws = malloc((size_t)nbr * nbk * 4), *ref = malloc((size_t)M * N * 4), *o1 = malloc((size_t)M * N * 4),
              *o2 = malloc((size_t)M * N * 4);
        uint8_t *w = malloc((size_t)N * K), *q = malloc((size_t)K);
        REQUIRE(x && a && as && ws && ref && o1 && o2 && w && q, "oom");
        for (size_t i = 0; i < (size_t)M * K; i++)
                x[i] = (float)dsv_rand_normal(20, i);
        for (size_t i = 0; i < (size_t)N * K; i++)
                w[i] = dsv_f32_to_e4m3((float)dsv_rand_normal(21, i) * 32);
        for (int i = 0; i < nbr * nbk; i++)
                ws[i] = (float)(1e-3 * (1 + dsv_rand_u01(22, (uint64_t)i)));
        for (int t = 0; t < M; t++) {
                if (quant) {
                        dsv_quant_row(x + (size_t)t * K, K, q, as + (size_t)t * nbk);
                        dsv_e4m3_row_to_f32(q, K, a + (size_t)t * K);
                } else {
                        memcpy(a + (size_t)t * K, x + (size_t)t * K, (size_t)K * 4);
                }
        }
        struct dsv_tensor tx = dsv_tensor_2d(DSV_F32, x, M, K), ts = dsv_tensor_2d(DSV_F32, ws, nbr, nbk),
                          tw = dsv_tensor_2d(DSV_F8_E4M3, w, N, K), to = dsv_tensor_2d(DSV_F32, ref, M, N);
        tw.scale = &ts;
        struct dsv_op_linear op = {.out = &to, .x = &tx, .w = &tw, .quant_in = quant, .round_out = false};
        REQUIRE(dsv_cpu_linear(&op) == 0, "cpu linear");
        const struct lin p = {M, N, K, a, quant ? as : NULL, w, ws};
        emulate_tiled(&p, o1);
        double e1 = 0, e2 = 0, den = 0;
        for (size_t i = 0; i < (size_t)M * N; i++) {
                den += (double)ref[i] * ref[i];
                e1 += ((double)o1[i] - ref[i]) * ((double)o1[i] - ref[i]);
        }
        CHECK(e1 <= 1e-10 * den, "tiled emulation M=%d N=%d K=%d %s: nmse %.2e", M, N, K, quant ? "quant" : "f32", e1 / den);
        if (K % 16 == 0) {
                emulate_gemv(&p, o2);
                for (size_t i = 0; i < (size_t)M * N; i++)
                        e2 += ((double)o2[i] - ref[i]) * ((double)o2[i] - ref[i]);
                CHECK(e2 <= 1e-10 * den, "gemv emulation M=%d N=%d K=%d %s: nmse %.2e", M, N, K, quant ? "quant" : "f32", e2 / den);
        }
        free(x);
        free(a);
        free(as);
        free(ws);
        free(ref);
        free(o1);
        free(o2);
        free(w);
        free(q);
}

/* ------------------------------------------------------------------ coverage */
static void test_coverage(void) {
        /* the tiled kernel's loads: every (row, k) of a 64 x 32 slice exactly once, consecutive
         * threads on consecutive k */
        int seen[64][32];
        memset(seen, 0, sizeof(seen));
        int coalesced = 1;
        for (int e = 0; e < 8; e++)
                for (int t = 0; t < 256; t++) {
                        int r, c;
                        dcu_gemm_load_idx(t, e, &r, &c);
                        REQUIRE(r >= 0 && r < 64 && c >= 0 && c < 32, "load index in range");
                        seen[r][c]++;
                        if (t % 32) {
                                int r0, c0;
                                dcu_gemm_load_idx(t - 1, e, &r0, &c0);
                                coalesced &= r0 == r && c0 + 1 == c;
                        }
                }
        int once = 1;
        for (int r = 0; r < 64; r++)
                for (int c = 0; c < 32; c++)
                        once &= seen[r][c] == 1;
        CHECK(once && coalesced, "tile loads cover the slice once (%d), warp-contiguous (%d)", once, coalesced);
        /* the outputs: every (m, n) of a 64 x 64 tile exactly once */
        int out[64][64];
        memset(out, 0, sizeof(out));
        for (int t = 0; t < 256; t++)
                for (int i = 0; i < 4; i++)
                        for (int j = 0; j < 4; j++)
                                out[dcu_gemm_row(0, t / 16, i)][dcu_gemm_col(0, t % 16, j)]++;
        once = 1;
        for (int r = 0; r < 64; r++)
                for (int c = 0; c < 64; c++)
                        once &= out[r][c] == 1;
        CHECK(once, "tile outputs covered once");
        /* gemv: every k of K once, groups of 8 lanes in one 128-block */
        for (int K = 16; K <= 2048; K += 16) {
                int *cnt = calloc((size_t)K, sizeof(int)), ok = 1;
                for (int k0 = 0; k0 < K; k0 += DCU_GEMV_STEP)
                        for (int lane = 0; lane < 32; lane++) {
                                int k = dcu_gemv_k(k0, lane);
                                for (int i = 0; i < 16 && k + i < K; i++)
                                        cnt[k + i]++;
                                ok &= dcu_gemv_kb(k0, lane) == dcu_gemv_kb(k0, lane & ~7);
                        }
                for (int k = 0; k < K; k++)
                        ok &= cnt[k] == 1;
                CHECK(ok, "gemv lanes cover K=%d once", K);
                free(cnt);
        }
        /* top-k warp ranges: a partition of [0, n) into 32-multiples */
        for (int64_t n = 0; n < 5000; n += 37) {
                int64_t expect = 0;
                int ok = 1;
                for (int w = 0; w < 32; w++) {
                        int64_t b, e;
                        dcu_topk_warp_range(n, w, 32, &b, &e);
                        ok &= b == expect && e >= b && (e == n || (e - b) % 32 == 0);
                        expect = e;
                }
                CHECK(ok && expect == n, "warp ranges partition n=%lld", (long long)n);
        }
        /* chunk planner */
        CHECK(dcu_chunk_rows(100, 10, 1000) == 100, "fits");
        CHECK(dcu_chunk_rows(100, 10, 55) == 5, "five rows");
        CHECK(dcu_chunk_rows(100, 1000, 10) == 1, "at least one");
        CHECK(dcu_chunk_rows(0, 10, 10) == 0, "no rows");
        CHECK(dcu_round_up(5, 4) == 8 && dcu_ceil_div(129, 128) == 2, "rounding");
        /* radix pick: the k-th of a histogram */
        uint32_t h[256] = {0}, k2;
        h[255] = 3;
        h[200] = 5;
        h[7] = 10;
        CHECK(dcu_radix_pick(h, 3, &k2) == 255 && k2 == 3, "pick in the top digit");
        CHECK(dcu_radix_pick(h, 4, &k2) == 200 && k2 == 1, "pick in the next");
        CHECK(dcu_radix_pick(h, 18, &k2) == 7 && k2 == 10, "pick in the last");
        CHECK(dcu_topk_key(-0.0f) == dcu_topk_key(0.0f) && dcu_topk_key(NAN) == dcu_topk_key(-INFINITY) &&
                      dcu_topk_key(-1.0f) < dcu_topk_key(-0.5f) && dcu_topk_key(0.5f) < dcu_topk_key(1.0f) &&
                      dcu_topk_key(-INFINITY) < dcu_topk_key(-3e38f) && dcu_topk_key(3e38f) < dcu_topk_key(INFINITY),
              "key order");
}

int main(void) {
        test_numerics();
        test_kv_addressing(DSV_KV_FP8, 61, 60, 512, 64, 128);
        test_kv_addressing(DSV_KV_FP8, 2, 0, 512, 64, 128);
        test_kv_addressing(DSV_KV_F32, 3, 1, 512, 64, 128);
        test_kv_addressing(DSV_KV_FP8, 2, 1, 200, 8, 48);
        test_kv_large();
        test_topk();
        test_linear_emulation(5, 200, 7168, true);
        test_linear_emulation(70, 130, 576, true);
        test_linear_emulation(3, 77, 200, true);
        test_linear_emulation(9, 64, 1536, false);
        test_coverage();
        return test_result("test-cuda-plan");
}
