/* The CPU emulation of CUDA itself (tests/gpu/emu), on what the plugin relies on: written as
 * CUDA and built like the emulated plugin (cu2cc.pl, g++, runtime.cc, blas.cc).
 *   - streams run their work in order when waited for: a result read before the wait is
 *     stale; pageable sources are taken at the call, pinned ones when the copy runs; a copy
 *     to pageable memory returns done; events order two streams; the legacy stream orders
 *     against blocking streams
 *   - graph capture records (nothing runs while capturing, allocations stay valid), replays
 *     on every launch, and a blocking call invalidates the capture
 *   - launch configuration errors and the dynamic shared memory attribute; copies out of an
 *     allocation; pointer attributes; memory accounting
 *   - barriers, warp shuffles, atomics, CUB block scan and segmented sort
 *   - cuBLAS/cuBLASLt: SGEMM, bf16 GemmEx, strided batches, Lt fp32 vs "not supported" for
 *     FP8 block scaling
 *   - two host threads launching at once (thread_local launch state)
 *   - in child processes: host code touching device memory faults; a host pointer passed to
 *     a kernel makes the device error sticky with a message naming kernel and argument */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cub/cub.cuh>
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <string>
#include <thread>

static int failures, checks;
#define ECHECK(cond, ...)                                                                    \
        do {                                                                                 \
                checks++;                                                                    \
                if (!(cond)) {                                                               \
                        fprintf(stderr, "%s:%d: FAIL: %s: ", __FILE__, __LINE__, #cond);     \
                        fprintf(stderr, __VA_ARGS__);                                        \
                        fprintf(stderr, "\n");                                               \
                        failures++;                                                          \
                }                                                                            \
        } while (0)
#define OK(stmt) ECHECK((stmt) == cudaSuccess, "%s", #stmt)

/* ------------------------------------------------------------------ kernels */
__global__ void fill_kernel(float *x, int n, float v) {
        for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
                x[i] = v + (float)i;
}

__global__ void add_kernel(float *y, const float *x, int n, float v) {
        for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
                y[i] = x[i] + v;
}

/* per block: out[b] = sum of in[b * 256 + t] through shared memory, barriers and shuffles */
__global__ void block_sum_kernel(const float *in, float *out) {
        __shared__ float part[8];
        float v = in[blockIdx.x * blockDim.x + threadIdx.x];
        for (int o = 16; o > 0; o >>= 1)
                v += __shfl_xor_sync(0xffffffffu, v, o);
        if ((threadIdx.x & 31) == 0)
                part[threadIdx.x >> 5] = v;
        __syncthreads();
        if (threadIdx.x == 0) {
                float s = 0;
                for (int w = 0; w < (int)(blockDim.x >> 5); w++)
                        s += part[w];
                out[blockIdx.x] = s;
        }
}

__global__ void count_kernel(unsigned *c, int n) {
        for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
                atomicAdd(c, 1u);
}

__global__ void dyn_smem_kernel(float *out, int n) {
        DCU_DYN_SMEM(float, buf);
        for (int i = threadIdx.x; i < n; i += blockDim.x)
                buf[i] = (float)i;
        __syncthreads();
        if (threadIdx.x == 0) {
                float s = 0;
                for (int i = 0; i < n; i++)
                        s += buf[i];
                out[0] = s;
        }
}

typedef cub::BlockScan<int, 128> scan_t;
__global__ void scan_kernel(const int *in, int *out) {
        __shared__ typename scan_t::TempStorage tmp;
        int r;
        scan_t(tmp).InclusiveSum(in[threadIdx.x], r);
        out[threadIdx.x] = r;
}

/* ------------------------------------------------------------------ helpers */
static float *dev_floats(size_t n) {
        void *p = nullptr;
        if (cudaMalloc(&p, n * sizeof(float)) != cudaSuccess) {
                fprintf(stderr, "cudaMalloc failed\n");
                exit(1);
        }
        return (float *)p;
}

/* runs fn in a child; returns its wait status */
template <typename F> static int in_child(F fn) {
        fflush(stdout);
        fflush(stderr);
        pid_t pid = fork();
        if (pid == 0) {
                fn();
                _exit(0);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        return status;
}

/* ------------------------------------------------------------------ streams */
static void test_streams() {
        const int n = 1000;
        cudaStream_t s, s2, sb;
        OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
        OK(cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking));
        OK(cudaStreamCreate(&sb));
        float *d = dev_floats(n), *d2 = dev_floats(n);
        float *pinned = nullptr;
        OK(cudaHostAlloc((void **)&pinned, n * sizeof(float), cudaHostAllocDefault));
        std::vector<float> page(n);

        /* deferred: a pinned destination is stale until the stream is waited for */
        for (int i = 0; i < n; i++)
                pinned[i] = -1;
        fill_kernel<<<4, 128, 0, s>>>(d, n, 10.0f);
        OK(cudaGetLastError());
        OK(cudaMemcpyAsync(pinned, d, n * sizeof(float), cudaMemcpyDeviceToHost, s));
        ECHECK(pinned[5] == -1.0f, "the copy ran before anyone waited (%g)", pinned[5]);
        OK(cudaStreamSynchronize(s));
        ECHECK(pinned[5] == 15.0f && pinned[n - 1] == 10.0f + (n - 1), "after the wait: %g %g", pinned[5], pinned[n - 1]);

        /* a copy to pageable memory returns done */
        fill_kernel<<<2, 64, 0, s>>>(d, n, 20.0f);
        OK(cudaMemcpyAsync(page.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost, s));
        ECHECK(page[7] == 27.0f, "pageable copy not complete on return: %g", page[7]);

        /* pageable sources are taken at the call, pinned ones when the copy runs */
        for (int i = 0; i < n; i++)
                page[i] = 1.0f, pinned[i] = 1.0f;
        OK(cudaMemcpyAsync(d, page.data(), n * sizeof(float), cudaMemcpyHostToDevice, s));
        OK(cudaMemcpyAsync(d2, pinned, n * sizeof(float), cudaMemcpyHostToDevice, s));
        page[0] = pinned[0] = 2.0f;
        float got[2];
        OK(cudaMemcpyAsync(&got[0], d, sizeof(float), cudaMemcpyDeviceToHost, s));
        OK(cudaMemcpyAsync(&got[1], d2, sizeof(float), cudaMemcpyDeviceToHost, s));
        ECHECK(got[0] == 1.0f && got[1] == 2.0f, "pageable source snapshot %g (want 1), pinned source read late %g (want 2)", got[0],
               got[1]);

        /* an event orders two streams: waiting for s2 runs s up to the event */
        cudaEvent_t e;
        OK(cudaEventCreate(&e));
        fill_kernel<<<1, 256, 0, s>>>(d, n, 100.0f);
        OK(cudaEventRecord(e, s));
        fill_kernel<<<1, 256, 0, s>>>(d, n, 500.0f); /* after the event: must not be seen */
        OK(cudaStreamWaitEvent(s2, e, 0));
        add_kernel<<<1, 256, 0, s2>>>(d2, d, n, 1.0f);
        OK(cudaMemcpyAsync(page.data(), d2, n * sizeof(float), cudaMemcpyDeviceToHost, s2));
        ECHECK(page[3] == 104.0f, "stream wait event: %g (want 104)", page[3]);
        OK(cudaStreamSynchronize(s));
        cudaEvent_t e2;
        float ms = -1;
        OK(cudaEventCreate(&e2));
        OK(cudaEventRecord(e, s));
        fill_kernel<<<1, 32, 0, s>>>(d, n, 0.0f);
        OK(cudaEventRecord(e2, s));
        OK(cudaEventSynchronize(e2));
        OK(cudaEventElapsedTime(&ms, e, e2));
        ECHECK(ms >= 0.0f, "elapsed time %g", ms);

        /* the legacy stream orders against a blocking stream */
        OK(cudaMemsetAsync(d, 0, n * sizeof(float), 0));
        add_kernel<<<1, 128, 0, sb>>>(d2, d, n, 3.0f);
        OK(cudaMemcpyAsync(page.data(), d2, n * sizeof(float), cudaMemcpyDeviceToHost, sb));
        ECHECK(page[9] == 3.0f, "blocking stream saw the legacy memset: %g", page[9]);

        OK(cudaEventDestroy(e));
        OK(cudaEventDestroy(e2));
        OK(cudaFreeHost(pinned));
        OK(cudaFree(d));
        OK(cudaFree(d2));
        OK(cudaStreamDestroy(s));
        OK(cudaStreamDestroy(s2));
        OK(cudaStreamDestroy(sb));
}

/* ------------------------------------------------------------------ graphs */
static void test_graphs() {
        const int n = 256;
        cudaStream_t s;
        OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
        float *in = dev_floats(n), *out = dev_floats(n);
        std::vector<float> h(n, 0.0f);
        OK(cudaMemset(out, 0, n * sizeof(float)));
        OK(cudaMemcpy(in, h.data(), n * sizeof(float), cudaMemcpyHostToDevice));

        cudaGraph_t g = nullptr;
        cudaGraphExec_t ge = nullptr;
        OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
        cudaStreamCaptureStatus cs;
        OK(cudaStreamIsCapturing(s, &cs));
        ECHECK(cs == cudaStreamCaptureStatusActive, "capturing");
        float *tmp = nullptr;
        OK(cudaMallocAsync((void **)&tmp, n * sizeof(float), s));
        add_kernel<<<2, 128, 0, s>>>(tmp, in, n, 1.0f);
        add_kernel<<<2, 128, 0, s>>>(out, tmp, n, 10.0f);
        OK(cudaFreeAsync(tmp, s));
        OK(cudaStreamEndCapture(s, &g));
        size_t nodes = 0;
        OK(cudaGraphGetNodes(g, nullptr, &nodes));
        ECHECK(nodes == 2, "%zu nodes captured (want the 2 launches)", nodes);
        OK(cudaMemcpy(h.data(), out, n * sizeof(float), cudaMemcpyDeviceToHost));
        ECHECK(h[0] == 0.0f, "nothing runs while capturing: %g", h[0]);
        OK(cudaGraphInstantiate(&ge, g, 0));
        for (int rep = 0; rep < 3; rep++) {
                std::vector<float> x(n, (float)rep);
                OK(cudaMemcpyAsync(in, x.data(), n * sizeof(float), cudaMemcpyHostToDevice, s));
                OK(cudaGraphLaunch(ge, s));
                OK(cudaMemcpyAsync(h.data(), out, n * sizeof(float), cudaMemcpyDeviceToHost, s));
                ECHECK(h[17] == rep + 11.0f, "replay %d: %g", rep, h[17]);
        }
        OK(cudaGraphExecDestroy(ge));
        OK(cudaGraphDestroy(g));

        /* a blocking call invalidates the capture */
        OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
        add_kernel<<<1, 32, 0, s>>>(out, in, n, 1.0f);
        ECHECK(cudaStreamSynchronize(s) == cudaErrorStreamCaptureUnsupported, "sync while capturing");
        ECHECK(cudaStreamEndCapture(s, &g) == cudaErrorStreamCaptureInvalidated && g == nullptr, "capture invalidated");
        cudaGetLastError();
        OK(cudaFree(in));
        OK(cudaFree(out));
        OK(cudaStreamDestroy(s));
}

/* ------------------------------------------------------------------ errors and memory */
static void test_errors() {
        float *d = dev_floats(64);
        size_t fr0, tot;
        OK(cudaMemGetInfo(&fr0, &tot));
        ECHECK(tot > (100ull << 30) && fr0 <= tot, "H200-like memory: %zu of %zu", fr0, tot);
        cudaDeviceProp prop;
        OK(cudaGetDeviceProperties(&prop, 0));
        ECHECK(prop.major == 9 && prop.sharedMemPerBlockOptin == 227 * 1024 && prop.multiProcessorCount == 132, "properties");

        fill_kernel<<<1, 1025>>>(d, 64, 0.0f);
        ECHECK(cudaGetLastError() == cudaErrorInvalidConfiguration, "block of 1025 threads");
        ECHECK(cudaGetLastError() == cudaSuccess, "the launch error is cleared once read");
        fill_kernel<<<dim3(1, 70000), 32>>>(d, 64, 0.0f);
        ECHECK(cudaGetLastError() == cudaErrorInvalidConfiguration, "grid.y of 70000");
        dyn_smem_kernel<<<1, 128, 60000>>>(d, 15000);
        ECHECK(cudaGetLastError() == cudaErrorInvalidValue, "60000 B of dynamic shared memory without the attribute");
        OK(cudaFuncSetAttribute(dyn_smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 60000));
        dyn_smem_kernel<<<1, 128, 60000>>>(d, 15000);
        OK(cudaGetLastError());
        float sum = 0;
        OK(cudaMemcpy(&sum, d, sizeof(float), cudaMemcpyDeviceToHost));
        float want = 0;
        for (int i = 0; i < 15000; i++)
                want += (float)i;
        ECHECK(sum == want, "dynamic shared memory kernel: %g (want %g)", sum, want);
        ECHECK(cudaFuncSetAttribute(dyn_smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 300000) == cudaErrorInvalidValue,
               "more than the opt-in limit");
        cudaGetLastError();

        float h[128];
        ECHECK(cudaMemcpy(h, d, 65 * sizeof(float), cudaMemcpyDeviceToHost) == cudaErrorInvalidValue, "copy past the allocation");
        ECHECK(cudaMemcpy(d, h, 4, cudaMemcpyDeviceToHost) == cudaErrorInvalidValue, "wrong direction");
        ECHECK(cudaMemset(d + 1, 0, 64 * sizeof(float)) == cudaErrorInvalidValue, "memset past the allocation");
        ECHECK(cudaFree(d + 1) == cudaErrorInvalidValue, "free of an interior pointer");
        cudaGetLastError();
        ECHECK(cudaGetLastError() == cudaSuccess, "non-sticky errors clear");

        cudaPointerAttributes a;
        void *ph = nullptr;
        OK(cudaHostAlloc(&ph, 100, 0));
        OK(cudaPointerGetAttributes(&a, d + 3));
        ECHECK(a.type == cudaMemoryTypeDevice, "device pointer");
        OK(cudaPointerGetAttributes(&a, (char *)ph + 50));
        ECHECK(a.type == cudaMemoryTypeHost, "pinned pointer");
        OK(cudaPointerGetAttributes(&a, h));
        ECHECK(a.type == cudaMemoryTypeUnregistered, "pageable pointer");
        OK(cudaHostRegister(h, sizeof(h), 0));
        OK(cudaPointerGetAttributes(&a, h + 2));
        ECHECK(a.type == cudaMemoryTypeHost, "registered pointer");
        OK(cudaHostUnregister(h));
        OK(cudaFreeHost(ph));

        void *big = nullptr;
        OK(cudaMalloc(&big, 1u << 30));
        size_t fr1;
        OK(cudaMemGetInfo(&fr1, &tot));
        ECHECK(fr0 - fr1 >= (1u << 30), "a 1 GiB allocation is accounted: %zu -> %zu", fr0, fr1);
        OK(cudaFree(big));
        ECHECK(cudaMalloc(&big, tot + 1) == cudaErrorMemoryAllocation, "more than the device has");
        cudaGetLastError();
        OK(cudaFree(d));
}

static void test_collectives() {
        const int B = 5, N = 256;
        std::vector<float> h(B * N);
        for (int i = 0; i < B * N; i++)
                h[i] = (float)(i % 97);
        float *in = dev_floats(B * N), *out = dev_floats(B);
        OK(cudaMemcpy(in, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice));
        block_sum_kernel<<<B, N>>>(in, out);
        float got[B];
        OK(cudaMemcpy(got, out, sizeof(got), cudaMemcpyDeviceToHost));
        for (int b = 0; b < B; b++) {
                float want = 0;
                for (int t = 0; t < N; t++)
                        want += h[b * N + t];
                ECHECK(got[b] == want, "block %d sum %g (want %g)", b, got[b], want);
        }
        unsigned *cnt = nullptr, c = 0;
        OK(cudaMalloc((void **)&cnt, 4));
        OK(cudaMemset(cnt, 0, 4));
        count_kernel<<<7, 96>>>(cnt, 5000);
        OK(cudaMemcpy(&c, cnt, 4, cudaMemcpyDeviceToHost));
        ECHECK(c == 5000, "atomics: %u", c);

        int *iv = nullptr, *ov = nullptr, hi[128], ho[128];
        OK(cudaMalloc((void **)&iv, sizeof(hi)));
        OK(cudaMalloc((void **)&ov, sizeof(ho)));
        for (int i = 0; i < 128; i++)
                hi[i] = i % 5 - 1;
        OK(cudaMemcpy(iv, hi, sizeof(hi), cudaMemcpyHostToDevice));
        scan_kernel<<<1, 128>>>(iv, ov);
        OK(cudaMemcpy(ho, ov, sizeof(ho), cudaMemcpyDeviceToHost));
        int run = 0, bad = 0;
        for (int i = 0; i < 128; i++)
                bad += ho[i] != (run += hi[i]);
        ECHECK(bad == 0, "block scan: %d wrong", bad);

        /* segmented descending sort, stable: equal keys keep their order */
        float keys[8] = {1, 3, 3, -1, 2, 2, -0.0f, 0.0f};
        int vals[8] = {0, 1, 2, 3, 4, 5, 6, 7}, offs[3] = {0, 4, 8};
        float *dk, *dk2;
        int *dv, *dv2, *doff;
        OK(cudaMalloc((void **)&dk, 32));
        OK(cudaMalloc((void **)&dk2, 32));
        OK(cudaMalloc((void **)&dv, 32));
        OK(cudaMalloc((void **)&dv2, 32));
        OK(cudaMalloc((void **)&doff, 12));
        OK(cudaMemcpy(dk, keys, 32, cudaMemcpyHostToDevice));
        OK(cudaMemcpy(dv, vals, 32, cudaMemcpyHostToDevice));
        OK(cudaMemcpy(doff, offs, 12, cudaMemcpyHostToDevice));
        size_t tb = 0;
        OK(cub::DeviceSegmentedRadixSort::SortPairsDescending(nullptr, tb, (const float *)dk, dk2, (const int *)dv, dv2, 8, 2,
                                                                (const int *)doff, (const int *)doff + 1));
        void *tmp = nullptr;
        OK(cudaMalloc(&tmp, tb));
        OK(cub::DeviceSegmentedRadixSort::SortPairsDescending(tmp, tb, (const float *)dk, dk2, (const int *)dv, dv2, 8, 2,
                                                                (const int *)doff, (const int *)doff + 1));
        int sv[8];
        OK(cudaMemcpy(sv, dv2, 32, cudaMemcpyDeviceToHost));
        const int want[8] = {1, 2, 0, 3, 4, 5, 7, 6}; /* +0 above -0 in radix order */
        ECHECK(memcmp(sv, want, sizeof(want)) == 0, "segmented sort: %d %d %d %d %d %d %d %d", sv[0], sv[1], sv[2], sv[3], sv[4], sv[5],
               sv[6], sv[7]);
        for (void *p : {(void *)in, (void *)out, (void *)cnt, (void *)iv, (void *)ov, (void *)dk, (void *)dk2, (void *)dv, (void *)dv2,
                        (void *)doff, tmp})
                OK(cudaFree(p));
}

/* ------------------------------------------------------------------ cuBLAS */
static void test_blas() {
        const int M = 37, N = 19, K = 150;
        std::vector<float> A(K * M), B(K * N), C(M * N), R(M * N);
        for (int i = 0; i < K * M; i++)
                A[i] = (float)((i * 7) % 13 - 6) / 8.0f;
        for (int i = 0; i < K * N; i++)
                B[i] = (float)((i * 5) % 11 - 5) / 4.0f;
        /* C[m, n] = sum_k A[k + m K] B[k + n K]: op(A) = T (A stored K x M), op(B) = N */
        for (int m = 0; m < M; m++)
                for (int n = 0; n < N; n++) {
                        double s = 0;
                        for (int k = 0; k < K; k++)
                                s += (double)A[k + m * K] * B[k + n * K];
                        R[m + n * M] = (float)s;
                }
        float *dA = dev_floats(A.size()), *dB = dev_floats(B.size()), *dC = dev_floats(C.size());
        OK(cudaMemcpy(dA, A.data(), A.size() * 4, cudaMemcpyHostToDevice));
        OK(cudaMemcpy(dB, B.data(), B.size() * 4, cudaMemcpyHostToDevice));
        cublasHandle_t h;
        ECHECK(cublasCreate(&h) == CUBLAS_STATUS_SUCCESS, "cublasCreate");
        const float one = 1.0f, zero = 0.0f;
        ECHECK(cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, M, N, K, &one, dA, K, dB, K, &zero, dC, M) == CUBLAS_STATUS_SUCCESS, "sgemm");
        OK(cudaMemcpy(C.data(), dC, C.size() * 4, cudaMemcpyDeviceToHost));
        ECHECK(C == R, "sgemm result (exact: small dyadic values)");
        ECHECK(cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, M, N, K, &one, dA, K - 1, dB, K, &zero, dC, M) == CUBLAS_STATUS_INVALID_VALUE,
               "lda too small");

        /* bf16 inputs: the same values are bf16-exact */
        std::vector<uint16_t> Ab(A.size()), Bb(B.size());
        for (size_t i = 0; i < A.size(); i++) {
                uint32_t u;
                memcpy(&u, &A[i], 4);
                Ab[i] = (uint16_t)(u >> 16);
        }
        for (size_t i = 0; i < B.size(); i++) {
                uint32_t u;
                memcpy(&u, &B[i], 4);
                Bb[i] = (uint16_t)(u >> 16);
        }
        void *dAb, *dBb;
        OK(cudaMalloc(&dAb, Ab.size() * 2));
        OK(cudaMalloc(&dBb, Bb.size() * 2));
        OK(cudaMemcpy(dAb, Ab.data(), Ab.size() * 2, cudaMemcpyHostToDevice));
        OK(cudaMemcpy(dBb, Bb.data(), Bb.size() * 2, cudaMemcpyHostToDevice));
        OK(cudaMemset(dC, 0xff, C.size() * 4));
        ECHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, M, N, K, &one, dAb, CUDA_R_16BF, K, dBb, CUDA_R_16BF, K, &zero, dC, CUDA_R_32F, M,
                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS,
               "gemmEx bf16");
        OK(cudaMemcpy(C.data(), dC, C.size() * 4, cudaMemcpyDeviceToHost));
        ECHECK(C == R, "gemmEx bf16 result");
        ECHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, M, N, K, &one, dAb, CUDA_R_8F_E4M3, K, dBb, CUDA_R_8F_E4M3, K, &zero, dC,
                            CUDA_R_32F, M, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_NOT_SUPPORTED,
               "FP8 GemmEx is not modelled");

        /* two batches, each its own half of the columns */
        ECHECK(cublasSgemmStridedBatched(h, CUBLAS_OP_T, CUBLAS_OP_N, M, 9, K, &one, dA, K, 0, dB, K, 9LL * K, &zero, dC, M, 9LL * M, 2) ==
                       CUBLAS_STATUS_SUCCESS,
               "strided batched");
        OK(cudaMemcpy(C.data(), dC, C.size() * 4, cudaMemcpyDeviceToHost));
        ECHECK(memcmp(C.data(), R.data(), 18 * M * 4) == 0, "strided batched result");

        /* cuBLASLt: fp32 modelled, FP8 with block scales reported unavailable */
        cublasLtHandle_t lt;
        cublasLtMatmulDesc_t op;
        cublasLtMatrixLayout_t la, lb, lc;
        cublasLtMatmulPreference_t pref;
        cublasLtMatmulHeuristicResult_t res;
        int got = -1;
        const cublasOperation_t tA = CUBLAS_OP_T;
        ECHECK(cublasLtCreate(&lt) == CUBLAS_STATUS_SUCCESS, "ltcreate");
        cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F);
        cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &tA, sizeof(tA));
        cublasLtMatrixLayoutCreate(&la, CUDA_R_32F, K, M, K);
        cublasLtMatrixLayoutCreate(&lb, CUDA_R_32F, K, N, K);
        cublasLtMatrixLayoutCreate(&lc, CUDA_R_32F, M, N, M);
        cublasLtMatmulPreferenceCreate(&pref);
        ECHECK(cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, lc, lc, pref, 1, &res, &got) == CUBLAS_STATUS_SUCCESS && got == 1,
               "fp32 heuristic");
        OK(cudaMemset(dC, 0, C.size() * 4));
        ECHECK(cublasLtMatmul(lt, op, &one, dA, la, dB, lb, &zero, dC, lc, dC, lc, &res.algo, nullptr, 0, 0) == CUBLAS_STATUS_SUCCESS,
               "lt matmul");
        OK(cudaMemcpy(C.data(), dC, C.size() * 4, cudaMemcpyDeviceToHost));
        ECHECK(C == R, "lt matmul result");
        const int32_t blk = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
        cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &blk, sizeof(blk));
        ECHECK(cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, lc, lc, pref, 1, &res, &got) == CUBLAS_STATUS_NOT_SUPPORTED && got == 0,
               "block-scaled matmul reported unavailable");
        cublasLtMatmulPreferenceDestroy(pref);
        cublasLtMatrixLayoutDestroy(la);
        cublasLtMatrixLayoutDestroy(lb);
        cublasLtMatrixLayoutDestroy(lc);
        cublasLtMatmulDescDestroy(op);
        cublasLtDestroy(lt);
        cublasDestroy(h);
        for (void *p : {(void *)dA, (void *)dB, (void *)dC, dAb, dBb})
                OK(cudaFree(p));
}

