/* Loading a model (see model.h): the checkpoint's tensors placed in one backend
 * allocation and streamed in by the loader, the layers wired to them by name, the absorbed
 * attention's dequantized wkv_b (where the backend cannot read kv_b_proj itself), and a
 * one-token probe so that an op the backend lacks fails at load, named. */
#include "config.h"

#include <assert.h>
#include <math.h>

#include "daemon/model/internal.h"
#include "daemon/model/tensor_index.h"
#include "daemon/preset_model.h"
#include "daemon/weights_spec.h"
#include "kernels/numerics.h"

const char *dsv_numerics_name(enum dsv_numerics n) {
        return n == DSV_NUMERICS_EXACT ? "exact" : n == DSV_NUMERICS_FAITHFUL ? "faithful" : "?";
}

int dsv_numerics_from_name(const char *s) {
        if (strcmp(s, "faithful") == 0)
                return DSV_NUMERICS_FAITHFUL;
        if (strcmp(s, "exact") == 0)
                return DSV_NUMERICS_EXACT;
        return -EINVAL;
}

const struct dsv_model_config *dsv_model_get_config(const struct dsv_model *m) { return &m->cfg; }
const struct dsv_checkpoint *dsv_model_get_checkpoint(const struct dsv_model *m) { return m->ck; }
const struct dsv_load_stats *dsv_model_load_stats(const struct dsv_model *m) { return &m->load_stats; }
enum dsv_numerics dsv_model_numerics(const struct dsv_model *m) { return m->numerics; }
uint64_t dsv_model_weight_bytes(const struct dsv_model *m) { return m->wbytes; }
struct dsv_backend *dsv_model_backend(const struct dsv_model *m) { return m->be; }
void dsv_model_set_hooks(struct dsv_model *m, const struct dsv_model_hooks *h) {
        if (h)
                m->hooks = *h;
        else
                memset(&m->hooks, 0, sizeof(m->hooks));
}

void dsv_model_free(struct dsv_model *m) {
        if (!m)
                return;
        if (m->layers) {
                for (int i = 0; i < m->n_layers; i++) {
                        free(m->layers[i].experts);
                        if (m->layers[i].expert_table.data)
                                m->be->ops->dealloc(m->be, m->layers[i].expert_table.data,
                                                    (size_t)m->layers[i].expert_table.ne[1] * m->layers[i].expert_table.stride);
                        if (m->layers[i].wkv_b_deq.data)
                                m->be->ops->dealloc(m->be, m->layers[i].wkv_b_deq.data,
                                                    (size_t)m->layers[i].wkv_b_deq.ne[1] * m->layers[i].wkv_b_deq.stride);
                }
                free(m->layers);
        }
        dsv_graphs_free(m);
        dsv_ws_free(m);
        dsv_fwd_fetch_free(m);
        free(m->dp_host.p);
        if (m->wbuf)
                m->be->ops->dealloc(m->be, m->wbuf, m->wbytes);
        if (m->inv_freq_buf)
                m->be->ops->dealloc(m->be, m->inv_freq_buf, (size_t)m->cfg.qk_rope_head_dim / 2 * sizeof(float));
        free(m->tensors);
        dsv_checkpoint_free(m->ck);
        free(m);
}

bool dsv_model_owns_expert(const struct dsv_model *m, int e) {
        return !m->ep || dsv_expert_owner(e, m->cfg.n_routed_experts, m->ep->size) == m->ep->rank;
}

static const struct dsv_tensor *find_tensor(const struct dsv_model *m, const struct dsv_tensor_index *ix, const char *name) {
        ptrdiff_t i = dsv_tensor_index_find(ix, name);
        return i < 0 ? NULL : &m->tensors[i];
}

/* Decides has_mtp from the mode and what the checkpoint holds. */
static int mtp_wanted(struct dsv_model *m, enum dsv_mtp_mode mode, const char *dir, struct dsv_error *err) {
        if (mode == DSV_MTP_ON && !m->ck->has_mtp)
                return dsv_error_set(err, ENOENT,
                                     "%s has no MTP layer (config.json num_nextn_predict_layers = %d; tensors model.layers.%d.* %s); "
                                     "speculative decoding needs one: run without it (--mtp off)",
                                     dir, m->cfg.num_nextn_predict_layers, m->cfg.num_hidden_layers,
                                     m->cfg.num_nextn_predict_layers > 0 ? "absent" : "not expected");
        m->has_mtp = mode != DSV_MTP_OFF && m->ck->has_mtp;
        return 0;
}

/* The tensors to load: the main model's, and with the MTP layer the first MTP layer's (a
 * checkpoint with several keeps the rest unused), less its optional copies of the embedding
 * and head when the checkpoint leaves them out. */
