/* The CUDA runtime emulated on the CPU: devices, memory, streams, events, graphs and errors,
 * for the plugin built from the .cu files of kernels/cuda by g++ (the emulated dsv32-backend-cuda.so).
 *
 * Devices: DSV_CUDA_EMU_DEVICES (default 1) H200-like devices (sm_90, 132 SMs, 227 KiB of
 * opt-in shared memory per block, DSV_CUDA_EMU_MEMORY_MB of memory, default 143771 MiB, at
 * least 1 MiB so that tests can make a model not fit).
 *
 * Memory: each device's allocations come from its own reserved address range (mmap
 * PROT_NONE, MAP_NORESERVE), 256-byte aligned with a 256-byte gap after each; a new
 * allocation is filled with 0xff (NaN floats, -1 integers) up to 16 MiB (before the next
 * device work: nothing else can see it). Outside the
 * emulator's own work that range is PROT_NONE, so host code that reads or writes device
 * memory faults at once as it would on a GPU (DSV_CUDA_EMU_PROTECT=0 turns this off for
 * debugging); a kernel argument that is a pointer must be NULL, inside a live device
 * allocation or in pinned/registered host memory when the kernel runs, else the device
 * error becomes sticky (cudaErrorIllegalAddress) with a message naming kernel and argument.
 * Copies and memsets check that their device range lies inside one allocation. Under
 * AddressSanitizer the gaps and freed memory are poisoned. Pinned host memory (cudaHostAlloc)
 * is an anonymous mapping; cudaHostRegister records a range.
 *
 * Streams: work is queued and runs, in order, on the host thread that waits for it
 * (cudaStreamSynchronize, cudaEventSynchronize/Query, cudaDeviceSynchronize, a blocking
 * cudaMemcpy, a copy to pageable host memory, cudaFree), so host code that reads a result
 * before waiting for it sees stale data, as it may on a GPU. Copies from pageable host memory
 * take their bytes when called (CUDA stages them), from pinned memory when they run. The
 * legacy default stream (0) orders against blocking streams; cudaStreamNonBlocking streams
 * do not wait for it. Events mark a stream position; cudaStreamWaitEvent runs the other
 * stream up to it. Two host threads may use the emulator at once: each stream runs under its
 * own lock, launch state is per thread.
 *
 * Graphs: cudaStreamBeginCapture records the stream's launches, copies, memsets, host
 * functions and stream-ordered allocations (allocated at capture, owned by the graph, so
 * the addresses baked into later nodes stay valid) instead of queueing them; a blocking call
 * on a capturing stream invalidates the capture (cudaErrorStreamCaptureUnsupported), as on
 * CUDA; cudaGraphLaunch queues the recorded nodes.
 *
 * Errors: launch configuration errors (block size, grid size, dynamic shared memory above
 * 48 KiB without cudaFuncAttributeMaxDynamicSharedMemorySize, above the device's opt-in
 * limit) are reported by cudaGetLastError as on CUDA; faults are sticky: every later call
 * returns them.
 *
 * Test knobs: DSV_CUDA_EMU_FAIL_AFTER=N makes the Nth operation queued on a stream in the
 * process (kernel launches, copies, library calls, event waits, counted from 1; frees are not
 * counted) fault when it runs, as an illegal address would (sticky cudaErrorIllegalAddress);
 * DSV_CUDA_EMU_COUNT_OPS=FILE writes how many were queued to FILE at exit (where to aim N);
 * DSV_CUDA_EMU_FAIL_ALLOC=N makes the Nth memory allocation of the process (cudaMalloc,
 * cudaMallocAsync, cudaHostAlloc/cudaMallocHost, counted from 1) fail with
 * cudaErrorMemoryAllocation, as a full device would (not sticky: the next one succeeds), and
 * DSV_CUDA_EMU_COUNT_ALLOCS=FILE writes how many were made to FILE at exit;
 * DSV_CUDA_EMU_COPY_DELAY_US=U makes every copy take U microseconds more when it runs (a slow
 * bus, for tests of load progress). */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "tests/gpu/emu/emu_runtime.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define EMU_POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define EMU_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define EMU_POISON(p, n) ((void)(p), (void)(n))
#define EMU_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define EMU_ALIGN 256
#define EMU_GAP 256
#define EMU_POISON_MAX (16u << 20)
#define EMU_MAX_DEVICES 16
#define EMU_SMEM_DEFAULT (48u << 10)
#define EMU_SMEM_OPTIN (227u << 10)

/* ------------------------------------------------------------------ objects */
namespace {

struct op {
        const char *what;
        std::function<void()> fn;
};

struct graph_mem {
        std::vector<void *> owned; /* stream-ordered allocations made during capture */
        ~graph_mem();
};

} // namespace

struct emu_graph {
        std::vector<op> nodes;
        std::shared_ptr<graph_mem> mem = std::make_shared<graph_mem>();
};
struct emu_graph_exec {
        std::vector<op> nodes;
        std::shared_ptr<graph_mem> mem;
};

struct emu_stream {
        std::recursive_mutex mu;
        std::deque<op> q;
        std::atomic<uint64_t> enq{0}, done{0};
        unsigned flags = 0;
        int device = 0;
        bool legacy = false;
        emu_graph *capture = nullptr;
        bool capture_bad = false;
        pthread_t capture_thread;
};

struct emu_event {
        emu_stream *s = nullptr;
        uint64_t seq = 0;
        unsigned flags = 0;
        std::atomic<double> t{0};
};

struct emu_mempool {
        int device;
        uint64_t release_threshold;
};

struct emu_graph_node {};

