/* dsv32: the command-line client of dsv32d (generate, chat, tokenize, detokenize, status,
 * ping, bench ping), a thin user of libdsv32's public API.
 *
 * Exit codes: 0 success; 1 the daemon refused or failed the request; 2 usage error;
 * 3 the daemon is not reachable or not working; 4 permission denied. */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client/dsv32.h"
#include "ipc/idlist.h"

#define MIN_IDX(a, b) ((a) < (b) ? (a) : (b))

enum { EXIT_REQUEST = 1, EXIT_USAGE = 2, EXIT_UNAVAILABLE = 3, EXIT_PERM = 4 };

static const char *socket_path;
static bool verbose;

static void usage(FILE *f) {
        fprintf(f,
                "Usage: dsv32 [--socket PATH] COMMAND [options]\n"
                "Talk to dsv32d, the local DeepSeek-V3.2 daemon.\n\n"
                "Commands:\n"
                "  generate [PROMPT...]    complete a prompt (words, or stdin when none), streaming\n"
                "      --tokens ID,ID,...  prompt as token ids instead of text\n"
                "      --max-tokens N      tokens to generate (default 256)\n"
                "      --temperature T     0 = greedy (default 0)\n"
                "      --top-p P, --top-k K, --min-p P\n"
                "      --seed N            same seed + same request = same tokens\n"
                "      --stop ID,...       extra stop tokens\n"
                "      --session NAME      run on a KV-cache session: the daemon keeps this prompt's and\n"
                "                          the output's KV cache, and a later request on NAME prefills\n"
                "                          only what follows the previous prompt (same output as without it)\n"
                "      --reuse-output      also reuse the cache of the tokens the session generated (less\n"
                "                          prefill; the output may differ slightly from a run without it)\n"
                "      --ids               print token ids even when text is available\n"
                "      --no-stream         print everything at the end\n"
                "      --ignore-eos        do not stop at the end-of-sequence token\n"
                "  chat                    interactive chat (one message per line; Ctrl-D ends)\n"
                "      --system TEXT, --max-tokens N, --temperature T, --seed N, --thinking\n"
                "      --session NAME      keep the conversation's KV cache in session NAME (kept after\n"
                "                          the chat ends); default: a private session closed at the end\n"
                "      --no-session        resend and prefill the whole conversation every turn\n"
                "      --reuse-output      reuse the cache of the replies too (see generate)\n"
                "  session open|close|pin|unpin NAME\n"
                "                          make, free, pin (never evict; counts against your quota) or\n"
                "                          unpin a session; sessions live in dsv32d's memory only (they\n"
                "                          are not saved across restarts) and close after an idle timeout\n"
                "  tokenize [TEXT...]      print the token ids of TEXT (or stdin)\n"
                "      --bos               prepend the BOS token\n"
                "  detokenize ID,ID,...    print the text of token ids\n"
                "  status                  daemon, model, memory, clients, throughput\n"
                "  ping [--count N]        round trips to the daemon\n"
                "  bench ping [--count N] [--warmup N]\n"
                "                          ping-pong latency over the shared-memory rings (blocking\n"
                "                          and spin modes) against a Unix socketpair baseline\n\n"
                "Options:\n"
                "  --socket PATH           daemon socket (default $DSV32_SOCKET, else %s)\n"
                "  -v, --verbose           timings and details on stderr\n"
                "  -h, --help              this text\n\n"
                "Exit status: 0 ok, 1 request failed, 2 usage, 3 daemon unavailable, 4 permission denied.\n",
                DSV32_DEFAULT_SOCKET);
}

static int exit_for(int err) {
        if (err == -EACCES || err == -EPERM)
                return EXIT_PERM;
        if (err == -ENOENT || err == -ECONNREFUSED || err == -ECONNRESET || err == -ETIMEDOUT || err == -EPROTO ||
            err == -EPROTONOSUPPORT || err == -ESHUTDOWN || err == -EUSERS)
                return EXIT_UNAVAILABLE;
        return EXIT_REQUEST;
}

static int fail(dsv32_client *c, int err, const char *what) {
        fprintf(stderr, "dsv32: %s: %s\n", what, dsv32_last_error(c));
        return exit_for(err);
}

