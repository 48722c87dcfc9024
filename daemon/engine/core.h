/* The engine's core: requests, sessions, scheduling and output without threads (what the
 * parts of daemon/engine/ share). engine.c drives it from its thread; the unit tests drive
 * it directly over a fake executor (tests/unit/test-engine-core.c).
 *
 * A step: requests whose client is gone, that were cancelled or that a drain cut off
 * finish; pending output of parked streams is retried; the scheduler admits waiting
 * requests and builds the batch; the executor runs it; output.c samples the rows that have
 * logits (or decides a request's drafts), applies stop rules and streams; with the MTP
 * layer, draft.c catches its records up and drafts the next tokens; finished requests send
 * their final event and go. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "daemon/engine/engine.h"
#include "daemon/engine/metrics.h"
#include "daemon/engine/stop.h"
#include "daemon/kv_cache.h"
#include "daemon/model/plan.h"
#include "daemon/runtime/sampler.h"
#include "daemon/runtime/speculate.h"
#include "daemon/util.h"

struct dsv_text;
struct dsv_text_stream;
struct dsv_gmatch;
struct dsv_gvocab;

/* What runs a batch: the runtime in dsv32d, a deterministic fake in tests. */
struct dsv_exec {
        void *ud;
        /* The main model (dsv_model_forward); hidden (NULL: not wanted) gets every token's final
         * hidden state, hidden_size floats each in batch order (dsv_model_forward_hidden). */
        int (*forward)(void *ud, const struct dsv_batch *b, float *logits, float *hidden, struct dsv_error *err);
        /* The MTP layer (dsv_model_mtp_forward), or NULL: no speculative decoding. With it, the KV
         * pool's pages hold the layer's records too. */
        int (*mtp)(void *ud, const struct dsv_batch *b, const float *hidden_in, float *logits, float *hidden_out,
                   struct dsv_error *err);
        /* "" while the device (or the group of ranks) works, else what left it unusable, said in
         * full ("the device is lost: cudaError..." for a sticky CUDA error, "the group of N ranks
         * is broken: ..."; dsv_rank_group_error), or NULL: an executor that cannot fail so. */
        const char *(*device_error)(void *ud);
};

enum req_state {
        REQ_WAITING,   /* prompt not fully in the KV cache */
        REQ_RUNNING,   /* decoding */
        REQ_FINISHING, /* final event pending */
};

struct session;

/* A chat event not yet delivered (request.c): its strings live in the request's ev_text. */
struct chat_ev {
        enum dsv_engine_chat_kind kind;
        uint32_t index;
        uint32_t off, len;          /* text */
        uint32_t name_off, name_len; /* TOOL_BEGIN: the function's name; ERROR: the message */
        char call_id[24];           /* TOOL_BEGIN */
};

struct request {
        struct dsv_engine_request *in;
        void *client;
        uint64_t id;
        uid_t uid;
        enum req_state state;
        int32_t *tokens; /* prompt, then generated tokens */
        int n_prompt, n_tokens, cap;
        int total;       /* prompt + max_tokens, capped to the context */
        struct dsv_kv_seq seq;
        bool admitted;
        struct session *sess; /* the session it runs on (busy), or NULL */
        bool sess_wait;       /* its session is still held by a request that is going away */
        int n_cached;         /* prompt tokens whose KV came from the session */
        int n_exact;          /* leading tokens whose KV a prefill chunk computed (struct session) */
        /* the prefix cache: the first n_keyed pages of seq have known keys, the last is chain */
        int n_keyed;
        struct dsv_kv_key chain;
        int priority;         /* higher first */
        int n_preempted;      /* times its pages were taken back */
        struct {              /* SESSION_* requests: the reply */
                char name[DSV_ENGINE_NAME_MAX + 1];
                uint32_t flags, n_tokens, n_pages;
        } sreply;
        struct dsv_engine_session_row *rows; /* SESSION_LIST: the reply's rows */
        uint32_t n_rows;
        struct dsv_sampling sp;
        int n_generated;
        /* speculative decoding (draft.c): spec when its MTP records follow its KV (seq.mtp_len
         * == seq.len between steps); n_draft drafts wait for the positions seq.len + 1 .. */
        bool spec;
        int n_draft, draft_at;    /* draft_at: the seq.len they were drawn at */
        struct dsv_draft *drafts; /* [cap_drafts] */
        int cap_drafts;
        uint32_t spec_drafted, spec_accepted;
        /* output not yet delivered: ids, and their text (text_end[i]: end of token i's text) */
        int32_t *out;
        uint32_t *out_text_end;
        float *out_lp;                /* with in->logprobs: each token's logprob ... */
        struct dsv_logprob *out_top;  /* ... and its in->top_logprobs alternatives */
        int n_out;
        size_t cap_out;
        struct dsv_strbuf text_out;
        struct dsv_text_stream *stream;
        struct dsv_gmatch *gm; /* structured output: the matcher of in->grammar, or NULL */
        uint64_t mask_ns;      /* ... the time its masks took (constrain.c), and how many */
        uint32_t n_masks;
        struct dsv_stop *stop; /* stop strings over the stream's text, or NULL */
        /* in->chat_events: the parser over the text that the stop strings let through, and the
         * events it made that the sink has not taken yet (evs[ev_next] has ev_sent bytes of
         * its text delivered) */
        struct dsv_text_parser *parser;
        struct chat_ev *evs;
        size_t n_evs, cap_evs, ev_next;
        uint32_t ev_sent;
        struct dsv_strbuf ev_text;
        uint32_t n_calls;      /* tool calls so far */
        uint64_t call_key;     /* tool call ids: call_<hash of the prompt and the call's index> */
        bool last_was_call;    /* the last event was a tool call's end */
        /* final event */
        bool final_error;
        int error_code;
        char error_msg[512];
        enum dsv_engine_finish reason;
        uint32_t stop_index; /* reason DSV_ENGINE_FINISH_STOP_STRING: which string */
        bool cancel;
        bool save_wait; /* SESSIONS_SAVE: waiting for the writes it queued */
        uint64_t t_submit, t_start, t_first, t_end;
};

