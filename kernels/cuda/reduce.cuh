/* Warp and block reductions used by several kernels (templates: a translation unit that does
 * not use one does not see it). Block reductions take a shared scratch of 32 entries, end
 * with the result in every thread, and contain __syncthreads(): all threads must call. */
#pragma once

#include <cuda_runtime.h>

/* The block's dynamic shared memory as an array of T (a CPU emulation of the kernels defines
 * its own). */
#ifndef DCU_DYN_SMEM
#define DCU_DYN_SMEM(T, name) extern __shared__ T name[]
#endif

template <typename T> static __device__ __forceinline__ T dcu_warp_sum(T v) {
#pragma unroll
        for (int o = 16; o > 0; o >>= 1)
                v += __shfl_xor_sync(0xffffffffu, v, o);
        return v;
}

/* max ignoring NaN (fmaxf semantics) */
template <typename T> static __device__ __forceinline__ T dcu_warp_max(T v) {
#pragma unroll
        for (int o = 16; o > 0; o >>= 1)
                v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
        return v;
}

template <typename T> static __device__ __forceinline__ T dcu_block_sum(T v, T *sh) {
        const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
        v = dcu_warp_sum(v);
        __syncthreads(); /* sh may still be read by a previous reduction */
        if (lane == 0)
                sh[warp] = v;
        __syncthreads();
        T r = 0;
        if (warp == 0) {
                r = lane < nw ? sh[lane] : (T)0;
                r = dcu_warp_sum(r);
                if (lane == 0)
                        sh[0] = r;
        }
        __syncthreads();
        return sh[0];
}

template <typename T> static __device__ __forceinline__ T dcu_block_max(T v, T *sh) {
        const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
        v = dcu_warp_max(v);
        __syncthreads();
        if (lane == 0)
                sh[warp] = v;
        __syncthreads();
        if (warp == 0) {
                T r = lane < nw ? sh[lane] : (T)-INFINITY;
                r = dcu_warp_max(r);
                if (lane == 0)
                        sh[0] = r;
        }
        __syncthreads();
        return sh[0];
}

/* Row pointer of a strided 2-D array. */
template <typename T> static __device__ __forceinline__ T *dcu_row(T *base, int64_t ld, int64_t r) { return base + r * ld; }
