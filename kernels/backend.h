/* The backend interface: a vtable of memory management plus one `compute` entry that
 * dispatches on the op type (switch in each backend). The CPU backend (kernels/cpu) is the
 * reference and implements every op; others answer supports_op().
 *
 * Tensors are 2-D views (rows x columns, row stride in bytes) of backend memory; an op's
 * extra shape (heads, head dims) is in its parameters. Activations are F32 on the CPU
 * backend; "faithful" numerics round them to bf16 at the reference's rounding points, so a
 * GPU backend holding real bf16 tensors computes the same values. */
#pragma once

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kernels/dtype.h"

struct dsv_tensor {
        enum dsv_dtype type;
        int64_t ne[2];  /* ne[0] columns (contiguous), ne[1] rows */
        size_t stride;  /* bytes between rows */
        void *data;     /* backend address */
        /* F8_E4M3 weights: F32 block scales, [ceil(rows/128)] x [ceil(cols/128)], the multiplier
         * (W = W8 * s[i/128][j/128], the checkpoint's weight_scale_inv). */
        const struct dsv_tensor *scale;
};

static inline struct dsv_tensor dsv_tensor_2d(enum dsv_dtype t, void *data, int64_t rows, int64_t cols) {
        struct dsv_tensor x = {.type = t, .ne = {cols, rows}, .stride = (size_t)cols * dsv_dtype_size(t), .data = data};
        return x;
}
static inline void *dsv_tensor_row(const struct dsv_tensor *t, int64_t r) {
        return (char *)t->data + (size_t)r * t->stride;
}

/* ------------------------------------------------------------------ KV cache layout
 * The pool is an array of pages; a page holds page_tokens tokens of every layer:
 *
 *   page p, layer l at  base + (p * n_layers + l) * layer_page_bytes
 *   +--------------------------------------+-------------------------------+----------------------+
 *   | MLA records [page_tokens][mla_rec]   | indexer keys [page_tokens][D] | key scales [pt][nb]  |
 *   +--------------------------------------+-------------------------------+----------------------+
 *
 * FP8 format (what serving uses), per token per layer:
 *   MLA record (656 B at 671B sizes) = kv_lora e4m3 latent | kv_lora/128 fp32 scales | rope bf16 k_pe
 *   indexer    (132 B)               = index_dim e4m3 key    | index_dim/128 fp32 scales
 * F32 format (exact numerics, tests): latent f32 | k_pe f32, and f32 keys without scales.
 * A slot is page * page_tokens + offset-in-page. */
enum dsv_kv_format {
        DSV_KV_FP8,
        DSV_KV_F32,
        DSV_KV_FORMAT_MAX,
};

struct dsv_kv_layout {
        enum dsv_kv_format format;
        int page_tokens;
        int n_layers;
        int kv_lora, rope, index_dim;
        size_t mla_rec;          /* bytes per token of the MLA record */
        size_t idx_rec;          /* bytes per token of the indexer key (codes, or f32) */
        size_t idx_scale_rec;    /* bytes per token of indexer key scales (FP8 only) */
        size_t idx_off;          /* offset of the indexer keys inside a layer page */
        size_t idx_scale_off;    /* offset of the key scales inside a layer page */
        size_t layer_page_bytes; /* one layer of one page */
};

/* The layout of a pool of pages of page_tokens tokens for these dimensions. FP8: the MLA
 * record is the e4m3 latent, one fp32 scale per 128 latent values and the bf16 k_pe (656
 * bytes at 671B); the indexer key is e4m3 codes plus one fp32 scale per 128. F32: everything
 * fp32, no scales. Each part of a layer page starts 64-byte aligned, a layer page is a
 * multiple of 256 bytes. */
static inline void dsv_kv_layout_make(struct dsv_kv_layout *L, enum dsv_kv_format fmt, int n_layers, int kv_lora, int rope,
                                      int index_dim, int page_tokens) {
        const size_t pt = (size_t)page_tokens;
        memset(L, 0, sizeof(*L));
        L->format = fmt;
        L->page_tokens = page_tokens;
        L->n_layers = n_layers;
        L->kv_lora = kv_lora;
        L->rope = rope;
        L->index_dim = index_dim;
        if (fmt == DSV_KV_FP8) {
                L->mla_rec = (size_t)kv_lora + 4 * (((size_t)kv_lora + 127) / 128) + 2 * (size_t)rope;
                L->idx_rec = (size_t)index_dim;
                L->idx_scale_rec = 4 * (((size_t)index_dim + 127) / 128);
        } else {
                L->mla_rec = 4 * (size_t)(kv_lora + rope);
                L->idx_rec = 4 * (size_t)index_dim;
                L->idx_scale_rec = 0;
        }
        L->idx_off = (pt * L->mla_rec + 63) / 64 * 64;
        L->idx_scale_off = (L->idx_off + pt * L->idx_rec + 63) / 64 * 64;
        L->layer_page_bytes = (L->idx_scale_off + pt * L->idx_scale_rec + 255) / 256 * 256;
}

