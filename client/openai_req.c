/* openai_req.c: the body of POST /v1/chat/completions and /v1/completions, checked field by
 * field and turned into a struct dsv32_request. Every refusal is a 400 naming the field.
 * Logprobs: chat's logprobs (bool) + top_logprobs (0..20), completions' logprobs (0..20:
 * present asks). Tools: tools (function tools), tool_choice "auto" or "none" (the
 * tools are then not shown to the model), assistant messages' tool_calls and reasoning_content,
 * tool messages with tool_call_id; they map onto struct dsv32_message / dsv32_tool_call /
 * dsv32_tool. Fields this daemon cannot honour yet (structured output, n > 1, tool_choice
 * "required" or a named function, parallel_tool_calls false) are refused when they ask for something, never silently ignored; fields
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
/* the daemon's limits (dsv32.h, struct dsv32_tool), checked here so that the 400 names the field */
#define OAI_MAX_TOOLS 128
#define OAI_MAX_CALLS 64
#define OAI_MAX_TOOL_DESCRIPTION 8192
#define OAI_MAX_TOOL_PARAMETERS 65536

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

/* response_format: "text" (nothing), "json_object" (any JSON object) or "json_schema"
 * ({"name", "schema", "strict", "description"}: the schema goes to dsv32d as text, which
 * compiles it; its refusal comes back as a 400 naming response_format.json_schema.schema,
 * see openai_gen.c). strict is accepted either way: the output always matches. */
static int response_format(struct oai_request *r, json_t *rf, struct oai_error *e) {
        const char *type;
        json_t *js, *name, *schema, *strict;
        char *text;

        if (!rf || json_is_null(rf))
                return 0;
        type = json_string_value(json_object_get(rf, "type"));
        if (!json_is_object(rf) || !type) {
                oai_bad_field(e, "response_format", "response_format must be an object with a type");
                return -EINVAL;
        }
        if (strcmp(type, "text") == 0)
                return 0;
        if (strcmp(type, "json_object") == 0) {
                r->schema_param = "response_format";
                r->req.schema = "{\"type\":\"object\"}";
                return 0;
        }
        if (strcmp(type, "json_schema") != 0) {
                oai_bad_field(e, "response_format.type",
                              "response_format.type %s is not supported (text, json_object or json_schema)", type);
                return -EINVAL;
        }
        js = json_object_get(rf, "json_schema");
        if (!json_is_object(js)) {
                oai_bad_field(e, "response_format.json_schema",
                              "response_format.json_schema must be an object with a name and a schema");
                return -EINVAL;
        }
        name = json_object_get(js, "name");
        if (!json_is_string(name) || json_string_length(name) == 0 || json_string_length(name) > 64) {
                oai_bad_field(e, "response_format.json_schema.name",
                              "response_format.json_schema.name must be a string of 1..64 characters");
                return -EINVAL;
        }
        strict = json_object_get(js, "strict");
        if (strict && !json_is_boolean(strict) && !json_is_null(strict)) {
                oai_bad_field(e, "response_format.json_schema.strict", "response_format.json_schema.strict must be a boolean");
                return -EINVAL;
        }
        schema = json_object_get(js, "schema");
        if (schema && !json_is_object(schema) && !json_is_boolean(schema)) {
                oai_bad_field(e, "response_format.json_schema.schema",
                              "response_format.json_schema.schema must be a JSON schema object");
                return -EINVAL;
        }
        text = schema ? json_dumps(schema, JSON_COMPACT | JSON_ENCODE_ANY) : strdup("{}");
        if (!text || !own(r, text)) {
                oai_error_set(e, 500, "server_error", NULL, "out of memory");
                return -ENOMEM;
        }
        r->schema_param = "response_format.json_schema.schema";
        r->req.schema = text;
        return 0;
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

/* A string field of a message (or call); absent or null: NULL. Strings with a NUL are refused. */
static int opt_string(json_t *obj, const char *name, const char *field, const char **out, struct oai_error *e) {
        json_t *v = json_object_get(obj, name);
        *out = NULL;
        if (!v || json_is_null(v))
                return 0;
        if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v)) {
                oai_bad_field(e, field, "%s must be a string without NUL characters", field);
                return -EINVAL;
        }
        *out = json_string_value(v);
        return 0;
}

