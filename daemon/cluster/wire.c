/* Encoding and decoding of the bootstrap's frames (layout in wire.h). The decoder trusts
 * nothing: the header is checked before the payload is looked at, every field length is
 * checked against the payload before it is read, and a payload must be used exactly. */
#include "config.h"

#include "daemon/cluster/wire.h"

#include <errno.h>
#include <string.h>

const char *dsv_wire_type_name(int type) {
        static const char *const n[DSV_WIRE_TYPE_MAX] = {"?", "HELLO", "WELCOME", "REFUSE", "HEARTBEAT", "FAIL", "BYE"};
        return type > 0 && type < DSV_WIRE_TYPE_MAX ? n[type] : "?";
}

/* ------------------------------------------------------------------ reading */
struct rd {
        const uint8_t *p;
        size_t left;
        bool bad;
};

static uint32_t rd_u32(struct rd *r) {
        if (r->left < 4) {
                r->bad = true;
                return 0;
        }
        uint32_t v = (uint32_t)r->p[0] << 24 | (uint32_t)r->p[1] << 16 | (uint32_t)r->p[2] << 8 | r->p[3];
        r->p += 4;
        r->left -= 4;
        return v;
}

static uint64_t rd_u64(struct rd *r) {
        uint64_t hi = rd_u32(r);
        return hi << 32 | rd_u32(r);
}

static const uint8_t *rd_bytes(struct rd *r, size_t n) {
        const uint8_t *p = r->p;
        if (r->left < n) {
                r->bad = true;
                return NULL;
        }
        r->p += n;
        r->left -= n;
        return p;
}

/* A length field followed by that many bytes, at most max; text holds no control
 * characters (it ends up in logs), UTF-8 passes. */
static const uint8_t *rd_blob(struct rd *r, uint32_t max, bool text, uint32_t *len) {
        *len = rd_u32(r);
        if (r->bad || *len > max) {
                r->bad = true;
                return NULL;
        }
        const uint8_t *p = rd_bytes(r, *len);
        for (uint32_t i = 0; p && text && i < *len; i++)
                if (p[i] < 0x20 || p[i] == 0x7f)
                        r->bad = true;
        return r->bad ? NULL : p;
}

int dsv_wire_decode(const uint8_t *buf, size_t len, struct dsv_wire_msg *m) {
        struct rd h = {buf, len, false};
        uint32_t magic, plen;
        uint16_t type, flags;

        if (len == 0)
                return 0;
        if (len < DSV_WIRE_HEADER) {
                /* a wrong magic shows as soon as its bytes are there */
                static const uint8_t want[4] = {0x44, 0x53, 0x56, 0x42};
                return memcmp(buf, want, len < 4 ? len : 4) == 0 ? 0 : -EBADMSG;
        }
        magic = rd_u32(&h);
        type = (uint16_t)(buf[4] << 8 | buf[5]);
        flags = (uint16_t)(buf[6] << 8 | buf[7]);
        h.p += 4;
        h.left -= 4;
        plen = rd_u32(&h);
        if (magic != DSV_WIRE_MAGIC || type == 0 || type >= DSV_WIRE_TYPE_MAX || flags != 0 || plen > DSV_WIRE_MAX_PAYLOAD)
                return -EBADMSG;
        if (len - DSV_WIRE_HEADER < plen)
                return 0;

        struct rd r = {buf + DSV_WIRE_HEADER, plen, false};
        memset(m, 0, sizeof(*m));
        m->type = (enum dsv_wire_type)type;
        switch (m->type) {
        case DSV_WIRE_HELLO:
                m->hello.version = rd_u32(&r);
                m->hello.nodes = rd_u32(&r);
                m->hello.node_rank = rd_u32(&r);
                m->hello.fingerprint = rd_bytes(&r, DSV_FINGERPRINT_BYTES);
                m->hello.config = (const char *)rd_blob(&r, DSV_WIRE_MAX_CONFIG, true, &m->hello.config_len);
                break;
        case DSV_WIRE_WELCOME:
                m->welcome.nodes = rd_u32(&r);
                m->welcome.heartbeat_ms = rd_u32(&r);
                m->welcome.timeout_ms = rd_u32(&r);
                m->welcome.id = rd_blob(&r, DSV_WIRE_MAX_ID, false, &m->welcome.id_len);
                break;
        case DSV_WIRE_REFUSE:
                m->refuse.reason = rd_u32(&r);
                m->refuse.text = (const char *)rd_blob(&r, DSV_WIRE_MAX_TEXT, true, &m->refuse.text_len);
                break;
        case DSV_WIRE_HEARTBEAT:
                m->heartbeat.seq = rd_u64(&r);
                break;
        case DSV_WIRE_FAIL:
                m->fail.node = rd_u32(&r);
                m->fail.err = rd_u32(&r);
                m->fail.text = (const char *)rd_blob(&r, DSV_WIRE_MAX_TEXT, true, &m->fail.text_len);
                break;
        case DSV_WIRE_BYE:
        default:
                break;
        }
        if (r.bad || r.left != 0)
                return -EBADMSG;
        return (int)(DSV_WIRE_HEADER + plen);
}

