/* RMSNorm (with the fused residual add), LayerNorm and act_quant on the GPU.
 *
 *   rmsnorm:   s = res + x;  res := bf16(s);  out = bf16(w * (s * r)),  r = 1/sqrt(mean(s^2) + eps)
 *   layernorm: out = bf16((x - mean) * r * w + b),  r = 1/sqrt(var + eps)   (biased variance)
 *   act_quant: per 128 values: scale = ue8m0(amax/448), q = e4m3(clamp(x/scale, +-448));
 *              a block holding a NaN gets scale NaN and all codes 0x7f
 *
 * One block per row for the norms; statistics accumulate in double, as the CPU reference's
 * do, and the normalisation repeats its fp32 operations one by one. A thread touches the same
 * elements in every phase, so out/res/x aliasing behaves as on the CPU. act_quant: one warp
 * per 128-value block, lane l holding values l, l+32, l+64, l+96. */
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/norm.cuh"

#define NORM_THREADS 512

int dcu_rmsnorm(struct dcu_ctx *c, const struct dsv_op_rmsnorm *p, bool faithful) {
        const int64_t T = dcu_rows(p->out), N = dcu_cols(p->out);
        if (T == 0)
                return 0;
        float *res = p->res ? (float *)p->res->data : NULL;
        const float *x = p->x ? (const float *)p->x->data : NULL;
        const int64_t ldr = p->res ? dcu_ld(p->res) : 0, ldx = p->x ? dcu_ld(p->x) : 0;
        if (p->w->type == DSV_BF16)
                dcu_rmsnorm_kernel<uint16_t><<<dcu_grid(T), NORM_THREADS, 0, c->stream>>>(
                        (float *)p->out->data, dcu_ld(p->out), res, ldr, x, ldx, (const uint16_t *)p->w->data, N, p->eps, faithful);
        else
                dcu_rmsnorm_kernel<float><<<dcu_grid(T), NORM_THREADS, 0, c->stream>>>(
                        (float *)p->out->data, dcu_ld(p->out), res, ldr, x, ldx, (const float *)p->w->data, N, p->eps, faithful);
        DCU_LAUNCHED();
        return 0;
}

int dcu_layernorm(struct dcu_ctx *c, const struct dsv_op_layernorm *p, bool faithful) {
        const int64_t T = dcu_rows(p->out), N = dcu_cols(p->out);
        if (T == 0)
                return 0;
        if (p->w->type != p->b->type) {
                /* mixed bf16/f32 weight and bias: not a checkpoint layout; supports_op says no */
                return -EINVAL;
        }
        if (p->w->type == DSV_BF16)
                dcu_layernorm_kernel<uint16_t><<<dcu_grid(T), NORM_THREADS, 0, c->stream>>>(
                        (float *)p->out->data, dcu_ld(p->out), (const float *)p->x->data, dcu_ld(p->x),
                        (const uint16_t *)p->w->data, (const uint16_t *)p->b->data, N, p->eps, faithful);
        else
                dcu_layernorm_kernel<float><<<dcu_grid(T), NORM_THREADS, 0, c->stream>>>(
                        (float *)p->out->data, dcu_ld(p->out), (const float *)p->x->data, dcu_ld(p->x),
                        (const float *)p->w->data, (const float *)p->b->data, N, p->eps, faithful);
        DCU_LAUNCHED();
        return 0;
}

int dcu_quant_rows(struct dcu_ctx *c, const float *x, int64_t ldx, int64_t rows, int64_t cols, uint8_t *q, int64_t ldq,
                   float *s, int64_t s_rs, int64_t s_cs) {
        const int64_t jobs = rows * dcu_ceil_div(cols, DCU_QBLOCK);
        if (jobs == 0)
                return 0;
        dcu_quant_kernel<<<dcu_grid(dcu_ceil_div(jobs, 8)), 256, 0, c->stream>>>(x, ldx, rows, cols, q, ldq, s, s_rs, s_cs);
        DCU_LAUNCHED();
        return 0;
}

int dcu_act_quant(struct dcu_ctx *c, const struct dsv_op_act_quant *p) {
        return dcu_quant_rows(c, (const float *)p->x->data, dcu_ld(p->x), dcu_rows(p->x), dcu_cols(p->x), (uint8_t *)p->q->data,
                              dcu_ld(p->q), (float *)p->s->data, dcu_ld(p->s), 1);
}
