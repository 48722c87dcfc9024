/* Harness: lightning-indexer scores over the paged FP8 key cache (plain math in
 * kernels/cuda/indexer.cuh): 64 heads x 128 dims, keys 128 e4m3 + fp32 scale per token in
 * pages of 64 tokens that also hold the 656-byte MLA records (the real page geometry).
 *
 *   variant 0  dcu_index_scores_kernel (the backend's kernel; SIMT fp32, 32 keys per block)
 *
 * Usage: indexer_scores [--variant N]... [--case T,CTX,SHARED]... [--reps R] [--csv FILE]
 *   T queries at position CTX-1; SHARED=1: all of one sequence (prefill chunk: keys read
 *   once, compute-bound), SHARED=0: each its own sequence (decode batch: bandwidth-bound).
 * Default cases: decode T = 1, 8, 64 at 32K and 128K; a 64-query chunk at 128K.
 * Reported against whichever ceiling bounds the case (arithmetic intensity vs the fp8
 * ridge): key bytes / s vs copy, or TFLOP/s vs the cuBLASLt FP8 rate; target >= 50%. */
#include "kernels/cuda/indexer.cuh"
#include "kernels/dev/harness.cuh"

/* key i of slot s and its scale: a pure function, so the host reference needs no copy of the pool */
DCU_HD uint8_t key_code(uint64_t seed, int64_t s, int i, int d) {
        uint64_t z = dcu_mix64(seed ^ (uint64_t)(s * d + i));
        return (uint8_t)((z & 0x80) | ((z >> 8) % 0x50));
}
DCU_HD float key_scale(uint64_t seed, int64_t s) { return 0.001f * (1.0f + (float)dcu_rand_u01(seed + 1, (uint64_t)s)); }

__global__ void fill_keys(uint8_t *base, struct dcu_kv kv, int64_t n_slots, uint64_t seed) {
        for (int64_t s = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; s < n_slots; s += (int64_t)gridDim.x * blockDim.x) {
                uint8_t *k = base + dcu_kv_idx_off(&kv, s);
                for (int i = 0; i < kv.index_dim; i++)
                        k[i] = key_code(seed, s, i, kv.index_dim);
                *(float *)(base + dcu_kv_idx_scale_off(&kv, s)) = key_scale(seed, s);
        }
}

struct icase {
        int T;
        int64_t ctx;
        int shared;
};

