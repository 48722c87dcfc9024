/* CPU backend internals: each op family's kernel, callable directly by tests.
 * All functions return 0 or -errno; they trust shapes already checked by cpu_backend.c. */
#pragma once

#include "kernels/base.h"
#include "kernels/backend.h"
#include "kernels/numerics.h"

#include "kernels/cpu/pool.h"

/* Loop hints only (-fopenmp-simd): threads come from the pool (pool.h), not OpenMP. */
#define DSV_PRAGMA_(x) _Pragma(#x)
#define OMP(x) DSV_PRAGMA_(omp x)

/* Splitting work over the pool costs ~1 us: only split work worth more than this many flops. */
#define DSV_PAR_MIN (1 << 16)

static inline float dsv_rnd(float x, bool faithful) { return faithful ? dsv_round_bf16(x) : x; }

/* Reads element i of a F32/BF16 vector or row as float. */
static inline float dsv_load_f(const void *p, enum dsv_dtype t, int64_t i) {
        return t == DSV_BF16 ? dsv_bf16_to_f32(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

/* Kernels (kernels/cpu/<family>.c). */
int dsv_cpu_embed(const struct dsv_op_embed *p);
int dsv_cpu_get_rows(const struct dsv_op_get_rows *p);
bool dsv_cpu_dequant_ok(const struct dsv_op_dequant *p);
int dsv_cpu_dequant(const struct dsv_op_dequant *p);
int dsv_cpu_fill_random(const struct dsv_op_fill_random *p);
int dsv_cpu_rmsnorm(const struct dsv_op_rmsnorm *p, bool faithful);
int dsv_cpu_layernorm(const struct dsv_op_layernorm *p, bool faithful);
int dsv_cpu_linear(const struct dsv_op_linear *p);
/* Several independent linears in one pool job (the same results as one by one); those
 * reading the same activations with the same weight format prepare them once. */
int dsv_cpu_linear_multi(const struct dsv_op_linear *const *ops, int n);
int dsv_cpu_act_quant(const struct dsv_op_act_quant *p);
int dsv_cpu_rope(const struct dsv_op_rope *p, bool faithful);
int dsv_cpu_hadamard(const struct dsv_op_hadamard *p, bool faithful);
int dsv_cpu_swiglu(const struct dsv_op_swiglu *p, bool faithful);
int dsv_cpu_add(const struct dsv_op_add *p, bool faithful);
int dsv_cpu_kv_store(const struct dsv_op_kv_store *p);
int dsv_cpu_kv_gather(const struct dsv_op_kv_gather *p);
int dsv_cpu_indexer_topk(const struct dsv_op_indexer_topk *p);
bool dsv_cpu_mla_decode_ok(const struct dsv_op_mla_decode *p);
int dsv_cpu_mla_decode(const struct dsv_op_mla_decode *p);
int dsv_cpu_mla_prefill(const struct dsv_op_mla_prefill *p);
int dsv_cpu_moe_gate(const struct dsv_op_moe_gate *p);
int dsv_cpu_moe_dispatch(const struct dsv_op_moe_dispatch *p);
int dsv_cpu_moe_grouped(const struct dsv_op_moe_grouped *p);
int dsv_cpu_moe_combine(const struct dsv_op_moe_combine *p);
bool dsv_cpu_moe_ok(const struct dsv_op *op);

/* Per-thread scratch memory that grows and is reused across calls (no page faults and no
 * zeroing on the hot path). slot < DSV_SCRATCH_SLOTS; the pointer stays valid until the same
 * thread asks for the same slot again. NULL on allocation failure. */
#define DSV_SCRATCH_SLOTS 6 /* linear: 0 activations, 1 their scales, 2 kernel, 3 prep, 4 bf16 copy, 5 several */
void *dsv_cpu_scratch(int slot, size_t bytes);

/* Building blocks shared by several kernels. */
/* Quantizes n values (n may end in a partial block): codes q, one ue8m0 scale per 128. */
void dsv_quant_row(const float *x, int64_t n, uint8_t *q, float *s);
/* Converts n e4m3 codes to float (unscaled). */
void dsv_e4m3_row_to_f32(const uint8_t *q, int64_t n, float *out);
/* Indices of the k largest of v[0..n) (NaN lowest, ties to the lower index), ascending.
 * scratch: n entries. Returns the count written (min(k, n)). */
int dsv_topk_select(const float *v, int n, int k, int32_t *out, void *scratch);
/* The softmax of n scores in place, fp32 (max-subtracted). */
void dsv_softmax(float *s, int n);
/* Address of the MLA record / indexer key of a slot in one layer of the paged cache. */
static inline uint8_t *dsv_kv_layer_page(const struct dsv_kv_ref *kv, int64_t page) {
        const struct dsv_kv_layout *L = kv->layout;
        return (uint8_t *)kv->base + ((size_t)page * (size_t)L->n_layers + (size_t)kv->layer) * L->layer_page_bytes;
}
/* Dequantizes one token's latent (F32 out, kv_lora) and k_pe (F32 out, rope). */
void dsv_kv_read_mla(const struct dsv_kv_ref *kv, int64_t slot, float *latent, float *k_pe);

/* Hot loops get per-ISA clones picked at load time (GCC ifunc). Not under ThreadSanitizer:
 * an ifunc resolver runs during relocation, before the TSan runtime is up, and crashes. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_THREAD__)
#define DSV_HOT __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define DSV_HOT
#endif
