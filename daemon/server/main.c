/* dsv32d: the DeepSeek-V3.2 inference daemon. Parses the command line and the config
 * file (both from the settings table), checks that a model is there, and runs the server. */
#include "config.h"

#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/cluster/fingerprint.h"
#include "daemon/cluster/nodes.h"
#include "daemon/engine/engine.h"
#include "daemon/preset_model.h"
#include "daemon/runtime/ranks.h"
#include "daemon/server/server.h"
#include "ipc/layout.h"
#include "daemon/server/settings.h"
#include "daemon/util.h"

enum {
        ARG_CONFIG = 0x1000,
        ARG_PRINT_CONFIG,
        ARG_PRINT_DEFAULT_CONFIG,
        ARG_VERSION,
        ARG_SETTING, /* + index in the settings table */
};

static void help(void) {
        printf("Usage: dsv32d [--config FILE] [--model DIR] [--socket PATH] [--backend cpu] [options]\n"
               "Serve a DeepSeek-V3.2 checkpoint to local programs over shared memory (libdsv32, dsv32).\n\n"
               "  --config FILE                      settings file (default %s; every setting below\n"
               "                                     may appear there as 'name = value')\n"
               "  --print-config                     print the effective settings and exit\n"
               "  --print-default-config             print the default settings file (every setting\n"
               "                                     commented out at its default) and exit\n"
               "  --version                          print the version and exit\n"
               "  -h, --help                         this text\n\n"
               "Settings (the command line overrides the file):\n",
               DSV_CONFIG_FILE_DEFAULT);
        dsv_config_print_help(stdout);
        printf("\nSignals: SIGTERM drains (finishes in-flight requests, at most stop-timeout seconds) and\n"
               "exits 0; SIGHUP re-reads the settings file and applies the reloadable settings.\n"
               "Without a model, create the tiny test model with\n"
               "  dsv32-mkmodel --preset tiny --out %s\n"
               "See dsv32d(8).\n",
               DSV_MODEL_DIR_DEFAULT);
}

/* 0 when dir holds a config.json, or names a preset (daemon/preset_model.h: weights made on
 * the backend, token ids only); else says what is wrong and what to do, returns 1. */
static int check_model(const char *dir, const char *config_path) {
        char path[4200];
        struct stat st;
        const char *preset;
        if (dsv_preset_model_name(dir, &preset))
                return 0;
        if (stat(dir, &st) == 0 && !S_ISDIR(st.st_mode)) {
                /* --model .../config.json: the directory was meant */
                char parent[4200];
                char *slash;
                snprintf(parent, sizeof(parent), "%s", dir);
                slash = strrchr(parent, '/');
                if (slash && slash != parent)
                        *slash = 0;
                else
                        snprintf(parent, sizeof(parent), "%s", slash ? "/" : ".");
                fprintf(stderr,
                        "dsv32d: --model %s is a file; it takes the checkpoint directory, the one that holds config.json "
                        "and the safetensors shards: --model %s\n",
                        dir, parent);
                return 1;
        }
        snprintf(path, sizeof(path), "%s/config.json", dir);
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
                return 0;
        fprintf(stderr,
                "dsv32d: no model at %s (%s).\n"
                "Point --model (model = ... in %s) at a DeepSeek-V3.2 checkpoint directory, or create the tiny test "
                "model there with:\n"
                "  dsv32-mkmodel --preset tiny --out %s\n",
                dir, access(dir, F_OK) < 0 ? "no such directory" : "it has no config.json", config_path, dir);
        return 1;
}

/* nodes > 1: the bootstrap admits this node (same model fingerprint, same settings below)
 * and the nodes join their MPI group (daemon/cluster/nodes.h). */
static int join_nodes(const struct dsv_server_config *cfg, struct dsv_nodes **ret) {
        uint8_t fp[DSV_FINGERPRINT_BYTES];
        struct dsv_error err = {{0}};
        char config[512], fps[17];
        int r;

        if ((r = dsv_model_fingerprint(cfg->model, fp, &err)) < 0) {
                log_error("Cannot fingerprint the model for the group of nodes: %s", err.msg);
                return r;
        }
        /* what every node must agree on besides the weights: the passes must pair up */
        snprintf(config, sizeof(config), "backend=%s numerics=%s mtp=%s pass-tokens=%d ranks=%d parallel=%s", cfg->backend,
                 cfg->numerics, cfg->mtp, cfg->pass_tokens, cfg->ranks, cfg->parallel);
        const struct dsv_nodes_opts o = {
                .cluster = {.nodes = cfg->nodes,
                            .node_rank = cfg->node_rank,
                            .coordinator = cfg->coordinator,
                            .allowed_peers = cfg->cluster_peers,
                            .fingerprint = fp,
                            .config = config,
                            .heartbeat_ms = cfg->cluster_heartbeat_ms,
                            .timeout_ms = cfg->cluster_timeout_ms,
                            .join_timeout_ms = (int)MIN((int64_t)cfg->cluster_join_timeout_s * 1000, INT32_MAX)},
                .mpi_server = cfg->mpi_server,
                .ep_timeout_ms = DSV_ENGINE_RANK_TIMEOUT_MS,
        };
        log_info("Node %d of %d: model fingerprint %s; %s %s", cfg->node_rank, cfg->nodes, dsv_fingerprint_short(fp, fps),
                 cfg->node_rank == 0 ? "waiting for the other nodes on" : "joining node 0 at", cfg->coordinator);
        if ((r = dsv_nodes_join(&o, ret, &err)) < 0) {
                log_error("Node %d of %d: cannot form the group: %s", cfg->node_rank, cfg->nodes, err.msg);
                return r;
        }
        log_info("Node %d of %d: the group has formed (coordinator %s)", cfg->node_rank, cfg->nodes, cfg->coordinator);
        return 0;
}

