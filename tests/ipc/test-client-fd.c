/* The asynchronous API as an event loop uses it: dsv32_fd() must become readable when a
 * request's events arrive, so that a loop may sleep on it without a timeout. Each wait
 * below is an infinite poll() or epoll_wait() (the test's alarm is the only timeout): a
 * descriptor that never wakes hangs the test and fails it. Also: events that a
 * synchronous call moved into the library's private queue keep the descriptor readable;
 * an idle client's descriptor is not readable (no busy loop); the daemon's hangup wakes
 * it; dsv32_cancel of an id that is not in flight is -ENOENT; a request that leaves
 * max_tokens at its default gets the daemon's lower max-tokens-limit instead of E2BIG; and
 * the *_sized entry points (dsv32.h's ABI scheme) zero what a newer header's larger struct
 * has beyond what this library knows (stats, and session rows at a newer stride), and
 * refuse sizes below the first release's. */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "client/dsv32.h"
#include "tests/ipc/harness.h"

#define LIMIT 120 /* the daemon's max-tokens-limit: below the library's default of 256 */

static struct h_daemon d;

static dsv32_client *connect_or_die(void) {
        struct dsv32_connect_opts o = {.struct_size = sizeof(o), .socket_path = d.socket};
        dsv32_client *c = NULL;
        int r = dsv32_connect(&o, &c);
        REQUIRE(r == 0, "connect: %s: %s", strerror(-r), dsv32_last_error(NULL));
        return c;
}

static uint64_t submit(dsv32_client *c, uint32_t max_tokens) {
        static const int32_t prompt[] = {0, 17, 42, 99, 7};
        struct dsv32_request q = {.struct_size = sizeof(q), .tokens = prompt, .n_tokens = 5, .max_tokens = max_tokens,
                                  .flags = DSV32_REQ_IGNORE_EOS};
        uint64_t id = 0;
        int r = dsv32_submit(c, &q, &id);
        REQUIRE(r == 0, "submit: %s: %s", strerror(-r), dsv32_last_error(c));
        return id;
}

enum waiter { WAIT_POLL, WAIT_EPOLL };

/* Runs request id to its end, sleeping on dsv32_fd() without a timeout between drains.
 * Returns the number of tokens; *finish gets the finish reason. */
static int drive(dsv32_client *c, uint64_t id, enum waiter how, enum dsv32_finish *finish, unsigned *wakeups) {
        int ep = -1, tokens = 0;
        bool done = false;

        if (how == WAIT_EPOLL) {
                struct epoll_event ev = {.events = EPOLLIN};
                ep = epoll_create1(EPOLL_CLOEXEC);
                REQUIRE(ep >= 0 && epoll_ctl(ep, EPOLL_CTL_ADD, dsv32_fd(c), &ev) == 0, "epoll setup: %s", strerror(errno));
        }
        *wakeups = 0;
        while (!done) {
                struct dsv32_event evs[8];
                int n;
                if (how == WAIT_POLL) {
                        struct pollfd p = {.fd = dsv32_fd(c), .events = POLLIN};
                        n = poll(&p, 1, -1);
                        REQUIRE(n == 1, "poll: %d (%s)", n, strerror(errno));
                } else {
                        struct epoll_event ev;
                        n = epoll_wait(ep, &ev, 1, -1);
                        REQUIRE(n == 1, "epoll_wait: %d (%s)", n, strerror(errno));
                }
                (*wakeups)++;
                while ((n = dsv32_poll_events(c, evs, 8)) > 0)
                        for (int i = 0; i < n; i++) {
                                CHECK(evs[i].id == id, "event for id %llu, want %llu", (unsigned long long)evs[i].id,
                                      (unsigned long long)id);
                                if (evs[i].type == DSV32_EVENT_TOKENS)
                                        tokens += (int)evs[i].n_tokens;
                                else if (evs[i].type == DSV32_EVENT_DONE) {
                                        *finish = evs[i].finish;
                                        done = true;
                                } else {
                                        REQUIRE(0, "error event: %s", evs[i].message);
                                }
                        }
                REQUIRE(n == 0, "poll_events: %s", strerror(-n));
        }
        if (ep >= 0)
                close(ep);
        return tokens;
}

static bool readable_now(dsv32_client *c) {
        struct pollfd p = {.fd = dsv32_fd(c), .events = POLLIN};
        return poll(&p, 1, 0) == 1;
}

