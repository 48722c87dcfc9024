/* The cross-process communicator over Open MPI (kernels/comm.h): one rank per process of
 * MPI_COMM_WORLD, each communicator a duplicate of the world with MPI_ERRORS_RETURN, so an
 * MPI failure is an error code and never ends the process.
 *
 * Every call starts one non-blocking MPI operation (or a set of point-to-point ones) and
 * polls it until it completes, the timeout passes (-ETIMEDOUT) or the communicator is
 * aborted (-ECANCELED): MPI cannot cancel a collective, so a timed-out or aborted one
 * stays pending, the communicator is broken for good, and dsv_comm_free gives pending
 * operations a bounded chance to finish before it lets them go.
 *   all_reduce      Iallgather of the inputs, then the rank-order host reduction
 *                   (dsv_comm_reduce_rows): the local communicator's bits on every rank
 *   all_gather      Iallgather
 *   reduce_scatter  Ialltoall of the blocks, then the rank-order host reduction
 *   send_recv       Isend/Irecv per transfer, tagged with the call's sequence number so
 *                   transfers of different calls never match; a receive whose sender
 *                   sent another count is -EPROTO
 *   barrier         Ibarrier
 * Messages are MPI_BYTE; one message is at most INT_MAX bytes (-E2BIG beyond).
 *
 * The group is MPI_COMM_WORLD (processes started by mpirun, dsv_comm_mpi_new) or one joined
 * at run time by processes started on their own (dsv_comm_mpi_join: node 0 opens a port per
 * other node, each connects to its own through a running ompi-server; dsv32d --nodes N).
 *
 * Threads: MPI is used by the rank's thread only (MPI_THREAD_SERIALIZED suffices);
 * dsv_comm_abort only sets a flag that the polling loop reads. */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <mpi.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/comm.h"

/* After a failure, how long dsv_comm_free lets pending operations finish (their peers may
 * still join late). */
#define DRAIN_MS 2000

struct mpi_ctx {
        MPI_Comm comm;
        atomic_int broken; /* 0, or the sticky error (-ETIMEDOUT, -ECANCELED, -EPROTO, -EIO) */
        uint64_t seq;      /* communicating calls made (tags of send_recv) */
        int tag_ub;
        /* requests left pending by a failed call */
        MPI_Request *pending;
        int n_pending;
        void *scratch;
        size_t scratch_cap;
};

static atomic_int live_comms;

static uint64_t now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static struct mpi_ctx *ctx_of(struct dsv_comm *c) { return c->ctx; }

static int mpi_fail(struct dsv_comm *c, int code, const char *what) {
        char msg[MPI_MAX_ERROR_STRING];
        int len = 0;
        if (MPI_Error_string(code, msg, &len) != MPI_SUCCESS)
                snprintf(msg, sizeof(msg), "MPI error %d", code);
        return dsv_comm_fail(c, -EIO, "%s on rank %d of %d: %s", what, c->rank, c->size, msg);
}

static void sleep_us(long us) {
        struct timespec ts = {0, us * 1000L};
        nanosleep(&ts, NULL);
}

/* Polls reqs until all complete (0), or the timeout or an abort (the requests are kept
 * pending and the communicator breaks). statuses may be MPI_STATUSES_IGNORE. */
