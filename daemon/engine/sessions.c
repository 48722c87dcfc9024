/* Named KV-cache sessions of a uid (see engine.h and struct session in core.h): creation on
 * first use, OPEN/CLOSE/PIN, the per-uid pin quota, the max-sessions cap, LRU eviction of
 * idle unpinned sessions' pages when an admission needs them, the idle timeout, and handing
 * a session's sequence to the request that runs on it and back. */
#include "config.h"

#include "daemon/engine/core.h"
#include "daemon/engine/snapshot.h"

#include <assert.h>

static void lru_unlink(struct dsv_core *c, struct session *s) {
        if (s->prev)
                s->prev->next = s->next;
        else
                c->s_head = s->next;
        if (s->next)
                s->next->prev = s->prev;
        else
                c->s_tail = s->prev;
        s->prev = s->next = NULL;
}

static void lru_touch(struct dsv_core *c, struct session *s) {
        s->last_used_ns = dsv_now_ns();
        if (c->s_tail == s)
                return;
        if (s->prev || s->next || c->s_head == s)
                lru_unlink(c, s);
        s->prev = c->s_tail;
        if (c->s_tail)
                c->s_tail->next = s;
        else
                c->s_head = s;
        c->s_tail = s;
}

static struct session *session_find(struct dsv_core *c, uid_t uid, const char *name) {
        for (struct session *s = c->s_head; s; s = s->next)
                if (s->uid == uid && strcmp(s->name, name) == 0)
                        return s;
        return NULL;
}

/* Tokens and pages a session holds, wherever its sequence is now. */
static const struct dsv_kv_seq *session_seq(const struct session *s) {
        return s->busy && s->busy->admitted ? &s->busy->seq : &s->seq;
}

/* Closes a session at once: its pages go back to the pool; a request running on it goes
 * on without it (and frees its sequence when it ends). */
static void session_free(struct dsv_core *c, struct session *s) {
        if (s->busy)
                s->busy->sess = NULL;
        dsv_kv_seq_release(core_pool(c, &s->seq), &s->seq);
        lru_unlink(c, s);
        if (s->owner)
                c->sink.unref(c->sink.ud, s->owner);
        free(s->tokens);
        free(s);
        c->n_sessions--;
}

/* A session that ends (closed, idle, replaced): its snapshot goes too. */
static void session_close(struct dsv_core *c, struct session *s) {
        if (c->snap)
                dsv_snapshots_remove(c->snap, s->uid, s->name);
        session_free(c, s);
}

void sessions_free_all(struct dsv_core *c) {
        while (c->s_head)
                session_free(c, c->s_head);
}

/* Idle means: no request runs on it, or one waits for admission (it has not taken the
 * pages yet, and prefills whatever is left when it is admitted). */
static bool session_evictable(const struct session *s) {
        return !s->pinned && s->seq.n_pages > 0 && (!s->busy || !s->busy->admitted);
}

int64_t sessions_evictable_pages(const struct dsv_core *c, int rank) {
        int64_t n = 0;
        for (const struct session *s = c->s_head; s; s = s->next)
                if (session_evictable(s) && s->seq.rank == rank)
                        n += s->seq.n_pages;
        return n;
}

void sessions_evict(struct dsv_core *c, int rank, int need) {
        for (struct session *s = c->s_head; s && dsv_kv_pool_available(c->kv[rank]) < need; s = s->next) {
                if (!session_evictable(s) || s->seq.rank != rank)
                        continue;
                log_debug("Session '%s' of uid %u: evicting %d KV pages (%d tokens)", s->name, (unsigned)s->uid,
                          s->seq.n_pages, s->seq.len);
                dsv_kv_seq_release(c->kv[rank], &s->seq);
                s->n_exact = 0;
                DSV_METRIC_ADD(c->metrics, sessions_evicted, 1);
        }
}

/* A new, empty session; at the max-sessions cap it replaces the least recently used idle
 * unpinned one (of any uid). -EDQUOT when every session is busy or pinned. */
