/* The prefix cache through the daemon (issue: content-addressed KV pages): a request that
 * shares a 500-token prefix with an earlier one of the same uid (another session, or none)
 * prefills only the rest (DONE's cached tokens: the 7 full pages, 448 tokens; the same prompt
 * again: 8 pages, 512) and generates
 * exactly what a daemon without the cache generates; another uid does not hit unless
 * prefix-cache-share is on; with no request or session left, no page is in use (cached
 * pages are not "used"). Greedy and seeded sampling. Then pressure: more requests at once than
 * the pool holds are preempted and resumed, not refused, with the outputs they have alone; and
 * a user other than root cannot raise a request's priority. */
#include "config.h"

#include <errno.h>
#include <grp.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>

#include <sys/stat.h>

#include "client/dsv32.h"
#include "tests/ipc/harness.h"

#define NOBODY 65534

static struct h_daemon dcache, dcold, dshare, dsmall;

/* 0 on success; the reply's tokens in out, its cached prompt tokens in *cached */
static int gen(dsv32_client *c, const struct h_toks *p, const char *session, bool seeded, struct h_toks *out, uint32_t *cached) {
        struct dsv32_request q = {.struct_size = sizeof(q), .tokens = p->t, .n_tokens = (size_t)p->n, .max_tokens = 16,
                                  .flags = DSV32_REQ_IGNORE_EOS, .session = session};
        struct dsv32_result res;
        int r;
        if (seeded) {
                q.temperature = 0.8f;
                q.top_p = 0.95f;
                q.seed = 4242;
                q.flags |= DSV32_REQ_SEED;
        }
        out->n = 0;
        r = dsv32_generate(c, &q, h_collect, out, &res);
        if (cached)
                *cached = r == 0 ? res.usage.cached_tokens : 9999;
        return r;
}

static void prompt(struct h_toks *p, int n, uint64_t seed) {
        p->t[0] = 0;
        for (int i = 1; i < n; i++) {
                seed = seed * 6364136223846793005ull + 1442695040888963407ull;
                p->t[i] = 2 + (int32_t)((seed >> 33) % 4000);
        }
        p->n = n;
}

/* as uid nobody: generates p on d and exits 0 when it reused exactly want_cached tokens */
static void other_uid(const struct h_daemon *d, const struct h_toks *p, uint32_t want_cached, const char *what) {
        pid_t pid = fork();
        int st;
        REQUIRE(pid >= 0, "fork");
        if (pid == 0) {
                struct h_toks o;
                uint32_t cached;
                if (setgroups(0, NULL) < 0 || setresgid(NOBODY, NOBODY, NOBODY) < 0 || setresuid(NOBODY, NOBODY, NOBODY) < 0)
                        _exit(2);
                dsv32_client *x = h_connect(d);
                if (!x || gen(x, p, NULL, false, &o, &cached) < 0) {
                        fprintf(stderr, "uid %d: %s\n", NOBODY, dsv32_last_error(x));
                        _exit(1);
                }
                if (cached != want_cached) {
                        fprintf(stderr, "uid %d %s: %u tokens reused, want %u\n", NOBODY, what, cached, want_cached);
                        _exit(1);
                }
                _exit(0);
        }
        CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0, "another uid: %s", what);
}

/* Pressure: N_PRESS requests at once on a pool of 16 pages (1 MiB; each needs 6) through one
 * client: the daemon preempts instead of refusing (DONE and STATS count it), every request
 * completes with the tokens it generates alone on a roomy daemon, and no page stays in use. */
