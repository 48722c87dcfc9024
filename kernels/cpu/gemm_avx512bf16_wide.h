/* The prefill register tile of the AVX-512 BF16 linear kernel, included by gemm_avx512bf16.c
 * once per token count: 4 weight rows x WIDE_TT tokens (WIDE_TT undefined afterwards),
 * defining wide_<TT>().
 *
 * The same operations in the same order as tile_4_<TT> (gemm.h's canonical order), arranged
 * for many tokens: the 4 x TT block accumulators use every register the weights and the
 * activation do not, so each weight vector feeds TT vdpbf16ps and each activation vector 4;
 * the running totals (tot of gemm.h) live in an L1 array, read and written once per 128-wide
 * block, instead of in registers; and the 4 rows of a group share their block scales (rows
 * n..n+3, n a multiple of 4, lie in one 128-row block: wsc[kb] is theirs; padded rows past
 * nr compute garbage that is never stored), so the block scale a_scale * w_scale is one
 * product and one broadcast per token and block instead of one per row and token:
 *   for kb: acc[r][i] = sum of the 8 vdpbf16ps steps        (r < 4, i < TT, registers)
 *           sc_i = xs[t+i][kb] * wsc[kb]                     (fp32 product, as before)
 *           tot[r][i] = fuse ? fma(acc, sc_i, tot) : tot + acc * sc_i
 *   out[t+i][n+r] = hsum_tree(tot[r][i]) (bf16-rounded when asked) */
#define WIDE_CAT_(a, b) a##_##b
#define WIDE_CAT(a, b) WIDE_CAT_(a, b)

static inline __attribute__((always_inline)) void WIDE_CAT(wide, WIDE_TT)(const struct dsv_gemm *g, const uint16_t *wb, size_t ws,
                                                                        const float *wsc, int64_t n, int nr, int64_t t, bool fuse) {
        const int64_t Kp = g->Kp, nbk = g->nbk;
        __m512 tot[4][WIDE_TT];
        _Pragma("GCC unroll 16")
        for (int r = 0; r < 4; r++)
                _Pragma("GCC unroll 16")
                for (int i = 0; i < WIDE_TT; i++)
                        _mm512_store_ps(&tot[r][i], _mm512_setzero_ps());
        const uint16_t *xrow[WIDE_TT];
        _Pragma("GCC unroll 16")
        for (int i = 0; i < WIDE_TT; i++)
                xrow[i] = g->xb + (t + i) * Kp;
        for (int64_t kb = 0; kb < nbk; kb++) {
                __m512 acc[4][WIDE_TT];
                _Pragma("GCC unroll 16")
                for (int r = 0; r < 4; r++)
                        _Pragma("GCC unroll 16")
                        for (int i = 0; i < WIDE_TT; i++)
                                acc[r][i] = _mm512_setzero_ps();
                _Pragma("GCC unroll 4")
                for (int s = 0; s < 4; s++) {
                        const int64_t o = kb * DSV_QBLOCK + 32 * s;
                        __m512i w0 = _mm512_loadu_si512(wb + o), w1 = _mm512_loadu_si512(wb + ws + o);
                        __m512i w2 = _mm512_loadu_si512(wb + 2 * ws + o), w3 = _mm512_loadu_si512(wb + 3 * ws + o);
                        _Pragma("GCC unroll 16")
                        for (int i = 0; i < WIDE_TT; i++) {
                                __m512bh x = (__m512bh)_mm512_loadu_si512(xrow[i] + o);
                                acc[0][i] = _mm512_dpbf16_ps(acc[0][i], (__m512bh)w0, x);
                                acc[1][i] = _mm512_dpbf16_ps(acc[1][i], (__m512bh)w1, x);
                                acc[2][i] = _mm512_dpbf16_ps(acc[2][i], (__m512bh)w2, x);
                                acc[3][i] = _mm512_dpbf16_ps(acc[3][i], (__m512bh)w3, x);
                        }
                }
                const float wsk = wsc[kb];
                _Pragma("GCC unroll 16")
                for (int i = 0; i < WIDE_TT; i++) {
                        const __m512 sc = _mm512_set1_ps((g->xs ? g->xs[(t + i) * nbk + kb] : 1.0f) * wsk);
                        _Pragma("GCC unroll 16")
                        for (int r = 0; r < 4; r++) {
                                __m512 v = _mm512_load_ps(&tot[r][i]);
                                v = fuse ? _mm512_fmadd_ps(acc[r][i], sc, v) : _mm512_add_ps(v, _mm512_mul_ps(acc[r][i], sc));
                                _mm512_store_ps(&tot[r][i], v);
                        }
                }
        }
        _Pragma("GCC unroll 16")
        for (int i = 0; i < WIDE_TT; i++) {
                float *out = g->out + (size_t)(t + i) * g->out_stride + n;
                _Pragma("GCC unroll 4")
                for (int r = 0; r < 4 && r < nr; r++) {
                        float v = hsum_tree(_mm512_load_ps(&tot[r][i]));
                        out[r] = g->round_out ? dsv_round_bf16(v) : v;
                }
        }
}

#undef WIDE_TT
#undef WIDE_CAT
#undef WIDE_CAT_
