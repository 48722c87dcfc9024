/* Speculative decoding with the MTP layer (daemon/runtime/generate.c) on the tiny preset, in
 * both numerics, against plain decoding:
 *   - greedy: the same tokens over many prompts (lengths 1..45, whole, chunked and token-by-
 *     token prefill), 1 and 3 drafts per step, and the logits of every kept position bit for
 *     bit the plain decode steps' (the verify pass runs its 1 + k rows as decode rows), on a
 *     checkpoint whose MTP layer drafts well (drafts both accepted and rejected) and on a
 *     random one (nearly all rejected);
 *   - sampled: reproducible by seed, the first token (drawn from the prompt's logits before
 *     any draft) the plain run's;
 *   - refused: speculation without the layer, no drafts, a pool without the MTP layer's
 *     records, MTP positions that are not the sequence's next ones, a required layer that the
 *     checkpoint lacks. */
#include "config.h"

#include "daemon/runtime/generate.h"
#include "tests/unit/modelutil.h"

#define N_GEN 24
#define MAX_PROMPT 45

struct capture {
        float *rows;
        int n, cap, V;
};

static int capture(void *ud, int pos, const float *logits, int n_vocab) {
        struct capture *c = ud;
        if (pos != c->n || c->n >= c->cap)
                return -ERANGE;
        memcpy(c->rows + (size_t)c->n * n_vocab, logits, (size_t)n_vocab * sizeof(float));
        c->n++;
        return 0;
}

static const char *write_model(const char *name, bool mtp, bool predictable) {
        static char dirs[3][4200];
        static int k;
        char *dir = dirs[k++ % 3];
        struct dsv_model_config cfg;
        struct dsv_synth_opts so = {.seed = 11, .n_shards = 2, .mtp = mtp, .mtp_predictable = predictable};
        struct dsv_error err = {{0}};
        snprintf(dir, 4200, "%s/%s", test_dir(), name);
        REQUIRE(dsv_model_config_preset("tiny", &cfg, &err) == 0, "%s", err.msg);
        if (mtp)
                cfg.num_nextn_predict_layers = 1;
        REQUIRE(dsv_synth_write(dir, &cfg, &so, &err) == 0, "%s", err.msg);
        return dir;
}

static struct dsv_runtime *open_rt(const char *dir, enum dsv_numerics num, enum dsv_mtp_mode mtp) {
        /* one thread: the verify pass's two rows would otherwise fork on this busy 2-core machine */
        struct dsv_runtime_opts ro = {.model_dir = dir, .numerics = num, .mtp = mtp, .kv_tokens = 256, .where = {.threads = 1}};
        struct dsv_runtime *rt = NULL;
        struct dsv_error err = {{0}};
        REQUIRE(dsv_runtime_open(&ro, &rt, &err) == 0, "open %s: %s", dir, err.msg);
        return rt;
}

/* Greedy plain vs speculative over many prompts; returns drafted/accepted counts. */
static void greedy(const char *what, struct dsv_runtime *rt, int n_draft, int64_t *drafted, int64_t *accepted) {
        const int V = rt->cfg->vocab_size;
        struct capture a = {.cap = MAX_PROMPT + N_GEN, .V = V}, b = a;
        a.rows = malloc((size_t)a.cap * V * sizeof(float));
        b.rows = malloc((size_t)b.cap * V * sizeof(float));
        REQUIRE(a.rows && b.rows, "oom");
        for (int i = 0; i < 10; i++) {
                int32_t prompt[MAX_PROMPT], plain[N_GEN], spec[N_GEN];
                int n = i == 0 ? 1 : 1 + (i * 17) % MAX_PROMPT, chunks[3] = {0, 7, 1};
                struct dsv_generate_stats st = {0};
                struct dsv_error err = {{0}};
                make_tokens(prompt, n, V, 100 + (uint64_t)i);
                struct dsv_generate_opts o = {.n_gen = N_GEN, .chunk = chunks[i % 3], .feed_last = true,
                                              .on_logits = capture, .ud = &a, .n_draft = n_draft};
                a.n = b.n = 0;
                REQUIRE(dsv_runtime_generate(rt, prompt, n, &o, plain, NULL, &err) == 0, "plain: %s", err.msg);
                o.speculate = true;
                o.ud = &b;
                REQUIRE(dsv_runtime_generate(rt, prompt, n, &o, spec, &st, &err) == 0, "speculative: %s", err.msg);
                CHECK(memcmp(plain, spec, sizeof(plain)) == 0, "%s: prompt %d (%d tokens): greedy tokens differ", what, i, n);
                CHECK(a.n == n + N_GEN && b.n == a.n, "%s: prompt %d: %d and %d logits rows", what, i, a.n, b.n);
                size_t where = 0;
                double d = max_abs_diff(a.rows, b.rows, (size_t)a.n * V, &where);
                CHECK(memcmp(a.rows, b.rows, (size_t)a.n * V * sizeof(float)) == 0,
                      "%s: prompt %d: logits differ from plain decoding (max %.3g at position %zu)", what, i, d, where / V);
                CHECK(st.accepted <= st.drafted && st.forward_passes >= (N_GEN - 1 + n_draft) / (n_draft + 1),
                      "%s: %lld drafted, %lld accepted, %lld passes", what, (long long)st.drafted, (long long)st.accepted,
                      (long long)st.forward_passes);
                *drafted += st.drafted;
                *accepted += st.accepted;
        }
        free(a.rows);
        free(b.rows);
}

