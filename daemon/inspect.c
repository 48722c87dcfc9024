/* Parameter, byte, FLOP and KV-cache accounting (see inspect.h for the conventions). */
#include "config.h"

#include "daemon/inspect.h"

#include <math.h>

#include "daemon/checkpoint.h"
#include "daemon/kv_cache.h"

enum dsv_dtype dsv_inspect_spec_dtype(const struct dsv_model_config *cfg, const struct dsv_tensor_spec *s) {
        switch (s->kind) {
        case DSV_TK_LINEAR:
                return cfg->fp8 ? DSV_F8_E4M3 : DSV_BF16;
        case DSV_TK_F32:
                return DSV_F32;
        default:
                return DSV_BF16;
        }
}

uint64_t dsv_inspect_spec_bytes(const struct dsv_model_config *cfg, const struct dsv_tensor_spec *s,
                                uint64_t *scale_bytes) {
        enum dsv_dtype t = dsv_inspect_spec_dtype(cfg, s);
        uint64_t b = (uint64_t)dsv_spec_numel(s) * dsv_dtype_size(t), sb = 0;
        if (t == DSV_F8_E4M3) /* weight_scale_inv: F32 [ceil(rows/128), ceil(cols/128)] */
                sb = 4 * (uint64_t)DIV_ROUND_UP(s->shape[0], 128) *
                     (uint64_t)(s->ndim == 2 ? DIV_ROUND_UP(s->shape[1], 128) : 1);
        if (scale_bytes)
                *scale_bytes = sb;
        return b + sb;
}

static void add_bytes(const struct dsv_model_config *cfg, const struct dsv_tensor_spec *s, uint64_t by_dtype[DSV_DTYPE_MAX],
                      uint64_t *total) {
        uint64_t sb, b = dsv_inspect_spec_bytes(cfg, s, &sb);
        by_dtype[dsv_inspect_spec_dtype(cfg, s)] += b - sb;
        by_dtype[DSV_F32] += sb;
        *total += b;
}

int dsv_inspect_params(const struct dsv_model_config *cfg, struct dsv_param_counts *ret) {
        _cleanup_free_ struct dsv_tensor_spec *specs = NULL;
        struct dsv_param_counts pc = {0};
        uint64_t routed_bytes = 0;
        size_t n = 0;
        int r;

        /* with_mtp: the MTP tensors are marked, so one list serves both tallies */
        r = dsv_weight_specs(cfg, cfg->num_nextn_predict_layers > 0, &specs, &n);
        if (r < 0)
                return r;
        pc.moe_layers = MAX(cfg->num_hidden_layers - cfg->first_k_dense_replace, 0);
        for (size_t i = 0; i < n; i++) {
                const struct dsv_tensor_spec *s = &specs[i];
                const uint64_t k = (uint64_t)dsv_spec_numel(s);
                /* the routed experts one token uses: by symmetry, count experts 0..k-1 */
                const bool used = s->comp != DSV_COMP_ROUTED || s->expert < cfg->num_experts_per_tok;

                if (s->mtp) {
                        pc.mtp_by_comp[s->comp] += k;
                        pc.mtp += k;
                        add_bytes(cfg, s, pc.mtp_bytes_by_dtype, &pc.mtp_bytes);
                        continue;
                }
                pc.by_comp[s->comp] += k;
                pc.total += k;
                add_bytes(cfg, s, pc.bytes_by_dtype, &pc.bytes);
                if (s->comp == DSV_COMP_EMBED) {
                        pc.active_with_embedding += k;
                        pc.bytes_embed += dsv_inspect_spec_bytes(cfg, s, NULL);
                        continue;
                }
                if (s->comp == DSV_COMP_ROUTED)
                        routed_bytes += dsv_inspect_spec_bytes(cfg, s, NULL);
                if (!used)
                        continue;
                pc.active += k;
                pc.active_with_embedding += k;
                /* a 2-D tensor other than the embedding table multiplies the token's activations */
                if (s->ndim == 2)
                        pc.linear_active += k;
                if (s->comp == DSV_COMP_HEAD)
                        pc.head += k;
        }
        if (pc.moe_layers > 0 && cfg->n_routed_experts > 0)
                pc.bytes_routed_expert = routed_bytes / ((uint64_t)pc.moe_layers * (uint64_t)cfg->n_routed_experts);
        pc.bytes_per_step_fixed = pc.bytes - pc.bytes_embed - routed_bytes;
        *ret = pc;
        return 0;
}

