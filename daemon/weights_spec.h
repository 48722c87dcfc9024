/* The tensors a DeepSeek-V3.2 checkpoint must hold, derived from its config: names exactly
 * as in the Hugging Face checkpoint, accepted dtypes, shapes, and which component each
 * belongs to. One table serves the checkpoint validator, the model loader, dsv32-mkmodel
 * and dsv32-inspect. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "daemon/model_config.h"

enum dsv_component {
        DSV_COMP_EMBED,
        DSV_COMP_ATTN,    /* MLA projections */
        DSV_COMP_INDEXER, /* lightning indexer */
        DSV_COMP_DENSE_MLP,
        DSV_COMP_ROUTED,  /* routed experts */
        DSV_COMP_SHARED,  /* shared experts */
        DSV_COMP_GATE,    /* router weight + correction bias */
        DSV_COMP_NORM,
        DSV_COMP_HEAD,
        DSV_COMP_MAX,
};
const char *dsv_component_name(enum dsv_component c);

enum dsv_tensor_kind {
        DSV_TK_LINEAR, /* F8_E4M3 with F32 weight_scale_inv [ceil(out/128), ceil(in/128)], or BF16 */
        DSV_TK_BF16,   /* embeddings, lm_head */
        DSV_TK_NORM,   /* BF16 or F32 vector */
        DSV_TK_FLOAT,  /* F32 or BF16 (k_norm, gate.weight, weights_proj) */
        DSV_TK_F32,    /* e_score_correction_bias */
};

struct dsv_tensor_spec {
        char name[112];
        enum dsv_tensor_kind kind;
        int ndim;
        int64_t shape[2]; /* [rows, cols] = [out, in] for linears */
        enum dsv_component comp;
        int layer;  /* -1: not in a layer */
        int expert; /* routed expert index or -1 */
        bool mtp;   /* belongs to the multi-token-prediction layer(s) */
        bool optional;
};

/* All tensors of the model; with_mtp adds the MTP layer(s). Caller frees *ret. */
int dsv_weight_specs(const struct dsv_model_config *cfg, bool with_mtp, struct dsv_tensor_spec **ret, size_t *n);

static inline int64_t dsv_spec_numel(const struct dsv_tensor_spec *s) {
        return s->ndim == 1 ? s->shape[0] : s->shape[0] * s->shape[1];
}
