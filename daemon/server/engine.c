/* The engine thread and its continuous-batching scheduler (see engine.h). */
#include "config.h"

#include "daemon/server/engine.h"

#include <assert.h>
#include <pthread.h>
#include <sys/random.h>

#include "daemon/model.h"
#include "daemon/server/reqlog.h"
#include "daemon/server/sampler.h"
#include "daemon/server/text.h"
#include "daemon/util.h"
#include "kernels/backend_plugin.h"

enum req_state {
        REQ_WAITING, /* prompt not fully in the KV cache */
        REQ_RUNNING, /* decoding */
        REQ_FINISHING, /* final message pending */
};

struct session;

struct request {
        struct dsv_request_in *in;
        struct dsv_conn *conn;
        uint64_t id;
        enum req_state state;
        int32_t *tokens; /* prompt, then generated tokens */
        int n_prompt, n_tokens, cap;
        int total;       /* prompt + max_tokens, capped to the context */
        struct dsv_kv_seq seq;
        bool admitted;
        struct session *sess; /* the session it runs on (busy), or NULL */
        bool sess_wait;       /* its session is still held by a request that is going away */
        int n_cached;         /* prompt tokens whose KV came from the session */
        int n_exact;          /* leading tokens whose KV a prefill chunk computed (see struct session) */
        struct dsv_msg_session sreply; /* SESSION_* requests: the reply */
        struct dsv_session_row *rows;  /* SESSION_LIST: the reply's rows */
        uint32_t n_rows;
        struct dsv_sampling sp;
        int n_generated;
        /* output not yet written to the completion ring */
        int32_t *out;
        int n_out, cap_out;
        char *text_out;
        size_t n_text, cap_text;
        struct dsv_text_stream *stream;
        /* final message */
        bool final_error;
        int error_code;
        char error_msg[512];
        uint32_t reason;
        bool cancel;
        uint64_t t_submit, t_start, t_first, t_end;
};

/* A KV-cache session (engine.h). Between requests it owns `seq`, which holds the KV of
 * tokens[0, seq.len); while a request runs on it (busy) and has been admitted, the request
 * owns the sequence and the session's is empty.
 *
 * n_exact: the first n_exact tokens' KV was computed by prefill chunks (two or more tokens
 * of the sequence in one forward pass). Only those are reused by default: a token that was
 * alone in its pass (every generated token, fed back by a decode step) went through the
 * absorbed MLA path (DSV_OP_MLA_DECODE), equal in exact arithmetic to the prefill path but
 * not in the last bits, and those bits, through the FP8 rounding of the cache, can change
 * later tokens. A request without a session prefills the same tokens, so reusing only
 * prefill-computed entries gives exactly its output. DSV_GEN_SESSION_REUSE_OUTPUT lifts the
 * limit (all of the shared prefix is reused, at the price of that exactness). */
struct session {
        struct session *prev, *next; /* LRU order: the engine's s_head is the least recently used */
        uid_t uid;
        char name[DSV_NAME_MAX + 1];
        int32_t *tokens;
        int cap;
        struct dsv_kv_seq seq;
        int n_exact;
        bool pinned;
        struct request *busy;
        uint64_t last_used_ns;
        struct dsv_conn *owner; /* SESSION_OPEN private: closed once this connection is gone */
};

struct cancel_rec {
        struct dsv_conn *conn;
        uint64_t id;
        struct cancel_rec *next;
};

struct dsv_engine {
        struct dsv_engine_opts opts;
        char *model_dir, *backend_name, *numerics_name;
        pthread_t thread;
        bool thread_started;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        /* under lock */
        struct dsv_request_in **incoming;
        size_t n_incoming, cap_incoming;
        struct cancel_rec *cancels;
        bool stop, kicked, draining;
        uint64_t drain_deadline_ns;
        struct dsv_engine_tunables tun;
        /* atomics */
        int state;
        unsigned load_permille;
        uint64_t heartbeat_ns;
        bool idle;
        uint64_t n_requests_total, n_prompt_total, n_generated_total, n_steps;
        uint32_t n_running, n_waiting, n_parked, n_prefilling;
        uint64_t n_prefilled_total; /* prompt tokens run through the model */
        uint64_t kv_pages_used;
        uint64_t prefill_mtok_s, decode_mtok_s; /* tokens per 1000 s */
        uint32_t st_sessions, st_pinned;
        uint64_t st_session_pages, n_cached_total, n_evicted;
        /* engine thread only (info and text published before state READY) */
        struct dsv_backend *be;
        struct dsv_model *model;
        struct dsv_kv_pool *kv;
        struct dsv_text *text;
        struct dsv_sampler sampler;
        struct dsv_engine_info info;
        struct request **reqs;
        size_t n_reqs, cap_reqs;
        struct dsv_engine_tunables tun_now; /* copied from tun at every loop turn */
        struct session *s_head, *s_tail;
        int n_sessions;
        uint64_t last_sweep_ns;
        float *logits;
        size_t logits_rows;
        int32_t *b_tok, *b_pos, *b_seq;
        bool *b_want;
        struct dsv_kv_seq **b_seqs;
        struct request **b_req;     /* per sequence */
        int *b_row;                 /* per sequence: logits row or -1 */
        size_t b_cap, b_seq_cap;
        uint64_t kv_page_tokens, kv_bytes_per_token, kv_pages_total;
        char error[1600];
        uint64_t rate_t0, rate_prefill, rate_decode;
};

static void notify_loop(struct dsv_engine *e) {
        uint64_t one = 1;
        if (e->opts.notify_fd >= 0 && write(e->opts.notify_fd, &one, sizeof(one)) < 0) {
                /* the counter cannot overflow in practice; nothing else to do */
        }
}

static void set_state(struct dsv_engine *e, enum dsv_daemon_state s) {
        __atomic_store_n(&e->state, (int)s, __ATOMIC_RELEASE);
        notify_loop(e);
}

static void heartbeat(struct dsv_engine *e) { __atomic_store_n(&e->heartbeat_ns, dsv_now_ns(), __ATOMIC_RELAXED); }

/* ------------------------------------------------------------------ requests */

static void session_return(struct dsv_engine *e, struct request *r);

/* Frees a request that never got into the engine (stopping, the model failed, out of memory);
 * with uncount it stops counting against its uid's in-flight limit. */
static void request_in_free(struct dsv_request_in *in, bool uncount) {
        if (uncount && in->conn->ue)
                __atomic_sub_fetch(&in->conn->ue->requests, 1, __ATOMIC_RELAXED);
        dsv_conn_unref(in->conn);
        free(in->tokens);
        free(in->text);
        free(in->messages);
        free(in);
}

/* The request's log line (daemon/server/reqlog.h), with the figures its DONE carried. */
static void log_request(const struct request *r) {
        struct dsv_reqlog l = {
                .uid = r->conn->peer.uid, .pid = r->conn->peer.pid, .client = r->conn->name, .id = r->id,
                .session = r->in->session, .prompt_tokens = (uint32_t)r->n_prompt, .cached_tokens = (uint32_t)r->n_cached,
                .generated_tokens = (uint32_t)(r->n_tokens - r->n_prompt), .finish = r->reason,
                .error = r->final_error ? r->error_code : 0, .message = r->error_msg,
        };
        uint64_t end = r->t_end ? r->t_end : dsv_now_ns();
        l.queue_us = r->t_start ? (r->t_start - r->t_submit) / 1000 : (end - r->t_submit) / 1000;
        l.prefill_us = r->t_first && r->t_start ? (r->t_first - r->t_start) / 1000 : 0;
        l.decode_us = r->t_first ? (end - r->t_first) / 1000 : 0;
        dsv_reqlog(&l);
}

static void request_free(struct dsv_engine *e, struct request *r) {
        if (!r)
                return;
        if (r->in && r->in->kind == DSV_REQUEST_GENERATE && r->conn)
                log_request(r);
        if (r->sess)
                session_return(e, r);
        if (e->kv)
                dsv_kv_seq_release(e->kv, &r->seq);
        if (r->conn && r->conn->ue)
                __atomic_sub_fetch(&r->conn->ue->requests, 1, __ATOMIC_RELAXED);
        dsv_conn_unref(r->conn);
        dsv_text_stream_free(r->stream);
        if (r->in)
                request_in_free(r->in, false); /* its conn went to r->conn */
        free(r->tokens);
        free(r->out);
        free(r->text_out);
        free(r->rows);
        free(r);
}

