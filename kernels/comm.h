/* The communicator interface: collectives and grouped point-to-point transfers between the
 * ranks of a group, with NCCL's calling semantics, behind a vtable like the backend's.
 * Implementations:
 *   local   in-process, over threads and host memory (kernels/comm_local.c): CPU ranks of
 *           one process, and the reference the others are tested against
 *   mpi     cross-process over Open MPI (kernels/comm_mpi.c, when configure found it)
 *   nccl    GPUs, in the CUDA plugin (kernels/cuda/comm_nccl.cu), opened through
 *           dsv_comm_open_plugin (kernels/backend_plugin.h)
 * tests/comm/ holds the one conformance suite all of them pass.
 *
 * Semantics (the same for every implementation):
 *   - Every rank of the group makes the same sequence of calls (collective order), with the
 *     same count, dtype and reduction; buffers are the rank's own (host memory for local
 *     and mpi, device memory of the rank's backend for nccl). A call returns when the
 *     rank's output is complete and its input may be reused.
 *   - In place: all_reduce with recv == send; all_gather with send == recv + rank * count;
 *     reduce_scatter with recv == send + rank * count. Other overlaps are undefined.
 *   - all_reduce:     recv[i] = op over ranks r (in rank order) of send_r[i], i < count
 *     all_gather:     recv[r * count + i] = send_r[i]
 *     reduce_scatter: recv[i] = op over r of send_r[rank * count + i]   (send holds size*count)
 *     send_recv:      a group of sends and receives, collective over the communicator (every
 *                     rank calls it, possibly with none); the k-th send from a to b matches
 *                     the k-th receive at b from a, with the same count. all-to-all with
 *                     variable counts is dsv_comm_all_to_allv below. A rank may send to
 *                     itself.
 *     barrier:        returns once every rank has entered it.
 *   - Sums of BF16 are computed in fp32 in rank order and rounded once (local, mpi; NCCL
 *     rounds its own way), F32 in fp32 in rank order, I32 and U8 wrap around (two's
 *     complement). The result is the same on every rank and bit-identical from run to run
 *     for local and mpi. LARGEST is the elementwise maximum (NaN handling unspecified).
 *   - Errors: every call returns 0 or -errno:
 *       -EINVAL        bad arguments on this rank (nothing was communicated; usable after)
 *       -ETIMEDOUT     a peer did not join this call within the communicator's timeout
 *       -ECANCELED     dsv_comm_abort was called on this communicator
 *       -ECONNABORTED  the group is broken: another rank timed out, aborted or failed
 *       -EPROTO        the ranks disagreed (different collective, count, dtype, or a send
 *                      with no matching receive)
 *       -EIO           the transport failed (MPI, NCCL); dsv_comm_last_error says why
 *     A timeout, abort or disagreement breaks the communicator for good: later calls return
 *     the same error at once (dsv_comm_status tells it). Recovering means a new group.
 *
 * Threads: a communicator handle is used by one thread at a time (its rank's thread);
 * dsv_comm_abort and dsv_comm_status may be called from any thread at any time, e.g. by a
 * watchdog or the cluster bootstrap when a peer node is lost. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kernels/dtype.h"

enum dsv_reduce {
        DSV_REDUCE_SUM,
        DSV_REDUCE_LARGEST, /* elementwise maximum */
        DSV_REDUCE_MAX,
};
const char *dsv_reduce_name(enum dsv_reduce op);

/* One transfer of a grouped send/recv: count elements to or from peer. */
struct dsv_comm_xfer {
        int peer;
        void *buf; /* send: read only */
        size_t count;
};

struct dsv_comm;

struct dsv_comm_ops {
        const char *name;
        void (*free)(struct dsv_comm *c);
        int (*all_reduce)(struct dsv_comm *c, const void *send, void *recv, size_t count, enum dsv_dtype t,
                          enum dsv_reduce op);
        int (*all_gather)(struct dsv_comm *c, const void *send, void *recv, size_t count, enum dsv_dtype t);
        int (*reduce_scatter)(struct dsv_comm *c, const void *send, void *recv, size_t count, enum dsv_dtype t,
                              enum dsv_reduce op);
        int (*send_recv)(struct dsv_comm *c, const struct dsv_comm_xfer *sends, int n_sends,
                         const struct dsv_comm_xfer *recvs, int n_recvs, enum dsv_dtype t);
        int (*barrier)(struct dsv_comm *c);
        /* Any thread: breaks the communicator; calls in progress return -ECANCELED. */
        void (*abort)(struct dsv_comm *c);
        /* Any thread: 0, or the error that broke the communicator. */
        int (*status)(struct dsv_comm *c);
};

struct dsv_comm {
        const struct dsv_comm_ops *ops;
        void *ctx;
        int rank, size;
        int timeout_ms;     /* how long a call waits for its peers */
        bool host_memory;   /* buffers are host pointers (local, mpi) or device memory (nccl) */
        uint64_t calls;     /* calls made on this handle (for messages) */
        char error[320];    /* the last failure of this handle, for logs; "" when none */
};

/* Changes whenever the vtable or struct dsv_comm change (checked by the plugin). */
#define DSV_COMM_ABI ((uint32_t)(0x434d0000u ^ ((uint32_t)sizeof(struct dsv_comm) << 8) ^ (uint32_t)sizeof(struct dsv_comm_ops)))

