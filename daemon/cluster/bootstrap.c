/* The bootstrap and the heartbeat monitor of a node group (cluster.h): node 0's listening
 * socket and admission checks, a node's connection to node 0, and the monitor thread that
 * sends and watches heartbeats and spreads failures. Frames: wire.c. */
#include "config.h"

#include "daemon/cluster/cluster.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>

#include "daemon/cluster/fingerprint.h"

#define FRAME_CAP (DSV_WIRE_HEADER + DSV_WIRE_MAX_PAYLOAD)
#define RETRY_MS 200

struct conn {
        int fd;
        int node;
        char addr[80];
        uint64_t last_rx_ns;
        uint8_t *in;
        size_t in_len;
};

struct dsv_cluster {
        int nodes, rank;
        char *host, *port;
        uint8_t fingerprint[DSV_FINGERPRINT_BYTES];
        char *config;
        size_t config_len;
        char **allowed; /* numeric addresses */
        size_t n_allowed;
        int heartbeat_ms, timeout_ms, join_timeout_ms, handshake_ms;
        uint8_t *id;
        size_t id_len;
        void (*on_failure)(void *userdata, int err, const char *why);
        void *userdata;

        int listen_fd;
        int bound_port;
        struct conn *conns; /* node 0: indexed by node (conns[0] unused); others: conns[0] is node 0 */
        int n_conns;
        bool joined;

        pthread_t thread;
        bool thread_started;
        int stop_fd, fail_fd;
        pthread_mutex_t lock;
        int status;
        char why[512];
};

static uint64_t now_ns(void) { return dsv_now_ns(); }
static int64_t ms_left(uint64_t deadline) {
        uint64_t n = now_ns();
        return n >= deadline ? 0 : (int64_t)((deadline - n) / 1000000u);
}

