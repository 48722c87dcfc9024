/* The CUDA backend plugin (dsv32-backend-cuda.so): the vtable over one device and one
 * stream, device memory (cudaMalloc), pinned host staging (cudaHostAlloc), stream-ordered
 * copies, the op dispatch (one switch) and supports_op. Plugin entry points:
 *   dsv_backend_plugin_abi()           must match the loader's DSV_BACKEND_ABI
 *   dsv_backend_cuda_new(dev, &be)     -ENODEV without a usable GPU
 *   dsv_backend_cuda_last_error()      the last failure of this thread's latest vtable call
 *   dsv_backend_cuda_device_error()    "" while the device works; after a sticky CUDA error
 *                                      (the context is unusable: illegal address, ECC, ...)
 *                                      the first one, named, for the life of the process
 *
 * Copy semantics: upload returns once src may be reused (pageable src: the driver staged it;
 * pinned src from alloc_host: after the stream reached the copy); download returns with the
 * data in dst. Both, and synchronize, report device-side errors (DCU_ERR_INDEX) as -EINVAL
 * (DCU_ERR_ABSENT, a MoE row for an absent expert: -EPROTO).
 * Graphs (graph_begin/end/launch/free): stream capture of the backend's stream (thread-local
 * mode), instantiated at graph_end; while capturing, the calls that would wait for the device
 * fail with -EBUSY instead of invalidating the capture behind the caller's back. cuBLAS gets
 * a fixed workspace at start, so a captured GEMM allocates nothing; op scratch
 * (cudaMallocAsync) becomes the graph's own memory.
 * A backend is used by one thread at a time. Environment: DSV_CUDA_FP8_PATH (linear.cu),
 * DSV_CUDA_GEMV_MAX (tokens up to which the weight-streaming kernel runs, default 8),
 * DSV_CUDA_SCRATCH_MB (per-op scratch budget, default 1024), DSV_CUDA_MOE_TOKENS (the grouped
 * MoE op's launches take at most this many tokens' rows (tokens x k), default: as the scratch
 * budget allows; moe.cu). */
#include <assert.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend_plugin.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/indexer.cuh"

#define DCU_EXPORT extern "C" __attribute__((visibility("default")))

/* ------------------------------------------------------------------ errors */
/* The last failure of this thread, cleared when a vtable call begins (so that what a caller
 * reads after a failed call is that call's, never an old start-up probe's), and what the
 * call was doing (the op, "upload", "synchronize", ...), named in it. */
static __thread char errbuf[512];
static __thread const char *cur_what = "start-up";

/* After a sticky error every later CUDA call of the process fails too: the first one, kept
 * for dsv_backend_cuda_device_error() (written once, under lost_lock). */
static pthread_mutex_t lost_lock = PTHREAD_MUTEX_INITIALIZER;
static char lost_msg[512];
static int lost;

const char *dcu_last_error(void) { return errbuf; }

static void begin_call(const char *what) {
        errbuf[0] = 0;
        cur_what = what;
}

/* The errors after which the CUDA context is unusable (the CUDA runtime API's list of
 * sticky errors: the process must exit to use the device again). */
static bool is_sticky(cudaError_t e) {
        switch (e) {
        case cudaErrorIllegalAddress:
        case cudaErrorLaunchFailure:
        case cudaErrorLaunchTimeout:
        case cudaErrorHardwareStackError:
        case cudaErrorIllegalInstruction:
        case cudaErrorMisalignedAddress:
        case cudaErrorInvalidAddressSpace:
        case cudaErrorInvalidPc:
        case cudaErrorAssert:
        case cudaErrorECCUncorrectable:
        case cudaErrorNvlinkUncorrectable:
        case cudaErrorContextIsDestroyed:
        case cudaErrorDevicesUnavailable:
                return true;
        default:
                return false;
        }
}

static int errno_of_cuda(cudaError_t e) {
        if (is_sticky(e))
                return -ENOTRECOVERABLE;
        switch (e) {
        case cudaErrorMemoryAllocation:
                return -ENOMEM;
        case cudaErrorInvalidValue:
        case cudaErrorInvalidConfiguration:
        case cudaErrorInvalidDevicePointer:
        case cudaErrorInvalidPitchValue:
                return -EINVAL;
        case cudaErrorNoDevice:
        case cudaErrorInsufficientDriver:
        case cudaErrorInvalidDevice:
                return -ENODEV;
        default:
                return -EIO;
        }
}

/* "cudaErrorIllegalAddress (an illegal memory access was encountered) in op linear
 * (cudaStreamSynchronize(c->stream) at kernels/cuda/backend_cuda.cu:180)"; a sticky error
 * also becomes the device's. */
