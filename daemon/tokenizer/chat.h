/* DeepSeek-V3.2's chat format: the prompt encoder (the same text as the official
 * encoding/encoding_dsv32.py of the DeepSeek-V3.2 model repository, re-implemented from
 * reading it) and the parser that splits generated text into reasoning, content and DSML
 * tool calls, streaming or not with the same result.
 *
 * Prompt (thinking mode, tools on the system message):
 *   <｜begin▁of▁sentence｜>{system}\n\n## Tools\n\n...<functions>\n{tool JSON}\n</functions>\n
 *   <｜User｜>{user}<｜Assistant｜><think>            (</think> in chat mode, and for every
 *                                                    user turn but the last)
 *   {reasoning}</think>{content}\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name="f">\n
 *   <｜DSML｜parameter name="k" string="true">v</｜DSML｜parameter>\n</｜DSML｜invoke>\n
 *   </｜DSML｜function_calls><｜end▁of▁sentence｜>
 *   \n\n<function_results>\n<result>{tool output}</result>\n</function_results>\n\n<think>
 * Reasoning is rendered only for assistant turns after the last user message. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "daemon/util.h"

enum dsv_chat_mode {
        DSV_CHAT_MODE_CHAT,     /* "chat": the assistant answers after </think> */
        DSV_CHAT_MODE_THINKING, /* "thinking": the last turn opens <think> */
};

struct dsv_chat_opts {
        enum dsv_chat_mode mode;
        /* encode_messages(drop_thinking=): drop reasoning_content of assistant turns before
         * the last user message (thinking mode only; such reasoning is never rendered). */
        bool drop_thinking;
        /* encode_messages(add_default_bos_token=): start with BOS when there is no context. */
        bool add_bos;
        /* encode_messages(context=): the first n_context messages are already in the
         * sequence; only the rest is rendered (they still decide the last user turn). */
        size_t n_context;
};
#define DSV_CHAT_OPTS_INIT { .mode = DSV_CHAT_MODE_THINKING, .drop_thinking = true, .add_bos = true }

/* Renders messages (a JSON array of OpenAI-style messages: role system / developer / user /
 * assistant / tool; content; reasoning_content; tool_calls [{type, function: {name,
 * arguments}}] with arguments a JSON object or its text; tools and response_format on system
 * and developer messages) into prompt text (NUL-terminated, caller frees). tools (may be
 * NULL), an OpenAI tools array, is attached to messages[0] when that is a system message
 * (which must not have tools of its own), otherwise to a system message with empty content
 * put first. Invalid
 * conversations (the cases where the official encoder raises) fail with -EINVAL and a
 * message in err. */
int dsv_chat_encode(const json_t *messages, const json_t *tools, const struct dsv_chat_opts *opts, char **ret,
                    size_t *ret_len, struct dsv_error *err);
/* Same from JSON text: either the messages array or an object {"messages": [...],
 * "tools": [...]}. */
int dsv_chat_encode_json(const char *json, size_t len, const struct dsv_chat_opts *opts, char **ret,
                         size_t *ret_len, struct dsv_error *err);

/* ------------------------------------------------------------------ output parser */

enum dsv_chat_event_type {
        DSV_CHAT_EVENT_REASONING, /* text: more reasoning */
        DSV_CHAT_EVENT_CONTENT,   /* text: more answer */
        DSV_CHAT_EVENT_TOOL_CALL, /* name, arguments (a JSON object as text), index */
        DSV_CHAT_EVENT_ERROR,     /* text: what is wrong; raw: the text concerned */
};

struct dsv_chat_event {
        enum dsv_chat_event_type type;
        const char *text;
        size_t len;
        const char *name;
        size_t name_len;
        const char *arguments;
        size_t arguments_len;
        const char *raw;
        size_t raw_len;
        size_t index; /* TOOL_CALL: 0, 1, ... in order */
};

/* Return < 0 to stop; the parser returns that value. */
typedef int (*dsv_chat_event_fn)(void *userdata, const struct dsv_chat_event *ev);

struct dsv_chat_parser;
int dsv_chat_parser_new(enum dsv_chat_mode mode, struct dsv_chat_parser **ret);
void dsv_chat_parser_free(struct dsv_chat_parser *p);
/* Feeds generated text (any chunking; a chunk may end inside a marker). Events come as soon
 * as text is certain: reasoning and content as deltas, a tool call when its invoke block
 * closes. */
int dsv_chat_parser_feed(struct dsv_chat_parser *p, const char *text, size_t len, dsv_chat_event_fn cb,
                         void *userdata);
/* End of generation (an EOS token, a stop, max_tokens): flushes held-back text and reports
 * an unfinished tool call block as an error. */
int dsv_chat_parser_finish(struct dsv_chat_parser *p, dsv_chat_event_fn cb, void *userdata);
/* After finish: whether generation stopped inside the reasoning (no </think>). */
bool dsv_chat_parser_reasoning_open(const struct dsv_chat_parser *p);

/* The whole parse at once; equal to accumulating the events of any feed chunking. */
struct dsv_chat_tool_call {
        char *name;
        char *arguments;
};
struct dsv_chat_error {
        char *message;
        char *raw;
};
struct dsv_chat_result {
        char *reasoning, *content; /* never NULL after success */
        size_t reasoning_len, content_len;
        struct dsv_chat_tool_call *calls;
        size_t n_calls;
        struct dsv_chat_error *errors;
        size_t n_errors;
        bool reasoning_open;
};
int dsv_chat_parse(const char *text, size_t len, enum dsv_chat_mode mode, struct dsv_chat_result *ret);
/* Accumulates one event into a result (the non-streaming path uses it too). */
int dsv_chat_result_add(struct dsv_chat_result *r, const struct dsv_chat_event *ev);
void dsv_chat_result_done(struct dsv_chat_result *r);
