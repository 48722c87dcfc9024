/* What the parts of the model share (daemon/model/): the loaded weights of each layer, the
 * activation workspace, the plan of one forward pass and the helpers that issue backend ops.
 * Only the files of daemon/model/ include this; everyone else uses model.h.
 *
 *   load.c       checkpoint -> backend memory, tensor wiring, the load-time probe
 *   plan.c       a batch checked and laid out in rows (pure; unit-tested)
 *   workspace.c  activation buffers carved in fixed size buckets (stable addresses)
 *   ops.c        one backend op per call, errors named
 *   attention.c  MLA + lightning indexer of one layer
 *   ffn.c        dense SwiGLU MLP and the MoE of one layer
 *   head.c       final norm, lm_head, logits back in batch order
 *   forward.c    the forward pass: a page of layer calls
 *   mtp.c        the multi-token-prediction layer's forward pass (speculative drafts)
 *   graphs.c     decode steps captured once per batch-size bucket and replayed (CUDA graphs)
 *   tp.c         tensor parallelism: each rank's share of the split tensors, their collectives */
#pragma once

#include "daemon/model/model.h"
#include "daemon/model/plan.h"
#include "daemon/util.h"
#include "daemon/weights_spec.h"

/* A rank's share of a tensor split by tensor parallelism (tp.c): dim -1 whole; 0 rows, 1
 * columns [lo, hi) of the checkpoint's tensor, held in the frame [a0, a1) (the 128-block
 * boundaries around the share for FP8, else the share itself; zeros outside the share). */
struct dsv_tp_slice {
        int dim;
        int64_t lo, hi, a0, a1;
};

struct layer {
        const struct dsv_tensor *attn_norm, *ffn_norm;
        const struct dsv_tensor *wq_a, *q_norm, *wq_b, *wkv_a, *kv_norm, *wkv_b, *wo;
        const struct dsv_tensor *iwq_b, *iwk, *ik_norm_w, *ik_norm_b, *iw_proj;
        const struct dsv_tensor *w1, *w2, *w3; /* dense MLP or shared experts */
        const struct dsv_tensor *gate_w, *gate_bias;
        /* routed experts: each one's tensors (NULL: another rank's), and the expert table the
         * MoE ops read them through (kernels/backend.h), in backend memory, built at load */
        struct expert_weights {
                const struct dsv_tensor *w1, *w2, *w3; /* gate_proj, down_proj, up_proj */
        } *experts;
        struct dsv_tensor expert_table; /* U8 [n_routed_experts, sizeof(struct dsv_moe_expert)] */
        enum dsv_dtype expert_type;     /* the type of the present experts' weights */
        /* what absorbed attention reads of kv_b_proj (dsv_wkv_b_decode): the weight itself where
         * the backend's MLA decode takes its form (wkv_b_direct; the CPU backend reads FP8
         * codes with their block scales), else a dequantized table, F32 [H*(nope+v), kv_lora]
         * or BF16 (load.c wkv_b_deq_type) */
        bool wkv_b_direct;
        struct dsv_tensor wkv_b_deq;
        /* tensor parallelism (tp.c): the shares of q_b_proj's rows, kv_b_proj's rows (also
         * wkv_b_deq's) and o_proj's columns this rank holds; dim -1 (whole) otherwise */
        struct dsv_tp_slice q_sl, kv_sl, o_sl;
        bool moe;
};

/* The sizes a workspace is carved for. */
struct ws_dims {
        int T;         /* rows (tokens) */
        bool eh;       /* the MTP layer's eh_proj input [T, 2 * hidden] is carved */
        int C;         /* largest context of a prefill chunk */
        int K;         /* index list width */
        int ctx;       /* largest context of any token (score rows for hooks) */
        int n_out;     /* rows whose logits are wanted */
        int n_seqs, max_pages;
};

/* Activation workspace of one forward call. Tensors have the call's row counts; their
 * addresses depend only on the bucket (dims rounded up, workspace.c), so consecutive
 * decode steps of similar batches reuse the same addresses. */
struct ws {
        void *buf;
        size_t bytes;
        struct ws_dims d;      /* this call */
        struct ws_dims bucket; /* what the addresses were carved for */
        struct dsv_tensor ids, pos, tok_seq, slots, block_table, out_rows;
        struct dsv_tensor res, h, branch, q_a, qr, q, kv_a, c, k_pe, iq, ik, iw, iq8, iqs, idx, o;
        struct dsv_tensor lat, kpe, kvb;
        struct dsv_tensor g1, g3, gs, shared, moe_out, moe_ids, moe_w;
        /* routed experts: slot rows [T*k, hidden], the dispatch (counts [1,E], offsets [1,E+1],
         * perm [1,T*k]) and, under expert parallelism, the ids of this rank's slots [T,k] */
        struct dsv_tensor moe_y, moe_cnt, moe_off, moe_perm, moe_ids_mine;
        struct dsv_tensor hout, logits;
        struct dsv_tensor iscores, rscores, forced_ids;
        struct dsv_tensor eh; /* MTP: [enorm(embed(next)) | hnorm(hidden)] (empty unless d.eh) */
};

