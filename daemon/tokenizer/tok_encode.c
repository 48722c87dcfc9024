/* Encode: lossy UTF-8 clean-up, added-token extraction (two passes, leftmost-longest, as
 * Hugging Face's AddedVocabulary), the Split pre-tokenizers (PCRE2, Oniguruma's find_iter
 * rules for empty matches) and byte-level BPE with Hugging Face's merge order, plus a
 * per-encoder cache of BPE results. */
#include "config.h"

#include "daemon/tokenizer/tok_internal.h"

/* Pre-tokens up to this many bytes are cached (Hugging Face caches words < 256 chars). */
#define CACHE_MAX_KEY 128
#define CACHE_SLOTS (1u << 16)
#define CACHE_MAX_ENTRIES (CACHE_SLOTS / 2)
#define CACHE_MAX_ARENA (4u << 20)
/* BPE of pieces up to this many symbols uses the quadratic scan, longer ones a heap. */
#define BPE_SIMPLE_MAX 48
/* Longest pre-token given to BPE in one piece (see bpe()). */
#define TOK_MAX_PIECE (256u << 10)
/* Scratch buffers larger than this are released after each call. */
#define SCRATCH_KEEP (1u << 20)
/* PCRE2 limits per match call: generous for real patterns (DeepSeek's are linear), a wall
 * for hostile ones. */
#define MATCH_LIMIT 100000000u
#define HEAP_LIMIT_KIB (64u << 10)
#define JIT_STACK_MAX (1u << 20)

struct cache_slot {
        uint64_t hash; /* 0: empty */
        uint32_t key_off, ids_off;
        uint16_t key_len, n_ids;
};

struct sym {
        int32_t id, prev, next;
};

/* A heap entry is rank << 32 | pos: Hugging Face pops the lowest rank, then the leftmost. */
typedef uint64_t heap_item;

struct range {
        size_t a, b;
        bool match;
};

struct range_vec {
        struct range *v;
        size_t n, cap;
};

struct dsv_tok_encoder {
        const struct dsv_tok *tok;
        pcre2_match_data **md;
        pcre2_match_context *mctx;
        pcre2_jit_stack *jstack;
        struct range_vec *levels;

        uint8_t *clean;
        size_t clean_cap;

        struct sym *syms;
        size_t syms_cap;
        heap_item *heap;
        size_t heap_cap;
        int32_t *scratch;
        size_t scratch_cap;

        struct cache_slot *slots;
        size_t n_cached;
        uint8_t *ckeys;
        size_t ckeys_n;
        int32_t *cids;
        size_t cids_n;

        /* current call */
        bool use16; /* the text has code points only Unicode 16.0 classifies */
        struct dsv_tok_ids *out;
        int (*piece_cb)(void *ud, const uint8_t *p, size_t n);
        void *piece_ud;
};

void tok_encoder_free(struct dsv_tok_encoder *e) {
        if (!e)
                return;
        if (e->md)
                for (size_t i = 0; i < e->tok->n_splits; i++)
                        pcre2_match_data_free(e->md[i]);
        free(e->md);
        pcre2_match_context_free(e->mctx);
        pcre2_jit_stack_free(e->jstack);
        if (e->levels)
                for (size_t i = 0; i < e->tok->n_splits; i++)
                        free(e->levels[i].v);
        free(e->levels);
        free(e->clean);
        free(e->syms);
        free(e->heap);
        free(e->scratch);
        free(e->slots);
        free(e->ckeys);
        free(e->cids);
        free(e);
}

int tok_encoder_new(const struct dsv_tok *tok, struct dsv_tok_encoder **ret) {
        struct dsv_tok_encoder *e = calloc(1, sizeof(*e));
        if (!e)
                return -ENOMEM;
        e->tok = tok;
        e->md = calloc(tok->n_splits + 1, sizeof(*e->md));
        e->levels = calloc(tok->n_splits + 1, sizeof(*e->levels));
        e->mctx = pcre2_match_context_create(NULL);
        e->jstack = pcre2_jit_stack_create(32 << 10, JIT_STACK_MAX, NULL);
        e->slots = calloc(CACHE_SLOTS, sizeof(*e->slots));
        e->ckeys = malloc(CACHE_MAX_ARENA);
        e->cids = malloc(CACHE_MAX_ARENA);
        if (!e->md || !e->levels || !e->mctx || !e->jstack || !e->slots || !e->ckeys || !e->cids)
                goto fail;
        for (size_t i = 0; i < tok->n_splits; i++)
                if (tok->splits[i].re && !(e->md[i] = pcre2_match_data_create_from_pattern(tok->splits[i].re, NULL)))
                        goto fail; /* re16 has the same groups: only classes differ */
        pcre2_set_match_limit(e->mctx, MATCH_LIMIT);
        pcre2_set_heap_limit(e->mctx, HEAP_LIMIT_KIB);
        pcre2_jit_stack_assign(e->mctx, NULL, e->jstack);
        *ret = e;
        return 0;
fail:
        tok_encoder_free(e);
        return -ENOMEM;
}