#define N_PRESS 6
static void test_pressure(dsv32_client *roomy) {
        dsv32_client *c = h_connect(&dsmall);
        struct h_toks p[N_PRESS], alone[N_PRESS], got[N_PRESS];
        uint64_t ids[N_PRESS];
        uint32_t preempted = 0;
        int done = 0;
        struct dsv32_stats st;
        REQUIRE(c, "connect");
        for (int i = 0; i < N_PRESS; i++) {
                prompt(&p[i], 310, 77 + (uint64_t)i); /* 5 pages, a 6th while it decodes */
                got[i].n = 0;
                CHECK(gen(roomy, &p[i], NULL, i % 2, &alone[i], NULL) == 0, "alone %d", i);
        }
        for (int i = 0; i < N_PRESS; i++) {
                struct dsv32_request q = {.struct_size = sizeof(q), .tokens = p[i].t, .n_tokens = (size_t)p[i].n,
                                          .max_tokens = 16, .flags = DSV32_REQ_IGNORE_EOS | (i % 2 ? DSV32_REQ_SEED : 0),
                                          .temperature = i % 2 ? 0.8f : 0.0f, .top_p = i % 2 ? 0.95f : 1.0f,
                                          .seed = i % 2 ? 4242 : 0};
                REQUIRE(dsv32_submit(c, &q, &ids[i]) == 0, "submit %d: %s", i, dsv32_last_error(c));
        }
        while (done < N_PRESS) {
                struct dsv32_event ev[16];
                int n;
                REQUIRE(dsv32_wait(c, 60000) == 1, "no event for 60 s (%d of %d done)", done, N_PRESS);
                n = dsv32_poll_events(c, ev, 16);
                REQUIRE(n >= 0, "poll: %s", dsv32_last_error(c));
                for (int k = 0; k < n; k++) {
                        int i = 0;
                        while (i < N_PRESS && ids[i] != ev[k].id)
                                i++;
                        REQUIRE(i < N_PRESS, "an event for an unknown id");
                        if (ev[k].type == DSV32_EVENT_TOKENS)
                                h_collect(&got[i], ev[k].tokens, ev[k].n_tokens, NULL, 0);
                        else if (ev[k].type == DSV32_EVENT_DONE) {
                                preempted += ev[k].preempted;
                                done++;
                        } else {
                                CHECK(0, "request %d failed under pressure: %s", i, ev[k].message);
                                done++;
                        }
                }
        }
        for (int i = 0; i < N_PRESS; i++)
                CHECK(h_toks_equal(&got[i], &alone[i]), "request %d (%s) under pressure differs from alone", i,
                      i % 2 ? "seeded" : "greedy");
        REQUIRE(dsv32_stats(c, &st) == 0, "stats");
        CHECK(preempted > 0 && st.preemptions_total >= preempted, "no preemption: DONE %u, STATS %llu", preempted,
              (unsigned long long)st.preemptions_total);
        CHECK(st.kv_pages_used == 0, "%llu KV pages still in use", (unsigned long long)st.kv_pages_used);
        fprintf(stderr, "pressure: %d requests on 16 pages, %u preemptions, outputs as alone\n", N_PRESS, preempted);
        dsv32_disconnect(c);
}

/* As uid nobody: a request above priority 0 is refused (EPERM), one below runs. */
static void nobody_priority(const struct h_daemon *d) {
        pid_t pid = fork();
        int st;
        REQUIRE(pid >= 0, "fork");
        if (pid == 0) {
                int32_t t[] = {0, 5, 6};
                struct dsv32_request q = {.struct_size = sizeof(q), .tokens = t, .n_tokens = 3, .max_tokens = 2, .priority = 5};
                if (setgroups(0, NULL) < 0 || setresgid(NOBODY, NOBODY, NOBODY) < 0 || setresuid(NOBODY, NOBODY, NOBODY) < 0)
                        _exit(2);
                dsv32_client *x = h_connect(d);
                if (!x || dsv32_generate(x, &q, NULL, NULL, NULL) != -EPERM || !strstr(dsv32_last_error(x), "only root"))
                        _exit(1);
                q.priority = -5;
                _exit(dsv32_generate(x, &q, NULL, NULL, NULL) == 0 ? 0 : 3);
        }
        CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0,
              "uid nobody: priority 5 not refused with EPERM, or -5 refused (exit %d)", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
}