/* One batch-size bucket of graphs.c: what its graph was recorded against (the workspace's
 * buffer and bucket, the KV pool), and the graph once captured. */
struct graph_slot {
        bool seen;  /* used once with this key: the next use captures */
        bool replayed; /* the graph was launched again after its capture (logged once) */
        void *graph;
        void *ws_buf;
        struct ws_dims ws_bucket;
        int K;
        void *kv_base;
        int kv_page_tokens, kv_layers;
        size_t kv_layer_page_bytes;
};
#define DSV_GRAPH_BUCKETS 10 /* rows 1, 2, 4, ..., 512 */
#define DSV_GRAPH_MAX_ROWS (1 << (DSV_GRAPH_BUCKETS - 1))

struct graphs {
        bool off;    /* --cuda-graphs=no */
        bool broken; /* a capture failed: eager from then on (logged once) */
        int oom_fails; /* captures in a row that ran out of device memory (graphs.c) */
        bool probing; /* the load-time probe runs eagerly and counts nothing */
        struct graph_slot slot[DSV_GRAPH_BUCKETS];
        struct dsv_graph_stats st;
};

/* The MTP layer's own tensors; its block is layers[num_hidden_layers]. */
struct mtp_weights {
        const struct dsv_tensor *embed, *enorm, *hnorm, *eh_proj, *head_norm, *head;
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
        struct layer *layers; /* n_layers: the main layers, then the MTP layer's block when loaded */
        int n_layers;
        bool has_mtp;
        struct mtp_weights mtp;
        struct dsv_tensor inv_freq;
        void *inv_freq_buf;
        float softmax_scale;
        struct dsv_load_stats load_stats;
        struct dsv_model_hooks hooks;
        struct ws ws;
        struct dsv_comm *ep;   /* expert-parallel group, or NULL (model.h) */
        bool tp;               /* ep is also the tensor-parallel group (ep,tp; tp.c) */
        bool dp;               /* attention data-parallel: rows dispatched by all-to-all (ffn.c) */
        struct dp_buf {        /* its host scratch (ffn.c), grown on demand */
                void *p;
                size_t bytes;
        } dp_host;
        struct fetch_buf {     /* host staging of dsv_fwd_fetch (ops.c), grown on demand: */
                void *p;       /* the backend's alloc_host memory (pinned) with async  */
                size_t bytes;  /* downloads, else malloc'ed; ev: the wait of a fetch */
                bool host;
                void *ev;
        } fetch;
        int max_pass_tokens;   /* tokens in one pass (passes.c); 0 until first asked for */
        struct dsv_model_pass_stats pass_stats;
        struct graphs graphs;  /* graphs.c */
};

/* One forward call in progress. */
struct fwd {
        struct dsv_model *m;
        struct dsv_kv_pool *kv;
        const struct dsv_batch *b;
        const struct dsv_batch_plan *p;
        struct dsv_error *err;
        bool f; /* faithful */
        int T;         /* rows: the batch's tokens, plus padding rows up to the graph bucket */
        int n_dec;     /* rows [0, n_dec) take the decode path (padding rows included) */
        bool graph;    /* this pass runs through graphs.c (a decode step of a graph bucket) */
        float *hidden; /* optional: the final normed rows, batch order (hidden_size floats each) */
};

/* workspace.c */
int dsv_ws_prepare(struct dsv_model *m, const struct ws_dims *d);
/* The smallest workspace a forward call carves (one token, the smallest bucket): what the
 * load's fit check counts before anything is allocated. */
size_t dsv_ws_min_bytes(struct dsv_model *m);
/* The workspace of one pass of n prefill tokens of one sequence (context n, one logits row):
 * what the pass cap (passes.c) weighs. */
size_t dsv_ws_bytes_for(struct dsv_model *m, int n);
void dsv_ws_free(struct dsv_model *m);

/* ops.c: each returns 0 or a negative errno with err naming the backend and the op */
struct dsv_tensor dsv_view_rows(const struct dsv_tensor *t, int64_t r0, int64_t n);
/* The kv_b the absorbed attention's MLA decode op reads for layer l: wkv_b_deq, or kv_b_proj
 * itself when l->wkv_b_direct, cut to this rank's heads' rows; an FP8 weight's scales cut
 * to them go into *scale_view, which must outlive the result. -EINVAL when an FP8 share does
 * not start on a 128-row block (its scales would not line up: load.c then makes a table). */
