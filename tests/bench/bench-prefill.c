/* bench-prefill: prefill of T tokens (one sequence, an empty cache, logits for the last
 * position) on any backend (cpu, or the CUDA plugin), as tokens/s and TFLOP/s, each set
 * against the dense FP8 GEMM rate measured in the same run on the same backend: the
 * backend's own FP8 linear (faithful: activations quantised per 128, 128x128 block scales,
 * fp32 accumulation) on [T, hidden] x [intermediate, hidden]^T with weights made by the
 * fill_random op, best of 3 after a warm-up. The FLOPs of a prefill are
 * dsv_inspect_prefill_flops' total with DSA (linear layers, the indexer over every earlier
 * key, attention over min(t+1, index_topk) keys). `--gemm-tflops X` adds a second ceiling
 * given from outside (the device script passes the cuBLASLt FP8 rate of its fp8_gemm
 * harness). Figures, not tests: the device script (tests/gpu/run-device.sh) runs it on
 * v32-layers:8 at 8K tokens; `make check` runs it on tiny (tests/bench/bench-prefill.sh) so
 * that it keeps working.
 *
 * usage: bench-prefill --model DIR|preset:NAME [--backend cpu|cuda] [--threads N]
 *                      [--tokens T]... [--reps N] [--gemm-tflops X] [--csv FILE]
 * CSV rows (run-device.sh's columns):
 *   bench,prefill,MODEL,tT,ms,TFLOP/s,TFLOP/s,fp8_linear,RATE,FRACTION,,ok
 *   bench,prefill_gemm,MODEL,TxNxK,ms,TFLOP/s,TFLOP/s,,,,,ok */
#include "config.h"

#include <math.h>

#include "daemon/inspect.h"
#include "daemon/runtime/runtime.h"
#include "daemon/util.h"
#include "tests/bench/bench-runtime.h"

#define MAX_LIST 16

struct args {
        struct bench_common c;
        long reps;
        long tokens[MAX_LIST];
        int n_tokens;
        double gemm_tflops;
};

static int usage(void) {
        fprintf(stderr, "usage: bench-prefill --model DIR|preset:NAME [--backend cpu|cuda] [--threads N] [--tokens T]... "
                        "[--reps N] [--gemm-tflops X] [--csv FILE]\n");
        return 2;
}

static int parse(int argc, char **argv, struct args *a) {
        *a = (struct args){.c = {.backend = "cpu"}, .reps = 1};
        for (int i = 1; i < argc; i++) {
                const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
                char *end;
                if (!v)
                        return -1;
                i++;
                const int common = bench_common_opt(&a->c, o, v);
                if (common < 0)
                        return -1;
                if (common > 0)
                        ;
                else if (strcmp(o, "--reps") == 0 && dsv_parse_int(v, 1, 100, &a->reps) == 0)
                        ;
                else if (strcmp(o, "--tokens") == 0 && a->n_tokens < MAX_LIST &&
                         dsv_parse_int(v, 1, 1 << 20, &a->tokens[a->n_tokens]) == 0)
                        a->n_tokens++;
                else if (strcmp(o, "--gemm-tflops") == 0 && (errno = 0, a->gemm_tflops = strtod(v, &end), 1) && !errno &&
                         end != v && !*end && a->gemm_tflops > 0 && isfinite(a->gemm_tflops))
                        ;
                else
                        return -1;
        }
        if (!a->c.model)
                return -1;
        if (!a->n_tokens)
                a->tokens[a->n_tokens++] = 8192;
        return 0;
}

/* A [rows, cols] tensor of type t in backend memory, filled by fill_random (key k). */
static int make(struct dsv_backend *be, enum dsv_dtype t, int64_t rows, int64_t cols, uint64_t k, struct dsv_tensor *ret) {
        void *p = NULL;
        const size_t n = (size_t)rows * (size_t)cols * dsv_dtype_size(t);
        int r = be->ops->alloc(be, MAX(n, (size_t)1), &p);
        if (r < 0)
                return r;
        *ret = dsv_tensor_2d(t, p, rows, cols);
        struct dsv_op op = {.type = DSV_OP_FILL_RANDOM};
        /* F32 (activations, block scales): positive, 2^-14 x [28, 228] x 2^-j; FP8: the op's codes */
        op.fill_random = (struct dsv_op_fill_random){.out = ret, .key = k, .center = t == DSV_F8_E4M3 ? 0 : 128,
                                                     .spread = t == DSV_F8_E4M3 ? 0 : 100, .exp2 = -14, .exp2_spread = 1};
        if ((r = dsv_backend_compute(be, &op)) < 0)
                be->ops->dealloc(be, p, MAX(n, (size_t)1));
        return r;
}

