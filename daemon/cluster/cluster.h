/* The multi-node bootstrap: the nodes of a group (one dsv32d per host, `--nodes N
 * --node-rank R --coordinator HOST:PORT`) find each other over TCP, check that they run the
 * same model and configuration, receive the group id (the NCCL unique id, or whatever the
 * transport needs) from node 0, and then watch each other with heartbeats until the group
 * ends.
 *
 *   node 0      listens on the coordinator address; accepts nodes 1..N-1, each once, from
 *               an allowed address, with our model fingerprint and configuration; refuses
 *               anything else (REFUSE with the reason, and a log line) and keeps waiting;
 *               when all joined, sends each the id (WELCOME).
 *   node R > 0  connects to the coordinator (retrying until the join timeout: node 0 may
 *               start later), says HELLO, waits for WELCOME or REFUSE.
 *   then        a star of TCP connections (every node to node 0) carries heartbeats. A node
 *               that closes its connection (crash, kill) is lost at once; one that sends
 *               nothing for timeout_ms (stopped, hung, cut off) is lost then. Node 0 tells
 *               every other node which node it lost (FAIL); a node that loses node 0 knows
 *               by itself. So every surviving node reports the failure within
 *               timeout_ms + heartbeat_ms of it (+ one message over the network).
 * A failure is final: the status, the failure fd and the on_failure callback say so once;
 * the daemon then exits non-zero so that systemd restarts the group. Wire format: wire.h.
 *
 * Threads: after join, one monitor thread per cluster owns the sockets; dsv_cluster_status
 * and dsv_cluster_wait may be called from any thread. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/cluster/wire.h"
#include "daemon/util.h"

struct dsv_cluster;

struct dsv_cluster_opts {
        int nodes;               /* 2..DSV_CLUSTER_MAX_NODES */
        int node_rank;           /* 0: the coordinator */
        const char *coordinator; /* "HOST:PORT", "[IPv6]:PORT"; node 0 listens there (port 0: any free port) */
        const char *allowed_peers; /* node 0: hosts (names or addresses, comma-separated) peers may connect
                                      from; NULL or "": any address */
        const uint8_t *fingerprint;  /* DSV_FINGERPRINT_BYTES: the model (dsv_model_fingerprint) */
        const char *config;          /* what else must match, compared byte for byte (<= 4096 bytes) */
        int heartbeat_ms;            /* node 0's value is the group's */
        int timeout_ms;              /* a node silent this long is lost (node 0's value is the group's) */
        int join_timeout_ms;         /* how long node 0 waits for the others, a node for node 0 */
        int handshake_timeout_ms;    /* node 0: a connection must say HELLO within this (0: 5000) */
        const void *id;              /* node 0: the group id handed to every node (<= 4096 bytes; */
        size_t id_len;               /* none: 16 random bytes) */
        /* Called once, from the monitor thread, when the group fails (e.g. to abort the
         * communicators so that compute threads stop waiting); optional. */
        void (*on_failure)(void *userdata, int err, const char *why);
        void *userdata;
};

#define DSV_CLUSTER_MAX_NODES 1024

/* Checks the options; node 0 binds and listens on the coordinator address already. */
int dsv_cluster_new(const struct dsv_cluster_opts *o, struct dsv_cluster **ret, struct dsv_error *err);
/* Node 0: the port it listens on (useful with port 0). */
int dsv_cluster_port(const struct dsv_cluster *c);
/* Forms the group (see above) and starts the heartbeats. -ETIMEDOUT: the group did not
 * form within the join timeout (err names the missing nodes); -EPERM: node 0 refused this
 * node (err says why); -ECONNRESET: node 0 went away during the join. */
int dsv_cluster_join(struct dsv_cluster *c, struct dsv_error *err);
/* The group id node 0 handed out (node 0: its own); valid after join. */
const void *dsv_cluster_id(const struct dsv_cluster *c, size_t *len);
int dsv_cluster_nodes(const struct dsv_cluster *c);
int dsv_cluster_node_rank(const struct dsv_cluster *c);

/* 0 while the group is healthy; after a failure the error and, in why, what happened:
 *   -ECONNRESET  a node's connection closed (it died or its host went away)
 *   -ETIMEDOUT   a node sent nothing for timeout_ms
 *   -ESHUTDOWN   a node left the group on purpose
 *   -EPROTO      a node sent bytes that are not our protocol */
int dsv_cluster_status(struct dsv_cluster *c, char *why, size_t n);
/* Waits up to timeout_ms (-1: forever) for a failure; returns the status. */
int dsv_cluster_wait(struct dsv_cluster *c, int timeout_ms);
/* An fd that becomes readable when the group fails (for an event loop); owned by c. */
int dsv_cluster_failure_fd(const struct dsv_cluster *c);

/* Leaves the group (tells the others, BYE, which ends it for them) and frees everything. */
void dsv_cluster_free(struct dsv_cluster *c);
