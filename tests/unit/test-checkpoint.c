/* Checkpoint validation and loading: good checkpoints in every accepted variant load and
 * agree; each kind of bad checkpoint is refused with an error naming the file, the tensor,
 * what was expected and what was found (and no leak: this test also runs under ASan). */
#include "config.h"

#include <fcntl.h>
#include <sys/stat.h>

#include "daemon/checkpoint.h"
#include "daemon/loader.h"
#include "tests/unit/modelutil.h"

static const char *tmpdir(const char *name) {
        static char buf[4][4200];
        static int i;
        char *b = buf[i++ % 4];
        snprintf(b, sizeof(buf[0]), "%s/ckpt-%s", test_dir(), name);
        return b;
}

static void synth(const char *dir, const struct dsv_synth_opts *o) {
        struct dsv_model_config cfg;
        struct dsv_error err = {{0}};
        REQUIRE(dsv_model_config_preset("tiny", &cfg, &err) == 0, "preset");
        if (o && o->mtp)
                cfg.num_nextn_predict_layers = 1;
        REQUIRE(dsv_synth_write(dir, &cfg, o, &err) == 0, "synth %s: %s", dir, err.msg);
}

/* Opening must fail with all of the given substrings in the message. */
static void expect_fail(const char *what, const char *dir, const char *s1, const char *s2, const char *s3) {
        struct dsv_checkpoint *ck = NULL;
        struct dsv_error err = {{0}};
        int r = dsv_checkpoint_open(dir, &ck, &err);
        CHECK(r < 0, "%s: opened a bad checkpoint", what);
        if (r >= 0) {
                dsv_checkpoint_free(ck);
                return;
        }
        printf("%s -> %s\n", what, err.msg);
        CHECK(!s1 || strstr(err.msg, s1), "%s: message lacks \"%s\": %s", what, s1, err.msg);
        CHECK(!s2 || strstr(err.msg, s2), "%s: message lacks \"%s\": %s", what, s2, err.msg);
        CHECK(!s3 || strstr(err.msg, s3), "%s: message lacks \"%s\": %s", what, s3, err.msg);
}

static void edit_file(const char *dir, const char *file, const char *from, const char *to) {
        char p[4400];
        char *s;
        size_t n;
        snprintf(p, sizeof(p), "%s/%s", dir, file);
        REQUIRE(dsv_read_file(p, 1 << 26, &s, &n) == 0, "read %s", p);
        char *at = memmem(s, n, from, strlen(from));
        REQUIRE(at, "%s not found in %s", from, p);
        size_t lf = strlen(from), lt = strlen(to);
        char *o = malloc(n - lf + lt);
        memcpy(o, s, (size_t)(at - s));
        memcpy(o + (at - s), to, lt);
        memcpy(o + (at - s) + lt, at + lf, n - (size_t)(at - s) - lf);
        REQUIRE(dsv_write_file(p, o, n - lf + lt) == 0, "write");
        free(s);
        free(o);
}

static const char *S1 = "model-00001-of-00002.safetensors", *S2 = "model-00002-of-00002.safetensors";