static int wait_all(struct dsv_comm *c, const char *what, int n, MPI_Request *reqs, MPI_Status *statuses) {
        struct mpi_ctx *x = ctx_of(c);
        const uint64_t start = now_ns(), limit = (uint64_t)c->timeout_ms * 1000000ull;
        long nap = 1;
        int done = 0, rc;

        for (;;) {
                rc = MPI_Testall(n, reqs, &done, statuses);
                if (rc != MPI_SUCCESS) {
                        atomic_store(&x->broken, -EIO);
                        return mpi_fail(c, rc, what);
                }
                if (done)
                        return 0;
                const int ab = atomic_load(&x->broken);
                const bool late = now_ns() - start > limit;
                if (ab == -ECANCELED || late) {
                        MPI_Request *p = realloc(x->pending, (size_t)(x->n_pending + n) * sizeof(*p));
                        if (p) {
                                for (int i = 0; i < n; i++)
                                        if (reqs[i] != MPI_REQUEST_NULL)
                                                p[x->n_pending++] = reqs[i];
                                x->pending = p;
                        }
                        if (ab == -ECANCELED)
                                return dsv_comm_fail(c, -ECANCELED, "%s #%llu on rank %d of %d: aborted", what,
                                                     (unsigned long long)c->calls, c->rank, c->size);
                        atomic_store(&x->broken, -ETIMEDOUT);
                        return dsv_comm_fail(c, -ETIMEDOUT,
                                             "%s #%llu on rank %d of %d: a peer did not join within %d ms", what,
                                             (unsigned long long)c->calls, c->rank, c->size, c->timeout_ms);
                }
                /* spin a little for a reply on its way, then nap, up to 200 us at a time */
                if (nap < 200 && now_ns() - start > 20000)
                        nap *= 2;
                if (now_ns() - start > 20000)
                        sleep_us(nap);
        }
}

/* The sticky error, with this handle's message when it has none yet. */
static int check_usable(struct dsv_comm *c, const char *what) {
        const int b = atomic_load(&ctx_of(c)->broken);
        if (b < 0)
                return dsv_comm_fail(c, b, "%s on rank %d of %d: the communicator is broken (%s)", what, c->rank, c->size,
                                     strerror(-b));
        return 0;
}

static int fits_int(struct dsv_comm *c, const char *what, size_t bytes) {
        if (bytes > (size_t)INT_MAX)
                return dsv_comm_fail(c, -E2BIG, "%s: %zu bytes in one message (Open MPI's limit is %d)", what, bytes, INT_MAX);
        return 0;
}

static int scratch(struct dsv_comm *c, size_t bytes, void **ret) {
        struct mpi_ctx *x = ctx_of(c);
        if (bytes > x->scratch_cap) {
                void *p = realloc(x->scratch, bytes);
                if (!p)
                        return dsv_comm_fail(c, -ENOMEM, "no memory for %zu bytes of scratch", bytes);
                x->scratch = p;
                x->scratch_cap = bytes;
        }
        *ret = x->scratch;
        return 0;
}

static int mpi_all_reduce(struct dsv_comm *c, const void *send, void *recv, size_t count, enum dsv_dtype t,
                          enum dsv_reduce op) {
        const size_t bytes = count * dsv_dtype_size(t);
        MPI_Request req;
        void *all = NULL;
        int r, rc;
        if ((r = check_usable(c, "all_reduce")) < 0 || (r = fits_int(c, "all_reduce", bytes)) < 0 ||
            (r = scratch(c, bytes * (size_t)c->size + 1, &all)) < 0)
                return r;
        ctx_of(c)->seq++;
        rc = MPI_Iallgather(send, (int)bytes, MPI_BYTE, all, (int)bytes, MPI_BYTE, ctx_of(c)->comm, &req);
        if (rc != MPI_SUCCESS) {
                atomic_store(&ctx_of(c)->broken, -EIO);
                return mpi_fail(c, rc, "MPI_Iallgather (all_reduce)");
        }
        if ((r = wait_all(c, "all_reduce", 1, &req, MPI_STATUSES_IGNORE)) < 0)
                return r;
        const void **srcs = malloc((size_t)c->size * sizeof(*srcs));
        if (!srcs)
                return dsv_comm_fail(c, -ENOMEM, "all_reduce: out of memory");
        for (int q = 0; q < c->size; q++)
                srcs[q] = (const char *)all + (size_t)q * bytes;
        dsv_comm_reduce_rows(recv, srcs, c->size, count, t, op);
        free(srcs);
        return 0;
}

