/* Hostile clients against dsv32d while a well-behaved client is being served: a raw client
 * that speaks the handshake and then writes garbage into its rings and socket. Every attack
 * must end in an ERROR (in the ring, or as the last datagram before the daemon closes that
 * one connection) and the daemon must stay up, answer new clients, and give the good client
 * the right tokens throughout. Run under ASan/UBSan by the sanitizer build. */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client/dsv32.h"
#include "ipc/proto.h"
#include "ipc/ring.h"
#include "tests/ipc/harness.h"
#include "tests/ipc/raw.h"

static struct h_daemon d;

/* ------------------------------------------------------------------ attacks */

static void attack_length_past_ring(void) {
        struct h_raw r;
        struct dsv_ipc_record h = {.length = 0x7fffffff, .type = DSV_MSG_PING};
        h_raw_open(&r, d.socket, 4096, 4096, "hostile");
        memcpy(r.shm.sub.data, &h, sizeof(h));
        __atomic_store_n(&r.shm.sub.ctl->tail, 4096, __ATOMIC_RELEASE);
        dsv_ipc_doorbell(r.fd);
        h_raw_expect_drop(&r, EBADMSG, "record length past the ring");
        h_raw_close(&r);
}

static void attack_tail_backwards(void) {
        struct h_raw r;
        struct dsv_msg m = {.type = DSV_MSG_PING};
        h_raw_open(&r, d.socket, 4096, 4096, "hostile");
        m.u.ping.id = 1;
        h_raw_write_msg(&r, &m, 0); /* one good record, then the tail moves back */
        usleep(50000);
        __atomic_store_n(&r.shm.sub.ctl->tail, 8, __ATOMIC_RELEASE);
        dsv_ipc_doorbell(r.fd);
        h_raw_expect_drop(&r, EPROTO, "tail moved backwards");
        h_raw_close(&r);
}

static void attack_tail_beyond(void) {
        struct h_raw r;
        h_raw_open(&r, d.socket, 4096, 4096, "hostile");
        __atomic_store_n(&r.shm.sub.ctl->tail, 4096 + 64, __ATOMIC_RELEASE);
        dsv_ipc_doorbell(r.fd);
        h_raw_expect_drop(&r, EPROTO, "tail beyond the capacity");
        h_raw_close(&r);
}

static void attack_truncated_frame(void) {
        struct h_raw r;
        struct dsv_ipc_record h = {.length = 100, .type = DSV_MSG_PING};
        h_raw_open(&r, d.socket, 4096, 4096, "hostile");
        memcpy(r.shm.sub.data, &h, sizeof(h));
        __atomic_store_n(&r.shm.sub.ctl->tail, 48, __ATOMIC_RELEASE);
        dsv_ipc_doorbell(r.fd);
        h_raw_expect_drop(&r, EBADMSG, "record longer than what was published");
        h_raw_close(&r);
}

static void attack_payload(const char *what, uint16_t type, const uint8_t *p, uint32_t n, int code, bool drop) {
        struct h_raw r;
        h_raw_open(&r, d.socket, 4096, 4096, "hostile");
        h_raw_write(&r, type, 0, p, n);
        if (drop)
                h_raw_expect_drop(&r, code, what);
        else
                h_raw_expect_ring_error(&r, code, what);
        h_raw_close(&r);
}

static void attack_flags(void) {
        struct h_raw r;
        struct dsv_msg m = {.type = DSV_MSG_STATS};
        h_raw_open(&r, d.socket, 4096, 4096, "hostile");
        m.u.id.id = 5;
        h_raw_write_msg(&r, &m, 0x0100);
        h_raw_expect_ring_error(&r, EOPNOTSUPP, "unknown critical record flag");
        h_raw_close(&r);
}

static void attack_client_message(void) {
        struct h_raw r;
        struct dsv_msg m = {.type = DSV_MSG_DONE};
        h_raw_open(&r, d.socket, 4096, 4096, "hostile");
        m.u.done.id = 5;
        h_raw_write_msg(&r, &m, 0);
        h_raw_expect_drop(&r, EPROTO, "a reply type sent by a client");
        h_raw_close(&r);
}

