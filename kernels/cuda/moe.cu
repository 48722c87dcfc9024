/* Mixture of experts on the GPU: DSV_OP_MOE_GATE, DSV_OP_MOE_DISPATCH, DSV_OP_MOE_GROUPED and
 * DSV_OP_MOE_COMBINE (kernels in moe.cuh, the CPU reference in kernels/cpu/moe.c).
 *
 * Gate: logits = x W^T through the linear op (bf16 weights: the exact three-plane cuBLAS
 * product), then one warp per token routes (sigmoid, correction bias, group-limited top-k,
 * normalised weights times route_scale) exactly as the CPU does.
 *
 * Dispatch: per expert its count (one block per expert), the offsets (one block), then the
 *   permutation (one block per expert again), all on the device.
 * Grouped, for chunks of the dispatched rows (the scratch of a chunk stays under the
 * backend's limit; DSV_CUDA_MOE_TOKENS caps a chunk at that many tokens' rows, for tests):
 *   1. zero rows for the slots no expert here serves; act_quant of x (faithful)
 *   2. plan: the list of (expert, 64-row) tiles of the chunk, from the offsets
 *   3. one grouped launch for all active experts: gate and up projections of the expert's
 *      rows and SwiGLU, into h (the chunk's rows, expert after expert)
 *   4. act_quant of h, one grouped launch for the down projections into y, row = slot
 * Combine: out[t] = sum of w * y over t's slots in ascending expert id, fp32.
 * The experts' weights are read through the expert table (kernels/backend.h), a backend
 * tensor the model builds once at load: any subset of experts (an expert-parallel rank's
 * table) runs on the same kernels, an absent one is an error (-EPROTO).
 *
 * cuBLASLt: CUDA 13's cuBLASLt has no grouped matmul (a row count per expert, on the device);
 * the closest is a pointer-array batch of equal shapes. The start-up probe dcu_moe_init asks
 * this device's cuBLASLt for such a batch in FP8 with 128x128 weight and 1x128 activation
 * block scales and records the answer (describe() shows it); the grouped kernel serves in
 * either case, as a batch of equal shapes would need the row counts on the host. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda.h>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/moe.cuh"

/* ------------------------------------------------------------------ shapes */
static bool is_f32(const struct dsv_tensor *t) { return t && t->type == DSV_F32 && t->stride % 4 == 0; }
static bool is_i32t(const struct dsv_tensor *t) { return t && t->type == DSV_I32 && t->stride % 4 == 0; }

bool dcu_moe_gate_ok(const struct dsv_op_moe_gate *p) {
        if (!is_f32(p->x) || !p->w || (p->w->type != DSV_BF16 && p->w->type != DSV_F32) || p->w->stride % dsv_dtype_size(p->w->type))
                return false;
        const int64_t T = p->x->ne[1], E = p->w->ne[1], G = p->n_group, K = p->k;
        if (p->w->ne[0] != p->x->ne[0] || E < 1 || E > DCU_MOE_MAX_E || G < 1 || G > DCU_MOE_MAX_G || E % G || (G > 1 && E / G < 2) ||
            K < 1 || K > DCU_MOE_MAX_K || K > E || (G > 1 && (p->topk_group < 1 || p->topk_group > G)))
                return false;
        if (p->bias && !((p->bias->type == DSV_F32 || p->bias->type == DSV_BF16) && p->bias->ne[0] * p->bias->ne[1] == E &&
                         (p->bias->ne[1] == 1 || p->bias->stride == (size_t)p->bias->ne[0] * dsv_dtype_size(p->bias->type))))
                return false;
        return is_i32t(p->ids) && p->ids->ne[0] == K && p->ids->ne[1] == T && is_f32(p->weights) && p->weights->ne[0] == K &&
               p->weights->ne[1] == T && (!p->scores || (is_f32(p->scores) && p->scores->ne[0] == E && p->scores->ne[1] == T)) &&
               (!p->forced_ids || (is_i32t(p->forced_ids) && p->forced_ids->ne[0] >= K && p->forced_ids->ne[1] == T));
}

static bool is_vec_i32(const struct dsv_tensor *t, int64_t n) {
        return t && t->type == DSV_I32 && (t->ne[1] == 1 || t->stride == (size_t)t->ne[0] * 4) && t->ne[0] * t->ne[1] >= n;
}

