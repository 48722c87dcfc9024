/* Logprobs end to end (GENERATE key 19, TOKENS keys 3..5) on the tiny model: for greedy
 * requests, each token's logprob and its top N alternatives equal an independent
 * log-softmax (in double) of the logits dsv32-run --dump-logits prints for the same prompt,
 * within 1e-5; the chosen token heads the list; the list is sorted (lower id first on
 * ties); N = 0 gives the chosen token's alone; N = 21 is refused by the library and, sent
 * raw, by the daemon, naming the field; a request batched with others gets the values it
 * gets alone; a stop string's tokens keep theirs; with the MTP layer drafting (a second
 * model, mtp on against mtp off) the values are those of plain decoding; WELCOME says the
 * daemon understands logprobs; dsv32 generate --logprobs prints the same values, and Ctrl-C
 * during it cancels with exit 130. */
#include "config.h"

#include <errno.h>
#include <signal.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client/dsv32.h"
#include "tests/ipc/harness.h"
#include "tests/ipc/raw.h"

#define N_GEN 12
#define MAXT 64

static struct h_daemon d;

/* What one request received: ids, logprobs and alternatives. */
struct lp_out {
        int32_t tok[MAXT];
        float lp[MAXT];
        int32_t top_id[MAXT][DSV32_MAX_TOP_LOGPROBS];
        float top_lp[MAXT][DSV32_MAX_TOP_LOGPROBS];
        size_t n_top; /* per token, as the events said */
        int n;
        bool want_lp; /* asked for logprobs: every token must come with one */
        char text[4096];
        size_t text_len;
        struct dsv32_event done;
};

static dsv32_client *connect_to(const struct h_daemon *dd) { /* h_connect, but a failure ends the test */
        dsv32_client *c = h_connect(dd);
        REQUIRE(c != NULL, "no connection to %s", dd->socket);
        return c;
}

/* Runs the submitted requests ids[0, n) to their end, filling out[i]. */
static void collect(dsv32_client *c, const uint64_t *ids, struct lp_out *out, int n) {
        int left = n;
        while (left > 0) {
                struct dsv32_event ev[8];
                int k = dsv32_poll_events(c, ev, 8);
                REQUIRE(k >= 0, "poll: %s", dsv32_last_error(c));
                if (k == 0)
                        REQUIRE(dsv32_wait(c, 60000) == 1, "no event in 60 s");
                for (int i = 0; i < k; i++) {
                        int j = 0;
                        while (j < n && ids[j] != ev[i].id)
                                j++;
                        REQUIRE(j < n, "an event of unknown request %llu", (unsigned long long)ev[i].id);
                        struct lp_out *o = &out[j];
                        if (ev[i].type == DSV32_EVENT_ERROR) {
                                REQUIRE(0, "request %d failed: %s", j, ev[i].message);
                        } else if (ev[i].type == DSV32_EVENT_DONE) {
                                o->done = ev[i];
                                left--;
                                continue;
                        }
                        CHECK(ev[i].n_tokens == 0 || !ev[i].logprobs == !o->want_lp, "request %d: %zu tokens, logprobs %s",
                              j, ev[i].n_tokens, ev[i].logprobs ? "given, not asked for" : "asked for, not given");
                        if (ev[i].n_tokens)
                                o->n_top = ev[i].n_top;
                        for (size_t t = 0; t < ev[i].n_tokens && o->n < MAXT; t++, o->n++) {
                                o->tok[o->n] = ev[i].tokens[t];
                                o->lp[o->n] = ev[i].logprobs ? ev[i].logprobs[t] : NAN;
                                for (size_t a = 0; a < ev[i].n_top && a < DSV32_MAX_TOP_LOGPROBS; a++) {
                                        o->top_id[o->n][a] = ev[i].top_tokens[t * ev[i].n_top + a];
                                        o->top_lp[o->n][a] = ev[i].top_logprobs[t * ev[i].n_top + a];
                                }
                        }
                        if (ev[i].text && o->text_len + ev[i].text_len < sizeof(o->text)) {
                                memcpy(o->text + o->text_len, ev[i].text, ev[i].text_len);
                                o->text_len += ev[i].text_len;
                        }
                }
        }
}

