/* Element types of tensors, as safetensors names them. */
#pragma once

#include <stddef.h>
#include <string.h>

enum dsv_dtype {
        DSV_F32,
        DSV_BF16,
        DSV_F16,
        DSV_F8_E4M3,
        DSV_I32,
        DSV_I64,
        DSV_U8,
        DSV_DTYPE_MAX,
};

static inline size_t dsv_dtype_size(enum dsv_dtype t) {
        static const size_t sz[DSV_DTYPE_MAX] = {4, 2, 2, 1, 4, 8, 1};
        return t < DSV_DTYPE_MAX ? sz[t] : 0;
}

static inline const char *dsv_dtype_name(enum dsv_dtype t) {
        static const char *const n[DSV_DTYPE_MAX] = {"F32", "BF16", "F16", "F8_E4M3", "I32", "I64", "U8"};
        return t < DSV_DTYPE_MAX ? n[t] : "?";
}

/* -1 when the safetensors dtype string is unknown. */
static inline int dsv_dtype_from_name(const char *s) {
        for (int t = 0; t < DSV_DTYPE_MAX; t++)
                if (strcmp(s, dsv_dtype_name((enum dsv_dtype)t)) == 0)
                        return t;
        return -1;
}
