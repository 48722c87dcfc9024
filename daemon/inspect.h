/* Accounting for a DeepSeek-V3.2-style model: parameters per component, bytes per dtype,
 * FLOPs per token, KV-cache bytes and bytes read per decode step. Parameter and byte counts
 * come from dsv_weight_specs() (the one table of the model's tensors), never from a second
 * formula. dsv32-inspect prints these numbers; tests/inspect checks them against hand
 * computation, against real checkpoint shards and against the engine's KV pool.
 *
 * Conventions (the same text is in dsv32-inspect --help and dsv32-inspect(1)):
 *   - One multiply-add is 2 FLOPs. Only contractions (matrix products, dot products,
 *     weighted sums) are counted; elementwise work (norms, RoPE, activations, softmax,
 *     Hadamard transforms, quantisation, top-k) is not.
 *   - "Context N" for a generated token means N entries in the cache, the new token's
 *     own included. Prefill of N tokens is causal: token t (0-based) sees t+1 entries.
 *   - "Active per token" counts every weight one token uses: all non-routed tensors plus
 *     num_experts_per_tok of n_routed_experts routed experts per MoE layer, without the
 *     embedding table (one row of it is read, not multiplied). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "daemon/model_config.h"
#include "daemon/weights_spec.h"
#include "kernels/dtype.h"

struct dsv_checkpoint;

/* ------------------------------------------------------------------ parameters, bytes */

struct dsv_param_counts {
        uint64_t by_comp[DSV_COMP_MAX]; /* main model (no MTP) */
        uint64_t total;
        /* MTP layer(s), whole: eh_proj, its norms, its block, and the copies of the
         * embedding and head the published checkpoint carries (optional in a checkpoint) */
        uint64_t mtp_by_comp[DSV_COMP_MAX];
        uint64_t mtp;
        uint64_t active;                /* per token, without the embedding table */
        uint64_t active_with_embedding; /* + the whole embedding table, as some tallies count */
        uint64_t linear_active;         /* matrix weights one token is multiplied with */
        uint64_t head;                  /* lm_head weights (part of linear_active) */
        /* bytes on disk computed from the config (see dsv_inspect_spec_dtype) */
        uint64_t bytes_by_dtype[DSV_DTYPE_MAX];
        uint64_t bytes;
        uint64_t mtp_bytes_by_dtype[DSV_DTYPE_MAX];
        uint64_t mtp_bytes;
        /* for the decode-step traffic */
        uint64_t bytes_embed;          /* the embedding table */
        uint64_t bytes_routed_expert;  /* one routed expert of one layer, scales included */
        uint64_t bytes_per_step_fixed; /* main model minus embedding table minus routed experts */
        int moe_layers;
};

/* The dtype a tensor has in the published checkpoint layout (and in dsv32-mkmodel's):
 * linears F8_E4M3 when the config is FP8 (else BF16), e_score_correction_bias F32,
 * everything else BF16. */
enum dsv_dtype dsv_inspect_spec_dtype(const struct dsv_model_config *cfg, const struct dsv_tensor_spec *s);
/* Bytes of a tensor in that layout, with its F32 weight_scale_inv (one per 128x128 block)
 * for FP8 linears; *scale_bytes gets the latter part (may be NULL). */
uint64_t dsv_inspect_spec_bytes(const struct dsv_model_config *cfg, const struct dsv_tensor_spec *s,
                                uint64_t *scale_bytes);

int dsv_inspect_params(const struct dsv_model_config *cfg, struct dsv_param_counts *ret);

/* What the tensors a checkpoint holds should take on disk according to the config (MTP
 * when the checkpoint has it, optional tensors only when present), per dtype. Tensors the
 * engine does not know are not included. */
int dsv_inspect_checkpoint_expected(const struct dsv_checkpoint *ck, uint64_t bytes_by_dtype[DSV_DTYPE_MAX],
                                    uint64_t *total);

/* ------------------------------------------------------------------ FLOPs */

struct dsv_flop_costs {
        int layers;     /* num_hidden_layers */
        int index_topk;
        double linear_per_token; /* 2 * linear_active (lm_head included) */
        double head_per_token;   /* 2 * lm_head weights */
        /* per attended (or scored) cache entry per layer:
         *   mla_absorbed = 2*H*(kv_lora + rope)  scores q_c.c + q_pe.k_pe
         *                + 2*H*kv_lora           value sum  sum_s p_s c_s
         *   mla_expanded = 2*H*(nope + rope) + 2*H*v_head  (K/V expanded through wkv_b)
         *   indexer      = 2*Hi*Di               q.k for every index head
         *   indexer_weighting = 2*Hi             sum_h w_h relu(q_h.k) */
        double mla_absorbed_per_entry;
        double mla_expanded_per_entry;
        double indexer_per_entry;
        double indexer_weighting_per_entry;
};