static int select_specs(struct dsv_model *m, struct dsv_tensor_spec **ret, size_t *n_ret) {
        struct dsv_tensor_spec *specs;
        size_t n, k = 0;
        int r = dsv_weight_specs(&m->cfg, m->has_mtp, &specs, &n);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                const struct dsv_tensor_spec *s = &specs[i];
                if (s->mtp && (s->layer != m->cfg.num_hidden_layers || (s->optional && !dsv_checkpoint_find(m->ck, s->name))))
                        continue;
                if (s->expert >= 0 && !dsv_model_owns_expert(m, s->expert))
                        continue; /* another rank's expert: never read */
                specs[k++] = *s;
        }
        *ret = specs;
        *n_ret = k;
        return 0;
}

/* The MTP layer's own tensors. Its embed_tokens and shared_head.head are copies of the main
 * model's in DeepSeek's checkpoints ("shared" with the main model): used when present, as the
 * checkpoint says, else the main model's. */
static void wire_mtp(struct dsv_model *m, const struct dsv_tensor_index *ix) {
        char name[160];
        const int L = m->cfg.num_hidden_layers;
#define M(fmt) (snprintf(name, sizeof(name), "model.layers.%d." fmt, L), find_tensor(m, ix, name))
        m->mtp.embed = M("embed_tokens.weight");
        m->mtp.enorm = M("enorm.weight");
        m->mtp.hnorm = M("hnorm.weight");
        m->mtp.eh_proj = M("eh_proj.weight");
        m->mtp.head_norm = M("shared_head.norm.weight");
        m->mtp.head = M("shared_head.head.weight");
#undef M
        if (!m->mtp.embed)
                m->mtp.embed = m->embed;
        if (!m->mtp.head)
                m->mtp.head = m->lm_head;
}

/* The expert table of a MoE layer (kernels/backend.h): entry e describes expert e's weights
 * by backend address, zeros for the experts another rank owns; uploaded once, like a weight. */
static int make_expert_table(struct dsv_model *m, struct layer *l, int layer, struct dsv_error *err) {
        const int E = m->cfg.n_routed_experts;
        const size_t bytes = (size_t)E * sizeof(struct dsv_moe_expert);
        _cleanup_free_ struct dsv_moe_expert *tab = calloc((size_t)E, sizeof(*tab));
        void *buf = NULL;
        int r;
        if (!tab)
                return dsv_error_set(err, ENOMEM, "out of memory for the expert table of layer %d", layer);
        l->expert_type = DSV_F8_E4M3;
        for (int e = E - 1; e >= 0; e--) {
                const struct expert_weights *x = &l->experts[e];
                if (!x->w1 || !x->w2 || !x->w3)
                        continue; /* another rank's: absent */
                tab[e] = (struct dsv_moe_expert){dsv_moe_weight_of(x->w1), dsv_moe_weight_of(x->w3), dsv_moe_weight_of(x->w2)};
                l->expert_type = x->w1->type;
        }
        if ((r = m->be->ops->alloc(m->be, bytes, &buf)) < 0)
                return dsv_error_set(err, -r, "Cannot allocate the expert table of layer %d (%zu bytes)", layer, bytes);
        if ((r = m->be->ops->upload(m->be, buf, tab, bytes)) < 0) {
                m->be->ops->dealloc(m->be, buf, bytes);
                return dsv_error_set(err, -r, "Cannot upload the expert table of layer %d", layer);
        }
        l->expert_table = dsv_tensor_2d(DSV_U8, buf, E, (int64_t)sizeof(struct dsv_moe_expert));
        return 0;
}

/* The form of the absorbed attention's dequantized kv_b table. In faithful numerics its
 * values are bf16-rounded (the reference's weight_dequant yields the default dtype, bf16), so
 * BF16 holds them losslessly in half the bytes, where the backend's MLA decode reads BF16 (the
 * CPU backend does; the CUDA plugin's cuBLAS SGEMMs take F32): asked of supports_op() with a
 * one-token op of this model's shapes. Exact numerics keep F32. */