/* A KV-cache session. Between requests it owns `seq`, which holds the KV of tokens[0,
 * seq.len); while a request runs on it (busy) and has been admitted, the request owns the
 * sequence and the session's is empty.
 *
 * n_exact: the first n_exact tokens' KV was computed by prefill chunks (two or more tokens
 * of the sequence in one forward pass). Only those are reused by default: a token that was
 * alone in its pass (every generated token, fed back by a decode step) went through the
 * absorbed MLA path (DSV_OP_MLA_DECODE), equal in exact arithmetic to the prefill path but
 * not in the last bits, and those bits, through the FP8 rounding of the cache, can change
 * later tokens. A request without a session prefills the same tokens, so reusing only
 * prefill-computed entries gives exactly its output. reuse_output lifts the limit (all of
 * the shared prefix is reused, at the price of that exactness). */
struct session {
        struct session *prev, *next; /* LRU order: the core's s_head is the least recently used */
        int rank; /* the pool its sequence lives in, for life: -1 until its first request is placed */
        uid_t uid;
        char name[DSV_ENGINE_NAME_MAX + 1];
        int32_t *tokens;
        int cap;
        struct dsv_kv_seq seq;
        int n_exact;
        bool pinned;
        bool dirty;   /* changed since its last snapshot */
        struct request *busy;
        uint64_t last_used_ns;
        void *owner; /* opened private: the sink's client (with a reference); closed once it is gone */
};

struct dsv_core_params {
        int vocab_size, eos_id, max_context;
        int hidden_size; /* the exec's hidden states (with exec.mtp) */
        uint64_t kv_page_tokens;
        uint64_t model_fingerprint; /* seeds the prefix cache's keys */
};

/* Service per uid (fairness): tokens computed for it, decaying with time. */
struct uid_service {
        uid_t uid;
        double served;
        uint64_t t_ns;
        int sessions;
};

