/* bench-decode: decode steps at a batch and a context length on any backend (cpu, or the
 * CUDA plugin), with no context to prefill: one page made by a real 64-token prefill is
 * copied on the backend into every page of every sequence (dsv_kv_page_copy), then each
 * sequence's length is set to the context, so a step reads what a step at that context
 * reads (the indexer scores every key, attention gathers its top-k records) whatever the
 * values. Each figure is set against the bandwidth roofline measured in the same run: the
 * bytes a step must read (dsv_inspect_decode_step: the fixed weights, the expected distinct
 * routed experts, the KV cache) over the backend's copy bandwidth (a device-to-device copy,
 * read plus written bytes over its time, best of 5). Combinations whose KV pool does not fit
 * are skipped with a line saying so. Figures, not tests: the device script
 * (tests/gpu/run-device.sh) runs it on v32-layers:8; `make check` runs it once on tiny
 * (tests/bench/bench-decode.sh) so that it keeps working.
 *
 * usage: bench-decode --model DIR|preset:NAME [--backend cpu|cuda] [--threads N]
 *                     [--batch B]... [--context C]... [--steps N] [--copy-mib N] [--csv FILE]
 * (--copy-mib: the bandwidth test's buffer, default 1024, at most an eighth of free memory)
 * CSV rows (run-device.sh's columns): bench,decode,MODEL,bB_ctxC,ms,tok/s,tok/s,
 * roofline,BOUND,FRACTION,,ok|skipped */
#include "config.h"

#include <math.h>

#include "daemon/inspect.h"
#include "daemon/runtime/runtime.h"
#include "daemon/util.h"
#include "tests/bench/bench-runtime.h"

#define MAX_LIST 16
#define TEMPLATE_TOKENS DSV_KV_PAGE_TOKENS

struct args {
        struct bench_common c;
        long steps, copy_mib;
        long batch[MAX_LIST], context[MAX_LIST];
        int n_batch, n_context;
};

static int usage(void) {
        fprintf(stderr, "usage: bench-decode --model DIR|preset:NAME [--backend cpu|cuda] [--threads N] [--batch B]... "
                        "[--context C]... [--steps N] [--copy-mib N] [--csv FILE]\n");
        return 2;
}

static int parse(int argc, char **argv, struct args *a) {
        *a = (struct args){.c = {.backend = "cpu"}, .steps = 16, .copy_mib = 1024};
        for (int i = 1; i < argc; i++) {
                const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
                if (!v)
                        return -1;
                i++;
                const int common = bench_common_opt(&a->c, o, v);
                if (common < 0)
                        return -1;
                if (common > 0)
                        ;
                else if (strcmp(o, "--copy-mib") == 0 && dsv_parse_int(v, 1, 1 << 20, &a->copy_mib) == 0)
                        ;
                else if (strcmp(o, "--steps") == 0 && dsv_parse_int(v, 1, 100000, &a->steps) == 0)
                        ;
                else if (strcmp(o, "--batch") == 0 && a->n_batch < MAX_LIST &&
                         dsv_parse_int(v, 1, 4096, &a->batch[a->n_batch]) == 0)
                        a->n_batch++;
                else if (strcmp(o, "--context") == 0 && a->n_context < MAX_LIST &&
                         dsv_parse_int(v, 1, 1 << 24, &a->context[a->n_context]) == 0)
                        a->n_context++;
                else
                        return -1;
        }
        if (!a->c.model)
                return -1;
        if (!a->n_batch)
                a->batch[a->n_batch++] = 1;
        if (!a->n_context)
                a->context[a->n_context++] = 4096;
        return 0;
}

/* Read plus written bytes per second of a device-to-device copy of n bytes (best of 5), or 0
 * where the backend has no copy or the buffers do not fit. */
static double copy_bandwidth(struct dsv_backend *be, size_t n) {
        void *a = NULL, *b = NULL;
        double best = 1e30;
        if (!be->ops->copy || be->ops->alloc(be, n, &a) < 0)
                return 0;
        if (be->ops->alloc(be, n, &b) < 0) {
                be->ops->dealloc(be, a, n);
                return 0;
        }
        if (be->ops->fill(be, a, 0x3c, n) >= 0 && be->ops->synchronize(be) >= 0)
                for (int r = 0; r < 6; r++) {
                        const uint64_t t0 = dsv_now_ns();
                        if (be->ops->copy(be, b, a, n) < 0 || be->ops->synchronize(be) < 0)
                                break;
                        if (r > 0) /* the first one warms */
                                best = fmin(best, (dsv_now_ns() - t0) / 1e9);
                }
        be->ops->dealloc(be, a, n);
        be->ops->dealloc(be, b, n);
        return best < 1e30 ? 2.0 * (double)n / best : 0;
}