bool dcu_moe_split_ok(const struct dsv_op *op) {
        switch (op->type) {
        case DSV_OP_MOE_DISPATCH: {
                const struct dsv_op_moe_dispatch *p = &op->moe_dispatch;
                const int64_t E = p->n_experts;
                if (!is_i32t(p->ids) || E < 1 || E > DCU_MOE_MAX_E)
                        return false;
                const int64_t T = p->ids->ne[1], K = p->ids->ne[0];
                return K >= 1 && K <= DCU_MOE_MAX_K && T * K <= INT32_MAX && is_vec_i32(p->counts, E) && is_vec_i32(p->offsets, E + 1) &&
                       is_vec_i32(p->perm, T * K);
        }
        case DSV_OP_MOE_GROUPED: {
                const struct dsv_op_moe_grouped *p = &op->moe_grouped;
                const int64_t E = p->n_experts, I = p->inter;
                if (!is_f32(p->y) || !is_f32(p->x) || !is_i32t(p->ids) || !p->table || p->weight_type != DSV_F8_E4M3 || E < 1 ||
                    E > DCU_MOE_MAX_E || I < 1 || I > 32768)
                        return false;
                const int64_t T = p->x->ne[1], D = p->x->ne[0], K = p->ids->ne[0];
                return p->ids->ne[1] == T && K >= 1 && K <= DCU_MOE_MAX_K && D >= 1 && D <= 32768 && T * K <= INT32_MAX &&
                       p->y->ne[1] == T * K && p->y->ne[0] == D && is_vec_i32(p->counts, E) && is_vec_i32(p->offsets, E + 1) &&
                       is_vec_i32(p->perm, T * K) && p->table->ne[1] >= E && p->table->ne[0] >= (int64_t)sizeof(struct dsv_moe_expert) &&
                       p->table->stride == sizeof(struct dsv_moe_expert);
        }
        case DSV_OP_MOE_COMBINE: {
                const struct dsv_op_moe_combine *p = &op->moe_combine;
                if (!is_f32(p->out) || !is_f32(p->y) || !is_i32t(p->ids) || !is_f32(p->weights))
                        return false;
                const int64_t T = p->out->ne[1], D = p->out->ne[0], K = p->ids->ne[0];
                return K >= 1 && K <= DCU_MOE_MAX_K && p->ids->ne[1] == T && p->weights->ne[1] == T && p->weights->ne[0] == K &&
                       p->y->ne[1] == T * K && p->y->ne[0] == D && p->n_experts >= 1;
        }
        default:
                return false;
        }
}

/* ------------------------------------------------------------------ gate */
int dcu_moe_gate(struct dcu_ctx *c, const struct dsv_op_moe_gate *p) {
        const int64_t T = dcu_rows(p->x), E = dcu_rows(p->w);
        if (T == 0)
                return 0;
        const int64_t ldl = dcu_round_up(E, 4);
        float *logits;
        DCU_TRY(dcu_scratch(c, (size_t)(T * ldl) * sizeof(float), (void **)&logits));
        struct dsv_tensor lt = {DSV_F32, {E, T}, (size_t)ldl * sizeof(float), logits, NULL};
        struct dsv_op_linear lin = {&lt, p->x, p->w, false, false};
        int r = dcu_linear(c, &lin);
        if (r == 0) {
                dcu_moe_route_kernel<<<dcu_grid(T), 32, 0, c->stream>>>(
                        logits, ldl, p->bias ? p->bias->data : NULL, p->bias && p->bias->type == DSV_BF16, (int)E, p->n_group, p->topk_group,
                        p->k, p->route_scale, p->norm_topk_prob, (int32_t *)p->ids->data, dcu_ld(p->ids), (float *)p->weights->data,
                        dcu_ld(p->weights), p->scores ? (float *)p->scores->data : NULL, p->scores ? dcu_ld(p->scores) : 0,
                        p->forced_ids ? (const int32_t *)p->forced_ids->data : NULL, p->forced_ids ? dcu_ld(p->forced_ids) : 0, c->err_word);
                cudaError_t e = cudaGetLastError();
                if (e != cudaSuccess)
                        r = dcu_fail_cuda(e, "dcu_moe_route_kernel", __FILE__, __LINE__);
        }
        dcu_scratch_free(c, logits);
        return r;
}

