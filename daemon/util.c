/* Logging, errors and small file helpers used everywhere in the daemon and the tools. */
#include "config.h"

#include "daemon/util.h"

#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <sys/stat.h>
#include <time.h>

int dsv_log_max_level = DSV_LOG_INFO;

_printf_(2, 0) static void log_va(int level, const char *fmt, va_list ap) {
        static int journal = -1;
        char buf[2048];
        if (level > dsv_log_max_level)
                return;
        if (journal < 0)
                journal = getenv("JOURNAL_STREAM") != NULL;
        vsnprintf(buf, sizeof(buf), fmt, ap);
        if (journal)
                fprintf(stderr, "<%d>%s\n", level, buf);
        else
                fprintf(stderr, "%s\n", buf);
}

void dsv_log(int level, const char *fmt, ...) {
        va_list ap;
        int e = errno;
        va_start(ap, fmt);
        log_va(level, fmt, ap);
        va_end(ap);
        errno = e;
}

int dsv_log_errno(int level, int err, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        log_va(level, fmt, ap);
        va_end(ap);
        return err > 0 ? -err : (err == 0 ? -EIO : err);
}

uint64_t dsv_now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int dsv_read_file(const char *path, size_t max_size, char **ret, size_t *ret_size) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        _cleanup_free_ char *buf = NULL;
        struct stat st;
        size_t n = 0;

        if (fd < 0)
                return dsv_negerrno();
        if (fstat(fd, &st) < 0)
                return dsv_negerrno();
        if (!S_ISREG(st.st_mode))
                return -EISDIR;
        if ((uint64_t)st.st_size > max_size)
                return -EFBIG;
        buf = malloc((size_t)st.st_size + 1);
        if (!buf)
                return -ENOMEM;
        while (n < (size_t)st.st_size) {
                ssize_t k = read(fd, buf + n, (size_t)st.st_size - n);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return dsv_negerrno();
                }
                if (k == 0)
                        break;
                n += (size_t)k;
        }
        buf[n] = 0;
        *ret = TAKE_PTR(buf);
        if (ret_size)
                *ret_size = n;
        return 0;
}

int dsv_write_file(const char *path, const void *data, size_t size) {
        _cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        const char *p = data;
        if (fd < 0)
                return dsv_negerrno();
        while (size > 0) {
                ssize_t k = write(fd, p, size);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return dsv_negerrno();
                }
                p += k;
                size -= (size_t)k;
        }
        return 0;
}

int dsv_mkdir_p(const char *path, unsigned mode) {
        char buf[PATH_MAX];
        size_t n = strlen(path);
        if (n == 0 || n >= sizeof(buf))
                return -EINVAL;
        memcpy(buf, path, n + 1);
        for (size_t i = 1; i <= n; i++) {
                if (buf[i] == '/' || buf[i] == 0) {
                        char c = buf[i];
                        buf[i] = 0;
                        if (mkdir(buf, mode) < 0 && errno != EEXIST)
                                return dsv_negerrno();
                        buf[i] = c;
                }
        }
        return 0;
}

int dsv_parse_int(const char *s, long min, long max, long *ret) {
        char *end;
        long v;
        if (!s || !*s)
                return -EINVAL;
        errno = 0;
        v = strtol(s, &end, 10);
        if (errno || *end || v < min || v > max)
                return -ERANGE;
        *ret = v;
        return 0;
}

int dsv_parse_double(const char *s, double *ret) {
        char *end;
        double v;
        if (!s || !*s)
                return -EINVAL;
        errno = 0;
        v = strtod(s, &end);
        if (errno || *end || !isfinite(v))
                return -ERANGE;
        *ret = v;
        return 0;
}

int dsv_strbuf_reserve(struct dsv_strbuf *b, size_t extra) {
        size_t cap;
        char *p;
        if (b->n + extra + 1 <= b->cap)
                return 0;
        if (extra > SIZE_MAX / 2 - b->n)
                return -ENOMEM;
        cap = b->cap ? b->cap : 256;
        while (cap < b->n + extra + 1)
                cap *= 2;
        p = realloc(b->p, cap);
        if (!p)
                return -ENOMEM;
        b->p = p;
        b->cap = cap;
        return 0;
}

int dsv_strbuf_add(struct dsv_strbuf *b, const char *s, size_t n) {
        int r = dsv_strbuf_reserve(b, n);
        if (r < 0)
                return r;
        if (n)
                memcpy(b->p + b->n, s, n);
        b->n += n;
        b->p[b->n] = 0;
        return 0;
}

int dsv_strbuf_adds(struct dsv_strbuf *b, const char *s) { return dsv_strbuf_add(b, s, strlen(s)); }

void dsv_strbuf_done(struct dsv_strbuf *b) {
        free(b->p);
        b->p = NULL;
        b->n = b->cap = 0;
}

/* The cgroup v2 limit of this process minus what it uses: -ENOENT without a limit. */
static int cgroup_room(uint64_t *ret) {
        char line[4096], path[4200], *cg = NULL;
        unsigned long long max = 0, cur = 0;
        FILE *f = fopen("/proc/self/cgroup", "re");
        int r = -ENOENT;
        if (!f)
                return -errno;
        while (fgets(line, sizeof(line), f))
                if (strncmp(line, "0::", 3) == 0) {
                        cg = line + 3;
                        cg[strcspn(cg, "\n")] = 0;
                        break;
                }
        fclose(f);
        if (!cg)
                return -ENOENT;
        snprintf(path, sizeof(path), "/sys/fs/cgroup%s/memory.max", cg);
        f = fopen(path, "re");
        if (f && fscanf(f, "%llu", &max) == 1) { /* "max" (no limit) does not parse */
                fclose(f);
                snprintf(path, sizeof(path), "/sys/fs/cgroup%s/memory.current", cg);
                f = fopen(path, "re");
                if (f && fscanf(f, "%llu", &cur) == 1) {
                        *ret = max > cur ? max - cur : 0;
                        r = 0;
                }
        }
        if (f)
                fclose(f);
        return r;
}

int dsv_mem_available(uint64_t *ret) {
        char line[256];
        unsigned long long kb = 0;
        uint64_t room;
        bool found = false;
        FILE *f = fopen("/proc/meminfo", "re");
        if (!f)
                return dsv_negerrno();
        while (!found && fgets(line, sizeof(line), f))
                found = sscanf(line, "MemAvailable: %llu kB", &kb) == 1;
        fclose(f);
        if (!found)
                return -ENODATA;
        *ret = (uint64_t)kb * 1024;
        if (cgroup_room(&room) == 0 && room < *ret)
                *ret = room;
        return 0;
}
