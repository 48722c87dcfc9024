/* The bottom header: what every layer may include (kernels, ipc users, daemon, tools),
 * and which includes nothing of the project. Cleanup attributes and ownership hand-off,
 * the error convention (>= 0 success, -errno failure) with a detailed error text, aligned
 * sizes and overflow checks, and growable arrays. Logging, clocks and files live one floor
 * up, in daemon/util.h. */
#pragma once

#include <errno.h>
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

/* Overflow-checked arithmetic. */
static inline bool dsv_mul_overflow_u64(uint64_t a, uint64_t b, uint64_t *r) { return __builtin_mul_overflow(a, b, r); }

/* Detailed error text for operations whose failure a user must be able to act on
 * (which file, which tensor, what was expected, what was found). */
struct dsv_error {
        char msg[1024];
};

/* Writes the message (when e is given) and returns -|err| (-EINVAL for 0):
 * `return dsv_error_set(err, EINVAL, "%s: tensor %s: ...", ...);` */
static inline int dsv_error_set(struct dsv_error *e, int err, const char *fmt, ...) _printf_(3, 4);
static inline int dsv_error_set(struct dsv_error *e, int err, const char *fmt, ...) {
        if (e) {
                va_list ap;
                va_start(ap, fmt);
                vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
                va_end(ap);
        }
        return err > 0 ? -err : (err == 0 ? -EINVAL : err);
}

/* Growable arrays: makes room for `want` elements in *v (capacity *cap, doubling, at least
 * 8); 0 or -ENOMEM (then *v and *cap are unchanged).
 *   if ((r = DSV_GROW(&a->items, &a->cap, a->n + 1)) < 0) return r; */
static inline int dsv_grow(void **v, size_t *cap, size_t want, size_t elem) {
        size_t n = *cap ? *cap : 8;
        void *p;
        if (want <= *cap)
                return 0;
        while (n < want) {
                if (n > SIZE_MAX / 2)
                        return -ENOMEM;
                n *= 2;
        }
        if (n > SIZE_MAX / elem)
                return -ENOMEM;
        p = realloc(*v, n * elem);
        if (!p)
                return -ENOMEM;
        *v = p;
        *cap = n;
        return 0;
}
#define DSV_GROW(pv, pcap, want) dsv_grow((void **)(pv), (pcap), (size_t)(want), sizeof(**(pv)))