int dcu_fail_cuda(cudaError_t e, const char *stmt, const char *file, int line) {
        snprintf(errbuf, sizeof(errbuf), "%s (%s) in %s (%s at %s:%d)", cudaGetErrorName(e), cudaGetErrorString(e), cur_what, stmt,
                 file, line);
        /* The runtime keeps a failed call's error (an allocation's too) as the thread's last
         * error: cleared here, else the next op's launch check (DCU_LAUNCHED) would report it
         * and a request after an out-of-memory one would fail for nothing. */
        (void)cudaGetLastError();
        if (is_sticky(e)) {
                pthread_mutex_lock(&lost_lock);
                if (!lost) {
                        snprintf(lost_msg, sizeof(lost_msg), "%s", errbuf);
                        __atomic_store_n(&lost, 1, __ATOMIC_RELEASE);
                }
                pthread_mutex_unlock(&lost_lock);
        }
        return errno_of_cuda(e);
}

/* "cudaErrorMemoryAllocation (out of memory) in op linear: 1048576 bytes of scratch
 * (cudaMallocAsync at kernels/cuda/backend_cuda.cu:150; device memory 2097152 of 4294967296
 * bytes free)": an allocation that failed, with how much it asked for and what was left. */
int dcu_fail_alloc(cudaError_t e, size_t bytes, const char *kind, const char *call, const char *file, int line) {
        int r = dcu_fail_cuda(e, call, file, line);
        size_t fr = 0, tot = 0;
        char mem[96] = "";
        if (!is_sticky(e) && cudaMemGetInfo(&fr, &tot) == cudaSuccess)
                snprintf(mem, sizeof(mem), "; device memory %zu of %zu bytes free", fr, tot);
        else
                (void)cudaGetLastError();
        snprintf(errbuf, sizeof(errbuf), "%s (%s) in %s: %zu bytes of %s (%s at %s:%d%s)", cudaGetErrorName(e), cudaGetErrorString(e),
                 cur_what, bytes, kind, call, file, line, mem);
        return r;
}

int dcu_fail_cublas(cublasStatus_t s, const char *stmt, const char *file, int line) {
        snprintf(errbuf, sizeof(errbuf), "%s in %s (%s at %s:%d)", cublasGetStatusString(s), cur_what, stmt, file, line);
        switch (s) {
        case CUBLAS_STATUS_ALLOC_FAILED:
                return -ENOMEM;
        case CUBLAS_STATUS_INVALID_VALUE:
                return -EINVAL;
        case CUBLAS_STATUS_NOT_SUPPORTED:
        case CUBLAS_STATUS_ARCH_MISMATCH:
                return -EOPNOTSUPP;
        default:
                return -EIO;
        }
}

int dcu_fail(int err, const char *file, int line, const char *what) {
        snprintf(errbuf, sizeof(errbuf), "%s in %s (%s:%d)", what, cur_what, file, line);
        return err;
}

/* ------------------------------------------------------------------ helpers */
int dcu_scratch(struct dcu_ctx *c, size_t bytes, void **ret) {
        DCU_ALLOC(cudaMallocAsync(ret, bytes ? bytes : 256, c->stream), bytes ? bytes : 256, "scratch");
        return 0;
}

void dcu_scratch_free(struct dcu_ctx *c, void *p) {
        if (p)
                (void)cudaFreeAsync(p, c->stream);
}

struct dcu_kv dcu_kv_of(const struct dsv_kv_ref *r) {
        const struct dsv_kv_layout *L = r->layout;
        struct dcu_kv k;
        memset(&k, 0, sizeof(k));
        k.fp8 = L->format == DSV_KV_FP8;
        k.page_tokens = L->page_tokens;
        k.n_layers = L->n_layers;
        k.layer = r->layer;
        k.kv_lora = L->kv_lora;
        k.rope = L->rope;
        k.index_dim = L->index_dim;
        k.mla_rec = (int64_t)L->mla_rec;
        k.idx_rec = (int64_t)L->idx_rec;
        k.idx_scale_rec = (int64_t)L->idx_scale_rec;
        k.idx_off = (int64_t)L->idx_off;
        k.idx_scale_off = (int64_t)L->idx_scale_off;
        k.layer_page_bytes = (int64_t)L->layer_page_bytes;
        return k;
}

/* Reads and clears the device error word (the stream must be idle). Both on the backend's
 * stream: a clear left on the legacy stream is not ordered before the next kernels of a
 * non-blocking stream, and could wipe the error they set. */
static int check_err_word(struct dcu_ctx *c) {
        unsigned w = 0;
        DCU_CUDA(cudaMemcpyAsync(&w, c->err_word, sizeof(w), cudaMemcpyDeviceToHost, c->stream));
        DCU_CUDA(cudaStreamSynchronize(c->stream));
        if (w) {
                DCU_CUDA(cudaMemsetAsync(c->err_word, 0, sizeof(w), c->stream));
                if (w & DCU_ERR_ABSENT)
                        return dcu_fail(-EPROTO, __FILE__, __LINE__, "a MoE row was routed to an expert the expert table marks absent");
                return dcu_fail(-EINVAL, __FILE__, __LINE__, "a kernel met an index out of range (embedding id, row, slot or page)");
        }
        return 0;
}

