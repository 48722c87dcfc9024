/* dsv32-inspect as a command: the published 671B config through the tool (the numbers in
 * the JSON, the same for a file, a config-only directory and --preset v32), every JSON field
 * name documented in --help and in the man page, and bad input: a clear message on stderr,
 * nothing on stdout, exit 1 (input) or 2 (usage). */
#include "tests/inspect/inspect-test.h"

static const char *tool_path;
static const char *out_path, *err_path;

/* Runs the tool with the NULL-terminated arguments (at most 8); returns the exit status,
 * its output in *out and *err. */
static int tool(char **out, char **err, ...) {
        char *argv[10] = {(char *)tool_path};
        va_list ap;
        int n = 1, st;
        va_start(ap, err);
        while (n < 9 && (argv[n] = va_arg(ap, char *)))
                n++;
        va_end(ap);
        argv[n] = NULL;
        st = run_capture(argv, out_path, err_path);
        *out = slurp(out_path);
        *err = slurp(err_path);
        return st;
}
#define TOOL(out, err, ...) tool(out, err, __VA_ARGS__, (char *)NULL)

static void expect_failure(int want_status, const char *want_msg, const char *a0, const char *a1, const char *a2) {
        _cleanup_free_ char *out = NULL, *err = NULL;
        int st = tool(&out, &err, a0, a1, a2, (char *)NULL);
        CHECK(st == want_status, "dsv32-inspect %s %s %s: exit %d, expected %d (stderr: %s)", a0 ? a0 : "",
              a1 ? a1 : "", a2 ? a2 : "", st, want_status, err);
        CHECK(!want_msg || strstr(err, want_msg), "dsv32-inspect %s %s %s: stderr lacks \"%s\": %s", a0 ? a0 : "",
              a1 ? a1 : "", a2 ? a2 : "", want_msg, err);
        CHECK(strlen(err) > 0 && strchr(err, '\n'), "a message on stderr");
        CHECK(!strstr(err, "Sanitizer"), "sanitizer report: %s", err);
        CHECK(out[0] == 0, "nothing on stdout, got: %s", out);
}

/* Every key of the JSON appears in the help text and in the man page. */
static void check_keys_documented(json_t *v, const char *help, const char *man) {
        const char *key;
        json_t *x;
        size_t i;
        if (json_is_array(v)) {
                json_array_foreach(v, i, x) check_keys_documented(x, help, man);
                return;
        }
        if (!json_is_object(v))
                return;
        json_object_foreach(v, key, x) {
                CHECK(strstr(help, key) != NULL, "JSON field \"%s\" is not in --help", key);
                CHECK(strstr(man, key) != NULL, "JSON field \"%s\" is not in dsv32-inspect.1", key);
                check_keys_documented(x, help, man);
        }
}

static void check_v32_json(json_t *j) {
        CHECK_JSON_U64(j, "params.total", 671877944064ull);
        CHECK_JSON_U64(j, "params.active_per_token", 37477143296ull);
        CHECK_JSON_U64(j, "params.total_with_mtp", 671877944064ull + 13477385728ull);
        CHECK_JSON_U64(j, "params.components.routed_experts", 653908770816ull);
        CHECK_JSON_U64(j, "flops.per_entry_per_layer.mla_absorbed", 278528);
        CHECK_JSON_U64(j, "flops.per_entry_per_layer.indexer", 16384);
        CHECK_JSON_U64(j, "flops.linear_per_token", 74952212480ull);
        CHECK_JSON_U64(j, "flops.decode[0].context", 4096);
        CHECK_JSON_U64(j, "flops.decode[0].total_dsa", 113873780736ull);
        CHECK_JSON_U64(j, "flops.decode[1].context", 131072);
        CHECK_JSON_U64(j, "flops.decode[1].total_dsa", 241768071168ull);
        CHECK_JSON_U64(j, "flops.decode[2].context", 1048576);
        CHECK_JSON_U64(j, "kv.layouts[0].bytes_per_token", 48068);
        CHECK_JSON_U64(j, "kv.layouts[0].bytes_per_token_with_mtp", 48856);
        CHECK_JSON_U64(j, "kv.layouts[0].contexts[1].bytes", 6300368896ull);
        CHECK_JSON_U64(j, "kv.layouts[0].contexts[2].bytes", 50402951168ull);
        CHECK_JSON_U64(j, "kv.layouts[0].contexts[2].bytes_allocated", 50402951168ull);
        CHECK(json_is_false(jget(j, "kv.layouts[2].engine")), "bf16 is a comparison layout");
        CHECK_JSON_U64(j, "kv.layouts[2].bytes_per_token", 85888);
        CHECK(json_is_null(jget(j, "bytes.checkpoint")), "no checkpoint for a config");
        CHECK_NEAR(jnumber(j, "decode_step.contexts[0].experts_per_layer"), 8.0, 1e-9);
        CHECK_NEAR(jnumber(j, "decode_step.contexts[0].tokens_per_s"),
                   4800e9 / jnumber(j, "decode_step.contexts[0].bytes"), 1e-6);
}

