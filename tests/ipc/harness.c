/* See harness.h. */
#include "config.h"

#include "tests/ipc/harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client/dsv32.h"

static char tmpdir[200];
static char model[300];
static struct h_daemon *daemons[16];
static int n_daemons;
static const char *test_name = "test";
static pid_t main_pid;

uint64_t h_now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void rm_rf(const char *path) {
        DIR *d = opendir(path);
        struct dirent *de;
        if (d) {
                while ((de = readdir(d))) {
                        char p[1024];
                        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                                continue;
                        snprintf(p, sizeof(p), "%s/%s", path, de->d_name);
                        rm_rf(p);
                }
                closedir(d);
                rmdir(path);
        } else {
                unlink(path);
        }
}

static void cleanup(void) {
        if (getpid() != main_pid)
                return; /* a forked helper exiting */
        for (int i = 0; i < n_daemons; i++)
                if (daemons[i] && daemons[i]->pid > 0) {
                        kill(daemons[i]->pid, SIGKILL);
                        waitpid(daemons[i]->pid, NULL, 0);
                        daemons[i]->pid = 0;
                }
        if (tmpdir[0] && !getenv("DSV32_TEST_KEEP"))
                rm_rf(tmpdir);
}

static void on_alarm(int sig) {
        static const char msg[] = "FAIL: the test ran past its time limit\n";
        if (write(STDERR_FILENO, msg, sizeof(msg) - 1) < 0) {
                /* nothing */
        }
        for (int i = 0; i < n_daemons; i++)
                if (daemons[i] && daemons[i]->pid > 0)
                        kill(daemons[i]->pid, SIGKILL);
        _exit(1);
}

void h_init(const char *name, unsigned seconds) {
        const char *base = getenv("TMPDIR");
        test_name = name;
        main_pid = getpid();
        snprintf(tmpdir, sizeof(tmpdir), "%s/dsv32-%s-XXXXXX", base && *base ? base : "/tmp", name);
        if (!mkdtemp(tmpdir)) {
                fprintf(stderr, "cannot create %s: %s\n", tmpdir, strerror(errno));
                exit(1);
        }
        atexit(cleanup);
        signal(SIGALRM, on_alarm);
        signal(SIGPIPE, SIG_IGN);
        alarm(seconds);
}

const char *h_tmpdir(void) { return tmpdir; }

const char *h_backend(void) {
        const char *b = getenv("DSV32_TEST_BACKEND");
        return b && *b ? b : NULL;
}

bool h_want(const char *name) {
        const char *only = getenv("DSV32_TEST_ONLY");
        size_t n = strlen(name);
        if (!only || !*only)
                return true;
        for (const char *p = only; *p;) {
                size_t k = strcspn(p, ",");
                if (k == n && !strncmp(p, name, n))
                        return true;
                p += k + (p[k] == ',');
        }
        return false;
}

const char *h_prog(const char *name) {
        static char buf[8][1024];
        static int k;
        const char *b = getenv("top_builddir");
        char *p = buf[k++ % 8];
        snprintf(p, 1024, "%s/%s", b && *b ? b : ".", name);
        return p;
}

