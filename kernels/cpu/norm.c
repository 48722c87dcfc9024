/* RMSNorm (with the fused residual add) and LayerNorm on the CPU.
 *
 *   rmsnorm:   s = res + x;  res := bf16(s);  out = bf16(w * (s * rsqrt(mean(s^2) + eps)))
 *   layernorm: out = bf16((x - mean(x)) * rsqrt(var(x) + eps) * w + b)   (biased variance)
 *
 * Statistics accumulate in double (the reference's fp32 within rounding); the normalisation
 * itself is fp32 like the reference. */
#include "config.h"

#include <math.h>

#include "kernels/cpu/cpu.h"

struct rms_ctx {
        const struct dsv_op_rmsnorm *p;
        bool faithful;
};

static void rmsnorm_rows(void *v, int64_t t0, int64_t t1, int thread) {
        const struct dsv_op_rmsnorm *p = ((struct rms_ctx *)v)->p;
        const bool faithful = ((struct rms_ctx *)v)->faithful;
        const int64_t N = p->out->ne[0];
        for (int64_t t = t0; t < t1; t++) {
                float *o = dsv_tensor_row(p->out, t);
                float *res = p->res ? dsv_tensor_row(p->res, t) : NULL;
                const float *x = p->x ? dsv_tensor_row(p->x, t) : NULL;
                double ss = 0;
                /* s goes into o first (o may alias nothing else), then normalised in place */
                for (int64_t i = 0; i < N; i++) {
                        float s = res ? (x ? res[i] + x[i] : res[i]) : x[i];
                        o[i] = s;
                        ss += (double)s * s;
                }
                if (res)
                        for (int64_t i = 0; i < N; i++)
                                res[i] = dsv_rnd(o[i], faithful);
                float r = 1.0f / sqrtf((float)(ss / (double)N) + p->eps);
                for (int64_t i = 0; i < N; i++)
                        o[i] = dsv_rnd(dsv_load_f(p->w->data, p->w->type, i) * (o[i] * r), faithful);
        }
}

int dsv_cpu_rmsnorm(const struct dsv_op_rmsnorm *p, bool faithful) {
        const int64_t T = p->out->ne[1], N = p->out->ne[0];
        struct rms_ctx c = {p, faithful};
        dsv_par_for(T, T * N * 8, rmsnorm_rows, &c);
        return 0;
}

struct ln_ctx {
        const struct dsv_op_layernorm *p;
        bool faithful;
};

static void layernorm_rows(void *v, int64_t t0, int64_t t1, int thread) {
        const struct dsv_op_layernorm *p = ((struct ln_ctx *)v)->p;
        const bool faithful = ((struct ln_ctx *)v)->faithful;
        const int64_t N = p->out->ne[0];
        for (int64_t t = t0; t < t1; t++) {
                const float *x = dsv_tensor_row(p->x, t);
                float *o = dsv_tensor_row(p->out, t);
                double sum = 0, ss = 0;
                for (int64_t i = 0; i < N; i++)
                        sum += x[i];
                float mean = (float)(sum / (double)N);
                for (int64_t i = 0; i < N; i++) {
                        double d = (double)x[i] - mean;
                        ss += d * d;
                }
                float r = 1.0f / sqrtf((float)(ss / (double)N) + p->eps);
                for (int64_t i = 0; i < N; i++) {
                        float w = dsv_load_f(p->w->data, p->w->type, i);
                        float b = dsv_load_f(p->b->data, p->b->type, i);
                        o[i] = dsv_rnd((x[i] - mean) * r * w + b, faithful);
                }
        }
}

int dsv_cpu_layernorm(const struct dsv_op_layernorm *p, bool faithful) {
        const int64_t T = p->out->ne[1], N = p->out->ne[0];
        struct ln_ctx c = {p, faithful};
        dsv_par_for(T, T * N * 8, layernorm_rows, &c);
        return 0;
}
