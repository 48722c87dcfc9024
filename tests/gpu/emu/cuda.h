/* The driver API header as far as the plugin reads it (the toolkit version), for the CPU
 * emulation of CUDA: the emulation models CUDA 13. */
#pragma once
#define CUDA_VERSION 13000
