/* KV-cache sessions end to end on the tiny model (real daemons, sockets, shared memory):
 *   - reuse: a second and third turn prefill only what follows the previous prompt (DONE's
 *     cached_tokens and STATS), and generate exactly the tokens of the same request without
 *     a session, greedy and seeded; DSV32_REQ_REUSE_OUTPUT also reuses the generated part;
 *   - a divergent prompt reuses the common prefix only; a prompt that is a prefix of the
 *     history, or the same prompt again, still gets its last tokens prefilled;
 *   - SESSION_OPEN / CLOSE (pages back to the baseline) / PIN (the per-uid quota);
 *   - one request per session (EBUSY), CLOSE of a busy session, and another uid that cannot
 *     see a session (as nobody, when the test runs as root);
 *   - hostile SESSION_* and GENERATE records: bad names, flags, huge counts;
 *   - clients SIGKILLed mid-request on a session: it stays usable, nothing leaks;
 *   - LRU eviction in a small pool (an evicted session works from scratch), pinned sessions
 *     are never evicted, and pinned pages that would block a request forever give ENOSPC;
 *   - the idle timeout and the max-sessions cap;
 *   - `dsv32 chat` on a session against `dsv32 chat --no-session`, and `dsv32 session`. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client/dsv32.h"
#include "ipc/proto.h"
#include "ipc/ring.h"
#include "tests/ipc/harness.h"
#include "tests/ipc/raw.h"

#define NOBODY 65534

static struct h_daemon da, db, dc;

/* ------------------------------------------------------------------ helpers */

static dsv32_client *connect_to(const struct h_daemon *d) {
        struct dsv32_connect_opts o = {.struct_size = sizeof(o), .socket_path = d->socket};
        dsv32_client *c = NULL;
        int r = dsv32_connect(&o, &c);
        CHECK(r == 0, "connect %s: %s", d->socket, dsv32_last_error(NULL));
        return c;
}

struct toks {
        int32_t t[4096];
        int n;
};

static int collect_cb(void *ud, const int32_t *t, size_t n, const char *text, size_t len) {
        struct toks *c = ud;
        for (size_t i = 0; i < n && c->n < 4096; i++)
                c->t[c->n++] = t[i];
        return 0;
}

struct gen_opts {
        uint32_t max_tokens, flags;
        float temperature, top_p;
        uint64_t seed;
};

static const struct gen_opts GREEDY = {.max_tokens = 12, .flags = DSV32_REQ_IGNORE_EOS};

/* One request; returns the library's result code. */
static int gen(dsv32_client *c, const struct toks *prompt, const struct gen_opts *o, const char *session,
               struct toks *out, struct dsv32_result *res) {
        struct dsv32_request q = {.struct_size = sizeof(q),
                                  .tokens = prompt->t,
                                  .n_tokens = (size_t)prompt->n,
                                  .max_tokens = o->max_tokens,
                                  .temperature = o->temperature,
                                  .top_p = o->top_p,
                                  .seed = o->seed,
                                  .flags = o->flags,
                                  .session = session};
        struct dsv32_result r0;
        out->n = 0;
        return dsv32_generate(c, &q, collect_cb, out, res ? res : &r0);
}

static void gen_ok(dsv32_client *c, const struct toks *prompt, const struct gen_opts *o, const char *session,
                   struct toks *out, struct dsv32_result *res) {
        int r = gen(c, prompt, o, session, out, res);
        CHECK(r == 0, "generate (session %s, %d prompt tokens): %s", session ? session : "none", prompt->n,
              dsv32_last_error(c));
}

static uint64_t rng_state = 12345;
static int32_t rnd_tok(void) {
        rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
        return 2 + (int32_t)((rng_state >> 33) % 4000);
}

static void rand_prompt(struct toks *p, int n) {
        p->t[0] = 0; /* BOS */
        for (int i = 1; i < n; i++)
                p->t[i] = rnd_tok();
        p->n = n;
}

static void append(struct toks *p, const struct toks *a, int n_rand) {
        for (int i = 0; a && i < a->n; i++)
                p->t[p->n++] = a->t[i];
        for (int i = 0; i < n_rand; i++)
                p->t[p->n++] = rnd_tok();
}

static bool same(const struct toks *a, const struct toks *b) {
        return a->n == b->n && !memcmp(a->t, b->t, (size_t)a->n * sizeof(int32_t));
}

static struct dsv32_stats stats(dsv32_client *c) {
        struct dsv32_stats s;
        int r = dsv32_stats(c, &s);
        CHECK(r == 0, "stats: %s", dsv32_last_error(c));
        return s;
}

/* Waits until no request runs or waits (a killed client's request ends at the next step). */
static struct dsv32_stats wait_quiet(dsv32_client *c) {
        uint64_t t0 = h_now_ns();
        for (;;) {
                struct dsv32_stats s = stats(c);
                if (s.requests_running == 0 && s.requests_waiting == 0)
                        return s;
                CHECK(h_now_ns() - t0 < 10000000000ull, "requests still running after 10 s: %u running %u waiting",
                      s.requests_running, s.requests_waiting);
                usleep(5000);
        }
}

/* ------------------------------------------------------------------ reuse */

