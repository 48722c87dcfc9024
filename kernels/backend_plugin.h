/* Opening a backend by name, with the GPU backends as plugins (shared objects dlopen'ed at
 * run time), so the core package carries no CUDA dependency.
 *
 *   "cpu"   the built-in reference backend (opts->threads worker threads, <= 0 all CPUs)
 *   "cuda"  dsv32-backend-cuda.so on GPU opts->device
 *   "auto"  cuda when the plugin loads and finds a GPU, else cpu; never a CPU emulation of a
 *           GPU; err->msg then says why cuda was not used (empty when it was)
 *
 * The plugin is searched in this order:
 *   1. $DSV32_BACKEND_PATH: a colon-separated list of directories or .so files;
 *   2. the install directory $(pkglibdir) (DSV_PLUGIN_DIR at build time);
 *   3. the build tree (DSV_PLUGIN_BUILDDIR at build time), so tests and uninstalled builds
 *      find it.
 * Every candidate is tried in that order: the first that loads and starts on the device wins,
 * one that loads but reports -ENODEV (no such device) hands over to the next, so a list may
 * name the real plugin first and the CPU emulation (tests/gpu/emu) after it.
 * A plugin exports
 *   uint32_t dsv_backend_plugin_abi(void);                       must equal DSV_BACKEND_ABI
 *   int dsv_backend_<name>_new(int device, struct dsv_backend **ret);   -ENODEV: no device
 * and may export the optional entries below (dsv_backend_<name>_last_error, _device_error,
 * _describe, _emulated: true when its device is a CPU emulation, which "auto" never picks).
 * A loaded plugin stays loaded for the life of the process (its backends' vtables live in it).
 * Sampling on the device is an op of the backend's table (DSV_OP_SAMPLE, kernels/backend.h),
 * optional: the CUDA plugin has it, the CPU backend does not. */
#pragma once

#include <stdint.h>

#include "kernels/base.h"
#include "kernels/backend.h"
#include "kernels/comm.h"

/* The interface's version: raised by hand whenever the meaning of an op, a field or a vtable
 * entry changes (2: fill_random and sample ops, the plugin's sample symbol gone; 3:
 * the MoE as dispatch / grouped / combine ops over a device-side expert table instead of
 * moe_experts, download_async, event_record marking the compute stream's work too); the sizes
 * below also catch a layout change that was not. */
#define DSV_BACKEND_ABI_VERSION 3u
/* Changes whenever struct dsv_op, struct dsv_tensor, the KV layout or the vtable change. */
#define DSV_BACKEND_ABI                                                                                                    \
        ((uint32_t)(0x44530000u ^ ((uint32_t)sizeof(struct dsv_op) << 16) ^ ((uint32_t)sizeof(struct dsv_tensor) << 8) ^     \
                    ((uint32_t)sizeof(struct dsv_kv_layout) << 4) ^ (uint32_t)sizeof(struct dsv_backend_ops) ^                \
                    ((uint32_t)DSV_OP_MAX << 24) ^ (DSV_BACKEND_ABI_VERSION * 0x9e3779b1u)))

/* Where a backend runs: a device for GPU backends, worker threads for the CPU. */
struct dsv_backend_opts {
        int device;  /* GPU index (default 0) */
        int threads; /* CPU worker threads; <= 0: all online CPUs */
};

/* Opens a backend (opts NULL: device 0, all CPUs); on failure *ret is untouched and err says
 * what was tried. With "auto", a success that fell back to the CPU leaves the reason the GPU
 * backend was not used in err->msg (empty otherwise). */
int dsv_backend_open(const char *name, const struct dsv_backend_opts *opts, struct dsv_backend **ret, struct dsv_error *err);

/* Samples one token per row of logits (backend memory, F32 [n, V]) into tokens (host) with
 * the backend's sample op (DSV_OP_SAMPLE): -EOPNOTSUPP when the backend has none (the CPU
 * backend: use the daemon's sampler), -EINVAL for bad arguments. */
int dsv_backend_sample(struct dsv_backend *be, const struct dsv_tensor *logits, const struct dsv_sample_params *params, int n,
                       int32_t *tokens);

/* The plugin's description of its last failure on this thread: the failing vtable call's
 * (the CUDA plugin clears it when a call begins), e.g. "cudaErrorMemoryAllocation (out of
 * memory) in op linear (cudaMallocAsync(...) at kernels/cuda/backend_cuda.cu:120)", or "" when
 * the backend keeps none. */
const char *dsv_backend_last_error(struct dsv_backend *be);

/* "" while the backend's device works. After a fault that leaves the device unusable for
 * this process (CUDA's sticky errors: an illegal address, an uncorrectable ECC error, a
 * kernel that trapped; the plugin's calls then return -ENOTRECOVERABLE), the first such
 * error, named as dsv_backend_last_error does, for the rest of the process: the caller must
 * stop using the device and exit (a restart gets a fresh context). Optional plugin entry
 * dsv_backend_<name>_device_error(void); the CPU backend never reports one. */
const char *dsv_backend_device_error(struct dsv_backend *be);

/* One line about the backend for logs and reports (device, paths chosen), or its name. */
const char *dsv_backend_describe(struct dsv_backend *be);

/* Communicators of a GPU backend (kernels/comm.h; NCCL in the CUDA plugin, optional plugin
 * entries dsv_backend_<name>_comm_unique_id and dsv_backend_<name>_comm_new):
 *   dsv_comm_plugin_unique_id  a new group id (NCCL: ncclGetUniqueId, 128 bytes) that rank 0
 *                              makes and hands to every rank (daemon/cluster carries it
 *                              between hosts)
 *   dsv_comm_open_plugin       rank `rank` of `size` joins the group of that id on be's
 *                              device, collectives on be's stream; every rank calls it at
 *                              the same time (threads or processes); it returns once all
 *                              joined, or -ETIMEDOUT after timeout_ms
 * -EOPNOTSUPP when the backend has no communicator (the CPU backend uses
 * dsv_comm_local_group_new or dsv_comm_mpi_new). */
int dsv_comm_plugin_unique_id(struct dsv_backend *be, void *id, size_t cap, size_t *len);
int dsv_comm_open_plugin(struct dsv_backend *be, const void *id, size_t id_len, int size, int rank, int timeout_ms,
                         struct dsv_comm **ret, struct dsv_error *err);

/* Whether the backend's device is a CPU emulation (tests/gpu/emu): slow, for correctness only. */
bool dsv_backend_is_emulated(struct dsv_backend *be);

/* Plugin entry points, as the CUDA plugin defines them. */
typedef uint32_t (*dsv_plugin_abi_fn)(void);
typedef int (*dsv_plugin_new_fn)(int device, struct dsv_backend **ret);
typedef const char *(*dsv_plugin_last_error_fn)(void);
typedef const char *(*dsv_plugin_describe_fn)(struct dsv_backend *be);
typedef int (*dsv_plugin_comm_id_fn)(void *id, size_t cap, size_t *len);
/* comm_abi: the caller's DSV_COMM_ABI; the plugin answers -EPROTO when it differs */
typedef int (*dsv_plugin_comm_new_fn)(uint32_t comm_abi, struct dsv_backend *be, const void *id, size_t id_len, int size,
                                      int rank, int timeout_ms, struct dsv_comm **ret);
typedef bool (*dsv_plugin_emulated_fn)(void);
