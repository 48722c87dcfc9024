/* Speculative decoding through the daemon (issue 12): dsv32d with the tiny model's
 * predictable MTP layer (mtp = on, mtp-draft 2 and 3) generates exactly what dsv32d with
 * mtp = off generates, token for token: requests running together (max_tokens 1..40, so the
 * drafts are cut by what is left), a stop token inside an accepted run, sessions (the
 * history's prompt part, and reuse-output), the prefix cache (shared prefixes, the same
 * prompt again), a session restored from its snapshot after a restart. Seeded sampling
 * gives the same tokens alone and among other requests. The acceptance is read from the
 * daemon's debug log. The setting is refused where it cannot hold (mtp = on without the
 * layer). */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client/dsv32.h"
#include "tests/ipc/harness.h"

#define N_CONC 6
#define MAXT 1024

static struct h_daemon don, don3, doff;
static char mtp_model[400];

struct toks {
        int32_t t[MAXT];
        int n;
};

static dsv32_client *connect_to(const struct h_daemon *d) {
        struct dsv32_connect_opts o = {.struct_size = sizeof(o), .socket_path = d->socket};
        dsv32_client *c = NULL;
        int r = dsv32_connect(&o, &c);
        REQUIRE(r == 0, "connect %s: %s", d->socket, dsv32_last_error(NULL));
        return c;
}

static int collect_cb(void *ud, const int32_t *t, size_t n, const char *text, size_t len) {
        struct toks *c = ud;
        for (size_t i = 0; i < n && c->n < MAXT; i++)
                c->t[c->n++] = t[i];
        return 0;
}

static void prompt(struct toks *p, int n, uint64_t seed) {
        p->t[0] = 0;
        for (int i = 1; i < n; i++) {
                seed = seed * 6364136223846793005ull + 1442695040888963407ull;
                p->t[i] = 2 + (int32_t)((seed >> 33) % 4000);
        }
        p->n = n;
}

static bool same(const struct toks *a, const struct toks *b) {
        return a->n == b->n && !memcmp(a->t, b->t, (size_t)a->n * sizeof(int32_t));
}

static struct dsv32_request req_of(const struct toks *p, uint32_t max_tokens) {
        return (struct dsv32_request){.struct_size = sizeof(struct dsv32_request), .tokens = p->t, .n_tokens = (size_t)p->n,
                                      .max_tokens = max_tokens, .flags = DSV32_REQ_IGNORE_EOS};
}

static void gen(dsv32_client *c, const struct dsv32_request *q, struct toks *out, struct dsv32_result *res) {
        struct dsv32_result tmp;
        out->n = 0;
        REQUIRE(dsv32_generate(c, q, collect_cb, out, res ? res : &tmp) == 0, "generate: %s", dsv32_last_error(c));
}

/* n requests submitted at once on one connection (they run in the same steps) */
static void gen_together(dsv32_client *c, const struct dsv32_request *q, int n, struct toks *out) {
        uint64_t id[N_CONC + 1];
        int done = 0;
        REQUIRE(n <= N_CONC + 1, "too many");
        for (int i = 0; i < n; i++) {
                out[i].n = 0;
                REQUIRE(dsv32_submit(c, &q[i], &id[i]) == 0, "submit %d: %s", i, dsv32_last_error(c));
        }
        while (done < n) {
                struct dsv32_event ev[16];
                int k;
                REQUIRE(dsv32_wait(c, 60000) == 1, "no event within 60 s");
                k = dsv32_poll_events(c, ev, 16);
                REQUIRE(k >= 0, "poll: %s", dsv32_last_error(c));
                for (int e = 0; e < k; e++) {
                        int i = 0;
                        while (i < n && id[i] != ev[e].id)
                                i++;
                        REQUIRE(i < n, "event for an unknown request %llu", (unsigned long long)ev[e].id);
                        REQUIRE(ev[e].type != DSV32_EVENT_ERROR, "request %d failed: %s", i, ev[e].message);
                        if (ev[e].type == DSV32_EVENT_TOKENS)
                                collect_cb(&out[i], ev[e].tokens, ev[e].n_tokens, NULL, 0);
                        else
                                done++;
                }
        }
}

