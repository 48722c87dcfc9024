/* dsv32-inspect: parameter, byte, FLOP and KV-cache accounting for a DeepSeek-V3.2-style
 * config.json or checkpoint directory, as a table or as one JSON object (field names in
 * --help and dsv32-inspect(1); keep the three in step). The numbers come from
 * daemon/inspect.c. */
#include "config.h"

#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <sys/stat.h>

#include "daemon/checkpoint.h"
#include "daemon/inspect.h"
#include "daemon/kv_cache.h"
#include "daemon/plan.h"

#define MAX_CONTEXTS 64
#define MAX_CONTEXT (1ull << 31)

static void help(void) {
        printf("Usage: dsv32-inspect [options] CONFIG.json|CHECKPOINT_DIR   (or --model CHECKPOINT_DIR)\n"
               "       dsv32-inspect [options] --preset NAME\n"
               "Parameter, FLOP and KV-cache accounting for a DeepSeek-V3.2-style model. Given a\n"
               "checkpoint directory, also reports what its shards really hold.\n\n"
               "Options:\n"
               "  --context N       context length for FLOPs, KV bytes and decode traffic; repeatable\n"
               "                    (suffix K = 1024, M = 1048576; default 4K and 128K)\n"
               "  --batch B         sequences per decode step (default 1)\n"
               "  --bandwidth GB/s  memory bandwidth for the decode roofline (1 GB = 1e9 bytes)\n"
               "  --preset NAME     a built-in config: tiny, small, m474, v32-layers:N, v32 (671B)\n"
               "  --plan SPEC       a multi-GPU plan: GPUSxTYPE or NODESxGPUSxTYPE (8xH200, 2x8xH200;\n"
               "                    TYPE H100 or H200, at most 8 GPUs a node); --batch is then the\n"
               "                    whole group's decode batch\n"
               "  --parallel L      the plan's layout: ep,dp (default) or ep,tp\n"
               "  --mem-fraction F  share of each GPU's memory dsv32d may take (default 0.92)\n"
               "  --reserve-gib G   of that, GiB kept for activations, workspaces, NCCL, CUDA (default 6)\n"
               "  --json            one JSON object on stdout instead of the table\n"
               "  --model DIR       the checkpoint directory (instead of the argument)\n"
               "  --version         print the version\n"
               "  -h, --help        this text\n\n"
               "Counting (the same in the table and the JSON):\n"
               "  Parameters come from the model's tensor table. total excludes the MTP layer;\n"
               "  mtp is the whole MTP layer including the copies of the embedding and head the\n"
               "  published checkpoint carries. active_per_token = every non-routed weight plus\n"
               "  num_experts_per_tok routed experts per MoE layer, without the embedding table.\n"
               "  Bytes computed from the config: linears F8_E4M3 (BF16 if the config is not FP8)\n"
               "  plus one F32 weight_scale_inv per 128x128 block, e_score_correction_bias F32,\n"
               "  everything else BF16.\n"
               "  FLOPs: a multiply-add is 2 FLOPs; only contractions count (not norms, RoPE,\n"
               "  activations, softmax, Hadamard, quantisation, top-k). H heads, Hi/Di indexer\n"
               "  heads/dim, per cache entry per layer:\n"
               "    MLA absorbed (decode)  2H(kv_lora+rope) + 2H kv_lora   (278,528 at 671B)\n"
               "    MLA expanded (prefill) 2H(nope+rope) + 2H v_head       (81,920)\n"
               "    indexer                2 Hi Di, plus 2 Hi for the head-weighted sum (16,384 + 128)\n"
               "  Decode at context N (N cache entries, the new token included): linear =\n"
               "  2 x linear_per_token weights (lm_head included); attention_dsa = layers x MLA x\n"
               "  min(N, index_topk); attention_dense = layers x MLA x N; indexer = layers x\n"
               "  indexer x N. total_dsa = linear + attention_dsa + indexer; total_dense = linear\n"
               "  + attention_dense. Prefill of N tokens: causal (token t sees t+1 entries),\n"
               "  expanded MLA, lm_head for the last token only.\n"
               "  KV bytes per token per layer: fp8 = kv_lora e4m3 + 4 ceil(kv_lora/128) scale +\n"
               "  2 rope k_pe (656) + Di e4m3 + 4 ceil(Di/128) (132); f32 = 4(kv_lora+rope) + 4 Di;\n"
               "  bf16 = 2(kv_lora+rope) + 2 Di. fp8 and f32 are the layouts dsv32d allocates\n"
               "  (serving, exact numerics); bf16 is a comparison layout dsv32d does not implement.\n"
               "  The pool holds the main layers only and reserves pages of 64 tokens.\n"
               "  Decode step (fp8 cache, main model): weights = all tensors except the embedding\n"
               "  table and routed experts, + E(1-(1-k/E)^B) distinct experts per MoE layer\n"
               "  (uniform routing), + B embedding rows; kv = B x layers x (min(N, index_topk) x\n"
               "  MLA record + N x indexer record); tokens_per_s = B x bandwidth / (weights + kv).\n"
               "  Plan (--plan; main model, fp8 cache): layout ep,dp = routed experts split over all\n"
               "  ranks (ceil(E/ranks) each), MLA and indexer on every rank, dense MLP, shared experts,\n"
               "  embedding and lm_head split over a node's GPUs (FP8 in 128-row blocks), router and\n"
               "  norms on every rank, each rank its own sequences; ep,tp = the same with q_b_proj,\n"
               "  kv_b_proj, o_proj split by heads over a node's GPUs, which then all hold the node's\n"
               "  cache. GPU memory (nvidia-smi memory.total): H100 81,559 MiB, H200 143,771 MiB;\n"
               "  HBM 3,350 / 4,800 GB/s; NVLink 450 GB/s and network 50 GB/s (400 Gb/s) per GPU and\n"
               "  direction. KV pool = memory x fraction - reserve - weights, whole pages.\n"
               "  Decode step (ep,dp, batch B of the group, b = ceil(B/ranks) per rank): a token\n"
               "  picks topk_group groups, then k experts among them, uniformly; dispatch sends it\n"
               "  once to each other rank owning one (hidden e4m3 + fp32 scale per 128 + 8 B per\n"
               "  expert), combine returns bf16 hidden per such rank, per MoE layer; tensor-parallel\n"
               "  layers (dense, shared experts, embedding, lm_head) all-gather and reduce-scatter\n"
               "  bf16 hidden: 2 (G-1) b hidden x 2 B each; HBM = the rank's weights but its experts\n"
               "  and embedding, + its experts the batch touches (E/R (1-(1-k/E)^B) per layer), + b\n"
               "  embedding rows, + its KV reads; time = bytes / bandwidth per link; tokens/s =\n"
               "  B / (t_hbm + t_nvlink + t_net) serial, B / max(...) with perfect overlap.\n\n"
               "JSON fields (stable; bytes and counts are integers, FLOPs are numbers):\n"
               "  schema_version, source{path, kind: config|checkpoint|preset},\n"
               "  model{model_type, vocab_size, hidden_size, num_hidden_layers, first_k_dense_replace,\n"
               "    moe_layers, num_attention_heads, q_lora_rank, kv_lora_rank, qk_nope_head_dim,\n"
               "    qk_rope_head_dim, v_head_dim, intermediate_size, moe_intermediate_size,\n"
               "    n_routed_experts, n_shared_experts, num_experts_per_tok, index_n_heads,\n"
               "    index_head_dim, index_topk, num_nextn_predict_layers, max_position_embeddings, fp8},\n"
               "  params{total, mtp, total_with_mtp, active_per_token, active_per_token_with_embedding,\n"
               "    linear_per_token, components{embedding, attention, indexer, dense_mlp,\n"
               "    routed_experts, shared_experts, gate, norms, head, mtp}, mtp_components{...}},\n"
               "  bytes{computed{total, by_dtype{F8_E4M3, BF16, F32}, total_with_mtp,\n"
               "    by_dtype_with_mtp{...}}, checkpoint: null | {dir, shards, tensors,\n"
               "    unknown_tensors, has_mtp, file_bytes, total, by_dtype{...}, expected_total,\n"
               "    expected_by_dtype{...}, matches_config}},\n"
               "  flops{per_entry_per_layer{mla_absorbed, mla_expanded, indexer, indexer_weighting},\n"
               "    linear_per_token, decode[{context, linear, attention_dsa, attention_dense,\n"
               "    indexer, total_dsa, total_dense}], prefill[{tokens, ...the same}]},\n"
               "  kv{page_tokens, layouts[{name, engine, mla_bytes_per_layer, indexer_bytes_per_layer,\n"
               "    bytes_per_token_per_layer, layers, mtp_layers, bytes_per_token,\n"
               "    bytes_per_token_with_mtp, page_bytes, contexts[{context, bytes, bytes_with_mtp,\n"
               "    bytes_allocated}]}]},\n"
               "  decode_step{batch, bandwidth_gb_per_s (null if not given), kv_layout,\n"
               "    contexts[{context, experts_per_layer, weight_bytes, kv_bytes, bytes,\n"
               "    tokens_per_s (null without --bandwidth)}]},\n"
               "  plan: null | {spec{nodes, gpus_per_node, gpu, mem_bytes, hbm_gb_per_s, nvlink_gb_per_s,\n"
               "    net_gb_per_s, parallel, mem_fraction, reserve_bytes}, ranks, experts_per_rank,\n"
               "    weights{routed_experts, attention, dense_and_shared, vocab, other, total},\n"
               "    budget_bytes, fits, kv_pool_bytes, kv_pages, kv_tokens_per_rank, kv_copies,\n"
               "    kv_tokens_total, max_batch[{context, sequences}], decode_step: null (ep,tp) |\n"
               "    [{context, batch, batch_per_rank, ranks_per_token, nvlink_ranks_per_token,\n"
               "    net_ranks_per_token, dispatch_bytes, combine_bytes, a2a_nvlink_bytes,\n"
               "    a2a_net_bytes, tp_nvlink_bytes, experts_touched, hbm_weight_bytes, hbm_kv_bytes,\n"
               "    t_hbm_s, t_nvlink_s, t_net_s, tokens_per_s_serial, tokens_per_s_overlap}]}\n\n"
               "Exit status: 0 success, 1 unreadable or invalid config or checkpoint, 2 usage error.\n");
}

