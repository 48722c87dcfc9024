/* A client connection as the daemon sees it: socket, credentials, the shared memfd, and
 * the per-uid accounting it belongs to. Shared by the event loop (which owns the socket
 * and consumes the submission ring) and the engine thread (which streams tokens into the
 * completion ring): the completion ring has two writers in this process, so every write to
 * it, and the doorbell that follows, happens under `lock` (DESIGN.md section 2: never two
 * producers without a lock). Reference-counted: the event loop holds one reference until
 * hangup, each request in the engine one more; the mapping is released with the last. */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "daemon/server/access.h"
#include "ipc/proto.h"
#include "ipc/ring.h"

/* Per-uid accounting. Entries live as long as the daemon (bounded by the uids that ever
 * connected, capped by the table size). */
struct dsv_uid_entry {
        uid_t uid;
        int connections;  /* event loop only */
        int requests;     /* in flight; atomic (the engine decrements) */
};

enum dsv_conn_state {
        DSV_CONN_HANDSHAKE, /* accepted, waiting for HELLO */
        DSV_CONN_ACTIVE,    /* WELCOME sent, rings in use */
        DSV_CONN_CLOSED,
};

struct dsv_conn {
        int refs; /* atomic */
        pthread_mutex_t lock;
        /* under lock */
        int fd;              /* -1 once the event loop closed it */
        bool dead;           /* hung up or dropped: stop writing */
        bool engine_parked;  /* the engine has output waiting for completion-ring space */
        struct dsv_wbuf wbuf; /* encoder scratch for completion-ring records */
        uint64_t doorbells_sent;
        /* set once before the connection is shared with the engine */
        struct dsv_shm shm;
        struct dsv_peer peer;
        struct dsv_uid_entry *ue;
        uint64_t serial;
        char name[DSV_NAME_MAX + 1];
        /* event loop only */
        enum dsv_conn_state state;
        uint64_t t_accept_ns;
        struct dsv_conn *prev, *next;
        bool active;        /* in the loop's spin set */
        bool loop_blocked;  /* a reply of the loop waits for completion-ring space */
        struct dsv_wbuf pending; /* that reply, encoded */
        uint16_t pending_type;
        uint64_t records_in;
};

struct dsv_conn *dsv_conn_new(int fd);
struct dsv_conn *dsv_conn_ref(struct dsv_conn *c);
void dsv_conn_unref(struct dsv_conn *c);
bool dsv_conn_is_dead(struct dsv_conn *c);

/* Writes one message to the completion ring and rings the doorbell when the client
 * sleeps. 0; -EAGAIN: no space now (producer_waiting is set, so the client's doorbell will
 * tell the event loop when it consumed; with `engine` the connection is marked parked for
 * the engine); -ECONNRESET: the client is gone; -EMSGSIZE: larger than a record may be;
 * -EPROTO: the client corrupted its ring (the socket is shut down, the loop drops it). */
int dsv_conn_send(struct dsv_conn *c, const struct dsv_msg *m, bool engine);
/* Same for an already encoded payload. */
int dsv_conn_send_raw(struct dsv_conn *c, uint16_t type, const void *payload, size_t len, bool engine);
/* Fills *m as an ERROR for request id (0: the connection) with the formatted message in
 * text[DSV_ERROR_MESSAGE_MAX]. */
void dsv_msg_error_v(struct dsv_msg *m, char *text, uint64_t id, int code, const char *fmt, va_list ap)
        __attribute__((format(printf, 5, 0)));
/* An ERROR record (code: positive errno) for request id (0: the connection). */
int dsv_conn_send_error(struct dsv_conn *c, uint64_t id, int code, bool engine, const char *fmt, ...)
        __attribute__((format(printf, 5, 6)));
/* Encodes an ERROR record (header + payload) into buf for a socket datagram; returns its
 * length or a negative errno. */
int dsv_error_datagram(void *buf, size_t cap, uint64_t id, int code, const char *msg);
