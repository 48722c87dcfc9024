#!/bin/bash
# bench-mla-decode (tests/bench/bench-mla-decode.c: the absorbed MLA decode reading the FP8
# kv_b against the BF16 table, same run) keeps working: with few repetitions it passes its
# own bit-for-bit check of the two forms and prints one figure line per thread count, on every
# kernel path this CPU runs (DSV32_CPU_KERNELS), and in exact numerics against the F32 table; bad arguments get the usage (exit 2). Figures
# are not checked (a loaded machine): run it by hand on a quiet one. A few seconds.
set -uo pipefail
: "${top_builddir:?}"
fail() { echo "FAIL: $*"; exit 1; }
bm="$top_builddir/tests/bench/bench-mla-decode"

line='^threads [12]: FP8 kv_b [0-9.]+ us/step \([0-9.]+ MB read\) vs (BF16|F32) table [0-9.]+ us/step \([0-9.]+ MB\): ratio [0-9.]+x$'
for k in "" portable avx2 avx512 avx512bf16; do
        out=$(DSV32_CPU_KERNELS=$k timeout 120 "$bm" --threads 2 --layers 2 --reps 3 2>&1) || fail "bench-mla-decode ${k:-default}: $out"
        echo "$out"
        grep -q "FP8 kv_b and BF16 table give the same bits" <<<"$out" || fail "no check line"
        [ "$(grep -Ec "$line" <<<"$out")" = 2 ] || fail "not two figure lines"
done
out=$(timeout 120 "$bm" --threads 1 --layers 2 --reps 3 --exact 2>&1) || fail "bench-mla-decode --exact: $out"
echo "$out"
grep -q "exact, 2 layers; .* FP8 kv_b and F32 table give the same bits" <<<"$out" || fail "no exact check line"
[ "$(grep -Ec "$line" <<<"$out")" = 1 ] || fail "not one figure line (exact)"

for bad in "--threads 0" "--layers 65" "--reps" "--nope" "--reps x"; do
        timeout 30 "$bm" $bad >/dev/null 2>&1
        [ $? = 2 ] || fail "bench-mla-decode $bad: not the usage"
done
echo "bench-mla-decode: ok"