struct report {
        const char *path;
        const char *kind; /* config, checkpoint, preset */
        struct dsv_model_config cfg;
        struct dsv_checkpoint *ck;
        struct dsv_param_counts pc;
        struct dsv_flop_costs fc;
        struct dsv_kv_costs kv[DSV_INSPECT_KV_MAX];
        uint64_t ck_expected[DSV_DTYPE_MAX], ck_expected_total, ck_file_bytes;
        uint64_t contexts[MAX_CONTEXTS];
        int n_contexts;
        int batch;
        double bandwidth_gbps; /* 0: not given */
        bool plan;
        struct dsv_plan_spec plan_spec;
        struct dsv_plan pl;
};

/* "4096", "128K", "1M" */
static int parse_context(const char *s, uint64_t *ret) {
        char buf[32];
        size_t n = strlen(s);
        uint64_t mul = 1;
        long v;
        if (n == 0 || n >= sizeof(buf))
                return -EINVAL;
        memcpy(buf, s, n + 1);
        if (buf[n - 1] == 'k' || buf[n - 1] == 'K')
                mul = 1024;
        else if (buf[n - 1] == 'm' || buf[n - 1] == 'M')
                mul = 1024 * 1024;
        if (mul > 1)
                buf[n - 1] = 0;
        if (dsv_parse_int(buf, 1, (long)(MAX_CONTEXT / mul), &v) < 0)
                return -EINVAL;
        *ret = (uint64_t)v * mul;
        return 0;
}

/* ------------------------------------------------------------------ JSON */

/* dtypes in the order a reader expects: the weights, then the rest */
static const enum dsv_dtype dtype_order[DSV_DTYPE_MAX] = {DSV_F8_E4M3, DSV_BF16, DSV_F32, DSV_F16, DSV_I32, DSV_I64, DSV_U8};

static json_t *jnum(double x) {
        /* integers where they are exact, so that consumers can compare them */
        if (x == floor(x) && fabs(x) < 9007199254740992.0)
                return json_integer((json_int_t)x);
        return json_real(x);
}

static json_t *ju64(uint64_t x) { return json_integer((json_int_t)x); }

static json_t *by_dtype_json(const uint64_t by[DSV_DTYPE_MAX]) {
        json_t *o = json_object();
        for (int i = 0; i < DSV_DTYPE_MAX; i++) {
                const enum dsv_dtype t = dtype_order[i];
                if (by[t] || t == DSV_F8_E4M3 || t == DSV_BF16 || t == DSV_F32)
                        json_object_set_new(o, dsv_dtype_name(t), ju64(by[t]));
        }
        return o;
}

