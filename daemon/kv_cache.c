/* KV-cache pool and page tables (see kv_cache.h). */
#include "config.h"

#include "daemon/kv_cache.h"

void dsv_kv_layout_init(struct dsv_kv_layout *L, const struct dsv_model_config *c, enum dsv_kv_format fmt,
                        int page_tokens) {
        dsv_kv_layout_make(L, fmt, c->num_hidden_layers, c->kv_lora_rank, c->qk_rope_head_dim, c->index_head_dim,
                           page_tokens);
}

size_t dsv_kv_bytes_per_token(const struct dsv_kv_layout *L) {
        return (size_t)L->n_layers * (L->mla_rec + L->idx_rec + L->idx_scale_rec);
}

int dsv_kv_pool_new(struct dsv_backend *be, const struct dsv_model_config *cfg, enum dsv_kv_format fmt, int n_pages,
                    struct dsv_kv_pool **ret) {
        struct dsv_kv_pool *p = calloc(1, sizeof(*p));
        int r;
        if (!p)
                return -ENOMEM;
        if (n_pages <= 0) {
                free(p);
                return -EINVAL;
        }
        dsv_kv_layout_init(&p->layout, cfg, fmt, DSV_KV_PAGE_TOKENS);
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
        return 0;
}

void dsv_kv_seq_release(struct dsv_kv_pool *p, struct dsv_kv_seq *s) {
        for (int i = s->n_pages - 1; i >= 0; i--)
                p->free_pages[p->n_free++] = s->pages[i];
        free(s->pages);
        memset(s, 0, sizeof(*s));
}

int dsv_kv_auto_pages(uint64_t page_bytes, int page_tokens, int64_t max_context, uint64_t mem_avail, char *why, size_t n) {
        uint64_t want, cap, pages;
        int64_t ctx = max_context > 0 ? max_context : 4096;
        if (!page_bytes || page_tokens < 1)
                return -EINVAL;
        want = ((uint64_t)ctx * DSV_KV_AUTO_CONTEXTS + (uint64_t)page_tokens - 1) / (uint64_t)page_tokens;
        cap = mem_avail ? mem_avail / 2 / page_bytes : ((uint64_t)DSV_KV_AUTO_UNKNOWN_MB << 20) / page_bytes;
        if (cap < DSV_KV_AUTO_MIN_PAGES) {
                snprintf(why, n,
                         "not enough memory for the KV cache: %.1f MiB are available after the weights, and half of it "
                         "does not hold %d pages of %.1f MiB (%d tokens each); free memory, or set kv-cache-mb (dsv32d(8), "
                         "KV CACHE)",
                         mem_avail / 1048576.0, DSV_KV_AUTO_MIN_PAGES, page_bytes / 1048576.0, page_tokens);
                return -ENOMEM;
        }
        pages = want < cap ? want : cap;
        if (pages < DSV_KV_AUTO_MIN_PAGES)
                pages = DSV_KV_AUTO_MIN_PAGES;
        if (pages > INT32_MAX / 2)
                pages = INT32_MAX / 2;
        if (pages == want || pages == DSV_KV_AUTO_MIN_PAGES)
                snprintf(why, n, "kv-cache-mb = auto: %llu pages (%.0f MiB, %llu tokens): %d context windows of %lld tokens",
                         (unsigned long long)pages, (double)(pages * page_bytes) / 1048576.0,
                         (unsigned long long)(pages * (uint64_t)page_tokens), DSV_KV_AUTO_CONTEXTS, (long long)ctx);
        else if (mem_avail)
                snprintf(why, n,
                         "kv-cache-mb = auto: %llu pages (%.0f MiB, %llu tokens, %.2f context windows): half of the %.0f MiB "
                         "available after the weights",
                         (unsigned long long)pages, (double)(pages * page_bytes) / 1048576.0,
                         (unsigned long long)(pages * (uint64_t)page_tokens), (double)(pages * (uint64_t)page_tokens) / (double)ctx,
                         mem_avail / 1048576.0);
        else
                snprintf(why, n,
                         "kv-cache-mb = auto: %llu pages (%.0f MiB, %llu tokens): the backend's free memory is unknown, so at "
                         "most %d MiB; set kv-cache-mb to size it (dsv32d(8), KV CACHE)",
                         (unsigned long long)pages, (double)(pages * page_bytes) / 1048576.0,
                         (unsigned long long)(pages * (uint64_t)page_tokens), DSV_KV_AUTO_UNKNOWN_MB);
        return (int)pages;
}
