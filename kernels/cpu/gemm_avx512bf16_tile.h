/* One register tile of the AVX-512 BF16 linear kernel, included by gemm_avx512bf16.c once
 * per tile shape: TILE_R weight rows x TILE_TT tokens (both macros, undefined afterwards
 * except TILE_R), defining tile_<R>_<TT>(). */
#define TILE_CAT_(a, b, c) a##_##b##_##c
#define TILE_CAT(a, b, c) TILE_CAT_(a, b, c)

static inline __attribute__((always_inline)) void TILE_CAT(tile, TILE_R, TILE_TT)(const struct dsv_gemm *g, const uint16_t *wb,
                                                                                size_t ws, const float *wsc, int64_t n, int nr,
                                                                                int64_t t, bool fuse) {
        const int64_t Kp = g->Kp, nbk = g->nbk;
        __m512 tot[TILE_R][TILE_TT];
        _Pragma("GCC unroll 16")
        for (int r = 0; r < TILE_R; r++)
                _Pragma("GCC unroll 16")
                for (int i = 0; i < TILE_TT; i++)
                        tot[r][i] = _mm512_setzero_ps();
        for (int64_t kb = 0; kb < nbk; kb++) {
                __m512 acc[TILE_R][TILE_TT];
                _Pragma("GCC unroll 16")
                for (int r = 0; r < TILE_R; r++)
                        _Pragma("GCC unroll 16")
                        for (int i = 0; i < TILE_TT; i++)
                                acc[r][i] = _mm512_setzero_ps();
                _Pragma("GCC unroll 16")
                for (int s = 0; s < 4; s++) {
                        const int64_t o = kb * DSV_QBLOCK + 32 * s;
                        __m512i w[TILE_R];
                        _Pragma("GCC unroll 16")
                        for (int r = 0; r < TILE_R; r++)
                                w[r] = _mm512_loadu_si512(wb + r * ws + o);
                        _Pragma("GCC unroll 16")
                        for (int i = 0; i < TILE_TT; i++) {
                                __m512i x = _mm512_loadu_si512(g->xb + (t + i) * Kp + o);
                                _Pragma("GCC unroll 16")
                                for (int r = 0; r < TILE_R; r++)
                                        acc[r][i] = _mm512_dpbf16_ps(acc[r][i], (__m512bh)w[r], (__m512bh)x);
                        }
                }
                _Pragma("GCC unroll 16")
                for (int i = 0; i < TILE_TT; i++) {
                        const float as = g->xs ? g->xs[(t + i) * nbk + kb] : 1.0f;
                        _Pragma("GCC unroll 16")
                        for (int r = 0; r < TILE_R; r++) {
                                __m512 sc = _mm512_set1_ps(as * wsc[r * nbk + kb]);
                                tot[r][i] = fuse ? _mm512_fmadd_ps(acc[r][i], sc, tot[r][i])
                                                            : _mm512_add_ps(tot[r][i], _mm512_mul_ps(acc[r][i], sc));
                        }
                }
        }
        _Pragma("GCC unroll 16")
        for (int i = 0; i < TILE_TT; i++) {
                float *out = g->out + (size_t)(t + i) * g->out_stride + n;
                _Pragma("GCC unroll 16")
                for (int r = 0; r < TILE_R && r < nr; r++) {
                        float v = hsum_tree(tot[r][i]);
                        out[r] = g->round_out ? dsv_round_bf16(v) : v;
                }
        }
}

#undef TILE_TT
#undef TILE_CAT
#undef TILE_CAT_
