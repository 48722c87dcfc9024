/* The plan of a multi-GPU deployment on paper (dsv32-inspect --plan): how the model's
 * weights split over the ranks of a layout, what is left for the KV pool on each GPU, how
 * many tokens of context that holds, and what one decode step moves through HBM, NVLink
 * and the network. Weight bytes come from the tensor table (dsv_weight_specs) through the
 * inspect library, never from a second formula.
 *
 * Layouts (the `--parallel` spelling of the issue):
 *   ep,dp   MoE expert-parallel over every rank of the group (each rank owns whole experts,
 *           a contiguous range of expert ids); attention data-parallel (each rank owns whole
 *           sequences and their KV pages: MLA and indexer weights on every rank, the latent
 *           cache never replicated); dense MLP, shared experts, embedding and lm_head
 *           tensor-parallel over the GPUs of a node (rows or columns split, in 128-row
 *           blocks for FP8); router and norms on every rank.
 *   ep,tp   the same, with attention tensor-parallel over the GPUs of a node: q_b_proj,
 *           kv_b_proj and o_proj split by heads, the rest of MLA and the indexer on every
 *           rank; every GPU of a node holds the whole latent cache of the node's sequences.
 * Decode-step traffic is modelled for ep,dp (see dsv_plan_decode_step). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "daemon/inspect.h"

struct dsv_gpu_spec {
        char name[16];
        uint64_t mem_bytes; /* per GPU, as the driver reports it (nvidia-smi memory.total) */
        double hbm_gbps;    /* memory bandwidth, GB/s (1e9 bytes) */
        double nvlink_gbps; /* NVLink, one direction, per GPU */
        double net_gbps;    /* network between nodes, one direction, per GPU */
};
/* H100 (SXM, 80 GB) or H200 (141 GB), case-insensitive; NULL when unknown. */
const struct dsv_gpu_spec *dsv_gpu_find(const char *name);

enum dsv_attn_parallel {
        DSV_ATTN_DP,
        DSV_ATTN_TP,
        DSV_ATTN_PARALLEL_MAX,
};
const char *dsv_attn_parallel_name(enum dsv_attn_parallel a);

struct dsv_plan_spec {
        int nodes, gpus_per_node;
        struct dsv_gpu_spec gpu;
        enum dsv_attn_parallel attn;
        double mem_fraction;    /* of each GPU's memory dsv32d may take */
        uint64_t reserve_bytes; /* of that, kept for activations, workspaces, NCCL, CUDA */
};

/* "8xH200" (one node), "2x8xH200" (nodes x GPUs x type); at most 8 GPUs a node, 1024 nodes.
 * Fills nodes, gpus_per_node and gpu; leaves the rest. */
int dsv_plan_parse(const char *text, struct dsv_plan_spec *ret, char *err, size_t errlen);
/* "ep,dp" or "ep,tp". */
int dsv_plan_parse_parallel(const char *text, enum dsv_attn_parallel *ret);

enum dsv_plan_part {
        DSV_PLAN_EXPERTS,   /* routed experts (expert-parallel) */
        DSV_PLAN_ATTENTION, /* MLA projections and the indexer */
        DSV_PLAN_DENSE,     /* dense MLP layers and shared experts (tensor-parallel) */
        DSV_PLAN_VOCAB,     /* embedding and lm_head (tensor-parallel over the vocabulary) */
        DSV_PLAN_OTHER,     /* router weights and biases, norms (every rank) */
        DSV_PLAN_PART_MAX,
};
const char *dsv_plan_part_name(enum dsv_plan_part p);

