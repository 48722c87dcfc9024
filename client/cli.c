/* dsv32: the command-line client of dsv32d, a thin user of libdsv32's public API. This file
 * has the command table, the options every command shares, connecting, and the commands
 * generate, tokenize, detokenize, status, session, ping and bench ping; chat is in
 * cli_chat.c, checked output and --json in cli_out.c. Exit codes: cli.h and dsv32(1). */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client/cli.h"
#include "ipc/idlist.h"

#define MIN_IDX(a, b) ((a) < (b) ? (a) : (b))
#define GENERATE_DEFAULT_MAX_TOKENS 256

struct cli_globals cli;
volatile sig_atomic_t cli_signal;

/* ------------------------------------------------------------------ help */

static const struct {
        const char *name, *help;
} helps[] = {
        {"generate",
         "  generate [PROMPT...]    complete a prompt (the words, or stdin when none), streaming\n"
         "      --tokens ID,ID,...  the prompt as token ids instead of text (commas and/or spaces)\n"
         "      --max-tokens N      tokens to generate (default 256, or the daemon's\n"
         "                          max-tokens-limit for you when lower)\n"
         "      --temperature T     0 = greedy (default 0)\n"
         "      --top-p P           nucleus sampling, (0, 1] (default 1 = off)\n"
         "      --top-k K           0 = off (default)\n"
         "      --min-p P           [0, 1] (default 0 = off)\n"
         "      --seed N            same seed + same request = same tokens (default: random)\n"
         "      --stop ID,...       extra stop tokens\n"
         "      --stop-string STR   end the output where its text contains STR (repeatable, up to 8;\n"
         "                          STR and what follows is not printed)\n"
         "      --repetition-penalty R  divide positive logits of tokens seen in prompt or output by R,\n"
         "                          multiply negative ones (0, 10], 1 = off)\n"
         "      --frequency-penalty F   subtract F per time a token was generated ([-2, 2])\n"
         "      --presence-penalty P    subtract P once from each token generated ([-2, 2])\n"
         "      --logit-bias ID:BIAS    add BIAS ([-100, 100]) to token ID's logit (repeatable)\n"
         "      --no-bos            text prompt: do not prepend the BOS token\n"
         "      --logprobs N        each token's logprob (the model's raw distribution) and its N\n"
         "                          most likely alternatives (0..20): one line per token,\n"
         "                          ID LOGPROB then ID:LOGPROB for each alternative, instead of\n"
         "                          the text; with --json, \"logprobs\" and \"top_logprobs\" keys\n"
         "      --session NAME      run on a KV-cache session: the daemon keeps this prompt's and\n"
         "                          the output's KV cache, and a later request on NAME prefills\n"
         "                          only what follows the previous prompt (same output as without it)\n"
         "      --reuse-output      also reuse the cache of the tokens the session generated (less\n"
         "                          prefill; the output may differ slightly from a run without it)\n"
         "      --ids               print token ids even when text is available\n"
         "      --no-stream         print everything at the end\n"
         "      --ignore-eos        do not stop at the end-of-sequence token\n"
         "      --priority N        -100..100 (default 0): higher is admitted first and preempted\n"
         "                          last; above 0 only for root or dsv32d's user\n"
         "      --schema FILE       structured output: the output is compact JSON matching the JSON\n"
         "                          schema in FILE ({} for any JSON); it ends at the value's last\n"
         "                          byte (finish stop); any other finish means it was cut short\n"
         "      --json              one JSON object per line: {\"event\":\"tokens\",...} as they come,\n"
         "                          then {\"event\":\"done\",\"finish\":...,\"usage\":{...}}\n"},
        {"chat",
         "  chat                    interactive chat: one message per line, the reply streamed; Ctrl-D,\n"
         "                          /bye, /exit or /quit ends it, /help lists the commands\n"
         "      --system TEXT       system prompt\n"
         "      --max-tokens N      per reply (default 1024, or the daemon's max-tokens-limit when\n"
         "                          lower)\n"
         "      --temperature T     default 0.6\n"
         "      --seed N\n"
         "      --think, --thinking thinking mode: the reasoning is shown dimmed (on a terminal) or\n"
         "                          after \"(thinking) \", then the answer; tool calls the model\n"
         "                          makes are shown as [tool call ID: NAME ARGUMENTS]\n"
         "      --session NAME      a named conversation: its KV cache stays in the daemon's session\n"
         "                          NAME and its text in ~/.local/state/dsv32/chat/NAME.jsonl, so\n"
         "                          'chat --session NAME' later goes on where it stopped ('dsv32\n"
         "                          session close NAME' forgets both)\n"
         "                          default: a private session, closed when the chat ends (also on\n"
         "                          Ctrl-C, SIGTERM, SIGHUP, or when the connection is lost)\n"
         "      --no-session        resend and prefill the whole conversation every turn\n"
         "      --reuse-output      reuse the cache of the replies too (see generate)\n"
         "      --schema FILE       every reply is compact JSON matching the JSON schema in FILE (not\n"
         "                          with --think)\n"
         "      --json              one JSON object per line (with \"turn\"): tokens and done as\n"
         "                          generate --json, and reasoning, content (text), tool_call (index,\n"
         "                          id, name), tool_call_arguments (index, text), tool_call_end,\n"
         "                          parse_error (message, text)\n"},
        {"session",
         "  session open|close|pin|unpin NAME\n"
         "                          make, free, pin (never evict; counts against your quota) or\n"
         "                          unpin a session; close also deletes the chat transcript of NAME.\n"
         "                          Sessions close after an idle timeout; with a state directory\n"
         "                          dsv32d keeps them across restarts\n"
         "  session list [--json]   your sessions: tokens, KV pages, pinned/busy, idle time\n"
         "                          (and the rank holding each, with data-parallel attention)\n"
         "  session save            write your sessions (root: all) to dsv32d's state directory now\n"},
        {"tokenize",
         "  tokenize [TEXT...]      print the token ids of TEXT (or stdin)\n"
         "      --bos               prepend the BOS token\n"},
        {"detokenize", "  detokenize ID...        print the text of token ids (commas and/or spaces)\n"},
        {"status",
         "  status [--json]         daemon, model, memory, clients, sessions, throughput (the\n"
         "                          rates are over the last second of wall time)\n"},
        {"ping", "  ping [--count N]        round trips to the daemon (default 5)\n"},
        {"bench",
         "  bench ping [--count N] [--warmup N]\n"
         "                          ping-pong latency over the shared-memory rings (blocking\n"
         "                          and spin modes) against a Unix socketpair baseline\n"},
};

void cli_usage(FILE *f, const char *cmd) {
        fprintf(f, "Usage: dsv32 [OPTIONS] COMMAND [ARGS...]\nTalk to dsv32d, the local DeepSeek-V3.2 daemon.\n\n");
        fprintf(f, cmd ? "Command:\n" : "Commands:\n");
        for (size_t i = 0; i < sizeof(helps) / sizeof(helps[0]); i++)
                if (!cmd || strcmp(cmd, helps[i].name) == 0)
                        fputs(helps[i].help, f);
        fprintf(f,
                "\nOptions (anywhere on the line; '--' ends the options):\n"
                "  --socket PATH           daemon socket (default $DSV32_SOCKET, else %s)\n"
                "  -v, --verbose           timings and details on stderr\n"
                "  -h, --help              this text (dsv32 COMMAND --help: that command's)\n"
                "  --version               the version of dsv32 and libdsv32\n\n"
                "Exit status: 0 ok, 1 the daemon refused or failed the request, 2 usage, 3 daemon\n"
                "unavailable (not running, connection lost, stopped before the request finished),\n"
                "4 permission denied, 5 write error on the output, 128+N stopped by signal N (130:\n"
                "Ctrl-C; the request is cancelled).\n",
                DSV32_DEFAULT_SOCKET);
}