/* ------------------------------------------------------------------ dispatch */
static int moe_dispatch(struct dcu_ctx *c, const struct dsv_op_moe_dispatch *p) {
        const int64_t T = dcu_rows(p->ids), K = dcu_cols(p->ids), E = p->n_experts;
        int32_t *cnt = (int32_t *)p->counts->data, *off = (int32_t *)p->offsets->data, *perm = (int32_t *)p->perm->data;
        const int32_t *ids = (const int32_t *)p->ids->data;
        dcu_moe_dispatch_kernel<<<(unsigned)E, 256, 0, c->stream>>>(ids, dcu_ld(p->ids), T, (int)K, (int)E, cnt, NULL, NULL, c->err_word);
        dcu_moe_offsets_kernel<<<1, 256, 0, c->stream>>>(cnt, (int)E, T * K, off, perm);
        dcu_moe_dispatch_kernel<<<(unsigned)E, 256, 0, c->stream>>>(ids, dcu_ld(p->ids), T, (int)K, (int)E, cnt, off, perm, c->err_word);
        cudaError_t e = cudaGetLastError();
        return e == cudaSuccess ? 0 : dcu_fail_cuda(e, "moe dispatch kernels", __FILE__, __LINE__);
}

/* ------------------------------------------------------------------ grouped experts */
/* The scratch of a chunk of `cap` dispatched rows (and the quantized x of every token),
 * laid out in one allocation. */
struct moe_scratch {
        uint8_t *xq, *hq;
        float *xs, *hs, *h;
        int32_t *tile_e, *tile_r0, *n_tiles;
};

static int64_t moe_tiles(int64_t cap, int64_t E) { return (cap < E ? cap : E) + dcu_ceil_div(cap, DCU_GEMM_BM); }

static size_t moe_layout(int64_t T, int64_t cap, int64_t E, int64_t D, int64_t I, bool quant, uint8_t *base, struct moe_scratch *s) {
        const int64_t tiles = moe_tiles(cap, E);
        size_t at = 0;
#define PART(field, type, n)                                                             \
        do {                                                                             \
                s->field = base ? (type *)(base + at) : NULL;                            \
                at += (size_t)dcu_round_up((int64_t)((size_t)(n) * sizeof(type)), 256);  \
        } while (0)
        PART(tile_e, int32_t, tiles);
        PART(tile_r0, int32_t, tiles);
        PART(n_tiles, int32_t, 1);
        PART(h, float, cap * I);
        if (quant) {
                PART(xq, uint8_t, T * dcu_round_up(D, 16));
                PART(xs, float, T * dcu_ceil_div(D, DCU_QBLOCK));
                PART(hq, uint8_t, cap * dcu_round_up(I, 16));
                PART(hs, float, cap * dcu_ceil_div(I, DCU_QBLOCK));
        } else {
                s->xq = s->hq = NULL;
                s->xs = s->hs = NULL;
        }
#undef PART
        return at;
}

/* y = every dispatched row through its expert, chunk by chunk of the dispatch's rows (the
 * chunks' count is the most the rows can be, T*k: past the real total a chunk has no tile). */