static void run_one(dsv32_client *c, const struct dsv32_request *q, struct lp_out *o) {
        uint64_t id;
        memset(o, 0, sizeof(*o));
        o->want_lp = q->flags & DSV32_REQ_LOGPROBS;
        REQUIRE(dsv32_submit(c, q, &id) == 0, "submit: %s", dsv32_last_error(c));
        collect(c, &id, o, 1);
}

static void make_prompt(int i, int32_t *p, int *n) {
        *n = 3 + (i * 5) % 17;
        p[0] = 0; /* BOS */
        for (int k = 1; k < *n; k++)
                p[k] = 2 + (int32_t)((i * 613 + k * 97) % 4000);
}

/* The reference: dsv32-run's logits of the prompt, log-softmax in double, and the top n_top
 * by a full sort. Checks o (greedy) against it. */
static void check_against_dump(const int32_t *prompt, int n_prompt, const struct lp_out *o, int vocab, size_t n_top,
                               const char *what) {
        int32_t ref[N_GEN];
        char path[400];
        float *row = malloc((size_t)vocab * sizeof(float));
        double worst = 0;
        FILE *f;

        REQUIRE(row, "out of memory");
        snprintf(path, sizeof(path), "%s/logits-%s.f32", h_tmpdir(), what);
        REQUIRE(h_reference_dump(prompt, n_prompt, N_GEN, ref, NULL, path) == N_GEN, "dsv32-run --dump-logits");
        REQUIRE(o->n == N_GEN, "%s: %d tokens, want %d", what, o->n, N_GEN);
        f = fopen(path, "rb");
        REQUIRE(f, "open %s", path);
        REQUIRE(fseek(f, (long)(n_prompt - 1) * vocab * (long)sizeof(float), SEEK_SET) == 0, "seek %s", path);
        for (int g = 0; g < N_GEN; g++) {
                double mx = -INFINITY, sum = 0, lse;
                REQUIRE(fread(row, sizeof(float), (size_t)vocab, f) == (size_t)vocab, "%s: row %d", path, n_prompt - 1 + g);
                for (int i = 0; i < vocab; i++)
                        mx = fmax(mx, row[i]);
                for (int i = 0; i < vocab; i++)
                        sum += exp((double)row[i] - mx);
                lse = mx + log(sum);
                CHECK(o->tok[g] == ref[g], "%s: token %d is %d, dsv32-run says %d", what, g, o->tok[g], ref[g]);
                CHECK(fabs(o->lp[g] - (row[o->tok[g]] - lse)) < 1e-5, "%s: token %d (%d): logprob %.8f, log-softmax %.8f", what,
                      g, o->tok[g], o->lp[g], row[o->tok[g]] - lse);
                worst = fmax(worst, fabs(o->lp[g] - (row[o->tok[g]] - lse)));
                CHECK(o->n_top == n_top, "%s: %zu alternatives per token, asked %zu", what, o->n_top, n_top);
                for (size_t a = 0; a < o->n_top; a++) {
                        /* the a-th best of the row: more than a ids beat it only if it is not */
                        int32_t id = o->top_id[g][a];
                        int better = 0;
                        REQUIRE(id >= 0 && id < vocab, "%s: alternative id %d", what, id);
                        for (int i = 0; i < vocab; i++)
                                better += row[i] > row[id] || (row[i] == row[id] && i < id);
                        CHECK(better == (int)a, "%s: token %d: alternative %zu is id %d, the %d-th most likely", what, g, a,
                              id, better);
                        CHECK(fabs(o->top_lp[g][a] - (row[id] - lse)) < 1e-5, "%s: token %d: alternative %d: %.8f vs %.8f",
                              what, g, id, o->top_lp[g][a], row[id] - lse);
                        worst = fmax(worst, fabs(o->top_lp[g][a] - (row[id] - lse)));
                        if (a > 0)
                                CHECK(o->top_lp[g][a] <= o->top_lp[g][a - 1], "%s: token %d: the list is not sorted at %zu",
                                      what, g, a);
                }
                if (o->n_top)
                        CHECK(o->top_id[g][0] == o->tok[g] && o->top_lp[g][0] == o->lp[g],
                              "%s: token %d: greedy token %d is not first of the list (%d)", what, g, o->tok[g],
                              o->top_id[g][0]);
        }
        fclose(f);
        free(row);
        fprintf(stderr, "%s: %d tokens, %zu alternatives each: largest difference from dsv32-run's log-softmax %.3g\n", what,
                N_GEN, n_top, worst);
}

