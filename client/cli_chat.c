/* dsv32 chat: an interactive conversation, one user message per input line, each reply
 * streamed. Every turn sends the whole conversation; the daemon's session keeps its KV
 * cache so that only the new part is prefilled. Without --session the session is private
 * (the daemon closes it when this connection goes away; we close it ourselves on the way
 * out, signals included). With --session NAME the conversation is named: its text is kept
 * in a transcript file (cli_transcript_path) rewritten after every answered turn, so that
 * a later `chat --session NAME` goes on where it stopped. A turn the daemon refuses (bad
 * text, a limit) is reported with the user's line number and dropped; the chat goes on.
 * With a daemon that has chat events (DSV32_FEATURE_CHAT_EVENTS) the reply is read through
 * them: reasoning (--think) dimmed on a terminal or after "(thinking) " in a pipe, content,
 * tool calls as "[tool call ID: NAME ARGUMENTS]" lines; with --json each is an event object
 * (reasoning, content, tool_call, tool_call_arguments, tool_call_end, parse_error) besides
 * the tokens and done ones. The conversation keeps the content only. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "client/cli.h"

#define CHAT_DEFAULT_MAX_TOKENS 1024

struct conv {
        struct dsv32_chat_message *msgs;
        char **owned; /* the strings of msgs (NULL: not ours) */
        int *line;    /* user messages: the input line they came from (0: the saved transcript) */
        size_t n, cap;
};

static int conv_push(struct conv *v, const char *role, const char *content, size_t len, int line) {
        char *s;
        if (v->n == v->cap) {
                size_t cap = v->cap ? 2 * v->cap : 16;
                struct dsv32_chat_message *m = realloc(v->msgs, cap * sizeof(*m));
                char **o = m ? realloc(v->owned, cap * sizeof(*o)) : NULL;
                int *l = o ? realloc(v->line, cap * sizeof(*l)) : NULL;
                if (m)
                        v->msgs = m;
                if (o)
                        v->owned = o;
                if (!l)
                        return -ENOMEM;
                v->line = l;
                v->cap = cap;
        }
        s = malloc(len + 1);
        if (!s)
                return -ENOMEM;
        memcpy(s, content, len);
        s[len] = 0;
        v->owned[v->n] = s;
        v->msgs[v->n].role = role; /* static strings */
        v->msgs[v->n].content = s;
        v->line[v->n] = line;
        v->n++;
        return 0;
}

static void conv_pop(struct conv *v) {
        if (v->n)
                free(v->owned[--v->n]);
}

static void conv_free(struct conv *v) {
        while (v->n)
                conv_pop(v);
        free(v->msgs);
        free(v->owned);
        free(v->line);
}

static const char *role_static(const char *r) {
        if (!strcmp(r, "system"))
                return "system";
        if (!strcmp(r, "user"))
                return "user";
        if (!strcmp(r, "assistant"))
                return "assistant";
        return NULL;
}

/* ------------------------------------------------------------------ transcripts */

int cli_transcript_path(const char *name, char *buf, size_t n) {
        const char *state = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
        int k;
        if (state && *state == '/')
                k = snprintf(buf, n, "%s/dsv32/chat/%s.jsonl", state, name);
        else if (home && *home)
                k = snprintf(buf, n, "%s/.local/state/dsv32/chat/%s.jsonl", home, name);
        else
                return -ENOENT;
        return k > 0 && (size_t)k < n ? 0 : -ENAMETOOLONG;
}

/* Creates the directories of path (mode 0700). */
static int mkdirs_for(const char *path) {
        char dir[512];
        snprintf(dir, sizeof(dir), "%s", path);
        for (char *p = dir + 1; *p; p++) {
                if (*p != '/')
                        continue;
                *p = 0;
                if (mkdir(dir, 0700) < 0 && errno != EEXIST)
                        return -errno;
                *p = '/';
        }
        return 0;
}

/* Reads a transcript: one {"role":..,"content":..} per line. -ENOENT when there is none;
 * -EINVAL (with the line in *bad_line) when a line is not one. */
