/* The engine: continuous batching over the runtime, on a thread of its own, with sessions.
 * It knows nothing of the wire: requests come in as struct dsv_engine_request, and what a
 * request produces goes out as engine events (tokens with their text, done, error, a session
 * reply) to a sink that the server implements and encodes. A client is an opaque handle the
 * engine only hands back to the sink.
 *
 * Inside (daemon/engine/):
 *   engine.c     the thread: queues from the event loop, the step loop, drain, load
 *   intake.c     prompts tokenized and chat-encoded off the engine thread, in order
 *   request.c    the request state machine and its pending output
 *   sessions.c   named sessions of a uid: pins, quotas, LRU, idle timeout
 *   scheduler.c  admission to the KV pool and the batch of a step (decode tokens, chunks)
 *   output.c     sampling, stop rules, streaming detokenization, events to the sink
 *   draft.c      speculative decoding: the MTP layer's drafts, verified in the next step
 *   metrics.c    the counters (metrics.def), rates that decay with wall time
 *   text.c       the tokenizer adapter (text prompts, chat encoding, detokenization)
 *
 * Each step packs one decode token of every running request plus chunks of waiting
 * prompts, up to a token budget (batch_tokens) and a sequence cap (max_running); a request
 * enters only when the KV pool can hold its prompt plus max_tokens. Cancellations and dead
 * clients take effect at the next step. When the sink cannot take a request's output now
 * (a full completion ring), that request is parked (it gets no decode tokens) until the
 * server kicks the engine, so one slow reader never stalls the batch.
 *
 * Sessions: a named token history of one uid plus the KV sequence that holds it, kept
 * between requests. A GENERATE naming a session (created on first use) runs on it: at
 * admission its sequence is cut back to the longest prefix it shares with the new prompt
 * (at most the prompt minus its last token, whose logits are needed; by default only tokens
 * a prefill computed, so that the output is bit-identical to a run without the session: see
 * sessions.h) and only the rest is prefilled; when the request ends the sequence, holding
 * the prompt and the generated tokens that were fed back, returns to the session. One
 * request at a time per session (EBUSY; one that is going away is waited for). Idle unpinned
 * sessions lose their pages, least recently used first, when an admission needs them;
 * pinned ones never do and count against a per-uid quota. Sessions belong to the uid, not
 * to the connection. SESSION_OPEN, CLOSE and PIN travel the same queue as GENERATE, so one
 * client's requests keep their order.
 *
 * Speculative decoding (with the checkpoint's MTP layer, setting mtp): after each step the
 * MTP layer drafts the next k tokens of every decoding request (mtp_draft), and the next
 * step feeds the request's pending token and its drafts as decode rows of one pass; the
 * drafts are accepted by the rule of daemon/runtime/speculate.h, so greedy output is plain
 * decoding's token for token and sampled output keeps its distribution (draft.c). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "daemon/engine/metrics.h"
#include "daemon/runtime/sampler.h"

#define DSV_ENGINE_NAME_MAX 64 /* session names (bytes, without NUL) */
#define DSV_ENGINE_MAX_STOP_TOKENS 64
#define DSV_ENGINE_MAX_STOP_STRINGS 8       /* = DSV_STOP_MAX_STRINGS (stop.h) */
#define DSV_ENGINE_STOP_STRING_MAX 64       /* bytes; = DSV_STOP_MAX_BYTES */
#define DSV_ENGINE_MAX_LOGIT_BIAS 300

/* How long a rank waits for the others at a collective before the group is broken (a rank
 * stuck elsewhere; a rank that fails aborts the group at once). */
#define DSV_ENGINE_RANK_TIMEOUT_MS 300000

struct dsv_engine;
struct dsv_text;

