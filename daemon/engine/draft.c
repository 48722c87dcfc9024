/* Speculative decoding in the engine with the checkpoint's MTP layer (see engine.h; the
 * one-sequence version is daemon/runtime/generate.c, and this file batches what it does).
 *
 * A request that speculates (request.spec) keeps the MTP layer's records of its sequence up
 * to date: between steps its seq.mtp_len == seq.len. Each step, after the main pass and
 * output.c's decisions, one MTP pass catches every speculating sequence of the batch up over
 * the positions the main pass computed, [mtp_len, end): row p takes the token at p + 1 and
 * the main model's hidden state at p from this very pass (prefill chunks join it with
 * theirs), so no hidden state is kept across steps. end is seq.len, or seq.len - 1 when the
 * token after it is not known (a request that stopped). When the request decodes on (its
 * pending token at seq.len), the last row's logits give its first draft, and chained passes
 * (row seq.len + j - 1: draft j and the layer's own hidden state of the row before) the
 * others; their records are recomputed by the next catch-up, so mtp_len goes back to
 * seq.len. The next step feeds the pending token and the drafts as decode rows (as_decode:
 * bit for bit the logits of plain decode steps) and output.c accepts them in order.
 *
 * A request's k = min(mtp_draft, what max_tokens and the context leave minus one,
 * batch_tokens - 1): it depends on the request and the settings, never on what else runs,
 * and the pages the chained drafts write are reserved with the step before (draft_need), so
 * neither load nor memory pressure changes a draft and seeded sampling stays reproducible
 * (the drafts decide which random draws make the tokens). A preempted request replays its
 * known tokens without drafts; the MTP layer follows the replay, and the drafts after it are
 * the ones the request had before.
 *
 * KV reuse. The MTP record at position p depends on the token at p + 1 and the main model's
 * hidden state at p, which reused KV pages do not keep. A request that starts from reused KV
 * (its session's history, the prefix cache, a restored snapshot) needs valid records for
 * every reused position: sessions.c and prefix.c leave seq.mtp_len where the valid ones end
 * (a page's last record is valid only for the token that followed it then: struct
 * dsv_kv_page.mtp_next), and draft_admit cuts the sequence back to the page boundary below
 * it, so that the main model computes the rest again, as a prefill as before (the same
 * bits), with the MTP layer following. When the cut would recompute KV that decode steps
 * computed (a session reusing its output, reuse_output), the request does not speculate:
 * it decodes plainly, with the same tokens. */
#include "config.h"

#include "daemon/engine/core.h"

/* The drafts r takes in its next verify pass. */
static int draft_k(const struct dsv_core *c, const struct request *r) {
        int64_t k = MAX(c->tun.mtp_draft, 1);
        k = MIN(k, (int64_t)r->in->max_tokens - r->n_generated - 1);
        k = MIN(k, (int64_t)r->total - r->n_tokens);
        k = MIN(k, (int64_t)c->tun.batch_tokens - 1);
        return (int)MAX(k, 0);
}

void draft_free(struct request *r) {
        for (int i = 0; i < r->cap_drafts; i++)
                dsv_draft_done(&r->drafts[i]);
        free(r->drafts);
        r->drafts = NULL;
        r->cap_drafts = r->n_draft = 0;
}

void draft_admit(struct dsv_core *c, struct request *r) {
        const int pt = (int)c->p.kv_page_tokens;
        struct dsv_kv_seq *q = &r->seq;

        r->spec = false;
        r->n_draft = 0;
        if (!c->exec.mtp || r->gm) /* a constrained request: no drafts (constrain.c) */
                return;
        if (q->mtp_len < q->len) {
                int cut = q->mtp_len / pt * pt;
                if (q->len > r->n_exact) {
                        log_debug("Request %llu decodes without speculation: the MTP layer's records of its session's "
                                  "output are not valid for this prompt, and recomputing that KV would change it",
                                  (unsigned long long)r->id);
                        return;
                }
                /* page-aligned: no page is copied, so this cannot fail */
                if (dsv_kv_seq_truncate(core_pool(c, q), q, cut) < 0)
                        return;
                r->n_exact = MIN(r->n_exact, cut);
                r->n_keyed = 0; /* prefix.c keys the kept pages again */
        }
        r->spec = true;
}

int draft_ready(const struct dsv_core *c, const struct request *r) {
        if (!r->spec || r->state != REQ_RUNNING || r->seq.len != r->n_tokens - 1 || r->draft_at != r->seq.len)
                return 0;
        return MIN(r->n_draft, MAX(draft_k(c, r), 0));
}

