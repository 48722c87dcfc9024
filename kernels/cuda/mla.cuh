/* MLA attention kernels, shared by the backend (mla.cu) and kernels/dev/mla_decode.cu.
 *
 * Decode, absorbed form, token t, head h, selected positions idx[t][j] (j < K, -1 = none):
 *   q_c      = W_UK[h]^T q_nope                                 (cuBLAS, bf16 in faithful)
 *   s[h, j]  = bf16(bf16(bf16(q_c . c_j) + bf16(q_pe . kpe_j)) * scale)      (valid j)
 *   p[h, :]  = bf16(softmax(s[h, valid]))                       (0 for invalid j)
 *   o_c[h]   = bf16(sum_j p[h, j] c_j)
 *   out[h]   = bf16(W_UV[h] o_c[h])                             (cuBLAS)
 * (exact mode: no bf16 rounding.) c_j / kpe_j come from the paged cache: FP8 codes times the
 * record's per-128 scale, bf16 k_pe; or the f32 record.
 *
 * Three kernels, all plain fp32 SIMT, with scores and probabilities in a scratch S[t][h][K]:
 *   scores:  block = (32 positions, 32 heads, token); 16x16 threads, each 2 heads x 2
 *            positions; 64-wide slices of q_c and of the dequantized latents in shared memory
 *            (the latent slice is shared by the 32 heads: MQA reuse), then the rope part.
 *   softmax: block per (token, head) row of K.
 *   pv:      block = (64 latent dims, 32 heads, token); 16x16 threads, each 2 heads x 4 dims;
 *            32 positions at a time, p and the dequantized latents in shared memory;
 *            positions summed in order j = 0, 1, ... as on the CPU.
 * What separates this from FlashMLA's ~410 TFLOP/s (H800): fp32 FFMA instead of wgmma on
 * bf16/FP8 operands (the FFMA ceiling is ~60 TFLOP/s), scores/probabilities round-tripping
 * through memory instead of an online softmax in registers, no TMA/mbarrier pipelining of the
 * KV gather, and 32-head tiles re-reading each latent 4 times for 128 heads. */
#pragma once

#include "kernels/cuda/plan.h"
#include "kernels/cuda/reduce.cuh"

#define DCU_MLA_JT 32 /* positions per tile */
#define DCU_MLA_HT 32 /* heads per tile */
#define DCU_MLA_CT 64 /* latent dims per slice */

/* Dequantized element c of the latent of the record at rec (fp8: code * scale). */
template <bool FP8> static __device__ __forceinline__ float dcu_mla_lat(const uint8_t *rec, int c, int kv_lora) {
        if (FP8) {
                const float *sc = (const float *)(rec + kv_lora);
                return __fmul_rn(dcu_e4m3_to_f32(rec[c]), sc[c / DCU_QBLOCK]);
        }
        return ((const float *)rec)[c];
}
template <bool FP8> static __device__ __forceinline__ float dcu_mla_kpe(const uint8_t *rec, int r, int kv_lora, int64_t kpe_off) {
        if (FP8)
                return dcu_bf16_to_f32(*(const uint16_t *)(rec + kpe_off + 2 * r));
        return ((const float *)rec)[kv_lora + r];
}

/* Byte offsets of the records of positions j0 .. j0+31 of token t (-1: not selected). */
static __device__ __forceinline__ void dcu_mla_tile_records(int64_t *roff, const int32_t *idx_row, int j0, int K, const int32_t *pages,
                                                            const struct dcu_kv *kv, unsigned *err) {
        const int tid = threadIdx.x;
        if (tid < DCU_MLA_JT) {
                const int j = j0 + tid;
                int64_t off = -1;
                if (j < K) {
                        const int32_t pj = idx_row[j];
                        if (pj >= 0) {
                                if (pages[pj / kv->page_tokens] < 0)
                                        atomicOr(err, DCU_ERR_INDEX);
                                else
                                        off = dcu_kv_mla_off(kv, dcu_kv_slot(pages, kv->page_tokens, pj));
                        }
                }
                roff[tid] = off;
        }
}

