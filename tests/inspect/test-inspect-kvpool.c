/* The engine's KV pool for a loaded model reports the bytes per token dsv32-inspect prints:
 * loads the tiny checkpoint (written by the built dsv32-mkmodel into the build tree) on the
 * CPU backend in both numerics modes, allocates the pool the way dsv32-run does, and compares
 * dsv_kv_bytes_per_token() and the pool's size with the inspect library and with the tool's
 * --json output for the same directory. */
#include "tests/inspect/inspect-test.h"

#include "daemon/inspect.h"
#include "daemon/model/model.h"

#define N_PAGES 5

int main(void) {
        _cleanup_free_ char *scratch = test_scratch("test-inspect-kvpool"), *dir = NULL, *out = NULL, *err = NULL,
                            *mkmodel = NULL, *tool = NULL, *text = NULL;
        struct dsv_backend *be = NULL;
        json_t *j = NULL;
        int st, r;

        if (!scratch || asprintf(&dir, "%s/tiny", scratch) < 0 || asprintf(&out, "%s/out", scratch) < 0 ||
            asprintf(&err, "%s/err", scratch) < 0 || asprintf(&mkmodel, "%s/dsv32-mkmodel", test_builddir()) < 0 ||
            asprintf(&tool, "%s/dsv32-inspect", test_builddir()) < 0) {
                fprintf(stderr, "cannot set up the scratch directory\n");
                return 1;
        }
        {
                char *argv[] = {mkmodel, "--preset", "tiny", "--out", dir, NULL};
                st = run_capture(argv, out, err);
                if (st != 0) {
                        fprintf(stderr, "dsv32-mkmodel exited %d: %s\n", st, (text = slurp(err)));
                        return 1;
                }
        }
        {
                char *argv[] = {tool, "--json", dir, NULL};
                st = run_capture(argv, out, err);
                text = slurp(out);
                CHECK(st == 0, "dsv32-inspect exited %d", st);
                j = json_loads(text, 0, NULL);
                CHECK(j != NULL, "dsv32-inspect output is not JSON");
        }
        if ((r = dsv_backend_cpu_new(1, &be)) < 0) {
                fprintf(stderr, "cannot create the CPU backend: %s\n", strerror(-r));
                return 1;
        }

        for (int n = 0; n < DSV_NUMERICS_MAX; n++) {
                struct dsv_model_opts mo = {.numerics = (enum dsv_numerics)n};
                struct dsv_error e = {{0}};
                struct dsv_model *m = NULL;
                struct dsv_kv_pool *pool = NULL;
                struct dsv_kv_costs kv;
                enum dsv_kv_format fmt = dsv_numerics_kv_format(mo.numerics);
                enum dsv_inspect_kv layout = fmt == DSV_KV_FP8 ? DSV_INSPECT_KV_FP8 : DSV_INSPECT_KV_F32;
                char path[64];

                r = dsv_model_load(dir, be, &mo, &m, &e);
                CHECK(r == 0, "dsv_model_load(%s, %s): %s", dir, dsv_numerics_name(mo.numerics), e.msg);
                if (r < 0)
                        continue;
                const struct dsv_model_config *cfg = dsv_model_get_config(m);
                r = dsv_kv_pool_new(be, cfg, fmt, N_PAGES, &pool);
                CHECK(r == 0, "dsv_kv_pool_new: %s", strerror(-r));
                CHECK(dsv_inspect_kv_costs(cfg, layout, &kv) == 0, "dsv_inspect_kv_costs");
                if (pool) {
                        uint64_t bpt = dsv_kv_bytes_per_token(&pool->layout);
                        fprintf(stderr, "%s numerics, %s cache: pool %llu B/token, %zu B for %d pages; inspect %llu B/token\n",
                                dsv_numerics_name(mo.numerics), dsv_inspect_kv_name(layout), (unsigned long long)bpt,
                                pool->bytes, N_PAGES, (unsigned long long)kv.per_token);
                        CHECK_U64(bpt, kv.per_token);
                        CHECK_U64(pool->bytes, N_PAGES * kv.page_bytes);
                        CHECK_U64(pool->layout.n_layers, kv.layers);
                        CHECK_U64(pool->layout.mla_rec, kv.mla_per_layer);
                        CHECK_U64(pool->layout.idx_rec + pool->layout.idx_scale_rec, kv.indexer_per_layer);
                        /* what the tool printed for the directory */
                        snprintf(path, sizeof(path), "kv.layouts[%d].bytes_per_token", (int)layout);
                        if (j) {
                                CHECK(strcmp(json_string_value(jget(j, "kv.layouts[0].name")), "fp8") == 0, "layout order");
                                CHECK_JSON_U64(j, path, bpt);
                        }
                }
                dsv_kv_pool_free(pool);
                dsv_model_free(m);
        }
        /* tiny sizes by hand: MLA 128 e4m3 + 1 scale + 32 bf16 rope = 196, indexer 128 + 4 */
        if (j) {
                CHECK_JSON_U64(j, "kv.layouts[0].bytes_per_token", 3 * (196 + 132));
                CHECK_JSON_U64(j, "kv.layouts[1].bytes_per_token", 3 * (4 * (128 + 32) + 4 * 128));
        }
        json_decref(j);
        dsv_backend_free(be);
        if (test_failures) {
                fprintf(stderr, "%d check(s) failed; files kept in %s\n", test_failures, scratch);
                return 1;
        }
        rm_rf(scratch);
        return 0;
}
