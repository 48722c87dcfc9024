/* Text adapter (see text.h). DSV_WITH_TOKENIZER is defined by daemon/server/local.mk when
 * the tokenizer library is part of the build. */
#include "config.h"

#include "daemon/engine/text.h"

#include "daemon/engine/engine.h"
#include "daemon/preset_model.h"

#include <stdlib.h>

#ifdef DSV_WITH_TOKENIZER
#include <jansson.h>

#include "daemon/tokenizer/chat.h"
#include "daemon/tokenizer/tokenizer.h"

struct dsv_text {
        struct dsv_tok *tok;
};

struct dsv_text_stream {
        struct dsv_tok_stream *s;
};

static char unavailable[600] = "the model has no tokenizer.json";

const char *dsv_text_unavailable(void) { return unavailable; }

int dsv_text_open(const char *model_dir, struct dsv_text **ret, struct dsv_error *err) {
        _cleanup_free_ char *path = NULL;
        struct dsv_text *t;
        int r;

        const char *preset;
        if (dsv_preset_model_name(model_dir, &preset)) {
                snprintf(unavailable, sizeof(unavailable),
                         "this dsv32d serves token ids only: its model is the preset %s (random weights made on the "
                         "backend, no tokenizer); send token ids (dsv32 generate --tokens 0,17,42)",
                         preset);
                return dsv_error_set(err, ENOENT, "the preset %s has no tokenizer; only token-id prompts will work", preset);
        }
        if (asprintf(&path, "%s/tokenizer.json", model_dir) < 0)
                return -ENOMEM;
        if (access(path, F_OK) < 0) {
                /* set once, before the engine says it is ready; read by clients' requests after */
                snprintf(unavailable, sizeof(unavailable),
                         "this dsv32d serves token ids only: its model has no tokenizer.json (%s); send token ids "
                         "(dsv32 generate --tokens 0,17,42), or ask its operator to add the checkpoint's tokenizer.json",
                         path);
                return dsv_error_set(err, ENOENT, "%s does not exist; only token-id prompts will work", path);
        }
        t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        r = dsv_tok_load(path, NULL, &t->tok, err);
        if (r < 0) {
                /* a tokenizer that is there but broken is an error of the checkpoint, not a
                 * reason to serve ids only: the message says which file and how to fix it */
                char why[sizeof(err->msg)];
                const char *m = err->msg;
                size_t pl = strlen(path);
                if (strncmp(m, path, pl) == 0 && strncmp(m + pl, ": ", 2) == 0)
                        m += pl + 2; /* named once, below */
                if (strncmp(m, "tokenizer.json: ", 16) == 0)
                        m += 16;
                snprintf(why, sizeof(why), "%s", m);
                free(t);
                return dsv_error_set(err, r,
                                     "%s cannot be used: %s; replace it with the checkpoint's own tokenizer.json, or move "
                                     "it away to serve token-id prompts only",
                                     path, why);
        }
        *ret = t;
        return 0;
}

void dsv_text_free(struct dsv_text *t) {
        if (!t)
                return;
        dsv_tok_free(t->tok);
        free(t);
}

bool dsv_text_has_chat(const struct dsv_text *t) { return t != NULL; }

bool dsv_text_token_bytes(const struct dsv_text *t, int32_t id, const char **p, size_t *n) {
        return !dsv_tok_is_special(t->tok, id) && dsv_tok_id_bytes(t->tok, id, p, n);
}

int dsv_text_encode(const struct dsv_text *t, const char *s, size_t n, bool add_bos, int32_t **ret, size_t *ret_n) {
        struct dsv_tok_ids ids = {0};
        int r;
        int32_t bos = dsv_tok_bos_id(t->tok);
        if (add_bos && bos >= 0 && (r = dsv_tok_ids_push(&ids, bos)) < 0)
                return r;
        r = dsv_tok_encode(t->tok, s, n, 0, &ids);
        if (r < 0) {
                dsv_tok_ids_done(&ids);
                return r;
        }
        *ret = ids.v;
        *ret_n = ids.n;
        return 0;
}

int dsv_text_decode(const struct dsv_text *t, const int32_t *ids, size_t n, char **ret, size_t *ret_len) {
        return dsv_tok_decode(t->tok, ids, n, 0, ret, ret_len);
}