static int transcript_load(const char *path, struct conv *v, int *bad_line) {
        FILE *f = fopen(path, "re");
        char *line = NULL;
        size_t cap = 0;
        int no = 0, r = 0;
        if (!f)
                return -errno;
        while (getline(&line, &cap, f) > 0) {
                json_t *o = json_loads(line, 0, NULL), *role, *content;
                const char *rs;
                no++;
                role = o ? json_object_get(o, "role") : NULL;
                content = o ? json_object_get(o, "content") : NULL;
                rs = json_is_string(role) ? role_static(json_string_value(role)) : NULL;
                if (!rs || !json_is_string(content) || (strcmp(rs, "system") == 0 && v->n > 0)) {
                        json_decref(o);
                        *bad_line = no;
                        r = -EINVAL;
                        break;
                }
                r = conv_push(v, rs, json_string_value(content), json_string_length(content), 0);
                json_decref(o);
                if (r < 0)
                        break;
        }
        free(line);
        fclose(f);
        return r;
}

/* Writes the whole conversation to path (a new file renamed over the old one). */
static int transcript_save(const char *path, const struct conv *v) {
        char tmp[600];
        FILE *f;
        int r = mkdirs_for(path);
        if (r < 0)
                return r;
        snprintf(tmp, sizeof(tmp), "%s.%d.tmp", path, (int)getpid());
        f = fopen(tmp, "wxe");
        if (!f)
                return -errno;
        fchmod(fileno(f), 0600);
        for (size_t i = 0; i < v->n && r == 0; i++) {
                json_t *o = json_pack("{s:s, s:s}", "role", v->msgs[i].role, "content", v->msgs[i].content);
                char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
                if (!s || fprintf(f, "%s\n", s) < 0)
                        r = -EIO;
                free(s);
                json_decref(o);
        }
        if (fclose(f) != 0 && r == 0)
                r = -errno;
        if (r == 0 && rename(tmp, path) < 0)
                r = -errno;
        if (r < 0)
                unlink(tmp);
        return r;
}

/* ------------------------------------------------------------------ turns */

struct reply {
        char *s;
        size_t n, cap;
        unsigned turn;
        uint32_t tokens;
        bool oom;
};

/* Appends text to the reply (the assistant message the next turn sends back). */
static void reply_keep(struct reply *b, const char *text, size_t len) {
        if (!len || b->oom)
                return;
        if (b->cap - b->n <= len) {
                size_t cap = (b->cap + len) * 2;
                char *s = realloc(b->s, cap);
                if (!s) {
                        b->oom = true;
                        return;
                }
                b->s = s;
                b->cap = cap;
        }
        memcpy(b->s + b->n, text, len);
        b->n += len;
        b->s[b->n] = 0;
}

static int on_reply(void *ud, const int32_t *t, size_t n, const char *text, size_t len) {
        struct reply *b = ud;
        bool ok;
        b->tokens += (uint32_t)n;
        if (cli.json) {
                json_t *o = cli_json_tokens(t, n, text, len);
                if (o)
                        json_object_set_new(o, "turn", json_integer((json_int_t)b->turn));
                ok = cli_json_emit(o);
        } else {
                ok = cli_write(text ? text : "", text ? len : 0);
        }
        if (text && len)
                reply_keep(b, text, len);
        if (b->oom)
                return 1;
        return !ok || cli_signal ? 1 : 0;
}

/* ------------------------------------------------------------------ chat events */

/* What a turn with chat events has shown so far on a terminal or in a plain-text pipe. */
enum shown { SHOWN_NOTHING, SHOWN_REASONING, SHOWN_CONTENT, SHOWN_CALL };

struct events_view {
        struct reply *reply;
        bool tty;          /* stdout is a terminal: reasoning dimmed (else prefixed) */
        enum shown shown;
        bool line_open;    /* the last thing written did not end a line */
};

#define DIM "\x1b[2m"
#define UNDIM "\x1b[0m"

static bool view_text(struct events_view *w, const char *text, size_t len) {
        if (!len)
                return true;
        w->line_open = text[len - 1] != '\n';
        return cli_write(text, len);
}

