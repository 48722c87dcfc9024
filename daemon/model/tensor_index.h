/* Tensor names to their place in the weight spec list: an open-addressing hash table built
 * once at load (the 671B checkpoint has ~45,700 tensors; a linear search per lookup took
 * seconds). */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "daemon/weights_spec.h"

struct dsv_tensor_index {
        const struct dsv_tensor_spec *specs;
        uint32_t *slot; /* spec index + 1, 0 empty */
        size_t mask;
        size_t max_probe; /* the longest probe sequence a lookup of a present name takes */
};

int dsv_tensor_index_build(struct dsv_tensor_index *ix, const struct dsv_tensor_spec *specs, size_t n);
void dsv_tensor_index_free(struct dsv_tensor_index *ix);
/* The spec index of name, or -1. */
ptrdiff_t dsv_tensor_index_find(const struct dsv_tensor_index *ix, const char *name);