struct dsv_kv_ref {
        const struct dsv_kv_layout *layout;
        void *base;   /* backend address of page 0 */
        int layer;
};

/* Slot of position pos of the sequence whose block-table row is pages. */
static inline int64_t dsv_kv_slot(const struct dsv_kv_layout *L, const int32_t *pages, int64_t pos) {
        return (int64_t)pages[pos / L->page_tokens] * L->page_tokens + pos % L->page_tokens;
}

/* Per-token addressing of the paged cache for attention ops. */
struct dsv_kv_index {
        const struct dsv_tensor *tok_seq;     /* I32 [T]: row of block_table */
        const struct dsv_tensor *tok_pos;     /* I32 [T]: position; the token sees positions 0..pos */
        const struct dsv_tensor *block_table; /* I32 [n_seq, max_pages] */
};

/* ------------------------------------------------------------------ ops */
enum dsv_op_type {
        DSV_OP_EMBED,
        DSV_OP_GET_ROWS,
        DSV_OP_RMSNORM,
        DSV_OP_LAYERNORM,
        DSV_OP_LINEAR,
        DSV_OP_ACT_QUANT,
        DSV_OP_ROPE,
        DSV_OP_HADAMARD,
        DSV_OP_SWIGLU,
        DSV_OP_ADD,
        DSV_OP_KV_STORE,
        DSV_OP_KV_GATHER,
        DSV_OP_INDEXER_TOPK,
        DSV_OP_MLA_DECODE,
        DSV_OP_MLA_PREFILL,
        DSV_OP_MOE_GATE,
        DSV_OP_MOE_DISPATCH,
        DSV_OP_MOE_GROUPED,
        DSV_OP_MOE_COMBINE,
        DSV_OP_DEQUANT,
        DSV_OP_FILL_RANDOM,
        DSV_OP_SAMPLE,
        DSV_OP_MAX,
};
const char *dsv_op_name(enum dsv_op_type t);

/* out[t] = table[ids[t]] (BF16 rows widened to F32). */
struct dsv_op_embed {
        struct dsv_tensor *out;
        const struct dsv_tensor *table, *ids;
};

/* out[i] = x[rows[i]] (F32 rows). */
struct dsv_op_get_rows {
        struct dsv_tensor *out;
        const struct dsv_tensor *x, *rows;
};

/* s = res + x (fp32; x or res may be absent), res := bf16(s) when res is given,
 * out = bf16(w * (s * rsqrt(mean(s^2) + eps))). */
struct dsv_op_rmsnorm {
        struct dsv_tensor *out, *res;
        const struct dsv_tensor *x, *w;
        float eps;
};

/* out = bf16((x - mean) * rsqrt(var + eps) * w + b), biased variance. */
struct dsv_op_layernorm {
        struct dsv_tensor *out;
        const struct dsv_tensor *x, *w, *b;
        float eps;
};

/* out[T,N] = x[T,K] W[N,K]^T.
 * F8 weights, faithful: x is act_quant'ed per 128 (ue8m0 scales), each 128-wide K block is
 * summed in fp32 and scaled by a_scale * w_scale, the block sums accumulate in fp32 and the
 * result is rounded to bf16 when round_out. Exact: W dequantized, fp32, no rounding. */
struct dsv_op_linear {
        struct dsv_tensor *out;
        const struct dsv_tensor *x, *w;
        bool quant_in;
        bool round_out;
};

/* q[t, j] = e4m3(clamp(x / s, +-448)), s[t, j/128] = ue8m0 scale of that block. */
struct dsv_op_act_quant {
        struct dsv_tensor *q, *s;
        const struct dsv_tensor *x;
};

