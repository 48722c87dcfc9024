/* openai_gen.c: one generation of dsv32-openai. Opens a libdsv32 connection for the HTTP
 * request (one per request: nothing to share or reset between threads, and closing it is
 * how a client that went away cancels its generation in the daemon), submits the request,
 * and turns the daemon's events into either one chat.completion / text_completion object
 * or server-sent events (`data: {chunk}` ... `data: [DONE]`). While it waits for the daemon
 * it also watches the HTTP client's socket: a hang-up cancels at once, not at the next
 * write.
 *
 * Chat runs with the daemon's chat events when it has them: reasoning, content and tool
 * calls come from REASONING / CONTENT / TOOL_CALL_* events (output the parser could not read,
 * PARSE_ERROR, is sent as content), TOKENS only bring logprobs and timing. Non-streamed:
 * message.content, .reasoning_content, .tool_calls[] {id, type "function", function {name,
 * arguments}}; streamed: delta.reasoning_content, delta.content, delta.tool_calls[] {index,
 * id, type, function {name, arguments ""}} at a call's begin and {index, function
 * {arguments}} for each fragment after it. finish_reason "tool_calls" when the model ended
 * on a call.
 *
 * Logprobs, in OpenAI's shapes: chat choices[].logprobs.content[] = {token, logprob, bytes,
 * top_logprobs[] = {token, logprob, bytes}}; completions choices[].logprobs = {tokens,
 * token_logprobs, top_logprobs (per token an object text -> logprob), text_offset (in
 * characters of the completion text)}. A streamed chunk carries those of its tokens, so the
 * chunks' lists joined equal the non-streamed one. A token's text is its own detokenization
 * (asked of the daemon once per id and kept for the generation; "token_id:ID" without a
 * tokenizer); `bytes` are that text's bytes. The token that completed a stop string is
 * listed (the daemon delivers its id and logprob; its text is cut from the content). */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "client/openai.h"

#define POLL_SLICE_MS 250 /* how often a wait looks at cfg->stopping */

struct tok_text { /* a token's own text (the cache of oai_gen.toks) */
        int32_t id; /* -1: empty slot */
        char *s;
        size_t n;
};

struct oai_call { /* a tool call of the answer */
        char id[65];
        char *name;
        struct oai_buf args; /* non-streaming: the arguments' JSON text */
};

#define MAX_CALLS 64 /* tool calls of one answer (as many as a message may bring back) */

struct oai_gen {
        const struct oai_config *cfg;
        struct oai_request r;
        dsv32_client *client;
        uint64_t id;
        int http_fd;
        char object_id[48];
        long long created;
        char model[256];
        bool submitted, done, sent_role, sent_end;
        enum dsv32_finish finish;
        struct dsv32_usage usage;
        struct oai_error error; /* an ERROR event, or the connection lost */
        bool failed;
        struct oai_buf text;    /* non-streaming: the whole answer */
        struct oai_buf out;     /* streaming: events not yet handed to the HTTP library */
        size_t out_pos;
        char *body;             /* non-streaming: the JSON answer */
        uint64_t t_start, t_first, t_last;
        bool has_text;          /* the daemon has a tokenizer */
        json_t *lp;             /* non-streaming logprobs: chat's content array, completion's object */
        size_t text_offset;     /* completions: characters of the tokens listed so far */
        dsv32_client *detok;    /* a second connection for the tokens' texts: a call on `client`
                                 * would end the life of the events being handed out */
        struct tok_text *toks;  /* open addressing, cap_toks a power of two, at most half full */
        size_t n_toks, cap_toks;
        bool events;            /* chat with the daemon's chat events: content, reasoning and tool
                                 * calls come from them; TOKENS bring only logprobs and timing */
        struct oai_buf reasoning; /* non-streaming: the reasoning */
        struct oai_call *calls; /* the tool calls so far, by index */
        size_t n_calls;
};

static uint64_t now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static const char *finish_reason(enum dsv32_finish f) {
        switch (f) {
        case DSV32_FINISH_LENGTH:
        case DSV32_FINISH_CONTEXT:
                return "length";
        case DSV32_FINISH_TOOL_CALLS:
                return "tool_calls";
        default:
                return "stop";
        }
}

