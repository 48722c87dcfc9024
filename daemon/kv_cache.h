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
        int len;     /* tokens stored */
        int mtp_len; /* positions whose MTP-layer record is stored (speculative decoding) */
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
void dsv_kv_pool_free(struct dsv_kv_pool *pool);
/* Grows seq's page table to hold n tokens; -ENOSPC when the pool is exhausted. */
int dsv_kv_seq_reserve(struct dsv_kv_pool *pool, struct dsv_kv_seq *seq, int n);
/* Keeps the first n tokens of seq (0 <= n <= seq->len; else -EINVAL): len becomes n (and
 * mtp_len at most n) and the pages past DIV_ROUND_UP(n, page_tokens), reserved or filled, go back to the pool.
 * The kept tail page may still hold bytes of dropped tokens; they are overwritten before
 * anything reads them (a forward pass writes position len before attending to it). */
int dsv_kv_seq_truncate(struct dsv_kv_pool *pool, struct dsv_kv_seq *seq, int n);
/* Returns all of seq's pages to the pool. */
void dsv_kv_seq_release(struct dsv_kv_pool *pool, struct dsv_kv_seq *seq);
