/* Synthetic checkpoint writer (see synth.h). */
#include "config.h"

#include "daemon/synth.h"

#include <math.h>

#include "daemon/rng.h"
#include "daemon/weights_spec.h"
#include "kernels/dtype.h"
#include "kernels/numerics.h"

#ifdef _OPENMP
#define DSV_PRAGMA_(x) _Pragma(#x)
#define OMP(x) DSV_PRAGMA_(omp x)
#else
#define OMP(x)
#endif

/* Reserved residual coordinates (never written by a sublayer), at the end of the hidden
 * state:  [D - R - 2] bias: 1 for every token (a constant input for the indexer's query and
 *         head weights);  [D - R - 1] salience of the token as an indexer key;
 *         [D - R, D) the router code. */
static int route_dims(const struct dsv_model_config *c) {
        return c->n_routed_experts + 2 <= c->hidden_size / 4 ? c->n_routed_experts : 0;
}

int dsv_synth_code_dims(const struct dsv_model_config *c) {
        return route_dims(c) ? route_dims(c) + 2 : 0;
}

/* Indexer conditioning: every head's query is ~ alpha * v on the non-rope dims (from the bias
 * coordinate, through NQC constant rows of q_a), every key is LayerNorm(beta * sal * v + noise),
 * and the head weights are positive. Keys of ordinary tokens (sal = -1) then score far below
 * zero on every head, so relu makes them exactly 0 in every numerics and implementation (ties
 * broken by position); the 1 in 8 salient tokens (sal in [0.5, 2]) score high. Selection
 * boundaries thus fall between exact zeros or between well separated values, clear of FP8
 * noise, while queries, RoPE and the key noise still shape the scores. */
#define NQC 4
#define IDX_ALPHA 0.38
#define IDX_BETA 2.0
#define IDX_QNOISE 0.2

static bool token_salient(uint64_t seed, int64_t t, double *sal) {
        uint64_t h = dsv_mix64(seed ^ 0x5a11e ^ dsv_mix64((uint64_t)t));
        bool s = (h & 7) == 0;
        *sal = s ? 0.5 + 1.5 * (double)(h >> 11) * 0x1p-53 : -1.0;
        return s;
}

/* the shared key/query direction, zero-mean over the head dim */
static void idx_direction(uint64_t seed, int d, double *v) {
        double mean = 0;
        for (int j = 0; j < d; j++)
                mean += v[j] = dsv_rand_normal(dsv_mix64(seed ^ 0xd1ec), (uint64_t)j);
        mean /= d;
        for (int j = 0; j < d; j++)
                v[j] -= mean;
}

struct entry {
        char name[160];
        enum dsv_dtype dtype;
        int ndim;
        int64_t shape[2];
        size_t nbytes;
        int shard;
        const struct dsv_tensor_spec *spec; /* NULL for a weight_scale_inv */
        bool is_scale;
        uint64_t offset; /* within the shard's data */
};

struct gen {
        const struct dsv_model_config *c;
        const struct dsv_synth_opts *o;
        int R; /* code dims */
        /* scales of the last FP8 weight generated, written by the following scale entry */
        float *pending_scale;
        size_t pending_scale_n;
};

/* Output gain of each linear for an RMS-1 input. */
static double linear_gain(const char *name) {
        if (strstr(name, "o_proj"))
                return 0.30;
        if (strstr(name, "mlp.experts."))
                return strstr(name, "down_proj") ? 0.12 : 1.0;
        if (strstr(name, "shared_experts"))
                return strstr(name, "down_proj") ? 0.12 : 1.0;
        if (strstr(name, "down_proj"))
                return 0.25;
        if (strstr(name, "eh_proj"))
                return 0.5;
        return 1.0;
}

/* Linears whose output rows are residual coordinates: the code rows stay zero. */
static bool writes_residual(const char *name) {
        return strstr(name, "o_proj") || strstr(name, "down_proj") || strstr(name, "eh_proj");
}

static void put_bf16(uint8_t *out, size_t i, float v) {
        uint16_t h = dsv_f32_to_bf16(v);
        memcpy(out + 2 * i, &h, 2);
}