static json_t *usage_json(const struct dsv32_usage *u) {
        return json_pack("{s:I,s:I,s:I,s:{s:I}}", "prompt_tokens", (json_int_t)u->prompt_tokens, "completion_tokens",
                         (json_int_t)u->completion_tokens, "total_tokens",
                         (json_int_t)u->prompt_tokens + (json_int_t)u->completion_tokens, "prompt_tokens_details",
                         "cached_tokens", (json_int_t)u->cached_tokens);
}

/* The common head of every object: id, object, created, model. */
static json_t *head(const struct oai_gen *g, const char *object) {
        return json_pack("{s:s,s:s,s:I,s:s}", "id", g->object_id, "object", object, "created", (json_int_t)g->created,
                         "model", g->model);
}

static int sse_append(struct oai_gen *g, json_t *j) {
        if (!j)
                return -ENOMEM;
        char *s = json_dumps(j, JSON_COMPACT);
        json_decref(j);
        if (!s)
                return -ENOMEM;
        int ret = oai_buf_append(&g->out, "data: ", 6);
        if (ret >= 0)
                ret = oai_buf_append(&g->out, s, strlen(s));
        if (ret >= 0)
                ret = oai_buf_append(&g->out, "\n\n", 2);
        free(s);
        return ret;
}

/* A chunk with one choice: chat {"delta": delta}, completion {"text": text}; logprobs NULL: null. */
static int sse_choice(struct oai_gen *g, json_t *delta_or_text, const char *finish, json_t *logprobs) {
        bool chat = g->r.kind == OAI_CHAT;
        json_t *j = head(g, chat ? "chat.completion.chunk" : "text_completion");
        json_t *choice = json_pack("{s:i,s:o,s:o,s:o}", "index", 0, chat ? "delta" : "text", delta_or_text, "logprobs",
                                   logprobs ? logprobs : json_null(), "finish_reason", finish ? json_string(finish) : json_null());
        if (!j || !choice) {
                json_decref(j);
                json_decref(choice);
                return -ENOMEM;
        }
        json_object_set_new(j, "choices", json_pack("[o]", choice));
        return sse_append(g, j);
}

/* Token id's own text (cached; the daemon detokenizes it once, over g->detok), or NULL when
 * out of memory. */
static const struct tok_text *tok_text(struct oai_gen *g, int32_t id) {
        size_t mask, i;
        if (2 * (g->n_toks + 1) > g->cap_toks) {
                size_t cap = g->cap_toks ? 2 * g->cap_toks : 256;
                struct tok_text *t = malloc(cap * sizeof(*t));
                if (!t)
                        return NULL;
                for (i = 0; i < cap; i++)
                        t[i].id = -1;
                for (size_t k = 0; k < g->cap_toks; k++) {
                        if (g->toks[k].id < 0)
                                continue;
                        for (i = (size_t)g->toks[k].id * 2654435761u & (cap - 1); t[i].id >= 0; i = (i + 1) & (cap - 1))
                                ;
                        t[i] = g->toks[k];
                }
                free(g->toks);
                g->toks = t;
                g->cap_toks = cap;
        }
        mask = g->cap_toks - 1;
        for (i = (size_t)id * 2654435761u & mask; g->toks[i].id >= 0; i = (i + 1) & mask)
                if (g->toks[i].id == id)
                        return &g->toks[i];
        char *s = NULL;
        size_t n = 0;
        if (g->has_text && !g->detok) {
                struct dsv32_connect_opts o = {.struct_size = sizeof(o), .socket_path = g->cfg->socket_path,
                                               .client_name = "dsv32-openai", .timeout_ms = (int)g->cfg->connect_timeout_ms};
                if (dsv32_connect(&o, &g->detok) < 0)
                        g->has_text = false; /* ids then */
        }
        if (!g->has_text || dsv32_detokenize(g->detok, &id, 1, &s, &n) < 0) {
                char buf[32];
                n = (size_t)snprintf(buf, sizeof(buf), "token_id:%d", id);
                s = strdup(buf);
        }
        if (!s)
                return NULL;
        g->toks[i] = (struct tok_text){.id = id, .s = s, .n = n};
        g->n_toks++;
        return &g->toks[i];
}

/* Characters (code points) of UTF-8 text; an invalid byte counts as one. */
static size_t utf8_chars(const char *s, size_t n) {
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
                k += ((unsigned char)s[i] & 0xc0) != 0x80;
        return k;
}

