/* The in-process communicator (kernels/comm.h): the ranks are threads of one process and
 * every buffer is host memory, so a collective is a rendezvous plus copies between the
 * ranks' own buffers.
 *
 * One call on every rank goes through:
 *   1. arrival: the rank posts what it was asked (kind, count, dtype, op, buffers) in its
 *      slot and waits, at most the timeout, for all ranks to arrive. The last to arrive
 *      checks that all slots agree. A rank that waits too long breaks the group
 *      (-ETIMEDOUT for it, -ECONNABORTED for the others); dsv_comm_abort breaks it too.
 *   2. work: each rank reads its peers' posted buffers and writes only its own memory
 *      (its output, its scratch);
 *   3. phase barriers, without timeout (every rank is past arrival and only copying): after
 *      the last read of a peer's buffer, so no rank returns (and reuses its input) while a
 *      peer still reads it.
 * all_reduce is a reduce-scatter into per-rank scratch (rank r adds slice r over all ranks
 * in rank order) then an all-gather of the slices: each element is added by one rank, in
 * one order, so every rank gets the same bits, and in-place calls are safe.
 *
 * Everything the ranks share is ordered by the group mutex (arrival, barriers), which is
 * what ThreadSanitizer checks (./configure --enable-tsan). */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/comm.h"

enum call_kind {
        CALL_ALL_REDUCE,
        CALL_ALL_GATHER,
        CALL_REDUCE_SCATTER,
        CALL_SEND_RECV,
        CALL_BARRIER,
        CALL_KIND_MAX,
};

static const char *const kind_names[CALL_KIND_MAX] = {"all_reduce", "all_gather", "reduce_scatter", "send_recv", "barrier"};

/* What one rank posted for the current call (written by the rank under the group lock
 * before it arrives; read by peers between arrival and the last phase barrier). */
struct slot {
        enum call_kind kind;
        size_t count;
        enum dsv_dtype t;
        enum dsv_reduce op;
        const void *send;
        void *recv;
        const struct dsv_comm_xfer *sends, *recvs;
        int n_sends, n_recvs;
        void *scratch; /* all_reduce: this rank's reduced slice */
        size_t scratch_cap;
        uint64_t gen; /* arrival generation this slot was posted for */
};

struct group {
        pthread_mutex_t lock;
        pthread_cond_t cond; /* CLOCK_MONOTONIC */
        int size;
        int refs;
        /* arrival (timed) */
        uint64_t gen; /* completed arrivals */
        int arrived;
        /* phase barrier (untimed) */
        uint64_t phase_gen;
        int phase_arrived;
        /* sticky failure */
        int broken;    /* 0 or -ETIMEDOUT, -ECANCELED, -EPROTO */
        int broken_by; /* rank that timed out or aborted; -1 for a disagreement */
        char why[256];
        struct slot *slots;
};

struct rank_ctx {
        struct group *g;
};

static struct group *group_of(struct dsv_comm *c) { return ((struct rank_ctx *)c->ctx)->g; }

/* The error a rank sees for the group's failure (lock held). */
static int broken_for(const struct group *g, int rank) {
        if (!g->broken)
                return 0;
        if (g->broken == -EPROTO || g->broken_by == rank)
                return g->broken;
        return -ECONNABORTED;
}

static void deadline_after(struct timespec *ts, int ms) {
        clock_gettime(CLOCK_MONOTONIC, ts);
        ts->tv_sec += ms / 1000;
        ts->tv_nsec += (long)(ms % 1000) * 1000000L;
        if (ts->tv_nsec >= 1000000000L) {
                ts->tv_sec++;
                ts->tv_nsec -= 1000000000L;
        }
}

static void describe(char *buf, size_t n, const struct slot *s) {
        if (s->kind == CALL_SEND_RECV)
                snprintf(buf, n, "send_recv(%d sends, %d receives, %s)", s->n_sends, s->n_recvs, dsv_dtype_name(s->t));
        else if (s->kind == CALL_BARRIER)
                snprintf(buf, n, "barrier");
        else
                snprintf(buf, n, "%s(count %zu, %s%s%s)", kind_names[s->kind], s->count, dsv_dtype_name(s->t),
                         s->kind == CALL_ALL_GATHER ? "" : ", ", s->kind == CALL_ALL_GATHER ? "" : dsv_reduce_name(s->op));
}

/* The j-th transfer of list x (n entries) whose peer is `peer`, or NULL. */
static const struct dsv_comm_xfer *nth_with_peer(const struct dsv_comm_xfer *x, int n, int peer, int j) {
        for (int i = 0; i < n; i++)
                if (x[i].peer == peer && j-- == 0)
                        return &x[i];
        return NULL;
}

