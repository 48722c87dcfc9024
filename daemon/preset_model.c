/* Models from a preset with no checkpoint on disk (see preset_model.h): the checkpoint
 * description and the per-tensor parameters of the backend's fill_random op. */
#include "config.h"

#include "daemon/preset_model.h"

#include <math.h>
#include <unistd.h>

#include "daemon/rng.h"
#include "kernels/fill_random.h"

#define PRESET_SEED 0x7633322d70726573ull

bool dsv_preset_model_name(const char *model, const char **preset) {
        struct dsv_model_config c;
        const size_t np = strlen(DSV_PRESET_PREFIX);
        if (!model)
                return false;
        if (strncmp(model, DSV_PRESET_PREFIX, np) == 0) {
                *preset = model + np;
                return true;
        }
        if (dsv_model_config_preset(model, &c, NULL) < 0 || access(model, F_OK) == 0)
                return false;
        *preset = model;
        return true;
}

bool dsv_checkpoint_is_preset(const struct dsv_checkpoint *ck) {
        return ck && ck->n_shards == 0 && ck->dir && strncmp(ck->dir, DSV_PRESET_PREFIX, strlen(DSV_PRESET_PREFIX)) == 0;
}

static int cmp_name(const void *a, const void *b) {
        return strcmp(((const struct dsv_ckpt_tensor *)a)->name, ((const struct dsv_ckpt_tensor *)b)->name);
}

static enum dsv_dtype kind_dtype(enum dsv_tensor_kind k) {
        switch (k) {
        case DSV_TK_LINEAR:
                return DSV_F8_E4M3;
        case DSV_TK_F32:
                return DSV_F32;
        default:
                return DSV_BF16;
        }
}

static int add_tensor(struct dsv_checkpoint *ck, const char *name, enum dsv_dtype t, int ndim, int64_t rows, int64_t cols) {
        struct dsv_ckpt_tensor *x = &ck->tensors[ck->n_tensors];
        if (!(x->name = strdup(name)))
                return -ENOMEM;
        x->dtype = t;
        x->ndim = ndim;
        x->shape[0] = rows;
        x->shape[1] = ndim == 2 ? cols : 0;
        x->nbytes = (uint64_t)rows * (uint64_t)(ndim == 2 ? cols : 1) * dsv_dtype_size(t);
        ck->tensor_bytes += x->nbytes;
        ck->bytes_by_dtype[t] += x->nbytes;
        ck->n_tensors++;
        return 0;
}

int dsv_checkpoint_new_preset(const char *preset, struct dsv_checkpoint **ret, struct dsv_error *err) {
        struct dsv_checkpoint *ck = calloc(1, sizeof(*ck));
        struct dsv_tensor_spec *specs = NULL;
        size_t n = 0;
        int r;
        if (!ck)
                return -ENOMEM;
        if ((r = dsv_model_config_preset(preset, &ck->cfg, err)) < 0)
                goto fail;
        if (asprintf(&ck->dir, DSV_PRESET_PREFIX "%s", preset) < 0) {
                ck->dir = NULL;
                r = -ENOMEM;
                goto fail;
        }
        if ((r = dsv_weight_specs(&ck->cfg, false, &specs, &n)) < 0)
                goto fail;
        if (!(ck->tensors = calloc(2 * n, sizeof(*ck->tensors)))) {
                r = -ENOMEM;
                goto fail;
        }
        for (size_t i = 0; i < n; i++) {
                const struct dsv_tensor_spec *s = &specs[i];
                const enum dsv_dtype t = kind_dtype(s->kind);
                char sname[160];
                if ((r = add_tensor(ck, s->name, t, s->ndim, s->shape[0], s->ndim == 2 ? s->shape[1] : 0)) < 0)
                        goto fail;
                if (t != DSV_F8_E4M3)
                        continue;
                snprintf(sname, sizeof(sname), "%s_scale_inv", s->name);
                if ((r = add_tensor(ck, sname, DSV_F32, 2, DIV_ROUND_UP(s->shape[0], DSV_QBLOCK),
                                    DIV_ROUND_UP(s->shape[1], DSV_QBLOCK))) < 0)
                        goto fail;
        }
        qsort(ck->tensors, ck->n_tensors, sizeof(*ck->tensors), cmp_name);
        free(specs);
        *ret = ck;
        return 0;
fail:
        free(specs);
        dsv_checkpoint_free(ck);
        return r;
}

