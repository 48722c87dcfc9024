/* The paged KV cache pool: one allocation of backend memory, pages of page_tokens tokens
 * holding every layer's MLA record and indexer key (layout in kernels/backend.h), and
 * per-sequence page tables.
 *
 * Pages are reference-counted (a page may be in several sequences' tables) and full pages
 * may be content-addressed: registered under a key (the hash chain of every token up to
 * the page's end, see dsv_kv_chain_key) so that another sequence with the same prefix maps
 * the page instead of computing it. A page is then in exactly one of three places:
 *   free             on the free stack
 *   in use           ref > 0 (held by sequences; it may also be registered)
 *   cached           ref == 0 and registered: on an LRU list, reusable by a lookup, and
 *                    reclaimed (least recently released first) when the free stack is empty
 * A registered page is never written again: a sequence that truncates into a shared or
 * registered page first gets its own copy (copy-on-write) or, sole holder, unregisters it. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/model_config.h"
#include "kernels/backend.h"

#define DSV_KV_PAGE_TOKENS 64

/* The key of a full page: a 128-bit hash of the key before it and the page's tokens. */
struct dsv_kv_key {
        uint64_t h[2];
};

struct dsv_kv_page {
        int32_t ref;                 /* sequences holding it */
        bool registered;             /* in the content table under key */
        /* A pool with the MTP layer's records: the MTP record of the page's last position depends
         * on the token after the page, which its key does not cover. mtp_next is that token when
         * the record was computed before the page was registered, else -1. */
        int32_t mtp_next;
        int32_t lru_prev, lru_next;  /* cached pages (registered, ref 0); -1 ends */
        struct dsv_kv_key key, parent;
};

/* The page bytes of a remote pool (a follower node's pool under dsv32d --nodes N --parallel
 * ep,dp, kept by node 0 as bookkeeping only: daemon/runtime/ranks.h). write: page src's bytes
 * into page dst (bytes NULL), or bytes into dst (src -1), in the order made; the owner may
 * queue them as long as they are made before anything reads the pages. read: n pages' bytes
 * (page_bytes each, in order) into out, after every write made before. Both return 0 or
 * -errno (nothing is assumed written then). */
struct dsv_kv_remote {
        int (*write)(void *ud, int32_t dst, int32_t src, const void *bytes);
        int (*read)(void *ud, const int32_t *pages, int n, void *out);
        void *ud;
};

struct dsv_kv_pool {
        struct dsv_kv_layout layout;
        struct dsv_backend *be;
        void *base;
        size_t bytes;
        size_t page_bytes;   /* one page of every layer (contiguous) */
        int n_pages;
        int32_t *free_pages; /* stack */
        int n_free;
        struct dsv_kv_page *page;
        int32_t *page_tokens; /* [n_pages][page_tokens]: a registered page's tokens */
        uint32_t *table;      /* open addressing, page + 1 (0 empty) */
        size_t table_mask;
        int32_t lru_head, lru_tail; /* least recently cached first */
        int n_cached;         /* registered pages no sequence holds */
        int n_registered;
        uint64_t n_reclaimed, n_copied; /* cached pages reused for new data; copy-on-write copies */
        int peak_in_use;      /* the most pages sequences held at once (dsv_kv_pool_in_use) */
        /* Pools of the same geometry whose page bytes follow this one's (the KV pools of the
         * follower ranks of an ep,dp group, daemon/runtime/ranks.h): every page write made
         * outside a forward pass (a copy-on-write copy, dsv_kv_page_upload) is made in them
         * too; a forward pass writes them itself. Not owned; the caller keeps them idle while
         * it works on this pool. */
        struct dsv_kv_pool **mirrors;
        int n_mirrors;
        /* A mirror in another process (the follower nodes of dsv32d --nodes N, daemon/runtime/
         * ranks.h): told every such write after it was made here, to pass it on: a copy of
         * page src into dst (bytes NULL), or dst's new bytes (src -1). Optional. */
        void (*remote_write)(void *ud, int32_t dst, int32_t src, const void *bytes);
        void *remote_ud;
        /* A pool whose page bytes live in another process (dsv_kv_pool_new_remote): be and
         * base are NULL and every page write or read goes through these; NULL otherwise. */
        const struct dsv_kv_remote *remote;
};


