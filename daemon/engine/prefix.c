/* The prefix cache (see kv_cache.h for the pool's side): a full page of a sequence whose KV a
 * prefill computed is registered under the hash chain of every token up to its end, seeded
 * by the model and, unless sharing across uids is configured, the uid (a shared cache lets
 * one user learn by timing what another sent). At admission, a request maps the registered
 * pages that continue its sequence with its prompt instead of computing them. Only
 * prefill-computed pages are registered (see struct session: decode-computed KV differs in
 * the last bits), so a hit gives exactly the output of a cold run. At least two prompt
 * tokens are always left to compute (the last one's logits are needed, and a single token
 * would take the decode path). */
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

void prefix_attach(struct dsv_core *c, struct request *r) {
        const int pt = (int)c->p.kv_page_tokens;
        struct dsv_kv_seq *q = &r->seq;
        int start;

        r->n_keyed = 0;
        if (!c->tun.prefix_cache || q->len % pt || q->n_pages * pt != q->len)
                return;
        start = q->len / pt;
        chain_to(c, r, start);
        while ((q->len + pt) <= r->n_prompt - 2) {
                struct dsv_kv_key key, parent = r->chain;
                const int32_t *tok = r->tokens + q->len;
                int32_t pg;
                dsv_kv_chain_key(&parent, tok, pt, &key);
                pg = dsv_kv_page_lookup(c->kv, &key, &parent, tok);
                if (pg < 0 || dsv_kv_seq_append_cached(c->kv, q, pg) < 0)
                        break;
                r->chain = key;
                r->n_keyed++;
        }
        if (q->len > start * pt) {
                DSV_METRIC_ADD(c->metrics, prefix_cache_tokens_total, q->len - start * pt);
                r->n_exact = q->len;
        }
}

void prefix_register(struct dsv_core *c, struct request *r) {
        const int pt = (int)c->p.kv_page_tokens;
        int full = MIN(r->n_exact, r->seq.len) / pt;
        if (!c->tun.prefix_cache || full <= r->n_keyed)
                return;
        while (r->n_keyed < full) {
                struct dsv_kv_key parent = r->n_keyed ? r->chain : (struct dsv_kv_key){{0, 0}}, key;
                if (r->n_keyed == 0) {
                        seed(c, r, &parent);
                        r->chain = parent;
                }
                dsv_kv_chain_key(&parent, r->tokens + (size_t)r->n_keyed * pt, pt, &key);
                dsv_kv_page_register(c->kv, r->seq.pages[r->n_keyed], &key, &parent, r->tokens + (size_t)r->n_keyed * pt);
                r->chain = key;
                r->n_keyed++;
        }
}
