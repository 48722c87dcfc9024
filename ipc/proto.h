/* The messages of the dsv32d wire protocol (ipc/PROTOCOL.md) and their msgpack codec.
 *
 * Every payload is one msgpack map with small unsigned integer keys. Each message type has
 * one field table (ipc/proto.c) that drives both the encoder and the decoder: key, type,
 * whether it is required, its cap (string bytes, array entries) and its default. Decoding
 * is defensive: the payload is first walked by a bounds-checking scanner (every array or
 * map count must fit in the bytes that remain, nesting is capped) before msgpack-c
 * allocates anything, then each field is type-checked and capped. Unknown keys below 128
 * are ignored (optional additions of newer peers), unknown keys 128..255 are rejected
 * (additions a peer must understand). Strings and token arrays of a decoded message borrow
 * memory from the payload buffer and from the message's zone: valid until dsv_msg_release()
 * and while the payload buffer lives. Strings are not NUL-terminated unless they are
 * fixed-size char arrays (names). */
#pragma once

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum dsv_msg_type {
        DSV_MSG_HELLO = 1,    /* socket, client -> daemon */
        DSV_MSG_WELCOME = 2,  /* socket, daemon -> client, with the memfd */
        DSV_MSG_PING = 16,    /* submission ring: client -> daemon */
        DSV_MSG_GENERATE = 17,
        DSV_MSG_CANCEL = 18,
        DSV_MSG_TOKENIZE = 19,
        DSV_MSG_DETOKENIZE = 20,
        DSV_MSG_STATS = 21,
        DSV_MSG_SESSION_OPEN = 22,
        DSV_MSG_SESSION_CLOSE = 23,
        DSV_MSG_SESSION_PIN = 24,
        DSV_MSG_SESSION_LIST = 25,  /* 1.2 */
        DSV_MSG_SESSION_SAVE = 26,  /* 1.2 */
        DSV_MSG_PONG = 48,    /* completion ring: daemon -> client */
        DSV_MSG_TOKENS = 49,
        DSV_MSG_DONE = 50,
        DSV_MSG_ERROR = 51,   /* also a datagram on the socket before the daemon closes */
        DSV_MSG_STATS_REPLY = 52,
        DSV_MSG_TOKENIZE_REPLY = 53,
        DSV_MSG_DETOKENIZE_REPLY = 54,
        DSV_MSG_SESSION_REPLY = 55,
        DSV_MSG_SESSION_LIST_REPLY = 56, /* 1.2 */
        DSV_MSG_CHAT_EVENT = 57,         /* feature 0x20: a typed event of a chat request's output */
};

#define DSV_NAME_MAX 64          /* client names, session names (bytes, without NUL) */
#define DSV_MODEL_NAME_MAX 255
#define DSV_ERROR_MESSAGE_MAX 1024
#define DSV_MAX_TOKENS_ARRAY (1u << 21)
#define DSV_MAX_RANKS 256u /* ranks of one dsv32d (--ranks); SESSION_LIST_REPLY rows' rank is below it */
#define DSV_MAX_RANK_PAGES (3u * DSV_MAX_RANKS) /* STATS_REPLY key 64: three numbers for each of at most 256 ranks */
#define DSV_MAX_STOP_TOKENS 64
#define DSV_MAX_STOP_STRINGS 8       /* GENERATE.stop_strings entries */
#define DSV_MAX_STOP_STRING_BYTES 64 /* bytes of one stop string (at least 1) */
#define DSV_MAX_LOGIT_BIAS 300       /* GENERATE.logit_bias entries */
#define DSV_MAX_CHAT_MESSAGES 1024
#define DSV_MAX_TOOLS 128           /* GENERATE.tools entries (feature 0x20) */
#define DSV_MAX_TOOL_CALLS 64       /* tool_calls of one assistant message (feature 0x20) */
#define DSV_MAX_TOOL_NAME 64        /* bytes of a tool's name (the daemon checks) */
#define DSV_MAX_TOOL_DESCRIPTION 8192 /* bytes of a tool's description (the daemon checks) */
#define DSV_MAX_TOOL_SCHEMA 65536   /* bytes of a tool's parameters schema, JSON text (the daemon checks) */
#define DSV_MAX_TOOL_CALL_ID 64     /* bytes of a tool call id (the daemon checks) */
#define DSV_MAX_TEXT (32u << 20)
#define DSV_MSGPACK_MAX_DEPTH 8
#define DSV_MAX_SESSION_ROWS 65536

