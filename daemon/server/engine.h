/* The engine thread: owns the backend, the model, the KV pool and the tokenizer (none of
 * them is thread-safe), and runs a continuous-batching scheduler over dsv_model_forward.
 *
 * Each step packs one decode token of every running request plus chunks of waiting
 * prompts, up to a token budget (batch_tokens) and a sequence cap (max_running); a request
 * enters only when the KV pool can hold its prompt plus max_tokens (no preemption yet). The
 * event loop hands requests over through a mutex-protected queue; cancellations and dead
 * clients take effect at the next step. Output goes straight into each client's completion
 * ring (under the connection's lock); when a ring is full that request is parked (it gets
 * no decode tokens) until the client consumes, so one slow reader never stalls the batch.
 *
 * Sessions: a named token history of one uid plus the KV sequence that holds it, kept
 * between requests. A GENERATE naming a session (created on first use) runs on it: at
 * admission its sequence is cut back to the longest prefix it shares with the new prompt
 * (at most the prompt minus its last token, whose logits are needed; by default only tokens
 * a prefill computed, so that the output is bit-identical to a run without the session:
 * see struct session in engine.c) and only the rest is prefilled; when the request ends
 * the sequence, holding the prompt and the generated tokens that were fed back, returns to
 * the session. One request at a time per session
 * (EBUSY). Idle unpinned sessions lose their pages, least recently used first, when an
 * admission needs them (the name stays; the next request prefills from scratch); pinned
 * ones never do and count against a per-uid quota. Sessions belong to the uid, not to the
 * connection: they outlive their clients until closed, idle past the timeout, or replaced
 * at the max-sessions cap (least recently used idle unpinned first). SESSION_OPEN, CLOSE
 * and PIN travel the same queue as GENERATE, so one client's requests keep their order. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "daemon/server/conn.h"
#include "ipc/proto.h"

struct dsv_engine;

struct dsv_engine_opts {
        const char *model_dir;
        const char *backend;
        int threads;
        const char *numerics;
        int kv_cache_mb;
        int notify_fd; /* eventfd: written when the state changes or a drain completes */
};

/* Knobs the event loop may change on SIGHUP; read by the engine at every step. */
struct dsv_engine_tunables {
        int batch_tokens;
        int max_running;
        int max_sessions;           /* 0: sessions off (GENERATE ignores the name) */
        int session_pin_quota;      /* pinned sessions per uid */
        int session_idle_timeout_s; /* 0: never */
};

enum dsv_request_kind {
        DSV_REQUEST_GENERATE = 0,
        DSV_REQUEST_SESSION_OPEN,
        DSV_REQUEST_SESSION_CLOSE,
        DSV_REQUEST_SESSION_PIN,
        DSV_REQUEST_SESSION_LIST, /* the uid's sessions: answered with SESSION_LIST_REPLY */
        DSV_REQUEST_MAX,
};

/* A request as the event loop hands it over (the engine frees it): a generation, or a
 * session operation (kind, session, session_flags; no prompt). */
struct dsv_request_in {
        struct dsv_conn *conn; /* a reference, owned by the request */
        uint64_t id;
        enum dsv_request_kind kind;
        char session[DSV_NAME_MAX + 1]; /* validated name, or empty */
        uint32_t session_flags;         /* SESSION_OPEN / SESSION_PIN flags */
        int32_t *tokens;       /* token prompt, or NULL */
        uint32_t n_tokens;
        char *text;            /* text prompt, or NULL */
        uint32_t text_len;
        struct dsv_chat_msg *messages; /* chat prompt (strings in the same allocation), or NULL */
        uint32_t n_messages;
        uint32_t max_tokens;
        float temperature, top_p, min_p;
        int32_t top_k;
        uint64_t seed;
        uint32_t flags;
        int32_t stop_tokens[DSV_MAX_STOP_TOKENS];
        uint32_t n_stop_tokens;
        uint64_t t_submit_ns;
};

int dsv_engine_start(const struct dsv_engine_opts *opts, const struct dsv_engine_tunables *tun, struct dsv_engine **ret);
/* Stops the thread (cancelling whatever runs, without messages) and frees everything. */
void dsv_engine_free(struct dsv_engine *e);

enum dsv_daemon_state dsv_engine_state(const struct dsv_engine *e);
/* Loading progress in per mille, and the failure reason once state is FAILED. */
unsigned dsv_engine_load_permille(const struct dsv_engine *e);
const char *dsv_engine_error(const struct dsv_engine *e);
/* Monotonic time of the engine thread's last sign of life. */
uint64_t dsv_engine_heartbeat_ns(const struct dsv_engine *e);

/* Takes ownership of r (and its conn reference). */
void dsv_engine_submit(struct dsv_engine *e, struct dsv_request_in *r);
void dsv_engine_cancel(struct dsv_engine *e, struct dsv_conn *c, uint64_t id);
/* Something changed for parked streams or dead clients: look at the next step. */
void dsv_engine_kick(struct dsv_engine *e);
void dsv_engine_set_tunables(struct dsv_engine *e, const struct dsv_engine_tunables *tun);
/* Graceful stop: finish what runs until deadline_ns (monotonic), then end the rest with
 * DONE reason "shutdown". dsv_engine_idle() is true once nothing is left. */
void dsv_engine_drain(struct dsv_engine *e, uint64_t deadline_ns);
bool dsv_engine_idle(struct dsv_engine *e);

/* Model facts (valid once the state is READY). */
struct dsv_engine_info {
        char model[DSV_MODEL_NAME_MAX + 1];
        int32_t vocab_size, bos_id, eos_id, max_context, n_layers;
        uint64_t weight_bytes;
        uint32_t features;
        const char *backend, *numerics;
        int threads;
};
const struct dsv_engine_info *dsv_engine_info(const struct dsv_engine *e);
/* The tokenizer, or NULL (thread-safe for encode/decode once READY). */
const struct dsv_text *dsv_engine_text(const struct dsv_engine *e);
/* Fills the engine's part of a STATS reply. */
void dsv_engine_stats(struct dsv_engine *e, struct dsv_msg_stats_reply *s);