static int count_with_peer(const struct dsv_comm_xfer *x, int n, int peer) {
        int k = 0;
        for (int i = 0; i < n; i++)
                k += x[i].peer == peer;
        return k;
}

/* Run by the last rank to arrive (lock held): do all slots describe the same call? */
static bool slots_agree(struct group *g) {
        const struct slot *a = &g->slots[0];
        char da[96], db[96];
        for (int r = 1; r < g->size; r++) {
                const struct slot *b = &g->slots[r];
                bool same = a->kind == b->kind && a->t == b->t;
                if (same && a->kind != CALL_SEND_RECV && a->kind != CALL_BARRIER)
                        same = a->count == b->count && (a->kind == CALL_ALL_GATHER || a->op == b->op);
                if (!same) {
                        describe(da, sizeof(da), a);
                        describe(db, sizeof(db), b);
                        snprintf(g->why, sizeof(g->why), "the ranks disagree: rank 0 called %s, rank %d %s", da, r, db);
                        return false;
                }
        }
        if (a->kind != CALL_SEND_RECV)
                return true;
        /* every send from s to d matches, in order, a receive at d from s of the same count */
        for (int s = 0; s < g->size; s++)
                for (int d = 0; d < g->size; d++) {
                        const struct slot *S = &g->slots[s], *D = &g->slots[d];
                        int ns = count_with_peer(S->sends, S->n_sends, d), nr = count_with_peer(D->recvs, D->n_recvs, s);
                        if (ns != nr) {
                                snprintf(g->why, sizeof(g->why),
                                         "send_recv: rank %d sends %d transfer(s) to rank %d, which receives %d from it", s, ns,
                                         d, nr);
                                return false;
                        }
                        for (int j = 0; j < ns; j++) {
                                const struct dsv_comm_xfer *x = nth_with_peer(S->sends, S->n_sends, d, j),
                                                           *y = nth_with_peer(D->recvs, D->n_recvs, s, j);
                                if (x->count != y->count) {
                                        snprintf(g->why, sizeof(g->why),
                                                 "send_recv: transfer %d from rank %d to rank %d: %zu elements sent, %zu "
                                                 "expected",
                                                 j, s, d, x->count, y->count);
                                        return false;
                                }
                        }
                }
        return true;
}

/* Posts the slot and waits for every rank; 0 when all arrived and agree. */
static int arrive(struct dsv_comm *c, const struct slot *mine) {
        struct group *g = group_of(c);
        struct timespec dl;
        int r = 0;

        deadline_after(&dl, c->timeout_ms);
        pthread_mutex_lock(&g->lock);
        if ((r = broken_for(g, c->rank)) < 0)
                goto out;
        const uint64_t my_gen = g->gen;
        struct slot *s = &g->slots[c->rank];
        void *scratch = s->scratch;
        size_t cap = s->scratch_cap;
        *s = *mine;
        s->scratch = scratch;
        s->scratch_cap = cap;
        s->gen = my_gen;
        if (++g->arrived == g->size) {
                g->arrived = 0;
                g->gen++;
                if (!slots_agree(g)) {
                        g->broken = -EPROTO;
                        g->broken_by = -1;
                }
                pthread_cond_broadcast(&g->cond);
        }
        while (g->gen == my_gen && !g->broken) {
                int w = pthread_cond_timedwait(&g->cond, &g->lock, &dl);
                if (w == ETIMEDOUT && g->gen == my_gen && !g->broken) {
                        char missing[128] = "";
                        size_t len = 0;
                        for (int q = 0; q < g->size && len + 12 < sizeof(missing); q++)
                                if (g->slots[q].gen != my_gen)
                                        len += (size_t)snprintf(missing + len, sizeof(missing) - len, "%s%d", len ? ", " : "", q);
                        g->broken = -ETIMEDOUT;
                        g->broken_by = c->rank;
                        snprintf(g->why, sizeof(g->why), "rank %d waited %d ms in %s #%llu for rank(s) %s", c->rank, c->timeout_ms,
                                 kind_names[mine->kind], (unsigned long long)c->calls, missing);
                        pthread_cond_broadcast(&g->cond);
                }
        }
        if (g->gen != my_gen)
                r = g->broken == -EPROTO ? -EPROTO : 0; /* everybody arrived (a later break waits for the next call) */
        else
                r = broken_for(g, c->rank);
out:
        if (r < 0)
                dsv_comm_fail(c, r, "%s #%llu on rank %d of %d: %s", kind_names[mine->kind], (unsigned long long)c->calls, c->rank,
                              c->size, g->why);
        pthread_mutex_unlock(&g->lock);
        return r;
}

