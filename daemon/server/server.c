/* The event loop of dsv32d (see server.h). One thread: it never blocks except in
 * epoll_wait, never trusts a byte a client wrote, and answers every bad request with an
 * ERROR (a broken ring or a malformed record also drops that client, nobody else). */
#include "config.h"

#include "daemon/server/server.h"

#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>

#include "daemon/cluster/nodes.h"
#include "daemon/server/access.h"
#include "daemon/server/conn.h"
#include "daemon/engine/engine.h"
#include "daemon/engine/text.h"
#include "daemon/server/sink.h"
#include "daemon/server/rates.h"
#include "daemon/server/reqlog.h"
#include "daemon/util.h"

#define TAG_LISTEN 1
#define TAG_SIGNAL 2
#define TAG_TIMER 3
#define TAG_ENGINE 4
#define TICK_MS 100
#define MAX_UIDS 4096
#define RECORDS_PER_PASS 64
#define HANDSHAKE_MAX 4096
#define log_errno dsv_log_errno

struct dsv_server {
        struct dsv_server_config cfg;
        int32_t rank_pages[DSV_MAX_RANK_PAGES]; /* a STATS reply's key 64 (engine_stats) */
        struct dsv_server_args args;
        struct dsv_access access;
        int epfd, sigfd, timerfd, engine_efd, listen_fd;
        bool listen_owned, accepting;
        struct dsv_engine *engine;
        struct dsv_conn *conns;
        int n_conns;
        struct dsv_conn **active;
        size_t n_active, cap_active;
        struct dsv_uid_entry **uids;
        size_t n_uids;
        uint8_t *rxbuf;
        size_t rxcap;
        uint64_t serial;
        uint64_t t_start;
        bool quit, draining, ready_notified;
        bool lost;            /* the device failed: exiting once the clients have their ERRORs */
        struct dsv_nodes *nodes; /* node 0 of a group of hosts, or NULL (not owned) */
        uint64_t lost_deadline_ns; /* ... or at this time (monotonic), whatever they read */
        int exit_code;
        uint64_t watchdog_usec, last_watchdog, last_status, last_extend;
        uint64_t loop_wakeups, loop_sleeps, doorbells_received;
        struct dsv_spin spin; /* adaptive spin window, at most spin-us */
        char state_dir_env[4096];
        struct dsv_rates rates; /* token counters sampled every tick (dsv32 status) */
};

/* ------------------------------------------------------------------ helpers */

static int epoll_add(struct dsv_server *s, int fd, uint32_t events, uint64_t tag) {
        struct epoll_event ev = {.events = events, .data.u64 = tag};
        return epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? dsv_negerrno() : 0;
}

static struct dsv_uid_entry *uid_entry(struct dsv_server *s, uid_t uid) {
        struct dsv_uid_entry *e, **v;
        for (size_t i = 0; i < s->n_uids; i++)
                if (s->uids[i]->uid == uid)
                        return s->uids[i];
        if (s->n_uids >= MAX_UIDS)
                return NULL;
        v = realloc(s->uids, (s->n_uids + 1) * sizeof(*v));
        if (!v)
                return NULL;
        s->uids = v;
        e = calloc(1, sizeof(*e));
        if (!e)
                return NULL;
        e->uid = uid;
        s->uids[s->n_uids++] = e;
        return e;
}

/* The daemon's state on the wire. */
static enum dsv_daemon_state wire_state(const struct dsv_server *s) {
        if (s->draining)
                return DSV_STATE_DRAINING;
        switch (dsv_engine_state(s->engine)) {
        case DSV_ENGINE_LOADING:
                return DSV_STATE_LOADING;
        case DSV_ENGINE_READY:
                return DSV_STATE_READY;
        default:
                return DSV_STATE_FAILED;
        }
}

static uint32_t features_of(const struct dsv_engine_info *inf) {
        return DSV_FEATURE_SESSIONS | DSV_FEATURE_LOGPROBS | (inf->text ? DSV_FEATURE_TEXT : 0) |
               (inf->chat ? DSV_FEATURE_CHAT | DSV_FEATURE_CHAT_EVENTS : 0) | (inf->mtp ? DSV_FEATURE_MTP : 0) |
               (inf->text ? DSV_FEATURE_SCHEMA : 0);
}

static void notify_status(struct dsv_server *s, bool force) {
        char buf[512];
        uint64_t now = dsv_now_ns();
        enum dsv_engine_state st = dsv_engine_state(s->engine);
        if ((!force && now - s->last_status < 5000000000ull) || s->lost) /* keep the failure's STATUS= */
                return;
        s->last_status = now;
        if (st == DSV_ENGINE_LOADING) {
                struct dsv_engine_load_figures f;
                dsv_engine_load_figures(s->engine, &f);
                int n = snprintf(buf, sizeof(buf), "STATUS=Loading %s: %u%%", s->cfg.model, dsv_engine_load_permille(s->engine) / 10);
                if (f.total && n > 0 && (size_t)n < sizeof(buf)) /* the reads have begun */
                        n += snprintf(buf + n, sizeof(buf) - (size_t)n, ", %.1f of %.1f MB read at %.2f GB/s", f.bytes_read / 1e6,
                                      f.total / 1e6, f.disk_gbs);
                if (f.device_gbs > 0 && n > 0 && (size_t)n < sizeof(buf))
                        snprintf(buf + n, sizeof(buf) - (size_t)n, ", into device memory at %.2f GB/s", f.device_gbs);
        } else {
                const struct dsv_engine_info *inf = dsv_engine_info(s->engine);
                struct dsv_engine_metrics mt;
                dsv_engine_metrics(s->engine, &mt);
                snprintf(buf, sizeof(buf),
                         "STATUS=%s: %d clients, %llu running, %llu waiting, %.1f tok/s, KV %llu/%llu pages, %llu sessions, "
                         "%llu requests served",
                         s->draining ? "Draining" : "Ready", s->n_conns, (unsigned long long)mt.requests_running,
                         (unsigned long long)(mt.requests_waiting + mt.requests_prefilling), mt.decode_tok_s,
                         (unsigned long long)mt.kv_pages_used, (unsigned long long)(inf ? inf->kv_pages_total : 0),
                         (unsigned long long)mt.sessions, (unsigned long long)mt.requests_total);
        }
        sd_notify(0, buf);
}

/* ------------------------------------------------------------------ listening socket */

static int create_socket(struct dsv_server *s) {
        const char *path = s->cfg.socket;
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        _cleanup_close_ int fd = -1;
        struct stat st;
        char dir[sizeof(sa.sun_path)];
        char *slash;

        if (strlen(path) >= sizeof(sa.sun_path))
                return log_errno(DSV_LOG_ERR, -ENAMETOOLONG, "Socket path %s is too long (at most %zu bytes)", path,
                                 sizeof(sa.sun_path) - 1);
        memcpy(sa.sun_path, path, strlen(path) + 1);
        snprintf(dir, sizeof(dir), "%s", path);
        slash = strrchr(dir, '/');
        if (slash && slash != dir) {
                *slash = 0;
                if (dsv_mkdir_p(dir, 0755) < 0 && errno != EEXIST)
                        return log_errno(DSV_LOG_ERR, dsv_negerrno(), "Cannot create %s: %m", dir);
        }
        fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return log_errno(DSV_LOG_ERR, dsv_negerrno(), "Cannot create a Unix socket: %m");
        if (lstat(path, &st) == 0) {
                /* a socket left by a previous run is removed; a live one means another dsv32d */
                _cleanup_close_ int probe = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
                if (!S_ISSOCK(st.st_mode))
                        return log_errno(DSV_LOG_ERR, -EEXIST, "%s exists and is not a socket; not touching it", path);
                if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0)
                        return log_errno(DSV_LOG_ERR, -EADDRINUSE, "Another dsv32d is listening on %s", path);
                unlink(path);
        }
        {
                mode_t old = umask(0777 & ~(mode_t)s->cfg.socket_mode);
                int r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
                umask(old);
                if (r < 0)
                        return log_errno(DSV_LOG_ERR, dsv_negerrno(), "Cannot bind %s: %m", path);
        }
        s->listen_owned = true;
        if (chmod(path, (mode_t)s->cfg.socket_mode) < 0)
                return log_errno(DSV_LOG_ERR, dsv_negerrno(), "Cannot chmod %s: %m", path);
        if (s->cfg.socket_group[0]) {
                struct group gr, *res = NULL;
                char buf[4096];
                long gid;
                if (dsv_parse_int(s->cfg.socket_group, 0, 0x7fffffff, &gid) < 0) {
                        if (getgrnam_r(s->cfg.socket_group, &gr, buf, sizeof(buf), &res) != 0 || !res)
                                return log_errno(DSV_LOG_ERR, -ENOENT, "socket-group: no group named '%s'", s->cfg.socket_group);
                        gid = (long)res->gr_gid;
                }
                if (chown(path, (uid_t)-1, (gid_t)gid) < 0)
                        return log_errno(DSV_LOG_ERR, dsv_negerrno(), "Cannot give %s to group %s: %m", path, s->cfg.socket_group);
        }
        if (listen(fd, 128) < 0)
                return log_errno(DSV_LOG_ERR, dsv_negerrno(), "Cannot listen on %s: %m", path);
        s->listen_fd = TAKE_FD(fd);
        log_info("Listening on %s (mode 0%o)", path, (unsigned)s->cfg.socket_mode);
        return 0;
}

static int setup_listen(struct dsv_server *s) {
        int n = sd_listen_fds(1);
        if (n < 0)
                return log_errno(DSV_LOG_ERR, n, "sd_listen_fds failed: %s", strerror(-n));
        if (n > 1)
                log_warning("Got %d sockets from systemd; using the first", n);
        if (n >= 1) {
                int fd = SD_LISTEN_FDS_START;
                if (sd_is_socket_unix(fd, SOCK_SEQPACKET, 1, NULL, 0) <= 0)
                        return log_errno(DSV_LOG_ERR, -EINVAL,
                                         "The socket passed by systemd is not a listening AF_UNIX SOCK_SEQPACKET socket "
                                         "(dsv32d.socket needs ListenSequentialPacket=)");
                if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
                        return log_errno(DSV_LOG_ERR, dsv_negerrno(), "fcntl on the activated socket: %m");
                for (int i = 1; i < n; i++)
                        close(SD_LISTEN_FDS_START + i);
                s->listen_fd = fd;
                log_info("Using the socket passed by systemd");
                return 0;
        }
        return create_socket(s);
}