static int mpi_all_gather(struct dsv_comm *c, const void *send, void *recv, size_t count, enum dsv_dtype t) {
        const size_t bytes = count * dsv_dtype_size(t);
        MPI_Request req;
        int r, rc;
        if ((r = check_usable(c, "all_gather")) < 0 || (r = fits_int(c, "all_gather", bytes)) < 0)
                return r;
        ctx_of(c)->seq++;
        /* in place: this rank's block is already at recv + rank * count */
        const bool inplace = send == (const char *)recv + (size_t)c->rank * bytes;
        rc = MPI_Iallgather(inplace ? MPI_IN_PLACE : send, (int)bytes, MPI_BYTE, recv, (int)bytes, MPI_BYTE, ctx_of(c)->comm,
                            &req);
        if (rc != MPI_SUCCESS) {
                atomic_store(&ctx_of(c)->broken, -EIO);
                return mpi_fail(c, rc, "MPI_Iallgather");
        }
        return wait_all(c, "all_gather", 1, &req, MPI_STATUSES_IGNORE);
}

static int mpi_reduce_scatter(struct dsv_comm *c, const void *send, void *recv, size_t count, enum dsv_dtype t,
                              enum dsv_reduce op) {
        const size_t bytes = count * dsv_dtype_size(t);
        MPI_Request req;
        void *blocks = NULL;
        int r, rc;
        if ((r = check_usable(c, "reduce_scatter")) < 0 || (r = fits_int(c, "reduce_scatter", bytes)) < 0 ||
            (r = scratch(c, bytes * (size_t)c->size + 1, &blocks)) < 0)
                return r;
        ctx_of(c)->seq++;
        /* block q of every rank's input goes to rank q */
        rc = MPI_Ialltoall(send, (int)bytes, MPI_BYTE, blocks, (int)bytes, MPI_BYTE, ctx_of(c)->comm, &req);
        if (rc != MPI_SUCCESS) {
                atomic_store(&ctx_of(c)->broken, -EIO);
                return mpi_fail(c, rc, "MPI_Ialltoall (reduce_scatter)");
        }
        if ((r = wait_all(c, "reduce_scatter", 1, &req, MPI_STATUSES_IGNORE)) < 0)
                return r;
        const void **srcs = malloc((size_t)c->size * sizeof(*srcs));
        if (!srcs)
                return dsv_comm_fail(c, -ENOMEM, "reduce_scatter: out of memory");
        for (int q = 0; q < c->size; q++)
                srcs[q] = (const char *)blocks + (size_t)q * bytes;
        dsv_comm_reduce_rows(recv, srcs, c->size, count, t, op);
        free(srcs);
        return 0;
}

static int post_and_wait(struct dsv_comm *c, const struct dsv_comm_xfer *sends, int n_sends, const struct dsv_comm_xfer *recvs,
                         int n_recvs, size_t esz, MPI_Request *reqs, MPI_Status *st);

static int mpi_send_recv(struct dsv_comm *c, const struct dsv_comm_xfer *sends, int n_sends, const struct dsv_comm_xfer *recvs,
                         int n_recvs, enum dsv_dtype t) {
        const size_t esz = dsv_dtype_size(t);
        const int n = n_sends + n_recvs;
        MPI_Request *reqs;
        MPI_Status *st;
        int r;

        if ((r = check_usable(c, "send_recv")) < 0)
                return r;
        for (int i = 0; i < n_sends; i++)
                if ((r = fits_int(c, "send_recv", sends[i].count * esz)) < 0)
                        return r;
        for (int i = 0; i < n_recvs; i++)
                if ((r = fits_int(c, "send_recv", recvs[i].count * esz)) < 0)
                        return r;
        reqs = calloc((size_t)n + 1, sizeof(*reqs));
        st = calloc((size_t)n + 1, sizeof(*st));
        if (!reqs || !st) {
                free(reqs);
                free(st);
                return dsv_comm_fail(c, -ENOMEM, "send_recv: out of memory");
        }
        r = post_and_wait(c, sends, n_sends, recvs, n_recvs, esz, reqs, st);
        free(reqs);
        free(st);
        return r;
}