int cli_global_option(int ch, const char *cmd, char **argv, int *exit_code) {
        switch (ch) {
        case CLI_OPT_SOCKET:
                cli.socket_path = optarg;
                return 0;
        case 'v':
                cli.verbose = true;
                return 0;
        case CLI_OPT_JSON:
                cli.json = true;
                return 0;
        case 'h':
                cli_usage(stdout, cmd);
                *exit_code = 0;
                return 1;
        case CLI_OPT_VERSION:
                printf("dsv32 %s (libdsv32 %s)\n", PACKAGE_VERSION, dsv32_version());
                *exit_code = 0;
                return 1;
        case '?':
                /* a short option in optopt; a long one is the word getopt just passed */
                if (optopt)
                        fprintf(stderr, "dsv32 %s: unknown option -%c (dsv32 %s --help lists them)\n", cmd, optopt, cmd);
                else
                        fprintf(stderr, "dsv32 %s: unknown option %s (dsv32 %s --help lists them)\n", cmd, argv[optind - 1],
                                cmd);
                *exit_code = CLI_EXIT_USAGE;
                return 1;
        case ':':
                if (optopt && optopt < 0x100)
                        fprintf(stderr, "dsv32 %s: option -%c needs a value\n", cmd, optopt);
                else
                        fprintf(stderr, "dsv32 %s: option %s needs a value\n", cmd, argv[optind - 1]);
                *exit_code = CLI_EXIT_USAGE;
                return 1;
        }
        return -1;
}

/* ------------------------------------------------------------------ connecting, errors */

int cli_exit_for(int err) {
        if (err == -EACCES || err == -EPERM)
                return CLI_EXIT_PERM;
        if (err == -ENOENT || err == -ECONNREFUSED || err == -ECONNRESET || err == -ETIMEDOUT || err == -EPROTO ||
            err == -EPROTONOSUPPORT || err == -ESHUTDOWN || err == -EUSERS || err == -ENAMETOOLONG)
                return CLI_EXIT_UNAVAILABLE;
        return CLI_EXIT_REQUEST;
}

int cli_fail(dsv32_client *c, int err, const char *cmd, const char *what) {
        const char *why = dsv32_last_error(c);
        if (!strcmp(why, "no error"))
                why = dsv32_strerror(err);
        fprintf(stderr, "dsv32 %s: %s: %s\n", cmd, what, why);
        if (cli.json)
                cli_json_error(err, why);
        return cli_exit_for(err);
}

int cli_connect(const char *cmd, uint32_t sub_bytes, dsv32_client **ret) {
        struct dsv32_connect_opts o = {.struct_size = sizeof(o), .socket_path = cli.socket_path, .client_name = "dsv32",
                                       .submit_ring_bytes = sub_bytes};
        int r = dsv32_connect(&o, ret);
        if (r < 0) {
                const char *why = dsv32_last_error(NULL);
                if (!strcmp(why, "no error"))
                        why = dsv32_strerror(r);
                fprintf(stderr, "dsv32 %s: %s\n", cmd, why);
                if (cli.json)
                        cli_json_error(r, why);
                return cli_exit_for(r);
        }
        return 0;
}

int cli_wait_ready(dsv32_client *c, const char *cmd) {
        static const char spin[] = "|/-\\";
        bool tty = isatty(STDERR_FILENO), said = false;
        for (unsigned i = 0;; i++) {
                struct dsv32_stats st;
                int r = dsv32_stats(c, &st);
                if (r < 0)
                        return cli_fail(c, r, cmd, "cannot query dsv32d");
                if (st.state == DSV32_STATE_READY)
                        break;
                if (st.state == DSV32_STATE_FAILED) {
                        fprintf(stderr, "dsv32 %s: dsv32d could not load its model (journalctl -u dsv32d says why)\n", cmd);
                        return CLI_EXIT_UNAVAILABLE;
                }
                if (st.state == DSV32_STATE_DRAINING) {
                        fprintf(stderr, "dsv32 %s: dsv32d is shutting down\n", cmd);
                        return CLI_EXIT_UNAVAILABLE;
                }
                if (cli_signal)
                        return cli_signal_exit(cmd, "stopped while waiting for dsv32d to load its model");
                if (tty)
                        fprintf(stderr, "\r%c waiting for dsv32d to load the model: %u.%u%%", spin[i % 4], st.load_permille / 10,
                                st.load_permille % 10);
                else if (!said)
                        fprintf(stderr, "dsv32 %s: waiting for dsv32d to load the model\n", cmd);
                said = true;
                nanosleep(&(struct timespec){.tv_nsec = 100000000}, NULL);
        }
        if (tty && said)
                fprintf(stderr, "\r%60s\r", "");
        return 0;
}

static void on_signal(int sig) { cli_signal = sig; }

void cli_catch_signals(void) {
        struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: fgets on a terminal returns */
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGHUP, &sa, NULL);
}

int cli_signal_exit(const char *cmd, const char *what_happened) {
        int sig = cli_signal;
        fprintf(stderr, "dsv32 %s: %s: %s\n", cmd, sig == SIGINT ? "interrupted" : strsignal(sig), what_happened);
        return 128 + sig;
}

/* ------------------------------------------------------------------ arguments */

static char *read_stdin(size_t *len) {
        size_t cap = 4096, n = 0;
        char *buf = malloc(cap);
        size_t k;
        if (!buf)
                return NULL;
        while ((k = fread(buf + n, 1, cap - n - 1, stdin)) > 0) {
                n += k;
                if (cap - n - 1 == 0) {
                        char *b2 = realloc(buf, cap *= 2);
                        if (!b2) {
                                free(buf);
                                return NULL;
                        }
                        buf = b2;
                }
        }
        buf[n] = 0;
        *len = n;
        return buf;
}

static char *join_args(int argc, char **argv, size_t *len) {
        size_t n = 0;
        char *s;
        for (int i = 0; i < argc; i++)
                n += strlen(argv[i]) + 1;
        s = malloc(n + 1);
        if (!s)
                return NULL;
        s[0] = 0;
        for (int i = 0; i < argc; i++) {
                if (i)
                        strcat(s, " ");
                strcat(s, argv[i]);
        }
        *len = strlen(s);
        return s;
}

static int parse_float(const char *s, float *v) {
        char *end;
        errno = 0;
        *v = strtof(s, &end);
        return errno || end == s || *end || !isfinite(*v) ? -EINVAL : 0;
}

static int parse_long(const char *s, long min, long max, long *v) {
        char *end;
        errno = 0;
        *v = strtol(s, &end, 10);
        return errno || end == s || *end || *v < min || *v > max ? -EINVAL : 0;
}

/* Options generate and chat share: 0, or CLI_EXIT_USAGE after saying why. */
int cli_opt_max_tokens(const char *cmd, const char *arg, struct dsv32_request *q) {
        long v;
        if (parse_long(arg, 1, 1 << 20, &v) < 0) {
                fprintf(stderr, "dsv32 %s: --max-tokens needs 1..%d\n", cmd, 1 << 20);
                return CLI_EXIT_USAGE;
        }
        q->max_tokens = (uint32_t)v;
        return 0;
}

int cli_opt_temperature(const char *cmd, const char *arg, struct dsv32_request *q) {
        if (parse_float(arg, &q->temperature) < 0 || q->temperature < 0) {
                fprintf(stderr, "dsv32 %s: --temperature needs a number >= 0\n", cmd);
                return CLI_EXIT_USAGE;
        }
        return 0;
}

int cli_opt_seed(const char *cmd, const char *arg, struct dsv32_request *q) {
        char *end;
        errno = 0;
        q->seed = strtoull(arg, &end, 10);
        if (errno || end == arg || *end || arg[0] == '-') {
                fprintf(stderr, "dsv32 %s: --seed needs a non-negative integer\n", cmd);
                return CLI_EXIT_USAGE;
        }
        q->flags |= DSV32_REQ_SEED;
        return 0;
}

int cli_opt_schema(const char *cmd, const char *path, char **schema) {
        const size_t max = 256u << 10;
        FILE *f = fopen(path, "re");
        char *buf;
        size_t n;
        if (!f) {
                fprintf(stderr, "dsv32 %s: --schema %s: %s\n", cmd, path, strerror(errno));
                return CLI_EXIT_USAGE;
        }
        buf = malloc(max + 2);
        n = buf ? fread(buf, 1, max + 1, f) : 0;
        if (!buf || ferror(f) || n > max || n == 0) {
                fprintf(stderr, "dsv32 %s: --schema %s: %s\n", cmd, path,
                        !buf ? "out of memory" : ferror(f) ? strerror(errno) : n ? "larger than 256 KiB" : "the file is empty");
                fclose(f);
                free(buf);
                return CLI_EXIT_USAGE;
        }
        fclose(f);
        buf[n] = 0;
        if (strlen(buf) != n) {
                fprintf(stderr, "dsv32 %s: --schema %s: the file holds a NUL byte\n", cmd, path);
                free(buf);
                return CLI_EXIT_USAGE;
        }
        free(*schema);
        *schema = buf;
        return 0;
}

