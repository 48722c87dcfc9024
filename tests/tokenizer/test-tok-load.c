/* tokenizer.json loading: a minimal valid file loads, and every malformed or unsupported one
 * fails with a message that names the problem (never a silent difference). Also
 * tokenizer_config.json handling and dsv_tok_synth_write()'s output: exact vocabulary size,
 * BOS/EOS where asked, byte-identical on a second run. */
#include "tests/tokenizer/tok-test.h"

#define PRE "\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"use_regex\": false}"
#define DEC "\"decoder\": {\"type\": \"ByteLevel\"}"
#define MODEL "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, \"merges\": [\"a b\"]}"

struct bad {
        const char *json;
        const char *config;
        const char *want; /* substring of the error */
};

static const struct bad bads[] = {
        {"", NULL, "tokenizer.json: line"},
        {"{\"model\": ", NULL, "tokenizer.json: line"},
        {"[]", NULL, "not a JSON object"},
        {"{" DEC ", " MODEL "}", NULL, "no ByteLevel"},
        {"{" PRE ", " MODEL "}", NULL, "decoder is missing"},
        {"{" PRE ", \"decoder\": {\"type\": \"WordPiece\"}, " MODEL "}", NULL, "decoder type \"WordPiece\""},
        {"{" PRE ", " DEC "}", NULL, "\"model\" is missing"},
        {"{\"normalizer\": {\"type\": \"NFC\"}, " PRE ", " DEC ", " MODEL "}", NULL, "normalizer type \"NFC\""},
        {"{\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Lowercase\"}]}, " PRE ", " DEC ", " MODEL
         "}",
         NULL, "normalizer type \"Lowercase\""},
        {"{\"pre_tokenizer\": {\"type\": \"Whitespace\"}, " DEC ", " MODEL "}", NULL, "pre_tokenizer type \"Whitespace\""},
        {"{\"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\": "
         "\"(\"}, \"behavior\": \"Isolated\"}, {\"type\": \"ByteLevel\"}]}, " DEC ", " MODEL "}",
         NULL, "Split regex"},
        {"{\"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\": "
         "\"x\"}, \"behavior\": \"Sideways\"}, {\"type\": \"ByteLevel\"}]}, " DEC ", " MODEL "}",
         NULL, "Split behavior \"Sideways\""},
        {"{\"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"ByteLevel\"}, {\"type\": \"Split\", "
         "\"pattern\": {\"String\": \"x\"}, \"behavior\": \"Isolated\"}]}, " DEC ", " MODEL "}",
         NULL, "ByteLevel must come last"},
        {"{\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true}, " DEC ", " MODEL "}", NULL,
         "add_prefix_space"},
        {"{" PRE ", " DEC ", \"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}", NULL, "model type \"WordPiece\""},
        {"{" PRE ", " DEC ", \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a c\"]}}", NULL,
         "\"c\" is not in the vocabulary"},
        {"{" PRE ", " DEC ", \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a b\"]}}", NULL,
         "\"ab\" is not in the vocabulary"},
        {"{" PRE ", " DEC ", \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a  a\"]}}", NULL,
         "not two tokens"},
        {"{" PRE ", " DEC ", \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [[\"a\"]]}}", NULL,
         "must be \"a b\" or"},
        {"{" PRE ", " DEC ", \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -1}, \"merges\": []}}", NULL, "needs an id"},
        {"{" PRE ", " DEC ", \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [], \"byte_fallback\": true}}",
         NULL, "byte_fallback"},
        {"{" PRE ", " DEC ", \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [], \"unk_token\": \"a\"}}", NULL,
         "unk_token"},
        {"{" PRE ", " DEC ", \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [], \"dropout\": 0.1}}", NULL,
         "dropout"},
        {"{" PRE ", " DEC ", \"model\": {\"type\": \"BPE\", \"vocab\": [], \"merges\": []}}", NULL, "vocab must be an object"},
        {"{\"truncation\": {\"max_length\": 5}, " PRE ", " DEC ", " MODEL "}", NULL, "truncation"},
        {"{" PRE ", " DEC ", \"post_processor\": {\"type\": \"TemplateProcessing\"}, " MODEL "}", NULL,
         "post_processor type \"TemplateProcessing\""},
        {"{" PRE ", " DEC ", " MODEL ", \"added_tokens\": [{\"id\": 3, \"content\": \"x\", \"single_word\": true}]}", NULL,
         "single_word"},
        {"{" PRE ", " DEC ", " MODEL ", \"added_tokens\": [{\"content\": \"x\"}]}", NULL, "needs an integer \"id\""},
        {"{" PRE ", " DEC ", " MODEL ", \"added_tokens\": [{\"id\": 3, \"content\": \"x\", \"special\": 1}]}", NULL,
         "\"special\" must be true or false"},
        {"{" PRE ", " DEC ", " MODEL "}", "{", "tokenizer_config.json: line"},
        {"{" PRE ", " DEC ", " MODEL "}", "{\"bos_token\": \"<s>\"}", "bos_token is not a token"},
        {"{" PRE ", " DEC ", " MODEL "}", "{\"add_bos_token\": true}", "add_bos_token without a bos_token"},
        {"{" PRE ", " DEC ", " MODEL "}", "{\"add_eos_token\": \"yes\"}", "must be true or false"},
};

