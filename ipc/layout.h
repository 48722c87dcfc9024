/* The shared-memory ABI between dsv32d and a client: one sealed memfd per connection with a
 * header, two ring control blocks and two single-producer/single-consumer byte rings.
 * Offsets, never pointers; fixed-width little-endian fields (both ends run on one host);
 * reserved bytes are zero. Every offset below is pinned by a static_assert: changing one is
 * a protocol version change (ipc/PROTOCOL.md, "Shared memory").
 *
 *   0       +---------------------------------------------+
 *           | struct dsv_ipc_header (128 B)               |
 *   128     | reserved, zero                              |
 *   256     | struct dsv_ipc_ring_ctl  submission (256 B) |  client -> daemon
 *   512     | struct dsv_ipc_ring_ctl  completion (256 B) |  daemon -> client
 *   768     | reserved, zero                              |
 *   4096    +---------------------------------------------+
 *           | submission data, sub.capacity bytes         |
 *           +---------------------------------------------+
 *           | completion data, comp.capacity bytes        |
 *           +---------------------------------------------+  header.total_size
 *
 * Ring control block: four cache lines so that no two writers share one.
 *
 *   +0   u64 tail              bytes ever published   (written by the producer only)
 *   +64  u64 head              bytes ever consumed    (written by the consumer only)
 *   +128 u32 consumer_waiting  1: consumer is (about to be) asleep; set by the consumer,
 *                              cleared by the producer when it rings the doorbell
 *   +192 u32 producer_waiting  1: producer waits for space; set by the producer, cleared
 *                              by the consumer when it rings the doorbell
 *
 * Counters are free-running u64; the byte at counter c lives at data[c & (capacity - 1)].
 * A record (struct dsv_ipc_record + payload) starts 8-byte aligned and may wrap around the
 * end of the data area; it occupies 8 + ALIGN8(length) bytes. */
#pragma once

#include <assert.h>
#include <stddef.h>
#include <stdint.h>

#define DSV_IPC_MAGIC 0x52565344u /* "DSVR" in memory order */
#define DSV_IPC_VERSION_MAJOR 1
#define DSV_IPC_VERSION_MINOR 2

#define DSV_IPC_CACHELINE 64
#define DSV_IPC_DATA_OFFSET 4096u
#define DSV_IPC_RING_MIN (4u << 10)   /* smallest ring capacity */
#define DSV_IPC_RING_MAX (64u << 20)  /* largest ring capacity */
#define DSV_IPC_RING_DEFAULT (1u << 20)
#define DSV_IPC_RECORD_ALIGN 8u

struct dsv_ipc_ring_desc {
        uint32_t ctl_offset;  /* struct dsv_ipc_ring_ctl, from the start of the memfd */
        uint32_t capacity;    /* data bytes, a power of two in [RING_MIN, RING_MAX] */
        uint64_t data_offset; /* data area, from the start of the memfd */
        uint32_t max_record;  /* largest payload length accepted (capacity / 2) */
        uint32_t reserved;    /* zero */
};

struct dsv_ipc_header {
        uint32_t magic;         /* DSV_IPC_MAGIC */
        uint16_t version_major; /* incompatible layout or message changes */
        uint16_t version_minor; /* compatible additions */
        uint32_t header_size;   /* sizeof(struct dsv_ipc_header) */
        uint32_t flags;         /* zero */
        uint64_t total_size;    /* bytes of the memfd */
        uint64_t reserved0;     /* zero */
        struct dsv_ipc_ring_desc sub;  /* submission ring: client produces */
        struct dsv_ipc_ring_desc comp; /* completion ring: daemon produces */
        uint8_t reserved1[48];  /* zero */
};

struct dsv_ipc_ring_ctl {
        uint64_t tail;
        uint8_t pad0[DSV_IPC_CACHELINE - 8];
        uint64_t head;
        uint8_t pad1[DSV_IPC_CACHELINE - 8];
        uint32_t consumer_waiting;
        uint8_t pad2[DSV_IPC_CACHELINE - 4];
        uint32_t producer_waiting;
        uint8_t pad3[DSV_IPC_CACHELINE - 4];
};

