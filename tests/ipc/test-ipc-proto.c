/* The message codec: every message type round-trips with every field set; forward
 * compatibility (unknown optional keys ignored, unknown critical keys refused); and hostile
 * payloads (huge counts, deep nesting, truncation, trailing bytes, wrong types, duplicate
 * keys, over-cap strings and arrays, NUL in names, negative token ids) are refused with the
 * documented error before anything is allocated from their claims. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ipc/idlist.h"
#include "ipc/proto.h"
#include "tests/check.h"

static int roundtrip(const struct dsv_msg *in, struct dsv_msg *out, struct dsv_wbuf *w) {
        char why[256];
        int r;
        w->len = 0;
        w->err = 0;
        r = dsv_msg_encode(in, w);
        if (r < 0)
                return r;
        r = dsv_msg_decode(in->type, w->data, w->len, out, why, sizeof(why));
        if (r < 0)
                fprintf(stderr, "decode %s: %s\n", dsv_msg_type_name(in->type), why);
        return r;
}

static void test_roundtrips(void) {
        struct dsv_wbuf w = {0};
        struct dsv_msg in, out;
        int32_t toks[5] = {0, 1, 4095, 7, 2147483647}, stop[2] = {1, 2};
        struct dsv_chat_msg chat[2] = {{.role = "system", .role_len = 6, .content = "be brief", .content_len = 8},
                                       {.role = "user", .role_len = 4, .content = "hi \xe2\x82\xac", .content_len = 6}};

        memset(&in, 0, sizeof(in));
        in.type = DSV_MSG_HELLO;
        in.u.hello.version_major = 1;
        in.u.hello.version_minor = 7;
        strcpy(in.u.hello.name, "test-client");
        in.u.hello.sub_bytes = 1 << 20;
        in.u.hello.comp_bytes = 1 << 16;
        CHECK(roundtrip(&in, &out, &w) == 0, "HELLO");
        CHECK(out.u.hello.version_minor == 7 && !strcmp(out.u.hello.name, "test-client") && out.u.hello.sub_bytes == 1 << 20 &&
                      out.u.hello.comp_bytes == 1 << 16,
              "HELLO fields");
        dsv_msg_release(&out);

        memset(&in, 0, sizeof(in));
        in.type = DSV_MSG_WELCOME;
        in.u.welcome.version_major = 1;
        strcpy(in.u.welcome.model, "tiny");
        in.u.welcome.bos_id = 0;
        in.u.welcome.eos_id = 1;
        in.u.welcome.vocab_size = 4096;
        in.u.welcome.shm_size = 1ull << 33;
        CHECK(roundtrip(&in, &out, &w) == 0, "WELCOME");
        CHECK(out.u.welcome.bos_id == 0 && out.u.welcome.eos_id == 1 && out.u.welcome.shm_size == 1ull << 33 &&
                      !strcmp(out.u.welcome.model, "tiny"),
              "WELCOME fields");
        dsv_msg_release(&out);

        memset(&in, 0, sizeof(in));
        in.type = DSV_MSG_GENERATE;
        in.u.generate.id = UINT64_MAX;
        in.u.generate.tokens = toks;
        in.u.generate.n_tokens = 5;
        in.u.generate.max_tokens = 77;
        in.u.generate.temperature = 0.0f;
        in.u.generate.top_p = 0.5f;
        in.u.generate.top_k = 40;
        in.u.generate.min_p = 0.05f;
        in.u.generate.seed = 0xdeadbeefcafef00dull;
        in.u.generate.flags = DSV_GEN_SEED | DSV_GEN_NO_STREAM;
        in.u.generate.stop_tokens = stop;
        in.u.generate.n_stop_tokens = 2;
        strcpy(in.u.generate.session, "s1");
        {
                static const struct dsv_str stops[2] = {{"\n\n", 2}, {"</answer>", 9}};
                static const struct dsv_bias bias[3] = {{7, -100}, {0, 2.5f}, {129279, 100}};
                in.u.generate.stop_strings = stops;
                in.u.generate.n_stop_strings = 2;
                in.u.generate.repetition_penalty = 1.3f;
                in.u.generate.frequency_penalty = -0.5f;
                in.u.generate.presence_penalty = 2;
                in.u.generate.logit_bias = bias;
                in.u.generate.n_logit_bias = 3;
        }
        CHECK(roundtrip(&in, &out, &w) == 0, "GENERATE");
        CHECK(out.u.generate.n_stop_strings == 2 && out.u.generate.stop_strings[1].len == 9 &&
                      !memcmp(out.u.generate.stop_strings[1].p, "</answer>", 9) &&
                      !memcmp(out.u.generate.stop_strings[0].p, "\n\n", 2),
              "GENERATE stop strings");
        CHECK(out.u.generate.repetition_penalty == 1.3f && out.u.generate.frequency_penalty == -0.5f &&
                      out.u.generate.presence_penalty == 2 && out.u.generate.n_logit_bias == 3 &&
                      out.u.generate.logit_bias[0].id == 7 && out.u.generate.logit_bias[0].bias == -100 &&
                      out.u.generate.logit_bias[2].id == 129279 && out.u.generate.logit_bias[1].bias == 2.5f,
              "GENERATE penalties and logit bias");
        CHECK(out.u.generate.id == UINT64_MAX && out.u.generate.n_tokens == 5 && !memcmp(out.u.generate.tokens, toks, sizeof(toks)) &&
                      out.u.generate.max_tokens == 77 && out.u.generate.temperature == 0.0f && out.u.generate.top_p == 0.5f &&
                      out.u.generate.top_k == 40 && fabsf(out.u.generate.min_p - 0.05f) < 1e-7f &&
                      out.u.generate.seed == 0xdeadbeefcafef00dull && out.u.generate.flags == (DSV_GEN_SEED | DSV_GEN_NO_STREAM) &&
                      out.u.generate.n_stop_tokens == 2 && out.u.generate.stop_tokens[1] == 2 &&
                      !strcmp(out.u.generate.session, "s1") && !out.u.generate.text,
              "GENERATE fields");
        dsv_msg_release(&out);

        memset(&in, 0, sizeof(in));
        in.type = DSV_MSG_GENERATE;
        in.u.generate.id = 3;
        in.u.generate.messages = chat;
        in.u.generate.n_messages = 2;
        in.u.generate.temperature = 1;
        in.u.generate.top_p = 1;
        CHECK(roundtrip(&in, &out, &w) == 0, "GENERATE chat");
        CHECK(out.u.generate.n_messages == 2 && out.u.generate.messages[1].content_len == 6 &&
                      !memcmp(out.u.generate.messages[1].content, "hi \xe2\x82\xac", 6) &&
                      !memcmp(out.u.generate.messages[0].role, "system", 6),
              "chat fields");
        CHECK(!out.u.generate.messages[0].reasoning.p && !out.u.generate.messages[0].n_tool_calls &&
                      !out.u.generate.messages[1].tool_call_id.p && !out.u.generate.n_tools,
              "a 1.2 chat message has no tool fields");
        dsv_msg_release(&out);

        /* feature 0x20: tools, an assistant message with reasoning and tool calls, a tool result */
        {
                static const struct dsv_tool_call calls[2] = {
                        {{"call_1", 6}, {"get_weather", 11}, {"{\"city\": \"Paris\"}", 17}},
                        {{"call_2", 6}, {"noop", 4}, {"{}", 2}},
                };
                static const struct dsv_tool tools[2] = {
                        {{"get_weather", 11}, {"the weather", 11}, {"{\"type\": \"object\"}", 18}},
                        {{"noop", 4}, {NULL, 0}, {NULL, 0}},
                };
                struct dsv_chat_msg conv[3] = {
                        {.role = "user", .role_len = 4, .content = "weather?", .content_len = 8},
                        {.role = "assistant", .role_len = 9, .content = "", .content_len = 0, .reasoning = {"think", 5},
                         .tool_calls = calls, .n_tool_calls = 2},
                        {.role = "tool", .role_len = 4, .content = "sunny", .content_len = 5, .tool_call_id = {"call_1", 6}},
                };
                const struct dsv_chat_msg *m;
                memset(&in, 0, sizeof(in));
                in.type = DSV_MSG_GENERATE;
                in.u.generate.id = 4;
                in.u.generate.messages = conv;
                in.u.generate.n_messages = 3;
                in.u.generate.tools = tools;
                in.u.generate.n_tools = 2;
                in.u.generate.flags = DSV_GEN_CHAT_EVENTS;
                CHECK(roundtrip(&in, &out, &w) == 0, "GENERATE with tools");
                m = out.u.generate.messages;
                CHECK(out.u.generate.n_messages == 3 && m[1].n_tool_calls == 2 && m[1].reasoning.len == 5 &&
                              !memcmp(m[1].reasoning.p, "think", 5) && m[1].tool_calls[0].arguments.len == 17 &&
                              !memcmp(m[1].tool_calls[0].arguments.p, "{\"city\": \"Paris\"}", 17) &&
                              m[1].tool_calls[1].name.len == 4 && !memcmp(m[1].tool_calls[1].id.p, "call_2", 6) &&
                              m[2].tool_call_id.len == 6 && !memcmp(m[2].tool_call_id.p, "call_1", 6) && !m[0].reasoning.p &&
                              m[1].content_len == 0 && m[1].content,
                      "tool call fields");
                CHECK(out.u.generate.n_tools == 2 && out.u.generate.tools[0].parameters.len == 18 &&
                              !memcmp(out.u.generate.tools[0].description.p, "the weather", 11) &&
                              !out.u.generate.tools[1].description.p && !out.u.generate.tools[1].parameters.p &&
                              out.u.generate.flags == DSV_GEN_CHAT_EVENTS,
                      "tools fields");
                dsv_msg_release(&out);

                /* structured output: key 21 round-trips; absent decodes as NULL */
                memset(&in, 0, sizeof(in));
                in.type = DSV_MSG_GENERATE;
                in.u.generate.id = 5;
                in.u.generate.text = "Hi";
                in.u.generate.text_len = 2;
                in.u.generate.schema = "{\"type\":\"object\"}";
                in.u.generate.schema_len = 17;
                CHECK(roundtrip(&in, &out, &w) == 0, "GENERATE with a schema");
                CHECK(out.u.generate.schema_len == 17 && out.u.generate.schema &&
                              !memcmp(out.u.generate.schema, "{\"type\":\"object\"}", 17),
                      "schema field");
                dsv_msg_release(&out);
                in.u.generate.schema = NULL;
                in.u.generate.schema_len = 0;
                CHECK(roundtrip(&in, &out, &w) == 0 && !out.u.generate.schema && out.u.generate.schema_len == 0,
                      "GENERATE without a schema");
                dsv_msg_release(&out);

                memset(&in, 0, sizeof(in));
                in.type = DSV_MSG_CHAT_EVENT;
                in.u.chat_event.id = 9;
                in.u.chat_event.type = DSV_CHAT_EV_TOOL_BEGIN;
                in.u.chat_event.index = 1;
                strcpy(in.u.chat_event.call_id, "call_0123456789abcdef");
                in.u.chat_event.name = "get_weather";
                in.u.chat_event.name_len = 11;
                CHECK(roundtrip(&in, &out, &w) == 0, "CHAT_EVENT");
                CHECK(out.u.chat_event.id == 9 && out.u.chat_event.type == DSV_CHAT_EV_TOOL_BEGIN && out.u.chat_event.index == 1 &&
                              !strcmp(out.u.chat_event.call_id, "call_0123456789abcdef") && out.u.chat_event.name_len == 11 &&
                              !memcmp(out.u.chat_event.name, "get_weather", 11) && !out.u.chat_event.text,
                      "CHAT_EVENT fields");
                dsv_msg_release(&out);

                /* a tool without a name, a tool call that is not a map: refused naming them */
                {
                        /* {0: 1, 20: [{1: "x"}]} */
                        static const uint8_t noname[] = {0x82, 0x00, 0x01, 0x14, 0x91, 0x81, 0x01, 0xa1, 'x'};
                        /* {0: 1, 3: [{0: "user", 1: "", 3: [7]}]} */
                        static const uint8_t badcall[] = {0x82, 0x00, 0x01, 0x03, 0x91, 0x83, 0x00, 0xa4, 'u', 's', 'e', 'r',
                                                          0x01, 0xa0, 0x03, 0x91, 0x07};
                        char why[256] = "";
                        CHECK(dsv_msg_decode(DSV_MSG_GENERATE, noname, sizeof(noname), &out, why, sizeof(why)) == -EPROTO &&
                                      strstr(why, "tools[0] needs name"),
                              "a tool without a name: %s", why);
                        CHECK(dsv_msg_decode(DSV_MSG_GENERATE, badcall, sizeof(badcall), &out, why, sizeof(why)) == -EPROTO &&
                                      strstr(why, "tool_calls[0] must be a map"),
                              "a tool call that is not a map: %s", why);
                }
        }

        /* defaults of absent optional fields */
        {
                static const uint8_t minimal[] = {0x81, 0x00, 0x05}; /* {0: 5} */
                CHECK(dsv_msg_decode(DSV_MSG_GENERATE, minimal, sizeof(minimal), &out, NULL, 0) == 0, "minimal GENERATE");
                CHECK(out.u.generate.id == 5 && out.u.generate.max_tokens == 256 && out.u.generate.temperature == 1.0f &&
                              out.u.generate.top_p == 1.0f && out.u.generate.top_k == 0 &&
                              out.u.generate.repetition_penalty == 1.0f && out.u.generate.frequency_penalty == 0 &&
                              out.u.generate.presence_penalty == 0 && out.u.generate.n_logit_bias == 0,
                      "defaults: max_tokens %u temperature %g", out.u.generate.max_tokens, out.u.generate.temperature);
                dsv_msg_release(&out);
        }

        memset(&in, 0, sizeof(in));
        in.type = DSV_MSG_TOKENS;
        in.u.tokens.id = 9;
        in.u.tokens.tokens = toks;
        in.u.tokens.n_tokens = 3;
        in.u.tokens.text = "abc";
        in.u.tokens.text_len = 3;
        CHECK(roundtrip(&in, &out, &w) == 0, "TOKENS");
        CHECK(out.u.tokens.n_tokens == 3 && out.u.tokens.text_len == 3 && !memcmp(out.u.tokens.text, "abc", 3), "TOKENS fields");
        dsv_msg_release(&out);

        /* logprobs: GENERATE key 19 (present with 0 is not absent) and TOKENS keys 3..5 */
        for (uint32_t n = 0; n <= DSV_MAX_TOP_LOGPROBS; n += 20) {
                memset(&in, 0, sizeof(in));
                in.type = DSV_MSG_GENERATE;
                in.u.generate.id = 4;
                in.u.generate.tokens = toks;
                in.u.generate.n_tokens = 2;
                in.u.generate.has_logprobs = true;
                in.u.generate.logprobs = n;
                CHECK(roundtrip(&in, &out, &w) == 0 && out.u.generate.has_logprobs && out.u.generate.logprobs == n,
                      "GENERATE logprobs %u: has %d, %u", n, out.u.generate.has_logprobs, out.u.generate.logprobs);
                dsv_msg_release(&out);
        }
        in.u.generate.has_logprobs = false;
        CHECK(roundtrip(&in, &out, &w) == 0 && !out.u.generate.has_logprobs, "GENERATE without logprobs");
        dsv_msg_release(&out);
        {
                static const float lp[3] = {-0.25f, -3.4028235e38f, -1e-9f};
                static const int32_t top_ids[6] = {5, 6, 7, 8, 129279, 0};
                static const float top_lp[6] = {-0.1f, -2, -0.5f, -0.6f, -7, -8};
                memset(&in, 0, sizeof(in));
                in.type = DSV_MSG_TOKENS;
                in.u.tokens.id = 9;
                in.u.tokens.tokens = toks;
                in.u.tokens.n_tokens = 3;
                in.u.tokens.logprobs = lp;
                in.u.tokens.n_logprobs = 3;
                in.u.tokens.top_ids = top_ids;
                in.u.tokens.top_logprobs = top_lp;
                in.u.tokens.n_top = in.u.tokens.n_top_logprobs = 6;
                CHECK(roundtrip(&in, &out, &w) == 0 && out.u.tokens.n_logprobs == 3 && !memcmp(out.u.tokens.logprobs, lp, sizeof(lp)) &&
                              out.u.tokens.n_top == 6 && !memcmp(out.u.tokens.top_ids, top_ids, sizeof(top_ids)) &&
                              out.u.tokens.n_top_logprobs == 6 && !memcmp(out.u.tokens.top_logprobs, top_lp, sizeof(top_lp)),
                      "TOKENS with logprobs");
                dsv_msg_release(&out);
                in.u.tokens.n_top = in.u.tokens.n_top_logprobs = 0;
                CHECK(roundtrip(&in, &out, &w) == 0 && out.u.tokens.n_logprobs == 3 && out.u.tokens.n_top == 0,
                      "TOKENS with logprobs, no alternatives");
                dsv_msg_release(&out);
                /* mismatched lengths: refused on decode */
                static const struct {
                        uint32_t n_lp, n_ids, n_lps;
                        const char *what;
                } bad[] = {
                        {2, 0, 0, "2 logprobs for 3 tokens"},     {3, 6, 3, "6 top ids, 3 top logprobs"},
                        {3, 5, 5, "5 alternatives for 3 tokens"}, {0, 3, 3, "alternatives without logprobs"},
                };
                for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                        char why[256];
                        in.u.tokens.n_logprobs = bad[i].n_lp;
                        in.u.tokens.n_top = bad[i].n_ids;
                        in.u.tokens.n_top_logprobs = bad[i].n_lps;
                        w.len = 0;
                        w.err = 0;
                        CHECK(dsv_msg_encode(&in, &w) == 0, "encode %s", bad[i].what);
                        CHECK(dsv_msg_decode(DSV_MSG_TOKENS, w.data, w.len, &out, why, sizeof(why)) == -EPROTO &&
                                      strstr(why, "TOKENS has"),
                              "TOKENS with %s: %s", bad[i].what, why);
                }
                /* 21 alternatives per token */
                {
                        static int32_t ids21[21];
                        static float lps21[21];
                        char why[256];
                        in.u.tokens.n_tokens = 1;
                        in.u.tokens.n_logprobs = 1;
                        in.u.tokens.top_ids = ids21;
                        in.u.tokens.top_logprobs = lps21;
                        in.u.tokens.n_top = in.u.tokens.n_top_logprobs = 21;
                        w.len = 0;
                        w.err = 0;
                        CHECK(dsv_msg_encode(&in, &w) == 0, "encode 21 alternatives");
                        CHECK(dsv_msg_decode(DSV_MSG_TOKENS, w.data, w.len, &out, why, sizeof(why)) == -EPROTO,
                              "TOKENS with 21 alternatives per token: %s", why);
                }
        }

        memset(&in, 0, sizeof(in));
        in.type = DSV_MSG_TOKENS; /* an empty token list is still sent (the array is required) */
        in.u.tokens.id = 9;
        CHECK(roundtrip(&in, &out, &w) == 0 && out.u.tokens.n_tokens == 0, "empty TOKENS");
        dsv_msg_release(&out);

        memset(&in, 0, sizeof(in));
        in.type = DSV_MSG_DONE;
        in.u.done.id = 12;
        in.u.done.reason = DSV_FINISH_CONTEXT;
        in.u.done.prompt_tokens = 3;
        in.u.done.completion_tokens = 4;
        in.u.done.decode_us = 1ull << 40;
        in.u.done.preempted = 2;
        in.u.done.spec_drafted = 9;
        in.u.done.spec_accepted = 7;
        in.u.done.stop_index = 6;
        CHECK(roundtrip(&in, &out, &w) == 0, "DONE");
        CHECK(out.u.done.stop_index == 6, "DONE stop_index");
        CHECK(out.u.done.reason == DSV_FINISH_CONTEXT && out.u.done.completion_tokens == 4 && out.u.done.decode_us == 1ull << 40,
              "DONE fields");
        CHECK(out.u.done.preempted == 2 && out.u.done.spec_drafted == 9 && out.u.done.spec_accepted == 7, "DONE 1.2 fields");
        dsv_msg_release(&out);

        memset(&in, 0, sizeof(in));
        in.type = DSV_MSG_ERROR;
        in.u.error.id = 0;
        in.u.error.code = EACCES;
        in.u.error.message = "nope";
        in.u.error.message_len = 4;
        CHECK(roundtrip(&in, &out, &w) == 0, "ERROR");
        CHECK(out.u.error.code == EACCES && out.u.error.message_len == 4, "ERROR fields");
        dsv_msg_release(&out);

        memset(&in, 0, sizeof(in));
        in.type = DSV_MSG_STATS_REPLY;
        in.u.stats.id = 1000;
        in.u.stats.kv_pages_total = 1ull << 35;
        in.u.stats.decode_tok_s = 12.5f;
        strcpy(in.u.stats.backend, "cpu");
        CHECK(roundtrip(&in, &out, &w) == 0, "STATS_REPLY");
        CHECK(out.u.stats.kv_pages_total == 1ull << 35 && out.u.stats.decode_tok_s == 12.5f && !strcmp(out.u.stats.backend, "cpu"),
              "STATS_REPLY fields");
        CHECK(dsv_msg_peek_id(w.data, w.len) == 1000, "peek_id of a map16 payload: %llu",
              (unsigned long long)dsv_msg_peek_id(w.data, w.len));
        dsv_msg_release(&out);

        /* protocol 1.1: sessions */
        memset(&in, 0, sizeof(in));
        in.type = DSV_MSG_STATS_REPLY;
        in.u.stats.id = 1;
        in.u.stats.sessions = 3;
        in.u.stats.sessions_pinned = 1;
        in.u.stats.session_pages = 1ull << 33;
        in.u.stats.cached_tokens_total = 500;
        in.u.stats.sessions_evicted = 7;
        CHECK(roundtrip(&in, &out, &w) == 0, "STATS_REPLY with sessions");
        CHECK(out.u.stats.sessions == 3 && out.u.stats.sessions_pinned == 1 && out.u.stats.session_pages == 1ull << 33 &&
                      out.u.stats.cached_tokens_total == 500 && out.u.stats.sessions_evicted == 7,
              "STATS_REPLY session fields");
        dsv_msg_release(&out);
        memset(&in, 0, sizeof(in));
        in.type = DSV_MSG_SESSION_REPLY;
        in.u.session.id = 5;
        strcpy(in.u.session.name, "chat-1");
        in.u.session.flags = DSV_SESSION_PINNED | DSV_SESSION_BUSY;
        in.u.session.n_tokens = 111;
        in.u.session.n_pages = 2;
        CHECK(roundtrip(&in, &out, &w) == 0, "SESSION_REPLY");
        CHECK(!strcmp(out.u.session.name, "chat-1") && out.u.session.flags == 3 && out.u.session.n_tokens == 111 &&
                      out.u.session.n_pages == 2,
              "SESSION_REPLY fields");
        dsv_msg_release(&out);
        /* protocol 1.2: session list, prefill statistics */
        {
                struct dsv_session_row rows[3] = {
                        {.name = "a", .flags = DSV_SESSION_PINNED, .n_tokens = 5, .n_pages = 1, .idle_ms = 1ull << 40,
                         .has_rank = true, .rank = 255},
                        {.name = "chat-2", .flags = DSV_SESSION_BUSY | DSV_SESSION_PRIVATE_ROW, .n_tokens = 0},
                        {.name = "x.y:z@w+v=u-t_s", .has_rank = true, .rank = 0},
                };
                memset(&in, 0, sizeof(in));
                in.type = DSV_MSG_SESSION_LIST_REPLY;
                in.u.session_list.id = 77;
                in.u.session_list.rows = rows;
                in.u.session_list.n_rows = 3;
                in.u.session_list.n_total = 4;
                CHECK(roundtrip(&in, &out, &w) == 0, "SESSION_LIST_REPLY");
                CHECK(out.u.session_list.n_rows == 3 && out.u.session_list.n_total == 4 &&
                              !strcmp(out.u.session_list.rows[2].name, "x.y:z@w+v=u-t_s") &&
                              out.u.session_list.rows[0].idle_ms == 1ull << 40 && out.u.session_list.rows[0].n_tokens == 5 &&
                              out.u.session_list.rows[1].flags == (DSV_SESSION_BUSY | DSV_SESSION_PRIVATE_ROW),
                      "SESSION_LIST_REPLY fields");
                /* key 5, the rank: kept where it was sent (rank 0 included), left out where not */
                CHECK(out.u.session_list.rows[0].has_rank && out.u.session_list.rows[0].rank == 255 &&
                              !out.u.session_list.rows[1].has_rank && out.u.session_list.rows[1].rank == 0 &&
                              out.u.session_list.rows[2].has_rank && out.u.session_list.rows[2].rank == 0,
                      "SESSION_LIST_REPLY ranks: %d/%u %d/%u %d/%u", out.u.session_list.rows[0].has_rank,
                      out.u.session_list.rows[0].rank, out.u.session_list.rows[1].has_rank, out.u.session_list.rows[1].rank,
                      out.u.session_list.rows[2].has_rank, out.u.session_list.rows[2].rank);
                dsv_msg_release(&out);
                /* a rank the protocol cannot carry is not sent */
                rows[1].has_rank = true;
                rows[1].rank = DSV_MAX_RANKS;
                w.len = 0;
                w.err = 0;
                CHECK(dsv_msg_encode(&in, &w) == -EINVAL, "SESSION_LIST_REPLY with rank 256 encoded");
                rows[1].has_rank = false;
                memset(&in, 0, sizeof(in));
                in.type = DSV_MSG_SESSION_LIST_REPLY; /* no sessions: the array is left out */
                in.u.session_list.id = 78;
                CHECK(roundtrip(&in, &out, &w) == 0 && out.u.session_list.n_rows == 0 && !out.u.session_list.rows,
                      "empty SESSION_LIST_REPLY");
                dsv_msg_release(&out);
                memset(&in, 0, sizeof(in));
                in.type = DSV_MSG_SESSION_LIST;
                in.u.id.id = 79;
                CHECK(roundtrip(&in, &out, &w) == 0 && out.u.id.id == 79, "SESSION_LIST");
                dsv_msg_release(&out);
                memset(&in, 0, sizeof(in));
                in.type = DSV_MSG_STATS_REPLY;
                in.u.stats.id = 2;
                in.u.stats.requests_prefilling = 3;
                in.u.stats.rate_window_ms = 1000;
                in.u.stats.prefilled_tokens_total = 1ull << 36;
                in.u.stats.preemptions_total = 5;
                in.u.stats.prefix_cache_tokens_total = 1ull << 33;
                in.u.stats.spec_drafted_total = 1ull << 34;
                in.u.stats.spec_accepted_total = 1ull << 32;
                in.u.stats.kv_pages_cached = 77;
                CHECK(roundtrip(&in, &out, &w) == 0 && out.u.stats.requests_prefilling == 3 &&
                              out.u.stats.rate_window_ms == 1000 && out.u.stats.prefilled_tokens_total == 1ull << 36,
                      "STATS_REPLY 1.2 fields");
                CHECK(out.u.stats.preemptions_total == 5 && out.u.stats.prefix_cache_tokens_total == 1ull << 33 &&
                              out.u.stats.spec_drafted_total == 1ull << 34 && out.u.stats.spec_accepted_total == 1ull << 32 &&
                              out.u.stats.kv_pages_cached == 77,
                      "STATS_REPLY scheduler and speculation fields");
                CHECK(out.u.stats.device[0] == 0 && out.u.stats.device_memory_total == 0 && out.u.stats.device_kv_bytes == 0,
                      "STATS_REPLY without device fields (the CPU backend) decodes them empty");
                CHECK(out.u.stats.ranks == 0 && out.u.stats.layout[0] == 0, "STATS_REPLY without ranks decodes them empty");
                dsv_msg_release(&out);
                /* the device (keys 53..57): a description of the 127 bytes the field holds */
                memset(&in, 0, sizeof(in));
                in.type = DSV_MSG_STATS_REPLY;
                in.u.stats.id = 3;
                memset(in.u.stats.device, 'd', sizeof(in.u.stats.device) - 1);
                in.u.stats.device_memory_total = 80ull << 30;
                in.u.stats.device_memory_free = (3ull << 30) + 5;
                in.u.stats.device_weight_bytes = (70ull << 30) + 7;
                in.u.stats.device_kv_bytes = (6ull << 30) + 9;
                CHECK(roundtrip(&in, &out, &w) == 0 && strlen(out.u.stats.device) == sizeof(out.u.stats.device) - 1 &&
                              out.u.stats.device[0] == 'd' && out.u.stats.device_memory_total == 80ull << 30 &&
                              out.u.stats.device_memory_free == (3ull << 30) + 5 &&
                              out.u.stats.device_weight_bytes == (70ull << 30) + 7 &&
                              out.u.stats.device_kv_bytes == (6ull << 30) + 9,
                      "STATS_REPLY device fields");
                dsv_msg_release(&out);
                {
                        /* {0: 4, 53: 128 bytes}: one byte over the device field's cap; {0: 4, 54: "x"} */
                        uint8_t long_dev[2 + 2 + 2 + 128], str_total[] = {0x82, 0x00, 0x04, 0x36, 0xa1, 'x'};
                        size_t k = 0;
                        long_dev[k++] = 0x82;
                        long_dev[k++] = 0x00;
                        long_dev[k++] = 0x04;
                        long_dev[k++] = 0x35;
                        long_dev[k++] = 0xd9;
                        long_dev[k++] = 128;
                        memset(long_dev + k, 'd', 128);
                        k += 128;
                        CHECK(dsv_msg_decode(DSV_MSG_STATS_REPLY, long_dev, k, &out, NULL, 0) == -EPROTO,
                              "a device description of 128 bytes");
                        CHECK(dsv_msg_decode(DSV_MSG_STATS_REPLY, str_total, sizeof(str_total), &out, NULL, 0) == -EPROTO,
                              "device_memory_total as a string");
                }
                /* the ranks (keys 60, 61): absent decodes as 0 and ""; a layout over 15 bytes and
                 * ranks as a string are refused */
                memset(&in, 0, sizeof(in));
                in.type = DSV_MSG_STATS_REPLY;
                in.u.stats.id = 4;
                in.u.stats.ranks = 4;
                snprintf(in.u.stats.layout, sizeof(in.u.stats.layout), "ep,dp");
                in.u.stats.rank_weight_min = 6300000;
                in.u.stats.rank_weight_max = (1ull << 40) + 7;
                CHECK(roundtrip(&in, &out, &w) == 0 && out.u.stats.ranks == 4 && strcmp(out.u.stats.layout, "ep,dp") == 0 &&
                              out.u.stats.rank_weight_min == 6300000 && out.u.stats.rank_weight_max == (1ull << 40) + 7,
                      "STATS_REPLY ranks, layout and weight bytes per rank (keys 62, 63)");
                dsv_msg_release(&out);
                {
                        /* {0: 4, 61: 16 bytes}: one byte over the layout's cap; {0: 4, 60: "x"} */
                        uint8_t long_layout[] = {0x82, 0x00, 0x04, 0x3d, 0xb0, 'e', 'p', ',', 'd', 'p', 'e', 'p', ',',
                                                 'd', 'p', 'e', 'p', ',', 'd', 'p', 'x'};
                        uint8_t str_ranks[] = {0x82, 0x00, 0x04, 0x3c, 0xa1, 'x'};
                        CHECK(dsv_msg_decode(DSV_MSG_STATS_REPLY, long_layout, sizeof(long_layout), &out, NULL, 0) == -EPROTO,
                              "a layout of 16 bytes");
                        CHECK(dsv_msg_decode(DSV_MSG_STATS_REPLY, str_ranks, sizeof(str_ranks), &out, NULL, 0) == -EPROTO,
                              "ranks as a string");
                }
                /* data-parallel attention's pools (key 64): three numbers a rank round trip; absent
                 * decodes as none; over 768 numbers, or a negative one, is refused */
                {
                        static const int32_t pages[6] = {3, 528, 1, 0, 532, 0};
                        memset(&in, 0, sizeof(in));
                        in.type = DSV_MSG_STATS_REPLY;
                        in.u.stats.id = 5;
                        in.u.stats.ranks = 2;
                        in.u.stats.rank_pages = pages;
                        in.u.stats.n_rank_pages = 6;
                        in.u.stats.session_moves_total = 0x100000003ull;
                        CHECK(roundtrip(&in, &out, &w) == 0 && out.u.stats.n_rank_pages == 6 &&
                                      memcmp(out.u.stats.rank_pages, pages, sizeof(pages)) == 0 &&
                                      out.u.stats.session_moves_total == 0x100000003ull,
                              "STATS_REPLY each rank's KV pages (key 64) and the session moves (key 65)");
                        in.u.stats.session_moves_total = 0;
                        dsv_msg_release(&out);
                        in.u.stats.n_rank_pages = 0;
                        CHECK(roundtrip(&in, &out, &w) == 0 && out.u.stats.n_rank_pages == 0, "STATS_REPLY without key 64");
                        dsv_msg_release(&out);
                        /* {0: 5, 64: [-1]} and {0: 5, 64: an array of 769} */
                        static const uint8_t negative[] = {0x82, 0x00, 0x05, 0x40, 0x91, 0xff};
                        CHECK(dsv_msg_decode(DSV_MSG_STATS_REPLY, negative, sizeof(negative), &out, NULL, 0) == -EPROTO,
                              "a negative page count");
                        uint8_t big[4 + 3 + 769];
                        size_t k = 0;
                        big[k++] = 0x82;
                        big[k++] = 0x00;
                        big[k++] = 0x05;
                        big[k++] = 0x40;
                        big[k++] = 0xdc; /* array16 of 769 */
                        big[k++] = 0x03;
                        big[k++] = 0x01;
                        for (int i = 0; i < 769; i++)
                                big[k++] = 0x01;
                        CHECK(dsv_msg_decode(DSV_MSG_STATS_REPLY, big, k, &out, NULL, 0) == -EPROTO, "769 page counts");
                }
                /* hostile rows: a name over 64 bytes, a missing name, a wrong type, a critical key */
                {
                        static const uint8_t no_name[] = {0x82, 0x00, 0x01, 0x01, 0x91, 0x81, 0x01, 0x05};
                        static const uint8_t bad_flags[] = {0x82, 0x00, 0x01, 0x01, 0x91, 0x82, 0x00, 0xa1, 'a', 0x01, 0xa1, 'x'};
                        static const uint8_t critical[] = {0x82, 0x00, 0x01, 0x01, 0x91, 0x82, 0x00, 0xa1, 'a', 0xcc, 0x80, 0x01};
                        /* key 5 (rank): 256 (cd 01 00), a string, a negative number; 255 is fine; key 6 unknown, ignored */
                        static const uint8_t rank_256[] = {0x82, 0x00, 0x01, 0x01, 0x91, 0x82, 0x00, 0xa1, 'a', 0x05, 0xcd, 0x01, 0x00};
                        static const uint8_t rank_str[] = {0x82, 0x00, 0x01, 0x01, 0x91, 0x82, 0x00, 0xa1, 'a', 0x05, 0xa1, '1'};
                        static const uint8_t rank_neg[] = {0x82, 0x00, 0x01, 0x01, 0x91, 0x82, 0x00, 0xa1, 'a', 0x05, 0xff};
                        static const uint8_t rank_twice[] = {0x82, 0x00, 0x01, 0x01, 0x91, 0x83, 0x00, 0xa1, 'a', 0x05, 0x01, 0x05, 0x02};
                        static const uint8_t rank_255[] = {0x82, 0x00, 0x01, 0x01, 0x91, 0x83, 0x00, 0xa1, 'a', 0x05, 0xcc, 0xff, 0x06, 0x07};
                        uint8_t long_name[8 + 2 + 65];
                        size_t k = 0;
                        long_name[k++] = 0x82;
                        long_name[k++] = 0x00;
                        long_name[k++] = 0x01;
                        long_name[k++] = 0x01;
                        long_name[k++] = 0x91;
                        long_name[k++] = 0x81;
                        long_name[k++] = 0x00;
                        long_name[k++] = 0xd9;
                        long_name[k++] = 65;
                        memset(long_name + k, 'n', 65);
                        k += 65;
                        CHECK(dsv_msg_decode(DSV_MSG_SESSION_LIST_REPLY, no_name, sizeof(no_name), &out, NULL, 0) == -EPROTO,
                              "a row without a name");
                        CHECK(dsv_msg_decode(DSV_MSG_SESSION_LIST_REPLY, bad_flags, sizeof(bad_flags), &out, NULL, 0) == -EPROTO,
                              "a row with string flags");
                        CHECK(dsv_msg_decode(DSV_MSG_SESSION_LIST_REPLY, critical, sizeof(critical), &out, NULL, 0) ==
                                      -EOPNOTSUPP,
                              "a row with a critical key");
                        CHECK(dsv_msg_decode(DSV_MSG_SESSION_LIST_REPLY, long_name, k, &out, NULL, 0) == -EPROTO,
                              "a row name of 65 bytes");
                        CHECK(dsv_msg_decode(DSV_MSG_SESSION_LIST_REPLY, rank_256, sizeof(rank_256), &out, NULL, 0) == -EPROTO,
                              "a row on rank 256");
                        CHECK(dsv_msg_decode(DSV_MSG_SESSION_LIST_REPLY, rank_str, sizeof(rank_str), &out, NULL, 0) == -EPROTO,
                              "a row with a string rank");
                        CHECK(dsv_msg_decode(DSV_MSG_SESSION_LIST_REPLY, rank_neg, sizeof(rank_neg), &out, NULL, 0) == -EPROTO,
                              "a row with a negative rank");
                        CHECK(dsv_msg_decode(DSV_MSG_SESSION_LIST_REPLY, rank_twice, sizeof(rank_twice), &out, NULL, 0) ==
                                      -EPROTO,
                              "a row with its rank twice");
                        CHECK(dsv_msg_decode(DSV_MSG_SESSION_LIST_REPLY, rank_255, sizeof(rank_255), &out, NULL, 0) == 0 &&
                                      out.u.session_list.n_rows == 1 && out.u.session_list.rows[0].has_rank &&
                                      out.u.session_list.rows[0].rank == 255,
                              "a row on rank 255 (with an unknown optional key)");
                        dsv_msg_release(&out);
                }
        }
        {
                /* names: the characters a session name may have; the protocol's 64-byte cap */
                char n65[66];
                CHECK(dsv_session_name_valid("a-Z.0_9:x@y+z=w", 15), "valid name refused");
                CHECK(!dsv_session_name_valid("", 0) && !dsv_session_name_valid("a b", 3) && !dsv_session_name_valid("a/b", 3) &&
                              !dsv_session_name_valid("\xc3\xa9", 2) && !dsv_session_name_valid("a\nb", 3),
                      "invalid name accepted");
                memset(n65, 'a', 65);
                n65[65] = 0;
                CHECK(dsv_session_name_valid(n65, 64) && !dsv_session_name_valid(n65, 65), "64-byte cap");
        }

        {
                static const uint16_t others[] = {DSV_MSG_PING, DSV_MSG_PONG, DSV_MSG_CANCEL, DSV_MSG_STATS,
                                                  DSV_MSG_TOKENIZE, DSV_MSG_DETOKENIZE, DSV_MSG_TOKENIZE_REPLY,
                                                  DSV_MSG_DETOKENIZE_REPLY, DSV_MSG_SESSION_OPEN, DSV_MSG_SESSION_CLOSE,
                                                  DSV_MSG_SESSION_PIN, DSV_MSG_SESSION_REPLY};
                for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
                        memset(&in, 0, sizeof(in));
                        in.type = others[i];
                        in.u.id.id = 42 + i;
                        if (others[i] == DSV_MSG_TOKENIZE) {
                                in.u.tokenize.text = "x";
                                in.u.tokenize.text_len = 1;
                        } else if (others[i] == DSV_MSG_DETOKENIZE_REPLY) {
                                in.u.detok.text = "y";
                                in.u.detok.text_len = 1;
                        } else if (others[i] >= DSV_MSG_SESSION_OPEN && others[i] <= DSV_MSG_SESSION_PIN) {
                                strcpy(in.u.session.name, "chat");
                        }
                        CHECK(roundtrip(&in, &out, &w) == 0, "%s", dsv_msg_type_name(others[i]));
                        CHECK(out.u.id.id == 42 + i && dsv_msg_peek_id(w.data, w.len) == 42 + i, "%s id",
                              dsv_msg_type_name(others[i]));
                        dsv_msg_release(&out);
                }
        }
        dsv_wbuf_free(&w);
}

