/* openai_req.c: the body of POST /v1/chat/completions and /v1/completions, checked field by
 * field and turned into a struct dsv32_request. Every refusal is a 400 naming the field.
 * Logprobs: chat's logprobs (bool) + top_logprobs (0..20), completions' logprobs (0..20:
 * present asks). Fields this daemon cannot honour yet (tools, structured
 * output, n > 1) are refused when they ask for something, never silently ignored; fields
 * that change nothing here (user, store, metadata, ...) are ignored. Extensions, spelled as
 * vLLM spells them: top_k, min_p, repetition_penalty, stop_token_ids, ignore_eos,
 * chat_template_kwargs.thinking. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "client/openai.h"

#define MAX_MESSAGES 4096
#define MAX_PROMPT_TOKENS (1u << 20)

static bool is_number(const json_t *v) {
        return json_is_real(v) || json_is_integer(v);
}

/* A number field in [lo, hi]; absent or null keeps *out. */
static int get_number(json_t *root, const char *name, double lo, double hi, double *out, struct oai_error *e) {
        json_t *v = json_object_get(root, name);
        if (!v || json_is_null(v))
                return 0;
        if (!is_number(v)) {
                oai_bad_field(e, name, "%s must be a number", name);
                return -EINVAL;
        }
        double d = json_number_value(v);
        if (!(d >= lo && d <= hi)) {
                oai_bad_field(e, name, "%s must be between %g and %g (got %g)", name, lo, hi, d);
                return -EINVAL;
        }
        *out = d;
        return 1;
}

static int get_int(json_t *root, const char *name, json_int_t lo, json_int_t hi, json_int_t *out, struct oai_error *e) {
        json_t *v = json_object_get(root, name);
        if (!v || json_is_null(v))
                return 0;
        if (!json_is_integer(v)) {
                oai_bad_field(e, name, "%s must be an integer", name);
                return -EINVAL;
        }
        json_int_t i = json_integer_value(v);
        if (i < lo || i > hi) {
                oai_bad_field(e, name, "%s must be between %lld and %lld (got %lld)", name, (long long)lo,
                              (long long)hi, (long long)i);
                return -EINVAL;
        }
        *out = i;
        return 1;
}

static int get_bool(json_t *root, const char *name, bool *out, struct oai_error *e) {
        json_t *v = json_object_get(root, name);
        if (!v || json_is_null(v))
                return 0;
        if (!json_is_boolean(v)) {
                oai_bad_field(e, name, "%s must be true or false", name);
                return -EINVAL;
        }
        *out = json_is_true(v);
        return 1;
}

/* A field that asks for something this daemon cannot do when it is not null/false/0/empty. */
static int refuse_unless_default(json_t *root, const char *name, const char *why, struct oai_error *e) {
        json_t *v = json_object_get(root, name);
        if (!v || json_is_null(v) || json_is_false(v) || (is_number(v) && json_number_value(v) == 0) ||
            (json_is_array(v) && json_array_size(v) == 0) || (json_is_object(v) && json_object_size(v) == 0) ||
            (json_is_string(v) && json_string_length(v) == 0))
                return 0;
        oai_bad_field(e, name, "%s is not supported by this gateway: %s", name, why);
        return -EINVAL;
}

static char *own(struct oai_request *r, char *s) {
        char **p = realloc(r->owned, (r->n_owned + 1) * sizeof(*p));
        if (!p) {
                free(s);
                return NULL;
        }
        r->owned = p;
        r->owned[r->n_owned++] = s;
        return s;
}

/* content: a string, null, or an array of {"type": "text", "text": "..."} parts. */
static int message_content(struct oai_request *r, json_t *content, size_t i, const char **out, struct oai_error *e) {
        char field[64];

        snprintf(field, sizeof(field), "messages[%zu].content", i);
        if (!content || json_is_null(content)) {
                *out = "";
                return 0;
        }
        if (json_is_string(content)) {
                if (strlen(json_string_value(content)) != json_string_length(content)) {
                        oai_bad_field(e, field, "%s contains a NUL character", field);
                        return -EINVAL;
                }
                *out = json_string_value(content);
                return 0;
        }
        if (!json_is_array(content)) {
                oai_bad_field(e, field, "%s must be a string or an array of text parts", field);
                return -EINVAL;
        }
        struct oai_buf b = {0};
        size_t k;
        json_t *part;
        json_array_foreach(content, k, part) {
                const char *type = json_string_value(json_object_get(part, "type"));
                json_t *text = json_object_get(part, "text");
                if (!json_is_object(part) || !type || strcmp(type, "text") != 0 || !json_is_string(text)) {
                        oai_buf_free(&b);
                        snprintf(field, sizeof(field), "messages[%zu].content[%zu]", i, k);
                        oai_bad_field(e, field, "%s: only {\"type\": \"text\", \"text\": \"...\"} parts are supported",
                                      field);
                        return -EINVAL;
                }
                if (oai_buf_append(&b, json_string_value(text), strlen(json_string_value(text))) < 0) {
                        oai_buf_free(&b);
                        return -ENOMEM;
                }
        }
        *out = own(r, b.p ? b.p : strdup(""));
        return *out ? 0 : -ENOMEM;
}