static int moe_grouped(struct dcu_ctx *c, const struct dsv_op_moe_grouped *p) {
        const int64_t T = dcu_rows(p->x), D = dcu_cols(p->x), K = dcu_cols(p->ids), I = p->inter, E = p->n_experts, R = T * K;
        const bool f = p->faithful;
        if (R == 0)
                return 0;
        const struct dsv_moe_expert *tab = (const struct dsv_moe_expert *)p->table->data;
        const int32_t *off = (const int32_t *)p->offsets->data, *perm = (const int32_t *)p->perm->data;

        /* rows per chunk: the scratch under the limit, the tile grid under 65535 rows */
        struct moe_scratch s;
        const int64_t fixed = (int64_t)moe_layout(T, 0, E, D, I, f, NULL, &s);
        const int64_t per_row =
                (int64_t)moe_layout(T, 2 * DCU_GEMM_BM, E, D, I, f, NULL, &s) - (int64_t)moe_layout(T, DCU_GEMM_BM, E, D, I, f, NULL, &s);
        int64_t cap = dcu_chunk_rows(R, dcu_ceil_div(per_row, DCU_GEMM_BM), c->scratch_limit > fixed ? c->scratch_limit - fixed : 1);
        if (c->moe_max_tokens > 0 && cap > (int64_t)c->moe_max_tokens * K)
                cap = (int64_t)c->moe_max_tokens * K;
        while (cap > 1 && moe_tiles(cap, E) > 65535)
                cap /= 2;
        uint8_t *buf;
        DCU_TRY(dcu_scratch(c, moe_layout(T, cap, E, D, I, f, NULL, &s) + 256, (void **)&buf));
        moe_layout(T, cap, E, D, I, f, buf, &s);

        const int64_t ldx = dcu_ld(p->x), ldy = dcu_ld(p->y);
        const int64_t ldqD = dcu_round_up(D, 16), nbD = dcu_ceil_div(D, DCU_QBLOCK), ldqI = dcu_round_up(I, 16), nbI = dcu_ceil_div(I, DCU_QBLOCK);
        const float *x = (const float *)p->x->data;
        float *y = (float *)p->y->data;
        const unsigned tiles = (unsigned)moe_tiles(cap, E);
        int r = 0;
        dcu_moe_zero_kernel<<<dcu_grid(R), 256, 0, c->stream>>>(y, ldy, (const int32_t *)p->ids->data, dcu_ld(p->ids), (int)K, D);
        if (f)
                r = dcu_quant_rows(c, x, ldx, T, D, s.xq, ldqD, s.xs, nbD, 1);
        for (int64_t c0 = 0; c0 < R && r == 0; c0 += cap) {
                const int64_t c1 = c0 + cap;
                dcu_moe_plan_kernel<<<1, 32, 0, c->stream>>>(off, (int)E, c0, c1, DCU_GEMM_BM, s.tile_e, s.tile_r0, s.n_tiles);
                dim3 g1((unsigned)dcu_ceil_div(I, DCU_GEMM_BN), tiles);
                if (f)
                        dcu_moe_gemm_kernel<true, true><<<g1, 256, 0, c->stream>>>(s.h, I, s.xq, ldqD, s.xs, nbD, tab, s.tile_e, s.tile_r0,
                                                                                  s.n_tiles, off, perm, c0, c1, (int)K, (int)I, (int)D,
                                                                                  1, c->err_word);
                else
                        dcu_moe_gemm_kernel<false, true><<<g1, 256, 0, c->stream>>>(s.h, I, x, ldx, NULL, 0, tab, s.tile_e, s.tile_r0,
                                                                                   s.n_tiles, off, perm, c0, c1, (int)K, (int)I, (int)D,
                                                                                   0, c->err_word);
                cudaError_t e = cudaGetLastError();
                if (e != cudaSuccess) {
                        r = dcu_fail_cuda(e, "moe gate/up kernels", __FILE__, __LINE__);
                        break;
                }
                dim3 g2((unsigned)dcu_ceil_div(D, DCU_GEMM_BN), tiles);
                if (f) {
                        /* rows past the chunk's total are never read: quantizing them costs nothing that matters */
                        if ((r = dcu_quant_rows(c, s.h, I, cap, I, s.hq, ldqI, s.hs, nbI, 1)) < 0)
                                break;
                        dcu_moe_gemm_kernel<true, false><<<g2, 256, 0, c->stream>>>(y, ldy, s.hq, ldqI, s.hs, nbI, tab, s.tile_e, s.tile_r0,
                                                                                   s.n_tiles, off, perm, c0, c1, (int)K, (int)D, (int)I,
                                                                                   1, c->err_word);
                } else {
                        dcu_moe_gemm_kernel<false, false><<<g2, 256, 0, c->stream>>>(y, ldy, s.h, I, NULL, 0, tab, s.tile_e, s.tile_r0,
                                                                                    s.n_tiles, off, perm, c0, c1, (int)K, (int)D, (int)I,
                                                                                    0, c->err_word);
                }
                e = cudaGetLastError();
                if (e != cudaSuccess)
                        r = dcu_fail_cuda(e, "moe down kernels", __FILE__, __LINE__);
        }
        dcu_scratch_free(c, buf);
        return r;
}

