/* Data-parallel attention (ep,dp with each rank owning whole sequences: dsv_model_opts.dp,
 * dsv_rank_group_forward_dp) against one rank: tiny and small on 2, 4 and 8 CPU ranks, three
 * sequences of different lengths spread over the ranks (rank r owns sequence s when s % n ==
 * r, so some ranks own none and the one owning the longest prompt runs more passes than the
 * others), a prefill of every prompt in one batch and greedy decode steps. Checked:
 *   - every logit of every step equals one rank's bit for bit (exact and faithful numerics),
 *     and so the greedy tokens;
 *   - under a forced known routing pattern (tiny), every (token, slot) row of every MoE layer
 *     reaches exactly the rank owning its expert, once, and comes back once to the rank
 *     owning its sequence, from that owner;
 *   - each rank's KV pool holds only its own sequences' pages (counted), a rank with none
 *     holds none;
 *   - a batch naming a rank out of range is refused before anything runs (the group stays
 *     usable), a rank failing an idle pass breaks the group with its name instead of hanging,
 *     and dp with tp, or without a group, is refused at load;
 *   - the MTP layer through the group (dsv_rank_group_mtp_dp) gives one rank's logits and
 *     hidden rows; at the model level a rank following another's calls (dsv_model_dp_follow)
 *     leaves its logits one rank's, and ranks making different calls fail with EPROTO. */
#include "config.h"

#include <pthread.h>

#include "daemon/runtime/ranks.h"
#include "tests/unit/modelutil.h"

#define MAX_RANKS 8
#define N_SEQ 3
#define DECODE 4
#define MAX_POS 48
#define MAX_LAYERS 8

static const int prompt_len[N_SEQ] = {40, 21, 7};
static int g_E, g_K, g_layers, g_n;
static int g_seq_of[MAX_RANKS][N_SEQ]; /* rank r's local sequence index -> the test's */

/* the known pattern (no sequence in it: local indices differ between layouts) */
static bool force(void *ud, int layer, int seq, int pos, int32_t *ids, int k) {
        (void)ud, (void)seq;
        for (int j = 0; j < k; j++)
                ids[j] = (pos * 5 + j * 3 + layer) % g_E;
        return true;
}

struct rank_log {
        int rank;
        int32_t *sent, *back; /* [layer][seq][pos][slot]: rows this rank computed / got back */
        int bad;
};

static size_t row_index(int layer, int seq, int pos, int slot) {
        return (((size_t)layer * N_SEQ + (size_t)seq) * MAX_POS + (size_t)pos) * (size_t)g_K + (size_t)slot;
}

static bool row_ok(int layer, int seq, int pos, int slot) {
        return layer >= 0 && layer < g_layers && seq >= 0 && seq < N_SEQ && pos >= 0 && pos < MAX_POS && slot >= 0 &&
               slot < g_K;
}

static void on_dispatch(void *ud, int layer, int rank, int from, int seq, int pos, int slot, int expert) {
        struct rank_log *L = ud;
        const int s = from >= 0 && from < g_n && seq >= 0 && seq < N_SEQ ? g_seq_of[from][seq] : -1;
        if (rank != L->rank || s < 0 || !row_ok(layer, s, pos, slot) || dsv_expert_owner(expert, g_E, g_n) != rank) {
                L->bad++;
                return;
        }
        L->sent[row_index(layer, s, pos, slot)]++;
}

static void on_return(void *ud, int layer, int rank, int owner, int seq, int pos, int slot, int expert) {
        struct rank_log *L = ud;
        const int s = seq >= 0 && seq < N_SEQ ? g_seq_of[rank][seq] : -1;
        if (rank != L->rank || s < 0 || !row_ok(layer, s, pos, slot) || dsv_expert_owner(expert, g_E, g_n) != owner) {
                L->bad++;
                return;
        }
        L->back[row_index(layer, s, pos, slot)]++;
}

