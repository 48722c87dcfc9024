#!/bin/bash
# bench-load (tests/bench/bench-load.c, the weight-streaming benchmark the device script runs
# on a checkpoint dsv32-mkmodel writes there) keeps working: on a tiny checkpoint on the CPU,
# two loads each print the loader's figure, the host-to-backend rate and the ratio, with a CSV
# row; other queue depths and chunk sizes are taken; a preset, a missing directory and bad
# arguments are refused with a clear line; then once through the CUDA backend (a device or
# the CPU emulation: pinned staging, asynchronous copies; skipped when neither starts).
# Figures are not checked. About 5 s here.
set -uo pipefail
: "${top_builddir:?}"
B=$(cd "$top_builddir" && pwd)
export DSV32_BACKEND_PATH="${DSV32_BACKEND_PATH:-$top_builddir/kernels/cuda:$top_builddir/tests/gpu/emu}"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dsv32-bench-load-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
bl="$B/tests/bench/bench-load"
"$B/dsv32-mkmodel" --preset tiny --out "$tmp/m" >"$tmp/mk" 2>&1 || fail "mkmodel: $(cat "$tmp/mk")"

out=$(timeout 120 "$bl" --model "$tmp/m" --threads 1 --copy-mib 64 --csv "$tmp/r.csv" 2>&1) || fail "bench-load on the CPU: $out"
echo "$out"
grep -Eq "^bench-load: .*: [0-9.]+ GB of files read in [0-9.]+ s" <<<"$out" || fail "no page-cache read line"
[ "$(grep -Ec '^load [12]: [0-9.]+ GB of tensors in [0-9.]+ s: [0-9.]+ GB/s \([0-9]+ reads, ' <<<"$out")" = 2 ] || fail "not two loads"
grep -Eq '^host to cpu memory: [0-9.]+ GB/s \(plain upload, 2 MiB copies, 8 in flight, 64 MiB\)$' <<<"$out" || fail "no host-to-cpu rate"
grep -Eq '^weight streaming: [0-9.]+ GB/s = [0-9.]+ of the host-to-device rate \(best of 2 loads\)$' <<<"$out" || fail "no ratio"
grep -Eq "^bench,load,$tmp/m,qd8_chunk2MiB,[0-9.]+,[0-9.]+,GB/s,h2d_pinned,[0-9.]+,[0-9.]+,,ok$" "$tmp/r.csv" || fail "CSV: $(cat "$tmp/r.csv")"

out=$(timeout 120 "$bl" --model "$tmp/m" --threads 1 --reps 1 --queue-depth 3 --chunk-mib 1 --copy-mib 8 2>&1) ||
        fail "bench-load with qd 3, 1 MiB: $out"
grep -Eq '^host to cpu memory: .*1 MiB copies, 3 in flight, 8 MiB' <<<"$out" || fail "settings not taken: $out"

rc=0; out=$("$bl" --model preset:tiny 2>&1) || rc=$?
[ $rc = 2 ] && grep -q "a preset is made on the backend, nothing is streamed" <<<"$out" || fail "preset: exit $rc: $out"
rc=0; out=$("$bl" --model "$tmp/none" 2>&1) || rc=$?
[ $rc = 1 ] && grep -q "^bench-load: $tmp/none: No such file or directory" <<<"$out" || fail "missing dir: exit $rc: $out"
for bad in "--model" "--queue-depth 0 --model $tmp/m" "--chunk-mib x --model $tmp/m" "--reps 1"; do
        rc=0
        # shellcheck disable=SC2086
        "$bl" $bad >"$tmp/bad" 2>&1 || rc=$?
        [ $rc = 2 ] && grep -q "^usage: bench-load" "$tmp/bad" || fail "bad arguments '$bad': exit $rc: $(cat "$tmp/bad")"
done

if out=$(timeout 300 "$bl" --model "$tmp/m" --backend cuda --reps 1 --copy-mib 16 2>&1); then
        echo "$out"
        grep -Eq '^load 1: .*pinned staging' <<<"$out" && grep -Eq '^host to cuda memory: [0-9.]+ GB/s \(pinned, asynchronous' <<<"$out" ||
                fail "not pinned and asynchronous through the cuda backend: $out"
elif grep -q "could not" <<<"$out"; then
        echo "the cuda backend does not start here (not checked): $(tail -1 <<<"$out")"
else
        fail "bench-load --backend cuda: $out"
fi
echo PASS
