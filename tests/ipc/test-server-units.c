/* Units of the daemon without a daemon: the settings table (defaults, file syntax, bounds,
 * command-line spelling, what a reload may change), the sampler (greedy, determinism of a
 * seed, top-k/top-p/min-p restrict the support, temperature), and the access policy. */
#include "config.h"

#include <fcntl.h>
#include <math.h>
#include <unistd.h>

#include "daemon/rng.h"
#include "daemon/server/access.h"
#include "daemon/runtime/sampler.h"
#include "daemon/server/settings.h"
#include "daemon/util.h"
#include "daemon/server/rates.h"
#include "tests/check.h"

static void test_settings(void) {
        struct dsv_server_config c, n;
        char err[512], path[] = "/tmp/dsv32-settings-XXXXXX";
        int fd, r;

        CHECK(dsv_config_init(&c) == 0, "init");
        CHECK(!strcmp(c.model, "/var/lib/dsv32d/model") && !strcmp(c.socket, "/run/dsv32d/dsv32d.sock") &&
                      c.socket_mode == 0660 && !strcmp(c.allow_groups, "dsv32") && !strcmp(c.allow_users, "root"),
              "defaults: model %s socket %s mode %o", c.model, c.socket, (unsigned)c.socket_mode);
        CHECK(dsv_config_set(&c, "max-tokens-limit", "0", err, sizeof(err)) == -EINVAL && strstr(err, "max-tokens-limit"),
              "a value under the minimum must be refused: %s", err);
        CHECK(dsv_config_set(&c, "max-tokens-limit", "12x", err, sizeof(err)) == -EINVAL, "trailing junk accepted");
        CHECK(dsv_config_set(&c, "numerics", "fast", err, sizeof(err)) == -EINVAL && strstr(err, "faithful|exact"),
              "enum: %s", err);
        CHECK(dsv_config_set(&c, "no-such", "1", err, sizeof(err)) == -ENOENT, "unknown setting accepted");
        CHECK(dsv_config_set(&c, "socket-mode", "0600", err, sizeof(err)) == 0 && c.socket_mode == 0600, "octal mode");
        CHECK(dsv_config_set(&c, "socket-mode", "0800", err, sizeof(err)) == -EINVAL, "bad octal accepted");
        CHECK(c.kv_cache_mb == 0, "kv-cache-mb defaults to auto (0): %d", c.kv_cache_mb);
        CHECK(dsv_config_set(&c, "kv-cache-mb", "512", err, sizeof(err)) == 0 && c.kv_cache_mb == 512, "kv-cache-mb 512");
        CHECK(dsv_config_set(&c, "kv-cache-mb", "auto", err, sizeof(err)) == 0 && c.kv_cache_mb == 0, "kv-cache-mb auto");
        CHECK(dsv_config_set(&c, "kv-cache-mb", "lots", err, sizeof(err)) == -EINVAL && strstr(err, "or auto"),
              "kv-cache-mb lots: %s", err);
        {
                char *buf = NULL;
                size_t len = 0;
                FILE *m = open_memstream(&buf, &len);
                dsv_config_print(&c, m);
                fclose(m);
                CHECK(buf && strstr(buf, "\nkv-cache-mb = auto\n"), "--print-config shows kv-cache-mb = auto");
                free(buf);
        }

        fd = mkstemp(path);
        CHECK(fd >= 0, "mkstemp");
        dprintf(fd, "# comment\n\n  max_tokens_limit = 123  \nsocket = \"/tmp/x.sock\"\nspin-us=7\n");
        close(fd);
        r = dsv_config_load_file(&c, path, err, sizeof(err));
        CHECK(r == 0 && c.max_tokens_limit == 123 && !strcmp(c.socket, "/tmp/x.sock") && c.spin_us == 7,
              "file: r=%d %s limit=%d", r, err, c.max_tokens_limit);
        /* trailing comments: after whitespace, or after a quoted value; '#' inside a word or
         * quotes is part of the value */
        fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
        dprintf(fd, "socket = /tmp/q.sock  # my socket\nspin-us = 9\t# spin\nallow-users = \"a # b\"   # quoted\n"
                    "allow-groups = g#1\nmax-tokens-limit = 77 #\n");
        close(fd);
        r = dsv_config_load_file(&c, path, err, sizeof(err));
        CHECK(r == 0 && !strcmp(c.socket, "/tmp/q.sock") && c.spin_us == 9 && !strcmp(c.allow_users, "a # b") &&
                      !strcmp(c.allow_groups, "g#1") && c.max_tokens_limit == 77,
              "trailing comments: r=%d %s; socket '%s' allow-users '%s' allow-groups '%s'", r, err, c.socket, c.allow_users,
              c.allow_groups);
        fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
        dprintf(fd, "socket = \"/tmp/a.sock\" junk\n");
        close(fd);
        r = dsv_config_load_file(&c, path, err, sizeof(err));
        CHECK(r == -EINVAL && strstr(err, ":1:") && strstr(err, "after the closing quote"), "text after a quote: %s", err);
        fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
        dprintf(fd, "\nsocket = \"/tmp/a.sock\n");
        close(fd);
        r = dsv_config_load_file(&c, path, err, sizeof(err));
        CHECK(r == -EINVAL && strstr(err, ":2:") && strstr(err, "closing quote"), "an unterminated quote: %s", err);
        dsv_config_set(&c, "socket", "/tmp/x.sock", err, sizeof(err));
        fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
        dprintf(fd, "spin-us = 5\n\n# c\nbogus line\n");
        close(fd);
        r = dsv_config_load_file(&c, path, err, sizeof(err));
        CHECK(r == -EINVAL && strstr(err, ":4:"), "a bad line must be reported with its number (blank lines count): %s", err);
        unlink(path);
        CHECK(dsv_config_load_file(&c, "/nonexistent/dsv32d.conf", err, sizeof(err)) == -ENOENT, "missing file");

        /* reload: reloadable settings change, others keep their value */
        CHECK(dsv_config_init(&n) == 0, "init");
        dsv_config_set(&n, "max-tokens-limit", "999", err, sizeof(err));
        dsv_config_set(&n, "socket", "/tmp/other.sock", err, sizeof(err));
        dsv_config_set(&n, "allow-users", "root,daemon", err, sizeof(err));
        r = dsv_config_apply_reload(&c, &n);
        CHECK(c.max_tokens_limit == 999 && !strcmp(c.allow_users, "root,daemon"), "reloadable settings not applied");
        CHECK(!strcmp(c.socket, "/tmp/x.sock"), "socket changed on reload: %s", c.socket);
        CHECK(r >= 2, "changed %d", r);
        dsv_config_free(&n);
        dsv_config_free(&c);
        CHECK(dsv_log_level_from_name("debug") == DSV_LOG_DEBUG && dsv_log_level_from_name("x") < 0, "log levels");
}

