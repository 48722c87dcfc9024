/* libdsv32: the client side of the dsv32d protocol (ipc/PROTOCOL.md) behind the public API
 * of dsv32.h. One connection = one Unix socket (handshake, doorbells, hangup) + one memfd
 * with the submission ring (we produce) and the completion ring (we consume). Records for
 * requests other than the one a synchronous call waits for are queued in private memory
 * and handed out later by dsv32_poll_events().
 *
 * The descriptor a program waits on (dsv32_fd) is an epoll set of two: the socket (the
 * daemon's doorbells and its hangup) and an eventfd of ours that is readable while records
 * wait in the private queue or the completion ring. Every public call ends in settle(),
 * which keeps that promise: with nothing to hand out it sets the completion ring's
 * consumer_waiting flag while requests are in flight, so the daemon rings the doorbell
 * for the next record (ipc/PROTOCOL.md section 4); with something to hand out it makes the
 * eventfd readable. */
#include "config.h"

#include "client/dsv32.h"

#include <assert.h>
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "client/abi_v0.h"

#include "ipc/proto.h"
#include "ipc/ring.h"

#define API __attribute__((visibility("default")))
#define DEFAULT_SPIN_NS 50000u
#define MIN_SPIN_NS 0u /* a peer that never answers during the spin gets none (probes aside) */
#define HANDSHAKE_BUF 4096
#define DEFAULT_MAX_TOKENS 256
/* The size struct dsv32_session_entry first shipped with (protocol 1.2, the field list up
 * to idle_ms). Frozen: a program built against that header passes it forever, so when the
 * struct grows the check below must keep accepting it (as abi_v0.h does for the others). */
#define SESSION_ENTRY_FIRST_SIZE (offsetof(struct dsv32_session_entry, idle_ms) + sizeof(uint64_t))

static_assert(DSV32_SESSION_PINNED == DSV_SESSION_PINNED && DSV32_SESSION_BUSY == DSV_SESSION_BUSY &&
                      DSV32_SESSION_CREATED == DSV_SESSION_CREATED && DSV32_SESSION_IS_PRIVATE == DSV_SESSION_PRIVATE_ROW,
              "session flags are passed through from the wire");
static_assert(DSV32_FEATURE_LOGPROBS == DSV_FEATURE_LOGPROBS && DSV32_MAX_TOP_LOGPROBS == DSV_MAX_TOP_LOGPROBS,
              "features and the top-logprobs cap are the wire's");

struct queued {
        struct queued *next;
        uint16_t type;
        uint32_t len;
        uint8_t *data;
};

struct held { /* an event's storage, kept until the next call */
        uint8_t *buf;
        struct dsv_msg msg;
        char *extra; /* a NUL-terminated copy the event points to, or NULL */
};

static __thread char connect_err[DSV_ERROR_MESSAGE_MAX + 128];

struct dsv32_client {
        int fd;
        int epfd;      /* dsv32_fd(): epoll over fd and efd */
        int efd;       /* eventfd: readable while something waits to be handed out */
        bool efd_set;
        uint64_t *inflight; /* ids of submitted requests whose DONE/ERROR was not handed out */
        size_t n_inflight, cap_inflight;
        struct dsv_shm shm;
        struct dsv32_info info;
        uint64_t next_id;
        enum dsv32_wait_mode mode;
        struct dsv_spin spin;
        struct dsv32_wait_stats ws;
        uint8_t *rx;
        size_t rxcap;
        struct dsv_wbuf wbuf;
        struct queued *q_head, *q_tail;
        int broken; /* negative errno once the connection is unusable */
        char err[DSV_ERROR_MESSAGE_MAX + 128];
        struct held *held;
        size_t n_held, cap_held;
};