struct bad {
        const char *name;
        uint16_t type;
        const uint8_t *p;
        size_t n;
        int want;
};

static void test_hostile(void) {
        static const uint8_t huge_array[] = {0x82, 0x00, 0x01, 0x02, 0xdd, 0xff, 0xff, 0xff, 0xff};
        static const uint8_t huge_map[] = {0xdf, 0xff, 0xff, 0xff, 0xff, 0x00};
        static const uint8_t huge_str[] = {0x82, 0x00, 0x01, 0x01, 0xdb, 0x7f, 0xff, 0xff, 0xff, 'a'};
        static const uint8_t deep[] = {0x81, 0x00, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x01};
        static const uint8_t truncated[] = {0x82, 0x00, 0x01, 0x01};
        static const uint8_t trailing[] = {0x81, 0x00, 0x01, 0xc0};
        static const uint8_t not_map[] = {0x93, 0x01, 0x02, 0x03};
        static const uint8_t wrong_type[] = {0x82, 0x00, 0x01, 0x04, 0xa3, 'a', 'b', 'c'}; /* max_tokens: "abc" */
        static const uint8_t dup[] = {0x82, 0x00, 0x01, 0x00, 0x02};
        static const uint8_t missing[] = {0x81, 0x04, 0x01}; /* no id */
        static const uint8_t neg_token[] = {0x82, 0x00, 0x01, 0x02, 0x91, 0xff}; /* tokens: [-1] */
        static const uint8_t big_token[] = {0x82, 0x00, 0x01, 0x02, 0x91, 0xcf, 0, 0, 0, 1, 0, 0, 0, 0};
        static const uint8_t nul_name[] = {0x82, 0x00, 0x01, 0x02, 0xa3, 'a', 0, 'c'};      /* HELLO name */
        static const uint8_t crit[] = {0x82, 0x00, 0x01, 0xcc, 0xc8, 0x01};                /* key 200 */
        static const uint8_t opt[] = {0x82, 0x00, 0x01, 0x63, 0x01};                       /* key 99 */
        static const uint8_t ext[] = {0x82, 0x00, 0x01, 0x04, 0xd4, 0x01, 0x02};
        static const uint8_t nan_temp[] = {0x82, 0x00, 0x01, 0x05, 0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0};
        static const uint8_t neg_key[] = {0x82, 0x00, 0x01, 0xff, 0x01};
        static const uint8_t u32_over[] = {0x82, 0x00, 0x01, 0x04, 0xcf, 0, 0, 0, 1, 0, 0, 0, 0};
        static const uint8_t chat_bad[] = {0x82, 0x00, 0x01, 0x03, 0x91, 0x81, 0x00, 0xa1, 'u'}; /* no content */
        static const uint8_t empty[] = {0};
        static const uint8_t stop_many[] = {0x82, 0x00, 0x01, 0x0a, 0xdc, 0x00, 0x41, /* 65 stop tokens */
                                            1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
                                            1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
                                            1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
        /* key 14 (stop strings): not an array, a non-string entry, an empty one, 65 bytes, 9 of them */
        static const uint8_t stops_not_array[] = {0x82, 0x00, 0x01, 0x0e, 0xa1, 'x'};
        static const uint8_t stops_int[] = {0x82, 0x00, 0x01, 0x0e, 0x92, 0xa1, 'x', 0x05};
        static const uint8_t stops_empty[] = {0x82, 0x00, 0x01, 0x0e, 0x91, 0xa0};
        static const uint8_t stops_many[] = {0x82, 0x00, 0x01, 0x0e, 0x99, 0xa1, 'a', 0xa1, 'a', 0xa1, 'a',
                                             0xa1, 'a', 0xa1, 'a', 0xa1, 'a', 0xa1, 'a', 0xa1, 'a', 0xa1, 'a'};
        uint8_t stops_long[7 + 65] = {0x82, 0x00, 0x01, 0x0e, 0x91, 0xd9, 65};
        /* key 18 (logit bias): not a map, a string value, a negative id, a repeated id, NaN, 301 entries */
        static const uint8_t bias_array[] = {0x82, 0x00, 0x01, 0x12, 0x91, 0x01};
        static const uint8_t bias_str[] = {0x82, 0x00, 0x01, 0x12, 0x81, 0x05, 0xa1, 'x'};
        static const uint8_t bias_neg[] = {0x82, 0x00, 0x01, 0x12, 0x81, 0xff, 0x01};
        static const uint8_t bias_dup[] = {0x82, 0x00, 0x01, 0x12, 0x82, 0x05, 0x01, 0x05, 0x02};
        static const uint8_t bias_nan[] = {0x82, 0x00, 0x01, 0x12, 0x81, 0x05, 0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0};
        static const uint8_t pen_str[] = {0x82, 0x00, 0x01, 0x10, 0xa1, 'x'}; /* frequency_penalty: "x" */
        uint8_t bias_many[7 + 301 * 4] = {0x82, 0x00, 0x01, 0x12, 0xde, 0x01, 0x2d}; /* map16 of 301 */
        for (int i = 0; i < 301; i++) { /* {cd hi lo: 0x01} */
                bias_many[7 + 4 * i] = 0xcd;
                bias_many[8 + 4 * i] = (uint8_t)(i >> 8);
                bias_many[9 + 4 * i] = (uint8_t)i;
                bias_many[10 + 4 * i] = 0x01;
        }
        /* GENERATE key 19 not an unsigned integer; TOKENS key 3 with a string, NaN, a string
         * for the array */
        static const uint8_t lp_str[] = {0x82, 0x00, 0x01, 0x13, 0xa1, 'x'};
        static const uint8_t lp_neg[] = {0x82, 0x00, 0x01, 0x13, 0xff};
        static const uint8_t tok_lp_str[] = {0x83, 0x00, 0x01, 0x01, 0x91, 0x05, 0x03, 0x91, 0xa1, 'x'};
        static const uint8_t tok_lp_nan[] = {0x83, 0x00, 0x01, 0x01, 0x91, 0x05, 0x03, 0x91, 0xca, 0x7f, 0xc0, 0, 0};
        static const uint8_t tok_lp_int[] = {0x83, 0x00, 0x01, 0x01, 0x91, 0x05, 0x03, 0x91, 0x01};
        static const uint8_t tok_lp_map[] = {0x83, 0x00, 0x01, 0x01, 0x91, 0x05, 0x03, 0x80};
        const struct bad cases[] = {
                {"logprobs a string", DSV_MSG_GENERATE, lp_str, sizeof(lp_str), -EPROTO},
                {"logprobs negative", DSV_MSG_GENERATE, lp_neg, sizeof(lp_neg), -EPROTO},
                {"TOKENS logprobs with a string", DSV_MSG_TOKENS, tok_lp_str, sizeof(tok_lp_str), -EPROTO},
                {"TOKENS logprobs NaN", DSV_MSG_TOKENS, tok_lp_nan, sizeof(tok_lp_nan), -EPROTO},
                {"TOKENS logprobs an integer", DSV_MSG_TOKENS, tok_lp_int, sizeof(tok_lp_int), -EPROTO},
                {"TOKENS logprobs a map", DSV_MSG_TOKENS, tok_lp_map, sizeof(tok_lp_map), -EPROTO},
                {"logit_bias not a map", DSV_MSG_GENERATE, bias_array, sizeof(bias_array), -EPROTO},
                {"logit_bias with a string", DSV_MSG_GENERATE, bias_str, sizeof(bias_str), -EPROTO},
                {"logit_bias with a negative id", DSV_MSG_GENERATE, bias_neg, sizeof(bias_neg), -EPROTO},
                {"logit_bias naming a token twice", DSV_MSG_GENERATE, bias_dup, sizeof(bias_dup), -EPROTO},
                {"logit_bias NaN", DSV_MSG_GENERATE, bias_nan, sizeof(bias_nan), -EPROTO},
                {"301 logit_bias entries", DSV_MSG_GENERATE, bias_many, sizeof(bias_many), -EPROTO},
                {"frequency_penalty a string", DSV_MSG_GENERATE, pen_str, sizeof(pen_str), -EPROTO},
                {"stop_strings not an array", DSV_MSG_GENERATE, stops_not_array, sizeof(stops_not_array), -EPROTO},
                {"stop_strings with an integer", DSV_MSG_GENERATE, stops_int, sizeof(stops_int), -EPROTO},
                {"an empty stop string", DSV_MSG_GENERATE, stops_empty, sizeof(stops_empty), -EPROTO},
                {"9 stop strings", DSV_MSG_GENERATE, stops_many, sizeof(stops_many), -EPROTO},
                {"a stop string of 65 bytes", DSV_MSG_GENERATE, stops_long, 7 + 65, -EPROTO},
                {"array count 2^32-1", DSV_MSG_GENERATE, huge_array, sizeof(huge_array), -EBADMSG},
                {"map count 2^32-1", DSV_MSG_GENERATE, huge_map, sizeof(huge_map), -EBADMSG},
                {"string length 2^31", DSV_MSG_GENERATE, huge_str, sizeof(huge_str), -EBADMSG},
                {"nesting deeper than the cap", DSV_MSG_GENERATE, deep, sizeof(deep), -EBADMSG},
                {"truncated", DSV_MSG_GENERATE, truncated, sizeof(truncated), -EBADMSG},
                {"trailing bytes", DSV_MSG_PING, trailing, sizeof(trailing), -EBADMSG},
                {"array instead of map", DSV_MSG_PING, not_map, sizeof(not_map), -EPROTO},
                {"string for an integer", DSV_MSG_GENERATE, wrong_type, sizeof(wrong_type), -EPROTO},
                {"duplicate key", DSV_MSG_PING, dup, sizeof(dup), -EPROTO},
                {"missing required id", DSV_MSG_GENERATE, missing, sizeof(missing), -EPROTO},
                {"negative token", DSV_MSG_GENERATE, neg_token, sizeof(neg_token), -EPROTO},
                {"token over int32", DSV_MSG_GENERATE, big_token, sizeof(big_token), -EPROTO},
                {"NUL inside a name", DSV_MSG_HELLO, nul_name, sizeof(nul_name), -EPROTO},
                {"unknown critical field", DSV_MSG_PING, crit, sizeof(crit), -EOPNOTSUPP},
                {"ext type", DSV_MSG_GENERATE, ext, sizeof(ext), -EBADMSG},
                {"NaN temperature", DSV_MSG_GENERATE, nan_temp, sizeof(nan_temp), -EPROTO},
                {"negative key", DSV_MSG_PING, neg_key, sizeof(neg_key), -EPROTO},
                {"u32 field over 2^32", DSV_MSG_GENERATE, u32_over, sizeof(u32_over), -EPROTO},
                {"chat message without content", DSV_MSG_GENERATE, chat_bad, sizeof(chat_bad), -EPROTO},
                {"empty payload", DSV_MSG_PING, empty, 0, -EBADMSG},
                {"65 stop tokens", DSV_MSG_GENERATE, stop_many, sizeof(stop_many), -EPROTO},
                {"unknown message type", 999, opt, sizeof(opt), -ENOSYS},
        };
        struct dsv_msg m;
        char why[256];

        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                int r = dsv_msg_decode(cases[i].type, cases[i].p, cases[i].n, &m, why, sizeof(why));
                CHECK(r == cases[i].want, "%s: got %d (%s), want %d", cases[i].name, r, why, cases[i].want);
                CHECK(r == 0 || why[0], "%s: no reason given", cases[i].name);
                if (r == 0)
                        dsv_msg_release(&m);
        }
        /* an unknown optional field is ignored */
        CHECK(dsv_msg_decode(DSV_MSG_PING, opt, sizeof(opt), &m, why, sizeof(why)) == 0 && m.u.ping.id == 1,
              "unknown optional key refused: %s", why);
        dsv_msg_release(&m);
        /* a fixed buffer that is too small reports -ENOBUFS instead of overflowing */
        {
                uint8_t small[8];
                struct dsv_wbuf w;
                struct dsv_msg in = {.type = DSV_MSG_ERROR};
                in.u.error.code = 1;
                in.u.error.message = "a long message that does not fit";
                in.u.error.message_len = (uint32_t)strlen(in.u.error.message);
                dsv_wbuf_fixed(&w, small, sizeof(small));
                CHECK(dsv_msg_encode(&in, &w) == -ENOBUFS && w.len <= sizeof(small), "fixed buffer overflow");
        }
        /* the encoder refuses stop strings the decoder would refuse */
        {
                static const struct dsv_str many[DSV_MAX_STOP_STRINGS + 1] = {{"a", 1}, {"a", 1}, {"a", 1}, {"a", 1}, {"a", 1},
                                                                             {"a", 1}, {"a", 1}, {"a", 1}, {"a", 1}};
                static const struct dsv_str empty_one[1] = {{"", 0}};
                struct dsv_wbuf w = {0};
                struct dsv_msg in = {.type = DSV_MSG_GENERATE};
                in.u.generate.id = 1;
                in.u.generate.stop_strings = many;
                in.u.generate.n_stop_strings = DSV_MAX_STOP_STRINGS + 1;
                CHECK(dsv_msg_encode(&in, &w) == -EINVAL, "encoded 9 stop strings");
                w.len = 0;
                in.u.generate.stop_strings = empty_one;
                in.u.generate.n_stop_strings = 1;
                CHECK(dsv_msg_encode(&in, &w) == -EINVAL, "encoded an empty stop string");
                dsv_wbuf_free(&w);
        }
}

