/* Shared by the CUDA backend's translation units: the backend context, the checking macros
 * (one per library: CUDA runtime, cuBLAS/cuBLASLt) that record the failing statement, file
 * and line and return -errno, the device error word, scratch memory, and the launchers of
 * each op family (kernels/cuda/<family>.cu).
 *
 * Conventions: activations are F32 rows with a byte stride, as on the CPU backend; faithful
 * numerics round to bf16 where the CPU reference does. Every launcher enqueues on the
 * backend's one stream and returns without synchronizing; errors a kernel can only see on
 * the device (an embedding id out of range, a negative KV slot) set a bit in the error word,
 * which synchronize() and download() report as -EINVAL. */
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <errno.h>
#include <stdint.h>

extern "C" {
#include "kernels/backend.h"
}
#include "kernels/cuda/plan.h"

#define DCU_DEV static __device__ __forceinline__

/* ------------------------------------------------------------------ errors */
/* The last failure of this thread, "statement failed at file:line: reason". */
const char *dcu_last_error(void);
int dcu_fail_cuda(cudaError_t e, const char *stmt, const char *file, int line);
int dcu_fail_cublas(cublasStatus_t s, const char *stmt, const char *file, int line);
int dcu_fail(int err, const char *file, int line, const char *what);
/* An allocation of bytes (kind: "scratch", "device memory", ...) that failed with e. */
int dcu_fail_alloc(cudaError_t e, size_t bytes, const char *kind, const char *call, const char *file, int line);

