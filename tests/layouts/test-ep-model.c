/* The ep,dp layout at the model level (daemon/model/, dsv_model_opts.ep): tiny on 2 and 4 CPU
 * ranks (threads joined by the in-process communicator) gives the logits of one rank bit for
 * bit (prefill chunks and decode steps, faithful and exact numerics), with its own routing
 * and with a forced known routing pattern; under the pattern every (token, slot) row is
 * computed exactly once, on the rank owning its expert (contiguous blocks); each rank's loader
 * delivers exactly the bytes of the whole model less the other ranks' experts; more ranks
 * than experts is refused with the cause. */
#include "config.h"

#include <pthread.h>

#include "tests/unit/modelutil.h"

#define N_TOK 40
#define MAX_RANKS 4

static int g_layers, g_E, g_K;

/* the known pattern: distinct experts per token, spread over every rank */
static bool force(void *ud, int layer, int seq, int pos, int32_t *ids, int k) {
        for (int j = 0; j < k; j++)
                ids[j] = (pos * 5 + j * 3 + layer) % g_E;
        return true;
}

struct rank {
        int rank, n;
        const char *dir;
        enum dsv_numerics num;
        bool forced;
        struct dsv_comm *comm;
        const int32_t *toks;
        int chunk;
        float *logits;
        uint64_t bytes;
        /* rows seen by this rank: [layer][pos][slot] = expert + 1, and how often */
        int32_t *seen;
        int32_t *times;
};

static void on_row(void *ud, int layer, int rank, int seq, int pos, int slot, int expert) {
        struct rank *R = ud;
        size_t i = ((size_t)layer * N_TOK + (size_t)pos) * (size_t)g_K + (size_t)slot;
        if (rank != R->rank || seq != 0 || pos < 0 || pos >= N_TOK || slot < 0 || slot >= g_K || layer < 0 || layer >= g_layers)
                R->times[0] = -1000000; /* an impossible report: fails the count check */
        else {
                R->seen[i] = expert + 1;
                R->times[i]++;
        }
}

static void *rank_main(void *arg) {
        struct rank *R = arg;
        struct dsv_backend *be = NULL;
        struct dsv_model_opts mo = {.numerics = R->num, .ep = R->comm};
        struct dsv_model *m = NULL;
        struct dsv_error err = {{0}};
        REQUIRE(dsv_backend_cpu_new(1, &be) == 0, "cpu backend");
        REQUIRE(dsv_model_load(R->dir, be, &mo, &m, &err) == 0, "rank %d: load: %s", R->rank, err.msg);
        R->bytes = dsv_model_load_stats(m)->bytes_tensors;
        struct dsv_model_hooks h = {.ud = R, .force_experts = R->forced ? force : NULL, .on_expert_row = on_row};
        dsv_model_set_hooks(m, &h);
        run_prompt(m, R->toks, N_TOK, R->chunk, R->logits);
        dsv_model_free(m);
        dsv_backend_free(be);
        return NULL;
}

/* tensor bytes of routed expert e over every MoE layer (weights and scales) */
static uint64_t expert_bytes(const struct dsv_checkpoint *ck, const struct dsv_model_config *c, int e) {
        static const char *const proj[] = {"gate_proj", "up_proj", "down_proj"};
        static const char *const suf[] = {"weight", "weight_scale_inv"};
        uint64_t b = 0;
        char name[200];
        for (int l = 0; l < c->num_hidden_layers; l++)
                for (int p = 0; p < 3; p++)
                        for (int s = 0; s < 2; s++) {
                                snprintf(name, sizeof(name), "model.layers.%d.mlp.experts.%d.%s.%s", l, e, proj[p], suf[s]);
                                const struct dsv_ckpt_tensor *t = dsv_checkpoint_find(ck, name);
                                b += t ? t->nbytes : 0;
                        }
        return b;
}

