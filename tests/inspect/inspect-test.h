/* Helpers shared by the dsv32-inspect tests: checks that count failures, running the built
 * tools with their output captured in files, a scratch directory in the build tree, and
 * reading fields of the tool's JSON by path. Tests exit 0 pass, 1 fail, 77 skip. */
#pragma once

#include "config.h"

#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <math.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "daemon/util.h"
#include "tests/check.h"

#define CHECK_U64(got, want)                                                                         \
        do {                                                                                         \
                unsigned long long g_ = (unsigned long long)(got), w_ = (unsigned long long)(want); \
                CHECK(g_ == w_, "%s = %llu, expected %llu", #got, g_, w_);                         \
        } while (0)

/* relative tolerance for figures published rounded */
#define CHECK_NEAR(got, want, rel)                                                               \
        do {                                                                                     \
                double g_ = (double)(got), w_ = (double)(want);                                 \
                CHECK(fabs(g_ - w_) <= (rel)*fabs(w_), "%s = %.6g, expected %.6g (rel %.3g)", #got, g_, w_, \
                      (double)(rel));                                                            \
        } while (0)

static inline const char *test_builddir(void) {
        const char *d = getenv("top_builddir");
        return d && *d ? d : ".";
}

static inline const char *test_srcdir(void) {
        const char *d = getenv("top_srcdir");
        return d && *d ? d : ".";
}

static inline int rm_rf_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        (void)st;
        (void)flag;
        (void)ftw;
        return remove(path) < 0 && errno != ENOENT ? -1 : 0;
}

static inline void rm_rf(const char *path) { (void)nftw(path, rm_rf_one, 16, FTW_DEPTH | FTW_PHYS); }

/* A fresh scratch directory $top_builddir/tests/inspect/NAME.tmp; caller frees. */
static inline char *test_scratch(const char *name) {
        char *d = NULL;
        if (asprintf(&d, "%s/tests/inspect/%s.tmp", test_builddir(), name) < 0)
                return NULL;
        rm_rf(d);
        if (dsv_mkdir_p(d, 0755) < 0) {
                free(d);
                return NULL;
        }
        return d;
}

/* Runs argv (argv[0] a path), stdout and stderr to the given files; returns the exit status,
 * 128+signal when killed, or -errno when it could not be started. */
static inline int run_capture(char *const argv[], const char *out_path, const char *err_path) {
        pid_t pid;
        int st;
        fflush(NULL);
        pid = fork();
        if (pid < 0)
                return dsv_negerrno();
        if (pid == 0) {
                int o = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                int e = open(err_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                if (o < 0 || e < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0)
                        _exit(127);
                execv(argv[0], argv);
                _exit(127);
        }
        while (waitpid(pid, &st, 0) < 0)
                if (errno != EINTR)
                        return dsv_negerrno();
        if (WIFEXITED(st))
                return WEXITSTATUS(st);
        return 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

/* The text of a file (empty string when unreadable); caller frees. */
static inline char *slurp(const char *path) {
        char *t = NULL;
        if (dsv_read_file(path, 64u << 20, &t, NULL) < 0)
                return strdup("");
        return t;
}

/* A value inside a JSON document by path: "kv.layouts[0].bytes_per_token". */
static inline json_t *jget(json_t *root, const char *path) {
        char buf[256], *save = NULL;
        json_t *v = root;
        snprintf(buf, sizeof(buf), "%s", path);
        for (char *tok = strtok_r(buf, ".", &save); tok && v; tok = strtok_r(NULL, ".", &save)) {
                char *br = strchr(tok, '[');
                if (br)
                        *br = 0;
                if (*tok)
                        v = json_object_get(v, tok);
                while (br && v) {
                        v = json_array_get(v, strtoul(br + 1, NULL, 10));
                        br = strchr(br + 1, '[');
                }
        }
        return v;
}

/* A number at path, or NAN when missing. */
static inline double jnumber(json_t *root, const char *path) {
        json_t *v = jget(root, path);
        return v && json_is_number(v) ? json_number_value(v) : NAN;
}

#define CHECK_JSON_U64(root, path, want)                                                                 \
        do {                                                                                             \
                json_t *v_ = jget((root), (path));                                                       \
                CHECK(v_ && json_is_integer(v_) && (unsigned long long)json_integer_value(v_) ==          \
                                                         (unsigned long long)(want),                     \
                      "JSON %s = %lld, expected %llu", (path), v_ && json_is_integer(v_) ? (long long)json_integer_value(v_) : -1LL, \
                      (unsigned long long)(want));                                                       \
        } while (0)