struct dsv_core {
        struct dsv_core_params p;
        /* One KV pool per data-parallel rank (dsv32d --parallel ep,dp: rank r's pool holds the
         * pages of the sequences placed on r, dsv_kv_seq.rank; scheduler.c places them), else
         * one. Every pool has the same geometry. */
        struct dsv_kv_pool **kv;
        int n_kv;
        int place_next; /* the rank after the last one a request was placed on by the rule */
        struct dsv_exec exec;
        const struct dsv_text *text; /* or NULL: no streaming text */
        struct dsv_engine_sink sink;
        struct dsv_metrics_live *metrics;
        /* tests only (DSV32_TEST_FORCE_TOKENS, a comma-separated list of ids): every generation
         * emits these tokens in order, whatever the logits say, then EOS */
        int32_t *forced;
        size_t n_forced;
        struct dsv_sampler sampler;
        /* structured output (grammar.c): the vocabulary's trie, built at the first request
         * with a schema, and the mask of the row being sampled */
        struct dsv_gvocab *gvocab;
        uint32_t *gmask;
        struct dsv_speculator spec; /* with exec.mtp */
        struct dsv_engine_tunables tun; /* set by the caller before each step */
        bool drain_expired;             /* set by the caller: end everything with "shutdown" */
        uint64_t drain_cut;             /* requests the drain deadline ended */
        bool preempted_this_step;       /* no admissions after a preemption in the same step */
        struct uid_service *uids;
        size_t n_uids, cap_uids;
        struct dsv_snapshots *snap; /* or NULL: no state directory */
        uint64_t last_snapshot_ns;
        /* The device is lost (exec.device_error): every request, running, queued or new, ends
         * with an ERROR carrying lost_msg; nothing runs on the device and nothing is saved
         * from it any more; the engine then exits the daemon. */
        bool lost;
        char lost_msg[1200];
        struct request **reqs;
        size_t n_reqs, cap_reqs;
        /* sessions: LRU list, s_head least recently used */
        struct session *s_head, *s_tail;
        int n_sessions;
        uint64_t last_sweep_ns;
        /* the batch of a step */
        float *logits;
        size_t logits_rows;
        float *hidden; /* [b_cap, hidden_size] with exec.mtp */
        int32_t *b_tok, *b_pos, *b_seq;
        bool *b_want;
        struct dsv_kv_seq **b_seqs;
        struct request **b_req; /* per sequence */
        int *b_row;             /* per sequence: first logits row or -1 */
        int *b_nrows;           /* per sequence: logits rows (1 + its drafts when it verifies) */
        int *b_first;           /* per sequence: its first token in the batch */
        bool *b_dec;            /* per sequence: as_decode (decode-phase sequences) */
        size_t b_cap, b_seq_cap;
        int b_tokens, b_n_seqs, b_rows;
        /* the MTP pass of a step (draft.c) */
        struct {
                int32_t *tok, *pos, *seq;
                bool *want;
                float *hin, *hout, *logits;
                struct dsv_kv_seq **seqs;
                struct request **req;
                int *row;
                size_t cap, seq_cap, rows_cap;
        } m;
};

/* The pool holding q's pages (its rank's). */
static inline struct dsv_kv_pool *core_pool(const struct dsv_core *c, const struct dsv_kv_seq *q) { return c->kv[q->rank]; }

/* core (engine.c) */
/* kv: n_kv >= 1 pools of the same geometry, one per data-parallel rank (the exec then runs
 * each sequence of a batch on the rank of its dsv_kv_seq.rank). */
int dsv_core_init(struct dsv_core *c, const struct dsv_core_params *p, struct dsv_kv_pool *const *kv, int n_kv,
                  const struct dsv_exec *exec, const struct dsv_text *text, const struct dsv_engine_sink *sink,
                  struct dsv_metrics_live *metrics);
/* Pages of all pools: in use, cached, total. */
int core_pages_in_use(const struct dsv_core *c);
int core_pages_cached(const struct dsv_core *c);
int core_pages_total(const struct dsv_core *c);
/* Ends every request without events and frees everything. */
void dsv_core_done(struct dsv_core *c);
/* A request whose prompt is ready (tokens) or failed to encode (err_code != 0); takes r. */
int dsv_core_add(struct dsv_core *c, struct dsv_engine_request *r, int err_code, const char *err_msg);
void dsv_core_cancel(struct dsv_core *c, void *client, uint64_t id);
/* One step; true when it ran a batch or finished something. */
bool dsv_core_step(struct dsv_core *c);
/* Whether the device was lost (see struct dsv_core.lost; set by dsv_core_step). */
bool dsv_core_lost(const struct dsv_core *c);
bool dsv_core_idle(const struct dsv_core *c);

/* request.c */
void request_finish(struct request *r, enum dsv_engine_finish reason);
void request_fail(struct request *r, int code, const char *fmt, ...) _printf_(3, 4);
/* tok with its logprob and alternatives (in->top_logprobs of them) when the request asked
 * for logprobs (else lp and top are ignored). */
int request_push_token(struct dsv_core *c, struct request *r, int32_t tok, float lp, const struct dsv_logprob *top);
int request_push_text(struct request *r, const char *s, size_t n);
/* Delivers pending output and, when finishing, the final event; true when nothing is left
 * to send (a finishing request may then be freed). */
bool request_flush(struct dsv_core *c, struct request *r);
void request_free(struct dsv_core *c, struct request *r);
/* Frees finished requests once their final event went out (their KV first). */
void requests_remove_finished(struct dsv_core *c);
bool request_parked(const struct request *r);
/* cancelled, client gone, or finishing: it releases its session at the next step */
bool request_going_away(const struct dsv_core *c, const struct request *r);

/* sessions.c */
void sessions_op(struct dsv_core *c, struct request *r);
bool sessions_attach(struct dsv_core *c, struct request *r);
void sessions_return(struct dsv_core *c, struct request *r);
void sessions_sweep(struct dsv_core *c);
void sessions_free_all(struct dsv_core *c);
/* Pages idle sessions hold in rank's pool, and evicting them (LRU first) until the pool has
 * need pages available. */
