/* The engine's core (daemon/engine/core.h) over a fake executor: admission, batching,
 * chunking, sessions, cancellation, parked streams and stop rules, without a model. The
 * fake checks every batch with the forward pass's own plan (daemon/model/plan.c) and
 * answers with logits whose greedy token is a known function of (token, position), so
 * every expected output is computed here independently. The KV pool is a real one (pages
 * are the resource being scheduled): the prefix cache, preemption (every preempted request
 * ends with the output it has alone), priorities and fairness across uids are checked on it.
 * The whole suite runs twice: plainly, and with a fake MTP layer (speculative decoding,
 * draft.c) whose drafts are right except at every fifth position, so every output above must
 * come out the same through drafts, rejections, rollbacks, preemptions and KV reuse; the
 * fake checks that each MTP row gets the hidden state of its own position and follows the
 * sequence's records (mtp_len). */
#include "config.h"

#include "daemon/engine/core.h"
#include "daemon/model_config.h"
#include "tests/check.h"

#define V 97
#define EOS 1

/* ------------------------------------------------------------------ fake executor */

static int n_forward, max_batch_tokens, n_forward_fail, n_mtp;
static bool fail_next, fail_mtp_next;
#define HD 4 /* the fake hidden size: element 0 is the position the state stands for */

static int32_t next_token(int32_t tok, int pos) { return (int32_t)(2 + (tok * 31 + pos * 7) % (V - 2)); }

/* placement(): the core's pools; every sequence of a batch must hold pages of its own rank's
 * pool only (each page held there), and the tokens each rank ran are counted */
static struct dsv_kv_pool **fake_pools;
static int fake_n_pools;
static long rank_tokens[4];

static void check_ranks(const struct dsv_batch *b) {
        for (int s = 0; s < b->n_seqs && fake_pools; s++) {
                const struct dsv_kv_seq *q = b->seqs[s];
                REQUIRE(q->rank >= 0 && q->rank < fake_n_pools, "a sequence on rank %d of %d", q->rank, fake_n_pools);
                for (int i = 0; i < q->n_pages; i++)
                        REQUIRE(q->pages[i] >= 0 && q->pages[i] < fake_pools[q->rank]->n_pages &&
                                        fake_pools[q->rank]->page[q->pages[i]].ref > 0,
                                "sequence %d on rank %d: page %d is not held in that rank's pool", s, q->rank, q->pages[i]);
        }
        for (int i = 0; i < b->n_tokens && fake_pools; i++)
                rank_tokens[b->seqs[b->seq[i]]->rank]++;
}

static int fake_forward(void *ud, const struct dsv_batch *b, float *logits, float *hidden, struct dsv_error *err) {
        struct dsv_batch_plan p;
        int r = dsv_batch_plan_make(b, DSV_KV_PAGE_TOKENS, V, &p, err);
        REQUIRE(r == 0, "the core built an invalid batch: %s", err->msg);
        check_ranks(b);
        n_forward++;
        max_batch_tokens = MAX(max_batch_tokens, b->n_tokens);
        if (fail_next) {
                fail_next = false;
                n_forward_fail++;
                dsv_batch_plan_done(&p);
                return dsv_error_set(err, EIO, "injected failure");
        }
        for (int i = 0, k = 0; i < b->n_tokens; i++) {
                if (b->want_logits && !b->want_logits[i])
                        continue;
                float *row = logits + (size_t)k++ * V;
                for (int j = 0; j < V; j++)
                        row[j] = 0;
                row[next_token(b->token[i], b->pos[i])] = 1;
        }
        for (int i = 0; hidden && i < b->n_tokens; i++) {
                memset(hidden + (size_t)i * HD, 0, HD * sizeof(float));
                hidden[(size_t)i * HD] = (float)b->pos[i];
        }
        for (int s = 0; s < b->n_seqs; s++)
                b->seqs[s]->len += p.count[s];
        dsv_batch_plan_done(&p);
        return 0;
}

/* The fake MTP layer: row p (token t at p + 1, the state of p) drafts next_token(t, p + 1),
 * the right token, except at positions p % 5 == 4, where it drafts another one. Its rows
 * must continue each sequence's records (mtp_len), as the real layer's plan demands. */
static int32_t fake_draft(int32_t tok, int pos) {
        int32_t t = next_token(tok, pos + 1);
        return pos % 5 == 4 ? (int32_t)(2 + (t - 2 + 1) % (V - 2)) : t;
}

static int fake_mtp(void *ud, const struct dsv_batch *b, const float *hin, float *logits, float *hout, struct dsv_error *err) {
        struct dsv_kv_seq *shadow = calloc((size_t)b->n_seqs, sizeof(*shadow));
        struct dsv_kv_seq **sp = calloc((size_t)b->n_seqs, sizeof(*sp));
        bool *dec = calloc((size_t)b->n_seqs, sizeof(*dec));
        struct dsv_batch mb = *b;
        struct dsv_batch_plan p;
        int r;
        REQUIRE(shadow && sp && dec, "oom");
        for (int s = 0; s < b->n_seqs; s++) {
                shadow[s] = *b->seqs[s];
                shadow[s].len = b->seqs[s]->mtp_len;
                sp[s] = &shadow[s];
                dec[s] = true;
        }
        mb.seqs = sp;
        mb.as_decode = dec;
        r = dsv_batch_plan_make(&mb, DSV_KV_PAGE_TOKENS, V, &p, err);
        REQUIRE(r == 0, "the core built an invalid MTP batch: %s", err->msg);
        n_mtp++;
        if (fail_mtp_next) {
                fail_mtp_next = false;
                free(shadow);
                free(sp);
                free(dec);
                dsv_batch_plan_done(&p);
                return dsv_error_set(err, EIO, "injected MTP failure");
        }
        for (int i = 0, k = 0; i < b->n_tokens; i++) {
                REQUIRE(hin[(size_t)i * HD] == (float)b->pos[i], "MTP row at position %d got the hidden state of position %g",
                        b->pos[i], hin[(size_t)i * HD]);
                if (hout) {
                        memset(hout + (size_t)i * HD, 0, HD * sizeof(float));
                        hout[(size_t)i * HD] = (float)(b->pos[i] + 1);
                }
                if (b->want_logits && !b->want_logits[i])
                        continue;
                float *row = logits + (size_t)k++ * V;
                for (int j = 0; j < V; j++)
                        row[j] = 0;
                row[fake_draft(b->token[i], b->pos[i])] = 1;
        }
        for (int s = 0; s < b->n_seqs; s++)
                b->seqs[s]->mtp_len += p.count[s];
        dsv_batch_plan_done(&p);
        free(shadow);
        free(sp);
        free(dec);
        return 0;
}

/* ------------------------------------------------------------------ fake sink */

struct client {
        bool gone, full;
        int refs, ended;
        int32_t ids[4096];
        int n_ids;
        char text[64];
        int n_done, n_error, n_session;
        struct dsv_engine_event last; /* DONE/ERROR/SESSION */
        char error[512];
        /* the last SESSION_LIST: each row's name and rank */
        char list_name[8][DSV_ENGINE_NAME_MAX + 1];
        int list_rank[8], n_list;
};

static int sink_emit(void *ud, void *cl, const struct dsv_engine_event *ev) {
        struct client *c = cl;
        if (c->full)
                return -EAGAIN;
        switch (ev->type) {
        case DSV_ENGINE_EVENT_TOKENS:
                for (uint32_t i = 0; i < ev->tokens.n; i++)
                        c->ids[c->n_ids++] = ev->tokens.ids[i];
                *ev->tokens.text_sent = ev->tokens.text_len;
                return (int)ev->tokens.n;
        case DSV_ENGINE_EVENT_DONE:
                c->n_done++;
                break;
        case DSV_ENGINE_EVENT_ERROR:
                c->n_error++;
                snprintf(c->error, sizeof(c->error), "%s", ev->error.message);
                break;
        case DSV_ENGINE_EVENT_SESSION:
                c->n_session++;
                break;
        case DSV_ENGINE_EVENT_SESSION_LIST:
                c->n_list = 0;
                for (uint32_t i = 0; i < ev->session_list.n && i < 8; i++, c->n_list++) {
                        snprintf(c->list_name[i], sizeof(c->list_name[i]), "%s", ev->session_list.rows[i].name);
                        c->list_rank[i] = ev->session_list.rows[i].rank;
                }
                break;
        default:
                break;
        }
        c->last = *ev;
        return 0;
}
static bool sink_gone(void *ud, void *cl) { return ((struct client *)cl)->gone; }
static void sink_ref(void *ud, void *cl) { ((struct client *)cl)->refs++; }
static void sink_unref(void *ud, void *cl) { ((struct client *)cl)->refs--; }
static void sink_end(void *ud, void *cl) { ((struct client *)cl)->ended++; }