static int connect_daemon(dsv32_client **ret, uint32_t sub_bytes) {
        struct dsv32_connect_opts o = {.struct_size = sizeof(o), .socket_path = socket_path, .client_name = "dsv32",
                                       .submit_ring_bytes = sub_bytes};
        int r = dsv32_connect(&o, ret);
        if (r < 0) {
                fprintf(stderr, "dsv32: %s\n", dsv32_last_error(NULL));
                return exit_for(r);
        }
        return 0;
}

/* Waits while the daemon loads its model, with a spinner on a terminal. */
static int wait_ready(dsv32_client *c) {
        static const char spin[] = "|/-\\";
        bool tty = isatty(STDERR_FILENO), said = false;
        for (unsigned i = 0;; i++) {
                struct dsv32_stats st;
                int r = dsv32_stats(c, &st);
                if (r < 0)
                        return fail(c, r, "cannot query dsv32d");
                if (st.state == DSV32_STATE_READY)
                        break;
                if (st.state == DSV32_STATE_FAILED) {
                        fprintf(stderr, "dsv32: dsv32d could not load its model (journalctl -u dsv32d says why)\n");
                        return EXIT_UNAVAILABLE;
                }
                if (st.state == DSV32_STATE_DRAINING) {
                        fprintf(stderr, "dsv32: dsv32d is shutting down\n");
                        return EXIT_UNAVAILABLE;
                }
                if (tty)
                        fprintf(stderr, "\r%c waiting for dsv32d to load the model: %u.%u%%", spin[i % 4], st.load_permille / 10,
                                st.load_permille % 10);
                else if (!said)
                        fprintf(stderr, "dsv32: waiting for dsv32d to load the model\n");
                said = true;
                nanosleep(&(struct timespec){.tv_nsec = 100000000}, NULL);
        }
        if (tty && said)
                fprintf(stderr, "\r%60s\r", "");
        return 0;
}

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

/* ------------------------------------------------------------------ generate */

struct printer {
        bool ids;
        bool any;
};

static int print_tokens(void *ud, const int32_t *t, size_t n, const char *text, size_t text_len) {
        struct printer *p = ud;
        if (!p->ids && text) {
                fwrite(text, 1, text_len, stdout);
        } else {
                for (size_t i = 0; i < n; i++)
                        printf("%s%d", p->any || i ? "," : "", t[i]);
                if (n)
                        p->any = true;
        }
        fflush(stdout);
        return 0;
}