template <bool FP8>
__global__ void __launch_bounds__(256)
        dcu_mla_scores_kernel(float *S, const float *qc, const float *q, int64_t ldq, const int32_t *idx, int64_t ldi,
                              const uint8_t *base, struct dcu_kv kv, const int32_t *tok_seq, const int32_t *bt, int64_t ldbt, int H,
                              int nope, int rope, int C, int K, float scale, int faithful, int64_t t0, unsigned *err) {
        __shared__ float Qs[DCU_MLA_CT][DCU_MLA_HT + 1];
        __shared__ float Ks[DCU_MLA_CT][DCU_MLA_JT + 1];
        __shared__ int64_t roff[DCU_MLA_JT];
        const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
        const int j0 = blockIdx.x * DCU_MLA_JT, h0 = blockIdx.y * DCU_MLA_HT;
        const int64_t tl = blockIdx.z, t = t0 + tl;
        const int qk = nope + rope;
        const int64_t kpe_off = dcu_kv_mla_kpe(&kv);
        const int32_t *idx_row = idx + t * ldi;
        dcu_mla_tile_records(roff, idx_row, j0, K, bt + (int64_t)tok_seq[t] * ldbt, &kv, err);

        float acc[2][2][2]; /* [latent | rope][head][position] */
#pragma unroll
        for (int a = 0; a < 2; a++)
#pragma unroll
                for (int i = 0; i < 2; i++)
#pragma unroll
                        for (int jj = 0; jj < 2; jj++)
                                acc[a][i][jj] = 0.0f;
#pragma unroll
        for (int part = 0; part < 2; part++) {
                const int D = part == 0 ? C : rope;
                for (int c0 = 0; c0 < D; c0 += DCU_MLA_CT) {
                        __syncthreads(); /* roff written / previous slice consumed */
                        for (int e = tid; e < DCU_MLA_CT * DCU_MLA_HT; e += blockDim.x) {
                                const int hh = e / DCU_MLA_CT, cc = e % DCU_MLA_CT, h = h0 + hh, cd = c0 + cc;
                                float v = 0.0f;
                                if (h < H && cd < D)
                                        v = part == 0 ? qc[(tl * H + h) * (int64_t)C + cd] : q[t * ldq + (int64_t)h * qk + nope + cd];
                                Qs[cc][hh] = v;
                        }
                        for (int e = tid; e < DCU_MLA_CT * DCU_MLA_JT; e += blockDim.x) {
                                const int jj = e / DCU_MLA_CT, cc = e % DCU_MLA_CT, cd = c0 + cc;
                                const int64_t off = roff[jj];
                                float v = 0.0f;
                                if (off >= 0 && cd < D)
                                        v = part == 0 ? dcu_mla_lat<FP8>(base + off, cd, C) : dcu_mla_kpe<FP8>(base + off, cd, C, kpe_off);
                                Ks[cc][jj] = v;
                        }
                        __syncthreads();
#pragma unroll 8
                        for (int cc = 0; cc < DCU_MLA_CT; cc++) {
                                const float a0 = Qs[cc][ty * 2], a1 = Qs[cc][ty * 2 + 1];
                                const float b0 = Ks[cc][tx * 2], b1 = Ks[cc][tx * 2 + 1];
                                acc[part][0][0] = fmaf(a0, b0, acc[part][0][0]);
                                acc[part][0][1] = fmaf(a0, b1, acc[part][0][1]);
                                acc[part][1][0] = fmaf(a1, b0, acc[part][1][0]);
                                acc[part][1][1] = fmaf(a1, b1, acc[part][1][1]);
                        }
                }
        }
#pragma unroll
        for (int i = 0; i < 2; i++) {
                const int h = h0 + ty * 2 + i;
#pragma unroll
                for (int jj = 0; jj < 2; jj++) {
                        const int j = j0 + tx * 2 + jj;
                        if (h >= H || j >= K)
                                continue;
                        float s = -INFINITY;
                        if (roff[tx * 2 + jj] >= 0) {
                                const float a = dcu_rnd(acc[0][i][jj], faithful), b = dcu_rnd(acc[1][i][jj], faithful);
                                s = dcu_rnd(__fmul_rn(dcu_rnd(__fadd_rn(a, b), faithful), scale), faithful);
                        }
                        S[(tl * H + h) * (int64_t)K + j] = s;
                }
        }
}

/* Softmax of row (token t, head h) of S over the selected positions (idx >= 0), in place:
 *   m = max s;  e_j = exp(s_j - m);  p_j = bf16(e_j * (1 / sum e))   (0 where not selected)
 * A row with nothing selected becomes all zeros. */