/* A required string field of 1 to 64 bytes (a tool call's id or function name). */
static int short_string(json_t *obj, const char *name, const char *field, const char **out, struct oai_error *e) {
        int ret = opt_string(obj, name, field, out, e);
        if (ret < 0)
                return ret;
        if (!*out || !(*out)[0] || strlen(*out) > 64) {
                oai_bad_field(e, field, "%s must be a string of 1 to 64 bytes", field);
                return -EINVAL;
        }
        return 0;
}

/* An assistant message's tool_calls: [{id, type "function", function {name, arguments}}]
 * onto calls[*k...]; arguments must be the text of a JSON object. */
static int message_tool_calls(struct oai_request *r, json_t *tc, size_t i, size_t *k, struct oai_error *e) {
        char field[96];
        size_t j;
        json_t *c;

        snprintf(field, sizeof(field), "messages[%zu].tool_calls", i);
        if (!json_is_array(tc) || json_array_size(tc) > OAI_MAX_CALLS) {
                oai_bad_field(e, field, "%s must be an array of at most %d tool calls", field, OAI_MAX_CALLS);
                return -EINVAL;
        }
        json_array_foreach(tc, j, c) {
                struct dsv32_tool_call *call = &r->calls[*k];
                json_t *fn = json_object_get(c, "function");
                const char *type = json_string_value(json_object_get(c, "type"));
                int ret;
                snprintf(field, sizeof(field), "messages[%zu].tool_calls[%zu]", i, j);
                if (!json_is_object(c) || !json_is_object(fn) || (json_object_get(c, "type") && (!type || strcmp(type, "function") != 0))) {
                        oai_bad_field(e, field, "%s must be {\"id\", \"type\": \"function\", \"function\": {\"name\", \"arguments\"}}",
                                      field);
                        return -EINVAL;
                }
                snprintf(field, sizeof(field), "messages[%zu].tool_calls[%zu].id", i, j);
                if ((ret = short_string(c, "id", field, &call->id, e)) < 0)
                        return ret;
                snprintf(field, sizeof(field), "messages[%zu].tool_calls[%zu].function.name", i, j);
                if ((ret = short_string(fn, "name", field, &call->name, e)) < 0)
                        return ret;
                snprintf(field, sizeof(field), "messages[%zu].tool_calls[%zu].function.arguments", i, j);
                if ((ret = opt_string(fn, "arguments", field, &call->arguments, e)) < 0)
                        return ret;
                json_t *args = call->arguments ? json_loads(call->arguments, JSON_DECODE_ANY, NULL) : NULL;
                bool object = json_is_object(args);
                json_decref(args);
                if (!object) {
                        oai_bad_field(e, field, "%s must be the text of a JSON object (e.g. \"{\\\"city\\\": \\\"Paris\\\"}\")",
                                      field);
                        return -EINVAL;
                }
                (*k)++;
        }
        return 0;
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
        size_t n_calls = 0, i, k = 0;
        json_t *m;
        json_array_foreach(msgs, i, m) {
                json_t *tc = json_object_get(m, "tool_calls");
                n_calls += json_is_array(tc) ? json_array_size(tc) : 0;
        }
        r->messages = calloc(json_array_size(msgs), sizeof(*r->messages));
        r->chat = calloc(json_array_size(msgs), sizeof(*r->chat));
        r->calls = calloc(n_calls ? n_calls : 1, sizeof(*r->calls));
        if (!r->messages || !r->chat || !r->calls)
                return -ENOMEM;
        json_array_foreach(msgs, i, m) {
                char field[64];
                int ret;
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
                if (strcmp(role, "system") != 0 && strcmp(role, "user") != 0 && strcmp(role, "assistant") != 0 &&
                    strcmp(role, "tool") != 0) {
                        oai_bad_field(e, field, "%s '%s' is not supported (system, developer, user, assistant, tool)", field,
                                      role);
                        return -EINVAL;
                }
                struct dsv32_message *cm = &r->chat[i];
                cm->role = r->messages[i].role = role;
                json_t *tc = json_object_get(m, "tool_calls");
                if (tc && !json_is_null(tc) && !(json_is_array(tc) && json_array_size(tc) == 0)) {
                        snprintf(field, sizeof(field), "messages[%zu].tool_calls", i);
                        if (strcmp(role, "assistant") != 0) {
                                oai_bad_field(e, field, "%s: only assistant messages have tool calls", field);
                                return -EINVAL;
                        }
                        cm->tool_calls = &r->calls[k];
                        size_t k0 = k;
                        if ((ret = message_tool_calls(r, tc, i, &k, e)) < 0)
                                return ret;
                        cm->n_tool_calls = k - k0;
                        r->needs_events = true;
                }
                if (strcmp(role, "assistant") == 0) {
                        snprintf(field, sizeof(field), "messages[%zu].reasoning_content", i);
                        if ((ret = opt_string(m, "reasoning_content", field, &cm->reasoning_content, e)) < 0)
                                return ret;
                }
                if (strcmp(role, "tool") == 0) {
                        snprintf(field, sizeof(field), "messages[%zu].tool_call_id", i);
                        if ((ret = opt_string(m, "tool_call_id", field, &cm->tool_call_id, e)) < 0)
                                return ret;
                        if (!cm->tool_call_id || !cm->tool_call_id[0]) {
                                oai_bad_field(e, field, "%s is required: the id of the tool call this message answers",
                                              field);
                                return -EINVAL;
                        }
                        r->needs_events = true;
                }
                ret = message_content(r, json_object_get(m, "content"), i, &r->messages[i].content, e);
                if (ret < 0)
                        return ret;
                cm->content = r->messages[i].content;
        }
        r->req.messages = r->messages;
        r->req.n_messages = json_array_size(msgs);
        return 0;
}

