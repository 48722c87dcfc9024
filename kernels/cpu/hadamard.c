/* Walsh-Hadamard transform (Sylvester order, orthonormal) of each d-wide group, the
 * indexer's "rotate_activation":
 *   for h = 1, 2, 4, ... < d:  (x[j], x[j+h]) := (x[j] + x[j+h], x[j] - x[j+h])
 *   x := x / sqrt(d), bf16 in faithful mode. */
#include "config.h"

#include <math.h>

#include "kernels/cpu/cpu.h"

struct had_ctx {
        const struct dsv_op_hadamard *p;
        bool faithful;
};

static void hadamard_rows(void *v, int64_t t0, int64_t t1, int thread) {
        const struct dsv_op_hadamard *p = ((struct had_ctx *)v)->p;
        const bool faithful = ((struct had_ctx *)v)->faithful;
        const int64_t N = p->x->ne[0];
        const int d = p->d;
        const float scale = (float)(1.0 / sqrt((double)d));
        for (int64_t t = t0; t < t1; t++) {
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
}

int dsv_cpu_hadamard(const struct dsv_op_hadamard *p, bool faithful) {
        const int64_t T = p->x->ne[1], N = p->x->ne[0];
        struct had_ctx c = {p, faithful};
        dsv_par_for(T, T * N * 8, hadamard_rows, &c);
        return 0;
}