namespace {

struct arena {
        char *base = nullptr;
        size_t size = 0;     /* reserved */
        size_t extent = 0;   /* high-water mark: [base, base + extent) may be accessible */
        size_t used = 0;     /* bytes in live allocations */
        std::map<uintptr_t, size_t> live; /* start -> requested size */
        std::map<uintptr_t, size_t> free_; /* start -> bytes, coalesced */
};

struct host_range {
        size_t size;
        bool mapped; /* cudaHostAlloc (ours to unmap) or cudaHostRegister */
};

struct rt_state {
        std::mutex mu; /* allocator, host ranges, attributes, protection, stream list */
        int n_dev = 1;
        size_t mem_total = 0;
        bool protect = true;
        int entered = 0;
        arena dev[EMU_MAX_DEVICES];
        std::map<uintptr_t, host_range> host;
        std::map<const void *, int> max_dyn_smem;
        std::vector<std::pair<void *, size_t>> to_fill; /* new allocations, filled at the next device work */
        std::vector<emu_stream *> streams;
        /* destroyed streams: kept, as another thread may hold a copy of the list above while
         * flushing (they are empty, and reachable from here for leak checkers) */
        std::vector<emu_stream *> graveyard;
        emu_stream *legacy[EMU_MAX_DEVICES];
        emu_mempool pools[EMU_MAX_DEVICES];
        std::atomic<int> sticky{cudaSuccess};
        std::string sticky_detail;
        size_t fail_after, copy_delay_us; /* the test knobs */
        std::string count_path;
        std::atomic<size_t> n_ops{0};     /* launches and copies queued */
        size_t fail_alloc;                /* DSV_CUDA_EMU_FAIL_ALLOC */
        std::string count_allocs_path;
        std::atomic<size_t> n_allocs{0};  /* cudaMalloc, cudaMallocAsync, cudaHostAlloc calls */
};

rt_state *S;
std::once_flag S_once;
thread_local int cur_dev = 0;
thread_local cudaError_t last_err = cudaSuccess;

size_t env_size(const char *name, size_t def, size_t lo, size_t hi) {
        const char *s = getenv(name);
        if (!s || !*s)
                return def;
        char *end;
        unsigned long long v = strtoull(s, &end, 10);
        if (*end || v < lo || v > hi)
                return def;
        return (size_t)v;
}

/* At exit: a counter into the file a DSV_CUDA_EMU_COUNT_* variable names ("" : none). */
static void write_count(const std::string &path, size_t n) {
        FILE *f = path.empty() ? nullptr : fopen(path.c_str(), "we");
        if (f) {
                fprintf(f, "%zu\n", n);
                fclose(f);
        }
}

void init_state() {
        S = new rt_state();
        S->n_dev = (int)env_size("DSV_CUDA_EMU_DEVICES", 1, 1, EMU_MAX_DEVICES);
        S->mem_total = env_size("DSV_CUDA_EMU_MEMORY_MB", 143771, 1, 1u << 24) << 20;
        S->protect = env_size("DSV_CUDA_EMU_PROTECT", 1, 0, 1) != 0;
        S->fail_after = env_size("DSV_CUDA_EMU_FAIL_AFTER", 0, 1, (size_t)1 << 48);
        S->copy_delay_us = env_size("DSV_CUDA_EMU_COPY_DELAY_US", 0, 1, 10000000);
        S->fail_alloc = env_size("DSV_CUDA_EMU_FAIL_ALLOC", 0, 1, (size_t)1 << 48);
        const char *count = getenv("DSV_CUDA_EMU_COUNT_OPS"), *count_allocs = getenv("DSV_CUDA_EMU_COUNT_ALLOCS");
        S->count_path = count ? count : "";
        S->count_allocs_path = count_allocs ? count_allocs : "";
        if (!S->count_path.empty() || !S->count_allocs_path.empty())
                atexit([] {
                        write_count(S->count_path, S->n_ops.load());
                        write_count(S->count_allocs_path, S->n_allocs.load());
                });
        for (int d = 0; d < S->n_dev; d++) {
                S->legacy[d] = new emu_stream();
                S->legacy[d]->device = d;
                S->legacy[d]->legacy = true;
                S->pools[d].device = d;
                S->pools[d].release_threshold = 0;
                S->streams.push_back(S->legacy[d]);
        }
}

rt_state &st() {
        std::call_once(S_once, init_state);
        return *S;
}

/* ------------------------------------------------------------------ errors */
void emu_print(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void emu_print(const char *fmt, ...) {
        char buf[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf, sizeof(buf), fmt, ap);
        va_end(ap);
        fprintf(stderr, "cuda-emu: %s\n", buf);
}

/* the error an API call returns when the device is broken */
inline bool broken(cudaError_t *e) {
        cudaError_t s = (cudaError_t)st().sticky.load();
        if (s != cudaSuccess) {
                *e = emu::set_error(s);
                return true;
        }
        return false;
}
#define EMU_BROKEN()                           \
        do {                                   \
                cudaError_t e_;                \
                if (broken(&e_))               \
                        return e_;             \
        } while (0)

/* ------------------------------------------------------------------ device memory */
/* Makes the arenas accessible while the emulator works on them (counted: several host
 * threads may be inside at once). */
void protect_all_locked(int prot) {
        rt_state &s = st();
        for (int d = 0; d < s.n_dev; d++)
                if (s.dev[d].extent && mprotect(s.dev[d].base, s.dev[d].extent, prot) != 0) {
                        emu_print("mprotect failed: %s", strerror(errno));
                        abort();
                }
}

struct device_access {
        device_access() {
                rt_state &s = st();
                std::lock_guard<std::mutex> l(s.mu);
                if (s.protect && s.entered++ == 0)
                        protect_all_locked(PROT_READ | PROT_WRITE);
                for (auto &f : s.to_fill)
                        memset(f.first, 0xff, f.second);
                s.to_fill.clear();
        }
        ~device_access() {
                rt_state &s = st();
                std::lock_guard<std::mutex> l(s.mu);
                if (s.protect && --s.entered == 0)
                        protect_all_locked(PROT_NONE);
        }
        device_access(const device_access &) = delete;
        device_access &operator=(const device_access &) = delete;
};

int device_of_locked(const void *p) {
        rt_state &s = st();
        for (int d = 0; d < s.n_dev; d++)
                if (s.dev[d].base && (const char *)p >= s.dev[d].base && (const char *)p < s.dev[d].base + s.dev[d].size)
                        return d;
        return -1;
}

/* the live allocation holding p: its start and size, or false */
bool find_live_locked(const void *p, uintptr_t *start, size_t *size) {
        int d = device_of_locked(p);
        if (d < 0)
                return false;
        auto &live = st().dev[d].live;
        auto it = live.upper_bound((uintptr_t)p);
        if (it == live.begin())
                return false;
        --it;
        if ((uintptr_t)p > it->first + it->second) /* one past the end is still "in" (empty views) */
                return false;
        *start = it->first;
        *size = it->second;
        return true;
}

bool find_host_locked(const void *p, uintptr_t *start, size_t *size) {
        auto &h = st().host;
        auto it = h.upper_bound((uintptr_t)p);
        if (it == h.begin())
                return false;
        --it;
        if ((uintptr_t)p >= it->first + it->second.size)
                return false;
        *start = it->first;
        *size = it->second.size;
        return true;
}

bool arena_reserve_locked(int d) {
        rt_state &s = st();
        arena &a = s.dev[d];
        if (a.base)
                return true;
        void *p = mmap(NULL, s.mem_total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED)
                return false;
        a.base = (char *)p;
        a.size = s.mem_total;
        a.free_[(uintptr_t)p] = s.mem_total;
        return true;
}

cudaError_t dev_alloc(int d, size_t size, void **ret) {
        rt_state &s = st();
        const size_t need = (size ? (size + EMU_ALIGN - 1) / EMU_ALIGN * EMU_ALIGN : EMU_ALIGN) + EMU_GAP;
        void *p = nullptr;
        {
                std::lock_guard<std::mutex> l(s.mu);
                if (!arena_reserve_locked(d))
                        return cudaErrorMemoryAllocation;
                arena &a = s.dev[d];
                if (a.used + size > a.size)
                        return cudaErrorMemoryAllocation;
                for (auto it = a.free_.begin(); it != a.free_.end(); ++it) {
                        if (it->second < need)
                                continue;
                        uintptr_t start = it->first;
                        size_t left = it->second - need;
                        a.free_.erase(it);
                        if (left)
                                a.free_[start + need] = left;
                        p = (void *)start;
                        break;
                }
                if (!p)
                        return cudaErrorMemoryAllocation;
                a.live[(uintptr_t)p] = size;
                a.used += size;
                size_t end = (size_t)((char *)p - a.base) + need;
                if (end > a.extent) {
                        size_t old = a.extent;
                        a.extent = (end + (2u << 20) - 1) / (2u << 20) * (2u << 20);
                        if (a.extent > a.size)
                                a.extent = a.size;
                        /* the new part: accessible now if someone is inside, poisoned for ASan */
                        if (!s.protect || s.entered)
                                mprotect(a.base + old, a.extent - old, PROT_READ | PROT_WRITE);
                        EMU_POISON(a.base + old, a.extent - old);
                }
                EMU_UNPOISON(p, size);
                if (size <= EMU_POISON_MAX)
                        s.to_fill.push_back({p, size});
        }
        *ret = p;
        return cudaSuccess;
}

cudaError_t dev_free(void *p) {
        rt_state &s = st();
        std::lock_guard<std::mutex> l(s.mu);
        int d = device_of_locked(p);
        if (d < 0)
                return cudaErrorInvalidValue;
        arena &a = s.dev[d];
        auto it = a.live.find((uintptr_t)p);
        if (it == a.live.end())
                return cudaErrorInvalidValue; /* not the start of a live allocation (double free, interior pointer) */
        const size_t size = it->second;
        const size_t span = (size ? (size + EMU_ALIGN - 1) / EMU_ALIGN * EMU_ALIGN : EMU_ALIGN) + EMU_GAP;
        a.live.erase(it);
        for (size_t i = 0; i < s.to_fill.size(); i++)
                if (s.to_fill[i].first == p) {
                        s.to_fill.erase(s.to_fill.begin() + (long)i);
                        break;
                }
        a.used -= size;
        EMU_POISON(p, span);
        if (span >= (1u << 20)) {
                /* give the pages back (they come back as zeroes: fill them when reused) */
                uintptr_t lo = ((uintptr_t)p + 4095) & ~(uintptr_t)4095, hi = ((uintptr_t)p + span) & ~(uintptr_t)4095;
                if (hi > lo)
                        madvise((void *)lo, hi - lo, MADV_DONTNEED);
        }
        uintptr_t start = (uintptr_t)p;
        size_t len = span;
        auto nx = a.free_.lower_bound(start);
        if (nx != a.free_.end() && nx->first == start + len) {
                len += nx->second;
                nx = a.free_.erase(nx);
        }
        if (nx != a.free_.begin()) {
                auto pv = std::prev(nx);
                if (pv->first + pv->second == start) {
                        start = pv->first;
                        len += pv->second;
                        a.free_.erase(pv);
                }
        }
        a.free_[start] = len;
        return cudaSuccess;
}

graph_mem::~graph_mem() {
        for (void *p : owned)
                dev_free(p);
}

/* ------------------------------------------------------------------ streams */
/* runs inside a device_access window */
void run_op(const op &o) {
        if (st().sticky.load() != cudaSuccess)
                return; /* a broken device runs nothing more */
        o.fn();
}

void flush(emu_stream *s, uint64_t upto) {
        if (s->done.load() >= upto)
                return;
        std::lock_guard<std::recursive_mutex> l(s->mu);
        if (s->q.empty())
                return;
        device_access acc; /* one protection window for the whole batch */
        while (s->done.load() < upto && !s->q.empty()) {
                op o = std::move(s->q.front());
                s->q.pop_front();
                run_op(o);
                s->done.fetch_add(1);
        }
}

void flush_all(bool blocking_only) {
        std::vector<emu_stream *> v;
        {
                std::lock_guard<std::mutex> l(st().mu);
                v = st().streams;
        }
        for (emu_stream *s : v)
                if (!blocking_only || s->legacy || !(s->flags & cudaStreamNonBlocking))
                        flush(s, s->enq.load());
}

/* appends o to s's queue (no capture check); returns its position (the done count after it) */
uint64_t push_locked(emu_stream *s, op o) {
        s->q.push_back(std::move(o));
        return s->enq.fetch_add(1) + 1;
}

/* The implicit ordering of the legacy default stream against blocking streams: work on a
 * blocking stream waits for the legacy stream's earlier work and vice versa. */
void legacy_order(emu_stream *s) {
        rt_state &g = st();
        if (s->flags & cudaStreamNonBlocking)
                return;
        if (!s->legacy) {
                emu_stream *L = g.legacy[s->device];
                uint64_t at = L->enq.load();
                if (at > L->done.load())
                        push_locked(s, {"wait for the legacy stream", [L, at] { flush(L, at); }});
                return;
        }
        std::vector<emu_stream *> v;
        {
                std::lock_guard<std::mutex> l(g.mu);
                v = g.streams;
        }
        for (emu_stream *b : v) {
                if (b == s || b->device != s->device || (b->flags & cudaStreamNonBlocking))
                        continue;
                uint64_t at = b->enq.load();
                if (at > b->done.load())
                        push_locked(s, {"wait for a blocking stream", [b, at] { flush(b, at); }});
        }
}

/* a synchronous call on a capturing stream: invalidates the capture */
bool capture_violation(emu_stream *s) {
        if (!s->capture)
                return false;
        s->capture_bad = true;
        return true;
}

} // namespace

/* ------------------------------------------------------------------ shared with blas.cc, cub */
namespace emu {

cudaError_t set_error(cudaError_t e) {
        if (e != cudaSuccess)
                last_err = e;
        return e;
}

cudaError_t sticky(void) { return (cudaError_t)st().sticky.load(); }

void set_sticky(cudaError_t err, const std::string &detail) {
        rt_state &s = st();
        int expect = cudaSuccess;
        if (s.sticky.compare_exchange_strong(expect, err)) {
                std::lock_guard<std::mutex> l(s.mu);
                s.sticky_detail = detail;
                emu_print("%s: %s (the emulated device is now unusable, as a GPU after this fault)", cudaGetErrorName(err),
                          detail.c_str());
        }
}

emu_stream *stream_of(cudaStream_t s) {
        if (s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread)
                return st().legacy[cur_dev];
        return s;
}

cudaError_t enqueue_op(cudaStream_t hs, const char *what, std::function<void()> fn) {
        EMU_BROKEN();
        rt_state &rs = st();
        const bool copy = strncmp(what, "cudaMemcpy", 10) == 0;
        if (strcmp(what, "cudaFreeAsync") != 0 && (rs.fail_after || !rs.count_path.empty())) {
                size_t k = ++rs.n_ops;
                if (k == rs.fail_after) {
                        std::string detail = std::string("fault injected in ") + what + ", launch or copy number " +
                                             std::to_string(k) + " (DSV_CUDA_EMU_FAIL_AFTER)";
                        fn = [detail] { set_sticky(cudaErrorIllegalAddress, detail); };
                }
        }
        if (copy && rs.copy_delay_us) {
                const useconds_t us = (useconds_t)rs.copy_delay_us;
                fn = [us, fn = std::move(fn)] {
                        usleep(us);
                        fn();
                };
        }
        emu_stream *s = stream_of(hs);
        std::lock_guard<std::recursive_mutex> l(s->mu);
        if (s->capture) {
                s->capture->nodes.push_back({what, std::move(fn)});
                return cudaSuccess;
        }
        legacy_order(s);
        push_locked(s, {what, std::move(fn)});
        return cudaSuccess;
}

bool device_range(const void *p, size_t n) {
        rt_state &s = st();
        std::lock_guard<std::mutex> l(s.mu);
        uintptr_t a;
        size_t sz;
        return find_live_locked(p, &a, &sz) && (uintptr_t)p + n <= a + sz;
}

bool check_access(const void *p, size_t n, bool host_ok, const char *what) {
        rt_state &s = st();
        uintptr_t a;
        size_t sz;
        bool ok, in_dev;
        {
                std::lock_guard<std::mutex> l(s.mu);
                in_dev = device_of_locked(p) >= 0;
                ok = in_dev ? find_live_locked(p, &a, &sz) && (uintptr_t)p + n <= a + sz
                            : host_ok && find_host_locked(p, &a, &sz) && (uintptr_t)p + n <= a + sz;
        }
        if (!ok) {
                char buf[512];
                snprintf(buf, sizeof(buf), "%s: %zu bytes at %p are %s", what, n, p,
                         in_dev ? "not inside one live device allocation (out of bounds, or freed)"
                                : "host memory that is neither pinned nor registered (a host pointer where a device pointer belongs?)");
                set_sticky(cudaErrorIllegalAddress, buf);
        }
        return ok;
}

void enqueue_kernel(const launch_cfg &c, const char *name, const void *fn, std::function<void()> body, std::vector<const void *> ptrs) {
        rt_state &s = st();
        cudaError_t e;
        if (broken(&e))
                return;
        const unsigned nt = c.block.x * c.block.y * c.block.z;
        if (c.block.x == 0 || c.block.y == 0 || c.block.z == 0 || c.block.x > 1024 || c.block.y > 1024 || c.block.z > 64 || nt > 1024 ||
            c.grid.x == 0 || c.grid.y == 0 || c.grid.z == 0 || c.grid.x > 0x7fffffffu || c.grid.y > 65535 || c.grid.z > 65535) {
                emu_print("launch of %s: bad configuration grid (%u,%u,%u) block (%u,%u,%u)", name, c.grid.x, c.grid.y, c.grid.z, c.block.x,
                          c.block.y, c.block.z);
                set_error(cudaErrorInvalidConfiguration);
                return;
        }
        size_t limit = EMU_SMEM_DEFAULT;
        {
                std::lock_guard<std::mutex> l(s.mu);
                auto it = s.max_dyn_smem.find(fn);
                if (it != s.max_dyn_smem.end())
                        limit = (size_t)it->second;
        }
        if (c.smem > limit) {
                emu_print("launch of %s: %zu bytes of dynamic shared memory, the function allows %zu%s", name, c.smem, limit,
                          limit == EMU_SMEM_DEFAULT ? " (cudaFuncSetAttribute(MaxDynamicSharedMemorySize) not called)" : "");
                set_error(cudaErrorInvalidValue);
                return;
        }
        emu_stream *str = stream_of(c.stream);
        if (str->device != cur_dev) {
                set_error(cudaErrorInvalidResourceHandle);
                return;
        }
        const launch_cfg cc = c;
        enqueue_op(c.stream, name, [cc, name, body = std::move(body), ptrs = std::move(ptrs)] {
                for (size_t i = 0; i < ptrs.size(); i++) {
                        if (!ptrs[i])
                                continue;
                        char what[256];
                        snprintf(what, sizeof(what), "kernel %s, argument %zu", name, i + 1);
                        if (!check_access(ptrs[i], 0, true, what))
                                return;
                }
                launch(cc.grid, cc.block, cc.smem, body);
        });
}

cudaError_t func_set_attribute(const void *fn, cudaFuncAttribute attr, int value) {
        EMU_BROKEN();
        if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
                if (value < 0 || (size_t)value > EMU_SMEM_OPTIN)
                        return set_error(cudaErrorInvalidValue);
                std::lock_guard<std::mutex> l(st().mu);
                st().max_dyn_smem[fn] = value;
        }
        return cudaSuccess;
}

} // namespace emu

