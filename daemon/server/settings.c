/* The settings table and everything derived from it (see config.h). */
#include "config.h"

#include "daemon/server/settings.h"

#include <ctype.h>
#include <stddef.h>
#include <strings.h>

#include "daemon/runtime/ranks.h"
#include "daemon/util.h"

enum opt_type {
        OPT_STRING,
        OPT_INT,
        OPT_MODE, /* octal file mode */
        OPT_ENUM, /* string from a fixed list */
};

struct dsv_config_option {
        const char *name;
        enum opt_type type;
        size_t offset;
        const char *def;
        long min, max;
        bool reloadable;
        const char *choices; /* OPT_ENUM: "a|b|c"; OPT_INT: a word that means 0 ("auto") */
        const char *help;
};

#define OPT(n, t, field, d, lo, hi, rl, ch, h) {n, t, offsetof(struct dsv_server_config, field), d, lo, hi, rl, ch, h}

static const struct dsv_config_option options[] = {
        OPT("model", OPT_STRING, model, DSV_MODEL_DIR_DEFAULT, 0, 4096, false, NULL,
            "checkpoint directory (config.json, *.safetensors), or preset:NAME (random weights, token ids only)"),
        OPT("socket", OPT_STRING, socket, DSV_SOCKET_DEFAULT, 1, 107, false, NULL,
            "Unix socket path, used when not socket-activated"),
        OPT("socket-group", OPT_STRING, socket_group, "", 0, 64, false, NULL,
            "group owning a socket dsv32d creates itself (empty: the daemon's)"),
        OPT("socket-mode", OPT_MODE, socket_mode, "0660", 0, 0777, false, NULL, "mode of a socket dsv32d creates itself"),
        OPT("backend", OPT_ENUM, backend, "cpu", 0, 0, false, "cpu|cuda|auto",
            "compute backend (cuda: the dsv32-backend-cuda.so plugin; auto: cuda when it finds a GPU and runs the whole model, else cpu)"),
        OPT("threads", OPT_INT, threads, "0", 0, 1024, false, NULL, "CPU backend threads (0: all cores)"),
        OPT("ranks", OPT_INT, ranks, "1", 1, 256, false, NULL,
            "ranks in this process (1: one): CPU ranks as threads over the in-process communicator (backend cpu), each "
            "holding its share of the model as the layout (parallel) says; the threads are split between them; output "
            "is one rank's (ep,dp: bit for bit; ep,tp: the same greedy tokens, logits within summation order)"),
        OPT("parallel", OPT_STRING, parallel, "", 0, 32, false, NULL,
            "layout of the ranks (needed when ranks > 1): ep,dp: routed experts split over the ranks in contiguous "
            "blocks, each rank loading only its own; dense layers and lm_head whole on every rank; attention "
            "data-parallel: each request and its session placed on one rank, whose own KV pool holds its pages (over "
            "nodes too, each node a rank, when every node has parallel ep,dp; without it nodes replicate attention); "
            "ep,tp: the same experts, and attention heads (the ranks must divide them), the dense layers' and shared "
            "expert's intermediate dimension and lm_head's vocabulary split over the ranks too, each rank loading only "
            "its shares (the MLA latent, KV cache and indexer stay replicated: they are per token); logits within "
            "summation order of one rank's"),
        OPT("numerics", OPT_ENUM, numerics, "faithful", 0, 0, false, "faithful|exact",
            "faithful: the reference's bf16/FP8 rounding; exact: fp32 (tests)"),
        OPT("allow-users", OPT_STRING, allow_users, "root", 0, 4096, true, NULL,
            "users (names or uids, comma-separated) allowed to connect; the daemon's own uid always is"),
        OPT("allow-groups", OPT_STRING, allow_groups, "dsv32", 0, 4096, true, NULL,
            "groups (names or gids) whose members may connect (primary or supplementary)"),
        OPT("max-clients", OPT_INT, max_clients, "256", 1, 65536, false, NULL, "connections in total"),
        OPT("max-connections-per-uid", OPT_INT, max_connections_per_uid, "64", 1, 65536, true, NULL,
            "connections of one uid"),
        OPT("max-requests-per-uid", OPT_INT, max_requests_per_uid, "64", 1, 65536, true, NULL,
            "generations in flight of one uid"),
        OPT("max-prompt-bytes", OPT_INT, max_prompt_bytes, "262144", 64, 16 << 20, true, NULL,
            "largest prompt (text bytes, or 4 bytes per token id)"),
        OPT("max-tokens-limit", OPT_INT, max_tokens_limit, "4096", 1, 1 << 20, true, NULL,
            "largest max_tokens a request may ask for"),
        OPT("batch-tokens", OPT_INT, batch_tokens, "256", 1, 1 << 16, true, NULL,
            "token budget of one engine step (decode tokens + prefill chunks)"),
        OPT("max-running", OPT_INT, max_running, "64", 1, 4096, true, NULL, "sequences in one batch"),
        OPT("kv-cache-mb", OPT_INT, kv_cache_mb, "auto", 0, 1 << 24, false, "auto",
            "KV cache pool size in MiB (auto or 0: sized at start for two sequences of the model's longest context, at most a quarter of the free host memory or 90% of the device memory left after the weights)"),
        OPT("pass-tokens", OPT_INT, pass_tokens, "auto", 0, 65536, false, "auto",
            "tokens of one forward pass at most: a step of more tokens runs as several passes with the same results, which bounds the activation memory (auto or 0: the largest power of two, at least 16, whose workspace fits in 1/32 of the weights' bytes; else 16..65536)"),
        OPT("mtp", OPT_ENUM, mtp, "auto", 0, 0, false, "auto|on|off",
            "speculative decoding with the checkpoint's multi-token-prediction layer (greedy output unchanged, sampled output keeps its distribution): on (an error without the layer), off, or auto: on when the checkpoint has it, except on the CPU backend, where a speculative step costs more than it saves"),
        OPT("mtp-draft", OPT_INT, mtp_draft, "1", 1, 8, true, NULL,
            "tokens the MTP layer drafts per step (V3.2 trains one; more chain the layer on its own output and are accepted less often)"),
        OPT("cuda-graphs", OPT_ENUM, cuda_graphs, "yes", 0, 0, false, "yes|no",
            "GPU backends: run each decode step (batches padded to 1, 2, 4, ... 512 sequences) as a graph recorded on the second step of its size and replayed after, instead of launching its kernels one by one (same outputs; no: always one by one, for debugging)"),
        OPT("max-sessions", OPT_INT, max_sessions, "1024", 0, 65536, true, NULL,
            "KV-cache sessions kept in memory, all uids (0: off); at the cap a new one replaces the least recently used idle unpinned one; not saved at shutdown"),
        OPT("session-pin-quota", OPT_INT, session_pin_quota, "4", 0, 65536, true, NULL,
            "pinned sessions (never evicted) one uid may have"),
        OPT("session-name-max", OPT_INT, session_name_max, "64", 1, 64, true, NULL,
            "longest session name, bytes ([A-Za-z0-9._:@+=-])"),
        OPT("session-idle-timeout", OPT_INT, session_idle_timeout_s, "3600", 0, 30 * 86400, true, NULL,
            "seconds after which an idle unpinned session is closed (0: never)"),
        OPT("max-sessions-per-uid", OPT_INT, max_sessions_per_uid, "256", 0, 65536, true, NULL,
            "sessions one uid may keep (0: only max-sessions applies); at the cap its least recently used idle unpinned one is replaced"),
        OPT("prefix-cache", OPT_ENUM, prefix_cache, "yes", 0, 0, true, "yes|no",
            "reuse the KV pages of a prompt prefix computed before (full pages of 64 tokens, content-addressed), whatever request or session computed them"),
        OPT("prefix-cache-share", OPT_ENUM, prefix_cache_share, "no", 0, 0, true, "yes|no",
            "share the prefix cache across uids (no: each uid reuses only its own prefixes; a shared cache lets one user learn by timing whether another sent a prefix, fine for one common system prompt)"),
        OPT("state-directory", OPT_STRING, state_directory, "", 0, 4000, false, NULL,
            "directory where sessions are saved (at stop, every snapshot-interval, on `dsv32 session save`) and restored from at start (empty: $STATE_DIRECTORY, which the unit's StateDirectory= sets; without either, sessions are not kept across restarts)"),
        OPT("snapshot-interval", OPT_INT, snapshot_interval_s, "300", 0, 86400, true, NULL,
            "seconds between saves of the sessions that changed (0: only at stop and on request)"),
        OPT("snapshot-max-mb", OPT_INT, snapshot_max_mb, "0", 0, 1 << 24, false, NULL,
            "disk space the saved sessions may take, MiB (0: no cap); a session that would exceed it is not saved (logged)"),
        OPT("max-ring-kib", OPT_INT, max_ring_kib, "16384", 4, 65536, true, NULL,
            "largest ring a client may ask for, KiB (rounded down to a power of two)"),
        OPT("spin-us", OPT_INT, spin_us, "50", 0, 100000, true, NULL,
            "event loop: microseconds to poll active rings before sleeping"),
        OPT("stop-timeout", OPT_INT, stop_timeout_s, "10", 0, 3600, true, NULL,
            "SIGTERM: seconds to finish in-flight requests before cancelling them"),
        OPT("handshake-timeout-ms", OPT_INT, handshake_timeout_ms, "5000", 10, 600000, true, NULL,
            "a connection must send HELLO within this time"),
        OPT("log-level", OPT_ENUM, log_level, "info", 0, 0, true, "err|warning|notice|info|debug", "log verbosity"),
        OPT("nodes", OPT_INT, nodes, "1", 1, 1024, false, NULL,
            "hosts in the serving group, one dsv32d each (1: this host alone)"),
        OPT("node-rank", OPT_INT, node_rank, "0", 0, 1023, false, NULL,
            "this host's place in the group: 0 coordinates and serves clients, 1..nodes-1 join it"),
        OPT("coordinator", OPT_STRING, coordinator, "", 0, 300, false, NULL,
            "HOST:PORT ([IPv6]:PORT) of node 0's bootstrap port; node 0 listens there (nodes > 1)"),
        OPT("cluster-peers", OPT_STRING, cluster_peers, "", 0, 4096, false, NULL,
            "node 0: hosts (names or addresses, comma-separated) other nodes may join from (empty: any; every node must still "
            "have node 0's model fingerprint and configuration)"),
        OPT("cluster-heartbeat-ms", OPT_INT, cluster_heartbeat_ms, "1000", 10, 60000, false, NULL,
            "interval of the heartbeats between the nodes"),
        OPT("cluster-timeout-ms", OPT_INT, cluster_timeout_ms, "10000", 20, 3600000, false, NULL,
            "a node silent this long is lost; every node reports a lost node within this time plus one heartbeat"),
        OPT("cluster-join-timeout", OPT_INT, cluster_join_timeout_s, "600", 1, 86400, false, NULL,
            "seconds node 0 waits at start for every other node (and a node for node 0)"),
        OPT("mpi-server", OPT_STRING, mpi_server, "", 0, 1000, false, NULL,
            "node 0: the URI (or file:PATH) of a running ompi-server the nodes find each other through (empty: node 0 "
            "starts its own)"),
};

