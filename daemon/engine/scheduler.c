/* Admission, batching, preemption and fairness (see core.h).
 *
 * Order: every step ranks the requests by priority (higher first), then by the service
 * their uid received lately (tokens computed for it, decaying with a time constant of
 * SERVICE_TAU_S: a uid that floods the queue delays only itself), then by arrival. Decode
 * tokens of running requests come first in that order, then chunks of admitted prompts, up
 * to the token budget (batch_tokens) and the sequence cap (max_running).
 *
 * KV pages: a request is admitted with pages for its prompt and one more token; a running
 * request gets a page when its next token (or, speculating, its drafts: draft.c) needs one.
 * When pages run out: idle sessions lose
 * theirs (least recently used first), cached prefix pages are reclaimed (the pool does it,
 * least recently cached first), and then the lowest-ranked, most recent request is
 * preempted: its pages go back (those a prefill computed stay in the prefix cache), it
 * waits again, and when re-admitted it prefills its prompt (mostly from the cache) and
 * feeds the tokens it had generated through the decode path, as they were computed the
 * first time, before it samples again: its output is the same as if it had never been
 * preempted. Nothing is admitted in a step that preempted (no ping-pong), and admission keeps
 * one page of headroom per running request.
 *
 * A prompt is never cut so that a single token of it is left for a later step: alone in
 * its pass it would take the decode path, and the output would depend on how the prompt
 * was cut.
 *
 * Speculative decoding (draft.c): a running request with drafts contributes its pending
 * token and its k drafts as decode rows (as_decode), 1 + k tokens of the budget, in one
 * piece or not at all in a step (the drafts it verifies never depend on what else runs). */
#include "config.h"

#include <math.h>

#include "daemon/engine/core.h"

#define SERVICE_TAU_S 10.0

/* ------------------------------------------------------------------ service per uid */

static struct uid_service *uid_get(struct dsv_core *c, uid_t uid) {
        for (size_t i = 0; i < c->n_uids; i++)
                if (c->uids[i].uid == uid)
                        return &c->uids[i];
        if (DSV_GROW(&c->uids, &c->cap_uids, c->n_uids + 1) < 0)
                return NULL;
        c->uids[c->n_uids] = (struct uid_service){.uid = uid, .t_ns = dsv_now_ns()};
        return &c->uids[c->n_uids++];
}

static void decay(struct uid_service *u, uint64_t now) {
        if (now > u->t_ns) {
                u->served *= exp(-(double)(now - u->t_ns) / 1e9 / SERVICE_TAU_S);
                u->t_ns = now;
        }
}

double sched_served(struct dsv_core *c, uid_t uid) {
        struct uid_service *u = uid_get(c, uid);
        if (!u)
                return 0;
        decay(u, dsv_now_ns());
        return u->served;
}

void sched_serve(struct dsv_core *c, uid_t uid, double tokens) {
        struct uid_service *u = uid_get(c, uid);
        if (!u)
                return;
        decay(u, dsv_now_ns());
        u->served += tokens;
}

/* ------------------------------------------------------------------ ranking */

struct ranked {
        struct request *r;
        double served;
};

/* negative when a goes first */
static int rank_cmp(const struct request *a, double sa, const struct request *b, double sb) {
        if (a->priority != b->priority)
                return a->priority > b->priority ? -1 : 1;
        if (sa != sb)
                return sa < sb ? -1 : 1;
        if (a->t_submit != b->t_submit)
                return a->t_submit < b->t_submit ? -1 : 1;
        return a->id < b->id ? -1 : (a->id > b->id);
}

static int ranked_cmp(const void *x, const void *y) {
        const struct ranked *a = x, *b = y;
        return rank_cmp(a->r, a->served, b->r, b->served);
}

/* ------------------------------------------------------------------ preemption */

static void preempt(struct dsv_core *c, struct request *v) {
        log_debug("Request %llu of uid %u preempted: %d KV pages back (%d tokens; it recomputes them later)",
                  (unsigned long long)v->id, (unsigned)v->uid, v->seq.n_pages, v->seq.len);
        dsv_kv_seq_release(core_pool(c, &v->seq), &v->seq);
        if (v->sess)
                v->sess->n_exact = 0;
        v->admitted = false;
        v->state = REQ_WAITING;
        v->n_exact = 0;
        v->n_keyed = 0;
        v->n_draft = 0;
        v->n_preempted++;
        DSV_METRIC_ADD(c->metrics, preemptions_total, 1);
        c->preempted_this_step = true;
}