static void make_mtp_model(void) {
        char cmd[1200];
        snprintf(mtp_model, sizeof(mtp_model), "%s/model-mtp", h_tmpdir());
        snprintf(cmd, sizeof(cmd), "'%s' --preset tiny --seed 3 --mtp-predictable --no-tokenizer --out '%s' >'%s/mkmodel-mtp.out'",
                 h_prog("dsv32-mkmodel"), mtp_model, h_tmpdir());
        REQUIRE(system(cmd) == 0, "%s", cmd);
}

static void test_concurrent(dsv32_client *on, dsv32_client *on3, dsv32_client *off) {
        static const uint32_t max_t[N_CONC] = {1, 2, 3, 17, 40, 33};
        struct toks p[N_CONC], a[N_CONC], b[N_CONC], x[N_CONC];
        struct dsv32_request q[N_CONC];
        for (int i = 0; i < N_CONC; i++) {
                prompt(&p[i], 3 + 29 * i, 100 + (uint64_t)i);
                q[i] = req_of(&p[i], max_t[i]);
        }
        gen_together(on, q, N_CONC, a);
        gen_together(on3, q, N_CONC, x);
        gen_together(off, q, N_CONC, b);
        for (int i = 0; i < N_CONC; i++) {
                CHECK(a[i].n == (int)max_t[i], "request %d: %d tokens, want %u", i, a[i].n, max_t[i]);
                CHECK(same(&a[i], &b[i]), "greedy, together, request %d: mtp-draft 2 and mtp off differ", i);
                CHECK(same(&x[i], &b[i]), "greedy, together, request %d: mtp-draft 3 and mtp off differ", i);
        }
}

/* the wire: DONE carries the request's drafts and acceptances, STATS the totals, and the
 * feature bit says whether speculation is on */
static void test_wire(dsv32_client *on, dsv32_client *off) {
        struct toks p, a, b;
        struct dsv32_request q;
        struct dsv32_result ra, rb;
        struct dsv32_stats son, soff;
        prompt(&p, 30, 21);
        q = req_of(&p, 24);
        gen(on, &q, &a, &ra);
        gen(off, &q, &b, &rb);
        CHECK(same(&a, &b), "wire test: outputs differ");
        CHECK(ra.spec_drafted > 0 && ra.spec_accepted <= ra.spec_drafted, "mtp on: DONE says %u drafted, %u accepted",
              ra.spec_drafted, ra.spec_accepted);
        CHECK(rb.spec_drafted == 0 && rb.spec_accepted == 0, "mtp off: DONE says %u drafted", rb.spec_drafted);
        REQUIRE(dsv32_stats(on, &son) == 0 && dsv32_stats(off, &soff) == 0, "stats");
        CHECK((son.features & DSV32_FEATURE_MTP) && !(soff.features & DSV32_FEATURE_MTP), "the MTP feature bit: on %#x, off %#x",
              son.features, soff.features);
        CHECK(son.spec_drafted_total >= ra.spec_drafted && son.spec_accepted_total >= ra.spec_accepted &&
                      son.spec_accepted_total <= son.spec_drafted_total,
              "STATS: %llu drafted, %llu accepted", (unsigned long long)son.spec_drafted_total,
              (unsigned long long)son.spec_accepted_total);
        CHECK(soff.spec_drafted_total == 0, "mtp off: STATS says %llu drafted", (unsigned long long)soff.spec_drafted_total);
        /* latency sums: every finished request counted, the first token after admission */
        CHECK(soff.requests_done_total >= 2 && soff.ttft_us_total >= soff.queue_us_total && soff.decode_tokens_total > 0 &&
                      soff.decode_us_total > 0,
              "STATS latency sums: %llu done, queue %llu us, ttft %llu us, decode %llu us over %llu tokens",
              (unsigned long long)soff.requests_done_total, (unsigned long long)soff.queue_us_total,
              (unsigned long long)soff.ttft_us_total, (unsigned long long)soff.decode_us_total,
              (unsigned long long)soff.decode_tokens_total);
}