/* The token-id list spelling every program accepts. */
static void test_idlist(void) {
        static const struct {
                const char *s;
                int n; /* -1: refused */
                int32_t last;
        } cases[] = {
                {"1,2,3", 3, 3},     {"1 2 3", 3, 3},   {"1, 2, 3", 3, 3}, {" 7 ,8\t9 ", 3, 9}, {"", 0, 0},
                {"   ", 0, 0},       {"2147483647", 1, 2147483647},       {"1,,2", -1, 0},   {"1,", -1, 0},
                {",1", -1, 0},       {"-1", -1, 0},     {"+1", -1, 0},     {"1x", -1, 0},     {"2147483648", -1, 0},
                {"1;2", -1, 0},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                int32_t *v = NULL;
                size_t n = 0;
                int r = dsv_parse_id_list(cases[i].s, &v, &n);
                if (cases[i].n < 0)
                        CHECK(r == -EINVAL, "'%s' accepted (%zu ids)", cases[i].s, n);
                else
                        CHECK(r == 0 && (int)n == cases[i].n && (n == 0 || v[n - 1] == cases[i].last),
                              "'%s': r=%d, %zu ids", cases[i].s, r, n);
                if (r == 0)
                        free(v);
        }
}

int main(void) {
        test_idlist();
        test_roundtrips();
        test_hostile();
        return test_result("test-ipc-proto");
}