size_t dsv_config_n_options(void) { return ARRAY_SIZE(options); }
const char *dsv_config_option_name(size_t i) { return i < ARRAY_SIZE(options) ? options[i].name : NULL; }

static const struct dsv_config_option *find(const char *name) {
        for (size_t i = 0; i < ARRAY_SIZE(options); i++)
                if (strcmp(options[i].name, name) == 0)
                        return &options[i];
        /* the file may spell keys with underscores */
        for (size_t i = 0; i < ARRAY_SIZE(options); i++) {
                const char *a = options[i].name, *b = name;
                while (*a && (*a == *b || (*a == '-' && *b == '_')))
                        a++, b++;
                if (!*a && !*b)
                        return &options[i];
        }
        return NULL;
}

static bool choice_ok(const char *choices, const char *v) {
        size_t n = strlen(v);
        for (const char *p = choices; *p;) {
                const char *e = strchr(p, '|');
                size_t k = e ? (size_t)(e - p) : strlen(p);
                if (k == n && strncmp(p, v, n) == 0)
                        return true;
                if (!e)
                        break;
                p = e + 1;
        }
        return false;
}

static int set_opt(struct dsv_server_config *c, const struct dsv_config_option *o, const char *value, char *err,
                   size_t errlen) {
        void *field = (char *)c + o->offset;
        long v;
        char *end;

        switch (o->type) {
        case OPT_STRING:
        case OPT_ENUM: {
                char *s;
                if (strlen(value) > (size_t)o->max && o->type == OPT_STRING) {
                        snprintf(err, errlen, "%s: longer than %ld bytes", o->name, o->max);
                        return -EINVAL;
                }
                if (o->type == OPT_STRING && strlen(value) < (size_t)o->min) {
                        snprintf(err, errlen, "%s: must not be empty", o->name);
                        return -EINVAL;
                }
                if (o->type == OPT_ENUM && !choice_ok(o->choices, value)) {
                        snprintf(err, errlen, "%s: '%s' is not one of %s", o->name, value, o->choices);
                        return -EINVAL;
                }
                s = strdup(value);
                if (!s)
                        return -ENOMEM;
                free(*(char **)field);
                *(char **)field = s;
                return 0;
        }
        case OPT_INT:
        case OPT_MODE:
                if (o->type == OPT_INT && o->choices && strcmp(value, o->choices) == 0) {
                        *(int *)field = 0;
                        return 0;
                }
                errno = 0;
                v = strtol(value, &end, o->type == OPT_MODE ? 8 : 10);
                if (errno || end == value || *end || v < o->min || v > o->max) {
                        if (o->type == OPT_MODE)
                                snprintf(err, errlen, "%s: '%s' is not an octal mode in 0..0%lo", o->name, value, o->max);
                        else
                                snprintf(err, errlen, "%s: '%s' is not an integer in %ld..%ld%s%s", o->name, value,
                                         o->min, o->max, o->choices ? " or " : "", o->choices ? o->choices : "");
                        return -EINVAL;
                }
                *(int *)field = (int)v;
                return 0;
        }
        return -EINVAL;
}

