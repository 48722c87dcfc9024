/* MLA attention ops on the GPU (kernels and their plain math in mla.cuh).
 *
 * Decode: q_c = W_UK^T q_nope and out = W_UV o_c are cuBLAS strided-batched SGEMMs over the
 * heads (batch h: the head's 128 rows of the dequantized kv_b_proj); the scores, softmax and
 * o_c kernels run in between on a scratch [tokens][heads][K] cut into token chunks under the
 * scratch limit. Prefill: one kernel, a block per (head, token). */
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/mla.cuh"

int dcu_mla_decode(struct dcu_ctx *c, const struct dsv_op_mla_decode *p) {
        const struct dsv_kv_layout *L = p->kv.layout;
        const int64_t T = dcu_rows(p->out);
        const int H = p->n_heads, nope = p->nope, rope = p->rope, V = p->v, C = p->kv_lora;
        const int K = (int)dcu_cols(p->idx), qk = nope + rope;
        const bool f = p->faithful, fp8 = L->format == DSV_KV_FP8;
        if (T == 0)
                return 0;
        const int64_t per_tok = ((int64_t)H * C * 2 + (int64_t)H * K) * (int64_t)sizeof(float);
        int64_t tc = dcu_chunk_rows(T, per_tok, c->scratch_limit);
        if (tc > 65535)
                tc = 65535;
        float *buf;
        DCU_TRY(dcu_scratch(c, (size_t)(tc * per_tok), (void **)&buf));
        float *qc = buf, *S = qc + tc * H * C, *oc = S + tc * H * K;

        const float alpha = 1.0f, beta = 0.0f;
        const float *w = (const float *)p->wkv_b->data;
        const int64_t ldw = dcu_ld(p->wkv_b), ldq = dcu_ld(p->q), ldo = dcu_ld(p->out), ldi = dcu_ld(p->idx);
        const struct dcu_kv kv = dcu_kv_of(&p->kv);
        const int32_t *seq = (const int32_t *)p->at.tok_seq->data, *bt = (const int32_t *)p->at.block_table->data;
        const int64_t ldbt = dcu_ld(p->at.block_table);
        const int32_t *idx = (const int32_t *)p->idx->data;
        int r = 0;
        for (int64_t t0 = 0; t0 < T && r == 0; t0 += tc) {
                const int nt = (int)(T - t0 < tc ? T - t0 : tc);
                cublasStatus_t s = cublasSgemmStridedBatched(c->blas, CUBLAS_OP_N, CUBLAS_OP_N, C, nt, nope, &alpha, w, (int)ldw,
                                                             (long long)(nope + V) * ldw, (const float *)p->q->data + t0 * ldq, (int)ldq,
                                                             qk, &beta, qc, H * C, C, H);
                if (s != CUBLAS_STATUS_SUCCESS) {
                        r = dcu_fail_cublas(s, "cublasSgemmStridedBatched(q_c)", __FILE__, __LINE__);
                        break;
                }
                if (f && (r = dcu_round_rows(c, qc, C, (int64_t)nt * H, C)) < 0)
                        break;
                dim3 gs((unsigned)dcu_ceil_div(K, DCU_MLA_JT), (unsigned)dcu_ceil_div(H, DCU_MLA_HT), (unsigned)nt);
                if (K > 0) {
                        if (fp8)
                                dcu_mla_scores_kernel<true><<<gs, 256, 0, c->stream>>>(S, qc, (const float *)p->q->data, ldq, idx, ldi,
                                                                                      (const uint8_t *)p->kv.base, kv, seq, bt, ldbt, H,
                                                                                      nope, rope, C, K, p->scale, f, t0, c->err_word);
                        else
                                dcu_mla_scores_kernel<false><<<gs, 256, 0, c->stream>>>(S, qc, (const float *)p->q->data, ldq, idx, ldi,
                                                                                       (const uint8_t *)p->kv.base, kv, seq, bt, ldbt, H,
                                                                                       nope, rope, C, K, p->scale, f, t0, c->err_word);
                        dcu_mla_softmax_kernel<<<(unsigned)(nt * H), 256, 0, c->stream>>>(S, idx, ldi, H, K, f, t0);
                }
                dim3 gp((unsigned)dcu_ceil_div(C, DCU_MLA_CT), (unsigned)dcu_ceil_div(H, DCU_MLA_HT), (unsigned)nt);
                if (fp8)
                        dcu_mla_pv_kernel<true><<<gp, 256, 0, c->stream>>>(oc, S, idx, ldi, (const uint8_t *)p->kv.base, kv, seq, bt,
                                                                          ldbt, H, C, K, f, t0, c->err_word);
                else
                        dcu_mla_pv_kernel<false><<<gp, 256, 0, c->stream>>>(oc, S, idx, ldi, (const uint8_t *)p->kv.base, kv, seq, bt,
                                                                           ldbt, H, C, K, f, t0, c->err_word);
                cudaError_t e = cudaGetLastError();
                if (e != cudaSuccess) {
                        r = dcu_fail_cuda(e, "mla decode kernels", __FILE__, __LINE__);
                        break;
                }
                s = cublasSgemmStridedBatched(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, V, nt, C, &alpha, w + (int64_t)nope * ldw, (int)ldw,
                                              (long long)(nope + V) * ldw, oc, H * C, C, &beta, (float *)p->out->data + t0 * ldo,
                                              (int)ldo, V, H);
                if (s != CUBLAS_STATUS_SUCCESS) {
                        r = dcu_fail_cublas(s, "cublasSgemmStridedBatched(out)", __FILE__, __LINE__);
                        break;
                }
                if (f)
                        r = dcu_round_rows(c, (float *)p->out->data + t0 * ldo, ldo, nt, (int64_t)H * V);
        }
        dcu_scratch_free(c, buf);
        return r;
}

int dcu_mla_prefill(struct dcu_ctx *c, const struct dsv_op_mla_prefill *p) {
        const int64_t T = dcu_rows(p->out);
        const int H = p->n_heads, nope = p->nope, rope = p->rope, V = p->v;
        const int K = (int)dcu_cols(p->idx);
        if (T == 0 || H == 0)
                return 0;
        const size_t smem = ((size_t)nope + rope + K + 32) * sizeof(float);
        if (smem > c->smem_optin)
                return dcu_fail(-EINVAL, __FILE__, __LINE__, "mla_prefill: too many selected positions for shared memory");
        DCU_CUDA(cudaFuncSetAttribute(dcu_mla_prefill_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        for (int64_t t0 = 0; t0 < T; t0 += 65535) {
                const int64_t nt = T - t0 < 65535 ? T - t0 : 65535;
                dim3 g((unsigned)H, (unsigned)nt);
                dcu_mla_prefill_kernel<<<g, 256, smem, c->stream>>>(
                        (float *)p->out->data + t0 * dcu_ld(p->out), dcu_ld(p->out), (const float *)p->q->data + t0 * dcu_ld(p->q),
                        dcu_ld(p->q), (const float *)p->kvb->data, dcu_ld(p->kvb), (const float *)p->k_pe->data, dcu_ld(p->k_pe),
                        (const int32_t *)p->idx->data + t0 * dcu_ld(p->idx), dcu_ld(p->idx), dcu_rows(p->kvb), H, nope, rope, V, K,
                        p->scale, p->faithful, c->err_word);
                DCU_LAUNCHED();
        }
        return 0;
}
