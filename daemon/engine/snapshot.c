/* Session snapshots (see snapshot.h). */
#include "config.h"

#include "daemon/engine/snapshot.h"

#include <dirent.h>
#include <fcntl.h>
#include <liburing.h>
#include <pthread.h>
#include <sys/stat.h>
#include <time.h>

#include "daemon/util.h"
#include "kernels/numerics.h"

#define SNAP_MAGIC "DSV32KVS"
#define SNAP_VERSION 1u
#define SNAP_HEADER 256u
#define SNAP_NAME_MAX 72
#define SNAP_FLAG_PINNED 0x1u
#define QUEUE_DEPTH 16

/* The header on disk (little-endian; this daemon only runs on little-endian hosts). */
struct snap_header {
        char magic[8];
        uint32_t version, header_bytes;
        uint64_t fingerprint;
        uint32_t kv_format, page_tokens, n_layers, kv_lora, rope, index_dim;
        uint64_t layer_page_bytes;
        uint32_t uid, flags;
        char name[SNAP_NAME_MAX];
        uint32_t n_tokens, n_kv_tokens, n_exact, n_pages;
        uint64_t data_bytes;
        uint64_t data_sum;
        uint64_t saved_unix_ns;
        /* positions with the MTP layer's records (at most n_kv_tokens - 1: the last one's needs a
         * token the file does not hold); 0 in files written before it existed */
        uint32_t n_mtp;
        uint8_t reserved[SNAP_HEADER - 188]; /* zero */
        uint64_t header_sum;
};
_Static_assert(sizeof(struct snap_header) == SNAP_HEADER, "snapshot header size");
_Static_assert(offsetof(struct snap_header, header_sum) == SNAP_HEADER - 8, "snapshot header checksum last");

/* A checksum of one piece (the tokens, then each page): four lanes of 64-bit words. */
static uint64_t piece_sum(const void *data, size_t n) {
        const uint8_t *p = data;
        uint64_t l[4] = {0x243f6a8885a308d3ull, 0x13198a2e03707344ull, 0xa4093822299f31d0ull, 0x082efa98ec4e6c89ull};
        size_t i = 0;
        for (; i + 32 <= n; i += 32)
                for (int k = 0; k < 4; k++) {
                        uint64_t w;
                        memcpy(&w, p + i + 8 * k, 8);
                        l[k] = (l[k] ^ w) * 0x9e3779b97f4a7c15ull;
                        l[k] ^= l[k] >> 31;
                }
        for (; i < n; i++)
                l[i & 3] = (l[i & 3] ^ p[i]) * 0xbf58476d1ce4e5b9ull;
        return dsv_mix64(l[0] ^ dsv_mix64(l[1] ^ dsv_mix64(l[2] ^ dsv_mix64(l[3] ^ n))));
}

static uint64_t sum_add(uint64_t total, uint64_t piece) { return dsv_mix64(total ^ piece) + 0x632be59bd9b4e019ull; }

struct job {
        struct job *next;
        bool remove;
        char path[4352], tmp[4360];
        struct snap_header h;
        int32_t *tokens;
        size_t token_bytes; /* padded to 8 */
        int32_t *pages;     /* referenced until reaped */
        int n_pages;
        int rank;           /* the pool holding them (s->kv[rank]) */
        uint8_t *copy;      /* the pages' bytes when the pool is not host memory */
        int result;
};

struct dsv_snapshots {
        char *dir;
        uint64_t max_bytes, fingerprint;
        struct dsv_kv_pool **kv; /* one pool per data-parallel rank, of the same geometry */
        int n_kv;
        pthread_t thread;
        bool started, stop;
        pthread_mutex_t lock;
        pthread_cond_t cond, idle_cond;
        struct job *queue, *queue_tail, *done;
        int pending;
        struct io_uring ring;
        bool uring;
};

static void job_free(struct job *j) {
        if (!j)
                return;
        free(j->tokens);
        free(j->pages);
        free(j->copy);
        free(j);
}