/* Rotates dims [offset, offset + rope_dim) of each of n_heads heads (head_stride apart) by
 * angle pos * inv_freq[i]. interleaved: pairs (x[2i], x[2i+1]) (MLA); otherwise half-split
 * pairs (x[i], x[i + rope_dim/2]) (indexer). */
struct dsv_op_rope {
        struct dsv_tensor *x;
        const struct dsv_tensor *pos, *inv_freq;
        int n_heads, head_stride, offset, rope_dim;
        bool interleaved;
};

/* Each d-wide group of x: x := H_d x / sqrt(d) (Sylvester order). */
struct dsv_op_hadamard {
        struct dsv_tensor *x;
        int d;
};

/* out = bf16(silu(a) * b) */
struct dsv_op_swiglu {
        struct dsv_tensor *out;
        const struct dsv_tensor *a, *b;
};

/* out = bf16(a + b) */
struct dsv_op_add {
        struct dsv_tensor *out;
        const struct dsv_tensor *a, *b;
};

/* Writes each token's latent (already RMS-normed), rotated k_pe and indexer key to its
 * slot; in FP8 format the latent and key are act_quant'ed per 128 and k_pe stored bf16. */
struct dsv_op_kv_store {
        struct dsv_kv_ref kv;
        const struct dsv_tensor *slots; /* I32 [T] */
        const struct dsv_tensor *latent, *k_pe, *idx_key;
};

/* Reads positions [0, n) of one sequence back: latent (dequantized) and k_pe as F32. */
struct dsv_op_kv_gather {
        struct dsv_kv_ref kv;
        struct dsv_tensor *latent, *k_pe;
        const struct dsv_tensor *pages; /* I32 [max_pages]: the sequence's block table row */
        int n;
};

/* Lightning indexer + top-k. For token t at position p:
 *   faithful: score[s] = k_scale[s] * sum_h (w[t,h] * q_scale[t,h]) * relu(q8[t,h] . k8[s])
 *   exact:    score[s] = sum_h w[t,h] * relu(q[t,h] . k[s])
 * for s <= p (w already includes n_heads^-0.5 * head_dim^-0.5); idx[t] = the positions of the
 * min(topk, p+1) largest scores, ascending, padded with -1; equal scores prefer the lower
 * position. With p + 1 <= topk every position is selected (scores are skipped unless
 * `scores` is requested). */
struct dsv_op_indexer_topk {
        struct dsv_tensor *idx;          /* I32 [T, topk] */
        struct dsv_tensor *scores;       /* optional F32 [T, max_ctx] (-inf beyond p) */
        const struct dsv_tensor *q;      /* faithful: U8 codes [T, H*d]; exact: F32 */
        const struct dsv_tensor *q_scale;/* faithful: F32 [T, H*(d/128)] */
        const struct dsv_tensor *w;      /* F32 [T, H] */
        struct dsv_kv_ref kv;
        struct dsv_kv_index at;
        int n_heads, head_dim, topk;
        float w_scale1, w_scale2;
        bool faithful;
};

/* Absorbed MLA over the selected positions (decode), per token t and head h:
 *   q_c = W_UK[h]^T q_nope          (kv_lora)
 *   s_j = (q_c . c_j + q_pe . kpe_j) * scale      for j in idx[t] (-1 entries skipped)
 *   p = softmax(s);  o_c = sum_j p_j c_j;  out[t,h] = W_UV[h] o_c
 * wkv_b is the dequantized kv_b_proj [H*(nope+v), kv_lora] (bf16-rounded in faithful mode,
 * where a backend whose supports_op() accepts it may hold it as BF16: the same values), or,
 * where supports_op() accepts it, kv_b_proj itself: FP8 codes with their block scales
 * (wkv_b->scale), standing for rnd(code * scale) (rnd: to bf16 in faithful mode, none in
 * exact: the values of the dequant op's table), or BF16;
 * faithful rounds q_c, each score term, the scaled score, p, o_c and out to bf16. */
struct dsv_op_mla_decode {
        struct dsv_tensor *out;          /* [T, H*v] */
        const struct dsv_tensor *q;      /* [T, H*(nope+rope)] rope part rotated */
        const struct dsv_tensor *wkv_b;  /* F32, BF16 or F8_E4M3 [H*(nope+v), kv_lora] */
        const struct dsv_tensor *idx;    /* I32 [T, k] */
        struct dsv_kv_ref kv;
        struct dsv_kv_index at;
        int n_heads, nope, rope, v, kv_lora;
        float scale;
        bool faithful;
};