static volatile sig_atomic_t interrupted;
static void on_sigint(int sig) { interrupted = 1; }
static int print_tokens_interruptible(void *ud, const int32_t *t, size_t n, const char *text, size_t text_len) {
        print_tokens(ud, t, n, text, text_len);
        return interrupted ? 1 : 0;
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

/* Options generate and chat share: 0, or EXIT_USAGE after saying why (cmd names the command). */
static int opt_max_tokens(const char *cmd, const char *arg, struct dsv32_request *q) {
        long v;
        if (parse_long(arg, 1, 1 << 20, &v) < 0) {
                fprintf(stderr, "dsv32 %s: --max-tokens needs 1..%d\n", cmd, 1 << 20);
                return EXIT_USAGE;
        }
        q->max_tokens = (uint32_t)v;
        return 0;
}

static int opt_temperature(const char *cmd, const char *arg, struct dsv32_request *q) {
        if (parse_float(arg, &q->temperature) < 0 || q->temperature < 0) {
                fprintf(stderr, "dsv32 %s: --temperature needs a number >= 0\n", cmd);
                return EXIT_USAGE;
        }
        return 0;
}

static int opt_seed(const char *cmd, const char *arg, struct dsv32_request *q) {
        char *end;
        errno = 0;
        q->seed = strtoull(arg, &end, 10);
        if (errno || end == arg || *end) {
                fprintf(stderr, "dsv32 %s: --seed needs a non-negative integer\n", cmd);
                return EXIT_USAGE;
        }
        q->flags |= DSV32_REQ_SEED;
        return 0;
}

static int cmd_generate(int argc, char **argv) {
        static const struct option opts[] = {
                {"tokens", required_argument, NULL, 't'}, {"max-tokens", required_argument, NULL, 'n'},
                {"temperature", required_argument, NULL, 'T'}, {"top-p", required_argument, NULL, 'p'},
                {"top-k", required_argument, NULL, 'k'}, {"min-p", required_argument, NULL, 'm'},
                {"seed", required_argument, NULL, 's'}, {"stop", required_argument, NULL, 'S'},
                {"session", required_argument, NULL, 'X'}, {"ids", no_argument, NULL, 'i'},
                {"no-stream", no_argument, NULL, 'N'}, {"ignore-eos", no_argument, NULL, 'E'},
                {"reuse-output", no_argument, NULL, 'R'}, {"help", no_argument, NULL, 'h'}, {0},
        };
        struct dsv32_request q = {.struct_size = sizeof(q)};
        struct printer pr = {0};
        struct dsv32_result res;
        int32_t *tokens = NULL, *stop = NULL;
        size_t n_tokens = 0, n_stop = 0, text_len = 0;
        char *text = NULL;
        dsv32_client *c = NULL;
        long v;
        int ch, r, ret;

        optind = 1;
        while ((ch = getopt_long(argc, argv, "h", opts, NULL)) >= 0) {
                switch (ch) {
                case 't':
                        if (dsv_parse_id_list(optarg, &tokens, &n_tokens) < 0 || !n_tokens) {
                                fprintf(stderr, "dsv32 generate: --tokens needs comma-separated token ids\n");
                                return EXIT_USAGE;
                        }
                        break;
                case 'n':
                        if (opt_max_tokens("generate", optarg, &q))
                                return EXIT_USAGE;
                        break;
                case 'T':
                        if (opt_temperature("generate", optarg, &q))
                                return EXIT_USAGE;
                        break;
                case 'p':
                        if (parse_float(optarg, &q.top_p) < 0 || q.top_p <= 0 || q.top_p > 1) {
                                fprintf(stderr, "dsv32 generate: --top-p needs a number in (0, 1]\n");
                                return EXIT_USAGE;
                        }
                        break;
                case 'k':
                        if (parse_long(optarg, 0, 1 << 24, &v) < 0) {
                                fprintf(stderr, "dsv32 generate: --top-k needs a number >= 0\n");
                                return EXIT_USAGE;
                        }
                        q.top_k = (int32_t)v;
                        break;
                case 'm':
                        if (parse_float(optarg, &q.min_p) < 0 || q.min_p < 0 || q.min_p > 1) {
                                fprintf(stderr, "dsv32 generate: --min-p needs a number in [0, 1]\n");
                                return EXIT_USAGE;
                        }
                        break;
                case 's':
                        if (opt_seed("generate", optarg, &q))
                                return EXIT_USAGE;
                        break;
                case 'S':
                        if (dsv_parse_id_list(optarg, &stop, &n_stop) < 0) {
                                fprintf(stderr, "dsv32 generate: --stop needs comma-separated token ids\n");
                                return EXIT_USAGE;
                        }
                        break;
                case 'X':
                        q.session = optarg;
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
                case 'h':
                        usage(stdout);
                        return 0;
                default:
                        return EXIT_USAGE;
                }
        }
        if (tokens && optind < argc) {
                fprintf(stderr, "dsv32 generate: give either --tokens or a text prompt, not both\n");
                return EXIT_USAGE;
        }
        if (!tokens) {
                text = optind < argc ? join_args(argc - optind, argv + optind, &text_len) : read_stdin(&text_len);
                if (!text) {
                        fprintf(stderr, "dsv32 generate: out of memory\n");
                        return EXIT_REQUEST;
                }
                if (!text_len) {
                        fprintf(stderr, "dsv32 generate: the prompt is empty (give words, stdin, or --tokens)\n");
                        free(text);
                        return EXIT_USAGE;
                }
        }
        q.tokens = tokens;
        q.n_tokens = n_tokens;
        q.text = text;
        q.text_len = text_len;
        q.stop_tokens = stop;
        q.n_stop_tokens = n_stop;
        ret = connect_daemon(&c, (uint32_t)(text_len + 4 * n_tokens + 4096) * 2);
        if (ret)
                goto out;
        if ((ret = wait_ready(c)))
                goto out;
        signal(SIGINT, on_sigint);
        r = dsv32_generate(c, &q, print_tokens_interruptible, &pr, &res);
        if (r < 0) {
                if (pr.any)
                        printf("\n");
                ret = fail(c, r, "generate failed");
                goto out;
        }
        printf("\n");
        if (verbose)
                fprintf(stderr,
                        "[%s: %u prompt (%u reused from the session) + %u generated tokens; queued %.1f ms, prefill %.1f "
                        "ms, decode %.1f ms]\n",
                        dsv32_finish_name(res.finish), res.usage.prompt_tokens, res.usage.cached_tokens,
                        res.usage.completion_tokens, res.usage.queue_us / 1e3, res.usage.prefill_us / 1e3,
                        res.usage.decode_us / 1e3);
        ret = res.finish == DSV32_FINISH_SHUTDOWN ? EXIT_UNAVAILABLE : 0;
out:
        dsv32_disconnect(c);
        free(tokens);
        free(stop);
        free(text);
        return ret;
}

/* ------------------------------------------------------------------ chat */

struct reply_buf {
        char *s;
        size_t n, cap;
};

static int collect_reply(void *ud, const int32_t *t, size_t n, const char *text, size_t len) {
        struct reply_buf *b = ud;
        fwrite(text ? text : "", 1, text ? len : 0, stdout);
        fflush(stdout);
        if (text && len) {
                if (b->cap - b->n <= len) {
                        size_t cap = (b->cap + len) * 2;
                        char *s = realloc(b->s, cap);
                        if (!s)
                                return 1;
                        b->s = s;
                        b->cap = cap;
                }
                memcpy(b->s + b->n, text, len);
                b->n += len;
                b->s[b->n] = 0;
        }
        return interrupted ? 1 : 0;
}

static int cmd_chat(int argc, char **argv) {
        static const struct option opts[] = {
                {"system", required_argument, NULL, 'y'}, {"max-tokens", required_argument, NULL, 'n'},
                {"temperature", required_argument, NULL, 'T'}, {"seed", required_argument, NULL, 's'},
                {"thinking", no_argument, NULL, 'k'}, {"session", required_argument, NULL, 'X'},
                {"no-session", no_argument, NULL, 'Z'}, {"reuse-output", no_argument, NULL, 'R'},
                {"help", no_argument, NULL, 'h'}, {0},
        };
        char auto_session[64];
        bool no_session = false, own_session = false;
        uint64_t prefilled = 0;
        struct dsv32_request q = {.struct_size = sizeof(q), .max_tokens = 1024, .temperature = 0.6f};
        struct dsv32_chat_message *msgs = NULL;
        char **owned = NULL;
        size_t n_msgs = 0, cap = 0;
        const char *system = NULL;
        struct dsv32_info info;
        dsv32_client *c = NULL;
        bool tty = isatty(STDIN_FILENO);
        char line[65536];
        int ch, r, ret;

        optind = 1;
        while ((ch = getopt_long(argc, argv, "h", opts, NULL)) >= 0) {
                switch (ch) {
                case 'y':
                        system = optarg;
                        break;
                case 'n':
                        if (opt_max_tokens("chat", optarg, &q))
                                return EXIT_USAGE;
                        break;
                case 'T':
                        if (opt_temperature("chat", optarg, &q))
                                return EXIT_USAGE;
                        break;
                case 's':
                        if (opt_seed("chat", optarg, &q))
                                return EXIT_USAGE;
                        break;
                case 'k':
                        q.flags |= DSV32_REQ_THINKING;
                        break;
                case 'X':
                        q.session = optarg;
                        break;
                case 'Z':
                        no_session = true;
                        break;
                case 'R':
                        q.flags |= DSV32_REQ_REUSE_OUTPUT;
                        break;
                case 'h':
                        usage(stdout);
                        return 0;
                default:
                        return EXIT_USAGE;
                }
        }
        if (no_session && q.session) {
                fprintf(stderr, "dsv32 chat: give --session or --no-session, not both\n");
                return EXIT_USAGE;
        }
        if ((ret = connect_daemon(&c, 4u << 20)))
                return ret;
        if ((ret = wait_ready(c)))
                goto out;
        dsv32_get_info(c, &info);
        {
                struct dsv32_stats st;
                if (dsv32_stats(c, &st) == 0)
                        info.features = st.features;
        }
        if (!(info.features & DSV32_FEATURE_CHAT)) {
                fprintf(stderr, "dsv32 chat: this dsv32d cannot encode chat messages (it needs the tokenizer and the V3.2 "
                                "chat template); use 'dsv32 generate --tokens ...'\n");
                ret = EXIT_REQUEST;
                goto out;
        }
        /* each turn resends the conversation; in a session the daemon prefills only what is
         * new since the last turn (the user's message and the chat template around it) */
        if (!no_session && !q.session && (info.features & DSV32_FEATURE_SESSIONS)) {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                snprintf(auto_session, sizeof(auto_session), "chat-%d-%llx", (int)getpid(),
                         (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec);
                q.session = auto_session;
                own_session = true;
        }
        signal(SIGINT, on_sigint);
        for (;;) {
                struct reply_buf reply = {0};
                struct dsv32_result res;
                size_t len;
                if (tty) {
                        fputs("> ", stdout);
                        fflush(stdout);
                }
                if (!fgets(line, sizeof(line), stdin))
                        break;
                len = strlen(line);
                while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
                        line[--len] = 0;
                if (!len)
                        continue;
                if (n_msgs + 3 > cap) {
                        cap = cap ? 2 * cap : 16;
                        msgs = realloc(msgs, cap * sizeof(*msgs));
                        owned = realloc(owned, cap * sizeof(*owned));
                        if (!msgs || !owned) {
                                ret = EXIT_REQUEST;
                                goto out;
                        }
                }
                if (n_msgs == 0 && system) {
                        msgs[n_msgs].role = "system";
                        owned[n_msgs] = NULL;
                        msgs[n_msgs++].content = system;
                }
                owned[n_msgs] = strdup(line);
                msgs[n_msgs].role = "user";
                msgs[n_msgs].content = owned[n_msgs];
                n_msgs++;
                q.messages = msgs;
                q.n_messages = n_msgs;
                interrupted = 0;
                r = dsv32_generate(c, &q, collect_reply, &reply, &res);
                printf("\n");
                if (r < 0) {
                        free(reply.s);
                        ret = fail(c, r, "chat failed");
                        goto out;
                }
                prefilled += res.usage.prompt_tokens - res.usage.cached_tokens;
                if (verbose)
                        fprintf(stderr, "[turn: %u prompt tokens, %u reused from the session, %u prefilled (%llu in all), %u generated]\n",
                                res.usage.prompt_tokens, res.usage.cached_tokens,
                                res.usage.prompt_tokens - res.usage.cached_tokens, (unsigned long long)prefilled,
                                res.usage.completion_tokens);
                owned[n_msgs] = reply.s ? reply.s : strdup("");
                msgs[n_msgs].role = "assistant";
                msgs[n_msgs].content = owned[n_msgs];
                n_msgs++;
        }
        ret = 0;
out:
        if (own_session)
                dsv32_session_close(c, auto_session, NULL); /* frees its KV cache now, not at the idle timeout */
        for (size_t i = 0; i < n_msgs; i++)
                free(owned[i]);
        free(owned);
        free(msgs);
        dsv32_disconnect(c);
        return ret;
}

/* ------------------------------------------------------------------ tokenize, status */

static int cmd_tokenize(int argc, char **argv) {
        bool bos = false;
        int i = 1, r, ret;
        size_t len, n;
        char *text;
        int32_t *ids;
        dsv32_client *c;

        if (i < argc && strcmp(argv[i], "--bos") == 0) {
                bos = true;
                i++;
        }
        text = i < argc ? join_args(argc - i, argv + i, &len) : read_stdin(&len);
        if (!text)
                return EXIT_REQUEST;
        if ((ret = connect_daemon(&c, (uint32_t)len * 2 + 4096))) {
                free(text);
                return ret;
        }
        if ((ret = wait_ready(c)) == 0) {
                r = dsv32_tokenize(c, text, len, bos ? DSV32_TOKENIZE_ADD_BOS : 0, &ids, &n);
                if (r < 0) {
                        ret = fail(c, r, "tokenize failed");
                } else {
                        for (size_t k = 0; k < n; k++)
                                printf("%s%d", k ? "," : "", ids[k]);
                        printf("\n");
                        dsv32_free(ids);
                }
        }
        dsv32_disconnect(c);
        free(text);
        return ret;
}

static int cmd_detokenize(int argc, char **argv) {
        int32_t *ids = NULL;
        size_t n = 0, len;
        char *text;
        dsv32_client *c;
        int r, ret;

        if (argc != 2 || dsv_parse_id_list(argv[1], &ids, &n) < 0) {
                fprintf(stderr, "dsv32 detokenize: give comma-separated token ids\n");
                return EXIT_USAGE;
        }
        if ((ret = connect_daemon(&c, (uint32_t)n * 8 + 4096))) {
                free(ids);
                return ret;
        }
        if ((ret = wait_ready(c)) == 0) {
                r = dsv32_detokenize(c, ids, n, &text, &len);
                if (r < 0) {
                        ret = fail(c, r, "detokenize failed");
                } else {
                        fwrite(text, 1, len, stdout);
                        printf("\n");
                        dsv32_free(text);
                }
        }
        dsv32_disconnect(c);
        free(ids);
        return ret;
}

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

static int cmd_status(int argc, char **argv) {
        struct dsv32_stats s;
        struct dsv32_wait_stats ws;
        dsv32_client *c;
        int r, ret;

        if ((ret = connect_daemon(&c, 0)))
                return ret;
        r = dsv32_stats(c, &s);
        if (r < 0) {
                ret = fail(c, r, "status failed");
                dsv32_disconnect(c);
                return ret;
        }
        dsv32_get_wait_stats(c, &ws);
        printf("dsv32d %s, pid %u, up %.1f s: %s", s.daemon_version, s.daemon_pid, s.uptime_ms / 1e3, state_name(s.state));
        if (s.state == DSV32_STATE_LOADING)
                printf(" (%u.%u%%)", s.load_permille / 10, s.load_permille % 10);
        printf("\n");
        printf("model:      %s\n", s.model[0] ? s.model : "(loading)");
        printf("            %.1f MB of weights, context %d, backend %s (%u threads), %s numerics\n", s.weight_bytes / 1e6,
               s.max_context, s.backend, s.threads, s.numerics);
        printf("            text: %s, chat: %s\n", s.features & DSV32_FEATURE_TEXT ? "yes" : "no (token ids only)",
               s.features & DSV32_FEATURE_CHAT ? "yes" : "no");
        printf("memory:     RSS %.1f MB; KV cache %llu/%llu pages of %llu tokens used (%llu bytes/token)\n", s.rss_bytes / 1e6,
               (unsigned long long)s.kv_pages_used, (unsigned long long)s.kv_pages_total,
               (unsigned long long)s.kv_page_tokens, (unsigned long long)s.kv_bytes_per_token);
        printf("clients:    %u connected; requests %u running, %u waiting, %u parked (slow readers)\n", s.clients,
               s.requests_running, s.requests_waiting, s.requests_parked);
        printf("sessions:   %u (%u pinned) holding %llu KV pages; prefix reuse %llu of %llu prompt tokens (%.1f%%); %llu "
               "evictions\n",
               s.sessions, s.sessions_pinned, (unsigned long long)s.session_pages, (unsigned long long)s.cached_tokens_total,
               (unsigned long long)s.prompt_tokens_total,
               s.prompt_tokens_total ? 100.0 * (double)s.cached_tokens_total / (double)s.prompt_tokens_total : 0.0,
               (unsigned long long)s.sessions_evicted);
        printf("throughput: %.1f tok/s decode, %.1f tok/s prefill (last second); totals: %llu requests, %llu prompt and "
               "%llu generated tokens in %llu steps\n",
               s.decode_tokens_per_s, s.prefill_tokens_per_s, (unsigned long long)s.requests_total,
               (unsigned long long)s.prompt_tokens_total, (unsigned long long)s.generated_tokens_total,
               (unsigned long long)s.steps_total);
        printf("ipc:        daemon spins %u us before sleeping; it slept %llu times (%llu wakeups), received %llu and "
               "sent %llu doorbells\n",
               s.spin_us, (unsigned long long)s.loop_sleeps, (unsigned long long)s.loop_wakeups,
               (unsigned long long)s.doorbells_received, (unsigned long long)s.doorbells_sent);
        printf("            this client waited %llu times: %llu answered while spinning, %llu slept\n",
               (unsigned long long)ws.waits, (unsigned long long)ws.spins_won, (unsigned long long)ws.sleeps);
        dsv32_disconnect(c);
        return 0;
}

static int cmd_session(int argc, char **argv) {
        struct dsv32_session_info si;
        dsv32_client *c;
        const char *op;
        int r, ret;

        if (argc == 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
                usage(stdout);
                return 0;
        }
        if (argc != 3 || (strcmp(argv[1], "open") && strcmp(argv[1], "close") && strcmp(argv[1], "pin") &&
                          strcmp(argv[1], "unpin"))) {
                fprintf(stderr, "dsv32 session: open|close|pin|unpin NAME\n");
                return EXIT_USAGE;
        }
        op = argv[1];
        if ((ret = connect_daemon(&c, 0)))
                return ret;
        if ((ret = wait_ready(c)))
                goto out;
        if (strcmp(op, "open") == 0)
                r = dsv32_session_open(c, argv[2], 0, &si);
        else if (strcmp(op, "close") == 0)
                r = dsv32_session_close(c, argv[2], &si);
        else
                r = dsv32_session_pin(c, argv[2], strcmp(op, "pin") == 0, &si);
        if (r < 0) {
                char what[128];
                snprintf(what, sizeof(what), "session %s %s", op, argv[2]);
                ret = fail(c, r, what);
                if (r == -ENOENT)
                        ret = EXIT_REQUEST; /* no such session (the daemon answered) */
                goto out;
        }
        printf("session %s: %s; %u tokens in %u KV pages%s%s\n", argv[2],
               strcmp(op, "close") == 0 ? "closed" : si.flags & DSV32_SESSION_CREATED ? "created" : "open", si.n_tokens,
               si.n_pages, si.flags & DSV32_SESSION_PINNED ? ", pinned" : "",
               si.flags & DSV32_SESSION_BUSY ? ", a request is running on it" : "");
out:
        dsv32_disconnect(c);
        return ret;
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
        long count = 5;
        dsv32_client *c;
        int ret;
        if (argc == 3 && strcmp(argv[1], "--count") == 0) {
                if (parse_long(argv[2], 1, 1000000, &count) < 0)
                        return EXIT_USAGE;
        } else if (argc != 1) {
                fprintf(stderr, "dsv32 ping: [--count N]\n");
                return EXIT_USAGE;
        }
        if ((ret = connect_daemon(&c, 0)))
                return ret;
        for (long i = 0; i < count; i++) {
                uint64_t rtt;
                int r = dsv32_ping(c, &rtt);
                if (r < 0) {
                        ret = fail(c, r, "ping failed");
                        break;
                }
                printf("pong from dsv32d: %.2f us\n", rtt / 1e3);
        }
        dsv32_disconnect(c);
        return ret;
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
        long count = 20000, warmup = 2000;
        struct lat adaptive = {0}, spin = {0}, sleep_ = {0}, unix_ = {0};
        struct dsv32_stats st;
        dsv32_client *c;
        uint64_t *v;
        int r, ret;

        if (argc < 2 || strcmp(argv[1], "ping") != 0) {
                fprintf(stderr, "dsv32 bench: the only benchmark is 'ping'\n");
                return EXIT_USAGE;
        }
        for (int i = 2; i < argc; i++) {
                if (i + 1 < argc && strcmp(argv[i], "--count") == 0 && parse_long(argv[i + 1], 100, 100000000, &count) == 0)
                        i++;
                else if (i + 1 < argc && strcmp(argv[i], "--warmup") == 0 && parse_long(argv[i + 1], 0, 100000000, &warmup) == 0)
                        i++;
                else {
                        fprintf(stderr, "dsv32 bench ping: [--count N (>= 100)] [--warmup N]\n");
                        return EXIT_USAGE;
                }
        }
        v = malloc((size_t)count * sizeof(*v));
        if (!v)
                return EXIT_REQUEST;
        if ((ret = connect_daemon(&c, 0))) {
                free(v);
                return ret;
        }
        if ((r = dsv32_stats(c, &st)) < 0 || (r = bench_shm(c, DSV32_WAIT_ADAPTIVE, count, warmup, v, &adaptive)) < 0 ||
            (r = bench_shm(c, DSV32_WAIT_SPIN, count, warmup, v, &spin)) < 0 ||
            (r = bench_shm(c, DSV32_WAIT_SLEEP, count / 4 > 100 ? count / 4 : 100, warmup / 4, v, &sleep_)) < 0) {
                ret = fail(c, r, "bench failed");
                goto out;
        }
        if ((r = bench_unix(count, warmup, v, &unix_)) < 0) {
                fprintf(stderr, "dsv32 bench: the socketpair baseline failed: %s\n", strerror(-r));
                ret = EXIT_REQUEST;
                goto out;
        }
        printf("dsv32 bench ping: %ld round trips per mode after %ld warm-up; daemon spins %u us before sleeping\n", count,
               warmup, st.spin_us);
        printf("%-34s %9s %9s %9s %14s %8s\n", "transport", "p50 us", "p99 us", "p99.9 us", "round trips/s", "slept");
#define ROW(name, l) printf("%-34s %9.2f %9.2f %9.2f %14.0f %7.1f%%\n", name, (l).p50, (l).p99, (l).p999, (l).per_s, (l).slept)
        ROW("shm rings, blocking (adaptive)", adaptive);
        ROW("shm rings, spin", spin);
        ROW("shm rings, sleep at once", sleep_);
        ROW("unix socketpair (baseline)", unix_);
        printf("ratio unix/shm-blocking p50: %.1fx (target >= 5x)\n", unix_.p50 / adaptive.p50);
        printf("ratio unix/shm-spin p50:     %.1fx; shm spin p50 %.2f us (target < 1 us)\n", unix_.p50 / spin.p50, spin.p50);
        printf("ratio unix/shm-sleep p50:    %.1fx (every message pays a wakeup)\n", unix_.p50 / sleep_.p50);
        ret = 0;
out:
        dsv32_disconnect(c);
        free(v);
        return ret;
}

int main(int argc, char **argv) {
        int i = 1;
        signal(SIGPIPE, SIG_IGN);
        while (i < argc && argv[i][0] == '-') {
                if (strcmp(argv[i], "--socket") == 0 && i + 1 < argc) {
                        socket_path = argv[i + 1];
                        i += 2;
                } else if (strncmp(argv[i], "--socket=", 9) == 0) {
                        socket_path = argv[i] + 9;
                        i++;
                } else if (strcmp(argv[i], "-v") == 0 || strcmp(argv[i], "--verbose") == 0) {
                        verbose = true;
                        i++;
                } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
                        usage(stdout);
                        return 0;
                } else if (strcmp(argv[i], "--version") == 0) {
                        printf("dsv32 %s\n", dsv32_version());
                        return 0;
                } else {
                        fprintf(stderr, "dsv32: unknown option %s (try --help)\n", argv[i]);
                        return EXIT_USAGE;
                }
        }
        if (i >= argc) {
                usage(stderr);
                return EXIT_USAGE;
        }
        argc -= i;
        argv += i;
        {
                static const struct {
                        const char *name;
                        int (*run)(int argc, char **argv);
                } cmds[] = {
                        {"generate", cmd_generate}, {"chat", cmd_chat},       {"tokenize", cmd_tokenize},
                        {"detokenize", cmd_detokenize}, {"status", cmd_status}, {"session", cmd_session},
                        {"ping", cmd_ping},         {"bench", cmd_bench},
                };
                for (size_t k = 0; k < sizeof(cmds) / sizeof(cmds[0]); k++)
                        if (strcmp(argv[0], cmds[k].name) == 0)
                                return cmds[k].run(argc, argv);
        }
        fprintf(stderr, "dsv32: unknown command '%s' (try --help)\n", argv[0]);
        return EXIT_USAGE;
}