int dsv_inspect_checkpoint_expected(const struct dsv_checkpoint *ck, uint64_t bytes_by_dtype[DSV_DTYPE_MAX],
                                    uint64_t *total) {
        _cleanup_free_ struct dsv_tensor_spec *specs = NULL;
        uint64_t by[DSV_DTYPE_MAX] = {0}, t = 0;
        size_t n = 0;
        int r = dsv_weight_specs(&ck->cfg, ck->has_mtp, &specs, &n);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                if (specs[i].optional && !dsv_checkpoint_find(ck, specs[i].name))
                        continue;
                add_bytes(&ck->cfg, &specs[i], by, &t);
        }
        memcpy(bytes_by_dtype, by, sizeof(by));
        *total = t;
        return 0;
}

void dsv_inspect_flop_costs(const struct dsv_model_config *c, const struct dsv_param_counts *pc,
                            struct dsv_flop_costs *ret) {
        const double H = c->num_attention_heads, Hi = c->index_n_heads;
        *ret = (struct dsv_flop_costs){
                .layers = c->num_hidden_layers,
                .index_topk = c->index_topk,
                .linear_per_token = 2.0 * (double)pc->linear_active,
                .head_per_token = 2.0 * (double)pc->head,
                /* absorbed (MQA) form: q_nope is mapped into the latent space (W_UK, counted
                 * with the linears as kv_b_proj), so each entry costs a 512+64-long dot product
                 * and a 512-long axpy per head: 2*128*576 + 2*128*512 = 278,528 at 671B sizes */
                .mla_absorbed_per_entry = 2.0 * H * (c->kv_lora_rank + c->qk_rope_head_dim) + 2.0 * H * c->kv_lora_rank,
                /* expanded (MHA) form: keys 128+64 and values 128 per head: 81,920 */
                .mla_expanded_per_entry = 2.0 * H * (c->qk_nope_head_dim + c->qk_rope_head_dim) + 2.0 * H * c->v_head_dim,
                /* 64 heads x 128-dim dot products per cached key: 16,384; then the weighted
                 * sum over heads, 128 more */
                .indexer_per_entry = 2.0 * Hi * c->index_head_dim,
                .indexer_weighting_per_entry = 2.0 * Hi,
        };
}

static void flops_total(struct dsv_flops *f) {
        f->total_dsa = f->linear + f->attention_dsa + f->indexer;
        f->total_dense = f->linear + f->attention_dense;
}

void dsv_inspect_decode_flops(const struct dsv_flop_costs *fc, uint64_t context, struct dsv_flops *ret) {
        const double L = fc->layers, N = (double)context;
        const double sel = (double)MIN(context, (uint64_t)MAX(fc->index_topk, 0));
        *ret = (struct dsv_flops){
                .linear = fc->linear_per_token,
                .attention_dsa = L * fc->mla_absorbed_per_entry * sel,
                .attention_dense = L * fc->mla_absorbed_per_entry * N,
                .indexer = L * (fc->indexer_per_entry + fc->indexer_weighting_per_entry) * N,
        };
        flops_total(ret);
}

void dsv_inspect_prefill_flops(const struct dsv_flop_costs *fc, uint64_t tokens, struct dsv_flops *ret) {
        const double L = fc->layers;
        const uint64_t N = tokens, K = (uint64_t)MAX(fc->index_topk, 0);
        /* causal: token t sees t+1 entries, DSA keeps min(t+1, K) of them */
        const double dense = (double)N * (double)(N + 1) / 2.0;
        const double sel = N <= K ? dense : (double)K * (double)(K + 1) / 2.0 + (double)(N - K) * (double)K;
        *ret = (struct dsv_flops){
                .linear = N == 0 ? 0.0 : (double)N * (fc->linear_per_token - fc->head_per_token) + fc->head_per_token,
                .attention_dsa = L * fc->mla_expanded_per_entry * sel,
                .attention_dense = L * fc->mla_expanded_per_entry * dense,
                .indexer = L * (fc->indexer_per_entry + fc->indexer_weighting_per_entry) * dense,
        };
        flops_total(ret);
}

