/* Daemon-side connections (see conn.h). */
#include "config.h"

#include "daemon/server/conn.h"

#include <stdarg.h>
#include <sys/socket.h>

#include "daemon/util.h"

struct dsv_conn *dsv_conn_new(int fd) {
        struct dsv_conn *c = calloc(1, sizeof(*c));
        if (!c)
                return NULL;
        c->refs = 1;
        c->fd = fd;
        pthread_mutex_init(&c->lock, NULL);
        return c;
}

struct dsv_conn *dsv_conn_ref(struct dsv_conn *c) {
        __atomic_add_fetch(&c->refs, 1, __ATOMIC_RELAXED);
        return c;
}

void dsv_conn_unref(struct dsv_conn *c) {
        if (!c || __atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) > 0)
                return;
        if (c->fd >= 0)
                close(c->fd);
        dsv_shm_unmap(&c->shm);
        dsv_wbuf_free(&c->wbuf);
        dsv_wbuf_free(&c->pending);
        pthread_mutex_destroy(&c->lock);
        free(c);
}

bool dsv_conn_is_dead(struct dsv_conn *c) { return __atomic_load_n(&c->dead, __ATOMIC_ACQUIRE); }

static int send_locked(struct dsv_conn *c, uint16_t type, const void *p, size_t len, bool engine) {
        struct dsv_ring *r = &c->shm.comp;
        int e;

        if (c->dead || !c->shm.base)
                return -ECONNRESET;
        if (len > r->max_record)
                return -EMSGSIZE;
        e = dsv_ring_write(r, type, 0, p, (uint32_t)len);
        if (e == -EAGAIN) {
                /* ask the client to ring when it consumed; if space appeared meanwhile, retry */
                if (dsv_ring_producer_sleep_begin(r, dsv_ring_record_bytes((uint32_t)len))) {
                        dsv_ring_producer_sleep_end(r);
                        e = dsv_ring_write(r, type, 0, p, (uint32_t)len);
                }
                if (e == -EAGAIN && engine)
                        c->engine_parked = true;
        }
        if (e == -EPROTO) {
                /* the client moved our consumer's head: drop it (the loop sees the hangup) */
                __atomic_store_n(&c->dead, true, __ATOMIC_RELEASE);
                if (c->fd >= 0)
                        shutdown(c->fd, SHUT_RDWR);
                return e;
        }
        if (e == 0 && dsv_ring_consumer_needs_wake(r) && c->fd >= 0) {
                dsv_ipc_doorbell(c->fd);
                __atomic_fetch_add(&c->doorbells_sent, 1, __ATOMIC_RELAXED); /* STATS reads it from the loop */
        }
        return e;
}

int dsv_conn_send_raw(struct dsv_conn *c, uint16_t type, const void *payload, size_t len, bool engine) {
        int e;
        pthread_mutex_lock(&c->lock);
        e = send_locked(c, type, payload, len, engine);
        pthread_mutex_unlock(&c->lock);
        return e;
}

int dsv_conn_send(struct dsv_conn *c, const struct dsv_msg *m, bool engine) {
        int e;
        pthread_mutex_lock(&c->lock);
        c->wbuf.len = 0;
        c->wbuf.err = 0;
        e = dsv_msg_encode(m, &c->wbuf);
        if (e >= 0)
                e = send_locked(c, m->type, c->wbuf.data, c->wbuf.len, engine);
        pthread_mutex_unlock(&c->lock);
        return e;
}

void dsv_msg_error_v(struct dsv_msg *m, char *text, uint64_t id, int code, const char *fmt, va_list ap) {
        vsnprintf(text, DSV_ERROR_MESSAGE_MAX, fmt, ap);
        *m = (struct dsv_msg){.type = DSV_MSG_ERROR};
        m->u.error.id = id;
        m->u.error.code = code;
        m->u.error.message = text;
        m->u.error.message_len = (uint32_t)strlen(text);
}

int dsv_conn_send_error(struct dsv_conn *c, uint64_t id, int code, bool engine, const char *fmt, ...) {
        struct dsv_msg m;
        char text[DSV_ERROR_MESSAGE_MAX];
        va_list ap;

        va_start(ap, fmt);
        dsv_msg_error_v(&m, text, id, code, fmt, ap);
        va_end(ap);
        return dsv_conn_send(c, &m, engine);
}

int dsv_error_datagram(void *buf, size_t cap, uint64_t id, int code, const char *msg) {
        struct dsv_msg m = {.type = DSV_MSG_ERROR};
        struct dsv_ipc_record h = {.type = DSV_MSG_ERROR};
        struct dsv_wbuf w;
        int e;

        if (cap < sizeof(h))
                return -ENOBUFS;
        m.u.error.id = id;
        m.u.error.code = code;
        m.u.error.message = msg;
        m.u.error.message_len = (uint32_t)MIN(strlen(msg), (size_t)DSV_ERROR_MESSAGE_MAX);
        dsv_wbuf_fixed(&w, (uint8_t *)buf + sizeof(h), cap - sizeof(h));
        e = dsv_msg_encode(&m, &w);
        if (e < 0)
                return e;
        h.length = (uint32_t)w.len;
        memcpy(buf, &h, sizeof(h));
        return (int)(sizeof(h) + w.len);
}
