/* Checkpoint directory parsing and validation (see checkpoint.h). */
#include "config.h"

#include "daemon/checkpoint.h"

#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <sys/stat.h>

#define INDEX_FILE "model.safetensors.index.json"
#define SINGLE_FILE "model.safetensors"
#define INDEX_MAX (64u << 20)

void dsv_ckpt_tensors_free(struct dsv_ckpt_tensor *t, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(t[i].name);
        free(t);
}

void dsv_checkpoint_free(struct dsv_checkpoint *ck) {
        if (!ck)
                return;
        for (size_t i = 0; i < ck->n_shards; i++) {
                free(ck->shards[i].file);
                free(ck->shards[i].path);
        }
        free(ck->shards);
        dsv_ckpt_tensors_free(ck->tensors, ck->n_tensors);
        free(ck->dir);
        free(ck);
}

static int cmp_tensor_name(const void *a, const void *b) {
        return strcmp(((const struct dsv_ckpt_tensor *)a)->name, ((const struct dsv_ckpt_tensor *)b)->name);
}

const struct dsv_ckpt_tensor *dsv_checkpoint_find(const struct dsv_checkpoint *ck, const char *name) {
        struct dsv_ckpt_tensor key = {.name = (char *)name};
        return bsearch(&key, ck->tensors, ck->n_tensors, sizeof(key), cmp_tensor_name);
}

static void shape_str(char *buf, size_t n, int ndim, const int64_t *shape) {
        size_t o = 0;
        o += (size_t)snprintf(buf + o, n - o, "[");
        for (int i = 0; i < ndim && o < n; i++)
                o += (size_t)snprintf(buf + o, n - o, "%s%lld", i ? ", " : "", (long long)shape[i]);
        if (o < n)
                snprintf(buf + o, n - o, "]");
}

struct range {
        uint64_t begin, end;
        size_t idx;
};
static int cmp_range(const void *a, const void *b) {
        const struct range *x = a, *y = b;
        return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end < y->end ? -1 : x->end > y->end);
}

