/* FP8 block-scaled linear layers and act_quant on the CPU.
 *
 * Equivalent math (reference `linear` with FP8 weights, faithful numerics):
 *   xq, xs = act_quant(x)                   # per 128 values: ue8m0 scale, e4m3 codes
 *   for kb in K blocks:                      # fp32
 *       acc += (sum_{k in kb} xq[k] * w8[n,k]) * (xs[kb] * ws[n/128, kb])
 *   out[n] = bf16(acc)
 * Exact numerics use x unquantized (xs = 1) and no output rounding; with power-of-two weight
 * scales that equals x . dequant(W) up to fp32 summation order. BF16/F32 weights (lm_head,
 * weights_proj, gate) use the same blocked loop with scale 1. Partial last blocks are fine.
 *
 * This file prepares the operands (act_quant, activations in the lane order of gemm.h) and
 * splits the output rows over the worker pool; the sums themselves run in one of the
 * kernels of gemm.h, all of which give the same bits. */
#include "config.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "kernels/cpu/cpu.h"
#include "kernels/cpu/gemm.h"

void dsv_quant_row(const float *x, int64_t n, uint8_t *q, float *s) {
        for (int64_t b = 0; b * DSV_QBLOCK < n; b++) {
                int64_t k0 = b * DSV_QBLOCK, len = MIN(n - k0, DSV_QBLOCK);
                float amax = 0;
                bool nan = false;
                for (int64_t k = 0; k < len; k++) {
                        float a = fabsf(x[k0 + k]);
                        nan |= a != a;
                        amax = a > amax ? a : amax;
                }
                float sc = nan ? NAN : dsv_act_scale(amax);
                float inv = 1.0f / sc;
                s[b] = sc;
                for (int64_t k = 0; k < len; k++)
                        q[k0 + k] = nan ? 0x7f : dsv_quant_e4m3(x[k0 + k], inv);
        }
}

/* 16 lanes of e4m3 -> f32 with integer ops and blends (no branches, no table):
 *   normal (exponent field != 0): bits = sign | (em << 20) + (120 << 23)
 *   subnormal: (em & 7) * 2^-9;  em == 0x7f: NaN */
typedef uint8_t v16b __attribute__((vector_size(16)));
typedef uint32_t v16u __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));
typedef float v16f __attribute__((vector_size(64)));

DSV_HOT void dsv_e4m3_row_to_f32(const uint8_t *q, int64_t n, float *out) {
        int64_t i = 0;
        for (; i + 16 <= n; i += 16) {
                v16b b8;
                memcpy(&b8, q + i, sizeof(b8));
                v16u b = __builtin_convertvector(b8, v16u);
                v16u em = b & 0x7fu;
                v16u sign = (b & 0x80u) << 24;
                v16u normal = (em << 20) + (120u << 23);
                v16f subf = __builtin_convertvector((v16i)(em & 7u), v16f) * 0x1p-9f;
                v16u sub = (v16u)subf;
                v16u is_normal = (v16u)(em >= 8u);
                v16u mag = (normal & is_normal) | (sub & ~is_normal);
                v16u is_nan = (v16u)(em == 0x7fu);
                mag = (mag & ~is_nan) | (0x7fc00000u & is_nan);
                v16f f = (v16f)(mag | sign);
                memcpy(out + i, &f, sizeof(f));
        }
        for (; i < n; i++)
                out[i] = dsv_e4m3_to_f32(q[i]);
}

static void act_quant_rows(void *v, int64_t t0, int64_t t1, int thread) {
        const struct dsv_op_act_quant *p = v;
        const int64_t K = p->x->ne[0];
        for (int64_t t = t0; t < t1; t++)
                dsv_quant_row(dsv_tensor_row(p->x, t), K, dsv_tensor_row(p->q, t), dsv_tensor_row(p->s, t));
}

int dsv_cpu_act_quant(const struct dsv_op_act_quant *p) {
        const int64_t T = p->x->ne[1], K = p->x->ne[0];
        dsv_par_for(T, T * K * 8, act_quant_rows, (void *)p);
        return 0;
}

/* a power of two whose products with the other scales and the block sums stay exact */
static inline bool tame_pow2(float s) {
        uint32_t u = dsv_f32_bits(s) & 0x7fffffffu;
        int e = (int)(u >> 23) - 127;
        return (u & 0x7fffffu) == 0 && e >= -60 && e <= 60;
}

/* Position of lane j, parity e of step s in block kb (gemm.h). */
static inline int64_t lane_k(bool fp8, int64_t kb, int s, int j, int e) {
        if (fp8)
                return kb * DSV_QBLOCK + 64 * (s / 2) + 16 * (j / 4) + 8 * (s % 2) + 2 * (j % 4) + e;
        return kb * DSV_QBLOCK + 32 * s + 2 * j + e;
}

struct lin_ctx {
        const struct dsv_op_linear *p;
        struct dsv_gemm g;
        float *xf, *xs;
        uint16_t *xb; /* NULL: no bf16 copy wanted */
        bool quant;
        _Atomic bool xb_inexact; /* some activation is not a bf16 */
        _Atomic int err;
};

