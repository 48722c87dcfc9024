/* The multi-node bootstrap (daemon/cluster) with real processes on loopback: every node is
 * a child process of this test (its stderr, the log, in a file), node 0 listens on a free
 * port. Checked:
 *   - 2 and 4 nodes form a group, every node gets node 0's id, heartbeats keep them
 *     healthy for several timeouts, and a node that leaves (BYE) ends the group for the rest;
 *   - a killed node (SIGKILL) is reported by every other node at once, a stopped one
 *     (SIGSTOP) within the timeout plus a heartbeat, a killed node 0 by every node;
 *   - node 0 refuses, with a log line each, and keeps waiting: another model fingerprint,
 *     another configuration, another group size, a rank out of range or taken, bytes that
 *     are not our protocol, a connection that says nothing, an address not in
 *     cluster-peers, and anyone once the group is complete; a refused node's join fails
 *     with -EPERM and the reason;
 *   - join timeouts on both sides name what is missing; bad options are refused.
 * Timing: heartbeat 100 ms, timeout 1 s (200 ms and 2 s under sanitizers, whose threads
 * start slowly on a loaded machine); a report may be SLACK_MS late (loaded CI). */
#include "config.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "daemon/cluster/cluster.h"
#include "daemon/util.h"
#include "tests/check.h"

#if defined(DSV_TSAN) || defined(DSV_SANITIZERS)
#define HB_MS 200
#define TO_MS 2000
#else
#define HB_MS 100
#define TO_MS 1000
#endif
#define SLACK_MS 2500
#define MAXN 8

static char scratch[512];
static const uint8_t FP[DSV_FINGERPRINT_BYTES] = {0xd5, 0x32, 0x01, 0x02, 0x03};
static const uint8_t FP_OTHER[DSV_FINGERPRINT_BYTES] = {0xd5, 0x32, 0x01, 0x02, 0x04};
static const char CONFIG[] = "ranks=8 parallel=ep,dp numerics=faithful kv=fp8";
static uint8_t group_id[128];

static double ms_between(uint64_t a, uint64_t b) { return ((double)b - (double)a) / 1e6; }