int64_t sessions_evictable_pages(const struct dsv_core *c, int rank);
void sessions_evict(struct dsv_core *c, int rank, int need);
/* the prefix of r's prompt its session holds: cut the session's sequence back to it and hand
 * it to r */
void sessions_take_prefix(struct dsv_core *c, struct request *r);
/* r (waiting, holding its session's sequence from sessions_take_prefix) and its session move
 * to rank `to`: the sequence's pages are copied into to's pool and freed in the old one
 * (dsv_kv_seq_move), the session's rank becomes `to` (for life, until it moves again), with a
 * log line saying why (the old rank had `avail` pages to give, `need` were needed). 0, or the
 * move's error (then nothing changed). */
int sessions_move(struct dsv_core *c, struct request *r, int to, int need, int64_t avail);
void sessions_publish(struct dsv_core *c);
/* Writes the sessions (of uid, or all when uid is (uid_t)-1) that changed since their last
 * snapshot (all of them when !only_dirty); returns how many were queued. */
int sessions_save(struct dsv_core *c, uid_t uid, bool only_dirty);
/* Sessions from the state directory (at start). */
int sessions_restore(struct dsv_core *c);

/* prefix.c */
/* Maps the cached pages that continue r's sequence with its prompt (at admission). */
void prefix_attach(struct dsv_core *c, struct request *r);
/* How many leading pages of r's prompt rank's pool has cached (what prefix_attach would map
 * there for a request that holds nothing yet; placement's measure, scheduler.c). */
int prefix_probe(const struct dsv_core *c, const struct request *r, int rank);
/* Registers the full pages r's prefill computed (after a step). */
void prefix_register(struct dsv_core *c, struct request *r);

/* scheduler.c */
/* The service of uid now (decayed), and adding to it. */
double sched_served(struct dsv_core *c, uid_t uid);
void sched_serve(struct dsv_core *c, uid_t uid, double tokens);
/* Builds the step's batch into c->b_*; the number of tokens (0: nothing to run). */
int sched_build(struct dsv_core *c);
/* The data-parallel rank a waiting request r (holding no pages) runs on: its session's when
 * the session has one (admission may then move the session to another rank when that one is
 * full: sessions_move); else, of the ranks whose pool can hold its prompt now (all of them
 * when none can), the one whose prefix cache gives the longest reuse, then the one running
 * the fewest sequences, then the fewest tokens, then the one with the most pages available,
 * then the first from place_next on (equals take turns). 0 with one pool. */
int sched_place(struct dsv_core *c, const struct request *r);

/* output.c */
/* After a forward pass: samples each sequence with a logits row (or decides its drafts, and
 * rolls its KV back past the first rejected one), applies stop rules, streams. */
void output_step(struct dsv_core *c);

/* constrain.c: structured output (no-ops for a request without in->grammar) */
/* At intake: refuses the combinations a schema does not support, indexes the vocabulary once,
 * gives r its matcher; false when r failed. */
bool constrain_admit(struct dsv_core *c, struct request *r);
/* r's row (raw or adjusted) with every token the matcher cannot take next at -inf, in the
 * sampler's buffer; the mask stays in c->gmask until the next call. NULL: no token can
 * continue (r failed). */
const float *constrain_row(struct dsv_core *c, struct request *r, const float *row);
bool constrain_allowed(const struct dsv_core *c, int32_t t);
/* The lowest allowed id of the last mask (a fallback when every allowed logit is -inf). */
int32_t constrain_first_allowed(const struct dsv_core *c);
/* Advances r's matcher by token t (emitted, not EOS); true when r ended (the value is
 * complete: finish reason stop; or t could not continue it). */
bool constrain_take(struct dsv_core *c, struct request *r, int32_t t);
/* At r's end: one log line with the time its masks took (what `make bench` reads). */
void constrain_report(const struct request *r);
void constrain_free(struct dsv_core *c);

/* draft.c: speculative decoding with the MTP layer (no-ops without exec.mtp) */
/* At admission, after the session's and the prefix cache's KV were mapped: whether r
 * speculates; cuts r's sequence back to where the MTP layer's records are valid. */
void draft_admit(struct dsv_core *c, struct request *r);
/* Drafts usable by r in this step (0 for a request that does not speculate now). */
int draft_ready(const struct dsv_core *c, const struct request *r);
/* Tokens r must have KV pages for to run a decode step now (its drafts' and, after it, the
 * MTP layer's chained drafts' positions). */
int draft_need(const struct dsv_core *c, const struct request *r, int k);
/* After output_step: one MTP pass over every speculating sequence of the batch (the records
 * of the positions its main pass computed), then the chained passes for drafts 2..k. */
void draft_step(struct dsv_core *c);
/* Frees r's drafts. */
void draft_free(struct request *r);
