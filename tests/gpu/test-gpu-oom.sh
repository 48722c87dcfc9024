#!/bin/bash
# Device memory running out (cudaErrorMemoryAllocation) while dsv32d serves, and while it
# loads, on the CPU emulation of CUDA (tests/gpu/emu: DSV_CUDA_EMU_FAIL_ALLOC=N fails the Nth
# cudaMalloc/cudaMallocAsync/cudaHostAlloc of the process; DSV_CUDA_EMU_COUNT_ALLOCS=FILE
# counts them), tiny preset.
#   - serving: an allocation failure is not a lost device (CUDA keeps the context usable, and
#     a failed forward pass leaves every sequence as it found it), so only the requests of the
#     failed pass end, with an ERROR that names cudaErrorMemoryAllocation and the bytes asked
#     for, and dsv32d serves on: two requests after it (one in the failed request's session)
#     give the tokens of the CPU backend, and SIGTERM ends it with 0.
#   - starting: the first allocation of the process fails: dsv32d exits 1 with an error naming
#     cudaErrorMemoryAllocation and the bytes.
# Exit 77 when the emulated plugin was not built. About 10 s here.
set -uo pipefail
: "${top_builddir:?}"
B=$top_builddir
name=gpu-oom
. "$(dirname "$0")/daemon.sh"
NAME=cudaErrorMemoryAllocation
PROMPT=1,2,3,4,5

# ---------------------------------------------------------------- where to aim
# the allocations of loading and coming up (no request): FAIL_ALLOC beyond them lands in serving
DSV_CUDA_EMU_COUNT_ALLOCS=$tmp/count start count "$tmp/count.sock" --backend cuda
wait_up "$tmp/count.sock" $daemon || fail "dsv32d --backend cuda (emulated) did not come up"
stop $daemon
load_allocs=$(cat "$tmp/count") || fail "DSV_CUDA_EMU_COUNT_ALLOCS wrote nothing"
[ "$load_allocs" -gt 0 ] 2>/dev/null || fail "no allocations counted while loading ($load_allocs)"
echo "loading and coming up: $load_allocs allocations"
want=$("$B/dsv32-run" --model "$tmp/model" --tokens $PROMPT --generate 3 --backend cpu 2>"$tmp/ref.log") ||
        fail "dsv32-run --backend cpu"

# ---------------------------------------------------------------- out of memory while serving
# the first allocation after coming up: the first request's first forward pass
DSV_CUDA_EMU_FAIL_ALLOC=$((load_allocs + 1)) start serve "$tmp/serve.sock" --backend cuda
wait_up "$tmp/serve.sock" $daemon || fail "dsv32d did not come up"
timeout 60 "$B/dsv32" --socket "$tmp/serve.sock" generate --tokens $PROMPT --max-tokens 3 --ids --session s1 \
        >"$tmp/a.out" 2>&1
rca=$?
[ $rca = 124 ] && fail "the request hung after running out of memory (timeout 60 s)"
[ $rca != 0 ] || fail "the request succeeded although its allocation failed"
grep -q "$NAME" "$tmp/a.out" || fail "the client's error does not name $NAME"
bytes=$(sed -n 's/^cuda-emu: .* of \([0-9]*\) bytes fails with cudaErrorMemoryAllocation.*/\1/p' "$tmp/serve.log")
[ -n "$bytes" ] || fail "the emulation did not fail an allocation"
grep -q "$bytes bytes" "$tmp/a.out" || fail "the client's error does not say how many bytes ($bytes) did not fit"
grep -q "out of memory" "$tmp/a.out" || fail "the client's error does not say out of memory"
kill -0 $daemon 2>/dev/null || fail "dsv32d exited after an allocation failed"
echo "client A: $(grep -m1 "$NAME" "$tmp/a.out")"
# then two at once, one in the session of the failed request: the CPU backend's tokens
timeout 60 "$B/dsv32" --socket "$tmp/serve.sock" generate --tokens $PROMPT --max-tokens 3 --ids >"$tmp/b.out" 2>&1 &
b=$!
pids+=($b)
timeout 60 "$B/dsv32" --socket "$tmp/serve.sock" generate --tokens $PROMPT --max-tokens 3 --ids --no-stream --session s1 \
        >"$tmp/c.out" 2>&1 &
c=$!
pids+=($c)
wait $b || fail "a request after the allocation failure failed"
wait $c || fail "a request in the failed request's session failed"
got_b=$(tr -d '\n ' <"$tmp/b.out")
got_c=$(tr -d '\n ' <"$tmp/c.out")
[ "$got_b" = "$want" ] || fail "after the allocation failure: $got_b, the CPU backend gives $want"
[ "$got_c" = "$want" ] || fail "in the failed request's session: $got_c, the CPU backend gives $want"
stop $daemon
echo "served on: $got_b (the CPU backend: $want)"

# ---------------------------------------------------------------- out of memory while starting
DSV_CUDA_EMU_FAIL_ALLOC=1 timeout 120 "$B/dsv32d" --model "$tmp/model" --socket "$tmp/load.sock" \
        --backend cuda --threads 1 2>"$tmp/load.log"
rc=$?
[ $rc = 1 ] || fail "dsv32d with its first allocation failing: exit $rc, not 1"
bytes=$(sed -n 's/^cuda-emu: .* of \([0-9]*\) bytes fails with cudaErrorMemoryAllocation.*/\1/p' "$tmp/load.log")
[ -n "$bytes" ] || fail "the emulation did not fail an allocation while starting"
grep -q "^cannot .*$NAME.* $bytes bytes" "$tmp/load.log" || fail "dsv32d's start error does not name $NAME and the $bytes bytes"
echo "start: $(grep -m1 "^cannot " "$tmp/load.log")"
echo "PASS"
