/* The expected tensor list of a DeepSeek-V3.2 checkpoint (see weights_spec.h). */
#include "config.h"

#include "daemon/weights_spec.h"

const char *dsv_component_name(enum dsv_component c) {
        static const char *const n[DSV_COMP_MAX] = {"embedding", "attention", "indexer", "dense_mlp",
                                                    "routed_experts", "shared_experts", "gate", "norms", "head"};
        return c < DSV_COMP_MAX ? n[c] : "?";
}

struct spec_list {
        struct dsv_tensor_spec *v;
        size_t n, cap;
        int err;
};

static void add(struct spec_list *l, const char *name, enum dsv_tensor_kind kind, int64_t rows, int64_t cols,
                enum dsv_component comp, int layer, int expert, bool mtp, bool optional) {
        if (l->err)
                return;
        if (l->n == l->cap) {
                size_t cap = l->cap ? l->cap * 2 : 256;
                struct dsv_tensor_spec *v = realloc(l->v, cap * sizeof(*v));
                if (!v) {
                        l->err = -ENOMEM;
                        return;
                }
                l->v = v;
                l->cap = cap;
        }
        struct dsv_tensor_spec *s = &l->v[l->n++];
        memset(s, 0, sizeof(*s));
        snprintf(s->name, sizeof(s->name), "%s", name);
        s->kind = kind;
        s->ndim = cols > 0 ? 2 : 1;
        s->shape[0] = rows;
        s->shape[1] = cols > 0 ? cols : 0;
        s->comp = comp;
        s->layer = layer;
        s->expert = expert;
        s->mtp = mtp;
        s->optional = optional;
}

static void add_block(struct spec_list *l, const struct dsv_model_config *c, int i, bool mtp) {
        char n[112];
        const int D = c->hidden_size, H = c->num_attention_heads;
        const int qk = dsv_cfg_qk_head_dim(c);
#define P(fmt, ...) (snprintf(n, sizeof(n), "model.layers.%d." fmt, i, ##__VA_ARGS__), n)
        add(l, P("input_layernorm.weight"), DSV_TK_NORM, D, 0, DSV_COMP_NORM, i, -1, mtp, false);
        add(l, P("post_attention_layernorm.weight"), DSV_TK_NORM, D, 0, DSV_COMP_NORM, i, -1, mtp, false);
        add(l, P("self_attn.q_a_proj.weight"), DSV_TK_LINEAR, c->q_lora_rank, D, DSV_COMP_ATTN, i, -1, mtp, false);
        add(l, P("self_attn.q_a_layernorm.weight"), DSV_TK_NORM, c->q_lora_rank, 0, DSV_COMP_NORM, i, -1, mtp, false);
        add(l, P("self_attn.q_b_proj.weight"), DSV_TK_LINEAR, (int64_t)H * qk, c->q_lora_rank, DSV_COMP_ATTN, i, -1, mtp,
            false);
        add(l, P("self_attn.kv_a_proj_with_mqa.weight"), DSV_TK_LINEAR, c->kv_lora_rank + c->qk_rope_head_dim, D,
            DSV_COMP_ATTN, i, -1, mtp, false);
        add(l, P("self_attn.kv_a_layernorm.weight"), DSV_TK_NORM, c->kv_lora_rank, 0, DSV_COMP_NORM, i, -1, mtp, false);
        add(l, P("self_attn.kv_b_proj.weight"), DSV_TK_LINEAR, (int64_t)H * (c->qk_nope_head_dim + c->v_head_dim),
            c->kv_lora_rank, DSV_COMP_ATTN, i, -1, mtp, false);
        add(l, P("self_attn.o_proj.weight"), DSV_TK_LINEAR, D, (int64_t)H * c->v_head_dim, DSV_COMP_ATTN, i, -1, mtp, false);
        add(l, P("self_attn.indexer.wq_b.weight"), DSV_TK_LINEAR, (int64_t)c->index_n_heads * c->index_head_dim,
            c->q_lora_rank, DSV_COMP_INDEXER, i, -1, mtp, false);
        add(l, P("self_attn.indexer.wk.weight"), DSV_TK_LINEAR, c->index_head_dim, D, DSV_COMP_INDEXER, i, -1, mtp, false);
        add(l, P("self_attn.indexer.k_norm.weight"), DSV_TK_FLOAT, c->index_head_dim, 0, DSV_COMP_INDEXER, i, -1, mtp, false);
        add(l, P("self_attn.indexer.k_norm.bias"), DSV_TK_FLOAT, c->index_head_dim, 0, DSV_COMP_INDEXER, i, -1, mtp, false);
        add(l, P("self_attn.indexer.weights_proj.weight"), DSV_TK_FLOAT, c->index_n_heads, D, DSV_COMP_INDEXER, i, -1, mtp,
            false);
        if (!dsv_cfg_layer_is_moe(c, i)) {
                add(l, P("mlp.gate_proj.weight"), DSV_TK_LINEAR, c->intermediate_size, D, DSV_COMP_DENSE_MLP, i, -1, mtp, false);
                add(l, P("mlp.up_proj.weight"), DSV_TK_LINEAR, c->intermediate_size, D, DSV_COMP_DENSE_MLP, i, -1, mtp, false);
                add(l, P("mlp.down_proj.weight"), DSV_TK_LINEAR, D, c->intermediate_size, DSV_COMP_DENSE_MLP, i, -1, mtp, false);
                return;
        }
        add(l, P("mlp.gate.weight"), DSV_TK_FLOAT, c->n_routed_experts, D, DSV_COMP_GATE, i, -1, mtp, false);
        add(l, P("mlp.gate.e_score_correction_bias"), DSV_TK_F32, c->n_routed_experts, 0, DSV_COMP_GATE, i, -1, mtp, false);
        for (int e = 0; e < c->n_routed_experts; e++) {
                add(l, P("mlp.experts.%d.gate_proj.weight", e), DSV_TK_LINEAR, c->moe_intermediate_size, D, DSV_COMP_ROUTED, i, e,
                    mtp, false);
                add(l, P("mlp.experts.%d.up_proj.weight", e), DSV_TK_LINEAR, c->moe_intermediate_size, D, DSV_COMP_ROUTED, i, e,
                    mtp, false);
                add(l, P("mlp.experts.%d.down_proj.weight", e), DSV_TK_LINEAR, D, c->moe_intermediate_size, DSV_COMP_ROUTED, i, e,
                    mtp, false);
        }
        if (c->n_shared_experts > 0) {
                int64_t si = (int64_t)c->n_shared_experts * c->moe_intermediate_size;
                add(l, P("mlp.shared_experts.gate_proj.weight"), DSV_TK_LINEAR, si, D, DSV_COMP_SHARED, i, -1, mtp, false);
                add(l, P("mlp.shared_experts.up_proj.weight"), DSV_TK_LINEAR, si, D, DSV_COMP_SHARED, i, -1, mtp, false);
                add(l, P("mlp.shared_experts.down_proj.weight"), DSV_TK_LINEAR, D, si, DSV_COMP_SHARED, i, -1, mtp, false);
        }
#undef P
}

