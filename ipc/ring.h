/* Single-producer/single-consumer byte rings over the shared memfd (ipc/layout.h), the
 * memfd itself (create on the daemon side, attach on the client side), the doorbell on the
 * connection socket, and the spin-then-sleep handshake around the waiting flags.
 *
 * Everything read from shared memory is hostile: each side keeps its own counter privately
 * (the producer its tail, the consumer its head) and never reads it back; the peer's counter
 * is read once per call and bounds-checked; a record header is copied out once and its
 * payload copied to private memory before anyone decodes it. A violation is -EPROTO (a
 * counter that moved backwards or past the capacity) or -EBADMSG (a record length that
 * cannot be), after which the connection is unusable. Returns follow the project rule:
 * >= 0 success, -errno failure. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ipc/layout.h"

struct dsv_ring {
        struct dsv_ipc_ring_ctl *ctl;
        uint8_t *data;
        uint32_t capacity;   /* power of two */
        uint32_t max_record; /* largest payload */
        uint64_t pos;        /* producer: own tail; consumer: own head (private truth) */
};

struct dsv_shm {
        void *base;
        size_t size;
        struct dsv_ring sub;  /* client produces, daemon consumes */
        struct dsv_ring comp; /* daemon produces, client consumes */
};

/* Bytes a record with a payload of len bytes occupies in a ring. */
static inline uint64_t dsv_ring_record_bytes(uint32_t len) {
        return sizeof(struct dsv_ipc_record) + (((uint64_t)len + DSV_IPC_RECORD_ALIGN - 1) & ~(uint64_t)(DSV_IPC_RECORD_ALIGN - 1));
}

/* Rounds a requested ring size to the next power of two within [RING_MIN, limit]
 * (0 means DSV_IPC_RING_DEFAULT). limit must be a power of two. */
uint32_t dsv_ring_size_clamp(uint64_t want, uint32_t limit);

/* Daemon: a sealed (no grow, no shrink) memfd with the layout and zeroed rings, mapped at
 * ret->base; the fd to hand to the client in *ret_fd (O_CLOEXEC). */
int dsv_shm_create(uint32_t sub_capacity, uint32_t comp_capacity, int *ret_fd, struct dsv_shm *ret);
/* Client: maps a memfd received from the daemon and validates the header (magic, major
 * version, sizes, offsets inside the file and not overlapping). */
int dsv_shm_attach(int fd, struct dsv_shm *ret);
/* Validates a header image of `size` bytes and fills the two ring views; shared by attach
 * and the fuzz targets. */
int dsv_shm_layout_check(void *base, size_t size, struct dsv_shm *ret);
void dsv_shm_unmap(struct dsv_shm *shm);

/* ---- producer */
/* Free bytes (>= 0) from the consumer's head read once, or -EPROTO if that head is not in
 * [tail - capacity, tail]. */
int64_t dsv_ring_free_bytes(struct dsv_ring *r);
/* Appends one record and publishes it. -EMSGSIZE: the payload exceeds max_record (it will
 * never fit); -EAGAIN: not enough free space now; -EPROTO: the consumer's head is invalid. */
int dsv_ring_write(struct dsv_ring *r, uint16_t type, uint16_t flags, const void *payload, uint32_t len);
/* After publishing: true when the consumer sleeps (its flag is cleared here) and so the
 * caller must ring the doorbell. A full barrier orders our tail store before the flag
 * load, matching the consumer's flag store before its tail load. */
bool dsv_ring_consumer_needs_wake(struct dsv_ring *r);
/* Producer about to sleep for space: sets producer_waiting; returns true when `need` bytes
 * have become free meanwhile (then do not sleep; call dsv_ring_producer_sleep_end()). */
bool dsv_ring_producer_sleep_begin(struct dsv_ring *r, uint64_t need);
void dsv_ring_producer_sleep_end(struct dsv_ring *r);

/* ---- consumer */
/* True when no record is visible (tail read once equals our head). */
bool dsv_ring_empty(struct dsv_ring *r);
/* Copies the next record's header to *hdr and its payload to buf (cap >= max_record) and
 * consumes it. 1: a record; 0: ring empty; -EPROTO: the producer's tail is invalid;
 * -EBADMSG: the record's length is larger than max_record or than what was published. */
int dsv_ring_read(struct dsv_ring *r, struct dsv_ipc_record *hdr, void *buf, size_t cap);
/* After consuming: true when the producer waits for space (flag cleared here). */
bool dsv_ring_producer_needs_wake(struct dsv_ring *r);
/* Consumer about to sleep: sets consumer_waiting; returns true when a record arrived
 * meanwhile (then do not sleep; call dsv_ring_consumer_sleep_end()). */
bool dsv_ring_consumer_sleep_begin(struct dsv_ring *r);
void dsv_ring_consumer_sleep_end(struct dsv_ring *r);

/* Largest datagram on the socket: handshake records, the final ERROR. */
#define DSV_IPC_DATAGRAM_MAX 4096

/* ---- doorbell: one datagram of one byte on the connection socket (SOCK_SEQPACKET).
 * Never blocks: a peer whose socket buffer is full already has wakeups pending. */
int dsv_ipc_doorbell(int fd);
/* Reads every pending datagram without blocking. A datagram longer than one byte is a
 * framed record (the daemon's last ERROR before it closes): the first one is copied to
 * buf (cap bytes) and its size stored in *ret_len. Returns 0, or -ECONNRESET at end of
 * stream, or another -errno. */
int dsv_ipc_doorbell_drain(int fd, void *buf, size_t cap, size_t *ret_len);

static inline void dsv_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#elif defined(__aarch64__)
        __asm__ __volatile__("yield" ::: "memory");
#else
        __asm__ __volatile__("" ::: "memory");
#endif
}

/* Adaptive spin budget: back to max_ns whenever a reply arrives during the spin, halved
 * toward min_ns after a run of waits that ended in sleep anyway (a slow peer is not worth
 * burning a core). */
struct dsv_spin {
        uint64_t budget_ns, min_ns, max_ns;
        uint64_t spins_won, sleeps;
        unsigned losses, calls;
};
void dsv_spin_init(struct dsv_spin *s, uint64_t min_ns, uint64_t max_ns);
/* The window for the next wait: the current budget, except that every 32nd wait below the
 * maximum probes with the full window (so a budget that shrank to nothing on a busy machine
 * grows back once spinning pays again). */
uint64_t dsv_spin_budget(struct dsv_spin *s);
void dsv_spin_update(struct dsv_spin *s, bool won);
uint64_t dsv_ipc_now_ns(void);