static void test_reuse(void) {
        dsv32_client *c = connect_to(&da);
        struct dsv32_stats s0 = stats(c), s1;
        uint64_t expect_cached = 0, expect_prompt = 0;
        int exact_all = 0, reuse_same = 0;
        /* an emulated backend (DSV32_TEST_BACKEND) is ~50x slower: one conversation of six */
        const int CONVS = h_backend() ? 1 : 6;

        for (int i = 0; i < CONVS; i++) {
                struct toks p1, p2, p3, o1, o1n, o2, o2n, o3, o3n;
                struct dsv32_result res;
                struct gen_opts seeded = {.max_tokens = 10,
                                          .flags = DSV32_REQ_IGNORE_EOS | DSV32_REQ_SEED,
                                          .temperature = 0.9f,
                                          .top_p = 0.95f,
                                          .seed = 1000 + (uint64_t)i};
                char name[32];
                snprintf(name, sizeof(name), "conv-%d", i);

                rand_prompt(&p1, 30 + 7 * i);
                gen_ok(c, &p1, &GREEDY, name, &o1, &res);
                CHECK(res.usage.cached_tokens == 0 && res.usage.prompt_tokens == (uint32_t)p1.n,
                      "turn 1: cached %u prompt %u", res.usage.cached_tokens, res.usage.prompt_tokens);
                gen_ok(c, &p1, &GREEDY, NULL, &o1n, NULL);
                CHECK(same(&o1, &o1n) && o1.n == 12, "turn 1 differs from the same request without a session");

                /* turn 2: the previous prompt, its output, and new tokens */
                p2 = p1;
                append(&p2, &o1, 9);
                gen_ok(c, &p2, &GREEDY, name, &o2, &res);
                CHECK(res.usage.cached_tokens == (uint32_t)p1.n && res.usage.prompt_tokens == (uint32_t)p2.n,
                      "turn 2 of %s: %u of %u prompt tokens reused, want %d (the previous prompt)", name,
                      res.usage.cached_tokens, res.usage.prompt_tokens, p1.n);
                gen_ok(c, &p2, &GREEDY, NULL, &o2n, NULL);
                CHECK(same(&o2, &o2n), "turn 2 of %s (greedy): the session's tokens differ from a run without it",
                      name);

                /* turn 3: seeded sampling */
                p3 = p2;
                append(&p3, &o2, 5);
                gen_ok(c, &p3, &seeded, name, &o3, &res);
                CHECK(res.usage.cached_tokens == (uint32_t)p2.n, "turn 3 of %s: %u reused, want %d", name,
                      res.usage.cached_tokens, p2.n);
                gen_ok(c, &p3, &seeded, NULL, &o3n, NULL);
                CHECK(same(&o3, &o3n) && o3.n == 10,
                      "turn 3 of %s (seeded): the session's tokens differ from a run without it", name);
                exact_all += same(&o2, &o2n) && same(&o3, &o3n);
                expect_cached += (uint64_t)p1.n + (uint64_t)p2.n;
                expect_prompt += 2ull * (uint64_t)(p1.n + p2.n + p3.n);

                /* the same conversation reusing the generated tokens' cache too */
                {
                        struct gen_opts ro = GREEDY;
                        struct toks q2, r1, r2, r2n;
                        snprintf(name, sizeof(name), "reuse-out-%d", i);
                        ro.flags |= DSV32_REQ_REUSE_OUTPUT;
                        gen_ok(c, &p1, &ro, name, &r1, &res);
                        q2 = p1;
                        append(&q2, &r1, 9);
                        gen_ok(c, &q2, &ro, name, &r2, &res);
                        /* 12 generated, 11 fed back: the 12th was sampled but never ran through the model */
                        CHECK(res.usage.cached_tokens == (uint32_t)(p1.n + 11),
                              "REUSE_OUTPUT turn 2: %u reused, want %d (prompt + 11 fed-back tokens)",
                              res.usage.cached_tokens, p1.n + 11);
                        gen_ok(c, &q2, &GREEDY, NULL, &r2n, NULL);
                        reuse_same += same(&r2, &r2n); /* not required: see DSV32_REQ_REUSE_OUTPUT */
                        expect_cached += (uint64_t)p1.n + 11;
                        expect_prompt += (uint64_t)(p1.n + 2 * q2.n);
                        CHECK(dsv32_session_close(c, name, NULL) == 0, "close %s: %s", name, dsv32_last_error(c));
                }
        }
        s1 = stats(c);
        CHECK(s1.cached_tokens_total - s0.cached_tokens_total == expect_cached &&
                      s1.prompt_tokens_total - s0.prompt_tokens_total == expect_prompt,
              "STATS: %llu tokens reused of %llu prompt tokens, want %llu of %llu",
              (unsigned long long)(s1.cached_tokens_total - s0.cached_tokens_total),
              (unsigned long long)(s1.prompt_tokens_total - s0.prompt_tokens_total), (unsigned long long)expect_cached,
              (unsigned long long)expect_prompt);
        CHECK(s1.sessions == s0.sessions + CONVS, "STATS: %u sessions, want %u", s1.sessions, s0.sessions + CONVS);
        fprintf(stderr,
                "reuse: %d conversations x 3 turns, each later turn prefilled only what follows the previous prompt, "
                "outputs identical to no-session runs in %d/%d (greedy and seeded); with REUSE_OUTPUT %d/%d "
                "identical\n",
                CONVS, exact_all, CONVS, reuse_same, CONVS);
        for (int i = 0; i < CONVS; i++) {
                char name[32];
                snprintf(name, sizeof(name), "conv-%d", i);
                CHECK(dsv32_session_close(c, name, NULL) == 0, "close %s: %s", name, dsv32_last_error(c));
        }
        dsv32_disconnect(c);
}

static void test_divergent(void) {
        dsv32_client *c = connect_to(&da);
        struct toks p, o, q, oq, oqn, r, orr, orn;
        struct dsv32_result res;

        rand_prompt(&p, 40);
        gen_ok(c, &p, &GREEDY, "div", &o, &res);
        /* shares 25 tokens, then goes elsewhere */
        q.n = 25;
        memcpy(q.t, p.t, 25 * sizeof(int32_t));
        append(&q, NULL, 15);
        gen_ok(c, &q, &GREEDY, "div", &oq, &res);
        CHECK(res.usage.cached_tokens == 25, "divergent prompt: %u reused, want 25", res.usage.cached_tokens);
        gen_ok(c, &q, &GREEDY, NULL, &oqn, NULL);
        CHECK(same(&oq, &oqn), "divergent prompt: the session's tokens differ from a run without it");
        /* a prefix of the history: its last two tokens are prefilled again (one alone would take
         * the decode path), the rest is reused */
        r.n = 30;
        memcpy(r.t, q.t, 30 * sizeof(int32_t));
        gen_ok(c, &r, &GREEDY, "div", &orr, &res);
        CHECK(res.usage.cached_tokens == 28, "prefix of the history: %u reused, want 28", res.usage.cached_tokens);
        gen_ok(c, &r, &GREEDY, NULL, &orn, NULL);
        CHECK(same(&orr, &orn), "prefix of the history: the session's tokens differ from a run without it");
        /* the same prompt again */
        gen_ok(c, &r, &GREEDY, "div", &orr, &res);
        CHECK(res.usage.cached_tokens == 28 && same(&orr, &orn), "the same prompt again: %u reused, want 28",
              res.usage.cached_tokens);
        CHECK(dsv32_session_close(c, "div", NULL) == 0, "close: %s", dsv32_last_error(c));
        fprintf(stderr, "divergent: common prefix reused (25 of 40), prefix-of-history and repeated prompts too, "
                        "outputs exact\n");
        dsv32_disconnect(c);
}

/* ------------------------------------------------------------------ open, close, pin */

static void test_open_close_pin(void) {
        dsv32_client *c = connect_to(&da);
        struct dsv32_stats base = wait_quiet(c), s;
        struct dsv32_session_info si;
        struct toks p, o;
        struct dsv32_result res;
        char longname[41];
        int r;

        CHECK(dsv32_session_open(c, "cp", 0, &si) == 0 && (si.flags & DSV32_SESSION_CREATED) && si.n_tokens == 0,
              "open: %s flags %x", dsv32_last_error(c), si.flags);
        CHECK(dsv32_session_open(c, "cp", 0, &si) == 0 && !(si.flags & DSV32_SESSION_CREATED), "open again: flags %x",
              si.flags);
        r = dsv32_session_open(c, "cp", DSV32_SESSION_EXCL, &si);
        CHECK(r == -EEXIST, "exclusive open of an existing session: %d %s", r, dsv32_last_error(c));

        rand_prompt(&p, 100);
        gen_ok(c, &p, &GREEDY, "cp", &o, &res);
        s = stats(c);
        CHECK(s.sessions == base.sessions + 1 && s.session_pages == base.session_pages + 2 &&
                      s.kv_pages_used == base.kv_pages_used + 2,
              "after a request: %u sessions, %llu session pages, %llu pages used (baseline %u, %llu, %llu)", s.sessions,
              (unsigned long long)s.session_pages, (unsigned long long)s.kv_pages_used, base.sessions,
              (unsigned long long)base.session_pages, (unsigned long long)base.kv_pages_used);
        CHECK(dsv32_session_open(c, "cp", 0, &si) == 0 && si.n_tokens == 111 && si.n_pages == 2,
              "the session holds %u tokens in %u pages, want 111 (100 prompt + 11 fed back) in 2", si.n_tokens,
              si.n_pages);
        CHECK(dsv32_session_close(c, "cp", &si) == 0 && si.n_tokens == 111, "close: %s (%u tokens)",
              dsv32_last_error(c), si.n_tokens);
        s = stats(c);
        CHECK(s.kv_pages_used == base.kv_pages_used && s.sessions == base.sessions &&
                      s.session_pages == base.session_pages,
              "after CLOSE: %llu pages used, %u sessions; baseline %llu, %u", (unsigned long long)s.kv_pages_used,
              s.sessions, (unsigned long long)base.kv_pages_used, base.sessions);
        r = dsv32_session_close(c, "cp", NULL);
        CHECK(r == -ENOENT, "closing twice: %d", r);
        r = dsv32_session_pin(c, "nosuch", 1, NULL);
        CHECK(r == -ENOENT, "pinning an unknown session: %d", r);

        /* the pin quota of this daemon is 2 */
        for (int i = 0; i < 3; i++) {
                char n[8];
                snprintf(n, sizeof(n), "p%d", i);
                CHECK(dsv32_session_open(c, n, 0, NULL) == 0, "open %s", n);
        }
        CHECK(dsv32_session_pin(c, "p0", 1, &si) == 0 && (si.flags & DSV32_SESSION_PINNED), "pin p0: %s",
              dsv32_last_error(c));
        CHECK(dsv32_session_pin(c, "p1", 1, &si) == 0 && (si.flags & DSV32_SESSION_PINNED), "pin p1: %s",
              dsv32_last_error(c));
        CHECK(dsv32_session_pin(c, "p1", 1, NULL) == 0, "pinning a pinned session again");
        r = dsv32_session_pin(c, "p2", 1, NULL);
        CHECK(r == -EDQUOT && strstr(dsv32_last_error(c), "session-pin-quota"), "third pin with quota 2: %d %s", r,
              dsv32_last_error(c));
        CHECK(stats(c).sessions_pinned == base.sessions_pinned + 2, "STATS pinned");
        CHECK(dsv32_session_pin(c, "p0", 0, &si) == 0 && !(si.flags & DSV32_SESSION_PINNED), "unpin p0");
        CHECK(dsv32_session_pin(c, "p2", 1, NULL) == 0, "pin p2 after unpinning p0: %s", dsv32_last_error(c));
        for (int i = 0; i < 3; i++) {
                char n[8];
                snprintf(n, sizeof(n), "p%d", i);
                CHECK(dsv32_session_close(c, n, NULL) == 0, "close %s", n); /* pinned or not */
        }
        CHECK(stats(c).sessions_pinned == base.sessions_pinned, "pins left after closing");

        /* names: checked by the library, and the daemon's own cap (session-name-max 32 here) */
        r = dsv32_session_open(c, "has space", 0, NULL);
        CHECK(r == -EINVAL, "a name with a space: %d", r);
        r = dsv32_session_open(c, "", 0, NULL);
        CHECK(r == -EINVAL, "an empty name: %d", r);
        memset(longname, 'x', 40);
        longname[40] = 0;
        r = dsv32_session_open(c, longname, 0, NULL);
        CHECK(r == -EINVAL && strstr(dsv32_last_error(c), "32"), "a 40-byte name with session-name-max 32: %d %s", r,
              dsv32_last_error(c));
        r = gen(c, &p, &GREEDY, "a/b", &o, NULL);
        CHECK(r == -EINVAL, "generate with session a/b: %d", r);
        fprintf(stderr, "open/close/pin: CLOSE returns the pages (STATS back to baseline), pin quota enforced, names "
                        "checked\n");
        dsv32_disconnect(c);
}

