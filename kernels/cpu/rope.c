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

struct rope_ctx {
        const struct dsv_op_rope *p;
        bool faithful;
};

static void rope_rows(void *v, int64_t t0, int64_t t1, int thread) {
        const struct dsv_op_rope *p = ((struct rope_ctx *)v)->p;
        const bool faithful = ((struct rope_ctx *)v)->faithful;
        const int half = p->rope_dim / 2;
        const float *inv_freq = p->inv_freq->data;
        const int32_t *pos = p->pos->data;

        for (int64_t t = t0; t < t1; t++) {
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
}

int dsv_cpu_rope(const struct dsv_op_rope *p, bool faithful) {
        const int64_t T = p->x->ne[1];
        struct rope_ctx c = {p, faithful};
        dsv_par_for(T, T * p->n_heads * (p->rope_dim / 2) * 16, rope_rows, &c);
        return 0;
}
