/* DeepSeek-V3.2 forward pass over a backend (see model.h).
 *
 * Per layer, for the batch's tokens (rows), with faithful rounding points in brackets:
 *   h      = RMSNorm(res [+ branch])                  res := bf16(sum)           [bf16]
 *   qr     = RMSNorm(wq_a h);  q = wq_b qr -> heads [nope | rope], rope interleaved
 *   kv     = wkv_a h -> [latent | k_pe];  c = RMSNorm(latent);  k_pe rotated interleaved
 *   iq     = wq_b_idx qr -> heads, rope half-split on the first rope dims, Hadamard [FP8]
 *   ik     = LayerNorm(wk h), rope half-split, Hadamard                          [FP8]
 *   iw     = weights_proj(h) (fp32)
 *   cache  <- c [FP8 round trip], k_pe [bf16], ik [FP8]
 *   idx    = top-k of the indexer scores (all positions when context <= index_topk)
 *   o      = MLA over idx: absorbed for a sequence's single decode token, expanded through
 *            the FP8 wkv_b for a prefill chunk
 *   branch = wo o;  h = RMSNorm(res + branch)
 *   branch = dense SwiGLU MLP, or MoE: routed experts (fp32 sum, ascending ids) + shared
 * then logits = lm_head(RMSNorm(res + branch)) in fp32 for the rows asked for. */
#include "config.h"

#include "daemon/model.h"

#include <math.h>

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

struct layer {
        const struct dsv_tensor *attn_norm, *ffn_norm;
        const struct dsv_tensor *wq_a, *q_norm, *wq_b, *wkv_a, *kv_norm, *wkv_b, *wo;
        const struct dsv_tensor *iwq_b, *iwk, *ik_norm_w, *ik_norm_b, *iw_proj;
        const struct dsv_tensor *w1, *w2, *w3; /* dense MLP or shared experts */
        const struct dsv_tensor *gate_w, *gate_bias;
        struct dsv_moe_expert_weights *experts;
        struct dsv_tensor wkv_b_deq; /* F32 [H*(nope+v), kv_lora] for absorbed attention */
        bool moe;
};

/* Activation workspace for one forward call. */
struct ws {
        void *buf;
        size_t bytes;
        int T, C, K; /* rows, max context of a prefill chunk, index list width */
        int ctx;     /* largest context of any token (score rows for hooks) */
        int n_out, n_seqs, max_pages;
        struct dsv_tensor ids, pos, tok_seq, slots, block_table, out_rows;
        struct dsv_tensor res, h, branch, q_a, qr, q, kv_a, c, k_pe, iq, ik, iw, iq8, iqs, idx, o;
        struct dsv_tensor lat, kpe, kvb;
        struct dsv_tensor g1, g3, gs, shared, moe_out, moe_ids, moe_w;
        struct dsv_tensor hout, logits;
        struct dsv_tensor iscores, rscores, forced_ids;
};

struct dsv_model {
        struct dsv_model_config cfg;
        struct dsv_checkpoint *ck;
        struct dsv_backend *be;
        enum dsv_numerics numerics;
        void *wbuf;
        size_t wbytes;
        struct dsv_tensor *tensors; /* every loaded tensor (weights and their scales) */
        size_t n_tensors;
        const struct dsv_tensor *embed, *final_norm, *lm_head;
        struct layer *layers;
        struct dsv_tensor inv_freq;
        void *inv_freq_buf;
        float softmax_scale;
        struct dsv_load_stats load_stats;
        struct dsv_model_hooks hooks;
        struct ws ws;
};

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
                for (int i = 0; i < m->cfg.num_hidden_layers; i++) {
                        free(m->layers[i].experts);
                        if (m->layers[i].wkv_b_deq.data)
                                m->be->ops->dealloc(m->be, m->layers[i].wkv_b_deq.data,
                                                    (size_t)m->layers[i].wkv_b_deq.ne[1] * m->layers[i].wkv_b_deq.stride);
                }
                free(m->layers);
        }
        if (m->ws.buf)
                m->be->ops->dealloc(m->be, m->ws.buf, m->ws.bytes);
        if (m->wbuf)
                m->be->ops->dealloc(m->be, m->wbuf, m->wbytes);
        if (m->inv_freq_buf)
                m->be->ops->dealloc(m->be, m->inv_freq_buf, (size_t)m->cfg.qk_rope_head_dim / 2 * sizeof(float));
        free(m->tensors);
        dsv_checkpoint_free(m->ck);
        free(m);
}

static const struct dsv_tensor *find_tensor(const struct dsv_model *m, const struct dsv_tensor_spec *specs, size_t n,
                                            const char *name) {
        for (size_t i = 0; i < n; i++)
                if (strcmp(specs[i].name, name) == 0)
                        return &m->tensors[i];
        return NULL;
}

/* Dequantizes kv_b_proj into F32 (bf16-rounded in faithful numerics, as the reference's
 * weight_dequant produces the default dtype). */
static int make_wkv_b_deq(struct dsv_model *m, struct layer *l) {
        const struct dsv_tensor *w = l->wkv_b;
        const int64_t R = w->ne[1], K = w->ne[0];
        size_t wbytes = (size_t)R * (size_t)w->stride, sbytes = 0;
        float *out = malloc((size_t)R * (size_t)K * sizeof(float));
        uint8_t *raw = malloc(wbytes);
        float *sc = NULL;
        int r;

        if (!out || !raw) {
                r = -ENOMEM;
                goto out;
        }
        if ((r = m->be->ops->download(m->be, raw, w->data, wbytes)) < 0)
                goto out;
        if (w->type == DSV_F8_E4M3) {
                sbytes = (size_t)w->scale->ne[1] * w->scale->stride;
                sc = malloc(sbytes);
                if (!sc) {
                        r = -ENOMEM;
                        goto out;
                }
                if ((r = m->be->ops->download(m->be, sc, w->scale->data, sbytes)) < 0)
                        goto out;
        }
        for (int64_t i = 0; i < R; i++)
                for (int64_t j = 0; j < K; j++) {
                        float v;
                        const uint8_t *row = raw + (size_t)i * w->stride;
                        if (w->type == DSV_F8_E4M3)
                                v = dsv_e4m3_to_f32(row[j]) * sc[(size_t)(i / 128) * (w->scale->stride / 4) + (size_t)(j / 128)];
                        else if (w->type == DSV_BF16)
                                v = dsv_bf16_to_f32(((const uint16_t *)row)[j]);
                        else
                                v = ((const float *)row)[j];
                        out[i * K + j] = m->numerics == DSV_NUMERICS_FAITHFUL ? dsv_round_bf16(v) : v;
                }
        void *dev;
        size_t bytes = (size_t)R * (size_t)K * sizeof(float);
        if ((r = m->be->ops->alloc(m->be, bytes, &dev)) < 0)
                goto out;
        if ((r = m->be->ops->upload(m->be, dev, out, bytes)) < 0) {
                m->be->ops->dealloc(m->be, dev, bytes);
                goto out;
        }
        l->wkv_b_deq = dsv_tensor_2d(DSV_F32, dev, R, K);
out:
        free(out);
        free(raw);
        free(sc);
        return r;
}

