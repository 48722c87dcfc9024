/* What every communicator shares (kernels/comm.h): the argument checks in front of the
 * vtable, the sticky-error short cut, the error text, the all-to-all built on grouped
 * send/recv, and the host reduction the local and MPI implementations use, so both add
 * in the same order and round the same way. */
#include "config.h"

#include "kernels/comm.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/numerics.h"

/* Transfers in one grouped call: all-to-all needs 2 * size; more is a caller bug. */
#define MAX_XFERS (1 << 16)

const char *dsv_reduce_name(enum dsv_reduce op) {
        static const char *const n[DSV_REDUCE_MAX] = {"sum", "max"};
        return op < DSV_REDUCE_MAX ? n[op] : "?";
}

bool dsv_comm_dtype_ok(enum dsv_dtype t) { return t == DSV_F32 || t == DSV_BF16 || t == DSV_I32 || t == DSV_U8; }

int dsv_comm_fail(struct dsv_comm *c, int err, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->error, sizeof(c->error), fmt, ap);
        va_end(ap);
        return err;
}

const char *dsv_comm_last_error(const struct dsv_comm *c) { return c ? c->error : "no communicator"; }

void dsv_comm_free(struct dsv_comm *c) {
        if (c && c->ops)
                c->ops->free(c);
}

void dsv_comm_abort(struct dsv_comm *c) {
        if (c)
                c->ops->abort(c);
}

int dsv_comm_status(struct dsv_comm *c) { return c ? c->ops->status(c) : -EINVAL; }

/* Common checks of a call: a usable communicator, a known dtype and op, buffers present
 * when there is something to move, and sizes that fit in size_t. */
static int check_call(struct dsv_comm *c, const char *what, const void *send, const void *recv, size_t count,
                      size_t parts, enum dsv_dtype t, int op) {
        size_t bytes;
        if (!c || !c->ops)
                return -EINVAL;
        c->calls++;
        if (!dsv_comm_dtype_ok(t))
                return dsv_comm_fail(c, -EINVAL, "%s: dtype %s is not supported (F32, BF16, I32, U8)", what, dsv_dtype_name(t));
        if (op >= DSV_REDUCE_MAX || op < 0)
                return dsv_comm_fail(c, -EINVAL, "%s: unknown reduction %d", what, op);
        if (__builtin_mul_overflow(count, parts, &bytes) || __builtin_mul_overflow(bytes, dsv_dtype_size(t), &bytes))
                return dsv_comm_fail(c, -EINVAL, "%s: %zu x %zu elements overflow", what, count, parts);
        if (count > 0 && (!send || !recv))
                return dsv_comm_fail(c, -EINVAL, "%s: NULL buffer for %zu elements", what, count);
        /* a broken communicator: the implementation returns its sticky error with its reason */
        return 0;
}

int dsv_comm_all_reduce(struct dsv_comm *c, const void *send, void *recv, size_t count, enum dsv_dtype t,
                        enum dsv_reduce op) {
        int r = check_call(c, "all_reduce", send, recv, count, 1, t, op);
        return r < 0 ? r : c->ops->all_reduce(c, send, recv, count, t, op);
}

int dsv_comm_all_gather(struct dsv_comm *c, const void *send, void *recv, size_t count, enum dsv_dtype t) {
        int r = check_call(c, "all_gather", send, recv, count, c ? (size_t)c->size : 1, t, DSV_REDUCE_SUM);
        return r < 0 ? r : c->ops->all_gather(c, send, recv, count, t);
}

int dsv_comm_reduce_scatter(struct dsv_comm *c, const void *send, void *recv, size_t count, enum dsv_dtype t,
                            enum dsv_reduce op) {
        int r = check_call(c, "reduce_scatter", send, recv, count, c ? (size_t)c->size : 1, t, op);
        return r < 0 ? r : c->ops->reduce_scatter(c, send, recv, count, t, op);
}

static int check_xfers(struct dsv_comm *c, const char *what, const struct dsv_comm_xfer *x, int n, enum dsv_dtype t) {
        size_t bytes;
        if (n < 0 || n > MAX_XFERS || (n > 0 && !x))
                return dsv_comm_fail(c, -EINVAL, "send_recv: %d %s (0..%d)", n, what, MAX_XFERS);
        for (int i = 0; i < n; i++) {
                if (x[i].peer < 0 || x[i].peer >= c->size)
                        return dsv_comm_fail(c, -EINVAL, "send_recv: %s %d names rank %d of a group of %d", what, i, x[i].peer,
                                             c->size);
                if (__builtin_mul_overflow(x[i].count, dsv_dtype_size(t), &bytes))
                        return dsv_comm_fail(c, -EINVAL, "send_recv: %s %d: %zu elements overflow", what, i, x[i].count);
                if (x[i].count > 0 && !x[i].buf)
                        return dsv_comm_fail(c, -EINVAL, "send_recv: %s %d: NULL buffer for %zu elements", what, i,
                                             x[i].count);
        }
        return 0;
}

