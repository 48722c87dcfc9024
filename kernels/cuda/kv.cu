/* Paged KV cache writes and reads on the GPU (layout: kernels/backend.h, addressing:
 * plan.h's dcu_kv_*). One block per token.
 *
 *   kv_store, FP8:  rec[0, kv_lora)          = act_quant codes of the latent
 *                   rec[kv_lora, +4 nb)      = their fp32 scales
 *                   rec[.., +2 rope)         = bf16(k_pe)
 *                   indexer key codes / scales in the page's key areas
 *   kv_store, F32:  the same values unrounded (latent | k_pe, key)
 *   kv_gather:      latent[i] = code * scale[c / 128] (or the f32 copy), k_pe[i] = float(bf16)
 * Scales and k_pe go through byte stores: a record of odd sizes need not be 4-byte aligned. */
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/kv.cuh"

#define KV_THREADS 256

int dcu_kv_store(struct dcu_ctx *c, const struct dsv_op_kv_store *p) {
        const int64_t T = p->slots->ne[0] * p->slots->ne[1];
        if (T == 0)
                return 0;
        dcu_kv_store_kernel<<<dcu_grid(T), KV_THREADS, 0, c->stream>>>(
                (uint8_t *)p->kv.base, dcu_kv_of(&p->kv), (const int32_t *)p->slots->data, (const float *)p->latent->data,
                dcu_ld(p->latent), (const float *)p->k_pe->data, dcu_ld(p->k_pe), (const float *)p->idx_key->data,
                dcu_ld(p->idx_key), c->err_word);
        DCU_LAUNCHED();
        return 0;
}

int dcu_kv_gather(struct dcu_ctx *c, const struct dsv_op_kv_gather *p) {
        if (p->n <= 0)
                return 0;
        dcu_kv_gather_kernel<<<dcu_grid(p->n), KV_THREADS, 0, c->stream>>>(
                (const uint8_t *)p->kv.base, dcu_kv_of(&p->kv), (const int32_t *)p->pages->data, (float *)p->latent->data,
                dcu_ld(p->latent), (float *)p->k_pe->data, dcu_ld(p->k_pe), c->err_word);
        DCU_LAUNCHED();
        return 0;
}
