/* bench-core: the engine's speed on a checkpoint (make bench runs it on the `small` preset).
 *   1. Loader: io_uring into backend memory vs a plain sequential read() of the same shard
 *      files (1 MiB buffer), measured in the same run, with the page cache of the shards
 *      dropped before each cold run (posix_fadvise DONTNEED: best effort, no root needed)
 *      and warm.
 *   2. CPU prefill and decode tokens/s at batch 1, 8 and 32 (faithful numerics), decode
 *      against its memory-bandwidth roofline: the bytes a decode step must read (dsv32-inspect's
 *      model of it: the fixed weights, the expected distinct routed experts, the KV cache)
 *      over the read bandwidth of all the backend's threads, measured in the same run;
 *      prefill as GFLOP/s of its linear layers against the machine's bf16 dot-product peak
 *      (vdpbf16ps on every thread; fp32 FMA where the CPU has no AVX-512 BF16), measured in
 *      the same run.
 *   3. The FP8 linear alone (faithful: act_quant'ed activations, bf16 output) at a dense
 *      shape (128 tokens, hidden -> 2 hidden) and at an expert's (16 tokens, hidden ->
 *      moe_inter), GFLOP/s against the same peak.
 *   4. Peak RSS (VmHWM) after all of it against the checkpoint's tensor bytes plus the largest
 *      KV pool the run allocated (the weights are held once, in their FP8 form).
 * The peak is timed by each thread's CPU time or the wall clock, whichever is shorter (the
 * higher rate), so it is the machine's and not the load's.
 * Prefill is also given per CPU-second (the process's CPU time, every thread) against one
 * thread's share of the peak: on a shared machine that figure moves less than the wall-clock
 * one, which counts the time other processes held the cores. `--engine-only` skips 1; `--prompt N` sets the prompt length at batch 1 and 8 (default
 * 256; batch 32 prefills N/4 tokens per sequence); `--threads N` the backend's threads (default: every
 * CPU; 1 gives CPU-second figures with no thread waiting on another, the steadiest on a
 * shared machine). */
#include "config.h"

#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <time.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "daemon/inspect.h"
#include "daemon/model/model.h"
#include "kernels/cpu/gemm.h"
#include "kernels/numerics.h"

static void drop_cache(const struct dsv_checkpoint *ck) {
        for (size_t i = 0; i < ck->n_shards; i++) {
                int fd = open(ck->shards[i].path, O_RDONLY | O_CLOEXEC);
                if (fd >= 0) {
                        fdatasync(fd);
                        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
                        close(fd);
                }
        }
}

static double seq_read(const struct dsv_checkpoint *ck, uint64_t *bytes) {
        static char buf[1 << 20];
        uint64_t t0 = dsv_now_ns(), n = 0;
        for (size_t i = 0; i < ck->n_shards; i++) {
                int fd = open(ck->shards[i].path, O_RDONLY | O_CLOEXEC);
                ssize_t k;
                if (fd < 0)
                        return -1;
                while ((k = read(fd, buf, sizeof(buf))) > 0)
                        n += (uint64_t)k;
                close(fd);
        }
        *bytes = n;
        return (dsv_now_ns() - t0) / 1e9;
}

/* A naive loader: read() each shard whole into fresh memory of its size, 1 MiB at a time. */
static double naive_load(const struct dsv_checkpoint *ck, uint64_t *bytes) {
        uint64_t t0 = dsv_now_ns(), total = 0;
        for (size_t i = 0; i < ck->n_shards; i++) {
                int fd = open(ck->shards[i].path, O_RDONLY | O_CLOEXEC);
                char *buf = malloc(ck->shards[i].size + 1);
                uint64_t got = 0;
                ssize_t k;
                if (fd < 0 || !buf)
                        return -1;
                while ((k = read(fd, buf + got, MIN(1u << 20, ck->shards[i].size + 1 - got))) > 0)
                        got += (uint64_t)k;
                total += got;
                free(buf);
                close(fd);
        }
        *bytes = total;
        return (dsv_now_ns() - t0) / 1e9;
}

