/* The CPU backend: host memory, the worker pool (pool.h), and the reference implementation of
 * every op. compute() dispatches on the op type; the kernels live in kernels/cpu/<family>.c,
 * the linear layer's per-instruction-set kernels in gemm_*.c (chosen in gemm_isa.c). */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

#include "kernels/cpu/cpu.h"
#include "kernels/cpu/gemm.h"

const char *dsv_op_name(enum dsv_op_type t) {
        static const char *const names[DSV_OP_MAX] = {
                "embed",    "get_rows", "rmsnorm",   "layernorm",    "linear",     "act_quant",   "rope",     "hadamard", "swiglu",
                "add",      "kv_store",  "kv_gather",    "indexer_topk", "mla_decode", "mla_prefill", "moe_gate",
                "moe_dispatch", "moe_grouped", "moe_combine", "dequant", "fill_random", "sample",
        };
        return t < DSV_OP_MAX ? names[t] : "?";
}

/* Each thread's scratch lives in a block owned by a pthread key, so it is freed when the
 * thread exits (engine threads come and go; pool workers live as long as a backend). */
struct scratch {
        void *p[DSV_SCRATCH_SLOTS];
        size_t n[DSV_SCRATCH_SLOTS];
};

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_free(void *v) {
        struct scratch *s = v;
        for (int i = 0; i < DSV_SCRATCH_SLOTS; i++)
                free(s->p[i]);
        free(s);
}

static void scratch_init(void) { (void)pthread_key_create(&scratch_key, scratch_free); }

void *dsv_cpu_scratch(int slot, size_t bytes) {
        struct scratch *s;
        pthread_once(&scratch_once, scratch_init);
        s = pthread_getspecific(scratch_key);
        if (!s) {
                s = calloc(1, sizeof(*s));
                if (!s || pthread_setspecific(scratch_key, s) != 0) {
                        free(s);
                        return NULL;
                }
        }
        if (bytes > s->n[slot]) {
                size_t n = ALIGN_UP(MAX(bytes, s->n[slot] * 2), 4096);
                void *p = NULL;
                if (posix_memalign(&p, 64, n) != 0)
                        return NULL;
                free(s->p[slot]);
                s->p[slot] = p;
                s->n[slot] = n;
        }
        return s->p[slot];
}

struct cpu_ctx {
        int n_threads;
        char describe[256];
        /* DSV32_CPU_PROFILE=1: wall time and calls per op type, printed to stderr when the
         * backend is freed (where a prefill's time goes, without a profiler) */
        bool profile;
        uint64_t prof_ns[DSV_OP_MAX], prof_cpu_ns[DSV_OP_MAX], prof_calls[DSV_OP_MAX];
};