static void attack_comp_head(void) {
        struct h_raw r;
        struct dsv_msg m = {.type = DSV_MSG_PING};
        struct pollfd p;
        char b[4096];
        bool closed = false;
        uint64_t t0 = h_now_ns();
        h_raw_open(&r, d.socket, 4096, 4096, "hostile");
        __atomic_store_n(&r.shm.comp.ctl->head, 1ull << 40, __ATOMIC_RELEASE);
        m.u.ping.id = 9;
        h_raw_write_msg(&r, &m, 0);
        while (!closed && h_now_ns() - t0 < 5000000000ull) {
                ssize_t n;
                p = (struct pollfd){.fd = r.fd, .events = POLLIN};
                if (poll(&p, 1, 100) <= 0)
                        continue;
                n = recv(r.fd, b, sizeof(b), MSG_DONTWAIT);
                closed = n == 0 || (n < 0 && errno != EAGAIN);
        }
        CHECK(closed, "a client that corrupts its completion ring's head must be dropped");
        fprintf(stderr, "ok: completion head moved past the tail -> drop\n");
        h_raw_close(&r);
}

/* Rewrites the payload bytes of published records while the daemon reads them. */
struct flipper {
        struct h_raw *r;
        volatile bool stop;
};

static void *flip(void *ud) {
        struct flipper *f = ud;
        unsigned x = 1;
        while (!f->stop) {
                x = x * 1103515245u + 12345u;
                f->r->shm.sub.data[(x >> 8) % f->r->shm.sub.capacity] ^= (uint8_t)(x >> 24) | 1;
        }
        return NULL;
}

static void attack_changing_records(void) {
        struct h_raw r;
        struct flipper f = {.r = &r};
        pthread_t t;
        struct dsv_msg m = {.type = DSV_MSG_PING};
        int written = 0;
        h_raw_open(&r, d.socket, 4096, 1 << 20, "hostile");
        pthread_create(&t, NULL, flip, &f);
        for (int i = 0; i < 2000; i++) {
                m.u.ping.id = (uint64_t)i + 1;
                struct dsv_wbuf w = {0};
                dsv_msg_encode(&m, &w);
                if (dsv_ring_write(&r.shm.sub, DSV_MSG_PING, 0, w.data, (uint32_t)w.len) == 0)
                        written++;
                if (dsv_ring_consumer_needs_wake(&r.shm.sub))
                        dsv_ipc_doorbell(r.fd);
                dsv_wbuf_free(&w);
                if (i % 64 == 0)
                        usleep(1000);
        }
        f.stop = true;
        pthread_join(t, NULL);
        usleep(100000);
        CHECK(kill(d.pid, 0) == 0, "dsv32d died");
        fprintf(stderr, "ok: %d records rewritten while being read; daemon alive\n", written);
        h_raw_close(&r);
}

static void attack_flood(void) {
        struct h_raw r;
        struct dsv_msg m = {.type = DSV_MSG_PING};
        uint8_t buf[4096];
        struct dsv_ipc_record h;
        uint64_t sent = 0, got = 0, next = 1, t0;
        /* next: the last id seen (ids start at 1, so the first real one is 2) */
        h_raw_open(&r, d.socket, 65536, 4096, "hostile");
        /* many doorbells and many PINGs while never reading: the daemon must stall this
         * connection (completion ring full), not drop replies or block anybody else */
        for (int i = 0; i < 20000; i++)
                dsv_ipc_doorbell(r.fd);
        for (;;) {
                struct dsv_wbuf w = {0};
                m.u.ping.id = sent + 1;
                dsv_msg_encode(&m, &w);
                int k = dsv_ring_write(&r.shm.sub, DSV_MSG_PING, 0, w.data, (uint32_t)w.len);
                dsv_wbuf_free(&w);
                if (k == -EAGAIN) {
                        usleep(20000);
                        if (dsv_ring_write(&r.shm.sub, DSV_MSG_PING, 0, "\x81\x00\x01", 3) == -EAGAIN)
                                break;
                        sent++; /* that one was a PING with id 1 again: count it, ignore its id */
                        continue;
                }
                sent++;
                dsv_ipc_doorbell(r.fd);
        }
        CHECK(kill(d.pid, 0) == 0, "dsv32d died during the flood");
        /* now read everything: PONGs arrive in order, none lost */
        t0 = h_now_ns();
        while (got < sent && h_now_ns() - t0 < 20000000000ull) {
                struct dsv_msg x;
                int k = dsv_ring_read(&r.shm.comp, &h, buf, sizeof(buf));
                CHECK(k >= 0, "completion ring broken");
                if (k == 0) {
                        if (dsv_ring_producer_needs_wake(&r.shm.comp))
                                dsv_ipc_doorbell(r.fd);
                        dsv_ipc_doorbell(r.fd);
                        usleep(200);
                        continue;
                }
                if (dsv_ring_producer_needs_wake(&r.shm.comp))
                        dsv_ipc_doorbell(r.fd);
                CHECK(h.type == DSV_MSG_PONG && dsv_msg_decode(h.type, buf, h.length, &x, NULL, 0) == 0, "not a PONG");
                if (x.u.ping.id != 1) { /* the extra probes reuse id 1 */
                        CHECK(x.u.ping.id > next, "PONG %llu out of order (after %llu)", (unsigned long long)x.u.ping.id,
                              (unsigned long long)next);
                        next = x.u.ping.id;
                }
                dsv_msg_release(&x);
                got++;
        }
        CHECK(got == sent, "flood: %llu PINGs, %llu PONGs", (unsigned long long)sent, (unsigned long long)got);
        fprintf(stderr, "ok: flood of %llu PINGs and 20000 doorbells: stalled, then every PONG delivered\n",
                (unsigned long long)sent);
        h_raw_close(&r);
}

