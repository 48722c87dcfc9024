/* The MoE combine on host memory (see moe_combine.h). */
#include "config.h"

#include <errno.h>
#include <string.h>

#include "kernels/moe_combine.h"

int dsv_moe_combine(float *out, size_t out_stride, const float *y, const int32_t *ids, size_t ids_stride, const float *w,
                    size_t w_stride, int64_t T, int K, int64_t D, int E) {
        int order[64];
        if (K < 0 || K > 64 || T < 0 || D < 0)
                return -EINVAL;
        for (int64_t t = 0; t < T; t++) {
                const int32_t *id = ids + (size_t)t * ids_stride;
                const float *wt = w + (size_t)t * w_stride;
                float *o = out + (size_t)t * out_stride;
                int n = 0;
                /* the valid slots sorted by (id, slot): insertion keeps slot order among equals */
                for (int j = 0; j < K; j++) {
                        if (id[j] < 0 || id[j] >= E)
                                continue;
                        int i = n++;
                        while (i > 0 && id[order[i - 1]] > id[j]) {
                                order[i] = order[i - 1];
                                i--;
                        }
                        order[i] = j;
                }
                memset(o, 0, (size_t)D * sizeof(float));
                for (int k = 0; k < n; k++) {
                        const float *src = y + ((size_t)t * (size_t)K + (size_t)order[k]) * (size_t)D;
                        const float s = wt[order[k]];
                        for (int64_t i = 0; i < D; i++)
                                o[i] += src[i] * s;
                }
        }
        return 0;
}
