/* Tokenizer basics on a generated tokenizer (no download needed): ids, BOS/EOS, round trips,
 * invalid UTF-8, special tokens as text, decode's skipping rules; then the hand-made
 * tokenizer.json files of tests/tokenizer/data against Hugging Face's ids recorded in
 * mini-expected.txt (every Split behavior, lstrip/rstrip, the two added-token passes,
 * ignore_merges, merges as pairs); then a few known DeepSeek-V3 ids when the oracle's file
 * is installed. */
#include "tests/tokenizer/tok-test.h"

static void encode(const struct dsv_tok *tok, const char *s, size_t n, unsigned flags, struct dsv_tok_ids *ids) {
        ids->n = 0;
        int r = dsv_tok_encode(tok, s, n, flags, ids);
        CHECK(r == 0, "encode: %s", strerror(-r));
}

static bool same_ids(const struct dsv_tok_ids *a, const struct dsv_tok_ids *b) {
        return a->n == b->n && (a->n == 0 || memcmp(a->v, b->v, a->n * sizeof(int32_t)) == 0);
}

static void round_trip(const struct dsv_tok *tok, const char *s) {
        struct dsv_tok_ids ids = {0};
        char *out = NULL;
        size_t n = 0;
        encode(tok, s, strlen(s), 0, &ids);
        EXPECT(dsv_tok_decode(tok, ids.v, ids.n, 0, &out, &n) == 0);
        CHECK(out && n == strlen(s) && memcmp(out, s, n) == 0, "round trip of \"%s\" gave \"%s\"", s, out ? out : "(null)");
        free(out);
        dsv_tok_ids_done(&ids);
}

static void test_synth(void) {
        char path[8192];
        struct dsv_tok *tok = tt_synth(4096, 0, 1, path, sizeof(path));
        struct dsv_tok_ids a = {0}, b = {0};
        char *out = NULL;
        size_t n;

        EXPECT(dsv_tok_vocab_size(tok) == 4096);
        EXPECT(dsv_tok_bos_id(tok) == 0);
        EXPECT(dsv_tok_eos_id(tok) == 1);
        EXPECT(dsv_tok_is_special(tok, 0) && dsv_tok_is_special(tok, 1));
        int32_t think = dsv_tok_token_to_id(tok, "<think>", 7);
        EXPECT(think >= 0 && !dsv_tok_is_special(tok, think));
        EXPECT(dsv_tok_token_to_id(tok, "no such token at all", 20) == -ENOENT);
        EXPECT(dsv_tok_token_to_id(tok, "a", 1) >= 0);

        encode(tok, "", 0, 0, &a);
        EXPECT(a.n == 0);
        encode(tok, "", 0, DSV_TOK_ADD_SPECIAL, &a);
        EXPECT(a.n == 1 && a.v[0] == 0);
        encode(tok, "hi", 2, DSV_TOK_ADD_SPECIAL, &a);
        EXPECT(a.n >= 2 && a.v[0] == 0 && a.v[a.n - 1] != 1);

        static const char *const texts[] = {
                "hello world", "  leading and trailing  ", "tabs\tand\r\nCRLF\n\n\n", "12345678901234567890",
                "中文分词测试，标点。", "日本語のテキスト", "한국어", "emoji 👨‍👩‍👧‍👦 🇨🇳 1️⃣", "e\xcc\x81 combining",
                "<think>reasoning</think>answer<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",
                "<\xef\xbd\x9c" "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>x", "\xc2\x85 NEL \xe2\x80\xa8 LS",
                "a\0b",
        };
        for (size_t i = 0; i < ARRAY_SIZE(texts); i++)
                round_trip(tok, texts[i]);
        /* NUL inside: round_trip() uses strlen, so check the full string */
        encode(tok, "a\0b", 3, 0, &a);
        EXPECT(dsv_tok_decode(tok, a.v, a.n, 0, &out, &n) == 0 && n == 3 && memcmp(out, "a\0b", 3) == 0);
        free(out);

        /* invalid UTF-8 encodes as its lossy form */
        static const char bad[] = "a\xff" "b\xe2\x82" "c\xed\xa0\x80" "d\xc0\xaf" "e\xf0\x9f\x98";
        static const char fixed[] = "a\xef\xbf\xbd" "b\xef\xbf\xbd" "c\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
                                    "d\xef\xbf\xbd\xef\xbf\xbd" "e\xef\xbf\xbd";
        encode(tok, bad, sizeof(bad) - 1, 0, &a);
        encode(tok, fixed, sizeof(fixed) - 1, 0, &b);
        EXPECT(same_ids(&a, &b));
        EXPECT(dsv_tok_decode(tok, a.v, a.n, 0, &out, &n) == 0 && n == sizeof(fixed) - 1 && memcmp(out, fixed, n) == 0);
        free(out);

        /* special tokens: matched in text unless DSV_TOK_SPECIAL_AS_TEXT */
        static const char eos[] = "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>";
        encode(tok, eos, sizeof(eos) - 1, 0, &a);
        EXPECT(a.n == 1 && a.v[0] == 1);
        encode(tok, eos, sizeof(eos) - 1, DSV_TOK_SPECIAL_AS_TEXT, &a);
        EXPECT(a.n > 1);
        for (size_t i = 0; i < a.n; i++)
                EXPECT(a.v[i] != 1);
        EXPECT(dsv_tok_decode(tok, a.v, a.n, 0, &out, &n) == 0 && n == sizeof(eos) - 1 && memcmp(out, eos, n) == 0);
        free(out);
        /* non-special added tokens still match */
        encode(tok, "<think>", 7, DSV_TOK_SPECIAL_AS_TEXT, &a);
        EXPECT(a.n == 1 && a.v[0] == think);

        /* decode: special tokens skipped on request, unknown ids always */
        int32_t ids[] = {0, think, -7, 4096, 1 << 30, 1};
        EXPECT(dsv_tok_decode(tok, ids, ARRAY_SIZE(ids), 0, &out, &n) == 0);
        EXPECT(strcmp(out, "<\xef\xbd\x9c" "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c><think>" "<\xef\xbd\x9c"
                          "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>") == 0);
        free(out);
        EXPECT(dsv_tok_decode(tok, ids, ARRAY_SIZE(ids), DSV_TOK_SKIP_SPECIAL, &out, &n) == 0 && strcmp(out, "<think>") == 0);
        free(out);
        EXPECT(dsv_tok_decode(tok, NULL, 0, 0, &out, &n) == 0 && n == 0 && out[0] == 0);
        free(out);
        EXPECT(dsv_tok_encode(tok, NULL, 5, 0, &a) == -EINVAL);

        dsv_tok_ids_done(&a);
        dsv_tok_ids_done(&b);
        dsv_tok_free(tok);
}