static bool in_batch(const struct dsv_core *c, const struct request *r);

/* The request holding pages that ranks last, if it ranks below `for_r` (or for_r is NULL);
 * never one that is in the step's batch already. */
static struct request *victim(struct dsv_core *c, const struct request *for_r) {
        struct request *v = NULL;
        double sv = 0, sf = for_r ? sched_served(c, for_r->uid) : 0;
        for (size_t i = 0; i < c->n_reqs; i++) {
                struct request *o = c->reqs[i];
                double so;
                if (o == for_r || !o->admitted || o->state == REQ_FINISHING || o->seq.n_pages == 0 || in_batch(c, o) ||
                    (for_r && o->seq.rank != for_r->seq.rank))
                        continue; /* only pages of for_r's own pool make room for it */
                so = sched_served(c, o->uid);
                if (!v || rank_cmp(o, so, v, sv) > 0) {
                        v = o;
                        sv = so;
                }
        }
        if (v && for_r && rank_cmp(v, sv, for_r, sf) < 0)
                return NULL;
        return v;
}

/* Whether other requests hold pages in r's pool. */
static bool others_hold_pages(const struct dsv_core *c, const struct request *r) {
        for (size_t i = 0; i < c->n_reqs; i++)
                if (c->reqs[i] != r && c->reqs[i]->seq.n_pages > 0 && c->reqs[i]->seq.rank == r->seq.rank)
                        return true;
        return false;
}

/* Pages for r's first n tokens, making room as the header says. 0; -EAGAIN: r waits (or, when
 * may_preempt_self, r was preempted); other negative: r failed. */
static int make_room(struct dsv_core *c, struct request *r, int n, int headroom, bool may_preempt_self) {
        const int pt = (int)c->p.kv_page_tokens, rank = r->seq.rank;
        struct dsv_kv_pool *kv = c->kv[rank];
        for (;;) {
                int need = DIV_ROUND_UP(n, pt) - r->seq.n_pages;
                if (need <= 0)
                        return 0;
                if (need + headroom <= dsv_kv_pool_available(kv))
                        return dsv_kv_seq_reserve(kv, &r->seq, n);
                if (sessions_evictable_pages(c, rank) > 0) {
                        sessions_evict(c, rank, need + headroom);
                        if (need + headroom <= dsv_kv_pool_available(kv))
                                continue;
                }
                struct request *v = victim(c, r);
                if (v) {
                        preempt(c, v);
                        continue;
                }
                if (headroom > 0 && need <= dsv_kv_pool_available(kv) && !others_hold_pages(c, r)) {
                        headroom = 0; /* nobody else needs the headroom */
                        continue;
                }
                if (!others_hold_pages(c, r)) {
                        request_fail(r, ENOSPC,
                                     "the request needs %d tokens of KV cache but pinned sessions hold %d of the %d pages; unpin or "
                                     "close sessions (or raise kv-cache-mb)",
                                     n, dsv_kv_pool_in_use(kv), kv->n_pages);
                        return -ENOSPC;
                }
                if (may_preempt_self) {
                        preempt(c, r);
                        return -EAGAIN;
                }
                return -EAGAIN;
        }
}

/* ------------------------------------------------------------------ placement */

int sched_place(struct dsv_core *c, const struct request *r) {
        const int pt = (int)c->p.kv_page_tokens, pages = DIV_ROUND_UP(r->n_prompt + 1, pt);
        int best = -1, best_reuse = 0, best_seqs = 0, best_avail = 0;
        int64_t best_tokens = 0;
        bool best_fits = false;

        if (c->n_kv == 1)
                return 0;
        if (r->sess && r->sess->rank >= 0)
                return r->sess->rank; /* a session stays on its rank */
        /* from the rank after the last one chosen: of equals, each in turn */
        for (int j = 0; j < c->n_kv; j++) {
                const int k = (c->place_next + j) % c->n_kv;
                const int reuse = prefix_probe(c, r, k), avail = dsv_kv_pool_available(c->kv[k]);
                const bool fits = pages - reuse <= avail + sessions_evictable_pages(c, k);
                int seqs = 0;
                int64_t tokens = 0;
                for (size_t i = 0; i < c->n_reqs; i++) {
                        const struct request *o = c->reqs[i];
                        if (o != r && o->admitted && o->state != REQ_FINISHING && o->seq.rank == k) {
                                seqs++;
                                tokens += o->seq.len;
                        }
                }
                bool better;
                if (best < 0)
                        better = true;
                else if (fits != best_fits)
                        better = fits; /* a rank that cannot hold it loses to one that can */
                else if (reuse != best_reuse)
                        better = reuse > best_reuse;
                else if (seqs != best_seqs)
                        better = seqs < best_seqs;
                else if (tokens != best_tokens)
                        better = tokens < best_tokens;
                else
                        better = avail > best_avail;
                if (better) {
                        best = k;
                        best_fits = fits;
                        best_reuse = reuse;
                        best_seqs = seqs;
                        best_tokens = tokens;
                        best_avail = avail;
                }
        }
        return best;
}