int dsv_config_init(struct dsv_server_config *c) {
        char err[256];
        memset(c, 0, sizeof(*c));
        for (size_t i = 0; i < ARRAY_SIZE(options); i++) {
                int r = set_opt(c, &options[i], options[i].def, err, sizeof(err));
                if (r < 0) {
                        dsv_config_free(c);
                        return r;
                }
        }
        return 0;
}

void dsv_config_free(struct dsv_server_config *c) {
        for (size_t i = 0; i < ARRAY_SIZE(options); i++)
                if (options[i].type == OPT_STRING || options[i].type == OPT_ENUM) {
                        char **p = (char **)((char *)c + options[i].offset);
                        free(*p);
                        *p = NULL;
                }
}

int dsv_config_set(struct dsv_server_config *c, const char *name, const char *value, char *err, size_t errlen) {
        const struct dsv_config_option *o = find(name);
        if (!o) {
                snprintf(err, errlen, "unknown setting '%s'", name);
                return -ENOENT;
        }
        return set_opt(c, o, value, err, errlen);
}

/* ranks and parallel (daemon/runtime/ranks.h has the layouts) */
static int check_ranks(const struct dsv_server_config *c, char *err, size_t errlen) {
        const char *why;
        if (c->parallel[0] && dsv_parallel_layout_check(c->parallel, &why) < 0) {
                snprintf(err, errlen, "parallel %s: %s", c->parallel, why);
                return -EINVAL;
        }
        if (c->ranks == 1)
                return 0;
        if (!c->parallel[0]) {
                snprintf(err, errlen, "ranks %d: needs a layout: parallel = ep,dp (--parallel ep,dp) or ep,tp", c->ranks);
                return -EINVAL;
        }
        if (strcmp(c->backend, "cpu") != 0) {
                snprintf(err, errlen,
                         "ranks %d: the ranks are CPU ranks so far (threads over the in-process communicator): use backend "
                         "cpu, or ranks 1 with backend %s",
                         c->ranks, c->backend);
                return -EINVAL;
        }
        if (c->nodes > 1) {
                snprintf(err, errlen, "ranks %d: several ranks on several nodes is not implemented yet", c->ranks);
                return -EINVAL;
        }
        return 0;
}

