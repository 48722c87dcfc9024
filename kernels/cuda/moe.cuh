/* Mixture-of-experts kernels: routing, dispatch, grouped FP8 expert GEMMs and the combine
 * (launchers and the plain math of the whole op: moe.cu). Equivalent CPU code: kernels/cpu/moe.c.
 *
 * Routing, per token (one warp), with s = sigmoid(logit), b = s + bias:
 *   group score g = b(1) + b(2), the two best b of the group (ties: lower index, NaN lowest)
 *   keep the topk_group best groups (ties: lower group), b := -inf elsewhere
 *   ids = the k best b (ties: lower id), in rank order; sum = s[ids[0]] + ... (rank order)
 *   w = s[id] / sum * route_scale (s[id] * route_scale without norm_topk_prob)
 *   ids written ascending with their weights
 * Dispatch: expert e's rows are the slots t*k + j with ids[t][j] == e, in ascending (t, j):
 *   counts, offsets (exclusive sum), perm[offsets[e] + i] = the i-th slot of e, -1 past the end.
 * Grouped GEMM over a chunk [c0, c1) of the dispatched rows: a tile is (expert, up to 64 of
 * its rows inside the chunk) x 64 output columns; the tile list is built on the device from
 * the offsets, the grid is sized for the most tiles a chunk can have (blocks past the list's
 * end return), the expert's weights come from the expert table (struct dsv_moe_expert,
 * kernels/backend.h); an absent expert sets DCU_ERR_ABSENT, a weight of another type or
 * shape DCU_ERR_INDEX, and its rows are not computed.
 * Sums as the tiled linear kernel (linear.cuh): per 128-wide K block in fp32, scaled by
 * a_scale * w_scale. */
#pragma once

#include "kernels/cuda/plan.h"
#include "kernels/cuda/reduce.cuh"

#define DCU_MOE_MAX_K 16
#define DCU_MOE_MAX_E 1024
#define DCU_MOE_MAX_G 32

/* (value, index) order of the reference's selections: larger value, then lower index;
 * NaN ranks as -inf. */
DCU_DEV bool dcu_moe_better(float a, int ia, float b, int ib) { return a > b || (a == b && ia < ib); }
DCU_DEV float dcu_moe_key(float v) { return v != v ? -INFINITY : v; }

/* The best (value, index) over the lanes of a warp; lanes without a candidate pass
 * (-inf, INT32_MAX). */
DCU_DEV void dcu_moe_warp_best(float *v, int *i) {
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
                float ov = __shfl_xor_sync(0xffffffffu, *v, o);
                int oi = __shfl_xor_sync(0xffffffffu, *i, o);
                if (dcu_moe_better(ov, oi, *v, *i)) {
                        *v = ov;
                        *i = oi;
                }
        }
}