static void sleep_ms(int ms) {
        struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

/* "10.0.0.2:41000", "[::1]:41000"; IPv4-mapped IPv6 addresses shown as IPv4. */
static void addr_string(const struct sockaddr *sa, socklen_t len, char *host, size_t hn, char *full, size_t fn) {
        char h[INET6_ADDRSTRLEN + 8] = "?", p[16] = "?";
        getnameinfo(sa, len, h, sizeof(h), p, sizeof(p), NI_NUMERICHOST | NI_NUMERICSERV);
        const char *shown = strncmp(h, "::ffff:", 7) == 0 && strchr(h, '.') ? h + 7 : h;
        if (host)
                snprintf(host, hn, "%s", shown);
        if (full)
                snprintf(full, fn, strchr(shown, ':') ? "[%s]:%s" : "%s:%s", shown, p);
}

/* Splits "HOST:PORT" / "[V6]:PORT". */
static int split_hostport(const char *s, char **host, char **port) {
        const char *colon;
        if (!s || !*s)
                return -EINVAL;
        if (s[0] == '[') {
                const char *close = strchr(s, ']');
                if (!close || close[1] != ':' || !close[2])
                        return -EINVAL;
                *host = strndup(s + 1, (size_t)(close - s - 1));
                *port = strdup(close + 2);
        } else {
                colon = strrchr(s, ':');
                if (!colon || colon == s || !colon[1] || strchr(s, ':') != colon)
                        return -EINVAL;
                *host = strndup(s, (size_t)(colon - s));
                *port = strdup(colon + 1);
        }
        if (!*host || !*port)
                return -ENOMEM;
        long v;
        if (dsv_parse_int(*port, 0, 65535, &v) < 0)
                return -EINVAL;
        return 0;
}

/* Resolves the allowed peers to numeric addresses. */
static int resolve_allowed(struct dsv_cluster *c, const char *list, struct dsv_error *err) {
        _cleanup_free_ char *copy = strdup(list);
        char *save = NULL;
        if (!copy)
                return -ENOMEM;
        for (char *t = strtok_r(copy, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
                struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
                int g = getaddrinfo(t, NULL, &hints, &res);
                if (g != 0)
                        return dsv_error_set(err, EINVAL, "cluster-peers: cannot resolve '%s': %s", t, gai_strerror(g));
                for (struct addrinfo *a = res; a; a = a->ai_next) {
                        char h[INET6_ADDRSTRLEN + 8];
                        char **p = realloc(c->allowed, (c->n_allowed + 1) * sizeof(*p));
                        if (!p) {
                                freeaddrinfo(res);
                                return -ENOMEM;
                        }
                        c->allowed = p;
                        addr_string(a->ai_addr, a->ai_addrlen, h, sizeof(h), NULL, 0);
                        if (!(c->allowed[c->n_allowed] = strdup(h))) {
                                freeaddrinfo(res);
                                return -ENOMEM;
                        }
                        c->n_allowed++;
                }
                freeaddrinfo(res);
        }
        return 0;
}

static bool address_allowed(const struct dsv_cluster *c, const char *host) {
        if (c->n_allowed == 0)
                return true;
        for (size_t i = 0; i < c->n_allowed; i++)
                if (strcmp(c->allowed[i], host) == 0)
                        return true;
        return false;
}

static int listen_on(struct dsv_cluster *c, struct dsv_error *err) {
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res = NULL;
        const char *host = strcmp(c->host, "*") == 0 ? NULL : c->host;
        int g = getaddrinfo(host, c->port, &hints, &res), r = -EADDRNOTAVAIL, one = 1;
        if (g != 0)
                return dsv_error_set(err, EINVAL, "Cannot resolve the coordinator address %s: %s", c->host, gai_strerror(g));
        for (struct addrinfo *a = res; a; a = a->ai_next) {
                int fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (fd < 0) {
                        r = dsv_negerrno();
                        continue;
                }
                setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
                if (bind(fd, a->ai_addr, a->ai_addrlen) < 0 || listen(fd, 64) < 0) {
                        r = dsv_negerrno();
                        close(fd);
                        continue;
                }
                struct sockaddr_storage ss;
                socklen_t sl = sizeof(ss);
                char p[16] = "0";
                getsockname(fd, (struct sockaddr *)&ss, &sl);
                getnameinfo((struct sockaddr *)&ss, sl, NULL, 0, p, sizeof(p), NI_NUMERICSERV);
                c->bound_port = atoi(p);
                c->listen_fd = fd;
                freeaddrinfo(res);
                return 0;
        }
        freeaddrinfo(res);
        return dsv_error_set(err, -r, "Cannot listen on the coordinator address %s:%s: %s (is this host node 0, and the port free?)",
                             c->host, c->port, strerror(-r));
}

int dsv_cluster_new(const struct dsv_cluster_opts *o, struct dsv_cluster **ret, struct dsv_error *err) {
        struct dsv_cluster *c;
        int r;

        if (!o || !ret)
                return dsv_error_set(err, EINVAL, "dsv_cluster_new: no options");
        if (o->nodes < 2 || o->nodes > DSV_CLUSTER_MAX_NODES)
                return dsv_error_set(err, EINVAL, "nodes = %d: a group has 2..%d nodes", o->nodes, DSV_CLUSTER_MAX_NODES);
        if (o->node_rank < 0 || o->node_rank >= o->nodes)
                return dsv_error_set(err, EINVAL, "node-rank = %d: must be 0..%d for %d nodes", o->node_rank, o->nodes - 1,
                                     o->nodes);
        if (!o->fingerprint)
                return dsv_error_set(err, EINVAL, "no model fingerprint");
        if (o->heartbeat_ms <= 0 || o->timeout_ms < 2 * o->heartbeat_ms || o->join_timeout_ms <= 0)
                return dsv_error_set(err, EINVAL,
                                     "cluster timing: heartbeat %d ms, timeout %d ms (at least two heartbeats), join timeout %d ms",
                                     o->heartbeat_ms, o->timeout_ms, o->join_timeout_ms);
        const size_t clen = o->config ? strlen(o->config) : 0;
        if (clen > DSV_WIRE_MAX_CONFIG || o->id_len > DSV_WIRE_MAX_ID || (o->id_len && !o->id))
                return dsv_error_set(err, EINVAL, "cluster: configuration text (%zu bytes) or id (%zu bytes) over %d bytes", clen,
                                     o->id_len, DSV_WIRE_MAX_CONFIG);

        c = calloc(1, sizeof(*c));
        if (!c)
                return dsv_error_set(err, ENOMEM, "Out of memory");
        c->listen_fd = c->stop_fd = c->fail_fd = -1;
        pthread_mutex_init(&c->lock, NULL);
        c->nodes = o->nodes;
        c->rank = o->node_rank;
        memcpy(c->fingerprint, o->fingerprint, DSV_FINGERPRINT_BYTES);
        c->config = strdup(o->config ? o->config : "");
        c->config_len = clen;
        c->heartbeat_ms = o->heartbeat_ms;
        c->timeout_ms = o->timeout_ms;
        c->join_timeout_ms = o->join_timeout_ms;
        c->handshake_ms = o->handshake_timeout_ms > 0 ? o->handshake_timeout_ms : 5000;
        c->on_failure = o->on_failure;
        c->userdata = o->userdata;
        c->n_conns = c->rank == 0 ? c->nodes : 1;
        c->conns = calloc((size_t)c->n_conns, sizeof(*c->conns));
        if (!c->config || !c->conns) {
                r = dsv_error_set(err, ENOMEM, "Out of memory");
                goto fail;
        }
        for (int i = 0; i < c->n_conns; i++)
                c->conns[i].fd = -1;
        if ((r = split_hostport(o->coordinator, &c->host, &c->port)) < 0) {
                r = dsv_error_set(err, -r, "coordinator '%s': expected HOST:PORT (port 0..65535), or [IPv6]:PORT",
                                  o->coordinator ? o->coordinator : "");
                goto fail;
        }
        c->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        c->fail_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (c->stop_fd < 0 || c->fail_fd < 0) {
                r = dsv_error_set(err, errno, "eventfd: %s", strerror(errno));
                goto fail;
        }
        if (c->rank == 0) {
                if (o->allowed_peers && *o->allowed_peers && (r = resolve_allowed(c, o->allowed_peers, err)) < 0)
                        goto fail;
                if (o->id_len) {
                        c->id = malloc(o->id_len);
                        if (!c->id) {
                                r = dsv_error_set(err, ENOMEM, "Out of memory");
                                goto fail;
                        }
                        memcpy(c->id, o->id, o->id_len);
                        c->id_len = o->id_len;
                } else {
                        c->id = malloc(16);
                        if (!c->id || getrandom(c->id, 16, 0) != 16) {
                                r = dsv_error_set(err, EIO, "Cannot make a group id");
                                goto fail;
                        }
                        c->id_len = 16;
                }
                if ((r = listen_on(c, err)) < 0)
                        goto fail;
        } else if (strcmp(c->port, "0") == 0) {
                r = dsv_error_set(err, EINVAL, "coordinator %s: node %d needs node 0's port, not 0", o->coordinator, c->rank);
                goto fail;
        }
        *ret = c;
        return 0;
fail:
        dsv_cluster_free(c);
        return r;
}

int dsv_cluster_port(const struct dsv_cluster *c) { return c && c->rank == 0 ? c->bound_port : -EINVAL; }
int dsv_cluster_nodes(const struct dsv_cluster *c) { return c->nodes; }
int dsv_cluster_node_rank(const struct dsv_cluster *c) { return c->rank; }
const void *dsv_cluster_id(const struct dsv_cluster *c, size_t *len) {
        if (len)
                *len = c->id_len;
        return c->id;
}

/* ------------------------------------------------------------------ blocking frame I/O (join) */
static int send_all(int fd, const uint8_t *b, size_t n) {
        while (n > 0) {
                ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
                if (w < 0) {
                        if (errno == EINTR)
                                continue;
                        return dsv_negerrno();
                }
                b += w;
                n -= (size_t)w;
        }
        return 0;
}

static void set_timeouts(int fd, int64_t ms) {
        struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
        if (ms <= 0)
                tv.tv_usec = 1000; /* 0 would mean "forever" */
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

/* Reads one frame into buf (FRAME_CAP bytes) within the socket's receive timeout:
 * the frame's length, -ETIMEDOUT, -ECONNRESET (closed), -EBADMSG. */
static int read_frame(int fd, uint8_t *buf, struct dsv_wire_msg *m) {
        size_t have = 0;
        for (;;) {
                int d = dsv_wire_decode(buf, have, m);
                if (d != 0)
                        return d;
                ssize_t n = recv(fd, buf + have, FRAME_CAP - have, 0);
                if (n == 0)
                        return -ECONNRESET;
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return errno == EAGAIN || errno == EWOULDBLOCK ? -ETIMEDOUT : dsv_negerrno();
                }
                have += (size_t)n;
        }
}

static void refuse(int fd, enum dsv_wire_refusal reason, const char *addr, const char *text) {
        uint8_t buf[DSV_WIRE_HEADER + 8 + DSV_WIRE_MAX_TEXT];
        int n = dsv_wire_refuse(buf, sizeof(buf), reason, text);
        if (n > 0)
                (void)send_all(fd, buf, (size_t)n);
        log_warning("Refused bootstrap peer %s: %s", addr, text);
}

static void hex(const uint8_t *fp, char *out) { dsv_fingerprint_short(fp, out); }

/* Node 0: one incoming connection; keeps it as its node's when the HELLO passes. */
static void admit(struct dsv_cluster *c, int fd, const char *host, const char *addr, uint64_t deadline, uint8_t *buf) {
        struct dsv_wire_msg m;
        char text[DSV_WIRE_MAX_TEXT], a[24], b[24];
        int n;

        if (!address_allowed(c, host)) {
                refuse(fd, DSV_REFUSE_ADDRESS, addr, "its address is not in cluster-peers");
                close(fd);
                return;
        }
        set_timeouts(fd, MIN((int64_t)c->handshake_ms, MAX(ms_left(deadline), 1)));
        n = read_frame(fd, buf, &m);
        if (n == -ETIMEDOUT || n == -ECONNRESET) {
                log_warning("Refused bootstrap peer %s: %s", addr,
                            n == -ETIMEDOUT ? "it sent no hello in time" : "it closed the connection before its hello");
                close(fd);
                return;
        }
        if (n < 0 || m.type != DSV_WIRE_HELLO || m.hello.version != DSV_WIRE_VERSION) {
                snprintf(text, sizeof(text), "not a dsv32d bootstrap hello of protocol version %u (%s)", DSV_WIRE_VERSION,
                         n < 0 ? "malformed frame" : m.type != DSV_WIRE_HELLO ? dsv_wire_type_name(m.type) : "another version");
                refuse(fd, DSV_REFUSE_PROTOCOL, addr, text);
                close(fd);
                return;
        }
        const uint32_t r = m.hello.node_rank;
        if (m.hello.nodes != (uint32_t)c->nodes) {
                snprintf(text, sizeof(text), "it expects a group of %u nodes, this one has %d", m.hello.nodes, c->nodes);
                refuse(fd, DSV_REFUSE_NODE, addr, text);
        } else if (r == 0 || r >= (uint32_t)c->nodes) {
                snprintf(text, sizeof(text), "it claims node %u; the group's other nodes are 1..%d", r, c->nodes - 1);
                refuse(fd, DSV_REFUSE_NODE, addr, text);
        } else if (c->conns[r].fd >= 0) {
                snprintf(text, sizeof(text), "it claims node %u, which already joined from %s", r, c->conns[r].addr);
                refuse(fd, DSV_REFUSE_NODE, addr, text);
        } else if (memcmp(m.hello.fingerprint, c->fingerprint, DSV_FINGERPRINT_BYTES) != 0) {
                hex(m.hello.fingerprint, a);
                hex(c->fingerprint, b);
                snprintf(text, sizeof(text), "node %u runs another model (fingerprint %s..., ours %s...)", r, a, b);
                refuse(fd, DSV_REFUSE_FINGERPRINT, addr, text);
        } else if (m.hello.config_len != c->config_len || memcmp(m.hello.config, c->config, c->config_len) != 0) {
                snprintf(text, sizeof(text), "node %u has another configuration (theirs \"%.*s\", ours \"%.*s\")", r,
                         (int)MIN(m.hello.config_len, 300u), m.hello.config, (int)MIN(c->config_len, (size_t)300), c->config);
                refuse(fd, DSV_REFUSE_CONFIG, addr, text);
        } else {
                c->conns[r].fd = fd;
                c->conns[r].node = (int)r;
                snprintf(c->conns[r].addr, sizeof(c->conns[r].addr), "%s", addr);
                log_info("Bootstrap: node %u joined from %s", r, addr);
                return;
        }
        close(fd);
}

static int join_as_coordinator(struct dsv_cluster *c, struct dsv_error *err) {
        const uint64_t deadline = now_ns() + (uint64_t)c->join_timeout_ms * 1000000ull;
        _cleanup_free_ uint8_t *buf = malloc(FRAME_CAP);
        int joined = 0;

        if (!buf)
                return dsv_error_set(err, ENOMEM, "Out of memory");
        log_info("Bootstrap: node 0 of %d waiting on %s:%d for the other nodes", c->nodes, c->host, c->bound_port);
        while (joined < c->nodes - 1) {
                struct pollfd p = {c->listen_fd, POLLIN, 0};
                int64_t left = ms_left(deadline);
                if (left <= 0) {
                        char missing[256] = "";
                        size_t len = 0;
                        for (int i = 1; i < c->nodes && len + 8 < sizeof(missing); i++)
                                if (c->conns[i].fd < 0)
                                        len += (size_t)snprintf(missing + len, sizeof(missing) - len, "%s%d", len ? ", " : "", i);
                        return dsv_error_set(err, ETIMEDOUT, "The group of %d nodes did not form within %d ms: node(s) %s never joined %s:%d",
                                             c->nodes, c->join_timeout_ms, missing, c->host, c->bound_port);
                }
                int pr = poll(&p, 1, (int)MIN(left, (int64_t)INT_MAX));
                if (pr < 0 && errno != EINTR)
                        return dsv_error_set(err, errno, "poll: %s", strerror(errno));
                if (pr <= 0)
                        continue;
                struct sockaddr_storage ss;
                socklen_t sl = sizeof(ss);
                int fd = accept4(c->listen_fd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
                if (fd < 0)
                        continue;
                char host[INET6_ADDRSTRLEN + 8], addr[80];
                addr_string((struct sockaddr *)&ss, sl, host, sizeof(host), addr, sizeof(addr));
                admit(c, fd, host, addr, deadline, buf);
                joined = 0;
                for (int i = 1; i < c->nodes; i++)
                        joined += c->conns[i].fd >= 0;
        }
        /* everybody is here: the id, and the group's timing */
        for (int i = 1; i < c->nodes; i++) {
                int n = dsv_wire_welcome(buf, FRAME_CAP, (uint32_t)c->nodes, (uint32_t)c->heartbeat_ms, (uint32_t)c->timeout_ms,
                                         c->id, c->id_len);
                set_timeouts(c->conns[i].fd, c->timeout_ms);
                if (n < 0 || send_all(c->conns[i].fd, buf, (size_t)n) < 0)
                        return dsv_error_set(err, ECONNRESET, "Node %d (%s) went away while the group formed", i, c->conns[i].addr);
        }
        log_info("Bootstrap: the group of %d nodes formed", c->nodes);
        return 0;
}

static int connect_once(struct dsv_cluster *c, int *ret) {
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
        int g = getaddrinfo(c->host, c->port, &hints, &res), r = -EHOSTUNREACH;
        if (g != 0)
                return g == EAI_AGAIN ? -EAGAIN : -EHOSTUNREACH;
        for (struct addrinfo *a = res; a; a = a->ai_next) {
                int fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (fd < 0)
                        continue;
                if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
                        *ret = fd;
                        freeaddrinfo(res);
                        return 0;
                }
                r = dsv_negerrno();
                close(fd);
        }
        freeaddrinfo(res);
        return r;
}

static int join_as_node(struct dsv_cluster *c, struct dsv_error *err) {
        const uint64_t deadline = now_ns() + (uint64_t)c->join_timeout_ms * 1000000ull;
        _cleanup_free_ uint8_t *buf = malloc(FRAME_CAP);
        struct dsv_wire_msg m;
        int fd = -1, r, n, last = 0;

        if (!buf)
                return dsv_error_set(err, ENOMEM, "Out of memory");
        /* node 0 may not be up yet */
        while ((r = connect_once(c, &fd)) < 0) {
                last = r;
                if (ms_left(deadline) <= 0)
                        return dsv_error_set(err, ETIMEDOUT, "Node 0 at %s:%s did not answer within %d ms (last: %s)", c->host,
                                             c->port, c->join_timeout_ms, strerror(-last));
                sleep_ms((int)MIN((int64_t)RETRY_MS, MAX(ms_left(deadline), 1)));
        }
        set_timeouts(fd, MAX(ms_left(deadline), 1));
        n = dsv_wire_hello(buf, FRAME_CAP, (uint32_t)c->nodes, (uint32_t)c->rank, c->fingerprint, c->config, c->config_len);
        if (n < 0 || (r = send_all(fd, buf, (size_t)n)) < 0) {
                close(fd);
                return dsv_error_set(err, ECONNRESET, "Cannot send the hello to node 0 at %s:%s", c->host, c->port);
        }
        n = read_frame(fd, buf, &m);
        if (n < 0) {
                close(fd);
                if (n == -ETIMEDOUT)
                        return dsv_error_set(err, ETIMEDOUT, "The group did not form within %d ms (node 0 at %s:%s waits for other nodes)",
                                             c->join_timeout_ms, c->host, c->port);
                return dsv_error_set(err, n == -EBADMSG ? EPROTO : -n, "Node 0 at %s:%s %s", c->host, c->port,
                                     n == -EBADMSG ? "answered with bytes that are not our protocol" : "closed the connection");
        }
        if (m.type == DSV_WIRE_REFUSE) {
                close(fd);
                return dsv_error_set(err, EPERM, "Node 0 at %s:%s refused node %d: %.*s", c->host, c->port, c->rank,
                                     (int)m.refuse.text_len, m.refuse.text);
        }
        if (m.type != DSV_WIRE_WELCOME || m.welcome.nodes != (uint32_t)c->nodes || m.welcome.heartbeat_ms == 0 ||
            m.welcome.timeout_ms < 2 * m.welcome.heartbeat_ms || m.welcome.timeout_ms > 86400000u) {
                close(fd);
                return dsv_error_set(err, EPROTO, "Node 0 at %s:%s sent an unexpected %s", c->host, c->port,
                                     dsv_wire_type_name(m.type));
        }
        c->id = malloc(m.welcome.id_len + 1);
        if (!c->id) {
                close(fd);
                return dsv_error_set(err, ENOMEM, "Out of memory");
        }
        memcpy(c->id, m.welcome.id, m.welcome.id_len);
        c->id_len = m.welcome.id_len;
        c->heartbeat_ms = (int)m.welcome.heartbeat_ms;
        c->timeout_ms = (int)m.welcome.timeout_ms;
        c->conns[0].fd = fd;
        c->conns[0].node = 0;
        snprintf(c->conns[0].addr, sizeof(c->conns[0].addr), "%s:%s", c->host, c->port);
        log_info("Bootstrap: node %d of %d joined the group at %s:%s", c->rank, c->nodes, c->host, c->port);
        return 0;
}

/* ------------------------------------------------------------------ monitor */
static bool failed(struct dsv_cluster *c) {
        bool f;
        pthread_mutex_lock(&c->lock);
        f = c->status < 0;
        pthread_mutex_unlock(&c->lock);
        return f;
}

static void send_frame(struct conn *k, const uint8_t *b, int n) {
        if (k->fd >= 0 && n > 0)
                (void)send(k->fd, b, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL); /* a full buffer: the timeout speaks */
}

/* The group failed (first call only): status, fd, callback; node 0 tells the others. */
static void fail_group(struct dsv_cluster *c, int lost_node, int err, const char *fmt, ...) _printf_(4, 5);
static void fail_group(struct dsv_cluster *c, int lost_node, int err, const char *fmt, ...) {
        char why[512];
        va_list ap;
        uint64_t one = 1;
        va_start(ap, fmt);
        vsnprintf(why, sizeof(why), fmt, ap);
        va_end(ap);

        pthread_mutex_lock(&c->lock);
        if (c->status < 0) {
                pthread_mutex_unlock(&c->lock);
                return;
        }
        c->status = err;
        snprintf(c->why, sizeof(c->why), "%s", why);
        pthread_mutex_unlock(&c->lock);

        log_error("Cluster: node %d of %d: %s", c->rank, c->nodes, why);
        if (c->rank == 0) {
                uint8_t buf[DSV_WIRE_HEADER + 12 + DSV_WIRE_MAX_TEXT];
                int n = dsv_wire_fail(buf, sizeof(buf), (uint32_t)MAX(lost_node, 0), (uint32_t)-err, why);
                for (int i = 1; i < c->n_conns; i++)
                        if (i != lost_node)
                                send_frame(&c->conns[i], buf, n);
        }
        if (write(c->fail_fd, &one, sizeof(one)) < 0) {
                /* an eventfd write of 1 cannot fail short of a bug */
        }
        if (c->on_failure)
                c->on_failure(c->userdata, err, why);
}

/* Reads what k sent; handles complete frames. */
static void receive(struct dsv_cluster *c, struct conn *k) {
        struct dsv_wire_msg m;
        ssize_t n = recv(k->fd, k->in + k->in_len, FRAME_CAP - k->in_len, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
                return;
        if (n <= 0) {
                fail_group(c, k->node, -ECONNRESET, "lost node %d (%s): %s", k->node, k->addr,
                           n == 0 ? "its connection closed" : strerror(errno));
                return;
        }
        k->in_len += (size_t)n;
        k->last_rx_ns = now_ns();
        for (;;) {
                int d = dsv_wire_decode(k->in, k->in_len, &m);
                if (d == 0)
                        return;
                if (d < 0) {
                        fail_group(c, k->node, -EPROTO, "node %d (%s) sent bytes that are not our protocol", k->node, k->addr);
                        return;
                }
                switch (m.type) {
                case DSV_WIRE_HEARTBEAT:
                        break;
                case DSV_WIRE_BYE:
                        fail_group(c, k->node, -ESHUTDOWN, "node %d (%s) left the group", k->node, k->addr);
                        return;
                case DSV_WIRE_FAIL:
                        if (c->rank != 0) {
                                int e = m.fail.err > 0 && m.fail.err < 4096 ? -(int)m.fail.err : -EIO;
                                fail_group(c, (int)m.fail.node, e, "node 0 reports: %.*s", (int)m.fail.text_len, m.fail.text);
                                return;
                        }
                        __attribute__((fallthrough)); /* only node 0 sends FAIL */
                default:
                        fail_group(c, k->node, -EPROTO, "node %d (%s) sent an unexpected %s", k->node, k->addr,
                                   dsv_wire_type_name(m.type));
                        return;
                }
                memmove(k->in, k->in + d, k->in_len - (size_t)d);
                k->in_len -= (size_t)d;
        }
}

static void *monitor(void *arg) {
        struct dsv_cluster *c = arg;
        const uint64_t hb = (uint64_t)c->heartbeat_ms * 1000000ull, to = (uint64_t)c->timeout_ms * 1000000ull;
        struct pollfd *p = calloc((size_t)c->n_conns + 2, sizeof(*p));
        uint8_t beat[DSV_WIRE_HEADER + 8];
        uint64_t seq = 0, next_beat = now_ns();

        if (!p) {
                fail_group(c, -1, -ENOMEM, "out of memory in the heartbeat monitor");
                return NULL;
        }
        while (!failed(c)) {
                uint64_t now = now_ns(), wake = next_beat;
                int np = 0;
                if (now >= next_beat) {
                        int n = dsv_wire_heartbeat(beat, sizeof(beat), seq++);
                        for (int i = 0; i < c->n_conns; i++)
                                send_frame(&c->conns[i], beat, n);
                        next_beat = now + hb;
                        wake = next_beat;
                }
                for (int i = 0; i < c->n_conns; i++) {
                        struct conn *k = &c->conns[i];
                        if (k->fd < 0)
                                continue;
                        if (now - k->last_rx_ns > to) {
                                fail_group(c, k->node, -ETIMEDOUT, "node %d (%s) sent nothing for %d ms", k->node, k->addr,
                                           (int)((now - k->last_rx_ns) / 1000000u));
                                break;
                        }
                        wake = MIN(wake, k->last_rx_ns + to + 1000000u);
                }
                if (failed(c))
                        break;
                p[np++] = (struct pollfd){c->stop_fd, POLLIN, 0};
                if (c->listen_fd >= 0)
                        p[np++] = (struct pollfd){c->listen_fd, POLLIN, 0};
                for (int i = 0; i < c->n_conns; i++)
                        if (c->conns[i].fd >= 0)
                                p[np++] = (struct pollfd){c->conns[i].fd, POLLIN, 0};
                const int ms = wake > now ? (int)MIN((wake - now) / 1000000u + 1, (uint64_t)INT_MAX) : 0;
                if (poll(p, (nfds_t)np, ms) < 0 && errno != EINTR) {
                        fail_group(c, -1, -EIO, "poll: %s", strerror(errno));
                        break;
                }
                if (p[0].revents) {
                        /* leaving on purpose: tell the others */
                        uint8_t bye[DSV_WIRE_HEADER];
                        int n = dsv_wire_bye(bye, sizeof(bye));
                        for (int i = 0; i < c->n_conns; i++)
                                send_frame(&c->conns[i], bye, n);
                        break;
                }
                int j = 1;
                if (c->listen_fd >= 0 && p[j++].revents) {
                        /* the group is complete: a late or foreign node gets a clear no */
                        struct sockaddr_storage ss;
                        socklen_t sl = sizeof(ss);
                        int fd = accept4(c->listen_fd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
                        if (fd >= 0) {
                                char addr[80], text[96];
                                addr_string((struct sockaddr *)&ss, sl, NULL, 0, addr, sizeof(addr));
                                set_timeouts(fd, 100);
                                snprintf(text, sizeof(text), "the group of %d nodes is complete", c->nodes);
                                refuse(fd, DSV_REFUSE_COMPLETE, addr, text);
                                close(fd);
                        }
                }
                for (int i = 0; i < c->n_conns && !failed(c); i++)
                        if (c->conns[i].fd >= 0 && p[j++].revents)
                                receive(c, &c->conns[i]);
        }
        free(p);
        return NULL;
}

int dsv_cluster_join(struct dsv_cluster *c, struct dsv_error *err) {
        int r;
        if (!c || c->joined)
                return dsv_error_set(err, EINVAL, "dsv_cluster_join: no cluster, or joined already");
        r = c->rank == 0 ? join_as_coordinator(c, err) : join_as_node(c, err);
        if (r < 0)
                return r;
        for (int i = 0; i < c->n_conns; i++) {
                struct conn *k = &c->conns[i];
                int one = 1;
                if (k->fd < 0)
                        continue;
                setsockopt(k->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                k->last_rx_ns = now_ns();
                k->in = malloc(FRAME_CAP);
                if (!k->in)
                        return dsv_error_set(err, ENOMEM, "Out of memory");
        }
        c->joined = true;
        r = pthread_create(&c->thread, NULL, monitor, c);
        if (r != 0)
                return dsv_error_set(err, r, "Cannot start the heartbeat thread: %s", strerror(r));
        c->thread_started = true;
        return 0;
}

int dsv_cluster_status(struct dsv_cluster *c, char *why, size_t n) {
        int s;
        if (!c)
                return -EINVAL;
        pthread_mutex_lock(&c->lock);
        s = c->status;
        if (why && n)
                snprintf(why, n, "%s", c->why);
        pthread_mutex_unlock(&c->lock);
        return s;
}

int dsv_cluster_wait(struct dsv_cluster *c, int timeout_ms) {
        struct pollfd p = {c->fail_fd, POLLIN, 0};
        const uint64_t deadline = now_ns() + (uint64_t)MAX(timeout_ms, 0) * 1000000ull;
        for (;;) {
                int s = dsv_cluster_status(c, NULL, 0);
                if (s < 0)
                        return s;
                int ms = timeout_ms < 0 ? -1 : (int)ms_left(deadline);
                if (timeout_ms >= 0 && ms <= 0)
                        return 0;
                if (poll(&p, 1, ms) < 0 && errno != EINTR)
                        return dsv_negerrno();
        }
}

int dsv_cluster_failure_fd(const struct dsv_cluster *c) { return c ? c->fail_fd : -EINVAL; }

void dsv_cluster_free(struct dsv_cluster *c) {
        if (!c)
                return;
        if (c->thread_started) {
                uint64_t one = 1;
                if (write(c->stop_fd, &one, sizeof(one)) < 0) {
                        /* cannot fail: the thread is then only stopped by the join below timing out */
                }
                pthread_join(c->thread, NULL);
        }
        for (int i = 0; c->conns && i < c->n_conns; i++) {
                if (c->conns[i].fd >= 0)
                        close(c->conns[i].fd);
                free(c->conns[i].in);
        }
        free(c->conns);
        if (c->listen_fd >= 0)
                close(c->listen_fd);
        if (c->stop_fd >= 0)
                close(c->stop_fd);
        if (c->fail_fd >= 0)
                close(c->fail_fd);
        for (size_t i = 0; i < c->n_allowed; i++)
                free(c->allowed[i]);
        free(c->allowed);
        free(c->id);
        free(c->config);
        free(c->host);
        free(c->port);
        pthread_mutex_destroy(&c->lock);
        free(c);
}
