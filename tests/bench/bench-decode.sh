#!/bin/bash
# bench-decode (tests/bench/bench-decode.c, the decode benchmark the device script runs on
# v32-layers:8) keeps working: on preset:tiny on the CPU, batch 1 and 3 at contexts 100 and
# 700 each print a figure and a CSV row, the bytes a step reads grow with the context, a
# context past the model's positions and a KV pool that cannot fit are skipped with a line
# saying why, bad arguments get the usage; then once through the CUDA backend (a device or
# the CPU emulation; skipped when neither starts). Figures are not checked: they are for
# `make bench` and the device. About 10 s here.
set -uo pipefail
: "${top_builddir:?}"
B=$(cd "$top_builddir" && pwd)
export DSV32_BACKEND_PATH="${DSV32_BACKEND_PATH:-$top_builddir/kernels/cuda:$top_builddir/tests/gpu/emu}"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dsv32-bench-decode-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
bd="$B/tests/bench/bench-decode"

out=$(timeout 120 "$bd" --model preset:tiny --threads 1 --batch 1 --batch 3 --context 100 --context 700 --context 200000 \
        --steps 3 --copy-mib 16 --csv "$tmp/r.csv" 2>&1) || fail "bench-decode on the CPU: $out"
echo "$out"
[ "$(grep -Ec '^decode batch [13] context (100|700): [0-9.]+ ms/step, [0-9.]+ tok/s; roofline [0-9.]+ tok/s .*ratio [0-9.]+x' <<<"$out")" = 4 ] ||
        fail "not four measured combinations"
[ "$(grep -c "context 200000: skipped: past the model's 163840 positions" <<<"$out")" = 2 ] || fail "context past the positions not skipped"
[ "$(grep -c ',ok$' "$tmp/r.csv")" = 4 ] && [ "$(grep -c ',skipped$' "$tmp/r.csv")" = 2 ] || fail "CSV rows: $(cat "$tmp/r.csv")"
grep -q '^bench,decode,preset:tiny,b3_ctx700,[0-9.]*,[0-9.]*,tok/s,roofline,[0-9.]*,[0-9.]*,,ok$' "$tmp/r.csv" || fail "CSV row b3_ctx700"
mb() { sed -nE "s/^decode batch $1 context $2: .*\(([0-9.]+) MB a step.*/\1/p" <<<"$out"; }
awk -v a="$(mb 1 100)" -v b="$(mb 1 700)" 'BEGIN { exit !(a > 0 && b > a) }' || fail "bytes a step: $(mb 1 100) MB at 100, $(mb 1 700) at 700"

out=$(timeout 60 "$bd" --model preset:tiny --threads 1 --batch 4096 --context 100000 --steps 1 --copy-mib 16 2>&1) ||
        fail "bench-decode with a pool too large: $out"
grep -q "^decode batch 4096 context 100000: skipped: a KV pool of [0-9]* pages (.* GB) does not fit" <<<"$out" ||
        fail "a pool too large not skipped: $out"
for bad in "--batch 0" "--model" "--context x" "--steps 1"; do
        rc=0
        # shellcheck disable=SC2086
        "$bd" $bad >"$tmp/bad" 2>&1 || rc=$?
        [ $rc = 2 ] && grep -q "^usage: bench-decode" "$tmp/bad" || fail "bad arguments '$bad': exit $rc: $(cat "$tmp/bad")"
done

if out=$(timeout 300 "$bd" --model preset:tiny --backend cuda --batch 2 --context 200 --steps 2 --copy-mib 16 2>&1); then
        echo "$out"
        grep -Eq '^decode batch 2 context 200: [0-9.]+ ms/step' <<<"$out" || fail "no figure through the cuda backend: $out"
elif grep -q "could not" <<<"$out"; then
        echo "the cuda backend does not start here (not checked): $(tail -1 <<<"$out")"
else
        fail "bench-decode --backend cuda: $out"
fi
echo PASS