static void test_infinite_waits(void) {
        dsv32_client *c = connect_or_die();
        enum dsv32_finish fin = DSV32_FINISH_STOP;
        unsigned wakeups;
        int n;

        n = drive(c, submit(c, 100), WAIT_POLL, &fin, &wakeups);
        CHECK(n == 100 && fin == DSV32_FINISH_LENGTH, "poll(-1): %d tokens, finish %s; want 100, length", n,
              dsv32_finish_name(fin));
        fprintf(stderr, "poll(-1): 100 tokens in %u wakeups\n", wakeups);
        CHECK(!readable_now(c), "the descriptor of an idle client is readable (a loop on it would spin)");

        n = drive(c, submit(c, 100), WAIT_EPOLL, &fin, &wakeups);
        CHECK(n == 100 && fin == DSV32_FINISH_LENGTH, "epoll_wait(-1): %d tokens, finish %s; want 100, length", n,
              dsv32_finish_name(fin));
        fprintf(stderr, "epoll_wait(-1): 100 tokens in %u wakeups\n", wakeups);
        CHECK(!readable_now(c), "the descriptor of an idle client is readable after epoll use");
        dsv32_disconnect(c);
}

/* A synchronous call meets the async request's records and queues them privately: the
 * descriptor must say so, though no doorbell will come for them. */
static void test_private_queue(void) {
        dsv32_client *c = connect_or_die();
        enum dsv32_finish fin = DSV32_FINISH_STOP;
        struct dsv32_event ev[64];
        uint64_t id = submit(c, 40);
        unsigned wakeups;
        int n, got = 0;

        usleep(300000); /* its tokens reach the completion ring */
        for (int i = 0; i < 5; i++)
                REQUIRE(dsv32_ping(c, NULL) == 0, "ping: %s", dsv32_last_error(c));
        CHECK(readable_now(c), "records queued by a synchronous call do not make dsv32_fd() readable");
        /* take only a few, then the descriptor must stay readable for the rest */
        n = dsv32_poll_events(c, ev, 1);
        CHECK(n == 1, "poll_events(max 1): %d", n);
        if (n == 1 && ev[0].type == DSV32_EVENT_TOKENS)
                got += (int)ev[0].n_tokens;
        if (n == 1 && ev[0].type != DSV32_EVENT_DONE) {
                CHECK(readable_now(c), "dsv32_fd() is not readable while events are left");
                got += drive(c, id, WAIT_POLL, &fin, &wakeups);
                CHECK(got == 40 && fin == DSV32_FINISH_LENGTH, "%d tokens, finish %s; want 40, length", got,
                      dsv32_finish_name(fin));
        }
        dsv32_disconnect(c);
}

static void test_cancel_unknown(void) {
        dsv32_client *c = connect_or_die();
        enum dsv32_finish fin = DSV32_FINISH_STOP;
        unsigned wakeups;
        uint64_t id;
        int r;

        r = dsv32_cancel(c, 12345);
        CHECK(r == -ENOENT, "cancel of an id never submitted: %d, want -ENOENT", r);
        id = submit(c, 8);
        drive(c, id, WAIT_POLL, &fin, &wakeups);
        r = dsv32_cancel(c, id);
        CHECK(r == -ENOENT, "cancel of a request whose DONE was handed out: %d, want -ENOENT", r);
        CHECK(strstr(dsv32_last_error(c), "no request") != NULL, "message: %s", dsv32_last_error(c));
        id = submit(c, LIMIT);
        r = dsv32_cancel(c, id);
        CHECK(r == 0, "cancel of a request in flight: %d (%s)", r, dsv32_last_error(c));
        drive(c, id, WAIT_POLL, &fin, &wakeups);
        CHECK(fin == DSV32_FINISH_CANCELLED || fin == DSV32_FINISH_LENGTH, "cancelled request ended %s",
              dsv32_finish_name(fin));
        dsv32_disconnect(c);
}

static void test_default_max_tokens(void) {
        dsv32_client *c = connect_or_die();
        static const int32_t prompt[] = {0, 5, 6};
        struct dsv32_request q = {.struct_size = sizeof(q), .tokens = prompt, .n_tokens = 3, .flags = DSV32_REQ_IGNORE_EOS};
        struct dsv32_result res;
        int r = dsv32_generate(c, &q, NULL, NULL, &res);
        CHECK(r == 0 && res.usage.completion_tokens == LIMIT && res.finish == DSV32_FINISH_LENGTH,
              "default max_tokens under max-tokens-limit %d: %d (%s), %u tokens", LIMIT, r, r < 0 ? dsv32_last_error(c) : "",
              r == 0 ? res.usage.completion_tokens : 0);
        dsv32_disconnect(c);
}

