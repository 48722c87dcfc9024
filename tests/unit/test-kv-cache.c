/* The KV pool's page accounting (reserve, truncate, release) and truncation under the
 * model: a sequence cut back to a prefix and continued with other tokens gives the logits
 * of a fresh sequence of that prefix and those tokens (the stale bytes left in the kept
 * tail page are never read), which is what sessions rely on when a prompt diverges from
 * the cached history. A remote pool (another node's, kept as bookkeeping) sends its writes
 * and reads through its owner's callbacks. */
#include "config.h"

#include <errno.h>
#include <string.h>

#include "daemon/kv_cache.h"
#include "tests/unit/modelutil.h"

#define PT DSV_KV_PAGE_TOKENS

static bool pages_distinct(const struct dsv_kv_pool *p, const struct dsv_kv_seq *a, const struct dsv_kv_seq *b) {
        /* every page is in exactly one place: the free list, a or b */
        int *seen = calloc((size_t)p->n_pages, sizeof(int));
        bool ok = seen != NULL;
        for (int i = 0; ok && i < p->n_free; i++)
                seen[p->free_pages[i]]++;
        for (int i = 0; ok && a && i < a->n_pages; i++)
                seen[a->pages[i]]++;
        for (int i = 0; ok && b && i < b->n_pages; i++)
                seen[b->pages[i]]++;
        for (int i = 0; ok && i < p->n_pages; i++)
                ok = seen[i] == 1;
        free(seen);
        return ok;
}

static void test_accounting(struct dsv_backend *be, const struct dsv_model_config *cfg) {
        struct dsv_kv_pool *p;
        struct dsv_kv_seq a = {0}, b = {0};
        int32_t first[4];

        REQUIRE(dsv_kv_pool_new(be, cfg, DSV_KV_F32, 8, &p) == 0, "pool");
        REQUIRE(dsv_kv_seq_reserve(p, &a, 3 * PT + 10) == 0, "reserve");
        CHECK(a.n_pages == 4 && p->n_free == 4, "reserve 202 tokens: %d pages, %d free", a.n_pages, p->n_free);
        memcpy(first, a.pages, sizeof(first));
        a.len = 3 * PT + 10; /* as if a forward pass had filled them */

        CHECK(dsv_kv_seq_truncate(p, &a, a.len + 1) == -EINVAL && a.len == 3 * PT + 10 && a.n_pages == 4,
              "truncating past len must fail and change nothing");
        CHECK(dsv_kv_seq_truncate(p, &a, -1) == -EINVAL && a.n_pages == 4, "negative length accepted");
        CHECK(dsv_kv_seq_truncate(p, &a, a.len) == 0 && a.n_pages == 4 && p->n_free == 4, "truncate to len");

        CHECK(dsv_kv_seq_truncate(p, &a, 2 * PT + 1) == 0 && a.len == 2 * PT + 1 && a.n_pages == 3 && p->n_free == 5,
              "truncate to 129: len %d, %d pages, %d free", a.len, a.n_pages, p->n_free);
        CHECK(!memcmp(a.pages, first, 3 * sizeof(int32_t)), "the kept pages must stay in place");
        CHECK(dsv_kv_seq_truncate(p, &a, 2 * PT) == 0 && a.n_pages == 2 && p->n_free == 6,
              "truncate to a page boundary");
        CHECK(pages_distinct(p, &a, NULL), "a page is lost or in two places");

        /* the freed pages serve another sequence; growing again takes pages from the pool */
        CHECK(dsv_kv_seq_reserve(p, &b, 5 * PT) == 0 && b.n_pages == 5 && p->n_free == 1, "second sequence");
        CHECK(dsv_kv_seq_reserve(p, &a, 4 * PT) == -ENOSPC && a.n_pages == 2,
              "over-reserve must fail and change nothing");
        CHECK(dsv_kv_seq_reserve(p, &a, 3 * PT) == 0 && a.n_pages == 3 && p->n_free == 0, "grow after truncate");
        CHECK(!memcmp(a.pages, first, 2 * sizeof(int32_t)), "growing must keep the prefix pages");
        CHECK(pages_distinct(p, &a, &b), "a page is lost or in two places");

        /* reserved but unfilled pages go too */
        a.len = 5;
        CHECK(dsv_kv_seq_truncate(p, &a, 5) == 0 && a.n_pages == 1 && p->n_free == 2,
              "reserved pages past len: %d pages", a.n_pages);
        CHECK(dsv_kv_seq_truncate(p, &a, 0) == 0 && a.n_pages == 0 && a.len == 0 && p->n_free == 3, "truncate to 0");
        CHECK(dsv_kv_seq_truncate(p, &a, 0) == 0, "truncating an empty sequence");
        dsv_kv_seq_release(p, &a);
        dsv_kv_seq_release(p, &b);
        CHECK(p->n_free == 8 && pages_distinct(p, NULL, NULL), "all pages back: %d free", p->n_free);
        dsv_kv_pool_free(p);
}

