/* The vocabulary as a trie of token bytes and the mask of a matcher state over it.
 *
 * The trie is stored in depth-first preorder: node i has its byte, its depth (the length of
 * the prefix it ends) and skip[i], the first node after its subtree, and the ids of the
 * tokens whose bytes end there (ids[id_off[i], id_off[i + 1])). A mask is then one linear
 * pass: the state after node i's prefix is the state after its parent's (kept per depth)
 * fed node i's byte; a refused byte skips the whole subtree, so tokens sharing a prefix
 * walk it once and a state that takes few bytes visits few nodes. Built from the token
 * bytes sorted, one pass, no pointers. */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/grammar/internal.h"

#define TOKEN_BYTES_MAX 256 /* longer tokens are never allowed */

struct dsv_gvocab {
        int32_t n_vocab, eos_id;
        uint32_t n_nodes;
        uint8_t *byte;
        uint16_t *depth;
        uint32_t *skip, *id_off;
        int32_t *ids;
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

void dsv_gvocab_free(struct dsv_gvocab *v) {
        if (!v)
                return;
        free(v->byte);
        free(v->depth);
        free(v->skip);
        free(v->id_off);
        free(v->ids);
        free(v->st);
        free(v);
}

int dsv_gvocab_new(int32_t n_vocab, int32_t eos_id, dsv_gvocab_bytes_fn bytes, void *ud, struct dsv_gvocab **ret) {
        struct dsv_gvocab *v;
        struct tokb *t;
        size_t n = 0, total = 0;
        uint32_t path[TOKEN_BYTES_MAX], nn = 0, n_ids = 0;

        if (n_vocab <= 0)
                return -EINVAL;
        if (!(t = malloc((size_t)n_vocab * sizeof(*t))))
                return -ENOMEM;
        for (int32_t id = 0; id < n_vocab; id++) {
                const char *p;
                size_t len;
                if (id == eos_id || !bytes(ud, id, &p, &len) || len == 0 || len > TOKEN_BYTES_MAX)
                        continue;
                t[n++] = (struct tokb){.p = p, .n = (uint32_t)len, .id = id};
                total += len;
        }
        qsort(t, n, sizeof(*t), tokb_cmp);
        if (!(v = calloc(1, sizeof(*v)))) {
                free(t);
                return -ENOMEM;
        }
        v->n_vocab = n_vocab;
        v->eos_id = eos_id;
        /* at most one node per byte of every token */
        v->byte = malloc(total + 1);
        v->depth = malloc((total + 1) * sizeof(*v->depth));
        v->skip = malloc((total + 1) * sizeof(*v->skip));
        v->id_off = calloc(total + 2, sizeof(*v->id_off));
        v->ids = malloc((n + 1) * sizeof(*v->ids));
        v->st = malloc((TOKEN_BYTES_MAX + 1) * sizeof(*v->st));
        if (!v->byte || !v->depth || !v->skip || !v->id_off || !v->ids || !v->st) {
                free(t);
                dsv_gvocab_free(v);
                return -ENOMEM;
        }
        /* path[d]: the node at depth d + 1 on the current path; a node's skip is known when
         * it leaves the path */
        uint32_t plen = 0;
        for (size_t i = 0; i < n; i++) {
                uint32_t common = 0;
                if (i > 0) {
                        const struct tokb *a = &t[i - 1];
                        while (common < a->n && common < t[i].n && a->p[common] == t[i].p[common])
                                common++;
                        if (common > plen)
                                common = plen;
                }
                while (plen > common)
                        v->skip[path[--plen]] = nn;
                for (uint32_t d = plen; d < t[i].n; d++) {
                        v->byte[nn] = (uint8_t)t[i].p[d];
                        v->depth[nn] = (uint16_t)(d + 1);
                        v->id_off[nn] = n_ids;
                        path[plen++] = nn++;
                }
                /* the token ends at the path's last node: ids of a node are contiguous because
                 * its tokens (equal bytes) are adjacent in sorted order and no node comes after
                 * it before they are all placed */
                v->ids[n_ids++] = t[i].id;
        }
        while (plen > 0)
                v->skip[path[--plen]] = nn;
        v->id_off[nn] = n_ids;
        v->n_nodes = nn;
        free(t);
        *ret = v;
        return 0;
}

size_t dsv_gvocab_mask_words(const struct dsv_gvocab *v) { return ((size_t)v->n_vocab + 31) / 32; }

int32_t dsv_gvocab_mask(struct dsv_gvocab *v, const struct dsv_gmatch *m, uint32_t *mask) {
        struct dsv_gmatch *st = v->st;
        int32_t allowed = 0;
        uint32_t i = 0;

        memset(mask, 0, dsv_gvocab_mask_words(v) * sizeof(*mask));
        dsv_gmatch_copy(&st[0], m);
        while (i < v->n_nodes) {
                uint32_t d = v->depth[i];
                dsv_gmatch_copy(&st[d], &st[d - 1]);
                if (dsv_gmatch_feed(&st[d], &v->byte[i], 1) < 0) {
                        i = v->skip[i];
                        continue;
                }
                for (uint32_t k = v->id_off[i]; k < v->id_off[i + 1]; k++) {
                        int32_t id = v->ids[k];
                        mask[id >> 5] |= 1u << (id & 31);
                        allowed++;
                }
                i++;
        }
        if (v->eos_id >= 0 && v->eos_id < v->n_vocab && dsv_gmatch_can_end(m)) {
                mask[v->eos_id >> 5] |= 1u << (v->eos_id & 31);
                allowed++;
        }
        return allowed;
}
