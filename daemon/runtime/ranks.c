/* The CPU ranks of one process: the follower threads, the hand-off of rank 0's passes to them
 * and the group's failure (see ranks.h). */
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
        JOB_QUIT,
};

struct follower {
        struct dsv_rank_group *g;
        int rank;
        struct dsv_runtime_opts ro;
        struct dsv_runtime *rt;
        struct dsv_kv_seq *seqs, **seq_ptrs; /* its copies of rank 0's sequences */
        int cap_seqs;
        uint64_t passes;
        int r; /* the last job's result (the load first) */
        struct dsv_error err;
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
        bool *no_logits;                  /* followers want no logits */
        int cap_tokens;
        const float *hidden_in;
        int pool_pages, pool_layers;
        enum dsv_kv_format pool_format;
        /* tests: rank fault_rank fails its pass number fault_pass (DSV32_TEST_RANK_FAULT=R:P) */
        int fault_rank;
        uint64_t fault_pass;
        char broken[1100];
        char lost[1100]; /* rank 0's device error, said as one (dsv_rank_group_error) */
};

int dsv_parallel_layout_check(const char *layout, const char **why) {
        static const char *const later[] = {"ep,tp", "ep", "dp", "tp", "tp,dp", "dp,tp"};
        const char *w = "";
        int r = 0;
        if (!layout || strcmp(layout, "ep,dp") != 0) {
                r = -EINVAL;
                w = "unknown layout (ep,dp: routed experts split over the ranks, the rest replicated)";
                for (size_t i = 0; layout && i < ARRAY_SIZE(later); i++)
                        if (strcmp(layout, later[i]) == 0) {
                                r = -EOPNOTSUPP;
                                w = "this layout is not implemented yet; ep,dp is (routed experts split over the ranks, "
                                    "the rest replicated)";
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
        case JOB_FORWARD:
        case JOB_MTP:
                f->passes++;
                if (fault_now(g, f->rank, f->passes, &f->err))
                        return -EIO;
                if ((r = follower_copy_seqs(f)) < 0)
                        return dsv_error_set(&f->err, r, "rank %d: out of memory", f->rank);
                b.seqs = f->seq_ptrs;
                b.want_logits = g->no_logits;
                r = kind == JOB_FORWARD ? dsv_runtime_forward_hidden(f->rt, &b, NULL, NULL, &f->err)
                                        : dsv_runtime_mtp(f->rt, &b, g->hidden_in, NULL, NULL, &f->err);
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

void dsv_rank_group_free(struct dsv_rank_group *g) {
        if (!g)
                return;
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
        }
        for (int i = 0; g->comms && i < g->n; i++)
                dsv_comm_free(g->comms[i]);
        pthread_mutex_destroy(&g->lock);
        pthread_cond_destroy(&g->work);
        pthread_cond_destroy(&g->done);
        free(g->comms);
        free(g->f);
        free(g->threads);
        free(g->seq0);
        free(g->no_logits);
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
        }
        if (!(g = calloc(1, sizeof(*g))))
                return -ENOMEM;
        g->n = n_ranks;
        g->fault_rank = -1;
        pthread_mutex_init(&g->lock, NULL);
        pthread_cond_init(&g->work, NULL);
        pthread_cond_init(&g->done, NULL);
        if (n_ranks == 1) {
                if ((r = dsv_runtime_open(ro, &g->rt0, err)) < 0)
                        goto fail;
                *ret = g;
                return 0;
        }
        {
                const char *fault = getenv("DSV32_TEST_RANK_FAULT");
                int fr;
                unsigned long long fp;
                if (fault && sscanf(fault, "%d:%llu", &fr, &fp) == 2)
                        g->fault_rank = fr, g->fault_pass = fp;
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
        for (int i = 1; i < n_ranks; i++)
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
        return rank == 0 ? g->rt0 : g->f[rank].rt;
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
        publish(g, kind);
        g->f[0].passes++;
        if (fault_now(g, 0, g->f[0].passes, &e0))
                r0 = -EIO;
        else
                r0 = kind == JOB_FORWARD ? dsv_runtime_forward_hidden(g->rt0, b, logits, hidden, &e0)
                                         : dsv_runtime_mtp(g->rt0, b, hidden_in, logits, hidden, &e0);
        if (r0 < 0)
                dsv_comm_abort(g->comms[0]);
        wait_done(g);
        if ((r = first_failure(g, r0, &e0, err)) >= 0)
                return r0;
        /* the ranks are out of step now (KV written on some, not others): nothing more runs */
        snprintf(g->broken, sizeof(g->broken), "the group of %d ranks is broken: %.1000s", g->n, err->msg);
        return dsv_error_set(err, ENOTRECOVERABLE, "%s", g->broken);
}

int dsv_rank_group_forward(struct dsv_rank_group *g, const struct dsv_batch *b, float *logits, float *hidden,
                           struct dsv_error *err) {
        if (g->n == 1)
                return dsv_runtime_forward_hidden(g->rt0, b, logits, hidden, err);
        return group_pass(g, JOB_FORWARD, b, NULL, logits, hidden, err);
}

int dsv_rank_group_mtp(struct dsv_rank_group *g, const struct dsv_batch *b, const float *hidden_in, float *logits,
                       float *hidden_out, struct dsv_error *err) {
        if (g->n == 1)
                return dsv_runtime_mtp(g->rt0, b, hidden_in, logits, hidden_out, err);
        return group_pass(g, JOB_MTP, b, hidden_in, logits, hidden_out, err);
}
