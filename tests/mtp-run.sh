#!/bin/bash
# dsv32-run's speculative decoding from the command line, on the tiny preset with a predictable
# MTP layer: --mtp on prints the greedy tokens of --mtp off and dumps the same logits byte for
# byte (faithful and exact); --stats reports the acceptance; sampling is reproducible by seed;
# bad options and a checkpoint without the layer are refused with a message naming the cause.
set -euo pipefail
: "${top_builddir:?}"
run="$top_builddir/dsv32-run"
work="$top_builddir/tests/tmp/mtp-run"
rm -rf "$work"
mkdir -p "$work"
"$top_builddir/dsv32-mkmodel" --preset tiny --seed 3 --mtp-predictable --out "$work/pred"
"$top_builddir/dsv32-mkmodel" --preset tiny --seed 3 --out "$work/plain" --no-tokenizer
fail=0
bad() { echo "FAIL: $*"; fail=1; }
prompt=5,17,300,4000,22,22,9,1000,2047,3

for num in faithful exact; do
        off=$("$run" --model "$work/pred" --tokens $prompt --generate 30 --numerics $num --threads 1 --mtp off \
                --dump-logits "$work/off.f32")
        on=$("$run" --model "$work/pred" --tokens $prompt --generate 30 --numerics $num --threads 1 --mtp on \
                --dump-logits "$work/on.f32" --stats 2>"$work/stats")
        [ "$on" = "$off" ] || bad "$num: --mtp on printed $on, --mtp off $off"
        cmp -s "$work/on.f32" "$work/off.f32" || bad "$num: logits dumps differ"
        [ "$(stat -c %s "$work/on.f32")" -eq $(( (10 + 30) * 4096 * 4 )) ] || bad "$num: dump size $(stat -c %s "$work/on.f32")"
        grep -q "MTP on" "$work/stats" && grep -Eq "mtp: 1 draft\(s\) per step, [0-9]+ drafted, [0-9]+ accepted" "$work/stats" ||
                bad "$num: --stats: $(cat "$work/stats")"
        echo "$num: $(grep '^mtp:' "$work/stats")"
        three=$("$run" --model "$work/pred" --tokens $prompt --generate 30 --numerics $num --threads 1 --draft 3)
        [ "$three" = "$off" ] || bad "$num: --draft 3 printed $three"
done

# sampled: same seed, same tokens; the default (auto) is on for this checkpoint
s1=$("$run" --model "$work/pred" --tokens $prompt --generate 20 --threads 1 --temperature 0.9 --top-p 0.95 --seed 7 --stats 2>"$work/stats")
s2=$("$run" --model "$work/pred" --tokens $prompt --generate 20 --threads 1 --temperature 0.9 --top-p 0.95 --seed 7)
[ "$s1" = "$s2" ] || bad "sampled output not reproducible: $s1 / $s2"
grep -q "MTP on" "$work/stats" || bad "auto did not turn MTP on: $(cat "$work/stats")"

# refusals
. "$(dirname "$0")/expect-fail.sh"
expect_fail 1 "has no MTP layer" --model "$work/plain" --tokens 1,2 --mtp on
expect_fail 2 "\-\-mtp must be on, off or auto" --model "$work/pred" --tokens 1,2 --mtp maybe
expect_fail 2 "\-\-draft needs 1..16" --model "$work/pred" --tokens 1,2 --draft 0
expect_fail 2 "\-\-temperature needs" --model "$work/pred" --tokens 1,2 --temperature -1
expect_fail 2 "\-\-top-p needs" --model "$work/pred" --tokens 1,2 --top-p 2
out=$("$run" --model "$work/plain" --tokens 1,2 --generate 4 --threads 1 --stats 2>&1)
grep -q "MTP absent" <<<"$out" || bad "plain checkpoint not run without MTP: $out"
exit $fail
