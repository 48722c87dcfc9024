/* Admission and batching (see core.h): a waiting request is admitted when the KV pool can
 * hold its prompt plus max_tokens (idle sessions' pages are evicted for it, least recently
 * used first; first come, first served); each step's batch is one decode token of every
 * running request whose stream is not parked, then chunks of admitted prompts, up to the
 * token budget (batch_tokens) and the sequence cap (max_running). A prompt is never cut so
 * that a single token of it is left for a later step: alone in its pass it would take the
 * decode path, and the output would depend on how the prompt was cut. */
#include "config.h"

#include "daemon/engine/core.h"

/* Reserves the KV cache of a waiting request: 0 admitted; -EAGAIN wait for pages; other
 * negative: the request failed (finishing with the error). With a session, its sequence is
 * cut back to the prefix it shares with the prompt first; only the rest gets prefilled. */
static int admit(struct dsv_core *c, struct request *r) {
        struct session *s = r->sess;
        bool others = false;
        int rc;

        if (s)
                sessions_take_prefix(c, r);
        rc = dsv_kv_seq_reserve(c->kv, &r->seq, r->total);
        if (rc == -ENOSPC) {
                int need = DIV_ROUND_UP(r->total, (int)c->p.kv_page_tokens) - r->seq.n_pages;
                if ((int64_t)need <= (int64_t)c->kv->n_free + sessions_evictable_pages(c)) {
                        sessions_evict(c, need);
                        rc = dsv_kv_seq_reserve(c->kv, &r->seq, r->total);
                }
        }
        if (rc < 0 && s) {
                s->seq = r->seq; /* back to the session, evictable while we wait */
                memset(&r->seq, 0, sizeof(r->seq));
        }
        if (rc == -ENOSPC) {
                /* pages come back when another request ends; when none holds any, the rest is
                 * pinned by sessions and waiting would be forever */
                for (size_t i = 0; i < c->n_reqs && !others; i++)
                        others = c->reqs[i] != r && c->reqs[i]->seq.n_pages > 0;
                if (others)
                        return -EAGAIN;
                request_fail(r, ENOSPC,
                             "the request needs %d tokens of KV cache but pinned sessions hold %d of the %d pages; unpin or "
                             "close sessions (or raise kv-cache-mb)",
                             r->total, c->kv->n_pages - c->kv->n_free, c->kv->n_pages);
                return -ENOSPC;
        }
        if (rc < 0) {
                request_fail(r, -rc, "cannot reserve the KV cache: %s", strerror(-rc));
                return rc;
        }
        r->admitted = true;
        r->n_cached = r->seq.len;
        if (r->n_cached)
                DSV_METRIC_ADD(c->metrics, cached_tokens_total, r->n_cached);
        r->t_start = dsv_now_ns();
        return 0;
}

static int batch_reserve(struct dsv_core *c, size_t n_tok, size_t n_seq) {
        size_t cap, v = (size_t)c->p.vocab_size;
        int rc;
        if (n_tok > c->b_cap) {
                cap = c->b_cap;
                if ((rc = DSV_GROW(&c->b_tok, &cap, n_tok)) < 0)
                        return rc;
                cap = c->b_cap;
                if ((rc = DSV_GROW(&c->b_pos, &cap, n_tok)) < 0)
                        return rc;
                cap = c->b_cap;
                if ((rc = DSV_GROW(&c->b_seq, &cap, n_tok)) < 0)
                        return rc;
                cap = c->b_cap;
                if ((rc = DSV_GROW(&c->b_want, &cap, n_tok)) < 0)
                        return rc;
                c->b_cap = cap;
        }
        if (n_seq > c->b_seq_cap) {
                cap = c->b_seq_cap;
                if ((rc = DSV_GROW(&c->b_seqs, &cap, n_seq)) < 0)
                        return rc;
                cap = c->b_seq_cap;
                if ((rc = DSV_GROW(&c->b_req, &cap, n_seq)) < 0)
                        return rc;
                cap = c->b_seq_cap;
                if ((rc = DSV_GROW(&c->b_row, &cap, n_seq)) < 0)
                        return rc;
                c->b_seq_cap = cap;
        }
        if (n_seq > c->logits_rows) {
                float *l = realloc(c->logits, n_seq * v * sizeof(float));
                if (!l)
                        return -ENOMEM;
                c->logits = l;
                c->logits_rows = n_seq;
        }
        return 0;
}

