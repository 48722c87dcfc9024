/* bench-gateway: what dsv32-openai adds to a request and to each streamed token, against
 * libdsv32 talking to the same dsv32d directly, in the same run (make bench, through
 * bench-gateway.sh, which starts the daemon and the gateway).
 *
 *   bench-gateway --socket PATH --port PORT [--requests N] [--tokens G]
 *
 * The same greedy request (a fixed token-id prompt) goes both ways, alternately, N times each:
 *   request   max_tokens 1: from the call to the end of its answer (libdsv32: the return of
 *             dsv32_generate; HTTP: a fresh TCP connection, the POST to /v1/completions with
 *             stream false, the whole response read until the gateway closes it)
 *   stream    max_tokens G, streamed (libdsv32: the token callback; HTTP: stream true, the
 *             server-sent events): the time to the first token and the mean interval between
 *             the first and the last token's arrival
 * and prints the medians of each and the gateway's difference. The HTTP client is the
 * smallest one that can stand for an application's (HTTP/1.0, one connection per request,
 * events timed as they arrive); its own cost is in the HTTP figures, so the difference is an
 * upper bound of the gateway's. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "client/dsv32.h"

#define PROMPT_LEN 16

struct run {
        double total_us;   /* call to end */
        double first_us;   /* call to first token */
        double last_us;    /* call to last token */
        unsigned tokens;   /* tokens (libdsv32) or token events (HTTP) seen */
};

static double now_us(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int32_t prompt[PROMPT_LEN];

/* ---------------------------------------------------------------- libdsv32 directly */

struct cb_state {
        double t0;
        struct run *r;
};

static int on_tokens(void *userdata, const int32_t *tokens, size_t n, const char *text, size_t text_len) {
        (void)tokens;
        (void)text;
        (void)text_len;
        struct cb_state *s = userdata;
        double t = now_us() - s->t0;
        if (!s->r->tokens)
                s->r->first_us = t;
        s->r->last_us = t;
        s->r->tokens += (unsigned)n;
        return 0;
}

static int direct(dsv32_client *c, unsigned max_tokens, struct run *r) {
        struct dsv32_request req = {.struct_size = sizeof req};
        req.tokens = prompt;
        req.n_tokens = PROMPT_LEN;
        req.max_tokens = max_tokens;
        struct dsv32_result res;
        memset(r, 0, sizeof *r);
        struct cb_state s = {.t0 = now_us(), .r = r};
        int rc = dsv32_generate(c, &req, on_tokens, &s, &res);
        r->total_us = now_us() - s.t0;
        if (rc < 0) {
                fprintf(stderr, "bench-gateway: libdsv32: %s (%s)\n", dsv32_strerror(rc), dsv32_last_error(c));
                return -1;
        }
        return 0;
}

/* ---------------------------------------------------------------- over HTTP */

static int http(int port, unsigned max_tokens, int stream, struct run *r) {
        char body[512], req[1024];
        int n = snprintf(body, sizeof body, "{\"prompt\":[");
        for (int i = 0; i < PROMPT_LEN; i++)
                n += snprintf(body + n, sizeof body - (size_t)n, "%s%d", i ? "," : "", prompt[i]);
        n += snprintf(body + n, sizeof body - (size_t)n, "],\"max_tokens\":%u,\"temperature\":0,\"stream\":%s}", max_tokens,
                      stream ? "true" : "false");
        int m = snprintf(req, sizeof req,
                         "POST /v1/completions HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         "Content-Length: %d\r\n\r\n%s",
                         n, body);
        memset(r, 0, sizeof *r);
        double t0 = now_us();
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0)
                return -1;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || write(fd, req, (size_t)m) != m) {
                fprintf(stderr, "bench-gateway: 127.0.0.1:%d: %s\n", port, strerror(errno));
                close(fd);
                return -1;
        }
        /* Reads to the end; with stream, each "data: {" line that arrives is a token event
         * (the last, "data: [DONE]", is not). A line may be cut between two reads: keep the
         * tail of the previous read to find the marker across the cut. */
        static const char mark[] = "\ndata: {";
        char buf[16384 + sizeof mark];
        size_t keep = 0, total = 0;
        int status = 0;
        for (;;) {
                ssize_t got = read(fd, buf + keep, sizeof buf - sizeof mark - 1);
                if (got < 0 && errno == EINTR)
                        continue;
                if (got <= 0)
                        break;
                double t = now_us() - t0;
                size_t len = keep + (size_t)got;
                buf[len] = 0;
                if (!total && sscanf(buf, "HTTP/%*s %d", &status) != 1)
                        status = -1;
                total += (size_t)got;
                for (char *p = buf; (p = memmem(p, len - (size_t)(p - buf), mark, sizeof mark - 1)); p++) {
                        if ((size_t)(p - buf) + sizeof mark - 1 <= keep)
                                continue; /* counted with the previous read */
                        if (!r->tokens)
                                r->first_us = t;
                        r->last_us = t;
                        r->tokens++;
                }
                keep = len < sizeof mark - 1 ? len : sizeof mark - 1;
                memmove(buf, buf + len - keep, keep);
        }
        r->total_us = now_us() - t0;
        close(fd);
        if (status != 200) {
                fprintf(stderr, "bench-gateway: POST /v1/completions answered status %d (%zu bytes)\n", status, total);
                return -1;
        }
        return 0;
}