static void sampled(struct dsv_runtime *rt) {
        const int V = rt->cfg->vocab_size;
        int32_t prompt[20], x[N_GEN], y[N_GEN], z[N_GEN], p[N_GEN];
        struct dsv_error err = {{0}};
        struct dsv_generate_opts o = {.n_gen = N_GEN, .n_draft = 1, .speculate = true,
                                      .sampling = {.temperature = 0.8f, .top_p = 0.95f, .seed = 42}};
        make_tokens(prompt, 20, V, 5);
        REQUIRE(dsv_runtime_generate(rt, prompt, 20, &o, x, NULL, &err) == 0, "%s", err.msg);
        REQUIRE(dsv_runtime_generate(rt, prompt, 20, &o, y, NULL, &err) == 0, "%s", err.msg);
        CHECK(memcmp(x, y, sizeof(x)) == 0, "sampled speculative decoding is not reproducible by seed");
        o.sampling.seed = 43;
        REQUIRE(dsv_runtime_generate(rt, prompt, 20, &o, z, NULL, &err) == 0, "%s", err.msg);
        CHECK(memcmp(x, z, sizeof(x)) != 0, "seeds 42 and 43 gave the same %d sampled tokens", N_GEN);
        o.sampling.seed = 42;
        o.speculate = false;
        REQUIRE(dsv_runtime_generate(rt, prompt, 20, &o, p, NULL, &err) == 0, "%s", err.msg);
        CHECK(p[0] == x[0], "first sampled token %d, plain %d", x[0], p[0]);
}

