/* Top-k selection over up to millions of scores per query, shared by the backend
 * (indexer.cu) and kernels/dev/topk.cu.
 *
 * Equivalent math (the CPU's dsv_topk_select on a row of n = min(pos[t] + 1, max_n) scores):
 *   idx[t] = the positions of the k = min(topk, n) largest scores, ascending, then -1 up to
 *            topk; NaN ranks as -inf; equal scores prefer the lower position.
 * With n <= topk that is 0, 1, ..., n-1 (scores unread).
 *
 * One block of 1024 threads per query (plan.h describes the steps): four radix passes over
 * dcu_topk_key(score) with a 256-bin shared histogram find the key thr of the k-th best and
 * how many ties at thr are taken (krem, the lowest positions); then each of the 32 warps
 * counts the elements > thr and == thr in its contiguous range, a scan over the 32 warps
 * gives each warp its first output slot and the rank of its first tie, and the warps write
 * their selected positions in order (ballot + popc). 6 reads of the row in all; rows above a
 * few MB stream from HBM 6 times, the first thing to cut (fewer, wider digits and a
 * compacted candidate list after the first pass). */
#pragma once

#include "kernels/cuda/plan.h"

#define DCU_TOPK_THREADS 1024

__global__ void __launch_bounds__(DCU_TOPK_THREADS)
        dcu_topk_kernel(const float *scores, int64_t lds, const int32_t *tok_pos, int64_t max_n, int topk, int32_t *out, int64_t ldo,
                        int64_t t0) {
        __shared__ uint32_t hist[256];
        __shared__ uint32_t s_prefix, s_krem;
        __shared__ uint32_t w_gt[32], w_eq[32], w_out[32], w_eqb[32];
        const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
        const int64_t t = t0 + blockIdx.x;
        const float *row = scores + (int64_t)blockIdx.x * lds;
        int32_t *o = out + t * ldo;
        int64_t n = (int64_t)tok_pos[t] + 1;
        if (n > max_n)
                n = max_n;
        if (n < 0)
                n = 0;
        if (topk <= 0)
                return;
        if (n <= topk) {
                for (int i = tid; i < topk; i += blockDim.x)
                        o[i] = i < n ? i : -1;
                return;
        }

        uint32_t prefix = 0, krem = (uint32_t)topk;
        for (int pass = 0; pass < 4; pass++) {
                const int shift = 24 - 8 * pass;
                const uint32_t mask = pass == 0 ? 0u : 0xffffffffu << (32 - 8 * pass);
                for (int i = tid; i < 256; i += blockDim.x)
                        hist[i] = 0;
                __syncthreads();
                for (int64_t i = tid; i < n; i += blockDim.x) {
                        const uint32_t u = dcu_topk_key(row[i]);
                        if ((u & mask) == prefix)
                                atomicAdd(&hist[(u >> shift) & 255u], 1u);
                }
                __syncthreads();
                if (tid == 0) {
                        uint32_t k2;
                        const uint32_t dgt = dcu_radix_pick(hist, krem, &k2);
                        s_prefix = prefix | (dgt << shift);
                        s_krem = k2;
                }
                __syncthreads();
                prefix = s_prefix;
                krem = s_krem;
        }
        const uint32_t thr = prefix;    /* key of the k-th best */
        const uint32_t take_eq = krem;  /* ties at thr taken, lowest positions first */

        int64_t b, e;
        dcu_topk_warp_range(n, warp, DCU_TOPK_THREADS / 32, &b, &e);
        uint32_t gt = 0, eq = 0;
        for (int64_t base = b; base < e; base += 32) {
                const int64_t i = base + lane;
                const uint32_t u = i < e ? dcu_topk_key(row[i]) : 0u;
                gt += __popc(__ballot_sync(0xffffffffu, i < e && u > thr));
                eq += __popc(__ballot_sync(0xffffffffu, i < e && u == thr));
        }
        if (lane == 0) {
                w_gt[warp] = gt;
                w_eq[warp] = eq;
        }
        __syncthreads();
        if (tid == 0) {
                uint32_t eqb = 0, ob = 0;
                for (int w = 0; w < DCU_TOPK_THREADS / 32; w++) {
                        const uint32_t left = take_eq > eqb ? take_eq - eqb : 0u;
                        const uint32_t te = w_eq[w] < left ? w_eq[w] : left;
                        w_eqb[w] = eqb;
                        w_out[w] = ob;
                        eqb += w_eq[w];
                        ob += w_gt[w] + te;
                }
        }
        __syncthreads();
        uint32_t eq_rank = w_eqb[warp], pos = w_out[warp];
        const uint32_t lt_mask = (1u << lane) - 1u;
        for (int64_t base = b; base < e; base += 32) {
                const int64_t i = base + lane;
                const uint32_t u = i < e ? dcu_topk_key(row[i]) : 0u;
                const bool is_gt = i < e && u > thr, is_eq = i < e && u == thr;
                const uint32_t eqm = __ballot_sync(0xffffffffu, is_eq);
                const bool sel = is_gt || (is_eq && eq_rank + __popc(eqm & lt_mask) < take_eq);
                const uint32_t selm = __ballot_sync(0xffffffffu, sel);
                if (sel)
                        o[pos + __popc(selm & lt_mask)] = (int32_t)i;
                pos += __popc(selm);
                eq_rank += __popc(eqm);
        }
}