/* The scenario's outputs: the prefill's logits (every token), then each decode step's. */
struct outputs {
        float *logits;
        int32_t tokens[DECODE][N_SEQ];
        int pages[MAX_RANKS]; /* each rank's pool in use after the run */
        int seq_pages[N_SEQ];
};

static size_t n_logits(size_t V) {
        size_t t = 0;
        for (int s = 0; s < N_SEQ; s++)
                t += (size_t)prompt_len[s];
        return (t + (size_t)DECODE * N_SEQ) * V;
}

static int argmax(const float *x, int n) {
        int best = 0;
        for (int i = 1; i < n; i++)
                if (x[i] > x[best])
                        best = i;
        return best;
}

/* Runs the scenario on a group of n ranks (n == 1: the reference, through the same API's
 * replicated path) and fills out. */
static void scenario(const char *dir, int n, enum dsv_numerics num, bool forced, const int32_t *prompt,
                     struct outputs *out, struct rank_log *logs) {
        struct dsv_runtime_opts ro = {.model_dir = dir, .numerics = num, .kv_tokens = 4 * MAX_POS * N_SEQ,
                                      .where = {.threads = 1}, .max_pass_tokens = 16, .dp = n > 1};
        struct dsv_rank_group *g = NULL;
        struct dsv_error err = {{0}};
        struct dsv_kv_seq seqs[N_SEQ] = {{0}};
        struct dsv_kv_seq *sp[N_SEQ];
        int seq_rank[N_SEQ], count[MAX_RANKS] = {0};
        int32_t tok[256], pos[256], sq[256];
        int T = 0;

        g_n = n;
        REQUIRE(dsv_rank_group_open(&ro, n, 60000, &g, &err) == 0, "%d ranks: %s", n, err.msg);
        CHECK(dsv_rank_group_dp(g) == (n > 1), "%d ranks: the group's attention is %sdata-parallel", n,
              dsv_rank_group_dp(g) ? "" : "not ");
        const struct dsv_model_config *c = dsv_rank_group_runtime(g, 0)->cfg;
        const size_t V = (size_t)c->vocab_size;
        for (int s = 0; s < N_SEQ; s++) {
                seq_rank[s] = s % n;
                g_seq_of[seq_rank[s]][count[seq_rank[s]]++] = s;
                sp[s] = &seqs[s];
                struct dsv_kv_pool *kv = dsv_rank_group_runtime(g, seq_rank[s])->kv;
                REQUIRE(dsv_kv_seq_reserve(kv, &seqs[s], prompt_len[s] + DECODE) == 0, "reserve");
                out->seq_pages[s] = seqs[s].n_pages;
        }
        for (int r = 0; r < n; r++) {
                struct dsv_model_hooks h = {.ud = &logs[r], .force_experts = forced ? force : NULL,
                                            .on_expert_dispatch = on_dispatch, .on_expert_return = on_return};
                dsv_model_set_hooks(dsv_rank_group_runtime(g, r)->model, &h);
        }
        /* the prefill: every prompt in one batch, the sequences' tokens interleaved */
        for (int p = 0; p < MAX_POS; p++)
                for (int s = 0; s < N_SEQ; s++)
                        if (p < prompt_len[s]) {
                                tok[T] = prompt[s * MAX_POS + p];
                                pos[T] = p;
                                sq[T++] = s;
                        }
        struct dsv_batch b = {.n_tokens = T, .token = tok, .pos = pos, .seq = sq, .n_seqs = N_SEQ, .seqs = sp};
        int r = n > 1 ? dsv_rank_group_forward_dp(g, &b, seq_rank, out->logits, NULL, &err)
                      : dsv_rank_group_forward(g, &b, out->logits, NULL, &err);
        REQUIRE(r == 0, "%d ranks: prefill: %s", n, err.msg);
        /* the last prompt token's logits of each sequence, then greedy steps */
        float *at = out->logits + (size_t)T * V;
        int next[N_SEQ];
        for (int i = 0; i < T; i++)
                if (pos[i] == prompt_len[sq[i]] - 1)
                        next[sq[i]] = argmax(out->logits + (size_t)i * V, (int)V);
        for (int d = 0; d < DECODE; d++) {
                for (int i = 0; i < N_SEQ; i++) {
                        const int s = N_SEQ - 1 - i; /* batch order unlike the sequences' */
                        out->tokens[d][s] = tok[i] = next[s];
                        pos[i] = prompt_len[s] + d;
                        sq[i] = s;
                }
                b = (struct dsv_batch){.n_tokens = N_SEQ, .token = tok, .pos = pos, .seq = sq, .n_seqs = N_SEQ, .seqs = sp};
                r = n > 1 ? dsv_rank_group_forward_dp(g, &b, seq_rank, at, NULL, &err)
                          : dsv_rank_group_forward(g, &b, at, NULL, &err);
                REQUIRE(r == 0, "%d ranks: decode step %d: %s", n, d, err.msg);
                for (int i = 0; i < N_SEQ; i++)
                        next[sq[i]] = argmax(at + (size_t)i * V, (int)V);
                at += (size_t)N_SEQ * V;
        }
        for (int s = 0; s < N_SEQ; s++)
                CHECK(seqs[s].len == prompt_len[s] + DECODE, "%d ranks: sequence %d at %d, want %d", n, s, seqs[s].len,
                      prompt_len[s] + DECODE);
        if (n > 1) {
                /* a batch naming a rank the group lacks runs nothing, and the group goes on */
                int bad_rank[N_SEQ] = {0, n, 0};
                b = (struct dsv_batch){.n_tokens = 0, .n_seqs = N_SEQ, .seqs = sp};
                CHECK(dsv_rank_group_forward_dp(g, &b, bad_rank, NULL, NULL, &err) == -EINVAL &&
                              strstr(err.msg, "is on rank") != NULL,
                      "%d ranks: a sequence on rank %d was not refused (%s)", n, n, err.msg);
                CHECK(dsv_rank_group_forward(g, &b, NULL, NULL, &err) == -EINVAL, "%d ranks: forward without ranks ran", n);
                CHECK(dsv_rank_group_error(g)[0] == 0, "%d ranks: broken by a refused batch: %s", n, dsv_rank_group_error(g));
                CHECK(dsv_rank_group_forward_dp(g, &b, seq_rank, NULL, NULL, &err) == 0, "%d ranks: an empty pass: %s", n,
                      err.msg);
        }
        for (int i = 0; i < n; i++)
                out->pages[i] = dsv_kv_pool_in_use(dsv_rank_group_runtime(g, i)->kv);
        for (int s = 0; s < N_SEQ; s++)
                dsv_kv_seq_release(dsv_rank_group_runtime(g, seq_rank[s])->kv, &seqs[s]);
        dsv_rank_group_free(g);
}

