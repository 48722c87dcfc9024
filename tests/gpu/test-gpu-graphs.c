/* Decode steps as CUDA graphs (daemon/model/graphs.c) on the CUDA backend (a device, or the
 * CPU emulation of CUDA, which records and replays stream captures): the same scripted run
 * of several sequences goes through the tiny model on the CPU backend, on CUDA with graphs
 * and on CUDA with graphs off (dsv_model_opts.graphs_off, what --cuda-graphs=no sets), every
 * engine fed the CPU's greedy choices. Every decode step's logits must be bit-identical with
 * graphs on and off, within the stated tolerance of the CPU's (test-gpu-model's: 1e-5 of the
 * largest |logit| on the emulation, 3e-2 faithful on a device) with the same greedy choices.
 *
 * The script: sequences of different lengths decode together (3 rows: bucket 4), one of them
 * crossing into a new KV page after the bucket's graph was recorded; one finishes and a new
 * one (prefilled meanwhile, on the finished one's freed page) joins, so the same graph
 * replays over other sequences, rows and page tables; then one row (bucket 1)
 * and two rows (bucket 2). A bucket runs eagerly its first time, is recorded its second and
 * replayed after: 3 captures (buckets 4, 1, 2), 5 replays, 3 eager steps of 11. A
 * replay that ignored the new inputs would differ from graphs off; re-recording every step
 * would show in the counts.
 *
 * Then the failure paths: the backend refuses what would wait for the device during a
 * capture (-EBUSY), a second begin, an end without begin and a launch of no graph; and a
 * model on a backend whose graph_end fails runs the same script eagerly (one failed capture,
 * no other, same logits as the CPU); one whose capture runs out of device memory once runs
 * that step eagerly and records the bucket on its next use (then replays it), and one whose
 * every capture runs out of memory gives up after DSV_GRAPH_OOM_RETRIES tries. 25-34 s on the emulation here (2 loaded cores), most of
 * it the 62-token prompt that reaches a page boundary, on two emulated engines. */
#include "config.h"

#include "tests/gpu/gputest.h"
#include "tests/unit/modelutil.h"

#define N_SEQS 6
#define MAX_LEN 96

static struct gt g;

struct runner {
        const char *name;
        struct dsv_model *m;
        struct dsv_kv_pool *kv;
        struct dsv_kv_seq seq[N_SEQS];
};

static void runner_open(struct runner *r, const char *name, struct dsv_backend *be, const char *dir, bool graphs_off) {
        struct dsv_model_opts mo = {.numerics = DSV_NUMERICS_FAITHFUL, .graphs_off = graphs_off};
        struct dsv_error err = {{0}};
        memset(r, 0, sizeof(*r));
        r->name = name;
        REQUIRE(dsv_model_load(dir, be, &mo, &r->m, &err) == 0, "load on %s: %s", name, err.msg);
        const struct dsv_model_config *c = dsv_model_get_config(r->m);
        REQUIRE(dsv_kv_pool_new(be, c, DSV_KV_FP8, N_SEQS * (DIV_ROUND_UP(MAX_LEN, DSV_KV_PAGE_TOKENS) + 1), &r->kv) == 0, "kv pool");
}

static void runner_close(struct runner *r) {
        for (int s = 0; s < N_SEQS; s++)
                dsv_kv_seq_release(r->kv, &r->seq[s]);
        dsv_kv_pool_free(r->kv);
        dsv_model_free(r->m);
}

/* One forward pass: tokens toks[i] appended to sequences which[i] (each once, or a whole
 * prompt of one sequence when n_seq == 1 and n > 1); logits of every token. Pages are
 * reserved as the sequences grow, so a step may bring a new page. */
static void runner_step(struct runner *r, const int *which, int n_seq, const int32_t *toks, int n, float *logits) {
        struct dsv_kv_seq *seqs[N_SEQS];
        int32_t pos[MAX_LEN], sq[MAX_LEN];
        struct dsv_error err = {{0}};
        REQUIRE(n <= MAX_LEN, "step");
        for (int j = 0; j < n_seq; j++) {
                seqs[j] = &r->seq[which[j]];
                REQUIRE(dsv_kv_seq_reserve(r->kv, seqs[j], seqs[j]->len + (n_seq == 1 ? n : 1)) == 0, "reserve");
        }
        for (int i = 0; i < n; i++) {
                sq[i] = n_seq == 1 ? 0 : i;
                pos[i] = seqs[sq[i]]->len + (n_seq == 1 ? i : 0);
        }
        struct dsv_batch b = {.n_tokens = n, .token = toks, .pos = pos, .seq = sq, .n_seqs = n_seq, .seqs = seqs};
        int rc = dsv_model_forward(r->m, r->kv, &b, logits, &err);
        REQUIRE(rc == 0, "forward on %s: %s %s", r->name, err.msg, dsv_backend_last_error(dsv_model_backend(r->m)));
}