/* One (batch, context) combination in a pool of its own; prints its line. 1: skipped (the
 * pool does not fit), 0: measured, < 0: failed. */
static int run_one(struct dsv_runtime *rt, const struct args *a, int B, int64_t C, double bw, FILE *csv) {
        const struct dsv_model_config *c = rt->cfg;
        const int G = (int)a->steps, per_seq = (int)DIV_ROUND_UP(C + G + 2, DSV_KV_PAGE_TOKENS);
        const int V = c->vocab_size;
        struct dsv_kv_pool *kv = NULL, *own = rt->kv;
        struct dsv_kv_seq tmpl = {0}, *tp = &tmpl;
        struct dsv_kv_seq *seqs = calloc((size_t)B, sizeof(*seqs));
        struct dsv_kv_seq **sp = calloc((size_t)B, sizeof(*sp));
        int32_t *tok = calloc((size_t)MAX(B, TEMPLATE_TOKENS), sizeof(int32_t));
        int32_t *pos = calloc((size_t)MAX(B, TEMPLATE_TOKENS), sizeof(int32_t));
        int32_t *sq = calloc((size_t)MAX(B, TEMPLATE_TOKENS), sizeof(int32_t));
        bool *want = calloc((size_t)TEMPLATE_TOKENS, sizeof(bool));
        float *logits = malloc((size_t)B * V * sizeof(float));
        struct dsv_error err = {{0}};
        char shape[64];
        int r = -ENOMEM;

        snprintf(shape, sizeof(shape), "b%d_ctx%lld", B, (long long)C);
        if (!seqs || !sp || !tok || !pos || !sq || !want || !logits)
                goto out;
        if (C + G + 2 > c->max_position_embeddings) {
                printf("decode batch %d context %lld: skipped: past the model's %d positions\n", B, (long long)C,
                       c->max_position_embeddings);
                r = 1;
                goto skip;
        }
        const int64_t pages = (int64_t)B * per_seq + 1;
        if (pages > INT32_MAX ||
            (r = dsv_kv_pool_new_layers(rt->be, c, rt->kv->layout.format, rt->kv->layout.n_layers, (int)pages, &kv)) < 0) {
                printf("decode batch %d context %lld: skipped: a KV pool of %lld pages (%.1f GB) does not fit (%s)\n", B,
                       (long long)C, (long long)pages, (double)pages * (double)rt->kv_page_bytes / 1e9,
                       strerror(r < 0 ? -r : EOVERFLOW));
                r = 1;
                goto skip;
        }
        rt->kv = kv; /* the passes below run on this pool (the runtime's own comes back at the end) */
        /* the template: a real prefill of one page on a sequence of its own */
        if ((r = dsv_kv_seq_reserve(kv, &tmpl, TEMPLATE_TOKENS)) < 0)
                goto fail;
        for (int i = 0; i < TEMPLATE_TOKENS; i++)
                tok[i] = (int32_t)((i * 7919 + 13) % V), pos[i] = i, sq[i] = 0;
        want[TEMPLATE_TOKENS - 1] = true;
        struct dsv_batch b = {.n_tokens = TEMPLATE_TOKENS, .token = tok, .pos = pos, .seq = sq, .want_logits = want,
                              .n_seqs = 1, .seqs = &tp};
        if ((r = dsv_runtime_forward(rt, &b, logits, &err)) < 0)
                goto fail;
        /* every page of every sequence a copy of it; each sequence C tokens long */
        const uint64_t t0 = dsv_now_ns();
        for (int s = 0; s < B; s++) {
                sp[s] = &seqs[s];
                if ((r = dsv_kv_seq_reserve(kv, &seqs[s], (int)(C + G + 2))) < 0) /* 2 warm-up steps + G */
                        goto fail;
                for (int p = 0; p < seqs[s].n_pages; p++)
                        if ((r = dsv_kv_page_copy(kv, seqs[s].pages[p], tmpl.pages[0])) < 0)
                                goto fail;
                seqs[s].len = (int)C;
                tok[s] = (int32_t)((s * 104729 + 7) % V);
                sq[s] = s;
        }
        if ((r = rt->be->ops->synchronize(rt->be)) < 0)
                goto fail;
        const double fill_s = (dsv_now_ns() - t0) / 1e9;
        b = (struct dsv_batch){.n_tokens = B, .token = tok, .pos = pos, .seq = sq, .n_seqs = B, .seqs = sp};
        double td = 0;
        for (int g = -2; g < G; g++) { /* two steps to warm up (graphs record on a bucket's second use) */
                for (int s = 0; s < B; s++)
                        pos[s] = seqs[s].len;
                const uint64_t ts = dsv_now_ns();
                if ((r = dsv_runtime_forward(rt, &b, logits, &err)) < 0)
                        goto fail;
                if (g >= 0)
                        td += (dsv_now_ns() - ts) / 1e9;
                for (int s = 0; s < B; s++) { /* greedy: the next token of each sequence */
                        const float *l = logits + (size_t)s * V;
                        int best = 0;
                        for (int i = 1; i < V; i++)
                                best = l[i] > l[best] ? i : best;
                        tok[s] = best;
                }
        }
        struct dsv_param_counts pc;
        struct dsv_kv_costs kvc;
        struct dsv_decode_step ds = {0};
        if (dsv_inspect_params(c, &pc) == 0 &&
            dsv_inspect_kv_costs(c, rt->kv->layout.format == DSV_KV_FP8 ? DSV_INSPECT_KV_FP8 : DSV_INSPECT_KV_F32, &kvc) == 0)
                dsv_inspect_decode_step(c, &pc, &kvc, (uint64_t)C, B, bw, &ds);
        const double ms = td / G * 1e3, tps = B * G / td, frac = bw > 0 && ds.tokens_per_s > 0 ? tps / ds.tokens_per_s : 0;
        printf("decode batch %d context %lld: %.3f ms/step, %.1f tok/s; roofline %.1f tok/s (%.1f MB a step at %.1f GB/s): "
               "ratio %.2fx (context made in %.2f s)\n",
               B, (long long)C, ms, tps, ds.tokens_per_s, ds.bytes / 1e6, bw / 1e9, frac, fill_s);
        if (csv)
                fprintf(csv, "bench,decode,%s,%s,%.3f,%.2f,tok/s,roofline,%.2f,%.4f,,ok\n", a->c.model, shape, ms, tps,
                        ds.tokens_per_s, frac);
        r = 0;
        goto out;
fail:
        fprintf(stderr, "bench-decode: batch %d context %lld: %s\n", B, (long long)C, err.msg[0] ? err.msg : strerror(-r));
        goto out;
skip:
        if (csv)
                fprintf(csv, "bench,decode,%s,%s,,,tok/s,roofline,,,,skipped\n", a->c.model, shape);
out:
        rt->kv = own;
        if (kv) {
                for (int s = 0; seqs && s < B; s++)
                        dsv_kv_seq_release(kv, &seqs[s]);
                dsv_kv_seq_release(kv, &tmpl);
                dsv_kv_pool_free(kv);
        }
        free(seqs);
        free(sp);
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

        if (parse(argc, argv, &a) < 0)
                return usage();
        if (bench_open("bench-decode", &a.c, (struct dsv_runtime_opts){.kv_tokens = TEMPLATE_TOKENS}, &rt, &csv))
                return 1;
        uint64_t free_b = 0, total_b = 0;
        if (rt->be->ops->mem_info)
                rt->be->ops->mem_info(rt->be, &free_b, &total_b);
        const size_t n = (size_t)MIN(MAX(free_b / 8, (uint64_t)1 << 20), (uint64_t)a.copy_mib << 20);
        const double bw = copy_bandwidth(rt->be, n);
        printf("bench-decode: %s on %s: %.2f GB of weights; copy bandwidth %.1f GB/s (read + written, %zu MiB; the "
               "roofline divides by it)\n",
               a.c.model, rt->be->ops->describe ? rt->be->ops->describe(rt->be) : rt->be->ops->name,
               dsv_model_weight_bytes(rt->model) / 1e9, bw / 1e9, n >> 20);
        for (int i = 0; i < a.n_batch && rc >= 0; i++)
                for (int j = 0; j < a.n_context && rc >= 0; j++) {
                        int r = run_one(rt, &a, (int)a.batch[i], a.context[j], bw, csv);
                        if (r < 0)
                                rc = r;
                }
        if (csv)
                fclose(csv);
        dsv_runtime_free(rt);
        return rc < 0 ? 1 : 0;
}