/* log-softmax (double) of row `row` of a --dump-logits file at token id. */
static double dump_lp(const char *what, int row, int vocab, int32_t id) {
        char path[400];
        float *v = malloc((size_t)vocab * sizeof(float));
        double mx = -INFINITY, sum = 0, r;
        FILE *f;
        snprintf(path, sizeof(path), "%s/logits-%s.f32", h_tmpdir(), what);
        REQUIRE(v && (f = fopen(path, "rb")), "open %s", path);
        REQUIRE(fseek(f, (long)row * vocab * (long)sizeof(float), SEEK_SET) == 0 &&
                        fread(v, sizeof(float), (size_t)vocab, f) == (size_t)vocab,
                "%s: row %d", path, row);
        fclose(f);
        for (int i = 0; i < vocab; i++)
                mx = fmax(mx, v[i]);
        for (int i = 0; i < vocab; i++)
                sum += exp((double)v[i] - mx);
        r = v[id] - mx - log(sum);
        free(v);
        return r;
}

static bool same_out(const struct lp_out *a, const struct lp_out *b) {
        if (a->n != b->n || a->n_top != b->n_top)
                return false;
        for (int g = 0; g < a->n; g++) {
                if (a->tok[g] != b->tok[g] || a->lp[g] != b->lp[g])
                        return false;
                for (size_t k = 0; k < a->n_top; k++)
                        if (a->top_id[g][k] != b->top_id[g][k] || a->top_lp[g][k] != b->top_lp[g][k])
                                return false;
        }
        return true;
}

/* Largest logprob difference of two outputs with the same tokens (INFINITY if they differ). */
static double diff_out(const struct lp_out *a, const struct lp_out *b) {
        double w = 0;
        if (a->n != b->n || a->n_top != b->n_top)
                return INFINITY;
        for (int g = 0; g < a->n; g++) {
                if (a->tok[g] != b->tok[g])
                        return INFINITY;
                w = fmax(w, fabs(a->lp[g] - b->lp[g]));
                for (size_t k = 0; k < a->n_top; k++) {
                        if (a->top_id[g][k] != b->top_id[g][k])
                                return INFINITY;
                        w = fmax(w, fabs(a->top_lp[g][k] - b->top_lp[g][k]));
                }
        }
        return w;
}