/* Expanded MLA for a chunk of one sequence: K/V of its first n_ctx positions come expanded
 * through kv_b_proj (kvb rows = [k_nope h0 | v h0 | k_nope h1 | ...]).
 *   s_j = [q_nope; q_pe] . [k_nope_j; kpe_j] * scale;  p = softmax(s over idx[t]);  out = sum p_j v_j
 * faithful rounds the dot product, the scaled score, p and out to bf16. */
struct dsv_op_mla_prefill {
        struct dsv_tensor *out;          /* [T, H*v] */
        const struct dsv_tensor *q;      /* [T, H*(nope+rope)] */
        const struct dsv_tensor *kvb;    /* [n_ctx, H*(nope+v)] */
        const struct dsv_tensor *k_pe;   /* [n_ctx, rope] */
        const struct dsv_tensor *idx;    /* I32 [T, k] */
        int n_heads, nope, rope, v;
        float scale;
        bool faithful;
};

/* Sigmoid group-limited routing (fp32):
 *   s = sigmoid(x W^T); b = s + bias; group score = sum of the top-2 b of each group;
 *   keep topk_group groups; ids = top-k experts by b among them (ascending ids);
 *   w = s[ids] / sum(s[ids]) * route_scale.
 * forced_ids (tests): use a row's experts instead of the selection, the weights following
 * (a row whose first id is -1 is not forced). */
struct dsv_op_moe_gate {
        struct dsv_tensor *ids, *weights;     /* I32 [T,k], F32 [T,k] */
        struct dsv_tensor *scores;            /* optional F32 [T,E]: b, for diagnostics */
        const struct dsv_tensor *x, *w, *bias, *forced_ids;
        int n_group, topk_group, k;
        float route_scale;
        bool norm_topk_prob;
};

/* ------------------------------------------------------------------ routed experts
 * The MoE after the gate is three ops (the reference's order), so the same kernels serve one
 * rank and the expert-parallel layouts; with ids [T,k] from the gate and R = T*k slots, slot
 * t*k + j being token t's j-th expert:
 *   dispatch  ids -> counts[e], offsets[e] (offsets[E] = rows dispatched), perm: the slots
 *             grouped by expert (ascending expert, then slot)
 *   grouped   y[slot] = expert_e(x[slot / k]) for every dispatched slot, one op over every
 *             active expert, the experts' weights read through the expert table; slots not
 *             dispatched (id < 0) get a zero row. Unweighted: what an expert-parallel
 *             dispatch sends back.
 *   combine   out[t] = sum over t's slots with id >= 0, in ascending (id, j), of
 *             weights[t,j] * y[t*k + j], in fp32 from +0, each term rounded (unfused)
 * expert(x) = w2(bf16(silu(w1 x) * w3 x)), faithful: act_quant before each linear, bf16
 * linear outputs. An id < 0 is a slot this op does not serve (another rank's expert); an id
 * >= n_experts is an error (-EINVAL, on a device the backend's error word).
 *
 * The expert table is a backend tensor, U8 [n_experts, sizeof(struct dsv_moe_expert)], built
 * once at load (daemon/model) and uploaded like a weight; entry e describes expert e's three
 * weights by backend address, or 0 for an expert this rank does not hold (another rank
 * owns it): a slot routed to such an expert is an error (-EPROTO), never computed.
 *
 *   struct dsv_moe_expert (168 bytes, every field little-endian, no padding):
 *   +0    w1  gate_proj [inter, dim]   struct dsv_moe_weight (56 bytes)
 *   +56   w3  up_proj   [inter, dim]
 *   +112  w2  down_proj [dim, inter]
 *   struct dsv_moe_weight:
 *   +0  data         backend address of row 0 (0: the expert is absent)
 *   +8  scale        F8_E4M3: backend address of the F32 block scales [ceil(rows/128),
 *                    ceil(cols/128)]; 0 otherwise
 *   +16 stride       bytes between rows
 *   +24 scale_stride bytes between rows of scales (0 without scales)
 *   +32 rows, +40 cols
 *   +48 type         enum dsv_dtype of the weight; +52 reserved, zero */