static void sleep_ms(int ms) {
        struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

static uint64_t hash(const void *p, size_t n) {
        uint64_t h = 1469598103934665603ull;
        for (size_t i = 0; i < n; i++)
                h = (h ^ ((const uint8_t *)p)[i]) * 1099511628211ull;
        return h;
}

/* ------------------------------------------------------------------ a node process */
enum after_join {
        STAY,        /* wait for a failure (up to wait_ms) and report it */
        LEAVE_AFTER, /* leave the group (BYE) after wait_ms */
};

struct node_cfg {
        int nodes, rank;
        int port; /* node 0: 0 (any free port); others: node 0's */
        const uint8_t *fp;
        const char *config;
        const char *allowed;
        int join_ms;
        enum after_join after;
        int wait_ms;
        char log[600]; /* its stderr */
};

struct report {
        int phase; /* 0: node 0's port, 1: joined (or not), 2: failure seen (or not) */
        int rc;
        char err[1024];
        uint64_t id_hash;
        int port;
        uint64_t t_ns; /* CLOCK_MONOTONIC of the event */
};

struct node {
        pid_t pid;
        int fd;
        struct node_cfg cfg;
};

static void put(int fd, const struct report *r) {
        if (write(fd, r, sizeof(*r)) != (ssize_t)sizeof(*r))
                _exit(3);
}

static int node_main(const struct node_cfg *nc, int out) {
        char coord[64];
        struct dsv_cluster *c = NULL;
        struct dsv_error err = {{0}};
        struct report rep = {0};
        size_t id_len = 0;
        int r;

        snprintf(coord, sizeof(coord), "127.0.0.1:%d", nc->port);
        const struct dsv_cluster_opts o = {
                .nodes = nc->nodes,
                .node_rank = nc->rank,
                .coordinator = coord,
                .allowed_peers = nc->allowed,
                .fingerprint = nc->fp,
                .config = nc->config,
                .heartbeat_ms = HB_MS,
                .timeout_ms = TO_MS,
                .join_timeout_ms = nc->join_ms,
                .handshake_timeout_ms = 300,
                .id = nc->rank == 0 ? group_id : NULL,
                .id_len = nc->rank == 0 ? sizeof(group_id) : 0,
        };
        r = dsv_cluster_new(&o, &c, &err);
        if (nc->rank == 0) {
                rep.phase = 0;
                rep.rc = r;
                rep.port = r == 0 ? dsv_cluster_port(c) : -1;
                snprintf(rep.err, sizeof(rep.err), "%s", err.msg);
                put(out, &rep);
        }
        if (r < 0)
                return 1;
        r = dsv_cluster_join(c, &err);
        const void *id = r == 0 ? dsv_cluster_id(c, &id_len) : NULL;
        rep = (struct report){.phase = 1, .rc = r, .id_hash = id ? hash(id, id_len) : 0, .t_ns = dsv_now_ns()};
        snprintf(rep.err, sizeof(rep.err), "%s", r < 0 ? err.msg : "");
        put(out, &rep);
        if (r < 0) {
                dsv_cluster_free(c);
                return 0;
        }
        if (nc->after == LEAVE_AFTER) {
                sleep_ms(nc->wait_ms);
                rep = (struct report){.phase = 2, .rc = dsv_cluster_status(c, rep.err, sizeof(rep.err)), .t_ns = dsv_now_ns()};
                put(out, &rep);
                dsv_cluster_free(c); /* BYE */
                return 0;
        }
        r = dsv_cluster_wait(c, nc->wait_ms);
        rep = (struct report){.phase = 2, .rc = r, .t_ns = dsv_now_ns()};
        dsv_cluster_status(c, rep.err, sizeof(rep.err));
        put(out, &rep);
        /* stay in the group (sockets open) until the test ends it */
        for (;;)
                pause();
}

static int start_node(struct node *n, const struct node_cfg *nc, const char *name) {
        int p[2];
        n->cfg = *nc;
        snprintf(n->cfg.log, sizeof(n->cfg.log), "%s/%s.log", scratch, name);
        if (pipe2(p, O_CLOEXEC) < 0)
                return -errno;
        fflush(NULL);
        n->pid = fork();
        if (n->pid < 0)
                return -errno;
        if (n->pid == 0) {
                close(p[0]);
                int e = open(n->cfg.log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                if (e >= 0)
                        dup2(e, 2);
                _exit(node_main(&n->cfg, p[1]));
        }
        close(p[1]);
        n->fd = p[0];
        return 0;
}

/* The node's next report, waiting at most ms; phase -1 when none came. */
static struct report next_report(struct node *n, int ms) {
        struct report r = {.phase = -1};
        struct pollfd p = {n->fd, POLLIN, 0};
        if (poll(&p, 1, ms) == 1 && read(n->fd, &r, sizeof(r)) == (ssize_t)sizeof(r))
                return r;
        r.phase = -1;
        return r;
}

static void stop_node(struct node *n) {
        if (n->pid > 0) {
                kill(n->pid, SIGKILL);
                waitpid(n->pid, NULL, 0);
                close(n->fd);
                n->pid = 0;
        }
}

/* Node 0 started, its port known: 0 or -1. */
static int start_node0(struct node *n0, struct node_cfg nc, const char *name, int *port) {
        nc.rank = 0;
        nc.port = 0;
        if (start_node(n0, &nc, name) < 0)
                return -1;
        struct report r = next_report(n0, 10000);
        CHECK(r.phase == 0 && r.rc == 0 && r.port > 0, "node 0 listens (phase %d, rc %d: %s)", r.phase, r.rc, r.err);
        *port = r.port;
        return r.phase == 0 && r.rc == 0 ? 0 : -1;
}

static char *slurp(const char *path) {
        char *t = NULL;
        if (dsv_read_file(path, 1 << 20, &t, NULL) < 0)
                return strdup("");
        return t;
}

static struct node_cfg base_cfg(int nodes, int rank, int port) {
        struct node_cfg c = {.nodes = nodes, .rank = rank, .port = port, .fp = FP, .config = CONFIG, .join_ms = 20000,
                             .after = STAY, .wait_ms = 20000};
        return c;
}

/* ------------------------------------------------------------------ scenarios */
/* N nodes form a group; the last one leaves after a while: every other node reports it. */
static void test_form_and_leave(int n) {
        struct node nodes[MAXN] = {{0}};
        const int stay_ms = 2 * TO_MS;
        int port;
        char name[32];

        fprintf(stderr, "-- %d nodes form a group; node %d leaves after %d ms\n", n, n - 1, stay_ms);
        snprintf(name, sizeof(name), "form%d-node0", n);
        if (start_node0(&nodes[0], base_cfg(n, 0, 0), name, &port) < 0)
                goto out;
        for (int i = 1; i < n; i++) {
                struct node_cfg nc = base_cfg(n, i, port);
                if (i == n - 1) {
                        nc.after = LEAVE_AFTER;
                        nc.wait_ms = stay_ms;
                }
                snprintf(name, sizeof(name), "form%d-node%d", n, i);
                start_node(&nodes[i], &nc, name);
        }
        for (int i = 0; i < n; i++) {
                struct report r = next_report(&nodes[i], 30000);
                CHECK(r.phase == 1 && r.rc == 0, "node %d joined (phase %d, rc %d: %s)", i, r.phase, r.rc, r.err);
                CHECK(r.id_hash == hash(group_id, sizeof(group_id)), "node %d has node 0's group id", i);
        }
        struct report left = next_report(&nodes[n - 1], stay_ms + 30000);
        CHECK(left.phase == 2 && left.rc == 0, "node %d was healthy for %d ms before it left (rc %d: %s)", n - 1, stay_ms,
              left.rc, left.err);
        for (int i = 0; i < n - 1; i++) {
                struct report r = next_report(&nodes[i], 30000);
                char want[32];
                snprintf(want, sizeof(want), "node %d", n - 1);
                CHECK(r.phase == 2 && r.rc == -ESHUTDOWN, "node %d reports the leaving node with -ESHUTDOWN (phase %d, rc %d: %s)",
                      i, r.phase, r.rc, r.err);
                CHECK(strstr(r.err, want) && strstr(r.err, "left the group"), "node %d's reason names %s: %s", i, want, r.err);
                const double late = ms_between(left.t_ns, r.t_ns);
                CHECK(late >= 0 && late < HB_MS + SLACK_MS, "node %d learned of the leave %.0f ms after it", i, late);
        }
out:
        for (int i = 0; i < n; i++)
                stop_node(&nodes[i]);
}

/* A node of a running group dies (SIGKILL) or hangs (SIGSTOP): every other node reports it,
 * at once for a closed connection, within the timeout (+ a heartbeat) for a silent one. */
static void test_lost_node(int n, int victim, int sig) {
        struct node nodes[MAXN] = {{0}};
        const int want = sig == SIGKILL ? -ECONNRESET : -ETIMEDOUT;
        int port;
        char name[32];

        fprintf(stderr, "-- %d nodes; node %d gets %s\n", n, victim, sig == SIGKILL ? "SIGKILL" : "SIGSTOP");
        snprintf(name, sizeof(name), "lost%d-%d-%d-node0", n, victim, sig);
        if (start_node0(&nodes[0], base_cfg(n, 0, 0), name, &port) < 0)
                goto out;
        for (int i = 1; i < n; i++) {
                struct node_cfg nc = base_cfg(n, i, port);
                snprintf(name, sizeof(name), "lost%d-%d-%d-node%d", n, victim, sig, i);
                start_node(&nodes[i], &nc, name);
        }
        for (int i = 0; i < n; i++) {
                struct report r = next_report(&nodes[i], 30000);
                CHECK(r.phase == 1 && r.rc == 0, "node %d joined (phase %d, rc %d: %s)", i, r.phase, r.rc, r.err);
        }
        sleep_ms(3 * HB_MS); /* heartbeats flowing */
        const uint64_t t0 = dsv_now_ns();
        kill(nodes[victim].pid, sig);
        for (int i = 0; i < n; i++) {
                if (i == victim)
                        continue;
                struct report r = next_report(&nodes[i], TO_MS + SLACK_MS + 5000);
                char who[32];
                snprintf(who, sizeof(who), "node %d", victim);
                CHECK(r.phase == 2 && r.rc == want, "node %d reports node %d lost with %d (phase %d, rc %d: %s)", i, victim, want,
                      r.phase, r.rc, r.err);
                CHECK(strstr(r.err, who) != NULL, "node %d's reason names %s: %s", i, who, r.err);
                const double after = ms_between(t0, r.t_ns);
                if (sig == SIGKILL)
                        CHECK(after < SLACK_MS, "node %d reported the killed node after %.0f ms", i, after);
                else
                        CHECK(after > TO_MS - HB_MS - 10 && after < TO_MS + HB_MS + SLACK_MS,
                              "node %d reported the stopped node after %.0f ms (timeout %d, heartbeat %d)", i, after, TO_MS,
                              HB_MS);
                fprintf(stderr, "   node %d: %s after %.0f ms\n", i, r.err, after);
        }
out:
        for (int i = 0; i < n; i++)
                stop_node(&nodes[i]);
}

/* A raw TCP client: sends bytes (maybe none), returns node 0's answer frame decoded into
 * *m (its buffer in buf), 0 when node 0 closed without a frame, -1 on error. */
static int raw_exchange(int port, const void *bytes, size_t n, uint8_t *buf, size_t cap, struct dsv_wire_msg *m) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        struct timeval tv = {10, 0};
        size_t have = 0;
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), d = -1;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
                goto out;
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        if (n && send(fd, bytes, n, MSG_NOSIGNAL) != (ssize_t)n)
                goto out;
        for (;;) {
                ssize_t k = recv(fd, buf + have, cap - have, 0);
                if (k <= 0) {
                        d = k == 0 && have == 0 ? 0 : -1;
                        break;
                }
                have += (size_t)k;
                d = dsv_wire_decode(buf, have, m);
                if (d != 0)
                        break;
        }
out:
        if (fd >= 0)
                close(fd);
        return d;
}