/* daemon state (WELCOME, STATS_REPLY) */
enum dsv_daemon_state {
        DSV_STATE_LOADING = 0,
        DSV_STATE_READY = 1,
        DSV_STATE_DRAINING = 2,
        DSV_STATE_FAILED = 3,
        DSV_STATE_MAX,
};

/* WELCOME.features */
#define DSV_FEATURE_TEXT 0x1u /* tokenizer: text prompts, TOKENIZE, DETOKENIZE */
#define DSV_FEATURE_CHAT 0x2u /* chat messages */
#define DSV_FEATURE_SESSIONS 0x4u /* KV-cache sessions (GENERATE.session, SESSION_*) */
#define DSV_FEATURE_MTP 0x8u /* speculative decoding with the checkpoint's MTP layer is on */
#define DSV_FEATURE_LOGPROBS 0x10u /* 1.2: GENERATE keys 14..19 (stop strings, penalties, logit bias,
                                    * logprobs) understood; TOKENS carries keys 3..5 when asked */
#define DSV_FEATURE_CHAT_EVENTS 0x20u /* tools, tool messages, GENERATE flag 0x40 (CHAT_EVENT
                                       * records) understood */
#define DSV_FEATURE_SCHEMA 0x40u /* GENERATE key 21 (a JSON schema constraining the output) understood */

/* GENERATE.flags */
#define DSV_GEN_SEED 0x1u       /* seed is valid (else the daemon picks one) */
#define DSV_GEN_NO_STREAM 0x2u  /* one TOKENS record before DONE instead of one per step */
#define DSV_GEN_NO_BOS 0x4u     /* text prompt: do not prepend BOS */
#define DSV_GEN_THINKING 0x8u   /* chat: thinking mode */
#define DSV_GEN_IGNORE_EOS 0x10u /* do not stop at the model's EOS (benchmarks) */
#define DSV_GEN_SESSION_REUSE_OUTPUT 0x20u /* session: reuse the generated tokens' KV too (not bit-exact) */
#define DSV_GEN_CHAT_EVENTS 0x40u /* feature 0x20, chat: the output parsed into CHAT_EVENT records too */

/* CHAT_EVENT.type (feature 0x20) */
enum dsv_chat_event_kind {
        DSV_CHAT_EV_REASONING = 0,    /* text: more reasoning */
        DSV_CHAT_EV_CONTENT = 1,      /* text: more answer */
        DSV_CHAT_EV_TOOL_BEGIN = 2,   /* a tool call starts: index, call_id, name */
        DSV_CHAT_EV_TOOL_ARGS = 3,    /* index; text: more of its arguments (a JSON object's text) */
        DSV_CHAT_EV_TOOL_END = 4,     /* index: its arguments are complete */
        DSV_CHAT_EV_PARSE_ERROR = 5,  /* message: what is malformed; text: the raw output concerned */
        DSV_CHAT_EV_MAX,
};

/* SESSION_OPEN.flags */
#define DSV_SESSION_OPEN_EXCL 0x1u /* fail with EEXIST when the session exists */
#define DSV_SESSION_OPEN_PRIVATE 0x2u /* 1.2: close it as soon as this connection is gone and it is idle */
/* SESSION_PIN.flags */
#define DSV_SESSION_PIN_SET 0x1u   /* pin (counts against the uid's quota); without it: unpin */
/* SESSION_REPLY.flags */
#define DSV_SESSION_PINNED 0x1u
#define DSV_SESSION_BUSY 0x2u      /* a request runs on it (CLOSE: it keeps its pages until it ends) */
#define DSV_SESSION_CREATED 0x4u   /* OPEN: this call created it */

