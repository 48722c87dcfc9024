/* Counter-based random numbers (splitmix64): a stream is a key, value i is a pure function of
 * (key, i), so any tensor or element can be generated independently and in parallel, and
 * the same seed always gives the same bytes. */
#pragma once

#include <math.h>
#include <stdint.h>

#include "kernels/numerics.h" /* dsv_mix64, dsv_rand_u01 */

static inline uint64_t dsv_hash_str(const char *s, uint64_t seed) {
        uint64_t h = 0xcbf29ce484222325ull ^ seed;
        for (; *s; s++)
                h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
        return dsv_mix64(h);
}


/* standard normal: Box-Muller, values 2j and 2j+1 share one pair of uniforms */
static inline double dsv_rand_normal(uint64_t key, uint64_t i) {
        uint64_t j = i >> 1;
        double u1 = dsv_rand_u01(key, 2 * j), u2 = dsv_rand_u01(key, 2 * j + 1);
        if (u1 < 1e-300)
                u1 = 1e-300;
        double r = sqrt(-2.0 * log(u1)), a = 6.283185307179586 * u2;
        return (i & 1) ? r * sin(a) : r * cos(a);
}

/* values 2j and 2j+1 of dsv_rand_normal at once */
static inline void dsv_rand_normal2(uint64_t key, uint64_t j, double *even, double *odd) {
        double u1 = dsv_rand_u01(key, 2 * j), u2 = dsv_rand_u01(key, 2 * j + 1);
        if (u1 < 1e-300)
                u1 = 1e-300;
        double r = sqrt(-2.0 * log(u1)), a = 6.283185307179586 * u2;
        *even = r * cos(a);
        *odd = r * sin(a);
}

/* Fisher-Yates permutation of 0..n-1 from a key. */
static inline void dsv_rand_perm(uint64_t key, int *p, int n) {
        for (int i = 0; i < n; i++)
                p[i] = i;
        for (int i = n - 1; i > 0; i--) {
                int j = (int)(dsv_rand_u01(key, (uint64_t)i) * (i + 1));
                int t = p[i];
                p[i] = p[j];
                p[j] = t;
        }
}