/* Node R > 0: no clients; runs node 0's passes with its share of the experts until node 0
 * ends the group (exit 0) or the group fails (exit 1, so that systemd restarts it). */
static int follow(const struct dsv_server_config *cfg, struct dsv_nodes *nodes) {
        struct dsv_runtime_opts ro = {0};
        struct dsv_follow_stats fs = {0};
        struct dsv_error err = {{0}};
        char why[1100] = "";
        int r, st;

        r = dsv_numerics_from_name(cfg->numerics);
        ro.numerics = r < 0 ? DSV_NUMERICS_FAITHFUL : (enum dsv_numerics)r;
        ro.model_dir = cfg->model;
        ro.backend = cfg->backend;
        ro.where = (struct dsv_backend_opts){.threads = cfg->threads};
        ro.mtp = strcmp(cfg->mtp, "on") == 0 ? DSV_MTP_ON : strcmp(cfg->mtp, "off") == 0 ? DSV_MTP_OFF : DSV_MTP_AUTO;
        ro.mtp_auto_not_cpu = true;
        ro.graphs_off = strcmp(cfg->cuda_graphs, "no") == 0;
        ro.max_pass_tokens = cfg->pass_tokens;
        ro.tp = strcmp(cfg->parallel, "ep,tp") == 0;
        ro.dp = strcmp(cfg->parallel, "ep,dp") == 0; /* data-parallel attention, as node 0's engine */
        log_info("Node %d of %d: loading its share of %s; node 0 serves the clients", cfg->node_rank, cfg->nodes, cfg->model);
        r = dsv_rank_group_follow(&ro, dsv_nodes_ep(nodes), dsv_nodes_ctl(nodes), &fs, &err);
        st = dsv_nodes_status(nodes, why, sizeof(why));
        log_info("Node %d of %d: ran %llu tokens of %s in %llu passes; %llu KV page writes from node 0, %llu KV pages sent "
                 "back", cfg->node_rank, cfg->nodes, (unsigned long long)fs.tokens,
                 ro.dp ? "its own sequences" : "node 0's sequences", (unsigned long long)fs.passes,
                 (unsigned long long)fs.writes, (unsigned long long)fs.pages_read);
        if (r >= 0) {
                log_info("Node %d of %d: node 0 ended the group; exiting", cfg->node_rank, cfg->nodes);
                return 0;
        }
        if (st == -ESHUTDOWN) {
                log_info("Node %d of %d: node 0 left the group (%s); exiting", cfg->node_rank, cfg->nodes, why);
                return 0;
        }
        if (st < 0)
                log_error("Node %d of %d: exiting: the group of nodes is broken: %s (%s)", cfg->node_rank, cfg->nodes, why,
                          strerror(-st));
        else
                log_error("Node %d of %d: exiting: %s", cfg->node_rank, cfg->nodes, err.msg[0] ? err.msg : strerror(-r));
        return 1;
}

