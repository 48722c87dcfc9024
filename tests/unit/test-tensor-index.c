/* The tensor name index (daemon/model/tensor_index.c) over the real 671B weight list
 * (~45,700 names with the MTP layer): every name is found at its own index, absent names
 * are not, and no lookup probes more than a few slots (the wiring used a linear search per
 * name: seconds at this size). */
#include "config.h"

#include "daemon/model/tensor_index.h"
#include "daemon/model_config.h"
#include "tests/check.h"

int main(void) {
        struct dsv_model_config cfg;
        struct dsv_error err = {{0}};
        struct dsv_tensor_spec *specs = NULL;
        struct dsv_tensor_index ix;
        size_t n = 0, wrong = 0;

        REQUIRE(dsv_model_config_preset("v32-layers:61", &cfg, &err) == 0, "%s", err.msg);
        REQUIRE(dsv_weight_specs(&cfg, true, &specs, &n) == 0, "specs");
        REQUIRE(dsv_tensor_index_build(&ix, specs, n) == 0, "build");
        CHECK(n > 45000, "%zu tensors", n);
        for (size_t i = 0; i < n; i++)
                wrong += dsv_tensor_index_find(&ix, specs[i].name) != (ptrdiff_t)i;
        CHECK(wrong == 0, "%zu of %zu names found at another index", wrong, n);
        CHECK(dsv_tensor_index_find(&ix, "model.layers.61.mlp.experts.256.up_proj.weight") == -1, "absent expert");
        CHECK(dsv_tensor_index_find(&ix, "") == -1 && dsv_tensor_index_find(&ix, "model.norm.weigh") == -1, "absent names");
        CHECK(ix.max_probe <= 64, "a lookup probes up to %zu slots", ix.max_probe);
        printf("%zu names, longest probe %zu\n", n, ix.max_probe);
        dsv_tensor_index_free(&ix);
        free(specs);
        return test_result("test-tensor-index");
}