struct dsv_kv_seq {
        int32_t *pages;
        int n_pages, cap;
        int len;     /* tokens stored */
        int mtp_len; /* positions whose MTP-layer record is stored (speculative decoding) */
        /* The data-parallel rank whose pool holds its pages (dsv32d's engine, which keeps one
         * pool per rank under --parallel ep,dp; 0 everywhere else). The pool functions ignore
         * it; dsv_kv_seq_release zeroes it with the rest. */
        int rank;
};

/* The layout for a config: its num_hidden_layers main layers, without the MTP layer. */
void dsv_kv_layout_init(struct dsv_kv_layout *L, const struct dsv_model_config *cfg, enum dsv_kv_format fmt,
                        int page_tokens);
/* The same with n_layers >= num_hidden_layers layers: the layers past the main ones hold the
 * records of the MTP layer's attention, in the same pages (dsv_model_kv_layers()). */
void dsv_kv_layout_init_layers(struct dsv_kv_layout *L, const struct dsv_model_config *cfg, enum dsv_kv_format fmt,
                               int n_layers, int page_tokens);
/* Bytes per token over all layers (MLA records + indexer keys + key scales). */
size_t dsv_kv_bytes_per_token(const struct dsv_kv_layout *L);

int dsv_kv_pool_new(struct dsv_backend *be, const struct dsv_model_config *cfg, enum dsv_kv_format fmt, int n_pages,
                    struct dsv_kv_pool **ret);
/* A pool whose pages hold n_layers layers (see dsv_kv_layout_init_layers; -EINVAL below
 * num_hidden_layers). */
int dsv_kv_pool_new_layers(struct dsv_backend *be, const struct dsv_model_config *cfg, enum dsv_kv_format fmt,
                           int n_layers, int n_pages, struct dsv_kv_pool **ret);
/* A pool of the same bookkeeping (page tables, free list, content table) whose bytes are
 * remote's (not copied; it must outlive the pool): nothing is allocated for them. */
int dsv_kv_pool_new_remote(const struct dsv_model_config *cfg, enum dsv_kv_format fmt, int n_layers, int n_pages,
                           const struct dsv_kv_remote *remote, struct dsv_kv_pool **ret);
void dsv_kv_pool_free(struct dsv_kv_pool *pool);
/* Pages a reservation can take now: free ones and cached ones (reclaimed, LRU first). */
static inline int dsv_kv_pool_available(const struct dsv_kv_pool *p) { return p->n_free + p->n_cached; }
/* Pages held by sequences. */
static inline int dsv_kv_pool_in_use(const struct dsv_kv_pool *p) { return p->n_pages - p->n_free - p->n_cached; }

/* Grows seq's page table to hold n tokens (new pages are its own); -ENOSPC when the pool has
 * not enough free or cached pages (then nothing changes). */
int dsv_kv_seq_reserve(struct dsv_kv_pool *pool, struct dsv_kv_seq *seq, int n);
/* Keeps the first n tokens of seq (0 <= n <= seq->len; else -EINVAL): len becomes n (and
 * mtp_len at most n) and the pages past DIV_ROUND_UP(n, page_tokens), reserved or filled,
 * are released. The kept tail page may still hold bytes of dropped tokens; they are
 * overwritten before anything reads them (a forward pass writes position len before
 * attending to it). A kept partial
 * tail page that is shared or registered is copied first (-ENOSPC/-EIO when it cannot be:
 * nothing changes). */