static void test_reference(void) {
        dsv32_client *c = connect_to(&d);
        struct dsv32_info info;
        static struct lp_out o;
        int32_t prompt[32];
        int n_prompt;
        struct dsv32_request q = {.struct_size = sizeof(q), .max_tokens = N_GEN,
                                  .flags = DSV32_REQ_IGNORE_EOS | DSV32_REQ_LOGPROBS, .top_logprobs = 5};

        REQUIRE(dsv32_get_info(c, &info) == 0, "info: %s", dsv32_last_error(c));
        CHECK(info.features & DSV32_FEATURE_LOGPROBS, "WELCOME features 0x%x lack DSV32_FEATURE_LOGPROBS", info.features);
        make_prompt(1, prompt, &n_prompt);
        q.tokens = prompt;
        q.n_tokens = (size_t)n_prompt;
        run_one(c, &q, &o);
        check_against_dump(prompt, n_prompt, &o, info.vocab_size, 5, "top 5");
        q.top_logprobs = 20;
        run_one(c, &q, &o);
        check_against_dump(prompt, n_prompt, &o, info.vocab_size, 20, "top 20");
        q.top_logprobs = 0;
        run_one(c, &q, &o);
        check_against_dump(prompt, n_prompt, &o, info.vocab_size, 0, "top 0");
        /* not streamed: one TOKENS record before DONE, the same values */
        {
                static struct lp_out ns;
                q.flags |= DSV32_REQ_NO_STREAM;
                run_one(c, &q, &ns);
                CHECK(same_out(&o, &ns), "not streamed: the logprobs differ from streamed ones");
                q.flags &= ~DSV32_REQ_NO_STREAM;
        }
        /* the raw distribution, not the sampled one: a logit bias of +100 forces the least
         * likely of the top 5, and a temperature of 0.3 changes nothing in the values */
        {
                static struct lp_out biased;
                struct dsv32_logit_bias bias = {0, 100};
                double want;
                q.top_logprobs = 5;
                run_one(c, &q, &o);
                bias.token = o.top_id[0][4];
                want = dump_lp("top 5", n_prompt - 1, info.vocab_size, bias.token);
                q.logit_bias = &bias;
                q.n_logit_bias = 1;
                q.temperature = 0.3f;
                q.flags |= DSV32_REQ_SEED;
                run_one(c, &q, &biased);
                CHECK(biased.n == N_GEN && biased.tok[0] == bias.token && fabs(biased.lp[0] - want) < 1e-5 &&
                              biased.top_id[0][4] == bias.token && biased.top_lp[0][0] == o.top_lp[0][0],
                      "logit bias +100 on token %d at T 0.3: first token %d, logprob %.6f (raw log-softmax %.6f)", bias.token,
                      biased.tok[0], biased.lp[0], want);
                q.logit_bias = NULL;
                q.n_logit_bias = 0;
                q.temperature = 0;
                q.flags &= ~DSV32_REQ_SEED;
                q.top_logprobs = 0;
        }
        /* without DSV32_REQ_LOGPROBS: none */
        q.flags &= ~DSV32_REQ_LOGPROBS;
        q.top_logprobs = 5;
        run_one(c, &q, &o);
        CHECK(o.n == N_GEN && isnan(o.lp[0]) && o.n_top == 0, "a request without logprobs got some");
        /* N = 21 */
        q.flags |= DSV32_REQ_LOGPROBS;
        q.top_logprobs = 21;
        {
                uint64_t id;
                int r = dsv32_submit(c, &q, &id);
                CHECK(r == -EINVAL && strstr(dsv32_last_error(c), "top_logprobs"), "top_logprobs 21: %d %s", r,
                      dsv32_last_error(c));
        }
        dsv32_disconnect(c);
}

/* The daemon's own check of key 19, through a raw client (the library refuses first). */
static void test_raw_refusal(void) {
        static const int32_t prompt[] = {0, 5, 6};
        struct h_raw raw;
        struct dsv_msg m = {.type = DSV_MSG_GENERATE};
        h_raw_open(&raw, d.socket, 65536, 65536, "raw-logprobs");
        m.u.generate.id = 7;
        m.u.generate.tokens = prompt;
        m.u.generate.n_tokens = 3;
        m.u.generate.max_tokens = 2;
        m.u.generate.top_p = 1;
        m.u.generate.repetition_penalty = 1;
        m.u.generate.has_logprobs = true;
        m.u.generate.logprobs = 21;
        bool got = false;
        h_raw_write_msg(&raw, &m, 0);
        for (uint64_t t0 = h_now_ns(); h_now_ns() - t0 < 20000000000ull;) {
                uint8_t buf[4096];
                struct dsv_ipc_record h;
                struct dsv_msg x;
                int k = dsv_ring_read(&raw.shm.comp, &h, buf, sizeof(buf));
                if (k <= 0) {
                        usleep(1000);
                        continue;
                }
                REQUIRE(dsv_msg_decode(h.type, buf, h.length, &x, NULL, 0) == 0, "a bad record");
                REQUIRE(h.type == DSV_MSG_ERROR, "GENERATE with logprobs 21: record type %u, not ERROR", h.type);
                CHECK(x.u.error.code == EINVAL && x.u.error.message_len && memmem(x.u.error.message, x.u.error.message_len, "logprobs 21", 11),
                      "GENERATE with logprobs 21: error %d %.*s", x.u.error.code, (int)x.u.error.message_len,
                      x.u.error.message ? x.u.error.message : "");
                dsv_msg_release(&x);
                got = true;
                break;
        }
        CHECK(got, "GENERATE with logprobs 21: no answer in 20 s");
        h_raw_close(&raw);
}

