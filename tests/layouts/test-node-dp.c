/* Data-parallel attention over nodes (dsv_rank_group_open_nodes and dsv_rank_group_follow with
 * ro.dp, as dsv32d --nodes N --parallel ep,dp runs them) on threads joined by the in-process
 * communicator instead of Open MPI, so it runs without MPI: node 0 drives the group, keeping
 * the other nodes' pools as remote pools (dsv_rank_group_pool), and nodes 1 and 2 follow.
 * Three sequences, two on node 1 and one on node 0 (node 2 owns none and only takes part in
 * the MoE dispatches), a prefill in one batch and greedy decode steps:
 *   - every logit equals one rank's bit for bit (exact numerics), and each sequence's length
 *     advances on node 0 as its node ran it;
 *   - each pool holds only its own sequences' pages (node 0's bookkeeping of each pool), and
 *     each follower ran only its own sequences' tokens (its dsv_follow_stats);
 *   - the pages node 1 holds, read back by node 0 (a READ job), are the bytes one rank wrote;
 *   - a sequence moved from node 1 to node 2 (read back, uploaded with node 2's next job)
 *     continues with one rank's logits;
 *   - the MTP layer over 2 nodes (a prefill whose hidden rows come back from node 1, then
 *     one MTP pass with its hidden input rows sent to node 1) gives one rank's logits and
 *     hidden rows bit for bit, and mtp_len advances on node 0's books;
 *   - a job naming a page outside the follower's pool is refused by the follower (EPROTO,
 *     "does not add up") and node 0's pass fails (the group broken) instead of hanging. */
#include "config.h"

#include <pthread.h>

#include "daemon/runtime/ranks.h"
#include "tests/unit/modelutil.h"

#define N_SEQ 3
#define DECODE 3

static const int prompt_len[N_SEQ] = {70, 21, 7};

struct node {
        struct dsv_runtime_opts ro;
        struct dsv_comm *ep, *ctl;
        struct dsv_follow_stats st;
        struct dsv_error err;
        int r;
        pthread_t th;
};

static void *follow_main(void *arg) {
        struct node *n = arg;
        n->r = dsv_rank_group_follow(&n->ro, n->ep, n->ctl, &n->st, &n->err);
        return NULL;
}

static int argmax(const float *v, int n) {
        int b = 0;
        for (int i = 1; i < n; i++)
                if (v[i] > v[b])
                        b = i;
        return b;
}

/* The scenario's passes on one rank (g == NULL: ref) or on the nodes; logits of every step into
 * out (prefill rows, then DECODE x N_SEQ rows, then N_SEQ rows after the move). */
struct run {
        struct dsv_rank_group *g;
        struct dsv_kv_seq seqs[N_SEQ];
        int seq_rank[N_SEQ];
        bool nodes;
};

static void pass(struct run *R, const struct dsv_batch *b, float *logits, const char *what) {
        struct dsv_error err = {{0}};
        int r = R->nodes ? dsv_rank_group_forward_dp(R->g, b, R->seq_rank, logits, NULL, &err)
                         : dsv_rank_group_forward(R->g, b, logits, NULL, &err);
        REQUIRE(r == 0, "%s: %s: %s", R->nodes ? "nodes" : "one rank", what, err.msg);
}

static void decode(struct run *R, int *next, int step, size_t V, float *at) {
        int32_t tok[N_SEQ], pos[N_SEQ], sq[N_SEQ];
        struct dsv_kv_seq *sp[N_SEQ];
        for (int s = 0; s < N_SEQ; s++)
                sp[s] = &R->seqs[s];
        for (int i = 0; i < N_SEQ; i++) {
                const int s = N_SEQ - 1 - i;
                tok[i] = next[s];
                pos[i] = prompt_len[s] + step;
                sq[i] = s;
        }
        const struct dsv_batch b = {.n_tokens = N_SEQ, .token = tok, .pos = pos, .seq = sq, .n_seqs = N_SEQ, .seqs = sp};
        pass(R, &b, at, "decode");
        for (int i = 0; i < N_SEQ; i++)
                next[sq[i]] = argmax(at + (size_t)i * V, (int)V);
}