int dsv_safetensors_parse_header(const char *file, const char *json, size_t len, uint64_t data_size, int shard,
                                 struct dsv_ckpt_tensor **tensors, size_t *n, size_t *cap, struct dsv_error *err) {
        json_error_t jerr;
        json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
        const char *key;
        json_t *val;
        size_t first = *n;
        struct range *ranges = NULL;
        int r = 0;

        if (!root)
                return dsv_error_set(err, EINVAL, "%s: malformed safetensors header JSON at line %d column %d: %s", file,
                                     jerr.line, jerr.column, jerr.text);
        if (!json_is_object(root)) {
                r = dsv_error_set(err, EINVAL, "%s: safetensors header is not a JSON object", file);
                goto out;
        }
        if (json_object_size(root) > DSV_ST_MAX_TENSORS_PER_SHARD) {
                r = dsv_error_set(err, EINVAL, "%s: too many tensors in header (%zu)", file, json_object_size(root));
                goto out;
        }
        json_object_foreach(root, key, val) {
                json_t *dt, *sh, *off;
                struct dsv_ckpt_tensor t = {0};
                uint64_t numel = 1, nbytes, b, e;
                size_t i;
                json_t *x;
                int dtype;

                if (strcmp(key, "__metadata__") == 0)
                        continue;
                if (!json_is_object(val)) {
                        r = dsv_error_set(err, EINVAL, "%s: tensor %s: header entry is not an object", file, key);
                        goto out;
                }
                dt = json_object_get(val, "dtype");
                sh = json_object_get(val, "shape");
                off = json_object_get(val, "data_offsets");
                if (!json_is_string(dt) || !json_is_array(sh) || !json_is_array(off) || json_array_size(off) != 2) {
                        r = dsv_error_set(err, EINVAL, "%s: tensor %s: needs dtype (string), shape (array) and data_offsets ([begin, end])",
                                          file, key);
                        goto out;
                }
                dtype = dsv_dtype_from_name(json_string_value(dt));
                if (dtype < 0) {
                        r = dsv_error_set(err, EINVAL, "%s: tensor %s: unsupported dtype %s", file, key, json_string_value(dt));
                        goto out;
                }
                if (json_array_size(sh) > 4) {
                        r = dsv_error_set(err, EINVAL, "%s: tensor %s: %zu dimensions (at most 4 supported)", file, key,
                                          json_array_size(sh));
                        goto out;
                }
                t.ndim = (int)json_array_size(sh);
                json_array_foreach(sh, i, x) {
                        if (!json_is_integer(x) || json_integer_value(x) < 0) {
                                r = dsv_error_set(err, EINVAL, "%s: tensor %s: shape entries must be non-negative integers", file, key);
                                goto out;
                        }
                        t.shape[i] = json_integer_value(x);
                        if (dsv_mul_overflow_u64(numel, (uint64_t)t.shape[i], &numel)) {
                                r = dsv_error_set(err, EINVAL, "%s: tensor %s: shape overflows", file, key);
                                goto out;
                        }
                }
                if (!json_is_integer(json_array_get(off, 0)) || !json_is_integer(json_array_get(off, 1)) ||
                    json_integer_value(json_array_get(off, 0)) < 0 || json_integer_value(json_array_get(off, 1)) < 0) {
                        r = dsv_error_set(err, EINVAL, "%s: tensor %s: data_offsets must be non-negative integers", file, key);
                        goto out;
                }
                b = (uint64_t)json_integer_value(json_array_get(off, 0));
                e = (uint64_t)json_integer_value(json_array_get(off, 1));
                if (dsv_mul_overflow_u64(numel, dsv_dtype_size((enum dsv_dtype)dtype), &nbytes)) {
                        r = dsv_error_set(err, EINVAL, "%s: tensor %s: size overflows", file, key);
                        goto out;
                }
                if (b > e || e - b != nbytes) {
                        char s[96];
                        shape_str(s, sizeof(s), t.ndim, t.shape);
                        r = dsv_error_set(err, EINVAL,
                                          "%s: tensor %s: data_offsets [%llu, %llu] hold %llu bytes, but %s %s needs %llu", file,
                                          key, (unsigned long long)b, (unsigned long long)e,
                                          (unsigned long long)(b <= e ? e - b : 0), json_string_value(dt), s,
                                          (unsigned long long)nbytes);
                        goto out;
                }
                if (e > data_size) {
                        r = dsv_error_set(err, EINVAL,
                                          "%s: tensor %s: data_offsets end %llu is past the end of the data (%llu bytes): truncated shard?",
                                          file, key, (unsigned long long)e, (unsigned long long)data_size);
                        goto out;
                }
                if (*n == *cap) {
                        size_t nc = *cap ? *cap * 2 : 1024;
                        struct dsv_ckpt_tensor *v = realloc(*tensors, nc * sizeof(*v));
                        if (!v) {
                                r = -ENOMEM;
                                goto out;
                        }
                        *tensors = v;
                        *cap = nc;
                }
                t.name = strdup(key);
                if (!t.name) {
                        r = -ENOMEM;
                        goto out;
                }
                t.dtype = (enum dsv_dtype)dtype;
                t.offset = b;
                t.nbytes = nbytes;
                t.shard = shard;
                (*tensors)[(*n)++] = t;
        }

        /* no two tensors share bytes */
        if (*n - first > 1) {
                size_t m = *n - first;
                ranges = malloc(m * sizeof(*ranges));
                if (!ranges) {
                        r = -ENOMEM;
                        goto out;
                }
                for (size_t i = 0; i < m; i++)
                        ranges[i] = (struct range){(*tensors)[first + i].offset,
                                                   (*tensors)[first + i].offset + (*tensors)[first + i].nbytes, first + i};
                qsort(ranges, m, sizeof(*ranges), cmp_range);
                for (size_t i = 1; i < m; i++)
                        if (ranges[i].begin < ranges[i - 1].end && ranges[i].end > ranges[i].begin &&
                            ranges[i - 1].end > ranges[i - 1].begin) {
                                r = dsv_error_set(err, EINVAL, "%s: tensors %s [%llu, %llu) and %s [%llu, %llu) overlap", file,
                                                  (*tensors)[ranges[i - 1].idx].name, (unsigned long long)ranges[i - 1].begin,
                                                  (unsigned long long)ranges[i - 1].end, (*tensors)[ranges[i].idx].name,
                                                  (unsigned long long)ranges[i].begin, (unsigned long long)ranges[i].end);
                                goto out;
                        }
        }
out:
        free(ranges);
        json_decref(root);
        if (r < 0) {
                for (size_t i = first; i < *n; i++)
                        free((*tensors)[i].name);
                *n = first;
        }
        return r;
}

