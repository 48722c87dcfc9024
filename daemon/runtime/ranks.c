/* The CPU ranks of one process: the follower threads, the hand-off of rank 0's passes to them
 * and the group's failure (see ranks.h); and the same hand-off to the follower nodes of a
 * group of hosts, serialized over a communicator (the job message below). */
#include "config.h"

#include "daemon/runtime/ranks.h"

#include <pthread.h>
#include <unistd.h>

#include "daemon/util.h"

enum job_kind {
        JOB_NONE,
        JOB_POOL,    /* take a KV pool of rank 0's geometry */
        JOB_FORWARD, /* dsv_runtime_forward_hidden */
        JOB_MTP,     /* dsv_runtime_mtp */
        JOB_DP_FORWARD, /* data-parallel attention: its own part of the batch (struct dp_part) */
        JOB_DP_MTP,
        JOB_QUIT,
        JOB_READ, /* nodes: send node 0 some of this node's KV pages (a remote pool's read) */
        JOB_KIND_MAX,
};

/* Data-parallel attention (ro->dp): rank r's part of a batch, the sequences it owns, with
 * where each of its tokens came from (idx: the batch index) and its own outputs. */
struct dp_part {
        struct dsv_batch b;
        int32_t *token, *pos, *seq, *idx;
        bool *want, *as_decode;
        struct dsv_kv_seq **seqs;
        float *logits, *hidden, *hidden_in;
        int n_out;
};

struct follower {
        struct dsv_rank_group *g;
        int rank;
        struct dsv_runtime_opts ro;
        struct dsv_runtime *rt;
        struct dsv_kv_seq *seqs, **seq_ptrs; /* its copies of rank 0's sequences */
        int cap_seqs;
        float *logits; /* ep,tp: its copy of the logits rank 0 wants (they are gathered over the group) */
        size_t cap_logits;
        uint64_t passes;
        int r; /* the last job's result (the load first) */
        struct dsv_error err;
};

/* Node 0: the KV writes a follower node makes before its next job (records: int32 dst, int32
 * src, then when src is -1 the page's bytes). */
struct write_queue {
        uint8_t *buf;
        size_t len, cap;
        int n;
};

/* Node 0: a follower's job to send, its header and where its payload is in the message. */
struct job_out {
        int64_t hdr[12];
        size_t off, bytes;
};

/* Node 0 with data-parallel attention over nodes: node r's pool as node 0 keeps it (its
 * bookkeeping; the bytes are on node r: writes queued, reads a round trip). */
struct remote_pool {
        struct dsv_rank_group *g;
        int rank;
        struct dsv_kv_remote io;
        struct dsv_kv_pool *pool;
};

struct dsv_rank_group {
        int n;
        struct dsv_comm **comms;          /* [n] */
        struct dsv_runtime *rt0;          /* rank 0's (the caller drives it) */
        struct follower *f;               /* [n]; f[0] unused but for its pass count */
        pthread_t *threads;               /* [n], followers 1..n_started */
        int n_started;
        pthread_mutex_t lock;
        pthread_cond_t work, done;
        /* the job (written by rank 0 under lock while the followers wait, read by them after) */
        uint64_t job;                     /* number of the job published last */
        int pending;                      /* followers that have not finished it */
        enum job_kind kind;
        struct dsv_batch b;               /* rank 0's batch; seqs are each follower's copies */
        struct dsv_kv_seq *seq0;          /* [b.n_seqs] rank 0's sequences before its pass */
        int cap_seq0;
        bool *no_logits;                  /* followers want no logits (ep,dp) */
        bool tp;                          /* ep,tp: lm_head is split, every rank computes the wanted rows */
        bool dp;                          /* ep,dp with data-parallel attention: each rank its own sequences */
        struct dp_part *part;             /* [n] the batch's parts (dp) */
        int cap_tokens;
        const float *hidden_in;
        int pool_pages, pool_layers;
        enum dsv_kv_format pool_format;
        /* tests: rank fault_rank fails its pass number fault_pass (DSV32_TEST_RANK_FAULT=R:P) */
        int fault_rank;
        uint64_t fault_pass;
        char broken[1100];
        char lost[1100]; /* rank 0's device error, said as one (dsv_rank_group_error) */
        /* nodes (dsv_rank_group_open_nodes, dsv_rank_group_follow): ranks 1..n-1 are the
         * other processes; ctl carries the jobs, ep is this node's rank of the experts' group */
        struct dsv_comm *ctl, *ep;
        struct node_info *node;           /* [n] what each node reported when it had loaded */
        struct write_queue *wq;           /* node 0: [n] each follower's KV writes since its last job
                                             (replicated attention: wq[0], every follower's) */
        bool wq_failed;                   /* one did not fit in memory: the followers are behind */
        struct job_out *out;              /* node 0: [n] the jobs being sent */
        struct remote_pool *remote;       /* node 0, data-parallel attention: [n] the followers' pools */
        uint8_t *msg;                     /* the jobs' payloads (built on node 0, received on a follower) */
        size_t msg_cap, msg_len;
        int64_t flags;                    /* follower: the job's flags */
        const int32_t *read_pages;        /* follower: a READ job's pages */
        int read_n;
        struct dsv_follow_stats stats;    /* follower */
};

struct node_info {
        int64_t r, weight_bytes, threads;
};

/* The job message, node 0 to every follower node over ctl: a header of JOB_WORDS int64 (one
 * call, every follower its own), then the payloads (a second call, which every node makes,
 * one with an empty payload too), each in this order:
 *   token, pos, seq            int32 [n_tokens] each
 *   per sequence               int32 len, mtp_len, n_pages, pages[n_pages]
 *   as_decode (FLAG_DECODE)    uint8 [n_seqs], padded with zeros to a multiple of 4
 *   hidden_in (FLAG_HIDDEN)    float [n_tokens * hidden_size]
 *   want_logits (FLAG_LOGITS)  uint8 [n_tokens] (0 or 1), padded with zeros to a multiple of 4:
 *                              ep,tp (lm_head's all-gather is collective: every node computes
 *                              the rows node 0 wants) and ep,dp (the rows of its part)
 *   READ's pages               int32 [n_tokens]: the pages to send back
 *   the pool's writes          n_ops records: int32 dst, int32 src, then when src is -1 the
 *                              page's bytes (page_bytes); applied before the job
 * Replicated attention (no --parallel, or ep,tp): every follower gets the same job, node 0's
 * batch, and the writes node 0 made in its own pool. Data-parallel attention (ep,dp): node R
 * gets its part of the batch (its sequences; their pages are its pool's) and the writes node 0
 * made in node R's pool as it keeps it (struct remote_pool); after a DP pass every node makes
 * a third call, the replies: node R's logits rows (the wanted ones, in its part's order), then
 * with FLAG_RET_HIDDEN its hidden rows; after a READ the same call carries the pages' bytes
 * from the node named to node 0. */
enum {
        JW_KIND,
        JW_TOKENS,
        JW_SEQS,
        JW_FLAGS,
        JW_PAYLOAD,
        JW_OPS,
        JW_POOL_PAGES,
        JW_POOL_LAYERS,
        JW_POOL_FORMAT,
        JW_PASS_TOKENS,
        JOB_WORDS = 12,
};
#define FLAG_DECODE 1
#define FLAG_HIDDEN 2
#define FLAG_LOGITS 4
#define FLAG_RET_HIDDEN 8
_Static_assert(sizeof(((struct job_out *)0)->hdr) == JOB_WORDS * sizeof(int64_t), "job header");

int dsv_parallel_layout_check(const char *layout, const char **why) {
        static const char *const later[] = {"ep", "dp", "tp", "tp,dp", "dp,tp"};
        const char *w = "";
        int r = 0;
        if (!layout || (strcmp(layout, "ep,dp") != 0 && strcmp(layout, "ep,tp") != 0)) {
                r = -EINVAL;
                w = "unknown layout (ep,dp: routed experts split over the ranks, the rest replicated; ep,tp: the same "
                    "with attention heads, dense layers and lm_head split too)";
                for (size_t i = 0; layout && i < ARRAY_SIZE(later); i++)
                        if (strcmp(layout, later[i]) == 0) {
                                r = -EOPNOTSUPP;
                                w = "this layout is not implemented yet; ep,dp (routed experts split over the ranks, "
                                    "the rest replicated) and ep,tp (attention heads, dense layers and lm_head split "
                                    "too) are";
                        }
        }
        if (why)
                *why = w;
        return r;
}

static bool fault_now(struct dsv_rank_group *g, int rank, uint64_t pass, struct dsv_error *err) {
        if (g->fault_rank != rank || g->fault_pass != pass)
                return false;
        dsv_error_set(err, EIO, "rank %d: fault injected in pass %llu (DSV32_TEST_RANK_FAULT)", rank,
                      (unsigned long long)pass);
        return true;
}

