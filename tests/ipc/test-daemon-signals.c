/* dsv32d and its supervisor: sd_notify checked with a listener on NOTIFY_SOCKET (STATUS
 * while loading, READY=1 only once the model answers, WATCHDOG=1 at about half of
 * WATCHDOG_USEC, STOPPING=1 on SIGTERM), SIGTERM draining (a request in flight completes,
 * new connections are refused, exit status 0; with stop-timeout 0 the request ends with
 * DONE "shutdown"), and SIGHUP reloading the reloadable settings from the config file
 * (and only those). */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client/dsv32.h"
#include "tests/ipc/harness.h"

static struct h_daemon d1, d2, d3, d4;

static dsv32_client *connect_to(struct h_daemon *d) {
        struct dsv32_connect_opts o = {.struct_size = sizeof(o), .socket_path = d->socket};
        dsv32_client *c = NULL;
        CHECK(dsv32_connect(&o, &c) == 0, "connect: %s", dsv32_last_error(NULL));
        return c;
}

static void test_notify(void) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        char env_sock[400], path[300], buf[4096];
        const char *env[] = {env_sock, "WATCHDOG_USEC=400000", NULL};
        uint64_t t_ready = 0, t_prev_wd = 0, t0 = h_now_ns();
        int fd, n_wd = 0, n_status = 0, st;
        bool ready = false, stopping = false, extend = false, bad_interval = false;

        snprintf(path, sizeof(path), "%s/notify", h_tmpdir());
        CHECK(strlen(path) < sizeof(sa.sun_path), "path too long");
        memcpy(sa.sun_path, path, strlen(path) + 1);
        snprintf(env_sock, sizeof(env_sock), "NOTIFY_SOCKET=%s", path);
        fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0, "bind %s", path);
        h_daemon_spawn(&d1, NULL, env);
        while (h_now_ns() - t0 < 15000000000ull && !(ready && n_wd >= 4)) {
                struct pollfd p = {.fd = fd, .events = POLLIN};
                ssize_t n;
                if (poll(&p, 1, 200) <= 0)
                        continue;
                n = recv(fd, buf, sizeof(buf) - 1, 0);
                if (n <= 0)
                        continue;
                buf[n] = 0;
                for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
                        uint64_t now = h_now_ns();
                        if (!strcmp(line, "READY=1") && !ready) {
                                dsv32_client *c;
                                struct dsv32_stats s;
                                ready = true;
                                t_ready = now;
                                /* READY means resident: the very first client finds the model loaded */
                                c = connect_to(&d1);
                                CHECK(dsv32_stats(c, &s) == 0 && s.state == DSV32_STATE_READY && s.weight_bytes > 0,
                                      "READY=1 before the model was resident (state %d)", s.state);
                                dsv32_disconnect(c);
                        } else if (!strcmp(line, "WATCHDOG=1")) {
                                if (t_prev_wd && (now - t_prev_wd < 100000000ull || now - t_prev_wd > 400000000ull))
                                        bad_interval = true;
                                if (n_wd > 0 || t_prev_wd == 0)
                                        t_prev_wd = now;
                                n_wd++;
                        } else if (!strncmp(line, "STATUS=", 7)) {
                                n_status++;
                                if (!ready)
                                        CHECK(strstr(line, "Loading"), "STATUS before READY: %s", line);
                        } else if (!strncmp(line, "EXTEND_TIMEOUT_USEC=", 20)) {
                                extend = true;
                        }
                }
        }
        CHECK(ready, "no READY=1 within 15 s");
        CHECK(n_status >= 1, "no STATUS= line");
        CHECK(n_wd >= 4, "%d WATCHDOG=1 pings", n_wd);
        CHECK(!bad_interval, "WATCHDOG=1 intervals outside 100..400 ms for WATCHDOG_USEC=400000");
        fprintf(stderr, "notify: READY after %.0f ms, %d watchdog pings, %d status lines, extend %d\n",
                (t_ready - t0) / 1e6, n_wd, n_status, extend);
        kill(d1.pid, SIGTERM);
        t0 = h_now_ns();
        while (h_now_ns() - t0 < 10000000000ull && !stopping) {
                struct pollfd p = {.fd = fd, .events = POLLIN};
                ssize_t n;
                if (poll(&p, 1, 200) <= 0)
                        continue;
                n = recv(fd, buf, sizeof(buf) - 1, 0);
                if (n > 0) {
                        buf[n] = 0;
                        stopping = strstr(buf, "STOPPING=1") != NULL;
                }
        }
        CHECK(stopping, "no STOPPING=1 after SIGTERM");
        waitpid(d1.pid, &st, 0);
        d1.pid = 0;
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status 0x%x after SIGTERM", st);
        close(fd);
}

struct counter {
        int n;
        int signalled;
        pid_t pid;
};

static int count_and_term(void *ud, const int32_t *t, size_t n, const char *text, size_t len) {
        struct counter *c = ud;
        c->n += (int)n;
        if (!c->signalled && c->n >= 5) {
                kill(c->pid, SIGTERM); /* in flight now */
                c->signalled = 1;
        }
        return 0;
}

