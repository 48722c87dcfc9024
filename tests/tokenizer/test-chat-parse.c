/* DeepSeek-V3.2 output parser. Golden: chat/parse-cases.json (model outputs; expected =
 * what DeepSeek's parse_message_from_completion_text() returns, or for the cases where
 * dsv32d deliberately differs, the reported errors with their raw text). Property: for every
 * case, feeding the text in every two-chunk split, byte by byte, and in random multi-splits
 * gives exactly the one-shot result. */
#include "tests/tokenizer/tok-test.h"

#include <jansson.h>

#include "daemon/rng.h"
#include "daemon/tokenizer/chat.h"

static bool same_result(const struct dsv_chat_result *a, const struct dsv_chat_result *b) {
        if (a->reasoning_len != b->reasoning_len || memcmp(a->reasoning, b->reasoning, a->reasoning_len) ||
            a->content_len != b->content_len || memcmp(a->content, b->content, a->content_len) ||
            a->n_calls != b->n_calls || a->n_errors != b->n_errors || a->reasoning_open != b->reasoning_open)
                return false;
        for (size_t i = 0; i < a->n_calls; i++)
                if (strcmp(a->calls[i].name, b->calls[i].name) || strcmp(a->calls[i].arguments, b->calls[i].arguments))
                        return false;
        for (size_t i = 0; i < a->n_errors; i++)
                if (strcmp(a->errors[i].message, b->errors[i].message) || strcmp(a->errors[i].raw, b->errors[i].raw))
                        return false;
        return true;
}

static int add_cb(void *ud, const struct dsv_chat_event *ev) { return dsv_chat_result_add(ud, ev); }

/* Parses text fed in the chunks that cuts[] (sorted positions) makes. */
static int parse_chunked(const char *text, size_t len, enum dsv_chat_mode mode, const size_t *cuts, size_t n_cuts,
                         struct dsv_chat_result *res) {
        struct dsv_chat_parser *p = NULL;
        size_t at = 0;
        int r = dsv_chat_parser_new(mode, &p);
        memset(res, 0, sizeof(*res));
        for (size_t i = 0; r >= 0 && i <= n_cuts; i++) {
                size_t end = i < n_cuts ? cuts[i] : len;
                r = dsv_chat_parser_feed(p, text + at, end - at, add_cb, res);
                at = end;
        }
        if (r >= 0)
                r = dsv_chat_parser_finish(p, add_cb, res);
        /* as dsv_chat_parse: strings are never NULL */
        if (!res->reasoning)
                res->reasoning = calloc(1, 1);
        if (!res->content)
                res->content = calloc(1, 1);
        res->reasoning_open = dsv_chat_parser_reasoning_open(p);
        dsv_chat_parser_free(p);
        return r;
}

static void check_expected(const char *name, const struct dsv_chat_result *r, json_t *want) {
        json_t *calls = json_object_get(want, "tool_calls"), *errors = json_object_get(want, "errors"), *v;
        size_t i;
        CHECK(strcmp(r->reasoning, json_string_value(json_object_get(want, "reasoning"))) == 0, "%s: reasoning \"%s\"", name,
               r->reasoning);
        CHECK(strcmp(r->content, json_string_value(json_object_get(want, "content"))) == 0, "%s: content \"%s\"", name,
               r->content);
        CHECK(r->reasoning_open == json_is_true(json_object_get(want, "reasoning_open")), "%s: reasoning_open", name);
        CHECK(r->n_calls == json_array_size(calls), "%s: %zu tool calls", name, r->n_calls);
        json_array_foreach(calls, i, v) {
                if (i >= r->n_calls)
                        break;
                CHECK(strcmp(r->calls[i].name, json_string_value(json_object_get(v, "name"))) == 0, "%s: call %zu name %s",
                       name, i, r->calls[i].name);
                CHECK(strcmp(r->calls[i].arguments, json_string_value(json_object_get(v, "arguments"))) == 0,
                       "%s: call %zu arguments %s", name, i, r->calls[i].arguments);
        }
        CHECK(r->n_errors == json_array_size(errors), "%s: %zu errors", name, r->n_errors);
        json_array_foreach(errors, i, v) {
                if (i >= r->n_errors)
                        break;
                CHECK(strcmp(r->errors[i].message, json_string_value(json_array_get(v, 0))) == 0, "%s: error \"%s\"", name,
                       r->errors[i].message);
                CHECK(strcmp(r->errors[i].raw, json_string_value(json_array_get(v, 1))) == 0, "%s: error raw \"%s\"", name,
                       r->errors[i].raw);
        }
}

int main(void) {
        json_error_t je;
        json_t *all = json_load_file(tt_srcpath("tests/tokenizer/chat/parse-cases.json"), 0, &je), *c;
        size_t i;
        long splits = 0;
        if (!all) {
                fprintf(stderr, "parse-cases.json: %s\n", je.text);
                return 1;
        }
        json_array_foreach(all, i, c) {
                const char *name = json_string_value(json_object_get(c, "name"));
                const char *text = json_string_value(json_object_get(c, "text"));
                size_t len = json_string_length(json_object_get(c, "text"));
                enum dsv_chat_mode mode = strcmp(json_string_value(json_object_get(c, "mode")), "thinking") == 0
                                                  ? DSV_CHAT_MODE_THINKING
                                                  : DSV_CHAT_MODE_CHAT;
                struct dsv_chat_result one = {0};
                EXPECT(dsv_chat_parse(text, len, mode, &one) == 0);
                check_expected(name, &one, json_object_get(c, "expected"));

                /* every split point */
                for (size_t cut = 0; cut <= len; cut++) {
                        struct dsv_chat_result r;
                        EXPECT(parse_chunked(text, len, mode, &cut, 1, &r) == 0);
                        CHECK(same_result(&one, &r), "%s: split at %zu differs", name, cut);
                        dsv_chat_result_done(&r);
                        splits++;
                }
                /* byte by byte */
                size_t *cuts = malloc((len + 1) * sizeof(size_t));
                for (size_t k = 0; k < len; k++)
                        cuts[k] = k;
                struct dsv_chat_result r;
                EXPECT(parse_chunked(text, len, mode, cuts, len, &r) == 0);
                CHECK(same_result(&one, &r), "%s: byte by byte differs", name);
                dsv_chat_result_done(&r);
                /* random multi-splits */
                for (int rep = 0; rep < 200; rep++) {
                        uint64_t key = dsv_mix64(i * 1000003 + (uint64_t)rep);
                        size_t n = 1 + (size_t)(dsv_rand_u01(key, 0) * 12);
                        for (size_t k = 0; k < n; k++)
                                cuts[k] = (size_t)(dsv_rand_u01(key, k + 1) * (double)(len + 1));
                        for (size_t a = 1; a < n; a++) /* insertion sort */
                                for (size_t b = a; b > 0 && cuts[b - 1] > cuts[b]; b--) {
                                        size_t t = cuts[b];
                                        cuts[b] = cuts[b - 1];
                                        cuts[b - 1] = t;
                                }
                        EXPECT(parse_chunked(text, len, mode, cuts, n, &r) == 0);
                        CHECK(same_result(&one, &r), "%s: random split %d differs", name, rep);
                        dsv_chat_result_done(&r);
                        splits++;
                }
                free(cuts);
                dsv_chat_result_done(&one);
        }
        printf("%zu outputs, %ld chunkings\n", json_array_size(all), splits);
        json_decref(all);
        return test_result("test-chat-parse");
}