/* a stop token that plain decoding meets at its 5th token ends the speculative run there */
static void test_stop(dsv32_client *on, dsv32_client *off) {
        struct toks p, a, b, full;
        struct dsv32_request q;
        struct dsv32_result ra, rb;
        prompt(&p, 40, 7);
        q = req_of(&p, 30);
        gen(off, &q, &full, NULL);
        REQUIRE(full.n == 30, "off: %d tokens", full.n);
        q.stop_tokens = &full.t[4];
        q.n_stop_tokens = 1;
        gen(on, &q, &a, &ra);
        gen(off, &q, &b, &rb);
        CHECK(same(&a, &b) && ra.finish == DSV32_FINISH_STOP && rb.finish == DSV32_FINISH_STOP && a.n <= 4,
              "stop token %d: mtp on %d tokens (finish %d), off %d tokens (finish %d)", full.t[4], a.n, ra.finish, b.n,
              rb.finish);
}

/* a session: the second turn reuses the first prompt's KV (and with reuse-output the
 * generated tokens' too); both daemons give the same tokens */
static void test_session(dsv32_client *on, dsv32_client *off) {
        for (int reuse = 0; reuse < 2; reuse++) {
                struct toks p, p2, a1, b1, a2, b2, a3, b3;
                struct dsv32_request q;
                struct dsv32_result ra, rb;
                const char *name = reuse ? "chat-reuse" : "chat";
                prompt(&p, 150, 11 + (uint64_t)reuse);
                q = req_of(&p, 20);
                q.session = name;
                gen(on, &q, &a1, NULL);
                gen(off, &q, &b1, NULL);
                CHECK(same(&a1, &b1), "session %s, turn 1: outputs differ", name);
                /* turn 2: the history, its output and a new message */
                p2 = p;
                memcpy(p2.t + p2.n, a1.t, (size_t)a1.n * sizeof(int32_t));
                p2.n += a1.n;
                for (int i = 0; i < 30; i++)
                        p2.t[p2.n++] = 50 + 7 * i;
                q = req_of(&p2, 25);
                q.session = name;
                if (reuse)
                        q.flags |= DSV32_REQ_REUSE_OUTPUT;
                gen(on, &q, &a2, &ra);
                gen(off, &q, &b2, &rb);
                CHECK(same(&a2, &b2), "session %s, turn 2: outputs differ", name);
                CHECK(ra.usage.cached_tokens > 0 && rb.usage.cached_tokens > 0, "session %s, turn 2: cached %u (on), %u (off)",
                      name, ra.usage.cached_tokens, rb.usage.cached_tokens);
                /* turn 3: a prompt that leaves the history inside turn 1's prompt */
                p2.n = 120;
                for (int i = 0; i < 10; i++)
                        p2.t[p2.n++] = 3000 + i;
                q = req_of(&p2, 15);
                q.session = name;
                gen(on, &q, &a3, NULL);
                gen(off, &q, &b3, NULL);
                CHECK(same(&a3, &b3), "session %s, turn 3 (a shorter history): outputs differ", name);
                CHECK(dsv32_session_close(on, name, NULL) == 0 && dsv32_session_close(off, name, NULL) == 0, "close %s", name);
        }
}

/* the prefix cache (on by default): prompts sharing 200 tokens (three full pages), the
 * same prompt again, a prompt that ends right after a cached page */
