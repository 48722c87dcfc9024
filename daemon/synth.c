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

int dsv_synth_code_dims(const struct dsv_model_config *c) {
        return c->n_routed_experts <= c->hidden_size / 4 ? c->n_routed_experts : 0;
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
        const bool zero_code = writes_residual(s->name) && R == g->c->hidden_size;
        const int64_t code0 = g->c->hidden_size - g->R;
        float *w = malloc((size_t)R * (size_t)K * sizeof(float));
        if (!w)
                return -ENOMEM;
        OMP(parallel for schedule(static))
        for (int64_t i = 0; i < R; i++)
                for (int64_t j = 0; j < K; j++)
                        w[i * K + j] = (zero_code && i >= code0) ? 0.0f : (float)(sd * dsv_rand_normal(key, (uint64_t)(i * K + j)));
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

static int gen_entry(struct gen *g, const struct entry *e, uint8_t *out) {
        const struct dsv_model_config *c = g->c;
        const struct dsv_tensor_spec *s = e->spec;
        const int D = c->hidden_size, R = g->R;
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
                /* RMS ~1; the last R coordinates hold the token's routing code: a permutation of
                 * R evenly spaced values in [-1.5, 1.5] */
                int *perm = malloc((size_t)MAX(R, 1) * sizeof(int));
                if (!perm) {
                        free(v);
                        return -ENOMEM;
                }
                for (int64_t t = 0; t < rows; t++) {
                        if (R > 0)
                                dsv_rand_perm(dsv_mix64(g->o->seed ^ 0xc0de ^ dsv_mix64((uint64_t)t)), perm, R);
                        for (int64_t j = 0; j < cols; j++)
                                v[t * cols + j] = j < D - R ? (float)dsv_rand_normal(key, (uint64_t)(t * cols + j))
                                                            : (float)(3.0 * perm[j - (D - R)] / MAX(R - 1, 1) - 1.5);
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
                int *perm = malloc((size_t)MAX(R, 1) * sizeof(int));
                if (!perm) {
                        free(v);
                        return -ENOMEM;
                }
                if (R > 0)
                        dsv_rand_perm(dsv_mix64(g->o->seed ^ 0x9a7e ^ (uint64_t)s->layer), perm, R);
                for (int64_t e2 = 0; e2 < rows; e2++)
                        for (int64_t j = 0; j < cols; j++) {
                                double x = 0.3 / sqrt((double)D) * dsv_rand_normal(key, (uint64_t)(e2 * cols + j));
                                if (R > 0 && j >= D - R)
                                        x = (j - (D - R) == perm[e2 % R]) ? 2.5 : 0.0;
                                v[e2 * cols + j] = (float)x;
                        }
                free(perm);
        } else if (strstr(s->name, "e_score_correction_bias")) {
                for (int64_t i = 0; i < n; i++)
                        v[i] = (float)(0.1 * dsv_rand_u01(key, (uint64_t)i) - 0.05);
        } else if (strstr(s->name, "weights_proj")) {
                for (int64_t i = 0; i < n; i++)
                        v[i] = (float)(dsv_rand_normal(key, (uint64_t)i) / sqrt((double)D));
        } else if (strstr(s->name, "k_norm.bias")) {
                for (int64_t i = 0; i < n; i++)
                        v[i] = (float)(0.05 * dsv_rand_normal(key, (uint64_t)i));
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
                size_t cap = 1 << 16, len = 0;
                uint64_t total = 0;
                text = malloc(cap);
                if (!text) {
                        r = -ENOMEM;
                        goto out;
                }
                for (size_t i = 0; i < n; i++)
                        total += ents[i].nbytes;
                len += (size_t)snprintf(text + len, cap - len, "{\n  \"metadata\": {\"total_size\": %llu},\n  \"weight_map\": {",
                                        (unsigned long long)total);
                for (size_t i = 0; i < n; i++) {
                        if (cap - len < 512) {
                                char *t2 = realloc(text, cap * 2);
                                if (!t2) {
                                        r = -ENOMEM;
                                        goto out;
                                }
                                text = t2;
                                cap *= 2;
                        }
                        len += (size_t)snprintf(text + len, cap - len, "%s\n    \"%s\": \"model-%05d-of-%05d.safetensors\"",
                                                i ? "," : "", ents[i].name, ents[i].shard + 1, n_shards);
                }
                len += (size_t)snprintf(text + len, cap - len, "\n  }\n}\n");
                snprintf(path, sizeof(path), "%s/model.safetensors.index.json", dir);
                if ((r = dsv_write_file(path, text, len)) < 0) {
                        dsv_error_set(err, r, "Cannot write %s: %s", path, strerror(-r));
                        goto out;
                }
                free(text);
                text = NULL;
        }

        for (int sh = 0; sh < n_shards; sh++) {
                size_t cap = 1 << 16, len = 0;
                uint64_t off = 0;
                FILE *f;
                text = malloc(cap);
                if (!text) {
                        r = -ENOMEM;
                        goto out;
                }
                len += (size_t)snprintf(text + len, cap - len, "{\"__metadata__\":{\"format\":\"pt\"}");
                for (size_t i = 0; i < n; i++) {
                        struct entry *e = &ents[i];
                        if (e->shard != sh)
                                continue;
                        if (cap - len < 512) {
                                char *t2 = realloc(text, cap * 2);
                                if (!t2) {
                                        r = -ENOMEM;
                                        goto out;
                                }
                                text = t2;
                                cap *= 2;
                        }
                        e->offset = off;
                        if (e->ndim == 2)
                                len += (size_t)snprintf(text + len, cap - len,
                                                        ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%lld,%lld],\"data_offsets\":[%llu,%llu]}",
                                                        e->name, dsv_dtype_name(e->dtype), (long long)e->shape[0],
                                                        (long long)e->shape[1], (unsigned long long)off,
                                                        (unsigned long long)(off + e->nbytes));
                        else
                                len += (size_t)snprintf(text + len, cap - len,
                                                        ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%lld],\"data_offsets\":[%llu,%llu]}",
                                                        e->name, dsv_dtype_name(e->dtype), (long long)e->shape[0],
                                                        (unsigned long long)off, (unsigned long long)(off + e->nbytes));
                        off += e->nbytes;
                }
                len += (size_t)snprintf(text + len, cap - len, "}");
                while (len % 8) /* data starts 8-byte aligned, as safetensors pads with spaces */
                        text[len++] = ' ';
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