static enum dsv_dtype wkv_b_deq_type(const struct dsv_model *m) {
        const struct dsv_model_config *c = &m->cfg;
        if (m->numerics != DSV_NUMERICS_FAITHFUL)
                return DSV_F32;
        struct dsv_kv_layout L;
        dsv_kv_layout_init_layers(&L, c, dsv_numerics_kv_format(m->numerics), 1, DSV_KV_PAGE_TOKENS);
        const int H = c->num_attention_heads;
        struct dsv_tensor out = dsv_tensor_2d(DSV_F32, NULL, 1, (int64_t)H * c->v_head_dim),
                          q = dsv_tensor_2d(DSV_F32, NULL, 1, (int64_t)H * dsv_cfg_qk_head_dim(c)),
                          w = dsv_tensor_2d(DSV_BF16, NULL, (int64_t)H * (c->qk_nope_head_dim + c->v_head_dim), c->kv_lora_rank),
                          idx = dsv_tensor_2d(DSV_I32, NULL, 1, MAX(c->index_topk, 1)), one = dsv_tensor_2d(DSV_I32, NULL, 1, 1);
        struct dsv_op op = {.type = DSV_OP_MLA_DECODE, .faithful = true};
        op.mla_decode = (struct dsv_op_mla_decode){.out = &out, .q = &q, .wkv_b = &w, .idx = &idx, .kv = {&L, NULL, 0},
                                                   .at = {&one, &one, &one}, .n_heads = H, .nope = c->qk_nope_head_dim,
                                                   .rope = c->qk_rope_head_dim, .v = c->v_head_dim, .kv_lora = c->kv_lora_rank,
                                                   .scale = 1.0f, .faithful = true};
        return m->be->ops->supports_op(m->be, &op) ? DSV_BF16 : DSV_F32;
}

/* Whether the backend's MLA decode reads layer l's kv_b_proj as it is, so that no table is
 * made (the CPU backend reads FP8 codes with their block scales, making each row's floats as
 * it goes: the same values as the table's; the CUDA plugin takes F32 tables only): asked of
 * supports_op() with a one-token op of this model's shapes and the weight the op would get. */
static bool wkv_b_direct(const struct dsv_model *m, const struct layer *l) {
        const struct dsv_model_config *c = &m->cfg;
        struct dsv_tensor w, sc;
        if (dsv_wkv_b_decode(l, true, &w, &sc) < 0)
                return false;
        struct dsv_kv_layout L;
        dsv_kv_layout_init_layers(&L, c, dsv_numerics_kv_format(m->numerics), 1, DSV_KV_PAGE_TOKENS);
        const bool f = m->numerics == DSV_NUMERICS_FAITHFUL;
        const int H = (int)(w.ne[1] / (c->qk_nope_head_dim + c->v_head_dim));
        struct dsv_tensor out = dsv_tensor_2d(DSV_F32, NULL, 1, (int64_t)H * c->v_head_dim),
                          q = dsv_tensor_2d(DSV_F32, NULL, 1, (int64_t)H * dsv_cfg_qk_head_dim(c)),
                          idx = dsv_tensor_2d(DSV_I32, NULL, 1, MAX(c->index_topk, 1)), one = dsv_tensor_2d(DSV_I32, NULL, 1, 1);
        struct dsv_op op = {.type = DSV_OP_MLA_DECODE, .faithful = f};
        op.mla_decode = (struct dsv_op_mla_decode){.out = &out, .q = &q, .wkv_b = &w, .idx = &idx, .kv = {&L, NULL, 0},
                                                   .at = {&one, &one, &one}, .n_heads = H, .nope = c->qk_nope_head_dim,
                                                   .rope = c->qk_rope_head_dim, .v = c->v_head_dim, .kv_lora = c->kv_lora_rank,
                                                   .scale = 1.0f, .faithful = f};
        return m->be->ops->supports_op(m->be, &op);
}

/* Dequantizes kv_b_proj into the form wkv_b_deq_type() chose (F32, bf16-rounded in faithful
 * numerics, or BF16: faithful only, the same values) with the backend's dequant op, where the
 * weight lives: nothing goes through the host (at 671B the F32 tables are ~4 GB). */
static int make_wkv_b_deq(struct dsv_model *m, struct layer *l, int layer, enum dsv_dtype type, struct dsv_error *err) {
        const struct dsv_tensor *w = l->wkv_b;
        const int64_t R = w->ne[1], K = w->ne[0];
        const size_t bytes = (size_t)R * (size_t)K * dsv_dtype_size(type);
        void *dev;

        assert(type == DSV_F32 || (type == DSV_BF16 && m->numerics == DSV_NUMERICS_FAITHFUL));
        int r = m->be->ops->alloc(m->be, bytes, &dev);
        if (r < 0)
                return dsv_error_set(err, -r, "layer %d: cannot allocate the %zu bytes of its dequantized kv_b table on the %s backend: %s",
                                     layer, bytes, m->be->ops->name, strerror(-r));
        struct dsv_tensor out = dsv_tensor_2d(type, dev, R, K);
        struct dsv_op op = {.type = DSV_OP_DEQUANT};
        op.dequant = (struct dsv_op_dequant){.out = &out, .w = w,
                                             .round_bf16 = type == DSV_F32 && m->numerics == DSV_NUMERICS_FAITHFUL};
        r = m->be->ops->supports_op(m->be, &op) ? m->be->ops->compute(m->be, &op) : -EOPNOTSUPP;
        if (r < 0) {
                m->be->ops->dealloc(m->be, dev, bytes);
                return dsv_error_set(err, -r, "layer %d: the %s backend could not dequantize kv_b_proj (op dequant, %s to %s): %s",
                                     layer, m->be->ops->name, dsv_dtype_name(w->type), dsv_dtype_name(type), strerror(-r));
        }
        l->wkv_b_deq = out;
        return 0;
}