/* {token, logprob, bytes} of a chat logprobs entry. */
static json_t *chat_entry(const struct tok_text *t, float lp) {
        json_t *bytes = json_array();
        for (size_t i = 0; bytes && i < t->n; i++)
                json_array_append_new(bytes, json_integer((unsigned char)t->s[i]));
        return json_pack("{s:o,s:f,s:o}", "token", oai_json_text(t->s, t->n), "logprob", (double)lp, "bytes", bytes);
}

/* The logprobs of an event's tokens in the request's shape: chat, an array of entries;
 * completions, {tokens, token_logprobs, top_logprobs, text_offset}. NULL without (or when out
 * of memory: the answer then lacks them). */
static json_t *event_logprobs(struct oai_gen *g, const struct dsv32_event *ev) {
        bool chat = g->r.kind == OAI_CHAT;
        json_t *out;
        if (!ev->logprobs || !ev->n_tokens)
                return NULL;
        out = chat ? json_array()
                   : json_pack("{s:[],s:[],s:[],s:[]}", "tokens", "token_logprobs", "top_logprobs", "text_offset");
        for (size_t i = 0; out && i < ev->n_tokens; i++) {
                const struct tok_text *t = tok_text(g, ev->tokens[i]);
                json_t *top = chat ? json_array() : json_object();
                if (!t || !top) {
                        json_decref(top);
                        json_decref(out);
                        return NULL;
                }
                for (size_t k = 0; k < ev->n_top; k++) {
                        const struct tok_text *a = tok_text(g, ev->top_tokens[i * ev->n_top + k]);
                        float lp = ev->top_logprobs[i * ev->n_top + k];
                        if (!a)
                                continue;
                        if (chat)
                                json_array_append_new(top, chat_entry(a, lp));
                        else { /* keyed by the text (made valid UTF-8); two ids of one text: the likelier */
                                json_t *key = oai_json_text(a->s, a->n);
                                const char *ks = json_string_value(key);
                                if (ks && !json_object_getn(top, ks, json_string_length(key)))
                                        json_object_setn_new(top, ks, json_string_length(key), json_real(lp));
                                json_decref(key);
                        }
                }
                if (chat) {
                        json_t *e = chat_entry(t, ev->logprobs[i]);
                        if (e)
                                json_object_set_new(e, "top_logprobs", top);
                        else
                                json_decref(top);
                        json_array_append_new(out, e);
                } else {
                        json_array_append_new(json_object_get(out, "tokens"), oai_json_text(t->s, t->n));
                        json_array_append_new(json_object_get(out, "token_logprobs"), json_real(ev->logprobs[i]));
                        json_array_append_new(json_object_get(out, "top_logprobs"), top);
                        json_array_append_new(json_object_get(out, "text_offset"), json_integer((json_int_t)g->text_offset));
                        g->text_offset += utf8_chars(t->s, t->n);
                }
        }
        return out;
}

/* Non-streaming: adds an event's logprobs (lp, from event_logprobs) to the whole answer's. */
static void keep_logprobs(struct oai_gen *g, json_t *lp) {
        if (!lp)
                return;
        if (!g->lp) {
                g->lp = lp;
                return;
        }
        if (g->r.kind == OAI_CHAT) {
                json_array_extend(g->lp, lp);
        } else {
                static const char *const keys[] = {"tokens", "token_logprobs", "top_logprobs", "text_offset"};
                for (size_t i = 0; i < 4; i++)
                        json_array_extend(json_object_get(g->lp, keys[i]), json_object_get(lp, keys[i]));
        }
        json_decref(lp);
}

static int send_role(struct oai_gen *g);

/* Text and (lp, taken over) logprobs of an event. */
static int on_text(struct oai_gen *g, const char *text, size_t len, json_t *lp) {
        bool chat = g->r.kind == OAI_CHAT;
        if (!g->r.stream) {
                keep_logprobs(g, lp);
                return oai_buf_append(&g->text, text, len);
        }
        if (chat && !g->sent_role) {
                int ret = send_role(g);
                if (ret < 0) {
                        json_decref(lp);
                        return ret;
                }
        }
        if (!len && !lp)
                return 0; /* a token whose text is held back still brings its logprob */
        json_t *t = oai_json_text(text, len);
        return sse_choice(g, chat ? json_pack("{s:o}", "content", t) : t, NULL,
                          lp && chat ? json_pack("{s:o}", "content", lp) : lp);
}

