/* A raw protocol client for the hostile-input tests: it speaks the handshake by hand, then
 * writes whatever the test wants into its rings and socket, and checks how the daemon
 * answers. Every failed check stops the test (harness.h). */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "ipc/proto.h"
#include "ipc/ring.h"

struct h_raw {
        int fd;
        struct dsv_shm shm;
};

/* A SOCK_SEQPACKET connection to the daemon's socket. */
int h_raw_socket(const char *path);
/* A record (header + msgpack of m) in buf[0..4096); returns its length. */
size_t h_raw_record(uint8_t *buf, uint16_t type, uint16_t flags, const struct dsv_msg *m);
/* Connects, sends HELLO asking for rings of sub/comp bytes, attaches the memfd of WELCOME. */
void h_raw_open(struct h_raw *r, const char *socket_path, uint32_t sub, uint32_t comp, const char *name);
/* Like h_raw_open with default rings, but the HELLO record is zero-padded to a multiple of
 * 8 bytes as records are in the rings (its payload length is not one). */
void h_raw_open_padded(struct h_raw *r, const char *socket_path);
void h_raw_close(struct h_raw *r);
/* One record into the submission ring, then the doorbell. */
void h_raw_write(struct h_raw *r, uint16_t type, uint16_t flags, const void *p, size_t len);
void h_raw_write_msg(struct h_raw *r, const struct dsv_msg *m, uint16_t flags);
/* The daemon sends an ERROR datagram carrying `code` and closes the connection. */
void h_raw_expect_drop(struct h_raw *r, int code, const char *what);
/* The same, and the ERROR's message contains `needle` (the check that failed). */
void h_raw_expect_drop_saying(struct h_raw *r, int code, const char *needle, const char *what);
/* The daemon answers with an ERROR record (code) in the completion ring and keeps the
 * connection: a PING sent now gets its PONG (the two may come in either order). */
void h_raw_expect_ring_error(struct h_raw *r, int code, const char *what);
