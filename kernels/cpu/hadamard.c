/* Walsh-Hadamard transform (Sylvester order, orthonormal) of each d-wide group, the
 * indexer's "rotate_activation":
 *   for h = 1, 2, 4, ... < d:  (x[j], x[j+h]) := (x[j] + x[j+h], x[j] - x[j+h])
 *   x := x / sqrt(d), bf16 in faithful mode. */
#include "config.h"

#include <math.h>

#include "kernels/cpu/cpu.h"

int dsv_cpu_hadamard(const struct dsv_op_hadamard *p, bool faithful) {
        const int64_t T = p->x->ne[1], N = p->x->ne[0];
        const int d = p->d;
        const float scale = (float)(1.0 / sqrt((double)d));
        OMP(parallel for schedule(static) if (T * N * 8 >= DSV_PAR_MIN))
        for (int64_t t = 0; t < T; t++) {
                float *row = dsv_tensor_row(p->x, t);
                for (int64_t g = 0; g + d <= N; g += d) {
                        float *x = row + g;
                        for (int h = 1; h < d; h *= 2)
                                for (int i = 0; i < d; i += 2 * h)
                                        for (int j = i; j < i + h; j++) {
                                                float a = x[j], b = x[j + h];
                                                x[j] = a + b;
                                                x[j + h] = a - b;
                                        }
                        for (int j = 0; j < d; j++)
                                x[j] = dsv_rnd(x[j] * scale, faithful);
                }
        }
        return 0;
}
