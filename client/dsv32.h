/* dsv32.h: the client library of dsv32d, the local DeepSeek-V3.2 inference daemon.
 *
 * A program connects once (dsv32_connect) and then talks to the daemon through two rings in
 * shared memory; a round trip costs microseconds, not an HTTP request. Link with
 * `pkg-config --cflags --libs dsv32`.
 *
 * Conventions
 *   - Every function that can fail returns an int: >= 0 on success, a negative errno value
 *     on failure (dsv32_strerror() turns it into text; dsv32_last_error() gives the
 *     daemon's own message for the last failure on a client, e.g. which limit was hit).
 *     Common codes: -ENOENT / -ECONNREFUSED (no daemon at the socket), -EACCES (not
 *     allowed to use the daemon), -EINVAL (bad argument or request), -E2BIG (prompt or
 *     max_tokens over a limit), -EMSGSIZE (a request larger than the submission ring can
 *     carry: connect with larger rings), -EAGAIN (per-user limit of requests in flight),
 *     -ENOTSUP (the daemon cannot do this, e.g. text without a tokenizer), -ESHUTDOWN
 *     (the daemon is stopping), -ECONNRESET (the daemon went away), -ETIMEDOUT,
 *     -EBUSY (the session runs another request), -EDQUOT (a session quota).
 *   - Ownership: pointers passed in are only read during the call. Memory returned through
 *     an out-parameter belongs to the caller and is released with dsv32_free(). Pointers
 *     inside a struct dsv32_event (and those passed to a token callback) belong to the
 *     client and stay valid until the next call on that client.
 *   - Thread safety: a dsv32_client is not thread-safe; use one per thread, or serialise
 *     the calls on it. Different clients are independent. The library starts no threads
 *     and installs no signal handlers; it never raises SIGPIPE.
 *   - Output parameters are written only on success.
 *   - Binary compatibility (libdsv32.so.0): the structs the library fills (dsv32_info,
 *     dsv32_wait_stats, dsv32_result, dsv32_event, dsv32_session_info, dsv32_session_entry,
 *     dsv32_stats) only ever grow at their end. The functions that fill them are macros that
 *     pass sizeof the caller's struct to a *_sized entry point; the library writes exactly
 *     that many bytes (fields it does not know are zero), so a program built against an
 *     older dsv32.h runs with a newer library and the other way round. struct dsv32_usage,
 *     nested in two of them, never grows: new counters go at the end of the outer struct.
 *     The structs the caller fills (dsv32_connect_opts, dsv32_request) carry struct_size.
 *
 * This header compiles as C (C99 and later) and as C++. */
#ifndef DSV32_H
#define DSV32_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DSV32_DEFAULT_SOCKET "/run/dsv32d/dsv32d.sock"
#define DSV32_SOCKET_ENV "DSV32_SOCKET" /* overrides the default socket path */

/* The version of this header (the library's is dsv32_version()). A program that needs a
 * newer API than the one it may be built against tests DSV32_VERSION_NUMBER, e.g.
 * #if DSV32_VERSION_NUMBER >= DSV32_VERSION_ENCODE(0, 2, 0).
 * 0.2.0 (since 0.1.0): the struct_size scheme (the *_sized entry points), logprobs, stop
 * strings, penalties and logit bias, session list/save, chat with tools and typed chat
 * events (struct dsv32_message, struct dsv32_tool, DSV32_REQ_CHAT_EVENTS, event types 4..9,
 * DSV32_FINISH_TOOL_CALLS).
 * Structured output (dsv32_request.schema) came later in 0.2: test #ifdef DSV32_FEATURE_SCHEMA. */
#define DSV32_VERSION_MAJOR 0
#define DSV32_VERSION_MINOR 2
#define DSV32_VERSION_PATCH 0
#define DSV32_VERSION_STRING "0.2.0"
#define DSV32_VERSION_ENCODE(major, minor, patch) (((major) << 16) | ((minor) << 8) | (patch))
#define DSV32_VERSION_NUMBER DSV32_VERSION_ENCODE(DSV32_VERSION_MAJOR, DSV32_VERSION_MINOR, DSV32_VERSION_PATCH)