static const struct dsv_engine_sink sink = {
        .emit = sink_emit, .gone = sink_gone, .ref = sink_ref, .unref = sink_unref, .request_end = sink_end};

/* ------------------------------------------------------------------ helpers */

static uid_t cur_uid = 1000;

static struct dsv_engine_request *gen(struct client *c, uint64_t id, const int32_t *prompt, int n, uint32_t max_tokens) {
        struct dsv_engine_request *r = calloc(1, sizeof(*r));
        REQUIRE(r, "oom");
        r->client = c;
        c->refs++;
        r->uid = cur_uid;
        r->id = id;
        r->kind = DSV_REQUEST_GENERATE;
        r->tokens = malloc((size_t)n * sizeof(int32_t));
        REQUIRE(r->tokens, "oom");
        memcpy(r->tokens, prompt, (size_t)n * sizeof(int32_t));
        r->n_tokens = (uint32_t)n;
        r->max_tokens = max_tokens;
        r->stream = true;
        r->ignore_eos = true;
        r->sampling.top_p = 1.0f; /* temperature 0: greedy */
        r->t_submit_ns = dsv_now_ns();
        return r;
}

static struct dsv_engine_request *sess_op(struct client *c, uint64_t id, enum dsv_request_kind k, const char *name, uint32_t fl) {
        struct dsv_engine_request *r = calloc(1, sizeof(*r));
        REQUIRE(r, "oom");
        r->client = c;
        c->refs++;
        r->uid = 1000;
        r->id = id;
        r->kind = k;
        snprintf(r->session, sizeof(r->session), "%s", name);
        r->session_flags = fl;
        return r;
}

/* the greedy continuation of prompt, computed independently */
static void expect(const int32_t *prompt, int n, int gen_n, int32_t *out) {
        int32_t t = prompt[n - 1];
        for (int g = 0; g < gen_n; g++) {
                out[g] = next_token(t, n - 1 + g);
                t = out[g];
        }
}

static void run(struct dsv_core *c, int max_steps) {
        for (int i = 0; i < max_steps && !dsv_core_idle(c); i++)
                dsv_core_step(c);
}

static void prompt_of(int32_t *p, int n, int seed) {
        for (int i = 0; i < n; i++)
                p[i] = (int32_t)(2 + (seed * 13 + i * 5) % (V - 2));
}