/* True for a tool name the daemon takes: 1..64 letters, digits, _ - . */
static bool tool_name_ok(const char *s) {
        size_t n = strlen(s);
        if (n == 0 || n > 64)
                return false;
        for (; *s; s++)
                if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_' ||
                      *s == '-' || *s == '.'))
                        return false;
        return true;
}

/* tools: [{"type": "function", "function": {name, description, parameters, strict}}] and
 * tool_choice ("auto", "none"; "required" and a named function are refused). */
static int parse_tools(struct oai_request *r, struct oai_error *e) {
        json_t *tools = json_object_get(r->root, "tools");
        json_t *choice = json_object_get(r->root, "tool_choice");
        bool none = false;
        size_t i;
        json_t *t;

        if (choice && !json_is_null(choice)) {
                const char *c = json_string_value(choice);
                if (json_is_object(choice)) {
                        oai_bad_field(e, "tool_choice",
                                      "tool_choice: forcing a named function is not supported by this gateway (use \"auto\" or \"none\")");
                        return -EINVAL;
                }
                if (!c || (strcmp(c, "auto") != 0 && strcmp(c, "none") != 0 && strcmp(c, "required") != 0)) {
                        oai_bad_field(e, "tool_choice", "tool_choice must be \"auto\" or \"none\"");
                        return -EINVAL;
                }
                if (strcmp(c, "required") == 0) {
                        oai_bad_field(e, "tool_choice",
                                      "tool_choice \"required\" is not supported by this gateway (use \"auto\" or \"none\")");
                        return -EINVAL;
                }
                none = strcmp(c, "none") == 0;
        }
        json_t *ptc = json_object_get(r->root, "parallel_tool_calls");
        if (ptc && !json_is_null(ptc) && !json_is_boolean(ptc)) {
                oai_bad_field(e, "parallel_tool_calls", "parallel_tool_calls must be true or false");
                return -EINVAL;
        }
        if (json_is_false(ptc)) {
                oai_bad_field(e, "parallel_tool_calls",
                              "parallel_tool_calls false is not supported by this gateway: the model may call several tools");
                return -EINVAL;
        }
        if (!tools || json_is_null(tools))
                return 0;
        if (!json_is_array(tools)) {
                oai_bad_field(e, "tools", "tools must be an array of {\"type\": \"function\", \"function\": {...}}");
                return -EINVAL;
        }
        if (json_array_size(tools) > OAI_MAX_TOOLS) {
                oai_bad_field(e, "tools", "at most %d tools per request (got %zu)", OAI_MAX_TOOLS, json_array_size(tools));
                return -EINVAL;
        }
        if (json_array_size(tools) == 0)
                return 0;
        r->tools = calloc(json_array_size(tools), sizeof(*r->tools));
        r->tool_params = calloc(json_array_size(tools), sizeof(*r->tool_params));
        if (!r->tools || !r->tool_params)
                return -ENOMEM;
        r->n_tools = json_array_size(tools); /* oai_request_free frees tool_params[0, n_tools) */
        json_array_foreach(tools, i, t) {
                char field[64];
                const char *type = json_string_value(json_object_get(t, "type"));
                json_t *fn = json_object_get(t, "function");
                int ret;

                snprintf(field, sizeof(field), "tools[%zu]", i);
                if (!json_is_object(t) || !type || strcmp(type, "function") != 0) {
                        oai_bad_field(e, field, "%s must be an object with \"type\": \"function\" (the only kind of tool)", field);
                        return -EINVAL;
                }
                snprintf(field, sizeof(field), "tools[%zu].function", i);
                if (!json_is_object(fn)) {
                        oai_bad_field(e, field, "%s must be an object with a name", field);
                        return -EINVAL;
                }
                struct dsv32_tool *tool = &r->tools[i];
                snprintf(field, sizeof(field), "tools[%zu].function.name", i);
                if ((ret = opt_string(fn, "name", field, &tool->name, e)) < 0)
                        return ret;
                if (!tool->name || !tool_name_ok(tool->name)) {
                        oai_bad_field(e, field, "%s must be 1 to 64 letters, digits, '_', '-' or '.'", field);
                        return -EINVAL;
                }
                for (size_t j = 0; j < i; j++)
                        if (strcmp(r->tools[j].name, tool->name) == 0) {
                                oai_bad_field(e, field, "%s: two tools are called '%s'", field, tool->name);
                                return -EINVAL;
                        }
                snprintf(field, sizeof(field), "tools[%zu].function.description", i);
                if ((ret = opt_string(fn, "description", field, &tool->description, e)) < 0)
                        return ret;
                if (tool->description && strlen(tool->description) > OAI_MAX_TOOL_DESCRIPTION) {
                        oai_bad_field(e, field, "%s is over %d bytes", field, OAI_MAX_TOOL_DESCRIPTION);
                        return -EINVAL;
                }
                snprintf(field, sizeof(field), "tools[%zu].function.parameters", i);
                json_t *params = json_object_get(fn, "parameters");
                if (params && !json_is_null(params)) {
                        if (!json_is_object(params)) {
                                oai_bad_field(e, field, "%s must be a JSON schema object", field);
                                return -EINVAL;
                        }
                        r->tool_params[i] = json_dumps(params, JSON_COMPACT | JSON_SORT_KEYS);
                        if (!r->tool_params[i])
                                return -ENOMEM;
                        if (strlen(r->tool_params[i]) > OAI_MAX_TOOL_PARAMETERS) {
                                oai_bad_field(e, field, "%s is over %d bytes of JSON", field, OAI_MAX_TOOL_PARAMETERS);
                                return -EINVAL;
                        }
                        tool->parameters = r->tool_params[i];
                }
                json_t *strict = json_object_get(fn, "strict");
                if (json_is_true(strict)) {
                        snprintf(field, sizeof(field), "tools[%zu].function.strict", i);
                        oai_bad_field(e, field, "%s: strict schema adherence is not supported by this gateway", field);
                        return -EINVAL;
                }
        }
        if (!none) {
                r->req.tools = r->tools;
                r->req.n_tools = r->n_tools;
                r->needs_events = true;
        }
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
                {"functions", "the legacy functions field: send tools instead"},
                {"echo", "the prompt is not echoed"},
                {"suffix", "no fill-in-the-middle"},
        };
        int ret;

        for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
                if ((ret = refuse_unless_default(root, fields[i].name, fields[i].why, e)) < 0)
                        return ret;
        if (r->kind == OAI_COMPLETION &&
            ((ret = refuse_unless_default(root, "tools", "tools belong to /v1/chat/completions", e)) < 0 ||
             (ret = refuse_unless_default(root, "tool_choice", "tools belong to /v1/chat/completions", e)) < 0))
                return ret;
        json_int_t best_of = 1;
        if ((ret = get_int(root, "best_of", 1, 1, &best_of, e)) < 0)
                return ret;
        return response_format(r, json_object_get(root, "response_format"), e);
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
            (ret = parse_unsupported(r, e)) < 0 || (kind == OAI_CHAT && (ret = parse_tools(r, e)) < 0) ||
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
        free(r->chat);
        free(r->calls);
        free(r->tools);
        for (size_t i = 0; r->tool_params && i < r->n_tools; i++) /* calloc'd: NULL where not dumped */
                free(r->tool_params[i]);
        free(r->tool_params);
        free(r->prompt_tokens);
        json_decref(r->root);
        *r = (struct oai_request){0};
}