/* ------------------------------------------------------------------ threads */
static void test_threads() {
        const int B = 4, N = 256, reps = 20;
        int bad[2] = {0, 0};
        auto worker = [&](int id) {
                cudaStream_t s;
                cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
                float *in = dev_floats(B * N), *out = dev_floats(B);
                std::vector<float> h(B * N);
                for (int r = 0; r < reps; r++) {
                        for (int i = 0; i < B * N; i++)
                                h[i] = (float)(id * 1000 + r + i % 3);
                        cudaMemcpyAsync(in, h.data(), h.size() * 4, cudaMemcpyHostToDevice, s);
                        block_sum_kernel<<<B, N, 0, s>>>(in, out);
                        float got[B];
                        cudaMemcpyAsync(got, out, sizeof(got), cudaMemcpyDeviceToHost, s);
                        for (int b = 0; b < B; b++) {
                                float want = 0;
                                for (int t = 0; t < N; t++)
                                        want += h[b * N + t];
                                bad[id] += got[b] != want;
                        }
                }
                cudaFree(in);
                cudaFree(out);
                cudaStreamDestroy(s);
                emu::shutdown();
        };
        std::thread t0(worker, 0), t1(worker, 1);
        t0.join();
        t1.join();
        ECHECK(bad[0] == 0 && bad[1] == 0, "two host threads: %d and %d wrong sums", bad[0], bad[1]);
}

