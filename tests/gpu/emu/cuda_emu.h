/* The execution core of the CPU emulation of CUDA: runs kernels (kernels/cuda/<family>.cuh,
 * compiled by g++) block by block with real barriers and warp collectives, so that their
 * index arithmetic, shared-memory layouts and synchronisation are exercised on a machine
 * without a GPU. tests/gpu/test-cuda-emu.cc drives it directly; the emulated CUDA runtime
 * (cuda_runtime.h, runtime.cc) builds the whole plugin on it.
 *
 * Model: a launch runs its blocks one after another; the threads of a block are fibers run
 * round-robin in thread order, each until it reaches a barrier:
 *   __syncthreads / __syncthreads_or               all live threads of the block
 *   __shfl_xor_sync / __ballot_sync / __any_sync   all live lanes of the warp
 * A barrier opens when every thread that has not returned is waiting at it; threads waiting
 * at different kinds of barrier with nobody runnable is reported as a deadlock (a divergent
 * barrier, which is a bug on the GPU too). __shared__ variables become function statics
 * (thread_local: one per kernel per host thread, reused by the blocks in turn); dynamic shared
 * memory is a per-launch buffer filled with a NaN pattern, so reads of unwritten shared memory
 * show up. Atomics are atomic read-modify-writes. What this cannot show: races between the
 * threads of a block (execution is sequential), timing, and the numerics of the GPU's own
 * libm (expf, cosf).
 *
 * Every piece of launch state (the block being run, threadIdx, blockIdx, fiber stacks) is
 * thread_local: two host threads may run kernels at the same time (one engine per rank).
 * Fibers switch with a few instructions on x86-64 (emu_ctx_switch below; ucontext's
 * swapcontext makes a system call per switch) and with ucontext elsewhere. Under
 * AddressSanitizer and ThreadSanitizer the switches are announced to them (every switch is a
 * synchronisation point for TSan: the threads of a block never run at once). */
#pragma once

#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <type_traits>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define EMU_ASAN 1
#endif
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#define EMU_TSAN 1
#endif
#if defined(__x86_64__) && !defined(EMU_UCONTEXT)
#define EMU_FAST_SWITCH 1
#endif