/* Read bandwidth in bytes/s of `threads` threads summing a 512 MiB buffer (best of 5). */
static double read_bandwidth(int threads) {
        const size_t n = (512u << 20) / sizeof(uint64_t);
        uint64_t *v = malloc(n * sizeof(*v)), sum = 0;
        double best = 1e30;
        if (!v)
                return 0;
        for (size_t i = 0; i < n; i++)
                v[i] = i;
        for (int r = 0; r < 5; r++) {
                uint64_t t0 = dsv_now_ns(), s = 0;
#pragma omp parallel for num_threads(threads) reduction(+ : s) schedule(static)
                for (size_t i = 0; i < n; i++)
                        s += v[i];
                best = fmin(best, (dsv_now_ns() - t0) / 1e9);
                sum += s;
        }
        free(v);
        if (sum == 42) /* keep the sums */
                printf(" ");
        return (double)(n * sizeof(uint64_t)) / best;
}

/* ---- the dot-product peak: independent multiply-accumulates on registers, per thread, per
 * second of that thread's CPU time */
struct peak_arg {
        bool bf16;
        double flops_per_s;
};

#if defined(__x86_64__)
/* The calling thread's CPU time: the peak loops run 200 ms of it, so a thread that shares
 * its core with other work (a loaded machine) still measures the rate of its own cycles
 * (timed by the wall clock, the peak swung 2x from run to run under load). */
static uint64_t thread_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Iterations between two reads of the clocks: the thread CPU clock is a system call (not in
 * the vDSO), ~10% of the loop's time when read every 4096 iterations. */
#define PEAK_BLOCK 65536

/* Seconds since the loop's start (cpu0: thread_ns, wall0: dsv_now_ns): the shorter of the two
 * clocks, so the higher rate. Under load the thread's CPU time is the shorter; on a quiet
 * machine the two agree within a few percent; a peak is better overestimated than under:
 * every fraction below divides by it. */
static double loop_seconds(uint64_t cpu0, uint64_t wall0) {
        return fmin((double)(thread_ns() - cpu0), (double)(dsv_now_ns() - wall0)) / 1e9;
}

__attribute__((target("avx512f,avx512bf16"))) static double peak_bf16_loop(uint64_t *iters) {
        __m512 acc[12];
        __m512bh a = (__m512bh)_mm512_set1_epi16(0x3f80), b = (__m512bh)_mm512_set1_epi16(0x3c00);
        for (int i = 0; i < 12; i++)
                acc[i] = _mm512_setzero_ps();
        uint64_t t0 = thread_ns(), w0 = dsv_now_ns(), n = 0;
        do {
                for (int r = 0; r < PEAK_BLOCK; r++) {
                        _Pragma("GCC unroll 12") for (int i = 0; i < 12; i++) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
                }
                n += PEAK_BLOCK;
        } while (thread_ns() - t0 < 200000000ull);
        float sink = 0;
        for (int i = 0; i < 12; i++)
                sink += _mm512_reduce_add_ps(acc[i]);
        *iters = n + (sink == 42.0f);
        return loop_seconds(t0, w0);
}
__attribute__((target("avx2,fma"))) static double peak_fma_loop(uint64_t *iters) {
        __m256 acc[12], a = _mm256_set1_ps(1.0f), b = _mm256_set1_ps(0x1p-30f);
        for (int i = 0; i < 12; i++)
                acc[i] = _mm256_setzero_ps();
        uint64_t t0 = thread_ns(), w0 = dsv_now_ns(), n = 0;
        do {
                for (int r = 0; r < PEAK_BLOCK; r++) {
                        _Pragma("GCC unroll 12") for (int i = 0; i < 12; i++) acc[i] = _mm256_fmadd_ps(a, b, acc[i]);
                }
                n += PEAK_BLOCK;
        } while (thread_ns() - t0 < 200000000ull);
        float s[8], sink = 0;
        for (int i = 0; i < 12; i++) {
                _mm256_storeu_ps(s, acc[i]);
                sink += s[0];
        }
        *iters = n + (sink == 42.0f);
        return loop_seconds(t0, w0);
}
#endif

static void *peak_thread(void *v) {
        struct peak_arg *a = v;
        uint64_t n = 0;
        double t = 1;
#if defined(__x86_64__)
        if (a->bf16)
                t = peak_bf16_loop(&n); /* 12 x 16 lanes x 2 products */
        else
                t = peak_fma_loop(&n); /* 12 x 8 lanes x 1 product */
#endif
        a->flops_per_s = (double)n * 12 * (a->bf16 ? 64 : 16) / t;
        return NULL;
}

