/* The linear kernel in portable C (gemm_generic.h for the compiler's baseline target): the
 * reference every other kernel is tested against, and what runs on CPUs without AVX2. */
#include "config.h"

#define GEMM_NAME dsv_gemm_portable
#include "kernels/cpu/gemm_generic.h"