/* A group of n ranks with its lock and conditions, and the tests' fault (DSV32_TEST_RANK_FAULT:
 * rank R fails its pass P); the rest is the caller's. NULL when out of memory. */
static struct dsv_rank_group *group_new(int n) {
        struct dsv_rank_group *g = calloc(1, sizeof(*g));
        if (!g)
                return NULL;
        g->n = n;
        g->fault_rank = -1;
        pthread_mutex_init(&g->lock, NULL);
        pthread_cond_init(&g->work, NULL);
        pthread_cond_init(&g->done, NULL);
        const char *fault = getenv("DSV32_TEST_RANK_FAULT");
        int fr;
        unsigned long long fp;
        if (fault && sscanf(fault, "%d:%llu", &fr, &fp) == 2)
                g->fault_rank = fr, g->fault_pass = fp;
        return g;
}

static int follower_copy_seqs(struct follower *f) {
        const struct dsv_rank_group *g = f->g;
        if (g->b.n_seqs > f->cap_seqs) {
                struct dsv_kv_seq *s = realloc(f->seqs, (size_t)g->b.n_seqs * sizeof(*s));
                struct dsv_kv_seq **p;
                if (!s)
                        return -ENOMEM;
                f->seqs = s;
                if (!(p = realloc(f->seq_ptrs, (size_t)g->b.n_seqs * sizeof(*p))))
                        return -ENOMEM;
                f->seq_ptrs = p;
                f->cap_seqs = g->b.n_seqs;
        }
        for (int i = 0; i < g->b.n_seqs; i++) {
                f->seqs[i] = g->seq0[i]; /* the page table is rank 0's, read only during the pass */
                f->seq_ptrs[i] = &f->seqs[i];
        }
        return 0;
}

static int follower_run(struct follower *f, enum job_kind kind) {
        struct dsv_rank_group *g = f->g;
        struct dsv_batch b = g->b;
        int r;
        switch (kind) {
        case JOB_POOL: {
                struct dsv_kv_pool *kv;
                if ((r = dsv_kv_pool_new_layers(f->rt->be, f->rt->cfg, g->pool_format, g->pool_layers, g->pool_pages, &kv)) < 0)
                        return dsv_error_set(&f->err, r, "rank %d: cannot allocate its KV cache (%d pages of %llu bytes): %s",
                                             f->rank, g->pool_pages, (unsigned long long)f->rt->kv_page_bytes, strerror(-r));
                dsv_kv_pool_free(f->rt->kv);
                f->rt->kv = kv;
                return 0;
        }
        case JOB_DP_FORWARD:
        case JOB_DP_MTP: {
                const struct dp_part *pt = &g->part[f->rank];
                f->passes++;
                if (fault_now(g, f->rank, f->passes, &f->err))
                        return -EIO;
                return kind == JOB_DP_FORWARD
                               ? dsv_runtime_forward_hidden(f->rt, &pt->b, pt->logits, pt->hidden, &f->err)
                               : dsv_runtime_mtp(f->rt, &pt->b, pt->hidden_in, pt->logits, pt->hidden, &f->err);
        }
        case JOB_FORWARD:
        case JOB_MTP:
                f->passes++;
                if (fault_now(g, f->rank, f->passes, &f->err))
                        return -EIO;
                if ((r = follower_copy_seqs(f)) < 0)
                        return dsv_error_set(&f->err, r, "rank %d: out of memory", f->rank);
                b.seqs = f->seq_ptrs;
                float *logits = NULL;
                if (g->tp) {
                        /* the head's all-gather is collective: the rows rank 0 wants, here too */
                        size_t n = 0;
                        for (int i = 0; i < b.n_tokens; i++)
                                n += !b.want_logits || b.want_logits[i];
                        n *= (size_t)f->rt->cfg->vocab_size;
                        if (n > f->cap_logits) {
                                float *l = realloc(f->logits, n * sizeof(float));
                                if (!l)
                                        return dsv_error_set(&f->err, ENOMEM, "rank %d: out of memory", f->rank);
                                f->logits = l;
                                f->cap_logits = n;
                        }
                        logits = f->logits;
                } else
                        b.want_logits = g->no_logits;
                r = kind == JOB_FORWARD ? dsv_runtime_forward_hidden(f->rt, &b, logits, NULL, &f->err)
                                        : dsv_runtime_mtp(f->rt, &b, g->hidden_in, logits, NULL, &f->err);
                return r;
        default:
                return 0;
        }
}

static void *follower_main(void *arg) {
        struct follower *f = arg;
        struct dsv_rank_group *g = f->g;
        uint64_t seen = 0;

        f->r = dsv_runtime_open(&f->ro, &f->rt, &f->err);
        pthread_mutex_lock(&g->lock);
        for (;;) {
                enum job_kind kind;
                if (--g->pending == 0)
                        pthread_cond_signal(&g->done);
                while (g->job == seen)
                        pthread_cond_wait(&g->work, &g->lock);
                seen = g->job;
                kind = g->kind;
                if (kind == JOB_QUIT)
                        break;
                pthread_mutex_unlock(&g->lock);
                /* a follower that failed to load only answers (the group is not used) */
                f->r = f->rt ? follower_run(f, kind) : f->r;
                if (f->r < 0 && f->rt)
                        dsv_comm_abort(g->comms[f->rank]); /* the other ranks stop at their next collective */
                pthread_mutex_lock(&g->lock);
        }
        pthread_mutex_unlock(&g->lock);
        return NULL;
}

/* Publishes a job and waits for the followers to have taken it (under lock). */
static void publish(struct dsv_rank_group *g, enum job_kind kind) {
        pthread_mutex_lock(&g->lock);
        g->kind = kind;
        g->pending = g->n_started;
        g->job++;
        pthread_cond_broadcast(&g->work);
        pthread_mutex_unlock(&g->lock);
}

static void wait_done(struct dsv_rank_group *g) {
        pthread_mutex_lock(&g->lock);
        while (g->pending > 0)
                pthread_cond_wait(&g->done, &g->lock);
        pthread_mutex_unlock(&g->lock);
}

/* The first failure among the ranks (rank 0's r0 first): a rank's own error before the
 * "group aborted" the others saw after it. Returns 0 when every rank succeeded. */
static int first_failure(struct dsv_rank_group *g, int r0, const struct dsv_error *e0, struct dsv_error *err) {
        for (int pass = 0; pass < 2; pass++)
                for (int i = 0; i < g->n; i++) {
                        int r = i == 0 ? r0 : g->f[i].r;
                        const char *msg = i == 0 ? e0->msg : g->f[i].err.msg;
                        if (r >= 0 || (pass == 0 && (r == -ECONNABORTED || r == -ECANCELED)))
                                continue;
                        if (!msg[0])
                                msg = strerror(-r);
                        if (strncmp(msg, "rank ", 5) == 0)
                                dsv_error_set(err, -r, "%s", msg);
                        else
                                dsv_error_set(err, -r, "rank %d: %s", i, msg);
                        return r;
                }
        return 0;
}

static int send_job(struct dsv_rank_group *g, enum job_kind kind, const struct dsv_batch *b, const float *hidden_in,
                    struct dsv_error *err);
static int send_parts(struct dsv_rank_group *g, enum job_kind kind, bool want_hidden, struct dsv_error *err);
static int recv_parts(struct dsv_rank_group *g, bool want_hidden, struct dsv_error *err);

/* n rows of v floats (one at least: malloc of 0 may give NULL). */
static float *logits_rows(int n, size_t v) { return malloc((size_t)MAX(n, 1) * v * sizeof(float)); }

static void dp_part_clear(struct dp_part *pt) {
        free(pt->token); /* pos, seq, idx with it */
        free(pt->want);  /* as_decode with it */
        free(pt->seqs);
        free(pt->logits);
        free(pt->hidden);
        free(pt->hidden_in);
        memset(pt, 0, sizeof(*pt));
}

static void dp_parts_free(struct dsv_rank_group *g) {
        for (int i = 0; g->part && i < g->n; i++)
                dp_part_clear(&g->part[i]);
        free(g->part);
        g->part = NULL;
}