static int gen_linear(struct gen *g, const struct entry *e, uint8_t *out) {
        const struct dsv_tensor_spec *s = e->spec;
        const int64_t R = s->shape[0], K = s->shape[1];
        const uint64_t key = dsv_hash_str(s->name, g->o->seed);
        const double sd = linear_gain(s->name) / sqrt((double)K);
        const struct dsv_model_config *c = g->c;
        const bool zero_code = writes_residual(s->name) && R == c->hidden_size;
        const int64_t code0 = c->hidden_size - g->R;
        const bool cond = g->R > 0;
        float *w = malloc((size_t)R * (size_t)K * sizeof(float));
        if (!w)
                return -ENOMEM;
        OMP(parallel for schedule(static))
        for (int64_t j = 0; j < (R * K + 1) / 2; j++) {
                double a, b;
                dsv_rand_normal2(key, (uint64_t)j, &a, &b);
                w[2 * j] = (float)(sd * a);
                if (2 * j + 1 < R * K)
                        w[2 * j + 1] = (float)(sd * b);
        }
        if (zero_code)
                memset(w + code0 * K, 0, (size_t)((R - code0) * K) * sizeof(float));
        if (g->o->mtp_predictable && strstr(s->name, "eh_proj")) {
                /* [I | 0]: the next token's normed embedding, routing code included */
                memset(w, 0, (size_t)(R * K) * sizeof(float));
                for (int64_t i = 0; i < R && i < K; i++)
                        w[i * K + i] = 1.0f;
        }
        if (cond && strstr(s->name, "self_attn.q_a_proj") && R > NQC) {
                /* rows 0..NQC-1: the bias coordinate, hence ~constant after q_a_layernorm */
                for (int64_t i = 0; i < NQC; i++)
                        for (int64_t k = 0; k < K; k++)
                                w[i * K + k] = k == code0 ? 3.0f : w[i * K + k] * 0.1f;
        } else if (cond && strstr(s->name, "self_attn.q_b_proj")) {
                /* MLA queries ignore the constant rows */
                for (int64_t i = 0; i < R; i++)
                        for (int64_t k = 0; k < NQC && k < K; k++)
                                w[i * K + k] = 0;
        } else if (cond && strstr(s->name, "indexer.wq_b")) {
                const int d = c->index_head_dim, r = c->qk_rope_head_dim;
                double *v = malloc((size_t)d * sizeof(double));
                if (!v) {
                        free(w);
                        return -ENOMEM;
                }
                idx_direction(g->o->seed, d, v);
                for (int64_t i = 0; i < R; i++) {
                        int j = (int)(i % d);
                        for (int64_t k = 0; k < K; k++)
                                w[i * K + k] *= (float)(IDX_QNOISE / linear_gain(s->name));
                        for (int64_t k = 0; k < NQC && k < K; k++)
                                w[i * K + k] = j >= r ? (float)(IDX_ALPHA * v[j] / NQC) : 0.0f;
                }
                free(v);
        } else if (cond && strstr(s->name, "indexer.wk")) {
                const int d = c->index_head_dim;
                double *v = malloc((size_t)d * sizeof(double));
                if (!v) {
                        free(w);
                        return -ENOMEM;
                }
                idx_direction(g->o->seed, d, v);
                for (int64_t i = 0; i < R; i++)
                        w[i * K + code0 + 1] = (float)(IDX_BETA * v[i % d]);
                free(v);
        }
        if (e->dtype == DSV_BF16) {
                for (int64_t i = 0; i < R * K; i++)
                        put_bf16(out, (size_t)i, w[i]);
                free(w);
                return 0;
        }
        /* FP8: one power-of-two scale per 128x128 block (ue8m0, as V3.1/V3.2 checkpoints) */
        const int64_t br = DIV_ROUND_UP(R, 128), bc = DIV_ROUND_UP(K, 128);
        free(g->pending_scale);
        g->pending_scale = malloc((size_t)(br * bc) * sizeof(float));
        g->pending_scale_n = (size_t)(br * bc);
        if (!g->pending_scale) {
                free(w);
                return -ENOMEM;
        }
        for (int64_t bi = 0; bi < br; bi++)
                for (int64_t bj = 0; bj < bc; bj++) {
                        float amax = 0;
                        for (int64_t i = bi * 128; i < MIN(R, bi * 128 + 128); i++)
                                for (int64_t j = bj * 128; j < MIN(K, bj * 128 + 128); j++)
                                        amax = fmaxf(amax, fabsf(w[i * K + j]));
                        float sc = dsv_act_scale(amax);
                        g->pending_scale[bi * bc + bj] = sc;
                        for (int64_t i = bi * 128; i < MIN(R, bi * 128 + 128); i++)
                                for (int64_t j = bj * 128; j < MIN(K, bj * 128 + 128); j++)
                                        out[i * K + j] = dsv_quant_e4m3(w[i * K + j], 1.0f / sc);
                }
        free(w);
        return 0;
}

