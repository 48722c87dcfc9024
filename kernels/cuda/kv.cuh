/* Kernels of kernels/cuda/kv.cu: paged KV cache writes and reads (plain math there). */
#pragma once

#include "kernels/cuda/plan.h"
#include "kernels/cuda/quant.cuh"
#include "kernels/cuda/reduce.cuh"

static __device__ __forceinline__ void st_f32_bytes(uint8_t *p, float v) {
        uint32_t u = dcu_f32_bits(v);
        p[0] = (uint8_t)u;
        p[1] = (uint8_t)(u >> 8);
        p[2] = (uint8_t)(u >> 16);
        p[3] = (uint8_t)(u >> 24);
}
static __device__ __forceinline__ float ld_f32_bytes(const uint8_t *p) {
        return dcu_bits_f32((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
}

/* act_quant of n <= 128 values by one warp: codes to q, the scale's bytes to s (records are
 * not 4-byte aligned). */
static __device__ __forceinline__ void warp_quant(const float *x, int n, uint8_t *q, uint8_t *s) {
        const float sc = dcu_warp_quant(x, n, q);
        if ((threadIdx.x & 31) == 0)
                st_f32_bytes(s, sc);
}

/* kv_store, one block per token t at slot = slots[t] (< 0: flagged, skipped):
 *   FP8: rec[0, C) = act_quant codes of lat[t], rec[C, C + 4 nb) = their scales,
 *        rec[C + 4 nb, + 2 rope) = bf16(kpe[t]); key codes / scales in the key areas
 *   F32: rec = lat[t] | kpe[t], key area = key[t] */
__global__ void dcu_kv_store_kernel(uint8_t *base, struct dcu_kv kv, const int32_t *slots, const float *lat, int64_t ldl,
                                    const float *kpe, int64_t ldk, const float *key, int64_t ldkey, unsigned *err) {
        const int64_t t = blockIdx.x;
        const int64_t slot = slots[t];
        if (slot < 0) {
                if (threadIdx.x == 0)
                        atomicOr(err, DCU_ERR_INDEX);
                return;
        }
        const float *l = lat + t * ldl, *pe = kpe + t * ldk, *ky = key + t * ldkey;
        uint8_t *rec = base + dcu_kv_mla_off(&kv, slot);
        uint8_t *kq = base + dcu_kv_idx_off(&kv, slot);
        if (!kv.fp8) {
                float *rf = (float *)rec, *kf = (float *)kq;
                for (int i = threadIdx.x; i < kv.kv_lora; i += blockDim.x)
                        rf[i] = l[i];
                for (int i = threadIdx.x; i < kv.rope; i += blockDim.x)
                        rf[kv.kv_lora + i] = pe[i];
                for (int i = threadIdx.x; i < kv.index_dim; i += blockDim.x)
                        kf[i] = ky[i];
                return;
        }
        const int warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
        const int nb = (kv.kv_lora + DCU_QBLOCK - 1) / DCU_QBLOCK, nbk = (kv.index_dim + DCU_QBLOCK - 1) / DCU_QBLOCK;
        for (int b = warp; b < nb; b += nw)
                warp_quant(l + b * DCU_QBLOCK, min(DCU_QBLOCK, kv.kv_lora - b * DCU_QBLOCK), rec + b * DCU_QBLOCK,
                           rec + dcu_kv_mla_scales(&kv) + 4 * b);
        uint8_t *ks = base + dcu_kv_idx_scale_off(&kv, slot);
        for (int b = warp; b < nbk; b += nw)
                warp_quant(ky + b * DCU_QBLOCK, min(DCU_QBLOCK, kv.index_dim - b * DCU_QBLOCK), kq + b * DCU_QBLOCK, ks + 4 * b);
        uint8_t *pr = rec + dcu_kv_mla_kpe(&kv);
        for (int i = threadIdx.x; i < kv.rope; i += blockDim.x) {
                uint16_t h = dcu_f32_to_bf16(pe[i]);
                pr[2 * i] = (uint8_t)h;
                pr[2 * i + 1] = (uint8_t)(h >> 8);
        }
}

/* kv_gather, one block per position i of the sequence whose block-table row is pages:
 *   lat[i][c] = e4m3(rec[c]) * scale[c / 128] (F32: the stored value), kpe[i] = float(bf16) */
__global__ void dcu_kv_gather_kernel(const uint8_t *base, struct dcu_kv kv, const int32_t *pages, float *lat, int64_t ldl,
                                     float *kpe, int64_t ldk, unsigned *err) {
        const int64_t i = blockIdx.x;
        float *l = lat + i * ldl, *pe = kpe + i * ldk;
        if (pages[i / kv.page_tokens] < 0) {
                if (threadIdx.x == 0)
                        atomicOr(err, DCU_ERR_INDEX);
                for (int c = threadIdx.x; c < kv.kv_lora; c += blockDim.x)
                        l[c] = dcu_nan();
                for (int c = threadIdx.x; c < kv.rope; c += blockDim.x)
                        pe[c] = dcu_nan();
                return;
        }
        const int64_t slot = dcu_kv_slot(pages, kv.page_tokens, i);
        const uint8_t *rec = base + dcu_kv_mla_off(&kv, slot);
        if (!kv.fp8) {
                const float *rf = (const float *)rec;
                for (int c = threadIdx.x; c < kv.kv_lora; c += blockDim.x)
                        l[c] = rf[c];
                for (int c = threadIdx.x; c < kv.rope; c += blockDim.x)
                        pe[c] = rf[kv.kv_lora + c];
                return;
        }
        const uint8_t *sc = rec + dcu_kv_mla_scales(&kv), *pr = rec + dcu_kv_mla_kpe(&kv);
        for (int c = threadIdx.x; c < kv.kv_lora; c += blockDim.x)
                l[c] = __fmul_rn(dcu_e4m3_to_f32(rec[c]), ld_f32_bytes(sc + 4 * (c / DCU_QBLOCK)));
        for (int c = threadIdx.x; c < kv.rope; c += blockDim.x)
                pe[c] = dcu_bf16_to_f32((uint16_t)(pr[2 * c] | pr[2 * c + 1] << 8));
}