void dsv_rank_group_free(struct dsv_rank_group *g) {
        if (!g)
                return;
        if (g->ctl && g->rt0 && !g->broken[0] && dsv_comm_status(g->ctl) == 0) {
                struct dsv_error e = {{0}};
                send_job(g, JOB_QUIT, NULL, NULL, &e); /* the followers end; a failure: they learn from the bootstrap */
        }
        if (g->n_started) {
                publish(g, JOB_QUIT);
                for (int i = 1; i <= g->n_started; i++)
                        pthread_join(g->threads[i], NULL);
        }
        dsv_runtime_free(g->rt0); /* its pool's mirrors are the followers' pools, freed below */
        for (int i = 1; g->f && i < g->n; i++) {
                dsv_runtime_free(g->f[i].rt);
                free(g->f[i].seqs);
                free(g->f[i].seq_ptrs);
                free(g->f[i].logits);
        }
        for (int i = 0; g->comms && i < g->n; i++)
                dsv_comm_free(g->comms[i]);
        dp_parts_free(g);
        pthread_mutex_destroy(&g->lock);
        pthread_cond_destroy(&g->work);
        pthread_cond_destroy(&g->done);
        free(g->comms);
        free(g->f);
        free(g->threads);
        free(g->seq0);
        free(g->no_logits);
        free(g->node);
        for (int i = 0; g->wq && i < g->n; i++)
                free(g->wq[i].buf);
        for (int i = 1; g->remote && i < g->n; i++)
                dsv_kv_pool_free(g->remote[i].pool);
        free(g->wq);
        free(g->out);
        free(g->remote);
        free(g->msg);
        free(g);
}

int dsv_rank_group_open(const struct dsv_runtime_opts *ro, int n_ranks, int timeout_ms, struct dsv_rank_group **ret,
                        struct dsv_error *err) {
        struct dsv_rank_group *g;
        struct dsv_runtime_opts o0 = *ro;
        struct dsv_error e0 = {{0}};
        int r, r0;

        if (n_ranks < 1 || n_ranks > 256 || timeout_ms < 1 || ro->ep)
                return dsv_error_set(err, EINVAL, "ranks %d: must be 1..256", n_ranks);
        if (n_ranks > 1 && ro->backend && strcmp(ro->backend, "cpu") != 0)
                return dsv_error_set(err, EINVAL,
                                     "ranks %d: the ranks are CPU ranks so far (threads over the in-process communicator): "
                                     "backend cpu, or ranks 1",
                                     n_ranks);
        if (n_ranks > 1) {
                struct dsv_model_config cfg;
                _cleanup_free_ char *path = NULL;
                if (asprintf(&path, "%s/config.json", ro->model_dir) < 0)
                        return -ENOMEM;
                if ((r = dsv_model_config_load(path, &cfg, err)) < 0)
                        return r;
                if (n_ranks > cfg.n_routed_experts)
                        return dsv_error_set(err, EINVAL,
                                             "ranks %d: the model has %d routed experts and a rank owns whole experts: at "
                                             "most %d ranks",
                                             n_ranks, cfg.n_routed_experts, cfg.n_routed_experts);
                if (ro->tp && (r = dsv_model_tp_check(&cfg, n_ranks, err)) < 0)
                        return r;
        }
        if (!(g = group_new(n_ranks)))
                return -ENOMEM;
        g->tp = ro->tp && n_ranks > 1;
        g->dp = ro->dp && n_ranks > 1;
        if (n_ranks == 1) {
                o0.tp = false; /* one rank holds everything */
                o0.dp = false;
                if ((r = dsv_runtime_open(&o0, &g->rt0, err)) < 0)
                        goto fail;
                *ret = g;
                return 0;
        }
        g->comms = calloc((size_t)n_ranks, sizeof(*g->comms));
        g->f = calloc((size_t)n_ranks, sizeof(*g->f));
        g->threads = calloc((size_t)n_ranks, sizeof(*g->threads));
        if (!g->comms || !g->f || !g->threads) {
                r = -ENOMEM;
                goto fail;
        }
        if ((r = dsv_comm_local_group_new(n_ranks, timeout_ms, g->comms)) < 0) {
                dsv_error_set(err, -r, "cannot create the group of %d ranks: %s", n_ranks, strerror(-r));
                goto fail;
        }
        {
                long cpus = ro->where.threads ? ro->where.threads : sysconf(_SC_NPROCESSORS_ONLN);
                o0.where.threads = (int)MAX(1, cpus / n_ranks);
        }
        o0.kv_share = n_ranks;
        for (int i = 1; i < n_ranks; i++) {
                struct follower *f = &g->f[i];
                f->g = g;
                f->rank = i;
                f->ro = o0;
                f->ro.ep = g->comms[i];
                f->ro.kv_bytes = 0;
                f->ro.kv_tokens = 1; /* replaced by a pool of rank 0's geometry (JOB_POOL) */
                f->ro.load.progress = NULL; /* rank 0 reports its own */
                f->ro.load.ud = NULL;
        }
        o0.ep = g->comms[0];
        /* the followers load (and then wait for their first job) while rank 0 loads */
        g->pending = n_ranks - 1;
        for (int i = 1; i < n_ranks; i++) {
                if ((r = -pthread_create(&g->threads[i], NULL, follower_main, &g->f[i])) < 0) {
                        dsv_error_set(err, -r, "cannot start rank %d's thread: %s", i, strerror(-r));
                        pthread_mutex_lock(&g->lock);
                        g->pending -= n_ranks - i; /* those never started */
                        pthread_mutex_unlock(&g->lock);
                        wait_done(g);
                        goto fail;
                }
                g->n_started = i;
        }
        r0 = dsv_runtime_open(&o0, &g->rt0, &e0);
        wait_done(g);
        if ((r = first_failure(g, r0, &e0, err)) < 0)
                goto fail;
        /* the followers' pools: rank 0's geometry, page for page */
        g->pool_pages = g->rt0->kv->n_pages;
        g->pool_layers = g->rt0->kv->layout.n_layers;
        g->pool_format = g->rt0->kv->layout.format;
        publish(g, JOB_POOL);
        wait_done(g);
        if ((r = first_failure(g, 0, &e0, err)) < 0)
                goto fail;
        /* replicated attention: rank 0's pool is the state and the others mirror it; with
         * data-parallel attention each pool holds its own rank's sequences only */
        for (int i = 1; i < n_ranks && !g->dp; i++)
                if ((r = dsv_kv_pool_add_mirror(g->rt0->kv, g->f[i].rt->kv)) < 0) {
                        dsv_error_set(err, -r, "rank %d: its KV cache is not rank 0's geometry", i);
                        goto fail;
                }
        /* every rank cuts a batch into the same passes (its collectives pair up): rank 0's cap,
         * as each rank's own default follows its share of the weights */
        for (int i = 1; i < n_ranks; i++)
                dsv_model_set_pass_tokens(g->f[i].rt->model, dsv_model_pass_tokens(g->rt0->model));
        *ret = g;
        return 0;
fail:
        dsv_rank_group_free(g);
        return r;
}

int dsv_rank_group_size(const struct dsv_rank_group *g) { return g->n; }

struct dsv_runtime *dsv_rank_group_runtime(const struct dsv_rank_group *g, int rank) {
        if (rank < 0 || rank >= g->n)
                return NULL;
        return rank == 0 ? g->rt0 : g->f ? g->f[rank].rt : NULL;
}

bool dsv_rank_group_nodes(const struct dsv_rank_group *g) { return g->ctl != NULL; }

struct dsv_kv_pool *dsv_rank_group_pool(const struct dsv_rank_group *g, int rank) {
        if (rank < 0 || rank >= g->n)
                return NULL;
        if (rank > 0 && g->remote)
                return g->remote[rank].pool;
        const struct dsv_runtime *rt = dsv_rank_group_runtime(g, rank);
        return rt ? rt->kv : NULL;
}

uint64_t dsv_rank_group_weight_bytes(const struct dsv_rank_group *g, int rank) {
        if (g->node)
                return rank >= 0 && rank < g->n ? (uint64_t)g->node[rank].weight_bytes : 0;
        const struct dsv_runtime *rt = dsv_rank_group_runtime(g, rank);
        return rt ? dsv_model_weight_bytes(rt->model) : 0;
}

int dsv_rank_group_threads(const struct dsv_rank_group *g, int rank) {
        if (g->node)
                return rank >= 0 && rank < g->n ? (int)g->node[rank].threads : 0;
        const struct dsv_runtime *rt = dsv_rank_group_runtime(g, rank);
        return rt ? rt->be->n_threads : 0;
}

void dsv_rank_group_experts(const struct dsv_rank_group *g, int rank, int *first, int *last) {
        const int E = g->rt0->cfg->n_routed_experts;
        /* rank r owns [ceil(r*E/n), ceil((r+1)*E/n)) (dsv_expert_owner) */
        *first = (int)(((int64_t)rank * E + g->n - 1) / g->n);
        *last = (int)(((int64_t)(rank + 1) * E + g->n - 1) / g->n) - 1;
}

const char *dsv_rank_group_error(struct dsv_rank_group *g) {
        const char *dev;
        if (g->broken[0])
                return g->broken;
        dev = dsv_runtime_device_error(g->rt0);
        if (!dev[0])
                return "";
        if (!g->lost[0])
                snprintf(g->lost, sizeof(g->lost), "the device is lost: %.1000s", dev);
        return g->lost;
}

