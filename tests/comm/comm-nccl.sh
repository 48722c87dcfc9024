#!/bin/bash
# The conformance suite on NCCL through the CUDA plugin, one rank per GPU (skips, 77,
# without a GPU or without the plugin; DSV32_REQUIRE_GPU=1 makes that a failure).
set -eu
export DSV32_BACKEND_PATH=${DSV32_BACKEND_PATH:-$top_builddir/kernels/cuda}
exec "$top_builddir/tests/comm/comm-conformance" --impl nccl