struct dim3 {
        unsigned x, y, z;
        constexpr dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct uint4 {
        unsigned x, y, z, w;
};
struct int4 {
        int x, y, z, w;
};
struct float2 {
        float x, y;
};
struct float4 {
        float x, y, z, w;
};

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static thread_local
#define __launch_bounds__(...)
#define DCU_DYN_SMEM(T, name) T *name = (T *)emu::dyn_smem()

using std::max;
using std::min;

inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

#ifdef EMU_FAST_SWITCH
/* Saves the callee-saved registers on the current stack, stores the stack pointer in *save
 * and continues on the stack `load` (which was saved the same way, or prepared by
 * emu::fiber_init). The x87 control word and MXCSR are not switched: the fibers of a host
 * thread share its floating-point environment, which no kernel changes (saving and loading
 * them was four fifths of a switch's time, a switch a fifth of the emulated tests' time).
 * Weak: every translation unit that includes this header carries a copy, the linker keeps
 * one. */
extern "C" void emu_ctx_switch(void **save, void *load);
asm(R"(
        .text
        .weak emu_ctx_switch
        .hidden emu_ctx_switch
        .type emu_ctx_switch, @function
emu_ctx_switch:
        pushq %rbp
        pushq %rbx
        pushq %r12
        pushq %r13
        pushq %r14
        pushq %r15
        movq %rsp, (%rdi)
        movq %rsi, %rsp
        popq %r15
        popq %r14
        popq %r13
        popq %r12
        popq %rbx
        popq %rbp
        ret
        .size emu_ctx_switch, .-emu_ctx_switch
)");
#endif

namespace emu {

enum state { RUNNABLE, AT_BLOCK, AT_WARP, DONE };

struct fiber {
#ifdef EMU_FAST_SWITCH
        void *sp;
#else
        ucontext_t ctx;
#endif
        state st;
        unsigned tid;
        char *stack;
#ifdef EMU_TSAN
        void *tsan;
#endif
};

struct warp_bar {
        unsigned gen;
        uint64_t val[2][32];
        unsigned dep[2][32]; /* the generation a lane deposited in (lanes that returned keep an old one) */
};

struct block {
        std::vector<fiber> f;
#ifdef EMU_FAST_SWITCH
        void *sched_sp;
#else
        ucontext_t sched;
#endif
        int cur;
        int or_acc, or_result;
        warp_bar w[32];
        std::vector<unsigned char> smem;
        const std::function<void()> *body;
#ifdef EMU_ASAN
        const void *sched_bottom;
        size_t sched_size;
#endif
#ifdef EMU_TSAN
        void *tsan_sched;
#endif
};

#ifdef EMU_ASAN
inline const size_t stack_size = 64 * 1024; /* ASan clears a context's whole stack shadow at each switch */
#else
inline const size_t stack_size = 256 * 1024;
#endif

/* Fiber stacks of this host thread, kept for the next launch. */
struct stack_pool {
        std::vector<char *> s;
        ~stack_pool() {
                for (char *p : s)
                        free(p);
        }
};
inline thread_local block *B;
inline thread_local stack_pool stacks;

inline void *dyn_smem() { return B->smem.data(); }

/* fiber -> scheduler */
inline void yield() {
        fiber &me = B->f[B->cur];
#ifdef EMU_ASAN
        void *fs = nullptr;
        __sanitizer_start_switch_fiber(me.st == DONE ? nullptr : &fs, B->sched_bottom, B->sched_size);
#endif
#ifdef EMU_TSAN
        __tsan_switch_to_fiber(B->tsan_sched, 0);
#endif
#ifdef EMU_FAST_SWITCH
        emu_ctx_switch(&me.sp, B->sched_sp);
#else
        swapcontext(&me.ctx, &B->sched);
#endif
#ifdef EMU_ASAN
        __sanitizer_finish_switch_fiber(fs, nullptr, nullptr);
#endif
}

/* Where a fiber starts; it never returns (a finished thread parks as DONE). */
inline void trampoline() {
#ifdef EMU_ASAN
        __sanitizer_finish_switch_fiber(nullptr, &B->sched_bottom, &B->sched_size);
#endif
        (*B->body)();
        B->f[B->cur].st = DONE;
        yield();
        abort(); /* never resumed */
}

inline void set_thread_idx(unsigned tid) {
        threadIdx.x = tid % blockDim.x;
        threadIdx.y = (tid / blockDim.x) % blockDim.y;
        threadIdx.z = tid / (blockDim.x * blockDim.y);
}

inline void fiber_init(fiber &f) {
#ifdef EMU_ASAN
        /* a fiber that ended left its frames' redzones in the shadow of this stack (it never
         * returned through them): clear it, as ASan's swapcontext interceptor would */
        __asan_unpoison_memory_region(f.stack, stack_size);
#endif
#ifdef EMU_FAST_SWITCH
        /* the frame emu_ctx_switch pops: r15..rbp, then the return address (trampoline),
         * above it a zero "return address" of the trampoline, so that the trampoline starts
         * with the stack aligned as after a call */
        /* each thread's stack top at another offset modulo 4 KB .. stack_size/4: tops at
         * one power-of-two stride would all fall in the same cache sets, and the round-robin
         * of a block touches every one of them between two visits of a thread */
        const size_t colour = ((size_t)f.tid * 64) % (stack_size / 4);
        uintptr_t top = ((uintptr_t)f.stack + stack_size - colour) & ~(uintptr_t)15;
        uint64_t *sp = (uint64_t *)top;
        *--sp = 0;
        *--sp = (uint64_t)(uintptr_t)&trampoline;
        for (int i = 0; i < 6; i++)
                *--sp = 0;
        f.sp = sp;
#else
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = f.stack;
        f.ctx.uc_stack.ss_size = stack_size;
        f.ctx.uc_link = nullptr;
        makecontext(&f.ctx, trampoline, 0);
#endif
}

/* scheduler -> fiber t */
inline void resume(block &b, unsigned t) {
        b.cur = (int)t;
        set_thread_idx(t);
#ifdef EMU_ASAN
        void *fs = nullptr;
        __sanitizer_start_switch_fiber(&fs, b.f[t].stack, stack_size);
#endif
#ifdef EMU_TSAN
        __tsan_switch_to_fiber(b.f[t].tsan, 0);
#endif
#ifdef EMU_FAST_SWITCH
        emu_ctx_switch(&b.sched_sp, b.f[t].sp);
#else
        swapcontext(&b.sched, &b.f[t].ctx);
#endif
#ifdef EMU_ASAN
        __sanitizer_finish_switch_fiber(fs, nullptr, nullptr);
#endif
}

inline void run_block(const std::function<void()> &body, unsigned nthreads) {
        block &b = *B;
        b.body = &body;
        b.f.assign(nthreads, fiber());
        b.or_acc = b.or_result = 0;
        /* only the warps this block has (a 32-warp reset is ~25 KB of stores per block) */
        for (unsigned w = 0; w * 32 < nthreads; w++) {
                b.w[w].gen = 0;
                memset(b.w[w].val, 0, sizeof(b.w[w].val));
                memset(b.w[w].dep, 0xff, sizeof(b.w[w].dep));
        }
        while (stacks.s.size() < nthreads) {
                char *s = (char *)malloc(stack_size);
                if (!s) {
                        fprintf(stderr, "emu: out of memory for fiber stacks\n");
                        abort();
                }
                stacks.s.push_back(s);
        }
        for (unsigned t = 0; t < nthreads; t++) {
                fiber &f = b.f[t];
                f.st = RUNNABLE;
                f.tid = t;
                f.stack = stacks.s[t];
                fiber_init(f);
#ifdef EMU_TSAN
                f.tsan = __tsan_create_fiber(0);
#endif
        }
#ifdef EMU_TSAN
        b.tsan_sched = __tsan_get_current_fiber();
        struct tsan_cleanup {
                block &b;
                ~tsan_cleanup() {
                        for (auto &f : b.f)
                                __tsan_destroy_fiber(f.tsan);
                }
        } tsan_cleanup_{b};
#endif
        for (;;) {
                bool ran = false;
                for (unsigned t = 0; t < nthreads; t++) {
                        if (b.f[t].st != RUNNABLE)
                                continue;
                        resume(b, t);
                        ran = true;
                }
                /* open the barriers everyone reached */
                unsigned live = 0, at_block = 0;
                for (auto &f : b.f) {
                        live += f.st != DONE;
                        at_block += f.st == AT_BLOCK;
                }
                if (live == 0)
                        break;
                bool opened = false;
                if (at_block == live) {
                        for (auto &f : b.f)
                                f.st = RUNNABLE;
                        b.or_result = b.or_acc;
                        b.or_acc = 0;
                        opened = true;
                }
                for (unsigned w = 0; w * 32 < nthreads && !opened; w++) {
                        unsigned lanes = 0, waiting = 0;
                        for (unsigned l = 0; l < 32 && w * 32 + l < nthreads; l++) {
                                lanes += b.f[w * 32 + l].st != DONE;
                                waiting += b.f[w * 32 + l].st == AT_WARP;
                        }
                        if (waiting && waiting == lanes) {
                                for (unsigned l = 0; l < 32 && w * 32 + l < nthreads; l++)
                                        if (b.f[w * 32 + l].st == AT_WARP)
                                                b.f[w * 32 + l].st = RUNNABLE;
                                b.w[w].gen++;
                                opened = true;
                        }
                }
                if (!ran && !opened) {
                        fprintf(stderr, "emu: deadlock in block (%u,%u,%u): threads wait at different barriers\n", blockIdx.x, blockIdx.y,
                                blockIdx.z);
                        abort();
                }
        }
}

/* Runs body as a kernel over grid x block with smem bytes of dynamic shared memory, on this
 * host thread. */
inline void launch(dim3 grid, dim3 blk, size_t smem, const std::function<void()> &body) {
        block b;
        block *outer = B;
        const dim3 og = gridDim, ob = blockDim, oi = blockIdx, ot = threadIdx;
        B = &b;
        gridDim = grid;
        blockDim = blk;
        const unsigned nthreads = blk.x * blk.y * blk.z;
        if (nthreads == 0 || nthreads > 1024) {
                fprintf(stderr, "emu: bad block size %u\n", nthreads);
                abort();
        }
        b.smem.assign(smem + 16, 0xff);
        for (unsigned z = 0; z < grid.z; z++)
                for (unsigned y = 0; y < grid.y; y++)
                        for (unsigned x = 0; x < grid.x; x++) {
                                blockIdx = dim3(x, y, z);
                                std::fill(b.smem.begin(), b.smem.end(), 0xff);
                                run_block(body, nthreads);
                        }
        B = outer;
        gridDim = og;
        blockDim = ob;
        blockIdx = oi;
        threadIdx = ot;
}

/* Frees this host thread's fiber stacks now (for leak checkers; they are freed at thread
 * exit anyway). */
inline void shutdown() {
        for (char *s : stacks.s)
                free(s);
        stacks.s.clear();
}

inline unsigned lane() { return B->f[B->cur].tid % 32; }
inline unsigned warp() { return B->f[B->cur].tid / 32; }

/* all live lanes of the warp deposit v and wait; returns the generation of this exchange
 * (its slots are val[gen & 1]; a lane took part when dep[gen & 1][lane] == gen) */
inline unsigned warp_exchange(uint64_t v) {
        warp_bar &w = B->w[warp()];
        const unsigned gen = w.gen;
        w.val[gen & 1][lane()] = v;
        w.dep[gen & 1][lane()] = gen;
        B->f[B->cur].st = AT_WARP;
        yield();
        return gen;
}

} // namespace emu

/* ------------------------------------------------------------------ CUDA device surface */
inline void __syncthreads() {
        emu::B->f[emu::B->cur].st = emu::AT_BLOCK;
        emu::yield();
}
inline int __syncthreads_or(int p) {
        emu::B->or_acc |= p != 0;
        __syncthreads();
        return emu::B->or_result;
}
template <typename T> inline T __shfl_xor_sync(unsigned, T v, int o) {
        uint64_t bits = 0;
        memcpy(&bits, &v, sizeof(T));
        unsigned gen = emu::warp_exchange(bits);
        uint64_t got = emu::B->w[emu::warp()].val[gen & 1][emu::lane() ^ (unsigned)o];
        T r;
        memcpy(&r, &got, sizeof(T));
        return r;
}
inline unsigned __ballot_sync(unsigned, int p) {
        const unsigned gen = emu::warp_exchange(p != 0);
        const emu::warp_bar &w = emu::B->w[emu::warp()];
        unsigned m = 0;
        for (unsigned l = 0; l < 32; l++)
                if (w.dep[gen & 1][l] == gen && w.val[gen & 1][l])
                        m |= 1u << l;
        return m;
}
inline int __any_sync(unsigned mask, int p) { return __ballot_sync(mask, p) != 0; }
inline int __all_sync(unsigned mask, int p) { return __ballot_sync(mask, !p) == 0; }
inline int __popc(unsigned v) { return __builtin_popcount(v); }
inline int __popcll(unsigned long long v) { return __builtin_popcountll(v); }
inline int __clz(int v) { return v ? __builtin_clz((unsigned)v) : 32; }
inline int __ffs(int v) { return __builtin_ffs(v); }

/* Atomics: the threads of a block never run at once, but two host threads may run kernels
 * on the same memory (one engine per rank), so these are real atomic operations. */
template <typename T> inline T atomicAdd(T *p, T v) {
        if constexpr (std::is_integral<T>::value) {
                return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
        } else {
                T o = *p, n = o + v;
                while (!__atomic_compare_exchange(p, &o, &n, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
                        n = o + v;
                return o;
        }
}
template <typename T> inline T atomicOr(T *p, T v) { return __atomic_fetch_or(p, v, __ATOMIC_RELAXED); }
template <typename T> inline T atomicAnd(T *p, T v) { return __atomic_fetch_and(p, v, __ATOMIC_RELAXED); }
template <typename T> inline T atomicExch(T *p, T v) { return __atomic_exchange_n(p, v, __ATOMIC_RELAXED); }
template <typename T> inline T atomicMin(T *p, T v) {
        T o = __atomic_load_n(p, __ATOMIC_RELAXED);
        while (v < o && !__atomic_compare_exchange_n(p, &o, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
                ;
        return o;
}
template <typename T> inline T atomicMax(T *p, T v) {
        T o = __atomic_load_n(p, __ATOMIC_RELAXED);
        while (v > o && !__atomic_compare_exchange_n(p, &o, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
                ;
        return o;
}
template <typename T> inline T atomicCAS(T *p, T cmp, T v) {
        __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
        return cmp;
}
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline unsigned __float_as_uint(float f) {
        unsigned u;
        memcpy(&u, &f, 4);
        return u;
}
inline float __uint_as_float(unsigned u) {
        float f;
        memcpy(&f, &u, 4);
        return f;
}
inline int __float_as_int(float f) {
        int u;
        memcpy(&u, &f, 4);
        return u;
}
inline float __int_as_float(int u) {
        float f;
        memcpy(&f, &u, 4);
        return f;
}
/* separate fp32 operations: the emulated sources are compiled with -ffp-contract=off */
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