/* Posts every receive, then every send, and waits; checks the received counts. */
static int post_and_wait(struct dsv_comm *c, const struct dsv_comm_xfer *sends, int n_sends, const struct dsv_comm_xfer *recvs,
                         int n_recvs, size_t esz, MPI_Request *reqs, MPI_Status *st) {
        struct mpi_ctx *x = ctx_of(c);
        const int n = n_sends + n_recvs;
        int r, rc, tag;
        tag = (int)(x->seq++ % (uint64_t)x->tag_ub);
        /* receives first; MPI matches messages of one (source, tag) in posting order */
        for (int i = 0; i < n_recvs; i++) {
                rc = MPI_Irecv(recvs[i].buf, (int)(recvs[i].count * esz), MPI_BYTE, recvs[i].peer, tag, x->comm, &reqs[i]);
                if (rc != MPI_SUCCESS)
                        goto fail;
        }
        for (int i = 0; i < n_sends; i++) {
                rc = MPI_Isend(sends[i].buf, (int)(sends[i].count * esz), MPI_BYTE, sends[i].peer, tag, x->comm,
                               &reqs[n_recvs + i]);
                if (rc != MPI_SUCCESS)
                        goto fail;
        }
        r = wait_all(c, "send_recv", n, reqs, st);
        if (r == -EIO) {
                /* a truncated message (a sender sent more than was expected) is a disagreement */
                for (int i = 0; i < n_recvs; i++) {
                        int cls = 0;
                        if (st[i].MPI_ERROR != MPI_SUCCESS && MPI_Error_class(st[i].MPI_ERROR, &cls) == MPI_SUCCESS &&
                            cls == MPI_ERR_TRUNCATE) {
                                atomic_store(&x->broken, -EPROTO);
                                return dsv_comm_fail(c, -EPROTO,
                                                     "send_recv: rank %d sent rank %d more than the %zu elements it expected",
                                                     recvs[i].peer, c->rank, recvs[i].count);
                        }
                }
                return r;
        }
        if (r < 0)
                return r;
        for (int i = 0; i < n_recvs; i++) {
                int got = 0;
                MPI_Get_count(&st[i], MPI_BYTE, &got);
                if ((size_t)got != recvs[i].count * esz) {
                        atomic_store(&x->broken, -EPROTO);
                        return dsv_comm_fail(c, -EPROTO, "send_recv: rank %d sent rank %d %zu elements, %zu expected",
                                             recvs[i].peer, c->rank, (size_t)got / esz, recvs[i].count);
                }
        }
        return 0;
fail:
        atomic_store(&x->broken, -EIO);
        return mpi_fail(c, rc, "MPI_Isend/MPI_Irecv");
}

static int mpi_barrier(struct dsv_comm *c) {
        MPI_Request req;
        int r, rc;
        if ((r = check_usable(c, "barrier")) < 0)
                return r;
        ctx_of(c)->seq++;
        rc = MPI_Ibarrier(ctx_of(c)->comm, &req);
        if (rc != MPI_SUCCESS) {
                atomic_store(&ctx_of(c)->broken, -EIO);
                return mpi_fail(c, rc, "MPI_Ibarrier");
        }
        return wait_all(c, "barrier", 1, &req, MPI_STATUSES_IGNORE);
}

static void mpi_abort(struct dsv_comm *c) {
        int zero = 0;
        atomic_compare_exchange_strong(&ctx_of(c)->broken, &zero, -ECANCELED);
}

static int mpi_status(struct dsv_comm *c) { return atomic_load(&ctx_of(c)->broken); }

