#!/bin/bash
# bench-prefill (tests/bench/bench-prefill.c, the prefill benchmark the device script runs on
# v32-layers:8 at 8K tokens) keeps working: on preset:tiny on the CPU, prefills of 64 and 300
# tokens each print a figure set against the FP8 linear rate measured in the same run and
# CSV rows, the FLOPs grow with the prompt, a given GEMM rate adds its ratio, a prompt past
# the model's positions is skipped with a line, bad arguments get the usage; then once
# through the CUDA backend (a device or the CPU emulation; skipped when neither starts).
# Figures are not checked: they are for `make bench` and the device. About 5 s here.
set -uo pipefail
: "${top_builddir:?}"
B=$(cd "$top_builddir" && pwd)
export DSV32_BACKEND_PATH="${DSV32_BACKEND_PATH:-$top_builddir/kernels/cuda:$top_builddir/tests/gpu/emu}"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dsv32-bench-prefill-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
bp="$B/tests/bench/bench-prefill"
line='^prefill (64|300) tokens: [0-9.]+ ms, [0-9.]+ tok/s, [0-9.]+ TFLOP/s \(([0-9.e+-]+) TFLOP: .*\); FP8 linear \[(64|300) x [0-9]+\] x \[[0-9]+ x [0-9]+\]\^T [0-9.]+ ms = [0-9.]+ TFLOP/s: ratio [0-9.]+'

out=$(timeout 120 "$bp" --model preset:tiny --threads 1 --tokens 64 --tokens 300 --reps 2 --csv "$tmp/r.csv" 2>&1) ||
        fail "bench-prefill on the CPU: $out"
echo "$out"
[ "$(grep -Ec "$line" <<<"$out")" = 2 ] || fail "not two measured prefills"
grep -q '; of the given' <<<"$out" && fail "a given rate printed without --gemm-tflops"
[ "$(grep -c ',ok$' "$tmp/r.csv")" = 4 ] || fail "CSV rows: $(cat "$tmp/r.csv")"
grep -Eq '^bench,prefill,preset:tiny,t300,[0-9.]+,[0-9.]+,TFLOP/s,fp8_linear,[0-9.]+,[0-9.]+,,ok$' "$tmp/r.csv" || fail "CSV row t300"
grep -Eq '^bench,prefill_gemm,preset:tiny,300x[0-9]+x[0-9]+,[0-9.]+,[0-9.]+,TFLOP/s,,,,,ok$' "$tmp/r.csv" || fail "CSV gemm row"
tf() { sed -nE "s/^prefill $1 tokens: .*TFLOP\/s \(([0-9.e+-]+) TFLOP:.*/\1/p" <<<"$out"; }
awk -v a="$(tf 64)" -v b="$(tf 300)" 'BEGIN { exit !(a > 0 && b > 4 * a) }' || fail "FLOPs: $(tf 64) at 64, $(tf 300) at 300"

out=$(timeout 60 "$bp" --model preset:tiny --threads 1 --tokens 200000 --tokens 32 --gemm-tflops 2.5 --csv "$tmp/s.csv" 2>&1) ||
        fail "bench-prefill past the positions: $out"
grep -q "^prefill 200000 tokens: skipped: past the model's 163840 positions" <<<"$out" || fail "not skipped: $out"
grep -Eq '^prefill 32 tokens: .*; of the given 2.5 TFLOP/s: [0-9.]+$' <<<"$out" || fail "no ratio to the given rate: $out"
grep -q ',skipped$' "$tmp/s.csv" && grep -Eq ',fp8_gemm_given,2.5000,[0-9.]+,,ok$' "$tmp/s.csv" || fail "CSV: $(cat "$tmp/s.csv")"
for bad in "--tokens 0" "--model" "--tokens x --model preset:tiny" "--gemm-tflops -1 --model preset:tiny" \
        "--gemm-tflops nan --model preset:tiny" "--reps 1"; do
        rc=0
        # shellcheck disable=SC2086
        "$bp" $bad >"$tmp/bad" 2>&1 || rc=$?
        [ $rc = 2 ] && grep -q "^usage: bench-prefill" "$tmp/bad" || fail "bad arguments '$bad': exit $rc: $(cat "$tmp/bad")"
done

if out=$(timeout 300 "$bp" --model preset:tiny --backend cuda --tokens 80 2>&1); then
        echo "$out"
        grep -Eq '^prefill 80 tokens: [0-9.]+ ms, .* ratio [0-9.]+' <<<"$out" || fail "no figure through the cuda backend: $out"
elif grep -q "could not" <<<"$out"; then
        echo "the cuda backend does not start here (not checked): $(tail -1 <<<"$out")"
else
        fail "bench-prefill --backend cuda: $out"
fi
echo PASS