/* What upload, download, synchronize and graph_begin answer during a capture. */
static int not_while_capturing(void) {
        return dcu_fail(-EBUSY, __FILE__, __LINE__, "the stream is capturing a graph: nothing may wait for the device until graph_end");
}

/* ------------------------------------------------------------------ vtable: memory */
static void cuda_free(struct dsv_backend *be) {
        if (!be)
                return;
        struct dcu_ctx *c = dcu_ctx_of(be);
        if (c) {
                cudaSetDevice(c->device);
                if (c->stream)
                        cudaStreamSynchronize(c->stream);
                if (c->lt_ws)
                        cudaFree(c->lt_ws);
                if (c->blas_ws)
                        cudaFree(c->blas_ws);
                if (c->err_word)
                        cudaFree(c->err_word);
                if (c->lt)
                        cublasLtDestroy(c->lt);
                if (c->blas)
                        cublasDestroy(c->blas);
                if (c->stream)
                        cudaStreamDestroy(c->stream);
                if (c->copy_stream) {
                        cudaStreamSynchronize(c->copy_stream);
                        cudaStreamDestroy(c->copy_stream);
                }
                if (c->copy_after)
                        cudaEventDestroy(c->copy_after);
                free(c);
        }
        free(be);
}

static int cuda_alloc(struct dsv_backend *be, size_t size, void **ret) {
        begin_call("alloc");
        struct dcu_ctx *c = dcu_ctx_of(be);
        void *p = NULL;
        DCU_CUDA(cudaSetDevice(c->device));
        DCU_ALLOC(cudaMalloc(&p, size ? size : 256), size ? size : 256, "device memory"); /* a zero-size buffer is valid, as on the CPU */
        be->bytes_allocated += size;
        *ret = p;
        return 0;
}

static void cuda_dealloc(struct dsv_backend *be, void *p, size_t size) {
        if (!p)
                return;
        struct dcu_ctx *c = dcu_ctx_of(be);
        assert(!c->capturing); /* the model never frees during a capture (graph_begin's contract) */
        cudaSetDevice(c->device);
        cudaStreamSynchronize(c->stream); /* kernels in flight may still use it */
        cudaFree(p);
        be->bytes_allocated -= size;
}

/* A copy between two places of device memory, ordered with the kernels on the stream. */
static int cuda_copy(struct dsv_backend *be, void *dst, const void *src, size_t n) {
        begin_call("copy");
        struct dcu_ctx *c = dcu_ctx_of(be);
        if (!n)
                return 0;
        DCU_CUDA(cudaSetDevice(c->device));
        DCU_CUDA(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, c->stream));
        return 0;
}

/* Free and total device memory (the KV pool is sized from it when kv-cache-mb is 0). */
static int cuda_mem_info(struct dsv_backend *be, uint64_t *free_bytes, uint64_t *total_bytes) {
        begin_call("mem_info");
        struct dcu_ctx *c = dcu_ctx_of(be);
        size_t fr = 0, tot = 0;
        DCU_CUDA(cudaSetDevice(c->device));
        DCU_CUDA(cudaMemGetInfo(&fr, &tot));
        *free_bytes = fr;
        *total_bytes = tot;
        return 0;
}

static bool is_pinned(const void *p) {
        cudaPointerAttributes a;
        if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
                cudaGetLastError();
                return false;
        }
        return a.type == cudaMemoryTypeHost;
}

static int cuda_upload(struct dsv_backend *be, void *dst, const void *src, size_t n) {
        begin_call("upload");
        struct dcu_ctx *c = dcu_ctx_of(be);
        if (c->capturing)
                return not_while_capturing();
        if (!n)
                return 0;
        DCU_CUDA(cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, c->stream));
        if (is_pinned(src)) /* truly asynchronous: src must stay valid until the copy ran */
                DCU_CUDA(cudaStreamSynchronize(c->stream));
        return 0;
}

static int cuda_download(struct dsv_backend *be, void *dst, const void *src, size_t n) {
        begin_call("download");
        struct dcu_ctx *c = dcu_ctx_of(be);
        if (c->capturing)
                return not_while_capturing();
        if (n)
                DCU_CUDA(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, c->stream));
        DCU_CUDA(cudaStreamSynchronize(c->stream));
        return check_err_word(c);
}

static int cuda_fill(struct dsv_backend *be, void *dst, int byte, size_t n) {
        begin_call("fill");
        struct dcu_ctx *c = dcu_ctx_of(be);
        if (n)
                DCU_CUDA(cudaMemsetAsync(dst, byte, n, c->stream));
        return 0;
}

static int cuda_sync(struct dsv_backend *be) {
        begin_call("synchronize");
        struct dcu_ctx *c = dcu_ctx_of(be);
        if (c->capturing)
                return not_while_capturing();
        DCU_CUDA(cudaStreamSynchronize(c->stream));
        return check_err_word(c);
}