/* A command that takes no words: CLI_EXIT_USAGE after naming the first, else 0. */
static int no_words(const char *cmd, int argc, char **argv) {
        if (optind < argc) {
                fprintf(stderr, "dsv32 %s: unexpected argument '%s' (dsv32 %s --help)\n", cmd, argv[optind], cmd);
                return CLI_EXIT_USAGE;
        }
        return 0;
}

/* ------------------------------------------------------------------ generate */

struct printer {
        bool ids;   /* token ids: --ids, or a daemon without a tokenizer */
        bool any;   /* ids printed so far (for the commas) */
        bool text;  /* something without a final newline was printed */
        uint32_t n; /* tokens received */
};

static int print_tokens(void *ud, const int32_t *t, size_t n, const char *text, size_t text_len) {
        struct printer *p = ud;
        bool ok = true;
        p->n += (uint32_t)n;
        if (cli.json) {
                ok = cli_json_emit(cli_json_tokens(t, n, text, text_len));
        } else if (!p->ids) {
                /* the text of these tokens; none while a UTF-8 character is incomplete */
                ok = cli_write(text ? text : "", text ? text_len : 0);
                p->text |= text && text_len > 0;
        } else {
                for (size_t i = 0; i < n && ok; i++)
                        ok = cli_printf("%s%d", p->any || i ? "," : "", t[i]);
                if (n)
                        p->any = p->text = true;
        }
        /* a failed write or a signal cancels the request */
        return !ok || cli_signal ? 1 : 0;
}

/* A TOKENS event of a request with logprobs: one line per token (ID LOGPROB ID:LOGPROB...),
 * or the JSON object with "logprobs" and "top_logprobs" ([[id, logprob], ...] per token). */
static int print_logprobs(struct printer *p, const struct dsv32_event *ev) {
        bool ok = true;
        p->n += (uint32_t)ev->n_tokens;
        if (cli.json) {
                json_t *o = cli_json_tokens(ev->tokens, ev->n_tokens, ev->text, ev->text_len);
                json_t *lp = json_array(), *top = json_array();
                for (size_t i = 0; ev->logprobs && i < ev->n_tokens; i++) {
                        json_t *alts = json_array();
                        json_array_append_new(lp, json_real(ev->logprobs[i]));
                        for (size_t j = 0; j < ev->n_top; j++)
                                json_array_append_new(alts, json_pack("[i, f]", ev->top_tokens[i * ev->n_top + j],
                                                                      (double)ev->top_logprobs[i * ev->n_top + j]));
                        json_array_append_new(top, alts);
                }
                if (o) {
                        json_object_set_new(o, "logprobs", lp);
                        json_object_set_new(o, "top_logprobs", top);
                } else {
                        json_decref(lp);
                        json_decref(top);
                }
                ok = cli_json_emit(o);
        } else {
                for (size_t i = 0; i < ev->n_tokens && ok; i++) {
                        ok = cli_printf("%d %.6f", ev->tokens[i], ev->logprobs ? (double)ev->logprobs[i] : 0.0);
                        for (size_t j = 0; j < ev->n_top && ok; j++)
                                ok = cli_printf(" %d:%.6f", ev->top_tokens[i * ev->n_top + j],
                                                (double)ev->top_logprobs[i * ev->n_top + j]);
                        ok = ok && cli_write("\n", 1);
                }
        }
        return !ok || cli_signal ? 1 : 0;
}

/* dsv32_generate's loop over the event API, whose TOKENS events carry logprobs; a signal
 * cancels the request (as print_tokens' return does for dsv32_generate). */
static int generate_logprobs(dsv32_client *c, const struct dsv32_request *q, struct printer *p, struct dsv32_result *res) {
        bool stop = false, cancelled = false;
        uint64_t id;
        int r = dsv32_submit(c, q, &id);

        while (r >= 0) {
                struct dsv32_event ev[16];
                int n = dsv32_poll_events(c, ev, 16);
                if (n < 0)
                        return n;
                /* the events' arrays live until the next call on c: every one is handled first */
                for (int i = 0; i < n; i++) {
                        if (ev[i].id != id)
                                continue;
                        if (ev[i].type == DSV32_EVENT_TOKENS && !stop) {
                                stop = print_logprobs(p, &ev[i]) != 0;
                        } else if (ev[i].type == DSV32_EVENT_DONE) {
                                *res = (struct dsv32_result){.finish = ev[i].finish, .usage = ev[i].usage,
                                                             .preempted = ev[i].preempted, .spec_drafted = ev[i].spec_drafted,
                                                             .spec_accepted = ev[i].spec_accepted,
                                                             .stop_index = ev[i].stop_index};
                                return 0;
                        } else if (ev[i].type == DSV32_EVENT_ERROR) {
                                fprintf(stderr, "dsv32 generate: %s\n", ev[i].message);
                                return ev[i].error;
                        }
                }
                if ((stop || cli_signal) && !cancelled) { /* a failed write or Ctrl-C: cancel, wait for DONE */
                        stop = cancelled = true;
                        dsv32_cancel(c, id);
                }
                if (n == 0 && (r = dsv32_wait(c, 200)) == -EINTR)
                        r = 0;
        }
        return r;
}

