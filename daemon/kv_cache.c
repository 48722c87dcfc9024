/* KV-cache pool, page tables, page sharing and the content table (see kv_cache.h). */
#include "config.h"

#include "daemon/kv_cache.h"

#include "kernels/base.h"
#include "kernels/numerics.h"

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

/* The bookkeeping of a pool (no bytes yet). */
static int pool_new(struct dsv_backend *be, const struct dsv_model_config *cfg, enum dsv_kv_format fmt, int n_layers,
                    int n_pages, struct dsv_kv_pool **ret) {
        struct dsv_kv_pool *p;
        size_t cap = 16;

        if (n_pages <= 0 || n_layers < cfg->num_hidden_layers)
                return -EINVAL;
        p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        dsv_kv_layout_init_layers(&p->layout, cfg, fmt, n_layers, DSV_KV_PAGE_TOKENS);
        p->be = be;
        p->n_pages = n_pages;
        p->page_bytes = (size_t)p->layout.n_layers * p->layout.layer_page_bytes;
        p->bytes = (size_t)n_pages * p->page_bytes;
        while (cap < 2 * (size_t)n_pages)
                cap *= 2;
        p->free_pages = malloc((size_t)n_pages * sizeof(int32_t));
        p->page = calloc((size_t)n_pages, sizeof(*p->page));
        p->page_tokens = malloc((size_t)n_pages * (size_t)p->layout.page_tokens * sizeof(int32_t));
        p->table = calloc(cap, sizeof(uint32_t));
        p->table_mask = cap - 1;
        p->lru_head = p->lru_tail = -1;
        if (!p->free_pages || !p->page || !p->page_tokens || !p->table) {
                dsv_kv_pool_free(p);
                return -ENOMEM;
        }
        for (int i = 0; i < n_pages; i++)
                p->free_pages[i] = n_pages - 1 - i;
        p->n_free = n_pages;
        *ret = p;
        return 0;
}

int dsv_kv_pool_new_layers(struct dsv_backend *be, const struct dsv_model_config *cfg, enum dsv_kv_format fmt,
                           int n_layers, int n_pages, struct dsv_kv_pool **ret) {
        struct dsv_kv_pool *p;
        int r;

        if ((r = pool_new(be, cfg, fmt, n_layers, n_pages, &p)) < 0)
                return r;
        r = be->ops->alloc(be, p->bytes, &p->base);
        if (r < 0) {
                p->base = NULL;
                dsv_kv_pool_free(p);
                return r;
        }
        /* zeroed so that unused bytes (alignment padding) are deterministic */
        be->ops->fill(be, p->base, 0, p->bytes);
        *ret = p;
        return 0;
}

int dsv_kv_pool_new_remote(const struct dsv_model_config *cfg, enum dsv_kv_format fmt, int n_layers, int n_pages,
                           const struct dsv_kv_remote *remote, struct dsv_kv_pool **ret) {
        struct dsv_kv_pool *p;
        int r;

        if (!remote || !remote->write || !remote->read)
                return -EINVAL;
        if ((r = pool_new(NULL, cfg, fmt, n_layers, n_pages, &p)) < 0)
                return r;
        p->remote = remote;
        *ret = p;
        return 0;
}

void dsv_kv_pool_free(struct dsv_kv_pool *p) {
        if (!p)
                return;
        if (p->base)
                p->be->ops->dealloc(p->be, p->base, p->bytes);
        free(p->free_pages);
        free(p->page);
        free(p->page_tokens);
        free(p->table);
        free(p->mirrors);
        free(p);
}

/* ------------------------------------------------------------------ the content table */

static size_t slot_of(const struct dsv_kv_pool *p, const struct dsv_kv_key *k) { return (size_t)k->h[0] & p->table_mask; }

static bool key_eq(const struct dsv_kv_key *a, const struct dsv_kv_key *b) { return a->h[0] == b->h[0] && a->h[1] == b->h[1]; }

static void lru_remove(struct dsv_kv_pool *p, int32_t pg) {
        struct dsv_kv_page *m = &p->page[pg];
        if (m->lru_prev >= 0)
                p->page[m->lru_prev].lru_next = m->lru_next;
        else
                p->lru_head = m->lru_next;
        if (m->lru_next >= 0)
                p->page[m->lru_next].lru_prev = m->lru_prev;
        else
                p->lru_tail = m->lru_prev;
        m->lru_prev = m->lru_next = -1;
}

static void lru_append(struct dsv_kv_pool *p, int32_t pg) {
        struct dsv_kv_page *m = &p->page[pg];
        m->lru_next = -1;
        m->lru_prev = p->lru_tail;
        if (p->lru_tail >= 0)
                p->page[p->lru_tail].lru_next = pg;
        else
                p->lru_head = pg;
        p->lru_tail = pg;
}

