/* bench-load: weight streaming from the page cache into backend memory (the io_uring loader
 * with the backend's pinned staging, several reads and copies in flight), set against the
 * host-to-device copy rate measured in the same run on the same backend: copies of
 * --chunk-mib from the backend's pinned host memory (alloc_host) into its memory, with as
 * many in flight as the loader keeps (upload_async, one event at the end), best of 3; a
 * backend without asynchronous uploads (the CPU) is measured with its plain upload. The
 * checkpoint's files are read once first so that the load reads from the page cache (that
 * read's rate is printed too: a third limit). Each load opens the model as dsv32d does
 * (dsv_runtime_open) and reports the loader's own figure: tensor bytes over the time from
 * the first read to the last byte on the device. Figures, not tests: the device script
 * (tests/gpu/run-device.sh) runs it on a checkpoint that dsv32-mkmodel writes there;
 * `make check` runs it on a small one (tests/bench/bench-load.sh) so that it keeps working.
 *
 * usage: bench-load --model DIR [--backend cpu|cuda] [--threads N] [--reps N]
 *                   [--queue-depth N] [--chunk-mib N] [--copy-mib N] [--csv FILE]
 * CSV rows (run-device.sh's columns):
 *   bench,load,MODEL,qdQ_chunkC,ms,GB/s,GB/s,h2d_pinned,RATE,FRACTION,,ok */
#include "config.h"

#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <unistd.h>

#include "daemon/runtime/runtime.h"
#include "daemon/util.h"
#include "tests/bench/bench-runtime.h"

struct args {
        struct bench_common c;
        long reps, queue_depth, chunk_mib, copy_mib;
};

static int usage(void) {
        fprintf(stderr, "usage: bench-load --model DIR [--backend cpu|cuda] [--threads N] [--reps N] [--queue-depth N] "
                        "[--chunk-mib N] [--copy-mib N] [--csv FILE]\n");
        return 2;
}

static int parse(int argc, char **argv, struct args *a) {
        *a = (struct args){.c = {.backend = "cpu"}, .reps = 2, .queue_depth = 8, .chunk_mib = 2, .copy_mib = 1024};
        for (int i = 1; i < argc; i++) {
                const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
                if (!v)
                        return -1;
                i++;
                const int common = bench_common_opt(&a->c, o, v);
                if (common < 0)
                        return -1;
                if (common > 0)
                        ;
                else if (strcmp(o, "--reps") == 0 && dsv_parse_int(v, 1, 100, &a->reps) == 0)
                        ;
                else if (strcmp(o, "--queue-depth") == 0 && dsv_parse_int(v, 1, 256, &a->queue_depth) == 0)
                        ;
                else if (strcmp(o, "--chunk-mib") == 0 && dsv_parse_int(v, 1, 1024, &a->chunk_mib) == 0)
                        ;
                else if (strcmp(o, "--copy-mib") == 0 && dsv_parse_int(v, 1, 1 << 20, &a->copy_mib) == 0)
                        ;
                else
                        return -1;
        }
        return a->c.model ? 0 : -1;
}

/* Reads every regular file of dir once (into the page cache); bytes read, or < 0. */
static int64_t read_files(const char *dir) {
        DIR *d = opendir(dir);
        static char buf[8 << 20];
        int64_t total = 0;
        struct dirent *e;
        if (!d)
                return -errno;
        while ((e = readdir(d))) {
                char path[4096];
                if (e->d_name[0] == '.' || snprintf(path, sizeof(path), "%s/%s", dir, e->d_name) >= (int)sizeof(path))
                        continue;
                const int fd = open(path, O_RDONLY | O_CLOEXEC);
                if (fd < 0)
                        continue; /* a subdirectory or an unreadable file: the loader will say */
                ssize_t n;
                while ((n = read(fd, buf, sizeof(buf))) > 0)
                        total += n;
                close(fd);
        }
        closedir(d);
        return total;
}

/* Bytes per second into backend memory from host memory: n bytes in chunks of c, qd chunks
 * of pinned staging reused in turn (as the loader does), best of 3 after a warm-up; 0 where
 * the buffers cannot be had. *how names the mechanism. */
static double h2d_rate(struct dsv_backend *be, size_t n, size_t c, int qd, const char **how) {
        const bool async = dsv_backend_has_async_upload(be);
        void *dst = NULL, *ev = NULL;
        char **src = calloc((size_t)qd, sizeof(*src));
        double best = 1e30;
        *how = async ? "pinned, asynchronous" : "plain upload";
        n = n / c * c;
        if (!src || n == 0 || be->ops->alloc(be, n, &dst) < 0)
                goto out;
        for (int i = 0; i < qd; i++) {
                if (async ? be->ops->alloc_host(be, c, (void **)&src[i]) < 0 : !(src[i] = malloc(c)))
                        goto out;
                memset(src[i], 0x3c + i, c);
        }
        if (async && be->ops->event_new(be, &ev) < 0)
                goto out;
        for (int r = 0; r < 4; r++) {
                const uint64_t t0 = dsv_now_ns();
                int rc = 0;
                for (size_t o = 0, k = 0; o < n && rc >= 0; o += c, k++) {
                        /* reusing staging qd chunks later: the loader waits for that chunk's event
                         * first; here all copies of a round read the same qd buffers, unchanged */
                        rc = async ? be->ops->upload_async(be, (char *)dst + o, src[k % (size_t)qd], c)
                                   : be->ops->upload(be, (char *)dst + o, src[k % (size_t)qd], c);
                }
                if (rc < 0 || (async && (be->ops->event_record(be, ev) < 0 || be->ops->event_wait(be, ev) < 0)))
                        break;
                if (r > 0)
                        best = fmin(best, (dsv_now_ns() - t0) / 1e9);
        }
out:
        if (ev)
                be->ops->event_free(be, ev);
        for (int i = 0; src && i < qd; i++)
                if (src[i])
                        async ? be->ops->free_host(be, src[i], c) : free(src[i]);
        free(src);
        if (dst)
                be->ops->dealloc(be, dst, n);
        return best < 1e30 ? (double)n / best : 0;
}

