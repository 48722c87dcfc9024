/* The values of the fill_random op (kernels/backend.h, struct dsv_op_fill_random): random
 * tensor contents as a pure function of (key, element index), host and CUDA device code in one
 * place (DSV_HD, kernels/numerics.h), so the CPU backend and the CUDA plugin write the same
 * bits. Integer arithmetic and exact float products only: no rounding anywhere, nothing a
 * compiler could fuse or reorder.
 *
 * For element i (= row * cols + col, whatever the row stride), h = mix64(key ^ mix64(i)):
 *   F8_E4M3   code = s | e << 3 | m with s = (h & 1) << 7, e = 5 + (h >> 1 & 3), m = h >> 3 & 7:
 *             the codes of +-(1 + m/8) * 2^(e - 7), i.e. +-[0.25, 3.75], never 0, never NaN;
 *             their mean square is DSV_FILL_E4M3_MS (the block scale sets the magnitude)
 *   F32/BF16  v = (center + k) * 2^(exp2 - j), k = (h >> 32) % (2 spread + 1) - spread,
 *             j = (h >> 16 & 0xffff) % (exp2_spread + 1): at most 8 significant bits times a
 *             power of two, exact in bf16 and in f32 (dsv_fill_random_ok bounds the fields) */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "kernels/numerics.h"

/* The generator's version: change it with any change to the values below (a preset model's
 * fingerprint hashes it, so nodes of a group that would make other weights refuse each other). */
#define DSV_FILL_RANDOM_VERSION 1

/* mean of v^2 over the 64 equally likely e4m3 codes above: (1100 / 512) * (5.3125 / 4) */
#define DSV_FILL_E4M3_MS 2.853515625

DSV_HD uint64_t dsv_fill_hash(uint64_t key, uint64_t i) { return dsv_mix64(key ^ dsv_mix64(i)); }

DSV_HD uint8_t dsv_fill_e4m3(uint64_t key, uint64_t i) {
        const uint64_t h = dsv_fill_hash(key, i);
        return (uint8_t)(((h & 1) << 7) | ((5 + ((h >> 1) & 3)) << 3) | ((h >> 3) & 7));
}

/* 2^e as a float, e in [-126, 127] */
DSV_HD float dsv_fill_pow2(int e) { return dsv_bits_f32((uint32_t)(127 + e) << 23); }

DSV_HD float dsv_fill_value(uint64_t key, uint64_t i, int32_t center, int32_t spread, int32_t exp2, int32_t exp2_spread) {
        const uint64_t h = dsv_fill_hash(key, i);
        const int32_t k = (int32_t)((h >> 32) % (uint64_t)(2 * spread + 1)) - spread;
        const int32_t j = (int32_t)(((h >> 16) & 0xffff) % (uint64_t)(exp2_spread + 1));
        return (float)(center + k) * dsv_fill_pow2(exp2 - j);
}