static void prefill(struct run *R, const int32_t *prompt, size_t V, float *logits, int *next) {
        int32_t tok[128], pos[128], sq[128];
        struct dsv_kv_seq *sp[N_SEQ];
        int T = 0;
        for (int s = 0; s < N_SEQ; s++)
                sp[s] = &R->seqs[s];
        for (int p = 0; p < 128; p++)
                for (int s = 0; s < N_SEQ; s++)
                        if (p < prompt_len[s]) {
                                tok[T] = prompt[s * 128 + p];
                                pos[T] = p;
                                sq[T++] = s;
                        }
        const struct dsv_batch b = {.n_tokens = T, .token = tok, .pos = pos, .seq = sq, .n_seqs = N_SEQ, .seqs = sp};
        pass(R, &b, logits, "prefill");
        for (int i = 0; i < T; i++)
                if (pos[i] == prompt_len[sq[i]] - 1)
                        next[sq[i]] = argmax(logits + (size_t)i * V, (int)V);
}

static int prefill_tokens(void) {
        int T = 0;
        for (int s = 0; s < N_SEQ; s++)
                T += prompt_len[s];
        return T;
}

/* A group of n nodes on threads: followers 1..n-1 started, node 0's group opened. */
static struct dsv_rank_group *nodes_open(const struct dsv_runtime_opts *ro, int n, int timeout_ms, struct node *nd,
                                         struct dsv_comm **ep, struct dsv_comm **ctl) {
        struct dsv_rank_group *g = NULL;
        struct dsv_error err = {{0}};
        REQUIRE(dsv_comm_local_group_new(n, timeout_ms, ep) == 0 && dsv_comm_local_group_new(n, timeout_ms, ctl) == 0,
                "groups");
        for (int i = 1; i < n; i++) {
                nd[i] = (struct node){.ro = *ro, .ep = ep[i], .ctl = ctl[i]};
                REQUIRE(pthread_create(&nd[i].th, NULL, follow_main, &nd[i]) == 0, "thread");
        }
        REQUIRE(dsv_rank_group_open_nodes(ro, ep[0], ctl[0], &g, &err) == 0, "nodes: %s", err.msg);
        return g;
}

static void nodes_close(struct dsv_rank_group *g, int n, struct node *nd, struct dsv_comm **ep, struct dsv_comm **ctl) {
        dsv_rank_group_free(g);
        for (int i = 1; i < n; i++)
                pthread_join(nd[i].th, NULL);
        for (int i = 0; i < n; i++) {
                dsv_comm_free(ep[i]);
                dsv_comm_free(ctl[i]);
        }
}