static void expect_refusal(int port, const void *bytes, size_t n, const char *want, const char *what) {
        uint8_t buf[4096];
        struct dsv_wire_msg m;
        int d = raw_exchange(port, bytes, n, buf, sizeof(buf), &m);
        CHECK(d > 0 && m.type == DSV_WIRE_REFUSE, "%s: node 0 answers REFUSE (got %d, type %d)", what, d, d > 0 ? (int)m.type : -1);
        if (d > 0 && m.type == DSV_WIRE_REFUSE)
                CHECK(memmem(m.refuse.text, m.refuse.text_len, want, strlen(want)) != NULL, "%s: the reason says \"%s\": %.*s",
                      what, want, (int)m.refuse.text_len, m.refuse.text);
}

/* A node process that should be refused: its join fails with -EPERM and the reason. */
static void expect_refused_node(struct node_cfg nc, const char *name, const char *want) {
        struct node n = {0};
        start_node(&n, &nc, name);
        struct report r = next_report(&n, 30000);
        CHECK(r.phase == 1 && r.rc == -EPERM, "%s: join refused with -EPERM (phase %d, rc %d: %s)", name, r.phase, r.rc, r.err);
        CHECK(strstr(r.err, want) != NULL, "%s: the error says \"%s\": %s", name, want, r.err);
        stop_node(&n);
}

