/* An independent UTF-8 validator (RFC 3629: no overlongs, no surrogates, nothing above
 * U+10FFFF) for checking the tokenizer's output; deliberately not the library's decoder. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

static inline bool valid_utf8(const uint8_t *s, size_t n) {
        size_t i = 0;
        while (i < n) {
                uint8_t c = s[i];
                size_t k;
                uint8_t lo = 0x80, hi = 0xbf;
                if (c < 0x80) {
                        i++;
                        continue;
                }
                if (c >= 0xc2 && c <= 0xdf)
                        k = 1;
                else if (c >= 0xe0 && c <= 0xef) {
                        k = 2;
                        lo = c == 0xe0 ? 0xa0 : 0x80;
                        hi = c == 0xed ? 0x9f : 0xbf;
                } else if (c >= 0xf0 && c <= 0xf4) {
                        k = 3;
                        lo = c == 0xf0 ? 0x90 : 0x80;
                        hi = c == 0xf4 ? 0x8f : 0xbf;
                } else
                        return false;
                if (i + k >= n)
                        return false;
                for (size_t j = 1; j <= k; j++) {
                        if (s[i + j] < lo || s[i + j] > hi)
                                return false;
                        lo = 0x80;
                        hi = 0xbf;
                }
                i += k + 1;
        }
        return true;
}
