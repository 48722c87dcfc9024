/* Test harness for the daemon tests: a private temporary directory, the tiny model made by
 * dsv32-mkmodel, dsv32d started on a socket inside that directory, and cleanup that runs
 * even when a test fails (atexit, a SIGALRM watchdog, and PR_SET_PDEATHSIG in the daemon so
 * that it dies with the test). Every check prints what it expected and what it found.
 *
 * DSV32_TEST_BACKEND=NAME (e.g. cuda: the emulated plugin of a --with-cuda=emulate build, found
 * through DSV32_BACKEND_PATH) starts every daemon with --backend NAME and fails a daemon whose
 * log does not say it serves from that backend; the references (dsv32-run) stay on the CPU, so
 * the same tests prove the backend serves the CPU's outputs (tests/gpu/test-gpu-ipc.sh).
 * DSV32_TEST_ONLY=a,b runs only the named parts of a test (h_want), so a slow backend runs the
 * parts that matter for it. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

/* a failed check stops the test at once (h_fail cleans up and exits 1) */
#define TEST_ON_FAIL() h_fail()
#include "tests/check.h"

struct h_daemon {
        pid_t pid;
        char socket[300];
        char log[320];
};

/* Creates the temporary directory (and arms a watchdog of `seconds`). */
void h_init(const char *name, unsigned seconds);
const char *h_tmpdir(void);
/* Builds the tiny model once in the temporary directory; returns its path. */
const char *h_model(void);
/* The backend every daemon is started with (DSV32_TEST_BACKEND), NULL for the default. */
const char *h_backend(void);
/* Whether part `name` of the test runs: DSV32_TEST_ONLY unset, or a comma-separated list that
 * names it. */
bool h_want(const char *name);
/* Runs part fn() of a test when h_want("fn") and says how long it took. */
#define H_PART(fn)                                                                                                     \
        do {                                                                                                           \
                if (h_want(#fn)) {                                                                                     \
                        uint64_t h_t0_ = h_now_ns();                                                                   \
                        fn();                                                                                          \
                        fprintf(stderr, "[%s: %.1f s]\n", #fn, (double)(h_now_ns() - h_t0_) / 1e9);                   \
                }                                                                                                      \
        } while (0)
/* Path of a program in the build tree ("dsv32d", "dsv32-run", "dsv32"). */
const char *h_prog(const char *name);
/* Starts dsv32d on the tiny model with extra arguments (NULL-terminated), a fresh socket
 * and its log in the temporary directory; waits until it answers a STATS with state
 * ready. env: extra "NAME=value" entries (NULL-terminated) or NULL. */
void h_daemon_start(struct h_daemon *d, const char *const *extra_args, const char *const *env);
/* Like h_daemon_start but does not wait. */
void h_daemon_spawn(struct h_daemon *d, const char *const *extra_args, const char *const *env);
void h_daemon_wait_ready(struct h_daemon *d);
/* SIGTERM, wait up to `seconds`; returns the exit status (-1 if it had to be killed). */
int h_daemon_stop(struct h_daemon *d, unsigned seconds);
void h_daemon_kill(struct h_daemon *d);
/* Number of open descriptors and VmRSS (kB) of a process. */
int h_count_fds(pid_t pid);
long h_rss_kb(pid_t pid);
/* Prints the daemon log and exits 1. */
void h_fail(void) __attribute__((noreturn));
void h_skip(const char *why) __attribute__((noreturn));
/* Runs dsv32-run (greedy reference) on prompt ids; writes up to n ids to out and returns
 * how many. */
int h_reference(const int32_t *prompt, int n_prompt, int n_gen, int32_t *out, const char *numerics);
/* The same, and dsv32-run writes its logits to logits_path (--dump-logits: a row of
 * vocab_size float32 per prompt position, then one per generated token). */
int h_reference_dump(const int32_t *prompt, int n_prompt, int n_gen, int32_t *out, const char *numerics,
                     const char *logits_path);
bool h_file_contains(const char *path, const char *needle);

/* A client of a daemon (a failed connect fails the test). */
struct dsv32_client;
struct dsv32_client *h_connect(const struct h_daemon *d);
/* Token ids a generation streamed: dsv32_generate's callback with struct h_toks as ud. */
struct h_toks {
        int32_t t[4096];
        int n;
};
int h_collect(void *ud, const int32_t *t, size_t n, const char *text, size_t len);
bool h_toks_equal(const struct h_toks *a, const struct h_toks *b);
uint64_t h_now_ns(void);