/* ------------------------------------------------------------------ faults (children) */
static void test_faults() {
        int st = in_child([] {
                float *d = dev_floats(16);
                volatile float v = d[3]; /* host code reading device memory */
                (void)v;
        });
        ECHECK(!(WIFEXITED(st) && WEXITSTATUS(st) == 0), "host read of device memory did not fault (status %d)", st);
        printf("  host read of device memory: %s %d\n", WIFSIGNALED(st) ? "signal" : "exit", WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));

        st = in_child([] {
                std::vector<float> host(64);
                fill_kernel<<<1, 32>>>(host.data(), 64, 0.0f); /* a host pointer where a device pointer belongs */
                cudaError_t e = cudaDeviceSynchronize();
                if (e != cudaErrorIllegalAddress)
                        _exit(2);
                if (!strstr(cudaGetErrorString(e), "fill_kernel, argument 1"))
                        _exit(3);
                void *p;
                if (cudaMalloc(&p, 16) != cudaErrorIllegalAddress || cudaGetLastError() != cudaErrorIllegalAddress)
                        _exit(4); /* sticky */
                _exit(0);
        });
        ECHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "host pointer to a kernel: status %d", st);

        st = in_child([] {
                float *d = dev_floats(16);
                OK(cudaFreeAsync(d, 0));
                fill_kernel<<<1, 32>>>(d, 16, 0.0f); /* use after a stream-ordered free */
                _exit(cudaDeviceSynchronize() == cudaErrorIllegalAddress ? 0 : 2);
        });
        ECHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "use after cudaFreeAsync: status %d", st);
}

int main() {
        test_streams();
        test_graphs();
        test_errors();
        test_collectives();
        test_blas();
        test_threads();
        test_faults();
        emu::shutdown();
        if (failures) {
                fprintf(stderr, "test-emu-runtime: %d of %d checks failed\n", failures, checks);
                return 1;
        }
        printf("test-emu-runtime: all %d checks passed\n", checks);
        return 0;
}