/* Streaming chat: the first chunk carries the role. */
static int send_role(struct oai_gen *g) {
        if (g->sent_role)
                return 0;
        g->sent_role = true;
        return sse_choice(g, json_pack("{s:s,s:s}", "role", "assistant", "content", ""), NULL, NULL);
}

/* A chat event's text: key "content" or "reasoning_content". */
static int on_delta(struct oai_gen *g, const char *key, const char *text, size_t len) {
        int ret;
        if (!len)
                return 0;
        if (!g->r.stream)
                return oai_buf_append(strcmp(key, "content") == 0 ? &g->text : &g->reasoning, text, len);
        if ((ret = send_role(g)) < 0)
                return ret;
        return sse_choice(g, json_pack("{s:o}", key, oai_json_text(text, len)), NULL, NULL);
}

/* TOOL_CALL_BEGIN and _ARGUMENTS: delta.tool_calls[] = {index, id, type, function {name,
 * arguments ""}} for the first chunk of a call, {index, function {arguments}} after. */
static int on_tool_call(struct oai_gen *g, const struct dsv32_event *ev) {
        uint32_t i = ev->tool_index;
        int ret;
        if (i >= MAX_CALLS || (ev->type == DSV32_EVENT_TOOL_CALL_ARGUMENTS && i >= g->n_calls))
                return -EPROTO;
        if (ev->type == DSV32_EVENT_TOOL_CALL_BEGIN) {
                if (i != g->n_calls)
                        return -EPROTO; /* calls begin in order, each once */
                struct oai_call *c = realloc(g->calls, (g->n_calls + 1) * sizeof(*c));
                if (!c)
                        return -ENOMEM;
                g->calls = c;
                c = &g->calls[g->n_calls++];
                *c = (struct oai_call){0};
                snprintf(c->id, sizeof(c->id), "%s", ev->tool_call_id ? ev->tool_call_id : "");
                c->name = strndup(ev->tool_name ? ev->tool_name : "", ev->tool_name ? ev->tool_name_len : 0);
                if (!c->name)
                        return -ENOMEM;
                if (!g->r.stream)
                        return 0;
                if ((ret = send_role(g)) < 0)
                        return ret;
                return sse_choice(g, json_pack("{s:[{s:i,s:s,s:s,s:{s:o,s:s}}]}", "tool_calls", "index", (int)i, "id", c->id,
                                               "type", "function", "function", "name",
                                               oai_json_text(c->name, strlen(c->name)), "arguments", ""),
                                  NULL, NULL);
        }
        if (!ev->text_len)
                return 0;
        if (!g->r.stream)
                return oai_buf_append(&g->calls[i].args, ev->text, ev->text_len);
        return sse_choice(g, json_pack("{s:[{s:i,s:{s:o}}]}", "tool_calls", "index", (int)i, "function", "arguments",
                                       oai_json_text(ev->text, ev->text_len)),
                          NULL, NULL);
}

/* TOKENS of a chat with events: only their logprobs (the text came as events). */
static int on_tokens_logprobs(struct oai_gen *g, json_t *lp) {
        int ret;
        if (!g->r.stream) {
                keep_logprobs(g, lp);
                return 0;
        }
        if ((ret = send_role(g)) < 0 || !lp) {
                json_decref(lp);
                return ret;
        }
        return sse_choice(g, json_object(), NULL, json_pack("{s:o}", "content", lp));
}

/* The end of a stream: the finish reason, the usage when asked for, [DONE]; or an error event. */
static int stream_end(struct oai_gen *g) {
        int ret = 0;

        g->sent_end = true;
        if (g->failed) {
                ret = sse_append(g, oai_error_json(&g->error));
        } else {
                if (g->r.kind == OAI_CHAT && !g->sent_role)
                        ret = on_text(g, "", 0, NULL);
                if (ret >= 0)
                        ret = sse_choice(g, g->r.kind == OAI_CHAT ? json_object() : json_string(""),
                                         finish_reason(g->finish), NULL);
                if (ret >= 0 && g->r.include_usage) {
                        json_t *j = head(g, g->r.kind == OAI_CHAT ? "chat.completion.chunk" : "text_completion");
                        if (j) {
                                json_object_set_new(j, "choices", json_array());
                                json_object_set_new(j, "usage", usage_json(&g->usage));
                        }
                        ret = sse_append(g, j);
                }
        }
        if (ret >= 0)
                ret = oai_buf_append(&g->out, "data: [DONE]\n\n", 14);
        return ret;
}

