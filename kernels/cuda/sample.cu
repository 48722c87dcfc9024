/* Token sampling on the GPU: the sample op (DSV_OP_SAMPLE, kernels/backend.h), tokens written to
 * device memory on the backend's stream.
 *
 * Plain math per row (the daemon's CPU sampler, daemon/server/sampler.c):
 *   greedy (temperature <= 0 or top_k == 1): argmax, lowest id on ties (NaN never wins;
 *     a NaN at id 0 returns 0, as the CPU's scan does)
 *   else: mx = logits[argmax]; e_i = exp((l_i - mx) / T) for finite l_i with e_i >= 1e-12;
 *     sort by (e desc, id asc); keep top_k; keep e >= min_p * e_max; keep the shortest prefix
 *     whose sum (double) reaches top_p * sum; u = U[0,1)(mix64(seed ^ 0x5eed5eed5eed), step)
 *     * sum; the first id whose running sum exceeds u.
 * Kernels: per-row argmax and candidate keys, a CUB segmented radix sort (stable, so equal
 * e keep ascending ids), and a per-row finalisation that walks the sorted list in 1024-wide
 * tiles with a block scan in double. The running sums are those of a tree inside each tile,
 * not the CPU's left-to-right sum: the cut and the draw can differ from the CPU only when u or
 * top_p * sum falls within ~1e-16 relative of a boundary. */
#include <limits.h>

#include <cub/cub.cuh>

#include "kernels/backend_plugin.h"
#include "kernels/cuda/common.cuh"

#define SAMPLE_THREADS 1024

struct dcu_best {
        float v;
        int32_t i;
};

DCU_DEV struct dcu_best better_of(struct dcu_best a, struct dcu_best b) {
        return (a.v > b.v || (a.v == b.v && a.i < b.i)) ? a : b;
}

/* Per row: tokens[t] = argmax; for sampled rows also keys (e or -1) and ids. */
__global__ void __launch_bounds__(SAMPLE_THREADS)
        dcu_sample_prep_kernel(const float *logits, int64_t ld, int V, const struct dsv_sample_params *prm, float *keys, int32_t *ids,
                               int32_t *tokens, float *mx_out) {
        __shared__ struct dcu_best sh[32];
        const int64_t t = blockIdx.x;
        const float *row = logits + t * ld;
        const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
        struct dcu_best b = {-INFINITY, INT32_MAX};
        for (int i = threadIdx.x; i < V; i += blockDim.x) {
                float v = row[i];
                struct dcu_best c = {dcu_isnan(v) ? -INFINITY : v, i};
                b = better_of(c, b);
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
                struct dcu_best c = {__shfl_xor_sync(0xffffffffu, b.v, o), __shfl_xor_sync(0xffffffffu, b.i, o)};
                b = better_of(c, b);
        }
        if (lane == 0)
                sh[warp] = b;
        __syncthreads();
        if (warp == 0) {
                b = lane < (int)(blockDim.x >> 5) ? sh[lane] : (struct dcu_best){-INFINITY, INT32_MAX};
#pragma unroll
                for (int o = 16; o > 0; o >>= 1) {
                        struct dcu_best c = {__shfl_xor_sync(0xffffffffu, b.v, o), __shfl_xor_sync(0xffffffffu, b.i, o)};
                        b = better_of(c, b);
                }
                if (lane == 0)
                        sh[0] = b;
        }
        __syncthreads();
        const int32_t best = dcu_isnan(row[0]) ? 0 : sh[0].i;
        if (threadIdx.x == 0) {
                tokens[t] = best;
                mx_out[t] = row[best];
        }
        const struct dsv_sample_params p = prm[t];
        if (p.temperature <= 0.0f || p.top_k == 1) {
                if (keys) /* greedy row in a batch that sorts: give the sort defined keys */
                        for (int i = threadIdx.x; i < V; i += blockDim.x) {
                                keys[t * V + i] = -1.0f;
                                ids[t * V + i] = i;
                        }
                return;
        }
        const float mx = row[best], inv_t = 1.0f / p.temperature;
        for (int i = threadIdx.x; i < V; i += blockDim.x) {
                const float l = row[i];
                const float e = expf(__fmul_rn(__fsub_rn(l, mx), inv_t));
                const bool cand = e >= 1e-12f && fabsf(l) <= 3.402823466e38f;
                keys[t * V + i] = cand ? e : -1.0f;
                ids[t * V + i] = i;
        }
}

