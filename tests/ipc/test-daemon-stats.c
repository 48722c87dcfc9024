/* What an operator reads about a running dsv32d: `dsv32 status` rates fall to 0 once it is
 * idle (they froze at the last busy step); a long prefill counts as prefilling, not
 * waiting; one log line per request (finished, failed in the engine, refused by the
 * event loop) with uid, pid, id, token counts and times; the shutdown line says when the
 * stop timeout cut requests off instead of "All requests finished"; and the default KV
 * cache (kv-cache-mb = auto) holds two sequences of the model's longest context, or says why
 * not. */
#include "config.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "client/dsv32.h"
#include "tests/ipc/harness.h"

static struct h_daemon d;

static dsv32_client *connect_or_die(void) {
        struct dsv32_connect_opts o = {.struct_size = sizeof(o), .socket_path = d.socket, .client_name = "stats-test"};
        dsv32_client *c = NULL;
        REQUIRE(dsv32_connect(&o, &c) == 0, "connect: %s", dsv32_last_error(NULL));
        return c;
}

static struct dsv32_stats stats(dsv32_client *c) {
        struct dsv32_stats s;
        REQUIRE(dsv32_stats(c, &s) == 0, "stats: %s", dsv32_last_error(c));
        return s;
}

static void test_kv_auto(dsv32_client *c) {
        struct dsv32_stats s = stats(c);
        uint64_t tokens = s.kv_pages_total * s.kv_page_tokens;
        CHECK(h_file_contains(d.log, "KV cache sized automatically: "), "the log does not say how the KV cache was sized");
        CHECK(tokens >= 2ull * (uint64_t)s.max_context || h_file_contains(d.log, "a share of it"),
              "kv-cache-mb = auto gave %llu tokens for a context of %d, and the log gives no reason",
              (unsigned long long)tokens, s.max_context);
        fprintf(stderr, "kv auto: %llu pages of %llu tokens (context %d)\n", (unsigned long long)s.kv_pages_total,
                (unsigned long long)s.kv_page_tokens, s.max_context);
}

static void test_rates(dsv32_client *c) {
        static const int32_t prompt[] = {0, 9, 8, 7, 6};
        struct dsv32_request q = {.struct_size = sizeof(q), .tokens = prompt, .n_tokens = 5, .max_tokens = 60,
                                  .flags = DSV32_REQ_IGNORE_EOS};
        struct dsv32_result res;
        struct dsv32_stats s;

        REQUIRE(dsv32_generate(c, &q, NULL, NULL, &res) == 0, "generate: %s", dsv32_last_error(c));
        usleep(150000); /* a tick samples the counters */
        s = stats(c);
        CHECK(s.decode_tokens_per_s > 0 && s.rate_window_ms > 0, "right after 60 tokens: %.1f tok/s decode over %u ms",
              s.decode_tokens_per_s, s.rate_window_ms);
        usleep(1600000);
        s = stats(c);
        CHECK(s.decode_tokens_per_s == 0 && s.prefill_tokens_per_s == 0 && s.rate_window_ms >= 1000,
              "1.6 s idle: %.1f tok/s decode, %.1f prefill over %u ms (want 0 over >= 1000 ms)", s.decode_tokens_per_s,
              s.prefill_tokens_per_s, s.rate_window_ms);
        CHECK(s.prefilled_tokens_total >= 5, "prefilled_tokens_total %llu", (unsigned long long)s.prefilled_tokens_total);
        fprintf(stderr, "rates: 0 after 1.6 s idle (window %u ms)\n", s.rate_window_ms);
}

static void test_prefilling(dsv32_client *c) {
        static int32_t prompt[1500];
        struct dsv32_request q = {.struct_size = sizeof(q), .tokens = prompt, .n_tokens = 1500, .max_tokens = 2,
                                  .flags = DSV32_REQ_IGNORE_EOS};
        struct dsv32_event ev[8];
        uint64_t id;
        int seen_prefilling = 0, seen_waiting = 0, done = 0, n;

        for (int i = 0; i < 1500; i++)
                prompt[i] = 2 + (i * 37) % 4000;
        REQUIRE(dsv32_submit(c, &q, &id) == 0, "submit: %s", dsv32_last_error(c));
        for (int k = 0; !done && k < 20000; k++) {
                struct dsv32_stats s = stats(c);
                /* before admission it waits; once its prefill has begun it must not */
                seen_waiting += seen_prefilling > 0 && s.requests_waiting > 0;
                seen_prefilling += s.requests_prefilling == 1;
                while ((n = dsv32_poll_events(c, ev, 8)) > 0)
                        for (int i = 0; i < n; i++)
                                done |= ev[i].type != DSV32_EVENT_TOKENS;
                REQUIRE(n == 0, "poll_events: %d", n);
                usleep(2000);
        }
        CHECK(done, "the 1500-token prompt did not finish");
        CHECK(seen_prefilling > 0 && seen_waiting == 0, "a long prefill: seen as prefilling %d times, as waiting %d after that",
              seen_prefilling, seen_waiting);
        fprintf(stderr, "prefilling: a 1500-token prefill at batch-tokens 8 was reported as prefilling %d times\n",
                seen_prefilling);
}