static void attack_generate_flood(void) {
        struct h_raw r;
        struct dsv_msg m = {.type = DSV_MSG_GENERATE};
        int32_t prompt[] = {0, 1, 2};
        uint8_t buf[4096];
        struct dsv_ipc_record h;
        int eagain = 0, done = 0;
        uint64_t t0 = h_now_ns();
        h_raw_open(&r, d.socket, 1 << 16, 1 << 20, "hostile");
        m.u.generate.tokens = prompt;
        m.u.generate.n_tokens = 3;
        m.u.generate.max_tokens = 2;
        m.u.generate.top_p = 1;
        for (int i = 0; i < 40; i++) {
                m.u.generate.id = (uint64_t)i + 1;
                h_raw_write_msg(&r, &m, 0);
        }
        while (eagain + done < 40 && h_now_ns() - t0 < 20000000000ull) {
                struct dsv_msg x;
                int k = dsv_ring_read(&r.shm.comp, &h, buf, sizeof(buf));
                if (k <= 0) {
                        usleep(1000);
                        continue;
                }
                CHECK(dsv_msg_decode(h.type, buf, h.length, &x, NULL, 0) == 0, "bad record");
                if (h.type == DSV_MSG_ERROR) {
                        CHECK(x.u.error.code == EAGAIN, "error %d", x.u.error.code);
                        eagain++;
                } else if (h.type == DSV_MSG_DONE) {
                        done++;
                }
                dsv_msg_release(&x);
        }
        CHECK(eagain > 0 && done > 0 && eagain + done == 40, "per-uid limit: %d refused, %d done", eagain, done);
        fprintf(stderr, "ok: 40 GENERATEs at once: %d served, %d refused with EAGAIN (max-requests-per-uid)\n", done, eagain);
        h_raw_close(&r);
}

