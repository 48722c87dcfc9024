/* cuBLAS and cuBLASLt emulated on the CPU (headers: cublas_v2.h, cublasLt.h).
 *
 * What is emulated is what can be modelled exactly: column-major GEMMs
 *   C = alpha * op(A) op(B) + beta * C      (C not read when beta == 0, as in cuBLAS)
 * with fp32 or bf16 inputs, fp32 or bf16 output, accumulated in fp32 in ascending k with
 * fused multiply-adds (a real cuBLAS may split k: results agree to fp32 rounding, not bit
 * for bit). Everything else (FP8, block scales, epilogues, batched Lt layouts) reports
 * CUBLAS_STATUS_NOT_SUPPORTED, the answer of a library without that algorithm, so the
 * plugin's own fallback kernel runs. Each call is checked when made (shapes, leading
 * dimensions) and when it runs on its stream (every matrix inside one device allocation,
 * else the device's error becomes sticky: cudaErrorIllegalAddress). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <string>

#include "tests/gpu/emu/cublasLt.h"
#include "tests/gpu/emu/emu_runtime.h"

struct emu_cublas {
        cudaStream_t stream = 0;
};

namespace {

size_t dtype_size(cudaDataType_t t) {
        switch (t) {
        case CUDA_R_32F:
                return 4;
        case CUDA_R_16BF:
        case CUDA_R_16F:
                return 2;
        case CUDA_R_8F_E4M3:
        case CUDA_R_8F_E5M2:
        case CUDA_R_8I:
                return 1;
        default:
                return 0;
        }
}

inline float bf16_to_f32(uint16_t h) {
        uint32_t u = (uint32_t)h << 16;
        float f;
        memcpy(&f, &u, 4);
        return f;
}

inline uint16_t f32_to_bf16(float f) {
        uint32_t u;
        memcpy(&u, &f, 4);
        if ((u & 0x7fffffffu) > 0x7f800000u)
                return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
        u += 0x7fffu + ((u >> 16) & 1u);
        return (uint16_t)(u >> 16);
}

inline float load(const void *p, cudaDataType_t t, int64_t i) {
        return t == CUDA_R_16BF ? bf16_to_f32(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

inline void store(void *p, cudaDataType_t t, int64_t i, float v) {
        if (t == CUDA_R_16BF)
                ((uint16_t *)p)[i] = f32_to_bf16(v);
        else
                ((float *)p)[i] = v;
}

/* One GEMM (column-major). */
struct gemm {
        bool ta, tb;
        int64_t m, n, k;
        float alpha, beta;
        const void *A, *B;
        const void *C; /* read when beta != 0 */
        void *D;
        cudaDataType_t at, bt, ct, dt;
        int64_t lda, ldb, ldc, ldd;
};

/* bytes from a matrix's first element to one past its last */
size_t extent(int64_t rows, int64_t cols, int64_t ld, size_t es) {
        if (rows <= 0 || cols <= 0)
                return 0;
        return (size_t)((cols - 1) * ld + rows) * es;
}

bool shape_ok(const gemm &g) {
        const int64_t ar = g.ta ? g.k : g.m, br = g.tb ? g.n : g.k;
        return g.m >= 0 && g.n >= 0 && g.k >= 0 && g.lda >= (ar > 1 ? ar : 1) && g.ldb >= (br > 1 ? br : 1) &&
               g.ldd >= (g.m > 1 ? g.m : 1) && (g.beta == 0.0f || g.ldc >= (g.m > 1 ? g.m : 1)) && dtype_size(g.at) &&
               dtype_size(g.bt) && dtype_size(g.dt);
}

bool access_ok(const gemm &g, const char *what) {
        char buf[160];
        const int64_t ar = g.ta ? g.k : g.m, ac = g.ta ? g.m : g.k, br = g.tb ? g.n : g.k, bc = g.tb ? g.k : g.n;
        snprintf(buf, sizeof(buf), "%s, matrix A", what);
        if (g.m && g.n && g.k && !emu::check_access(g.A, extent(ar, ac, g.lda, dtype_size(g.at)), false, buf))
                return false;
        snprintf(buf, sizeof(buf), "%s, matrix B", what);
        if (g.m && g.n && g.k && !emu::check_access(g.B, extent(br, bc, g.ldb, dtype_size(g.bt)), false, buf))
                return false;
        snprintf(buf, sizeof(buf), "%s, matrix C", what);
        if (g.beta != 0.0f && !emu::check_access(g.C, extent(g.m, g.n, g.ldc, dtype_size(g.ct)), false, buf))
                return false;
        snprintf(buf, sizeof(buf), "%s, matrix D", what);
        return emu::check_access(g.D, extent(g.m, g.n, g.ldd, dtype_size(g.dt)), false, buf);
}