int main(void) {
        static const char *const args_cache[] = {"--socket-mode", "0666", "--allow-users", "root,65534", NULL};
        static const char *const args_cold[] = {"--prefix-cache", "no", NULL};
        static const char *const args_small[] = {"--prefix-cache", "no", "--kv-cache-mb", "1", NULL};
        static const char *const args_share[] = {"--socket-mode", "0666", "--allow-users", "root,65534", "--prefix-cache-share",
                                                 "yes", NULL};
        struct h_toks base, p1, p2, o1, o2, cold1, cold2;
        struct dsv32_stats s0, s1;
        uint32_t cached;
        dsv32_client *c, *k, *sh;

        h_init("prefix", 600);
        chmod(h_tmpdir(), 0711);
        h_daemon_start(&dcache, args_cache, NULL);
        h_daemon_start(&dcold, args_cold, NULL);
        h_daemon_start(&dshare, args_share, NULL);
        h_daemon_start(&dsmall, args_small, NULL);
        c = h_connect(&dcache);
        k = h_connect(&dcold);
        sh = h_connect(&dshare);
        REQUIRE(c && k && sh, "connect");
        REQUIRE(dsv32_stats(c, &s0) == 0, "stats");

        for (int seeded = 0; seeded < 2; seeded++) {
                char s1n[16], s2n[16];
                /* two prompts sharing 500 tokens */
                prompt(&base, 500, 1 + (uint64_t)seeded);
                p1 = base;
                p2 = base;
                for (int i = 0; i < 40; i++) {
                        p1.t[p1.n++] = 100 + i;
                        p2.t[p2.n++] = 900 + 3 * i;
                }
                snprintf(s1n, sizeof(s1n), "a%d", seeded);
                snprintf(s2n, sizeof(s2n), "b%d", seeded);
                CHECK(gen(c, &p1, s1n, seeded, &o1, &cached) == 0 && cached == 0, "first: cached %u",
                      cached);
                CHECK(gen(c, &p2, s2n, seeded, &o2, &cached) == 0 && cached == 448, "another session, same prefix: cached %u",
                      cached);
                CHECK(gen(k, &p1, NULL, seeded, &cold1, NULL) == 0 && gen(k, &p2, NULL, seeded, &cold2, NULL) == 0, "cold");
                CHECK(h_toks_equal(&o1, &cold1) && h_toks_equal(&o2, &cold2) && o2.n == 16,
                      "%s: a prefix-cache hit must generate what a daemon without the cache generates",
                      seeded ? "seeded" : "greedy");
                /* no session at all: hits too, now also the page the second prompt's prefill
                 * completed (tokens 448..511) */
                CHECK(gen(c, &p2, NULL, seeded, &o2, &cached) == 0 && cached == 512 && h_toks_equal(&o2, &cold2), "no session: cached %u",
                      cached);
                CHECK(dsv32_session_close(c, s1n, NULL) == 0 && dsv32_session_close(c, s2n, NULL) == 0, "close");
        }
        if (geteuid() == 0) {
                other_uid(&dcache, &p2, 0, "without sharing");
                CHECK(gen(sh, &p1, NULL, false, &o1, &cached) == 0 && cached == 0, "share daemon, first");
                other_uid(&dshare, &p2, 448, "with prefix-cache-share");
                nobody_priority(&dcache);
        } else {
                fprintf(stderr, "SKIP part: another uid (needs root to run a client as nobody)\n");
        }
        test_pressure(k);
        REQUIRE(dsv32_stats(c, &s1) == 0, "stats");
        CHECK(s1.kv_pages_used == s0.kv_pages_used, "KV pages in use: %llu, %llu before (nothing runs, no session)",
              (unsigned long long)s1.kv_pages_used, (unsigned long long)s0.kv_pages_used);
        CHECK(s1.cached_tokens_total - s0.cached_tokens_total == 2 * (448 + 512), "STATS: %llu cached tokens, want 1920",
              (unsigned long long)(s1.cached_tokens_total - s0.cached_tokens_total));
        fprintf(stderr, "prefix cache: 448 of 540 prompt tokens reused across sessions and requests, outputs as cold\n");
        dsv32_disconnect(c);
        dsv32_disconnect(k);
        dsv32_disconnect(sh);
        CHECK(h_daemon_stop(&dcache, 10) == 0 && h_daemon_stop(&dcold, 10) == 0 && h_daemon_stop(&dshare, 10) == 0 &&
                      h_daemon_stop(&dsmall, 10) == 0,
              "dsv32d did not exit 0 on SIGTERM");
        return 0;
}