/* ------------------------------------------------------------------ errors */
const char *cudaGetErrorName(cudaError_t e) {
        switch (e) {
#define N(x)    \
        case x: \
                return #x;
                N(cudaSuccess)
                N(cudaErrorInvalidValue)
                N(cudaErrorMemoryAllocation)
                N(cudaErrorInitializationError)
                N(cudaErrorInvalidConfiguration)
                N(cudaErrorInvalidPitchValue)
                N(cudaErrorInvalidDevicePointer)
                N(cudaErrorInvalidMemcpyDirection)
                N(cudaErrorInsufficientDriver)
                N(cudaErrorNoDevice)
                N(cudaErrorInvalidDevice)
                N(cudaErrorInvalidResourceHandle)
                N(cudaErrorIllegalState)
                N(cudaErrorNotReady)
                N(cudaErrorIllegalAddress)
                N(cudaErrorLaunchOutOfResources)
                N(cudaErrorHostMemoryAlreadyRegistered)
                N(cudaErrorHostMemoryNotRegistered)
                N(cudaErrorLaunchFailure)
                N(cudaErrorDevicesUnavailable)
                N(cudaErrorECCUncorrectable)
                N(cudaErrorNvlinkUncorrectable)
                N(cudaErrorLaunchTimeout)
                N(cudaErrorContextIsDestroyed)
                N(cudaErrorAssert)
                N(cudaErrorHardwareStackError)
                N(cudaErrorIllegalInstruction)
                N(cudaErrorMisalignedAddress)
                N(cudaErrorInvalidAddressSpace)
                N(cudaErrorInvalidPc)
                N(cudaErrorNotSupported)
                N(cudaErrorStreamCaptureUnsupported)
                N(cudaErrorStreamCaptureInvalidated)
                N(cudaErrorStreamCaptureUnmatched)
                N(cudaErrorStreamCaptureImplicit)
                N(cudaErrorStreamCaptureWrongThread)
                N(cudaErrorUnknown)
#undef N
        }
        return "cudaErrorUnknown";
}