static int file_name(const struct dsv_snapshots *s, uid_t uid, const char *name, char *buf, size_t cap) {
        int n = snprintf(buf, cap, "%s/%u-%s.kvs", s->dir, (unsigned)uid, name);
        return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

/* ------------------------------------------------------------------ writing (writer thread) */

struct piece {
        const void *buf;
        size_t len;
        off_t off;
};

static int write_pieces_pwrite(int fd, const struct piece *pc, int n) {
        for (int i = 0; i < n; i++) {
                size_t done = 0;
                while (done < pc[i].len) {
                        ssize_t w = pwrite(fd, (const uint8_t *)pc[i].buf + done, pc[i].len - done, pc[i].off + (off_t)done);
                        if (w < 0 && errno == EINTR)
                                continue;
                        if (w <= 0)
                                return w < 0 ? dsv_negerrno() : -EIO;
                        done += (size_t)w;
                }
        }
        return fdatasync(fd) < 0 ? dsv_negerrno() : 0;
}

/* Writes every piece with up to QUEUE_DEPTH writes in flight (a short write is resubmitted
 * for its rest), then an fsync. */
static int write_pieces_uring(struct dsv_snapshots *s, int fd, struct piece *pc, int n) {
        int next = 0, inflight = 0, r = 0;
        while ((next < n || inflight > 0) && r == 0) {
                while (next < n && inflight < QUEUE_DEPTH) {
                        struct io_uring_sqe *sqe = io_uring_get_sqe(&s->ring);
                        if (!sqe)
                                break;
                        io_uring_prep_write(sqe, fd, pc[next].buf, (unsigned)pc[next].len, (uint64_t)pc[next].off);
                        io_uring_sqe_set_data(sqe, &pc[next]);
                        next++;
                        inflight++;
                }
                if ((r = io_uring_submit_and_wait(&s->ring, 1)) < 0) {
                        if (r == -EINTR) {
                                r = 0;
                                continue;
                        }
                        break;
                }
                r = 0;
                struct io_uring_cqe *cqe;
                while (io_uring_peek_cqe(&s->ring, &cqe) == 0) {
                        struct piece *p = io_uring_cqe_get_data(cqe);
                        int res = cqe->res;
                        io_uring_cqe_seen(&s->ring, cqe);
                        inflight--;
                        if (res < 0) {
                                r = res;
                        } else if ((size_t)res < p->len) {
                                /* short: the rest, synchronously (rare) */
                                struct piece rest = {(const uint8_t *)p->buf + res, p->len - (size_t)res, p->off + res};
                                if (res == 0)
                                        r = -EIO;
                                else if ((r = write_pieces_pwrite(fd, &rest, 1)) < 0)
                                        break;
                        }
                }
        }
        while (inflight > 0) { /* an error: collect what is still in flight */
                struct io_uring_cqe *cqe;
                if (io_uring_wait_cqe(&s->ring, &cqe) < 0)
                        break;
                io_uring_cqe_seen(&s->ring, cqe);
                inflight--;
        }
        if (r < 0)
                return r;
        struct io_uring_sqe *sqe = io_uring_get_sqe(&s->ring);
        if (!sqe)
                return fdatasync(fd) < 0 ? dsv_negerrno() : 0;
        io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
        if ((r = io_uring_submit_and_wait(&s->ring, 1)) < 0)
                return r;
        struct io_uring_cqe *cqe;
        if ((r = io_uring_wait_cqe(&s->ring, &cqe)) < 0)
                return r;
        r = cqe->res < 0 ? cqe->res : 0;
        io_uring_cqe_seen(&s->ring, cqe);
        return r;
}

static int run_job(struct dsv_snapshots *s, struct job *j) {
        const struct dsv_kv_pool *kv = j->remove ? NULL : s->kv[j->rank];
        const size_t pb = kv ? kv->page_bytes : 0;
        struct piece *pc;
        _cleanup_close_ int fd = -1;
        uint64_t total = 0;
        int n = 0, r;

        if (j->remove) {
                if (unlink(j->path) < 0 && errno != ENOENT)
                        return dsv_negerrno();
                return 0;
        }
        pc = calloc((size_t)j->n_pages + 2, sizeof(*pc));
        if (!pc)
                return -ENOMEM;
        /* the data first (its checksum goes into the header), the header last */
        pc[n++] = (struct piece){j->tokens, j->token_bytes, SNAP_HEADER};
        total = sum_add(total, piece_sum(j->tokens, j->token_bytes));
        for (int i = 0; i < j->n_pages; i++) {
                const void *src = j->copy ? j->copy + (size_t)i * pb : (const uint8_t *)kv->base + (size_t)j->pages[i] * pb;
                pc[n++] = (struct piece){src, pb, (off_t)(SNAP_HEADER + j->token_bytes + (size_t)i * pb)};
                total = sum_add(total, piece_sum(src, pb));
        }
        j->h.data_sum = total;
        j->h.header_sum = piece_sum(&j->h, SNAP_HEADER - 8);
        pc[n++] = (struct piece){&j->h, SNAP_HEADER, 0};
        fd = open(j->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0) {
                free(pc);
                return dsv_negerrno();
        }
        r = s->uring ? write_pieces_uring(s, fd, pc, n) : write_pieces_pwrite(fd, pc, n);
        free(pc);
        if (r < 0) {
                unlink(j->tmp);
                return r;
        }
        if (getenv("DSV32_TEST_SNAPSHOT_STALL_MS")) /* tests: a window to kill the daemon mid-write */
                usleep((useconds_t)atoi(getenv("DSV32_TEST_SNAPSHOT_STALL_MS")) * 1000);
        if (rename(j->tmp, j->path) < 0) {
                r = dsv_negerrno();
                unlink(j->tmp);
                return r;
        }
        {
                _cleanup_close_ int dfd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (dfd >= 0)
                        fsync(dfd);
        }
        return 0;
}

static void *writer_main(void *ud) {
        struct dsv_snapshots *s = ud;
        pthread_mutex_lock(&s->lock);
        for (;;) {
                while (!s->queue && !s->stop)
                        pthread_cond_wait(&s->cond, &s->lock);
                if (!s->queue)
                        break;
                struct job *j = s->queue;
                s->queue = j->next;
                if (!s->queue)
                        s->queue_tail = NULL;
                pthread_mutex_unlock(&s->lock);
                j->result = run_job(s, j);
                pthread_mutex_lock(&s->lock);
                j->next = s->done;
                s->done = j;
                pthread_cond_broadcast(&s->idle_cond);
        }
        pthread_mutex_unlock(&s->lock);
        return NULL;
}

static void enqueue(struct dsv_snapshots *s, struct job *j) {
        pthread_mutex_lock(&s->lock);
        j->next = NULL;
        if (s->queue_tail)
                s->queue_tail->next = j;
        else
                s->queue = j;
        s->queue_tail = j;
        s->pending++;
        pthread_cond_signal(&s->cond);
        pthread_mutex_unlock(&s->lock);
}

/* ------------------------------------------------------------------ engine side */

int dsv_snapshots_open(const struct dsv_snapshot_opts *o, struct dsv_kv_pool *const *kv, int n_kv,
                       struct dsv_snapshots **ret) {
        struct dsv_snapshots *s;
        int r;
        if (n_kv < 1 || !kv)
                return -EINVAL;
        if (!(s = calloc(1, sizeof(*s))))
                return -ENOMEM;
        if (!(s->kv = malloc((size_t)n_kv * sizeof(*s->kv)))) {
                free(s);
                return -ENOMEM;
        }
        memcpy(s->kv, kv, (size_t)n_kv * sizeof(*s->kv));
        s->n_kv = n_kv;
        s->dir = strdup(o->dir);
        s->max_bytes = o->max_bytes;
        s->fingerprint = o->fingerprint;
        pthread_mutex_init(&s->lock, NULL);
        pthread_cond_init(&s->cond, NULL);
        pthread_cond_init(&s->idle_cond, NULL);
        if (!s->dir) {
                dsv_snapshots_free(s);
                return -ENOMEM;
        }
        if (dsv_mkdir_p(s->dir, 0700) < 0 && errno != EEXIST) {
                r = dsv_negerrno();
                dsv_snapshots_free(s);
                return r;
        }
        s->uring = io_uring_queue_init(QUEUE_DEPTH + 1, &s->ring, 0) == 0;
        if ((r = -pthread_create(&s->thread, NULL, writer_main, s)) < 0) {
                dsv_snapshots_free(s);
                return r;
        }
        s->started = true;
        *ret = s;
        return 0;
}

int dsv_snapshots_reap(struct dsv_snapshots *s, int *failed) {
        struct job *done;
        int n = 0, bad = 0;
        pthread_mutex_lock(&s->lock);
        done = s->done;
        s->done = NULL;
        pthread_mutex_unlock(&s->lock);
        while (done) {
                struct job *j = done;
                done = j->next;
                for (int i = 0; i < j->n_pages; i++)
                        dsv_kv_page_unref(s->kv[j->rank], j->pages[i]);
                if (j->result < 0) {
                        bad++;
                        log_error("Cannot %s the snapshot %s: %s", j->remove ? "remove" : "write", j->path, strerror(-j->result));
                } else if (!j->remove) {
                        log_debug("Session '%s' of uid %u saved: %u tokens, %d pages to %s", j->h.name, (unsigned)j->h.uid,
                                  j->h.n_kv_tokens, j->n_pages, j->path);
                }
                pthread_mutex_lock(&s->lock);
                s->pending--;
                pthread_mutex_unlock(&s->lock);
                job_free(j);
                n++;
        }
        if (failed)
                *failed = bad;
        return n;
}

int dsv_snapshots_pending(struct dsv_snapshots *s) {
        int n;
        pthread_mutex_lock(&s->lock);
        n = s->pending;
        pthread_mutex_unlock(&s->lock);
        return n;
}

void dsv_snapshots_flush(struct dsv_snapshots *s) {
        pthread_mutex_lock(&s->lock);
        while (s->queue || (s->pending > 0 && !s->done))
                pthread_cond_wait(&s->idle_cond, &s->lock);
        pthread_mutex_unlock(&s->lock);
        while (dsv_snapshots_reap(s, NULL) > 0 || dsv_snapshots_pending(s) > 0) {
                pthread_mutex_lock(&s->lock);
                while (s->pending > 0 && !s->done)
                        pthread_cond_wait(&s->idle_cond, &s->lock);
                pthread_mutex_unlock(&s->lock);
        }
}

void dsv_snapshots_free(struct dsv_snapshots *s) {
        if (!s)
                return;
        if (s->started) {
                pthread_mutex_lock(&s->lock);
                s->stop = true;
                pthread_cond_signal(&s->cond);
                pthread_mutex_unlock(&s->lock);
                pthread_join(s->thread, NULL);
                dsv_snapshots_reap(s, NULL);
        }
        if (s->uring)
                io_uring_queue_exit(&s->ring);
        pthread_cond_destroy(&s->cond);
        pthread_cond_destroy(&s->idle_cond);
        pthread_mutex_destroy(&s->lock);
        free(s->dir);
        free(s->kv);
        free(s);
}

/* Bytes of the files in the directory (the cap), not counting the one being replaced. */
static uint64_t disk_usage(const struct dsv_snapshots *s, const char *except) {
        DIR *d = opendir(s->dir);
        struct dirent *e;
        uint64_t total = 0;
        if (!d)
                return 0;
        while ((e = readdir(d))) {
                char path[4352];
                struct stat st;
                size_t n = strlen(e->d_name);
                if (n < 4 || strcmp(e->d_name + n - 4, ".kvs") != 0)
                        continue;
                snprintf(path, sizeof(path), "%s/%s", s->dir, e->d_name);
                if (strcmp(path, except) != 0 && stat(path, &st) == 0)
                        total += (uint64_t)st.st_size;
        }
        closedir(d);
        return total;
}

int dsv_snapshots_save(struct dsv_snapshots *s, const struct dsv_snapshot_session *ss) {
        const struct dsv_kv_seq *q = ss->seq;
        struct dsv_kv_pool *kv;
        struct job *j;
        int n_pages, r;
        uint64_t bytes;
        struct timespec ts;

        if (strlen(ss->name) >= SNAP_NAME_MAX)
                return -ENAMETOOLONG;
        if (q->rank < 0 || q->rank >= s->n_kv)
                return -EINVAL;
        kv = s->kv[q->rank];
        const struct dsv_kv_layout *L = &kv->layout;
        n_pages = DIV_ROUND_UP(q->len, L->page_tokens);
        j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;
        j->rank = q->rank;
        if ((r = file_name(s, ss->uid, ss->name, j->path, sizeof(j->path))) < 0) {
                job_free(j);
                return r;
        }
        snprintf(j->tmp, sizeof(j->tmp), "%s.tmp", j->path);
        j->token_bytes = ALIGN_UP((size_t)q->len * sizeof(int32_t), 8);
        bytes = SNAP_HEADER + j->token_bytes + (uint64_t)n_pages * kv->page_bytes;
        if (s->max_bytes && disk_usage(s, j->path) + bytes > s->max_bytes) {
                job_free(j);
                return -EFBIG;
        }
        j->tokens = calloc(1, MAX(j->token_bytes, 8));
        j->pages = malloc((size_t)MAX(n_pages, 1) * sizeof(int32_t));
        if (!j->tokens || !j->pages) {
                job_free(j);
                return -ENOMEM;
        }
        memcpy(j->tokens, ss->tokens, (size_t)q->len * sizeof(int32_t));
        if (!dsv_kv_pool_host(kv) && n_pages) {
                /* the writer cannot read device memory (or another node's): a host copy, made now */
                j->copy = malloc((size_t)n_pages * kv->page_bytes);
                if (!j->copy) {
                        job_free(j);
                        return -ENOMEM;
                }
                if ((r = dsv_kv_pages_download(kv, q->pages, n_pages, j->copy)) < 0) {
                        job_free(j);
                        return r;
                }
        }
        memcpy(j->h.magic, SNAP_MAGIC, 8);
        j->h.version = SNAP_VERSION;
        j->h.header_bytes = SNAP_HEADER;
        j->h.fingerprint = s->fingerprint;
        j->h.kv_format = (uint32_t)L->format;
        j->h.page_tokens = (uint32_t)L->page_tokens;
        j->h.n_layers = (uint32_t)L->n_layers;
        j->h.kv_lora = (uint32_t)L->kv_lora;
        j->h.rope = (uint32_t)L->rope;
        j->h.index_dim = (uint32_t)L->index_dim;
        j->h.layer_page_bytes = L->layer_page_bytes;
        j->h.uid = (uint32_t)ss->uid;
        j->h.flags = ss->pinned ? SNAP_FLAG_PINNED : 0;
        snprintf(j->h.name, sizeof(j->h.name), "%s", ss->name);
        j->h.n_tokens = (uint32_t)q->len;
        j->h.n_kv_tokens = (uint32_t)q->len;
        j->h.n_exact = (uint32_t)MIN(ss->n_exact, q->len);
        j->h.n_mtp = (uint32_t)MAX(MIN(q->mtp_len, q->len - 1), 0);
        j->h.n_pages = (uint32_t)n_pages;
        j->h.data_bytes = bytes - SNAP_HEADER;
        clock_gettime(CLOCK_REALTIME, &ts);
        j->h.saved_unix_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
        j->n_pages = n_pages;
        for (int i = 0; i < n_pages; i++) {
                j->pages[i] = q->pages[i];
                dsv_kv_page_ref(kv, q->pages[i]); /* the session may go on: it copies instead of writing here */
        }
        enqueue(s, j);
        return 0;
}

void dsv_snapshots_remove(struct dsv_snapshots *s, uid_t uid, const char *name) {
        struct job *j = calloc(1, sizeof(*j));
        if (!j || file_name(s, uid, name, j->path, sizeof(j->path)) < 0) {
                job_free(j);
                return;
        }
        j->remove = true;
        enqueue(s, j);
}

/* ------------------------------------------------------------------ restore */

static int read_exact(int fd, void *buf, size_t n, off_t off) {
        size_t done = 0;
        while (done < n) {
                ssize_t r = pread(fd, (uint8_t *)buf + done, n - done, off + (off_t)done);
                if (r < 0 && errno == EINTR)
                        continue;
                if (r <= 0)
                        return r < 0 ? dsv_negerrno() : -ENODATA;
                done += (size_t)r;
        }
        return 0;
}

/* Checks and loads one file; why says what is wrong with it. */
static int restore_one(struct dsv_snapshots *s, const char *path, const char *fname, dsv_snapshot_restore_fn cb, void *ud,
                       char *why, size_t cap) {
        const struct dsv_kv_layout *L = &s->kv[0]->layout; /* every pool has the same geometry */
        const size_t pb = s->kv[0]->page_bytes;
        struct dsv_kv_pool *kv = s->kv[0];
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct snap_header h;
        struct dsv_kv_seq seq = {0};
        struct stat st;
        int32_t *tokens = NULL;
        uint8_t *page = NULL;
        uint64_t total = 0, token_bytes;
        char want_name[SNAP_NAME_MAX + 32];
        int r;

        if (fd < 0 || fstat(fd, &st) < 0) {
                snprintf(why, cap, "cannot read it: %s", strerror(errno));
                return -EIO;
        }
        if (st.st_size < (off_t)SNAP_HEADER || read_exact(fd, &h, SNAP_HEADER, 0) < 0) {
                snprintf(why, cap, "truncated: %lld bytes, shorter than its header", (long long)st.st_size);
                return -EBADMSG;
        }
        if (memcmp(h.magic, SNAP_MAGIC, 8) != 0) {
                snprintf(why, cap, "not a dsv32d session snapshot (bad magic)");
                return -EBADMSG;
        }
        if (h.version != SNAP_VERSION || h.header_bytes != SNAP_HEADER) {
                snprintf(why, cap, "snapshot version %u, this dsv32d reads %u", h.version, SNAP_VERSION);
                return -EBADMSG;
        }
        if (piece_sum(&h, SNAP_HEADER - 8) != h.header_sum) {
                snprintf(why, cap, "corrupt header (checksum mismatch)");
                return -EBADMSG;
        }
        if (h.fingerprint != s->fingerprint) {
                snprintf(why, cap, "written for another model or numerics (fingerprint %016llx, this model %016llx)",
                         (unsigned long long)h.fingerprint, (unsigned long long)s->fingerprint);
                return -ESTALE;
        }
        if (h.kv_format != (uint32_t)L->format || h.page_tokens != (uint32_t)L->page_tokens ||
            h.n_layers != (uint32_t)L->n_layers || h.kv_lora != (uint32_t)L->kv_lora || h.rope != (uint32_t)L->rope ||
            h.index_dim != (uint32_t)L->index_dim || h.layer_page_bytes != L->layer_page_bytes) {
                snprintf(why, cap, "written with another KV layout");
                return -ESTALE;
        }
        h.name[SNAP_NAME_MAX - 1] = 0;
        snprintf(want_name, sizeof(want_name), "%u-%s.kvs", h.uid, h.name);
        if (strcmp(want_name, fname) != 0 || !h.name[0]) {
                snprintf(why, cap, "its name does not match the session it holds (%s)", want_name);
                return -EBADMSG;
        }
        token_bytes = ALIGN_UP((uint64_t)h.n_kv_tokens * 4, 8);
        if (h.n_tokens != h.n_kv_tokens || h.n_exact > h.n_kv_tokens || (h.n_mtp && h.n_mtp >= h.n_kv_tokens) ||
            h.n_pages != (uint32_t)DIV_ROUND_UP(h.n_kv_tokens, (uint32_t)L->page_tokens) ||
            h.data_bytes != token_bytes + (uint64_t)h.n_pages * pb ||
            (uint64_t)st.st_size != SNAP_HEADER + h.data_bytes) {
                snprintf(why, cap, "truncated or inconsistent: %lld bytes, its header describes %llu", (long long)st.st_size,
                         (unsigned long long)(SNAP_HEADER + h.data_bytes));
                return -EBADMSG;
        }
        /* onto the rank with the most pages to give (the first of equals) */
        for (int k = 1; k < s->n_kv; k++)
                if (dsv_kv_pool_available(s->kv[k]) > dsv_kv_pool_available(kv)) {
                        kv = s->kv[k];
                        seq.rank = k;
                }
        if ((int)h.n_pages > dsv_kv_pool_available(kv)) {
                snprintf(why, cap, "needs %u KV pages, the pool has %d free (raise kv-cache-mb)", h.n_pages,
                         dsv_kv_pool_available(kv));
                return -ENOSPC;
        }
        tokens = malloc(MAX(token_bytes, 8));
        page = malloc(pb);
        if (!tokens || !page) {
                r = -ENOMEM;
                snprintf(why, cap, "out of memory");
                goto out;
        }
        if ((r = read_exact(fd, tokens, token_bytes, SNAP_HEADER)) < 0) {
                snprintf(why, cap, "cannot read its tokens: %s", strerror(-r));
                goto out;
        }
        total = sum_add(total, piece_sum(tokens, token_bytes));
        if ((r = dsv_kv_seq_reserve(kv, &seq, (int)h.n_kv_tokens)) < 0) {
                snprintf(why, cap, "no KV pages for it: %s", strerror(-r));
                goto out;
        }
        for (uint32_t i = 0; i < h.n_pages; i++) {
                if ((r = read_exact(fd, page, pb, (off_t)(SNAP_HEADER + token_bytes + (uint64_t)i * pb))) < 0) {
                        snprintf(why, cap, "cannot read page %u: %s", i, strerror(-r));
                        goto out;
                }
                total = sum_add(total, piece_sum(page, pb));
                if ((r = dsv_kv_page_upload(kv, seq.pages[i], page)) < 0) {
                        snprintf(why, cap, "cannot upload page %u: %s", i, strerror(-r));
                        goto out;
                }
        }
        if (total != h.data_sum) {
                snprintf(why, cap, "corrupt data (checksum mismatch)");
                r = -EBADMSG;
                goto out;
        }
        for (uint32_t i = 0; i < h.n_kv_tokens; i++)
                if (tokens[i] < 0) {
                        snprintf(why, cap, "a negative token id");
                        r = -EBADMSG;
                        goto out;
                }
        seq.len = (int)h.n_kv_tokens;
        seq.mtp_len = (int)h.n_mtp;
        r = cb(ud, (uid_t)h.uid, h.name, h.flags & SNAP_FLAG_PINNED, tokens, (int)h.n_kv_tokens, &seq, (int)h.n_exact);
        if (r < 0)
                snprintf(why, cap, "%s", strerror(-r));
out:
        dsv_kv_seq_release(kv, &seq); /* empty when cb took it */
        free(tokens);
        free(page);
        return r;
}

int dsv_snapshots_restore(struct dsv_snapshots *s, dsv_snapshot_restore_fn cb, void *ud) {
        DIR *d = opendir(s->dir);
        struct dirent *e;
        int n = 0;
        if (!d)
                return errno == ENOENT ? 0 : dsv_negerrno();
        while ((e = readdir(d))) {
                char path[4352], why[512] = "";
                size_t len = strlen(e->d_name);
                snprintf(path, sizeof(path), "%s/%s", s->dir, e->d_name);
                if (len > 8 && strcmp(e->d_name + len - 8, ".kvs.tmp") == 0) {
                        log_notice("Snapshot %s: removing a write that did not finish (the daemon stopped during it)", path);
                        unlink(path);
                        continue;
                }
                if (len < 5 || strcmp(e->d_name + len - 4, ".kvs") != 0)
                        continue;
                if (restore_one(s, path, e->d_name, cb, ud, why, sizeof(why)) < 0) {
                        log_warning("Snapshot %s skipped: %s", path, why);
                        continue;
                }
                n++;
        }
        closedir(d);
        return n;
}