static void test_bad(void) {
        struct dsv_synth_opts o = {.seed = 5, .n_shards = 2};
        const char *d;
        char p[4400];

        d = tmpdir("truncated");
        synth(d, &o);
        snprintf(p, sizeof(p), "%s/%s", d, S2);
        struct stat st;
        REQUIRE(stat(p, &st) == 0 && truncate(p, st.st_size - 1000) == 0, "truncate");
        expect_fail("truncated shard", d, S2, "past the end", "truncated");

        d = tmpdir("header-too-long");
        synth(d, &o);
        snprintf(p, sizeof(p), "%s/%s", d, S1);
        {
                int fd = open(p, O_WRONLY | O_CLOEXEC);
                uint64_t big = (uint64_t)st.st_size * 4; /* little-endian length field */
                REQUIRE(fd >= 0 && pwrite(fd, &big, 8, 0) == 8, "pwrite");
                close(fd);
        }
        expect_fail("header length past the file", d, S1, "header length", "past the end");

        d = tmpdir("bad-dtype");
        o.bad_dtype_tensor = "model.layers.1.self_attn.o_proj.weight";
        synth(d, &o);
        o.bad_dtype_tensor = NULL;
        expect_fail("wrong dtype", d, "model.layers.1.self_attn.o_proj.weight", "expected dtype F8_E4M3 or BF16", "found I32");

        d = tmpdir("bad-shape");
        o.bad_shape_tensor = "model.layers.2.mlp.experts.3.up_proj.weight";
        synth(d, &o);
        o.bad_shape_tensor = NULL;
        expect_fail("wrong shape", d, "model.layers.2.mlp.experts.3.up_proj.weight", "expected shape [128, 256]", "found [129, 256]");

        d = tmpdir("missing");
        o.drop_tensor = "model.layers.0.self_attn.indexer.k_norm.bias";
        synth(d, &o);
        o.drop_tensor = NULL;
        expect_fail("missing tensor", d, "model.layers.0.self_attn.indexer.k_norm.bias", "missing", NULL);

        d = tmpdir("missing-scale");
        synth(d, &o);
        edit_file(d, "model.safetensors.index.json", "\"model.layers.0.self_attn.q_a_proj.weight_scale_inv\"",
                  "\"model.layers.0.self_attn.q_a_proj.weight_scale_XXX\"");
        expect_fail("index/header disagree", d, "weight_scale_XXX", "not in its header", NULL);

        d = tmpdir("bad-config");
        synth(d, &o);
        edit_file(d, "config.json", "\"hidden_size\": 256,", "\"hidden_size\": 256,,");
        expect_fail("malformed config.json", d, "config.json", "malformed JSON", NULL);
        {
                /* the file is named once, with its path */
                struct dsv_checkpoint *ck = NULL;
                struct dsv_error err = {{0}};
                const char *first;
                CHECK(dsv_checkpoint_open(d, &ck, &err) < 0, "opened");
                first = strstr(err.msg, "config.json");
                CHECK(first && !strstr(first + 1, "config.json") && strstr(err.msg, d), "the file named twice or without its path: %s",
                      err.msg);
        }

        d = tmpdir("llama-config");
        synth(d, &o);
        edit_file(d, "config.json", "\"model_type\": \"deepseek_v32\"", "\"model_type\": \"llama\"");
        expect_fail("model_type llama", d, "model_type \"llama\"", "deepseek_v32", NULL);

        d = tmpdir("bad-config-value");
        synth(d, &o);
        edit_file(d, "config.json", "\"n_group\": 4,", "\"n_group\": 3,");
        expect_fail("config n_group not dividing experts", d, "n_routed_experts", "n_group", NULL);

        d = tmpdir("bad-index");
        synth(d, &o);
        edit_file(d, "model.safetensors.index.json", "\"weight_map\": {", "\"weight_map\": [");
        expect_fail("malformed index", d, "model.safetensors.index.json", "malformed JSON", NULL);

        d = tmpdir("evil-shard-name");
        synth(d, &o);
        edit_file(d, "model.safetensors.index.json", S1, "../../etc/passwd");
        expect_fail("shard name with a path", d, "../../etc/passwd", "plain file name", NULL);

        d = tmpdir("shape-mismatch-scale");
        synth(d, &o);
        /* same byte size, wrong shape of a scale tensor: [1, 2] -> [2, 1] */
        snprintf(p, sizeof(p), "%s/%s", d, S1);
        edit_file(d, S1, "\"model.layers.0.self_attn.q_a_proj.weight_scale_inv\":{\"dtype\":\"F32\",\"shape\":[1,2]",
                  "\"model.layers.0.self_attn.q_a_proj.weight_scale_inv\":{\"dtype\":\"F32\",\"shape\":[2,1]");
        expect_fail("wrong scale shape", d, "weight_scale_inv", "expected shape [1, 2]", "found [2, 1]");
}

static void test_header_parser(void) {
        struct dsv_ckpt_tensor *t = NULL;
        size_t n = 0, cap = 0;
        struct dsv_error err = {{0}};
        struct {
                const char *json;
                uint64_t data;
                const char *want; /* NULL: accepted */
        } cases[] = {
                {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[8,16]}}", 16, NULL},
                {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 16, "overlap"},
                {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,8]}}", 16, "needs 16"},
                {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", 16, "past the end"},
                {"{\"a\":{\"dtype\":\"Q4\",\"shape\":[4],\"data_offsets\":[0,4]}}", 16, "unsupported dtype"},
                {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 16, "non-negative"},
                {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,4]}}", 16, "overflow"},
                {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 16, "data_offsets"},
                {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"a\":{}}", 16, "malformed"},
                {"[1,2]", 16, "not a JSON object"},
                {"{\"a\":5}", 16, "not an object"},
                {"{\"a\":{\"dtype\":\"F32\"}}", 16, "needs dtype"},
                {"{\"__metadata__\":{\"format\":\"pt\"}}", 0, NULL},
                {"{", 16, "malformed"},
        };
        for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
                int r = dsv_safetensors_parse_header("x.safetensors", cases[i].json, strlen(cases[i].json), cases[i].data, 0, &t, &n, &cap,
                                                     &err);
                if (!cases[i].want)
                        CHECK(r == 0, "header %zu rejected: %s", i, err.msg);
                else
                        CHECK(r < 0 && strstr(err.msg, cases[i].want) && strstr(err.msg, "x.safetensors"),
                              "header %zu: want error with \"%s\", got r=%d \"%s\"", i, cases[i].want, r, err.msg);
        }
        dsv_ckpt_tensors_free(t, n);
}