static int cmd_generate(int argc, char **argv) {
        static const struct option opts[] = {
                {"tokens", required_argument, NULL, 't'}, {"max-tokens", required_argument, NULL, 'n'},
                {"temperature", required_argument, NULL, 'T'}, {"top-p", required_argument, NULL, 'p'},
                {"top-k", required_argument, NULL, 'k'}, {"min-p", required_argument, NULL, 'm'},
                {"seed", required_argument, NULL, 's'}, {"stop", required_argument, NULL, 'S'},
                {"session", required_argument, NULL, 'X'}, {"ids", no_argument, NULL, 'i'},
                {"no-stream", no_argument, NULL, 'N'}, {"ignore-eos", no_argument, NULL, 'E'},
                {"reuse-output", no_argument, NULL, 'R'}, {"no-bos", no_argument, NULL, 'B'},
                {"priority", required_argument, NULL, 'P'}, {"stop-string", required_argument, NULL, 0x100},
                {"repetition-penalty", required_argument, NULL, 0x101}, {"frequency-penalty", required_argument, NULL, 0x102},
                {"presence-penalty", required_argument, NULL, 0x103}, {"logit-bias", required_argument, NULL, 0x104},
                {"logprobs", required_argument, NULL, 0x105}, {"schema", required_argument, NULL, 0x106},
                CLI_JSON_OPTION, CLI_GLOBAL_OPTIONS, {0},
        };
        struct dsv32_request q = {.struct_size = sizeof(q)};
        const char *stop_str[8];
        size_t n_stop_str = 0;
        static struct dsv32_logit_bias bias[300];
        size_t n_bias = 0;
        struct printer pr = {0};
        struct dsv32_result res;
        int32_t *tokens = NULL, *stop = NULL;
        size_t n_tokens = 0, n_stop = 0, text_len = 0;
        char *text = NULL, *schema = NULL;
        dsv32_client *c = NULL;
        long v;
        int ch, r, ret = 0;

        while ((ch = getopt_long(argc, argv, CLI_SHORT_OPTIONS, opts, NULL)) >= 0) {
                switch (ch) {
                case 't':
                        free(tokens);
                        tokens = NULL;
                        if (dsv_parse_id_list(optarg, &tokens, &n_tokens) < 0 || !n_tokens) {
                                fprintf(stderr, "dsv32 generate: --tokens needs token ids separated by commas or spaces\n");
                                ret = CLI_EXIT_USAGE;
                        }
                        break;
                case 'n':
                        ret = cli_opt_max_tokens("generate", optarg, &q);
                        break;
                case 'T':
                        ret = cli_opt_temperature("generate", optarg, &q);
                        break;
                case 'p':
                        if (parse_float(optarg, &q.top_p) < 0 || q.top_p <= 0 || q.top_p > 1) {
                                fprintf(stderr, "dsv32 generate: --top-p needs a number in (0, 1]\n");
                                ret = CLI_EXIT_USAGE;
                        }
                        break;
                case 'k':
                        if (parse_long(optarg, 0, 1 << 24, &v) < 0) {
                                fprintf(stderr, "dsv32 generate: --top-k needs a number >= 0\n");
                                ret = CLI_EXIT_USAGE;
                        }
                        q.top_k = (int32_t)v;
                        break;
                case 'm':
                        if (parse_float(optarg, &q.min_p) < 0 || q.min_p < 0 || q.min_p > 1) {
                                fprintf(stderr, "dsv32 generate: --min-p needs a number in [0, 1]\n");
                                ret = CLI_EXIT_USAGE;
                        }
                        break;
                case 's':
                        ret = cli_opt_seed("generate", optarg, &q);
                        break;
                case 'S':
                        free(stop);
                        stop = NULL;
                        if (dsv_parse_id_list(optarg, &stop, &n_stop) < 0) {
                                fprintf(stderr, "dsv32 generate: --stop needs token ids separated by commas or spaces\n");
                                ret = CLI_EXIT_USAGE;
                        }
                        break;
                case 0x100:
                        if (n_stop_str == sizeof(stop_str) / sizeof(stop_str[0])) {
                                fprintf(stderr, "dsv32 generate: at most %zu --stop-string options\n", n_stop_str);
                                ret = CLI_EXIT_USAGE;
                        } else if (!*optarg || strlen(optarg) > 64) {
                                fprintf(stderr, "dsv32 generate: --stop-string needs 1..64 bytes (got %zu)\n", strlen(optarg));
                                ret = CLI_EXIT_USAGE;
                        } else {
                                stop_str[n_stop_str++] = optarg;
                        }
                        break;
                case 0x101:
                        if (parse_float(optarg, &q.repetition_penalty) < 0 || q.repetition_penalty <= 0 ||
                            q.repetition_penalty > 10) {
                                fprintf(stderr, "dsv32 generate: --repetition-penalty needs a number in (0, 10] (1 is off)\n");
                                ret = CLI_EXIT_USAGE;
                        }
                        break;
                case 0x102:
                case 0x103: {
                        float *f = ch == 0x102 ? &q.frequency_penalty : &q.presence_penalty;
                        if (parse_float(optarg, f) < 0 || *f < -2 || *f > 2) {
                                fprintf(stderr, "dsv32 generate: --%s-penalty needs a number in [-2, 2]\n",
                                        ch == 0x102 ? "frequency" : "presence");
                                ret = CLI_EXIT_USAGE;
                        }
                        break;
                }
                case 0x104: {
                        char *colon = strchr(optarg, ':');
                        if (n_bias == sizeof(bias) / sizeof(bias[0])) {
                                fprintf(stderr, "dsv32 generate: at most %zu --logit-bias options\n", n_bias);
                                ret = CLI_EXIT_USAGE;
                                break;
                        }
                        if (colon)
                                *colon = 0;
                        if (!colon || parse_long(optarg, 0, INT32_MAX, &v) < 0 || parse_float(colon + 1, &bias[n_bias].bias) < 0 ||
                            bias[n_bias].bias < -100 || bias[n_bias].bias > 100) {
                                fprintf(stderr, "dsv32 generate: --logit-bias needs ID:BIAS, a token id and a number in "
                                                "[-100, 100]\n");
                                ret = CLI_EXIT_USAGE;
                                break;
                        }
                        bias[n_bias++].token = (int32_t)v;
                        break;
                }
                case 0x105:
                        if (parse_long(optarg, 0, DSV32_MAX_TOP_LOGPROBS, &v) < 0) {
                                fprintf(stderr, "dsv32 generate: --logprobs needs a number of alternatives in 0..%d\n",
                                        DSV32_MAX_TOP_LOGPROBS);
                                ret = CLI_EXIT_USAGE;
                        }
                        q.flags |= DSV32_REQ_LOGPROBS;
                        q.top_logprobs = (uint32_t)v;
                        break;
                case 0x106:
                        ret = cli_opt_schema("generate", optarg, &schema);
                        break;
                case 'X':
                        q.session = optarg;
                        break;
                case 'P':
                        if (parse_long(optarg, -100, 100, &v) < 0) {
                                fprintf(stderr, "dsv32 generate: --priority needs a number in -100..100\n");
                                ret = CLI_EXIT_USAGE;
                        }
                        q.priority = (int32_t)v;
                        break;
                case 'i':
                        pr.ids = true;
                        break;
                case 'N':
                        q.flags |= DSV32_REQ_NO_STREAM;
                        break;
                case 'E':
                        q.flags |= DSV32_REQ_IGNORE_EOS;
                        break;
                case 'R':
                        q.flags |= DSV32_REQ_REUSE_OUTPUT;
                        break;
                case 'B':
                        q.flags |= DSV32_REQ_NO_BOS;
                        break;
                default:
                        if (cli_global_option(ch, "generate", argv, &ret) > 0)
                                goto out;
                }
                if (ret)
                        goto out;
        }
        if (tokens && optind < argc) {
                fprintf(stderr, "dsv32 generate: give either --tokens or a text prompt, not both\n");
                ret = CLI_EXIT_USAGE;
                goto out;
        }
        if (!tokens) {
                if (optind == argc && isatty(STDIN_FILENO))
                        fprintf(stderr, "dsv32 generate: reading the prompt from the terminal; end it with Ctrl-D (or give "
                                        "it as arguments)\n");
                text = optind < argc ? join_args(argc - optind, argv + optind, &text_len) : read_stdin(&text_len);
                if (!text) {
                        fprintf(stderr, "dsv32 generate: out of memory\n");
                        ret = CLI_EXIT_REQUEST;
                        goto out;
                }
                if (!text_len) {
                        fprintf(stderr, "dsv32 generate: the prompt is empty (give words, stdin, or --tokens)\n");
                        ret = CLI_EXIT_USAGE;
                        goto out;
                }
        }
        q.tokens = tokens;
        q.n_tokens = n_tokens;
        q.text = text;
        q.text_len = text_len;
        q.stop_tokens = stop;
        q.n_stop_tokens = n_stop;
        q.stop_strings = stop_str;
        q.n_stop_strings = n_stop_str;
        q.logit_bias = bias;
        q.n_logit_bias = n_bias;
        q.schema = schema;
        cli_streaming = true;
        cli_catch_signals();
        if ((ret = cli_connect("generate", (uint32_t)(text_len + 4 * n_tokens + (schema ? strlen(schema) : 0) + 4096) * 2, &c)))
                goto out;
        if ((ret = cli_wait_ready(c, "generate")))
                goto out;
        {
                struct dsv32_info info;
                if (dsv32_get_info(c, &info) == 0 && !(info.features & DSV32_FEATURE_TEXT))
                        pr.ids = true;
        }
        r = q.flags & DSV32_REQ_LOGPROBS ? generate_logprobs(c, &q, &pr, &res) : dsv32_generate(c, &q, print_tokens, &pr, &res);
        if (pr.text && !cli.json)
                cli_write("\n", 1);
        if (cli_output_failed()) {
                ret = CLI_EXIT_OUTPUT; /* cli_finish_output says why */
        } else if (r < 0) {
                ret = cli_fail(c, r, "generate", r == -ECONNRESET ? "the connection to dsv32d was lost" : "the request failed");
        } else if (cli_signal) {
                char what[96];
                snprintf(what, sizeof(what), "the request was cancelled after %u tokens", pr.n);
                ret = cli_signal_exit("generate", what);
        } else if (res.finish == DSV32_FINISH_SHUTDOWN) {
                fprintf(stderr, "dsv32 generate: dsv32d stopped before the request finished (%u tokens generated)\n",
                        res.usage.completion_tokens);
                if (cli.json)
                        cli_json_error(-ESHUTDOWN, "dsv32d stopped before the request finished");
                ret = CLI_EXIT_UNAVAILABLE;
        }
        if (r == 0 && cli.json && !cli_output_failed()) {
                json_t *o = json_pack("{s:s, s:s, s:o}", "event", "done", "finish", dsv32_finish_name(res.finish), "usage",
                                      cli_json_usage(&res));
                if (o && res.finish == DSV32_FINISH_STOP_STRING)
                        json_object_set_new(o, "stop_index", json_integer(res.stop_index));
                cli_json_emit(o);
        }
        if (r == 0 && cli.verbose) {
                fflush(stdout); /* the summary goes after the text, not into it */
                if (q.session)
                        fprintf(stderr,
                                "[%s: %u prompt (%u reused from session %s) + %u generated tokens; queued %.1f ms, prefill "
                                "%.1f ms, decode %.1f ms]\n",
                                dsv32_finish_name(res.finish), res.usage.prompt_tokens, res.usage.cached_tokens, q.session,
                                res.usage.completion_tokens, res.usage.queue_us / 1e3, res.usage.prefill_us / 1e3,
                                res.usage.decode_us / 1e3);
                else
                        fprintf(stderr,
                                "[%s: %u prompt + %u generated tokens; queued %.1f ms, prefill %.1f ms, decode %.1f ms]\n",
                                dsv32_finish_name(res.finish), res.usage.prompt_tokens, res.usage.completion_tokens,
                                res.usage.queue_us / 1e3, res.usage.prefill_us / 1e3, res.usage.decode_us / 1e3);
        }
out:
        dsv32_disconnect(c);
        free(tokens);
        free(stop);
        free(text);
        free(schema);
        return cli_finish_output("generate", ret);
}