struct dsv_plan {
        struct dsv_plan_spec spec;
        int ranks;            /* nodes x gpus_per_node */
        int experts_per_rank; /* the most one rank owns: ceil(E / ranks) */
        uint64_t part_bytes[DSV_PLAN_PART_MAX]; /* per rank (the largest share) */
        uint64_t weight_bytes;
        uint64_t embed_bytes;     /* of the vocab part: the embedding share (read a row at a time) */
        uint64_t budget_bytes;    /* mem_bytes x mem_fraction - reserve_bytes */
        int64_t kv_pool_bytes;    /* budget - weights, whole pages; negative: short by that much */
        uint64_t kv_pages;        /* per rank */
        uint64_t kv_tokens_rank;  /* tokens one rank's pool holds */
        int kv_copies;            /* ranks holding each sequence's cache: 1 (dp), gpus_per_node (tp) */
        uint64_t kv_tokens_total; /* tokens the whole group holds: ranks / copies x per rank */
        uint64_t page_bytes;
        int page_tokens;
        bool fits;
};

/* The plan of the main model (no MTP layer) with an FP8 KV cache (kv from
 * dsv_inspect_kv_costs(..., DSV_INSPECT_KV_FP8)). -EINVAL when the layout cannot split the
 * model (experts fewer than ranks, heads or vocabulary not divisible by the node's GPUs). */
int dsv_plan_make(const struct dsv_model_config *cfg, const struct dsv_param_counts *pc, const struct dsv_kv_costs *kv,
                  const struct dsv_plan_spec *spec, struct dsv_plan *ret);
/* Sequences of `context` tokens the group holds at once (whole pages each). */
uint64_t dsv_plan_max_batch(const struct dsv_plan *p, uint64_t context);

/* One decode step of `batch` sequences (the whole group's) at context N, layout ep,dp:
 *   each rank decodes ceil(batch / ranks) sequences (the busiest rank is reported);
 *   routing: a token picks topk_group of n_group groups, then num_experts_per_tok experts
 *   among them, uniformly (the model's group-limited routing with uniform scores); a
 *   rank receives a token when it owns one of its experts;
 *   dispatch sends each token once to every other rank that owns one of its experts:
 *   hidden FP8 + one fp32 scale per 128 + top-k ids and weights (8 B each); combine brings
 *   back one bf16 hidden vector per such rank; over NVLink within a node, over the network
 *   between nodes, per MoE layer;
 *   tensor-parallel dense MLP and shared experts: an all-gather of the node's tokens
 *   (bf16) before and a reduce-scatter after, per layer: 2 (G-1) b hidden x 2 bytes;
 *   HBM: every weight the rank holds except its routed experts and its embedding rows,
 *   plus the experts of its own that the whole batch touches, E/R (1 - (1 - k/E)^batch)
 *   per MoE layer, plus b embedding rows, plus the KV reads of its b sequences
 *   (min(N, index_topk) MLA records + N indexer keys per layer);
 *   times = bytes / bandwidth per link; tokens/s for the group = batch / time, with the
 *   three times added (no overlap) and with the longest alone (perfect overlap). */
struct dsv_plan_step {
        uint64_t context;
        int batch;
        int batch_per_rank;
        double ranks_per_token;      /* ranks owning at least one of a token's experts */
        double nvlink_ranks_per_token, net_ranks_per_token; /* of them, other ranks of the node / of other nodes */
        double dispatch_bytes, combine_bytes; /* per token per destination rank */
        double a2a_nvlink_bytes, a2a_net_bytes; /* per rank per step, sent: dispatch + combine, all MoE layers */
        double tp_nvlink_bytes;                 /* per rank per step: tensor-parallel layers */
        double experts_touched;                 /* per rank per MoE layer */
        double hbm_weight_bytes, hbm_kv_bytes;  /* per rank per step */
        double t_hbm, t_nvlink, t_net;          /* seconds */
        double tokens_per_s_serial, tokens_per_s_overlap; /* the group's */
};
int dsv_plan_decode_step(const struct dsv_model_config *cfg, const struct dsv_param_counts *pc, const struct dsv_kv_costs *kv,
                         const struct dsv_plan *p, uint64_t context, int batch, struct dsv_plan_step *ret);
