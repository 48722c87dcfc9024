/* The vocabulary as a trie of token bytes and the mask of a matcher state over it.
 *
 * The trie is stored in depth-first preorder: node i has its byte, its depth (the length of
 * the prefix it ends) and skip[i], the first node after its subtree, and the ids of the
 * tokens whose bytes end there (ids[id_off[i], id_off[i + 1])). A mask is then one linear
 * pass: the state after node i's prefix is the state after its parent's (kept per depth)
 * fed node i's byte; a refused byte skips the whole subtree, so tokens sharing a prefix
 * walk it once and a state that takes few bytes visits few nodes. Built from the token
 * bytes sorted, one pass, no pointers.
 *
 * Inside a string (the state where nearly every token is allowed, so the walk visits the
 * whole trie) a shortcut: "plain" tokens (whole UTF-8 characters, no quote, backslash or
 * control character) are allowed exactly when their characters fit in what maxLength
 * leaves, which a list sorted by character count answers without walking; only the other
 * tokens (a second trie) are walked. test-grammar checks both against brute force. */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/grammar/internal.h"

#define TOKEN_BYTES_MAX 256 /* longer tokens are never allowed */

struct gtrie {
        uint32_t n_nodes;
        uint8_t *byte;
        uint16_t *depth;
        uint32_t *skip, *id_off;
        int32_t *ids;
};

struct dsv_gvocab {
        int32_t n_vocab, eos_id;
        struct gtrie all, rest; /* every token; the tokens that are not plain */
        int32_t *plain;         /* plain token ids by ascending character count */
        uint32_t *plain_chars;  /* ... and their counts */
        uint32_t n_plain;
        struct dsv_gmatch *st; /* [TOKEN_BYTES_MAX + 1] states, one per depth */
};

struct tokb {
        const char *p;
        uint32_t n;
        int32_t id;
};

static int tokb_cmp(const void *a, const void *b) {
        const struct tokb *x = a, *y = b;
        int r = memcmp(x->p, y->p, x->n < y->n ? x->n : y->n);
        if (r)
                return r;
        if (x->n != y->n)
                return x->n < y->n ? -1 : 1;
        return (x->id > y->id) - (x->id < y->id);
}

static void trie_done(struct gtrie *t) {
        free(t->byte);
        free(t->depth);
        free(t->skip);
        free(t->id_off);
        free(t->ids);
}

/* t from tokens sorted by tokb_cmp. */
static int trie_build(struct gtrie *t, const struct tokb *tok, size_t n) {
        uint32_t path[TOKEN_BYTES_MAX], nn = 0, n_ids = 0, plen = 0;
        size_t total = 0;
        for (size_t i = 0; i < n; i++)
                total += tok[i].n;
        /* at most one node per byte of every token */
        t->byte = malloc(total + 1);
        t->depth = malloc((total + 1) * sizeof(*t->depth));
        t->skip = malloc((total + 1) * sizeof(*t->skip));
        t->id_off = calloc(total + 2, sizeof(*t->id_off));
        t->ids = malloc((n + 1) * sizeof(*t->ids));
        if (!t->byte || !t->depth || !t->skip || !t->id_off || !t->ids)
                return -ENOMEM;
        /* path[d]: the node at depth d + 1 on the current path; a node's skip is known when
         * it leaves the path */
        for (size_t i = 0; i < n; i++) {
                uint32_t common = 0;
                if (i > 0) {
                        const struct tokb *a = &tok[i - 1];
                        while (common < a->n && common < tok[i].n && a->p[common] == tok[i].p[common])
                                common++;
                }
                while (plen > common)
                        t->skip[path[--plen]] = nn;
                for (uint32_t d = plen; d < tok[i].n; d++) {
                        t->byte[nn] = (uint8_t)tok[i].p[d];
                        t->depth[nn] = (uint16_t)(d + 1);
                        t->id_off[nn] = n_ids;
                        path[plen++] = nn++;
                }
                /* the token ends at the path's last node: the ids of a node are contiguous
                 * (tokens with equal bytes are adjacent in sorted order) */
                t->ids[n_ids++] = tok[i].id;
        }
        while (plen > 0)
                t->skip[path[--plen]] = nn;
        t->id_off[nn] = n_ids;
        t->n_nodes = nn;
        return 0;
}

/* The characters of a plain token (see above), or 0 when it is not plain. */
static uint32_t plain_chars(const uint8_t *p, uint32_t n) {
        uint32_t chars = 0;
        for (uint32_t i = 0; i < n; chars++) {
                uint8_t b = p[i], lo = 0x80, hi = 0xbf;
                uint32_t k;
                if (b < 0x20 || b == '"' || b == '\\')
                        return 0;
                if (b < 0x80) {
                        i++;
                        continue;
                }
                if (b < 0xc2 || b > 0xf4)
                        return 0;
                k = gutf8_lead(b, &lo, &hi);
                if (i + k >= n)
                        return 0; /* a character cut at the token's end */
                for (uint32_t j = 1; j <= k; j++) {
                        if (p[i + j] < lo || p[i + j] > hi)
                                return 0;
                        lo = 0x80;
                        hi = 0xbf;
                }
                i += k + 1;
        }
        return chars;
}