const char *cudaGetErrorString(cudaError_t e) {
        static thread_local char buf[768];
        const char *base;
        switch (e) {
        case cudaSuccess:
                return "no error";
        case cudaErrorInvalidValue:
                return "invalid argument";
        case cudaErrorMemoryAllocation:
                return "out of memory";
        case cudaErrorInvalidConfiguration:
                return "invalid configuration argument";
        case cudaErrorNoDevice:
                return "no CUDA-capable device is detected";
        case cudaErrorInvalidDevice:
                return "invalid device ordinal";
        case cudaErrorInvalidResourceHandle:
                return "invalid resource handle";
        case cudaErrorNotReady:
                return "device not ready";
        case cudaErrorStreamCaptureUnsupported:
                return "operation not permitted when stream is capturing";
        case cudaErrorStreamCaptureInvalidated:
                return "operation failed due to a previous error during capture";
        case cudaErrorIllegalAddress:
                base = "an illegal memory access was encountered";
                break;
        case cudaErrorLaunchFailure:
                base = "unspecified launch failure";
                break;
        default:
                return cudaGetErrorName(e);
        }
        std::lock_guard<std::mutex> l(st().mu);
        if (st().sticky.load() == e && !st().sticky_detail.empty()) {
                snprintf(buf, sizeof(buf), "%s (CPU emulation: %s)", base, st().sticky_detail.c_str());
                return buf;
        }
        return base;
}

