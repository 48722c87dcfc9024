/* libFuzzer target: the safetensors header parser. Input: 8 bytes of data size (little
 * endian, capped) followed by the header JSON. */
#include "config.h"

#include "daemon/checkpoint.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        struct dsv_ckpt_tensor *t = NULL;
        size_t n = 0, cap = 0;
        struct dsv_error err;
        uint64_t data_size = 0;
        if (size < 8)
                return 0;
        for (int i = 7; i >= 0; i--)
                data_size = (data_size << 8) | data[i];
        data_size &= (1ull << 40) - 1;
        if (dsv_safetensors_parse_header("fuzz.safetensors", (const char *)data + 8, size - 8, data_size, 0, &t, &n, &cap,
                                         &err) == 0) {
                /* accepted headers are consistent */
                for (size_t i = 0; i < n; i++)
                        if (t[i].offset + t[i].nbytes > data_size || !t[i].name)
                                __builtin_trap();
        }
        dsv_ckpt_tensors_free(t, n);
        return 0;
}
