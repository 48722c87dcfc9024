#!/bin/bash
# dsv32d --cuda-graphs=yes|no on the CPU emulation of CUDA (tests/gpu/emu), tiny preset: three
# clients at once (different prompts, greedy) get the same tokens from dsv32d --backend cuda
# with decode steps recorded and replayed as graphs (the log shows a capture and a replay), op by op (no
# capture in the log), and from --backend cpu (test-gpu-model holds the emulated backend to
# the CPU's greedy choices on tiny); a bad value is refused with exit status 2.
# Exit 77 when the emulated plugin was not built. About 20 s here (40 s with the machine loaded ten times over).
set -uo pipefail
: "${top_builddir:?}"
B=$top_builddir
name=gpu-daemon-graphs
. "$(dirname "$0")/daemon.sh"
N=5

# serve name args...: the three requests at once, their ids in $tmp/name.{1,2,3}.out
serve() {
        local n=$1 i
        shift
        start "$n" "$tmp/$n.sock" --log-level debug "$@"
        wait_up "$tmp/$n.sock" $daemon || fail "dsv32d $* did not come up"
        local c=()
        for i in 1 2 3; do
                timeout 120 "$B/dsv32" --socket "$tmp/$n.sock" generate --tokens "$i,$((i + 10)),7" --max-tokens $N \
                        --ignore-eos --ids --no-stream >"$tmp/$n.$i.out" 2>"$tmp/$n.$i.err" &
                c+=($!)
                pids+=($!)
        done
        for i in 0 1 2; do
                wait "${c[$i]}" || fail "request $((i + 1)) of dsv32d $* failed"
        done
        stop $daemon
}

serve yes --backend cuda --cuda-graphs=yes
serve no --backend cuda --cuda-graphs=no
serve cpu --backend cpu
grep -q "Captured the decode step" "$tmp/yes.log" || fail "--cuda-graphs=yes: no decode step was captured"
grep -q "Replayed the decode graph" "$tmp/yes.log" || fail "--cuda-graphs=yes: no decode graph was replayed"
grep -q "Captured the decode step" "$tmp/no.log" && fail "--cuda-graphs=no: a decode step was captured"
grep -q "CUDA graphs off" "$tmp/yes.log" && fail "--cuda-graphs=yes: recording failed"
for i in 1 2 3; do
        y=$(tr -d '\n ' <"$tmp/yes.$i.out") n=$(tr -d '\n ' <"$tmp/no.$i.out") c=$(tr -d '\n ' <"$tmp/cpu.$i.out")
        [ "$(tr -cd , <<<"$y" | wc -c)" = $((N - 1)) ] || fail "request $i: not $N ids: $y"
        [ "$y" = "$n" ] || fail "request $i: graphs $y, op by op $n"
        [ "$y" = "$c" ] || fail "request $i: cuda $y, cpu $c"
        echo "request $i: $y (graphs, op by op, cpu)"
done
grep "Captured the decode step\|Replayed the decode graph" "$tmp/yes.log"

# a bad value: refused before anything starts
out=$("$B/dsv32d" --model "$tmp/model" --socket "$tmp/bad.sock" --backend cuda --cuda-graphs=maybe 2>&1)
rc=$?
[ $rc = 2 ] || fail "--cuda-graphs=maybe: exit $rc, not 2"
grep -q "cuda-graphs.*maybe" <<<"$out" || fail "--cuda-graphs=maybe: the error does not name the setting and value: $out"
echo "PASS"