static int session_new(struct dsv_core *c, uid_t uid, const char *name, struct session **ret) {
        struct session *s;
        if (c->tun.max_sessions_per_uid > 0) {
                int mine = 0;
                struct session *victim = NULL;
                for (s = c->s_head; s; s = s->next)
                        if (s->uid == uid) {
                                mine++;
                                if (!victim && !s->busy && !s->pinned)
                                        victim = s;
                        }
                if (mine >= c->tun.max_sessions_per_uid) {
                        if (!victim)
                                return -EUSERS;
                        log_debug("Session '%s' of uid %u closed to make room (max-sessions-per-uid %d)", victim->name,
                                  (unsigned)uid, c->tun.max_sessions_per_uid);
                        session_close(c, victim);
                }
        }
        if (c->n_sessions >= c->tun.max_sessions) {
                struct session *victim = NULL;
                for (s = c->s_head; s && !victim; s = s->next)
                        if (!s->busy && !s->pinned)
                                victim = s;
                if (!victim || c->n_sessions > c->tun.max_sessions)
                        return -EDQUOT;
                log_debug("Session '%s' of uid %u closed to make room (max-sessions %d)", victim->name, (unsigned)victim->uid,
                          c->tun.max_sessions);
                session_close(c, victim);
        }
        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->uid = uid;
        s->rank = -1; /* placed with its first request (sched_place) */
        snprintf(s->name, sizeof(s->name), "%s", name);
        lru_touch(c, s);
        c->n_sessions++;
        *ret = s;
        return 0;
}

/* The request on s ends: the sequence, holding the KV of r->tokens[0, seq.len) (the prompt
 * and the generated tokens that were fed back; the last sampled one never was), returns to
 * the session with exactly those tokens as its history. Pages reserved for tokens that were
 * never generated go back to the pool. */
void sessions_return(struct dsv_core *c, struct request *r) {
        struct session *s = r->sess;
        r->sess = NULL;
        s->busy = NULL;
        if (r->admitted) {
                int32_t *t = s->tokens;
                assert(s->seq.n_pages == 0 && r->tokens && r->cap >= r->seq.len);
                dsv_kv_seq_truncate(core_pool(c, &r->seq), &r->seq, r->seq.len);
                s->tokens = r->tokens;
                s->cap = r->cap;
                r->tokens = t;
                r->cap = 0;
                s->seq = r->seq;
                s->rank = r->seq.rank;
                s->n_exact = MIN(r->n_exact, s->seq.len);
                memset(&r->seq, 0, sizeof(r->seq));
                s->dirty = true;
        }
        lru_touch(c, s);
}

void sessions_sweep(struct dsv_core *c) {
        uint64_t now = dsv_now_ns(), idle = (uint64_t)c->tun.session_idle_timeout_s * 1000000000ull;
        for (struct session *s = c->s_head, *next; s; s = next) {
                next = s->next;
                if (s->busy)
                        continue;
                if (s->owner && c->sink.gone(c->sink.ud, s->owner)) {
                        log_debug("Session '%s' of uid %u closed: the client that opened it private is gone", s->name,
                                  (unsigned)s->uid);
                        session_close(c, s);
                        continue;
                }
                if (s->pinned)
                        continue;
                if ((idle && now - s->last_used_ns >= idle) || c->n_sessions > c->tun.max_sessions) {
                        log_debug("Session '%s' of uid %u closed: %s", s->name, (unsigned)s->uid,
                                  c->n_sessions > c->tun.max_sessions ? "over max-sessions" : "idle");
                        session_close(c, s);
                }
        }
        c->last_sweep_ns = now;
}

void sessions_publish(struct dsv_core *c) {
        uint32_t n = 0, pinned = 0;
        uint64_t pages = 0;
        for (const struct session *s = c->s_head; s; s = s->next) {
                n++;
                pinned += s->pinned;
                pages += (uint64_t)session_seq(s)->n_pages;
        }
        DSV_METRIC_SET(c->metrics, sessions, n);
        DSV_METRIC_SET(c->metrics, sessions_pinned, pinned);
        DSV_METRIC_SET(c->metrics, session_pages, pages);
        DSV_METRIC_SET(c->metrics, kv_pages_used, core_pages_in_use(c));
        DSV_METRIC_SET(c->metrics, kv_pages_cached, core_pages_cached(c));
        if (c->n_kv > 1) {
                struct dsv_rank_pages *rp = &c->metrics->ranks;
                const int nr = MIN(c->n_kv, DSV_METRICS_RANKS_MAX);
                for (int k = 0; k < nr; k++) {
                        __atomic_store_n(&rp->used[k], (uint32_t)dsv_kv_pool_in_use(c->kv[k]), __ATOMIC_RELAXED);
                        __atomic_store_n(&rp->free[k], (uint32_t)c->kv[k]->n_free, __ATOMIC_RELAXED);
                        __atomic_store_n(&rp->cached[k], (uint32_t)c->kv[k]->n_cached, __ATOMIC_RELAXED);
                }
                __atomic_store_n(&rp->n_rank_pools, (uint32_t)nr, __ATOMIC_RELAXED);
        }
}