int dsv_config_check(const struct dsv_server_config *c, char *err, size_t errlen) {
        int r;
        if ((r = check_ranks(c, err, errlen)) < 0)
                return r;
        if (c->pass_tokens > 0 && c->pass_tokens < DSV_MODEL_MIN_PASS_TOKENS) {
                snprintf(err, errlen, "pass-tokens %d: must be auto (0) or %d..65536", c->pass_tokens,
                         DSV_MODEL_MIN_PASS_TOKENS);
                return -EINVAL;
        }
        if (c->node_rank >= c->nodes) {
                snprintf(err, errlen, "node-rank %d: must be below nodes (%d)", c->node_rank, c->nodes);
                return -EINVAL;
        }
        if (c->nodes > 1) {
                const char *colon = strrchr(c->coordinator, ':');
                if (!c->coordinator[0] || !colon || colon == c->coordinator || !colon[1]) {
                        snprintf(err, errlen, "nodes %d: coordinator must be node 0's HOST:PORT, not '%s'", c->nodes,
                                 c->coordinator);
                        return -EINVAL;
                }
                if (strcmp(c->backend, "cpu") != 0) {
                        snprintf(err, errlen, "nodes %d: the nodes are CPU ranks so far (Open MPI between the hosts): use "
                                 "backend cpu", c->nodes);
                        return -EINVAL;
                }
                if (c->cluster_timeout_ms < 2 * c->cluster_heartbeat_ms) {
                        snprintf(err, errlen, "cluster-timeout-ms %d: must be at least two heartbeats (cluster-heartbeat-ms %d)",
                                 c->cluster_timeout_ms, c->cluster_heartbeat_ms);
                        return -EINVAL;
                }
        }
        return 0;
}