__global__ void __launch_bounds__(256) dcu_mla_softmax_kernel(float *S, const int32_t *idx, int64_t ldi, int H, int K, int faithful,
                                                             int64_t t0) {
        __shared__ float sh[32];
        const int64_t tl = blockIdx.x / H, t = t0 + tl;
        float *row = S + (int64_t)blockIdx.x * K;
        const int32_t *ir = idx + t * ldi;
        float m = -INFINITY;
        int any = 0;
        for (int j = threadIdx.x; j < K; j += blockDim.x)
                if (ir[j] >= 0) {
                        any = 1;
                        m = fmaxf(m, row[j]);
                }
        any = __syncthreads_or(any);
        if (!any) {
                for (int j = threadIdx.x; j < K; j += blockDim.x)
                        row[j] = 0.0f;
                return;
        }
        m = dcu_block_max(m, sh);
        float sum = 0.0f;
        for (int j = threadIdx.x; j < K; j += blockDim.x)
                if (ir[j] >= 0)
                        sum += expf(row[j] - m);
        sum = dcu_block_sum(sum, sh);
        const float inv = 1.0f / sum;
        for (int j = threadIdx.x; j < K; j += blockDim.x)
                row[j] = ir[j] >= 0 ? dcu_rnd(__fmul_rn(expf(row[j] - m), inv), faithful) : 0.0f;
}

template <bool FP8>
__global__ void __launch_bounds__(256)
        dcu_mla_pv_kernel(float *oc, const float *S, const int32_t *idx, int64_t ldi, const uint8_t *base, struct dcu_kv kv,
                          const int32_t *tok_seq, const int32_t *bt, int64_t ldbt, int H, int C, int K, int faithful, int64_t t0,
                          unsigned *err) {
        __shared__ float Ps[DCU_MLA_JT][DCU_MLA_HT + 1];
        __shared__ float Ls[DCU_MLA_JT][DCU_MLA_CT + 4];
        __shared__ int64_t roff[DCU_MLA_JT];
        const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
        const int c0 = blockIdx.x * DCU_MLA_CT, h0 = blockIdx.y * DCU_MLA_HT;
        const int64_t tl = blockIdx.z, t = t0 + tl;
        const int32_t *idx_row = idx + t * ldi, *pages = bt + (int64_t)tok_seq[t] * ldbt;
        float acc[2][4];
#pragma unroll
        for (int i = 0; i < 2; i++)
#pragma unroll
                for (int q = 0; q < 4; q++)
                        acc[i][q] = 0.0f;
        for (int j0 = 0; j0 < K; j0 += DCU_MLA_JT) {
                __syncthreads();
                dcu_mla_tile_records(roff, idx_row, j0, K, pages, &kv, err);
                for (int e = tid; e < DCU_MLA_JT * DCU_MLA_HT; e += blockDim.x) {
                        const int hh = e / DCU_MLA_JT, jj = e % DCU_MLA_JT, h = h0 + hh, j = j0 + jj;
                        Ps[jj][hh] = (h < H && j < K) ? S[(tl * H + h) * (int64_t)K + j] : 0.0f;
                }
                __syncthreads();
                for (int e = tid; e < DCU_MLA_JT * DCU_MLA_CT; e += blockDim.x) {
                        const int jj = e / DCU_MLA_CT, cc = e % DCU_MLA_CT, cd = c0 + cc;
                        const int64_t off = roff[jj];
                        Ls[jj][cc] = (off >= 0 && cd < C) ? dcu_mla_lat<FP8>(base + off, cd, C) : 0.0f;
                }
                __syncthreads();
                const int jn = K - j0 < DCU_MLA_JT ? K - j0 : DCU_MLA_JT;
                for (int jj = 0; jj < jn; jj++) {
                        if (roff[jj] < 0)
                                continue; /* the CPU sums selected positions only */
                        const float p0 = Ps[jj][ty * 2], p1 = Ps[jj][ty * 2 + 1];
#pragma unroll
                        for (int q = 0; q < 4; q++) {
                                const float l = Ls[jj][tx * 4 + q];
                                acc[0][q] = fmaf(p0, l, acc[0][q]);
                                acc[1][q] = fmaf(p1, l, acc[1][q]);
                        }
                }
        }
#pragma unroll
        for (int i = 0; i < 2; i++) {
                const int h = h0 + ty * 2 + i;
#pragma unroll
                for (int q = 0; q < 4; q++) {
                        const int cd = c0 + tx * 4 + q;
                        if (h < H && cd < C)
                                oc[(tl * H + h) * (int64_t)C + cd] = dcu_rnd(acc[i][q], faithful);
                }
        }
}

