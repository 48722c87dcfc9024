/* DeepSeek-V3.2 prompt encoder: encode_messages() of the official encoding_dsv32.py, message
 * by message, with Python's semantics where they show in the text (str.format of None is
 * "None", truthiness decides optional parts, json.dumps formatting), and its assertion
 * failures turned into -EINVAL with a message. */
#include "config.h"

#include "daemon/tokenizer/chat.h"
#include "daemon/tokenizer/chat_tokens.h"
#include "daemon/tokenizer/pyjson.h"

static const char tools_head[] =
        "## Tools\n\n"
        "You have access to a set of tools you can use to answer the user's question.\n"
        "You can invoke functions by writing a \"<" DSML "function_calls>\" block like the following as part of "
        "your reply to the user:\n"
        "<" DSML "function_calls>\n"
        "<" DSML "invoke name=\"$FUNCTION_NAME\">\n"
        "<" DSML "parameter name=\"$PARAMETER_NAME\" string=\"true|false\">$PARAMETER_VALUE</" DSML "parameter>\n"
        "...\n"
        "</" DSML "invoke>\n"
        "<" DSML "invoke name=\"$FUNCTION_NAME2\">\n"
        "...\n"
        "</" DSML "invoke>\n"
        "</" DSML "function_calls>\n\n"
        "String and scalar parameters should be specified as is without any escaping or quotes, while lists and "
        "objects should use JSON format. The \"string\" attribute should be set to \"true\" for string type "
        "parameters and \"false\" for other types (numbers, booleans, arrays, objects).\n\n"
        "If the thinking_mode is enabled, then after function results you should strongly consider outputting a "
        "thinking block. Here is an example:\n\n"
        "<" DSML "function_calls>\n"
        "...\n"
        "</" DSML "function_calls>\n\n"
        "<function_results>\n"
        "...\n"
        "</function_results>\n\n" THINK_START "...thinking about results" THINK_END "\n\n"
        "Here are the functions available in JSONSchema format:\n"
        "<functions>\n";
static const char tools_tail[] = "\n</functions>\n";
static const char response_format_head[] =
        "## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n";

struct enc {
        struct dsv_strbuf out;
        struct dsv_error *err;
        enum dsv_chat_mode mode;
        json_t *msgs; /* the full conversation as rendered (context + messages) */
        size_t last_user;
        bool has_user;
};

#define TRY(x)                      \
        do {                        \
                int _r = (x);       \
                if (_r < 0)         \
                        return _r;  \
        } while (0)

static const char *role_of(json_t *m) {
        json_t *r = json_object_get(m, "role");
        return json_is_string(r) ? json_string_value(r) : NULL;
}

/* Python truthiness of an optional field. */
static bool truthy(json_t *v) {
        if (!v || json_is_null(v) || json_is_false(v))
                return false;
        if (json_is_string(v))
                return json_string_length(v) > 0;
        if (json_is_array(v))
                return json_array_size(v) > 0;
        if (json_is_object(v))
                return json_object_size(v) > 0;
        if (json_is_integer(v))
                return json_integer_value(v) != 0;
        if (json_is_real(v))
                return json_real_value(v) != 0.0;
        return true;
}

/* "{content}".format(content=v): a string as is, None as "None". */
static int add_format(struct enc *e, json_t *v, const char *field, size_t idx) {
        if (!v || json_is_null(v))
                return dsv_strbuf_adds(&e->out, "None");
        if (!json_is_string(v))
                return dsv_error_set(e->err, EINVAL, "message %zu: \"%s\" must be a string", idx, field);
        return dsv_strbuf_add(&e->out, json_string_value(v), json_string_length(v));
}

static int render_tools(struct enc *e, json_t *tools, size_t idx) {
        size_t i;
        json_t *t;
        TRY(dsv_strbuf_adds(&e->out, tools_head));
        json_array_foreach(tools, i, t) {
                json_t *f = json_object_get(t, "function");
                if (!f)
                        return dsv_error_set(e->err, EINVAL, "message %zu: tools[%zu] has no \"function\"", idx, i);
                if (i > 0)
                        TRY(dsv_strbuf_add(&e->out, "\n", 1));
                TRY(dsv_pyjson_dump(&e->out, f));
        }
        return dsv_strbuf_adds(&e->out, tools_tail);
}

static int render_response_format(struct enc *e, json_t *rf) {
        TRY(dsv_strbuf_add(&e->out, "\n\n", 2));
        TRY(dsv_strbuf_adds(&e->out, response_format_head));
        return dsv_pyjson_dump(&e->out, rf);
}

