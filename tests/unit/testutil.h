/* Test helpers: checks that report file:line and keep going, a failure count, tolerance
 * comparisons, and a tiny model generated once per build tree. Exit codes: 0 pass, 1 fail,
 * 77 skip. */
#pragma once

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/util.h"
#include "tests/check.h"

/* Largest |a - b| over n values, and where. */
static inline double max_abs_diff(const float *a, const float *b, size_t n, size_t *where) {
        double m = 0;
        size_t w = 0;
        for (size_t i = 0; i < n; i++) {
                double d = fabs((double)a[i] - (double)b[i]);
                if (d != d || (a[i] != a[i]) != (b[i] != b[i]))
                        d = INFINITY;
                if (d > m) {
                        m = d;
                        w = i;
                }
        }
        if (where)
                *where = w;
        return m;
}

static inline double max_abs(const float *a, size_t n) {
        double m = 0;
        for (size_t i = 0; i < n; i++)
                m = fmax(m, fabs((double)a[i]));
        return m;
}

/* The first index of the largest of v[0, n) (greedy decoding's choice). */
static inline int argmax_f32(const float *v, int n) {
        int b = 0;
        for (int i = 1; i < n; i++)
                if (v[i] > v[b])
                        b = i;
        return b;
}

/* Largest |ref - got| over n values relative to the largest |ref| (absolute when ref is 0). */
static inline double max_rel_diff(const float *ref, const float *got, size_t n) {
        double d = max_abs_diff(ref, got, n, NULL), m = max_abs(ref, n);
        return m > 0 ? d / m : d;
}

/* Directory for test artifacts inside the build tree. */
/* The tests' scratch directory: $DSV32_TEST_TMP, or tests/tmp of the build tree (a script that
 * runs a test again while the suite runs gives it a directory of its own). */
static inline const char *test_dir(void) {
        const char *b = getenv("top_builddir"), *own = getenv("DSV32_TEST_TMP");
        static char buf[4096];
        if (own && *own)
                snprintf(buf, sizeof(buf), "%s", own);
        else
                snprintf(buf, sizeof(buf), "%s/tests/tmp", b ? b : ".");
        dsv_mkdir_p(buf, 0755);
        return buf;
}
