/* Tensor name index (see tensor_index.h). */
#include "config.h"

#include "daemon/model/tensor_index.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static uint64_t name_hash(const char *s) {
        uint64_t h = 1469598103934665603ull; /* FNV-1a */
        for (; *s; s++)
                h = (h ^ (uint8_t)*s) * 1099511628211ull;
        return h;
}

int dsv_tensor_index_build(struct dsv_tensor_index *ix, const struct dsv_tensor_spec *specs, size_t n) {
        size_t cap = 16;
        while (cap < 2 * n)
                cap *= 2;
        memset(ix, 0, sizeof(*ix));
        ix->slot = calloc(cap, sizeof(uint32_t));
        if (!ix->slot)
                return -ENOMEM;
        ix->specs = specs;
        ix->mask = cap - 1;
        for (size_t i = 0; i < n; i++) {
                size_t h = name_hash(specs[i].name) & ix->mask, probe = 1;
                while (ix->slot[h]) {
                        h = (h + 1) & ix->mask;
                        probe++;
                }
                ix->slot[h] = (uint32_t)i + 1;
                if (probe > ix->max_probe)
                        ix->max_probe = probe;
        }
        return 0;
}

void dsv_tensor_index_free(struct dsv_tensor_index *ix) {
        free(ix->slot);
        memset(ix, 0, sizeof(*ix));
}

ptrdiff_t dsv_tensor_index_find(const struct dsv_tensor_index *ix, const char *name) {
        for (size_t h = name_hash(name) & ix->mask; ix->slot[h]; h = (h + 1) & ix->mask)
                if (strcmp(ix->specs[ix->slot[h] - 1].name, name) == 0)
                        return (ptrdiff_t)ix->slot[h] - 1;
        return -1;
}
