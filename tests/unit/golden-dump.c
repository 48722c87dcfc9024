/* golden-dump: the C engine's side of the golden-model test. Same interface and output
 * format as tests/ref/ref_model.py:
 *   golden-dump --model DIR --tokens 1,2,3 --numerics exact|faithful --out OUTDIR [--force DIR]
 * writes logits.f32 [T, V], layers.f32 [L, T, D] (residual stream after each layer, the fp32
 * sum the next norm sees), topk.i32 [L, T, index_topk], experts.i32 [L, T, k] (-1 for dense
 * layers) and meta.json. With --force, the indexer and expert selections come from DIR's
 * topk.i32 / experts.i32 (the prompt is prefilled in one batch, as the reference does).
 * With --mtp, the MTP layer also runs over positions 0..T-2 (next token from the prompt, the
 * main model's hidden states) into OUTDIR/mtp/ in the same format (one layer), as the
 * reference's --mtp; it runs as one batch of decode rows, the MTP's only path. */
#include "config.h"

#include <getopt.h>

#include "daemon/model/model.h"

struct dump {
        int T, L, D, K, E;
        float *layers;
        int32_t *topk, *experts;
        const int32_t *ftopk, *fexperts;
        /* the MTP layer (index L): T - 1 rows */
        float *mlayers;
        int32_t *mtopk, *mexperts;
        const int32_t *fmtopk, *fmexperts;
};

static bool force_topk(void *ud, int layer, int seq, int pos, int32_t *idx, int k) {
        struct dump *d = ud;
        const int32_t *f = layer == d->L ? d->fmtopk : d->ftopk;
        if (!f)
                return false;
        memcpy(idx, f + ((size_t)(layer == d->L ? 0 : layer) * d->T + pos) * d->K, (size_t)k * sizeof(int32_t));
        return true;
}
static bool force_experts(void *ud, int layer, int seq, int pos, int32_t *ids, int k) {
        struct dump *d = ud;
        const int32_t *f = layer == d->L ? d->fmexperts : d->fexperts;
        if (!f)
                return false;
        memcpy(ids, f + ((size_t)(layer == d->L ? 0 : layer) * d->T + pos) * d->E, (size_t)k * sizeof(int32_t));
        return true;
}
static void on_topk(void *ud, int layer, int seq, int pos, const int32_t *idx, int k, const float *s, int n) {
        struct dump *d = ud;
        int32_t *t = layer == d->L ? d->mtopk : d->topk + (size_t)layer * d->T * d->K;
        memcpy(t + (size_t)pos * d->K, idx, (size_t)k * sizeof(int32_t));
}
static void on_experts(void *ud, int layer, int seq, int pos, const int32_t *ids, const float *w, int k, const float *s,
                       int n) {
        struct dump *d = ud;
        int32_t *e = layer == d->L ? d->mexperts : d->experts + (size_t)layer * d->T * d->E;
        memcpy(e + (size_t)pos * d->E, ids, (size_t)k * sizeof(int32_t));
}
static void on_layer(void *ud, int layer, int seq, int pos, const float *x, int dim) {
        struct dump *d = ud;
        float *l = layer == d->L ? d->mlayers : d->layers + (size_t)layer * d->T * d->D;
        memcpy(l + (size_t)pos * d->D, x, (size_t)dim * sizeof(float));
}


static void *read_all(const char *dir, const char *name, size_t want) {
        char p[4096];
        char *buf;
        size_t n;
        snprintf(p, sizeof(p), "%s/%s", dir, name);
        if (dsv_read_file(p, want + 1, &buf, &n) < 0 || n != want) {
                fprintf(stderr, "golden-dump: %s: expected %zu bytes\n", p, want);
                exit(1);
        }
        return buf;
}

static void write_all(const char *dir, const char *name, const void *p, size_t n) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        if (dsv_write_file(path, p, n) < 0) {
                fprintf(stderr, "golden-dump: cannot write %s\n", path);
                exit(1);
        }
}