int dsv_wkv_b_decode(const struct layer *l, bool direct, struct dsv_tensor *ret, struct dsv_tensor *scale_view);
struct dsv_tensor dsv_view_cols(const struct dsv_tensor *t, int64_t c0, int64_t n);
int dsv_fwd_run(struct fwd *F, struct dsv_op *op);
int dsv_fwd_linear(struct fwd *F, struct dsv_tensor *out, const struct dsv_tensor *x, const struct dsv_tensor *w);
int dsv_fwd_rmsnorm(struct fwd *F, struct dsv_tensor *out, struct dsv_tensor *res, const struct dsv_tensor *x,
                    const struct dsv_tensor *w);
int dsv_fwd_rope(struct fwd *F, struct dsv_tensor *x, int n_heads, int stride, int offset, bool interleaved);
int dsv_fwd_download(struct fwd *F, void *dst, const void *src, size_t n);
/* n bytes of backend memory at src, for the host to read: *ret is src itself on a backend
 * whose memory is the host's (no copy), else the model's host staging after one download
 * (queued and waited for with an event when the backend downloads asynchronously into
 * pinned memory, else a plain download). Valid until the next fetch or forward call. */
int dsv_fwd_fetch(struct fwd *F, const void *src, size_t n, const void **ret);
void dsv_fwd_fetch_free(struct dsv_model *m);
int dsv_fwd_upload(struct fwd *F, void *dst, const void *src, size_t n);

/* attention.c, ffn.c, head.c */
int dsv_fwd_attention(struct fwd *F, int layer);
int dsv_fwd_mlp(struct fwd *F, struct dsv_tensor *out, const struct dsv_tensor *w1, const struct dsv_tensor *w2,
                const struct dsv_tensor *w3);
int dsv_fwd_moe(struct fwd *F, int layer);
/* Data-parallel attention: a pass with no rows of this rank's own, which still takes part in
 * every dispatch of the layers from first to last (the main model's, or the MTP layer's). */
int dsv_fwd_dp_idle(struct dsv_model *m, int first, int last, struct dsv_error *err);
/* What the ranks agree on before a collective call (dsv_fwd_dp_agree): the call's kind, or
 * DP_FOLLOW from a rank that only follows the others (dsv_model_dp_follow). */
enum dp_kind {
        DP_FOLLOW,
        DP_FORWARD,
        DP_MTP,
        DP_END,
};
/* The number of passes every rank of the group runs: the largest of the ranks' n, for a call
 * of this kind; -EPROTO when the ranks that are not following make different calls. */
int dsv_fwd_dp_agree(struct dsv_model *m, enum dp_kind kind, int n, enum dp_kind *agreed, struct dsv_error *err);
bool dsv_model_owns_expert(const struct dsv_model *m, int e);
int dsv_fwd_head(struct fwd *F, const struct dsv_tensor *head, float *logits);

/* tp.c (model.h dsv_model_opts.tp): spec s's share on this rank (as
 * loaded with dtype type); the vocabulary rows of this rank, and the share every rank's
 * gather slot holds (Vp); x's F32 rows (F->T, contiguous) summed over the group in place
 * and, in faithful numerics, rounded to bf16; the wanted rows' logits (part: n_out rows of
 * vocab_size floats, this rank's columns filled) gathered into logits in batch order. */
void dsv_tp_slice_of(const struct dsv_model *m, const struct dsv_tensor_spec *s, enum dsv_dtype type,
                     struct dsv_tp_slice *sl);
void dsv_tp_vocab_share(const struct dsv_model *m, int64_t *lo, int64_t *hi, int64_t *per_rank);
int dsv_tp_all_reduce(struct fwd *F, struct dsv_tensor *x, const char *what);
int dsv_tp_gather_logits(struct fwd *F, const float *part, int n_out, float *logits);

/* graphs.c: the rows a pass of n decode-only tokens is padded to (n itself when it does not
 * go through a graph: then F->graph stays false), the pass's layers through the bucket's
 * graph (recorded on the bucket's second use, replayed after; eager on the first use and
 * after a failed capture), and freeing every graph. */
int dsv_graph_rows(struct fwd *F, bool eh);
int dsv_graph_run(struct fwd *F, int (*layers)(struct fwd *F));
void dsv_graphs_free(struct dsv_model *m);

/* forward.c: what the main and the MTP forward passes share */
int dsv_fwd_begin(struct fwd *F, struct dsv_batch_plan *plan, bool eh);
int dsv_fwd_block(struct fwd *F, int layer, bool first);
int dsv_fwd_download_hidden(struct fwd *F, float *hidden);
/* One pass over the whole batch (dsv_model_forward_hidden without the cap: passes.c). */
int dsv_fwd_pass(struct dsv_model *m, struct dsv_kv_pool *kv, const struct dsv_batch *b, float *logits, float *hidden,
                 struct dsv_error *err);
