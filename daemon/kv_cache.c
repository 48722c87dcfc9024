/* KV-cache pool and page tables (see kv_cache.h). */
#include "config.h"

#include "daemon/kv_cache.h"

void dsv_kv_layout_init(struct dsv_kv_layout *L, const struct dsv_model_config *c, enum dsv_kv_format fmt,
                        int page_tokens) {
        dsv_kv_layout_init_layers(L, c, fmt, c->num_hidden_layers, page_tokens);
}

void dsv_kv_layout_init_layers(struct dsv_kv_layout *L, const struct dsv_model_config *c, enum dsv_kv_format fmt,
                               int n_layers, int page_tokens) {
        dsv_kv_layout_make(L, fmt, n_layers, c->kv_lora_rank, c->qk_rope_head_dim, c->index_head_dim, page_tokens);
}

size_t dsv_kv_bytes_per_token(const struct dsv_kv_layout *L) {
        return (size_t)L->n_layers * (L->mla_rec + L->idx_rec + L->idx_scale_rec);
}

int dsv_kv_pool_new(struct dsv_backend *be, const struct dsv_model_config *cfg, enum dsv_kv_format fmt, int n_pages,
                    struct dsv_kv_pool **ret) {
        return dsv_kv_pool_new_layers(be, cfg, fmt, cfg->num_hidden_layers, n_pages, ret);
}

int dsv_kv_pool_new_layers(struct dsv_backend *be, const struct dsv_model_config *cfg, enum dsv_kv_format fmt,
                           int n_layers, int n_pages, struct dsv_kv_pool **ret) {
        struct dsv_kv_pool *p;
        int r;
        if (n_pages <= 0 || n_layers < cfg->num_hidden_layers)
                return -EINVAL;
        p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        dsv_kv_layout_init_layers(&p->layout, cfg, fmt, n_layers, DSV_KV_PAGE_TOKENS);
        p->be = be;
        p->n_pages = n_pages;
        p->bytes = (size_t)n_pages * (size_t)p->layout.n_layers * p->layout.layer_page_bytes;
        p->free_pages = malloc((size_t)n_pages * sizeof(int32_t));
        if (!p->free_pages) {
                free(p);
                return -ENOMEM;
        }
        r = be->ops->alloc(be, p->bytes, &p->base);
        if (r < 0) {
                free(p->free_pages);
                free(p);
                return r;
        }
        /* zeroed so that unused bytes (alignment padding) are deterministic */
        be->ops->fill(be, p->base, 0, p->bytes);
        for (int i = 0; i < n_pages; i++)
                p->free_pages[i] = n_pages - 1 - i;
        p->n_free = n_pages;
        *ret = p;
        return 0;
}

void dsv_kv_pool_free(struct dsv_kv_pool *p) {
        if (!p)
                return;
        p->be->ops->dealloc(p->be, p->base, p->bytes);
        free(p->free_pages);
        free(p);
}

int dsv_kv_seq_reserve(struct dsv_kv_pool *p, struct dsv_kv_seq *s, int n) {
        int need = DIV_ROUND_UP(n, p->layout.page_tokens);
        if (need <= s->n_pages)
                return 0;
        if (need - s->n_pages > p->n_free)
                return -ENOSPC;
        if (need > s->cap) {
                int cap = MAX(need, 2 * s->cap);
                int32_t *v = realloc(s->pages, (size_t)cap * sizeof(int32_t));
                if (!v)
                        return -ENOMEM;
                s->pages = v;
                s->cap = cap;
        }
        while (s->n_pages < need)
                s->pages[s->n_pages++] = p->free_pages[--p->n_free];
        return 0;
}

int dsv_kv_seq_truncate(struct dsv_kv_pool *p, struct dsv_kv_seq *s, int n) {
        int keep;
        if (n < 0 || n > s->len)
                return -EINVAL;
        keep = DIV_ROUND_UP(n, p->layout.page_tokens);
        while (s->n_pages > keep)
                p->free_pages[p->n_free++] = s->pages[--s->n_pages];
        s->len = n;
        s->mtp_len = MIN(s->mtp_len, n);
        return 0;
}

void dsv_kv_seq_release(struct dsv_kv_pool *p, struct dsv_kv_seq *s) {
        for (int i = s->n_pages - 1; i >= 0; i--)
                p->free_pages[p->n_free++] = s->pages[i];
        free(s->pages);
        memset(s, 0, sizeof(*s));
}
