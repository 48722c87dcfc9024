/* The DeepSeek-V3.2 model as a sequence of backend ops: weights loaded from a checkpoint
 * into backend memory, and a forward pass over a batch of tokens from several sequences at
 * different positions (prefill chunks and decode steps mixed) against the paged KV cache.
 *
 * Numerics: `faithful` (default; the reference's rounding points, FP8 KV cache) or `exact`
 * (FP8 weights dequantized, fp32 everywhere else, F32 KV cache). A sequence contributing
 * one token to a batch takes the absorbed (decode) attention path; several tokens take the
 * expanded (prefill) path, as the reference does. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "daemon/checkpoint.h"
#include "daemon/kv_cache.h"
#include "daemon/loader.h"
#include "daemon/model/plan.h"
#include "daemon/model_config.h"
#include "kernels/backend.h"

enum dsv_numerics {
        DSV_NUMERICS_FAITHFUL,
        DSV_NUMERICS_EXACT,
        DSV_NUMERICS_MAX,
};
const char *dsv_numerics_name(enum dsv_numerics n);
int dsv_numerics_from_name(const char *s);
static inline enum dsv_kv_format dsv_numerics_kv_format(enum dsv_numerics n) {
        return n == DSV_NUMERICS_EXACT ? DSV_KV_F32 : DSV_KV_FP8;
}

/* Test and diagnostics hooks; every member optional. seq is the batch's sequence index. */
struct dsv_model_hooks {
        void *ud;
        /* Replace a selection: return true after writing k entries (indexer: ascending
         * positions, -1 padded; experts: num_experts_per_tok ids). */
        bool (*force_topk)(void *ud, int layer, int seq, int pos, int32_t *idx, int k);
        bool (*force_experts)(void *ud, int layer, int seq, int pos, int32_t *ids, int k);
        /* Observe selections (scores only when asked for with want_*_scores). */
        void (*on_topk)(void *ud, int layer, int seq, int pos, const int32_t *idx, int k, const float *scores, int n);
        void (*on_experts)(void *ud, int layer, int seq, int pos, const int32_t *ids, const float *w, int k,
                           const float *scores, int n_experts);
        /* The embedded tokens (F32 rows of hidden_size, batch order of rows is internal: use
         * seq/pos), may be modified in place (perturbation tests). */
        void (*on_embed)(void *ud, int seq, int pos, float *x, int dim);
        /* The residual stream after a layer (fp32 sum the next norm sees), dim values. */
        void (*on_layer)(void *ud, int layer, int seq, int pos, const float *x, int dim);
        bool want_index_scores;
        bool want_router_scores;
        bool force_dense; /* attend to every position: sparse == dense checks */
};

struct dsv_model_opts {
        enum dsv_numerics numerics;
        struct dsv_load_opts load;
};

struct dsv_model;

int dsv_model_load(const char *dir, struct dsv_backend *be, const struct dsv_model_opts *opts, struct dsv_model **ret,
                   struct dsv_error *err);
void dsv_model_free(struct dsv_model *m);
const struct dsv_model_config *dsv_model_get_config(const struct dsv_model *m);
const struct dsv_checkpoint *dsv_model_get_checkpoint(const struct dsv_model *m);
const struct dsv_load_stats *dsv_model_load_stats(const struct dsv_model *m);
enum dsv_numerics dsv_model_numerics(const struct dsv_model *m);
uint64_t dsv_model_weight_bytes(const struct dsv_model *m);
struct dsv_backend *dsv_model_backend(const struct dsv_model *m);
void dsv_model_set_hooks(struct dsv_model *m, const struct dsv_model_hooks *hooks);

/* A batch (struct dsv_batch, model/plan.h): token i belongs to seqs[seq[i]] at position
 * pos[i]. Each sequence's tokens must be the consecutive positions [seqs[s]->len, ...), each
 * once, in any order in the batch; their pages must be reserved. On success every sequence's len advances past its tokens and the logits
 * of the tokens with want_logits[i] (all when NULL) are written in batch order, vocab_size
 * floats each. */
int dsv_model_forward(struct dsv_model *m, struct dsv_kv_pool *kv, const struct dsv_batch *b, float *logits,
                      struct dsv_error *err);
