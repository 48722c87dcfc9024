/* bench-mla-decode: the CPU backend's absorbed MLA decode (one token, every head) reading
 * kv_b_proj as the FP8 codes with their block scales (what the loader passes since issue 16's
 * memory target: no second copy) against the same op on the BF16 table the loader kept before
 * (half the bytes per weight more, the same values), in the same run, alternating, best of
 * --reps, at 1 thread and at --threads. One "step" runs the op once on each of --layers
 * layers' own weights (small: 4), so kv_b is read the way a decode step reads it.
 * Shapes of the small preset: 16 heads, nope 64, rope 64, v 64, kv_lora 512, 64 selected
 * positions of a 256-token FP8 cache; faithful numerics (--exact: exact numerics, against the
 * F32 table exact numerics kept, an F32 cache). Before timing, the two forms' outputs are
 * compared bit for bit: a difference exits 1.
 *
 * usage: bench-mla-decode [--threads N] [--layers L] [--reps R] [--exact]
 * Figures, not tests; `make check` runs it once with few repetitions (bench-mla-decode.sh). */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/kv_cache.h"
#include "daemon/model_config.h"
#include "daemon/util.h"
#include "kernels/cpu/cpu.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/pool.h"

enum { H = 16, NOPE = 64, ROPE = 64, V = 64, C = 512, NCTX = 256, K = 64, R = H * (NOPE + V) };

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t next_u32(void) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        return (uint32_t)(rng >> 32);
}
static float next_f(void) {
        return (float)(next_u32() >> 8) / (float)(1u << 24) * 2.0f - 1.0f;
}

struct layer_w {
        uint8_t *codes;
        float *scales;
        void *table;
        struct dsv_tensor w, s, t;
};

static int usage(void) {
        fprintf(stderr, "usage: bench-mla-decode [--threads N] [--layers L] [--reps R] [--exact]   (N 1..256, L 1..64, "
                        "R 1..10000)\n");
        return 2;
}

struct bench {
        struct layer_w *lw;
        int layers;
        struct dsv_op_mla_decode op;
        float *out;
};

/* Seconds for one step (every layer once) with kv_b in form fp8 or the table. */
static double step(struct bench *b, bool fp8) {
        uint64_t t0 = dsv_now_ns();
        for (int l = 0; l < b->layers; l++) {
                b->op.wkv_b = fp8 ? &b->lw[l].w : &b->lw[l].t;
                if (dsv_cpu_mla_decode(&b->op) < 0) {
                        fprintf(stderr, "bench-mla-decode: the op failed\n");
                        exit(1);
                }
        }
        return (dsv_now_ns() - t0) / 1e9;
}

