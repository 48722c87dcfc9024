/* What the parts of the dsv32 command-line client share: the global options, exit codes,
 * connecting and waiting for the daemon, signals, and output that notices write errors
 * (cli_out.c: plain text and one-JSON-object-per-line events). Commands live in cli.c
 * (generate, tokenize, detokenize, status, session, ping, bench) and cli_chat.c (chat and
 * its saved transcripts). */
#pragma once

#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "client/dsv32.h"

/* Exit status (dsv32(1), EXIT STATUS). A signal that stops a command gives 128 + its
 * number (130 for Ctrl-C), after the request was cancelled and a private session closed. */
enum {
        CLI_EXIT_REQUEST = 1,     /* the daemon refused or failed the request */
        CLI_EXIT_USAGE = 2,       /* bad command line */
        CLI_EXIT_UNAVAILABLE = 3, /* no daemon, lost connection, daemon stopped or failed */
        CLI_EXIT_PERM = 4,        /* not allowed to use the daemon */
        CLI_EXIT_OUTPUT = 5,      /* cannot write the output (closed pipe, full disk) */
};

struct cli_globals {
        const char *socket_path; /* --socket, or NULL */
        bool verbose;            /* -v */
        bool json;               /* --json */
};
extern struct cli_globals cli;

/* The options every command takes, anywhere on the line: getopt_long codes. */
enum {
        CLI_OPT_SOCKET = 0x1000,
        CLI_OPT_JSON,
        CLI_OPT_VERSION,
};
#define CLI_GLOBAL_OPTIONS                                                                                         \
        {"socket", required_argument, NULL, CLI_OPT_SOCKET}, {"verbose", no_argument, NULL, 'v'},                  \
                {"help", no_argument, NULL, 'h'}, {"version", no_argument, NULL, CLI_OPT_VERSION}
#define CLI_JSON_OPTION {"json", no_argument, NULL, CLI_OPT_JSON}

/* Handles a global option returned by getopt_long for command `cmd`: 0 when it was one
 * (keep parsing), 1 when the command must stop with *exit_code (--help, --version, or an
 * unknown option, said on stderr), -1 when ch is the command's own. */
int cli_global_option(int ch, const char *cmd, char **argv, int *exit_code);
/* The optstring that goes with CLI_GLOBAL_OPTIONS (errors reported by us, not getopt). */
#define CLI_SHORT_OPTIONS ":hv"
/* The help of one command (`dsv32 CMD --help`), or of all (cmd NULL), on f. */
void cli_usage(FILE *f, const char *cmd);

/* Exit status for a negative errno from libdsv32. */
int cli_exit_for(int err);
/* "dsv32 CMD: WHAT: <the daemon's or library's reason>" on stderr (and a JSON error
 * event on stdout with --json); returns the exit status. */
int cli_fail(dsv32_client *c, int err, const char *cmd, const char *what);
/* Connects (socket from --socket, $DSV32_SOCKET or the default); 0 or an exit status
 * after saying why. */
int cli_connect(const char *cmd, uint32_t sub_bytes, dsv32_client **ret);
/* Waits while the daemon loads its model (a progress line on a terminal); 0 or an exit
 * status after saying why. */
int cli_wait_ready(dsv32_client *c, const char *cmd);

/* Signals that end a command cleanly: SIGINT, SIGTERM, SIGHUP set cli_signal (without
 * SA_RESTART, so a read from the terminal returns). */
extern volatile sig_atomic_t cli_signal;
void cli_catch_signals(void);
/* The exit status and message for a command ended by cli_signal. */
int cli_signal_exit(const char *cmd, const char *what_happened);

/* ---- output (cli_out.c) */
/* Set by generate and chat: every write is flushed at once (streamed text). */
extern bool cli_streaming;
/* Writes to stdout and flushes; false once a write failed (cli_output_failed() then
 * says why): the caller cancels what it was doing. */
bool cli_write(const void *p, size_t n);
bool cli_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
bool cli_output_failed(void);
/* At the end of a command: flushes and closes stdout; on a write error says
 * "dsv32 CMD: write error: ..." and returns CLI_EXIT_OUTPUT, else `code`. */
int cli_finish_output(const char *cmd, int code);

/* JSON (--json): a string from bytes that may not be UTF-8 (invalid sequences become
 * U+FFFD); one compact object per line on stdout (takes the reference); the usage of a
 * finished request as an object. */
json_t *cli_json_text(const char *s, size_t n);
bool cli_json_emit(json_t *o);
/* DONE's usage object: the token counts and times, preemptions and speculative-decoding drafts. */
json_t *cli_json_usage(const struct dsv32_result *res);
/* {"event":"tokens","tokens":[...],"text":"..."} (no text while a character is incomplete) */
json_t *cli_json_tokens(const int32_t *t, size_t n, const char *text, size_t len);
/* {"event":"error","error":"EINVAL","code":22,"message":...}: the object, or emitted */
json_t *cli_json_error_obj(int err, const char *message);
bool cli_json_error(int err, const char *message);
/* Whether n bytes are valid UTF-8 (no overlongs, surrogates or code points past U+10FFFF). */
bool cli_utf8_valid(const char *s, size_t n);

/* Options generate and chat share (cli.c): 0, or CLI_EXIT_USAGE after saying why. */
int cli_opt_max_tokens(const char *cmd, const char *arg, struct dsv32_request *q);
int cli_opt_temperature(const char *cmd, const char *arg, struct dsv32_request *q);
int cli_opt_seed(const char *cmd, const char *arg, struct dsv32_request *q);
/* --schema FILE: the file's JSON schema text into *schema (freed by the caller; a later
 * option replaces it), 0 or CLI_EXIT_USAGE after saying why. */
int cli_opt_schema(const char *cmd, const char *path, char **schema);

/* ---- chat (cli_chat.c) */
int cli_chat(int argc, char **argv);
/* Where `dsv32 chat --session NAME` keeps the conversation: $XDG_STATE_HOME/dsv32/chat/
 * NAME.jsonl, else ~/.local/state/dsv32/chat/NAME.jsonl. 0, or -ENOENT without a home. */
int cli_transcript_path(const char *name, char *buf, size_t n);
