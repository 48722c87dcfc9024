/* Lightning-indexer scores, shared by the backend (indexer.cu) and kernels/dev/indexer_scores.cu.
 *
 * Equivalent math, query token t at position p (sequence seq[t]), key positions s <= p:
 *   wh[h]    = ((w[t,h] * ws1) * q_scale[t, h]) * ws2        (exact mode: no q_scale)
 *   dot[h,s] = sum_i q[t,h,i] * k[s,i]                        (q, k: e4m3 codes or f32)
 *   score[s] = k_scale[s] * sum_h wh[h] * relu(dot[h,s])      (exact mode: k_scale = 1)
 * where relu(x) = x > 0 ? x : 0 (NaN -> 0, as on the CPU), and k[s] is read from the paged
 * cache through the sequence's block table. Positions beyond min(p + 1, max_ctx) are not
 * written. With skip_short, queries with p + 1 <= topk are skipped (every position is
 * selected; the scores are not needed).
 *
 * Kernel: block (blockIdx.x, blockIdx.y) = (tile of 32 key positions, query t0 + y); 256
 * threads, thread (key j = tid % 32, head group g = tid / 32) computing the dots of key j
 * with heads g, g + 8, ...; the query (all heads, as floats) and the 32 keys (as floats,
 * rows padded to d + 1 against bank conflicts) sit in shared memory; the 8 group partials
 * are summed in a fixed order. Shared memory: (H*d + 32*(d+1) + H + 32 + 8*32) floats. */
#pragma once

#include "kernels/cuda/plan.h"
#include "kernels/cuda/reduce.cuh"

#define DCU_IDX_TK 32

static inline size_t dcu_index_scores_smem(int H, int d) {
        return ((size_t)H * d + (size_t)DCU_IDX_TK * (d + 1) + (size_t)H + DCU_IDX_TK + 8 * DCU_IDX_TK) * sizeof(float);
}

template <bool FAITHFUL>
__global__ void __launch_bounds__(256)
        dcu_index_scores_kernel(float *scores, int64_t lds, const void *q, int64_t ldq, const float *qs, int64_t ldqs, const float *w,
                                int64_t ldw, const uint8_t *base, struct dcu_kv kv, const int32_t *tok_seq, const int32_t *tok_pos,
                                const int32_t *bt, int64_t ldbt, int64_t max_ctx, int H, int d, float ws1, float ws2, int64_t t0,
                                int topk, int skip_short, unsigned *err) {
        DCU_DYN_SMEM(float, sm);
        float *qf = sm, *kf = qf + H * d, *wh = kf + DCU_IDX_TK * (d + 1), *ksc = wh + H, *part = ksc + DCU_IDX_TK;
        const int tid = threadIdx.x;
        const int64_t t = t0 + blockIdx.y;
        const int64_t p = tok_pos[t];
        int64_t n = p + 1 < max_ctx ? p + 1 : max_ctx;
        const int64_t s0 = (int64_t)blockIdx.x * DCU_IDX_TK;
        if (p < 0) {
                if (tid == 0 && blockIdx.x == 0)
                        atomicOr(err, DCU_ERR_INDEX);
                return;
        }
        if (s0 >= n || (skip_short && p + 1 <= topk))
                return;
        const int32_t *pages = bt + (int64_t)tok_seq[t] * ldbt;
        const int nbh = (d + DCU_QBLOCK - 1) / DCU_QBLOCK;

        for (int i = tid; i < H * d; i += blockDim.x)
                qf[i] = FAITHFUL ? dcu_e4m3_to_f32(((const uint8_t *)q)[t * ldq + i]) : ((const float *)q)[t * ldq + i];
        for (int h = tid; h < H; h += blockDim.x) {
                const float wv = w[t * ldw + h];
                wh[h] = FAITHFUL ? __fmul_rn(__fmul_rn(__fmul_rn(wv, ws1), qs[t * ldqs + (int64_t)h * nbh]), ws2)
                                 : __fmul_rn(__fmul_rn(wv, ws1), ws2);
        }
        if (tid < DCU_IDX_TK) {
                const int64_t s = s0 + tid;
                float kscale = 0.0f;
                if (s < n) {
                        if (pages[s / kv.page_tokens] < 0) {
                                atomicOr(err, DCU_ERR_INDEX);
                        } else {
                                const int64_t slot = dcu_kv_slot(pages, kv.page_tokens, s);
                                kscale = FAITHFUL ? *(const float *)(base + dcu_kv_idx_scale_off(&kv, slot)) : 1.0f;
                        }
                }
                ksc[tid] = kscale;
        }
        for (int e = tid; e < DCU_IDX_TK * d; e += blockDim.x) {
                const int j = e / d, i = e % d;
                const int64_t s = s0 + j;
                float v = 0.0f;
                if (s < n && pages[s / kv.page_tokens] >= 0) {
                        const uint8_t *kp = base + dcu_kv_idx_off(&kv, dcu_kv_slot(pages, kv.page_tokens, s));
                        v = FAITHFUL ? dcu_e4m3_to_f32(kp[i]) : ((const float *)kp)[i];
                }
                kf[j * (d + 1) + i] = v;
        }
        __syncthreads();

        const int j = tid % DCU_IDX_TK, g = tid / DCU_IDX_TK;
        const float *kr = kf + j * (d + 1);
        float acc = 0.0f;
        for (int h = g; h < H; h += 8) {
                const float *qh = qf + h * d;
                float dot = 0.0f;
                for (int i = 0; i < d; i++)
                        dot = fmaf(qh[i], kr[i], dot);
                acc = __fadd_rn(acc, __fmul_rn(dot > 0 ? dot : 0.0f, wh[h]));
        }
        part[g * DCU_IDX_TK + j] = acc;
        __syncthreads();
        if (tid < DCU_IDX_TK) {
                const int64_t s = s0 + tid;
                float tot = 0.0f;
                for (int gg = 0; gg < 8; gg++)
                        tot = __fadd_rn(tot, part[gg * DCU_IDX_TK + tid]);
                if (s < n)
                        scores[(int64_t)blockIdx.y * lds + s] = __fmul_rn(tot, ksc[tid]);
        }
}
