/* The runtime (see runtime.h). */
#include "config.h"

#include "daemon/runtime/runtime.h"

#include "daemon/preset_model.h"
#include "daemon/rng.h"
#include "daemon/util.h"

void dsv_runtime_free(struct dsv_runtime *rt) {
        if (!rt)
                return;
        dsv_kv_pool_free(rt->kv);
        dsv_model_free(rt->model);
        dsv_backend_free(rt->be);
        free(rt);
}

/* The MTP mode for the backend opened (see mtp_auto_not_cpu). */
static enum dsv_mtp_mode mtp_mode(const struct dsv_runtime *rt, const struct dsv_runtime_opts *o) {
        if (o->mtp == DSV_MTP_AUTO && o->mtp_auto_not_cpu && strcmp(rt->be->ops->name, "cpu") == 0)
                return DSV_MTP_OFF;
        return o->mtp;
}

/* After a failure of r on be: err->msg gets the backend's own account of it (the CUDA error's
 * name and text, and the call that saw it), when it keeps one and the message lacks it. A
 * lost device (a sticky error) makes the result -ENOTRECOVERABLE whatever layer failed. */
static int backend_cause(struct dsv_backend *be, int r, struct dsv_error *err, const char *where) {
        const char *lost = be ? dsv_backend_device_error(be) : "";
        const char *why = lost[0] ? lost : be ? dsv_backend_last_error(be) : "";
        size_t n = strlen(err->msg);
        if (why[0] && !strstr(err->msg, why) && n + 8 < sizeof(err->msg))
                snprintf(err->msg + n, sizeof(err->msg) - n, "%s%s %s", n ? ": " : "", lost[0] ? "the device failed:" : where, why);
        return lost[0] ? -ENOTRECOVERABLE : r;
}

/* A failed pass: with the device lost, one message that says so first. */
static int pass_failed(struct dsv_runtime *rt, int r, struct dsv_error *err, const char *what) {
        const char *lost = dsv_backend_device_error(rt->be);
        if (lost[0])
                return dsv_error_set(err, ENOTRECOVERABLE, "%s failed on the device: %.900s", what, lost);
        return backend_cause(rt->be, r, err, "on the device:");
}

const char *dsv_runtime_device_error(const struct dsv_runtime *rt) { return rt && rt->be ? dsv_backend_device_error(rt->be) : ""; }

/* Opens the backend and loads the model on it; with "auto", a GPU backend that cannot run
 * the model (an op it lacks: -EOPNOTSUPP from the load-time probe) gives way to the CPU. */
static int open_model(struct dsv_runtime *rt, const struct dsv_runtime_opts *o, struct dsv_error *err) {
        const char *name = o->backend ? o->backend : "cpu";
        struct dsv_model_opts mo = {.numerics = o->numerics, .load = o->load, .mtp = o->mtp, .ep = o->ep, .tp = o->tp, .dp = o->dp,
                                    .kv_bytes = o->kv_bytes, .kv_tokens = o->kv_tokens,
                                    .max_pass_tokens = o->max_pass_tokens,
                                    .graphs_off = o->graphs_off};
        struct dsv_error e = {{0}};
        int r;

        if ((r = dsv_backend_open(name, &o->where, &rt->be, &e)) < 0)
                return dsv_error_set(err, r, "cannot create the %s backend: %.900s", name, e.msg);
        if (strcmp(name, "auto") == 0 && e.msg[0])
                snprintf(rt->backend_note, sizeof(rt->backend_note), "%s", e.msg);
        memset(&e, 0, sizeof(e));
        mo.mtp = mtp_mode(rt, o);
        mo.device = dsv_backend_describe(rt->be);
        r = dsv_model_load(o->model_dir, rt->be, &mo, &rt->model, &e);
        if (r == -EOPNOTSUPP && strcmp(name, "auto") == 0 && strcmp(rt->be->ops->name, "cpu") != 0) {
                snprintf(rt->backend_note, sizeof(rt->backend_note), "%s", e.msg);
                dsv_backend_free(rt->be);
                rt->be = NULL;
                if ((r = dsv_backend_cpu_new(o->where.threads, &rt->be)) < 0)
                        return dsv_error_set(err, r, "cannot create the CPU backend: %s", strerror(-r));
                memset(&e, 0, sizeof(e));
                mo.mtp = mtp_mode(rt, o);
                mo.device = NULL;
                r = dsv_model_load(o->model_dir, rt->be, &mo, &rt->model, &e);
        }
        if (r < 0) {
                r = backend_cause(rt->be, r, &e, "on the device:");
                return e.msg[0] && strstr(e.msg, o->model_dir) /* it names the file already */
                               ? dsv_error_set(err, r, "cannot load the model: %.1500s", e.msg)
                               : dsv_error_set(err, r, "cannot load the model from %.512s: %.1000s", o->model_dir,
                                               e.msg[0] ? e.msg : strerror(-r));
        }
        if (!dsv_model_has_mtp(rt->model))
                snprintf(rt->mtp_note, sizeof(rt->mtp_note), "%s",
                         !dsv_model_get_checkpoint(rt->model)->has_mtp ? "the checkpoint has no MTP layer"
                         : mo.mtp == DSV_MTP_OFF && o->mtp == DSV_MTP_AUTO
                                 ? "mtp = auto does not use it on the CPU backend, where a speculative step costs more than "
                                   "the tokens it saves (mtp = on forces it)"
                                 : "mtp = off");
        return 0;
}

