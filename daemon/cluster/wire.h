/* The bootstrap's wire format (daemon/cluster): frames between node 0 and the other nodes
 * over TCP. Every byte comes from the network and is decoded here only, with every length
 * bounded before it is used (tests/fuzz/fuzz-cluster-wire.c).
 *
 *   frame   +--------+--------+--------+-----------+------------------+
 *           | magic  | type   | flags  | length    | payload (length) |
 *           | u32    | u16    | u16 =0 | u32       |                  |
 *           +--------+--------+--------+-----------+------------------+
 *   integers big-endian; magic "DSVB" (0x44535642); length <= DSV_WIRE_MAX_PAYLOAD.
 *
 *   HELLO     node -> 0   version u32 | nodes u32 | node_rank u32 | fingerprint [32]
 *                         | config_len u32 | config (config_len bytes)
 *   WELCOME   0 -> node   nodes u32 | heartbeat_ms u32 | timeout_ms u32 | id_len u32 | id
 *   REFUSE    0 -> node   reason u32 | text_len u32 | text
 *   HEARTBEAT both        seq u64
 *   FAIL      0 -> node   node u32 | errno u32 (positive) | text_len u32 | text
 *   BYE       both        (empty): the sender leaves the group on purpose
 * A payload must be exactly as long as its fields say; config and text hold no control
 * characters (they are logged). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DSV_WIRE_MAGIC 0x44535642u
#define DSV_WIRE_VERSION 1u
#define DSV_WIRE_HEADER 12
#define DSV_WIRE_MAX_CONFIG 4096
#define DSV_WIRE_MAX_ID 4096
#define DSV_WIRE_MAX_TEXT 1024
#define DSV_WIRE_MAX_PAYLOAD (64 + DSV_WIRE_MAX_CONFIG + DSV_WIRE_MAX_ID)
#define DSV_FINGERPRINT_BYTES 32

enum dsv_wire_type {
        DSV_WIRE_HELLO = 1,
        DSV_WIRE_WELCOME,
        DSV_WIRE_REFUSE,
        DSV_WIRE_HEARTBEAT,
        DSV_WIRE_FAIL,
        DSV_WIRE_BYE,
        DSV_WIRE_TYPE_MAX,
};
const char *dsv_wire_type_name(int type);

/* Why node 0 refused a node. */
enum dsv_wire_refusal {
        DSV_REFUSE_PROTOCOL = 1, /* not a HELLO of our protocol version */
        DSV_REFUSE_FINGERPRINT,  /* another model */
        DSV_REFUSE_CONFIG,       /* another configuration */
        DSV_REFUSE_NODE,         /* rank out of range, taken, or another group size */
        DSV_REFUSE_ADDRESS,      /* address not in cluster-peers */
        DSV_REFUSE_COMPLETE,     /* the group has formed already */
        DSV_REFUSE_MAX,
};

/* A decoded frame; strings and blobs point into the decoded buffer. */
struct dsv_wire_msg {
        enum dsv_wire_type type;
        union {
                struct {
                        uint32_t version, nodes, node_rank;
                        const uint8_t *fingerprint; /* DSV_FINGERPRINT_BYTES */
                        const char *config;         /* not NUL-terminated */
                        uint32_t config_len;
                } hello;
                struct {
                        uint32_t nodes, heartbeat_ms, timeout_ms;
                        const uint8_t *id;
                        uint32_t id_len;
                } welcome;
                struct {
                        uint32_t reason;
                        const char *text;
                        uint32_t text_len;
                } refuse;
                struct {
                        uint64_t seq;
                } heartbeat;
                struct {
                        uint32_t node, err;
                        const char *text;
                        uint32_t text_len;
                } fail;
        };
};

/* Decodes the frame at the start of buf: the bytes it takes (> 0), 0 when buf holds only
 * part of a frame (read more), -EBADMSG when the bytes are not a valid frame (bad magic,
 * unknown type, flags set, length over the limit, fields that do not add up). */
int dsv_wire_decode(const uint8_t *buf, size_t len, struct dsv_wire_msg *m);

/* Encoders: write one frame into out (cap bytes); the frame's length, or -ENOBUFS/-EINVAL. */
int dsv_wire_hello(uint8_t *out, size_t cap, uint32_t nodes, uint32_t node_rank, const uint8_t *fingerprint,
                   const char *config, size_t config_len);
int dsv_wire_welcome(uint8_t *out, size_t cap, uint32_t nodes, uint32_t heartbeat_ms, uint32_t timeout_ms, const void *id,
                     size_t id_len);
int dsv_wire_refuse(uint8_t *out, size_t cap, uint32_t reason, const char *text);
int dsv_wire_heartbeat(uint8_t *out, size_t cap, uint64_t seq);
int dsv_wire_fail(uint8_t *out, size_t cap, uint32_t node, uint32_t err, const char *text);
int dsv_wire_bye(uint8_t *out, size_t cap);