static void forward(struct dsv_model *m, struct dsv_kv_pool *kv, struct dsv_kv_seq *q, const int32_t *toks, int n,
                    float *logits) {
        struct dsv_kv_seq *one[1] = {q};
        int32_t pos[256], sq[256] = {0};
        struct dsv_error err = {{0}};
        REQUIRE(n <= 256, "chunk");
        for (int i = 0; i < n; i++)
                pos[i] = q->len + i;
        struct dsv_batch b = {.n_tokens = n, .token = toks, .pos = pos, .seq = sq, .n_seqs = 1, .seqs = one};
        REQUIRE(dsv_model_forward(m, kv, &b, logits, &err) == 0, "forward: %s", err.msg);
}

static double rel_diff(const float *a, const float *b, size_t n) {
        double d = max_abs_diff(a, b, n, NULL), s = fmax(max_abs(a, n), 1e-30);
        return d / s;
}

/* Shared and content-addressed pages: register, look up (key, parent and tokens must all
 * match), cached pages reclaimed least recently cached first when the free stack is empty,
 * copy-on-write of a shared tail page (bytes copied, the original untouched), a sole holder
 * truncating into its registered page unregisters it. */
static void test_sharing(struct dsv_backend *be, const struct dsv_model_config *cfg) {
        struct dsv_kv_pool *p;
        struct dsv_kv_seq a = {0}, b = {0}, c = {0};
        struct dsv_kv_key seed, k0, k1, other;
        int32_t tok[2 * PT], tok2[PT];

        REQUIRE(dsv_kv_pool_new(be, cfg, DSV_KV_F32, 4, &p) == 0, "pool");
        for (int i = 0; i < 2 * PT; i++)
                tok[i] = 10 + i;
        for (int i = 0; i < PT; i++)
                tok2[i] = tok[i] + (i == 17);
        dsv_kv_chain_seed(77, 1, &seed);
        dsv_kv_chain_key(&seed, tok, PT, &k0);
        dsv_kv_chain_key(&k0, tok + PT, PT, &k1);
        dsv_kv_chain_key(&seed, tok2, PT, &other);
        CHECK(memcmp(&k0, &other, sizeof(k0)) != 0, "one token apart, same key");
        dsv_kv_chain_seed(77, 2, &other);
        CHECK(memcmp(&seed, &other, sizeof(seed)) != 0, "another scope, same seed");

        /* a computes two pages and registers them */
        REQUIRE(dsv_kv_seq_reserve(p, &a, 2 * PT) == 0, "reserve");
        a.len = 2 * PT;
        memset((uint8_t *)p->base + (size_t)a.pages[1] * p->page_bytes, 0x5a, p->page_bytes);
        dsv_kv_page_register(p, a.pages[0], &k0, &seed, tok, tok[PT]);
        dsv_kv_page_register(p, a.pages[1], &k1, &k0, tok + PT, -1);
        dsv_kv_page_register(p, a.pages[0], &k0, &seed, tok, 3); /* registered already: nothing changes */
        CHECK(p->page[a.pages[0]].mtp_next == tok[PT] && p->page[a.pages[1]].mtp_next == -1,
              "the MTP record's next token is kept with the page: %d, %d", p->page[a.pages[0]].mtp_next,
              p->page[a.pages[1]].mtp_next);
        CHECK(p->n_registered == 2 && dsv_kv_page_lookup(p, &k0, &seed, tok) == a.pages[0] &&
                      dsv_kv_page_lookup(p, &k1, &k0, tok + PT) == a.pages[1],
              "lookup of registered pages");
        CHECK(dsv_kv_page_lookup(p, &k0, &seed, tok2) == -1 && dsv_kv_page_lookup(p, &k1, &seed, tok + PT) == -1,
              "a lookup must match tokens and parent");
        /* b maps both: shared, nothing allocated */
        CHECK(dsv_kv_seq_append_cached(p, &b, a.pages[0]) == 0 && dsv_kv_seq_append_cached(p, &b, a.pages[1]) == 0 &&
                      b.len == 2 * PT && p->n_free == 2 && p->page[a.pages[1]].ref == 2,
              "append cached: len %d, %d free", b.len, p->n_free);
        CHECK(dsv_kv_seq_append_cached(p, &c, 3) == -EINVAL, "an unregistered page cannot be appended");
        /* b truncates into the shared second page: it gets a copy with the same bytes */
        int32_t shared = b.pages[1];
        CHECK(dsv_kv_seq_truncate(p, &b, PT + 10) == 0 && b.pages[1] != shared && p->n_copied == 1 &&
                      p->page[shared].ref == 1 && p->page[shared].registered,
              "copy-on-write of the shared tail");
        CHECK(!memcmp((uint8_t *)p->base + (size_t)b.pages[1] * p->page_bytes,
                      (uint8_t *)p->base + (size_t)shared * p->page_bytes, p->page_bytes),
              "the copy holds the page's bytes");
        /* a releases: its pages stay cached (registered, unreferenced) except what b holds */
        dsv_kv_seq_release(p, &a);
        CHECK(p->n_cached == 1 && dsv_kv_pool_in_use(p) == 2 && dsv_kv_pool_available(p) == 2,
              "after release: %d cached, %d in use", p->n_cached, dsv_kv_pool_in_use(p));
        dsv_kv_seq_release(p, &b);
        CHECK(p->n_cached == 2 && p->n_free == 2 && dsv_kv_pool_in_use(p) == 0, "all released: %d cached", p->n_cached);
        /* the free stack runs out: cached pages are reclaimed, the least recently cached first
         * (a released the second page first; b released the first page last) */
        REQUIRE(dsv_kv_seq_reserve(p, &c, 3 * PT) == 0, "reserve over cached pages");
        CHECK(p->n_reclaimed == 1 && p->n_registered == 1 && dsv_kv_page_lookup(p, &k1, &k0, tok + PT) == -1 &&
                      dsv_kv_page_lookup(p, &k0, &seed, tok) >= 0,
              "reclaim order: %llu reclaimed", (unsigned long long)p->n_reclaimed);
        CHECK(dsv_kv_seq_reserve(p, &c, 5 * PT) == -ENOSPC && c.n_pages == 3, "more than the pool");
        dsv_kv_seq_release(p, &c);
        /* a sole holder truncating into its registered page unregisters it */
        int32_t pg = dsv_kv_page_lookup(p, &k0, &seed, tok);
        REQUIRE(pg >= 0, "k0 still cached");
        CHECK(dsv_kv_seq_append_cached(p, &a, pg) == 0 && dsv_kv_seq_truncate(p, &a, 10) == 0 && !p->page[pg].registered &&
                      a.pages[0] == pg && p->n_registered == 0,
              "truncate into a registered page held alone");
        dsv_kv_seq_release(p, &a);
        CHECK(p->n_free + p->n_cached == p->n_pages, "pages lost: %d free %d cached of %d", p->n_free, p->n_cached,
              p->n_pages);
        dsv_kv_pool_free(p);
}