/* The MTP layer through the group (dsv_rank_group_mtp_dp): the prefill's hidden rows, then one
 * MTP pass over every prompt position but each sequence's last; logits and hidden rows out. */
static void mtp_case(const char *dir, int n, const int32_t *prompt, float *logits, float *hidden) {
        struct dsv_runtime_opts ro = {.model_dir = dir, .numerics = DSV_NUMERICS_EXACT, .kv_tokens = 4 * MAX_POS * N_SEQ,
                                      .where = {.threads = 1}, .mtp = DSV_MTP_ON, .dp = n > 1};
        struct dsv_rank_group *g = NULL;
        struct dsv_error err = {{0}};
        struct dsv_kv_seq seqs[N_SEQ] = {{0}};
        struct dsv_kv_seq *sp[N_SEQ];
        int seq_rank[N_SEQ];
        int32_t tok[256], pos[256], sq[256], mt[256], mp[256], ms[256];
        int T = 0, M = 0;
        REQUIRE(dsv_rank_group_open(&ro, n, 60000, &g, &err) == 0, "mtp, %d ranks: %s", n, err.msg);
        const size_t D = (size_t)dsv_rank_group_runtime(g, 0)->cfg->hidden_size,
                     V = (size_t)dsv_rank_group_runtime(g, 0)->cfg->vocab_size;
        for (int s = 0; s < N_SEQ; s++) {
                seq_rank[s] = (s + 1) % n; /* rank 0 owns none when n > 3 */
                sp[s] = &seqs[s];
                REQUIRE(dsv_kv_seq_reserve(dsv_rank_group_runtime(g, seq_rank[s])->kv, &seqs[s], prompt_len[s]) == 0, "reserve");
                for (int p = 0; p < prompt_len[s]; p++) {
                        tok[T] = prompt[s * MAX_POS + p], pos[T] = p, sq[T++] = s;
                        if (p + 1 < prompt_len[s])
                                mt[M] = prompt[s * MAX_POS + p + 1], mp[M] = p, ms[M++] = s;
                }
        }
        float *h = malloc((size_t)T * D * sizeof(float)), *hin = malloc((size_t)M * D * sizeof(float)),
              *lg = malloc((size_t)T * V * sizeof(float));
        REQUIRE(h && hin && lg, "oom");
        struct dsv_batch b = {.n_tokens = T, .token = tok, .pos = pos, .seq = sq, .n_seqs = N_SEQ, .seqs = sp};
        int r = n > 1 ? dsv_rank_group_forward_dp(g, &b, seq_rank, lg, h, &err) : dsv_rank_group_forward(g, &b, lg, h, &err);
        REQUIRE(r == 0, "mtp, %d ranks: prefill: %s", n, err.msg);
        for (int i = 0, k = 0; i < T; i++)
                if (pos[i] + 1 < prompt_len[sq[i]])
                        memcpy(hin + (size_t)k++ * D, h + (size_t)i * D, D * sizeof(float));
        b = (struct dsv_batch){.n_tokens = M, .token = mt, .pos = mp, .seq = ms, .n_seqs = N_SEQ, .seqs = sp};
        r = n > 1 ? dsv_rank_group_mtp_dp(g, &b, seq_rank, hin, logits, hidden, &err)
                  : dsv_rank_group_mtp(g, &b, hin, logits, hidden, &err);
        REQUIRE(r == 0, "mtp, %d ranks: the MTP pass: %s", n, err.msg);
        for (int s = 0; s < N_SEQ; s++) {
                CHECK(seqs[s].mtp_len == prompt_len[s] - 1, "mtp, %d ranks: sequence %d's mtp_len %d", n, s, seqs[s].mtp_len);
                dsv_kv_seq_release(dsv_rank_group_runtime(g, seq_rank[s])->kv, &seqs[s]);
        }
        free(h);
        free(hin);
        free(lg);
        dsv_rank_group_free(g);
}