/* What an MTP tensor is generated as: the main model's embedding and head for the layer's
 * copies of them; with mtp_predictable, the last main layer's block tensors and model.norm. */
static void mtp_source(const struct gen *g, const struct dsv_tensor_spec *s, struct dsv_tensor_spec *src) {
        const int L = g->c->num_hidden_layers;
        char prefix[64];
        int pl = snprintf(prefix, sizeof(prefix), "model.layers.%d.", s->layer);
        *src = *s;
        if (!s->mtp || strncmp(s->name, prefix, (size_t)pl) != 0)
                return;
        const char *rest = s->name + pl;
        if (strcmp(rest, "embed_tokens.weight") == 0)
                snprintf(src->name, sizeof(src->name), "model.embed_tokens.weight");
        else if (strcmp(rest, "shared_head.head.weight") == 0)
                snprintf(src->name, sizeof(src->name), "lm_head.weight");
        else if (!g->o->mtp_predictable || strcmp(rest, "enorm.weight") == 0 || strcmp(rest, "hnorm.weight") == 0 ||
                 strcmp(rest, "eh_proj.weight") == 0)
                return;
        else if (strcmp(rest, "shared_head.norm.weight") == 0)
                snprintf(src->name, sizeof(src->name), "model.norm.weight");
        else {
                snprintf(src->name, sizeof(src->name), "model.layers.%d.%s", L - 1, rest);
                src->layer = L - 1;
        }
        src->mtp = false;
}