/* Rank 0's pass with the followers running the same one. */
static int group_pass(struct dsv_rank_group *g, enum job_kind kind, const struct dsv_batch *b, const float *hidden_in,
                      float *logits, float *hidden, struct dsv_error *err) {
        struct dsv_error e0 = {{0}};
        int r0, r;

        if (g->broken[0])
                return dsv_error_set(err, ENOTRECOVERABLE, "%s", g->broken);
        if (b->n_seqs > g->cap_seq0) {
                struct dsv_kv_seq *s = realloc(g->seq0, (size_t)b->n_seqs * sizeof(*s));
                if (!s)
                        return dsv_error_set(err, ENOMEM, "out of memory");
                g->seq0 = s;
                g->cap_seq0 = b->n_seqs;
        }
        if (b->n_tokens > g->cap_tokens) {
                bool *w = realloc(g->no_logits, (size_t)b->n_tokens * sizeof(*w));
                if (!w)
                        return dsv_error_set(err, ENOMEM, "out of memory");
                memset(w, 0, (size_t)b->n_tokens * sizeof(*w));
                g->no_logits = w;
                g->cap_tokens = b->n_tokens;
        }
        for (int i = 0; i < b->n_seqs; i++)
                g->seq0[i] = *b->seqs[i];
        g->b = *b;
        g->b.seqs = NULL;
        g->hidden_in = hidden_in;
        if (g->ctl) {
                if (g->wq_failed)
                        r = dsv_error_set(&e0, ENOMEM, "out of memory for the KV cache writes the other nodes must make");
                else
                        r = send_job(g, kind, b, hidden_in, &e0);
                if (r < 0) {
                        snprintf(g->broken, sizeof(g->broken), "the group of %d nodes is broken: %.1000s", g->n, e0.msg);
                        return dsv_error_set(err, ENOTRECOVERABLE, "%s", g->broken);
                }
        }
        publish(g, kind);
        g->f[0].passes++;
        if (fault_now(g, 0, g->f[0].passes, &e0))
                r0 = -EIO;
        else
                r0 = kind == JOB_FORWARD ? dsv_runtime_forward_hidden(g->rt0, b, logits, hidden, &e0)
                                         : dsv_runtime_mtp(g->rt0, b, hidden_in, logits, hidden, &e0);
        if (r0 < 0)
                dsv_comm_abort(g->ctl ? g->ep : g->comms[0]);
        wait_done(g);
        if ((r = first_failure(g, r0, &e0, err)) >= 0)
                return r0;
        /* the ranks are out of step now (KV written on some, not others): nothing more runs */
        snprintf(g->broken, sizeof(g->broken), "the group of %d %s is broken: %.1000s", g->n, g->ctl ? "nodes" : "ranks",
                 err->msg);
        return dsv_error_set(err, ENOTRECOVERABLE, "%s", g->broken);
}

int dsv_rank_group_forward(struct dsv_rank_group *g, const struct dsv_batch *b, float *logits, float *hidden,
                           struct dsv_error *err) {
        if (g->dp)
                return dsv_error_set(err, EINVAL, "data-parallel attention: each sequence's rank is needed (forward_dp)");
        if (g->n == 1)
                return dsv_runtime_forward_hidden(g->rt0, b, logits, hidden, err);
        return group_pass(g, JOB_FORWARD, b, NULL, logits, hidden, err);
}

int dsv_rank_group_mtp(struct dsv_rank_group *g, const struct dsv_batch *b, const float *hidden_in, float *logits,
                       float *hidden_out, struct dsv_error *err) {
        if (g->dp)
                return dsv_error_set(err, EINVAL, "data-parallel attention: each sequence's rank is needed (mtp_dp)");
        if (g->n == 1)
                return dsv_runtime_mtp(g->rt0, b, hidden_in, logits, hidden_out, err);
        return group_pass(g, JOB_MTP, b, hidden_in, logits, hidden_out, err);
}

/* ------------------------------------------------------------------ data-parallel attention */

bool dsv_rank_group_dp(const struct dsv_rank_group *g) { return g->dp; }

/* The batch cut into each rank's part (g->part): its sequences in batch order, their tokens in
 * batch order. Checks what the parts rely on; nothing is communicated. */
static int dp_split(struct dsv_rank_group *g, const struct dsv_batch *b, const int *seq_rank, const float *hidden_in,
                    bool want_hidden, struct dsv_error *err) {
        const size_t V = (size_t)g->rt0->cfg->vocab_size, D = (size_t)g->rt0->cfg->hidden_size;
        _cleanup_free_ int *loc = NULL;

        if (!g->part && !(g->part = calloc((size_t)g->n, sizeof(*g->part))))
                return dsv_error_set(err, ENOMEM, "out of memory");
        for (int r = 0; r < g->n; r++)
                dp_part_clear(&g->part[r]);
        if (b->n_tokens < 0 || b->n_seqs < 0 || (b->n_seqs && (!b->seqs || !seq_rank)) ||
            (b->n_tokens && (!b->token || !b->pos || !b->seq)))
                return dsv_error_set(err, EINVAL, "data-parallel pass: an incomplete batch");
        if (!(loc = calloc((size_t)MAX(b->n_seqs, 1), sizeof(*loc))))
                return dsv_error_set(err, ENOMEM, "out of memory");
        for (int s = 0; s < b->n_seqs; s++) {
                if (seq_rank[s] < 0 || seq_rank[s] >= g->n || !b->seqs[s])
                        return dsv_error_set(err, EINVAL, "data-parallel pass: sequence %d is on rank %d of %d", s,
                                             seq_rank[s], g->n);
                loc[s] = g->part[seq_rank[s]].b.n_seqs++;
        }
        for (int i = 0; i < b->n_tokens; i++) {
                if (b->seq[i] < 0 || b->seq[i] >= b->n_seqs)
                        return dsv_error_set(err, EINVAL, "data-parallel pass: token %d names sequence %d of %d", i, b->seq[i],
                                             b->n_seqs);
                struct dp_part *pt = &g->part[seq_rank[b->seq[i]]];
                pt->b.n_tokens++;
                pt->n_out += !b->want_logits || b->want_logits[i];
        }
        for (int r = 0; r < g->n; r++) {
                struct dp_part *pt = &g->part[r];
                const size_t nt = (size_t)MAX(pt->b.n_tokens, 1), ns = (size_t)MAX(pt->b.n_seqs, 1);
                pt->token = malloc(nt * 4 * sizeof(int32_t));
                pt->want = malloc(nt + ns);
                pt->seqs = malloc(ns * sizeof(*pt->seqs));
                pt->logits = logits_rows(pt->n_out, V);
                pt->hidden = want_hidden ? malloc(nt * D * sizeof(float)) : NULL;
                pt->hidden_in = hidden_in ? malloc(nt * D * sizeof(float)) : NULL;
                if (!pt->token || !pt->want || !pt->seqs || !pt->logits || (want_hidden && !pt->hidden) ||
                    (hidden_in && !pt->hidden_in))
                        return dsv_error_set(err, ENOMEM, "out of memory for rank %d's part of the batch", r);
                pt->pos = pt->token + nt;
                pt->seq = pt->pos + nt;
                pt->idx = pt->seq + nt;
                pt->as_decode = pt->want + nt;
                pt->b = (struct dsv_batch){.token = pt->token, .pos = pt->pos, .seq = pt->seq, .want_logits = pt->want,
                                           .seqs = pt->seqs, .as_decode = b->as_decode ? pt->as_decode : NULL};
        }
        for (int s = 0; s < b->n_seqs; s++) {
                struct dp_part *pt = &g->part[seq_rank[s]];
                pt->seqs[pt->b.n_seqs] = b->seqs[s];
                pt->as_decode[pt->b.n_seqs] = b->as_decode && b->as_decode[s];
                pt->b.n_seqs++;
        }
        for (int i = 0; i < b->n_tokens; i++) {
                struct dp_part *pt = &g->part[seq_rank[b->seq[i]]];
                const int k = pt->b.n_tokens++;
                pt->token[k] = b->token[i];
                pt->pos[k] = b->pos[i];
                pt->seq[k] = loc[b->seq[i]];
                pt->idx[k] = i;
                pt->want[k] = !b->want_logits || b->want_logits[i];
                if (hidden_in)
                        memcpy(pt->hidden_in + (size_t)k * D, hidden_in + (size_t)i * D, D * sizeof(float));
        }
        return 0;
}

/* Every part's outputs into the caller's rows (batch order; logits of the wanted tokens). */
static int dp_gather(struct dsv_rank_group *g, const struct dsv_batch *b, float *logits, float *hidden) {
        const size_t V = (size_t)g->rt0->cfg->vocab_size, D = (size_t)g->rt0->cfg->hidden_size;
        _cleanup_free_ int32_t *dest = malloc((size_t)MAX(b->n_tokens, 1) * sizeof(int32_t));
        if (!dest)
                return -ENOMEM;
        for (int i = 0, k = 0; i < b->n_tokens; i++)
                dest[i] = (!b->want_logits || b->want_logits[i]) ? k++ : -1;
        for (int r = 0; r < g->n; r++) {
                const struct dp_part *pt = &g->part[r];
                for (int k = 0, o = 0; k < pt->b.n_tokens; k++) {
                        const int i = pt->idx[k];
                        if (pt->want[k] && logits)
                                memcpy(logits + (size_t)dest[i] * V, pt->logits + (size_t)o * V, V * sizeof(float));
                        o += pt->want[k];
                        if (hidden)
                                memcpy(hidden + (size_t)i * D, pt->hidden + (size_t)k * D, D * sizeof(float));
                }
        }
        return 0;
}

