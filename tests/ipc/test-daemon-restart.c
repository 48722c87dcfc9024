/* Sessions that survive a restart (state-directory): pinned and unpinned sessions, SIGTERM,
 * `session save` on request, a new dsv32d on the same directory, and each session continues exactly as without the
 * restart (its history restored: DONE counts it as cached; greedy output equal to the same
 * prompt without a session). Then the bad cases, each skipped with a log line naming the
 * file while the daemon serves: a flipped byte, a truncated file, snapshots written for other
 * numerics (another model fingerprint and KV layout), and a daemon killed (SIGKILL) in the
 * middle of writing, which leaves the previous snapshot usable. */
#include "config.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client/dsv32.h"
#include "tests/ipc/harness.h"

static char state[400];

static uint32_t gen(dsv32_client *c, const struct h_toks *p, const char *session, struct h_toks *out) {
        struct dsv32_request q = {.struct_size = sizeof(q), .tokens = p->t, .n_tokens = (size_t)p->n, .max_tokens = 12,
                                  .flags = DSV32_REQ_IGNORE_EOS, .session = session};
        struct dsv32_result res;
        out->n = 0;
        CHECK(dsv32_generate(c, &q, h_collect, out, &res) == 0, "generate (session %s): %s", session ? session : "-",
              dsv32_last_error(c));
        return res.usage.cached_tokens;
}

static void extend(struct h_toks *p, const struct h_toks *o, int n_new, uint64_t seed) {
        for (int i = 0; i < o->n; i++)
                p->t[p->n++] = o->t[i];
        for (int i = 0; i < n_new; i++) {
                seed = seed * 6364136223846793005ull + 1442695040888963407ull;
                p->t[p->n++] = 2 + (int32_t)((seed >> 33) % 4000);
        }
}

static void file_of(const char *name, char *buf, size_t cap) { snprintf(buf, cap, "%s/%u-%s.kvs", state, (unsigned)getuid(), name); }

static void start(struct h_daemon *d, const char *const *env) {
        const char *args[] = {"--state-directory", state, "--snapshot-interval", "0", NULL};
        h_daemon_start(d, args, env);
}

