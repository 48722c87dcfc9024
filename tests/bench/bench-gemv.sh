#!/bin/bash
# bench-gemv (tests/bench/bench-gemv.c: the one-token FP8 linear against a read of the same
# bytes, streamed and in cache, 1 and N threads) keeps working: on 8 MiB of weights at 2
# threads it passes its own check of the kernels in use against the portable kernel and
# prints one figure line per thread count; on every other kernel path this CPU runs
# (DSV32_CPU_KERNELS) the check passes too; bad arguments get the usage (exit 2). Figures are
# not checked (a loaded machine): run it by hand on a quiet one. A few seconds.
set -uo pipefail
: "${top_builddir:?}"
fail() { echo "FAIL: $*"; exit 1; }
bg="$top_builddir/tests/bench/bench-gemv"

line='^threads [12]: streamed 8 MiB: [0-9.]+ GB/s of weights vs a read of the same bytes [0-9.]+ GB/s: ratio [0-9.]+x; in cache \(1\.0 MiB\): [0-9.]+ GB/s vs a read [0-9.]+ GB/s: ratio [0-9.]+x$'
out=$(timeout 120 "$bg" --threads 2 --mib 8 2>&1) || fail "bench-gemv: $out"
echo "$out"
grep -Eq '^bench-gemv: FP8 linear, one token \(decode\), K 1024, faithful; [a-z0-9]+ kernels: the same bits as the portable kernel on 512 rows$' <<<"$out" ||
        fail "no check line"
[ "$(grep -Ec "$line" <<<"$out")" = 2 ] || fail "not two figure lines"

for k in portable avx2 avx512 avx512bf16; do
        out=$(DSV32_CPU_KERNELS=$k timeout 120 "$bg" --threads 1 --mib 2 --k 640 2>&1) || fail "bench-gemv with $k kernels: $out"
        grep -q "kernels: the same bits as the portable kernel" <<<"$out" || fail "$k: $out"
        echo "$k: $(head -1 <<<"$out")"
done

for bad in "--threads 0" "--mib 1" "--k 64" "--nope" "--mib"; do
        timeout 30 "$bg" $bad >/dev/null 2>&1
        [ $? = 2 ] || fail "bench-gemv $bad: not the usage"
done
timeout 30 "$bg" --mib 2 --k 32768 >/dev/null 2>&1
[ $? = 2 ] || fail "weights too small for K: not refused"
echo "bench-gemv: ok"