static void refusals(const char *plain_dir, const char *mtp_dir) {
        struct dsv_error err = {{0}};
        int32_t prompt[4] = {1, 2, 3, 4}, out[4];
        struct dsv_generate_opts o = {.n_gen = 4, .n_draft = 1, .speculate = true};

        /* the checkpoint has no layer: --mtp on is an error naming it, auto runs without */
        struct dsv_backend *be;
        struct dsv_model *m = NULL;
        REQUIRE(dsv_backend_cpu_new(1, &be) == 0, "backend");
        struct dsv_model_opts mo = {.numerics = DSV_NUMERICS_EXACT, .mtp = DSV_MTP_ON};
        CHECK(dsv_model_load(plain_dir, be, &mo, &m, &err) == -ENOENT && strstr(err.msg, "has no MTP layer") &&
                      strstr(err.msg, "--mtp off"),
              "required MTP layer absent: %s", err.msg);
        dsv_backend_free(be);
        struct dsv_runtime *rt = open_rt(plain_dir, DSV_NUMERICS_EXACT, DSV_MTP_AUTO);
        CHECK(!dsv_model_has_mtp(rt->model) && dsv_model_kv_layers(rt->model) == rt->cfg->num_hidden_layers, "plain model");
        CHECK(dsv_runtime_generate(rt, prompt, 4, &o, out, NULL, &err) == -EOPNOTSUPP && strstr(err.msg, "MTP layer"),
              "speculation without the layer: %s", err.msg);
        dsv_runtime_free(rt);

        rt = open_rt(mtp_dir, DSV_NUMERICS_EXACT, DSV_MTP_ON);
        CHECK(dsv_model_has_mtp(rt->model) && dsv_model_kv_layers(rt->model) == rt->cfg->num_hidden_layers + 1 &&
                      rt->kv->layout.n_layers == rt->cfg->num_hidden_layers + 1,
              "MTP model: %d KV layers", rt->kv->layout.n_layers);
        o.n_draft = 0;
        CHECK(dsv_runtime_generate(rt, prompt, 4, &o, out, NULL, &err) == -EINVAL, "0 drafts per step accepted");
        /* MTP forward: hidden states missing, positions not the next ones, a pool without its records */
        {
                const int D = rt->cfg->hidden_size;
                float *h = calloc((size_t)4 * D, sizeof(float)), *lg = malloc((size_t)4 * rt->cfg->vocab_size * sizeof(float));
                struct dsv_kv_seq q = {0};
                struct dsv_kv_seq *qs[1] = {&q};
                int32_t pos[2] = {1, 2}, sq[2] = {0, 0};
                REQUIRE(h && lg && dsv_kv_seq_reserve(rt->kv, &q, 8) == 0, "setup");
                struct dsv_batch b = {.n_tokens = 2, .token = prompt, .pos = pos, .seq = sq, .n_seqs = 1, .seqs = qs};
                CHECK(dsv_model_mtp_forward(rt->model, rt->kv, &b, NULL, lg, NULL, &err) == -EINVAL, "no hidden states");
                memset(&err, 0, sizeof(err));
                CHECK(dsv_model_mtp_forward(rt->model, rt->kv, &b, h, lg, NULL, &err) == -EINVAL &&
                              strstr(err.msg, "next 2 positions"),
                      "MTP positions past mtp_len: %s", err.msg);
                pos[0] = 0;
                pos[1] = 1;
                CHECK(dsv_model_mtp_forward(rt->model, rt->kv, &b, h, lg, NULL, &err) == 0 && q.mtp_len == 2, "MTP at 0, 1: %s",
                      err.msg);
                q.len = 2;
                CHECK(dsv_kv_seq_truncate(rt->kv, &q, 1) == 0 && q.mtp_len == 1, "truncate rolls mtp_len back: %d", q.mtp_len);
                dsv_kv_seq_release(rt->kv, &q);
                struct dsv_kv_pool *small;
                REQUIRE(dsv_kv_pool_new(rt->be, rt->cfg, rt->kv->layout.format, 1, &small) == 0, "pool");
                REQUIRE(dsv_kv_seq_reserve(small, &q, 4) == 0, "reserve");
                memset(&err, 0, sizeof(err));
                CHECK(dsv_model_mtp_forward(rt->model, small, &b, h, lg, NULL, &err) == -EINVAL && strstr(err.msg, "KV pool has"),
                      "pool without the MTP layer: %s", err.msg);
                struct dsv_kv_pool *none = NULL;
                CHECK(dsv_kv_pool_new_layers(rt->be, rt->cfg, rt->kv->layout.format, rt->cfg->num_hidden_layers - 1, 1, &none) ==
                                      -EINVAL &&
                              !none,
                      "a pool with fewer layers than the model's");
                dsv_kv_seq_release(small, &q);
                dsv_kv_pool_free(small);
                free(h);
                free(lg);
        }
        dsv_runtime_free(rt);
}

int main(void) {
        const char *pred = write_model("mtp-gen-predictable", true, true), *rnd = write_model("mtp-gen-random", true, false),
                   *plain = write_model("mtp-gen-plain", false, false);
        for (int num = 0; num < DSV_NUMERICS_MAX; num++) {
                const char *nn = dsv_numerics_name((enum dsv_numerics)num);
                char what[128];
                int64_t drafted = 0, accepted = 0;
                struct dsv_runtime *rt = open_rt(pred, (enum dsv_numerics)num, DSV_MTP_AUTO);
                for (int k = 1; k <= 3; k += 2) {
                        drafted = accepted = 0;
                        snprintf(what, sizeof(what), "%s, predictable MTP, %d draft(s)", nn, k);
                        greedy(what, rt, k, &drafted, &accepted);
                        printf("%s: %lld of %lld drafts accepted (%.3f)\n", what, (long long)accepted, (long long)drafted,
                               (double)accepted / (double)MAX(drafted, 1));
                        CHECK(accepted > drafted / 5 && accepted < drafted, "%s: %lld of %lld accepted: both outcomes expected",
                              what, (long long)accepted, (long long)drafted);
                }
                sampled(rt);
                dsv_runtime_free(rt);
                rt = open_rt(rnd, (enum dsv_numerics)num, DSV_MTP_AUTO);
                drafted = accepted = 0;
                snprintf(what, sizeof(what), "%s, random MTP, 1 draft", nn);
                greedy(what, rt, 1, &drafted, &accepted);
                printf("%s: %lld of %lld drafts accepted\n", what, (long long)accepted, (long long)drafted);
                CHECK(drafted > 0, "%s: nothing drafted", what);
                dsv_runtime_free(rt);
        }
        refusals(plain, rnd);
        return test_result("test-mtp-generate");
}