/* At the model level: a rank following (dsv_model_dp_follow) another's forward call and end,
 * and two ranks making different calls (a forward against an end): EPROTO on both. */
struct model_rank {
        const char *dir;
        struct dsv_backend *be;
        struct dsv_comm *comm;
        struct dsv_model *m;
        int role; /* 0: forward then end, 1: follow, 2: end at once, 3: an empty forward */
        const int32_t *toks;
        float *logits;
        int r;
        struct dsv_error err;
};

static void *model_rank_main(void *arg) {
        struct model_rank *R = arg;
        struct dsv_model_opts mo = {.numerics = DSV_NUMERICS_EXACT, .ep = R->comm, .dp = true};
        /* the load's probe pass is collective too: every rank loads in its own thread */
        REQUIRE(dsv_model_load(R->dir, R->be, &mo, &R->m, &R->err) == 0, "load: %s", R->err.msg);
        if (R->role == 1) {
                R->r = dsv_model_dp_follow(R->m, &R->err);
                return NULL;
        }
        if (R->role == 2) {
                R->r = dsv_model_dp_end(R->m, &R->err);
                return NULL;
        }
        const struct dsv_model_config *c = dsv_model_get_config(R->m);
        struct dsv_kv_pool *kv = NULL;
        struct dsv_kv_seq q = {0}, *sp[1] = {&q};
        int32_t pos[20], sq[20] = {0};
        for (int i = 0; i < 20; i++)
                pos[i] = i;
        REQUIRE(dsv_kv_pool_new(dsv_model_backend(R->m), c, dsv_numerics_kv_format(dsv_model_numerics(R->m)), 4, &kv) == 0,
                "kv");
        REQUIRE(dsv_kv_seq_reserve(kv, &q, 20) == 0, "reserve");
        struct dsv_batch b = {.n_tokens = R->role == 3 ? 0 : 20, .token = R->toks, .pos = pos, .seq = sq, .n_seqs = 1, .seqs = sp};
        R->r = dsv_model_forward(R->m, kv, &b, R->logits, &R->err);
        if (R->r == 0 && R->role == 0)
                R->r = dsv_model_dp_end(R->m, &R->err);
        dsv_kv_seq_release(kv, &q);
        dsv_kv_pool_free(kv);
        return NULL;
}