static int parse_shard(struct dsv_checkpoint *ck, int idx, size_t *cap, struct dsv_error *err) {
        struct dsv_ckpt_shard *sh = &ck->shards[idx];
        _cleanup_close_ int fd = open(sh->path, O_RDONLY | O_CLOEXEC);
        _cleanup_free_ char *hdr = NULL;
        struct stat st;
        uint8_t lenb[8];
        uint64_t hlen = 0;
        ssize_t k;
        size_t first = ck->n_tensors;

        if (fd < 0)
                return dsv_error_set(err, errno, "%s: cannot open: %s", sh->path, strerror(errno));
        if (fstat(fd, &st) < 0)
                return dsv_error_set(err, errno, "%s: cannot stat: %s", sh->path, strerror(errno));
        sh->size = (uint64_t)st.st_size;
        if (sh->size < 8)
                return dsv_error_set(err, EINVAL, "%s: %llu bytes, too short for a safetensors file (truncated?)", sh->path,
                                     (unsigned long long)sh->size);
        k = pread(fd, lenb, 8, 0);
        if (k != 8)
                return dsv_error_set(err, k < 0 ? errno : EIO, "%s: cannot read the header length", sh->path);
        for (int i = 7; i >= 0; i--)
                hlen = (hlen << 8) | lenb[i];
        if (hlen == 0 || hlen > DSV_ST_MAX_HEADER)
                return dsv_error_set(err, EINVAL, "%s: header length %llu is outside (0, %u]", sh->path,
                                     (unsigned long long)hlen, DSV_ST_MAX_HEADER);
        if (hlen > sh->size - 8)
                return dsv_error_set(err, EINVAL, "%s: header length %llu runs past the end of the file (%llu bytes): truncated shard?",
                                     sh->path, (unsigned long long)hlen, (unsigned long long)sh->size);
        hdr = malloc(hlen);
        if (!hdr)
                return -ENOMEM;
        for (uint64_t got = 0; got < hlen;) {
                k = pread(fd, hdr + got, hlen - got, (off_t)(8 + got));
                if (k <= 0)
                        return dsv_error_set(err, k < 0 ? errno : EIO, "%s: cannot read the header", sh->path);
                got += (uint64_t)k;
        }
        sh->data_start = 8 + hlen;
        int r = dsv_safetensors_parse_header(sh->file, hdr, hlen, sh->size - sh->data_start, idx, &ck->tensors,
                                             &ck->n_tensors, cap, err);
        if (r < 0)
                return r;
        for (size_t i = first; i < ck->n_tensors; i++)
                ck->tensors[i].offset += sh->data_start;
        sh->n_tensors = ck->n_tensors - first;
        return 0;
}

static bool safe_file_name(const char *s) {
        return *s && !strchr(s, '/') && strcmp(s, ".") != 0 && strcmp(s, "..") != 0 && strlen(s) < 256;
}

static int add_shard(struct dsv_checkpoint *ck, const char *file, struct dsv_error *err) {
        for (size_t i = 0; i < ck->n_shards; i++)
                if (strcmp(ck->shards[i].file, file) == 0)
                        return (int)i;
        if (!safe_file_name(file))
                return dsv_error_set(err, EINVAL, "%s/%s: shard name \"%s\" must be a plain file name", ck->dir, INDEX_FILE, file);
        struct dsv_ckpt_shard *v = realloc(ck->shards, (ck->n_shards + 1) * sizeof(*v));
        if (!v)
                return -ENOMEM;
        ck->shards = v;
        struct dsv_ckpt_shard *sh = &ck->shards[ck->n_shards];
        memset(sh, 0, sizeof(*sh));
        sh->file = strdup(file);
        if (!sh->file || asprintf(&sh->path, "%s/%s", ck->dir, file) < 0) {
                free(sh->file);
                return -ENOMEM;
        }
        return (int)ck->n_shards++;
}

static bool dtype_ok(enum dsv_tensor_kind k, enum dsv_dtype t, const char **want) {
        switch (k) {
        case DSV_TK_LINEAR:
                *want = "F8_E4M3 or BF16";
                return t == DSV_F8_E4M3 || t == DSV_BF16;
        case DSV_TK_BF16:
                *want = "BF16";
                return t == DSV_BF16;
        case DSV_TK_NORM:
        case DSV_TK_FLOAT:
                *want = "BF16 or F32";
                return t == DSV_BF16 || t == DSV_F32;
        case DSV_TK_F32:
                *want = "F32";
                return t == DSV_F32;
        }
        return false;
}

