/* The bootstrap's frames (daemon/cluster/wire.c): every encoder's output decodes to what was
 * encoded; a frame fed byte by byte is incomplete until its last byte; and the decoder
 * refuses what it must: bad magic (at once, from the first bytes), unknown type, flags,
 * oversized length, fields longer than the payload, trailing bytes, over-long config or
 * id, control characters in text. */
#include "config.h"

#include "daemon/cluster/wire.h"
#include "daemon/util.h"
#include "tests/check.h"

static uint8_t buf[DSV_WIRE_HEADER + DSV_WIRE_MAX_PAYLOAD + 64];

static void put_be32(uint8_t *p, uint32_t v) {
        p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

/* Every prefix of a valid frame is "incomplete", the whole of it decodes. */
static void check_prefixes(const uint8_t *f, int n, const char *what) {
        struct dsv_wire_msg m;
        for (int k = 0; k < n; k++)
                if (dsv_wire_decode(f, (size_t)k, &m) != 0) {
                        CHECK(false, "%s: a prefix of %d bytes is not 'incomplete'", what, k);
                        return;
                }
        CHECK(dsv_wire_decode(f, (size_t)n, &m) == n, "%s decodes", what);
}

int main(void) {
        struct dsv_wire_msg m;
        uint8_t fp[DSV_FINGERPRINT_BYTES];
        const char cfg[] = "ranks=8 parallel=ep,dp";
        uint8_t id[128];
        int n;

        for (int i = 0; i < DSV_FINGERPRINT_BYTES; i++)
                fp[i] = (uint8_t)(0xa0 + i);
        for (int i = 0; i < 128; i++)
                id[i] = (uint8_t)(255 - i);

        n = dsv_wire_hello(buf, sizeof(buf), 4, 3, fp, cfg, strlen(cfg));
        CHECK(n == DSV_WIRE_HEADER + 12 + 32 + 4 + (int)strlen(cfg), "HELLO is %d bytes", n);
        check_prefixes(buf, n, "HELLO");
        CHECK(dsv_wire_decode(buf, (size_t)n, &m) == n && m.type == DSV_WIRE_HELLO && m.hello.version == DSV_WIRE_VERSION &&
                      m.hello.nodes == 4 && m.hello.node_rank == 3 && memcmp(m.hello.fingerprint, fp, 32) == 0 &&
                      m.hello.config_len == strlen(cfg) && memcmp(m.hello.config, cfg, strlen(cfg)) == 0,
              "HELLO round trip");
        /* two frames back to back: the first is taken alone */
        int n2 = dsv_wire_bye(buf + n, sizeof(buf) - (size_t)n);
        CHECK(n2 == DSV_WIRE_HEADER && dsv_wire_decode(buf, (size_t)(n + n2), &m) == n, "a frame followed by another");
        /* trailing bytes inside the stated length */
        put_be32(buf + 8, (uint32_t)(n - DSV_WIRE_HEADER + 1));
        buf[n] = 0;
        CHECK(dsv_wire_decode(buf, (size_t)n + 1, &m) == -EBADMSG, "HELLO with a byte too many in its payload");
        /* a config length past the payload */
        n = dsv_wire_hello(buf, sizeof(buf), 4, 3, fp, cfg, strlen(cfg));
        put_be32(buf + DSV_WIRE_HEADER + 12 + 32, 1000);
        CHECK(dsv_wire_decode(buf, (size_t)n, &m) == -EBADMSG, "a config length past the payload");
        /* control characters in the config */
        n = dsv_wire_hello(buf, sizeof(buf), 4, 3, fp, "a\nb", 3);
        CHECK(n > 0 && dsv_wire_decode(buf, (size_t)n, &m) == -EBADMSG, "a newline in the config");
        CHECK(dsv_wire_hello(buf, sizeof(buf), 4, 3, fp, cfg, DSV_WIRE_MAX_CONFIG + 1) == -EINVAL, "config over the limit");
        CHECK(dsv_wire_hello(buf, 20, 4, 3, fp, cfg, strlen(cfg)) == -ENOBUFS, "HELLO into a small buffer");

        n = dsv_wire_welcome(buf, sizeof(buf), 4, 1000, 10000, id, sizeof(id));
        check_prefixes(buf, n, "WELCOME");
        CHECK(dsv_wire_decode(buf, (size_t)n, &m) == n && m.type == DSV_WIRE_WELCOME && m.welcome.nodes == 4 &&
                      m.welcome.heartbeat_ms == 1000 && m.welcome.timeout_ms == 10000 && m.welcome.id_len == 128 &&
                      memcmp(m.welcome.id, id, 128) == 0,
              "WELCOME round trip");
        CHECK(dsv_wire_welcome(buf, sizeof(buf), 4, 1, 2, id, DSV_WIRE_MAX_ID + 1) == -EINVAL, "id over the limit");

        n = dsv_wire_refuse(buf, sizeof(buf), DSV_REFUSE_FINGERPRINT, "another model");
        CHECK(dsv_wire_decode(buf, (size_t)n, &m) == n && m.type == DSV_WIRE_REFUSE && m.refuse.reason == DSV_REFUSE_FINGERPRINT &&
                      m.refuse.text_len == 13 && memcmp(m.refuse.text, "another model", 13) == 0,
              "REFUSE round trip");
        n = dsv_wire_heartbeat(buf, sizeof(buf), 0x0102030405060708ull);
        CHECK(dsv_wire_decode(buf, (size_t)n, &m) == n && m.type == DSV_WIRE_HEARTBEAT &&
                      m.heartbeat.seq == 0x0102030405060708ull,
              "HEARTBEAT round trip");
        n = dsv_wire_fail(buf, sizeof(buf), 2, ECONNRESET, "lost node 2");
        CHECK(dsv_wire_decode(buf, (size_t)n, &m) == n && m.type == DSV_WIRE_FAIL && m.fail.node == 2 &&
                      m.fail.err == ECONNRESET && m.fail.text_len == 11,
              "FAIL round trip");

        /* header checks */
        n = dsv_wire_bye(buf, sizeof(buf));
        buf[0] = 'G';
        CHECK(dsv_wire_decode(buf, 1, &m) == -EBADMSG, "a wrong magic is refused from its first byte");
        CHECK(dsv_wire_decode((const uint8_t *)"GET / HTTP/1.0\r\n", 16, &m) == -EBADMSG, "an HTTP request");
        n = dsv_wire_bye(buf, sizeof(buf));
        buf[5] = DSV_WIRE_TYPE_MAX;
        CHECK(dsv_wire_decode(buf, (size_t)n, &m) == -EBADMSG, "an unknown type");
        buf[5] = 0;
        CHECK(dsv_wire_decode(buf, (size_t)n, &m) == -EBADMSG, "type 0");
        n = dsv_wire_bye(buf, sizeof(buf));
        buf[7] = 1;
        CHECK(dsv_wire_decode(buf, (size_t)n, &m) == -EBADMSG, "flags set");
        n = dsv_wire_bye(buf, sizeof(buf));
        put_be32(buf + 8, DSV_WIRE_MAX_PAYLOAD + 1);
        CHECK(dsv_wire_decode(buf, (size_t)n, &m) == -EBADMSG, "a length over the limit is refused before the payload");
        n = dsv_wire_heartbeat(buf, sizeof(buf), 7);
        put_be32(buf + 8, 4);
        CHECK(dsv_wire_decode(buf, DSV_WIRE_HEADER + 4, &m) == -EBADMSG, "a HEARTBEAT of 4 bytes");
        CHECK(dsv_wire_decode(buf, 0, &m) == 0, "nothing yet is incomplete");
        return test_result("test-cluster-wire");
}
