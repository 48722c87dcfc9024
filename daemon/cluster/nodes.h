/* A group of hosts serving one model (dsv32d --nodes N --node-rank R --coordinator HOST:PORT):
 * the bootstrap (cluster.h: admission by model fingerprint and configuration, heartbeats)
 * and, on it, the Open MPI communicators the nodes compute over (kernels/comm.h).
 *
 *   node 0   starts an ompi-server (unless mpi-server names one), opens an MPI port per
 *            other node, and hands "URI\nPORT1\n...PORTn-1" to the others as the
 *            bootstrap's group id (WELCOME; at most 4096 bytes)
 *   node R   joins the bootstrap, takes the URI and the ports from the id
 *   then     every node joins the MPI group (dsv_comm_mpi_join: ranks = node ranks) and
 *            duplicates it: ep (the experts' collectives) and ctl (node 0's jobs)
 * When the bootstrap loses a node, both communicators are aborted (the pass in flight
 * fails at once) and dsv_nodes_status says why; before the MPI group exists (MPI's connect
 * and accept cannot be interrupted) the process exits non-zero right away.
 * Built with Open MPI only (else dsv_nodes_join says so). */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "daemon/cluster/cluster.h"
#include "kernels/comm.h"

struct dsv_nodes;

struct dsv_nodes_opts {
        struct dsv_cluster_opts cluster; /* id, on_failure: set by dsv_nodes_join */
        const char *mpi_server;          /* node 0: an ompi-server's URI (or file:PATH) to use; "": start one */
        int ep_timeout_ms;               /* how long a node waits for the others at a collective */
};

int dsv_nodes_join(const struct dsv_nodes_opts *o, struct dsv_nodes **ret, struct dsv_error *err);
struct dsv_comm *dsv_nodes_ep(const struct dsv_nodes *n);
struct dsv_comm *dsv_nodes_ctl(const struct dsv_nodes *n);
/* 0 while every node is there; else the bootstrap's error (-ESHUTDOWN: node 0 ended the
 * group on purpose) and why. Any thread. */
int dsv_nodes_status(struct dsv_nodes *n, char *why, size_t len);
/* A follower node's end before it exits at once (_exit): the bootstrap's thread joined and its
 * connections closed; the MPI communicators are left to the process's exit. */
void dsv_nodes_leave(struct dsv_nodes *n);
/* Leaves the group (BYE), stops the ompi-server node 0 started; MPI is not finalized (it
 * would wait for the other nodes): the process is to exit next. */
void dsv_nodes_free(struct dsv_nodes *n);