static const char *shard_of(const struct dsv_checkpoint *ck, const struct dsv_ckpt_tensor *t) {
        return ck->shards[t->shard].file;
}

int dsv_checkpoint_check_spec(const struct dsv_checkpoint *ck, const struct dsv_tensor_spec *s,
                              const struct dsv_ckpt_tensor **ret_t, const struct dsv_ckpt_tensor **ret_scale,
                              struct dsv_error *err) {
        const struct dsv_ckpt_tensor *t = dsv_checkpoint_find(ck, s->name), *sc = NULL;
        const char *want = "?";
        char es[96], fs[96];

        if (!t)
                return dsv_error_set(err, ENOENT, "%s: required tensor %s is missing", ck->dir, s->name);
        if (!dtype_ok(s->kind, t->dtype, &want))
                return dsv_error_set(err, EINVAL, "%s: tensor %s: expected dtype %s, found %s", shard_of(ck, t), s->name, want,
                                     dsv_dtype_name(t->dtype));
        shape_str(es, sizeof(es), s->ndim, s->shape);
        shape_str(fs, sizeof(fs), t->ndim, t->shape);
        if (t->ndim != s->ndim || t->shape[0] != s->shape[0] || (s->ndim == 2 && t->shape[1] != s->shape[1]))
                return dsv_error_set(err, EINVAL, "%s: tensor %s: expected shape %s, found %s", shard_of(ck, t), s->name, es, fs);
        if (s->kind == DSV_TK_LINEAR && t->dtype == DSV_F8_E4M3) {
                char sname[160];
                int64_t sshape[2] = {DIV_ROUND_UP(s->shape[0], 128), DIV_ROUND_UP(s->shape[1], 128)};
                size_t nl = strlen(s->name);
                snprintf(sname, sizeof(sname), "%.*s_scale_inv", (int)nl, s->name);
                sc = dsv_checkpoint_find(ck, sname);
                if (!sc)
                        return dsv_error_set(err, ENOENT, "%s: FP8 tensor %s has no %s", shard_of(ck, t), s->name, sname);
                if (sc->dtype != DSV_F32)
                        return dsv_error_set(err, EINVAL, "%s: tensor %s: expected dtype F32, found %s", shard_of(ck, sc), sname,
                                             dsv_dtype_name(sc->dtype));
                shape_str(es, sizeof(es), 2, sshape);
                shape_str(fs, sizeof(fs), sc->ndim, sc->shape);
                if (sc->ndim != 2 || sc->shape[0] != sshape[0] || sc->shape[1] != sshape[1])
                        return dsv_error_set(err, EINVAL, "%s: tensor %s: expected shape %s, found %s", shard_of(ck, sc), sname,
                                             es, fs);
        }
        if (ret_t)
                *ret_t = t;
        if (ret_scale)
                *ret_scale = sc;
        return 0;
}

