/* libFuzzer target: encode / decode / stream on a generated tokenizer (DeepSeek's
 * pre-tokenizer and special tokens). Input: one flags byte, then the text. Properties:
 * valid UTF-8 round-trips exactly; any input decodes to valid UTF-8 that re-encodes to the
 * same ids; the stream equals the one-shot decode. */
#include "config.h"

#include "daemon/tokenizer/tokenizer.h"
#include "tests/tokenizer/utf8-check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct dsv_tok *tok;
static char dir[256];

static void cleanup(void) {
        char p[512];
        dsv_tok_free(tok);
        snprintf(p, sizeof(p), "%s/tokenizer.json", dir);
        unlink(p);
        snprintf(p, sizeof(p), "%s/tokenizer_config.json", dir);
        unlink(p);
        rmdir(dir);
}

static void setup(void) {
        struct dsv_error err = {{0}};
        char path[512];
        const char *t = getenv("TMPDIR");
        snprintf(dir, sizeof(dir), "%s/dsv32-fuzz-tok-XXXXXX", t && *t ? t : "/tmp");
        if (!mkdtemp(dir) || dsv_tok_synth_write(dir, 1024, 0, 1, 1, &err) < 0) {
                fprintf(stderr, "fuzz-tok-encode: setup failed: %s\n", err.msg);
                abort();
        }
        snprintf(path, sizeof(path), "%s/tokenizer.json", dir);
        if (dsv_tok_load(path, NULL, &tok, &err) < 0) {
                fprintf(stderr, "fuzz-tok-encode: %s\n", err.msg);
                abort();
        }
        atexit(cleanup);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (!tok)
                setup();
        if (size == 0)
                return 0;
        unsigned flags = data[0] & DSV_TOK_SPECIAL_AS_TEXT;
        const char *text = (const char *)data + 1;
        size_t len = size - 1;
        struct dsv_tok_ids ids = {0}, again = {0};
        char *s = NULL;
        size_t n = 0;

        if (dsv_tok_encode(tok, text, len, flags, &ids) < 0)
                abort();
        if (dsv_tok_decode(tok, ids.v, ids.n, 0, &s, &n) < 0 || !valid_utf8((const uint8_t *)s, n))
                abort();
        if (valid_utf8((const uint8_t *)text, len) && (n != len || memcmp(s, text, len) != 0))
                abort();
        if (dsv_tok_encode(tok, s, n, flags, &again) < 0 || again.n != ids.n ||
            (ids.n && memcmp(again.v, ids.v, ids.n * sizeof(int32_t)) != 0))
                abort();

        /* the stream, on the ids and on byte-level noise made from the input */
        struct dsv_tok_stream *st = NULL;
        size_t k = 0;
        if (dsv_tok_stream_new(tok, 0, &st) < 0)
                abort();
        for (size_t i = 0; i <= ids.n; i++) {
                const char *t;
                size_t m;
                if ((i < ids.n ? dsv_tok_stream_push(st, ids.v[i], &t, &m) : dsv_tok_stream_flush(st, &t, &m)) < 0)
                        abort();
                if (k + m > n || memcmp(s + k, t, m) != 0)
                        abort();
                k += m;
        }
        if (k != n)
                abort();
        dsv_tok_stream_free(st);

        free(s);
        dsv_tok_ids_done(&ids);
        dsv_tok_ids_done(&again);
        return 0;
}