/* The MTP case on one rank (n 1) or 2 nodes: logits and hidden rows of the MTP pass. */
static void mtp_case(const struct dsv_runtime_opts *ro0, int n, const int32_t *prompt, float *logits, float *hidden) {
        struct dsv_runtime_opts ro = *ro0;
        struct dsv_rank_group *g = NULL;
        struct dsv_error err = {{0}};
        struct node nd[2];
        struct dsv_comm *ep[2], *ctl[2];
        struct dsv_kv_seq seqs[N_SEQ] = {{0}};
        struct dsv_kv_seq *sp[N_SEQ];
        int seq_rank[N_SEQ];
        int32_t tok[128], pos[128], sq[128], mt[128], mp[128], ms[128];
        int T = 0, M = 0, r;

        ro.mtp = DSV_MTP_ON;
        ro.dp = n > 1;
        if (n > 1)
                g = nodes_open(&ro, n, 60000, nd, ep, ctl);
        else
                REQUIRE(dsv_rank_group_open(&ro, 1, 60000, &g, &err) == 0, "mtp, one rank: %s", err.msg);
        const size_t D = (size_t)dsv_rank_group_runtime(g, 0)->cfg->hidden_size,
                     V = (size_t)dsv_rank_group_runtime(g, 0)->cfg->vocab_size;
        for (int s = 0; s < N_SEQ; s++) {
                seq_rank[s] = n > 1 ? (s == 1 ? 0 : 1) : 0; /* node 1 owns sequences 0 and 2 */
                sp[s] = &seqs[s];
                REQUIRE(dsv_kv_seq_reserve(dsv_rank_group_pool(g, seq_rank[s]), &seqs[s], prompt_len[s]) == 0, "reserve");
                for (int p = 0; p < prompt_len[s]; p++) {
                        tok[T] = prompt[s * 128 + p], pos[T] = p, sq[T++] = s;
                        if (p + 1 < prompt_len[s])
                                mt[M] = prompt[s * 128 + p + 1], mp[M] = p, ms[M++] = s;
                }
        }
        float *h = malloc((size_t)T * D * sizeof(float)), *hin = malloc((size_t)M * D * sizeof(float)),
              *lg = malloc((size_t)T * V * sizeof(float));
        REQUIRE(h && hin && lg, "oom");
        struct dsv_batch b = {.n_tokens = T, .token = tok, .pos = pos, .seq = sq, .n_seqs = N_SEQ, .seqs = sp};
        r = n > 1 ? dsv_rank_group_forward_dp(g, &b, seq_rank, lg, h, &err) : dsv_rank_group_forward(g, &b, lg, h, &err);
        REQUIRE(r == 0, "mtp, %d: prefill: %s", n, err.msg);
        for (int i = 0, k = 0; i < T; i++)
                if (pos[i] + 1 < prompt_len[sq[i]])
                        memcpy(hin + (size_t)k++ * D, h + (size_t)i * D, D * sizeof(float));
        b = (struct dsv_batch){.n_tokens = M, .token = mt, .pos = mp, .seq = ms, .n_seqs = N_SEQ, .seqs = sp};
        r = n > 1 ? dsv_rank_group_mtp_dp(g, &b, seq_rank, hin, logits, hidden, &err)
                  : dsv_rank_group_mtp(g, &b, hin, logits, hidden, &err);
        REQUIRE(r == 0, "mtp, %d: the MTP pass: %s", n, err.msg);
        for (int s = 0; s < N_SEQ; s++) {
                CHECK(seqs[s].mtp_len == prompt_len[s] - 1 && seqs[s].len == prompt_len[s],
                      "mtp, %d: sequence %d's len %d, mtp_len %d", n, s, seqs[s].len, seqs[s].mtp_len);
                dsv_kv_seq_release(dsv_rank_group_pool(g, seq_rank[s]), &seqs[s]);
        }
        free(h);
        free(hin);
        free(lg);
        if (n > 1) {
                nodes_close(g, n, nd, ep, ctl);
                CHECK(nd[1].r == 0, "mtp: node 1 ended with %d (%s)", nd[1].r, nd[1].err.msg);
        } else
                dsv_rank_group_free(g);
}

