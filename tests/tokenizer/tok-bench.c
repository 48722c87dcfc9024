/* Encode throughput on a corpus of escaped lines (gen-corpus.js --bytes): one encode per
 * document, best of three passes; prints one JSON line (tests/tokenizer/bench.sh). */
#include "config.h"

#include "daemon/tokenizer/tokenizer.h"

static size_t unescape(char *s, size_t n) {
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
                if (s[i] != '\\' || i + 1 >= n) {
                        s[k++] = s[i];
                        continue;
                }
                char c = s[++i];
                if (c == 'n')
                        s[k++] = '\n';
                else if (c == 'r')
                        s[k++] = '\r';
                else if (c == 't')
                        s[k++] = '\t';
                else if (c == 'x' && i + 2 < n) {
                        char h[3] = {s[i + 1], s[i + 2], 0};
                        s[k++] = (char)strtol(h, NULL, 16);
                        i += 2;
                } else
                        s[k++] = c;
        }
        return k;
}

int main(int argc, char **argv) {
        struct dsv_error err = {{0}};
        struct dsv_tok *tok = NULL;
        char *data = NULL;
        size_t size = 0;
        if (argc != 3) {
                fprintf(stderr, "usage: tok-bench TOKENIZER_JSON CORPUS\n");
                return 2;
        }
        uint64_t t0 = dsv_now_ns();
        if (dsv_tok_load(argv[1], NULL, &tok, &err) < 0) {
                fprintf(stderr, "tok-bench: %s\n", err.msg);
                return 1;
        }
        double load_s = (double)(dsv_now_ns() - t0) / 1e9;
        if (dsv_read_file(argv[2], 1u << 30, &data, &size) < 0) {
                fprintf(stderr, "tok-bench: cannot read %s\n", argv[2]);
                return 1;
        }
        /* documents: lines, unescaped in place */
        size_t n_docs = 0, cap = 1024, bytes = 0;
        char **doc = malloc(cap * sizeof(char *));
        size_t *len = malloc(cap * sizeof(size_t));
        for (char *p = data, *end = data + size; p < end;) {
                char *nl = memchr(p, '\n', (size_t)(end - p));
                size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
                if (n_docs == cap) {
                        cap *= 2;
                        doc = realloc(doc, cap * sizeof(char *));
                        len = realloc(len, cap * sizeof(size_t));
                }
                doc[n_docs] = p;
                len[n_docs] = unescape(p, n);
                bytes += len[n_docs];
                n_docs++;
                p += n + 1;
        }
        struct dsv_tok_ids ids = {0};
        size_t tokens = 0;
        double best = 1e30, cold = 0;
        for (int rep = 0; rep < 3; rep++) {
                size_t t = 0;
                uint64_t s = dsv_now_ns();
                for (size_t i = 0; i < n_docs; i++) {
                        ids.n = 0;
                        if (dsv_tok_encode(tok, doc[i], len[i], 0, &ids) < 0) {
                                fprintf(stderr, "tok-bench: encode failed\n");
                                return 1;
                        }
                        t += ids.n;
                }
                double dt = (double)(dsv_now_ns() - s) / 1e9;
                if (rep == 0)
                        cold = dt;
                best = MIN(best, dt);
                tokens = t;
        }
        printf("{\"bytes\": %zu, \"docs\": %zu, \"tokens\": %zu, \"seconds\": %.6f, \"cold_seconds\": %.6f, "
               "\"load_seconds\": %.6f}\n",
               bytes, n_docs, tokens, best, cold, load_s);
        dsv_tok_ids_done(&ids);
        free(doc);
        free(len);
        free(data);
        dsv_tok_free(tok);
        return 0;
}
