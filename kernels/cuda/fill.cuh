/* Kernel of kernels/cuda/fill.cu (the fill_random op): one block per row, each thread a
 * stride of the row's elements, every value from kernels/fill_random.h as on the CPU. */
#pragma once

#include "kernels/cuda/plan.h"
#include "kernels/fill_random.h"

/* TYPE 0: e4m3 codes, 1: bf16, 2: f32. Row r, column j is element r * cols + j. */
template <int TYPE>
__global__ void dcu_fill_random_kernel(void *out, size_t stride, int64_t cols, uint64_t key, int32_t center, int32_t spread,
                                       int32_t exp2, int32_t exp2_spread) {
        const int64_t r = blockIdx.x;
        char *row = (char *)out + (size_t)r * stride;
        const uint64_t i0 = (uint64_t)r * (uint64_t)cols;
        for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
                const uint64_t i = i0 + (uint64_t)j;
                if (TYPE == 0)
                        ((uint8_t *)row)[j] = dsv_fill_e4m3(key, i);
                else if (TYPE == 1)
                        ((uint16_t *)row)[j] = dsv_f32_to_bf16(dsv_fill_value(key, i, center, spread, exp2, exp2_spread));
                else
                        ((float *)row)[j] = dsv_fill_value(key, i, center, spread, exp2, exp2_spread);
        }
}