static int parse_messages(struct oai_request *r, struct oai_error *e) {
        json_t *msgs = json_object_get(r->root, "messages");
        if (!msgs) {
                oai_bad_field(e, "messages", "messages is required");
                return -EINVAL;
        }
        if (!json_is_array(msgs) || json_array_size(msgs) == 0) {
                oai_bad_field(e, "messages", "messages must be a non-empty array of messages");
                return -EINVAL;
        }
        if (json_array_size(msgs) > MAX_MESSAGES) {
                oai_bad_field(e, "messages", "at most %d messages per request", MAX_MESSAGES);
                return -EINVAL;
        }
        r->messages = calloc(json_array_size(msgs), sizeof(*r->messages));
        if (!r->messages)
                return -ENOMEM;
        size_t i;
        json_t *m;
        json_array_foreach(msgs, i, m) {
                char field[64];
                snprintf(field, sizeof(field), "messages[%zu]", i);
                if (!json_is_object(m)) {
                        oai_bad_field(e, field, "%s must be an object with role and content", field);
                        return -EINVAL;
                }
                const char *role = json_string_value(json_object_get(m, "role"));
                snprintf(field, sizeof(field), "messages[%zu].role", i);
                if (!role) {
                        oai_bad_field(e, field, "%s must be a string", field);
                        return -EINVAL;
                }
                if (strcmp(role, "developer") == 0)
                        role = "system";
                if (strcmp(role, "system") != 0 && strcmp(role, "user") != 0 && strcmp(role, "assistant") != 0) {
                        oai_bad_field(e, field, "%s '%s' is not supported (system, developer, user, assistant)", field,
                                      role);
                        return -EINVAL;
                }
                json_t *tc = json_object_get(m, "tool_calls");
                if (tc && !json_is_null(tc) && !(json_is_array(tc) && json_array_size(tc) == 0)) {
                        snprintf(field, sizeof(field), "messages[%zu].tool_calls", i);
                        oai_bad_field(e, field, "%s: tool calls are not supported by this gateway yet", field);
                        return -EINVAL;
                }
                r->messages[i].role = role;
                int ret = message_content(r, json_object_get(m, "content"), i, &r->messages[i].content, e);
                if (ret < 0)
                        return ret;
        }
        r->req.messages = r->messages;
        r->req.n_messages = json_array_size(msgs);
        return 0;
}

static int token_array(struct oai_request *r, json_t *a, struct oai_error *e) {
        size_t n = json_array_size(a), i;
        json_t *v;

        if (n == 0 || n > MAX_PROMPT_TOKENS) {
                oai_bad_field(e, "prompt", "prompt as token ids must have 1 to %u of them", MAX_PROMPT_TOKENS);
                return -EINVAL;
        }
        r->prompt_tokens = malloc(n * sizeof(int32_t));
        if (!r->prompt_tokens)
                return -ENOMEM;
        json_array_foreach(a, i, v) {
                if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX) {
                        oai_bad_field(e, "prompt", "prompt[%zu] must be a token id (an integer >= 0)", i);
                        return -EINVAL;
                }
                r->prompt_tokens[i] = (int32_t)json_integer_value(v);
        }
        r->req.tokens = r->prompt_tokens;
        r->req.n_tokens = n;
        return 0;
}