static void test_model(struct dsv_backend *be) {
        enum { N_A = 100, KEEP = 70, N_B = 50 };
        const char *dir = fixture_tiny("kv-cache-tiny", 11);
        struct dsv_model *m = load_model(be, dir, DSV_NUMERICS_EXACT);
        const struct dsv_model_config *c = dsv_model_get_config(m);
        const int V = c->vocab_size;
        struct dsv_kv_pool *kv;
        struct dsv_kv_seq q = {0}, fresh = {0};
        int32_t a[N_A], bt[KEEP + N_B];
        float *la = malloc((size_t)N_A * V * sizeof(float)), *lb = malloc((size_t)N_B * V * sizeof(float)),
              *lf = malloc((size_t)(KEEP + N_B) * V * sizeof(float));
        double d;

        REQUIRE(la && lb && lf, "oom");
        make_tokens(a, N_A, V, 5);
        memcpy(bt, a, KEEP * sizeof(int32_t));
        make_tokens(bt + KEEP, N_B, V, 6); /* diverges from a at position KEEP */
        REQUIRE(dsv_kv_pool_new(be, c, dsv_numerics_kv_format(DSV_NUMERICS_EXACT), 8, &kv) == 0, "pool");

        /* the cached history: a, prefilled as KEEP + the rest (the chunks the fresh run uses) */
        REQUIRE(dsv_kv_seq_reserve(kv, &q, N_A) == 0, "reserve");
        forward(m, kv, &q, a, KEEP, la);
        forward(m, kv, &q, a + KEEP, N_A - KEEP, la);
        CHECK(q.len == N_A, "len %d", q.len);
        /* cut back to the shared prefix, continue with b's tail */
        CHECK(dsv_kv_seq_truncate(kv, &q, KEEP) == 0 && q.len == KEEP && q.n_pages == DIV_ROUND_UP(KEEP, PT),
              "truncate");
        REQUIRE(dsv_kv_seq_reserve(kv, &q, KEEP + N_B) == 0, "reserve again");
        forward(m, kv, &q, bt + KEEP, N_B, lb);

        /* fresh sequence of b */
        REQUIRE(dsv_kv_seq_reserve(kv, &fresh, KEEP + N_B) == 0, "reserve fresh");
        forward(m, kv, &fresh, bt, KEEP, lf);
        forward(m, kv, &fresh, bt + KEEP, N_B, lf + (size_t)KEEP * V);
        d = rel_diff(lf + (size_t)KEEP * V, lb, (size_t)N_B * V);
        printf("truncated to %d and continued vs fresh: max rel diff %.3g\n", KEEP, d);
        CHECK(d == 0, "a truncated sequence continued with new tokens differs from a fresh one (%.3g)", d);
        /* and it really diverged: the logits of a's tail at the same positions differ */
        d = rel_diff(la + (size_t)0 * V, lb, (size_t)(N_A - KEEP) * V);
        CHECK(d > 1e-3, "the test prompts do not diverge (%.3g)", d);

        dsv_kv_seq_release(kv, &q);
        dsv_kv_seq_release(kv, &fresh);
        CHECK(kv->n_free == kv->n_pages, "pages leaked: %d of %d free", kv->n_free, kv->n_pages);
        dsv_kv_pool_free(kv);
        dsv_model_free(m);
        free(la);
        free(lb);
        free(lf);
}