/* Takes page pg out of the table (linear probing with backward-shift deletion). */
static void table_remove(struct dsv_kv_pool *p, int32_t pg) {
        size_t i = slot_of(p, &p->page[pg].key);
        while (p->table[i] && p->table[i] != (uint32_t)pg + 1)
                i = (i + 1) & p->table_mask;
        if (!p->table[i])
                return;
        p->table[i] = 0;
        for (size_t j = (i + 1) & p->table_mask; p->table[j]; j = (j + 1) & p->table_mask) {
                size_t home = slot_of(p, &p->page[p->table[j] - 1].key);
                /* the entry at j may move to the hole at i when its home is not in (i, j] */
                if ((j > i && (home <= i || home > j)) || (j < i && home <= i && home > j)) {
                        p->table[i] = p->table[j];
                        p->table[j] = 0;
                        i = j;
                }
        }
}

static void unregister(struct dsv_kv_pool *p, int32_t pg) {
        struct dsv_kv_page *m = &p->page[pg];
        if (!m->registered)
                return;
        table_remove(p, pg);
        m->registered = false;
        p->n_registered--;
        if (m->ref == 0) {
                lru_remove(p, pg);
                p->n_cached--;
        }
}

void dsv_kv_chain_seed(uint64_t fingerprint, uint64_t scope, struct dsv_kv_key *ret) {
        ret->h[0] = dsv_mix64(fingerprint ^ 0x6b76636861696e31ull) ^ dsv_mix64(scope + 0x1234567);
        ret->h[1] = dsv_mix64(dsv_mix64(scope ^ 0x6b76636861696e32ull) + fingerprint);
}

void dsv_kv_chain_key(const struct dsv_kv_key *parent, const int32_t *tokens, int n, struct dsv_kv_key *ret) {
        uint64_t a = parent->h[0], b = parent->h[1];
        for (int i = 0; i < n; i++) {
                uint64_t t = (uint32_t)tokens[i];
                a = dsv_mix64(a ^ (t + 0x9e3779b97f4a7c15ull));
                b = dsv_mix64(b + t * 0xbf58476d1ce4e5b9ull + (uint64_t)i);
        }
        ret->h[0] = a;
        ret->h[1] = b ^ dsv_mix64((uint64_t)n);
}

void dsv_kv_page_register(struct dsv_kv_pool *p, int32_t pg, const struct dsv_kv_key *key, const struct dsv_kv_key *parent,
                          const int32_t *tokens, int32_t mtp_next) {
        struct dsv_kv_page *m = &p->page[pg];
        const size_t pt = (size_t)p->layout.page_tokens;
        size_t i;
        if (m->registered || m->ref <= 0)
                return;
        for (i = slot_of(p, key); p->table[i]; i = (i + 1) & p->table_mask)
                if (key_eq(&p->page[p->table[i] - 1].key, key))
                        return; /* the same content is registered already */
        m->key = *key;
        m->parent = *parent;
        m->mtp_next = mtp_next;
        memcpy(p->page_tokens + (size_t)pg * pt, tokens, pt * sizeof(int32_t));
        m->registered = true;
        p->table[i] = (uint32_t)pg + 1;
        p->n_registered++;
}

int32_t dsv_kv_page_lookup(const struct dsv_kv_pool *p, const struct dsv_kv_key *key, const struct dsv_kv_key *parent,
                           const int32_t *tokens) {
        const size_t pt = (size_t)p->layout.page_tokens;
        for (size_t i = slot_of(p, key); p->table[i]; i = (i + 1) & p->table_mask) {
                int32_t pg = (int32_t)p->table[i] - 1;
                if (key_eq(&p->page[pg].key, key) && key_eq(&p->page[pg].parent, parent) &&
                    !memcmp(p->page_tokens + (size_t)pg * pt, tokens, pt * sizeof(int32_t)))
                        return pg;
        }
        return -1;
}

/* ------------------------------------------------------------------ pages of sequences */

/* A page for new data: a free one, else the least recently cached one. */
static int32_t page_take(struct dsv_kv_pool *p) {
        int32_t pg;
        if (p->n_free > 0) {
                pg = p->free_pages[--p->n_free];
        } else if (p->lru_head >= 0) {
                pg = p->lru_head;
                unregister(p, pg);
                p->n_reclaimed++;
        } else {
                return -1;
        }
        p->page[pg].ref = 1;
        p->page[pg].lru_prev = p->page[pg].lru_next = -1;
        p->peak_in_use = MAX(p->peak_in_use, dsv_kv_pool_in_use(p));
        return pg;
}

