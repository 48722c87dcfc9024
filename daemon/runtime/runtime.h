/* The runtime: what runs the model, shared by dsv32d's engine and dsv32-run. It opens the
 * backend by name (cpu, cuda, auto: cuda when the plugin starts a GPU and runs every op of
 * the model, else cpu, with the reason kept), loads the model onto it, and allocates the
 * paged KV pool in the backend's memory, sized in bytes or in tokens. One runtime is one
 * rank (the multi-GPU layouts give each rank its own). Not thread-safe: one thread drives it. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "daemon/kv_cache.h"
#include "daemon/model/model.h"
#include "daemon/runtime/sampler.h"
#include "kernels/backend_plugin.h"

struct dsv_runtime_opts {
        const char *model_dir;
        const char *backend; /* "cpu" (NULL), "cuda" or "auto" */
        struct dsv_backend_opts where;
        enum dsv_numerics numerics;
        /* the KV pool: kv_bytes of backend memory, or (kv_bytes 0) pages for kv_tokens tokens, or
         * (both 0) sized from the backend's memory: pages for kv_auto_tokens tokens at most (0:
         * twice the model's max_position_embeddings), and
         * at most a quarter of the host's available memory (CPU backend) or 90% of the device
         * memory left after the weights (a GPU backend) */
        uint64_t kv_bytes;
        int64_t kv_tokens;
        int64_t kv_auto_tokens;
        /* pools sized automatically from the same host memory (the ranks of one process: each
         * takes 1/kv_share of the quarter); 0 or 1: this one alone */
        int kv_share;
        struct dsv_load_opts load; /* progress callback, I/O mode */
        enum dsv_mtp_mode mtp;     /* load the MTP layer (its KV records then join the pool's pages) */
        /* DSV_MTP_AUTO does not load the layer on the CPU backend (dsv32d: there a speculative
         * step costs more than the tokens it saves; dsv32-run loads it everywhere) */
        bool mtp_auto_not_cpu;
        bool graphs_off; /* dsv_model_opts.graphs_off (--cuda-graphs=no) */
        /* expert-parallel group this runtime is a rank of (dsv_model_opts.ep; CPU backend), or
         * NULL: one rank */
        struct dsv_comm *ep;
        bool tp; /* ep is also the tensor-parallel group (dsv_model_opts.tp: the ep,tp layout) */
        bool dp; /* attention data-parallel over ep (dsv_model_opts.dp): each rank its own sequences */
        int max_pass_tokens; /* dsv_model_opts.max_pass_tokens (0: sized from the weights) */
};

struct dsv_runtime {
        struct dsv_backend *be;
        struct dsv_model *model;
        struct dsv_kv_pool *kv;
        const struct dsv_model_config *cfg;
        enum dsv_numerics numerics;
        uint64_t kv_page_bytes;    /* one page of every layer */
        uint64_t kv_bytes_per_token;
        char kv_note[512];         /* how the KV pool was sized, for the log */
        char backend_note[1024];   /* auto: why the GPU backend was not used ("" when it was) */
        uint64_t fingerprint;      /* the checkpoint (config and tensor index) and the numerics */
        char mtp_note[256];        /* why the MTP layer is not loaded ("" when it is) */
};

/* err says what failed (the backend, the checkpoint, the KV size that does not fit). */
int dsv_runtime_open(const struct dsv_runtime_opts *o, struct dsv_runtime **ret, struct dsv_error *err);
void dsv_runtime_free(struct dsv_runtime *rt);

/* One forward pass over the runtime's KV pool (dsv_model_forward; with hidden, also every
 * token's final hidden state: dsv_model_forward_hidden). A failure's message ends with the
 * backend's own (the CUDA error's name and text, and the op or copy that saw it). When the
 * device is lost (dsv_runtime_device_error): -ENOTRECOVERABLE and "the forward pass failed on
 * the device: cudaErrorIllegalAddress (...) in op linear (...)"; every later pass fails the
 * same way, and the caller must exit. */
int dsv_runtime_forward(struct dsv_runtime *rt, const struct dsv_batch *b, float *logits, struct dsv_error *err);
int dsv_runtime_forward_hidden(struct dsv_runtime *rt, const struct dsv_batch *b, float *logits, float *hidden,
                               struct dsv_error *err);
/* The MTP layer over the runtime's KV pool (dsv_model_mtp_forward; failures as above). */
int dsv_runtime_mtp(struct dsv_runtime *rt, const struct dsv_batch *b, const float *hidden_in, float *logits,
                    float *hidden_out, struct dsv_error *err);

/* "" while the backend's device works, else the fault that left it unusable for this process
 * (dsv_backend_device_error): nothing more may run on it. */
const char *dsv_runtime_device_error(const struct dsv_runtime *rt);
