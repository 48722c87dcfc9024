/* A client built against the dsv32.h of libdsv32.so.0 as it first shipped (version 0.1.0,
 * kept verbatim in tests/abi/dsv32-v0.h) runs against today's library: it calls the
 * unsized entry points (dsv32_stats, dsv32_poll_events, ...) with the 0.1.0 struct sizes,
 * and the library must fill exactly those bytes. Each struct sits between guard bytes that
 * must stay untouched, and an array of events must come back at the old stride. */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <string.h>

#include "dsv32-v0.h" /* NOT client/dsv32.h */
#include "tests/ipc/harness.h"

#define GUARD 64
#define N_GEN 12

static struct h_daemon d;

/* a struct of the old size inside guard bytes */
#define GUARDED(T, name)                                                                                               \
        struct {                                                                                                       \
                unsigned char before[GUARD];                                                                          \
                T v;                                                                                                   \
                unsigned char after[GUARD];                                                                           \
        } name;                                                                                                        \
        memset(&name, 0xa5, sizeof(name))

static bool guards_intact(const unsigned char *before, const unsigned char *after) {
        for (int i = 0; i < GUARD; i++)
                if (before[i] != 0xa5 || after[i] != 0xa5)
                        return false;
        return true;
}

int main(void) {
        static const int32_t prompt[] = {0, 11, 12, 13};
        struct dsv32_connect_opts o = {.struct_size = sizeof(o)};
        struct dsv32_request q = {.struct_size = sizeof(q), .tokens = prompt, .n_tokens = 4, .max_tokens = N_GEN,
                                  .flags = DSV32_REQ_IGNORE_EOS};
        dsv32_client *c = NULL;
        uint64_t id = 0;
        int r, tokens = 0, done = 0;

        h_init("abi-v0", 60);
        h_daemon_start(&d, NULL, NULL);
        o.socket_path = d.socket;
        r = dsv32_connect(&o, &c);
        REQUIRE(r == 0, "connect: %s", dsv32_last_error(NULL));

        {
                GUARDED(struct dsv32_info, g);
                r = dsv32_get_info(c, &g.v);
                CHECK(r == 0 && g.v.protocol_major == 1 && g.v.vocab_size > 0 && g.v.max_tokens_limit > 0,
                      "get_info: %d, protocol %u, vocab %d", r, g.v.protocol_major, g.v.vocab_size);
                CHECK(guards_intact(g.before, g.after), "dsv32_get_info wrote outside the 0.1.0 struct");
        }
        {
                GUARDED(struct dsv32_stats, g);
                r = dsv32_stats(c, &g.v);
                CHECK(r == 0 && g.v.state == DSV32_STATE_READY && g.v.daemon_pid == (uint32_t)d.pid && g.v.clients >= 1,
                      "stats: %d, state %d, pid %u (want %d)", r, (int)g.v.state, g.v.daemon_pid, (int)d.pid);
                CHECK(g.v.kv_pages_total > 0 && g.v.n_layers > 0, "stats fields: %llu pages, %d layers",
                      (unsigned long long)g.v.kv_pages_total, g.v.n_layers);
                CHECK(guards_intact(g.before, g.after), "dsv32_stats wrote outside the 0.1.0 struct");
        }
        {
                GUARDED(struct dsv32_result, g);
                r = dsv32_generate(c, &q, NULL, NULL, &g.v);
                CHECK(r == 0 && g.v.finish == DSV32_FINISH_LENGTH && g.v.usage.completion_tokens == N_GEN &&
                              g.v.usage.prompt_tokens == 4,
                      "generate: %d, finish %d, %u+%u tokens", r, (int)g.v.finish, g.v.usage.prompt_tokens,
                      g.v.usage.completion_tokens);
                CHECK(guards_intact(g.before, g.after), "dsv32_generate wrote outside the 0.1.0 result");
        }
        {
                /* the array stride is the old sizeof(struct dsv32_event) */
                typedef struct dsv32_event events4[4];
                GUARDED(events4, g);
                r = dsv32_submit(c, &q, &id);
                REQUIRE(r == 0, "submit: %s", dsv32_last_error(c));
                while (!done) {
                        r = dsv32_wait(c, 10000);
                        REQUIRE(r == 1, "wait: %d", r);
                        while ((r = dsv32_poll_events(c, g.v, 4)) > 0) {
                                for (int i = 0; i < r; i++) {
                                        CHECK(g.v[i].id == id, "event %d: id %llu, want %llu", i,
                                              (unsigned long long)g.v[i].id, (unsigned long long)id);
                                        if (g.v[i].type == DSV32_EVENT_TOKENS) {
                                                tokens += (int)g.v[i].n_tokens;
                                                CHECK(g.v[i].n_tokens == 0 || g.v[i].tokens != NULL, "tokens pointer");
                                        } else if (g.v[i].type == DSV32_EVENT_DONE) {
                                                CHECK(g.v[i].finish == DSV32_FINISH_LENGTH &&
                                                              g.v[i].usage.completion_tokens == N_GEN,
                                                      "DONE: finish %d, %u tokens", (int)g.v[i].finish,
                                                      g.v[i].usage.completion_tokens);
                                                done = 1;
                                        } else {
                                                CHECK(0, "event type %d", (int)g.v[i].type);
                                                done = 1;
                                        }
                                }
                                CHECK(guards_intact(g.before, g.after), "dsv32_poll_events wrote outside 4 old events");
                        }
                        REQUIRE(r == 0, "poll_events: %d", r);
                }
                CHECK(tokens == N_GEN, "%d tokens through poll_events, want %d", tokens, N_GEN);
        }
        {
                GUARDED(struct dsv32_session_info, g);
                r = dsv32_session_open(c, "abi-v0", 0, &g.v);
                CHECK(r == 0 && (g.v.flags & DSV32_SESSION_CREATED), "session_open: %d, flags 0x%x", r, g.v.flags);
                CHECK(guards_intact(g.before, g.after), "dsv32_session_open wrote outside the 0.1.0 struct");
                r = dsv32_session_pin(c, "abi-v0", 1, &g.v);
                CHECK(r == 0 && (g.v.flags & DSV32_SESSION_PINNED), "session_pin: %d, flags 0x%x", r, g.v.flags);
                r = dsv32_session_close(c, "abi-v0", &g.v);
                CHECK(r == 0, "session_close: %d", r);
                CHECK(guards_intact(g.before, g.after), "dsv32_session_* wrote outside the 0.1.0 struct");
        }
        {
                GUARDED(struct dsv32_wait_stats, g);
                r = dsv32_get_wait_stats(c, &g.v);
                CHECK(r == 0 && g.v.waits > 0, "get_wait_stats: %d, %llu waits", r, (unsigned long long)g.v.waits);
                CHECK(guards_intact(g.before, g.after), "dsv32_get_wait_stats wrote outside the 0.1.0 struct");
        }
        dsv32_disconnect(c);
        return test_result("test-abi-v0");
}
