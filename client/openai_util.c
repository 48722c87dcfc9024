/* openai_util.c: small helpers dsv32-openai's files share: OpenAI-style error objects (and
 * how a libdsv32 failure maps to an HTTP status), a growable buffer, and JSON strings from
 * bytes that may not be valid UTF-8 (a model can emit any bytes). */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/openai.h"

void oai_error_set(struct oai_error *e, unsigned status, const char *type, const char *param, const char *fmt, ...) {
        va_list ap;

        e->status = status;
        e->type = type;
        e->code = NULL;
        snprintf(e->param, sizeof(e->param), "%s", param ? param : "");
        va_start(ap, fmt);
        vsnprintf(e->message, sizeof(e->message), fmt, ap);
        va_end(ap);
}

json_t *oai_error_json(const struct oai_error *e) {
        return json_pack("{s:{s:o,s:s,s:o,s:o}}", "error", "message", oai_json_text(e->message, strlen(e->message)),
                         "type", e->type ? e->type : "server_error", "param",
                         e->param[0] ? json_string(e->param) : json_null(), "code",
                         e->code ? json_string(e->code) : json_null());
}

void oai_error_from_dsv32(struct oai_error *e, int err, const char *what, const char *message) {
        const char *m = message && message[0] ? message : dsv32_strerror(err);

        switch (-err) {
        case EINVAL:
        case E2BIG:
        case ENOTSUP:
        case EMSGSIZE:
                oai_error_set(e, 400, "invalid_request_error", NULL, "%s: %s", what, m);
                if (err == -E2BIG)
                        e->code = "context_length_exceeded";
                break;
        case EAGAIN:
        case EDQUOT:
                oai_error_set(e, 429, "rate_limit_error", NULL, "%s: %s", what, m);
                e->code = "rate_limit_exceeded";
                break;
        case ENOENT:
        case ECONNREFUSED:
        case ECONNRESET:
        case ESHUTDOWN:
        case ETIMEDOUT:
        case EPIPE:
                oai_error_set(e, 503, "server_error", NULL, "%s: dsv32d is not available (%s); is it running?", what, m);
                e->code = "daemon_unavailable";
                break;
        case EACCES:
        case EPERM:
                oai_error_set(e, 503, "server_error", NULL,
                              "%s: dsv32d refuses the gateway (%s); add its user to group dsv32 or to allow-users", what,
                              m);
                e->code = "daemon_unavailable";
                break;
        default:
                oai_error_set(e, 500, "server_error", NULL, "%s: %s (%s)", what, m, dsv32_error_name(err));
                break;
        }
}

int oai_buf_append(struct oai_buf *b, const void *data, size_t n) {
        if (b->len + n + 1 > b->cap) {
                size_t cap = b->cap ? b->cap : 256;
                while (cap < b->len + n + 1)
                        cap *= 2;
                char *p = realloc(b->p, cap);
                if (!p)
                        return -ENOMEM;
                b->p = p;
                b->cap = cap;
        }
        if (n)
                memcpy(b->p + b->len, data, n);
        b->len += n;
        b->p[b->len] = 0;
        return 0;
}

void oai_buf_free(struct oai_buf *b) {
        free(b->p);
        *b = (struct oai_buf){0};
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when it is not one. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
        unsigned c = s[0];
        size_t len;
        unsigned min;

        if (c < 0x80)
                return c ? 1 : 0; /* NUL is valid UTF-8 but jansson strings refuse it here */
        if (c >= 0xc2 && c <= 0xdf)
                len = 2, min = 0x80;
        else if (c >= 0xe0 && c <= 0xef)
                len = 3, min = 0x800;
        else if (c >= 0xf0 && c <= 0xf4)
                len = 4, min = 0x10000;
        else
                return 0;
        if (len > n)
                return 0;
        unsigned v = c & (0x7f >> len);
        for (size_t i = 1; i < len; i++) {
                if ((s[i] & 0xc0) != 0x80)
                        return 0;
                v = v << 6 | (s[i] & 0x3f);
        }
        if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
                return 0;
        return len;
}

json_t *oai_json_text(const char *s, size_t n) {
        json_t *j = json_stringn(s, n);
        if (j)
                return j;
        /* not valid UTF-8: replace each bad byte with U+FFFD */
        struct oai_buf b = {0};
        const unsigned char *u = (const unsigned char *)s;
        for (size_t i = 0; i < n;) {
                size_t k = utf8_seq(u + i, n - i);
                if (k) {
                        oai_buf_append(&b, u + i, k);
                        i += k;
                } else {
                        oai_buf_append(&b, "\xef\xbf\xbd", 3);
                        i++;
                }
        }
        j = json_stringn(b.p ? b.p : "", b.len);
        oai_buf_free(&b);
        return j;
}

void oai_model_id(const char *description, char *out, size_t size) {
        const char *end = strstr(description, " (");
        size_t n = end ? (size_t)(end - description) : strlen(description);
        while (n > 1 && description[n - 1] == '/')
                n--;
        const char *start = description;
        for (size_t i = 0; i + 1 < n; i++)
                if (description[i] == '/')
                        start = description + i + 1;
        n -= (size_t)(start - description);
        snprintf(out, size, "%.*s", (int)n, start);
}