static void page_put(struct dsv_kv_pool *p, int32_t pg) {
        struct dsv_kv_page *m = &p->page[pg];
        if (--m->ref > 0)
                return;
        if (m->registered) {
                lru_append(p, pg);
                p->n_cached++;
        } else {
                p->free_pages[p->n_free++] = pg;
        }
}

void dsv_kv_page_ref(struct dsv_kv_pool *p, int32_t pg) {
        if (pg >= 0 && pg < p->n_pages && p->page[pg].ref > 0)
                p->page[pg].ref++;
}

void dsv_kv_page_unref(struct dsv_kv_pool *p, int32_t pg) {
        if (pg >= 0 && pg < p->n_pages && p->page[pg].ref > 0)
                page_put(p, pg);
}

static int seq_grow(struct dsv_kv_seq *s, int need) {
        if (need > s->cap) {
                int cap = MAX(need, 2 * s->cap);
                int32_t *v = realloc(s->pages, (size_t)cap * sizeof(int32_t));
                if (!v)
                        return -ENOMEM;
                s->pages = v;
                s->cap = cap;
        }
        return 0;
}

int dsv_kv_seq_reserve(struct dsv_kv_pool *p, struct dsv_kv_seq *s, int n) {
        int need = DIV_ROUND_UP(n, p->layout.page_tokens), r;
        if (need <= s->n_pages)
                return 0;
        if (need - s->n_pages > dsv_kv_pool_available(p))
                return -ENOSPC;
        if ((r = seq_grow(s, need)) < 0)
                return r;
        while (s->n_pages < need)
                s->pages[s->n_pages++] = page_take(p);
        return 0;
}

int dsv_kv_seq_append_cached(struct dsv_kv_pool *p, struct dsv_kv_seq *s, int32_t pg) {
        const int pt = p->layout.page_tokens;
        struct dsv_kv_page *m;
        int r;
        if (pg < 0 || pg >= p->n_pages || !p->page[pg].registered || s->len != s->n_pages * pt)
                return -EINVAL;
        if ((r = seq_grow(s, s->n_pages + 1)) < 0)
                return r;
        m = &p->page[pg];
        if (m->ref == 0) {
                lru_remove(p, pg);
                p->n_cached--;
                p->peak_in_use = MAX(p->peak_in_use, dsv_kv_pool_in_use(p));
        }
        m->ref++;
        s->pages[s->n_pages++] = pg;
        s->len += pt;
        return 0;
}

/* The bytes of page src into page dst of p. */
static int page_copy(struct dsv_kv_pool *p, int32_t dst_page, int32_t src_page) {
        if (p->remote)
                return p->remote->write(p->remote->ud, dst_page, src_page, NULL);
        void *dst = (uint8_t *)p->base + (size_t)dst_page * p->page_bytes;
        const void *src = (const uint8_t *)p->base + (size_t)src_page * p->page_bytes;
        void *tmp;
        int r;
        if (p->be->ops->copy)
                return p->be->ops->copy(p->be, dst, src, p->page_bytes);
        if (!(tmp = malloc(p->page_bytes)))
                return -ENOMEM;
        r = p->be->ops->download(p->be, tmp, src, p->page_bytes);
        if (r >= 0)
                r = p->be->ops->upload(p->be, dst, tmp, p->page_bytes);
        free(tmp);
        return r;
}

int dsv_kv_pool_add_mirror(struct dsv_kv_pool *p, struct dsv_kv_pool *m) {
        struct dsv_kv_pool **v;
        if (!m || m == p || m->n_pages != p->n_pages || m->page_bytes != p->page_bytes ||
            m->layout.format != p->layout.format || m->layout.n_layers != p->layout.n_layers ||
            m->layout.page_tokens != p->layout.page_tokens || m->layout.layer_page_bytes != p->layout.layer_page_bytes)
                return -EINVAL;
        if (!(v = realloc(p->mirrors, (size_t)(p->n_mirrors + 1) * sizeof(*v))))
                return -ENOMEM;
        v[p->n_mirrors++] = m;
        p->mirrors = v;
        return 0;
}

int dsv_kv_page_upload(struct dsv_kv_pool *p, int32_t page, const void *bytes) {
        int r;
        if (page < 0 || page >= p->n_pages)
                return -EINVAL;
        if (p->remote)
                return p->remote->write(p->remote->ud, page, -1, bytes);
        r = p->be->ops->upload(p->be, (uint8_t *)p->base + (size_t)page * p->page_bytes, bytes, p->page_bytes);
        for (int i = 0; r >= 0 && i < p->n_mirrors; i++)
                r = p->mirrors[i]->be->ops->upload(p->mirrors[i]->be, (uint8_t *)p->mirrors[i]->base + (size_t)page * p->page_bytes,
                                                   bytes, p->page_bytes);
        if (r >= 0 && p->remote_write)
                p->remote_write(p->remote_ud, page, -1, bytes);
        return r;
}