/* prompt: a string, an array of token ids, or a one-element array of either. */
static int parse_prompt(struct oai_request *r, struct oai_error *e) {
        json_t *p = json_object_get(r->root, "prompt");
        if (!p) {
                oai_bad_field(e, "prompt", "prompt is required");
                return -EINVAL;
        }
        if (json_is_array(p) && json_array_size(p) == 1 &&
            (json_is_string(json_array_get(p, 0)) || json_is_array(json_array_get(p, 0))))
                p = json_array_get(p, 0);
        if (json_is_string(p)) {
                r->req.text = json_string_value(p);
                r->req.text_len = json_string_length(p);
                if (r->req.text_len == 0)
                        r->req.text = ""; /* an empty prompt is just BOS */
                return 0;
        }
        if (json_is_array(p) && json_array_size(p) > 0 && json_is_integer(json_array_get(p, 0)))
                return token_array(r, p, e);
        if (json_is_array(p) && json_array_size(p) > 1) {
                oai_bad_field(e, "prompt", "prompt: one prompt per request (batches are not supported)");
                return -EINVAL;
        }
        oai_bad_field(e, "prompt", "prompt must be a string or an array of token ids");
        return -EINVAL;
}

static int parse_sampling(struct oai_request *r, struct oai_error *e) {
        json_t *root = r->root;
        double d;
        json_int_t i;
        int ret;

        /* OpenAI's defaults: temperature 1, top_p 1 */
        d = 1.0;
        if ((ret = get_number(root, "temperature", 0, 2, &d, e)) < 0)
                return ret;
        r->req.temperature = (float)d;
        d = 1.0;
        if ((ret = get_number(root, "top_p", 0, 1, &d, e)) < 0)
                return ret;
        r->req.top_p = (float)d;
        d = 0;
        if ((ret = get_number(root, "min_p", 0, 1, &d, e)) < 0)
                return ret;
        r->req.min_p = (float)d;
        i = 0;
        if ((ret = get_int(root, "top_k", -1, INT32_MAX, &i, e)) < 0)
                return ret;
        r->req.top_k = i < 0 ? 0 : (int32_t)i; /* vLLM spells "off" -1 */
        if ((ret = get_int(root, "seed", INT64_MIN, INT64_MAX, &i, e)) < 0)
                return ret;
        if (ret > 0) {
                r->req.seed = (uint64_t)i;
                r->req.flags |= DSV32_REQ_SEED;
        }
        /* penalties (OpenAI's frequency and presence, vLLM's repetition) and logit bias */
        d = 0;
        if ((ret = get_number(root, "frequency_penalty", -2, 2, &d, e)) < 0)
                return ret;
        r->req.frequency_penalty = (float)d;
        d = 0;
        if ((ret = get_number(root, "presence_penalty", -2, 2, &d, e)) < 0)
                return ret;
        r->req.presence_penalty = (float)d;
        d = 1;
        if ((ret = get_number(root, "repetition_penalty", 0, 10, &d, e)) < 0)
                return ret;
        if (d <= 0) {
                oai_bad_field(e, "repetition_penalty", "repetition_penalty must be above 0 and at most 10 (1 is off)");
                return -EINVAL;
        }
        r->req.repetition_penalty = (float)d;
        json_t *lb = json_object_get(root, "logit_bias");
        if (lb && !json_is_null(lb)) {
                const char *key;
                json_t *val;
                size_t n = 0;
                if (!json_is_object(lb) || json_object_size(lb) > sizeof(r->bias) / sizeof(r->bias[0])) {
                        oai_bad_field(e, "logit_bias", "logit_bias must be an object of at most %zu token ids to biases",
                                      sizeof(r->bias) / sizeof(r->bias[0]));
                        return -EINVAL;
                }
                json_object_foreach(lb, key, val) {
                        char *end;
                        long id;
                        errno = 0;
                        id = strtol(key, &end, 10);
                        if (!*key || *end || errno || id < 0 || id > INT32_MAX) {
                                oai_bad_field(e, "logit_bias", "logit_bias: key \"%.40s\" is not a token id", key);
                                return -EINVAL;
                        }
                        if (!is_number(val) || !(json_number_value(val) >= -100 && json_number_value(val) <= 100)) {
                                oai_bad_field(e, "logit_bias", "logit_bias[\"%s\"] must be a number between -100 and 100",
                                              key);
                                return -EINVAL;
                        }
                        for (size_t j = 0; j < n; j++)
                                if (r->bias[j].token == (int32_t)id) {
                                        oai_bad_field(e, "logit_bias", "logit_bias names token %ld twice", id);
                                        return -EINVAL;
                                }
                        r->bias[n].token = (int32_t)id;
                        r->bias[n++].bias = (float)json_number_value(val);
                }
                r->req.logit_bias = r->bias;
                r->req.n_logit_bias = n;
        }
        /* max_completion_tokens is the newer name; it wins when both are given */
        json_int_t max = 0;
        if ((ret = get_int(root, "max_tokens", 1, UINT32_MAX, &max, e)) < 0 ||
            (ret = get_int(root, "max_completion_tokens", 1, UINT32_MAX, &max, e)) < 0)
                return ret;
        r->req.max_tokens = (uint32_t)max;
        json_int_t n = 1;
        if ((ret = get_int(root, "n", 1, 1, &n, e)) < 0) {
                oai_bad_field(e, "n", "n must be 1: one choice per request (send several requests instead)");
                return ret;
        }
        return 0;
}