cudaError_t cudaGetLastError(void) {
        cudaError_t s = emu::sticky();
        if (s != cudaSuccess)
                return s;
        cudaError_t e = last_err;
        last_err = cudaSuccess;
        return e;
}

cudaError_t cudaPeekAtLastError(void) {
        cudaError_t s = emu::sticky();
        return s != cudaSuccess ? s : last_err;
}

cudaError_t cudaDriverGetVersion(int *v) {
        *v = CUDART_VERSION;
        return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int *v) {
        *v = CUDART_VERSION;
        return cudaSuccess;
}

/* ------------------------------------------------------------------ devices */
cudaError_t cudaGetDeviceCount(int *n) {
        *n = st().n_dev;
        return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
        if (device < 0 || device >= st().n_dev)
                return emu::set_error(cudaErrorInvalidDevice);
        cur_dev = device;
        return cudaSuccess;
}

cudaError_t cudaGetDevice(int *device) {
        *device = cur_dev;
        return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int device) {
        if (device < 0 || device >= st().n_dev)
                return emu::set_error(cudaErrorInvalidDevice);
        memset(p, 0, sizeof(*p));
        snprintf(p->name, sizeof(p->name), "NVIDIA H200 (CPU emulation)");
        p->uuid.bytes[0] = (char)device;
        p->totalGlobalMem = st().mem_total;
        p->sharedMemPerBlock = EMU_SMEM_DEFAULT;
        p->regsPerBlock = 65536;
        p->warpSize = 32;
        p->memPitch = 2147483647;
        p->maxThreadsPerBlock = 1024;
        p->maxThreadsDim[0] = 1024;
        p->maxThreadsDim[1] = 1024;
        p->maxThreadsDim[2] = 64;
        p->maxGridSize[0] = 2147483647;
        p->maxGridSize[1] = 65535;
        p->maxGridSize[2] = 65535;
        p->totalConstMem = 65536;
        p->major = 9;
        p->minor = 0;
        p->multiProcessorCount = 132;
        p->canMapHostMemory = 1;
        p->concurrentKernels = 1;
        p->ECCEnabled = 1;
        p->pciBusID = 0x18 + device;
        p->asyncEngineCount = 3;
        p->unifiedAddressing = 1;
        p->memoryBusWidth = 6144;
        p->l2CacheSize = 50 << 20;
        p->persistingL2CacheMaxSize = 78643200 / 2;
        p->maxThreadsPerMultiProcessor = 2048;
        p->sharedMemPerMultiprocessor = 233472;
        p->regsPerMultiprocessor = 65536;
        p->managedMemory = 1;
        p->cooperativeLaunch = 1;
        p->sharedMemPerBlockOptin = EMU_SMEM_OPTIN;
        p->maxBlocksPerMultiProcessor = 32;
        p->reservedSharedMemPerBlock = 1024;
        p->hostRegisterSupported = 1;
        p->memoryPoolsSupported = 1;
        p->clusterLaunch = 1;
        return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int *value, cudaDeviceAttr attr, int device) {
        cudaDeviceProp p;
        cudaError_t e = cudaGetDeviceProperties(&p, device);
        if (e != cudaSuccess)
                return e;
        switch (attr) {
        case cudaDevAttrMaxThreadsPerBlock:
                *value = p.maxThreadsPerBlock;
                break;
        case cudaDevAttrMaxBlockDimX:
                *value = p.maxThreadsDim[0];
                break;
        case cudaDevAttrMaxGridDimX:
        case cudaDevAttrMaxGridDimY:
        case cudaDevAttrMaxGridDimZ:
                *value = p.maxGridSize[attr - cudaDevAttrMaxGridDimX];
                break;
        case cudaDevAttrMaxSharedMemoryPerBlock:
                *value = (int)p.sharedMemPerBlock;
                break;
        case cudaDevAttrWarpSize:
                *value = 32;
                break;
        case cudaDevAttrMultiProcessorCount:
                *value = p.multiProcessorCount;
                break;
        case cudaDevAttrL2CacheSize:
                *value = p.l2CacheSize;
                break;
        case cudaDevAttrComputeCapabilityMajor:
                *value = p.major;
                break;
        case cudaDevAttrComputeCapabilityMinor:
                *value = p.minor;
                break;
        case cudaDevAttrMaxSharedMemoryPerBlockOptin:
                *value = (int)p.sharedMemPerBlockOptin;
                break;
        case cudaDevAttrMemoryPoolsSupported:
                *value = 1;
                break;
        default:
                return emu::set_error(cudaErrorInvalidValue);
        }
        return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) {
        EMU_BROKEN();
        flush_all(false);
        EMU_BROKEN();
        return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes) {
        EMU_BROKEN();
        std::lock_guard<std::mutex> l(st().mu);
        *total_bytes = st().mem_total;
        *free_bytes = st().mem_total - st().dev[cur_dev].used;
        return cudaSuccess;
}