static void record_metrics(struct oai_gen *g) {
        if (g->failed)
                return;
        if (!g->r.stream || !g->t_first) { /* without a stream there is no time to the first token */
                oai_metrics_generation(-1, -1, g->usage.prompt_tokens, g->usage.completion_tokens);
                return;
        }
        double ttft = (double)(g->t_first - g->t_start) / 1e9;
        double per_token = g->usage.completion_tokens > 1
                ? (double)(g->t_last - g->t_first) / 1e9 / (double)(g->usage.completion_tokens - 1) : -1;
        oai_metrics_generation(ttft, per_token, g->usage.prompt_tokens, g->usage.completion_tokens);
}

/* A refusal of the request's schema names the response_format field it came from (the
 * daemon's messages about schemas say "schema"). */
static void schema_error(const struct oai_gen *g, struct oai_error *e, const char *message) {
        if (!g->r.schema_param || !message || !strstr(message, "schema") || e->status != 400)
                return;
        snprintf(e->param, sizeof(e->param), "%s", strncmp(message, "schema", 6) == 0 ? g->r.schema_param : "response_format");
        e->code = NULL;
}

/* Hands out what the daemon sent. 1: something happened; 0: nothing yet; < 0: failure. */
static int drain(struct oai_gen *g) {
        struct dsv32_event ev[16];
        int n = dsv32_poll_events(g->client, ev, 16);

        if (n < 0) {
                oai_error_from_dsv32(&g->error, n, "the connection to dsv32d", dsv32_last_error(g->client));
                g->failed = g->done = true;
                return 1;
        }
        for (int i = 0; i < n; i++) {
                if (ev[i].id != g->id)
                        continue;
                int ret = 0;
                uint64_t t = now_ns();
                switch (ev[i].type) {
                case DSV32_EVENT_TOKENS:
                        if (!g->t_first)
                                g->t_first = t;
                        g->t_last = t;
                        if (g->events)
                                ret = on_tokens_logprobs(g, event_logprobs(g, &ev[i]));
                        else
                                ret = on_text(g, ev[i].text ? ev[i].text : "", ev[i].text ? ev[i].text_len : 0,
                                              event_logprobs(g, &ev[i]));
                        break;
                case DSV32_EVENT_REASONING:
                        ret = on_delta(g, "reasoning_content", ev[i].text, ev[i].text_len);
                        break;
                case DSV32_EVENT_CONTENT:
                        ret = on_delta(g, "content", ev[i].text, ev[i].text_len);
                        break;
                case DSV32_EVENT_PARSE_ERROR:
                        /* output the parser could not read (a malformed tool call): the client
                         * gets it as content rather than not at all */
                        ret = on_delta(g, "content", ev[i].text, ev[i].text_len);
                        break;
                case DSV32_EVENT_TOOL_CALL_BEGIN:
                case DSV32_EVENT_TOOL_CALL_ARGUMENTS:
                        ret = on_tool_call(g, &ev[i]);
                        if (ret == -EPROTO) {
                                oai_error_set(&g->error, 502, "server_error", NULL,
                                              "dsv32d sent tool call events out of order (call %u)", ev[i].tool_index);
                                g->failed = g->done = true;
                                ret = 0;
                        }
                        break;
                case DSV32_EVENT_DONE:
                        g->finish = ev[i].finish;
                        g->usage = ev[i].usage;
                        g->done = true;
                        if (ev[i].finish == DSV32_FINISH_SHUTDOWN || ev[i].finish == DSV32_FINISH_CANCELLED) {
                                oai_error_set(&g->error, 503, "server_error", NULL,
                                              "dsv32d ended the request before it finished (%s)",
                                              dsv32_finish_name(ev[i].finish));
                                g->failed = true;
                        }
                        break;
                case DSV32_EVENT_ERROR:
                        oai_error_from_dsv32(&g->error, ev[i].error, "dsv32d refused the request", ev[i].message);
                        schema_error(g, &g->error, ev[i].message);
                        g->failed = g->done = true;
                        break;
                default: /* TOOL_CALL_END: nothing to send (the next call or the finish says it) */
                        break;
                }
                if (ret < 0)
                        return ret;
        }
        if (g->done) {
                g->submitted = false; /* nothing left to cancel */
                record_metrics(g);
        }
        return n > 0;
}

