/* The communicator conformance suite: every collective's semantics on one rank (see
 * conformance.h). Sizes 0, 1, odd, not a multiple of the group, and large; every dtype
 * (F32, BF16, I32, U8) and reduction; out of place and in place; all-to-all with variable
 * and zero counts, several transfers to one peer and sends to self; barrier ordering;
 * determinism (the same bits on every rank and in every run); bad arguments; a rank that
 * does not show up (timeout), abort from another thread, and ranks that disagree. */
#include "config.h"

#include "tests/comm/conformance.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon/util.h"
#include "kernels/numerics.h"

#define FAIL(R, ...)                                                              \
        do {                                                                      \
                (R)->failures++;                                                  \
                report((R), __LINE__, __VA_ARGS__);                               \
        } while (0)
#define CCHECK(R, cond, ...)                 \
        do {                                 \
                (R)->checks++;               \
                if (!(cond))                 \
                        FAIL(R, __VA_ARGS__); \
        } while (0)

static void report(struct conf_rank *R, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void report(struct conf_rank *R, int line, const char *fmt, ...) {
        char msg[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        fprintf(stderr, "conformance.c:%d: FAIL [%s]: %s\n", line, R->tag, msg);
}

static double now_ms(void) { return (double)dsv_now_ns() / 1e6; }

static void sleep_ms(int ms) {
        struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

/* ------------------------------------------------------------------ backend buffers */
struct buf {
        void *dev;
        size_t bytes;
};

static int buf_new(struct conf_rank *R, size_t bytes, struct buf *b) {
        b->bytes = bytes;
        b->dev = NULL;
        return R->be->ops->alloc(R->be, bytes ? bytes : 16, &b->dev);
}
static void buf_free(struct conf_rank *R, struct buf *b) {
        if (b->dev)
                R->be->ops->dealloc(R->be, b->dev, b->bytes ? b->bytes : 16);
        b->dev = NULL;
}
static int put(struct conf_rank *R, struct buf *b, const void *host, size_t off, size_t n) {
        return n ? R->be->ops->upload(R->be, (char *)b->dev + off, host, n) : 0;
}
static int get(struct conf_rank *R, void *host, const struct buf *b, size_t off, size_t n) {
        return n ? R->be->ops->download(R->be, host, (const char *)b->dev + off, n) : 0;
}

/* ------------------------------------------------------------------ patterns
 * Reduction inputs: sums exact in every dtype (so any summation order gives the same
 * result), with wrap-around for the integers:
 *   F32  (r+1)/4 + (i mod 13) - 6        BF16 (r+1) + (i mod 5) - 2   (small integers)
 *   I32  (r+1)*0x9E3779B1 + i*2654435761 (mod 2^32, read as signed)
 *   U8   37r + 11i + 200 (mod 256)
 * Copy inputs (gather, all-to-all): bits from a hash of (rank, index, salt), floats kept
 * finite so that no transport may canonicalise them. */
static void red_value(enum dsv_dtype t, int r, size_t i, void *out) {
        switch (t) {
        case DSV_F32: {
                float f = (float)(r + 1) * 0.25f + (float)(i % 13) - 6.0f;
                memcpy(out, &f, 4);
                break;
        }
        case DSV_BF16: {
                uint16_t h = dsv_f32_to_bf16((float)(r + 1) + (float)(i % 5) - 2.0f);
                memcpy(out, &h, 2);
                break;
        }
        case DSV_I32: {
                uint32_t u = (uint32_t)(r + 1) * 0x9E3779B1u + (uint32_t)i * 2654435761u;
                memcpy(out, &u, 4);
                break;
        }
        case DSV_U8:
                *(uint8_t *)out = (uint8_t)(37u * (unsigned)r + 11u * (unsigned)i + 200u);
                break;
        default:
                break;
        }
}

/* The expected reduction of element i over ranks 0..n-1, written plainly. */
static void red_expect(enum dsv_dtype t, enum dsv_reduce op, int n, size_t i, void *out) {
        const bool sum = op == DSV_REDUCE_SUM;
        switch (t) {
        case DSV_F32: {
                double a = 0;
                for (int r = 0; r < n; r++) {
                        double v = (double)(r + 1) * 0.25 + (double)(i % 13) - 6.0;
                        a = sum ? a + v : (r == 0 || v > a ? v : a);
                }
                float f = (float)a;
                memcpy(out, &f, 4);
                break;
        }
        case DSV_BF16: {
                double a = 0;
                for (int r = 0; r < n; r++) {
                        double v = (double)(r + 1) + (double)(i % 5) - 2.0;
                        a = sum ? a + v : (r == 0 || v > a ? v : a);
                }
                uint16_t h = dsv_f32_to_bf16((float)a);
                memcpy(out, &h, 2);
                break;
        }
        case DSV_I32: {
                uint32_t a = 0;
                int32_t m = 0;
                for (int r = 0; r < n; r++) {
                        uint32_t u = (uint32_t)(r + 1) * 0x9E3779B1u + (uint32_t)i * 2654435761u;
                        int32_t s;
                        memcpy(&s, &u, 4);
                        a += u;
                        m = r == 0 || s > m ? s : m;
                }
                if (sum)
                        memcpy(out, &a, 4);
                else
                        memcpy(out, &m, 4);
                break;
        }
        case DSV_U8: {
                unsigned a = 0, m = 0;
                for (int r = 0; r < n; r++) {
                        unsigned v = (37u * (unsigned)r + 11u * (unsigned)i + 200u) & 255u;
                        a += v;
                        m = r == 0 || v > m ? v : m;
                }
                *(uint8_t *)out = (uint8_t)(sum ? a : m);
                break;
        }
        default:
                break;
        }
}

static void copy_value(enum dsv_dtype t, int r, size_t i, uint64_t salt, void *out) {
        uint64_t h = dsv_mix64(((uint64_t)(unsigned)r << 40) ^ (uint64_t)i ^ (salt << 52));
        uint32_t u32 = (uint32_t)h;
        uint16_t u16 = (uint16_t)h;
        switch (t) {
        case DSV_F32:
                u32 = (u32 & 0x807fffffu) | 0x3f800000u; /* +-[1, 2) */
                memcpy(out, &u32, 4);
                break;
        case DSV_BF16:
                u16 = (uint16_t)((u16 & 0x807fu) | 0x3f80u);
                memcpy(out, &u16, 2);
                break;
        case DSV_I32:
                memcpy(out, &u32, 4);
                break;
        default:
                *(uint8_t *)out = (uint8_t)h;
                break;
        }
}

/* Compares n elements; reports the first difference. */
static void expect_elems(struct conf_rank *R, const char *what, enum dsv_dtype t, const void *got, const void *want, size_t n) {
        const size_t esz = dsv_dtype_size(t);
        R->checks++;
        for (size_t i = 0; i < n; i++)
                if (memcmp((const char *)got + i * esz, (const char *)want + i * esz, esz) != 0) {
                        uint64_t g = 0, w = 0;
                        memcpy(&g, (const char *)got + i * esz, esz);
                        memcpy(&w, (const char *)want + i * esz, esz);
                        FAIL(R, "%s: element %zu of %zu is 0x%llx, expected 0x%llx", what, i, n, (unsigned long long)g,
                             (unsigned long long)w);
                        return;
                }
}

static void expect_rc(struct conf_rank *R, const char *what, int got, int want, struct dsv_comm *c) {
        CCHECK(R, got == want, "%s returned %d (%s), expected %d (%s); last error: %s", what, got, strerror(-got), want,
               strerror(-want), dsv_comm_last_error(c));
}

/* ------------------------------------------------------------------ reductions */
static void test_reduce(struct conf_rank *R, enum dsv_dtype t, size_t count, enum dsv_reduce op) {
        struct dsv_comm *c = R->comm[CONF_MAIN];
        const int n = c->size, me = c->rank;
        const size_t esz = dsv_dtype_size(t), all = count * (size_t)n;
        char what[128];
        _cleanup_free_ char *in = malloc(all * esz + 1), *want = malloc(all * esz + 1), *got = malloc(all * esz + 1);
        struct buf a = {0}, b = {0};

        if (!in || !want || !got || buf_new(R, all * esz, &a) < 0 || buf_new(R, all * esz, &b) < 0) {
                FAIL(R, "out of memory for %zu elements", all);
                goto out;
        }
        /* all_reduce: count elements; reduce_scatter: n blocks of count */
        for (size_t i = 0; i < all; i++)
                red_value(t, me, i, in + i * esz);

        for (int inplace = 0; inplace < 2; inplace++) {
                snprintf(what, sizeof(what), "all_reduce(%s, %s, count %zu%s)", dsv_dtype_name(t), dsv_reduce_name(op), count,
                         inplace ? ", in place" : "");
                for (size_t i = 0; i < count; i++)
                        red_expect(t, op, n, i, want + i * esz);
                put(R, &a, in, 0, count * esz);
                if (!inplace) {
                        /* the output starts as garbage; the input must come back unchanged */
                        memset(got, 0x5a, count * esz);
                        put(R, &b, got, 0, count * esz);
                }
                int rc = dsv_comm_all_reduce(c, a.dev, inplace ? a.dev : b.dev, count, t, op);
                expect_rc(R, what, rc, 0, c);
                get(R, got, inplace ? &a : &b, 0, count * esz);
                expect_elems(R, what, t, got, want, count);
                if (!inplace) {
                        get(R, got, &a, 0, count * esz);
                        expect_elems(R, "all_reduce input left as it was", t, got, in, count);
                }

                snprintf(what, sizeof(what), "reduce_scatter(%s, %s, count %zu%s)", dsv_dtype_name(t), dsv_reduce_name(op),
                         count, inplace ? ", in place" : "");
                for (size_t i = 0; i < count; i++)
                        red_expect(t, op, n, (size_t)me * count + i, want + i * esz);
                put(R, &a, in, 0, all * esz);
                char *recv = inplace ? (char *)a.dev + (size_t)me * count * esz : (char *)b.dev;
                rc = dsv_comm_reduce_scatter(c, a.dev, recv, count, t, op);
                expect_rc(R, what, rc, 0, c);
                get(R, got, inplace ? &a : &b, inplace ? (size_t)me * count * esz : 0, count * esz);
                expect_elems(R, what, t, got, want, count);
                if (inplace && n > 1) {
                        /* the other blocks of the input are not the output: left alone */
                        get(R, got, &a, 0, all * esz);
                        for (int q = 0; q < n; q++)
                                if (q != me)
                                        expect_elems(R, "reduce_scatter in place: other blocks untouched", t,
                                                     got + (size_t)q * count * esz, in + (size_t)q * count * esz, count);
                }
        }
out:
        buf_free(R, &a);
        buf_free(R, &b);
}

/* ------------------------------------------------------------------ all_gather */
static void test_gather(struct conf_rank *R, enum dsv_dtype t, size_t count) {
        struct dsv_comm *c = R->comm[CONF_MAIN];
        const int n = c->size, me = c->rank;
        const size_t esz = dsv_dtype_size(t), all = count * (size_t)n;
        char what[128];
        _cleanup_free_ char *in = malloc(count * esz + 1), *want = malloc(all * esz + 1), *got = malloc(all * esz + 1);
        struct buf a = {0}, b = {0};

        if (!in || !want || !got || buf_new(R, count * esz, &a) < 0 || buf_new(R, all * esz, &b) < 0) {
                FAIL(R, "out of memory for %zu elements", all);
                goto out;
        }
        for (size_t i = 0; i < count; i++)
                copy_value(t, me, i, 1, in + i * esz);
        for (int q = 0; q < n; q++)
                for (size_t i = 0; i < count; i++)
                        copy_value(t, q, i, 1, want + ((size_t)q * count + i) * esz);
        for (int inplace = 0; inplace < 2; inplace++) {
                snprintf(what, sizeof(what), "all_gather(%s, count %zu%s)", dsv_dtype_name(t), count, inplace ? ", in place" : "");
                memset(got, 0x5a, all * esz);
                put(R, &b, got, 0, all * esz);
                int rc;
                if (inplace) {
                        put(R, &b, in, (size_t)me * count * esz, count * esz);
                        rc = dsv_comm_all_gather(c, (char *)b.dev + (size_t)me * count * esz, b.dev, count, t);
                } else {
                        put(R, &a, in, 0, count * esz);
                        rc = dsv_comm_all_gather(c, a.dev, b.dev, count, t);
                }
                expect_rc(R, what, rc, 0, c);
                get(R, got, &b, 0, all * esz);
                expect_elems(R, what, t, got, want, all);
        }
out:
        buf_free(R, &a);
        buf_free(R, &b);
}

/* ------------------------------------------------------------------ all-to-all */
/* Elements rank a sends to rank b in round `salt`: 0..9, zero for some pairs. */
static size_t a2a_count(int a, int b, int salt) { return (size_t)((a * 7 + b * 3 + salt * 5) % 11) % 10; }

static void test_all_to_all(struct conf_rank *R, enum dsv_dtype t, int salt) {
        struct dsv_comm *c = R->comm[CONF_MAIN];
        const int n = c->size, me = c->rank;
        const size_t esz = dsv_dtype_size(t);
        _cleanup_free_ size_t *counts = calloc(4 * (size_t)n, sizeof(size_t));
        size_t *sc = counts, *so = counts + n, *rc_ = counts + 2 * n, *ro = counts + 3 * n, ns = 0, nr = 0;
        char what[96];
        _cleanup_free_ char *in = NULL, *want = NULL, *got = NULL;
        struct buf a = {0}, b = {0};

        if (!counts) {
                FAIL(R, "out of memory");
                return;
        }
        for (int p = 0; p < n; p++) {
                so[p] = ns;
                sc[p] = a2a_count(me, p, salt);
                ns += sc[p];
                ro[p] = nr;
                rc_[p] = a2a_count(p, me, salt);
                nr += rc_[p];
        }
        in = malloc(ns * esz + 1);
        want = malloc(nr * esz + 1);
        got = malloc(nr * esz + 1);
        if (!in || !want || !got || buf_new(R, ns * esz, &a) < 0 || buf_new(R, nr * esz, &b) < 0) {
                FAIL(R, "out of memory");
                goto out;
        }
        /* element j of the block a sends to b encodes (a, b, j) */
        for (int p = 0; p < n; p++)
                for (size_t j = 0; j < sc[p]; j++)
                        copy_value(t, me, (size_t)p * 1000 + j, (uint64_t)salt, in + (so[p] + j) * esz);
        for (int p = 0; p < n; p++)
                for (size_t j = 0; j < rc_[p]; j++)
                        copy_value(t, p, (size_t)me * 1000 + j, (uint64_t)salt, want + (ro[p] + j) * esz);
        put(R, &a, in, 0, ns * esz);
        memset(got, 0x5a, nr * esz);
        put(R, &b, got, 0, nr * esz);
        snprintf(what, sizeof(what), "all_to_allv(%s, round %d: %zu sent, %zu received)", dsv_dtype_name(t), salt, ns, nr);
        int rc = dsv_comm_all_to_allv(c, a.dev, sc, so, b.dev, rc_, ro, t);
        expect_rc(R, what, rc, 0, c);
        get(R, got, &b, 0, nr * esz);
        expect_elems(R, what, t, got, want, nr);
out:
        buf_free(R, &a);
        buf_free(R, &b);
}

/* Two transfers to the next rank (matched in posting order), one to self, none otherwise. */
static void test_send_recv_order(struct conf_rank *R) {
        struct dsv_comm *c = R->comm[CONF_MAIN];
        const int n = c->size, me = c->rank, next = (me + 1) % n, prev = (me + n - 1) % n;
        const size_t k1 = 5, k2 = 3, k3 = 4;
        int32_t in[12], got[12], want[12];
        struct buf a = {0}, b = {0};

        for (size_t i = 0; i < 12; i++)
                in[i] = me * 100 + (int32_t)i;
        if (buf_new(R, sizeof(in), &a) < 0 || buf_new(R, sizeof(got), &b) < 0) {
                FAIL(R, "out of memory");
                goto out;
        }
        put(R, &a, in, 0, sizeof(in));
        memset(got, 0x5a, sizeof(got));
        put(R, &b, got, 0, sizeof(got));
        int32_t *ad = a.dev, *bd = b.dev;
        const struct dsv_comm_xfer sends[3] = {{next, ad, k1}, {next, ad + k1, k2}, {me, ad + 8, k3}};
        /* receives from different peers interleave; alone, every transfer is to self, in order */
        const struct dsv_comm_xfer recvs_n[3] = {{prev, bd + 4, k1}, {me, bd, k3}, {prev, bd + 9, k2}};
        const struct dsv_comm_xfer recvs_1[3] = {{me, bd + 4, k1}, {me, bd + 9, k2}, {me, bd, k3}};
        const struct dsv_comm_xfer *recvs = n > 1 ? recvs_n : recvs_1;
        int rc = dsv_comm_send_recv(c, sends, 3, recvs, 3, DSV_I32);
        expect_rc(R, "send_recv (two to the next rank, one to self)", rc, 0, c);
        get(R, got, &b, 0, sizeof(got));
        for (size_t i = 0; i < k3; i++)
                want[i] = me * 100 + 8 + (int32_t)i; /* from self */
        for (size_t i = 0; i < k1; i++)
                want[4 + i] = prev * 100 + (int32_t)i; /* first transfer from prev */
        for (size_t i = 0; i < k2; i++)
                want[9 + i] = prev * 100 + (int32_t)(k1 + i); /* second */
        expect_elems(R, "send_recv matched in posting order", DSV_I32, got, want, 12);
        /* an empty group is a no-op that still completes */
        expect_rc(R, "send_recv with no transfers", dsv_comm_send_recv(c, NULL, 0, NULL, 0, DSV_F32), 0, c);
out:
        buf_free(R, &a);
        buf_free(R, &b);
}

/* ------------------------------------------------------------------ determinism */
/* Random floats (sums not exact): every rank gets the same bits, twice in a row, and for
 * rank-order implementations exactly ((x0 + x1) + x2) + ... in fp32. */
static void test_determinism(struct conf_rank *R, size_t count) {
        struct dsv_comm *c = R->comm[CONF_MAIN];
        const int n = c->size, me = c->rank;
        _cleanup_free_ float *in = malloc(count * 4), *got = malloc(count * 4), *got2 = malloc(count * 4),
                             *want = malloc(count * 4);
        _cleanup_free_ uint64_t *hashes = calloc((size_t)n, 8);
        struct buf a = {0}, h = {0};
        uint64_t mine = 1469598103934665603ull;

        if (!in || !got || !got2 || !want || !hashes || buf_new(R, count * 4, &a) < 0 || buf_new(R, (size_t)n * 8, &h) < 0) {
                FAIL(R, "out of memory");
                goto out;
        }
        for (int pass = 0; pass < 2; pass++) {
                for (size_t i = 0; i < count; i++)
                        in[i] = (float)(dsv_rand_u01(0xd5e7 + (uint64_t)me, i) * 2.0 - 1.0) * 1e3f;
                put(R, &a, in, 0, count * 4);
                expect_rc(R, "all_reduce(random F32)", dsv_comm_all_reduce(c, a.dev, a.dev, count, DSV_F32, DSV_REDUCE_SUM), 0,
                          c);
                get(R, pass ? got2 : got, &a, 0, count * 4);
        }
        CCHECK(R, memcmp(got, got2, count * 4) == 0, "all_reduce of the same random floats gave other bits the second time");
        if (R->tr->rank_order) {
                for (size_t i = 0; i < count; i++) {
                        float acc = (float)(dsv_rand_u01(0xd5e7, i) * 2.0 - 1.0) * 1e3f;
                        for (int r = 1; r < n; r++)
                                acc += (float)(dsv_rand_u01(0xd5e7 + (uint64_t)r, i) * 2.0 - 1.0) * 1e3f;
                        want[i] = acc;
                }
                expect_elems(R, "all_reduce(random F32) == the rank-order fp32 sum", DSV_F32, got, want, count);
        }
        /* every rank holds the same bits: gather a hash of the result */
        for (size_t i = 0; i < count; i++) {
                uint32_t u;
                memcpy(&u, &got[i], 4);
                mine = (mine ^ u) * 1099511628211ull;
        }
        put(R, &h, &mine, (size_t)me * 8, 8);
        expect_rc(R, "all_gather(result hashes)",
                  dsv_comm_all_gather(c, (char *)h.dev + (size_t)me * 8, h.dev, 8, DSV_U8), 0, c);
        get(R, hashes, &h, 0, (size_t)n * 8);
        for (int q = 0; q < n; q++)
                CCHECK(R, hashes[q] == mine, "rank %d's all_reduce result differs from rank %d's", q, me);
out:
        buf_free(R, &a);
        buf_free(R, &h);
}

/* ------------------------------------------------------------------ barrier */
/* Ranks enter 15 ms apart; nobody may leave before the last one entered. */
static void test_barrier(struct conf_rank *R) {
        struct dsv_comm *c = R->comm[CONF_MAIN];
        const int n = c->size, me = c->rank;
        _cleanup_free_ uint64_t *times = calloc(2 * (size_t)n, 8);
        struct buf b = {0};
        uint64_t mine[2], last_in = 0;

        if (!times || buf_new(R, 16 * (size_t)n, &b) < 0) {
                FAIL(R, "out of memory");
                goto out;
        }
        sleep_ms(15 * me);
        mine[0] = dsv_now_ns();
        expect_rc(R, "barrier", dsv_comm_barrier(c), 0, c);
        mine[1] = dsv_now_ns();
        put(R, &b, mine, (size_t)me * 16, 16);
        expect_rc(R, "all_gather(barrier times)", dsv_comm_all_gather(c, (char *)b.dev + (size_t)me * 16, b.dev, 16, DSV_U8), 0,
                  c);
        get(R, times, &b, 0, 16 * (size_t)n);
        for (int q = 0; q < n; q++)
                last_in = MAX(last_in, times[2 * q]);
        for (int q = 0; q < n; q++)
                CCHECK(R, times[2 * q + 1] >= last_in, "rank %d left the barrier %.3f ms before the last rank entered", q,
                       (double)(last_in - times[2 * q + 1]) / 1e6);
out:
        buf_free(R, &b);
}

/* ------------------------------------------------------------------ bad arguments */
/* Every rank makes the same bad calls: each fails locally with -EINVAL and nothing is
 * communicated, so the communicator still works afterwards. */
static void test_bad_args(struct conf_rank *R) {
        struct dsv_comm *c = R->comm[CONF_MAIN];
        struct buf a = {0};
        if (buf_new(R, 64, &a) < 0) {
                FAIL(R, "out of memory");
                return;
        }
        const struct dsv_comm_xfer bad_peer = {c->size, a.dev, 1}, neg_peer = {-1, a.dev, 1}, null_buf = {0, NULL, 4};
        expect_rc(R, "all_reduce(F16)", dsv_comm_all_reduce(c, a.dev, a.dev, 4, DSV_F16, DSV_REDUCE_SUM), -EINVAL, c);
        expect_rc(R, "all_reduce(F8_E4M3)", dsv_comm_all_reduce(c, a.dev, a.dev, 4, DSV_F8_E4M3, DSV_REDUCE_SUM), -EINVAL, c);
        expect_rc(R, "all_reduce(op 7)", dsv_comm_all_reduce(c, a.dev, a.dev, 4, DSV_F32, (enum dsv_reduce)7), -EINVAL, c);
        expect_rc(R, "all_reduce(NULL send)", dsv_comm_all_reduce(c, NULL, a.dev, 4, DSV_F32, DSV_REDUCE_SUM), -EINVAL, c);
        expect_rc(R, "all_gather(NULL recv)", dsv_comm_all_gather(c, a.dev, NULL, 4, DSV_F32), -EINVAL, c);
        expect_rc(R, "reduce_scatter(SIZE_MAX elements)",
                  dsv_comm_reduce_scatter(c, a.dev, a.dev, SIZE_MAX / 2, DSV_F32, DSV_REDUCE_SUM), -EINVAL, c);
        expect_rc(R, "send_recv(peer = size)", dsv_comm_send_recv(c, &bad_peer, 1, NULL, 0, DSV_F32), -EINVAL, c);
        expect_rc(R, "send_recv(peer -1)", dsv_comm_send_recv(c, NULL, 0, &neg_peer, 1, DSV_F32), -EINVAL, c);
        expect_rc(R, "send_recv(NULL buffer)", dsv_comm_send_recv(c, &null_buf, 1, NULL, 0, DSV_F32), -EINVAL, c);
        expect_rc(R, "send_recv(-1 sends)", dsv_comm_send_recv(c, &bad_peer, -1, NULL, 0, DSV_F32), -EINVAL, c);
        CCHECK(R, strstr(dsv_comm_last_error(c), "send_recv") != NULL, "the last error names the call: \"%s\"",
               dsv_comm_last_error(c));
        expect_rc(R, "status after bad arguments", dsv_comm_status(c), 0, c);
        buf_free(R, &a);
        /* still usable */
        test_gather(R, DSV_I32, 3);
}

/* ------------------------------------------------------------------ failures */
/* The last rank shows up 3 timeouts late. The others must fail within timeout + slack,
 * with -ETIMEDOUT (who noticed) or -ECONNABORTED (told by a peer), and stay failed. */
static void test_timeout(struct conf_rank *R) {
        struct dsv_comm *c = R->comm[CONF_TIMEOUT];
        const int T = c->timeout_ms, late = c->size - 1;
        float v[4] = {1, 2, 3, 4};
        struct buf a = {0};
        if (buf_new(R, sizeof(v), &a) < 0) {
                FAIL(R, "out of memory");
                return;
        }
        put(R, &a, v, 0, sizeof(v));
        if (c->rank == late) {
                sleep_ms(3 * T);
                double t0 = now_ms();
                int rc = dsv_comm_all_reduce(c, a.dev, a.dev, 4, DSV_F32, DSV_REDUCE_SUM);
                double dt = now_ms() - t0;
                if (R->tr->group_abort)
                        expect_rc(R, "all_reduce of the late rank, after its peers timed out", rc, -ECONNABORTED, c);
                /* elsewhere the peers' posted operation may still complete it; it must not hang */
                CCHECK(R, dt < T + R->tr->slack_ms, "the late rank's call took %.0f ms (timeout %d)", dt, T);
        } else {
                double t0 = now_ms();
                int rc = dsv_comm_all_reduce(c, a.dev, a.dev, 4, DSV_F32, DSV_REDUCE_SUM);
                double dt = now_ms() - t0;
                CCHECK(R, rc == -ETIMEDOUT || rc == -ECONNABORTED, "all_reduce with a missing rank returned %d (%s): %s", rc,
                       strerror(-rc), dsv_comm_last_error(c));
                CCHECK(R, dt >= 0.9 * T && dt < T + R->tr->slack_ms, "the timeout was reported after %.0f ms (timeout %d ms)",
                       dt, T);
                CCHECK(R, dsv_comm_last_error(c)[0] != 0, "a timed-out call leaves an error message");
                if (rc == -ETIMEDOUT && R->tr->group_abort) {
                        char want[32];
                        snprintf(want, sizeof(want), "rank(s) %d", late);
                        CCHECK(R, strstr(dsv_comm_last_error(c), want) != NULL, "the message names the missing rank: %s",
                               dsv_comm_last_error(c));
                }
                /* sticky: the next call fails at once, and status says so */
                t0 = now_ms();
                int rc2 = dsv_comm_barrier(c);
                dt = now_ms() - t0;
                CCHECK(R, rc2 == rc, "a call after the timeout returned %d, expected %d again", rc2, rc);
                CCHECK(R, dt < R->tr->slack_ms, "a call on a broken communicator took %.0f ms", dt);
                CCHECK(R, dsv_comm_status(c) == rc, "status %d after the timeout, expected %d", dsv_comm_status(c), rc);
        }
        buf_free(R, &a);
}

struct aborter {
        struct dsv_comm *c;
        int after_ms;
};

static void *abort_later(void *arg) {
        struct aborter *a = arg;
        sleep_ms(a->after_ms);
        dsv_comm_abort(a->c);
        return NULL;
}

/* Rank 0 waits in a barrier the others skip; another thread aborts rank 0's handle: the
 * barrier returns -ECANCELED long before the timeout, and so does every later call.
 * Group-wide implementations tell the other ranks (-ECONNABORTED). */
static void test_abort(struct conf_rank *R) {
        struct dsv_comm *c = R->comm[CONF_ABORT];
        const int after = 100;
        if (c->rank == 0) {
                struct aborter ab = {c, after};
                pthread_t th;
                double t0 = now_ms();
                if (pthread_create(&th, NULL, abort_later, &ab) != 0) {
                        FAIL(R, "cannot start the aborting thread");
                        return;
                }
                if (c->size == 1)
                        sleep_ms(2 * after); /* alone, a barrier never waits: abort first */
                int rc = dsv_comm_barrier(c);
                double dt = now_ms() - t0;
                pthread_join(th, NULL);
                expect_rc(R, "barrier aborted from another thread", rc, -ECANCELED, c);
                if (c->size > 1) {
                        CCHECK(R, dt >= 0.9 * after && dt < after + R->tr->slack_ms, "the abort took effect after %.0f ms", dt);
                        CCHECK(R, dt < c->timeout_ms / 2, "the abort was not faster than the timeout (%.0f ms)", dt);
                }
                expect_rc(R, "status after abort", dsv_comm_status(c), -ECANCELED, c);
                expect_rc(R, "barrier after abort", dsv_comm_barrier(c), -ECANCELED, c);
        } else {
                sleep_ms(3 * after);
                if (R->tr->group_abort) {
                        expect_rc(R, "status of a peer after rank 0 aborted", dsv_comm_status(c), -ECONNABORTED, c);
                        double t0 = now_ms();
                        expect_rc(R, "barrier of a peer after rank 0 aborted", dsv_comm_barrier(c), -ECONNABORTED, c);
                        CCHECK(R, now_ms() - t0 < R->tr->slack_ms, "a peer's call after the abort took %.0f ms",
                               now_ms() - t0);
                }
                /* otherwise the abort is local; the peers learn through their own timeout */
        }
}

/* Ranks that disagree: every rank gets -EPROTO, and the message names both calls. */
static void test_mismatch(struct conf_rank *R) {
        struct dsv_comm *c = R->comm[CONF_MISMATCH_A];
        const int n = c->size, me = c->rank;
        _cleanup_free_ float *v = calloc(8 * (size_t)n, 4);
        struct buf a = {0};
        if (!v || buf_new(R, 8 * (size_t)n * 4, &a) < 0) {
                FAIL(R, "out of memory");
                return;
        }
        int rc = me == 0 ? dsv_comm_all_reduce(c, a.dev, a.dev, 8, DSV_F32, DSV_REDUCE_SUM)
                         : dsv_comm_all_gather(c, a.dev, a.dev, 8, DSV_F32);
        expect_rc(R, "all_reduce on rank 0, all_gather elsewhere", rc, -EPROTO, c);
        CCHECK(R, strstr(dsv_comm_last_error(c), "all_reduce") && strstr(dsv_comm_last_error(c), "all_gather"),
               "the message names both calls: %s", dsv_comm_last_error(c));
        expect_rc(R, "barrier after a disagreement", dsv_comm_barrier(c), -EPROTO, c);

        c = R->comm[CONF_MISMATCH_B];
        /* rank r sends 4 elements to r+1, which expects 3 */
        float *d = a.dev;
        const struct dsv_comm_xfer s = {(me + 1) % n, d, 4}, rr = {(me + n - 1) % n, d + 4, 3};
        rc = dsv_comm_send_recv(c, &s, 1, &rr, 1, DSV_F32);
        expect_rc(R, "send_recv with a count mismatch", rc, -EPROTO, c);
        buf_free(R, &a);
}

/* ------------------------------------------------------------------ driver */
int conf_run(struct conf_rank *R) {
        static const enum dsv_dtype types[] = {DSV_F32, DSV_BF16, DSV_I32, DSV_U8};
        struct dsv_comm *c = R->comm[CONF_MAIN];
        const size_t sizes[] = {0, 1, 7, 1000 + (size_t)c->size, R->tr->large};

        CCHECK(R, c->rank >= 0 && c->rank < c->size, "rank %d of %d", c->rank, c->size);
        for (size_t ti = 0; ti < ARRAY_SIZE(types); ti++)
                for (size_t si = 0; si < ARRAY_SIZE(sizes); si++) {
                        /* the large size for F32 and U8 only: the others add nothing but time */
                        if (si == ARRAY_SIZE(sizes) - 1 && (types[ti] == DSV_BF16 || types[ti] == DSV_I32))
                                continue;
                        for (int op = 0; op < DSV_REDUCE_MAX; op++)
                                test_reduce(R, types[ti], sizes[si], (enum dsv_reduce)op);
                        test_gather(R, types[ti], sizes[si]);
                }
        for (int salt = 0; salt < 3; salt++)
                for (size_t ti = 0; ti < ARRAY_SIZE(types); ti++)
                        test_all_to_all(R, types[ti], salt);
        test_send_recv_order(R);
        test_determinism(R, 4099);
        test_barrier(R);
        test_bad_args(R);

        if (R->comm[CONF_TIMEOUT] && R->comm[CONF_TIMEOUT]->size > 1) {
                test_timeout(R);
                expect_rc(R, "barrier after the timeout test", dsv_comm_barrier(c), 0, c);
        }
        if (R->comm[CONF_ABORT]) {
                test_abort(R);
                expect_rc(R, "barrier after the abort test", dsv_comm_barrier(c), 0, c);
        }
        if (R->tr->detects_mismatch && R->comm[CONF_MISMATCH_A] && R->comm[CONF_MISMATCH_B] && c->size > 1) {
                test_mismatch(R);
                expect_rc(R, "barrier after the mismatch test", dsv_comm_barrier(c), 0, c);
        }
        return R->failures;
}