static void finish_error(struct request *r, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void finish_error(struct request *r, int code, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->error_msg, sizeof(r->error_msg), fmt, ap);
        va_end(ap);
        r->final_error = true;
        r->error_code = code;
        r->state = REQ_FINISHING;
        r->t_end = dsv_now_ns();
}

static void finish(struct request *r, uint32_t reason) {
        r->reason = reason;
        r->state = REQ_FINISHING;
        r->t_end = dsv_now_ns();
}

static int push_out(struct request *r, int32_t tok) {
        if (r->n_out == r->cap_out) {
                int cap = r->cap_out ? 2 * r->cap_out : 16;
                int32_t *v = realloc(r->out, (size_t)cap * sizeof(*v));
                if (!v)
                        return -ENOMEM;
                r->out = v;
                r->cap_out = cap;
        }
        r->out[r->n_out++] = tok;
        return 0;
}

static int push_text(struct request *r, const char *s, size_t n) {
        if (!n)
                return 0;
        if (r->cap_text - r->n_text < n) {
                size_t cap = MAX(r->cap_text * 2, r->n_text + n + 64);
                char *v = realloc(r->text_out, cap);
                if (!v)
                        return -ENOMEM;
                r->text_out = v;
                r->cap_text = cap;
        }
        memcpy(r->text_out + r->n_text, s, n);
        r->n_text += n;
        return 0;
}

/* ------------------------------------------------------------------ sessions */

static void lru_unlink(struct dsv_engine *e, struct session *s) {
        if (s->prev)
                s->prev->next = s->next;
        else
                e->s_head = s->next;
        if (s->next)
                s->next->prev = s->prev;
        else
                e->s_tail = s->prev;
        s->prev = s->next = NULL;
}

static void lru_touch(struct dsv_engine *e, struct session *s) {
        s->last_used_ns = dsv_now_ns();
        if (e->s_tail == s)
                return;
        if (s->prev || s->next || e->s_head == s)
                lru_unlink(e, s);
        s->prev = e->s_tail;
        if (e->s_tail)
                e->s_tail->next = s;
        else
                e->s_head = s;
        e->s_tail = s;
}

