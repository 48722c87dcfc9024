/* The engine's metrics (the list is metrics.def): a snapshot struct generated from the list,
 * and the live counters the engine thread updates and any thread reads. Rates decay
 * exponentially with wall time (time constant DSV_RATE_TAU_S): an idle engine shows ~0
 * within seconds, and a burst after an idle gap is not averaged over the gap. */
#pragma once

#include <pthread.h>
#include <stdint.h>

#define DSV_METRIC_TYPE_COUNTER uint64_t
#define DSV_METRIC_TYPE_GAUGE uint64_t
#define DSV_METRIC_TYPE_RATE double

/* Data-parallel attention (dsv32d --parallel ep,dp): the most ranks whose pools are reported. */
#define DSV_METRICS_RANKS_MAX 256

/* Each rank's KV pool with data-parallel attention (n_rank_pools 0 with one pool). */
struct dsv_rank_pages {
        uint32_t n_rank_pools;
        uint32_t used[DSV_METRICS_RANKS_MAX], free[DSV_METRICS_RANKS_MAX], cached[DSV_METRICS_RANKS_MAX];
};

struct dsv_engine_metrics {
#define DSV_METRIC(name, kind, help) DSV_METRIC_TYPE_##kind name;
#include "daemon/engine/metrics.def"
#undef DSV_METRIC
        struct dsv_rank_pages ranks;
};

/* The metrics' names, kinds and help texts, in list order. */
enum dsv_metric_kind {
        DSV_METRIC_COUNTER,
        DSV_METRIC_GAUGE,
        DSV_METRIC_RATE,
        DSV_METRIC_KIND_MAX,
};
struct dsv_metric_desc {
        const char *name;
        enum dsv_metric_kind kind;
        const char *help;
};
extern const struct dsv_metric_desc dsv_engine_metric_desc[];
extern const unsigned dsv_engine_metric_count;
/* The value of metric i of a snapshot, as a double. */
double dsv_engine_metric_value(const struct dsv_engine_metrics *m, unsigned i);

#define DSV_RATE_TAU_S 2.0

struct dsv_rate {
        double level; /* decayed event count */
        uint64_t t_ns;
};

/* Live metrics: counters and gauges are atomics; rates are under `lock`. */
struct dsv_metrics_live {
#define DSV_METRIC(name, kind, help) DSV_METRIC_LIVE_##kind(name)
#define DSV_METRIC_LIVE_COUNTER(name) uint64_t name;
#define DSV_METRIC_LIVE_GAUGE(name) uint64_t name;
#define DSV_METRIC_LIVE_RATE(name) struct dsv_rate name;
#include "daemon/engine/metrics.def"
#undef DSV_METRIC
        struct dsv_rank_pages ranks; /* atomics, each field alone */
        pthread_mutex_t lock;
};

void dsv_metrics_init(struct dsv_metrics_live *l);
void dsv_metrics_done(struct dsv_metrics_live *l);
#define DSV_METRIC_ADD(l, name, v) __atomic_add_fetch(&(l)->name, (uint64_t)(v), __ATOMIC_RELAXED)
#define DSV_METRIC_SET(l, name, v) __atomic_store_n(&(l)->name, (uint64_t)(v), __ATOMIC_RELAXED)
/* Counts n events of a rate at now_ns. */
void dsv_rate_add(struct dsv_metrics_live *l, struct dsv_rate *r, double n, uint64_t now_ns);
/* A snapshot at now_ns. */
void dsv_metrics_read(struct dsv_metrics_live *l, uint64_t now_ns, struct dsv_engine_metrics *out);
