/* openai_main.c: dsv32-openai, an OpenAI-compatible HTTP gateway to dsv32d: the command
 * line, the API-key file, the listening socket, and the libmicrohttpd daemon's life (start,
 * SIGINT/SIGTERM, stop). What it serves is openai_http.c. */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <microhttpd.h>

#include "client/openai.h"
#include "client/openai_http.h"

#define PROG "dsv32-openai"
#define DEFAULT_LISTEN "127.0.0.1:8000"
#define DEFAULT_MAX_BODY (4u << 20)
#define DEFAULT_MAX_CONNECTIONS 64
#define MAX_KEYS 4096

static volatile int stopping;

static void usage(FILE *f) {
        fprintf(f,
                "Usage: " PROG " [OPTION]...\n"
                "An OpenAI-compatible HTTP API for dsv32d (the local DeepSeek-V3.2 daemon), over libdsv32.\n"
                "Serves POST /v1/chat/completions and /v1/completions (streaming as server-sent events or\n"
                "not), GET /v1/models, GET /health (200 when dsv32d is ready, else 503) and GET /metrics\n"
                "(Prometheus text format).\n"
                "\n"
                "  --listen HOST:PORT       where to listen (default " DEFAULT_LISTEN "; [ADDR]:PORT for IPv6;\n"
                "                           port 0 picks a free one, printed at start)\n"
                "  --socket PATH            dsv32d's socket (default $" DSV32_SOCKET_ENV ", else " DSV32_DEFAULT_SOCKET ")\n"
                "  --api-keys FILE          require 'Authorization: Bearer KEY' on /v1/* with a KEY from\n"
                "                           FILE (one per line; empty lines and lines starting with # are\n"
                "                           ignored); /health and /metrics stay open\n"
                "  --max-body-bytes N       refuse request bodies over N bytes with 413 (default %u)\n"
                "  --max-connections N      concurrent HTTP connections (default %u; more are closed)\n"
                "  -h, --help               this help\n"
                "  --version                the version\n"
                "\n"
                "Each HTTP request uses its own libdsv32 connection, opened for it and closed after it;\n"
                "a client that disconnects during a generation cancels it. See dsv32-openai(1).\n",
                DEFAULT_MAX_BODY, DEFAULT_MAX_CONNECTIONS);
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...) {
        va_list ap;
        fputs(PROG ": ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        exit(1);
}

static void usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void usage_error(const char *fmt, ...) {
        va_list ap;
        fputs(PROG ": ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputs("\nTry '" PROG " --help'.\n", stderr);
        exit(2);
}

static unsigned long long parse_count(const char *opt, const char *s, unsigned long long max) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno || end == s || *end || s[0] == '-' || v == 0 || v > max)
                usage_error("%s takes a number from 1 to %llu, not '%s'", opt, max, s);
        return v;
}

/* One key per line; blanks around a key are dropped. */
static void load_keys(const char *path, struct oai_config *cfg) {
        FILE *f = fopen(path, "re");
        if (!f)
                die("cannot read the API keys from %s: %s", path, strerror(errno));
        char *line = NULL;
        size_t cap = 0;
        ssize_t n;
        while ((n = getline(&line, &cap, f)) >= 0) {
                char *s = line, *e = line + n;
                while (*s == ' ' || *s == '\t')
                        s++;
                while (e > s && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
                        e--;
                *e = 0;
                if (!*s || *s == '#')
                        continue;
                if (cfg->n_api_keys == MAX_KEYS)
                        die("%s has more than %d keys", path, MAX_KEYS);
                char **k = realloc(cfg->api_keys, (cfg->n_api_keys + 1) * sizeof(*k));
                if (!k || !(k[cfg->n_api_keys] = strdup(s)))
                        die("out of memory");
                cfg->api_keys = k;
                cfg->n_api_keys++;
        }
        bool bad = ferror(f);
        fclose(f);
        free(line);
        if (bad)
                die("cannot read the API keys from %s", path);
        if (!cfg->n_api_keys)
                die("%s has no API key (one per line); without --api-keys the gateway needs none", path);
}

/* HOST:PORT or [ADDR]:PORT -> a listening socket; *port gets the port it got. */
static int listen_on(const char *spec, unsigned *port) {
        char host[256];
        const char *colon = strrchr(spec, ':');
        if (!colon || colon == spec || !colon[1])
                usage_error("--listen takes HOST:PORT (e.g. 127.0.0.1:8000), not '%s'", spec);
        size_t hl = (size_t)(colon - spec);
        const char *h = spec;
        if (h[0] == '[' && hl >= 2 && h[hl - 1] == ']') {
                h++;
                hl -= 2;
        }
        if (hl >= sizeof(host))
                usage_error("--listen: the host is too long");
        memcpy(host, h, hl);
        host[hl] = 0;
        char *end;
        errno = 0;
        unsigned long p = strtoul(colon + 1, &end, 10);
        if (errno || *end || colon[1] == '-' || p > 65535)
                usage_error("--listen: the port must be a number from 0 to 65535, not '%s'", colon + 1);

        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                                 .ai_flags = AI_PASSIVE | AI_NUMERICSERV}, *res;
        int r = getaddrinfo(host, colon + 1, &hints, &res);
        if (r != 0)
                die("--listen %s: cannot resolve '%s': %s", spec, host, gai_strerror(r));
        int fd = -1, err = 0;
        for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
                fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
                if (fd < 0) {
                        err = errno;
                        continue;
                }
                int one = 1;
                setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
                if (bind(fd, a->ai_addr, a->ai_addrlen) < 0 || listen(fd, 128) < 0) {
                        err = errno;
                        close(fd);
                        fd = -1;
                }
        }
        freeaddrinfo(res);
        if (fd < 0)
                die("cannot listen on %s: %s%s", spec, strerror(err),
                    err == EADDRINUSE ? " (another program has that port: choose another with --listen)" : "");
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        char serv[16];
        if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0 &&
            getnameinfo((struct sockaddr *)&ss, sl, NULL, 0, serv, sizeof(serv), NI_NUMERICSERV) == 0)
                *port = (unsigned)atoi(serv);
        else
                *port = (unsigned)p;
        return fd;
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
        (void)cls;
        fputs(PROG ": ", stderr);
        vfprintf(stderr, fmt, ap);
}

