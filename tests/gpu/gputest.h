/* Helpers of the GPU op tests: every op runs on the CPU backend (the reference) and on the
 * CUDA backend (through the plugin loader, as the daemon uses it) on the same random inputs,
 * and the outputs are compared with per-op tolerances (normalised squared error, abs/rel
 * error per element, identical NaN/inf positions).
 *
 * Each buffer lives on both backends with GT_GUARD bytes of a known pattern before and
 * after it, and the padding between rows (strided views) holds a pattern too; outputs are
 * poisoned (0xff bytes: NaN floats, -1 ints) before the op, so an element the kernel forgot
 * to write shows up as NaN, and a write outside the tensor shows up in the guards.
 *
 * Exit codes: 0 pass, 1 fail, 77 skip (neither a CUDA device nor the CPU emulation of CUDA;
 * DSV32_REQUIRE_GPU=1 turns the skip, and a run on the emulation, into a failure:
 * tests/gpu/run-device.sh sets it). */
#pragma once

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon/rng.h"
#include "daemon/util.h"
#include "kernels/backend.h"
#include "kernels/backend_plugin.h"
#include "kernels/numerics.h"
#include "tests/check.h"

#define GT_GUARD 4096
#define GT_GUARD_BYTE 0xa5
#define GT_POISON 0xff