/* SESSION_LIST shows the caller's sessions; a private session goes away with its
 * connection (pinned or not), a named one stays. */
static const struct dsv32_session_entry *find_entry(const struct dsv32_session_entry *v, int n, const char *name) {
        for (int i = 0; i < n; i++)
                if (!strcmp(v[i].name, name))
                        return &v[i];
        return NULL;
}

static void test_list_private(void) {
        dsv32_client *c = connect_to(&da), *b = connect_to(&da);
        struct dsv32_session_entry v[64];
        const struct dsv32_session_entry *e;
        struct toks p, o;
        size_t total = 0;
        uint64_t t0;
        int n;

        CHECK(dsv32_session_open(c, "l1", 0, NULL) == 0 && dsv32_session_open(c, "l2", 0, NULL) == 0 &&
                      dsv32_session_pin(c, "l2", 1, NULL) == 0,
              "open l1, l2: %s", dsv32_last_error(c));
        rand_prompt(&p, 70);
        gen_ok(c, &p, &GREEDY, "l1", &o, NULL);
        n = dsv32_session_list(c, v, 64, &total);
        CHECK(n >= 2 && (size_t)n == total, "list: %d of %zu (%s)", n, total, dsv32_last_error(c));
        e = find_entry(v, n, "l1");
        CHECK(e && e->n_tokens == 81 && e->n_pages == 2 && !(e->flags & DSV32_SESSION_PINNED), "l1: %u tokens, %u pages, flags %x",
              e ? e->n_tokens : 0, e ? e->n_pages : 0, e ? e->flags : 0);
        e = find_entry(v, n, "l2");
        CHECK(e && e->n_tokens == 0 && (e->flags & DSV32_SESSION_PINNED), "l2 pinned and empty: flags %x", e ? e->flags : 0);
        CHECK(dsv32_session_list(c, v, 1, &total) == 1 && total >= 2, "a list of at most 1: total %zu", total);
        CHECK(dsv32_session_list(c, NULL, 0, &total) == 0 && total >= 2, "counting: %zu", total);

        /* private: pinned and holding pages, gone soon after its connection */
        CHECK(dsv32_session_open(b, "priv", DSV32_SESSION_PRIVATE, NULL) == 0 && dsv32_session_pin(b, "priv", 1, NULL) == 0,
              "open private: %s", dsv32_last_error(b));
        gen_ok(b, &p, &GREEDY, "priv", &o, NULL);
        n = dsv32_session_list(c, v, 64, NULL);
        CHECK(find_entry(v, n, "priv") != NULL, "the private session is listed while its connection lives");
        dsv32_disconnect(b);
        t0 = h_now_ns();
        do {
                usleep(50000);
                n = dsv32_session_list(c, v, 64, NULL);
        } while (find_entry(v, n, "priv") && h_now_ns() - t0 < 5000000000ull);
        CHECK(!find_entry(v, n, "priv"), "the private session outlived its connection by 5 s");
        fprintf(stderr, "list/private: the private session was closed %.2f s after its client left\n", (h_now_ns() - t0) / 1e9);
        CHECK(find_entry(v, n, "l1") && find_entry(v, n, "l2"), "named sessions stay");
        CHECK(dsv32_session_close(c, "l1", NULL) == 0 && dsv32_session_close(c, "l2", NULL) == 0, "close l1, l2");
        dsv32_disconnect(c);
}

/* ------------------------------------------------------------------ concurrency, other uids */

/* Waits for the first TOKENS (or the end) of an asynchronous request. */
static int wait_event(dsv32_client *c, uint64_t id, enum dsv32_event_type want, struct dsv32_event *got) {
        uint64_t t0 = h_now_ns();
        while (h_now_ns() - t0 < 20000000000ull) {
                struct dsv32_event ev[16];
                int n = dsv32_poll_events(c, ev, 16);
                CHECK(n >= 0, "poll_events: %s", dsv32_last_error(c));
                for (int i = 0; i < n; i++) {
                        if (ev[i].id != id)
                                continue;
                        if (ev[i].type == want || ev[i].type == DSV32_EVENT_ERROR) {
                                if (got)
                                        *got = ev[i];
                                return ev[i].type;
                        }
                }
                if (n == 0)
                        dsv32_wait(c, 100);
        }
        CHECK(0, "no event %d for request %llu within 20 s", want, (unsigned long long)id);
        return -1;
}