/* A JSON string of s, or NULL (with err set) when it is not UTF-8 or holds a NUL byte. */
static json_t *jstr(const struct dsv_engine_str *s, const char *what, size_t i, const char *field, struct dsv_error *err) {
        json_t *j = json_stringn(s->p ? s->p : "", s->len);
        if (!j)
                dsv_error_set(err, EINVAL, "%s %zu: %s must be UTF-8 text without NUL bytes", what, i, field);
        return j;
}

/* Sets key of o to v (taking v); false (with err set unless v is NULL) on failure. */
static bool set_new(json_t *o, const char *key, json_t *v, struct dsv_error *err) {
        if (!v)
                return false;
        if (json_object_set_new(o, key, v) < 0) {
                dsv_error_set(err, ENOMEM, "out of memory");
                return false;
        }
        return true;
}

/* A tool message must name a call of the assistant message it answers. */
static int check_tool_id(const struct dsv_engine_msg *m, size_t i, struct dsv_error *err) {
        const struct dsv_engine_str *id = &m[i].tool_call_id;
        size_t a = i;
        if (!id->p || id->len == 0)
                return dsv_error_set(err, EINVAL, "message %zu: a tool message needs the tool_call_id of the call it answers",
                                     i);
        while (a > 0 && m[a - 1].role_len == 4 && memcmp(m[a - 1].role, "tool", 4) == 0)
                a--;
        if (a > 0) {
                const struct dsv_engine_msg *as = &m[a - 1];
                for (uint32_t k = 0; k < as->n_tool_calls; k++)
                        if (as->tool_calls[k].id.len == id->len && memcmp(as->tool_calls[k].id.p, id->p, id->len) == 0)
                                return 0;
        }
        return dsv_error_set(err, EINVAL, "message %zu: tool_call_id \"%.*s\" names no tool call of the assistant message before it",
                             i, (int)MIN(id->len, 64u), id->p);
}

static json_t *message_json(const struct dsv_engine_msg *m, size_t n, size_t i, struct dsv_error *err) {
        const struct dsv_engine_msg *x = &m[i];
        json_t *o = json_object();
        struct dsv_engine_str role = {x->role, x->role_len}, content = {x->content, x->content_len};
        if (!o) {
                dsv_error_set(err, ENOMEM, "out of memory");
                return NULL;
        }
        if (!set_new(o, "role", jstr(&role, "message", i, "role", err), err) ||
            !set_new(o, "content", jstr(&content, "message", i, "content", err), err))
                goto fail;
        if (x->reasoning.p && !set_new(o, "reasoning_content", jstr(&x->reasoning, "message", i, "reasoning_content", err), err))
                goto fail;
        if (x->n_tool_calls) {
                json_t *calls = json_array();
                if (!set_new(o, "tool_calls", calls, err))
                        goto fail;
                for (uint32_t k = 0; k < x->n_tool_calls; k++) {
                        const struct dsv_engine_tool_call *tc = &x->tool_calls[k];
                        json_t *c = json_object(), *f = json_object();
                        if (!c || !f || json_array_append_new(calls, c) < 0) {
                                json_decref(f);
                                dsv_error_set(err, ENOMEM, "out of memory");
                                goto fail;
                        }
                        if (!set_new(c, "function", f, err) || !set_new(c, "type", json_string("function"), err) ||
                            !set_new(c, "id", jstr(&tc->id, "message", i, "a tool call id", err), err) ||
                            !set_new(f, "name", jstr(&tc->name, "message", i, "a tool call name", err), err) ||
                            !set_new(f, "arguments", jstr(&tc->arguments, "message", i, "a tool call's arguments", err), err))
                                goto fail;
                }
        }
        if (x->role_len == 4 && memcmp(x->role, "tool", 4) == 0 && check_tool_id(m, i, err) < 0)
                goto fail;
        (void)n;
        return o;
fail:
        if (!err->msg[0])
                dsv_error_set(err, ENOMEM, "out of memory");
        json_decref(o);
        return NULL;
}

