/* Chat events end to end (GENERATE flag 0x40, CHAT_EVENT records, tools): dsv32d on the tiny
 * model with a scripted output (DSV32_TEST_FORCE_TOKENS) holding reasoning, content and two
 * DSML tool calls. For three cuts of that text into tokens (the tokenizer's own, one piece
 * per character, random pieces), the events a chat request gets through libdsv32 equal the
 * parser's one-shot result (dsv_chat_parse on the whole text): the reasoning, the content,
 * then begin (index, call id, name), arguments, end of each call, in order, finish
 * "tool_calls", and the same sequence (adjacent deltas of a kind merged) streamed and not;
 * the call ids are stable (equal streamed and not, on every cut) and distinct; the TOKENS
 * text is the script. A stop string inside the content ends it there: the events are the
 * parse of the text before it, finish "stop string", no tool call. A conversation with an
 * assistant tool call and its result is encoded as the V3.2 encoder encodes it (the prompt
 * has as many tokens as dsv_chat_encode_json's text). Hostile requests get clear errors on
 * a connection that keeps serving: a tool schema over 64 KiB, a schema that is not JSON, a
 * tool message without a tool_call_id or naming no call, invalid UTF-8, chat events on a
 * text prompt. */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "client/dsv32.h"
#include "daemon/tokenizer/chat.h"
#include "tests/ipc/harness.h"

#define MAXEV 64

static struct h_daemon d;

/* "Let me check.</think>Sure.\n\n<DSML function_calls>...two invokes..." (thinking mode) */
#define DS "\xef\xbd\x9c" "DSML\xef\xbd\x9c"
static const char script[] =
        "The user wants the weather in Paris and the time. I should call both tools.</think>I will call two tools."
        "\n\n<" DS "function_calls>\n"
        "<" DS "invoke name=\"get_weather\">\n"
        "<" DS "parameter name=\"city\" string=\"true\">Paris</" DS "parameter>\n"
        "</" DS "invoke>\n"
        "<" DS "invoke name=\"get_time\">\n"
        "<" DS "parameter name=\"tz\" string=\"true\">CET</" DS "parameter>\n"
        "<" DS "parameter name=\"verbose\" string=\"false\">true</" DS "parameter>\n"
        "</" DS "invoke>\n"
        "</" DS "function_calls>";

struct ev {
        int type;
        char text[2048];
        size_t len;
        uint32_t index;
        char id[65], name[65];
};

struct run {
        struct ev ev[MAXEV];
        int n;
        char raw[4096]; /* the TOKENS text */
        size_t raw_len;
        struct dsv32_event done;
        int error;
        char message[1100];
};

static bool is_delta(int t) {
        return t == DSV32_EVENT_REASONING || t == DSV32_EVENT_CONTENT || t == DSV32_EVENT_TOOL_CALL_ARGUMENTS;
}

/* Adds an event, merging a delta into the previous one of its kind (and call). */
static void add_event(struct run *o, const struct dsv32_event *e) {
        struct ev *last = o->n ? &o->ev[o->n - 1] : NULL;
        if (is_delta((int)e->type) && last && last->type == (int)e->type && last->index == e->tool_index) {
                REQUIRE(last->len + e->text_len < sizeof(last->text), "event text too long");
                memcpy(last->text + last->len, e->text, e->text_len);
                last->len += e->text_len;
                return;
        }
        REQUIRE(o->n < MAXEV, "too many events");
        struct ev *x = &o->ev[o->n++];
        memset(x, 0, sizeof(*x));
        x->type = (int)e->type;
        x->index = e->tool_index;
        if (e->text_len) {
                REQUIRE(e->text_len < sizeof(x->text), "event text too long");
                memcpy(x->text, e->text, e->text_len);
                x->len = e->text_len;
        }
        if (e->type == DSV32_EVENT_TOOL_CALL_BEGIN) {
                CHECK(e->tool_call_id != NULL && e->tool_name != NULL, "a begin event without id or name");
                snprintf(x->id, sizeof(x->id), "%s", e->tool_call_id ? e->tool_call_id : "");
                snprintf(x->name, sizeof(x->name), "%.*s", (int)e->tool_name_len, e->tool_name ? e->tool_name : "");
        }
}

