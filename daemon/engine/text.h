/* The engine's adapter to the text layer (daemon/tokenizer): text prompts, TOKENIZE,
 * DETOKENIZE, streaming detokenization and chat encoding. Built without the tokenizer (or
 * with a model that has no tokenizer.json) every call answers -ENOTSUP and
 * dsv_text_unavailable() says why in words a client can act on; token-id prompts work
 * either way. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/util.h"

struct dsv_text;
struct dsv_engine_msg; /* engine.h */
struct dsv_engine_tool;
struct dsv_text_parser;
struct dsv_text_stream;

/* Loads model_dir/tokenizer.json. -ENOTSUP: built without the tokenizer; -ENOENT: the model
 * has none (token ids only); any other error: the file is there but broken, err names it,
 * the cause and the fix (the daemon refuses to start on it). */
int dsv_text_open(const char *model_dir, struct dsv_text **ret, struct dsv_error *err);
void dsv_text_free(struct dsv_text *t);
bool dsv_text_has_chat(const struct dsv_text *t);
/* Why text is unavailable when t is NULL, for clients: what they can send instead. */
const char *dsv_text_unavailable(void);

/* Token id's bytes (valid as long as t) and true, or false for a special token or an id that
 * names none: what structured output's masks are built from. */
bool dsv_text_token_bytes(const struct dsv_text *t, int32_t id, const char **p, size_t *n);
int dsv_text_encode(const struct dsv_text *t, const char *s, size_t n, bool add_bos, int32_t **ret, size_t *ret_n);
int dsv_text_decode(const struct dsv_text *t, const int32_t *ids, size_t n, char **ret, size_t *ret_len);
/* Chat messages (with their reasoning, tool calls and tool results) and the tools the model
 * may call to prompt ids (the V3.2 encoding). -EINVAL with err saying which message or tool
 * is wrong: text that is not UTF-8, a tool's parameters that are not a JSON object, a tool
 * call's arguments that are not one, a tool message without a tool_call_id or naming no
 * call of the assistant message it answers, a conversation the encoder refuses. */
int dsv_text_chat(const struct dsv_text *t, const struct dsv_engine_msg *m, size_t n, const struct dsv_engine_tool *tools,
                  size_t n_tools, bool thinking, int32_t **ret, size_t *ret_n, struct dsv_error *err);

/* The chat output parser (daemon/tokenizer/chat.h) for the engine: what generated text is. */
enum dsv_text_chat_kind {
        DSV_TEXT_CHAT_REASONING, /* text */
        DSV_TEXT_CHAT_CONTENT,   /* text */
        DSV_TEXT_CHAT_TOOL_CALL, /* name, text: its arguments (a JSON object's text); a call is whole */
        DSV_TEXT_CHAT_ERROR,     /* message, text: the raw output concerned */
};
struct dsv_text_chat_event {
        enum dsv_text_chat_kind kind;
        const char *text, *name, *message;
        size_t len, name_len;
};
typedef int (*dsv_text_chat_fn)(void *ud, const struct dsv_text_chat_event *ev);
int dsv_text_parser_new(bool thinking, struct dsv_text_parser **ret);
void dsv_text_parser_free(struct dsv_text_parser *p);
/* Text in any chunking gives the same events (deltas cut differently, never reordered). */
int dsv_text_parser_feed(struct dsv_text_parser *p, const char *s, size_t n, dsv_text_chat_fn fn, void *ud);
/* The end of the output: flushes what was held back. */
int dsv_text_parser_finish(struct dsv_text_parser *p, dsv_text_chat_fn fn, void *ud);

int dsv_text_stream_new(const struct dsv_text *t, struct dsv_text_stream **ret);
void dsv_text_stream_free(struct dsv_text_stream *s);
/* Text completed by one more id (never part of a UTF-8 character); valid until the next call. */
int dsv_text_stream_push(struct dsv_text_stream *s, int32_t id, const char **text, size_t *len);
int dsv_text_stream_flush(struct dsv_text_stream *s, const char **text, size_t *len);
