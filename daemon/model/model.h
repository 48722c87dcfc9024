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
#include "kernels/comm.h"

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

/* Test and diagnostics hooks; every member optional. seq is the batch's sequence index; layer
 * num_hidden_layers is the MTP layer's block (dsv_model_mtp_forward; on_embed is not called
 * there). */
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
        /* Expert parallelism: a routed-expert row this rank computes (token seq/pos, its slot
         * and expert), before the combine. */
        void (*on_expert_row)(void *ud, int layer, int rank, int seq, int pos, int slot, int expert);
        /* Data-parallel attention (dsv_model_opts.dp): a row this rank (the expert's owner)
         * received from rank from (seq, pos: the token's on that rank), and a row it got back
         * from rank owner for one of its own tokens. */
        void (*on_expert_dispatch)(void *ud, int layer, int rank, int from, int seq, int pos, int slot, int expert);
        void (*on_expert_return)(void *ud, int layer, int rank, int owner, int seq, int pos, int slot, int expert);
        bool want_index_scores;
        bool want_router_scores;
        bool force_dense; /* attend to every position: sparse == dense checks */
};

/* The checkpoint's multi-token-prediction layer (layer num_hidden_layers): not loaded (the
 * default: plain generation never needs it), loaded when the checkpoint has it, or required. */
enum dsv_mtp_mode {
        DSV_MTP_OFF,
        DSV_MTP_AUTO,
        DSV_MTP_ON,
        DSV_MTP_MAX,
};

struct dsv_model_opts {
        enum dsv_numerics numerics;
        struct dsv_load_opts load;
        enum dsv_mtp_mode mtp;
        /* Expert parallelism (the ep of the ep,dp layout): this model is rank ep->rank of
         * ep->size; it loads and runs only the routed experts it owns (dsv_expert_owner), the
         * rest of the model whole. Every rank runs the same batches (attention, dense layers
         * and lm_head replicated); each MoE layer computes its experts' rows of every token
         * and the group all-reduces the per-slot rows (one rank contributes each, the others
         * zeros: exact), then every rank sums them in ascending expert order as one rank
         * does, so logits are bit-identical to one rank's. The CPU backend only (host memory);
         * NULL: one rank, every expert. The caller keeps ep alive while the model lives. */
        struct dsv_comm *ep;
        /* Tensor parallelism over the same group (the tp of ep,tp; needs ep): each rank also
         * holds and computes a share of the attention heads (q_b_proj and kv_b_proj rows,
         * o_proj columns), of the dense MLPs' and the shared expert's intermediate dimension
         * (in 128-blocks) and of lm_head's vocabulary rows (daemon/model/tp.c); the MLA latent
         * and the indexer are per token and stay replicated. The group all-reduces o_proj's
         * and down_proj's partial outputs and all-gathers the logits: every rank gets the
         * same values, within summation order of one rank's (not bit for bit). Refused when
         * the ranks do not divide the heads. Each rank loads only its shares. */
        bool tp;
        /* Data-parallel attention over the same group (the dp of ep,dp when each rank owns
         * whole sequences; needs ep, excludes tp): this rank runs embedding, attention, the
         * indexer, dense layers and lm_head for its own batch only (its sequences, its KV
         * pool), and each MoE layer sends every row (token, slot) to the rank owning the slot's
         * expert (dsv_comm_all_to_allv), computes the rows it received, and returns them to
         * the token's rank, which sums them in ascending expert order as one rank does (bit
         * for bit one rank's logits). Every dsv_model_forward and dsv_model_mtp_forward call
         * is then collective: every rank makes it, a rank with nothing to run with an empty
         * batch, and the ranks agree on the number of passes (passes.c) so the dispatches
         * pair up; so is dsv_model_load (its one-token probe pass): every rank loads at once. */
        bool dp;
        /* A device backend (not host memory) is refused before anything is allocated on it
         * when the weights, the smallest workspace and the KV pool the caller will allocate
         * after the load do not fit in the device's free memory (mem_info). That pool:
         * kv_bytes, else pages for kv_tokens tokens, else (both 0) the smallest pool the
         * runtime sizes automatically (DSV_KV_AUTO_MIN_TOKENS, or max_position_embeddings
         * when smaller). device names the device in that error (NULL: the backend's name). */
        uint64_t kv_bytes;
        int64_t kv_tokens;
        const char *device;
        /* Tokens in one forward pass: dsv_model_forward runs a larger batch as several passes
         * with the same results bit for bit (passes.c), so the activation workspace stays
         * bounded. 0: the largest power of two whose workspace is within 1/32 of the weights'
         * bytes; at least DSV_MODEL_MIN_PASS_TOKENS. */
        int max_pass_tokens;
        /* Never capture decode steps into graphs (--cuda-graphs=no): every step runs its ops
         * one by one. Otherwise, on a backend with graph entries (CUDA), a forward pass whose
         * tokens are all decode rows is padded to a bucket of 1, 2, 4, ... 512 rows and, from
         * the bucket's second use on, replayed from a graph recorded for it (same logits). */
        bool graphs_off;
};

/* What the graphs of decode steps did since the load: captures (one per bucket and
 * workspace/pool layout), replays (steps run by relaunching a captured graph), eager (decode
 * steps that could have used a graph but ran op by op: a bucket's first use, after a failed
 * capture), failed (captures that failed: graphs are then off for the model's life, unless
 * the capture ran out of device memory: then its bucket is recorded again on its next use, up
 * to DSV_GRAPH_OOM_RETRIES failures in a row). */
struct dsv_graph_stats {
        uint64_t captures, replays, eager, failed;
};
#define DSV_GRAPH_OOM_RETRIES 3

