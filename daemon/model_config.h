/* The model's hyper-parameters, read from a Hugging Face config.json (DeepSeek-V3.2 field
 * names), validated, with the derived constants the engine needs (YaRN, softmax scale,
 * KV record sizes). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/util.h"

struct dsv_model_config {
        char model_type[64];
        int vocab_size;
        int hidden_size;
        int num_hidden_layers;
        int first_k_dense_replace;
        int num_attention_heads;
        int q_lora_rank;
        int kv_lora_rank;
        int qk_nope_head_dim;
        int qk_rope_head_dim;
        int v_head_dim;
        int intermediate_size;
        int moe_intermediate_size;
        int n_routed_experts;
        int n_shared_experts;
        int num_experts_per_tok;
        int n_group;
        int topk_group;
        double routed_scaling_factor;
        bool norm_topk_prob;
        double rope_theta;
        bool rope_yarn;               /* rope_scaling.type == "yarn" */
        double rope_factor;           /* rope_scaling.factor */
        int rope_original_max_pos;    /* rope_scaling.original_max_position_embeddings */
        double rope_beta_fast;
        double rope_beta_slow;
        double rope_mscale_all_dim;
        int max_position_embeddings;
        double rms_norm_eps;
        int index_n_heads;
        int index_head_dim;
        int index_topk;
        int num_nextn_predict_layers;
        int bos_token_id;
        int eos_token_id;
        bool fp8;                     /* quantization_config: fp8, 128x128 blocks */
        bool scale_ue8m0;             /* quantization_config.scale_fmt == "ue8m0" */
        bool tie_word_embeddings;
};

/* Parses and validates config.json text. On failure returns -EINVAL (or -ENOMEM) and
 * describes the offending field in err. */
int dsv_model_config_parse(const char *json, size_t len, struct dsv_model_config *ret,
                           struct dsv_error *err);
int dsv_model_config_load(const char *path, struct dsv_model_config *ret, struct dsv_error *err);

/* Writes cfg as config.json text (the real field names); caller frees. */
char *dsv_model_config_to_json(const struct dsv_model_config *cfg);

/* Derived values. */
static inline int dsv_cfg_qk_head_dim(const struct dsv_model_config *c) {
        return c->qk_nope_head_dim + c->qk_rope_head_dim;
}
static inline bool dsv_cfg_layer_is_moe(const struct dsv_model_config *c, int layer) {
        return layer >= c->first_k_dense_replace;
}
double dsv_cfg_softmax_scale(const struct dsv_model_config *c);
/* RoPE inverse frequencies, qk_rope_head_dim/2 of them, with the YaRN blend, in fp32 as the
 * reference computes them. */
void dsv_cfg_rope_inv_freq(const struct dsv_model_config *c, float *inv_freq);
/* YaRN's correction range [low, high] (for tests and dsv32-inspect). */
void dsv_cfg_yarn_range(const struct dsv_model_config *c, int *low, int *high);

/* KV-cache record sizes per token per layer. */
static inline int dsv_cfg_mla_record_fp8(const struct dsv_model_config *c) {
        /* e4m3 latent + one fp32 scale per 128 latent values + bf16 k_pe */
        return c->kv_lora_rank + 4 * ((c->kv_lora_rank + 127) / 128) + 2 * c->qk_rope_head_dim;
}
static inline int dsv_cfg_index_record_fp8(const struct dsv_model_config *c) {
        return c->index_head_dim + 4 * ((c->index_head_dim + 127) / 128);
}

/* The presets of dsv32-mkmodel. name: "tiny", "small", "m474", "v32-layers:N", "v32". */
int dsv_model_config_preset(const char *name, struct dsv_model_config *ret, struct dsv_error *err);
/* The published DeepSeek-V3.2 671B configuration. */
void dsv_model_config_v32(struct dsv_model_config *ret);
