/* Text adapter (see text.h). DSV_WITH_TOKENIZER is defined by daemon/server/local.mk when
 * the tokenizer library is part of the build. */
#include "config.h"

#include "daemon/engine/text.h"

#include "daemon/engine/engine.h"

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

int dsv_text_chat(const struct dsv_text *t, const struct dsv_engine_msg *m, size_t n, bool thinking, int32_t **ret,
                  size_t *ret_n, struct dsv_error *err) {
        struct dsv_chat_opts opts = DSV_CHAT_OPTS_INIT;
        struct dsv_tok_ids ids = {0};
        _cleanup_free_ char *prompt = NULL;
        size_t len = 0;
        json_t *arr = json_array();
        int r = 0;

        if (!arr)
                return -ENOMEM;
        for (size_t i = 0; i < n && r == 0; i++) {
                json_t *role = json_stringn(m[i].role, m[i].role_len), *content = json_stringn(m[i].content, m[i].content_len);
                json_t *o = json_object();
                if (!role || !content) /* jansson refuses invalid UTF-8 and NUL bytes */
                        r = dsv_error_set(err, EINVAL, "message %zu: role and content must be UTF-8 text", i);
                else if (!o || json_object_set(o, "role", role) < 0 || json_object_set(o, "content", content) < 0 ||
                         json_array_append(arr, o) < 0)
                        r = -ENOMEM;
                json_decref(role);
                json_decref(content);
                json_decref(o);
        }
        if (r == 0) {
                opts.mode = thinking ? DSV_CHAT_MODE_THINKING : DSV_CHAT_MODE_CHAT;
                r = dsv_chat_encode(arr, NULL, &opts, &prompt, &len, err);
        }
        json_decref(arr);
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
int dsv_text_encode(const struct dsv_text *t, const char *s, size_t n, bool add_bos, int32_t **ret, size_t *ret_n) {
        return -ENOTSUP;
}
int dsv_text_decode(const struct dsv_text *t, const int32_t *ids, size_t n, char **ret, size_t *ret_len) {
        return -ENOTSUP;
}
int dsv_text_chat(const struct dsv_text *t, const struct dsv_engine_msg *m, size_t n, bool thinking, int32_t **ret,
                  size_t *ret_n, struct dsv_error *err) {
        return dsv_error_set(err, ENOTSUP, "%s", dsv_text_unavailable());
}
int dsv_text_stream_new(const struct dsv_text *t, struct dsv_text_stream **ret) { return -ENOTSUP; }
void dsv_text_stream_free(struct dsv_text_stream *s) {}
int dsv_text_stream_push(struct dsv_text_stream *s, int32_t id, const char **text, size_t *len) { return -ENOTSUP; }
int dsv_text_stream_flush(struct dsv_text_stream *s, const char **text, size_t *len) { return -ENOTSUP; }

#endif
