/* dsv32-inspect on real shards: writes the tiny checkpoint (without and with the MTP layer)
 * with the built dsv32-mkmodel into the build tree, sums the tensor bytes per dtype and the
 * parameters straight from the safetensors headers (its own parser, not the engine's), and
 * checks that the tool reports the same sums, both as what the checkpoint holds and as
 * computed from its config. */
#include "tests/inspect/inspect-test.h"

#include <sys/stat.h>

struct tally {
        uint64_t by_dtype[8]; /* indexed as dtype_names */
        uint64_t total;
        uint64_t params_main, params_mtp;
        uint64_t file_bytes;
        size_t tensors;
};

static const char *const dtype_names[] = {"F8_E4M3", "BF16", "F32", "F16", "I32", "I64", "U8", "F64"};
static const unsigned dtype_sizes[] = {1, 2, 4, 2, 4, 8, 1, 8};

static int dtype_index(const char *s) {
        for (size_t i = 0; i < ARRAY_SIZE(dtype_names); i++)
                if (strcmp(s, dtype_names[i]) == 0)
                        return (int)i;
        return -1;
}

/* safetensors: u64 little-endian header length, JSON header {name: {dtype, shape,
 * data_offsets: [begin, end)}} relative to the data that follows. */
static int tally_shard(const char *path, int n_layers, struct tally *t) {
        _cleanup_free_ char *data = NULL;
        size_t size = 0;
        uint64_t hlen = 0, data_end = 0;
        json_t *h, *v;
        const char *key;
        json_error_t jerr;

        if (dsv_read_file(path, 256u << 20, &data, &size) < 0 || size < 8) {
                fprintf(stderr, "cannot read %s\n", path);
                return -1;
        }
        for (int i = 7; i >= 0; i--)
                hlen = hlen << 8 | (unsigned char)data[i];
        if (hlen > size - 8) {
                fprintf(stderr, "%s: header length %llu beyond the file\n", path, (unsigned long long)hlen);
                return -1;
        }
        h = json_loadb(data + 8, hlen, 0, &jerr);
        if (!h) {
                fprintf(stderr, "%s: bad header: %s\n", path, jerr.text);
                return -1;
        }
        json_object_foreach(h, key, v) {
                json_t *shape = json_object_get(v, "shape"), *off = json_object_get(v, "data_offsets");
                const char *dt = json_string_value(json_object_get(v, "dtype"));
                uint64_t numel = 1, b, e;
                int di;
                size_t k;
                json_t *dim;
                int layer = -1;

                if (strcmp(key, "__metadata__") == 0)
                        continue;
                di = dt ? dtype_index(dt) : -1;
                if (di < 0 || !json_is_array(shape) || json_array_size(off) != 2) {
                        fprintf(stderr, "%s: tensor %s: unexpected entry\n", path, key);
                        json_decref(h);
                        return -1;
                }
                json_array_foreach(shape, k, dim) numel *= (uint64_t)json_integer_value(dim);
                b = (uint64_t)json_integer_value(json_array_get(off, 0));
                e = (uint64_t)json_integer_value(json_array_get(off, 1));
                CHECK(e >= b && e - b == numel * dtype_sizes[di], "%s: %s spans %llu bytes for %llu x %s", path, key,
                      (unsigned long long)(e - b), (unsigned long long)numel, dt);
                data_end = MAX(data_end, e);
                t->by_dtype[di] += e - b;
                t->total += e - b;
                t->tensors++;
                if (strlen(key) > 10 && strcmp(key + strlen(key) - 10, "_scale_inv") == 0)
                        continue; /* a scale is not a parameter */
                if (sscanf(key, "model.layers.%d.", &layer) == 1 && layer >= n_layers)
                        t->params_mtp += numel;
                else
                        t->params_main += numel;
        }
        json_decref(h);
        CHECK(8 + hlen + data_end == size, "%s: %zu bytes, header and data account for %llu", path, size,
              (unsigned long long)(8 + hlen + data_end));
        t->file_bytes += size;
        return 0;
}

static int tally_checkpoint(const char *dir, int n_layers, struct tally *t) {
        _cleanup_free_ char *ipath = NULL, *text = NULL;
        json_t *idx, *map, *v, *seen;
        const char *key;
        int r = 0;

        memset(t, 0, sizeof(*t));
        if (asprintf(&ipath, "%s/model.safetensors.index.json", dir) < 0 || dsv_read_file(ipath, 64u << 20, &text, NULL) < 0)
                return -1;
        idx = json_loads(text, 0, NULL);
        map = json_object_get(idx, "weight_map");
        seen = json_object();
        json_object_foreach(map, key, v) {
                const char *file = json_string_value(v);
                char *p = NULL;
                if (!file || json_object_get(seen, file))
                        continue;
                json_object_set_new(seen, file, json_true());
                if (asprintf(&p, "%s/%s", dir, file) < 0 || tally_shard(p, n_layers, t) < 0)
                        r = -1;
                free(p);
        }
        CHECK(json_object_size(seen) > 0, "%s: no shards in the index", ipath);
        json_decref(seen);
        json_decref(idx);
        return r;
}