static void test_refusals(void) {
        struct node nodes[3] = {{0}};
        uint8_t hello[256];
        int port, n;
        _cleanup_free_ char *log = NULL;

        fprintf(stderr, "-- node 0 of 3 refuses what does not belong, then forms the group\n");
        if (start_node0(&nodes[0], base_cfg(3, 0, 0), "refuse-node0", &port) < 0)
                goto out;
        {
                struct node_cfg nc = base_cfg(3, 1, port);
                nc.fp = FP_OTHER;
                expect_refused_node(nc, "refuse-fingerprint", "another model");
        }
        {
                struct node_cfg nc = base_cfg(3, 1, port);
                nc.config = "ranks=8 parallel=ep,tp numerics=faithful kv=fp8";
                expect_refused_node(nc, "refuse-config", "another configuration");
        }
        {
                struct node_cfg nc = base_cfg(4, 1, port);
                expect_refused_node(nc, "refuse-size", "group of 4 nodes");
        }
        n = dsv_wire_hello(hello, sizeof(hello), 3, 7, FP, CONFIG, strlen(CONFIG));
        expect_refusal(port, hello, (size_t)n, "claims node 7", "rank 7 of 3");
        n = dsv_wire_hello(hello, sizeof(hello), 3, 0, FP, CONFIG, strlen(CONFIG));
        expect_refusal(port, hello, (size_t)n, "claims node 0", "rank 0");
        expect_refusal(port, "GET / HTTP/1.0\r\n\r\n", 18, "not a dsv32d bootstrap hello", "an HTTP request");
        n = dsv_wire_hello(hello, sizeof(hello), 3, 1, FP, CONFIG, strlen(CONFIG));
        hello[15] = 9; /* protocol version 9 */
        expect_refusal(port, hello, (size_t)n, "protocol version", "another protocol version");
        {
                /* says nothing: closed after the handshake timeout, no frame */
                uint8_t buf[256];
                struct dsv_wire_msg m;
                CHECK(raw_exchange(port, NULL, 0, buf, sizeof(buf), &m) == 0, "a silent connection is closed");
        }
        {
                struct node_cfg nc = base_cfg(3, 1, port);
                start_node(&nodes[1], &nc, "refuse-node1");
                struct report r = next_report(&nodes[1], 100); /* waits for the group: nothing yet */
                CHECK(r.phase == -1, "node 1 waits until the group is complete (phase %d)", r.phase);
        }
        sleep_ms(300); /* node 0 admitted node 1 */
        {
                struct node_cfg nc = base_cfg(3, 1, port);
                expect_refused_node(nc, "refuse-duplicate", "already joined");
        }
        {
                struct node_cfg nc = base_cfg(3, 2, port);
                start_node(&nodes[2], &nc, "refuse-node2");
        }
        for (int i = 0; i < 3; i++) {
                struct report r = next_report(&nodes[i], 30000);
                CHECK(r.phase == 1 && r.rc == 0, "node %d joined after the refusals (phase %d, rc %d: %s)", i, r.phase, r.rc,
                      r.err);
        }
        n = dsv_wire_hello(hello, sizeof(hello), 3, 2, FP, CONFIG, strlen(CONFIG));
        expect_refusal(port, hello, (size_t)n, "is complete", "a node after the group formed");
        sleep_ms(100);
        log = slurp(nodes[0].cfg.log);
        static const char *const lines[] = {"another model",   "another configuration", "group of 4 nodes",
                                            "claims node 7",   "claims node 0",         "not a dsv32d bootstrap hello",
                                            "no hello in time", "already joined",       "is complete"};
        for (size_t i = 0; i < ARRAY_SIZE(lines); i++) {
                char *at = strstr(log, lines[i]);
                CHECK(at != NULL, "node 0 logged a refusal with \"%s\"", lines[i]);
                if (at) {
                        /* on a line that says who was refused */
                        char *bol = at;
                        while (bol > log && bol[-1] != '\n')
                                bol--;
                        CHECK(strncmp(strstr(bol, "Refused") ? strstr(bol, "Refused") : "", "Refused bootstrap peer 127.0.0.1:", 33) == 0,
                              "the log line names the peer: %.*s", (int)(strchrnul(at, '\n') - bol), bol);
                }
        }
        /* nobody's heartbeat was disturbed */
        for (int i = 0; i < 3; i++) {
                struct report r = next_report(&nodes[i], 50);
                CHECK(r.phase == -1, "node %d saw no failure (phase %d: %s)", i, r.phase, r.err);
        }
out:
        for (int i = 0; i < 3; i++)
                stop_node(&nodes[i]);
}