/* One token through the whole model (and the MTP layer, when loaded) on a one-page cache:
 * every op the model needs runs once on this backend, so an op it lacks is an error at load
 * (naming the op), not at the first request; it also warms the workspace. */
static int probe(struct dsv_model *m, struct dsv_error *err) {
        struct dsv_kv_pool *kv = NULL;
        struct dsv_kv_seq seq = {0};
        struct dsv_kv_seq *seqs[1] = {&seq};
        int32_t tok = m->cfg.bos_token_id, pos = 0, s = 0;
        float *logits = malloc((size_t)(m->cfg.vocab_size + 2 * m->cfg.hidden_size) * sizeof(float));
        float *hidden = logits + m->cfg.vocab_size, *mtp_hidden = hidden + m->cfg.hidden_size;
        struct dsv_model_hooks saved = m->hooks;
        int r;
        if (!logits)
                return -ENOMEM;
        memset(&m->hooks, 0, sizeof(m->hooks));
        m->graphs.probing = true;
        r = dsv_kv_pool_new_layers(m->be, &m->cfg, dsv_numerics_kv_format(m->numerics), m->n_layers, 1, &kv);
        if (r < 0)
                r = dsv_error_set(err, r, "Cannot allocate a KV page on the %s backend: %s", m->be->ops->name, strerror(-r));
        else if ((r = dsv_kv_seq_reserve(kv, &seq, 1)) >= 0) {
                struct dsv_batch b = {.n_tokens = 1, .token = &tok, .pos = &pos, .seq = &s, .n_seqs = 1, .seqs = seqs};
                r = dsv_model_forward_hidden(m, kv, &b, logits, hidden, err);
                if (r >= 0 && m->has_mtp)
                        r = dsv_model_mtp_forward(m, kv, &b, hidden, logits, mtp_hidden, err);
                if (r == -EOPNOTSUPP) {
                        char msg[sizeof(err->msg)];
                        snprintf(msg, sizeof(msg), "%s", err->msg);
                        r = dsv_error_set(err, r, "The %s backend cannot run this model yet (%s)", m->be->ops->name, msg);
                }
        }
        if (kv) {
                dsv_kv_seq_release(kv, &seq);
                dsv_kv_pool_free(kv);
        }
        m->hooks = saved;
        m->graphs.probing = false;
        free(logits);
        return r;
}

/* Bytes for a message: GiB with two decimals, MiB below 1 GiB (a small test model). */
struct size_str {
        char s[32];
};
static struct size_str size_str(uint64_t b) {
        struct size_str r;
        if (b >= (1ull << 30))
                snprintf(r.s, sizeof(r.s), "%.2f GiB", (double)b / 1073741824.0);
        else
                snprintf(r.s, sizeof(r.s), "%.2f MiB", (double)b / 1048576.0);
        return r;
}
#define SZ(b) (size_str(b).s)

/* Whether the model fits in the device's free memory, checked before anything is allocated
 * or read (see dsv_model_opts): the weights with the dequantized wkv_b tables, the smallest
 * workspace and the KV pool the caller will allocate. One error naming what is needed and
 * what is free, the device, and what to change. Host-memory backends and backends that do
 * not report their memory are not checked here. */