static void test_prefix(dsv32_client *on, dsv32_client *off) {
        struct toks base, p[4], a, b;
        uint32_t cached_on = 0;
        prompt(&base, 200, 99);
        for (int i = 0; i < 4; i++) {
                p[i] = base;
                for (int j = 0; j < 10 + i; j++)
                        p[i].t[p[i].n++] = 10 + 100 * i + j;
        }
        p[3].n = 130; /* two full pages and two tokens */
        for (int round = 0; round < 2; round++)
                for (int i = 0; i < 4; i++) {
                        struct dsv32_request q = req_of(&p[i], 24);
                        struct dsv32_result ra;
                        gen(on, &q, &a, &ra);
                        gen(off, &q, &b, NULL);
                        cached_on += ra.usage.cached_tokens;
                        CHECK(same(&a, &b), "prefix cache, round %d, prompt %d: outputs differ", round, i);
                }
        CHECK(cached_on > 0, "the MTP daemon never reused a cached page");
        fprintf(stderr, "prefix cache with MTP: %u prompt tokens reused over 8 requests\n", cached_on);
}

/* seeded sampling: the same tokens alone and among other requests (drafts do not depend
 * on the batch) */
static void test_seeded(dsv32_client *on) {
        struct toks p, alone, other[N_CONC + 1];
        struct dsv32_request q[N_CONC + 1];
        prompt(&p, 60, 5);
        q[0] = req_of(&p, 40);
        q[0].temperature = 0.9f;
        q[0].top_p = 0.95f;
        q[0].seed = 1234;
        q[0].flags |= DSV32_REQ_SEED;
        gen(on, &q[0], &alone, NULL);
        for (int i = 1; i <= N_CONC; i++)
                q[i] = req_of(&p, (uint32_t)(5 * i));
        gen_together(on, q, N_CONC + 1, other);
        CHECK(alone.n == 40 && same(&alone, &other[0]), "seeded sampling with MTP: %d tokens alone, %d among others, or differ",
              alone.n, other[0].n);
}

/* the acceptance the daemon logged (log-level debug) for its requests */
static void acceptance(const struct h_daemon *d, unsigned long *drafted, unsigned long *accepted, int *n_req) {
        FILE *f = fopen(d->log, "re");
        char line[1024];
        *drafted = *accepted = 0;
        *n_req = 0;
        REQUIRE(f, "open %s", d->log);
        while (fgets(line, sizeof(line), f)) {
                const char *m = strstr(line, "the MTP layer drafted ");
                unsigned a, b;
                if (m && sscanf(m, "the MTP layer drafted %u tokens, %u accepted", &a, &b) == 2) {
                        CHECK(b <= a, "accepted more than drafted: %s", line);
                        *drafted += a;
                        *accepted += b;
                        ++*n_req;
                }
        }
        fclose(f);
}

/* a session saved at shutdown (state-directory) and restored: its next turn on the MTP
 * daemon gives what a cold request gives on the plain one */
static void test_snapshot(dsv32_client *off) {
        char state[400];
        const char *args[] = {"--model", mtp_model, "--mtp", "on", "--state-directory", state, "--snapshot-interval", "0", NULL};
        struct h_daemon ds;
        struct toks p, p2, a, b;
        struct dsv32_request q;
        struct dsv32_result ra;
        dsv32_client *c;
        snprintf(state, sizeof(state), "%s/state", h_tmpdir());
        prompt(&p, 140, 21);
        h_daemon_start(&ds, args, NULL);
        c = connect_to(&ds);
        q = req_of(&p, 12);
        q.session = "saved";
        gen(c, &q, &a, NULL);
        dsv32_disconnect(c);
        REQUIRE(h_daemon_stop(&ds, 10) == 0, "dsv32d (state-directory) did not exit 0");
        h_daemon_start(&ds, args, NULL);
        c = connect_to(&ds);
        p2 = p;
        for (int i = 0; i < 20; i++)
                p2.t[p2.n++] = 700 + i;
        q = req_of(&p2, 20);
        gen(off, &q, &b, NULL);
        q.session = "saved";
        gen(c, &q, &a, &ra);
        CHECK(ra.usage.cached_tokens > 0, "restored session: nothing reused");
        CHECK(same(&a, &b), "restored session with MTP: the output differs from a cold run without MTP");
        dsv32_disconnect(c);
        REQUIRE(h_daemon_stop(&ds, 10) == 0, "dsv32d (state-directory) did not exit 0");
}

