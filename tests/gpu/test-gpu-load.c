/* Weight streaming into device memory (daemon/loader.c with the CUDA backend's pinned staging
 * and asynchronous uploads on its copy stream), on a device or the CPU emulation of CUDA:
 *   - every tensor's bytes in device memory equal the file's, for several queue depths and
 *     chunk sizes, io_uring and pread, O_DIRECT and buffered, and the synchronous baseline;
 *   - the staging is the backend's pinned memory, the host never holds more than
 *     queue_depth x chunk bytes of the model at once (peak counted by the loader, asserted
 *     well below the model's size), and each tensor byte is uploaded exactly once;
 *   - on the emulation a pinned source is read when the copy runs, so reusing a staging
 *     buffer before its upload's event would deliver wrong bytes: the byte comparison checks
 *     the fences;
 *   - RLIMIT_MEMLOCK below the pinned staging (without CAP_IPC_LOCK): one error naming both
 *     numbers and the fix. */
#include "config.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "daemon/checkpoint.h"
#include "daemon/loader.h"
#include "daemon/model_config.h"
#include "daemon/synth.h"
#include "tests/gpu/gputest.h"
#include "tests/unit/testutil.h"

static struct gt g;

/* Drops CAP_IPC_LOCK from this process (root in CI has it, and it lifts RLIMIT_MEMLOCK). */
static bool drop_ipc_lock(void) {
        struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
        struct __user_cap_data_struct d[2];
        if (syscall(SYS_capget, &h, d) < 0)
                return false;
        d[CAP_IPC_LOCK / 32].effective &= ~(1u << (CAP_IPC_LOCK % 32));
        d[CAP_IPC_LOCK / 32].permitted &= ~(1u << (CAP_IPC_LOCK % 32));
        return syscall(SYS_capset, &h, d) == 0;
}