/* ------------------------------------------------------------------ combine */
static int moe_combine(struct dcu_ctx *c, const struct dsv_op_moe_combine *p) {
        const int64_t T = dcu_rows(p->out), D = dcu_cols(p->out), K = dcu_cols(p->ids);
        if (T == 0)
                return 0;
        dcu_moe_combine_kernel<<<dcu_grid(T), 256, 0, c->stream>>>((float *)p->out->data, dcu_ld(p->out), (const float *)p->y->data,
                                                                   dcu_ld(p->y), (const int32_t *)p->ids->data, dcu_ld(p->ids),
                                                                   (const float *)p->weights->data, dcu_ld(p->weights), (int)K,
                                                                   p->n_experts, D, c->err_word);
        cudaError_t e = cudaGetLastError();
        return e == cudaSuccess ? 0 : dcu_fail_cuda(e, "moe combine kernel", __FILE__, __LINE__);
}

int dcu_moe_split(struct dcu_ctx *c, const struct dsv_op *op) {
        switch (op->type) {
        case DSV_OP_MOE_DISPATCH:
                return moe_dispatch(c, &op->moe_dispatch); /* no token: zero counts and offsets, as on the CPU */
        case DSV_OP_MOE_GROUPED:
                return moe_grouped(c, &op->moe_grouped);
        case DSV_OP_MOE_COMBINE:
                return moe_combine(c, &op->moe_combine);
        default:
                return -EINVAL;
        }
}

/* ------------------------------------------------------------------ start-up probe */
int dcu_moe_init(struct dcu_ctx *c) {
#if CUDA_VERSION >= 12090
        cublasLtMatmulDesc_t op = NULL;
        cublasLtMatrixLayout_t la = NULL, lb = NULL, ld = NULL;
        cublasLtMatmulPreference_t pref = NULL;
        cublasLtMatmulHeuristicResult_t res;
        int got = 0;
        bool ok = false;
        const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
        const int32_t sa = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F, sb = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
        const int32_t batch = 8;
        const uint32_t mode = CUBLASLT_BATCH_MODE_POINTER_ARRAY;
        memset(&res, 0, sizeof(res));
        if (cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F) == CUBLAS_STATUS_SUCCESS &&
            cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)) == CUBLAS_STATUS_SUCCESS &&
            cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)) == CUBLAS_STATUS_SUCCESS &&
            cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &sa, sizeof(sa)) == CUBLAS_STATUS_SUCCESS &&
            cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &sb, sizeof(sb)) == CUBLAS_STATUS_SUCCESS &&
            cublasLtMatrixLayoutCreate(&la, CUDA_R_8F_E4M3, 512, 256, 512) == CUBLAS_STATUS_SUCCESS &&
            cublasLtMatrixLayoutCreate(&lb, CUDA_R_8F_E4M3, 512, 16, 512) == CUBLAS_STATUS_SUCCESS &&
            cublasLtMatrixLayoutCreate(&ld, CUDA_R_32F, 256, 16, 256) == CUBLAS_STATUS_SUCCESS &&
            cublasLtMatmulPreferenceCreate(&pref) == CUBLAS_STATUS_SUCCESS) {
                bool set = true;
                for (cublasLtMatrixLayout_t l : {la, lb, ld})
                        set = set && cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch, sizeof(batch)) ==
                                             CUBLAS_STATUS_SUCCESS &&
                              cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_MODE, &mode, sizeof(mode)) ==
                                      CUBLAS_STATUS_SUCCESS;
                ok = set &&
                     cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &c->lt_ws_bytes,
                                                          sizeof(c->lt_ws_bytes)) == CUBLAS_STATUS_SUCCESS &&
                     cublasLtMatmulAlgoGetHeuristic(c->lt, op, la, lb, ld, ld, pref, 1, &res, &got) == CUBLAS_STATUS_SUCCESS && got > 0 &&
                     res.state == CUBLAS_STATUS_SUCCESS;
        }
        if (pref)
                cublasLtMatmulPreferenceDestroy(pref);
        if (ld)
                cublasLtMatrixLayoutDestroy(ld);
        if (lb)
                cublasLtMatrixLayoutDestroy(lb);
        if (la)
                cublasLtMatrixLayoutDestroy(la);
        if (op)
                cublasLtMatmulDescDestroy(op);
        snprintf(c->moe_note, sizeof(c->moe_note), "grouped FP8 kernel (cuBLASLt pointer-array FP8 block-scaled batch: %s)",
                 ok ? "offered, not used" : "not offered");
#else
        snprintf(c->moe_note, sizeof(c->moe_note), "grouped FP8 kernel (cuBLASLt before 12.9: no block scaling)");
#endif
        return 0;
}
