/* The dsv32d process around the engine: listening socket (socket activation or created
 * with the configured mode and group), access policy and per-uid limits, the handshake
 * that hands each client its memfd, the event loop over client sockets and submission
 * rings (epoll, with an adaptive spin over active rings before it sleeps), signals
 * (SIGTERM drains, SIGHUP reloads), and systemd notification (READY, STATUS,
 * EXTEND_TIMEOUT_USEC, WATCHDOG, STOPPING, RELOADING). */
#pragma once

#include "daemon/server/settings.h"

struct dsv_server;

struct dsv_server_args {
        const char *config_path;  /* NULL: the default file, if it exists */
        bool config_explicit;     /* a missing file is an error */
        const char **overrides;   /* name, value pairs from the command line */
        size_t n_overrides;
        struct dsv_nodes *nodes;  /* node 0 of a group of hosts (nodes > 1), or NULL; the caller's */
};

/* Takes ownership of cfg's contents. */
int dsv_server_new(struct dsv_server_config *cfg, const struct dsv_server_args *args, struct dsv_server **ret);
/* Runs until stopped; returns the process exit status. */
int dsv_server_run(struct dsv_server *s);
void dsv_server_free(struct dsv_server *s);