/* OpenAI's tools array: [{"type": "function", "function": {name, description, parameters}}]. */
static json_t *tools_json(const struct dsv_engine_tool *t, size_t n, struct dsv_error *err) {
        json_t *arr = json_array();
        if (!arr) {
                dsv_error_set(err, ENOMEM, "out of memory");
                return NULL;
        }
        for (size_t i = 0; i < n; i++) {
                json_t *o = json_object(), *f = json_object(), *params;
                json_error_t je;
                if (!o || !f || json_array_append_new(arr, o) < 0 || json_object_set_new(o, "function", f) < 0) {
                        dsv_error_set(err, ENOMEM, "out of memory");
                        goto fail;
                }
                if (!set_new(o, "type", json_string("function"), err) || !set_new(f, "name", jstr(&t[i].name, "tool", i, "the name", err), err))
                        goto fail;
                if (t[i].description.p && !set_new(f, "description", jstr(&t[i].description, "tool", i, "the description", err), err))
                        goto fail;
                if (!t[i].parameters.p)
                        continue;
                params = json_loadb(t[i].parameters.p, t[i].parameters.len, JSON_REJECT_DUPLICATES, &je);
                if (!params) {
                        dsv_error_set(err, EINVAL, "tool %zu (%.*s): parameters is not valid JSON: %s (line %d, column %d)", i,
                                      (int)MIN(t[i].name.len, 64u), t[i].name.p, je.text, je.line, je.column);
                        goto fail;
                }
                if (!json_is_object(params)) {
                        json_decref(params);
                        dsv_error_set(err, EINVAL, "tool %zu (%.*s): parameters must be a JSON schema object", i,
                                      (int)MIN(t[i].name.len, 64u), t[i].name.p);
                        goto fail;
                }
                if (!set_new(f, "parameters", params, err))
                        goto fail;
        }
        return arr;
fail:
        if (!err->msg[0])
                dsv_error_set(err, ENOMEM, "out of memory");
        json_decref(arr);
        return NULL;
}

/* The helpers above fail with EINVAL (a message in err) or ENOMEM ("out of memory", or none). */
static int err_code(const struct dsv_error *err) {
        return err->msg[0] && strcmp(err->msg, "out of memory") != 0 ? -EINVAL : -ENOMEM;
}

int dsv_text_chat(const struct dsv_text *t, const struct dsv_engine_msg *m, size_t n, const struct dsv_engine_tool *tools,
                  size_t n_tools, bool thinking, int32_t **ret, size_t *ret_n, struct dsv_error *err) {
        struct dsv_chat_opts opts = DSV_CHAT_OPTS_INIT;
        struct dsv_tok_ids ids = {0};
        _cleanup_free_ char *prompt = NULL;
        size_t len = 0;
        json_t *arr = json_array(), *tl = NULL;
        int r = 0;

        if (!arr)
                return -ENOMEM;
        for (size_t i = 0; i < n && r == 0; i++) {
                json_t *o = message_json(m, n, i, err);
                if (!o || json_array_append_new(arr, o) < 0)
                        r = err_code(err);
        }
        if (r == 0 && n_tools && !(tl = tools_json(tools, n_tools, err)))
                r = err_code(err);
        if (r == 0) {
                opts.mode = thinking ? DSV_CHAT_MODE_THINKING : DSV_CHAT_MODE_CHAT;
                r = dsv_chat_encode(arr, tl, &opts, &prompt, &len, err);
        }
        json_decref(arr);
        json_decref(tl);
        if (r < 0)
                return r;
        /* the rendered prompt spells BOS and the role markers as special tokens */
        r = dsv_tok_encode(t->tok, prompt, len, 0, &ids);
        if (r < 0) {
                dsv_tok_ids_done(&ids);
                return dsv_error_set(err, -r, "cannot tokenize the chat prompt: %s", strerror(-r));
        }
        *ret = ids.v;
        *ret_n = ids.n;
        return 0;
}

struct dsv_text_parser {
        struct dsv_chat_parser *p;
        dsv_text_chat_fn fn;
        void *ud;
};

int dsv_text_parser_new(bool thinking, struct dsv_text_parser **ret) {
        struct dsv_text_parser *p = calloc(1, sizeof(*p));
        int r;
        if (!p)
                return -ENOMEM;
        r = dsv_chat_parser_new(thinking ? DSV_CHAT_MODE_THINKING : DSV_CHAT_MODE_CHAT, &p->p);
        if (r < 0) {
                free(p);
                return r;
        }
        *ret = p;
        return 0;
}

void dsv_text_parser_free(struct dsv_text_parser *p) {
        if (!p)
                return;
        dsv_chat_parser_free(p->p);
        free(p);
}

