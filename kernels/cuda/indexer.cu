/* The lightning indexer + top-k op on the GPU: scores (indexer.cuh) into a scratch of
 * [queries][max_ctx] floats, max_ctx = block-table width * page_tokens (the most positions a
 * sequence can address), then the radix top-k (topk.cuh) per query. Queries are processed in
 * chunks that keep the scratch under the backend's scratch limit. When the caller asks for
 * the scores, they are copied out with -inf beyond each query's position, as on the CPU. */
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/indexer.cuh"
#include "kernels/cuda/topk.cuh"

/* dst[t][s] = s < n ? src[t][s] : -inf for s < W. */
__global__ void dcu_scores_out_kernel(float *dst, int64_t ldd, int64_t W, const float *src, int64_t lds, const int32_t *tok_pos,
                                      int64_t max_ctx, int64_t t0) {
        const int64_t t = t0 + blockIdx.y;
        int64_t n = (int64_t)tok_pos[t] + 1;
        n = n < max_ctx ? n : max_ctx;
        for (int64_t s = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; s < W; s += (int64_t)gridDim.x * blockDim.x)
                dst[t * ldd + s] = s < n ? src[(int64_t)blockIdx.y * lds + s] : -INFINITY;
}

int dcu_indexer_topk(struct dcu_ctx *c, const struct dsv_op_indexer_topk *p) {
        const struct dsv_kv_layout *L = p->kv.layout;
        const int64_t T = dcu_rows(p->idx);
        const int H = p->n_heads, d = p->head_dim;
        const bool f = p->faithful;
        if (f != (L->format == DSV_KV_FP8))
                return -EINVAL;
        if (T == 0)
                return 0;
        const int64_t max_ctx = dcu_cols(p->at.block_table) * L->page_tokens;
        const int64_t lds = dcu_round_up(max_ctx, 4);
        const int64_t tc_max = dcu_chunk_rows(T, lds * (int64_t)sizeof(float), c->scratch_limit);
        const int64_t tc = tc_max < 65535 ? tc_max : 65535;
        const size_t smem = dcu_index_scores_smem(H, d);
        float *sc;

        if (smem > c->smem_optin)
                return dcu_fail(-EINVAL, __FILE__, __LINE__, "indexer: n_heads * head_dim too large for shared memory");
        if (f)
                DCU_CUDA(cudaFuncSetAttribute(dcu_index_scores_kernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        else
                DCU_CUDA(cudaFuncSetAttribute(dcu_index_scores_kernel<false>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        DCU_TRY(dcu_scratch(c, (size_t)(tc * lds) * sizeof(float), (void **)&sc));

        const struct dcu_kv kv = dcu_kv_of(&p->kv);
        const int32_t *seq = (const int32_t *)p->at.tok_seq->data, *pos = (const int32_t *)p->at.tok_pos->data;
        const int32_t *bt = (const int32_t *)p->at.block_table->data;
        const int64_t ldbt = dcu_ld(p->at.block_table);
        const float *qs = f ? (const float *)p->q_scale->data : NULL;
        const int64_t ldqs = f ? dcu_ld(p->q_scale) : 0;
        int r = 0;
        for (int64_t t0 = 0; t0 < T && r == 0; t0 += tc) {
                const int64_t nt = T - t0 < tc ? T - t0 : tc;
                dim3 grid((unsigned)dcu_ceil_div(max_ctx, DCU_IDX_TK), (unsigned)nt);
                if (f)
                        dcu_index_scores_kernel<true><<<grid, 256, smem, c->stream>>>(
                                sc, lds, p->q->data, dcu_ld(p->q), qs, ldqs, (const float *)p->w->data, dcu_ld(p->w),
                                (const uint8_t *)p->kv.base, kv, seq, pos, bt, ldbt, max_ctx, H, d, p->w_scale1, p->w_scale2, t0,
                                p->topk, p->scores == NULL, c->err_word);
                else
                        dcu_index_scores_kernel<false><<<grid, 256, smem, c->stream>>>(
                                sc, lds, p->q->data, dcu_ld(p->q), qs, ldqs, (const float *)p->w->data, dcu_ld(p->w),
                                (const uint8_t *)p->kv.base, kv, seq, pos, bt, ldbt, max_ctx, H, d, p->w_scale1, p->w_scale2, t0,
                                p->topk, p->scores == NULL, c->err_word);
                cudaError_t e = cudaGetLastError();
                if (e == cudaSuccess && p->scores) {
                        dim3 g2((unsigned)dcu_ceil_div(dcu_cols(p->scores), 256) < 1024u ? (unsigned)dcu_ceil_div(dcu_cols(p->scores), 256)
                                                                                           : 1024u,
                                (unsigned)nt);
                        if (g2.x == 0)
                                g2.x = 1;
                        dcu_scores_out_kernel<<<g2, 256, 0, c->stream>>>((float *)p->scores->data, dcu_ld(p->scores),
                                                                         dcu_cols(p->scores), sc, lds, pos, max_ctx, t0);
                        e = cudaGetLastError();
                }
                if (e == cudaSuccess) {
                        dcu_topk_kernel<<<(unsigned)nt, DCU_TOPK_THREADS, 0, c->stream>>>(sc, lds, pos, max_ctx, p->topk,
                                                                                          (int32_t *)p->idx->data, dcu_ld(p->idx), t0);
                        e = cudaGetLastError();
                }
                if (e != cudaSuccess)
                        r = dcu_fail_cuda(e, "indexer kernels", __FILE__, __LINE__);
        }
        dcu_scratch_free(c, sc);
        return r;
}