static void follow_cases(const char *dir) {
        struct dsv_backend *be[2] = {NULL, NULL};
        struct dsv_error err = {{0}};
        int32_t toks[20];
        REQUIRE(dsv_backend_cpu_new(1, &be[0]) == 0 && dsv_backend_cpu_new(1, &be[1]) == 0, "cpu backends");
        struct dsv_model *one = load_model(be[0], dir, DSV_NUMERICS_EXACT);
        const size_t V = (size_t)dsv_model_get_config(one)->vocab_size;
        float *ref = malloc(20 * V * sizeof(float)), *got = malloc(20 * V * sizeof(float));
        REQUIRE(ref && got, "oom");
        make_tokens(toks, 20, (int)V, 3);
        run_prompt(one, toks, 20, 20, ref);
        CHECK(dsv_model_dp_follow(one, &err) == -EINVAL, "follow on a model without dp");
        dsv_model_free(one);
        static const int roles[2][2] = {{0, 1}, {2, 3}};
        for (int k = 0; k < 2; k++) {
                struct dsv_comm *comms[2];
                struct model_rank R[2];
                pthread_t th[2];
                REQUIRE(dsv_comm_local_group_new(2, 20000, comms) == 0, "group");
                for (int i = 0; i < 2; i++) {
                        R[i] = (struct model_rank){.dir = dir, .be = be[i], .comm = comms[i], .role = roles[k][i],
                                                   .toks = toks, .logits = got};
                        REQUIRE(pthread_create(&th[i], NULL, model_rank_main, &R[i]) == 0, "thread");
                }
                for (int i = 0; i < 2; i++)
                        pthread_join(th[i], NULL);
                if (k == 0) {
                        CHECK(R[0].r == 0 && R[1].r == 0, "forward and follow: %s / %s", R[0].err.msg, R[1].err.msg);
                        CHECK(memcmp(got, ref, 20 * V * sizeof(float)) == 0, "a forward with a follower: other logits");
                } else
                        for (int i = 0; i < 2; i++)
                                CHECK(R[i].r == -EPROTO && strstr(R[i].err.msg, "different calls") != NULL,
                                      "rank %d of a forward against an end: %d %s", i, R[i].r, R[i].err.msg);
                for (int i = 0; i < 2; i++) {
                        dsv_model_free(R[i].m);
                        dsv_comm_free(comms[i]);
                }
        }
        free(ref);
        free(got);
        dsv_backend_free(be[0]);
        dsv_backend_free(be[1]);
}

static double worst_faithful;