int main(int argc, char **argv) {
        int threads = 2, layers = 4, reps = 200;
        bool exact = false;
        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--exact") == 0) {
                        exact = true;
                        continue;
                }
                int *dst = strcmp(argv[i], "--threads") == 0  ? &threads
                           : strcmp(argv[i], "--layers") == 0 ? &layers
                           : strcmp(argv[i], "--reps") == 0   ? &reps
                                                              : NULL;
                char *end;
                if (!dst || i + 1 >= argc)
                        return usage();
                long v = strtol(argv[++i], &end, 10);
                if (*end || v < 1 || (dst == &threads && v > 256) || (dst == &layers && v > 64) || v > 10000)
                        return usage();
                *dst = (int)v;
        }

        /* the cache: NCTX positions of one sequence, FP8 latents as faithful numerics keep them */
        struct dsv_model_config cfg = {
                .num_hidden_layers = 1, .kv_lora_rank = C, .qk_rope_head_dim = ROPE, .index_head_dim = 128};
        struct dsv_kv_layout L;
        dsv_kv_layout_init(&L, &cfg, exact ? DSV_KV_F32 : DSV_KV_FP8, 64);
        const char *tname = exact ? "F32" : "BF16";
        const int pages = NCTX / 64;
        void *base = calloc((size_t)pages, L.layer_page_bytes);
        float *lat = malloc((size_t)NCTX * C * 4), *kpe = malloc((size_t)NCTX * ROPE * 4),
              *key = malloc((size_t)NCTX * 128 * 4);
        int32_t *slots = malloc(NCTX * 4), page_tab[NCTX / 64], idx[K], seq[1] = {0}, pos[1] = {NCTX - 1};
        float *q = malloc((size_t)H * (NOPE + ROPE) * 4), *out = malloc((size_t)H * V * 4 * 2);
        struct bench b = {.layers = layers, .out = out};
        b.lw = calloc((size_t)layers, sizeof(*b.lw));
        if (!base || !lat || !kpe || !key || !slots || !q || !out || !b.lw) {
                fprintf(stderr, "bench-mla-decode: out of memory\n");
                return 1;
        }
        for (int p = 0; p < pages; p++)
                page_tab[p] = p;
        for (size_t i = 0; i < (size_t)NCTX * C; i++)
                lat[i] = next_f();
        for (size_t i = 0; i < (size_t)NCTX * ROPE; i++)
                kpe[i] = next_f();
        for (size_t i = 0; i < (size_t)NCTX * 128; i++)
                key[i] = next_f();
        for (int i = 0; i < NCTX; i++)
                slots[i] = (int32_t)dsv_kv_slot(&L, page_tab, i);
        struct dsv_tensor S = dsv_tensor_2d(DSV_I32, slots, 1, NCTX), La = dsv_tensor_2d(DSV_F32, lat, NCTX, C),
                          Kp = dsv_tensor_2d(DSV_F32, kpe, NCTX, ROPE), Ky = dsv_tensor_2d(DSV_F32, key, NCTX, 128);
        struct dsv_op_kv_store st = {.kv = {&L, base, 0}, .slots = &S, .latent = &La, .k_pe = &Kp, .idx_key = &Ky};
        if (dsv_cpu_kv_store(&st) < 0)
                return 1;
        for (int j = 0; j < K; j++)
                idx[j] = j * (NCTX / K) + (int)(next_u32() % (NCTX / K));
        for (int i = 0; i < H * (NOPE + ROPE); i++)
                q[i] = next_f();

        /* every layer's kv_b: random valid codes (no NaN), scales not powers of two, and the
         * BF16 table the dequant op makes of them */
        for (int l = 0; l < layers; l++) {
                struct layer_w *w = &b.lw[l];
                const int nbr = R / 128, nbc = C / 128;
                w->codes = malloc((size_t)R * C);
                w->scales = malloc((size_t)nbr * nbc * 4);
                w->table = malloc((size_t)R * C * (exact ? 4 : 2));
                if (!w->codes || !w->scales || !w->table)
                        return 1;
                for (size_t i = 0; i < (size_t)R * C; i++)
                        w->codes[i] = (uint8_t)(next_u32() % 0x7f) | (uint8_t)(next_u32() & 0x80);
                for (int i = 0; i < nbr * nbc; i++)
                        w->scales[i] = 0.01f * (1.0f + next_f() * 0.5f);
                w->s = dsv_tensor_2d(DSV_F32, w->scales, nbr, nbc);
                w->w = dsv_tensor_2d(DSV_F8_E4M3, w->codes, R, C);
                w->w.scale = &w->s;
                w->t = dsv_tensor_2d(exact ? DSV_F32 : DSV_BF16, w->table, R, C);
                struct dsv_op_dequant dq = {.out = &w->t, .w = &w->w};
                if (dsv_cpu_dequant(&dq) < 0)
                        return 1;
        }
        struct dsv_tensor O = dsv_tensor_2d(DSV_F32, out, 1, H * V), O2 = dsv_tensor_2d(DSV_F32, out + H * V, 1, H * V),
                          Q = dsv_tensor_2d(DSV_F32, q, 1, H * (NOPE + ROPE)), I = dsv_tensor_2d(DSV_I32, idx, 1, K),
                          TS = dsv_tensor_2d(DSV_I32, seq, 1, 1), TP = dsv_tensor_2d(DSV_I32, pos, 1, 1),
                          BT = dsv_tensor_2d(DSV_I32, page_tab, 1, pages);
        b.op = (struct dsv_op_mla_decode){.out = &O,
                                          .q = &Q,
                                          .idx = &I,
                                          .kv = {&L, base, 0},
                                          .at = {&TS, &TP, &BT},
                                          .n_heads = H,
                                          .nope = NOPE,
                                          .rope = ROPE,
                                          .v = V,
                                          .kv_lora = C,
                                          .scale = 0.125f,
                                          .faithful = !exact};

        /* the two forms give the same bits */
        for (int l = 0; l < layers; l++) {
                b.op.out = &O;
                b.op.wkv_b = &b.lw[l].w;
                int r1 = dsv_cpu_mla_decode(&b.op);
                b.op.out = &O2;
                b.op.wkv_b = &b.lw[l].t;
                int r2 = dsv_cpu_mla_decode(&b.op);
                if (r1 < 0 || r2 < 0 || memcmp(out, out + H * V, (size_t)H * V * 4) != 0) {
                        fprintf(stderr, "bench-mla-decode: layer %d: the FP8 kv_b gives other bits than the %s table\n",
                                l, tname);
                        return 1;
                }
        }
        b.op.out = &O;
        printf("bench-mla-decode: absorbed MLA decode, 1 token, %d heads, kv_lora %d, %d positions, %s, %d "
               "layers; %s "
               "kernels; FP8 kv_b and %s table give the same bits\n",
               H, C, K, exact ? "exact" : "faithful", layers, dsv_cpu_isa_name(dsv_cpu_isa_current()), tname);
        for (int n = 1; n <= threads; n = n == threads ? threads + 1 : MIN(n * 2, threads)) {
                if (dsv_cpu_pool_acquire(n) < 0)
                        return 1;
                double best8 = 1e30, bestt = 1e30;
                for (int r = 0; r < reps; r++) { /* alternating, so that load on the machine hits both */
                        best8 = fmin(best8, step(&b, true));
                        bestt = fmin(bestt, step(&b, false));
                }
                dsv_cpu_pool_release();
                printf("threads %d: FP8 kv_b %.1f us/step (%.1f MB read) vs %s table %.1f us/step (%.1f MB): ratio "
                       "%.2fx\n",
                       n, best8 * 1e6, layers * (double)R * C / 1e6, tname, bestt * 1e6,
                       layers * (double)R * C * (exact ? 4 : 2) / 1e6, best8 / bestt);
        }
        for (int l = 0; l < layers; l++) {
                free(b.lw[l].codes);
                free(b.lw[l].scales);
                free(b.lw[l].table);
        }
        free(b.lw);
        free(base);
        free(lat);
        free(kpe);
        free(key);
        free(slots);
        free(q);
        free(out);
        return 0;
}