/* Submits q and collects its events until DONE or ERROR. */
static void run(dsv32_client *c, const struct dsv32_request *q, struct run *o) {
        uint64_t id;
        int r;
        memset(o, 0, sizeof(*o));
        r = dsv32_submit(c, q, &id);
        if (r < 0) {
                o->error = r;
                snprintf(o->message, sizeof(o->message), "%s", dsv32_last_error(c));
                return;
        }
        for (;;) {
                struct dsv32_event ev[8];
                int k = dsv32_poll_events(c, ev, 8);
                REQUIRE(k >= 0, "poll: %s", dsv32_last_error(c));
                if (k == 0)
                        REQUIRE(dsv32_wait(c, 60000) == 1, "no event in 60 s");
                for (int i = 0; i < k; i++) {
                        REQUIRE(ev[i].id == id, "an event of another request");
                        switch (ev[i].type) {
                        case DSV32_EVENT_DONE:
                                o->done = ev[i];
                                return;
                        case DSV32_EVENT_ERROR:
                                o->error = ev[i].error;
                                snprintf(o->message, sizeof(o->message), "%s", ev[i].message);
                                return;
                        case DSV32_EVENT_TOKENS:
                                REQUIRE(o->raw_len + ev[i].text_len < sizeof(o->raw), "too much text");
                                if (ev[i].text_len)
                                        memcpy(o->raw + o->raw_len, ev[i].text, ev[i].text_len);
                                o->raw_len += ev[i].text_len;
                                break;
                        default:
                                add_event(o, &ev[i]);
                        }
                }
        }
}

/* The events the parser gives for the whole text at once. */
static void expected(const char *text, size_t len, struct run *o) {
        struct dsv_chat_result res;
        memset(o, 0, sizeof(*o));
        REQUIRE(dsv_chat_parse(text, len, DSV_CHAT_MODE_THINKING, &res) == 0, "dsv_chat_parse");
        REQUIRE(res.n_errors == 0, "the script does not parse: %s", res.errors[0].message);
        if (res.reasoning_len) {
                struct ev *x = &o->ev[o->n++];
                x->type = DSV32_EVENT_REASONING;
                x->len = res.reasoning_len;
                memcpy(x->text, res.reasoning, res.reasoning_len);
        }
        if (res.content_len) {
                struct ev *x = &o->ev[o->n++];
                x->type = DSV32_EVENT_CONTENT;
                x->len = res.content_len;
                memcpy(x->text, res.content, res.content_len);
        }
        for (size_t i = 0; i < res.n_calls; i++) {
                struct ev *b = &o->ev[o->n++], *a = &o->ev[o->n++], *e = &o->ev[o->n++];
                b->type = DSV32_EVENT_TOOL_CALL_BEGIN;
                snprintf(b->name, sizeof(b->name), "%s", res.calls[i].name);
                a->type = DSV32_EVENT_TOOL_CALL_ARGUMENTS;
                a->len = strlen(res.calls[i].arguments);
                memcpy(a->text, res.calls[i].arguments, a->len);
                e->type = DSV32_EVENT_TOOL_CALL_END;
                b->index = a->index = e->index = (uint32_t)i;
        }
        dsv_chat_result_done(&res);
}

/* got == want, event by event (ids are not in want: only their form is checked). */
static void compare(const struct run *got, const struct run *want, const char *what) {
        CHECK(got->error == 0, "%s: failed: %s", what, got->message);
        CHECK(got->n == want->n, "%s: %d events, want %d", what, got->n, want->n);
        for (int i = 0; i < got->n && i < want->n; i++) {
                const struct ev *g = &got->ev[i], *w = &want->ev[i];
                CHECK(g->type == w->type && g->index == w->index, "%s: event %d is type %d call %u, want type %d call %u",
                      what, i, g->type, g->index, w->type, w->index);
                CHECK(g->len == w->len && memcmp(g->text, w->text, g->len) == 0, "%s: event %d text '%.*s', want '%.*s'",
                      what, i, (int)g->len, g->text, (int)w->len, w->text);
                CHECK(strcmp(g->name, w->name) == 0, "%s: event %d name '%s', want '%s'", what, i, g->name, w->name);
                if (g->type == DSV32_EVENT_TOOL_CALL_BEGIN)
                        CHECK(strncmp(g->id, "call_", 5) == 0 && strlen(g->id) == 21, "%s: call id '%s'", what, g->id);
        }
}

