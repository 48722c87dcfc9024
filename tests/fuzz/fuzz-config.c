/* libFuzzer target: config.json parsing and validation. */
#include "config.h"

#include "daemon/model_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        struct dsv_model_config c;
        struct dsv_error err;
        if (dsv_model_config_parse((const char *)data, size, &c, &err) == 0) {
                /* an accepted config has consistent derived values */
                float inv[2048];
                if (c.qk_rope_head_dim / 2 <= 2048)
                        dsv_cfg_rope_inv_freq(&c, inv);
                if (c.n_routed_experts % c.n_group || c.topk_group > c.n_group)
                        __builtin_trap();
        }
        return 0;
}