static char *strip(char *s) {
        char *e;
        while (isspace((unsigned char)*s))
                s++;
        e = s + strlen(s);
        while (e > s && isspace((unsigned char)e[-1]))
                *--e = 0;
        return s;
}

int dsv_config_load_file(struct dsv_server_config *c, const char *path, char *err, size_t errlen) {
        _cleanup_free_ char *text = NULL;
        size_t len;
        int r, lineno = 0;
        char *line, *next;

        {
                /* stdio rather than a size from fstat: /dev/null (no settings) is fine too */
                _cleanup_fclose_ FILE *f = fopen(path, "re");
                size_t cap = 1 << 20;
                if (!f) {
                        r = dsv_negerrno();
                        snprintf(err, errlen, "cannot read %s: %s", path, strerror(-r));
                        return r;
                }
                text = malloc(cap + 1);
                if (!text)
                        return -ENOMEM;
                len = fread(text, 1, cap + 1, f);
                if (ferror(f) || len > cap) {
                        snprintf(err, errlen, "cannot read %s: %s", path, len > cap ? "larger than 1 MiB" : "read error");
                        return -EINVAL;
                }
                text[len] = 0;
        }
        if (memchr(text, 0, len)) {
                snprintf(err, errlen, "%s: contains a NUL byte", path);
                return -EINVAL;
        }
        /* not strtok: it would skip empty lines, and the line numbers in errors would drift */
        for (line = text; line; line = next) {
                char *eq, *key, *val, e2[256];
                next = strchr(line, '\n');
                if (next)
                        *next++ = 0;
                lineno++;
                line = strip(line);
                if (!*line || *line == '#' || *line == ';' || *line == '[')
                        continue;
                eq = strchr(line, '=');
                if (!eq) {
                        snprintf(err, errlen, "%s:%d: expected 'name = value'", path, lineno);
                        return -EINVAL;
                }
                *eq = 0;
                key = strip(line);
                val = strip(eq + 1);
                /* a value ends at " #" (a trailing comment); a quoted value at its closing quote,
                 * after which only a comment may follow */
                if (val[0] == '"') {
                        char *q = strchr(val + 1, '"'), *rest;
                        if (!q) {
                                snprintf(err, errlen, "%s:%d: %s: the value has no closing quote", path, lineno, key);
                                return -EINVAL;
                        }
                        *q = 0;
                        rest = strip(q + 1);
                        if (*rest && *rest != '#') {
                                snprintf(err, errlen, "%s:%d: %s: unexpected '%s' after the closing quote (a comment starts with #)",
                                         path, lineno, key, rest);
                                return -EINVAL;
                        }
                        val++;
                } else {
                        for (char *h = strchr(val, '#'); h; h = strchr(h + 1, '#'))
                                if (h == val || isspace((unsigned char)h[-1])) {
                                        *h = 0;
                                        val = strip(val);
                                        break;
                                }
                }
                r = dsv_config_set(c, key, val, e2, sizeof(e2));
                if (r < 0) {
                        snprintf(err, errlen, "%s:%d: %s", path, lineno, e2);
                        return -EINVAL;
                }
        }
        return 0;
}