int dsv_comm_send_recv(struct dsv_comm *c, const struct dsv_comm_xfer *sends, int n_sends, const struct dsv_comm_xfer *recvs,
                       int n_recvs, enum dsv_dtype t) {
        int r = check_call(c, "send_recv", NULL, NULL, 0, 1, t, DSV_REDUCE_SUM);
        if (r < 0)
                return r;
        if ((r = check_xfers(c, "sends", sends, n_sends, t)) < 0 || (r = check_xfers(c, "receives", recvs, n_recvs, t)) < 0)
                return r;
        return c->ops->send_recv(c, sends, n_sends, recvs, n_recvs, t);
}

int dsv_comm_barrier(struct dsv_comm *c) {
        int r = check_call(c, "barrier", NULL, NULL, 0, 1, DSV_U8, DSV_REDUCE_SUM);
        return r < 0 ? r : c->ops->barrier(c);
}

int dsv_comm_all_to_allv(struct dsv_comm *c, const void *send, const size_t *send_counts, const size_t *send_offsets,
                         void *recv, const size_t *recv_counts, const size_t *recv_offsets, enum dsv_dtype t) {
        struct dsv_comm_xfer *x;
        int ns = 0, nr = 0, r;
        const size_t esz = dsv_dtype_size(t);
        if (!c || !send_counts || !send_offsets || !recv_counts || !recv_offsets)
                return -EINVAL;
        if (!esz)
                return dsv_comm_fail(c, -EINVAL, "all_to_allv: unknown dtype %d", (int)t);
        x = calloc(2 * (size_t)c->size, sizeof(*x));
        if (!x)
                return -ENOMEM;
        for (int p = 0; p < c->size; p++) {
                if (send_counts[p])
                        x[ns++] = (struct dsv_comm_xfer){p, send ? (char *)send + send_offsets[p] * esz : NULL, send_counts[p]};
                if (recv_counts[p])
                        x[c->size + nr++] = (struct dsv_comm_xfer){p, recv ? (char *)recv + recv_offsets[p] * esz : NULL,
                                                                  recv_counts[p]};
        }
        r = dsv_comm_send_recv(c, x, ns, x + c->size, nr, t);
        free(x);
        return r;
}

/* ------------------------------------------------------------------ host reduction */
#define ROWS_LOOP(T, ACC_T, LOAD, STORE, COMBINE)                                   \
        do {                                                                        \
                T *o_ = out;                                                        \
                for (size_t i = 0; i < n; i++) {                                    \
                        ACC_T a_ = LOAD(((const T *)srcs[0])[i]);                   \
                        for (int j = 1; j < n_srcs; j++) {                          \
                                ACC_T b_ = LOAD(((const T *)srcs[j])[i]);           \
                                a_ = COMBINE(a_, b_);                               \
                        }                                                           \
                        o_[i] = STORE(a_);                                          \
                }                                                                   \
        } while (0)

#define ID(x) (x)
#define ADD(a, b) ((a) + (b))
#define LARGER(a, b) ((b) > (a) ? (b) : (a))
#define BF16_IN(h) dsv_bf16_to_f32(h)
#define BF16_OUT(f) dsv_f32_to_bf16(f)
#define U8_OUT(x) ((uint8_t)(x))

void dsv_comm_reduce_rows(void *out, const void *const *srcs, int n_srcs, size_t n, enum dsv_dtype t, enum dsv_reduce op) {
        if (n_srcs <= 0 || n == 0)
                return;
        const bool sum = op == DSV_REDUCE_SUM;
        switch (t) {
        case DSV_F32:
                if (sum)
                        ROWS_LOOP(float, float, ID, ID, ADD);
                else
                        ROWS_LOOP(float, float, ID, ID, LARGER);
                break;
        case DSV_BF16:
                /* fp32 accumulator, rounded once: the rank-order sum of the exact values */
                if (sum)
                        ROWS_LOOP(uint16_t, float, BF16_IN, BF16_OUT, ADD);
                else
                        ROWS_LOOP(uint16_t, float, BF16_IN, BF16_OUT, LARGER);
                break;
        case DSV_I32:
                /* two's complement wrap-around: add as unsigned, compare as signed */
                if (sum)
                        ROWS_LOOP(uint32_t, uint32_t, ID, ID, ADD);
                else
                        ROWS_LOOP(int32_t, int32_t, ID, ID, LARGER);
                break;
        case DSV_U8:
                if (sum)
                        ROWS_LOOP(uint8_t, unsigned, ID, U8_OUT, ADD);
                else
                        ROWS_LOOP(uint8_t, unsigned, ID, U8_OUT, LARGER);
                break;
        default:
                break;
        }
}
