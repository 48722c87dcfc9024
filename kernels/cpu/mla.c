/* Multi-head latent attention over the selected positions, on the CPU.
 *
 * Decode ("absorbed"), token t, head h (W_UK = kv_b rows h*(nope+v) + [0, nope),
 * W_UV = rows h*(nope+v) + [nope, nope+v), each row kv_lora wide):
 *   q_c[c]   = sum_d q_nope[d] W_UK[d][c]
 *   s_j      = (q_c . c_j + q_pe . kpe_j) * scale        j in idx[t]
 *   p        = softmax(s)
 *   o_c      = sum_j p_j c_j
 *   out[d]   = sum_c o_c[c] W_UV[d][c]
 * faithful: q_c, both score terms, their sum, the scaled score, p, o_c and out are bf16, as in
 * the reference's bf16 einsums. kv_b (W_UK, W_UV) is F32, or BF16 where its values are
 * bf16-rounded anyway (faithful), or the checkpoint's FP8 codes with their 128x128 block
 * scales, each row made into the floats the dequantized table would hold (fp8_rows.h: one
 * table per block, built once per 128-row block a head reads): all forms give the same bits
 * (W_UK's rows enter element-wise updates, W_UV's rows are widened to float before their
 * dot products).
 *
 * Prefill ("expanded", one sequence): k_j = [k_nope_j ; kpe_j], v_j from kv_b(c_j):
 *   s_j = (q . k_j) * scale;  p = softmax(s);  out = sum_j p_j v_j
 * faithful: the dot product, the scaled score, p and out are bf16. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "kernels/cpu/cpu.h"
#include "kernels/cpu/fp8_rows.h"

void dsv_softmax(float *s, int n) {
        float m = -INFINITY, sum = 0;
        for (int j = 0; j < n; j++)
                m = s[j] > m ? s[j] : m;
        for (int j = 0; j < n; j++) {
                s[j] = expf(s[j] - m);
                sum += s[j];
        }
        float inv = 1.0f / sum;
        for (int j = 0; j < n; j++)
                s[j] *= inv;
}

DSV_HOT static float dotf(const float *a, const float *b, int n) {
        float s = 0;
        OMP(simd reduction(+ : s))
        for (int i = 0; i < n; i++)
                s += a[i] * b[i];
        return s;
}

DSV_HOT static void axpy(float *y, float a, const float *x, int n) {
        OMP(simd)
        for (int i = 0; i < n; i++)
                y[i] += a * x[i];
}

struct mla_ctx {
        const void *p;
        _Atomic int err;
};

/* Decode reads each token's selected latents out of the cache once (a gather: the heads of
 * the token share it) and runs the heads on them. The gathered rows of a token take
 * K * (kv_lora + rope) floats (147 KB on the small presets, 4.7 MB at DeepSeek-V3.2's top-k
 * 2048), so a whole batch's at once would grow with the batch (4.7 MB at 32 tokens on the
 * small preset, most of what kept peak RSS over issue 16's 1.1x). Two ways:
 *   few tokens (fewer than MLA_SHARED_MAX_TOKENS per thread): every token's rows gathered
 *     once into one buffer, then every (token, head) pair is a work item, so a single
 *     decoding sequence still spreads over the pool;
 *   more: a work item is a token, whose rows its thread gathers into its own scratch.
 * Either way each (token, head) is the same arithmetic on the same values (mla_head), so
 * the results do not depend on the way, the batch or the thread count. */
#define MLA_SHARED_MAX_TOKENS 2

struct mla_dec {
        const struct dsv_op_mla_decode *p;
        int64_t *off; /* token t's gathered rows start at row off[t]; off[T] rows in all */
        float *lat, *kpe;
        _Atomic int err;
};

/* Token t's selected latents into lat/kpe (rows in the order of idx[t]); the row count. */
static int mla_gather(const struct dsv_op_mla_decode *p, int64_t t, float *lat, float *kpe) {
        const struct dsv_kv_layout *L = p->kv.layout;
        const int K = (int)p->idx->ne[0], C = p->kv_lora, rope = p->rope;
        const int32_t *seq = p->at.tok_seq->data;
        const int32_t *idx = dsv_tensor_row(p->idx, t);
        const int32_t *pages = dsv_tensor_row(p->at.block_table, seq[t]);
        int m = 0;
        for (int j = 0; j < K; j++)
                if (idx[j] >= 0) {
                        dsv_kv_read_mla(&p->kv, dsv_kv_slot(L, pages, idx[j]), lat + (size_t)m * C, kpe + (size_t)m * rope);
                        m++;
                }
        return m;
}