void run(const gemm &g) {
        for (int64_t j = 0; j < g.n; j++)
                for (int64_t i = 0; i < g.m; i++) {
                        float acc = 0.0f;
                        for (int64_t l = 0; l < g.k; l++) {
                                const float a = load(g.A, g.at, g.ta ? l + i * g.lda : i + l * g.lda);
                                const float b = load(g.B, g.bt, g.tb ? j + l * g.ldb : l + j * g.ldb);
                                acc = fmaf(a, b, acc);
                        }
                        float v = g.alpha * acc;
                        if (g.beta != 0.0f)
                                v = fmaf(g.beta, load(g.C, g.ct, i + j * g.ldc), v);
                        store(g.D, g.dt, i + j * g.ldd, v);
                }
}

/* Queues batch GEMMs, batch b offset by the strides (elements). */
cublasStatus_t submit(cublasHandle_t h, const char *what, gemm g, int batch, long long sa, long long sb, long long sc) {
        if (!h)
                return CUBLAS_STATUS_NOT_INITIALIZED;
        if (!shape_ok(g) || batch < 0)
                return CUBLAS_STATUS_INVALID_VALUE;
        if (g.m == 0 || g.n == 0 || batch == 0)
                return CUBLAS_STATUS_SUCCESS;
        cudaError_t e = emu::enqueue_op(h->stream, what, [g, batch, sa, sb, sc, what] {
                for (int b = 0; b < batch; b++) {
                        gemm x = g;
                        x.A = (const char *)g.A + (size_t)(b * sa) * dtype_size(g.at);
                        x.B = (const char *)g.B + (size_t)(b * sb) * dtype_size(g.bt);
                        x.C = (const char *)g.C + (size_t)(b * sc) * dtype_size(g.ct);
                        x.D = (char *)g.D + (size_t)(b * sc) * dtype_size(g.dt);
                        if (!access_ok(x, what))
                                return;
                        run(x);
                }
        });
        return e == cudaSuccess ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}

bool types_ok(cudaDataType_t t) { return t == CUDA_R_32F || t == CUDA_R_16BF; }
bool compute_ok(cublasComputeType_t c) { return c == CUBLAS_COMPUTE_32F || c == CUBLAS_COMPUTE_32F_PEDANTIC; }

} // namespace