static void test_bad(void) {
        for (size_t i = 0; i < ARRAY_SIZE(bads); i++) {
                struct dsv_error err = {{0}};
                struct dsv_tok *tok = NULL;
                const struct bad *b = &bads[i];
                int r = dsv_tok_load_buffer(b->json, strlen(b->json), b->config, b->config ? strlen(b->config) : 0, &tok,
                                            &err);
                CHECK(r < 0 && !tok, "case %zu loaded", i);
                CHECK(strstr(err.msg, b->want), "case %zu: error \"%s\" does not say \"%s\"", i, err.msg, b->want);
                dsv_tok_free(tok);
        }
}

static void test_good(void) {
        static const char json[] = "{" PRE ", " DEC ", " MODEL
                                   ", \"added_tokens\": [{\"id\": 7, \"content\": \"<s>\", \"special\": true}]}";
        static const char config[] = "{\"add_bos_token\": true, \"bos_token\": {\"content\": \"<s>\"}, \"eos_token\": \"ab\"}";
        struct dsv_error err = {{0}};
        struct dsv_tok *tok = NULL;
        struct dsv_tok_ids ids = {0};
        CHECK(dsv_tok_load_buffer(json, strlen(json), config, strlen(config), &tok, &err) == 0, "%s", err.msg);
        if (!tok)
                return;
        /* Hugging Face ignores the file's id 7: <s> is the next id after the vocabulary */
        EXPECT(dsv_tok_bos_id(tok) == 3 && dsv_tok_eos_id(tok) == 2);
        EXPECT(dsv_tok_vocab_size(tok) == 4);
        EXPECT(dsv_tok_encode(tok, "abab<s>", 7, DSV_TOK_ADD_SPECIAL, &ids) == 0);
        EXPECT(ids.n == 4 && ids.v[0] == 3 && ids.v[1] == 2 && ids.v[2] == 2 && ids.v[3] == 3);
        dsv_tok_ids_done(&ids);
        dsv_tok_free(tok);

        EXPECT(dsv_tok_load("/nonexistent/tokenizer.json", NULL, &tok, &err) == -ENOENT);
        EXPECT(strstr(err.msg, "/nonexistent/tokenizer.json"));
}

static void test_synth(void) {
        static const int sizes[][3] = {{4096, 0, 1}, {16384, 0, 1}, {1000, 995, 7}, {512, 511, 0}};
        for (size_t i = 0; i < ARRAY_SIZE(sizes); i++) {
                char path[8192];
                struct dsv_tok *tok = tt_synth(sizes[i][0], sizes[i][1], sizes[i][2], path, sizeof(path));
                EXPECT(dsv_tok_vocab_size(tok) == sizes[i][0]);
                EXPECT(dsv_tok_bos_id(tok) == sizes[i][1] && dsv_tok_eos_id(tok) == sizes[i][2]);
                /* every id decodes to something */
                for (int32_t id = 0; id < sizes[i][0]; id++) {
                        char *s = NULL;
                        size_t n = 0;
                        EXPECT(dsv_tok_decode(tok, &id, 1, 0, &s, &n) == 0 && n > 0);
                        free(s);
                }
                dsv_tok_free(tok);
        }
        /* deterministic: a second run writes the same bytes */
        char a[8192], b[8192];
        struct dsv_error err = {{0}};
        snprintf(a, sizeof(a), "%s/again", tt_tmpdir());
        EXPECT(dsv_tok_synth_write(a, 4096, 0, 1, 1, &err) == 0);
        snprintf(a, sizeof(a), "%s/again/tokenizer.json", tt_tmpdir());
        snprintf(b, sizeof(b), "%s/synth-4096-0-1/tokenizer.json", tt_tmpdir());
        char *x = NULL, *y = NULL;
        size_t nx = 0, ny = 0;
        EXPECT(dsv_read_file(a, 64u << 20, &x, &nx) == 0 && dsv_read_file(b, 64u << 20, &y, &ny) == 0);
        EXPECT(x && y && nx == ny && memcmp(x, y, nx) == 0);
        free(x);
        free(y);
        /* arguments */
        EXPECT(dsv_tok_synth_write(a, 100, 0, 1, 1, &err) == -EINVAL && strstr(err.msg, "vocab_size"));
        EXPECT(dsv_tok_synth_write(a, 4096, 3, 3, 1, &err) == -EINVAL);
        EXPECT(dsv_tok_synth_write(a, 4096, 0, 4096, 1, &err) == -EINVAL);
}

int main(void) {
        test_bad();
        test_good();
        test_synth();
        return test_result("test-tok-load");
}