/* The script over n engines (0: the reference); last[s] is sequence s's next token. */
struct script {
        struct runner *r;
        int n;
        int V;
        float *lg[4];
        int32_t next[N_SEQS];
        double worst;
        int steps, bad, greedy_diff, not_identical;
        double tol;
};

static void prefill(struct script *S, int s, int len, uint64_t seed) {
        int32_t toks[MAX_LEN];
        make_tokens(toks, len, S->V, seed);
        for (int e = 0; e < S->n; e++)
                runner_step(&S->r[e], &s, 1, toks, len, S->lg[e]);
        S->next[s] = argmax_f32(S->lg[0] + (size_t)(len - 1) * S->V, S->V);
}

static void decode(struct script *S, const int *which, int n_seq, int steps) {
        int32_t toks[N_SEQS];
        for (int k = 0; k < steps; k++) {
                for (int j = 0; j < n_seq; j++)
                        toks[j] = S->next[which[j]];
                for (int e = 0; e < S->n; e++)
                        runner_step(&S->r[e], which, n_seq, toks, n_seq, S->lg[e]);
                for (int j = 0; j < n_seq; j++) {
                        const float *ref = S->lg[0] + (size_t)j * S->V;
                        const int a = argmax_f32(ref, S->V);
                        for (int e = 1; e < S->n; e++) {
                                const float *got = S->lg[e] + (size_t)j * S->V;
                                double d = max_rel_diff(ref, got, (size_t)S->V);
                                S->worst = fmax(S->worst, d);
                                S->bad += !(d <= S->tol);
                                S->greedy_diff += argmax_f32(got, S->V) != a;
                                /* engines 1.. are all CUDA: graphs or not, the same bits */
                                S->not_identical += memcmp(got, S->lg[1] + (size_t)j * S->V, (size_t)S->V * sizeof(float)) != 0;
                        }
                        S->next[which[j]] = a;
                }
                S->steps++;
        }
}

static void run_script(struct script *S) {
        static const int b4[] = {0, 1, 2}, b4b[] = {1, 2, 3}, b1[] = {3}, b2[] = {2, 3};
        double t0 = gt_now();
        prefill(S, 0, 5, 1);
        prefill(S, 1, 62, 2);
        prefill(S, 2, 3, 3);
        double t1 = gt_now();
        decode(S, b4, 3, 3); /* sequence 1 reaches position 64 (a new page) on the third step */
        for (int e = 0; e < S->n; e++)
                dsv_kv_seq_release(S->r[e].kv, &S->r[e].seq[0]);
        prefill(S, 3, 9, 4); /* takes the freed page */
        decode(S, b4b, 3, 2);
        decode(S, b1, 1, 3);
        decode(S, b2, 2, 3);
        printf("  script: prefills %.1f s, decode steps and the rest %.1f s\n", t1 - t0, gt_now() - t1);
}

/* The short script of the failure path: one bucket, three steps. */
static void run_short(struct script *S) {
        static const int b4[] = {0, 1, 2};
        prefill(S, 0, 5, 1);
        prefill(S, 1, 8, 2);
        prefill(S, 2, 3, 3);
        decode(S, b4, 3, 3);
}

static void check_stats(const struct runner *r, uint64_t captures, uint64_t replays, uint64_t eager, uint64_t failed) {
        struct dsv_graph_stats st;
        dsv_model_graph_stats(r->m, &st);
        printf("  %s: %llu captures, %llu replays, %llu eager decode steps, %llu failed captures\n", r->name,
               (unsigned long long)st.captures, (unsigned long long)st.replays, (unsigned long long)st.eager,
               (unsigned long long)st.failed);
        CHECK(st.captures == captures && st.replays == replays && st.eager == eager && st.failed == failed,
              "%s: expected %llu captures, %llu replays, %llu eager, %llu failed", r->name, (unsigned long long)captures,
              (unsigned long long)replays, (unsigned long long)eager, (unsigned long long)failed);
}

