/* The CPU backend's worker threads: one persistent pool per process that every kernel splits
 * its work over, instead of a parallel region per op.
 *
 * A job is a function that the calling thread (thread 0) and any worker that joins in time
 * run, fn(ctx, thread, n_threads): it must share its work out by claiming pieces (as the
 * loops below do), never by thread number, since a worker may not take part at all.
 * Workers wait for the next job spinning for a short while (DSV32_CPU_SPIN_US, default
 * 200 us: a decode step issues hundreds of ops back to back, and a futex wakeup costs ~60 us
 * on a virtual machine), then sleep on a futex: an idle daemon uses no CPU. A job started
 * from inside a job, or while another thread runs one, runs on the calling thread alone. */
#pragma once

#include <stdint.h>

typedef void (*dsv_pool_fn)(void *ctx, int thread, int n_threads);

/* The process's pool for a backend of n_threads threads (n_threads - 1 workers are started
 * by the first acquire; later ones share it and keep its size). 0 or -errno. */
int dsv_cpu_pool_acquire(int n_threads);
void dsv_cpu_pool_release(void);
/* Threads a job started now would get (1 without a pool). */
int dsv_cpu_pool_threads(void);
/* Runs fn on the caller and on the workers that join; returns when every one that started
 * it has finished. */
void dsv_cpu_pool_run(dsv_pool_fn fn, void *ctx);

/* Loops over [0, n) on the pool. `work` estimates the loop's cost in flops: below
 * DSV_PAR_MIN the loop runs on the caller. dsv_par_for: one contiguous range per thread;
 * dsv_par_for_dyn: chunks of `grain` (uneven items, or to even out a busy host). Either
 * way the ranges are claimed in order from an atomic counter by whoever is free. */
typedef void (*dsv_range_fn)(void *ctx, int64_t i0, int64_t i1, int thread);
void dsv_par_for(int64_t n, int64_t work, dsv_range_fn fn, void *ctx);
void dsv_par_for_dyn(int64_t n, int64_t grain, int64_t work, dsv_range_fn fn, void *ctx);
