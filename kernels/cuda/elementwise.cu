/* Embedding gather, row gather, weight dequantization, SwiGLU, residual add, RoPE, the
 * Hadamard transform and the row copy/rounding helpers on the GPU. One block per row; every row pointer honours the
 * tensor's byte stride, so views (column ranges of a wider buffer) work as on the CPU.
 * Products and sums that the CPU evaluates as separate fp32 operations use __fmul_rn /
 * __fadd_rn here so the compiler cannot fuse them into an FMA: these ops are bit-exact
 * against the reference except where a libm function differs (expf, cosf, sinf). */
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/elementwise.cuh"

#define EW_THREADS 256

int dcu_embed(struct dcu_ctx *c, const struct dsv_op_embed *p) {
        const int64_t T = dcu_rows(p->out);
        if (T == 0)
                return 0;
        dcu_embed_kernel<<<dcu_grid(T), EW_THREADS, 0, c->stream>>>((float *)p->out->data, dcu_ld(p->out),
                                                                     (const uint16_t *)p->table->data, dcu_ld(p->table),
                                                                     dcu_rows(p->table), (const int32_t *)p->ids->data,
                                                                     dcu_cols(p->out), c->err_word);
        DCU_LAUNCHED();
        return 0;
}

int dcu_get_rows(struct dcu_ctx *c, const struct dsv_op_get_rows *p) {
        const int64_t n = dcu_rows(p->out);
        if (n == 0)
                return 0;
        dcu_get_rows_kernel<<<dcu_grid(n), EW_THREADS, 0, c->stream>>>((float *)p->out->data, dcu_ld(p->out),
                                                                        (const float *)p->x->data, dcu_ld(p->x), dcu_rows(p->x),
                                                                        (const int32_t *)p->rows->data, dcu_cols(p->out),
                                                                        c->err_word);
        DCU_LAUNCHED();
        return 0;
}

template <int W_TYPE, bool OUT_BF16>
static void dequant_launch(struct dcu_ctx *c, const struct dsv_op_dequant *p) {
        const struct dsv_tensor *w = p->w;
        dcu_dequant_kernel<W_TYPE, OUT_BF16><<<dcu_grid(dcu_rows(w)), EW_THREADS, 0, c->stream>>>(
                p->out->data, dcu_ld(p->out), w->data, dcu_ld(w), W_TYPE == 0 ? (const float *)w->scale->data : nullptr,
                W_TYPE == 0 ? dcu_ld(w->scale) : 0, dcu_cols(w), p->round_bf16);
}

int dcu_dequant(struct dcu_ctx *c, const struct dsv_op_dequant *p) {
        if (dcu_rows(p->w) == 0)
                return 0;
        const bool bf16_out = p->out->type == DSV_BF16;
        switch (p->w->type) {
        case DSV_F8_E4M3:
                bf16_out ? dequant_launch<0, true>(c, p) : dequant_launch<0, false>(c, p);
                break;
        case DSV_BF16:
                bf16_out ? dequant_launch<1, true>(c, p) : dequant_launch<1, false>(c, p);
                break;
        default:
                bf16_out ? dequant_launch<2, true>(c, p) : dequant_launch<2, false>(c, p);
                break;
        }
        DCU_LAUNCHED();
        return 0;
}

int dcu_swiglu(struct dcu_ctx *c, const struct dsv_op_swiglu *p, bool faithful) {
        const int64_t T = dcu_rows(p->out);
        if (T == 0)
                return 0;
        dcu_binary_kernel<true><<<dcu_grid(T), EW_THREADS, 0, c->stream>>>(
                (float *)p->out->data, dcu_ld(p->out), (const float *)p->a->data, dcu_ld(p->a), (const float *)p->b->data,
                dcu_ld(p->b), dcu_cols(p->out), faithful);
        DCU_LAUNCHED();
        return 0;
}

int dcu_add(struct dcu_ctx *c, const struct dsv_op_add *p, bool faithful) {
        const int64_t T = dcu_rows(p->out);
        if (T == 0)
                return 0;
        dcu_binary_kernel<false><<<dcu_grid(T), EW_THREADS, 0, c->stream>>>(
                (float *)p->out->data, dcu_ld(p->out), (const float *)p->a->data, dcu_ld(p->a), (const float *)p->b->data,
                dcu_ld(p->b), dcu_cols(p->out), faithful);
        DCU_LAUNCHED();
        return 0;
}

int dcu_rope(struct dcu_ctx *c, const struct dsv_op_rope *p, bool faithful) {
        const int64_t T = dcu_rows(p->x);
        const int half = p->rope_dim / 2;
        if (T == 0 || half == 0 || p->n_heads == 0)
                return 0;
        dcu_rope_kernel<<<dcu_grid(T), EW_THREADS, 2 * (size_t)half * sizeof(float), c->stream>>>(
                (float *)p->x->data, dcu_ld(p->x), (const int32_t *)p->pos->data, (const float *)p->inv_freq->data, p->n_heads,
                p->head_stride, p->offset, half, p->interleaved, faithful);
        DCU_LAUNCHED();
        return 0;
}

int dcu_hadamard(struct dcu_ctx *c, const struct dsv_op_hadamard *p, bool faithful) {
        const int64_t T = dcu_rows(p->x), groups = dcu_cols(p->x) / p->d;
        if (T == 0 || groups == 0)
                return 0;
        const float scale = (float)(1.0 / sqrt((double)p->d));
        const int threads = p->d / 2 < EW_THREADS ? (p->d / 2 > 32 ? p->d / 2 : 32) : EW_THREADS;
        dcu_hadamard_kernel<<<dcu_grid(T * groups), threads, (size_t)p->d * sizeof(float), c->stream>>>(
                (float *)p->x->data, dcu_ld(p->x), groups, p->d, scale, faithful);
        DCU_LAUNCHED();
        return 0;
}

int dcu_copy_rows(struct dcu_ctx *c, float *dst, int64_t ldd, const float *src, int64_t lds, int64_t rows, int64_t cols,
                  bool round) {
        if (rows == 0 || cols == 0)
                return 0;
        dcu_copy_rows_kernel<<<dcu_grid(rows), EW_THREADS, 0, c->stream>>>(dst, ldd, src, lds, cols, round);
        DCU_LAUNCHED();
        return 0;
}

int dcu_round_rows(struct dcu_ctx *c, float *x, int64_t ld, int64_t rows, int64_t cols) {
        return dcu_copy_rows(c, x, ld, x, ld, rows, cols, true);
}