static void logits_of(const char *dir, float *out, int n) {
        struct dsv_backend *be;
        REQUIRE(dsv_backend_cpu_new(0, &be) == 0, "backend");
        struct dsv_model *m = load_model(be, dir, DSV_NUMERICS_EXACT);
        int32_t toks[16];
        make_tokens(toks, n, dsv_model_get_config(m)->vocab_size, 9);
        run_prompt(m, toks, n, n, out);
        dsv_model_free(m);
        dsv_backend_free(be);
}

static void test_good_variants(void) {
        const int n = 12, V = 4096;
        float *a = malloc((size_t)n * V * 4), *b = malloc((size_t)n * V * 4);
        struct dsv_synth_opts o = {.seed = 11, .n_shards = 2};
        const char *d0 = tmpdir("good"), *d1 = tmpdir("good-mtp"), *d2 = tmpdir("good-1shard");
        struct dsv_checkpoint *ck;
        struct dsv_error err = {{0}};

        synth(d0, &o);
        REQUIRE(dsv_checkpoint_open(d0, &ck, &err) == 0, "%s", err.msg);
        CHECK(!ck->has_mtp && ck->n_shards == 2 && ck->n_unknown == 0, "plain checkpoint");
        dsv_checkpoint_free(ck);
        logits_of(d0, a, n);

        /* with the MTP layer: validated, not needed, same logits */
        o.mtp = true;
        o.n_shards = 3;
        synth(d1, &o);
        REQUIRE(dsv_checkpoint_open(d1, &ck, &err) == 0, "%s", err.msg);
        CHECK(ck->has_mtp && ck->n_shards == 3, "MTP checkpoint");
        dsv_checkpoint_free(ck);
        logits_of(d1, b, n);
        CHECK(max_abs_diff(a, b, (size_t)n * V, NULL) == 0, "MTP layer changed the main model's logits");

        /* an incomplete MTP layer is an error */
        o.drop_tensor = "model.layers.3.eh_proj.weight";
        synth(tmpdir("bad-mtp"), &o);
        o.drop_tensor = NULL;
        expect_fail("incomplete MTP layer", tmpdir("bad-mtp"), "model.layers.3.eh_proj.weight", "missing", NULL);

        /* one shard; and a BF16 linear where the others are FP8 */
        o.mtp = false;
        o.n_shards = 1;
        o.bf16_tensor = "model.layers.1.mlp.shared_experts.down_proj.weight";
        synth(d2, &o);
        REQUIRE(dsv_checkpoint_open(d2, &ck, &err) == 0, "%s", err.msg);
        const struct dsv_ckpt_tensor *t = dsv_checkpoint_find(ck, o.bf16_tensor);
        CHECK(t && t->dtype == DSV_BF16, "bf16 linear");
        dsv_checkpoint_free(ck);
        logits_of(d2, b, n);
        double dd = max_abs_diff(a, b, (size_t)n * V, NULL);
        printf("BF16 instead of FP8 for one linear: max logit change %.3g\n", dd);
        CHECK(dd > 0 && dd < 0.5, "bf16 linear gives a different but close model (%g)", dd);
        free(a);
        free(b);
}

