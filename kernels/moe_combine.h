/* The MoE combine on host memory: each token's routed-expert outputs, computed one slot per
 * row (possibly on other ranks: expert parallelism), summed into the token's output with the
 * arithmetic of the CPU backend's MOE_EXPERTS op (kernels/cpu/moe.c): in fp32, from +0, in
 * ascending expert id (a repeated id in slot order), each term y * weight, unfused
 * (-ffp-contract=off). So a layout that splits the experts over ranks and combines here
 * gives the bits of one rank. */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* out[t] (row stride out_stride floats) = sum over t's slots j with 0 <= ids[t][j] < E, in
 * ascending (ids[t][j], j), of y[t * K + j] * w[t][j]; y rows are D floats, contiguous; ids
 * and w rows have strides ids_stride and w_stride (elements). -EINVAL when K > 64. */
int dsv_moe_combine(float *out, size_t out_stride, const float *y, const int32_t *ids, size_t ids_stride, const float *w,
                    size_t w_stride, int64_t T, int K, int64_t D, int E);