static void check_one(const char *tool, const char *mkmodel, const char *scratch, bool mtp) {
        _cleanup_free_ char *dir = NULL, *out = NULL, *err = NULL, *text = NULL, *etext = NULL;
        struct tally t;
        json_t *j;
        json_error_t jerr;
        int st;

        if (asprintf(&dir, "%s/tiny%s", scratch, mtp ? "-mtp" : "") < 0 || asprintf(&out, "%s.out", dir) < 0 ||
            asprintf(&err, "%s.err", dir) < 0)
                abort();
        {
                char *argv[] = {(char *)mkmodel, "--preset", "tiny", "--out", dir, "--shards", mtp ? "3" : "2",
                                mtp ? "--mtp" : NULL, NULL};
                st = run_capture(argv, out, err);
                CHECK(st == 0, "dsv32-mkmodel exited %d: %s", st, (etext = slurp(err)));
                free(TAKE_PTR(etext));
                if (st != 0)
                        return;
        }
        if (tally_checkpoint(dir, 3, &t) < 0) {
                CHECK(false, "cannot read the shards of %s", dir);
                return;
        }
        fprintf(stderr, "%s: %zu tensors, %llu tensor bytes (F8 %llu, BF16 %llu, F32 %llu), %llu + %llu params\n", dir,
                t.tensors, (unsigned long long)t.total, (unsigned long long)t.by_dtype[0], (unsigned long long)t.by_dtype[1],
                (unsigned long long)t.by_dtype[2], (unsigned long long)t.params_main, (unsigned long long)t.params_mtp);
        CHECK(t.total > 0 && t.by_dtype[0] > 0 && t.by_dtype[1] > 0 && t.by_dtype[2] > 0, "every dtype present");
        CHECK(mtp == (t.params_mtp > 0), "MTP tensors present: %d", mtp);

        {
                char *argv[] = {(char *)tool, "--json", dir, NULL};
                st = run_capture(argv, out, err);
        }
        text = slurp(out);
        CHECK(st == 0, "dsv32-inspect --json %s exited %d: %s", dir, st, (etext = slurp(err)));
        j = json_loads(text, 0, &jerr);
        CHECK(j != NULL, "dsv32-inspect output is not JSON: %s", jerr.text);
        if (!j)
                return;

        /* what the shards hold */
        CHECK(json_is_string(jget(j, "source.kind")) && strcmp(json_string_value(jget(j, "source.kind")), "checkpoint") == 0,
              "source.kind");
        CHECK_JSON_U64(j, "bytes.checkpoint.total", t.total);
        CHECK_JSON_U64(j, "bytes.checkpoint.by_dtype.F8_E4M3", t.by_dtype[0]);
        CHECK_JSON_U64(j, "bytes.checkpoint.by_dtype.BF16", t.by_dtype[1]);
        CHECK_JSON_U64(j, "bytes.checkpoint.by_dtype.F32", t.by_dtype[2]);
        CHECK_JSON_U64(j, "bytes.checkpoint.file_bytes", t.file_bytes);
        CHECK_JSON_U64(j, "bytes.checkpoint.tensors", t.tensors);
        CHECK_JSON_U64(j, "bytes.checkpoint.shards", mtp ? 3 : 2);
        CHECK_JSON_U64(j, "bytes.checkpoint.unknown_tensors", 0);
        CHECK(json_is_true(jget(j, "bytes.checkpoint.has_mtp")) == mtp, "has_mtp");
        /* the same computed from the config alone */
        CHECK_JSON_U64(j, "bytes.checkpoint.expected_total", t.total);
        CHECK(json_is_true(jget(j, "bytes.checkpoint.matches_config")), "matches_config");
        CHECK_JSON_U64(j, mtp ? "bytes.computed.total_with_mtp" : "bytes.computed.total", t.total);
        CHECK_JSON_U64(j, mtp ? "bytes.computed.by_dtype_with_mtp.F8_E4M3" : "bytes.computed.by_dtype.F8_E4M3",
                       t.by_dtype[0]);
        CHECK_JSON_U64(j, mtp ? "bytes.computed.by_dtype_with_mtp.BF16" : "bytes.computed.by_dtype.BF16", t.by_dtype[1]);
        CHECK_JSON_U64(j, mtp ? "bytes.computed.by_dtype_with_mtp.F32" : "bytes.computed.by_dtype.F32", t.by_dtype[2]);
        CHECK_JSON_U64(j, "params.total", t.params_main);
        if (mtp)
                CHECK_JSON_U64(j, "params.mtp", t.params_mtp);
        json_decref(j);

        /* the table mode agrees (no "differs" marks) */
        {
                char *argv[] = {(char *)tool, dir, NULL};
                st = run_capture(argv, out, err);
        }
        free(text);
        text = slurp(out);
        CHECK(st == 0 && strstr(text, "Checkpoint") && !strstr(text, "differs"), "table mode (exit %d):\n%s", st, text);
}

int main(void) {
        _cleanup_free_ char *tool = NULL, *mkmodel = NULL, *scratch = test_scratch("test-inspect-tiny");

        if (!scratch || asprintf(&tool, "%s/dsv32-inspect", test_builddir()) < 0 ||
            asprintf(&mkmodel, "%s/dsv32-mkmodel", test_builddir()) < 0) {
                fprintf(stderr, "cannot set up the scratch directory\n");
                return 1;
        }
        check_one(tool, mkmodel, scratch, false);
        check_one(tool, mkmodel, scratch, true);
        if (test_failures) {
                fprintf(stderr, "%d check(s) failed; files kept in %s\n", test_failures, scratch);
                return 1;
        }
        rm_rf(scratch);
        return 0;
}
