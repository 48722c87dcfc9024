/* Generation of one sequence on a runtime, with or without speculative decoding: what
 * dsv32-run does, and the reference the engine's batched speculation is checked against.
 *
 * Plain: prefill the prompt (whole, or in chunks), then one decode step per token.
 * Speculative (the model's MTP layer drafts, k drafts per step; V3.2 ships k = 1):
 *   after a forward pass that fed positions up to L - 1 and decided the token t_L,
 *   1. the MTP layer catches up over the positions [mtp_len, L) (token p + 1, the main model's
 *      hidden state at p) and its last row drafts d_1 for position L + 1; with k > 1 the layer
 *      runs again on its own output (d_2 ...), and its records past L - 1 are rolled back;
 *   2. one verify pass feeds t_L, d_1 .. d_k at L .. L + k as decode rows (as_decode), so its
 *      logits are bit for bit those k + 1 plain decode steps would compute;
 *   3. drafts are accepted in order by the rule of speculate.h until one is rejected (the rule
 *      then emits the replacement token) or all are (the last row then gives one more token);
 *      the KV records of the rejected positions are dropped (dsv_kv_seq_truncate).
 * Greedy output is plain greedy decoding's, token for token; sampled output has plain
 * sampling's distribution and is reproducible by seed. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "daemon/runtime/runtime.h"
#include "daemon/runtime/speculate.h"

struct dsv_generate_opts {
        int n_gen;    /* tokens to generate (>= 0) */
        int chunk;    /* prefill chunk size; 0: the whole prompt at once, 1: token by token */
        struct dsv_sampling sampling;
        bool speculate; /* MTP drafts: the runtime's model must have its MTP layer */
        int n_draft;    /* drafts per step (>= 1) */
        bool feed_last; /* also feed the last generated token (its logits then reach on_logits) */
        /* Optional: the logits after each position that stays in the sequence, in position
         * order: the prompt's, then one per generated token fed. A negative return stops the
         * generation with that error. */
        int (*on_logits)(void *ud, int pos, const float *logits, int n_vocab);
        void *ud;
};

struct dsv_generate_stats {
        uint64_t prefill_ns, decode_ns;
        int64_t forward_passes; /* decode-phase main model passes (plain steps or verify passes) */
        int64_t drafted, accepted;
};

/* Writes n_gen token ids to out. The sequence lives in the runtime's KV pool for the call
 * only. err names the failing pass. */
int dsv_runtime_generate(struct dsv_runtime *rt, const int32_t *prompt, int n_prompt, const struct dsv_generate_opts *o,
                         int32_t *out, struct dsv_generate_stats *st, struct dsv_error *err);