static int set_err(struct dsv32_client *c, int e, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int set_err(struct dsv32_client *c, int e, const char *fmt, ...) {
        va_list ap;
        if (c) {
                va_start(ap, fmt);
                vsnprintf(c->err, sizeof(c->err), fmt, ap);
                va_end(ap);
        }
        return e;
}

static int broken(struct dsv32_client *c, int e, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int broken(struct dsv32_client *c, int e, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err, sizeof(c->err), fmt, ap);
        va_end(ap);
        c->broken = e;
        return e;
}

static void release_held(struct dsv32_client *c) {
        for (size_t i = 0; i < c->n_held; i++) {
                dsv_msg_release(&c->held[i].msg);
                free(c->held[i].buf);
                free(c->held[i].extra);
        }
        c->n_held = 0;
}

/* Copies a struct the library filled into the caller's, of the size the caller's header
 * gave it (older headers: a prefix; newer ones: the rest is zeroed). */
static void copy_out(void *dst, size_t dst_size, const void *src, size_t src_size) {
        size_t n = dst_size < src_size ? dst_size : src_size;
        memcpy(dst, src, n);
        if (dst_size > n)
                memset((uint8_t *)dst + n, 0, dst_size - n);
}

static int inflight_add(struct dsv32_client *c, uint64_t id) {
        if (c->n_inflight == c->cap_inflight) {
                size_t cap = c->cap_inflight ? 2 * c->cap_inflight : 16;
                uint64_t *v = realloc(c->inflight, cap * sizeof(*v));
                if (!v)
                        return set_err(c, -ENOMEM, "out of memory");
                c->inflight = v;
                c->cap_inflight = cap;
        }
        c->inflight[c->n_inflight++] = id;
        return 0;
}

static bool inflight_find(const struct dsv32_client *c, uint64_t id, size_t *at) {
        for (size_t i = 0; i < c->n_inflight; i++)
                if (c->inflight[i] == id) {
                        if (at)
                                *at = i;
                        return true;
                }
        return false;
}

static void inflight_remove(struct dsv32_client *c, uint64_t id) {
        size_t i;
        if (inflight_find(c, id, &i))
                c->inflight[i] = c->inflight[--c->n_inflight];
}

/* ------------------------------------------------------------------ socket */

/* Reads pending datagrams: doorbells, or the daemon's final ERROR before it closes. */
static int drain_socket(struct dsv32_client *c) {
        uint8_t buf[DSV_ERROR_MESSAGE_MAX + 64];
        size_t len = 0;
        int r = dsv_ipc_doorbell_drain(c->fd, buf, sizeof(buf), &len);
        if (len > sizeof(struct dsv_ipc_record)) {
                struct dsv_ipc_record h;
                struct dsv_msg m;
                memcpy(&h, buf, sizeof(h));
                if (h.type == DSV_MSG_ERROR && h.length <= len - sizeof(h) &&
                    dsv_msg_decode(DSV_MSG_ERROR, buf + sizeof(h), h.length, &m, NULL, 0) == 0) {
                        int code = m.u.error.code > 0 ? -m.u.error.code : -EPROTO;
                        broken(c, code, "dsv32d: %.*s", (int)m.u.error.message_len, m.u.error.message ? m.u.error.message : "");
                        dsv_msg_release(&m);
                        return code;
                }
        }
        if (r == -ECONNRESET)
                return broken(c, -ECONNRESET, "dsv32d closed the connection");
        if (r < 0)
                return broken(c, r, "connection to dsv32d failed: %s", strerror(-r));
        return 0;
}

static void ring_doorbell(struct dsv32_client *c) {
        dsv_ipc_doorbell(c->fd);
        c->ws.doorbells++;
}

static void efd_update(struct dsv32_client *c, bool ready) {
        uint64_t v = 1;
        if (ready == c->efd_set)
                return;
        if (ready) {
                if (write(c->efd, &v, sizeof(v)) == (ssize_t)sizeof(v))
                        c->efd_set = true;
        } else if (read(c->efd, &v, sizeof(v)) == (ssize_t)sizeof(v) || errno == EAGAIN) {
                c->efd_set = false;
        }
}

/* Before returning to the program: dsv32_fd() must become readable when there is (or
 * will be) something for dsv32_poll_events. Records already waiting make the eventfd
 * readable; otherwise, while requests are in flight, the consumer_waiting flag asks the
 * daemon to ring for the next record (a record that slipped in while we set it counts as
 * waiting). Without requests in flight nothing is armed, so synchronous calls (ping,
 * stats) cost the daemon no doorbell. The hangup and the daemon's final ERROR arrive on
 * the socket, which is in the set too. */
static void settle(struct dsv32_client *c) {
        struct dsv_ring *r = &c->shm.comp;
        bool ready;
        if (c->epfd < 0 || !r->ctl)
                return;
        ready = c->q_head != NULL || c->broken || !dsv_ring_empty(r);
        if (!ready && c->n_inflight) {
                if (dsv_ring_consumer_sleep_begin(r)) {
                        dsv_ring_consumer_sleep_end(r);
                        ready = true;
                }
        }
        efd_update(c, ready);
}

/* ------------------------------------------------------------------ waiting */

/* Waits until the completion ring has data (1), the timeout passed (0), or the connection
 * broke (< 0). Adaptive: spin first while that pays, then sleep on the socket. */
static int wait_completion(struct dsv32_client *c, int timeout_ms) {
        struct dsv_ring *r = &c->shm.comp;
        uint64_t t0 = dsv_ipc_now_ns(), budget;
        int rc;

        /* what the daemon wrote before it went away is still ours to read (a DONE "shutdown"
         * just before its exit, say): records first, the broken connection after them */
        if (!dsv_ring_empty(r))
                return 1;
        if (c->broken)
                return c->broken;
        c->ws.waits++;
        budget = c->mode == DSV32_WAIT_SLEEP ? 0 : dsv_spin_budget(&c->spin);
        if (c->mode == DSV32_WAIT_SPIN) {
                for (unsigned i = 1;; i++) {
                        if (!dsv_ring_empty(r)) {
                                c->ws.spins_won++;
                                return 1;
                        }
                        if ((i & 4095) == 0) {
                                uint64_t now = dsv_ipc_now_ns();
                                /* let a peer that shares our core run (an oversubscribed machine) */
                                sched_yield();
                                if ((rc = drain_socket(c)) < 0)
                                        return dsv_ring_empty(r) ? rc : 1;
                                if (timeout_ms >= 0 && now - t0 >= (uint64_t)timeout_ms * 1000000ull)
                                        return 0;
                        }
                        dsv_cpu_relax();
                }
        }
        if (budget) {
                for (unsigned i = 0;; i++) {
                        if (!dsv_ring_empty(r)) {
                                dsv_spin_update(&c->spin, true);
                                c->ws.spins_won++;
                                return 1;
                        }
                        if ((i & 63) == 63 && dsv_ipc_now_ns() - t0 >= budget)
                                break;
                        dsv_cpu_relax();
                }
                dsv_spin_update(&c->spin, false);
        }
        for (;;) {
                struct pollfd p = {.fd = c->fd, .events = POLLIN};
                int left = -1;
                if (dsv_ring_consumer_sleep_begin(r)) {
                        dsv_ring_consumer_sleep_end(r);
                        return 1;
                }
                if (timeout_ms >= 0) {
                        uint64_t el = (dsv_ipc_now_ns() - t0) / 1000000ull;
                        if (el >= (uint64_t)timeout_ms) {
                                dsv_ring_consumer_sleep_end(r);
                                return 0;
                        }
                        left = timeout_ms - (int)el;
                }
                c->ws.sleeps++;
                rc = poll(&p, 1, left);
                dsv_ring_consumer_sleep_end(r);
                if (rc < 0 && errno != EINTR)
                        return broken(c, -errno, "poll failed: %s", strerror(errno));
                if (rc > 0 && (rc = drain_socket(c)) < 0)
                        return dsv_ring_empty(r) ? rc : 1;
                if (!dsv_ring_empty(r))
                        return 1;
        }
}

/* ------------------------------------------------------------------ records */

/* Reads one completion record into c->rx. 1, 0 (empty), < 0 broken. */
static int ring_take(struct dsv32_client *c, struct dsv_ipc_record *h) {
        int r = dsv_ring_read(&c->shm.comp, h, c->rx, c->rxcap);
        if (r < 0)
                return broken(c, -EPROTO, "the completion ring is corrupt");
        if (r > 0 && dsv_ring_producer_needs_wake(&c->shm.comp))
                ring_doorbell(c);
        return r;
}

static int enqueue(struct dsv32_client *c, const struct dsv_ipc_record *h, const uint8_t *p) {
        struct queued *q = malloc(sizeof(*q));
        if (!q)
                return set_err(c, -ENOMEM, "out of memory");
        q->data = malloc(h->length ? h->length : 1);
        if (!q->data) {
                free(q);
                return set_err(c, -ENOMEM, "out of memory");
        }
        q->next = NULL;
        q->type = h->type;
        q->len = h->length;
        memcpy(q->data, p, h->length);
        if (c->q_tail)
                c->q_tail->next = q;
        else
                c->q_head = q;
        c->q_tail = q;
        return 0;
}

/* Moves every completion record into the private queue (while we wait for submission
 * space, the daemon must not be stuck on a full completion ring). */
static int drain_to_queue(struct dsv32_client *c) {
        struct dsv_ipc_record h;
        int r;
        while ((r = ring_take(c, &h)) > 0)
                if ((r = enqueue(c, &h, c->rx)) < 0)
                        return r;
        return r;
}

static int send_msg(struct dsv32_client *c, const struct dsv_msg *m) {
        struct dsv_ring *r = &c->shm.sub;
        int e;

        if (c->broken)
                return c->broken;
        c->wbuf.len = 0;
        c->wbuf.err = 0;
        e = dsv_msg_encode(m, &c->wbuf);
        if (e < 0)
                return set_err(c, e, "cannot encode the request: %s", strerror(-e));
        if (c->wbuf.len > r->max_record)
                return set_err(c, -EMSGSIZE,
                               "the request is %zu bytes; the submission ring carries at most %u per record (connect "
                               "with a larger submit_ring_bytes, up to the daemon's max-ring-kib)",
                               c->wbuf.len, r->max_record);
        for (;;) {
                e = dsv_ring_write(r, m->type, 0, c->wbuf.data, (uint32_t)c->wbuf.len);
                if (e == 0)
                        break;
                if (e != -EAGAIN)
                        return broken(c, -EPROTO, "the submission ring is corrupt");
                if ((e = drain_to_queue(c)) < 0)
                        return e;
                if (!dsv_ring_producer_sleep_begin(r, dsv_ring_record_bytes((uint32_t)c->wbuf.len))) {
                        struct pollfd p = {.fd = c->fd, .events = POLLIN};
                        c->ws.sleeps++;
                        if (poll(&p, 1, 100) > 0 && (e = drain_socket(c)) < 0) {
                                dsv_ring_producer_sleep_end(r);
                                return e;
                        }
                }
                dsv_ring_producer_sleep_end(r);
        }
        if (dsv_ring_consumer_needs_wake(r))
                ring_doorbell(c);
        return 0;
}

static uint64_t record_id(uint16_t type, const uint8_t *p, uint32_t len) {
        (void)type;
        return dsv_msg_peek_id(p, len);
}

/* Next record addressed to `id`: from the queue, else from the ring (others are queued).
 * On success *buf is a malloc'ed copy of the payload that m borrows from (the caller frees
 * it after dsv_msg_release). */
static int take_for(struct dsv32_client *c, uint64_t id, struct dsv_msg *m, uint8_t **buf) {
        struct dsv_ipc_record h;
        char why[256];
        int r;

        for (struct queued **pp = &c->q_head, *prev = NULL; *pp; prev = *pp, pp = &(*pp)->next) {
                struct queued *q = *pp;
                if (record_id(q->type, q->data, q->len) != id)
                        continue;
                *pp = q->next;
                if (c->q_tail == q)
                        c->q_tail = prev;
                r = dsv_msg_decode(q->type, q->data, q->len, m, why, sizeof(why));
                if (r < 0) {
                        free(q->data);
                        free(q);
                        return broken(c, -EPROTO, "bad record from dsv32d: %s", why);
                }
                *buf = q->data;
                free(q);
                return 0;
        }
        for (;;) {
                r = ring_take(c, &h);
                if (r < 0)
                        return r;
                if (r == 0) {
                        r = wait_completion(c, -1);
                        if (r < 0)
                                return r;
                        continue;
                }
                if (record_id(h.type, c->rx, h.length) != id) {
                        if ((r = enqueue(c, &h, c->rx)) < 0)
                                return r;
                        continue;
                }
                *buf = malloc(h.length ? h.length : 1);
                if (!*buf)
                        return set_err(c, -ENOMEM, "out of memory");
                memcpy(*buf, c->rx, h.length);
                r = dsv_msg_decode(h.type, *buf, h.length, m, why, sizeof(why));
                if (r < 0) {
                        free(*buf);
                        return broken(c, -EPROTO, "bad record from dsv32d: %s", why);
                }
                return 0;
        }
}

/* An ERROR for our request: its code as a negative errno, its text in c->err. */
static int error_of(struct dsv32_client *c, const struct dsv_msg *m) {
        int code = m->u.error.code > 0 ? -m->u.error.code : -EIO;
        set_err(c, code, "%.*s", (int)m->u.error.message_len, m->u.error.message ? m->u.error.message : "");
        return code;
}

/* Sends m (whose id is `id`) and waits for the reply of type want (or an ERROR). */
static int call_once(struct dsv32_client *c, const struct dsv_msg *m, uint64_t id, uint16_t want, struct dsv_msg *reply,
                     uint8_t **buf) {
        int r = send_msg(c, m);
        if (r < 0)
                return r;
        for (;;) {
                r = take_for(c, id, reply, buf);
                if (r < 0)
                        return r;
                if (reply->type == want)
                        return 0;
                if (reply->type == DSV_MSG_ERROR) {
                        r = error_of(c, reply);
                        dsv_msg_release(reply);
                        free(*buf);
                        return r;
                }
                /* anything else for this id is stale; skip it */
                dsv_msg_release(reply);
                free(*buf);
        }
}

/* A synchronous round trip; records of other requests met on the way wait in the private
 * queue, and settle() keeps dsv32_fd() readable for them. */
static int call(struct dsv32_client *c, const struct dsv_msg *m, uint64_t id, uint16_t want, struct dsv_msg *reply,
                uint8_t **buf) {
        int r = call_once(c, m, id, want, reply, buf);
        settle(c);
        return r;
}

/* ------------------------------------------------------------------ connect */

static int handshake(struct dsv32_client *c, const struct dsv32_connect_opts *o, const char *path) {
        struct dsv_msg m = {.type = DSV_MSG_HELLO};
        struct dsv_ipc_record h = {.type = DSV_MSG_HELLO};
        uint8_t out[512], in[HANDSHAKE_BUF];
        struct dsv_wbuf w;
        union {
                struct cmsghdr align;
                char buf[CMSG_SPACE(4 * sizeof(int))];
        } cm;
        struct iovec iov = {.iov_base = in, .iov_len = sizeof(in)};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.buf, .msg_controllen = sizeof(cm.buf)};
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        int fds[4], n_fds = 0, timeout = o && o->timeout_ms ? o->timeout_ms : 10000, r;
        char why[256];
        ssize_t n;

        m.u.hello.version_major = DSV_IPC_VERSION_MAJOR;
        m.u.hello.version_minor = DSV_IPC_VERSION_MINOR;
        snprintf(m.u.hello.name, sizeof(m.u.hello.name), "%s", o && o->client_name ? o->client_name : "libdsv32");
        m.u.hello.sub_bytes = o ? o->submit_ring_bytes : 0;
        m.u.hello.comp_bytes = o ? o->completion_ring_bytes : 0;
        dsv_wbuf_fixed(&w, out + sizeof(h), sizeof(out) - sizeof(h));
        if ((r = dsv_msg_encode(&m, &w)) < 0)
                return set_err(c, r, "cannot encode HELLO");
        h.length = (uint32_t)w.len;
        memcpy(out, &h, sizeof(h));
        /* a refusal may already be queued for us: read it even if this send fails */
        if (send(c->fd, out, sizeof(h) + w.len, MSG_NOSIGNAL) < 0 && errno != EPIPE && errno != ECONNRESET)
                return set_err(c, -errno, "cannot send HELLO to %s: %s", path, strerror(errno));
        r = poll(&p, 1, timeout < 0 ? -1 : timeout);
        if (r == 0)
                return set_err(c, -ETIMEDOUT, "dsv32d at %s did not answer within %d ms", path, timeout);
        if (r < 0)
                return set_err(c, -errno, "poll: %s", strerror(errno));
        n = recvmsg(c->fd, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
        if (n < 0 && errno == ECONNRESET) {
                /* the daemon refused us and closed before reading our HELLO: its ERROR
                 * datagram is still queued behind the reset */
                mh.msg_controllen = sizeof(cm.buf);
                n = recvmsg(c->fd, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
                if (n < 0)
                        errno = ECONNRESET;
        }
        if (n < 0)
                return set_err(c, -errno, "cannot read the answer of dsv32d at %s: %s", path, strerror(errno));
        for (struct cmsghdr *ch = CMSG_FIRSTHDR(&mh); ch; ch = CMSG_NXTHDR(&mh, ch))
                if (ch->cmsg_level == SOL_SOCKET && ch->cmsg_type == SCM_RIGHTS) {
                        size_t k = (ch->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                        for (size_t i = 0; i < k && n_fds < 4; i++)
                                memcpy(&fds[n_fds++], CMSG_DATA(ch) + i * sizeof(int), sizeof(int));
                }
        r = 0;
        if (n == 0) {
                r = set_err(c, -ECONNRESET, "dsv32d at %s closed the connection during the handshake", path);
        } else if ((size_t)n < sizeof(h) || (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
                r = set_err(c, -EPROTO, "dsv32d at %s sent a malformed handshake answer", path);
        } else {
                memcpy(&h, in, sizeof(h));
                /* a record, possibly padded to a multiple of 8 (ipc/PROTOCOL.md section 3) */
                if (h.length > (size_t)n - sizeof(h) ||
                    ((size_t)n != sizeof(h) + h.length && (uint64_t)n != dsv_ring_record_bytes(h.length))) {
                        r = set_err(c, -EPROTO, "dsv32d at %s sent a malformed handshake answer", path);
                } else if (h.type == DSV_MSG_ERROR) {
                        if (dsv_msg_decode(DSV_MSG_ERROR, in + sizeof(h), h.length, &m, why, sizeof(why)) == 0) {
                                r = error_of(c, &m);
                                dsv_msg_release(&m);
                        } else {
                                r = set_err(c, -EPROTO, "dsv32d at %s refused the connection", path);
                        }
                } else if (h.type != DSV_MSG_WELCOME ||
                           dsv_msg_decode(DSV_MSG_WELCOME, in + sizeof(h), h.length, &m, why, sizeof(why)) < 0) {
                        r = set_err(c, -EPROTO, "dsv32d at %s sent no WELCOME", path);
                } else {
                        struct dsv_msg_welcome *wl = &m.u.welcome;
                        struct dsv32_info *inf = &c->info;
                        if (n_fds != 1) {
                                r = set_err(c, -EPROTO, "dsv32d sent %d descriptors with WELCOME, expected 1", n_fds);
                        } else if ((r = dsv_shm_attach(fds[0], &c->shm)) < 0) {
                                set_err(c, r, "cannot map the shared memory of dsv32d: %s", strerror(-r));
                        } else if (c->shm.size != wl->shm_size) {
                                r = set_err(c, -EPROTO, "the shared memory has %zu bytes, WELCOME says %llu", c->shm.size,
                                            (unsigned long long)wl->shm_size);
                        }
                        snprintf(inf->daemon_version, sizeof(inf->daemon_version), "%s", wl->daemon_version);
                        inf->protocol_major = wl->version_major;
                        inf->protocol_minor = wl->version_minor;
                        inf->daemon_pid = wl->pid;
                        inf->state = (enum dsv32_state)wl->state;
                        snprintf(inf->model, sizeof(inf->model), "%s", wl->model);
                        inf->vocab_size = wl->vocab_size;
                        inf->bos_id = wl->bos_id;
                        inf->eos_id = wl->eos_id;
                        inf->max_context = wl->max_context;
                        inf->features = wl->features;
                        inf->max_tokens_limit = wl->max_tokens_limit;
                        inf->max_prompt_bytes = wl->max_prompt_bytes;
                        dsv_msg_release(&m);
                }
        }
        for (int i = 0; i < n_fds; i++)
                close(fds[i]);
        return r;
}

API int dsv32_connect(const struct dsv32_connect_opts *opts, dsv32_client **ret) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        const char *path;
        dsv32_client *c;
        int r;

        if (!ret || (opts && opts->struct_size < sizeof(size_t)))
                return -EINVAL;
        path = opts && opts->struct_size >= offsetof(struct dsv32_connect_opts, client_name) && opts->socket_path
                       ? opts->socket_path
                       : getenv(DSV32_SOCKET_ENV);
        if (!path || !*path)
                path = DSV32_DEFAULT_SOCKET;
        if (strlen(path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        memcpy(sa.sun_path, path, strlen(path) + 1);
        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->next_id = 1;
        c->mode = DSV32_WAIT_ADAPTIVE;
        c->epfd = c->efd = -1;
        dsv_spin_init(&c->spin, MIN_SPIN_NS, DEFAULT_SPIN_NS);
        c->fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        if (c->fd < 0) {
                r = -errno;
                free(c);
                return r;
        }
        if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                r = -errno;
                if (r == -EACCES)
                        snprintf(connect_err, sizeof(connect_err),
                                 "permission denied on the socket %s: users of dsv32d must be in group dsv32", path);
                else
                        snprintf(connect_err, sizeof(connect_err), "cannot connect to dsv32d at %s: %s%s", path, strerror(-r),
                                 r == -ENOENT || r == -ECONNREFUSED
                                         ? " (is it running? systemctl start dsv32d.socket, or set DSV32_SOCKET)"
                                         : "");
                close(c->fd);
                free(c);
                return r;
        }
        r = handshake(c, opts, path);
        if (r < 0) {
                snprintf(connect_err, sizeof(connect_err), "%s", c->err);
                dsv32_disconnect(c);
                return r;
        }
        c->rxcap = c->shm.comp.max_record;
        c->rx = malloc(c->rxcap);
        if (!c->rx) {
                dsv32_disconnect(c);
                return -ENOMEM;
        }
        c->info.max_request_bytes = c->shm.sub.max_record;
        c->info.max_reply_bytes = c->shm.comp.max_record;
        c->epfd = epoll_create1(EPOLL_CLOEXEC);
        c->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (c->epfd < 0 || c->efd < 0 ||
            epoll_ctl(c->epfd, EPOLL_CTL_ADD, c->fd, &(struct epoll_event){.events = EPOLLIN}) < 0 ||
            epoll_ctl(c->epfd, EPOLL_CTL_ADD, c->efd, &(struct epoll_event){.events = EPOLLIN}) < 0) {
                r = -errno;
                snprintf(connect_err, sizeof(connect_err), "cannot create the client's pollable descriptor: %s", strerror(-r));
                dsv32_disconnect(c);
                return r;
        }
        *ret = c;
        return 0;
}

API void dsv32_disconnect(dsv32_client *c) {
        if (!c)
                return;
        release_held(c);
        free(c->held);
        while (c->q_head) {
                struct queued *q = c->q_head;
                c->q_head = q->next;
                free(q->data);
                free(q);
        }
        if (c->fd >= 0)
                close(c->fd);
        if (c->epfd >= 0)
                close(c->epfd);
        if (c->efd >= 0)
                close(c->efd);
        free(c->inflight);
        dsv_shm_unmap(&c->shm);
        dsv_wbuf_free(&c->wbuf);
        free(c->rx);
        free(c);
}

API int dsv32_get_info_sized(dsv32_client *c, struct dsv32_info *ret, size_t size) {
        if (!c || !ret || size < DSV32_V0_SIZE_INFO)
                return -EINVAL;
        copy_out(ret, size, &c->info, sizeof(c->info));
        return 0;
}

API int dsv32_set_wait(dsv32_client *c, enum dsv32_wait_mode mode, uint32_t max_spin_ns) {
        if (!c || mode > DSV32_WAIT_SLEEP)
                return -EINVAL;
        c->mode = mode;
        dsv_spin_init(&c->spin, MIN_SPIN_NS, max_spin_ns ? max_spin_ns : DEFAULT_SPIN_NS);
        return 0;
}

API int dsv32_get_wait_stats_sized(dsv32_client *c, struct dsv32_wait_stats *ret, size_t size) {
        if (!c || !ret || size < DSV32_V0_SIZE_WAIT_STATS)
                return -EINVAL;
        copy_out(ret, size, &c->ws, sizeof(c->ws));
        return 0;
}

API int dsv32_fd(dsv32_client *c) {
        if (!c)
                return -EINVAL;
        settle(c);
        return c->epfd;
}

API const char *dsv32_last_error(const dsv32_client *c) {
        if (!c)
                return connect_err[0] ? connect_err : "no error";
        return c->err[0] ? c->err : "no error";
}

API const char *dsv32_strerror(int err) { return strerror(err < 0 ? -err : err); }

API const char *dsv32_error_name(int err) { return dsv_errno_name(err); }

API const char *dsv32_finish_name(enum dsv32_finish f) { return dsv_finish_name((unsigned)f); }

API const char *dsv32_version(void) { return PACKAGE_VERSION; }

API void dsv32_free(void *p) { free(p); }

/* ------------------------------------------------------------------ requests */

/* A string of the wire (absent stays absent). */
static struct dsv_str wire_str(const char *p) {
        struct dsv_str v = {p, p ? (uint32_t)strnlen(p, DSV_MAX_TEXT + 1) : 0};
        return v;
}

/* The request's chat (struct dsv32_message) and tools into one allocation (*chat): the wire's
 * messages, their tool calls, the tools. The daemon checks the limits and the JSON. */
static int build_chat(struct dsv32_client *c, const struct dsv32_request *q, struct dsv_msg_generate *g, void **chat) {
        const bool has_chat = q->struct_size >= offsetof(struct dsv32_request, n_tools) + sizeof(q->n_tools);
        const size_t n_chat = has_chat && q->chat ? q->n_chat : 0, n_tools = has_chat && q->tools ? q->n_tools : 0;
        size_t calls = 0;
        struct dsv_chat_msg *msgs;
        struct dsv_tool_call *tc;
        struct dsv_tool *tools;

        if (n_chat > DSV_MAX_CHAT_MESSAGES || n_tools > DSV_MAX_TOOLS)
                return set_err(c, -E2BIG, "at most %d chat messages and %d tools", DSV_MAX_CHAT_MESSAGES, DSV_MAX_TOOLS);
        for (size_t i = 0; i < n_chat; i++) {
                if (q->chat[i].n_tool_calls > DSV_MAX_TOOL_CALLS || (q->chat[i].n_tool_calls && !q->chat[i].tool_calls))
                        return set_err(c, -EINVAL, "message %zu: at most %d tool calls", i, DSV_MAX_TOOL_CALLS);
                calls += q->chat[i].n_tool_calls;
        }
        if (!n_chat && !n_tools)
                return 0;
        *chat = calloc(1, n_chat * sizeof(*msgs) + calls * sizeof(*tc) + n_tools * sizeof(*tools) + 1);
        if (!*chat)
                return set_err(c, -ENOMEM, "out of memory");
        msgs = *chat;
        tc = (struct dsv_tool_call *)(msgs + n_chat);
        tools = (struct dsv_tool *)(tc + calls);
        for (size_t i = 0; i < n_chat; i++) {
                const struct dsv32_message *x = &q->chat[i];
                if (!x->role || !x->content)
                        return set_err(c, -EINVAL, "message %zu lacks a role or content", i);
                msgs[i].role = x->role;
                msgs[i].role_len = (uint32_t)strnlen(x->role, 33);
                msgs[i].content = x->content;
                msgs[i].content_len = (uint32_t)strnlen(x->content, DSV_MAX_TEXT + 1);
                if (msgs[i].role_len > 32)
                        return set_err(c, -EINVAL, "message %zu: role is longer than 32 bytes", i);
                msgs[i].reasoning = wire_str(x->reasoning_content);
                msgs[i].tool_call_id = wire_str(x->tool_call_id);
                msgs[i].tool_calls = x->n_tool_calls ? tc : NULL;
                msgs[i].n_tool_calls = (uint32_t)x->n_tool_calls;
                for (size_t k = 0; k < x->n_tool_calls; k++, tc++) {
                        tc->id = wire_str(x->tool_calls[k].id);
                        tc->name = wire_str(x->tool_calls[k].name);
                        tc->arguments = wire_str(x->tool_calls[k].arguments);
                        if (!tc->id.p || !tc->name.p || !tc->arguments.p)
                                return set_err(c, -EINVAL, "message %zu: tool_calls[%zu] needs an id, a name and arguments", i,
                                               k);
                }
        }
        for (size_t i = 0; i < n_tools; i++) {
                if (!q->tools[i].name)
                        return set_err(c, -EINVAL, "tools[%zu] has no name", i);
                tools[i].name = wire_str(q->tools[i].name);
                tools[i].description = wire_str(q->tools[i].description);
                tools[i].parameters = wire_str(q->tools[i].parameters);
        }
        if (n_chat) {
                g->messages = msgs;
                g->n_messages = (uint32_t)n_chat;
        }
        g->tools = n_tools ? tools : NULL;
        g->n_tools = (uint32_t)n_tools;
        return 0;
}

static int build_generate(struct dsv32_client *c, const struct dsv32_request *q, struct dsv_msg *m,
                          struct dsv_chat_msg **chat, void **chat_ex, struct dsv_str *stops, struct dsv_bias **bias,
                          uint64_t id) {
        struct dsv_msg_generate *g = &m->u.generate;
        bool has_chat;
        int sources, r;

        if (!q || q->struct_size < offsetof(struct dsv32_request, session))
                return set_err(c, -EINVAL, "struct dsv32_request: set struct_size = sizeof(struct dsv32_request)");
        has_chat = q->struct_size >= offsetof(struct dsv32_request, n_tools) + sizeof(q->n_tools) && q->chat && q->n_chat > 0;
        sources = (q->text != NULL) + (q->tokens != NULL && q->n_tokens > 0) + (q->messages != NULL && q->n_messages > 0) +
                  has_chat;
        if (sources != 1)
                return set_err(c, -EINVAL, "a request needs exactly one of text, tokens, messages or chat");
        if (q->n_stop_tokens > DSV_MAX_STOP_TOKENS || (q->n_stop_tokens && !q->stop_tokens))
                return set_err(c, -EINVAL, "at most %d stop tokens", DSV_MAX_STOP_TOKENS);
        if (q->n_tokens > DSV_MAX_TOKENS_ARRAY || q->n_messages > DSV_MAX_CHAT_MESSAGES)
                return set_err(c, -E2BIG, "the prompt has too many tokens or messages");
        for (size_t i = 0; i < q->n_tokens; i++)
                if (q->tokens[i] < 0)
                        return set_err(c, -EINVAL, "token %zu is negative", i);
        for (size_t i = 0; i < q->n_stop_tokens; i++)
                if (q->stop_tokens[i] < 0)
                        return set_err(c, -EINVAL, "stop token %zu is negative", i);
        memset(m, 0, sizeof(*m));
        m->type = DSV_MSG_GENERATE;
        g->id = id;
        if (q->text) {
                size_t len = q->text_len ? q->text_len : strlen(q->text);
                if (len > DSV_MAX_TEXT)
                        return set_err(c, -E2BIG, "the prompt is larger than %u bytes", DSV_MAX_TEXT);
                g->text = q->text;
                g->text_len = (uint32_t)len;
        }
        g->tokens = q->tokens;
        g->n_tokens = q->tokens ? (uint32_t)q->n_tokens : 0;
        if (q->messages && q->n_messages) {
                *chat = calloc(q->n_messages, sizeof(**chat));
                if (!*chat)
                        return set_err(c, -ENOMEM, "out of memory");
                for (size_t i = 0; i < q->n_messages; i++) {
                        if (!q->messages[i].role || !q->messages[i].content)
                                return set_err(c, -EINVAL, "message %zu lacks a role or content", i);
                        (*chat)[i].role = q->messages[i].role;
                        (*chat)[i].role_len = (uint32_t)strlen(q->messages[i].role);
                        (*chat)[i].content = q->messages[i].content;
                        (*chat)[i].content_len = (uint32_t)strlen(q->messages[i].content);
                        if ((*chat)[i].role_len > 32)
                                return set_err(c, -EINVAL, "message %zu: role is longer than 32 bytes", i);
                }
                g->messages = *chat;
                g->n_messages = (uint32_t)q->n_messages;
        }
        if ((r = build_chat(c, q, g, chat_ex)) < 0)
                return r;
        if (g->n_tools && !g->n_messages)
                return set_err(c, -EINVAL, "tools go with a chat request (messages or chat)");
        if (q->flags & DSV32_REQ_CHAT_EVENTS) {
                if (!g->n_messages)
                        return set_err(c, -EINVAL, "DSV32_REQ_CHAT_EVENTS is for chat requests (messages or chat)");
                /* while loading, WELCOME cannot know yet (the daemon then decides) */
                if (c->info.state != DSV32_STATE_LOADING && !(c->info.features & DSV_FEATURE_CHAT_EVENTS))
                        return set_err(c, -ENOTSUP,
                                       "this dsv32d does not parse chat output into events (no feature 0x20: an older "
                                       "version, or a model without a tokenizer)");
                g->flags |= DSV_GEN_CHAT_EVENTS;
        }
        if (q->struct_size >= offsetof(struct dsv32_request, schema) + sizeof(q->schema) && q->schema) {
                size_t len = strlen(q->schema);
                if (len > DSV_MAX_SCHEMA)
                        return set_err(c, -E2BIG, "the schema is %zu bytes; at most %u", len, DSV_MAX_SCHEMA);
                /* an older daemon would ignore the key and write unconstrained output */
                if (c->info.state != DSV32_STATE_LOADING && !(c->info.features & DSV_FEATURE_SCHEMA))
                        return set_err(c, -ENOTSUP,
                                       "this dsv32d does not constrain output to a schema (no feature 0x40: an older "
                                       "version, or a model without a tokenizer)");
                g->schema = q->schema;
                g->schema_len = (uint32_t)len;
        }
        g->max_tokens = q->max_tokens ? q->max_tokens : DEFAULT_MAX_TOKENS;
        if (!q->max_tokens && c->info.max_tokens_limit && g->max_tokens > c->info.max_tokens_limit)
                g->max_tokens = c->info.max_tokens_limit; /* a default must not break a lower limit */
        g->temperature = q->temperature;
        g->top_p = q->top_p > 0.0f ? q->top_p : 1.0f;
        g->top_k = q->top_k;
        g->min_p = q->min_p;
        g->seed = q->seed;
        g->flags |= q->flags & (DSV_GEN_SEED | DSV_GEN_NO_STREAM | DSV_GEN_NO_BOS | DSV_GEN_THINKING | DSV_GEN_IGNORE_EOS |
                                DSV_GEN_SESSION_REUSE_OUTPUT);
        if (q->flags & DSV32_REQ_LOGPROBS) {
                g->has_logprobs = true;
                if (q->struct_size >= offsetof(struct dsv32_request, top_logprobs) + sizeof(q->top_logprobs))
                        g->logprobs = q->top_logprobs;
                if (g->logprobs > DSV_MAX_TOP_LOGPROBS)
                        return set_err(c, -EINVAL, "top_logprobs %u: at most %d alternatives per token", g->logprobs,
                                       DSV_MAX_TOP_LOGPROBS);
        }
        g->stop_tokens = q->stop_tokens;
        g->n_stop_tokens = (uint32_t)q->n_stop_tokens;
        if (q->session) {
                if (!dsv_session_name_valid(q->session, strlen(q->session)))
                        return set_err(c, -EINVAL,
                                       "invalid session name: 1..%d bytes of letters, digits and . _ : @ + = -",
                                       DSV_NAME_MAX);
                snprintf(g->session, sizeof(g->session), "%s", q->session);
        }
        if (q->struct_size >= offsetof(struct dsv32_request, priority) + sizeof(q->priority))
                g->priority = q->priority;
        if (q->struct_size >= offsetof(struct dsv32_request, n_stop_strings) + sizeof(q->n_stop_strings) &&
            q->n_stop_strings) {
                if (q->n_stop_strings > DSV_MAX_STOP_STRINGS || !q->stop_strings)
                        return set_err(c, -EINVAL, "at most %d stop strings (got %zu)", DSV_MAX_STOP_STRINGS,
                                       q->n_stop_strings);
                for (size_t i = 0; i < q->n_stop_strings; i++) {
                        size_t len = q->stop_strings[i] ? strlen(q->stop_strings[i]) : 0;
                        if (len == 0 || len > DSV_MAX_STOP_STRING_BYTES)
                                return set_err(c, -EINVAL, "stop string %zu is %zu bytes; each must be 1..%d", i, len,
                                               DSV_MAX_STOP_STRING_BYTES);
                        stops[i].p = q->stop_strings[i];
                        stops[i].len = (uint32_t)len;
                }
                g->stop_strings = stops;
                g->n_stop_strings = (uint32_t)q->n_stop_strings;
        }
        g->repetition_penalty = 1.0f;
        if (q->struct_size >= offsetof(struct dsv32_request, n_logit_bias) + sizeof(q->n_logit_bias)) {
                if (q->repetition_penalty != 0.0f)
                        g->repetition_penalty = q->repetition_penalty;
                g->frequency_penalty = q->frequency_penalty;
                g->presence_penalty = q->presence_penalty;
                if (q->n_logit_bias > DSV_MAX_LOGIT_BIAS || (q->n_logit_bias && !q->logit_bias))
                        return set_err(c, -EINVAL, "at most %d logit_bias entries (got %zu)", DSV_MAX_LOGIT_BIAS,
                                       q->n_logit_bias);
                if (q->n_logit_bias) {
                        *bias = calloc(q->n_logit_bias, sizeof(**bias));
                        if (!*bias)
                                return set_err(c, -ENOMEM, "out of memory");
                        for (size_t i = 0; i < q->n_logit_bias; i++) {
                                if (q->logit_bias[i].token < 0)
                                        return set_err(c, -EINVAL, "logit_bias[%zu]: token %d is negative", i,
                                                       q->logit_bias[i].token);
                                for (size_t j = 0; j < i; j++)
                                        if (q->logit_bias[j].token == q->logit_bias[i].token)
                                                return set_err(c, -EINVAL, "logit_bias names token %d twice",
                                                               q->logit_bias[i].token);
                                (*bias)[i].id = q->logit_bias[i].token;
                                (*bias)[i].bias = q->logit_bias[i].bias;
                        }
                        g->logit_bias = *bias;
                        g->n_logit_bias = (uint32_t)q->n_logit_bias;
                }
        }
        return 0;
}

API int dsv32_submit(dsv32_client *c, const struct dsv32_request *req, uint64_t *ret_id) {
        struct dsv_chat_msg *chat = NULL;
        void *chat_ex = NULL;
        struct dsv_str stops[DSV_MAX_STOP_STRINGS];
        struct dsv_bias *bias = NULL;
        struct dsv_msg m;
        uint64_t id;
        int r;

        if (!c)
                return -EINVAL;
        release_held(c);
        id = c->next_id;
        r = inflight_add(c, id);
        if (r >= 0)
                r = build_generate(c, req, &m, &chat, &chat_ex, stops, &bias, id);
        if (r >= 0)
                r = send_msg(c, &m);
        free(chat);
        free(chat_ex);
        free(bias);
        if (r < 0) {
                inflight_remove(c, id);
                settle(c);
                return r;
        }
        c->next_id++;
        if (ret_id)
                *ret_id = id;
        settle(c);
        return 0;
}

API int dsv32_cancel(dsv32_client *c, uint64_t id) {
        struct dsv_msg m = {.type = DSV_MSG_CANCEL};
        int r;
        if (!c || !id)
                return -EINVAL;
        if (!inflight_find(c, id, NULL))
                return set_err(c, -ENOENT, "no request %llu in flight on this client (its DONE or ERROR was handed out already)",
                               (unsigned long long)id);
        m.u.id.id = id;
        r = send_msg(c, &m);
        settle(c);
        return r;
}

static void fill_usage(struct dsv32_usage *u, const struct dsv_msg_done *d) {
        u->prompt_tokens = d->prompt_tokens;
        u->completion_tokens = d->completion_tokens;
        u->cached_tokens = d->cached_tokens;
        u->queue_us = d->queue_us;
        u->prefill_us = d->prefill_us;
        u->decode_us = d->decode_us;
}

static int generate(dsv32_client *c, uint64_t id, dsv32_token_cb cb, void *userdata, struct dsv32_result *result,
                    size_t result_size) {
        bool cancelled = false;
        int r;

        for (;;) {
                struct dsv_msg m;
                uint8_t *buf = NULL;
                r = take_for(c, id, &m, &buf);
                if (r < 0)
                        return r;
                if (m.type == DSV_MSG_TOKENS) {
                        if (cb && !cancelled && cb(userdata, m.u.tokens.tokens, m.u.tokens.n_tokens, m.u.tokens.text,
                                                   m.u.tokens.text_len) != 0) {
                                cancelled = true;
                                r = dsv32_cancel(c, id);
                        }
                } else if (m.type == DSV_MSG_DONE) {
                        if (result) {
                                struct dsv32_result res = {.finish = (enum dsv32_finish)m.u.done.reason};
                                fill_usage(&res.usage, &m.u.done);
                                res.preempted = m.u.done.preempted;
                                res.spec_drafted = m.u.done.spec_drafted;
                                res.spec_accepted = m.u.done.spec_accepted;
                                res.stop_index = m.u.done.stop_index;
                                copy_out(result, result_size, &res, sizeof(res));
                        }
                        dsv_msg_release(&m);
                        free(buf);
                        return 0;
                } else if (m.type == DSV_MSG_ERROR) {
                        r = error_of(c, &m);
                        dsv_msg_release(&m);
                        free(buf);
                        return r;
                }
                dsv_msg_release(&m);
                free(buf);
                if (r < 0)
                        return r;
        }
}

API int dsv32_generate_sized(dsv32_client *c, const struct dsv32_request *req, dsv32_token_cb cb, void *userdata,
                             struct dsv32_result *result, size_t result_size) {
        uint64_t id;
        int r;

        if (!c || (result && result_size < DSV32_V0_SIZE_RESULT))
                return -EINVAL;
        r = dsv32_submit(c, req, &id);
        if (r < 0)
                return r;
        r = generate(c, id, cb, userdata, result, result_size);
        /* over (DONE or ERROR), or the connection broke: either way nothing more comes */
        inflight_remove(c, id);
        settle(c);
        return r;
}

static int hold(struct dsv32_client *c, uint8_t *buf, uint16_t type, uint32_t len, struct dsv32_event *ev) {
        struct held *h;
        char why[256];
        int r;

        if (c->n_held == c->cap_held) {
                size_t cap = c->cap_held ? 2 * c->cap_held : 16;
                struct held *v = realloc(c->held, cap * sizeof(*v));
                if (!v) {
                        free(buf);
                        return set_err(c, -ENOMEM, "out of memory");
                }
                c->held = v;
                c->cap_held = cap;
        }
        h = &c->held[c->n_held];
        r = dsv_msg_decode(type, buf, len, &h->msg, why, sizeof(why));
        if (r < 0) {
                free(buf);
                return broken(c, -EPROTO, "bad record from dsv32d: %s", why);
        }
        h->buf = buf;
        h->extra = NULL;
        c->n_held++;
        memset(ev, 0, sizeof(*ev));
        switch (type) {
        case DSV_MSG_TOKENS:
                ev->type = DSV32_EVENT_TOKENS;
                ev->id = h->msg.u.tokens.id;
                ev->tokens = h->msg.u.tokens.tokens;
                ev->n_tokens = h->msg.u.tokens.n_tokens;
                ev->text = h->msg.u.tokens.text;
                ev->text_len = h->msg.u.tokens.text_len;
                if (h->msg.u.tokens.n_logprobs) { /* lengths checked by the decoder */
                        ev->logprobs = h->msg.u.tokens.logprobs;
                        ev->n_top = h->msg.u.tokens.n_top / h->msg.u.tokens.n_tokens;
                        ev->top_tokens = h->msg.u.tokens.top_ids;
                        ev->top_logprobs = h->msg.u.tokens.top_logprobs;
                }
                return 1;
        case DSV_MSG_DONE:
                ev->type = DSV32_EVENT_DONE;
                ev->id = h->msg.u.done.id;
                ev->finish = (enum dsv32_finish)h->msg.u.done.reason;
                fill_usage(&ev->usage, &h->msg.u.done);
                ev->preempted = h->msg.u.done.preempted;
                ev->spec_drafted = h->msg.u.done.spec_drafted;
                ev->spec_accepted = h->msg.u.done.spec_accepted;
                ev->stop_index = h->msg.u.done.stop_index;
                inflight_remove(c, ev->id);
                return 1;
        case DSV_MSG_ERROR: {
                /* NUL-terminate the message in place: it ends inside buf */
                char *t = malloc(h->msg.u.error.message_len + 1);
                if (!t)
                        return set_err(c, -ENOMEM, "out of memory");
                memcpy(t, h->msg.u.error.message ? h->msg.u.error.message : "", h->msg.u.error.message_len);
                t[h->msg.u.error.message_len] = 0;
                free(h->buf);
                h->buf = (uint8_t *)t; /* the decoded strings are no longer used */
                ev->type = DSV32_EVENT_ERROR;
                ev->id = h->msg.u.error.id;
                inflight_remove(c, ev->id);
                ev->error = h->msg.u.error.code > 0 ? -h->msg.u.error.code : -EIO;
                ev->message = t;
                return 1;
        }
        case DSV_MSG_CHAT_EVENT: {
                static const enum dsv32_event_type types[DSV_CHAT_EV_MAX] = {
                        [DSV_CHAT_EV_REASONING] = DSV32_EVENT_REASONING,
                        [DSV_CHAT_EV_CONTENT] = DSV32_EVENT_CONTENT,
                        [DSV_CHAT_EV_TOOL_BEGIN] = DSV32_EVENT_TOOL_CALL_BEGIN,
                        [DSV_CHAT_EV_TOOL_ARGS] = DSV32_EVENT_TOOL_CALL_ARGUMENTS,
                        [DSV_CHAT_EV_TOOL_END] = DSV32_EVENT_TOOL_CALL_END,
                        [DSV_CHAT_EV_PARSE_ERROR] = DSV32_EVENT_PARSE_ERROR,
                };
                const struct dsv_msg_chat_event *x = &h->msg.u.chat_event;
                if (x->type >= DSV_CHAT_EV_MAX)
                        return 0; /* a kind of a newer daemon: skipped */
                ev->type = types[x->type];
                ev->id = x->id;
                ev->text = x->text;
                ev->text_len = x->text_len;
                ev->tool_index = x->index;
                if (x->type == DSV_CHAT_EV_TOOL_BEGIN) {
                        ev->tool_call_id = x->call_id;
                        ev->tool_name = x->name ? x->name : "";
                        ev->tool_name_len = x->name_len;
                }
                if (x->type == DSV_CHAT_EV_PARSE_ERROR) {
                        h->extra = malloc(x->message_len + 1);
                        if (!h->extra)
                                return set_err(c, -ENOMEM, "out of memory");
                        memcpy(h->extra, x->message ? x->message : "", x->message_len);
                        h->extra[x->message_len] = 0;
                        ev->message = h->extra;
                }
                return 1;
        }
        default:
                return 0; /* a stray reply of a synchronous call: ignored */
        }
}

static int poll_events(dsv32_client *c, uint8_t *events, size_t max, size_t event_size) {
        struct dsv32_event ev;
        size_t n = 0;
        int r;

        /* the doorbells that made dsv32_fd() readable: read them, or a level-triggered
         * loop would spin (a final ERROR of the daemon is kept for later) */
        if ((r = drain_socket(c)) < 0 && dsv_ring_empty(&c->shm.comp) && !c->q_head)
                return r;
        while (n < max && c->q_head) {
                struct queued *q = c->q_head;
                c->q_head = q->next;
                if (!c->q_head)
                        c->q_tail = NULL;
                r = hold(c, q->data, q->type, q->len, &ev);
                free(q);
                if (r < 0)
                        return r;
                if (r > 0)
                        copy_out(events + n++ * event_size, event_size, &ev, sizeof(ev));
        }
        while (n < max) {
                struct dsv_ipc_record h;
                uint8_t *buf;
                r = ring_take(c, &h);
                if (r < 0)
                        return r;
                if (r == 0)
                        break;
                buf = malloc(h.length ? h.length : 1);
                if (!buf)
                        return set_err(c, -ENOMEM, "out of memory");
                memcpy(buf, c->rx, h.length);
                r = hold(c, buf, h.type, h.length, &ev);
                if (r < 0)
                        return r;
                if (r > 0)
                        copy_out(events + n++ * event_size, event_size, &ev, sizeof(ev));
        }
        if (n == 0 && c->broken)
                return c->broken;
        return (int)n;
}

API int dsv32_poll_events_sized(dsv32_client *c, struct dsv32_event *events, size_t max, size_t event_size) {
        int r;
        if (!c || (!events && max) || event_size < DSV32_V0_SIZE_EVENT)
                return -EINVAL;
        release_held(c);
        r = poll_events(c, (uint8_t *)events, max, event_size);
        settle(c);
        return r;
}

API int dsv32_wait(dsv32_client *c, int timeout_ms) {
        int r;
        if (!c)
                return -EINVAL;
        r = c->q_head ? 1 : wait_completion(c, timeout_ms);
        settle(c);
        return r;
}

API int dsv32_ping(dsv32_client *c, uint64_t *ret_rtt_ns) {
        struct dsv_msg m = {.type = DSV_MSG_PING}, reply;
        uint8_t *buf = NULL;
        uint64_t t0;
        int r;

        if (!c)
                return -EINVAL;
        release_held(c);
        m.u.ping.id = c->next_id++;
        t0 = dsv_ipc_now_ns();
        m.u.ping.t_ns = t0;
        r = call(c, &m, m.u.ping.id, DSV_MSG_PONG, &reply, &buf);
        if (r < 0)
                return r;
        if (ret_rtt_ns)
                *ret_rtt_ns = dsv_ipc_now_ns() - t0;
        dsv_msg_release(&reply);
        free(buf);
        return 0;
}

API int dsv32_tokenize(dsv32_client *c, const char *text, size_t len, uint32_t flags, int32_t **ret_tokens, size_t *ret_n) {
        struct dsv_msg m = {.type = DSV_MSG_TOKENIZE}, reply;
        uint8_t *buf = NULL;
        int32_t *out;
        int r;

        if (!c || !text || !ret_tokens || !ret_n)
                return -EINVAL;
        if (len > DSV_MAX_TEXT)
                return set_err(c, -E2BIG, "the text is larger than %u bytes", DSV_MAX_TEXT);
        release_held(c);
        m.u.tokenize.id = c->next_id++;
        m.u.tokenize.text = text;
        m.u.tokenize.text_len = (uint32_t)len;
        m.u.tokenize.flags = flags & DSV_TOK_ADD_BOS;
        r = call(c, &m, m.u.tokenize.id, DSV_MSG_TOKENIZE_REPLY, &reply, &buf);
        if (r < 0)
                return r;
        out = malloc(reply.u.tokens.n_tokens ? reply.u.tokens.n_tokens * sizeof(int32_t) : 1);
        if (out) {
                memcpy(out, reply.u.tokens.tokens, reply.u.tokens.n_tokens * sizeof(int32_t));
                *ret_tokens = out;
                *ret_n = reply.u.tokens.n_tokens;
        }
        dsv_msg_release(&reply);
        free(buf);
        return out ? 0 : set_err(c, -ENOMEM, "out of memory");
}

API int dsv32_detokenize(dsv32_client *c, const int32_t *tokens, size_t n, char **ret_text, size_t *ret_len) {
        struct dsv_msg m = {.type = DSV_MSG_DETOKENIZE}, reply;
        uint8_t *buf = NULL;
        char *out;
        int r;

        if (!c || (!tokens && n) || !ret_text || n > DSV_MAX_TOKENS_ARRAY)
                return -EINVAL;
        for (size_t i = 0; i < n; i++)
                if (tokens[i] < 0)
                        return set_err(c, -EINVAL, "token %zu is negative", i);
        release_held(c);
        m.u.tokens.id = c->next_id++;
        m.u.tokens.tokens = tokens;
        m.u.tokens.n_tokens = (uint32_t)n;
        r = call(c, &m, m.u.tokens.id, DSV_MSG_DETOKENIZE_REPLY, &reply, &buf);
        if (r < 0)
                return r;
        out = malloc((size_t)reply.u.detok.text_len + 1);
        if (out) {
                memcpy(out, reply.u.detok.text, reply.u.detok.text_len);
                out[reply.u.detok.text_len] = 0;
                *ret_text = out;
                if (ret_len)
                        *ret_len = reply.u.detok.text_len;
        }
        dsv_msg_release(&reply);
        free(buf);
        return out ? 0 : set_err(c, -ENOMEM, "out of memory");
}

API int dsv32_stats_sized(dsv32_client *c, struct dsv32_stats *out, size_t size) {
        struct dsv_msg m = {.type = DSV_MSG_STATS}, reply;
        struct dsv_msg_stats_reply *s;
        struct dsv32_stats st, *ret = &st;
        uint8_t *buf = NULL;
        int r;

        if (!c || !out || size < DSV32_V0_SIZE_STATS)
                return -EINVAL;
        release_held(c);
        m.u.id.id = c->next_id++;
        r = call(c, &m, m.u.id.id, DSV_MSG_STATS_REPLY, &reply, &buf);
        if (r < 0)
                return r;
        s = &reply.u.stats;
        memset(ret, 0, sizeof(*ret));
        ret->state = (enum dsv32_state)s->state;
        ret->daemon_pid = s->pid;
        ret->uptime_ms = s->uptime_ms;
        ret->load_permille = s->load_permille;
        snprintf(ret->daemon_version, sizeof(ret->daemon_version), "%s", s->daemon_version);
        snprintf(ret->model, sizeof(ret->model), "%s", s->model);
        snprintf(ret->backend, sizeof(ret->backend), "%s", s->backend);
        snprintf(ret->numerics, sizeof(ret->numerics), "%s", s->numerics);
        ret->threads = s->threads;
        ret->vocab_size = s->vocab_size;
        ret->n_layers = s->n_layers;
        ret->max_context = s->max_context;
        ret->weight_bytes = s->weight_bytes;
        ret->kv_pages_total = s->kv_pages_total;
        ret->kv_pages_used = s->kv_pages_used;
        ret->kv_page_tokens = s->kv_page_tokens;
        ret->kv_bytes_per_token = s->kv_bytes_per_token;
        ret->rss_bytes = s->rss_bytes;
        ret->clients = s->clients;
        ret->requests_running = s->requests_running;
        ret->requests_waiting = s->requests_waiting;
        ret->requests_parked = s->requests_parked;
        ret->requests_total = s->requests_total;
        ret->prompt_tokens_total = s->prompt_tokens_total;
        ret->generated_tokens_total = s->generated_tokens_total;
        ret->steps_total = s->steps_total;
        ret->prefill_tokens_per_s = s->prefill_tok_s;
        ret->decode_tokens_per_s = s->decode_tok_s;
        ret->loop_wakeups = s->loop_wakeups;
        ret->loop_sleeps = s->loop_sleeps;
        ret->doorbells_sent = s->doorbells_sent;
        ret->doorbells_received = s->doorbells_received;
        ret->spin_us = s->spin_us;
        ret->features = s->features;
        ret->sessions = s->sessions;
        ret->sessions_pinned = s->sessions_pinned;
        ret->session_pages = s->session_pages;
        ret->cached_tokens_total = s->cached_tokens_total;
        ret->sessions_evicted = s->sessions_evicted;
        ret->requests_prefilling = s->requests_prefilling;
        ret->rate_window_ms = s->rate_window_ms;
        ret->prefilled_tokens_total = s->prefilled_tokens_total;
        ret->preemptions_total = s->preemptions_total;
        ret->prefix_cache_tokens_total = s->prefix_cache_tokens_total;
        ret->spec_drafted_total = s->spec_drafted_total;
        ret->spec_accepted_total = s->spec_accepted_total;
        ret->kv_pages_cached = s->kv_pages_cached;
        ret->requests_done_total = s->requests_done_total;
        ret->queue_us_total = s->queue_us_total;
        ret->ttft_us_total = s->ttft_us_total;
        ret->decode_us_total = s->decode_us_total;
        ret->decode_tokens_total = s->decode_tokens_total;
        snprintf(ret->device, sizeof(ret->device), "%s", s->device);
        ret->device_memory_total = s->device_memory_total;
        ret->device_memory_free = s->device_memory_free;
        ret->device_weight_bytes = s->device_weight_bytes;
        ret->device_kv_bytes = s->device_kv_bytes;
        ret->ranks = s->ranks;
        snprintf(ret->layout, sizeof(ret->layout), "%s", s->layout);
        ret->rank_weight_bytes_min = s->rank_weight_min;
        ret->rank_weight_bytes_max = s->rank_weight_max;
        ret->rank_pools = s->n_rank_pages / 3 < DSV32_STATS_RANKS_MAX ? s->n_rank_pages / 3 : DSV32_STATS_RANKS_MAX;
        for (uint32_t k = 0; k < ret->rank_pools; k++)
                ret->rank_pages[k] = (struct dsv32_rank_pages){.used = (uint32_t)s->rank_pages[3 * k],
                                                               .free = (uint32_t)s->rank_pages[3 * k + 1],
                                                               .cached = (uint32_t)s->rank_pages[3 * k + 2]};
        ret->session_moves_total = s->session_moves_total;
        if (ret->state == DSV32_STATE_READY)
                c->info.features = s->features;
        dsv_msg_release(&reply);
        free(buf);
        copy_out(out, size, &st, sizeof(st));
        return 0;
}

static int session_call(dsv32_client *c, uint16_t type, const char *name, uint32_t flags, struct dsv32_session_info *ret,
                        size_t size) {
        struct dsv_msg m = {.type = type}, reply;
        uint8_t *buf = NULL;
        int r;

        if (!c || !name || (ret && size < DSV32_V0_SIZE_SESSION_INFO))
                return -EINVAL;
        if (!dsv_session_name_valid(name, strlen(name)))
                return set_err(c, -EINVAL, "invalid session name: 1..%d bytes of letters, digits and . _ : @ + = -",
                               DSV_NAME_MAX);
        release_held(c);
        m.u.session.id = c->next_id++;
        snprintf(m.u.session.name, sizeof(m.u.session.name), "%s", name);
        m.u.session.flags = flags;
        r = call(c, &m, m.u.session.id, DSV_MSG_SESSION_REPLY, &reply, &buf);
        if (r < 0)
                return r;
        if (ret) {
                struct dsv32_session_info si = {
                        .flags = reply.u.session.flags,
                        .n_tokens = reply.u.session.n_tokens,
                        .n_pages = reply.u.session.n_pages,
                };
                copy_out(ret, size, &si, sizeof(si));
        }
        dsv_msg_release(&reply);
        free(buf);
        return 0;
}

API int dsv32_session_open_sized(dsv32_client *c, const char *name, uint32_t flags, struct dsv32_session_info *ret,
                                 size_t size) {
        if (flags & ~(DSV32_SESSION_EXCL | DSV32_SESSION_PRIVATE))
                return c ? set_err(c, -EINVAL, "unknown session flags 0x%x", flags) : -EINVAL;
        return session_call(c, DSV_MSG_SESSION_OPEN, name,
                            (flags & DSV32_SESSION_EXCL ? DSV_SESSION_OPEN_EXCL : 0) |
                                    (flags & DSV32_SESSION_PRIVATE ? DSV_SESSION_OPEN_PRIVATE : 0),
                            ret, size);
}

API int dsv32_session_close_sized(dsv32_client *c, const char *name, struct dsv32_session_info *ret, size_t size) {
        return session_call(c, DSV_MSG_SESSION_CLOSE, name, 0, ret, size);
}

API int dsv32_session_pin_sized(dsv32_client *c, const char *name, int pin, struct dsv32_session_info *ret, size_t size) {
        return session_call(c, DSV_MSG_SESSION_PIN, name, pin ? DSV_SESSION_PIN_SET : 0, ret, size);
}

/* A call with a message of protocol 1.2 (its id in m->u.id): a 1.1 daemon answers ENOSYS,
 * which becomes -ENOTSUP saying what it cannot do. */
static int call_1_2(dsv32_client *c, struct dsv_msg *m, uint16_t reply_type, struct dsv_msg *reply, uint8_t **buf,
                    const char *what) {
        int r = call(c, m, m->u.id.id, reply_type, reply, buf);
        if (r == -ENOSYS)
                return set_err(c, -ENOTSUP, "this dsv32d cannot %s (protocol %u.%u; 1.2 can)", what, c->info.protocol_major,
                               c->info.protocol_minor);
        return r;
}

API int dsv32_session_save(dsv32_client *c, uint32_t *n_saved) {
        struct dsv_msg m = {.type = DSV_MSG_SESSION_SAVE}, reply;
        uint8_t *buf = NULL;
        int r;

        if (!c)
                return -EINVAL;
        release_held(c);
        m.u.id.id = c->next_id++;
        r = call_1_2(c, &m, DSV_MSG_SESSION_REPLY, &reply, &buf, "save sessions on request");
        if (r < 0)
                return r;
        if (n_saved)
                *n_saved = reply.u.session.n_tokens; /* SESSION_SAVE's reply: sessions written */
        dsv_msg_release(&reply);
        free(buf);
        return 0;
}

API int dsv32_session_list_sized(dsv32_client *c, struct dsv32_session_entry *entries, size_t max, size_t *ret_total,
                                 size_t entry_size) {
        struct dsv_msg m = {.type = DSV_MSG_SESSION_LIST}, reply;
        const struct dsv_msg_session_list *l;
        uint8_t *buf = NULL;
        size_t n;
        int r;

        if (!c || (!entries && max) || entry_size < SESSION_ENTRY_FIRST_SIZE)
                return -EINVAL;
        release_held(c);
        m.u.id.id = c->next_id++;
        r = call_1_2(c, &m, DSV_MSG_SESSION_LIST_REPLY, &reply, &buf, "list sessions");
        if (r < 0)
                return r;
        l = &reply.u.session_list;
        n = l->n_rows < max ? l->n_rows : max;
        for (size_t i = 0; i < n; i++) {
                struct dsv32_session_entry e = {
                        .flags = l->rows[i].flags,
                        .n_tokens = l->rows[i].n_tokens,
                        .n_pages = l->rows[i].n_pages,
                        .idle_ms = l->rows[i].idle_ms,
                        .rank = l->rows[i].has_rank ? (int32_t)l->rows[i].rank : -1,
                };
                snprintf(e.name, sizeof(e.name), "%s", l->rows[i].name);
                copy_out((uint8_t *)entries + i * entry_size, entry_size, &e, sizeof(e));
        }
        if (ret_total)
                *ret_total = l->n_total > l->n_rows ? l->n_total : l->n_rows;
        dsv_msg_release(&reply);
        free(buf);
        return (int)n;
}