static void reply_fill(struct request *r, const struct session *s) {
        const struct dsv_kv_seq *q = session_seq(s);
        r->sreply.flags |= (s->pinned ? DSV_ENGINE_SESSION_PINNED : 0) | (s->busy ? DSV_ENGINE_SESSION_BUSY : 0);
        r->sreply.n_tokens = (uint32_t)q->len;
        r->sreply.n_pages = (uint32_t)q->n_pages;
}

/* SESSION_OPEN, SESSION_CLOSE, SESSION_PIN: done at once; the reply goes out with the
 * request's final event. */
void sessions_op(struct dsv_core *c, struct request *r) {
        const struct dsv_engine_request *in = r->in;
        uid_t uid = r->uid;
        struct session *s;
        int rc;

        memset(&r->sreply, 0, sizeof(r->sreply));
        snprintf(r->sreply.name, sizeof(r->sreply.name), "%s", in->session);
        s = session_find(c, uid, in->session);
        switch (in->kind) {
        case DSV_REQUEST_SESSION_OPEN:
                if (s && (in->session_flags & DSV_ENGINE_SESSION_EXCL)) {
                        request_fail(r, EEXIST, "session '%s' exists already", in->session);
                        return;
                }
                if (!s) {
                        if (c->tun.max_sessions <= 0) {
                                request_fail(r, ENOTSUP, "sessions are disabled on this dsv32d (max-sessions = 0)");
                                return;
                        }
                        rc = session_new(c, uid, in->session, &s);
                        if (rc == -EUSERS) {
                                request_fail(r, EDQUOT, "uid %u has %d sessions, all busy or pinned (max-sessions-per-uid); close some",
                                             (unsigned)uid, c->tun.max_sessions_per_uid);
                                return;
                        }
                        if (rc == -EDQUOT) {
                                request_fail(r, EDQUOT, "too many sessions: all %d are busy or pinned (max-sessions); close some",
                                             c->n_sessions);
                                return;
                        }
                        if (rc < 0) {
                                request_fail(r, -rc, "cannot create session '%s': %s", in->session, strerror(-rc));
                                return;
                        }
                        r->sreply.flags |= DSV_ENGINE_SESSION_CREATED;
                } else {
                        lru_touch(c, s);
                }
                if ((in->session_flags & DSV_ENGINE_SESSION_OPEN_PRIVATE) && s->owner != r->client) {
                        if (s->owner)
                                c->sink.unref(c->sink.ud, s->owner);
                        c->sink.ref(c->sink.ud, r->client);
                        s->owner = r->client;
                }
                reply_fill(r, s);
                break;
        case DSV_REQUEST_SESSION_LIST: {
                uint64_t now = dsv_now_ns();
                uint32_t n = 0;
                for (const struct session *x = c->s_head; x; x = x->next)
                        n += x->uid == uid;
                r->rows = n ? calloc(n, sizeof(*r->rows)) : NULL;
                if (n && !r->rows) {
                        request_fail(r, ENOMEM, "out of memory");
                        return;
                }
                for (const struct session *x = c->s_head; x; x = x->next) {
                        struct dsv_engine_session_row *row;
                        if (x->uid != uid)
                                continue;
                        row = &r->rows[r->n_rows++];
                        snprintf(row->name, sizeof(row->name), "%s", x->name);
                        row->flags = (x->pinned ? DSV_ENGINE_SESSION_PINNED : 0) | (x->busy ? DSV_ENGINE_SESSION_BUSY : 0) |
                                     (x->owner ? DSV_ENGINE_SESSION_PRIVATE : 0);
                        row->n_tokens = (uint32_t)session_seq(x)->len;
                        row->n_pages = (uint32_t)session_seq(x)->n_pages;
                        row->idle_ms = x->busy ? 0 : (now - x->last_used_ns) / 1000000;
                        row->rank = c->n_kv > 1 ? x->rank : -1;
                }
                break;
        }
        case DSV_REQUEST_SESSION_CLOSE:
                if (!s) {
                        request_fail(r, ENOENT, "no session named '%s' (sessions belong to the user that made them)", in->session);
                        return;
                }
                reply_fill(r, s);
                log_debug("Session '%s' of uid %u closed by its client (%u tokens, %u pages)", s->name, (unsigned)uid,
                          r->sreply.n_tokens, r->sreply.n_pages);
                session_close(c, s);
                break;
        case DSV_REQUEST_SESSION_PIN:
                if (!s) {
                        request_fail(r, ENOENT, "no session named '%s' (sessions belong to the user that made them)", in->session);
                        return;
                }
                if ((in->session_flags & DSV_ENGINE_SESSION_PIN) && !s->pinned) {
                        int pinned = 0;
                        for (const struct session *x = c->s_head; x; x = x->next)
                                pinned += x->uid == uid && x->pinned;
                        if (pinned >= c->tun.session_pin_quota) {
                                request_fail(r, EDQUOT,
                                             "uid %u has %d pinned sessions, its quota (session-pin-quota %d); unpin or close one",
                                             (unsigned)uid, pinned, c->tun.session_pin_quota);
                                return;
                        }
                        s->pinned = true;
                        s->dirty = true;
                } else if (!(in->session_flags & DSV_ENGINE_SESSION_PIN) && s->pinned) {
                        s->pinned = false;
                        s->dirty = true;
                }
                lru_touch(c, s);
                reply_fill(r, s);
                break;
        case DSV_REQUEST_SESSIONS_SAVE:
                if (!c->snap) {
                        request_fail(r, ENOTSUP, "sessions cannot be saved: this dsv32d has no state-directory");
                        return;
                }
                /* every session of the uid (root: of everyone) that has pages; the reply goes
                 * out when the files are written */
                r->sreply.n_tokens = (uint32_t)sessions_save(c, uid == 0 ? (uid_t)-1 : uid, false);
                r->save_wait = true;
                return;
        default:
                request_fail(r, EINVAL, "unknown session operation");
                return;
        }
        request_finish(r, DSV_ENGINE_FINISH_STOP);
        sessions_publish(c);
}

