/* Small helpers shared by the daemon, the tools and the kernels: cleanup attributes,
 * error conventions (>= 0 success, -errno failure), logging, arithmetic helpers. */
#pragma once

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _unused_ __attribute__((unused))
#define _likely_(x) __builtin_expect(!!(x), 1)
#define _unlikely_(x) __builtin_expect(!!(x), 0)

static inline void dsv_freep(void *p) { free(*(void **)p); }
static inline void dsv_closep(int *fd) {
        if (*fd >= 0) {
                int e = errno;
                close(*fd);
                errno = e;
        }
}
static inline void dsv_fclosep(FILE **f) {
        if (*f)
                fclose(*f);
}
#define _cleanup_free_ _cleanup_(dsv_freep)
#define _cleanup_close_ _cleanup_(dsv_closep)
#define _cleanup_fclose_ _cleanup_(dsv_fclosep)

#define TAKE_PTR(p)                      \
        ({                               \
                __typeof__(p) _tp_ = (p); \
                (p) = NULL;              \
                _tp_;                    \
        })
#define TAKE_FD(fd)                   \
        ({                            \
                int _tfd_ = (fd);     \
                (fd) = -1;            \
                _tfd_;                \
        })

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define DIV_ROUND_UP(a, b) (((a) + (b)-1) / (b))
#define ALIGN_UP(a, b) (DIV_ROUND_UP(a, b) * (b))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

/* Returns -errno of the last libc failure (never 0). */
static inline int dsv_negerrno(void) { return errno > 0 ? -errno : -EIO; }

/* Detailed error text for operations whose failure a user must be able to act on
 * (which file, which tensor, what was expected, what was found). */
struct dsv_error {
        char msg[1024];
};
int dsv_error_set(struct dsv_error *e, int err, const char *fmt, ...) _printf_(3, 4);

/* Logging: one line per call to stderr, with a syslog-style "<N>" prefix when stderr is
 * the journal (JOURNAL_STREAM set), so priorities survive. */
enum dsv_log_level {
        DSV_LOG_ERR = 3,
        DSV_LOG_WARNING = 4,
        DSV_LOG_NOTICE = 5,
        DSV_LOG_INFO = 6,
        DSV_LOG_DEBUG = 7,
};
extern int dsv_log_max_level;
void dsv_log(int level, const char *fmt, ...) _printf_(2, 3);
/* Logs and returns -|err|: `return log_errno(r, "Failed to ...: %s", strerror(-r));` */
int dsv_log_errno(int level, int err, const char *fmt, ...) _printf_(3, 4);
#define log_error(...) dsv_log(DSV_LOG_ERR, __VA_ARGS__)
#define log_warning(...) dsv_log(DSV_LOG_WARNING, __VA_ARGS__)
#define log_notice(...) dsv_log(DSV_LOG_NOTICE, __VA_ARGS__)
#define log_info(...) dsv_log(DSV_LOG_INFO, __VA_ARGS__)
#define log_debug(...) dsv_log(DSV_LOG_DEBUG, __VA_ARGS__)

/* Monotonic clock in nanoseconds. */
uint64_t dsv_now_ns(void);

/* Whole-file helpers; the file is capped at max_size bytes (-EFBIG beyond). */
int dsv_read_file(const char *path, size_t max_size, char **ret, size_t *ret_size);
int dsv_write_file(const char *path, const void *data, size_t size);
int dsv_mkdir_p(const char *path, unsigned mode);
/* Memory this process may still use: MemAvailable (/proc/meminfo), or less when its cgroup
 * (v2) has a memory.max. 0, or -errno when /proc/meminfo cannot be read. */
int dsv_mem_available(uint64_t *ret);

/* Overflow-checked arithmetic. */
static inline bool dsv_mul_overflow_u64(uint64_t a, uint64_t b, uint64_t *r) {
        return __builtin_mul_overflow(a, b, r);
}

/* Parse helpers for command lines: strict, whole string, in range. */
/* A growable NUL-terminated byte string: p[0..n) plus p[n] == 0 once anything was added. */
struct dsv_strbuf {
        char *p;
        size_t n, cap;
};
/* Makes room for `extra` more bytes (and the NUL); 0 or -ENOMEM. */
int dsv_strbuf_reserve(struct dsv_strbuf *b, size_t extra);
int dsv_strbuf_add(struct dsv_strbuf *b, const char *s, size_t n);
int dsv_strbuf_adds(struct dsv_strbuf *b, const char *s);
void dsv_strbuf_done(struct dsv_strbuf *b);

int dsv_parse_int(const char *s, long min, long max, long *ret);
int dsv_parse_double(const char *s, double *ret);
