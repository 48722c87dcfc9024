/* dsv32d's settings: one declarative table (settings.c) of name, type, default, bounds, and
 * whether a change takes effect on SIGHUP. The same table parses /etc/dsv32d/dsv32d.conf,
 * turns every setting into a long command-line option (--name VALUE, which overrides the
 * file), prints --help and --print-config, and decides what a reload may change. */
#pragma once

#include <stdbool.h>
#include <stdio.h>

#define DSV_CONFIG_FILE_DEFAULT "/etc/dsv32d/dsv32d.conf"
#define DSV_MODEL_DIR_DEFAULT "/var/lib/dsv32d/model"
#define DSV_SOCKET_DEFAULT "/run/dsv32d/dsv32d.sock"

struct dsv_server_config {
        char *model;
        char *socket;
        char *socket_group;
        int socket_mode;
        char *backend;
        int threads;
        int ranks;      /* CPU ranks in this process */
        char *parallel; /* their layout: "" (one rank) or ep,dp */
        char *numerics;
        char *allow_users;
        char *allow_groups;
        int max_clients;
        int max_connections_per_uid;
        int max_requests_per_uid;
        int max_prompt_bytes;
        int max_tokens_limit;
        int batch_tokens;
        int max_running;
        int kv_cache_mb;
        int pass_tokens; /* tokens of one forward pass at most (0: auto) */
        char *mtp;
        int mtp_draft;
        char *cuda_graphs;
        int max_sessions;
        int session_pin_quota;
        int session_name_max;
        int session_idle_timeout_s;
        int max_sessions_per_uid;
        char *prefix_cache;
        char *prefix_cache_share;
        char *state_directory;
        int snapshot_interval_s;
        int snapshot_max_mb;
        int max_ring_kib;
        int spin_us;
        int stop_timeout_s;
        int handshake_timeout_ms;
        char *log_level;
        /* several hosts (daemon/cluster) */
        int nodes;
        int node_rank;
        char *coordinator;
        char *cluster_peers;
        int cluster_heartbeat_ms;
        int cluster_timeout_ms;
        int cluster_join_timeout_s;
        char *mpi_server;
};

/* Option lookup for main's getopt table. */
struct dsv_config_option;
size_t dsv_config_n_options(void);
const char *dsv_config_option_name(size_t i);

/* Defaults from the table (all strings duplicated). */
int dsv_config_init(struct dsv_server_config *c);
void dsv_config_free(struct dsv_server_config *c);
/* Sets one option from text, validating type and bounds; err gets a reason. */
int dsv_config_set(struct dsv_server_config *c, const char *name, const char *value, char *err, size_t errlen);
/* Checks what single settings cannot: node-rank < nodes, a coordinator HOST:PORT when
 * nodes > 1, a cluster timeout of at least two heartbeats; ranks > 1 with a layout that is
 * implemented (ep,dp), on the cpu backend, on one node. */
int dsv_config_check(const struct dsv_server_config *c, char *err, size_t errlen);
/* Reads `name = value` lines (# comments, blank lines). A missing file is -ENOENT. */
int dsv_config_load_file(struct dsv_server_config *c, const char *path, char *err, size_t errlen);
/* Copies the reloadable settings of `next` into `cur`; logs what changed and, for each
 * setting that differs but cannot change live, that it needs a restart. Returns the number
 * of settings changed. */
int dsv_config_apply_reload(struct dsv_server_config *cur, const struct dsv_server_config *next);
/* --help text of the settings; the effective configuration as a config file. */
void dsv_config_print_help(FILE *f);
void dsv_config_print(const struct dsv_server_config *c, FILE *f);
/* The default settings file: every setting commented out at its default, with its help,
 * type and range, and whether SIGHUP reloads it. The build writes the packaged
 * /etc/dsv32d/dsv32d.conf with it (systemd/local.mk), so the file follows the table. */
void dsv_config_print_defaults(FILE *f);
int dsv_log_level_from_name(const char *s);