/* A request among others (submitted together, so they share steps) gets the values it gets
 * alone; so does a sampled one (seeded). */
static void test_batched(void) {
        dsv32_client *c = connect_to(&d);
        static struct lp_out alone[2], together[6];
        int32_t prompts[6][32];
        int n_prompt[6];
        struct dsv32_request q[6];
        uint64_t ids[6];
        double worst = 0;

        for (int i = 0; i < 6; i++) {
                make_prompt(10 + i, prompts[i], &n_prompt[i]);
                q[i] = (struct dsv32_request){.struct_size = sizeof(q[i]), .tokens = prompts[i], .n_tokens = (size_t)n_prompt[i],
                                              .max_tokens = N_GEN + (uint32_t)i, .flags = DSV32_REQ_IGNORE_EOS,
                                              .top_logprobs = (uint32_t)(i * 3)};
                if (i < 2)
                        q[i].flags |= DSV32_REQ_LOGPROBS | (i == 1 ? DSV32_REQ_SEED : 0);
                if (i == 1) {
                        q[i].temperature = 0.8f;
                        q[i].seed = 42;
                }
        }
        for (int i = 0; i < 2; i++)
                run_one(c, &q[i], &alone[i]);
        memset(together, 0, sizeof(together));
        for (int i = 0; i < 6; i++)
                together[i].want_lp = q[i].flags & DSV32_REQ_LOGPROBS;
        for (int i = 0; i < 6; i++)
                REQUIRE(dsv32_submit(c, &q[i], &ids[i]) == 0, "submit %d: %s", i, dsv32_last_error(c));
        collect(c, ids, together, 6);
        for (int i = 0; i < 2; i++) {
                double w = diff_out(&alone[i], &together[i]);
                CHECK(w < 1e-5, "request %d (%s): logprobs among 5 others differ from alone by %g", i,
                      i ? "sampled" : "greedy", w);
                worst = fmax(worst, w);
                CHECK(alone[i].n == N_GEN + i && alone[i].n_top == (size_t)(i * 3), "request %d: %d tokens, %zu alternatives",
                      i, alone[i].n, alone[i].n_top);
        }
        for (int i = 2; i < 6; i++)
                CHECK(together[i].n == N_GEN + i && isnan(together[i].lp[0]), "request %d without logprobs: %d tokens", i,
                      together[i].n);
        fprintf(stderr, "batched: alone and among 5 others differ by at most %g\n", worst);
        dsv32_disconnect(c);
}

