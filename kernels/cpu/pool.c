/* The CPU backend's persistent worker pool (see pool.h): start/stop of the workers, the
 * job handoff, and the parallel loops built on it.
 *
 * A job is a loop whose chunks are claimed from an atomic counter, so joining it is
 * optional: the caller claims chunks too, and a worker that is late (descheduled on a busy
 * host) finds nothing left and leaves; nobody waits for a worker that never started. One
 * 32-bit word holds the job's state and is what idle workers sleep on:
 *   bits 31..16  job id     bit 15  open     bits 14..0  workers inside the job
 *   caller: fn, ctx := job; state := (id+1, open, 0); futex_wake if anyone sleeps
 *           claim chunks until none is left; clear `open`; wait until no worker is inside
 *   worker: spin (up to spin_ns) or futex_wait until the state shows an open job it has not
 *           joined; join with a CAS (inside + 1), claim chunks, leave (inside - 1), and wake
 *           the caller if it was the last one out of a closed job. */
#include "config.h"

#include "kernels/cpu/pool.h"

#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "kernels/base.h"
#include "kernels/cpu/cpu.h"

#define JOB_OPEN 0x8000u
#define JOB_INSIDE 0x7fffu
#define JOB_ID(s) ((s) >> 16)

struct pool {
        int n; /* threads, the caller included */
        pthread_t *th;
        uint64_t spin_ns;
        _Atomic uint32_t state;
        _Atomic int sleepers;
        _Atomic int caller_sleeps;
        _Atomic bool stop;
        dsv_pool_fn fn;
        void *ctx;
        pthread_mutex_t run_lock; /* one job at a time */
};

struct worker_arg {
        struct pool *p;
        int id;
};

static struct pool *_Atomic g_pool;
static int g_refs;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static _Thread_local bool in_job;