/* A sequence moved to another pool (dsv_kv_seq_move: data-parallel ranks' pools): a model
 * continuing it there gives exactly the logits of continuing it where it was; the old pages
 * go back (a registered one stays cached there), len, mtp_len and rank are kept; another
 * geometry, the same pool and a pool without room are refused with nothing changed. */
static void test_move(struct dsv_backend *be) {
        enum { KEEP = 70, N_B = 50 };
        const char *dir = fixture_tiny("kv-cache-tiny", 11);
        struct dsv_model *m = load_model(be, dir, DSV_NUMERICS_EXACT);
        const struct dsv_model_config *c = dsv_model_get_config(m);
        const int V = c->vocab_size;
        const enum dsv_kv_format fmt = dsv_numerics_kv_format(DSV_NUMERICS_EXACT);
        struct dsv_kv_pool *pa, *pb, *odd;
        struct dsv_kv_seq ref = {0}, q = {0}, hog = {0}, empty = {0};
        struct dsv_kv_key seed, key;
        int32_t t[KEEP + N_B];
        float *lr = malloc((size_t)N_B * V * sizeof(float)), *lm = malloc((size_t)N_B * V * sizeof(float)),
              *scratch = malloc((size_t)KEEP * V * sizeof(float));
        uint8_t *x = NULL, *y = NULL;
        double d;

        REQUIRE(lr && lm && scratch, "oom");
        make_tokens(t, KEEP + N_B, V, 7);
        REQUIRE(dsv_kv_pool_new(be, c, fmt, 8, &pa) == 0 && dsv_kv_pool_new(be, c, fmt, 8, &pb) == 0 &&
                        dsv_kv_pool_new_layers(be, c, fmt, c->num_hidden_layers + 1, 8, &odd) == 0,
                "pools");
        x = malloc(pa->page_bytes);
        y = malloc(pa->page_bytes);
        REQUIRE(x && y, "oom");
        /* the reference: prefilled and continued in pa */
        REQUIRE(dsv_kv_seq_reserve(pa, &ref, KEEP + N_B) == 0, "reserve");
        forward(m, pa, &ref, t, KEEP, scratch);
        forward(m, pa, &ref, t + KEEP, N_B, lr);
        /* the same prefill in pa, its first page registered, moved to pb, continued there */
        REQUIRE(dsv_kv_seq_reserve(pa, &q, KEEP) == 0, "reserve");
        forward(m, pa, &q, t, KEEP, scratch);
        dsv_kv_chain_seed(1, 0, &seed);
        dsv_kv_chain_key(&seed, t, PT, &key);
        dsv_kv_page_register(pa, q.pages[0], &key, &seed, t, -1);
        q.mtp_len = 3;
        q.rank = 1;
        const int free_a = pa->n_free, n = q.n_pages;
        const int32_t first = q.pages[0];
        CHECK(dsv_kv_seq_move(pa, pa, &q) == -EINVAL && q.n_pages == n && q.pages[0] == first, "a move into its own pool");
        CHECK(dsv_kv_seq_move(pa, odd, &q) == -EINVAL && q.n_pages == n && odd->n_free == odd->n_pages,
              "a move into a pool of another geometry");
        REQUIRE(dsv_kv_seq_reserve(pb, &hog, (pb->n_pages - 1) * PT) == 0, "hog");
        CHECK(dsv_kv_seq_move(pa, pb, &q) == -ENOSPC && q.n_pages == n && q.pages[0] == first && pa->n_free == free_a &&
                      pb->n_free == 1,
              "a move into a pool without room: %d pages, %d free in pa, %d in pb", q.n_pages, pa->n_free, pb->n_free);
        dsv_kv_seq_release(pb, &hog);
        CHECK(dsv_kv_seq_move(pa, pb, &empty) == 0 && empty.n_pages == 0, "moving an empty sequence");
        REQUIRE(be->ops->download(be, x, (uint8_t *)pa->base + (size_t)first * pa->page_bytes, pa->page_bytes) >= 0, "dl");
        CHECK(dsv_kv_seq_move(pa, pb, &q) == 0, "move");
        CHECK(q.len == KEEP && q.mtp_len == 3 && q.rank == 1 && q.n_pages == n && pb->n_free == pb->n_pages - n,
              "after the move: len %d, mtp_len %d, rank %d, %d pages, %d free in pb", q.len, q.mtp_len, q.rank, q.n_pages,
              pb->n_free);
        CHECK(pa->n_free == free_a + n - 1 && pa->n_cached == 1 && dsv_kv_page_lookup(pa, &key, &seed, t) == first,
              "the old pool: %d free (%d before), %d cached", pa->n_free, free_a, pa->n_cached);
        REQUIRE(be->ops->download(be, y, (uint8_t *)pb->base + (size_t)q.pages[0] * pb->page_bytes, pb->page_bytes) >= 0, "dl");
        CHECK(memcmp(x, y, pa->page_bytes) == 0, "the moved page's bytes differ");
        CHECK(dsv_kv_page_lookup(pb, &key, &seed, t) < 0, "the moved page is registered in its new pool");
        q.mtp_len = 0;
        REQUIRE(dsv_kv_seq_reserve(pb, &q, KEEP + N_B) == 0, "reserve");
        forward(m, pb, &q, t + KEEP, N_B, lm);
        d = rel_diff(lr, lm, (size_t)N_B * V);
        printf("continued after a move to another pool vs where it was: max rel diff %.3g\n", d);
        CHECK(d == 0, "a moved sequence continues differently (%.3g)", d);

        dsv_kv_seq_release(pa, &ref);
        dsv_kv_seq_release(pb, &q);
        CHECK(pa->n_free + pa->n_cached == pa->n_pages && pb->n_free == pb->n_pages, "pages leaked");
        dsv_kv_pool_free(pa);
        dsv_kv_pool_free(pb);
        dsv_kv_pool_free(odd);
        dsv_model_free(m);
        free(lr);
        free(lm);
        free(scratch);
        free(x);
        free(y);
}

