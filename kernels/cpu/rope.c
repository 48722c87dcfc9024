/* Rotary position embedding on the CPU.
 *
 *   angle_i = float(pos) * inv_freq[i]          (fp32; inv_freq carries the YaRN blend)
 *   interleaved (MLA):      (x[2i], x[2i+1])           rotated by angle_i
 *   half-split (indexer):   (x[i],  x[i + rope_dim/2]) rotated by angle_i
 *   (a + ib)(cos + i sin):  a' = a cos - b sin,  b' = a sin + b cos,  bf16 in faithful mode */
#include "config.h"

#include <math.h>
#include <stdlib.h>

#include "kernels/cpu/cpu.h"

int dsv_cpu_rope(const struct dsv_op_rope *p, bool faithful) {
        const int64_t T = p->x->ne[1];
        const int half = p->rope_dim / 2;
        const float *inv_freq = p->inv_freq->data;
        const int32_t *pos = p->pos->data;

        OMP(parallel for schedule(static) if (T * p->n_heads * half * 16 >= DSV_PAR_MIN))
        for (int64_t t = 0; t < T; t++) {
                float cs[2048], sn[2048]; /* rope_dim <= 4096 (config bound) */
                float *row = dsv_tensor_row(p->x, t);
                for (int i = 0; i < half; i++) {
                        float a = (float)pos[t] * inv_freq[i];
                        cs[i] = cosf(a);
                        sn[i] = sinf(a);
                }
                for (int h = 0; h < p->n_heads; h++) {
                        float *x = row + (size_t)h * (size_t)p->head_stride + p->offset;
                        for (int i = 0; i < half; i++) {
                                float *pa = p->interleaved ? &x[2 * i] : &x[i];
                                float *pb = p->interleaved ? &x[2 * i + 1] : &x[i + half];
                                float a = *pa, b = *pb;
                                *pa = dsv_rnd(a * cs[i] - b * sn[i], faithful);
                                *pb = dsv_rnd(a * sn[i] + b * cs[i], faithful);
                        }
                }
        }
        return 0;
}
