/* Opening backends by name; GPU backends are dlopen'ed plugins (see backend_plugin.h).
 *
 * A plugin is loaded once per process and never unloaded: every backend it creates points
 * at its vtable. Loading is serialised by a mutex; the table of loaded plugins is small and
 * append-only. Plugins found through the compiled-in directories must not be writable by
 * group or others (nor their directory): a daemon running as root must not execute code that
 * an unprivileged user could replace. $DSV32_BACKEND_PATH is taken as given. */
#include "config.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kernels/backend_plugin.h"

#ifndef DSV_PLUGIN_DIR
#define DSV_PLUGIN_DIR ""
#endif
#ifndef DSV_PLUGIN_BUILDDIR
#define DSV_PLUGIN_BUILDDIR ""
#endif

struct plugin {
        char name[16];
        char path[4096];
        void *handle;
        dsv_plugin_new_fn new_backend;
        dsv_plugin_last_error_fn last_error;
        dsv_plugin_last_error_fn device_error;
        dsv_plugin_describe_fn describe;
        dsv_plugin_comm_id_fn comm_id;
        dsv_plugin_comm_new_fn comm_new;
        dsv_plugin_emulated_fn emulated;
        const struct dsv_backend_ops *ops; /* the vtable of its backends, once one was made */
};

static struct plugin plugins[8];
static int n_plugins;
static pthread_mutex_t plugins_lock = PTHREAD_MUTEX_INITIALIZER;