/* The dtypes every implementation supports: F32, BF16, I32, U8. */
bool dsv_comm_dtype_ok(enum dsv_dtype t);

/* In-process group: creates `size` communicators (ranks 0..size-1) sharing one group;
 * comms[r] belongs to the thread that runs rank r. timeout_ms > 0. Each is freed with
 * dsv_comm_free (the group goes with the last). */
int dsv_comm_local_group_new(int size, int timeout_ms, struct dsv_comm **comms);

void dsv_comm_free(struct dsv_comm *c);

/* Argument checks shared by all implementations, then the vtable. */
int dsv_comm_all_reduce(struct dsv_comm *c, const void *send, void *recv, size_t count, enum dsv_dtype t,
                        enum dsv_reduce op);
int dsv_comm_all_gather(struct dsv_comm *c, const void *send, void *recv, size_t count, enum dsv_dtype t);
int dsv_comm_reduce_scatter(struct dsv_comm *c, const void *send, void *recv, size_t count, enum dsv_dtype t,
                            enum dsv_reduce op);
int dsv_comm_send_recv(struct dsv_comm *c, const struct dsv_comm_xfer *sends, int n_sends, const struct dsv_comm_xfer *recvs,
                       int n_recvs, enum dsv_dtype t);
int dsv_comm_barrier(struct dsv_comm *c);
void dsv_comm_abort(struct dsv_comm *c);
int dsv_comm_status(struct dsv_comm *c);
/* The last failure of this handle ("rank 2 did not join all_reduce #17 within 5000 ms"), or "". */
const char *dsv_comm_last_error(const struct dsv_comm *c);
/* Why call failed with r (-errno): the handle's last failure, or strerror(-r) when it has none. */
static inline const char *dsv_comm_why(const struct dsv_comm *c, int r) {
        return dsv_comm_last_error(c)[0] ? dsv_comm_last_error(c) : strerror(-r);
}

/* All-to-all with variable counts (the MoE dispatch and combine): rank r sends
 * send_counts[p] elements from send + send_offsets[p] to each rank p, and receives
 * recv_counts[p] elements from p at recv + recv_offsets[p] (counts and offsets in
 * elements, size entries each). Pairs with a zero count exchange nothing. */
int dsv_comm_all_to_allv(struct dsv_comm *c, const void *send, const size_t *send_counts, const size_t *send_offsets,
                         void *recv, const size_t *recv_counts, const size_t *recv_offsets, enum dsv_dtype t);

/* ------------------------------------------------------------------ for implementations */
/* Records the failure in c->error (printf-style) and returns err. */
int dsv_comm_fail(struct dsv_comm *c, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* out[i] = op over the n_srcs source rows (srcs[0] first) of src[j][i]; BF16 sums in fp32,
 * rounded once. out may alias srcs[k] only element for element (in-place reduce_scatter). */
void dsv_comm_reduce_rows(void *out, const void *const *srcs, int n_srcs, size_t n, enum dsv_dtype t, enum dsv_reduce op);

/* ------------------------------------------------------------------ Open MPI
 * kernels/comm_mpi.c, built when configure found Open MPI (HAVE_MPI in config.h; link
 * libdsv32commmpi.la). One rank per process of MPI_COMM_WORLD, started by mpirun: each
 * call makes a new communicator (a duplicate of the world, errors returned, never fatal).
 * Collectives are non-blocking MPI operations polled until done or the timeout; an abort
 * is local (the peers learn through their own timeouts). all_reduce gathers the inputs and
 * adds them in rank order on every rank, so results are bit-identical to the local
 * communicator's. MPI is initialised (MPI_THREAD_SERIALIZED) by the first call if needed;
 * dsv_comm_mpi_finalize() ends it once every MPI communicator is freed. */
int dsv_comm_mpi_new(int timeout_ms, struct dsv_comm **ret);
/* Another communicator over the same processes as c (an mpi one), collective: every rank
 * calls it, in the same order as its other collectives. */
int dsv_comm_mpi_dup(struct dsv_comm *c, int timeout_ms, struct dsv_comm **ret);
/* A group of processes not started by mpirun (several hosts, dsv32d --nodes N). Open MPI
 * singletons find each other through an ompi-server: every process must have its URI in
 * OMPI_MCA_pmix_server_uri (the string, or file:PATH) before its first MPI call. Node 0
 * opens one port per other node (dsv_comm_mpi_open_ports: their names, one a line, at most
 * cap bytes in all), handed to the others out of band (the bootstrap's WELCOME); then every
 * node calls dsv_comm_mpi_join with that list: node k connects to port k (line k), the group
 * admits nodes 1, 2, ... in turn (every member already in takes part), and the result's ranks
 * are the node ranks. The join itself has no timeout (MPI has none): every node must call
 * it, or the others wait; timeout_ms is the communicator's. -EIO/-ECONNREFUSED when MPI
 * fails (no ompi-server, a wrong port), -EINVAL for a list without nodes - 1 ports. */
int dsv_comm_mpi_open_ports(int nodes, char *ports, size_t cap);
int dsv_comm_mpi_join(const char *ports, int nodes, int node_rank, int timeout_ms, struct dsv_comm **ret);
void dsv_comm_mpi_finalize(void);
