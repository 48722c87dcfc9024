/* The model fingerprint (fingerprint.h): SHA-256 (libgcrypt) over the checkpoint's config,
 * shard headers and samples of its data, or over a preset model's name, tensor table and
 * weight generator. */
#include "config.h"

#include "daemon/cluster/fingerprint.h"

#include <fcntl.h>
#include <gcrypt.h>

#include "daemon/checkpoint.h"
#include "daemon/preset_model.h"
#include "kernels/fill_random.h"

#define SAMPLE_BYTES (64u << 10)

static int hash_file_range(gcry_md_hd_t md, int fd, uint64_t off, uint64_t n, uint8_t *buf, size_t cap) {
        while (n > 0) {
                size_t want = n < cap ? (size_t)n : cap;
                ssize_t got = pread(fd, buf, want, (off_t)off);
                if (got < 0) {
                        if (errno == EINTR)
                                continue;
                        return dsv_negerrno();
                }
                if (got == 0)
                        return -EIO; /* shorter than the checkpoint said */
                gcry_md_write(md, buf, (size_t)got);
                off += (uint64_t)got;
                n -= (uint64_t)got;
        }
        return 0;
}

static int hash_shard(gcry_md_hd_t md, const struct dsv_ckpt_shard *s, uint8_t *buf, struct dsv_error *err) {
        _cleanup_close_ int fd = open(s->path, O_RDONLY | O_CLOEXEC);
        uint8_t size_le[8];
        const uint64_t data = s->size - s->data_start;
        const uint64_t at[3] = {s->data_start, s->data_start + data / 2, s->size};
        int r;

        if (fd < 0)
                return dsv_error_set(err, errno, "Cannot open %s for its fingerprint: %s", s->path, strerror(errno));
        gcry_md_write(md, s->file, strlen(s->file) + 1);
        for (int i = 0; i < 8; i++)
                size_le[i] = (uint8_t)(s->size >> (8 * i));
        gcry_md_write(md, size_le, 8);
        r = hash_file_range(md, fd, 0, s->data_start, buf, SAMPLE_BYTES);
        for (int i = 0; i < 3 && r == 0; i++) {
                /* a sample of up to 64 KiB starting at the start, centred at the middle, ending at the end */
                uint64_t n = data < SAMPLE_BYTES ? data : SAMPLE_BYTES;
                uint64_t off = i == 0 ? at[0] : i == 1 ? at[1] - MIN(n / 2, data / 2) : at[2] - n;
                r = hash_file_range(md, fd, off, n, buf, SAMPLE_BYTES);
        }
        if (r < 0)
                return dsv_error_set(err, -r, "Cannot read %s for its fingerprint: %s", s->path, strerror(-r));
        return 0;
}

static void hash_u64(gcry_md_hd_t md, uint64_t v) {
        uint8_t le[8];
        for (int i = 0; i < 8; i++)
                le[i] = (uint8_t)(v >> (8 * i));
        gcry_md_write(md, le, 8);
}

/* A preset model (daemon/preset_model.h): its weights are made from each tensor's name by
 * fill_random, so the preset's name, its tensor table (every name, dtype and shape: the config
 * made concrete) and the generator's version say which weights every node makes. */
static int preset_fingerprint(const char *preset, uint8_t out[DSV_FINGERPRINT_BYTES], struct dsv_error *err) {
        struct dsv_checkpoint *ck = NULL;
        gcry_md_hd_t md = NULL;
        int r = dsv_checkpoint_new_preset(preset, &ck, err);
        if (r < 0)
                return r;
        if (gcry_md_open(&md, GCRY_MD_SHA256, 0) != 0) {
                dsv_checkpoint_free(ck);
                return dsv_error_set(err, EIO, "libgcrypt has no SHA-256");
        }
        gcry_md_write(md, "dsv32d preset fingerprint 1", 28);
        gcry_md_write(md, preset, strlen(preset) + 1);
        hash_u64(md, DSV_FILL_RANDOM_VERSION);
        for (size_t i = 0; i < ck->n_tensors; i++) {
                const struct dsv_ckpt_tensor *t = &ck->tensors[i];
                gcry_md_write(md, t->name, strlen(t->name) + 1);
                hash_u64(md, (uint64_t)t->dtype);
                hash_u64(md, (uint64_t)t->ndim);
                for (int d = 0; d < t->ndim; d++)
                        hash_u64(md, (uint64_t)t->shape[d]);
        }
        memcpy(out, gcry_md_read(md, GCRY_MD_SHA256), DSV_FINGERPRINT_BYTES);
        gcry_md_close(md);
        dsv_checkpoint_free(ck);
        return 0;
}

int dsv_model_fingerprint(const char *dir, uint8_t out[DSV_FINGERPRINT_BYTES], struct dsv_error *err) {
        struct dsv_checkpoint *ck = NULL;
        _cleanup_free_ char *cfgpath = NULL, *cfgtext = NULL;
        _cleanup_free_ uint8_t *buf = NULL;
        size_t cfglen = 0;
        gcry_md_hd_t md = NULL;
        int r;

        if (!gcry_control(GCRYCTL_INITIALIZATION_FINISHED_P)) {
                if (!gcry_check_version(GCRYPT_VERSION))
                        return dsv_error_set(err, EIO, "libgcrypt %s is older than the one dsv32d was built with",
                                             gcry_check_version(NULL));
                /* no secure memory: nothing secret is hashed */
                gcry_control(GCRYCTL_DISABLE_SECMEM, 0);
                gcry_control(GCRYCTL_INITIALIZATION_FINISHED, 0);
        }

        const char *preset;
        if (dsv_preset_model_name(dir, &preset))
                return preset_fingerprint(preset, out, err);
        if ((r = dsv_checkpoint_open(dir, &ck, err)) < 0)
                return r;
        if (asprintf(&cfgpath, "%s/config.json", dir) < 0 || !(buf = malloc(SAMPLE_BYTES))) {
                r = dsv_error_set(err, ENOMEM, "Out of memory");
                goto out;
        }
        if ((r = dsv_read_file(cfgpath, 16u << 20, &cfgtext, &cfglen)) < 0) {
                r = dsv_error_set(err, -r, "Cannot read %s: %s", cfgpath, strerror(-r));
                goto out;
        }
        if (gcry_md_open(&md, GCRY_MD_SHA256, 0) != 0) {
                r = dsv_error_set(err, EIO, "libgcrypt has no SHA-256");
                goto out;
        }
        gcry_md_write(md, "dsv32d model fingerprint 1", 27);
        gcry_md_write(md, cfgtext, cfglen);
        for (size_t i = 0; i < ck->n_shards; i++)
                if ((r = hash_shard(md, &ck->shards[i], buf, err)) < 0)
                        goto out;
        memcpy(out, gcry_md_read(md, GCRY_MD_SHA256), DSV_FINGERPRINT_BYTES);
        r = 0;
out:
        gcry_md_close(md);
        dsv_checkpoint_free(ck);
        return r;
}

const char *dsv_fingerprint_short(const uint8_t fp[DSV_FINGERPRINT_BYTES], char *buf) {
        for (int i = 0; i < 8; i++)
                snprintf(buf + 2 * i, 3, "%02x", fp[i]);
        return buf;
}