/* A remote pool (dsv_kv_pool_new_remote: a follower node's pool as node 0 keeps it) stands for
 * `far`, a real pool of this process: its writes are queued (as ranks.c queues them for the
 * node's next job) and applied to far before a read, as the node applies them before a READ
 * job. Moves in and out, a copy-on-write copy and reads give far exactly the bytes a local
 * pool would hold; a failing write or read changes nothing; a page out of range is refused
 * before the remote is asked. */
struct fake_node {
        struct dsv_kv_pool *far;
        int32_t rec[64][2];
        uint8_t *bytes[64];
        int n, writes, reads, fail;
};

static int fake_flush(struct fake_node *fn) {
        for (int i = 0; i < fn->n; i++) {
                int r = fn->rec[i][1] < 0 ? dsv_kv_page_upload(fn->far, fn->rec[i][0], fn->bytes[i])
                                          : dsv_kv_page_copy(fn->far, fn->rec[i][0], fn->rec[i][1]);
                free(fn->bytes[i]);
                if (r < 0)
                        return r;
        }
        fn->n = 0;
        return 0;
}

static int fake_write(void *ud, int32_t dst, int32_t src, const void *bytes) {
        struct fake_node *fn = ud;
        if (fn->fail || fn->n == 64)
                return -ENOMEM;
        fn->rec[fn->n][0] = dst;
        fn->rec[fn->n][1] = src;
        fn->bytes[fn->n] = NULL;
        if (src < 0 && !(fn->bytes[fn->n] = malloc(fn->far->page_bytes)))
                return -ENOMEM;
        if (src < 0)
                memcpy(fn->bytes[fn->n], bytes, fn->far->page_bytes);
        fn->n++;
        fn->writes++;
        return 0;
}