/* Requests running on rank (admission keeps a page of headroom there for each). */
static int running_on(const struct dsv_core *c, int rank) {
        int n = 0;
        for (size_t i = 0; i < c->n_reqs; i++)
                n += c->reqs[i]->state == REQ_RUNNING && c->reqs[i]->seq.rank == rank;
        return n;
}

/* Pages rank's pool can give without preempting anyone: available ones and idle sessions'. */
static int64_t rank_room(const struct dsv_core *c, int rank) {
        return dsv_kv_pool_available(c->kv[rank]) + sessions_evictable_pages(c, rank);
}

/* Where the session of a waiting request r goes when its own rank cannot give r's next pages
 * without preempting: of the other ranks that can hold all of r's `total` pages (and a page
 * of headroom for each request running there) without preempting, the one running the fewest
 * requests, then the one with the most room, then the lowest; -1 when none can. */
static int move_target(const struct dsv_core *c, const struct request *r, int total) {
        int best = -1, best_running = 0;
        int64_t best_room = 0;
        for (int k = 0; k < c->n_kv; k++) {
                const int running = running_on(c, k);
                const int64_t room = rank_room(c, k);
                if (k == r->seq.rank || total + running > room)
                        continue;
                if (best < 0 || running < best_running || (running == best_running && room > best_room)) {
                        best = k;
                        best_running = running;
                        best_room = room;
                }
        }
        return best;
}

/* Reserves the KV cache of a waiting request's prompt: 0 admitted; -EAGAIN wait; other
 * negative: the request failed. It is placed on a rank (sched_place); its session's history
 * and then the prefix cache provide what they can; only the rest gets prefilled. A request
 * on a session whose rank cannot give the pages it needs without preempting anyone (pinned
 * sessions or running requests fill it) moves, with its session, to another rank that can
 * (move_target, sessions_move): the session's pages are copied, so nothing is recomputed and
 * the output is the same; when no rank can, it makes room on its own rank as any request
 * does (preempting, waiting, or failing when pinned sessions hold the pool). */
static int admit(struct dsv_core *c, struct request *r, int running) {
        struct session *s = r->sess;
        const int pt = (int)c->p.kv_page_tokens;
        int rc, rank, n;

        int sess_len = 0;

        if (c->preempted_this_step)
                return -EAGAIN;
        rank = sched_place(c, r);
        if (s) {
                sessions_take_prefix(c, r);
                sess_len = r->seq.len;
        }
        r->seq.rank = rank; /* it holds pages only when its session had some: on this rank */
        if (c->n_kv > 1)
                running = running_on(c, rank); /* the headroom: one page per request running on its rank */
        prefix_attach(c, r);
        draft_admit(c, r);
        /* a speculating request's first chained drafts come right after its prompt */
        n = r->spec ? MAX(r->n_prompt + 1, MIN(r->n_prompt + c->tun.mtp_draft, r->total)) : r->n_prompt + 1;
        if (s && s->rank == rank && c->n_kv > 1) {
                const int need = DIV_ROUND_UP(n, pt) - r->seq.n_pages;
                const int64_t room = rank_room(c, rank);
                int to;
                if (need > 0 && need + running > room && (to = move_target(c, r, DIV_ROUND_UP(n, pt))) >= 0 &&
                    sessions_move(c, r, to, need, room) == 0) {
                        rank = to;
                        running = running_on(c, rank);
                }
        }
        rc = make_room(c, r, n, running, false);
        if (rc < 0) {
                if (s) {
                        /* back to the session (evictable while we wait) with what it had: the
                         * history it keeps describes exactly its first sess_len tokens */
                        dsv_kv_seq_truncate(core_pool(c, &r->seq), &r->seq, sess_len);
                        s->seq = r->seq;
                        s->n_exact = MIN(r->n_exact, sess_len);
                        memset(&r->seq, 0, sizeof(r->seq));
                } else {
                        dsv_kv_seq_release(core_pool(c, &r->seq), &r->seq);
                }
                if (rc != -EAGAIN && r->state != REQ_FINISHING)
                        request_fail(r, -rc, "cannot reserve the KV cache: %s", strerror(-rc));
                return rc;
        }
        r->admitted = true;
        if (!s || s->rank < 0)
                c->place_next = (rank + 1) % c->n_kv; /* placed by the rule, not by its session */
        if (s && s->rank < 0)
                s->rank = rank;
        if (c->n_kv > 1)
                log_info("Request %llu of uid %u runs on rank %d%s%s%s (%d of its %d prompt tokens cached there)",
                         (unsigned long long)r->id, (unsigned)r->uid, rank, s ? " with session '" : "", s ? s->name : "",
                         s ? "'" : "", r->seq.len, r->n_prompt);
        if (!r->n_preempted) {
                r->n_cached = r->seq.len;
                if (r->n_cached)
                        DSV_METRIC_ADD(c->metrics, cached_tokens_total, r->n_cached);
                r->t_start = dsv_now_ns();
        }
        return 0;
}

