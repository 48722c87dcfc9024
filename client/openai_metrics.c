/* openai_metrics.c: GET /metrics of dsv32-openai in the Prometheus text format (version
 * 0.0.4): the daemon's STATS as dsv32_* series (requests, tokens, KV-cache pages, sessions,
 * reused prompt tokens and the cache hit ratio, throughput; under data-parallel attention each
 * rank's KV pool as dsv32_rank_kv_pages_* with a rank label) and the gateway's own counters
 * (dsv32_openai_*: HTTP responses by status, time to first token and time per output token
 * of streamed generations as histograms). */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "client/openai.h"

#define N_BUCKETS 12
static const double bounds[N_BUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};

struct hist {
        uint64_t bucket[N_BUCKETS + 1]; /* the last: above every bound */
        uint64_t count;
        double sum;
};

static const unsigned statuses[] = {200, 400, 401, 404, 405, 413, 429, 499, 500, 503};
#define N_STATUSES (sizeof(statuses) / sizeof(statuses[0]))

static struct {
        pthread_mutex_t lock;
        uint64_t http[N_STATUSES + 1]; /* the last: any other status */
        uint64_t generations, prompt_tokens, completion_tokens;
        struct hist ttft, per_token;
} m = {.lock = PTHREAD_MUTEX_INITIALIZER};

void oai_metrics_http(unsigned status) {
        size_t i = 0;
        while (i < N_STATUSES && statuses[i] != status)
                i++;
        pthread_mutex_lock(&m.lock);
        m.http[i]++;
        pthread_mutex_unlock(&m.lock);
}

static void hist_add(struct hist *h, double v) {
        size_t i = 0;
        while (i < N_BUCKETS && v > bounds[i])
                i++;
        h->bucket[i]++;
        h->count++;
        h->sum += v;
}

void oai_metrics_generation(double ttft_s, double per_token_s, uint32_t prompt_tokens, uint32_t completion_tokens) {
        pthread_mutex_lock(&m.lock);
        m.generations++;
        m.prompt_tokens += prompt_tokens;
        m.completion_tokens += completion_tokens;
        if (ttft_s >= 0)
                hist_add(&m.ttft, ttft_s);
        if (per_token_s >= 0)
                hist_add(&m.per_token, per_token_s);
        pthread_mutex_unlock(&m.lock);
}