static int parser_cb(void *ud, const struct dsv_chat_event *ev) {
        struct dsv_text_parser *p = ud;
        struct dsv_text_chat_event e = {0};
        switch (ev->type) {
        case DSV_CHAT_EVENT_REASONING:
        case DSV_CHAT_EVENT_CONTENT:
                e.kind = ev->type == DSV_CHAT_EVENT_REASONING ? DSV_TEXT_CHAT_REASONING : DSV_TEXT_CHAT_CONTENT;
                e.text = ev->text;
                e.len = ev->len;
                break;
        case DSV_CHAT_EVENT_TOOL_CALL:
                e.kind = DSV_TEXT_CHAT_TOOL_CALL;
                e.name = ev->name;
                e.name_len = ev->name_len;
                e.text = ev->arguments;
                e.len = ev->arguments_len;
                break;
        case DSV_CHAT_EVENT_ERROR:
        default:
                e.kind = DSV_TEXT_CHAT_ERROR;
                e.message = ev->text;
                e.text = ev->raw;
                e.len = ev->raw_len;
                break;
        }
        return p->fn(p->ud, &e);
}

int dsv_text_parser_feed(struct dsv_text_parser *p, const char *s, size_t n, dsv_text_chat_fn fn, void *ud) {
        p->fn = fn;
        p->ud = ud;
        return dsv_chat_parser_feed(p->p, s, n, parser_cb, p);
}

int dsv_text_parser_finish(struct dsv_text_parser *p, dsv_text_chat_fn fn, void *ud) {
        p->fn = fn;
        p->ud = ud;
        return dsv_chat_parser_finish(p->p, parser_cb, p);
}

int dsv_text_stream_new(const struct dsv_text *t, struct dsv_text_stream **ret) {
        struct dsv_text_stream *s = calloc(1, sizeof(*s));
        int r;
        if (!s)
                return -ENOMEM;
        r = dsv_tok_stream_new(t->tok, 0, &s->s);
        if (r < 0) {
                free(s);
                return r;
        }
        *ret = s;
        return 0;
}

void dsv_text_stream_free(struct dsv_text_stream *s) {
        if (!s)
                return;
        dsv_tok_stream_free(s->s);
        free(s);
}

int dsv_text_stream_push(struct dsv_text_stream *s, int32_t id, const char **text, size_t *len) {
        return dsv_tok_stream_push(s->s, id, text, len);
}

int dsv_text_stream_flush(struct dsv_text_stream *s, const char **text, size_t *len) {
        return dsv_tok_stream_flush(s->s, text, len);
}

#else /* !DSV_WITH_TOKENIZER */

const char *dsv_text_unavailable(void) {
        return "text is not available: this dsv32d was built without the tokenizer; send token ids "
               "(dsv32 generate --tokens 0,17,42)";
}

int dsv_text_open(const char *model_dir, struct dsv_text **ret, struct dsv_error *err) {
        return dsv_error_set(err, ENOTSUP, "%s", dsv_text_unavailable());
}
void dsv_text_free(struct dsv_text *t) {}
bool dsv_text_has_chat(const struct dsv_text *t) { return false; }
bool dsv_text_token_bytes(const struct dsv_text *t, int32_t id, const char **p, size_t *n) { return false; }
int dsv_text_encode(const struct dsv_text *t, const char *s, size_t n, bool add_bos, int32_t **ret, size_t *ret_n) {
        return -ENOTSUP;
}
int dsv_text_decode(const struct dsv_text *t, const int32_t *ids, size_t n, char **ret, size_t *ret_len) {
        return -ENOTSUP;
}
int dsv_text_chat(const struct dsv_text *t, const struct dsv_engine_msg *m, size_t n, const struct dsv_engine_tool *tools,
                  size_t n_tools, bool thinking, int32_t **ret, size_t *ret_n, struct dsv_error *err) {
        return dsv_error_set(err, ENOTSUP, "%s", dsv_text_unavailable());
}
int dsv_text_parser_new(bool thinking, struct dsv_text_parser **ret) { return -ENOTSUP; }
void dsv_text_parser_free(struct dsv_text_parser *p) {}
int dsv_text_parser_feed(struct dsv_text_parser *p, const char *s, size_t n, dsv_text_chat_fn fn, void *ud) {
        return -ENOTSUP;
}
int dsv_text_parser_finish(struct dsv_text_parser *p, dsv_text_chat_fn fn, void *ud) { return -ENOTSUP; }
int dsv_text_stream_new(const struct dsv_text *t, struct dsv_text_stream **ret) { return -ENOTSUP; }
void dsv_text_stream_free(struct dsv_text_stream *s) {}
int dsv_text_stream_push(struct dsv_text_stream *s, int32_t id, const char **text, size_t *len) { return -ENOTSUP; }
int dsv_text_stream_flush(struct dsv_text_stream *s, const char **text, size_t *len) { return -ENOTSUP; }

#endif
