/* bench-gemv: the CPU backend's FP8 linear layer at one token (what every decode step is made
 * of), timed against a plain read of the same weight bytes by the same pool threads in the
 * same run, at 1 thread and at N. Two sizes: weights streamed from memory (--mib, default
 * 512 MiB: every decode step reads its weights once, far past any cache) and weights that
 * stay in cache (1 MiB, read 200 times: the kernel's own rate, where memory does not limit
 * it). Issue 16's decode target is a fraction of the read bandwidth; this says how much of
 * the gap is the linear kernel itself (streamed ratio) and how fast it could go if memory
 * were not the limit (in-cache rate).
 *
 * Before timing, the kernels in use (the best this CPU runs, or DSV32_CPU_KERNELS) are
 * checked bit for bit against the portable kernel on the first rows: a failed check exits 1.
 * Faithful numerics (act_quant'ed input, bf16-rounded output), K = --k (default 1024, the
 * hidden size of the 474M checkpoint), power-of-two block scales, random valid e4m3 codes.
 *
 * usage: bench-gemv [--threads N] [--mib M] [--k K]
 * Figures, not tests; `make check` runs it once on small sizes (tests/bench/bench-gemv.sh). */
#include "config.h"

#include <math.h>
#include <stdatomic.h>

#include "daemon/util.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/pool.h"

#define CHECK_ROWS 512
#define CACHE_BYTES (1u << 20)
#define CACHE_REPS 200

struct weights {
        struct dsv_tensor w, s;
        uint8_t *codes;
        float *scales;
        int64_t n, k;
};

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t next_u32(void) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        return (uint32_t)(rng >> 32);
}

static int weights_new(int64_t n, int64_t k, struct weights *ret) {
        const int64_t nbk = DIV_ROUND_UP(k, DSV_QBLOCK), nbn = DIV_ROUND_UP(n, DSV_QBLOCK);
        struct weights W = {.n = n, .k = k};
        W.codes = malloc((size_t)(n * k));
        W.scales = malloc((size_t)(nbn * nbk) * sizeof(float));
        if (!W.codes || !W.scales) {
                free(W.codes);
                free(W.scales);
                return -ENOMEM;
        }
        for (int64_t i = 0; i < n * k; i++) {
                uint8_t c = (uint8_t)(next_u32() % 0x7f); /* 0..0x7e: no NaN */
                W.codes[i] = c | (next_u32() & 0x80u);
        }
        for (int64_t i = 0; i < nbn * nbk; i++)
                W.scales[i] = ldexpf(1.0f, -(int)(next_u32() % 4) - 6);
        W.s = dsv_tensor_2d(DSV_F32, W.scales, nbn, nbk);
        W.w = dsv_tensor_2d(DSV_F8_E4M3, W.codes, n, k);
        *ret = W;
        return 0;
}

static void weights_free(struct weights *W) {
        free(W->codes);
        free(W->scales);
}

/* The first `rows` rows of W as their own tensor. */
static struct dsv_tensor rows_of(struct weights *W, int64_t rows) {
        struct dsv_tensor t = dsv_tensor_2d(DSV_F8_E4M3, W->codes, rows, W->k);
        t.scale = &W->s;
        return t;
}

static int linear_once(const struct dsv_tensor *w, float *x, float *out) {
        struct dsv_tensor X = dsv_tensor_2d(DSV_F32, x, 1, w->ne[0]), Y = dsv_tensor_2d(DSV_F32, out, 1, w->ne[1]);
        struct dsv_op_linear op = {.out = &Y, .x = &X, .w = w, .quant_in = true, .round_out = true};
        return dsv_cpu_linear(&op);
}

struct read_ctx {
        const uint8_t *p;
        _Atomic uint64_t sum;
};

/* items [i0, i1) of 64 bytes; per-ISA clones, so that the adds are not what limits the read */
DSV_HOT static uint64_t sum_items(const uint64_t *q, int64_t i0, int64_t i1) {
        uint64_t s = 0;
        OMP(simd reduction(+ : s))
        for (int64_t i = i0 * 8; i < i1 * 8; i++)
                s += q[i];
        return s;
}

static void read_range(void *v, int64_t i0, int64_t i1, int thread) {
        struct read_ctx *rc = v;
        atomic_fetch_add(&rc->sum, sum_items((const uint64_t *)rc->p, i0, i1));
}

/* Seconds for one pool-parallel read of `bytes` (best of `reps`). */
static double read_seconds(const uint8_t *p, size_t bytes, int reps) {
        double best = 1e30;
        for (int r = 0; r < reps; r++) {
                struct read_ctx rc = {.p = p};
                atomic_init(&rc.sum, 0);
                uint64_t t0 = dsv_now_ns();
                dsv_par_for_dyn((int64_t)(bytes / 64), 4096, INT64_MAX, read_range, &rc);
                best = fmin(best, (dsv_now_ns() - t0) / 1e9);
                if (atomic_load(&rc.sum) == 42) /* keep the sums */
                        printf(" ");
        }
        return best;
}