static void add_token(struct dsv_core *c, int32_t tok, int pos, bool want) {
        c->b_tok[c->b_tokens] = tok;
        c->b_pos[c->b_tokens] = pos;
        c->b_seq[c->b_tokens] = c->b_n_seqs;
        c->b_want[c->b_tokens] = want;
        c->b_tokens++;
}

static void add_seq(struct dsv_core *c, struct request *r, bool row) {
        c->b_seqs[c->b_n_seqs] = &r->seq;
        c->b_req[c->b_n_seqs] = r;
        c->b_row[c->b_n_seqs] = row ? c->b_rows++ : -1;
        c->b_n_seqs++;
}

int sched_build(struct dsv_core *c) {
        const struct dsv_engine_tunables *tun = &c->tun;
        int budget = tun->batch_tokens, rc;
        uint32_t running = 0, waiting = 0, parked = 0, prefilling = 0;

        c->b_tokens = c->b_n_seqs = c->b_rows = 0;
        for (size_t i = 0; i < c->n_reqs; i++) {
                const struct request *r = c->reqs[i];
                if (r->state == REQ_RUNNING) {
                        running++;
                        parked += request_parked(r);
                } else if (r->state == REQ_WAITING) {
                        if (r->admitted)
                                prefilling++;
                        else
                                waiting++;
                }
        }
        if (batch_reserve(c, (size_t)(budget + (int)running + 1), c->n_reqs + 1) < 0) {
                log_error("Engine: out of memory building a batch");
                return 0;
        }
        /* decode tokens first */
        for (size_t i = 0; i < c->n_reqs && budget > 0 && c->b_n_seqs < tun->max_running; i++) {
                struct request *r = c->reqs[i];
                if (r->state != REQ_RUNNING || request_parked(r))
                        continue;
                add_token(c, r->tokens[r->seq.len], r->seq.len, true);
                add_seq(c, r, true);
                budget--;
        }
        /* then prompt chunks */
        for (size_t i = 0; i < c->n_reqs && budget > 0 && c->b_n_seqs < tun->max_running; i++) {
                struct request *r = c->reqs[i];
                int chunk, left;
                if (r->state != REQ_WAITING)
                        continue;
                if (r->sess_wait && (!sessions_attach(c, r) || r->sess_wait))
                        continue; /* its session is not free yet (or it failed) */
                if (!r->admitted) {
                        rc = admit(c, r);
                        if (rc == -EAGAIN)
                                break; /* first come, first served: wait for pages */
                        if (rc < 0)
                                continue;
                }
                left = r->n_prompt - r->seq.len;
                chunk = MIN(budget, left);
                if (chunk < left && left - chunk < 2)
                        chunk = left - 2; /* leave two for the next step, not one */
                if (chunk < 2 && left > 1) {
                        if (tun->batch_tokens - (int)running >= 2)
                                break; /* a later step has room for two */
                        chunk = MIN(budget, left); /* a budget this small never will */
                }
                if (chunk >= 2 && r->n_exact == r->seq.len)
                        r->n_exact += chunk;
                for (int j = 0; j < chunk; j++) {
                        int p = r->seq.len + j;
                        add_token(c, r->tokens[p], p, p == r->n_prompt - 1);
                }
                add_seq(c, r, r->seq.len + chunk == r->n_prompt);
                budget -= chunk;
        }
        DSV_METRIC_SET(c->metrics, requests_running, running);
        DSV_METRIC_SET(c->metrics, requests_waiting, waiting);
        DSV_METRIC_SET(c->metrics, requests_parked, parked);
        DSV_METRIC_SET(c->metrics, requests_prefilling, prefilling);
        sessions_publish(c);
        return c->b_tokens;
}
