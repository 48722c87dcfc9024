/* Harness: sparse MLA decode in the absorbed form over the paged FP8 cache (plain math in
 * kernels/cuda/mla.cuh): 128 heads, latent 512 + rope 64, top-2048 positions per query,
 * B queries each of its own sequence, 656-byte records in pages of 64 tokens.
 *
 *   variant 0  core: dcu_mla_scores_kernel + dcu_mla_softmax_kernel + dcu_mla_pv_kernel on
 *              given q_c (the backend's kernels; fp32 SIMT, scores through memory)
 *   variant 1  full op: + the W_UK / W_UV projections as cuBLAS strided-batched SGEMMs
 *
 * Usage: mla_decode [--variant N]... [--case B,CTX]... [--reps R] [--csv FILE]
 * Default cases: B = 1, 16, 64, 128 at a 32K context. FLOPs are counted as FlashMLA counts
 * them, 2 * B * H * topk * (576 + 512); reported in TFLOP/s against FlashMLA's 410 TFLOP/s
 * (H800, same SM count; target >= 50%) and the measured bf16 ceiling. Validated (faithful
 * numerics) against a double-precision host reference on sampled queries and heads. */
#include "kernels/cuda/mla.cuh"
#include "kernels/dev/harness.cuh"

#define FLASHMLA_TFLOPS 410.0

/* the record of slot s, element by element: pure functions, so the host reference needs no
 * copy of the pool */
DCU_HD float lat_at(uint64_t seed, int64_t s, int c) {
        uint64_t z = dcu_mix64(seed ^ (uint64_t)(s * 1024 + c));
        return dcu_e4m3_to_f32((uint8_t)((z & 0x80) | ((z >> 8) % 0x58))) *
               (0.01f * (1.0f + (float)dcu_rand_u01(seed + 7, (uint64_t)(s * 8 + c / 128))));
}
DCU_HD uint8_t lat_code(uint64_t seed, int64_t s, int c) {
        uint64_t z = dcu_mix64(seed ^ (uint64_t)(s * 1024 + c));
        return (uint8_t)((z & 0x80) | ((z >> 8) % 0x58));
}
DCU_HD float lat_scale(uint64_t seed, int64_t s, int b) { return 0.01f * (1.0f + (float)dcu_rand_u01(seed + 7, (uint64_t)(s * 8 + b))); }
DCU_HD uint16_t kpe_at(uint64_t seed, int64_t s, int i) {
        return dcu_f32_to_bf16((float)dcu_rand_u01(seed + 9, (uint64_t)(s * 64 + i)) - 0.5f);
}

__global__ void fill_records(uint8_t *base, struct dcu_kv kv, int64_t n_slots, uint64_t seed) {
        for (int64_t s = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; s < n_slots; s += (int64_t)gridDim.x * blockDim.x) {
                uint8_t *r = base + dcu_kv_mla_off(&kv, s);
                for (int i = 0; i < kv.kv_lora; i++)
                        r[i] = lat_code(seed, s, i);
                float *sc = (float *)(r + kv.kv_lora);
                for (int b = 0; b < kv.kv_lora / 128; b++)
                        sc[b] = lat_scale(seed, s, b);
                uint16_t *pe = (uint16_t *)(r + dcu_kv_mla_kpe(&kv));
                for (int i = 0; i < kv.rope; i++)
                        pe[i] = kpe_at(seed, s, i);
        }
}

__global__ void round_all(float *p, size_t n) {
        for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
                p[i] = dcu_round_bf16(p[i]);
}