int main(void) {
        const char *dir = fixture_tiny("ep-model", 11);
        struct dsv_backend *be = NULL;
        int32_t toks[N_TOK];
        REQUIRE(dsv_backend_cpu_new(1, &be) == 0, "cpu backend");
        struct dsv_model *m1 = load_model(be, dir, DSV_NUMERICS_FAITHFUL);
        const struct dsv_model_config *c = dsv_model_get_config(m1);
        const size_t V = (size_t)c->vocab_size, n_logits = (size_t)N_TOK * V;
        const uint64_t total1 = dsv_model_load_stats(m1)->bytes_tensors;
        uint64_t eb[512], all_experts = 0;
        g_layers = c->num_hidden_layers;
        g_E = c->n_routed_experts;
        g_K = c->num_experts_per_tok;
        REQUIRE(g_E <= 512, "experts");
        for (int e = 0; e < g_E; e++) {
                eb[e] = expert_bytes(dsv_model_get_checkpoint(m1), c, e);
                all_experts += eb[e];
                CHECK(eb[e] > 0, "expert %d has no tensors in the checkpoint", e);
        }
        make_tokens(toks, N_TOK, c->vocab_size, 5);
        float *ref = malloc(n_logits * sizeof(float)), *got[MAX_RANKS];
        const size_t rows = (size_t)g_layers * N_TOK * (size_t)g_K;
        for (int i = 0; i < MAX_RANKS; i++)
                REQUIRE((got[i] = malloc(n_logits * sizeof(float))), "oom");
        REQUIRE(ref, "oom");

        for (int num = 0; num < 2; num++)
                for (int forced = 0; forced < 2; forced++)
                        for (int chunk_i = 0; chunk_i < 2; chunk_i++) {
                                const enum dsv_numerics nm = num ? DSV_NUMERICS_EXACT : DSV_NUMERICS_FAITHFUL;
                                const int chunk = chunk_i ? 1 : 16; /* decode steps / prefill chunks */
                                if (num == 1 && chunk == 1)
                                        continue; /* exact numerics: the prefill path is enough */
                                struct dsv_model *mr = num ? load_model(be, dir, nm) : m1;
                                struct dsv_model_hooks h = {.force_experts = forced ? force : NULL};
                                dsv_model_set_hooks(mr, &h);
                                run_prompt(mr, toks, N_TOK, chunk, ref);
                                dsv_model_set_hooks(mr, NULL);
                                if (mr != m1)
                                        dsv_model_free(mr);
                                for (int n = 2; n <= MAX_RANKS; n *= 2) {
                                        struct dsv_comm *comms[MAX_RANKS];
                                        struct rank R[MAX_RANKS];
                                        pthread_t th[MAX_RANKS];
                                        REQUIRE(dsv_comm_local_group_new(n, 120000, comms) == 0, "group");
                                        for (int r = 0; r < n; r++) {
                                                R[r] = (struct rank){.rank = r, .n = n, .dir = dir, .num = nm, .forced = forced,
                                                                     .comm = comms[r], .toks = toks, .chunk = chunk,
                                                                     .logits = got[r], .seen = calloc(rows, sizeof(int32_t)),
                                                                     .times = calloc(rows, sizeof(int32_t))};
                                                REQUIRE(R[r].seen && R[r].times, "oom");
                                                REQUIRE(pthread_create(&th[r], NULL, rank_main, &R[r]) == 0, "thread");
                                        }
                                        for (int r = 0; r < n; r++)
                                                pthread_join(th[r], NULL);
                                        for (int r = 0; r < n; r++) {
                                                size_t where = 0;
                                                CHECK(memcmp(got[r], ref, n_logits * sizeof(float)) == 0,
                                                      "%s, %s routing, chunk %d: rank %d of %d: logits differ from one rank's "
                                                      "(max |diff| %g at %zu)",
                                                      dsv_numerics_name(nm), forced ? "forced" : "own", chunk, r, n,
                                                      max_abs_diff(got[r], ref, n_logits, &where), where);
                                                uint64_t want = total1;
                                                for (int e = 0; e < g_E; e++)
                                                        if (dsv_expert_owner(e, g_E, n) != r)
                                                                want -= eb[e];
                                                CHECK(R[r].bytes == want, "rank %d of %d loaded %llu tensor bytes, want %llu", r,
                                                      n, (unsigned long long)R[r].bytes, (unsigned long long)want);
                                        }
                                        /* every row of every MoE layer: exactly once, on its expert's rank */
                                        int bad = 0;
                                        size_t n_rows = 0;
                                        for (int l = 0; l < g_layers; l++) {
                                                if (!dsv_cfg_layer_is_moe(c, l))
                                                        continue;
                                                for (int p = 0; p < N_TOK; p++)
                                                        for (int j = 0; j < g_K; j++) {
                                                                size_t i = ((size_t)l * N_TOK + (size_t)p) * (size_t)g_K + (size_t)j;
                                                                int times = 0, on = -1, e = -1;
                                                                for (int r = 0; r < n; r++)
                                                                        if (R[r].times[i]) {
                                                                                times += R[r].times[i];
                                                                                on = r;
                                                                                e = R[r].seen[i] - 1;
                                                                        }
                                                                /* the router lists a forced set in its own order */
                                                                bool in_set = false;
                                                                for (int jj = 0; jj < g_K; jj++)
                                                                        in_set |= e == (p * 5 + jj * 3 + l) % g_E;
                                                                if (times != 1 || e < 0 || on != dsv_expert_owner(e, g_E, n) ||
                                                                    (forced && !in_set)) {
                                                                        if (bad++ < 5)
                                                                                fprintf(stderr,
                                                                                        "layer %d pos %d slot %d: computed %d times, "
                                                                                        "last on rank %d, expert %d%s\n",
                                                                                        l, p, j, times, on, e,
                                                                                        forced && !in_set ? " (not forced)" : "");
                                                                }
                                                                n_rows++;
                                                        }
                                        }
                                        for (int r = 0; r < n; r++)
                                                CHECK(R[r].times[0] >= 0, "rank %d reported a row outside the batch", r);
                                        CHECK(bad == 0 && n_rows > 0, "%d of %zu expert rows misplaced on %d ranks", bad, n_rows, n);
                                        uint64_t sum = 0;
                                        for (int r = 0; r < n; r++)
                                                sum += R[r].bytes - (total1 - all_experts);
                                        CHECK(sum == all_experts, "the ranks read %llu expert bytes together, the checkpoint has %llu",
                                              (unsigned long long)sum, (unsigned long long)all_experts);
                                        for (int r = 0; r < n; r++) {
                                                free(R[r].seen);
                                                free(R[r].times);
                                                dsv_comm_free(comms[r]);
                                        }
                                }
                        }

        /* more ranks than experts: refused before any collective */
        {
                struct dsv_comm **comms = calloc((size_t)g_E + 1, sizeof(*comms));
                struct dsv_model_opts mo = {.numerics = DSV_NUMERICS_FAITHFUL};
                struct dsv_model *m = NULL;
                struct dsv_error err = {{0}};
                REQUIRE(comms && dsv_comm_local_group_new(g_E + 1, 1000, comms) == 0, "group");
                mo.ep = comms[0];
                CHECK(dsv_model_load(dir, be, &mo, &m, &err) == -EINVAL && m == NULL, "%d ranks for %d experts loaded", g_E + 1, g_E);
                CHECK(strstr(err.msg, "at most one rank per expert") != NULL, "message: %s", err.msg);
                for (int r = 0; r <= g_E; r++)
                        dsv_comm_free(comms[r]);
                free(comms);
        }
        for (int i = 0; i < MAX_RANKS; i++)
                free(got[i]);
        free(ref);
        dsv_model_free(m1);
        dsv_backend_free(be);
        return test_result("test-ep-model");
}