static int check_fits(struct dsv_model *m, const struct dsv_model_opts *o, struct dsv_error *err) {
        const struct dsv_model_config *c = &m->cfg;
        const int n_layers = c->num_hidden_layers + (m->has_mtp ? 1 : 0);
        uint64_t free_b = 0, total_b = 0, kv, kv_tokens, weights, ws, need;
        struct dsv_kv_layout L;
        char fix[320];

        if (m->be->host_memory || !m->be->ops->mem_info || m->be->ops->mem_info(m->be, &free_b, &total_b) < 0)
                return 0;
        dsv_kv_layout_init_layers(&L, c, dsv_numerics_kv_format(m->numerics), n_layers, DSV_KV_PAGE_TOKENS);
        const uint64_t page = MAX((uint64_t)L.n_layers * L.layer_page_bytes, 1u);
        uint64_t pages = o && o->kv_bytes    ? o->kv_bytes / page
                         : o && o->kv_tokens ? (uint64_t)DIV_ROUND_UP(o->kv_tokens, DSV_KV_PAGE_TOKENS)
                                             : (uint64_t)DIV_ROUND_UP(MIN(c->max_position_embeddings, DSV_KV_AUTO_MIN_TOKENS),
                                                                      DSV_KV_PAGE_TOKENS);
        kv = pages * page;
        kv_tokens = pages * DSV_KV_PAGE_TOKENS;
        weights = m->wbytes + (uint64_t)n_layers * c->num_attention_heads * (c->qk_nope_head_dim + c->v_head_dim) *
                                      c->kv_lora_rank * dsv_dtype_size(wkv_b_deq_type(m));
        ws = dsv_ws_min_bytes(m);
        need = weights + ws + kv;
        if (need <= free_b)
                return 0;
        /* what is left for the KV cache once the weights and workspace are in */
        const uint64_t left = free_b > weights + ws ? free_b - weights - ws : 0;
        if (left >= page && o && !o->kv_bytes && o->kv_tokens)
                snprintf(fix, sizeof(fix), "use a GPU with more memory, or fewer tokens: a KV cache of at most %llu fits",
                         (unsigned long long)(left / page * DSV_KV_PAGE_TOKENS));
        else if (left >= MAX(page, 1u << 20))
                snprintf(fix, sizeof(fix), "use a GPU with more memory, or a smaller KV cache: kv-cache-mb = %llu at most",
                         (unsigned long long)(left >> 20));
        else
                snprintf(fix, sizeof(fix),
                         "the weights alone do not fit: use a GPU with at least %s free, or run on the CPU (--backend cpu)",
                         SZ(need));
        const char *dev = o && o->device && o->device[0] ? o->device : m->be->ops->name;
        return dsv_error_set(err, ENOMEM,
                             "The model does not fit on the %s device %.*s: it needs %s (weights %s, workspace %s, KV cache %s "
                             "for %llu tokens) but %s of its %s are free: %s",
                             m->be->ops->name, (int)strcspn(dev, ";"), dev, SZ(need), SZ(weights), SZ(ws), SZ(kv),
                             (unsigned long long)kv_tokens, SZ(free_b), SZ(total_b), fix);
}

/* A tensor's shape as this rank holds it (its share's frame when split, tp.c), and its
 * scales' (scale, when FP8: the frame's 128-blocks). */
static void local_shape(const struct dsv_tensor_spec *s, const struct dsv_ckpt_tensor *scale, const struct dsv_tp_slice *sl,
                        int64_t *rows, int64_t *cols, int64_t *srows, int64_t *scols) {
        *rows = s->ndim == 2 ? s->shape[0] : 1;
        *cols = s->ndim == 2 ? s->shape[1] : s->shape[0];
        *srows = scale ? scale->shape[0] : 0;
        *scols = scale ? scale->shape[1] : 0;
        if (sl->dim < 0)
                return;
        int64_t *d = sl->dim == 0 ? rows : cols, *sd = sl->dim == 0 ? srows : scols;
        *d = sl->a1 - sl->a0;
        if (scale)
                *sd = (*d + 127) / 128;
}

/* The byte ranges of tensor t's share (rows [lo, hi): one range; columns: one per row), and
 * of its frame's scales, as load items into t's frame; the frame is zeroed first when it is
 * wider than the share. */
static int add_share(struct dsv_backend *be, const struct dsv_tensor *t, const struct dsv_ckpt_tensor *ct,
                     const struct dsv_ckpt_tensor *cs, const struct dsv_tp_slice *sl, struct dsv_ckpt_tensor *parts,
                     size_t *n_parts, struct dsv_load_item *items, size_t *n_items) {
        const size_t esz = dsv_dtype_size(ct->dtype), full_row = (size_t)ct->shape[1] * esz;
        const int64_t n = sl->hi - sl->lo;
        int r;
#define PART(o, len, dst)                                                                                   \
        do {                                                                                                \
                struct dsv_ckpt_tensor *p_ = &parts[(*n_parts)++];                                          \
                *p_ = *(src);                                                                               \
                p_->offset = (src)->offset + (o);                                                           \
                p_->nbytes = (len);                                                                         \
                if (p_->nbytes)                                                                             \
                        items[(*n_items)++] = (struct dsv_load_item){p_, (dst)};                            \
        } while (0)
        if ((sl->a0 < sl->lo || sl->hi < sl->a1) &&
            (r = be->ops->fill(be, t->data, 0, (size_t)t->ne[1] * t->stride)) < 0)
                return r;
        const struct dsv_ckpt_tensor *src = ct;
        if (sl->dim == 0) {
                PART((size_t)sl->lo * full_row, (size_t)n * full_row, (uint8_t *)t->data + (size_t)(sl->lo - sl->a0) * t->stride);
        } else {
                for (int64_t row = 0; row < t->ne[1]; row++)
                        PART((size_t)row * full_row + (size_t)sl->lo * esz, (size_t)n * esz,
                             (uint8_t *)t->data + (size_t)row * t->stride + (size_t)(sl->lo - sl->a0) * esz);
        }
        if (!cs)
                return 0;
        const struct dsv_tensor *s = t->scale;
        const size_t full_srow = (size_t)cs->shape[1] * sizeof(float);
        src = cs;
        if (sl->dim == 0) {
                PART((size_t)(sl->a0 / 128) * full_srow, (size_t)s->ne[1] * s->stride, s->data);
        } else {
                for (int64_t row = 0; row < s->ne[1]; row++)
                        PART((size_t)row * full_srow + (size_t)(sl->a0 / 128) * sizeof(float), s->stride,
                             (uint8_t *)s->data + (size_t)row * s->stride);
        }
#undef PART
        return 0;
}