static void mla_gather_rows(void *v, int64_t t0, int64_t t1, int thread) {
        struct mla_dec *md = v;
        const struct dsv_op_mla_decode *p = md->p;
        for (int64_t t = t0; t < t1; t++)
                mla_gather(p, t, md->lat + (size_t)md->off[t] * p->kv_lora, md->kpe + (size_t)md->off[t] * p->rope);
}
DSV_HOT static void axpy_bf16(float *y, float a, const uint16_t *x, int n) {
        OMP(simd)
        for (int i = 0; i < n; i++)
                y[i] += a * dsv_bf16_to_f32(x[i]);
}

DSV_HOT static void widen_bf16(float *y, const uint16_t *x, int n) {
        OMP(simd)
        for (int i = 0; i < n; i++)
                y[i] = dsv_bf16_to_f32(x[i]);
}

/* y += a * row r of kv_b: each element on its own, so the same bits from either form. */
static void axpy_row(float *y, float a, const struct dsv_tensor *w, int64_t r, int n) {
        if (w->type == DSV_F32)
                axpy(y, a, dsv_tensor_row(w, r), n);
        else
                axpy_bf16(y, a, dsv_tensor_row(w, r), n);
}

/* Row r of kv_b as floats, for a dot product (whose reduction order must not depend on the
 * form): the F32 row itself, or the BF16 row widened into buf. */
static const float *row_f32(const struct dsv_tensor *w, int64_t r, float *buf, int n) {
        if (w->type == DSV_F32)
                return dsv_tensor_row(w, r);
        widen_bf16(buf, dsv_tensor_row(w, r), n);
        return buf;
}

/* An FP8 kv_b's rows as floats: the tables of one 128-row block's column blocks, rebuilt
 * when a row of another block is asked for (a head's rows lie in one or two blocks). */
struct kvb_fp8 {
        struct dsv_fp8_tab *tabs; /* ceil(kv_lora / 128) */
        int64_t block;            /* the row block the tables are for; -1 none */
        enum dsv_cpu_isa isa;
};

/* Scratch of a thread for mla_head: floats floats, then the FP8 tables (when kv_b is FP8). */
static float *mla_scratch(const struct dsv_op_mla_decode *p, size_t floats, struct kvb_fp8 *kf) {
        const bool fp8 = p->wkv_b->type == DSV_F8_E4M3;
        const size_t nb = (size_t)(p->kv_lora + DSV_QBLOCK - 1) / DSV_QBLOCK;
        const size_t fbytes = (floats * sizeof(float) + 63) / 64 * 64;
        uint8_t *s = dsv_cpu_scratch(0, fbytes + (fp8 ? nb * sizeof(struct dsv_fp8_tab) + 64 : 0));
        if (s && fp8) {
                kf->tabs = (struct dsv_fp8_tab *)(((uintptr_t)s + fbytes + 63) / 64 * 64);
                kf->block = -1;
                kf->isa = dsv_cpu_isa_current();
        }
        return (float *)s;
}

/* Row r's codes, the tables of its block made. */
static const uint8_t *fp8_codes(const struct dsv_op_mla_decode *p, struct kvb_fp8 *kf, int64_t r) {
        const struct dsv_tensor *w = p->wkv_b;
        const int64_t b = r / DSV_QBLOCK;
        if (b != kf->block) {
                const float *sc = dsv_tensor_row(w->scale, b);
                for (int64_t cb = 0; cb < w->scale->ne[0]; cb++)
                        dsv_fp8_tab_make(&kf->tabs[cb], sc[cb], p->faithful, kf->isa);
                kf->block = b;
        }
        return dsv_tensor_row(w, r);
}

static const float *fp8_row(const struct dsv_op_mla_decode *p, struct kvb_fp8 *kf, int64_t r, float *buf) {
        dsv_fp8_row_f32(fp8_codes(p, kf, r), p->kv_lora, kf->tabs, buf, kf->isa);
        return buf;
}

