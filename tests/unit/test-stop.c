/* The stop-string matcher (daemon/engine/stop.c) against a one-shot reference: for random
 * texts over a small alphabet (so that stop strings overlap, repeat and share prefixes) and
 * every split of short texts into pieces (tokens), and random splits of longer ones, the
 * shown text and the match are the same; while no string matched, what is shown plus what is
 * held is the stream so far and only the longest tail that could begin a stop string is
 * held. Bad set-ups are refused. */
#include "config.h"

#include <errno.h>
#include <string.h>

#include "daemon/engine/stop.h"
#include "daemon/rng.h"
#include "tests/check.h"

static uint64_t next_u64(uint64_t *s) { return dsv_mix64((*s)++); }

struct setup {
        uint32_t n;
        char s[DSV_STOP_MAX_STRINGS][DSV_STOP_MAX_BYTES + 1];
        uint32_t len[DSV_STOP_MAX_STRINGS];
};

/* The whole text at once, written the obvious way: the first end at which a string ends. */
static int reference(const struct setup *su, const char *t, size_t n, size_t *shown) {
        for (size_t end = 1; end <= n; end++) {
                int best = -1;
                for (uint32_t i = 0; i < su->n; i++)
                        if (su->len[i] <= end && memcmp(t + end - su->len[i], su->s[i], su->len[i]) == 0 &&
                            (best < 0 || su->len[i] > su->len[best]))
                                best = (int)i;
                if (best >= 0) {
                        *shown = end - su->len[best];
                        return best;
                }
        }
        *shown = n;
        return -1;
}

/* The longest proper tail of t[0, n) that begins a stop string. */
static size_t ref_held(const struct setup *su, const char *t, size_t n) {
        for (size_t k = MIN(n, (size_t)DSV_STOP_MAX_BYTES - 1); k > 0; k--)
                for (uint32_t i = 0; i < su->n; i++)
                        if (su->len[i] > k && memcmp(t + n - k, su->s[i], k) == 0)
                                return k;
        return 0;
}

static void init(struct dsv_stop *m, const struct setup *su) {
        const char *p[DSV_STOP_MAX_STRINGS];
        for (uint32_t i = 0; i < su->n; i++)
                p[i] = su->s[i];
        REQUIRE(dsv_stop_init(m, p, su->len, su->n) == 0, "init");
}

/* Feeds t cut at the positions where bit (i - 1) of cuts is set (i = 1 .. n - 1), or at
 * random when cuts is UINT64_MAX. */
static void run(const struct setup *su, const char *t, size_t n, uint64_t cuts, uint64_t *rng) {
        struct dsv_stop m;
        struct dsv_strbuf out = {0};
        size_t want_shown, from = 0;
        int want = reference(su, t, n, &want_shown), got = -1;

        init(&m, su);
        for (size_t i = 1; i <= n; i++) {
                bool cut = i == n || (cuts == UINT64_MAX ? next_u64(rng) % 3 == 0 : (cuts >> (i - 1)) & 1);
                int r;
                if (!cut)
                        continue;
                r = dsv_stop_feed(&m, t + from, i - from, &out);
                REQUIRE(r >= -1, "feed failed: %d", r);
                if (got < 0 && r >= 0)
                        got = r;
                if (got < 0) {
                        CHECK(out.n + m.n_held == i, "shown %zu + held %u != %zu fed", out.n, m.n_held, i);
                        CHECK(m.n_held == ref_held(su, t, i), "held %u, the longest tail that begins a string is %zu",
                              m.n_held, ref_held(su, t, i));
                }
                from = i;
        }
        if (got < 0)
                REQUIRE(dsv_stop_finish(&m, &out) == 0, "finish");
        CHECK(got == want, "matched %d, want %d (text '%.*s')", got, want, (int)n, t);
        CHECK(out.n == want_shown && (out.n == 0 || memcmp(out.p, t, out.n) == 0),
              "showed '%.*s', want '%.*s'", (int)out.n, out.p ? out.p : "", (int)want_shown, t);
        dsv_strbuf_done(&out);
}