/* One token through the whole model on a one-page cache: every op the model needs runs once
 * on this backend, so an op it lacks is an error at load (naming the op), not at the first
 * request; it also warms the workspace. */
static int probe(struct dsv_model *m, struct dsv_error *err) {
        struct dsv_kv_pool *kv = NULL;
        struct dsv_kv_seq seq = {0};
        struct dsv_kv_seq *seqs[1] = {&seq};
        int32_t tok = m->cfg.bos_token_id, pos = 0, s = 0;
        float *logits = malloc((size_t)m->cfg.vocab_size * sizeof(float));
        struct dsv_model_hooks saved = m->hooks;
        int r;
        if (!logits)
                return -ENOMEM;
        memset(&m->hooks, 0, sizeof(m->hooks));
        r = dsv_kv_pool_new(m->be, &m->cfg, dsv_numerics_kv_format(m->numerics), 1, &kv);
        if (r < 0)
                r = dsv_error_set(err, r, "Cannot allocate a KV page on the %s backend: %s", m->be->ops->name, strerror(-r));
        else if ((r = dsv_kv_seq_reserve(kv, &seq, 1)) >= 0) {
                struct dsv_batch b = {.n_tokens = 1, .token = &tok, .pos = &pos, .seq = &s, .n_seqs = 1, .seqs = seqs};
                r = dsv_model_forward(m, kv, &b, logits, err);
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
        free(logits);
        return r;
}

int dsv_model_load(const char *dir, struct dsv_backend *be, const struct dsv_model_opts *opts, struct dsv_model **ret,
                   struct dsv_error *err) {
        struct dsv_model *m = calloc(1, sizeof(*m));
        struct dsv_tensor_spec *specs = NULL;
        struct dsv_load_item *items = NULL;
        size_t n_specs = 0, n_items = 0, off = 0;
        const struct dsv_ckpt_tensor **ct = NULL, **cs = NULL;
        char name[160];
        int r;

        if (!m)
                return -ENOMEM;
        m->be = be;
        m->numerics = opts ? opts->numerics : DSV_NUMERICS_FAITHFUL;
        r = dsv_checkpoint_open(dir, &m->ck, err);
        if (r < 0)
                goto fail;
        m->cfg = m->ck->cfg;
        if (m->numerics == DSV_NUMERICS_FAITHFUL && m->cfg.index_head_dim > 128) {
                r = dsv_error_set(err, EINVAL,
                                  "%s: index_head_dim = %d: faithful numerics quantize one 128-value block per indexer head; use --numerics exact",
                                  dir, m->cfg.index_head_dim);
                goto fail;
        }
        /* The MTP layer is validated by the checkpoint reader but not loaded: plain generation
         * never needs it. */
        r = dsv_weight_specs(&m->cfg, false, &specs, &n_specs);
        if (r < 0)
                goto fail;
        m->tensors = calloc(2 * n_specs, sizeof(*m->tensors));
        ct = calloc(n_specs, sizeof(*ct));
        cs = calloc(n_specs, sizeof(*cs));
        items = calloc(2 * n_specs, sizeof(*items));
        if (!m->tensors || !ct || !cs || !items) {
                r = -ENOMEM;
                goto fail;
        }
        /* placement: weights first, their scales after (index n_specs + i) */
        for (size_t i = 0; i < n_specs; i++) {
                r = dsv_checkpoint_check_spec(m->ck, &specs[i], &ct[i], &cs[i], err);
                if (r < 0)
                        goto fail;
                off = ALIGN_UP(off, 256) + ct[i]->nbytes;
                if (cs[i])
                        off = ALIGN_UP(off, 256) + cs[i]->nbytes;
        }
        m->wbytes = off;
        r = be->ops->alloc(be, m->wbytes, &m->wbuf);
        if (r < 0) {
                r = dsv_error_set(err, r, "Cannot allocate %llu bytes of %s memory for the weights",
                                  (unsigned long long)m->wbytes, be->ops->name);
                goto fail;
        }
        off = 0;
        for (size_t i = 0; i < n_specs; i++) {
                struct dsv_tensor *t = &m->tensors[i];
                off = ALIGN_UP(off, 256);
                *t = dsv_tensor_2d(ct[i]->dtype, (uint8_t *)m->wbuf + off, specs[i].ndim == 2 ? specs[i].shape[0] : 1,
                                   specs[i].ndim == 2 ? specs[i].shape[1] : specs[i].shape[0]);
                items[n_items++] = (struct dsv_load_item){ct[i], t->data};
                off += ct[i]->nbytes;
                if (cs[i]) {
                        struct dsv_tensor *s = &m->tensors[n_specs + i];
                        off = ALIGN_UP(off, 256);
                        *s = dsv_tensor_2d(DSV_F32, (uint8_t *)m->wbuf + off, cs[i]->shape[0], cs[i]->shape[1]);
                        items[n_items++] = (struct dsv_load_item){cs[i], s->data};
                        off += cs[i]->nbytes;
                        t->scale = s;
                }
        }
        r = dsv_load_tensors(m->ck, items, n_items, be, opts ? &opts->load : NULL, &m->load_stats, err);
        if (r < 0)
                goto fail;

        /* wire up the layers */
        m->embed = find_tensor(m, specs, n_specs, "model.embed_tokens.weight");
        m->final_norm = find_tensor(m, specs, n_specs, "model.norm.weight");
        m->lm_head = find_tensor(m, specs, n_specs, "lm_head.weight");
        m->layers = calloc((size_t)m->cfg.num_hidden_layers, sizeof(*m->layers));
        if (!m->layers) {
                r = -ENOMEM;
                goto fail;
        }
        for (int i = 0; i < m->cfg.num_hidden_layers; i++) {
                struct layer *l = &m->layers[i];
#define T(field, fmt, ...)                                                                                \
        do {                                                                                              \
                snprintf(name, sizeof(name), "model.layers.%d." fmt, i, ##__VA_ARGS__);                   \
                l->field = find_tensor(m, specs, n_specs, name);                                          \
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
                }
#undef T
                r = make_wkv_b_deq(m, l);
                if (r < 0)
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
        free(specs);
        free(items);
        free(ct);
        free(cs);
        *ret = m;
        return 0;
fail:
        free(specs);
        free(items);
        free(ct);
        free(cs);
        dsv_model_free(m);
        return r;
}

/* ------------------------------------------------------------------ forward */

static struct dsv_tensor view_rows(const struct dsv_tensor *t, int64_t r0, int64_t n) {
        struct dsv_tensor v = *t;
        v.data = (uint8_t *)t->data + (size_t)r0 * t->stride;
        v.ne[1] = n;
        return v;
}

static struct dsv_tensor view_cols(const struct dsv_tensor *t, int64_t c0, int64_t n) {
        struct dsv_tensor v = *t;
        v.data = (uint8_t *)t->data + (size_t)c0 * dsv_dtype_size(t->type);
        v.ne[0] = n;
        return v;
}

struct carve {
        uint8_t *base;
        size_t off;
};
static void carve(struct carve *c, struct dsv_tensor *t, enum dsv_dtype type, int64_t rows, int64_t cols) {
        c->off = ALIGN_UP(c->off, 64);
        *t = dsv_tensor_2d(type, c->base ? c->base + c->off : NULL, rows, cols);
        c->off += (size_t)MAX(rows, 1) * (size_t)t->stride;
}

static void ws_layout(struct dsv_model *m, struct ws *w, uint8_t *base, size_t *bytes) {
        const struct dsv_model_config *c = &m->cfg;
        const int T = w->T, C = MAX(w->C, 1), H = c->num_attention_heads;
        const int inter = MAX(c->intermediate_size, c->n_shared_experts * c->moe_intermediate_size);
        struct carve cv = {base, 0};
        carve(&cv, &w->ids, DSV_I32, 1, T);
        carve(&cv, &w->pos, DSV_I32, 1, T);
        carve(&cv, &w->tok_seq, DSV_I32, 1, T);
        carve(&cv, &w->slots, DSV_I32, 1, T);
        carve(&cv, &w->block_table, DSV_I32, w->n_seqs, w->max_pages);
        carve(&cv, &w->out_rows, DSV_I32, 1, MAX(w->n_out, 1));
        carve(&cv, &w->res, DSV_F32, T, c->hidden_size);
        carve(&cv, &w->h, DSV_F32, T, c->hidden_size);
        carve(&cv, &w->branch, DSV_F32, T, c->hidden_size);
        carve(&cv, &w->q_a, DSV_F32, T, c->q_lora_rank);
        carve(&cv, &w->qr, DSV_F32, T, c->q_lora_rank);
        carve(&cv, &w->q, DSV_F32, T, (int64_t)H * dsv_cfg_qk_head_dim(c));
        carve(&cv, &w->kv_a, DSV_F32, T, c->kv_lora_rank + c->qk_rope_head_dim);
        carve(&cv, &w->c, DSV_F32, T, c->kv_lora_rank);
        carve(&cv, &w->iq, DSV_F32, T, (int64_t)c->index_n_heads * c->index_head_dim);
        carve(&cv, &w->ik, DSV_F32, T, c->index_head_dim);
        carve(&cv, &w->iw, DSV_F32, T, c->index_n_heads);
        carve(&cv, &w->iq8, DSV_U8, T, (int64_t)c->index_n_heads * c->index_head_dim);
        carve(&cv, &w->iqs, DSV_F32, T, (int64_t)c->index_n_heads * DIV_ROUND_UP(c->index_head_dim, 128));
        carve(&cv, &w->idx, DSV_I32, T, w->K);
        carve(&cv, &w->o, DSV_F32, T, (int64_t)H * c->v_head_dim);
        carve(&cv, &w->lat, DSV_F32, C, c->kv_lora_rank);
        carve(&cv, &w->kpe, DSV_F32, C, c->qk_rope_head_dim);
        carve(&cv, &w->kvb, DSV_F32, C, (int64_t)H * (c->qk_nope_head_dim + c->v_head_dim));
        carve(&cv, &w->g1, DSV_F32, T, inter);
        carve(&cv, &w->g3, DSV_F32, T, inter);
        carve(&cv, &w->gs, DSV_F32, T, inter);
        carve(&cv, &w->shared, DSV_F32, T, c->hidden_size);
        carve(&cv, &w->moe_out, DSV_F32, T, c->hidden_size);
        carve(&cv, &w->moe_ids, DSV_I32, T, c->num_experts_per_tok);
        carve(&cv, &w->moe_w, DSV_F32, T, c->num_experts_per_tok);
        carve(&cv, &w->forced_ids, DSV_I32, T, c->num_experts_per_tok);
        carve(&cv, &w->rscores, DSV_F32, T, c->n_routed_experts);
        carve(&cv, &w->iscores, DSV_F32, m->hooks.want_index_scores ? T : 1, m->hooks.want_index_scores ? w->ctx : 1);
        carve(&cv, &w->hout, DSV_F32, MAX(w->n_out, 1), c->hidden_size);
        carve(&cv, &w->logits, DSV_F32, MAX(w->n_out, 1), c->vocab_size);
        w->kv_a.ne[0] = c->kv_lora_rank + c->qk_rope_head_dim;
        w->k_pe = view_cols(&w->kv_a, c->kv_lora_rank, c->qk_rope_head_dim);
        *bytes = cv.off;
}

static int ws_prepare(struct dsv_model *m, int T, int C, int K, int ctx, int n_out, int n_seqs, int max_pages) {
        struct ws *w = &m->ws;
        struct ws nw = {.T = T, .C = C, .K = K, .ctx = ctx, .n_out = n_out, .n_seqs = n_seqs, .max_pages = max_pages};
        size_t bytes;
        int r;
        ws_layout(m, &nw, NULL, &bytes);
        if (!w->buf || bytes > w->bytes) {
                void *buf;
                size_t want = MAX(bytes, w->bytes + w->bytes / 2);
                if (w->buf)
                        m->be->ops->dealloc(m->be, w->buf, w->bytes);
                w->buf = NULL;
                r = m->be->ops->alloc(m->be, want, &buf);
                if (r < 0)
                        return r;
                w->buf = buf;
                w->bytes = want;
        }
        nw.buf = w->buf;
        nw.bytes = w->bytes;
        ws_layout(m, &nw, w->buf, &bytes);
        *w = nw;
        return 0;
}

struct fwd {
        struct dsv_model *m;
        struct dsv_kv_pool *kv;
        const struct dsv_batch *b;
        struct dsv_error *err;
        bool f;                 /* faithful */
        int T;
        int *perm;              /* internal row -> batch index */
        int n_dec;              /* rows [0, n_dec) are single-token (decode) sequences */
        int *chunk_seq, *chunk_start, *chunk_len, n_chunks; /* prefill chunks: rows */
        int *host_pos, *host_seq;
};

static int run(struct fwd *F, struct dsv_op *op) {
        op->faithful = F->f;
        int r = dsv_backend_compute(F->m->be, op);
        if (r < 0)
                return dsv_error_set(F->err, r, "%s backend: op %s failed: %s", F->m->be->ops->name, dsv_op_name(op->type),
                                     strerror(-r));
        return 0;
}

static int linear(struct fwd *F, struct dsv_tensor *out, const struct dsv_tensor *x, const struct dsv_tensor *w) {
        struct dsv_op op = {.type = DSV_OP_LINEAR};
        op.linear = (struct dsv_op_linear){.out = out, .x = x, .w = w, .quant_in = F->f, .round_out = F->f};
        return run(F, &op);
}

static int rmsnorm(struct fwd *F, struct dsv_tensor *out, struct dsv_tensor *res, const struct dsv_tensor *x,
                   const struct dsv_tensor *w) {
        struct dsv_op op = {.type = DSV_OP_RMSNORM};
        op.rmsnorm = (struct dsv_op_rmsnorm){.out = out, .res = res, .x = x, .w = w, .eps = (float)F->m->cfg.rms_norm_eps};
        return run(F, &op);
}

static int rope(struct fwd *F, struct dsv_tensor *x, int n_heads, int stride, int offset, bool interleaved) {
        struct dsv_op op = {.type = DSV_OP_ROPE};
        op.rope = (struct dsv_op_rope){.x = x, .pos = &F->m->ws.pos, .inv_freq = &F->m->inv_freq, .n_heads = n_heads,
                                       .head_stride = stride, .offset = offset,
                                       .rope_dim = F->m->cfg.qk_rope_head_dim, .interleaved = interleaved};
        return run(F, &op);
}

static int download(struct fwd *F, void *dst, const void *src, size_t n) {
        return F->m->be->ops->download(F->m->be, dst, src, n);
}
static int upload(struct fwd *F, void *dst, const void *src, size_t n) {
        return F->m->be->ops->upload(F->m->be, dst, src, n);
}

/* Indexer selections: computed, then (tests) observed or replaced. */
static int select_topk(struct fwd *F, int layer) {
        struct dsv_model *m = F->m;
        struct ws *w = &m->ws;
        const struct dsv_model_config *c = &m->cfg;
        const struct dsv_model_hooks *hk = &m->hooks;
        int r;

        if (hk->force_dense) {
                int32_t *idx = malloc((size_t)F->T * w->K * sizeof(int32_t));
                if (!idx)
                        return -ENOMEM;
                for (int t = 0; t < F->T; t++)
                        for (int j = 0; j < w->K; j++)
                                idx[(size_t)t * w->K + j] = j <= F->host_pos[t] ? j : -1;
                r = upload(F, w->idx.data, idx, (size_t)F->T * w->K * sizeof(int32_t));
                free(idx);
                return r;
        }
        struct dsv_op op = {.type = DSV_OP_INDEXER_TOPK};
        op.indexer_topk = (struct dsv_op_indexer_topk){
                .idx = &w->idx, .scores = hk->want_index_scores ? &w->iscores : NULL,
                .q = F->f ? &w->iq8 : &w->iq, .q_scale = &w->iqs, .w = &w->iw,
                .kv = {&F->kv->layout, F->kv->base, layer},
                .at = {&w->tok_seq, &w->pos, &w->block_table},
                .n_heads = c->index_n_heads, .head_dim = c->index_head_dim, .topk = c->index_topk,
                .w_scale1 = 1.0f / sqrtf((float)c->index_n_heads), .w_scale2 = 1.0f / sqrtf((float)c->index_head_dim),
                .faithful = F->f};
        /* the reference's scales: python floats n ** -0.5, used in fp32 */
        op.indexer_topk.w_scale1 = (float)pow(c->index_n_heads, -0.5);
        op.indexer_topk.w_scale2 = (float)pow(c->index_head_dim, -0.5);
        if ((r = run(F, &op)) < 0)
                return r;
        if (!hk->force_topk && !hk->on_topk)
                return 0;

        size_t n = (size_t)F->T * w->K;
        int32_t *idx = malloc(n * sizeof(int32_t));
        float *sc = hk->want_index_scores ? malloc((size_t)F->T * w->ctx * sizeof(float)) : NULL;
        bool changed = false;
        if (!idx || (hk->want_index_scores && !sc)) {
                free(idx);
                free(sc);
                return -ENOMEM;
        }
        if ((r = download(F, idx, w->idx.data, n * sizeof(int32_t))) < 0 ||
            (sc && (r = download(F, sc, w->iscores.data, (size_t)F->T * w->ctx * sizeof(float))) < 0))
                goto out;
        for (int t = 0; t < F->T; t++) {
                int32_t *row = idx + (size_t)t * w->K;
                if (hk->force_topk && hk->force_topk(hk->ud, layer, F->host_seq[t], F->host_pos[t], row, c->index_topk))
                        changed = true;
                if (hk->on_topk)
                        hk->on_topk(hk->ud, layer, F->host_seq[t], F->host_pos[t], row, c->index_topk,
                                    sc ? sc + (size_t)t * w->ctx : NULL, F->host_pos[t] + 1);
        }
        if (changed)
                r = upload(F, w->idx.data, idx, n * sizeof(int32_t));
out:
        free(idx);
        free(sc);
        return r;
}

static int attention(struct fwd *F, int layer) {
        struct dsv_model *m = F->m;
        struct ws *w = &m->ws;
        const struct dsv_model_config *c = &m->cfg;
        struct layer *l = &m->layers[layer];
        const int H = c->num_attention_heads, nope = c->qk_nope_head_dim, rope_d = c->qk_rope_head_dim;
        const int qk = nope + rope_d;
        struct dsv_kv_ref kvr = {&F->kv->layout, F->kv->base, layer};
        struct dsv_op op;
        int r;

        /* MLA projections */
        if ((r = linear(F, &w->q_a, &w->h, l->wq_a)) < 0 || (r = rmsnorm(F, &w->qr, NULL, &w->q_a, l->q_norm)) < 0 ||
            (r = linear(F, &w->q, &w->qr, l->wq_b)) < 0 || (r = rope(F, &w->q, H, qk, nope, true)) < 0 ||
            (r = linear(F, &w->kv_a, &w->h, l->wkv_a)) < 0)
                return r;
        struct dsv_tensor latent = view_cols(&w->kv_a, 0, c->kv_lora_rank);
        if ((r = rmsnorm(F, &w->c, NULL, &latent, l->kv_norm)) < 0 || (r = rope(F, &w->k_pe, 1, rope_d, 0, true)) < 0)
                return r;

        /* indexer projections */
        if ((r = linear(F, &w->iq, &w->qr, l->iwq_b)) < 0 ||
            (r = rope(F, &w->iq, c->index_n_heads, c->index_head_dim, 0, false)) < 0)
                return r;
        op = (struct dsv_op){.type = DSV_OP_HADAMARD};
        op.hadamard = (struct dsv_op_hadamard){.x = &w->iq, .d = c->index_head_dim};
        if ((r = run(F, &op)) < 0 || (r = linear(F, &w->ik, &w->h, l->iwk)) < 0)
                return r;
        op = (struct dsv_op){.type = DSV_OP_LAYERNORM};
        op.layernorm = (struct dsv_op_layernorm){.out = &w->ik, .x = &w->ik, .w = l->ik_norm_w, .b = l->ik_norm_b, .eps = 1e-6f};
        if ((r = run(F, &op)) < 0 || (r = rope(F, &w->ik, 1, c->index_head_dim, 0, false)) < 0)
                return r;
        op = (struct dsv_op){.type = DSV_OP_HADAMARD};
        op.hadamard = (struct dsv_op_hadamard){.x = &w->ik, .d = c->index_head_dim};
        if ((r = run(F, &op)) < 0)
                return r;
        op = (struct dsv_op){.type = DSV_OP_LINEAR};
        op.linear = (struct dsv_op_linear){.out = &w->iw, .x = &w->h, .w = l->iw_proj}; /* fp32, like x.float() */
        if ((r = run(F, &op)) < 0)
                return r;
        if (F->f) {
                op = (struct dsv_op){.type = DSV_OP_ACT_QUANT};
                op.act_quant = (struct dsv_op_act_quant){.q = &w->iq8, .s = &w->iqs, .x = &w->iq};
                if ((r = run(F, &op)) < 0)
                        return r;
        }

        /* cache, then select */
        op = (struct dsv_op){.type = DSV_OP_KV_STORE};
        op.kv_store = (struct dsv_op_kv_store){.kv = kvr, .slots = &w->slots, .latent = &w->c, .k_pe = &w->k_pe, .idx_key = &w->ik};
        if ((r = run(F, &op)) < 0 || (r = select_topk(F, layer)) < 0)
                return r;

        /* decode rows: absorbed */
        if (F->n_dec > 0) {
                struct dsv_tensor o = view_rows(&w->o, 0, F->n_dec), q = view_rows(&w->q, 0, F->n_dec),
                                  idx = view_rows(&w->idx, 0, F->n_dec), ts = view_cols(&w->tok_seq, 0, F->n_dec),
                                  tp = view_cols(&w->pos, 0, F->n_dec);
                op = (struct dsv_op){.type = DSV_OP_MLA_DECODE};
                op.mla_decode = (struct dsv_op_mla_decode){
                        .out = &o, .q = &q, .wkv_b = &l->wkv_b_deq, .idx = &idx, .kv = kvr, .at = {&ts, &tp, &w->block_table},
                        .n_heads = H, .nope = nope, .rope = rope_d, .v = c->v_head_dim, .kv_lora = c->kv_lora_rank,
                        .scale = m->softmax_scale, .faithful = F->f};
                if ((r = run(F, &op)) < 0)
                        return r;
        }
        /* prefill chunks: expanded through kv_b */
        for (int ch = 0; ch < F->n_chunks; ch++) {
                int r0 = F->chunk_start[ch], n = F->chunk_len[ch];
                int ctx = F->host_pos[r0 + n - 1] + 1;
                struct dsv_tensor pages = view_rows(&w->block_table, F->chunk_seq[ch], 1);
                struct dsv_tensor lat = view_rows(&w->lat, 0, ctx), kpe = view_rows(&w->kpe, 0, ctx),
                                  kvb = view_rows(&w->kvb, 0, ctx);
                op = (struct dsv_op){.type = DSV_OP_KV_GATHER};
                op.kv_gather = (struct dsv_op_kv_gather){.kv = kvr, .latent = &lat, .k_pe = &kpe, .pages = &pages, .n = ctx};
                if ((r = run(F, &op)) < 0 || (r = linear(F, &kvb, &lat, l->wkv_b)) < 0)
                        return r;
                struct dsv_tensor o = view_rows(&w->o, r0, n), q = view_rows(&w->q, r0, n), idx = view_rows(&w->idx, r0, n);
                op = (struct dsv_op){.type = DSV_OP_MLA_PREFILL};
                op.mla_prefill = (struct dsv_op_mla_prefill){.out = &o, .q = &q, .kvb = &kvb, .k_pe = &kpe, .idx = &idx,
                                                             .n_heads = H, .nope = nope, .rope = rope_d, .v = c->v_head_dim,
                                                             .scale = m->softmax_scale, .faithful = F->f};
                if ((r = run(F, &op)) < 0)
                        return r;
        }
        return linear(F, &w->branch, &w->o, l->wo);
}

static int mlp(struct fwd *F, struct dsv_tensor *out, const struct dsv_tensor *w1, const struct dsv_tensor *w2,
               const struct dsv_tensor *w3) {
        struct ws *w = &F->m->ws;
        const int64_t I = w1->ne[1];
        struct dsv_tensor g1 = view_cols(&w->g1, 0, I), g3 = view_cols(&w->g3, 0, I), gs = view_cols(&w->gs, 0, I);
        struct dsv_op op = {.type = DSV_OP_SWIGLU};
        int r;
        op.swiglu = (struct dsv_op_swiglu){.out = &gs, .a = &g1, .b = &g3};
        if ((r = linear(F, &g1, &w->h, w1)) < 0 || (r = linear(F, &g3, &w->h, w3)) < 0 || (r = run(F, &op)) < 0)
                return r;
        return linear(F, out, &gs, w2);
}

static int moe(struct fwd *F, int layer) {
        struct dsv_model *m = F->m;
        struct ws *w = &m->ws;
        const struct dsv_model_config *c = &m->cfg;
        const struct dsv_model_hooks *hk = &m->hooks;
        struct layer *l = &m->layers[layer];
        const int K = c->num_experts_per_tok;
        struct dsv_op op;
        int r;
        bool forced = false;

        if (hk->force_experts) {
                /* rows the hook does not force keep their own routing (first id -1) */
                int32_t *f = malloc((size_t)F->T * K * sizeof(int32_t));
                if (!f)
                        return -ENOMEM;
                for (int t = 0; t < F->T; t++) {
                        int32_t *row = f + (size_t)t * K;
                        if (hk->force_experts(hk->ud, layer, F->host_seq[t], F->host_pos[t], row, K))
                                forced = true;
                        else
                                row[0] = -1;
                }
                r = forced ? upload(F, w->forced_ids.data, f, (size_t)F->T * K * sizeof(int32_t)) : 0;
                free(f);
                if (r < 0)
                        return r;
        }
        op = (struct dsv_op){.type = DSV_OP_MOE_GATE};
        op.moe_gate = (struct dsv_op_moe_gate){
                .ids = &w->moe_ids, .weights = &w->moe_w, .scores = (hk->want_router_scores && hk->on_experts) ? &w->rscores : NULL,
                .x = &w->h, .w = l->gate_w, .bias = l->gate_bias, .forced_ids = forced ? &w->forced_ids : NULL,
                .n_group = c->n_group, .topk_group = c->topk_group, .k = K, .route_scale = (float)c->routed_scaling_factor,
                .norm_topk_prob = c->norm_topk_prob};
        if ((r = run(F, &op)) < 0)
                return r;
        if (hk->on_experts) {
                int32_t *ids = malloc((size_t)F->T * K * sizeof(int32_t));
                float *wt = malloc((size_t)F->T * K * sizeof(float));
                float *sc = op.moe_gate.scores ? malloc((size_t)F->T * c->n_routed_experts * sizeof(float)) : NULL;
                if (!ids || !wt || (op.moe_gate.scores && !sc))
                        r = -ENOMEM;
                else if ((r = download(F, ids, w->moe_ids.data, (size_t)F->T * K * sizeof(int32_t))) >= 0 &&
                         (r = download(F, wt, w->moe_w.data, (size_t)F->T * K * sizeof(float))) >= 0 &&
                         (!sc || (r = download(F, sc, w->rscores.data, (size_t)F->T * c->n_routed_experts * sizeof(float))) >= 0))
                        for (int t = 0; t < F->T; t++)
                                hk->on_experts(hk->ud, layer, F->host_seq[t], F->host_pos[t], ids + (size_t)t * K,
                                               wt + (size_t)t * K, K, sc ? sc + (size_t)t * c->n_routed_experts : NULL,
                                               c->n_routed_experts);
                free(ids);
                free(wt);
                free(sc);
                if (r < 0)
                        return r;
        }
        op = (struct dsv_op){.type = DSV_OP_MOE_EXPERTS};
        op.moe_experts = (struct dsv_op_moe_experts){.out = &w->moe_out, .x = &w->h, .ids = &w->moe_ids, .weights = &w->moe_w,
                                                     .experts = l->experts, .n_experts = c->n_routed_experts,
                                                     .inter = c->moe_intermediate_size, .faithful = F->f};
        if ((r = run(F, &op)) < 0)
                return r;
        if (l->w1) {
                if ((r = mlp(F, &w->shared, l->w1, l->w2, l->w3)) < 0)
                        return r;
        } else if ((r = m->be->ops->fill(m->be, w->shared.data, 0, (size_t)F->T * w->shared.stride)) < 0)
                return r;
        op = (struct dsv_op){.type = DSV_OP_ADD};
        op.add = (struct dsv_op_add){.out = &w->branch, .a = &w->moe_out, .b = &w->shared};
        return run(F, &op);
}

static int report_layer(struct fwd *F, int layer) {
        struct dsv_model *m = F->m;
        const int D = m->cfg.hidden_size;
        float *res = malloc((size_t)F->T * D * sizeof(float) * 2);
        int r;
        if (!res)
                return -ENOMEM;
        float *br = res + (size_t)F->T * D;
        if ((r = download(F, res, m->ws.res.data, (size_t)F->T * D * sizeof(float))) >= 0 &&
            (r = download(F, br, m->ws.branch.data, (size_t)F->T * D * sizeof(float))) >= 0)
                for (int t = 0; t < F->T; t++) {
                        float *x = res + (size_t)t * D;
                        for (int i = 0; i < D; i++)
                                x[i] += br[(size_t)t * D + i];
                        m->hooks.on_layer(m->hooks.ud, layer, F->host_seq[t], F->host_pos[t], x, D);
                }
        free(res);
        return r;
}

static int check_batch(struct dsv_model *m, struct dsv_kv_pool *kv, const struct dsv_batch *b, int **first_pos,
                       int **count, struct dsv_error *err) {
        int *fp = calloc((size_t)MAX(b->n_seqs, 1), sizeof(int)), *cnt = calloc((size_t)MAX(b->n_seqs, 1), sizeof(int));
        int r = 0;
        if (!fp || !cnt) {
                r = -ENOMEM;
                goto out;
        }
        if (kv->layout.format != dsv_numerics_kv_format(m->numerics) || kv->layout.n_layers != m->cfg.num_hidden_layers) {
                r = dsv_error_set(err, EINVAL, "KV pool format does not match the model's %s numerics",
                                  dsv_numerics_name(m->numerics));
                goto out;
        }
        for (int i = 0; i < b->n_tokens; i++) {
                int s = b->seq[i];
                if (s < 0 || s >= b->n_seqs) {
                        r = dsv_error_set(err, EINVAL, "batch token %d: sequence %d out of range", i, s);
                        goto out;
                }
                if (b->token[i] < 0 || b->token[i] >= m->cfg.vocab_size) {
                        r = dsv_error_set(err, EINVAL, "batch token %d: id %d outside the vocabulary (%d)", i, b->token[i],
                                          m->cfg.vocab_size);
                        goto out;
                }
                cnt[s]++;
        }
        for (int s = 0; s < b->n_seqs; s++) {
                struct dsv_kv_seq *q = b->seqs[s];
                fp[s] = q->len;
                if ((int64_t)(q->len + cnt[s]) > (int64_t)q->n_pages * kv->layout.page_tokens) {
                        r = dsv_error_set(err, ENOSPC, "sequence %d: %d tokens need more than its %d reserved pages", s,
                                          q->len + cnt[s], q->n_pages);
                        goto out;
                }
        }
        /* positions: exactly [len, len + count) for each sequence */
        {
                uint8_t *seen = calloc((size_t)MAX(b->n_tokens, 1), 1);
                if (!seen) {
                        r = -ENOMEM;
                        goto out;
                }
                for (int i = 0; i < b->n_tokens && r >= 0; i++) {
                        int s = b->seq[i], rel = b->pos[i] - fp[s];
                        if (rel < 0 || rel >= cnt[s])
                                r = dsv_error_set(err, EINVAL, "batch token %d: position %d is not among sequence %d's next %d positions",
                                                  i, b->pos[i], s, cnt[s]);
                }
                free(seen);
                if (r < 0)
                        goto out;
        }
out:
        if (r < 0) {
                free(fp);
                free(cnt);
                return r;
        }
        *first_pos = fp;
        *count = cnt;
        return 0;
}

int dsv_model_forward(struct dsv_model *m, struct dsv_kv_pool *kv, const struct dsv_batch *b, float *logits,
                      struct dsv_error *err) {
        const struct dsv_model_config *c = &m->cfg;
        struct fwd F = {.m = m, .kv = kv, .b = b, .err = err, .f = m->numerics == DSV_NUMERICS_FAITHFUL, .T = b->n_tokens};
        int *fp = NULL, *cnt = NULL, *row_of = NULL, *out_idx = NULL;
        int32_t *host = NULL;
        int max_pages = 1, max_chunk_ctx = 0, n_out = 0, r;
        struct ws *w;

        if (b->n_tokens <= 0)
                return 0;
        if ((r = check_batch(m, kv, b, &fp, &cnt, err)) < 0)
                return r;
        F.perm = malloc((size_t)F.T * sizeof(int));
        F.host_pos = malloc((size_t)F.T * sizeof(int));
        F.host_seq = malloc((size_t)F.T * sizeof(int));
        F.chunk_seq = malloc((size_t)MAX(b->n_seqs, 1) * sizeof(int) * 3);
        row_of = malloc((size_t)MAX(b->n_seqs, 1) * sizeof(int));
        out_idx = malloc((size_t)F.T * sizeof(int));
        if (!F.perm || !F.host_pos || !F.host_seq || !F.chunk_seq || !row_of || !out_idx) {
                r = -ENOMEM;
                goto out;
        }
        F.chunk_start = F.chunk_seq + MAX(b->n_seqs, 1);
        F.chunk_len = F.chunk_start + MAX(b->n_seqs, 1);

        /* row order: decode tokens first, then each prefill chunk by position */
        {
                int row = 0;
                for (int i = 0; i < b->n_tokens; i++)
                        if (cnt[b->seq[i]] == 1)
                                F.perm[row++] = i;
                F.n_dec = row;
                for (int s = 0; s < b->n_seqs; s++) {
                        if (cnt[s] <= 1)
                                continue;
                        F.chunk_seq[F.n_chunks] = s;
                        F.chunk_start[F.n_chunks] = row;
                        F.chunk_len[F.n_chunks] = cnt[s];
                        F.n_chunks++;
                        row_of[s] = row;
                        row += cnt[s];
                        max_chunk_ctx = MAX(max_chunk_ctx, fp[s] + cnt[s]);
                }
                for (int i = 0; i < b->n_tokens; i++) {
                        int s = b->seq[i];
                        if (cnt[s] > 1)
                                F.perm[row_of[s] + (b->pos[i] - fp[s])] = i;
                }
        }
        for (int s = 0; s < b->n_seqs; s++)
                max_pages = MAX(max_pages, b->seqs[s]->n_pages);
        for (int t = 0; t < F.T; t++) {
                int i = F.perm[t];
                F.host_pos[t] = b->pos[i];
                F.host_seq[t] = b->seq[i];
                if (!b->want_logits || b->want_logits[i])
                        out_idx[n_out++] = t;
        }
        {
                int K = c->index_topk, ctx = 1;
                for (int t = 0; t < F.T; t++)
                        ctx = MAX(ctx, F.host_pos[t] + 1);
                if (m->hooks.force_dense)
                        K = MAX(K, ctx);
                if ((r = ws_prepare(m, F.T, max_chunk_ctx, K, ctx, n_out, b->n_seqs, max_pages)) < 0) {
                        r = dsv_error_set(err, r, "Cannot allocate the %s workspace for %d tokens", m->be->ops->name, F.T);
                        goto out;
                }
        }
        w = &m->ws;

        /* index tensors */
        host = malloc(((size_t)F.T * 4 + (size_t)b->n_seqs * max_pages + (size_t)MAX(n_out, 1)) * sizeof(int32_t));
        if (!host) {
                r = -ENOMEM;
                goto out;
        }
        {
                int32_t *ids = host, *pos = ids + F.T, *seq = pos + F.T, *slots = seq + F.T, *bt = slots + F.T,
                        *orow = bt + (size_t)b->n_seqs * max_pages;
                for (int t = 0; t < F.T; t++) {
                        int i = F.perm[t];
                        const struct dsv_kv_seq *q = b->seqs[b->seq[i]];
                        ids[t] = b->token[i];
                        pos[t] = b->pos[i];
                        seq[t] = b->seq[i];
                        slots[t] = (int32_t)dsv_kv_slot(&kv->layout, q->pages, b->pos[i]);
                }
                for (int s = 0; s < b->n_seqs; s++)
                        for (int p = 0; p < max_pages; p++)
                                bt[(size_t)s * max_pages + p] = p < b->seqs[s]->n_pages ? b->seqs[s]->pages[p] : 0;
                for (int j = 0; j < n_out; j++)
                        orow[j] = out_idx[j];
                if ((r = upload(&F, w->ids.data, ids, (size_t)F.T * 4)) < 0 || (r = upload(&F, w->pos.data, pos, (size_t)F.T * 4)) < 0 ||
                    (r = upload(&F, w->tok_seq.data, seq, (size_t)F.T * 4)) < 0 ||
                    (r = upload(&F, w->slots.data, slots, (size_t)F.T * 4)) < 0 ||
                    (r = upload(&F, w->block_table.data, bt, (size_t)b->n_seqs * max_pages * 4)) < 0 ||
                    (r = upload(&F, w->out_rows.data, orow, (size_t)MAX(n_out, 1) * 4)) < 0)
                        goto out;
        }

        {
                struct dsv_op op = {.type = DSV_OP_EMBED};
                op.embed = (struct dsv_op_embed){.out = &w->res, .table = m->embed, .ids = &w->ids};
                if ((r = run(&F, &op)) < 0)
                        goto out;
        }
        if (m->hooks.on_embed) {
                size_t bytes = (size_t)F.T * w->res.stride;
                float *x = malloc(bytes);
                if (!x) {
                        r = -ENOMEM;
                        goto out;
                }
                if ((r = download(&F, x, w->res.data, bytes)) >= 0) {
                        for (int t = 0; t < F.T; t++)
                                m->hooks.on_embed(m->hooks.ud, F.host_seq[t], F.host_pos[t],
                                                  x + (size_t)t * (w->res.stride / sizeof(float)), c->hidden_size);
                        r = upload(&F, w->res.data, x, bytes);
                }
                free(x);
                if (r < 0)
                        goto out;
        }
        for (int layer = 0; layer < c->num_hidden_layers; layer++) {
                struct layer *l = &m->layers[layer];
                if ((r = rmsnorm(&F, &w->h, &w->res, layer == 0 ? NULL : &w->branch, l->attn_norm)) < 0 ||
                    (r = attention(&F, layer)) < 0 || (r = rmsnorm(&F, &w->h, &w->res, &w->branch, l->ffn_norm)) < 0)
                        goto out;
                r = l->moe ? moe(&F, layer) : mlp(&F, &w->branch, l->w1, l->w2, l->w3);
                if (r < 0)
                        goto out;
                if (m->hooks.on_layer && (r = report_layer(&F, layer)) < 0)
                        goto out;
        }
        if ((r = rmsnorm(&F, &w->h, &w->res, &w->branch, m->final_norm)) < 0)
                goto out;
        if (n_out > 0) {
                struct dsv_op op = {.type = DSV_OP_GET_ROWS};
                struct dsv_tensor hout = view_rows(&w->hout, 0, n_out), lg = view_rows(&w->logits, 0, n_out);
                op.get_rows = (struct dsv_op_get_rows){.out = &hout, .x = &w->h, .rows = &w->out_rows};
                if ((r = run(&F, &op)) < 0)
                        goto out;
                op = (struct dsv_op){.type = DSV_OP_LINEAR};
                op.linear = (struct dsv_op_linear){.out = &lg, .x = &hout, .w = m->lm_head};
                if ((r = run(&F, &op)) < 0)
                        goto out;
                /* back to batch order: out_idx is ascending in internal rows; map to batch indices */
                float *tmp = malloc((size_t)n_out * c->vocab_size * sizeof(float));
                if (!tmp) {
                        r = -ENOMEM;
                        goto out;
                }
                r = download(&F, tmp, w->logits.data, (size_t)n_out * c->vocab_size * sizeof(float));
                if (r >= 0) {
                        /* order[i]: where batch index i's logits go (rank among the wanted) */
                        int *dest = malloc((size_t)b->n_tokens * sizeof(int));
                        if (!dest) {
                                r = -ENOMEM;
                        } else {
                                for (int i = 0, k = 0; i < b->n_tokens; i++)
                                        dest[i] = (!b->want_logits || b->want_logits[i]) ? k++ : -1;
                                for (int j = 0; j < n_out; j++)
                                        memcpy(logits + (size_t)dest[F.perm[out_idx[j]]] * c->vocab_size,
                                               tmp + (size_t)j * c->vocab_size, (size_t)c->vocab_size * sizeof(float));
                                free(dest);
                        }
                }
                free(tmp);
                if (r < 0)
                        goto out;
        }
        for (int s = 0; s < b->n_seqs; s++)
                b->seqs[s]->len += cnt[s];
        r = 0;
out:
        free(fp);
        free(cnt);
        free(row_of);
        free(out_idx);
        free(host);
        free(F.perm);
        free(F.host_pos);
        free(F.host_seq);
        free(F.chunk_seq);
        return r;
}