/* Head h of token t on its n gathered rows; scratch: 3 * kv_lora + n floats. */
static void mla_head(const struct dsv_op_mla_decode *p, struct kvb_fp8 *kf, int64_t t, int h, const float *lat, const float *kpe,
                     int n, float *qc) {
        const int nope = p->nope, rope = p->rope, V = p->v, C = p->kv_lora;
        const int qk = nope + rope;
        const bool f = p->faithful;
        float *oc = qc + C, *wrow = oc + C, *s = wrow + C;
        const float *q = dsv_tensor_row(p->q, t);
        float *out = dsv_tensor_row(p->out, t);
        const float *qn = q + (size_t)h * qk, *qp = qn + nope;
        const int64_t wuk = (int64_t)h * (nope + V), wuv = wuk + nope;
        memset(qc, 0, (size_t)C * sizeof(float));
        for (int d = 0; d < nope; d++)
                if (p->wkv_b->type == DSV_F8_E4M3)
                        dsv_fp8_row_axpy(fp8_codes(p, kf, wuk + d), C, kf->tabs, qn[d], qc, wrow, kf->isa);
                else
                        axpy_row(qc, qn[d], p->wkv_b, wuk + d, C);
        for (int c = 0; c < C; c++)
                qc[c] = dsv_rnd(qc[c], f);
        for (int j = 0; j < n; j++) {
                float a = dsv_rnd(dotf(qc, lat + (size_t)j * C, C), f);
                float b = dsv_rnd(dotf(qp, kpe + (size_t)j * rope, rope), f);
                s[j] = dsv_rnd(dsv_rnd(a + b, f) * p->scale, f);
        }
        dsv_softmax(s, n);
        memset(oc, 0, (size_t)C * sizeof(float));
        for (int j = 0; j < n; j++)
                axpy(oc, dsv_rnd(s[j], f), lat + (size_t)j * C, C);
        for (int c = 0; c < C; c++)
                oc[c] = dsv_rnd(oc[c], f);
        for (int d = 0; d < V; d++)
                out[h * V + d] = dsv_rnd(dotf(oc, p->wkv_b->type == DSV_F8_E4M3 ? fp8_row(p, kf, wuv + d, wrow)
                                                                                  : row_f32(p->wkv_b, wuv + d, wrow, C),
                                              C),
                                         f);
}

/* few tokens: items are (token, head) pairs on the shared gather */
static void mla_head_items(void *v, int64_t i0, int64_t i1, int thread) {
        struct mla_dec *md = v;
        const struct dsv_op_mla_decode *p = md->p;
        const int H = p->n_heads, K = (int)p->idx->ne[0], C = p->kv_lora;
        struct kvb_fp8 kf;
        float *qc = mla_scratch(p, (size_t)C * 3 + (size_t)K, &kf);
        if (!qc) {
                atomic_store(&md->err, -ENOMEM);
                return;
        }
        for (int64_t it = i0; it < i1; it++) {
                const int64_t t = it / H;
                const int n = (int)(md->off[t + 1] - md->off[t]);
                mla_head(p, &kf, t, (int)(it % H), md->lat + (size_t)md->off[t] * C, md->kpe + (size_t)md->off[t] * p->rope, n, qc);
        }
}

/* more tokens: items are tokens, each gathered into its thread's scratch */
static void mla_token_items(void *v, int64_t t0, int64_t t1, int thread) {
        struct mla_dec *md = v;
        const struct dsv_op_mla_decode *p = md->p;
        const int H = p->n_heads, K = (int)p->idx->ne[0], C = p->kv_lora;
        struct kvb_fp8 kf;
        float *qc = mla_scratch(p, (size_t)C * 3 + (size_t)K + (size_t)K * (C + p->rope), &kf);
        if (!qc) {
                atomic_store(&md->err, -ENOMEM);
                return;
        }
        float *lat = qc + (size_t)C * 3 + K, *kpe = lat + (size_t)K * C;
        for (int64_t t = t0; t < t1; t++) {
                const int n = mla_gather(p, t, lat, kpe);
                for (int h = 0; h < H; h++)
                        mla_head(p, &kf, t, h, lat, kpe, n, qc);
        }
}

bool dsv_cpu_mla_decode_ok(const struct dsv_op_mla_decode *p) {
        const struct dsv_tensor *w = p->wkv_b, *s = w->scale;
        if (w->type == DSV_F32 || w->type == DSV_BF16)
                return true;
        return w->type == DSV_F8_E4M3 && s && s->type == DSV_F32 && s->ne[0] == (w->ne[0] + DSV_QBLOCK - 1) / DSV_QBLOCK &&
               s->ne[1] == (w->ne[1] + DSV_QBLOCK - 1) / DSV_QBLOCK && w->ne[0] == p->kv_lora;
}

int dsv_cpu_mla_decode(const struct dsv_op_mla_decode *p) {
        const int64_t T = p->out->ne[1];
        const int K = (int)p->idx->ne[0], C = p->kv_lora, H = p->n_heads;
        /* per token: ~ H * (2 nope + 2 K + V) * C multiply-adds */
        const int64_t work = T * H * (2 * p->nope + 2 * K + p->v) * (int64_t)C;
        struct mla_dec md = {.p = p};

        if (T == 0)
                return 0;
        atomic_init(&md.err, 0);
        if (T >= (int64_t)MLA_SHARED_MAX_TOKENS * dsv_cpu_pool_threads()) {
                dsv_par_for_dyn(T, 1, work, mla_token_items, &md);
                return atomic_load(&md.err);
        }
        md.off = malloc((size_t)(T + 1) * sizeof(int64_t));
        if (!md.off)
                return -ENOMEM;
        md.off[0] = 0;
        for (int64_t t = 0; t < T; t++) {
                const int32_t *idx = dsv_tensor_row(p->idx, t);
                int n = 0;
                for (int j = 0; j < K; j++)
                        n += idx[j] >= 0;
                md.off[t + 1] = md.off[t] + n;
        }
        md.lat = malloc(((size_t)md.off[T] * (size_t)(C + p->rope) + 1) * sizeof(float));
        if (!md.lat) {
                free(md.off);
                return -ENOMEM;
        }
        md.kpe = md.lat + (size_t)md.off[T] * C;
        dsv_par_for(T, md.off[T] * C, mla_gather_rows, &md);
        dsv_par_for_dyn(T * H, 1, work, mla_head_items, &md);
        free(md.lat);
        free(md.off);
        return atomic_load(&md.err);
}

