/* What the runtime benchmarks (bench-decode, bench-prefill, bench-load) share: their common
 * options (--model, --backend, --threads, --csv) and opening the model with its CSV file.
 * Header-only: each benchmark is one program. */
#pragma once

#include "daemon/runtime/runtime.h"
#include "daemon/util.h"

struct bench_common {
        const char *model, *backend, *csv;
        long threads;
};

/* 1 when option o (value v) is a common one and was taken, 0 when it is not one, -1 when
 * it is one with a bad value. */
static inline int bench_common_opt(struct bench_common *c, const char *o, const char *v) {
        if (strcmp(o, "--model") == 0)
                c->model = v;
        else if (strcmp(o, "--backend") == 0)
                c->backend = v;
        else if (strcmp(o, "--csv") == 0)
                c->csv = v;
        else if (strcmp(o, "--threads") == 0)
                return dsv_parse_int(v, 0, 1024, &c->threads) == 0 ? 1 : -1;
        else
                return 0;
        return 1;
}

/* Opens the runtime on ro (model, backend and threads from c, faithful numerics, no MTP)
 * and c->csv for appending (*csv NULL without one); 0, or 1 after saying why on stderr. */
static inline int bench_open(const char *prog, const struct bench_common *c, struct dsv_runtime_opts ro,
                             struct dsv_runtime **rt, FILE **csv) {
        struct dsv_error err = {{0}};
        ro.model_dir = c->model;
        ro.backend = c->backend;
        ro.where.threads = (int)c->threads;
        ro.numerics = DSV_NUMERICS_FAITHFUL;
        ro.mtp = DSV_MTP_OFF;
        *csv = NULL;
        if (dsv_runtime_open(&ro, rt, &err) < 0) {
                fprintf(stderr, "%s: %s\n", prog, err.msg);
                return 1;
        }
        if (c->csv && !(*csv = fopen(c->csv, "a"))) {
                fprintf(stderr, "%s: %s: %s\n", prog, c->csv, strerror(errno));
                dsv_runtime_free(*rt);
                return 1;
        }
        return 0;
}
