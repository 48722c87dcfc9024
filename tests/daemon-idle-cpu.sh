#!/bin/bash
# An idle dsv32d costs no CPU: after serving one request on the CPU backend with 2 threads
# (so the worker pool has run and gone idle), the daemon with no client must use under 2%
# of one core over 5 s (utime + stime of all its threads, /proc/PID/stat).
set -uo pipefail
: "${top_builddir:?}"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dsv32-idle-XXXXXX")
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; sleep 0.2; [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; echo "--- log"; cat "$tmp/log"; exit 1; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
: > "$tmp/empty.conf"
"$top_builddir/dsv32-mkmodel" --preset tiny --out "$tmp/model" >/dev/null || fail "dsv32-mkmodel"
"$top_builddir/dsv32d" --config "$tmp/empty.conf" --model "$tmp/model" --socket "$tmp/s.sock" --threads 2 >"$tmp/log" 2>&1 &
pid=$!
for _ in $(seq 200); do "$top_builddir/dsv32" --socket "$tmp/s.sock" status 2>/dev/null | grep -q ready && break; sleep 0.1; done
"$top_builddir/dsv32" --socket "$tmp/s.sock" generate --ids --tokens 0,5,6,7 --max-tokens 8 >/dev/null || fail "generate"
sleep 1 # past the workers' spin before they sleep (DSV32_CPU_SPIN_US, 200 us)
hz=$(getconf CLK_TCK)
t0=$(cpu_ticks "$pid")
sleep 5
t1=$(cpu_ticks "$pid")
used=$((t1 - t0))
echo "idle dsv32d: $used ticks of CPU in 5 s (${hz} ticks per second; the limit, 2% of one core, is $((hz / 10)))"
grep -m1 "Backend" "$tmp/log" || true
[ "$used" -lt $((hz / 10)) ] || fail "the idle daemon used $used ticks in 5 s"
echo "PASS"