static json_t *comps_json(const uint64_t by[DSV_COMP_MAX], const uint64_t *mtp) {
        json_t *o = json_object();
        for (int c = 0; c < DSV_COMP_MAX; c++)
                json_object_set_new(o, dsv_component_name((enum dsv_component)c), ju64(by[c]));
        if (mtp)
                json_object_set_new(o, "mtp", ju64(*mtp));
        return o;
}

static json_t *flops_json(const char *key, uint64_t n, const struct dsv_flops *f) {
        return json_pack("{s:I, s:o, s:o, s:o, s:o, s:o, s:o}", key, (json_int_t)n, "linear", jnum(f->linear),
                         "attention_dsa", jnum(f->attention_dsa), "attention_dense", jnum(f->attention_dense), "indexer",
                         jnum(f->indexer), "total_dsa", jnum(f->total_dsa), "total_dense", jnum(f->total_dense));
}

static json_t *model_json(const struct report *R) {
        const struct dsv_model_config *c = &R->cfg;
        json_t *o = json_object();
#define SETI(name) json_object_set_new(o, #name, json_integer(c->name))
        json_object_set_new(o, "model_type", json_string(c->model_type[0] ? c->model_type : "deepseek_v32"));
        SETI(vocab_size);
        SETI(hidden_size);
        SETI(num_hidden_layers);
        SETI(first_k_dense_replace);
        json_object_set_new(o, "moe_layers", json_integer(R->pc.moe_layers));
        SETI(num_attention_heads);
        SETI(q_lora_rank);
        SETI(kv_lora_rank);
        SETI(qk_nope_head_dim);
        SETI(qk_rope_head_dim);
        SETI(v_head_dim);
        SETI(intermediate_size);
        SETI(moe_intermediate_size);
        SETI(n_routed_experts);
        SETI(n_shared_experts);
        SETI(num_experts_per_tok);
        SETI(index_n_heads);
        SETI(index_head_dim);
        SETI(index_topk);
        SETI(num_nextn_predict_layers);
        SETI(max_position_embeddings);
#undef SETI
        json_object_set_new(o, "fp8", json_boolean(c->fp8));
        return o;
}

static json_t *plan_json(const struct report *R) {
        const struct dsv_plan *p = &R->pl;
        const struct dsv_plan_spec *sp = &p->spec;
        json_t *o = json_object(), *w = json_object(), *a = json_array(), *steps;

        json_object_set_new(
                o, "spec",
                json_pack("{s:i, s:i, s:s, s:o, s:f, s:f, s:f, s:s, s:f, s:o}", "nodes", sp->nodes, "gpus_per_node",
                          sp->gpus_per_node, "gpu", sp->gpu.name, "mem_bytes", ju64(sp->gpu.mem_bytes), "hbm_gb_per_s",
                          sp->gpu.hbm_gbps, "nvlink_gb_per_s", sp->gpu.nvlink_gbps, "net_gb_per_s", sp->gpu.net_gbps,
                          "parallel", dsv_attn_parallel_name(sp->attn), "mem_fraction", sp->mem_fraction, "reserve_bytes",
                          ju64(sp->reserve_bytes)));
        json_object_set_new(o, "ranks", json_integer(p->ranks));
        json_object_set_new(o, "experts_per_rank", json_integer(p->experts_per_rank));
        for (int k = 0; k < DSV_PLAN_PART_MAX; k++)
                json_object_set_new(w, dsv_plan_part_name((enum dsv_plan_part)k), ju64(p->part_bytes[k]));
        json_object_set_new(w, "total", ju64(p->weight_bytes));
        json_object_set_new(o, "weights", w);
        json_object_set_new(o, "budget_bytes", ju64(p->budget_bytes));
        json_object_set_new(o, "fits", json_boolean(p->fits));
        json_object_set_new(o, "kv_pool_bytes", json_integer((json_int_t)p->kv_pool_bytes));
        json_object_set_new(o, "kv_pages", ju64(p->kv_pages));
        json_object_set_new(o, "kv_tokens_per_rank", ju64(p->kv_tokens_rank));
        json_object_set_new(o, "kv_copies", json_integer(p->kv_copies));
        json_object_set_new(o, "kv_tokens_total", ju64(p->kv_tokens_total));
        for (int i = 0; i < R->n_contexts; i++)
                json_array_append_new(a, json_pack("{s:I, s:o}", "context", (json_int_t)R->contexts[i], "sequences",
                                                   ju64(dsv_plan_max_batch(p, R->contexts[i]))));
        json_object_set_new(o, "max_batch", a);
        if (sp->attn != DSV_ATTN_DP) {
                json_object_set_new(o, "decode_step", json_null());
                return o;
        }
        steps = json_array();
        for (int i = 0; i < R->n_contexts; i++) {
                struct dsv_plan_step st;
                if (dsv_plan_decode_step(&R->cfg, &R->pc, &R->kv[DSV_INSPECT_KV_FP8], p, R->contexts[i], R->batch, &st) < 0)
                        continue;
                json_t *e = json_object();
                json_object_set_new(e, "context", ju64(st.context));
                json_object_set_new(e, "batch", json_integer(st.batch));
                json_object_set_new(e, "batch_per_rank", json_integer(st.batch_per_rank));
                json_object_set_new(e, "ranks_per_token", json_real(st.ranks_per_token));
                json_object_set_new(e, "nvlink_ranks_per_token", json_real(st.nvlink_ranks_per_token));
                json_object_set_new(e, "net_ranks_per_token", json_real(st.net_ranks_per_token));
                json_object_set_new(e, "dispatch_bytes", jnum(st.dispatch_bytes));
                json_object_set_new(e, "combine_bytes", jnum(st.combine_bytes));
                json_object_set_new(e, "a2a_nvlink_bytes", jnum(round(st.a2a_nvlink_bytes)));
                json_object_set_new(e, "a2a_net_bytes", jnum(round(st.a2a_net_bytes)));
                json_object_set_new(e, "tp_nvlink_bytes", jnum(round(st.tp_nvlink_bytes)));
                json_object_set_new(e, "experts_touched", json_real(st.experts_touched));
                json_object_set_new(e, "hbm_weight_bytes", jnum(round(st.hbm_weight_bytes)));
                json_object_set_new(e, "hbm_kv_bytes", jnum(round(st.hbm_kv_bytes)));
                json_object_set_new(e, "t_hbm_s", json_real(st.t_hbm));
                json_object_set_new(e, "t_nvlink_s", json_real(st.t_nvlink));
                json_object_set_new(e, "t_net_s", json_real(st.t_net));
                json_object_set_new(e, "tokens_per_s_serial", json_real(st.tokens_per_s_serial));
                json_object_set_new(e, "tokens_per_s_overlap", json_real(st.tokens_per_s_overlap));
                json_array_append_new(steps, e);
        }
        json_object_set_new(o, "decode_step", steps);
        return o;
}

