/* Helpers of the daemon and the tools, over the bottom header kernels/base.h (cleanup,
 * errors, sizes, growable arrays): logging, the monotonic clock, whole-file helpers, strict
 * command-line parsing and a string builder. */
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

#include "kernels/base.h"

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