struct dsv_moe_weight {
        uint64_t data, scale, stride, scale_stride;
        int64_t rows, cols;
        int32_t type;
        uint32_t reserved;
};
struct dsv_moe_expert {
        struct dsv_moe_weight w1, w3, w2;
};
static_assert(sizeof(struct dsv_moe_weight) == 56, "dsv_moe_weight is 56 bytes");
static_assert(offsetof(struct dsv_moe_weight, type) == 48, "dsv_moe_weight.type at 48");
static_assert(sizeof(struct dsv_moe_expert) == 168, "dsv_moe_expert is 168 bytes");
static_assert(offsetof(struct dsv_moe_expert, w2) == 112, "dsv_moe_expert.w2 at 112");

/* The entry of a weight tensor (NULL: absent). */
static inline struct dsv_moe_weight dsv_moe_weight_of(const struct dsv_tensor *t) {
        struct dsv_moe_weight w;
        memset(&w, 0, sizeof(w));
        if (!t)
                return w;
        w.data = (uint64_t)(uintptr_t)t->data;
        w.stride = t->stride;
        w.rows = t->ne[1];
        w.cols = t->ne[0];
        w.type = (int32_t)t->type;
        if (t->scale) {
                w.scale = (uint64_t)(uintptr_t)t->scale->data;
                w.scale_stride = t->scale->stride;
        }
        return w;
}

/* ids I32 [T,k] -> counts I32 [1,E], offsets I32 [1,E+1], perm I32 [1,T*k] (entries past
 * offsets[E] are -1). */
struct dsv_op_moe_dispatch {
        struct dsv_tensor *counts, *offsets, *perm;
        const struct dsv_tensor *ids;
        int n_experts;
};

/* y F32 [T*k, dim] (overwritten) from x F32 [T, dim] through dispatch's outputs and the
 * expert table; weight_type: the type of every present expert's weights (what supports_op
 * can check without reading the table; an entry of another type is -EINVAL). */
struct dsv_op_moe_grouped {
        struct dsv_tensor *y;
        const struct dsv_tensor *x, *ids, *counts, *offsets, *perm;
        const struct dsv_tensor *table; /* U8 [n_experts, sizeof(struct dsv_moe_expert)] */
        int n_experts, inter;
        enum dsv_dtype weight_type;
        bool faithful;
};

/* out F32 [T, dim] (overwritten) from y F32 [T*k, dim], ids I32 [T,k], weights F32 [T,k]. */
struct dsv_op_moe_combine {
        struct dsv_tensor *out;
        const struct dsv_tensor *y, *ids, *weights;
        int n_experts;
};

/* out = the numbers a weight stands for, made where the weight lives (the absorbed
 * attention's kv_b table is ~4 GB of F32 at 671B: the host never holds it): FP8 codes times
 * their 128x128 block's scale, BF16 widened, F32 copied; then to out's type, F32 (rounded to
 * bf16 values when round_bf16) or BF16 (round to nearest even). Every element is one fp32
 * product and one rounding, so every backend gives the same bits. */
struct dsv_op_dequant {
        struct dsv_tensor *out;     /* F32 or BF16 [N, K] */
        const struct dsv_tensor *w; /* F8_E4M3 (with its F32 block scale), BF16 or F32 [N, K] */
        bool round_bf16;            /* F32 out: each value rounded to the nearest bf16 value */
};
/* The shapes and types every backend's dequant takes (its supports_op starts here). */
static inline bool dsv_dequant_ok(const struct dsv_op_dequant *p) {
        const struct dsv_tensor *o = p->out, *w = p->w;
        if (!o || !w || (o->type != DSV_F32 && o->type != DSV_BF16) || o->ne[0] != w->ne[0] || o->ne[1] != w->ne[1] ||
            (p->round_bf16 && o->type != DSV_F32))
                return false;
        if (w->type == DSV_F8_E4M3)
                return w->scale && w->scale->type == DSV_F32 && w->scale->ne[0] == (w->ne[0] + 127) / 128 &&
                       w->scale->ne[1] == (w->ne[1] + 127) / 128;
        return w->type == DSV_BF16 || w->type == DSV_F32;
}

/* out := random values made where out lives (weights of a model built from a preset with no
 * checkpoint on disk: nothing is read, the host never holds them), a pure function of (key,
 * element index row * cols + col), the same bits on every backend (kernels/fill_random.h):
 *   F8_E4M3 (codes, as U8 bytes): the codes of +-[0.25, 3.75], mean square DSV_FILL_E4M3_MS
 *   F32, BF16: (center + k) * 2^(exp2 - j), k uniform in [-spread, spread], j in [0, exp2_spread]
 * Row padding is left as it was. */
