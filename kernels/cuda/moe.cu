/* Mixture of experts on the GPU: DSV_OP_MOE_GATE and DSV_OP_MOE_EXPERTS (kernels in moe.cuh,
 * the CPU reference in kernels/cpu/moe.c).
 *
 * Gate: logits = x W^T through the linear op (bf16 weights: the exact three-plane cuBLAS
 * product), then one warp per token routes (sigmoid, correction bias, group-limited top-k,
 * normalised weights times route_scale) exactly as the CPU does.
 *
 * Experts, for a chunk of tokens (the scratch of a chunk stays under the backend's limit;
 * DSV_CUDA_MOE_TOKENS caps a chunk, for tests):
 *   1. act_quant of the chunk's x rows (faithful; exact numerics use x as it is)
 *   2. dispatch: per expert, its count and slots (t*k + j) in ascending order
 *   3. plan: offsets, the list of (expert, 64-row) tiles, slot -> compact row
 *   4. one grouped launch for all active experts: gate and up projections of the expert's
 *      rows and SwiGLU, into h (compact rows, expert after expert)
 *   5. act_quant of h, one grouped launch for the down projections into y
 *   6. combine: out[t] = sum of w * y over t's slots in ascending expert id, fp32
 * The experts' weights are read through a device table (dcu_moe_expert) the backend builds
 * once per expert array (a layer) and keeps: it is checked against the op's host array at each
 * call and rebuilt when that changed. The same kernels serve any subset of experts (an
 * expert-parallel rank's table).
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

static bool fp8_weight(const struct dsv_tensor *w, int64_t rows, int64_t cols) {
        return w && w->type == DSV_F8_E4M3 && w->ne[1] == rows && w->ne[0] == cols && w->scale && w->scale->type == DSV_F32 &&
               w->scale->stride % 4 == 0 && w->scale->ne[1] == dcu_ceil_div(rows, DCU_QBLOCK) &&
               w->scale->ne[0] == dcu_ceil_div(cols, DCU_QBLOCK);
}

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

bool dcu_moe_experts_ok(const struct dsv_op_moe_experts *p) {
        if (!is_f32(p->out) || !is_f32(p->x) || !is_i32t(p->ids) || !is_f32(p->weights) || !p->experts)
                return false;
        const int64_t T = p->x->ne[1], D = p->x->ne[0], K = p->ids->ne[0], I = p->inter, E = p->n_experts;
        if (p->out->ne[0] != D || p->out->ne[1] != T || p->ids->ne[1] != T || p->weights->ne[1] != T || p->weights->ne[0] != K || K < 1 ||
            K > DCU_MOE_MAX_K || E < 1 || E > DCU_MOE_MAX_E || D < 1 || D > 32768 || I < 1 || I > 32768)
                return false;
        for (int64_t e = 0; e < E; e++) {
                const struct dsv_moe_expert_weights *w = &p->experts[e];
                if (!fp8_weight(w->w1, I, D) || !fp8_weight(w->w3, I, D) || !fp8_weight(w->w2, D, I))
                        return false;
        }
        return true;
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

/* ------------------------------------------------------------------ expert tables */
static void table_of(const struct dsv_op_moe_experts *p, struct dcu_moe_expert *t) {
        for (int e = 0; e < p->n_experts; e++) {
                const struct dsv_moe_expert_weights *w = &p->experts[e];
                t[e] = (struct dcu_moe_expert){(const uint8_t *)w->w1->data, (const uint8_t *)w->w3->data, (const uint8_t *)w->w2->data,
                                               (const float *)w->w1->scale->data, (const float *)w->w3->scale->data,
                                               (const float *)w->w2->scale->data, dcu_ld(w->w1), dcu_ld(w->w3), dcu_ld(w->w2),
                                               dcu_ld(w->w1->scale), dcu_ld(w->w3->scale), dcu_ld(w->w2->scale)};
        }
}

/* The device table of this expert array: the cached one when the array still says the same,
 * else a new one (uploaded on the stream; a replaced table is freed in stream order). */