static int grow(void **p, size_t *cap, size_t need, size_t elem) {
        if (need <= *cap)
                return 0;
        size_t c = *cap ? *cap : 64;
        while (c < need)
                c *= 2;
        void *q = realloc(*p, c * elem);
        if (!q)
                return -ENOMEM;
        *p = q;
        *cap = c;
        return 0;
}

/* ------------------------------------------------------------------ BPE */

static void cache_clear(struct dsv_tok_encoder *e) {
        memset(e->slots, 0, CACHE_SLOTS * sizeof(*e->slots));
        e->n_cached = e->ckeys_n = e->cids_n = 0;
}

static const struct cache_slot *cache_get(struct dsv_tok_encoder *e, const uint8_t *s, size_t n, uint64_t h) {
        size_t i = h & (CACHE_SLOTS - 1);
        for (;;) {
                const struct cache_slot *c = &e->slots[i];
                if (c->hash == 0)
                        return NULL;
                if (c->hash == h && c->key_len == n && memcmp(e->ckeys + c->key_off, s, n) == 0)
                        return c;
                i = (i + 1) & (CACHE_SLOTS - 1);
        }
}

static void cache_put(struct dsv_tok_encoder *e, const uint8_t *s, size_t n, uint64_t h, const int32_t *ids,
                      size_t n_ids) {
        if (e->n_cached >= CACHE_MAX_ENTRIES || e->ckeys_n + n > CACHE_MAX_ARENA ||
            (e->cids_n + n_ids) * sizeof(int32_t) > CACHE_MAX_ARENA)
                cache_clear(e);
        size_t i = h & (CACHE_SLOTS - 1);
        while (e->slots[i].hash != 0)
                i = (i + 1) & (CACHE_SLOTS - 1);
        e->slots[i] = (struct cache_slot){.hash = h, .key_off = (uint32_t)e->ckeys_n, .ids_off = (uint32_t)e->cids_n,
                                          .key_len = (uint16_t)n, .n_ids = (uint16_t)n_ids};
        memcpy(e->ckeys + e->ckeys_n, s, n);
        e->ckeys_n += n;
        memcpy(e->cids + e->cids_n, ids, n_ids * sizeof(int32_t));
        e->cids_n += n_ids;
        e->n_cached++;
}

static inline bool merge_of(const struct dsv_tok *tok, int32_t a, int32_t b, uint32_t *rank, int32_t *new_id) {
        uint64_t v;
        if (!tok_map64_get(&tok->merges, ((uint64_t)(uint32_t)a << 32) | (uint32_t)b, &v))
                return false;
        *rank = (uint32_t)(v >> 32);
        *new_id = (int32_t)(uint32_t)v;
        return true;
}

/* Merges ids[0..m) in place; returns the new count. Repeatedly applies the pair of lowest
 * rank, leftmost first: the order of Hugging Face's heap, for short words. */
