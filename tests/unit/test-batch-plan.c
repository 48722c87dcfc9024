/* The forward pass's batch plan (daemon/model/plan.c), without a model: row order (decode
 * rows first in batch order, then one chunk per sequence in position order; a sequence
 * marked as_decode is all decode rows), wanted rows and where their logits go, page checks,
 * and every malformed batch refused with a message naming the token or sequence. */
#include "config.h"

#include "daemon/model/plan.h"
#include "tests/check.h"

#define PT 4 /* page tokens */

static struct dsv_kv_seq seq(int len, int n_pages) {
        static int32_t pages[64];
        struct dsv_kv_seq q = {.pages = pages, .n_pages = n_pages, .cap = n_pages, .len = len};
        return q;
}

int main(void) {
        struct dsv_error err = {{0}};
        struct dsv_batch_plan p;

        /* seq 0 decodes at 7, seq 1 prefills 3..6 (given out of order), seq 2 decodes at 0 */
        {
                struct dsv_kv_seq a = seq(7, 2), b = seq(3, 2), c = seq(0, 1);
                struct dsv_kv_seq *sp[3] = {&a, &b, &c};
                int32_t tok[6] = {10, 11, 12, 13, 14, 15}, pos[6] = {5, 7, 3, 0, 6, 4}, sq[6] = {1, 0, 1, 2, 1, 1};
                bool want[6] = {true, true, false, true, false, false};
                struct dsv_batch bt = {.n_tokens = 6, .token = tok, .pos = pos, .seq = sq, .want_logits = want, .n_seqs = 3,
                                       .seqs = sp};
                REQUIRE(dsv_batch_plan_make(&bt, PT, 100, &p, &err) == 0, "%s", err.msg);
                int perm[6] = {1, 3, 2, 5, 0, 4}; /* decode rows (batch 1, 3), then seq 1 at 3, 4, 5, 6 */
                for (int t = 0; t < 6; t++)
                        CHECK(p.perm[t] == perm[t], "row %d is batch index %d, want %d", t, p.perm[t], perm[t]);
                CHECK(p.n_dec == 2 && p.n_chunks == 1 && p.chunk_seq[0] == 1 && p.chunk_start[0] == 2 && p.chunk_len[0] == 4,
                      "n_dec %d, chunks %d", p.n_dec, p.n_chunks);
                for (int t = 0; t < 6; t++)
                        CHECK(p.row_pos[t] == pos[perm[t]] && p.row_seq[t] == sq[perm[t]], "row %d", t);
                /* wanted: batch 0 (pos 5: row 4), 1 (row 0), 3 (row 1); logits in batch order 0, 1, 3 */
                CHECK(p.n_out == 3, "n_out %d", p.n_out);
                int rows[3] = {0, 1, 4}, dest[3] = {1, 2, 0};
                for (int j = 0; j < 3 && j < p.n_out; j++)
                        CHECK(p.out_rows[j] == rows[j] && p.out_dest[j] == dest[j], "out %d: row %d -> %d", j, p.out_rows[j],
                              p.out_dest[j]);
                CHECK(p.max_pages == 2 && p.max_chunk_ctx == 7 && p.ctx == 8, "max_pages %d chunk ctx %d ctx %d", p.max_pages,
                      p.max_chunk_ctx, p.ctx);
                CHECK(p.count[0] == 1 && p.count[1] == 4 && p.count[2] == 1 && p.first_pos[1] == 3, "counts");
                dsv_batch_plan_done(&p);
        }
        /* as_decode (speculative verification): seq 1's three tokens are decode rows in batch
         * order, still checked as its next positions; seq 0 stays a chunk */
        {
                struct dsv_kv_seq a = seq(0, 1), b = seq(5, 2);
                struct dsv_kv_seq *sp[2] = {&a, &b};
                int32_t tok[5] = {1, 2, 3, 4, 5}, pos[5] = {6, 0, 5, 1, 7}, sq[5] = {1, 0, 1, 0, 1};
                bool dec[2] = {false, true};
                struct dsv_batch bt = {.n_tokens = 5, .token = tok, .pos = pos, .seq = sq, .n_seqs = 2, .seqs = sp,
                                       .as_decode = dec};
                REQUIRE(dsv_batch_plan_make(&bt, PT, 100, &p, &err) == 0, "%s", err.msg);
                int perm[5] = {0, 2, 4, 1, 3};
                for (int t = 0; t < 5; t++)
                        CHECK(p.perm[t] == perm[t], "as_decode: row %d is batch index %d, want %d", t, p.perm[t], perm[t]);
                CHECK(p.n_dec == 3 && p.n_chunks == 1 && p.chunk_seq[0] == 0 && p.chunk_start[0] == 3 && p.chunk_len[0] == 2,
                      "as_decode: n_dec %d, chunks %d", p.n_dec, p.n_chunks);
                CHECK(p.max_chunk_ctx == 2 && p.ctx == 8 && p.count[1] == 3, "as_decode: chunk ctx %d ctx %d", p.max_chunk_ctx,
                      p.ctx);
                dsv_batch_plan_done(&p);
                /* a marked sequence's positions are checked like any other's */
                pos[4] = 8;
                memset(&err, 0, sizeof(err));
                CHECK(dsv_batch_plan_make(&bt, PT, 100, &p, &err) == -EINVAL && strstr(err.msg, "next 3 positions"),
                      "as_decode gap: %s", err.msg);
        }
        /* all logits when want_logits is NULL, in batch order */
        {
                struct dsv_kv_seq a = seq(0, 1);
                struct dsv_kv_seq *sp[1] = {&a};
                int32_t tok[3] = {1, 2, 3}, pos[3] = {2, 0, 1}, sq[3] = {0, 0, 0};
                struct dsv_batch bt = {.n_tokens = 3, .token = tok, .pos = pos, .seq = sq, .n_seqs = 1, .seqs = sp};
                REQUIRE(dsv_batch_plan_make(&bt, PT, 100, &p, &err) == 0, "%s", err.msg);
                CHECK(p.n_out == 3 && p.out_dest[0] == 1 && p.out_dest[1] == 2 && p.out_dest[2] == 0, "dest");
                dsv_batch_plan_done(&p);
        }
        /* malformed batches */
        {
                struct dsv_kv_seq a = seq(2, 1), b = seq(0, 1);
                struct dsv_kv_seq *sp[2] = {&a, &b};
                struct {
                        int32_t tok[2], pos[2], sq[2];
                        int n, rc;
                        const char *msg;
                } bad[] = {
                        {{1, 2}, {2, 2}, {0, 0}, 2, -EINVAL, "appears twice"},     /* a repeated position */
                        {{1, 2}, {2, 4}, {0, 0}, 2, -EINVAL, "next 2 positions"},  /* a gap */
                        {{1, 2}, {1, 2}, {0, 0}, 2, -EINVAL, "next 2 positions"},  /* before len */
                        {{1, 2}, {2, 0}, {0, 2}, 2, -EINVAL, "out of range"},      /* no such sequence */
                        {{1, 100}, {2, 0}, {0, 1}, 2, -EINVAL, "outside the vocabulary"},
                        {{1, -1}, {2, 0}, {0, 1}, 2, -EINVAL, "outside the vocabulary"},
                        {{1, 2}, {3, 4}, {0, 0}, 2, -ENOSPC, "reserved pages"},    /* len 3 + 2 > one page of 4 */
                };
                for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
                        struct dsv_batch bt = {.n_tokens = bad[i].n, .token = bad[i].tok, .pos = bad[i].pos, .seq = bad[i].sq,
                                               .n_seqs = 2, .seqs = sp};
                        a.len = i + 1 == ARRAY_SIZE(bad) ? 3 : 2;
                        memset(&err, 0, sizeof(err));
                        int r = dsv_batch_plan_make(&bt, PT, 100, &p, &err);
                        CHECK(r == bad[i].rc && strstr(err.msg, bad[i].msg), "case %zu: %d %s", i, r, err.msg);
                        if (r == 0)
                                dsv_batch_plan_done(&p);
                }
        }
        return test_result("test-batch-plan");
}