void dsv_gvocab_free(struct dsv_gvocab *v) {
        if (!v)
                return;
        trie_done(&v->all);
        trie_done(&v->rest);
        free(v->plain);
        free(v->plain_chars);
        free(v->st);
        free(v);
}

int dsv_gvocab_new(int32_t n_vocab, int32_t eos_id, dsv_gvocab_bytes_fn bytes, void *ud, struct dsv_gvocab **ret) {
        struct dsv_gvocab *v;
        struct tokb *t, *rest;
        size_t n = 0, n_rest = 0;
        uint32_t *chars, max_chars = 0;
        int rc = -ENOMEM;

        if (n_vocab <= 0)
                return -EINVAL;
        t = malloc((size_t)n_vocab * sizeof(*t));
        rest = malloc((size_t)n_vocab * sizeof(*rest));
        chars = calloc((size_t)n_vocab, sizeof(*chars));
        v = calloc(1, sizeof(*v));
        if (!t || !rest || !chars || !v)
                goto out;
        v->n_vocab = n_vocab;
        v->eos_id = eos_id;
        for (int32_t id = 0; id < n_vocab; id++) {
                const char *p;
                size_t len;
                if (id == eos_id || !bytes(ud, id, &p, &len) || len == 0 || len > TOKEN_BYTES_MAX)
                        continue;
                t[n++] = (struct tokb){.p = p, .n = (uint32_t)len, .id = id};
                if ((chars[id] = plain_chars((const uint8_t *)p, (uint32_t)len)) == 0)
                        rest[n_rest++] = t[n - 1];
                else {
                        v->n_plain++;
                        if (chars[id] > max_chars)
                                max_chars = chars[id];
                }
        }
        qsort(t, n, sizeof(*t), tokb_cmp);
        qsort(rest, n_rest, sizeof(*rest), tokb_cmp);
        v->plain = malloc((v->n_plain + 1) * sizeof(*v->plain));
        v->plain_chars = malloc((v->n_plain + 1) * sizeof(*v->plain_chars));
        v->st = malloc((TOKEN_BYTES_MAX + 1) * sizeof(*v->st));
        if (!v->plain || !v->plain_chars || !v->st || trie_build(&v->all, t, n) < 0 || trie_build(&v->rest, rest, n_rest) < 0)
                goto out;
        /* plain ids by character count (a counting sort), ascending ids within a count */
        {
                uint32_t *start = calloc((size_t)max_chars + 2, sizeof(*start));
                if (!start)
                        goto out;
                for (int32_t id = 0; id < n_vocab; id++)
                        if (chars[id])
                                start[chars[id] + 1]++;
                for (uint32_t c = 1; c <= max_chars + 1; c++)
                        start[c] += start[c - 1];
                for (int32_t id = 0; id < n_vocab; id++)
                        if (chars[id]) {
                                v->plain[start[chars[id]]] = id;
                                v->plain_chars[start[chars[id]]++] = chars[id];
                        }
                free(start);
        }
        *ret = TAKE_PTR(v);
        rc = 0;
out:
        free(t);
        free(rest);
        free(chars);
        dsv_gvocab_free(v);
        return rc;
}

size_t dsv_gvocab_mask_words(const struct dsv_gvocab *v) { return ((size_t)v->n_vocab + 31) / 32; }

static int32_t walk(struct dsv_gvocab *v, const struct gtrie *t, const struct dsv_gmatch *m, uint32_t *mask) {
        struct dsv_gmatch *st = v->st;
        int32_t allowed = 0;
        uint32_t i = 0;

        dsv_gmatch_copy(&st[0], m);
        while (i < t->n_nodes) {
                uint32_t d = t->depth[i];
                dsv_gmatch_copy(&st[d], &st[d - 1]);
                if (dsv_gmatch_feed(&st[d], &t->byte[i], 1) < 0) {
                        i = t->skip[i];
                        continue;
                }
                for (uint32_t k = t->id_off[i]; k < t->id_off[i + 1]; k++) {
                        int32_t id = t->ids[k];
                        mask[id >> 5] |= 1u << (id & 31);
                        allowed++;
                }
                i++;
        }
        return allowed;
}

int32_t dsv_gvocab_mask(struct dsv_gvocab *v, const struct dsv_gmatch *m, uint32_t *mask) {
        const struct gframe *top = m->depth ? &m->f[m->depth - 1] : NULL;
        int32_t allowed = 0;

        memset(mask, 0, dsv_gvocab_mask_words(v) * sizeof(*mask));
        if (top && top->n->kind == G_STRING && top->phase == ST_BODY) {
                uint32_t room = top->n->max_len - top->count;
                for (uint32_t k = 0; k < v->n_plain && v->plain_chars[k] <= room; k++) {
                        int32_t id = v->plain[k];
                        mask[id >> 5] |= 1u << (id & 31);
                        allowed++;
                }
                allowed += walk(v, &v->rest, m, mask);
        } else {
                allowed += walk(v, &v->all, m, mask);
        }
        if (v->eos_id >= 0 && v->eos_id < v->n_vocab && dsv_gmatch_can_end(m)) {
                mask[v->eos_id >> 5] |= 1u << (v->eos_id & 31);
                allowed++;
        }
        return allowed;
}