/* ------------------------------------------------------------------ the batch */

/* Logits rows for n rows. */
static int rows_reserve(struct dsv_core *c, size_t n) {
        if (n > c->logits_rows) {
                size_t rows = MAX(n, 2 * c->logits_rows);
                float *l = realloc(c->logits, rows * (size_t)c->p.vocab_size * sizeof(float));
                if (!l)
                        return -ENOMEM;
                c->logits = l;
                c->logits_rows = rows;
        }
        return 0;
}

static int batch_reserve(struct dsv_core *c, size_t n_tok, size_t n_seq) {
        size_t cap;
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
                if (c->exec.mtp) {
                        float *h = realloc(c->hidden, cap * (size_t)c->p.hidden_size * sizeof(float));
                        if (!h)
                                return -ENOMEM;
                        c->hidden = h;
                }
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
                cap = c->b_seq_cap;
                if ((rc = DSV_GROW(&c->b_nrows, &cap, n_seq)) < 0)
                        return rc;
                cap = c->b_seq_cap;
                if ((rc = DSV_GROW(&c->b_first, &cap, n_seq)) < 0)
                        return rc;
                cap = c->b_seq_cap;
                if ((rc = DSV_GROW(&c->b_dec, &cap, n_seq)) < 0)
                        return rc;
                c->b_seq_cap = cap;
        }
        return rows_reserve(c, n_seq);
}

static void add_token(struct dsv_core *c, int32_t tok, int pos, bool want) {
        c->b_tok[c->b_tokens] = tok;
        c->b_pos[c->b_tokens] = pos;
        c->b_seq[c->b_tokens] = c->b_n_seqs;
        c->b_want[c->b_tokens] = want;
        c->b_tokens++;
}

/* The sequence of the last n tokens added, with `rows` logits rows (its last tokens'). */
static void add_seq(struct dsv_core *c, struct request *r, int n, int rows, bool decode) {
        c->b_seqs[c->b_n_seqs] = &r->seq;
        c->b_req[c->b_n_seqs] = r;
        c->b_row[c->b_n_seqs] = rows > 0 ? c->b_rows : -1;
        c->b_nrows[c->b_n_seqs] = rows;
        c->b_first[c->b_n_seqs] = c->b_tokens - n;
        c->b_dec[c->b_n_seqs] = decode;
        c->b_rows += rows;
        c->b_n_seqs++;
}

static bool in_batch(const struct dsv_core *c, const struct request *r) {
        for (int s = 0; s < c->b_n_seqs; s++)
                if (c->b_req[s] == r)
                        return true;
        return false;
}

