/* config.json reading and validation, derived constants and the mkmodel presets. */
#include "config.h"

#include "daemon/model_config.h"

#include <jansson.h>
#include <math.h>

#define CFG_MAX_FILE (4u << 20)

static int field_int(json_t *root, const char *key, bool required, int def, long min, long max,
                     int *out, struct dsv_error *err) {
        json_t *v = json_object_get(root, key);
        if (!v || json_is_null(v)) {
                if (required)
                        return dsv_error_set(err, EINVAL, "config.json: required field \"%s\" is missing", key);
                *out = def;
                return 0;
        }
        if (!json_is_integer(v))
                return dsv_error_set(err, EINVAL, "config.json: field \"%s\" must be an integer", key);
        json_int_t x = json_integer_value(v);
        if (x < min || x > max)
                return dsv_error_set(err, EINVAL, "config.json: field \"%s\" = %lld is out of range [%ld, %ld]",
                                     key, (long long)x, min, max);
        *out = (int)x;
        return 0;
}

static int field_num(json_t *root, const char *key, bool required, double def, double min, double max,
                     double *out, struct dsv_error *err) {
        json_t *v = json_object_get(root, key);
        if (!v || json_is_null(v)) {
                if (required)
                        return dsv_error_set(err, EINVAL, "config.json: required field \"%s\" is missing", key);
                *out = def;
                return 0;
        }
        if (!json_is_number(v))
                return dsv_error_set(err, EINVAL, "config.json: field \"%s\" must be a number", key);
        double x = json_number_value(v);
        if (!(x >= min && x <= max))
                return dsv_error_set(err, EINVAL, "config.json: field \"%s\" = %g is out of range [%g, %g]", key, x,
                                     min, max);
        *out = x;
        return 0;
}

static int field_str(json_t *root, const char *key, const char **out, struct dsv_error *err) {
        json_t *v = json_object_get(root, key);
        *out = NULL;
        if (!v || json_is_null(v))
                return 0;
        if (!json_is_string(v))
                return dsv_error_set(err, EINVAL, "config.json: field \"%s\" must be a string", key);
        *out = json_string_value(v);
        return 0;
}

static int field_bool(json_t *root, const char *key, bool def, bool *out, struct dsv_error *err) {
        json_t *v = json_object_get(root, key);
        if (!v || json_is_null(v)) {
                *out = def;
                return 0;
        }
        if (!json_is_boolean(v))
                return dsv_error_set(err, EINVAL, "config.json: field \"%s\" must be true or false", key);
        *out = json_is_true(v);
        return 0;
}

static bool is_pow2(int x) { return x > 0 && (x & (x - 1)) == 0; }

static int validate(const struct dsv_model_config *c, struct dsv_error *err) {
        if (c->qk_rope_head_dim % 2)
                return dsv_error_set(err, EINVAL, "config.json: qk_rope_head_dim = %d must be even", c->qk_rope_head_dim);
        if (c->first_k_dense_replace > c->num_hidden_layers)
                return dsv_error_set(err, EINVAL, "config.json: first_k_dense_replace = %d exceeds num_hidden_layers = %d",
                                     c->first_k_dense_replace, c->num_hidden_layers);
        if (c->n_routed_experts % c->n_group)
                return dsv_error_set(err, EINVAL, "config.json: n_routed_experts = %d is not a multiple of n_group = %d",
                                     c->n_routed_experts, c->n_group);
        if (c->topk_group > c->n_group)
                return dsv_error_set(err, EINVAL, "config.json: topk_group = %d exceeds n_group = %d", c->topk_group,
                                     c->n_group);
        if (c->n_group > 1 && c->n_routed_experts / c->n_group < 2)
                return dsv_error_set(err, EINVAL,
                                     "config.json: n_group = %d leaves fewer than 2 experts per group (group score is a top-2 sum)",
                                     c->n_group);
        if (c->num_experts_per_tok > c->topk_group * (c->n_routed_experts / c->n_group))
                return dsv_error_set(err, EINVAL,
                                     "config.json: num_experts_per_tok = %d exceeds the %d experts of topk_group = %d groups",
                                     c->num_experts_per_tok, c->topk_group * (c->n_routed_experts / c->n_group),
                                     c->topk_group);
        if (!is_pow2(c->index_head_dim))
                return dsv_error_set(err, EINVAL,
                                     "config.json: index_head_dim = %d must be a power of two (Hadamard transform)",
                                     c->index_head_dim);
        if (c->index_head_dim < c->qk_rope_head_dim)
                return dsv_error_set(err, EINVAL, "config.json: index_head_dim = %d is smaller than qk_rope_head_dim = %d",
                                     c->index_head_dim, c->qk_rope_head_dim);
        if (c->bos_token_id >= c->vocab_size || c->eos_token_id >= c->vocab_size)
                return dsv_error_set(err, EINVAL, "config.json: bos/eos token id outside vocab_size = %d", c->vocab_size);
        return 0;
}

