/* The SPSC byte rings, the memfd that holds them and the socket doorbell (see ring.h). */
#include "config.h"

#include "ipc/ring.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define LOAD_ACQ(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define LOAD_RLX(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define STORE_REL(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define STORE_RLX(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define FULL_FENCE() __atomic_thread_fence(__ATOMIC_SEQ_CST)
#define MIN_SZ(a, b) ((a) < (b) ? (a) : (b))

uint64_t dsv_ipc_now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static bool is_pow2(uint64_t x) { return x && !(x & (x - 1)); }

uint32_t dsv_ring_size_clamp(uint64_t want, uint32_t limit) {
        uint64_t s = DSV_IPC_RING_MIN;
        if (want == 0)
                want = DSV_IPC_RING_DEFAULT;
        if (limit < DSV_IPC_RING_MIN || limit > DSV_IPC_RING_MAX || !is_pow2(limit))
                limit = DSV_IPC_RING_MAX;
        while (s < want && s < limit)
                s <<= 1;
        return (uint32_t)s;
}

static void ring_view(struct dsv_ring *r, void *base, const struct dsv_ipc_ring_desc *d) {
        r->ctl = (struct dsv_ipc_ring_ctl *)((uint8_t *)base + d->ctl_offset);
        r->data = (uint8_t *)base + d->data_offset;
        r->capacity = d->capacity;
        r->max_record = d->max_record;
        r->pos = 0;
}

static void desc_init(struct dsv_ipc_ring_desc *d, uint32_t ctl, uint64_t data, uint32_t cap) {
        d->ctl_offset = ctl;
        d->capacity = cap;
        d->data_offset = data;
        d->max_record = cap / 2;
        d->reserved = 0;
}

