/* Access policy (see access.h). */
#include "config.h"

#include "daemon/server/access.h"

#include <assert.h>
#include <grp.h>
#include <pwd.h>
#include <sys/socket.h>

#include "daemon/util.h"

static int parse_list(const char *list, bool users, void **ret, size_t *n, char *warn, size_t warnlen) {
        _cleanup_free_ char *copy = strdup(list ? list : "");
        unsigned *v = NULL;
        size_t k = 0, cap = 0;
        char *save = NULL;

        if (!copy)
                return -ENOMEM;
        for (char *tok = strtok_r(copy, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save)) {
                long id = -1;
                char buf[1024];
                if (dsv_parse_int(tok, 0, 0x7fffffff, &id) < 0) {
                        if (users) {
                                struct passwd pw, *res = NULL;
                                if (getpwnam_r(tok, &pw, buf, sizeof(buf), &res) == 0 && res)
                                        id = (long)res->pw_uid;
                        } else {
                                struct group gr, *res = NULL;
                                if (getgrnam_r(tok, &gr, buf, sizeof(buf), &res) == 0 && res)
                                        id = (long)res->gr_gid;
                        }
                }
                if (id < 0) {
                        size_t l = strlen(warn);
                        if (l < warnlen)
                                snprintf(warn + l, warnlen - l, "%sno %s named '%s'; ignored", l ? "\n" : "",
                                         users ? "user" : "group", tok);
                        continue;
                }
                if (k == cap) {
                        unsigned *nv = realloc(v, (cap = cap ? cap * 2 : 8) * sizeof(*v));
                        if (!nv) {
                                free(v);
                                return -ENOMEM;
                        }
                        v = nv;
                }
                v[k++] = (unsigned)id;
        }
        *ret = v;
        *n = k;
        return 0;
}

int dsv_access_parse(const char *users, const char *groups, struct dsv_access *ret, char *warn, size_t warnlen) {
        struct dsv_access a = {0};
        void *u = NULL, *g = NULL;
        int r;

        static_assert(sizeof(uid_t) == sizeof(unsigned) && sizeof(gid_t) == sizeof(unsigned), "id size");
        if (warnlen)
                warn[0] = 0;
        r = parse_list(users, true, &u, &a.n_uids, warn, warnlen);
        if (r < 0)
                return r;
        r = parse_list(groups, false, &g, &a.n_gids, warn, warnlen);
        if (r < 0) {
                free(u);
                return r;
        }
        a.uids = u;
        a.gids = g;
        *ret = a;
        return 0;
}

void dsv_access_free(struct dsv_access *a) {
        if (!a)
                return;
        free(a->uids);
        free(a->gids);
        a->uids = NULL;
        a->gids = NULL;
        a->n_uids = a->n_gids = 0;
}

int dsv_peer_get(int fd, struct dsv_peer *ret) {
        struct ucred uc;
        socklen_t len = sizeof(uc);
        struct dsv_peer p = {0};

        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) < 0)
                return dsv_negerrno();
        if (len != sizeof(uc))
                return -EIO;
        p.pid = uc.pid;
        p.uid = uc.uid;
        p.gid = uc.gid;
        p.n_groups = -1;
#ifdef SO_PEERGROUPS
        len = sizeof(p.groups);
        if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, p.groups, &len) == 0)
                p.n_groups = (int)(len / sizeof(gid_t));
        else if (errno == ERANGE)
                p.n_groups = 0; /* more than 64 groups: only the primary one counts */
#endif
        *ret = p;
        return 0;
}

bool dsv_access_allowed(const struct dsv_access *a, const struct dsv_peer *p, uid_t self) {
        if (p->uid == self)
                return true;
        for (size_t i = 0; i < a->n_uids; i++)
                if (a->uids[i] == p->uid)
                        return true;
        for (size_t i = 0; i < a->n_gids; i++) {
                if (a->gids[i] == p->gid)
                        return true;
                for (int j = 0; j < p->n_groups; j++)
                        if (p->groups[j] == a->gids[i])
                                return true;
        }
        return false;
}

void dsv_uid_describe(uid_t uid, char *buf, size_t n) {
        char tmp[1024];
        struct passwd pw, *res = NULL;
        if (getpwuid_r(uid, &pw, tmp, sizeof(tmp), &res) == 0 && res)
                snprintf(buf, n, "uid %u (%s)", (unsigned)uid, res->pw_name);
        else
                snprintf(buf, n, "uid %u", (unsigned)uid);
}