static int parse_stop(struct oai_request *r, struct oai_error *e) {
        json_t *v = json_object_get(r->root, "stop");
        /* OpenAI's stop: a string or an array of strings, matched on the output text and never
         * shown (the daemon does it: GENERATE key 14); finish_reason "stop" */
        if (v && !json_is_null(v)) {
                size_t n = json_is_string(v) ? 1 : json_is_array(v) ? json_array_size(v) : SIZE_MAX;
                if (n == SIZE_MAX || n > sizeof(r->stop_strings) / sizeof(r->stop_strings[0])) {
                        oai_bad_field(e, "stop", "stop must be a string or an array of at most %zu strings",
                                      sizeof(r->stop_strings) / sizeof(r->stop_strings[0]));
                        return -EINVAL;
                }
                for (size_t i = 0; i < n; i++) {
                        json_t *s = json_is_string(v) ? v : json_array_get(v, i);
                        size_t len = json_is_string(s) ? json_string_length(s) : 0;
                        if (!json_is_string(s) || len == 0 || len > 64 || strlen(json_string_value(s)) != len) {
                                oai_bad_field(e, "stop", "stop[%zu] must be a string of 1 to 64 bytes without NUL", i);
                                return -EINVAL;
                        }
                        r->stop_strings[i] = json_string_value(s);
                }
                r->req.stop_strings = r->stop_strings;
                r->req.n_stop_strings = n;
        }
        v = json_object_get(r->root, "stop_token_ids");
        if (!v || json_is_null(v))
                return 0;
        if (!json_is_array(v) || json_array_size(v) > 64) {
                oai_bad_field(e, "stop_token_ids", "stop_token_ids must be an array of at most 64 token ids");
                return -EINVAL;
        }
        size_t i;
        json_t *t;
        json_array_foreach(v, i, t) {
                if (!json_is_integer(t) || json_integer_value(t) < 0 || json_integer_value(t) > INT32_MAX) {
                        oai_bad_field(e, "stop_token_ids", "stop_token_ids[%zu] must be a token id (an integer >= 0)",
                                      i);
                        return -EINVAL;
                }
                r->stop_tokens[i] = (int32_t)json_integer_value(t);
        }
        r->req.stop_tokens = r->stop_tokens;
        r->req.n_stop_tokens = json_array_size(v);
        return 0;
}

/* chat: "logprobs": bool, "top_logprobs": 0..20 (only with logprobs true); completions:
 * "logprobs": 0..20 alternatives (present and not null asks). */
static int parse_logprobs(struct oai_request *r, struct oai_error *e) {
        json_int_t n = 0;
        int ret;
        if (r->kind == OAI_CHAT) {
                bool on = false;
                if ((ret = get_bool(r->root, "logprobs", &on, e)) < 0 ||
                    (ret = get_int(r->root, "top_logprobs", 0, DSV32_MAX_TOP_LOGPROBS, &n, e)) < 0)
                        return ret;
                if (ret > 0 && !on) {
                        oai_bad_field(e, "top_logprobs", "top_logprobs needs logprobs: true");
                        return -EINVAL;
                }
                if (!on)
                        return 0;
        } else if ((ret = get_int(r->root, "logprobs", 0, DSV32_MAX_TOP_LOGPROBS, &n, e)) <= 0) {
                return ret;
        }
        r->req.flags |= DSV32_REQ_LOGPROBS;
        r->req.top_logprobs = (uint32_t)n;
        return 0;
}