static void test_busy(void) {
        dsv32_client *c1 = connect_to(&da), *c2 = connect_to(&da);
        struct dsv32_stats base = wait_quiet(c2);
        struct toks p, pn, o, on;
        struct dsv32_request q = {
                .struct_size = sizeof(q), .max_tokens = 4000, .flags = DSV32_REQ_IGNORE_EOS, .session = "busy"};
        struct dsv32_session_info si;
        struct dsv32_event ev;
        struct dsv32_result res;
        uint64_t id;
        int r;

        rand_prompt(&p, 20);
        q.tokens = p.t;
        q.n_tokens = (size_t)p.n;
        CHECK(dsv32_submit(c1, &q, &id) == 0, "submit: %s", dsv32_last_error(c1));
        CHECK(wait_event(c1, id, DSV32_EVENT_TOKENS, NULL) == DSV32_EVENT_TOKENS, "no tokens");
        r = gen(c2, &p, &GREEDY, "busy", &o, NULL);
        CHECK(r == -EBUSY && strstr(dsv32_last_error(c2), "in use"), "a second request on a busy session: %d %s", r,
              dsv32_last_error(c2));
        CHECK(dsv32_session_open(c2, "busy", 0, &si) == 0 && (si.flags & DSV32_SESSION_BUSY), "busy flag: %x",
              si.flags);
        CHECK(dsv32_cancel(c1, id) == 0, "cancel");
        CHECK(wait_event(c1, id, DSV32_EVENT_DONE, &ev) == DSV32_EVENT_DONE && ev.finish == DSV32_FINISH_CANCELLED,
              "cancelled request");
        /* usable again: the prompt part is reused */
        pn = p;
        append(&pn, NULL, 5);
        gen_ok(c2, &pn, &GREEDY, "busy", &o, &res);
        CHECK(res.usage.cached_tokens == 20, "after the cancelled request: %u reused, want 20",
              res.usage.cached_tokens);
        gen_ok(c2, &pn, &GREEDY, NULL, &on, NULL);
        CHECK(same(&o, &on), "after the cancelled request: tokens differ from a run without the session");

        /* cancel and ask again at once (one ring, back to back, as `dsv32 chat` after ^C): the
         * session the cancelled request still holds is waited for, not EBUSY */
        for (int k = 0; k < 5; k++) {
                struct dsv32_request q2 = {.struct_size = sizeof(q2),
                                           .tokens = pn.t,
                                           .n_tokens = (size_t)pn.n,
                                           .max_tokens = GREEDY.max_tokens,
                                           .flags = GREEDY.flags,
                                           .session = "busy"};
                uint64_t id2;
                CHECK(dsv32_submit(c1, &q, &id) == 0, "submit: %s", dsv32_last_error(c1));
                CHECK(wait_event(c1, id, DSV32_EVENT_TOKENS, NULL) == DSV32_EVENT_TOKENS, "no tokens");
                CHECK(dsv32_cancel(c1, id) == 0 && dsv32_submit(c1, &q2, &id2) == 0, "cancel + submit: %s",
                      dsv32_last_error(c1));
                {
                        /* both end (DONE or ERROR); wait_event would drop the other's events */
                        struct dsv32_event end[2] = {{.type = DSV32_EVENT_TOKENS}, {.type = DSV32_EVENT_TOKENS}};
                        char msg[256] = "";
                        uint64_t t0 = h_now_ns();
                        while (end[0].type == DSV32_EVENT_TOKENS || end[1].type == DSV32_EVENT_TOKENS) {
                                struct dsv32_event evs[16];
                                int n = dsv32_poll_events(c1, evs, 16);
                                CHECK(n >= 0 && h_now_ns() - t0 < 20000000000ull, "cancel + submit: no end in 20 s");
                                for (int i = 0; i < n; i++) {
                                        int w = evs[i].id == id ? 0 : evs[i].id == id2 ? 1 : -1;
                                        if (w < 0 || evs[i].type == DSV32_EVENT_TOKENS)
                                                continue;
                                        end[w] = evs[i];
                                        if (evs[i].type == DSV32_EVENT_ERROR)
                                                snprintf(msg, sizeof(msg), "%s", evs[i].message);
                                }
                                if (n == 0)
                                        dsv32_wait(c1, 100);
                        }
                        CHECK(end[0].type == DSV32_EVENT_DONE && end[0].finish == DSV32_FINISH_CANCELLED,
                              "the cancelled request: %s", msg);
                        CHECK(end[1].type == DSV32_EVENT_DONE,
                              "a request right after the cancel of the one on its session: %s", msg);
                        CHECK(end[1].usage.cached_tokens == 20, "after cancel + submit: %u reused, want 20",
                              end[1].usage.cached_tokens);
                }
        }

        /* CLOSE while a request runs on it: the request goes on, the pages come back when it ends */
        CHECK(dsv32_submit(c1, &q, &id) == 0, "submit: %s", dsv32_last_error(c1));
        CHECK(wait_event(c1, id, DSV32_EVENT_TOKENS, NULL) == DSV32_EVENT_TOKENS, "no tokens");
        CHECK(dsv32_session_close(c2, "busy", &si) == 0 && (si.flags & DSV32_SESSION_BUSY),
              "close a busy session: %s %x", dsv32_last_error(c2), si.flags);
        CHECK(stats(c2).sessions == base.sessions, "the closed session is still in STATS");
        CHECK(wait_event(c1, id, DSV32_EVENT_TOKENS, NULL) == DSV32_EVENT_TOKENS, "the request stopped after CLOSE");
        CHECK(dsv32_cancel(c1, id) == 0, "cancel");
        CHECK(wait_event(c1, id, DSV32_EVENT_DONE, &ev) == DSV32_EVENT_DONE, "cancelled request");
        {
                struct dsv32_stats s = wait_quiet(c2);
                CHECK(s.kv_pages_used == base.kv_pages_used,
                      "pages after the request on the closed session: %llu, want %llu",
                      (unsigned long long)s.kv_pages_used, (unsigned long long)base.kv_pages_used);
        }
        gen_ok(c2, &pn, &GREEDY, "busy", &o, &res);
        CHECK(res.usage.cached_tokens == 0, "a closed name starts afresh: %u reused", res.usage.cached_tokens);
        CHECK(dsv32_session_close(c2, "busy", NULL) == 0, "close");
        fprintf(stderr, "busy: EBUSY for a second request, usable after a cancel (also at once), CLOSE of a busy session\n");
        dsv32_disconnect(c1);
        dsv32_disconnect(c2);
}

static void test_other_uid(void) {
        dsv32_client *c;
        struct toks p, pn, o;
        struct dsv32_result res;
        pid_t pid;
        int st;

        if (geteuid() != 0) {
                fprintf(stderr, "SKIP part: another uid cannot see a session (needs root to run a client as nobody)\n");
                return;
        }
        c = connect_to(&da);
        rand_prompt(&p, 24);
        gen_ok(c, &p, &GREEDY, "shared", &o, &res);
        pid = fork();
        CHECK(pid >= 0, "fork");
        if (pid == 0) {
                struct dsv32_connect_opts co = {.struct_size = sizeof(co), .socket_path = da.socket};
                dsv32_client *x;
                int r;
                if (setgroups(0, NULL) < 0 || setresgid(NOBODY, NOBODY, NOBODY) < 0 ||
                    setresuid(NOBODY, NOBODY, NOBODY) < 0) {
                        fprintf(stderr, "cannot become uid %d: %s\n", NOBODY, strerror(errno));
                        _exit(2);
                }
                if (dsv32_connect(&co, &x) < 0) {
                        fprintf(stderr, "uid %d: connect: %s\n", NOBODY, dsv32_last_error(NULL));
                        _exit(1);
                }
                r = dsv32_session_close(x, "shared", NULL);
                if (r != -ENOENT) {
                        fprintf(stderr, "uid %d closed root's session: %d %s\n", NOBODY, r, dsv32_last_error(x));
                        _exit(1);
                }
                r = dsv32_session_pin(x, "shared", 1, NULL);
                if (r != -ENOENT) {
                        fprintf(stderr, "uid %d pinned root's session: %d\n", NOBODY, r);
                        _exit(1);
                }
                r = gen(x, &p, &GREEDY, "shared", &o, &res);
                if (r < 0 || res.usage.cached_tokens != 0) {
                        fprintf(stderr, "uid %d on 'shared': %d, %u reused (want 0: its own session)\n", NOBODY, r,
                                res.usage.cached_tokens);
                        _exit(1);
                }
                r = dsv32_session_close(x, "shared", NULL);
                if (r != 0) {
                        fprintf(stderr, "uid %d cannot close its own session: %d\n", NOBODY, r);
                        _exit(1);
                }
                dsv32_disconnect(x);
                _exit(0);
        }
        CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0,
              "the client as uid %d failed (status %d)", NOBODY, st);
        pn = p;
        append(&pn, &o, 3);
        gen_ok(c, &pn, &GREEDY, "shared", &o, &res);
        CHECK(res.usage.cached_tokens == 24, "root's session after uid %d used the name: %u reused, want 24", NOBODY,
              res.usage.cached_tokens);
        CHECK(dsv32_session_close(c, "shared", NULL) == 0, "close");
        fprintf(stderr, "uids: uid %d neither sees nor closes root's session; the same name is its own session\n",
                NOBODY);
        dsv32_disconnect(c);
}