static void suite(bool mtp) {
        struct dsv_model_config cfg;
        struct dsv_error err = {{0}};
        struct dsv_backend *be;
        struct dsv_kv_pool *kv;
        struct dsv_metrics_live metrics;
        struct dsv_core core;
        struct dsv_exec ex = {.forward = fake_forward, .mtp = mtp ? fake_mtp : NULL};
        struct dsv_core_params prm = {.vocab_size = V, .eos_id = EOS, .max_context = 4096, .hidden_size = mtp ? HD : 0,
                                      .kv_page_tokens = DSV_KV_PAGE_TOKENS};
        const int n_pages = 12;

        REQUIRE(dsv_model_config_preset("tiny", &cfg, &err) == 0, "%s", err.msg);
        REQUIRE(dsv_backend_cpu_new(1, &be) == 0, "cpu backend");
        REQUIRE(dsv_kv_pool_new(be, &cfg, DSV_KV_FP8, n_pages, &kv) == 0, "pool");
        dsv_metrics_init(&metrics);
        REQUIRE(dsv_core_init(&core, &prm, &kv, 1, &ex, NULL, &sink, &metrics) == 0, "core");
        core.tun = (struct dsv_engine_tunables){
                .batch_tokens = 64, .max_running = 16, .max_sessions = 8, .session_pin_quota = 2, .mtp_draft = 3};
        printf("-- %s\n", mtp ? "with the fake MTP layer (3 drafts per step)" : "plain decoding");
        n_forward = n_mtp = n_forward_fail = 0;

        /* 1. one request: the greedy continuation, DONE with the counts */
        {
                struct client a = {0};
                int32_t p[10], want[20];
                prompt_of(p, 10, 1);
                expect(p, 10, 20, want);
                REQUIRE(dsv_core_add(&core, gen(&a, 1, p, 10, 20), 0, NULL) == 0, "add");
                run(&core, 100);
                CHECK(a.n_ids == 20 && memcmp(a.ids, want, sizeof(want)) == 0, "one request: %d tokens", a.n_ids);
                CHECK(a.n_done == 1 && a.last.done.reason == DSV_ENGINE_FINISH_LENGTH && a.last.done.prompt_tokens == 10 &&
                              a.last.done.completion_tokens == 20,
                      "DONE");
                CHECK(mtp ? a.last.done.spec_drafted > 0 && a.last.done.spec_accepted > 0 &&
                                    a.last.done.spec_accepted < a.last.done.spec_drafted
                          : a.last.done.spec_drafted == 0 && a.last.done.spec_accepted == 0,
                      "DONE: %u drafts, %u accepted", a.last.done.spec_drafted, a.last.done.spec_accepted);
                CHECK(a.refs == 0 && a.ended == 1, "reference and accounting released: refs %d ended %d", a.refs, a.ended);
                CHECK(kv->n_free == n_pages, "pages back: %d of %d", kv->n_free, n_pages);
        }
        /* 2. six concurrent requests, prompts longer than the budget (chunked): each equals alone;
         * no step exceeds the budget plus the decode tokens */
        {
                struct client cl[6] = {{0}};
                int32_t p[6][150], want[6][12];
                int len[6] = {150, 3, 70, 2, 65, 129};
                max_batch_tokens = 0;
                for (int i = 0; i < 6; i++) {
                        prompt_of(p[i], len[i], 10 + i);
                        expect(p[i], len[i], 12, want[i]);
                        REQUIRE(dsv_core_add(&core, gen(&cl[i], 10 + (uint64_t)i, p[i], len[i], 12), 0, NULL) == 0, "add");
                }
                run(&core, 500);
                for (int i = 0; i < 6; i++)
                        CHECK(cl[i].n_ids == 12 && memcmp(cl[i].ids, want[i], sizeof(want[i])) == 0 && cl[i].n_done == 1,
                              "concurrent request %d: %d tokens", i, cl[i].n_ids);
                CHECK(max_batch_tokens <= 64 + 6, "a batch of %d tokens", max_batch_tokens);
                CHECK(kv->n_free == n_pages, "pages back: %d", kv->n_free);
        }
        /* 3. a pool too small for all at once: they wait for pages (first come, first served) and all finish */
        {
                struct client cl[5] = {{0}};
                int32_t p[5][200], want[5][60];
                for (int i = 0; i < 5; i++) {
                        prompt_of(p[i], 200, 20 + i);
                        expect(p[i], 200, 60, want[i]);
                        /* 260 tokens: 5 pages each, 12 in the pool */
                        REQUIRE(dsv_core_add(&core, gen(&cl[i], 20 + (uint64_t)i, p[i], 200, 60), 0, NULL) == 0, "add");
                }
                run(&core, 2000);
                for (int i = 0; i < 5; i++)
                        CHECK(cl[i].n_ids == 60 && memcmp(cl[i].ids, want[i], sizeof(want[i])) == 0,
                              "request %d under pressure: %d tokens, error '%s'", i, cl[i].n_ids, cl[i].error);
                CHECK(kv->n_free == n_pages, "pages back: %d", kv->n_free);
                /* three that fit at admission (2 pages each) and grow to 7 pages each: preemptions */
                struct client g[3] = {{0}};
                int32_t gp[3][100], gw[3][300];
                for (int i = 0; i < 3; i++) {
                        prompt_of(gp[i], 100, 25 + i);
                        expect(gp[i], 100, 300, gw[i]);
                        REQUIRE(dsv_core_add(&core, gen(&g[i], 25 + (uint64_t)i, gp[i], 100, 300), 0, NULL) == 0, "add");
                }
                run(&core, 5000);
                for (int i = 0; i < 3; i++)
                        CHECK(g[i].n_ids == 300 && memcmp(g[i].ids, gw[i], sizeof(gw[i])) == 0,
                              "growing request %d: %d tokens, error '%s'", i, g[i].n_ids, g[i].error);
                struct dsv_engine_metrics mt;
                dsv_metrics_read(&metrics, dsv_now_ns(), &mt);
                CHECK(mt.preemptions_total > 0, "3 requests growing to 7 pages each in 12 pages: no preemption?");
                CHECK(kv->n_free == n_pages, "pages back: %d", kv->n_free);
                printf("pressure: %llu preemptions\n", (unsigned long long)mt.preemptions_total);
                /* one larger than the whole pool is refused at once */
                struct client big = {0};
                int32_t bp[8];
                prompt_of(bp, 8, 3);
                REQUIRE(dsv_core_add(&core, gen(&big, 30, bp, 8, 2000), 0, NULL) == 0, "add");
                run(&core, 10);
                CHECK(big.n_error == 1 && strstr(big.error, "the pool holds"), "too big: %s", big.error);
        }
        /* 4. sessions: the second turn reuses the first's prefill; a busy session refuses another */
        {
                struct client a = {0}, b = {0};
                int32_t p1[100], p2[140], want[10];
                prompt_of(p1, 100, 40);
                memcpy(p2, p1, sizeof(p1));
                prompt_of(p2 + 100, 40, 41);
                struct dsv_engine_request *r = gen(&a, 40, p1, 100, 5);
                snprintf(r->session, sizeof(r->session), "chat");
                REQUIRE(dsv_core_add(&core, r, 0, NULL) == 0, "add");
                run(&core, 100);
                CHECK(a.n_done == 1 && a.last.done.cached_tokens == 0, "first turn");
                r = gen(&a, 41, p2, 140, 10);
                snprintf(r->session, sizeof(r->session), "chat");
                REQUIRE(dsv_core_add(&core, r, 0, NULL) == 0, "add");
                struct dsv_engine_request *r2 = gen(&b, 42, p2, 140, 10);
                snprintf(r2->session, sizeof(r2->session), "chat");
                REQUIRE(dsv_core_add(&core, r2, 0, NULL) == 0, "add");
                a.n_ids = 0;
                run(&core, 100);
                expect(p2, 140, 10, want);
                /* with MTP, the record at 99 was drawn for the first turn's output token: the
                 * page below it is reused, the rest computed again (draft.c) */
                CHECK(a.n_done == 2 && a.last.done.cached_tokens == (mtp ? 64u : 100u) && a.n_ids == 10 &&
                              memcmp(a.ids, want, sizeof(want)) == 0,
                      "second turn: cached %u", a.last.done.cached_tokens);
                CHECK(b.n_error == 1 && strstr(b.error, "in use"), "busy session: %s", b.error);
                REQUIRE(dsv_core_add(&core, sess_op(&a, 43, DSV_REQUEST_SESSION_CLOSE, "chat", 0), 0, NULL) == 0, "close");
                run(&core, 10);
                CHECK(a.n_session == 1 && a.last.session.n_tokens == 149, "close reply: %u tokens", a.last.session.n_tokens);
                CHECK(kv->n_free == n_pages, "pages back after close: %d", kv->n_free);
                REQUIRE(dsv_core_add(&core, sess_op(&a, 44, DSV_REQUEST_SESSION_CLOSE, "chat", 0), 0, NULL) == 0, "close");
                run(&core, 10);
                CHECK(a.n_error == 1 && strstr(a.error, "no session"), "close again: %s", a.error);
        }
        /* 5. cancel, a client that goes away, a parked stream that does not stall others */
        {
                struct client a = {0}, b = {0}, slow = {0};
                int32_t p[20], want[30];
                prompt_of(p, 20, 50);
                expect(p, 20, 30, want);
                REQUIRE(dsv_core_add(&core, gen(&a, 50, p, 20, 200), 0, NULL) == 0, "add");
                REQUIRE(dsv_core_add(&core, gen(&b, 51, p, 20, 200), 0, NULL) == 0, "add");
                REQUIRE(dsv_core_add(&core, gen(&slow, 52, p, 20, 30), 0, NULL) == 0, "add");
                struct client d = {0};
                REQUIRE(dsv_core_add(&core, gen(&d, 53, p, 20, 30), 0, NULL) == 0, "add");
                slow.full = true;
                for (int i = 0; i < 5; i++)
                        dsv_core_step(&core);
                dsv_core_cancel(&core, &a, 50);
                b.gone = true;
                run(&core, 200);
                CHECK(a.n_done == 1 && a.last.done.reason == DSV_ENGINE_FINISH_CANCELLED, "cancelled");
                CHECK(b.n_done == 0 && b.ended == 1 && b.refs == 0, "a gone client's request ends quietly");
                CHECK(d.n_ids == 30 && memcmp(d.ids, want, sizeof(want)) == 0 && d.n_done == 1, "not stalled by the parked stream");
                CHECK(slow.n_ids == 0 && !dsv_core_idle(&core), "the parked stream waits");
                slow.full = false;
                run(&core, 200);
                CHECK(slow.n_ids == 30 && memcmp(slow.ids, want, sizeof(want)) == 0 && slow.n_done == 1,
                      "the parked stream resumes with its tokens: %d", slow.n_ids);
                CHECK(kv->n_free == n_pages, "pages back: %d", kv->n_free);
        }
        /* 6. stop rules: a stop token ends without being emitted; EOS unless ignored; context */
        {
                struct client a = {0}, e = {0};
                int32_t p[6], want[8];
                prompt_of(p, 6, 60);
                expect(p, 6, 8, want);
                struct dsv_engine_request *r = gen(&a, 60, p, 6, 100);
                r->stop_tokens[0] = want[4];
                r->n_stop_tokens = 1;
                REQUIRE(dsv_core_add(&core, r, 0, NULL) == 0, "add");
                run(&core, 100);
                CHECK(a.n_ids == 4 && memcmp(a.ids, want, 4 * sizeof(int32_t)) == 0 && a.last.done.reason == DSV_ENGINE_FINISH_STOP,
                      "stop token: %d tokens", a.n_ids);
                /* a prompt whose next token is EOS: find one */
                int32_t q[1] = {0};
                for (int32_t t = 2; t < V && !q[0]; t++)
                        if (next_token(t, 0) == EOS)
                                q[0] = t;
                if (q[0]) {
                        r = gen(&e, 61, q, 1, 10);
                        r->ignore_eos = false;
                        REQUIRE(dsv_core_add(&core, r, 0, NULL) == 0, "add");
                        run(&core, 50);
                        CHECK(e.n_ids == 0 && e.last.done.reason == DSV_ENGINE_FINISH_STOP, "EOS ends at once");
                }
        }
        /* 7. bad requests: empty prompt, out-of-vocabulary id, an id already in flight, an intake error,
         * a failed forward pass */
        {
                struct client a = {0};
                int32_t p[4] = {2, 3, V + 5, 4};
                REQUIRE(dsv_core_add(&core, gen(&a, 70, p, 4, 5), 0, NULL) == 0, "add");
                run(&core, 5);
                CHECK(a.n_error == 1 && strstr(a.error, "outside the vocabulary"), "vocab: %s", a.error);
                REQUIRE(dsv_core_add(&core, gen(&a, 71, p, 0, 5), 0, NULL) == 0, "add");
                run(&core, 5);
                CHECK(a.n_error == 2 && strstr(a.error, "empty"), "empty: %s", a.error);
                REQUIRE(dsv_core_add(&core, gen(&a, 72, p, 2, 5), ENOTSUP, "no tokenizer here") == 0, "add");
                run(&core, 5);
                CHECK(a.n_error == 3 && strcmp(a.error, "no tokenizer here") == 0, "intake error: %s", a.error);
                REQUIRE(dsv_core_add(&core, gen(&a, 73, p, 2, 50), 0, NULL) == 0, "add");
                REQUIRE(dsv_core_add(&core, gen(&a, 73, p, 2, 50), 0, NULL) == 0, "add");
                dsv_core_step(&core);
                CHECK(a.n_error == 4 && strstr(a.error, "already in flight"), "duplicate id: %s", a.error);
                fail_next = true;
                run(&core, 100);
                CHECK(a.n_error == 5 && strstr(a.error, "injected failure") && n_forward_fail == 1, "forward failure: %s", a.error);
                CHECK(a.refs == 0 && a.ended == 5 && kv->n_free == n_pages, "released: refs %d ended %d pages %d", a.refs, a.ended,
                      kv->n_free);
                if (mtp) {
                        /* a failed MTP pass fails the requests in it, with the cause */
                        REQUIRE(dsv_core_add(&core, gen(&a, 74, p, 2, 50), 0, NULL) == 0, "add");
                        fail_mtp_next = true;
                        run(&core, 100);
                        CHECK(a.n_error == 6 && strstr(a.error, "MTP layer's pass failed: injected MTP failure") &&
                                      a.refs == 0 && kv->n_free == n_pages,
                              "MTP failure: %s", a.error);
                }
        }
        /* 8. the prefix cache: another request (no session) with the same 200-token prefix maps its
         * three full pages (192 tokens) and gives the cold output; another uid does not hit unless
         * sharing is on; with nothing running, no page is in use */
        {
                struct client a = {0}, b = {0}, o = {0}, sh = {0};
                int32_t p1[200], p2[250], want[8];
                core.tun.prefix_cache = true;
                prompt_of(p1, 200, 80);
                memcpy(p2, p1, sizeof(p1));
                prompt_of(p2 + 200, 50, 81);
                REQUIRE(dsv_core_add(&core, gen(&a, 80, p1, 200, 4), 0, NULL) == 0, "add");
                run(&core, 100);
                CHECK(a.n_done == 1 && a.last.done.cached_tokens == 0, "cold: cached %u", a.last.done.cached_tokens);
                CHECK(dsv_kv_pool_in_use(kv) == 0 && kv->n_cached == 3, "after the first: %d in use, %d cached",
                      dsv_kv_pool_in_use(kv), kv->n_cached);
                expect(p2, 250, 8, want);
                REQUIRE(dsv_core_add(&core, gen(&b, 81, p2, 250, 8), 0, NULL) == 0, "add");
                run(&core, 100);
                CHECK(b.n_done == 1 && b.last.done.cached_tokens == 192 && b.n_ids == 8 && !memcmp(b.ids, want, sizeof(want)),
                      "warm: cached %u, %d tokens", b.last.done.cached_tokens, b.n_ids);
                cur_uid = 2000;
                REQUIRE(dsv_core_add(&core, gen(&o, 82, p2, 250, 8), 0, NULL) == 0, "add");
                run(&core, 100);
                CHECK(o.n_done == 1 && o.last.done.cached_tokens == 0 && !memcmp(o.ids, want, sizeof(want)),
                      "another uid must not hit: cached %u", o.last.done.cached_tokens);
                core.tun.prefix_cache_share = true;
                REQUIRE(dsv_core_add(&core, gen(&sh, 83, p1, 200, 4), 0, NULL) == 0, "add");
                run(&core, 100);
                REQUIRE(dsv_core_add(&core, gen(&sh, 84, p2, 250, 8), 0, NULL) == 0, "add");
                run(&core, 100);
                CHECK(sh.n_done == 2 && sh.last.done.cached_tokens == 192, "shared across uids: cached %u",
                      sh.last.done.cached_tokens);
                core.tun.prefix_cache_share = false;
                cur_uid = 1000;
                CHECK(dsv_kv_pool_in_use(kv) == 0, "%d pages in use with nothing running", dsv_kv_pool_in_use(kv));
        }
        /* 9. fairness: uid 3000 queues 40 requests, then uid 4000 one: it is in the next step's batch,
         * as on an idle engine */
        {
                static struct client flood[40];
                struct client lone = {0};
                int32_t p[40];
                memset(flood, 0, sizeof(flood));
                cur_uid = 3000;
                for (int i = 0; i < 40; i++) {
                        prompt_of(p, 40, 90 + i);
                        REQUIRE(dsv_core_add(&core, gen(&flood[i], 100 + (uint64_t)i, p, 40, 30), 0, NULL) == 0, "add");
                }
                for (int i = 0; i < 3; i++)
                        dsv_core_step(&core);
                cur_uid = 4000;
                prompt_of(p, 40, 99);
                REQUIRE(dsv_core_add(&core, gen(&lone, 200, p, 40, 30), 0, NULL) == 0, "add");
                int steps = 0;
                while (lone.n_ids == 0 && steps < 100) {
                        dsv_core_step(&core);
                        steps++;
                }
                CHECK(steps == 1, "the lone uid's first token took %d steps behind a flood of 40 (idle: 1)", steps);
                run(&core, 3000);
                int done = 0;
                for (int i = 0; i < 40; i++)
                        done += flood[i].n_done;
                CHECK(done == 40 && lone.n_done == 1, "all finish: %d", done);
                cur_uid = 1000;
        }
        /* 10. priority: a higher-priority request takes the pages of running lower-priority ones,
         * which end with their own output anyway */
        {
                struct client lo[2] = {{0}}, hi = {0};
                int32_t p[3][300], want[3][200];
                core.tun.prefix_cache = false;
                for (int i = 0; i < 2; i++) {
                        prompt_of(p[i], 300, 110 + i);
                        expect(p[i], 300, 200, want[i]);
                        REQUIRE(dsv_core_add(&core, gen(&lo[i], 110 + (uint64_t)i, p[i], 300, 200), 0, NULL) == 0, "add");
                }
                for (int i = 0; i < 12; i++)
                        dsv_core_step(&core);
                prompt_of(p[2], 300, 112);
                expect(p[2], 300, 200, want[2]);
                struct dsv_engine_request *r = gen(&hi, 112, p[2], 300, 200);
                r->priority = 5;
                REQUIRE(dsv_core_add(&core, r, 0, NULL) == 0, "add");
                int steps = 0;
                while (hi.n_ids == 0 && steps < 50) {
                        dsv_core_step(&core);
                        steps++;
                }
                CHECK(steps <= 6, "the high-priority request waited %d steps", steps);
                run(&core, 3000);
                for (int i = 0; i < 2; i++)
                        CHECK(lo[i].n_ids == 200 && !memcmp(lo[i].ids, want[i], sizeof(want[i])), "low %d: %d tokens", i,
                              lo[i].n_ids);
                CHECK(hi.n_ids == 200 && !memcmp(hi.ids, want[2], sizeof(want[2])), "high: %d tokens", hi.n_ids);
                CHECK(lo[0].last.done.preempted + lo[1].last.done.preempted > 0, "nobody was preempted");
                CHECK(dsv_kv_pool_in_use(kv) == 0, "pages in use: %d", dsv_kv_pool_in_use(kv));
        }
        printf("%d forward passes, %d MTP passes\n", n_forward, n_mtp);
        {
                struct dsv_engine_metrics mt;
                dsv_metrics_read(&metrics, dsv_now_ns(), &mt);
                if (mtp) {
                        CHECK(n_mtp > 0 && mt.spec_drafted_total > 0 && mt.spec_accepted_total > 0 &&
                                      mt.spec_accepted_total < mt.spec_drafted_total,
                              "MTP: %d passes, %llu drafted, %llu accepted (some, not all, must be)", n_mtp,
                              (unsigned long long)mt.spec_drafted_total, (unsigned long long)mt.spec_accepted_total);
                        printf("speculation: %llu drafted, %llu accepted\n", (unsigned long long)mt.spec_drafted_total,
                               (unsigned long long)mt.spec_accepted_total);
                } else {
                        CHECK(n_mtp == 0 && mt.spec_drafted_total == 0, "speculation without an MTP layer");
                }
        }
        dsv_core_done(&core);
        dsv_metrics_done(&metrics);
        dsv_kv_pool_free(kv);
        dsv_backend_free(be);
}

