/* Which linear kernel runs (gemm.h): the instruction sets this CPU supports, the best of
 * them by default, DSV32_CPU_KERNELS=portable|avx2|avx512|avx512bf16 to force one, and a
 * line saying what was chosen and why (the daemon logs it at start). */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/gemm.h"

static const char *const isa_names[DSV_CPU_ISA_MAX] = {"portable", "avx2", "avx512", "avx512bf16"};

const char *dsv_cpu_isa_name(enum dsv_cpu_isa isa) { return isa < DSV_CPU_ISA_MAX ? isa_names[isa] : "?"; }

int dsv_cpu_isa_from_name(const char *s) {
        for (int i = 0; i < DSV_CPU_ISA_MAX; i++)
                if (strcmp(s, isa_names[i]) == 0)
                        return i;
        return -1;
}

bool dsv_cpu_isa_supported(enum dsv_cpu_isa isa) {
#if defined(__x86_64__) && defined(__GNUC__)
        __builtin_cpu_init();
        bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
        switch (isa) {
        case DSV_CPU_ISA_PORTABLE:
                return true;
        case DSV_CPU_ISA_AVX2:
                return avx2;
        case DSV_CPU_ISA_AVX512:
                return avx512;
        case DSV_CPU_ISA_AVX512BF16:
                return avx512 && __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("avx512bf16");
        case DSV_CPU_ISA_MAX:
                break;
        }
        return false;
#else
        return isa == DSV_CPU_ISA_PORTABLE;
#endif
}

static _Atomic int current = -1;
static char describe[200];
static pthread_once_t choose_once = PTHREAD_ONCE_INIT;

static void choose(void) {
        int best = DSV_CPU_ISA_PORTABLE;
        for (int i = DSV_CPU_ISA_MAX - 1; i > 0; i--)
                if (dsv_cpu_isa_supported((enum dsv_cpu_isa)i)) {
                        best = i;
                        break;
                }
        const char *env = getenv("DSV32_CPU_KERNELS");
        int want = env && *env ? dsv_cpu_isa_from_name(env) : -1;
        if (env && *env && want < 0)
                snprintf(describe, sizeof(describe),
                         "%s kernels (DSV32_CPU_KERNELS=%.40s is not one of portable, avx2, avx512, avx512bf16)", isa_names[best], env);
        else if (want >= 0 && !dsv_cpu_isa_supported((enum dsv_cpu_isa)want))
                snprintf(describe, sizeof(describe), "%s kernels (DSV32_CPU_KERNELS=%s: this CPU cannot run them)", isa_names[best],
                         isa_names[want]);
        else if (want >= 0) {
                best = want;
                snprintf(describe, sizeof(describe), "%s kernels (forced by DSV32_CPU_KERNELS)", isa_names[best]);
        } else
                snprintf(describe, sizeof(describe), "%s kernels (the best this CPU runs; DSV32_CPU_KERNELS forces others)",
                         isa_names[best]);
        atomic_store(&current, best);
}

enum dsv_cpu_isa dsv_cpu_isa_current(void) {
        pthread_once(&choose_once, choose);
        return (enum dsv_cpu_isa)atomic_load(&current);
}

int dsv_cpu_isa_select(enum dsv_cpu_isa isa) {
        pthread_once(&choose_once, choose);
        if (isa >= DSV_CPU_ISA_MAX || !dsv_cpu_isa_supported(isa))
                return -ENOTSUP;
        atomic_store(&current, (int)isa);
        return 0;
}

const char *dsv_cpu_isa_describe(void) {
        pthread_once(&choose_once, choose);
        return describe;
}

dsv_gemm_fn dsv_cpu_gemm_kernel(const struct dsv_gemm *g) {
        switch (dsv_cpu_isa_current()) {
        case DSV_CPU_ISA_AVX512BF16:
                return g->xb ? dsv_gemm_avx512bf16 : dsv_gemm_avx512;
        case DSV_CPU_ISA_AVX512:
                return dsv_gemm_avx512;
        case DSV_CPU_ISA_AVX2:
                return dsv_gemm_avx2;
        default:
                return dsv_gemm_portable;
        }
}
