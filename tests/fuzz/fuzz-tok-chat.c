/* libFuzzer target: the DeepSeek-V3.2 output parser and chat encoder. Input: one byte (mode
 * and chunking seed), then text. The text is parsed at once and in chunks chosen by the
 * seed; the results must be equal. The same text is also given to the encoder as chat JSON. */
#include "config.h"

#include "daemon/tokenizer/chat.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int add_cb(void *ud, const struct dsv_chat_event *ev) { return dsv_chat_result_add(ud, ev); }

static bool same(const struct dsv_chat_result *a, const struct dsv_chat_result *b) {
        if (a->reasoning_len != b->reasoning_len || memcmp(a->reasoning, b->reasoning, a->reasoning_len) ||
            a->content_len != b->content_len || memcmp(a->content, b->content, a->content_len) ||
            a->n_calls != b->n_calls || a->n_errors != b->n_errors)
                return false;
        for (size_t i = 0; i < a->n_calls; i++)
                if (strcmp(a->calls[i].name, b->calls[i].name) || strcmp(a->calls[i].arguments, b->calls[i].arguments))
                        return false;
        for (size_t i = 0; i < a->n_errors; i++)
                if (strcmp(a->errors[i].message, b->errors[i].message) || strcmp(a->errors[i].raw, b->errors[i].raw))
                        return false;
        return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size == 0)
                return 0;
        enum dsv_chat_mode mode = data[0] & 1 ? DSV_CHAT_MODE_THINKING : DSV_CHAT_MODE_CHAT;
        uint32_t seed = data[0] >> 1;
        const char *text = (const char *)data + 1;
        size_t len = size - 1;
        struct dsv_chat_result one = {0}, many = {0};
        struct dsv_chat_parser *p = NULL;

        if (dsv_chat_parse(text, len, mode, &one) < 0)
                abort();
        if (dsv_chat_parser_new(mode, &p) < 0)
                abort();
        for (size_t at = 0; at < len;) {
                seed = seed * 1103515245u + 12345u;
                size_t k = MIN(len - at, (size_t)(seed >> 16) % 9);
                if (dsv_chat_parser_feed(p, text + at, k, add_cb, &many) < 0)
                        abort();
                at += k;
        }
        if (dsv_chat_parser_finish(p, add_cb, &many) < 0)
                abort();
        if (!many.reasoning)
                many.reasoning = calloc(1, 1);
        if (!many.content)
                many.content = calloc(1, 1);
        if (!same(&one, &many) || one.reasoning_open != dsv_chat_parser_reasoning_open(p))
                abort();
        dsv_chat_parser_free(p);
        dsv_chat_result_done(&one);
        dsv_chat_result_done(&many);

        struct dsv_chat_opts o = DSV_CHAT_OPTS_INIT;
        struct dsv_error err = {{0}};
        char *prompt = NULL;
        o.mode = mode;
        o.drop_thinking = data[0] & 2;
        if (dsv_chat_encode_json(text, len, &o, &prompt, NULL, &err) == 0)
                free(prompt);
        else if (!err.msg[0])
                abort();
        return 0;
}