int main(int argc, char **argv) {
        struct args a;
        struct dsv_error err = {{0}};
        FILE *csv = NULL;
        double best_gbs = 0, best_s = 0, h2d = 0;
        const char *how = "";
        char shape[64];
        struct dsv_load_stats last = {0};

        if (parse(argc, argv, &a) < 0)
                return usage();
        if (strncmp(a.c.model, "preset:", 7) == 0) {
                fprintf(stderr, "bench-load: %s: a preset is made on the backend, nothing is streamed; give a checkpoint "
                                "directory (dsv32-mkmodel --preset NAME --out DIR writes one)\n", a.c.model);
                return 2;
        }
        const uint64_t t0 = dsv_now_ns();
        const int64_t bytes = read_files(a.c.model);
        const double read_s = (dsv_now_ns() - t0) / 1e9;
        if (bytes < 0) {
                fprintf(stderr, "bench-load: %s: %s\n", a.c.model, strerror((int)-bytes));
                return 1;
        }
        if (a.c.csv && !(csv = fopen(a.c.csv, "a"))) {
                fprintf(stderr, "bench-load: %s: %s\n", a.c.csv, strerror(errno));
                return 1;
        }
        printf("bench-load: %s: %.2f GB of files read in %.2f s (%.2f GB/s: the page cache's read rate, or the disk's "
               "the first time)\n",
               a.c.model, bytes / 1e9, read_s, read_s > 0 ? bytes / read_s / 1e9 : 0);
        for (long rep = 0; rep < a.reps; rep++) {
                struct dsv_runtime *rt;
                const struct dsv_runtime_opts ro = {
                        .model_dir = a.c.model, .backend = a.c.backend, .where = {.threads = (int)a.c.threads},
                        .numerics = DSV_NUMERICS_FAITHFUL, .kv_tokens = 64, .mtp = DSV_MTP_OFF,
                        .load = {.queue_depth = (unsigned)a.queue_depth, .chunk_size = (size_t)a.chunk_mib << 20}};
                if (dsv_runtime_open(&ro, &rt, &err) < 0) {
                        fprintf(stderr, "bench-load: %s\n", err.msg);
                        if (csv)
                                fclose(csv);
                        return 1;
                }
                last = *dsv_model_load_stats(rt->model);
                const double s = last.elapsed_ns / 1e9, gbs = s > 0 ? last.bytes_tensors / s / 1e9 : 0;
                printf("load %ld: %.2f GB of tensors in %.3f s: %.2f GB/s (%u reads, %s%s, "
                       "%s staging, %u in flight, %.1f MiB staging)\n",
                       rep + 1, last.bytes_tensors / 1e9, s, gbs, last.reads,
                       last.uring ? "io_uring" : "pread", last.direct ? ", O_DIRECT" : "",
                       rt->be->host_memory ? "no" : last.pinned ? "pinned" : "pageable", last.queue_depth,
                       last.staging_bytes / 1048576.0);
                if (gbs > best_gbs)
                        best_gbs = gbs, best_s = s;
                if (rep == a.reps - 1) {
                        uint64_t free_b = 0, total_b = 0;
                        if (rt->be->ops->mem_info)
                                rt->be->ops->mem_info(rt->be, &free_b, &total_b);
                        size_t n = (size_t)a.copy_mib << 20;
                        if (free_b)
                                n = (size_t)MIN((uint64_t)n, free_b / 4);
                        h2d = h2d_rate(rt->be, n, (size_t)a.chunk_mib << 20, (int)a.queue_depth, &how);
                        printf("host to %s memory: %.2f GB/s (%s, %ld MiB copies, %ld in flight, %zu MiB)\n",
                               rt->be->ops->name, h2d / 1e9, how, a.chunk_mib, a.queue_depth, n >> 20);
                }
                dsv_runtime_free(rt);
        }
        const double frac = h2d > 0 ? best_gbs * 1e9 / h2d : 0;
        printf("weight streaming: %.2f GB/s = %.2f of the host-to-device rate (best of %ld loads)\n", best_gbs, frac, a.reps);
        snprintf(shape, sizeof(shape), "qd%ld_chunk%ldMiB", a.queue_depth, a.chunk_mib);
        if (csv) {
                fprintf(csv, "bench,load,%s,%s,%.3f,%.3f,GB/s,h2d_pinned,%.3f,%.4f,,ok\n", a.c.model, shape, best_s * 1e3, best_gbs,
                        h2d / 1e9, frac);
                fclose(csv);
        }
        return best_gbs > 0 && h2d > 0 ? 0 : 1;
}