/* The request of id in the core (NULL when it is gone). */
static const struct request *req_of(const struct dsv_core *c, uint64_t id) {
        for (size_t i = 0; i < c->n_reqs; i++)
                if (c->reqs[i]->id == id)
                        return c->reqs[i];
        return NULL;
}

/* Steps until request id is admitted; its rank. */
static int placed(struct dsv_core *c, uint64_t id) {
        for (int i = 0; i < 20; i++) {
                const struct request *r = req_of(c, id);
                REQUIRE(r, "request %llu is gone before it was admitted", (unsigned long long)id);
                if (r->admitted)
                        return r->seq.rank;
                dsv_core_step(c);
        }
        REQUIRE(false, "request %llu not admitted in 20 steps", (unsigned long long)id);
        return -1;
}

/* Page `page` of pool p's bytes, through its backend. */
static int be_download(const struct dsv_kv_pool *p, int32_t page, void *out) {
        return p->be->ops->download(p->be, out, (const uint8_t *)p->base + (size_t)page * p->page_bytes, p->page_bytes);
}

static struct session *session_of(struct dsv_core *c, const char *name) {
        for (struct session *s = c->s_head; s; s = s->next)
                if (strcmp(s->name, name) == 0)
                        return s;
        return NULL;
}

/* A GENERATE on session name. */
static struct dsv_engine_request *sess_gen(struct client *cl, uint64_t id, const int32_t *p, int n, uint32_t max,
                                           const char *name) {
        struct dsv_engine_request *r = gen(cl, id, p, n, max);
        snprintf(r->session, sizeof(r->session), "%s", name);
        return r;
}