/* ------------------------------------------------------------------ memory */
/* Counts an allocation; true when DSV_CUDA_EMU_FAIL_ALLOC aims at this one (it then fails). */
static bool alloc_injected(const char *what, size_t size) {
        rt_state &s = st();
        if (!s.fail_alloc && s.count_allocs_path.empty())
                return false;
        const size_t k = ++s.n_allocs;
        if (k != s.fail_alloc)
                return false;
        emu_print("%s of %zu bytes fails with cudaErrorMemoryAllocation: allocation number %zu (DSV_CUDA_EMU_FAIL_ALLOC)", what,
                  size, k);
        return true;
}

cudaError_t cudaMalloc(void **p, size_t size) {
        EMU_BROKEN();
        if (!p)
                return emu::set_error(cudaErrorInvalidValue);
        if (alloc_injected("cudaMalloc", size))
                return emu::set_error(cudaErrorMemoryAllocation);
        return emu::set_error(dev_alloc(cur_dev, size, p));
}

cudaError_t cudaFree(void *p) {
        EMU_BROKEN();
        if (!p)
                return cudaSuccess;
        flush_all(false); /* cudaFree synchronizes the device */
        EMU_BROKEN();
        return emu::set_error(dev_free(p));
}

cudaError_t cudaMallocAsync(void **p, size_t size, cudaStream_t hs) {
        EMU_BROKEN();
        if (!p)
                return emu::set_error(cudaErrorInvalidValue);
        emu_stream *s = emu::stream_of(hs);
        if (alloc_injected("cudaMallocAsync", size))
                return emu::set_error(cudaErrorMemoryAllocation);
        cudaError_t e = dev_alloc(s->device, size, p);
        if (e != cudaSuccess)
                return emu::set_error(e);
        std::lock_guard<std::recursive_mutex> l(s->mu);
        if (s->capture)
                s->capture->mem->owned.push_back(*p);
        return cudaSuccess;
}

cudaError_t cudaFreeAsync(void *p, cudaStream_t hs) {
        EMU_BROKEN();
        if (!p)
                return cudaSuccess;
        if (!emu::device_range(p, 0))
                return emu::set_error(cudaErrorInvalidValue);
        emu_stream *s = emu::stream_of(hs);
        {
                std::lock_guard<std::recursive_mutex> l(s->mu);
                if (s->capture) {
                        for (void *o : s->capture->mem->owned)
                                if (o == p)
                                        return cudaSuccess; /* the graph owns it: freed with the graph */
                }
        }
        return emu::enqueue_op(hs, "cudaFreeAsync", [p] {
                if (dev_free(p) != cudaSuccess)
                        emu::set_sticky(cudaErrorIllegalAddress, "cudaFreeAsync of memory that is not a live allocation");
        });
}

cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t *pool, int device) {
        if (device < 0 || device >= st().n_dev)
                return emu::set_error(cudaErrorInvalidDevice);
        *pool = &st().pools[device];
        return cudaSuccess;
}

cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t pool, cudaMemPoolAttr attr, void *value) {
        if (!pool || !value)
                return emu::set_error(cudaErrorInvalidValue);
        if (attr == cudaMemPoolAttrReleaseThreshold)
                pool->release_threshold = *(uint64_t *)value;
        return cudaSuccess;
}

cudaError_t cudaMemPoolGetAttribute(cudaMemPool_t pool, cudaMemPoolAttr attr, void *value) {
        if (!pool || !value)
                return emu::set_error(cudaErrorInvalidValue);
        switch (attr) {
        case cudaMemPoolAttrReleaseThreshold:
                *(uint64_t *)value = pool->release_threshold;
                break;
        case cudaMemPoolAttrUsedMemCurrent:
        case cudaMemPoolAttrReservedMemCurrent: {
                std::lock_guard<std::mutex> l(st().mu);
                *(uint64_t *)value = st().dev[pool->device].used;
                break;
        }
        default:
                *(uint64_t *)value = 0;
        }
        return cudaSuccess;
}

cudaError_t cudaMemPoolTrimTo(cudaMemPool_t, size_t) { return cudaSuccess; }

cudaError_t cudaHostAlloc(void **p, size_t size, unsigned flags) {
        EMU_BROKEN();
        if (!p)
                return emu::set_error(cudaErrorInvalidValue);
        if (alloc_injected("cudaHostAlloc", size))
                return emu::set_error(cudaErrorMemoryAllocation);
        size_t len = size ? (size + 4095) & ~(size_t)4095 : 4096;
        void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED)
                return emu::set_error(cudaErrorMemoryAllocation);
        std::lock_guard<std::mutex> l(st().mu);
        st().host[(uintptr_t)m] = {len, true};
        *p = m;
        return cudaSuccess;
}

cudaError_t cudaMallocHost(void **p, size_t size) { return cudaHostAlloc(p, size, cudaHostAllocDefault); }

cudaError_t cudaFreeHost(void *p) {
        EMU_BROKEN();
        if (!p)
                return cudaSuccess;
        flush_all(false); /* as cudaFree: waits for the device */
        std::lock_guard<std::mutex> l(st().mu);
        auto it = st().host.find((uintptr_t)p);
        if (it == st().host.end() || !it->second.mapped)
                return emu::set_error(cudaErrorInvalidValue);
        munmap(p, it->second.size);
        st().host.erase(it);
        return cudaSuccess;
}

cudaError_t cudaHostRegister(void *p, size_t size, unsigned flags) {
        EMU_BROKEN();
        if (!p || !size)
                return emu::set_error(cudaErrorInvalidValue);
        std::lock_guard<std::mutex> l(st().mu);
        uintptr_t a;
        size_t sz;
        if (find_host_locked(p, &a, &sz) || find_host_locked((char *)p + size - 1, &a, &sz))
                return emu::set_error(cudaErrorHostMemoryAlreadyRegistered);
        if (device_of_locked(p) >= 0)
                return emu::set_error(cudaErrorInvalidValue);
        st().host[(uintptr_t)p] = {size, false};
        return cudaSuccess;
}

