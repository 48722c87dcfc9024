/* Index arithmetic of the CUDA kernels, kept apart from the kernels so that the CPU tests
 * (tests/gpu/test-cuda-plan.c, built with gcc on every machine) run the very same code:
 *   - paged KV addressing (which byte of the pool holds a token's MLA record, indexer key
 *     and key scale), as a plain struct the kernels take by value;
 *   - the radix top-k: the order-preserving key of a score, the digit pick of each pass and
 *     the warp ranges of the ordered collection;
 *   - which lanes/threads of the GEMM kernels own which k, n and m;
 *   - how an op is cut into launches that fit the scratch budget.
 * Plain C when no CUDA compiler reads it; everything is 64-bit where a product of sizes can
 * pass 2^31 (a 1M-token pool is ~47 GiB). */
#pragma once

#include <stdint.h>

#include "kernels/cuda/numerics_cu.h"

/* Bits of the device error word kernels set (read back by synchronize/download). */
#define DCU_ERR_INDEX 1u /* an id, row, position, page or slot out of range */
#define DCU_ERR_ABSENT 2u /* a MoE row routed to an expert the expert table marks absent */

/* ------------------------------------------------------------------ paged KV cache
 * Mirror of struct dsv_kv_layout (kernels/backend.h) for one layer:
 *   page p, layer l at  base + (p * n_layers + l) * layer_page_bytes
 *   MLA record of in-page offset o:   page + o * mla_rec
 *   indexer key:                      page + idx_off + o * idx_rec
 *   indexer key scales (FP8 only):    page + idx_scale_off + o * idx_scale_rec
 * FP8 MLA record: [kv_lora e4m3 | ceil(kv_lora/128) fp32 scales | rope bf16]. */
struct dcu_kv {
        int32_t fp8;         /* 1: DSV_KV_FP8, 0: DSV_KV_F32 */
        int32_t page_tokens;
        int32_t n_layers, layer;
        int32_t kv_lora, rope, index_dim;
        int64_t mla_rec, idx_rec, idx_scale_rec;
        int64_t idx_off, idx_scale_off, layer_page_bytes;
};

/* Byte offset of (page, this layer) from the pool base. */
DCU_HD int64_t dcu_kv_page_off(const struct dcu_kv *k, int64_t page) {
        return (page * (int64_t)k->n_layers + k->layer) * k->layer_page_bytes;
}
/* Slot of position pos in a sequence whose block-table row is pages (pages[pos / pt]). */
DCU_HD int64_t dcu_kv_slot(const int32_t *pages, int32_t page_tokens, int64_t pos) {
        return (int64_t)pages[pos / page_tokens] * page_tokens + pos % page_tokens;
}
DCU_HD int64_t dcu_kv_mla_off(const struct dcu_kv *k, int64_t slot) {
        return dcu_kv_page_off(k, slot / k->page_tokens) + (slot % k->page_tokens) * k->mla_rec;
}
DCU_HD int64_t dcu_kv_idx_off(const struct dcu_kv *k, int64_t slot) {
        return dcu_kv_page_off(k, slot / k->page_tokens) + k->idx_off + (slot % k->page_tokens) * k->idx_rec;
}
DCU_HD int64_t dcu_kv_idx_scale_off(const struct dcu_kv *k, int64_t slot) {
        return dcu_kv_page_off(k, slot / k->page_tokens) + k->idx_scale_off + (slot % k->page_tokens) * k->idx_scale_rec;
}
/* Within an FP8 MLA record: the latent scales and the bf16 k_pe. */
DCU_HD int64_t dcu_kv_mla_scales(const struct dcu_kv *k) { return k->kv_lora; }
DCU_HD int64_t dcu_kv_mla_kpe(const struct dcu_kv *k) {
        return k->kv_lora + 4 * (int64_t)((k->kv_lora + DCU_QBLOCK - 1) / DCU_QBLOCK);
}

/* ------------------------------------------------------------------ radix top-k
 * Select the k best of n scores: larger is better, NaN ranks as -inf, equal scores prefer the
 * lower position; the output is the selected positions in ascending order (the CPU's
 * dsv_topk_select). The kernel:
 *   1. four 8-bit radix passes over key(score) (most significant digit first) find the key
 *      of the k-th best, thr, and krem = how many elements equal to thr are taken;
 *   2. each warp owns a contiguous range of positions (dcu_topk_warp_range); warps count
 *      their elements > thr and == thr, a scan over warps gives each warp its output base and
 *      the rank of its first tie, and each warp writes its selected positions in order.
 * key() maps floats to uint32 so that unsigned order is score order (NaN == -inf, -0 == +0). */
