#!/bin/bash
# make bench: `dsv32 bench ping` against a dsv32d on the tiny model (round-trip latency over
# the shared-memory rings in blocking and spin modes, and a Unix socketpair baseline measured
# in the same run), then once more with the daemon's spin disabled (--spin-us 0) to show
# what a wakeup costs on this machine.
set -euo pipefail
: "${top_builddir:?}"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dsv32-bench-XXXXXX")
: > "$tmp/empty.conf"
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
"$top_builddir/dsv32-mkmodel" --preset tiny --out "$tmp/model" >/dev/null
count=${DSV32_BENCH_COUNT:-20000}
for spin in 50 0; do
  "$top_builddir/dsv32d" --config "$tmp/empty.conf" --model "$tmp/model" --socket "$tmp/d.sock" --threads 1 \
      --spin-us "$spin" 2>"$tmp/daemon.log" &
  pid=$!
  for _ in $(seq 200); do [ -S "$tmp/d.sock" ] && "$top_builddir/dsv32" --socket "$tmp/d.sock" ping --count 1 >/dev/null 2>&1 && break; sleep 0.05; done
  echo "--- dsv32d --spin-us $spin"
  "$top_builddir/dsv32" --socket "$tmp/d.sock" bench ping --count "$count"
  kill "$pid"; wait "$pid" || true; pid=
done