/* ------------------------------------------------------------------ tokenize, detokenize */

static int cmd_tokenize(int argc, char **argv) {
        static const struct option opts[] = {{"bos", no_argument, NULL, 'b'}, CLI_GLOBAL_OPTIONS, {0}};
        bool bos = false;
        int ch, r, ret = 0;
        size_t len, n;
        char *text = NULL;
        int32_t *ids;
        dsv32_client *c = NULL;

        while ((ch = getopt_long(argc, argv, CLI_SHORT_OPTIONS, opts, NULL)) >= 0) {
                if (ch == 'b')
                        bos = true;
                else if (cli_global_option(ch, "tokenize", argv, &ret) > 0)
                        return cli_finish_output("tokenize", ret);
        }
        text = optind < argc ? join_args(argc - optind, argv + optind, &len) : read_stdin(&len);
        if (!text)
                return CLI_EXIT_REQUEST;
        if ((ret = cli_connect("tokenize", (uint32_t)len * 2 + 4096, &c)) == 0 && (ret = cli_wait_ready(c, "tokenize")) == 0) {
                r = dsv32_tokenize(c, text, len, bos ? DSV32_TOKENIZE_ADD_BOS : 0, &ids, &n);
                if (r < 0) {
                        ret = cli_fail(c, r, "tokenize", "cannot tokenize");
                } else {
                        for (size_t k = 0; k < n; k++)
                                cli_printf("%s%d", k ? "," : "", ids[k]);
                        cli_printf("\n");
                        dsv32_free(ids);
                }
        }
        dsv32_disconnect(c);
        free(text);
        return cli_finish_output("tokenize", ret);
}

static int cmd_detokenize(int argc, char **argv) {
        static const struct option opts[] = {CLI_GLOBAL_OPTIONS, {0}};
        int32_t *ids = NULL;
        size_t n = 0, len;
        char *text = NULL, *words = NULL;
        dsv32_client *c = NULL;
        int ch, r, ret = 0;

        while ((ch = getopt_long(argc, argv, CLI_SHORT_OPTIONS, opts, NULL)) >= 0)
                if (cli_global_option(ch, "detokenize", argv, &ret) > 0)
                        return cli_finish_output("detokenize", ret);
        words = optind < argc ? join_args(argc - optind, argv + optind, &len) : NULL;
        if (!words || dsv_parse_id_list(words, &ids, &n) < 0 || !n) {
                fprintf(stderr, "dsv32 detokenize: give token ids, separated by commas or spaces\n");
                free(words);
                return CLI_EXIT_USAGE;
        }
        free(words);
        if ((ret = cli_connect("detokenize", (uint32_t)n * 8 + 4096, &c)) == 0 && (ret = cli_wait_ready(c, "detokenize")) == 0) {
                r = dsv32_detokenize(c, ids, n, &text, &len);
                if (r < 0) {
                        ret = cli_fail(c, r, "detokenize", "cannot detokenize");
                } else {
                        cli_write(text, len);
                        cli_write("\n", 1);
                        dsv32_free(text);
                }
        }
        dsv32_disconnect(c);
        free(ids);
        return cli_finish_output("detokenize", ret);
}

/* ------------------------------------------------------------------ status */

static const char *state_name(enum dsv32_state s) {
        switch (s) {
        case DSV32_STATE_LOADING:
                return "loading";
        case DSV32_STATE_READY:
                return "ready";
        case DSV32_STATE_DRAINING:
                return "draining";
        case DSV32_STATE_FAILED:
                return "failed";
        }
        return "unknown";
}

static json_t *status_json(const struct dsv32_stats *s, const struct dsv32_wait_stats *ws) {
        json_t *o = json_object();
#define I(name, v) json_object_set_new(o, name, json_integer((json_int_t)(v)))
#define S(name, v) json_object_set_new(o, name, cli_json_text(v, strlen(v)))
#define F(name, v) json_object_set_new(o, name, json_real(v))
        if (!o)
                return NULL;
        S("state", state_name(s->state));
        I("daemon_pid", s->daemon_pid);
        I("uptime_ms", s->uptime_ms);
        I("load_permille", s->load_permille);
        S("daemon_version", s->daemon_version);
        S("model", s->model);
        S("backend", s->backend);
        S("numerics", s->numerics);
        I("threads", s->threads);
        I("vocab_size", s->vocab_size);
        I("n_layers", s->n_layers);
        I("max_context", s->max_context);
        I("weight_bytes", s->weight_bytes);
        json_object_set_new(o, "text", json_boolean(s->features & DSV32_FEATURE_TEXT));
        json_object_set_new(o, "chat", json_boolean(s->features & DSV32_FEATURE_CHAT));
        json_object_set_new(o, "sessions_supported", json_boolean(s->features & DSV32_FEATURE_SESSIONS));
        I("rss_bytes", s->rss_bytes);
        I("kv_pages_total", s->kv_pages_total);
        I("kv_pages_used", s->kv_pages_used);
        I("kv_page_tokens", s->kv_page_tokens);
        I("kv_bytes_per_token", s->kv_bytes_per_token);
        I("clients", s->clients);
        I("requests_running", s->requests_running);
        I("requests_prefilling", s->requests_prefilling);
        I("requests_waiting", s->requests_waiting);
        I("requests_parked", s->requests_parked);
        I("requests_total", s->requests_total);
        I("prompt_tokens_total", s->prompt_tokens_total);
        I("prefilled_tokens_total", s->prefilled_tokens_total);
        I("generated_tokens_total", s->generated_tokens_total);
        I("steps_total", s->steps_total);
        F("decode_tokens_per_s", s->decode_tokens_per_s);
        F("prefill_tokens_per_s", s->prefill_tokens_per_s);
        I("rate_window_ms", s->rate_window_ms);
        I("sessions", s->sessions);
        I("sessions_pinned", s->sessions_pinned);
        I("session_pages", s->session_pages);
        I("cached_tokens_total", s->cached_tokens_total);
        I("sessions_evicted", s->sessions_evicted);
        I("prefix_cache_tokens_total", s->prefix_cache_tokens_total);
        I("kv_pages_cached", s->kv_pages_cached);
        I("preemptions_total", s->preemptions_total);
        json_object_set_new(o, "speculative_decoding", json_boolean(s->features & DSV32_FEATURE_MTP));
        I("spec_drafted_total", s->spec_drafted_total);
        I("spec_accepted_total", s->spec_accepted_total);
        I("requests_done_total", s->requests_done_total);
        I("queue_us_total", s->queue_us_total);
        I("ttft_us_total", s->ttft_us_total);
        I("decode_us_total", s->decode_us_total);
        I("decode_tokens_total", s->decode_tokens_total);
        if (s->device[0]) {
                S("device", s->device);
                I("device_memory_total", s->device_memory_total);
                I("device_memory_free", s->device_memory_free);
                I("device_weight_bytes", s->device_weight_bytes);
                I("device_kv_bytes", s->device_kv_bytes);
        }
        if (s->ranks > 1) {
                I("ranks", s->ranks);
                S("layout", s->layout);
                I("rank_weight_bytes_min", s->rank_weight_bytes_min);
                if (s->rank_pools) {
                        json_t *a = json_array();
                        for (uint32_t k = 0; k < s->rank_pools && a; k++)
                                json_array_append_new(a, json_pack("{s:I, s:I, s:I}", "used", (json_int_t)s->rank_pages[k].used,
                                                                   "free", (json_int_t)s->rank_pages[k].free, "cached",
                                                                   (json_int_t)s->rank_pages[k].cached));
                        if (a)
                                json_object_set_new(o, "rank_pages", a);
                        I("session_moves_total", s->session_moves_total);
                }
                I("rank_weight_bytes_max", s->rank_weight_bytes_max);
        }
        I("spin_us", s->spin_us);
        I("loop_wakeups", s->loop_wakeups);
        I("loop_sleeps", s->loop_sleeps);
        I("doorbells_sent", s->doorbells_sent);
        I("doorbells_received", s->doorbells_received);
        I("client_waits", ws->waits);
        I("client_spins_won", ws->spins_won);
        I("client_sleeps", ws->sleeps);
#undef I
#undef S
#undef F
        return o;
}