/* Activations of tokens [t0, t1): act_quant'ed (faithful FP8) or as they are, in lane order. */
static void prep_rows(void *v, int64_t t0, int64_t t1, int thread) {
        struct lin_ctx *c = v;
        const struct dsv_op_linear *p = c->p;
        const int64_t K = c->g.K, Kp = c->g.Kp, nbk = c->g.nbk;
        const bool fp8 = c->g.wtype == DSV_F8_E4M3;
        float *val = dsv_cpu_scratch(3, (size_t)Kp * sizeof(float));
        uint8_t q[32768];
        if (!val) {
                atomic_store(&c->err, -ENOMEM);
                return;
        }
        for (int64_t t = t0; t < t1; t++) {
                const float *x = dsv_tensor_row(p->x, t);
                bool inexact = false;
                if (c->quant) {
                        dsv_quant_row(x, K, q, c->xs + t * nbk);
                        for (int64_t k = 0; k < K; k++)
                                val[k] = dsv_e4m3_to_f32(q[k]);
                } else {
                        memcpy(val, x, (size_t)K * sizeof(float));
                }
                for (int64_t k = K; k < Kp; k++)
                        val[k] = 0;
                float *xf = c->xf + t * Kp;
                uint16_t *xb = c->xb ? c->xb + t * Kp : NULL;
                for (int64_t kb = 0; kb < nbk; kb++)
                        for (int s = 0; s < 4; s++)
                                for (int e = 0; e < 2; e++)
                                        for (int j = 0; j < 16; j++) {
                                                float a = val[lane_k(fp8, kb, s, j, e)];
                                                xf[kb * DSV_QBLOCK + 32 * s + 16 * e + j] = a;
                                                if (xb) {
                                                        uint16_t h = dsv_f32_to_bf16(a);
                                                        inexact |= dsv_bf16_to_f32(h) != a && a == a;
                                                        xb[kb * DSV_QBLOCK + 32 * s + 2 * j + e] = h;
                                                }
                                        }
                if (inexact)
                        atomic_store(&c->xb_inexact, true);
        }
}

/* Output row groups [i0, i1) of 4 rows. */
static void gemm_rows(void *v, int64_t i0, int64_t i1, int thread) {
        struct lin_ctx *c = v;
        dsv_gemm_fn fn = dsv_cpu_gemm_kernel(&c->g);
        int r = fn(&c->g, 4 * i0, MIN(c->g.N, 4 * i1), 0, c->g.T);
        if (r < 0)
                atomic_store(&c->err, r);
}

int dsv_cpu_linear(const struct dsv_op_linear *p) {
        const int64_t T = p->x->ne[1], K = p->x->ne[0], N = p->w->ne[1];
        const int64_t nbk = DIV_ROUND_UP(K, DSV_QBLOCK), Kp = nbk * DSV_QBLOCK;
        const struct dsv_tensor *w = p->w;
        struct lin_ctx c = {.p = p, .quant = p->quant_in && w->type == DSV_F8_E4M3};

        if (T == 0 || N == 0)
                return 0;
        if (nbk > 256)
                return -E2BIG; /* K <= 32768 */
        c.xf = dsv_cpu_scratch(0, (size_t)T * (size_t)Kp * sizeof(float));
        if (c.quant)
                c.xs = dsv_cpu_scratch(1, (size_t)T * (size_t)nbk * sizeof(float));
        /* a bf16 copy for the kernels that multiply in bf16: worth it when the products are
         * exact, i.e. codes or bf16 values times FP8 or bf16 weights */
        const bool want_xb = dsv_cpu_isa_current() == DSV_CPU_ISA_AVX512BF16 && w->type != DSV_F32;
        if (want_xb)
                c.xb = dsv_cpu_scratch(4, (size_t)T * (size_t)Kp * sizeof(uint16_t));
        if (!c.xf || (c.quant && !c.xs) || (want_xb && !c.xb))
                return -ENOMEM;
        atomic_init(&c.xb_inexact, false);
        atomic_init(&c.err, 0);
        c.g = (struct dsv_gemm){
                .wtype = w->type, .w = w->data, .w_stride = w->stride, .N = N, .K = K, .Kp = Kp, .nbk = nbk, .T = T,
                .xf = c.xf, .xs = c.xs, .out = p->out->data, .out_stride = p->out->stride / sizeof(float),
                .round_out = p->round_out};
        if (w->type == DSV_F8_E4M3) {
                c.g.ws = w->scale->data;
                c.g.ws_stride = w->scale->stride / sizeof(float);
        }
        dsv_par_for(T, T * K * 8, prep_rows, &c);
        if (atomic_load(&c.err) < 0)
                return atomic_load(&c.err);
        c.g.xb = c.xb && !atomic_load(&c.xb_inexact) ? c.xb : NULL;
        /* every scale product a power of two: the kernels may fuse the block scaling */
        c.g.exact_scales = true;
        for (int64_t i = 0; c.g.ws && i < DIV_ROUND_UP(N, DSV_QBLOCK) && c.g.exact_scales; i++)
                for (int64_t kb = 0; kb < nbk; kb++)
                        c.g.exact_scales &= tame_pow2(c.g.ws[(size_t)i * c.g.ws_stride + (size_t)kb]);
        for (int64_t i = 0; c.xs && i < T * nbk && c.g.exact_scales; i++)
                c.g.exact_scales &= tame_pow2(c.xs[i]);
        /* row groups handed out in chunks, several per thread: a thread that is held up
         * (a shared host) leaves its rows to the others */
        const int64_t groups = DIV_ROUND_UP(N, 4);
        dsv_par_for_dyn(groups, MAX(1, groups / (8 * dsv_cpu_pool_threads())), T * N * K, gemm_rows, &c);
        return atomic_load(&c.err);
}
