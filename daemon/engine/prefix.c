/* The prefix cache (see kv_cache.h for the pool's side): a full page of a sequence whose KV a
 * prefill computed is registered under the hash chain of every token up to its end, seeded
 * by the model and, unless sharing across uids is configured, the uid (a shared cache lets
 * one user learn by timing what another sent). At admission, a request maps the registered
 * pages that continue its sequence with its prompt instead of computing them. Only
 * prefill-computed pages are registered (see struct session: decode-computed KV differs in
 * the last bits), so a hit gives exactly the output of a cold run. At least two prompt
 * tokens are always left to compute (the last one's logits are needed, and a single token
 * would take the decode path).
 *
 * With the MTP layer (draft.c) a page also holds that layer's records, and the one of its
 * last position depends on the token after the page, which the key does not cover: a page
 * is registered only when its records are computed (but maybe that last one), with the
 * token its last record was computed for (mtp_next); a request maps a page after another
 * only when that token is its own, and gives the last page it mapped back when its last
 * record was computed for another token, so that every record it maps is the one it would
 * compute. */
#include "config.h"

#include "daemon/engine/core.h"

static void seed(const struct dsv_core *c, const struct request *r, struct dsv_kv_key *k) {
        dsv_kv_chain_seed(c->p.model_fingerprint, c->tun.prefix_cache_share ? 0 : (uint64_t)r->uid + 1, k);
}

/* Brings r's chain up to page n (the keys of its first n pages). */
static void chain_to(const struct dsv_core *c, struct request *r, int n) {
        const int pt = (int)c->p.kv_page_tokens;
        if (r->n_keyed == 0)
                seed(c, r, &r->chain);
        for (; r->n_keyed < n; r->n_keyed++)
                dsv_kv_chain_key(&r->chain, r->tokens + (size_t)r->n_keyed * pt, pt, &r->chain);
}

/* The MTP record at the last position of seq's last page was computed for token t. */
static bool mtp_next_is(const struct dsv_core *c, const struct dsv_kv_seq *q, int32_t t) {
        return core_pool(c, q)->page[q->pages[q->n_pages - 1]].mtp_next == t;
}

void prefix_attach(struct dsv_core *c, struct request *r) {
        const int pt = (int)c->p.kv_page_tokens;
        const bool mtp = c->exec.mtp != NULL;
        struct dsv_kv_seq *q = &r->seq;
        struct dsv_kv_key prev = {{0, 0}};
        int start;

        r->n_keyed = 0;
        if (!c->tun.prefix_cache || q->len % pt || q->n_pages * pt != q->len || (mtp && q->mtp_len < q->len))
                return;
        start = q->len / pt;
        chain_to(c, r, start);
        while ((q->len + pt) <= r->n_prompt - 2) {
                struct dsv_kv_key key, parent = r->chain;
                const int32_t *tok = r->tokens + q->len;
                int32_t pg;
                if (mtp && q->len > start * pt && !mtp_next_is(c, q, tok[0]))
                        break;
                dsv_kv_chain_key(&parent, tok, pt, &key);
                pg = dsv_kv_page_lookup(core_pool(c, q), &key, &parent, tok);
                if (pg < 0 || dsv_kv_seq_append_cached(core_pool(c, q), q, pg) < 0)
                        break;
                prev = r->chain;
                r->chain = key;
                r->n_keyed++;
        }
        if (mtp && q->len > start * pt) {
                if (!mtp_next_is(c, q, r->tokens[q->len])) {
                        /* whole pages only: nothing is copied, so this cannot fail */
                        dsv_kv_seq_truncate(core_pool(c, q), q, q->len - pt);
                        r->chain = prev;
                        r->n_keyed--;
                }
                q->mtp_len = q->len;
        }
        if (q->len > start * pt) {
                DSV_METRIC_ADD(c->metrics, prefix_cache_tokens_total, q->len - start * pt);
                r->n_exact = q->len;
        }
}

int prefix_probe(const struct dsv_core *c, const struct request *r, int rank) {
        const int pt = (int)c->p.kv_page_tokens;
        struct dsv_kv_key parent, key;
        int n = 0;
        if (!c->tun.prefix_cache)
                return 0;
        seed(c, r, &parent);
        for (int len = 0; len + pt <= r->n_prompt - 2; len += pt, n++) {
                dsv_kv_chain_key(&parent, r->tokens + len, pt, &key);
                if (dsv_kv_page_lookup(c->kv[rank], &key, &parent, r->tokens + len) < 0)
                        break;
                parent = key;
        }
        return n;
}

void prefix_register(struct dsv_core *c, struct request *r) {
        const int pt = (int)c->p.kv_page_tokens;
        const bool mtp = c->exec.mtp != NULL;
        int full = MIN(r->n_exact, r->seq.len) / pt;
        if (mtp)
                full = MIN(full, (r->seq.mtp_len + 1) / pt);
        if (!c->tun.prefix_cache || full <= r->n_keyed)
                return;
        while (r->n_keyed < full) {
                struct dsv_kv_key parent = r->n_keyed ? r->chain : (struct dsv_kv_key){{0, 0}}, key;
                const int end = (r->n_keyed + 1) * pt;
                if (r->n_keyed == 0) {
                        seed(c, r, &parent);
                        r->chain = parent;
                }
                dsv_kv_chain_key(&parent, r->tokens + (size_t)r->n_keyed * pt, pt, &key);
                /* tokens[end] exists when its record does: the MTP layer only takes known tokens */
                dsv_kv_page_register(core_pool(c, &r->seq), r->seq.pages[r->n_keyed], &key, &parent, r->tokens + (size_t)r->n_keyed * pt,
                                     mtp && r->seq.mtp_len >= end ? r->tokens[end] : -1);
                r->chain = key;
                r->n_keyed++;
        }
}