/* Every rank that passed arrival reaches this, so it needs no timeout. */
static void phase_barrier(struct group *g) {
        pthread_mutex_lock(&g->lock);
        const uint64_t my = g->phase_gen;
        if (++g->phase_arrived == g->size) {
                g->phase_arrived = 0;
                g->phase_gen++;
                pthread_cond_broadcast(&g->cond);
        }
        while (g->phase_gen == my)
                pthread_cond_wait(&g->cond, &g->lock);
        pthread_mutex_unlock(&g->lock);
}

/* Rank r's slice [lo, hi) of count elements split over size ranks. */
static void slice(size_t count, int size, int r, size_t *lo, size_t *hi) {
        const size_t q = count / (size_t)size, rem = count % (size_t)size, ur = (size_t)r;
        *lo = ur * q + (ur < rem ? ur : rem);
        *hi = *lo + q + (ur < rem ? 1 : 0);
}

/* The slot of this rank (its scratch is only touched by the rank itself outside a call). */
static int ensure_scratch(struct dsv_comm *c, size_t bytes) {
        struct group *g = group_of(c);
        struct slot *s = &g->slots[c->rank];
        void *p;
        if (bytes <= s->scratch_cap)
                return 0;
        pthread_mutex_lock(&g->lock); /* peers read the pointer under the lock's ordering */
        p = realloc(s->scratch, bytes);
        if (p) {
                s->scratch = p;
                s->scratch_cap = bytes;
        }
        pthread_mutex_unlock(&g->lock);
        return p ? 0 : dsv_comm_fail(c, -ENOMEM, "all_reduce: no memory for %zu bytes of scratch", bytes);
}

static int local_all_reduce(struct dsv_comm *c, const void *send, void *recv, size_t count, enum dsv_dtype t,
                            enum dsv_reduce op) {
        struct group *g = group_of(c);
        const size_t esz = dsv_dtype_size(t);
        size_t lo, hi;
        const void **srcs;
        int r;

        slice(count, c->size, c->rank, &lo, &hi);
        if ((r = ensure_scratch(c, (hi - lo) * esz)) < 0)
                return r;
        srcs = malloc((size_t)c->size * sizeof(*srcs));
        if (!srcs)
                return dsv_comm_fail(c, -ENOMEM, "all_reduce: out of memory");
        struct slot mine = {.kind = CALL_ALL_REDUCE, .count = count, .t = t, .op = op, .send = send, .recv = recv};
        if ((r = arrive(c, &mine)) < 0) {
                free(srcs);
                return r;
        }
        for (int q = 0; q < c->size; q++)
                srcs[q] = (const char *)g->slots[q].send + lo * esz;
        dsv_comm_reduce_rows(g->slots[c->rank].scratch, srcs, c->size, hi - lo, t, op);
        phase_barrier(g); /* every slice reduced, every input read */
        for (int q = 0; q < c->size; q++) {
                size_t qlo, qhi;
                slice(count, c->size, q, &qlo, &qhi);
                if (qhi > qlo)
                        memcpy((char *)recv + qlo * esz, g->slots[q].scratch, (qhi - qlo) * esz);
        }
        phase_barrier(g); /* every slice copied: the scratch may be reused */
        free(srcs);
        return 0;
}

static int local_all_gather(struct dsv_comm *c, const void *send, void *recv, size_t count, enum dsv_dtype t) {
        struct group *g = group_of(c);
        const size_t esz = dsv_dtype_size(t);
        struct slot mine = {.kind = CALL_ALL_GATHER, .count = count, .t = t, .send = send, .recv = recv};
        int r = arrive(c, &mine);
        if (r < 0)
                return r;
        for (int q = 0; q < c->size; q++) {
                char *dst = (char *)recv + (size_t)q * count * esz;
                if (count && dst != g->slots[q].send) /* in place: rank q's block is already there */
                        memcpy(dst, g->slots[q].send, count * esz);
        }
        phase_barrier(g);
        return 0;
}

static int local_reduce_scatter(struct dsv_comm *c, const void *send, void *recv, size_t count, enum dsv_dtype t,
                                enum dsv_reduce op) {
        struct group *g = group_of(c);
        const size_t esz = dsv_dtype_size(t);
        const void **srcs = malloc((size_t)c->size * sizeof(*srcs));
        struct slot mine = {.kind = CALL_REDUCE_SCATTER, .count = count, .t = t, .op = op, .send = send, .recv = recv};
        int r;
        if (!srcs)
                return dsv_comm_fail(c, -ENOMEM, "reduce_scatter: out of memory");
        if ((r = arrive(c, &mine)) < 0) {
                free(srcs);
                return r;
        }
        for (int q = 0; q < c->size; q++)
                srcs[q] = (const char *)g->slots[q].send + (size_t)c->rank * count * esz;
        /* in place, recv is srcs[rank]: each element is read from every rank before it is written */
        dsv_comm_reduce_rows(recv, srcs, c->size, count, t, op);
        phase_barrier(g);
        free(srcs);
        return 0;
}