struct dsv_engine_opts {
        const char *model_dir;
        const char *backend; /* cpu, cuda, auto */
        int device;          /* GPU index */
        int threads;         /* CPU threads; 0: all (split between the ranks) */
        /* CPU ranks in this process (daemon/runtime/ranks.h; 0 or 1: one), in the layout ep,dp,
         * or ep,tp when tp (attention heads, dense layers and lm_head split too) */
        int ranks;
        bool tp;
        /* several hosts (dsv32d --nodes N; NULL: one): this node 0's ranks of the experts' group
         * and of the jobs' channel (dsv_rank_group_open_nodes); the caller keeps them */
        struct dsv_comm *node_ep, *node_ctl;
        /* with node_ep: attention data-parallel over the nodes (--parallel ep,dp: each node's
         * pool its own sequences'), else replicated */
        bool node_dp;
        const char *numerics;
        const char *mtp;     /* the MTP layer: on, off, auto (on where it pays: not on the CPU backend) */
        bool graphs_off;     /* decode steps never as graphs (cuda-graphs=no; dsv_model_opts) */
        uint64_t kv_cache_bytes;
        int max_pass_tokens;          /* tokens of one forward pass at most (0: sized from the weights) */
        const char *state_dir;        /* sessions saved here and restored at start (NULL: off) */
        uint64_t snapshot_max_bytes;  /* disk cap of the snapshots (0: none) */
        int notify_fd; /* eventfd: written when the state changes or a drain completes */
};

/* Knobs the event loop may change on SIGHUP; read by the engine at every step. */
struct dsv_engine_tunables {
        int batch_tokens;
        int max_running;
        int max_sessions;           /* 0: sessions off (GENERATE ignores the name) */
        int session_pin_quota;      /* pinned sessions per uid */
        int session_idle_timeout_s; /* 0: never */
        int max_sessions_per_uid;   /* 0: no cap of its own */
        bool prefix_cache;          /* content-addressed reuse of full KV pages */
        bool prefix_cache_share;    /* across uids (else each uid has its own) */
        int snapshot_interval_s;    /* sessions changed since their last save are written this often (0: only at stop) */
        int mtp_draft;              /* drafts per step with the MTP layer (at least 1) */
};

enum dsv_engine_state {
        DSV_ENGINE_LOADING,
        DSV_ENGINE_READY,
        DSV_ENGINE_FAILED,
        /* the device failed while serving (a sticky CUDA error): every request ended with an
         * ERROR naming it (dsv_engine_error), new ones get it too; the daemon must exit once
         * dsv_engine_idle() (the ERRORs delivered) */
        DSV_ENGINE_LOST,
        DSV_ENGINE_STATE_MAX,
};

enum dsv_request_kind {
        DSV_REQUEST_GENERATE = 0,
        DSV_REQUEST_SESSION_OPEN,
        DSV_REQUEST_SESSION_CLOSE,
        DSV_REQUEST_SESSION_PIN,
        DSV_REQUEST_SESSIONS_SAVE, /* write the uid's sessions (uid 0: all) to the state directory now */
        DSV_REQUEST_SESSION_LIST,  /* the uid's sessions: answered with a SESSION_LIST event */
        DSV_REQUEST_MAX,
};

/* SESSION_OPEN: fail when it exists; SESSION_PIN: pin (else unpin) */
#define DSV_ENGINE_SESSION_EXCL 0x1u
#define DSV_ENGINE_SESSION_PIN 0x1u
/* SESSION_OPEN: private to the opening client: closed (pinned or not) once the sink says that
 * client is gone and no request runs on it */
#define DSV_ENGINE_SESSION_OPEN_PRIVATE 0x2u

/* A string of a chat request (not NUL-terminated; p NULL: absent). */
struct dsv_engine_str {
        const char *p;
        uint32_t len;
};

/* A tool call of an assistant message: arguments is a JSON object's text. */
struct dsv_engine_tool_call {
        struct dsv_engine_str id, name, arguments;
};

/* A tool the model may call: parameters is its JSON schema as text (checked at intake). */
struct dsv_engine_tool {
        struct dsv_engine_str name, description, parameters;
};

/* A chat message of a prompt. */
struct dsv_engine_msg {
        const char *role;
        uint32_t role_len;
        const char *content;
        uint32_t content_len;
        struct dsv_engine_str reasoning;    /* assistant: its reasoning_content */
        const struct dsv_engine_tool_call *tool_calls; /* assistant */
        uint32_t n_tool_calls;
        struct dsv_engine_str tool_call_id; /* tool: the call it answers */
};

/* The typed events of a chat request's output (the parser's, daemon/tokenizer/chat.h): the
 * numbering is the wire's (ipc/proto.h enum dsv_chat_event_kind). */