static size_t bpe_simple(const struct dsv_tok *tok, int32_t *ids, size_t m) {
        uint32_t rank[BPE_SIMPLE_MAX];
        int32_t nid[BPE_SIMPLE_MAX];
        for (size_t i = 0; i + 1 < m; i++)
                if (!merge_of(tok, ids[i], ids[i + 1], &rank[i], &nid[i]))
                        rank[i] = UINT32_MAX;
        while (m > 1) {
                size_t best = SIZE_MAX;
                uint32_t br = UINT32_MAX;
                for (size_t i = 0; i + 1 < m; i++)
                        if (rank[i] < br) {
                                br = rank[i];
                                best = i;
                        }
                if (best == SIZE_MAX)
                        break;
                /* symbols best, best+1 become one; pair j > best moves to j - 1 */
                ids[best] = nid[best];
                memmove(ids + best + 1, ids + best + 2, (m - best - 2) * sizeof(int32_t));
                if (best + 2 < m - 1) {
                        memmove(rank + best + 1, rank + best + 2, (m - best - 3) * sizeof(uint32_t));
                        memmove(nid + best + 1, nid + best + 2, (m - best - 3) * sizeof(int32_t));
                }
                m--;
                if (best + 1 < m && !merge_of(tok, ids[best], ids[best + 1], &rank[best], &nid[best]))
                        rank[best] = UINT32_MAX;
                if (best > 0 && !merge_of(tok, ids[best - 1], ids[best], &rank[best - 1], &nid[best - 1]))
                        rank[best - 1] = UINT32_MAX;
        }
        return m;
}

static void heap_push(heap_item *h, size_t *n, heap_item it) {
        size_t i = (*n)++;
        while (i > 0) {
                size_t p = (i - 1) / 2;
                if (h[p] <= it)
                        break;
                h[i] = h[p];
                i = p;
        }
        h[i] = it;
}

static heap_item heap_pop(heap_item *h, size_t *n) {
        heap_item top = h[0], last = h[--(*n)];
        size_t i = 0;
        for (;;) {
                size_t c = 2 * i + 1;
                if (c >= *n)
                        break;
                if (c + 1 < *n && h[c + 1] < h[c])
                        c++;
                if (last <= h[c])
                        break;
                h[i] = h[c];
                i = c;
        }
        h[i] = last;
        return top;
}

/* Hugging Face's BPE::merge_word for long words: a heap of candidate merges keyed by
 * (rank, position), stale entries skipped when popped. An entry is stale exactly when the
 * pair now at its position has another rank: ranks name merges, and a symbol only grows
 * rightwards, so the same rank at the same position is the same pair. (Hugging Face
 * compares the merged id instead, which is the same test unless two different strings share
 * an id.) O(m log m) time, 20 bytes per symbol. */
static int bpe_heap(struct dsv_tok_encoder *e, int32_t *ids, size_t *pm) {
        const struct dsv_tok *tok = e->tok;
        size_t m = *pm, nh = 0;
        int r;
        if ((r = grow((void **)&e->syms, &e->syms_cap, m, sizeof(struct sym))) < 0 ||
            (r = grow((void **)&e->heap, &e->heap_cap, 2 * m + 1, sizeof(heap_item))) < 0)
                return r;
        struct sym *s = e->syms;
        uint32_t rk;
        int32_t nid;
        for (size_t i = 0; i < m; i++)
                s[i] = (struct sym){.id = ids[i], .prev = (int32_t)i - 1, .next = i + 1 < m ? (int32_t)i + 1 : -1};
        for (size_t i = 0; i + 1 < m; i++)
                if (merge_of(tok, ids[i], ids[i + 1], &rk, &nid))
                        heap_push(e->heap, &nh, ((uint64_t)rk << 32) | i);
        /* At most one live entry per adjacent pair plus stale ones: m - 1 initial entries,
         * and each merge pops one and pushes at most two, so 2m bounds the heap. */
        while (nh > 0) {
                heap_item top = heap_pop(e->heap, &nh);
                int32_t pos = (int32_t)(uint32_t)top, nx = s[pos].next;
                if (s[pos].id < 0 || nx < 0)
                        continue;
                if (!merge_of(tok, s[pos].id, s[nx].id, &rk, &nid) || rk != (uint32_t)(top >> 32))
                        continue;
                s[pos].id = nid;
                s[nx].id = -1;
                s[pos].next = s[nx].next;
                if (s[nx].next >= 0)
                        s[s[nx].next].prev = pos;
                int32_t pv = s[pos].prev, nn = s[pos].next;
                if (pv >= 0 && merge_of(tok, s[pv].id, nid, &rk, &nid))
                        heap_push(e->heap, &nh, ((uint64_t)rk << 32) | (uint32_t)pv);
                if (nn >= 0 && merge_of(tok, s[pos].id, s[nn].id, &rk, &nid))
                        heap_push(e->heap, &nh, ((uint64_t)rk << 32) | (uint32_t)pos);
        }
        size_t k = 0;
        for (int32_t i = 0; i >= 0; i = s[i].next)
                ids[k++] = s[i].id;
        *pm = k;
        return 0;
}

