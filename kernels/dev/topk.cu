/* Harness: top-k selection over long score rows (plain math in kernels/cuda/topk.cuh):
 * the k = 2048 best of n scores per query, ascending positions, ties to the lower position.
 *
 *   variant 0  dcu_topk_kernel (the backend's kernel: 4 radix passes + ordered collection,
 *              one 1024-thread block per query)
 *
 * Usage: topk [--variant N]... [--case T,N]... [--reps R] [--csv FILE]
 * Default cases: T = 1 and 64 queries over n = 4K, 32K, 128K and 1M candidates, scores
 * rounded to bf16 (realistic ties). Validated exactly against std::nth_element with the same
 * ordering; reported as score bytes read once per second against the copy ceiling (the
 * target is to be bounded by reading the scores once; the kernel reads them 6 times). */
#include "kernels/cuda/topk.cuh"
#include "kernels/dev/harness.cuh"

__global__ void round_bf16(float *p, size_t n) {
        for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
                p[i] = dcu_round_bf16(p[i]);
}

int main(int argc, char **argv) {
        struct h_ctx h;
        h_init(&h, "topk", argc, argv);
        std::vector<std::pair<int, int64_t>> cases;
        for (int i = 1; i + 1 < argc; i++)
                if (strcmp(argv[i], "--case") == 0) {
                        int T;
                        long long n;
                        if (sscanf(argv[i + 1], "%d,%lld", &T, &n) == 2)
                                cases.push_back({T, (int64_t)n});
                }
        if (cases.empty())
                for (int T : {1, 64})
                        for (int64_t n : {4096LL, 32768LL, 131072LL, 1048576LL})
                                cases.push_back({T, n});
        const int K = 2048;
        for (auto &cs : cases) {
                const int T = cs.first;
                const int64_t n = cs.second, lds = dcu_round_up(n, 4);
                float *sc = h_alloc<float>((size_t)T * lds);
                int32_t *out = h_alloc<int32_t>((size_t)T * K), *pos = h_alloc<int32_t>(T);
                h_fill_f32(&h, sc, (size_t)T * lds, 31, 1.0f);
                round_bf16<<<1024, 256, 0, h.stream>>>(sc, (size_t)T * lds);
                HCHECK(cudaGetLastError());
                std::vector<int32_t> hp(T, (int32_t)(n - 1));
                HCHECK(cudaMemcpy(pos, hp.data(), (size_t)T * 4, cudaMemcpyHostToDevice));
                char shp[64];
                snprintf(shp, sizeof(shp), "T=%d n=%lld k=%d", T, (long long)n, K);
                if (h_want_variant(argc, argv, 0)) {
                        auto run = [&] { dcu_topk_kernel<<<T, DCU_TOPK_THREADS, 0, h.stream>>>(sc, lds, pos, n, K, out, K, 0); };
                        run();
                        HCHECK(cudaGetLastError());
                        std::vector<float> hs = h_download(&h, sc, (size_t)T * lds);
                        std::vector<int32_t> ho = h_download(&h, out, (size_t)T * K);
                        int64_t bad = 0;
                        std::vector<int32_t> idx((size_t)n);
                        for (int t = 0; t < T; t++) {
                                const float *row = hs.data() + (size_t)t * lds;
                                for (int64_t i = 0; i < n; i++)
                                        idx[i] = (int32_t)i;
                                auto better = [&](int32_t a, int32_t b) { return row[a] > row[b] || (row[a] == row[b] && a < b); };
                                const int k = (int)std::min<int64_t>(K, n);
                                std::nth_element(idx.begin(), idx.begin() + (k - 1), idx.end(), better);
                                std::sort(idx.begin(), idx.begin() + k);
                                for (int i = 0; i < K; i++)
                                        bad += ho[(size_t)t * K + i] != (i < k ? idx[i] : -1);
                        }
                        const bool ok = bad == 0;
                        const double ms = ok ? h_time(&h, run) : 0;
                        h_report(&h, "0 radix", shp, ms, (double)T * n * 4 / (ms * 1e-3) / 1e9, "GB/s", "copy", h.ceil.copy_gbps,
                                 (double)bad, ok);
                }
                HCHECK(cudaFree(sc));
                HCHECK(cudaFree(out));
                HCHECK(cudaFree(pos));
        }
        return h_finish(&h);
}