typedef struct dsv32_client dsv32_client;

/* ------------------------------------------------------------------ connecting */

struct dsv32_connect_opts {
        size_t struct_size;           /* sizeof(struct dsv32_connect_opts) */
        const char *socket_path;      /* NULL: $DSV32_SOCKET, else DSV32_DEFAULT_SOCKET */
        const char *client_name;      /* shown in the daemon's log (NULL: "libdsv32") */
        uint32_t submit_ring_bytes;   /* 0: 1 MiB; rounded up to a power of two; the daemon */
        uint32_t completion_ring_bytes; /* caps both at its max-ring-kib setting */
        int timeout_ms;               /* handshake; 0: 10000; < 0: wait forever */
};

/* Connects and performs the handshake. opts may be NULL (all defaults). */
int dsv32_connect(const struct dsv32_connect_opts *opts, dsv32_client **ret);
/* Closes the connection; the daemon cancels whatever this client still had running.
 * Accepts NULL. */
void dsv32_disconnect(dsv32_client *c);

enum dsv32_state {
        DSV32_STATE_LOADING = 0, /* the model is being loaded; requests queue */
        DSV32_STATE_READY = 1,
        DSV32_STATE_DRAINING = 2, /* stopping: no new requests */
        DSV32_STATE_FAILED = 3,
};

#define DSV32_FEATURE_TEXT 0x1u /* text prompts, tokenize, detokenize */
#define DSV32_FEATURE_CHAT 0x2u /* chat messages */
#define DSV32_FEATURE_SESSIONS 0x4u /* KV-cache sessions (older daemons ignore a session name) */
#define DSV32_FEATURE_MTP 0x8u /* speculative decoding with the checkpoint's MTP layer is on */
#define DSV32_FEATURE_LOGPROBS 0x10u /* logprobs, stop strings, penalties and logit bias understood */
#define DSV32_FEATURE_CHAT_EVENTS 0x20u /* tools, tool calls and results, DSV32_REQ_CHAT_EVENTS understood */
#define DSV32_FEATURE_SCHEMA 0x40u /* structured output: dsv32_request.schema understood */

struct dsv32_info {
        char daemon_version[32];
        uint32_t protocol_major, protocol_minor;
        uint32_t daemon_pid;
        enum dsv32_state state;  /* at connect time */
        char model[256];         /* empty while loading */
        int32_t vocab_size, bos_id, eos_id, max_context;
        uint32_t features;       /* DSV32_FEATURE_* */
        uint32_t max_tokens_limit, max_prompt_bytes; /* this user's limits */
        uint32_t max_request_bytes, max_reply_bytes; /* largest record per ring */
};
int dsv32_get_info_sized(dsv32_client *c, struct dsv32_info *ret, size_t size);
#define dsv32_get_info(c, ret) dsv32_get_info_sized((c), (ret), sizeof(struct dsv32_info))

/* How the library waits for the daemon. ADAPTIVE (default): spin while replies tend to
 * arrive quickly (up to max_spin_ns, default 50000), then sleep on the socket. SPIN: never
 * sleep (lowest latency, burns a core). SLEEP: sleep at once (every wait costs a wakeup). */
enum dsv32_wait_mode {
        DSV32_WAIT_ADAPTIVE = 0,
        DSV32_WAIT_SPIN = 1,
        DSV32_WAIT_SLEEP = 2,
};
int dsv32_set_wait(dsv32_client *c, enum dsv32_wait_mode mode, uint32_t max_spin_ns);

struct dsv32_wait_stats {
        uint64_t waits;     /* times the library had to wait for the daemon */
        uint64_t spins_won; /* ... and the answer came while spinning */
        uint64_t sleeps;    /* ... and it went to sleep */
        uint64_t doorbells; /* wakeups sent to the daemon */
};
int dsv32_get_wait_stats_sized(dsv32_client *c, struct dsv32_wait_stats *ret, size_t size);
#define dsv32_get_wait_stats(c, ret) dsv32_get_wait_stats_sized((c), (ret), sizeof(struct dsv32_wait_stats))

/* ------------------------------------------------------------------ generation */