static void test_loader(void) {
        struct dsv_synth_opts o = {.seed = 5, .n_shards = 2};
        const char *d = tmpdir("loader");
        struct dsv_checkpoint *ck;
        struct dsv_error err = {{0}};
        struct dsv_backend *be;
        synth(d, &o);
        REQUIRE(dsv_checkpoint_open(d, &ck, &err) == 0 && dsv_backend_cpu_new(1, &be) == 0, "%s", err.msg);
        uint64_t total = 0;
        for (size_t i = 0; i < ck->n_tensors; i++)
                total += ck->tensors[i].nbytes;
        uint8_t *ref = malloc(total), *buf = malloc(total);
        struct dsv_load_item *items = malloc(ck->n_tensors * sizeof(*items));
        /* reference bytes with plain pread */
        uint64_t off = 0;
        for (size_t i = 0; i < ck->n_tensors; i++) {
                int fd = open(ck->shards[ck->tensors[i].shard].path, O_RDONLY | O_CLOEXEC);
                REQUIRE(fd >= 0 && pread(fd, ref + off, ck->tensors[i].nbytes, (off_t)ck->tensors[i].offset) == (ssize_t)ck->tensors[i].nbytes,
                        "pread");
                close(fd);
                off += ck->tensors[i].nbytes;
        }
        struct {
                unsigned qd;
                size_t chunk;
                bool no_direct, no_uring, direct;
        } v[] = {{16, 0, false, false, false}, {1, 4096, false, false, true}, {4, 65536, true, false, false},
                 {3, 12288, false, false, true}, {8, 0, false, false, true}, {1, 0, false, true, false}, {1, 0, false, true, true}};
        for (size_t k = 0; k < ARRAY_SIZE(v); k++) {
                /* items in a scrambled order: the loader sorts them */
                off = 0;
                for (size_t i = 0; i < ck->n_tensors; i++) {
                        size_t j = (i * 7919) % ck->n_tensors;
                        (void)j;
                        items[i] = (struct dsv_load_item){&ck->tensors[i], buf + off};
                        off += ck->tensors[i].nbytes;
                }
                for (size_t i = 0; i + 1 < ck->n_tensors; i += 2) {
                        struct dsv_load_item tmp = items[i];
                        items[i] = items[i + 1];
                        items[i + 1] = tmp;
                }
                memset(buf, 0xa5, total);
                if (v[k].direct && k % 2 == 0) /* evict the shards: these reads really go O_DIRECT */
                        for (size_t s = 0; s < ck->n_shards; s++) {
                                int fd = open(ck->shards[s].path, O_RDONLY | O_CLOEXEC);
                                if (fd >= 0) {
                                        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
                                        close(fd);
                                }
                        }
                struct dsv_load_opts lo = {.queue_depth = v[k].qd, .chunk_size = v[k].chunk, .no_direct = v[k].no_direct,
                                           .no_uring = v[k].no_uring, .direct = v[k].direct};
                struct dsv_load_stats ls = {0};
                int r = dsv_load_tensors(ck, items, ck->n_tensors, be, &lo, &ls, &err);
                CHECK(r == 0, "load variant %zu: %s", k, err.msg);
                CHECK(memcmp(buf, ref, total) == 0, "load variant %zu delivered different bytes", k);
                CHECK(ls.bytes_tensors == total, "stats bytes");
                CHECK(v[k].no_uring ? !ls.uring : true, "pread fallback");
                CHECK(!v[k].direct || ls.direct, "O_DIRECT asked for but not used");
                printf("load qd=%u chunk=%zu%s%s%s: %u reads (%u from the page cache), %s%s, %u short reads, %u retries\n", v[k].qd, v[k].chunk,
                       v[k].no_direct ? " no-direct" : "", v[k].direct ? " direct" : "", v[k].no_uring ? " pread" : "", ls.reads, ls.cached_reads, ls.uring ? "io_uring" : "pread",
                       ls.direct ? " O_DIRECT" : "", ls.short_reads, ls.retries);
        }
        /* the file shrinks after validation: an error naming the file and a tensor */
        {
                char p[4400];
                struct stat st;
                snprintf(p, sizeof(p), "%s/%s", d, S2);
                REQUIRE(stat(p, &st) == 0 && truncate(p, st.st_size / 2) == 0, "truncate");
                for (size_t i = 0; i < ck->n_tensors; i++)
                        items[i] = (struct dsv_load_item){&ck->tensors[i], buf};
                for (int u = 0; u < 4; u++) {
                        struct dsv_load_opts lo = {.chunk_size = 8192, .no_uring = u & 1, .direct = u >> 1};
                        memset(&err, 0, sizeof(err));
                        /* each item into a scratch buffer large enough for any tensor */
                        int r = dsv_load_tensors(ck, items, ck->n_tensors, be, &lo, NULL, &err);
                        CHECK(r < 0 && strstr(err.msg, S2) && strstr(err.msg, "tensor") && strstr(err.msg, "end of file"),
                              "truncated after validation (%d): %s", u, err.msg);
                        printf("shrunk shard (%s%s) -> %s\n", (u & 1) ? "pread" : "io_uring", (u >> 1) ? ", O_DIRECT" : "", err.msg);
                }
        }
        free(ref);
        free(buf);
        free(items);
        dsv_checkpoint_free(ck);
        dsv_backend_free(be);
}

int main(void) {
        test_header_parser();
        test_bad();
        test_good_variants();
        test_loader();
        return test_result("test-checkpoint");
}
