/* libFuzzer target: tokenizer.json (+ tokenizer_config.json after a NUL byte) loading. A
 * file that loads must then encode, decode and stream-decode without trouble. */
#include "config.h"

#include "daemon/tokenizer/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        const uint8_t *nul = memchr(data, 0, size);
        size_t json_len = nul ? (size_t)(nul - data) : size;
        const char *config = nul ? (const char *)nul + 1 : NULL;
        size_t config_len = nul ? size - json_len - 1 : 0;
        struct dsv_error err = {{0}};
        struct dsv_tok *tok = NULL;

        if (dsv_tok_load_buffer((const char *)data, json_len, config, config_len, &tok, &err) < 0) {
                if (!err.msg[0])
                        abort(); /* every failure says why */
                return 0;
        }
        static const char text[] = "Hello, world! 123 \xe4\xb8\xad\xe6\x96\x87 <s> \xff\x00 end";
        struct dsv_tok_ids ids = {0};
        if (dsv_tok_encode(tok, text, sizeof(text) - 1, DSV_TOK_ADD_SPECIAL, &ids) == 0) {
                char *s = NULL;
                size_t n;
                if (dsv_tok_decode(tok, ids.v, ids.n, 0, &s, &n) == 0)
                        free(s);
                struct dsv_tok_stream *st = NULL;
                if (dsv_tok_stream_new(tok, DSV_TOK_SKIP_SPECIAL, &st) == 0) {
                        const char *t;
                        size_t k;
                        for (size_t i = 0; i < ids.n; i++)
                                dsv_tok_stream_push(st, ids.v[i], &t, &k);
                        dsv_tok_stream_flush(st, &t, &k);
                        dsv_tok_stream_free(st);
                }
        }
        dsv_tok_ids_done(&ids);
        dsv_tok_free(tok);
        return 0;
}