static int cuda_alloc_host(struct dsv_backend *be, size_t size, void **ret) {
        begin_call("alloc_host");
        void *p = NULL;
        DCU_ALLOC(cudaHostAlloc(&p, size ? size : 64, cudaHostAllocPortable), size ? size : 64, "pinned host memory");
        *ret = p;
        return 0;
}

static void cuda_free_host(struct dsv_backend *be, void *p, size_t size) {
        if (p)
                cudaFreeHost(p);
}

/* Weight streaming: copies on copy_stream, so they overlap the loader's next disk reads;
 * the loader waits for an event before it reuses a staging buffer or computes. */
static int cuda_upload_async(struct dsv_backend *be, void *dst, const void *src, size_t n) {
        begin_call("upload_async");
        struct dcu_ctx *c = dcu_ctx_of(be);
        if (!n)
                return 0;
        /* after what is queued on the compute stream (a fill of the same buffer, say) */
        DCU_CUDA(cudaEventRecord(c->copy_after, c->stream));
        DCU_CUDA(cudaStreamWaitEvent(c->copy_stream, c->copy_after, 0));
        DCU_CUDA(cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, c->copy_stream));
        return 0;
}

static int cuda_event_new(struct dsv_backend *be, void **ret) {
        begin_call("event_new");
        struct dcu_ctx *c = dcu_ctx_of(be);
        cudaEvent_t ev = NULL;
        DCU_CUDA(cudaSetDevice(c->device));
        DCU_CUDA(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
        *ret = (void *)ev;
        return 0;
}

static void cuda_event_free(struct dsv_backend *be, void *ev) {
        (void)be;
        if (ev)
                cudaEventDestroy((cudaEvent_t)ev);
}

/* Downloads go on the compute stream, after the ops that make what they read. */
static int cuda_download_async(struct dsv_backend *be, void *dst, const void *src, size_t n) {
        begin_call("download_async");
        struct dcu_ctx *c = dcu_ctx_of(be);
        if (c->capturing)
                return not_while_capturing();
        if (!n)
                return 0;
        DCU_CUDA(cudaSetDevice(c->device));
        DCU_CUDA(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, c->stream));
        c->download_pending = true;
        return 0;
}

/* Recorded on the copy stream once it has caught up with the compute stream: the event
 * marks the uploads and everything queued on the compute stream (ops, downloads). */
static int cuda_event_record(struct dsv_backend *be, void *ev) {
        begin_call("event_record");
        struct dcu_ctx *c = dcu_ctx_of(be);
        if (c->capturing)
                return not_while_capturing();
        DCU_CUDA(cudaSetDevice(c->device));
        DCU_CUDA(cudaEventRecord(c->copy_after, c->stream));
        DCU_CUDA(cudaStreamWaitEvent(c->copy_stream, c->copy_after, 0));
        DCU_CUDA(cudaEventRecord((cudaEvent_t)ev, c->copy_stream));
        return 0;
}

/* After a download_async the error word is read too, as download does: the bytes came from
 * kernels that may have met an index out of range. */
static int cuda_event_wait(struct dsv_backend *be, void *ev) {
        begin_call("event_wait");
        struct dcu_ctx *c = dcu_ctx_of(be);
        if (c->capturing)
                return not_while_capturing();
        DCU_CUDA(cudaEventSynchronize((cudaEvent_t)ev));
        if (!c->download_pending)
                return 0;
        c->download_pending = false;
        return check_err_word(c);
}

/* ------------------------------------------------------------------ vtable: graphs */
static int cuda_graph_begin(struct dsv_backend *be) {
        begin_call("graph_begin");
        struct dcu_ctx *c = dcu_ctx_of(be);
        if (c->capturing)
                return not_while_capturing();
        DCU_CUDA(cudaSetDevice(c->device));
        DCU_CUDA(cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal));
        c->capturing = true;
        return 0;
}

/* Ends the capture whatever happens (the stream is usable again after it); an op that could
 * not be captured shows here as the capture's invalidation. */
static int cuda_graph_end(struct dsv_backend *be, bool keep, void **ret) {
        begin_call("graph_end");
        struct dcu_ctx *c = dcu_ctx_of(be);
        cudaGraph_t g = NULL;
        cudaGraphExec_t exec = NULL;
        if (!c->capturing)
                return dcu_fail(-EINVAL, __FILE__, __LINE__, "graph_end without graph_begin");
        c->capturing = false;
        cudaError_t e = cudaStreamEndCapture(c->stream, &g);
        if (e == cudaErrorStreamCaptureInvalidated || e == cudaErrorStreamCaptureUnsupported) {
                cudaGetLastError();
                return dcu_fail(-EOPNOTSUPP, __FILE__, __LINE__, "an op of the step could not be captured (it waited for the device)");
        }
        DCU_CUDA(e);
        if (!keep) {
                cudaGraphDestroy(g);
                return 0;
        }
        e = cudaGraphInstantiate(&exec, g, 0);
        cudaGraphDestroy(g);
        DCU_CUDA(e);
        *ret = (void *)exec;
        return 0;
}

