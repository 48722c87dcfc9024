/* dsv32's output: every write to stdout is checked (a closed pipe or a full disk stops
 * the command, which cancels its request and exits CLI_EXIT_OUTPUT, as GNU tools do).
 * Streaming commands flush each write so the text appears as it is generated; the others
 * leave stdout buffered, so that `dsv32 status | grep -q ready` finds the output in one
 * write and a reader that stops early is no error. And
 * the --json form: one compact JSON object per line (jansson), with text that is not
 * valid UTF-8 repaired rather than dropped. */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client/cli.h"

static int out_errno; /* first write error on stdout */
bool cli_streaming;   /* flush every write (generate, chat); else one write at the end */

bool cli_output_failed(void) { return out_errno != 0; }

bool cli_write(const void *p, size_t n) {
        if (out_errno)
                return false;
        if ((n && fwrite(p, 1, n, stdout) != n) || (cli_streaming && fflush(stdout) != 0)) {
                out_errno = errno ? errno : EIO;
                return false;
        }
        return true;
}

bool cli_printf(const char *fmt, ...) {
        va_list ap;
        int r;
        if (out_errno)
                return false;
        va_start(ap, fmt);
        r = vprintf(fmt, ap);
        va_end(ap);
        if (r < 0 || (cli_streaming && fflush(stdout) != 0)) {
                out_errno = errno ? errno : EIO;
                return false;
        }
        return true;
}

int cli_finish_output(const char *cmd, int code) {
        if (!out_errno && (fflush(stdout) != 0 || ferror(stdout)))
                out_errno = errno ? errno : EIO;
        /* close it ourselves: the last buffered bytes may only fail here */
        if (!out_errno && fclose(stdout) != 0)
                out_errno = errno ? errno : EIO;
        if (out_errno) {
                fprintf(stderr, "dsv32 %s: write error: %s%s\n", cmd, strerror(out_errno),
                        out_errno == EPIPE ? " (the reader went away; the request was cancelled)" : "");
                return CLI_EXIT_OUTPUT;
        }
        return code;
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when it is not one. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
        unsigned char c = s[0];
        size_t len;
        uint32_t cp;
        if (c < 0x80)
                return 1;
        if (c >= 0xc2 && c <= 0xdf)
                len = 2, cp = c & 0x1f;
        else if (c >= 0xe0 && c <= 0xef)
                len = 3, cp = c & 0x0f;
        else if (c >= 0xf0 && c <= 0xf4)
                len = 4, cp = c & 0x07;
        else
                return 0;
        if (n < len)
                return 0;
        for (size_t i = 1; i < len; i++) {
                if ((s[i] & 0xc0) != 0x80)
                        return 0;
                cp = cp << 6 | (s[i] & 0x3f);
        }
        if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
                return 0;
        return len;
}

bool cli_utf8_valid(const char *s, size_t n) {
        const unsigned char *p = (const unsigned char *)s;
        for (size_t i = 0; i < n;) {
                size_t k = utf8_seq(p + i, n - i);
                if (!k)
                        return false;
                i += k;
        }
        return true;
}

json_t *cli_json_text(const char *s, size_t n) {
        const unsigned char *p = (const unsigned char *)s;
        json_t *j;
        char *fixed;
        size_t k = 0;

        if (!s)
                return json_string("");
        if (cli_utf8_valid(s, n) && !memchr(s, 0, n))
                return json_stringn(s, n);
        fixed = malloc(3 * n + 1); /* each bad byte becomes U+FFFD (3 bytes) */
        if (!fixed)
                return NULL;
        for (size_t i = 0; i < n;) {
                size_t len = p[i] ? utf8_seq(p + i, n - i) : 0;
                if (len) {
                        memcpy(fixed + k, p + i, len);
                        k += len;
                        i += len;
                } else {
                        memcpy(fixed + k, "\xef\xbf\xbd", 3);
                        k += 3;
                        i++;
                }
        }
        j = json_stringn(fixed, k);
        free(fixed);
        return j;
}

bool cli_json_emit(json_t *o) {
        char *s;
        bool ok;
        if (!o)
                return false;
        s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(6));
        json_decref(o);
        if (!s)
                return false;
        ok = cli_write(s, strlen(s)) && cli_write("\n", 1);
        free(s);
        return ok;
}

json_t *cli_json_tokens(const int32_t *t, size_t n, const char *text, size_t len) {
        json_t *o = json_pack("{s:s, s:[]}", "event", "tokens", "tokens");
        json_t *a = o ? json_object_get(o, "tokens") : NULL;
        for (size_t i = 0; a && i < n; i++)
                json_array_append_new(a, json_integer(t[i]));
        if (o && text)
                json_object_set_new(o, "text", cli_json_text(text, len));
        return o;
}

json_t *cli_json_usage(const struct dsv32_result *res) {
        const struct dsv32_usage *u = &res->usage;
        return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "prompt_tokens", (json_int_t)u->prompt_tokens,
                         "completion_tokens", (json_int_t)u->completion_tokens, "cached_tokens", (json_int_t)u->cached_tokens,
                         "queue_us", (json_int_t)u->queue_us, "prefill_us", (json_int_t)u->prefill_us, "decode_us",
                         (json_int_t)u->decode_us, "preempted", (json_int_t)res->preempted, "spec_drafted",
                         (json_int_t)res->spec_drafted, "spec_accepted", (json_int_t)res->spec_accepted);
}

json_t *cli_json_error_obj(int err, const char *message) {
        int e = err < 0 ? -err : err;
        return json_pack("{s:s, s:s, s:i, s:o}", "event", "error", "error", dsv32_error_name(e), "code", e, "message",
                         cli_json_text(message, strlen(message)));
}

bool cli_json_error(int err, const char *message) { return cli_json_emit(cli_json_error_obj(err, message)); }
