/* The NCCL communicator of the CUDA plugin (kernels/comm.h over NCCL): one ncclComm_t per
 * rank, on the device and stream of the rank's backend. Plugin entry points:
 *   dsv_backend_cuda_comm_unique_id(id, cap, &len)   ncclGetUniqueId (128 bytes)
 *   dsv_backend_cuda_comm_new(abi, be, id, len, size, rank, timeout_ms, &comm)
 * (opened through dsv_comm_plugin_unique_id / dsv_comm_open_plugin, kernels/backend_plugin.h).
 *
 * Communicators are created non-blocking (ncclConfig_t.blocking = 0), so no NCCL call can
 * hang the caller: every call enqueues its operation on the backend's stream, records an
 * event, and polls the event and ncclCommGetAsyncError until the operation is done, NCCL
 * reports an error (-EIO), the timeout passes (-ETIMEDOUT) or dsv_comm_abort was called
 * (-ECANCELED). On a timeout or an abort the owning thread calls ncclCommAbort, which ends
 * the communicator's kernels; the communicator stays broken. dsv_comm_abort itself only
 * sets a flag (any thread), which the owner acts on at its next poll or call.
 *   all_reduce, all_gather, reduce_scatter   ncclAllReduce, ncclAllGather, ncclReduceScatter
 *                                            (in place as NCCL defines it, as kernels/comm.h)
 *   send_recv                                ncclSend/ncclRecv inside ncclGroupStart/End
 *   barrier                                  an all-reduce of one int
 * NCCL adds in its own order (rings, trees): sums are not the local communicator's bits.
 * Every NCCL call goes through DCU_NCCL, which records statement, file and line. */
#include <atomic>
#include <new>
#include <stdarg.h>
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/backend_plugin.h"
#include "kernels/cuda/common.cuh"

#define DCU_EXPORT extern "C" __attribute__((visibility("default")))

static int fail_nccl(ncclResult_t s, const char *stmt, const char *file, int line) {
        char what[384];
        snprintf(what, sizeof(what), "%s failed: %s", stmt, ncclGetErrorString(s));
        switch (s) {
        case ncclInvalidArgument:
        case ncclInvalidUsage:
                return dcu_fail(-EINVAL, file, line, what);
        default:
                return dcu_fail(-EIO, file, line, what);
        }
}