static void attack_handshake(void) {
        uint8_t junk[64];
        struct h_raw r;
        int fd;
        memset(junk, 0xa5, sizeof(junk));
        r.fd = h_raw_socket(d.socket);
        CHECK(send(r.fd, junk, sizeof(junk), MSG_NOSIGNAL) == sizeof(junk), "send");
        h_raw_expect_drop(&r, EPROTO, "garbage instead of HELLO");
        close(r.fd);
        {
                static uint8_t big[8192];
                r.fd = h_raw_socket(d.socket);
                CHECK(send(r.fd, big, sizeof(big), MSG_NOSIGNAL) == sizeof(big), "send");
                h_raw_expect_drop_saying(&r, EMSGSIZE, "the limit is 4096", "an 8 KiB HELLO");
                close(r.fd);
        }
        {
                struct dsv_msg m = {.type = DSV_MSG_HELLO};
                uint8_t out[512];
                size_t n;
                m.u.hello.version_major = 2;
                n = h_raw_record(out, DSV_MSG_HELLO, 0, &m);
                r.fd = h_raw_socket(d.socket);
                CHECK(send(r.fd, out, n, MSG_NOSIGNAL) == (ssize_t)n, "send");
                h_raw_expect_drop(&r, EPROTONOSUPPORT, "protocol version 2");
                close(r.fd);
        }
        /* each framing check names itself */
        {
                struct dsv_msg m = {.type = DSV_MSG_HELLO};
                uint8_t out[512];
                struct dsv_ipc_record h;
                size_t n;
                m.u.hello.version_major = 1;
                n = h_raw_record(out, DSV_MSG_HELLO, 0, &m);
                r.fd = h_raw_socket(d.socket);
                CHECK(send(r.fd, out, 5, MSG_NOSIGNAL) == 5, "send");
                h_raw_expect_drop_saying(&r, EPROTO, "shorter than a record header", "a 5-byte HELLO");
                close(r.fd);
                memcpy(&h, out, sizeof(h));
                h.type = DSV_MSG_WELCOME;
                memcpy(out, &h, sizeof(h));
                r.fd = h_raw_socket(d.socket);
                CHECK(send(r.fd, out, n, MSG_NOSIGNAL) == (ssize_t)n, "send");
                h_raw_expect_drop_saying(&r, EPROTO, "got type 2 (WELCOME)", "a WELCOME as the first record");
                close(r.fd);
                h.type = DSV_MSG_HELLO;
                h.length += 100;
                memcpy(out, &h, sizeof(h));
                r.fd = h_raw_socket(d.socket);
                CHECK(send(r.fd, out, n, MSG_NOSIGNAL) == (ssize_t)n, "send");
                h_raw_expect_drop_saying(&r, EPROTO, "length field says", "a HELLO longer than its datagram");
                close(r.fd);
                h.length -= 100;
                memcpy(out, &h, sizeof(h));
                memset(out + n, 0, 16);
                r.fd = h_raw_socket(d.socket);
                CHECK(send(r.fd, out, n + 16, MSG_NOSIGNAL) == (ssize_t)(n + 16), "send");
                h_raw_expect_drop_saying(&r, EPROTO, "padded to a multiple of 8", "16 bytes after HELLO");
                close(r.fd);
                h.flags = 0x0100;
                memcpy(out, &h, sizeof(h));
                r.fd = h_raw_socket(d.socket);
                CHECK(send(r.fd, out, n, MSG_NOSIGNAL) == (ssize_t)n, "send");
                h_raw_expect_drop_saying(&r, EOPNOTSUPP, "flags 0x0100", "a HELLO with a critical flag");
                close(r.fd);
                h.flags = 0;
                memcpy(out, &h, sizeof(h));
                out[sizeof(h)] = 0xc1; /* never used in msgpack */
                r.fd = h_raw_socket(d.socket);
                CHECK(send(r.fd, out, n, MSG_NOSIGNAL) == (ssize_t)n, "send");
                h_raw_expect_drop_saying(&r, EBADMSG, "malformed HELLO payload", "a HELLO payload that is not msgpack");
                close(r.fd);
        }
        r.fd = h_raw_socket(d.socket); /* says nothing */
        h_raw_expect_drop_saying(&r, ETIMEDOUT, "handshake-timeout-ms", "no HELLO within the handshake timeout");
        close(r.fd);
        /* ipc/PROTOCOL.md: handshake datagrams are records, and records are padded to 8 bytes */
        h_raw_open_padded(&r, d.socket);
        CHECK(r.shm.sub.capacity == DSV_IPC_RING_DEFAULT, "padded HELLO: rings %u", r.shm.sub.capacity);
        h_raw_close(&r);
        /* absurd ring sizes are clamped */
        h_raw_open(&r, d.socket, 0xffffffffu, 0, "hostile");
        CHECK(r.shm.sub.capacity == (16u << 20) && r.shm.comp.capacity == DSV_IPC_RING_DEFAULT, "rings %u/%u",
              r.shm.sub.capacity, r.shm.comp.capacity);
        h_raw_close(&r);
        (void)fd;
}

/* ------------------------------------------------------------------ the good client */

