/* The dsv32 command line as scripts and people use it, against a real daemon on the tiny
 * model: options anywhere and unknown ones refused; --json output; exit codes and
 * messages for a closed pipe, a full disk, Ctrl-C, a daemon that stops mid-stream and a
 * refused request; chat's defaults under a low max-tokens-limit, a failed turn that does
 * not end the conversation, /bye, a conversation resumed with --session, its private
 * session closed on SIGHUP; session list; the -v summary on its own line. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client/dsv32.h"
#include "tests/ipc/harness.h"

static struct h_daemon d, d2;
static char home[400];

/* ------------------------------------------------------------------ running dsv32 */

struct run {
        pid_t pid;
        int out_fd; /* read end of stdout when piped, else -1 */
        int in_fd;  /* write end of stdin when piped, else -1 */
};

/* Starts dsv32 ARGS... with --socket of `dd` at the end. in/out/err: file paths, or NULL
 * for a pipe (stdin, stdout) or the test's stderr. */
static struct run spawn_cli(const struct h_daemon *dd, const char *in, const char *out, const char *err,
                            const char *const *args) {
        const char *argv[48];
        int k = 0, pin[2] = {-1, -1}, pout[2] = {-1, -1};
        struct run r = {.out_fd = -1, .in_fd = -1};

        argv[k++] = h_prog("dsv32");
        for (int i = 0; args[i] && k < 44; i++)
                argv[k++] = args[i];
        argv[k++] = "--socket";
        argv[k++] = dd->socket;
        argv[k] = NULL;
        REQUIRE((in || pipe2(pin, O_CLOEXEC) == 0) && (out || pipe2(pout, O_CLOEXEC) == 0), "pipe");
        r.pid = fork();
        REQUIRE(r.pid >= 0, "fork");
        if (r.pid == 0) {
                int fd;
                if (in && (fd = open(in, O_RDONLY)) >= 0)
                        dup2(fd, 0);
                else if (!in)
                        dup2(pin[0], 0);
                if (out && (fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644)) >= 0)
                        dup2(fd, 1);
                else if (!out)
                        dup2(pout[1], 1);
                if (err && out && !strcmp(err, out))
                        dup2(1, 2); /* one file: one offset */
                else if (err && (fd = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0644)) >= 0)
                        dup2(fd, 2);
                setenv("HOME", home, 1);
                unsetenv("XDG_STATE_HOME");
                unsetenv("DSV32_SOCKET");
                execv(argv[0], (char *const *)argv);
                _exit(127);
        }
        if (!in) {
                close(pin[0]);
                r.in_fd = pin[1];
        }
        if (!out) {
                close(pout[1]);
                r.out_fd = pout[0];
        }
        return r;
}