int dsv_kv_page_copy(struct dsv_kv_pool *p, int32_t dst, int32_t src) {
        if (dst < 0 || dst >= p->n_pages || src < 0 || src >= p->n_pages)
                return -EINVAL;
        return dst == src ? 0 : page_copy(p, dst, src);
}

int dsv_kv_pages_download(const struct dsv_kv_pool *p, const int32_t *pages, int n, void *out) {
        int r = 0;
        for (int i = 0; i < n; i++)
                if (pages[i] < 0 || pages[i] >= p->n_pages)
                        return -EINVAL;
        if (p->remote)
                return n ? p->remote->read(p->remote->ud, pages, n, out) : 0;
        for (int i = 0; r >= 0 && i < n; i++)
                r = p->be->ops->download(p->be, (uint8_t *)out + (size_t)i * p->page_bytes,
                                         (const uint8_t *)p->base + (size_t)pages[i] * p->page_bytes, p->page_bytes);
        return r;
}

int dsv_kv_seq_truncate(struct dsv_kv_pool *p, struct dsv_kv_seq *s, int n) {
        const int pt = p->layout.page_tokens;
        int keep;
        if (n < 0 || n > s->len)
                return -EINVAL;
        keep = DIV_ROUND_UP(n, pt);
        if (n % pt) {
                /* the kept tail page will be written at n: it must be this sequence's alone */
                int32_t tail = s->pages[keep - 1];
                struct dsv_kv_page *m = &p->page[tail];
                if (m->ref > 1) {
                        int32_t copy;
                        int r;
                        if (dsv_kv_pool_available(p) < 1)
                                return -ENOSPC;
                        copy = page_take(p);
                        r = page_copy(p, copy, tail);
                        for (int i = 0; r >= 0 && i < p->n_mirrors; i++)
                                r = page_copy(p->mirrors[i], copy, tail);
                        if (r >= 0 && p->remote_write)
                                p->remote_write(p->remote_ud, copy, tail, NULL);
                        if (r < 0) {
                                page_put(p, copy);
                                return r;
                        }
                        page_put(p, tail);
                        s->pages[keep - 1] = copy;
                        p->n_copied++;
                } else if (m->registered) {
                        unregister(p, tail);
                }
        }
        while (s->n_pages > keep)
                page_put(p, s->pages[--s->n_pages]);
        s->len = n;
        s->mtp_len = MIN(s->mtp_len, n);
        return 0;
}

int dsv_kv_seq_move(struct dsv_kv_pool *from, struct dsv_kv_pool *to, struct dsv_kv_seq *s) {
        const int pt = from->layout.page_tokens;
        struct dsv_kv_seq n = {0};
        void *tmp = NULL;
        int r = 0;
        if (from == to || to->page_bytes != from->page_bytes || to->layout.format != from->layout.format ||
            to->layout.n_layers != from->layout.n_layers || to->layout.page_tokens != pt ||
            to->layout.layer_page_bytes != from->layout.layer_page_bytes)
                return -EINVAL;
        if (s->n_pages == 0)
                return 0;
        if (s->n_pages > dsv_kv_pool_available(to))
                return -ENOSPC;
        if (!(tmp = malloc(from->page_bytes)))
                return -ENOMEM;
        if ((r = dsv_kv_seq_reserve(to, &n, s->n_pages * pt)) < 0)
                goto fail;
        for (int i = 0; i < s->n_pages; i++) {
                r = dsv_kv_pages_download(from, &s->pages[i], 1, tmp);
                if (r < 0 || (r = dsv_kv_page_upload(to, n.pages[i], tmp)) < 0)
                        goto fail;
        }
        free(tmp);
        n.len = s->len;
        n.mtp_len = s->mtp_len;
        n.rank = s->rank;
        dsv_kv_seq_release(from, s);
        *s = n;
        return 0;
fail:
        dsv_kv_seq_release(to, &n);
        free(tmp);
        return r;
}

void dsv_kv_seq_release(struct dsv_kv_pool *p, struct dsv_kv_seq *s) {
        for (int i = s->n_pages - 1; i >= 0; i--)
                page_put(p, s->pages[i]);
        free(s->pages);
        memset(s, 0, sizeof(*s));
}