static void test_sampler(void) {
        enum { V = 1000 };
        struct dsv_sampler s;
        float *logits = malloc(V * sizeof(float));
        struct dsv_sampling p = {.temperature = 0, .top_p = 1.0f};
        int hist[V] = {0};

        CHECK(dsv_sampler_init(&s, V) == 0, "init");
        for (int i = 0; i < V; i++)
                logits[i] = (float)dsv_rand_normal(7, (uint64_t)i);
        logits[500] = 10.0f;
        logits[501] = 10.0f; /* a tie: greedy takes the lower id */
        CHECK(dsv_sample(&s, logits, &p, 0) == 500, "greedy");
        p.temperature = 1.0f;
        p.top_k = 1;
        CHECK(dsv_sample(&s, logits, &p, 3) == 500, "top_k 1 is greedy");
        /* same seed, same step -> same token; different seeds spread */
        p.top_k = 0;
        p.temperature = 5.0f;
        p.seed = 1234;
        for (int step = 0; step < 50; step++)
                CHECK(dsv_sample(&s, logits, &p, (uint64_t)step) == dsv_sample(&s, logits, &p, (uint64_t)step),
                      "not deterministic");
        {
                int distinct = 0;
                for (int step = 0; step < 200; step++)
                        hist[dsv_sample(&s, logits, &p, (uint64_t)step)]++;
                for (int i = 0; i < V; i++)
                        distinct += hist[i] > 0;
                CHECK(distinct > 20, "temperature 5 should spread over many tokens, got %d", distinct);
        }
        /* top_k restricts the support to the k largest */
        p.top_k = 3;
        logits[10] = 9.0f;
        for (int step = 0; step < 300; step++) {
                int32_t t = dsv_sample(&s, logits, &p, (uint64_t)step);
                CHECK(t == 500 || t == 501 || t == 10, "top_k 3 drew %d", t);
        }
        /* top_p: a dominant token with mass > top_p is the only choice */
        p.top_k = 0;
        p.temperature = 1.0f;
        logits[700] = 30.0f;
        p.top_p = 0.5f;
        for (int step = 0; step < 100; step++)
                CHECK(dsv_sample(&s, logits, &p, (uint64_t)step) == 700, "top_p");
        /* min_p 0.5 with two near-equal leaders keeps just those */
        logits[700] = 0;
        logits[500] = 20.0f;
        logits[501] = 20.0f;
        p.top_p = 1.0f;
        p.min_p = 0.5f;
        for (int step = 0; step < 100; step++) {
                int32_t t = dsv_sample(&s, logits, &p, (uint64_t)step);
                CHECK(t == 500 || t == 501, "min_p drew %d", t);
        }
        /* -inf logits are never drawn */
        p.min_p = 0;
        p.temperature = 100.0f;
        for (int i = 0; i < V; i++)
                logits[i] = i == 3 ? 0.0f : -INFINITY;
        CHECK(dsv_sample(&s, logits, &p, 1) == 3, "masked logits");
        dsv_sampler_done(&s);
        free(logits);
}