static int load_index(struct dsv_checkpoint *ck, size_t *cap, struct dsv_error *err) {
        _cleanup_free_ char *path = NULL, *text = NULL;
        json_error_t jerr;
        json_t *root = NULL, *map;
        const char *key;
        json_t *val;
        size_t len;
        int r;

        if (asprintf(&path, "%s/%s", ck->dir, INDEX_FILE) < 0)
                return -ENOMEM;
        r = dsv_read_file(path, INDEX_MAX, &text, &len);
        if (r == -ENOENT) {
                /* single-file checkpoint */
                r = add_shard(ck, SINGLE_FILE, err);
                if (r < 0)
                        return r;
                return parse_shard(ck, r, cap, err);
        }
        if (r < 0)
                return dsv_error_set(err, r, "%s: cannot read: %s", path, strerror(-r));
        root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
        if (!root)
                return dsv_error_set(err, EINVAL, "%s: malformed JSON at line %d column %d: %s", path, jerr.line, jerr.column,
                                     jerr.text);
        map = json_object_get(root, "weight_map");
        if (!json_is_object(map)) {
                r = dsv_error_set(err, EINVAL, "%s: no \"weight_map\" object", path);
                goto out;
        }
        json_object_foreach(map, key, val) {
                if (!json_is_string(val)) {
                        r = dsv_error_set(err, EINVAL, "%s: weight_map entry %s is not a file name", path, key);
                        goto out;
                }
                r = add_shard(ck, json_string_value(val), err);
                if (r < 0)
                        goto out;
        }
        if (ck->n_shards == 0) {
                r = dsv_error_set(err, EINVAL, "%s: weight_map is empty", path);
                goto out;
        }
        for (size_t i = 0; i < ck->n_shards; i++)
                if ((r = parse_shard(ck, (int)i, cap, err)) < 0)
                        goto out;
        /* the index and the headers must agree */
        qsort(ck->tensors, ck->n_tensors, sizeof(*ck->tensors), cmp_tensor_name);
        json_object_foreach(map, key, val) {
                const struct dsv_ckpt_tensor *t = dsv_checkpoint_find(ck, key);
                if (!t) {
                        r = dsv_error_set(err, EINVAL, "%s: tensor %s is listed for %s but is not in its header", path, key,
                                          json_string_value(val));
                        goto out;
                }
                if (strcmp(ck->shards[t->shard].file, json_string_value(val)) != 0) {
                        r = dsv_error_set(err, EINVAL, "%s: tensor %s is listed for %s but found in %s", path, key,
                                          json_string_value(val), ck->shards[t->shard].file);
                        goto out;
                }
        }
        for (size_t i = 0; i < ck->n_tensors; i++)
                if (!json_object_get(map, ck->tensors[i].name)) {
                        r = dsv_error_set(err, EINVAL, "%s: tensor %s is in %s but not in the weight_map", path,
                                          ck->tensors[i].name, ck->shards[ck->tensors[i].shard].file);
                        goto out;
                }
        r = 0;
out:
        json_decref(root);
        return r;
}

int dsv_checkpoint_open(const char *dir, struct dsv_checkpoint **ret, struct dsv_error *err) {
        struct dsv_checkpoint *ck = calloc(1, sizeof(*ck));
        _cleanup_free_ char *cfgpath = NULL;
        struct dsv_tensor_spec *specs = NULL;
        size_t n_specs = 0, cap = 0, used = 0;
        int r;

        if (!ck)
                return -ENOMEM;
        ck->dir = strdup(dir);
        if (!ck->dir || asprintf(&cfgpath, "%s/config.json", dir) < 0) {
                r = -ENOMEM;
                goto fail;
        }
        r = dsv_model_config_load(cfgpath, &ck->cfg, err);
        if (r < 0)
                goto fail;
        r = load_index(ck, &cap, err);
        if (r < 0)
                goto fail;
        qsort(ck->tensors, ck->n_tensors, sizeof(*ck->tensors), cmp_tensor_name);
        for (size_t i = 1; i < ck->n_tensors; i++)
                if (strcmp(ck->tensors[i].name, ck->tensors[i - 1].name) == 0) {
                        r = dsv_error_set(err, EINVAL, "%s: tensor %s appears in both %s and %s", dir, ck->tensors[i].name,
                                          ck->shards[ck->tensors[i - 1].shard].file, ck->shards[ck->tensors[i].shard].file);
                        goto fail;
                }
        for (size_t i = 0; i < ck->n_tensors; i++) {
                ck->tensor_bytes += ck->tensors[i].nbytes;
                ck->bytes_by_dtype[ck->tensors[i].dtype] += ck->tensors[i].nbytes;
        }

        /* MTP layer present? Then it must be complete. */
        if (ck->cfg.num_nextn_predict_layers > 0) {
                char prefix[64];
                int pl = snprintf(prefix, sizeof(prefix), "model.layers.%d.", ck->cfg.num_hidden_layers);
                for (size_t i = 0; i < ck->n_tensors && !ck->has_mtp; i++)
                        ck->has_mtp = strncmp(ck->tensors[i].name, prefix, (size_t)pl) == 0;
        }
        r = dsv_weight_specs(&ck->cfg, ck->has_mtp, &specs, &n_specs);
        if (r < 0)
                goto fail;
        for (size_t i = 0; i < n_specs; i++) {
                const struct dsv_ckpt_tensor *sc = NULL;
                if (specs[i].optional && !dsv_checkpoint_find(ck, specs[i].name))
                        continue;
                r = dsv_checkpoint_check_spec(ck, &specs[i], NULL, &sc, err);
                if (r < 0)
                        goto fail;
                used += 1 + (sc != NULL);
        }
        ck->n_unknown = ck->n_tensors - used;
        free(specs);
        *ret = ck;
        return 0;
fail:
        free(specs);
        dsv_checkpoint_free(ck);
        return r;
}