#define DCU_CUDA(stmt)                                                            \
        do {                                                                      \
                cudaError_t e_ = (stmt);                                          \
                if (e_ != cudaSuccess)                                            \
                        return dcu_fail_cuda(e_, #stmt, __FILE__, __LINE__);      \
        } while (0)
#define DCU_CUBLAS(stmt)                                                          \
        do {                                                                      \
                cublasStatus_t s_ = (stmt);                                       \
                if (s_ != CUBLAS_STATUS_SUCCESS)                                  \
                        return dcu_fail_cublas(s_, #stmt, __FILE__, __LINE__);    \
        } while (0)
/* An allocation of bytes of kind ("scratch", ...): a failure names both. */
#define DCU_ALLOC(stmt, bytes, kind)                                                      \
        do {                                                                              \
                cudaError_t e_ = (stmt);                                                  \
                if (e_ != cudaSuccess)                                                    \
                        return dcu_fail_alloc(e_, (bytes), kind, #stmt, __FILE__, __LINE__); \
        } while (0)
/* After a kernel launch: configuration errors show up here. */
#define DCU_LAUNCHED() DCU_CUDA(cudaGetLastError())
/* Propagate an int result. */
#define DCU_TRY(expr)                     \
        do {                              \
                int r_ = (expr);          \
                if (r_ < 0)               \
                        return r_;        \
        } while (0)

/* Bits of the device error word: plan.h (DCU_ERR_INDEX). */

/* ------------------------------------------------------------------ context */
enum dcu_fp8_path {
        DCU_FP8_AUTO,     /* gemv for few tokens, cuBLASLt when its self-check passed, else tiled */
        DCU_FP8_TILED,    /* our tiled kernel always */
        DCU_FP8_GEMV,     /* our weight-streaming kernel whenever the shape allows */
        DCU_FP8_CUBLASLT, /* cuBLASLt whenever it takes the shape */
        DCU_FP8_PATH_MAX,
};

struct dcu_lt_algo {
        int64_t n, k, m, ldw, ldd;
        int dtype_d; /* cudaDataType of D */
        int ok;
        cublasLtMatmulAlgo_t algo;
};
#define DCU_LT_CACHE 32

struct dcu_ctx {
        int device;
        cudaStream_t stream;
        cudaStream_t copy_stream; /* upload_async: weight streaming beside the compute stream */
        cudaEvent_t copy_after;   /* orders copy_stream after the work queued on stream */
        cublasHandle_t blas;
        cublasLtHandle_t lt;
        void *lt_ws;
        size_t lt_ws_bytes;
        unsigned *err_word; /* device */
        int n_sm;
        size_t smem_optin;
        int fp8_path;
        int gemv_max_tokens;
        bool lt_fp8_ok;       /* cuBLASLt block-scaled FP8 passed the start-up self-check */
        char lt_fp8_note[192]; /* why not, or which output type */
        int lt_fp8_dtype;     /* CUDA_R_32F or CUDA_R_16BF for D */
        struct dcu_lt_algo lt_cache[DCU_LT_CACHE];
        int lt_cache_next;
        int64_t scratch_limit; /* bytes one op may take for its intermediates */
        int moe_max_tokens;    /* tokens' rows (x k) per grouped MoE launch at most (0: as the scratch limit allows) */
        char moe_note[160];    /* the MoE path, for describe() */
        void *blas_ws;   /* cuBLAS's fixed workspace: a captured GEMM must not allocate one */
        size_t blas_ws_bytes;
        bool capturing;  /* between graph_begin and graph_end: the stream records, nothing may wait */
        bool download_pending; /* a download_async since the error word was last read */
};

static inline struct dcu_ctx *dcu_ctx_of(struct dsv_backend *be) { return (struct dcu_ctx *)be->ctx; }

/* Stream-ordered scratch memory (the device's default pool, kept cached). */
int dcu_scratch(struct dcu_ctx *c, size_t bytes, void **ret);
void dcu_scratch_free(struct dcu_ctx *c, void *p);

/* ------------------------------------------------------------------ tensor access */
static inline int64_t dcu_ld(const struct dsv_tensor *t) { return (int64_t)(t->stride / dsv_dtype_size(t->type)); }
static inline int64_t dcu_rows(const struct dsv_tensor *t) { return t->ne[1]; }
static inline int64_t dcu_cols(const struct dsv_tensor *t) { return t->ne[0]; }
/* The kv struct the kernels take by value. */
struct dcu_kv dcu_kv_of(const struct dsv_kv_ref *r);

/* Grid x for a row-per-block launch (rows may exceed 2^31 - 1 only in theory). */
static inline unsigned dcu_grid(int64_t n) { return (unsigned)(n > 0 ? n : 1); }

/* ------------------------------------------------------------------ op launchers */
int dcu_embed(struct dcu_ctx *c, const struct dsv_op_embed *p);
int dcu_get_rows(struct dcu_ctx *c, const struct dsv_op_get_rows *p);
int dcu_dequant(struct dcu_ctx *c, const struct dsv_op_dequant *p);
int dcu_fill_random(struct dcu_ctx *c, const struct dsv_op_fill_random *p);
bool dcu_sample_ok(const struct dsv_op_sample *p);
int dcu_sample(struct dcu_ctx *c, const struct dsv_op_sample *p);
int dcu_swiglu(struct dcu_ctx *c, const struct dsv_op_swiglu *p, bool faithful);
int dcu_add(struct dcu_ctx *c, const struct dsv_op_add *p, bool faithful);
int dcu_rope(struct dcu_ctx *c, const struct dsv_op_rope *p, bool faithful);
int dcu_hadamard(struct dcu_ctx *c, const struct dsv_op_hadamard *p, bool faithful);
int dcu_rmsnorm(struct dcu_ctx *c, const struct dsv_op_rmsnorm *p, bool faithful);
int dcu_layernorm(struct dcu_ctx *c, const struct dsv_op_layernorm *p, bool faithful);
int dcu_act_quant(struct dcu_ctx *c, const struct dsv_op_act_quant *p);
int dcu_linear(struct dcu_ctx *c, const struct dsv_op_linear *p);
int dcu_kv_store(struct dcu_ctx *c, const struct dsv_op_kv_store *p);
int dcu_kv_gather(struct dcu_ctx *c, const struct dsv_op_kv_gather *p);
int dcu_indexer_topk(struct dcu_ctx *c, const struct dsv_op_indexer_topk *p);
int dcu_mla_decode(struct dcu_ctx *c, const struct dsv_op_mla_decode *p);
int dcu_mla_prefill(struct dcu_ctx *c, const struct dsv_op_mla_prefill *p);
int dcu_moe_gate(struct dcu_ctx *c, const struct dsv_op_moe_gate *p);
/* MOE_DISPATCH, MOE_GROUPED and MOE_COMBINE (op->type says which). */
int dcu_moe_split(struct dcu_ctx *c, const struct dsv_op *op);
/* Shapes the MoE launchers take (supports_op). */
bool dcu_moe_gate_ok(const struct dsv_op_moe_gate *p);
bool dcu_moe_split_ok(const struct dsv_op *op);
/* Start-up probe of cuBLASLt for batched block-scaled FP8 (moe.cu): sets moe_note. */
int dcu_moe_init(struct dcu_ctx *c);

/* Building blocks used by several families (elementwise.cu, norm.cu). */
/* x[r][0..cols) := bf16(x[r][..]) for r < rows. */
int dcu_round_rows(struct dcu_ctx *c, float *x, int64_t ld, int64_t rows, int64_t cols);
/* dst[r] = src[r] (cols floats, optionally bf16-rounded). */
int dcu_copy_rows(struct dcu_ctx *c, float *dst, int64_t ldd, const float *src, int64_t lds, int64_t rows, int64_t cols,
                  bool round);
/* act_quant of rows x cols floats: codes q[r*ldq + k], scales s[r*s_rs + b*s_cs]. */
int dcu_quant_rows(struct dcu_ctx *c, const float *x, int64_t ldx, int64_t rows, int64_t cols, uint8_t *q, int64_t ldq,
                   float *s, int64_t s_rs, int64_t s_cs);

/* FP8 linear self-check at start-up (linear.cu): sets c->lt_fp8_ok / lt_fp8_note. */
int dcu_linear_init(struct dcu_ctx *c);