static int run_wait(char *const argv[], const char *out_path) {
        pid_t pid = fork();
        int st;
        if (pid < 0)
                return -1;
        if (pid == 0) {
                if (out_path) {
                        int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                        if (fd >= 0)
                                dup2(fd, STDOUT_FILENO);
                }
                execv(argv[0], argv);
                _exit(127);
        }
        if (waitpid(pid, &st, 0) < 0)
                return -1;
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

const char *h_model(void) {
        struct stat st;
        snprintf(model, sizeof(model), "%s/model", tmpdir);
        if (stat(model, &st) == 0)
                return model;
        {
                char *argv[] = {(char *)h_prog("dsv32-mkmodel"), "--preset", "tiny", "--out", model, NULL};
                char out[400];
                snprintf(out, sizeof(out), "%s/mkmodel.out", tmpdir);
                if (run_wait(argv, out) != 0) {
                        fprintf(stderr, "FAIL: dsv32-mkmodel --preset tiny --out %s failed\n", model);
                        exit(1);
                }
        }
        return model;
}

int h_reference(const int32_t *prompt, int n_prompt, int n_gen, int32_t *out, const char *numerics) {
        return h_reference_dump(prompt, n_prompt, n_gen, out, numerics, NULL);
}

int h_reference_dump(const int32_t *prompt, int n_prompt, int n_gen, int32_t *out, const char *numerics,
                     const char *logits_path) {
        char toks[65536], gen[32], path[400];
        size_t off = 0;
        char *argv[14];
        int k = 0, n = 0;
        FILE *f;

        for (int i = 0; i < n_prompt && off < sizeof(toks) - 16; i++)
                off += (size_t)snprintf(toks + off, sizeof(toks) - off, "%s%d", i ? "," : "", prompt[i]);
        snprintf(gen, sizeof(gen), "%d", n_gen);
        snprintf(path, sizeof(path), "%s/ref.out", tmpdir);
        argv[k++] = (char *)h_prog("dsv32-run");
        argv[k++] = "--model";
        argv[k++] = (char *)h_model();
        argv[k++] = "--tokens";
        argv[k++] = toks;
        argv[k++] = "--generate";
        argv[k++] = gen;
        argv[k++] = "--threads";
        argv[k++] = "1";
        argv[k++] = "--numerics";
        argv[k++] = (char *)(numerics ? numerics : "faithful");
        if (logits_path) {
                argv[k++] = "--dump-logits";
                argv[k++] = (char *)logits_path;
        }
        argv[k] = NULL;
        if (run_wait(argv, path) != 0)
                return -1;
        f = fopen(path, "re");
        if (!f)
                return -1;
        while (n < n_gen && fscanf(f, "%d", &out[n]) == 1) {
                n++;
                if (fgetc(f) != ',')
                        break;
        }
        fclose(f);
        return n;
}

void h_daemon_spawn(struct h_daemon *d, const char *const *extra, const char *const *env) {
        static int serial;
        static char empty_conf[300];
        if (!empty_conf[0]) {
                int fd;
                snprintf(empty_conf, sizeof(empty_conf), "%s/empty.conf", tmpdir);
                fd = open(empty_conf, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                if (fd >= 0)
                        close(fd);
        }
        const char *argv[64];
        int k = 0;

        memset(d, 0, sizeof(*d));
        snprintf(d->socket, sizeof(d->socket), "%s/d%d.sock", tmpdir, serial);
        snprintf(d->log, sizeof(d->log), "%s/daemon%d.log", tmpdir, serial);
        serial++;
        argv[k++] = h_prog("dsv32d");
        argv[k++] = "--model";
        argv[k++] = h_model();
        argv[k++] = "--socket";
        argv[k++] = d->socket;
        argv[k++] = "--threads";
        argv[k++] = "1";
        argv[k++] = "--config";
        argv[k++] = empty_conf;
        if (h_backend()) {
                argv[k++] = "--backend";
                argv[k++] = h_backend();
        }
        for (int i = 0; extra && extra[i] && k < 60; i++)
                argv[k++] = extra[i];
        argv[k] = NULL;
        d->pid = fork();
        if (d->pid < 0) {
                fprintf(stderr, "FAIL: fork: %s\n", strerror(errno));
                exit(1);
        }
        if (d->pid == 0) {
                int fd = open(d->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (fd >= 0) {
                        dup2(fd, STDERR_FILENO);
                        dup2(fd, STDOUT_FILENO);
                }
                unsetenv("NOTIFY_SOCKET");
                unsetenv("WATCHDOG_USEC");
                unsetenv("LISTEN_FDS");
                for (int i = 0; env && env[i]; i++)
                        putenv((char *)env[i]);
                execv(argv[0], (char *const *)argv);
                _exit(127);
        }
        if (n_daemons < 16)
                daemons[n_daemons++] = d;
}

/* a daemon started for DSV32_TEST_BACKEND must say it serves from it ("Backend cuda: ...") */
static void check_backend(const struct h_daemon *d) {
        char want[80];
        if (!h_backend())
                return;
        snprintf(want, sizeof(want), "Backend %s: ", h_backend());
        CHECK(h_file_contains(d->log, want), "DSV32_TEST_BACKEND=%s: the daemon's log has no \"%s\"", h_backend(), want);
}

void h_daemon_wait_ready(struct h_daemon *d) {
        uint64_t t0 = h_now_ns();
        for (;;) {
                struct dsv32_connect_opts o = {.struct_size = sizeof(o), .socket_path = d->socket, .timeout_ms = 2000};
                dsv32_client *c = NULL;
                int st;
                if (waitpid(d->pid, &st, WNOHANG) == d->pid) {
                        d->pid = 0;
                        fprintf(stderr, "FAIL: dsv32d exited during startup\n");
                        h_fail();
                }
                if (dsv32_connect(&o, &c) == 0) {
                        struct dsv32_stats s;
                        int r = dsv32_stats(c, &s);
                        dsv32_disconnect(c);
                        if (r == 0 && s.state == DSV32_STATE_READY) {
                                check_backend(d);
                                return;
                        }
                }
                /* generous: a loaded 2-core machine (a sanitizer build, a niced run beside
                 * others) has taken over 20 s to load the tiny model */
                if (h_now_ns() - t0 > 90000000000ull) {
                        fprintf(stderr, "FAIL: dsv32d did not become ready within 90 s\n");
                        h_fail();
                }
                usleep(20000);
        }
}

void h_daemon_start(struct h_daemon *d, const char *const *extra, const char *const *env) {
        h_daemon_spawn(d, extra, env);
        h_daemon_wait_ready(d);
}

int h_daemon_stop(struct h_daemon *d, unsigned seconds) {
        uint64_t t0 = h_now_ns();
        int st;
        if (d->pid <= 0)
                return -1;
        kill(d->pid, SIGTERM);
        while (h_now_ns() - t0 < (uint64_t)seconds * 1000000000ull) {
                if (waitpid(d->pid, &st, WNOHANG) == d->pid) {
                        d->pid = 0;
                        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
                }
                usleep(10000);
        }
        h_daemon_kill(d);
        return -1;
}

void h_daemon_kill(struct h_daemon *d) {
        if (d->pid > 0) {
                kill(d->pid, SIGKILL);
                waitpid(d->pid, NULL, 0);
                d->pid = 0;
        }
}

int h_count_fds(pid_t pid) {
        char p[64];
        DIR *d;
        struct dirent *de;
        int n = 0;
        snprintf(p, sizeof(p), "/proc/%d/fd", (int)pid);
        d = opendir(p);
        if (!d)
                return -1;
        while ((de = readdir(d)))
                if (de->d_name[0] != '.')
                        n++;
        closedir(d);
        return n;
}

long h_rss_kb(pid_t pid) {
        char p[64], line[256];
        long v = -1;
        FILE *f;
        snprintf(p, sizeof(p), "/proc/%d/status", (int)pid);
        f = fopen(p, "re");
        if (!f)
                return -1;
        while (fgets(line, sizeof(line), f))
                if (sscanf(line, "VmRSS: %ld kB", &v) == 1)
                        break;
        fclose(f);
        return v;
}

bool h_file_contains(const char *path, const char *needle) {
        char buf[1 << 16];
        size_t n;
        FILE *f = fopen(path, "re");
        if (!f)
                return false;
        n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = 0;
        return strstr(buf, needle) != NULL;
}

static void dump_logs(void) {
        for (int i = 0; i < n_daemons; i++) {
                char buf[8192];
                size_t n;
                FILE *f = daemons[i] ? fopen(daemons[i]->log, "re") : NULL;
                if (!f)
                        continue;
                fprintf(stderr, "---- %s\n", daemons[i]->log);
                while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
                        fwrite(buf, 1, n, stderr);
                fclose(f);
        }
}

void h_fail(void) {
        dump_logs();
        exit(1);
}

void h_skip(const char *why) {
        fprintf(stderr, "SKIP %s: %s\n", test_name, why);
        exit(77);
}

struct dsv32_client *h_connect(const struct h_daemon *d) {
        struct dsv32_connect_opts o = {.struct_size = sizeof(o), .socket_path = d->socket};
        dsv32_client *c = NULL;
        int r = dsv32_connect(&o, &c);
        CHECK(r == 0, "connect %s: %s", d->socket, dsv32_last_error(NULL));
        return c;
}

int h_collect(void *ud, const int32_t *t, size_t n, const char *text, size_t len) {
        struct h_toks *c = ud;
        for (size_t i = 0; i < n && c->n < (int)(sizeof(c->t) / sizeof(c->t[0])); i++)
                c->t[c->n++] = t[i];
        return 0;
}

bool h_toks_equal(const struct h_toks *a, const struct h_toks *b) {
        return a->n == b->n && !memcmp(a->t, b->t, (size_t)a->n * sizeof(int32_t));
}