/* Waits for the daemon or the HTTP client. 0: go on; -EPIPE: the client went away;
 * -ESHUTDOWN: the gateway is stopping. */
static int wait_once(struct oai_gen *g) {
        struct pollfd p[2] = {{.fd = dsv32_fd(g->client), .events = POLLIN},
                              {.fd = g->http_fd, .events = POLLRDHUP}};
        int r = poll(p, g->http_fd >= 0 ? 2 : 1, POLL_SLICE_MS);
        if (r < 0 && errno != EINTR)
                return -errno;
        if (g->http_fd >= 0 && (p[1].revents & (POLLRDHUP | POLLHUP | POLLERR)))
                return -EPIPE;
        if (g->cfg->stopping && __atomic_load_n(g->cfg->stopping, __ATOMIC_RELAXED))
                return -ESHUTDOWN;
        return 0;
}

/* Runs until the stream has bytes to hand out or the request is done. */
static int pump(struct oai_gen *g, bool until_done) {
        for (;;) {
                int ret = drain(g);
                if (ret < 0)
                        return ret;
                if (g->done || (!until_done && g->out.len > g->out_pos))
                        return 0;
                if (ret == 0 && (ret = wait_once(g)) < 0)
                        return ret;
        }
}

/* The chat answer's message: role, content (null when there are only tool calls),
 * reasoning_content (when there is some), tool_calls (when there are some). */
static json_t *chat_message(struct oai_gen *g) {
        json_t *m = json_pack("{s:s}", "role", "assistant");
        if (!m)
                return NULL;
        json_object_set_new(m, "content", g->n_calls && !g->text.len ? json_null()
                                                                     : oai_json_text(g->text.p ? g->text.p : "", g->text.len));
        if (g->reasoning.len)
                json_object_set_new(m, "reasoning_content", oai_json_text(g->reasoning.p, g->reasoning.len));
        if (g->n_calls) {
                json_t *calls = json_array();
                for (size_t i = 0; calls && i < g->n_calls; i++)
                        json_array_append_new(calls, json_pack("{s:s,s:s,s:{s:o,s:o}}", "id", g->calls[i].id, "type", "function",
                                                               "function", "name",
                                                               oai_json_text(g->calls[i].name, strlen(g->calls[i].name)),
                                                               "arguments",
                                                               oai_json_text(g->calls[i].args.p ? g->calls[i].args.p : "",
                                                                             g->calls[i].args.len)));
                json_object_set_new(m, "tool_calls", calls);
        }
        return m;
}

static int build_body(struct oai_gen *g) {
        bool chat = g->r.kind == OAI_CHAT;
        json_t *lp = NULL;
        if (g->r.req.flags & DSV32_REQ_LOGPROBS) { /* asked: the lists, empty when no token came */
                lp = g->lp ? g->lp
                   : chat  ? json_array()
                           : json_pack("{s:[],s:[],s:[],s:[]}", "tokens", "token_logprobs", "top_logprobs", "text_offset");
                g->lp = NULL;
                if (lp && chat)
                        lp = json_pack("{s:o}", "content", lp);
        }
        json_t *choice = chat ? json_pack("{s:i,s:o,s:o,s:s}", "index", 0, "message", chat_message(g), "logprobs",
                                          lp ? lp : json_null(), "finish_reason", finish_reason(g->finish))
                              : json_pack("{s:i,s:o,s:o,s:s}", "index", 0, "text",
                                          oai_json_text(g->text.p ? g->text.p : "", g->text.len), "logprobs",
                                          lp ? lp : json_null(), "finish_reason", finish_reason(g->finish));
        json_t *j = head(g, chat ? "chat.completion" : "text_completion");
        if (!j || !choice) {
                json_decref(j);
                json_decref(choice);
                return -ENOMEM;
        }
        json_object_set_new(j, "choices", json_pack("[o]", choice));
        json_object_set_new(j, "usage", usage_json(&g->usage));
        g->body = json_dumps(j, JSON_COMPACT);
        json_decref(j);
        return g->body ? 0 : -ENOMEM;
}