/* ------------------------------------------------------------------ writing */
struct wr {
        uint8_t *p;
        size_t cap, n;
};

static void wr_u32(struct wr *w, uint32_t v) {
        if (w->n + 4 <= w->cap) {
                w->p[w->n] = (uint8_t)(v >> 24);
                w->p[w->n + 1] = (uint8_t)(v >> 16);
                w->p[w->n + 2] = (uint8_t)(v >> 8);
                w->p[w->n + 3] = (uint8_t)v;
        }
        w->n += 4;
}

static void wr_bytes(struct wr *w, const void *b, size_t n) {
        if (n && w->n + n <= w->cap)
                memcpy(w->p + w->n, b, n);
        w->n += n;
}

static void wr_blob(struct wr *w, const void *b, size_t n) {
        wr_u32(w, (uint32_t)n);
        wr_bytes(w, b, n);
}

/* Starts a frame; finish() fills in the length. */
static void start(struct wr *w, uint8_t *out, size_t cap, enum dsv_wire_type type) {
        *w = (struct wr){out, cap, 0};
        wr_u32(w, DSV_WIRE_MAGIC);
        wr_u32(w, (uint32_t)type << 16);
        wr_u32(w, 0);
}

static int finish(struct wr *w) {
        if (w->n > w->cap)
                return -ENOBUFS;
        const uint32_t plen = (uint32_t)(w->n - DSV_WIRE_HEADER);
        w->p[8] = (uint8_t)(plen >> 24);
        w->p[9] = (uint8_t)(plen >> 16);
        w->p[10] = (uint8_t)(plen >> 8);
        w->p[11] = (uint8_t)plen;
        return (int)w->n;
}

static size_t text_len(const char *t) {
        size_t n = t ? strlen(t) : 0;
        return n > DSV_WIRE_MAX_TEXT ? DSV_WIRE_MAX_TEXT : n;
}

int dsv_wire_hello(uint8_t *out, size_t cap, uint32_t nodes, uint32_t node_rank, const uint8_t *fingerprint,
                   const char *config, size_t config_len) {
        struct wr w;
        if (!fingerprint || config_len > DSV_WIRE_MAX_CONFIG || (config_len && (!config || memchr(config, 0, config_len))))
                return -EINVAL;
        start(&w, out, cap, DSV_WIRE_HELLO);
        wr_u32(&w, DSV_WIRE_VERSION);
        wr_u32(&w, nodes);
        wr_u32(&w, node_rank);
        wr_bytes(&w, fingerprint, DSV_FINGERPRINT_BYTES);
        wr_blob(&w, config, config_len);
        return finish(&w);
}

int dsv_wire_welcome(uint8_t *out, size_t cap, uint32_t nodes, uint32_t heartbeat_ms, uint32_t timeout_ms, const void *id,
                     size_t id_len) {
        struct wr w;
        if (id_len > DSV_WIRE_MAX_ID || (id_len && !id))
                return -EINVAL;
        start(&w, out, cap, DSV_WIRE_WELCOME);
        wr_u32(&w, nodes);
        wr_u32(&w, heartbeat_ms);
        wr_u32(&w, timeout_ms);
        wr_blob(&w, id, id_len);
        return finish(&w);
}

int dsv_wire_refuse(uint8_t *out, size_t cap, uint32_t reason, const char *text) {
        struct wr w;
        start(&w, out, cap, DSV_WIRE_REFUSE);
        wr_u32(&w, reason);
        wr_blob(&w, text, text_len(text));
        return finish(&w);
}

int dsv_wire_heartbeat(uint8_t *out, size_t cap, uint64_t seq) {
        struct wr w;
        start(&w, out, cap, DSV_WIRE_HEARTBEAT);
        wr_u32(&w, (uint32_t)(seq >> 32));
        wr_u32(&w, (uint32_t)seq);
        return finish(&w);
}

int dsv_wire_fail(uint8_t *out, size_t cap, uint32_t node, uint32_t err, const char *text) {
        struct wr w;
        start(&w, out, cap, DSV_WIRE_FAIL);
        wr_u32(&w, node);
        wr_u32(&w, err);
        wr_blob(&w, text, text_len(text));
        return finish(&w);
}

int dsv_wire_bye(uint8_t *out, size_t cap) {
        struct wr w;
        start(&w, out, cap, DSV_WIRE_BYE);
        return finish(&w);
}
