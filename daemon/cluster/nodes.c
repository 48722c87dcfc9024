/* The group of hosts: the bootstrap, the ompi-server node 0 starts, and the MPI join (see
 * nodes.h). */
#include "config.h"

#include "daemon/cluster/nodes.h"

#include <signal.h>
#include <sys/prctl.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon/util.h"

/* The followers wait on ctl for node 0's next pass, idle for days between requests: a lost
 * node is the bootstrap's to find (its heartbeats abort ctl), not this timeout's. */
#define CTL_TIMEOUT_MS (7 * 24 * 3600 * 1000)

struct dsv_nodes {
        struct dsv_cluster *cluster;
        _Atomic(struct dsv_comm *) ep, ctl;
        atomic_bool joined; /* the MPI group exists: a failure aborts it instead of exiting */
        pid_t server_pid;   /* the ompi-server node 0 started, or 0 */
        char dir[64];       /* where its URI file is */
};

struct dsv_comm *dsv_nodes_ep(const struct dsv_nodes *n) { return atomic_load(&((struct dsv_nodes *)n)->ep); }
struct dsv_comm *dsv_nodes_ctl(const struct dsv_nodes *n) { return atomic_load(&((struct dsv_nodes *)n)->ctl); }

int dsv_nodes_status(struct dsv_nodes *n, char *why, size_t len) { return dsv_cluster_status(n->cluster, why, len); }

#ifdef HAVE_MPI
/* The bootstrap's monitor thread, once, when the group fails. */
static void on_failure(void *ud, int err, const char *why) {
        struct dsv_nodes *n = ud;
        struct dsv_comm *c;
        err = err < 0 ? -err : err;
        if (!atomic_load(&n->joined)) {
                /* this node may be inside MPI_Comm_connect/accept, which nothing interrupts */
                log_error("The group of nodes failed while it was forming: %s (%s); exiting", why, strerror(err));
                _exit(EXIT_FAILURE);
        }
        if (err == ESHUTDOWN)
                log_info("The group of nodes ends: %s", why);
        else
                log_error("The group of nodes is broken: %s (%s)", why, strerror(err));
        if ((c = atomic_load(&n->ep)))
                dsv_comm_abort(c);
        if ((c = atomic_load(&n->ctl)))
                dsv_comm_abort(c);
}

/* Node 0: an ompi-server of its own (a child process; stopped by dsv_nodes_free). */
static int start_ompi_server(struct dsv_nodes *n, char *uri, size_t cap, struct dsv_error *err) {
        _cleanup_free_ char *file = NULL;
        char *argv[] = {(char *)"ompi-server", (char *)"--no-daemonize", (char *)"-r", NULL, NULL};
        snprintf(n->dir, sizeof(n->dir), "/tmp/dsv32d-nodes.XXXXXX");
        if (!mkdtemp(n->dir))
                return dsv_error_set(err, errno, "cannot create a directory for ompi-server's URI: %s", strerror(errno));
        if (asprintf(&file, "%s/uri", n->dir) < 0)
                return -ENOMEM;
        argv[3] = file;
        /* before MPI and the bootstrap start threads: a plain fork; the child gets the default
         * signals back (dsv32d blocks SIGTERM for its signalfd) and ends with this process */
        if ((n->server_pid = fork()) < 0) {
                n->server_pid = 0;
                return dsv_error_set(err, errno, "cannot start ompi-server: %s", strerror(errno));
        }
        if (n->server_pid == 0) {
                sigset_t none;
                sigemptyset(&none);
                sigprocmask(SIG_SETMASK, &none, NULL);
                prctl(PR_SET_PDEATHSIG, SIGTERM);
                execvp(argv[0], argv);
                fprintf(stderr, "dsv32d: cannot run ompi-server (Debian: openmpi-bin): %s\n", strerror(errno));
                _exit(127);
        }
        for (int i = 0; i < 200; i++) { /* 10 s */
                FILE *f = fopen(file, "re");
                if (f) {
                        size_t got = fread(uri, 1, cap - 1, f);
                        fclose(f);
                        uri[got] = 0;
                        uri[strcspn(uri, "\r\n")] = 0;
                        if (uri[0])
                                return 0;
                }
                if (waitpid(n->server_pid, NULL, WNOHANG) == n->server_pid) {
                        n->server_pid = 0;
                        return dsv_error_set(err, EIO, "ompi-server exited before it wrote its URI");
                }
                usleep(50000);
        }
        return dsv_error_set(err, ETIMEDOUT, "ompi-server wrote no URI into %s within 10 s", file);
}
#endif