static int push_ids(struct dsv_tok_ids *out, const int32_t *ids, size_t n) {
        if (out->n + n > out->cap) {
                int r = grow((void **)&out->v, &out->cap, out->n + n, sizeof(int32_t));
                if (r < 0)
                        return r;
        }
        memcpy(out->v + out->n, ids, n * sizeof(int32_t));
        out->n += n;
        return 0;
}

static int bpe_piece(struct dsv_tok_encoder *e, const uint8_t *p, size_t n) {
        const struct dsv_tok *tok = e->tok;
        uint64_t h = 0;
        int r;

        if (n == 1) {
                int32_t id = tok->byte_id[p[0]];
                return id >= 0 ? push_ids(e->out, &id, 1) : 0;
        }
        if (tok->ignore_merges) {
                int32_t id = tok_strmap_get(tok, (const char *)p, n);
                if (id >= 0)
                        return push_ids(e->out, &id, 1);
        }
        if (n <= CACHE_MAX_KEY) {
                h = tok_hash_bytes(p, n) | 1;
                const struct cache_slot *c = cache_get(e, p, n, h);
                if (c)
                        return push_ids(e->out, e->cids + c->ids_off, c->n_ids);
        }
        if ((r = grow((void **)&e->scratch, &e->scratch_cap, n, sizeof(int32_t))) < 0)
                return r;
        int32_t *ids = e->scratch;
        size_t m = 0;
        for (size_t i = 0; i < n; i++) {
                /* A byte missing from the vocabulary is dropped (no unk token). */
                int32_t id = tok->byte_id[p[i]];
                if (id >= 0)
                        ids[m++] = id;
        }
        if (m <= BPE_SIMPLE_MAX)
                m = bpe_simple(tok, ids, m);
        else if ((r = bpe_heap(e, ids, &m)) < 0)
                return r;
        if (n <= CACHE_MAX_KEY)
                cache_put(e, p, n, h, ids, m);
        return push_ids(e->out, ids, m);
}

static size_t char_start_before(const uint8_t *s, size_t i) {
        while (i > 0 && (s[i] & 0xc0) == 0x80)
                i--;
        return i;
}

/* A pre-token longer than TOK_MAX_PIECE (only hostile input has one: a quarter megabyte
 * without a space, digit or punctuation) is cut into pieces of at most that length at
 * character boundaries, which bounds BPE's scratch memory at 20 bytes per byte of
 * TOK_MAX_PIECE. Up to that length encode is exact. */
static int bpe(struct dsv_tok_encoder *e, const uint8_t *p, size_t n) {
        while (n > TOK_MAX_PIECE) {
                size_t k = char_start_before(p, TOK_MAX_PIECE);
                if (k == 0)
                        k = TOK_MAX_PIECE;
                int r = bpe_piece(e, p, k);
                if (r < 0)
                        return r;
                p += k;
                n -= k;
        }
        return bpe_piece(e, p, n);
}

/* ------------------------------------------------------------------ pre-tokenization */

static int emit_piece(struct dsv_tok_encoder *e, size_t level, const uint8_t *s, size_t n);

static size_t char_len_at(const uint8_t *s, size_t n, size_t i) {
        if (i >= n)
                return 1;
        uint8_t c = s[i];
        size_t k = c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
        return MIN(k, n - i);
}

/* Next match of split sp in s[0..n) at or after start: 1 found, 0 none, < 0 error. */
static int find_match(struct dsv_tok_encoder *e, size_t level, const uint8_t *s, size_t n, size_t start,
                      size_t *ms, size_t *me) {
        const struct tok_split *sp = &e->tok->splits[level];
        if (!sp->re) {
                if (start > n || n - start < sp->literal_len)
                        return 0;
                const uint8_t *f = memmem(s + start, n - start, sp->literal, sp->literal_len);
                if (!f)
                        return 0;
                *ms = (size_t)(f - s);
                *me = *ms + sp->literal_len;
                return 1;
        }
        const pcre2_code *re = sp->re;
        bool jit = sp->jit;
        if (e->use16 && sp->re16) {
                re = sp->re16;
                jit = sp->jit16;
        }
        int rc = jit ? pcre2_jit_match(re, s, n, start, 0, e->md[level], e->mctx)
                     : pcre2_match(re, s, n, start, PCRE2_NO_UTF_CHECK, e->md[level], e->mctx);
        if (rc == PCRE2_ERROR_NOMATCH)
                return 0;
        if (rc < 0)
                return -EOVERFLOW;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md[level]);
        if (ov[0] > ov[1]) /* \K tricks; treat as empty */
                ov[1] = ov[0];
        *ms = ov[0];
        *me = ov[1];
        return 1;
}