static int fake_read(void *ud, const int32_t *pages, int n, void *out) {
        struct fake_node *fn = ud;
        int r;
        fn->reads++;
        if (fn->fail)
                return -ECONNABORTED;
        if ((r = fake_flush(fn)) < 0)
                return r;
        return dsv_kv_pages_download(fn->far, pages, n, out);
}

static void fill_page(struct dsv_kv_pool *p, int32_t page, unsigned seed) {
        uint8_t *b = malloc(p->page_bytes);
        REQUIRE(b, "oom");
        for (size_t i = 0; i < p->page_bytes; i++)
                b[i] = (uint8_t)((i * 2654435761u + seed * 40503u) >> 13);
        REQUIRE(dsv_kv_page_upload(p, page, b) == 0, "upload");
        free(b);
}

static void test_remote(struct dsv_backend *be, const struct dsv_model_config *cfg) {
        const enum dsv_kv_format fmt = dsv_numerics_kv_format(DSV_NUMERICS_EXACT);
        const int L = cfg->num_hidden_layers;
        struct fake_node fn = {0};
        const struct dsv_kv_remote io = {fake_write, fake_read, &fn}, half = {fake_write, NULL, &fn};
        struct dsv_kv_pool *local, *rp, *bad;
        struct dsv_kv_seq q = {0};
        uint8_t *want, *got;
        int32_t pages[3], oob = 8;

        REQUIRE(dsv_kv_pool_new(be, cfg, fmt, 8, &local) == 0 && dsv_kv_pool_new(be, cfg, fmt, 8, &fn.far) == 0, "pools");
        CHECK(dsv_kv_pool_new_remote(cfg, fmt, L, 8, NULL, &bad) == -EINVAL &&
                      dsv_kv_pool_new_remote(cfg, fmt, L, 8, &half, &bad) == -EINVAL &&
                      dsv_kv_pool_new_remote(cfg, fmt, L, 0, &io, &bad) == -EINVAL,
              "a remote pool without its reads, or without pages");
        REQUIRE(dsv_kv_pool_new_remote(cfg, fmt, L, 8, &io, &rp) == 0, "remote pool");
        CHECK(!rp->base && !rp->be && !dsv_kv_pool_host(rp) && dsv_kv_pool_host(local) && rp->page_bytes == local->page_bytes &&
                      rp->n_free == 8,
              "the remote pool holds no bytes here");
        want = malloc(3 * local->page_bytes);
        got = malloc(3 * local->page_bytes);
        REQUIRE(want && got, "oom");

        /* a sequence of 3 pages in the local pool, moved to the remote one: 3 uploads, queued */
        REQUIRE(dsv_kv_seq_reserve(local, &q, 2 * PT + 5) == 0, "reserve");
        q.len = 2 * PT + 5;
        for (int i = 0; i < 3; i++)
                fill_page(local, q.pages[i], 10 + i);
        REQUIRE(dsv_kv_pages_download(local, q.pages, 3, want) == 0, "download");
        CHECK(dsv_kv_seq_move(local, rp, &q) == 0 && q.n_pages == 3 && local->n_free == 8 && rp->n_free == 5 &&
                      fn.writes == 3 && fn.n == 3 && fn.rec[0][1] == -1 && fn.reads == 0,
              "a move to the remote pool: %d writes, %d reads", fn.writes, fn.reads);
        /* read back: the queued writes reach far first */
        CHECK(dsv_kv_pages_download(rp, q.pages, 3, got) == 0 && fn.reads == 1 && fn.n == 0 &&
                      memcmp(want, got, 3 * local->page_bytes) == 0,
              "the remote pool's pages read back differ");
        memcpy(pages, q.pages, sizeof(pages));
        CHECK(dsv_kv_pages_download(rp, &oob, 1, got) == -EINVAL && fn.reads == 1, "a page out of range is read");

        /* copy-on-write: another holder of the tail page, then a cut into it: one copy record */
        REQUIRE(dsv_kv_seq_truncate(rp, &q, 2 * PT + 5) == 0, "noop truncate");
        rp->page[q.pages[2]].ref++; /* as a second sequence sharing it would */
        const int writes = fn.writes;
        CHECK(dsv_kv_seq_truncate(rp, &q, 2 * PT + 1) == 0 && q.pages[2] != pages[2] && fn.writes == writes + 1 &&
                      fn.rec[fn.n - 1][0] == q.pages[2] && fn.rec[fn.n - 1][1] == pages[2] && rp->n_copied == 1,
              "a copy-on-write copy in the remote pool is not sent as a copy");
        CHECK(dsv_kv_pages_download(rp, &q.pages[2], 1, got) == 0 &&
                      memcmp(got, want + 2 * local->page_bytes, local->page_bytes) == 0,
              "the copied page's bytes differ");
        {
                /* the other holder lets the old tail page go */
                struct dsv_kv_seq tmp = {.pages = malloc(sizeof(int32_t)), .n_pages = 1, .cap = 1, .len = 1};
                REQUIRE(tmp.pages, "oom");
                tmp.pages[0] = pages[2];
                dsv_kv_seq_release(rp, &tmp);
        }

        /* a failing remote: an upload, a move and a read fail, nothing changes */
        fn.fail = 1;
        fill_page(local, 0, 99); /* local still works */
        {
                uint8_t *b = calloc(1, local->page_bytes);
                REQUIRE(b, "oom");
                CHECK(dsv_kv_page_upload(rp, 0, b) == -ENOMEM, "a failing remote write is not reported");
                free(b);
        }
        CHECK(dsv_kv_seq_move(rp, local, &q) == -ECONNABORTED && q.n_pages == 3 && rp->n_free == 5 && local->n_free == 8,
              "a failing read changed the sequence or the pools: %d pages, %d/%d free", q.n_pages, rp->n_free, local->n_free);
        fn.fail = 0;

        /* and back to the local pool: read from far, the same bytes (the copied tail too) */
        CHECK(dsv_kv_seq_move(rp, local, &q) == 0 && q.n_pages == 3 && rp->n_free == 8 && local->n_free == 5,
              "a move from the remote pool");
        CHECK(dsv_kv_pages_download(local, q.pages, 3, got) == 0 && memcmp(want, got, 2 * local->page_bytes) == 0 &&
                      memcmp(want + 2 * local->page_bytes, got + 2 * local->page_bytes, local->page_bytes) == 0,
              "the pages moved back differ");
        dsv_kv_seq_release(local, &q);
        dsv_kv_pool_free(rp);
        dsv_kv_pool_free(local);
        dsv_kv_pool_free(fn.far);
        free(want);
        free(got);
}

int main(void) {
        struct dsv_backend *be;
        struct dsv_model_config cfg;
        struct dsv_error err = {{0}};

        REQUIRE(dsv_backend_cpu_new(1, &be) == 0, "backend");
        REQUIRE(dsv_model_config_preset("tiny", &cfg, &err) == 0, "%s", err.msg);
        test_accounting(be, &cfg);
        test_sharing(be, &cfg);
        test_model(be);
        test_move(be);
        test_remote(be, &cfg);
        dsv_backend_free(be);
        return test_result("test-kv-cache");
}