int oai_gen_start(const struct oai_config *cfg, struct oai_request *r, int http_fd, struct oai_gen **ret,
                  struct oai_error *e) {
        struct oai_gen *g = calloc(1, sizeof(*g));
        if (!g) {
                oai_request_free(r);
                oai_error_set(e, 500, "server_error", NULL, "out of memory");
                return -ENOMEM;
        }
        g->cfg = cfg;
        g->r = *r;
        *r = (struct oai_request){0};
        /* the request points into arrays of the struct it was parsed into: into the copy now */
        if (g->r.req.stop_tokens)
                g->r.req.stop_tokens = g->r.stop_tokens;
        if (g->r.req.stop_strings)
                g->r.req.stop_strings = g->r.stop_strings;
        if (g->r.req.logit_bias)
                g->r.req.logit_bias = g->r.bias;
        g->http_fd = http_fd;
        g->t_start = now_ns();
        g->created = (long long)time(NULL);

        uint8_t rnd[12];
        if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd))
                memset(rnd, 0, sizeof(rnd));
        int k = snprintf(g->object_id, sizeof(g->object_id), "%s", g->r.kind == OAI_CHAT ? "chatcmpl-" : "cmpl-");
        for (size_t i = 0; i < sizeof(rnd); i++)
                k += snprintf(g->object_id + k, sizeof(g->object_id) - (size_t)k, "%02x", rnd[i]);

        struct dsv32_connect_opts o = {.struct_size = sizeof(o), .socket_path = cfg->socket_path,
                                       .client_name = "dsv32-openai", .timeout_ms = (int)cfg->connect_timeout_ms};
        int err = dsv32_connect(&o, &g->client);
        if (err < 0) {
                oai_error_from_dsv32(e, err, "connecting to dsv32d", dsv32_last_error(NULL));
                goto fail;
        }
        struct dsv32_info info = {0};
        if ((err = dsv32_get_info(g->client, &info)) < 0) {
                oai_error_from_dsv32(e, err, "asking dsv32d for its model", dsv32_last_error(g->client));
                goto fail;
        }
        /* the model that answers, whatever name the client used */
        g->has_text = info.features & DSV32_FEATURE_TEXT;
        if ((g->r.req.flags & DSV32_REQ_LOGPROBS) && !(info.features & DSV32_FEATURE_LOGPROBS)) {
                oai_error_set(e, 400, "invalid_request_error", "logprobs", "logprobs: this dsv32d is too old to report them");
                err = -ENOTSUP;
                goto fail;
        }
        /* while dsv32d loads its model it cannot yet say what it understands (chat and chat
         * events come with the tokenizer): a chat request waits, as requests queue in the
         * daemon, watching the HTTP client */
        while (g->r.kind == OAI_CHAT && info.state == DSV32_STATE_LOADING) {
                struct dsv32_stats st;
                if ((err = dsv32_stats(g->client, &st)) < 0) {
                        oai_error_from_dsv32(e, err, "asking dsv32d for its state", dsv32_last_error(g->client));
                        goto fail;
                }
                info.state = st.state;
                info.features = st.features;
                if (st.state != DSV32_STATE_LOADING)
                        break;
                struct pollfd p = {.fd = http_fd, .events = POLLRDHUP};
                if (poll(&p, http_fd >= 0 ? 1 : 0, 100) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR))) {
                        oai_error_set(e, 499, "server_error", NULL, "the client went away");
                        err = -EPIPE;
                        goto fail;
                }
                if (cfg->stopping && __atomic_load_n(cfg->stopping, __ATOMIC_RELAXED)) {
                        oai_error_set(e, 503, "server_error", NULL, "the gateway is stopping");
                        err = -ESHUTDOWN;
                        goto fail;
                }
        }
        /* chat: with the daemon's chat events (reasoning, content and tool calls apart) when it
         * has them; tools and tool messages need them */
        if (g->r.kind == OAI_CHAT && (info.features & DSV32_FEATURE_CHAT_EVENTS)) {
                g->events = true;
                g->r.req.chat = g->r.chat;
                g->r.req.n_chat = g->r.req.n_messages;
                g->r.req.messages = NULL;
                g->r.req.n_messages = 0;
                g->r.req.flags |= DSV32_REQ_CHAT_EVENTS;
        } else if (g->r.kind == OAI_CHAT && g->r.needs_events) {
                oai_error_set(e, 400, "invalid_request_error", g->r.req.n_tools ? "tools" : "messages",
                              "tools, tool calls and tool messages: this dsv32d is too old (no chat events)");
                err = -ENOTSUP;
                goto fail;
        }
        if (info.model[0])
                oai_model_id(info.model, g->model, sizeof(g->model));
        else
                snprintf(g->model, sizeof(g->model), "%s", g->r.model);
        if ((err = dsv32_submit(g->client, &g->r.req, &g->id)) < 0) {
                oai_error_from_dsv32(e, err, "dsv32d refused the request", dsv32_last_error(g->client));
                schema_error(g, e, dsv32_last_error(g->client));
                goto fail;
        }
        g->submitted = true;
        /* wait for the first event, so that a refusal is still an HTTP error status */
        for (;;) {
                err = drain(g);
                if (err < 0) {
                        oai_error_set(e, 500, "server_error", NULL, "out of memory");
                        goto fail;
                }
                if (g->done || g->t_first)
                        break;
                if (err == 0 && (err = wait_once(g)) < 0) {
                        oai_error_set(e, err == -EPIPE ? 499 : 503, "server_error", NULL,
                                      err == -EPIPE ? "the client went away" : "the gateway is stopping");
                        goto fail;
                }
        }
        if (g->failed && (!g->r.stream || !g->t_first)) {
                *e = g->error;
                err = -EIO;
                goto fail;
        }
        if (!g->r.stream) {
                if ((err = pump(g, true)) < 0) {
                        oai_error_set(e, err == -EPIPE ? 499 : err == -ESHUTDOWN ? 503 : 500, "server_error", NULL,
                                      err == -EPIPE ? "the client went away" : err == -ESHUTDOWN
                                              ? "the gateway is stopping" : "out of memory");
                        goto fail;
                }
                if (g->failed) {
                        *e = g->error;
                        err = -EIO;
                        goto fail;
                }
                if ((err = build_body(g)) < 0) {
                        oai_error_set(e, 500, "server_error", NULL, "out of memory");
                        goto fail;
                }
        }
        *ret = g;
        return 0;