int main(void) {
        static char dir[4200];
        struct dsv_synth_opts so = {.seed = 5, .n_shards = 2, .mtp = true}; /* the MTP layer's tensors too */
        struct dsv_model_config cfg;
        struct dsv_error err = {{0}};
        snprintf(dir, sizeof(dir), "%s/node-dp-tiny", test_dir());
        REQUIRE(dsv_model_config_preset("tiny", &cfg, &err) == 0 && dsv_synth_write(dir, &cfg, &so, &err) == 0, "%s",
                err.msg);
        struct dsv_runtime_opts ro = {.model_dir = dir, .numerics = DSV_NUMERICS_EXACT, .kv_tokens = 12 * DSV_KV_PAGE_TOKENS,
                                      .where = {.threads = 1}, .max_pass_tokens = 16, .mtp = DSV_MTP_OFF};
        struct run ref = {0}, got = {.nodes = true, .seq_rank = {1, 1, 0}};
        struct node nd[3];
        struct dsv_comm *ep[3], *ctl[3];
        int32_t prompt[N_SEQ * 128];
        int next_ref[N_SEQ], next_got[N_SEQ];

        /* one rank */
        REQUIRE(dsv_rank_group_open(&ro, 1, 60000, &ref.g, &err) == 0, "one rank: %s", err.msg);
        struct dsv_runtime *rt = dsv_rank_group_runtime(ref.g, 0);
        const size_t V = (size_t)rt->cfg->vocab_size, pb = rt->kv->page_bytes;
        const int T = prefill_tokens(), rows = T + (DECODE + 1) * N_SEQ;
        float *lref = malloc((size_t)rows * V * sizeof(float)), *lgot = malloc((size_t)rows * V * sizeof(float));
        uint8_t *kref = malloc(4 * pb), *kgot = malloc(4 * pb);
        REQUIRE(lref && lgot && kref && kgot, "oom");
        make_tokens(prompt, N_SEQ * 128, (int)V, 3);
        for (int s = 0; s < N_SEQ; s++)
                REQUIRE(dsv_kv_seq_reserve(rt->kv, &ref.seqs[s], prompt_len[s] + DECODE + 1) == 0, "reserve");
        prefill(&ref, prompt, V, lref, next_ref);
        for (int d = 0; d < DECODE; d++)
                decode(&ref, next_ref, d, V, lref + ((size_t)T + (size_t)d * N_SEQ) * V);
        REQUIRE(dsv_kv_pages_download(rt->kv, ref.seqs[0].pages, ref.seqs[0].n_pages, kref) == 0, "download");

        /* three nodes: node 1 owns sequences 0 and 1, node 0 sequence 2, node 2 none */
        ro.dp = true;
        got.g = nodes_open(&ro, 3, 60000, nd, ep, ctl);
        CHECK(dsv_rank_group_dp(got.g) && dsv_rank_group_nodes(got.g) && dsv_rank_group_size(got.g) == 3,
              "the group of nodes is not data-parallel");
        struct dsv_kv_pool *pool[3];
        for (int r = 0; r < 3; r++)
                pool[r] = dsv_rank_group_pool(got.g, r);
        CHECK(pool[0] == dsv_rank_group_runtime(got.g, 0)->kv && pool[1]->remote && pool[2]->remote && !pool[1]->base &&
                      dsv_rank_group_pool(got.g, 3) == NULL,
              "node 0's pool is its runtime's, the others' remote");
        for (int s = 0; s < N_SEQ; s++)
                REQUIRE(dsv_kv_seq_reserve(pool[got.seq_rank[s]], &got.seqs[s], prompt_len[s] + DECODE + 1) == 0, "reserve");
        prefill(&got, prompt, V, lgot, next_got);
        for (int d = 0; d < DECODE; d++)
                decode(&got, next_got, d, V, lgot + ((size_t)T + (size_t)d * N_SEQ) * V);
        CHECK(memcmp(lref, lgot, ((size_t)T + DECODE * N_SEQ) * V * sizeof(float)) == 0,
              "the nodes' logits differ from one rank's");
        for (int s = 0; s < N_SEQ; s++)
                CHECK(got.seqs[s].len == prompt_len[s] + DECODE, "sequence %d at %d on node 0's books, want %d", s,
                      got.seqs[s].len, prompt_len[s] + DECODE);
        CHECK(dsv_kv_pool_in_use(pool[0]) == got.seqs[2].n_pages &&
                      dsv_kv_pool_in_use(pool[1]) == got.seqs[0].n_pages + got.seqs[1].n_pages && dsv_kv_pool_in_use(pool[2]) == 0,
              "pages in use: node 0 %d, node 1 %d, node 2 %d", dsv_kv_pool_in_use(pool[0]), dsv_kv_pool_in_use(pool[1]),
              dsv_kv_pool_in_use(pool[2]));
        /* node 1's pages of sequence 0, read back: one rank's bytes */
        CHECK(dsv_kv_pages_download(pool[1], got.seqs[0].pages, got.seqs[0].n_pages, kgot) == 0 &&
                      memcmp(kref, kgot, (size_t)got.seqs[0].n_pages * pb) == 0,
              "node 1's KV pages of sequence 0 differ from one rank's");
        /* sequence 0 moves from node 1 to node 2, and every sequence decodes once more */
        const int n_pages0 = got.seqs[0].n_pages;
        CHECK(dsv_kv_seq_move(pool[1], pool[2], &got.seqs[0]) == 0 && dsv_kv_pool_in_use(pool[2]) == n_pages0 &&
                      dsv_kv_pool_in_use(pool[1]) == got.seqs[1].n_pages,
              "a move from node 1 to node 2");
        got.seq_rank[0] = 2;
        decode(&ref, next_ref, DECODE, V, lref + ((size_t)T + DECODE * N_SEQ) * V);
        decode(&got, next_got, DECODE, V, lgot + ((size_t)T + DECODE * N_SEQ) * V);
        CHECK(memcmp(lref + ((size_t)T + DECODE * N_SEQ) * V, lgot + ((size_t)T + DECODE * N_SEQ) * V,
                     (size_t)N_SEQ * V * sizeof(float)) == 0,
              "after the move to node 2, the logits differ from one rank's");
        CHECK(dsv_rank_group_error(got.g)[0] == 0, "the group broke: %s", dsv_rank_group_error(got.g));
        for (int s = 0; s < N_SEQ; s++)
                dsv_kv_seq_release(pool[got.seq_rank[s]], &got.seqs[s]);
        nodes_close(got.g, 3, nd, ep, ctl);
        const uint64_t own1 = (uint64_t)(prompt_len[0] + prompt_len[1] + 2 * DECODE + 1);
        CHECK(nd[1].r == 0 && nd[2].r == 0, "the followers ended with %d (%s), %d (%s)", nd[1].r, nd[1].err.msg, nd[2].r,
              nd[2].err.msg);
        CHECK(nd[1].st.tokens == own1 && nd[2].st.tokens == 1 && nd[1].st.passes == nd[2].st.passes &&
                      nd[1].st.pages_read == (uint64_t)(2 * n_pages0) && nd[2].st.pages_read == 0 &&
                      nd[2].st.writes == (uint64_t)n_pages0,
              "followers' work: node 1 %llu tokens, %llu pages read; node 2 %llu tokens, %llu writes (want %llu, %d, 1, %d)",
              (unsigned long long)nd[1].st.tokens, (unsigned long long)nd[1].st.pages_read,
              (unsigned long long)nd[2].st.tokens, (unsigned long long)nd[2].st.writes, (unsigned long long)own1,
              2 * n_pages0, n_pages0);
        printf("3 nodes: %d logit rows as one rank's; node 1 ran %llu tokens, node 2 %llu, in %llu passes\n", rows,
               (unsigned long long)nd[1].st.tokens, (unsigned long long)nd[2].st.tokens, (unsigned long long)nd[1].st.passes);

        /* the MTP layer over 2 nodes */
        {
                const int M = prefill_tokens() - N_SEQ;
                float *l1 = malloc((size_t)M * V * sizeof(float)), *l2 = malloc((size_t)M * V * sizeof(float));
                float *h1 = malloc((size_t)M * 256 * 32), *h2 = malloc((size_t)M * 256 * 32);
                REQUIRE(l1 && l2 && h1 && h2 && (size_t)rt->cfg->hidden_size * sizeof(float) <= 256 * 32, "oom");
                ro.dp = false;
                mtp_case(&ro, 1, prompt, l1, h1);
                mtp_case(&ro, 2, prompt, l2, h2);
                CHECK(memcmp(l1, l2, (size_t)M * V * sizeof(float)) == 0 &&
                              memcmp(h1, h2, (size_t)M * (size_t)rt->cfg->hidden_size * sizeof(float)) == 0,
                      "the MTP layer over 2 nodes: logits or hidden rows differ from one rank's");
                printf("MTP over 2 nodes: %d rows of logits and hidden states as one rank's\n", M);
                free(l1);
                free(l2);
                free(h1);
                free(h2);
                ro.dp = true;
        }

        /* a job naming a page outside node 1's pool: node 1 refuses it, node 0's pass fails */
        {
                struct dsv_rank_group *g = nodes_open(&ro, 2, 3000, nd, ep, ctl);
                int32_t page = 1000000, tok = 5, pos = 0, sq = 0, rank = 1;
                struct dsv_kv_seq bad = {.pages = &page, .n_pages = 1, .cap = 1};
                struct dsv_kv_seq *sp = &bad;
                const struct dsv_batch b = {.n_tokens = 1, .token = &tok, .pos = &pos, .seq = &sq, .n_seqs = 1, .seqs = &sp};
                const int r = dsv_rank_group_forward_dp(g, &b, &rank, lgot, NULL, &err);
                CHECK(r == -ENOTRECOVERABLE && strstr(dsv_rank_group_error(g), "broken"), "a bad job: node 0 got %d (%s)", r,
                      err.msg);
                pthread_join(nd[1].th, NULL);
                CHECK(nd[1].r == -EPROTO && strstr(nd[1].err.msg, "does not add up"), "a bad job: node 1 ended with %d (%s)",
                      nd[1].r, nd[1].err.msg);
                dsv_rank_group_free(g);
                for (int i = 0; i < 2; i++) {
                        dsv_comm_free(ep[i]);
                        dsv_comm_free(ctl[i]);
                }
        }
        for (int s = 0; s < N_SEQ; s++)
                dsv_kv_seq_release(rt->kv, &ref.seqs[s]);
        dsv_rank_group_free(ref.g);
        free(lref);
        free(lgot);
        free(kref);
        free(kgot);
        return test_result("test-node-dp");
}