static int split_level(struct dsv_tok_encoder *e, size_t level, const uint8_t *s, size_t n) {
        const struct tok_split *sp = &e->tok->splits[level];
        struct range_vec *rv = &e->levels[level];
        size_t last_end = 0, prev = 0;
        bool have_last = false;
        int r;

        /* Oniguruma's find_iter (the onig crate): an empty match right where the previous
         * match ended is skipped by advancing one character. Hugging Face's Split then turns
         * the matches into alternating (gap, match) ranges. */
        rv->n = 0;
        while (last_end <= n) {
                size_t ms, me;
                r = find_match(e, level, s, n, last_end, &ms, &me);
                if (r < 0)
                        return r;
                if (r == 0)
                        break;
                if (ms == me && have_last && prev == me) {
                        last_end += char_len_at(s, n, last_end);
                        continue;
                }
                last_end = me;
                have_last = true;
                if (sp->behavior == TOK_SPLIT_ISOLATED) {
                        if (prev < ms && (r = emit_piece(e, level + 1, s + prev, ms - prev)) < 0)
                                return r;
                        if (ms < me && (r = emit_piece(e, level + 1, s + ms, me - ms)) < 0)
                                return r;
                } else {
                        if ((r = grow((void **)&rv->v, &rv->cap, rv->n + 2, sizeof(struct range))) < 0)
                                return r;
                        if (prev != ms)
                                rv->v[rv->n++] = (struct range){prev, ms, sp->invert};
                        rv->v[rv->n++] = (struct range){ms, me, !sp->invert};
                }
                prev = me;
        }
        if (sp->behavior == TOK_SPLIT_ISOLATED)
                return prev < n ? emit_piece(e, level + 1, s + prev, n - prev) : 0;

        if (prev != n || rv->n == 0) {
                if ((r = grow((void **)&rv->v, &rv->cap, rv->n + 1, sizeof(struct range))) < 0)
                        return r;
                rv->v[rv->n++] = (struct range){prev, n, sp->invert};
        }
        /* Hugging Face's SplitDelimiterBehavior, on the (range, is_match) list; afterwards
         * .match means "remove". */
        size_t k = 0;
        bool prev_match = false;
        switch (sp->behavior) {
        case TOK_SPLIT_REMOVED:
                k = rv->n;
                break;
        case TOK_SPLIT_CONTIGUOUS:
                for (size_t i = 0; i < rv->n; i++) {
                        struct range x = rv->v[i];
                        if (x.match == prev_match && k > 0)
                                rv->v[k - 1].b = x.b;
                        else
                                rv->v[k++] = (struct range){x.a, x.b, false};
                        prev_match = x.match;
                }
                break;
        case TOK_SPLIT_MERGED_WITH_PREVIOUS:
                for (size_t i = 0; i < rv->n; i++) {
                        struct range x = rv->v[i];
                        if (x.match && !prev_match && k > 0)
                                rv->v[k - 1].b = x.b;
                        else
                                rv->v[k++] = (struct range){x.a, x.b, false};
                        prev_match = x.match;
                }
                break;
        case TOK_SPLIT_MERGED_WITH_NEXT: {
                /* right to left, building from the end of the array */
                size_t w = rv->n;
                for (size_t i = rv->n; i-- > 0;) {
                        struct range x = rv->v[i];
                        if (x.match && !prev_match && w < rv->n)
                                rv->v[w].a = x.a;
                        else
                                rv->v[--w] = (struct range){x.a, x.b, false};
                        prev_match = x.match;
                }
                memmove(rv->v, rv->v + w, (rv->n - w) * sizeof(struct range));
                k = rv->n - w;
                break;
        }
        case TOK_SPLIT_ISOLATED:
                break;
        }
        /* Deeper levels reuse their own vectors, not this one. */
        for (size_t i = 0; i < k; i++) {
                struct range x = e->levels[level].v[i];
                if (!x.match && x.b > x.a && (r = emit_piece(e, level + 1, s + x.a, x.b - x.a)) < 0)
                        return r;
        }
        return 0;
}