/* Session names: 1..64 bytes of [A-Za-z0-9._:@+=-] (the daemon may set a lower cap). */
static inline bool dsv_session_name_valid(const char *s, size_t n) {
        if (n == 0 || n > DSV_NAME_MAX)
                return false;
        for (size_t i = 0; i < n; i++) {
                char ch = s[i];
                if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
                      ch == '_' || ch == ':' || ch == '@' || ch == '+' || ch == '=' || ch == '-'))
                        return false;
        }
        return true;
}

/* TOKENIZE.flags */
#define DSV_TOK_ADD_BOS 0x1u

/* DONE.reason */
enum dsv_finish {
        DSV_FINISH_STOP = 0,      /* EOS or a stop token */
        DSV_FINISH_LENGTH = 1,    /* max_tokens */
        DSV_FINISH_CANCELLED = 2, /* CANCEL */
        DSV_FINISH_CONTEXT = 3,   /* the context window is full */
        DSV_FINISH_SHUTDOWN = 4,  /* the daemon stopped before the request finished */
        DSV_FINISH_STOP_STRING = 5, /* 1.2: a stop string (DONE.stop_index says which) */
        DSV_FINISH_TOOL_CALLS = 6,  /* feature 0x20, GENERATE flag 0x40: the model ended on a tool call */
        DSV_FINISH_MAX,
};

struct dsv_msg_hello {
        uint32_t version_major, version_minor;
        char name[DSV_NAME_MAX + 1];
        uint32_t sub_bytes, comp_bytes; /* ring capacities wanted (0: default) */
        uint32_t flags;                 /* zero */
};

struct dsv_msg_welcome {
        uint32_t version_major, version_minor;
        char daemon_version[32];
        uint32_t pid;
        uint32_t state; /* enum dsv_daemon_state */
        char model[DSV_MODEL_NAME_MAX + 1];
        int32_t vocab_size, bos_id, eos_id, max_context;
        uint32_t features;
        uint64_t shm_size;
        uint32_t max_tokens_limit; /* per-request cap for this uid */
        uint32_t max_prompt_bytes;
};

struct dsv_msg_ping {
        uint64_t id;
        uint64_t t_ns;        /* client's clock, echoed */
        uint64_t t_daemon_ns; /* PONG only */
};

struct dsv_str { /* a string of an array field (not NUL-terminated) */
        const char *p;
        uint32_t len;
};

/* feature 0x20: a tool call of an assistant message: maps {0 id, 1 name, 2 arguments (JSON text)} */
struct dsv_tool_call {
        struct dsv_str id, name, arguments;
};

/* feature 0x20: a tool the model may call (GENERATE.tools): maps {0 name, 1 description, 2
 * parameters (a JSON schema as text)} */
struct dsv_tool {
        struct dsv_str name, description, parameters;
};

struct dsv_chat_msg {
        const char *role;
        uint32_t role_len;
        const char *content;
        uint32_t content_len;
        /* feature 0x20 (older peers ignore these keys): 2 reasoning_content, 3 tool_calls, 4 tool_call_id */
        struct dsv_str reasoning;
        const struct dsv_tool_call *tool_calls;
        uint32_t n_tool_calls;
        struct dsv_str tool_call_id;
};

struct dsv_bias { /* GENERATE.logit_bias entry */
        int32_t id;
        float bias;
};