int main(int argc, char **argv) {
        struct h_ctx h;
        h_init(&h, "indexer_scores", argc, argv);
        std::vector<icase> cases;
        for (int i = 1; i + 1 < argc; i++)
                if (strcmp(argv[i], "--case") == 0) {
                        icase c;
                        long long ctx;
                        if (sscanf(argv[i + 1], "%d,%lld,%d", &c.T, &ctx, &c.shared) == 3) {
                                c.ctx = ctx;
                                cases.push_back(c);
                        }
                }
        if (cases.empty())
                cases = {{1, 32768, 0}, {8, 32768, 0}, {64, 32768, 0}, {1, 131072, 0}, {8, 131072, 0}, {64, 131072, 0}, {64, 131072, 1}};
        const int H = 64, d = 128;
        const size_t smem = dcu_index_scores_smem(H, d);
        HCHECK(cudaFuncSetAttribute(dcu_index_scores_kernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        for (const icase &c : cases) {
                /* one layer of the 671B page geometry */
                struct dcu_kv kv = {};
                kv.fp8 = 1;
                kv.page_tokens = 64;
                kv.n_layers = 1;
                kv.layer = 0;
                kv.kv_lora = 512;
                kv.rope = 64;
                kv.index_dim = d;
                kv.mla_rec = 656;
                kv.idx_rec = d;
                kv.idx_scale_rec = 4;
                kv.idx_off = dcu_round_up(64 * 656, 64);
                kv.idx_scale_off = dcu_round_up(kv.idx_off + 64 * d, 64);
                kv.layer_page_bytes = dcu_round_up(kv.idx_scale_off + 64 * 4, 256);
                const int n_seq = c.shared ? 1 : c.T;
                const int64_t pages_per_seq = dcu_ceil_div(c.ctx, 64), n_pages = pages_per_seq * n_seq;
                const size_t pool_bytes = (size_t)n_pages * kv.layer_page_bytes;
                uint8_t *pool = h_alloc<uint8_t>(pool_bytes);
                HCHECK(cudaMemsetAsync(pool, 0, pool_bytes, h.stream));
                fill_keys<<<2048, 256, 0, h.stream>>>(pool, kv, n_pages * 64, 21);
                HCHECK(cudaGetLastError());
                std::vector<int32_t> bt((size_t)n_pages), seq(c.T), pos(c.T);
                for (int64_t i = 0; i < n_pages; i++)
                        bt[i] = (int32_t)i;
                for (int64_t i = n_pages - 1; i > 0; i--) /* scattered pages */
                        std::swap(bt[i], bt[(size_t)(dcu_mix64((uint64_t)i) % (uint64_t)(i + 1))]);
                for (int t = 0; t < c.T; t++) {
                        seq[t] = c.shared ? 0 : t;
                        pos[t] = (int32_t)(c.ctx - 1 - (c.shared ? c.T - 1 - t : 0));
                }
                int32_t *d_bt = h_alloc<int32_t>(bt.size()), *d_seq = h_alloc<int32_t>(c.T), *d_pos = h_alloc<int32_t>(c.T);
                HCHECK(cudaMemcpy(d_bt, bt.data(), bt.size() * 4, cudaMemcpyHostToDevice));
                HCHECK(cudaMemcpy(d_seq, seq.data(), seq.size() * 4, cudaMemcpyHostToDevice));
                HCHECK(cudaMemcpy(d_pos, pos.data(), pos.size() * 4, cudaMemcpyHostToDevice));
                uint8_t *q = h_alloc<uint8_t>((size_t)c.T * H * d);
                float *qs = h_alloc<float>((size_t)c.T * H), *w = h_alloc<float>((size_t)c.T * H);
                h_fill_codes(&h, q, (size_t)c.T * H * d, 22);
                h_fill_f32(&h, qs, (size_t)c.T * H, 23, 0.01f);
                h_fill_f32(&h, w, (size_t)c.T * H, 24, 1.0f);
                const int64_t max_ctx = pages_per_seq * 64, lds = dcu_round_up(max_ctx, 4);
                float *sc = h_alloc<float>((size_t)c.T * lds);
                char shp[96];
                snprintf(shp, sizeof(shp), "T=%d ctx=%lld %s", c.T, (long long)c.ctx, c.shared ? "one sequence" : "T sequences");
                const float ws1 = 0.125f, ws2 = 0.08838834764831845f;
                dim3 grid((unsigned)dcu_ceil_div(max_ctx, DCU_IDX_TK), (unsigned)c.T);
                if (h_want_variant(argc, argv, 0)) {
                        unsigned *err = h_alloc<unsigned>(1);
                        HCHECK(cudaMemset(err, 0, 4));
                        auto run0 = [&] {
                                dcu_index_scores_kernel<true><<<grid, 256, smem, h.stream>>>(sc, lds, q, (int64_t)H * d, qs, H, w, H, pool,
                                                                                             kv, d_seq, d_pos, d_bt, pages_per_seq,
                                                                                             max_ctx, H, d, ws1, ws2, 0, 2048, 0, err);
                        };
                        run0();
                        HCHECK(cudaGetLastError());
                        /* validate a sample of positions of two queries in double */
                        std::vector<float> hs = h_download(&h, sc, (size_t)c.T * lds);
                        std::vector<uint8_t> hq = h_download(&h, q, (size_t)c.T * H * d);
                        std::vector<float> hqs = h_download(&h, qs, (size_t)c.T * H), hw = h_download(&h, w, (size_t)c.T * H);
                        double worst = 0, amax = 1e-30;
                        for (int t : {0, c.T - 1}) {
                                const int32_t *pages = bt.data() + (size_t)seq[t] * pages_per_seq;
                                for (int j = 0; j < 256; j++) {
                                        const int64_t s = (int64_t)((double)j / 256 * (pos[t] + 1));
                                        const int64_t slot = dcu_kv_slot(pages, 64, s);
                                        const float ks = key_scale(21, slot);
                                        double acc = 0;
                                        for (int hh = 0; hh < H; hh++) {
                                                double dot = 0;
                                                for (int i = 0; i < d; i++)
                                                        dot += (double)dcu_e4m3_to_f32(hq[((size_t)t * H + hh) * d + i]) *
                                                               dcu_e4m3_to_f32(key_code(21, slot, i, d));
                                                double wh = (double)hw[(size_t)t * H + hh] * ws1 * hqs[(size_t)t * H + hh] * ws2;
                                                acc += (dot > 0 ? dot : 0) * wh;
                                        }
                                        acc *= ks;
                                        amax = std::max(amax, fabs(acc));
                                        worst = std::max(worst, fabs(acc - hs[(size_t)t * lds + s]));
                                }
                        }
                        const double err_rel = worst / amax;
                        const bool ok = err_rel < 1e-4;
                        const double ms = ok ? h_time(&h, run0) : 0;
                        const double flop = 2.0 * c.T * (double)c.ctx * H * d;
                        const double bytes = (double)n_seq * c.ctx * (d + 4); /* each sequence's keys once */
                        const double intensity = flop / bytes, ridge = h.ceil.fp8_tflops * 1e12 / (h.ceil.copy_gbps * 1e9);
                        if (intensity < ridge)
                                h_report(&h, "0 simt", shp, ms, bytes / (ms * 1e-3) / 1e9, "GB/s", "copy", h.ceil.copy_gbps, err_rel, ok);
                        else
                                h_report(&h, "0 simt", shp, ms, flop / (ms * 1e-3) / 1e12, "TFLOP/s", "fp8", h.ceil.fp8_tflops, err_rel, ok);
                        HCHECK(cudaFree(err));
                }
                HCHECK(cudaFree(pool));
                HCHECK(cudaFree(d_bt));
                HCHECK(cudaFree(d_seq));
                HCHECK(cudaFree(d_pos));
                HCHECK(cudaFree(q));
                HCHECK(cudaFree(qs));
                HCHECK(cudaFree(w));
                HCHECK(cudaFree(sc));
        }
        return h_finish(&h);
}