/* Record header; `length` payload bytes (one msgpack map) follow. */
struct dsv_ipc_record {
        uint32_t length;
        uint16_t type;  /* enum dsv_msg_type */
        uint16_t flags; /* bits 0-7: ignore when unknown; bits 8-15: reject when unknown */
};

#define DSV_IPC_SUB_CTL_OFFSET 256u
#define DSV_IPC_COMP_CTL_OFFSET 512u
#define DSV_IPC_RECORD_FLAGS_CRITICAL 0xff00u

static_assert(sizeof(struct dsv_ipc_ring_desc) == 24, "ring desc ABI");
static_assert(offsetof(struct dsv_ipc_ring_desc, ctl_offset) == 0, "ring desc ABI");
static_assert(offsetof(struct dsv_ipc_ring_desc, capacity) == 4, "ring desc ABI");
static_assert(offsetof(struct dsv_ipc_ring_desc, data_offset) == 8, "ring desc ABI");
static_assert(offsetof(struct dsv_ipc_ring_desc, max_record) == 16, "ring desc ABI");
static_assert(offsetof(struct dsv_ipc_ring_desc, reserved) == 20, "ring desc ABI");

static_assert(sizeof(struct dsv_ipc_header) == 128, "header ABI");
static_assert(offsetof(struct dsv_ipc_header, magic) == 0, "header ABI");
static_assert(offsetof(struct dsv_ipc_header, version_major) == 4, "header ABI");
static_assert(offsetof(struct dsv_ipc_header, version_minor) == 6, "header ABI");
static_assert(offsetof(struct dsv_ipc_header, header_size) == 8, "header ABI");
static_assert(offsetof(struct dsv_ipc_header, flags) == 12, "header ABI");
static_assert(offsetof(struct dsv_ipc_header, total_size) == 16, "header ABI");
static_assert(offsetof(struct dsv_ipc_header, reserved0) == 24, "header ABI");
static_assert(offsetof(struct dsv_ipc_header, sub) == 32, "header ABI");
static_assert(offsetof(struct dsv_ipc_header, comp) == 56, "header ABI");
static_assert(offsetof(struct dsv_ipc_header, reserved1) == 80, "header ABI");

static_assert(sizeof(struct dsv_ipc_ring_ctl) == 4 * DSV_IPC_CACHELINE, "ring ctl ABI");
static_assert(offsetof(struct dsv_ipc_ring_ctl, tail) == 0, "ring ctl ABI");
static_assert(offsetof(struct dsv_ipc_ring_ctl, head) == 64, "ring ctl ABI");
static_assert(offsetof(struct dsv_ipc_ring_ctl, consumer_waiting) == 128, "ring ctl ABI");
static_assert(offsetof(struct dsv_ipc_ring_ctl, producer_waiting) == 192, "ring ctl ABI");

static_assert(sizeof(struct dsv_ipc_record) == 8, "record ABI");
static_assert(offsetof(struct dsv_ipc_record, length) == 0, "record ABI");
static_assert(offsetof(struct dsv_ipc_record, type) == 4, "record ABI");
static_assert(offsetof(struct dsv_ipc_record, flags) == 6, "record ABI");

static_assert(DSV_IPC_SUB_CTL_OFFSET >= sizeof(struct dsv_ipc_header), "layout");
static_assert(DSV_IPC_COMP_CTL_OFFSET == DSV_IPC_SUB_CTL_OFFSET + sizeof(struct dsv_ipc_ring_ctl), "layout");
static_assert(DSV_IPC_COMP_CTL_OFFSET + sizeof(struct dsv_ipc_ring_ctl) <= DSV_IPC_DATA_OFFSET, "layout");
static_assert(DSV_IPC_DATA_OFFSET % DSV_IPC_CACHELINE == 0, "layout");
static_assert(sizeof(uint64_t) == 8 && __atomic_always_lock_free(8, 0), "u64 counters must be lock-free");
