/* Streams tensor bytes from checkpoint shards into backend memory with io_uring: many large
 * aligned reads in flight into registered staging buffers, each chunk copied out to the
 * tensors it covers as it lands. A checkpoint that fits in half of the available memory is
 * read through the page cache (kernel readahead; a restart then loads from memory); a larger
 * one with O_DIRECT where the filesystem allows it, so that it does not evict everything
 * else, each chunk first asked of the page cache (a buffered read with RWF_NOWAIT, which fails
 * at once instead of blocking) in case part of it is cached.
 * Short reads and EAGAIN are retried; EIO or a file that shrank is an error naming the file
 * and the tensor. A device backend with pinned host memory and asynchronous uploads
 * (kernels/backend.h upload_async) stages in its pinned buffers: each chunk's upload is
 * queued on the backend's copy stream and its buffer reused only after the upload's event,
 * so disk reads and host-to-device copies overlap and the host holds queue_depth x chunk
 * bytes of the model at most. Where io_uring is unavailable (seccomp, old kernel) it falls back to
 * pread() and says so in the stats. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "daemon/checkpoint.h"
#include "kernels/backend.h"

struct dsv_load_item {
        const struct dsv_ckpt_tensor *t;
        void *dst; /* backend address, t->nbytes long */
};

/* Where a load stands. Rates: bytes_read over elapsed_ns is the disk's; bytes_uploaded over
 * upload_ns (from the first upload queued to the last one done) the device's. */
struct dsv_load_progress {
        uint64_t done, total;    /* tensor bytes delivered / to deliver */
        uint64_t bytes_read;     /* from disk, incl. alignment and small gaps */
        uint64_t bytes_uploaded; /* copied from staging into backend memory, the copy done (0: reads land in place) */
        uint64_t elapsed_ns, upload_ns;
        bool device; /* the backend's memory is a device's */
        bool final;
};

struct dsv_load_opts {
        unsigned queue_depth; /* reads in flight (default 8) */
        size_t chunk_size;    /* bytes per read (default 2 MiB; multiple of 4096) */
        bool no_direct;       /* never use O_DIRECT */
        bool direct;          /* use O_DIRECT even when the checkpoint would fit in memory */
        bool no_uring;        /* use pread() (baseline, tests) */
        bool no_async;        /* upload synchronously from plain buffers even when the backend
                               * has pinned memory and upload_async (baseline, tests) */
        /* called at most every 250 ms while loading, and once at the end (p->final) */
        void (*progress)(void *ud, const struct dsv_load_progress *p);
        void *ud;
};

struct dsv_load_stats {
        uint64_t bytes_tensors; /* tensor bytes delivered */
        uint64_t bytes_read;    /* bytes read from disk (incl. alignment and small gaps) */
        uint64_t elapsed_ns;
        unsigned reads, short_reads, retries;
        unsigned cached_reads;  /* chunks served from the page cache (buffered, non-blocking) */
        bool direct;            /* at least one shard was read with O_DIRECT */
        bool uring;             /* io_uring was used */
        /* staging: reads of a device backend land in staging buffers, each byte once, then
         * go to the device (bytes_uploaded == bytes_tensors: no tensor staged twice) */
        uint64_t staging_bytes;  /* host staging allocated: queue_depth x chunk (0: reads land in place) */
        uint64_t staging_peak;   /* most staging bytes holding data not yet on the device at once */
        uint64_t bytes_uploaded; /* bytes copied from staging into backend memory */
        uint64_t upload_ns;      /* first upload queued to last upload done (device GB/s) */
        unsigned queue_depth;
        bool pinned;             /* staging in the backend's pinned memory, uploads overlapped */
};

int dsv_load_tensors(const struct dsv_checkpoint *ck, struct dsv_load_item *items, size_t n, struct dsv_backend *be,
                     const struct dsv_load_opts *opts, struct dsv_load_stats *stats, struct dsv_error *err);
