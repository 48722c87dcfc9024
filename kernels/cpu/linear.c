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
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "kernels/cpu/cpu.h"
#include "kernels/cpu/gemm.h"

/* Vectorised (per-ISA clones, simd loops): the largest |x| of a block is the same in any
 * order, and each code depends on its value and the scale only. */
DSV_HOT void dsv_quant_row(const float *x, int64_t n, uint8_t *q, float *s) {
        for (int64_t b = 0; b * DSV_QBLOCK < n; b++) {
                int64_t k0 = b * DSV_QBLOCK, len = MIN(n - k0, DSV_QBLOCK);
                float amax = 0;
                int nan = 0;
                OMP(simd reduction(max : amax) reduction(| : nan))
                for (int64_t k = 0; k < len; k++) {
                        float a = fabsf(x[k0 + k]);
                        nan |= a != a;
                        amax = a > amax ? a : amax;
                }
                float sc = nan ? NAN : dsv_act_scale(amax);
                float inv = 1.0f / sc;
                s[b] = sc;
                if (nan) {
                        memset(q + k0, 0x7f, (size_t)len);
                        continue;
                }
                /* dsv_quant_e4m3 without branches (the compiler vectorises it; the block has
                 * no NaN): scale (exact, a power of two), clamp to +-448, round to nearest
                 * even on the normal grid or, below 2^-6, on the subnormal one */
                OMP(simd)
                for (int64_t k = 0; k < len; k++) {
                        float y = x[k0 + k] * inv;
                        y = y > DSV_FP8_MAX ? DSV_FP8_MAX : (y < -DSV_FP8_MAX ? -DSV_FP8_MAX : y);
                        uint32_t u = dsv_f32_bits(y), a = u & 0x7fffffffu;
                        uint32_t r = a + 0x7ffffu + ((a >> 20) & 1u);
                        uint32_t cn = (((r >> 23) - 120u) << 3) | ((r >> 20) & 7u);
                        cn = cn > 0x7eu ? 0x7eu : cn;
                        float f = dsv_bits_f32(a) * 512.0f;
                        uint32_t cs = (uint32_t)((f + 0x1p23f) - 0x1p23f);
                        uint32_t c = a < 0x3c800000u ? cs : cn;
                        q[k0 + k] = (uint8_t)(((u >> 24) & 0x80u) | c);
                }
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

/* Position of lane j, parity e of step s in block kb (gemm.h). */
static inline int64_t lane_k(bool fp8, int64_t kb, int s, int j, int e) {
        if (fp8)
                return kb * DSV_QBLOCK + 64 * (s / 2) + 16 * (j / 4) + 8 * (s % 2) + 2 * (j % 4) + e;
        return kb * DSV_QBLOCK + 32 * s + 2 * j + e;
}

/* One linear of a job: its operands, and its share of the job's chunks of 4-row groups. */
struct lin_job {
        const struct dsv_op_linear *p;
        struct dsv_gemm g;
        float *xf, *xs;
        uint16_t *xb;          /* NULL: no bf16 copy wanted */
        const struct lin_job *same_x; /* prepared activations of an earlier job reused */
        bool quant;
        bool fill_xf, fill_xb; /* what prep_rows writes */
        int64_t chunk0, grain; /* job chunks [chunk0, next job's chunk0): grain groups each */
        _Atomic bool xb_inexact; /* some activation is not a bf16 */
        _Atomic int err;
};

/* Lane order tables (gemm.h), per block: position o of the f32 layout (32 s + 16 e + j) or
 * of the bf16 layout (32 s + 2 j + e) reads x[128 kb + tab[o]]; and e4m3 values by code. */
static uint8_t lane_f32[2][DSV_QBLOCK], lane_bf16[2][DSV_QBLOCK];
static float e4m3_val[256];
static uint16_t e4m3_bf16[256];
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

static void tables_init(void) {
        for (int fp8 = 0; fp8 < 2; fp8++)
                for (int s = 0; s < 4; s++)
                        for (int e = 0; e < 2; e++)
                                for (int j = 0; j < 16; j++) {
                                        lane_f32[fp8][32 * s + 16 * e + j] = (uint8_t)lane_k(fp8, 0, s, j, e);
                                        lane_bf16[fp8][32 * s + 2 * j + e] = (uint8_t)lane_k(fp8, 0, s, j, e);
                                }
        for (int c = 0; c < 256; c++) {
                e4m3_val[c] = dsv_e4m3_to_f32((uint8_t)c);
                e4m3_bf16[c] = dsv_f32_to_bf16(e4m3_val[c]); /* exact */
        }
}

/* Activations of tokens [t0, t1): act_quant'ed (faithful FP8) or as they are, in lane order,
 * as f32 (fill_xf) or bf16 (fill_xb, noting any value that is not a bf16). */
static void prep_rows(void *v, int64_t t0, int64_t t1, int thread) {
        struct lin_job *c = v;
        const struct dsv_op_linear *p = c->p;
        const int64_t K = c->g.K, Kp = c->g.Kp, nbk = c->g.nbk;
        const int fp8 = c->g.wtype == DSV_F8_E4M3;
        float *val = dsv_cpu_scratch(3, (size_t)Kp * sizeof(float));
        uint8_t q[32768];
        if (!val) {
                atomic_store(&c->err, -ENOMEM);
                return;
        }
        for (int64_t t = t0; t < t1; t++) {
                const float *x = dsv_tensor_row(p->x, t);
                bool inexact = false;
                if (c->quant && !c->fill_xf) {
                        /* codes: straight to bf16, exact */
                        uint16_t *xb = c->xb + t * Kp;
                        dsv_quant_row(x, K, q, c->xs + t * nbk);
                        memset(q + K, 0, (size_t)(Kp - K));
                        if (fp8 && dsv_cpu_isa_current() == DSV_CPU_ISA_AVX512BF16 && dsv_gemm_avx512bf16_codes(q, Kp, xb) == 0)
                                continue; /* the same words, by table */
                        for (int64_t kb = 0; kb < nbk; kb++)
                                for (int o = 0; o < DSV_QBLOCK; o++)
                                        xb[kb * DSV_QBLOCK + o] = e4m3_bf16[q[kb * DSV_QBLOCK + lane_bf16[fp8][o]]];
                        continue;
                }
                if (c->quant) {
                        dsv_quant_row(x, K, q, c->xs + t * nbk);
                        for (int64_t k = 0; k < K; k++)
                                val[k] = e4m3_val[q[k]];
                } else {
                        memcpy(val, x, (size_t)K * sizeof(float));
                }
                for (int64_t k = K; k < Kp; k++)
                        val[k] = 0;
                if (c->fill_xf) {
                        float *xf = c->xf + t * Kp;
                        for (int64_t kb = 0; kb < nbk; kb++)
                                for (int o = 0; o < DSV_QBLOCK; o++)
                                        xf[kb * DSV_QBLOCK + o] = val[kb * DSV_QBLOCK + lane_f32[fp8][o]];
                }
                if (c->fill_xb) {
                        uint16_t *xb = c->xb + t * Kp;
                        for (int64_t kb = 0; kb < nbk; kb++)
                                for (int o = 0; o < DSV_QBLOCK; o++) {
                                        float a = val[kb * DSV_QBLOCK + lane_bf16[fp8][o]];
                                        uint16_t h = dsv_f32_to_bf16(a);
                                        inexact |= dsv_bf16_to_f32(h) != a && a == a;
                                        xb[kb * DSV_QBLOCK + o] = h;
                                }
                }
                if (inexact)
                        atomic_store(&c->xb_inexact, true);
        }
}

static int64_t act_floats(const struct dsv_op_linear *p) {
        return p->x->ne[1] * DIV_ROUND_UP(p->x->ne[0], DSV_QBLOCK) * DSV_QBLOCK;
}
static bool want_bf16_copy(const struct dsv_op_linear *p) {
        /* for the kernels that multiply in bf16: worth it when the products are exact, i.e.
         * codes or bf16 values times FP8 or bf16 weights */
        return dsv_cpu_isa_current() == DSV_CPU_ISA_AVX512BF16 && p->w->type != DSV_F32;
}
/* same activations in the same lane order, quantized alike */
static bool same_prep(const struct dsv_op_linear *a, const struct dsv_op_linear *b) {
        bool qa = a->quant_in && a->w->type == DSV_F8_E4M3, qb = b->quant_in && b->w->type == DSV_F8_E4M3;
        return a->x->data == b->x->data && a->x->stride == b->x->stride && a->x->ne[0] == b->x->ne[0] &&
               a->x->ne[1] == b->x->ne[1] && qa == qb && (a->w->type == DSV_F8_E4M3) == (b->w->type == DSV_F8_E4M3) &&
               want_bf16_copy(a) == want_bf16_copy(b);
}

/* Sets up job j for p with activation buffers xf, xs, xb (or another job's, same_x). */
static int job_init(struct lin_job *j, const struct dsv_op_linear *p, float *xf, float *xs, uint16_t *xb,
                    const struct lin_job *same_x) {
        const int64_t T = p->x->ne[1], K = p->x->ne[0], N = p->w->ne[1];
        const int64_t nbk = DIV_ROUND_UP(K, DSV_QBLOCK), Kp = nbk * DSV_QBLOCK;
        const struct dsv_tensor *w = p->w;
        if (nbk > 256)
                return -E2BIG; /* K <= 32768 */
        memset(j, 0, sizeof(*j));
        j->p = p;
        j->quant = p->quant_in && w->type == DSV_F8_E4M3;
        j->same_x = same_x;
        j->xf = same_x ? same_x->xf : xf;
        j->xs = same_x ? same_x->xs : (j->quant ? xs : NULL);
        j->xb = same_x ? same_x->xb : (want_bf16_copy(p) ? xb : NULL);
        atomic_init(&j->xb_inexact, false);
        atomic_init(&j->err, 0);
        j->g = (struct dsv_gemm){
                .wtype = w->type, .w = w->data, .w_stride = w->stride, .N = N, .K = K, .Kp = Kp, .nbk = nbk, .T = T,
                .xf = j->xf, .xs = j->xs, .out = p->out->data, .out_stride = p->out->stride / sizeof(float),
                .round_out = p->round_out};
        if (w->type == DSV_F8_E4M3) {
                j->g.ws = w->scale->data;
                j->g.ws_stride = w->scale->stride / sizeof(float);
        }
        return 0;
}

/* The bf16 copy when the kernel wants one, else (or when some value is not a bf16 after
 * all: exact numerics) the f32 one. */
static void job_prep_plan(struct lin_job *j) {
        j->fill_xb = j->xb != NULL;
        j->fill_xf = !j->fill_xb;
}

/* After prep_rows ran over the job's rows (unless shared): the f32 copy where the bf16 one
 * turned out inexact, and what the kernels need to know of the activations. */
static int job_prep_finish(struct lin_job *j) {
        const int64_t T = j->g.T, nbk = j->g.nbk;
        if (!j->same_x) {
                if (atomic_load(&j->err) < 0)
                        return atomic_load(&j->err);
                if (j->fill_xb && atomic_load(&j->xb_inexact)) {
                        j->fill_xb = false;
                        j->fill_xf = true;
                        dsv_par_for(T, T * j->g.K * 8, prep_rows, j);
                        if (atomic_load(&j->err) < 0)
                                return atomic_load(&j->err);
                }
        }
        const struct lin_job *src = j->same_x ? j->same_x : j;
        j->g.xb = j->xb && !atomic_load(&((struct lin_job *)src)->xb_inexact) ? j->xb : NULL;
        /* activation scales all powers of two: the kernels may fuse the block scaling of rows
         * whose weight scales are too (they check those as they read them: a pass over every
         * weight scale here, on the calling thread, cost ~1% of a decode step) */
        j->g.xs_pow2 = true;
        for (int64_t i = 0; j->xs && i < T * nbk && j->g.xs_pow2; i++)
                j->g.xs_pow2 &= dsv_scale_pow2(j->xs[i]);
        return 0;
}

/* Prepares the activations (unless shared) and what the kernels need to know of them. */
static int job_prep(struct lin_job *j) {
        if (!j->same_x) {
                job_prep_plan(j);
                dsv_par_for(j->g.T, j->g.T * j->g.K * 8, prep_rows, j);
        }
        return job_prep_finish(j);
}

/* Several jobs' activations in one pool job: rows [row0[i], row0[i+1]) of the whole are job
 * i's (jobs that share another's have none). An MoE layer prepares every expert's rows at
 * once instead of two small pool jobs per expert (~450 per 512-token pass of m474, a few
 * rows each, the worker idle in between). */
struct prep_all {
        struct lin_job *jobs;
        const int64_t *row0;
        int n;
};

static void prep_all_rows(void *v, int64_t i0, int64_t i1, int thread) {
        const struct prep_all *pa = v;
        for (int j = 0; j < pa->n && i0 < i1; j++) {
                const int64_t a = MAX(i0, pa->row0[j]), b = MIN(i1, pa->row0[j + 1]);
                if (a < b)
                        prep_rows(&pa->jobs[j], a - pa->row0[j], b - pa->row0[j], thread);
        }
}

static int jobs_prep(struct lin_job *jobs, int n) {
        int64_t *row0 = malloc(((size_t)n + 1) * sizeof(int64_t)), work = 0;
        int r = 0;
        if (!row0)
                return -ENOMEM;
        row0[0] = 0;
        for (int i = 0; i < n; i++) {
                const int64_t rows = jobs[i].same_x ? 0 : jobs[i].g.T;
                if (!jobs[i].same_x)
                        job_prep_plan(&jobs[i]);
                row0[i + 1] = row0[i] + rows;
                work += rows * jobs[i].g.K * 8;
        }
        struct prep_all pa = {.jobs = jobs, .row0 = row0, .n = n};
        dsv_par_for_dyn(row0[n], MAX(1, row0[n] / (8 * dsv_cpu_pool_threads())), work, prep_all_rows, &pa);
        for (int i = 0; i < n && r >= 0; i++)
                r = job_prep_finish(&jobs[i]);
        free(row0);
        return r;
}

struct run_ctx {
        struct lin_job *jobs;
        int n;
        _Atomic int err;
};

/* Chunks [c0, c1) of the jobs' row groups. */
static void gemm_chunks(void *v, int64_t c0, int64_t c1, int thread) {
        struct run_ctx *rc = v;
        int j = 0;
        for (int64_t c = c0; c < c1; c++) {
                while (j + 1 < rc->n && rc->jobs[j + 1].chunk0 <= c)
                        j++;
                while (j > 0 && rc->jobs[j].chunk0 > c)
                        j--;
                const struct lin_job *jb = &rc->jobs[j];
                int64_t g0 = (c - jb->chunk0) * jb->grain;
                int64_t n0 = 4 * g0, n1 = MIN(jb->g.N, 4 * (g0 + jb->grain));
                int r = dsv_cpu_gemm_kernel(&jb->g)(&jb->g, n0, n1, 0, jb->g.T);
                if (r < 0)
                        atomic_store(&rc->err, r);
        }
}

/* All the jobs' rows in one pool job: row groups in chunks, several per thread, so a thread
 * that is held up (a shared host) leaves its rows to the others. */
static int jobs_run(struct lin_job *jobs, int n) {
        const int nt = dsv_cpu_pool_threads();
        int64_t chunks = 0, work = 0;
        for (int i = 0; i < n; i++) {
                const int64_t groups = DIV_ROUND_UP(jobs[i].g.N, 4);
                jobs[i].grain = MAX(1, DIV_ROUND_UP(groups, 8 * nt));
                jobs[i].chunk0 = chunks;
                chunks += DIV_ROUND_UP(groups, jobs[i].grain);
                work += jobs[i].g.T * jobs[i].g.N * jobs[i].g.K;
        }
        struct run_ctx rc = {.jobs = jobs, .n = n};
        atomic_init(&rc.err, 0);
        dsv_par_for_dyn(chunks, 1, work, gemm_chunks, &rc);
        return atomic_load(&rc.err);
}

int dsv_cpu_linear(const struct dsv_op_linear *p) {
        pthread_once(&tables_once, tables_init);
        const int64_t T = p->x->ne[1], N = p->w->ne[1], nbk = DIV_ROUND_UP(p->x->ne[0], DSV_QBLOCK);
        struct lin_job j;
        float *xf, *xs = NULL;
        uint16_t *xb = NULL;
        int r;

        if (T == 0 || N == 0)
                return 0;
        xf = dsv_cpu_scratch(0, (size_t)act_floats(p) * sizeof(float));
        if (p->quant_in && p->w->type == DSV_F8_E4M3)
                xs = dsv_cpu_scratch(1, (size_t)(T * nbk) * sizeof(float));
        if (want_bf16_copy(p))
                xb = dsv_cpu_scratch(4, (size_t)act_floats(p) * sizeof(uint16_t));
        if (!xf || (p->quant_in && p->w->type == DSV_F8_E4M3 && !xs) || (want_bf16_copy(p) && !xb))
                return -ENOMEM;
        if ((r = job_init(&j, p, xf, xs, xb, NULL)) < 0 || (r = job_prep(&j)) < 0)
                return r;
        return jobs_run(&j, 1);
}

int dsv_cpu_linear_multi(const struct dsv_op_linear *const *ops, int n) {
        pthread_once(&tables_once, tables_init);
        struct lin_job *jobs;
        size_t bytes = 0;
        int m = 0, r = 0;

        if (n <= 0)
                return 0;
        jobs = malloc((size_t)n * sizeof(*jobs));
        if (!jobs)
                return -ENOMEM;
        /* one scratch block for every distinct activation preparation */
        for (int i = 0; i < n; i++) {
                bool shared = false;
                for (int k = 0; k < i && !shared; k++)
                        shared = same_prep(ops[k], ops[i]);
                if (!shared)
                        bytes += ALIGN_UP((size_t)act_floats(ops[i]) * (sizeof(float) + sizeof(uint16_t)) +
                                                  (size_t)(ops[i]->x->ne[1] * DIV_ROUND_UP(ops[i]->x->ne[0], DSV_QBLOCK)) * sizeof(float),
                                          64);
        }
        uint8_t *buf = dsv_cpu_scratch(5, MAX(bytes, 64));
        if (!buf) {
                free(jobs);
                return -ENOMEM;
        }
        for (int i = 0; i < n && r >= 0; i++) {
                const struct dsv_op_linear *p = ops[i];
                if (p->x->ne[1] == 0 || p->w->ne[1] == 0)
                        continue;
                const struct lin_job *same = NULL;
                for (int k = 0; k < m && !same; k++)
                        if (!jobs[k].same_x && same_prep(jobs[k].p, p))
                                same = &jobs[k];
                const size_t a = (size_t)act_floats(p);
                float *xf = (float *)buf, *xs = xf + a;
                uint16_t *xb = (uint16_t *)(xs + p->x->ne[1] * DIV_ROUND_UP(p->x->ne[0], DSV_QBLOCK));
                if ((r = job_init(&jobs[m], p, xf, xs, xb, same)) < 0)
                        break;
                if (!same)
                        buf += ALIGN_UP(a * (sizeof(float) + sizeof(uint16_t)) +
                                                (size_t)(p->x->ne[1] * DIV_ROUND_UP(p->x->ne[0], DSV_QBLOCK)) * sizeof(float),
                                        64);
                m++;
        }
        if (r >= 0 && m > 0 && (r = jobs_prep(jobs, m)) >= 0)
                r = jobs_run(jobs, m);
        free(jobs);
        return r;
}
