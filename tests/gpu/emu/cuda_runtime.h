/* Stands in for CUDA's header when tests/gpu/test-cuda-emu.cc compiles the kernels on the CPU. */
#pragma once
#include "tests/gpu/emu/cuda_emu.h"