static size_t unescape(const char *s, char *out) {
        size_t k = 0;
        for (size_t i = 0; s[i]; i++) {
                if (s[i] != '\\') {
                        out[k++] = s[i];
                        continue;
                }
                char c = s[++i];
                if (c == 'n')
                        out[k++] = '\n';
                else if (c == 'r')
                        out[k++] = '\r';
                else if (c == 't')
                        out[k++] = '\t';
                else if (c == 'x') {
                        char h[3] = {s[i + 1], s[i + 2], 0};
                        out[k++] = (char)strtol(h, NULL, 16);
                        i += 2;
                } else
                        out[k++] = c;
        }
        return k;
}

static void test_mini(void) {
        FILE *f = fopen(tt_srcpath("tests/tokenizer/data/mini-expected.txt"), "re");
        char line[4096], loaded[256] = "";
        struct dsv_tok *tok = NULL;
        struct dsv_tok_ids ids = {0};
        int cases = 0;
        CHECK(f, "cannot open mini-expected.txt (top_srcdir=%s)", getenv("top_srcdir"));
        if (!f)
                return;
        while (fgets(line, sizeof(line), f)) {
                char *tab1, *tab2, text[4096], want[4096], got[4096];
                size_t k = 0;
                line[strcspn(line, "\n")] = 0;
                if (line[0] == '#' || !(tab1 = strchr(line, '\t')) || !(tab2 = strchr(tab1 + 1, '\t')))
                        continue;
                *tab1 = *tab2 = 0;
                if (strcmp(loaded, line) != 0) {
                        struct dsv_error err = {{0}};
                        char rel[512];
                        dsv_tok_free(tok);
                        tok = NULL;
                        snprintf(rel, sizeof(rel), "tests/tokenizer/data/%.200s.json", line);
                        int r = dsv_tok_load(tt_srcpath(rel), NULL, &tok, &err);
                        CHECK(r == 0, "%s", err.msg);
                        if (r < 0)
                                break;
                        snprintf(loaded, sizeof(loaded), "%.200s", line);
                }
                size_t n = unescape(tab1 + 1, text);
                snprintf(want, sizeof(want), "%s", tab2 + 1);
                encode(tok, text, n, 0, &ids);
                got[0] = 0;
                for (size_t i = 0; i < ids.n && k + 16 < sizeof(got); i++)
                        k += (size_t)snprintf(got + k, sizeof(got) - k, i ? " %d" : "%d", ids.v[i]);
                CHECK(strcmp(got, want) == 0, "%s \"%s\": want [%s] got [%s]", line, tab1 + 1, want, got);
                cases++;
        }
        fclose(f);
        EXPECT(cases >= 200);
        dsv_tok_ids_done(&ids);
        dsv_tok_free(tok);
}

static void test_deepseek(void) {
        char path[8192];
        struct dsv_tok *tok = NULL;
        struct dsv_error err = {{0}};
        struct dsv_tok_ids ids = {0};
        if (!tt_deepseek_path(path, sizeof(path))) {
                printf("DeepSeek-V3 tokenizer.json not installed (tests/tokenizer/setup-hook.sh): skipping its checks\n");
                return;
        }
        CHECK(dsv_tok_load(path, NULL, &tok, &err) == 0, "%s", err.msg);
        if (!tok)
                return;
        EXPECT(dsv_tok_vocab_size(tok) == 128815);
        EXPECT(dsv_tok_bos_id(tok) == 0 && dsv_tok_eos_id(tok) == 1);
        encode(tok, "hello world", 11, DSV_TOK_ADD_SPECIAL, &ids);
        EXPECT(ids.n == 3 && ids.v[0] == 0 && ids.v[1] == 33310 && ids.v[2] == 2058);
        encode(tok, "12345 abc", 9, 0, &ids);
        EXPECT(ids.n == 3 && ids.v[0] == 6895 && ids.v[1] == 1883 && ids.v[2] == 71490);
        dsv_tok_ids_done(&ids);
        dsv_tok_free(tok);
}

int main(void) {
        test_synth();
        test_mini();
        test_deepseek();
        return test_result("test-tok-basic");
}