struct dsv32_chat_message {
        const char *role;    /* "system", "user", "assistant" */
        const char *content; /* NUL-terminated UTF-8 */
};
/* Chat with tools (DSV32_FEATURE_CHAT_EVENTS; an older daemon ignores all but role and
 * content). These structs are filled by the caller and never grow (arrays of them are laid
 * out by the caller's header): later additions come as new structs. Strings are
 * NUL-terminated UTF-8; NULL means absent. */
struct dsv32_tool_call {
        const char *id;        /* 1..64 bytes; the tool message answering it names it */
        const char *name;      /* the function, 1..64 bytes */
        const char *arguments; /* a JSON object, as text */
};
struct dsv32_message {
        const char *role;              /* "system", "user", "assistant", "tool" */
        const char *content;           /* may be "" (an assistant message with only tool calls) */
        const char *reasoning_content; /* assistant: its reasoning (shown to the model only after the last user message) */
        const struct dsv32_tool_call *tool_calls; /* assistant: the calls it made */
        size_t n_tool_calls;           /* at most 64 */
        const char *tool_call_id;      /* tool: the id of the call this is the result of (required) */
};
/* A function the model may call. Limits: name 1..64 bytes of letters, digits, _ - . (unique
 * in the list); description at most 8 KiB; parameters (a JSON schema object, as text) at most
 * 64 KiB (-E2BIG over a limit; -EINVAL for a name or for parameters that are not a JSON
 * object, with dsv32_last_error() naming the tool). At most 128 tools. */
struct dsv32_tool {
        const char *name;
        const char *description; /* may be NULL */
        const char *parameters;  /* may be NULL: no parameters */
};

#define DSV32_REQ_SEED 0x1u       /* use `seed` (otherwise the daemon picks one) */
#define DSV32_REQ_NO_STREAM 0x2u  /* deliver all tokens at the end */
#define DSV32_REQ_NO_BOS 0x4u     /* text prompt: do not prepend BOS */
#define DSV32_REQ_THINKING 0x8u   /* chat: thinking mode */
#define DSV32_REQ_IGNORE_EOS 0x10u /* keep going past EOS (benchmarks) */
#define DSV32_REQ_REUSE_OUTPUT 0x20u /* session: reuse the cache of generated tokens too (see sessions) */
#define DSV32_REQ_LOGPROBS 0x40u  /* each token's logprob, and top_logprobs alternatives (protocol 1.2,
                                   * DSV32_FEATURE_LOGPROBS: an older daemon ignores it) */
#define DSV32_REQ_CHAT_EVENTS 0x80u /* chat (messages or chat): the daemon parses the output into
                                     * typed events (DSV32_EVENT_REASONING ... below) besides the
                                     * TOKENS; needs DSV32_FEATURE_CHAT_EVENTS (-ENOTSUP without) */

/* Exactly one prompt: text, tokens, or messages. A zeroed struct (with struct_size set)
 * means greedy decoding of up to 256 tokens. Sampling: temperature 0 is greedy; top_p 0
 * or 1 is off; top_k 0 is off; min_p 0 is off. The same seed and the same request give
 * the same tokens. */
struct dsv32_logit_bias {
        int32_t token;
        float bias;
};