static int emit_piece(struct dsv_tok_encoder *e, size_t level, const uint8_t *s, size_t n) {
        if (n == 0)
                return 0;
        if (level < e->tok->n_splits)
                return split_level(e, level, s, n);
        if (e->piece_cb)
                return e->piece_cb(e->piece_ud, s, n);
        return bpe(e, s, n);
}

/* ------------------------------------------------------------------ added tokens */

/* Longest added token starting at s[i]; returns its index or -1, and its end. */
static int32_t trie_longest(const struct tok_trie *t, const uint8_t *s, size_t n, size_t i, size_t *end) {
        int32_t node = 0, best = -1;
        for (size_t j = i; j < n; j++) {
                int32_t c = t->nodes[node].child;
                while (c >= 0 && t->nodes[c].byte != s[j])
                        c = t->nodes[c].sibling;
                if (c < 0)
                        break;
                node = c;
                if (t->nodes[node].token >= 0) {
                        best = t->nodes[node].token;
                        *end = j + 1;
                }
        }
        return best;
}

static size_t ws_before(const uint8_t *s, size_t start) {
        /* start of the run of White_Space characters that ends at start */
        size_t i = start;
        while (i > 0) {
                size_t j = i - 1;
                while (j > 0 && (s[j] & 0xc0) == 0x80)
                        j--;
                uint32_t cp;
                size_t bad;
                if (!tok_utf8_next(s + j, i - j, &cp, &bad) || !tok_is_white_space(cp))
                        break;
                i = j;
        }
        return i;
}

static size_t ws_after(const uint8_t *s, size_t n, size_t stop) {
        size_t i = stop;
        while (i < n) {
                uint32_t cp;
                size_t bad, k = tok_utf8_next(s + i, n - i, &cp, &bad);
                if (!k || !tok_is_white_space(cp))
                        break;
                i += k;
        }
        return i;
}

static int added_pass(struct dsv_tok_encoder *e, int pass, const uint8_t *s, size_t n, unsigned flags);

static int gap(struct dsv_tok_encoder *e, int pass, const uint8_t *s, size_t n, unsigned flags) {
        if (n == 0)
                return 0;
        if (pass == 0)
                return added_pass(e, 1, s, n, flags);
        return emit_piece(e, 0, s, n);
}

/* AddedVocabulary::find_matches: leftmost-longest, non-overlapping, then lstrip/rstrip. */
static int added_pass(struct dsv_tok_encoder *e, int pass, const uint8_t *s, size_t n, unsigned flags) {
        const struct dsv_tok *tok = e->tok;
        const struct tok_trie *t = pass == 0 ? &tok->trie_raw : &tok->trie_norm;
        size_t start_offset = 0, i = 0;
        int r;

        if (t->empty)
                return gap(e, pass, s, n, flags);
        while (i < n) {
                size_t end = 0;
                int32_t k = -1;
                for (; i < n; i++)
                        if (t->first[s[i]] && (k = trie_longest(t, s, n, i, &end)) >= 0)
                                break;
                if (k < 0)
                        break;
                const struct tok_added *a = &tok->added[k];
                size_t start = i, stop = end;
                i = end; /* the automaton resumes after its own match */
                if ((flags & DSV_TOK_SPECIAL_AS_TEXT) && a->special)
                        continue;
                if (a->lstrip)
                        start = MAX(ws_before(s, start), start_offset);
                if (a->rstrip)
                        stop = ws_after(s, n, stop);
                if (start_offset < start && (r = gap(e, pass, s + start_offset, start - start_offset, flags)) < 0)
                        return r;
                if ((r = dsv_tok_ids_push(e->out, a->id)) < 0)
                        return r;
                start_offset = stop;
        }
        if (start_offset < n)
                return gap(e, pass, s + start_offset, n - start_offset, flags);
        return 0;
}

/* ------------------------------------------------------------------ entry points */

/* Returns text with every maximal invalid UTF-8 subpart replaced by U+FFFD (a pointer to
 * the input when it is valid). */