static void random_setup(struct setup *su, uint64_t *rng, int alpha) {
        su->n = 1 + (uint32_t)(next_u64(rng) % DSV_STOP_MAX_STRINGS);
        for (uint32_t i = 0; i < su->n; i++) {
                su->len[i] = 1 + (uint32_t)(next_u64(rng) % (next_u64(rng) % 8 == 0 ? DSV_STOP_MAX_BYTES : 4));
                for (uint32_t j = 0; j < su->len[i]; j++)
                        su->s[i][j] = (char)('a' + next_u64(rng) % (uint64_t)alpha);
        }
}

int main(void) {
        uint64_t rng = 0x5eed;
        struct dsv_stop m;
        char text[200];

        /* every split of short texts */
        for (int round = 0; round < 300; round++) {
                struct setup su;
                size_t n = 1 + next_u64(&rng) % 12;
                random_setup(&su, &rng, 3);
                for (size_t i = 0; i < n; i++)
                        text[i] = (char)('a' + next_u64(&rng) % 3);
                for (uint64_t cuts = 0; cuts < (1ull << (n - 1)); cuts++)
                        run(&su, text, n, cuts, &rng);
        }
        /* random splits of longer texts, with long stop strings too */
        for (int round = 0; round < 3000; round++) {
                struct setup su;
                size_t n = 1 + next_u64(&rng) % sizeof(text);
                random_setup(&su, &rng, 2 + (int)(next_u64(&rng) % 3));
                for (size_t i = 0; i < n; i++)
                        text[i] = (char)('a' + next_u64(&rng) % 3);
                if (round % 4 == 0 && su.len[0] < n) /* make sure some long ones match */
                        memcpy(text + next_u64(&rng) % (n - su.len[0] + 1), su.s[0], su.len[0]);
                run(&su, text, n, UINT64_MAX, &rng);
        }
        /* a known case: "bc" completes before "abcd" does, so "a" is shown */
        {
                struct setup su = {.n = 2, .s = {"abcd", "bc"}, .len = {4, 2}};
                struct dsv_strbuf out = {0};
                init(&m, &su);
                CHECK(dsv_stop_feed(&m, "xabcd", 5, &out) == 1, "the string that completes first wins");
                CHECK(out.n == 2 && memcmp(out.p, "xa", 2) == 0, "shown '%.*s'", (int)out.n, out.p);
                CHECK(dsv_stop_feed(&m, "more", 4, &out) == 1 && out.n == 2, "nothing after a match");
                dsv_strbuf_done(&out);
        }
        /* no strings: everything passes at once */
        {
                struct dsv_strbuf out = {0};
                REQUIRE(dsv_stop_init(&m, NULL, NULL, 0) == 0, "init with none");
                CHECK(dsv_stop_feed(&m, "abc", 3, &out) == -1 && out.n == 3, "passes through");
                dsv_strbuf_done(&out);
        }
        /* bad set-ups */
        {
                const char *p[DSV_STOP_MAX_STRINGS + 1];
                uint32_t len[DSV_STOP_MAX_STRINGS + 1];
                static char big[DSV_STOP_MAX_BYTES + 1];
                for (int i = 0; i <= DSV_STOP_MAX_STRINGS; i++)
                        p[i] = "x", len[i] = 1;
                CHECK(dsv_stop_init(&m, p, len, DSV_STOP_MAX_STRINGS + 1) == -EINVAL, "too many strings");
                len[0] = 0;
                CHECK(dsv_stop_init(&m, p, len, 1) == -EINVAL, "an empty string");
                p[0] = big;
                len[0] = DSV_STOP_MAX_BYTES + 1;
                CHECK(dsv_stop_init(&m, p, len, 1) == -EINVAL, "a string over the cap");
                len[0] = DSV_STOP_MAX_BYTES;
                CHECK(dsv_stop_init(&m, p, len, 1) == 0, "a string at the cap");
        }
        printf("%d checks, %d failures\n", test_checks, test_failures);
        return test_failures ? 1 : 0;
}
