/* Mixture-of-experts kernels: routing, dispatch, grouped FP8 expert GEMMs and the combine
 * (launchers and the plain math of the whole op: moe.cu). Equivalent CPU code: kernels/cpu/moe.c.
 *
 * Routing, per token (one warp), with s = sigmoid(logit), b = s + bias:
 *   group score g = b(1) + b(2), the two best b of the group (ties: lower index, NaN lowest)
 *   keep the topk_group best groups (ties: lower group), b := -inf elsewhere
 *   ids = the k best b (ties: lower id), in rank order; sum = s[ids[0]] + ... (rank order)
 *   w = s[id] / sum * route_scale (s[id] * route_scale without norm_topk_prob)
 *   ids written ascending with their weights
 * Dispatch: expert e's rows are the slots t*k + j with ids[t][j] == e, in ascending (t, j).
 * Grouped GEMM: a tile is (expert, 64 of its rows) x 64 output columns; the tile list is
 * built on the device from the counts, the grid is sized for the most tiles the batch can
 * have (blocks past the list's end return), the expert's weights come from a device table.
 * Sums as the tiled linear kernel (linear.cuh): per 128-wide K block in fp32, scaled by
 * a_scale * w_scale. */
#pragma once

#include "kernels/cuda/plan.h"
#include "kernels/cuda/reduce.cuh"

/* One expert in the device table: FP8 weights and their 128x128 block scales. */
struct dcu_moe_expert {
        const uint8_t *w1, *w3, *w2; /* gate_proj, up_proj [inter, dim]; down_proj [dim, inter] */
        const float *s1, *s3, *s2;
        int64_t ld1, ld3, ld2;    /* bytes between weight rows */
        int64_t lds1, lds3, lds2; /* floats between scale rows */
};

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

/* Dispatch, one block per expert e: count[e] and its rows rows[e * T + i] = t * K + j, in
 * ascending slot order (a block-wide prefix over tokens, chunk by chunk). */
__global__ void __launch_bounds__(256)
        dcu_moe_dispatch_kernel(const int32_t *ids, int64_t ldi, int64_t T, int K, int32_t *count, int32_t *rows) {
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
                        for (int j = 0; j < K; j++)
                                n += ids[t * ldi + j] == e;
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
                if (n) {
                        int at = part[threadIdx.x];
                        for (int j = 0; j < K; j++)
                                if (ids[t * ldi + j] == e)
                                        rows[(int64_t)e * T + at++] = (int32_t)(t * K + j);
                }
                __syncthreads();
        }
        if (threadIdx.x == 0)
                count[e] = base;
}

/* One block: offsets off[e] (exclusive sum of counts, off[E] = rows in all), the tile list
 * (tile_e, tile_m0) with *n_tiles entries, and inv[slot] = off[e] + i for every dispatched
 * slot, -1 for slots whose id is not an expert. */
__global__ void __launch_bounds__(256)
        dcu_moe_plan_kernel(const int32_t *count, const int32_t *rows, int E, int64_t T, int K, int BM, int32_t *off, int32_t *tile_e,
                            int32_t *tile_m0, int32_t *n_tiles, int32_t *inv) {
        for (int64_t i = threadIdx.x; i < T * K; i += blockDim.x)
                inv[i] = -1;
        if (threadIdx.x == 0) {
                int run = 0, nt = 0;
                for (int e = 0; e < E; e++) {
                        off[e] = run;
                        for (int m0 = 0; m0 < count[e]; m0 += BM) {
                                tile_e[nt] = e;
                                tile_m0[nt] = m0;
                                nt++;
                        }
                        run += count[e];
                }
                off[E] = run;
                *n_tiles = nt;
        }
        __syncthreads();
        for (int e = 0; e < E; e++)
                for (int i = threadIdx.x; i < count[e]; i += blockDim.x)
                        inv[rows[(int64_t)e * T + i]] = off[e] + i;
}