int main(int argc, char **argv) {
        struct h_ctx h;
        h_init(&h, "mla_decode", argc, argv);
        std::vector<std::pair<int, int64_t>> cases;
        for (int i = 1; i + 1 < argc; i++)
                if (strcmp(argv[i], "--case") == 0) {
                        int B;
                        long long ctx;
                        if (sscanf(argv[i + 1], "%d,%lld", &B, &ctx) == 2)
                                cases.push_back({B, (int64_t)ctx});
                }
        if (cases.empty())
                cases = {{1, 32768}, {16, 32768}, {64, 32768}, {128, 32768}};
        const int H = 128, nope = 128, rope = 64, V = 128, C = 512, K = 2048, qk = nope + rope;
        const float scale = 0.1f;
        for (auto &cs : cases) {
                const int B = cs.first;
                const int64_t ctx = cs.second, pps = dcu_ceil_div(ctx, 64), n_pages = pps * B;
                struct dcu_kv kv = {};
                kv.fp8 = 1;
                kv.page_tokens = 64;
                kv.n_layers = 1;
                kv.kv_lora = C;
                kv.rope = rope;
                kv.index_dim = 128;
                kv.mla_rec = 656;
                kv.idx_rec = 128;
                kv.idx_scale_rec = 4;
                kv.idx_off = dcu_round_up(64 * 656, 64);
                kv.idx_scale_off = dcu_round_up(kv.idx_off + 64 * 128, 64);
                kv.layer_page_bytes = dcu_round_up(kv.idx_scale_off + 64 * 4, 256);
                const size_t pool_bytes = (size_t)n_pages * kv.layer_page_bytes;
                uint8_t *pool = h_alloc<uint8_t>(pool_bytes);
                HCHECK(cudaMemsetAsync(pool, 0, pool_bytes, h.stream));
                fill_records<<<4096, 128, 0, h.stream>>>(pool, kv, n_pages * 64, 41);
                HCHECK(cudaGetLastError());
                std::vector<int32_t> bt((size_t)n_pages), seq(B), idx((size_t)B * K);
                for (int64_t i = 0; i < n_pages; i++)
                        bt[i] = (int32_t)i;
                for (int64_t i = n_pages - 1; i > 0; i--)
                        std::swap(bt[i], bt[(size_t)(dcu_mix64((uint64_t)i + 5) % (uint64_t)(i + 1))]);
                for (int b = 0; b < B; b++) {
                        seq[b] = b;
                        /* K sorted distinct positions of [0, ctx) */
                        int need = K;
                        int64_t left = ctx;
                        int j = 0;
                        for (int64_t s = 0; s < ctx && need > 0; s++, left--)
                                if (dcu_rand_u01(50 + (uint64_t)b, (uint64_t)s) * (double)left < need) {
                                        idx[(size_t)b * K + j++] = (int32_t)s;
                                        need--;
                                }
                        for (; j < K; j++)
                                idx[(size_t)b * K + j] = -1;
                }
                int32_t *d_bt = h_alloc<int32_t>(bt.size()), *d_seq = h_alloc<int32_t>(B), *d_idx = h_alloc<int32_t>(idx.size());
                HCHECK(cudaMemcpy(d_bt, bt.data(), bt.size() * 4, cudaMemcpyHostToDevice));
                HCHECK(cudaMemcpy(d_seq, seq.data(), seq.size() * 4, cudaMemcpyHostToDevice));
                HCHECK(cudaMemcpy(d_idx, idx.data(), idx.size() * 4, cudaMemcpyHostToDevice));
                float *q = h_alloc<float>((size_t)B * H * qk), *qc = h_alloc<float>((size_t)B * H * C), *S = h_alloc<float>((size_t)B * H * K);
                float *oc = h_alloc<float>((size_t)B * H * C), *out = h_alloc<float>((size_t)B * H * V);
                float *w = h_alloc<float>((size_t)H * (nope + V) * C);
                h_fill_f32(&h, q, (size_t)B * H * qk, 42, 1.0f);
                h_fill_f32(&h, qc, (size_t)B * H * C, 43, 0.05f);
                h_fill_f32(&h, w, (size_t)H * (nope + V) * C, 44, 0.05f);
                round_all<<<1024, 256, 0, h.stream>>>(q, (size_t)B * H * qk);
                round_all<<<1024, 256, 0, h.stream>>>(qc, (size_t)B * H * C);
                HCHECK(cudaGetLastError());
                unsigned *err = h_alloc<unsigned>(1);
                HCHECK(cudaMemset(err, 0, 4));
                char shp[64];
                snprintf(shp, sizeof(shp), "B=%d H=%d topk=%d ctx=%lld", B, H, K, (long long)ctx);
                const double flop = 2.0 * B * H * (double)K * (576 + 512);
                auto core = [&] {
                        dim3 gs((unsigned)dcu_ceil_div(K, DCU_MLA_JT), (unsigned)dcu_ceil_div(H, DCU_MLA_HT), (unsigned)B);
                        dcu_mla_scores_kernel<true><<<gs, 256, 0, h.stream>>>(S, qc, q, (int64_t)H * qk, d_idx, K, pool, kv, d_seq, d_bt,
                                                                              pps, H, nope, rope, C, K, scale, 1, 0, err);
                        dcu_mla_softmax_kernel<<<(unsigned)(B * H), 256, 0, h.stream>>>(S, d_idx, K, H, K, 1, 0);
                        dim3 gp((unsigned)dcu_ceil_div(C, DCU_MLA_CT), (unsigned)dcu_ceil_div(H, DCU_MLA_HT), (unsigned)B);
                        dcu_mla_pv_kernel<true><<<gp, 256, 0, h.stream>>>(oc, S, d_idx, K, pool, kv, d_seq, d_bt, pps, H, C, K, 1, 0, err);
                };
                if (h_want_variant(argc, argv, 0)) {
                        core();
                        HCHECK(cudaGetLastError());
                        /* reference: queries 0 and B-1, heads 0, 77, 127, in double from the bytes */
                        std::vector<float> hq = h_download(&h, q, (size_t)B * H * qk), hqc = h_download(&h, qc, (size_t)B * H * C);
                        std::vector<float> hoc = h_download(&h, oc, (size_t)B * H * C);
                        double worst = 0;
                        for (int b : {0, B - 1})
                                for (int hh : {0, 77, 127}) {
                                        std::vector<double> s(K, -INFINITY), o(C, 0.0);
                                        double m = -INFINITY;
                                        for (int j = 0; j < K; j++) {
                                                const int32_t p = idx[(size_t)b * K + j];
                                                if (p < 0)
                                                        continue;
                                                const int64_t sl = dcu_kv_slot(bt.data() + (size_t)b * pps, 64, p);
                                                double a = 0, e = 0;
                                                for (int c = 0; c < C; c++)
                                                        a += (double)hqc[((size_t)b * H + hh) * C + c] * lat_at(41, sl, c);
                                                for (int i = 0; i < rope; i++)
                                                        e += (double)hq[((size_t)b * H + hh) * qk + nope + i] * dcu_bf16_to_f32(kpe_at(41, sl, i));
                                                s[j] = (a + e) * scale;
                                                m = std::max(m, s[j]);
                                        }
                                        double sum = 0;
                                        for (int j = 0; j < K; j++)
                                                if (idx[(size_t)b * K + j] >= 0)
                                                        sum += exp(s[j] - m);
                                        for (int j = 0; j < K; j++) {
                                                const int32_t p = idx[(size_t)b * K + j];
                                                if (p < 0)
                                                        continue;
                                                const double pj = exp(s[j] - m) / sum;
                                                const int64_t sl = dcu_kv_slot(bt.data() + (size_t)b * pps, 64, p);
                                                for (int c = 0; c < C; c++)
                                                        o[c] += pj * lat_at(41, sl, c);
                                        }
                                        double rms = 0, e = 0;
                                        for (int c = 0; c < C; c++) {
                                                rms += o[c] * o[c];
                                                e = std::max(e, fabs(o[c] - hoc[((size_t)b * H + hh) * C + c]));
                                        }
                                        worst = std::max(worst, e / (sqrt(rms / C) + 1e-30));
                                }
                        const bool ok = worst < 5e-2; /* bf16 scores, probabilities and outputs */
                        const double ms = ok ? h_time(&h, core) : 0;
                        const double tf = flop / (ms * 1e-3) / 1e12;
                        h_report(&h, "0 core (fp32 simt)", shp, ms, tf, "TFLOP/s", "flashmla", FLASHMLA_TFLOPS, worst, ok);
                        h_report(&h, "0 core vs bf16 ceiling", shp, ms, tf, "TFLOP/s", "bf16", h.ceil.bf16_tflops, worst, ok);
                }
                if (h_want_variant(argc, argv, 1)) {
                        const float one = 1, zero = 0;
                        auto full = [&] {
                                HBLAS(cublasSgemmStridedBatched(h.blas, CUBLAS_OP_N, CUBLAS_OP_N, C, B, nope, &one, w, C,
                                                                (long long)(nope + V) * C, q, H * qk, qk, &zero, qc, H * C, C, H));
                                round_all<<<1024, 256, 0, h.stream>>>(qc, (size_t)B * H * C);
                                core();
                                HBLAS(cublasSgemmStridedBatched(h.blas, CUBLAS_OP_T, CUBLAS_OP_N, V, B, C, &one, w + (size_t)nope * C, C,
                                                                (long long)(nope + V) * C, oc, H * C, C, &zero, out, H * V, V, H));
                                round_all<<<1024, 256, 0, h.stream>>>(out, (size_t)B * H * V);
                        };
                        full();
                        HCHECK(cudaStreamSynchronize(h.stream));
                        const double ms = h_time(&h, full);
                        const double fl = flop + 2.0 * B * H * (double)C * (nope + V);
                        h_report(&h, "1 full op (+W_UK/W_UV)", shp, ms, fl / (ms * 1e-3) / 1e12, "TFLOP/s", "flashmla", FLASHMLA_TFLOPS,
                                 0, true);
                }
                for (void *p : {(void *)pool, (void *)d_bt, (void *)d_seq, (void *)d_idx, (void *)q, (void *)qc, (void *)S, (void *)oc,
                                (void *)out, (void *)w, (void *)err})
                        HCHECK(cudaFree(p));
        }
        return h_finish(&h);
}