static void stop_listening(struct dsv_server *s) {
        if (s->listen_fd < 0)
                return;
        epoll_ctl(s->epfd, EPOLL_CTL_DEL, s->listen_fd, NULL);
        s->accepting = false;
        if (s->listen_owned) {
                unlink(s->cfg.socket);
                close(s->listen_fd);
                s->listen_fd = -1;
                s->listen_owned = false;
        }
}

/* ------------------------------------------------------------------ connections */

static void active_remove(struct dsv_server *s, struct dsv_conn *c) {
        for (size_t i = 0; i < s->n_active; i++)
                if (s->active[i] == c) {
                        s->active[i] = s->active[--s->n_active];
                        break;
                }
        c->active = false;
}

static void active_add(struct dsv_server *s, struct dsv_conn *c) {
        if (c->active || c->state != DSV_CONN_ACTIVE)
                return;
        if (s->n_active == s->cap_active) {
                size_t cap = s->cap_active ? 2 * s->cap_active : 16;
                struct dsv_conn **v = realloc(s->active, cap * sizeof(*v));
                if (!v)
                        return; /* it stays on doorbells */
                s->active = v;
                s->cap_active = cap;
        }
        s->active[s->n_active++] = c;
        c->active = true;
}

static void conn_close(struct dsv_server *s, struct dsv_conn *c) {
        int fd;
        if (c->state == DSV_CONN_CLOSED)
                return;
        pthread_mutex_lock(&c->lock);
        __atomic_store_n(&c->dead, true, __ATOMIC_RELEASE);
        fd = c->fd;
        c->fd = -1;
        pthread_mutex_unlock(&c->lock);
        if (fd >= 0) {
                epoll_ctl(s->epfd, EPOLL_CTL_DEL, fd, NULL);
                close(fd);
        }
        if (c->active)
                active_remove(s, c);
        if (c->prev)
                c->prev->next = c->next;
        else
                s->conns = c->next;
        if (c->next)
                c->next->prev = c->prev;
        c->state = DSV_CONN_CLOSED;
        s->n_conns--;
        if (c->ue)
                c->ue->connections--;
        log_debug("Connection %llu (pid %d uid %u) closed", (unsigned long long)c->serial, (int)c->peer.pid,
                  (unsigned)c->peer.uid);
        dsv_engine_kick(s->engine); /* its requests end at the next step */
        dsv_conn_unref(c);
}

/* Sends an ERROR datagram on a socket (best effort, never blocks) before it is closed.
 * What the peer sent and we did not read is discarded first: closing a Unix socket with
 * unread data makes the peer's next recv fail with ECONNRESET instead of delivering our
 * ERROR. */
static void send_error_datagram(int fd, int code, const char *msg) {
        uint8_t buf[DSV_ERROR_MESSAGE_MAX + 64];
        int n;
        for (int i = 0; i < 4096 && recv(fd, buf, sizeof(buf), MSG_DONTWAIT | MSG_TRUNC) > 0; i++)
                ;
        n = dsv_error_datagram(buf, sizeof(buf), 0, code, msg);
        if (n > 0 && send(fd, buf, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
                /* the peer may be gone already */
        }
}

static int conn_drop(struct dsv_server *s, struct dsv_conn *c, int code, const char *fmt, ...) _printf_(4, 5);
static int conn_drop(struct dsv_server *s, struct dsv_conn *c, int code, const char *fmt, ...) {
        char msg[DSV_ERROR_MESSAGE_MAX];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        log_warning("Dropping client pid %d uid %u '%s': %s", (int)c->peer.pid, (unsigned)c->peer.uid, c->name, msg);
        pthread_mutex_lock(&c->lock);
        if (c->fd >= 0)
                send_error_datagram(c->fd, code, msg);
        pthread_mutex_unlock(&c->lock);
        conn_close(s, c);
        return 0;
}

static void do_accept(struct dsv_server *s) {
        for (int i = 0; i < 64 && s->accepting; i++) {
                struct dsv_peer peer;
                struct dsv_uid_entry *ue;
                struct dsv_conn *c;
                char who[128], msg[512];
                int fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
                if (fd < 0) {
                        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED)
                                log_warning("accept failed: %m");
                        return;
                }
                if (dsv_peer_get(fd, &peer) < 0) {
                        log_warning("Cannot read the credentials of a new connection: %m");
                        close(fd);
                        continue;
                }
                if (!dsv_access_allowed(&s->access, &peer, geteuid())) {
                        dsv_uid_describe(peer.uid, who, sizeof(who));
                        log_notice("Refused connection from %s, pid %d: not in allow-users or allow-groups", who, (int)peer.pid);
                        snprintf(msg, sizeof(msg),
                                 "permission denied: %s may not use dsv32d; an administrator can add the user to "
                                 "group dsv32 (or to allow-users / allow-groups in %s)",
                                 who, s->args.config_path ? s->args.config_path : DSV_CONFIG_FILE_DEFAULT);
                        send_error_datagram(fd, EACCES, msg);
                        close(fd);
                        continue;
                }
                ue = uid_entry(s, peer.uid);
                if (!ue || s->n_conns >= s->cfg.max_clients || ue->connections >= s->cfg.max_connections_per_uid) {
                        dsv_uid_describe(peer.uid, who, sizeof(who));
                        if (!ue || s->n_conns >= s->cfg.max_clients)
                                snprintf(msg, sizeof(msg), "too many connections: dsv32d serves at most %d (max-clients)",
                                         s->cfg.max_clients);
                        else
                                snprintf(msg, sizeof(msg), "too many connections: %s has %d open (max-connections-per-uid)", who,
                                         ue->connections);
                        log_notice("Refused connection from %s, pid %d: %s", who, (int)peer.pid, msg);
                        send_error_datagram(fd, EUSERS, msg);
                        close(fd);
                        continue;
                }
                c = dsv_conn_new(fd);
                if (!c) {
                        send_error_datagram(fd, ENOMEM, "out of memory");
                        close(fd);
                        continue;
                }
                c->peer = peer;
                c->ue = ue;
                c->serial = ++s->serial;
                c->state = DSV_CONN_HANDSHAKE;
                c->t_accept_ns = dsv_now_ns();
                if (epoll_add(s, fd, EPOLLIN | EPOLLRDHUP, (uint64_t)(uintptr_t)c) < 0) {
                        dsv_conn_unref(c);
                        continue;
                }
                ue->connections++;
                c->next = s->conns;
                if (s->conns)
                        s->conns->prev = c;
                s->conns = c;
                s->n_conns++;
        }
}

