/* A raw protocol client for the hostile-input tests (see raw.h). */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "tests/ipc/harness.h"
#include "tests/ipc/raw.h"

#define PING_ID 4242

int h_raw_socket(const char *path) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        CHECK(strlen(path) < sizeof(sa.sun_path), "socket path too long");
        memcpy(sa.sun_path, path, strlen(path) + 1);
        CHECK(fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0, "connect %s", path);
        return fd;
}

size_t h_raw_record(uint8_t *buf, uint16_t type, uint16_t flags, const struct dsv_msg *m) {
        struct dsv_ipc_record h = {.type = type, .flags = flags};
        struct dsv_wbuf w;
        dsv_wbuf_fixed(&w, buf + sizeof(h), 4096 - sizeof(h));
        CHECK(dsv_msg_encode(m, &w) == 0, "encode");
        h.length = (uint32_t)w.len;
        memcpy(buf, &h, sizeof(h));
        return sizeof(h) + w.len;
}

static void raw_open(struct h_raw *r, const char *socket_path, uint32_t sub, uint32_t comp, const char *name, bool pad) {
        struct dsv_msg m = {.type = DSV_MSG_HELLO};
        uint8_t out[4096], in[4096];
        union {
                struct cmsghdr a;
                char b[CMSG_SPACE(sizeof(int))];
        } cm;
        struct iovec iov = {.iov_base = in, .iov_len = sizeof(in)};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b, .msg_controllen = sizeof(cm.b)};
        struct pollfd p;
        struct cmsghdr *ch;
        int memfd = -1;
        size_t n;

        r->fd = h_raw_socket(socket_path);
        m.u.hello.version_major = 1;
        m.u.hello.sub_bytes = sub;
        m.u.hello.comp_bytes = comp;
        snprintf(m.u.hello.name, sizeof(m.u.hello.name), "%s", name);
        n = h_raw_record(out, DSV_MSG_HELLO, 0, &m);
        if (pad) {
                REQUIRE(n % 8 != 0, "pick a client name that leaves the HELLO unaligned (%zu bytes)", n);
                memset(out + n, 0, 8 - n % 8);
                n += 8 - n % 8;
        }
        CHECK(send(r->fd, out, n, MSG_NOSIGNAL) == (ssize_t)n, "send HELLO");
        p = (struct pollfd){.fd = r->fd, .events = POLLIN};
        CHECK(poll(&p, 1, 5000) == 1, "no WELCOME");
        CHECK(recvmsg(r->fd, &mh, MSG_CMSG_CLOEXEC) > 8, "recvmsg WELCOME");
        ch = CMSG_FIRSTHDR(&mh);
        CHECK(ch && ch->cmsg_type == SCM_RIGHTS, "no memfd");
        memcpy(&memfd, CMSG_DATA(ch), sizeof(int));
        CHECK(dsv_shm_attach(memfd, &r->shm) == 0, "attach");
        close(memfd);
}

void h_raw_open(struct h_raw *r, const char *socket_path, uint32_t sub, uint32_t comp, const char *name) {
        raw_open(r, socket_path, sub, comp, name, false);
}

void h_raw_open_padded(struct h_raw *r, const char *socket_path) {
        char name[16] = "padded";
        /* a name length that leaves the record unaligned: the payload grows by one per byte */
        for (int k = 0; k < 8; k++) {
                struct dsv_msg m = {.type = DSV_MSG_HELLO};
                uint8_t out[4096];
                m.u.hello.version_major = 1;
                snprintf(m.u.hello.name, sizeof(m.u.hello.name), "%s", name);
                if (h_raw_record(out, DSV_MSG_HELLO, 0, &m) % 8 != 0)
                        break;
                strcat(name, "x");
        }
        raw_open(r, socket_path, 0, 0, name, true);
}

void h_raw_close(struct h_raw *r) {
        close(r->fd);
        dsv_shm_unmap(&r->shm);
}

void h_raw_write(struct h_raw *r, uint16_t type, uint16_t flags, const void *p, size_t len) {
        CHECK(dsv_ring_write(&r->shm.sub, type, flags, p, (uint32_t)len) == 0, "ring write");
        dsv_ipc_doorbell(r->fd);
}