/* The grouped GEMM, block (n-tile, tile): rows m0 .. m0+64 of expert e = tile_e[tile]
 * times the expert's weight, output columns n0 .. n0+64.
 *   GATE_UP: A row m is token rows[e*T + m0 + m] / K of a (x, quantized or not); two
 *            weights (w1, w3) give g1, g3 and the output is h = silu(g1) * g3 (each rounded
 *            to bf16 when round, as the reference's two linears and SwiGLU)
 *   down:    A row m is row off[e] + m0 + m of a (h), the weight w2
 * out row off[e] + m0 + m. Thread (ty, tx) owns rows dcu_gemm_row(0, ty, i) and columns
 * dcu_gemm_col(n0, tx, j) of the tile (plan.h); A and weight slices of 32 k go through
 * shared memory as floats. */
template <bool ACODES, bool GATE_UP>
__global__ void __launch_bounds__(256)
        dcu_moe_gemm_kernel(float *out, int64_t ldo, const void *a, int64_t lda, const float *as, int64_t as_ld,
                            const struct dcu_moe_expert *tab, const int32_t *tile_e, const int32_t *tile_m0, const int32_t *n_tiles,
                            const int32_t *count, const int32_t *off, const int32_t *rows, int64_t T, int K_route, int N, int K,
                            int round) {
        __shared__ float As[DCU_GEMM_BK][DCU_GEMM_BM + 4];
        __shared__ float B1[DCU_GEMM_BK][DCU_GEMM_BN + 4];
        __shared__ float B3[DCU_GEMM_BK][DCU_GEMM_BN + 4];
        __shared__ int64_t arow[DCU_GEMM_BM];
        const int tile = blockIdx.y;
        if (tile >= *n_tiles)
                return; /* the whole block: past the tile list */
        const int e = tile_e[tile], m0 = tile_m0[tile], cnt = count[e], n0 = blockIdx.x * DCU_GEMM_BN;
        const int rows_here = min(cnt - m0, DCU_GEMM_BM);
        const struct dcu_moe_expert ex = tab[e];
        const uint8_t *w1 = GATE_UP ? ex.w1 : ex.w2, *w3 = ex.w3;
        const float *s1 = GATE_UP ? ex.s1 : ex.s2, *s3 = ex.s3;
        const int64_t ld1 = GATE_UP ? ex.ld1 : ex.ld2, ld3 = ex.ld3, lds1 = GATE_UP ? ex.lds1 : ex.lds2, lds3 = ex.lds3;
        const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
        if (tid < DCU_GEMM_BM)
                arow[tid] = tid < rows_here ? (GATE_UP ? (int64_t)rows[(int64_t)e * T + m0 + tid] / K_route : (int64_t)off[e] + m0 + tid) : -1;
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
                float *o = out + ((int64_t)off[e] + m0 + m) * ldo;
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

/* Combine, one block per token: out[t][d] = sum over the token's slots in ascending expert id
 * (equal ids: ascending j) of w[t][j] * y[inv[t*K + j]][d], fp32 from 0; slots with inv < 0
 * (not an expert) add nothing. */
__global__ void __launch_bounds__(256)
        dcu_moe_combine_kernel(float *out, int64_t ldo, const float *y, int64_t ldy, const int32_t *ids, int64_t ldi, const float *wts,
                               int64_t ldw, const int32_t *inv, int K, int64_t D) {
        __shared__ int order[DCU_MOE_MAX_K];
        const int64_t t = blockIdx.x;
        if (threadIdx.x == 0) {
                for (int j = 0; j < K; j++) {
                        int m = j;
                        while (m > 0 && ids[t * ldi + order[m - 1]] > ids[t * ldi + j]) {
                                order[m] = order[m - 1];
                                m--;
                        }
                        order[m] = j;
                }
        }
        __syncthreads();
        for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
                float acc = 0.0f;
                for (int q = 0; q < K; q++) {
                        const int j = order[q];
                        const int32_t r = inv[t * K + j];
                        if (r >= 0)
                                acc = __fadd_rn(acc, __fmul_rn(y[(int64_t)r * ldy + d], wts[t * ldw + j]));
                }
                out[t * ldo + d] = acc;
        }
}
