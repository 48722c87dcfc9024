/* The fill_random op on the GPU: random tensor contents made in device memory (the weights of
 * a model built from a preset, kernels/backend.h struct dsv_op_fill_random), the same bits as
 * the CPU backend's kernels/cpu/fill.c: both call kernels/fill_random.h per element, integer
 * arithmetic and exact products only. */
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/fill.cuh"

#define FILL_THREADS 256

int dcu_fill_random(struct dcu_ctx *c, const struct dsv_op_fill_random *p) {
        const struct dsv_tensor *o = p->out;
        const int64_t R = dcu_rows(o), K = dcu_cols(o);
        if (R == 0 || K == 0)
                return 0;
        switch (o->type) {
        case DSV_F8_E4M3:
                dcu_fill_random_kernel<0><<<dcu_grid(R), FILL_THREADS, 0, c->stream>>>(o->data, o->stride, K, p->key, p->center,
                                                                                      p->spread, p->exp2, p->exp2_spread);
                break;
        case DSV_BF16:
                dcu_fill_random_kernel<1><<<dcu_grid(R), FILL_THREADS, 0, c->stream>>>(o->data, o->stride, K, p->key, p->center,
                                                                                      p->spread, p->exp2, p->exp2_spread);
                break;
        default:
                dcu_fill_random_kernel<2><<<dcu_grid(R), FILL_THREADS, 0, c->stream>>>(o->data, o->stride, K, p->key, p->center,
                                                                                      p->spread, p->exp2, p->exp2_spread);
                break;
        }
        DCU_LAUNCHED();
        return 0;
}