/* With the MTP layer drafting (tokens decided on verify rows), the values of plain decoding. */
static void test_mtp(void) {
        static struct h_daemon on, off;
        static struct lp_out a, b;
        char model[400], cmd[1200];
        int32_t prompt[32];
        int n_prompt;
        dsv32_client *ca, *cb;
        double w;

        snprintf(model, sizeof(model), "%s/model-mtp", h_tmpdir());
        snprintf(cmd, sizeof(cmd), "'%s' --preset tiny --seed 3 --mtp-predictable --no-tokenizer --out '%s' >'%s/mkmodel-mtp.out'",
                 h_prog("dsv32-mkmodel"), model, h_tmpdir());
        REQUIRE(system(cmd) == 0, "%s", cmd);
        {
                const char *args_on[] = {"--model", model, "--mtp", "on", "--mtp-draft", "2", NULL};
                const char *args_off[] = {"--model", model, "--mtp", "off", NULL};
                h_daemon_start(&on, args_on, NULL);
                h_daemon_start(&off, args_off, NULL);
        }
        ca = connect_to(&on);
        cb = connect_to(&off);
        make_prompt(3, prompt, &n_prompt);
        struct dsv32_request q = {.struct_size = sizeof(q), .tokens = prompt, .n_tokens = (size_t)n_prompt, .max_tokens = 40,
                                  .flags = DSV32_REQ_IGNORE_EOS | DSV32_REQ_LOGPROBS, .top_logprobs = 4};
        uint64_t id;
        memset(&a, 0, sizeof(a));
        a.want_lp = true;
        REQUIRE(dsv32_submit(ca, &q, &id) == 0, "submit: %s", dsv32_last_error(ca));
        collect(ca, &id, &a, 1);
        run_one(cb, &q, &b);
        w = diff_out(&a, &b);
        CHECK(a.done.spec_drafted > 0, "mtp on: nothing was drafted (%u)", a.done.spec_drafted);
        CHECK(a.n == 40 && w < 1e-5, "mtp on (%u drafted, %u accepted): %d tokens, logprobs differ from mtp off by %g",
              a.done.spec_drafted, a.done.spec_accepted, a.n, w);
        fprintf(stderr, "mtp: %u drafted, %u accepted; logprobs differ from plain decoding by at most %g\n",
                a.done.spec_drafted, a.done.spec_accepted, w);
        dsv32_disconnect(ca);
        dsv32_disconnect(cb);
        CHECK(h_daemon_stop(&on, 10) == 0 && h_daemon_stop(&off, 10) == 0, "the mtp daemons did not exit 0");
}

/* A stop string: every token delivered (the one that completed the string included) has
 * its logprob, equal to the same position's without the stop string. */
static void test_stop_string(void) {
        dsv32_client *c = connect_to(&d);
        static struct lp_out full, cut;
        struct dsv32_info info;
        struct dsv32_request q = {.struct_size = sizeof(q), .text = "The quick brown fox", .max_tokens = 24,
                                  .flags = DSV32_REQ_IGNORE_EOS | DSV32_REQ_LOGPROBS, .top_logprobs = 2};
        char stop[8];
        const char *stops[1] = {stop};

        REQUIRE(dsv32_get_info(c, &info) == 0, "info");
        if (!(info.features & DSV32_FEATURE_TEXT)) {
                dsv32_disconnect(c);
                return;
        }
        run_one(c, &q, &full);
        REQUIRE(full.n == 24 && full.text_len > 12, "full: %d tokens, %zu bytes", full.n, full.text_len);
        memcpy(stop, full.text + full.text_len / 2, 2);
        stop[2] = 0;
        q.stop_strings = stops;
        q.n_stop_strings = 1;
        run_one(c, &q, &cut);
        CHECK(cut.done.finish == DSV32_FINISH_STOP_STRING, "finish %d", cut.done.finish);
        CHECK(cut.n > 0 && cut.n < 24, "cut: %d tokens", cut.n);
        for (int g = 0; g < cut.n; g++)
                CHECK(cut.tok[g] == full.tok[g] && cut.lp[g] == full.lp[g] && cut.top_id[g][1] == full.top_id[g][1],
                      "stop string: token %d: %d %.6f, without it %d %.6f", g, cut.tok[g], cut.lp[g], full.tok[g], full.lp[g]);
        fprintf(stderr, "stop string \"%s\": %d tokens delivered, each with its logprob (%zu bytes of text of %zu)\n", stop,
                cut.n, cut.text_len, full.text_len);
        dsv32_disconnect(c);
}

/* dsv32 generate --logprobs N: one line per token, "ID LOGPROB ID:LOGPROB...", the values
 * the library hands out (printed with 6 decimals); --json has them as numbers. */