enum dsv_engine_chat_kind {
        DSV_ENGINE_CHAT_REASONING,  /* text: a reasoning delta */
        DSV_ENGINE_CHAT_CONTENT,    /* text: a content delta */
        DSV_ENGINE_CHAT_TOOL_BEGIN, /* index, call_id, name */
        DSV_ENGINE_CHAT_TOOL_ARGS,  /* index; text: an arguments delta */
        DSV_ENGINE_CHAT_TOOL_END,   /* index */
        DSV_ENGINE_CHAT_ERROR,      /* message; text: the raw output concerned */
        DSV_ENGINE_CHAT_MAX,
};

/* A request as the server hands it over (the engine frees it and every buffer in it): a
 * generation, or a session operation (kind, session, session_flags; no prompt). Exactly one
 * of tokens, text or messages is set for a generation. */
struct dsv_grammar;

struct dsv_engine_request {
        void *client; /* the sink's handle, with a reference the engine drops (sink.unref) */
        uid_t uid;
        uint64_t id;
        enum dsv_request_kind kind;
        char session[DSV_ENGINE_NAME_MAX + 1]; /* validated name, or empty */
        uint32_t session_flags;
        int32_t *tokens;
        uint32_t n_tokens;
        char *text;
        uint32_t text_len;
        struct dsv_engine_msg *messages; /* strings and tool calls in the same allocation */
        uint32_t n_messages;
        struct dsv_engine_tool *tools; /* chat: strings in the same allocation */
        uint32_t n_tools;
        bool chat_events; /* chat: parse the output into DSV_ENGINE_EVENT_CHAT events */
        uint32_t max_tokens;
        struct dsv_sampling sampling;
        bool stream;       /* tokens as they come (else one batch before DONE) */
        bool add_bos;      /* text prompt: prepend BOS */
        bool thinking;     /* chat: thinking mode */
        bool ignore_eos;
        bool reuse_output; /* session: reuse the generated tokens' KV too (not bit-exact) */
        int32_t priority;  /* higher is served first and preempted last (default 0) */
        int32_t stop_tokens[DSV_ENGINE_MAX_STOP_TOKENS];
        uint32_t n_stop_tokens;
        /* matched on the output text (daemon/engine/stop.h); needs the tokenizer */
        char stop_strings[DSV_ENGINE_MAX_STOP_STRINGS][DSV_ENGINE_STOP_STRING_MAX];
        uint32_t stop_string_len[DSV_ENGINE_MAX_STOP_STRINGS];
        uint32_t n_stop_strings;
        /* the logprob of each generated token and its top_logprobs (<= DSV_LOGPROBS_MAX)
         * alternatives, from the raw logits (daemon/runtime/sampler.h) */
        bool logprobs;
        uint32_t top_logprobs;
        /* sampling.bias points here (ids checked against the vocabulary at intake) */
        struct dsv_logit_bias logit_bias[DSV_ENGINE_MAX_LOGIT_BIAS];
        /* structured output: a JSON schema's text (schema_len bytes), compiled by intake into
         * grammar (daemon/grammar/grammar.h), which then masks every sampled token */
        char *schema;
        uint32_t schema_len;
        struct dsv_grammar *grammar;
        uint64_t t_submit_ns;
};

enum dsv_engine_finish {
        DSV_ENGINE_FINISH_STOP,      /* EOS or a stop token */
        DSV_ENGINE_FINISH_LENGTH,    /* max_tokens */
        DSV_ENGINE_FINISH_CANCELLED, /* cancelled, or the client went away */
        DSV_ENGINE_FINISH_CONTEXT,   /* the context window is full */
        DSV_ENGINE_FINISH_SHUTDOWN,  /* the daemon stopped first */
        DSV_ENGINE_FINISH_STOP_STRING, /* a stop string matched (done.stop_index) */
        DSV_ENGINE_FINISH_TOOL_CALLS,  /* chat_events: EOS (or a stop token) right after a tool call */
        DSV_ENGINE_FINISH_MAX,
};

/* session reply flags */
#define DSV_ENGINE_SESSION_PINNED 0x1u
#define DSV_ENGINE_SESSION_BUSY 0x2u
#define DSV_ENGINE_SESSION_CREATED 0x4u
#define DSV_ENGINE_SESSION_PRIVATE 0x8u /* list rows: opened private */