/* The same dot product and update as dotf/axpy, inlined into the prefill loop's per-ISA
 * clones: the loop calls them H * (2 K) times a row on 64-wide vectors, where the call
 * through the ifunc and the unvectorised tail cost as much as the arithmetic. Same loops,
 * same reduction: the same bits as the called forms (dsv32-run --dump-logits unchanged). */
static inline float dotf_in(const float *a, const float *b, int n) {
        float s = 0;
        OMP(simd reduction(+ : s))
        for (int i = 0; i < n; i++)
                s += a[i] * b[i];
        return s;
}

static inline void axpy_in(float *y, float a, const float *x, int n) {
        OMP(simd)
        for (int i = 0; i < n; i++)
                y[i] += a * x[i];
}

/* Rows t0..t1: per row, the selected positions' K/V rows are read once for every head
 * (position outer, head inner: a row's heads are neighbours in memory) instead of once per
 * head; each head's scores, softmax and sum over positions are the same operations in the
 * same order as head by head. Scratch: H * (K + V) floats and K positions. */
DSV_HOT static void mla_prefill_rows(void *vc, int64_t t0, int64_t t1, int thread) {
        struct mla_ctx *mc = vc;
        const struct dsv_op_mla_prefill *p = mc->p;
        const int H = p->n_heads, nope = p->nope, rope = p->rope, V = p->v;
        const int K = (int)p->idx->ne[0];
        const int qk = nope + rope, kvw = nope + V;
        const bool f = p->faithful;
        float *s = dsv_cpu_scratch(0, ((size_t)H * (K + V) + (size_t)K) * sizeof(float));
        if (!s) {
                atomic_store(&mc->err, -ENOMEM);
                return;
        }
        float *o = s + (size_t)H * K;
        int32_t *sel = (int32_t *)(o + (size_t)H * V);

        for (int64_t t = t0; t < t1; t++) {
                const int32_t *idx = dsv_tensor_row(p->idx, t);
                const float *q = dsv_tensor_row(p->q, t);
                float *out = dsv_tensor_row(p->out, t);
                int n = 0;
                for (int j = 0; j < K; j++)
                        if (idx[j] >= 0)
                                sel[n++] = idx[j];
                for (int m = 0; m < n; m++) {
                        const float *kv = dsv_tensor_row(p->kvb, sel[m]);
                        const float *kpe = dsv_tensor_row(p->k_pe, sel[m]);
                        for (int h = 0; h < H; h++) {
                                const float *qh = q + (size_t)h * qk;
                                float dot = dotf_in(qh, kv + (size_t)h * kvw, nope) + dotf_in(qh + nope, kpe, rope);
                                s[(size_t)h * K + m] = dsv_rnd(dsv_rnd(dot, f) * p->scale, f);
                        }
                }
                for (int h = 0; h < H; h++) {
                        dsv_softmax(s + (size_t)h * K, n);
                        for (int m = 0; m < n; m++)
                                s[(size_t)h * K + m] = dsv_rnd(s[(size_t)h * K + m], f);
                }
                memset(o, 0, (size_t)H * V * sizeof(float));
                for (int m = 0; m < n; m++) {
                        const float *kv = dsv_tensor_row(p->kvb, sel[m]);
                        for (int h = 0; h < H; h++)
                                axpy_in(o + (size_t)h * V, s[(size_t)h * K + m], kv + (size_t)h * kvw + nope, V);
                }
                for (int i = 0; i < H * V; i++)
                        out[i] = dsv_rnd(o[i], f);
        }
}

int dsv_cpu_mla_prefill(const struct dsv_op_mla_prefill *p) {
        const int64_t T = p->out->ne[1];
        struct mla_ctx mc = {.p = p};
        atomic_init(&mc.err, 0);
        dsv_par_for_dyn(T, 1, T > 1 ? T * p->n_heads * p->idx->ne[0] * 256 : 0, mla_prefill_rows, &mc);
        return atomic_load(&mc.err);
}
