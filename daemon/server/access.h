/* Who may talk to dsv32d: the peer's credentials from the kernel (SO_PEERCRED, and its
 * supplementary groups from SO_PEERGROUPS) checked against allow lists of users and groups
 * from the settings. The daemon's own uid is always allowed (so an unprivileged daemon
 * started by a developer or a test serves its owner); root only when listed (it is by
 * default). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct dsv_access {
        uid_t *uids;
        size_t n_uids;
        gid_t *gids;
        size_t n_gids;
};

struct dsv_peer {
        pid_t pid;
        uid_t uid;
        gid_t gid;
        gid_t groups[64];
        int n_groups; /* -1: unknown (SO_PEERGROUPS unsupported) */
};

/* Parses comma-separated names or numeric ids. Names that do not resolve are reported in
 * warn (one line each, for the log) and skipped: a missing group "dsv32" on a development
 * machine is not an error. */
int dsv_access_parse(const char *users, const char *groups, struct dsv_access *ret, char *warn, size_t warnlen);
void dsv_access_free(struct dsv_access *a);
/* Reads SO_PEERCRED and SO_PEERGROUPS of a connected Unix socket. */
int dsv_peer_get(int fd, struct dsv_peer *ret);
bool dsv_access_allowed(const struct dsv_access *a, const struct dsv_peer *p, uid_t self);
/* "uid 65534 (nobody)" */
void dsv_uid_describe(uid_t uid, char *buf, size_t n);