/* One session in a SESSION_LIST event. */
struct dsv_engine_session_row {
        char name[DSV_ENGINE_NAME_MAX + 1];
        uint32_t flags; /* DSV_ENGINE_SESSION_PINNED, _BUSY, _PRIVATE */
        uint32_t n_tokens, n_pages;
        uint64_t idle_ms; /* since its last use (0 while busy) */
        int rank;         /* the data-parallel rank whose KV pool holds it; -1: one pool, or not placed yet */
};

enum dsv_engine_event_type {
        DSV_ENGINE_EVENT_TOKENS,
        DSV_ENGINE_EVENT_DONE,
        DSV_ENGINE_EVENT_ERROR,
        DSV_ENGINE_EVENT_SESSION,
        DSV_ENGINE_EVENT_SESSION_LIST,
        DSV_ENGINE_EVENT_CHAT,
        DSV_ENGINE_EVENT_MAX,
};

struct dsv_engine_event {
        enum dsv_engine_event_type type;
        uint64_t id;
        union {
                /* ids[0, n) with their text: text[0, text_end[i]) is the text through ids[i];
                 * text[text_end[n-1], text_len) (all of it when n == 0) is text that belongs to no
                 * token of this event (the detokenizer's final flush). text_end never splits a
                 * UTF-8 character. The sink stores in *text_sent how many bytes of text it
                 * delivered (at least text_end[k-1] when it delivered k tokens; it may deliver
                 * part of token k's text before token k's id). With logprobs (the request asked;
                 * else NULL): logprobs[i] is ids[i]'s, and top[i * top_n, (i + 1) * top_n) its
                 * top_n alternatives, descending. */
                struct {
                        const int32_t *ids;
                        uint32_t n;
                        const float *logprobs;
                        const struct dsv_logprob *top;
                        uint32_t top_n;
                        const char *text;
                        const uint32_t *text_end;
                        uint32_t text_len;
                        uint32_t *text_sent;
                } tokens;
                struct {
                        enum dsv_engine_finish reason;
                        uint32_t prompt_tokens, completion_tokens, cached_tokens;
                        uint64_t queue_us, prefill_us, decode_us;
                        uint32_t preempted; /* times its KV pages were taken back and recomputed */
                        /* speculative decoding: drafts the MTP layer proposed for it and how many
                         * of them the main model accepted (0, 0 without) */
                        uint32_t spec_drafted, spec_accepted;
                        uint32_t stop_index; /* DSV_ENGINE_FINISH_STOP_STRING: which string */
                        uid_t uid;
                } done;
                struct {
                        int code; /* positive errno */
                        const char *message;
                        uid_t uid;
                } error;
                struct {
                        const char *name;
                        uint32_t flags; /* DSV_ENGINE_SESSION_PINNED, _BUSY, _CREATED */
                        uint32_t n_tokens, n_pages;
                } session;
                struct { /* the uid's sessions, least recently used first */
                        const struct dsv_engine_session_row *rows;
                        uint32_t n;
                } session_list;
                /* One chat event of a request with chat_events, in output order. The sink returns
                 * how many bytes of text it delivered (it may cut a long one at a UTF-8
                 * boundary: the engine calls again with the rest, which then is a delta of the
                 * same kind), 0 for an event without text, or -EAGAIN. */
                struct {
                        enum dsv_engine_chat_kind kind;
                        uint32_t index;
                        const char *text;
                        uint32_t len;
                        const char *call_id; /* NUL-terminated, TOOL_BEGIN */
                        const char *name;    /* TOOL_BEGIN */
                        uint32_t name_len;
                        const char *message; /* ERROR */
                        uint32_t message_len;
                } chat;
        };
};

/* What the server gives the engine to reach clients. Called on the engine thread. */
struct dsv_engine_sink {
        void *ud;
        /* Delivers an event. TOKENS: returns how many tokens were delivered (k of n) and sets
         * *text_sent, or -EAGAIN when nothing could be delivered now (the request parks until
         * the next kick). Other events: 0 or -EAGAIN. Any other negative errno: the client is
         * gone, drop its output. */
        int (*emit)(void *ud, void *client, const struct dsv_engine_event *ev);
        /* The client hung up or broke its connection: its requests end. */
        bool (*gone)(void *ud, void *client);
        /* References to a client the engine holds while a request or cancellation is queued. */
        void (*ref)(void *ud, void *client);
        void (*unref)(void *ud, void *client);
        /* A request of this client ended (per-uid accounting); called once per request, before
         * its reference is dropped. */
        void (*request_end)(void *ud, void *client);
};