static void expect_refused(const char *const *args, const char *needle) {
        struct h_daemon d;
        int st;
        h_daemon_spawn(&d, args, NULL);
        REQUIRE(waitpid(d.pid, &st, 0) == d.pid, "waitpid");
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) != 0 && h_file_contains(d.log, needle),
              "dsv32d %s %s: exit status %d, its log lacks \"%s\"", args[0], args[1], WIFEXITED(st) ? WEXITSTATUS(st) : -1,
              needle);
}

int main(void) {
        const char *args_on[] = {"--model", NULL, "--mtp", "on", "--mtp-draft", "2", "--log-level", "debug", NULL};
        const char *args_on3[] = {"--model", NULL, "--mtp", "on", "--mtp-draft", "3", "--batch-tokens", "64", NULL};
        const char *args_off[] = {"--model", NULL, "--mtp", "off", "--log-level", "debug", NULL};
        static const char *const bad_on[] = {"--mtp", "on", NULL}; /* the harness's model has no MTP layer */
        static const char *const bad_mode[] = {"--mtp", "maybe", NULL};
        static const char *const bad_draft[] = {"--mtp-draft", "0", NULL};
        dsv32_client *on, *on3, *off;
        unsigned long drafted, accepted;
        int n_req;

        h_init("mtp", 900);
        make_mtp_model();
        args_on[1] = args_on3[1] = args_off[1] = mtp_model;
        h_daemon_start(&don, args_on, NULL);
        h_daemon_start(&don3, args_on3, NULL);
        h_daemon_start(&doff, args_off, NULL);
        CHECK(h_file_contains(don.log, "Speculative decoding with the checkpoint's MTP layer"), "mtp on: not said in the log");
        CHECK(h_file_contains(doff.log, "Speculative decoding off: mtp = off"), "mtp off: not said in the log");
        on = connect_to(&don);
        on3 = connect_to(&don3);
        off = connect_to(&doff);

        test_concurrent(on, on3, off);
        test_stop(on, off);
        test_session(on, off);
        test_prefix(on, off);
        test_seeded(on);
        test_snapshot(off);
        test_wire(on, off);

        dsv32_disconnect(on);
        dsv32_disconnect(on3);
        dsv32_disconnect(off);
        CHECK(h_daemon_stop(&don, 10) == 0 && h_daemon_stop(&don3, 10) == 0 && h_daemon_stop(&doff, 10) == 0,
              "dsv32d did not exit 0 on SIGTERM");
        acceptance(&don, &drafted, &accepted, &n_req);
        CHECK(n_req >= 20 && accepted > 0, "mtp on: %d requests speculated, %lu of %lu drafts accepted", n_req, accepted, drafted);
        fprintf(stderr, "mtp-draft 2: %d requests speculated, %lu of %lu drafts accepted (%.0f%%)\n", n_req, accepted, drafted,
                100.0 * (double)accepted / (double)(drafted ? drafted : 1));
        acceptance(&doff, &drafted, &accepted, &n_req);
        CHECK(n_req == 0, "mtp off: %d requests speculated", n_req);

        expect_refused(bad_on, "no MTP layer");
        expect_refused(bad_mode, "maybe");
        expect_refused(bad_draft, "mtp-draft");
        fprintf(stderr, "MTP in the daemon: greedy output identical with mtp on (drafts 2, 3) and off\n");
        return 0;
}