struct dsv32_request {
        size_t struct_size;           /* sizeof(struct dsv32_request) */
        const char *text;             /* UTF-8 prompt */
        size_t text_len;              /* 0: strlen(text) */
        const int32_t *tokens;        /* token-id prompt */
        size_t n_tokens;
        const struct dsv32_chat_message *messages;
        size_t n_messages;
        uint32_t max_tokens;          /* 0: 256, or this user's max_tokens_limit when lower */
        float temperature, top_p, min_p;
        int32_t top_k;
        uint64_t seed;
        uint32_t flags;               /* DSV32_REQ_* */
        const int32_t *stop_tokens;   /* besides the model's EOS; at most 64 */
        size_t n_stop_tokens;
        const char *session;          /* NULL, or a session to run on (see "sessions" below) */
        /* protocol 1.2 (a 1.1 daemon ignores it) */
        int32_t priority;             /* -100..100, default 0: higher is admitted first and preempted
                                       * last; above 0 only for root or dsv32d's own user (EPERM) */
        /* stop strings (protocol 1.2; needs a daemon with a tokenizer, ENOTSUP otherwise): the
         * output ends when its text contains one (DSV32_FINISH_STOP_STRING); that string and
         * everything after it is never delivered as text. At most 8, NUL-terminated, each
         * 1..64 bytes. */
        const char *const *stop_strings;
        size_t n_stop_strings;
        /* penalties and logit bias (protocol 1.2), applied to the logits before temperature
         * and the filters, greedy included, over the request's history (prompt and output):
         *   repetition_penalty r (0 or 1: off; up to 10): each distinct token of prompt and
         *     output: a logit l > 0 becomes l / r, else l * r (as HF transformers and vLLM)
         *   frequency_penalty f, presence_penalty q ([-2, 2], 0: off): each token generated c
         *     times: l - c * f - (c > 0) * q (OpenAI's definition)
         *   logit_bias: l + bias for each (id, bias), up to 300, bias in [-100, 100] */
        float repetition_penalty, frequency_penalty, presence_penalty;
        const struct dsv32_logit_bias *logit_bias;
        size_t n_logit_bias;
        /* with DSV32_REQ_LOGPROBS: this many most likely alternatives per token too, 0..20
         * (DSV32_MAX_TOP_LOGPROBS; more is -EINVAL). Logprobs are the natural log of the
         * model's own probabilities: log-softmax of the raw logits, before penalties, logit
         * bias, temperature and the filters, whatever the token was sampled from. */
        uint32_t top_logprobs;
        /* chat with tools (DSV32_FEATURE_CHAT_EVENTS): chat is a prompt source like messages
         * (exactly one of text, tokens, messages, chat); tools (at most 128) go with messages
         * or chat and are rendered into the system prompt (V3.2's format) */
        const struct dsv32_message *chat;
        size_t n_chat;
        const struct dsv32_tool *tools;
        size_t n_tools;
        /* structured output (DSV32_FEATURE_SCHEMA; -ENOTSUP without): a JSON schema as
         * NUL-terminated text ("{}": any JSON value), at most 256 KiB. The output is compact
         * JSON matching it (no whitespace) and the request ends, DSV32_FINISH_STOP, at the
         * value's last byte; any other finish means the value was cut short. Refused (an
         * error event naming the keyword): unsupported keywords (pattern, format, minimum, ...),
         * with DSV32_REQ_THINKING or tools. What is supported: ipc/PROTOCOL.md section 5.3. */
        const char *schema;
};
#define DSV32_MAX_TOP_LOGPROBS 20

enum dsv32_finish {
        DSV32_FINISH_STOP = 0,      /* EOS or a stop token */
        DSV32_FINISH_LENGTH = 1,    /* max_tokens */
        DSV32_FINISH_CANCELLED = 2,
        DSV32_FINISH_CONTEXT = 3,   /* the context window is full */
        DSV32_FINISH_SHUTDOWN = 4,  /* the daemon stopped first */
        DSV32_FINISH_STOP_STRING = 5, /* a stop string matched (stop_index says which) */
        DSV32_FINISH_TOOL_CALLS = 6,  /* DSV32_REQ_CHAT_EVENTS: the model ended on a tool call */
};

struct dsv32_usage {
        uint32_t prompt_tokens, completion_tokens, cached_tokens;
        uint64_t queue_us, prefill_us, decode_us;
};

struct dsv32_result {
        enum dsv32_finish finish;
        struct dsv32_usage usage;
        /* protocol 1.2 (0 from older daemons) */
        uint32_t preempted;     /* times the daemon took its KV pages back and recomputed them */
        uint32_t spec_drafted;  /* speculative decoding: tokens the MTP layer drafted for it */
        uint32_t spec_accepted; /* ... of which the model accepted (each saved a step) */
        uint32_t stop_index;    /* DSV32_FINISH_STOP_STRING: the index of the string that matched */
};

/* Called with each batch of new tokens (and their text, when the daemon has a tokenizer;
 * text is never split inside a UTF-8 character). Return 0 to go on, anything else to
 * cancel the request. */
typedef int (*dsv32_token_cb)(void *userdata, const int32_t *tokens, size_t n_tokens, const char *text,
                              size_t text_len);