static void test_request_log(dsv32_client *c) {
        static const int32_t good[] = {0, 1, 2}, bad[] = {0, 999999};
        struct dsv32_request q = {.struct_size = sizeof(q), .tokens = good, .n_tokens = 3, .max_tokens = 7,
                                  .flags = DSV32_REQ_IGNORE_EOS};
        char want[256];
        int r;

        REQUIRE(dsv32_generate(c, &q, NULL, NULL, NULL) == 0, "generate: %s", dsv32_last_error(c));
        q.max_tokens = 100000; /* over max-tokens-limit: refused by the event loop */
        r = dsv32_generate(c, &q, NULL, NULL, NULL);
        CHECK(r == -E2BIG, "max_tokens over the limit: %d", r);
        q.max_tokens = 4;
        q.tokens = bad; /* outside the vocabulary: fails in the engine */
        q.n_tokens = 2;
        r = dsv32_generate(c, &q, NULL, NULL, NULL);
        CHECK(r == -EINVAL, "a token outside the vocabulary: %d", r);
        usleep(100000);
        snprintf(want, sizeof(want), "of pid %d uid %u (stats-test): finished (length); 3 prompt tokens (0 reused), 7 generated",
                 (int)getpid(), (unsigned)getuid());
        CHECK(h_file_contains(d.log, want), "no log line '%s'", want);
        snprintf(want, sizeof(want), "of pid %d uid %u (stats-test): refused, E2BIG: max_tokens 100000 exceeds", (int)getpid(),
                 (unsigned)getuid());
        CHECK(h_file_contains(d.log, want), "no log line '%s'", want);
        snprintf(want, sizeof(want), "of pid %d uid %u (stats-test): failed, EINVAL: token 999999", (int)getpid(),
                 (unsigned)getuid());
        CHECK(h_file_contains(d.log, want), "no log line '%s'", want);
        CHECK(h_file_contains(d.log, "queued ") && h_file_contains(d.log, "prefill ") && h_file_contains(d.log, "decode "),
              "durations missing from the request log lines");
        fprintf(stderr, "request log: finished, refused and failed requests each have their line\n");
}

static void test_shutdown_cut(dsv32_client *c) {
        static const int32_t prompt[] = {0, 4, 4};
        struct dsv32_request q = {.struct_size = sizeof(q), .tokens = prompt, .n_tokens = 3, .max_tokens = 5000,
                                  .flags = DSV32_REQ_IGNORE_EOS};
        uint64_t id;
        REQUIRE(dsv32_submit(c, &q, &id) == 0, "submit: %s", dsv32_last_error(c));
        REQUIRE(dsv32_wait(c, 10000) == 1, "no tokens");
        CHECK(h_daemon_stop(&d, 20) == 0, "dsv32d did not exit 0 on SIGTERM");
        CHECK(h_file_contains(d.log, "The stop timeout (0 s, stop-timeout) ended 1 request before they finished"),
              "the shutdown log does not say that the stop timeout cut a request off");
        CHECK(!h_file_contains(d.log, "All requests finished"), "the shutdown log claims all requests finished");
}

int main(void) {
        static const char *const args[] = {"--batch-tokens", "8", "--max-tokens-limit", "6000", "--stop-timeout", "0", NULL};
        dsv32_client *c;
        h_init("stats", 180);
        h_daemon_start(&d, args, NULL);
        c = connect_or_die();
        test_kv_auto(c);
        test_rates(c);
        test_prefilling(c);
        test_request_log(c);
        test_shutdown_cut(c);
        dsv32_disconnect(c);
        return test_result("test-daemon-stats");
}