/* Binds a GENERATE to its session (made on first use); false when it cannot run. A session
 * held by a request that is going away (its client died a moment ago and reconnected, say)
 * is waited for: the request stays waiting with sess_wait set and tries again each step. */
bool sessions_attach(struct dsv_core *c, struct request *r) {
        struct session *s = session_find(c, r->uid, r->in->session);
        int rc;
        if (!s) {
                rc = session_new(c, r->uid, r->in->session, &s);
                if (rc == -EUSERS) {
                        request_fail(r, EDQUOT,
                                     "cannot create session '%s': uid %u has %d sessions, all busy or pinned (max-sessions-per-uid)",
                                     r->in->session, (unsigned)r->uid, c->tun.max_sessions_per_uid);
                        return false;
                }
                if (rc == -EDQUOT) {
                        request_fail(r, EDQUOT, "cannot create session '%s': all %d sessions are busy or pinned (max-sessions)",
                                     r->in->session, c->n_sessions);
                        return false;
                }
                if (rc < 0) {
                        request_fail(r, -rc, "cannot create session '%s': %s", r->in->session, strerror(-rc));
                        return false;
                }
        }
        r->sess_wait = false;
        if (s->busy && request_going_away(c, s->busy)) {
                r->sess_wait = true;
                return true;
        }
        if (s->busy) {
                request_fail(r, EBUSY,
                             "session '%s' is in use by another request; a session runs one request at a time (wait for it, "
                             "cancel it, or use another session)",
                             s->name);
                return false;
        }
        s->busy = r;
        r->sess = s;
        lru_touch(c, s);
        return true;
}

void sessions_take_prefix(struct dsv_core *c, struct request *r) {
        struct session *s = r->sess;
        /* at most all but the last prompt token: its logits are needed */
        bool exact = !r->in->reuse_output;
        int lcp = 0, max = MIN(exact ? s->n_exact : s->seq.len, r->n_prompt - 1);
        while (lcp < max && s->tokens[lcp] == r->tokens[lcp])
                lcp++;
        /* a one-token rest would run through the decode path (see struct session) */
        if (exact && lcp > 0 && r->n_prompt - lcp == 1)
                lcp--;
        /* the MTP layer's record at lcp - 1 was computed with the history's token lcp (draft.c) */
        if (lcp > 0 && s->seq.mtp_len >= lcp && s->tokens[lcp] != r->tokens[lcp])
                s->seq.mtp_len = lcp - 1;
        dsv_kv_seq_truncate(core_pool(c, &s->seq), &s->seq, lcp);
        s->n_exact = MIN(s->n_exact, lcp);
        r->seq = s->seq;
        r->n_exact = s->n_exact;
        memset(&s->seq, 0, sizeof(s->seq));
}

