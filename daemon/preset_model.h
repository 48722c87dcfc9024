/* Models built from a preset with no checkpoint on disk: `--model preset:tiny`,
 * `--model v32-layers:8`. The preset's config (daemon/model_config.c), a checkpoint
 * description without shards (every tensor's name, dtype and shape as dsv32-mkmodel would
 * write them: FP8 e4m3 linears with F32 power-of-two 128x128 block scales, BF16 embeddings,
 * norms, router, indexer weights and lm_head, F32 correction bias), and the weights made
 * where they live by the backend's fill_random op (kernels/backend.h): no file is read and
 * the host never holds a weight, so the full 671B widths can be measured on one GPU.
 * The values are random (not dsv32-mkmodel's conditioned ones): scaled so that activations
 * stay finite and routing spreads over the experts; there is no tokenizer (token ids only).
 *
 * The name rule: "preset:NAME" always names a preset; a bare preset name (tiny, small, m474,
 * v32, v32-layers:N) names one only when no file or directory of that name exists, so a
 * checkpoint directory called "tiny" is still loaded from disk. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/checkpoint.h"
#include "daemon/loader.h"
#include "kernels/backend.h"

#define DSV_PRESET_PREFIX "preset:"

/* Whether model names a preset (the rule above); *preset: the preset's name inside model. */
bool dsv_preset_model_name(const char *model, const char **preset);

/* The checkpoint description of a preset (n_shards 0, dir "preset:NAME", no MTP layer). */
int dsv_checkpoint_new_preset(const char *preset, struct dsv_checkpoint **ret, struct dsv_error *err);
bool dsv_checkpoint_is_preset(const struct dsv_checkpoint *ck);

/* Fills each item's tensor where it lives with the backend's fill_random op (the values are
 * a function of the tensor's name only); stats as the loader's: bytes_tensors, elapsed_ns. */
int dsv_preset_fill(const struct dsv_checkpoint *ck, const struct dsv_load_item *items, size_t n, struct dsv_backend *be,
                    struct dsv_load_stats *stats, struct dsv_error *err);