static int send_welcome(struct dsv_server *s, struct dsv_conn *c, int memfd) {
        const struct dsv_engine_info *inf = dsv_engine_info(s->engine);
        struct dsv_msg m = {.type = DSV_MSG_WELCOME};
        struct dsv_msg_welcome *w = &m.u.welcome;
        uint8_t buf[2048];
        struct dsv_ipc_record h = {.type = DSV_MSG_WELCOME};
        struct dsv_wbuf wb;
        union {
                struct cmsghdr align;
                char buf[CMSG_SPACE(sizeof(int))];
        } cm;
        struct iovec iov;
        struct msghdr mh = {0};
        struct cmsghdr *cmh;
        int r;

        w->version_major = DSV_IPC_VERSION_MAJOR;
        w->version_minor = DSV_IPC_VERSION_MINOR;
        snprintf(w->daemon_version, sizeof(w->daemon_version), "%s", PACKAGE_VERSION);
        w->pid = (uint32_t)getpid();
        w->state = wire_state(s);
        w->bos_id = w->eos_id = -1;
        if (inf) {
                snprintf(w->model, sizeof(w->model), "%s", inf->model);
                w->vocab_size = inf->vocab_size;
                w->bos_id = inf->bos_id;
                w->eos_id = inf->eos_id;
                w->max_context = inf->max_context;
                w->features = features_of(inf);
        }
        w->shm_size = c->shm.size;
        w->max_tokens_limit = (uint32_t)s->cfg.max_tokens_limit;
        w->max_prompt_bytes = (uint32_t)s->cfg.max_prompt_bytes;
        dsv_wbuf_fixed(&wb, buf + sizeof(h), sizeof(buf) - sizeof(h));
        if ((r = dsv_msg_encode(&m, &wb)) < 0)
                return r;
        h.length = (uint32_t)wb.len;
        memcpy(buf, &h, sizeof(h));
        iov.iov_base = buf;
        iov.iov_len = sizeof(h) + wb.len;
        mh.msg_iov = &iov;
        mh.msg_iovlen = 1;
        mh.msg_control = cm.buf;
        mh.msg_controllen = sizeof(cm.buf);
        cmh = CMSG_FIRSTHDR(&mh);
        cmh->cmsg_level = SOL_SOCKET;
        cmh->cmsg_type = SCM_RIGHTS;
        cmh->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cmh), &memfd, sizeof(int));
        if (sendmsg(c->fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
                return dsv_negerrno();
        return 0;
}

static void handle_hello(struct dsv_server *s, struct dsv_conn *c, const uint8_t *buf, size_t n) {
        struct dsv_ipc_record h;
        struct dsv_msg m;
        char why[256];
        uint32_t limit, sub, comp;
        int memfd = -1, r;

        /* a record as in the rings (ipc/PROTOCOL.md section 3): header, payload, and up to 7
         * bytes of padding to the next multiple of 8 (ignored) */
        if (n < sizeof(h)) {
                conn_drop(s, c, EPROTO, "the first datagram (%zu bytes) is shorter than a record header (%zu bytes)", n,
                          sizeof(h));
                return;
        }
        memcpy(&h, buf, sizeof(h));
        if (h.type != DSV_MSG_HELLO) {
                conn_drop(s, c, EPROTO, "the handshake must start with a HELLO record (type %u); got type %u (%s)",
                          DSV_MSG_HELLO, h.type, dsv_msg_type_name(h.type) ? dsv_msg_type_name(h.type) : "unknown");
                return;
        }
        if (h.length > n - sizeof(h)) {
                conn_drop(s, c, EPROTO, "HELLO's length field says %u payload bytes, but the datagram carries %zu after the header",
                          h.length, n - sizeof(h));
                return;
        }
        if (n != dsv_ring_record_bytes(h.length) && n != sizeof(h) + h.length) {
                conn_drop(s, c, EPROTO,
                          "the HELLO datagram has %zu bytes after its %u-byte payload; a record may only be padded to a "
                          "multiple of 8 (%llu bytes in all)",
                          n - sizeof(h) - h.length, h.length, (unsigned long long)dsv_ring_record_bytes(h.length));
                return;
        }
        if (h.flags & DSV_IPC_RECORD_FLAGS_CRITICAL) {
                conn_drop(s, c, EOPNOTSUPP, "HELLO record flags 0x%04x are not understood by this dsv32d", h.flags);
                return;
        }
        r = dsv_msg_decode(DSV_MSG_HELLO, buf + sizeof(h), h.length, &m, why, sizeof(why));
        if (r < 0) {
                conn_drop(s, c, -r == ENOSYS ? EPROTO : -r, "malformed HELLO payload: %s", why);
                return;
        }
        if (m.u.hello.version_major != DSV_IPC_VERSION_MAJOR) {
                conn_drop(s, c, EPROTONOSUPPORT, "protocol version %u is not supported; this dsv32d speaks version %u",
                          m.u.hello.version_major, DSV_IPC_VERSION_MAJOR);
                dsv_msg_release(&m);
                return;
        }
        snprintf(c->name, sizeof(c->name), "%s", m.u.hello.name);
        /* largest power of two within max-ring-kib */
        limit = DSV_IPC_RING_MIN;
        while ((uint64_t)limit * 2 <= (uint64_t)s->cfg.max_ring_kib * 1024 && limit * 2 <= DSV_IPC_RING_MAX)
                limit *= 2;
        sub = dsv_ring_size_clamp(m.u.hello.sub_bytes, limit);
        comp = dsv_ring_size_clamp(m.u.hello.comp_bytes, limit);
        dsv_msg_release(&m);
        r = dsv_shm_create(sub, comp, &memfd, &c->shm);
        if (r < 0) {
                conn_drop(s, c, -r, "cannot create the shared memory: %s", strerror(-r));
                return;
        }
        /* we are not looking at the ring yet: the client must ring the doorbell */
        c->shm.sub.ctl->consumer_waiting = 1;
        r = send_welcome(s, c, memfd);
        close(memfd);
        if (r < 0) {
                log_warning("Cannot send WELCOME to pid %d: %s", (int)c->peer.pid, strerror(-r));
                conn_close(s, c);
                return;
        }
        c->state = DSV_CONN_ACTIVE;
        log_debug("Connection %llu: pid %d uid %u '%s', rings %u/%u bytes", (unsigned long long)c->serial, (int)c->peer.pid,
                  (unsigned)c->peer.uid, c->name, sub, comp);
}

/* ------------------------------------------------------------------ requests */

/* Sends a reply of the loop; keeps it pending when the completion ring is full. */
static void loop_reply(struct dsv_server *s, struct dsv_conn *c, const struct dsv_msg *m) {
        int r;
        c->pending.len = 0;
        c->pending.err = 0;
        r = dsv_msg_encode(m, &c->pending);
        if (r < 0) {
                log_error("Cannot encode a %s reply: %s", dsv_msg_type_name(m->type), strerror(-r));
                return;
        }
        r = dsv_conn_send_raw(c, m->type, c->pending.data, c->pending.len, false);
        if (r == -EAGAIN) {
                c->loop_blocked = true;
                c->pending_type = m->type;
        } else if (r == -EMSGSIZE) {
                uint64_t id = dsv_msg_peek_id(c->pending.data, c->pending.len);
                dsv_conn_send_error(c, id, E2BIG, false,
                                    "the reply (%zu bytes) is larger than a completion-ring record may be (%u bytes); "
                                    "connect with a larger completion ring",
                                    c->pending.len, c->shm.comp.max_record);
        }
}

static int loop_error(struct dsv_server *s, struct dsv_conn *c, uint64_t id, int code, const char *fmt, ...) _printf_(5, 6);
static int loop_error(struct dsv_server *s, struct dsv_conn *c, uint64_t id, int code, const char *fmt, ...) {
        struct dsv_msg m;
        char text[DSV_ERROR_MESSAGE_MAX];
        va_list ap;
        va_start(ap, fmt);
        dsv_msg_error_v(&m, text, id, code, fmt, ap);
        va_end(ap);
        loop_reply(s, c, &m);
        return 0;
}

/* Refuses a GENERATE before it reaches the engine: the ERROR, and its request log line. */
static int refuse(struct dsv_server *s, struct dsv_conn *c, const struct dsv_msg_generate *g, int code, const char *fmt, ...)
        _printf_(5, 6);
static int refuse(struct dsv_server *s, struct dsv_conn *c, const struct dsv_msg_generate *g, int code, const char *fmt, ...) {
        char text[DSV_ERROR_MESSAGE_MAX];
        struct dsv_reqlog l = {.uid = c->peer.uid, .pid = c->peer.pid, .client = c->name, .id = g->id,
                               .session = g->session, .error = code, .refused = true, .message = text};
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(text, sizeof(text), fmt, ap);
        va_end(ap);
        dsv_reqlog(&l);
        return loop_error(s, c, g->id, code, "%s", text);
}

/* A session name from a client: 1..session-name-max bytes of [A-Za-z0-9._:@+=-]. */
static bool session_name_ok(const struct dsv_server *s, const char *name) {
        size_t n = strlen(name);
        return n <= (size_t)s->cfg.session_name_max && dsv_session_name_valid(name, n);
}

/* The limits on a chat request's tools and tool calls (PROTOCOL.md, GENERATE key 20): 0, or
 * the error refused with (why written). */
static int check_tools(const struct dsv_msg_generate *g, char *why, size_t n) {
        for (uint32_t i = 0; i < g->n_tools; i++) {
                const struct dsv_tool *t = &g->tools[i];
                int nl = (int)MIN(t->name.len, 64u);
                if (t->name.len == 0 || t->name.len > DSV_MAX_TOOL_NAME)
                        return snprintf(why, n, "tools[%u]: the name must be 1..%d bytes (got %u)", i, DSV_MAX_TOOL_NAME,
                                        t->name.len),
                               EINVAL;
                for (uint32_t k = 0; k < t->name.len; k++) {
                        char ch = t->name.p[k];
                        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
                              ch == '-' || ch == '.'))
                                return snprintf(why, n, "tools[%u]: the name \"%.*s\" may only have letters, digits, _ - and .",
                                                i, nl, t->name.p),
                                       EINVAL;
                }
                for (uint32_t k = 0; k < i; k++)
                        if (g->tools[k].name.len == t->name.len && memcmp(g->tools[k].name.p, t->name.p, t->name.len) == 0)
                                return snprintf(why, n, "tools[%u]: \"%.*s\" is named twice", i, nl, t->name.p), EINVAL;
                if (t->description.len > DSV_MAX_TOOL_DESCRIPTION)
                        return snprintf(why, n, "tools[%u] (%.*s): the description is %u bytes; the limit is %d", i, nl,
                                        t->name.p, t->description.len, DSV_MAX_TOOL_DESCRIPTION),
                               E2BIG;
                if (t->parameters.len > DSV_MAX_TOOL_SCHEMA)
                        return snprintf(why, n, "tools[%u] (%.*s): the parameters schema is %u bytes; the limit is %d", i, nl,
                                        t->name.p, t->parameters.len, DSV_MAX_TOOL_SCHEMA),
                               E2BIG;
        }
        for (uint32_t i = 0; i < g->n_messages; i++) {
                const struct dsv_chat_msg *m = &g->messages[i];
                if (m->tool_call_id.len > DSV_MAX_TOOL_CALL_ID)
                        return snprintf(why, n, "message %u: tool_call_id is %u bytes; the limit is %d", i, m->tool_call_id.len,
                                        DSV_MAX_TOOL_CALL_ID),
                               E2BIG;
                for (uint32_t k = 0; k < m->n_tool_calls; k++) {
                        const struct dsv_tool_call *tc = &m->tool_calls[k];
                        if (!tc->name.p || tc->name.len == 0 || tc->name.len > DSV_MAX_TOOL_NAME)
                                return snprintf(why, n, "message %u: tool_calls[%u] needs a name of 1..%d bytes", i, k,
                                                DSV_MAX_TOOL_NAME),
                                       EINVAL;
                        if (tc->id.len == 0 || tc->id.len > DSV_MAX_TOOL_CALL_ID)
                                return snprintf(why, n, "message %u: tool_calls[%u] needs an id of 1..%d bytes", i, k,
                                                DSV_MAX_TOOL_CALL_ID),
                                       EINVAL;
                        if (!tc->arguments.p)
                                return snprintf(why, n, "message %u: tool_calls[%u] needs its arguments (a JSON object)", i, k),
                                       EINVAL;
                }
        }
        return 0;
}

/* Bytes of a chat request's strings (what max-prompt-bytes counts). */
static uint64_t chat_bytes(const struct dsv_msg_generate *g) {
        uint64_t b = 0;
        for (uint32_t i = 0; i < g->n_messages; i++) {
                const struct dsv_chat_msg *m = &g->messages[i];
                b += (uint64_t)m->content_len + m->role_len + m->reasoning.len + m->tool_call_id.len;
                for (uint32_t k = 0; k < m->n_tool_calls; k++)
                        b += (uint64_t)m->tool_calls[k].id.len + m->tool_calls[k].name.len + m->tool_calls[k].arguments.len;
        }
        for (uint32_t i = 0; i < g->n_tools; i++)
                b += (uint64_t)g->tools[i].name.len + g->tools[i].description.len + g->tools[i].parameters.len;
        return b;
}

/* A copy of a string into p (NUL-terminated; absent stays absent). */
static struct dsv_engine_str copy_str(char **p, const struct dsv_str *v) {
        struct dsv_engine_str r = {NULL, 0};
        if (!v->p)
                return r;
        r.p = *p;
        r.len = v->len;
        memcpy(*p, v->p, v->len);
        *p += v->len;
        *(*p)++ = 0;
        return r;
}