int draft_need(const struct dsv_core *c, const struct request *r, int k) {
        int n = r->seq.len + 1 + k;
        /* the chained drafts drawn after this step write the MTP records of positions up to
         * (its new len, at most len + 1 + k) + k' - 2, k' <= mtp_draft */
        if (r->spec)
                n = MAX(n, MIN(r->seq.len + k + MAX(c->tun.mtp_draft, 1), r->total));
        return n;
}

/* ------------------------------------------------------------------ the MTP pass */

static int reserve_rows(struct dsv_core *c, size_t rows, size_t seqs, size_t logit_rows) {
        const size_t D = (size_t)c->p.hidden_size, V = (size_t)c->p.vocab_size;
        size_t cap;
        int rc;
        if (rows > c->m.cap) {
                cap = c->m.cap;
                if ((rc = DSV_GROW(&c->m.tok, &cap, rows)) < 0)
                        return rc;
                cap = c->m.cap;
                if ((rc = DSV_GROW(&c->m.pos, &cap, rows)) < 0)
                        return rc;
                cap = c->m.cap;
                if ((rc = DSV_GROW(&c->m.seq, &cap, rows)) < 0)
                        return rc;
                cap = c->m.cap;
                if ((rc = DSV_GROW(&c->m.want, &cap, rows)) < 0)
                        return rc;
                float *a = realloc(c->m.hin, cap * D * sizeof(float)), *b;
                if (!a)
                        return -ENOMEM;
                c->m.hin = a;
                b = realloc(c->m.hout, cap * D * sizeof(float));
                if (!b)
                        return -ENOMEM;
                c->m.hout = b;
                c->m.cap = cap;
        }
        if (seqs > c->m.seq_cap) {
                cap = c->m.seq_cap;
                if ((rc = DSV_GROW(&c->m.seqs, &cap, seqs)) < 0)
                        return rc;
                cap = c->m.seq_cap;
                if ((rc = DSV_GROW(&c->m.req, &cap, seqs)) < 0)
                        return rc;
                cap = c->m.seq_cap;
                if ((rc = DSV_GROW(&c->m.row, &cap, seqs)) < 0)
                        return rc;
                c->m.seq_cap = cap;
        }
        if (logit_rows > c->m.rows_cap) {
                float *l = realloc(c->m.logits, logit_rows * V * sizeof(float));
                if (!l)
                        return -ENOMEM;
                c->m.logits = l;
                c->m.rows_cap = logit_rows;
        }
        return 0;
}

static void fail_all(struct dsv_core *c, int ns, int rc, const struct dsv_error *err) {
        log_error("Engine: the MTP layer's pass failed: %s", err->msg[0] ? err->msg : strerror(-rc));
        for (int i = 0; i < ns; i++) {
                struct request *r = c->m.req[i];
                r->spec = false;
                r->n_draft = 0;
                if (r->state != REQ_FINISHING)
                        request_fail(r, EIO, "the MTP layer's pass failed: %s", err->msg[0] ? err->msg : strerror(-rc));
        }
}

/* Draws draft j of r from logits row `row` of the MTP pass; false when r failed. */
static bool draw(struct dsv_core *c, struct request *r, int j, int row) {
        const size_t V = (size_t)c->p.vocab_size;
        if (dsv_spec_draft(&c->sampler, c->m.logits + (size_t)row * V, &r->sp, (uint64_t)(r->n_generated + j), &r->drafts[j]) <
            0) {
                request_fail(r, ENOMEM, "out of memory for a draft");
                r->spec = false;
                r->n_draft = 0;
                return false;
        }
        r->n_draft = j + 1;
        return true;
}