static int cmd_status(int argc, char **argv) {
        static const struct option opts[] = {CLI_JSON_OPTION, CLI_GLOBAL_OPTIONS, {0}};
        struct dsv32_stats s;
        struct dsv32_wait_stats ws;
        dsv32_client *c = NULL;
        char window[48];
        int ch, r, ret = 0;

        while ((ch = getopt_long(argc, argv, CLI_SHORT_OPTIONS, opts, NULL)) >= 0)
                if (cli_global_option(ch, "status", argv, &ret) > 0)
                        return cli_finish_output("status", ret);
        if ((ret = no_words("status", argc, argv)))
                return ret;
        if ((ret = cli_connect("status", 0, &c)))
                return cli_finish_output("status", ret);
        r = dsv32_stats(c, &s);
        if (r < 0) {
                ret = cli_fail(c, r, "status", "cannot read the statistics");
                dsv32_disconnect(c);
                return cli_finish_output("status", ret);
        }
        dsv32_get_wait_stats(c, &ws);
        dsv32_disconnect(c);
        if (cli.json) {
                cli_json_emit(status_json(&s, &ws));
                return cli_finish_output("status", 0);
        }
        cli_printf("dsv32d %s, pid %u, up %.1f s: %s", s.daemon_version, s.daemon_pid, s.uptime_ms / 1e3, state_name(s.state));
        if (s.state == DSV32_STATE_LOADING)
                cli_printf(" (%u.%u%%)", s.load_permille / 10, s.load_permille % 10);
        cli_printf("\n");
        cli_printf("model:      %s\n", s.model[0] ? s.model : "(loading)");
        cli_printf("            %.1f MB of weights, context %d, backend %s (%u threads), %s numerics\n", s.weight_bytes / 1e6,
                   s.max_context, s.backend, s.threads, s.numerics);
        cli_printf("            text: %s, chat: %s\n", s.features & DSV32_FEATURE_TEXT ? "yes" : "no (token ids only)",
                   s.features & DSV32_FEATURE_CHAT ? "yes" : "no");
        if (s.device[0])
                cli_printf("device:     %s: %.2f GiB of weights, %.2f GiB of KV cache, %.2f of %.2f GiB free\n", s.device,
                           s.device_weight_bytes / 1073741824.0, s.device_kv_bytes / 1073741824.0,
                           s.device_memory_free / 1073741824.0, s.device_memory_total / 1073741824.0);
        else if (s.state == DSV32_STATE_READY)
                cli_printf("device:     cpu (weights and KV cache in host memory)\n");
        if (s.ranks > 1) {
                char per[64];
                if (s.rank_weight_bytes_min == s.rank_weight_bytes_max)
                        snprintf(per, sizeof(per), "%.1f MB", s.rank_weight_bytes_min / 1e6);
                else
                        snprintf(per, sizeof(per), "%.1f-%.1f MB", s.rank_weight_bytes_min / 1e6, s.rank_weight_bytes_max / 1e6);
                if (s.rank_pools)
                        cli_printf("ranks:      %u CPU ranks, layout %s; weights per rank %s (above: rank 0's); attention "
                                   "data-parallel: each rank its own KV cache pool, holding the sequences placed on it\n",
                                   s.ranks, s.layout, per);
                else
                        cli_printf("ranks:      %u CPU ranks, layout %s; weights per rank %s (above: rank 0's); each rank has a KV "
                                   "cache pool as below\n",
                                   s.ranks, s.layout, per);
        }
        cli_printf("memory:     RSS %.1f MB; KV cache %llu/%llu pages of %llu tokens used (%llu bytes/token)\n",
                   s.rss_bytes / 1e6, (unsigned long long)s.kv_pages_used, (unsigned long long)s.kv_pages_total,
                   (unsigned long long)s.kv_page_tokens, (unsigned long long)s.kv_bytes_per_token);
        if (s.rank_pools) {
                cli_printf("KV pages:   used/free/cached per rank:");
                for (uint32_t k = 0; k < s.rank_pools; k++)
                        cli_printf("%s rank %u %u/%u/%u", k ? ";" : "", k, s.rank_pages[k].used, s.rank_pages[k].free,
                                   s.rank_pages[k].cached);
                cli_printf("; sessions moved to another rank: %llu\n", (unsigned long long)s.session_moves_total);
        }
        if (s.state == DSV32_STATE_READY && s.kv_pages_total && s.kv_page_tokens && s.max_context > 0) {
                /* what the pool allows: its tokens, as whole contexts side by side or one shorter one (a
                 * rank's pool, with data-parallel attention: a sequence lives in one) */
                unsigned long long tokens =
                        (unsigned long long)(s.rank_pools ? s.kv_pages_total / s.rank_pools : s.kv_pages_total) * s.kv_page_tokens;
                unsigned long long full = tokens / (unsigned long long)s.max_context;
                cli_printf("plan:       KV cache %.1f MiB%s = room for %llu tokens: ", tokens * s.kv_bytes_per_token / 1048576.0,
                           s.ranks > 1 ? " per rank" : "", tokens);
                if (full)
                        cli_printf("the full %d-token context for %llu sequence%s at once\n", s.max_context, full, full == 1 ? "" : "s");
                else
                        cli_printf("one sequence of at most %llu tokens (less than the %d-token context)\n", tokens, s.max_context);
        }
        cli_printf("clients:    %u connected; requests %u running, %u prefilling, %u waiting, %u parked (slow readers)\n",
                   s.clients, s.requests_running, s.requests_prefilling, s.requests_waiting, s.requests_parked);
        cli_printf("sessions:   %u (%u pinned) holding %llu KV pages; prefix reuse %llu of %llu prompt tokens (%.1f%%); %llu "
                   "evictions\n",
                   s.sessions, s.sessions_pinned, (unsigned long long)s.session_pages, (unsigned long long)s.cached_tokens_total,
                   (unsigned long long)s.prompt_tokens_total,
                   s.prompt_tokens_total ? 100.0 * (double)s.cached_tokens_total / (double)s.prompt_tokens_total : 0.0,
                   (unsigned long long)s.sessions_evicted);
        cli_printf("scheduler:  %llu prompt tokens from the prefix cache (%llu cached pages); %llu preemptions; "
                   "speculative decoding %s",
                   (unsigned long long)s.prefix_cache_tokens_total, (unsigned long long)s.kv_pages_cached,
                   (unsigned long long)s.preemptions_total, s.features & DSV32_FEATURE_MTP ? "on" : "off");
        if (s.spec_drafted_total)
                cli_printf(": %llu of %llu drafts accepted (%.1f%%)", (unsigned long long)s.spec_accepted_total,
                           (unsigned long long)s.spec_drafted_total,
                           100.0 * (double)s.spec_accepted_total / (double)s.spec_drafted_total);
        cli_printf("\n");
        if (s.requests_done_total)
                cli_printf("latency:    mean over %llu finished requests: queued %.1f ms, first token %.1f ms, %.2f ms per "
                           "token after it\n",
                           (unsigned long long)s.requests_done_total, s.queue_us_total / 1e3 / (double)s.requests_done_total,
                           s.ttft_us_total / 1e3 / (double)s.requests_done_total,
                           s.decode_tokens_total ? s.decode_us_total / 1e3 / (double)s.decode_tokens_total : 0.0);
        if (s.rate_window_ms)
                snprintf(window, sizeof(window), "last %.1f s", s.rate_window_ms / 1e3);
        else
                snprintf(window, sizeof(window), "last busy second");
        cli_printf("throughput: %.1f tok/s decode, %.1f tok/s prefill (%s); totals: %llu requests, %llu prompt and "
                   "%llu generated tokens in %llu steps\n",
                   s.decode_tokens_per_s, s.prefill_tokens_per_s, window, (unsigned long long)s.requests_total,
                   (unsigned long long)s.prompt_tokens_total, (unsigned long long)s.generated_tokens_total,
                   (unsigned long long)s.steps_total);
        cli_printf("ipc:        daemon spins %u us before sleeping; it slept %llu times (%llu wakeups), received %llu and "
                   "sent %llu doorbells\n",
                   s.spin_us, (unsigned long long)s.loop_sleeps, (unsigned long long)s.loop_wakeups,
                   (unsigned long long)s.doorbells_received, (unsigned long long)s.doorbells_sent);
        cli_printf("            this client waited %llu times: %llu answered while spinning, %llu slept\n",
                   (unsigned long long)ws.waits, (unsigned long long)ws.spins_won, (unsigned long long)ws.sleeps);
        return cli_finish_output("status", 0);
}

/* ------------------------------------------------------------------ session */