/* The messages (and their tool calls) in one allocation: the arrays, then the strings. */
static struct dsv_engine_msg *copy_messages(const struct dsv_msg_generate *g) {
        size_t calls = 0, bytes = chat_bytes(g), sz;
        struct dsv_engine_msg *out;
        struct dsv_engine_tool_call *tc;
        char *p;
        for (uint32_t i = 0; i < g->n_messages; i++)
                calls += g->messages[i].n_tool_calls;
        sz = (size_t)g->n_messages * sizeof(*out) + calls * sizeof(*tc) + bytes + 8ull * g->n_messages + 3 * calls;
        if (!(out = malloc(sz)))
                return NULL;
        tc = (struct dsv_engine_tool_call *)(out + g->n_messages);
        p = (char *)(tc + calls);
        for (uint32_t i = 0; i < g->n_messages; i++) {
                const struct dsv_chat_msg *m = &g->messages[i];
                struct dsv_str role = {m->role, m->role_len}, content = {m->content, m->content_len};
                struct dsv_engine_str x;
                memset(&out[i], 0, sizeof(out[i]));
                x = copy_str(&p, &role);
                out[i].role = x.p;
                out[i].role_len = x.len;
                x = copy_str(&p, &content);
                out[i].content = x.p;
                out[i].content_len = x.len;
                out[i].reasoning = copy_str(&p, &m->reasoning);
                out[i].tool_call_id = copy_str(&p, &m->tool_call_id);
                out[i].tool_calls = tc;
                out[i].n_tool_calls = m->n_tool_calls;
                for (uint32_t k = 0; k < m->n_tool_calls; k++, tc++) {
                        tc->id = copy_str(&p, &m->tool_calls[k].id);
                        tc->name = copy_str(&p, &m->tool_calls[k].name);
                        tc->arguments = copy_str(&p, &m->tool_calls[k].arguments);
                }
        }
        return out;
}

static struct dsv_engine_tool *copy_tools(const struct dsv_msg_generate *g) {
        size_t bytes = 0;
        struct dsv_engine_tool *out;
        char *p;
        for (uint32_t i = 0; i < g->n_tools; i++)
                bytes += (size_t)g->tools[i].name.len + g->tools[i].description.len + g->tools[i].parameters.len + 3;
        if (!(out = malloc((size_t)g->n_tools * sizeof(*out) + bytes)))
                return NULL;
        p = (char *)(out + g->n_tools);
        for (uint32_t i = 0; i < g->n_tools; i++) {
                out[i].name = copy_str(&p, &g->tools[i].name);
                out[i].description = copy_str(&p, &g->tools[i].description);
                out[i].parameters = copy_str(&p, &g->tools[i].parameters);
        }
        return out;
}

static int handle_generate(struct dsv_server *s, struct dsv_conn *c, const struct dsv_msg_generate *g) {
        enum dsv_engine_state st = dsv_engine_state(s->engine);
        const struct dsv_engine_info *inf = dsv_engine_info(s->engine);
        struct dsv_engine_request *in;
        uint64_t bytes = 0;
        int sources = (g->text != NULL) + (g->n_tokens > 0) + (g->n_messages > 0);
        char who[128];

        if (st == DSV_ENGINE_LOST)
                return refuse(s, c, g, EIO, "%s", dsv_engine_error(s->engine));
        if (s->draining)
                return refuse(s, c, g, ESHUTDOWN, "dsv32d is shutting down and takes no new requests");
        if (st == DSV_ENGINE_FAILED)
                return refuse(s, c, g, EIO, "the model failed to load: %s", dsv_engine_error(s->engine));
        if (sources != 1)
                return refuse(s, c, g, EINVAL, "GENERATE needs exactly one of text, tokens or messages (got %d)", sources);
        if ((g->n_tools || (g->flags & DSV_GEN_CHAT_EVENTS)) && !g->n_messages)
                return refuse(s, c, g, EINVAL, "tools and chat events (flag 0x40) are for chat requests (messages)");
        {
                char why[DSV_ERROR_MESSAGE_MAX - 64];
                int code = check_tools(g, why, sizeof(why));
                if (code)
                        return refuse(s, c, g, code, "%s", why);
        }
        bytes = g->text ? g->text_len : g->n_messages ? chat_bytes(g) : 4ull * g->n_tokens;
        if (bytes > (uint64_t)s->cfg.max_prompt_bytes)
                return refuse(s, c, g, E2BIG, "the prompt is %llu bytes; the limit is %d (max-prompt-bytes)",
                                  (unsigned long long)bytes, s->cfg.max_prompt_bytes);
        if (g->max_tokens == 0)
                return refuse(s, c, g, EINVAL, "max_tokens must be at least 1");
        if (g->max_tokens > (uint32_t)s->cfg.max_tokens_limit)
                return refuse(s, c, g, E2BIG, "max_tokens %u exceeds the limit %d (max-tokens-limit)", g->max_tokens,
                                  s->cfg.max_tokens_limit);
        if (!(g->temperature >= 0.0f && g->temperature <= 100.0f))
                return refuse(s, c, g, EINVAL, "temperature must be in [0, 100]");
        if (!(g->top_p > 0.0f && g->top_p <= 1.0f))
                return refuse(s, c, g, EINVAL, "top_p must be in (0, 1]");
        if (!(g->min_p >= 0.0f && g->min_p <= 1.0f))
                return refuse(s, c, g, EINVAL, "min_p must be in [0, 1]");
        /* 0 is off too: an encoder that zeroes the message means no penalty */
        if (!(g->repetition_penalty >= 0.0f && g->repetition_penalty <= 10.0f))
                return refuse(s, c, g, EINVAL, "repetition_penalty must be in [0, 10] (0 and 1 are off)");
        if (!(g->frequency_penalty >= -2.0f && g->frequency_penalty <= 2.0f))
                return refuse(s, c, g, EINVAL, "frequency_penalty must be in [-2, 2]");
        if (!(g->presence_penalty >= -2.0f && g->presence_penalty <= 2.0f))
                return refuse(s, c, g, EINVAL, "presence_penalty must be in [-2, 2]");
        for (uint32_t i = 0; i < g->n_logit_bias; i++)
                if (!(g->logit_bias[i].bias >= -100.0f && g->logit_bias[i].bias <= 100.0f))
                        return refuse(s, c, g, EINVAL, "logit_bias: the bias of token %d must be in [-100, 100]",
                                      g->logit_bias[i].id);
        if (g->top_k < 0)
                return refuse(s, c, g, EINVAL, "top_k must be >= 0");
        if (g->has_logprobs && g->logprobs > DSV_MAX_TOP_LOGPROBS)
                return refuse(s, c, g, EINVAL, "logprobs %u: at most %d top alternatives per token", g->logprobs,
                              DSV_MAX_TOP_LOGPROBS);
        if (g->priority < -DSV_PRIORITY_MAX || g->priority > DSV_PRIORITY_MAX)
                return refuse(s, c, g, EINVAL, "priority %d is outside -%d..%d", g->priority, DSV_PRIORITY_MAX,
                              DSV_PRIORITY_MAX);
        /* anyone may yield; going ahead of other users is root's or the daemon's own user's */
        if (g->priority > 0 && c->peer.uid != 0 && c->peer.uid != geteuid())
                return refuse(s, c, g, EPERM,
                              "priority %d: only root (or dsv32d's own user) may raise a request's priority above 0; "
                              "lower ones are for everyone",
                              g->priority);
        if (inf && !g->n_tokens && !dsv_engine_text(s->engine))
                return refuse(s, c, g, ENOTSUP, "%s", dsv_text_unavailable());
        if (g->session[0] && !session_name_ok(s, g->session))
                return refuse(s, c, g, EINVAL,
                                  "invalid session name: it must be 1..%d bytes of letters, digits and . _ : @ + = -",
                                  s->cfg.session_name_max);
        if (__atomic_load_n(&c->ue->requests, __ATOMIC_RELAXED) >= s->cfg.max_requests_per_uid) {
                dsv_uid_describe(c->peer.uid, who, sizeof(who));
                return refuse(s, c, g, EAGAIN, "%s has %d generations in flight, the limit (max-requests-per-uid)", who,
                                  s->cfg.max_requests_per_uid);
        }
        in = calloc(1, sizeof(*in));
        if (!in)
                return refuse(s, c, g, ENOMEM, "out of memory");
        if (g->n_tokens) {
                in->tokens = malloc((size_t)g->n_tokens * sizeof(int32_t));
                if (in->tokens)
                        memcpy(in->tokens, g->tokens, (size_t)g->n_tokens * sizeof(int32_t));
                in->n_tokens = g->n_tokens;
        } else if (g->text) {
                in->text = malloc((size_t)g->text_len + 1);
                if (in->text) {
                        memcpy(in->text, g->text, g->text_len);
                        in->text[g->text_len] = 0;
                }
                in->text_len = g->text_len;
        } else {
                in->messages = copy_messages(g);
                in->n_messages = g->n_messages;
                if (in->messages && g->n_tools) {
                        in->tools = copy_tools(g);
                        in->n_tools = g->n_tools;
                        if (!in->tools)
                                free(TAKE_PTR(in->messages));
                }
                in->chat_events = g->flags & DSV_GEN_CHAT_EVENTS;
        }
        if (g->schema && (in->tokens || in->text || in->messages)) {
                /* compiled by the engine's intake (a refusal is this request's ERROR) */
                if ((in->schema = malloc((size_t)g->schema_len + 1))) {
                        memcpy(in->schema, g->schema, g->schema_len);
                        in->schema[g->schema_len] = 0;
                        in->schema_len = g->schema_len;
                } else {
                        free(TAKE_PTR(in->tokens));
                        free(TAKE_PTR(in->text));
                        free(TAKE_PTR(in->messages));
                        free(TAKE_PTR(in->tools));
                }
        }
        if (!in->tokens && !in->text && !in->messages) {
                free(in);
                return refuse(s, c, g, ENOMEM, "out of memory");
        }
        in->id = g->id;
        in->kind = DSV_REQUEST_GENERATE;
        snprintf(in->session, sizeof(in->session), "%s", g->session);
        in->max_tokens = g->max_tokens;
        in->sampling.temperature = g->temperature;
        in->sampling.top_p = g->top_p;
        in->sampling.top_k = g->top_k;
        in->sampling.min_p = g->min_p;
        in->sampling.repetition_penalty = g->repetition_penalty;
        in->sampling.frequency_penalty = g->frequency_penalty;
        in->sampling.presence_penalty = g->presence_penalty;
        _Static_assert(DSV_MAX_LOGIT_BIAS == DSV_ENGINE_MAX_LOGIT_BIAS, "the wire's logit-bias cap is the engine's");
        for (uint32_t i = 0; i < g->n_logit_bias; i++)
                in->logit_bias[i] = (struct dsv_logit_bias){.id = g->logit_bias[i].id, .bias = g->logit_bias[i].bias};
        in->sampling.bias = in->logit_bias;
        in->sampling.n_bias = g->n_logit_bias;
        in->sampling.seed = g->seed;
        if (!(g->flags & DSV_GEN_SEED) &&
            getrandom(&in->sampling.seed, sizeof(in->sampling.seed), GRND_NONBLOCK) != sizeof(in->sampling.seed))
                in->sampling.seed = dsv_now_ns() ^ ((uint64_t)c->serial << 32);
        in->stream = !(g->flags & DSV_GEN_NO_STREAM);
        in->add_bos = !(g->flags & DSV_GEN_NO_BOS);
        in->thinking = g->flags & DSV_GEN_THINKING;
        in->ignore_eos = g->flags & DSV_GEN_IGNORE_EOS;
        in->reuse_output = g->flags & DSV_GEN_SESSION_REUSE_OUTPUT;
        in->priority = g->priority;
        _Static_assert(DSV_MAX_TOP_LOGPROBS == DSV_LOGPROBS_MAX, "the wire's top-logprobs cap is the sampler's");
        in->logprobs = g->has_logprobs;
        in->top_logprobs = g->has_logprobs ? g->logprobs : 0;
        in->n_stop_tokens = g->n_stop_tokens;
        if (g->n_stop_tokens)
                memcpy(in->stop_tokens, g->stop_tokens, (size_t)g->n_stop_tokens * sizeof(int32_t));
        /* the decoder capped the count and each length (ipc/proto.c) */
        _Static_assert(DSV_MAX_STOP_STRINGS == DSV_ENGINE_MAX_STOP_STRINGS &&
                               DSV_MAX_STOP_STRING_BYTES == DSV_ENGINE_STOP_STRING_MAX,
                       "the wire's stop-string caps are the engine's");
        in->n_stop_strings = g->n_stop_strings;
        for (uint32_t i = 0; i < g->n_stop_strings; i++) {
                memcpy(in->stop_strings[i], g->stop_strings[i].p, g->stop_strings[i].len);
                in->stop_string_len[i] = g->stop_strings[i].len;
        }
        in->t_submit_ns = dsv_now_ns();
        in->client = dsv_conn_ref(c);
        in->uid = c->peer.uid;
        __atomic_add_fetch(&c->ue->requests, 1, __ATOMIC_RELAXED);
        dsv_engine_submit(s->engine, in);
        return 0;
}