static const struct dsv32_tool tools[] = {
        {"get_weather", "The weather in a city",
         "{\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}, \"required\": [\"city\"]}"},
        {"get_time", "The time in a time zone",
         "{\"type\": \"object\", \"properties\": {\"tz\": {\"type\": \"string\"}, \"verbose\": {\"type\": \"boolean\"}}}"},
};

static struct dsv32_request chat_request(const struct dsv32_message *m, size_t n, uint32_t flags) {
        struct dsv32_request q = {.struct_size = sizeof(q)};
        q.chat = m;
        q.n_chat = n;
        q.tools = tools;
        q.n_tools = 2;
        q.max_tokens = 1000; /* the script cut a piece per character is ~500 tokens */
        q.flags = DSV32_REQ_CHAT_EVENTS | DSV32_REQ_THINKING | flags;
        return q;
}

/* The script's token ids for one cut: 0 the tokenizer's own, 1 a piece per character, 2
 * random pieces of 1..9 bytes (at character boundaries), each piece tokenized alone. */
static char *script_ids(dsv32_client *c, int cut) {
        size_t len = strlen(script), i = 0, cap = 1 << 16, used = 0;
        char *out = malloc(cap);
        uint64_t rng = 12345;
        REQUIRE(out, "out of memory");
        out[0] = 0;
        while (i < len) {
                size_t n = len - i;
                int32_t *ids;
                size_t n_ids;
                if (cut == 1)
                        n = 1;
                else if (cut == 2) {
                        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
                        n = MIN(n, 1 + (size_t)((rng >> 33) % 9));
                }
                while (i + n < len && ((unsigned char)script[i + n] & 0xc0) == 0x80)
                        n++; /* whole characters */
                REQUIRE(dsv32_tokenize(c, script + i, n, 0, &ids, &n_ids) == 0, "tokenize: %s", dsv32_last_error(c));
                for (size_t k = 0; k < n_ids; k++)
                        used += (size_t)snprintf(out + used, cap - used, "%s%d", used ? "," : "", ids[k]);
                REQUIRE(used < cap - 16, "too many ids");
                dsv32_free(ids);
                i += n;
        }
        return out;
}

static void expect_error(dsv32_client *c, const struct dsv32_request *q, int err, const char *needle, const char *what) {
        struct run o;
        run(c, q, &o);
        CHECK(o.error == err, "%s: got %d (%s), want %d", what, o.error, o.message, err);
        CHECK(strstr(o.message, needle) != NULL, "%s: the message '%s' does not say '%s'", what, o.message, needle);
        /* the connection keeps serving */
        struct dsv32_message ok[] = {{.role = "user", .content = "hi"}};
        struct dsv32_request q2 = chat_request(ok, 1, 0);
        q2.max_tokens = 2;
        run(c, &q2, &o);
        CHECK(o.error == 0 && o.done.type == DSV32_EVENT_DONE, "%s: the next request failed: %s", what, o.message);
}