static int cuda_graph_launch(struct dsv_backend *be, void *graph) {
        begin_call("graph_launch");
        struct dcu_ctx *c = dcu_ctx_of(be);
        if (!graph)
                return dcu_fail(-EINVAL, __FILE__, __LINE__, "graph_launch of no graph");
        if (c->capturing)
                return not_while_capturing();
        DCU_CUDA(cudaGraphLaunch((cudaGraphExec_t)graph, c->stream));
        return 0;
}

static void cuda_graph_free(struct dsv_backend *be, void *graph) {
        (void)be;
        if (graph)
                cudaGraphExecDestroy((cudaGraphExec_t)graph);
}

/* ------------------------------------------------------------------ vtable: ops */
static bool is_act(const struct dsv_tensor *t) { return t && t->type == DSV_F32 && t->stride % 4 == 0; }
static bool is_i32(const struct dsv_tensor *t) { return t && t->type == DSV_I32 && t->stride % 4 == 0; }
static bool rows_match(const struct dsv_tensor *a, const struct dsv_tensor *b) { return a->ne[1] == b->ne[1]; }
static bool is_vec(const struct dsv_tensor *t, int64_t n) {
        return t && (t->type == DSV_F32 || t->type == DSV_BF16) && t->ne[0] * t->ne[1] == n &&
               (t->ne[1] == 1 || t->stride == (size_t)t->ne[0] * dsv_dtype_size(t->type));
}
static bool is_weight(const struct dsv_tensor *w) {
        if (!w || w->stride % dsv_dtype_size(w->type) != 0)
                return false;
        if (w->type == DSV_F8_E4M3)
                return w->scale && w->scale->type == DSV_F32 && w->scale->stride % 4 == 0 &&
                       w->scale->ne[1] == dcu_ceil_div(w->ne[1], DCU_QBLOCK) && w->scale->ne[0] == dcu_ceil_div(w->ne[0], DCU_QBLOCK);
        return w->type == DSV_BF16 || w->type == DSV_F32;
}
static bool kv_ok(const struct dsv_kv_ref *kv) {
        const struct dsv_kv_layout *L = kv->layout;
        if (!L || L->page_tokens <= 0 || kv->layer < 0 || kv->layer >= L->n_layers)
                return false;
        /* records hold fp32 scales / keys: keep them 4-byte aligned */
        return L->mla_rec % 4 == 0 && L->idx_off % 4 == 0 && L->idx_scale_off % 4 == 0 && L->idx_scale_rec % 4 == 0 &&
               L->layer_page_bytes % 4 == 0 && (L->format == DSV_KV_F32 || L->kv_lora % 4 == 0);
}
static bool dcu_index_scores_smem_ok(struct dcu_ctx *c, int H, int d) {
        return H > 0 && d > 0 && dcu_index_scores_smem(H, d) <= c->smem_optin;
}
static bool at_ok(const struct dsv_kv_index *at) {
        return is_i32(at->tok_seq) && is_i32(at->tok_pos) && is_i32(at->block_table);
}

