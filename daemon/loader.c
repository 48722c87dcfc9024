/* io_uring checkpoint loader (see loader.h). */
#include "config.h"

#include "daemon/loader.h"

#include <fcntl.h>
#include <liburing.h>
#include <sys/resource.h>
#include <sys/uio.h>

#define ALIGN 4096u
#define MERGE_GAP (1u << 20) /* read through gaps smaller than this */

struct job {
        int shard;
        uint64_t off, len;  /* the aligned range this job reads */
        uint64_t need;      /* bytes that must arrive (len clipped at end of file) */
        uint64_t done;      /* bytes arrived so far */
        int slot;
        bool probing;       /* first try: a buffered read that must not block (page cache hit) */
        uint8_t *dst;       /* read straight into this (host-memory backend, buffered reads) */
};

struct shard_io {
        int fd_direct, fd_buffered;
        bool direct_failed;
};

struct loader {
        const struct dsv_checkpoint *ck;
        struct dsv_load_item *items; /* sorted by (shard, offset) */
        size_t n_items;
        struct dsv_backend *be;
        const struct dsv_load_opts *o;
        struct dsv_load_stats *st;
        struct dsv_error *err;
        struct shard_io *io;
        struct job *jobs;
        size_t n_jobs, next_job;
        uint8_t **bufs;
        size_t chunk;
        bool fixed; /* staging buffers registered with the ring */
        /* device backends with upload_async: staging in the backend's pinned host memory, one
         * event per slot; a slot whose upload is queued waits in `pending` (oldest first) */
        bool async;
        void **events;
        const struct job **pending;
        unsigned n_pending, pending_head, qd;
        uint64_t staged_now; /* bytes of staging holding data not yet on the device */
        uint64_t total, delivered, t0, last_report;
        uint64_t t_upload0, t_upload1; /* first upload queued, last upload done */
        uint64_t *slot_up;             /* async: bytes the upload queued from each slot copies */
        uint64_t fenced;               /* async: bytes whose upload is done */
        bool use_direct;
        bool to_dst; /* buffered reads land in the tensors themselves: one copy, no staging */
};

/* MemAvailable from /proc/meminfo in bytes, 0 if unknown. */
static uint64_t mem_available(void) {
        _cleanup_fclose_ FILE *f = fopen("/proc/meminfo", "re");
        char line[256];
        unsigned long long kb;
        if (!f)
                return 0;
        while (fgets(line, sizeof(line), f))
                if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
                        return (uint64_t)kb * 1024;
        return 0;
}

/* The errno's text (the plugin's own description, dsv_backend_last_error, lives a layer above). */
static const char *be_error(struct dsv_backend *be, int r) {
        (void)be;
        return strerror(-r);
}

/* Whether this process may lock memory beyond RLIMIT_MEMLOCK (CAP_IPC_LOCK, bit 14 of CapEff). */
static bool cap_ipc_lock(void) {
        _cleanup_fclose_ FILE *f = fopen("/proc/self/status", "re");
        char line[256];
        unsigned long long caps;
        if (!f)
                return false;
        while (fgets(line, sizeof(line), f))
                if (sscanf(line, "CapEff: %llx", &caps) == 1)
                        return (caps >> 14) & 1;
        return false;
}

/* io_uring charges registered buffers to RLIMIT_MEMLOCK: the pinned staging must fit in it
 * (unless CAP_IPC_LOCK), else registration fails and every read pays for pinning its pages.
 * One clear error with the numbers rather than a slow load. */