static int group_pass_dp(struct dsv_rank_group *g, enum job_kind kind, const struct dsv_batch *b, const int *seq_rank,
                         const float *hidden_in, float *logits, float *hidden, struct dsv_error *err) {
        struct dsv_error e0 = {{0}};
        int r0, r;

        if (!g->dp)
                return dsv_error_set(err, EINVAL, "the group's attention is not data-parallel");
        if (g->broken[0])
                return dsv_error_set(err, ENOTRECOVERABLE, "%s", g->broken);
        if ((r = dp_split(g, b, seq_rank, hidden_in, hidden != NULL, err)) < 0)
                return r; /* nothing ran: the group is as it was */
        if (g->ctl) {
                if (g->wq_failed)
                        r = dsv_error_set(&e0, ENOMEM, "out of memory for the KV cache writes the other nodes must make");
                else
                        r = send_parts(g, kind, hidden != NULL, &e0);
                if (r < 0) {
                        snprintf(g->broken, sizeof(g->broken), "the group of %d nodes is broken: %.1000s", g->n, e0.msg);
                        return dsv_error_set(err, ENOTRECOVERABLE, "%s", g->broken);
                }
        }
        publish(g, kind);
        g->f[0].passes++;
        const struct dp_part *pt = &g->part[0];
        if (fault_now(g, 0, g->f[0].passes, &e0))
                r0 = -EIO;
        else
                r0 = kind == JOB_DP_FORWARD ? dsv_runtime_forward_hidden(g->rt0, &pt->b, pt->logits, pt->hidden, &e0)
                                            : dsv_runtime_mtp(g->rt0, &pt->b, pt->hidden_in, pt->logits, pt->hidden, &e0);
        if (r0 < 0)
                dsv_comm_abort(g->ctl ? g->ep : g->comms[0]);
        wait_done(g);
        if (g->ctl && r0 >= 0 && (r0 = recv_parts(g, hidden != NULL, &e0)) >= 0)
                /* the other nodes' passes stored their tokens in their pools: node 0's page
                 * tables say so as a pass here would (len, or mtp_len for the MTP layer) */
                for (int i = 1; i < g->n; i++)
                        for (int k = 0; k < g->part[i].b.n_tokens; k++) {
                                struct dsv_kv_seq *q = g->part[i].seqs[g->part[i].seq[k]];
                                if (kind == JOB_DP_FORWARD)
                                        q->len++;
                                else
                                        q->mtp_len++;
                        }
        if ((r = first_failure(g, r0, &e0, err)) >= 0) {
                if ((r = dp_gather(g, b, logits, hidden)) < 0)
                        return dsv_error_set(err, -r, "out of memory");
                return 0;
        }
        snprintf(g->broken, sizeof(g->broken), "the group of %d %s is broken: %.1000s", g->n, g->ctl ? "nodes" : "ranks",
                 err->msg);
        return dsv_error_set(err, ENOTRECOVERABLE, "%s", g->broken);
}

int dsv_rank_group_forward_dp(struct dsv_rank_group *g, const struct dsv_batch *b, const int *seq_rank, float *logits,
                              float *hidden, struct dsv_error *err) {
        return group_pass_dp(g, JOB_DP_FORWARD, b, seq_rank, NULL, logits, hidden, err);
}

int dsv_rank_group_mtp_dp(struct dsv_rank_group *g, const struct dsv_batch *b, const int *seq_rank, const float *hidden_in,
                          float *logits, float *hidden_out, struct dsv_error *err) {
        if (!hidden_in)
                return dsv_error_set(err, EINVAL, "MTP forward without the previous hidden states");
        return group_pass_dp(g, JOB_DP_MTP, b, seq_rank, hidden_in, logits, hidden_out, err);
}

/* ------------------------------------------------------------------ nodes */

static int grow(uint8_t **buf, size_t *cap, size_t need) {
        if (need <= *cap)
                return 0;
        size_t n = MAX(need, *cap * 2);
        uint8_t *p = realloc(*buf, n);
        if (!p)
                return -ENOMEM;
        *buf = p;
        *cap = n;
        return 0;
}

static uint8_t *put(uint8_t *at, const void *src, size_t n) {
        if (n)
                memcpy(at, src, n);
        return at + n;
}

/* n flags as bytes 0/1 (all 1 when v is NULL), padded with zeros to a multiple of 4. */
static uint8_t *put_flags(uint8_t *at, const bool *v, int n) {
        const size_t padded = ((size_t)n + 3) / 4 * 4;
        for (int i = 0; i < n; i++)
                at[i] = !v || v[i];
        memset(at + n, 0, padded - (size_t)n);
        return at + padded;
}

static size_t pad4(size_t n) { return (n + 3) / 4 * 4; }

/* One KV write for a follower's next job (a record: int32 dst, int32 src, then when src is
 * -1 the page's bytes). */
static int queue_add(struct write_queue *q, size_t page_bytes, int32_t dst, int32_t src, const void *bytes) {
        const size_t need = q->len + 8 + (src < 0 ? page_bytes : 0);
        const int32_t rec[2] = {dst, src};
        if (grow(&q->buf, &q->cap, need) < 0)
                return -ENOMEM;
        memcpy(q->buf + q->len, rec, sizeof(rec));
        if (src < 0)
                memcpy(q->buf + q->len + 8, bytes, page_bytes);
        q->len = need;
        q->n++;
        return 0;
}

/* The pool's remote mirror (replicated attention: struct dsv_kv_pool.remote_write), queued for
 * every follower's next job. */
static void queue_write(void *ud, int32_t dst, int32_t src, const void *bytes) {
        struct dsv_rank_group *g = ud;
        if (queue_add(&g->wq[0], g->rt0->kv->page_bytes, dst, src, bytes) < 0)
                g->wq_failed = true; /* the followers are behind: the next pass fails */
}

/* The bytes of a batch (or part) in a job's payload, and the payload itself (see the job
 * message above); flags: the want_logits flags go too. */
static size_t batch_bytes(const struct dsv_batch *b, const float *hidden_in, bool flags, size_t D) {
        size_t bytes = (size_t)b->n_tokens * 12 + (size_t)b->n_seqs * 12;
        for (int i = 0; i < b->n_seqs; i++)
                bytes += (size_t)b->seqs[i]->n_pages * 4;
        if (b->as_decode)
                bytes += pad4((size_t)b->n_seqs);
        if (hidden_in)
                bytes += (size_t)b->n_tokens * D * sizeof(float);
        if (flags)
                bytes += pad4((size_t)b->n_tokens);
        return bytes;
}

static uint8_t *batch_put(uint8_t *at, const struct dsv_batch *b, const float *hidden_in, bool flags, size_t D) {
        at = put(at, b->token, (size_t)b->n_tokens * 4);
        at = put(at, b->pos, (size_t)b->n_tokens * 4);
        at = put(at, b->seq, (size_t)b->n_tokens * 4);
        for (int i = 0; i < b->n_seqs; i++) {
                const struct dsv_kv_seq *q = b->seqs[i];
                const int32_t h[3] = {q->len, q->mtp_len, q->n_pages};
                at = put(at, h, sizeof(h));
                at = put(at, q->pages, (size_t)q->n_pages * 4);
        }
        if (b->as_decode)
                at = put_flags(at, b->as_decode, b->n_seqs);
        if (hidden_in)
                at = put(at, hidden_in, (size_t)b->n_tokens * D * sizeof(float));
        if (flags)
                at = put_flags(at, b->want_logits, b->n_tokens);
        return at;
}

/* Node 0: adds follower r's job to the jobs to send (g->out[r], its payload in g->msg): kind,
 * the batch b (NULL: none) with hidden_in and the want flags (flags), extra (a READ's pages),
 * then the KV writes queued for it. */