/* addr: a 32-bit atomic (the kernel compares and wakes on its plain value) */
static void futex_wait(const volatile void *addr, uint32_t val) {
        syscall(SYS_futex, (void *)addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}
static void futex_wake(const volatile void *addr) {
        syscall(SYS_futex, (void *)addr, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0);
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#elif defined(__aarch64__)
        __asm__ volatile("yield");
#endif
}

static uint64_t now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* an open job this worker has not joined yet */
static inline bool joinable(uint32_t s, uint32_t last) { return (s & JOB_OPEN) && JOB_ID(s) != last; }

static void *worker_main(void *v) {
        struct worker_arg a = *(struct worker_arg *)v;
        struct pool *p = a.p;
        uint32_t last = JOB_ID(atomic_load(&p->state));
        free(v);
        in_job = true; /* a worker never starts jobs of its own */
        while (!atomic_load(&p->stop)) {
                uint32_t s = atomic_load(&p->state);
                if (!joinable(s, last)) {
                        uint64_t t0 = now_ns();
                        for (unsigned i = 1; !joinable(s = atomic_load(&p->state), last) && !atomic_load(&p->stop); i++) {
                                cpu_relax();
                                if (i % 64 == 0 && now_ns() - t0 >= p->spin_ns)
                                        break;
                        }
                }
                if (!joinable(s, last)) {
                        if (atomic_load(&p->stop))
                                break;
                        atomic_fetch_add(&p->sleepers, 1);
                        futex_wait(&p->state, s);
                        atomic_fetch_sub(&p->sleepers, 1);
                        continue;
                }
                if (!atomic_compare_exchange_weak(&p->state, &s, s + 1))
                        continue; /* closed, or another worker joined first: look again */
                last = JOB_ID(s);
                p->fn(p->ctx, a.id, p->n);
                uint32_t left = atomic_fetch_sub(&p->state, 1) - 1;
                if ((left & (JOB_OPEN | JOB_INSIDE)) == 0 && atomic_load(&p->caller_sleeps))
                        futex_wake(&p->state);
        }
        return NULL;
}

static void pool_stop(struct pool *p, int started) {
        atomic_store(&p->stop, true);
        atomic_fetch_add(&p->state, 1u << 16); /* a new id: sleepers see a change */
        futex_wake(&p->state);
        for (int i = 0; i < started; i++)
                pthread_join(p->th[i], NULL);
        pthread_mutex_destroy(&p->run_lock);
        free(p->th);
        free(p);
}

static int pool_new(int n, struct pool **ret) {
        struct pool *p = calloc(1, sizeof(*p));
        const char *spin = getenv("DSV32_CPU_SPIN_US");
        long us = 200;
        int started = 0, r = 0;
        if (!p)
                return -ENOMEM;
        p->n = n;
        if (spin && *spin) {
                char *end;
                long v = strtol(spin, &end, 10);
                if (*end == 0 && v >= 0 && v <= 1000000)
                        us = v;
        }
        p->spin_ns = (uint64_t)us * 1000;
        pthread_mutex_init(&p->run_lock, NULL);
        p->th = calloc((size_t)MAX(n - 1, 1), sizeof(pthread_t));
        if (!p->th) {
                pool_stop(p, 0);
                return -ENOMEM;
        }
        for (; started < n - 1; started++) {
                struct worker_arg *a = malloc(sizeof(*a));
                if (!a) {
                        r = -ENOMEM;
                        break;
                }
                *a = (struct worker_arg){p, started + 1};
                if ((r = -pthread_create(&p->th[started], NULL, worker_main, a)) < 0) {
                        free(a);
                        break;
                }
        }
        if (r < 0) {
                pool_stop(p, started);
                return r;
        }
        *ret = p;
        return 0;
}

int dsv_cpu_pool_acquire(int n_threads) {
        int r = 0;
        pthread_mutex_lock(&g_lock);
        if (g_refs == 0 && n_threads > 1) {
                struct pool *p = NULL;
                if ((r = pool_new(n_threads, &p)) >= 0)
                        atomic_store(&g_pool, p);
        }
        if (r >= 0)
                g_refs++;
        pthread_mutex_unlock(&g_lock);
        return r;
}

void dsv_cpu_pool_release(void) {
        pthread_mutex_lock(&g_lock);
        if (g_refs > 0 && --g_refs == 0 && g_pool) {
                struct pool *p = g_pool;
                atomic_store(&g_pool, NULL);
                pool_stop(p, p->n - 1);
        }
        pthread_mutex_unlock(&g_lock);
}

int dsv_cpu_pool_threads(void) {
        struct pool *p = g_pool;
        return p && !in_job ? p->n : 1;
}

void dsv_cpu_pool_run(dsv_pool_fn fn, void *ctx) {
        struct pool *p = g_pool;
        if (!p || in_job || pthread_mutex_trylock(&p->run_lock) != 0) {
                fn(ctx, 0, 1);
                return;
        }
        p->fn = fn;
        p->ctx = ctx;
        uint32_t s = atomic_load(&p->state); /* closed, nobody inside */
        atomic_store(&p->state, ((JOB_ID(s) + 1) << 16) | JOB_OPEN);
        if (atomic_load(&p->sleepers) > 0)
                futex_wake(&p->state);
        in_job = true;
        fn(ctx, 0, p->n);
        in_job = false;
        s = atomic_fetch_and(&p->state, ~JOB_OPEN) & ~JOB_OPEN;
        if (s & JOB_INSIDE) {
                uint64_t t0 = now_ns();
                for (unsigned i = 1; (atomic_load(&p->state) & JOB_INSIDE) != 0; i++) {
                        cpu_relax();
                        if (i % 64 == 0 && now_ns() - t0 >= p->spin_ns)
                                break;
                }
                atomic_store(&p->caller_sleeps, 1);
                while (((s = atomic_load(&p->state)) & JOB_INSIDE) != 0)
                        futex_wait(&p->state, s);
                atomic_store(&p->caller_sleeps, 0);
        }
        pthread_mutex_unlock(&p->run_lock);
}

/* ------------------------------------------------------------------ loops */
struct par {
        int64_t n, grain;
        dsv_range_fn fn;
        void *ctx;
        _Atomic int64_t next;
};

static void par_dynamic(void *v, int id, int nt) {
        struct par *a = v;
        for (;;) {
                int64_t i0 = atomic_fetch_add(&a->next, a->grain);
                if (i0 >= a->n)
                        return;
                a->fn(a->ctx, i0, MIN(a->n, i0 + a->grain), id);
        }
}

void dsv_par_for(int64_t n, int64_t work, dsv_range_fn fn, void *ctx) {
        if (n <= 0)
                return;
        if (n == 1 || work < DSV_PAR_MIN || dsv_cpu_pool_threads() == 1) {
                fn(ctx, 0, n, 0);
                return;
        }
        /* one chunk per thread, claimed like any other: a late thread's share is done by
         * whoever is free */
        struct par a = {.n = n, .grain = DIV_ROUND_UP(n, dsv_cpu_pool_threads()), .fn = fn, .ctx = ctx};
        atomic_init(&a.next, 0);
        dsv_cpu_pool_run(par_dynamic, &a);
}

void dsv_par_for_dyn(int64_t n, int64_t grain, int64_t work, dsv_range_fn fn, void *ctx) {
        if (n <= 0)
                return;
        if (n <= grain || work < DSV_PAR_MIN || dsv_cpu_pool_threads() == 1) {
                fn(ctx, 0, n, 0);
                return;
        }
        struct par a = {.n = n, .grain = MAX(grain, 1), .fn = fn, .ctx = ctx};
        atomic_init(&a.next, 0);
        dsv_cpu_pool_run(par_dynamic, &a);
}