/* The share a wired tensor was loaded as (dim -1: whole, or absent). */
static struct dsv_tp_slice slice_of(const struct dsv_model *m, const struct dsv_tp_slice *sl, const struct dsv_tensor *t) {
        if (!t)
                return (struct dsv_tp_slice){.dim = -1};
        return sl[t - m->tensors];
}

/* A checkpoint directory, or a preset's description when dir names one (preset_model.h). */
static int open_checkpoint(const char *dir, struct dsv_checkpoint **ret, struct dsv_error *err) {
        const char *preset;
        return dsv_preset_model_name(dir, &preset) ? dsv_checkpoint_new_preset(preset, ret, err)
                                                   : dsv_checkpoint_open(dir, ret, err);
}

/* Streams the tensors from the checkpoint's shards, or, for a preset, makes them where they
 * live with the backend's fill_random op (nothing read, nothing on the host). */
static int load_weights(struct dsv_model *m, struct dsv_load_item *items, size_t n, const struct dsv_model_opts *opts,
                        struct dsv_error *err) {
        if (dsv_checkpoint_is_preset(m->ck))
                return dsv_preset_fill(m->ck, items, n, m->be, &m->load_stats, err);
        return dsv_load_tensors(m->ck, items, n, m->be, opts ? &opts->load : NULL, &m->load_stats, err);
}