static void hostile(dsv32_client *c) {
        struct dsv32_message user[] = {{.role = "user", .content = "weather?"}};
        struct dsv32_tool t[1] = {{"big", "x", NULL}};
        struct dsv32_request q;
        char *big = malloc(70000);
        REQUIRE(big, "out of memory");
        memset(big, ' ', 69999);
        big[0] = '{';
        big[69997] = '}';
        big[69998] = 0;
        t[0].parameters = big;
        q = chat_request(user, 1, 0);
        q.tools = t;
        q.n_tools = 1;
        expect_error(c, &q, -E2BIG, "limit is 65536", "schema over the limit");
        free(big);

        t[0].parameters = "{\"type\": \"object\", \"properties\": {";
        expect_error(c, &q, -EINVAL, "not valid JSON", "schema not JSON");
        t[0].parameters = "[1, 2]";
        expect_error(c, &q, -EINVAL, "must be a JSON schema object", "schema not an object");
        t[0].parameters = NULL;
        t[0].name = "bad name!";
        expect_error(c, &q, -EINVAL, "may only have letters", "tool name");

        struct dsv32_tool_call call = {"call_1", "get_weather", "{\"city\": \"Paris\"}"};
        struct dsv32_message conv[] = {
                {.role = "user", .content = "weather?"},
                {.role = "assistant", .content = "", .tool_calls = &call, .n_tool_calls = 1},
                {.role = "tool", .content = "sunny"},
        };
        q = chat_request(conv, 3, 0);
        expect_error(c, &q, -EINVAL, "needs the tool_call_id", "tool message without an id");
        conv[2].tool_call_id = "call_2";
        expect_error(c, &q, -EINVAL, "names no tool call", "tool message with another id");
        conv[2].tool_call_id = "call_1";
        call.arguments = "{\"city\": ";
        expect_error(c, &q, -EINVAL, "arguments is not JSON", "tool call arguments not JSON");
        call.arguments = "{\"city\": \"Paris\"}";

        struct dsv32_message bad[] = {{.role = "user", .content = "caf\xc3(\xa9"}};
        q = chat_request(bad, 1, 0);
        expect_error(c, &q, -EINVAL, "UTF-8", "invalid UTF-8");

        q = (struct dsv32_request){.struct_size = sizeof(q), .text = "hello", .flags = DSV32_REQ_CHAT_EVENTS};
        expect_error(c, &q, -EINVAL, "chat requests", "chat events on a text prompt");
}

/* A conversation with a tool call and its result: the prompt is the encoder's. */
static void round_trip(dsv32_client *c) {
        struct dsv32_tool_call calls[] = {{"call_a", "get_weather", "{\"city\": \"Paris\"}"},
                                          {"call_b", "get_time", "{\"tz\": \"CET\"}"}};
        struct dsv32_message conv[] = {
                {.role = "system", .content = "You are helpful."},
                {.role = "user", .content = "Weather and time in Paris?"},
                {.role = "assistant", .content = "Calling.", .reasoning_content = "Two tools.", .tool_calls = calls,
                 .n_tool_calls = 2},
                {.role = "tool", .content = "sunny, 21 C", .tool_call_id = "call_a"},
                {.role = "tool", .content = "14:05", .tool_call_id = "call_b"},
        };
        static const char json[] =
                "{\"messages\": [{\"role\": \"system\", \"content\": \"You are helpful.\"},"
                "{\"role\": \"user\", \"content\": \"Weather and time in Paris?\"},"
                "{\"role\": \"assistant\", \"content\": \"Calling.\", \"reasoning_content\": \"Two tools.\", \"tool_calls\": ["
                "{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"arguments\": \"{\\\"city\\\": \\\"Paris\\\"}\"}},"
                "{\"type\": \"function\", \"function\": {\"name\": \"get_time\", \"arguments\": \"{\\\"tz\\\": \\\"CET\\\"}\"}}]},"
                "{\"role\": \"tool\", \"content\": \"sunny, 21 C\"}, {\"role\": \"tool\", \"content\": \"14:05\"}],"
                "\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"The weather in a "
                "city\", \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}, "
                "\"required\": [\"city\"]}}},"
                "{\"type\": \"function\", \"function\": {\"name\": \"get_time\", \"description\": \"The time in a time zone\", "
                "\"parameters\": {\"type\": \"object\", \"properties\": {\"tz\": {\"type\": \"string\"}, \"verbose\": "
                "{\"type\": \"boolean\"}}}}}]}";
        struct dsv_chat_opts opts = DSV_CHAT_OPTS_INIT;
        struct dsv_error err = {{0}};
        struct dsv32_request q = chat_request(conv, 5, 0);
        char *prompt;
        size_t plen, n_ids;
        int32_t *ids;
        struct run o;

        REQUIRE(dsv_chat_encode_json(json, strlen(json), &opts, &prompt, &plen, &err) == 0, "encode: %s", err.msg);
        CHECK(strstr(prompt, "<result>sunny, 21 C</result>") && strstr(prompt, "get_time") &&
                      strstr(prompt, "invoke name=\"get_weather\""),
              "the reference prompt lacks the tool call or result: %s", prompt);
        REQUIRE(dsv32_tokenize(c, prompt, plen, 0, &ids, &n_ids) == 0, "tokenize: %s", dsv32_last_error(c));
        q.max_tokens = 1;
        run(c, &q, &o);
        CHECK(o.error == 0, "round trip failed: %s", o.message);
        CHECK(o.done.usage.prompt_tokens == n_ids, "the prompt has %u tokens; the encoder's text has %zu",
              o.done.usage.prompt_tokens, n_ids);
        dsv32_free(ids);
        free(prompt);
}