struct dcu_min_op {
        __device__ int operator()(int a, int b) const { return a < b ? a : b; }
};
typedef cub::BlockScan<double, SAMPLE_THREADS> dcu_scan_t;
typedef cub::BlockReduce<int, SAMPLE_THREADS> dcu_ired_t;
struct dcu_sample_smem {
        union {
                typename dcu_scan_t::TempStorage scan;
                typename dcu_ired_t::TempStorage red;
        } tmp;
        double carry, at;
        int first, k;
};

/* Walks the running sums c_i = key[0] + ... + key[i] (double) for i < k, tile by tile, and
 * returns the first i with c_i >= want (strict: c_i > want), or k when none; *at = c_i there
 * and *total = the sum of everything walked (all of it when there is no hit). */
DCU_DEV int scan_find(struct dcu_sample_smem *sm, const float *key, int k, double want, bool strict, double *at, double *total) {
        __syncthreads(); /* everyone has read the previous call's results */
        if (threadIdx.x == 0) {
                sm->carry = 0.0;
                sm->first = INT_MAX;
                sm->at = 0.0;
        }
        __syncthreads();
        for (int base = 0; base < k; base += blockDim.x) {
                const int i = base + threadIdx.x;
                const double c0 = sm->carry;
                double incl;
                dcu_scan_t(sm->tmp.scan).InclusiveSum(i < k ? (double)key[i] : 0.0, incl);
                incl += c0;
                const bool hit = i < k && (strict ? want < incl : incl >= want);
                if (hit)
                        atomicMin(&sm->first, i);
                __syncthreads();
                if (hit && i == sm->first)
                        sm->at = incl;
                if (threadIdx.x == blockDim.x - 1)
                        sm->carry = incl;
                __syncthreads();
                if (sm->first != INT_MAX)
                        break;
        }
        *at = sm->at;
        *total = sm->carry;
        return sm->first == INT_MAX ? k : sm->first;
}

/* Per sampled row: the cuts and the draw over the candidates sorted by (e desc, id asc). */
__global__ void __launch_bounds__(SAMPLE_THREADS)
        dcu_sample_final_kernel(const float *keys, const int32_t *ids, int V, const struct dsv_sample_params *prm, int32_t *tokens) {
        __shared__ struct dcu_sample_smem sm;
        const int64_t t = blockIdx.x;
        const struct dsv_sample_params p = prm[t];
        if (p.temperature <= 0.0f || p.top_k == 1)
                return;
        const float *ky = keys + t * V;
        const int32_t *id = ids + t * V;

        int cnt = 0;
        for (int i = threadIdx.x; i < V; i += blockDim.x)
                cnt += ky[i] >= 0.0f;
        cnt = dcu_ired_t(sm.tmp.red).Sum(cnt);
        if (threadIdx.x == 0)
                sm.k = cnt;
        __syncthreads();
        int k = sm.k;
        if (k == 0)
                return; /* no candidate: tokens[t] keeps the argmax */
        if (p.top_k > 0 && p.top_k < k)
                k = p.top_k;
        if (p.min_p > 0.0f) {
                const float thr = p.min_p * ky[0];
                int first = k;
                for (int i = 1 + threadIdx.x; i < k; i += blockDim.x)
                        if (ky[i] < thr)
                                first = min(first, i);
                first = dcu_ired_t(sm.tmp.red).Reduce(first, dcu_min_op());
                if (threadIdx.x == 0)
                        sm.k = first;
                __syncthreads();
                k = sm.k;
        }
        double at, sum;
        scan_find(&sm, ky, k, INFINITY, false, &at, &sum);
        if (p.top_p < 1.0f) {
                double total = sum;
                const int j = scan_find(&sm, ky, k, (double)p.top_p * total, false, &at, &sum);
                if (j < k) {
                        k = j + 1;
                        sum = at;
                } else {
                        sum = total;
                }
        }
        const double u = dcu_rand_u01(dcu_mix64(p.seed ^ 0x5eed5eed5eedull), p.step) * sum;
        double total;
        const int i = scan_find(&sm, ky, k, u, true, &at, &total);
        if (threadIdx.x == 0)
                tokens[t] = id[i < k ? i : k - 1];
}