static int job_add(struct dsv_rank_group *g, int r, enum job_kind kind, const struct dsv_batch *b, const float *hidden_in,
                   bool flags, int64_t more_flags, const void *extra, size_t extra_bytes) {
        const size_t D = (size_t)g->rt0->cfg->hidden_size;
        const struct write_queue *q = &g->wq[g->dp ? r : 0];
        struct job_out *o = &g->out[r];
        size_t bytes = extra_bytes + (kind == JOB_QUIT ? 0 : q->len);

        memset(o->hdr, 0, sizeof(o->hdr));
        o->hdr[JW_KIND] = kind;
        if (b) {
                bytes += batch_bytes(b, hidden_in, flags, D);
                o->hdr[JW_TOKENS] = b->n_tokens;
                o->hdr[JW_SEQS] = b->n_seqs;
                o->hdr[JW_FLAGS] = (b->as_decode ? FLAG_DECODE : 0) | (hidden_in ? FLAG_HIDDEN : 0) | (flags ? FLAG_LOGITS : 0);
        }
        o->hdr[JW_FLAGS] |= more_flags;
        if (kind == JOB_READ)
                o->hdr[JW_TOKENS] = (int64_t)(extra_bytes / 4);
        if (kind == JOB_POOL) {
                o->hdr[JW_POOL_PAGES] = g->pool_pages;
                o->hdr[JW_POOL_LAYERS] = g->pool_layers;
                o->hdr[JW_POOL_FORMAT] = g->pool_format;
                o->hdr[JW_PASS_TOKENS] = dsv_model_pass_tokens(g->rt0->model);
        }
        o->hdr[JW_OPS] = kind == JOB_QUIT ? 0 : q->n;
        o->hdr[JW_PAYLOAD] = (int64_t)bytes;
        if (grow(&g->msg, &g->msg_cap, g->msg_len + bytes + 1) < 0)
                return -ENOMEM;
        uint8_t *at = g->msg + g->msg_len;
        o->off = g->msg_len;
        o->bytes = bytes;
        if (b)
                at = batch_put(at, b, hidden_in, flags, D);
        at = put(at, extra, extra_bytes);
        if (kind != JOB_QUIT)
                put(at, q->buf, q->len);
        g->msg_len += bytes;
        return 0;
}

/* Node 0: the jobs added (every follower's) go out: the headers, then the payloads (both calls
 * are made by every node, a payload of 0 bytes sending nothing, so that the calls pair up);
 * the KV writes they carried are forgotten. */
static int send_out(struct dsv_rank_group *g, enum job_kind kind, struct dsv_error *err) {
        _cleanup_free_ struct dsv_comm_xfer *x = calloc((size_t)g->n, sizeof(*x));
        int r, k = 0;

        g->msg_len = 0;
        if (!x)
                return dsv_error_set(err, ENOMEM, "out of memory");
        for (int i = 1; i < g->n; i++)
                x[i - 1] = (struct dsv_comm_xfer){.peer = i, .buf = g->out[i].hdr, .count = JOB_WORDS * sizeof(int64_t)};
        r = dsv_comm_send_recv(g->ctl, x, g->n - 1, NULL, 0, DSV_U8);
        if (r >= 0) {
                for (int i = 1; i < g->n; i++)
                        if (g->out[i].bytes)
                                x[k++] = (struct dsv_comm_xfer){.peer = i, .buf = g->msg + g->out[i].off,
                                                                .count = g->out[i].bytes};
                r = dsv_comm_send_recv(g->ctl, x, k, NULL, 0, DSV_U8);
        }
        if (r < 0)
                return dsv_error_set(err, -r, "cannot hand the pass to the other nodes: %s",
                                     dsv_comm_why(g->ctl, r));
        if (kind != JOB_QUIT)
                for (int i = 0; i < (g->dp ? g->n : 1); i++)
                        g->wq[i].len = 0, g->wq[i].n = 0;
        return 0;
}

/* Node 0: the job (and the pool's writes queued since the last one) to every follower, the
 * same to each (replicated attention; a pool or the end in either layout). */
static int send_job(struct dsv_rank_group *g, enum job_kind kind, const struct dsv_batch *b, const float *hidden_in,
                    struct dsv_error *err) {
        for (int i = 1; i < g->n; i++)
                if (job_add(g, i, kind, b, hidden_in, g->tp, 0, NULL, 0) < 0)
                        return dsv_error_set(err, ENOMEM, "out of memory for the job of node %d", i);
        return send_out(g, kind, err);
}

/* Node 0, data-parallel attention: every follower its part of the batch (g->part), then the
 * replies' call: each follower's logits rows, then (want_hidden) its hidden rows. */
static int send_parts(struct dsv_rank_group *g, enum job_kind kind, bool want_hidden, struct dsv_error *err) {
        for (int i = 1; i < g->n; i++) {
                const struct dp_part *pt = &g->part[i];
                if (job_add(g, i, kind, &pt->b, kind == JOB_DP_MTP ? pt->hidden_in : NULL, true,
                            want_hidden ? FLAG_RET_HIDDEN : 0, NULL, 0) < 0)
                        return dsv_error_set(err, ENOMEM, "out of memory for the part of node %d", i);
        }
        return send_out(g, kind, err);
}

static int recv_parts(struct dsv_rank_group *g, bool want_hidden, struct dsv_error *err) {
        const size_t V = (size_t)g->rt0->cfg->vocab_size, D = (size_t)g->rt0->cfg->hidden_size;
        _cleanup_free_ struct dsv_comm_xfer *x = calloc((size_t)g->n * 2, sizeof(*x));
        int k = 0, r;
        if (!x)
                return dsv_error_set(err, ENOMEM, "out of memory");
        for (int i = 1; i < g->n; i++) {
                const struct dp_part *pt = &g->part[i];
                if (pt->n_out)
                        x[k++] = (struct dsv_comm_xfer){.peer = i, .buf = pt->logits, .count = (size_t)pt->n_out * V};
                if (want_hidden && pt->b.n_tokens)
                        x[k++] = (struct dsv_comm_xfer){.peer = i, .buf = pt->hidden, .count = (size_t)pt->b.n_tokens * D};
        }
        if ((r = dsv_comm_send_recv(g->ctl, NULL, 0, x, k, DSV_F32)) < 0)
                return dsv_error_set(err, -r, "the other nodes' parts of the pass did not come back: %s",
                                     dsv_comm_why(g->ctl, r));
        return 0;
}

/* A remote pool's writes (struct dsv_kv_remote): queued for its node's next job. */
static int remote_write(void *ud, int32_t dst, int32_t src, const void *bytes) {
        struct remote_pool *rp = ud;
        return queue_add(&rp->g->wq[rp->rank], rp->pool->page_bytes, dst, src, bytes);
}

/* A remote pool's read: a READ job (every node takes part; its node applies the writes queued
 * for it, then sends the pages' bytes back). A failure breaks the group. */
static int remote_read(void *ud, const int32_t *pages, int n, void *out) {
        struct remote_pool *rp = ud;
        struct dsv_rank_group *g = rp->g;
        struct dsv_error e = {{0}};
        struct dsv_comm_xfer x = {.peer = rp->rank, .buf = out, .count = (size_t)n * rp->pool->page_bytes};
        int r = 0;

        if (g->broken[0])
                return -ENOTRECOVERABLE;
        for (int i = 1; i < g->n && r >= 0; i++)
                r = job_add(g, i, JOB_READ, NULL, NULL, false, 0, i == rp->rank ? pages : NULL,
                            i == rp->rank ? (size_t)n * 4 : 0);
        if (r < 0)
                dsv_error_set(&e, ENOMEM, "out of memory for a read of node %d's pages", rp->rank);
        else if ((r = send_out(g, JOB_READ, &e)) >= 0 && (r = dsv_comm_send_recv(g->ctl, NULL, 0, &x, 1, DSV_U8)) < 0)
                dsv_error_set(&e, -r, "node %d's KV pages did not come back: %s", rp->rank,
                              dsv_comm_why(g->ctl, r));
        if (r < 0) {
                snprintf(g->broken, sizeof(g->broken), "the group of %d nodes is broken: %.1000s", g->n, e.msg);
                return -ENOTRECOVERABLE;
        }
        return 0;
}

/* What every node reports once it has loaded (or failed to): node 0 learns the others'. */
static int exchange_ready(struct dsv_rank_group *g, int r_open, const struct dsv_runtime *rt, struct dsv_error *err) {
        const struct node_info mine = {r_open, rt ? (int64_t)dsv_model_weight_bytes(rt->model) : 0,
                                       rt ? rt->be->n_threads : 0};
        int r;
        if (!(g->node = calloc((size_t)g->n, sizeof(*g->node))))
                return dsv_error_set(err, ENOMEM, "out of memory");
        if ((r = dsv_comm_all_gather(g->ctl, &mine, g->node, sizeof(mine), DSV_U8)) < 0)
                return dsv_error_set(err, -r, "the nodes cannot tell each other they have loaded: %s",
                                     dsv_comm_why(g->ctl, r));
        for (int i = 0; i < g->n; i++)
                if (g->node[i].r < 0 && i != g->ctl->rank)
                        return dsv_error_set(err, EIO, "node %d could not load the model (%s; its log says why)", i,
                                             strerror((int)-g->node[i].r));
        return 0;
}

