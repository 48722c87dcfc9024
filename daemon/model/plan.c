/* Checking and laying out a batch (see plan.h). */
#include "config.h"

#include "daemon/model/plan.h"

void dsv_batch_plan_done(struct dsv_batch_plan *p) {
        if (!p)
                return;
        free(p->perm);
        memset(p, 0, sizeof(*p));
}

int dsv_batch_plan_make(const struct dsv_batch *b, int page_tokens, int vocab_size, struct dsv_batch_plan *ret,
                        struct dsv_error *err) {
        struct dsv_batch_plan p = {.n_rows = b->n_tokens, .n_seqs = b->n_seqs, .max_pages = 1, .ctx = 1};
        const size_t T = (size_t)MAX(b->n_tokens, 1), S = (size_t)MAX(b->n_seqs, 1);
        int *base, *cursor;
        uint8_t *seen;
        int r = 0, row;

        if (b->n_tokens < 0 || b->n_seqs < 0 || (b->n_tokens > 0 && (!b->token || !b->pos || !b->seq || !b->seqs)))
                return dsv_error_set(err, EINVAL, "malformed batch (%d tokens, %d sequences)", b->n_tokens, b->n_seqs);
        /* one block: 6 row arrays, 4 sequence arrays + base/cursor, 3 chunk arrays, then bytes */
        p.perm = malloc((6 * T + 6 * S + 3 * S) * sizeof(int) + T);
        if (!p.perm)
                return -ENOMEM;
        p.row_pos = p.perm + T;
        p.row_seq = p.row_pos + T;
        p.out_rows = p.row_seq + T;
        p.out_dest = p.out_rows + T;
        int *dest_of = p.out_dest + T; /* batch index -> caller's logits row, or -1 */
        p.first_pos = dest_of + T;
        p.count = p.first_pos + S;
        base = p.count + S;
        cursor = base + S;
        p.chunk_seq = cursor + S;
        p.chunk_start = p.chunk_seq + S;
        p.chunk_len = p.chunk_start + S;
        seen = (uint8_t *)(p.chunk_len + S);
        memset(p.count, 0, S * sizeof(int));
        memset(seen, 0, T);

        for (int i = 0; i < b->n_tokens; i++) {
                int s = b->seq[i];
                if (s < 0 || s >= b->n_seqs) {
                        r = dsv_error_set(err, EINVAL, "batch token %d: sequence %d out of range", i, s);
                        goto fail;
                }
                if (b->token[i] < 0 || b->token[i] >= vocab_size) {
                        r = dsv_error_set(err, EINVAL, "batch token %d: id %d outside the vocabulary (%d)", i, b->token[i],
                                          vocab_size);
                        goto fail;
                }
                p.count[s]++;
        }
        for (int s = 0, off = 0; s < b->n_seqs; s++) {
                const struct dsv_kv_seq *q = b->seqs[s];
                if (!q) {
                        r = dsv_error_set(err, EINVAL, "batch sequence %d is missing", s);
                        goto fail;
                }
                p.first_pos[s] = q->len;
                if ((int64_t)q->len + p.count[s] > (int64_t)q->n_pages * page_tokens) {
                        r = dsv_error_set(err, ENOSPC, "sequence %d: %d tokens need more than its %d reserved pages", s,
                                          q->len + p.count[s], q->n_pages);
                        goto fail;
                }
                base[s] = off;
                off += p.count[s];
                p.max_pages = MAX(p.max_pages, q->n_pages);
        }
        /* positions: exactly [len, len + count), each once */
        for (int i = 0; i < b->n_tokens; i++) {
                int s = b->seq[i];
                int64_t rel = (int64_t)b->pos[i] - p.first_pos[s];
                if (rel < 0 || rel >= p.count[s]) {
                        r = dsv_error_set(err, EINVAL, "batch token %d: position %d is not among sequence %d's next %d positions",
                                          i, b->pos[i], s, p.count[s]);
                        goto fail;
                }
                if (seen[base[s] + rel]) {
                        r = dsv_error_set(err, EINVAL, "batch token %d: position %d of sequence %d appears twice", i, b->pos[i], s);
                        goto fail;
                }
                seen[base[s] + rel] = 1;
        }

        /* rows: decode tokens first, then each prefill chunk by position */
        row = 0;
        for (int i = 0; i < b->n_tokens; i++)
                if (p.count[b->seq[i]] == 1 || (b->as_decode && b->as_decode[b->seq[i]]))
                        p.perm[row++] = i;
        p.n_dec = row;
        for (int s = 0; s < b->n_seqs; s++) {
                if (p.count[s] <= 1 || (b->as_decode && b->as_decode[s]))
                        continue;
                p.chunk_seq[p.n_chunks] = s;
                p.chunk_start[p.n_chunks] = row;
                p.chunk_len[p.n_chunks] = p.count[s];
                p.n_chunks++;
                cursor[s] = row;
                row += p.count[s];
                p.max_chunk_ctx = MAX(p.max_chunk_ctx, p.first_pos[s] + p.count[s]);
        }
        for (int i = 0; i < b->n_tokens; i++) {
                int s = b->seq[i];
                if (p.count[s] > 1 && !(b->as_decode && b->as_decode[s]))
                        p.perm[cursor[s] + (b->pos[i] - p.first_pos[s])] = i;
        }
        for (int i = 0, k = 0; i < b->n_tokens; i++)
                dest_of[i] = (!b->want_logits || b->want_logits[i]) ? (b->logits_row ? b->logits_row[i] : k++) : -1;
        for (int t = 0; t < b->n_tokens; t++) {
                int i = p.perm[t];
                p.row_pos[t] = b->pos[i];
                p.row_seq[t] = b->seq[i];
                p.ctx = MAX(p.ctx, b->pos[i] + 1);
                if (dest_of[i] >= 0) {
                        p.out_rows[p.n_out] = t;
                        p.out_dest[p.n_out] = dest_of[i];
                        p.n_out++;
                }
        }
        *ret = p;
        return 0;
fail:
        dsv_batch_plan_done(&p);
        return r;
}
