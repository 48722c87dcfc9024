/* The accounting for the published 671B DeepSeek-V3.2 config against numbers computed by
 * hand from the published shapes (not from weights_spec): parameters per component, active
 * parameters, FLOPs per token, KV bytes; and the engine's own KV layout and pool for the
 * same config report the same bytes per token as inspect. */
#include "tests/inspect/inspect-test.h"

#include "daemon/inspect.h"
#include "daemon/kv_cache.h"

#define GIB (1024.0 * 1024.0 * 1024.0)

/* The published shapes: dim 7168, 61 layers (3 dense), 128 heads, q_lora 1536, kv_lora 512,
 * nope 128, rope 64, v 128, inter 18432, moe_inter 2048, 256 experts top-8 + 1 shared, vocab
 * 129280, indexer 64 x 128, index_topk 2048. [rows, cols] of the FP8 linears. */
struct mat {
        uint64_t rows, cols, count;
};
static const struct mat v32_linears[] = {
        {1536, 7168, 61},         /* q_a_proj */
        {128 * 192, 1536, 61},    /* q_b_proj: 128 heads x (128 nope + 64 rope) */
        {512 + 64, 7168, 61},     /* kv_a_proj_with_mqa */
        {128 * 256, 512, 61},     /* kv_b_proj: 128 heads x (128 nope + 128 v) */
        {7168, 128 * 128, 61},    /* o_proj */
        {64 * 128, 1536, 61},     /* indexer.wq_b */
        {128, 7168, 61},          /* indexer.wk */
        {18432, 7168, 2 * 3},     /* dense gate_proj, up_proj */
        {7168, 18432, 3},         /* dense down_proj */
        {2048, 7168, 2 * 257 * 58}, /* expert (256 routed + 1 shared) gate_proj, up_proj */
        {7168, 2048, 257 * 58},   /* expert down_proj */
};