static int session_list(dsv32_client *c) {
        struct dsv32_session_entry *v = NULL;
        size_t total = 0;
        int r = dsv32_session_list(c, NULL, 0, &total);
        if (r >= 0 && total) {
                v = calloc(total, sizeof(*v));
                if (!v)
                        return -ENOMEM;
                r = dsv32_session_list(c, v, total, &total);
        }
        if (r < 0) {
                free(v);
                return r;
        }
        if (!cli.json && r == 0)
                cli_printf("no sessions\n");
        /* a RANK column when the daemon runs attention data-parallel (a session's rank is known) */
        bool ranks = false;
        for (int i = 0; i < r; i++)
                ranks |= v[i].rank >= 0;
        for (int i = 0; i < r; i++) {
                char path[512], rank[16] = "-";
                bool transcript = cli_transcript_path(v[i].name, path, sizeof(path)) == 0 && access(path, F_OK) == 0;
                if (cli.json) {
                        json_t *o = json_pack("{s:s, s:o, s:I, s:I, s:b, s:b, s:I, s:b}", "event", "session", "name",
                                              cli_json_text(v[i].name, strlen(v[i].name)), "tokens", (json_int_t)v[i].n_tokens,
                                              "kv_pages", (json_int_t)v[i].n_pages, "pinned",
                                              (v[i].flags & DSV32_SESSION_PINNED) != 0, "busy",
                                              (v[i].flags & DSV32_SESSION_BUSY) != 0, "idle_ms", (json_int_t)v[i].idle_ms,
                                              "chat_transcript", transcript);
                        if (o && v[i].rank >= 0)
                                json_object_set_new(o, "rank", json_integer(v[i].rank));
                        cli_json_emit(o);
                        continue;
                }
                if (v[i].rank >= 0)
                        snprintf(rank, sizeof(rank), "%d", v[i].rank);
                if (i == 0)
                        cli_printf("%-24s %8s %8s %s%10s  %s\n", "SESSION", "TOKENS", "KV PAGES", ranks ? "    RANK" : "", "IDLE",
                                   "");
                cli_printf("%-24s %8u %8u %*s%s%9.1fs  %s%s%s\n", v[i].name, v[i].n_tokens, v[i].n_pages, ranks ? 8 : 0,
                           ranks ? rank : "", ranks ? " " : "", v[i].idle_ms / 1e3,
                           v[i].flags & DSV32_SESSION_PINNED ? "pinned " : "", v[i].flags & DSV32_SESSION_BUSY ? "busy " : "",
                           transcript ? "chat transcript" : "");
        }
        if ((size_t)r < total && !cli.json)
                cli_printf("(%zu more did not fit one reply)\n", total - (size_t)r);
        free(v);
        return 0;
}

static int cmd_session(int argc, char **argv) {
        static const struct option opts[] = {CLI_JSON_OPTION, CLI_GLOBAL_OPTIONS, {0}};
        static const char *const ops[] = {"open", "close", "pin", "unpin", "list", "save"};
        struct dsv32_session_info si;
        dsv32_client *c = NULL;
        const char *op = NULL, *name = NULL;
        char what[128];
        int ch, r, ret = 0;

        while ((ch = getopt_long(argc, argv, CLI_SHORT_OPTIONS, opts, NULL)) >= 0)
                if (cli_global_option(ch, "session", argv, &ret) > 0)
                        return cli_finish_output("session", ret);
        for (size_t i = 0; optind < argc && i < sizeof(ops) / sizeof(ops[0]); i++)
                if (strcmp(argv[optind], ops[i]) == 0)
                        op = ops[i];
        if (!op || (strcmp(op, "list") == 0 || strcmp(op, "save") == 0 ? argc - optind != 1 : argc - optind != 2)) {
                fprintf(stderr, "dsv32 session: open|close|pin|unpin NAME, list, or save (dsv32 session --help)\n");
                return CLI_EXIT_USAGE;
        }
        name = argv[optind + 1];
        if ((ret = cli_connect("session", 0, &c)))
                return cli_finish_output("session", ret);
        if ((ret = cli_wait_ready(c, "session")))
                goto out;
        if (strcmp(op, "list") == 0) {
                r = session_list(c);
                if (r < 0)
                        ret = cli_fail(c, r, "session", "cannot list the sessions");
                goto out;
        }
        if (strcmp(op, "save") == 0) {
                uint32_t n = 0;
                r = dsv32_session_save(c, &n);
                if (r < 0)
                        ret = cli_fail(c, r, "session", "cannot save the sessions");
                else if (cli.json)
                        cli_json_emit(json_pack("{s:s, s:I}", "event", "saved", "sessions", (json_int_t)n));
                else
                        cli_printf("saved %u session%s to the daemon's state directory\n", n, n == 1 ? "" : "s");
                goto out;
        }
        if (strcmp(op, "open") == 0)
                r = dsv32_session_open(c, name, 0, &si);
        else if (strcmp(op, "close") == 0)
                r = dsv32_session_close(c, name, &si);
        else
                r = dsv32_session_pin(c, name, strcmp(op, "pin") == 0, &si);
        if (strcmp(op, "close") == 0) {
                /* the conversation of `chat --session NAME` ends with it */
                char path[512];
                if (cli_transcript_path(name, path, sizeof(path)) == 0 && unlink(path) == 0) {
                        fprintf(stderr, "dsv32 session: deleted the chat transcript %s\n", path);
                        if (r == -ENOENT)
                                r = 0, si = (struct dsv32_session_info){0};
                }
        }
        if (r < 0) {
                snprintf(what, sizeof(what), "session %s %s", op, name);
                ret = cli_fail(c, r, "session", what);
                if (r == -ENOENT)
                        ret = CLI_EXIT_REQUEST; /* no such session (the daemon answered) */
                goto out;
        }
        cli_printf("session %s: %s; %u tokens in %u KV pages%s%s\n", name,
                   strcmp(op, "close") == 0 ? "closed" : si.flags & DSV32_SESSION_CREATED ? "created" : "open", si.n_tokens,
                   si.n_pages, si.flags & DSV32_SESSION_PINNED ? ", pinned" : "",
                   si.flags & DSV32_SESSION_BUSY ? ", a request is running on it" : "");
out:
        dsv32_disconnect(c);
        return cli_finish_output("session", ret);
}

/* ------------------------------------------------------------------ ping, bench */

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
        return x < y ? -1 : x > y;
}

static uint64_t now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

struct lat {
        double p50, p99, p999, per_s, slept;
};

static void summarize(uint64_t *v, size_t n, uint64_t total_ns, struct lat *l) {
        qsort(v, n, sizeof(*v), cmp_u64);
        l->p50 = v[n / 2] / 1e3;
        l->p99 = v[(size_t)(n * 0.99)] / 1e3;
        l->p999 = v[MIN_IDX((size_t)(n * 0.999), n - 1)] / 1e3;
        l->per_s = n / (total_ns / 1e9);
}

static int cmd_ping(int argc, char **argv) {
        static const struct option opts[] = {{"count", required_argument, NULL, 'c'}, CLI_GLOBAL_OPTIONS, {0}};
        long count = 5;
        dsv32_client *c = NULL;
        int ch, ret = 0;

        while ((ch = getopt_long(argc, argv, CLI_SHORT_OPTIONS, opts, NULL)) >= 0) {
                if (ch == 'c') {
                        if (parse_long(optarg, 1, 1000000, &count) < 0) {
                                fprintf(stderr, "dsv32 ping: --count needs 1..1000000\n");
                                return CLI_EXIT_USAGE;
                        }
                } else if (cli_global_option(ch, "ping", argv, &ret) > 0) {
                        return cli_finish_output("ping", ret);
                }
        }
        if ((ret = no_words("ping", argc, argv)))
                return ret;
        if ((ret = cli_connect("ping", 0, &c)))
                return cli_finish_output("ping", ret);
        for (long i = 0; i < count; i++) {
                uint64_t rtt;
                int r = dsv32_ping(c, &rtt);
                if (r < 0) {
                        ret = cli_fail(c, r, "ping", "no answer");
                        break;
                }
                if (!cli_printf("pong from dsv32d: %.2f us\n", rtt / 1e3))
                        break;
        }
        dsv32_disconnect(c);
        return cli_finish_output("ping", ret);
}

