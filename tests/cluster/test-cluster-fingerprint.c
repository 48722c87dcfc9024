/* The model fingerprint (daemon/cluster/fingerprint.c) on generated tiny checkpoints: the
 * same checkpoint gives the same 32 bytes wherever it lies; another seed (other weights, the
 * same layout), one flipped byte in a sampled part of the data, another config.json or
 * another shard count give other bytes; a missing shard or directory is an error naming
 * the file. A preset model (preset:NAME, no directory) has one of its own: the same for the
 * same preset, another for another preset (or size), never a checkpoint's. */
#include "config.h"

#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>

#include "daemon/checkpoint.h"
#include "daemon/cluster/fingerprint.h"
#include "daemon/model_config.h"
#include "daemon/synth.h"
#include "tests/check.h"

static char scratch[512];

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        (void)st, (void)flag, (void)ftw;
        return remove(path);
}

static int write_model(const char *name, uint64_t seed, int shards, char *dir, size_t n) {
        struct dsv_model_config cfg;
        struct dsv_error err = {{0}};
        struct dsv_synth_opts o = {.seed = seed, .n_shards = shards};
        snprintf(dir, n, "%s/%s", scratch, name);
        if (dsv_model_config_preset("tiny", &cfg, &err) < 0 || dsv_synth_write(dir, &cfg, &o, &err) < 0) {
                fprintf(stderr, "cannot write %s: %s\n", dir, err.msg);
                return -1;
        }
        return 0;
}

static int fingerprint(const char *dir, uint8_t fp[DSV_FINGERPRINT_BYTES], struct dsv_error *err) {
        memset(err, 0, sizeof(*err));
        return dsv_model_fingerprint(dir, fp, err);
}

/* Flips one byte at the middle of the first shard's tensor data; returns its path. */
static int flip_middle(const char *dir, char *path, size_t n) {
        struct dsv_checkpoint *ck = NULL;
        struct dsv_error err = {{0}};
        uint8_t b;
        int r = -1;
        if (dsv_checkpoint_open(dir, &ck, &err) < 0)
                return -1;
        const struct dsv_ckpt_shard *s = &ck->shards[0];
        const off_t at = (off_t)(s->data_start + (s->size - s->data_start) / 2);
        snprintf(path, n, "%s", s->path);
        int fd = open(s->path, O_RDWR | O_CLOEXEC);
        if (fd >= 0 && pread(fd, &b, 1, at) == 1) {
                b ^= 0x40;
                r = pwrite(fd, &b, 1, at) == 1 ? 0 : -1;
        }
        if (fd >= 0)
                close(fd);
        dsv_checkpoint_free(ck);
        return r;
}

int main(void) {
        const char *b = getenv("top_builddir");
        char a[600], a2[600], other[600], three[600], shard[700], cmd[1400];
        uint8_t fa[32], fa2[32], fo[32], f3[32], fx[32];
        struct dsv_error err;

        snprintf(scratch, sizeof(scratch), "%s/tests/cluster/test-cluster-fingerprint.tmp", b && *b ? b : ".");
        nftw(scratch, rm_one, 16, FTW_DEPTH | FTW_PHYS);
        REQUIRE(dsv_mkdir_p(scratch, 0755) == 0, "cannot create %s", scratch);
        REQUIRE(write_model("a", 1, 2, a, sizeof(a)) == 0 && write_model("a2", 1, 2, a2, sizeof(a2)) == 0 &&
                        write_model("other", 2, 2, other, sizeof(other)) == 0 && write_model("three", 1, 3, three, sizeof(three)) == 0,
                "cannot write the test checkpoints");

        CHECK(fingerprint(a, fa, &err) == 0, "fingerprint of %s: %s", a, err.msg);
        CHECK(fingerprint(a, fx, &err) == 0 && memcmp(fa, fx, 32) == 0, "the same directory twice: the same fingerprint");
        CHECK(fingerprint(a2, fa2, &err) == 0 && memcmp(fa, fa2, 32) == 0, "the same checkpoint elsewhere: the same fingerprint");
        CHECK(fingerprint(other, fo, &err) == 0 && memcmp(fa, fo, 32) != 0, "other weights in the same layout: another fingerprint");
        CHECK(fingerprint(three, f3, &err) == 0 && memcmp(fa, f3, 32) != 0, "three shards instead of two: another fingerprint");
        {
                char s1[17], s2[17];
                dsv_fingerprint_short(fa, s1);
                dsv_fingerprint_short(fo, s2);
                CHECK(strlen(s1) == 16 && strcmp(s1, s2) != 0, "short forms %s and %s", s1, s2);
        }

        /* one byte in the middle of the data */
        CHECK(flip_middle(a2, shard, sizeof(shard)) == 0, "cannot modify %s", a2);
        CHECK(fingerprint(a2, fx, &err) == 0 && memcmp(fa, fx, 32) != 0, "a flipped byte in a sampled region: another fingerprint");

        /* config.json: one more space at the end */
        snprintf(cmd, sizeof(cmd), "%s/config.json", a2);
        {
                FILE *f = fopen(cmd, "ae");
                CHECK(f && fputs(" ", f) >= 0, "cannot append to %s", cmd);
                if (f)
                        fclose(f);
        }
        uint8_t fy[32];
        CHECK(fingerprint(a2, fy, &err) == 0 && memcmp(fx, fy, 32) != 0, "another config.json: another fingerprint");

        /* errors name the file */
        CHECK(remove(shard) == 0, "cannot remove %s", shard);
        CHECK(fingerprint(a2, fx, &err) < 0, "a missing shard is an error");
        CHECK(strstr(err.msg, "safetensors") != NULL, "the error names the shard: %s", err.msg);
        snprintf(cmd, sizeof(cmd), "%s/missing", scratch);
        CHECK(fingerprint(cmd, fx, &err) < 0 && strstr(err.msg, "missing") != NULL, "a missing directory: %s", err.msg);

        /* preset models (no directory): the preset's name, tensor table and generator */
        uint8_t p1[32], p2[32], ps[32], pl[32];
        CHECK(fingerprint("preset:tiny", p1, &err) == 0, "fingerprint of preset:tiny: %s", err.msg);
        CHECK(fingerprint("preset:tiny", p2, &err) == 0 && memcmp(p1, p2, 32) == 0, "preset:tiny twice: the same fingerprint");
        CHECK(fingerprint("preset:small", ps, &err) == 0 && memcmp(p1, ps, 32) != 0, "preset:small: another fingerprint");
        CHECK(fingerprint("preset:v32-layers:2", pl, &err) == 0 && memcmp(ps, pl, 32) != 0 && memcmp(p1, pl, 32) != 0,
              "preset:v32-layers:2: another fingerprint");
        CHECK(fingerprint("preset:v32-layers:3", p2, &err) == 0 && memcmp(pl, p2, 32) != 0, "v32-layers:3 is not v32-layers:2");
        CHECK(memcmp(p1, fa, 32) != 0, "preset:tiny is not the tiny checkpoint written by mkmodel (other weights)");
        CHECK(fingerprint("preset:huge", p2, &err) < 0 && strstr(err.msg, "huge") != NULL, "an unknown preset: %s", err.msg);

        if (test_failures)
                fprintf(stderr, "checkpoints kept in %s\n", scratch);
        else
                nftw(scratch, rm_one, 16, FTW_DEPTH | FTW_PHYS);
        return test_result("test-cluster-fingerprint");
}
