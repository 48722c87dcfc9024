/* openai.h: what the parts of dsv32-openai, the OpenAI-compatible HTTP gateway over libdsv32,
 * share: the settings from the command line, the error object every bad request gets, a
 * growable byte buffer, the gateway's own counters (for /metrics), and the entry points of
 * openai_req.c (request JSON -> struct dsv32_request), openai_gen.c (one generation: the
 * libdsv32 connection, streaming as server-sent events or one JSON answer) and
 * openai_http.c (routing, authentication, bodies, /health, /v1/models, /metrics).
 *
 * Threads: libmicrohttpd runs one thread per HTTP connection; each generation opens its own
 * libdsv32 connection in that thread and closes it when the HTTP request ends (so a client
 * that goes away cancels its generation: the daemon cancels whatever a closed connection had
 * running). Nothing but the counters is shared between threads. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "client/dsv32.h"

struct oai_config {
        const char *socket_path;      /* NULL: libdsv32's default ($DSV32_SOCKET, /run/dsv32d/dsv32d.sock) */
        size_t max_body_bytes;        /* request bodies above this get 413 */
        unsigned max_connections;     /* concurrent HTTP connections */
        unsigned connect_timeout_ms;  /* libdsv32 handshake */
        char **api_keys;              /* NULL: no authentication */
        size_t n_api_keys;
        volatile int *stopping;       /* set on SIGTERM: streams end */
};

/* An OpenAI-style error: {"error": {"message", "type", "param", "code"}} with an HTTP status. */
struct oai_error {
        unsigned status;
        const char *type;  /* "invalid_request_error", "authentication_error", "server_error", ... */
        const char *code;  /* NULL or e.g. "invalid_api_key" */
        char param[96];    /* the offending field ("" when none) */
        char message[512];
};
void oai_error_set(struct oai_error *e, unsigned status, const char *type, const char *param, const char *fmt, ...)
        __attribute__((format(printf, 5, 6)));
/* A 400 naming the field. */
#define oai_bad_field(e, param, ...) oai_error_set((e), 400, "invalid_request_error", (param), __VA_ARGS__)
/* The error as a JSON object (caller json_decref()s it). */
json_t *oai_error_json(const struct oai_error *e);
/* Maps a libdsv32 failure (negative errno and its message) to an error. */
void oai_error_from_dsv32(struct oai_error *e, int err, const char *what, const char *message);

struct oai_buf {
        char *p;
        size_t len, cap;
};
int oai_buf_append(struct oai_buf *b, const void *data, size_t n);
void oai_buf_free(struct oai_buf *b);

/* The model's name for clients: the last part of the checkpoint's path in the daemon's
 * description ("/var/lib/dsv32d/DeepSeek-V3.2 (deepseek_v32, 61 layers, ...)" ->
 * "DeepSeek-V3.2"). */
void oai_model_id(const char *description, char *out, size_t size);
/* A JSON string of bytes that should be UTF-8: invalid sequences become U+FFFD. */
json_t *oai_json_text(const char *s, size_t n);

/* ------------------------------------------------------------------ requests (openai_req.c) */

enum oai_kind {
        OAI_CHAT = 0,       /* POST /v1/chat/completions */
        OAI_COMPLETION = 1, /* POST /v1/completions */
};

struct oai_request {
        enum oai_kind kind;
        struct dsv32_request req;  /* points into the members below and into `root` */
        json_t *root;              /* the parsed body (owned) */
        struct dsv32_chat_message *messages; /* role and content: for a daemon without chat events */
        struct dsv32_message *chat;  /* the same messages with tool calls, tool results, reasoning */
        struct dsv32_tool_call *calls; /* the assistant messages' tool calls (chat points into it) */
        struct dsv32_tool *tools;    /* `tools` (NULL when tool_choice is "none") */
        char **tool_params;          /* each tool's parameters as JSON text (owned) */
        size_t n_tools;
        bool needs_events;           /* tools, tool calls or tool results: chat events or nothing */
        const char *schema_param;    /* response_format's field that gave req.schema, or NULL */
        char **owned;              /* strings built from content parts */
        size_t n_owned;
        int32_t *prompt_tokens;
        int32_t stop_tokens[64];
        const char *stop_strings[8]; /* into root */
        struct dsv32_logit_bias bias[300];
        bool stream, include_usage;
        char model[256];           /* as the client named it ("" when absent) */
};
/* Parses and checks a request body; on failure fills e (400 naming the field) and returns
 * -EINVAL. On success r owns what it points to: oai_request_free(). */
int oai_request_parse(enum oai_kind kind, const char *body, size_t len, struct oai_request *r, struct oai_error *e);
void oai_request_free(struct oai_request *r);

/* ------------------------------------------------------------------ counters (openai_metrics.c) */

/* Thread-safe. */
void oai_metrics_http(unsigned status);
/* A finished generation; ttft_s / per_token_s < 0: not measured (not streamed, one token). */
void oai_metrics_generation(double ttft_s, double per_token_s, uint32_t prompt_tokens, uint32_t completion_tokens);

/* ------------------------------------------------------------------ generations (openai_gen.c) */

struct oai_gen;
/* Connects, submits r and waits for its first event. 0: *ret is ready to stream (or, for a
 * request that does not stream, already finished); < 0: e says why (the HTTP status too).
 * http_fd: the client's socket, watched for a hang-up (-1: none). Takes r over either way. */
int oai_gen_start(const struct oai_config *cfg, struct oai_request *r, int http_fd, struct oai_gen **ret,
                  struct oai_error *e);
/* Non-streaming: the whole answer as JSON text (owned by g). */
const char *oai_gen_body(struct oai_gen *g);
bool oai_gen_streaming(const struct oai_gen *g);
/* Streaming (libmicrohttpd content reader): copies up to max bytes of server-sent events
 * into buf, waiting for the daemon when there is nothing yet. Returns the byte count, 0 at
 * the end of the stream, -1 when the client went away or the stream must be cut. */
long oai_gen_read(struct oai_gen *g, char *buf, size_t max);
/* Cancels what still runs (closing the libdsv32 connection) and frees g; accepts NULL. */
void oai_gen_free(struct oai_gen *g);

/* ------------------------------------------------------------------ /metrics (openai_metrics.c) */

/* The Prometheus text exposition: the daemon's STATS (dsv32_up 0 and no daemon series when
 * it does not answer) and the gateway's own counters and histograms. */
int oai_metrics_text(const struct oai_config *cfg, struct oai_buf *out);
/* A libdsv32 connection for /health, /metrics and /v1/models; e is filled on failure. */
int oai_connect(const struct oai_config *cfg, dsv32_client **ret, struct oai_error *e);