static int handle_session(struct dsv_server *s, struct dsv_conn *c, uint16_t type, const struct dsv_msg_session *m) {
        static const uint32_t allowed[] = {
                [DSV_REQUEST_SESSION_OPEN] = DSV_SESSION_OPEN_EXCL | DSV_SESSION_OPEN_PRIVATE,
                [DSV_REQUEST_SESSION_CLOSE] = 0,
                [DSV_REQUEST_SESSION_PIN] = DSV_SESSION_PIN_SET,
                [DSV_REQUEST_SESSION_LIST] = 0,
                [DSV_REQUEST_SESSIONS_SAVE] = 0,
        };
        enum dsv_request_kind kind = type == DSV_MSG_SESSION_OPEN    ? DSV_REQUEST_SESSION_OPEN
                                     : type == DSV_MSG_SESSION_CLOSE ? DSV_REQUEST_SESSION_CLOSE
                                     : type == DSV_MSG_SESSION_PIN   ? DSV_REQUEST_SESSION_PIN
                                     : type == DSV_MSG_SESSION_LIST  ? DSV_REQUEST_SESSION_LIST
                                                                     : DSV_REQUEST_SESSIONS_SAVE;
        struct dsv_engine_request *in;
        char who[128];

        if (dsv_engine_state(s->engine) == DSV_ENGINE_FAILED)
                return loop_error(s, c, m->id, EIO, "the model failed to load: %s", dsv_engine_error(s->engine));
        if (dsv_engine_state(s->engine) == DSV_ENGINE_LOST)
                return loop_error(s, c, m->id, EIO, "%s", dsv_engine_error(s->engine));
        if (kind != DSV_REQUEST_SESSION_LIST && kind != DSV_REQUEST_SESSIONS_SAVE && !session_name_ok(s, m->name))
                return loop_error(s, c, m->id, EINVAL,
                                  "invalid session name: it must be 1..%d bytes of letters, digits and . _ : @ + = -",
                                  s->cfg.session_name_max);
        if (m->flags & ~allowed[kind])
                return loop_error(s, c, m->id, EINVAL, "%s: unknown flags 0x%x", dsv_msg_type_name(type),
                                  m->flags & ~allowed[kind]);
        if (kind == DSV_REQUEST_SESSION_OPEN && s->cfg.max_sessions == 0)
                return loop_error(s, c, m->id, ENOTSUP, "sessions are disabled on this dsv32d (max-sessions = 0)");
        /* they queue behind the client's generations in the engine: the same limit bounds them */
        if (__atomic_load_n(&c->ue->requests, __ATOMIC_RELAXED) >= s->cfg.max_requests_per_uid) {
                dsv_uid_describe(c->peer.uid, who, sizeof(who));
                return loop_error(s, c, m->id, EAGAIN, "%s has %d requests in flight, the limit (max-requests-per-uid)", who,
                                  s->cfg.max_requests_per_uid);
        }
        in = calloc(1, sizeof(*in));
        if (!in)
                return loop_error(s, c, m->id, ENOMEM, "out of memory");
        in->id = m->id;
        in->kind = kind;
        snprintf(in->session, sizeof(in->session), "%s", m->name);
        /* the engine's names of the same flags */
        if (kind == DSV_REQUEST_SESSION_OPEN)
                in->session_flags = ((m->flags & DSV_SESSION_OPEN_EXCL) ? DSV_ENGINE_SESSION_EXCL : 0) |
                                    ((m->flags & DSV_SESSION_OPEN_PRIVATE) ? DSV_ENGINE_SESSION_OPEN_PRIVATE : 0);
        else if (kind == DSV_REQUEST_SESSION_PIN)
                in->session_flags = (m->flags & DSV_SESSION_PIN_SET) ? DSV_ENGINE_SESSION_PIN : 0;
        in->t_submit_ns = dsv_now_ns();
        in->client = dsv_conn_ref(c);
        in->uid = c->peer.uid;
        __atomic_add_fetch(&c->ue->requests, 1, __ATOMIC_RELAXED);
        dsv_engine_submit(s->engine, in);
        return 0;
}

static uint64_t rss_bytes(void) {
        _cleanup_fclose_ FILE *f = fopen("/proc/self/statm", "re");
        unsigned long size, res;
        if (!f || fscanf(f, "%lu %lu", &size, &res) != 2)
                return 0;
        return (uint64_t)res * (uint64_t)sysconf(_SC_PAGESIZE);
}

/* The engine's part of a STATS reply. */
static void engine_stats(struct dsv_server *s, struct dsv_msg_stats_reply *st) {
        const struct dsv_engine_info *inf = dsv_engine_info(s->engine);
        struct dsv_engine_metrics mt;

        dsv_engine_metrics(s->engine, &mt);
        st->state = wire_state(s);
        st->load_permille = dsv_engine_load_permille(s->engine);
        if (inf) {
                snprintf(st->model, sizeof(st->model), "%s", inf->model);
                st->vocab_size = inf->vocab_size;
                st->n_layers = inf->n_layers;
                st->max_context = inf->max_context;
                st->weight_bytes = inf->weight_bytes;
                st->features = features_of(inf);
                st->kv_pages_total = inf->kv_pages_total;
                st->kv_page_tokens = inf->kv_page_tokens;
                st->kv_bytes_per_token = inf->kv_bytes_per_token;
                if (inf->ranks > 1) {
                        st->ranks = (uint32_t)inf->ranks;
                        snprintf(st->layout, sizeof(st->layout), "%s", inf->layout);
                        st->rank_weight_min = inf->rank_weight_min;
                        st->rank_weight_max = inf->rank_weight_max;
                }
                _Static_assert(DSV_MAX_RANK_PAGES >= 3 * DSV_METRICS_RANKS_MAX, "key 64 holds every rank's pool");
                for (uint32_t k = 0; k < mt.ranks.n_rank_pools; k++) {
                        s->rank_pages[3 * k] = (int32_t)mt.ranks.used[k];
                        s->rank_pages[3 * k + 1] = (int32_t)mt.ranks.free[k];
                        s->rank_pages[3 * k + 2] = (int32_t)mt.ranks.cached[k];
                }
                st->rank_pages = s->rank_pages;
                st->n_rank_pages = 3 * mt.ranks.n_rank_pools;
                if (inf->device[0]) {
                        uint64_t fr = 0, tot = 0;
                        snprintf(st->device, sizeof(st->device), "%s", inf->device);
                        st->device_weight_bytes = inf->device_weight_bytes;
                        st->device_kv_bytes = inf->device_kv_bytes;
                        if (dsv_engine_device_memory(s->engine, &fr, &tot) == 0) {
                                st->device_memory_total = tot;
                                st->device_memory_free = fr;
                        }
                }
        }
        /* the backend is known once the engine is ready */
        snprintf(st->backend, sizeof(st->backend), "%s", inf ? inf->backend : s->cfg.backend);
        snprintf(st->numerics, sizeof(st->numerics), "%s", s->cfg.numerics);
        st->threads = (uint32_t)(inf ? inf->threads : s->cfg.threads);
        st->kv_pages_used = mt.kv_pages_used;
        st->requests_running = (uint32_t)mt.requests_running;
        st->requests_prefilling = (uint32_t)mt.requests_prefilling;
        st->prefilled_tokens_total = mt.prefilled_tokens_total;
        st->preemptions_total = mt.preemptions_total;
        st->prefix_cache_tokens_total = mt.prefix_cache_tokens_total;
        st->spec_drafted_total = mt.spec_drafted_total;
        st->spec_accepted_total = mt.spec_accepted_total;
        st->kv_pages_cached = mt.kv_pages_cached;
        st->requests_done_total = mt.requests_done_total;
        st->queue_us_total = mt.queue_us_total;
        st->ttft_us_total = mt.ttft_us_total;
        st->decode_us_total = mt.decode_us_total;
        st->decode_tokens_total = mt.decode_tokens_total;
        st->requests_waiting = (uint32_t)mt.requests_waiting;
        st->requests_parked = (uint32_t)mt.requests_parked;
        st->requests_total = mt.requests_total;
        st->prompt_tokens_total = mt.prompt_tokens_total;
        st->generated_tokens_total = mt.generated_tokens_total;
        st->steps_total = mt.steps_total;
        st->prefill_tok_s = (float)mt.prefill_tok_s;
        st->decode_tok_s = (float)mt.decode_tok_s;
        st->sessions = (uint32_t)mt.sessions;
        st->sessions_pinned = (uint32_t)mt.sessions_pinned;
        st->session_pages = mt.session_pages;
        st->cached_tokens_total = mt.cached_tokens_total;
        st->sessions_evicted = mt.sessions_evicted;
        st->session_moves_total = mt.session_moves_total;
}