static uint64_t clock_ns(clockid_t id) {
        struct timespec ts;
        clock_gettime(id, &ts);
        return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void profile_print(const struct cpu_ctx *ctx) {
        uint64_t total = 0, cpu = 0;
        for (int i = 0; i < DSV_OP_MAX; i++) {
                total += ctx->prof_ns[i];
                cpu += ctx->prof_cpu_ns[i];
        }
        fprintf(stderr, "cpu profile (DSV32_CPU_PROFILE): %.3f s in ops, %.3f s of the process's CPU time (all threads)\n",
                total / 1e9, cpu / 1e9);
        for (int i = 0; i < DSV_OP_MAX; i++)
                if (ctx->prof_calls[i])
                        fprintf(stderr, "  %-12s %8llu calls %9.3f s %5.1f%%  CPU %9.3f s %5.1f%%\n", dsv_op_name((enum dsv_op_type)i),
                                (unsigned long long)ctx->prof_calls[i], ctx->prof_ns[i] / 1e9,
                                total ? 100.0 * (double)ctx->prof_ns[i] / (double)total : 0.0, ctx->prof_cpu_ns[i] / 1e9,
                                cpu ? 100.0 * (double)ctx->prof_cpu_ns[i] / (double)cpu : 0.0);
}

static void cpu_free(struct dsv_backend *be) {
        struct cpu_ctx *ctx = be->ctx;
        if (ctx->profile)
                profile_print(ctx);
        dsv_cpu_pool_release();
        free(be->ctx);
        free(be);
}

static const char *cpu_describe(struct dsv_backend *be) {
        struct cpu_ctx *ctx = be->ctx;
        snprintf(ctx->describe, sizeof(ctx->describe), "%d thread%s, %s", dsv_cpu_pool_threads(),
                 dsv_cpu_pool_threads() == 1 ? "" : "s", dsv_cpu_isa_describe());
        return ctx->describe;
}

/* Large buffers (weights, KV pool) come straight from mmap with transparent huge pages
 * asked for: a 2 MiB page per fault instead of 512 small ones while the loader fills them. */
#define CPU_MMAP_MIN (32u << 20)

static int cpu_alloc(struct dsv_backend *be, size_t size, void **ret) {
        void *p = NULL;
        if (size >= CPU_MMAP_MIN) {
                p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                if (p == MAP_FAILED)
                        return -ENOMEM;
                (void)madvise(p, size, MADV_HUGEPAGE);
        } else if (posix_memalign(&p, 4096, size ? ALIGN_UP(size, 64) : 64) != 0) {
                /* page alignment for O_DIRECT and vector loads; a zero-size buffer is valid */
                return -ENOMEM;
        }
        be->bytes_allocated += size;
        *ret = p;
        return 0;
}

static void cpu_dealloc(struct dsv_backend *be, void *p, size_t size) {
        if (!p)
                return;
        be->bytes_allocated -= size;
        if (size >= CPU_MMAP_MIN)
                munmap(p, size);
        else
                free(p);
}

static int cpu_copy(struct dsv_backend *be, void *dst, const void *src, size_t n) {
        if (n)
                memcpy(dst, src, n);
        return 0;
}

static int cpu_fill(struct dsv_backend *be, void *dst, int byte, size_t n) {
        memset(dst, byte, n);
        return 0;
}

static int cpu_sync(struct dsv_backend *be) { return 0; }

static bool is_act(const struct dsv_tensor *t) { return t && t->type == DSV_F32; }
static bool rows_match(const struct dsv_tensor *a, const struct dsv_tensor *b) { return a->ne[1] == b->ne[1]; }
static bool is_vec(const struct dsv_tensor *t, int64_t n) {
        return t && (t->type == DSV_F32 || t->type == DSV_BF16) && t->ne[0] * t->ne[1] == n;
}
static bool is_weight(const struct dsv_tensor *w) {
        if (!w)
                return false;
        if (w->type == DSV_F8_E4M3)
                return w->scale && w->scale->type == DSV_F32 && w->scale->ne[1] == DIV_ROUND_UP(w->ne[1], DSV_QBLOCK) &&
                       w->scale->ne[0] == DIV_ROUND_UP(w->ne[0], DSV_QBLOCK);
        return w->type == DSV_BF16 || w->type == DSV_F32;
}

static bool cpu_supports(struct dsv_backend *be, const struct dsv_op *op) {
        switch (op->type) {
        case DSV_OP_EMBED:
                return is_act(op->embed.out) && op->embed.table->type == DSV_BF16 &&
                       op->embed.table->ne[0] == op->embed.out->ne[0] && op->embed.ids->type == DSV_I32;
        case DSV_OP_GET_ROWS:
                return is_act(op->get_rows.out) && is_act(op->get_rows.x) && op->get_rows.rows->type == DSV_I32 &&
                       op->get_rows.out->ne[0] == op->get_rows.x->ne[0];
        case DSV_OP_RMSNORM: {
                const struct dsv_op_rmsnorm *p = &op->rmsnorm;
                return is_act(p->out) && (p->x || p->res) && (!p->x || (is_act(p->x) && rows_match(p->x, p->out))) &&
                       (!p->res || (is_act(p->res) && rows_match(p->res, p->out))) && is_vec(p->w, p->out->ne[0]);
        }
        case DSV_OP_LAYERNORM:
                return is_act(op->layernorm.out) && is_act(op->layernorm.x) && is_vec(op->layernorm.w, op->layernorm.out->ne[0]) &&
                       is_vec(op->layernorm.b, op->layernorm.out->ne[0]);
        case DSV_OP_LINEAR: {
                const struct dsv_op_linear *p = &op->linear;
                return is_act(p->out) && is_act(p->x) && is_weight(p->w) && p->w->ne[0] == p->x->ne[0] &&
                       p->w->ne[1] == p->out->ne[0] && rows_match(p->x, p->out);
        }
        case DSV_OP_ACT_QUANT:
                return is_act(op->act_quant.x) && op->act_quant.q->type == DSV_U8 && op->act_quant.s->type == DSV_F32;
        case DSV_OP_ROPE:
                return is_act(op->rope.x) && op->rope.rope_dim % 2 == 0 && op->rope.rope_dim <= 4096 &&
                       op->rope.offset + op->rope.rope_dim <= op->rope.head_stride &&
                       (int64_t)op->rope.n_heads * op->rope.head_stride <= op->rope.x->ne[0];
        case DSV_OP_HADAMARD:
                return is_act(op->hadamard.x) && op->hadamard.d > 0 && (op->hadamard.d & (op->hadamard.d - 1)) == 0 &&
                       op->hadamard.x->ne[0] % op->hadamard.d == 0;
        case DSV_OP_SWIGLU:
                return is_act(op->swiglu.out) && is_act(op->swiglu.a) && is_act(op->swiglu.b);
        case DSV_OP_ADD:
                return is_act(op->add.out) && is_act(op->add.a) && is_act(op->add.b);
        case DSV_OP_KV_STORE:
        case DSV_OP_KV_GATHER:
                return true;
        case DSV_OP_INDEXER_TOPK:
                return op->indexer_topk.head_dim <= DSV_QBLOCK || !op->indexer_topk.faithful;
        case DSV_OP_MLA_DECODE:
                /* an FP8 kv_b (no dequantized table: half the bytes of the BF16 one) where its rows
                 * are made in registers; the gather paths (avx2, avx512) took 2.5-3x the op's time
                 * of the BF16 table (bench-mla-decode), so there the loader keeps the table */
                return dsv_cpu_mla_decode_ok(&op->mla_decode) &&
                       (op->mla_decode.wkv_b->type != DSV_F8_E4M3 || dsv_cpu_isa_current() == DSV_CPU_ISA_AVX512BF16);
        case DSV_OP_MLA_PREFILL:
                return is_act(op->mla_prefill.kvb);
        case DSV_OP_MOE_GATE:
                return is_act(op->moe_gate.x) && (op->moe_gate.w->type == DSV_F32 || op->moe_gate.w->type == DSV_BF16) &&
                       op->moe_gate.w->ne[1] <= 4096;
        case DSV_OP_MOE_DISPATCH:
        case DSV_OP_MOE_GROUPED:
        case DSV_OP_MOE_COMBINE:
                return dsv_cpu_moe_ok(op);
        case DSV_OP_DEQUANT:
                return dsv_cpu_dequant_ok(&op->dequant);
        case DSV_OP_FILL_RANDOM:
                return dsv_fill_random_ok(&op->fill_random);
        case DSV_OP_SAMPLE: /* optional: the daemon samples on the host (daemon/runtime/sampler.c) */
                return false;
        case DSV_OP_MAX:
                break;
        }
        return false;
}

static int compute_op(const struct dsv_op *op) {
        const bool f = op->faithful;
        switch (op->type) {
        case DSV_OP_EMBED:
                return dsv_cpu_embed(&op->embed);
        case DSV_OP_GET_ROWS:
                return dsv_cpu_get_rows(&op->get_rows);
        case DSV_OP_RMSNORM:
                return dsv_cpu_rmsnorm(&op->rmsnorm, f);
        case DSV_OP_LAYERNORM:
                return dsv_cpu_layernorm(&op->layernorm, f);
        case DSV_OP_LINEAR:
                return dsv_cpu_linear(&op->linear);
        case DSV_OP_ACT_QUANT:
                return dsv_cpu_act_quant(&op->act_quant);
        case DSV_OP_ROPE:
                return dsv_cpu_rope(&op->rope, f);
        case DSV_OP_HADAMARD:
                return dsv_cpu_hadamard(&op->hadamard, f);
        case DSV_OP_SWIGLU:
                return dsv_cpu_swiglu(&op->swiglu, f);
        case DSV_OP_ADD:
                return dsv_cpu_add(&op->add, f);
        case DSV_OP_KV_STORE:
                return dsv_cpu_kv_store(&op->kv_store);
        case DSV_OP_KV_GATHER:
                return dsv_cpu_kv_gather(&op->kv_gather);
        case DSV_OP_INDEXER_TOPK:
                return dsv_cpu_indexer_topk(&op->indexer_topk);
        case DSV_OP_MLA_DECODE:
                return dsv_cpu_mla_decode(&op->mla_decode);
        case DSV_OP_MLA_PREFILL:
                return dsv_cpu_mla_prefill(&op->mla_prefill);
        case DSV_OP_MOE_GATE:
                return dsv_cpu_moe_gate(&op->moe_gate);
        case DSV_OP_MOE_DISPATCH:
                return dsv_cpu_moe_dispatch(&op->moe_dispatch);
        case DSV_OP_MOE_GROUPED:
                return dsv_cpu_moe_grouped(&op->moe_grouped);
        case DSV_OP_MOE_COMBINE:
                return dsv_cpu_moe_combine(&op->moe_combine);
        case DSV_OP_DEQUANT:
                return dsv_cpu_dequant(&op->dequant);
        case DSV_OP_FILL_RANDOM:
                return dsv_cpu_fill_random(&op->fill_random);
        case DSV_OP_SAMPLE:
                break;
        case DSV_OP_MAX:
                break;
        }
        return -EOPNOTSUPP;
}

static int cpu_compute(struct dsv_backend *be, const struct dsv_op *op) {
        struct cpu_ctx *ctx = be->ctx;
        if (!cpu_supports(be, op))
                return -EINVAL;
        if (!ctx->profile)
                return compute_op(op);
        uint64_t t0 = clock_ns(CLOCK_MONOTONIC), c0 = clock_ns(CLOCK_PROCESS_CPUTIME_ID);
        int r = compute_op(op);
        ctx->prof_ns[op->type] += clock_ns(CLOCK_MONOTONIC) - t0;
        ctx->prof_cpu_ns[op->type] += clock_ns(CLOCK_PROCESS_CPUTIME_ID) - c0;
        ctx->prof_calls[op->type]++;
        return r;
}

/* Host memory: MemAvailable and MemTotal of /proc/meminfo. */
static int cpu_mem_info(struct dsv_backend *be, uint64_t *free_bytes, uint64_t *total_bytes) {
        FILE *f = fopen("/proc/meminfo", "re");
        char line[256];
        unsigned long long avail = 0, total = 0, v;
        if (!f)
                return -errno;
        while (fgets(line, sizeof(line), f)) {
                if (sscanf(line, "MemAvailable: %llu kB", &v) == 1)
                        avail = v * 1024;
                else if (sscanf(line, "MemTotal: %llu kB", &v) == 1)
                        total = v * 1024;
        }
        fclose(f);
        if (!avail || !total)
                return -EOPNOTSUPP;
        *free_bytes = avail;
        *total_bytes = total;
        return 0;
}

static int cpu_alloc_host(struct dsv_backend *be, size_t size, void **ret) { return cpu_alloc(be, size, ret); }
static void cpu_free_host(struct dsv_backend *be, void *p, size_t size) { cpu_dealloc(be, p, size); }

static const struct dsv_backend_ops cpu_ops = {
        .name = "cpu",
        .free = cpu_free,
        .alloc = cpu_alloc,
        .dealloc = cpu_dealloc,
        .upload = cpu_copy,
        .download = cpu_copy,
        .fill = cpu_fill,
        .synchronize = cpu_sync,
        .supports_op = cpu_supports,
        .compute = cpu_compute,
        .alloc_host = cpu_alloc_host,
        .copy = cpu_copy,
        .mem_info = cpu_mem_info,
        .free_host = cpu_free_host,
        .describe = cpu_describe,
};

int dsv_backend_cpu_new(int n_threads, struct dsv_backend **ret) {
        struct dsv_backend *be = calloc(1, sizeof(*be));
        struct cpu_ctx *ctx = calloc(1, sizeof(*ctx));
        if (!be || !ctx) {
                free(be);
                free(ctx);
                return -ENOMEM;
        }
        if (n_threads <= 0) {
                long n = sysconf(_SC_NPROCESSORS_ONLN);
                n_threads = n > 0 ? (int)n : 1;
        }
        ctx->n_threads = n_threads;
        const char *prof = getenv("DSV32_CPU_PROFILE");
        ctx->profile = prof && *prof && strcmp(prof, "0") != 0;
        int r = dsv_cpu_pool_acquire(n_threads);
        if (r < 0) {
                free(be);
                free(ctx);
                return r;
        }
        be->ops = &cpu_ops;
        be->ctx = ctx;
        be->host_memory = true;
        be->n_threads = n_threads;
        *ret = be;
        return 0;
}

void dsv_backend_free(struct dsv_backend *be) {
        if (be)
                be->ops->free(be);
}