static int seterr(struct dsv_error *err, int r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int seterr(struct dsv_error *err, int r, const char *fmt, ...) {
        if (err) {
                va_list ap;
                va_start(ap, fmt);
                vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
                va_end(ap);
        }
        return r;
}

/* Appends "; <what>" to a bounded list of attempts. */
static void note(char *buf, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void note(char *buf, size_t cap, const char *fmt, ...) {
        size_t len = strlen(buf);
        va_list ap;
        if (len + 4 >= cap)
                return;
        if (len) {
                memcpy(buf + len, "; ", 3);
                len += 2;
        }
        va_start(ap, fmt);
        vsnprintf(buf + len, cap - len, fmt, ap);
        va_end(ap);
}

static bool safe_file(const char *path, char *why, size_t cap) {
        struct stat st;
        char dir[4096];
        if (stat(path, &st) < 0) {
                note(why, cap, "%s: %s", path, strerror(errno));
                return false;
        }
        if (!S_ISREG(st.st_mode) || (st.st_mode & (S_IWGRP | S_IWOTH))) {
                note(why, cap, "%s: not a regular file, or writable by group/others: refused", path);
                return false;
        }
        snprintf(dir, sizeof(dir), "%s", path);
        char *slash = strrchr(dir, '/');
        if (slash && slash != dir) {
                *slash = 0;
                if (stat(dir, &st) == 0 && (st.st_mode & S_IWOTH) && !(st.st_mode & S_ISVTX)) {
                        note(why, cap, "%s: directory writable by others: refused", path);
                        return false;
                }
        }
        return true;
}

/* dlopens path and resolves the entry points of plugin `name`; fills *p. */
static bool try_load(const char *path, const char *name, bool check_perms, struct plugin *p, char *why, size_t cap) {
        char sym[64];
        if (check_perms && !safe_file(path, why, cap))
                return false;
        void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        if (!h) {
                const char *e = dlerror();
                note(why, cap, "%s", e ? e : path);
                return false;
        }
        dlerror();
        dsv_plugin_abi_fn abi = (dsv_plugin_abi_fn)dlsym(h, "dsv_backend_plugin_abi");
        snprintf(sym, sizeof(sym), "dsv_backend_%s_new", name);
        dsv_plugin_new_fn nf = (dsv_plugin_new_fn)dlsym(h, sym);
        if (!abi || !nf) {
                note(why, cap, "%s: not a dsv32 %s backend plugin (no %s)", path, name, abi ? sym : "dsv_backend_plugin_abi");
                dlclose(h);
                return false;
        }
        if (abi() != DSV_BACKEND_ABI) {
                note(why, cap, "%s: built against another backend interface (ABI %08x, this program %08x): rebuild or reinstall it",
                     path, abi(), DSV_BACKEND_ABI);
                dlclose(h);
                return false;
        }
        memset(p, 0, sizeof(*p));
        snprintf(p->name, sizeof(p->name), "%s", name);
        p->handle = h;
        p->new_backend = nf;
        snprintf(sym, sizeof(sym), "dsv_backend_%s_last_error", name);
        p->last_error = (dsv_plugin_last_error_fn)dlsym(h, sym);
        snprintf(sym, sizeof(sym), "dsv_backend_%s_device_error", name);
        p->device_error = (dsv_plugin_last_error_fn)dlsym(h, sym);
        snprintf(sym, sizeof(sym), "dsv_backend_%s_describe", name);
        p->describe = (dsv_plugin_describe_fn)dlsym(h, sym);
        snprintf(sym, sizeof(sym), "dsv_backend_%s_comm_unique_id", name);
        p->comm_id = (dsv_plugin_comm_id_fn)dlsym(h, sym);
        snprintf(sym, sizeof(sym), "dsv_backend_%s_comm_new", name);
        p->comm_new = (dsv_plugin_comm_new_fn)dlsym(h, sym);
        snprintf(sym, sizeof(sym), "dsv_backend_%s_emulated", name);
        p->emulated = (dsv_plugin_emulated_fn)dlsym(h, sym);
        snprintf(p->path, sizeof(p->path), "%s", path);
        return true;
}

/* The plugin of this name at path, loading it first if needed (NULL: not loadable, why says
 * so). */
static struct plugin *plugin_at(const char *path, const char *name, bool check_perms, char *why, size_t cap) {
        struct plugin *found = NULL, p;

        pthread_mutex_lock(&plugins_lock);
        for (int i = 0; i < n_plugins && !found; i++)
                if (strcmp(plugins[i].name, name) == 0 && strcmp(plugins[i].path, path) == 0)
                        found = &plugins[i];
        if (!found && n_plugins < (int)(sizeof(plugins) / sizeof(plugins[0])) && try_load(path, name, check_perms, &p, why, cap)) {
                plugins[n_plugins] = p;
                found = &plugins[n_plugins++];
        }
        pthread_mutex_unlock(&plugins_lock);
        return found;
}

static struct plugin *plugin_of(struct dsv_backend *be) {
        struct plugin *p = NULL;
        if (!be || !be->ops)
                return NULL;
        pthread_mutex_lock(&plugins_lock);
        for (int i = 0; i < n_plugins && !p; i++)
                if (plugins[i].ops == be->ops)
                        p = &plugins[i];
        pthread_mutex_unlock(&plugins_lock);
        return p;
}

/* Tries the candidates for plugin `name` in search order: the first one that loads and
 * starts on `device` wins; one that loads but finds no device (-ENODEV) hands over to the
 * next (a real plugin before the CPU emulation, say). */
static int open_plugin(const char *name, int device, bool allow_emulated, struct dsv_backend **ret, struct dsv_error *err) {
        char why[1024] = "", file[64], path[4096], seen_paths[8][4096];
        int last = -ENOENT, tried = 0, n_seen = 0;
        snprintf(file, sizeof(file), "dsv32-backend-%s.so", name);

        char *list = NULL;
        const char *env = getenv("DSV32_BACKEND_PATH");
        if (env && *env && !(list = strdup(env)))
                return seterr(err, -ENOMEM, "out of memory");
        char *save = NULL, *e = list ? strtok_r(list, ":", &save) : NULL;
        const char *dirs[2] = {DSV_PLUGIN_DIR, DSV_PLUGIN_BUILDDIR};
        for (int di = 0;;) {
                bool check_perms;
                if (e) {
                        size_t n = strlen(e);
                        if (n > 3 && strcmp(e + n - 3, ".so") == 0)
                                snprintf(path, sizeof(path), "%s", e);
                        else
                                snprintf(path, sizeof(path), "%s/%s", e, file);
                        e = strtok_r(NULL, ":", &save);
                        check_perms = false;
                } else if (di < 2) {
                        if (!dirs[di++][0])
                                continue;
                        snprintf(path, sizeof(path), "%s/%s", dirs[di - 1], file);
                        check_perms = true;
                } else {
                        break;
                }
                bool seen = false; /* a directory both on the path and compiled in */
                for (int i = 0; i < n_seen && !seen; i++)
                        seen = strcmp(seen_paths[i], path) == 0;
                if (seen)
                        continue;
                if (n_seen < (int)(sizeof(seen_paths) / sizeof(seen_paths[0])))
                        snprintf(seen_paths[n_seen++], sizeof(seen_paths[0]), "%s", path);
                struct plugin *p = plugin_at(path, name, check_perms, why, sizeof(why));
                if (!p)
                        continue;
                if (p->emulated && p->emulated() && !allow_emulated) {
                        note(why, sizeof(why), "%s: a CPU emulation of the device, not chosen by \"auto\"", path);
                        continue;
                }
                tried++;
                struct dsv_backend *be = NULL;
                int r = p->new_backend(device, &be);
                if (r == 0) {
                        pthread_mutex_lock(&plugins_lock);
                        p->ops = be->ops;
                        pthread_mutex_unlock(&plugins_lock);
                        free(list);
                        *ret = be;
                        return 0;
                }
                last = r;
                note(why, sizeof(why), "%s: %s%s%s", path, strerror(-r), p->last_error && p->last_error()[0] ? ": " : "",
                     p->last_error ? p->last_error() : "");
                if (r != -ENODEV)
                        break;
        }
        free(list);
        if (!tried)
                return seterr(err, -ENOENT,
                              "The %s backend plugin dsv32-backend-%s.so could not be loaded (%s). Install the dsv32d-%s package, or "
                              "point DSV32_BACKEND_PATH at the directory holding it",
                              name, name, why[0] ? why : "not found", name);
        return seterr(err, last, "The %s backend could not start on device %d (%s)", name, device, why);
}

int dsv_backend_open(const char *name, const struct dsv_backend_opts *opts, struct dsv_backend **ret, struct dsv_error *err) {
        const struct dsv_backend_opts dflt = {0};
        if (!opts)
                opts = &dflt;
        if (err)
                err->msg[0] = 0;
        if (!name || !ret)
                return seterr(err, -EINVAL, "dsv_backend_open: no backend name");
        if (opts->device < 0)
                return seterr(err, -EINVAL, "dsv_backend_open: device %d", opts->device);
        if (strcmp(name, "cpu") == 0) {
                int r = dsv_backend_cpu_new(opts->threads, ret);
                return r < 0 ? seterr(err, r, "The CPU backend could not start: %s", strerror(-r)) : 0;
        }
        if (strcmp(name, "auto") == 0) {
                struct dsv_error why = {{0}};
                if (open_plugin("cuda", opts->device, false, ret, &why) == 0)
                        return 0;
                int r = dsv_backend_cpu_new(opts->threads, ret);
                if (r < 0)
                        return seterr(err, r, "The CPU backend could not start: %s", strerror(-r));
                if (err)
                        snprintf(err->msg, sizeof(err->msg), "%s", why.msg);
                return 0;
        }
        for (const char *c = name; *c; c++)
                if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9')) || c - name >= 12)
                        return seterr(err, -EINVAL, "Unknown backend \"%.32s\" (cpu, cuda or auto)", name);
        return open_plugin(name, opts->device, true, ret, err);
}

bool dsv_backend_is_emulated(struct dsv_backend *be) {
        struct plugin *p = plugin_of(be);
        return p && p->emulated && p->emulated();
}

int dsv_backend_sample(struct dsv_backend *be, const struct dsv_tensor *logits, const struct dsv_sample_params *params, int n,
                       int32_t *tokens) {
        /* whether the backend has the op at all: asked with one row of one logit */
        static const struct dsv_sample_params one = {0};
        struct dsv_tensor l1 = dsv_tensor_2d(DSV_F32, NULL, 1, 1), t1 = dsv_tensor_2d(DSV_I32, NULL, 1, 1);
        struct dsv_op op = {.type = DSV_OP_SAMPLE};
        void *dev = NULL;
        int r;
        if (!be)
                return -EINVAL;
        op.sample = (struct dsv_op_sample){.tokens = &t1, .logits = &l1, .params = &one};
        if (!be->ops->supports_op(be, &op))
                return -EOPNOTSUPP;
        if (!logits || !params || !tokens || n < 0 || logits->ne[1] < n)
                return -EINVAL;
        if (n == 0)
                return 0;
        struct dsv_tensor rows = *logits, tok;
        rows.ne[1] = n;
        if ((r = be->ops->alloc(be, (size_t)n * sizeof(int32_t), &dev)) < 0)
                return r;
        tok = dsv_tensor_2d(DSV_I32, dev, 1, n);
        op.sample = (struct dsv_op_sample){.tokens = &tok, .logits = &rows, .params = params};
        r = be->ops->supports_op(be, &op) ? be->ops->compute(be, &op) : -EINVAL;
        if (r >= 0)
                r = be->ops->download(be, tokens, dev, (size_t)n * sizeof(int32_t));
        be->ops->dealloc(be, dev, (size_t)n * sizeof(int32_t));
        return r < 0 ? r : 0;
}

const char *dsv_backend_last_error(struct dsv_backend *be) {
        struct plugin *p = plugin_of(be);
        return p && p->last_error ? p->last_error() : "";
}

const char *dsv_backend_device_error(struct dsv_backend *be) {
        struct plugin *p = plugin_of(be);
        const char *e = p && p->device_error ? p->device_error() : NULL;
        return e ? e : "";
}

const char *dsv_backend_describe(struct dsv_backend *be) {
        struct plugin *p = plugin_of(be);
        if (p && p->describe)
                return p->describe(be);
        if (be && be->ops && be->ops->describe)
                return be->ops->describe(be);
        return be && be->ops && be->ops->name ? be->ops->name : "?";
}

int dsv_comm_plugin_unique_id(struct dsv_backend *be, void *id, size_t cap, size_t *len) {
        struct plugin *p = plugin_of(be);
        if (!id || !len)
                return -EINVAL;
        if (!p || !p->comm_id)
                return -EOPNOTSUPP;
        return p->comm_id(id, cap, len);
}

int dsv_comm_open_plugin(struct dsv_backend *be, const void *id, size_t id_len, int size, int rank, int timeout_ms,
                         struct dsv_comm **ret, struct dsv_error *err) {
        struct plugin *p = plugin_of(be);
        int r;
        if (!be || !id || !ret || size < 1 || rank < 0 || rank >= size || timeout_ms <= 0)
                return seterr(err, -EINVAL, "dsv_comm_open_plugin: bad arguments (rank %d of %d, timeout %d ms)", rank, size,
                              timeout_ms);
        if (!p || !p->comm_new)
                return seterr(err, -EOPNOTSUPP, "The %s backend has no communicator (built without NCCL?)",
                              be->ops && be->ops->name ? be->ops->name : "?");
        r = p->comm_new(DSV_COMM_ABI, be, id, id_len, size, rank, timeout_ms, ret);
        if (r < 0)
                return seterr(err, r, "Rank %d of %d could not join the %s communicator: %s%s%s", rank, size, p->name,
                              strerror(-r), p->last_error && p->last_error()[0] ? ": " : "",
                              p->last_error ? p->last_error() : "");
        return 0;
}