static void handle_stats(struct dsv_server *s, struct dsv_conn *c, uint64_t id) {
        struct dsv_msg m = {.type = DSV_MSG_STATS_REPLY};
        struct dsv_msg_stats_reply *st = &m.u.stats;
        engine_stats(s, st);
        st->id = id;
        st->pid = (uint32_t)getpid();
        st->uptime_ms = (dsv_now_ns() - s->t_start) / 1000000;
        snprintf(st->daemon_version, sizeof(st->daemon_version), "%s", PACKAGE_VERSION);
        st->rss_bytes = rss_bytes();
        st->clients = (uint32_t)s->n_conns;
        st->loop_wakeups = s->loop_wakeups;
        st->loop_sleeps = s->loop_sleeps;
        st->doorbells_received = s->doorbells_received;
        for (struct dsv_conn *x = s->conns; x; x = x->next)
                st->doorbells_sent += __atomic_load_n(&x->doorbells_sent, __ATOMIC_RELAXED);
        st->spin_us = (uint32_t)s->cfg.spin_us;
        dsv_rates_get(&s->rates, dsv_now_ns(), st->generated_tokens_total, st->prefilled_tokens_total, &st->decode_tok_s,
                      &st->prefill_tok_s, &st->rate_window_ms);
        loop_reply(s, c, &m);
}

static int handle_tokenize(struct dsv_server *s, struct dsv_conn *c, const struct dsv_msg *in) {
        const struct dsv_text *t = dsv_engine_text(s->engine);
        struct dsv_msg m = {0};
        uint64_t id = in->type == DSV_MSG_TOKENIZE ? in->u.tokenize.id : in->u.tokens.id;
        int r;

        if (!t)
                return loop_error(s, c, id,
                                  dsv_engine_state(s->engine) == DSV_ENGINE_LOADING ? EAGAIN : ENOTSUP, "%s",
                                  dsv_engine_state(s->engine) == DSV_ENGINE_LOADING ? "the model is still loading"
                                                                                    : dsv_text_unavailable());
        if (in->type == DSV_MSG_TOKENIZE) {
                _cleanup_free_ int32_t *ids = NULL;
                size_t n = 0;
                if (in->u.tokenize.text_len > (uint32_t)s->cfg.max_prompt_bytes)
                        return loop_error(s, c, id, E2BIG, "the text is %u bytes; the limit is %d (max-prompt-bytes)",
                                          in->u.tokenize.text_len, s->cfg.max_prompt_bytes);
                r = dsv_text_encode(t, in->u.tokenize.text, in->u.tokenize.text_len, in->u.tokenize.flags & DSV_TOK_ADD_BOS,
                                    &ids, &n);
                if (r < 0)
                        return loop_error(s, c, id, -r, "cannot tokenize: %s", strerror(-r));
                m.type = DSV_MSG_TOKENIZE_REPLY;
                m.u.tokens.id = id;
                m.u.tokens.tokens = ids;
                m.u.tokens.n_tokens = (uint32_t)n;
                loop_reply(s, c, &m);
        } else {
                _cleanup_free_ char *text = NULL;
                const struct dsv_engine_info *inf = dsv_engine_info(s->engine);
                size_t n = 0;
                for (uint32_t i = 0; inf && i < in->u.tokens.n_tokens; i++)
                        if (in->u.tokens.tokens[i] >= inf->vocab_size)
                                return loop_error(s, c, id, EINVAL,
                                                  "token id %d (position %u) is outside the vocabulary: this model has "
                                                  "%d tokens, ids 0..%d",
                                                  in->u.tokens.tokens[i], i, inf->vocab_size, inf->vocab_size - 1);
                r = dsv_text_decode(t, in->u.tokens.tokens, in->u.tokens.n_tokens, &text, &n);
                if (r < 0)
                        return loop_error(s, c, id, -r, "cannot detokenize: %s", strerror(-r));
                m.type = DSV_MSG_DETOKENIZE_REPLY;
                m.u.detok.id = id;
                m.u.detok.text = text;
                m.u.detok.text_len = (uint32_t)n;
                loop_reply(s, c, &m);
        }
        return 0;
}

static int handle_record(struct dsv_server *s, struct dsv_conn *c, const struct dsv_ipc_record *h, const uint8_t *p) {
        struct dsv_msg m;
        char why[256];
        int r;

        c->records_in++;
        if (h->flags & DSV_IPC_RECORD_FLAGS_CRITICAL)
                return loop_error(s, c, dsv_msg_peek_id(p, h->length), EOPNOTSUPP,
                                  "record flags 0x%04x are not understood by this dsv32d", h->flags);
        r = dsv_msg_decode(h->type, p, h->length, &m, why, sizeof(why));
        if (r == -ENOSYS || r == -EOPNOTSUPP)
                return loop_error(s, c, dsv_msg_peek_id(p, h->length), -r, "%s", why);
        if (r == -ENOMEM)
                return loop_error(s, c, dsv_msg_peek_id(p, h->length), ENOMEM, "out of memory");
        if (r < 0)
                return conn_drop(s, c, -r, "malformed %s record: %s", dsv_msg_type_name(h->type), why);
        switch (h->type) {
        case DSV_MSG_PING: {
                struct dsv_msg pong = {.type = DSV_MSG_PONG};
                pong.u.ping.id = m.u.ping.id;
                pong.u.ping.t_ns = m.u.ping.t_ns;
                pong.u.ping.t_daemon_ns = dsv_now_ns();
                loop_reply(s, c, &pong);
                break;
        }
        case DSV_MSG_GENERATE:
                handle_generate(s, c, &m.u.generate);
                break;
        case DSV_MSG_CANCEL:
                dsv_engine_cancel(s->engine, c, m.u.id.id);
                break;
        case DSV_MSG_TOKENIZE:
        case DSV_MSG_DETOKENIZE:
                handle_tokenize(s, c, &m);
                break;
        case DSV_MSG_STATS:
                handle_stats(s, c, m.u.id.id);
                break;
        case DSV_MSG_SESSION_OPEN:
        case DSV_MSG_SESSION_CLOSE:
        case DSV_MSG_SESSION_PIN:
                handle_session(s, c, h->type, &m.u.session);
                break;
        case DSV_MSG_SESSION_LIST:
        case DSV_MSG_SESSION_SAVE: {
                struct dsv_msg_session q = {.id = m.u.id.id};
                handle_session(s, c, h->type, &q);
                break;
        }
        default:
                dsv_msg_release(&m);
                return conn_drop(s, c, EPROTO, "%s is not a request a client may send", dsv_msg_type_name(h->type));
        }
        dsv_msg_release(&m);
        return 0;
}

/* Consumes up to RECORDS_PER_PASS records of one client; true when it did something. */
static bool conn_process(struct dsv_server *s, struct dsv_conn *c) {
        struct dsv_ipc_record h;
        bool did = false;

        if (c->state != DSV_CONN_ACTIVE)
                return false;
        if (c->loop_blocked) {
                int r = dsv_conn_send_raw(c, c->pending_type, c->pending.data, c->pending.len, false);
                if (r == -EAGAIN)
                        return false;
                c->loop_blocked = false;
                did = true;
        }
        dsv_conn_ref(c); /* a drop below must not free it under our feet */
        for (int i = 0; i < RECORDS_PER_PASS && c->state == DSV_CONN_ACTIVE && !c->loop_blocked; i++) {
                int r = dsv_ring_read(&c->shm.sub, &h, s->rxbuf, s->rxcap);
                if (r == 0)
                        break;
                if (r < 0) {
                        conn_drop(s, c, -r,
                                  r == -EPROTO ? "the submission ring's tail moved backwards or past the capacity"
                                               : "a record's length is larger than the ring allows or than was published");
                        dsv_conn_unref(c);
                        return true;
                }
                did = true;
                handle_record(s, c, &h, s->rxbuf);
        }
        if (c->state == DSV_CONN_ACTIVE && dsv_ring_producer_needs_wake(&c->shm.sub)) {
                pthread_mutex_lock(&c->lock);
                if (c->fd >= 0)
                        dsv_ipc_doorbell(c->fd);
                pthread_mutex_unlock(&c->lock);
        }
        dsv_conn_unref(c);
        return did;
}