static void test_cli(void) {
        dsv32_client *c = connect_to(&d);
        static struct lp_out o;
        static const int32_t prompt[] = {0, 21, 22, 23};
        struct dsv32_request q = {.struct_size = sizeof(q), .tokens = prompt, .n_tokens = 4, .max_tokens = 6,
                                  .flags = DSV32_REQ_IGNORE_EOS | DSV32_REQ_LOGPROBS, .top_logprobs = 3};
        char cmd[1200], line[512];
        int g = 0;
        FILE *f;

        run_one(c, &q, &o);
        dsv32_disconnect(c);
        snprintf(cmd, sizeof(cmd), "'%s' generate --socket '%s' --tokens 0,21,22,23 --max-tokens 6 --ignore-eos --logprobs 3",
                 h_prog("dsv32"), d.socket);
        REQUIRE((f = popen(cmd, "r")), "%s", cmd);
        while (fgets(line, sizeof(line), f)) {
                char want[512];
                int k;
                REQUIRE(g < o.n, "dsv32 generate --logprobs: more lines than the %d tokens: %s", o.n, line);
                k = snprintf(want, sizeof(want), "%d %.6f", o.tok[g], (double)o.lp[g]);
                for (size_t a = 0; a < 3; a++)
                        k += snprintf(want + k, sizeof(want) - (size_t)k, " %d:%.6f", o.top_id[g][a], (double)o.top_lp[g][a]);
                snprintf(want + k, sizeof(want) - (size_t)k, "\n");
                CHECK(!strcmp(line, want), "dsv32 generate --logprobs 3, token %d: '%s', want '%s'", g, line, want);
                g++;
        }
        CHECK(pclose(f) == 0 && g == 6, "%s: exit status, %d lines", cmd, g);
        snprintf(cmd, sizeof(cmd), "'%s' generate --socket '%s' --tokens 0,21,22,23 --max-tokens 6 --ignore-eos --logprobs 3 --json",
                 h_prog("dsv32"), d.socket);
        REQUIRE((f = popen(cmd, "r")), "%s", cmd);
        {
                char all[16384];
                size_t n = fread(all, 1, sizeof(all) - 1, f);
                char want[64];
                all[n] = 0;
                snprintf(want, sizeof(want), ",[%d,", o.top_id[0][1]);
                CHECK(pclose(f) == 0 && strstr(all, "\"logprobs\":[") && strstr(all, "\"top_logprobs\":[[[") && strstr(all, want),
                      "dsv32 generate --logprobs 3 --json: %s", all);
        }
        /* Ctrl-C while it streams: the request is cancelled, exit 130 (as without --logprobs) */
        {
                char out[400];
                pid_t pid;
                int st, lines = 0;
                snprintf(out, sizeof(out), "%s/sigint.out", h_tmpdir());
                pid = fork();
                REQUIRE(pid >= 0, "fork");
                if (pid == 0) {
                        REQUIRE(freopen(out, "w", stdout), "%s", out);
                        execl(h_prog("dsv32"), "dsv32", "generate", "--socket", d.socket, "--tokens", "0,5", "--max-tokens",
                              "2000", "--ignore-eos", "--logprobs", "2", (char *)NULL);
                        _exit(127);
                }
                for (int t = 0; t < 600 && lines < 3; t++) {
                        usleep(50000);
                        lines = 0;
                        if ((f = fopen(out, "r"))) {
                                while (fgets(line, sizeof(line), f))
                                        lines++;
                                fclose(f);
                        }
                }
                CHECK(lines >= 3, "dsv32 generate --logprobs: %d lines after 30 s", lines);
                kill(pid, SIGINT);
                REQUIRE(waitpid(pid, &st, 0) == pid, "waitpid");
                CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 130, "Ctrl-C during dsv32 generate --logprobs: status 0x%x", st);
        }
        fprintf(stderr, "dsv32 generate --logprobs 3: the library's values, line by line; Ctrl-C exits 130\n");
}

int main(void) {
        h_init("logprobs", 600);
        h_daemon_start(&d, NULL, NULL);
        H_PART(test_reference);
        H_PART(test_raw_refusal);
        H_PART(test_batched);
        H_PART(test_stop_string);
        H_PART(test_cli);
        H_PART(test_mtp);
        CHECK(h_daemon_stop(&d, 10) == 0, "dsv32d did not exit 0 on SIGTERM");
        return test_failures ? 1 : 0;
}