static int moe_table(struct dcu_ctx *c, const struct dsv_op_moe_experts *p, const struct dcu_moe_expert **ret) {
        const size_t bytes = (size_t)p->n_experts * sizeof(struct dcu_moe_expert);
        struct dcu_moe_expert *now = (struct dcu_moe_expert *)malloc(bytes);
        if (!now)
                return -ENOMEM;
        table_of(p, now);
        struct dcu_moe_table *slot = NULL;
        for (int i = 0; i < DCU_MOE_TABLES; i++) {
                struct dcu_moe_table *t = &c->moe_tab[i];
                if (t->key == (const void *)p->experts && t->n == p->n_experts) {
                        if (memcmp(t->host, now, bytes) == 0) {
                                free(now);
                                *ret = t->dev;
                                return 0;
                        }
                        slot = t; /* same array, new contents: rebuild in place */
                        break;
                }
        }
        /* building it waits on a host copy: not inside a graph (the eager steps before any
         * capture, prefill first, build every layer's table) */
        if (c->capturing) {
                free(now);
                return dcu_fail(-EOPNOTSUPP, __FILE__, __LINE__, "MoE expert table not built before the graph capture");
        }
        if (!slot) {
                slot = &c->moe_tab[c->moe_tab_next];
                c->moe_tab_next = (c->moe_tab_next + 1) % DCU_MOE_TABLES;
        }
        if (slot->dev)
                cudaFreeAsync(slot->dev, c->stream);
        free(slot->host);
        memset(slot, 0, sizeof(*slot));
        void *dev = NULL;
        cudaError_t e = cudaMallocAsync(&dev, bytes, c->stream);
        if (e == cudaSuccess)
                e = cudaMemcpyAsync(dev, now, bytes, cudaMemcpyHostToDevice, c->stream);
        if (e != cudaSuccess) {
                if (dev)
                        cudaFreeAsync(dev, c->stream);
                free(now);
                return dev ? dcu_fail_cuda(e, "moe expert table", __FILE__, __LINE__)
                           : dcu_fail_alloc(e, bytes, "MoE expert table", "cudaMallocAsync(&dev, bytes, c->stream)", __FILE__, __LINE__);
        }
        slot->key = p->experts;
        slot->n = p->n_experts;
        slot->host = now;
        slot->dev = (struct dcu_moe_expert *)dev;
        *ret = slot->dev;
        return 0;
}

void dcu_moe_free(struct dcu_ctx *c) {
        for (int i = 0; i < DCU_MOE_TABLES; i++) {
                if (c->moe_tab[i].dev)
                        cudaFreeAsync(c->moe_tab[i].dev, c->stream);
                free(c->moe_tab[i].host);
        }
        memset(c->moe_tab, 0, sizeof(c->moe_tab));
}

/* ------------------------------------------------------------------ experts */
/* The scratch of a chunk of nt tokens, laid out in one allocation. */
struct moe_scratch {
        uint8_t *xq, *hq;
        float *xs, *hs, *h, *y;
        int32_t *count, *off, *rows, *tile_e, *tile_m0, *n_tiles, *inv;
};

static size_t moe_layout(int64_t nt, int64_t K, int64_t E, int64_t D, int64_t I, bool quant, uint8_t *base, struct moe_scratch *s) {
        const int64_t M = nt * K, tiles = (M < E ? M : E) + dcu_ceil_div(M, DCU_GEMM_BM);
        size_t at = 0;
#define PART(field, type, n)                                                             \
        do {                                                                             \
                s->field = base ? (type *)(base + at) : NULL;                            \
                at += (size_t)dcu_round_up((int64_t)((size_t)(n) * sizeof(type)), 256);  \
        } while (0)
        PART(count, int32_t, E);
        PART(off, int32_t, E + 1);
        PART(rows, int32_t, E * nt);
        PART(tile_e, int32_t, tiles);
        PART(tile_m0, int32_t, tiles);
        PART(n_tiles, int32_t, 1);
        PART(inv, int32_t, M);
        PART(h, float, M * I);
        PART(y, float, M * D);
        if (quant) {
                PART(xq, uint8_t, nt * dcu_round_up(D, 16));
                PART(xs, float, nt * dcu_ceil_div(D, DCU_QBLOCK));
                PART(hq, uint8_t, M * dcu_round_up(I, 16));
                PART(hs, float, M * dcu_ceil_div(I, DCU_QBLOCK));
        } else {
                s->xq = s->hq = NULL;
                s->xs = s->hs = NULL;
        }
#undef PART
        return at;
}

