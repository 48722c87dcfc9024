/* The model fingerprint the cluster bootstrap compares between nodes: 32 bytes (SHA-256)
 * that change when the checkpoint a node would serve is not the same. */
#pragma once

#include <stdint.h>

#include "daemon/cluster/wire.h"
#include "daemon/util.h"

/* Fingerprint of the checkpoint directory dir (validated as dsv32d validates it):
 *   SHA-256 over config.json's bytes, then for each shard in order: its file name, size,
 *   safetensors header (the 8-byte length and the JSON), and three 64 KiB samples of its
 *   tensor data (start, middle, end).
 * Headers carry every tensor's name, dtype, shape and offsets, so another layout, size or
 * quantisation differs; the samples catch other weights in the same layout without
 * reading hundreds of GB. Errors name the file.
 * A preset model (dir "preset:NAME", daemon/preset_model.h: weights made by fill_random from
 * each tensor's name): SHA-256 over the preset's name, its tensor table (names, dtypes,
 * shapes) and DSV_FILL_RANDOM_VERSION. */
int dsv_model_fingerprint(const char *dir, uint8_t out[DSV_FINGERPRINT_BYTES], struct dsv_error *err);

/* "1a2b3c4d5e6f7a8b" (the first 8 bytes in hex) for logs; buf of at least 17 bytes. */
const char *dsv_fingerprint_short(const uint8_t fp[DSV_FINGERPRINT_BYTES], char *buf);
