/* dsv32d: the DeepSeek-V3.2 inference daemon. Parses the command line and the config
 * file (both from the settings table), checks that a model is there, and runs the server. */
#include "config.h"

#include <getopt.h>
#include <sys/stat.h>

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

/* 0 when dir holds a config.json; else says what is wrong and what to do, returns 1. */
static int check_model(const char *dir, const char *config_path) {
        char path[4200];
        struct stat st;
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
        if (cfg.nodes > 1) {
                /* the bootstrap exists (daemon/cluster); serving a model split over hosts comes with the layouts */
                fprintf(stderr, "dsv32d: nodes %d: serving from several hosts is not in this release yet (one host: nodes = 1)\n",
                        cfg.nodes);
                dsv_config_free(&cfg);
                return 2;
        }
        if (check_model(cfg.model, args.config_path)) {
                dsv_config_free(&cfg);
                return 1;
        }
        log_info("dsv32d %s starting (pid %d): model %s, backend %s", PACKAGE_VERSION, (int)getpid(), cfg.model, cfg.backend);
        r = dsv_server_new(&cfg, &args, &srv);
        if (r < 0) {
                dsv_config_free(&cfg);
                return 1;
        }
        ret = dsv_server_run(srv);
        dsv_server_free(srv);
        return ret;
}