static bool ends_with(const char *s, const char *suffix) {
        const size_t a = strlen(s), b = strlen(suffix);
        return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* Output gain of a linear for an input of RMS 1: the sublayers that write the residual stream
 * add a fraction of it, so that it stays of RMS ~1 through the layers. */
static double linear_gain(const char *name) {
        if (strstr(name, "experts.") && strstr(name, "down_proj"))
                return 0.12;
        if (strstr(name, "o_proj") || strstr(name, "down_proj"))
                return 0.25;
        return 1.0;
}

/* exp2 such that values of spread s times 2^exp2 have about the standard deviation sd
 * (uniform integers in [-s, s]: sd s / sqrt(3)) */
static int32_t exp2_for(double sd, double unit_sd) {
        const double e = floor(log2(sd / unit_sd) + 0.5);
        return (int32_t)MAX(MIN(e, 100.0), -100.0);
}

/* The fill of one tensor, from its name and shape: see preset_model.h for the formats. */
static void fill_params(const struct dsv_checkpoint *ck, const struct dsv_ckpt_tensor *t, struct dsv_op_fill_random *p) {
        const int64_t cols = t->ndim == 2 ? t->shape[1] : t->shape[0];
        p->key = dsv_hash_str(t->name, PRESET_SEED);
        if (t->dtype == DSV_F8_E4M3)
                return; /* codes: the block scale sets their magnitude */
        if (ends_with(t->name, "_scale_inv")) {
                /* 2^e or 2^(e-1) per 128x128 block (RMS 0.79 * 2^e): weight sd gain / sqrt(in) */
                char w[160];
                snprintf(w, sizeof(w), "%.*s", (int)(strlen(t->name) - strlen("_scale_inv")), t->name);
                const struct dsv_ckpt_tensor *wt = dsv_checkpoint_find(ck, w);
                const double in = wt && wt->ndim == 2 ? (double)wt->shape[1] : 128.0;
                p->center = 1;
                p->exp2 = exp2_for(linear_gain(w) / sqrt(in), sqrt(DSV_FILL_E4M3_MS) * 0.79);
                p->exp2_spread = 1;
                return;
        }
        if (ends_with(t->name, "e_score_correction_bias")) { /* small: routing follows the router */
                p->spread = 8;
                p->exp2 = -10;
                return;
        }
        if (ends_with(t->name, "k_norm.bias")) {
                p->spread = 8;
                p->exp2 = -7;
                return;
        }
        if (ends_with(t->name, "norm.weight")) { /* RMSNorm / LayerNorm weights: 1 +- 1/8 */
                p->center = 64;
                p->spread = 8;
                p->exp2 = -6;
                return;
        }
        p->spread = 127;
        if (ends_with(t->name, "embed_tokens.weight")) { /* RMS ~1 */
                p->exp2 = -6;
                return;
        }
        /* lm_head, router, indexer head weights: a linear of RMS-1 inputs, outputs of sd ~1 */
        p->exp2 = exp2_for(1.0 / sqrt((double)cols), 127.0 / sqrt(3.0));
}

int dsv_preset_fill(const struct dsv_checkpoint *ck, const struct dsv_load_item *items, size_t n, struct dsv_backend *be,
                    struct dsv_load_stats *stats, struct dsv_error *err) {
        const uint64_t t0 = dsv_now_ns();
        uint64_t bytes = 0;
        int r;
        for (size_t i = 0; i < n; i++) {
                const struct dsv_ckpt_tensor *t = items[i].t;
                struct dsv_tensor out = dsv_tensor_2d(t->dtype, items[i].dst, t->ndim == 2 ? t->shape[0] : 1,
                                                      t->ndim == 2 ? t->shape[1] : t->shape[0]);
                /* the op makes whole tensors: a share of one (ep,tp's split tensors, model/tp.c)
                 * would get the whole tensor's values, and bytes past its frame */
                if ((size_t)out.ne[0] * (size_t)out.ne[1] * dsv_dtype_size(t->dtype) != t->nbytes)
                        return dsv_error_set(err, EINVAL,
                                             "%s: tensor %s is loaded as a share (the ep,tp layout), which a preset cannot "
                                             "make: use ep,dp, or a checkpoint on disk (dsv32-mkmodel --preset)",
                                             ck->dir, t->name);
                struct dsv_op op = {.type = DSV_OP_FILL_RANDOM};
                op.fill_random.out = &out;
                fill_params(ck, t, &op.fill_random);
                r = be->ops->supports_op(be, &op) ? be->ops->compute(be, &op) : -EOPNOTSUPP;
                if (r < 0)
                        return dsv_error_set(err, -r, "%s: the %s backend could not make tensor %s (op fill_random, %s [%lld x %lld]): %s",
                                             ck->dir, be->ops->name, t->name, dsv_dtype_name(t->dtype),
                                             (long long)out.ne[1], (long long)out.ne[0], strerror(-r));
                bytes += t->nbytes;
        }
        if ((r = be->ops->synchronize(be)) < 0)
                return dsv_error_set(err, -r, "%s: making the weights on the %s backend failed: %s", ck->dir, be->ops->name,
                                     strerror(-r));
        if (stats) {
                memset(stats, 0, sizeof(*stats));
                stats->bytes_tensors = bytes;
                stats->elapsed_ns = dsv_now_ns() - t0;
        }
        return 0;
}