static bool cuda_supports(struct dsv_backend *be, const struct dsv_op *op) {
        struct dcu_ctx *c = dcu_ctx_of(be);
        switch (op->type) {
        case DSV_OP_EMBED:
                return is_act(op->embed.out) && op->embed.table->type == DSV_BF16 && op->embed.table->stride % 2 == 0 &&
                       op->embed.table->ne[0] == op->embed.out->ne[0] && is_i32(op->embed.ids);
        case DSV_OP_GET_ROWS:
                return is_act(op->get_rows.out) && is_act(op->get_rows.x) && is_i32(op->get_rows.rows) &&
                       op->get_rows.out->ne[0] == op->get_rows.x->ne[0];
        case DSV_OP_RMSNORM: {
                const struct dsv_op_rmsnorm *p = &op->rmsnorm;
                return is_act(p->out) && (p->x || p->res) && (!p->x || (is_act(p->x) && rows_match(p->x, p->out))) &&
                       (!p->res || (is_act(p->res) && rows_match(p->res, p->out))) && is_vec(p->w, p->out->ne[0]);
        }
        case DSV_OP_LAYERNORM: {
                const struct dsv_op_layernorm *p = &op->layernorm;
                return is_act(p->out) && is_act(p->x) && rows_match(p->x, p->out) && is_vec(p->w, p->out->ne[0]) &&
                       is_vec(p->b, p->out->ne[0]) && p->w->type == p->b->type;
        }
        case DSV_OP_LINEAR: {
                const struct dsv_op_linear *p = &op->linear;
                return is_act(p->out) && is_act(p->x) && is_weight(p->w) && p->w->ne[0] == p->x->ne[0] &&
                       p->w->ne[1] == p->out->ne[0] && rows_match(p->x, p->out) && p->x->ne[0] <= INT32_MAX &&
                       p->w->ne[1] <= INT32_MAX && p->x->ne[1] <= INT32_MAX / 3;
        }
        case DSV_OP_ACT_QUANT:
                return is_act(op->act_quant.x) && op->act_quant.q->type == DSV_U8 && op->act_quant.s->type == DSV_F32 &&
                       op->act_quant.s->stride % 4 == 0;
        case DSV_OP_ROPE:
                return is_act(op->rope.x) && is_i32(op->rope.pos) && op->rope.rope_dim % 2 == 0 && op->rope.rope_dim <= 4096 &&
                       op->rope.offset + op->rope.rope_dim <= op->rope.head_stride &&
                       (int64_t)op->rope.n_heads * op->rope.head_stride <= op->rope.x->ne[0];
        case DSV_OP_HADAMARD:
                return is_act(op->hadamard.x) && op->hadamard.d > 0 && (op->hadamard.d & (op->hadamard.d - 1)) == 0 &&
                       op->hadamard.d <= 8192 && op->hadamard.x->ne[0] % op->hadamard.d == 0;
        case DSV_OP_SWIGLU:
                return is_act(op->swiglu.out) && is_act(op->swiglu.a) && is_act(op->swiglu.b);
        case DSV_OP_ADD:
                return is_act(op->add.out) && is_act(op->add.a) && is_act(op->add.b);
        case DSV_OP_KV_STORE: {
                const struct dsv_op_kv_store *p = &op->kv_store;
                return kv_ok(&p->kv) && is_i32(p->slots) && is_act(p->latent) && is_act(p->k_pe) && is_act(p->idx_key);
        }
        case DSV_OP_KV_GATHER: {
                const struct dsv_op_kv_gather *p = &op->kv_gather;
                return kv_ok(&p->kv) && is_i32(p->pages) && is_act(p->latent) && is_act(p->k_pe);
        }
        case DSV_OP_INDEXER_TOPK: {
                const struct dsv_op_indexer_topk *p = &op->indexer_topk;
                return kv_ok(&p->kv) && at_ok(&p->at) && is_i32(p->idx) && (!p->scores || is_act(p->scores)) && is_act(p->w) &&
                       (p->faithful ? (p->head_dim <= DCU_QBLOCK && p->q->type == DSV_U8 && p->q_scale && p->q_scale->type == DSV_F32)
                                    : is_act(p->q)) &&
                       p->topk >= 0 && dcu_index_scores_smem_ok(c, p->n_heads, p->head_dim);
        }
        case DSV_OP_MLA_DECODE: {
                const struct dsv_op_mla_decode *p = &op->mla_decode;
                return kv_ok(&p->kv) && at_ok(&p->at) && is_act(p->wkv_b) && is_act(p->q) && is_act(p->out) && is_i32(p->idx) &&
                       p->kv_lora == p->kv.layout->kv_lora && p->rope == p->kv.layout->rope;
        }
        case DSV_OP_MLA_PREFILL: {
                const struct dsv_op_mla_prefill *p = &op->mla_prefill;
                return is_act(p->kvb) && is_act(p->k_pe) && is_act(p->q) && is_act(p->out) && is_i32(p->idx) &&
                       ((size_t)p->nope + p->rope + (size_t)p->idx->ne[0] + 32) * sizeof(float) <= c->smem_optin;
        }
        case DSV_OP_MOE_GATE:
                return dcu_moe_gate_ok(&op->moe_gate);
        case DSV_OP_DEQUANT: /* rows addressed in elements: strides whole elements */
                return dsv_dequant_ok(&op->dequant) && op->dequant.out->stride % dsv_dtype_size(op->dequant.out->type) == 0 &&
                       op->dequant.w->stride % dsv_dtype_size(op->dequant.w->type) == 0 &&
                       (op->dequant.w->type != DSV_F8_E4M3 || op->dequant.w->scale->stride % 4 == 0);
        case DSV_OP_MOE_DISPATCH:
        case DSV_OP_MOE_GROUPED:
        case DSV_OP_MOE_COMBINE:
                return dcu_moe_split_ok(op);
        case DSV_OP_FILL_RANDOM:
                return dsv_fill_random_ok(&op->fill_random) && op->fill_random.out->ne[1] <= INT32_MAX;
        case DSV_OP_SAMPLE:
                return dcu_sample_ok(&op->sample);
        case DSV_OP_MAX:
                break;
        }
        return false;
}

