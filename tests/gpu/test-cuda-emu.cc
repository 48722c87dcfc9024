/* The CUDA backend's kernels (kernels/cuda/<family>.cuh), compiled for the CPU through
 * tests/gpu/emu/cuda_emu.h and run block by block, thread by thread, against the CPU
 * reference ops on small random problems that still cut through every tiling edge (partial
 * tiles and 128-blocks, several head tiles, padded index lists, scattered pages). Always
 * built: this is how CI without a GPU runs the kernel code itself. The launch arguments
 * repeat the backend's glue (kernels/cuda/<family>.cu); cuBLAS calls (MLA's W_UK / W_UV
 * products) are replaced by plain loops. */
#include "config.h"

#include "tests/gpu/emu/cuda_emu.h"

#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/indexer.cuh"
#include "kernels/cuda/kv.cuh"
#include "kernels/cuda/linear.cuh"
#include "kernels/cuda/mla.cuh"
#include "kernels/cuda/norm.cuh"
#include "kernels/cuda/topk.cuh"

extern "C" {
#include "daemon/rng.h"
#include "kernels/cpu/cpu.h"
}

#include <string>

/* The 671B-width cases switch fibers millions of times: under AddressSanitizer, whose
 * swapcontext handling is slow, only the small cases run. */
#ifdef EMU_ASAN
static const bool big = false;
#else
static const bool big = true;
#endif

static int failures, checks;
static unsigned err_word;