/* ------------------------------------------------------------------ cuBLAS */
cublasStatus_t cublasCreate(cublasHandle_t *h) {
        if (!h)
                return CUBLAS_STATUS_INVALID_VALUE;
        if (emu::sticky() != cudaSuccess)
                return CUBLAS_STATUS_NOT_INITIALIZED;
        *h = new emu_cublas();
        return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t h) {
        delete h;
        return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s) {
        if (!h)
                return CUBLAS_STATUS_NOT_INITIALIZED;
        h->stream = s;
        return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetWorkspace(cublasHandle_t h, void *workspace, size_t bytes) {
        if (!h)
                return CUBLAS_STATUS_NOT_INITIALIZED;
        cudaPointerAttributes a;
        if (bytes && (cudaPointerGetAttributes(&a, workspace) != cudaSuccess || a.type != cudaMemoryTypeDevice)) {
                cudaGetLastError();
                return CUBLAS_STATUS_INVALID_VALUE;
        }
        return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetStream(cublasHandle_t h, cudaStream_t *s) {
        if (!h)
                return CUBLAS_STATUS_NOT_INITIALIZED;
        *s = h->stream;
        return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t) { return h ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_INITIALIZED; }

cublasStatus_t cublasSetPointerMode(cublasHandle_t h, cublasPointerMode_t mode) {
        if (!h)
                return CUBLAS_STATUS_NOT_INITIALIZED;
        return mode == CUBLAS_POINTER_MODE_HOST ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_SUPPORTED;
}

const char *cublasGetStatusName(cublasStatus_t s) {
        switch (s) {
        case CUBLAS_STATUS_SUCCESS:
                return "CUBLAS_STATUS_SUCCESS";
        case CUBLAS_STATUS_NOT_INITIALIZED:
                return "CUBLAS_STATUS_NOT_INITIALIZED";
        case CUBLAS_STATUS_ALLOC_FAILED:
                return "CUBLAS_STATUS_ALLOC_FAILED";
        case CUBLAS_STATUS_INVALID_VALUE:
                return "CUBLAS_STATUS_INVALID_VALUE";
        case CUBLAS_STATUS_ARCH_MISMATCH:
                return "CUBLAS_STATUS_ARCH_MISMATCH";
        case CUBLAS_STATUS_MAPPING_ERROR:
                return "CUBLAS_STATUS_MAPPING_ERROR";
        case CUBLAS_STATUS_EXECUTION_FAILED:
                return "CUBLAS_STATUS_EXECUTION_FAILED";
        case CUBLAS_STATUS_INTERNAL_ERROR:
                return "CUBLAS_STATUS_INTERNAL_ERROR";
        case CUBLAS_STATUS_NOT_SUPPORTED:
                return "CUBLAS_STATUS_NOT_SUPPORTED";
        case CUBLAS_STATUS_LICENSE_ERROR:
                return "CUBLAS_STATUS_LICENSE_ERROR";
        }
        return "CUBLAS_STATUS_UNKNOWN";
}

const char *cublasGetStatusString(cublasStatus_t s) {
        switch (s) {
        case CUBLAS_STATUS_SUCCESS:
                return "success";
        case CUBLAS_STATUS_NOT_INITIALIZED:
                return "the library was not initialized";
        case CUBLAS_STATUS_ALLOC_FAILED:
                return "the resource allocation failed";
        case CUBLAS_STATUS_INVALID_VALUE:
                return "an invalid numeric value was used as an argument";
        case CUBLAS_STATUS_NOT_SUPPORTED:
                return "the requested functionality is not supported (CPU emulation)";
        case CUBLAS_STATUS_EXECUTION_FAILED:
                return "the GPU program failed to execute";
        default:
                return cublasGetStatusName(s);
        }
}

cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const float *alpha,
                           const float *A, int lda, const float *B, int ldb, const float *beta, float *C, int ldc) {
        return cublasSgemmStridedBatched(h, ta, tb, m, n, k, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
}

cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                         const float *alpha, const float *A, int lda, long long sa, const float *B, int ldb,
                                         long long sb, const float *beta, float *C, int ldc, long long sc, int batch) {
        return cublasGemmStridedBatchedEx(h, ta, tb, m, n, k, alpha, A, CUDA_R_32F, lda, sa, B, CUDA_R_32F, ldb, sb, beta, C, CUDA_R_32F,
                                          ldc, sc, batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
}

cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const void *alpha,
                            const void *A, cudaDataType_t at, int lda, const void *B, cudaDataType_t bt, int ldb, const void *beta,
                            void *C, cudaDataType_t ct, int ldc, cublasComputeType_t compute, cublasGemmAlgo_t algo) {
        return cublasGemmStridedBatchedEx(h, ta, tb, m, n, k, alpha, A, at, lda, 0, B, bt, ldb, 0, beta, C, ct, ldc, 0, 1, compute, algo);
}

cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                          const void *alpha, const void *A, cudaDataType_t at, int lda, long long sa, const void *B,
                                          cudaDataType_t bt, int ldb, long long sb, const void *beta, void *C, cudaDataType_t ct,
                                          int ldc, long long sc, int batch, cublasComputeType_t compute, cublasGemmAlgo_t) {
        if (!alpha || !beta || (ta != CUBLAS_OP_N && ta != CUBLAS_OP_T) || (tb != CUBLAS_OP_N && tb != CUBLAS_OP_T))
                return CUBLAS_STATUS_INVALID_VALUE;
        if (!types_ok(at) || !types_ok(bt) || !types_ok(ct) || !compute_ok(compute) || (at != bt))
                return CUBLAS_STATUS_NOT_SUPPORTED;
        gemm g;
        g.ta = ta == CUBLAS_OP_T;
        g.tb = tb == CUBLAS_OP_T;
        g.m = m;
        g.n = n;
        g.k = k;
        g.alpha = *(const float *)alpha; /* host pointer mode: read at the call */
        g.beta = *(const float *)beta;
        g.A = A;
        g.B = B;
        g.C = C;
        g.D = C;
        g.at = at;
        g.bt = bt;
        g.ct = g.dt = ct;
        g.lda = lda;
        g.ldb = ldb;
        g.ldc = g.ldd = ldc;
        return submit(h, batch == 1 ? "cublasGemmEx" : "cublasGemmStridedBatchedEx", g, batch, sa, sb, sc);
}

