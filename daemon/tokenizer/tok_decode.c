/* Decode and the streaming detokenizer. Both concatenate the per-id bytes (Hugging Face's
 * ByteLevel decoder rule, resolved at load) and turn the result into UTF-8 the way Rust's
 * String::from_utf8_lossy does: every maximal invalid subpart becomes one U+FFFD. The stream
 * holds back only an incomplete character at its end, so its output is the same text cut at
 * character boundaries. */
#include "config.h"

#include "daemon/tokenizer/tok_internal.h"

enum { U8_OK, U8_BAD, U8_SHORT };

/* Classifies the character at s[0..n): complete (*len bytes), invalid (*len bytes to
 * replace), or a valid but incomplete prefix that more bytes may complete. */
static int u8_class(const uint8_t *s, size_t n, size_t *len) {
        uint32_t cp;
        size_t bad, k = tok_utf8_next(s, n, &cp, &bad);
        if (k) {
                *len = k;
                return U8_OK;
        }
        bool lead_ok = s[0] >= 0xc2 && s[0] <= 0xf4;
        *len = bad;
        return lead_ok && bad == n ? U8_SHORT : U8_BAD;
}

/* Appends the lossy UTF-8 form of s[0..n) to out; with keep_tail, an incomplete final
 * character is not converted and its length is returned in *tail. */
static int lossy_append(struct dsv_strbuf *out, const uint8_t *s, size_t n, bool keep_tail, size_t *tail) {
        int r = dsv_strbuf_reserve(out, n * 3);
        if (r < 0)
                return r;
        size_t i = 0;
        while (i < n) {
                if (s[i] < 0x80) {
                        out->p[out->n++] = (char)s[i++];
                        continue;
                }
                size_t len;
                int c = u8_class(s + i, n - i, &len);
                if (c == U8_OK) {
                        memcpy(out->p + out->n, s + i, len);
                        out->n += len;
                } else if (c == U8_SHORT && keep_tail) {
                        *tail = n - i;
                        out->p[out->n] = 0;
                        return 0;
                } else {
                        memcpy(out->p + out->n, "\xef\xbf\xbd", 3);
                        out->n += 3;
                }
                i += len;
        }
        if (tail)
                *tail = 0;
        out->p[out->n] = 0;
        return 0;
}

static bool id_text(const struct dsv_tok *tok, int32_t id, unsigned flags, const char **p, size_t *n) {
        if (!tok_id_bytes(tok, id, p, n))
                return false;
        return !((flags & DSV_TOK_SKIP_SPECIAL) && (tok->id_flags[id] & TOK_ID_SPECIAL));
}

int dsv_tok_decode(const struct dsv_tok *tok, const int32_t *ids, size_t n, unsigned flags, char **ret,
                   size_t *ret_len) {
        struct dsv_strbuf raw = {0}, out = {0};
        int r;
        if (!tok || (!ids && n) || !ret)
                return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                const char *p;
                size_t k;
                if (!id_text(tok, ids[i], flags, &p, &k))
                        continue;
                if ((r = dsv_strbuf_reserve(&raw, k)) < 0)
                        goto fail;
                memcpy(raw.p + raw.n, p, k);
                raw.n += k;
        }
        if ((r = dsv_strbuf_reserve(&out, 0)) < 0 || (r = lossy_append(&out, (const uint8_t *)raw.p, raw.n, false, NULL)) < 0)
                goto fail;
        free(raw.p);
        *ret = out.p;
        if (ret_len)
                *ret_len = out.n;
        return 0;
fail:
        free(raw.p);
        free(out.p);
        return r;
}

struct dsv_tok_stream {
        const struct dsv_tok *tok;
        unsigned flags;
        uint8_t pend[8]; /* an incomplete character (at most 3 bytes) */
        size_t n_pend;
        struct dsv_strbuf work, out;
};

int dsv_tok_stream_new(const struct dsv_tok *tok, unsigned flags, struct dsv_tok_stream **ret) {
        if (!tok || !ret)
                return -EINVAL;
        struct dsv_tok_stream *s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->tok = tok;
        s->flags = flags;
        *ret = s;
        return 0;
}

void dsv_tok_stream_free(struct dsv_tok_stream *s) {
        if (!s)
                return;
        free(s->work.p);
        free(s->out.p);
        free(s);
}

int dsv_tok_stream_push(struct dsv_tok_stream *s, int32_t id, const char **text, size_t *len) {
        const char *p;
        size_t k, tail = 0;
        int r;
        s->out.n = 0;
        if ((r = dsv_strbuf_reserve(&s->out, 0)) < 0)
                return r;
        s->out.p[0] = 0;
        if (id_text(s->tok, id, s->flags, &p, &k) && k > 0) {
                s->work.n = 0;
                if ((r = dsv_strbuf_reserve(&s->work, s->n_pend + k)) < 0)
                        return r;
                memcpy(s->work.p, s->pend, s->n_pend);
                memcpy(s->work.p + s->n_pend, p, k);
                s->work.n = s->n_pend + k;
                if ((r = lossy_append(&s->out, (const uint8_t *)s->work.p, s->work.n, true, &tail)) < 0)
                        return r;
                assert(tail < sizeof(s->pend));
                memcpy(s->pend, s->work.p + s->work.n - tail, tail);
                s->n_pend = tail;
        }
        *text = s->out.p;
        *len = s->out.n;
        return 0;
}

int dsv_tok_stream_flush(struct dsv_tok_stream *s, const char **text, size_t *len) {
        int r;
        s->out.n = 0;
        if ((r = dsv_strbuf_reserve(&s->out, 0)) < 0 || (r = lossy_append(&s->out, s->pend, s->n_pend, false, NULL)) < 0)
                return r;
        s->n_pend = 0;
        *text = s->out.p;
        *len = s->out.n;
        return 0;
}