/* Synchronous streaming call: returns when the request is done (result may be NULL). */
int dsv32_generate_sized(dsv32_client *c, const struct dsv32_request *req, dsv32_token_cb cb, void *userdata,
                         struct dsv32_result *result, size_t result_size);
#define dsv32_generate(c, req, cb, userdata, result) \
        dsv32_generate_sized((c), (req), (cb), (userdata), (result), sizeof(struct dsv32_result))

/* Asynchronous API for event loops: submit, wait until dsv32_fd() is readable (poll,
 * epoll, or any event loop, with or without a timeout; or call dsv32_wait), then drain
 * events with dsv32_poll_events until it returns 0, and wait again. */
int dsv32_submit(dsv32_client *c, const struct dsv32_request *req, uint64_t *ret_id);
/* Asks the daemon to stop request id; it still ends with its DONE (reason cancelled, or
 * how it ended if it finished first) or ERROR event. -ENOENT: this client has no such
 * request (never submitted, or its DONE/ERROR was handed out already). */
int dsv32_cancel(dsv32_client *c, uint64_t id);
/* The descriptor to wait on (POLLIN / EPOLLIN, level-triggered): readable whenever
 * dsv32_poll_events has something to hand out (events, or the connection's end). Every
 * libdsv32 call on c keeps it true, so a loop may sleep on it without a timeout: after
 * dsv32_poll_events returned fewer events than it was asked for, the daemon rings it when
 * the next one arrives. Do not read from it or close it. */
int dsv32_fd(dsv32_client *c);

enum dsv32_event_type {
        DSV32_EVENT_TOKENS = 1,
        DSV32_EVENT_DONE = 2,
        DSV32_EVENT_ERROR = 3, /* the request failed; it is over */
        /* DSV32_REQ_CHAT_EVENTS: the output as the V3.2 parser reads it, in order, each event
         * ahead of the TOKENS its text came from. Concatenating the deltas of a kind gives
         * the same text, and the sequence with adjacent deltas of a kind merged is the same,
         * whether the request streams or not and however the tokens cut the text. */
        DSV32_EVENT_REASONING = 4,      /* text: more reasoning (thinking mode) */
        DSV32_EVENT_CONTENT = 5,        /* text: more of the answer */
        DSV32_EVENT_TOOL_CALL_BEGIN = 6, /* tool_index, tool_call_id, tool_name */
        DSV32_EVENT_TOOL_CALL_ARGUMENTS = 7, /* tool_index; text: more of its arguments (JSON text) */
        DSV32_EVENT_TOOL_CALL_END = 8,  /* tool_index: the call is complete */
        DSV32_EVENT_PARSE_ERROR = 9,    /* message: what is malformed; text: the raw output (not shown
                                         * as content); the request goes on */
};

struct dsv32_event {
        enum dsv32_event_type type;
        uint64_t id;
        const int32_t *tokens; /* TOKENS */
        size_t n_tokens;
        const char *text;      /* TOKENS, when available (not NUL-terminated) */
        size_t text_len;
        enum dsv32_finish finish; /* DONE */
        struct dsv32_usage usage; /* DONE */
        int error;             /* ERROR: negative errno */
        const char *message;   /* ERROR: NUL-terminated */
        /* DONE, protocol 1.2 (0 from older daemons): as in struct dsv32_result */
        uint32_t preempted, spec_drafted, spec_accepted;
        uint32_t stop_index; /* DONE with DSV32_FINISH_STOP_STRING: which stop string */
        /* TOKENS of a request with DSV32_REQ_LOGPROBS (NULL and 0 otherwise): logprobs[i] is
         * tokens[i]'s; its n_top alternatives are top_tokens / top_logprobs[i * n_top, (i +
         * 1) * n_top), most likely first (the lower id first on ties). The token that completed
         * a stop string is delivered with its logprob like any other (its text is not). */
        const float *logprobs;
        const int32_t *top_tokens;
        const float *top_logprobs;
        size_t n_top;
        /* DSV32_EVENT_TOOL_CALL_*: the call's index in this answer (0, 1, ...); BEGIN: its id
         * (NUL-terminated, the same for the same request; pass it back as tool_call_id) and
         * the function's name (tool_name_len bytes, not NUL-terminated) */
        uint32_t tool_index;
        const char *tool_call_id;
        const char *tool_name;
        size_t tool_name_len;
};