/* ncclInProgress is not a failure for a non-blocking communicator: the caller polls. */
#define DCU_NCCL(stmt)                                                                  \
        do {                                                                            \
                ncclResult_t s_ = (stmt);                                               \
                if (s_ != ncclSuccess && s_ != ncclInProgress)                          \
                        return fail_nccl(s_, #stmt, __FILE__, __LINE__);                \
        } while (0)

struct nccl_ctx {
        ncclComm_t comm;
        struct dcu_ctx *dc;
        cudaEvent_t done;
        int *word; /* device: the barrier's all-reduce */
        std::atomic<int> broken;         /* 0 or the sticky error */
        std::atomic<bool> abort_request; /* dsv_comm_abort */
        bool aborted;                    /* ncclCommAbort was called */
};

static struct nccl_ctx *ctx_of(struct dsv_comm *c) { return (struct nccl_ctx *)c->ctx; }

static uint64_t now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void nap(uint64_t waited_ns) {
        /* spin briefly for an operation on its way, then sleep 50 us at a time */
        if (waited_ns < 20000)
                return;
        struct timespec ts = {0, 50000};
        nanosleep(&ts, NULL);
}

static int setfail(struct dsv_comm *c, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int setfail(struct dsv_comm *c, int err, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->error, sizeof(c->error), fmt, ap);
        va_end(ap);
        return err;
}

/* Breaks the communicator with err, aborting NCCL's side of it. */
static int break_comm(struct dsv_comm *c, int err) {
        struct nccl_ctx *x = ctx_of(c);
        int zero = 0;
        x->broken.compare_exchange_strong(zero, err);
        if (!x->aborted && x->comm) {
                ncclCommAbort(x->comm);
                x->aborted = true;
        }
        return x->broken.load();
}

static int check_usable(struct dsv_comm *c, const char *what) {
        struct nccl_ctx *x = ctx_of(c);
        if (x->abort_request.load())
                break_comm(c, -ECANCELED);
        const int b = x->broken.load();
        if (b < 0)
                return setfail(c, b, "%s on rank %d of %d: the communicator is broken (%s)", what, c->rank, c->size,
                               strerror(-b));
        return 0;
}

/* Waits until the stream reached the event recorded after the operation (or NCCL's own
 * non-blocking call completed, when wait_event is false). */
static int poll_done(struct dsv_comm *c, const char *what, bool wait_event) {
        struct nccl_ctx *x = ctx_of(c);
        const uint64_t start = now_ns(), limit = (uint64_t)c->timeout_ms * 1000000ull;
        for (;;) {
                ncclResult_t st = ncclSuccess;
                if (ncclCommGetAsyncError(x->comm, &st) != ncclSuccess || (st != ncclSuccess && st != ncclInProgress)) {
                        const char *last = ncclGetLastError(x->comm);
                        break_comm(c, -EIO);
                        return setfail(c, -EIO, "%s #%llu on rank %d of %d: NCCL: %s%s%s", what, (unsigned long long)c->calls,
                                       c->rank, c->size, ncclGetErrorString(st), last && *last ? ": " : "", last ? last : "");
                }
                if (st == ncclSuccess) {
                        if (!wait_event)
                                return 0;
                        cudaError_t e = cudaEventQuery(x->done);
                        if (e == cudaSuccess)
                                return 0;
                        if (e != cudaErrorNotReady) {
                                break_comm(c, -EIO);
                                return setfail(c, -EIO, "%s #%llu on rank %d of %d: %s", what, (unsigned long long)c->calls,
                                               c->rank, c->size, cudaGetErrorString(e));
                        }
                }
                const uint64_t waited = now_ns() - start;
                if (x->abort_request.load()) {
                        break_comm(c, -ECANCELED);
                        return setfail(c, -ECANCELED, "%s #%llu on rank %d of %d: aborted", what, (unsigned long long)c->calls,
                                       c->rank, c->size);
                }
                if (waited > limit) {
                        break_comm(c, -ETIMEDOUT);
                        return setfail(c, -ETIMEDOUT, "%s #%llu on rank %d of %d: a peer did not join within %d ms", what,
                                       (unsigned long long)c->calls, c->rank, c->size, c->timeout_ms);
                }
                nap(waited);
        }
}

/* After enqueueing an operation: its completion on the stream. */
static int finish(struct dsv_comm *c, const char *what) {
        struct nccl_ctx *x = ctx_of(c);
        int r = poll_done(c, what, false); /* the non-blocking enqueue itself */
        if (r < 0)
                return r;
        DCU_CUDA(cudaEventRecord(x->done, x->dc->stream));
        return poll_done(c, what, true);
}

static ncclDataType_t nccl_type(enum dsv_dtype t) {
        switch (t) {
        case DSV_F32:
                return ncclFloat32;
        case DSV_BF16:
                return ncclBfloat16;
        case DSV_I32:
                return ncclInt32;
        default:
                return ncclUint8;
        }
}

static ncclRedOp_t nccl_op(enum dsv_reduce op) { return op == DSV_REDUCE_LARGEST ? ncclMax : ncclSum; }

static int enter(struct dsv_comm *c, const char *what) {
        DCU_TRY(check_usable(c, what));
        DCU_CUDA(cudaSetDevice(ctx_of(c)->dc->device));
        return 0;
}

static int nccl_all_reduce(struct dsv_comm *c, const void *send, void *recv, size_t count, enum dsv_dtype t,
                           enum dsv_reduce op) {
        struct nccl_ctx *x = ctx_of(c);
        DCU_TRY(enter(c, "all_reduce"));
        DCU_NCCL(ncclAllReduce(send, recv, count, nccl_type(t), nccl_op(op), x->comm, x->dc->stream));
        return finish(c, "all_reduce");
}

static int nccl_all_gather(struct dsv_comm *c, const void *send, void *recv, size_t count, enum dsv_dtype t) {
        struct nccl_ctx *x = ctx_of(c);
        DCU_TRY(enter(c, "all_gather"));
        DCU_NCCL(ncclAllGather(send, recv, count, nccl_type(t), x->comm, x->dc->stream));
        return finish(c, "all_gather");
}

static int nccl_reduce_scatter(struct dsv_comm *c, const void *send, void *recv, size_t count, enum dsv_dtype t,
                               enum dsv_reduce op) {
        struct nccl_ctx *x = ctx_of(c);
        DCU_TRY(enter(c, "reduce_scatter"));
        DCU_NCCL(ncclReduceScatter(send, recv, count, nccl_type(t), nccl_op(op), x->comm, x->dc->stream));
        return finish(c, "reduce_scatter");
}

static int group_body(struct dsv_comm *c, const struct dsv_comm_xfer *sends, int n_sends, const struct dsv_comm_xfer *recvs,
                      int n_recvs, enum dsv_dtype t) {
        struct nccl_ctx *x = ctx_of(c);
        for (int i = 0; i < n_recvs; i++)
                DCU_NCCL(ncclRecv(recvs[i].buf, recvs[i].count, nccl_type(t), recvs[i].peer, x->comm, x->dc->stream));
        for (int i = 0; i < n_sends; i++)
                DCU_NCCL(ncclSend(sends[i].buf, sends[i].count, nccl_type(t), sends[i].peer, x->comm, x->dc->stream));
        return 0;
}

static int nccl_send_recv(struct dsv_comm *c, const struct dsv_comm_xfer *sends, int n_sends, const struct dsv_comm_xfer *recvs,
                          int n_recvs, enum dsv_dtype t) {
        DCU_TRY(enter(c, "send_recv"));
        DCU_NCCL(ncclGroupStart());
        int r = group_body(c, sends, n_sends, recvs, n_recvs, t);
        ncclResult_t e = ncclGroupEnd(); /* always closes the group */
        if (r < 0)
                return r;
        if (e != ncclSuccess && e != ncclInProgress)
                return fail_nccl(e, "ncclGroupEnd()", __FILE__, __LINE__);
        return finish(c, "send_recv");
}

static int nccl_barrier(struct dsv_comm *c) {
        struct nccl_ctx *x = ctx_of(c);
        DCU_TRY(enter(c, "barrier"));
        DCU_NCCL(ncclAllReduce(x->word, x->word, 1, ncclInt32, ncclSum, x->comm, x->dc->stream));
        return finish(c, "barrier");
}

static void nccl_abort(struct dsv_comm *c) { ctx_of(c)->abort_request.store(true); }

static int nccl_status(struct dsv_comm *c) {
        struct nccl_ctx *x = ctx_of(c);
        const int b = x->broken.load();
        if (b < 0)
                return b;
        return x->abort_request.load() ? -ECANCELED : 0;
}

static void nccl_free(struct dsv_comm *c) {
        if (!c)
                return;
        struct nccl_ctx *x = ctx_of(c);
        if (x) {
                cudaSetDevice(x->dc->device);
                if (x->comm) {
                        bool clean = false;
                        if (!x->aborted && x->broken.load() == 0 && !x->abort_request.load() &&
                            ncclCommFinalize(x->comm) != ncclInternalError) {
                                /* flush, bounded by the timeout; an unfinished flush is aborted */
                                const uint64_t start = now_ns();
                                ncclResult_t st = ncclInProgress;
                                while (ncclCommGetAsyncError(x->comm, &st) == ncclSuccess && st == ncclInProgress &&
                                       now_ns() - start < (uint64_t)c->timeout_ms * 1000000ull)
                                        nap(now_ns() - start);
                                clean = st == ncclSuccess;
                        }
                        if (clean)
                                ncclCommDestroy(x->comm);
                        else if (!x->aborted)
                                ncclCommAbort(x->comm);
                }
                if (x->done)
                        cudaEventDestroy(x->done);
                if (x->word)
                        cudaFree(x->word);
                delete x;
        }
        free(c);
}

static const struct dsv_comm_ops nccl_ops = {
        "nccl", nccl_free, nccl_all_reduce, nccl_all_gather, nccl_reduce_scatter,
        nccl_send_recv, nccl_barrier, nccl_abort, nccl_status,
};

DCU_EXPORT int dsv_backend_cuda_comm_unique_id(void *id, size_t cap, size_t *len) {
        ncclUniqueId u;
        if (cap < sizeof(u))
                return dcu_fail(-ENOBUFS, __FILE__, __LINE__, "the NCCL unique id needs 128 bytes");
        DCU_NCCL(ncclGetUniqueId(&u));
        memcpy(id, &u, sizeof(u));
        *len = sizeof(u);
        return 0;
}

/* Joins the group; returns once every rank joined, or -ETIMEDOUT. */
static int join(struct dsv_comm *c, const ncclUniqueId *uid) {
        struct nccl_ctx *x = ctx_of(c);
        ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
        cfg.blocking = 0;
        DCU_CUDA(cudaSetDevice(x->dc->device));
        DCU_NCCL(ncclCommInitRankConfig(&x->comm, c->size, *uid, c->rank, &cfg));
        DCU_TRY(poll_done(c, "ncclCommInitRankConfig", false));
        DCU_CUDA(cudaEventCreateWithFlags(&x->done, cudaEventDisableTiming));
        DCU_CUDA(cudaMalloc((void **)&x->word, sizeof(int)));
        DCU_CUDA(cudaMemsetAsync(x->word, 0, sizeof(int), x->dc->stream));
        return 0;
}

DCU_EXPORT int dsv_backend_cuda_comm_new(uint32_t comm_abi, struct dsv_backend *be, const void *id, size_t id_len, int size,
                                         int rank, int timeout_ms, struct dsv_comm **ret) {
        ncclUniqueId uid;
        if (comm_abi != DSV_COMM_ABI)
                return dcu_fail(-EPROTO, __FILE__, __LINE__,
                                "the plugin was built against another communicator interface: rebuild or reinstall it");
        if (!be || !id || id_len != sizeof(uid) || size < 1 || rank < 0 || rank >= size || timeout_ms <= 0 || !ret)
                return dcu_fail(-EINVAL, __FILE__, __LINE__, "bad arguments (the NCCL unique id is 128 bytes)");
        memcpy(&uid, id, sizeof(uid));
        struct dsv_comm *c = (struct dsv_comm *)calloc(1, sizeof(*c));
        struct nccl_ctx *x = new (std::nothrow) nccl_ctx();
        if (!c || !x) {
                free(c);
                delete x;
                return dcu_fail(-ENOMEM, __FILE__, __LINE__, "out of memory");
        }
        x->comm = nullptr;
        x->dc = dcu_ctx_of(be);
        x->done = nullptr;
        x->word = nullptr;
        x->broken.store(0);
        x->abort_request.store(false);
        x->aborted = false;
        c->ops = &nccl_ops;
        c->ctx = x;
        c->rank = rank;
        c->size = size;
        c->timeout_ms = timeout_ms;
        c->host_memory = false;
        int r = join(c, &uid);
        if (r < 0) {
                /* keep the reason: dcu_fail's text, or the poll's */
                if (c->error[0])
                        dcu_fail(r, __FILE__, __LINE__, c->error);
                nccl_free(c);
                return r;
        }
        *ret = c;
        return 0;
}