int dsv_nodes_join(const struct dsv_nodes_opts *o, struct dsv_nodes **ret, struct dsv_error *err) {
#ifdef HAVE_MPI
        struct dsv_cluster_opts co = o->cluster;
        struct dsv_nodes *n;
        char uri[1024] = "", port[DSV_WIRE_MAX_ID] = "", id[DSV_WIRE_MAX_ID + 1];
        const char *gid;
        size_t gid_len = 0;
        struct dsv_comm *ep = NULL, *ctl = NULL;
        int r;

        if (!(n = calloc(1, sizeof(*n))))
                return -ENOMEM;
        if (co.node_rank == 0) {
                if (o->mpi_server && o->mpi_server[0])
                        snprintf(uri, sizeof(uri), "%s", o->mpi_server);
                else if ((r = start_ompi_server(n, uri, sizeof(uri), err)) < 0)
                        goto fail;
                setenv("OMPI_MCA_pmix_server_uri", uri, 1);
                if ((r = dsv_comm_mpi_open_ports(co.nodes, port, sizeof(port))) < 0) {
                        dsv_error_set(err, -r, "cannot open the MPI ports through ompi-server %s: %s", uri,
                                      r == -ENOBUFS ? "their names do not fit the bootstrap's group id (4096 bytes): fewer nodes"
                                                    : strerror(-r));
                        goto fail;
                }
                if ((size_t)snprintf(id, sizeof(id), "%s\n%s", uri, port) >= DSV_WIRE_MAX_ID) {
                        r = dsv_error_set(err, ENOBUFS, "the MPI server's URI and %d ports do not fit the bootstrap's "
                                          "group id (%d bytes): fewer nodes", co.nodes - 1, DSV_WIRE_MAX_ID);
                        goto fail;
                }
                co.id = id;
                co.id_len = strlen(id);
        }
        co.on_failure = on_failure;
        co.userdata = n;
        if ((r = dsv_cluster_new(&co, &n->cluster, err)) < 0 || (r = dsv_cluster_join(n->cluster, err)) < 0)
                goto fail;
        gid = dsv_cluster_id(n->cluster, &gid_len);
        if (co.node_rank > 0) {
                const char *nl = memchr(gid, '\n', gid_len);
                if (!nl || nl == gid || (size_t)(nl - gid) >= sizeof(uri) || gid_len - (size_t)(nl - gid) - 1 >= sizeof(port) ||
                    gid_len - (size_t)(nl - gid) - 1 == 0) {
                        r = dsv_error_set(err, EPROTO, "node 0 handed out a group id that is not an MPI server and port");
                        goto fail;
                }
                memcpy(uri, gid, (size_t)(nl - gid));
                uri[nl - gid] = 0;
                memcpy(port, nl + 1, gid_len - (size_t)(nl - gid) - 1);
                port[gid_len - (size_t)(nl - gid) - 1] = 0;
                setenv("OMPI_MCA_pmix_server_uri", uri, 1);
        }
        log_info("Node %d of %d: joining the MPI group (ompi-server %s)", co.node_rank, co.nodes, uri);
        if ((r = dsv_comm_mpi_join(port, co.nodes, co.node_rank, o->ep_timeout_ms, &ep)) < 0) {
                dsv_error_set(err, -r, "cannot join the MPI group of the nodes: %s", strerror(-r));
                goto fail;
        }
        if ((r = dsv_comm_mpi_dup(ep, CTL_TIMEOUT_MS, &ctl)) < 0) {
                dsv_comm_free(ep);
                dsv_error_set(err, -r, "cannot create the nodes' job channel: %s", strerror(-r));
                goto fail;
        }
        atomic_store(&n->ep, ep);
        atomic_store(&n->ctl, ctl);
        atomic_store(&n->joined, true);
        if (dsv_cluster_status(n->cluster, NULL, 0) < 0) { /* lost while the flag was not set yet */
                dsv_comm_abort(ep);
                dsv_comm_abort(ctl);
        }
        *ret = n;
        return 0;
fail:
        dsv_nodes_free(n);
        return r;
#else
        (void)o;
        (void)ret;
        return dsv_error_set(err, EOPNOTSUPP,
                             "nodes %d: this dsv32d was built without Open MPI, which the nodes compute over (Debian: "
                             "apt-get install libopenmpi-dev openmpi-bin, then ./configure)",
                             o->cluster.nodes);
#endif
}

void dsv_nodes_leave(struct dsv_nodes *n) {
        if (!n)
                return;
        dsv_cluster_free(n->cluster);
        n->cluster = NULL;
}

void dsv_nodes_free(struct dsv_nodes *n) {
        if (!n)
                return;
        /* no MPI_Finalize: it may wait for the other nodes (connected processes), which are
         * leaving or lost; the process exits right after this */
        /* the bootstrap first: its thread (on_failure) aborts the communicators until it ends */
        dsv_cluster_free(n->cluster);
        dsv_comm_free(atomic_load(&n->ctl));
        dsv_comm_free(atomic_load(&n->ep));
        if (n->server_pid > 0) {
                bool reaped = false;
                kill(n->server_pid, SIGTERM);
                for (int i = 0; i < 100 && !reaped; i++) { /* 5 s */
                        reaped = waitpid(n->server_pid, NULL, WNOHANG) == n->server_pid;
                        if (!reaped)
                                usleep(50000);
                }
                if (!reaped && kill(n->server_pid, SIGKILL) == 0)
                        waitpid(n->server_pid, NULL, 0);
        }
        if (n->dir[0]) {
                char file[96];
                snprintf(file, sizeof(file), "%s/uri", n->dir);
                unlink(file);
                rmdir(n->dir);
        }
        free(n);
}
