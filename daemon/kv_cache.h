/* The paged KV cache pool: one allocation of backend memory, pages of page_tokens tokens
 * holding every layer's MLA record and indexer key (layout in kernels/backend.h), a free
 * list, and per-sequence page tables. (Content-addressed prefix sharing comes with the
 * serving engine; sessions keep a sequence across requests and truncate it to the prefix a
 * new prompt shares with it.) */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/model_config.h"
#include "kernels/backend.h"

#define DSV_KV_PAGE_TOKENS 64

struct dsv_kv_pool {
        struct dsv_kv_layout layout;
        struct dsv_backend *be;
        void *base;
        size_t bytes;
        int n_pages;
        int32_t *free_pages; /* stack */
        int n_free;
};

struct dsv_kv_seq {
        int32_t *pages;
        int n_pages, cap;
        int len; /* tokens stored */
};

/* The layout for a config (n_layers main layers, without the MTP layer). */
void dsv_kv_layout_init(struct dsv_kv_layout *L, const struct dsv_model_config *cfg, enum dsv_kv_format fmt,
                        int page_tokens);
/* Bytes per token over all layers (MLA records + indexer keys + key scales). */
size_t dsv_kv_bytes_per_token(const struct dsv_kv_layout *L);

int dsv_kv_pool_new(struct dsv_backend *be, const struct dsv_model_config *cfg, enum dsv_kv_format fmt, int n_pages,
                    struct dsv_kv_pool **ret);
void dsv_kv_pool_free(struct dsv_kv_pool *pool);
/* Grows seq's page table to hold n tokens; -ENOSPC when the pool is exhausted. */
int dsv_kv_seq_reserve(struct dsv_kv_pool *pool, struct dsv_kv_seq *seq, int n);
/* Keeps the first n tokens of seq (0 <= n <= seq->len; else -EINVAL): len becomes n and
 * the pages past DIV_ROUND_UP(n, page_tokens), reserved or filled, go back to the pool.
 * The kept tail page may still hold bytes of dropped tokens; they are overwritten before
 * anything reads them (a forward pass writes position len before attending to it). */
int dsv_kv_seq_truncate(struct dsv_kv_pool *pool, struct dsv_kv_seq *seq, int n);
/* Returns all of seq's pages to the pool. */
void dsv_kv_seq_release(struct dsv_kv_pool *pool, struct dsv_kv_seq *seq);

/* kv-cache-mb = auto: how many pages of page_bytes (page_tokens tokens each) the pool gets.
 * Room for DSV_KV_AUTO_CONTEXTS context windows of max_context tokens, but at most half of
 * mem_avail, the bytes still available (after the weights; 0: unknown, then at most
 * DSV_KV_AUTO_UNKNOWN_MB); at least DSV_KV_AUTO_MIN_PAGES. `why` says what it chose and
 * which bound applied. -ENOMEM, with the guidance in `why`, when half of mem_avail does not
 * hold DSV_KV_AUTO_MIN_PAGES. */
#define DSV_KV_AUTO_CONTEXTS 4
#define DSV_KV_AUTO_MIN_PAGES 16
#define DSV_KV_AUTO_UNKNOWN_MB 1024
int dsv_kv_auto_pages(uint64_t page_bytes, int page_tokens, int64_t max_context, uint64_t mem_avail, char *why, size_t n);