/* The group's nodes' state on either side: the queues and jobs (node 0) and the layout. */
static int nodes_init(struct dsv_rank_group *g, const struct dsv_runtime_opts *ro, struct dsv_comm *ep, struct dsv_comm *ctl) {
        g->ctl = ctl;
        g->ep = ep;
        g->tp = ro->tp;
        g->dp = ro->dp;
        if (!(g->f = calloc((size_t)g->n, sizeof(*g->f))) || !(g->wq = calloc((size_t)g->n, sizeof(*g->wq))) ||
            !(g->out = calloc((size_t)g->n, sizeof(*g->out))))
                return -ENOMEM;
        return 0;
}

int dsv_rank_group_open_nodes(const struct dsv_runtime_opts *ro, struct dsv_comm *ep, struct dsv_comm *ctl,
                              struct dsv_rank_group **ret, struct dsv_error *err) {
        struct dsv_rank_group *g;
        struct dsv_runtime_opts o0 = *ro;
        int r;

        if (!ep || !ctl || ep->size != ctl->size || ep->rank != 0 || ctl->rank != 0 || ctl->size < 2 || ro->ep)
                return dsv_error_set(err, EINVAL, "the group of nodes: node 0's communicators are needed");
        if (ro->dp && ro->tp)
                return dsv_error_set(err, EINVAL, "nodes %d: data-parallel attention (ep,dp) or split heads (ep,tp), not "
                                                  "both", ctl->size);
        if (ro->backend && strcmp(ro->backend, "cpu") != 0)
                return dsv_error_set(err, EINVAL, "nodes %d: the nodes are CPU ranks so far: backend cpu", ctl->size);
        if (!(g = group_new(ctl->size)))
                return -ENOMEM;
        /* f[0]: rank 0's pass count; the others stay empty (their runtimes are elsewhere) */
        if ((r = nodes_init(g, ro, ep, ctl)) < 0)
                goto fail;
        o0.ep = ep;
        r = dsv_runtime_open(&o0, &g->rt0, err);
        {
                struct dsv_error e = {{0}};
                const int rx = exchange_ready(g, r, g->rt0, &e);
                if (r >= 0 && rx < 0) {
                        r = rx;
                        dsv_error_set(err, -rx, "%s", e.msg);
                }
        }
        if (r < 0)
                goto fail;
        /* the followers' pools: node 0's geometry, page for page, and its pass size */
        g->pool_pages = g->rt0->kv->n_pages;
        g->pool_layers = g->rt0->kv->layout.n_layers;
        g->pool_format = g->rt0->kv->layout.format;
        if ((r = send_job(g, JOB_POOL, NULL, NULL, err)) < 0)
                goto fail;
        if (g->dp) {
                /* each node's pool holds its own sequences; node 0 keeps the others' bookkeeping */
                if (!(g->remote = calloc((size_t)g->n, sizeof(*g->remote)))) {
                        r = dsv_error_set(err, ENOMEM, "out of memory");
                        goto fail;
                }
                for (int i = 1; i < g->n; i++) {
                        struct remote_pool *rp = &g->remote[i];
                        *rp = (struct remote_pool){.g = g, .rank = i, .io = {remote_write, remote_read, rp}};
                        if ((r = dsv_kv_pool_new_remote(g->rt0->cfg, g->pool_format, g->pool_layers, g->pool_pages, &rp->io,
                                                        &rp->pool)) < 0) {
                                dsv_error_set(err, -r, "cannot keep node %d's KV pages: %s", i, strerror(-r));
                                goto fail;
                        }
                }
        } else {
                g->rt0->kv->remote_write = queue_write;
                g->rt0->kv->remote_ud = g;
        }
        *ret = g;
        return 0;
fail:
        g->broken[0] = 'x'; /* no QUIT: the followers end with the bootstrap */
        dsv_rank_group_free(g);
        return r;
}

/* Follower node: takes the next job from node 0 into g (and applies the pool's writes). */
static int receive_job(struct dsv_rank_group *g, struct follower *f, enum job_kind *kind, struct dsv_error *err) {
        int64_t hdr[JOB_WORDS];
        struct dsv_comm_xfer x = {.peer = 0, .buf = hdr, .count = sizeof(hdr)};
        uint8_t *at, *end;
        int r;

        if ((r = dsv_comm_send_recv(g->ctl, NULL, 0, &x, 1, DSV_U8)) < 0)
                return dsv_error_set(err, -r, "no job from node 0: %s",
                                     dsv_comm_why(g->ctl, r));
        const int64_t bytes = hdr[JW_PAYLOAD], nt = hdr[JW_TOKENS], ns = hdr[JW_SEQS];
        if (hdr[JW_KIND] <= JOB_NONE || hdr[JW_KIND] >= JOB_KIND_MAX || bytes < 0 || bytes > ((int64_t)1 << 40) || nt < 0 ||
            nt > INT32_MAX / 16 || ns < 0 || ns > nt || hdr[JW_OPS] < 0)
                return dsv_error_set(err, EPROTO, "node 0 sent a job this node does not understand (kind %lld)",
                                     (long long)hdr[JW_KIND]);
        *kind = (enum job_kind)hdr[JW_KIND];
        if (grow(&g->msg, &g->msg_cap, (size_t)bytes + 1) < 0)
                return dsv_error_set(err, ENOMEM, "out of memory for a job of %lld bytes", (long long)bytes);
        /* every node makes the payloads' call, a node with none too (the calls pair up) */
        x = (struct dsv_comm_xfer){.peer = 0, .buf = g->msg, .count = (size_t)bytes};
        if ((r = dsv_comm_send_recv(g->ctl, NULL, 0, &x, bytes ? 1 : 0, DSV_U8)) < 0)
                return dsv_error_set(err, -r, "no job from node 0: %s",
                                     dsv_comm_why(g->ctl, r));
        at = g->msg;
        end = g->msg + bytes;
        memset(&g->b, 0, sizeof(g->b));
        g->flags = hdr[JW_FLAGS];
        if ((*kind == JOB_DP_FORWARD || *kind == JOB_DP_MTP) != g->dp &&
            (*kind == JOB_DP_FORWARD || *kind == JOB_DP_MTP || *kind == JOB_FORWARD || *kind == JOB_MTP))
                return dsv_error_set(err, EPROTO, "node 0 runs another layout (its passes are %sdata-parallel)",
                                     g->dp ? "not " : "");
        if (*kind == JOB_POOL) {
                g->pool_pages = (int)hdr[JW_POOL_PAGES];
                g->pool_layers = (int)hdr[JW_POOL_LAYERS];
                g->pool_format = (enum dsv_kv_format)hdr[JW_POOL_FORMAT];
                dsv_model_set_pass_tokens(f->rt->model, (int)hdr[JW_PASS_TOKENS]);
        }
        if (*kind == JOB_READ) {
                g->read_n = (int)nt;
                if ((size_t)(end - at) < (size_t)nt * 4)
                        goto short_job;
                g->read_pages = (const int32_t *)at;
                for (int64_t i = 0; i < nt; i++)
                        if (g->read_pages[i] < 0 || g->read_pages[i] >= g->pool_pages)
                                goto short_job;
                at += nt * 4;
        }
        if (*kind == JOB_FORWARD || *kind == JOB_MTP || *kind == JOB_DP_FORWARD || *kind == JOB_DP_MTP) {
                const size_t D = (size_t)f->rt->cfg->hidden_size;
                const bool flags = g->tp || g->dp; /* the rows wanted: ep,tp computes them all, ep,dp its own */
                if ((size_t)(end - at) < (size_t)nt * 12)
                        goto short_job;
                g->b.n_tokens = (int)nt;
                g->b.token = (const int32_t *)at;
                g->b.pos = (const int32_t *)(at + nt * 4);
                g->b.seq = (const int32_t *)(at + nt * 8);
                at += nt * 12;
                g->b.n_seqs = (int)ns;
                if (ns > g->cap_seq0) {
                        struct dsv_kv_seq *q = realloc(g->seq0, (size_t)ns * sizeof(*q));
                        if (!q)
                                return dsv_error_set(err, ENOMEM, "out of memory");
                        g->seq0 = q;
                        g->cap_seq0 = (int)ns;
                }
                for (int i = 0; i < ns; i++) {
                        int32_t h[3];
                        if (end - at < 12)
                                goto short_job;
                        memcpy(h, at, sizeof(h));
                        at += 12;
                        if (h[2] < 0 || h[2] > g->pool_pages || (size_t)(end - at) < (size_t)h[2] * 4)
                                goto short_job;
                        g->seq0[i] = (struct dsv_kv_seq){.pages = (int32_t *)at, .n_pages = h[2], .cap = h[2],
                                                         .len = h[0], .mtp_len = h[1]};
                        for (int k = 0; k < h[2]; k++)
                                if (g->seq0[i].pages[k] < 0 || g->seq0[i].pages[k] >= g->pool_pages)
                                        goto short_job;
                        at += (size_t)h[2] * 4;
                }
                if (hdr[JW_FLAGS] & FLAG_DECODE) {
                        const size_t n = pad4((size_t)ns);
                        if ((size_t)(end - at) < n)
                                goto short_job;
                        g->b.as_decode = (const bool *)at;
                        at += n;
                }
                g->hidden_in = NULL;
                if (hdr[JW_FLAGS] & FLAG_HIDDEN) {
                        if ((size_t)(end - at) < (size_t)nt * D * sizeof(float))
                                goto short_job;
                        g->hidden_in = (const float *)at;
                        at += (size_t)nt * D * sizeof(float);
                }
                if (!(hdr[JW_FLAGS] & FLAG_LOGITS) != !flags)
                        return dsv_error_set(err, EPROTO, "node 0 runs another layout (its passes %s the logits' rows)",
                                             flags ? "do not carry" : "carry");
                if (hdr[JW_FLAGS] & FLAG_LOGITS) {
                        const size_t n = pad4((size_t)nt);
                        if ((size_t)(end - at) < n)
                                goto short_job;
                        for (int64_t i = 0; i < nt; i++)
                                if (at[i] > 1)
                                        goto short_job;
                        g->b.want_logits = (const bool *)at;
                        at += n;
                }
                if (nt > g->cap_tokens) {
                        bool *w = realloc(g->no_logits, (size_t)nt * sizeof(*w));
                        if (!w)
                                return dsv_error_set(err, ENOMEM, "out of memory");
                        memset(w, 0, (size_t)nt * sizeof(*w));
                        g->no_logits = w;
                        g->cap_tokens = (int)nt;
                }
        }
        /* the pool's writes made on node 0 since the last job */
        g->stats.writes += (uint64_t)hdr[JW_OPS];
        for (int64_t i = 0; i < hdr[JW_OPS]; i++) {
                int32_t rec[2];
                if (!f->rt->kv || end - at < 8)
                        goto short_job;
                memcpy(rec, at, sizeof(rec));
                at += 8;
                if (rec[1] < 0) {
                        if ((size_t)(end - at) < f->rt->kv->page_bytes)
                                goto short_job;
                        r = dsv_kv_page_upload(f->rt->kv, rec[0], at);
                        at += f->rt->kv->page_bytes;
                } else {
                        r = dsv_kv_page_copy(f->rt->kv, rec[0], rec[1]);
                }
                if (r < 0)
                        return dsv_error_set(err, -r, "node %d: cannot mirror node 0's KV page %d: %s", f->rank, rec[0],
                                             strerror(-r));
        }
        return 0;
short_job:
        return dsv_error_set(err, EPROTO, "node 0 sent a job whose payload does not add up (%lld bytes)", (long long)bytes);
}