/* ------------------------------------------------------------------ hostile records */

/* msgpack by hand: {0: id, 1: name bytes (as given), [2: flags]} */
static size_t mp_session(uint8_t *p, uint8_t id, const void *name, size_t n, bool with_flags, uint32_t flags) {
        size_t k = 0;
        p[k++] = with_flags ? 0x83 : 0x82;
        p[k++] = 0;
        p[k++] = id;
        p[k++] = 1;
        if (n < 32) {
                p[k++] = (uint8_t)(0xa0 | n);
        } else {
                p[k++] = 0xd9;
                p[k++] = (uint8_t)n;
        }
        memcpy(p + k, name, n);
        k += n;
        if (with_flags) {
                p[k++] = 2;
                p[k++] = 0xce;
                p[k++] = (uint8_t)(flags >> 24);
                p[k++] = (uint8_t)(flags >> 16);
                p[k++] = (uint8_t)(flags >> 8);
                p[k++] = (uint8_t)flags;
        }
        return k;
}

static void test_hostile(void) {
        uint8_t p[512], name[80];
        struct h_raw r;
        size_t n;

        h_raw_open(&r, da.socket, 1 << 16, 1 << 16, "hostile-session");
        n = mp_session(p, 1, "has space", 9, false, 0);
        h_raw_write(&r, DSV_MSG_SESSION_OPEN, 0, p, n);
        h_raw_expect_ring_error(&r, EINVAL, "name with a space");
        name[0] = 'a';
        name[1] = 0xff;
        n = mp_session(p, 2, name, 2, false, 0);
        h_raw_write(&r, DSV_MSG_SESSION_PIN, 0, p, n);
        h_raw_expect_ring_error(&r, EINVAL, "name with byte 0xff");
        n = mp_session(p, 3, "", 0, false, 0);
        h_raw_write(&r, DSV_MSG_SESSION_CLOSE, 0, p, n);
        h_raw_expect_ring_error(&r, EINVAL, "empty name");
        memset(name, 'y', 40);
        n = mp_session(p, 4, name, 40, false, 0);
        h_raw_write(&r, DSV_MSG_SESSION_OPEN, 0, p, n);
        h_raw_expect_ring_error(&r, EINVAL, "40 bytes, over session-name-max 32");
        n = mp_session(p, 5, "ok", 2, true, 0x80000000u);
        h_raw_write(&r, DSV_MSG_SESSION_OPEN, 0, p, n);
        h_raw_expect_ring_error(&r, EINVAL, "unknown OPEN flags");
        n = mp_session(p, 6, "ok", 2, true, 0x2);
        h_raw_write(&r, DSV_MSG_SESSION_CLOSE, 0, p, n);
        h_raw_expect_ring_error(&r, EINVAL, "flags on CLOSE");
        n = mp_session(p, 7, "nosuch", 6, false, 0);
        h_raw_write(&r, DSV_MSG_SESSION_CLOSE, 0, p, n);
        h_raw_expect_ring_error(&r, ENOENT, "CLOSE of an unknown session");
        {
                struct dsv_msg m = {.type = DSV_MSG_GENERATE};
                struct dsv_wbuf w = {0};
                int32_t t[] = {0, 5, 6};
                m.u.generate.id = 8;
                m.u.generate.tokens = t;
                m.u.generate.n_tokens = 3;
                m.u.generate.max_tokens = 2;
                m.u.generate.top_p = 1;
                strcpy(m.u.generate.session, "x y");
                CHECK(dsv_msg_encode(&m, &w) == 0, "encode");
                h_raw_write(&r, DSV_MSG_GENERATE, 0, w.data, w.len);
                dsv_wbuf_free(&w);
                h_raw_expect_ring_error(&r, EINVAL, "GENERATE with session 'x y'");
        }
        h_raw_close(&r);

        /* records that do not decode: the connection is dropped */
        h_raw_open(&r, da.socket, 1 << 16, 1 << 16, "hostile-session");
        memset(name, 'z', 65);
        n = mp_session(p, 9, name, 65, false, 0);
        h_raw_write(&r, DSV_MSG_SESSION_OPEN, 0, p, n);
        h_raw_expect_drop(&r, EPROTO, "a 65-byte name");
        h_raw_close(&r);
        h_raw_open(&r, da.socket, 1 << 16, 1 << 16, "hostile-session");
        n = mp_session(p, 10, "a\0b", 3, false, 0);
        h_raw_write(&r, DSV_MSG_SESSION_PIN, 0, p, n);
        h_raw_expect_drop(&r, EPROTO, "a name with a NUL byte");
        h_raw_close(&r);
        h_raw_open(&r, da.socket, 1 << 16, 1 << 16, "hostile-session");
        {
                static const uint8_t huge_map[] = {0xdf, 0xff, 0xff, 0xff, 0xff, 0x00, 0x01};
                h_raw_write(&r, DSV_MSG_SESSION_OPEN, 0, huge_map, sizeof(huge_map));
                h_raw_expect_drop(&r, EBADMSG, "SESSION_OPEN with a map of 2^32-1 entries");
        }
        h_raw_close(&r);
        h_raw_open(&r, da.socket, 1 << 16, 1 << 16, "hostile-session");
        {
                static const uint8_t huge_name[] = {0x82, 0x00, 0x01, 0x01, 0xdd, 0x7f, 0xff, 0xff, 0xff, 0x01};
                h_raw_write(&r, DSV_MSG_SESSION_CLOSE, 0, huge_name, sizeof(huge_name));
                h_raw_expect_drop(&r, EBADMSG, "SESSION_CLOSE whose name is an array of 2^31-1 entries");
        }
        h_raw_close(&r);
        h_raw_open(&r, da.socket, 1 << 16, 1 << 16, "hostile-session");
        {
                static const uint8_t int_name[] = {0x82, 0x00, 0x01, 0x01, 0xcd, 0x12, 0x34};
                h_raw_write(&r, DSV_MSG_SESSION_PIN, 0, int_name, sizeof(int_name));
                h_raw_expect_drop(&r, EPROTO, "SESSION_PIN whose name is an integer");
        }
        h_raw_close(&r);
        CHECK(kill(da.pid, 0) == 0, "dsv32d died");
        {
                dsv32_client *c = connect_to(&da);
                struct toks pr, o;
                rand_prompt(&pr, 8);
                gen_ok(c, &pr, &GREEDY, "after-hostile", &o, NULL);
                CHECK(dsv32_session_close(c, "after-hostile", NULL) == 0, "close");
                if (stats(c).features & DSV32_FEATURE_CHAT) {
                        /* an empty message (msgpack-c hands "" over as a NULL pointer) */
                        struct dsv32_chat_message msg[2] = {{"user", ""}, {"assistant", ""}};
                        struct dsv32_request q = {.struct_size = sizeof(q),
                                                  .messages = msg,
                                                  .n_messages = 2,
                                                  .max_tokens = 2,
                                                  .session = "empty-chat"};
                        CHECK(dsv32_generate(c, &q, NULL, NULL, NULL) == 0, "chat with empty messages: %s",
                              dsv32_last_error(c));
                        CHECK(dsv32_session_close(c, "empty-chat", NULL) == 0, "close");
                }
                dsv32_disconnect(c);
        }
        fprintf(stderr, "hostile: bad names and flags -> ERROR (kept), undecodable SESSION_* -> ERROR and drop\n");
}