static void write_meta(const char *out, const struct dsv_model_config *cfg, const struct dump *d, int T, int n_layers,
                       enum dsv_numerics num, const int32_t *tok) {
        char meta[65536];
        int n = snprintf(meta, sizeof(meta),
                         "{\"T\": %d, \"vocab_size\": %d, \"n_layers\": %d, \"hidden\": %d, \"index_topk\": %d, "
                         "\"experts_per_tok\": %d, \"numerics\": \"%s\", \"tokens\": [",
                         T, cfg->vocab_size, n_layers, d->D, d->K, d->E, dsv_numerics_name(num));
        for (int i = 0; i < T && n < (int)sizeof(meta) - 32; i++)
                n += snprintf(meta + n, sizeof(meta) - (size_t)n, "%s%d", i ? ", " : "", tok[i]);
        n += snprintf(meta + n, sizeof(meta) - (size_t)n, "]}\n");
        write_all(out, "meta.json", meta, (size_t)n);
}

int main(int argc, char **argv) {
        static const struct option opts[] = {{"model", required_argument, NULL, 'm'},   {"tokens", required_argument, NULL, 't'},
                                             {"numerics", required_argument, NULL, 'n'}, {"out", required_argument, NULL, 'o'},
                                             {"force", required_argument, NULL, 'f'},    {"mtp", no_argument, NULL, 'M'},
                                             {0}};
        const char *model = NULL, *tokens = NULL, *out = NULL, *force = NULL;
        struct dsv_model_opts mo = {.numerics = DSV_NUMERICS_FAITHFUL};
        struct dsv_error err = {{0}};
        bool mtp = false;
        int c;
        while ((c = getopt_long(argc, argv, "", opts, NULL)) >= 0) {
                switch (c) {
                case 'm':
                        model = optarg;
                        break;
                case 't':
                        tokens = optarg;
                        break;
                case 'n':
                        if (dsv_numerics_from_name(optarg) < 0)
                                return 2;
                        mo.numerics = (enum dsv_numerics)dsv_numerics_from_name(optarg);
                        break;
                case 'o':
                        out = optarg;
                        break;
                case 'f':
                        force = optarg;
                        break;
                case 'M':
                        mtp = true;
                        break;
                default:
                        return 2;
                }
        }
        if (!model || !tokens || !out)
                return 2;
        mo.mtp = mtp ? DSV_MTP_ON : DSV_MTP_OFF;
        int32_t tok[4096];
        int T = 0;
        for (const char *s = tokens; *s && T < 4096;) {
                tok[T++] = (int32_t)strtol(s, (char **)&s, 10);
                if (*s == ',')
                        s++;
        }
        struct dsv_backend *be;
        struct dsv_model *m;
        if (dsv_backend_cpu_new(0, &be) < 0 || dsv_model_load(model, be, &mo, &m, &err) < 0) {
                fprintf(stderr, "golden-dump: %s\n", err.msg);
                return 1;
        }
        const struct dsv_model_config *cfg = dsv_model_get_config(m);
        struct dump d = {.T = T, .L = cfg->num_hidden_layers, .D = cfg->hidden_size, .K = cfg->index_topk,
                         .E = cfg->num_experts_per_tok};
        d.layers = calloc((size_t)d.L * T * d.D, sizeof(float));
        d.topk = malloc((size_t)d.L * T * d.K * sizeof(int32_t));
        d.experts = malloc((size_t)d.L * T * d.E * sizeof(int32_t));
        float *logits = malloc((size_t)T * cfg->vocab_size * sizeof(float));
        if (!d.layers || !d.topk || !d.experts || !logits)
                return 1;
        memset(d.topk, 0xff, (size_t)d.L * T * d.K * sizeof(int32_t));
        memset(d.experts, 0xff, (size_t)d.L * T * d.E * sizeof(int32_t));
        if (force) {
                d.ftopk = read_all(force, "topk.i32", (size_t)d.L * T * d.K * sizeof(int32_t));
                d.fexperts = read_all(force, "experts.i32", (size_t)d.L * T * d.E * sizeof(int32_t));
        }
        if (mtp && T < 2) {
                fprintf(stderr, "golden-dump: --mtp needs at least two tokens\n");
                return 2;
        }
        if (mtp) {
                d.mlayers = calloc((size_t)T * d.D, sizeof(float));
                d.mtopk = malloc((size_t)T * d.K * sizeof(int32_t));
                d.mexperts = malloc((size_t)T * d.E * sizeof(int32_t));
                if (!d.mlayers || !d.mtopk || !d.mexperts)
                        return 1;
                memset(d.mtopk, 0xff, (size_t)T * d.K * sizeof(int32_t));
                memset(d.mexperts, 0xff, (size_t)T * d.E * sizeof(int32_t));
                if (force) {
                        char fd[4200];
                        snprintf(fd, sizeof(fd), "%s/mtp", force);
                        d.fmtopk = read_all(fd, "topk.i32", (size_t)(T - 1) * d.K * sizeof(int32_t));
                        d.fmexperts = read_all(fd, "experts.i32", (size_t)(T - 1) * d.E * sizeof(int32_t));
                }
        }
        struct dsv_model_hooks h = {.ud = &d, .force_topk = force_topk, .force_experts = force_experts, .on_topk = on_topk,
                                    .on_experts = on_experts, .on_layer = on_layer};
        dsv_model_set_hooks(m, &h);
        struct dsv_kv_pool *kv;
        struct dsv_kv_seq seq = {0};
        struct dsv_kv_seq *seqs[1] = {&seq};
        int32_t pos[4096], sq[4096] = {0};
        for (int i = 0; i < T; i++)
                pos[i] = i;
        float *hidden = malloc((size_t)T * d.D * sizeof(float));
        if (!hidden ||
            dsv_kv_pool_new_layers(be, cfg, dsv_numerics_kv_format(mo.numerics), dsv_model_kv_layers(m),
                                   DIV_ROUND_UP(T, DSV_KV_PAGE_TOKENS), &kv) < 0 ||
            dsv_kv_seq_reserve(kv, &seq, T) < 0)
                return 1;
        struct dsv_batch b = {.n_tokens = T, .token = tok, .pos = pos, .seq = sq, .n_seqs = 1, .seqs = seqs};
        if (dsv_model_forward_hidden(m, kv, &b, logits, hidden, &err) < 0) {
                fprintf(stderr, "golden-dump: %s\n", err.msg);
                return 1;
        }
        dsv_mkdir_p(out, 0755);
        write_all(out, "logits.f32", logits, (size_t)T * cfg->vocab_size * sizeof(float));
        write_all(out, "layers.f32", d.layers, (size_t)d.L * T * d.D * sizeof(float));
        write_all(out, "topk.i32", d.topk, (size_t)d.L * T * d.K * sizeof(int32_t));
        write_all(out, "experts.i32", d.experts, (size_t)d.L * T * d.E * sizeof(int32_t));
        write_meta(out, cfg, &d, T, d.L, mo.numerics, tok);
        if (mtp) {
                char od[4200];
                struct dsv_batch mb = {.n_tokens = T - 1, .token = tok + 1, .pos = pos, .seq = sq, .n_seqs = 1, .seqs = seqs};
                if (dsv_model_mtp_forward(m, kv, &mb, hidden, logits, NULL, &err) < 0) {
                        fprintf(stderr, "golden-dump: %s\n", err.msg);
                        return 1;
                }
                snprintf(od, sizeof(od), "%s/mtp", out);
                dsv_mkdir_p(od, 0755);
                write_all(od, "logits.f32", logits, (size_t)(T - 1) * cfg->vocab_size * sizeof(float));
                write_all(od, "layers.f32", d.mlayers, (size_t)(T - 1) * d.D * sizeof(float));
                write_all(od, "topk.i32", d.mtopk, (size_t)(T - 1) * d.K * sizeof(int32_t));
                write_all(od, "experts.i32", d.mexperts, (size_t)(T - 1) * d.E * sizeof(int32_t));
                write_meta(od, cfg, &d, T - 1, 1, mo.numerics, tok + 1);
        }
        free(hidden);
        free(d.mlayers);
        free(d.mtopk);
        free(d.mexperts);
        free((void *)d.fmtopk);
        free((void *)d.fmexperts);
        dsv_kv_seq_release(kv, &seq);
        dsv_kv_pool_free(kv);
        dsv_model_free(m);
        dsv_backend_free(be);
        free(d.layers);
        free(d.topk);
        free(d.experts);
        free((void *)d.ftopk);
        free((void *)d.fexperts);
        free(logits);
        return 0;
}