static void layout(const char *name, const char *dir, const int *ranks, int n_ranks, bool forced_too) {
        struct dsv_model_config cfg;
        struct dsv_error err = {{0}};
        _cleanup_free_ char *path = NULL;
        REQUIRE(asprintf(&path, "%s/config.json", dir) >= 0, "oom");
        REQUIRE(dsv_model_config_load(path, &cfg, &err) == 0, "%s", err.msg);
        g_E = cfg.n_routed_experts;
        g_K = cfg.num_experts_per_tok;
        g_layers = cfg.num_hidden_layers;
        REQUIRE(g_layers <= MAX_LAYERS && g_E >= MAX_RANKS, "%s: the test's bounds", name);
        const size_t V = (size_t)cfg.vocab_size, NL = n_logits(V), rows = (size_t)g_layers * N_SEQ * MAX_POS * (size_t)g_K;
        int32_t prompt[N_SEQ * MAX_POS];
        make_tokens(prompt, N_SEQ * MAX_POS, cfg.vocab_size, 17);
        struct outputs ref = {.logits = malloc(NL * sizeof(float))}, got = {.logits = malloc(NL * sizeof(float))};
        struct rank_log logs[MAX_RANKS];
        REQUIRE(ref.logits && got.logits, "oom");
        for (int r = 0; r < MAX_RANKS; r++) {
                logs[r] = (struct rank_log){.rank = r, .sent = calloc(rows, 4), .back = calloc(rows, 4)};
                REQUIRE(logs[r].sent && logs[r].back, "oom");
        }
        for (int num = 0; num < 2; num++)
                for (int forced = 0; forced < 1 + forced_too; forced++) {
                        const enum dsv_numerics nm = num ? DSV_NUMERICS_FAITHFUL : DSV_NUMERICS_EXACT;
                        scenario(dir, 1, nm, forced, prompt, &ref, logs);
                        for (int k = 0; k < n_ranks; k++) {
                                const int n = ranks[k];
                                for (int r = 0; r < n; r++) {
                                        memset(logs[r].sent, 0, rows * 4);
                                        memset(logs[r].back, 0, rows * 4);
                                        logs[r].bad = 0;
                                }
                                scenario(dir, n, nm, forced, prompt, &got, logs);
                                size_t where = 0;
                                const double d = max_abs_diff(got.logits, ref.logits, NL, &where);
                                if (num)
                                        worst_faithful = MAX(worst_faithful, d);
                                CHECK(memcmp(got.logits, ref.logits, NL * sizeof(float)) == 0,
                                      "%s, %s numerics, %s routing, %d ranks: logits differ from one rank's (max |diff| %g "
                                      "at %zu)",
                                      name, dsv_numerics_name(nm), forced ? "forced" : "own", n, d, where);
                                CHECK(memcmp(got.tokens, ref.tokens, sizeof(ref.tokens)) == 0,
                                      "%s, %d ranks: greedy tokens differ from one rank's", name, n);
                                /* each pool: its own sequences' pages, nothing else */
                                int total = 0;
                                for (int r = 0; r < n; r++) {
                                        int want = 0;
                                        for (int s = 0; s < N_SEQ; s++)
                                                want += s % n == r ? got.seq_pages[s] : 0;
                                        total += got.pages[r];
                                        CHECK(got.pages[r] == want, "%s, %d ranks: rank %d's pool holds %d pages, its sequences %d",
                                              name, n, r, got.pages[r], want);
                                }
                                CHECK(total == ref.pages[0] && total > 0, "%s, %d ranks: %d pages in all, one rank holds %d",
                                      name, n, total, ref.pages[0]);
                                /* every row: sent once to its expert's rank, back once to its sequence's */
                                int bad = 0;
                                size_t checked = 0;
                                for (int l = 0; l < g_layers; l++) {
                                        if (!dsv_cfg_layer_is_moe(&cfg, l))
                                                continue;
                                        for (int s = 0; s < N_SEQ; s++)
                                                for (int p = 0; p < prompt_len[s] + DECODE; p++)
                                                        for (int j = 0; j < g_K; j++) {
                                                                const size_t i = row_index(l, s, p, j);
                                                                int sent = 0, back = 0, back_on = -1;
                                                                for (int r = 0; r < n; r++) {
                                                                        sent += logs[r].sent[i];
                                                                        back += logs[r].back[i];
                                                                        if (logs[r].back[i])
                                                                                back_on = r;
                                                                }
                                                                /* forced: the expert the pattern names is on a known rank */
                                                                bool placed = true;
                                                                if (forced) {
                                                                        placed = false;
                                                                        for (int jj = 0; jj < g_K; jj++) {
                                                                                const int e = (p * 5 + jj * 3 + l) % g_E;
                                                                                placed |= logs[dsv_expert_owner(e, g_E, n)].sent[i] == 1;
                                                                        }
                                                                }
                                                                if (sent != 1 || back != 1 || back_on != s % n || !placed) {
                                                                        if (bad++ < 5)
                                                                                fprintf(stderr,
                                                                                        "%s, %d ranks: layer %d seq %d pos %d slot %d: "
                                                                                        "computed %d times, back %d times (on rank "
                                                                                        "%d)%s\n",
                                                                                        name, n, l, s, p, j, sent, back, back_on,
                                                                                        placed ? "" : ", not on its expert's rank");
                                                                }
                                                                checked++;
                                                        }
                                }
                                for (int r = 0; r < n; r++)
                                        bad += logs[r].bad;
                                CHECK(bad == 0 && checked > 0, "%s, %d ranks: %d of %zu rows misrouted", name, n, bad, checked);
                        }
                }
        for (int r = 0; r < MAX_RANKS; r++) {
                free(logs[r].sent);
                free(logs[r].back);
        }
        free(ref.logits);
        free(got.logits);
}