static inline double gt_now(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ------------------------------------------------------------------ backends */
struct gt {
        struct dsv_backend *be[2]; /* 0: CPU reference, 1: CUDA */
        bool emulated;             /* be[1] is the CPU emulation of CUDA: size problems for it */
};

/* Opens both backends: the CUDA backend on a real device when there is one, else on the CPU
 * emulation of CUDA (tests/gpu/emu), else the test is skipped. Returns 0, or the exit code the
 * test should end with. */
static inline int gt_open(struct gt *g, const char *test) {
        struct dsv_error err;
        int r;
        memset(g, 0, sizeof(*g));
        memset(&err, 0, sizeof(err));
        const char *req = getenv("DSV32_REQUIRE_GPU");
        const bool require = req && *req == '1';
        /* the build tree's plugin, then the emulated one, whatever the compiled-in search path says */
        const char *b = getenv("top_builddir");
        if (b && !getenv("DSV32_BACKEND_PATH")) {
                char dir[8300];
                snprintf(dir, sizeof(dir), "%s/kernels/cuda:%s/tests/gpu/emu", b, b);
                setenv("DSV32_BACKEND_PATH", dir, 1);
        }
        r = dsv_backend_open("cuda", NULL, &g->be[1], &err);
        if (r == -ENODEV || r == -ENOENT) {
                fprintf(stderr, "%s: %s: neither a CUDA device nor the CPU emulation: %s\n", test, require ? "FAIL" : "SKIP", err.msg);
                return require ? 1 : 77;
        }
        if (r < 0) {
                fprintf(stderr, "%s: FAIL: %s\n", test, err.msg);
                return 1;
        }
        g->emulated = dsv_backend_is_emulated(g->be[1]);
        if (g->emulated && require) {
                fprintf(stderr, "%s: FAIL: DSV32_REQUIRE_GPU=1 but only the CPU emulation of CUDA started (%s)\n", test,
                        dsv_backend_describe(g->be[1]));
                dsv_backend_free(g->be[1]);
                return 1;
        }
        if (g->emulated)
                printf("%s: no CUDA device: running on the CPU emulation of CUDA, with problem sizes for it\n", test);
        r = dsv_backend_open("cpu", NULL, &g->be[0], &err);
        if (r < 0) {
                fprintf(stderr, "%s: FAIL: %s\n", test, err.msg);
                return 1;
        }
        return 0;
}

/* ------------------------------------------------------------------ the conformance program
 * test-gpu-ops (test-gpu-ops.c) links every op family's test into one program, built with
 * GT_CONFORMANCE: GT_MAIN(name) is main() of a family's own program and gt_family_<name>()
 * there, and every op that both backends ran is counted in gt_op_cases, so that the program
 * fails when an op of the backend's table (enum dsv_op_type) has no case. */
#ifdef GT_CONFORMANCE
extern unsigned long gt_op_cases[DSV_OP_MAX];
int gt_family_elementwise(void);
int gt_family_norm(void);
int gt_family_linear(void);
int gt_family_kv(void);
int gt_family_indexer(void);
int gt_family_mla(void);
int gt_family_moe(void);
int gt_family_sample(void);
#define GT_MAIN(name) int gt_family_##name(void)
static inline void gt_census(const struct dsv_op *op) {
        if ((int)op->type >= 0 && op->type < DSV_OP_MAX)
                gt_op_cases[op->type]++;
}
#else
#define GT_MAIN(name) int main(void)
static inline void gt_census(const struct dsv_op *op) { (void)op; }
#endif

static inline void gt_close(struct gt *g) {
        dsv_backend_free(g->be[0]);
        dsv_backend_free(g->be[1]);
}

/* ------------------------------------------------------------------ random data */
static inline double gt_u01(uint64_t key, uint64_t i) { return dsv_rand_u01(key, i); }
/* roughly normal (Irwin-Hall of 4 uniforms), fast enough for a billion values */
static inline float gt_randn(uint64_t key, uint64_t i) {
        uint64_t z = dsv_mix64(key ^ dsv_mix64(i));
        double s = (double)(z & 0xffff) + (double)((z >> 16) & 0xffff) + (double)((z >> 32) & 0xffff) + (double)(z >> 48);
        return (float)((s / 65536.0 - 2.0) * 1.7320508);
}
static inline void gt_fill_randn(float *v, size_t n, float sd, uint64_t key) {
        for (size_t i = 0; i < n; i++)
                v[i] = gt_randn(key, i) * sd;
}
static inline void gt_round_bf16(float *v, size_t n) {
        for (size_t i = 0; i < n; i++)
                v[i] = dsv_round_bf16(v[i]);
}

/* ------------------------------------------------------------------ buffers on both backends */
struct gbuf {
        enum dsv_dtype type;
        int64_t rows, cols;
        size_t stride, bytes, esize;
        uint8_t pad_byte;      /* what the bytes between rows (stride > cols) hold */
        void *base[2];         /* allocation, guards included */
        struct dsv_tensor t[2];
};

static inline void gb_new(struct gt *g, struct gbuf *b, enum dsv_dtype type, int64_t rows, int64_t cols, int64_t pad_cols) {
        memset(b, 0, sizeof(*b));
        b->type = type;
        b->rows = rows;
        b->cols = cols;
        b->esize = dsv_dtype_size(type);
        b->stride = (size_t)(cols + pad_cols) * b->esize;
        b->bytes = (size_t)rows * b->stride;
        b->pad_byte = GT_GUARD_BYTE;
        for (int s = 0; s < 2; s++) {
                struct dsv_backend *be = g->be[s];
                int r = be->ops->alloc(be, b->bytes + 2 * GT_GUARD, &b->base[s]);
                REQUIRE(r == 0, "alloc of %zu bytes on %s: %s", b->bytes + 2 * GT_GUARD, be->ops->name, strerror(-r));
                r = be->ops->fill(be, b->base[s], GT_GUARD_BYTE, b->bytes + 2 * GT_GUARD);
                REQUIRE(r == 0, "fill: %s", strerror(-r));
                b->t[s].type = type;
                b->t[s].ne[0] = cols;
                b->t[s].ne[1] = rows;
                b->t[s].stride = b->stride;
                b->t[s].data = (uint8_t *)b->base[s] + GT_GUARD;
        }
}

static inline void gb_free(struct gt *g, struct gbuf *b) {
        for (int s = 0; s < 2; s++)
                if (b->base[s])
                        g->be[s]->ops->dealloc(g->be[s], b->base[s], b->bytes + 2 * GT_GUARD);
        memset(b, 0, sizeof(*b));
}

/* Uploads dense rows x cols elements to both sides (row padding keeps pad_byte). */
static inline void gb_set(struct gt *g, struct gbuf *b, const void *dense) {
        uint8_t *img = malloc(b->bytes ? b->bytes : 1);
        REQUIRE(img, "oom");
        memset(img, b->pad_byte, b->bytes);
        for (int64_t r = 0; r < b->rows; r++)
                memcpy(img + (size_t)r * b->stride, (const uint8_t *)dense + (size_t)r * (size_t)b->cols * b->esize,
                       (size_t)b->cols * b->esize);
        for (int s = 0; s < 2; s++) {
                int rr = g->be[s]->ops->upload(g->be[s], b->t[s].data, img, b->bytes);
                REQUIRE(rr == 0, "upload: %s", strerror(-rr));
        }
        free(img);
}

/* Poisons the whole data region (padding too) on both sides. */
static inline void gb_poison(struct gt *g, struct gbuf *b) {
        b->pad_byte = GT_POISON;
        for (int s = 0; s < 2; s++) {
                int r = g->be[s]->ops->fill(g->be[s], b->t[s].data, GT_POISON, b->bytes);
                REQUIRE(r == 0, "fill: %s", strerror(-r));
        }
}

/* Downloads side s densely into dst and checks its guards and row padding. */
static inline void gb_get(struct gt *g, struct gbuf *b, int s, void *dst, const char *what) {
        size_t total = b->bytes + 2 * GT_GUARD;
        uint8_t *img = malloc(total);
        REQUIRE(img, "oom");
        int r = g->be[s]->ops->download(g->be[s], img, b->base[s], total);
        CHECK(r == 0, "%s: download from %s: %s", what, g->be[s]->ops->name, strerror(-r));
        size_t bad = 0;
        for (size_t i = 0; i < GT_GUARD; i++)
                bad += (img[i] != GT_GUARD_BYTE) + (img[GT_GUARD + b->bytes + i] != GT_GUARD_BYTE);
        CHECK(bad == 0, "%s: %zu guard bytes around the %s buffer were overwritten", what, bad, g->be[s]->ops->name);
        size_t row_bytes = (size_t)b->cols * b->esize, padbad = 0;
        for (int64_t rr = 0; rr < b->rows; rr++) {
                const uint8_t *row = img + GT_GUARD + (size_t)rr * b->stride;
                memcpy((uint8_t *)dst + (size_t)rr * row_bytes, row, row_bytes);
                for (size_t i = row_bytes; i < b->stride; i++)
                        padbad += row[i] != b->pad_byte;
        }
        CHECK(padbad == 0, "%s: %zu padding bytes between rows were overwritten on %s", what, padbad, g->be[s]->ops->name);
        free(img);
}

/* Runs the op on both backends (ops[0] on the CPU, ops[1] on the GPU); both must succeed. */
static inline int gt_run(struct gt *g, struct dsv_op ops[2], const char *what) {
        int rc[2];
        for (int s = 0; s < 2; s++) {
                CHECK(g->be[s]->ops->supports_op(g->be[s], &ops[s]), "%s: %s backend does not support it", what,
                         g->be[s]->ops->name);
                rc[s] = g->be[s]->ops->compute(g->be[s], &ops[s]);
                int r = g->be[s]->ops->synchronize(g->be[s]);
                if (rc[s] == 0)
                        rc[s] = r;
                CHECK(rc[s] == 0, "%s: %s backend: %s %s", what, g->be[s]->ops->name, strerror(-rc[s]),
                         s ? dsv_backend_last_error(g->be[s]) : "");
        }
        if (rc[0] || rc[1])
                return -1;
        gt_census(&ops[1]);
        return 0;
}

/* ------------------------------------------------------------------ comparisons */
struct gt_tol {
        double nmse;   /* sum (got - ref)^2 / sum ref^2 over finite elements */
        double abs, rel; /* an element is bad when |got - ref| > abs + rel * |ref| */
        size_t bad;    /* how many bad elements are allowed */
};

static inline bool gt_cmp_f32(const char *what, const float *ref, const float *got, size_t n, struct gt_tol tol) {
        double num = 0, den = 0, maxe = 0;
        size_t where = 0, bad = 0, special = 0;
        for (size_t i = 0; i < n; i++) {
                float a = ref[i], b = got[i];
                bool na = a != a, nb = b != b, ia = isinf(a), ib = isinf(b);
                if (na || nb || ia || ib) {
                        if (na != nb || ia != ib || (ia && ib && a != b))
                                special++;
                        continue;
                }
                double e = fabs((double)b - a);
                num += e * e;
                den += (double)a * a;
                if (e > tol.abs + tol.rel * fabs((double)a))
                        bad++;
                if (e > maxe) {
                        maxe = e;
                        where = i;
                }
        }
        double nmse = den > 0 ? num / den : (num > 0 ? INFINITY : 0);
        bool ok = special == 0 && nmse <= tol.nmse && bad <= tol.bad;
        printf("  %-58s n=%-9zu nmse=%.2e max|d|=%.3g at %zu (ref %.6g got %.6g) bad=%zu special=%zu %s\n", what, n, nmse, maxe,
               where, n ? ref[where] : 0.0, n ? got[where] : 0.0, bad, special, ok ? "ok" : "FAIL");
        CHECK(ok, "%s: outside tolerance (nmse %.2e > %.1e, bad %zu > %zu, or %zu NaN/inf positions differ)", what, nmse,
                 tol.nmse, bad, tol.bad, special);
        return ok;
}

static inline bool gt_cmp_bytes(const char *what, const void *ref, const void *got, size_t n, size_t allowed) {
        const uint8_t *a = ref, *b = got;
        size_t bad = 0, first = 0;
        for (size_t i = 0; i < n; i++)
                if (a[i] != b[i] && bad++ == 0)
                        first = i;
        printf("  %-58s n=%-9zu differing=%zu %s\n", what, n, bad, bad <= allowed ? "ok" : "FAIL");
        if (bad)
                printf("    first at byte %zu: ref %02x got %02x\n", first, a[first], b[first]);
        CHECK(bad <= allowed, "%s: %zu bytes differ (first at %zu)", what, bad, first);
        return bad <= allowed;
}

/* An FP8 weight [N, K] with [ceil(N/128), ceil(K/128)] fp32 block scales (not powers of 2 unless
 * pow2), codes from a normal matrix. */
static inline void gt_make_fp8(uint8_t *q, float *sc, int64_t N, int64_t K, uint64_t key, bool pow2) {
        int64_t bc = DIV_ROUND_UP(K, 128), br = DIV_ROUND_UP(N, 128);
        for (int64_t i = 0; i < N * K; i++)
                q[i] = dsv_f32_to_e4m3(gt_randn(key, (uint64_t)i) * 64.0f);
        for (int64_t i = 0; i < br * bc; i++) {
                double u = gt_u01(key + 1, (uint64_t)i);
                sc[i] = pow2 ? ldexpf(1.0f, -14 + (int)(u * 6)) : (float)(1e-4 * (0.5 + u));
        }
}