static void test_drain(void) {
        static const char *const args_grace[] = {"--stop-timeout", "30", NULL};
        static const char *const args_none[] = {"--stop-timeout", "0", NULL};
        int32_t prompt[] = {0, 9, 8, 7};
        struct dsv32_request q = {.struct_size = sizeof(q), .tokens = prompt, .n_tokens = 4, .max_tokens = 300,
                                  .flags = DSV32_REQ_IGNORE_EOS};
        struct dsv32_result res;
        struct counter cnt = {0};
        dsv32_client *c;
        int st, r;

        /* within the grace period the request completes */
        h_daemon_start(&d2, args_grace, NULL);
        c = connect_to(&d2);
        cnt.pid = d2.pid;
        r = dsv32_generate(c, &q, count_and_term, &cnt, &res);
        CHECK(r == 0 && res.finish == DSV32_FINISH_LENGTH && cnt.n == 300, "drain: %d, finish %d after %d tokens", r,
              res.finish, cnt.n);
        /* new requests on the open connection are refused during the drain, and the
         * listening socket is gone */
        r = dsv32_generate(c, &q, NULL, NULL, NULL);
        CHECK(r == -ESHUTDOWN || r == -ECONNRESET, "a request during the drain: %d", r);
        dsv32_disconnect(c);
        for (int i = 0; i < 100 && d2.pid; i++) {
                if (waitpid(d2.pid, &st, WNOHANG) == d2.pid) {
                        d2.pid = 0;
                        break;
                }
                usleep(20000);
        }
        CHECK(d2.pid == 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "SIGTERM: exit status 0x%x", st);
        CHECK(access(d2.socket, F_OK) < 0, "the socket file is left behind");

        /* stop-timeout 0: the request is ended with DONE "shutdown" */
        h_daemon_start(&d3, args_none, NULL);
        c = connect_to(&d3);
        cnt = (struct counter){.pid = d3.pid};
        q.max_tokens = 4000;
        r = dsv32_generate(c, &q, count_and_term, &cnt, &res);
        CHECK(r == 0 && res.finish == DSV32_FINISH_SHUTDOWN && cnt.n < 4000, "no grace: %d finish %d after %d tokens", r,
              res.finish, cnt.n);
        dsv32_disconnect(c);
        waitpid(d3.pid, &st, 0);
        d3.pid = 0;
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status 0x%x", st);
        fprintf(stderr, "drain: in-flight request finished within the grace period; cut with 'shutdown' without one\n");
}

static void write_conf(const char *path, const char *text) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        CHECK(fd >= 0 && write(fd, text, strlen(text)) == (ssize_t)strlen(text), "write %s", path);
        close(fd);
}

static void test_reload(void) {
        char conf[400], args_conf[400];
        const char *args[] = {"--config", args_conf, NULL};
        int32_t prompt[] = {0, 3};
        struct dsv32_request q = {.struct_size = sizeof(q), .tokens = prompt, .n_tokens = 2, .max_tokens = 150};
        dsv32_client *c;
        int r;

        snprintf(conf, sizeof(conf), "%s/dsv32d.conf", h_tmpdir());
        snprintf(args_conf, sizeof(args_conf), "%s", conf);
        write_conf(conf, "# test\nmax-tokens-limit = 100\nkv-cache-mb = 64\n");
        h_daemon_start(&d4, args, NULL);
        c = connect_to(&d4);
        r = dsv32_generate(c, &q, NULL, NULL, NULL);
        CHECK(r == -E2BIG, "max_tokens 150 over the limit 100: %d", r);
        write_conf(conf, "max-tokens-limit = 200\nkv-cache-mb = 32\n");
        kill(d4.pid, SIGHUP);
        for (int i = 0; i < 100; i++) {
                r = dsv32_generate(c, &q, NULL, NULL, NULL);
                if (r != -E2BIG)
                        break;
                usleep(20000);
        }
        CHECK(r == 0, "after SIGHUP: %d %s", r, dsv32_last_error(c));
        CHECK(h_file_contains(d4.log, "kv-cache-mb changed from '64' to '32'; it takes effect at the next restart"),
              "a setting that cannot reload must be reported");
        CHECK(h_file_contains(d4.log, "max-tokens-limit = 200 (was 100)"), "the reload is not logged");
        /* a broken file keeps the current settings */
        write_conf(conf, "max-tokens-limit = nonsense\n");
        kill(d4.pid, SIGHUP);
        usleep(300000);
        CHECK(dsv32_generate(c, &q, NULL, NULL, NULL) == 0, "a bad file must not change the settings");
        CHECK(h_file_contains(d4.log, "Reload failed, keeping the current settings"), "the failed reload is not logged");
        dsv32_disconnect(c);
        CHECK(h_daemon_stop(&d4, 10) == 0, "exit status");
        fprintf(stderr, "reload: max-tokens-limit changed live; kv-cache-mb reported as needing a restart\n");
}

int main(void) {
        h_init("signals", 240);
        h_model();
        test_notify();
        test_drain();
        test_reload();
        return 0;
}