static int cuda_compute(struct dsv_backend *be, const struct dsv_op *op) {
        struct dcu_ctx *c = dcu_ctx_of(be);
        const bool f = op->faithful;
        begin_call("compute");
        if (!cuda_supports(be, op))
                return -EINVAL;
        DCU_CUDA(cudaSetDevice(c->device));
        switch (op->type) {
        case DSV_OP_EMBED:
                begin_call("op embed");
                return dcu_embed(c, &op->embed);
        case DSV_OP_GET_ROWS:
                begin_call("op get_rows");
                return dcu_get_rows(c, &op->get_rows);
        case DSV_OP_RMSNORM:
                begin_call("op rmsnorm");
                return dcu_rmsnorm(c, &op->rmsnorm, f);
        case DSV_OP_LAYERNORM:
                begin_call("op layernorm");
                return dcu_layernorm(c, &op->layernorm, f);
        case DSV_OP_LINEAR:
                begin_call("op linear");
                return dcu_linear(c, &op->linear);
        case DSV_OP_ACT_QUANT:
                begin_call("op act_quant");
                return dcu_act_quant(c, &op->act_quant);
        case DSV_OP_ROPE:
                begin_call("op rope");
                return dcu_rope(c, &op->rope, f);
        case DSV_OP_HADAMARD:
                begin_call("op hadamard");
                return dcu_hadamard(c, &op->hadamard, f);
        case DSV_OP_SWIGLU:
                begin_call("op swiglu");
                return dcu_swiglu(c, &op->swiglu, f);
        case DSV_OP_ADD:
                begin_call("op add");
                return dcu_add(c, &op->add, f);
        case DSV_OP_KV_STORE:
                begin_call("op kv_store");
                return dcu_kv_store(c, &op->kv_store);
        case DSV_OP_KV_GATHER:
                begin_call("op kv_gather");
                return dcu_kv_gather(c, &op->kv_gather);
        case DSV_OP_INDEXER_TOPK:
                begin_call("op indexer_topk");
                return dcu_indexer_topk(c, &op->indexer_topk);
        case DSV_OP_MLA_DECODE:
                begin_call("op mla_decode");
                return dcu_mla_decode(c, &op->mla_decode);
        case DSV_OP_MLA_PREFILL:
                begin_call("op mla_prefill");
                return dcu_mla_prefill(c, &op->mla_prefill);
        case DSV_OP_MOE_GATE:
                begin_call("op moe_gate");
                return dcu_moe_gate(c, &op->moe_gate);
        case DSV_OP_DEQUANT:
                begin_call("op dequant");
                return dcu_dequant(c, &op->dequant);
        case DSV_OP_MOE_DISPATCH:
        case DSV_OP_MOE_GROUPED:
        case DSV_OP_MOE_COMBINE:
                begin_call(op->type == DSV_OP_MOE_DISPATCH  ? "op moe_dispatch"
                           : op->type == DSV_OP_MOE_GROUPED ? "op moe_grouped"
                                                            : "op moe_combine");
                return dcu_moe_split(c, op);
        case DSV_OP_FILL_RANDOM:
                begin_call("op fill_random");
                return dcu_fill_random(c, &op->fill_random);
        case DSV_OP_SAMPLE:
                begin_call("op sample");
                return dcu_sample(c, &op->sample);
        case DSV_OP_MAX:
                break;
        }
        return -EOPNOTSUPP;
}

static const struct dsv_backend_ops cuda_ops = {
        /* .name = */ "cuda",
        /* .free = */ cuda_free,
        /* .alloc = */ cuda_alloc,
        /* .dealloc = */ cuda_dealloc,
        /* .upload = */ cuda_upload,
        /* .download = */ cuda_download,
        /* .fill = */ cuda_fill,
        /* .synchronize = */ cuda_sync,
        /* .supports_op = */ cuda_supports,
        /* .compute = */ cuda_compute,
        /* .alloc_host = */ cuda_alloc_host,
        /* .free_host = */ cuda_free_host,
        /* .copy = */ cuda_copy,
        /* .mem_info = */ cuda_mem_info,
        /* .describe = */ NULL,
        /* .upload_async = */ cuda_upload_async,
        /* .event_new = */ cuda_event_new,
        /* .event_free = */ cuda_event_free,
        /* .event_record = */ cuda_event_record,
        /* .event_wait = */ cuda_event_wait,
        /* .graph_begin = */ cuda_graph_begin,
        /* .graph_end = */ cuda_graph_end,
        /* .graph_launch = */ cuda_graph_launch,
        /* .graph_free = */ cuda_graph_free,
        /* .download_async = */ cuda_download_async,
};

/* ------------------------------------------------------------------ plugin entry points */
static int env_int(const char *name, int def, int lo, int hi) {
        const char *s = getenv(name);
        if (!s || !*s)
                return def;
        char *end;
        long v = strtol(s, &end, 10);
        if (*end || v < lo || v > hi)
                return def;
        return (int)v;
}