cudaError_t cudaHostUnregister(void *p) {
        EMU_BROKEN();
        flush_all(false);
        std::lock_guard<std::mutex> l(st().mu);
        auto it = st().host.find((uintptr_t)p);
        if (it == st().host.end() || it->second.mapped)
                return emu::set_error(cudaErrorHostMemoryNotRegistered);
        st().host.erase(it);
        return cudaSuccess;
}

cudaError_t cudaPointerGetAttributes(cudaPointerAttributes *a, const void *p) {
        if (!a)
                return emu::set_error(cudaErrorInvalidValue);
        memset(a, 0, sizeof(*a));
        std::lock_guard<std::mutex> l(st().mu);
        uintptr_t s;
        size_t sz;
        int d = device_of_locked(p);
        if (d >= 0) {
                a->type = cudaMemoryTypeDevice;
                a->device = d;
                a->devicePointer = (void *)p;
        } else if (find_host_locked(p, &s, &sz)) {
                a->type = cudaMemoryTypeHost;
                a->device = cur_dev;
                a->devicePointer = a->hostPointer = (void *)p;
        } else {
                a->type = cudaMemoryTypeUnregistered;
                a->device = -2;
                a->hostPointer = (void *)p;
        }
        return cudaSuccess;
}

/* ------------------------------------------------------------------ copies */
namespace {

enum side { SIDE_DEVICE, SIDE_PINNED, SIDE_PAGEABLE };

side side_of(const void *p) {
        std::lock_guard<std::mutex> l(st().mu);
        uintptr_t a;
        size_t sz;
        if (device_of_locked(p) >= 0)
                return SIDE_DEVICE;
        return find_host_locked(p, &a, &sz) ? SIDE_PINNED : SIDE_PAGEABLE;
}

/* checks a copy's direction and ranges; 0 or the error */
cudaError_t check_copy(void *dst, const void *src, size_t n, cudaMemcpyKind kind, side *ds, side *ss) {
        *ds = side_of(dst);
        *ss = side_of(src);
        const bool dd = *ds == SIDE_DEVICE, sd = *ss == SIDE_DEVICE;
        switch (kind) {
        case cudaMemcpyHostToDevice:
                if (!dd || sd)
                        return cudaErrorInvalidValue;
                break;
        case cudaMemcpyDeviceToHost:
                if (dd || !sd)
                        return cudaErrorInvalidValue;
                break;
        case cudaMemcpyDeviceToDevice:
                if (!dd || !sd)
                        return cudaErrorInvalidValue;
                break;
        case cudaMemcpyHostToHost:
                if (dd || sd)
                        return cudaErrorInvalidValue;
                break;
        case cudaMemcpyDefault:
                break;
        default:
                return cudaErrorInvalidMemcpyDirection;
        }
        if ((dd && !emu::device_range(dst, n)) || (sd && !emu::device_range(src, n)))
                return cudaErrorInvalidValue;
        return cudaSuccess;
}

cudaError_t memcpy_async(void *dst, const void *src, size_t n, cudaMemcpyKind kind, cudaStream_t hs, bool blocking) {
        EMU_BROKEN();
        if (n == 0)
                return cudaSuccess;
        if (!dst || !src)
                return emu::set_error(cudaErrorInvalidValue);
        side ds, ss;
        cudaError_t e = check_copy(dst, src, n, kind, &ds, &ss);
        if (e != cudaSuccess)
                return emu::set_error(e);
        emu_stream *s = emu::stream_of(hs);
        if (s->capture && (ds == SIDE_PAGEABLE || ss == SIDE_PAGEABLE || blocking)) {
                capture_violation(s);
                return emu::set_error(cudaErrorStreamCaptureUnsupported);
        }
        if (ss == SIDE_PAGEABLE && ds != SIDE_PAGEABLE) {
                /* CUDA stages pageable sources before returning: take the bytes now */
                auto snap = std::make_shared<std::vector<char>>((const char *)src, (const char *)src + n);
                e = emu::enqueue_op(hs, "cudaMemcpyAsync from pageable memory", [dst, snap] { memcpy(dst, snap->data(), snap->size()); });
        } else {
                e = emu::enqueue_op(hs, "cudaMemcpyAsync", [dst, src, n] { memcpy(dst, src, n); });
        }
        if (e != cudaSuccess)
                return e;
        if (blocking || ds == SIDE_PAGEABLE) {
                /* a copy to pageable memory (and cudaMemcpy) returns when it is done */
                if (blocking)
                        flush_all(true);
                flush(s, s->enq.load());
                EMU_BROKEN();
        }
        return cudaSuccess;
}

} // namespace

cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind kind) {
        return memcpy_async(dst, src, n, kind, 0, true);
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind kind, cudaStream_t s) {
        return memcpy_async(dst, src, n, kind, s, false);
}

cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width, size_t height,
                              cudaMemcpyKind kind, cudaStream_t s) {
        if (width > dpitch || width > spitch)
                return emu::set_error(cudaErrorInvalidPitchValue);
        for (size_t r = 0; r < height; r++) {
                cudaError_t e = memcpy_async((char *)dst + r * dpitch, (const char *)src + r * spitch, width, kind, s, false);
                if (e != cudaSuccess)
                        return e;
        }
        return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *dst, int value, size_t n, cudaStream_t s) {
        EMU_BROKEN();
        if (n == 0)
                return cudaSuccess;
        if (!emu::device_range(dst, n))
                return emu::set_error(cudaErrorInvalidValue);
        return emu::enqueue_op(s, "cudaMemsetAsync", [dst, value, n] { memset(dst, value, n); });
}

cudaError_t cudaMemset(void *dst, int value, size_t n) { return cudaMemsetAsync(dst, value, n, 0); }

cudaError_t cudaMemset2DAsync(void *dst, size_t pitch, int value, size_t width, size_t height, cudaStream_t s) {
        EMU_BROKEN();
        if (width > pitch)
                return emu::set_error(cudaErrorInvalidPitchValue);
        if (!width || !height)
                return cudaSuccess;
        if (!emu::device_range(dst, pitch * (height - 1) + width))
                return emu::set_error(cudaErrorInvalidValue);
        return emu::enqueue_op(s, "cudaMemset2DAsync", [dst, pitch, value, width, height] {
                for (size_t r = 0; r < height; r++)
                        memset((char *)dst + r * pitch, value, width);
        });
}

/* ------------------------------------------------------------------ streams and events */
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *ps, unsigned flags) {
        EMU_BROKEN();
        if (!ps)
                return emu::set_error(cudaErrorInvalidValue);
        emu_stream *s = new emu_stream();
        s->flags = flags;
        s->device = cur_dev;
        std::lock_guard<std::mutex> l(st().mu);
        st().streams.push_back(s);
        *ps = s;
        return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t *s) { return cudaStreamCreateWithFlags(s, cudaStreamDefault); }