int dcu_moe_experts(struct dcu_ctx *c, const struct dsv_op_moe_experts *p) {
        const int64_t T = dcu_rows(p->x), D = dcu_cols(p->x), K = dcu_cols(p->ids), I = p->inter, E = p->n_experts;
        const bool f = p->faithful;
        if (T == 0)
                return 0;
        const struct dcu_moe_expert *tab = NULL;
        DCU_TRY(moe_table(c, p, &tab));

        /* tokens per chunk: the scratch under the limit, the tile grid under 65535 rows */
        struct moe_scratch s;
        const int64_t per_token = (int64_t)moe_layout(2, K, E, D, I, f, NULL, &s) - (int64_t)moe_layout(1, K, E, D, I, f, NULL, &s);
        int64_t tc = dcu_chunk_rows(T, per_token, c->scratch_limit);
        if (c->moe_max_tokens > 0 && tc > c->moe_max_tokens)
                tc = c->moe_max_tokens;
        while (tc > 1 && (tc * K < E ? tc * K : E) + dcu_ceil_div(tc * K, DCU_GEMM_BM) > 65535)
                tc /= 2;
        uint8_t *buf;
        DCU_TRY(dcu_scratch(c, moe_layout(tc, K, E, D, I, f, NULL, &s) + 256, (void **)&buf));

        const int64_t ldx = dcu_ld(p->x), ldi = dcu_ld(p->ids), ldw = dcu_ld(p->weights), ldo = dcu_ld(p->out);
        const int64_t ldqD = dcu_round_up(D, 16), nbD = dcu_ceil_div(D, DCU_QBLOCK), ldqI = dcu_round_up(I, 16), nbI = dcu_ceil_div(I, DCU_QBLOCK);
        int r = 0;
        for (int64_t t0 = 0; t0 < T && r == 0; t0 += tc) {
                const int64_t nt = T - t0 < tc ? T - t0 : tc, M = nt * K;
                moe_layout(nt, K, E, D, I, f, buf, &s);
                const float *x = (const float *)p->x->data + t0 * ldx;
                const int32_t *ids = (const int32_t *)p->ids->data + t0 * ldi;
                const float *w = (const float *)p->weights->data + t0 * ldw;
                float *out = (float *)p->out->data + t0 * ldo;
                const unsigned tiles = (unsigned)((M < E ? M : E) + dcu_ceil_div(M, DCU_GEMM_BM));

                if (f && (r = dcu_quant_rows(c, x, ldx, nt, D, s.xq, ldqD, s.xs, nbD, 1)) < 0)
                        break;
                dcu_moe_dispatch_kernel<<<(unsigned)E, 256, 0, c->stream>>>(ids, ldi, nt, (int)K, s.count, s.rows);
                dcu_moe_plan_kernel<<<1, 256, 0, c->stream>>>(s.count, s.rows, (int)E, nt, (int)K, DCU_GEMM_BM, s.off, s.tile_e, s.tile_m0,
                                                              s.n_tiles, s.inv);
                dim3 g1((unsigned)dcu_ceil_div(I, DCU_GEMM_BN), tiles);
                if (f)
                        dcu_moe_gemm_kernel<true, true><<<g1, 256, 0, c->stream>>>(s.h, I, s.xq, ldqD, s.xs, nbD, tab, s.tile_e, s.tile_m0,
                                                                                  s.n_tiles, s.count, s.off, s.rows, nt, (int)K, (int)I,
                                                                                  (int)D, 1);
                else
                        dcu_moe_gemm_kernel<false, true><<<g1, 256, 0, c->stream>>>(s.h, I, x, ldx, NULL, 0, tab, s.tile_e, s.tile_m0,
                                                                                   s.n_tiles, s.count, s.off, s.rows, nt, (int)K, (int)I,
                                                                                   (int)D, 0);
                cudaError_t e = cudaGetLastError();
                if (e != cudaSuccess) {
                        r = dcu_fail_cuda(e, "moe gate/up kernels", __FILE__, __LINE__);
                        break;
                }
                dim3 g2((unsigned)dcu_ceil_div(D, DCU_GEMM_BN), tiles);
                if (f) {
                        /* rows past the batch's total are never read: quantizing them costs nothing that matters */
                        if ((r = dcu_quant_rows(c, s.h, I, M, I, s.hq, ldqI, s.hs, nbI, 1)) < 0)
                                break;
                        dcu_moe_gemm_kernel<true, false><<<g2, 256, 0, c->stream>>>(s.y, D, s.hq, ldqI, s.hs, nbI, tab, s.tile_e, s.tile_m0,
                                                                                   s.n_tiles, s.count, s.off, s.rows, nt, (int)K, (int)D,
                                                                                   (int)I, 1);
                } else {
                        dcu_moe_gemm_kernel<false, false><<<g2, 256, 0, c->stream>>>(s.y, D, s.h, I, NULL, 0, tab, s.tile_e, s.tile_m0,
                                                                                    s.n_tiles, s.count, s.off, s.rows, nt, (int)K, (int)D,
                                                                                    (int)I, 0);
                }
                dcu_moe_combine_kernel<<<dcu_grid(nt), 256, 0, c->stream>>>(out, ldo, s.y, D, ids, ldi, w, ldw, s.inv, (int)K, D);
                e = cudaGetLastError();
                if (e != cudaSuccess)
                        r = dcu_fail_cuda(e, "moe down/combine kernels", __FILE__, __LINE__);
        }
        dcu_scratch_free(c, buf);
        return r;
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
