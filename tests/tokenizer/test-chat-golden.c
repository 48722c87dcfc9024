/* DeepSeek-V3.2 chat encoding against golden prompts: chat/encode-cases.json (our
 * conversations, expected text from DeepSeek's encoding_dsv32.py, see chat/derive.py) and,
 * when DSV32_CHAT_OFFICIAL_DIR names a folder holding DeepSeek's own test vectors
 * (test_input*.json / test_output*.txt from the model repository's encoding/ folder; not
 * shipped here), those too. Also the official test's round trip (an
 * assistant turn rendered after its context parses back to itself), the tools argument, and
 * on the real tokenizer that the markers become single tokens. */
#include "tests/tokenizer/tok-test.h"

#include <jansson.h>

#include "daemon/tokenizer/chat.h"

static json_t *load_json(const char *rel) {
        json_error_t je;
        json_t *j = json_load_file(tt_srcpath(rel), 0, &je);
        if (!j) {
                fprintf(stderr, "%s: %s (line %d)\n", rel, je.text, je.line);
                exit(1);
        }
        return j;
}

static void show_diff(const char *want, const char *got) {
        size_t i = 0;
        while (want[i] && want[i] == got[i])
                i++;
        fprintf(stderr, "  first difference at byte %zu:\n  want: \"%.80s\"\n  got:  \"%.80s\"\n", i, want + i, got + i);
}

static int cases(void) {
        json_t *all = load_json("tests/tokenizer/chat/encode-cases.json"), *c;
        size_t i;
        int n = 0;
        json_array_foreach(all, i, c) {
                struct dsv_chat_opts o = DSV_CHAT_OPTS_INIT;
                struct dsv_error err = {{0}};
                const char *name = json_string_value(json_object_get(c, "name"));
                json_t *want = json_object_get(c, "expected"), *v;
                char *got = NULL;
                o.mode = strcmp(json_string_value(json_object_get(c, "mode")), "thinking") == 0 ? DSV_CHAT_MODE_THINKING
                                                                                               : DSV_CHAT_MODE_CHAT;
                if ((v = json_object_get(c, "drop_thinking")))
                        o.drop_thinking = json_is_true(v);
                if ((v = json_object_get(c, "add_bos")))
                        o.add_bos = json_is_true(v);
                if ((v = json_object_get(c, "context")))
                        o.n_context = (size_t)json_integer_value(v);
                int r = dsv_chat_encode(json_object_get(c, "messages"), NULL, &o, &got, NULL, &err);
                if (json_is_string(want)) {
                        CHECK(r == 0, "%s: %s", name, err.msg);
                        if (r == 0 && strcmp(got, json_string_value(want)) != 0) {
                                CHECK(false, "%s: prompt differs", name);
                                show_diff(json_string_value(want), got);
                        }
                } else
                        CHECK(r == -EINVAL && err.msg[0], "%s: expected an error, got %d", name, r);
                if (r < 0 && json_is_string(want) == false)
                        printf("%-32s rejected: %s\n", name, err.msg);
                free(got);
                n++;
        }
        json_decref(all);
        return n;
}

static char *read_text(const char *rel, size_t *len) {
        char *s = NULL;
        size_t n = 0;
        if (dsv_read_file(tt_srcpath(rel), 16u << 20, &s, &n) < 0) {
                fprintf(stderr, "cannot read %s\n", rel);
                exit(1);
        }
        while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == ' ' || s[n - 1] == '\r' || s[n - 1] == '\t'))
                s[--n] = 0; /* the official test compares .strip()ped text */
        *len = n;
        return s;
}

static void official(const char *in, const char *out) {
        struct dsv_chat_opts o = DSV_CHAT_OPTS_INIT; /* thinking, drop_thinking, BOS */
        struct dsv_error err = {{0}};
        json_t *d = load_json(in), *msgs = json_object_get(d, "messages"), *tools = json_object_get(d, "tools");
        size_t wn;
        char *want = read_text(out, &wn), *got = NULL;
        /* the official test puts the tools on messages[0]; dsv_chat_encode's tools argument
         * does the same for a leading system message */
        int r = dsv_chat_encode(msgs, tools, &o, &got, NULL, &err);
        CHECK(r == 0, "%s: %s", in, err.msg);
        if (r == 0 && strcmp(want, got) != 0) {
                CHECK(false, "%s: prompt differs from %s", in, out);
                show_diff(want, got);
        }
        free(got);

        if (tools) {
                /* the official round trips: messages[4] and messages[-6] parse back */
                size_t n = json_array_size(msgs);
                size_t which[2] = {4, n - 6};
                json_object_set(json_array_get(msgs, 0), "tools", tools);
                for (int k = 0; k < 2; k++) {
                        o.n_context = which[k];
                        json_t *sub = json_array();
                        for (size_t i = 0; i <= which[k]; i++)
                                json_array_append(sub, json_array_get(msgs, i));
                        r = dsv_chat_encode(sub, NULL, &o, &got, NULL, &err);
                        CHECK(r == 0, "%s: context %zu: %s", in, which[k], err.msg);
                        struct dsv_chat_result res = {0};
                        json_t *m = json_array_get(msgs, which[k]), *calls = json_object_get(m, "tool_calls"), *c;
                        EXPECT(r == 0 && dsv_chat_parse(got, strlen(got), DSV_CHAT_MODE_THINKING, &res) == 0);
                        EXPECT(res.n_errors == 0 && !res.reasoning_open);
                        EXPECT(strcmp(res.reasoning, json_string_value(json_object_get(m, "reasoning_content"))) == 0);
                        json_t *content = json_object_get(m, "content");
                        EXPECT(strcmp(res.content, json_is_string(content) ? json_string_value(content) : "") == 0);
                        EXPECT(res.n_calls == json_array_size(calls));
                        size_t i;
                        json_array_foreach(calls, i, c) {
                                if (i >= res.n_calls)
                                        break;
                                json_t *f = json_object_get(c, "function");
                                EXPECT(strcmp(res.calls[i].name, json_string_value(json_object_get(f, "name"))) == 0);
                                EXPECT(strcmp(res.calls[i].arguments, json_string_value(json_object_get(f, "arguments"))) == 0);
                        }
                        dsv_chat_result_done(&res);
                        free(got);
                        got = NULL;
                        json_decref(sub);
                }
        }
        free(want);
        json_decref(d);
}