static int local_send_recv(struct dsv_comm *c, const struct dsv_comm_xfer *sends, int n_sends, const struct dsv_comm_xfer *recvs,
                           int n_recvs, enum dsv_dtype t) {
        struct group *g = group_of(c);
        const size_t esz = dsv_dtype_size(t);
        struct slot mine = {.kind = CALL_SEND_RECV, .t = t, .sends = sends, .n_sends = n_sends, .recvs = recvs, .n_recvs = n_recvs};
        int r = arrive(c, &mine);
        if (r < 0)
                return r;
        /* the k-th receive from p matches p's k-th send to this rank (checked at arrival) */
        for (int i = 0; i < n_recvs; i++) {
                const int p = recvs[i].peer;
                int k = 0;
                for (int j = 0; j < i; j++)
                        k += recvs[j].peer == p;
                const struct slot *S = &g->slots[p];
                const struct dsv_comm_xfer *x = nth_with_peer(S->sends, S->n_sends, c->rank, k);
                if (recvs[i].count && recvs[i].buf != x->buf)
                        memmove(recvs[i].buf, x->buf, recvs[i].count * esz);
        }
        phase_barrier(g);
        return 0;
}

static int local_barrier(struct dsv_comm *c) {
        struct slot mine = {.kind = CALL_BARRIER, .t = DSV_U8};
        return arrive(c, &mine);
}

static void local_abort(struct dsv_comm *c) {
        struct group *g = group_of(c);
        pthread_mutex_lock(&g->lock);
        if (!g->broken) {
                g->broken = -ECANCELED;
                g->broken_by = c->rank;
                snprintf(g->why, sizeof(g->why), "rank %d aborted the group", c->rank);
                pthread_cond_broadcast(&g->cond);
        }
        pthread_mutex_unlock(&g->lock);
}

static int local_status(struct dsv_comm *c) {
        struct group *g = group_of(c);
        int r;
        pthread_mutex_lock(&g->lock);
        r = broken_for(g, c->rank);
        pthread_mutex_unlock(&g->lock);
        return r;
}

static void group_destroy(struct group *g) {
        for (int r = 0; r < g->size; r++)
                free(g->slots[r].scratch);
        free(g->slots);
        pthread_cond_destroy(&g->cond);
        pthread_mutex_destroy(&g->lock);
        free(g);
}

static void group_unref(struct group *g) {
        bool last;
        pthread_mutex_lock(&g->lock);
        last = --g->refs == 0;
        pthread_mutex_unlock(&g->lock);
        if (last)
                group_destroy(g);
}

static void local_free(struct dsv_comm *c) {
        if (!c)
                return;
        if (c->ctx) {
                group_unref(group_of(c));
                free(c->ctx);
        }
        free(c);
}

static const struct dsv_comm_ops local_ops = {
        .name = "local",
        .free = local_free,
        .all_reduce = local_all_reduce,
        .all_gather = local_all_gather,
        .reduce_scatter = local_reduce_scatter,
        .send_recv = local_send_recv,
        .barrier = local_barrier,
        .abort = local_abort,
        .status = local_status,
};

int dsv_comm_local_group_new(int size, int timeout_ms, struct dsv_comm **comms) {
        struct group *g;
        pthread_condattr_t ca;
        int made = 0;

        if (size < 1 || size > 4096 || timeout_ms <= 0 || !comms)
                return -EINVAL;
        g = calloc(1, sizeof(*g));
        if (!g)
                return -ENOMEM;
        g->slots = calloc((size_t)size, sizeof(*g->slots));
        if (!g->slots) {
                free(g);
                return -ENOMEM;
        }
        g->size = size;
        for (int r = 0; r < size; r++)
                g->slots[r].gen = UINT64_MAX;
        pthread_mutex_init(&g->lock, NULL);
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&g->cond, &ca);
        pthread_condattr_destroy(&ca);

        for (; made < size; made++) {
                struct dsv_comm *c = calloc(1, sizeof(*c));
                struct rank_ctx *x = calloc(1, sizeof(*x));
                if (!c || !x) {
                        free(c);
                        free(x);
                        break;
                }
                x->g = g;
                *c = (struct dsv_comm){.ops = &local_ops, .ctx = x, .rank = made, .size = size, .timeout_ms = timeout_ms,
                                       .host_memory = true};
                comms[made] = c;
                g->refs++;
        }
        if (made < size) {
                if (made == 0)
                        group_destroy(g);
                for (int r = 0; r < made; r++)
                        local_free(comms[r]); /* the last one frees the group */
                return -ENOMEM;
        }
        return 0;
}