static int put(struct oai_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int put(struct oai_buf *b, const char *fmt, ...) {
        char line[512];
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(line, sizeof(line), fmt, ap);
        va_end(ap);
        if (n < 0 || (size_t)n >= sizeof(line))
                return -EOVERFLOW;
        return oai_buf_append(b, line, (size_t)n);
}

/* One series with its HELP and TYPE lines. */
static int series(struct oai_buf *b, const char *name, const char *type, const char *help, double v) {
        return put(b, "# HELP %s %s\n# TYPE %s %s\n%s %.12g\n", name, help, name, type, name, v);
}

static int hist_put(struct oai_buf *b, const char *name, const char *help, const struct hist *h) {
        int ret = put(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
        uint64_t cum = 0;
        for (size_t i = 0; ret >= 0 && i <= N_BUCKETS; i++) {
                cum += h->bucket[i];
                if (i < N_BUCKETS)
                        ret = put(b, "%s_bucket{le=\"%g\"} %llu\n", name, bounds[i], (unsigned long long)cum);
                else
                        ret = put(b, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
        }
        if (ret >= 0)
                ret = put(b, "%s_sum %.9g\n%s_count %llu\n", name, h->sum, name, (unsigned long long)h->count);
        return ret;
}

/* Data-parallel attention (dsv32d --parallel ep,dp): each rank's own KV pool, one sample a
 * rank under its own names (the totals above stay unlabelled, so a sum over these is theirs
 * and nothing is counted twice). Nothing when the daemon keeps one pool. */
static int rank_series(struct oai_buf *b, const struct dsv32_stats *s) {
        const struct {
                const char *name, *help;
                size_t off;
        } v[] = {
                {"dsv32_rank_kv_pages_used", "KV-cache pages held by sequences in each data-parallel rank's pool.",
                 offsetof(struct dsv32_rank_pages, used)},
                {"dsv32_rank_kv_pages_free", "Free KV-cache pages in each data-parallel rank's pool.",
                 offsetof(struct dsv32_rank_pages, free)},
                {"dsv32_rank_kv_pages_cached", "KV-cache pages each data-parallel rank's pool keeps for the prefix cache.",
                 offsetof(struct dsv32_rank_pages, cached)},
        };
        const uint32_t n = s->rank_pools < DSV32_STATS_RANKS_MAX ? s->rank_pools : DSV32_STATS_RANKS_MAX;
        int ret = 0;
        if (n == 0)
                return 0;
        ret = series(b, "dsv32_session_moves_total", "counter",
                     "Times a session moved to another data-parallel rank's KV pool because its own was full.",
                     (double)s->session_moves_total);
        for (size_t i = 0; ret >= 0 && i < sizeof(v) / sizeof(v[0]); i++) {
                ret = put(b, "# HELP %s %s\n# TYPE %s gauge\n", v[i].name, v[i].help, v[i].name);
                for (uint32_t k = 0; ret >= 0 && k < n; k++) {
                        uint32_t x;
                        memcpy(&x, (const char *)&s->rank_pages[k] + v[i].off, sizeof(x));
                        ret = put(b, "%s{rank=\"%u\"} %u\n", v[i].name, k, x);
                }
        }
        return ret;
}

static int daemon_series(struct oai_buf *b, const struct dsv32_stats *s) {
        static const char *states[] = {"loading", "ready", "draining", "failed"};
        int ret = put(b, "# HELP dsv32_state The daemon's state (1 for the current one).\n# TYPE dsv32_state gauge\n");
        for (unsigned i = 0; ret >= 0 && i < 4; i++)
                ret = put(b, "dsv32_state{state=\"%s\"} %d\n", states[i], (unsigned)s->state == i);
        if (ret >= 0)
                ret = put(b, "# HELP dsv32_info The daemon's version, model and backend.\n# TYPE dsv32_info gauge\n"
                             "dsv32_info{version=\"%s\",backend=\"%s\",numerics=\"%s\"} 1\n",
                          s->daemon_version, s->backend, s->numerics);
        double hit = s->prompt_tokens_total ? (double)s->cached_tokens_total / (double)s->prompt_tokens_total : 0;
        const struct {
                const char *name, *type, *help;
                double v;
        } v[] = {
                {"dsv32_uptime_seconds", "gauge", "Time since the daemon started.", (double)s->uptime_ms / 1e3},
                {"dsv32_clients", "gauge", "Connected libdsv32 clients.", s->clients},
                {"dsv32_requests_total", "counter", "Generation requests received.", (double)s->requests_total},
                {"dsv32_requests_running", "gauge", "Requests being decoded.", s->requests_running},
                {"dsv32_requests_prefilling", "gauge", "Requests whose prompt is being prefilled.", s->requests_prefilling},
                {"dsv32_requests_waiting", "gauge", "Requests queued for admission.", s->requests_waiting},
                {"dsv32_requests_parked", "gauge", "Requests parked for KV-cache pages.", s->requests_parked},
                {"dsv32_prompt_tokens_total", "counter", "Prompt tokens of all requests.", (double)s->prompt_tokens_total},
                {"dsv32_prefilled_tokens_total", "counter", "Prompt tokens run through the model (reused ones excluded).",
                 (double)s->prefilled_tokens_total},
                {"dsv32_cached_tokens_total", "counter", "Prompt tokens reused from session KV caches.",
                 (double)s->cached_tokens_total},
                {"dsv32_cache_hit_ratio", "gauge", "Share of prompt tokens reused from session KV caches.", hit},
                {"dsv32_generated_tokens_total", "counter", "Tokens generated.", (double)s->generated_tokens_total},
                {"dsv32_steps_total", "counter", "Engine steps run.", (double)s->steps_total},
                {"dsv32_prefill_tokens_per_second", "gauge", "Recent prefill throughput.", s->prefill_tokens_per_s},
                {"dsv32_decode_tokens_per_second", "gauge", "Recent decode throughput.", s->decode_tokens_per_s},
                {"dsv32_kv_pages", "gauge", "KV-cache pages in the pool.", (double)s->kv_pages_total},
                {"dsv32_kv_pages_used", "gauge", "KV-cache pages in use.", (double)s->kv_pages_used},
                {"dsv32_kv_pages_cached", "gauge", "KV-cache pages no request holds, kept for the prefix cache.",
                 (double)s->kv_pages_cached},
                {"dsv32_kv_page_tokens", "gauge", "Tokens per KV-cache page.", (double)s->kv_page_tokens},
                {"dsv32_sessions", "gauge", "Open KV-cache sessions.", s->sessions},
                {"dsv32_sessions_pinned", "gauge", "Pinned sessions.", s->sessions_pinned},
                {"dsv32_session_kv_pages", "gauge", "KV-cache pages held by sessions.", (double)s->session_pages},
                {"dsv32_sessions_evicted_total", "counter", "Times an idle session's KV cache was evicted.",
                 (double)s->sessions_evicted},
                {"dsv32_resident_memory_bytes", "gauge", "The daemon's resident memory.", (double)s->rss_bytes},
        };
        for (size_t i = 0; ret >= 0 && i < sizeof(v) / sizeof(v[0]); i++)
                ret = series(b, v[i].name, v[i].type, v[i].help, v[i].v);
        if (ret >= 0)
                ret = rank_series(b, s);
        return ret;
}

int oai_metrics_text(const struct oai_config *cfg, struct oai_buf *out) {
        dsv32_client *c = NULL;
        struct dsv32_stats s = {0};
        struct oai_error e;
        bool up = oai_connect(cfg, &c, &e) >= 0 && dsv32_stats(c, &s) >= 0;
        dsv32_disconnect(c);

        int ret = series(out, "dsv32_up", "gauge", "1 when dsv32d answered STATS.", up);
        if (ret >= 0 && up)
                ret = daemon_series(out, &s);

        pthread_mutex_lock(&m.lock);
        uint64_t http[N_STATUSES + 1];
        memcpy(http, m.http, sizeof(http));
        struct hist ttft = m.ttft, per_token = m.per_token;
        uint64_t gens = m.generations, pt = m.prompt_tokens, ct = m.completion_tokens;
        pthread_mutex_unlock(&m.lock);

        if (ret >= 0)
                ret = put(out, "# HELP dsv32_openai_http_responses_total HTTP responses of the gateway by status.\n"
                               "# TYPE dsv32_openai_http_responses_total counter\n");
        for (size_t i = 0; ret >= 0 && i <= N_STATUSES; i++) {
                if (i < N_STATUSES)
                        ret = put(out, "dsv32_openai_http_responses_total{code=\"%u\"} %llu\n", statuses[i],
                                  (unsigned long long)http[i]);
                else
                        ret = put(out, "dsv32_openai_http_responses_total{code=\"other\"} %llu\n",
                                  (unsigned long long)http[i]);
        }
        if (ret >= 0)
                ret = series(out, "dsv32_openai_generations_total", "counter", "Generations the gateway finished.",
                             (double)gens);
        if (ret >= 0)
                ret = series(out, "dsv32_openai_prompt_tokens_total", "counter", "Prompt tokens of those generations.",
                             (double)pt);
        if (ret >= 0)
                ret = series(out, "dsv32_openai_completion_tokens_total", "counter",
                             "Tokens generated for the gateway's clients.", (double)ct);
        if (ret >= 0)
                ret = hist_put(out, "dsv32_openai_time_to_first_token_seconds",
                               "From the request to its first streamed token.", &ttft);
        if (ret >= 0)
                ret = hist_put(out, "dsv32_openai_time_per_output_token_seconds",
                               "Streamed generations: time between the first and the last token per token.",
                               &per_token);
        return ret;
}