/* ------------------------------------------------------------------ killed clients */

static void test_kill(void) {
        dsv32_client *c = connect_to(&da);
        struct dsv32_stats base = wait_quiet(c), s;
        int fds0 = h_count_fds(da.pid);
        struct toks p, pn, o, on;
        struct dsv32_result res;

        rand_prompt(&p, 30);
        for (int it = 0; it < 6; it++) {
                bool after_tokens = it % 2 == 0;
                int pfd[2];
                pid_t pid;
                char b;
                CHECK(pipe(pfd) == 0, "pipe");
                pid = fork();
                CHECK(pid >= 0, "fork");
                if (pid == 0) {
                        struct dsv32_connect_opts co = {.struct_size = sizeof(co), .socket_path = da.socket};
                        struct dsv32_request q = {.struct_size = sizeof(q),
                                                  .tokens = p.t,
                                                  .n_tokens = (size_t)p.n,
                                                  .max_tokens = 4000,
                                                  .flags = DSV32_REQ_IGNORE_EOS,
                                                  .session = "kill"};
                        dsv32_client *x;
                        uint64_t id;
                        close(pfd[0]);
                        if (dsv32_connect(&co, &x) < 0 || dsv32_submit(x, &q, &id) < 0)
                                _exit(1);
                        if (after_tokens) {
                                struct dsv32_event ev[8];
                                int n = 0;
                                while (n == 0)
                                        if ((n = dsv32_poll_events(x, ev, 8)) == 0)
                                                dsv32_wait(x, 100);
                        }
                        if (write(pfd[1], "x", 1) != 1)
                                _exit(1);
                        pause();
                        _exit(0);
                }
                close(pfd[1]);
                CHECK(read(pfd[0], &b, 1) == 1, "the client did not start");
                close(pfd[0]);
                kill(pid, SIGKILL);
                waitpid(pid, NULL, 0);
                /* once the daemon has seen the hangup, the session is ours (waited for if the
                 * dead client's request still holds it); before that it is legitimately busy */
                {
                        uint64_t t0 = h_now_ns();
                        while (stats(c).clients != base.clients) {
                                CHECK(h_now_ns() - t0 < 10000000000ull, "the killed client is still connected after 10 s");
                                usleep(2000);
                        }
                }
                /* consistent: the next turn reuses what was prefilled and gives the exact tokens */
                pn = p;
                append(&pn, NULL, 4);
                gen_ok(c, &pn, &GREEDY, "kill", &o, &res);
                if (after_tokens)
                        CHECK(res.usage.cached_tokens == 30, "after a kill mid-decode: %u reused, want 30",
                              res.usage.cached_tokens);
                else /* killed before or after its admission, or after its prefill: any exact prefix */
                        CHECK(res.usage.cached_tokens <= (uint32_t)pn.n - 2, "after a kill around prefill: %u reused",
                              res.usage.cached_tokens);
                gen_ok(c, &pn, &GREEDY, NULL, &on, NULL);
                CHECK(same(&o, &on), "after a kill: tokens differ from a run without the session");
        }
        CHECK(dsv32_session_close(c, "kill", NULL) == 0, "close");
        s = wait_quiet(c);
        CHECK(s.kv_pages_used == base.kv_pages_used && s.sessions == base.sessions && s.clients == base.clients,
              "after the kills: %llu pages, %u sessions, %u clients; baseline %llu, %u, %u",
              (unsigned long long)s.kv_pages_used, s.sessions, s.clients, (unsigned long long)base.kv_pages_used,
              base.sessions, base.clients);
        {
                int fds = h_count_fds(da.pid);
                uint64_t t0 = h_now_ns();
                while (fds != fds0 && h_now_ns() - t0 < 3000000000ull) {
                        usleep(10000);
                        fds = h_count_fds(da.pid);
                }
                CHECK(fds == fds0, "daemon descriptors: %d, baseline %d", fds, fds0);
        }
        fprintf(stderr, "kill: 6 clients SIGKILLed mid-request on a session; it stays exact, nothing leaks\n");
        dsv32_disconnect(c);
}

/* ------------------------------------------------------------------ eviction (small pool) */

static void test_eviction(void) {
        dsv32_client *c = connect_to(&db), *ref = connect_to(&da);
        struct dsv32_stats s0 = stats(c), s;
        struct gen_opts g = {.max_tokens = 40, .flags = DSV32_REQ_IGNORE_EOS};
        struct toks p[16], o, on, pn;
        struct dsv32_result res;
        int total = (int)s0.kv_pages_total, k, r;
        char n[16];

        /* each session: 138 + 40 tokens, 3 pages; k of them fill all but total - 3k pages */
        k = total / 3;
        CHECK(total >= 9 && k < 16, "kv-cache-mb 1 gives %d pages", total);
        for (int i = 0; i <= k; i++)
                rand_prompt(&p[i], 138);
        for (int i = 0; i < k; i++) {
                snprintf(n, sizeof(n), "ev%d", i);
                gen_ok(c, &p[i], &g, n, &o, NULL);
        }
        s = stats(c);
        CHECK(s.session_pages == 3ull * (uint64_t)k && s.sessions_evicted == 0,
              "%d sessions hold %llu pages, %llu evictions", k, (unsigned long long)s.session_pages,
              (unsigned long long)s.sessions_evicted);
        /* one more needs pages: the least recently used (ev0) gives them */
        gen_ok(c, &p[k], &g, "ev-new", &o, NULL);
        s = stats(c);
        CHECK(s.sessions_evicted >= 1, "no eviction with %llu of %d pages held", (unsigned long long)s.session_pages,
              total);
        pn = p[k - 1];
        append(&pn, NULL, 5);
        snprintf(n, sizeof(n), "ev%d", k - 1);
        gen_ok(c, &pn, &g, n, &o, &res);
        CHECK(res.usage.cached_tokens == 138, "the most recently used session lost its cache: %u reused",
              res.usage.cached_tokens);
        /* the evicted one works from scratch, exactly */
        pn = p[0];
        append(&pn, NULL, 5);
        gen_ok(c, &pn, &g, "ev0", &o, &res);
        CHECK(res.usage.cached_tokens == 0, "the evicted session still had %u tokens", res.usage.cached_tokens);
        gen_ok(ref, &pn, &g, NULL, &on, NULL);
        CHECK(same(&o, &on), "an evicted session's request differs from a run without it");

        /* pinned sessions are never evicted */
        rand_prompt(&p[1], 138);
        gen_ok(c, &p[1], &g, "keep", &o, NULL);
        CHECK(dsv32_session_pin(c, "keep", 1, NULL) == 0, "pin keep: %s", dsv32_last_error(c));
        for (int i = 0; i < 2 * k; i++) {
                struct toks x;
                rand_prompt(&x, 138);
                snprintf(n, sizeof(n), "churn%d", i);
                gen_ok(c, &x, &g, n, &o, NULL);
        }
        pn = p[1];
        append(&pn, NULL, 5);
        gen_ok(c, &pn, &g, "keep", &o, &res);
        CHECK(res.usage.cached_tokens == 138, "a pinned session lost its cache: %u reused", res.usage.cached_tokens);
        CHECK(stats(c).sessions_evicted > s.sessions_evicted, "no evictions while churning");
        gen_ok(ref, &pn, &g, NULL, &on, NULL);
        CHECK(same(&o, &on), "pinned session: tokens differ from a run without it");

        /* pinned pages that leave too little for a request: ENOSPC, not a hang */
        for (int i = 2; i < 4 && i < k; i++) {
                snprintf(n, sizeof(n), "ev%d", i);
                gen_ok(c, &p[i], &g, n, &o, NULL); /* cached again */
                CHECK(dsv32_session_pin(c, n, 1, NULL) == 0, "pin %s: %s", n, dsv32_last_error(c));
        }
        {
                /* a request needing more pages than the unpinned part of the pool */
                struct toks big;
                int free_pages = total - 9, len = (free_pages + 1) * 64 - 40;
                rand_prompt(&big, len);
                r = gen(c, &big, &g, NULL, &o, NULL);
                CHECK(r == -ENOSPC && strstr(dsv32_last_error(c), "pinned"),
                      "%d tokens with 9 of %d pages pinned: %d %s", len + 40, total, r, dsv32_last_error(c));
                CHECK(dsv32_session_pin(c, "ev3", 0, NULL) == 0, "unpin");
                gen_ok(c, &big, &g, NULL, &o, NULL);
        }
        fprintf(stderr,
                "eviction: %d pages, %d sessions of 3: LRU evicted (%llu evictions), evicted session exact from "
                "scratch, pinned kept, pinned-full pool -> ENOSPC\n",
                total, k, (unsigned long long)stats(c).sessions_evicted);
        dsv32_disconnect(c);
        dsv32_disconnect(ref);
}