/* Copies up to max ready events without blocking; returns how many (0: none yet). */
int dsv32_poll_events_sized(dsv32_client *c, struct dsv32_event *events, size_t max, size_t event_size);
#define dsv32_poll_events(c, events, max) dsv32_poll_events_sized((c), (events), (max), sizeof(struct dsv32_event))
/* Waits until an event is ready: 1, or 0 after timeout_ms (< 0: no timeout). */
int dsv32_wait(dsv32_client *c, int timeout_ms);

/* ------------------------------------------------------------------ sessions */

/* A session keeps the daemon's KV cache of a conversation between requests. A request that
 * names one (dsv32_request.session; created on first use) reuses the cache of the longest
 * prefix its prompt shares with the session's history and prefills only the rest;
 * dsv32_usage.cached_tokens says how many prompt tokens were reused. The history is the
 * previous prompt plus the tokens generated for it, but by default only the previous
 * prompt's part is reused: generated tokens were computed one at a time by decode steps,
 * which round differently from a prefill, so reusing them would change the last bits of
 * the logits (and, rarely, a token). That way the output is exactly what the same request
 * gives without a session. DSV32_REQ_REUSE_OUTPUT reuses the generated tokens' cache too
 * (less prefill per chat turn; outputs close to, but not always identical with, a
 * no-session run).
 *
 * Names: 1..64 bytes of letters, digits and . _ : @ + = - (a daemon may allow fewer bytes,
 * session-name-max); anything else is -EINVAL. Sessions belong to the user (uid), not to
 * the connection: they outlive the client, other users cannot see them (the same name is
 * another session for another uid), and the daemon closes them after an idle timeout.
 * A session runs one request at a time (a second one fails with -EBUSY; one that was
 * cancelled or whose client died is waited for, so cancel + resubmit needs no pause).
 * When the daemon needs KV cache for other requests it evicts idle sessions' caches, least
 * recently used first (the name keeps working; the next request prefills from scratch)
 * unless they are pinned; pinned sessions count against a per-user quota (-EDQUOT).
 * Sessions are not kept across daemon restarts. */
#define DSV32_SESSION_EXCL 0x1u    /* dsv32_session_open: -EEXIST when the session exists */
#define DSV32_SESSION_PRIVATE 0x2u /* dsv32_session_open: the session belongs to this connection
                                    * too: the daemon closes it as soon as the connection is gone
                                    * and no request runs on it (no idle timeout to wait for). A
                                    * daemon older than protocol 1.2 refuses it with -EINVAL. */

#define DSV32_SESSION_PINNED 0x1u  /* dsv32_session_info.flags */
#define DSV32_SESSION_BUSY 0x2u    /* a request runs on it */
#define DSV32_SESSION_CREATED 0x4u /* dsv32_session_open made it */
#define DSV32_SESSION_IS_PRIVATE 0x8u /* dsv32_session_entry: opened with DSV32_SESSION_PRIVATE */

struct dsv32_session_info {
        uint32_t flags;    /* DSV32_SESSION_* */
        uint32_t n_tokens; /* tokens whose KV cache it holds (before a close) */
        uint32_t n_pages;  /* KV-cache pages it holds */
};

/* Creates a session (or finds the caller's session of that name); ret may be NULL. */
int dsv32_session_open_sized(dsv32_client *c, const char *name, uint32_t flags, struct dsv32_session_info *ret,
                             size_t size);
#define dsv32_session_open(c, name, flags, ret) \
        dsv32_session_open_sized((c), (name), (flags), (ret), sizeof(struct dsv32_session_info))
/* Closes a session: its KV cache is freed at once (if a request runs on it, that request
 * goes on and frees it when it ends). -ENOENT when the caller has no such session. */
int dsv32_session_close_sized(dsv32_client *c, const char *name, struct dsv32_session_info *ret, size_t size);
#define dsv32_session_close(c, name, ret) \
        dsv32_session_close_sized((c), (name), (ret), sizeof(struct dsv32_session_info))
