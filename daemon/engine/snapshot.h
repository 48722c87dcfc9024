/* Sessions that survive a restart: each session with KV pages is written to the state
 * directory as one file, `<uid>-<name>.kvs`, and read back at the next start.
 *
 *   +---------------------------+---------------------------+---------------------------------+
 *   | header (256 bytes)        | tokens: n_tokens x i32    | pages: n_pages x page_bytes     |
 *   | magic "DSV32KVS", version,| (padded to 8 bytes)       | every layer of a page, in the   |
 *   | model fingerprint, KV     |                           | pool's layout (kernels/backend.h)|
 *   | layout, uid, name, flags, |                           |                                 |
 *   | counts, data checksum,    |                           |                                 |
 *   | header checksum           |                           |                                 |
 *   +---------------------------+---------------------------+---------------------------------+
 *
 * A file is written to `<file>.tmp` with io_uring, flushed (fsync), then renamed over the old
 * one: a crash (or SIGKILL) in the middle leaves the previous snapshot whole. Writing runs on
 * a thread of its own: the engine thread only takes a reference on the session's pages (so a
 * request that continues the session copies its tail page instead of writing into it) and
 * hands them over; when the KV pool is not host memory it also downloads them. A file is
 * rejected at restore, with a log line naming it and why, when its magic, version, sizes or
 * checksums are wrong (truncated, corrupt, not ours) or when it was written for another model
 * or KV layout (stale, foreign); the daemon starts normally. Disk usage is capped: a session
 * that would exceed the cap is not written (logged). Not thread-safe except where noted:
 * called on the engine thread. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "daemon/kv_cache.h"

struct dsv_snapshots;

struct dsv_snapshot_opts {
        const char *dir;        /* the state directory (created when missing) */
        uint64_t max_bytes;     /* disk cap over all files (0: none) */
        uint64_t fingerprint;   /* the model (dsv_runtime) */
};

/* kv: one pool per data-parallel rank (n_kv >= 1, the same geometry; dsv32d's engine, struct
 * dsv_core). A session is saved from its sequence's pool (dsv_kv_seq.rank) and restored onto
 * the pool with the most pages available (the first of equals): a file does not say which
 * rank it came from, and a restart may have another rank count. */
int dsv_snapshots_open(const struct dsv_snapshot_opts *o, struct dsv_kv_pool *const *kv, int n_kv,
                       struct dsv_snapshots **ret);
/* Waits for the writes in flight, drops their page references and frees everything. */
void dsv_snapshots_free(struct dsv_snapshots *s);

/* One session to write: the pool's pages are referenced until the write completes. */
struct dsv_snapshot_session {
        uid_t uid;
        const char *name;
        bool pinned;
        const int32_t *tokens;
        const struct dsv_kv_seq *seq; /* tokens[0, seq->len) are its KV */
        int n_exact;
};
/* Queues the write; 0, -EFBIG over the disk cap, or another negative errno. */
int dsv_snapshots_save(struct dsv_snapshots *s, const struct dsv_snapshot_session *ss);
/* Removes the session's file (it was closed). */
void dsv_snapshots_remove(struct dsv_snapshots *s, uid_t uid, const char *name);
/* Completed writes: drops their page references; returns how many completed since the last
 * call and how many of them failed. */
int dsv_snapshots_reap(struct dsv_snapshots *s, int *failed);
/* Writes still queued or running. */
int dsv_snapshots_pending(struct dsv_snapshots *s);
/* Blocks until nothing is queued or running, then reaps. */
void dsv_snapshots_flush(struct dsv_snapshots *s);

/* Restore: calls cb for each valid file with its contents (the pages already allocated in the
 * pool and uploaded into seq, which cb takes over, tokens valid during the call); invalid
 * files are logged and skipped, leftovers of interrupted writes removed. Returns the number
 * restored. */
typedef int (*dsv_snapshot_restore_fn)(void *ud, uid_t uid, const char *name, bool pinned, const int32_t *tokens,
                                       int n_tokens, struct dsv_kv_seq *seq, int n_exact);
int dsv_snapshots_restore(struct dsv_snapshots *s, dsv_snapshot_restore_fn cb, void *ud);