int main(void) {
        _cleanup_free_ char *scratch = test_scratch("test-inspect-cli"), *tp = NULL, *mk = NULL, *op = NULL, *ep = NULL,
                            *v32 = NULL, *v32cfg = NULL, *bad = NULL, *nofield = NULL, *empty = NULL, *tiny = NULL,
                            *shard = NULL, *missing = NULL, *manpath = NULL, *man = NULL;
        _cleanup_free_ char *out = NULL, *err = NULL, *help = NULL, *o2 = NULL, *e2 = NULL;
        json_t *j = NULL, *j2 = NULL;
        int st;

        if (!scratch || asprintf(&tp, "%s/dsv32-inspect", test_builddir()) < 0 ||
            asprintf(&mk, "%s/dsv32-mkmodel", test_builddir()) < 0 || asprintf(&op, "%s/out", scratch) < 0 ||
            asprintf(&ep, "%s/err", scratch) < 0 || asprintf(&v32, "%s/v32", scratch) < 0 ||
            asprintf(&v32cfg, "%s/v32/config.json", scratch) < 0 || asprintf(&bad, "%s/bad.json", scratch) < 0 ||
            asprintf(&nofield, "%s/nofield.json", scratch) < 0 || asprintf(&empty, "%s/emptydir", scratch) < 0 ||
            asprintf(&tiny, "%s/tiny", scratch) < 0 ||
            asprintf(&shard, "%s/tiny/model-00002-of-00002.safetensors", scratch) < 0 ||
            asprintf(&missing, "%s/does-not-exist.json", scratch) < 0 ||
            asprintf(&manpath, "%s/man/dsv32-inspect.1", test_srcdir()) < 0) {
                fprintf(stderr, "cannot set up the scratch directory\n");
                return 1;
        }
        tool_path = tp;
        out_path = op;
        err_path = ep;

        /* ---- the 671B config: file, config-only directory and preset agree */
        {
                char *argv[] = {mk, "--preset", "v32", "--config-only", "--out", v32, NULL};
                st = run_capture(argv, op, ep);
                if (st != 0) {
                        fprintf(stderr, "dsv32-mkmodel exited %d: %s\n", st, (help = slurp(ep)));
                        return 1;
                }
        }
        {
                char *argv[] = {tp, "--json", "--context", "4K", "--context", "131072", "--context", "1M", "--bandwidth", "4800",
                                v32cfg, NULL};
                st = run_capture(argv, op, ep);
                out = slurp(op);
                err = slurp(ep);
        }
        CHECK(st == 0, "dsv32-inspect --json %s exited %d: %s", v32cfg, st, err);
        j = json_loads(out, 0, NULL);
        CHECK(j != NULL, "not JSON: %s", out);
        if (j)
                check_v32_json(j);
        free(TAKE_PTR(out));
        free(TAKE_PTR(err));
        {
                char *argv[] = {tp, "--json", "--context", "4K", "--context", "131072", "--context", "1M", "--bandwidth", "4800",
                                "--preset", "v32", NULL};
                st = run_capture(argv, op, ep);
                out = slurp(op);
                err = slurp(ep);
        }
        CHECK(st == 0, "--preset v32 exited %d: %s", st, err);
        j2 = json_loads(out, 0, NULL);
        if (j && j2) {
                json_object_del(j, "source");
                json_object_del(j2, "source");
                CHECK(json_equal(j, j2), "--preset v32 and its config.json give different reports");
        }
        json_decref(j2);
        free(TAKE_PTR(out));
        free(TAKE_PTR(err));
        /* a config-only directory reports the config, with a note */
        st = TOOL(&out, &err, "--json", v32);
        CHECK(st == 0 && strstr(err, "config only"), "config-only directory: exit %d, stderr %s", st, err);
        j2 = json_loads(out, 0, NULL);
        CHECK(j2 && json_integer_value(jget(j2, "params.total")) == 671877944064ll, "config-only directory report");
        json_decref(j2);
        free(TAKE_PTR(out));
        free(TAKE_PTR(err));

        /* the table */
        st = TOOL(&out, &err, "--context", "1M", v32cfg);
        CHECK(st == 0, "table exited %d: %s", st, err);
        CHECK(strstr(out, "671,877,944,064") && strstr(out, "48,068") && strstr(out, "46.94 GiB") &&
                      strstr(out, "278,528") && strstr(out, "beyond max_position_embeddings"),
              "table lacks expected figures:\n%s", out);
        fputs(out, stderr);
        free(TAKE_PTR(out));
        free(TAKE_PTR(err));

        /* ---- documentation of the JSON fields */
        st = TOOL(&help, &err, "--help");
        CHECK(st == 0 && strstr(help, "Usage:"), "--help exited %d", st);
        free(TAKE_PTR(err));
        man = slurp(manpath);
        CHECK(strstr(man, ".TH DSV32-INSPECT"), "cannot read %s", manpath);
        if (j)
                check_keys_documented(j, help, man);
        json_decref(j);

        /* ---- bad input */
        CHECK(dsv_write_file(bad, "{\"hidden_size\": 7168,", 21) == 0, "write %s", bad);
        CHECK(dsv_write_file(nofield, "{\"vocab_size\": 1000}", 20) == 0, "write %s", nofield);
        CHECK(dsv_mkdir_p(empty, 0755) == 0, "mkdir %s", empty);
        expect_failure(1, "No such file", missing, NULL, NULL);
        expect_failure(1, bad, bad, NULL, NULL);
        expect_failure(1, "hidden_size", nofield, NULL, NULL);
        expect_failure(1, "config.json", empty, NULL, NULL);
        expect_failure(1, "unknown preset", "--preset", "huge", NULL);
        {
                char *argv[] = {mk, "--preset", "tiny", "--out", tiny, NULL};
                st = run_capture(argv, op, ep);
                CHECK(st == 0, "dsv32-mkmodel tiny exited %d", st);
                CHECK(truncate(shard, 4096) == 0, "truncate %s: %s", shard, strerror(errno));
                expect_failure(1, "model-00002-of-00002.safetensors", tiny, NULL, NULL);
        }
        expect_failure(2, NULL, NULL, NULL, NULL);
        expect_failure(2, NULL, v32cfg, v32cfg, NULL);
        expect_failure(2, NULL, "--preset", "v32", v32cfg);
        expect_failure(2, "--context", "--context", "0", v32cfg);
        expect_failure(2, "--context", "--context", "12x", v32cfg);
        expect_failure(2, "--context", "--context", "4096M", v32cfg);
        expect_failure(2, "--batch", "--batch", "0", v32cfg);
        expect_failure(2, "--bandwidth", "--bandwidth", "-5", v32cfg);
        expect_failure(2, "--bandwidth", "--bandwidth", "fast", v32cfg);
        expect_failure(2, NULL, "--frobnicate", v32cfg, NULL);

        if (test_failures) {
                fprintf(stderr, "%d check(s) failed; files kept in %s\n", test_failures, scratch);
                return 1;
        }
        rm_rf(scratch);
        return 0;
}
