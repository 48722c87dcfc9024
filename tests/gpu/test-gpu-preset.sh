#!/bin/bash
# A model from a preset with no checkpoint on disk on the CUDA backend (a device, or the CPU
# emulation of CUDA): dsv32-run --backend cuda --model preset:tiny makes the weights with the
# plugin's fill_random kernel in device memory (--stats: 0 bytes read from disk, 0 uploaded)
# and its logits match the CPU backend's within test-gpu-model's tolerances (relative to the
# largest |logit| of a position: 1e-5 on the emulation; on a device 3e-2 faithful, 1e-4 exact),
# with the same greedy continuation. Exit 77 when the cuda backend cannot start. About 25 s
# on the emulation here.
set -uo pipefail
: "${top_builddir:?}"
B=$(cd "$top_builddir" && pwd)
py=${PYTHON3:-python3}
export DSV32_BACKEND_PATH="${DSV32_BACKEND_PATH:-$top_builddir/kernels/cuda:$top_builddir/tests/gpu/emu}"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dsv32-gpu-preset-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; for l in "$tmp"/*.log; do [ -f "$l" ] && { echo "--- $l"; cat "$l"; }; done; exit 1; }
prompt=3,1,4,1,5,9,2,6,5,3,5,8,9,7,9,3,2,3,8,4 # longer than tiny's index_topk (8)

for num in faithful exact; do
        cpu=$("$B/dsv32-run" --model preset:tiny --tokens $prompt --generate 4 --numerics $num --backend cpu \
                --dump-logits "$tmp/cpu-$num.f32" 2>"$tmp/cpu-$num.log") || fail "dsv32-run cpu ($num)"
        if ! cuda=$("$B/dsv32-run" --model preset:tiny --tokens $prompt --generate 4 --numerics $num --backend cuda --stats \
                --dump-logits "$tmp/cuda-$num.f32" 2>"$tmp/cuda-$num.log"); then
                grep -q "could not" "$tmp/cuda-$num.log" && { echo "SKIP: the cuda backend does not start: $(cat "$tmp/cuda-$num.log")"; exit 77; }
                fail "dsv32-run --backend cuda --model preset:tiny ($num)"
        fi
        echo "$num: cpu $cpu, cuda $cuda"
        grep -q "made by the backend's fill_random op" "$tmp/cuda-$num.log" || fail "--stats: weights not made by fill_random"
        grep -Eq "^load: [1-9][0-9]* tensor bytes, 0 bytes read from disk at [0-9.]+ GB/s, 0 bytes into cuda memory" \
                "$tmp/cuda-$num.log" || fail "the preset's weights were read or uploaded"
        [ "$cpu" = "$cuda" ] || fail "$num: greedy continuations differ"
        emu=0
        grep -q "emulat" "$tmp/cuda-$num.log" && emu=1
        "$py" - "$tmp/cpu-$num.f32" "$tmp/cuda-$num.f32" $num $emu <<'PY' || fail "$num: logits outside tolerance"
import sys, numpy as np
a = np.fromfile(sys.argv[1], dtype='<f4').reshape(-1, 4096)
b = np.fromfile(sys.argv[2], dtype='<f4').reshape(-1, 4096)
tol = 1e-5 if sys.argv[4] == '1' else (1e-4 if sys.argv[3] == 'exact' else 3e-2)
assert a.shape == b.shape and np.isfinite(a).all() and np.isfinite(b).all(), "shape or non-finite"
d = (np.abs(a - b).max(axis=1) / np.abs(a).max(axis=1)).max()
print(f"  {sys.argv[3]}: {a.shape[0]} positions, max rel diff {d:.3g} (tolerance {tol:.0e})")
sys.exit(0 if d <= tol else 1)
PY
done
echo "PASS"