cudaError_t cudaStreamDestroy(cudaStream_t s) {
        if (!s || s == cudaStreamLegacy || s == cudaStreamPerThread)
                return emu::set_error(cudaErrorInvalidResourceHandle);
        flush(s, s->enq.load()); /* queued work still runs */
        std::lock_guard<std::recursive_mutex> ls(s->mu);
        delete s->capture;
        s->capture = nullptr;
        std::lock_guard<std::mutex> l(st().mu);
        auto &v = st().streams;
        v.erase(std::remove(v.begin(), v.end(), s), v.end());
        st().graveyard.push_back(s);
        return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t hs) {
        EMU_BROKEN();
        emu_stream *s = emu::stream_of(hs);
        if (capture_violation(s))
                return emu::set_error(cudaErrorStreamCaptureUnsupported);
        if (s->legacy)
                flush_all(true);
        flush(s, s->enq.load());
        EMU_BROKEN();
        return cudaSuccess;
}

cudaError_t cudaStreamQuery(cudaStream_t hs) {
        /* the emulated device makes progress when asked: a host loop polling a stream ends */
        return cudaStreamSynchronize(hs);
}

cudaError_t cudaLaunchHostFunc(cudaStream_t s, cudaHostFn_t fn, void *user) {
        return emu::enqueue_op(s, "cudaLaunchHostFunc", [fn, user] { fn(user); });
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags) {
        if (!e)
                return emu::set_error(cudaErrorInvalidValue);
        *e = new emu_event();
        (*e)->flags = flags;
        return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t *e) { return cudaEventCreateWithFlags(e, cudaEventDefault); }

cudaError_t cudaEventDestroy(cudaEvent_t e) {
        delete e;
        return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t hs) {
        EMU_BROKEN();
        if (!e)
                return emu::set_error(cudaErrorInvalidResourceHandle);
        emu_stream *s = emu::stream_of(hs);
        std::lock_guard<std::recursive_mutex> l(s->mu);
        auto mark = [e] {
                struct timespec ts;
                clock_gettime(CLOCK_MONOTONIC, &ts);
                e->t.store((double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6);
        };
        if (s->capture) {
                s->capture->nodes.push_back({"event record", mark});
                return cudaSuccess;
        }
        legacy_order(s);
        e->seq = push_locked(s, {"event record", mark});
        e->s = s;
        return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t e) {
        EMU_BROKEN();
        if (!e)
                return emu::set_error(cudaErrorInvalidResourceHandle);
        if (e->s)
                flush(e->s, e->seq);
        EMU_BROKEN();
        return cudaSuccess;
}

cudaError_t cudaEventQuery(cudaEvent_t e) { return cudaEventSynchronize(e); }

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b) {
        EMU_BROKEN();
        if (!ms || !a || !b || (a->flags & cudaEventDisableTiming) || (b->flags & cudaEventDisableTiming))
                return emu::set_error(cudaErrorInvalidResourceHandle);
        if (!a->s || !b->s || a->s->done.load() < a->seq || b->s->done.load() < b->seq)
                return emu::set_error(cudaErrorNotReady);
        *ms = (float)(b->t.load() - a->t.load());
        return cudaSuccess;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t hs, cudaEvent_t e, unsigned flags) {
        EMU_BROKEN();
        if (!e)
                return emu::set_error(cudaErrorInvalidResourceHandle);
        emu_stream *other = e->s;
        uint64_t at = e->seq;
        if (!other)
                return cudaSuccess; /* never recorded: nothing to wait for */
        return emu::enqueue_op(hs, "cudaStreamWaitEvent", [other, at] { flush(other, at); });
}

/* ------------------------------------------------------------------ graphs */
cudaError_t cudaStreamBeginCapture(cudaStream_t hs, cudaStreamCaptureMode mode) {
        EMU_BROKEN();
        emu_stream *s = emu::stream_of(hs);
        if (s->legacy)
                return emu::set_error(cudaErrorStreamCaptureUnsupported); /* the legacy stream cannot be captured */
        std::lock_guard<std::recursive_mutex> l(s->mu);
        if (s->capture)
                return emu::set_error(cudaErrorIllegalState);
        s->capture = new emu_graph();
        s->capture_bad = false;
        s->capture_thread = pthread_self();
        return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t hs, cudaGraph_t *g) {
        emu_stream *s = emu::stream_of(hs);
        std::lock_guard<std::recursive_mutex> l(s->mu);
        if (!s->capture)
                return emu::set_error(cudaErrorIllegalState);
        emu_graph *gr = s->capture;
        s->capture = nullptr;
        if (s->capture_bad) {
                delete gr;
                *g = nullptr;
                return emu::set_error(cudaErrorStreamCaptureInvalidated);
        }
        *g = gr;
        return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t hs, cudaStreamCaptureStatus *status) {
        emu_stream *s = emu::stream_of(hs);
        std::lock_guard<std::recursive_mutex> l(s->mu);
        *status = !s->capture ? cudaStreamCaptureStatusNone : s->capture_bad ? cudaStreamCaptureStatusInvalidated : cudaStreamCaptureStatusActive;
        return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t g, unsigned long long flags) {
        EMU_BROKEN();
        if (!exec || !g)
                return emu::set_error(cudaErrorInvalidValue);
        *exec = new emu_graph_exec{g->nodes, g->mem};
        return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t hs) {
        if (!exec)
                return emu::set_error(cudaErrorInvalidValue);
        std::shared_ptr<emu_graph_exec> keep(new emu_graph_exec(*exec)); /* the exec may be destroyed before this runs */
        return emu::enqueue_op(hs, "cudaGraphLaunch", [keep] {
                for (const op &o : keep->nodes) {
                        if (emu::sticky() != cudaSuccess)
                                return;
                        o.fn();
                }
        });
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
        delete exec;
        return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t g) {
        delete g;
        return cudaSuccess;
}

cudaError_t cudaGraphGetNodes(cudaGraph_t g, cudaGraphNode_t *nodes, size_t *n) {
        if (!g || !n)
                return emu::set_error(cudaErrorInvalidValue);
        static emu_graph_node dummy;
        if (nodes)
                for (size_t i = 0; i < *n && i < g->nodes.size(); i++)
                        nodes[i] = &dummy;
        *n = g->nodes.size();
        return cudaSuccess;
}

/* ------------------------------------------------------------------ plugin entry */
/* Tells the backend loader (kernels/backend_plugin.h) that this plugin's device is a CPU
 * emulation: "auto" never picks it, tests size their problems for it. */
extern "C" __attribute__((visibility("default"))) bool dsv_backend_cuda_emulated(void) { return true; }