static int render_tools_and_format(struct enc *e, json_t *m, size_t idx) {
        json_t *tools = json_object_get(m, "tools"), *rf = json_object_get(m, "response_format");
        if (truthy(tools)) {
                if (!json_is_array(tools))
                        return dsv_error_set(e->err, EINVAL, "message %zu: \"tools\" must be an array", idx);
                TRY(dsv_strbuf_add(&e->out, "\n\n", 2));
                TRY(render_tools(e, tools, idx));
        }
        if (truthy(rf))
                TRY(render_response_format(e, rf));
        return 0;
}

static int open_assistant(struct enc *e, size_t idx) {
        bool think = e->has_user && idx == e->last_user && e->mode == DSV_CHAT_MODE_THINKING;
        return dsv_strbuf_adds(&e->out, think ? THINK_START : THINK_END);
}

/* One tool call as DSML; arguments is a JSON object or its text. */
static int render_invoke(struct enc *e, json_t *call, size_t idx, size_t k) {
        json_t *f = json_object_get(call, "function"), *name, *args, *parsed = NULL, *v;
        const char *key;
        bool first = true;
        int r = 0;
        if (!json_is_object(f))
                return dsv_error_set(e->err, EINVAL, "message %zu: tool_calls[%zu] has no \"function\" object", idx, k);
        name = json_object_get(f, "name");
        args = json_object_get(f, "arguments");
        if (!json_is_string(name))
                return dsv_error_set(e->err, EINVAL, "message %zu: tool_calls[%zu].function.name must be a string", idx, k);
        if (json_is_string(args)) {
                json_error_t je;
                parsed = json_loadb(json_string_value(args), json_string_length(args), JSON_DECODE_ANY, &je);
                if (!parsed)
                        return dsv_error_set(e->err, EINVAL, "message %zu: tool_calls[%zu].function.arguments is not JSON: %s",
                                             idx, k, je.text);
                args = parsed;
        }
        if (!json_is_object(args)) {
                json_decref(parsed);
                return dsv_error_set(e->err, EINVAL, "message %zu: tool_calls[%zu].function.arguments must be a JSON object",
                                     idx, k);
        }
        r = dsv_strbuf_adds(&e->out, "<" DSML "invoke name=\"");
        if (r >= 0)
                r = dsv_strbuf_add(&e->out, json_string_value(name), json_string_length(name));
        if (r >= 0)
                r = dsv_strbuf_adds(&e->out, "\">\n");
        json_object_foreach(args, key, v) {
                if (r < 0)
                        break;
                bool is_str = json_is_string(v);
                if (!first)
                        r = dsv_strbuf_add(&e->out, "\n", 1);
                first = false;
                if (r >= 0)
                        r = dsv_strbuf_adds(&e->out, "<" DSML "parameter name=\"");
                if (r >= 0)
                        r = dsv_strbuf_adds(&e->out, key);
                if (r >= 0)
                        r = dsv_strbuf_adds(&e->out, is_str ? "\" string=\"true\">" : "\" string=\"false\">");
                if (r >= 0)
                        r = is_str ? dsv_strbuf_add(&e->out, json_string_value(v), json_string_length(v))
                                   : dsv_pyjson_dump(&e->out, v);
                if (r >= 0)
                        r = dsv_strbuf_adds(&e->out, "</" DSML "parameter>");
        }
        if (r >= 0)
                r = dsv_strbuf_adds(&e->out, "\n</" DSML "invoke>");
        json_decref(parsed);
        return r;
}

static int render_assistant(struct enc *e, json_t *m, size_t idx) {
        json_t *calls = json_object_get(m, "tool_calls"), *content = json_object_get(m, "content"),
               *reasoning = json_object_get(m, "reasoning_content");
        bool has_calls = truthy(calls);
        if (has_calls && !json_is_array(calls))
                return dsv_error_set(e->err, EINVAL, "message %zu: \"tool_calls\" must be an array", idx);
        if (e->mode == DSV_CHAT_MODE_THINKING && (!e->has_user || idx > e->last_user)) {
                if (!truthy(reasoning) && !has_calls)
                        return dsv_error_set(e->err, EINVAL,
                                             "message %zu: in thinking mode an assistant message after the last user message "
                                             "needs reasoning_content or tool_calls",
                                             idx);
                if (truthy(reasoning))
                        TRY(add_format(e, reasoning, "reasoning_content", idx));
                TRY(dsv_strbuf_adds(&e->out, THINK_END));
        }
        if (truthy(content))
                TRY(add_format(e, content, "content", idx));
        if (has_calls) {
                size_t k;
                json_t *c;
                TRY(dsv_strbuf_adds(&e->out, "\n\n<" DSML "function_calls>\n"));
                json_array_foreach(calls, k, c) {
                        if (k > 0)
                                TRY(dsv_strbuf_add(&e->out, "\n", 1));
                        TRY(render_invoke(e, c, idx, k));
                }
                TRY(dsv_strbuf_adds(&e->out, "\n</" DSML "function_calls>"));
        }
        return dsv_strbuf_adds(&e->out, EOS);
}