static void mpi_free(struct dsv_comm *c) {
        struct mpi_ctx *x;
        if (!c)
                return;
        x = c->ctx;
        if (x) {
                /* pending operations of a failed call: their peers may still complete them */
                const uint64_t start = now_ns();
                int done = x->n_pending == 0;
                while (!done && now_ns() - start < (uint64_t)DRAIN_MS * 1000000ull) {
                        if (MPI_Testall(x->n_pending, x->pending, &done, MPI_STATUSES_IGNORE) != MPI_SUCCESS)
                                break;
                        if (!done)
                                sleep_us(500);
                }
                /* still pending: MPI_Comm_free would wait for them; let the communicator go */
                if (done && x->comm != MPI_COMM_NULL)
                        MPI_Comm_free(&x->comm);
                free(x->pending);
                if (done)
                        free(x->scratch); /* else a pending gather may still write into it */
                free(x);
                atomic_fetch_sub(&live_comms, 1);
        }
        free(c);
}

static const struct dsv_comm_ops mpi_ops = {
        .name = "mpi",
        .free = mpi_free,
        .all_reduce = mpi_all_reduce,
        .all_gather = mpi_all_gather,
        .reduce_scatter = mpi_reduce_scatter,
        .send_recv = mpi_send_recv,
        .barrier = mpi_barrier,
        .abort = mpi_abort,
        .status = mpi_status,
};

static int mpi_init(void) {
        int inited = 0, provided = 0;
        MPI_Initialized(&inited);
        if (!inited && MPI_Init_thread(NULL, NULL, MPI_THREAD_SERIALIZED, &provided) != MPI_SUCCESS)
                return -EIO;
        return 0;
}

/* A communicator over a duplicate of base (base stays the caller's). */
static int mpi_wrap(MPI_Comm base, int timeout_ms, struct dsv_comm **ret) {
        struct dsv_comm *c = NULL;
        struct mpi_ctx *x = NULL;
        int flag = 0;
        void *ub = NULL;

        c = calloc(1, sizeof(*c));
        x = calloc(1, sizeof(*x));
        if (!c || !x) {
                free(c);
                free(x);
                return -ENOMEM;
        }
        x->comm = MPI_COMM_NULL;
        if (MPI_Comm_dup(base, &x->comm) != MPI_SUCCESS ||
            MPI_Comm_set_errhandler(x->comm, MPI_ERRORS_RETURN) != MPI_SUCCESS) {
                free(c);
                free(x);
                return -EIO;
        }
        MPI_Comm_rank(x->comm, &c->rank);
        MPI_Comm_size(x->comm, &c->size);
        x->tag_ub = 32767; /* the least MPI guarantees */
        if (MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &ub, &flag) == MPI_SUCCESS && flag && ub)
                x->tag_ub = *(int *)ub;
        c->ops = &mpi_ops;
        c->ctx = x;
        c->timeout_ms = timeout_ms;
        c->host_memory = true;
        atomic_fetch_add(&live_comms, 1);
        *ret = c;
        return 0;
}

int dsv_comm_mpi_new(int timeout_ms, struct dsv_comm **ret) {
        int r;
        if (timeout_ms <= 0 || !ret)
                return -EINVAL;
        if ((r = mpi_init()) < 0)
                return r;
        return mpi_wrap(MPI_COMM_WORLD, timeout_ms, ret);
}

int dsv_comm_mpi_dup(struct dsv_comm *c, int timeout_ms, struct dsv_comm **ret) {
        if (!c || c->ops != &mpi_ops || timeout_ms <= 0 || !ret)
                return -EINVAL;
        return mpi_wrap(ctx_of(c)->comm, timeout_ms, ret);
}

int dsv_comm_mpi_open_ports(int nodes, char *ports, size_t cap) {
        size_t off = 0;
        int r;
        if (nodes < 1 || !ports || cap == 0)
                return -EINVAL;
        if ((r = mpi_init()) < 0)
                return r;
        MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
        ports[0] = 0;
        for (int k = 1; k < nodes; k++) {
                char name[MPI_MAX_PORT_NAME + 1] = {0};
                if (MPI_Open_port(MPI_INFO_NULL, name) != MPI_SUCCESS)
                        return -EIO;
                const size_t len = strlen(name);
                if (off + len + 2 > cap)
                        return -ENOBUFS;
                if (off)
                        ports[off++] = '\n';
                memcpy(ports + off, name, len + 1);
                off += len;
        }
        return 0;
}