int main(void) {
        static const char *const names[3] = {"pinned", "plain", "third"};
        struct h_daemon d;
        struct h_toks p[3], p2[3], out, want[3], o1;
        dsv32_client *c;
        char path[600];

        h_init("restart", 600);
        snprintf(state, sizeof(state), "%s/state", h_tmpdir());

        /* two turns of three conversations, one pinned */
        start(&d, NULL);
        c = h_connect(&d);
        for (int i = 0; i < 3; i++) {
                p[i].n = 0;
                extend(&p[i], &(struct h_toks){.n = 0}, 90 + 10 * i, 7 + (uint64_t)i);
                p[i].t[0] = 0;
                gen(c, &p[i], names[i], &o1);
                p2[i] = p[i];
                extend(&p2[i], &o1, 20, 70 + (uint64_t)i);
                gen(c, &p2[i], names[i], &out);
                /* the third turn's prompt, and its output without a session */
                extend(&p2[i], &out, 15, 700 + (uint64_t)i);
                gen(c, &p2[i], NULL, &want[i]);
        }
        CHECK(dsv32_session_pin(c, "pinned", 1, NULL) == 0, "pin: %s", dsv32_last_error(c));
        /* saved on request (dsv32 session save): the files are there before any stop */
        {
                uint32_t n = 0;
                struct stat st;
                CHECK(dsv32_session_save(c, &n) == 0 && n == 3, "session save: %u sessions: %s", n, dsv32_last_error(c));
                for (int i = 0; i < 3; i++) {
                        file_of(names[i], path, sizeof(path));
                        CHECK(stat(path, &st) == 0 && st.st_size > 256, "no snapshot %s after session save", path);
                }
        }
        dsv32_disconnect(c);
        CHECK(h_daemon_stop(&d, 20) == 0, "dsv32d did not exit 0 on SIGTERM");
        for (int i = 0; i < 3; i++) {
                struct stat st;
                file_of(names[i], path, sizeof(path));
                CHECK(stat(path, &st) == 0 && st.st_size > 256, "no snapshot %s after SIGTERM", path);
        }

        /* restart: every session continues; the history (prompt of turn 2 and its fed-back
         * output) is restored, only the new tokens are prefilled */
        {
                struct h_toks keep;
                struct stat st;
                char copy[700];
                int in, outfd;
                file_of("third", path, sizeof(path));
                snprintf(copy, sizeof(copy), "%s.keep", path);
                /* keep the third session's snapshot for the interrupted-write case */
                in = open(path, O_RDONLY);
                outfd = open(copy, O_WRONLY | O_CREAT | O_TRUNC, 0600);
                REQUIRE(in >= 0 && outfd >= 0 && fstat(in, &st) == 0, "copy");
                char *buf = malloc((size_t)st.st_size);
                REQUIRE(buf && read(in, buf, (size_t)st.st_size) == st.st_size && write(outfd, buf, (size_t)st.st_size) == st.st_size,
                        "copy");
                free(buf);
                close(in);
                close(outfd);
                (void)keep;
        }
        start(&d, NULL);
        CHECK(h_file_contains(d.log, "3 sessions restored"), "the log does not say the sessions were restored");
        c = h_connect(&d);
        for (int i = 0; i < 2; i++) {
                uint32_t cached = gen(c, &p2[i], names[i], &out);
                CHECK(cached > 100 && h_toks_equal(&out, &want[i]), "session %s after the restart: %u cached, output %s", names[i],
                      cached, h_toks_equal(&out, &want[i]) ? "same" : "differs");
        }
        {
                struct dsv32_session_info si;
                CHECK(dsv32_session_open(c, "pinned", 0, &si) == 0 && (si.flags & DSV32_SESSION_PINNED), "still pinned");
        }
        dsv32_disconnect(c);
        CHECK(h_daemon_stop(&d, 20) == 0, "stop");

        /* a flipped byte, a truncated file: skipped, named in the log; the daemon serves */
        {
                int fd;
                file_of("pinned", path, sizeof(path));
                fd = open(path, O_RDWR);
                REQUIRE(fd >= 0, "open %s", path);
                off_t end = lseek(fd, 0, SEEK_END);
                unsigned char b;
                REQUIRE(pread(fd, &b, 1, end - 100) == 1, "read");
                b ^= 0x10;
                REQUIRE(pwrite(fd, &b, 1, end - 100) == 1, "write");
                close(fd);
                file_of("plain", path, sizeof(path));
                REQUIRE(truncate(path, 300) == 0, "truncate");
        }
        start(&d, NULL);
        file_of("pinned", path, sizeof(path));
        CHECK(h_file_contains(d.log, "pinned.kvs skipped: corrupt data"), "no log line for the flipped byte");
        CHECK(h_file_contains(d.log, "plain.kvs skipped: truncated"), "no log line for the truncated file");
        c = h_connect(&d);
        CHECK(gen(c, &p2[0], "pinned", &out) == 0 && h_toks_equal(&out, &want[0]), "a corrupt snapshot: fresh session, same output");
        dsv32_disconnect(c);
        CHECK(h_daemon_stop(&d, 20) == 0, "stop");

        /* snapshots of another model (other numerics: another fingerprint and KV layout) */
        {
                const char *args[] = {"--state-directory", state, "--numerics", "exact", NULL};
                h_daemon_start(&d, args, NULL);
                CHECK(h_file_contains(d.log, "skipped: written for another model"), "no log line for a foreign snapshot");
                c = h_connect(&d);
                CHECK(c != NULL, "the daemon serves");
                dsv32_disconnect(c);
                h_daemon_kill(&d); /* SIGKILL: it writes nothing */
        }

        /* SIGKILL in the middle of a write: the previous snapshot stays whole */
        {
                static const char *const env[] = {"DSV32_TEST_SNAPSHOT_STALL_MS=4000", NULL};
                char copy[700];
                file_of("third", path, sizeof(path));
                snprintf(copy, sizeof(copy), "%s.keep", path);
                REQUIRE(rename(copy, path) == 0, "restore the kept snapshot");
                start(&d, env);
                c = h_connect(&d);
                struct h_toks p4 = p2[2];
                extend(&p4, &want[2], 10, 999);
                gen(c, &p4, "third", &out); /* the session changes: it is written at stop */
                dsv32_disconnect(c);
                kill(d.pid, SIGTERM);
                /* the write waits 4 s before its rename: kill it in between */
                char tmp[700];
                snprintf(tmp, sizeof(tmp), "%s.tmp", path);
                uint64_t t0 = h_now_ns();
                while (access(tmp, F_OK) != 0 && h_now_ns() - t0 < 10000000000ull)
                        usleep(10000);
                CHECK(access(tmp, F_OK) == 0, "no write in progress seen");
                h_daemon_kill(&d);
                start(&d, NULL);
                CHECK(h_file_contains(d.log, "removing a write that did not finish"), "the interrupted write was not cleaned up");
                c = h_connect(&d);
                uint32_t cached = gen(c, &p2[2], "third", &out);
                CHECK(cached > 100 && h_toks_equal(&out, &want[2]), "the previous snapshot after a killed write: %u cached", cached);
                dsv32_disconnect(c);
                CHECK(h_daemon_stop(&d, 20) == 0, "stop");
        }
        fprintf(stderr, "restart: 3 sessions restored and continued as without the restart; flipped byte, truncated, "
                        "foreign and interrupted snapshots skipped with log lines\n");
        return 0;
}
