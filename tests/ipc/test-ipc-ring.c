/* The shared-memory rings: layout validation, hostile counters and lengths, and a
 * producer and a consumer in two processes sharing a real memfd, passing records of every
 * payload size from 0 to the maximum through a small ring (so it wraps around thousands of
 * times, records straddle the end) with the waiting flags and the socket doorbell. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ipc/ring.h"
#include "tests/check.h"

static uint8_t pattern(uint32_t size, uint32_t i) { return (uint8_t)(size * 131u + i * 7u + 1u); }

static void test_layout(void) {
        struct dsv_shm a, b, v;
        struct dsv_ipc_header *h;
        int fd, r;

        r = dsv_shm_create(4096, 8192, &fd, &a);
        CHECK(r == 0, "dsv_shm_create: %s", strerror(-r));
        if (r)
                return;
        CHECK(a.size == 4096 + 4096 + 8192, "size %zu", a.size);
        CHECK(fcntl(fd, F_GET_SEALS) == (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL), "seals 0x%x", fcntl(fd, F_GET_SEALS));
        CHECK(ftruncate(fd, 100) < 0 && errno == EPERM, "a sealed memfd must not shrink");
        r = dsv_shm_attach(fd, &b);
        CHECK(r == 0, "attach: %s", strerror(-r));
        CHECK(b.sub.capacity == 4096 && b.comp.capacity == 8192 && b.sub.max_record == 2048 && b.comp.max_record == 4096,
              "capacities %u/%u", b.sub.capacity, b.comp.capacity);
        dsv_shm_unmap(&b);
        h = a.base;
        /* corruptions the client must refuse */
        {
                struct dsv_ipc_header save = *h;
                h->magic ^= 1;
                CHECK(dsv_shm_layout_check(a.base, a.size, &v) == -EPROTO, "bad magic accepted");
                *h = save;
                h->version_major = 99;
                CHECK(dsv_shm_layout_check(a.base, a.size, &v) == -EPROTONOSUPPORT, "other major version accepted");
                *h = save;
                h->sub.capacity = 3000;
                CHECK(dsv_shm_layout_check(a.base, a.size, &v) == -EPROTO, "non-power-of-two capacity accepted");
                *h = save;
                h->comp.data_offset = 4096 + 2048;
                CHECK(dsv_shm_layout_check(a.base, a.size, &v) == -EPROTO, "overlapping rings accepted");
                *h = save;
                h->comp.data_offset = 4096 + 4096 + 4096;
                CHECK(dsv_shm_layout_check(a.base, a.size, &v) == -EPROTO, "ring past the end accepted");
                *h = save;
                h->sub.max_record = 4096;
                CHECK(dsv_shm_layout_check(a.base, a.size, &v) == -EPROTO, "max_record > capacity/2 accepted");
                *h = save;
                h->total_size = 1;
                CHECK(dsv_shm_layout_check(a.base, a.size, &v) == -EPROTO, "wrong total size accepted");
                *h = save;
                CHECK(dsv_shm_layout_check(a.base, a.size, &v) == 0, "the restored header is refused");
        }
        close(fd);
        dsv_shm_unmap(&a);
}

static void test_hostile_counters(void) {
        struct dsv_shm s;
        struct dsv_ipc_record h;
        uint8_t buf[4096], payload[100] = {0};
        int fd, r;

        if (dsv_shm_create(4096, 4096, &fd, &s) < 0) {
                CHECK(0, "create");
                return;
        }
        close(fd);
        /* consumer side (the daemon's view of the submission ring) */
        s.sub.ctl->tail = (uint64_t)-8; /* "moved backwards" */
        CHECK(dsv_ring_read(&s.sub, &h, buf, sizeof(buf)) == -EPROTO, "tail behind head accepted");
        s.sub.ctl->tail = 4096 + 8;
        CHECK(dsv_ring_read(&s.sub, &h, buf, sizeof(buf)) == -EPROTO, "tail beyond capacity accepted");
        s.sub.ctl->tail = 12;
        CHECK(dsv_ring_read(&s.sub, &h, buf, sizeof(buf)) == -EPROTO, "unaligned tail accepted");
        /* a header claiming more than max_record, then more than was published */
        h = (struct dsv_ipc_record){.length = 3000, .type = 16};
        memcpy(s.sub.data, &h, sizeof(h));
        s.sub.ctl->tail = 4096;
        CHECK(dsv_ring_read(&s.sub, &h, buf, sizeof(buf)) == -EBADMSG, "length over max_record accepted");
        h = (struct dsv_ipc_record){.length = 100, .type = 16};
        memcpy(s.sub.data, &h, sizeof(h));
        s.sub.ctl->tail = 64;
        CHECK(dsv_ring_read(&s.sub, &h, buf, sizeof(buf)) == -EBADMSG, "length past the published tail accepted");
        CHECK(s.sub.pos == 0 && s.sub.ctl->head == 0, "a refused record must not be consumed");
        s.sub.ctl->tail = 0;
        CHECK(dsv_ring_read(&s.sub, &h, buf, sizeof(buf)) == 0, "empty ring not empty");
        /* producer side (the daemon's view of the completion ring) */
        s.comp.ctl->head = 8; /* ahead of our tail 0 */
        CHECK(dsv_ring_write(&s.comp, 48, 0, payload, 8) == -EPROTO, "head ahead of tail accepted");
        s.comp.ctl->head = 0;
        CHECK(dsv_ring_write(&s.comp, 48, 0, payload, 2049) == -EMSGSIZE, "record over max_record accepted");
        for (int i = 0; i < 100; i++) {
                r = dsv_ring_write(&s.comp, 48, 0, payload, 100);
                if (r)
                        break;
        }
        CHECK(r == -EAGAIN, "a full ring must answer -EAGAIN, got %d", r);
        CHECK(s.comp.pos <= 4096, "wrote past the capacity");
        s.comp.ctl->head = s.comp.pos - 8192; /* more than a capacity behind */
        CHECK(dsv_ring_write(&s.comp, 48, 0, payload, 8) == -EPROTO, "head a capacity behind accepted");
        dsv_shm_unmap(&s);
}