struct dsv_op_fill_random {
        struct dsv_tensor *out; /* F8_E4M3, BF16 or F32 [rows, cols] */
        uint64_t key;
        int32_t center, spread; /* |center| + spread <= 255: every value exact in bf16 */
        int32_t exp2, exp2_spread; /* exp2 in [-100, 100], exp2_spread in [0, 20] */
};
/* The fields and types every backend's fill_random takes (its supports_op starts here). */
static inline bool dsv_fill_random_ok(const struct dsv_op_fill_random *p) {
        const struct dsv_tensor *o = p->out;
        if (!o || (o->type != DSV_F8_E4M3 && o->type != DSV_BF16 && o->type != DSV_F32) || o->ne[0] < 0 || o->ne[1] < 0 ||
            o->stride < (size_t)o->ne[0] * dsv_dtype_size(o->type) || o->stride % dsv_dtype_size(o->type) != 0)
                return false;
        const int32_t c = p->center < 0 ? -p->center : p->center;
        return p->spread >= 0 && p->spread <= 255 && c <= 255 - p->spread && p->exp2 >= -100 && p->exp2 <= 100 &&
               p->exp2_spread >= 0 && p->exp2_spread <= 20;
}

/* Optional op (the CUDA plugin has it; the CPU backend does not: the daemon samples on the
 * host with daemon/runtime/sampler.c, whose penalties and grammar masks come first).
 * One token per row of logits, with the semantics of that sampler: greedy when temperature
 * <= 0 or top_k == 1 (argmax, lowest id on ties, NaN never wins), else p = softmax(logits / T)
 * restricted to top_k, then min_p, then the smallest prefix of descending p reaching top_p,
 * drawn with u = U[0,1) of (seed, step). */
struct dsv_sample_params {
        float temperature;
        float top_p;
        float min_p;
        int32_t top_k;
        uint64_t seed;
        uint64_t step; /* 0 for the first generated token */
};
struct dsv_op_sample {
        struct dsv_tensor *tokens;               /* I32, n = logits rows elements (backend memory) */
        const struct dsv_tensor *logits;         /* F32 [n, V] */
        const struct dsv_sample_params *params;  /* host array of n */
};

struct dsv_op {
        enum dsv_op_type type;
        bool faithful; /* reference rounding points (bf16 outputs, FP8 activations) */
        union {
                struct dsv_op_embed embed;
                struct dsv_op_get_rows get_rows;
                struct dsv_op_rmsnorm rmsnorm;
                struct dsv_op_layernorm layernorm;
                struct dsv_op_linear linear;
                struct dsv_op_act_quant act_quant;
                struct dsv_op_rope rope;
                struct dsv_op_hadamard hadamard;
                struct dsv_op_swiglu swiglu;
                struct dsv_op_add add;
                struct dsv_op_kv_store kv_store;
                struct dsv_op_kv_gather kv_gather;
                struct dsv_op_indexer_topk indexer_topk;
                struct dsv_op_mla_decode mla_decode;
                struct dsv_op_mla_prefill mla_prefill;
                struct dsv_op_moe_gate moe_gate;
                struct dsv_op_moe_dispatch moe_dispatch;
                struct dsv_op_moe_grouped moe_grouped;
                struct dsv_op_moe_combine moe_combine;
                struct dsv_op_dequant dequant;
                struct dsv_op_fill_random fill_random;
                struct dsv_op_sample sample;
        };
};

/* ------------------------------------------------------------------ backend */
struct dsv_backend;