static int render_tool(struct enc *e, json_t *m, size_t idx) {
        /* The assistant message this output answers: the nearest one before the run of tool
         * messages that ends here. */
        size_t prev = idx;
        json_t *a = NULL;
        while (prev > 0) {
                prev--;
                a = json_array_get(e->msgs, prev);
                if (!role_of(a) || strcmp(role_of(a), "tool") != 0)
                        break;
                a = NULL;
        }
        if (!a || !role_of(a) || strcmp(role_of(a), "assistant") != 0)
                return dsv_error_set(e->err, EINVAL, "message %zu: a tool message must follow an assistant message with tool_calls",
                                     idx);
        size_t order = idx - prev;
        json_t *calls = json_object_get(a, "tool_calls");
        if (!truthy(calls) || !json_is_array(calls) || json_array_size(calls) < order)
                return dsv_error_set(e->err, EINVAL, "message %zu: tool output without a matching tool call", idx);
        if (order == 1)
                TRY(dsv_strbuf_adds(&e->out, "\n\n<function_results>"));
        TRY(dsv_strbuf_adds(&e->out, "\n<result>"));
        TRY(add_format(e, json_object_get(m, "content"), "content", idx));
        TRY(dsv_strbuf_adds(&e->out, "</result>"));
        if (order == json_array_size(calls)) {
                bool think = e->mode == DSV_CHAT_MODE_THINKING && (!e->has_user || idx >= e->last_user);
                TRY(dsv_strbuf_adds(&e->out, "\n</function_results>"));
                TRY(dsv_strbuf_adds(&e->out, think ? "\n\n" THINK_START : "\n\n" THINK_END));
        }
        return 0;
}

static int render_message(struct enc *e, size_t idx) {
        json_t *m = json_array_get(e->msgs, idx);
        const char *role = role_of(m);
        if (!json_is_object(m) || !role)
                return dsv_error_set(e->err, EINVAL, "message %zu: not an object with a \"role\"", idx);
        if (strcmp(role, "system") == 0) {
                json_t *content = json_object_get(m, "content");
                if (truthy(content))
                        TRY(add_format(e, content, "content", idx));
                return render_tools_and_format(e, m, idx);
        }
        if (strcmp(role, "developer") == 0) {
                json_t *content = json_object_get(m, "content");
                if (!truthy(content))
                        return dsv_error_set(e->err, EINVAL, "message %zu: a developer message needs content", idx);
                TRY(dsv_strbuf_adds(&e->out, USER));
                TRY(render_tools_and_format(e, m, idx));
                TRY(dsv_strbuf_adds(&e->out, "\n\n# The user's message is: "));
                TRY(add_format(e, content, "content", idx));
                TRY(dsv_strbuf_adds(&e->out, ASSISTANT));
                return open_assistant(e, idx);
        }
        if (strcmp(role, "user") == 0) {
                TRY(dsv_strbuf_adds(&e->out, USER));
                TRY(add_format(e, json_object_get(m, "content"), "content", idx));
                TRY(dsv_strbuf_adds(&e->out, ASSISTANT));
                return open_assistant(e, idx);
        }
        if (strcmp(role, "tool") == 0)
                return render_tool(e, m, idx);
        if (strcmp(role, "assistant") == 0)
                return render_assistant(e, m, idx);
        return dsv_error_set(e->err, EINVAL, "message %zu: unknown role \"%s\"", idx, role);
}

static bool is_user_role(const char *role) {
        return role && (strcmp(role, "user") == 0 || strcmp(role, "developer") == 0);
}

/* Builds e->msgs: tools attached, and in thinking mode with drop_thinking the earlier
 * assistants' reasoning removed (drop_thinking_messages()). */
