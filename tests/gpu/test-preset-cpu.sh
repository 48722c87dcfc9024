#!/bin/bash
# A model from a preset with no checkpoint on disk (daemon/preset_model.h), on the CPU backend:
#   - dsv32-run --model preset:tiny: finite logits, the same bits run after run and with 1 or
#     2 threads, the weights made by the fill_random op (--stats: 0 bytes read from disk)
#   - the bare name (tiny) is the preset only while no file or directory of that name exists:
#     an empty directory "tiny" is then read as a checkpoint (and fails: no config.json)
#   - an unknown preset, and a model with an MTP request, fail with a clear error
#   - dsv32d --model preset:tiny serves token-id prompts (the same continuation as dsv32-run)
#     and refuses a text prompt with a clear error (no tokenizer), then keeps serving
# About 5 s here.
set -uo pipefail
: "${top_builddir:?}"
B=$(cd "$top_builddir" && pwd)
py=${PYTHON3:-python3}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dsv32-preset-cpu-XXXXXX")
dpid=
trap '[ -n "$dpid" ] && kill -9 $dpid 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; for l in "$tmp"/*.log; do [ -f "$l" ] && { echo "--- $l"; cat "$l"; }; done; exit 1; }
prompt=3,1,4,1,5,9,2,6,5,3
run() { # name model threads
        "$B/dsv32-run" --model "$2" --tokens $prompt --generate 4 --backend cpu --threads "$3" --stats \
                --dump-logits "$tmp/$1.f32" 2>"$tmp/$1.log"
}

a=$(run a preset:tiny 1) || fail "dsv32-run --model preset:tiny"
b=$(run b preset:tiny 1) || fail "dsv32-run --model preset:tiny (again)"
c=$(run c preset:tiny 2) || fail "dsv32-run --model preset:tiny --threads 2"
echo "preset:tiny: $a"
grep -q "made by the backend's fill_random op" "$tmp/a.log" || fail "--stats does not say the weights were made by fill_random"
grep -Eq "^load: [1-9][0-9]* tensor bytes, 0 bytes read from disk" "$tmp/a.log" || fail "a preset read from disk"
[ "$a" = "$b" ] && [ "$a" = "$c" ] || fail "continuations differ: $a / $b / $c"
cmp -s "$tmp/a.f32" "$tmp/b.f32" || fail "logits differ between two runs"
cmp -s "$tmp/a.f32" "$tmp/c.f32" || fail "logits differ between 1 and 2 threads"
# 10 prompt positions + 4 generated, vocab 4096; finite, not all alike, routing active
check=$("$py" - "$tmp/a.f32" <<'PY'
import sys, numpy as np
x = np.fromfile(sys.argv[1], dtype='<f4').reshape(-1, 4096)
print(x.shape[0], int(np.isfinite(x).all()), float(np.abs(x).max()), float(x.std(axis=1).min()),
      len(set(x.argmax(axis=1).tolist())))
PY
) || fail "reading the logits"
read -r rows finite amax sdmin distinct <<<"$check"
echo "logits: $rows rows, finite $finite, max |logit| $amax, smallest row sd $sdmin, $distinct distinct argmaxes"
[ "$rows" = 14 ] || fail "$rows rows of logits, not 14"
[ "$finite" = 1 ] || fail "non-finite logits"
"$py" -c "import sys; sys.exit(0 if 0.01 < $sdmin and $amax < 1e4 else 1)" || fail "logits degenerate (sd $sdmin, max $amax)"

# the bare name, while no such path exists, then with a directory of that name
( cd "$tmp" && "$B/dsv32-run" --model tiny --tokens $prompt --generate 4 --backend cpu --threads 1 >"$tmp/bare.out" 2>"$tmp/bare.log" ) ||
        fail "dsv32-run --model tiny (no such directory): not the preset"
[ "$(cat "$tmp/bare.out")" = "$a" ] || fail "--model tiny gave $(cat "$tmp/bare.out"), preset:tiny $a"
mkdir "$tmp/tiny"
( cd "$tmp" && "$B/dsv32-run" --model tiny --tokens 1 --generate 1 --backend cpu >/dev/null 2>"$tmp/dir.log" ) &&
        fail "--model tiny with a directory tiny did not read the directory"
grep -q "config.json" "$tmp/dir.log" || fail "--model tiny with a directory: no error about its config.json: $(cat "$tmp/dir.log")"

# bad input
"$B/dsv32-run" --model preset:nope --tokens 1 --generate 1 >/dev/null 2>"$tmp/nope.log" && fail "preset:nope accepted"
grep -q 'unknown preset "nope"' "$tmp/nope.log" || fail "preset:nope: no clear error: $(cat "$tmp/nope.log")"
"$B/dsv32-run" --model preset:v32-layers:0 --tokens 1 --generate 1 >/dev/null 2>"$tmp/zero.log" && fail "v32-layers:0 accepted"
grep -q "N must be 1..61" "$tmp/zero.log" || fail "v32-layers:0: no clear error: $(cat "$tmp/zero.log")"
"$B/dsv32-run" --model preset:tiny --mtp on --tokens 1 --generate 1 >/dev/null 2>"$tmp/mtp.log" && fail "--mtp on accepted without an MTP layer"
grep -q "no MTP layer" "$tmp/mtp.log" || fail "--mtp on: no clear error: $(cat "$tmp/mtp.log")"

# dsv32d on a preset: token ids only
"$B/dsv32d" --model preset:tiny --socket "$tmp/d.sock" --threads 1 2>"$tmp/d.log" &
dpid=$!
for _ in $(seq 300); do "$B/dsv32" --socket "$tmp/d.sock" ping --count 1 >/dev/null 2>&1 && break; sleep 0.1; done
ids=$("$B/dsv32" --socket "$tmp/d.sock" generate --tokens $prompt --max-tokens 4 --ids) || fail "dsv32d: generate from ids"
[ "$ids" = "$a" ] || fail "dsv32d on preset:tiny gave $ids, dsv32-run $a"
"$B/dsv32" --socket "$tmp/d.sock" generate --max-tokens 4 Hello >/dev/null 2>"$tmp/text.log" && fail "dsv32d: a text prompt was accepted"
grep -q "serves token ids only: its model is the preset tiny" "$tmp/text.log" || fail "text prompt: no clear error: $(cat "$tmp/text.log")"
again=$("$B/dsv32" --socket "$tmp/d.sock" generate --tokens $prompt --max-tokens 4 --ids) || fail "dsv32d stopped serving"
[ "$again" = "$a" ] || fail "dsv32d: second request gave $again"
grep -q "made by the backend's fill_random op" "$tmp/d.log" || fail "dsv32d's log does not say the weights were made on the backend"
echo "PASS"