/* cluster-peers: a node from elsewhere is refused; node 0 then times out naming it. */
static void test_allowed_peers_and_join_timeout(void) {
        struct node n0 = {0};
        struct node_cfg nc = base_cfg(2, 0, 0);
        int port;

        fprintf(stderr, "-- cluster-peers refuses 127.0.0.1; node 0's join times out naming node 1\n");
        nc.allowed = "192.0.2.1, 192.0.2.2";
        nc.join_ms = 1500;
        if (start_node0(&n0, nc, "allowed-node0", &port) < 0)
                goto out;
        expect_refused_node(base_cfg(2, 1, port), "allowed-node1", "cluster-peers");
        struct report r = next_report(&n0, 1500 + SLACK_MS + 5000);
        CHECK(r.phase == 1 && r.rc == -ETIMEDOUT, "node 0's join times out (phase %d, rc %d: %s)", r.phase, r.rc, r.err);
        CHECK(strstr(r.err, "node(s) 1 never joined") != NULL, "the error names node 1: %s", r.err);
out:
        stop_node(&n0);
}

/* A node whose node 0 never answers gives up after its join timeout. */
static void test_node_join_timeout(void) {
        struct sockaddr_in a = {.sin_family = AF_INET};
        socklen_t sl = sizeof(a);
        struct dsv_cluster *c = NULL;
        struct dsv_error err = {{0}};
        char coord[64];
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        fprintf(stderr, "-- a node whose node 0 never answers\n");
        /* a port nobody listens on: bound, never listened */
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || getsockname(fd, (struct sockaddr *)&a, &sl) < 0) {
                CHECK(false, "cannot reserve a port: %s", strerror(errno));
                return;
        }
        snprintf(coord, sizeof(coord), "127.0.0.1:%d", ntohs(a.sin_port));
        const struct dsv_cluster_opts o = {.nodes = 2, .node_rank = 1, .coordinator = coord, .fingerprint = FP, .config = CONFIG,
                                           .heartbeat_ms = HB_MS, .timeout_ms = TO_MS, .join_timeout_ms = 700};
        CHECK(dsv_cluster_new(&o, &c, &err) == 0, "dsv_cluster_new: %s", err.msg);
        const uint64_t t0 = dsv_now_ns();
        int r = c ? dsv_cluster_join(c, &err) : -1;
        const double took = ms_between(t0, dsv_now_ns());
        CHECK(r == -ETIMEDOUT, "join without node 0: %d (%s)", r, err.msg);
        CHECK(strstr(err.msg, "did not answer within 700 ms") != NULL, "the error says so: %s", err.msg);
        CHECK(took >= 650 && took < 700 + SLACK_MS, "gave up after %.0f ms", took);
        dsv_cluster_free(c);
        close(fd);
}