static void unmake(struct dsv_backend *be, struct dsv_tensor *t) {
        if (t->data)
                be->ops->dealloc(be, t->data, MAX((size_t)t->ne[0] * (size_t)t->ne[1] * dsv_dtype_size(t->type), (size_t)1));
        t->data = NULL;
}

/* The backend's faithful FP8 linear on x[T, K] W[N, K]^T: FLOP/s (best of 3 after a warm-up),
 * 0 where it cannot run; *ms its time. */
static double gemm_rate(struct dsv_backend *be, int64_t T, int64_t N, int64_t K, double *ms) {
        struct dsv_tensor x = {0}, w = {0}, s = {0}, out = {0};
        double best = 1e30;
        if (make(be, DSV_F32, T, K, 1, &x) < 0 || make(be, DSV_F8_E4M3, N, K, 2, &w) < 0 ||
            make(be, DSV_F32, (N + 127) / 128, (K + 127) / 128, 3, &s) < 0 || make(be, DSV_F32, T, N, 4, &out) < 0)
                goto out;
        w.scale = &s;
        struct dsv_op op = {.type = DSV_OP_LINEAR, .faithful = true};
        op.linear = (struct dsv_op_linear){.out = &out, .x = &x, .w = &w, .quant_in = true, .round_out = true};
        if (!be->ops->supports_op(be, &op))
                goto out;
        for (int r = 0; r < 4; r++) {
                const uint64_t t0 = dsv_now_ns();
                if (dsv_backend_compute(be, &op) < 0 || be->ops->synchronize(be) < 0)
                        break;
                if (r > 0)
                        best = fmin(best, (dsv_now_ns() - t0) / 1e9);
        }
out:
        unmake(be, &x);
        unmake(be, &w);
        unmake(be, &s);
        unmake(be, &out);
        *ms = best < 1e30 ? best * 1e3 : 0;
        return best < 1e30 ? 2.0 * (double)T * (double)N * (double)K / best : 0;
}

/* Prefill of T tokens into an empty sequence (a warm-up pass first, then the best of reps);
 * prints its line. 1: skipped, 0: measured, < 0: failed. */