int main(void) {
        static const char *const cuts[] = {"the tokenizer's cut", "a piece per character", "random pieces"};
        char first_ids[2][65] = {{0}};
        char *ids[3];
        struct run want, want_stop;
        dsv32_client *c;

        h_init("test-daemon-chat-events", 240);
        h_daemon_start(&d, NULL, NULL);
        c = h_connect(&d);
        REQUIRE(c, "connect");
        {
                struct dsv32_info inf;
                REQUIRE(dsv32_get_info(c, &inf) == 0, "info");
                CHECK(inf.features & DSV32_FEATURE_CHAT_EVENTS, "WELCOME lacks feature 0x20 (features 0x%x)", inf.features);
        }
        for (int k = 0; k < 3; k++)
                ids[k] = script_ids(c, k);
        CHECK(strcmp(ids[0], ids[1]) != 0 && strcmp(ids[1], ids[2]) != 0, "the cuts are not different");
        hostile(c);
        round_trip(c);
        dsv32_disconnect(c);
        h_daemon_stop(&d, 10);

        expected(script, strlen(script), &want);
        REQUIRE(want.n == 8, "the parser found %d events in the script, want 8", want.n);
        {
                const char *cut = strstr(script, "two tools");
                expected(script, (size_t)(cut - script), &want_stop);
        }
        for (int k = 0; k < 3; k++) {
                char env_ids[70000];
                const char *env[] = {env_ids, NULL};
                const char *stop[] = {"two tools"};
                struct run got;
                REQUIRE(strlen(ids[k]) + 32 < sizeof(env_ids), "too many ids");
                snprintf(env_ids, sizeof(env_ids), "DSV32_TEST_FORCE_TOKENS=%s", ids[k]);
                h_daemon_start(&d, NULL, env);
                c = h_connect(&d);
                REQUIRE(c, "connect");
                struct dsv32_message user[] = {{.role = "user", .content = "What is the weather in Paris, and the time?"}};
                for (int streamed = 0; streamed < 2; streamed++) {
                        char what[96];
                        struct dsv32_request q = chat_request(user, 1, streamed ? 0 : DSV32_REQ_NO_STREAM);
                        snprintf(what, sizeof(what), "%s, %s", cuts[k], streamed ? "streamed" : "not streamed");
                        run(c, &q, &got);
                        compare(&got, &want, what);
                        CHECK(got.done.finish == DSV32_FINISH_TOOL_CALLS, "%s: finish %s, want tool calls", what,
                              dsv32_finish_name(got.done.finish));
                        CHECK(got.raw_len == strlen(script) && memcmp(got.raw, script, got.raw_len) == 0,
                              "%s: the TOKENS text is not the script: '%.*s'", what, (int)got.raw_len, got.raw);
                        if (got.n == 8) {
                                CHECK(strcmp(got.ev[2].id, got.ev[5].id) != 0, "%s: both calls have id %s", what, got.ev[2].id);
                                for (int j = 0; j < 2; j++) {
                                        if (!first_ids[j][0])
                                                snprintf(first_ids[j], sizeof(first_ids[j]), "%.64s", got.ev[2 + 3 * j].id);
                                        CHECK(strcmp(first_ids[j], got.ev[2 + 3 * j].id) == 0, "%s: call %d has id %s, before %s",
                                              what, j, got.ev[2 + 3 * j].id, first_ids[j]);
                                }
                        }
                        /* a stop string inside the content: the parse of the text before it */
                        q.stop_strings = stop;
                        q.n_stop_strings = 1;
                        snprintf(what, sizeof(what), "%s, %s, stop string", cuts[k], streamed ? "streamed" : "not streamed");
                        run(c, &q, &got);
                        compare(&got, &want_stop, what);
                        CHECK(got.done.finish == DSV32_FINISH_STOP_STRING, "%s: finish %s", what,
                              dsv32_finish_name(got.done.finish));
                }
                dsv32_disconnect(c);
                h_daemon_stop(&d, 10);
                free(ids[k]);
        }
        return test_result("test-daemon-chat-events");
}