/* Routing: one warp (32 threads) per token, logits [T][ldl] (x . W_e, fp32). */
__global__ void __launch_bounds__(32)
        dcu_moe_route_kernel(const float *logits, int64_t ldl, const void *bias, int bias_bf16, int E, int G, int topk_group, int K,
                             float route_scale, int norm, int32_t *ids, int64_t ldi, float *wts, int64_t ldw, float *scores, int64_t ldsc,
                             const int32_t *forced, int64_t ldf, unsigned *err) {
        __shared__ float s[DCU_MOE_MAX_E], b[DCU_MOE_MAX_E];
        __shared__ unsigned char taken[DCU_MOE_MAX_E];
        __shared__ float gs[DCU_MOE_MAX_G];
        __shared__ int keep[DCU_MOE_MAX_G];
        __shared__ int rank[DCU_MOE_MAX_K];
        const int64_t t = blockIdx.x;
        const int lane = threadIdx.x;
        const float *lg = logits + t * ldl;
        for (int e = lane; e < E; e += 32) {
                const float acc = lg[e];
                const float se = __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-acc)));
                float bi = 0.0f;
                if (bias)
                        bi = bias_bf16 ? dcu_bf16_to_f32(((const uint16_t *)bias)[e]) : ((const float *)bias)[e];
                s[e] = se;
                b[e] = __fadd_rn(se, bi);
                taken[e] = 0;
                if (scores)
                        scores[t * ldsc + e] = b[e];
        }
        __syncthreads();
        const int32_t *f = forced ? forced + t * ldf : NULL;
        if (f && f[0] >= 0) {
                if (lane == 0) {
                        bool ok = true;
                        for (int j = 0; j < K; j++) {
                                ok = ok && f[j] >= 0 && f[j] < E;
                                rank[j] = ok ? f[j] : 0;
                        }
                        if (!ok)
                                atomicOr(err, DCU_ERR_INDEX);
                }
        } else {
                const int per = E / G;
                if (G > 1) {
                        /* lane g: its group's two best b (in rank order), summed unconverted */
                        if (lane < G) {
                                int b1 = -1, b2 = -1;
                                for (int i = 0; i < per; i++) {
                                        const int e = lane * per + i;
                                        if (b1 < 0 || dcu_moe_better(dcu_moe_key(b[e]), e, dcu_moe_key(b[b1]), b1)) {
                                                b2 = b1;
                                                b1 = e;
                                        } else if (b2 < 0 || dcu_moe_better(dcu_moe_key(b[e]), e, dcu_moe_key(b[b2]), b2)) {
                                                b2 = e;
                                        }
                                }
                                gs[lane] = __fadd_rn(b[b1], b[b2]);
                                keep[lane] = 0;
                        }
                        __syncthreads();
                        for (int r = 0; r < topk_group; r++) {
                                float v = -INFINITY;
                                int i = INT32_MAX;
                                if (lane < G && !keep[lane]) {
                                        v = dcu_moe_key(gs[lane]);
                                        i = lane;
                                }
                                dcu_moe_warp_best(&v, &i);
                                if (lane == 0)
                                        keep[i] = 1;
                                __syncthreads();
                        }
                        for (int e = lane; e < E; e += 32)
                                if (!keep[e / per])
                                        b[e] = -INFINITY;
                        __syncthreads();
                }
                for (int j = 0; j < K; j++) {
                        float v = -INFINITY;
                        int i = INT32_MAX;
                        for (int e = lane; e < E; e += 32)
                                if (!taken[e] && dcu_moe_better(dcu_moe_key(b[e]), e, v, i)) {
                                        v = dcu_moe_key(b[e]);
                                        i = e;
                                }
                        dcu_moe_warp_best(&v, &i);
                        if (lane == 0) {
                                rank[j] = i;
                                taken[i] = 1;
                        }
                        __syncthreads();
                }
        }
        __syncthreads();
        if (lane == 0) {
                float sum = 0.0f;
                for (int j = 0; j < K; j++)
                        sum = __fadd_rn(sum, s[rank[j]]);
                int32_t *io = ids + t * ldi;
                float *wo = wts + t * ldw;
                /* ascending ids, weights alongside (insertion sort: K is small) */
                for (int j = 0; j < K; j++) {
                        const int e = rank[j];
                        float w = norm ? __fdiv_rn(s[e], sum) : s[e];
                        w = __fmul_rn(w, route_scale);
                        int m = j;
                        while (m > 0 && io[m - 1] > e) {
                                io[m] = io[m - 1];
                                wo[m] = wo[m - 1];
                                m--;
                        }
                        io[m] = e;
                        wo[m] = w;
                }
        }
}

/* Dispatch, one block per expert e: the slots t*K + j with ids[t][j] == e in ascending
 * order (a block-wide prefix over tokens, chunk by chunk). off == NULL: count[e] only (block
 * 0 also flags ids >= E); else perm[off[e] + i] = the i-th slot. */
__global__ void __launch_bounds__(256)
        dcu_moe_dispatch_kernel(const int32_t *ids, int64_t ldi, int64_t T, int K, int E, int32_t *count, const int32_t *off,
                                int32_t *perm, unsigned *err) {
        __shared__ int part[256];
        __shared__ int base;
        const int e = blockIdx.x;
        if (threadIdx.x == 0)
                base = 0;
        __syncthreads();
        for (int64_t t0 = 0; t0 < T; t0 += blockDim.x) {
                const int64_t t = t0 + threadIdx.x;
                int n = 0;
                if (t < T)
                        for (int j = 0; j < K; j++) {
                                const int32_t id = ids[t * ldi + j];
                                n += id == e;
                                if (!off && e == 0 && id >= E)
                                        atomicOr(err, DCU_ERR_INDEX);
                        }
                part[threadIdx.x] = n;
                __syncthreads();
                if (threadIdx.x == 0) {
                        int run = base;
                        for (int i = 0; i < (int)blockDim.x; i++) {
                                const int c = part[i];
                                part[i] = run;
                                run += c;
                        }
                        base = run;
                }
                __syncthreads();
                if (off && n) {
                        int at = off[e] + part[threadIdx.x];
                        for (int j = 0; j < K; j++)
                                if (ids[t * ldi + j] == e)
                                        perm[at++] = (int32_t)(t * K + j);
                }
                __syncthreads();
        }
        if (!off && threadIdx.x == 0)
                count[e] = base;
}