static int clean_utf8(struct dsv_tok_encoder *e, const uint8_t *text, size_t len, const uint8_t **ret, size_t *ret_len) {
        size_t ok = tok_utf8_valid_prefix(text, len);
        if (ok == len) {
                *ret = text;
                *ret_len = len;
                return 0;
        }
        if (len > SIZE_MAX / 3 - 4)
                return -ENOMEM;
        int r = grow((void **)&e->clean, &e->clean_cap, len * 3 + 4, 1);
        if (r < 0)
                return r;
        uint8_t *o = e->clean;
        memcpy(o, text, ok);
        size_t k = ok, i = ok;
        while (i < len) {
                uint32_t cp;
                size_t bad, c = tok_utf8_next(text + i, len - i, &cp, &bad);
                if (c) {
                        memcpy(o + k, text + i, c);
                        k += c;
                        i += c;
                } else {
                        memcpy(o + k, "\xef\xbf\xbd", 3);
                        k += 3;
                        i += bad;
                }
        }
        *ret = o;
        *ret_len = k;
        return 0;
}

static void release(void **p, size_t *cap, size_t elem) {
        if (*cap * elem > SCRATCH_KEEP) {
                free(*p);
                *p = NULL;
                *cap = 0;
        }
}

static void scratch_trim(struct dsv_tok_encoder *e) {
        release((void **)&e->clean, &e->clean_cap, 1);
        release((void **)&e->syms, &e->syms_cap, sizeof(struct sym));
        release((void **)&e->heap, &e->heap_cap, sizeof(heap_item));
        release((void **)&e->scratch, &e->scratch_cap, sizeof(int32_t));
}

int tok_encoder_encode(struct dsv_tok_encoder *e, const uint8_t *text, size_t len, unsigned flags,
                       struct dsv_tok_ids *out) {
        const struct dsv_tok *tok = e->tok;
        size_t n0 = out->n;
        const uint8_t *s;
        size_t n;
        int r;

        e->out = out;
        e->piece_cb = NULL;
        if ((flags & DSV_TOK_ADD_SPECIAL) && tok->add_bos && (r = dsv_tok_ids_push(out, tok->bos_id)) < 0)
                goto fail;
        if ((r = clean_utf8(e, text, len, &s, &n)) < 0)
                goto fail;
        e->use16 = tok->has_re16 && tok_has_ucd16(s, n);
        if ((r = added_pass(e, 0, s, n, flags)) < 0)
                goto fail;
        if ((flags & DSV_TOK_ADD_SPECIAL) && tok->add_eos && (r = dsv_tok_ids_push(out, tok->eos_id)) < 0)
                goto fail;
        r = 0;
        goto out;
fail:
        out->n = n0;
out:
        e->out = NULL;
        scratch_trim(e);
        return r;
}

int tok_encoder_pretokenize(struct dsv_tok_encoder *e, const uint8_t *text, size_t len,
                            int (*cb)(void *ud, const uint8_t *p, size_t n), void *ud) {
        const uint8_t *s;
        size_t n;
        int r = clean_utf8(e, text, len, &s, &n);
        if (r < 0)
                return r;
        e->use16 = e->tok->has_re16 && tok_has_ucd16(s, n);
        e->piece_cb = cb;
        e->piece_ud = ud;
        r = emit_piece(e, 0, s, n);
        e->piece_cb = NULL;
        scratch_trim(e);
        return r;
}

int dsv_tok_encode(const struct dsv_tok *ctok, const void *text, size_t len, unsigned flags,
                   struct dsv_tok_ids *out) {
        /* The tokenizer is immutable except for the lock that hands out its cached encoder. */
        struct dsv_tok *tok = (struct dsv_tok *)ctok;
        struct dsv_tok_encoder *e = NULL;
        bool shared = false;
        int r;

        if (!tok || !out || (!text && len))
                return -EINVAL;
        if (pthread_mutex_trylock(&tok->lock) == 0) {
                if (!tok->shared && tok_encoder_new(tok, &tok->shared) < 0)
                        tok->shared = NULL;
                if (tok->shared) {
                        e = tok->shared;
                        shared = true;
                } else
                        pthread_mutex_unlock(&tok->lock);
        }
        if (!e && (r = tok_encoder_new(tok, &e)) < 0)
                return r;
        r = tok_encoder_encode(e, text, len, flags, out);
        if (shared)
                pthread_mutex_unlock(&tok->lock);
        else
                tok_encoder_free(e);
        return r;
}
