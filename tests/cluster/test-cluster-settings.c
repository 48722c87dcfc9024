/* The cluster settings of dsv32d (daemon/server/settings.c): their defaults, the checks
 * across settings (dsv_config_check), each one in --help and in dsv32d(8), and dsv32d's
 * refusals at start of nodes > 1 with what it cannot do yet (another backend than cpu,
 * several ranks per node: exit 2, saying so). Serving: tests/cluster/daemon-nodes.sh. */
#include "config.h"

#include <fcntl.h>
#include <sys/wait.h>

#include "daemon/server/settings.h"
#include "daemon/util.h"
#include "tests/check.h"

static const char *const cluster_settings[] = {"nodes",           "node-rank",         "coordinator",
                                               "cluster-peers",   "cluster-heartbeat-ms", "cluster-timeout-ms",
                                               "cluster-join-timeout", "mpi-server"};

static void expect_check(struct dsv_server_config *c, const char *want, const char *what) {
        char err[256] = "";
        int r = dsv_config_check(c, err, sizeof(err));
        if (!want)
                CHECK(r == 0, "%s: accepted (got %d: %s)", what, r, err);
        else
                CHECK(r == -EINVAL && strstr(err, want), "%s: refused with \"%s\" (got %d: %s)", what, want, r, err);
}

static void set(struct dsv_server_config *c, const char *k, const char *v) {
        char err[256];
        REQUIRE(dsv_config_set(c, k, v, err, sizeof(err)) == 0, "%s = %s: %s", k, v, err);
}

/* Runs dsv32d with args; its stderr in *err; the exit status. */
static int run_daemon(char *const argv[], char **err) {
        char path[] = "/tmp/dsv32-cluster-settings.XXXXXX";
        int fd = mkstemp(path), st = -1;
        pid_t pid;
        fflush(NULL);
        pid = fork();
        if (pid == 0) {
                dup2(fd, 2);
                dup2(fd, 1);
                execv(argv[0], argv);
                _exit(127);
        }
        waitpid(pid, &st, 0);
        close(fd);
        if (dsv_read_file(path, 1 << 20, err, NULL) < 0)
                *err = strdup("");
        unlink(path);
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

int main(void) {
        struct dsv_server_config c;
        const char *b = getenv("top_builddir"), *s = getenv("top_srcdir");
        char daemon[600], man[600];
        _cleanup_free_ char *help = NULL, *mantext = NULL, *out = NULL;
        char err[256];

        REQUIRE(dsv_config_init(&c) == 0, "dsv_config_init");
        CHECK(c.nodes == 1 && c.node_rank == 0 && c.coordinator[0] == 0 && c.cluster_heartbeat_ms == 1000 &&
                      c.cluster_timeout_ms == 10000 && c.cluster_join_timeout_s == 600,
              "defaults: one host, heartbeat 1 s, timeout 10 s, join 600 s");
        expect_check(&c, NULL, "one host");
        set(&c, "nodes", "2");
        expect_check(&c, "coordinator must be node 0's HOST:PORT", "two hosts without a coordinator");
        set(&c, "coordinator", "10.0.0.1");
        expect_check(&c, "coordinator must be node 0's HOST:PORT", "a coordinator without a port");
        set(&c, "coordinator", "10.0.0.1:29500");
        expect_check(&c, NULL, "two hosts with a coordinator");
        set(&c, "node-rank", "2");
        expect_check(&c, "node-rank 2: must be below nodes (2)", "node-rank 2 of 2");
        set(&c, "node_rank", "1"); /* the file's spelling */
        set(&c, "cluster-heartbeat-ms", "6000");
        expect_check(&c, "at least two heartbeats", "a timeout of less than two heartbeats");
        CHECK(dsv_config_set(&c, "nodes", "0", err, sizeof(err)) == -EINVAL && strstr(err, "1..1024"), "nodes 0: %s", err);
        CHECK(dsv_config_set(&c, "cluster-heartbeat-ms", "5", err, sizeof(err)) == -EINVAL, "a 5 ms heartbeat: %s", err);
        dsv_config_free(&c);

        snprintf(daemon, sizeof(daemon), "%s/dsv32d", b && *b ? b : ".");
        snprintf(man, sizeof(man), "%s/man/dsv32d.8", s && *s ? s : ".");
        {
                char *argv[] = {daemon, "--help", NULL};
                CHECK(run_daemon(argv, &help) == 0, "dsv32d --help");
        }
        CHECK(dsv_read_file(man, 1 << 20, &mantext, NULL) == 0, "cannot read %s", man);
        for (size_t i = 0; i < ARRAY_SIZE(cluster_settings); i++) {
                char opt[64], manopt[96];
                snprintf(opt, sizeof(opt), "--%s ", cluster_settings[i]);
                CHECK(help && strstr(help, opt), "%s is in dsv32d --help", opt);
                /* groff spells a dash \- */
                size_t k = 0;
                for (const char *p = cluster_settings[i]; *p && k + 3 < sizeof(manopt); p++) {
                        if (*p == '-')
                                manopt[k++] = '\\';
                        manopt[k++] = *p;
                }
                manopt[k] = 0;
                CHECK(mantext && strstr(mantext, manopt), "%s is in dsv32d(8)", manopt);
        }
        {
                char *argv[] = {daemon,   "--config",      "/dev/null", "--nodes", "2", "--coordinator", "127.0.0.1:29500",
                                "--backend", "cuda", NULL};
                int st = run_daemon(argv, &out);
                CHECK(st == 2 && strstr(out, "nodes 2: the nodes are CPU ranks so far"),
                      "dsv32d --nodes 2 --backend cuda exits 2 saying why (exit %d: %s)", st, out);
        }
        {
                char *argv[] = {daemon, "--config", "/dev/null", "--nodes",    "2",     "--coordinator", "127.0.0.1:29500",
                                "--ranks", "2", "--parallel", "ep,dp", NULL};
                free(out);
                int st = run_daemon(argv, &out);
                CHECK(st == 2 && strstr(out, "several ranks on several nodes is not implemented yet"),
                      "dsv32d --nodes 2 --ranks 2 exits 2 saying why (exit %d: %s)", st, out);
        }
        {
                char *argv[] = {daemon, "--config", "/dev/null", "--nodes", "2", "--node-rank", "3", NULL};
                free(out);
                int st = run_daemon(argv, &out);
                CHECK(st == 2 && strstr(out, "node-rank 3"), "dsv32d --node-rank 3 of 2 exits 2 (exit %d: %s)", st, out);
        }
        return test_result("test-cluster-settings");
}