#define ECHECK(cond, ...)                                                                  \
        do {                                                                               \
                checks++;                                                                  \
                if (!(cond)) {                                                             \
                        fprintf(stderr, "%s:%d: FAIL: %s: ", __FILE__, __LINE__, #cond);   \
                        fprintf(stderr, __VA_ARGS__);                                      \
                        fprintf(stderr, "\n");                                             \
                        failures++;                                                        \
                }                                                                          \
        } while (0)

static std::vector<float> randn(size_t n, float sd, uint64_t key) {
        std::vector<float> v(n);
        for (size_t i = 0; i < n; i++)
                v[i] = (float)dsv_rand_normal(key, i) * sd;
        return v;
}

static void bf16_round(std::vector<float> &v) {
        for (auto &x : v)
                x = dsv_round_bf16(x);
}

/* compares n floats (strided rows) with NaN/inf positions required identical; an element is
 * bad when |got - ref| > rel_tol * (|ref| + 0.05 rms(ref)) (cancellation makes small outputs
 * relatively noisier) */
static void cmp(const char *what, const float *ref, size_t ldr, const float *got, size_t ldg, size_t rows, size_t cols, double nmse_tol,
                double rel_tol, size_t allowed_bad = 0) {
        double num = 0, den = 0, maxe = 0, ss = 0;
        size_t bad = 0, special = 0, nf = 0;
        for (size_t r = 0; r < rows; r++)
                for (size_t c = 0; c < cols; c++)
                        if (std::isfinite(ref[r * ldr + c])) {
                                ss += (double)ref[r * ldr + c] * ref[r * ldr + c];
                                nf++;
                        }
        const double floor = 0.05 * sqrt(ss / (double)(nf ? nf : 1));
        for (size_t r = 0; r < rows; r++)
                for (size_t c = 0; c < cols; c++) {
                        float a = ref[r * ldr + c], b = got[r * ldg + c];
                        if (!std::isfinite(a) || !std::isfinite(b)) {
                                special += !((std::isnan(a) && std::isnan(b)) || a == b);
                                continue;
                        }
                        double e = fabs((double)a - b);
                        num += e * e;
                        den += (double)a * a;
                        maxe = std::max(maxe, e);
                        bad += e > rel_tol * (fabs((double)a) + floor) + 1e-30;
                }
        double nmse = den > 0 ? num / den : (num > 0 ? 1 : 0);
        bool ok = special == 0 && nmse <= nmse_tol && bad <= allowed_bad;
        printf("  %-52s nmse=%.2e max|d|=%.3g bad=%zu special=%zu %s\n", what, nmse, maxe, bad, special, ok ? "ok" : "FAIL");
        ECHECK(ok, "%s", what);
}

static void cmp_bytes(const char *what, const void *a, const void *b, size_t n) {
        size_t bad = 0;
        for (size_t i = 0; i < n; i++)
                bad += ((const uint8_t *)a)[i] != ((const uint8_t *)b)[i];
        printf("  %-52s %zu bytes differ %s\n", what, bad, bad ? "FAIL" : "ok");
        ECHECK(bad == 0, "%s", what);
}

static dsv_tensor T2(dsv_dtype t, void *p, int64_t rows, int64_t cols, int64_t ld) {
        dsv_tensor x = dsv_tensor_2d(t, p, rows, cols);
        x.stride = (size_t)ld * dsv_dtype_size(t);
        return x;
}

/* ------------------------------------------------------------------ elementwise */
static void test_elementwise(void) {
        const int V = 50, D = 300, T = 7;
        std::vector<uint16_t> tb((size_t)V * D);
        for (size_t i = 0; i < tb.size(); i++)
                tb[i] = dsv_f32_to_bf16((float)dsv_rand_normal(1, i));
        std::vector<int32_t> ids = {0, 49, 3, 17, 17, 25, 1};
        std::vector<float> o0((size_t)T * (D + 3), 7.0f), o1((size_t)T * (D + 3), 7.0f);
        dsv_tensor tt = T2(DSV_BF16, tb.data(), V, D, D), ti = T2(DSV_I32, ids.data(), 1, T, T), to = T2(DSV_F32, o0.data(), T, D, D + 3);
        dsv_op_embed e = {&to, &tt, &ti};
        dsv_cpu_embed(&e);
        emu::launch(dim3(T), dim3(256), 0, [&] { dcu_embed_kernel(o1.data(), D + 3, tb.data(), D, V, ids.data(), D, &err_word); });
        cmp("embed", o0.data(), D + 3, o1.data(), D + 3, T, D + 3, 0, 0);

        for (int f = 0; f < 2; f++) {
                const int N = 333;
                auto a = randn((size_t)T * N, 3, 2), b = randn((size_t)T * N, 1, 3);
                a[0] = INFINITY;
                a[1] = NAN;
                std::vector<float> r0((size_t)T * N), r1((size_t)T * N);
                dsv_tensor ta = T2(DSV_F32, a.data(), T, N, N), tb2 = T2(DSV_F32, b.data(), T, N, N), tr = T2(DSV_F32, r0.data(), T, N, N);
                dsv_op_swiglu sw = {&tr, &ta, &tb2};
                dsv_cpu_swiglu(&sw, f);
                emu::launch(dim3(T), dim3(256), 0,
                            [&] { dcu_binary_kernel<true>(r1.data(), N, a.data(), N, b.data(), N, N, f); });
                cmp(f ? "swiglu faithful" : "swiglu exact", r0.data(), N, r1.data(), N, T, N, 0, 0);
                dsv_op_add ad = {&tr, &ta, &tb2};
                dsv_cpu_add(&ad, f);
                emu::launch(dim3(T), dim3(256), 0,
                            [&] { dcu_binary_kernel<false>(r1.data(), N, a.data(), N, b.data(), N, N, f); });
                cmp(f ? "add faithful" : "add exact", r0.data(), N, r1.data(), N, T, N, 0, 0);

                /* rope: MLA q (interleaved, 5 heads of 192 from 128) and the indexer (half-split) */
                for (int il = 0; il < 2; il++) {
                        const int H = 5, hs = il ? 192 : 128, off = il ? 128 : 0, rd = 64, cols = H * hs;
                        auto x0 = randn((size_t)T * cols, 1, 4);
                        auto x1 = x0;
                        std::vector<float> fr(rd / 2);
                        for (int i = 0; i < rd / 2; i++)
                                fr[i] = (float)pow(10000.0, -2.0 * i / rd);
                        std::vector<int32_t> pos = {0, 1, 99, 4095, 100000, 7, 65536};
                        dsv_tensor tx = T2(DSV_F32, x0.data(), T, cols, cols), tp = T2(DSV_I32, pos.data(), 1, T, T),
                                   tf = T2(DSV_F32, fr.data(), 1, rd / 2, rd / 2);
                        dsv_op_rope ro = {&tx, &tp, &tf, H, hs, off, rd, (bool)il};
                        dsv_cpu_rope(&ro, f);
                        emu::launch(dim3(T), dim3(256), (size_t)rd * 4, [&] {
                                dcu_rope_kernel(x1.data(), cols, pos.data(), fr.data(), H, hs, off, rd / 2, il, f);
                        });
                        cmp(il ? "rope interleaved" : "rope half-split", x0.data(), cols, x1.data(), cols, T, cols, 0, 0);
                }
                /* hadamard: 3 groups of 128, and 16-point groups */
                for (int d : {128, 16}) {
                        const int cols = 3 * 128;
                        auto x0 = randn((size_t)T * cols, 1, 5);
                        auto x1 = x0;
                        dsv_tensor tx = T2(DSV_F32, x0.data(), T, cols, cols);
                        dsv_op_hadamard hd = {&tx, d};
                        dsv_cpu_hadamard(&hd, f);
                        const int64_t groups = cols / d;
                        const int threads = d / 2 < 256 ? (d / 2 > 32 ? d / 2 : 32) : 256;
                        const float scale = (float)(1.0 / sqrt((double)d));
                        emu::launch(dim3((unsigned)(T * groups)), dim3(threads), (size_t)d * 4,
                                    [&] { dcu_hadamard_kernel(x1.data(), cols, groups, d, scale, f); });
                        cmp(d == 128 ? "hadamard 128" : "hadamard 16", x0.data(), cols, x1.data(), cols, T, cols, 0, 0);
                }
        }
}

/* ------------------------------------------------------------------ norms, quant */
static void test_norm(void) {
        const int T = 5, N = 1100;
        for (int f = 0; f < 2; f++) {
                auto x = randn((size_t)T * N, 0.3f, 6), res0 = randn((size_t)T * N, 1, 7), w = randn(N, 0.2f, 8);
                auto res1 = res0;
                std::vector<uint16_t> wb(N);
                for (int i = 0; i < N; i++)
                        wb[i] = dsv_f32_to_bf16(w[i] + 1);
                std::vector<float> o0((size_t)T * N), o1((size_t)T * N);
                dsv_tensor tx = T2(DSV_F32, x.data(), T, N, N), tr = T2(DSV_F32, res0.data(), T, N, N), tw = T2(DSV_BF16, wb.data(), 1, N, N),
                           to = T2(DSV_F32, o0.data(), T, N, N);
                dsv_op_rmsnorm rn = {&to, &tr, &tx, &tw, 1e-6f};
                dsv_cpu_rmsnorm(&rn, f);
                emu::launch(dim3(T), dim3(512), 0, [&] {
                        dcu_rmsnorm_kernel<uint16_t>(o1.data(), N, res1.data(), N, x.data(), N, wb.data(), N, 1e-6f, f);
                });
                cmp("rmsnorm +res", o0.data(), N, o1.data(), N, T, N, 1e-12, 1e-6, f ? 2 : 0);
                cmp("rmsnorm residual", res0.data(), N, res1.data(), N, T, N, 0, 0);

                auto y0 = randn((size_t)T * 128, 2, 9), bias = randn(128, 0.1f, 10);
                auto y1 = y0;
                dsv_tensor ty = T2(DSV_F32, y0.data(), T, 128, 128), tw2 = T2(DSV_F32, w.data(), 1, 128, 128),
                           tb = T2(DSV_F32, bias.data(), 1, 128, 128);
                dsv_op_layernorm ln = {&ty, &ty, &tw2, &tb, 1e-6f};
                dsv_cpu_layernorm(&ln, f);
                emu::launch(dim3(T), dim3(512), 0, [&] {
                        dcu_layernorm_kernel<float>(y1.data(), 128, y1.data(), 128, w.data(), bias.data(), 128, 1e-6f, f);
                });
                cmp("layernorm in place", y0.data(), 128, y1.data(), 128, T, 128, 1e-12, 1e-6, f ? 2 : 0);
        }
        /* act_quant with a partial block and a NaN block */
        const int K = 300, nb = 3;
        auto x = randn((size_t)T * K, 1, 11);
        for (size_t i = 0; i < x.size(); i++)
                x[i] *= ldexpf(1, (int)(i / 128 % 13) - 6);
        x[130] = NAN;
        std::vector<uint8_t> q0((size_t)T * K), q1((size_t)T * K, 0xee);
        std::vector<float> s0((size_t)T * nb), s1((size_t)T * nb, 7);
        dsv_tensor tx = T2(DSV_F32, x.data(), T, K, K), tq = T2(DSV_U8, q0.data(), T, K, K), ts = T2(DSV_F32, s0.data(), T, nb, nb);
        dsv_op_act_quant aq = {&tq, &ts, &tx};
        dsv_cpu_act_quant(&aq);
        const int64_t jobs = (int64_t)T * nb;
        emu::launch(dim3((unsigned)((jobs + 7) / 8)), dim3(256), 0,
                    [&] { dcu_quant_kernel(x.data(), K, T, K, q1.data(), K, s1.data(), nb, 1); });
        cmp_bytes("act_quant codes", q0.data(), q1.data(), q0.size());
        cmp("act_quant scales", s0.data(), nb, s1.data(), nb, T, nb, 0, 0);
}

/* ------------------------------------------------------------------ KV cache */
static dsv_kv_layout layout(dsv_kv_format fmt, int n_layers, int kv_lora, int rope, int idx) {
        dsv_kv_layout L;
        memset(&L, 0, sizeof(L));
        L.format = fmt;
        L.page_tokens = 64;
        L.n_layers = n_layers;
        L.kv_lora = kv_lora;
        L.rope = rope;
        L.index_dim = idx;
        if (fmt == DSV_KV_FP8) {
                L.mla_rec = (size_t)kv_lora + 4 * (size_t)((kv_lora + 127) / 128) + 2 * (size_t)rope;
                L.idx_rec = (size_t)idx;
                L.idx_scale_rec = 4 * (size_t)((idx + 127) / 128);
        } else {
                L.mla_rec = 4 * (size_t)(kv_lora + rope);
                L.idx_rec = 4 * (size_t)idx;
        }
        L.idx_off = (64 * L.mla_rec + 63) / 64 * 64;
        L.idx_scale_off = (L.idx_off + 64 * L.idx_rec + 63) / 64 * 64;
        L.layer_page_bytes = (L.idx_scale_off + 64 * L.idx_scale_rec + 255) / 256 * 256;
        return L;
}

static dcu_kv kv_of(const dsv_kv_layout &L, int layer) {
        dcu_kv k;
        memset(&k, 0, sizeof(k));
        k.fp8 = L.format == DSV_KV_FP8;
        k.page_tokens = L.page_tokens;
        k.n_layers = L.n_layers;
        k.layer = layer;
        k.kv_lora = L.kv_lora;
        k.rope = L.rope;
        k.index_dim = L.index_dim;
        k.mla_rec = (int64_t)L.mla_rec;
        k.idx_rec = (int64_t)L.idx_rec;
        k.idx_scale_rec = (int64_t)L.idx_scale_rec;
        k.idx_off = (int64_t)L.idx_off;
        k.idx_scale_off = (int64_t)L.idx_scale_off;
        k.layer_page_bytes = (int64_t)L.layer_page_bytes;
        return k;
}

/* A pool of n_pages with the tokens 0..n-1 of one sequence on a shuffled page table,
 * written through the CPU reference's kv_store. */
struct pool {
        dsv_kv_layout L;
        int layer;
        std::vector<uint8_t> bytes;
        std::vector<int32_t> pages;
        std::vector<float> lat, kpe, key;
};
static void make_pool(pool &p, dsv_kv_format fmt, int kv_lora, int rope, int idx, int n, uint64_t seed) {
        p.L = layout(fmt, 2, kv_lora, rope, idx);
        p.layer = 1;
        const int np = (n + 63) / 64 + 1;
        p.bytes.assign((size_t)np * 2 * p.L.layer_page_bytes, 0);
        p.pages.resize(np);
        for (int i = 0; i < np; i++)
                p.pages[i] = np - 1 - i;
        std::vector<int32_t> slots(n);
        for (int t = 0; t < n; t++)
                slots[t] = (int32_t)dsv_kv_slot(&p.L, p.pages.data(), t);
        p.lat = randn((size_t)n * kv_lora, 1, seed);
        p.kpe = randn((size_t)n * rope, 1, seed + 1);
        p.key = randn((size_t)n * idx, 1, seed + 2);
        for (size_t i = 0; i < p.lat.size(); i++)
                p.lat[i] *= ldexpf(1, (int)(i / 128 % 5) - 2);
        dsv_tensor ts = T2(DSV_I32, slots.data(), 1, n, n), tl = T2(DSV_F32, p.lat.data(), n, kv_lora, kv_lora),
                   tp = T2(DSV_F32, p.kpe.data(), n, rope, rope), tk = T2(DSV_F32, p.key.data(), n, idx, idx);
        dsv_op_kv_store st = {{&p.L, p.bytes.data(), p.layer}, &ts, &tl, &tp, &tk};
        dsv_cpu_kv_store(&st);
}

static void test_kv(void) {
        for (dsv_kv_format fmt : {DSV_KV_FP8, DSV_KV_F32}) {
                pool p;
                const int n = 150, C = 256, R = 16, I = 128;
                make_pool(p, fmt, C, R, I, n, 20);
                /* the kernel writes the same records into a fresh pool */
                std::vector<uint8_t> b1(p.bytes.size(), 0);
                std::vector<int32_t> slots(n);
                for (int t = 0; t < n; t++)
                        slots[t] = (int32_t)dsv_kv_slot(&p.L, p.pages.data(), t);
                const dcu_kv kv = kv_of(p.L, p.layer);
                emu::launch(dim3(n), dim3(256), 0, [&] {
                        dcu_kv_store_kernel(b1.data(), kv, slots.data(), p.lat.data(), C, p.kpe.data(), R, p.key.data(), I, &err_word);
                });
                cmp_bytes(fmt == DSV_KV_FP8 ? "kv_store fp8 (whole pool)" : "kv_store f32 (whole pool)", p.bytes.data(), b1.data(),
                          b1.size());
                std::vector<float> l0((size_t)n * C), l1((size_t)n * C), k0((size_t)n * R), k1((size_t)n * R);
                dsv_tensor tl = T2(DSV_F32, l0.data(), n, C, C), tk = T2(DSV_F32, k0.data(), n, R, R), tpg = T2(DSV_I32, p.pages.data(), 1,
                                                                                                               (int64_t)p.pages.size(), 0);
                dsv_op_kv_gather ga = {{&p.L, p.bytes.data(), p.layer}, &tl, &tk, &tpg, n};
                dsv_cpu_kv_gather(&ga);
                emu::launch(dim3(n), dim3(256), 0, [&] {
                        dcu_kv_gather_kernel(p.bytes.data(), kv, p.pages.data(), l1.data(), C, k1.data(), R, &err_word);
                });
                cmp("kv_gather latent", l0.data(), C, l1.data(), C, n, C, 0, 0);
                cmp("kv_gather k_pe", k0.data(), R, k1.data(), R, n, R, 0, 0);
        }
}

/* ------------------------------------------------------------------ linear */
static void test_linear(int M, int N, int K, int Mg) {
        const int nbk = (K + 127) / 128, nbn = (N + 127) / 128;
        auto x = randn((size_t)M * K, 1, 30);
        bf16_round(x);
        std::vector<uint8_t> w((size_t)N * K);
        for (size_t i = 0; i < w.size(); i++)
                w[i] = dsv_f32_to_e4m3((float)dsv_rand_normal(31, i) * 50);
        std::vector<float> ws((size_t)nbn * nbk);
        for (size_t i = 0; i < ws.size(); i++)
                ws[i] = (float)(1e-3 * (1 + dsv_rand_u01(32, i)));
        std::vector<float> ref((size_t)M * N), got((size_t)M * N);
        dsv_tensor tx = T2(DSV_F32, x.data(), M, K, K), tws = T2(DSV_F32, ws.data(), nbn, nbk, nbk), tw = T2(DSV_F8_E4M3, w.data(), N, K, K),
                   to = T2(DSV_F32, ref.data(), M, N, N);
        tw.scale = &tws;
        for (int quant = 0; quant < 2; quant++) {
                dsv_op_linear op = {&to, &tx, &tw, (bool)quant, (bool)quant};
                dsv_cpu_linear(&op);
                /* the backend's quantization into [M][K] codes + [M][nbk] scales */
                std::vector<uint8_t> xq((size_t)M * K);
                std::vector<float> xs((size_t)M * nbk);
                if (quant)
                        emu::launch(dim3((unsigned)((M * nbk + 7) / 8)), dim3(256), 0,
                                    [&] { dcu_quant_kernel(x.data(), K, M, K, xq.data(), K, xs.data(), nbk, 1); });
                const void *a = quant ? (const void *)xq.data() : (const void *)x.data();
                std::fill(got.begin(), got.end(), NAN);
                emu::launch(dim3((N + 63) / 64, (M + 63) / 64), dim3(256), 0, [&] {
                        if (quant)
                                dcu_gemm_tiled_kernel<true, DCU_W_F8>(got.data(), N, a, K, xs.data(), nbk, 1, w.data(), K, ws.data(), nbk, M,
                                                                      N, K, quant);
                        else
                                dcu_gemm_tiled_kernel<false, DCU_W_F8>(got.data(), N, a, K, xs.data(), nbk, 1, w.data(), K, ws.data(), nbk,
                                                                       M, N, K, quant);
                });
                cmp(quant ? "linear fp8 tiled faithful" : "linear fp8 tiled exact", ref.data(), N, got.data(), N, M, N, quant ? 1e-6 : 1e-12,
                    quant ? 1.0 / 128 : 1e-4, quant ? 4 : 0);
                std::fill(got.begin(), got.end(), NAN);
                emu::launch(dim3((N + 7) / 8), dim3(256), 0, [&] {
                        if (quant)
                                dcu_gemv_fp8_kernel<8, true>(got.data(), N, a, K, xs.data(), nbk, 1, w.data(), K, ws.data(), nbk, Mg, N, K,
                                                             quant);
                        else
                                dcu_gemv_fp8_kernel<8, false>(got.data(), N, a, K, xs.data(), nbk, 1, w.data(), K, ws.data(), nbk, Mg, N, K,
                                                              quant);
                });
                cmp(quant ? "linear fp8 gemv faithful (5 rows)" : "linear fp8 gemv exact (5 rows)", ref.data(), N, got.data(), N, Mg, N,
                    quant ? 1e-6 : 1e-12, quant ? 1.0 / 128 : 1e-4, quant ? 2 : 0);
        }
        /* bf16 weights through the tiled kernel (the backend's reference path) */
        std::vector<uint16_t> wb((size_t)N * K);
        for (size_t i = 0; i < wb.size(); i++)
                wb[i] = dsv_f32_to_bf16((float)dsv_rand_normal(33, i) * 0.05f);
        dsv_tensor twb = T2(DSV_BF16, wb.data(), N, K, K);
        dsv_op_linear op = {&to, &tx, &twb, false, false};
        dsv_cpu_linear(&op);
        emu::launch(dim3((N + 63) / 64, (M + 63) / 64), dim3(256), 0, [&] {
                dcu_gemm_tiled_kernel<false, DCU_W_BF16>(got.data(), N, x.data(), K, nullptr, 0, 0, wb.data(), K, nullptr, 0, M, N, K, 0);
        });
        cmp("linear bf16 tiled", ref.data(), N, got.data(), N, M, N, 1e-12, 1e-4);
}

/* ------------------------------------------------------------------ indexer + top-k */
static void test_indexer(bool faithful, int H, int topk, int ctx, std::vector<int32_t> pos) {
        const int d = 128, T = (int)pos.size();
        pool p;
        make_pool(p, faithful ? DSV_KV_FP8 : DSV_KV_F32, 128, 16, d, ctx, 40);
        const dcu_kv kv = kv_of(p.L, p.layer);
        std::vector<int32_t> seq(T, 0);
        const int64_t maxp = (int64_t)p.pages.size(), max_ctx = maxp * 64, lds = (max_ctx + 3) / 4 * 4;
        auto qf = randn((size_t)T * H * d, 1, 41), w = randn((size_t)T * H, 1, 42);
        w[(size_t)(T - 1) * H + 1] = 0; /* some zero weights */
        std::vector<uint8_t> q8((size_t)T * H * d);
        std::vector<float> qs((size_t)T * H);
        for (int t = 0; t < T; t++)
                for (int h = 0; h < H; h++)
                        dsv_quant_row(&qf[((size_t)t * H + h) * d], d, &q8[((size_t)t * H + h) * d], &qs[(size_t)t * H + h]);
        std::vector<int32_t> i0((size_t)T * topk), i1((size_t)T * topk, 7);
        std::vector<float> s0((size_t)T * max_ctx), sc((size_t)T * lds, NAN);
        dsv_tensor ti = T2(DSV_I32, i0.data(), T, topk, topk), tsc = T2(DSV_F32, s0.data(), T, max_ctx, max_ctx),
                   tq = faithful ? T2(DSV_U8, q8.data(), T, H * d, H * d) : T2(DSV_F32, qf.data(), T, H * d, H * d),
                   tqs = T2(DSV_F32, qs.data(), T, H, H), tw = T2(DSV_F32, w.data(), T, H, H), tseq = T2(DSV_I32, seq.data(), 1, T, T),
                   tpos = T2(DSV_I32, pos.data(), 1, T, T), tbt = T2(DSV_I32, p.pages.data(), 1, maxp, maxp);
        const float ws1 = (float)pow(H, -0.5), ws2 = (float)pow(d, -0.5);
        dsv_op_indexer_topk op = {&ti, &tsc, &tq, &tqs, &tw, {&p.L, p.bytes.data(), p.layer}, {&tseq, &tpos, &tbt}, H, d, topk, ws1, ws2,
                                  faithful};
        ECHECK(dsv_cpu_indexer_topk(&op) == 0, "cpu indexer");
        const void *qd = faithful ? (const void *)q8.data() : (const void *)qf.data();
        emu::launch(dim3((unsigned)((max_ctx + DCU_IDX_TK - 1) / DCU_IDX_TK), T), dim3(256), dcu_index_scores_smem(H, d), [&] {
                if (faithful)
                        dcu_index_scores_kernel<true>(sc.data(), lds, qd, (int64_t)H * d, qs.data(), H, w.data(), H, p.bytes.data(), kv,
                                                      seq.data(), pos.data(), p.pages.data(), maxp, max_ctx, H, d, ws1, ws2, 0, topk, 0,
                                                      &err_word);
                else
                        dcu_index_scores_kernel<false>(sc.data(), lds, qd, (int64_t)H * d, qs.data(), H, w.data(), H, p.bytes.data(), kv,
                                                       seq.data(), pos.data(), p.pages.data(), maxp, max_ctx, H, d, ws1, ws2, 0, topk, 0,
                                                       &err_word);
        });
        for (int t = 0; t < T; t++)
                cmp(("indexer scores, query at " + std::to_string(pos[t])).c_str(), &s0[(size_t)t * max_ctx], max_ctx,
                    &sc[(size_t)t * lds], lds, 1, (size_t)pos[t] + 1, 1e-10, 1e-4, 2);
        emu::launch(dim3(T), dim3(DCU_TOPK_THREADS), 0,
                    [&] { dcu_topk_kernel(sc.data(), lds, pos.data(), max_ctx, topk, i1.data(), topk, 0); });
        /* same sets unless a swap sits at the k-th score (summation order) */
        for (int t = 0; t < T; t++) {
                const int32_t *a = &i0[(size_t)t * topk], *b = &i1[(size_t)t * topk];
                bool same = memcmp(a, b, (size_t)topk * 4) == 0;
                if (!same) {
                        std::vector<float> srt(&s0[(size_t)t * max_ctx], &s0[(size_t)t * max_ctx] + pos[t] + 1);
                        std::sort(srt.begin(), srt.end(), [](float x, float y) { return x > y; });
                        const float thr = srt[std::min<size_t>(topk, srt.size()) - 1];
                        int far = 0;
                        for (int i = 0; i < topk; i++)
                                if (a[i] != b[i] && b[i] >= 0)
                                        far += fabsf(s0[(size_t)t * max_ctx + b[i]] - thr) > 1e-5f * fabsf(thr) + 1e-30f;
                        same = far == 0;
                }
                ECHECK(same, "indexer top-k, query %d: selections differ away from the threshold", t);
        }
        printf("  %-52s %s\n", faithful ? "indexer top-k fp8" : "indexer top-k f32", failures ? "" : "ok");
}

static void test_topk_big(void) {
        for (int64_t n : {5000, 70000}) {
                if (n > 5000 && !big)
                        continue;
                const int topk = 2048;
                std::vector<float> v((size_t)n);
                for (int64_t i = 0; i < n; i++)
                        v[i] = dsv_round_bf16((float)dsv_rand_normal(50, (uint64_t)i)); /* bf16: many ties */
                v[3] = NAN;
                v[4] = INFINITY;
                std::vector<int32_t> ref(topk, -1), got(topk, 7), pos = {(int32_t)(n - 1)};
                std::vector<char> scratch((size_t)n * 8);
                dsv_topk_select(v.data(), (int)n, topk, ref.data(), scratch.data());
                emu::launch(dim3(1), dim3(DCU_TOPK_THREADS), 0, [&] { dcu_topk_kernel(v.data(), n, pos.data(), n, topk, got.data(), topk, 0); });
                ECHECK(ref == got, "top-k over %lld bf16 scores", (long long)n);
                printf("  %-52s %s\n", ("top-k 2048 of " + std::to_string(n)).c_str(), ref == got ? "ok" : "FAIL");
        }
}

/* ------------------------------------------------------------------ MLA */
static void test_mla_decode(bool faithful, int H, int nope, int V, int C, int K, int ctx, std::vector<int32_t> pos) {
        const int rope = 64, T = (int)pos.size(), qk = nope + rope;
        pool p;
        make_pool(p, faithful ? DSV_KV_FP8 : DSV_KV_F32, C, rope, 128, ctx, 60);
        const dcu_kv kv = kv_of(p.L, p.layer);
        auto q = randn((size_t)T * H * qk, 1, 61), w = randn((size_t)H * (nope + V) * C, 0.1f, 62);
        if (faithful) {
                bf16_round(q);
                bf16_round(w);
        }
        std::vector<int32_t> idx((size_t)T * K), seq(T, 0);
        for (int t = 0; t < T; t++)
                for (int j = 0; j < K; j++) {
                        int32_t v = pos[t] + 1 <= K ? (j <= pos[t] ? j : -1) : (int32_t)(j * (pos[t] + 1) / K);
                        idx[(size_t)t * K + j] = (j % 17 == 5) ? -1 : v;
                }
        const float scale = 0.1f;
        std::vector<float> o0((size_t)T * H * V), o1((size_t)T * H * V);
        const int64_t maxp = (int64_t)p.pages.size();
        dsv_tensor to = T2(DSV_F32, o0.data(), T, H * V, H * V), tq = T2(DSV_F32, q.data(), T, H * qk, H * qk),
                   tw = T2(DSV_F32, w.data(), H * (nope + V), C, C), ti = T2(DSV_I32, idx.data(), T, K, K), tseq = T2(DSV_I32, seq.data(), 1, T, T),
                   tpos = T2(DSV_I32, pos.data(), 1, T, T), tbt = T2(DSV_I32, p.pages.data(), 1, maxp, maxp);
        dsv_op_mla_decode op = {&to, &tq, &tw, &ti, {&p.L, p.bytes.data(), p.layer}, {&tseq, &tpos, &tbt}, H, nope, rope, V, C, scale,
                                faithful};
        ECHECK(dsv_cpu_mla_decode(&op) == 0, "cpu mla decode");
        /* q_c = W_UK^T q_nope (cuBLAS in the backend), rounded in faithful mode */
        std::vector<float> qc((size_t)T * H * C), S((size_t)T * H * K), oc((size_t)T * H * C);
        for (int t = 0; t < T; t++)
                for (int h = 0; h < H; h++)
                        for (int c = 0; c < C; c++) {
                                float a = 0;
                                for (int dd = 0; dd < nope; dd++)
                                        a += q[(size_t)t * H * qk + (size_t)h * qk + dd] * w[((size_t)h * (nope + V) + dd) * C + c];
                                qc[((size_t)t * H + h) * C + c] = faithful ? dsv_round_bf16(a) : a;
                        }
        const int ht = (H + DCU_MLA_HT - 1) / DCU_MLA_HT;
        emu::launch(dim3((K + DCU_MLA_JT - 1) / DCU_MLA_JT, ht, T), dim3(256), 0, [&] {
                if (faithful)
                        dcu_mla_scores_kernel<true>(S.data(), qc.data(), q.data(), H * qk, idx.data(), K, p.bytes.data(), kv, seq.data(),
                                                    p.pages.data(), maxp, H, nope, rope, C, K, scale, 1, 0, &err_word);
                else
                        dcu_mla_scores_kernel<false>(S.data(), qc.data(), q.data(), H * qk, idx.data(), K, p.bytes.data(), kv, seq.data(),
                                                     p.pages.data(), maxp, H, nope, rope, C, K, scale, 0, 0, &err_word);
        });
        emu::launch(dim3(T * H), dim3(256), 0, [&] { dcu_mla_softmax_kernel(S.data(), idx.data(), K, H, K, faithful, 0); });
        emu::launch(dim3((C + DCU_MLA_CT - 1) / DCU_MLA_CT, ht, T), dim3(256), 0, [&] {
                if (faithful)
                        dcu_mla_pv_kernel<true>(oc.data(), S.data(), idx.data(), K, p.bytes.data(), kv, seq.data(), p.pages.data(), maxp, H, C,
                                                K, 1, 0, &err_word);
                else
                        dcu_mla_pv_kernel<false>(oc.data(), S.data(), idx.data(), K, p.bytes.data(), kv, seq.data(), p.pages.data(), maxp, H,
                                                 C, K, 0, 0, &err_word);
        });
        for (int t = 0; t < T; t++)
                for (int h = 0; h < H; h++)
                        for (int dd = 0; dd < V; dd++) {
                                float a = 0;
                                for (int c = 0; c < C; c++)
                                        a += oc[((size_t)t * H + h) * C + c] * w[((size_t)h * (nope + V) + nope + dd) * C + c];
                                o1[(size_t)t * H * V + (size_t)h * V + dd] = faithful ? dsv_round_bf16(a) : a;
                        }
        cmp((std::string(faithful ? "mla decode fp8 faithful" : "mla decode f32 exact") + " H=" + std::to_string(H) + " K=" + std::to_string(K)).c_str(), o0.data(), H * V, o1.data(), H * V, T, H * V,
            faithful ? 1e-5 : 1e-9, faithful ? 1.0 / 32 : 1e-3, faithful ? (size_t)(T * H * V / 100) : 5);
}

static void test_mla_prefill(bool faithful) {
        const int H = 5, nope = 24, rope = 16, V = 40, K = 60, n_ctx = 70, T = 3, qk = nope + rope;
        auto kvb = randn((size_t)n_ctx * H * (nope + V), 0.5f, 70), pe = randn((size_t)n_ctx * rope, 1, 71), q = randn((size_t)T * H * qk, 0.3f, 72);
        if (faithful) {
                bf16_round(kvb);
                bf16_round(pe);
                bf16_round(q);
        }
        std::vector<int32_t> idx((size_t)T * K);
        const int32_t pos[3] = {0, 40, 69};
        for (int t = 0; t < T; t++)
                for (int j = 0; j < K; j++)
                        idx[(size_t)t * K + j] = pos[t] + 1 <= K ? (j <= pos[t] ? j : -1) : (j % 11 == 3 ? -1 : j + (pos[t] + 1 - K));
        std::vector<float> o0((size_t)T * H * V), o1((size_t)T * H * V, NAN);
        dsv_tensor to = T2(DSV_F32, o0.data(), T, H * V, H * V), tq = T2(DSV_F32, q.data(), T, H * qk, H * qk),
                   tkv = T2(DSV_F32, kvb.data(), n_ctx, H * (nope + V), H * (nope + V)), tpe = T2(DSV_F32, pe.data(), n_ctx, rope, rope),
                   ti = T2(DSV_I32, idx.data(), T, K, K);
        dsv_op_mla_prefill op = {&to, &tq, &tkv, &tpe, &ti, H, nope, rope, V, 0.1f, faithful};
        ECHECK(dsv_cpu_mla_prefill(&op) == 0, "cpu mla prefill");
        emu::launch(dim3(H, T), dim3(256), ((size_t)qk + K + 32) * 4, [&] {
                dcu_mla_prefill_kernel(o1.data(), H * V, q.data(), H * qk, kvb.data(), H * (nope + V), pe.data(), rope, idx.data(), K, n_ctx, H,
                                       nope, rope, V, K, 0.1f, faithful, &err_word);
        });
        cmp(faithful ? "mla prefill faithful" : "mla prefill exact", o0.data(), H * V, o1.data(), H * V, T, H * V, faithful ? 1e-5 : 1e-10,
            faithful ? 1.0 / 32 : 1e-4, faithful ? (size_t)(T * H * V / 100) : 2);
}

int main(void) {
        test_elementwise();
        test_norm();
        test_kv();
        test_linear(70, 130, 304, 5);
        if (big)
                test_linear(4, 576, 7168, 4); /* kv_a: a partial 128-row scale block, 56 K blocks */
        for (int f = 1; f >= 0; f--) {
                test_indexer(f, 4, 64, 300, {10, 63, 64, 299});
                if (big)
                        test_indexer(f, 64, 2048, 2100, {2047, 2099}); /* 671B heads and top-k */
        }
        test_topk_big();
        for (int f = 1; f >= 0; f--) {
                test_mla_decode(f, 40, 32, 48, 256, 100, 150, {0, 80, 149});
                if (big)
                        test_mla_decode(f, 128, 128, 128, 512, 2048, 3000, {2999}); /* 671B shapes */
        }
        test_mla_prefill(true);
        test_mla_prefill(false);
        ECHECK(err_word == 0, "no kernel reported an index error (%u)", err_word);
        emu::shutdown();
        if (failures) {
                fprintf(stderr, "test-cuda-emu: %d of %d checks failed\n", failures, checks);
                return 1;
        }
        printf("test-cuda-emu: all %d checks passed\n", checks);
        return 0;
}