int sessions_move(struct dsv_core *c, struct request *r, int to, int need, int64_t avail) {
        struct session *s = r->sess;
        const int from = r->seq.rank, pages = r->seq.n_pages, len = r->seq.len;
        int rc;
        assert(s && from != to && to >= 0 && to < c->n_kv);
        /* the target's room may be idle sessions' pages (move_target counts them): they go
         * first, LRU first, as they would for a request placed there */
        if (dsv_kv_pool_available(c->kv[to]) < pages)
                sessions_evict(c, to, pages);
        if ((rc = dsv_kv_seq_move(c->kv[from], c->kv[to], &r->seq)) < 0) {
                log_warning("Session '%s' of uid %u cannot move from rank %d to rank %d: %s", s->name, (unsigned)s->uid, from,
                            to, strerror(-rc));
                return rc;
        }
        r->seq.rank = to;
        s->rank = to;
        s->dirty = true;
        DSV_METRIC_ADD(c->metrics, session_moves_total, 1);
        log_info("Session '%s' of uid %u moves from rank %d to rank %d: its request %llu needs %d more KV pages, rank %d "
                 "can give %lld without preempting; %d pages (%d tokens) copied to rank %d's pool, rank %d has %d available",
                 s->name, (unsigned)s->uid, from, to, (unsigned long long)r->id, need, from, (long long)avail, pages, len, to,
                 from, dsv_kv_pool_available(c->kv[from]));
        return 0;
}

int sessions_save(struct dsv_core *c, uid_t uid, bool only_dirty) {
        int n = 0;
        if (!c->snap)
                return 0;
        for (struct session *s = c->s_head; s; s = s->next) {
                struct dsv_snapshot_session ss = {.uid = s->uid, .name = s->name, .pinned = s->pinned, .tokens = s->tokens,
                                                  .seq = &s->seq, .n_exact = s->n_exact};
                int r;
                /* a session a request runs on is saved when it ends; one without pages has
                 * nothing to save (its last snapshot, if any, stays) */
                if ((uid != (uid_t)-1 && s->uid != uid) || (only_dirty && !s->dirty) || s->busy || s->seq.len == 0)
                        continue;
                r = dsv_snapshots_save(c->snap, &ss);
                if (r == -EFBIG) {
                        log_warning("Session '%s' of uid %u not saved: its %d tokens would exceed snapshot-max-mb", s->name,
                                    (unsigned)s->uid, s->seq.len);
                        continue;
                }
                if (r < 0) {
                        log_error("Session '%s' of uid %u not saved: %s", s->name, (unsigned)s->uid, strerror(-r));
                        continue;
                }
                s->dirty = false;
                n++;
        }
        return n;
}

static int restore_one(void *ud, uid_t uid, const char *name, bool pinned, const int32_t *tokens, int n_tokens,
                       struct dsv_kv_seq *seq, int n_exact) {
        struct dsv_core *c = ud;
        struct session *s = session_find(c, uid, name);
        int r;
        if (s)
                return -EEXIST;
        if ((r = session_new(c, uid, name, &s)) < 0)
                return r == -EUSERS ? -EDQUOT : r;
        s->tokens = malloc((size_t)MAX(n_tokens, 1) * sizeof(int32_t));
        if (!s->tokens) {
                session_free(c, s);
                return -ENOMEM;
        }
        memcpy(s->tokens, tokens, (size_t)n_tokens * sizeof(int32_t));
        s->cap = n_tokens;
        s->seq = *seq;
        s->rank = seq->rank; /* where the snapshot's pages went */
        memset(seq, 0, sizeof(*seq));
        s->n_exact = n_exact;
        s->pinned = pinned;
        s->dirty = false;
        log_info("Session '%s' of uid %u restored: %d tokens%s", name, (unsigned)uid, n_tokens, pinned ? ", pinned" : "");
        return 0;
}

int sessions_restore(struct dsv_core *c) {
        int n;
        if (!c->snap)
                return 0;
        n = dsv_snapshots_restore(c->snap, restore_one, c);
        sessions_publish(c);
        return n;
}