static int ctx_init(struct dcu_ctx *c, int device) {
        cudaDeviceProp prop;
        int smem = 0;
        c->device = device;
        DCU_CUDA(cudaSetDevice(device));
        DCU_CUDA(cudaGetDeviceProperties(&prop, device));
        DCU_CUDA(cudaDeviceGetAttribute(&smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
        c->n_sm = prop.multiProcessorCount;
        c->smem_optin = (size_t)smem;
        DCU_CUDA(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
        DCU_CUDA(cudaStreamCreateWithFlags(&c->copy_stream, cudaStreamNonBlocking));
        DCU_CUDA(cudaEventCreateWithFlags(&c->copy_after, cudaEventDisableTiming));
        DCU_CUBLAS(cublasCreate(&c->blas));
        DCU_CUBLAS(cublasSetStream(c->blas, c->stream));
        c->blas_ws_bytes = 4u << 20;
        DCU_ALLOC(cudaMalloc(&c->blas_ws, c->blas_ws_bytes), c->blas_ws_bytes, "cuBLAS workspace");
        DCU_CUBLAS(cublasSetWorkspace(c->blas, c->blas_ws, c->blas_ws_bytes));
        DCU_CUBLAS(cublasLtCreate(&c->lt));
        c->lt_ws_bytes = 32u << 20;
        DCU_ALLOC(cudaMalloc(&c->lt_ws, c->lt_ws_bytes), c->lt_ws_bytes, "cuBLASLt workspace");
        DCU_ALLOC(cudaMalloc((void **)&c->err_word, sizeof(unsigned)), sizeof(unsigned), "device error word");
        DCU_CUDA(cudaMemsetAsync(c->err_word, 0, sizeof(unsigned), c->stream));
        /* scratch comes from the default pool; keep freed blocks cached instead of returning them */
        cudaMemPool_t pool;
        DCU_CUDA(cudaDeviceGetDefaultMemPool(&pool, device));
        uint64_t keep = UINT64_MAX;
        DCU_CUDA(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
        c->scratch_limit = (int64_t)env_int("DSV_CUDA_SCRATCH_MB", 1024, 16, 1 << 20) << 20;
        c->gemv_max_tokens = env_int("DSV_CUDA_GEMV_MAX", 8, 0, 16);
        c->moe_max_tokens = env_int("DSV_CUDA_MOE_TOKENS", 0, 0, 1 << 30);
        const char *path = getenv("DSV_CUDA_FP8_PATH");
        c->fp8_path = DCU_FP8_AUTO;
        if (path && strcmp(path, "tiled") == 0)
                c->fp8_path = DCU_FP8_TILED;
        else if (path && strcmp(path, "gemv") == 0)
                c->fp8_path = DCU_FP8_GEMV;
        else if (path && strcmp(path, "cublaslt") == 0)
                c->fp8_path = DCU_FP8_CUBLASLT;
        DCU_TRY(dcu_linear_init(c));
        DCU_TRY(dcu_moe_init(c));
        return 0;
}

DCU_EXPORT uint32_t dsv_backend_plugin_abi(void) { return DSV_BACKEND_ABI; }

DCU_EXPORT const char *dsv_backend_cuda_last_error(void) { return errbuf; }

DCU_EXPORT const char *dsv_backend_cuda_device_error(void) {
        return __atomic_load_n(&lost, __ATOMIC_ACQUIRE) ? lost_msg : "";
}

/* Notes on the device for logs and reports: name, SMs, the FP8 GEMM and MoE paths. */
DCU_EXPORT const char *dsv_backend_cuda_describe(struct dsv_backend *be) {
        static __thread char buf[768];
        struct dcu_ctx *c = dcu_ctx_of(be);
        cudaDeviceProp prop;
        if (cudaGetDeviceProperties(&prop, c->device) != cudaSuccess)
                return "?";
        snprintf(buf, sizeof(buf), "%s (sm_%d%d, %d SMs, %.1f GiB); FP8 linear: %s; MoE: %s", prop.name, prop.major, prop.minor, c->n_sm,
                 (double)prop.totalGlobalMem / (1u << 30), c->lt_fp8_note, c->moe_note);
        return buf;
}

DCU_EXPORT int dsv_backend_cuda_new(int device, struct dsv_backend **ret) {
        int n = 0;
        cudaError_t e = cudaGetDeviceCount(&n);
        if (e != cudaSuccess || n <= 0) {
                cudaGetLastError();
                if (e != cudaSuccess)
                        dcu_fail_cuda(e, "cudaGetDeviceCount", __FILE__, __LINE__);
                else
                        dcu_fail(-ENODEV, __FILE__, __LINE__, "no CUDA device");
                return -ENODEV;
        }
        if (device < 0 || device >= n)
                return dcu_fail(-ENODEV, __FILE__, __LINE__, "CUDA device index out of range");
        int major = 0;
        if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess || major < 9) {
                cudaGetLastError();
                /* the plugin carries sm_90a code and compute_90 PTX: Hopper or newer */
                return dcu_fail(-ENODEV, __FILE__, __LINE__, "the CUDA backend needs compute capability 9.0 (Hopper) or newer");
        }
        struct dsv_backend *be = (struct dsv_backend *)calloc(1, sizeof(*be));
        struct dcu_ctx *c = (struct dcu_ctx *)calloc(1, sizeof(*c));
        if (!be || !c) {
                free(be);
                free(c);
                return -ENOMEM;
        }
        be->ops = &cuda_ops;
        be->ctx = c;
        be->host_memory = false;
        be->n_threads = 1;
        int r = ctx_init(c, device);
        if (r < 0) {
                cuda_free(be);
                return r;
        }
        *ret = be;
        return 0;
}
