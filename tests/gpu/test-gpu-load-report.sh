#!/bin/bash
# What a load reports, on the CUDA backend (the CPU emulation of CUDA in tests/gpu/emu) and
# the CPU, tiny preset:
#   - dsv32-run --stats: "load: N tensor bytes, R bytes read from disk at X GB/s, U bytes into
#     cuda memory at Y GB/s": N and U equal the checkpoint's tensor bytes (summed from the
#     safetensors headers here), R >= N; on the CPU no device figures
#   - dsv32d's "Loaded" line: the same bytes and both rates; progress lines before it (the
#     emulation's copies slowed down: a load of seconds) with the rates and growing percentages
#   - sd_notify: while loading, STATUS= carries the bytes read and both rates, with
#     EXTEND_TIMEOUT_USEC beside it; then READY=1
# Exit 77 when the emulated plugin was not built or python3 is missing.
set -uo pipefail
: "${top_builddir:?}"
B=$top_builddir
emu=$B/tests/gpu/emu
py=${PYTHON3:-python3}
[ -f "$emu/dsv32-backend-cuda.so" ] || { echo "SKIP: $emu/dsv32-backend-cuda.so not built"; exit 77; }
command -v "$py" >/dev/null || { echo "SKIP: no python3 for the safetensors headers"; exit 77; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dsv32-gpu-load-report-XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; for l in "$tmp"/*.log; do [ -f "$l" ] && { echo "--- $l"; cat "$l"; }; done; exit 1; }
export DSV32_BACKEND_PATH=$emu
"$B/dsv32-mkmodel" --preset tiny --out "$tmp/model" >/dev/null || fail "dsv32-mkmodel"

# the checkpoint's tensor bytes, from each shard's safetensors header
tensor_bytes=$("$py" -c '
import glob, json, struct, sys
n = 0
for f in glob.glob(sys.argv[1] + "/*.safetensors"):
    with open(f, "rb") as h:
        hdr = json.loads(h.read(struct.unpack("<Q", h.read(8))[0]))
    n += sum(t["data_offsets"][1] - t["data_offsets"][0] for k, t in hdr.items() if k != "__metadata__")
print(n)' "$tmp/model") || fail "reading the safetensors headers"
echo "checkpoint: $tensor_bytes tensor bytes"
[ "$tensor_bytes" -gt 0 ] || fail "no tensor bytes in the checkpoint"

# ---------------------------------------------------------------- dsv32-run --stats
check_run() { # backend
        "$B/dsv32-run" --model "$tmp/model" --tokens 1,2 --generate 1 --backend "$1" --mtp off --stats 2>"$tmp/run-$1.log" >/dev/null ||
                fail "dsv32-run --backend $1"
        local line
        line=$(grep "^load: " "$tmp/run-$1.log") || fail "dsv32-run --backend $1 --stats: no load line"
        echo "$1: $line"
        [[ $line =~ ^load:\ ([0-9]+)\ tensor\ bytes,\ ([0-9]+)\ bytes\ read\ from\ disk\ at\ [0-9.]+\ GB/s ]] ||
                fail "dsv32-run --backend $1: load line not as documented"
        [ "${BASH_REMATCH[1]}" = "$tensor_bytes" ] || fail "$1: ${BASH_REMATCH[1]} tensor bytes loaded, the checkpoint has $tensor_bytes"
        [ "${BASH_REMATCH[2]}" -ge "$tensor_bytes" ] || fail "$1: fewer bytes read than the tensors hold"
        if [ "$1" = cuda ]; then
                [[ $line =~ ,\ ([0-9]+)\ bytes\ into\ cuda\ memory\ at\ [0-9.]+\ GB/s ]] || fail "cuda: no device figures"
                [ "${BASH_REMATCH[1]}" = "$tensor_bytes" ] || fail "cuda: ${BASH_REMATCH[1]} bytes uploaded, not $tensor_bytes"
        else
                [[ $line != *"into"* ]] || fail "cpu: device figures on a host-memory backend"
        fi
}
check_run cuda
check_run cpu

# ---------------------------------------------------------------- dsv32d and sd_notify
"$py" "$(dirname "$0")/notify-listen.py" "$tmp/notify.sock" "$tmp/notify.out" &
pids+=($!)
for _ in $(seq 50); do [ -S "$tmp/notify.sock" ] && break; sleep 0.1; done
# each copy made 6 ms slower by the emulation: a load of seconds, so that progress lines and
# the 1 s status updates come before the end
DSV_CUDA_EMU_COPY_DELAY_US=6000 NOTIFY_SOCKET=$tmp/notify.sock "$B/dsv32d" --model "$tmp/model" --socket "$tmp/d.sock" --backend cuda --threads 1 --mtp off \
        2>"$tmp/daemon.log" &
pids+=($!)
for _ in $(seq 600); do grep -q "READY=1" "$tmp/notify.out" 2>/dev/null && break; sleep 0.1; done
grep -q "READY=1" "$tmp/notify.out" || fail "dsv32d sent no READY=1"
line=$(grep "Loaded " "$tmp/daemon.log") || fail "dsv32d: no Loaded line"
echo "dsv32d: $line"
[[ $line =~ :\ ([0-9]+)\ tensor\ bytes\ .*:\ ([0-9]+)\ bytes\ read\ from\ disk\ at\ [0-9.]+\ GB/s,\ ([0-9]+)\ bytes\ into\ cuda\ memory\ at\ [0-9.]+\ GB/s ]] ||
        fail "dsv32d: Loaded line not as documented"
[ "${BASH_REMATCH[1]}" = "$tensor_bytes" ] && [ "${BASH_REMATCH[3]}" = "$tensor_bytes" ] ||
        fail "dsv32d: ${BASH_REMATCH[1]} tensor bytes, ${BASH_REMATCH[3]} uploaded; the checkpoint has $tensor_bytes"
[ "${BASH_REMATCH[2]}" -ge "$tensor_bytes" ] || fail "dsv32d: fewer bytes read than the tensors hold"
last=-1 n=0
while read -r pct; do
        [ "$pct" -ge "$last" ] || fail "progress went back: $pct% after $last%"
        last=$pct n=$((n + 1))
done < <(grep -oE "Loading .*: [0-9]+% of [0-9.]+ MB, [0-9.]+ MB read from disk at [0-9.]+ GB/s, into device memory at [0-9.]+ GB/s" \
        "$tmp/daemon.log" | grep -oE ": [0-9]+%" | tr -dc '0-9\n')
[ $n -ge 1 ] || fail "dsv32d logged no progress line in a load of seconds"
grep -m2 "Loading .*%" "$tmp/daemon.log"
grep -q "EXTEND_TIMEOUT_USEC=" "$tmp/notify.out" || fail "no EXTEND_TIMEOUT_USEC while loading"
grep -qE "STATUS=Loading .*: [0-9]+%, [0-9.]+ of [0-9.]+ MB read at [0-9.]+ GB/s, into device memory at [0-9.]+ GB/s" "$tmp/notify.out" ||
        fail "no STATUS= with the load figures"
grep -m1 -E "STATUS=Loading .*GB/s" "$tmp/notify.out"
echo "PASS"