/* ------------------------------------------------------------------ entry */
static int sample_rows(struct dcu_ctx *c, const struct dsv_tensor *logits, const struct dsv_sample_params *params, int n,
                       int32_t *tokens) { /* tokens: device memory */
        const int V = (int)dcu_cols(logits);
        const int64_t ld = dcu_ld(logits);
        bool any_sampled = false;
        for (int t = 0; t < n; t++)
                any_sampled |= !(params[t].temperature <= 0.0f || params[t].top_k == 1);
        const size_t nv = (size_t)n * (size_t)V;
        size_t sort_bytes = 0;
        if (any_sampled &&
            cub::DeviceSegmentedRadixSort::SortPairsDescending(NULL, sort_bytes, (const float *)NULL, (float *)NULL,
                                                               (const int32_t *)NULL, (int32_t *)NULL, (int)nv, n, (const int *)NULL,
                                                               (const int *)NULL, 0, 32, c->stream) != cudaSuccess)
                return dcu_fail(-EIO, __FILE__, __LINE__, "cub: sort size query failed");
        const size_t a = 256;
        const size_t o_prm = 0, o_tok = dcu_round_up(sizeof(*params) * n, a), o_mx = o_tok + dcu_round_up(4 * n, a),
                     o_off = o_mx + dcu_round_up(4 * n, a), o_keys = o_off + dcu_round_up(4 * (n + 1), a),
                     o_ids = o_keys + (any_sampled ? dcu_round_up(4 * nv, a) : 0),
                     o_k2 = o_ids + (any_sampled ? dcu_round_up(4 * nv, a) : 0),
                     o_i2 = o_k2 + (any_sampled ? dcu_round_up(4 * nv, a) : 0),
                     o_tmp = o_i2 + (any_sampled ? dcu_round_up(4 * nv, a) : 0), total = o_tmp + sort_bytes + a;
        uint8_t *buf;
        int *offs = (int *)malloc(sizeof(int) * (size_t)(n + 1));
        if (!offs)
                return -ENOMEM;
        for (int t = 0; t <= n; t++)
                offs[t] = t * V;
        int r = dcu_scratch(c, total, (void **)&buf);
        if (r < 0) {
                free(offs);
                return r;
        }
        struct dsv_sample_params *d_prm = (struct dsv_sample_params *)(buf + o_prm);
        int32_t *d_tok = (int32_t *)(buf + o_tok);
        float *d_mx = (float *)(buf + o_mx);
        int *d_off = (int *)(buf + o_off);
        float *keys = (float *)(buf + o_keys), *keys2 = (float *)(buf + o_k2);
        int32_t *ids = (int32_t *)(buf + o_ids), *ids2 = (int32_t *)(buf + o_i2);
        cudaError_t e = cudaMemcpyAsync(d_prm, params, sizeof(*params) * n, cudaMemcpyHostToDevice, c->stream);
        if (e == cudaSuccess)
                e = cudaMemcpyAsync(d_off, offs, sizeof(int) * (size_t)(n + 1), cudaMemcpyHostToDevice, c->stream);
        if (e == cudaSuccess) {
                dcu_sample_prep_kernel<<<(unsigned)n, SAMPLE_THREADS, 0, c->stream>>>((const float *)logits->data, ld, V, d_prm,
                                                                                     any_sampled ? keys : NULL, ids, d_tok, d_mx);
                e = cudaGetLastError();
        }
        if (e == cudaSuccess && any_sampled) {
                size_t sb = sort_bytes;
                e = cub::DeviceSegmentedRadixSort::SortPairsDescending(buf + o_tmp, sb, keys, keys2, ids, ids2, (int)nv, n, d_off,
                                                                       d_off + 1, 0, 32, c->stream);
                if (e == cudaSuccess) {
                        dcu_sample_final_kernel<<<(unsigned)n, SAMPLE_THREADS, 0, c->stream>>>(keys2, ids2, V, d_prm, d_tok);
                        e = cudaGetLastError();
                }
        }
        if (e == cudaSuccess)
                e = cudaMemcpyAsync(tokens, d_tok, sizeof(int32_t) * (size_t)n, cudaMemcpyDeviceToDevice, c->stream);
        if (e != cudaSuccess)
                r = dcu_fail_cuda(e, "sampling", __FILE__, __LINE__);
        dcu_scratch_free(c, buf);
        free(offs);
        return r;
}

bool dcu_sample_ok(const struct dsv_op_sample *p) {
        const struct dsv_tensor *l = p->logits, *t = p->tokens;
        if (!l || !t || !p->params || l->type != DSV_F32 || l->stride % 4 != 0 || t->type != DSV_I32 || l->ne[0] <= 0 ||
            l->ne[1] < 0 || l->ne[1] > INT32_MAX)
                return false;
        const int64_t n = l->ne[1];
        /* tokens: n I32 in one row, or one per row of a column */
        const bool packed = (t->ne[1] == 1 && t->ne[0] >= n) || (t->ne[0] == 1 && t->ne[1] >= n && t->stride == 4);
        return packed && l->ne[0] <= INT32_MAX / (n > 0 ? n : 1);
}

int dcu_sample(struct dcu_ctx *c, const struct dsv_op_sample *p) {
        const int n = (int)p->logits->ne[1];
        if (n == 0)
                return 0;
        return sample_rows(c, p->logits, p->params, n, (int32_t *)p->tokens->data);
}