/* ---------------------------------------------------------------- figures */

static int cmp_double(const void *a, const void *b) {
        double x = *(const double *)a, y = *(const double *)b;
        return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
        qsort(v, (size_t)n, sizeof *v, cmp_double);
        return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void usage(FILE *f) {
        fprintf(f, "usage: bench-gateway --socket PATH --port PORT [--requests N] [--tokens G]\n");
}

int main(int argc, char **argv) {
        const char *socket_path = NULL;
        int port = 0, n_req = 50, gen = 32;
        static const struct option opts[] = {{"socket", required_argument, 0, 's'},
                                             {"port", required_argument, 0, 'p'},
                                             {"requests", required_argument, 0, 'n'},
                                             {"tokens", required_argument, 0, 'g'},
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};
        for (int ch; (ch = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
                switch (ch) {
                case 's': socket_path = optarg; break;
                case 'p': port = atoi(optarg); break;
                case 'n': n_req = atoi(optarg); break;
                case 'g': gen = atoi(optarg); break;
                case 'h': usage(stdout); return 0;
                default: usage(stderr); return 2;
                }
        }
        if (!socket_path || port <= 0 || port > 65535 || n_req < 1 || n_req > 100000 || gen < 2 || gen > 4096) {
                usage(stderr);
                return 2;
        }
        for (int i = 0; i < PROMPT_LEN; i++)
                prompt[i] = 11 + 37 * i;
        struct dsv32_connect_opts co = {.struct_size = sizeof co, .socket_path = socket_path, .client_name = "bench-gateway"};
        dsv32_client *c = NULL;
        int rc = dsv32_connect(&co, &c);
        if (rc < 0) {
                fprintf(stderr, "bench-gateway: cannot connect to %s: %s\n", socket_path, strerror(-rc));
                return 1;
        }
        double *v[6];
        for (int k = 0; k < 6; k++)
                v[k] = calloc((size_t)n_req, sizeof(double));
        /* warm up both paths, and learn how many tokens the stream really gives (EOS may come
         * first: the same greedy request gives the same tokens both ways) */
        struct run d, h;
        if (direct(c, 1, &d) || http(port, 1, 0, &h) || direct(c, (unsigned)gen, &d) || http(port, (unsigned)gen, 1, &h))
                return 1;
        if (d.tokens < 2 || h.tokens < 2) {
                fprintf(stderr, "bench-gateway: the stream gave %u tokens directly and %u events over HTTP: too few to time\n",
                        d.tokens, h.tokens);
                return 1;
        }
        unsigned streamed = d.tokens, events = h.tokens;
        for (int i = 0; i < n_req; i++) {
                if (direct(c, 1, &d) || http(port, 1, 0, &h))
                        return 1;
                v[0][i] = d.total_us;
                v[1][i] = h.total_us;
                if (direct(c, (unsigned)gen, &d) || http(port, (unsigned)gen, 1, &h))
                        return 1;
                v[2][i] = d.first_us;
                v[3][i] = h.first_us;
                v[4][i] = (d.last_us - d.first_us) / (d.tokens - 1);
                v[5][i] = (h.last_us - h.first_us) / (h.tokens - 1);
        }
        double req_d = median(v[0], n_req), req_h = median(v[1], n_req);
        double ttft_d = median(v[2], n_req), ttft_h = median(v[3], n_req);
        double tok_d = median(v[4], n_req), tok_h = median(v[5], n_req);
        printf("bench-gateway: %d requests each way, alternating; a %d-token prompt, greedy; medians\n", n_req, PROMPT_LEN);
        printf("  request (1 token, whole answer)   libdsv32 %8.1f us   HTTP %8.1f us   gateway adds %8.1f us\n", req_d,
               req_h, req_h - req_d);
        printf("  time to first token (streamed)    libdsv32 %8.1f us   HTTP %8.1f us   gateway adds %8.1f us\n", ttft_d,
               ttft_h, ttft_h - ttft_d);
        printf("  per streamed token (%u tokens)    libdsv32 %8.1f us   HTTP %8.1f us   gateway adds %8.1f us\n", streamed,
               tok_d, tok_h, tok_h - tok_d);
        if (events != streamed)
                printf("  (the HTTP stream carried the %u tokens in %u events)\n", streamed, events);
        for (int k = 0; k < 6; k++)
                free(v[k]);
        dsv32_disconnect(c);
        return 0;
}