int dsv_shm_create(uint32_t sub_capacity, uint32_t comp_capacity, int *ret_fd, struct dsv_shm *ret) {
        struct dsv_ipc_header *h;
        size_t size;
        void *base;
        int fd;

        if (!ret_fd || !ret || !is_pow2(sub_capacity) || !is_pow2(comp_capacity) || sub_capacity < DSV_IPC_RING_MIN ||
            comp_capacity < DSV_IPC_RING_MIN || sub_capacity > DSV_IPC_RING_MAX || comp_capacity > DSV_IPC_RING_MAX)
                return -EINVAL;
        size = (size_t)DSV_IPC_DATA_OFFSET + sub_capacity + comp_capacity;
        fd = memfd_create("dsv32-ipc", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        if (fd < 0)
                return -errno;
        if (ftruncate(fd, (off_t)size) < 0 ||
            fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
                int e = -errno;
                close(fd);
                return e;
        }
        base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (base == MAP_FAILED) {
                int e = -errno;
                close(fd);
                return e;
        }
        /* A fresh memfd reads as zeros: reserved bytes, counters and flags start at 0. */
        h = base;
        h->magic = DSV_IPC_MAGIC;
        h->version_major = DSV_IPC_VERSION_MAJOR;
        h->version_minor = DSV_IPC_VERSION_MINOR;
        h->header_size = sizeof(*h);
        h->flags = 0;
        h->total_size = size;
        desc_init(&h->sub, DSV_IPC_SUB_CTL_OFFSET, DSV_IPC_DATA_OFFSET, sub_capacity);
        desc_init(&h->comp, DSV_IPC_COMP_CTL_OFFSET, (uint64_t)DSV_IPC_DATA_OFFSET + sub_capacity, comp_capacity);
        memset(ret, 0, sizeof(*ret));
        ret->base = base;
        ret->size = size;
        ring_view(&ret->sub, base, &h->sub);
        ring_view(&ret->comp, base, &h->comp);
        *ret_fd = fd;
        return 0;
}

static int desc_check(const struct dsv_ipc_ring_desc *d, size_t size) {
        if (!is_pow2(d->capacity) || d->capacity < DSV_IPC_RING_MIN || d->capacity > DSV_IPC_RING_MAX)
                return -EPROTO;
        if (d->max_record == 0 || d->max_record > d->capacity / 2)
                return -EPROTO;
        if (d->ctl_offset % DSV_IPC_CACHELINE || d->ctl_offset < sizeof(struct dsv_ipc_header) ||
            (uint64_t)d->ctl_offset + sizeof(struct dsv_ipc_ring_ctl) > DSV_IPC_DATA_OFFSET)
                return -EPROTO;
        if (d->data_offset % DSV_IPC_CACHELINE || d->data_offset < DSV_IPC_DATA_OFFSET || d->data_offset > size ||
            size - d->data_offset < d->capacity)
                return -EPROTO;
        return 0;
}

int dsv_shm_layout_check(void *base, size_t size, struct dsv_shm *ret) {
        struct dsv_ipc_header h;

        if (size < DSV_IPC_DATA_OFFSET)
                return -EPROTO;
        memcpy(&h, base, sizeof(h)); /* one read of the header */
        if (h.magic != DSV_IPC_MAGIC)
                return -EPROTO;
        if (h.version_major != DSV_IPC_VERSION_MAJOR)
                return -EPROTONOSUPPORT;
        if (h.header_size < sizeof(h) || h.total_size != size)
                return -EPROTO;
        if (desc_check(&h.sub, size) < 0 || desc_check(&h.comp, size) < 0)
                return -EPROTO;
        if (h.sub.ctl_offset == h.comp.ctl_offset)
                return -EPROTO;
        if (h.sub.data_offset < h.comp.data_offset ? h.sub.data_offset + h.sub.capacity > h.comp.data_offset
                                                   : h.comp.data_offset + h.comp.capacity > h.sub.data_offset)
                return -EPROTO;
        memset(ret, 0, sizeof(*ret));
        ret->base = base;
        ret->size = size;
        ring_view(&ret->sub, base, &h.sub);
        ring_view(&ret->comp, base, &h.comp);
        return 0;
}

int dsv_shm_attach(int fd, struct dsv_shm *ret) {
        struct stat st;
        void *base;
        int r;

        if (fd < 0 || !ret)
                return -EINVAL;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (st.st_size < (off_t)DSV_IPC_DATA_OFFSET || st.st_size > (off_t)DSV_IPC_DATA_OFFSET + 2 * (off_t)DSV_IPC_RING_MAX)
                return -EPROTO;
        base = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (base == MAP_FAILED)
                return -errno;
        r = dsv_shm_layout_check(base, (size_t)st.st_size, ret);
        if (r < 0) {
                munmap(base, (size_t)st.st_size);
                return r;
        }
        /* The client starts where the daemon is: both counters are zero on a new memfd. */
        ret->sub.pos = LOAD_ACQ(&ret->sub.ctl->tail);
        ret->comp.pos = LOAD_ACQ(&ret->comp.ctl->head);
        return 0;
}

void dsv_shm_unmap(struct dsv_shm *shm) {
        if (shm && shm->base) {
                munmap(shm->base, shm->size);
                shm->base = NULL;
        }
}

/* ------------------------------------------------------------------ producer */

int64_t dsv_ring_free_bytes(struct dsv_ring *r) {
        uint64_t head = LOAD_ACQ(&r->ctl->head);
        uint64_t used = r->pos - head; /* unsigned: a head past our tail wraps to huge */
        if (used > r->capacity)
                return -EPROTO;
        return (int64_t)(r->capacity - used);
}

static void copy_in(struct dsv_ring *r, uint64_t at, const void *src, size_t n) {
        uint32_t off = (uint32_t)(at & (r->capacity - 1));
        size_t first = MIN_SZ(n, (size_t)r->capacity - off);
        memcpy(r->data + off, src, first);
        if (n > first)
                memcpy(r->data, (const uint8_t *)src + first, n - first);
}

int dsv_ring_write(struct dsv_ring *r, uint16_t type, uint16_t flags, const void *payload, uint32_t len) {
        static const uint8_t zeros[DSV_IPC_RECORD_ALIGN];
        struct dsv_ipc_record h = {.length = len, .type = type, .flags = flags};
        uint64_t need = dsv_ring_record_bytes(len);
        int64_t free_bytes;

        if (len > r->max_record)
                return -EMSGSIZE;
        free_bytes = dsv_ring_free_bytes(r);
        if (free_bytes < 0)
                return (int)free_bytes;
        if ((uint64_t)free_bytes < need)
                return -EAGAIN;
        copy_in(r, r->pos, &h, sizeof(h));
        if (len)
                copy_in(r, r->pos + sizeof(h), payload, len);
        if (need - sizeof(h) > len)
                copy_in(r, r->pos + sizeof(h) + len, zeros, (size_t)(need - sizeof(h) - len));
        r->pos += need;
        STORE_REL(&r->ctl->tail, r->pos);
        return 0;
}

bool dsv_ring_consumer_needs_wake(struct dsv_ring *r) {
        FULL_FENCE();
        if (!LOAD_RLX(&r->ctl->consumer_waiting))
                return false;
        STORE_RLX(&r->ctl->consumer_waiting, 0);
        return true;
}

bool dsv_ring_producer_sleep_begin(struct dsv_ring *r, uint64_t need) {
        int64_t f;
        STORE_RLX(&r->ctl->producer_waiting, 1);
        FULL_FENCE();
        f = dsv_ring_free_bytes(r);
        return f < 0 || (uint64_t)f >= need;
}

void dsv_ring_producer_sleep_end(struct dsv_ring *r) { STORE_RLX(&r->ctl->producer_waiting, 0); }

/* ------------------------------------------------------------------ consumer */

bool dsv_ring_empty(struct dsv_ring *r) { return LOAD_ACQ(&r->ctl->tail) == r->pos; }

static void copy_out(const struct dsv_ring *r, uint64_t at, void *dst, size_t n) {
        uint32_t off = (uint32_t)(at & (r->capacity - 1));
        size_t first = MIN_SZ(n, (size_t)r->capacity - off);
        memcpy(dst, r->data + off, first);
        if (n > first)
                memcpy((uint8_t *)dst + first, r->data, n - first);
}

int dsv_ring_read(struct dsv_ring *r, struct dsv_ipc_record *hdr, void *buf, size_t cap) {
        uint64_t tail = LOAD_ACQ(&r->ctl->tail); /* the one read of the peer's counter */
        uint64_t avail = tail - r->pos, need;
        struct dsv_ipc_record h;

        if (avail == 0)
                return 0;
        if (avail > r->capacity || avail % DSV_IPC_RECORD_ALIGN)
                return -EPROTO;
        copy_out(r, r->pos, &h, sizeof(h));
        if (h.length > r->max_record || h.length > cap)
                return -EBADMSG;
        need = dsv_ring_record_bytes(h.length);
        if (need > avail)
                return -EBADMSG;
        if (h.length)
                copy_out(r, r->pos + sizeof(h), buf, h.length);
        r->pos += need;
        STORE_REL(&r->ctl->head, r->pos);
        *hdr = h;
        return 1;
}

bool dsv_ring_producer_needs_wake(struct dsv_ring *r) {
        FULL_FENCE();
        if (!LOAD_RLX(&r->ctl->producer_waiting))
                return false;
        STORE_RLX(&r->ctl->producer_waiting, 0);
        return true;
}

bool dsv_ring_consumer_sleep_begin(struct dsv_ring *r) {
        STORE_RLX(&r->ctl->consumer_waiting, 1);
        FULL_FENCE();
        return !dsv_ring_empty(r);
}

void dsv_ring_consumer_sleep_end(struct dsv_ring *r) { STORE_RLX(&r->ctl->consumer_waiting, 0); }

/* ------------------------------------------------------------------ doorbell */

int dsv_ipc_doorbell(int fd) {
        static const uint8_t one = 1;
        if (send(fd, &one, 1, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                        return 0;
                return -errno;
        }
        return 0;
}

int dsv_ipc_doorbell_drain(int fd, void *buf, size_t cap, size_t *ret_len) {
        uint8_t tmp[DSV_IPC_DATAGRAM_MAX];
        int reset = 0;
        for (int i = 0; i < 4096; i++) {
                ssize_t n = recv(fd, tmp, sizeof(tmp), MSG_DONTWAIT | MSG_TRUNC);
                if (n < 0) {
                        if (errno == EAGAIN || errno == EWOULDBLOCK)
                                return reset;
                        if (errno == EINTR)
                                continue;
                        /* a peer that closed with our doorbells unread makes the first recv
                         * fail with ECONNRESET; its last datagram may still be queued */
                        if (errno == ECONNRESET && !reset) {
                                reset = -ECONNRESET;
                                continue;
                        }
                        return -errno;
                }
                if (n == 0)
                        return -ECONNRESET;
                if (n > 1 && buf && ret_len && *ret_len == 0) {
                        size_t k = (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp);
                        if (k > cap)
                                k = cap;
                        memcpy(buf, tmp, k);
                        *ret_len = k;
                }
        }
        return reset;
}

/* ------------------------------------------------------------------ adaptive spin */

void dsv_spin_init(struct dsv_spin *s, uint64_t min_ns, uint64_t max_ns) {
        s->min_ns = min_ns;
        s->max_ns = max_ns < min_ns ? min_ns : max_ns;
        s->budget_ns = s->max_ns;
        s->spins_won = s->sleeps = 0;
        s->losses = s->calls = 0;
}

uint64_t dsv_spin_budget(struct dsv_spin *s) {
        if (s->budget_ns < s->max_ns && (++s->calls & 31) == 0)
                return s->max_ns;
        return s->budget_ns;
}

void dsv_spin_update(struct dsv_spin *s, bool won) {
        /* A win restores the full budget: the peer answers while we spin, which is the
         * cheap case worth keeping. Only a run of losses (a peer that is slower than any
         * spin, e.g. a token every few milliseconds) halves it, down to min_ns. */
        if (won) {
                s->spins_won++;
                s->losses = 0;
                s->budget_ns = s->max_ns;
        } else {
                s->sleeps++;
                if (++s->losses >= 4) {
                        s->losses = 0;
                        s->budget_ns = s->budget_ns / 2 < s->min_ns ? s->min_ns : s->budget_ns / 2;
                }
        }
}