int dsv_engine_start(const struct dsv_engine_opts *opts, const struct dsv_engine_tunables *tun,
                     const struct dsv_engine_sink *sink, struct dsv_engine **ret);
/* Stops the threads (ending whatever runs, without events) and frees everything. */
void dsv_engine_free(struct dsv_engine *e);

enum dsv_engine_state dsv_engine_state(const struct dsv_engine *e);
/* Loading progress in per mille, and the failure reason once the state is FAILED or LOST. */
unsigned dsv_engine_load_permille(const struct dsv_engine *e);
/* While loading: bytes read from disk so far, and the rates from disk and into device memory
 * (GB/s, 1e9 bytes; device 0 on a host-memory backend or before the first upload). */
struct dsv_engine_load_figures {
        uint64_t bytes_read, total;
        double disk_gbs, device_gbs;
};
void dsv_engine_load_figures(const struct dsv_engine *e, struct dsv_engine_load_figures *f);
const char *dsv_engine_error(const struct dsv_engine *e);
/* Monotonic time of the engine thread's last sign of life. */
uint64_t dsv_engine_heartbeat_ns(const struct dsv_engine *e);

/* Takes ownership of r. A text or chat prompt is encoded off the engine thread first; every
 * request and cancellation keeps its order. */
void dsv_engine_submit(struct dsv_engine *e, struct dsv_engine_request *r);
void dsv_engine_cancel(struct dsv_engine *e, void *client, uint64_t id);
/* Something changed for parked streams or dead clients: look at the next step. */
void dsv_engine_kick(struct dsv_engine *e);
void dsv_engine_set_tunables(struct dsv_engine *e, const struct dsv_engine_tunables *tun);
/* Graceful stop: finish what runs until deadline_ns (monotonic), then end the rest with
 * reason shutdown. dsv_engine_idle() is true once nothing is left. */
void dsv_engine_drain(struct dsv_engine *e, uint64_t deadline_ns);
bool dsv_engine_idle(struct dsv_engine *e);
/* Requests that the drain deadline cut off (0 when every request finished on its own). */
uint64_t dsv_engine_drain_cut(const struct dsv_engine *e);

/* Model facts (valid once the state is READY). */
struct dsv_engine_info {
        char model[256];
        int32_t vocab_size, bos_id, eos_id, max_context, n_layers;
        uint64_t weight_bytes;
        bool text, chat;          /* a tokenizer, and chat encoding */
        const char *backend, *numerics;
        const char *backend_note; /* auto: why the GPU backend was not used */
        bool mtp;                 /* speculative decoding with the MTP layer */
        const char *mtp_note;     /* why not ("" when it is on) */
        int threads;              /* rank 0's */
        int ranks;                /* CPU ranks (1: one) */
        char layout[16];          /* their layout ("" with one rank) */
        uint64_t rank_weight_min, rank_weight_max; /* the fewest and the most weight bytes of one rank */
        uint64_t kv_pages_total, kv_page_tokens, kv_bytes_per_token;
        /* a backend with its own memory (a GPU): its device as the plugin describes it, the
         * weights and the KV pool held there; "" and 0 on the CPU backend */
        char device[128];
        uint64_t device_weight_bytes, device_kv_bytes;
};
const struct dsv_engine_info *dsv_engine_info(const struct dsv_engine *e);
/* The tokenizer, or NULL (thread-safe for encode/decode once READY). */
const struct dsv_text *dsv_engine_text(const struct dsv_engine *e);
/* The backend's device memory now (any thread, once READY): -ENODEV on the CPU backend, the
 * backend's error once its device failed. */
int dsv_engine_device_memory(const struct dsv_engine *e, uint64_t *free_bytes, uint64_t *total_bytes);
/* The engine's metrics now (any thread). */
void dsv_engine_metrics(struct dsv_engine *e, struct dsv_engine_metrics *m);
