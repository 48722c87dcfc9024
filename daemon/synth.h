/* Synthetic DeepSeek-V3.2 checkpoints in the real Hugging Face layout (config.json,
 * model.safetensors.index.json, several shards, FP8 e4m3 linears with 128x128 power-of-two
 * block scales, bf16 embeddings/norms/router/indexer weights/lm_head, fp32 correction bias),
 * deterministic from a seed.
 *
 * They are built to be well-conditioned rather than chaotic: the residual stream has RMS ~1,
 * every sublayer adds ~0.1-0.2 of it, and the last `code_dims` residual coordinates, which
 * no sublayer writes (zero rows in o_proj/down_proj), carry a per-token routing code that
 * the router reads with a large gain, so router margins stay far above FP8 noise while group
 * limits and the correction bias still matter. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "daemon/model_config.h"
#include "daemon/util.h"

struct dsv_synth_opts {
        uint64_t seed;
        int n_shards;     /* >= 1; default 2 */
        bool mtp;         /* write the MTP layer(s); their embed_tokens and shared_head.head are
                           * copies of the main model's, as in DeepSeek's checkpoints */
        /* An MTP layer that drafts well (acceptance can be measured): eh_proj passes the next
         * token's embedding through ([I | 0]), enorm is 1, the block is a copy of the last main
         * layer and shared_head.norm a copy of model.norm. Needs mtp, and the last main layer
         * of the same kind (dense or MoE) as the MTP block. */
        bool mtp_predictable;
        bool config_only; /* config.json only */
        /* Test hooks: corrupt the output. NULL/0 = none. */
        const char *drop_tensor;     /* leave this tensor out (header and index) */
        const char *bf16_tensor;     /* write this FP8 linear as BF16 instead */
        const char *bad_dtype_tensor; /* declare this tensor with a wrong dtype (I32) */
        const char *bad_shape_tensor; /* declare this tensor with one row more */
};

int dsv_synth_write(const char *dir, const struct dsv_model_config *cfg, const struct dsv_synth_opts *opts,
                    struct dsv_error *err);
/* Number of residual coordinates carrying the routing code. */
int dsv_synth_code_dims(const struct dsv_model_config *cfg);