void draft_step(struct dsv_core *c) {
        const size_t D = (size_t)c->p.hidden_size;
        const int pt = (int)c->p.kv_page_tokens;
        const size_t ns_max = (size_t)MAX(c->b_n_seqs, 1);
        struct dsv_error err = {{0}};
        int n = 0, ns = 0, rows = 0, rc;
        bool chain = false;
        /* per sequence of the MTP pass: its drafts to draw, its last row (of m.hout); per row of
         * a chained pass: its sequence */
        _cleanup_free_ int *goal = calloc(ns_max, sizeof(int)), *last = calloc(ns_max, sizeof(int)),
                           *which = calloc(ns_max, sizeof(int));

        if (!c->exec.mtp || !goal || !last || !which ||
            reserve_rows(c, (size_t)c->b_tokens, (size_t)c->b_n_seqs, (size_t)c->b_n_seqs) < 0)
                return;
        /* 1. the catch-up rows of every speculating sequence of the batch */
        for (int s = 0; s < c->b_n_seqs; s++) {
                struct request *r = c->b_req[s];
                struct dsv_kv_seq *q = &r->seq;
                int L0 = c->b_pos[c->b_first[s]], end, k;
                if (!r->spec)
                        continue;
                r->n_draft = 0;
                /* the records of a request that ends matter only to its session or the prefix cache */
                if (r->state == REQ_FINISHING && (r->final_error || (!r->sess && !c->tun.prefix_cache)))
                        continue;
                if (q->mtp_len != L0) {
                        log_debug("Request %llu: MTP records at %d, its pass began at %d: it decodes without speculation now",
                                  (unsigned long long)r->id, q->mtp_len, L0);
                        r->spec = false;
                        continue;
                }
                end = MIN(q->len, r->n_tokens - 1);
                if (end <= L0)
                        continue;
                k = r->state == REQ_RUNNING && q->len == r->n_tokens - 1 && end == q->len ? draft_k(c, r) : 0;
                /* chained drafts write records up to len + k - 2: within the reserved pages */
                k = MIN(k, q->n_pages * pt - q->len + 1);
                if (k > r->cap_drafts) {
                        struct dsv_draft *d = realloc(r->drafts, (size_t)k * sizeof(*d));
                        if (!d) {
                                request_fail(r, ENOMEM, "out of memory for drafts");
                                continue;
                        }
                        memset(d + r->cap_drafts, 0, (size_t)(k - r->cap_drafts) * sizeof(*d));
                        r->drafts = d;
                        r->cap_drafts = k;
                }
                for (int p = L0; p < end; p++) {
                        c->m.tok[n] = r->tokens[p + 1];
                        c->m.pos[n] = p;
                        c->m.seq[n] = ns;
                        c->m.want[n] = k > 0 && p == end - 1;
                        memcpy(c->m.hin + (size_t)n * D, c->hidden + (size_t)(c->b_first[s] + p - L0) * D, D * sizeof(float));
                        n++;
                }
                c->m.seqs[ns] = q;
                c->m.req[ns] = r;
                c->m.row[ns] = k > 0 ? rows++ : -1;
                last[ns] = n - 1;
                goal[ns] = k;
                chain |= k > 1;
                ns++;
        }
        if (n == 0)
                return;
        struct dsv_batch mb = {.n_tokens = n, .token = c->m.tok, .pos = c->m.pos, .seq = c->m.seq, .want_logits = c->m.want,
                               .n_seqs = ns, .seqs = c->m.seqs};
        rc = c->exec.mtp(c->exec.ud, &mb, c->m.hin, c->m.logits, chain ? c->m.hout : NULL, &err);
        if (rc < 0) {
                fail_all(c, ns, rc, &err);
                goto out;
        }
        for (int i = 0; i < ns; i++)
                if (c->m.row[i] >= 0 && !draw(c, c->m.req[i], 0, c->m.row[i]))
                        goal[i] = 0;
        /* 2. chained passes: draft j + 1 from draft j at position len + j - 1 and the layer's own
         * hidden state of the row before */
        for (int j = 1; chain; j++) {
                int m = 0;
                for (int i = 0; i < ns; i++) {
                        struct request *r = c->m.req[i];
                        if (goal[i] <= j || r->n_draft != j)
                                continue;
                        c->m.tok[m] = r->drafts[j - 1].token;
                        c->m.pos[m] = r->seq.len + j - 1;
                        c->m.seq[m] = m;
                        c->m.want[m] = true;
                        memcpy(c->m.hin + (size_t)m * D, c->m.hout + (size_t)last[i] * D, D * sizeof(float));
                        which[m] = i;
                        m++;
                }
                if (m == 0)
                        break;
                /* the pass's sequences in its order (m.req keeps the first pass's) */
                for (int x = 0; x < m; x++) {
                        c->m.seqs[x] = &c->m.req[which[x]]->seq;
                        last[which[x]] = x;
                }
                struct dsv_batch cb = {.n_tokens = m, .token = c->m.tok, .pos = c->m.pos, .seq = c->m.seq, .want_logits = c->m.want,
                                       .n_seqs = m, .seqs = c->m.seqs};
                rc = c->exec.mtp(c->exec.ud, &cb, c->m.hin, c->m.logits, c->m.hout, &err);
                if (rc < 0) {
                        fail_all(c, ns, rc, &err);
                        goto out;
                }
                for (int x = 0; x < m; x++)
                        if (!draw(c, c->m.req[which[x]], j, x))
                                goal[which[x]] = 0;
        }
out:
        /* records past len came from drafts: the next catch-up computes them from the main model */
        for (int i = 0; i < ns; i++) {
                struct request *r = c->m.req[i];
                r->seq.mtp_len = MIN(r->seq.mtp_len, r->seq.len);
                r->draft_at = r->seq.len;
        }
}