int main(void) {
        int rc = gt_open(&g, "test-gpu-load");
        if (rc)
                return rc;
        struct dsv_backend *be = g.be[1];
        struct dsv_error err = {{0}};
        struct dsv_model_config cfg;
        char dir[4300];
        snprintf(dir, sizeof(dir), "%s/gpu-load", test_dir());
        REQUIRE(dsv_model_config_preset("tiny", &cfg, &err) == 0, "preset");
        struct dsv_synth_opts so = {.seed = 11, .n_shards = 2};
        REQUIRE(dsv_synth_write(dir, &cfg, &so, &err) == 0, "synth %s: %s", dir, err.msg);
        struct dsv_checkpoint *ck;
        REQUIRE(dsv_checkpoint_open(dir, &ck, &err) == 0, "%s", err.msg);
        REQUIRE(dsv_backend_has_async_upload(be), "the CUDA backend has no upload_async/events");

        /* the file's bytes, and one device buffer holding every tensor (256-aligned) */
        uint64_t total = 0, span = 0;
        for (size_t i = 0; i < ck->n_tensors; i++) {
                total += ck->tensors[i].nbytes;
                span = ALIGN_UP(span, 256) + ck->tensors[i].nbytes;
        }
        uint8_t *ref = malloc(span), *got = malloc(span), *dev = NULL;
        struct dsv_load_item *items = malloc(ck->n_tensors * sizeof(*items));
        REQUIRE(ref && got && items, "oom");
        memset(ref, 0x5a, span);
        uint64_t off = 0;
        for (size_t i = 0; i < ck->n_tensors; i++) {
                const struct dsv_ckpt_tensor *t = &ck->tensors[i];
                off = ALIGN_UP(off, 256);
                int fd = open(ck->shards[t->shard].path, O_RDONLY | O_CLOEXEC);
                REQUIRE(fd >= 0 && pread(fd, ref + off, t->nbytes, (off_t)t->offset) == (ssize_t)t->nbytes, "pread");
                close(fd);
                off += t->nbytes;
        }
        REQUIRE(be->ops->alloc(be, span, (void **)&dev) == 0, "alloc %llu", (unsigned long long)span);
        printf("tiny checkpoint: %zu tensors, %llu bytes, 2 shards\n", ck->n_tensors, (unsigned long long)total);

        struct {
                unsigned qd;
                size_t chunk;
                bool no_uring, direct, no_async;
        } v[] = {{8, 65536, false, false, false}, {4, 16384, false, true, false}, {2, 4096, false, false, false},
                 {1, 8192, true, false, false},   {3, 12288, false, false, false}, {8, 65536, false, false, true}};
        for (size_t k = 0; k < ARRAY_SIZE(v); k++) {
                off = 0;
                for (size_t i = 0; i < ck->n_tensors; i++) {
                        off = ALIGN_UP(off, 256);
                        items[i] = (struct dsv_load_item){&ck->tensors[i], dev + off};
                        off += ck->tensors[i].nbytes;
                }
                REQUIRE(be->ops->fill(be, dev, 0x5a, span) == 0, "fill");
                struct dsv_load_opts lo = {.queue_depth = v[k].qd, .chunk_size = v[k].chunk, .no_uring = v[k].no_uring,
                                           .direct = v[k].direct, .no_direct = !v[k].direct, .no_async = v[k].no_async};
                struct dsv_load_stats ls = {0};
                memset(&err, 0, sizeof(err));
                int r = dsv_load_tensors(ck, items, ck->n_tensors, be, &lo, &ls, &err);
                CHECK(r == 0, "variant %zu: %s", k, err.msg);
                memset(got, 0, span);
                REQUIRE(be->ops->download(be, got, dev, span) == 0, "download");
                CHECK(memcmp(got, ref, span) == 0, "variant %zu (qd %u, chunk %zu): device bytes differ from the file's", k, v[k].qd,
                      v[k].chunk);
                const uint64_t bound = (uint64_t)v[k].qd * v[k].chunk;
                CHECK(ls.bytes_tensors == total && ls.bytes_uploaded == total, "variant %zu: %llu delivered, %llu uploaded of %llu",
                      k, (unsigned long long)ls.bytes_tensors, (unsigned long long)ls.bytes_uploaded, (unsigned long long)total);
                CHECK(ls.pinned == !v[k].no_async, "variant %zu: pinned staging %d", k, ls.pinned);
                CHECK(ls.staging_bytes == bound, "variant %zu: staging %llu bytes, expected %llu", k,
                      (unsigned long long)ls.staging_bytes, (unsigned long long)bound);
                CHECK(ls.staging_peak > 0 && ls.staging_peak <= bound && ls.staging_peak * 4 < total,
                      "variant %zu: peak staging %llu bytes (bound %llu, model %llu)", k, (unsigned long long)ls.staging_peak,
                      (unsigned long long)bound, (unsigned long long)total);
                printf("qd %u chunk %6zu %s%s%s: %u reads, peak staging %llu of %llu bytes (model %llu), %s\n", v[k].qd, v[k].chunk,
                       ls.uring ? "io_uring" : "pread", ls.direct ? " O_DIRECT" : "", ls.pinned ? " pinned+async" : " sync", ls.reads,
                       (unsigned long long)ls.staging_peak, (unsigned long long)bound, (unsigned long long)total,
                       r == 0 ? "ok" : "FAILED");
        }

        /* RLIMIT_MEMLOCK below the pinned staging: one error with the numbers and the fix */
        if (!drop_ipc_lock()) {
                printf("cannot drop CAP_IPC_LOCK: the RLIMIT_MEMLOCK check is not exercised\n");
        } else {
                struct rlimit rl = {.rlim_cur = 65536, .rlim_max = 65536};
                REQUIRE(setrlimit(RLIMIT_MEMLOCK, &rl) == 0, "setrlimit");
                struct dsv_load_opts lo = {.queue_depth = 4, .chunk_size = 65536};
                memset(&err, 0, sizeof(err));
                int r = dsv_load_tensors(ck, items, ck->n_tensors, be, &lo, NULL, &err);
                CHECK(r == -ENOMEM && strstr(err.msg, "RLIMIT_MEMLOCK is 65536 bytes") && strstr(err.msg, "262144") &&
                              strstr(err.msg, "LimitMEMLOCK="),
                      "memlock too low: %d %s", r, err.msg);
                printf("memlock 64 KiB -> %s\n", err.msg);
                /* enough for the staging: loads */
                lo.queue_depth = 1;
                memset(&err, 0, sizeof(err));
                r = dsv_load_tensors(ck, items, ck->n_tensors, be, &lo, NULL, &err);
                CHECK(r == 0, "one 64 KiB buffer within a 64 KiB RLIMIT_MEMLOCK: %s", err.msg);
        }
        be->ops->dealloc(be, dev, span);
        free(ref);
        free(got);
        free(items);
        dsv_checkpoint_free(ck);
        gt_close(&g);
        return test_result("test-gpu-load");
}