static void conn_event(struct dsv_server *s, struct dsv_conn *c, uint32_t events) {
        if (c->state == DSV_CONN_HANDSHAKE) {
                uint8_t buf[HANDSHAKE_MAX];
                ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT | MSG_TRUNC);
                if (n < 0) {
                        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                                conn_close(s, c);
                        return;
                }
                if (n == 0) {
                        conn_close(s, c);
                        return;
                }
                if ((size_t)n > sizeof(buf)) {
                        conn_drop(s, c, EMSGSIZE, "the HELLO datagram has %zd bytes; the limit is %d", n, HANDSHAKE_MAX);
                        return;
                }
                handle_hello(s, c, buf, (size_t)n);
                return;
        }
        /* doorbells; end of stream is the client's death */
        for (int i = 0; i < 1024; i++) {
                uint8_t b[16];
                ssize_t n = recv(c->fd, b, sizeof(b), MSG_DONTWAIT);
                if (n < 0) {
                        if (errno == EAGAIN || errno == EWOULDBLOCK)
                                break;
                        if (errno == EINTR)
                                continue;
                        conn_close(s, c);
                        return;
                }
                if (n == 0) {
                        conn_close(s, c);
                        return;
                }
                s->doorbells_received++;
        }
        if (events & (EPOLLHUP | EPOLLERR)) {
                conn_close(s, c);
                return;
        }
        pthread_mutex_lock(&c->lock);
        if (c->engine_parked) {
                c->engine_parked = false;
                pthread_mutex_unlock(&c->lock);
                dsv_engine_kick(s->engine);
        } else {
                pthread_mutex_unlock(&c->lock);
        }
        dsv_conn_ref(c);
        conn_process(s, c);
        if (c->state == DSV_CONN_ACTIVE)
                active_add(s, c);
        dsv_conn_unref(c);
}

/* ------------------------------------------------------------------ signals, timers */

static void tunables_of(const struct dsv_server_config *cfg, struct dsv_engine_tunables *t) {
        memset(t, 0, sizeof(*t));
        t->batch_tokens = cfg->batch_tokens;
        t->max_running = cfg->max_running;
        t->max_sessions = cfg->max_sessions;
        t->session_pin_quota = cfg->session_pin_quota;
        t->session_idle_timeout_s = cfg->session_idle_timeout_s;
        t->max_sessions_per_uid = cfg->max_sessions_per_uid;
        t->prefix_cache = strcmp(cfg->prefix_cache, "yes") == 0;
        t->prefix_cache_share = strcmp(cfg->prefix_cache_share, "yes") == 0;
        t->snapshot_interval_s = cfg->snapshot_interval_s;
        t->mtp_draft = cfg->mtp_draft;
}

static void reload(struct dsv_server *s) {
        struct dsv_server_config next;
        struct dsv_access acc;
        char err[512], warn[1024];
        int r;

        sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu", (unsigned long long)(dsv_now_ns() / 1000));
        log_info("Reloading the configuration");
        if (dsv_config_init(&next) < 0)
                goto done;
        if (s->args.config_path) {
                r = dsv_config_load_file(&next, s->args.config_path, err, sizeof(err));
                if (r < 0 && !(r == -ENOENT && !s->args.config_explicit)) {
                        log_error("Reload failed, keeping the current settings: %s", err);
                        dsv_config_free(&next);
                        goto done;
                }
        }
        for (size_t i = 0; i + 1 < 2 * s->args.n_overrides; i += 2)
                dsv_config_set(&next, s->args.overrides[i], s->args.overrides[i + 1], err, sizeof(err));
        dsv_config_apply_reload(&s->cfg, &next);
        dsv_config_free(&next);
        r = dsv_access_parse(s->cfg.allow_users, s->cfg.allow_groups, &acc, warn, sizeof(warn));
        if (r < 0) {
                log_error("Reload: cannot parse the access lists: %s", strerror(-r));
        } else {
                if (warn[0])
                        log_warning("Access lists: %s", warn);
                dsv_access_free(&s->access);
                s->access = acc;
        }
        r = dsv_log_level_from_name(s->cfg.log_level);
        if (r >= 0)
                dsv_log_max_level = r;
        {
                struct dsv_engine_tunables t;
                tunables_of(&s->cfg, &t);
                dsv_engine_set_tunables(s->engine, &t);
        }
done:
        sd_notify(0, "READY=1");
        notify_status(s, true);
}

static void begin_drain(struct dsv_server *s, const char *why) {
        if (s->draining) {
                log_notice("%s again: cancelling what still runs", why);
                dsv_engine_drain(s->engine, dsv_now_ns());
                return;
        }
        s->draining = true;
        log_info("%s: finishing in-flight requests (up to %d s, stop-timeout), then exiting", why, s->cfg.stop_timeout_s);
        sd_notify(0, "STOPPING=1");
        stop_listening(s);
        dsv_engine_drain(s->engine, dsv_now_ns() + (uint64_t)s->cfg.stop_timeout_s * 1000000000ull);
}

