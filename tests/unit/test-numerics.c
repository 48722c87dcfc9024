/* Number formats: e4m3fn decode of all 256 codes against the format's definition, encode
 * round trips and round-to-nearest-even at every midpoint, bf16 rounding, act_quant's ue8m0
 * scale bit patterns against a brute-force definition, and act_quant of known vectors. */
#include "config.h"

#include "kernels/cpu/cpu.h"
#include "tests/unit/testutil.h"

/* e4m3fn by definition: sign, 4-bit exponent (bias 7), 3-bit mantissa; exponent 0 is
 * subnormal; S.1111.111 is NaN; no infinities. */
static double e4m3_def(int c) {
        int s = c >> 7, e = (c >> 3) & 15, m = c & 7;
        double v;
        if (e == 15 && m == 7)
                return NAN;
        v = e == 0 ? ldexp(m, -9) : ldexp(8 + m, e - 10);
        return s ? -v : v;
}

int main(void) {
        /* decode: all 256 codes */
        for (int c = 0; c < 256; c++) {
                double want = e4m3_def(c);
                float got = dsv_e4m3_to_f32((uint8_t)c);
                if (isnan(want))
                        CHECK(isnan(got), "code 0x%02x should be NaN, got %g", c, got);
                else
                        CHECK(got == (float)want && !!signbit(got) == !!signbit(want), "code 0x%02x: %g, want %g", c, got, want);
        }
        CHECK(dsv_e4m3_to_f32(0x7e) == 448.0f, "max");
        /* the vectorised row conversion (16 lanes + scalar tail) agrees on every code */
        {
                uint8_t codes[256 + 7];
                float row[256 + 7];
                for (int i = 0; i < 256 + 7; i++)
                        codes[i] = (uint8_t)(i * 37 + 11);
                dsv_e4m3_row_to_f32(codes, 256 + 7, row);
                for (int i = 0; i < 256 + 7; i++) {
                        float want = dsv_e4m3_to_f32(codes[i]);
                        CHECK(isnan(want) ? isnan(row[i]) : (memcmp(&want, &row[i], 4) == 0),
                              "row conversion of 0x%02x: %g, want %g", codes[i], row[i], want);
                }
        }
        CHECK(dsv_e4m3_to_f32(0x01) == 0x1p-9f, "min subnormal");
        CHECK(dsv_e4m3_to_f32(0x08) == 0x1p-6f, "min normal");

        /* encode: exact values round trip; midpoints round to even; beyond 448 saturates */
        for (int c = 0; c < 256; c++) {
                if ((c & 0x7f) == 0x7f)
                        continue;
                float v = dsv_e4m3_to_f32((uint8_t)c);
                uint8_t q = dsv_f32_to_e4m3(v);
                CHECK(q == c || (v == 0 && (q & 0x7f) == 0), "encode(%g) = 0x%02x, want 0x%02x", v, q, c);
        }
        for (int c = 0; c < 0x7e; c++) {
                /* midpoint between code c and c+1 (positive): ties go to the even mantissa */
                double lo = e4m3_def(c), hi = e4m3_def(c + 1), mid = (lo + hi) / 2;
                uint8_t q = dsv_f32_to_e4m3((float)mid);
                int even = (c & 1) ? c + 1 : c;
                CHECK(q == even, "midpoint %.10g between 0x%02x and 0x%02x -> 0x%02x, want 0x%02x", mid, c, c + 1, q, even);
                /* just above / below the midpoint */
                CHECK(dsv_f32_to_e4m3(nextafterf((float)mid, INFINITY)) == c + 1, "above midpoint of 0x%02x", c);
                CHECK(dsv_f32_to_e4m3(nextafterf((float)mid, -INFINITY)) == c, "below midpoint of 0x%02x", c);
                CHECK(dsv_f32_to_e4m3(-(float)mid) == (0x80 | even), "negative midpoint of 0x%02x", c);
        }
        CHECK(dsv_f32_to_e4m3(460.0f) == 0x7e && dsv_f32_to_e4m3(1e30f) == 0x7e, "saturation");
        CHECK(dsv_f32_to_e4m3(NAN) == 0x7f, "NaN");
        CHECK(dsv_f32_to_e4m3(0x1p-11f) == 0 && dsv_f32_to_e4m3(0x1p-10f) == 0, "below half the min subnormal");
        CHECK(dsv_f32_to_e4m3(0x1.8p-10f) == 1, "0.75 ulp rounds up");

        /* bf16 */
        CHECK(dsv_round_bf16(1.0f) == 1.0f, "1");
        CHECK(dsv_round_bf16(1.0f + 0x1p-8f) == 1.0f, "tie to even (down)");
        CHECK(dsv_round_bf16(1.0f + 0x3p-8f) == 1.0f + 0x1p-6f, "tie to even (up)");
        CHECK(dsv_round_bf16(1.0f + 0x1p-8f + 0x1p-20f) == 1.0f + 0x1p-7f, "above tie");
        CHECK(isnan(dsv_round_bf16(NAN)), "NaN");
        CHECK(isinf(dsv_round_bf16(INFINITY)), "inf");
        CHECK(dsv_bf16_to_f32(0x3f80) == 1.0f && dsv_f32_to_bf16(-2.0f) == 0xc000, "bits");

        /* ue8m0 scale: the smallest power of two >= fp32(amax) * fp32(1/448) */
        uint64_t x = 12345;
        for (int i = 0; i < 200000; i++) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                float amax = ldexpf((float)(x % 1000000) / 1000000.0f + 0.001f, (int)(x % 60) - 30);
                float r = fmaxf(amax, 1e-4f) * (1.0f / 448.0f);
                float s = dsv_act_scale(amax);
                int e;
                CHECK(frexpf(s, &e) == 0.5f, "scale %g not a power of two", s);
                CHECK(s >= r && s / 2 < r, "scale %g for amax %g (r %g)", s, amax, r);
                if (test_failures > 20)
                        break;
        }
        CHECK(dsv_act_scale(448.0f) == (448.0f * (1.0f / 448.0f) > 1.0f ? 2.0f : 1.0f), "amax 448 (fp32 product)");
        CHECK(dsv_act_scale(0.0f) == dsv_act_scale(1e-4f), "floor at 1e-4");
        CHECK(dsv_act_scale(224.0f) <= 0.5f + 0.5f, "224");

        /* act_quant of known vectors: one block */
        {
                float v[130];
                uint8_t q[130];
                float s[2];
                for (int i = 0; i < 130; i++)
                        v[i] = (float)(i - 64) * 0.125f;
                v[129] = 104.0f; /* second, partial block */
                dsv_quant_row(v, 130, q, s);
                /* block 0: amax 8 -> 8/448 = 0.01786 -> scale 2^-5 = 0.03125; 8/0.03125 = 256 */
                CHECK(s[0] == 0x1p-5f, "block 0 scale %g", s[0]);
                CHECK(dsv_e4m3_to_f32(q[0]) * s[0] == -8.0f, "v[0] -> %g", dsv_e4m3_to_f32(q[0]) * s[0]);
                CHECK(dsv_e4m3_to_f32(q[64]) == 0.0f, "zero");
                /* 0.125 / 2^-5 = 4 exactly */
                CHECK(dsv_e4m3_to_f32(q[65]) * s[0] == 0.125f, "v[65]");
                /* block 1 (2 values, partial): amax 104 -> 104/448 -> 2^-2 */
                CHECK(s[1] == 0.25f, "block 1 scale %g", s[1]);
                CHECK(dsv_e4m3_to_f32(q[129]) * s[1] == 104.0f, "v[129] %g", dsv_e4m3_to_f32(q[129]) * s[1]);
                /* every dequantized value is within half an e4m3 step of the input */
                for (int i = 0; i < 128; i++) {
                        float dq = dsv_e4m3_to_f32(q[i]) * s[0];
                        CHECK(fabsf(dq - v[i]) <= fabsf(v[i]) / 16 + s[0] * 0x1p-9f, "v[%d] %g -> %g", i, v[i], dq);
                }
        }
        return test_result("test-numerics");
}