struct dsv_flops {
        double linear;
        double attention_dsa;   /* DSA: min(context, index_topk) entries per query */
        double attention_dense; /* dense MLA: every entry */
        double indexer;         /* scores every entry (q.k + head weighting) */
        double total_dsa;       /* linear + attention_dsa + indexer */
        double total_dense;     /* linear + attention_dense (no indexer) */
};

void dsv_inspect_flop_costs(const struct dsv_model_config *cfg, const struct dsv_param_counts *pc,
                            struct dsv_flop_costs *ret);
/* One generated token at context N, absorbed MLA (the decode path):
 *   linear          = linear_per_token
 *   attention_dsa   = layers * mla_absorbed * min(N, index_topk)
 *   attention_dense = layers * mla_absorbed * N
 *   indexer         = layers * (indexer + indexer_weighting) * N */
void dsv_inspect_decode_flops(const struct dsv_flop_costs *fc, uint64_t context, struct dsv_flops *ret);
/* Prefill of N tokens from an empty cache, expanded MLA (the prefill path), logits for the
 * last position only:
 *   linear          = N * (linear_per_token - head_per_token) + head_per_token
 *   attention_dsa   = layers * mla_expanded * sum_{t<N} min(t+1, index_topk)
 *   attention_dense = layers * mla_expanded * N(N+1)/2
 *   indexer         = layers * (indexer + indexer_weighting) * N(N+1)/2 */
void dsv_inspect_prefill_flops(const struct dsv_flop_costs *fc, uint64_t tokens, struct dsv_flops *ret);

/* ------------------------------------------------------------------ KV cache */

enum dsv_inspect_kv {
        DSV_INSPECT_KV_FP8,  /* what serving allocates (DSV_KV_FP8) */
        DSV_INSPECT_KV_F32,  /* exact numerics (DSV_KV_F32) */
        DSV_INSPECT_KV_BF16, /* comparison only: not implemented by the engine */
        DSV_INSPECT_KV_MAX,
};
const char *dsv_inspect_kv_name(enum dsv_inspect_kv k);

struct dsv_kv_costs {
        enum dsv_inspect_kv layout;
        bool engine;                /* the engine allocates this layout */
        uint64_t mla_per_layer;     /* bytes per token per layer, MLA record */
        uint64_t indexer_per_layer; /* bytes per token per layer, indexer key (+ scales) */
        uint64_t per_layer;
        int layers, mtp_layers;
        uint64_t per_token;          /* layers * per_layer: what the engine's pool holds */
        uint64_t per_token_with_mtp; /* (layers + mtp_layers) * per_layer */
        int page_tokens;
        /* one page (page_tokens tokens of every main layer) as the engine lays it out, with
         * its alignment padding; page_tokens * per_token for the bf16 comparison layout */
        uint64_t page_bytes;
};

/* Per token per layer:
 *   fp8:  MLA kv_lora e4m3 + 4*ceil(kv_lora/128) fp32 scales + 2*rope bf16 k_pe
 *         (656 at 671B sizes) + indexer Di e4m3 + 4*ceil(Di/128) fp32 scale (132)
 *   f32:  4*(kv_lora + rope) + 4*Di
 *   bf16: 2*(kv_lora + rope) + 2*Di, no scales */
int dsv_inspect_kv_costs(const struct dsv_model_config *cfg, enum dsv_inspect_kv layout, struct dsv_kv_costs *ret);
/* Bytes the pool reserves for a sequence of n tokens: whole pages. */
uint64_t dsv_inspect_kv_allocated(const struct dsv_kv_costs *kv, uint64_t tokens);

/* ------------------------------------------------------------------ decode-step traffic */

struct dsv_decode_step {
        uint64_t context;
        int batch;
        double experts_per_layer; /* expected distinct routed experts touched per MoE layer */
        double weight_bytes;
        double kv_bytes; /* all sequences */
        double bytes;
        double tokens_per_s; /* roofline, 0 when no bandwidth is given */
};

/* Bytes read from memory for one decode step of `batch` sequences, each at context N,
 * main model only (no MTP), uniform independent routing:
 *   experts  = E * (1 - (1 - k/E)^batch)     distinct experts per MoE layer
 *   weights  = fixed + moe_layers * experts * expert_bytes + min(batch, vocab) embedding rows
 *   kv       = batch * layers * (min(N, index_topk) * mla + N * indexer)
 *   tokens/s = batch * bandwidth / (weights + kv)           (bandwidth in bytes/s)
 * where kv uses the given layout's record sizes. */
void dsv_inspect_decode_step(const struct dsv_model_config *cfg, const struct dsv_param_counts *pc,
                             const struct dsv_kv_costs *kv, uint64_t context, int batch, double bandwidth_bytes_per_s,
                             struct dsv_decode_step *ret);