static int gen_entry(struct gen *g, const struct entry *e0, uint8_t *out) {
        const struct dsv_model_config *c = g->c;
        struct dsv_tensor_spec src;
        struct entry ecopy = *e0;
        const struct entry *e = &ecopy;
        const struct dsv_tensor_spec *s = e0->spec;
        if (s) {
                mtp_source(g, s, &src);
                ecopy.spec = s = &src;
        }
        const int D = c->hidden_size, R = g->R, RR = route_dims(c);
        uint64_t key;

        if (e->is_scale) {
                if (!g->pending_scale || g->pending_scale_n * 4 != e->nbytes)
                        return -EINVAL;
                memcpy(out, g->pending_scale, e->nbytes);
                return 0;
        }
        key = dsv_hash_str(s->name, g->o->seed);
        if (s->kind == DSV_TK_LINEAR && e->dtype != DSV_I32)
                return gen_linear(g, e, out);
        if (e->dtype == DSV_I32) { /* deliberately wrong dtype: any bytes */
                memset(out, 0, e->nbytes);
                return 0;
        }
        const int64_t n = e->nbytes / dsv_dtype_size(e->dtype);
        const int64_t rows = e->ndim == 2 ? e->shape[0] : 1, cols = e->ndim == 2 ? e->shape[1] : e->shape[0];
        float *v = malloc((size_t)n * sizeof(float));
        if (!v)
                return -ENOMEM;

        if (strstr(s->name, "embed_tokens")) {
                /* RMS ~1; the reserved coordinates: bias 1, the token's key salience, and its
                 * routing code: a permutation of RR evenly spaced values in [-1.5, 1.5] */
                int *perm = malloc((size_t)MAX(RR, 1) * sizeof(int));
                if (!perm) {
                        free(v);
                        return -ENOMEM;
                }
                for (int64_t t = 0; t < rows; t++) {
                        double sal;
                        token_salient(g->o->seed, t, &sal);
                        if (RR > 0)
                                dsv_rand_perm(dsv_mix64(g->o->seed ^ 0xc0de ^ dsv_mix64((uint64_t)t)), perm, RR);
                        for (int64_t j = 0; j < cols; j++) {
                                float x;
                                if (j < D - R)
                                        x = (float)dsv_rand_normal(key, (uint64_t)(t * cols + j));
                                else if (j == D - R)
                                        x = 1.0f;
                                else if (j == D - R + 1)
                                        x = (float)sal;
                                else
                                        x = (float)(3.0 * perm[j - (D - RR)] / MAX(RR - 1, 1) - 1.5);
                                v[t * cols + j] = x;
                        }
                }
                free(perm);
        } else if (strstr(s->name, "lm_head") || strstr(s->name, "shared_head.head")) {
                for (int64_t t = 0; t < rows; t++)
                        for (int64_t j = 0; j < cols; j++)
                                v[t * cols + j] = j < D - R ? (float)(3.0 / sqrt((double)(D - R)) *
                                                                      dsv_rand_normal(key, (uint64_t)(t * cols + j)))
                                                            : 0.0f;
        } else if (strstr(s->name, "mlp.gate.weight")) {
                /* logit_e = gain * code[pi_layer(e)] + small noise from the other coordinates */
                int *perm = malloc((size_t)MAX(RR, 1) * sizeof(int));
                if (!perm) {
                        free(v);
                        return -ENOMEM;
                }
                if (RR > 0)
                        dsv_rand_perm(dsv_mix64(g->o->seed ^ 0x9a7e ^ (uint64_t)s->layer), perm, RR);
                for (int64_t e2 = 0; e2 < rows; e2++)
                        for (int64_t j = 0; j < cols; j++) {
                                double x = 0.3 / sqrt((double)D) * dsv_rand_normal(key, (uint64_t)(e2 * cols + j));
                                if (RR > 0 && j >= D - RR)
                                        x = (j - (D - RR) == perm[e2 % RR]) ? 2.5 : 0.0;
                                else if (R > 0 && j >= D - R)
                                        x = 0.0;
                                v[e2 * cols + j] = (float)x;
                        }
                free(perm);
        } else if (strstr(s->name, "e_score_correction_bias")) {
                for (int64_t i = 0; i < n; i++)
                        v[i] = (float)(0.1 * dsv_rand_u01(key, (uint64_t)i) - 0.05);
        } else if (strstr(s->name, "weights_proj")) {
                /* positive head weights (bias coordinate) with some token dependence */
                for (int64_t i = 0; i < n; i++) {
                        int64_t j = i % cols;
                        v[i] = (float)(dsv_rand_normal(key, (uint64_t)i) / sqrt((double)D));
                        if (R > 0)
                                v[i] = j == D - R ? 2.0f : (j > D - R ? 0.0f : v[i] * 0.2f);
                }
        } else if (strstr(s->name, "k_norm.bias")) {
                for (int64_t i = 0; i < n; i++)
                        v[i] = (float)(0.05 * dsv_rand_normal(key, (uint64_t)i));
        } else if (g->o->mtp_predictable && strstr(s->name, "enorm")) {
                for (int64_t i = 0; i < n; i++)
                        v[i] = 1.0f;
        } else {
                /* norm weights: 1 + small noise; the code coordinates of hidden-size norms stay 1 */
                for (int64_t i = 0; i < n; i++)
                        v[i] = (n == D && i >= D - R) ? 1.0f : (float)(1.0 + 0.05 * dsv_rand_normal(key, (uint64_t)i));
        }
        for (int64_t i = 0; i < n; i++) {
                if (e->dtype == DSV_BF16)
                        put_bf16(out, (size_t)i, v[i]);
                else
                        memcpy(out + 4 * i, &v[i], 4);
        }
        free(v);
        return 0;
}

static int write_all(FILE *f, const void *p, size_t n) { return fwrite(p, 1, n, f) == n ? 0 : -EIO; }

/* A growing string; err latches the first allocation failure. */
struct strbuf {
        char *p;
        size_t len, cap;
        int err;
};