/* ------------------------------------------------------------------ small steps */

/* batch-tokens 5 cuts every prefill into small chunks (never leaving one token alone, which
 * would take the decode path): the tokens are still those of an uncut prefill, with and
 * without a session. */
static void test_small_batch(void) {
        dsv32_client *c = connect_to(&dc), *ref = connect_to(&da);
        const int n = h_backend() ? 1 : 8; /* an emulated backend: 1 prompt of 8 */
        int same_n = 0;
        for (int i = 0; i < n; i++) {
                struct toks p1, p2, o1, o1r, o2, o2r;
                struct dsv32_result res;
                rand_prompt(&p1, 9 + i);
                /* the references first, so that the session's two turns follow each other
                 * within dc's --session-idle-timeout of 1 s however slow the backend */
                gen_ok(ref, &p1, &GREEDY, NULL, &o1r, NULL);
                p2 = p1;
                append(&p2, &o1r, 6 + i);
                gen_ok(ref, &p2, &GREEDY, NULL, &o2r, NULL);
                gen_ok(c, &p1, &GREEDY, "small", &o1, NULL);
                CHECK(same(&o1, &o1r), "batch-tokens 5, prompt of %d tokens: output differs from an uncut prefill", p1.n);
                gen_ok(c, &p2, &GREEDY, "small", &o2, &res);
                CHECK(res.usage.cached_tokens == (uint32_t)p1.n, "batch-tokens 5, turn 2: %u reused, want %d",
                      res.usage.cached_tokens, p1.n);
                CHECK(same(&o2, &o2r),
                      "batch-tokens 5, prompt %d/%d tokens: output differs from an uncut prefill", p1.n, p2.n);
                same_n += same(&o1, &o1r) && same(&o2, &o2r);
                CHECK(dsv32_session_close(c, "small", NULL) == 0, "close");
        }
        fprintf(stderr,
                "small steps: batch-tokens 5, prompts cut into chunks of 2..5: %d/%d identical to uncut prefills\n",
                same_n, n);
        dsv32_disconnect(c);
        dsv32_disconnect(ref);
}

/* ------------------------------------------------------------------ timeout, cap */

static void test_timeout_cap(void) {
        dsv32_client *c = connect_to(&dc);
        struct dsv32_session_info si;
        struct dsv32_stats s;
        struct toks p, o;
        int r;

        /* max-sessions 3: a fourth replaces the least recently used idle unpinned one */
        CHECK(dsv32_session_open(c, "a", 0, NULL) == 0 && dsv32_session_open(c, "b", 0, NULL) == 0 &&
                      dsv32_session_open(c, "c", 0, NULL) == 0,
              "open");
        CHECK(dsv32_session_open(c, "a", 0, NULL) == 0, "touch a"); /* b is now the oldest */
        CHECK(dsv32_session_open(c, "d", 0, &si) == 0 && (si.flags & DSV32_SESSION_CREATED), "open d");
        CHECK(stats(c).sessions == 3, "sessions over the cap");
        r = dsv32_session_pin(c, "b", 1, NULL);
        CHECK(r == -ENOENT, "b should have been replaced: %d", r);
        CHECK(dsv32_session_pin(c, "a", 1, NULL) == 0 && dsv32_session_pin(c, "c", 1, NULL) == 0 &&
                      dsv32_session_pin(c, "d", 1, NULL) == 0,
              "pin all three");
        r = dsv32_session_open(c, "e", 0, NULL);
        CHECK(r == -EDQUOT && strstr(dsv32_last_error(c), "max-sessions"), "all pinned, a fourth: %d %s", r,
              dsv32_last_error(c));
        rand_prompt(&p, 10);
        r = gen(c, &p, &GREEDY, "e", &o, NULL);
        CHECK(r == -EDQUOT, "all pinned, a request on a new session: %d", r);
        CHECK(dsv32_session_pin(c, "a", 0, NULL) == 0 && dsv32_session_pin(c, "c", 0, NULL) == 0, "unpin");
        gen_ok(c, &p, &GREEDY, "e", &o, NULL);
        /* session-idle-timeout 1: idle unpinned sessions go, pinned stay */
        usleep(2600000);
        s = stats(c);
        CHECK(s.sessions == 1 && s.sessions_pinned == 1, "after the idle timeout: %u sessions (%u pinned), want only d",
              s.sessions, s.sessions_pinned);
        CHECK(s.kv_pages_used == 0 && s.session_pages == 0, "pages after the idle timeout: %llu",
              (unsigned long long)s.kv_pages_used);
        CHECK(dsv32_session_close(c, "d", NULL) == 0, "close d");
        fprintf(stderr,
                "cap and timeout: max-sessions replaces the LRU idle session or says EDQUOT; idle ones expire\n");
        dsv32_disconnect(c);
}

/* ------------------------------------------------------------------ the CLI */