int main(int argc, char **argv) {
        static const struct option opts[] = {
                {"listen", required_argument, NULL, 'l'},          {"socket", required_argument, NULL, 's'},
                {"api-keys", required_argument, NULL, 'k'},        {"max-body-bytes", required_argument, NULL, 'b'},
                {"max-connections", required_argument, NULL, 'c'}, {"help", no_argument, NULL, 'h'},
                {"version", no_argument, NULL, 'V'},               {0},
        };
        struct oai_config cfg = {.max_body_bytes = DEFAULT_MAX_BODY, .max_connections = DEFAULT_MAX_CONNECTIONS,
                                 .connect_timeout_ms = 5000, .stopping = &stopping};
        const char *listen_spec = DEFAULT_LISTEN, *keys = NULL;
        int o;

        opterr = 0;
        while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
                switch (o) {
                case 'l':
                        listen_spec = optarg;
                        break;
                case 's':
                        cfg.socket_path = optarg;
                        break;
                case 'k':
                        keys = optarg;
                        break;
                case 'b':
                        cfg.max_body_bytes = parse_count("--max-body-bytes", optarg, 1ull << 30);
                        break;
                case 'c':
                        cfg.max_connections = (unsigned)parse_count("--max-connections", optarg, 65536);
                        break;
                case 'h':
                        usage(stdout);
                        return 0;
                case 'V':
                        printf(PROG " %s (libdsv32 %s)\n", PACKAGE_VERSION, dsv32_version());
                        return 0;
                default:
                        if (optopt)
                                usage_error("option -%c is unknown or needs a value", optopt);
                        usage_error("option '%s' is unknown or needs a value", argv[optind - 1]);
                }
        }
        if (optind < argc)
                usage_error("unexpected argument '%s'", argv[optind]);
        if (keys)
                load_keys(keys, &cfg);

        unsigned port = 0;
        int fd = listen_on(listen_spec, &port);

        /* the threads libmicrohttpd starts inherit this mask: only main takes the signals */
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGINT);
        sigaddset(&set, SIGTERM);
        pthread_sigmask(SIG_BLOCK, &set, NULL);
        signal(SIGPIPE, SIG_IGN);

        struct MHD_Daemon *d = MHD_start_daemon(
                MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ERROR_LOG, 0,
                NULL, NULL, oai_http_handler, &cfg, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
                MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_LIMIT, cfg.max_connections,
                MHD_OPTION_CONNECTION_TIMEOUT, 120u, MHD_OPTION_NOTIFY_COMPLETED, oai_http_completed, NULL,
                MHD_OPTION_END);
        if (!d)
                die("cannot start the HTTP server (libmicrohttpd) on %s", listen_spec);
        fprintf(stderr, PROG ": listening on %s (port %u), dsv32d at %s%s\n", listen_spec, port,
                cfg.socket_path ? cfg.socket_path : getenv(DSV32_SOCKET_ENV) ? getenv(DSV32_SOCKET_ENV)
                                                                             : DSV32_DEFAULT_SOCKET,
                cfg.api_keys ? ", API keys required" : "");

        int sig = 0;
        sigwait(&set, &sig);
        fprintf(stderr, PROG ": %s, stopping\n", strsignal(sig));
        __atomic_store_n(&stopping, 1, __ATOMIC_RELAXED); /* streams end within a poll slice */
        MHD_stop_daemon(d);
        close(fd);
        for (size_t i = 0; i < cfg.n_api_keys; i++)
                free(cfg.api_keys[i]);
        free(cfg.api_keys);
        return 0;
}