/* Seconds for one linear over w (best of `reps`, each of `inner` calls); < 0: -errno. */
static double linear_seconds(const struct dsv_tensor *w, float *x, float *out, int reps, int inner) {
        double best = 1e30;
        for (int r = 0; r < reps; r++) {
                uint64_t t0 = dsv_now_ns();
                for (int i = 0; i < inner; i++) {
                        int e = linear_once(w, x, out);
                        if (e < 0)
                                return e;
                }
                best = fmin(best, (dsv_now_ns() - t0) / 1e9 / inner);
        }
        return best;
}

static int usage(void) {
        fprintf(stderr, "usage: bench-gemv [--threads N] [--mib M] [--k K]\n");
        return 2;
}

int main(int argc, char **argv) {
        long threads = 2, mib = 512, k = 1024;
        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc && dsv_parse_int(argv[i + 1], 1, 256, &threads) == 0)
                        i++;
                else if (strcmp(argv[i], "--mib") == 0 && i + 1 < argc && dsv_parse_int(argv[i + 1], 2, 1 << 16, &mib) == 0)
                        i++;
                else if (strcmp(argv[i], "--k") == 0 && i + 1 < argc && dsv_parse_int(argv[i + 1], 128, 32768, &k) == 0)
                        i++;
                else
                        return usage();
        }
        const int64_t n = ((int64_t)mib << 20) / k / DSV_QBLOCK * DSV_QBLOCK;
        const int64_t n_cache = MAX(DSV_QBLOCK, (int64_t)CACHE_BYTES / k / DSV_QBLOCK * DSV_QBLOCK);
        struct weights W;
        if (n < CHECK_ROWS || n_cache > n) {
                fprintf(stderr, "bench-gemv: --mib %ld is too small for K %ld\n", mib, k);
                return 2;
        }
        float *x = malloc((size_t)k * sizeof(float)), *out = malloc((size_t)n * sizeof(float)),
              *ref = malloc(CHECK_ROWS * sizeof(float));
        int ret = 1;
        if (!x || !out || !ref || weights_new(n, k, &W) < 0) {
                fprintf(stderr, "bench-gemv: out of memory\n");
                free(x);
                free(out);
                free(ref);
                return 1;
        }
        for (long i = 0; i < k; i++)
                x[i] = ((float)(next_u32() % 2001) - 1000.0f) / 256.0f;

        /* the kernels in use against the portable one, on the first rows */
        const enum dsv_cpu_isa isa = dsv_cpu_isa_current();
        struct dsv_tensor w_check = rows_of(&W, CHECK_ROWS), w_cache = rows_of(&W, n_cache), w_all = rows_of(&W, n);
        int r;
        if ((r = dsv_cpu_isa_select(DSV_CPU_ISA_PORTABLE)) < 0 || (r = linear_once(&w_check, x, ref)) < 0 ||
            (r = dsv_cpu_isa_select(isa)) < 0 || (r = linear_once(&w_check, x, out)) < 0) {
                fprintf(stderr, "bench-gemv: linear: %s\n", strerror(-r));
                goto out;
        }
        if (memcmp(ref, out, CHECK_ROWS * sizeof(float)) != 0) {
                fprintf(stderr, "bench-gemv: %s kernels differ from the portable one\n", dsv_cpu_isa_name(isa));
                goto out;
        }
        printf("bench-gemv: FP8 linear, one token (decode), K %ld, faithful; %s kernels: the same bits as the portable "
               "kernel on %d rows\n",
               k, dsv_cpu_isa_name(isa), CHECK_ROWS);

        long counts[2] = {1, threads};
        for (int c = 0; c < (threads > 1 ? 2 : 1); c++) {
                struct dsv_backend *be;
                if ((r = dsv_backend_cpu_new((int)counts[c], &be)) < 0) {
                        fprintf(stderr, "bench-gemv: CPU backend of %ld threads: %s\n", counts[c], strerror(-r));
                        goto out;
                }
                const size_t bytes = (size_t)(n * k), cbytes = (size_t)(n_cache * k);
                double rd = read_seconds(W.codes, bytes, 5);
                double ls = linear_seconds(&w_all, x, out, 5, 1);
                double lc = linear_seconds(&w_cache, x, out, 5, CACHE_REPS);
                double rc = read_seconds(W.codes, cbytes, 5 * CACHE_REPS);
                dsv_backend_free(be);
                if (ls < 0 || lc < 0) {
                        fprintf(stderr, "bench-gemv: linear: %s\n", strerror(-(int)fmin(ls, lc)));
                        goto out;
                }
                printf("threads %ld: streamed %ld MiB: %.1f GB/s of weights vs a read of the same bytes %.1f GB/s: ratio "
                       "%.2fx; in cache (%.1f MiB): %.1f GB/s vs a read %.1f GB/s: ratio %.2fx\n",
                       counts[c], mib, bytes / ls / 1e9, bytes / rd / 1e9, rd / ls, cbytes / 1048576.0, cbytes / lc / 1e9,
                       cbytes / rc / 1e9, rc / lc);
        }
        ret = 0;
out:
        weights_free(&W);
        free(x);
        free(out);
        free(ref);
        return ret;
}
