/* Streaming detokenizer: for random id sequences (tokens that end inside a UTF-8 character,
 * invalid byte runs, special and unknown ids) every piece the stream returns is valid UTF-8,
 * and the pieces plus the flush equal dsv_tok_decode() of the same ids, with and without
 * DSV_TOK_SKIP_SPECIAL. Also on the real DeepSeek-V3 tokenizer when installed. */
#include "tests/tokenizer/tok-test.h"

#include "daemon/rng.h"
#include "tests/tokenizer/utf8-check.h"

static int check_stream(const struct dsv_tok *tok, const int32_t *ids, size_t n, unsigned flags) {
        struct dsv_tok_stream *s = NULL;
        char *one = NULL, *acc = NULL;
        size_t one_n = 0, acc_n = 0;
        int bad = 0;
        EXPECT(dsv_tok_stream_new(tok, flags, &s) == 0);
        EXPECT(dsv_tok_decode(tok, ids, n, flags, &one, &one_n) == 0);
        acc = malloc(one_n + 1);
        for (size_t i = 0; i <= n; i++) {
                const char *t;
                size_t k;
                int r = i < n ? dsv_tok_stream_push(s, ids[i], &t, &k) : dsv_tok_stream_flush(s, &t, &k);
                EXPECT(r == 0);
                if (r < 0)
                        break;
                if (!valid_utf8((const uint8_t *)t, k)) {
                        fprintf(stderr, "piece after id %zu is not valid UTF-8\n", i);
                        bad++;
                }
                if (acc_n + k > one_n) {
                        bad++;
                        break;
                }
                memcpy(acc + acc_n, t, k);
                acc_n += k;
        }
        if (acc_n != one_n || memcmp(acc, one, one_n) != 0) {
                fprintf(stderr, "stream (%zu bytes) != decode (%zu bytes)\n", acc_n, one_n);
                bad++;
        }
        test_failures += bad;
        free(one);
        free(acc);
        dsv_tok_stream_free(s);
        return bad;
}

static void random_sequences(const struct dsv_tok *tok, uint64_t seed, int rounds) {
        int32_t V = dsv_tok_vocab_size(tok);
        /* tokens whose bytes are not a whole character make the interesting cases */
        int32_t partial[512];
        size_t n_partial = 0;
        for (int b = 0x80; b < 0x100; b++) {
                char c = (char)b;
                int32_t id = dsv_tok_token_to_id(tok, &c, 1);
                if (id >= 0 && n_partial < ARRAY_SIZE(partial))
                        partial[n_partial++] = id;
        }
        EXPECT(n_partial == 128);
        for (int r = 0; r < rounds; r++) {
                int32_t ids[64];
                size_t n = 1 + (size_t)(dsv_rand_u01(seed, (uint64_t)r * 1000) * 63);
                for (size_t i = 0; i < n; i++) {
                        double u = dsv_rand_u01(seed, (uint64_t)r * 1000 + 1 + i);
                        if (u < 0.5)
                                ids[i] = partial[(size_t)(u * 2 * (double)n_partial) % n_partial];
                        else if (u < 0.9)
                                ids[i] = (int32_t)((u - 0.5) / 0.4 * V);
                        else if (u < 0.95)
                                ids[i] = (int32_t)(u * 1000) % 2; /* BOS / EOS */
                        else
                                ids[i] = V + (int32_t)(u * 100); /* unknown */
                }
                check_stream(tok, ids, n, 0);
                check_stream(tok, ids, n, DSV_TOK_SKIP_SPECIAL);
        }
}

static void texts(const struct dsv_tok *tok) {
        static const char *const t[] = {
                "plain ascii text", "中文和日本語とemoji😀👍🏽👨‍👩‍👧‍👦", "a\xcc\x81\xcc\x82 marks", "\xf0\x9f\x87\xa8\xf0\x9f\x87\xb3",
                "bad \xff\xfe bytes \xe2\x82 here",
        };
        for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
                struct dsv_tok_ids ids = {0};
                EXPECT(dsv_tok_encode(tok, t[i], strlen(t[i]), 0, &ids) == 0);
                check_stream(tok, ids.v, ids.n, 0);
                dsv_tok_ids_done(&ids);
        }
}

int main(void) {
        char path[8192];
        struct dsv_tok *tok = tt_synth(4096, 0, 1, path, sizeof(path));
        random_sequences(tok, 1, 3000);
        texts(tok);
        dsv_tok_free(tok);

        if (tt_deepseek_path(path, sizeof(path))) {
                struct dsv_error err = {{0}};
                CHECK(dsv_tok_load(path, NULL, &tok, &err) == 0, "%s", err.msg);
                if (tok) {
                        random_sequences(tok, 2, 3000);
                        texts(tok);
                        dsv_tok_free(tok);
                }
        } else
                printf("DeepSeek-V3 tokenizer.json not installed: synthetic tokenizer only\n");
        return test_result("test-tok-stream");
}
