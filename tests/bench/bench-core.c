/* bench-core: the engine's speed on a checkpoint (make bench runs it on the `small` preset).
 *   1. Loader: io_uring into backend memory vs a plain sequential read() of the same shard
 *      files (1 MiB buffer), measured in the same run, with the page cache of the shards
 *      dropped before each cold run (posix_fadvise DONTNEED: best effort, no root needed)
 *      and warm.
 *   2. CPU prefill and decode tokens/s at batch 1 and 8 (faithful numerics), decode against
 *      its memory-bandwidth roofline: the bytes a decode step must read (dsv32-inspect's
 *      model of it: the fixed weights, the expected distinct routed experts, the KV cache)
 *      over the read bandwidth of all the backend's threads, measured in the same run. */
#include "config.h"

#include <fcntl.h>
#include <math.h>

#include "daemon/inspect.h"
#include "daemon/model/model.h"

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
        if (argc != 2) {
                fprintf(stderr, "usage: bench-core MODEL_DIR\n");
                return 2;
        }
        if (dsv_backend_cpu_new(0, &be) < 0 || dsv_checkpoint_open(argv[1], &ck, &err) < 0) {
                fprintf(stderr, "bench-core: %s\n", err.msg);
                return 1;
        }
        printf("checkpoint %s: %zu shards, %.1f MB of tensors; %d CPU threads\n", argv[1], ck->n_shards,
               ck->tensor_bytes / 1e6, be->n_threads);

        for (int cold = 1; cold >= 0; cold--) {
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
                        best_l = fmin(best_l, load_once(argv[1], be, &bl, &st));
                }
                printf("load (%s page cache, best of %d): io_uring loader %.2f GB/s (%s%s, %u reads, %u from the page cache)\n"
                       "    vs sequential read() into one 1 MiB buffer %.2f GB/s: ratio %.2fx\n"
                       "    vs read() of each file into fresh memory %.2f GB/s: ratio %.2fx\n",
                       cold ? "dropped (posix_fadvise DONTNEED)" : "warm", reps, bl / best_l / 1e9, st.uring ? "io_uring" : "pread",
                       st.direct ? " O_DIRECT" : ", buffered", st.reads, st.cached_reads, bs / best_s / 1e9,
                       (bl / best_l) / (bs / best_s), bn / best_n / 1e9, (bl / best_l) / (bn / best_n));
        }
        dsv_checkpoint_free(ck);

        /* engine speed */
        struct dsv_model_opts mo = {.numerics = DSV_NUMERICS_FAITHFUL};
        struct dsv_model *m;
        if (dsv_model_load(argv[1], be, &mo, &m, &err) < 0)
                return 1;
        const struct dsv_model_config *c = dsv_model_get_config(m);
        const int P = 256, G = 16;
        struct dsv_param_counts pc;
        struct dsv_kv_costs kvc;
        double bw = read_bandwidth(be->n_threads);
        if (dsv_inspect_params(c, &pc) < 0 || dsv_inspect_kv_costs(c, DSV_INSPECT_KV_FP8, &kvc) < 0) {
                fprintf(stderr, "bench-core: cannot account the model's bytes\n");
                return 1;
        }
        printf("memory read bandwidth, %d threads: %.2f GB/s (the decode roofline below divides by it)\n", be->n_threads,
               bw / 1e9);
        int batches[] = {1, 8};
        for (size_t bi = 0; bi < 2; bi++) {
                int B = batches[bi];
                struct dsv_kv_pool *kv;
                struct dsv_kv_seq seqs[8] = {{0}};
                struct dsv_kv_seq *sp[8];
                int32_t *tok = malloc((size_t)B * P * sizeof(int32_t)), *pos = malloc((size_t)B * P * sizeof(int32_t)),
                        *sq = malloc((size_t)B * P * sizeof(int32_t));
                bool *want = calloc((size_t)B * P, 1);
                float *logits = malloc((size_t)B * c->vocab_size * sizeof(float));
                if (dsv_kv_pool_new(be, c, DSV_KV_FP8, B * DIV_ROUND_UP(P + G + 1, DSV_KV_PAGE_TOKENS), &kv) < 0)
                        return 1;
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
                if (dsv_model_forward(m, kv, &b, logits, &err) < 0) {
                        fprintf(stderr, "bench-core: %s\n", err.msg);
                        return 1;
                }
                double tp = (dsv_now_ns() - t0) / 1e9;
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
                struct dsv_decode_step ds;
                dsv_inspect_decode_step(c, &pc, &kvc, (uint64_t)(P + G / 2), B, bw, &ds);
                printf("batch %d: prefill %d tokens/seq: %.1f tok/s; decode %d steps: %.2f tok/s (%.1f ms/step)\n", B, P, B * P / tp, G,
                       B * G / td, td / G * 1e3);
                printf("    decode vs the bandwidth roofline (%.1f MB read per step: %.1f routed experts per MoE layer): "
                       "%.1f tok/s bound, ratio %.2fx\n",
                       ds.bytes / 1e6, ds.experts_per_layer, ds.tokens_per_s, (B * G / td) / ds.tokens_per_s);
                for (int s = 0; s < B; s++)
                        dsv_kv_seq_release(kv, &seqs[s]);
                dsv_kv_pool_free(kv);
                free(tok);
                free(pos);
                free(sq);
                free(want);
                free(logits);
        }
        dsv_model_free(m);
        dsv_backend_free(be);
        return 0;
}