/* Leaves the reasoning (or a call) before something else is shown. */
static bool view_switch(struct events_view *w, enum shown to) {
        bool ok = true;
        if (w->shown == to && to != SHOWN_CALL)
                return true;
        if (w->shown == SHOWN_REASONING && w->tty)
                ok = cli_write(UNDIM, strlen(UNDIM));
        if (w->shown != SHOWN_NOTHING && w->line_open)
                ok = ok && view_text(w, "\n", 1);
        if (to == SHOWN_REASONING)
                ok = ok && (w->tty ? cli_write(DIM, strlen(DIM)) : view_text(w, "(thinking) ", 11));
        w->shown = to;
        return ok;
}

/* One chat event: shown (plain text) or emitted (--json). */
static bool view_event(struct events_view *w, const struct dsv32_event *e) {
        const char *text = e->text ? e->text : "";
        size_t len = e->text ? e->text_len : 0;
        unsigned turn = w->reply->turn;

        if (cli.json) {
                json_t *o = NULL;
                switch (e->type) {
                case DSV32_EVENT_REASONING:
                case DSV32_EVENT_CONTENT:
                        o = json_pack("{s:s,s:I,s:o}", "event", e->type == DSV32_EVENT_REASONING ? "reasoning" : "content",
                                      "turn", (json_int_t)turn, "text", cli_json_text(text, len));
                        break;
                case DSV32_EVENT_TOOL_CALL_BEGIN:
                        o = json_pack("{s:s,s:I,s:I,s:s,s:o}", "event", "tool_call", "turn", (json_int_t)turn, "index",
                                      (json_int_t)e->tool_index, "id", e->tool_call_id ? e->tool_call_id : "", "name",
                                      cli_json_text(e->tool_name ? e->tool_name : "", e->tool_name ? e->tool_name_len : 0));
                        break;
                case DSV32_EVENT_TOOL_CALL_ARGUMENTS:
                        o = json_pack("{s:s,s:I,s:I,s:o}", "event", "tool_call_arguments", "turn", (json_int_t)turn, "index",
                                      (json_int_t)e->tool_index, "text", cli_json_text(text, len));
                        break;
                case DSV32_EVENT_TOOL_CALL_END:
                        o = json_pack("{s:s,s:I,s:I}", "event", "tool_call_end", "turn", (json_int_t)turn, "index",
                                      (json_int_t)e->tool_index);
                        break;
                case DSV32_EVENT_PARSE_ERROR:
                        o = json_pack("{s:s,s:I,s:o,s:o}", "event", "parse_error", "turn", (json_int_t)turn, "message",
                                      cli_json_text(e->message ? e->message : "", e->message ? strlen(e->message) : 0),
                                      "text", cli_json_text(text, len));
                        break;
                default:
                        return true;
                }
                return cli_json_emit(o);
        }
        switch (e->type) {
        case DSV32_EVENT_REASONING:
                return view_switch(w, SHOWN_REASONING) && view_text(w, text, len);
        case DSV32_EVENT_CONTENT:
                return view_switch(w, SHOWN_CONTENT) && view_text(w, text, len);
        case DSV32_EVENT_TOOL_CALL_BEGIN:
                if (!view_switch(w, SHOWN_CALL))
                        return false;
                return cli_printf("[tool call %s: %.*s ", e->tool_call_id ? e->tool_call_id : "",
                                  e->tool_name ? (int)e->tool_name_len : 0, e->tool_name ? e->tool_name : "") &&
                       (w->line_open = true);
        case DSV32_EVENT_TOOL_CALL_ARGUMENTS:
                return view_text(w, text, len);
        case DSV32_EVENT_TOOL_CALL_END:
                return view_text(w, "]\n", 2);
        case DSV32_EVENT_PARSE_ERROR:
                fprintf(stderr, "dsv32 chat: the reply could not be read as V3.2 output (%s); shown as it came\n",
                        e->message ? e->message : "malformed");
                return view_switch(w, SHOWN_CONTENT) && view_text(w, text, len);
        default:
                return true;
        }
}

/* A turn with the daemon's chat events: reasoning, content and tool calls shown apart; the
 * reply kept for the conversation is the content (and any output the parser could not read).
 * Returns 0 (res filled), or a negative errno with its reason in err. On a signal or a
 * write error the request is cancelled and 0 returned (the caller looks at both). */