int main(void) {
        struct dsv_model_config cfg;
        struct dsv_param_counts pc;
        struct dsv_flop_costs fc;
        struct dsv_kv_costs kv[DSV_INSPECT_KV_MAX];
        struct dsv_flops f;
        struct dsv_decode_step d;
        int r;

        dsv_model_config_v32(&cfg);
        r = dsv_inspect_params(&cfg, &pc);
        CHECK(r == 0, "dsv_inspect_params: %s", strerror(-r));

        /* ---- parameters, each component summed by hand over 61 layers (58 MoE) */
        const uint64_t embed = 129280ull * 7168;                                       /* 926,679,040 */
        /* q_a, q_b, kv_a, kv_b, o: 187,105,280 */
        const uint64_t attn = 1536ull * 7168 + 24576ull * 1536 + 576ull * 7168 + 32768ull * 512 + 7168ull * 16384;
        const uint64_t indexer = 8192ull * 1536 + 128ull * 7168 + 2 * 128 + 64ull * 7168; /* 13,959,424 */
        const uint64_t norms_layer = 7168 * 2 + 1536 + 512;                            /* 16,384 */
        const uint64_t expert = 3ull * 2048 * 7168;                                    /* 44,040,192 */
        const uint64_t gate = 256ull * 7168 + 256;                                     /* 1,835,264 */
        CHECK_U64(attn, 187105280);
        CHECK_U64(indexer, 13959424);
        CHECK_U64(pc.by_comp[DSV_COMP_EMBED], embed);
        CHECK_U64(pc.by_comp[DSV_COMP_HEAD], embed);
        CHECK_U64(pc.by_comp[DSV_COMP_ATTN], 61 * attn);         /* 11,413,422,080 */
        CHECK_U64(pc.by_comp[DSV_COMP_INDEXER], 61 * indexer);   /* 851,524,864 */
        CHECK_U64(pc.by_comp[DSV_COMP_DENSE_MLP], 3 * 3ull * 18432 * 7168); /* 1,189,085,184 */
        CHECK_U64(pc.by_comp[DSV_COMP_ROUTED], 58 * 256 * expert); /* 653,908,770,816 */
        CHECK_U64(pc.by_comp[DSV_COMP_SHARED], 58 * expert);     /* 2,554,331,136 */
        CHECK_U64(pc.by_comp[DSV_COMP_GATE], 58 * gate);         /* 106,445,312 */
        CHECK_U64(pc.by_comp[DSV_COMP_NORM], 61 * norms_layer + 7168); /* 1,006,592 */
        /* published: 671.9B without the MTP layer */
        CHECK_U64(pc.total, 671877944064ull);
        CHECK_NEAR(pc.total / 1e9, 671.9, 0.0001);
        /* MTP: eh_proj [7168, 14336], enorm + hnorm + shared_head.norm, one MoE block, and the
         * copies of the embedding and head: 13.48B, 685.4B in all (the model card's "685B") */
        const uint64_t mtp = 7168ull * 14336 + 3 * 7168 + attn + indexer + norms_layer + 257 * expert + gate + 2 * embed;
        CHECK_U64(pc.mtp, mtp);
        CHECK_U64(pc.mtp, 13477385728ull);
        CHECK_NEAR((pc.total + pc.mtp) / 1e9, 685.4, 0.0001);

        /* active per token without the embedding: all but 248 of 256 routed experts per MoE
         * layer. Published: about 37.5B. */
        const uint64_t active = pc.total - embed - 58 * 248 * expert;
        CHECK_U64(pc.active, active);
        CHECK_U64(pc.active, 37477143296ull);
        CHECK_NEAR(pc.active / 1e9, 37.5, 0.002);
        CHECK_U64(pc.active_with_embedding, active + embed);

        /* ---- FLOPs. Linear: 2 FLOPs per weight of every matrix a token is multiplied with:
         * the active parameters minus the 1-D ones (norms, k_norm weight+bias, the gate's
         * correction bias). Published: 75 GFLOP/token. */
        const uint64_t linear = active - (61 * norms_layer + 7168) - 61 * 256 - 58 * 256; /* 37,476,106,240 */
        CHECK_U64(pc.linear_active, linear);
        dsv_inspect_flop_costs(&cfg, &pc, &fc);
        CHECK_U64(fc.linear_per_token, 2 * linear); /* 74,952,212,480 */
        CHECK_NEAR(fc.linear_per_token / 1e9, 75.0, 0.001);
        /* absorbed MLA per attended entry per layer: 2*128*(512+64) + 2*128*512 */
        CHECK_U64(fc.mla_absorbed_per_entry, 278528);
        CHECK_U64(fc.mla_expanded_per_entry, 2 * 128 * 192 + 2 * 128 * 128); /* 81,920 */
        /* indexer per context token per layer: 64 heads x 128-dim dot products */
        CHECK_U64(fc.indexer_per_entry, 16384);
        CHECK_U64(fc.indexer_weighting_per_entry, 128);

        dsv_inspect_decode_flops(&fc, 4096, &f);
        CHECK_U64(f.linear, 74952212480ull);
        CHECK_U64(f.attention_dsa, 61ull * 278528 * 2048);  /* 34,795,945,984 */
        CHECK_U64(f.attention_dense, 61ull * 278528 * 4096);
        CHECK_U64(f.indexer, 61ull * (16384 + 128) * 4096); /* 4,125,622,272 */
        CHECK_U64(f.total_dsa, 74952212480ull + 34795945984ull + 4125622272ull);
        CHECK_U64(f.total_dense, 74952212480ull + 61ull * 278528 * 4096);
        dsv_inspect_decode_flops(&fc, 131072, &f);
        CHECK_U64(f.attention_dsa, 61ull * 278528 * 2048);  /* DSA: the same past index_topk */
        CHECK_U64(f.indexer, 61ull * 16512 * 131072);       /* 132,019,912,704 */
        CHECK_U64(f.total_dsa, 241768071168ull);
        dsv_inspect_decode_flops(&fc, 1000, &f);            /* below index_topk: dense */
        CHECK_U64(f.attention_dsa, f.attention_dense);

        /* prefill: sum_{t<N} min(t+1, 2048) entries per layer, expanded MLA, head once */
        dsv_inspect_prefill_flops(&fc, 4096, &f);
        CHECK_U64(f.attention_dsa, 61ull * 81920 * (2048ull * 2049 / 2 + 2048ull * 2048));
        CHECK_U64(f.attention_dense, 61ull * 81920 * (4096ull * 4097 / 2));
        CHECK_U64(f.indexer, 61ull * 16512 * (4096ull * 4097 / 2));
        CHECK_U64(f.linear, 4096 * (2 * linear - 2 * embed) + 2 * embed);
        dsv_inspect_prefill_flops(&fc, 1, &f);
        CHECK_U64(f.linear, 2 * linear);

        /* ---- KV cache: 656 + 132 = 788 B per layer, 48,068 B/token over 61 layers */
        for (int l = 0; l < DSV_INSPECT_KV_MAX; l++)
                CHECK(dsv_inspect_kv_costs(&cfg, (enum dsv_inspect_kv)l, &kv[l]) == 0, "kv layout %d", l);
        CHECK_U64(kv[DSV_INSPECT_KV_FP8].mla_per_layer, 512 + 4 * 4 + 2 * 64); /* 656 */
        CHECK_U64(kv[DSV_INSPECT_KV_FP8].indexer_per_layer, 128 + 4);         /* 132 */
        CHECK_U64(kv[DSV_INSPECT_KV_FP8].per_token, 48068);
        CHECK_U64(kv[DSV_INSPECT_KV_FP8].per_token_with_mtp, 62 * 788);       /* 48,856 */
        /* published: 5.87 GiB at 131,072 tokens, 46.9 GiB at 1,048,576 */
        CHECK_U64(131072ull * kv[DSV_INSPECT_KV_FP8].per_token, 6300368896ull);
        CHECK_NEAR(131072.0 * kv[DSV_INSPECT_KV_FP8].per_token / GIB, 5.87, 0.001);
        CHECK_NEAR(1048576.0 * kv[DSV_INSPECT_KV_FP8].per_token / GIB, 46.9, 0.001);
        CHECK_U64(kv[DSV_INSPECT_KV_F32].per_token, 61 * (4 * 576 + 4 * 128));  /* 171,776 */
        CHECK_U64(kv[DSV_INSPECT_KV_BF16].per_token, 61 * (2 * 576 + 2 * 128)); /* 85,888 */
        CHECK(kv[DSV_INSPECT_KV_FP8].engine && kv[DSV_INSPECT_KV_F32].engine && !kv[DSV_INSPECT_KV_BF16].engine,
              "engine flags");
        /* 64 x 788 per layer page is 256-aligned already: no padding at 671B sizes */
        CHECK_U64(kv[DSV_INSPECT_KV_FP8].page_bytes, 64 * 48068);
        CHECK_U64(dsv_inspect_kv_allocated(&kv[DSV_INSPECT_KV_FP8], 65), 2 * 64 * 48068);

        /* the engine's layout and pool for this config */
        for (int l = 0; l < 2; l++) {
                enum dsv_kv_format fmt = l == 0 ? DSV_KV_FP8 : DSV_KV_F32;
                struct dsv_kv_layout L;
                struct dsv_backend *be = NULL;
                struct dsv_kv_pool *pool = NULL;
                dsv_kv_layout_init(&L, &cfg, fmt, DSV_KV_PAGE_TOKENS);
                CHECK_U64(dsv_kv_bytes_per_token(&L), kv[l].per_token);
                r = dsv_backend_cpu_new(1, &be);
                CHECK(r == 0, "cpu backend: %s", strerror(-r));
                if (r < 0)
                        continue;
                r = dsv_kv_pool_new(be, &cfg, fmt, 2, &pool);
                CHECK(r == 0, "kv pool: %s", strerror(-r));
                if (r == 0) {
                        CHECK_U64(dsv_kv_bytes_per_token(&pool->layout), kv[l].per_token);
                        CHECK_U64(pool->bytes, 2 * kv[l].page_bytes);
                }
                dsv_kv_pool_free(pool);
                dsv_backend_free(be);
        }

        /* ---- bytes on disk: FP8 weights + one F32 scale per 128x128 block */
        uint64_t fp8 = 0, scales = 0;
        for (size_t i = 0; i < ARRAY_SIZE(v32_linears); i++) {
                const struct mat *m = &v32_linears[i];
                fp8 += m->rows * m->cols * m->count;
                scales += DIV_ROUND_UP(m->rows, 128) * DIV_ROUND_UP(m->cols, 128) * m->count;
        }
        CHECK_U64(fp8, 669889134592ull);
        CHECK_U64(scales, 40888496);
        CHECK_U64(pc.bytes_by_dtype[DSV_F8_E4M3], fp8);
        CHECK_U64(pc.bytes_by_dtype[DSV_F32], 4 * scales + 4 * 256 * 58);
        /* BF16: embedding, head, norms, k_norm, weights_proj, gate.weight */
        CHECK_U64(pc.bytes_by_dtype[DSV_BF16],
                  2 * (2 * embed + 61 * norms_layer + 7168 + 61 * 256 + 61 * 64ull * 7168 + 58 * 256ull * 7168));
        CHECK_U64(pc.bytes, pc.bytes_by_dtype[DSV_F8_E4M3] + pc.bytes_by_dtype[DSV_BF16] + pc.bytes_by_dtype[DSV_F32]);
        CHECK_U64(pc.bytes_routed_expert, expert + 4 * (16 * 56 * 2 + 56 * 16));

        /* ---- decode step at batch 1, context 4096: 8 experts per MoE layer, one embedding
         * row, and per layer 2048 MLA records + 4096 indexer keys */
        dsv_inspect_decode_step(&cfg, &pc, &kv[DSV_INSPECT_KV_FP8], 4096, 1, 4800e9, &d);
        CHECK_NEAR(d.experts_per_layer, 8.0, 1e-12);
        CHECK_NEAR(d.weight_bytes, (double)(pc.bytes_per_step_fixed + 58 * 8 * pc.bytes_routed_expert + 2 * 7168), 1e-12);
        CHECK_U64(d.kv_bytes, 61ull * (2048 * 656 + 4096 * 132));
        CHECK_NEAR(d.tokens_per_s, 4800e9 / d.bytes, 1e-12);
        dsv_inspect_decode_step(&cfg, &pc, &kv[DSV_INSPECT_KV_FP8], 4096, 1024, 4800e9, &d);
        CHECK_NEAR(d.experts_per_layer, 256.0, 1e-9); /* every expert is touched */
        CHECK_NEAR(d.kv_bytes, 1024.0 * 61 * (2048 * 656 + 4096 * 132), 1e-12);

        if (test_failures)
                fprintf(stderr, "%d check(s) failed\n", test_failures);
        return test_failures ? 1 : 0;
}