/* Peak flop/s of `threads` threads together (best of 3); 0 where not measurable. */
static double dot_peak(int threads, bool bf16) {
        double best = 0;
        for (int rep = 0; rep < 3; rep++) {
                pthread_t th[64];
                struct peak_arg a[64];
                double sum = 0;
                int n = MIN(threads, 64);
                for (int i = 0; i < n; i++) {
                        a[i] = (struct peak_arg){.bf16 = bf16};
                        if (pthread_create(&th[i], NULL, peak_thread, &a[i]) != 0)
                                return 0;
                }
                for (int i = 0; i < n; i++) {
                        pthread_join(th[i], NULL);
                        sum += a[i].flops_per_s;
                }
                best = fmax(best, sum);
        }
        return best;
}

static double cpu_seconds(void) {
        struct timespec ts;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
        return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* VmHWM of this process in bytes, 0 where /proc cannot say. */
static uint64_t peak_rss(void) {
        FILE *f = fopen("/proc/self/status", "re");
        char line[256];
        unsigned long long kb = 0;
        if (!f)
                return 0;
        while (fgets(line, sizeof(line), f))
                if (sscanf(line, "VmHWM: %llu kB", &kb) == 1)
                        break;
        fclose(f);
        return (uint64_t)kb * 1024;
}

/* Restarts VmHWM at the current RSS (clear_refs 5, Linux 4.0): false where it cannot. */
static bool reset_peak_rss(void) {
        int fd = open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
        bool ok = fd >= 0 && write(fd, "5", 1) == 1;
        if (fd >= 0)
                close(fd);
        return ok;
}

/* One FP8 linear of T tokens, K -> N, through the backend (faithful numerics: act_quant'ed
 * activations, bf16 output), random codes: GFLOP/s, best of 5. */
static double linear_gflops(struct dsv_backend *be, int64_t T, int64_t K, int64_t N) {
        const int64_t nbk = DIV_ROUND_UP(K, DSV_QBLOCK), nbn = DIV_ROUND_UP(N, DSV_QBLOCK);
        uint8_t *w = malloc((size_t)(N * K));
        float *ws = malloc((size_t)(nbn * nbk) * sizeof(float)), *x = malloc((size_t)(T * K) * sizeof(float)),
              *o = malloc((size_t)(T * N) * sizeof(float));
        double best = 1e30;
        if (!w || !ws || !x || !o)
                goto out;
        for (int64_t i = 0; i < N * K; i++) {
                uint8_t c = (uint8_t)((uint64_t)i * 2654435761u >> 13);
                w[i] = (c & 0x7f) == 0x7f ? 0 : c; /* no NaN codes */
        }
        for (int64_t i = 0; i < nbn * nbk; i++)
                ws[i] = 0x1p-10f;
        for (int64_t i = 0; i < T * K; i++)
                x[i] = (float)((i * 7919) % 2001 - 1000) / 1000.0f;
        struct dsv_tensor S = dsv_tensor_2d(DSV_F32, ws, nbn, nbk), W = dsv_tensor_2d(DSV_F8_E4M3, w, N, K),
                          X = dsv_tensor_2d(DSV_F32, x, T, K), O = dsv_tensor_2d(DSV_F32, o, T, N);
        W.scale = &S;
        struct dsv_op op = {.type = DSV_OP_LINEAR, .faithful = true};
        op.linear = (struct dsv_op_linear){.out = &O, .x = &X, .w = &W, .quant_in = true, .round_out = true};
        for (int r = 0; r < 6; r++) {
                uint64_t t0 = dsv_now_ns();
                if (be->ops->compute(be, &op) < 0)
                        goto out;
                if (r > 0) /* the first warms the scratch */
                        best = fmin(best, (dsv_now_ns() - t0) / 1e9);
        }
out:
        free(w);
        free(ws);
        free(x);
        free(o);
        return best < 1e30 ? 2.0 * (double)T * (double)K * (double)N / best : 0;
}

static double load_once(const char *dir, struct dsv_backend *be, uint64_t *bytes, struct dsv_load_stats *st) {
        struct dsv_model_opts mo = {.numerics = DSV_NUMERICS_FAITHFUL};
        struct dsv_error err = {{0}};
        struct dsv_model *m;
        if (dsv_model_load(dir, be, &mo, &m, &err) < 0) {
                fprintf(stderr, "bench-core: %s\n", err.msg);
                exit(1);
        }
        *st = *dsv_model_load_stats(m);
        *bytes = st->bytes_tensors;
        dsv_model_free(m);
        return st->elapsed_ns / 1e9;
}

int main(int argc, char **argv) {
        struct dsv_backend *be;
        struct dsv_checkpoint *ck;
        struct dsv_error err = {{0}};
        const int reps = 3;
        bool engine_only = false;
        long prompt = 256, threads = 0;
        const char *dir = NULL;
        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--engine-only") == 0)
                        engine_only = true;
                else if (strcmp(argv[i], "--prompt") == 0 && i + 1 < argc && dsv_parse_int(argv[i + 1], 4, 65536, &prompt) == 0)
                        i++;
                else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc && dsv_parse_int(argv[i + 1], 1, 1024, &threads) == 0)
                        i++;
                else if (!dir && argv[i][0] != '-')
                        dir = argv[i];
                else
                        dir = NULL, i = argc;
        }
        if (!dir) {
                fprintf(stderr, "usage: bench-core MODEL_DIR [--engine-only] [--prompt N] [--threads N]\n");
                return 2;
        }
        if (dsv_backend_cpu_new((int)threads, &be) < 0 || dsv_checkpoint_open(dir, &ck, &err) < 0) {
                fprintf(stderr, "bench-core: %s\n", err.msg);
                return 1;
        }
        printf("checkpoint %s: %zu shards, %.1f MB of tensors; CPU backend: %s\n", dir, ck->n_shards,
               ck->tensor_bytes / 1e6, be->ops->describe ? be->ops->describe(be) : be->ops->name);

        for (int cold = 1; cold >= 0 && !engine_only; cold--) {
                double best_l = 1e30, best_s = 1e30, best_n = 1e30;
                uint64_t bl = 0, bs = 0, bn = 0;
                struct dsv_load_stats st = {0};
                for (int r = 0; r < reps; r++) {
                        if (cold)
                                drop_cache(ck);
                        best_s = fmin(best_s, seq_read(ck, &bs));
                        if (cold)
                                drop_cache(ck);
                        best_n = fmin(best_n, naive_load(ck, &bn));
                        if (cold)
                                drop_cache(ck);
                        best_l = fmin(best_l, load_once(dir, be, &bl, &st));
                }
                printf("load (%s page cache, best of %d): io_uring loader %.2f GB/s (%s%s, %u reads, %u from the page cache)\n"
                       "    vs sequential read() into one 1 MiB buffer %.2f GB/s: ratio %.2fx\n"
                       "    vs read() of each file into fresh memory %.2f GB/s: ratio %.2fx\n",
                       cold ? "dropped (posix_fadvise DONTNEED)" : "warm", reps, bl / best_l / 1e9, st.uring ? "io_uring" : "pread",
                       st.direct ? " O_DIRECT" : ", buffered", st.reads, st.cached_reads, bs / best_s / 1e9,
                       (bl / best_l) / (bs / best_s), bn / best_n / 1e9, (bl / best_l) / (bn / best_n));
        }
        const uint64_t ckpt_bytes = ck->tensor_bytes;
        dsv_checkpoint_free(ck);

        /* the machine's rates, before the model is loaded: the 512 MiB of the bandwidth test
         * are gone before the peak RSS counts (it restarts here) */
        double bw = read_bandwidth(be->n_threads);
        printf("memory read bandwidth, %d threads: %.2f GB/s (the decode roofline below divides by it)\n", be->n_threads,
               bw / 1e9);
        const bool bf16 = dsv_cpu_isa_supported(DSV_CPU_ISA_AVX512BF16);
        const double peak = dot_peak(be->n_threads, bf16);
        printf("dot-product peak, %d threads: %.1f GFLOP/s (%s; the prefill figures below divide by it)\n", be->n_threads,
               peak / 1e9, bf16 ? "vdpbf16ps, AVX-512 BF16" : "fp32 FMA, AVX2: no AVX-512 BF16 on this CPU");
        const bool hwm_reset = reset_peak_rss();

        /* engine speed */
        struct dsv_model_opts mo = {.numerics = DSV_NUMERICS_FAITHFUL};
        struct dsv_model *m;
        if (dsv_model_load(dir, be, &mo, &m, &err) < 0) {
                fprintf(stderr, "bench-core: %s\n", err.msg);
                return 1;
        }
        const struct dsv_model_config *c = dsv_model_get_config(m);
        const int G = 16;
        struct dsv_param_counts pc;
        struct dsv_kv_costs kvc;
        if (dsv_inspect_params(c, &pc) < 0 || dsv_inspect_kv_costs(c, DSV_INSPECT_KV_FP8, &kvc) < 0) {
                fprintf(stderr, "bench-core: cannot account the model's bytes\n");
                return 1;
        }
        {
                const int64_t H = c->hidden_size, I = c->moe_intermediate_size;
                double dense = linear_gflops(be, 128, H, 2 * H), expert = linear_gflops(be, 16, H, I);
                printf("FP8 linear alone (faithful), best of 5: 128 tokens x %lld -> %lld: %.1f GFLOP/s, ratio %.2fx of the peak; "
                       "16 tokens x %lld -> %lld (an expert's share): %.1f GFLOP/s, ratio %.2fx\n",
                       (long long)H, (long long)(2 * H), dense / 1e9, peak > 0 ? dense / peak : 0, (long long)H, (long long)I,
                       expert / 1e9, peak > 0 ? expert / peak : 0);
        }
        uint64_t kv_max = 0, act_max = 0;
        const uint64_t held = be->bytes_allocated; /* the weights as the backend holds them */
        struct dsv_flop_costs fc;
        dsv_inspect_flop_costs(c, &pc, &fc);
        int batches[] = {1, 8, 32};
        for (size_t bi = 0; bi < ARRAY_SIZE(batches); bi++) {
                int B = batches[bi];
                const int P = B >= 32 ? (int)prompt / 4 : (int)prompt;
                struct dsv_kv_pool *kv;
                struct dsv_kv_seq seqs[32] = {{0}};
                struct dsv_kv_seq *sp[32];
                int32_t *tok = malloc((size_t)B * P * sizeof(int32_t)), *pos = malloc((size_t)B * P * sizeof(int32_t)),
                        *sq = malloc((size_t)B * P * sizeof(int32_t));
                bool *want = calloc((size_t)B * P, 1);
                float *logits = malloc((size_t)B * c->vocab_size * sizeof(float));
                const uint64_t before_kv = be->bytes_allocated;
                if (dsv_kv_pool_new(be, c, DSV_KV_FP8, B * DIV_ROUND_UP(P + G + 1, DSV_KV_PAGE_TOKENS), &kv) < 0)
                        return 1;
                const uint64_t kv_bytes = be->bytes_allocated - before_kv;
                kv_max = MAX(kv_max, kv_bytes);
                for (int s = 0; s < B; s++) {
                        sp[s] = &seqs[s];
                        if (dsv_kv_seq_reserve(kv, &seqs[s], P + G + 1) < 0)
                                return 1;
                        for (int i = 0; i < P; i++) {
                                tok[s * P + i] = (int32_t)((s * 7919 + i * 104729) % c->vocab_size);
                                pos[s * P + i] = i;
                                sq[s * P + i] = s;
                        }
                        want[s * P + P - 1] = true;
                }
                struct dsv_batch b = {.n_tokens = B * P, .token = tok, .pos = pos, .seq = sq, .want_logits = want, .n_seqs = B, .seqs = sp};
                uint64_t t0 = dsv_now_ns();
                double c0 = cpu_seconds();
                if (dsv_model_forward(m, kv, &b, logits, &err) < 0) {
                        fprintf(stderr, "bench-core: %s\n", err.msg);
                        return 1;
                }
                double tp = (dsv_now_ns() - t0) / 1e9, cp = cpu_seconds() - c0;
                t0 = dsv_now_ns();
                for (int g = 0; g < G; g++) {
                        for (int s = 0; s < B; s++) {
                                const float *l = logits + (size_t)s * c->vocab_size;
                                int a = 0;
                                for (int i = 1; i < c->vocab_size; i++)
                                        a = l[i] > l[a] ? i : a;
                                tok[s] = a;
                                pos[s] = P + g;
                                sq[s] = s;
                        }
                        struct dsv_batch d = {.n_tokens = B, .token = tok, .pos = pos, .seq = sq, .n_seqs = B, .seqs = sp};
                        if (dsv_model_forward(m, kv, &d, logits, &err) < 0) {
                                fprintf(stderr, "bench-core: %s\n", err.msg);
                                return 1;
                        }
                }
                double td = (dsv_now_ns() - t0) / 1e9;
                /* what the backend holds beyond the weights and this KV pool: the activation workspace */
                act_max = MAX(act_max, be->bytes_allocated - held - kv_bytes);
                struct dsv_decode_step ds;
                dsv_inspect_decode_step(c, &pc, &kvc, (uint64_t)(P + G / 2), B, bw, &ds);
                struct dsv_flops pf;
                dsv_inspect_prefill_flops(&fc, (uint64_t)P, &pf);
                printf("batch %d: prefill %d tokens/seq: %.1f tok/s; decode %d steps: %.2f tok/s (%.1f ms/step)\n", B, P, B * P / tp, G,
                       B * G / td, td / G * 1e3);
                printf("    prefill: %.1f GFLOP/s in the linear layers (%.2f GFLOP/s with attention and indexer) vs the "
                       "%.1f GFLOP/s peak: ratio %.2fx\n",
                       B * pf.linear / tp / 1e9, B * pf.total_dsa / tp / 1e9, peak / 1e9, peak > 0 ? B * pf.linear / tp / peak : 0);
                printf("    prefill per CPU-second: %.2f s of CPU, %.1f GFLOP per CPU-s in the linear layers vs one thread's "
                       "%.1f: ratio %.2fx\n",
                       cp, B * pf.linear / cp / 1e9, peak / be->n_threads / 1e9, peak > 0 ? B * pf.linear / cp / (peak / be->n_threads) : 0);
                printf("    decode vs the bandwidth roofline (%.1f MB read per step: %.1f routed experts per MoE layer): "
                       "%.1f tok/s bound, ratio %.2fx\n",
                       ds.bytes / 1e6, ds.experts_per_layer, ds.tokens_per_s, (B * G / td) / ds.tokens_per_s);
                const uint64_t rss = peak_rss();
                printf("    peak RSS so far %.1f MB: ratio %.2fx of the checkpoint's tensors + this KV pool (%.1f MB), "
                       "activation workspace %.1f MB\n",
                       rss / 1e6, (double)rss / (double)(ckpt_bytes + kv_bytes), kv_bytes / 1e6, act_max / 1e6);
                for (int s = 0; s < B; s++)
                        dsv_kv_seq_release(kv, &seqs[s]);
                dsv_kv_pool_free(kv);
                free(tok);
                free(pos);
                free(sq);
                free(want);
                free(logits);
        }
        const uint64_t hwm = peak_rss(), weights = ckpt_bytes;
        printf("peak RSS (VmHWM%s): %.1f MB vs the checkpoint's %.1f MB of tensors + the largest KV pool %.1f MB: ratio %.2fx "
               "(target <= 1.10)\n",
               hwm_reset ? " from the model load on" : ", the whole process: clear_refs refused", hwm / 1e6, weights / 1e6, kv_max / 1e6,
               weights + kv_max > 0 ? (double)hwm / (double)(weights + kv_max) : 0);
        printf("    of it: the weights as held %.1f MB (the FP8 form once, plus the absorbed attention's dequantized kv_b "
               "tables where the backend does not read kv_b_proj's FP8 codes itself), the activation workspace of the largest pass %.1f MB, %.1f MB else (code, per-thread scratch, the "
               "loader's and the bench's buffers)\n",
               held / 1e6, act_max / 1e6, ((double)hwm - (double)held - (double)act_max - (double)kv_max) / 1e6);
        dsv_model_free(m);
        dsv_backend_free(be);
        return 0;
}
