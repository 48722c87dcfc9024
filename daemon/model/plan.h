/* The plan of one forward pass: a batch (tokens of several sequences at their positions)
 * checked and laid out in rows. Pure: no backend, no model, only the batch, the page size
 * and the vocabulary size; unit-tested in tests/unit/test-batch-plan.c.
 *
 * Row order: first the decode rows (batch order): the tokens of sequences that contribute
 * exactly one token, and every token of a sequence marked as_decode; then each other sequence
 * with several tokens as one prefill chunk, its rows in position order. as_decode is for
 * speculative verification: a decode row's numerics do not depend on the other rows (the
 * absorbed attention and every other op work row by row), so a verify pass of 1 + k tokens
 * gives bit for bit the logits of k + 1 plain decode steps, where a prefill chunk would not. A batch is valid when every token names a sequence of the batch and an
 * id of the vocabulary, each sequence's tokens are exactly the positions [len, len + count)
 * (each once, any order in the batch), and its reserved pages hold them. */
#pragma once

#include <stdbool.h>

#include "daemon/kv_cache.h"
#include "kernels/base.h"

struct dsv_batch {
        int n_tokens;
        const int32_t *token;
        const int32_t *pos;
        const int32_t *seq;
        const bool *want_logits; /* NULL: all */
        int n_seqs;
        struct dsv_kv_seq **seqs;
        const bool *as_decode; /* [n_seqs] or NULL: sequences whose tokens are all decode rows */
        /* A pass cut from a larger batch (model/passes.c): [n_tokens] where token i's logits
         * row (when wanted) and its hidden row go in the caller's arrays; NULL: this batch's
         * own order (the wanted tokens' rank, the token's index). */
        const int32_t *logits_row, *hidden_row;
};

struct dsv_batch_plan {
        int n_rows, n_seqs;
        int *perm;                 /* [n_rows] row -> batch index */
        int *row_pos, *row_seq;    /* [n_rows] position and sequence of each row */
        int *first_pos, *count;    /* [n_seqs] the sequence's len and its tokens in the batch */
        int n_dec;                 /* rows [0, n_dec) are decode rows */
        int n_chunks;
        int *chunk_seq, *chunk_start, *chunk_len; /* [n_chunks] prefill chunks */
        int n_out;
        int *out_rows;             /* [n_out] ascending rows whose logits are wanted */
        int *out_dest;             /* [n_out] where that row's logits go in the caller's order */
        int max_pages;             /* widest page table of the batch (>= 1) */
        int max_chunk_ctx;         /* largest context a prefill chunk attends to (0: none) */
        int ctx;                   /* largest context of any row (>= 1) */
};

/* 0, or -EINVAL/-ENOSPC with err naming the token or sequence; -ENOMEM. On success the caller
 * frees the plan with dsv_batch_plan_done(). */
int dsv_batch_plan_make(const struct dsv_batch *b, int page_tokens, int vocab_size, struct dsv_batch_plan *p,
                        struct dsv_error *err);
void dsv_batch_plan_done(struct dsv_batch_plan *p);
