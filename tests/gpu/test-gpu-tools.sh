#!/bin/bash
# The commands a user runs, on the CUDA backend (a device, or the CPU emulation of CUDA built
# by tests/gpu/emu), against the CPU backend, on the tiny preset:
#   - dsv32-run --backend cuda: the same greedy continuation as --backend cpu
#   - dsv32d --backend cuda: the same continuation through the daemon, also for two clients
#     at once (one batch on the device: batch == each alone), and a session's second turn
#     (its KV pages stay in device memory; only the new tokens are prefilled)
#   - dsv32d --backend auto never serves from the emulation (it says so and uses the CPU)
# Exit 77 when the cuda backend cannot start at all.
set -uo pipefail
: "${top_builddir:?}"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dsv32-gpu-tools-XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; for l in "$tmp"/*.log; do [ -f "$l" ] && { echo "--- $l"; cat "$l"; }; done; exit 1; }
export DSV32_BACKEND_PATH="${DSV32_BACKEND_PATH:-$top_builddir/kernels/cuda:$top_builddir/tests/gpu/emu}"
B=$top_builddir

"$B/dsv32-mkmodel" --preset tiny --out "$tmp/model" >/dev/null || fail "dsv32-mkmodel"
prompt=3,1,4,1,5,9,2,6,5,3

# ---------------------------------------------------------------- dsv32-run
cpu=$("$B/dsv32-run" --model "$tmp/model" --tokens $prompt --generate 6 --backend cpu 2>"$tmp/run-cpu.log") || fail "dsv32-run cpu"
if ! cuda=$("$B/dsv32-run" --model "$tmp/model" --tokens $prompt --generate 6 --backend cuda --stats 2>"$tmp/run-cuda.log"); then
        grep -q "could not" "$tmp/run-cuda.log" && { echo "SKIP: the cuda backend does not start: $(cat "$tmp/run-cuda.log")"; exit 77; }
        fail "dsv32-run --backend cuda"
fi
echo "dsv32-run cpu : $cpu"
echo "dsv32-run cuda: $cuda"
[ "$cpu" = "$cuda" ] || fail "dsv32-run: the cuda backend's continuation differs"
# decode steps as graphs (default): 5 decode passes, bucket 1 eager, recorded, replayed 3 times
grep -q "graphs: on, 1 captures, 3 replays, 1 decode steps eager, 0 failed" "$tmp/run-cuda.log" || fail "dsv32-run --stats: no graph replays"
eager=$("$B/dsv32-run" --model "$tmp/model" --tokens $prompt --generate 6 --backend cuda --cuda-graphs=no --stats 2>"$tmp/run-eager.log") ||
        fail "dsv32-run --cuda-graphs=no"
[ "$eager" = "$cuda" ] || fail "dsv32-run --cuda-graphs=no: $eager, with graphs $cuda"
grep -q "graphs: off (--cuda-graphs no), 0 captures, 0 replays" "$tmp/run-eager.log" || fail "dsv32-run --cuda-graphs=no --stats"
"$B/dsv32-run" --model "$tmp/model" --tokens 1 --generate 1 --cuda-graphs=maybe 2>"$tmp/bad.log" && fail "--cuda-graphs=maybe accepted"
grep -q "must be yes or no" "$tmp/bad.log" || fail "--cuda-graphs=maybe: no clear error"

# ---------------------------------------------------------------- dsv32d
start() { # name backend
        "$B/dsv32d" --model "$tmp/model" --socket "$tmp/$1.sock" --backend "$2" --threads 1 2>"$tmp/$1.log" &
        pids+=($!)
        for _ in $(seq 600); do "$B/dsv32" --socket "$tmp/$1.sock" ping --count 1 >/dev/null 2>&1 && return 0; sleep 0.1; done
        fail "dsv32d --backend $2 did not come up"
}
gen() { # name tokens n [args]
        local s=$1 t=$2 n=$3
        shift 3
        "$B/dsv32" --socket "$tmp/$s.sock" generate --tokens "$t" --max-tokens "$n" --ids "$@"
}
start cpu cpu
start cuda cuda
a_cpu=$(gen cpu $prompt 6) && a_cuda=$(gen cuda $prompt 6) || fail "generate"
grep -q "Backend cuda" "$tmp/cuda.log" || fail "dsv32d --backend cuda did not say which device"
grep "Backend cuda" "$tmp/cuda.log"
[ "$a_cpu" = "$a_cuda" ] || fail "dsv32d: cpu $a_cpu, cuda $a_cuda"
[ "$a_cpu" = "$cpu" ] || fail "dsv32d and dsv32-run disagree: $a_cpu vs $cpu"

# two clients at once on the device, each compared with the CPU serving it alone
p2=7,7,2,1,8
b_cpu=$(gen cpu $p2 5) || fail "generate"
gen cuda $prompt 6 >"$tmp/c1.out" &
c1=$!
gen cuda $p2 5 >"$tmp/c2.out" &
c2=$!
wait $c1 && wait $c2 || fail "concurrent clients"
[ "$(cat "$tmp/c1.out")" = "$a_cpu" ] && [ "$(cat "$tmp/c2.out")" = "$b_cpu" ] ||
        fail "concurrent clients on cuda: $(cat "$tmp/c1.out") / $(cat "$tmp/c2.out"), alone on cpu: $a_cpu / $b_cpu"

# a session's second turn (the prompt extended) reuses its cached pages
s_cpu1=$(gen cpu $prompt 3 --session s) && s_cpu2=$(gen cpu $prompt,11,12,13 3 --session s) || fail "session on cpu"
s_cuda1=$(gen cuda $prompt 3 --session s) && s_cuda2=$(gen cuda $prompt,11,12,13 3 --session s) || fail "session on cuda"
[ "$s_cpu1/$s_cpu2" = "$s_cuda1/$s_cuda2" ] || fail "session turns: cpu $s_cpu1/$s_cpu2, cuda $s_cuda1/$s_cuda2"
"$B/dsv32" --socket "$tmp/cuda.sock" status >"$tmp/status.out" || fail "status"
grep -q "prefix reuse [1-9]" "$tmp/status.out" || fail "no prefix reuse on cuda: $(grep sessions "$tmp/status.out")"
echo "dsv32d cpu = cuda: $a_cuda; batch of two: $(cat "$tmp/c1.out") / $(cat "$tmp/c2.out"); session: $s_cuda1 / $s_cuda2"

# ---------------------------------------------------------------- auto
if grep -q "CPU emulation" <<< "$("$B/dsv32-run" --model "$tmp/model" --tokens 1 --generate 0 --backend cuda --stats 2>&1)" ||
        grep -q "CPU emulation" "$tmp/cuda.log"; then
        start auto auto
        gen auto 1,2 1 >/dev/null || fail "generate on auto"
        grep -q "Backend cpu" "$tmp/auto.log" || fail "dsv32d --backend auto served from the CPU emulation of CUDA"
        grep -q "Backend auto: .*CPU emulation" "$tmp/auto.log" || fail "dsv32d --backend auto did not say why it chose the CPU"
        grep "Backend auto" "$tmp/auto.log"
fi
echo "PASS"