static int parse_unsupported(struct oai_request *r, struct oai_error *e) {
        json_t *root = r->root;
        static const struct {
                const char *name, *why;
        } fields[] = {
                {"tools", "tool calls need the daemon's chat events (not there yet)"},
                {"functions", "tool calls need the daemon's chat events (not there yet)"},
                {"echo", "the prompt is not echoed"},
                {"suffix", "no fill-in-the-middle"},
        };
        int ret;

        for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
                if ((ret = refuse_unless_default(root, fields[i].name, fields[i].why, e)) < 0)
                        return ret;
        json_int_t best_of = 1;
        if ((ret = get_int(root, "best_of", 1, 1, &best_of, e)) < 0)
                return ret;
        json_t *rf = json_object_get(root, "response_format");
        if (rf && !json_is_null(rf)) {
                const char *type = json_string_value(json_object_get(rf, "type"));
                if (!json_is_object(rf) || !type) {
                        oai_bad_field(e, "response_format", "response_format must be an object with a type");
                        return -EINVAL;
                }
                if (strcmp(type, "text") != 0) {
                        oai_bad_field(e, "response_format",
                                      "response_format %s is not supported by this daemon yet (only text)", type);
                        return -EINVAL;
                }
        }
        json_t *tc = json_object_get(root, "tool_choice");
        if (tc && !json_is_null(tc) && !(json_is_string(tc) && strcmp(json_string_value(tc), "none") == 0) &&
            !(json_is_string(tc) && strcmp(json_string_value(tc), "auto") == 0)) {
                oai_bad_field(e, "tool_choice", "tool_choice: no tools are supported by this gateway yet");
                return -EINVAL;
        }
        return 0;
}

int oai_request_parse(enum oai_kind kind, const char *body, size_t len, struct oai_request *r, struct oai_error *e) {
        json_error_t jerr;
        int ret;

        *r = (struct oai_request){.kind = kind};
        r->req.struct_size = sizeof(r->req);
        r->root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
        if (!r->root) {
                oai_error_set(e, 400, "invalid_request_error", NULL,
                              "the body is not valid JSON: %s (line %d, column %d)", jerr.text, jerr.line, jerr.column);
                return -EINVAL;
        }
        if (!json_is_object(r->root)) {
                oai_error_set(e, 400, "invalid_request_error", NULL, "the body must be a JSON object");
                ret = -EINVAL;
                goto fail;
        }
        json_t *model = json_object_get(r->root, "model");
        if (model && !json_is_null(model) && !json_is_string(model)) {
                oai_bad_field(e, "model", "model must be a string");
                ret = -EINVAL;
                goto fail;
        }
        snprintf(r->model, sizeof(r->model), "%s", model ? json_string_value(model) ? json_string_value(model) : "" : "");
        if ((ret = kind == OAI_CHAT ? parse_messages(r, e) : parse_prompt(r, e)) < 0 ||
            (ret = parse_sampling(r, e)) < 0 || (ret = parse_stop(r, e)) < 0 || (ret = parse_logprobs(r, e)) < 0 ||
            (ret = parse_unsupported(r, e)) < 0 ||
            (ret = get_bool(r->root, "stream", &r->stream, e)) < 0)
                goto fail;
        bool flag = false;
        if ((ret = get_bool(r->root, "ignore_eos", &flag, e)) < 0)
                goto fail;
        if (flag)
                r->req.flags |= DSV32_REQ_IGNORE_EOS;
        json_t *so = json_object_get(r->root, "stream_options");
        if (so && !json_is_null(so)) {
                if (!json_is_object(so)) {
                        oai_bad_field(e, "stream_options", "stream_options must be an object");
                        ret = -EINVAL;
                        goto fail;
                }
                json_t *iu = json_object_get(so, "include_usage");
                if (iu && !json_is_boolean(iu)) {
                        oai_bad_field(e, "stream_options.include_usage", "stream_options.include_usage must be true or false");
                        ret = -EINVAL;
                        goto fail;
                }
                r->include_usage = json_is_true(iu);
        }
        json_t *kw = json_object_get(r->root, "chat_template_kwargs");
        if (kind == OAI_CHAT && kw && !json_is_null(kw)) {
                json_t *th = json_object_get(kw, "thinking");
                if (!json_is_object(kw) || (th && !json_is_boolean(th))) {
                        oai_bad_field(e, "chat_template_kwargs", "chat_template_kwargs must be an object; thinking true or false");
                        ret = -EINVAL;
                        goto fail;
                }
                if (json_is_true(th))
                        r->req.flags |= DSV32_REQ_THINKING;
        }
        if (!r->stream)
                r->req.flags |= DSV32_REQ_NO_STREAM;
        return 0;
fail:
        if (ret == -ENOMEM)
                oai_error_set(e, 500, "server_error", NULL, "out of memory");
        oai_request_free(r);
        return ret;
}

void oai_request_free(struct oai_request *r) {
        if (!r)
                return;
        for (size_t i = 0; i < r->n_owned; i++)
                free(r->owned[i]);
        free(r->owned);
        free(r->messages);
        free(r->prompt_tokens);
        json_decref(r->root);
        *r = (struct oai_request){0};
}