static int turn_events(dsv32_client *c, const struct dsv32_request *q, struct reply *b, struct dsv32_result *res, char *err,
                       size_t errn) {
        struct events_view w = {.reply = b, .tty = isatty(STDOUT_FILENO)};
        uint64_t id;
        int r = dsv32_submit(c, q, &id);

        memset(res, 0, sizeof(*res));
        if (r < 0) {
                snprintf(err, errn, "%s", dsv32_last_error(c));
                return r;
        }
        for (;;) {
                struct dsv32_event ev[16];
                int n = dsv32_poll_events(c, ev, 16);
                if (n < 0) {
                        snprintf(err, errn, "%s", dsv32_last_error(c));
                        return n;
                }
                for (int i = 0; i < n; i++) {
                        bool ok = true;
                        if (ev[i].id != id)
                                continue;
                        switch (ev[i].type) {
                        case DSV32_EVENT_TOKENS:
                                if (cli.json)
                                        ok = on_reply(b, ev[i].tokens, ev[i].n_tokens, NULL, 0) == 0;
                                else
                                        b->tokens += (uint32_t)ev[i].n_tokens;
                                break;
                        case DSV32_EVENT_DONE:
                                if (!cli.json && !view_switch(&w, SHOWN_CONTENT))
                                        return 0;
                                res->finish = ev[i].finish;
                                res->usage = ev[i].usage;
                                res->preempted = ev[i].preempted;
                                res->spec_drafted = ev[i].spec_drafted;
                                res->spec_accepted = ev[i].spec_accepted;
                                res->stop_index = ev[i].stop_index;
                                return 0;
                        case DSV32_EVENT_ERROR:
                                if (!cli.json)
                                        view_switch(&w, SHOWN_CONTENT);
                                snprintf(err, errn, "%s", ev[i].message ? ev[i].message : dsv32_strerror(ev[i].error));
                                return ev[i].error < 0 ? ev[i].error : -EIO;
                        case DSV32_EVENT_CONTENT:
                        case DSV32_EVENT_PARSE_ERROR:
                                reply_keep(b, ev[i].text, ev[i].text_len);
                                ok = view_event(&w, &ev[i]);
                                break;
                        default:
                                ok = view_event(&w, &ev[i]);
                        }
                        if (!ok || cli_signal || b->oom) {
                                dsv32_cancel(c, id);
                                if (!cli.json && w.tty && w.shown == SHOWN_REASONING)
                                        cli_write(UNDIM, strlen(UNDIM));
                                return 0;
                        }
                }
                if (n == 0 && cli_signal) {
                        dsv32_cancel(c, id);
                        if (!cli.json && w.tty && w.shown == SHOWN_REASONING)
                                cli_write(UNDIM, strlen(UNDIM));
                        return 0;
                }
                if (n == 0 && dsv32_wait(c, 250) < 0) {
                        snprintf(err, errn, "%s", dsv32_last_error(c));
                        return -EIO;
                }
        }
}

/* The daemon counts the messages it was sent ("message 4: ..."); say which of the user's
 * lines that is. */
static void describe_error(const struct conv *v, const char *msg, char *out, size_t n) {
        unsigned long idx;
        char *end;
        if (strncmp(msg, "message ", 8) == 0 && (idx = strtoul(msg + 8, &end, 10), end != msg + 8) && *end == ':' &&
            idx < v->n) {
                const char *what = v->msgs[idx].role;
                char who[96];
                if (!strcmp(what, "system"))
                        snprintf(who, sizeof(who), "the system prompt (--system)");
                else if (!strcmp(what, "user") && v->line[idx] > 0)
                        snprintf(who, sizeof(who), "your line %d", v->line[idx]);
                else if (!strcmp(what, "user"))
                        snprintf(who, sizeof(who), "a message of the saved conversation");
                else if (idx > 0 && v->line[idx - 1] > 0)
                        snprintf(who, sizeof(who), "the reply to your line %d", v->line[idx - 1]);
                else
                        snprintf(who, sizeof(who), "a reply of the saved conversation");
                snprintf(out, n, "%s%s", who, end);
                return;
        }
        snprintf(out, n, "%s", msg);
}

static void chat_help(void) {
        fprintf(stderr, "  /bye, /exit, /quit   end the chat (so does Ctrl-D)\n"
                        "  /help                this list\n"
                        "  //text               send a line that starts with '/'\n");
}