void h_raw_write_msg(struct h_raw *r, const struct dsv_msg *m, uint16_t flags) {
        struct dsv_wbuf w = {0};
        CHECK(dsv_msg_encode(m, &w) == 0, "encode");
        h_raw_write(r, m->type, flags, w.data, w.len);
        dsv_wbuf_free(&w);
}

void h_raw_expect_drop(struct h_raw *r, int code, const char *what) { h_raw_expect_drop_saying(r, code, NULL, what); }

void h_raw_expect_drop_saying(struct h_raw *r, int code, const char *needle, const char *what) {
        uint8_t buf[4096];
        struct pollfd p = {.fd = r->fd, .events = POLLIN};
        bool got_error = false, closed = false;
        uint64_t t0 = h_now_ns();

        while (!closed && h_now_ns() - t0 < 5000000000ull) {
                ssize_t n;
                if (poll(&p, 1, 100) <= 0)
                        continue;
                n = recv(r->fd, buf, sizeof(buf), MSG_DONTWAIT);
                if (n == 0 || (n < 0 && errno == ECONNRESET)) {
                        closed = true;
                } else if (n > 8) {
                        struct dsv_ipc_record h;
                        struct dsv_msg m;
                        memcpy(&h, buf, sizeof(h));
                        if (h.type == DSV_MSG_ERROR && dsv_msg_decode(DSV_MSG_ERROR, buf + 8, h.length, &m, NULL, 0) == 0) {
                                CHECK(m.u.error.code == code, "%s: error code %d (%.*s), want %d", what, m.u.error.code,
                                      (int)m.u.error.message_len, m.u.error.message, code);
                                CHECK(!needle || (m.u.error.message && memmem(m.u.error.message, m.u.error.message_len,
                                                                               needle, strlen(needle))),
                                      "%s: the message '%.*s' does not say '%s'", what, (int)m.u.error.message_len,
                                      m.u.error.message ? m.u.error.message : "", needle);
                                got_error = true;
                                dsv_msg_release(&m);
                        }
                }
        }
        CHECK(got_error, "%s: no ERROR datagram", what);
        CHECK(closed, "%s: the connection was not closed", what);
        fprintf(stderr, "ok: %s -> ERROR %d and drop\n", what, code);
}

void h_raw_expect_ring_error(struct h_raw *r, int code, const char *what) {
        uint8_t buf[1 << 16];
        struct dsv_ipc_record h;
        struct dsv_msg m = {.type = DSV_MSG_PING};
        bool err = false, pong = false;
        uint64_t t0 = h_now_ns();

        m.u.ping.id = PING_ID;
        h_raw_write_msg(r, &m, 0);
        /* the engine answers some requests, the event loop PING: either may come first */
        while (!(pong && err) && h_now_ns() - t0 < 5000000000ull) {
                struct dsv_msg x;
                int k = dsv_ring_read(&r->shm.comp, &h, buf, sizeof(buf));
                CHECK(k >= 0, "%s: completion ring broken", what);
                if (k == 0) {
                        usleep(1000);
                        continue;
                }
                CHECK(dsv_msg_decode(h.type, buf, h.length, &x, NULL, 0) == 0, "%s: bad completion record", what);
                if (h.type == DSV_MSG_ERROR) {
                        CHECK(x.u.error.code == code, "%s: error %d (%.*s), want %d", what, x.u.error.code,
                              (int)x.u.error.message_len, x.u.error.message, code);
                        err = true;
                } else if (h.type == DSV_MSG_PONG && x.u.ping.id == PING_ID) {
                        pong = true;
                } else if (h.type != DSV_MSG_PONG) {
                        CHECK(0, "%s: unexpected %s", what, dsv_msg_type_name(h.type));
                }
                dsv_msg_release(&x);
        }
        CHECK(err, "%s: no ERROR record", what);
        CHECK(pong, "%s: the connection stopped working", what);
        fprintf(stderr, "ok: %s -> ERROR %d, connection kept\n", what, code);
}