static int check_memlock(struct loader *L, unsigned qd) {
        struct rlimit rl;
        uint64_t need = (uint64_t)qd * L->chunk;
        if (getrlimit(RLIMIT_MEMLOCK, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= need || cap_ipc_lock())
                return 0;
        return dsv_error_set(L->err, ENOMEM,
                             "RLIMIT_MEMLOCK is %llu bytes but loading into %s memory stages through %u pinned buffers of %zu bytes "
                             "(%llu bytes) registered with io_uring: raise the limit (LimitMEMLOCK=%llu or infinity in the systemd "
                             "unit, ulimit -l %llu in a shell) or read with fewer buffers in flight",
                             (unsigned long long)rl.rlim_cur, L->be->ops->name, qd, L->chunk, (unsigned long long)need,
                             (unsigned long long)need, (unsigned long long)(need + 1023) / 1024);
}

static int cmp_item(const void *a, const void *b) {
        const struct dsv_load_item *x = a, *y = b;
        if (x->t->shard != y->t->shard)
                return x->t->shard - y->t->shard;
        return x->t->offset < y->t->offset ? -1 : x->t->offset > y->t->offset;
}

static const char *tensor_at(const struct loader *L, int shard, uint64_t off) {
        for (size_t i = 0; i < L->n_items; i++) {
                const struct dsv_ckpt_tensor *t = L->items[i].t;
                if (t->shard == shard && off < t->offset + t->nbytes && off + ALIGN > t->offset)
                        return t->name;
        }
        return "(between tensors)";
}

static int add_job(struct loader *L, size_t *cap, int shard, uint64_t off, uint64_t len, uint8_t *dst) {
        if (L->n_jobs == *cap) {
                size_t nc = *cap ? *cap * 2 : 256;
                struct job *v = realloc(L->jobs, nc * sizeof(*v));
                if (!v)
                        return -ENOMEM;
                L->jobs = v;
                *cap = nc;
        }
        uint64_t fsize = L->ck->shards[shard].size;
        L->jobs[L->n_jobs++] = (struct job){.shard = shard, .off = off, .len = len,
                                            .need = off + len > fsize ? fsize - off : len, .slot = -1,
                                            .probing = L->use_direct, .dst = dst};
        return 0;
}

/* Merge the items of each shard into extents, align them, cut them into chunks; or, reading
 * straight into host memory, cut each tensor into chunks. */
static int plan(struct loader *L) {
        size_t cap = 0;
        if (L->to_dst) {
                for (size_t i = 0; i < L->n_items; i++) {
                        const struct dsv_ckpt_tensor *t = L->items[i].t;
                        for (uint64_t o = 0; o < t->nbytes; o += L->chunk) {
                                int r = add_job(L, &cap, t->shard, t->offset + o, MIN(L->chunk, t->nbytes - o),
                                                (uint8_t *)L->items[i].dst + o);
                                if (r < 0)
                                        return r;
                        }
                }
                return 0;
        }
        for (size_t i = 0; i < L->n_items;) {
                int shard = L->items[i].t->shard;
                uint64_t b = L->items[i].t->offset, e = b + L->items[i].t->nbytes;
                size_t j = i + 1;
                while (j < L->n_items && L->items[j].t->shard == shard && L->items[j].t->offset <= e + MERGE_GAP) {
                        uint64_t ej = L->items[j].t->offset + L->items[j].t->nbytes;
                        e = ej > e ? ej : e;
                        j++;
                }
                b = b / ALIGN * ALIGN;
                e = ALIGN_UP(e, ALIGN);
                for (uint64_t off = b; off < e; off += L->chunk) {
                        int r = add_job(L, &cap, shard, off, MIN(L->chunk, e - off), NULL);
                        if (r < 0)
                                return r;
                }
                i = j;
        }
        return 0;
}

/* Calls the progress callback with where the load stands. */
static void report(struct loader *L, uint64_t now, bool final) {
        L->last_report = now;
        /* with asynchronous uploads a byte is done once its upload is */
        struct dsv_load_progress p = {.done = L->async ? L->fenced : L->delivered, .total = L->total,
                                      .bytes_read = L->st->bytes_read,
                                      .bytes_uploaded = L->async ? L->fenced : L->st->bytes_uploaded, .elapsed_ns = now - L->t0,
                                      .upload_ns = L->t_upload1 > L->t_upload0 ? L->t_upload1 - L->t_upload0 : 0,
                                      .device = !L->be->host_memory, .final = final};
        L->o->progress(L->o->ud, &p);
}

/* Copies what job j read to the tensors it overlaps. */
static int deliver(struct loader *L, const struct job *j) {
        const uint8_t *buf = L->bufs[j->slot];
        uint64_t jb = j->off, je = j->off + j->need, up = 0;
        if (j->dst) {
                L->delivered += j->need;
                goto done;
        }
        /* first item of this shard that may overlap: binary search on (shard, end > jb) */
        size_t lo = 0, hi = L->n_items;
        while (lo < hi) {
                size_t mid = (lo + hi) / 2;
                const struct dsv_ckpt_tensor *t = L->items[mid].t;
                if (t->shard < j->shard || (t->shard == j->shard && t->offset + t->nbytes <= jb))
                        lo = mid + 1;
                else
                        hi = mid;
        }
        for (size_t i = lo; i < L->n_items; i++) {
                const struct dsv_ckpt_tensor *t = L->items[i].t;
                if (t->shard != j->shard || t->offset >= je)
                        break;
                uint64_t b = MAX(jb, t->offset), e = MIN(je, t->offset + t->nbytes);
                if (b >= e)
                        continue;
                void *dst = (uint8_t *)L->items[i].dst + (b - t->offset);
                uint64_t t_call = dsv_now_ns();
                if (!L->t_upload0)
                        L->t_upload0 = t_call;
                int r = L->async ? L->be->ops->upload_async(L->be, dst, buf + (b - jb), e - b)
                                 : L->be->ops->upload(L->be, dst, buf + (b - jb), e - b);
                if (!L->async) /* a synchronous upload is done when it returns */
                        L->t_upload1 = dsv_now_ns();
                if (r < 0)
                        return dsv_error_set(L->err, r, "Failed to copy tensor %s to %s memory: %s", t->name, L->be->ops->name,
                                             strerror(-r));
                L->delivered += e - b;
                L->st->bytes_uploaded += e - b;
                up += e - b;
        }
        if (L->async) {
                L->slot_up[j->slot] = up;
                int r = L->be->ops->event_record(L->be, L->events[j->slot]);
                if (r < 0)
                        return dsv_error_set(L->err, r, "Failed to queue the upload of %s to %s memory: %s",
                                             tensor_at(L, j->shard, jb), L->be->ops->name, strerror(-r));
                L->pending[(L->pending_head + L->n_pending++) % L->qd] = j;
        } else {
                L->staged_now -= j->len;
        }
done:
        L->st->bytes_read += j->need;
        L->st->reads++;
        if (L->o->progress) {
                uint64_t now = dsv_now_ns();
                if (now - L->last_report > 250000000ull)
                        report(L, now, false);
        }
        return 0;
}

/* A read is about to land in staging slot j->slot. */
static void stage(struct loader *L, const struct job *j) {
        if (j->dst)
                return;
        L->staged_now += j->len;
        if (L->staged_now > L->st->staging_peak)
                L->st->staging_peak = L->staged_now;
}

/* After an error: lets the queued uploads finish reading their staging buffers (their own
 * errors, if any, come after the first one, which stays in L->err). */
static void drain_uploads(struct loader *L) {
        for (; L->n_pending > 0; L->n_pending--, L->pending_head = (L->pending_head + 1) % L->qd)
                (void)L->be->ops->event_wait(L->be, L->events[L->pending[L->pending_head]->slot]);
}

/* Waits for the oldest queued upload; its staging slot is free again (pushed on free_slots
 * when given). */
static int reclaim(struct loader *L, int *free_slots, unsigned *n_free) {
        const struct job *j = L->pending[L->pending_head];
        L->pending_head = (L->pending_head + 1) % L->qd;
        L->n_pending--;
        int r = L->be->ops->event_wait(L->be, L->events[j->slot]);
        if (r < 0)
                return dsv_error_set(L->err, r, "Failed to upload tensor %s to %s memory: %s", tensor_at(L, j->shard, j->off),
                                     L->be->ops->name, be_error(L->be, r));
        L->staged_now -= j->len;
        L->t_upload1 = dsv_now_ns();
        L->fenced += L->slot_up[j->slot];
        if (free_slots)
                free_slots[(*n_free)++] = j->slot;
        if (L->o->progress && L->t_upload1 - L->last_report > 250000000ull)
                report(L, L->t_upload1, false);
        return 0;
}

static int open_shards(struct loader *L) {
        for (size_t s = 0; s < L->ck->n_shards; s++) {
                const char *path = L->ck->shards[s].path;
                L->io[s].fd_direct = -1;
                L->io[s].fd_buffered = open(path, O_RDONLY | O_CLOEXEC);
                if (L->io[s].fd_buffered < 0)
                        return dsv_error_set(L->err, errno, "Failed to open %s: %s", path, strerror(errno));
                if (L->use_direct) {
                        L->io[s].fd_direct = open(path, O_RDONLY | O_CLOEXEC | O_DIRECT);
                        if (L->io[s].fd_direct >= 0)
                                L->st->direct = true;
                }
        }
        return 0;
}

static int job_fd(struct loader *L, const struct job *j) {
        struct shard_io *io = &L->io[j->shard];
        if (j->probing)
                return io->fd_buffered;
        /* O_DIRECT needs aligned offsets; a short read can leave a misaligned remainder */
        if (io->fd_direct >= 0 && !io->direct_failed && (j->off + j->done) % ALIGN == 0 && j->done % ALIGN == 0)
                return io->fd_direct;
        return io->fd_buffered;
}

/* Handles one completion; returns 1 when the job is finished, 0 when it was resubmitted. */
static int complete(struct loader *L, struct io_uring *ring, struct job *j, int res, bool was_direct) {
        const char *file = L->ck->shards[j->shard].path;
        if (j->probing) {
                /* not (all) in the page cache: read the rest from disk, with O_DIRECT if aligned */
                if (res == -EAGAIN || res == -EOPNOTSUPP || res == -EINVAL || res == 0 ||
                    (res > 0 && j->done + (uint64_t)res < j->need)) {
                        if (res > 0)
                                j->done += (uint64_t)res;
                        j->probing = false;
                        return 0;
                }
                if (res > 0)
                        L->st->cached_reads++;
                was_direct = false;
        }
        if (res == -EAGAIN || res == -EINTR) {
                L->st->retries++;
                return 0;
        }
        if (res == -EINVAL && was_direct) {
                /* the filesystem refuses O_DIRECT after all: buffered from now on */
                L->io[j->shard].direct_failed = true;
                L->st->retries++;
                return 0;
        }
        if (res < 0)
                return dsv_error_set(L->err, -res, "Failed to read tensor %s from %s at offset %llu: %s",
                                     tensor_at(L, j->shard, j->off + j->done), file,
                                     (unsigned long long)(j->off + j->done), strerror(-res));
        if (res == 0 && j->done < j->need)
                return dsv_error_set(L->err, EIO,
                                     "Failed to read tensor %s from %s: unexpected end of file at offset %llu (the file shrank after it was validated?)",
                                     tensor_at(L, j->shard, j->off + j->done), file, (unsigned long long)(j->off + j->done));
        j->done += (uint64_t)res;
        if (j->done < j->need) {
                L->st->short_reads++;
                return 0;
        }
        (void)ring;
        return 1;
}

static int submit(struct loader *L, struct io_uring *ring, struct job *j) {
        struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
        if (!sqe)
                return -EBUSY;
        int fd = job_fd(L, j);
        uint64_t len = fd == L->io[j->shard].fd_direct ? j->len - j->done : j->need - j->done;
        if (j->dst)
                io_uring_prep_read(sqe, fd, j->dst + j->done, (unsigned)len, j->off + j->done);
        else if (L->fixed)
                io_uring_prep_read_fixed(sqe, fd, L->bufs[j->slot] + j->done, (unsigned)len, j->off + j->done, j->slot);
        else
                io_uring_prep_read(sqe, fd, L->bufs[j->slot] + j->done, (unsigned)len, j->off + j->done);
        if (j->probing)
                sqe->rw_flags = RWF_NOWAIT;
        io_uring_sqe_set_data(sqe, j);
        return 0;
}

static int run_uring(struct loader *L, unsigned qd) {
        struct io_uring ring;
        struct iovec *iov = calloc(qd, sizeof(*iov));
        int *free_slots = calloc(qd, sizeof(int));
        unsigned n_free = qd, inflight = 0;
        int r;

        if (!iov || !free_slots) {
                free(iov);
                free(free_slots);
                return -ENOMEM;
        }
        r = io_uring_queue_init(qd, &ring, 0);
        if (r < 0) {
                free(iov);
                free(free_slots);
                return r; /* caller falls back to pread */
        }
        for (unsigned i = 0; i < qd; i++) {
                iov[i] = (struct iovec){L->bufs[i], L->chunk};
                free_slots[i] = (int)i;
        }
        /* registration can fail under a small RLIMIT_MEMLOCK: plain reads then */
        L->fixed = io_uring_register_buffers(&ring, iov, qd) == 0;
        L->st->uring = true;

        while (L->next_job < L->n_jobs || inflight > 0) {
                while (n_free > 0 && L->next_job < L->n_jobs) {
                        struct job *j = &L->jobs[L->next_job++];
                        j->slot = free_slots[--n_free];
                        stage(L, j);
                        if ((r = submit(L, &ring, j)) < 0)
                                goto drain;
                        inflight++;
                }
                /* uploads queued: free their slots for the next reads, oldest first, while
                 * the reads in flight go on (waiting on nothing but the disk is worse) */
                if (L->n_pending > 0 && inflight < (L->qd + 1) / 2) {
                        if ((r = reclaim(L, free_slots, &n_free)) < 0)
                                goto drain;
                        continue;
                }
                r = io_uring_submit(&ring);
                if (r < 0)
                        goto out;
                struct io_uring_cqe *cqe;
                r = io_uring_wait_cqe(&ring, &cqe);
                if (r == -EINTR)
                        continue;
                if (r < 0)
                        goto out;
                do {
                        struct job *j = io_uring_cqe_get_data(cqe);
                        int res = cqe->res;
                        bool was_direct = !j->probing && L->io[j->shard].fd_direct >= 0 && !L->io[j->shard].direct_failed &&
                                          job_fd(L, j) == L->io[j->shard].fd_direct;
                        io_uring_cqe_seen(&ring, cqe);
                        inflight--;
                        r = complete(L, &ring, j, res, was_direct);
                        if (r < 0)
                                goto drain;
                        if (r == 0) {
                                if ((r = submit(L, &ring, j)) < 0)
                                        goto drain;
                                inflight++;
                                continue;
                        }
                        if ((r = deliver(L, j)) < 0)
                                goto drain;
                        if (!L->async) /* else the slot is free once its upload is (reclaim) */
                                free_slots[n_free++] = j->slot;
                } while (io_uring_peek_cqe(&ring, &cqe) == 0);
        }
        r = 0;
        goto out;
drain:
        /* let reads in flight finish before their buffers go away */
        io_uring_submit(&ring);
        while (inflight > 0) {
                struct io_uring_cqe *cqe;
                if (io_uring_wait_cqe(&ring, &cqe) < 0)
                        break;
                io_uring_cqe_seen(&ring, cqe);
                inflight--;
        }
out:
        /* uploads still reading staging buffers (error paths; the end waits in the caller) */
        if (r < 0)
                drain_uploads(L);
        io_uring_queue_exit(&ring);
        free(iov);
        free(free_slots);
        return r;
}

static int run_pread(struct loader *L) {
        for (; L->next_job < L->n_jobs; L->next_job++) {
                struct job *j = &L->jobs[L->next_job];
                j->slot = 0;
                j->probing = false;
                stage(L, j);
                while (j->done < j->need) {
                        int fd = job_fd(L, j);
                        bool direct = fd == L->io[j->shard].fd_direct;
                        uint64_t len = direct ? j->len - j->done : j->need - j->done;
                        ssize_t k = pread(fd, (j->dst ? j->dst : L->bufs[0]) + j->done, len, (off_t)(j->off + j->done));
                        int r = complete(L, NULL, j, k < 0 ? -errno : (int)k, direct);
                        if (r < 0)
                                return r;
                        if (r == 1)
                                break;
                }
                int r = deliver(L, j);
                if (r < 0) {
                        drain_uploads(L);
                        return r;
                }
                while (L->n_pending > 0) /* one staging buffer: its upload must finish first */
                        if ((r = reclaim(L, NULL, NULL)) < 0)
                                return r;
        }
        return 0;
}

int dsv_load_tensors(const struct dsv_checkpoint *ck, struct dsv_load_item *items, size_t n, struct dsv_backend *be,
                     const struct dsv_load_opts *opts, struct dsv_load_stats *stats, struct dsv_error *err) {
        struct dsv_load_opts def = {0};
        struct dsv_load_stats st = {0};
        const struct dsv_load_opts *o = opts ? opts : &def;
        struct loader L = {.ck = ck, .items = items, .n_items = n, .be = be, .o = o, .st = &st, .err = err};
        unsigned qd = o->queue_depth ? o->queue_depth : 8;
        int r;

        L.chunk = o->chunk_size ? ALIGN_UP(o->chunk_size, ALIGN) : (2u << 20);
        if (o->no_uring)
                qd = 1;
        qsort(items, n, sizeof(*items), cmp_item);
        for (size_t i = 0; i < n; i++)
                L.total += items[i].t->nbytes;
        L.io = calloc(ck->n_shards, sizeof(*L.io));
        L.bufs = calloc(qd, sizeof(*L.bufs));
        if (!L.io || !L.bufs) {
                r = -ENOMEM;
                goto out;
        }
        for (size_t s = 0; s < ck->n_shards; s++)
                L.io[s].fd_direct = L.io[s].fd_buffered = -1;
        {
                uint64_t avail = mem_available();
                L.use_direct = !o->no_direct && (o->direct || avail == 0 || L.total > avail / 2);
                L.to_dst = !L.use_direct && be->host_memory;
        }
        L.async = !be->host_memory && dsv_backend_has_async_upload(be) && !o->no_async;
        L.qd = qd;
        if (L.async) {
                if ((r = check_memlock(&L, qd)) < 0)
                        goto out;
                L.events = calloc(qd, sizeof(*L.events));
                L.pending = calloc(qd, sizeof(*L.pending));
                L.slot_up = calloc(qd, sizeof(*L.slot_up));
                if (!L.events || !L.pending || !L.slot_up) {
                        r = -ENOMEM;
                        goto out;
                }
        }
        for (unsigned i = 0; i < qd; i++) {
                if (L.async) {
                        if ((r = be->ops->alloc_host(be, L.chunk, (void **)&L.bufs[i])) < 0 ||
                            (r = be->ops->event_new(be, &L.events[i])) < 0) {
                                r = dsv_error_set(err, r, "Cannot set up %u pinned staging buffers of %zu bytes for %s uploads: %s", qd,
                                                  L.chunk, be->ops->name, be_error(be, r));
                                goto out;
                        }
                } else if (posix_memalign((void **)&L.bufs[i], ALIGN, L.chunk) != 0) {
                        L.bufs[i] = NULL;
                        r = -ENOMEM;
                        goto out;
                }
                if (!L.to_dst)
                        st.staging_bytes += L.chunk;
        }
        st.pinned = L.async;
        st.queue_depth = qd;
        if ((r = open_shards(&L)) < 0 || (r = plan(&L)) < 0)
                goto out;
        L.t0 = L.last_report = dsv_now_ns();
        if (o->progress) /* the total is known from here on */
                report(&L, L.t0, false);
        r = o->no_uring ? -ENOSYS : run_uring(&L, qd);
        if (r < 0 && !st.uring && L.next_job == 0) {
                /* io_uring unavailable here: plain pread */
                st.uring = false;
                L.next_job = 0;
                r = run_pread(&L);
        }
        while (r >= 0 && L.n_pending > 0) /* the last uploads */
                r = reclaim(&L, NULL, NULL);
        if (r < 0)
                goto out;
        if (L.delivered != L.total) {
                r = dsv_error_set(err, EIO, "Loader delivered %llu of %llu tensor bytes", (unsigned long long)L.delivered,
                                  (unsigned long long)L.total);
                goto out;
        }
        st.bytes_tensors = L.delivered;
        st.elapsed_ns = dsv_now_ns() - L.t0;
        st.upload_ns = L.t_upload1 > L.t_upload0 ? L.t_upload1 - L.t_upload0 : 0;
        if (o->progress)
                report(&L, L.t0 + st.elapsed_ns, true);
        if (stats)
                *stats = st;
out:
        if (r < 0 && L.async)
                drain_uploads(&L);
        if (L.bufs)
                for (unsigned i = 0; i < qd; i++) {
                        if (L.async && L.bufs[i])
                                be->ops->free_host(be, L.bufs[i], L.chunk);
                        else
                                free(L.bufs[i]);
                }
        if (L.events)
                for (unsigned i = 0; i < qd; i++)
                        if (L.events[i])
                                be->ops->event_free(be, L.events[i]);
        free(L.events);
        free(L.pending);
        free(L.slot_up);
        if (L.io)
                for (size_t s = 0; s < ck->n_shards; s++) {
                        if (L.io[s].fd_direct >= 0)
                                close(L.io[s].fd_direct);
                        if (L.io[s].fd_buffered >= 0)
                                close(L.io[s].fd_buffered);
                }
        free(L.io);
        free(L.bufs);
        free(L.jobs);
        return r;
}