/* Runs request id (added already) to its end. */
static void run_to_end(struct dsv_core *c, struct client *cl, uint64_t id) {
        for (int i = 0; i < 200 && req_of(c, id); i++)
                dsv_core_step(c);
        CHECK(!req_of(c, id) && cl->n_done + cl->n_error == 1, "request %llu did not end", (unsigned long long)id);
}

/* The rank SESSION_LIST gives session name (-2: not listed). */
static int listed_rank(struct dsv_core *c, const char *name) {
        struct client cl = {0};
        REQUIRE(dsv_core_add(c, sess_op(&cl, 900, DSV_REQUEST_SESSION_LIST, "", 0), 0, NULL) == 0, "list");
        run(c, 5);
        for (int i = 0; i < cl.n_list; i++)
                if (strcmp(cl.list_name[i], name) == 0)
                        return cl.list_rank[i];
        return -2;
}

/* A session moves when its rank is full (pools of 8 pages; the prefix cache off, so only
 * sessions hold pages). Session mv (pinned, 4 pages) and fill (pinned, 3 pages) on one rank
 * rs leave it 1 page; mv's next turn needs 8: rs cannot give them (before, the request
 * failed: pinned sessions hold the pages), another rank can, so mv moves there: its pages'
 * bytes (a pattern written into them) are in the new rank's pool, its old pages are free,
 * its history is reused (cached tokens), the output is the greedy one, and SESSION_LIST
 * gives the new rank. Then fill's next turn needs more than rs has while every other rank is
 * full too (pages held outside the core, as pinned sessions hold them): no move, the old
 * behaviour (the request fails naming the pinned sessions) and fill stays on rs. Last, a
 * running request fills a session's rank (before, the session's request waited for it): the
 * session moves and runs at once. */