static void free_strp(char **p) { free(*p); }

int cli_chat(int argc, char **argv) {
        static const struct option opts[] = {
                {"system", required_argument, NULL, 'y'}, {"max-tokens", required_argument, NULL, 'n'},
                {"temperature", required_argument, NULL, 'T'}, {"seed", required_argument, NULL, 's'},
                {"thinking", no_argument, NULL, 'k'}, {"think", no_argument, NULL, 'k'}, {"session", required_argument, NULL, 'X'},
                {"no-session", no_argument, NULL, 'Z'}, {"reuse-output", no_argument, NULL, 'R'},
                {"schema", required_argument, NULL, 0x106}, CLI_JSON_OPTION, CLI_GLOBAL_OPTIONS, {0},
        };
        char auto_session[64], path[512] = "";
        bool no_session = false, own_session = false, tty = isatty(STDIN_FILENO);
        uint64_t prefilled = 0;
        struct dsv32_request q = {.struct_size = sizeof(q), .temperature = 0.6f};
        struct conv v = {0};
        const char *system = NULL;
        struct dsv32_info info;
        struct dsv32_message *chat = NULL; /* the conversation for a daemon with chat events */
        bool events = false;
        dsv32_client *c = NULL;
        char *line = NULL;
        char *schema __attribute__((cleanup(free_strp))) = NULL; /* every return frees it */
        size_t line_cap = 0;
        unsigned turn = 0;
        int ch, r, ret = 0, line_no = 0;

        while ((ch = getopt_long(argc, argv, CLI_SHORT_OPTIONS, opts, NULL)) >= 0) {
                switch (ch) {
                case 'y':
                        system = optarg;
                        break;
                case 'n':
                        ret = cli_opt_max_tokens("chat", optarg, &q);
                        break;
                case 'T':
                        ret = cli_opt_temperature("chat", optarg, &q);
                        break;
                case 's':
                        ret = cli_opt_seed("chat", optarg, &q);
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
                case 0x106:
                        ret = cli_opt_schema("chat", optarg, &schema);
                        break;
                default:
                        if (cli_global_option(ch, "chat", argv, &ret) > 0)
                                return cli_finish_output("chat", ret);
                }
                if (ret)
                        return ret;
        }
        if (schema && (q.flags & DSV32_REQ_THINKING)) {
                fprintf(stderr, "dsv32 chat: --schema and --think do not go together (the schema constrains the whole "
                                "reply)\n");
                return CLI_EXIT_USAGE;
        }
        q.schema = schema;
        if (optind < argc) {
                fprintf(stderr, "dsv32 chat: unexpected argument '%s': the messages come from standard input, one per line\n",
                        argv[optind]);
                return CLI_EXIT_USAGE;
        }
        if (no_session && q.session) {
                fprintf(stderr, "dsv32 chat: give --session or --no-session, not both\n");
                return CLI_EXIT_USAGE;
        }
        if (system && !cli_utf8_valid(system, strlen(system))) {
                fprintf(stderr, "dsv32 chat: --system is not valid UTF-8 text\n");
                return CLI_EXIT_USAGE;
        }
        /* a named conversation goes on where it stopped */
        if (q.session) {
                int bad = 0;
                r = cli_transcript_path(q.session, path, sizeof(path));
                if (r < 0) {
                        fprintf(stderr, "dsv32 chat: no $HOME or $XDG_STATE_HOME: the conversation of session %s will not be "
                                        "saved\n",
                                q.session);
                        path[0] = 0;
                } else if ((r = transcript_load(path, &v, &bad)) < 0 && r != -ENOENT) {
                        if (r == -EINVAL)
                                fprintf(stderr,
                                        "dsv32 chat: %s:%d is not a chat transcript line ({\"role\":...,\"content\":...}); "
                                        "move the file away to start a new conversation\n",
                                        path, bad);
                        else
                                fprintf(stderr, "dsv32 chat: cannot read %s: %s\n", path, strerror(-r));
                        conv_free(&v);
                        return CLI_EXIT_REQUEST;
                }
                if (v.n && (tty || cli.verbose))
                        fprintf(stderr, "(session %s: going on with a conversation of %zu messages; 'dsv32 session close %s' "
                                        "forgets it)\n",
                                q.session, v.n, q.session);
        }
        if (system) {
                if (v.n && !strcmp(v.msgs[0].role, "system")) {
                        free(v.owned[0]);
                        v.owned[0] = strdup(system);
                        v.msgs[0].content = v.owned[0];
                        if (!v.owned[0])
                                ret = CLI_EXIT_REQUEST;
                } else if (v.n == 0) {
                        if (conv_push(&v, "system", system, strlen(system), 0) < 0)
                                ret = CLI_EXIT_REQUEST;
                } else {
                        fprintf(stderr, "dsv32 chat: the saved conversation has no system prompt; --system is ignored\n");
                }
                if (ret)
                        goto out;
        }
        cli_streaming = true;
        cli_catch_signals();
        if ((ret = cli_connect("chat", 4u << 20, &c)))
                goto out;
        if ((ret = cli_wait_ready(c, "chat")))
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
                ret = CLI_EXIT_REQUEST;
                goto out;
        }
        /* reasoning, content and tool calls apart (the daemon's V3.2 parser), when it can */
        events = info.features & DSV32_FEATURE_CHAT_EVENTS;
        if (events)
                q.flags |= DSV32_REQ_CHAT_EVENTS;
        if (!q.max_tokens)
                q.max_tokens = info.max_tokens_limit && info.max_tokens_limit < CHAT_DEFAULT_MAX_TOKENS ? info.max_tokens_limit
                                                                                                        : CHAT_DEFAULT_MAX_TOKENS;
        else if (info.max_tokens_limit && q.max_tokens > info.max_tokens_limit) {
                fprintf(stderr, "dsv32 chat: --max-tokens %u is over this daemon's limit for you (%u, max-tokens-limit)\n",
                        q.max_tokens, info.max_tokens_limit);
                ret = CLI_EXIT_REQUEST;
                goto out;
        }
        /* each turn resends the conversation; in a session the daemon prefills only what is
         * new since the last turn (the user's message and the chat template around it) */
        if (!no_session && !q.session && (info.features & DSV32_FEATURE_SESSIONS)) {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                snprintf(auto_session, sizeof(auto_session), "chat-%d-%llx", (int)getpid(),
                         (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec);
                r = dsv32_session_open(c, auto_session, DSV32_SESSION_EXCL | DSV32_SESSION_PRIVATE, NULL);
                if (r == -EINVAL) /* a daemon before protocol 1.2: no private sessions */
                        r = dsv32_session_open(c, auto_session, DSV32_SESSION_EXCL, NULL);
                if (r == 0) {
                        q.session = auto_session;
                        own_session = true;
                } else if (cli.verbose) {
                        fprintf(stderr, "dsv32 chat: no session (%s); every turn prefills the whole conversation\n",
                                dsv32_last_error(c));
                }
        }
        for (;;) {
                struct reply reply = {.turn = turn + 1};
                struct dsv32_result res;
                ssize_t len;
                char *text;
                if (tty && !cli.json) {
                        fputs("> ", stdout);
                        fflush(stdout);
                }
                errno = 0;
                len = getline(&line, &line_cap, stdin);
                if (len < 0) {
                        if (cli_signal) {
                                if (tty)
                                        fputs("\n", stdout);
                                ret = cli_signal_exit("chat", own_session ? "the chat ended and its session was closed"
                                                                          : "the chat ended");
                        } else if (tty && !cli.json) {
                                fputs("\n", stdout); /* leave the shell's prompt on a line of its own */
                        }
                        break;
                }
                line_no++;
                while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
                        line[--len] = 0;
                if (!len)
                        continue;
                text = line;
                if (line[0] == '/') {
                        if (!strcmp(line, "/bye") || !strcmp(line, "/exit") || !strcmp(line, "/quit"))
                                break;
                        if (!strcmp(line, "/help")) {
                                chat_help();
                                continue;
                        }
                        if (line[1] != '/') {
                                fprintf(stderr, "dsv32 chat: unknown command %s (/help lists them; //text sends text that "
                                                "starts with /)\n",
                                        line);
                                continue;
                        }
                        text++, len--;
                }
                if (!cli_utf8_valid(text, (size_t)len) || memchr(text, 0, (size_t)len)) {
                        fprintf(stderr, "dsv32 chat: line %d is not valid UTF-8 text; it was not sent (the conversation goes "
                                        "on)\n",
                                line_no);
                        continue;
                }
                if (conv_push(&v, "user", text, (size_t)len, line_no) < 0) {
                        ret = CLI_EXIT_REQUEST;
                        break;
                }
                char errmsg[1100] = "";
                if (events) {
                        struct dsv32_message *m = realloc(chat, v.cap * sizeof(*m));
                        if (!m) {
                                ret = CLI_EXIT_REQUEST;
                                break;
                        }
                        chat = m;
                        for (size_t i = 0; i < v.n; i++)
                                chat[i] = (struct dsv32_message){.role = v.msgs[i].role, .content = v.msgs[i].content};
                        q.chat = chat;
                        q.n_chat = v.n;
                        r = turn_events(c, &q, &reply, &res, errmsg, sizeof(errmsg));
                } else {
                        q.messages = v.msgs;
                        q.n_messages = v.n;
                        r = dsv32_generate(c, &q, on_reply, &reply, &res);
                        if (r < 0)
                                snprintf(errmsg, sizeof(errmsg), "%s", dsv32_last_error(c));
                }
                if (!cli.json && (reply.n || r < 0))
                        cli_write("\n", 1);
                if (cli_output_failed()) {
                        free(reply.s);
                        ret = CLI_EXIT_OUTPUT;
                        break;
                }
                if (cli_signal) {
                        free(reply.s);
                        ret = cli_signal_exit("chat", own_session ? "the reply was cancelled and the chat's session closed"
                                                                  : "the reply was cancelled");
                        break;
                }
                if (r < 0) {
                        char why[1600];
                        int code = cli_exit_for(r);
                        free(reply.s);
                        conv_pop(&v);
                        describe_error(&v, errmsg, why, sizeof(why));
                        if (cli.json) {
                                json_t *o = cli_json_error_obj(r, why);
                                if (o)
                                        json_object_set_new(o, "turn", json_integer((json_int_t)turn + 1));
                                cli_json_emit(o);
                        }
                        if (code != CLI_EXIT_REQUEST) { /* the daemon is gone: nothing more to say */
                                fprintf(stderr, "dsv32 chat: %s\n", why);
                                ret = code;
                                break;
                        }
                        fprintf(stderr, "dsv32 chat: line %d was not answered: %s (the conversation goes on without it)\n",
                                line_no, why);
                        continue;
                }
                if (res.finish == DSV32_FINISH_SHUTDOWN) {
                        free(reply.s);
                        fprintf(stderr, "dsv32 chat: dsv32d stopped before the reply to line %d was finished\n", line_no);
                        ret = CLI_EXIT_UNAVAILABLE;
                        break;
                }
                turn++;
                if (cli.json)
                        cli_json_emit(json_pack("{s:s, s:I, s:s, s:o}", "event", "done", "turn", (json_int_t)turn, "finish",
                                                dsv32_finish_name(res.finish), "usage", cli_json_usage(&res)));
                prefilled += res.usage.prompt_tokens - res.usage.cached_tokens;
                if (cli.verbose)
                        fprintf(stderr, "[turn: %u prompt tokens, %u reused from the session, %u prefilled (%llu in all), %u generated]\n",
                                res.usage.prompt_tokens, res.usage.cached_tokens,
                                res.usage.prompt_tokens - res.usage.cached_tokens, (unsigned long long)prefilled,
                                res.usage.completion_tokens);
                r = conv_push(&v, "assistant", reply.s ? reply.s : "", reply.n, 0);
                free(reply.s);
                if (r < 0 || reply.oom) {
                        ret = CLI_EXIT_REQUEST;
                        break;
                }
                if (path[0] && (r = transcript_save(path, &v)) < 0)
                        fprintf(stderr, "dsv32 chat: cannot save the conversation to %s: %s\n", path, strerror(-r));
        }
out:
        if (own_session)
                dsv32_session_close(c, auto_session, NULL); /* frees its KV cache now, not at the idle timeout */
        free(line);
        free(chat);
        conv_free(&v);
        dsv32_disconnect(c);
        return cli_finish_output("chat", ret);
}
