#!/bin/bash
# make bench: structured output's masking cost (issue 15 asks under 10% of decode time) on the
# `small` preset (16384-token vocabulary) at batch 8: dsv32d decodes 8 requests at once,
# first without a schema (max_tokens GEN, EOS ignored), then with one (an array of 8 strings
# of exactly 24 characters: inside strings nearly every token is allowed, which without
# vocab.c's shortcut for them was the mask walk's worst case, 340 us a row), in the same run. Reports each run's decode time per step (a request's decode
# time over its tokens; all 8 share every step), the engine's own timing of the masks (its
# log: "N masks took X ms"), and the masks' share of a constrained step (8 masks a step).
# REPS runs of each, interleaved; min-max.
set -euo pipefail
: "${top_builddir:?}"
REPS=${REPS:-2}
GEN=${GEN:-48}
b="$top_builddir"
dir="$b/tests/tmp/bench-small-tok"
if [ ! -f "$dir/tokenizer.json" ]; then
        echo "generating the small checkpoint (with its tokenizer) in $dir ..."
        "$b/dsv32-mkmodel" --preset small --out "$dir" >/dev/null
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dsv32-bench-schema-XXXXXX")
dpid=
trap '[ -n "$dpid" ] && kill "$dpid" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT
"$b/dsv32d" --config /dev/null --model "$dir" --socket "$tmp/d.sock" 2>"$tmp/daemon.log" &
dpid=$!
for _ in $(seq 600); do
        "$b/dsv32" --socket "$tmp/d.sock" generate --max-tokens 1 --tokens 1 >/dev/null 2>&1 && break
        sleep 0.1
done
printf '{"type":"array","items":{"type":"string","minLength":24,"maxLength":24},"minItems":8,"maxItems":8}' >"$tmp/s.json"

# ms per decode step of 8 concurrent requests (args: extra options)
batch() {
        local i
        for i in 1 2 3 4 5 6 7 8; do
                "$b/dsv32" --socket "$tmp/d.sock" generate --json --temperature 1 --seed "$i" "$@" "Write item $i" \
                        | tail -1 >"$tmp/done.$i" &
        done
        wait $(jobs -p | grep -v "^$dpid\$") 2>/dev/null || true
        cat "$tmp"/done.? | "${PYTHON3:-python3}" -c '
import json, sys
v = [json.loads(l) for l in sys.stdin if l.strip()]
steps = [d["usage"]["decode_us"] / 1e3 / max(d["usage"]["completion_tokens"] - 1, 1) for d in v]
print("%.2f %d %s" % (sum(steps) / len(steps), sum(d["usage"]["completion_tokens"] for d in v),
                      ",".join(sorted(set(d["finish"] for d in v)))))'
}

plain=() constrained=() shares=()
for ((r = 0; r < REPS; r++)); do
        read -r ms _ _ < <(batch --max-tokens "$GEN" --ignore-eos)
        plain+=("$ms")
        before=$(grep -c 'masks took' "$tmp/daemon.log" || true)
        read -r ms tokens finish < <(batch --max-tokens 1000 --schema "$tmp/s.json")
        [ "$finish" = stop ] || { echo "FAIL: a constrained request did not stop at its value's end ($finish)"; exit 1; }
        constrained+=("$ms")
        us=$(grep 'masks took' "$tmp/daemon.log" | tail -n +$((before + 1)) |
                sed -n 's/.*(\([0-9.]*\) us each).*/\1/p' | awk '{s += $1; n++} END {printf "%.1f", s / n}')
        shares+=("$(awk -v us="$us" -v ms="$ms" 'BEGIN {printf "%.1f", 8 * us / 1e3 / ms * 100}')")
        echo "  run $((r + 1)): unconstrained ${plain[r]} ms/step; constrained $ms ms/step ($tokens tokens), mask $us us/row: ${shares[r]}% of the step"
done
mm() { printf '%s\n' "$@" | sort -g | sed -n '1p;$p' | paste -sd- | sed 's/^\([^-]*\)$/\1-\1/'; }
echo "small preset, batch 8: decode $(mm "${plain[@]}") ms/step unconstrained vs $(mm "${constrained[@]}") ms/step with a schema; the masks (8 per step) take $(mm "${shares[@]}")% of a constrained step"