int dsv_kv_seq_truncate(struct dsv_kv_pool *pool, struct dsv_kv_seq *seq, int n);
/* Makes m (same layout and page count; else -EINVAL) a mirror of p (see struct dsv_kv_pool). */
int dsv_kv_pool_add_mirror(struct dsv_kv_pool *p, struct dsv_kv_pool *m);
/* Writes one page's bytes (page_bytes, host memory) into page of p and of its mirrors. */
int dsv_kv_page_upload(struct dsv_kv_pool *p, int32_t page, const void *bytes);
/* Copies page src's bytes into page dst of p (not its mirrors): a remote mirror replaying
 * the copy-on-write copies of the pool it follows. -EINVAL for pages out of range. */
int dsv_kv_page_copy(struct dsv_kv_pool *p, int32_t dst, int32_t src);
/* The bytes of n pages of p (page_bytes each, in order) into host memory: the backend's
 * download, or a remote pool's read. -EINVAL for a page out of range. */
int dsv_kv_pages_download(const struct dsv_kv_pool *p, const int32_t *pages, int n, void *out);
/* Whether p's bytes are host memory of this process (a writer thread may read them). */
static inline bool dsv_kv_pool_host(const struct dsv_kv_pool *p) { return p->base && p->be->host_memory; }
/* One more holder of a page in use (a snapshot being written), and its release. */
void dsv_kv_page_ref(struct dsv_kv_pool *p, int32_t page);
void dsv_kv_page_unref(struct dsv_kv_pool *p, int32_t page);

/* Moves seq's pages from pool `from` into pool `to` (another pool of the same geometry; else
 * -EINVAL): as many new pages of `to` get the bytes of the old ones, every layer's MLA record
 * and indexer key (and the MTP layer's records), through the backends (downloaded from
 * `from`, uploaded into `to` and its mirrors), then the old pages are released (registered
 * ones stay cached in `from`; a page another holder shares stays with it). len, mtp_len and
 * rank are kept (the caller says which rank `to` is); the new pages are not registered.
 * -ENOSPC when `to` has not seq->n_pages pages available, -ENOMEM, or the backend's error:
 * then nothing changed. */
int dsv_kv_seq_move(struct dsv_kv_pool *from, struct dsv_kv_pool *to, struct dsv_kv_seq *seq);
/* Releases all of seq's pages (registered ones stay cached when nobody holds them). */
void dsv_kv_seq_release(struct dsv_kv_pool *pool, struct dsv_kv_seq *seq);

/* The key of the page holding tokens[0, page_tokens) after the page whose key is parent
 * (for the first page: the scope's seed, dsv_kv_chain_seed). */
void dsv_kv_chain_key(const struct dsv_kv_key *parent, const int32_t *tokens, int n, struct dsv_kv_key *ret);
/* The seed of a chain: everything a reuse must agree on besides the tokens (the model, the
 * KV layout, who may share: a uid, or 0 for everyone). */
void dsv_kv_chain_seed(uint64_t model_fingerprint, uint64_t scope, struct dsv_kv_key *ret);
/* Registers page (full, held by a sequence, its content final) under key; its tokens are kept
 * to check lookups, and mtp_next (see struct dsv_kv_page; -1 when there is none). When another
 * page holds the same key already, or this one is registered, nothing happens. */
void dsv_kv_page_register(struct dsv_kv_pool *p, int32_t page, const struct dsv_kv_key *key,
                          const struct dsv_kv_key *parent, const int32_t *tokens, int32_t mtp_next);
/* The registered page of (key, parent, tokens), or -1. */
int32_t dsv_kv_page_lookup(const struct dsv_kv_pool *p, const struct dsv_kv_key *key, const struct dsv_kv_key *parent,
                           const int32_t *tokens);
/* Appends a registered page to seq, whose length must be a multiple of page_tokens and which
 * holds no pages beyond its length: seq->len grows by page_tokens. */
int dsv_kv_seq_append_cached(struct dsv_kv_pool *p, struct dsv_kv_seq *seq, int32_t page);