static int prepare(struct enc *e, const json_t *messages, const json_t *tools, const struct dsv_chat_opts *o) {
        size_t n = json_array_size(messages), i;
        json_t *m;
        bool attach = tools && truthy((json_t *)tools);
        e->msgs = json_array();
        if (!e->msgs)
                return -ENOMEM;
        if (attach) {
                json_t *first = json_array_get(messages, 0);
                bool first_system = first && role_of(first) && strcmp(role_of(first), "system") == 0;
                if (first_system && truthy(json_object_get(first, "tools")))
                        return dsv_error_set(e->err, EINVAL, "tools are given twice (argument and system message)");
                if (!first_system) {
                        if (o->n_context > 0)
                                return dsv_error_set(e->err, EINVAL, "tools need a system message at the start of the context");
                        json_t *sys = json_pack("{s:s, s:s, s:O}", "role", "system", "content", "", "tools", tools);
                        if (!sys || json_array_append_new(e->msgs, sys) < 0)
                                return -ENOMEM;
                        attach = false;
                }
        }
        json_array_foreach((json_t *)messages, i, m) {
                if (attach && i == 0) {
                        json_t *c = json_copy(m);
                        if (!c || json_object_set(c, "tools", (json_t *)tools) < 0 || json_array_append_new(e->msgs, c) < 0)
                                return -ENOMEM;
                } else if (json_array_append(e->msgs, m) < 0)
                        return -ENOMEM;
        }
        n = json_array_size(e->msgs);
        e->has_user = false;
        for (i = n; i-- > 0;)
                if (is_user_role(role_of(json_array_get(e->msgs, i)))) {
                        e->last_user = i;
                        e->has_user = true;
                        break;
                }
        if (o->mode == DSV_CHAT_MODE_THINKING && o->drop_thinking) {
                for (i = 0; i < n; i++) {
                        m = json_array_get(e->msgs, i);
                        const char *role = role_of(m);
                        if (e->has_user && i >= e->last_user)
                                break;
                        if (!role || (strcmp(role, "user") && strcmp(role, "system") && strcmp(role, "tool") &&
                                      strcmp(role, "assistant")))
                                /* drop_thinking_messages() leaves such a message out, and the
                                 * encoder then fails on the shortened list. */
                                return dsv_error_set(e->err, EINVAL,
                                                     "message %zu: a \"%s\" message before the last user message cannot be "
                                                     "encoded in thinking mode",
                                                     i, role ? role : "(no role)");
                        if (!e->has_user)
                                break; /* last_user_idx = -1: every message is kept as is */
                        if (strcmp(role, "assistant") == 0 && json_object_get(m, "reasoning_content")) {
                                json_t *c = json_copy(m);
                                if (!c || json_object_del(c, "reasoning_content") < 0 || json_array_set_new(e->msgs, i, c) < 0)
                                        return -ENOMEM;
                        }
                }
        }
        return 0;
}

int dsv_chat_encode(const json_t *messages, const json_t *tools, const struct dsv_chat_opts *opts, char **ret,
                    size_t *ret_len, struct dsv_error *err) {
        struct dsv_chat_opts o = opts ? *opts : (struct dsv_chat_opts)DSV_CHAT_OPTS_INIT;
        struct enc e = {.err = err, .mode = o.mode};
        int r;
        if (!json_is_array(messages) || !ret)
                return dsv_error_set(err, EINVAL, "messages must be a JSON array");
        if (tools && !json_is_array(tools) && !json_is_null(tools))
                return dsv_error_set(err, EINVAL, "tools must be a JSON array");
        if (o.n_context > json_array_size(messages))
                return dsv_error_set(err, EINVAL, "context of %zu messages but only %zu messages", o.n_context,
                                     json_array_size(messages));
        if ((r = prepare(&e, messages, tools, &o)) < 0)
                goto fail;
        size_t shift = json_array_size(e.msgs) - json_array_size(messages); /* a prepended system message */
        size_t start = o.n_context ? o.n_context + shift : 0;
        if ((r = dsv_strbuf_add(&e.out, "", 0)) < 0)
                goto fail;
        if (o.add_bos && o.n_context == 0 && (r = dsv_strbuf_adds(&e.out, BOS)) < 0)
                goto fail;
        for (size_t i = start; i < json_array_size(e.msgs); i++)
                if ((r = render_message(&e, i)) < 0)
                        goto fail;
        json_decref(e.msgs);
        *ret = e.out.p;
        if (ret_len)
                *ret_len = e.out.n;
        return 0;
fail:
        if (r == -ENOMEM)
                dsv_error_set(err, ENOMEM, "out of memory");
        json_decref(e.msgs);
        dsv_strbuf_done(&e.out);
        return r;
}

int dsv_chat_encode_json(const char *json, size_t len, const struct dsv_chat_opts *opts, char **ret,
                         size_t *ret_len, struct dsv_error *err) {
        json_error_t je;
        json_t *root = json_loadb(json, len, 0, &je), *messages = root, *tools = NULL;
        int r;
        if (!root)
                return dsv_error_set(err, EINVAL, "chat JSON: line %d: %s", je.line, je.text);
        if (json_is_object(root)) {
                messages = json_object_get(root, "messages");
                tools = json_object_get(root, "tools");
        }
        r = dsv_chat_encode(messages, tools, opts, ret, ret_len, err);
        json_decref(root);
        return r;
}