struct dsv_msg_generate {
        uint64_t id;
        const char *text;
        uint32_t text_len;
        const int32_t *tokens;
        uint32_t n_tokens;
        const struct dsv_chat_msg *messages;
        uint32_t n_messages;
        uint32_t max_tokens;
        float temperature; /* default 1; 0 = greedy */
        float top_p;       /* default 1 */
        int32_t top_k;     /* default 0 = off */
        float min_p;       /* default 0 = off */
        uint64_t seed;
        uint32_t flags;    /* DSV_GEN_* */
        const int32_t *stop_tokens;
        uint32_t n_stop_tokens;
        char session[DSV_NAME_MAX + 1];
        int32_t priority;  /* 1.2: higher is served first and preempted last (default 0) */
        const struct dsv_str *stop_strings; /* 1.2: matched on the output text, never shown */
        uint32_t n_stop_strings;
        float repetition_penalty; /* 1.2: default 1; [0, 10], 0 and 1 are off */
        float frequency_penalty;  /* 1.2: default 0; [-2, 2] */
        float presence_penalty;   /* 1.2: default 0; [-2, 2] */
        const struct dsv_bias *logit_bias; /* 1.2: ids < vocab_size, bias in [-100, 100] */
        uint32_t n_logit_bias;
        bool has_logprobs;  /* 1.2: key 19 present: each token's logprob ... */
        uint32_t logprobs;  /* ... and this many top alternatives, 0..DSV_MAX_TOP_LOGPROBS */
        const struct dsv_tool *tools; /* feature 0x20: key 20, chat: the tools the model may call */
        uint32_t n_tools;
        const char *schema; /* feature 0x40: key 21, a JSON schema the output must match (NULL: none) */
        uint32_t schema_len; /* at most DSV_MAX_SCHEMA bytes */
};
#define DSV_MAX_SCHEMA (256u << 10)
#define DSV_MAX_TOP_LOGPROBS 20
#define DSV_PRIORITY_MAX 100 /* GENERATE.priority is within -100..100; above 0 only for root */

struct dsv_msg_id {
        uint64_t id;
};

struct dsv_msg_tokenize {
        uint64_t id;
        const char *text;
        uint32_t text_len;
        uint32_t flags;
};

struct dsv_msg_tokens { /* DETOKENIZE, TOKENS, TOKENIZE_REPLY */
        uint64_t id;
        const int32_t *tokens;
        uint32_t n_tokens;
        const char *text; /* TOKENS: the decoded text of these tokens, when available */
        uint32_t text_len;
        /* TOKENS of a request that asked for logprobs (1.2; the decoder checks the lengths):
         * logprobs[i] is tokens[i]'s (n_logprobs == n_tokens), and its N alternatives are
         * top_ids / top_logprobs[i * N, (i + 1) * N), descending, where N = n_top / n_tokens
         * (n_top a multiple of n_tokens, N <= DSV_MAX_TOP_LOGPROBS) */
        const float *logprobs;
        uint32_t n_logprobs;
        const int32_t *top_ids;
        uint32_t n_top;
        const float *top_logprobs;
        uint32_t n_top_logprobs;
};

struct dsv_msg_session {
        uint64_t id;
        char name[DSV_NAME_MAX + 1];
        uint32_t flags;
        uint32_t n_tokens; /* SESSION_REPLY: tokens whose KV it holds */
        uint32_t n_pages;  /* SESSION_REPLY: KV pages it holds */
};

struct dsv_session_row { /* SESSION_LIST_REPLY */
        char name[DSV_NAME_MAX + 1];
        uint32_t flags; /* DSV_SESSION_PINNED, DSV_SESSION_BUSY, DSV_SESSION_PRIVATE_ROW */
        uint32_t n_tokens, n_pages;
        uint64_t idle_ms;
        /* key 5: the data-parallel rank whose KV pool holds it (< DSV_MAX_RANKS); has_rank false:
         * left out (one pool, or not placed yet) */
        bool has_rank;
        uint32_t rank;
};
#define DSV_SESSION_PRIVATE_ROW 0x8u /* SESSION_LIST_REPLY: opened with DSV_SESSION_OPEN_PRIVATE */

struct dsv_msg_session_list {
        uint64_t id;
        const struct dsv_session_row *rows;
        uint32_t n_rows;
        uint32_t n_total; /* sessions the uid has (more than n_rows when they did not fit a record) */
};