fail:
        oai_gen_free(g);
        return err < 0 ? err : -EIO;
}

const char *oai_gen_body(struct oai_gen *g) {
        return g->body;
}

bool oai_gen_streaming(const struct oai_gen *g) {
        return g->r.stream;
}

long oai_gen_read(struct oai_gen *g, char *buf, size_t max) {
        if (g->out_pos == g->out.len) {
                g->out_pos = g->out.len = 0;
                if (g->sent_end)
                        return 0;
                if (!g->done) {
                        int ret = pump(g, false);
                        if (ret < 0)
                                return -1; /* the client is gone (or we stop): oai_gen_free cancels */
                }
                if (g->done && g->out.len == 0 && stream_end(g) < 0)
                        return -1;
        }
        size_t n = g->out.len - g->out_pos;
        if (n > max)
                n = max;
        memcpy(buf, g->out.p + g->out_pos, n);
        g->out_pos += n;
        return (long)n;
}

void oai_gen_free(struct oai_gen *g) {
        if (!g)
                return;
        if (g->client && g->submitted)
                dsv32_cancel(g->client, g->id); /* the disconnect below would cancel it too */
        dsv32_disconnect(g->client);
        dsv32_disconnect(g->detok);
        oai_request_free(&g->r);
        oai_buf_free(&g->text);
        oai_buf_free(&g->reasoning);
        for (size_t i = 0; i < g->n_calls; i++) {
                free(g->calls[i].name);
                oai_buf_free(&g->calls[i].args);
        }
        free(g->calls);
        oai_buf_free(&g->out);
        free(g->body);
        json_decref(g->lp);
        for (size_t i = 0; i < g->cap_toks; i++)
                if (g->toks[i].id >= 0)
                        free(g->toks[i].s);
        free(g->toks);
        free(g);
}
