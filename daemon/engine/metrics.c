/* The engine's metrics (see metrics.h). */
#include "config.h"

#include "daemon/engine/metrics.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

const struct dsv_metric_desc dsv_engine_metric_desc[] = {
#define DSV_METRIC(name, kind, help) {#name, DSV_METRIC_##kind, help},
#include "daemon/engine/metrics.def"
#undef DSV_METRIC
};
const unsigned dsv_engine_metric_count = sizeof(dsv_engine_metric_desc) / sizeof(dsv_engine_metric_desc[0]);

double dsv_engine_metric_value(const struct dsv_engine_metrics *m, unsigned i) {
        unsigned k = 0;
#define DSV_METRIC(name, kind, help)         \
        if (k++ == i)                        \
                return (double)m->name;
#include "daemon/engine/metrics.def"
#undef DSV_METRIC
        return NAN;
}

void dsv_metrics_init(struct dsv_metrics_live *l) {
        memset(l, 0, offsetof(struct dsv_metrics_live, lock));
        pthread_mutex_init(&l->lock, NULL);
}

void dsv_metrics_done(struct dsv_metrics_live *l) { pthread_mutex_destroy(&l->lock); }

/* level decays as exp(-dt / tau); the rate is level / tau (a steady stream of x per second
 * settles at x) */
static void decay(struct dsv_rate *r, uint64_t now_ns) {
        if (now_ns > r->t_ns) {
                r->level *= exp(-(double)(now_ns - r->t_ns) / 1e9 / DSV_RATE_TAU_S);
                r->t_ns = now_ns;
        }
}

void dsv_rate_add(struct dsv_metrics_live *l, struct dsv_rate *r, double n, uint64_t now_ns) {
        pthread_mutex_lock(&l->lock);
        decay(r, now_ns);
        r->level += n;
        pthread_mutex_unlock(&l->lock);
}

void dsv_metrics_read(struct dsv_metrics_live *l, uint64_t now_ns, struct dsv_engine_metrics *out) {
#define DSV_METRIC(name, kind, help) DSV_METRIC_READ_##kind(name)
#define DSV_METRIC_READ_COUNTER(name) out->name = __atomic_load_n(&l->name, __ATOMIC_RELAXED);
#define DSV_METRIC_READ_GAUGE(name) out->name = __atomic_load_n(&l->name, __ATOMIC_RELAXED);
#define DSV_METRIC_READ_RATE(name)                                                \
        pthread_mutex_lock(&l->lock);                                             \
        decay(&l->name, now_ns);                                                  \
        out->name = l->name.level / DSV_RATE_TAU_S;                               \
        pthread_mutex_unlock(&l->lock);
#include "daemon/engine/metrics.def"
#undef DSV_METRIC
        out->ranks.n_rank_pools = __atomic_load_n(&l->ranks.n_rank_pools, __ATOMIC_RELAXED);
        if (out->ranks.n_rank_pools > DSV_METRICS_RANKS_MAX)
                out->ranks.n_rank_pools = DSV_METRICS_RANKS_MAX;
        for (uint32_t k = 0; k < out->ranks.n_rank_pools; k++) {
                out->ranks.used[k] = __atomic_load_n(&l->ranks.used[k], __ATOMIC_RELAXED);
                out->ranks.free[k] = __atomic_load_n(&l->ranks.free[k], __ATOMIC_RELAXED);
                out->ranks.cached[k] = __atomic_load_n(&l->ranks.cached[k], __ATOMIC_RELAXED);
        }
}
