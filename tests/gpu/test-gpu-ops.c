/* Backend conformance (ggml's test-backend-ops is the model): every op of the backend's op
 * table (enum dsv_op_type, kernels/backend.h) on the CPU backend (the reference) and the CUDA
 * backend, on a device when there is one, else on the CPU emulation of CUDA, with the same
 * code. The cases are the op families' tests (test-gpu-elementwise, -norm, -linear, -kv,
 * -indexer, -mla, -moe, -sample), linked in here (GT_CONFORMANCE, gputest.h): random inputs at several
 * shapes (671B widths on a device, smaller on the emulation), per-op tolerances on normalised
 * squared error and absolute/relative error, identical NaN/inf positions, guard bytes and row
 * padding around every output, outputs poisoned before each op. This program adds the census:
 * it fails when an op of the table got no case that ran on both backends, naming the op (the
 * sample op, which the CPU backend does not have, counts when the CUDA backend's tokens were
 * compared with the daemon's CPU sampler).
 * DSV_GPU_OPS_FAMILIES=kv,mla runs only the families named (the census then fails for the
 * ops of the others: how to see that it would).
 * Exit 0 pass, 1 fail, 77 when neither a device nor the emulation can run it. */
#include "config.h"

#include "tests/gpu/gputest.h"

unsigned long gt_op_cases[DSV_OP_MAX];

static const struct {
        const char *key, *name;
        int (*run)(void);
} families[] = {
        {"elementwise", "elementwise (embed, get_rows, dequant, fill_random, swiglu, add, rope, hadamard)", gt_family_elementwise},
        {"norm", "norm (rmsnorm, layernorm, act_quant)", gt_family_norm},
        {"linear", "linear (FP8, bf16, f32 weights; every FP8 path)", gt_family_linear},
        {"kv", "kv (kv_store, kv_gather)", gt_family_kv},
        {"indexer", "indexer (indexer_topk)", gt_family_indexer},
        {"mla", "mla (mla_decode, mla_prefill)", gt_family_mla},
        {"moe", "moe (moe_gate, moe_dispatch, moe_grouped, moe_combine)", gt_family_moe},
        {"sample", "sample (cuda vs the daemon's sampler: the cpu backend has no sample op)", gt_family_sample},
};

/* whether key is in the comma-separated list (NULL or empty: every family) */
static bool selected(const char *list, const char *key) {
        const size_t n = strlen(key);
        if (!list || !*list)
                return true;
        for (const char *p = list; p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL)
                if (strncmp(p, key, n) == 0 && (p[n] == ',' || p[n] == 0))
                        return true;
        return false;
}

int main(void) {
        int failed = 0, skipped = 0;
        const int n = (int)(sizeof(families) / sizeof(families[0]));
        const char *only = getenv("DSV_GPU_OPS_FAMILIES");
        for (int i = 0; i < n; i++) {
                if (!selected(only, families[i].key)) {
                        printf("== %s: not selected (DSV_GPU_OPS_FAMILIES)\n", families[i].name);
                        continue;
                }
                const double t0 = gt_now();
                printf("== %s\n", families[i].name);
                fflush(stdout);
                const int r = families[i].run();
                printf("== %s: %s in %.1f s\n", families[i].name, r == 0 ? "passed" : r == 77 ? "skipped" : "FAILED", gt_now() - t0);
                fflush(stdout);
                failed += r != 0 && r != 77;
                skipped += r == 77;
        }
        if (skipped == n) {
                printf("test-gpu-ops: SKIP: no CUDA device and no emulation\n");
                return 77;
        }
        int missing = 0;
        printf("op census (cases run on both backends):\n");
        for (int t = 0; t < DSV_OP_MAX; t++) {
                printf("  %-14s %4lu%s\n", dsv_op_name((enum dsv_op_type)t), gt_op_cases[t], gt_op_cases[t] ? "" : "  <- no case");
                missing += gt_op_cases[t] == 0;
        }
        if (missing)
                fprintf(stderr, "test-gpu-ops: FAIL: %d ops of the backend's table have no conformance case\n", missing);
        if (failed)
                fprintf(stderr, "test-gpu-ops: FAIL: %d of %d op families failed\n", failed, n);
        if (missing || failed || skipped)
                return 1;
        printf("test-gpu-ops: every op of the table conforms (%d op types, %d families)\n", DSV_OP_MAX, n);
        return 0;
}
