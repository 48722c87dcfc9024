/* What the parts of the CPU emulation of CUDA share inside the emulated plugin: queueing work
 * on a stream, checking the memory an operation will touch, and the error state
 * (runtime.cc implements it; blas.cc and cub/cub.cuh use it). Not a CUDA API. */
#pragma once

#include <string>

#include "tests/gpu/emu/cuda_runtime.h"

namespace emu {

/* Queues fn on stream s (or records it into the graph s is capturing); what names it in
 * diagnostics. fn runs with device memory accessible, after the stream's earlier work. */
cudaError_t enqueue_op(cudaStream_t s, const char *what, std::function<void()> fn);

/* Whether [p, p + n) lies inside one live device allocation. */
bool device_range(const void *p, size_t n);
/* Called while an operation runs: when [p, p + n) is not inside one live device allocation
 * (or pinned host memory when host_ok), makes the device's error sticky
 * (cudaErrorIllegalAddress) with a diagnostic naming `what`, and returns false. */
bool check_access(const void *p, size_t n, bool host_ok, const char *what);

/* Makes err the sticky error of the emulated device (every later call reports it), with a
 * diagnostic printed to stderr and kept for cudaGetErrorString. */
void set_sticky(cudaError_t err, const std::string &detail);
/* The sticky error, cudaSuccess when none. */
cudaError_t sticky(void);
/* Records e as this thread's last error (cudaGetLastError) and returns it. */
cudaError_t set_error(cudaError_t e);

/* The stream a handle means (0 and the special handles: the legacy default stream). */
struct emu_stream *stream_of(cudaStream_t s);

} // namespace emu
