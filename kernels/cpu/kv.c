/* Paged KV cache writes and reads on the CPU (layout: kernels/backend.h).
 *
 * FP8 record of one token (671B sizes: 512 + 4*4 + 64*2 = 656 bytes):
 *   [0, kv_lora)                 e4m3 codes of the RMS-normed latent (act_quant per 128)
 *   [kv_lora, +4*nb)             fp32 scales, one per 128 latent values
 *   [.., +2*rope)                bf16 k_pe (already rotated)
 * The reference FP8-round-trips the latent before caching it, so this is lossless. */
#include "config.h"

#include "kernels/cpu/cpu.h"

static uint8_t *mla_record(const struct dsv_kv_ref *kv, int64_t slot) {
        const struct dsv_kv_layout *L = kv->layout;
        return dsv_kv_layer_page(kv, slot / L->page_tokens) + (size_t)(slot % L->page_tokens) * L->mla_rec;
}

void dsv_kv_read_mla(const struct dsv_kv_ref *kv, int64_t slot, float *latent, float *k_pe) {
        const struct dsv_kv_layout *L = kv->layout;
        const uint8_t *rec = mla_record(kv, slot);
        if (L->format == DSV_KV_F32) {
                memcpy(latent, rec, (size_t)L->kv_lora * sizeof(float));
                memcpy(k_pe, rec + (size_t)L->kv_lora * sizeof(float), (size_t)L->rope * sizeof(float));
                return;
        }
        const int nb = DIV_ROUND_UP(L->kv_lora, DSV_QBLOCK);
        float sc[64];
        memcpy(sc, rec + L->kv_lora, (size_t)nb * sizeof(float));
        dsv_e4m3_row_to_f32(rec, L->kv_lora, latent);
        for (int i = 0; i < L->kv_lora; i++)
                latent[i] *= sc[i / DSV_QBLOCK];
        const uint8_t *pe = rec + L->kv_lora + (size_t)nb * sizeof(float);
        for (int i = 0; i < L->rope; i++) {
                uint16_t h;
                memcpy(&h, pe + 2 * (size_t)i, 2);
                k_pe[i] = dsv_bf16_to_f32(h);
        }
}

static void kv_store_rows(void *v, int64_t t0, int64_t t1, int thread) {
        const struct dsv_op_kv_store *p = v;
        const struct dsv_kv_ref *kv = &p->kv;
        const struct dsv_kv_layout *L = kv->layout;
        const int32_t *slots = p->slots->data;

        for (int64_t t = t0; t < t1; t++) {
                const float *lat = dsv_tensor_row(p->latent, t), *pe = dsv_tensor_row(p->k_pe, t);
                const float *key = dsv_tensor_row(p->idx_key, t);
                int64_t slot = slots[t], off = slot % L->page_tokens;
                uint8_t *page = dsv_kv_layer_page(kv, slot / L->page_tokens);
                uint8_t *rec = page + (size_t)off * L->mla_rec;
                if (L->format == DSV_KV_F32) {
                        memcpy(rec, lat, (size_t)L->kv_lora * sizeof(float));
                        memcpy(rec + (size_t)L->kv_lora * sizeof(float), pe, (size_t)L->rope * sizeof(float));
                        memcpy(page + L->idx_off + (size_t)off * L->idx_rec, key, (size_t)L->index_dim * sizeof(float));
                        continue;
                }
                const int nb = DIV_ROUND_UP(L->kv_lora, DSV_QBLOCK);
                float sc[64];
                dsv_quant_row(lat, L->kv_lora, rec, sc);
                memcpy(rec + L->kv_lora, sc, (size_t)nb * sizeof(float));
                uint8_t *pr = rec + L->kv_lora + (size_t)nb * sizeof(float);
                for (int i = 0; i < L->rope; i++) {
                        uint16_t h = dsv_f32_to_bf16(pe[i]);
                        memcpy(pr + 2 * (size_t)i, &h, 2);
                }
                dsv_quant_row(key, L->index_dim, page + L->idx_off + (size_t)off * L->idx_rec, sc);
                memcpy(page + L->idx_scale_off + (size_t)off * L->idx_scale_rec, sc, L->idx_scale_rec);
        }
}

int dsv_cpu_kv_store(const struct dsv_op_kv_store *p) {
        const int64_t T = p->slots->ne[0] * p->slots->ne[1];
        dsv_par_for(T, T * p->kv.layout->kv_lora, kv_store_rows, (void *)p);
        return 0;
}

static void kv_gather_rows(void *v, int64_t i0, int64_t i1, int thread) {
        const struct dsv_op_kv_gather *p = v;
        const struct dsv_kv_layout *L = p->kv.layout;
        const int32_t *pages = p->pages->data;
        for (int64_t i = i0; i < i1; i++)
                dsv_kv_read_mla(&p->kv, dsv_kv_slot(L, pages, i), dsv_tensor_row(p->latent, i), dsv_tensor_row(p->k_pe, i));
}

int dsv_cpu_kv_gather(const struct dsv_op_kv_gather *p) {
        dsv_par_for(p->n, p->n * p->kv.layout->kv_lora, kv_gather_rows, (void *)p);
        return 0;
}