static int wait_rc(struct run *r) {
        int st;
        if (r->in_fd >= 0)
                close(r->in_fd);
        if (r->out_fd >= 0)
                close(r->out_fd);
        REQUIRE(waitpid(r->pid, &st, 0) == r->pid, "waitpid");
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static char *slurp(const char *path) {
        static char buf[8][1 << 16];
        static int k;
        char *b = buf[k++ % 8];
        FILE *f = fopen(path, "re");
        size_t n = f ? fread(b, 1, sizeof(buf[0]) - 1, f) : 0;
        if (f)
                fclose(f);
        b[n] = 0;
        return b;
}

static const char *tmp(const char *name) {
        static char buf[16][400];
        static int k;
        char *p = buf[k++ % 16];
        snprintf(p, 400, "%s/%s", h_tmpdir(), name);
        return p;
}

static void write_file(const char *path, const char *s, size_t n) {
        FILE *f = fopen(path, "we");
        REQUIRE(f && fwrite(s, 1, n, f) == n, "write %s", path);
        fclose(f);
}

/* Runs dsv32 to the end with stdin from `input` (NULL: /dev/null); stdout and stderr land
 * in tmp files named after `tag`; returns the exit status. */
static int run_cli(const char *tag, const char *input, size_t input_len, const char *const *args, char **out, char **err) {
        char o[64], e[64], i[64];
        struct run r;
        int rc;
        snprintf(o, sizeof(o), "%s.out", tag);
        snprintf(e, sizeof(e), "%s.err", tag);
        snprintf(i, sizeof(i), "%s.in", tag);
        write_file(tmp(i), input ? input : "", input ? input_len : 0);
        r = spawn_cli(&d, tmp(i), tmp(o), tmp(e), args);
        rc = wait_rc(&r);
        *out = slurp(tmp(o));
        *err = slurp(tmp(e));
        return rc;
}

static int count(const char *s, const char *needle) {
        int n = 0;
        for (const char *p = s; (p = strstr(p, needle)); p += strlen(needle))
                n++;
        return n;
}

/* Reads from fd until n bytes came (or 10 s passed); returns how many. */
static size_t read_some(int fd, char *buf, size_t n) {
        size_t got = 0;
        uint64_t t0 = h_now_ns();
        while (got < n && h_now_ns() - t0 < 10000000000ull) {
                struct pollfd p = {.fd = fd, .events = POLLIN};
                ssize_t k;
                if (poll(&p, 1, 100) <= 0)
                        continue;
                k = read(fd, buf + got, n - got);
                if (k <= 0)
                        break;
                got += (size_t)k;
        }
        return got;
}

static uint64_t generated_total(void) {
        struct dsv32_connect_opts o = {.struct_size = sizeof(o), .socket_path = d.socket};
        struct dsv32_stats s = {0};
        dsv32_client *c = NULL;
        REQUIRE(dsv32_connect(&o, &c) == 0 && dsv32_stats(c, &s) == 0, "stats: %s", dsv32_last_error(NULL));
        dsv32_disconnect(c);
        return s.generated_tokens_total;
}

/* ------------------------------------------------------------------ tests */

static void test_options(void) {
        char *out, *err;
        int rc;
        {
                static const char *const a[] = {"status", "--bogus", NULL};
                rc = run_cli("bogus", NULL, 0, a, &out, &err);
                CHECK(rc == 2 && strstr(err, "unknown option --bogus"), "status --bogus: exit %d, %s", rc, err);
        }
        {
                /* --socket comes after the command (spawn_cli appends it) and must be used */
                static const char *const a[] = {"status", "--json", NULL};
                rc = run_cli("status-json", NULL, 0, a, &out, &err);
                CHECK(rc == 0 && out[0] == '{' && count(out, "\n") == 1 && strstr(out, "\"state\":\"ready\"") &&
                              strstr(out, "\"kv_pages_total\":"),
                      "status --json: exit %d, '%s' %s", rc, out, err);
        }
        {
                static const char *const a[] = {"status", "extra", NULL};
                rc = run_cli("status-extra", NULL, 0, a, &out, &err);
                CHECK(rc == 2 && strstr(err, "unexpected argument 'extra'"), "status extra: exit %d, %s", rc, err);
        }
        {
                static const char *const a1[] = {"tokenize", "hi", "there", "--bos", NULL};
                static const char *const a2[] = {"tokenize", "--bos", "hi", "there", NULL};
                char o1[256];
                rc = run_cli("tok1", NULL, 0, a1, &out, &err);
                snprintf(o1, sizeof(o1), "%s", out);
                CHECK(rc == 0 && strncmp(o1, "0,", 2) == 0, "tokenize hi there --bos: exit %d, '%s' %s", rc, o1, err);
                rc = run_cli("tok2", NULL, 0, a2, &out, &err);
                CHECK(rc == 0 && strcmp(o1, out) == 0, "--bos after the words differs: '%s' vs '%s'", o1, out);
        }
        {
                static const char *const a[] = {"generate", "--tokens", "0, 5 6", "--max-tokens", "4", "--ignore-eos", "-v",
                                                "--json", NULL};
                const char *last;
                rc = run_cli("gen-json", NULL, 0, a, &out, &err);
                last = strstr(out, "{\"event\":\"done\"");
                CHECK(rc == 0 && last && strstr(last, "\"finish\":\"length\"") && strstr(last, "\"completion_tokens\":4") &&
                              count(out, "{\"event\":\"tokens\"") >= 1 && count(out, "\n") == count(out, "{\"event\""),
                      "generate --json: exit %d, '%s' %s", rc, out, err);
                CHECK(strstr(err, "[length: 3 prompt + 4 generated") && !strstr(err, "reused"),
                      "-v after the command: '%s'", err);
        }
        {
                static const char *const a[] = {"detokenize", "99999", NULL};
                rc = run_cli("detok", NULL, 0, a, &out, &err);
                CHECK(rc == 1 && strstr(err, "99999") && strstr(err, "vocabulary") && !out[0], "detokenize 99999: exit %d, %s",
                      rc, err);
        }
        {
                static const char *const a[] = {"detokenize", "300", "301,,", "302", NULL};
                rc = run_cli("detok2", NULL, 0, a, &out, &err);
                CHECK(rc == 2, "detokenize 300 301,, 302: exit %d", rc);
        }
        {
                static const char *const a[] = {"--version", NULL};
                rc = run_cli("version", NULL, 0, a, &out, &err);
                CHECK(rc == 0 && strncmp(out, "dsv32 " PACKAGE_VERSION, 6 + strlen(PACKAGE_VERSION)) == 0, "--version: %s", out);
        }
        {
                /* the -v summary on a line of its own, and no session reuse without a session */
                static const char *const a[] = {"generate", "--max-tokens", "5", "--ignore-eos", "-v", "Hello", NULL};
                const char *path = tmp("glued.out");
                struct run r = spawn_cli(&d, "/dev/null", path, path, a);
                rc = wait_rc(&r);
                out = slurp(path);
                CHECK(rc == 0 && strstr(out, "\n[length: ") && !strstr(out, "session"), "generate -v, one file: '%s'", out);
        }
        fprintf(stderr, "options: unknown refused, --socket/--bos/-v after the command, --json, detokenize range\n");
}

static void test_write_errors(void) {
        static const char *const a[] = {"generate", "--tokens", "0,5", "--max-tokens", "280", "--ignore-eos", NULL};
        char buf[32];
        uint64_t before;
        struct run r;
        int rc;

        r = spawn_cli(&d, "/dev/null", "/dev/full", tmp("full.err"), a);
        rc = wait_rc(&r);
        CHECK(rc == 5 && strstr(slurp(tmp("full.err")), "write error"), "generate > /dev/full: exit %d, %s", rc,
              slurp(tmp("full.err")));

        before = generated_total();
        r = spawn_cli(&d, "/dev/null", NULL, tmp("pipe.err"), a);
        CHECK(read_some(r.out_fd, buf, 20) == 20, "no output to read");
        close(r.out_fd); /* | head -c 20 */
        r.out_fd = -1;
        rc = wait_rc(&r);
        CHECK(rc == 5 && strstr(slurp(tmp("pipe.err")), "write error"), "generate | head -c 20: exit %d, %s", rc,
              slurp(tmp("pipe.err")));
        CHECK(generated_total() - before < 280, "the request went on after the reader left: %llu tokens generated",
              (unsigned long long)(generated_total() - before));
        fprintf(stderr, "write errors: /dev/full and a closed pipe exit 5 (the closed pipe after %llu of 280 tokens)\n",
                (unsigned long long)(generated_total() - before));
}

static void test_signals(void) {
        static const char *const a[] = {"generate", "--tokens", "0,5", "--max-tokens", "280", "--ignore-eos", NULL};
        char buf[64];
        struct run r;
        int rc;

        r = spawn_cli(&d, "/dev/null", NULL, tmp("int.err"), a);
        CHECK(read_some(r.out_fd, buf, 10) == 10, "no output before Ctrl-C");
        kill(r.pid, SIGINT);
        while (read(r.out_fd, buf, sizeof(buf)) > 0)
                ;
        rc = wait_rc(&r);
        CHECK(rc == 130 && strstr(slurp(tmp("int.err")), "interrupted") && strstr(slurp(tmp("int.err")), "cancelled"),
              "Ctrl-C during generate: exit %d, %s", rc, slurp(tmp("int.err")));
        fprintf(stderr, "signals: Ctrl-C during generate exits 130\n");
}

static int count_sessions(const char *prefix) {
        struct dsv32_connect_opts o = {.struct_size = sizeof(o), .socket_path = d.socket};
        struct dsv32_session_entry v[64];
        dsv32_client *c = NULL;
        int n, k = 0;
        REQUIRE(dsv32_connect(&o, &c) == 0, "connect");
        n = dsv32_session_list(c, v, 64, NULL);
        REQUIRE(n >= 0, "session list: %s", dsv32_last_error(c));
        for (int i = 0; i < n; i++)
                k += strncmp(v[i].name, prefix, strlen(prefix)) == 0;
        dsv32_disconnect(c);
        return k;
}

static void test_chat(void) {
        char *out, *err, path[512], input[8192];
        size_t n;
        int rc;
        {
                /* the daemon's max-tokens-limit (300) is below chat's default (1024) */
                static const char *const a[] = {"chat", "--json", NULL};
                rc = run_cli("chat-limit", "hi\n", 3, a, &out, &err);
                CHECK(rc == 0 && count(out, "\"event\":\"done\"") == 1, "chat under a low limit: exit %d, %s %s", rc, out, err);
        }
        {
                static const char *const a[] = {"chat", "--help", NULL};
                rc = run_cli("chat-help", NULL, 0, a, &out, &err);
                CHECK(rc == 0 && strstr(out, "default 1024") && strstr(out, "default 0.6") && !strstr(out, "generate [PROMPT"),
                      "chat --help: %s", out);
        }
        {
                /* a line that is not UTF-8 and one the daemon refuses (over max-prompt-bytes)
                 * are reported by line number; the chat goes on; /bye ends it */
                static const char *const a[] = {"chat", "--json", "--max-tokens", "4", NULL};
                n = (size_t)snprintf(input, sizeof(input), "hi\n\xff\xfe oops\n");
                memset(input + n, 'x', 5000);
                n += 5000;
                n += (size_t)snprintf(input + n, sizeof(input) - n, "\nbye there\n/bye\nnever sent\n");
                rc = run_cli("chat-fail", input, n, a, &out, &err);
                CHECK(rc == 0 && count(out, "\"event\":\"done\"") == 2, "chat with failed turns: exit %d, %d replies: %s", rc,
                      count(out, "\"event\":\"done\""), err);
                CHECK(strstr(err, "line 2 is not valid UTF-8") && strstr(err, "line 3 was not answered") &&
                              strstr(err, "max-prompt-bytes"),
                      "failed turns must be reported by line: %s", err);
                CHECK(count(out, "\"event\":\"error\"") == 1, "one error event (line 3): %s", out);
        }
        {
                /* resumed conversation */
                static const char *const a[] = {"chat", "--session", "talk", "--json", "--max-tokens", "4", NULL};
                static const char *const list[] = {"session", "list", NULL};
                static const char *const close[] = {"session", "close", "talk", NULL};
                unsigned p1 = 0, p2 = 0;
                const char *q;
                rc = run_cli("talk1", "hello\n", 6, a, &out, &err);
                q = strstr(out, "\"prompt_tokens\":");
                CHECK(rc == 0 && q && sscanf(q, "\"prompt_tokens\":%u", &p1) == 1, "chat --session talk: exit %d, %s", rc, err);
                rc = run_cli("talk2", "hello\n", 6, a, &out, &err);
                q = strstr(out, "\"prompt_tokens\":");
                CHECK(rc == 0 && q && sscanf(q, "\"prompt_tokens\":%u", &p2) == 1, "chat --session talk again: exit %d", rc);
                CHECK(p2 > p1 + 4, "the second chat did not send the first conversation: %u prompt tokens, first %u", p2, p1);
                snprintf(path, sizeof(path), "%s/.local/state/dsv32/chat/talk.jsonl", home);
                CHECK(count(slurp(path), "\"role\":") == 4 && count(slurp(path), "\"role\":\"assistant\"") == 2,
                      "transcript: %s", slurp(path));
                rc = run_cli("list", NULL, 0, list, &out, &err);
                CHECK(rc == 0 && strstr(out, "talk") && strstr(out, "chat transcript"), "session list: %s %s", out, err);
                rc = run_cli("close", NULL, 0, close, &out, &err);
                CHECK(rc == 0 && access(path, F_OK) < 0, "session close talk: exit %d, transcript still there: %s", rc, err);
                fprintf(stderr, "chat: --session resumed (prompt %u tokens, then %u), transcript closed with the session\n", p1,
                        p2);
        }
        {
                /* the private session is closed when SIGHUP ends the chat */
                static const char *const a[] = {"chat", "--max-tokens", "4", NULL};
                struct run r = spawn_cli(&d, NULL, NULL, tmp("hup.err"), a);
                char buf[64];
                CHECK(write(r.in_fd, "hi\n", 3) == 3, "write to chat");
                CHECK(read_some(r.out_fd, buf, 2) == 2, "no reply");
                usleep(200000);
                CHECK(count_sessions("chat-") == 1, "the chat's private session is not there");
                kill(r.pid, SIGHUP);
                rc = wait_rc(&r);
                CHECK(rc == 129 && strstr(slurp(tmp("hup.err")), "session was closed"), "chat on SIGHUP: exit %d, %s", rc,
                      slurp(tmp("hup.err")));
                CHECK(count_sessions("chat-") == 0, "the private session outlived the chat");
        }
        fprintf(stderr, "chat: defaults under the limit, failed turns, /bye, resume, SIGHUP\n");
}

static void test_daemon_stops(void) {
        static const char *const a[] = {"generate", "--tokens", "0,5", "--max-tokens", "280", "--ignore-eos", NULL};
        char buf[16];
        struct run r = spawn_cli(&d2, "/dev/null", NULL, tmp("stop.err"), a);
        int rc;
        CHECK(read_some(r.out_fd, buf, 8) == 8, "no output");
        kill(d2.pid, SIGTERM);
        while (read(r.out_fd, buf, sizeof(buf)) > 0)
                ;
        rc = wait_rc(&r);
        CHECK(rc == 3 && strstr(slurp(tmp("stop.err")), "dsv32d"), "the daemon stopped mid-stream: exit %d, '%s'", rc,
              slurp(tmp("stop.err")));
        fprintf(stderr, "daemon stop mid-stream: exit 3, %s", slurp(tmp("stop.err")));
}

int main(void) {
        static const char *const args[] = {"--max-tokens-limit", "300", "--max-prompt-bytes", "4096", NULL};
        static const char *const args2[] = {"--stop-timeout", "0", NULL};
        h_init("cli", 300);
        snprintf(home, sizeof(home), "%s/home", h_tmpdir());
        mkdir(home, 0700);
        h_daemon_start(&d, args, NULL);
        h_daemon_start(&d2, args2, NULL);
        test_options();
        test_write_errors();
        test_signals();
        test_chat();
        test_daemon_stops();
        return test_result("test-cli");
}