static bool opt_equal(const struct dsv_config_option *o, const struct dsv_server_config *a,
                      const struct dsv_server_config *b) {
        const void *fa = (const char *)a + o->offset, *fb = (const char *)b + o->offset;
        if (o->type == OPT_STRING || o->type == OPT_ENUM)
                return strcmp(*(char *const *)fa, *(char *const *)fb) == 0;
        return *(const int *)fa == *(const int *)fb;
}

static void opt_format(const struct dsv_config_option *o, const struct dsv_server_config *c, char *buf, size_t n) {
        const void *f = (const char *)c + o->offset;
        if (o->type == OPT_STRING || o->type == OPT_ENUM)
                snprintf(buf, n, "%s", *(char *const *)f);
        else if (o->type == OPT_MODE)
                snprintf(buf, n, "0%o", (unsigned)*(const int *)f);
        else if (o->choices && *(const int *)f == 0)
                snprintf(buf, n, "%s", o->choices);
        else
                snprintf(buf, n, "%d", *(const int *)f);
}

int dsv_config_apply_reload(struct dsv_server_config *cur, const struct dsv_server_config *next) {
        int changed = 0;
        for (size_t i = 0; i < ARRAY_SIZE(options); i++) {
                const struct dsv_config_option *o = &options[i];
                char a[512], b[512];
                if (opt_equal(o, cur, next))
                        continue;
                opt_format(o, cur, a, sizeof(a));
                opt_format(o, next, b, sizeof(b));
                if (!o->reloadable) {
                        log_warning("Reload: %s changed from '%s' to '%s'; it takes effect at the next restart", o->name, a, b);
                        continue;
                }
                if (o->type == OPT_STRING || o->type == OPT_ENUM) {
                        char *s = strdup(*(char *const *)((const char *)next + o->offset));
                        if (!s)
                                continue;
                        free(*(char **)((char *)cur + o->offset));
                        *(char **)((char *)cur + o->offset) = s;
                } else {
                        *(int *)((char *)cur + o->offset) = *(const int *)((const char *)next + o->offset);
                }
                log_notice("Reload: %s = %s (was %s)", o->name, b, a);
                changed++;
        }
        return changed;
}