/* One block: off[e] = the exclusive sum of the counts, off[E] = rows dispatched; perm past
 * that is -1. */
__global__ void __launch_bounds__(256) dcu_moe_offsets_kernel(const int32_t *count, int E, int64_t R, int32_t *off, int32_t *perm) {
        __shared__ int total;
        if (threadIdx.x == 0) {
                int run = 0;
                for (int e = 0; e < E; e++) {
                        off[e] = run;
                        run += count[e];
                }
                off[E] = run;
                total = run;
        }
        __syncthreads();
        for (int64_t i = total + threadIdx.x; i < R; i += blockDim.x)
                perm[i] = -1;
}

/* One block: the tile list (tile_e, tile_r0: absolute row of perm) with *n_tiles entries of
 * the rows [c0, c1) of the dispatch, each expert's part of the chunk cut into BM rows. */
__global__ void __launch_bounds__(32) dcu_moe_plan_kernel(const int32_t *off, int E, int64_t c0, int64_t c1, int BM, int32_t *tile_e,
                                                          int32_t *tile_r0, int32_t *n_tiles) {
        if (threadIdx.x != 0)
                return;
        int nt = 0;
        for (int e = 0; e < E; e++) {
                const int64_t a = off[e] > c0 ? off[e] : c0, b = off[e + 1] < c1 ? off[e + 1] : c1;
                for (int64_t r = a; r < b; r += BM) {
                        tile_e[nt] = e;
                        tile_r0[nt] = (int32_t)r;
                        nt++;
                }
        }
        *n_tiles = nt;
}

/* Whether the table entry's weight is an FP8 matrix [rows, cols] with its scales. */
DCU_DEV bool dcu_moe_weight_ok(const struct dsv_moe_weight *w, int64_t rows, int64_t cols) {
        return w->type == DSV_F8_E4M3 && w->rows == rows && w->cols == cols && w->scale != 0 && w->stride >= (uint64_t)cols &&
               w->scale_stride % 4 == 0;
}

/* The grouped GEMM, block (n-tile, tile): rows r0 .. r0+64 (within expert e = tile_e[tile]
 * and the chunk [c0, c1)) times the expert's weight, output columns n0 .. n0+64.
 *   GATE_UP: A row of dispatched row r is token perm[r] / K of a (x, quantized or not); two
 *            weights (w1, w3) give g1, g3 and the output is h = silu(g1) * g3 (each rounded
 *            to bf16 when round, as the reference's two linears and SwiGLU), h row r - c0
 *   down:    A row is h row r - c0, the weight w2, the output y row perm[r] (the slot)
 * Thread (ty, tx) owns rows dcu_gemm_row(0, ty, i) and columns dcu_gemm_col(n0, tx, j) of the
 * tile (plan.h); A and weight slices of 32 k go through shared memory as floats. */