static void test_sized(void) {
        dsv32_client *c = connect_or_die();
        struct {
                struct dsv32_stats st;
                unsigned char newer[48]; /* fields of a future header */
        } big;
        struct dsv32_event evs[2];
        int r;

        memset(&big, 0xa5, sizeof(big));
        r = dsv32_stats_sized(c, &big.st, sizeof(big));
        CHECK(r == 0 && big.st.state == DSV32_STATE_READY, "stats_sized(larger): %d", r);
        for (size_t i = 0; i < sizeof(big.newer); i++)
                if (big.newer[i] != 0) {
                        CHECK(0, "byte %zu beyond the library's struct dsv32_stats is 0x%02x, want 0", i, big.newer[i]);
                        break;
                }
        r = dsv32_stats_sized(c, &big.st, 16);
        CHECK(r == -EINVAL, "stats_sized(16 bytes): %d, want -EINVAL", r);
        r = dsv32_poll_events_sized(c, evs, 2, 8);
        CHECK(r == -EINVAL, "poll_events_sized(stride 8): %d, want -EINVAL", r);

        /* session rows at the stride of a newer header (rows of 88 + 40 bytes), and of a
         * smaller struct than the one 1.2 shipped */
        {
                struct {
                        struct dsv32_session_entry e;
                        unsigned char newer[40];
                } rows[3];
                size_t total = 0;
                bool zero = true;
                REQUIRE(dsv32_session_open(c, "sized-a", 0, NULL) == 0 && dsv32_session_open(c, "sized-b", 0, NULL) == 0,
                        "session open: %s", dsv32_last_error(c));
                memset(rows, 0xa5, sizeof(rows));
                r = dsv32_session_list_sized(c, &rows[0].e, 3, &total, sizeof(rows[0]));
                CHECK(r == 2 && total == 2 && !strcmp(rows[0].e.name, "sized-a") && !strcmp(rows[1].e.name, "sized-b"),
                      "session_list_sized(stride %zu): %d rows of %zu ('%.65s', '%.65s')", sizeof(rows[0]), r, total,
                      rows[0].e.name, rows[1].e.name);
                for (int k = 0; k < 2; k++)
                        for (size_t i = 0; i < sizeof(rows[k].newer); i++)
                                zero &= rows[k].newer[i] == 0;
                CHECK(zero && rows[2].newer[0] == 0xa5 && (unsigned char)rows[2].e.name[0] == 0xa5,
                      "session_list_sized: the bytes past the library's struct must be 0, the third row untouched");
                /* the size 1.2 shipped stays accepted when the struct grows */
                r = dsv32_session_list_sized(c, &rows[0].e, 1, NULL, offsetof(struct dsv32_session_entry, idle_ms) + 8);
                CHECK(r == 1 && !strcmp(rows[0].e.name, "sized-a"), "session_list_sized(the 1.2 size): %d", r);
                r = dsv32_session_list_sized(c, &rows[0].e, 3, NULL, offsetof(struct dsv32_session_entry, idle_ms));
                CHECK(r == -EINVAL, "session_list_sized(without idle_ms): %d, want -EINVAL", r);
                dsv32_session_close(c, "sized-a", NULL);
                dsv32_session_close(c, "sized-b", NULL);
        }
        dsv32_disconnect(c);
}

static void test_hangup(void) {
        dsv32_client *c = connect_or_die();
        struct dsv32_event ev[4];
        struct pollfd p;
        int n = 0;

        submit(c, LIMIT);
        h_daemon_kill(&d);
        /* everything the daemon wrote is handed out, then the broken connection */
        for (int i = 0; i < 10000; i++) {
                p = (struct pollfd){.fd = dsv32_fd(c), .events = POLLIN};
                REQUIRE(poll(&p, 1, -1) == 1, "poll after the daemon died: %s", strerror(errno));
                n = dsv32_poll_events(c, ev, 4);
                if (n < 0)
                        break;
        }
        CHECK(n < 0, "poll_events after the daemon died: %d, want an error", n);
        dsv32_disconnect(c);
}

int main(void) {
        static const char *const args[] = {"--max-tokens-limit", "120", NULL};
        h_init("client-fd", 120);
        h_daemon_start(&d, args, NULL);
        test_infinite_waits();
        test_private_queue();
        test_cancel_unknown();
        test_default_max_tokens();
        test_sized();
        test_hangup();
        return test_result("test-client-fd");
}
