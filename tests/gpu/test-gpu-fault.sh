#!/bin/bash
# A device fault (a sticky CUDA error: what an illegal address or an uncorrectable ECC error
# does to a GPU) while dsv32d serves, and while it loads, on the CPU emulation of CUDA
# (tests/gpu/emu: DSV_CUDA_EMU_FAIL_AFTER=N faults the Nth stream operation with a sticky
# cudaErrorIllegalAddress; DSV_CUDA_EMU_COUNT_OPS=FILE counts them), tiny preset:
#   - serving: the load's operations are counted first, then the fault is aimed a little after
#     them, so that it lands in the first requests' forward passes. Two clients at once (one
#     streaming, one not) each get an ERROR naming cudaErrorIllegalAddress, no hang; dsv32d
#     exits 1 within a bound, its log and STOPPING=1/STATUS= to systemd name the error, and the
#     state directory is not written from the poisoned device.
#   - loading: dsv32d and dsv32-run exit 1 with the CUDA error's name in the message.
#   - the CPU backend: a request that fails (KV cache too small) does not end the daemon.
# Exit 77 when the emulated plugin was not built.
set -uo pipefail
: "${top_builddir:?}"
B=$top_builddir
name=gpu-fault
. "$(dirname "$0")/daemon.sh"
NAME=cudaErrorIllegalAddress

# ---------------------------------------------------------------- where to aim
# the operations of loading and coming up (no request): FAIL_AFTER beyond them lands in serving
DSV_CUDA_EMU_COUNT_OPS=$tmp/count start count "$tmp/count.sock" --backend cuda
wait_up "$tmp/count.sock" $daemon || fail "dsv32d --backend cuda (emulated) did not come up"
kill -TERM $daemon
wait_exit $daemon 60 || fail "dsv32d did not exit on SIGTERM"
load_ops=$(cat "$tmp/count") || fail "DSV_CUDA_EMU_COUNT_OPS wrote nothing"
[ "$load_ops" -gt 0 ] 2>/dev/null || fail "no operations counted while loading ($load_ops)"
echo "loading and coming up: $load_ops stream operations"

# ---------------------------------------------------------------- a fault while serving
mkdir -p "$tmp/state"
py=${PYTHON3:-python3}
"$py" "$(dirname "$0")/notify-listen.py" "$tmp/notify.sock" "$tmp/notify.out" &
pids+=($!)
for _ in $(seq 50); do [ -S "$tmp/notify.sock" ] && break; sleep 0.1; done
# a decode step of tiny is about 170 operations: the fault comes some steps into the requests,
# after both clients are in (seconds under the emulation), long before their 64 tokens end
DSV_CUDA_EMU_FAIL_AFTER=$((load_ops + 500)) NOTIFY_SOCKET=$tmp/notify.sock start serve "$tmp/serve.sock" --backend cuda \
        --state-directory "$tmp/state"
wait_up "$tmp/serve.sock" $daemon || fail "dsv32d did not come up before the fault"
t0=$(date +%s)
timeout 120 "$B/dsv32" --socket "$tmp/serve.sock" generate --tokens 1,2,3,4 --max-tokens 64 --ignore-eos --ids \
        >"$tmp/a.out" 2>&1 &
a=$!
pids+=($a)
timeout 120 "$B/dsv32" --socket "$tmp/serve.sock" generate --tokens 5,6,7 --max-tokens 64 --ignore-eos --ids --no-stream --session s1 \
        >"$tmp/b.out" 2>&1 &
b=$!
pids+=($b)
wait $a
rca=$?
wait $b
rcb=$?
[ $rca = 124 ] || [ $rcb = 124 ] && fail "a client hung after the fault (timeout 120 s)"
[ $rca != 0 ] || fail "the streaming client succeeded across the fault"
[ $rcb != 0 ] || fail "the other client succeeded across the fault"
grep -q "$NAME" "$tmp/a.out" || fail "the streaming client's error does not name $NAME"
grep -q "$NAME" "$tmp/b.out" || fail "the other client's error does not name $NAME"
grep -q "the forward pass failed: the device is lost: $NAME" "$tmp/a.out" || fail "the streaming client's error does not say the device failed"
wait_exit $daemon 60 || fail "dsv32d still runs 60 s after the fault"
echo "dsv32d exited $rc $(($(date +%s) - t0)) s after the requests began"
[ $rc = 1 ] || fail "dsv32d exited $rc after the fault, not 1"
grep -q "Exiting: .*$NAME" "$tmp/serve.log" || fail "dsv32d's log does not name $NAME when exiting"
grep -q "^STOPPING=1;STATUS=Failed: the forward pass failed: the device is lost: $NAME" "$tmp/notify.out" ||
        fail "no STOPPING=1 with a STATUS= naming $NAME sent to systemd"
[ -z "$(ls -A "$tmp/state")" ] || fail "the state directory was written from the failed device: $(ls -A "$tmp/state")"
echo "client A: $(grep -m1 "$NAME" "$tmp/a.out")"
echo "client B: $(grep -m1 "$NAME" "$tmp/b.out")"

# ---------------------------------------------------------------- a fault while loading
DSV_CUDA_EMU_FAIL_AFTER=$((load_ops / 2)) timeout 120 "$B/dsv32d" --model "$tmp/model" --socket "$tmp/load.sock" \
        --backend cuda --threads 1 2>"$tmp/load.log"
rc=$?
[ $rc = 1 ] || fail "dsv32d with a fault while loading: exit $rc, not 1"
grep -q "^cannot load the model .*the device failed: $NAME" "$tmp/load.log" || fail "dsv32d's load error does not name $NAME"
DSV_CUDA_EMU_FAIL_AFTER=$((load_ops / 2)) timeout 120 "$B/dsv32-run" --model "$tmp/model" --tokens 1,2,3 --generate 2 \
        --backend cuda 2>"$tmp/run.log" >/dev/null
rc=$?
[ $rc = 1 ] || fail "dsv32-run with a fault while loading: exit $rc, not 1"
grep -q "^dsv32-run: cannot load the model .*the device failed: $NAME" "$tmp/run.log" ||
        fail "dsv32-run's load error does not name $NAME"
echo "load: $(grep -m1 "^dsv32-run: " "$tmp/run.log")"

# ---------------------------------------------------------------- the CPU backend serves on
start cpu "$tmp/cpu.sock" --backend cpu --kv-cache-mb 1
wait_up "$tmp/cpu.sock" $daemon || fail "dsv32d --backend cpu did not come up"
big=$(seq -s, 1 3000)
"$B/dsv32" --socket "$tmp/cpu.sock" generate --tokens "$big" --max-tokens 1 --ids >"$tmp/cpu1.out" 2>&1 &&
        fail "a prompt larger than the KV cache succeeded"
"$B/dsv32" --socket "$tmp/cpu.sock" generate --tokens 1,2,3 --max-tokens 2 --ids >"$tmp/cpu2.out" 2>&1 ||
        fail "the CPU backend did not serve on after a failed request"
kill -0 $daemon 2>/dev/null || fail "dsv32d --backend cpu exited after a failed request"
kill -TERM $daemon
wait_exit $daemon 60 || fail "dsv32d --backend cpu did not exit on SIGTERM"
[ $rc = 0 ] || fail "dsv32d --backend cpu exited $rc on SIGTERM, not 0"
echo "PASS"