static int run_cli(const char *input, const char *out, const char *err, const char *const *args) {
        const char *argv[32];
        int k = 0, st;
        pid_t pid;
        argv[k++] = h_prog("dsv32");
        argv[k++] = "--socket";
        argv[k++] = da.socket;
        for (int i = 0; args[i]; i++)
                argv[k++] = args[i];
        argv[k] = NULL;
        pid = fork();
        if (pid == 0) {
                int in = open(input ? input : "/dev/null", O_RDONLY | O_CLOEXEC);
                int o = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                int e = open(err, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                dup2(in, 0);
                dup2(o, 1);
                dup2(e, 2);
                execv(argv[0], (char *const *)argv);
                _exit(127);
        }
        waitpid(pid, &st, 0);
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static size_t slurp(const char *path, char *buf, size_t cap) {
        FILE *f = fopen(path, "re");
        size_t n = 0;
        if (f) {
                n = fread(buf, 1, cap - 1, f);
                fclose(f);
        }
        buf[n] = 0;
        return n;
}

static void test_cli(void) {
        static const char *const chat_s[] = {"-v", "chat", "--max-tokens", "8", "--temperature", "0", NULL};
        static const char *const chat_n[] = {"-v", "chat", "--no-session", "--max-tokens", "8", "--temperature",
                                             "0",  NULL};
        static char out_s[1 << 16], out_n[1 << 16], err_s[1 << 16], err_n[1 << 16];
        char in[300], o1[300], o2[300], e1[300], e2[300];
        dsv32_client *c = connect_to(&da);
        struct dsv32_stats st = stats(c), st1;
        unsigned prompt[3] = {0}, reused[3] = {0}, pn[3] = {0}, rn[3] = {0};
        const char *p;
        int turns = 0, rc;
        FILE *f;

        if (!(st.features & DSV32_FEATURE_CHAT)) {
                fprintf(stderr, "SKIP part: the tiny model has no chat template; dsv32 chat not tested\n");
                dsv32_disconnect(c);
                return;
        }
        snprintf(in, sizeof(in), "%s/chat.in", h_tmpdir());
        snprintf(o1, sizeof(o1), "%s/chat-s.out", h_tmpdir());
        snprintf(o2, sizeof(o2), "%s/chat-n.out", h_tmpdir());
        snprintf(e1, sizeof(e1), "%s/chat-s.err", h_tmpdir());
        snprintf(e2, sizeof(e2), "%s/chat-n.err", h_tmpdir());
        f = fopen(in, "we");
        CHECK(f != NULL, "write %s", in);
        fputs("hello there\nhow are you today\ntell me about the weather\n", f);
        fclose(f);
        /* the sampling options generate and chat share: bad values are usage errors (exit 2)
         * that name the option, in both commands */
        {
                static const char *const bad[][5] = {
                        {"chat", "--seed", "12x", "--seed", NULL},
                        {"generate", "--seed", "-", "--seed", NULL},
                        {"chat", "--max-tokens", "0", "--max-tokens", NULL},
                        {"generate", "--temperature", "-1", "--temperature", NULL},
                        {"chat", "--temperature", "warm", "--temperature", NULL},
                };
                for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                        const char *args[] = {bad[i][0], bad[i][1], bad[i][2], "hi", NULL};
                        rc = run_cli(NULL, o1, e1, args);
                        slurp(e1, err_s, sizeof(err_s));
                        CHECK(rc == 2 && strstr(err_s, bad[i][3]) && strstr(err_s, bad[i][0]),
                              "dsv32 %s %s %s: exit %d, stderr '%s'", bad[i][0], bad[i][1], bad[i][2], rc, err_s);
                }
        }
        rc = run_cli(in, o1, e1, chat_s);
        CHECK(rc == 0, "dsv32 chat exit %d: %s", rc, (slurp(e1, err_s, sizeof(err_s)), err_s));
        rc = run_cli(in, o2, e2, chat_n);
        CHECK(rc == 0, "dsv32 chat --no-session exit %d", rc);
        slurp(o1, out_s, sizeof(out_s));
        slurp(o2, out_n, sizeof(out_n));
        slurp(e1, err_s, sizeof(err_s));
        slurp(e2, err_n, sizeof(err_n));
        CHECK(!strcmp(out_s, out_n), "chat output with a session differs from --no-session:\n%s\n---\n%s", out_s,
              out_n);
        for (p = err_s; turns < 3 && (p = strstr(p, "[turn: ")); p++, turns++)
                CHECK(sscanf(p, "[turn: %u prompt tokens, %u reused", &prompt[turns], &reused[turns]) == 2, "parse %s",
                      p);
        CHECK(turns == 3, "dsv32 -v chat printed %d turn lines: %s", turns, err_s);
        turns = 0;
        for (p = err_n; turns < 3 && (p = strstr(p, "[turn: ")); p++, turns++)
                CHECK(sscanf(p, "[turn: %u prompt tokens, %u reused", &pn[turns], &rn[turns]) == 2, "parse %s", p);
        CHECK(reused[0] == 0 && reused[1] > 0 && reused[2] > reused[1] && rn[1] == 0 && rn[2] == 0,
              "chat reuse per turn: %u %u %u (no-session %u %u %u)", reused[0], reused[1], reused[2], rn[0], rn[1],
              rn[2]);
        fprintf(stderr,
                "cli chat: prompt tokens prefilled per turn: with a session %u, %u, %u (of %u, %u, %u); without %u, "
                "%u, %u; "
                "same replies\n",
                prompt[0] - reused[0], prompt[1] - reused[1], prompt[2] - reused[2], prompt[0], prompt[1], prompt[2],
                pn[0], pn[1], pn[2]);
        st1 = stats(c);
        CHECK(st1.sessions == st.sessions, "dsv32 chat left its session behind: %u sessions, %u before", st1.sessions,
              st.sessions);
        {
                static const char *const close_none[] = {"session", "close", "nosuch", NULL};
                static const char *const gen_s[] = {"generate",     "--session", "cli-s",
                                                    "--max-tokens", "4",         "--ignore-eos",
                                                    "--tokens",     "0,5,6,7",   NULL};
                static const char *const pin_s[] = {"session", "pin", "cli-s", NULL};
                static const char *const close_s[] = {"session", "close", "cli-s", NULL};
                rc = run_cli(NULL, o1, e1, close_none);
                slurp(e1, err_s, sizeof(err_s));
                CHECK(rc == 1 && strstr(err_s, "no session named"), "dsv32 session close nosuch: exit %d, %s", rc,
                      err_s);
                rc = run_cli(NULL, o1, e1, gen_s);
                CHECK(rc == 0, "dsv32 generate --session: exit %d", rc);
                rc = run_cli(NULL, o1, e1, pin_s);
                slurp(o1, out_s, sizeof(out_s));
                CHECK(rc == 0 && strstr(out_s, "pinned") && strstr(out_s, "7 tokens"), "dsv32 session pin: exit %d, %s",
                      rc, out_s);
                rc = run_cli(NULL, o1, e1, close_s);
                CHECK(rc == 0, "dsv32 session close: exit %d", rc);
        }
        dsv32_disconnect(c);
}

int main(void) {
        /* sessions alone here (the prefix cache has tests/ipc/test-daemon-prefix.c): the STATS
         * counts of reused tokens are the sessions' */
        static const char *const args_a[] = {"--prefix-cache",
                                             "no",
                                             "--max-tokens-limit",
                                             "5000",
                                             "--session-pin-quota",
                                             "2",
                                             "--session-name-max",
                                             "32",
                                             "--socket-mode",
                                             "0666",
                                             "--allow-users",
                                             "root,65534",
                                             NULL};
        static const char *const args_b[] = {"--kv-cache-mb", "1", "--max-prompt-bytes", "65536", "--prefix-cache", "no", NULL};
        static const char *const args_c[] = {"--max-sessions",
                                             "3",
                                             "--session-pin-quota",
                                             "3",
                                             "--session-idle-timeout",
                                             "1",
                                             "--batch-tokens",
                                             "5",
                                             NULL};
        h_init("session", 900);
        chmod(h_tmpdir(), 0711); /* a client running as nobody reaches the socket */
        /* db serves the eviction part, dc the small-batch and timeout parts: a run of some
         * parts (DSV32_TEST_ONLY) starts only the daemons they use */
        bool want_b = h_want("test_eviction"), want_c = h_want("test_small_batch") || h_want("test_timeout_cap");
        h_daemon_start(&da, args_a, NULL);
        if (want_b)
                h_daemon_start(&db, args_b, NULL);
        if (want_c)
                h_daemon_start(&dc, args_c, NULL);
        H_PART(test_reuse);
        H_PART(test_divergent);
        H_PART(test_open_close_pin);
        H_PART(test_list_private);
        H_PART(test_busy);
        H_PART(test_other_uid);
        H_PART(test_hostile);
        H_PART(test_kill);
        H_PART(test_eviction);
        H_PART(test_small_batch);
        H_PART(test_timeout_cap);
        H_PART(test_cli);
        CHECK(h_daemon_stop(&da, 10) == 0, "dsv32d did not exit 0 on SIGTERM");
        CHECK(!want_b || h_daemon_stop(&db, 10) == 0, "dsv32d did not exit 0 on SIGTERM");
        CHECK(!want_c || h_daemon_stop(&dc, 10) == 0, "dsv32d did not exit 0 on SIGTERM");
        return 0;
}