/* pin != 0: never evict its KV cache (counts against the user's quota, -EDQUOT when it is
 * full); pin == 0: evictable again. -ENOENT when the caller has no such session. */
int dsv32_session_pin_sized(dsv32_client *c, const char *name, int pin, struct dsv32_session_info *ret, size_t size);
#define dsv32_session_pin(c, name, pin, ret) \
        dsv32_session_pin_sized((c), (name), (pin), (ret), sizeof(struct dsv32_session_info))

struct dsv32_session_entry {
        char name[65];     /* NUL-terminated */
        uint32_t flags;    /* DSV32_SESSION_PINNED, DSV32_SESSION_BUSY, DSV32_SESSION_IS_PRIVATE */
        uint32_t n_tokens; /* tokens whose KV cache it holds */
        uint32_t n_pages;  /* KV-cache pages it holds (0 once evicted) */
        uint64_t idle_ms;  /* since its last use (0 while busy) */
        /* Under data-parallel attention (dsv32d --ranks N --parallel ep,dp) the rank whose KV pool
         * holds it (it runs there, and moves only when that pool is full); -1 when the daemon
         * keeps one pool, before its first request was placed, and from older daemons. */
        int32_t rank;
};
/* The caller's sessions, least recently used first: up to max entries into entries;
 * *ret_total (may be NULL) gets how many there are (call with max 0 to count them).
 * Returns how many were written. -ENOTSUP from a daemon older than protocol 1.2. */
int dsv32_session_list_sized(dsv32_client *c, struct dsv32_session_entry *entries, size_t max, size_t *ret_total,
                             size_t entry_size);
#define dsv32_session_list(c, entries, max, ret_total) \
        dsv32_session_list_sized((c), (entries), (max), (ret_total), sizeof(struct dsv32_session_entry))

/* Writes this user's sessions (root: everyone's) to the daemon's state directory now, so they
 * survive a restart even before the next periodic save; returns when the files are written.
 * *n_saved (may be NULL): sessions written. -ENOTSUP when the daemon keeps no state
 * directory (or is older than protocol 1.2). */
int dsv32_session_save(dsv32_client *c, uint32_t *n_saved);

/* ------------------------------------------------------------------ utilities */

/* One PING/PONG round trip; *ret_rtt_ns (may be NULL) gets its duration. */
int dsv32_ping(dsv32_client *c, uint64_t *ret_rtt_ns);

#define DSV32_TOKENIZE_ADD_BOS 0x1u
int dsv32_tokenize(dsv32_client *c, const char *text, size_t len, uint32_t flags, int32_t **ret_tokens, size_t *ret_n);
/* The text is NUL-terminated; *ret_len (may be NULL) excludes the NUL. */
int dsv32_detokenize(dsv32_client *c, const int32_t *tokens, size_t n, char **ret_text, size_t *ret_len);
void dsv32_free(void *p);

/* The most ranks whose KV pools struct dsv32_stats lists (dsv32d allows 256 ranks). */
#define DSV32_STATS_RANKS_MAX 256

/* One rank's own KV pool under data-parallel attention: its pages held by sequences, free,
 * and cached for the prefix cache. */
struct dsv32_rank_pages {
        uint32_t used, free, cached;
};