int dsv_weight_specs(const struct dsv_model_config *c, bool with_mtp, struct dsv_tensor_spec **ret, size_t *n) {
        struct spec_list l = {0};
        char name[112];
        const int D = c->hidden_size;

        add(&l, "model.embed_tokens.weight", DSV_TK_BF16, c->vocab_size, D, DSV_COMP_EMBED, -1, -1, false, false);
        for (int i = 0; i < c->num_hidden_layers; i++)
                add_block(&l, c, i, false);
        add(&l, "model.norm.weight", DSV_TK_NORM, D, 0, DSV_COMP_NORM, -1, -1, false, false);
        add(&l, "lm_head.weight", DSV_TK_BF16, c->vocab_size, D, DSV_COMP_HEAD, -1, -1, false, false);
        if (with_mtp)
                for (int k = 0; k < c->num_nextn_predict_layers; k++) {
                        int i = c->num_hidden_layers + k;
#define P(fmt) (snprintf(name, sizeof(name), "model.layers.%d." fmt, i), name)
                        add(&l, P("embed_tokens.weight"), DSV_TK_BF16, c->vocab_size, D, DSV_COMP_EMBED, i, -1, true, true);
                        add(&l, P("enorm.weight"), DSV_TK_NORM, D, 0, DSV_COMP_NORM, i, -1, true, false);
                        add(&l, P("hnorm.weight"), DSV_TK_NORM, D, 0, DSV_COMP_NORM, i, -1, true, false);
                        add(&l, P("eh_proj.weight"), DSV_TK_LINEAR, D, 2 * D, DSV_COMP_ATTN, i, -1, true, false);
                        add(&l, P("shared_head.norm.weight"), DSV_TK_NORM, D, 0, DSV_COMP_NORM, i, -1, true, false);
                        add(&l, P("shared_head.head.weight"), DSV_TK_BF16, c->vocab_size, D, DSV_COMP_HEAD, i, -1, true, true);
#undef P
                        add_block(&l, c, i, true);
                }
        if (l.err) {
                free(l.v);
                return l.err;
        }
        *ret = l.v;
        *n = l.n;
        return 0;
}