static void moves(struct dsv_core *c, struct dsv_kv_pool **kv, int n_pools) {
        struct client cl_close = {0}, a = {0}, b = {0}, f = {0}, g = {0}, lc[3] = {{0}}, pin = {0};
        const size_t pb = kv[0]->page_bytes;
        int32_t pm[200], pm2[450], pf[150], pf2[330], want[4];
        uint8_t *pat = malloc(pb), *got = malloc(pb);
        struct dsv_kv_seq hog[4] = {{0}};
        struct session *s;
        const uint64_t moves0 = c->metrics->session_moves_total;
        int rs, to;

        printf("-- a session moves when its rank is full (%d pools)\n", n_pools);
        REQUIRE(pat && got, "oom");
        c->tun.prefix_cache = false;
        /* section 3's pinned session goes: the pin quota is 2 */
        REQUIRE(dsv_core_add(c, sess_op(&cl_close, 160, DSV_REQUEST_SESSION_CLOSE, "big", 0), 0, NULL) == 0, "close");
        run(c, 5);
        for (int k = 0; k < n_pools; k++)
                REQUIRE(dsv_kv_pool_in_use(kv[k]) == 0, "rank %d: %d pages in use before", k, dsv_kv_pool_in_use(kv[k]));
        prompt_of(pm, 200, 170);
        memcpy(pm2, pm, sizeof(pm));
        prompt_of(pm2 + 200, 250, 171);
        prompt_of(pf, 150, 172);
        memcpy(pf2, pf, sizeof(pf));
        prompt_of(pf2 + 150, 180, 173);

        REQUIRE(dsv_core_add(c, sess_gen(&a, 170, pm, 200, 4, "mv"), 0, NULL) == 0, "add");
        rs = placed(c, 170);
        run_to_end(c, &a, 170);
        REQUIRE(dsv_core_add(c, sess_op(&pin, 171, DSV_REQUEST_SESSION_PIN, "mv", DSV_ENGINE_SESSION_PIN), 0, NULL) == 0, "pin");
        run(c, 5);
        /* every other rank runs a long request: fill, new, goes to rs, the least loaded */
        for (int k = 0, i = 0; k < n_pools; k++)
                if (k != rs) {
                        int32_t pl[10];
                        prompt_of(pl, 10, 174 + k);
                        REQUIRE(dsv_core_add(c, gen(&lc[i], 174 + (uint64_t)k, pl, 10, 300), 0, NULL) == 0, "add");
                        CHECK(placed(c, 174 + (uint64_t)k) != rs, "a long request on rank %d", rs);
                        i++;
                }
        REQUIRE(dsv_core_add(c, sess_gen(&f, 180, pf, 150, 2, "fill"), 0, NULL) == 0, "add");
        CHECK(placed(c, 180) == rs, "session fill not on rank %d", rs);
        run_to_end(c, &f, 180);
        REQUIRE(dsv_core_add(c, sess_op(&pin, 181, DSV_REQUEST_SESSION_PIN, "fill", DSV_ENGINE_SESSION_PIN), 0, NULL) == 0,
                "pin");
        for (int k = 0, i = 0; k < n_pools; k++)
                if (k != rs)
                        dsv_core_cancel(c, &lc[i++], 174 + (uint64_t)k);
        run(c, 20);
        CHECK(dsv_core_idle(c) && dsv_kv_pool_in_use(kv[rs]) == 7, "rank %d: %d pages in use, not mv's 4 and fill's 3", rs,
              dsv_kv_pool_in_use(kv[rs]));
        CHECK(listed_rank(c, "mv") == rs, "SESSION_LIST: mv on rank %d, not %d", listed_rank(c, "mv"), rs);

        /* a pattern in mv's pages: page i of its sequence holds bytes 17 + i */
        s = session_of(c, "mv");
        REQUIRE(s && s->rank == rs && s->seq.rank == rs && s->seq.n_pages == 4 && s->pinned, "session mv");
        for (int i = 0; i < 4; i++) {
                memset(pat, 17 + i, pb);
                REQUIRE(dsv_kv_page_upload(kv[rs], s->seq.pages[i], pat) == 0, "upload");
        }
        /* mv's next turn: 450 tokens, 8 pages; rs has 1 free beside mv's 4 */
        expect(pm2, 450, 4, want);
        REQUIRE(dsv_core_add(c, sess_gen(&b, 190, pm2, 450, 4, "mv"), 0, NULL) == 0, "add");
        to = placed(c, 190);
        CHECK(to != rs, "mv's next turn stayed on its full rank %d", rs);
        s = session_of(c, "mv");
        REQUIRE(s && s->busy, "session mv");
        CHECK(s->rank == to && s->pinned, "session mv: rank %d (its request's %d), pinned %d", s->rank, to, s->pinned);
        /* the old pool kept only fill's pages; the new one holds the pattern (the request's
         * first four pages: the fake pass writes no bytes) */
        CHECK(dsv_kv_pool_in_use(kv[rs]) == 3 && kv[rs]->n_free == 5, "rank %d after the move: %d in use, %d free", rs,
              dsv_kv_pool_in_use(kv[rs]), kv[rs]->n_free);
        for (int i = 0; i < 4; i++) {
                const struct request *r = req_of(c, 190);
                REQUIRE(r && r->seq.rank == to && r->seq.n_pages >= 4, "request 190's sequence");
                memset(pat, 17 + i, pb);
                REQUIRE(be_download(kv[to], r->seq.pages[i], got) == 0, "download");
                CHECK(memcmp(got, pat, pb) == 0, "page %d of mv on rank %d: not the bytes it had on rank %d", i, to, rs);
        }
        run_to_end(c, &b, 190);
        CHECK(b.n_done == 1 && b.last.done.cached_tokens == 200 && b.n_ids == 4 && !memcmp(b.ids, want, sizeof(want)),
              "mv's moved turn: cached %u, %d tokens, error '%s'", b.last.done.cached_tokens, b.n_ids, b.error);
        CHECK(listed_rank(c, "mv") == to, "SESSION_LIST: mv on rank %d, not %d", listed_rank(c, "mv"), to);
        CHECK(dsv_kv_pool_in_use(kv[to]) == 8, "rank %d: %d pages in use, not mv's 8", to, dsv_kv_pool_in_use(kv[to]));

        /* no rank has room: rs's free pages and every other rank (but to, which mv fills) held */
        for (int k = 0; k < n_pools; k++)
                if (k != to)
                        REQUIRE(dsv_kv_seq_reserve(kv[k], &hog[k], dsv_kv_pool_available(kv[k]) * DSV_KV_PAGE_TOKENS) == 0,
                                "hog");
        REQUIRE(dsv_core_add(c, sess_gen(&g, 191, pf2, 330, 4, "fill"), 0, NULL) == 0, "add");
        run_to_end(c, &g, 191);
        CHECK(g.n_error == 1 && strstr(g.error, "pinned sessions hold"), "fill's turn with no room anywhere: %d errors, '%s'",
              g.n_error, g.error);
        s = session_of(c, "fill");
        CHECK(s && s->rank == rs && s->seq.rank == rs && s->seq.n_pages == 3 && dsv_kv_pool_in_use(kv[rs]) == 8,
              "fill after the refusal: rank %d, %d pages; rank %d: %d in use", s ? s->rank : -1, s ? s->seq.n_pages : -1, rs,
              dsv_kv_pool_in_use(kv[rs]));
        for (int k = 0; k < n_pools; k++)
                if (k != to)
                        dsv_kv_seq_release(kv[k], &hog[k]);
        /* room again: fill's turn runs on its rank (5 free beside its 3 pages) */
        memset(&g, 0, sizeof(g));
        expect(pf2, 330, 4, want);
        REQUIRE(dsv_core_add(c, sess_gen(&g, 192, pf2, 330, 4, "fill"), 0, NULL) == 0, "add");
        CHECK(placed(c, 192) == rs, "fill's turn left rank %d though it has room", rs);
        run_to_end(c, &g, 192);
        CHECK(g.n_done == 1 && g.n_ids == 4 && !memcmp(g.ids, want, sizeof(want)), "fill's turn: %d tokens, '%s'", g.n_ids,
              g.error);

        /* a running request fills the rank (before, the session's request waited for it to
         * end): session w (2 pages, idle) on rank ra; L, with w's first page from the prefix
         * cache, joins it there and runs long, 7 of ra's 8 pages in use; w's next turn needs 5
         * pages and ra can give 1: w moves (its first page, which L shares, stays for L) and
         * runs at once, from its history, while L still runs on ra */
        {
                struct client w1 = {0}, w2 = {0}, l = {0}, x = {0};
                int32_t pw[100], pw2[300], pl[330];
                int ra, rw;
                REQUIRE(dsv_core_add(c, sess_op(&x, 193, DSV_REQUEST_SESSION_CLOSE, "mv", 0), 0, NULL) == 0 &&
                                dsv_core_add(c, sess_op(&x, 194, DSV_REQUEST_SESSION_CLOSE, "fill", 0), 0, NULL) == 0,
                        "close");
                run(c, 5);
                for (int k = 0; k < n_pools; k++)
                        REQUIRE(dsv_kv_pool_in_use(kv[k]) == 0, "rank %d: %d pages in use", k, dsv_kv_pool_in_use(kv[k]));
                c->tun.prefix_cache = true;
                prompt_of(pw, 100, 195);
                memcpy(pw2, pw, sizeof(pw));
                prompt_of(pw2 + 100, 200, 196);
                memcpy(pl, pw, 66 * sizeof(int32_t));
                prompt_of(pl + 66, 330 - 66, 197);
                REQUIRE(dsv_core_add(c, sess_gen(&w1, 195, pw, 100, 2, "w"), 0, NULL) == 0, "add");
                ra = placed(c, 195);
                run_to_end(c, &w1, 195);
                REQUIRE(dsv_core_add(c, gen(&l, 196, pl, 330, 150), 0, NULL) == 0, "add");
                CHECK(placed(c, 196) == ra, "L, with w's first page cached there, not on rank %d", ra);
                dsv_core_step(c);
                CHECK(dsv_kv_pool_in_use(kv[ra]) == 7, "rank %d: %d pages in use, not 7", ra, dsv_kv_pool_in_use(kv[ra]));
                expect(pw2, 300, 4, want);
                REQUIRE(dsv_core_add(c, sess_gen(&w2, 197, pw2, 300, 4, "w"), 0, NULL) == 0, "add");
                rw = placed(c, 197);
                CHECK(rw != ra && req_of(c, 196) && req_of(c, 196)->state == REQ_RUNNING,
                      "w's turn on rank %d (L's %d) while L runs: %d", rw, ra, req_of(c, 196) != NULL);
                CHECK(session_of(c, "w") && session_of(c, "w")->rank == rw, "session w not on rank %d", rw);
                CHECK(dsv_kv_pool_in_use(kv[ra]) == 6, "rank %d after w moved: %d in use, not L's 6", ra,
                      dsv_kv_pool_in_use(kv[ra]));
                run_to_end(c, &w2, 197);
                CHECK(w2.n_done == 1 && w2.last.done.cached_tokens == 100 && w2.n_ids == 4 && !memcmp(w2.ids, want, sizeof(want)),
                      "w's moved turn: cached %u, %d tokens, '%s'", w2.last.done.cached_tokens, w2.n_ids, w2.error);
                dsv_core_cancel(c, &l, 196);
                run(c, 20);
                CHECK(dsv_core_idle(c), "not idle");
                c->tun.prefix_cache = false;
        }
        CHECK(c->metrics->session_moves_total == moves0 + 2, "session_moves_total %llu after two moves (from %llu)",
              (unsigned long long)c->metrics->session_moves_total, (unsigned long long)moves0);

        /* the room on the target is idle sessions' pages: mv2 (pinned, 4 pages) and fill2
         * (pinned, 3) on rank rm, an idle session of 8 pages on rank k0, every other rank held
         * outside the core; mv2's next turn needs 8 pages: the idle session on k0 is evicted,
         * then mv2 moves there (before, the copy found no free page and the request failed:
         * pinned sessions hold rm) */
        {
                struct client x = {0}, m1 = {0}, m2 = {0}, f1 = {0}, i1 = {0};
                int32_t pm3[200], pm4[450], pf3[150], pi[460];
                const uint64_t evicted0 = c->metrics->sessions_evicted;
                int rm, k0;
                REQUIRE(dsv_core_add(c, sess_op(&x, 200, DSV_REQUEST_SESSION_CLOSE, "w", 0), 0, NULL) == 0, "close");
                run(c, 5);
                for (int k = 0; k < n_pools; k++)
                        REQUIRE(dsv_kv_pool_in_use(kv[k]) == 0, "rank %d: %d pages in use", k, dsv_kv_pool_in_use(kv[k]));
                prompt_of(pm3, 200, 201);
                memcpy(pm4, pm3, sizeof(pm3));
                prompt_of(pm4 + 200, 250, 202);
                prompt_of(pf3, 150, 203);
                prompt_of(pi, 460, 204);
                REQUIRE(dsv_core_add(c, sess_gen(&m1, 201, pm3, 200, 4, "mv2"), 0, NULL) == 0, "add");
                rm = placed(c, 201);
                k0 = rm == 0 ? 1 : 0;
                run_to_end(c, &m1, 201);
                REQUIRE(dsv_core_add(c, sess_op(&pin, 202, DSV_REQUEST_SESSION_PIN, "mv2", DSV_ENGINE_SESSION_PIN), 0, NULL) == 0,
                        "pin");
                run(c, 5);
                for (int k = 0; k < n_pools; k++)
                        if (k != rm)
                                REQUIRE(dsv_kv_seq_reserve(kv[k], &hog[k], dsv_kv_pool_available(kv[k]) * DSV_KV_PAGE_TOKENS) == 0,
                                        "hog");
                REQUIRE(dsv_core_add(c, sess_gen(&f1, 205, pf3, 150, 2, "fill2"), 0, NULL) == 0, "add");
                CHECK(placed(c, 205) == rm, "session fill2 not on rank %d", rm);
                run_to_end(c, &f1, 205);
                REQUIRE(dsv_core_add(c, sess_op(&pin, 206, DSV_REQUEST_SESSION_PIN, "fill2", DSV_ENGINE_SESSION_PIN), 0, NULL) ==
                                0,
                        "pin");
                run(c, 5);
                CHECK(dsv_kv_pool_in_use(kv[rm]) == 7, "rank %d: %d pages in use, not mv2's 4 and fill2's 3", rm,
                      dsv_kv_pool_in_use(kv[rm]));
                dsv_kv_seq_release(kv[k0], &hog[k0]);
                REQUIRE(dsv_core_add(c, sess_gen(&i1, 207, pi, 460, 4, "idle"), 0, NULL) == 0, "add");
                CHECK(placed(c, 207) == k0, "session idle not on rank %d", k0);
                run_to_end(c, &i1, 207);
                CHECK(dsv_core_idle(c) && dsv_kv_pool_in_use(kv[k0]) == 8, "rank %d: %d pages in use, not idle's 8", k0,
                      dsv_kv_pool_in_use(kv[k0]));
                expect(pm4, 450, 4, want);
                REQUIRE(dsv_core_add(c, sess_gen(&m2, 230, pm4, 450, 4, "mv2"), 0, NULL) == 0, "add");
                CHECK(placed(c, 230) == k0, "mv2's next turn on rank %d, not %d", placed(c, 230), k0);
                run_to_end(c, &m2, 230);
                CHECK(m2.n_done == 1 && m2.last.done.cached_tokens == 200 && m2.n_ids == 4 && !memcmp(m2.ids, want, sizeof(want)),
                      "mv2's moved turn: cached %u, %d tokens, error '%s'", m2.last.done.cached_tokens, m2.n_ids, m2.error);
                CHECK(c->metrics->session_moves_total == moves0 + 3 && c->metrics->sessions_evicted == evicted0 + 1,
                      "after mv2's move: %llu moves (from %llu), %llu evictions (from %llu)",
                      (unsigned long long)c->metrics->session_moves_total, (unsigned long long)moves0,
                      (unsigned long long)c->metrics->sessions_evicted, (unsigned long long)evicted0);
                s = session_of(c, "idle");
                CHECK(s && s->seq.n_pages == 0, "session idle on rank %d kept %d pages", k0, s ? s->seq.n_pages : -1);
                s = session_of(c, "mv2");
                CHECK(s && s->rank == k0 && s->pinned && dsv_kv_pool_in_use(kv[rm]) == 3 && dsv_kv_pool_in_use(kv[k0]) == 8,
                      "mv2 on rank %d, not %d; rank %d: %d in use, rank %d: %d", s ? s->rank : -1, k0, rm,
                      dsv_kv_pool_in_use(kv[rm]), k0, dsv_kv_pool_in_use(kv[k0]));
                for (int k = 0; k < n_pools; k++)
                        if (k != rm && k != k0)
                                dsv_kv_seq_release(kv[k], &hog[k]);
        }
        free(pat);
        free(got);
}