static void on_signal(struct dsv_server *s) {
        struct signalfd_siginfo si;
        while (read(s->sigfd, &si, sizeof(si)) == sizeof(si)) {
                switch (si.ssi_signo) {
                case SIGTERM:
                case SIGINT:
                        begin_drain(s, si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
                        break;
                case SIGHUP:
                        reload(s);
                        break;
                }
        }
}

/* The device failed while serving (the engine's state LOST): the engine has ended every
 * request with an ERROR naming the fault; take no more, tell systemd, and exit non-zero once
 * those ERRORs are out (check_drained), or after stop-timeout for clients that do not read
 * them. A restart gets a fresh device context. Nothing is saved from the poisoned device. */
static void on_device_lost(struct dsv_server *s) {
        if (s->lost)
                return;
        s->lost = true;
        s->exit_code = 1;
        s->lost_deadline_ns = dsv_now_ns() + (uint64_t)s->cfg.stop_timeout_s * 1000000000ull;
        log_error("Exiting: %s; the sessions in memory are lost (the state directory keeps its last snapshots)",
                  dsv_engine_error(s->engine));
        sd_notifyf(0, "STOPPING=1\nSTATUS=Failed: %s\nERRNO=%d", dsv_engine_error(s->engine), EIO);
        if (!s->draining) {
                s->draining = true;
                stop_listening(s);
        }
}

static void check_drained(struct dsv_server *s) {
        if (s->lost && !s->quit && dsv_now_ns() >= s->lost_deadline_ns) {
                log_error("Exiting after %d s (stop-timeout) with ERRORs still undelivered to clients that do not read",
                          s->cfg.stop_timeout_s);
                s->quit = true;
                return;
        }
        if (s->lost && !s->quit && dsv_engine_idle(s->engine)) {
                log_info("Every client has its ERROR; exiting");
                s->quit = true;
                return;
        }
        if (s->draining && dsv_engine_idle(s->engine)) {
                uint64_t cut = dsv_engine_drain_cut(s->engine);
                if (cut)
                        log_notice("The stop timeout (%d s, stop-timeout) ended %llu request%s before they finished "
                                   "(their clients got reason shutdown); exiting",
                                   s->cfg.stop_timeout_s, (unsigned long long)cut, cut == 1 ? "" : "s");
                else
                        log_info("All requests finished; exiting");
                s->quit = true;
        }
}

static void on_engine(struct dsv_server *s) {
        uint64_t v;
        enum dsv_engine_state st;
        if (read(s->engine_efd, &v, sizeof(v)) < 0 && errno != EAGAIN) {
                /* nothing to do */
        }
        st = dsv_engine_state(s->engine);
        if (st == DSV_ENGINE_READY && !s->ready_notified) {
                s->ready_notified = true;
                sd_notify(0, "READY=1");
                notify_status(s, true);
                log_info("Ready: serving on %s", s->listen_owned ? s->cfg.socket : "the socket from systemd");
        } else if (st == DSV_ENGINE_LOST) {
                on_device_lost(s);
        } else if (st == DSV_ENGINE_FAILED && !s->quit) {
                sd_notifyf(0, "STATUS=Failed: %s\nERRNO=5", dsv_engine_error(s->engine));
                log_error("Exiting: the model could not be loaded");
                s->exit_code = 1;
                s->quit = true;
        }
        check_drained(s);
}

/* A node of the group is lost (the bootstrap's heartbeats; its abort has failed the pass in
 * flight, whose requests got their ERROR): exit non-zero as when the device is lost, so that
 * systemd restarts the group. */
static void check_nodes(struct dsv_server *s) {
        char why[1100];
        int st;
        if (!s->nodes || s->lost || (st = dsv_nodes_status(s->nodes, why, sizeof(why))) == 0)
                return;
        s->lost = true;
        s->exit_code = 1;
        s->lost_deadline_ns = dsv_now_ns() + (uint64_t)s->cfg.stop_timeout_s * 1000000000ull;
        log_error("Exiting: the group of nodes is broken: %s (%s)", why, strerror(-st));
        sd_notifyf(0, "STOPPING=1\nSTATUS=Failed: the group of nodes is broken: %s\nERRNO=%d", why, -st);
        if (!s->draining) {
                s->draining = true;
                stop_listening(s);
        }
}

static void on_timer(struct dsv_server *s) {
        uint64_t v, now = dsv_now_ns();
        if (read(s->timerfd, &v, sizeof(v)) < 0 && errno != EAGAIN) {
                /* nothing to do */
        }
        check_nodes(s);
        {
                struct dsv_msg_stats_reply st = {0};
                engine_stats(s, &st);
                dsv_rates_sample(&s->rates, now, st.generated_tokens_total, st.prefilled_tokens_total);
        }
        for (struct dsv_conn *c = s->conns, *next; c; c = next) {
                next = c->next;
                if (c->state == DSV_CONN_HANDSHAKE &&
                    now - c->t_accept_ns > (uint64_t)s->cfg.handshake_timeout_ms * 1000000ull)
                        conn_drop(s, c, ETIMEDOUT, "no HELLO within %d ms (handshake-timeout-ms)", s->cfg.handshake_timeout_ms);
                else if (c->state == DSV_CONN_ACTIVE && c->loop_blocked)
                        conn_process(s, c);
        }
        if (dsv_engine_state(s->engine) == DSV_ENGINE_LOADING) {
                if (now - s->last_extend >= 1000000000ull) {
                        s->last_extend = now;
                        sd_notify(0, "EXTEND_TIMEOUT_USEC=10000000");
                        notify_status(s, true);
                }
        } else if (s->ready_notified) {
                /* not before on_engine has said READY=1: the engine thread may have become
                 * ready after this loop's last wake-up, and a "STATUS=Ready" ahead of READY=1
                 * tells systemd (and test-daemon-signals) the wrong order */
                notify_status(s, false);
        }
        if (s->watchdog_usec && now - s->last_watchdog >= s->watchdog_usec * 500ull) {
                /* alive means: this loop runs and the engine thread showed life recently
                 * (it beats at least every half second when idle, and after every step) */
                uint64_t age = now - dsv_engine_heartbeat_ns(s->engine);
                if (age < MAX(s->watchdog_usec * 1000ull, 60000000000ull)) {
                        sd_notify(0, "WATCHDOG=1");
                        s->last_watchdog = now;
                } else {
                        log_error("The engine thread has shown no life for %.1f s; not petting the watchdog", age / 1e9);
                }
        }
        check_drained(s);
}

/* ------------------------------------------------------------------ the loop */

static int dispatch(struct dsv_server *s, int timeout_ms) {
        struct epoll_event ev[64];
        int n = epoll_wait(s->epfd, ev, (int)ARRAY_SIZE(ev), timeout_ms);
        if (n < 0)
                return errno == EINTR ? 0 : dsv_negerrno();
        for (int i = 0; i < n; i++) {
                switch (ev[i].data.u64) {
                case TAG_LISTEN:
                        do_accept(s);
                        break;
                case TAG_SIGNAL:
                        on_signal(s);
                        break;
                case TAG_TIMER:
                        on_timer(s);
                        break;
                case TAG_ENGINE:
                        on_engine(s);
                        break;
                default: {
                        struct dsv_conn *c = (struct dsv_conn *)(uintptr_t)ev[i].data.u64;
                        /* a connection closed earlier in this batch is no longer in the epoll
                         * set but its event may still be here: it is on no list then */
                        bool live = false;
                        for (struct dsv_conn *x = s->conns; x; x = x->next)
                                if (x == c) {
                                        live = true;
                                        break;
                                }
                        if (live)
                                conn_event(s, c, ev[i].events);
                }
                }
        }
        return n;
}

int dsv_server_run(struct dsv_server *s) {
        sd_notifyf(0, "STATUS=Loading %s", s->cfg.model);
        while (!s->quit) {
                uint64_t spin_ns;
                bool again = false, won = false;
                int r;

                /* spin over the rings of recently active clients: a peer that answers within
                 * the window never pays a wakeup, and neither do we. The window adapts
                 * (ipc/ring.h, struct dsv_spin): back to spin-us whenever a record arrives
                 * during it, halved after runs of windows that caught nothing, so that an
                 * idle-ish client or an oversubscribed machine does not pay for our spinning. */
                if (s->spin.max_ns != (uint64_t)s->cfg.spin_us * 1000ull)
                        dsv_spin_init(&s->spin, 0, (uint64_t)s->cfg.spin_us * 1000ull);
                spin_ns = s->n_active ? dsv_spin_budget(&s->spin) : 0;
                if (s->n_active && spin_ns) {
                        uint64_t deadline = dsv_now_ns() + spin_ns;
                        for (unsigned iter = 1; !s->quit && s->n_active; iter++) {
                                bool got = false;
                                for (size_t i = 0; i < s->n_active; i++) {
                                        struct dsv_conn *c = s->active[i];
                                        if (!c->loop_blocked && !dsv_ring_empty(&c->shm.sub))
                                                got |= conn_process(s, c);
                                }
                                if ((iter & 63) == 0 && dispatch(s, 0) > 0)
                                        got = true;
                                if ((iter & 1023) == 0)
                                        sched_yield(); /* share a busy core with the peer */
                                if (got) {
                                        won = true;
                                        deadline = dsv_now_ns() + spin_ns;
                                } else if (dsv_now_ns() >= deadline) {
                                        break;
                                }
                                dsv_cpu_relax();
                        }
                        dsv_spin_update(&s->spin, won);
                }
                /* before sleeping: tell each active client to ring, then look once more */
                for (size_t i = 0; i < s->n_active;) {
                        struct dsv_conn *c = s->active[i];
                        if (dsv_ring_consumer_sleep_begin(&c->shm.sub) && !c->loop_blocked) {
                                dsv_ring_consumer_sleep_end(&c->shm.sub);
                                again = true;
                                conn_process(s, c);
                                i++;
                                continue;
                        }
                        active_remove(s, c); /* swaps the last one into i */
                }
                if (again || s->quit)
                        continue;
                s->loop_sleeps++;
                r = dispatch(s, -1);
                if (r < 0)
                        return log_errno(DSV_LOG_ERR, r, "epoll_wait failed: %s", strerror(-r)), 1;
                if (r > 0)
                        s->loop_wakeups++;
        }
        return s->exit_code;
}

/* ------------------------------------------------------------------ setup */

int dsv_server_new(struct dsv_server_config *cfg, const struct dsv_server_args *args, struct dsv_server **ret) {
        struct dsv_server *s = calloc(1, sizeof(*s));
        struct dsv_engine_opts eo = {0};
        struct dsv_engine_tunables tun;
        struct itimerspec its = {.it_interval = {.tv_nsec = TICK_MS * 1000000L}, .it_value = {.tv_nsec = TICK_MS * 1000000L}};
        sigset_t mask;
        char warn[1024];
        int r;

        if (!s)
                return -ENOMEM;
        s->cfg = *cfg;
        memset(cfg, 0, sizeof(*cfg));
        s->args = *args;
        s->epfd = s->sigfd = s->timerfd = s->engine_efd = s->listen_fd = -1;
        s->t_start = dsv_now_ns();
        r = dsv_log_level_from_name(s->cfg.log_level);
        if (r >= 0)
                dsv_log_max_level = r;
        r = dsv_access_parse(s->cfg.allow_users, s->cfg.allow_groups, &s->access, warn, sizeof(warn));
        if (r < 0)
                goto fail;
        if (warn[0])
                log_notice("Access lists: %s", warn);
        s->rxcap = DSV_IPC_RING_MAX / 2;
        s->rxbuf = malloc(s->rxcap);
        if (!s->rxbuf) {
                r = -ENOMEM;
                goto fail;
        }
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        /* blocked before any thread exists, so every thread inherits the mask */
        if ((r = -pthread_sigmask(SIG_BLOCK, &mask, NULL)) < 0)
                goto fail;
        signal(SIGPIPE, SIG_IGN);
        s->sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
        s->epfd = epoll_create1(EPOLL_CLOEXEC);
        s->timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
        s->engine_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (s->sigfd < 0 || s->epfd < 0 || s->timerfd < 0 || s->engine_efd < 0) {
                r = log_errno(DSV_LOG_ERR, dsv_negerrno(), "Cannot create the event loop's descriptors: %m");
                goto fail;
        }
        if (timerfd_settime(s->timerfd, 0, &its, NULL) < 0) {
                r = dsv_negerrno();
                goto fail;
        }
        if ((r = setup_listen(s)) < 0)
                goto fail;
        if ((r = epoll_add(s, s->sigfd, EPOLLIN, TAG_SIGNAL)) < 0 || (r = epoll_add(s, s->timerfd, EPOLLIN, TAG_TIMER)) < 0 ||
            (r = epoll_add(s, s->engine_efd, EPOLLIN, TAG_ENGINE)) < 0 ||
            (r = epoll_add(s, s->listen_fd, EPOLLIN, TAG_LISTEN)) < 0)
                goto fail;
        s->accepting = true;
        if (sd_watchdog_enabled(0, &s->watchdog_usec) <= 0)
                s->watchdog_usec = 0;
        else
                log_info("Watchdog: pinging every %.3f s", s->watchdog_usec / 2e6);
        eo.model_dir = s->cfg.model;
        eo.backend = s->cfg.backend;
        eo.threads = s->cfg.threads;
        eo.ranks = s->cfg.ranks;
        eo.tp = strcmp(s->cfg.parallel, "ep,tp") == 0;
        if (args->nodes) {
                s->nodes = args->nodes;
                eo.node_ep = dsv_nodes_ep(args->nodes);
                eo.node_ctl = dsv_nodes_ctl(args->nodes);
                eo.node_dp = strcmp(s->cfg.parallel, "ep,dp") == 0;
        }
        eo.numerics = s->cfg.numerics;
        eo.mtp = s->cfg.mtp;
        eo.graphs_off = strcmp(s->cfg.cuda_graphs, "no") == 0;
        eo.kv_cache_bytes = (uint64_t)s->cfg.kv_cache_mb << 20;
        eo.max_pass_tokens = s->cfg.pass_tokens;
        eo.state_dir = s->cfg.state_directory;
        if ((!eo.state_dir || !eo.state_dir[0]) && getenv("STATE_DIRECTORY")) {
                /* systemd's StateDirectory= (the first of a colon-separated list) */
                snprintf(s->state_dir_env, sizeof(s->state_dir_env), "%s", getenv("STATE_DIRECTORY"));
                s->state_dir_env[strcspn(s->state_dir_env, ":")] = 0;
                eo.state_dir = s->state_dir_env;
        }
        if (eo.state_dir && eo.state_dir[0])
                log_info("Sessions are saved in %s", eo.state_dir);
        eo.snapshot_max_bytes = (uint64_t)s->cfg.snapshot_max_mb << 20;
        eo.notify_fd = s->engine_efd;
        tunables_of(&s->cfg, &tun);
        if ((r = dsv_engine_start(&eo, &tun, &dsv_server_sink, &s->engine)) < 0) {
                log_error("Cannot start the engine thread: %s", strerror(-r));
                goto fail;
        }
        *ret = s;
        return 0;
fail:
        dsv_server_free(s);
        return r;
}

void dsv_server_free(struct dsv_server *s) {
        if (!s)
                return;
        while (s->conns)
                conn_close(s, s->conns);
        dsv_engine_free(s->engine); /* after the connections: it drops its references */
        if (s->listen_owned) {
                unlink(s->cfg.socket);
                close(s->listen_fd);
        }
        if (s->epfd >= 0)
                close(s->epfd);
        if (s->sigfd >= 0)
                close(s->sigfd);
        if (s->timerfd >= 0)
                close(s->timerfd);
        if (s->engine_efd >= 0)
                close(s->engine_efd);
        for (size_t i = 0; i < s->n_uids; i++)
                free(s->uids[i]);
        free(s->uids);
        free(s->active);
        free(s->rxbuf);
        dsv_access_free(&s->access);
        dsv_config_free(&s->cfg);
        free(s);
}