void dsv_config_print_help(FILE *f) {
        for (size_t i = 0; i < ARRAY_SIZE(options); i++) {
                const struct dsv_config_option *o = &options[i];
                char arg[64], range[64] = "";
                const char *metavar = o->type == OPT_INT    ? "N"
                                      : o->type == OPT_MODE ? "MODE"
                                      : o->type == OPT_ENUM ? o->choices
                                                            : "STR";
                snprintf(arg, sizeof(arg), "--%s %s", o->name, metavar);
                if (o->type == OPT_INT)
                        snprintf(range, sizeof(range), "; %ld..%ld%s%s", o->min, o->max, o->choices ? " or " : "",
                                 o->choices ? o->choices : "");
                fprintf(f, "  %s\n      %s\n      (default: %s%s%s)\n", arg, o->help, *o->def ? o->def : "\"\"", range,
                        o->reloadable ? "; reloads on SIGHUP" : "");
        }
}

void dsv_config_print(const struct dsv_server_config *c, FILE *f) {
        fprintf(f, "# dsv32d settings (file: name = value; command line: --name value)\n");
        for (size_t i = 0; i < ARRAY_SIZE(options); i++) {
                char v[4200];
                opt_format(&options[i], c, v, sizeof(v));
                fprintf(f, "# %s%s\n%s = %s\n", options[i].help, options[i].reloadable ? " (reloadable)" : "", options[i].name,
                        v);
        }
}

/* Writes text as "# " comment lines of at most `width` columns, breaking at spaces. */
static void print_comment(FILE *f, const char *text, size_t width) {
        const char *p = text;
        while (*p) {
                size_t n = strlen(p), cut = n;
                if (n > width - 2) {
                        cut = width - 2;
                        while (cut > 0 && p[cut] != ' ')
                                cut--;
                        if (cut == 0) /* one word longer than a line */
                                cut = strcspn(p, " ");
                }
                fprintf(f, "# %.*s\n", (int)cut, p);
                p += cut;
                while (*p == ' ')
                        p++;
        }
}

void dsv_config_print_defaults(FILE *f) {
        fprintf(f, "# %s: settings of the dsv32d inference daemon.\n#\n", DSV_CONFIG_FILE_DEFAULT);
        print_comment(f,
                      "One setting a line, 'name = value'; lines starting with # are comments. Every "
                      "setting is listed below at its default value, commented out: uncomment a line "
                      "and change its value to override the default. An option --name VALUE on "
                      "dsv32d's command line overrides this file. Settings marked 'reloadable' take "
                      "effect on 'systemctl reload dsv32d' (SIGHUP); the others at the next start "
                      "('systemctl restart dsv32d', which loads the weights again). See dsv32d.conf(5) "
                      "and dsv32d(8).",
                      78);
        fprintf(f, "#\n# Generated from dsv32d's settings table (dsv32d --print-default-config).\n");
        for (size_t i = 0; i < ARRAY_SIZE(options); i++) {
                const struct dsv_config_option *o = &options[i];
                char kind[160];
                switch (o->type) {
                case OPT_INT:
                        snprintf(kind, sizeof(kind), "integer, %ld..%ld", o->min, o->max);
                        break;
                case OPT_MODE:
                        snprintf(kind, sizeof(kind), "octal mode, 0..0%lo", (unsigned long)o->max);
                        break;
                case OPT_ENUM:
                        snprintf(kind, sizeof(kind), "one of %s", o->choices);
                        break;
                default:
                        snprintf(kind, sizeof(kind), "%s", o->min > 0 ? "text, not empty" : "text");
                        break;
                }
                fprintf(f, "\n");
                print_comment(f, o->help, 78);
                fprintf(f, "# (%s; %s)\n#%s =%s%s\n", kind, o->reloadable ? "reloadable" : "restart to change", o->name,
                        *o->def ? " " : "", o->def);
        }
}

int dsv_log_level_from_name(const char *s) {
        static const struct {
                const char *n;
                int l;
        } levels[] = {{"err", DSV_LOG_ERR},
                      {"warning", DSV_LOG_WARNING},
                      {"notice", DSV_LOG_NOTICE},
                      {"info", DSV_LOG_INFO},
                      {"debug", DSV_LOG_DEBUG}};
        for (size_t i = 0; i < ARRAY_SIZE(levels); i++)
                if (strcasecmp(s, levels[i].n) == 0)
                        return levels[i].l;
        return -EINVAL;
}