static void expect_bad_opts(struct dsv_cluster_opts o, const char *want, const char *what) {
        struct dsv_cluster *c = NULL;
        struct dsv_error err = {{0}};
        int r = dsv_cluster_new(&o, &c, &err);
        CHECK(r == -EINVAL && !c, "%s: -EINVAL (got %d)", what, r);
        CHECK(strstr(err.msg, want) != NULL, "%s: the error says \"%s\": %s", what, want, err.msg);
        dsv_cluster_free(c);
}

static void test_bad_options(void) {
        static char big[DSV_WIRE_MAX_CONFIG + 2];
        const struct dsv_cluster_opts ok = {.nodes = 2, .node_rank = 1, .coordinator = "127.0.0.1:29500", .fingerprint = FP,
                                            .config = CONFIG, .heartbeat_ms = HB_MS, .timeout_ms = TO_MS, .join_timeout_ms = 1000};
        struct dsv_cluster_opts o;

        fprintf(stderr, "-- bad options\n");
        o = ok, o.nodes = 1;
        expect_bad_opts(o, "2..1024", "one node");
        o = ok, o.node_rank = 2;
        expect_bad_opts(o, "node-rank = 2", "rank 2 of 2");
        o = ok, o.coordinator = "127.0.0.1";
        expect_bad_opts(o, "HOST:PORT", "no port");
        o = ok, o.coordinator = "127.0.0.1:99999";
        expect_bad_opts(o, "HOST:PORT", "port out of range");
        o = ok, o.coordinator = "::1:29500";
        expect_bad_opts(o, "[IPv6]:PORT", "IPv6 without brackets");
        o = ok, o.coordinator = "127.0.0.1:0";
        expect_bad_opts(o, "needs node 0's port", "a node with port 0");
        o = ok, o.timeout_ms = HB_MS;
        expect_bad_opts(o, "at least two heartbeats", "timeout below two heartbeats");
        memset(big, 'x', sizeof(big) - 1);
        o = ok, o.config = big;
        expect_bad_opts(o, "over 4096 bytes", "a config text over the limit");
        o = ok, o.fingerprint = NULL;
        expect_bad_opts(o, "fingerprint", "no fingerprint");
}

int main(void) {
        const char *b = getenv("top_builddir");
        snprintf(scratch, sizeof(scratch), "%s/tests/cluster/test-cluster-bootstrap.tmp", b && *b ? b : ".");
        if (dsv_mkdir_p(scratch, 0755) < 0) {
                fprintf(stderr, "cannot create %s\n", scratch);
                return 1;
        }
        signal(SIGPIPE, SIG_IGN);
        for (size_t i = 0; i < sizeof(group_id); i++)
                group_id[i] = (uint8_t)(i * 37 + 11);

        test_bad_options();
        test_node_join_timeout();
        test_form_and_leave(2);
        test_form_and_leave(4);
        test_lost_node(4, 2, SIGKILL);
        test_lost_node(3, 1, SIGSTOP);
        test_lost_node(3, 0, SIGKILL);
        test_refusals();
        test_allowed_peers_and_join_timeout();
        if (test_failures)
                fprintf(stderr, "logs of the nodes kept in %s\n", scratch);
        return test_result("test-cluster-bootstrap");
}
