#!/bin/bash
# The device in STATS_REPLY (keys 53..57) and `dsv32 status`: dsv32d --backend cuda on the CPU
# emulation of CUDA (tests/gpu/emu, a device of DSV_CUDA_EMU_MEMORY_MB) and on the CPU backend,
# tiny preset:
#   - cuda: the device line names the emulated device; --json gives device_memory_total equal
#     to the emulation's memory, 0 < free < total, device_weight_bytes equal to weight_bytes,
#     device_kv_bytes equal to the KV pages times their bytes (kv_pages_total x kv_page_tokens
#     x kv_bytes_per_token), and free memory at least that much lower than total
#   - cpu: a "device: cpu" line and no device fields in the JSON
# Exit 77 when the emulated plugin was not built.
set -uo pipefail
: "${top_builddir:?}"
B=$top_builddir
emu=$B/tests/gpu/emu
[ -f "$emu/dsv32-backend-cuda.so" ] || { echo "SKIP: $emu/dsv32-backend-cuda.so not built"; exit 77; }
py=${PYTHON3:-python3}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dsv32-gpu-status-XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; for l in "$tmp"/*.log "$tmp"/*.out; do [ -f "$l" ] && { echo "--- $l"; tail -30 "$l"; }; done; exit 1; }
export DSV32_BACKEND_PATH=$emu
"$B/dsv32-mkmodel" --preset tiny --out "$tmp/model" >/dev/null || fail "dsv32-mkmodel"
M=256

serve() { # name args...
        local name=$1
        shift
        "$B/dsv32d" --model "$tmp/model" --socket "$tmp/$name.sock" --threads 1 --kv-cache-mb 8 "$@" 2>"$tmp/$name.log" &
        pids+=($!)
        for _ in $(seq 600); do
                "$B/dsv32" --socket "$tmp/$name.sock" status --json >"$tmp/$name.json" 2>/dev/null &&
                        grep -q '"state": *"ready"' "$tmp/$name.json" && return 0
                kill -0 "${pids[-1]}" 2>/dev/null || break
                sleep 0.1
        done
        fail "dsv32d $* did not come up"
}

# ---------------------------------------------------------------- cuda (emulated)
DSV_CUDA_EMU_MEMORY_MB=$M serve cuda --backend cuda
"$B/dsv32" --socket "$tmp/cuda.sock" status >"$tmp/cuda.out" || fail "dsv32 status"
grep "^device:" "$tmp/cuda.out" || fail "no device line in dsv32 status"
grep -q "^device: .*CPU emulation" "$tmp/cuda.out" || fail "the device line does not name the emulated device"
"$py" - "$tmp/cuda.json" $M <<'EOF' || fail "the device fields of dsv32 status --json"
import json, sys
s = json.load(open(sys.argv[1]))
total, free = s["device_memory_total"], s["device_memory_free"]
assert total == int(sys.argv[2]) << 20, f"device_memory_total {total}, the emulation has {sys.argv[2]} MiB"
kv = s["kv_pages_total"] * s["kv_page_tokens"] * s["kv_bytes_per_token"]
assert s["device_kv_bytes"] == kv, f"device_kv_bytes {s['device_kv_bytes']}, the pool is {kv}"
assert s["device_weight_bytes"] == s["weight_bytes"] > 0, f"device_weight_bytes {s['device_weight_bytes']}"
assert 0 < free <= total - s["device_weight_bytes"] - kv, f"free {free} of {total}"
assert "CPU emulation" in s["device"], s["device"]
print(f"device {s['device']}: {total} bytes, {free} free, weights {s['device_weight_bytes']}, KV {kv}")
EOF

# ---------------------------------------------------------------- cpu
serve cpu --backend cpu
"$B/dsv32" --socket "$tmp/cpu.sock" status >"$tmp/cpu.out" || fail "dsv32 status (cpu)"
grep -q "^device: *cpu" "$tmp/cpu.out" || fail "no 'device: cpu' line on the CPU backend"
grep -q '"device' "$tmp/cpu.json" && fail "device fields in the CPU backend's JSON"
echo "PASS"