#define DSV_MODEL_MIN_PASS_TOKENS 16
#define DSV_MODEL_MAX_PASS_TOKENS (1 << 16)

/* The fewest tokens an automatically sized KV pool holds (less is an error at start). */
#define DSV_KV_AUTO_MIN_TOKENS 4096

/* The rank owning routed expert e of E over n ranks: contiguous blocks (rank r owns
 * [ceil(r*E/n), ceil((r+1)*E/n))), as DeepSeek's and SGLang's expert-parallel layouts. */
static inline int dsv_expert_owner(int e, int E, int n) {
        return (int)(((int64_t)e * n) / E);
}

/* Whether n ranks can split the model's attention heads (dsv_model_opts.tp): 0, or -EINVAL
 * with err naming both numbers. */
int dsv_model_tp_check(const struct dsv_model_config *c, int n, struct dsv_error *err);

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
/* Graph figures (zero on a backend without graphs, or with graphs_off). */
void dsv_model_graph_stats(const struct dsv_model *m, struct dsv_graph_stats *st);
/* Whether the MTP layer is loaded, and the layers a KV pool for this model needs: the main
 * ones, plus the MTP layer's when loaded (dsv_kv_pool_new_layers). */
bool dsv_model_has_mtp(const struct dsv_model *m);
/* The tokens one forward pass holds (dsv_model_opts.max_pass_tokens, or its default). */
int dsv_model_pass_tokens(struct dsv_model *m);
/* Sets the cap (clamped to DSV_MODEL_MIN/MAX_PASS_TOKENS) while no pass runs: the ranks of an
 * expert-parallel group must cut a batch alike, and each rank's weights (its share of the
 * experts) would otherwise give each its own default. */
void dsv_model_set_pass_tokens(struct dsv_model *m, int n);
/* Forward passes run (the main model's; MTP passes not counted) and the most tokens one held. */
struct dsv_model_pass_stats {
        uint64_t passes;
        int largest;
};
struct dsv_model_pass_stats dsv_model_pass_stats(const struct dsv_model *m);
int dsv_model_kv_layers(const struct dsv_model *m);

/* A batch (struct dsv_batch, model/plan.h): token i belongs to seqs[seq[i]] at position
 * pos[i]. Each sequence's tokens must be the consecutive positions [seqs[s]->len, ...), each
 * once, in any order in the batch; their pages must be reserved. On success every sequence's len advances past its tokens and the logits
 * of the tokens with want_logits[i] (all when NULL) are written in batch order, vocab_size
 * floats each. */
int dsv_model_forward(struct dsv_model *m, struct dsv_kv_pool *kv, const struct dsv_batch *b, float *logits,
                      struct dsv_error *err);
/* The same, also writing every token's final hidden state (batch order, hidden_size floats
 * each) when hidden is not NULL: the output of the final RMSNorm, what lm_head sees. That is
 * the state the MTP layer takes as its previous hidden state (hnorm's input): vLLM's
 * DeepSeekMTP gets the target model's output `hidden_states, _ = self.norm(hidden_states,
 * residual)` (vllm/model_executor/models/deepseek_v2.py, DeepseekV2Model.forward) and SGLang's
 * NextN the hidden states its LogitsProcessor received (after model.norm); DeepSeek's
 * technical report (section 2.2) calls it the representation the main model gives. */
int dsv_model_forward_hidden(struct dsv_model *m, struct dsv_kv_pool *kv, const struct dsv_batch *b, float *logits,
                             float *hidden, struct dsv_error *err);

/* Data-parallel attention (dsv_model_opts.dp): a rank that owns no sequence for a while (the
 * ranks 1..N-1 of dsv32-run, whose one sequence is rank 0's) follows the others' calls, taking
 * part in every pass's dispatches, until a rank calls dsv_model_dp_end (0); an error when
 * the group fails or the calling ranks disagree (-EPROTO). dsv_model_dp_end is collective
 * like a forward call. -EINVAL on a model without dp. */
int dsv_model_dp_follow(struct dsv_model *m, struct dsv_error *err);
int dsv_model_dp_end(struct dsv_model *m, struct dsv_error *err);

/* The MTP layer (DESIGN section 4) over a batch, for speculative drafts. Token i is the next
 * token t_{p+1} of sequence seqs[seq[i]] at position p = pos[i], and hidden_in + i *
 * hidden_size its previous hidden state at p: the main model's (dsv_model_forward_hidden), or
 * for a chained draft this layer's own hidden_out at p - 1. Per token:
 *   x      = eh_proj([enorm(embed(t_{p+1})); hnorm(h_p)])     (the embedding half first)
 *   y      = block(x)            one transformer block, x its residual (as layer 0)
 *   logits = shared_head.head(shared_head.norm(y))           the draft for position p + 2
 * Each sequence's tokens must be the positions [mtp_len, mtp_len + count) within its reserved
 * pages; its mtp_len advances past them. The block's attention reads and writes the MTP
 * layer's own records of the pool (dsv_model_kv_layers()), and every token takes the decode
 * (per-token) path whatever the batch holds, so a draft does not depend on how the work was
 * scheduled. Logits of the wanted tokens (want_logits) in batch order; hidden_out (optional):
 * every token's shared_head.norm output, batch order. -EOPNOTSUPP when the layer is not
 * loaded; -EINVAL when the pool has no MTP layer. */
int dsv_model_mtp_forward(struct dsv_model *m, struct dsv_kv_pool *kv, const struct dsv_batch *b, const float *hidden_in,
                          float *logits, float *hidden_out, struct dsv_error *err);