_printf_(2, 3) static void sb_printf(struct strbuf *b, const char *fmt, ...) {
        va_list ap;
        int k;
        if (b->err)
                return;
        for (;;) {
                va_start(ap, fmt);
                k = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
                va_end(ap);
                if (k < 0) {
                        b->err = -EINVAL;
                        return;
                }
                if (b->p && b->len + (size_t)k < b->cap) {
                        b->len += (size_t)k;
                        return;
                }
                size_t cap = MAX(b->cap * 2, b->len + (size_t)k + 4096);
                char *p = realloc(b->p, cap);
                if (!p) {
                        b->err = -ENOMEM;
                        return;
                }
                b->p = p;
                b->cap = cap;
        }
}

int dsv_synth_write(const char *dir, const struct dsv_model_config *c, const struct dsv_synth_opts *opts,
                    struct dsv_error *err) {
        struct dsv_synth_opts def = {.seed = 1, .n_shards = 2};
        const struct dsv_synth_opts *o = opts ? opts : &def;
        struct dsv_tensor_spec *specs = NULL;
        struct entry *ents = NULL;
        size_t n_specs = 0, n = 0;
        int n_shards = o->n_shards > 0 ? o->n_shards : 2;
        struct gen g = {.c = c, .o = o, .R = dsv_synth_code_dims(c)};
        char path[4096];
        char *text = NULL;
        int r;

        if ((r = dsv_mkdir_p(dir, 0755)) < 0)
                return dsv_error_set(err, r, "Cannot create %s: %s", dir, strerror(-r));
        text = dsv_model_config_to_json(c);
        if (!text)
                return -ENOMEM;
        snprintf(path, sizeof(path), "%s/config.json", dir);
        r = dsv_write_file(path, text, strlen(text));
        free(text);
        text = NULL;
        if (r < 0)
                return dsv_error_set(err, r, "Cannot write %s: %s", path, strerror(-r));
        if (o->config_only)
                return 0;

        if (o->mtp_predictable && (!o->mtp || c->num_hidden_layers < 1 ||
                                   dsv_cfg_layer_is_moe(c, c->num_hidden_layers) != dsv_cfg_layer_is_moe(c, c->num_hidden_layers - 1)))
                return dsv_error_set(err, EINVAL,
                                     "a predictable MTP layer copies the last main layer: it needs the MTP layer and a last "
                                     "main layer of the MTP block's kind (first_k_dense_replace = %d, %d layers)",
                                     c->first_k_dense_replace, c->num_hidden_layers);
        if ((r = dsv_weight_specs(c, o->mtp, &specs, &n_specs)) < 0)
                return r;
        ents = calloc(2 * n_specs, sizeof(*ents));
        if (!ents) {
                r = -ENOMEM;
                goto out;
        }
        for (size_t i = 0; i < n_specs; i++) {
                const struct dsv_tensor_spec *s = &specs[i];
                struct entry *e;
                bool fp8 = s->kind == DSV_TK_LINEAR && c->fp8 && !(o->bf16_tensor && strcmp(o->bf16_tensor, s->name) == 0);
                if (o->drop_tensor && strcmp(o->drop_tensor, s->name) == 0)
                        continue;
                e = &ents[n++];
                snprintf(e->name, sizeof(e->name), "%s", s->name);
                e->spec = s;
                e->ndim = s->ndim;
                e->shape[0] = s->shape[0];
                e->shape[1] = s->shape[1];
                e->dtype = s->kind == DSV_TK_LINEAR ? (fp8 ? DSV_F8_E4M3 : DSV_BF16) : s->kind == DSV_TK_F32 ? DSV_F32 : DSV_BF16;
                if (o->bad_dtype_tensor && strcmp(o->bad_dtype_tensor, s->name) == 0)
                        e->dtype = DSV_I32;
                if (o->bad_shape_tensor && strcmp(o->bad_shape_tensor, s->name) == 0)
                        e->shape[0]++;
                e->nbytes = (size_t)(e->ndim == 2 ? e->shape[0] * e->shape[1] : e->shape[0]) * dsv_dtype_size(e->dtype);
                /* shards: embeddings in the first, head in the last, layers spread in between */
                if (s->layer < 0)
                        e->shard = strstr(s->name, "embed") ? 0 : n_shards - 1;
                else
                        e->shard = (int)((int64_t)s->layer * n_shards / (c->num_hidden_layers + (o->mtp ? 1 : 0)));
                if (fp8 && e->dtype == DSV_F8_E4M3) {
                        struct entry *sc = &ents[n++];
                        snprintf(sc->name, sizeof(sc->name), "%s_scale_inv", s->name);
                        sc->is_scale = true;
                        sc->dtype = DSV_F32;
                        sc->ndim = 2;
                        sc->shape[0] = DIV_ROUND_UP(s->shape[0], 128);
                        sc->shape[1] = DIV_ROUND_UP(s->shape[1], 128);
                        sc->nbytes = (size_t)(sc->shape[0] * sc->shape[1]) * 4;
                        sc->shard = e->shard;
                }
        }

        /* index */
        {
                struct strbuf sb = {0};
                uint64_t total = 0;
                for (size_t i = 0; i < n; i++)
                        total += ents[i].nbytes;
                sb_printf(&sb, "{\n  \"metadata\": {\"total_size\": %llu},\n  \"weight_map\": {", (unsigned long long)total);
                for (size_t i = 0; i < n; i++)
                        sb_printf(&sb, "%s\n    \"%s\": \"model-%05d-of-%05d.safetensors\"", i ? "," : "", ents[i].name,
                                  ents[i].shard + 1, n_shards);
                sb_printf(&sb, "\n  }\n}\n");
                snprintf(path, sizeof(path), "%s/model.safetensors.index.json", dir);
                r = sb.err ? sb.err : dsv_write_file(path, sb.p, sb.len);
                free(sb.p);
                if (r < 0) {
                        dsv_error_set(err, r, "Cannot write %s: %s", path, strerror(-r));
                        goto out;
                }
        }

        for (int sh = 0; sh < n_shards; sh++) {
                struct strbuf sb = {0};
                uint64_t off = 0;
                FILE *f;
                sb_printf(&sb, "{\"__metadata__\":{\"format\":\"pt\"}");
                for (size_t i = 0; i < n; i++) {
                        struct entry *e = &ents[i];
                        if (e->shard != sh)
                                continue;
                        e->offset = off;
                        sb_printf(&sb, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%lld", e->name, dsv_dtype_name(e->dtype),
                                  (long long)e->shape[0]);
                        if (e->ndim == 2)
                                sb_printf(&sb, ",%lld", (long long)e->shape[1]);
                        sb_printf(&sb, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                                  (unsigned long long)(off + e->nbytes));
                        off += e->nbytes;
                }
                sb_printf(&sb, "}");
                while (!sb.err && sb.len % 8) /* data starts 8-byte aligned, as safetensors pads with spaces */
                        sb_printf(&sb, " ");
                if (sb.err) {
                        free(sb.p);
                        r = sb.err;
                        goto out;
                }
                text = sb.p;
                size_t len = sb.len;
                snprintf(path, sizeof(path), "%s/model-%05d-of-%05d.safetensors", dir, sh + 1, n_shards);
                f = fopen(path, "wbe");
                if (!f) {
                        r = dsv_error_set(err, errno, "Cannot create %s: %s", path, strerror(errno));
                        goto out;
                }
                uint8_t lenb[8];
                for (int b = 0; b < 8; b++)
                        lenb[b] = (uint8_t)((uint64_t)len >> (8 * b));
                r = write_all(f, lenb, 8);
                if (r >= 0)
                        r = write_all(f, text, len);
                for (size_t i = 0; i < n && r >= 0; i++) {
                        struct entry *e = &ents[i];
                        if (e->shard != sh)
                                continue;
                        uint8_t *buf = malloc(MAX(e->nbytes, 1));
                        if (!buf) {
                                r = -ENOMEM;
                                break;
                        }
                        r = gen_entry(&g, e, buf);
                        if (r >= 0)
                                r = write_all(f, buf, e->nbytes);
                        free(buf);
                }
                if (fclose(f) != 0 && r >= 0)
                        r = -EIO;
                free(text);
                text = NULL;
                if (r < 0) {
                        dsv_error_set(err, r, "Cannot write %s: %s", path, strerror(-r));
                        goto out;
                }
        }
        r = 0;
out:
        free(text);
        free(ents);
        free(specs);
        free(g.pending_scale);
        return r;
}