struct dsv_msg_done {
        uint64_t id;
        uint32_t reason; /* enum dsv_finish */
        uint32_t prompt_tokens, completion_tokens, cached_tokens;
        uint64_t queue_us, prefill_us, decode_us;
        /* protocol 1.2 (0 from older daemons) */
        uint32_t preempted;                   /* times its KV pages were taken back and recomputed */
        uint32_t spec_drafted, spec_accepted; /* speculative decoding: drafts verified, accepted */
        uint32_t stop_index; /* reason DSV_FINISH_STOP_STRING: the index of the string that matched */
};

/* CHAT_EVENT (feature 0x20): one typed event of a chat request's output */
struct dsv_msg_chat_event {
        uint64_t id;
        uint32_t type;  /* enum dsv_chat_event_kind */
        const char *text; /* REASONING, CONTENT, TOOL_ARGS: the delta; PARSE_ERROR: the raw text */
        uint32_t text_len;
        uint32_t index; /* TOOL_*: the call's index in this answer (0, 1, ...) */
        char call_id[DSV_NAME_MAX + 1]; /* TOOL_BEGIN */
        const char *name; /* TOOL_BEGIN: the function's name */
        uint32_t name_len;
        const char *message; /* PARSE_ERROR */
        uint32_t message_len;
};

struct dsv_msg_error {
        uint64_t id; /* 0: the connection itself */
        int32_t code; /* positive errno value */
        const char *message;
        uint32_t message_len;
};

struct dsv_msg_detokenize_reply {
        uint64_t id;
        const char *text;
        uint32_t text_len;
};

struct dsv_msg_stats_reply {
        uint64_t id;
        uint32_t state, pid;
        uint64_t uptime_ms;
        uint32_t load_permille;
        char daemon_version[32];
        char model[DSV_MODEL_NAME_MAX + 1];
        char backend[16];
        char numerics[16];
        uint32_t threads;
        int32_t vocab_size, n_layers, max_context;
        uint64_t weight_bytes;
        uint64_t kv_pages_total, kv_pages_used, kv_page_tokens, kv_bytes_per_token;
        uint64_t rss_bytes;
        uint32_t clients, requests_running, requests_waiting, requests_parked;
        uint64_t requests_total, prompt_tokens_total, generated_tokens_total, steps_total;
        float prefill_tok_s, decode_tok_s;
        uint64_t loop_wakeups, loop_sleeps, doorbells_sent, doorbells_received;
        uint32_t spin_us;
        uint32_t features;
        /* sessions (protocol 1.1) */
        uint32_t sessions, sessions_pinned;
        uint64_t session_pages;      /* KV pages held by sessions */
        uint64_t cached_tokens_total; /* prompt tokens reused from sessions (not prefilled) */
        uint64_t sessions_evicted;   /* times an idle session lost its pages to make room */
        /* protocol 1.2 */
        uint32_t requests_prefilling;     /* admitted, prompt being prefilled */
        uint32_t rate_window_ms;          /* the rates are over this much wall time (0: last busy second) */
        uint64_t prefilled_tokens_total;  /* prompt tokens run through the model */
        uint64_t preemptions_total;        /* times a request's KV pages were taken back */
        uint64_t prefix_cache_tokens_total; /* prompt tokens mapped from the prefix cache */
        uint64_t spec_drafted_total, spec_accepted_total; /* speculative decoding (MTP) */
        uint64_t kv_pages_cached;          /* pages no request holds, kept for the prefix cache */
        /* sums over finished generations (mean: the sum over requests_done_total) */
        uint64_t requests_done_total;
        uint64_t queue_us_total;           /* submission to admission */
        uint64_t ttft_us_total;            /* submission to the first token */
        uint64_t decode_us_total;          /* first to last token ... */
        uint64_t decode_tokens_total;      /* ... over this many tokens (per-token time) */
        /* the backend's device (keys 53..57, absent with the CPU backend) */
        char device[128];                  /* as its plugin describes it: name, compute capability, SMs, memory */
        uint64_t device_memory_total, device_memory_free; /* bytes, now */
        uint64_t device_weight_bytes;      /* the weights held in device memory */
        uint64_t device_kv_bytes;          /* the KV cache pool in device memory */
        /* CPU ranks in the daemon and their layout (keys 60, 61; absent with one rank), the
         * fewest and the most weight bytes one rank holds (keys 62, 63) */
        uint32_t ranks;
        char layout[16];
        uint64_t rank_weight_min, rank_weight_max;
        /* data-parallel attention (key 64, absent otherwise): each rank's own KV pool, three
         * numbers a rank (pages used, free, cached), n_rank_pages = 3 x ranks */
        const int32_t *rank_pages;
        uint32_t n_rank_pages;
        uint64_t session_moves_total;      /* key 65: sessions moved to another rank's pool */
};