/* Consumer process: verifies every record, sleeps on the doorbell when the ring is empty. */
static int consumer(int memfd, int sock, uint32_t max) {
        struct dsv_shm s;
        struct dsv_ipc_record h;
        uint8_t *buf;
        uint64_t sleeps = 0;
        if (dsv_shm_attach(memfd, &s) < 0)
                return 2;
        /* attach sets a client up as the producer of this ring; here we consume it */
        s.sub.pos = __atomic_load_n(&s.sub.ctl->head, __ATOMIC_ACQUIRE);
        buf = malloc(s.sub.max_record);
        for (uint32_t size = 0; size <= max;) {
                int r = dsv_ring_read(&s.sub, &h, buf, s.sub.max_record);
                if (r < 0) {
                        fprintf(stderr, "consumer: ring error %d at size %u\n", r, size);
                        return 3;
                }
                if (r == 0) {
                        struct pollfd p = {.fd = sock, .events = POLLIN};
                        if (dsv_ring_consumer_sleep_begin(&s.sub)) {
                                dsv_ring_consumer_sleep_end(&s.sub);
                                continue;
                        }
                        sleeps++;
                        poll(&p, 1, 2000);
                        dsv_ring_consumer_sleep_end(&s.sub);
                        dsv_ipc_doorbell_drain(sock, NULL, 0, NULL);
                        continue;
                }
                if (h.length != size || h.type != (uint16_t)(size % 50 + 16) || h.flags != (uint16_t)size) {
                        fprintf(stderr, "consumer: record %u has length %u type %u flags %u\n", size, h.length, h.type,
                                h.flags);
                        return 4;
                }
                for (uint32_t i = 0; i < size; i++)
                        if (buf[i] != pattern(size, i)) {
                                fprintf(stderr, "consumer: record %u byte %u is %u, expected %u\n", size, i, buf[i],
                                        pattern(size, i));
                                return 5;
                        }
                if (dsv_ring_producer_needs_wake(&s.sub))
                        dsv_ipc_doorbell(sock);
                size++;
        }
        fprintf(stderr, "consumer: %u records verified, slept %llu times\n", max + 1, (unsigned long long)sleeps);
        return 0;
}

static void test_wraparound(uint32_t cap) {
        struct dsv_shm s;
        int memfd, sv[2], st;
        uint32_t max;
        uint8_t *p;
        pid_t pid;
        uint64_t waits = 0;

        if (dsv_shm_create(cap, DSV_IPC_RING_MIN, &memfd, &s) < 0 || socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
                CHECK(0, "setup");
                return;
        }
        max = s.sub.max_record;
        s.sub.ctl->consumer_waiting = 0;
        pid = fork();
        if (pid == 0) {
                close(sv[0]);
                _exit(consumer(memfd, sv[1], max));
        }
        close(sv[1]);
        p = malloc(max);
        for (uint32_t size = 0; size <= max; size++) {
                int r;
                for (uint32_t i = 0; i < size; i++)
                        p[i] = pattern(size, i);
                while ((r = dsv_ring_write(&s.sub, (uint16_t)(size % 50 + 16), (uint16_t)size, p, size)) == -EAGAIN) {
                        struct pollfd pf = {.fd = sv[0], .events = POLLIN};
                        waits++;
                        if (!dsv_ring_producer_sleep_begin(&s.sub, dsv_ring_record_bytes(size)))
                                poll(&pf, 1, 2000);
                        dsv_ring_producer_sleep_end(&s.sub);
                        dsv_ipc_doorbell_drain(sv[0], NULL, 0, NULL);
                }
                if (r) {
                        CHECK(0, "write of %u bytes: %s", size, strerror(-r));
                        break;
                }
                if (dsv_ring_consumer_needs_wake(&s.sub))
                        dsv_ipc_doorbell(sv[0]);
        }
        CHECK(dsv_ring_write(&s.sub, 16, 0, p, max + 1) == -EMSGSIZE, "a record over max_record must be refused");
        waitpid(pid, &st, 0);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "consumer of a %u-byte ring failed (status %d)", cap, st);
        CHECK(s.sub.pos > 4ull * cap, "the ring should have wrapped around many times (%llu bytes through %u)",
              (unsigned long long)s.sub.pos, cap);
        fprintf(stderr, "ring %u: %u records, %llu bytes, producer waited %llu times\n", cap, max + 1,
                (unsigned long long)s.sub.pos, (unsigned long long)waits);
        free(p);
        close(sv[0]);
        close(memfd);
        dsv_shm_unmap(&s);
}

int main(void) {
        test_layout();
        test_hostile_counters();
        test_wraparound(4096);
        test_wraparound(16384);
        return test_result("test-ipc-ring");
}