/* The tools argument: a leading system message gets them; without one an empty system
 * message carries them. */
static void tools_argument(void) {
        struct dsv_chat_opts o = DSV_CHAT_OPTS_INIT;
        struct dsv_error err = {{0}};
        json_t *tools = json_loads("[{\"type\": \"function\", \"function\": {\"name\": \"f\", \"parameters\": {}}}]", 0, NULL);
        json_t *a = json_loads("[{\"role\": \"user\", \"content\": \"hi\"}]", 0, NULL);
        json_t *b = json_loads("[{\"role\": \"system\", \"content\": \"\", \"tools\": []}, {\"role\": \"user\", \"content\": "
                               "\"hi\"}]",
                               0, NULL);
        char *x = NULL, *y = NULL;
        json_object_set(json_array_get(b, 0), "tools", tools);
        EXPECT(dsv_chat_encode(a, tools, &o, &x, NULL, &err) == 0);
        EXPECT(dsv_chat_encode(b, NULL, &o, &y, NULL, &err) == 0);
        EXPECT(x && y && strcmp(x, y) == 0);
        EXPECT(x && strstr(x, "<functions>\n{\"name\": \"f\", \"parameters\": {}}\n</functions>\n<\xef\xbd\x9cUser"));
        free(x);
        free(y);
        EXPECT(dsv_chat_encode(b, tools, &o, &y, NULL, &err) == -EINVAL && strstr(err.msg, "twice"));
        /* from JSON text */
        static const char text[] = "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"tools\": [{\"type\": "
                                   "\"function\", \"function\": {\"name\": \"f\", \"parameters\": {}}}]}";
        EXPECT(dsv_chat_encode_json(text, strlen(text), &o, &y, NULL, &err) == 0);
        EXPECT(dsv_chat_encode(a, tools, &o, &x, NULL, &err) == 0);
        EXPECT(x && y && strcmp(x, y) == 0);
        free(x);
        free(y);
        EXPECT(dsv_chat_encode_json("{", 1, &o, &y, NULL, &err) == -EINVAL && strstr(err.msg, "chat JSON"));
        json_decref(tools);
        json_decref(a);
        json_decref(b);
}

/* On the real tokenizer the chat markers are single tokens. */
static void tokens(void) {
        char path[8192];
        struct dsv_error err = {{0}};
        struct dsv_tok *tok = NULL;
        if (!tt_deepseek_path(path, sizeof(path)) || dsv_tok_load(path, NULL, &tok, &err) < 0)
                return;
        json_t *m = json_loads("[{\"role\": \"user\", \"content\": \"hi\"}]", 0, NULL);
        struct dsv_chat_opts o = DSV_CHAT_OPTS_INIT;
        char *p = NULL;
        struct dsv_tok_ids ids = {0};
        o.mode = DSV_CHAT_MODE_CHAT;
        EXPECT(dsv_chat_encode(m, NULL, &o, &p, NULL, &err) == 0);
        EXPECT(p && dsv_tok_encode(tok, p, strlen(p), 0, &ids) == 0);
        /* <｜begin▁of▁sentence｜> <｜User｜> hi <｜Assistant｜> </ think > */
        EXPECT(ids.n >= 4 && ids.v[0] == 0 && ids.v[1] == 128803 && ids.v[3] == 128804);
        dsv_tok_ids_done(&ids);
        free(p);
        json_decref(m);
        dsv_tok_free(tok);
}

int main(void) {
        int n = cases();
        EXPECT(n >= 12);
        const char *od = getenv("DSV32_CHAT_OFFICIAL_DIR");
        if (od && *od) {
                char in[4096], out[4096];
                snprintf(in, sizeof(in), "%s/test_input.json", od);
                snprintf(out, sizeof(out), "%s/test_output.txt", od);
                official(in, out);
                snprintf(in, sizeof(in), "%s/test_input_search_wo_date.json", od);
                snprintf(out, sizeof(out), "%s/test_output_search_wo_date.txt", od);
                official(in, out);
        } else {
                printf("DeepSeek's own chat test vectors: not checked (set DSV32_CHAT_OFFICIAL_DIR)\n");
        }
        tools_argument();
        tokens();
        return test_result("test-chat-golden");
}