template <bool ACODES, bool GATE_UP>
__global__ void __launch_bounds__(256)
        dcu_moe_gemm_kernel(float *out, int64_t ldo, const void *a, int64_t lda, const float *as, int64_t as_ld,
                            const struct dsv_moe_expert *tab, const int32_t *tile_e, const int32_t *tile_r0, const int32_t *n_tiles,
                            const int32_t *off, const int32_t *perm, int64_t c0, int64_t c1, int K_route, int N, int K, int round,
                            unsigned *err) {
        __shared__ float As[DCU_GEMM_BK][DCU_GEMM_BM + 4];
        __shared__ float B1[DCU_GEMM_BK][DCU_GEMM_BN + 4];
        __shared__ float B3[DCU_GEMM_BK][DCU_GEMM_BN + 4];
        __shared__ int64_t arow[DCU_GEMM_BM];
        const int tile = blockIdx.y;
        if (tile >= *n_tiles)
                return; /* the whole block: past the tile list */
        const int e = tile_e[tile], n0 = blockIdx.x * DCU_GEMM_BN;
        const int64_t r0 = tile_r0[tile], end = off[e + 1] < c1 ? off[e + 1] : c1;
        const int rows_here = (int)(end - r0 < DCU_GEMM_BM ? end - r0 : DCU_GEMM_BM);
        const struct dsv_moe_expert ex = tab[e];
        const struct dsv_moe_weight *m1 = GATE_UP ? &ex.w1 : &ex.w2, *m3 = &ex.w3;
        if (!m1->data || (GATE_UP && !m3->data)) {
                if (threadIdx.x == 0)
                        atomicOr(err, DCU_ERR_ABSENT);
                return;
        }
        if (!dcu_moe_weight_ok(m1, N, K) || (GATE_UP && !dcu_moe_weight_ok(m3, N, K))) {
                if (threadIdx.x == 0)
                        atomicOr(err, DCU_ERR_INDEX);
                return;
        }
        const uint8_t *w1 = (const uint8_t *)(uintptr_t)m1->data, *w3 = (const uint8_t *)(uintptr_t)m3->data;
        const float *s1 = (const float *)(uintptr_t)m1->scale, *s3 = (const float *)(uintptr_t)m3->scale;
        const int64_t ld1 = (int64_t)m1->stride, ld3 = (int64_t)m3->stride, lds1 = (int64_t)m1->scale_stride / 4,
                      lds3 = (int64_t)m3->scale_stride / 4;
        const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
        if (tid < DCU_GEMM_BM)
                arow[tid] = tid < rows_here ? (GATE_UP ? (int64_t)perm[r0 + tid] / K_route : r0 + tid - c0) : -1;
        __syncthreads();
        float acc1[4][4], acc3[4][4], blk1[4][4], blk3[4][4];
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++)
                        acc1[i][j] = acc3[i][j] = blk1[i][j] = blk3[i][j] = 0.0f;
        const int nbk = (K + DCU_QBLOCK - 1) / DCU_QBLOCK;
        for (int kb = 0; kb < nbk; kb++) {
                const int kend = min(K, (kb + 1) * DCU_QBLOCK);
                for (int k0 = kb * DCU_QBLOCK; k0 < kend; k0 += DCU_GEMM_BK) {
#pragma unroll
                        for (int q = 0; q < 8; q++) {
                                int r, cc;
                                dcu_gemm_load_idx(tid, q, &r, &cc);
                                const int k = k0 + cc, n = n0 + r;
                                const int64_t ar = arow[r];
                                As[cc][r] = (ar >= 0 && k < kend)
                                                    ? (ACODES ? dcu_e4m3_to_f32(((const uint8_t *)a)[ar * lda + k]) : ((const float *)a)[ar * lda + k])
                                                    : 0.0f;
                                B1[cc][r] = (n < N && k < kend) ? dcu_e4m3_to_f32(w1[n * ld1 + k]) : 0.0f;
                                if (GATE_UP)
                                        B3[cc][r] = (n < N && k < kend) ? dcu_e4m3_to_f32(w3[n * ld3 + k]) : 0.0f;
                        }
                        __syncthreads();
#pragma unroll 8
                        for (int kk = 0; kk < DCU_GEMM_BK; kk++) {
                                float av[4], bv[4], cv[4];
#pragma unroll
                                for (int i = 0; i < 4; i++)
                                        av[i] = As[kk][ty * 4 + i];
#pragma unroll
                                for (int j = 0; j < 4; j++) {
                                        bv[j] = B1[kk][tx * 4 + j];
                                        cv[j] = GATE_UP ? B3[kk][tx * 4 + j] : 0.0f;
                                }
#pragma unroll
                                for (int i = 0; i < 4; i++)
#pragma unroll
                                        for (int j = 0; j < 4; j++) {
                                                blk1[i][j] = fmaf(av[i], bv[j], blk1[i][j]);
                                                if (GATE_UP)
                                                        blk3[i][j] = fmaf(av[i], cv[j], blk3[i][j]);
                                        }
                        }
                        __syncthreads();
                }
                const int nc = dcu_gemm_col(n0, tx, 0);
                const float ws1 = nc < N ? s1[(int64_t)(nc / DCU_QBLOCK) * lds1 + kb] : 1.0f;
                const float ws3 = (GATE_UP && nc < N) ? s3[(int64_t)(nc / DCU_QBLOCK) * lds3 + kb] : 1.0f;
#pragma unroll
                for (int i = 0; i < 4; i++) {
                        const int64_t ar = arow[ty * 4 + i];
                        const float asc = (ACODES && ar >= 0) ? as[ar * as_ld + kb] : 1.0f;
                        const float f1 = __fmul_rn(asc, ws1), f3 = __fmul_rn(asc, ws3);
#pragma unroll
                        for (int j = 0; j < 4; j++) {
                                acc1[i][j] = __fadd_rn(acc1[i][j], __fmul_rn(blk1[i][j], f1));
                                blk1[i][j] = 0.0f;
                                if (GATE_UP) {
                                        acc3[i][j] = __fadd_rn(acc3[i][j], __fmul_rn(blk3[i][j], f3));
                                        blk3[i][j] = 0.0f;
                                }
                        }
                }
        }