/* Follower node, data-parallel attention: its part of the pass (its own sequences over its
 * own pool), then its rows back to node 0 (the replies' call, every node makes it). */
static int follower_part(struct dsv_rank_group *g, struct follower *f, enum job_kind kind, struct dsv_error *err) {
        const size_t V = (size_t)f->rt->cfg->vocab_size, D = (size_t)f->rt->cfg->hidden_size;
        const bool ret_hidden = g->flags & FLAG_RET_HIDDEN;
        struct dsv_comm_xfer x[2];
        size_t n_out = 0, need;
        int k = 0, r;

        for (int i = 0; i < g->b.n_tokens; i++)
                n_out += g->b.want_logits[i];
        need = (n_out * V + (ret_hidden ? (size_t)g->b.n_tokens * D : 0)) * sizeof(float);
        if (need > f->cap_logits * sizeof(float)) {
                float *l = realloc(f->logits, need);
                if (!l)
                        return dsv_error_set(err, ENOMEM, "node %d: out of memory", f->rank);
                f->logits = l;
                f->cap_logits = need / sizeof(float);
        }
        f->passes++;
        if (fault_now(g, f->rank, f->passes, err))
                return -EIO;
        if ((r = follower_copy_seqs(f)) < 0)
                return dsv_error_set(err, r, "node %d: out of memory", f->rank);
        struct dsv_batch b = g->b;
        b.seqs = f->seq_ptrs;
        float *hidden = ret_hidden ? f->logits + n_out * V : NULL;
        r = kind == JOB_DP_FORWARD ? dsv_runtime_forward_hidden(f->rt, &b, f->logits, hidden, err)
                                   : dsv_runtime_mtp(f->rt, &b, g->hidden_in, f->logits, hidden, err);
        if (r < 0)
                return r;
        if (n_out)
                x[k++] = (struct dsv_comm_xfer){.peer = 0, .buf = f->logits, .count = n_out * V};
        if (hidden && g->b.n_tokens)
                x[k++] = (struct dsv_comm_xfer){.peer = 0, .buf = hidden, .count = (size_t)g->b.n_tokens * D};
        if ((r = dsv_comm_send_recv(g->ctl, x, k, NULL, 0, DSV_F32)) < 0)
                return dsv_error_set(err, -r, "node %d: cannot send its part of the pass to node 0: %s", f->rank,
                                     dsv_comm_why(g->ctl, r));
        return 0;
}

/* Follower node: the pages a READ job names, back to node 0 (the replies' call). */
static int follower_read(struct dsv_rank_group *g, struct follower *f, struct dsv_error *err) {
        const size_t pb = f->rt->kv->page_bytes;
        _cleanup_free_ uint8_t *buf = malloc((size_t)MAX(g->read_n, 1) * pb);
        struct dsv_comm_xfer x = {.peer = 0, .buf = buf, .count = (size_t)g->read_n * pb};
        int r;
        if (!buf)
                return dsv_error_set(err, ENOMEM, "node %d: out of memory for %d KV pages", f->rank, g->read_n);
        if ((r = dsv_kv_pages_download(f->rt->kv, g->read_pages, g->read_n, buf)) < 0)
                return dsv_error_set(err, -r, "node %d: cannot read its KV pages: %s", f->rank, strerror(-r));
        if ((r = dsv_comm_send_recv(g->ctl, &x, g->read_n ? 1 : 0, NULL, 0, DSV_U8)) < 0)
                return dsv_error_set(err, -r, "node %d: cannot send its KV pages to node 0: %s", f->rank,
                                     dsv_comm_why(g->ctl, r));
        return 0;
}

int dsv_rank_group_follow(const struct dsv_runtime_opts *ro, struct dsv_comm *ep, struct dsv_comm *ctl,
                          struct dsv_follow_stats *stats, struct dsv_error *err) {
        struct dsv_rank_group *g;
        struct follower *f;
        struct dsv_error e = {{0}};
        int r;

        if (!ep || !ctl || ep->size != ctl->size || ep->rank != ctl->rank || ctl->rank < 1 || ro->ep)
                return dsv_error_set(err, EINVAL, "a follower node needs its communicators");
        if (ro->dp && ro->tp)
                return dsv_error_set(err, EINVAL, "data-parallel attention (ep,dp) or split heads (ep,tp), not both");
        if (!(g = group_new(ctl->size)))
                return -ENOMEM;
        if (nodes_init(g, ro, ep, ctl) < 0) {
                g->ctl = NULL;
                dsv_rank_group_free(g);
                return -ENOMEM;
        }
        f = &g->f[ctl->rank];
        f->g = g;
        f->rank = ctl->rank;
        f->ro = *ro;
        f->ro.ep = ep;
        f->ro.kv_bytes = 0;
        f->ro.kv_tokens = 1; /* replaced by a pool of node 0's geometry (JOB_POOL) */
        r = dsv_runtime_open(&f->ro, &f->rt, err);
        {
                const int rx = exchange_ready(g, r, f->rt, &e);
                if (r >= 0 && rx < 0)
                        r = dsv_error_set(err, -rx, "%s", e.msg);
        }
        for (enum job_kind kind = JOB_NONE; r >= 0;) {
                if ((r = receive_job(g, f, &kind, err)) < 0)
                        break;
                if (kind == JOB_QUIT)
                        break;
                g->stats.passes += kind == JOB_FORWARD || kind == JOB_MTP || kind == JOB_DP_FORWARD || kind == JOB_DP_MTP;
                g->stats.tokens += (uint64_t)g->b.n_tokens;
                g->stats.pages_read += kind == JOB_READ ? (uint64_t)g->read_n : 0;
                if (kind == JOB_READ)
                        r = follower_read(g, f, err);
                else if (kind == JOB_DP_FORWARD || kind == JOB_DP_MTP)
                        r = follower_part(g, f, kind, err);
                else if ((r = follower_run(f, kind)) < 0)
                        dsv_error_set(err, -r, "%s", f->err.msg[0] ? f->err.msg : strerror(-r));
        }
        if (stats)
                *stats = g->stats;
        g->ctl = NULL; /* no QUIT from a follower; its runtime and sequences go with the group */
        dsv_rank_group_free(g);
        return r;
}