int dsv_model_config_parse(const char *text, size_t len, struct dsv_model_config *ret, struct dsv_error *err) {
        struct dsv_model_config c = {0};
        json_error_t jerr;
        json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
        const char *s;
        int r;

        if (!root)
                return dsv_error_set(err, EINVAL, "config.json: malformed JSON at line %d column %d: %s", jerr.line,
                                     jerr.column, jerr.text);
        if (!json_is_object(root)) {
                json_decref(root);
                return dsv_error_set(err, EINVAL, "config.json: top level must be an object");
        }

#define INT(name, req, def, lo, hi)                                                   \
        do {                                                                          \
                r = field_int(root, #name, req, def, lo, hi, &c.name, err);           \
                if (r < 0)                                                            \
                        goto out;                                                     \
        } while (0)
#define NUM(name, key, req, def, lo, hi)                                              \
        do {                                                                          \
                r = field_num(root, key, req, def, lo, hi, &c.name, err);             \
                if (r < 0)                                                            \
                        goto out;                                                     \
        } while (0)

        INT(vocab_size, true, 0, 2, 1 << 22);
        INT(hidden_size, true, 0, 1, 1 << 16);
        INT(num_hidden_layers, true, 0, 1, 512);
        INT(first_k_dense_replace, false, 0, 0, 512);
        INT(num_attention_heads, true, 0, 1, 1024);
        INT(kv_lora_rank, true, 0, 1, 1 << 14);
        INT(qk_nope_head_dim, true, 0, 1, 4096);
        INT(qk_rope_head_dim, true, 0, 2, 4096);
        INT(v_head_dim, true, 0, 1, 4096);
        INT(intermediate_size, true, 0, 1, 1 << 20);
        INT(moe_intermediate_size, true, 0, 1, 1 << 20);
        INT(n_routed_experts, true, 0, 1, 4096);
        INT(n_shared_experts, false, 0, 0, 64);
        INT(num_experts_per_tok, true, 0, 1, 4096);
        INT(n_group, false, 1, 1, 4096);
        INT(topk_group, false, 1, 1, 4096);
        INT(max_position_embeddings, false, 163840, 1, 1 << 30);
        INT(index_n_heads, true, 0, 1, 1024);
        INT(index_head_dim, true, 0, 2, 4096);
        INT(index_topk, true, 0, 1, 1 << 24);
        INT(num_nextn_predict_layers, false, 0, 0, 8);
        INT(bos_token_id, false, 0, 0, 1 << 22);
        INT(eos_token_id, false, 1, 0, 1 << 22);
        NUM(routed_scaling_factor, "routed_scaling_factor", false, 1.0, 0, 1e6);
        NUM(rope_theta, "rope_theta", false, 10000.0, 1.0, 1e12);
        NUM(rms_norm_eps, "rms_norm_eps", false, 1e-6, 0, 1.0);

        /* q_lora_rank: V3.2 always factors q through a LoRA; null (V2-Lite style) is unsupported. */
        {
                json_t *q = json_object_get(root, "q_lora_rank");
                if (!q || json_is_null(q)) {
                        r = dsv_error_set(err, EINVAL,
                                          "config.json: q_lora_rank is missing or null; dsv32d needs the q_a/q_b factorisation of DeepSeek-V3.2");
                        goto out;
                }
                INT(q_lora_rank, true, 0, 1, 1 << 16);
        }

        if ((r = field_str(root, "model_type", &s, err)) < 0)
                goto out;
        if (s && strcmp(s, "deepseek_v32") != 0) {
                r = dsv_error_set(err, EINVAL,
                                  "config.json: model_type \"%s\" is not DeepSeek-V3.2; dsv32d serves checkpoints with "
                                  "model_type \"deepseek_v32\" (the DeepSeek-V3.2 layout: MLA, the indexer, the MoE)",
                                  s);
                goto out;
        }
        snprintf(c.model_type, sizeof(c.model_type), "%s", s ? s : "deepseek_v32");
        if ((r = field_str(root, "scoring_func", &s, err)) < 0)
                goto out;
        if (s && strcmp(s, "sigmoid") != 0) {
                r = dsv_error_set(err, EINVAL, "config.json: scoring_func \"%s\" is unsupported (expected \"sigmoid\")", s);
                goto out;
        }
        if ((r = field_str(root, "topk_method", &s, err)) < 0)
                goto out;
        if (s && strcmp(s, "noaux_tc") != 0) {
                r = dsv_error_set(err, EINVAL, "config.json: topk_method \"%s\" is unsupported (expected \"noaux_tc\")", s);
                goto out;
        }
        {
                int freq;
                r = field_int(root, "moe_layer_freq", false, 1, 1, 1, &freq, err);
                if (r < 0)
                        goto out;
        }
        if ((r = field_bool(root, "norm_topk_prob", true, &c.norm_topk_prob, err)) < 0)
                goto out;
        if ((r = field_bool(root, "tie_word_embeddings", false, &c.tie_word_embeddings, err)) < 0)
                goto out;
        if (c.tie_word_embeddings) {
                r = dsv_error_set(err, EINVAL, "config.json: tie_word_embeddings = true is unsupported (DeepSeek-V3.2 has its own lm_head)");
                goto out;
        }

        /* rope_scaling: null or YaRN. */
        {
                json_t *rs = json_object_get(root, "rope_scaling");
                c.rope_factor = 1.0;
                c.rope_original_max_pos = c.max_position_embeddings;
                c.rope_beta_fast = 32;
                c.rope_beta_slow = 1;
                c.rope_mscale_all_dim = 1.0;
                if (rs && !json_is_null(rs)) {
                        const char *type = NULL;
                        double mscale, omp;
                        if (!json_is_object(rs)) {
                                r = dsv_error_set(err, EINVAL, "config.json: rope_scaling must be an object or null");
                                goto out;
                        }
                        if ((r = field_str(rs, "type", &type, err)) < 0)
                                goto out;
                        if (!type && (r = field_str(rs, "rope_type", &type, err)) < 0)
                                goto out;
                        if (!type || strcmp(type, "yarn") != 0) {
                                r = dsv_error_set(err, EINVAL, "config.json: rope_scaling.type \"%s\" is unsupported (expected \"yarn\")",
                                                  type ? type : "(missing)");
                                goto out;
                        }
                        c.rope_yarn = true;
                        if ((r = field_num(rs, "factor", true, 1, 1, 1e6, &c.rope_factor, err)) < 0 ||
                            (r = field_num(rs, "beta_fast", false, 32, 1e-6, 1e6, &c.rope_beta_fast, err)) < 0 ||
                            (r = field_num(rs, "beta_slow", false, 1, 1e-6, 1e6, &c.rope_beta_slow, err)) < 0 ||
                            (r = field_num(rs, "original_max_position_embeddings", false, 4096, 1, 1 << 30, &omp, err)) < 0 ||
                            (r = field_num(rs, "mscale", false, 1.0, 0, 1e6, &mscale, err)) < 0 ||
                            (r = field_num(rs, "mscale_all_dim", false, mscale, 0, 1e6, &c.rope_mscale_all_dim, err)) < 0)
                                goto out;
                        c.rope_original_max_pos = (int)omp;
                }
        }

        /* quantization_config: absent (bf16 weights) or fp8 with 128x128 blocks. */
        {
                json_t *q = json_object_get(root, "quantization_config");
                if (q && !json_is_null(q)) {
                        const char *method = NULL, *fmt = NULL, *sfmt = NULL;
                        json_t *bs;
                        if (!json_is_object(q)) {
                                r = dsv_error_set(err, EINVAL, "config.json: quantization_config must be an object");
                                goto out;
                        }
                        if ((r = field_str(q, "quant_method", &method, err)) < 0 || (r = field_str(q, "fmt", &fmt, err)) < 0 ||
                            (r = field_str(q, "scale_fmt", &sfmt, err)) < 0)
                                goto out;
                        if (!method || strcmp(method, "fp8") != 0) {
                                r = dsv_error_set(err, EINVAL, "config.json: quantization_config.quant_method \"%s\" is unsupported (expected \"fp8\")",
                                                  method ? method : "(missing)");
                                goto out;
                        }
                        if (fmt && strcmp(fmt, "e4m3") != 0) {
                                r = dsv_error_set(err, EINVAL, "config.json: quantization_config.fmt \"%s\" is unsupported (expected \"e4m3\")", fmt);
                                goto out;
                        }
                        bs = json_object_get(q, "weight_block_size");
                        if (bs && !(json_is_array(bs) && json_array_size(bs) == 2 &&
                                    json_integer_value(json_array_get(bs, 0)) == 128 &&
                                    json_integer_value(json_array_get(bs, 1)) == 128)) {
                                r = dsv_error_set(err, EINVAL, "config.json: quantization_config.weight_block_size must be [128, 128]");
                                goto out;
                        }
                        c.fp8 = true;
                        c.scale_ue8m0 = sfmt && strcmp(sfmt, "ue8m0") == 0;
                }
        }
        r = validate(&c, err);
out:
        json_decref(root);
        if (r >= 0)
                *ret = c;
        return r;
#undef INT
#undef NUM
}

int dsv_model_config_load(const char *path, struct dsv_model_config *ret, struct dsv_error *err) {
        _cleanup_free_ char *text = NULL;
        size_t n;
        int r = dsv_read_file(path, CFG_MAX_FILE, &text, &n);
        if (r < 0)
                return dsv_error_set(err, r, "Failed to read %s: %s", path, strerror(-r));
        r = dsv_model_config_parse(text, n, ret, err);
        if (r < 0 && err) {
                /* the parser says "config.json: ..."; name the file once, with its path */
                char m[sizeof(err->msg)];
                const char *why = strncmp(err->msg, "config.json: ", 13) == 0 ? err->msg + 13 : err->msg;
                snprintf(m, sizeof(m), "%s", why);
                dsv_error_set(err, r, "%s: %s", path, m);
        }
        return r;
}

char *dsv_model_config_to_json(const struct dsv_model_config *c) {
        json_t *o = json_object();
        char *s;
#define SETI(name) json_object_set_new(o, #name, json_integer(c->name))
#define SETF(name) json_object_set_new(o, #name, json_real(c->name))
        json_object_set_new(o, "architectures", json_pack("[s]", "DeepseekV32ForCausalLM"));
        json_object_set_new(o, "model_type", json_string(c->model_type[0] ? c->model_type : "deepseek_v32"));
        SETI(vocab_size);
        SETI(hidden_size);
        SETI(intermediate_size);
        SETI(moe_intermediate_size);
        SETI(num_hidden_layers);
        SETI(first_k_dense_replace);
        SETI(num_attention_heads);
        json_object_set_new(o, "num_key_value_heads", json_integer(c->num_attention_heads));
        SETI(n_routed_experts);
        SETI(n_shared_experts);
        SETI(num_experts_per_tok);
        SETI(n_group);
        SETI(topk_group);
        SETF(routed_scaling_factor);
        json_object_set_new(o, "scoring_func", json_string("sigmoid"));
        json_object_set_new(o, "topk_method", json_string("noaux_tc"));
        json_object_set_new(o, "norm_topk_prob", json_boolean(c->norm_topk_prob));
        json_object_set_new(o, "moe_layer_freq", json_integer(1));
        SETI(q_lora_rank);
        SETI(kv_lora_rank);
        SETI(qk_nope_head_dim);
        SETI(qk_rope_head_dim);
        SETI(v_head_dim);
        SETI(max_position_embeddings);
        json_object_set_new(o, "rope_theta", json_real(c->rope_theta));
        if (c->rope_yarn)
                json_object_set_new(o, "rope_scaling",
                                    json_pack("{s:f,s:f,s:f,s:f,s:f,s:i,s:s}", "beta_fast", c->rope_beta_fast, "beta_slow",
                                              c->rope_beta_slow, "factor", c->rope_factor, "mscale", c->rope_mscale_all_dim,
                                              "mscale_all_dim", c->rope_mscale_all_dim, "original_max_position_embeddings",
                                              c->rope_original_max_pos, "type", "yarn"));
        else
                json_object_set_new(o, "rope_scaling", json_null());
        SETF(rms_norm_eps);
        SETI(index_n_heads);
        SETI(index_head_dim);
        SETI(index_topk);
        SETI(num_nextn_predict_layers);
        SETI(bos_token_id);
        SETI(eos_token_id);
        json_object_set_new(o, "hidden_act", json_string("silu"));
        json_object_set_new(o, "tie_word_embeddings", json_false());
        json_object_set_new(o, "torch_dtype", json_string("bfloat16"));
        if (c->fp8)
                json_object_set_new(o, "quantization_config",
                                    json_pack("{s:s,s:s,s:s,s:[i,i],s:s}", "activation_scheme", "dynamic", "fmt", "e4m3",
                                              "quant_method", "fp8", "weight_block_size", 128, 128, "scale_fmt",
                                              c->scale_ue8m0 ? "ue8m0" : "fp32"));
#undef SETI
#undef SETF
        s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
        json_decref(o);
        return s;
}

double dsv_cfg_softmax_scale(const struct dsv_model_config *c) {
        double s = 1.0 / sqrt((double)dsv_cfg_qk_head_dim(c));
        if (c->rope_yarn && c->rope_factor > 1.0) {
                double m = 0.1 * c->rope_mscale_all_dim * log(c->rope_factor) + 1.0;
                s *= m * m;
        }
        return s;
}

static double correction_dim(double rotations, int dim, double base, double max_pos) {
        return dim * log(max_pos / (rotations * 2 * M_PI)) / (2 * log(base));
}

void dsv_cfg_yarn_range(const struct dsv_model_config *c, int *low, int *high) {
        int dim = c->qk_rope_head_dim;
        int lo = (int)floor(correction_dim(c->rope_beta_fast, dim, c->rope_theta, c->rope_original_max_pos));
        int hi = (int)ceil(correction_dim(c->rope_beta_slow, dim, c->rope_theta, c->rope_original_max_pos));
        *low = MAX(lo, 0);
        *high = MIN(hi, dim - 1);
}

void dsv_cfg_rope_inv_freq(const struct dsv_model_config *c, float *inv_freq) {
        int dim = c->qk_rope_head_dim, half = dim / 2;
        float base = (float)c->rope_theta;
        for (int i = 0; i < half; i++) {
                /* fp32 as torch: base ** (arange(0, dim, 2) / dim), then 1 / that */
                float e = (float)(2 * i) / (float)dim;
                inv_freq[i] = 1.0f / powf(base, e);
        }
        if (c->rope_yarn && c->rope_factor > 1.0) {
                int low, high;
                float lo, hi, factor = (float)c->rope_factor;
                dsv_cfg_yarn_range(c, &low, &high);
                lo = (float)low;
                hi = (float)high;
                if (lo == hi)
                        hi += 0.001f;
                for (int i = 0; i < half; i++) {
                        float ramp = ((float)i - lo) / (hi - lo);
                        ramp = ramp < 0 ? 0 : (ramp > 1 ? 1 : ramp);
                        float smooth = 1.0f - ramp;
                        inv_freq[i] = inv_freq[i] / factor * (1.0f - smooth) + inv_freq[i] * smooth;
                }
        }
}

void dsv_model_config_v32(struct dsv_model_config *c) {
        *c = (struct dsv_model_config){
                .model_type = "deepseek_v32",
                .vocab_size = 129280,
                .hidden_size = 7168,
                .num_hidden_layers = 61,
                .first_k_dense_replace = 3,
                .num_attention_heads = 128,
                .q_lora_rank = 1536,
                .kv_lora_rank = 512,
                .qk_nope_head_dim = 128,
                .qk_rope_head_dim = 64,
                .v_head_dim = 128,
                .intermediate_size = 18432,
                .moe_intermediate_size = 2048,
                .n_routed_experts = 256,
                .n_shared_experts = 1,
                .num_experts_per_tok = 8,
                .n_group = 8,
                .topk_group = 4,
                .routed_scaling_factor = 2.5,
                .norm_topk_prob = true,
                .rope_theta = 10000,
                .rope_yarn = true,
                .rope_factor = 40,
                .rope_original_max_pos = 4096,
                .rope_beta_fast = 32,
                .rope_beta_slow = 1,
                .rope_mscale_all_dim = 1.0,
                .max_position_embeddings = 163840,
                .rms_norm_eps = 1e-6,
                .index_n_heads = 64,
                .index_head_dim = 128,
                .index_topk = 2048,
                .num_nextn_predict_layers = 1,
                .bos_token_id = 0,
                .eos_token_id = 1,
                .fp8 = true,
                .scale_ue8m0 = true,
        };
}

int dsv_model_config_preset(const char *name, struct dsv_model_config *c, struct dsv_error *err) {
        dsv_model_config_v32(c);
        if (strcmp(name, "tiny") == 0) {
                /* Runs in milliseconds; 1 dense + 2 MoE layers, 4 expert groups, index_topk 8 so that
                 * 20-100 token contexts exercise sparse selection. 128-multiples where act_quant
                 * needs whole blocks; kv_a's 160 rows leave a partial weight block. */
                c->vocab_size = 4096;
                c->hidden_size = 256;
                c->num_hidden_layers = 3;
                c->first_k_dense_replace = 1;
                c->num_attention_heads = 4;
                c->q_lora_rank = 128;
                c->kv_lora_rank = 128;
                c->qk_nope_head_dim = 32;
                c->qk_rope_head_dim = 32;
                c->v_head_dim = 32;
                c->intermediate_size = 384;
                c->moe_intermediate_size = 128;
                c->n_routed_experts = 16;
                c->n_shared_experts = 1;
                c->num_experts_per_tok = 4;
                c->n_group = 4;
                c->topk_group = 2;
                c->index_n_heads = 4;
                c->index_head_dim = 128;
                c->index_topk = 8;
                return 0;
        }
        if (strcmp(name, "small") == 0) {
                /* ~200 MB: CPU benchmarks. */
                c->vocab_size = 16384;
                c->hidden_size = 1024;
                c->num_hidden_layers = 4;
                c->first_k_dense_replace = 1;
                c->num_attention_heads = 16;
                c->q_lora_rank = 384;
                c->kv_lora_rank = 512;
                c->qk_nope_head_dim = 64;
                c->qk_rope_head_dim = 64;
                c->v_head_dim = 64;
                c->intermediate_size = 2816;
                c->moe_intermediate_size = 256;
                c->n_routed_experts = 64;
                c->n_shared_experts = 1;
                c->num_experts_per_tok = 6;
                c->n_group = 8;
                c->topk_group = 4;
                c->index_n_heads = 16;
                c->index_head_dim = 128;
                c->index_topk = 64;
                return 0;
        }
        if (strcmp(name, "m474") == 0) {
                /* 474M parameters (~0.55 GB on disk): the size of checkpoint the CPU backend is
                 * compared with other CPU engines on (issue 16). */
                c->vocab_size = 32768;
                c->hidden_size = 1024;
                c->num_hidden_layers = 8;
                c->first_k_dense_replace = 1;
                c->num_attention_heads = 16;
                c->q_lora_rank = 512;
                c->kv_lora_rank = 256;
                c->qk_nope_head_dim = 64;
                c->qk_rope_head_dim = 64;
                c->v_head_dim = 64;
                c->intermediate_size = 2048;
                c->moe_intermediate_size = 512;
                c->n_routed_experts = 32;
                c->n_shared_experts = 1;
                c->num_experts_per_tok = 4;
                c->n_group = 4;
                c->topk_group = 2;
                c->index_n_heads = 16;
                c->index_head_dim = 128;
                c->index_topk = 64;
                return 0;
        }
        if (strncmp(name, "v32-layers:", 11) == 0) {
                long n;
                if (dsv_parse_int(name + 11, 1, 61, &n) < 0)
                        return dsv_error_set(err, EINVAL, "preset %s: N must be 1..61", name);
                /* keep at least one MoE layer: 3 dense layers from N = 4 on */
                c->num_hidden_layers = (int)n;
                c->first_k_dense_replace = n >= 4 ? 3 : (int)n - 1;
                return 0;
        }
        if (strcmp(name, "v32") == 0)
                return 0;
        return dsv_error_set(err, EINVAL, "unknown preset \"%s\" (tiny, small, m474, v32-layers:N, v32)", name);
}