static int print_json(const struct report *R) {
        const struct dsv_param_counts *pc = &R->pc;
        json_t *root = json_object(), *a, *o;
        uint64_t total_mtp = pc->total + pc->mtp, bytes_mtp[DSV_DTYPE_MAX];
        char *text;

        for (int t = 0; t < DSV_DTYPE_MAX; t++)
                bytes_mtp[t] = pc->bytes_by_dtype[t] + pc->mtp_bytes_by_dtype[t];
        json_object_set_new(root, "schema_version", json_integer(1));
        json_object_set_new(root, "source", json_pack("{s:s, s:s}", "path", R->path, "kind", R->kind));
        json_object_set_new(root, "model", model_json(R));

        o = json_object();
        json_object_set_new(o, "total", ju64(pc->total));
        json_object_set_new(o, "mtp", ju64(pc->mtp));
        json_object_set_new(o, "total_with_mtp", ju64(total_mtp));
        json_object_set_new(o, "active_per_token", ju64(pc->active));
        json_object_set_new(o, "active_per_token_with_embedding", ju64(pc->active_with_embedding));
        json_object_set_new(o, "linear_per_token", ju64(pc->linear_active));
        json_object_set_new(o, "components", comps_json(pc->by_comp, &pc->mtp));
        json_object_set_new(o, "mtp_components", comps_json(pc->mtp_by_comp, NULL));
        json_object_set_new(root, "params", o);

        o = json_object();
        json_object_set_new(o, "computed",
                            json_pack("{s:o, s:o, s:o, s:o}", "total", ju64(pc->bytes), "by_dtype",
                                      by_dtype_json(pc->bytes_by_dtype), "total_with_mtp", ju64(pc->bytes + pc->mtp_bytes),
                                      "by_dtype_with_mtp", by_dtype_json(bytes_mtp)));
        if (R->ck) {
                const struct dsv_checkpoint *ck = R->ck;
                bool match = ck->tensor_bytes == R->ck_expected_total &&
                             memcmp(ck->bytes_by_dtype, R->ck_expected, sizeof(R->ck_expected)) == 0;
                json_object_set_new(o, "checkpoint",
                                    json_pack("{s:s, s:I, s:I, s:I, s:b, s:o, s:o, s:o, s:o, s:o, s:b}", "dir", ck->dir,
                                              "shards", (json_int_t)ck->n_shards, "tensors", (json_int_t)ck->n_tensors,
                                              "unknown_tensors", (json_int_t)ck->n_unknown, "has_mtp", ck->has_mtp,
                                              "file_bytes", ju64(R->ck_file_bytes), "total", ju64(ck->tensor_bytes),
                                              "by_dtype", by_dtype_json(ck->bytes_by_dtype), "expected_total",
                                              ju64(R->ck_expected_total), "expected_by_dtype", by_dtype_json(R->ck_expected),
                                              "matches_config", match));
        } else
                json_object_set_new(o, "checkpoint", json_null());
        json_object_set_new(root, "bytes", o);

        o = json_object();
        json_object_set_new(o, "per_entry_per_layer",
                            json_pack("{s:o, s:o, s:o, s:o}", "mla_absorbed", jnum(R->fc.mla_absorbed_per_entry),
                                      "mla_expanded", jnum(R->fc.mla_expanded_per_entry), "indexer",
                                      jnum(R->fc.indexer_per_entry), "indexer_weighting",
                                      jnum(R->fc.indexer_weighting_per_entry)));
        json_object_set_new(o, "linear_per_token", jnum(R->fc.linear_per_token));
        a = json_array();
        for (int i = 0; i < R->n_contexts; i++) {
                struct dsv_flops f;
                dsv_inspect_decode_flops(&R->fc, R->contexts[i], &f);
                json_array_append_new(a, flops_json("context", R->contexts[i], &f));
        }
        json_object_set_new(o, "decode", a);
        a = json_array();
        for (int i = 0; i < R->n_contexts; i++) {
                struct dsv_flops f;
                dsv_inspect_prefill_flops(&R->fc, R->contexts[i], &f);
                json_array_append_new(a, flops_json("tokens", R->contexts[i], &f));
        }
        json_object_set_new(o, "prefill", a);
        json_object_set_new(root, "flops", o);

        o = json_object();
        json_object_set_new(o, "page_tokens", json_integer(DSV_KV_PAGE_TOKENS));
        a = json_array();
        for (int l = 0; l < DSV_INSPECT_KV_MAX; l++) {
                const struct dsv_kv_costs *kv = &R->kv[l];
                json_t *ctx = json_array();
                for (int i = 0; i < R->n_contexts; i++)
                        json_array_append_new(ctx, json_pack("{s:I, s:o, s:o, s:o}", "context", (json_int_t)R->contexts[i],
                                                             "bytes", ju64(R->contexts[i] * kv->per_token), "bytes_with_mtp",
                                                             ju64(R->contexts[i] * kv->per_token_with_mtp), "bytes_allocated",
                                                             ju64(dsv_inspect_kv_allocated(kv, R->contexts[i]))));
                json_array_append_new(
                        a, json_pack("{s:s, s:b, s:o, s:o, s:o, s:i, s:i, s:o, s:o, s:o, s:o}", "name",
                                     dsv_inspect_kv_name(kv->layout), "engine", kv->engine, "mla_bytes_per_layer",
                                     ju64(kv->mla_per_layer), "indexer_bytes_per_layer", ju64(kv->indexer_per_layer),
                                     "bytes_per_token_per_layer", ju64(kv->per_layer), "layers", kv->layers, "mtp_layers",
                                     kv->mtp_layers, "bytes_per_token", ju64(kv->per_token), "bytes_per_token_with_mtp",
                                     ju64(kv->per_token_with_mtp), "page_bytes", ju64(kv->page_bytes), "contexts", ctx));
        }
        json_object_set_new(o, "layouts", a);
        json_object_set_new(root, "kv", o);

        o = json_object();
        json_object_set_new(o, "batch", json_integer(R->batch));
        json_object_set_new(o, "bandwidth_gb_per_s", R->bandwidth_gbps > 0 ? json_real(R->bandwidth_gbps) : json_null());
        json_object_set_new(o, "kv_layout", json_string(dsv_inspect_kv_name(DSV_INSPECT_KV_FP8)));
        a = json_array();
        for (int i = 0; i < R->n_contexts; i++) {
                struct dsv_decode_step d;
                dsv_inspect_decode_step(&R->cfg, pc, &R->kv[DSV_INSPECT_KV_FP8], R->contexts[i], R->batch,
                                        R->bandwidth_gbps * 1e9, &d);
                json_array_append_new(a, json_pack("{s:I, s:f, s:o, s:o, s:o, s:o}", "context", (json_int_t)d.context,
                                                   "experts_per_layer", d.experts_per_layer, "weight_bytes",
                                                   jnum(round(d.weight_bytes)), "kv_bytes", jnum(round(d.kv_bytes)), "bytes",
                                                   jnum(round(d.bytes)), "tokens_per_s",
                                                   R->bandwidth_gbps > 0 ? json_real(d.tokens_per_s) : json_null()));
        }
        json_object_set_new(o, "contexts", a);
        json_object_set_new(root, "decode_step", o);
        json_object_set_new(root, "plan", R->plan ? plan_json(R) : json_null());

        text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        json_decref(root);
        if (!text)
                return -ENOMEM;
        puts(text);
        free(text);
        return 0;
}