/* ------------------------------------------------------------------ cuBLASLt */
struct emu_lt {};
struct emu_lt_desc {
        cublasComputeType_t compute;
        cudaDataType_t scale;
        int32_t transa = CUBLAS_OP_N, transb = CUBLAS_OP_N;
        uint32_t epilogue = 1; /* CUBLASLT_EPILOGUE_DEFAULT */
        bool scales = false;   /* any scale pointer or non-scalar scale mode */
        bool other = false;    /* an attribute the emulator does not model */
};
struct emu_lt_layout {
        cudaDataType type;
        uint64_t rows, cols;
        int64_t ld;
        int32_t order = CUBLASLT_ORDER_COL;
        int32_t batch = 1;
};
struct emu_lt_pref {};

cublasStatus_t cublasLtCreate(cublasLtHandle_t *h) {
        if (!h)
                return CUBLAS_STATUS_INVALID_VALUE;
        *h = new emu_lt();
        return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtDestroy(cublasLtHandle_t h) {
        delete h;
        return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t compute, cudaDataType_t scale) {
        if (!d)
                return CUBLAS_STATUS_INVALID_VALUE;
        *d = new emu_lt_desc();
        (*d)->compute = compute;
        (*d)->scale = scale;
        return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) {
        delete d;
        return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr, const void *buf, size_t n) {
        if (!d || !buf)
                return CUBLAS_STATUS_INVALID_VALUE;
        int32_t v32 = 0;
        if (n >= 4)
                memcpy(&v32, buf, 4);
        switch (attr) {
        case CUBLASLT_MATMUL_DESC_TRANSA:
                d->transa = v32;
                break;
        case CUBLASLT_MATMUL_DESC_TRANSB:
                d->transb = v32;
                break;
        case CUBLASLT_MATMUL_DESC_EPILOGUE:
                d->epilogue = (uint32_t)v32;
                break;
        case CUBLASLT_MATMUL_DESC_A_SCALE_MODE:
        case CUBLASLT_MATMUL_DESC_B_SCALE_MODE:
        case CUBLASLT_MATMUL_DESC_C_SCALE_MODE:
        case CUBLASLT_MATMUL_DESC_D_SCALE_MODE:
                d->scales |= v32 != CUBLASLT_MATMUL_MATRIX_SCALE_SCALAR_32F;
                break;
        case CUBLASLT_MATMUL_DESC_A_SCALE_POINTER:
        case CUBLASLT_MATMUL_DESC_B_SCALE_POINTER:
        case CUBLASLT_MATMUL_DESC_C_SCALE_POINTER:
        case CUBLASLT_MATMUL_DESC_D_SCALE_POINTER: {
                const void *p = nullptr;
                if (n == sizeof(p))
                        memcpy(&p, buf, sizeof(p));
                d->scales |= p != nullptr;
                break;
        }
        case CUBLASLT_MATMUL_DESC_COMPUTE_TYPE:
                d->compute = (cublasComputeType_t)v32;
                break;
        case CUBLASLT_MATMUL_DESC_SCALE_TYPE:
                d->scale = (cudaDataType_t)v32;
                break;
        case CUBLASLT_MATMUL_DESC_POINTER_MODE:
                d->other |= v32 != 0;
                break;
        default:
                d->other = true;
        }
        return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType type, uint64_t rows, uint64_t cols, int64_t ld) {
        if (!l)
                return CUBLAS_STATUS_INVALID_VALUE;
        *l = new emu_lt_layout();
        (*l)->type = type;
        (*l)->rows = rows;
        (*l)->cols = cols;
        (*l)->ld = ld;
        return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) {
        delete l;
        return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t l, cublasLtMatrixLayoutAttribute_t attr, const void *buf,
                                                size_t n) {
        if (!l || !buf)
                return CUBLAS_STATUS_INVALID_VALUE;
        int64_t v = 0;
        memcpy(&v, buf, n < sizeof(v) ? n : sizeof(v));
        switch (attr) {
        case CUBLASLT_MATRIX_LAYOUT_ORDER:
                l->order = (int32_t)v;
                break;
        case CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT:
                l->batch = (int32_t)v;
                break;
        case CUBLASLT_MATRIX_LAYOUT_BATCH_MODE:
                l->batch = v ? -1 : l->batch; /* pointer arrays: not modelled */
                break;
        default:
                break;
        }
        return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p) {
        if (!p)
                return CUBLAS_STATUS_INVALID_VALUE;
        *p = new emu_lt_pref();
        return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) {
        delete p;
        return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p, cublasLtMatmulPreferenceAttributes_t, const void *buf,
                                                    size_t) {
        return p && buf ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
}

namespace {
/* whether the emulator models this matmul exactly */
bool lt_modelled(const emu_lt_desc *op, const emu_lt_layout *a, const emu_lt_layout *b, const emu_lt_layout *c, const emu_lt_layout *d) {
        for (const emu_lt_layout *l : {a, b, c, d})
                if (l->order != CUBLASLT_ORDER_COL || l->batch != 1 || !types_ok(l->type))
                        return false;
        return compute_ok(op->compute) && op->scale == CUDA_R_32F && !op->scales && !op->other && (op->epilogue == 0 || op->epilogue == 1) &&
               (op->transa == CUBLAS_OP_N || op->transa == CUBLAS_OP_T) && (op->transb == CUBLAS_OP_N || op->transb == CUBLAS_OP_T) &&
               a->type == b->type && c->type == d->type;
}
} // namespace

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t h, cublasLtMatmulDesc_t op, cublasLtMatrixLayout_t a,
                                              cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                              cublasLtMatmulPreference_t pref, int requested, cublasLtMatmulHeuristicResult_t *res,
                                              int *returned) {
        if (!h || !op || !a || !b || !c || !d || !res || !returned || requested < 1)
                return CUBLAS_STATUS_INVALID_VALUE;
        *returned = 0;
        if (!lt_modelled(op, a, b, c, d))
                return CUBLAS_STATUS_NOT_SUPPORTED;
        memset(&res[0], 0, sizeof(res[0]));
        res[0].algo.data[0] = 0x656d75; /* "emu" */
        res[0].state = CUBLAS_STATUS_SUCCESS;
        res[0].wavesCount = 1.0f;
        *returned = 1;
        return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t h, cublasLtMatmulDesc_t op, const void *alpha, const void *A, cublasLtMatrixLayout_t a,
                              const void *B, cublasLtMatrixLayout_t b, const void *beta, const void *C, cublasLtMatrixLayout_t c,
                              void *D, cublasLtMatrixLayout_t d, const cublasLtMatmulAlgo_t *algo, void *, size_t, cudaStream_t s) {
        if (!h || !op || !a || !b || !c || !d || !alpha || !beta)
                return CUBLAS_STATUS_INVALID_VALUE;
        if (!lt_modelled(op, a, b, c, d))
                return CUBLAS_STATUS_NOT_SUPPORTED;
        gemm g;
        g.ta = op->transa == CUBLAS_OP_T;
        g.tb = op->transb == CUBLAS_OP_T;
        g.m = (int64_t)d->rows;
        g.n = (int64_t)d->cols;
        g.k = (int64_t)(g.ta ? a->rows : a->cols);
        if ((int64_t)(g.ta ? a->cols : a->rows) != g.m || (int64_t)(g.tb ? b->rows : b->cols) != g.n ||
            (int64_t)(g.tb ? b->cols : b->rows) != g.k || c->rows != d->rows || c->cols != d->cols)
                return CUBLAS_STATUS_INVALID_VALUE;
        g.alpha = *(const float *)alpha;
        g.beta = *(const float *)beta;
        g.A = A;
        g.B = B;
        g.C = C;
        g.D = D;
        g.at = a->type;
        g.bt = b->type;
        g.ct = c->type;
        g.dt = d->type;
        g.lda = a->ld;
        g.ldb = b->ld;
        g.ldc = c->ld;
        g.ldd = d->ld;
        emu_cublas fake;
        fake.stream = s;
        return submit(&fake, "cublasLtMatmul", g, 1, 0, 0, 0);
}