static void test_access(void) {
        struct dsv_access a;
        struct dsv_peer p = {.uid = 1000, .gid = 1000, .n_groups = 2, .groups = {1000, 4242}};
        char warn[256];
        CHECK(dsv_access_parse("root,1234,no-such-user-x", "4242,no-such-group-y", &a, warn, sizeof(warn)) == 0, "parse");
        CHECK(a.n_uids == 2 && a.n_gids == 1, "%zu uids %zu gids", a.n_uids, a.n_gids);
        CHECK(strstr(warn, "no-such-user-x") && strstr(warn, "no-such-group-y"), "warnings: %s", warn);
        CHECK(dsv_access_allowed(&a, &p, 5), "a supplementary group in the list must be allowed");
        p.groups[1] = 7;
        CHECK(!dsv_access_allowed(&a, &p, 5), "no listed uid or group: refused");
        CHECK(dsv_access_allowed(&a, &p, 1000), "the daemon's own uid is always allowed");
        p.uid = 1234;
        CHECK(dsv_access_allowed(&a, &p, 5), "a listed uid");
        p.uid = 0;
        CHECK(dsv_access_allowed(&a, &p, 5), "root listed by name");
        dsv_access_free(&a);
}

/* Rates over wall time: a steady counter gives its rate; an idle second gives 0. */
static void test_rates(void) {
        struct dsv_rates r = {0};
        float dec, pre;
        uint32_t win;
        dsv_rates_get(&r, 5, 0, 0, &dec, &pre, &win);
        CHECK(dec == 0 && pre == 0 && win == 0, "no samples: %g %g %u", dec, pre, win);
        for (uint64_t t = 0; t <= 20; t++) /* 2 s at 100 ms: 50 decoded, 400 prefilled per second */
                dsv_rates_sample(&r, t * 100000000ull, t * 5, t * 40);
        dsv_rates_get(&r, 2000000000ull, 100, 800, &dec, &pre, &win);
        CHECK(win == 1000 && dec > 49.9f && dec < 50.1f && pre > 399.9f && pre < 400.1f, "steady: %g %g over %u ms", dec, pre,
              win);
        for (uint64_t t = 21; t <= 40; t++) /* then nothing for 2 s */
                dsv_rates_sample(&r, t * 100000000ull, 100, 800);
        dsv_rates_get(&r, 4000000000ull, 100, 800, &dec, &pre, &win);
        CHECK(dec == 0 && pre == 0 && win == 1000, "idle: %g %g over %u ms", dec, pre, win);
        /* no sample for a long time (a stalled loop): the newest one, however old */
        dsv_rates_get(&r, 60000000000ull, 160, 800, &dec, &pre, &win);
        CHECK(win == 56000 && dec > 1.07f && dec < 1.072f, "after a long gap: %g over %u ms", dec, win);
}

int main(void) {
        test_settings();
        test_sampler();
        test_access();
        test_rates();
        return test_result("test-server-units");
}