/* Port k - 1 of the list (line k - 1), into name; -EINVAL when the list has no such line. */
static int port_of(const char *ports, int k, char *name) {
        const char *p = ports;
        for (int i = 1; i < k; i++) {
                p = strchr(p, '\n');
                if (!p)
                        return -EINVAL;
                p++;
        }
        const size_t len = strcspn(p, "\n");
        if (len == 0 || len > MPI_MAX_PORT_NAME)
                return -EINVAL;
        memcpy(name, p, len);
        name[len] = 0;
        return 0;
}

/* MPI_Comm_connect / MPI_Comm_accept have no timeout of their own: the caller bounds the
 * join from outside (the bootstrap's heartbeats; see comm.h). Node k connects to port k
 * only, which the group accepts after node k - 1 has joined: several processes connecting
 * to one port at once can be paired wrongly by Open MPI and hang (seen with 4 nodes). */
int dsv_comm_mpi_join(const char *ports, int nodes, int node_rank, int timeout_ms, struct dsv_comm **ret) {
        MPI_Comm intra = MPI_COMM_NULL, inter = MPI_COMM_NULL, merged = MPI_COMM_NULL, ordered = MPI_COMM_NULL;
        char name[MPI_MAX_PORT_NAME + 1];
        int r, size = 0;

        if (!ports || nodes < 1 || node_rank < 0 || node_rank >= nodes || timeout_ms <= 0 || !ret)
                return -EINVAL;
        for (int k = 1; k < nodes; k++)
                if (port_of(ports, k, name) < 0)
                        return -EINVAL;
        if ((r = mpi_init()) < 0)
                return r;
        MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN);
        if (node_rank == 0 || nodes == 1) {
                if (MPI_Comm_dup(MPI_COMM_SELF, &intra) != MPI_SUCCESS)
                        return -EIO;
        } else {
                port_of(ports, node_rank, name);
                if (MPI_Comm_connect(name, MPI_INFO_NULL, 0, MPI_COMM_SELF, &inter) != MPI_SUCCESS)
                        return -ECONNREFUSED;
                r = MPI_Intercomm_merge(inter, 1, &intra);
                MPI_Comm_free(&inter);
                if (r != MPI_SUCCESS)
                        return -EIO;
        }
        MPI_Comm_set_errhandler(intra, MPI_ERRORS_RETURN);
        /* every member takes part in admitting the next node (its rank 0 is node 0) */
        for (MPI_Comm_size(intra, &size); size < nodes; MPI_Comm_size(intra, &size)) {
                port_of(ports, size, name);
                if (MPI_Comm_accept(name, MPI_INFO_NULL, 0, intra, &inter) != MPI_SUCCESS) {
                        MPI_Comm_free(&intra);
                        return -EIO;
                }
                r = MPI_Intercomm_merge(inter, 0, &merged);
                MPI_Comm_free(&inter);
                MPI_Comm_free(&intra);
                if (r != MPI_SUCCESS)
                        return -EIO;
                intra = merged;
                MPI_Comm_set_errhandler(intra, MPI_ERRORS_RETURN);
        }
        /* ranks in node order (they are already; the split makes it a plain intracommunicator) */
        r = MPI_Comm_split(intra, 0, node_rank, &ordered);
        MPI_Comm_free(&intra);
        if (r != MPI_SUCCESS)
                return -EIO;
        r = mpi_wrap(ordered, timeout_ms, ret);
        MPI_Comm_free(&ordered);
        return r;
}

void dsv_comm_mpi_finalize(void) {
        int inited = 0, finalized = 0;
        MPI_Initialized(&inited);
        MPI_Finalized(&finalized);
        if (inited && !finalized && atomic_load(&live_comms) == 0)
                MPI_Finalize();
}