static pid_t good_client(int *stop_fd) {
        int p[2];
        pid_t pid;
        CHECK(pipe(p) == 0, "pipe");
        pid = fork();
        if (pid == 0) {
                int32_t prompt[] = {0, 21, 22, 23}, ref[12];
                struct dsv32_request q = {.struct_size = sizeof(q), .tokens = prompt, .n_tokens = 4, .max_tokens = 12,
                                          .flags = DSV32_REQ_IGNORE_EOS};
                struct dsv32_connect_opts o = {.struct_size = sizeof(o), .socket_path = d.socket};
                dsv32_client *c;
                int rounds = 0;
                close(p[1]);
                if (h_reference(prompt, 4, 12, ref, NULL) != 12 || dsv32_connect(&o, &c) < 0)
                        _exit(2);
                for (;;) {
                        struct pollfd pf = {.fd = p[0], .events = POLLIN};
                        int32_t got[64];
                        int n = 0;
                        uint64_t id;
                        bool fin = false, busy = false;
                        if (dsv32_submit(c, &q, &id) < 0) {
                                fprintf(stderr, "good client: %s\n", dsv32_last_error(c));
                                _exit(1);
                        }
                        while (!fin) {
                                struct dsv32_event ev[8];
                                int k;
                                if (dsv32_wait(c, 10000) <= 0)
                                        _exit(3);
                                k = dsv32_poll_events(c, ev, 8);
                                if (k < 0)
                                        _exit(4);
                                for (int j = 0; j < k; j++) {
                                        if (ev[j].type == DSV32_EVENT_TOKENS)
                                                for (size_t t = 0; t < ev[j].n_tokens && n < 64; t++)
                                                        got[n++] = ev[j].tokens[t];
                                        else if (ev[j].type == DSV32_EVENT_DONE)
                                                fin = true;
                                        else if (ev[j].error == -EAGAIN) /* the flood shares our uid's limit */
                                                fin = busy = true;
                                        else {
                                                fprintf(stderr, "good client: error %d: %s\n", ev[j].error, ev[j].message);
                                                _exit(5);
                                        }
                                }
                        }
                        if (busy) {
                                usleep(10000);
                                continue;
                        }
                        if (n != 12 || memcmp(got, ref, sizeof(ref)) != 0) {
                                fprintf(stderr, "good client: wrong tokens in round %d\n", rounds);
                                _exit(6);
                        }
                        rounds++;
                        if (poll(&pf, 1, 0) > 0) {
                                fprintf(stderr, "good client: %d correct generations during the attacks\n", rounds);
                                _exit(rounds > 0 ? 0 : 7);
                        }
                }
        }
        close(p[0]);
        *stop_fd = p[1];
        return pid;
}

int main(void) {
        static const char *const args[] = {"--handshake-timeout-ms", "300", "--max-requests-per-uid", "8", NULL};
        static const uint8_t huge_array[] = {0x82, 0x00, 0x01, 0x02, 0xdd, 0xff, 0xff, 0xff, 0xff};
        static const uint8_t huge_map[] = {0xdf, 0x7f, 0xff, 0xff, 0xff, 0x00, 0x01};
        static const uint8_t wrong_type[] = {0x81, 0x00, 0xa3, 'a', 'b', 'c'};
        static const uint8_t truncated[] = {0x83, 0x00, 0x01, 0x04};
        static const uint8_t crit_field[] = {0x82, 0x00, 0x07, 0xcc, 0xf0, 0x01};
        static const uint8_t unknown_type[] = {0x81, 0x00, 0x07};
        dsv32_client *c;
        struct dsv32_connect_opts o = {.struct_size = sizeof(o)};
        int stop_fd, st;
        pid_t good;

        h_init("hostile", 240);
        h_daemon_start(&d, args, NULL);
        good = good_client(&stop_fd);

        attack_length_past_ring();
        attack_tail_backwards();
        attack_tail_beyond();
        attack_truncated_frame();
        attack_payload("array count 2^32-1", DSV_MSG_GENERATE, huge_array, sizeof(huge_array), EBADMSG, true);
        attack_payload("map count 2^31-1", DSV_MSG_GENERATE, huge_map, sizeof(huge_map), EBADMSG, true);
        attack_payload("a string where an id belongs", DSV_MSG_PING, wrong_type, sizeof(wrong_type), EPROTO, true);
        attack_payload("truncated msgpack", DSV_MSG_GENERATE, truncated, sizeof(truncated), EBADMSG, true);
        attack_payload("unknown message type 999", 999, unknown_type, sizeof(unknown_type), ENOSYS, false);
        attack_payload("unknown critical field", DSV_MSG_STATS, crit_field, sizeof(crit_field), EOPNOTSUPP, false);
        attack_flags();
        attack_client_message();
        attack_comp_head();
        attack_changing_records();
        attack_flood();
        attack_generate_flood();
        attack_handshake();

        if (write(stop_fd, "x", 1) != 1)
                fprintf(stderr, "the good client is gone already\n");
        waitpid(good, &st, 0);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the good client failed during the attacks (status 0x%x)", st);
        CHECK(kill(d.pid, 0) == 0, "dsv32d is gone");
        o.socket_path = d.socket;
        CHECK(dsv32_connect(&o, &c) == 0 && dsv32_ping(c, NULL) == 0, "a new client is not served after the attacks");
        dsv32_disconnect(c);
        CHECK(h_daemon_stop(&d, 10) == 0, "dsv32d did not exit 0 on SIGTERM");
        return 0;
}