/* ------------------------------------------------------------------ failure paths */
static void check_refusals(struct dsv_backend *be) {
        const struct dsv_backend_ops *o = be->ops;
        void *buf = NULL, *graph = (void *)1;
        char host[64] = {0};
        REQUIRE(o->alloc(be, sizeof(host), &buf) == 0, "alloc");
        CHECK(o->graph_end(be, true, &graph) == -EINVAL, "graph_end without graph_begin must be -EINVAL");
        CHECK(o->graph_launch(be, NULL) == -EINVAL, "graph_launch(NULL) must be -EINVAL");
        REQUIRE(o->graph_begin(be) == 0, "graph_begin: %s", dsv_backend_last_error(be));
        CHECK(o->graph_begin(be) == -EBUSY, "a second graph_begin must be -EBUSY");
        CHECK(o->upload(be, buf, host, sizeof(host)) == -EBUSY, "upload while capturing must be -EBUSY");
        CHECK(strstr(dsv_backend_last_error(be), "capturing") != NULL, "the refusal says why: \"%s\"", dsv_backend_last_error(be));
        CHECK(o->download(be, host, buf, sizeof(host)) == -EBUSY, "download while capturing must be -EBUSY");
        CHECK(o->synchronize(be) == -EBUSY, "synchronize while capturing must be -EBUSY");
        CHECK(o->fill(be, buf, 0x11, sizeof(host)) == 0, "fill is recorded");
        CHECK(o->graph_end(be, false, &graph) == 0 && graph == (void *)1, "graph_end(keep=false) discards, writes nothing");
        /* the discarded fill never ran, and the stream works again */
        CHECK(o->fill(be, buf, 0x22, sizeof(host)) == 0 && o->download(be, host, buf, sizeof(host)) == 0, "fill/download after a capture");
        CHECK(host[0] == 0x22 && host[63] == 0x22, "device memory after a discarded capture: %02x", (unsigned char)host[0]);
        /* a recorded fill runs at each launch, not at the recording */
        REQUIRE(o->graph_begin(be) == 0 && o->fill(be, buf, 0x33, sizeof(host)) == 0 && o->graph_end(be, true, &graph) == 0,
                "record a fill");
        CHECK(o->download(be, host, buf, sizeof(host)) == 0 && host[0] == 0x22, "a recording runs nothing");
        CHECK(o->graph_launch(be, graph) == 0 && o->download(be, host, buf, sizeof(host)) == 0 && host[0] == 0x33, "a launch runs it");
        CHECK(o->fill(be, buf, 0x44, sizeof(host)) == 0 && o->graph_launch(be, graph) == 0 &&
                      o->download(be, host, buf, sizeof(host)) == 0 && host[0] == 0x33,
              "a second launch runs it again");
        o->graph_free(be, graph);
        o->graph_free(be, NULL);
        o->dealloc(be, buf, sizeof(host));
}

/* A CUDA backend whose captures all fail at graph_end (what an op that waits for the device
 * would cause): the model must fall back to eager steps, once, and keep its results. With
 * oom_ends > 0, the next oom_ends captures run out of device memory instead (-ENOMEM, as
 * cudaGraphInstantiate says when the graph's memory does not fit) and later ones succeed. */
static struct dsv_backend_ops failing_ops;
static int oom_ends;
static int failing_end(struct dsv_backend *be, bool keep, void **ret) {
        void *graph = NULL;
        if (oom_ends < 0)
                return g.be[1]->ops->graph_end(be, keep, ret);
        int r = g.be[1]->ops->graph_end(be, false, &graph);
        (void)keep;
        (void)ret;
        if (r < 0)
                return r;
        if (oom_ends > 0 && --oom_ends == 0)
                oom_ends = -1; /* the following captures succeed */
        return oom_ends != 0 ? -ENOMEM : -EOPNOTSUPP;
}

/* The failing backend (oom_ends as failing_end says) beside the CPU on a fresh model each: 3
 * decode steps of one bucket after run_short's prefills, then extra more; the CPU's logits and
 * greedy choices kept, and the graph figures expected. */