int main(void) {
        static const int ranks[] = {2, 4, 8};
        const char *tiny = fixture_tiny("dp-model", 13);
        layout("tiny", tiny, ranks, 3, true);

        /* a rank that fails a pass in which it owns nothing: the group breaks, naming it */
        {
                struct dsv_runtime_opts ro = {.model_dir = tiny, .numerics = DSV_NUMERICS_EXACT, .kv_tokens = 256,
                                              .where = {.threads = 1}, .dp = true};
                struct dsv_rank_group *g = NULL;
                struct dsv_error err = {{0}};
                struct dsv_kv_seq q = {0}, *sp[1] = {&q};
                const int32_t tok[2] = {5, 6}, pos[2] = {0, 1}, sq[2] = {0, 0};
                const int seq_rank[1] = {0};
                float *logits = malloc(2 * 4096 * sizeof(float));
                REQUIRE(logits, "oom");
                setenv("DSV32_TEST_RANK_FAULT", "3:1", 1);
                REQUIRE(dsv_rank_group_open(&ro, 4, 20000, &g, &err) == 0, "open: %s", err.msg);
                unsetenv("DSV32_TEST_RANK_FAULT");
                REQUIRE(dsv_kv_seq_reserve(dsv_rank_group_runtime(g, 0)->kv, &q, 2) == 0, "reserve");
                struct dsv_batch b = {.n_tokens = 2, .token = tok, .pos = pos, .seq = sq, .n_seqs = 1, .seqs = sp};
                CHECK(dsv_rank_group_forward_dp(g, &b, seq_rank, logits, NULL, &err) == -ENOTRECOVERABLE &&
                              strstr(err.msg, "rank 3") != NULL,
                      "a failing idle rank: %s", err.msg);
                CHECK(strstr(dsv_rank_group_error(g), "rank 3") != NULL, "group error: %s", dsv_rank_group_error(g));
                CHECK(dsv_rank_group_forward_dp(g, &b, seq_rank, logits, NULL, &err) == -ENOTRECOVERABLE,
                      "a broken group ran a pass");
                dsv_kv_seq_release(dsv_rank_group_runtime(g, 0)->kv, &q);
                dsv_rank_group_free(g);
                free(logits);
        }
        /* refused at load: dp with tp, dp without a group */
        {
                struct dsv_backend *be = NULL;
                struct dsv_comm *comms[2];
                struct dsv_model *m = NULL;
                struct dsv_error err = {{0}};
                struct dsv_model_opts mo = {.numerics = DSV_NUMERICS_EXACT, .dp = true};
                REQUIRE(dsv_backend_cpu_new(1, &be) == 0, "cpu backend");
                CHECK(dsv_model_load(tiny, be, &mo, &m, &err) == -EINVAL && m == NULL &&
                              strstr(err.msg, "data-parallel attention needs a group") != NULL,
                      "dp without a group: %s", err.msg);
                REQUIRE(dsv_comm_local_group_new(2, 1000, comms) == 0, "group");
                mo.ep = comms[0];
                mo.tp = true;
                CHECK(dsv_model_load(tiny, be, &mo, &m, &err) == -EINVAL && m == NULL && strstr(err.msg, "exclude") != NULL,
                      "dp with tp: %s", err.msg);
                dsv_comm_free(comms[0]);
                dsv_comm_free(comms[1]);
                dsv_backend_free(be);
        }

        follow_cases(tiny);
        /* the MTP layer on 1, 2 and 4 ranks (rank 0 owning none on 4) */
        {
                static char dir[4200];
                struct dsv_model_config cfg;
                struct dsv_synth_opts so = {.seed = 8, .n_shards = 2, .mtp = true};
                struct dsv_error err = {{0}};
                snprintf(dir, sizeof(dir), "%s/dp-model-mtp", test_dir());
                REQUIRE(dsv_model_config_preset("tiny", &cfg, &err) == 0, "%s", err.msg);
                REQUIRE(dsv_synth_write(dir, &cfg, &so, &err) == 0, "%s", err.msg);
                int M = 0;
                for (int s = 0; s < N_SEQ; s++)
                        M += prompt_len[s] - 1;
                const size_t nl = (size_t)M * (size_t)cfg.vocab_size, nh = (size_t)M * (size_t)cfg.hidden_size;
                float *lr = malloc(nl * 4), *hr = malloc(nh * 4), *lg = malloc(nl * 4), *hg = malloc(nh * 4);
                int32_t prompt[N_SEQ * MAX_POS];
                REQUIRE(lr && hr && lg && hg, "oom");
                make_tokens(prompt, N_SEQ * MAX_POS, cfg.vocab_size, 21);
                mtp_case(dir, 1, prompt, lr, hr);
                for (int n = 2; n <= 4; n *= 2) {
                        mtp_case(dir, n, prompt, lg, hg);
                        CHECK(memcmp(lg, lr, nl * 4) == 0 && memcmp(hg, hr, nh * 4) == 0,
                              "mtp, %d ranks: logits or hidden rows differ from one rank's", n);
                }
                free(lr);
                free(hr);
                free(lg);
                free(hg);
        }

        if (getenv("DSV32_DP_SMALL") && strcmp(getenv("DSV32_DP_SMALL"), "0") == 0)
                printf("small skipped (DSV32_DP_SMALL=0)\n");
        else {
                static char dir[4200];
                struct dsv_model_config cfg;
                struct dsv_synth_opts so = {.seed = 6, .n_shards = 2};
                struct dsv_error err = {{0}};
                snprintf(dir, sizeof(dir), "%s/dp-model-small", test_dir());
                REQUIRE(dsv_model_config_preset("small", &cfg, &err) == 0, "%s", err.msg);
                REQUIRE(dsv_synth_write(dir, &cfg, &so, &err) == 0, "%s", err.msg);
                layout("small", dir, ranks, 3, false);
        }
        printf("largest faithful difference from one rank: %g (exact: bit for bit, checked)\n", worst_faithful);
        return test_result("test-dp-model");
}