static int run_one(struct dsv_runtime *rt, const struct args *a, int T, FILE *csv) {
        const struct dsv_model_config *c = rt->cfg;
        const int V = c->vocab_size;
        int32_t *tok = calloc((size_t)T, sizeof(int32_t)), *pos = calloc((size_t)T, sizeof(int32_t));
        int32_t *sq = calloc((size_t)T, sizeof(int32_t));
        bool *want = calloc((size_t)T, sizeof(bool));
        float *logits = malloc((size_t)V * sizeof(float));
        struct dsv_kv_seq seq = {0}, *sp = &seq;
        struct dsv_error err = {{0}};
        char shape[32];
        double best = 1e30, gemm_ms = 0;
        int r = -ENOMEM;

        snprintf(shape, sizeof(shape), "t%d", T);
        if (!tok || !pos || !sq || !want || !logits)
                goto out;
        if (T > c->max_position_embeddings) {
                printf("prefill %d tokens: skipped: past the model's %d positions\n", T, c->max_position_embeddings);
                if (csv)
                        fprintf(csv, "bench,prefill,%s,%s,,,TFLOP/s,fp8_linear,,,,skipped\n", a->c.model, shape);
                r = 1;
                goto out;
        }
        for (int i = 0; i < T; i++)
                tok[i] = (int32_t)((i * 7919 + 13) % V), pos[i] = i;
        want[T - 1] = true;
        for (long rep = -1; rep < a->reps; rep++) { /* the first one warms (graphs, library heuristics, first touch) */
                if ((r = dsv_kv_seq_reserve(rt->kv, &seq, T)) < 0) {
                        err.msg[0] = 0;
                        goto fail;
                }
                const struct dsv_batch b = {.n_tokens = T, .token = tok, .pos = pos, .seq = sq, .want_logits = want,
                                            .n_seqs = 1, .seqs = &sp};
                const uint64_t t0 = dsv_now_ns();
                if ((r = dsv_runtime_forward(rt, &b, logits, &err)) < 0)
                        goto fail;
                if (rep >= 0)
                        best = fmin(best, (dsv_now_ns() - t0) / 1e9);
                dsv_kv_seq_release(rt->kv, &seq);
                seq = (struct dsv_kv_seq){0};
                if (!isfinite(logits[0])) {
                        fprintf(stderr, "bench-prefill: %d tokens: the last logits are not finite\n", T);
                        r = -ERANGE;
                        goto out;
                }
        }
        struct dsv_param_counts pc;
        struct dsv_flop_costs fc;
        struct dsv_flops f = {0};
        if (dsv_inspect_params(c, &pc) == 0) {
                dsv_inspect_flop_costs(c, &pc, &fc);
                dsv_inspect_prefill_flops(&fc, (uint64_t)T, &f);
        }
        const int64_t N = c->intermediate_size, K = c->hidden_size;
        const double gemm = gemm_rate(rt->be, T, N, K, &gemm_ms), tflops = f.total_dsa / best / 1e12;
        printf("prefill %d tokens: %.1f ms, %.1f tok/s, %.3f TFLOP/s (%.3g TFLOP: linear %.0f%%, indexer %.0f%%, attention "
               "%.0f%%); FP8 linear [%d x %lld] x [%lld x %lld]^T %.3f ms = %.3f TFLOP/s: ratio %.2f",
               T, best * 1e3, T / best, tflops, f.total_dsa / 1e12, 100 * f.linear / f.total_dsa,
               100 * f.indexer / f.total_dsa, 100 * f.attention_dsa / f.total_dsa, T, (long long)K, (long long)N,
               (long long)K, gemm_ms, gemm / 1e12, gemm > 0 ? tflops * 1e12 / gemm : 0);
        if (a->gemm_tflops > 0)
                printf("; of the given %.1f TFLOP/s: %.3f", a->gemm_tflops, tflops / a->gemm_tflops);
        printf("\n");
        if (csv) {
                fprintf(csv, "bench,prefill,%s,%s,%.3f,%.4f,TFLOP/s,fp8_linear,%.4f,%.4f,,ok\n", a->c.model, shape, best * 1e3,
                        tflops, gemm / 1e12, gemm > 0 ? tflops * 1e12 / gemm : 0);
                fprintf(csv, "bench,prefill_gemm,%s,%dx%lldx%lld,%.3f,%.4f,TFLOP/s,,,,,ok\n", a->c.model, T, (long long)N,
                        (long long)K, gemm_ms, gemm / 1e12);
                if (a->gemm_tflops > 0)
                        fprintf(csv, "bench,prefill,%s,%s,%.3f,%.4f,TFLOP/s,fp8_gemm_given,%.4f,%.4f,,ok\n", a->c.model, shape,
                                best * 1e3, tflops, a->gemm_tflops, tflops / a->gemm_tflops);
        }
        r = 0;
        goto out;
fail:
        fprintf(stderr, "bench-prefill: %d tokens: %s\n", T, err.msg[0] ? err.msg : strerror(-r));
out:
        dsv_kv_seq_release(rt->kv, &seq);
        free(tok);
        free(pos);
        free(sq);
        free(want);
        free(logits);
        return r;
}

int main(int argc, char **argv) {
        struct args a;
        struct dsv_runtime *rt;
        FILE *csv;
        int rc = 0;
        long most = 0;

        if (parse(argc, argv, &a) < 0)
                return usage();
        for (int i = 0; i < a.n_tokens; i++)
                most = MAX(most, a.tokens[i]);
        if (bench_open("bench-prefill", &a.c, (struct dsv_runtime_opts){.kv_tokens = (int)most}, &rt, &csv))
                return 1;
        printf("bench-prefill: %s on %s: %.2f GB of weights\n", a.c.model,
               rt->be->ops->describe ? rt->be->ops->describe(rt->be) : rt->be->ops->name, dsv_model_weight_bytes(rt->model) / 1e9);
        for (int i = 0; i < a.n_tokens && rc >= 0; i++) {
                int r = run_one(rt, &a, (int)a.tokens[i], csv);
                if (r < 0)
                        rc = r;
        }
        if (csv)
                fclose(csv);
        dsv_runtime_free(rt);
        return rc < 0 ? 1 : 0;
}
