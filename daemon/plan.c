/* The multi-GPU plan on paper (plan.h): per-rank weight shares from the tensor table, the
 * KV pool that is left, and the decode step's traffic. */
#include "config.h"

#include "daemon/plan.h"

#include <ctype.h>
#include <math.h>
#include <strings.h>

#include "daemon/weights_spec.h"

/* Memory as nvidia-smi reports memory.total; bandwidths from NVIDIA's data sheets (HBM),
 * NVLink 4 (18 links x 25 GB/s each way) and one 400 Gb/s NDR InfiniBand NIC per GPU. */
static const struct dsv_gpu_spec gpus[] = {
        {"H100", 81559ull << 20, 3350, 450, 50},
        {"H200", 143771ull << 20, 4800, 450, 50},
};

const struct dsv_gpu_spec *dsv_gpu_find(const char *name) {
        for (size_t i = 0; i < ARRAY_SIZE(gpus); i++)
                if (strcasecmp(name, gpus[i].name) == 0)
                        return &gpus[i];
        return NULL;
}

const char *dsv_attn_parallel_name(enum dsv_attn_parallel a) {
        static const char *const n[DSV_ATTN_PARALLEL_MAX] = {"ep,dp", "ep,tp"};
        return a < DSV_ATTN_PARALLEL_MAX ? n[a] : "?";
}

const char *dsv_plan_part_name(enum dsv_plan_part p) {
        static const char *const n[DSV_PLAN_PART_MAX] = {"routed_experts", "attention", "dense_and_shared", "vocab", "other"};
        return p < DSV_PLAN_PART_MAX ? n[p] : "?";
}

int dsv_plan_parse(const char *text, struct dsv_plan_spec *ret, char *err, size_t errlen) {
        char buf[64], *parts[3], *save = NULL;
        int n = 0;
        long v[2];
        const struct dsv_gpu_spec *g;

        if (!text || strlen(text) >= sizeof(buf))
                goto bad;
        snprintf(buf, sizeof(buf), "%s", text);
        for (char *t = strtok_r(buf, "xX", &save); t; t = strtok_r(NULL, "xX", &save)) {
                if (n == 3)
                        goto bad;
                parts[n++] = t;
        }
        if (n < 2)
                goto bad;
        for (int i = 0; i < n - 1; i++)
                if (dsv_parse_int(parts[i], 1, 1024, &v[i]) < 0)
                        goto bad;
        if (!(g = dsv_gpu_find(parts[n - 1]))) {
                snprintf(err, errlen, "unknown GPU '%s' in '%s' (H100 or H200)", parts[n - 1], text);
                return -EINVAL;
        }
        const long nodes = n == 3 ? v[0] : 1, gpus_per_node = n == 3 ? v[1] : v[0];
        if (gpus_per_node > 8) {
                snprintf(err, errlen, "'%s': %ld GPUs in one node; a node has at most 8 (write NODESx8x%s)", text, gpus_per_node,
                         g->name);
                return -EINVAL;
        }
        ret->nodes = (int)nodes;
        ret->gpus_per_node = (int)gpus_per_node;
        ret->gpu = *g;
        return 0;
bad:
        snprintf(err, errlen, "'%s' is not GPUSxTYPE or NODESxGPUSxTYPE (e.g. 8xH200, 2x8xH200)", text ? text : "");
        return -EINVAL;
}

int dsv_plan_parse_parallel(const char *text, enum dsv_attn_parallel *ret) {
        for (int a = 0; a < DSV_ATTN_PARALLEL_MAX; a++)
                if (strcmp(text, dsv_attn_parallel_name((enum dsv_attn_parallel)a)) == 0) {
                        *ret = (enum dsv_attn_parallel)a;
                        return 0;
                }
        return -EINVAL;
}

