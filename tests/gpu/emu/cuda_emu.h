/* A CPU emulation of just enough of CUDA to run the backend's kernels (kernels/cuda/<family>.cuh)
 * unchanged on a machine without a GPU, so that their index arithmetic, shared-memory
 * layouts, barriers and warp collectives are exercised against the CPU reference in every
 * build (tests/gpu/test-cuda-emu.cc).
 *
 * Model: a launch runs its blocks one after another; the threads of a block are fibers
 * (ucontext) run round-robin in thread order, each until it reaches a barrier:
 *   __syncthreads / __syncthreads_or   all live threads of the block
 *   __shfl_xor_sync / __ballot_sync / __any_sync   all live lanes of the warp
 * A barrier opens when every thread that has not returned is waiting at it; threads waiting
 * at different kinds of barrier with nobody runnable is reported as a deadlock (a divergent
 * barrier, which is a bug on the GPU too). __shared__ variables become function statics (one
 * per kernel, reused by the blocks in turn); dynamic shared memory is a per-launch buffer
 * filled with a NaN pattern, so reads of unwritten shared memory show up. Atomics are plain
 * read-modify-writes. What this cannot show: races between threads (execution is
 * sequential), timing, and the numerics of the GPU's own libm (expf, cosf).
 * Under AddressSanitizer the fiber switches are announced to it. */
#pragma once

#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define EMU_ASAN 1
#endif

struct dim3 {
        unsigned x, y, z;
        dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct uint4 {
        unsigned x, y, z, w;
};
struct float4 {
        float x, y, z, w;
};

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)
#define DCU_DYN_SMEM(T, name) T *name = (T *)emu::dyn_smem()

using std::max;
using std::min;

inline dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace emu {

enum state { RUNNABLE, AT_BLOCK, AT_WARP, DONE };

struct fiber {
        ucontext_t ctx;
        state st;
        unsigned tid;
        char *stack;
};

struct warp_bar {
        unsigned gen;
        uint64_t val[2][32];
        unsigned dep[2][32]; /* the generation a lane deposited in (lanes that returned keep an old one) */
};

struct block {
        std::vector<fiber> f;
        ucontext_t sched;
        int cur;
        int or_acc, or_result;
        warp_bar w[32];
        std::vector<unsigned char> smem;
        const std::function<void()> *body;
#ifdef EMU_ASAN
        void *fake_stack;
        const void *sched_bottom;
        size_t sched_size;
#endif
};

inline block *B;
#ifdef EMU_ASAN
inline size_t stack_size = 64 * 1024; /* ASan clears a context's whole stack shadow at each switch */
#else
inline size_t stack_size = 256 * 1024;
#endif
inline std::vector<char *> stacks;

inline void *dyn_smem() { return B->smem.data(); }

/* fiber -> scheduler */
inline void yield() {
        fiber &me = B->f[B->cur];
#ifdef EMU_ASAN
        void *fs = nullptr;
        __sanitizer_start_switch_fiber(me.st == DONE ? nullptr : &fs, B->sched_bottom, B->sched_size);
#endif
        swapcontext(&me.ctx, &B->sched);
#ifdef EMU_ASAN
        __sanitizer_finish_switch_fiber(fs, nullptr, nullptr);
#endif
}

inline void trampoline() {
#ifdef EMU_ASAN
        __sanitizer_finish_switch_fiber(nullptr, &B->sched_bottom, &B->sched_size);
#endif
        (*B->body)();
        B->f[B->cur].st = DONE;
        yield();
}

inline void set_thread_idx(unsigned tid) {
        threadIdx.x = tid % blockDim.x;
        threadIdx.y = (tid / blockDim.x) % blockDim.y;
        threadIdx.z = tid / (blockDim.x * blockDim.y);
}

inline void run_block(const std::function<void()> &body, unsigned nthreads) {
        block &b = *B;
        b.body = &body;
        b.f.assign(nthreads, fiber());
        b.or_acc = b.or_result = 0;
        memset(b.w, 0, sizeof(b.w));
        for (auto &w : b.w)
                memset(w.dep, 0xff, sizeof(w.dep));
        while (stacks.size() < nthreads)
                stacks.push_back((char *)malloc(stack_size));
        for (unsigned t = 0; t < nthreads; t++) {
                fiber &f = b.f[t];
                f.st = RUNNABLE;
                f.tid = t;
                f.stack = stacks[t];
                getcontext(&f.ctx);
                f.ctx.uc_stack.ss_sp = f.stack;
                f.ctx.uc_stack.ss_size = stack_size;
                f.ctx.uc_link = nullptr;
                makecontext(&f.ctx, trampoline, 0);
        }
        for (;;) {
                bool ran = false;
                for (unsigned t = 0; t < nthreads; t++) {
                        if (b.f[t].st != RUNNABLE)
                                continue;
                        b.cur = (int)t;
                        set_thread_idx(t);
#ifdef EMU_ASAN
                        void *fs = nullptr;
                        __sanitizer_start_switch_fiber(&fs, b.f[t].stack, stack_size);
#endif
                        swapcontext(&b.sched, &b.f[t].ctx);
#ifdef EMU_ASAN
                        __sanitizer_finish_switch_fiber(fs, nullptr, nullptr);
#endif
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

/* Runs body as a kernel over grid x block with smem bytes of dynamic shared memory. */
inline void launch(dim3 grid, dim3 blk, size_t smem, const std::function<void()> &body) {
        block b;
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
        B = nullptr;
}

/* Frees the fiber stacks (for leak checkers). */
inline void shutdown() {
        for (char *s : stacks)
                free(s);
        stacks.clear();
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

/* ------------------------------------------------------------------ CUDA surface */
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
inline int __popc(unsigned v) { return __builtin_popcount(v); }
template <typename T> inline T atomicAdd(T *p, T v) {
        T o = *p;
        *p = o + v;
        return o;
}
template <typename T> inline T atomicOr(T *p, T v) {
        T o = *p;
        *p = o | v;
        return o;
}
template <typename T> inline T atomicMin(T *p, T v) {
        T o = *p;
        *p = std::min(o, v);
        return o;
}
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
/* separate fp32 operations: this file is compiled with -ffp-contract=off */
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
