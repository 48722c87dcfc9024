/* The CPU backend's worker threads: one persistent pool per process that every kernel splits
 * its work over, instead of a parallel region per op.
 *
 * A job is a function every thread of the pool runs once, fn(ctx, thread, n_threads), the
 * calling thread being thread 0. Workers wait for the next job spinning for a short while
 * (DSV32_CPU_SPIN_US, default 200 us: a decode step issues hundreds of ops back to back, and
 * a futex wakeup costs ~60 us on a virtual machine), then sleep on a futex: an idle daemon
 * uses no CPU. A job started from inside a job, or while another thread runs one, runs on
 * the calling thread alone (fn(ctx, 0, 1)), so jobs must be correct for any thread count. */
#pragma once

#include <stdint.h>

typedef void (*dsv_pool_fn)(void *ctx, int thread, int n_threads);

/* The process's pool for a backend of n_threads threads (n_threads - 1 workers are started
 * by the first acquire; later ones share it and keep its size). 0 or -errno. */
int dsv_cpu_pool_acquire(int n_threads);
void dsv_cpu_pool_release(void);
/* Threads a job started now would get (1 without a pool). */
int dsv_cpu_pool_threads(void);
/* Runs fn on every thread of the pool and returns when all have finished. */
void dsv_cpu_pool_run(dsv_pool_fn fn, void *ctx);

/* Loops over [0, n) on the pool. `work` estimates the loop's cost in flops: below
 * DSV_PAR_MIN the loop runs on the caller. Static: contiguous ranges, one per thread.
 * Dynamic: chunks of `grain` handed out in order by an atomic counter (uneven items). */
typedef void (*dsv_range_fn)(void *ctx, int64_t i0, int64_t i1, int thread);
void dsv_par_for(int64_t n, int64_t work, dsv_range_fn fn, void *ctx);
void dsv_par_for_dyn(int64_t n, int64_t grain, int64_t work, dsv_range_fn fn, void *ctx);