struct dsv32_stats {
        enum dsv32_state state;
        uint32_t daemon_pid;
        uint64_t uptime_ms;
        uint32_t load_permille;
        char daemon_version[32];
        char model[256];
        char backend[16];
        char numerics[16];
        uint32_t threads;
        int32_t vocab_size, n_layers, max_context;
        uint64_t weight_bytes;
        uint64_t kv_pages_total, kv_pages_used, kv_page_tokens, kv_bytes_per_token;
        uint64_t rss_bytes;
        uint32_t clients, requests_running, requests_waiting, requests_parked;
        uint64_t requests_total, prompt_tokens_total, generated_tokens_total, steps_total;
        float prefill_tokens_per_s, decode_tokens_per_s;
        uint64_t loop_wakeups, loop_sleeps, doorbells_sent, doorbells_received;
        uint32_t spin_us;
        uint32_t features;
        /* sessions (zero from a daemon without them) */
        uint32_t sessions, sessions_pinned;
        uint64_t session_pages;       /* KV-cache pages held by sessions */
        uint64_t cached_tokens_total; /* prompt tokens reused from sessions instead of prefilled */
        uint64_t sessions_evicted;    /* times an idle session's KV cache was evicted */
        /* protocol 1.2 (zero from older daemons) */
        uint32_t requests_prefilling;    /* admitted, its prompt being prefilled (a long prefill is
                                          * not "waiting") */
        uint32_t rate_window_ms;         /* nonzero: prefill/decode_tokens_per_s are over this much
                                          * wall time up to now (they fall to 0 when idle); 0 (older
                                          * daemons): over the last second that had work */
        uint64_t prefilled_tokens_total; /* prompt tokens run through the model (reused ones excluded) */
        uint64_t preemptions_total;         /* times a request's KV pages were taken back (recomputed later) */
        uint64_t prefix_cache_tokens_total; /* prompt tokens mapped from the prefix cache */
        uint64_t spec_drafted_total;        /* speculative decoding: drafts verified ... */
        uint64_t spec_accepted_total;       /* ... and accepted (acceptance: accepted / drafted) */
        uint64_t kv_pages_cached;           /* KV pages no request holds, kept for the prefix cache */
        /* sums over finished generations; a mean is the sum over requests_done_total */
        uint64_t requests_done_total;
        uint64_t queue_us_total;            /* submission to admission */
        uint64_t ttft_us_total;             /* submission to the first token */
        uint64_t decode_us_total;           /* first to last token, over ... */
        uint64_t decode_tokens_total;       /* ... this many tokens (per-token time: the ratio) */
        /* the daemon's device ("" and 0 on the CPU backend, while loading, and from older daemons) */
        char device[128];                   /* as the GPU plugin describes it (name, compute capability, memory) */
        uint64_t device_memory_total;       /* bytes */
        uint64_t device_memory_free;        /* bytes free now (0 once the device failed) */
        uint64_t device_weight_bytes;       /* the weights in device memory */
        uint64_t device_kv_bytes;           /* the KV cache pool in device memory */
        /* the daemon's ranks (dsv32d --ranks N --parallel LAYOUT): 0 and "" with one rank and
         * from older daemons */
        uint32_t ranks;
        char layout[16];                    /* e.g. "ep,dp" */
        uint64_t rank_weight_bytes_min;     /* the fewest and the most weight bytes one rank holds */
        uint64_t rank_weight_bytes_max;     /* (0 with one rank and from older daemons) */
        /* data-parallel attention (ep,dp in one process): each rank's own KV pool, which holds
         * the pages of the sequences placed on it; rank_pools is 0 when the ranks share one
         * replicated pool (ep,tp, nodes), with one rank, and from older daemons. kv_pages_* above
         * are then the sums over the ranks. */
        uint32_t rank_pools;
        struct dsv32_rank_pages rank_pages[DSV32_STATS_RANKS_MAX];
        uint64_t session_moves_total;       /* times a session moved to another rank's pool because
                                             * its own was full (0 from older daemons) */
};
int dsv32_stats_sized(dsv32_client *c, struct dsv32_stats *ret, size_t size);
#define dsv32_stats(c, ret) dsv32_stats_sized((c), (ret), sizeof(struct dsv32_stats))

/* The daemon's message for the last failure on c (or a local explanation); never NULL.
 * dsv32_last_error(NULL): why the last dsv32_connect() of the calling thread failed. */
const char *dsv32_last_error(const dsv32_client *c);
/* Text for a negative errno value; never NULL. */
const char *dsv32_strerror(int err);
/* The symbolic name of an errno value ("E2BIG"; the sign is ignored), "EUNKNOWN" for one
 * the protocol does not use; never NULL. For logs and machine-readable output. */
const char *dsv32_error_name(int err);
const char *dsv32_finish_name(enum dsv32_finish f);
/* The library's version, "MAJOR.MINOR.PATCH". */
const char *dsv32_version(void);

#ifdef __cplusplus
}
#endif

#endif /* DSV32_H */