/* ------------------------------------------------------------------ weights */
static bool ends_with(const char *s, const char *suffix) {
        size_t a = strlen(s), b = strlen(suffix);
        return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* A split dimension's largest share over `ways`: FP8 linears split in whole 128 blocks. */
static int64_t share(int64_t dim, int ways, bool blocks) {
        if (ways <= 1)
                return dim;
        if (blocks)
                return MIN(dim, DIV_ROUND_UP(DIV_ROUND_UP(dim, 128), ways) * 128);
        return DIV_ROUND_UP(dim, ways);
}

/* The bytes one rank holds of tensor s: whole, or a row or column share. */
static uint64_t rank_bytes(const struct dsv_model_config *cfg, const struct dsv_tensor_spec *s, int ways, int split_dim) {
        struct dsv_tensor_spec t = *s;
        const bool blocks = s->kind == DSV_TK_LINEAR && cfg->fp8;
        if (split_dim >= 0 && ways > 1)
                t.shape[split_dim] = share(s->shape[split_dim], ways, blocks);
        return dsv_inspect_spec_bytes(cfg, &t, NULL);
}

int dsv_plan_make(const struct dsv_model_config *cfg, const struct dsv_param_counts *pc, const struct dsv_kv_costs *kv,
                  const struct dsv_plan_spec *spec, struct dsv_plan *ret) {
        _cleanup_free_ struct dsv_tensor_spec *specs = NULL;
        struct dsv_plan p = {.spec = *spec};
        const int G = spec->gpus_per_node;
        size_t n = 0;
        int r;

        if (spec->nodes < 1 || G < 1 || !(spec->mem_fraction > 0 && spec->mem_fraction <= 1))
                return -EINVAL;
        p.ranks = spec->nodes * G;
        if (cfg->n_routed_experts > 0 && cfg->n_routed_experts < p.ranks)
                return -EINVAL; /* a rank without experts: not this layout */
        if (spec->attn == DSV_ATTN_TP && cfg->num_attention_heads % G)
                return -EINVAL;
        if ((r = dsv_weight_specs(cfg, false, &specs, &n)) < 0)
                return r;
        p.experts_per_rank = cfg->n_routed_experts > 0 ? DIV_ROUND_UP(cfg->n_routed_experts, p.ranks) : 0;
        p.part_bytes[DSV_PLAN_EXPERTS] = (uint64_t)pc->moe_layers * (uint64_t)p.experts_per_rank * pc->bytes_routed_expert;

        for (size_t i = 0; i < n; i++) {
                const struct dsv_tensor_spec *s = &specs[i];
                enum dsv_plan_part part = DSV_PLAN_OTHER;
                int split = -1;
                switch (s->comp) {
                case DSV_COMP_ROUTED:
                        continue;
                case DSV_COMP_EMBED:
                case DSV_COMP_HEAD:
                        part = DSV_PLAN_VOCAB;
                        split = 0; /* vocabulary rows */
                        break;
                case DSV_COMP_DENSE_MLP:
                case DSV_COMP_SHARED:
                        part = DSV_PLAN_DENSE;
                        /* gate/up: intermediate rows; down: intermediate columns */
                        split = ends_with(s->name, "down_proj.weight") ? 1 : 0;
                        break;
                case DSV_COMP_ATTN:
                case DSV_COMP_INDEXER:
                        part = DSV_PLAN_ATTENTION;
                        if (spec->attn == DSV_ATTN_TP && s->comp == DSV_COMP_ATTN) {
                                if (ends_with(s->name, "q_b_proj.weight") || ends_with(s->name, "kv_b_proj.weight"))
                                        split = 0; /* heads are rows */
                                else if (ends_with(s->name, "o_proj.weight"))
                                        split = 1; /* heads are columns */
                        }
                        break;
                default:
                        break;
                }
                const uint64_t b = rank_bytes(cfg, s, split >= 0 ? G : 1, split);
                p.part_bytes[part] += b;
                if (s->comp == DSV_COMP_EMBED)
                        p.embed_bytes += b;
        }
        for (int k = 0; k < DSV_PLAN_PART_MAX; k++)
                p.weight_bytes += p.part_bytes[k];

        p.page_bytes = kv->page_bytes;
        p.page_tokens = kv->page_tokens;
        const double budget = (double)spec->gpu.mem_bytes * spec->mem_fraction - (double)spec->reserve_bytes;
        p.budget_bytes = budget > 0 ? (uint64_t)budget : 0;
        const double pool = budget - (double)p.weight_bytes;
        p.fits = pool >= (double)kv->page_bytes;
        p.kv_pages = p.fits ? (uint64_t)(pool / (double)kv->page_bytes) : 0;
        p.kv_pool_bytes = p.fits ? (int64_t)(p.kv_pages * kv->page_bytes) : (int64_t)floor(pool);
        p.kv_tokens_rank = p.kv_pages * (uint64_t)kv->page_tokens;
        p.kv_copies = spec->attn == DSV_ATTN_TP ? G : 1;
        p.kv_tokens_total = p.kv_tokens_rank * (uint64_t)(p.ranks / p.kv_copies);
        *ret = p;
        return 0;
}

uint64_t dsv_plan_max_batch(const struct dsv_plan *p, uint64_t context) {
        const uint64_t pages = DIV_ROUND_UP(MAX(context, 1), (uint64_t)MAX(p->page_tokens, 1));
        return p->kv_pages / pages * (uint64_t)(p->ranks / p->kv_copies);
}

/* ------------------------------------------------------------------ routing */
/* C(a - m, k) / C(a, k): none of k draws without replacement from a hits m marked. */
static double none_of(int64_t a, int64_t m, int k) {
        double q = 1.0;
        if (a - m < k)
                return 0.0;
        for (int i = 0; i < k; i++)
                q *= (double)(a - m - i) / (double)(a - i);
        return q;
}

/* P(a token has at least one expert in [lo, hi)): topk_group of n_group groups, then k
 * experts among the kept groups' experts, all uniformly. */
static double p_hit(const struct dsv_model_config *c, int lo, int hi) {
        const int E = c->n_routed_experts, g = c->n_group, t = c->topk_group, k = c->num_experts_per_tok;
        if (hi <= lo || E <= 0)
                return 0.0;
        if (g <= 1 || t >= g || E % g || g > 20)
                return 1.0 - none_of(E, hi - lo, k);
        const int e = E / g;
        double none = 0.0;
        long subsets = 0;
        for (uint32_t mask = 0; mask < (1u << g); mask++) {
                if (__builtin_popcount(mask) != t)
                        continue;
                int m = 0;
                for (int grp = 0; grp < g; grp++)
                        if (mask & (1u << grp))
                                m += MAX(0, MIN(hi, (grp + 1) * e) - MAX(lo, grp * e));
                none += none_of((int64_t)t * e, m, k);
                subsets++;
        }
        return 1.0 - none / (double)subsets;
}

int dsv_plan_decode_step(const struct dsv_model_config *c, const struct dsv_param_counts *pc, const struct dsv_kv_costs *kv,
                         const struct dsv_plan *p, uint64_t context, int batch, struct dsv_plan_step *ret) {
        const int R = p->ranks, G = p->spec.gpus_per_node, E = c->n_routed_experts, k = c->num_experts_per_tok;
        const double D = c->hidden_size;
        struct dsv_plan_step s = {.context = context, .batch = batch};
        double *hit;

        if (p->spec.attn != DSV_ATTN_DP || batch < 1 || R < 1)
                return -EOPNOTSUPP;
        hit = calloc((size_t)R, sizeof(*hit));
        if (!hit)
                return -ENOMEM;
        /* rank r owns experts [r E / R, (r + 1) E / R) */
        for (int r = 0; r < R; r++)
                hit[r] = p_hit(c, (int)((int64_t)r * E / R), (int)((int64_t)(r + 1) * E / R));
        for (int src = 0; src < R; src++)
                for (int r = 0; r < R; r++) {
                        s.ranks_per_token += hit[r] / R;
                        if (r == src)
                                continue;
                        if (r / G == src / G)
                                s.nvlink_ranks_per_token += hit[r] / R;
                        else
                                s.net_ranks_per_token += hit[r] / R;
                }
        free(hit);

        s.batch_per_rank = DIV_ROUND_UP(batch, R);
        const double b = s.batch_per_rank, moe = pc->moe_layers;
        s.dispatch_bytes = D + 4.0 * ceil(D / 128.0) + 8.0 * k;
        s.combine_bytes = 2.0 * D;
        s.a2a_nvlink_bytes = b * s.nvlink_ranks_per_token * (s.dispatch_bytes + s.combine_bytes) * moe;
        s.a2a_net_bytes = b * s.net_ranks_per_token * (s.dispatch_bytes + s.combine_bytes) * moe;
        /* tensor-parallel sublayers: dense MLPs, shared experts, embedding, lm_head */
        const double tp_layers = MIN(c->first_k_dense_replace, c->num_hidden_layers) + (c->n_shared_experts > 0 ? moe : 0) + 2;
        s.tp_nvlink_bytes = G > 1 ? tp_layers * 2.0 * (G - 1) * b * D * 2.0 : 0.0;

        /* HBM: what the rank holds, its experts only as far as the batch touches them */
        s.experts_touched = E > 0 ? (double)E / R * (1.0 - pow(1.0 - (double)k / E, batch)) : 0.0;
        const double row = c->vocab_size > 0 ? (double)pc->bytes_embed / c->vocab_size : 0.0;
        s.hbm_weight_bytes = (double)(p->weight_bytes - p->part_bytes[DSV_PLAN_EXPERTS] - p->embed_bytes) + b * row +
                             s.experts_touched * moe * (double)pc->bytes_routed_expert;
        const double sel = (double)MIN(context, (uint64_t)MAX(c->index_topk, 0));
        s.hbm_kv_bytes = b * kv->layers * (sel * (double)kv->mla_per_layer + (double)context * (double)kv->indexer_per_layer);

        s.t_hbm = (s.hbm_weight_bytes + s.hbm_kv_bytes) / (p->spec.gpu.hbm_gbps * 1e9);
        s.t_nvlink = (s.a2a_nvlink_bytes + s.tp_nvlink_bytes) / (p->spec.gpu.nvlink_gbps * 1e9);
        s.t_net = s.a2a_net_bytes / (p->spec.gpu.net_gbps * 1e9);
        const double serial = s.t_hbm + s.t_nvlink + s.t_net, overlap = MAX(s.t_hbm, MAX(s.t_nvlink, s.t_net));
        s.tokens_per_s_serial = serial > 0 ? batch / serial : 0.0;
        s.tokens_per_s_overlap = overlap > 0 ? batch / overlap : 0.0;
        *ret = s;
        return 0;
}
