/* CUDA backend vs CPU reference: writes into the paged KV pool (FP8 records of 656 bytes +
 * 132-byte indexer keys at the 671B sizes, and the f32 layout) at scattered slots of a
 * non-contiguous page table, compared byte for byte over the whole pool, then reads back
 * (kv_gather) through a block-table row. Also a layer other than 0 and an odd geometry. */
#include "config.h"

#include "tests/gpu/gputest.h"

static struct gt g;

static void test_kv(enum dsv_kv_format fmt, int n_layers, int layer, int kv_lora, int rope, int index_dim, int n_pages, int64_t T,
                    int n_gather) {
        struct dsv_kv_layout L;
        struct gbuf pool, slots, lat, kpe, key, pages, glat, gkpe;
        char what[160];
        dsv_kv_layout_make(&L, fmt, n_layers, kv_lora, rope, index_dim, 64);
        const size_t pool_bytes = (size_t)n_pages * (size_t)n_layers * L.layer_page_bytes;
        /* a shuffled page table: position p lives in page perm[p / 64] */
        int32_t *perm = malloc((size_t)n_pages * 4), *sl = malloc((size_t)T * 4);
        float *lv = malloc((size_t)(T * kv_lora) * 4), *pv = malloc((size_t)(T * rope) * 4), *kv = malloc((size_t)(T * index_dim) * 4);
        uint8_t *p0 = malloc(pool_bytes), *p1 = malloc(pool_bytes);
        REQUIRE(perm && sl && lv && pv && kv && p0 && p1, "oom");
        for (int i = 0; i < n_pages; i++)
                perm[i] = i;
        for (int i = n_pages - 1; i > 0; i--) {
                int j = (int)(gt_u01(30, (uint64_t)i) * (i + 1));
                int32_t tmp = perm[i];
                perm[i] = perm[j];
                perm[j] = tmp;
        }
        /* token t is position t of the sequence: slot = perm[t / 64] * 64 + t % 64 */
        for (int64_t t = 0; t < T; t++)
                sl[t] = perm[t / 64] * 64 + (int32_t)(t % 64);
        gt_fill_randn(lv, (size_t)(T * kv_lora), 1.0f, 31);
        gt_fill_randn(pv, (size_t)(T * rope), 1.0f, 32);
        gt_fill_randn(kv, (size_t)(T * index_dim), 1.0f, 33);
        for (int64_t i = 0; i < T * kv_lora; i++) /* per-block magnitudes */
                lv[i] *= ldexpf(1.0f, (int)(i / 128 % 9) - 4);
        if (T > 2) {
                lv[kv_lora + 3] = NAN; /* token 1's first latent block becomes NaN codes */
                kv[2 * index_dim] = INFINITY;
        }
        gb_new(&g, &pool, DSV_U8, 1, (int64_t)pool_bytes, 0);
        gb_new(&g, &slots, DSV_I32, 1, T, 0);
        gb_new(&g, &lat, DSV_F32, T, kv_lora, 3);
        gb_new(&g, &kpe, DSV_F32, T, rope, 0);
        gb_new(&g, &key, DSV_F32, T, index_dim, 1);
        memset(p0, 0, pool_bytes);
        gb_set(&g, &pool, p0);
        gb_set(&g, &slots, sl);
        gb_set(&g, &lat, lv);
        gb_set(&g, &kpe, pv);
        gb_set(&g, &key, kv);
        struct dsv_op ops[2];
        for (int s = 0; s < 2; s++) {
                ops[s] = (struct dsv_op){.type = DSV_OP_KV_STORE, .faithful = fmt == DSV_KV_FP8};
                ops[s].kv_store = (struct dsv_op_kv_store){.kv = {&L, pool.t[s].data, layer}, .slots = &slots.t[s],
                                                           .latent = &lat.t[s], .k_pe = &kpe.t[s], .idx_key = &key.t[s]};
        }
        snprintf(what, sizeof(what), "kv_store %s layers=%d layer=%d lora=%d rope=%d idx=%d T=%lld", fmt == DSV_KV_FP8 ? "fp8" : "f32",
                 n_layers, layer, kv_lora, rope, index_dim, (long long)T);
        if (gt_run(&g, ops, what) == 0) {
                gb_get(&g, &pool, 0, p0, what);
                gb_get(&g, &pool, 1, p1, what);
                gt_cmp_bytes(what, p0, p1, pool_bytes, 0);
        }

        /* read positions [0, n_gather) back through the page table */
        gb_new(&g, &pages, DSV_I32, 1, n_pages, 0);
        gb_new(&g, &glat, DSV_F32, n_gather, kv_lora, 2);
        gb_new(&g, &gkpe, DSV_F32, n_gather, rope, 0);
        gb_set(&g, &pages, perm);
        gb_poison(&g, &glat);
        gb_poison(&g, &gkpe);
        for (int s = 0; s < 2; s++) {
                ops[s] = (struct dsv_op){.type = DSV_OP_KV_GATHER, .faithful = fmt == DSV_KV_FP8};
                ops[s].kv_gather = (struct dsv_op_kv_gather){.kv = {&L, pool.t[s].data, layer}, .latent = &glat.t[s],
                                                             .k_pe = &gkpe.t[s], .pages = &pages.t[s], .n = n_gather};
        }
        snprintf(what, sizeof(what), "kv_gather %s n=%d", fmt == DSV_KV_FP8 ? "fp8" : "f32", n_gather);
        if (gt_run(&g, ops, what) == 0) {
                float *a = malloc((size_t)n_gather * (size_t)kv_lora * 4), *b = malloc((size_t)n_gather * (size_t)kv_lora * 4);
                REQUIRE(a && b, "oom");
                gb_get(&g, &glat, 0, a, what);
                gb_get(&g, &glat, 1, b, what);
                gt_cmp_f32(what, a, b, (size_t)n_gather * (size_t)kv_lora, (struct gt_tol){0, 0, 0, 0});
                gb_get(&g, &gkpe, 0, a, what);
                gb_get(&g, &gkpe, 1, b, what);
                gt_cmp_f32("  (k_pe)", a, b, (size_t)n_gather * (size_t)rope, (struct gt_tol){0, 0, 0, 0});
                free(a);
                free(b);
        }
        gb_free(&g, &pool);
        gb_free(&g, &slots);
        gb_free(&g, &lat);
        gb_free(&g, &kpe);
        gb_free(&g, &key);
        gb_free(&g, &pages);
        gb_free(&g, &glat);
        gb_free(&g, &gkpe);
        free(perm);
        free(sl);
        free(lv);
        free(pv);
        free(kv);
        free(p0);
        free(p1);
}

GT_MAIN(kv) {
        int r = gt_open(&g, "test-gpu-kv");
        if (r)
                return r;
        struct dsv_kv_layout L;
        dsv_kv_layout_make(&L, DSV_KV_FP8, 61, 512, 64, 128, 64);
        CHECK(L.mla_rec == 656 && L.idx_rec + L.idx_scale_rec == 132, "671B record sizes: %zu + %zu", L.mla_rec,
                 L.idx_rec + L.idx_scale_rec);
        test_kv(DSV_KV_FP8, 3, 1, 512, 64, 128, 40, 2000, 2000);
        test_kv(DSV_KV_FP8, 1, 0, 512, 64, 128, 2, 1, 1);
        test_kv(DSV_KV_F32, 2, 1, 512, 64, 128, 8, 300, 260);
        test_kv(DSV_KV_FP8, 2, 0, 200, 8, 48, 4, 130, 100); /* partial blocks */
        gt_close(&g);
        return test_result("test-gpu-kv");
}