DCU_HD uint32_t dcu_topk_key(float v) {
        uint32_t u = dcu_f32_bits(v);
        if ((u & 0x7fffffffu) > 0x7f800000u)
                u = 0xff800000u; /* NaN -> -inf */
        if (u == 0x80000000u)
                u = 0; /* -0 == +0 */
        return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* One radix pass: hist[256] counts the candidates (keys matching the digits fixed so far) by
 * the current digit. Picks the digit holding the krem-th best candidate, scanning from the
 * largest digit, and returns the rank the k-th best keeps inside that digit in *krem_out
 * (1-based). Requires 1 <= krem <= sum(hist). */
DCU_HD uint32_t dcu_radix_pick(const uint32_t *hist, uint32_t krem, uint32_t *krem_out) {
        uint32_t above = 0;
        for (int d = 255; d > 0; d--) {
                if (above + hist[d] >= krem) {
                        *krem_out = krem - above;
                        return (uint32_t)d;
                }
                above += hist[d];
        }
        *krem_out = krem - above;
        return 0;
}

/* Positions [*b, *e) of warp w of nw over n: contiguous, each a multiple of 32 long except
 * the last, so a warp walks its range 32 at a time with coalesced loads. */
DCU_HD void dcu_topk_warp_range(int64_t n, int w, int nw, int64_t *b, int64_t *e) {
        int64_t per = (n + nw - 1) / nw;
        per = (per + 31) / 32 * 32;
        int64_t lo = per * w, hi = lo + per;
        *b = lo < n ? lo : n;
        *e = hi < n ? hi : n;
}

/* ------------------------------------------------------------------ linear layers
 * Tiled kernel: the output [T, N] is cut into BM x BN tiles; a block of 256 threads is a
 * 16 x 16 grid, thread (ty, tx) owning rows m0 + ty*4 + i and columns n0 + tx*4 + j
 * (i, j < 4). K advances 32 at a time; at each 128-boundary (or K's end) the block sums are
 * scaled by a_scale[m][kb] * w_scale[n/128][kb] and added to the accumulators. */
#define DCU_GEMM_BM 64
#define DCU_GEMM_BN 64
#define DCU_GEMM_BK 32
DCU_HD int dcu_gemm_row(int m0, int ty, int i) { return m0 + ty * 4 + i; }
DCU_HD int dcu_gemm_col(int n0, int tx, int j) { return n0 + tx * 4 + j; }
/* Thread t of 256 loads tile element e (of BM*BK or BN*BK = 2048, 8 per thread): row r,
 * column c of the 32-wide k slice, consecutive threads on consecutive k (coalesced). */
DCU_HD void dcu_gemm_load_idx(int t, int e, int *r, int *c) {
        int lin = e * 256 + t;
        *r = lin / DCU_GEMM_BK;
        *c = lin % DCU_GEMM_BK;
}

/* bf16-weight GEMMs run on x split into three bf16 planes: x = b0 + b1 + b2 exactly for
 * 2^-100 <= |x| <= 3e38 (below, the last residual loses bits as a bf16 subnormal, an error
 * under 2^-124 absolute); larger values and inf/NaN travel whole in b0. */
DCU_HD void dcu_split3_bf16(float v, uint16_t *b0, uint16_t *b1, uint16_t *b2) {
        uint16_t h0 = dcu_f32_to_bf16(v);
        float r1 = v - dcu_bf16_to_f32(h0);
        uint16_t h1 = dcu_f32_to_bf16(r1);
        float r2 = r1 - dcu_bf16_to_f32(h1);
        uint16_t h2 = dcu_f32_to_bf16(r2);
        if (!(v <= 3.0e38f && v >= -3.0e38f))
                h1 = h2 = 0;
        *b0 = h0;
        *b1 = h1;
        *b2 = h2;
}

/* Weight-streaming kernel (few tokens): one warp per output row; per 512-wide step of K,
 * lane l reads 16 consecutive bytes k = k0 + 16 l, so lanes 8g..8g+7 cover the 128-block
 * kb = k0/128 + g; an xor-shuffle over those 8 lanes gives the block's sum. */
#define DCU_GEMV_STEP 512
DCU_HD int dcu_gemv_k(int k0, int lane) { return k0 + 16 * lane; }
DCU_HD int dcu_gemv_kb(int k0, int lane) { return (k0 + 16 * lane) / DCU_QBLOCK; }

/* ------------------------------------------------------------------ launch planning
 * Rows of a [rows x row_bytes] scratch that fit in limit bytes (at least 1). */
DCU_HD int64_t dcu_chunk_rows(int64_t rows, int64_t row_bytes, int64_t limit) {
        int64_t r = row_bytes > 0 ? limit / row_bytes : rows;
        if (r < 1)
                r = 1;
        return r < rows ? r : rows;
}
DCU_HD int64_t dcu_ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
DCU_HD int64_t dcu_round_up(int64_t a, int64_t b) { return dcu_ceil_div(a, b) * b; }