int main(int argc, char **argv) {
        size_t n_set = dsv_config_n_options();
        _cleanup_free_ struct option *opts = calloc(n_set + 6, sizeof(*opts));
        _cleanup_free_ const char **overrides = calloc(2 * (size_t)argc + 2, sizeof(char *));
        struct dsv_server_config cfg;
        struct dsv_server_args args = {0};
        struct dsv_server *srv = NULL;
        bool print_config = false;
        char err[1024];
        int c, r, ret;

        if (!opts || !overrides) {
                fprintf(stderr, "dsv32d: out of memory\n");
                return 1;
        }
        opts[0] = (struct option){"config", required_argument, NULL, ARG_CONFIG};
        opts[1] = (struct option){"print-config", no_argument, NULL, ARG_PRINT_CONFIG};
        opts[2] = (struct option){"version", no_argument, NULL, ARG_VERSION};
        opts[3] = (struct option){"help", no_argument, NULL, 'h'};
        opts[4] = (struct option){"print-default-config", no_argument, NULL, ARG_PRINT_DEFAULT_CONFIG};
        for (size_t i = 0; i < n_set; i++)
                opts[5 + i] = (struct option){dsv_config_option_name(i), required_argument, NULL, ARG_SETTING + (int)i};
        argv[0] = (char *)"dsv32d"; /* getopt's messages: not the build tree's libtool path */
        while ((c = getopt_long(argc, argv, "h", opts, NULL)) >= 0) {
                if (c == 'h') {
                        help();
                        return 0;
                } else if (c == ARG_VERSION) {
                        printf("dsv32d %s (protocol %d.%d)\n", PACKAGE_VERSION, DSV_IPC_VERSION_MAJOR, DSV_IPC_VERSION_MINOR);
                        return 0;
                } else if (c == ARG_CONFIG) {
                        args.config_path = optarg;
                        args.config_explicit = true;
                } else if (c == ARG_PRINT_CONFIG) {
                        print_config = true;
                } else if (c == ARG_PRINT_DEFAULT_CONFIG) {
                        /* the table's defaults only: no file is read, so the build of the
                         * packaged config file does not depend on the build host's /etc */
                        dsv_config_print_defaults(stdout);
                        return fflush(stdout) == 0 ? 0 : 1;
                } else if (c >= ARG_SETTING && (size_t)(c - ARG_SETTING) < n_set) {
                        overrides[2 * args.n_overrides] = dsv_config_option_name((size_t)(c - ARG_SETTING));
                        overrides[2 * args.n_overrides + 1] = optarg;
                        args.n_overrides++;
                } else {
                        fprintf(stderr, "Try 'dsv32d --help'.\n");
                        return 2;
                }
        }
        if (optind != argc) {
                fprintf(stderr, "dsv32d: unexpected argument '%s' (try --help)\n", argv[optind]);
                return 2;
        }
        args.overrides = overrides;
        if (!args.config_path)
                args.config_path = DSV_CONFIG_FILE_DEFAULT;
        if (dsv_config_init(&cfg) < 0) {
                fprintf(stderr, "dsv32d: out of memory\n");
                return 1;
        }
        r = dsv_config_load_file(&cfg, args.config_path, err, sizeof(err));
        if (r < 0 && !(r == -ENOENT && !args.config_explicit)) {
                fprintf(stderr, "dsv32d: %s\n", err);
                dsv_config_free(&cfg);
                return 1;
        }
        for (size_t i = 0; i < args.n_overrides; i++)
                if (dsv_config_set(&cfg, overrides[2 * i], overrides[2 * i + 1], err, sizeof(err)) < 0) {
                        fprintf(stderr, "dsv32d: --%s\n", err);
                        dsv_config_free(&cfg);
                        return 2;
                }
        if (print_config) {
                dsv_config_print(&cfg, stdout);
                dsv_config_free(&cfg);
                return 0;
        }
        if (dsv_config_check(&cfg, err, sizeof(err)) < 0) {
                fprintf(stderr, "dsv32d: %s\n", err);
                dsv_config_free(&cfg);
                return 2;
        }
        if (check_model(cfg.model, args.config_path)) {
                dsv_config_free(&cfg);
                return 1;
        }
        log_info("dsv32d %s starting (pid %d): model %s, backend %s", PACKAGE_VERSION, (int)getpid(), cfg.model, cfg.backend);
        if (cfg.nodes > 1) {
                /* Open MPI starts threads of its own: they must not take the signals the server
                 * reads from its signalfd (a SIGTERM they took would end the process at once) */
                sigset_t mask;
                sigemptyset(&mask);
                sigaddset(&mask, SIGTERM);
                sigaddset(&mask, SIGINT);
                sigaddset(&mask, SIGHUP);
                pthread_sigmask(SIG_BLOCK, &mask, NULL);
                if ((r = join_nodes(&cfg, &args.nodes)) < 0) {
                        dsv_config_free(&cfg);
                        return 1;
                }
                if (cfg.node_rank > 0) {
                        /* no event loop here: SIGTERM and SIGINT end the process (this thread
                         * takes them, the only one that has them unblocked) */
                        pthread_sigmask(SIG_UNBLOCK, &mask, NULL);
                        ret = follow(&cfg, args.nodes);
                        /* The group is over: the bootstrap's thread joined, then leave at once,
                         * without freeing the MPI communicators. Tearing MPI down among peers
                         * that are leaving or gone (freeing the communicators, Open MPI's exit
                         * handlers and progress thread) twice crashed a follower under heavy
                         * load after its last log line (SIGSEGV at address 0, exit 139 instead
                         * of 0); the kernel releases the sockets and memory. */
                        dsv_nodes_leave(args.nodes);
                        dsv_config_free(&cfg);
                        fflush(NULL);
                        _exit(ret);
                }
        }
        r = dsv_server_new(&cfg, &args, &srv);
        if (r < 0) {
                dsv_nodes_free(args.nodes);
                dsv_config_free(&cfg);
                return 1;
        }
        ret = dsv_server_run(srv);
        dsv_server_free(srv);
        dsv_nodes_free(args.nodes);
        return ret;
}