static int bench_shm(dsv32_client *c, enum dsv32_wait_mode mode, long count, long warmup, uint64_t *v, struct lat *l) {
        struct dsv32_wait_stats w0, w1;
        uint64_t t0;
        int r;
        dsv32_set_wait(c, mode, 0);
        for (long i = 0; i < warmup; i++)
                if ((r = dsv32_ping(c, NULL)) < 0)
                        return r;
        dsv32_get_wait_stats(c, &w0);
        t0 = now_ns();
        for (long i = 0; i < count; i++)
                if ((r = dsv32_ping(c, &v[i])) < 0)
                        return r;
        summarize(v, (size_t)count, now_ns() - t0, l);
        dsv32_get_wait_stats(c, &w1);
        l->slept = w1.waits > w0.waits ? 100.0 * (double)(w1.sleeps - w0.sleeps) / (double)(w1.waits - w0.waits) : 0;
        return 0;
}

/* The baseline: the same ping-pong over a Unix SOCK_SEQPACKET socketpair to a forked echo
 * process (blocking reads: each message wakes the peer). */
static int bench_unix(long count, long warmup, uint64_t *v, struct lat *l) {
        int sv[2], status;
        pid_t pid;
        char msg[32] = {0};
        uint64_t t0 = now_ns();

        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
                return -errno;
        pid = fork();
        if (pid < 0)
                return -errno;
        if (pid == 0) {
                char b[64];
                ssize_t n;
                close(sv[0]);
                while ((n = recv(sv[1], b, sizeof(b), 0)) > 0)
                        if (send(sv[1], b, (size_t)n, MSG_NOSIGNAL) != n)
                                break;
                _exit(0);
        }
        close(sv[1]);
        for (long i = 0; i < warmup + count; i++) {
                uint64_t t = now_ns();
                if (i == warmup)
                        t0 = t;
                if (send(sv[0], msg, sizeof(msg), MSG_NOSIGNAL) != (ssize_t)sizeof(msg) ||
                    recv(sv[0], msg, sizeof(msg), 0) != (ssize_t)sizeof(msg)) {
                        close(sv[0]);
                        waitpid(pid, &status, 0);
                        return -EIO;
                }
                if (i >= warmup)
                        v[i - warmup] = now_ns() - t;
        }
        summarize(v, (size_t)count, now_ns() - t0, l);
        l->slept = 100;
        close(sv[0]);
        waitpid(pid, &status, 0);
        return 0;
}

static int cmd_bench(int argc, char **argv) {
        static const struct option opts[] = {{"count", required_argument, NULL, 'c'},
                                             {"warmup", required_argument, NULL, 'w'}, CLI_GLOBAL_OPTIONS, {0}};
        long count = 20000, warmup = 2000;
        struct lat adaptive = {0}, spin = {0}, sleep_ = {0}, unix_ = {0};
        struct dsv32_stats st;
        dsv32_client *c = NULL;
        uint64_t *v;
        int ch, r, ret = 0;

        while ((ch = getopt_long(argc, argv, CLI_SHORT_OPTIONS, opts, NULL)) >= 0) {
                if (ch == 'c' || ch == 'w') {
                        if (parse_long(optarg, ch == 'c' ? 100 : 0, 100000000, ch == 'c' ? &count : &warmup) < 0) {
                                fprintf(stderr, "dsv32 bench: --%s needs %s..100000000\n", ch == 'c' ? "count" : "warmup",
                                        ch == 'c' ? "100" : "0");
                                return CLI_EXIT_USAGE;
                        }
                } else if (cli_global_option(ch, "bench", argv, &ret) > 0) {
                        return cli_finish_output("bench", ret);
                }
        }
        if (argc - optind != 1 || strcmp(argv[optind], "ping") != 0) {
                fprintf(stderr, "dsv32 bench: the only benchmark is 'ping' (dsv32 bench --help)\n");
                return CLI_EXIT_USAGE;
        }
        v = malloc((size_t)count * sizeof(*v));
        if (!v)
                return CLI_EXIT_REQUEST;
        if ((ret = cli_connect("bench", 0, &c))) {
                free(v);
                return cli_finish_output("bench", ret);
        }
        if ((r = dsv32_stats(c, &st)) < 0 || (r = bench_shm(c, DSV32_WAIT_ADAPTIVE, count, warmup, v, &adaptive)) < 0 ||
            (r = bench_shm(c, DSV32_WAIT_SPIN, count, warmup, v, &spin)) < 0 ||
            (r = bench_shm(c, DSV32_WAIT_SLEEP, count / 4 > 100 ? count / 4 : 100, warmup / 4, v, &sleep_)) < 0) {
                ret = cli_fail(c, r, "bench", "a round trip failed");
                goto out;
        }
        if ((r = bench_unix(count, warmup, v, &unix_)) < 0) {
                fprintf(stderr, "dsv32 bench: the socketpair baseline failed: %s\n", strerror(-r));
                ret = CLI_EXIT_REQUEST;
                goto out;
        }
        cli_printf("dsv32 bench ping: %ld round trips per mode after %ld warm-up; daemon spins %u us before sleeping\n", count,
                   warmup, st.spin_us);
        cli_printf("%-34s %9s %9s %9s %14s %8s\n", "transport", "p50 us", "p99 us", "p99.9 us", "round trips/s", "slept");
#define ROW(name, l) cli_printf("%-34s %9.2f %9.2f %9.2f %14.0f %7.1f%%\n", name, (l).p50, (l).p99, (l).p999, (l).per_s, (l).slept)
        ROW("shm rings, blocking (adaptive)", adaptive);
        ROW("shm rings, spin", spin);
        ROW("shm rings, sleep at once", sleep_);
        ROW("unix socketpair (baseline)", unix_);
#undef ROW
        cli_printf("ratio unix/shm-blocking p50: %.1fx (target >= 5x)\n", unix_.p50 / adaptive.p50);
        cli_printf("ratio unix/shm-spin p50:     %.1fx; shm spin p50 %.2f us (target < 1 us)\n", unix_.p50 / spin.p50, spin.p50);
        cli_printf("ratio unix/shm-sleep p50:    %.1fx (every message pays a wakeup)\n", unix_.p50 / sleep_.p50);
        ret = 0;
out:
        dsv32_disconnect(c);
        free(v);
        return cli_finish_output("bench", ret);
}

/* ------------------------------------------------------------------ main */

static const struct {
        const char *name;
        int (*run)(int argc, char **argv);
} cmds[] = {
        {"generate", cmd_generate}, {"chat", cli_chat},   {"tokenize", cmd_tokenize}, {"detokenize", cmd_detokenize},
        {"status", cmd_status},     {"session", cmd_session}, {"ping", cmd_ping},     {"bench", cmd_bench},
};

int main(int argc, char **argv) {
        char **args;
        int i = 1, k = 0, r;

        signal(SIGPIPE, SIG_IGN); /* a closed pipe is a write error we report (cli_out.c) */
        opterr = 0;
        /* the global options before the command move behind it, where its getopt_long
         * handles them like the ones after it */
        while (i < argc && argv[i][0] == '-') {
                if (strcmp(argv[i], "--") == 0)
                        break;
                if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
                        cli_usage(stdout, NULL);
                        return cli_finish_output("--help", 0);
                }
                if (strcmp(argv[i], "--version") == 0) {
                        printf("dsv32 %s (libdsv32 %s)\n", PACKAGE_VERSION, dsv32_version());
                        return cli_finish_output("--version", 0);
                }
                if (strcmp(argv[i], "--socket") == 0 && i + 1 < argc)
                        i += 2;
                else if (strncmp(argv[i], "--socket=", 9) == 0 || strcmp(argv[i], "-v") == 0 ||
                         strcmp(argv[i], "--verbose") == 0 || strcmp(argv[i], "--json") == 0)
                        i++;
                else {
                        fprintf(stderr, "dsv32: unknown option %s before the command (dsv32 --help)\n", argv[i]);
                        return CLI_EXIT_USAGE;
                }
        }
        if (i >= argc || argv[i][0] == '-') {
                cli_usage(stderr, NULL);
                return CLI_EXIT_USAGE;
        }
        args = calloc((size_t)argc + 1, sizeof(*args));
        if (!args)
                return CLI_EXIT_REQUEST;
        args[k++] = argv[i];
        for (int j = 1; j < argc; j++)
                if (j != i)
                        args[k++] = argv[j];
        for (size_t c = 0; c < sizeof(cmds) / sizeof(cmds[0]); c++)
                if (strcmp(argv[i], cmds[c].name) == 0) {
                        r = cmds[c].run(k, args);
                        free(args);
                        return r;
                }
        fprintf(stderr, "dsv32: unknown command '%s' (dsv32 --help lists them)\n", argv[i]);
        free(args);
        return CLI_EXIT_USAGE;
}
