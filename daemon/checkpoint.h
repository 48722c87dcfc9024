/* A Hugging Face checkpoint directory: config.json, model.safetensors.index.json (or a single
 * model.safetensors) and its shards. Opening parses and validates every header against the
 * config before anything is loaded: dtypes, shapes, offsets inside the file, no overlaps,
 * every required tensor present. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "daemon/model_config.h"
#include "daemon/util.h"
#include "daemon/weights_spec.h"
#include "kernels/dtype.h"

#define DSV_ST_MAX_HEADER (100u << 20) /* safetensors' own cap */
#define DSV_ST_MAX_TENSORS_PER_SHARD 1000000u

struct dsv_ckpt_tensor {
        char *name;
        enum dsv_dtype dtype;
        int ndim;
        int64_t shape[4];
        uint64_t offset; /* absolute offset in the shard file */
        uint64_t nbytes;
        int shard;
};

struct dsv_ckpt_shard {
        char *file; /* name inside the directory */
        char *path;
        uint64_t size;
        uint64_t data_start; /* 8 + header length */
        size_t n_tensors;
};

struct dsv_checkpoint {
        char *dir;
        struct dsv_model_config cfg;
        struct dsv_ckpt_shard *shards;
        size_t n_shards;
        struct dsv_ckpt_tensor *tensors; /* sorted by name */
        size_t n_tensors;
        bool has_mtp;
        size_t n_unknown;      /* tensors not used by dsv32d (warned about) */
        uint64_t tensor_bytes; /* sum over all tensors */
        uint64_t bytes_by_dtype[DSV_DTYPE_MAX];
};

/* Opens and validates dir. Errors name the file, the tensor, and what was expected and found. */
int dsv_checkpoint_open(const char *dir, struct dsv_checkpoint **ret, struct dsv_error *err);
void dsv_checkpoint_free(struct dsv_checkpoint *ck);
const struct dsv_ckpt_tensor *dsv_checkpoint_find(const struct dsv_checkpoint *ck, const char *name);

/* Parses one safetensors header (the JSON after the 8-byte length). data_size is the number
 * of bytes after the header. Appends tensors with offsets relative to the data start.
 * Exposed for the fuzzer. */
int dsv_safetensors_parse_header(const char *file, const char *json, size_t len, uint64_t data_size, int shard,
                                 struct dsv_ckpt_tensor **tensors, size_t *n, size_t *cap, struct dsv_error *err);
void dsv_ckpt_tensors_free(struct dsv_ckpt_tensor *t, size_t n);

/* Checks one expected tensor (and its weight_scale_inv for FP8 linears). */
int dsv_checkpoint_check_spec(const struct dsv_checkpoint *ck, const struct dsv_tensor_spec *spec,
                              const struct dsv_ckpt_tensor **ret_t, const struct dsv_ckpt_tensor **ret_scale,
                              struct dsv_error *err);
