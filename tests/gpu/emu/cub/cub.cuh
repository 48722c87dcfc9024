/* The part of CUB the plugin uses (kernels/cuda/sample.cu), for the CPU emulation of CUDA:
 *   BlockScan<T, N>::InclusiveSum, BlockReduce<T, N>::Sum / Reduce   (block collectives: all
 *     threads call, barriers inside; thread 0 combines the values in thread order, so the
 *     sums are left-to-right, not CUB's tree: equal up to rounding)
 *   DeviceSegmentedRadixSort::SortPairs / SortPairsDescending   (stable, on the radix order
 *     of the keys' bits as CUB defines it: -0 < +0, NaNs by their bits; begin_bit/end_bit
 *     must cover the whole key)
 * The sort is queued on the stream like any device work. */
#pragma once

#include <algorithm>
#include <numeric>
#include <vector>

#include "tests/gpu/emu/emu_runtime.h"

namespace cub {

struct Sum {
        template <typename T> T operator()(const T &a, const T &b) const { return a + b; }
};

template <typename T, int N> class BlockScan {
      public:
        struct TempStorage {
                T v[N];
        };
        explicit BlockScan(TempStorage &s) : s_(s) {}
        void InclusiveSum(T in, T &out) {
                const unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
                __syncthreads(); /* the storage may still be read by a previous collective */
                s_.v[t] = in;
                __syncthreads();
                if (t == 0)
                        for (int i = 1; i < N; i++)
                                s_.v[i] = s_.v[i - 1] + s_.v[i];
                __syncthreads();
                out = s_.v[t];
        }

      private:
        TempStorage &s_;
};

template <typename T, int N> class BlockReduce {
      public:
        struct TempStorage {
                T v[N];
        };
        explicit BlockReduce(TempStorage &s) : s_(s) {}
        /* the result is valid in thread 0 (as in CUB; the emulation gives it to every thread) */
        template <typename Op> T Reduce(T in, Op op) {
                const unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
                __syncthreads();
                s_.v[t] = in;
                __syncthreads();
                if (t == 0)
                        for (int i = 1; i < N; i++)
                                s_.v[0] = op(s_.v[0], s_.v[i]);
                __syncthreads();
                T r = s_.v[0];
                return r;
        }
        T Sum(T in) { return Reduce(in, cub::Sum()); }

      private:
        TempStorage &s_;
};

namespace detail {
template <typename K> inline uint64_t radix_key(K k) {
        uint64_t u = 0;
        memcpy(&u, &k, sizeof(K));
        if (std::is_floating_point<K>::value) {
                const uint64_t sign = 1ull << (8 * sizeof(K) - 1);
                const uint64_t mask = sizeof(K) == 8 ? ~0ull : (1ull << (8 * sizeof(K))) - 1;
                u = (u & sign) ? (~u & mask) : (u | sign);
        } else if (std::is_signed<K>::value) {
                u ^= 1ull << (8 * sizeof(K) - 1);
        }
        return u;
}

template <typename K, typename V>
cudaError_t sort_pairs(void *temp, size_t &temp_bytes, const K *kin, K *kout, const V *vin, V *vout, int n, int segs, const int *begin,
                       const int *end, int bit0, int bit1, cudaStream_t s, bool descending) {
        if (!temp) {
                temp_bytes = 256;
                return cudaSuccess;
        }
        if (bit0 != 0 || bit1 != (int)(8 * sizeof(K)) || n < 0 || segs < 0)
                return emu::set_error(cudaErrorInvalidValue);
        return emu::enqueue_op(s, "cub::DeviceSegmentedRadixSort", [=] {
                if (!emu::check_access(begin, sizeof(int) * (size_t)segs, false, "cub sort: begin offsets") ||
                    !emu::check_access(end, sizeof(int) * (size_t)segs, false, "cub sort: end offsets"))
                        return;
                std::vector<int> idx;
                for (int g = 0; g < segs; g++) {
                        const int b = begin[g], e = end[g];
                        if (e <= b)
                                continue;
                        if (!emu::check_access(kin + b, sizeof(K) * (size_t)(e - b), false, "cub sort: keys in") ||
                            !emu::check_access(kout + b, sizeof(K) * (size_t)(e - b), false, "cub sort: keys out") ||
                            !emu::check_access(vin + b, sizeof(V) * (size_t)(e - b), false, "cub sort: values in") ||
                            !emu::check_access(vout + b, sizeof(V) * (size_t)(e - b), false, "cub sort: values out"))
                                return;
                        idx.resize((size_t)(e - b));
                        std::iota(idx.begin(), idx.end(), b);
                        std::stable_sort(idx.begin(), idx.end(), [&](int x, int y) {
                                const uint64_t kx = radix_key(kin[x]), ky = radix_key(kin[y]);
                                return descending ? kx > ky : kx < ky;
                        });
                        std::vector<K> ks(idx.size());
                        std::vector<V> vs(idx.size());
                        for (size_t i = 0; i < idx.size(); i++) {
                                ks[i] = kin[idx[i]];
                                vs[i] = vin[idx[i]];
                        }
                        std::copy(ks.begin(), ks.end(), kout + b);
                        std::copy(vs.begin(), vs.end(), vout + b);
                }
        });
}
} // namespace detail

struct DeviceSegmentedRadixSort {
        template <typename K, typename V>
        static cudaError_t SortPairs(void *temp, size_t &temp_bytes, const K *kin, K *kout, const V *vin, V *vout, int n, int segs,
                                     const int *begin, const int *end, int bit0 = 0, int bit1 = (int)(8 * sizeof(K)), cudaStream_t s = 0) {
                return detail::sort_pairs(temp, temp_bytes, kin, kout, vin, vout, n, segs, begin, end, bit0, bit1, s, false);
        }
        template <typename K, typename V>
        static cudaError_t SortPairsDescending(void *temp, size_t &temp_bytes, const K *kin, K *kout, const V *vin, V *vout, int n,
                                               int segs, const int *begin, const int *end, int bit0 = 0, int bit1 = (int)(8 * sizeof(K)),
                                               cudaStream_t s = 0) {
                return detail::sort_pairs(temp, temp_bytes, kin, kout, vin, vout, n, segs, begin, end, bit0, bit1, s, true);
        }
};

} // namespace cub