/* Data-parallel attention: the core over n_pools pools (one per rank), the placement rule
 * (sched_place), and each request's output unchanged by where it ran. */
static void placement(int n_pools) {
        struct dsv_model_config cfg;
        struct dsv_error err = {{0}};
        struct dsv_backend *be;
        struct dsv_kv_pool *kv[4];
        struct dsv_metrics_live metrics;
        struct dsv_core core;
        struct dsv_exec ex = {.forward = fake_forward};
        struct dsv_core_params prm = {.vocab_size = V, .eos_id = EOS, .max_context = 4096, .kv_page_tokens = DSV_KV_PAGE_TOKENS};
        const int n_pages = 8;

        printf("-- placement over %d pools\n", n_pools);
        REQUIRE(dsv_model_config_preset("tiny", &cfg, &err) == 0, "%s", err.msg);
        REQUIRE(dsv_backend_cpu_new(1, &be) == 0, "cpu backend");
        for (int k = 0; k < n_pools; k++)
                REQUIRE(dsv_kv_pool_new(be, &cfg, DSV_KV_FP8, n_pages, &kv[k]) == 0, "pool");
        dsv_metrics_init(&metrics);
        /* pools of another geometry are refused */
        {
                struct dsv_kv_pool *odd;
                REQUIRE(dsv_kv_pool_new(be, &cfg, DSV_KV_FP8, n_pages + 1, &odd) == 0, "pool");
                struct dsv_kv_pool *mix[2] = {kv[0], odd};
                CHECK(dsv_core_init(&core, &prm, mix, 2, &ex, NULL, &sink, &metrics) == -EINVAL, "pools of two sizes accepted");
                CHECK(dsv_core_init(&core, &prm, kv, 0, &ex, NULL, &sink, &metrics) == -EINVAL, "no pool accepted");
                dsv_kv_pool_free(odd);
        }
        REQUIRE(dsv_core_init(&core, &prm, kv, n_pools, &ex, NULL, &sink, &metrics) == 0, "core");
        core.tun = (struct dsv_engine_tunables){
                .batch_tokens = 256, .max_running = 16, .max_sessions = 8, .session_pin_quota = 2, .prefix_cache = true};
        fake_pools = kv;
        fake_n_pools = n_pools;
        memset(rank_tokens, 0, sizeof(rank_tokens));

        /* 1. as many concurrent requests as ranks, no shared prefix: one on each rank (fewest
         * sequences), each with its own greedy output */
        {
                struct client cl[4] = {{0}};
                int32_t p[4][20], want[4][40];
                bool used[4] = {false};
                for (int i = 0; i < n_pools; i++) {
                        prompt_of(p[i], 20, 100 + i);
                        expect(p[i], 20, 40, want[i]);
                        REQUIRE(dsv_core_add(&core, gen(&cl[i], 100 + (uint64_t)i, p[i], 20, 40), 0, NULL) == 0, "add");
                }
                dsv_core_step(&core);
                for (int i = 0; i < n_pools; i++) {
                        int r = placed(&core, 100 + (uint64_t)i);
                        CHECK(!used[r], "request %d on rank %d, which runs another already", i, r);
                        used[r] = true;
                }
                run(&core, 200);
                for (int i = 0; i < n_pools; i++)
                        CHECK(cl[i].n_ids == 40 && memcmp(cl[i].ids, want[i], sizeof(want[i])) == 0 && cl[i].n_done == 1,
                              "request %d: %d tokens", i, cl[i].n_ids);
                for (int k = 0; k < n_pools; k++)
                        CHECK(rank_tokens[k] >= 20 + 39 && kv[k]->peak_in_use > 0, "rank %d ran %ld tokens", k, rank_tokens[k]);
        }
        /* 2. the longest prefix wins over the load: P runs long on rank rp, its prefill's three
         * full pages registered there; q, with P's prefix, goes to rp though rp runs P and other
         * ranks nothing, and maps the pages; u, unrelated, goes to a rank that runs nothing.
         * Idle ranks with all their pages: equals, which take turns. */
        {
                struct client a = {0}, q = {0}, u = {0}, t[4] = {{0}};
                int32_t p1[200], p2[230], pu[10], want[6];
                int last = -1;
                prompt_of(p1, 200, 110);
                memcpy(p2, p1, sizeof(p1));
                prompt_of(p2 + 200, 30, 111);
                prompt_of(pu, 10, 113);
                for (int i = 0; i < n_pools; i++) { /* one after the other, each alone: in turn */
                        int32_t pt[10];
                        prompt_of(pt, 10, 115 + i);
                        REQUIRE(dsv_core_add(&core, gen(&t[i], 115 + (uint64_t)i, pt, 10, 2), 0, NULL) == 0, "add");
                        const int rt = placed(&core, 115 + (uint64_t)i);
                        CHECK(last < 0 || rt == (last + 1) % n_pools, "idle equal ranks: request %d on rank %d after %d", i, rt,
                              last);
                        last = rt;
                        run(&core, 20);
                }
                REQUIRE(dsv_core_add(&core, gen(&a, 110, p1, 200, 300), 0, NULL) == 0, "add");
                const int rp = placed(&core, 110);
                dsv_core_step(&core); /* its prompt's pass: the full pages are registered */
                CHECK(core.kv[rp]->n_registered >= 3, "P's pages: %d registered on rank %d", core.kv[rp]->n_registered, rp);
                expect(p2, 230, 6, want);
                REQUIRE(dsv_core_add(&core, gen(&q, 112, p2, 230, 6), 0, NULL) == 0, "add");
                CHECK(placed(&core, 112) == rp, "the request with P's prefix did not go to P's rank %d", rp);
                REQUIRE(dsv_core_add(&core, gen(&u, 113, pu, 10, 6), 0, NULL) == 0, "add");
                CHECK(placed(&core, 113) != rp, "an unrelated request went to the loaded rank %d", rp);
                for (int i = 0; i < 40 && (q.n_done == 0 || u.n_done == 0); i++)
                        dsv_core_step(&core);
                CHECK(q.n_done == 1 && q.last.done.cached_tokens == 192 && q.n_ids == 6 && !memcmp(q.ids, want, sizeof(want)),
                      "q: cached %u, %d tokens", q.last.done.cached_tokens, q.n_ids);
                CHECK(u.n_done == 1 && u.n_ids == 6, "u: %d tokens", u.n_ids);
                dsv_core_cancel(&core, &a, 110);
                run(&core, 400);
                CHECK(dsv_core_idle(&core), "not idle");
        }
        /* 3. a session stays on its rank; a full rank is not chosen */
        {
                struct client a = {0}, b = {0}, c = {0}, d = {0};
                int32_t ps[300], ps2[330], pb[10], pc[200], want[8];
                prompt_of(ps, 300, 120);
                memcpy(ps2, ps, sizeof(ps));
                prompt_of(ps2 + 300, 30, 121);
                prompt_of(pb, 10, 122);
                prompt_of(pc, 200, 123);
                core.tun.prefix_cache = false; /* only the session holds pages */
                struct dsv_engine_request *r = gen(&a, 120, ps, 300, 4);
                snprintf(r->session, sizeof(r->session), "big");
                REQUIRE(dsv_core_add(&core, r, 0, NULL) == 0, "add");
                const int rs = placed(&core, 120);
                run(&core, 100);
                REQUIRE(dsv_core_add(&core, sess_op(&a, 121, DSV_REQUEST_SESSION_PIN, "big", DSV_ENGINE_SESSION_PIN), 0, NULL) ==
                                0,
                        "pin");
                run(&core, 10);
                CHECK(dsv_kv_pool_in_use(core.kv[rs]) == 5, "the pinned session holds %d pages on rank %d",
                      dsv_kv_pool_in_use(core.kv[rs]), rs);
                /* every other rank runs one long request: rs, idle but full, is the least loaded */
                struct client lc[3] = {{0}};
                for (int k = 0, i = 0; k < n_pools; k++) {
                        if (k == rs)
                                continue;
                        int32_t pl[10];
                        prompt_of(pl, 10, 130 + k);
                        REQUIRE(dsv_core_add(&core, gen(&lc[i], 130 + (uint64_t)k, pl, 10, 300), 0, NULL) == 0, "add");
                        CHECK(placed(&core, 130 + (uint64_t)k) != rs, "a long request on the full rank %d", rs);
                        i++;
                }
                /* four pages: rank rs has 3 beside the pinned 5 of 8, not enough */
                REQUIRE(dsv_core_add(&core, gen(&c, 140, pc, 200, 4), 0, NULL) == 0, "add");
                CHECK(placed(&core, 140) != rs, "a request went to rank %d, whose pool cannot hold it", rs);
                /* a one-page request fits rs and it has the fewest sequences: it goes there (and runs on) */
                REQUIRE(dsv_core_add(&core, gen(&b, 141, pb, 10, 300), 0, NULL) == 0, "add");
                CHECK(placed(&core, 141) == rs, "a small request did not go to the least loaded rank %d", rs);
                /* the others end: rs is now the only rank running anything */
                for (int k = 0, i = 0; k < n_pools; k++)
                        if (k != rs)
                                dsv_core_cancel(&core, &lc[i++], 130 + (uint64_t)k);
                run(&core, 30);
                CHECK(c.n_done == 1 && req_of(&core, 141), "c: %d done; b still running: %d", c.n_done, req_of(&core, 141) != NULL);
                /* the session's next turn runs on its rank, the busiest, from its pages */
                expect(ps2, 330, 8, want);
                r = gen(&d, 150, ps2, 330, 8);
                snprintf(r->session, sizeof(r->session), "big");
                REQUIRE(dsv_core_add(&core, r, 0, NULL) == 0, "add");
                CHECK(placed(&core, 150) == rs, "the session's second turn left its rank %d", rs);
                for (int i = 0; i < 100 && d.n_done == 0; i++)
                        dsv_core_step(&core);
                CHECK(d.n_done == 1 && d.last.done.cached_tokens == 300 && d.n_ids == 8 && !memcmp(d.ids, want, sizeof(want)),
                      "second turn: cached %u, %d tokens", d.last.done.cached_tokens, d.n_ids);
                dsv_core_cancel(&core, &b, 141);
                run(&core, 400);
                CHECK(dsv_core_idle(&core), "not idle");
        }
        moves(&core, kv, n_pools);
        fake_pools = NULL;
        dsv_core_done(&core);
        dsv_metrics_done(&metrics);
        for (int k = 0; k < n_pools; k++) {
                CHECK(dsv_kv_pool_in_use(kv[k]) == 0, "rank %d: %d pages still in use", k, dsv_kv_pool_in_use(kv[k]));
                dsv_kv_pool_free(kv[k]);
        }
        dsv_backend_free(be);
}

int main(void) {
        suite(false);
        suite(true);
        placement(2);
        placement(4);
        return test_result("test-engine-core");
}