int sched_build(struct dsv_core *c) {
        const struct dsv_engine_tunables *tun = &c->tun;
        int budget, rc, running_now = 0, n_decode = 0, n_decode_tok = 0;
        uint32_t running = 0, waiting = 0, parked = 0, prefilling = 0;
        struct ranked *order;
        size_t n = 0;

        c->b_tokens = c->b_n_seqs = c->b_rows = 0;
        c->preempted_this_step = false;
        order = malloc((c->n_reqs + 1) * sizeof(*order));
        if (!order || batch_reserve(c, (size_t)tun->batch_tokens + c->n_reqs + 1, c->n_reqs + 1) < 0) {
                free(order);
                log_error("Engine: out of memory building a batch");
                return 0;
        }
        for (size_t i = 0; i < c->n_reqs; i++)
                if (c->reqs[i]->state != REQ_FINISHING && !c->reqs[i]->save_wait) {
                        order[n].r = c->reqs[i];
                        order[n].served = sched_served(c, c->reqs[i]->uid);
                        n++;
                }
        qsort(order, n, sizeof(*order), ranked_cmp);
        for (size_t i = 0; i < n; i++) {
                running_now += order[i].r->state == REQ_RUNNING;
                if (order[i].r->state == REQ_RUNNING && !request_parked(order[i].r) && n_decode < tun->max_running) {
                        n_decode++;
                        n_decode_tok += 1 + draft_ready(c, order[i].r);
                }
        }

        /* prompt chunks first, in rank order (an admission may preempt lower-ranked requests),
         * with what the decode tokens of the running requests leave of the budget */
        budget = tun->batch_tokens - n_decode_tok;
        for (size_t i = 0; i < n && budget > 0 && c->b_n_seqs < tun->max_running - n_decode; i++) {
                struct request *r = order[i].r;
                int chunk, left;
                if (r->state != REQ_WAITING)
                        continue;
                if (r->sess_wait && (!sessions_attach(c, r) || r->sess_wait))
                        continue; /* its session is not free yet (or it failed) */
                if (!r->admitted) {
                        rc = admit(c, r, running_now);
                        if (rc == -EAGAIN)
                                break; /* in rank order: wait for pages */
                        if (rc < 0)
                                continue;
                }
                left = r->n_prompt - r->seq.len;
                chunk = MIN(budget, left);
                if (chunk < left && left - chunk < 2)
                        chunk = left - 2; /* leave two for the next step, not one */
                if (chunk < 2 && left > 1) {
                        if (tun->batch_tokens - running_now >= 2)
                                break; /* a later step has room for two */
                        chunk = MIN(budget, left); /* a budget this small never will */
                }
                if (chunk >= 2 && r->n_exact == r->seq.len)
                        r->n_exact += chunk;
                for (int j = 0; j < chunk; j++) {
                        int p = r->seq.len + j;
                        add_token(c, r->tokens[p], p, p == r->n_prompt - 1);
                }
                add_seq(c, r, chunk, r->seq.len + chunk == r->n_prompt, false);
                budget -= chunk;
        }
        /* then one decode token of every running request (a page when it needs one), with its
         * drafts when it has them */
        for (size_t i = 0; i < n && c->b_n_seqs < tun->max_running && c->b_tokens < tun->batch_tokens; i++) {
                struct request *r = order[i].r;
                int k;
                if (r->state != REQ_RUNNING || request_parked(r))
                        continue;
                k = draft_ready(c, r);
                if (c->b_tokens + 1 + k > tun->batch_tokens)
                        continue; /* its drafts do not fit this step's budget: it waits for the next */
                if (rows_reserve(c, (size_t)c->b_rows + 1 + (size_t)k) < 0)
                        break;
                rc = make_room(c, r, draft_need(c, r, k), 0, true);
                if (rc < 0)
                        continue; /* preempted (it waits again) or failed */
                add_token(c, r->tokens[r->seq.len], r->seq.len, true);
                for (int j = 0; j < k; j++)
                        add_token(c, r->drafts[j].token, r->seq.len + 1 + j, true);
                add_seq(c, r, 1 + k, 1 + k, true);
        }
        free(order);

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
        for (int s = 0; s < c->b_n_seqs; s++) {
                int k = 0;
                for (int t = 0; t < c->b_tokens; t++)
                        k += c->b_seq[t] == s;
                sched_serve(c, c->b_req[s]->uid, k);
        }
        DSV_METRIC_SET(c->metrics, requests_running, running);
        DSV_METRIC_SET(c->metrics, requests_waiting, waiting);
        DSV_METRIC_SET(c->metrics, requests_parked, parked);
        DSV_METRIC_SET(c->metrics, requests_prefilling, prefilling);
        sessions_publish(c);
        return c->b_tokens;
}