const char *dsv_inspect_kv_name(enum dsv_inspect_kv k) {
        static const char *const n[DSV_INSPECT_KV_MAX] = {"fp8", "f32", "bf16"};
        return k < DSV_INSPECT_KV_MAX ? n[k] : "?";
}

int dsv_inspect_kv_costs(const struct dsv_model_config *c, enum dsv_inspect_kv layout, struct dsv_kv_costs *ret) {
        struct dsv_kv_costs kv = {
                .layout = layout,
                .layers = c->num_hidden_layers,
                .mtp_layers = MAX(c->num_nextn_predict_layers, 0),
                .page_tokens = DSV_KV_PAGE_TOKENS,
        };
        const uint64_t latent = (uint64_t)c->kv_lora_rank, rope = (uint64_t)c->qk_rope_head_dim,
                       di = (uint64_t)c->index_head_dim;
        struct dsv_kv_layout L;

        switch (layout) {
        case DSV_INSPECT_KV_FP8:
                /* one fp32 scale per 128 e4m3 codes; k_pe stays bf16 */
                kv.mla_per_layer = latent + 4 * DIV_ROUND_UP(latent, 128) + 2 * rope;
                kv.indexer_per_layer = di + 4 * DIV_ROUND_UP(di, 128);
                break;
        case DSV_INSPECT_KV_F32:
                kv.mla_per_layer = 4 * (latent + rope);
                kv.indexer_per_layer = 4 * di;
                break;
        case DSV_INSPECT_KV_BF16:
                kv.mla_per_layer = 2 * (latent + rope);
                kv.indexer_per_layer = 2 * di;
                break;
        default:
                return -EINVAL;
        }
        kv.engine = layout != DSV_INSPECT_KV_BF16;
        kv.per_layer = kv.mla_per_layer + kv.indexer_per_layer;
        kv.per_token = (uint64_t)kv.layers * kv.per_layer;
        kv.per_token_with_mtp = (uint64_t)(kv.layers + kv.mtp_layers) * kv.per_layer;
        if (kv.engine) {
                /* the engine's own page layout: section alignment may pad a page */
                dsv_kv_layout_init(&L, c, layout == DSV_INSPECT_KV_FP8 ? DSV_KV_FP8 : DSV_KV_F32, DSV_KV_PAGE_TOKENS);
                kv.page_bytes = (uint64_t)L.n_layers * L.layer_page_bytes;
        } else
                kv.page_bytes = (uint64_t)kv.page_tokens * kv.per_token;
        *ret = kv;
        return 0;
}

uint64_t dsv_inspect_kv_allocated(const struct dsv_kv_costs *kv, uint64_t tokens) {
        return DIV_ROUND_UP(tokens, (uint64_t)kv->page_tokens) * kv->page_bytes;
}

void dsv_inspect_decode_step(const struct dsv_model_config *c, const struct dsv_param_counts *pc,
                             const struct dsv_kv_costs *kv, uint64_t context, int batch, double bandwidth,
                             struct dsv_decode_step *ret) {
        const double E = c->n_routed_experts, k = c->num_experts_per_tok, B = batch;
        const uint64_t sel = MIN(context, (uint64_t)MAX(c->index_topk, 0));
        /* an expert is untouched when none of the batch's tokens picks it: (1 - k/E)^B */
        const double experts = E > 0 ? E * (1.0 - pow(1.0 - k / E, B)) : 0.0;
        const double embed_rows = (double)MIN((uint64_t)batch, (uint64_t)c->vocab_size);
        const double row_bytes = c->vocab_size > 0 ? (double)pc->bytes_embed / c->vocab_size : 0.0;
        struct dsv_decode_step d = {.context = context, .batch = batch, .experts_per_layer = experts};

        d.weight_bytes = (double)pc->bytes_per_step_fixed + pc->moe_layers * experts * (double)pc->bytes_routed_expert +
                         embed_rows * row_bytes;
        d.kv_bytes = B * kv->layers *
                     ((double)sel * (double)kv->mla_per_layer + (double)context * (double)kv->indexer_per_layer);
        d.bytes = d.weight_bytes + d.kv_bytes;
        d.tokens_per_s = bandwidth > 0 && d.bytes > 0 ? B * bandwidth / d.bytes : 0.0;
        *ret = d;
}
