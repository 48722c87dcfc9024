/* cuBLASLt as the CPU emulation of CUDA provides it (implementation: blas.cc). Descriptors
 * keep their attributes; cublasLtMatmulAlgoGetHeuristic offers an algorithm only for what the
 * emulator models exactly (fp32 or bf16 A/B, fp32 or bf16 C/D, fp32 compute, no scale modes,
 * no epilogue, batch 1) and reports CUBLAS_STATUS_NOT_SUPPORTED with no algorithm for the
 * rest, FP8 with block scales in particular: the plugin then runs its own kernel, as on a
 * device whose cuBLASLt lacks the algorithm. Names and values follow CUDA 13's cublasLt.h. */
#pragma once

#include "tests/gpu/emu/cublas_v2.h"

typedef struct emu_lt *cublasLtHandle_t;
typedef struct emu_lt_desc *cublasLtMatmulDesc_t;
typedef struct emu_lt_layout *cublasLtMatrixLayout_t;
typedef struct emu_lt_pref *cublasLtMatmulPreference_t;

typedef struct {
        uint64_t data[8];
} cublasLtMatmulAlgo_t;

typedef struct {
        cublasLtMatmulAlgo_t algo;
        size_t workspaceSize;
        cublasStatus_t state;
        float wavesCount;
        int reserved[4];
} cublasLtMatmulHeuristicResult_t;

typedef enum {
        CUBLASLT_MATMUL_DESC_COMPUTE_TYPE = 0,
        CUBLASLT_MATMUL_DESC_SCALE_TYPE = 1,
        CUBLASLT_MATMUL_DESC_POINTER_MODE = 2,
        CUBLASLT_MATMUL_DESC_TRANSA = 3,
        CUBLASLT_MATMUL_DESC_TRANSB = 4,
        CUBLASLT_MATMUL_DESC_TRANSC = 5,
        CUBLASLT_MATMUL_DESC_FILL_MODE = 6,
        CUBLASLT_MATMUL_DESC_EPILOGUE = 7,
        CUBLASLT_MATMUL_DESC_BIAS_POINTER = 8,
        CUBLASLT_MATMUL_DESC_A_SCALE_POINTER = 17,
        CUBLASLT_MATMUL_DESC_B_SCALE_POINTER = 18,
        CUBLASLT_MATMUL_DESC_C_SCALE_POINTER = 19,
        CUBLASLT_MATMUL_DESC_D_SCALE_POINTER = 20,
        CUBLASLT_MATMUL_DESC_FAST_ACCUM = 25,
        CUBLASLT_MATMUL_DESC_A_SCALE_MODE = 31,
        CUBLASLT_MATMUL_DESC_B_SCALE_MODE = 32,
        CUBLASLT_MATMUL_DESC_C_SCALE_MODE = 33,
        CUBLASLT_MATMUL_DESC_D_SCALE_MODE = 34,
} cublasLtMatmulDescAttributes_t;

typedef enum {
        CUBLASLT_MATMUL_MATRIX_SCALE_SCALAR_32F = 0,
        CUBLASLT_MATMUL_MATRIX_SCALE_VEC16_UE4M3 = 1,
        CUBLASLT_MATMUL_MATRIX_SCALE_VEC32_UE8M0 = 2,
        CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F = 3,
        CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F = 4,
        CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F = 5,
        CUBLASLT_MATMUL_MATRIX_SCALE_END
} cublasLtMatmulMatrixScale_t;

typedef enum {
        CUBLASLT_MATRIX_LAYOUT_TYPE = 0,
        CUBLASLT_MATRIX_LAYOUT_ORDER = 1,
        CUBLASLT_MATRIX_LAYOUT_ROWS = 2,
        CUBLASLT_MATRIX_LAYOUT_COLS = 3,
        CUBLASLT_MATRIX_LAYOUT_LD = 4,
        CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT = 5,
        CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET = 6,
        CUBLASLT_MATRIX_LAYOUT_PLANE_OFFSET = 7,
        CUBLASLT_MATRIX_LAYOUT_BATCH_MODE = 8,
} cublasLtMatrixLayoutAttribute_t;

typedef enum { CUBLASLT_BATCH_MODE_STRIDED = 0, CUBLASLT_BATCH_MODE_POINTER_ARRAY = 1 } cublasLtBatchMode_t;
typedef enum { CUBLASLT_ORDER_COL = 0, CUBLASLT_ORDER_ROW = 1 } cublasLtOrder_t;

typedef enum {
        CUBLASLT_MATMUL_PREF_SEARCH_MODE = 0,
        CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES = 1,
} cublasLtMatmulPreferenceAttributes_t;

cublasStatus_t cublasLtCreate(cublasLtHandle_t *h);
cublasStatus_t cublasLtDestroy(cublasLtHandle_t h);
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t compute, cudaDataType_t scale);
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d);
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr, const void *buf, size_t n);
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType type, uint64_t rows, uint64_t cols, int64_t ld);
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l);
cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t l, cublasLtMatrixLayoutAttribute_t attr, const void *buf,
                                                size_t n);
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p);
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p);
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p, cublasLtMatmulPreferenceAttributes_t attr,
                                                    const void *buf, size_t n);
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t h, cublasLtMatmulDesc_t op, cublasLtMatrixLayout_t a,
                                              cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                              cublasLtMatmulPreference_t pref, int requested, cublasLtMatmulHeuristicResult_t *res,
                                              int *returned);
cublasStatus_t cublasLtMatmul(cublasLtHandle_t h, cublasLtMatmulDesc_t op, const void *alpha, const void *A, cublasLtMatrixLayout_t a,
                              const void *B, cublasLtMatrixLayout_t b, const void *beta, const void *C, cublasLtMatrixLayout_t c,
                              void *D, cublasLtMatrixLayout_t d, const cublasLtMatmulAlgo_t *algo, void *ws, size_t ws_bytes,
                              cudaStream_t s);