int dsv_model_load(const char *dir, struct dsv_backend *be, const struct dsv_model_opts *opts, struct dsv_model **ret,
                   struct dsv_error *err) {
        struct dsv_model *m = calloc(1, sizeof(*m));
        struct dsv_tensor_spec *specs = NULL;
        struct dsv_tensor_index ix = {0};
        struct dsv_load_item *items = NULL;
        size_t n_specs = 0, n_items = 0, off = 0;
        const struct dsv_ckpt_tensor **ct = NULL, **cs = NULL;
        struct dsv_tp_slice *sl = NULL;
        struct dsv_ckpt_tensor *parts = NULL; /* the byte ranges of split tensors' shares */
        size_t n_parts = 0;
        char name[160];
        int r;

        if (!m)
                return -ENOMEM;
        m->be = be;
        m->numerics = opts ? opts->numerics : DSV_NUMERICS_FAITHFUL;
        if (opts && opts->max_pass_tokens)
                m->max_pass_tokens = MIN(MAX(opts->max_pass_tokens, DSV_MODEL_MIN_PASS_TOKENS), DSV_MODEL_MAX_PASS_TOKENS);
        m->graphs.off = opts && opts->graphs_off;
        r = open_checkpoint(dir, &m->ck, err);
        if (r < 0)
                goto fail;
        m->cfg = m->ck->cfg;
        if (m->numerics == DSV_NUMERICS_FAITHFUL && m->cfg.index_head_dim > 128) {
                r = dsv_error_set(err, EINVAL,
                                  "%s: index_head_dim = %d: faithful numerics quantize one 128-value block per indexer head; use --numerics exact",
                                  dir, m->cfg.index_head_dim);
                goto fail;
        }
        if (opts && opts->ep) {
                if (!be->host_memory || !opts->ep->host_memory) {
                        r = dsv_error_set(err, EOPNOTSUPP,
                                          "expert parallelism runs on the CPU backend only for now (the %s backend and the %s "
                                          "communicator were given): use --backend cpu, or one rank",
                                          be->ops->name, opts->ep->ops->name);
                        goto fail;
                }
                if (opts->ep->size > m->cfg.n_routed_experts) {
                        r = dsv_error_set(err, EINVAL, "%d expert-parallel ranks for %d routed experts: at most one rank per expert",
                                          opts->ep->size, m->cfg.n_routed_experts);
                        goto fail;
                }
                m->ep = opts->ep;
                if (opts->tp && (r = dsv_model_tp_check(&m->cfg, opts->ep->size, err)) < 0)
                        goto fail;
                m->tp = opts->tp;
                if (opts->dp && opts->tp) {
                        r = dsv_error_set(err, EINVAL, "data-parallel attention and tensor parallelism exclude each other");
                        goto fail;
                }
                if (opts->dp && opts->ep->size > 256) {
                        r = dsv_error_set(err, EINVAL, "data-parallel attention over %d ranks: at most 256", opts->ep->size);
                        goto fail;
                }
                m->dp = opts->dp;
        } else if (opts && (opts->tp || opts->dp)) {
                r = dsv_error_set(err, EINVAL, "%s needs a group of ranks (dsv_model_opts.ep)",
                                  opts->tp ? "tensor parallelism" : "data-parallel attention");
                goto fail;
        }
        /* The MTP layer (validated by the checkpoint reader) only when asked for: plain
         * generation never needs it. */
        if ((r = mtp_wanted(m, opts ? opts->mtp : DSV_MTP_OFF, dir, err)) < 0 ||
            (r = select_specs(m, &specs, &n_specs)) < 0)
                goto fail;
        m->tensors = calloc(2 * n_specs, sizeof(*m->tensors));
        ct = calloc(n_specs, sizeof(*ct));
        cs = calloc(n_specs, sizeof(*cs));
        sl = calloc(n_specs, sizeof(*sl));
        if (!m->tensors || !ct || !cs || !sl) {
                r = -ENOMEM;
                goto fail;
        }
        /* placement: weights first, their scales after (index n_specs + i); a split tensor
         * takes its share's frame (tp.c), read as one range per share (row split) or per row
         * (column split) */
        for (size_t i = 0; i < n_specs; i++) {
                r = dsv_checkpoint_check_spec(m->ck, &specs[i], &ct[i], &cs[i], err);
                if (r < 0)
                        goto fail;
                dsv_tp_slice_of(m, &specs[i], ct[i]->dtype, &sl[i]);
                int64_t rows, cols, srows, scols;
                local_shape(&specs[i], cs[i], &sl[i], &rows, &cols, &srows, &scols);
                off = ALIGN_UP(off, 256) + (size_t)rows * (size_t)cols * dsv_dtype_size(ct[i]->dtype);
                if (cs[i])
                        off = ALIGN_UP(off, 256) + (size_t)srows * (size_t)scols * sizeof(float);
                n_parts += sl[i].dim == 0 ? 2 : sl[i].dim == 1 ? (size_t)(rows + srows) : 0;
        }
        m->wbytes = off;
        items = calloc(2 * n_specs + n_parts, sizeof(*items));
        parts = calloc(n_parts ? n_parts : 1, sizeof(*parts));
        if (!items || !parts) {
                r = -ENOMEM;
                goto fail;
        }
        if ((r = check_fits(m, opts, err)) < 0)
                goto fail;
        r = be->ops->alloc(be, m->wbytes, &m->wbuf);
        if (r < 0) {
                r = dsv_error_set(err, r, "Cannot allocate %llu bytes of %s memory for the weights",
                                  (unsigned long long)m->wbytes, be->ops->name);
                goto fail;
        }
        off = 0;
        n_parts = 0;
        for (size_t i = 0; i < n_specs; i++) {
                struct dsv_tensor *t = &m->tensors[i];
                int64_t rows, cols, srows, scols;
                local_shape(&specs[i], cs[i], &sl[i], &rows, &cols, &srows, &scols);
                off = ALIGN_UP(off, 256);
                *t = dsv_tensor_2d(ct[i]->dtype, (uint8_t *)m->wbuf + off, rows, cols);
                off += (size_t)rows * t->stride;
                if (cs[i]) {
                        struct dsv_tensor *s = &m->tensors[n_specs + i];
                        off = ALIGN_UP(off, 256);
                        *s = dsv_tensor_2d(DSV_F32, (uint8_t *)m->wbuf + off, srows, scols);
                        off += (size_t)srows * s->stride;
                        t->scale = s;
                }
                if (sl[i].dim < 0) {
                        items[n_items++] = (struct dsv_load_item){ct[i], t->data};
                        if (cs[i])
                                items[n_items++] = (struct dsv_load_item){cs[i], t->scale->data};
                        continue;
                }
                r = add_share(be, t, ct[i], cs[i], &sl[i], parts, &n_parts, items, &n_items);
                if (r < 0) {
                        r = dsv_error_set(err, r, "Cannot clear the frame of tensor %s's share: %s", ct[i]->name, strerror(-r));
                        goto fail;
                }
        }
        r = load_weights(m, items, n_items, opts, err);
        if (r < 0)
                goto fail;

        /* wire up the layers */
        if ((r = dsv_tensor_index_build(&ix, specs, n_specs)) < 0)
                goto fail;
        m->embed = find_tensor(m, &ix, "model.embed_tokens.weight");
        m->final_norm = find_tensor(m, &ix, "model.norm.weight");
        m->lm_head = find_tensor(m, &ix, "lm_head.weight");
        m->n_layers = m->cfg.num_hidden_layers + (m->has_mtp ? 1 : 0);
        m->layers = calloc((size_t)m->n_layers, sizeof(*m->layers));
        if (!m->layers) {
                r = -ENOMEM;
                goto fail;
        }
        if (m->has_mtp)
                wire_mtp(m, &ix);
        const enum dsv_dtype wkv_b_type = wkv_b_deq_type(m);
        for (int i = 0; i < m->n_layers; i++) {
                struct layer *l = &m->layers[i];
#define T(field, fmt, ...)                                                                                \
        do {                                                                                              \
                snprintf(name, sizeof(name), "model.layers.%d." fmt, i, ##__VA_ARGS__);                   \
                l->field = find_tensor(m, &ix, name);                                          \
        } while (0)
                T(attn_norm, "input_layernorm.weight");
                T(ffn_norm, "post_attention_layernorm.weight");
                T(wq_a, "self_attn.q_a_proj.weight");
                T(q_norm, "self_attn.q_a_layernorm.weight");
                T(wq_b, "self_attn.q_b_proj.weight");
                T(wkv_a, "self_attn.kv_a_proj_with_mqa.weight");
                T(kv_norm, "self_attn.kv_a_layernorm.weight");
                T(wkv_b, "self_attn.kv_b_proj.weight");
                T(wo, "self_attn.o_proj.weight");
                T(iwq_b, "self_attn.indexer.wq_b.weight");
                T(iwk, "self_attn.indexer.wk.weight");
                T(ik_norm_w, "self_attn.indexer.k_norm.weight");
                T(ik_norm_b, "self_attn.indexer.k_norm.bias");
                T(iw_proj, "self_attn.indexer.weights_proj.weight");
                l->q_sl = slice_of(m, sl, l->wq_b);
                l->kv_sl = slice_of(m, sl, l->wkv_b);
                l->o_sl = slice_of(m, sl, l->wo);
                l->moe = dsv_cfg_layer_is_moe(&m->cfg, i);
                if (!l->moe) {
                        T(w1, "mlp.gate_proj.weight");
                        T(w2, "mlp.down_proj.weight");
                        T(w3, "mlp.up_proj.weight");
                } else {
                        T(gate_w, "mlp.gate.weight");
                        T(gate_bias, "mlp.gate.e_score_correction_bias");
                        if (m->cfg.n_shared_experts > 0) {
                                T(w1, "mlp.shared_experts.gate_proj.weight");
                                T(w2, "mlp.shared_experts.down_proj.weight");
                                T(w3, "mlp.shared_experts.up_proj.weight");
                        }
                        l->experts = calloc((size_t)m->cfg.n_routed_experts, sizeof(*l->experts));
                        if (!l->experts) {
                                r = -ENOMEM;
                                goto fail;
                        }
                        for (int e = 0; e < m->cfg.n_routed_experts; e++) {
                                T(experts[e].w1, "mlp.experts.%d.gate_proj.weight", e);
                                T(experts[e].w2, "mlp.experts.%d.down_proj.weight", e);
                                T(experts[e].w3, "mlp.experts.%d.up_proj.weight", e);
                        }
                        if ((r = make_expert_table(m, l, i, err)) < 0)
                                goto fail;
                }
#undef T
                l->wkv_b_direct = wkv_b_direct(m, l);
                if (!l->wkv_b_direct && (r = make_wkv_b_deq(m, l, i, wkv_b_type, err)) < 0)
                        goto fail;
        }
        {
                int half = m->cfg.qk_rope_head_dim / 2;
                float inv[2048];
                dsv_cfg_rope_inv_freq(&m->cfg, inv);
                r = be->ops->alloc(be, (size_t)half * sizeof(float), &m->inv_freq_buf);
                if (r < 0 || (r = be->ops->upload(be, m->inv_freq_buf, inv, (size_t)half * sizeof(float))) < 0)
                        goto fail;
                m->inv_freq = dsv_tensor_2d(DSV_F32, m->inv_freq_buf, 1, half);
        }
        m->softmax_scale = (float)dsv_cfg_softmax_scale(&m->cfg);
        m->n_tensors = 2 * n_specs;
        if ((r = probe(m, err)) < 0)
                goto fail;
        dsv_tensor_index_free(&ix);
        free(specs);
        free(items);
        free(ct);
        free(cs);
        free(sl);
        free(parts);
        *ret = m;
        return 0;
fail:
        dsv_tensor_index_free(&ix);
        free(specs);
        free(items);
        free(ct);
        free(cs);
        free(sl);
        free(parts);
        dsv_model_free(m);
        return r;
}