/* ------------------------------------------------------------------ table */

/* 671877944064 -> "671,877,944,064" */
static const char *commas(char *buf, size_t size, uint64_t v) {
        char tmp[32];
        int n = snprintf(tmp, sizeof(tmp), "%llu", (unsigned long long)v), j = 0;
        for (int i = 0; i < n && (size_t)j + 2 < size; i++) {
                if (i > 0 && (n - i) % 3 == 0)
                        buf[j++] = ',';
                buf[j++] = tmp[i];
        }
        buf[j] = 0;
        return buf;
}

/* 74952212480 -> "74.95 G" */
static const char *si(char *buf, size_t size, double v) {
        static const char *const u[] = {"", "K", "M", "G", "T", "P", "E", "Z"};
        size_t i = 0;
        while (fabs(v) >= 1000 && i + 1 < ARRAY_SIZE(u)) {
                v /= 1000;
                i++;
        }
        snprintf(buf, size, i ? "%.2f %s" : "%.0f %s", v, u[i]);
        return buf;
}

/* 6300499968 -> "5.87 GiB" */
static const char *iec(char *buf, size_t size, double v) {
        static const char *const u[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
        size_t i = 0;
        while (v >= 1024 && i + 1 < ARRAY_SIZE(u)) {
                v /= 1024;
                i++;
        }
        snprintf(buf, size, i ? "%.2f %s" : "%.0f %s", v, u[i]);
        return buf;
}

/* parameters: 671877944064 -> "671.88 B" */
static const char *billions(char *buf, size_t size, uint64_t v) {
        if (v >= 1000000000ull)
                snprintf(buf, size, "%.2f B", (double)v / 1e9);
        else
                snprintf(buf, size, "%.2f M", (double)v / 1e6);
        return buf;
}

#define C(v) commas((char[32]){0}, 32, (v))
#define SI(v) si((char[32]){0}, 32, (v))
#define IEC(v) iec((char[32]){0}, 32, (v))
#define BN(v) billions((char[32]){0}, 32, (v))

static void print_plan(const struct report *R);

static void print_flops_rows(const struct report *R, bool prefill) {
        printf("  %10s %11s %11s %11s %11s %11s %11s\n", prefill ? "tokens" : "context", "linear", "attn DSA", "attn dense",
               "indexer", "total DSA", "total dense");
        for (int i = 0; i < R->n_contexts; i++) {
                struct dsv_flops f;
                if (prefill)
                        dsv_inspect_prefill_flops(&R->fc, R->contexts[i], &f);
                else
                        dsv_inspect_decode_flops(&R->fc, R->contexts[i], &f);
                printf("  %10s %11s %11s %11s %11s %11s %11s%s\n", C(R->contexts[i]), SI(f.linear), SI(f.attention_dsa),
                       SI(f.attention_dense), SI(f.indexer), SI(f.total_dsa), SI(f.total_dense),
                       R->contexts[i] > (uint64_t)R->cfg.max_position_embeddings ? "  *" : "");
        }
}

static void print_table(const struct report *R) {
        const struct dsv_model_config *c = &R->cfg;
        const struct dsv_param_counts *pc = &R->pc;
        bool beyond = false;

        for (int i = 0; i < R->n_contexts; i++)
                beyond = beyond || R->contexts[i] > (uint64_t)c->max_position_embeddings;
        printf("Model       %s (%s)\n", R->path, R->kind);
        printf("            %s: %d layers (%d dense, %d MoE), hidden %d, %d heads, vocab %d\n",
               c->model_type[0] ? c->model_type : "deepseek_v32", c->num_hidden_layers,
               MIN(c->first_k_dense_replace, c->num_hidden_layers), pc->moe_layers, c->hidden_size, c->num_attention_heads,
               c->vocab_size);
        printf("            MoE %d routed top-%d + %d shared; indexer %d x %d, top-%d; MTP layers %d; %s weights\n\n",
               c->n_routed_experts, c->num_experts_per_tok, c->n_shared_experts, c->index_n_heads, c->index_head_dim,
               c->index_topk, c->num_nextn_predict_layers, c->fp8 ? "FP8" : "BF16");

        printf("Parameters\n");
        for (int k = 0; k < DSV_COMP_MAX; k++)
                printf("  %-22s %20s  %6.2f%%\n", dsv_component_name((enum dsv_component)k), C(pc->by_comp[k]),
                       pc->total ? 100.0 * (double)pc->by_comp[k] / (double)pc->total : 0.0);
        printf("  %-22s %20s  %s\n", "total (no MTP)", C(pc->total), BN(pc->total));
        printf("  %-22s %20s  %s  (eh_proj, norms, one block, embedding and head copies)\n", "mtp", C(pc->mtp),
               BN(pc->mtp));
        printf("  %-22s %20s  %s\n", "total with MTP", C(pc->total + pc->mtp), BN(pc->total + pc->mtp));
        printf("  %-22s %20s  %s  (without the embedding table)\n", "active per token", C(pc->active), BN(pc->active));
        printf("  %-22s %20s  %s\n", "active + embedding", C(pc->active_with_embedding),
               BN(pc->active_with_embedding));
        printf("  %-22s %20s  %s  (matrix weights a token is multiplied with)\n\n", "linear per token",
               C(pc->linear_active), BN(pc->linear_active));

        printf("Bytes on disk, computed from the config (linears %s + F32 128x128 block scales)\n",
               c->fp8 ? "F8_E4M3" : "BF16");
        printf("  %-10s %20s %20s\n", "dtype", "no MTP", "with MTP");
        for (int i = 0; i < DSV_DTYPE_MAX; i++) {
                const enum dsv_dtype t = dtype_order[i];
                if (pc->bytes_by_dtype[t] || pc->mtp_bytes_by_dtype[t])
                        printf("  %-10s %20s %20s\n", dsv_dtype_name((enum dsv_dtype)t), C(pc->bytes_by_dtype[t]),
                               C(pc->bytes_by_dtype[t] + pc->mtp_bytes_by_dtype[t]));
        }
        printf("  %-10s %20s %20s  (%s / %s)\n\n", "total", C(pc->bytes), C(pc->bytes + pc->mtp_bytes),
               IEC((double)pc->bytes), IEC((double)(pc->bytes + pc->mtp_bytes)));

        if (R->ck) {
                const struct dsv_checkpoint *ck = R->ck;
                printf("Checkpoint  %s: %zu shard(s), %s bytes in files, %zu tensors (%zu unknown), MTP layer %s\n",
                       ck->dir, ck->n_shards, C(R->ck_file_bytes), ck->n_tensors, ck->n_unknown,
                       ck->has_mtp ? "present" : "absent");
                printf("  %-10s %20s %20s\n", "dtype", "tensor bytes", "expected (config)");
                for (int i = 0; i < DSV_DTYPE_MAX; i++) {
                        const enum dsv_dtype t = dtype_order[i];
                        if (ck->bytes_by_dtype[t] || R->ck_expected[t])
                                printf("  %-10s %20s %20s%s\n", dsv_dtype_name((enum dsv_dtype)t), C(ck->bytes_by_dtype[t]),
                                       C(R->ck_expected[t]), ck->bytes_by_dtype[t] == R->ck_expected[t] ? "" : "  differs");
                }
                printf("  %-10s %20s %20s%s\n\n", "total", C(ck->tensor_bytes), C(R->ck_expected_total),
                       ck->tensor_bytes == R->ck_expected_total ? "" : "  differs");
        }

        printf("FLOPs per generated token (multiply-add = 2; per entry per layer: absorbed MLA %s, indexer %s + %s)\n",
               C((uint64_t)R->fc.mla_absorbed_per_entry), C((uint64_t)R->fc.indexer_per_entry),
               C((uint64_t)R->fc.indexer_weighting_per_entry));
        print_flops_rows(R, false);
        printf("\nPrefill FLOPs for N tokens (causal, expanded MLA %s per entry per layer, logits for the last token)\n",
               C((uint64_t)R->fc.mla_expanded_per_entry));
        print_flops_rows(R, true);
        if (beyond)
                printf("  * beyond max_position_embeddings (%d)\n", c->max_position_embeddings);

        printf("\nKV cache, bytes per token (per layer: MLA record + indexer key), pages of %d tokens\n",
               DSV_KV_PAGE_TOKENS);
        printf("  %-7s %23s %14s %14s", "layout", "per layer", "main layers", "with MTP");
        for (int i = 0; i < R->n_contexts; i++) {
                char h[40];
                snprintf(h, sizeof(h), "at %s", C(R->contexts[i]));
                printf(" %13s", h);
        }
        printf("\n");
        for (int l = 0; l < DSV_INSPECT_KV_MAX; l++) {
                const struct dsv_kv_costs *kv = &R->kv[l];
                char pl[64], nm[16];
                snprintf(pl, sizeof(pl), "%s + %s = %s", C(kv->mla_per_layer), C(kv->indexer_per_layer), C(kv->per_layer));
                snprintf(nm, sizeof(nm), "%s%s", dsv_inspect_kv_name(kv->layout), kv->engine ? "" : " *");
                printf("  %-7s %23s %14s %14s", nm, pl, C(kv->per_token), C(kv->per_token_with_mtp));
                for (int i = 0; i < R->n_contexts; i++)
                        printf(" %13s", IEC((double)(R->contexts[i] * kv->per_token)));
                printf("\n");
        }
        printf("  main layers: %d; with MTP: %d. At N: N x bytes/token over the main layers (the\n"
               "  engine's pool; it reserves whole pages). * comparison layout, not implemented by dsv32d.\n",
               R->kv[0].layers, R->kv[0].layers + R->kv[0].mtp_layers);

        printf("\nDecode step, batch %d, fp8 cache: bytes read per step", R->batch);
        if (R->bandwidth_gbps > 0)
                printf("; roofline at %g GB/s", R->bandwidth_gbps);
        printf("\n  %10s %14s %12s %12s %12s %12s\n", "context", "experts/layer", "weights", "KV", "total", "tokens/s");
        for (int i = 0; i < R->n_contexts; i++) {
                struct dsv_decode_step d;
                char tps[32] = "-";
                dsv_inspect_decode_step(c, pc, &R->kv[DSV_INSPECT_KV_FP8], R->contexts[i], R->batch, R->bandwidth_gbps * 1e9,
                                        &d);
                if (R->bandwidth_gbps > 0)
                        snprintf(tps, sizeof(tps), "%.1f", d.tokens_per_s);
                printf("  %10s %14.2f %12s %12s %12s %12s\n", C(d.context), d.experts_per_layer, IEC(d.weight_bytes),
                       IEC(d.kv_bytes), IEC(d.bytes), tps);
        }
        if (R->plan)
                print_plan(R);
}

static void print_plan(const struct report *R) {
        const struct dsv_plan *p = &R->pl;
        const struct dsv_plan_spec *sp = &p->spec;
        static const char *const what[DSV_PLAN_PART_MAX] = {
                "routed experts, expert-parallel", "MLA + indexer", "dense MLP + shared experts, tensor-parallel",
                "embedding + lm_head, tensor-parallel", "router, norms"};

        printf("\nPlan        %d x %s (%d node%s x %d GPU%s), layout %s: %d rank%s\n", p->ranks, sp->gpu.name, sp->nodes,
               sp->nodes > 1 ? "s" : "", sp->gpus_per_node, sp->gpus_per_node > 1 ? "s" : "", dsv_attn_parallel_name(sp->attn),
               p->ranks, p->ranks > 1 ? "s" : "");
        printf("  GPU memory %s, dsv32d takes %.0f%% less %s reserve: %s per rank\n", IEC((double)sp->gpu.mem_bytes),
               100.0 * sp->mem_fraction, IEC((double)sp->reserve_bytes), IEC((double)p->budget_bytes));
        printf("  weights per rank (the largest share):\n");
        for (int k = 0; k < DSV_PLAN_PART_MAX; k++) {
                char note[96] = "";
                if (k == DSV_PLAN_EXPERTS)
                        snprintf(note, sizeof(note), " (%d of %d experts x %d layers)", p->experts_per_rank, R->cfg.n_routed_experts,
                                 R->pc.moe_layers);
                else if (k == DSV_PLAN_DENSE || k == DSV_PLAN_VOCAB ||
                         (k == DSV_PLAN_ATTENTION && sp->attn == DSV_ATTN_TP))
                        snprintf(note, sizeof(note), " (1/%d of each split tensor)", sp->gpus_per_node);
                printf("    %-18s %12s  %s%s\n", dsv_plan_part_name((enum dsv_plan_part)k), IEC((double)p->part_bytes[k]),
                       what[k], note);
        }
        printf("    %-18s %12s\n", "total", IEC((double)p->weight_bytes));
        if (!p->fits) {
                printf("  does not fit: the weights alone need %s more than the %s a rank may use\n",
                       IEC((double)p->weight_bytes - (double)p->budget_bytes), IEC((double)p->budget_bytes));
                return;
        }
        printf("  KV pool per rank  %s = %s pages of %d tokens = %s tokens (%s B/token)\n", IEC((double)p->kv_pool_bytes),
               C(p->kv_pages), p->page_tokens, C(p->kv_tokens_rank), C(R->kv[DSV_INSPECT_KV_FP8].per_token));
        printf("  the group holds   %s tokens (%s)\n", C(p->kv_tokens_total),
               p->kv_copies == 1 ? "each rank its own sequences" : "each node's GPUs hold the same cache");
        printf("  sequences at once:");
        for (int i = 0; i < R->n_contexts; i++)
                printf("%s %s at %s tokens", i ? "," : "", C(dsv_plan_max_batch(p, R->contexts[i])), C(R->contexts[i]));
        printf("\n");
        if (sp->attn != DSV_ATTN_DP) {
                printf("  (decode-step traffic is modelled for ep,dp)\n");
                return;
        }
        printf("\nDecode step of the plan, batch %d over %d ranks (at most %d a rank), per rank:\n", R->batch, p->ranks,
               DIV_ROUND_UP(R->batch, p->ranks));
        printf("  %10s %11s %11s %11s %11s %11s %9s %9s %9s %11s %11s\n", "context", "ranks/tok", "a2a NVLink", "a2a net",
               "TP NVLink", "HBM", "t HBM", "t NVLink", "t net", "tok/s ser.", "tok/s ovl.");
        for (int i = 0; i < R->n_contexts; i++) {
                struct dsv_plan_step st;
                if (dsv_plan_decode_step(&R->cfg, &R->pc, &R->kv[DSV_INSPECT_KV_FP8], p, R->contexts[i], R->batch, &st) < 0)
                        continue;
                char rk[32];
                snprintf(rk, sizeof(rk), "%.2f+%.2f", st.nvlink_ranks_per_token, st.net_ranks_per_token);
                printf("  %10s %11s %11s %11s %11s %11s %7.3fms %7.3fms %7.3fms %11.0f %11.0f\n", C(st.context), rk,
                       IEC(st.a2a_nvlink_bytes), IEC(st.a2a_net_bytes), IEC(st.tp_nvlink_bytes),
                       IEC(st.hbm_weight_bytes + st.hbm_kv_bytes), st.t_hbm * 1e3, st.t_nvlink * 1e3, st.t_net * 1e3,
                       st.tokens_per_s_serial, st.tokens_per_s_overlap);
        }
        printf("  ranks/tok: other ranks a token goes to, same node + other nodes; a2a: dispatch + combine\n"
               "  bytes sent over all MoE layers; tok/s: the group's, links serial or perfectly overlapped.\n");
}

/* ------------------------------------------------------------------ input */

static int load_source(struct report *R, const char *preset, const char *path, struct dsv_error *err) {
        _cleanup_free_ char *cfgpath = NULL, *p1 = NULL, *p2 = NULL;
        struct stat st;
        int r;

        if (preset) {
                R->path = preset;
                R->kind = "preset";
                return dsv_model_config_preset(preset, &R->cfg, err);
        }
        R->path = path;
        if (stat(path, &st) < 0)
                return dsv_error_set(err, errno, "Cannot open %s: %s", path, strerror(errno));
        if (!S_ISDIR(st.st_mode)) {
                R->kind = "config";
                return dsv_model_config_load(path, &R->cfg, err);
        }
        if (asprintf(&cfgpath, "%s/config.json", path) < 0 || asprintf(&p1, "%s/model.safetensors.index.json", path) < 0 ||
            asprintf(&p2, "%s/model.safetensors", path) < 0)
                return dsv_error_set(err, ENOMEM, "Out of memory");
        if (access(p1, F_OK) < 0 && access(p2, F_OK) < 0) {
                /* a config-only directory (dsv32-mkmodel --config-only) */
                R->kind = "config";
                fprintf(stderr, "dsv32-inspect: %s holds no safetensors; reporting the config only\n", path);
                return dsv_model_config_load(cfgpath, &R->cfg, err);
        }
        R->kind = "checkpoint";
        r = dsv_checkpoint_open(path, &R->ck, err);
        if (r < 0)
                return r;
        R->cfg = R->ck->cfg;
        for (size_t i = 0; i < R->ck->n_shards; i++)
                R->ck_file_bytes += R->ck->shards[i].size;
        r = dsv_inspect_checkpoint_expected(R->ck, R->ck_expected, &R->ck_expected_total);
        if (r < 0)
                return dsv_error_set(err, -r, "Cannot compute the expected tensor sizes: %s", strerror(-r));
        return 0;
}

int main(int argc, char **argv) {
        static const struct option opts[] = {
                {"context", required_argument, NULL, 'c'},   {"batch", required_argument, NULL, 'b'},
                {"bandwidth", required_argument, NULL, 'w'}, {"preset", required_argument, NULL, 'p'},
                {"json", no_argument, NULL, 'j'},            {"help", no_argument, NULL, 'h'},
                {"plan", required_argument, NULL, 'P'},      {"parallel", required_argument, NULL, 'L'},
                {"mem-fraction", required_argument, NULL, 'F'}, {"reserve-gib", required_argument, NULL, 'G'},
                {"model", required_argument, NULL, 'm'},     {"version", no_argument, NULL, 'v'},
                {0},
        };
        const char *model = NULL;
        bool plan_opts = false;
        char perr[256];
        double dv;
        struct report R = {.batch = 1,
                           .plan_spec = {.attn = DSV_ATTN_DP, .mem_fraction = 0.92, .reserve_bytes = 6ull << 30}};
        struct dsv_error err = {{0}};
        const char *preset = NULL;
        bool json = false;
        long v;
        int c, r, ret = 1;

        argv[0] = (char *)"dsv32-inspect"; /* getopt's messages: not the build tree's libtool path */
        while ((c = getopt_long(argc, argv, "h", opts, NULL)) >= 0) {
                switch (c) {
                case 'm':
                        model = optarg;
                        break;
                case 'v':
                        printf("dsv32-inspect %s\n", PACKAGE_VERSION);
                        return 0;
                case 'c':
                        if (R.n_contexts == MAX_CONTEXTS) {
                                fprintf(stderr, "dsv32-inspect: at most %d --context values\n", MAX_CONTEXTS);
                                return 2;
                        }
                        if (parse_context(optarg, &R.contexts[R.n_contexts]) < 0) {
                                fprintf(stderr, "dsv32-inspect: --context needs 1..%llu tokens (suffix K or M allowed), not '%s'\n",
                                        MAX_CONTEXT, optarg);
                                return 2;
                        }
                        R.n_contexts++;
                        break;
                case 'b':
                        if (dsv_parse_int(optarg, 1, 1 << 20, &v) < 0) {
                                fprintf(stderr, "dsv32-inspect: --batch needs 1..%d, not '%s'\n", 1 << 20, optarg);
                                return 2;
                        }
                        R.batch = (int)v;
                        break;
                case 'w':
                        if (dsv_parse_double(optarg, &R.bandwidth_gbps) < 0 || !(R.bandwidth_gbps > 0) ||
                            !(R.bandwidth_gbps <= 1e9)) {
                                fprintf(stderr, "dsv32-inspect: --bandwidth needs a positive number of GB/s, not '%s'\n", optarg);
                                return 2;
                        }
                        break;
                case 'p':
                        preset = optarg;
                        break;
                case 'j':
                        json = true;
                        break;
                case 'P':
                        if (dsv_plan_parse(optarg, &R.plan_spec, perr, sizeof(perr)) < 0) {
                                fprintf(stderr, "dsv32-inspect: --plan: %s\n", perr);
                                return 2;
                        }
                        R.plan = true;
                        break;
                case 'L':
                        if (dsv_plan_parse_parallel(optarg, &R.plan_spec.attn) < 0) {
                                fprintf(stderr, "dsv32-inspect: --parallel takes ep,dp or ep,tp, not '%s'\n", optarg);
                                return 2;
                        }
                        plan_opts = true;
                        break;
                case 'F':
                        if (dsv_parse_double(optarg, &dv) < 0 || !(dv > 0 && dv <= 1)) {
                                fprintf(stderr, "dsv32-inspect: --mem-fraction needs a number in (0, 1], not '%s'\n", optarg);
                                return 2;
                        }
                        R.plan_spec.mem_fraction = dv;
                        plan_opts = true;
                        break;
                case 'G':
                        if (dsv_parse_double(optarg, &dv) < 0 || !(dv >= 0 && dv <= 4096)) {
                                fprintf(stderr, "dsv32-inspect: --reserve-gib needs 0..4096 GiB, not '%s'\n", optarg);
                                return 2;
                        }
                        R.plan_spec.reserve_bytes = (uint64_t)(dv * (double)(1ull << 30));
                        plan_opts = true;
                        break;
                case 'h':
                        help();
                        return 0;
                default:
                        fprintf(stderr, "Try 'dsv32-inspect --help'.\n");
                        return 2;
                }
        }
        if (plan_opts && !R.plan) {
                fprintf(stderr, "dsv32-inspect: --parallel, --mem-fraction and --reserve-gib go with --plan\n");
                return 2;
        }
        if ((preset || model ? 0 : 1) != argc - optind || (preset && model)) {
                fprintf(stderr,
                        "dsv32-inspect: give one CONFIG.json or CHECKPOINT_DIR (or --model DIR), or --preset NAME (try --help)\n");
                return 2;
        }
        if (R.n_contexts == 0) {
                R.contexts[R.n_contexts++] = 4096;
                R.contexts[R.n_contexts++] = 131072;
        }

        r = load_source(&R, preset, preset ? NULL : model ? model : argv[optind], &err);
        if (r < 0) {
                fprintf(stderr, "dsv32-inspect: %s\n", err.msg[0] ? err.msg : strerror(-r));
                goto out;
        }
        if ((r = dsv_inspect_params(&R.cfg, &R.pc)) < 0) {
                fprintf(stderr, "dsv32-inspect: cannot count the parameters: %s\n", strerror(-r));
                goto out;
        }
        dsv_inspect_flop_costs(&R.cfg, &R.pc, &R.fc);
        for (int l = 0; l < DSV_INSPECT_KV_MAX; l++)
                if ((r = dsv_inspect_kv_costs(&R.cfg, (enum dsv_inspect_kv)l, &R.kv[l])) < 0) {
                        fprintf(stderr, "dsv32-inspect: cannot compute the KV layout: %s\n", strerror(-r));
                        goto out;
                }
        if (R.plan && (r = dsv_plan_make(&R.cfg, &R.pc, &R.kv[DSV_INSPECT_KV_FP8], &R.plan_spec, &R.pl)) < 0) {
                const int ranks = R.plan_spec.nodes * R.plan_spec.gpus_per_node;
                if (r == -EINVAL && R.cfg.n_routed_experts < ranks)
                        fprintf(stderr, "dsv32-inspect: --plan: %d experts cannot be spread over %d ranks (each rank owns whole experts)\n",
                                R.cfg.n_routed_experts, ranks);
                else if (r == -EINVAL)
                        fprintf(stderr, "dsv32-inspect: --plan: %d attention heads do not split over %d GPUs (ep,tp)\n",
                                R.cfg.num_attention_heads, R.plan_spec.gpus_per_node);
                else
                        fprintf(stderr, "dsv32-inspect: --plan: %s\n", strerror(-r));
                goto out;
        }
        if (json) {
                if ((r = print_json(&R)) < 0) {
                        fprintf(stderr, "dsv32-inspect: cannot write JSON: %s\n", strerror(-r));
                        goto out;
                }
        } else
                print_table(&R);
        if (fflush(stdout) != 0 || ferror(stdout)) {
                fprintf(stderr, "dsv32-inspect: cannot write to stdout: %s\n", strerror(errno));
                goto out;
        }
        ret = 0;
out:
        dsv_checkpoint_free(R.ck);
        return ret;
}