static struct session *session_find(struct dsv_engine *e, uid_t uid, const char *name) {
        for (struct session *s = e->s_head; s; s = s->next)
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
static void session_free(struct dsv_engine *e, struct session *s) {
        if (s->busy)
                s->busy->sess = NULL;
        dsv_kv_seq_release(e->kv, &s->seq);
        lru_unlink(e, s);
        dsv_conn_unref(s->owner);
        free(s->tokens);
        free(s);
        e->n_sessions--;
}

/* Idle means: no request runs on it, or one waits for admission (it has not taken the
 * pages yet, and prefills whatever is left when it is admitted). */
static bool session_evictable(const struct session *s) {
        return !s->pinned && s->seq.n_pages > 0 && (!s->busy || !s->busy->admitted);
}

static int64_t evictable_pages(const struct dsv_engine *e) {
        int64_t n = 0;
        for (const struct session *s = e->s_head; s; s = s->next)
                if (session_evictable(s))
                        n += s->seq.n_pages;
        return n;
}

/* Frees the pages of idle unpinned sessions, least recently used first, until the pool
 * has `need` free pages. */
static void evict_pages(struct dsv_engine *e, int need) {
        for (struct session *s = e->s_head; s && e->kv->n_free < need; s = s->next) {
                if (!session_evictable(s))
                        continue;
                log_debug("Session '%s' of uid %u: evicting %d KV pages (%d tokens)", s->name, (unsigned)s->uid,
                          s->seq.n_pages, s->seq.len);
                dsv_kv_seq_release(e->kv, &s->seq);
                s->n_exact = 0;
                __atomic_add_fetch(&e->n_evicted, 1, __ATOMIC_RELAXED);
        }
}

/* A new, empty session; at the max-sessions cap it replaces the least recently used idle
 * unpinned one (of any uid). -EDQUOT when every session is busy or pinned. */
static int session_new(struct dsv_engine *e, uid_t uid, const char *name, struct session **ret) {
        struct session *s;
        if (e->n_sessions >= e->tun_now.max_sessions) {
                struct session *victim = NULL;
                for (s = e->s_head; s && !victim; s = s->next)
                        if (!s->busy && !s->pinned)
                                victim = s;
                if (!victim || e->n_sessions > e->tun_now.max_sessions)
                        return -EDQUOT;
                log_debug("Session '%s' of uid %u closed to make room (max-sessions %d)", victim->name,
                          (unsigned)victim->uid, e->tun_now.max_sessions);
                session_free(e, victim);
        }
        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->uid = uid;
        snprintf(s->name, sizeof(s->name), "%s", name);
        lru_touch(e, s);
        e->n_sessions++;
        *ret = s;
        return 0;
}

/* The request on s ends: the sequence, holding the KV of r->tokens[0, seq.len) (the prompt
 * and the generated tokens that were fed back; the last sampled one never was), returns to
 * the session with exactly those tokens as its history. Pages reserved for tokens that were
 * never generated go back to the pool. */
static void session_return(struct dsv_engine *e, struct request *r) {
        struct session *s = r->sess;
        r->sess = NULL;
        s->busy = NULL;
        if (r->admitted) {
                int32_t *t = s->tokens;
                assert(s->seq.n_pages == 0 && r->tokens && r->cap >= r->seq.len);
                dsv_kv_seq_truncate(e->kv, &r->seq, r->seq.len);
                s->tokens = r->tokens;
                s->cap = r->cap;
                r->tokens = t;
                r->cap = 0;
                s->seq = r->seq;
                s->n_exact = MIN(r->n_exact, s->seq.len);
                memset(&r->seq, 0, sizeof(r->seq));
        }
        lru_touch(e, s);
}

/* Idle unpinned sessions past the idle timeout, or over the max-sessions cap (after a
 * reload lowered it), are closed, least recently used first. */
static void sessions_sweep(struct dsv_engine *e) {
        uint64_t now = dsv_now_ns(), idle = (uint64_t)e->tun_now.session_idle_timeout_s * 1000000000ull;
        for (struct session *s = e->s_head, *next; s; s = next) {
                next = s->next;
                if (s->busy)
                        continue;
                if (s->owner && dsv_conn_is_dead(s->owner)) {
                        log_debug("Session '%s' of uid %u closed: its private connection is gone", s->name, (unsigned)s->uid);
                        session_free(e, s);
                        continue;
                }
                if (s->pinned)
                        continue;
                if ((idle && now - s->last_used_ns >= idle) || e->n_sessions > e->tun_now.max_sessions) {
                        log_debug("Session '%s' of uid %u closed: %s", s->name, (unsigned)s->uid,
                                  e->n_sessions > e->tun_now.max_sessions ? "over max-sessions" : "idle");
                        session_free(e, s);
                }
        }
        e->last_sweep_ns = now;
}

static void publish_stats(struct dsv_engine *e) {
        uint32_t n = 0, pinned = 0;
        uint64_t pages = 0;
        for (const struct session *s = e->s_head; s; s = s->next) {
                n++;
                pinned += s->pinned;
                pages += (uint64_t)session_seq(s)->n_pages;
        }
        __atomic_store_n(&e->st_sessions, n, __ATOMIC_RELAXED);
        __atomic_store_n(&e->st_pinned, pinned, __ATOMIC_RELAXED);
        __atomic_store_n(&e->st_session_pages, pages, __ATOMIC_RELAXED);
        if (e->kv)
                __atomic_store_n(&e->kv_pages_used, (uint64_t)(e->kv->n_pages - e->kv->n_free), __ATOMIC_RELAXED);
}

static void session_reply_fill(struct request *r, const struct session *s) {
        const struct dsv_kv_seq *q = session_seq(s);
        r->sreply.flags |= (s->pinned ? DSV_SESSION_PINNED : 0) | (s->busy ? DSV_SESSION_BUSY : 0);
        r->sreply.n_tokens = (uint32_t)q->len;
        r->sreply.n_pages = (uint32_t)q->n_pages;
}

/* SESSION_OPEN, SESSION_CLOSE, SESSION_PIN: done at once; the reply goes out with flush(). */
static void session_op(struct dsv_engine *e, struct request *r) {
        const struct dsv_request_in *in = r->in;
        uid_t uid = r->conn->peer.uid;
        struct session *s;
        int rc;

        memset(&r->sreply, 0, sizeof(r->sreply));
        r->sreply.id = r->id;
        snprintf(r->sreply.name, sizeof(r->sreply.name), "%s", in->session);
        s = session_find(e, uid, in->session);
        switch (in->kind) {
        case DSV_REQUEST_SESSION_OPEN:
                if (s && (in->session_flags & DSV_SESSION_OPEN_EXCL)) {
                        finish_error(r, EEXIST, "session '%s' exists already", in->session);
                        return;
                }
                if (!s) {
                        if (e->tun_now.max_sessions <= 0) {
                                finish_error(r, ENOTSUP, "sessions are disabled on this dsv32d (max-sessions = 0)");
                                return;
                        }
                        rc = session_new(e, uid, in->session, &s);
                        if (rc == -EDQUOT) {
                                finish_error(r, EDQUOT, "too many sessions: all %d are busy or pinned (max-sessions); close some",
                                             e->n_sessions);
                                return;
                        }
                        if (rc < 0) {
                                finish_error(r, -rc, "cannot create session '%s': %s", in->session, strerror(-rc));
                                return;
                        }
                        r->sreply.flags |= DSV_SESSION_CREATED;
                } else {
                        lru_touch(e, s);
                }
                if ((in->session_flags & DSV_SESSION_OPEN_PRIVATE) && s->owner != r->conn) {
                        dsv_conn_unref(s->owner);
                        s->owner = dsv_conn_ref(r->conn);
                }
                session_reply_fill(r, s);
                break;
        case DSV_REQUEST_SESSION_LIST: {
                uint64_t now = dsv_now_ns();
                uint32_t n = 0;
                for (const struct session *x = e->s_head; x; x = x->next)
                        n += x->uid == uid;
                r->rows = n ? calloc(n, sizeof(*r->rows)) : NULL;
                if (n && !r->rows) {
                        finish_error(r, ENOMEM, "out of memory");
                        return;
                }
                for (const struct session *x = e->s_head; x; x = x->next) {
                        struct dsv_session_row *row;
                        if (x->uid != uid)
                                continue;
                        row = &r->rows[r->n_rows++];
                        snprintf(row->name, sizeof(row->name), "%s", x->name);
                        row->flags = (x->pinned ? DSV_SESSION_PINNED : 0) | (x->busy ? DSV_SESSION_BUSY : 0) |
                                     (x->owner ? DSV_SESSION_PRIVATE_ROW : 0);
                        row->n_tokens = (uint32_t)session_seq(x)->len;
                        row->n_pages = (uint32_t)session_seq(x)->n_pages;
                        row->idle_ms = x->busy ? 0 : (now - x->last_used_ns) / 1000000;
                }
                break;
        }
        case DSV_REQUEST_SESSION_CLOSE:
                if (!s) {
                        finish_error(r, ENOENT, "no session named '%s' (sessions belong to the user that made them)",
                                     in->session);
                        return;
                }
                session_reply_fill(r, s);
                log_debug("Session '%s' of uid %u closed by its client (%u tokens, %u pages)", s->name, (unsigned)uid,
                          r->sreply.n_tokens, r->sreply.n_pages);
                session_free(e, s);
                break;
        case DSV_REQUEST_SESSION_PIN:
                if (!s) {
                        finish_error(r, ENOENT, "no session named '%s' (sessions belong to the user that made them)",
                                     in->session);
                        return;
                }
                if ((in->session_flags & DSV_SESSION_PIN_SET) && !s->pinned) {
                        int pinned = 0;
                        for (const struct session *x = e->s_head; x; x = x->next)
                                pinned += x->uid == uid && x->pinned;
                        if (pinned >= e->tun_now.session_pin_quota) {
                                finish_error(r, EDQUOT,
                                             "uid %u has %d pinned sessions, its quota (session-pin-quota %d); unpin or close one",
                                             (unsigned)uid, pinned, e->tun_now.session_pin_quota);
                                return;
                        }
                        s->pinned = true;
                } else if (!(in->session_flags & DSV_SESSION_PIN_SET)) {
                        s->pinned = false;
                }
                lru_touch(e, s);
                session_reply_fill(r, s);
                break;
        default:
                finish_error(r, EINVAL, "unknown session operation");
                return;
        }
        finish(r, DSV_FINISH_STOP);
        publish_stats(e);
}

/* A request that holds its session but will release it at the next step without producing
 * anything more: cancelled, its client gone, or finishing. */
static bool going_away(const struct request *o) {
        return o->state == REQ_FINISHING || o->cancel || dsv_conn_is_dead(o->conn);
}

/* Binds a GENERATE to its session (made on first use); false when it cannot run. A session
 * held by a request that is going away (its client died a moment ago and reconnected, say)
 * is waited for: the request stays waiting with sess_wait set and tries again each step. */
static bool session_attach(struct dsv_engine *e, struct request *r) {
        struct session *s = session_find(e, r->conn->peer.uid, r->in->session);
        int rc;
        if (!s) {
                rc = session_new(e, r->conn->peer.uid, r->in->session, &s);
                if (rc == -EDQUOT) {
                        finish_error(r, EDQUOT, "cannot create session '%s': all %d sessions are busy or pinned (max-sessions)",
                                     r->in->session, e->n_sessions);
                        return false;
                }
                if (rc < 0) {
                        finish_error(r, -rc, "cannot create session '%s': %s", r->in->session, strerror(-rc));
                        return false;
                }
        }
        r->sess_wait = false;
        if (s->busy && going_away(s->busy)) {
                r->sess_wait = true;
                return true;
        }
        if (s->busy) {
                finish_error(r, EBUSY,
                             "session '%s' is in use by another request; a session runs one request at a time (wait for "
                             "it, cancel it, or use another session)",
                             s->name);
                return false;
        }
        s->busy = r;
        r->sess = s;
        lru_touch(e, s);
        return true;
}

/* Reserves the KV cache of a waiting request: 0 admitted; -EAGAIN wait for pages; other
 * negative: the request failed (finishing with the error). With a session, its sequence is
 * cut back to the prefix it shares with the prompt first; only the rest gets prefilled. */
static int admit(struct dsv_engine *e, struct request *r) {
        struct session *s = r->sess;
        bool others = false;
        int rc;

        if (s) {
                /* at most all but the last prompt token: its logits are needed */
                bool exact = !(r->in->flags & DSV_GEN_SESSION_REUSE_OUTPUT);
                int lcp = 0, max = MIN(exact ? s->n_exact : s->seq.len, r->n_prompt - 1);
                while (lcp < max && s->tokens[lcp] == r->tokens[lcp])
                        lcp++;
                /* a one-token rest would run through the decode path (see struct session) */
                if (exact && lcp > 0 && r->n_prompt - lcp == 1)
                        lcp--;
                dsv_kv_seq_truncate(e->kv, &s->seq, lcp);
                s->n_exact = MIN(s->n_exact, lcp);
                r->seq = s->seq;
                r->n_exact = s->n_exact;
                memset(&s->seq, 0, sizeof(s->seq));
        }
        rc = dsv_kv_seq_reserve(e->kv, &r->seq, r->total);
        if (rc == -ENOSPC) {
                int need = DIV_ROUND_UP(r->total, (int)e->kv_page_tokens) - r->seq.n_pages;
                if ((int64_t)need <= (int64_t)e->kv->n_free + evictable_pages(e)) {
                        evict_pages(e, need);
                        rc = dsv_kv_seq_reserve(e->kv, &r->seq, r->total);
                }
        }
        if (rc < 0 && s) {
                s->seq = r->seq; /* back to the session, evictable while we wait */
                memset(&r->seq, 0, sizeof(r->seq));
        }
        if (rc == -ENOSPC) {
                /* pages come back when another request ends; when none holds any, the rest is
                 * pinned by sessions and waiting would be forever */
                for (size_t i = 0; i < e->n_reqs && !others; i++)
                        others = e->reqs[i] != r && e->reqs[i]->seq.n_pages > 0;
                if (others)
                        return -EAGAIN;
                finish_error(r, ENOSPC,
                             "the request needs %d tokens of KV cache but pinned sessions hold %llu of the %llu pages; "
                             "unpin or close sessions (or raise kv-cache-mb)",
                             r->total, (unsigned long long)(e->kv->n_pages - e->kv->n_free),
                             (unsigned long long)e->kv->n_pages);
                return -ENOSPC;
        }
        if (rc < 0) {
                finish_error(r, -rc, "cannot reserve the KV cache: %s", strerror(-rc));
                return rc;
        }
        r->admitted = true;
        r->n_cached = r->seq.len;
        if (r->n_cached)
                __atomic_add_fetch(&e->n_cached_total, (uint64_t)r->n_cached, __ATOMIC_RELAXED);
        r->t_start = dsv_now_ns();
        return 0;
}

/* Writes pending output and, when finishing, the final message. Returns true when the
 * request has nothing left to send (and may be freed if finishing). */
static bool flush(struct dsv_engine *e, struct request *r) {
        struct dsv_msg m;
        int rc;
        bool stream = !(r->in->flags & DSV_GEN_NO_STREAM);

        if (dsv_conn_is_dead(r->conn))
                return true;
        if (r->state == REQ_FINISHING && r->stream && !r->final_error) {
                const char *t;
                size_t n;
                if (dsv_text_stream_flush(r->stream, &t, &n) == 0)
                        push_text(r, t, n);
                dsv_text_stream_free(r->stream);
                r->stream = NULL;
        }
        if ((r->n_out || r->n_text) && (stream || r->state == REQ_FINISHING)) {
                /* a record holds at most max_record bytes: send in slices of tokens (the
                 * text rides with the last slice; it is at most a few bytes per token) */
                uint32_t max_tok = MAX(1u, (r->conn->shm.comp.max_record - 64) / 16);
                while (r->n_out || r->n_text) {
                        uint32_t k = (uint32_t)MIN((uint32_t)r->n_out, max_tok);
                        bool last = k == (uint32_t)r->n_out;
                        memset(&m, 0, sizeof(m));
                        m.type = DSV_MSG_TOKENS;
                        m.u.tokens.id = r->id;
                        m.u.tokens.tokens = r->out;
                        m.u.tokens.n_tokens = k;
                        if (last && r->n_text && r->n_text + 64 + 5ull * k < r->conn->shm.comp.max_record) {
                                m.u.tokens.text = r->text_out;
                                m.u.tokens.text_len = (uint32_t)r->n_text;
                        }
                        rc = dsv_conn_send(r->conn, &m, true);
                        if (rc == -EAGAIN)
                                return false;
                        if (rc < 0)
                                return true; /* gone, or it broke its ring */
                        memmove(r->out, r->out + k, (size_t)(r->n_out - (int)k) * sizeof(int32_t));
                        r->n_out -= (int)k;
                        if (m.u.tokens.text || (last && r->n_text))
                                r->n_text = 0; /* text too long for one record is dropped; ids remain */
                }
        }
        if (r->state != REQ_FINISHING)
                return true;
        if (r->final_error) {
                rc = dsv_conn_send_error(r->conn, r->id, r->error_code, true, "%s", r->error_msg);
        } else if (r->in->kind == DSV_REQUEST_SESSION_LIST) {
                /* as many rows as one completion record holds (about 100 bytes each) */
                memset(&m, 0, sizeof(m));
                m.type = DSV_MSG_SESSION_LIST_REPLY;
                m.u.session_list.id = r->id;
                m.u.session_list.rows = r->rows;
                m.u.session_list.n_rows = MIN(r->n_rows, (r->conn->shm.comp.max_record - 64) / 100);
                m.u.session_list.n_total = r->n_rows;
                rc = dsv_conn_send(r->conn, &m, true);
        } else if (r->in->kind != DSV_REQUEST_GENERATE) {
                memset(&m, 0, sizeof(m));
                m.type = DSV_MSG_SESSION_REPLY;
                m.u.session = r->sreply;
                rc = dsv_conn_send(r->conn, &m, true);
        } else {
                memset(&m, 0, sizeof(m));
                m.type = DSV_MSG_DONE;
                m.u.done.id = r->id;
                m.u.done.reason = r->reason;
                m.u.done.prompt_tokens = (uint32_t)r->n_prompt;
                m.u.done.completion_tokens = (uint32_t)(r->n_tokens - r->n_prompt);
                m.u.done.cached_tokens = (uint32_t)r->n_cached;
                m.u.done.queue_us = r->t_start ? (r->t_start - r->t_submit) / 1000 : (r->t_end - r->t_submit) / 1000;
                m.u.done.prefill_us = r->t_first && r->t_start ? (r->t_first - r->t_start) / 1000 : 0;
                m.u.done.decode_us = r->t_first ? (r->t_end - r->t_first) / 1000 : 0;
                rc = dsv_conn_send(r->conn, &m, true);
        }
        return rc != -EAGAIN;
}

/* Builds the prompt of a new request; false (with the request finishing in error) when it
 * cannot run. */
static bool intake(struct dsv_engine *e, struct request *r) {
        struct dsv_request_in *in = r->in;
        const struct dsv_engine_info *inf = &e->info;
        int32_t *ids = NULL;
        size_t n = 0;
        int rc;

        for (size_t i = 0; i < e->n_reqs; i++)
                if (e->reqs[i] != r && e->reqs[i]->conn == r->conn && e->reqs[i]->id == r->id &&
                    e->reqs[i]->state != REQ_FINISHING) {
                        finish_error(r, EEXIST, "request id %llu is already in flight on this connection",
                                     (unsigned long long)r->id);
                        return false;
                }
        if (in->kind != DSV_REQUEST_GENERATE) {
                session_op(e, r);
                return false;
        }
        if (in->tokens) {
                ids = TAKE_PTR(in->tokens);
                n = in->n_tokens;
        } else if (in->text) {
                if (!e->text) {
                        finish_error(r, ENOTSUP, "%s", dsv_text_unavailable());
                        return false;
                }
                rc = dsv_text_encode(e->text, in->text, in->text_len, !(in->flags & DSV_GEN_NO_BOS), &ids, &n);
                if (rc < 0) {
                        finish_error(r, -rc, "cannot tokenize the prompt: %s", strerror(-rc));
                        return false;
                }
        } else {
                struct dsv_error err = {{0}};
                if (!e->text) {
                        finish_error(r, ENOTSUP, "%s", dsv_text_unavailable());
                        return false;
                }
                rc = dsv_text_chat(e->text, in->messages, in->n_messages, in->flags & DSV_GEN_THINKING, &ids, &n, &err);
                if (rc < 0) {
                        finish_error(r, -rc, "%s", err.msg[0] ? err.msg : strerror(-rc));
                        return false;
                }
        }
        r->tokens = ids;
        r->n_prompt = r->n_tokens = r->cap = (int)n;
        if (n == 0) {
                finish_error(r, EINVAL, "the prompt is empty");
                return false;
        }
        for (size_t i = 0; i < n; i++)
                if (ids[i] < 0 || ids[i] >= inf->vocab_size) {
                        finish_error(r, EINVAL, "token %d at position %zu is outside the vocabulary (%d ids)", ids[i], i,
                                     inf->vocab_size);
                        return false;
                }
        if ((int64_t)n + 1 > inf->max_context) {
                finish_error(r, E2BIG, "the prompt has %zu tokens; the context window holds %d", n, inf->max_context);
                return false;
        }
        r->total = (int)MIN((int64_t)n + in->max_tokens, (int64_t)inf->max_context);
        if ((uint64_t)r->total > e->kv_pages_total * e->kv_page_tokens) {
                finish_error(r, ENOSPC, "the request needs %d tokens of KV cache; the pool holds %llu (kv-cache-mb)",
                             r->total, (unsigned long long)(e->kv_pages_total * e->kv_page_tokens));
                return false;
        }
        /* room for the generated tokens */
        {
                int32_t *v = realloc(r->tokens, (size_t)r->total * sizeof(int32_t) + sizeof(int32_t));
                if (!v) {
                        finish_error(r, ENOMEM, "out of memory");
                        return false;
                }
                r->tokens = v;
                r->cap = r->total + 1;
        }
        if (in->session[0] && e->tun_now.max_sessions > 0 && !session_attach(e, r))
                return false;
        if (e->text && dsv_text_stream_new(e->text, &r->stream) < 0)
                r->stream = NULL;
        free(TAKE_PTR(in->text));
        free(TAKE_PTR(in->messages));
        __atomic_add_fetch(&e->n_prompt_total, (uint64_t)n, __ATOMIC_RELAXED);
        return true;
}

static int add_request(struct dsv_engine *e, struct dsv_request_in *in) {
        struct request *r = calloc(1, sizeof(*r));
        if (!r)
                return -ENOMEM;
        if (e->n_reqs == e->cap_reqs) {
                size_t cap = e->cap_reqs ? 2 * e->cap_reqs : 64;
                struct request **v = realloc(e->reqs, cap * sizeof(*v));
                if (!v) {
                        free(r);
                        return -ENOMEM;
                }
                e->reqs = v;
                e->cap_reqs = cap;
        }
        r->in = in;
        r->conn = TAKE_PTR(in->conn);
        r->id = in->id;
        r->state = REQ_WAITING;
        r->t_submit = in->t_submit_ns;
        r->sp.temperature = in->temperature;
        r->sp.top_p = in->top_p;
        r->sp.top_k = in->top_k;
        r->sp.min_p = in->min_p;
        r->sp.seed = in->seed;
        e->reqs[e->n_reqs++] = r;
        if (in->kind == DSV_REQUEST_GENERATE)
                __atomic_add_fetch(&e->n_requests_total, 1, __ATOMIC_RELAXED);
        intake(e, r);
        return 0;
}

static bool is_stop(const struct dsv_engine *e, const struct request *r, int32_t t) {
        if (t == e->info.eos_id && !(r->in->flags & DSV_GEN_IGNORE_EOS))
                return true;
        for (uint32_t i = 0; i < r->in->n_stop_tokens; i++)
                if (r->in->stop_tokens[i] == t)
                        return true;
        return false;
}

/* ------------------------------------------------------------------ the step */

static int batch_reserve(struct dsv_engine *e, size_t n_tok, size_t n_seq, size_t vocab) {
        if (n_tok > e->b_cap) {
                size_t cap = MAX(n_tok, 2 * e->b_cap);
                int32_t *a = realloc(e->b_tok, cap * sizeof(int32_t));
                if (a)
                        e->b_tok = a;
                int32_t *b = realloc(e->b_pos, cap * sizeof(int32_t));
                if (b)
                        e->b_pos = b;
                int32_t *c = realloc(e->b_seq, cap * sizeof(int32_t));
                if (c)
                        e->b_seq = c;
                bool *d = realloc(e->b_want, cap * sizeof(bool));
                if (d)
                        e->b_want = d;
                if (!a || !b || !c || !d)
                        return -ENOMEM;
                e->b_cap = cap;
        }
        if (n_seq > e->b_seq_cap) {
                size_t cap = MAX(n_seq, 2 * e->b_seq_cap);
                struct dsv_kv_seq **a = realloc(e->b_seqs, cap * sizeof(*a));
                if (a)
                        e->b_seqs = a;
                struct request **b = realloc(e->b_req, cap * sizeof(*b));
                if (b)
                        e->b_req = b;
                int *c = realloc(e->b_row, cap * sizeof(int));
                if (c)
                        e->b_row = c;
                if (!a || !b || !c)
                        return -ENOMEM;
                e->b_seq_cap = cap;
        }
        if (n_seq > e->logits_rows) {
                float *l = realloc(e->logits, n_seq * vocab * sizeof(float));
                if (!l)
                        return -ENOMEM;
                e->logits = l;
                e->logits_rows = n_seq;
        }
        return 0;
}

static void remove_finished(struct dsv_engine *e) {
        size_t k = 0;
        bool freed = false;
        /* the KV cache of a finished request is free (or back in its session), and the
         * statistics say so, before its client hears DONE */
        for (size_t i = 0; i < e->n_reqs; i++) {
                struct request *r = e->reqs[i];
                if (r->state != REQ_FINISHING || (!r->sess && !r->seq.n_pages))
                        continue;
                if (r->sess)
                        session_return(e, r);
                if (e->kv)
                        dsv_kv_seq_release(e->kv, &r->seq);
                freed = true;
        }
        if (freed)
                publish_stats(e);
        for (size_t i = 0; i < e->n_reqs; i++) {
                struct request *r = e->reqs[i];
                if (r->state == REQ_FINISHING && flush(e, r)) {
                        request_free(e, r);
                        continue;
                }
                e->reqs[k++] = r;
        }
        e->n_reqs = k;
}

/* One scheduling step; returns true when it did work. */
static bool step(struct dsv_engine *e) {
        struct dsv_engine_tunables tun;
        int budget, n_tok = 0, n_seq = 0, rows = 0, vocab = e->info.vocab_size;
        uint32_t running = 0, waiting = 0, parked = 0, prefilling = 0;
        bool draining_expired;
        struct dsv_error err = {{0}};
        int rc;

        pthread_mutex_lock(&e->lock);
        tun = e->tun;
        draining_expired = e->draining && dsv_now_ns() >= e->drain_deadline_ns;
        pthread_mutex_unlock(&e->lock);

        /* 1. dead clients, cancellations, shutdown */
        for (size_t i = 0; i < e->n_reqs; i++) {
                struct request *r = e->reqs[i];
                if (r->state == REQ_FINISHING)
                        continue;
                if (dsv_conn_is_dead(r->conn))
                        finish(r, DSV_FINISH_CANCELLED);
                else if (r->cancel)
                        finish(r, DSV_FINISH_CANCELLED);
                else if (draining_expired)
                        finish(r, DSV_FINISH_SHUTDOWN);
        }
        /* 2. pending output of parked streams */
        for (size_t i = 0; i < e->n_reqs; i++) {
                struct request *r = e->reqs[i];
                if (r->state == REQ_RUNNING && r->n_out)
                        flush(e, r);
        }
        remove_finished(e);

        /* 3. the batch: decode tokens first, then prompt chunks */
        budget = tun.batch_tokens;
        for (size_t i = 0; i < e->n_reqs; i++) {
                struct request *r = e->reqs[i];
                if (r->state == REQ_RUNNING) {
                        running++;
                        if (r->n_out && !(r->in->flags & DSV_GEN_NO_STREAM))
                                parked++;
                } else if (r->state == REQ_WAITING) {
                        if (r->admitted)
                                prefilling++;
                        else
                                waiting++;
                }
        }
        if (batch_reserve(e, (size_t)(budget + (int)running + 1), e->n_reqs + 1, (size_t)vocab) < 0) {
                log_error("Engine: out of memory building a batch");
                return false;
        }
        for (size_t i = 0; i < e->n_reqs && budget > 0 && n_seq < tun.max_running; i++) {
                struct request *r = e->reqs[i];
                if (r->state != REQ_RUNNING || (r->n_out && !(r->in->flags & DSV_GEN_NO_STREAM)))
                        continue;
                e->b_tok[n_tok] = r->tokens[r->seq.len];
                e->b_pos[n_tok] = r->seq.len;
                e->b_seq[n_tok] = n_seq;
                e->b_want[n_tok] = true;
                e->b_seqs[n_seq] = &r->seq;
                e->b_req[n_seq] = r;
                e->b_row[n_seq] = rows++;
                n_tok++;
                n_seq++;
                budget--;
        }
        for (size_t i = 0; i < e->n_reqs && budget > 0 && n_seq < tun.max_running; i++) {
                struct request *r = e->reqs[i];
                int chunk, left;
                if (r->state != REQ_WAITING)
                        continue;
                if (r->sess_wait && (!session_attach(e, r) || r->sess_wait))
                        continue; /* its session is not free yet (or it failed) */
                if (!r->admitted) {
                        rc = admit(e, r);
                        if (rc == -EAGAIN)
                                break; /* first come, first served: wait for pages */
                        if (rc < 0)
                                continue;
                }
                /* never one token of a longer rest alone: it would take the decode path, and
                 * the output would depend on how the prompt was cut (see struct session) */
                left = r->n_prompt - r->seq.len;
                chunk = MIN(budget, left);
                if (chunk < left && left - chunk < 2)
                        chunk = left - 2; /* leave two for the next step, not one */
                if (chunk < 2 && left > 1) {
                        if (tun.batch_tokens - (int)running >= 2)
                                break; /* a later step has room for two */
                        chunk = MIN(budget, left); /* a budget this small never will */
                }
                if (chunk >= 2 && r->n_exact == r->seq.len)
                        r->n_exact += chunk;
                for (int j = 0; j < chunk; j++) {
                        int p = r->seq.len + j;
                        e->b_tok[n_tok] = r->tokens[p];
                        e->b_pos[n_tok] = p;
                        e->b_seq[n_tok] = n_seq;
                        e->b_want[n_tok] = p == r->n_prompt - 1;
                        n_tok++;
                }
                e->b_seqs[n_seq] = &r->seq;
                e->b_req[n_seq] = r;
                e->b_row[n_seq] = r->seq.len + chunk == r->n_prompt ? rows++ : -1;
                n_seq++;
                budget -= chunk;
        }
        __atomic_store_n(&e->n_running, running, __ATOMIC_RELAXED);
        __atomic_store_n(&e->n_waiting, waiting, __ATOMIC_RELAXED);
        __atomic_store_n(&e->n_prefilling, prefilling, __ATOMIC_RELAXED);
        __atomic_store_n(&e->n_parked, parked, __ATOMIC_RELAXED);
        publish_stats(e);
        if (n_tok == 0) {
                remove_finished(e); /* requests that failed admission */
                return false;
        }

        /* 4. forward */
        struct dsv_batch b = {.n_tokens = n_tok, .token = e->b_tok, .pos = e->b_pos, .seq = e->b_seq,
                              .want_logits = e->b_want, .n_seqs = n_seq, .seqs = e->b_seqs};

        rc = dsv_model_forward(e->model, e->kv, &b, e->logits, &err);
        heartbeat(e);
        __atomic_add_fetch(&e->n_steps, 1, __ATOMIC_RELAXED);
        if (rc < 0) {
                log_error("Engine: forward pass failed: %s", err.msg[0] ? err.msg : strerror(-rc));
                for (int s = 0; s < n_seq; s++)
                        finish_error(e->b_req[s], EIO, "the forward pass failed: %s", err.msg[0] ? err.msg : strerror(-rc));
                remove_finished(e);
                return true;
        }
        {
                int n_decode = 0;
                for (int s = 0; s < n_seq; s++)
                        n_decode += e->b_req[s]->state == REQ_RUNNING;
                e->rate_decode += (uint64_t)n_decode;
                e->rate_prefill += (uint64_t)(n_tok - n_decode);
                __atomic_add_fetch(&e->n_prefilled_total, (uint64_t)(n_tok - n_decode), __ATOMIC_RELAXED);
                if (dsv_now_ns() - e->rate_t0 > 1000000000ull) {
                        double sec = (dsv_now_ns() - e->rate_t0) / 1e9;
                        __atomic_store_n(&e->decode_mtok_s, (uint64_t)(e->rate_decode * 1000.0 / sec), __ATOMIC_RELAXED);
                        __atomic_store_n(&e->prefill_mtok_s, (uint64_t)(e->rate_prefill * 1000.0 / sec), __ATOMIC_RELAXED);
                        e->rate_decode = e->rate_prefill = 0;
                        e->rate_t0 = dsv_now_ns();
                }
        }

        /* 5. sample, stream, finish */
        for (int s = 0; s < n_seq; s++) {
                struct request *r = e->b_req[s];
                int32_t t;
                if (e->b_row[s] < 0)
                        continue;
                if (r->state == REQ_WAITING) {
                        r->state = REQ_RUNNING;
                        r->t_first = dsv_now_ns();
                }
                t = dsv_sample(&e->sampler, e->logits + (size_t)e->b_row[s] * (size_t)vocab, &r->sp, (uint64_t)r->n_generated);
                r->n_generated++;
                __atomic_add_fetch(&e->n_generated_total, 1, __ATOMIC_RELAXED);
                if (is_stop(e, r, t)) {
                        finish(r, DSV_FINISH_STOP);
                } else {
                        r->tokens[r->n_tokens++] = t;
                        if (push_out(r, t) < 0) {
                                finish_error(r, ENOMEM, "out of memory");
                                continue;
                        }
                        if (r->stream) {
                                const char *txt;
                                size_t n;
                                if (dsv_text_stream_push(r->stream, t, &txt, &n) == 0)
                                        push_text(r, txt, n);
                        }
                        if ((uint32_t)r->n_generated >= r->in->max_tokens)
                                finish(r, DSV_FINISH_LENGTH);
                        else if (r->n_tokens >= r->total)
                                finish(r, DSV_FINISH_CONTEXT);
                }
                if (r->state == REQ_RUNNING && !(r->in->flags & DSV_GEN_NO_STREAM))
                        flush(e, r);
        }
        remove_finished(e);
        return true;
}

/* ------------------------------------------------------------------ thread */

static void load_progress(void *ud, uint64_t done, uint64_t total, uint64_t elapsed_ns) {
        struct dsv_engine *e = ud;
        if (total)
                __atomic_store_n(&e->load_permille, (unsigned)(done * 999 / total), __ATOMIC_RELAXED);
        heartbeat(e);
}

static int load(struct dsv_engine *e) {
        struct dsv_model_opts mo = {0};
        struct dsv_error err = {{0}};
        const struct dsv_model_config *cfg;
        uint64_t page_bytes;
        int n_pages, rc;

        rc = dsv_numerics_from_name(e->numerics_name);
        mo.numerics = rc < 0 ? DSV_NUMERICS_FAITHFUL : (enum dsv_numerics)rc;
        mo.load.progress = load_progress;
        mo.load.ud = e;
        /* "cpu", "cuda" (the dsv32-backend-cuda.so plugin) or "auto": cuda when the plugin finds a
         * GPU and runs the whole model, else cpu */
        if ((rc = dsv_backend_open(e->backend_name, strcmp(e->backend_name, "cuda") == 0 ? 0 : e->opts.threads, &e->be,
                                   &err)) < 0) {
                snprintf(e->error, sizeof(e->error), "cannot create the %s backend: %.900s", e->backend_name, err.msg);
                return rc;
        }
        rc = dsv_model_load(e->model_dir, e->be, &mo, &e->model, &err);
        if (rc == -EOPNOTSUPP && strcmp(e->backend_name, "auto") == 0 && strcmp(e->be->ops->name, "cpu") != 0) {
                log_notice("%s; using the CPU backend", err.msg);
                dsv_backend_free(e->be);
                e->be = NULL;
                if ((rc = dsv_backend_cpu_new(e->opts.threads, &e->be)) < 0) {
                        snprintf(e->error, sizeof(e->error), "cannot create the CPU backend: %s", strerror(-rc));
                        return rc;
                }
                memset(&err, 0, sizeof(err));
                rc = dsv_model_load(e->model_dir, e->be, &mo, &e->model, &err);
        }
        if (rc < 0) {
                if (err.msg[0] && strstr(err.msg, e->model_dir)) /* it names the file already */
                        snprintf(e->error, sizeof(e->error), "cannot load the model: %.1500s", err.msg);
                else
                        snprintf(e->error, sizeof(e->error), "cannot load the model from %.512s: %.1000s", e->model_dir,
                                 err.msg[0] ? err.msg : strerror(-rc));
                return rc;
        }
        log_info("Backend %s: %s", e->be->ops->name, dsv_backend_describe(e->be));
        cfg = dsv_model_get_config(e->model);
        {
                struct dsv_kv_layout L;
                dsv_kv_layout_init(&L, cfg, dsv_numerics_kv_format(mo.numerics), DSV_KV_PAGE_TOKENS);
                page_bytes = (uint64_t)L.n_layers * L.layer_page_bytes;
                e->kv_bytes_per_token = dsv_kv_bytes_per_token(&L);
        }
        if (e->opts.kv_cache_mb == 0) { /* auto: from the model and the memory left */
                char why[512];
                uint64_t avail = 0;
                if (!e->be->host_memory || dsv_mem_available(&avail) < 0)
                        avail = 0; /* unknown */
                n_pages = dsv_kv_auto_pages(page_bytes, DSV_KV_PAGE_TOKENS, cfg->max_position_embeddings, avail, why,
                                            sizeof(why));
                if (n_pages < 0) {
                        snprintf(e->error, sizeof(e->error), "%s", why);
                        return n_pages;
                }
                log_info("KV cache: %s", why);
        } else {
                n_pages = (int)MIN((uint64_t)e->opts.kv_cache_mb * (1ull << 20) / MAX(page_bytes, 1ull), (uint64_t)INT32_MAX / 2);
        }
        if (n_pages < 1) {
                snprintf(e->error, sizeof(e->error), "kv-cache-mb %d holds no page of %llu bytes", e->opts.kv_cache_mb,
                         (unsigned long long)page_bytes);
                return -EINVAL;
        }
        if ((rc = dsv_kv_pool_new(e->be, cfg, dsv_numerics_kv_format(mo.numerics), n_pages, &e->kv)) < 0) {
                snprintf(e->error, sizeof(e->error), "cannot allocate the KV cache (%d pages): %s", n_pages, strerror(-rc));
                return rc;
        }
        e->kv_pages_total = (uint64_t)n_pages;
        e->kv_page_tokens = DSV_KV_PAGE_TOKENS;
        if ((rc = dsv_sampler_init(&e->sampler, cfg->vocab_size)) < 0) {
                snprintf(e->error, sizeof(e->error), "out of memory");
                return rc;
        }
        rc = dsv_text_open(e->model_dir, &e->text, &err);
        if (rc == -ENOENT || rc == -ENOTSUP) {
                e->text = NULL;
                log_warning("Text prompts are not available: %s", err.msg);
        } else if (rc < 0) {
                snprintf(e->error, sizeof(e->error), "%s", err.msg);
                return rc;
        }
        snprintf(e->info.model, sizeof(e->info.model), "%s (%s, %d layers, vocab %d)", e->model_dir,
                 cfg->model_type[0] ? cfg->model_type : "deepseek_v32", cfg->num_hidden_layers, cfg->vocab_size);
        e->info.vocab_size = cfg->vocab_size;
        e->info.bos_id = cfg->bos_token_id;
        e->info.eos_id = cfg->eos_token_id;
        e->info.max_context = cfg->max_position_embeddings;
        e->info.n_layers = cfg->num_hidden_layers;
        e->info.weight_bytes = dsv_model_weight_bytes(e->model);
        e->info.features = DSV_FEATURE_SESSIONS |
                           (e->text ? DSV_FEATURE_TEXT | (dsv_text_has_chat(e->text) ? DSV_FEATURE_CHAT : 0) : 0);
        e->info.backend = e->be->ops->name;
        e->info.numerics = e->numerics_name;
        e->info.threads = e->be->n_threads; /* resolved: 0 means "all cores" in the settings */
        {
                const struct dsv_load_stats *ls = dsv_model_load_stats(e->model);
                log_info("Loaded %s: %.1f MB of weights in %.2f s (%s); KV cache %d pages of %d tokens (%llu bytes/token)",
                         e->model_dir, ls->bytes_tensors / 1e6, ls->elapsed_ns / 1e9, ls->uring ? "io_uring" : "pread",
                         n_pages, DSV_KV_PAGE_TOKENS, (unsigned long long)e->kv_bytes_per_token);
        }
        return 0;
}

static void mark_cancelled(struct dsv_engine *e, const struct cancel_rec *c) {
        for (; c; c = c->next)
                for (size_t i = 0; i < e->n_reqs; i++)
                        if (e->reqs[i]->conn == c->conn && e->reqs[i]->id == c->id)
                                e->reqs[i]->cancel = true;
}

static void *engine_main(void *ud) {
        struct dsv_engine *e = ud;
        heartbeat(e);
        if (load(e) < 0) {
                log_error("%s", e->error);
                set_state(e, DSV_STATE_FAILED);
                /* keep answering: queued requests get the reason */
        } else {
                __atomic_store_n(&e->load_permille, 1000, __ATOMIC_RELAXED);
                e->rate_t0 = dsv_now_ns();
                set_state(e, DSV_STATE_READY);
        }
        for (;;) {
                struct dsv_request_in **in = NULL;
                struct cancel_rec *cancels;
                size_t n_in;
                bool stop, draining, did;

                pthread_mutex_lock(&e->lock);
                in = e->incoming;
                n_in = e->n_incoming;
                e->incoming = NULL;
                e->n_incoming = e->cap_incoming = 0;
                cancels = e->cancels;
                e->cancels = NULL;
                stop = e->stop;
                draining = e->draining;
                e->kicked = false;
                e->tun_now = e->tun;
                pthread_mutex_unlock(&e->lock);
                if (stop) {
                        for (size_t i = 0; i < n_in; i++)
                                request_in_free(in[i], false);
                        free(in);
                        while (cancels) {
                                struct cancel_rec *c = cancels;
                                cancels = c->next;
                                dsv_conn_unref(c->conn);
                                free(c);
                        }
                        break;
                }
                /* cancellations first, so that a session a cancelled request holds is seen
                 * as going away by a request for it in this batch (cancel, then ask again) */
                mark_cancelled(e, cancels);
                for (size_t i = 0; i < n_in; i++) {
                        if (__atomic_load_n(&e->state, __ATOMIC_ACQUIRE) == DSV_STATE_FAILED) {
                                dsv_conn_send_error(in[i]->conn, in[i]->id, EIO, true, "the model failed to load: %s", e->error);
                                request_in_free(in[i], true);
                                continue;
                        }
                        if (add_request(e, in[i]) < 0) {
                                log_error("Engine: out of memory accepting a request");
                                request_in_free(in[i], true);
                        }
                }
                free(in);
                /* again: requests submitted in this batch may be cancelled already */
                mark_cancelled(e, cancels);
                while (cancels) {
                        struct cancel_rec *c = cancels;
                        cancels = c->next;
                        dsv_conn_unref(c->conn);
                        free(c);
                }
                did = false;
                if (__atomic_load_n(&e->state, __ATOMIC_ACQUIRE) == DSV_STATE_READY && e->s_head &&
                    dsv_now_ns() - e->last_sweep_ns >= 1000000000ull) {
                        sessions_sweep(e);
                        publish_stats(e);
                }
                if (__atomic_load_n(&e->state, __ATOMIC_ACQUIRE) == DSV_STATE_READY)
                        did = step(e);
                else
                        remove_finished(e);
                heartbeat(e);
                {
                        bool idle = e->n_reqs == 0;
                        bool was = __atomic_exchange_n(&e->idle, idle, __ATOMIC_ACQ_REL);
                        if (idle && !was && draining)
                                notify_loop(e);
                }
                if (did)
                        continue;
                /* nothing runnable: sleep until new work, a kick, or a short timeout when
                 * parked streams or a drain deadline may need a look */
                pthread_mutex_lock(&e->lock);
                if (!e->n_incoming && !e->cancels && !e->stop && !e->kicked) {
                        struct timespec ts;
                        uint64_t wait_ns = e->n_reqs ? 2000000ull : 500000000ull;
                        clock_gettime(CLOCK_REALTIME, &ts);
                        ts.tv_nsec += (long)(wait_ns % 1000000000ull);
                        ts.tv_sec += (time_t)(wait_ns / 1000000000ull) + ts.tv_nsec / 1000000000L;
                        ts.tv_nsec %= 1000000000L;
                        pthread_cond_timedwait(&e->cond, &e->lock, &ts);
                }
                pthread_mutex_unlock(&e->lock);
        }
        for (size_t i = 0; i < e->n_reqs; i++)
                request_free(e, e->reqs[i]);
        e->n_reqs = 0;
        while (e->s_head)
                session_free(e, e->s_head);
        return NULL;
}

int dsv_engine_start(const struct dsv_engine_opts *opts, const struct dsv_engine_tunables *tun, struct dsv_engine **ret) {
        struct dsv_engine *e = calloc(1, sizeof(*e));
        int rc;

        if (!e)
                return -ENOMEM;
        e->opts = *opts;
        e->model_dir = strdup(opts->model_dir);
        e->backend_name = strdup(opts->backend ? opts->backend : "cpu");
        e->numerics_name = strdup(opts->numerics ? opts->numerics : "faithful");
        e->tun = *tun;
        e->tun_now = *tun;
        e->state = DSV_STATE_LOADING;
        e->idle = true;
        pthread_mutex_init(&e->lock, NULL);
        pthread_cond_init(&e->cond, NULL);
        if (!e->model_dir || !e->backend_name || !e->numerics_name) {
                dsv_engine_free(e);
                return -ENOMEM;
        }
        rc = -pthread_create(&e->thread, NULL, engine_main, e);
        if (rc < 0) {
                dsv_engine_free(e);
                return rc;
        }
        e->thread_started = true;
        *ret = e;
        return 0;
}

void dsv_engine_free(struct dsv_engine *e) {
        if (!e)
                return;
        if (e->thread_started) {
                pthread_mutex_lock(&e->lock);
                e->stop = true;
                pthread_cond_signal(&e->cond);
                pthread_mutex_unlock(&e->lock);
                pthread_join(e->thread, NULL);
        }
        for (size_t i = 0; i < e->n_incoming; i++)
                request_in_free(e->incoming[i], false);
        free(e->incoming);
        while (e->cancels) {
                struct cancel_rec *c = e->cancels;
                e->cancels = c->next;
                dsv_conn_unref(c->conn);
                free(c);
        }
        free(e->reqs);
        free(e->logits);
        free(e->b_tok);
        free(e->b_pos);
        free(e->b_seq);
        free(e->b_want);
        free(e->b_seqs);
        free(e->b_req);
        free(e->b_row);
        dsv_sampler_done(&e->sampler);
        dsv_text_free(e->text);
        dsv_kv_pool_free(e->kv);
        dsv_model_free(e->model);
        dsv_backend_free(e->be);
        pthread_cond_destroy(&e->cond);
        pthread_mutex_destroy(&e->lock);
        free(e->model_dir);
        free(e->backend_name);
        free(e->numerics_name);
        free(e);
}

enum dsv_daemon_state dsv_engine_state(const struct dsv_engine *e) {
        return (enum dsv_daemon_state)__atomic_load_n(&e->state, __ATOMIC_ACQUIRE);
}
unsigned dsv_engine_load_permille(const struct dsv_engine *e) { return __atomic_load_n(&e->load_permille, __ATOMIC_RELAXED); }
const char *dsv_engine_error(const struct dsv_engine *e) { return e->error; }
uint64_t dsv_engine_heartbeat_ns(const struct dsv_engine *e) { return __atomic_load_n(&e->heartbeat_ns, __ATOMIC_RELAXED); }

void dsv_engine_submit(struct dsv_engine *e, struct dsv_request_in *r) {
        pthread_mutex_lock(&e->lock);
        if (e->n_incoming == e->cap_incoming) {
                size_t cap = e->cap_incoming ? 2 * e->cap_incoming : 16;
                struct dsv_request_in **v = realloc(e->incoming, cap * sizeof(*v));
                if (!v) {
                        pthread_mutex_unlock(&e->lock);
                        dsv_conn_send_error(r->conn, r->id, ENOMEM, false, "out of memory");
                        request_in_free(r, true);
                        return;
                }
                e->incoming = v;
                e->cap_incoming = cap;
        }
        e->incoming[e->n_incoming++] = r;
        __atomic_store_n(&e->idle, false, __ATOMIC_RELEASE);
        pthread_cond_signal(&e->cond);
        pthread_mutex_unlock(&e->lock);
}

void dsv_engine_cancel(struct dsv_engine *e, struct dsv_conn *c, uint64_t id) {
        struct cancel_rec *rec = calloc(1, sizeof(*rec));
        if (!rec)
                return;
        rec->conn = dsv_conn_ref(c);
        rec->id = id;
        pthread_mutex_lock(&e->lock);
        rec->next = e->cancels;
        e->cancels = rec;
        pthread_cond_signal(&e->cond);
        pthread_mutex_unlock(&e->lock);
}

void dsv_engine_kick(struct dsv_engine *e) {
        pthread_mutex_lock(&e->lock);
        e->kicked = true;
        pthread_cond_signal(&e->cond);
        pthread_mutex_unlock(&e->lock);
}

void dsv_engine_set_tunables(struct dsv_engine *e, const struct dsv_engine_tunables *tun) {
        pthread_mutex_lock(&e->lock);
        e->tun = *tun;
        pthread_mutex_unlock(&e->lock);
}

void dsv_engine_drain(struct dsv_engine *e, uint64_t deadline_ns) {
        pthread_mutex_lock(&e->lock);
        e->draining = true;
        e->drain_deadline_ns = deadline_ns;
        e->kicked = true;
        pthread_cond_signal(&e->cond);
        pthread_mutex_unlock(&e->lock);
}

bool dsv_engine_idle(struct dsv_engine *e) {
        bool idle;
        pthread_mutex_lock(&e->lock);
        idle = e->n_incoming == 0 && __atomic_load_n(&e->idle, __ATOMIC_ACQUIRE);
        pthread_mutex_unlock(&e->lock);
        return idle;
}

const struct dsv_engine_info *dsv_engine_info(const struct dsv_engine *e) {
        return dsv_engine_state(e) == DSV_STATE_READY ? &e->info : NULL;
}

const struct dsv_text *dsv_engine_text(const struct dsv_engine *e) {
        return dsv_engine_state(e) == DSV_STATE_READY ? e->text : NULL;
}

void dsv_engine_stats(struct dsv_engine *e, struct dsv_msg_stats_reply *s) {
        const struct dsv_engine_info *inf = dsv_engine_info(e);
        s->state = dsv_engine_state(e);
        s->load_permille = dsv_engine_load_permille(e);
        if (inf) {
                snprintf(s->model, sizeof(s->model), "%s", inf->model);
                s->vocab_size = inf->vocab_size;
                s->n_layers = inf->n_layers;
                s->max_context = inf->max_context;
                s->weight_bytes = inf->weight_bytes;
                s->features = inf->features;
                s->kv_pages_total = e->kv_pages_total;
                s->kv_page_tokens = e->kv_page_tokens;
                s->kv_bytes_per_token = e->kv_bytes_per_token;
        }
        /* the backend is known (and e->be stable) once the engine is ready */
        snprintf(s->backend, sizeof(s->backend), "%s", inf ? inf->backend : e->backend_name);
        snprintf(s->numerics, sizeof(s->numerics), "%s", e->numerics_name);
        s->threads = (uint32_t)(inf ? inf->threads : e->opts.threads);
        s->kv_pages_used = __atomic_load_n(&e->kv_pages_used, __ATOMIC_RELAXED);
        s->requests_running = __atomic_load_n(&e->n_running, __ATOMIC_RELAXED);
        s->requests_waiting = __atomic_load_n(&e->n_waiting, __ATOMIC_RELAXED);
        s->requests_parked = __atomic_load_n(&e->n_parked, __ATOMIC_RELAXED);
        s->requests_total = __atomic_load_n(&e->n_requests_total, __ATOMIC_RELAXED);
        s->prompt_tokens_total = __atomic_load_n(&e->n_prompt_total, __ATOMIC_RELAXED);
        s->generated_tokens_total = __atomic_load_n(&e->n_generated_total, __ATOMIC_RELAXED);
        s->steps_total = __atomic_load_n(&e->n_steps, __ATOMIC_RELAXED);
        s->prefill_tok_s = (float)(__atomic_load_n(&e->prefill_mtok_s, __ATOMIC_RELAXED) / 1000.0);
        s->decode_tok_s = (float)(__atomic_load_n(&e->decode_mtok_s, __ATOMIC_RELAXED) / 1000.0);
        s->sessions = __atomic_load_n(&e->st_sessions, __ATOMIC_RELAXED);
        s->sessions_pinned = __atomic_load_n(&e->st_pinned, __ATOMIC_RELAXED);
        s->session_pages = __atomic_load_n(&e->st_session_pages, __ATOMIC_RELAXED);
        s->cached_tokens_total = __atomic_load_n(&e->n_cached_total, __ATOMIC_RELAXED);
        s->sessions_evicted = __atomic_load_n(&e->n_evicted, __ATOMIC_RELAXED);
        s->requests_prefilling = __atomic_load_n(&e->n_prefilling, __ATOMIC_RELAXED);
        s->prefilled_tokens_total = __atomic_load_n(&e->n_prefilled_total, __ATOMIC_RELAXED);
}