/* Prefill (expanded), one block per (head h, token t); scores in shared memory (K floats):
 *   s_j = bf16(bf16(q_h . [k_nope_{j,h} ; kpe_j]) * scale)   (selected j)
 *   p = bf16(softmax(s));  out_h = bf16(sum_j p_j v_{j,h})
 * k_nope_{j,h} = kvb[idx_j][h*(nope+v) .. +nope), v_{j,h} = kvb[idx_j][h*(nope+v)+nope .. +v).
 * Each (token, head) re-reads its K keys and values from L2/HBM: no reuse across queries. */
__global__ void __launch_bounds__(256)
        dcu_mla_prefill_kernel(float *out, int64_t ldo, const float *q, int64_t ldq, const float *kvb, int64_t ldkv, const float *kpe,
                               int64_t ldkpe, const int32_t *idx, int64_t ldi, int64_t n_ctx, int H, int nope, int rope, int V, int K,
                               float scale, int faithful, unsigned *err) {
        DCU_DYN_SMEM(float, sm);
        float *qh = sm, *s = qh + nope + rope, *red = s + K;
        const int h = blockIdx.x;
        const int64_t t = blockIdx.y;
        const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nw = blockDim.x >> 5;
        const int qk = nope + rope;
        const int32_t *ir = idx + t * ldi;
        for (int i = tid; i < qk; i += blockDim.x)
                qh[i] = q[t * ldq + (int64_t)h * qk + i];
        __syncthreads();
        for (int j = warp; j < K; j += nw) {
                const int32_t ij = ir[j];
                float v = -INFINITY;
                if (ij >= 0 && ij < n_ctx) {
                        const float *kr = kvb + (int64_t)ij * ldkv + (int64_t)h * (nope + V);
                        const float *pr = kpe + (int64_t)ij * ldkpe;
                        float a = 0.0f, b = 0.0f;
                        for (int i = lane; i < nope; i += 32)
                                a = fmaf(qh[i], kr[i], a);
                        for (int i = lane; i < rope; i += 32)
                                b = fmaf(qh[nope + i], pr[i], b);
                        a = dcu_warp_sum(a);
                        b = dcu_warp_sum(b);
                        v = dcu_rnd(__fmul_rn(dcu_rnd(__fadd_rn(a, b), faithful), scale), faithful);
                } else if (ij >= n_ctx && lane == 0) {
                        atomicOr(err, DCU_ERR_INDEX);
                }
                if (lane == 0)
                        s[j] = v;
        }
        __syncthreads();
        float m = -INFINITY;
        int any = 0;
        for (int j = tid; j < K; j += blockDim.x)
                if (ir[j] >= 0 && ir[j] < n_ctx) {
                        any = 1;
                        m = fmaxf(m, s[j]);
                }
        any = __syncthreads_or(any);
        m = dcu_block_max(m, red);
        float sum = 0.0f;
        for (int j = tid; j < K; j += blockDim.x)
                if (ir[j] >= 0 && ir[j] < n_ctx)
                        sum += expf(s[j] - m);
        sum = dcu_block_sum(sum, red);
        const float inv = 1.0f / sum;
        for (int j = tid; j < K; j += blockDim.x)
                s[j] = (any && ir[j] >= 0 && ir[j] < n_ctx) ? dcu_rnd(__fmul_rn(expf(s[j] - m), inv), faithful) : 0.0f;
        __syncthreads();
        for (int dd = tid; dd < V; dd += blockDim.x) {
                float o = 0.0f;
                for (int j = 0; j < K; j++) {
                        const int32_t ij = ir[j];
                        if (ij < 0 || ij >= n_ctx)
                                continue;
                        o = fmaf(s[j], kvb[(int64_t)ij * ldkv + (int64_t)h * (nope + V) + nope + dd], o);
                }
                out[t * ldo + (int64_t)h * V + dd] = dcu_rnd(o, faithful);
        }
}