/* What must agree for cached KV (the prefix cache, snapshots) to be reused: config.json and
 * the tensor index of the checkpoint, and the numerics (they set the KV format). */
static uint64_t fingerprint(const char *dir, enum dsv_numerics num) {
        static const char *const files[] = {"config.json", "model.safetensors.index.json"};
        uint64_t h = 1469598103934665603ull ^ (uint64_t)num;
        const char *preset;
        if (dsv_preset_model_name(dir, &preset)) /* no files: the preset's name says what the weights are */
                return dsv_hash_str(preset, h);
        for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
                _cleanup_free_ char *path = NULL, *data = NULL;
                size_t n = 0;
                if (asprintf(&path, "%s/%s", dir, files[i]) < 0 || dsv_read_file(path, 64u << 20, &data, &n) < 0)
                        continue;
                for (size_t j = 0; j < n; j++)
                        h = (h ^ (uint8_t)data[j]) * 1099511628211ull;
                h ^= n;
        }
        return h;
}

int dsv_runtime_open(const struct dsv_runtime_opts *o, struct dsv_runtime **ret, struct dsv_error *err) {
        struct dsv_runtime *rt = calloc(1, sizeof(*rt));
        struct dsv_kv_layout L;
        uint64_t n_pages;
        int r;

        if (!rt)
                return -ENOMEM;
        if ((r = open_model(rt, o, err)) < 0)
                goto fail;
        rt->cfg = dsv_model_get_config(rt->model);
        rt->numerics = dsv_model_numerics(rt->model);
        rt->fingerprint = fingerprint(o->model_dir, rt->numerics);
        /* with the MTP layer its attention's records share the pages */
        dsv_kv_layout_init_layers(&L, rt->cfg, dsv_numerics_kv_format(rt->numerics), dsv_model_kv_layers(rt->model),
                                  DSV_KV_PAGE_TOKENS);
        rt->kv_page_bytes = (uint64_t)L.n_layers * L.layer_page_bytes;
        rt->kv_bytes_per_token = dsv_kv_bytes_per_token(&L);
        if (!o->kv_bytes && !o->kv_tokens) {
                uint64_t free_b = 0, total_b = 0, cap, want;
                const bool host = rt->be->host_memory;
                /* by default two sequences of the longest context */
                want = (uint64_t)(o->kv_auto_tokens > 0 ? o->kv_auto_tokens : 2 * (int64_t)rt->cfg->max_position_embeddings) *
                       rt->kv_bytes_per_token;
                if (!rt->be->ops->mem_info || rt->be->ops->mem_info(rt->be, &free_b, &total_b) < 0) {
                        r = dsv_error_set(err, EINVAL,
                                          "the %s backend does not report its free memory: set kv-cache-mb (%llu bytes per token)",
                                          rt->be->ops->name, (unsigned long long)rt->kv_bytes_per_token);
                        goto fail;
                }
                cap = host ? free_b / 4 / (uint64_t)MAX(o->kv_share, 1) : free_b / 10 * 9;
                n_pages = MIN(want, cap) / MAX(rt->kv_page_bytes, 1u);
                snprintf(rt->kv_note, sizeof(rt->kv_note),
                         "KV cache sized automatically: %.1f MiB (%llu tokens; %s %.1f GiB free, %s; set kv-cache-mb to choose)",
                         (double)n_pages * rt->kv_page_bytes / 1048576.0, (unsigned long long)(n_pages * DSV_KV_PAGE_TOKENS),
                         host ? "host memory" : "device memory", free_b / 1073741824.0,
                         want <= cap ? "two sequences of the longest context" : "a share of it");
                if (n_pages < (uint64_t)DIV_ROUND_UP(MIN(rt->cfg->max_position_embeddings, DSV_KV_AUTO_MIN_TOKENS),
                                                     DSV_KV_PAGE_TOKENS)) {
                        r = dsv_error_set(err, ENOMEM,
                                          "only %.1f GiB of %s memory is free: the KV cache would hold %llu tokens (%llu bytes each); "
                                          "free memory, or set kv-cache-mb explicitly",
                                          free_b / 1073741824.0, host ? "host" : "device",
                                          (unsigned long long)(n_pages * DSV_KV_PAGE_TOKENS),
                                          (unsigned long long)rt->kv_bytes_per_token);
                        goto fail;
                }
        } else if (o->kv_bytes) {
                n_pages = o->kv_bytes / MAX(rt->kv_page_bytes, 1u);
                if (n_pages < 1) {
                        r = dsv_error_set(err, EINVAL, "a KV cache of %llu bytes holds no page of %llu bytes (%d tokens)",
                                          (unsigned long long)o->kv_bytes, (unsigned long long)rt->kv_page_bytes,
                                          DSV_KV_PAGE_TOKENS);
                        goto fail;
                }
        } else {
                n_pages = (uint64_t)DIV_ROUND_UP(MAX(o->kv_tokens, 1), DSV_KV_PAGE_TOKENS);
        }
        n_pages = MIN(n_pages, (uint64_t)INT32_MAX / 2);
        if ((r = dsv_kv_pool_new_layers(rt->be, rt->cfg, dsv_numerics_kv_format(rt->numerics), L.n_layers, (int)n_pages,
                                          &rt->kv)) < 0) {
                r = dsv_error_set(err, r, "cannot allocate the KV cache (%llu pages of %llu bytes) in %s memory: %s",
                                  (unsigned long long)n_pages, (unsigned long long)rt->kv_page_bytes, rt->be->ops->name,
                                  strerror(-r));
                goto fail;
        }
        *ret = rt;
        return 0;
fail:
        dsv_runtime_free(rt);
        return r;
}

int dsv_runtime_forward(struct dsv_runtime *rt, const struct dsv_batch *b, float *logits, struct dsv_error *err) {
        int r = dsv_model_forward(rt->model, rt->kv, b, logits, err);
        return r < 0 ? pass_failed(rt, r, err, "the forward pass") : r;
}

int dsv_runtime_forward_hidden(struct dsv_runtime *rt, const struct dsv_batch *b, float *logits, float *hidden,
                               struct dsv_error *err) {
        int r = dsv_model_forward_hidden(rt->model, rt->kv, b, logits, hidden, err);
        return r < 0 ? pass_failed(rt, r, err, "the forward pass") : r;
}

int dsv_runtime_mtp(struct dsv_runtime *rt, const struct dsv_batch *b, const float *hidden_in, float *logits,
                    float *hidden_out, struct dsv_error *err) {
        int r = dsv_model_mtp_forward(rt->model, rt->kv, b, hidden_in, logits, hidden_out, err);
        return r < 0 ? pass_failed(rt, r, err, "the MTP layer's pass") : r;
}