struct dsv_msg {
        uint16_t type;
        union {
                struct dsv_msg_hello hello;
                struct dsv_msg_welcome welcome;
                struct dsv_msg_ping ping; /* PING, PONG */
                struct dsv_msg_generate generate;
                struct dsv_msg_id id;     /* CANCEL, STATS, SESSION_LIST */
                struct dsv_msg_tokenize tokenize;
                struct dsv_msg_tokens tokens; /* DETOKENIZE, TOKENS, TOKENIZE_REPLY */
                struct dsv_msg_session session; /* SESSION_* */
                struct dsv_msg_done done;
                struct dsv_msg_error error;
                struct dsv_msg_detokenize_reply detok;
                struct dsv_msg_stats_reply stats;
                struct dsv_msg_session_list session_list; /* SESSION_LIST_REPLY */
                struct dsv_msg_chat_event chat_event;     /* CHAT_EVENT */
        } u;
        msgpack_unpacked unpacked; /* decoder state; dsv_msg_release() frees it */
        bool has_unpacked;
};

/* A growable (or fixed, when `fixed`) output buffer for the encoder. */
struct dsv_wbuf {
        uint8_t *data;
        size_t len, cap;
        bool fixed;
        int err; /* first error (-ENOBUFS for a full fixed buffer, -ENOMEM) */
};
void dsv_wbuf_fixed(struct dsv_wbuf *b, void *mem, size_t cap);
void dsv_wbuf_free(struct dsv_wbuf *b);

/* Name of a message type ("GENERATE"), or NULL when unknown. */
const char *dsv_msg_type_name(unsigned type);
const char *dsv_finish_name(unsigned reason);
const char *dsv_state_name(unsigned state);
/* The symbolic name of an errno value the protocol uses ("E2BIG"; sign ignored), or
 * "EUNKNOWN". */
const char *dsv_errno_name(int err);

/* Encodes m's payload (its type selects the table) appended to out (out->len is not reset).
 * -EINVAL for an unknown type or a field over its cap. */
int dsv_msg_encode(const struct dsv_msg *m, struct dsv_wbuf *out);

/* Decodes a payload of a message of `type`. On failure returns -ENOSYS (unknown type),
 * -EBADMSG (not one well-formed msgpack map within the caps), -EPROTO (a field has the
 * wrong type, is over its cap, is duplicated, or a required field is missing),
 * -EOPNOTSUPP (an unknown critical field, key >= 128, is present) and writes a human-readable reason to why (may be NULL).
 * On success the caller calls dsv_msg_release(). */
int dsv_msg_decode(unsigned type, const void *payload, size_t len, struct dsv_msg *ret, char *why, size_t why_len);
void dsv_msg_release(struct dsv_msg *m);

/* Best effort: the `id` (key 0) of a payload, for an ERROR answering a message that did not
 * decode. Returns 0 when there is none. */
uint64_t dsv_msg_peek_id(const void *payload, size_t len);

/* Bounds check of a msgpack buffer: exactly one object, at most max_depth nested
 * containers, every count within the bytes left. 0 or -EBADMSG. */
int dsv_msgpack_scan(const uint8_t *p, size_t len, unsigned max_depth);

/* Convenience: encode m into a fresh record payload and write it to a ring; see
 * dsv_ring_write() for the errors. */
struct dsv_ring;
int dsv_ring_write_msg(struct dsv_ring *r, const struct dsv_msg *m, struct dsv_wbuf *scratch);
