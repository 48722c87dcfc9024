/* The CPU backend's fill_random op: random tensor contents, element by element from
 * kernels/fill_random.h (the same function the CUDA plugin's kernel calls, so both write the
 * same bits), rows split over the worker pool. */
#include "config.h"

#include "kernels/cpu/cpu.h"
#include "kernels/fill_random.h"

static void fill_rows(void *v, int64_t r0, int64_t r1, int thread) {
        const struct dsv_op_fill_random *p = v;
        const struct dsv_tensor *o = p->out;
        const int64_t K = o->ne[0];
        (void)thread;
        for (int64_t r = r0; r < r1; r++) {
                void *row = dsv_tensor_row(o, r);
                const uint64_t i0 = (uint64_t)r * (uint64_t)K;
                if (o->type == DSV_F8_E4M3) {
                        uint8_t *q = row;
                        for (int64_t j = 0; j < K; j++)
                                q[j] = dsv_fill_e4m3(p->key, i0 + (uint64_t)j);
                } else if (o->type == DSV_BF16) {
                        uint16_t *b = row;
                        for (int64_t j = 0; j < K; j++)
                                b[j] = dsv_f32_to_bf16(
                                        dsv_fill_value(p->key, i0 + (uint64_t)j, p->center, p->spread, p->exp2, p->exp2_spread));
                } else {
                        float *f = row;
                        for (int64_t j = 0; j < K; j++)
                                f[j] = dsv_fill_value(p->key, i0 + (uint64_t)j, p->center, p->spread, p->exp2, p->exp2_spread);
                }
        }
}

int dsv_cpu_fill_random(const struct dsv_op_fill_random *p) {
        const int64_t R = p->out->ne[1];
        dsv_par_for(R, R * p->out->ne[0] * 8, fill_rows, (void *)p);
        return 0;
}