#pragma unroll
        for (int i = 0; i < 4; i++) {
                const int m = dcu_gemm_row(0, ty, i);
                if (m >= rows_here)
                        continue;
                float *o = out + (GATE_UP ? r0 + m - c0 : (int64_t)perm[r0 + m]) * ldo;
#pragma unroll
                for (int j = 0; j < 4; j++) {
                        const int n = dcu_gemm_col(n0, tx, j);
                        if (n >= N)
                                continue;
                        float v = dcu_rnd(acc1[i][j], round);
                        if (GATE_UP) {
                                const float g3 = dcu_rnd(acc3[i][j], round);
                                const float sl = __fdiv_rn(v, __fadd_rn(1.0f, expf(-v)));
                                v = dcu_rnd(__fmul_rn(sl, g3), round);
                        }
                        o[n] = v;
                }
        }
}

/* Slots no expert here serves (id < 0), one block per slot row: a zero row. */
__global__ void __launch_bounds__(256)
        dcu_moe_zero_kernel(float *y, int64_t ldy, const int32_t *ids, int64_t ldi, int K, int64_t D) {
        const int64_t s = blockIdx.x;
        if (ids[(s / K) * ldi + s % K] >= 0)
                return;
        for (int64_t d = threadIdx.x; d < D; d += blockDim.x)
                y[s * ldy + d] = 0.0f;
}

/* Combine, one block per token: out[t][d] = sum over the token's slots with id >= 0 in
 * ascending expert id (equal ids: ascending j) of w[t][j] * y[t*K + j][d], fp32 from 0; an
 * id >= E sets DCU_ERR_INDEX (the row is then garbage: the op fails). */
__global__ void __launch_bounds__(256)
        dcu_moe_combine_kernel(float *out, int64_t ldo, const float *y, int64_t ldy, const int32_t *ids, int64_t ldi, const float *wts,
                               int64_t ldw, int K, int E, int64_t D, unsigned *err) {
        __shared__ int order[DCU_MOE_MAX_K];
        __shared__ int n;
        const int64_t t = blockIdx.x;
        if (threadIdx.x == 0) {
                int c = 0;
                for (int j = 0; j < K; j++) {
                        const int32_t id = ids[t * ldi + j];
                        if (id >= E)
                                atomicOr(err, DCU_ERR_INDEX);
                        if (id < 0)
                                continue;
                        int m = c++;
                        while (m > 0 && ids[t * ldi + order[m - 1]] > id) {
                                order[m] = order[m - 1];
                                m--;
                        }
                        order[m] = j;
                }
                n = c;
        }
        __syncthreads();
        for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
                float acc = 0.0f;
                for (int q = 0; q < n; q++) {
                        const int j = order[q];
                        acc = __fadd_rn(acc, __fmul_rn(y[(t * K + j) * ldy + d], wts[t * ldw + j]));
                }
                out[t * ldo + d] = acc;
        }
}