struct dsv_backend_ops {
        const char *name;
        void (*free)(struct dsv_backend *be);
        /* Device memory. */
        int (*alloc)(struct dsv_backend *be, size_t size, void **ret);
        void (*dealloc)(struct dsv_backend *be, void *p, size_t size);
        int (*upload)(struct dsv_backend *be, void *dst, const void *src, size_t n);
        int (*download)(struct dsv_backend *be, void *dst, const void *src, size_t n);
        int (*fill)(struct dsv_backend *be, void *dst, int byte, size_t n);
        int (*synchronize)(struct dsv_backend *be);
        bool (*supports_op)(struct dsv_backend *be, const struct dsv_op *op);
        int (*compute)(struct dsv_backend *be, const struct dsv_op *op);
        /* Optional (NULL when absent): host memory usable as a staging buffer for uploads. */
        int (*alloc_host)(struct dsv_backend *be, size_t size, void **ret);
        void (*free_host)(struct dsv_backend *be, void *p, size_t size);
        /* Optional: copies n bytes between two places of backend memory, queued behind the work
         * before it like an op (nothing waits: a later download, synchronize or event wait sees
         * it done); without it, callers go through host memory. */
        int (*copy)(struct dsv_backend *be, void *dst, const void *src, size_t n);
        /* Optional: the memory this backend allocates from: what is free now and the total
         * (bytes); -EOPNOTSUPP or NULL when it cannot say. */
        int (*mem_info)(struct dsv_backend *be, uint64_t *free_bytes, uint64_t *total_bytes);
        /* Optional: one line on how this backend runs (threads, kernels chosen), for the log. */
        const char *(*describe)(struct dsv_backend *be);
        /* Optional, all four or none (the loader's overlapped weight streaming): upload_async
         * queues a copy from host memory got from alloc_host to dst on a copy stream of its own,
         * after the work already queued on the backend (fills, ops), and returns at once; src must stay untouched, and compute must not read dst, until an
         * event recorded after the copy has been waited for. event_record marks every
         * upload_async and download_async queued so far and the work queued before them;
         * event_wait blocks until all of it is done and returns its error (-errno; after a
         * download_async also what download reports: an index a kernel found out of range).
         * Backends without them (the CPU) copy synchronously in upload and download. */
        int (*upload_async)(struct dsv_backend *be, void *dst, const void *src, size_t n);
        int (*event_new)(struct dsv_backend *be, void **ret);
        void (*event_free)(struct dsv_backend *be, void *ev);
        int (*event_record)(struct dsv_backend *be, void *ev);
        int (*event_wait)(struct dsv_backend *be, void *ev);
        /* Optional, all four or none (CUDA graphs for decode steps; the CPU has none):
         * graph_begin makes the ops and fills issued from now on be recorded instead of run,
         * until graph_end, which returns the recording as a graph (keep false: discards it,
         * how a failed recording ends); graph_launch queues a graph's ops again, with the
         * shapes and addresses they were recorded with, reading whatever those addresses hold
         * then (the caller uploads new tokens, positions, slots and page tables there first);
         * graph_free releases one (NULL is fine). Between begin and end nothing may wait for
         * the device: upload, download, synchronize, dealloc and a second graph_begin fail with
         * -EBUSY, and graph_end reports an op that could not be recorded (-EOPNOTSUPP). */
        int (*graph_begin)(struct dsv_backend *be);
        int (*graph_end)(struct dsv_backend *be, bool keep, void **ret);
        int (*graph_launch)(struct dsv_backend *be, void *graph);
        void (*graph_free)(struct dsv_backend *be, void *graph);
        /* Optional, with the four event entries above: queues a copy of n bytes from backend
         * memory src to host memory dst got from alloc_host, after every op, fill and copy
         * queued so far, and returns at once (download waits for the device each time): dst
         * holds the bytes only once an event recorded after it has been waited for, and src
         * must not be overwritten before. Fails with -EBUSY between graph_begin and graph_end. */
        int (*download_async)(struct dsv_backend *be, void *dst, const void *src, size_t n);
};


struct dsv_backend {
        const struct dsv_backend_ops *ops;
        void *ctx;
        bool host_memory; /* backend addresses are host pointers */
        int n_threads;
        uint64_t bytes_allocated;
};

static inline bool dsv_backend_has_async_upload(const struct dsv_backend *be) {
        return be->ops->alloc_host && be->ops->free_host && be->ops->upload_async && be->ops->event_new &&
               be->ops->event_free && be->ops->event_record && be->ops->event_wait;
}

static inline bool dsv_backend_has_async_download(const struct dsv_backend *be) {
        return be->ops->alloc_host && be->ops->free_host && be->ops->download_async && be->ops->event_new &&
               be->ops->event_free && be->ops->event_record && be->ops->event_wait;
}

static inline bool dsv_backend_has_graphs(const struct dsv_backend *be) {
        return be->ops->graph_begin && be->ops->graph_end && be->ops->graph_launch && be->ops->graph_free;
}

/* CPU backend; n_threads <= 0: all online CPUs. */
int dsv_backend_cpu_new(int n_threads, struct dsv_backend **ret);
void dsv_backend_free(struct dsv_backend *be);

static inline int dsv_backend_compute(struct dsv_backend *be, const struct dsv_op *op) {
        return be->ops->compute(be, op);
}