static void run_failing(struct dsv_backend *failing, const char *dir, const struct script *S0, const char *what, int oom,
                        int extra, uint64_t captures, uint64_t replays, uint64_t eager, uint64_t failed) {
        static const int b4[] = {0, 1, 2};
        struct runner rf[2];
        struct script S = {.r = rf, .n = 2, .V = S0->V, .tol = S0->tol, .lg = {S0->lg[0], S0->lg[1]}};
        oom_ends = oom;
        runner_open(&rf[0], "cpu", g.be[0], dir, false);
        runner_open(&rf[1], what, failing, dir, false);
        run_short(&S);
        if (extra)
                decode(&S, b4, 3, extra);
        CHECK(S.steps == 3 + extra && S.bad == 0 && S.greedy_diff == 0,
              "%s: %d steps, %d rows outside tolerance, %d greedy choices differ", what, S.steps, S.bad, S.greedy_diff);
        check_stats(&rf[1], captures, replays, eager, failed);
        for (int e = 0; e < 2; e++)
                runner_close(&rf[e]);
}

int main(void) {
        int r = gt_open(&g, "test-gpu-graphs");
        if (r)
                return r;
        if (!dsv_backend_has_graphs(g.be[1])) {
                fprintf(stderr, "test-gpu-graphs: FAIL: the CUDA backend has no graph entries\n");
                return 1;
        }
        CHECK(!dsv_backend_has_graphs(g.be[0]), "the CPU backend has no graphs");
        const char *dir = fixture_tiny("gpu-graphs-tiny", 13);
        struct runner rr[3];
        struct script S = {.r = rr, .n = 3, .tol = g.emulated ? 1e-5 : 3e-2};
        double t0 = gt_now();

        runner_open(&rr[0], "cpu", g.be[0], dir, false);
        runner_open(&rr[1], "cuda graphs off", g.be[1], dir, true);
        runner_open(&rr[2], "cuda graphs on", g.be[1], dir, false);
        S.V = dsv_model_get_config(rr[0].m)->vocab_size;
        for (int e = 0; e < 3; e++)
                REQUIRE((S.lg[e] = malloc((size_t)S.V * MAX_LEN * sizeof(float))) != NULL, "oom");
        run_script(&S);
        printf("  %d decode steps: max rel diff to the CPU %.3g (tolerance %.0e), %d outside, %d greedy choices differ, %d rows "
               "differ between graphs on and off; %.1f s\n",
               S.steps, S.worst, S.tol, S.bad, S.greedy_diff, S.not_identical, gt_now() - t0);
        CHECK(S.steps == 11, "the script has 11 decode steps");
        CHECK(S.bad == 0 && S.greedy_diff == 0, "CUDA against the CPU: %d rows outside tolerance, %d greedy choices differ", S.bad,
              S.greedy_diff);
        CHECK(S.not_identical == 0, "%d rows of logits differ between graphs on and off", S.not_identical);
        check_stats(&rr[0], 0, 0, 0, 0);
        check_stats(&rr[1], 0, 0, 0, 0);
        check_stats(&rr[2], 3, 5, 3, 0);
        for (int e = 1; e < 3; e++)
                runner_close(&rr[e]);

        /* graphs refused by the backend at every graph_end: eager, once logged, same logits */
        check_refusals(g.be[1]);
        struct dsv_backend failing = *g.be[1];
        failing_ops = *g.be[1]->ops;
        failing_ops.graph_end = failing_end;
        failing.ops = &failing_ops;
        runner_close(&rr[0]);
        /* eager (first use), failed capture (then eager), eager (graphs off for good) */
        run_failing(&failing, dir, &S, "cuda failing graph_end", 0, 0, 0, 0, 3, 1);
        /* a capture that ran out of device memory: that step eager, the next recorded again:
         * eager (first use), failed capture (eager), captured, replayed */
        run_failing(&failing, dir, &S, "cuda graph_end out of memory once", 1, 1, 1, 1, 2, 1);
        /* out of memory at every capture: DSV_GRAPH_OOM_RETRIES tries, then graphs off: eager
         * (first use), then 3 + 1 failed captures (each then eager), then eager without a try */
        run_failing(&failing, dir, &S, "cuda graph_end always out of memory", 1000, 3, 0, 0, 6, DSV_GRAPH_OOM_RETRIES + 1);
        for (int e = 0; e < 3; e++) {
                free(S.lg[e]);
        }
        gt_close(&g);
        return test_result("test-gpu-graphs");
}
