#!/bin/bash
# dsv32-run --ranks N --parallel ep,dp on the CPU: tiny (and small unless DSV32_EP_SMALL=0) on
# 2 and 4 ranks prints the greedy tokens of one rank and dumps its logits byte for byte
# (prefill and token-by-token decode, faithful and exact; the MTP layer drafting); attention
# is data-parallel (the one sequence is rank 0's, the others follow its passes' dispatches);
# sampling by seed gives the same tokens; --stats names each rank's bytes and experts, and its
# KV pages (rank 0's only hold the sequence);
# bad layouts and options are refused with the cause. --parallel ep,tp on 2 and 4 ranks (small:
# 2, 4 and 8) prints one rank's greedy tokens (faithful, exact, token-by-token decode, the MTP
# layer drafting), each ep,tp rank reading fewer bytes than the same ep,dp rank; a rank count
# that does not divide the heads is refused naming both (logit bounds: test-tp-model); ep,tp
# --dump-logits writes one rank's rows.
set -euo pipefail
: "${top_builddir:?}"
run="$top_builddir/dsv32-run"
work="$top_builddir/tests/tmp/ep-run"
rm -rf "$work"
mkdir -p "$work"
"$top_builddir/dsv32-mkmodel" --preset tiny --seed 4 --out "$work/tiny" --no-tokenizer
"$top_builddir/dsv32-mkmodel" --preset tiny --seed 4 --mtp-predictable --out "$work/tiny-mtp" --no-tokenizer
fail=0
bad() { echo "FAIL: $*"; fail=1; }
prompt=5,17,300,4000,22,22,9,1000,2047,3,77,1500

same() { # name model args...: 1, 2 and 4 ranks agree
        local name=$1 model=$2
        shift 2
        local one out
        one=$("$run" --model "$model" --tokens $prompt --threads 2 --dump-logits "$work/$name-1.f32" "$@")
        [ -s "$work/$name-1.f32" ] || bad "$name: no logits from one rank"
        for n in 2 4; do
                out=$("$run" --model "$model" --tokens $prompt --threads 2 --ranks $n --parallel ep,dp \
                        --dump-logits "$work/$name-$n.f32" "$@")
                [ "$out" = "$one" ] || bad "$name: $n ranks printed $out, one rank $one"
                cmp -s "$work/$name-1.f32" "$work/$name-$n.f32" || bad "$name: $n ranks dumped other logits than one rank"
        done
        echo "$name: $one"
}
same faithful "$work/tiny" --generate 12
same exact "$work/tiny" --generate 12 --numerics exact
same decode "$work/tiny" --generate 6 --decode-one-by-one
same mtp "$work/tiny-mtp" --generate 12 --mtp on --draft 2
same sampled "$work/tiny" --generate 12 --temperature 0.8 --top-p 0.9 --seed 3
same_tp() { # name model ranks args...: ep,tp prints the tokens of one rank
        local name=$1 model=$2 ranks=$3
        shift 3
        local one out
        one=$("$run" --model "$model" --tokens $prompt --threads 2 "$@")
        for n in $ranks; do
                out=$("$run" --model "$model" --tokens $prompt --threads 2 --ranks $n --parallel ep,tp "$@")
                [ "$out" = "$one" ] || bad "ep,tp $name: $n ranks printed $out, one rank $one"
        done
        echo "ep,tp $name: $one"
}
same_tp faithful "$work/tiny" "2 4" --generate 12
# ep,tp with --dump-logits: every rank asks for every position's logits (the head's gather
# pairs up), rank 0 writes one rank's count of rows, close to one rank's values
"$run" --model "$work/tiny" --tokens $prompt --threads 2 --generate 4 --dump-logits "$work/tp-1.f32" >/dev/null
for n in 2 4; do
        "$run" --model "$work/tiny" --tokens $prompt --threads 2 --generate 4 --ranks $n --parallel ep,tp \
                --dump-logits "$work/tp-$n.f32" >/dev/null || bad "ep,tp --dump-logits on $n ranks failed"
        "$PYTHON3" - "$work/tp-1.f32" "$work/tp-$n.f32" <<'PY' || bad "ep,tp --dump-logits on $n ranks: other rows than one rank"
import sys, numpy as np
a, b = (np.fromfile(f, dtype='<f4') for f in sys.argv[1:3])
assert a.size > 0 and a.size == b.size, (a.size, b.size)
assert np.max(np.abs(a - b)) <= 0.05 * max(1.0, float(np.max(np.abs(a)))), float(np.max(np.abs(a - b)))
PY
done
same_tp exact "$work/tiny" "2 4" --generate 12 --numerics exact
same_tp decode "$work/tiny" "2 4" --generate 6 --decode-one-by-one
same_tp mtp "$work/tiny-mtp" "2 4" --generate 12 --mtp on --draft 2
if [ "${DSV32_EP_SMALL:-1}" != 0 ]; then
        "$top_builddir/dsv32-mkmodel" --preset small --seed 4 --out "$work/small" --no-tokenizer
        same small "$work/small" --generate 4
        same_tp small "$work/small" "2 4 8" --generate 4
fi

# --stats: one line per rank, the experts in contiguous blocks, fewer bytes than one rank
"$run" --model "$work/tiny" --tokens 1,2 --generate 1 --threads 2 --stats 2>"$work/stats1" >/dev/null
"$run" --model "$work/tiny" --tokens 1,2 --generate 1 --threads 2 --ranks 4 --parallel ep,dp --stats 2>"$work/stats4" >/dev/null
for r in 0 1 2 3; do
        grep -Eq "^rank $r: [0-9]+ tensor bytes read, routed experts $((r * 4))-$((r * 4 + 3)) of 16$" "$work/stats4" ||
                bad "--stats, rank $r: $(cat "$work/stats4")"
done
# ep,dp: attention data-parallel, the one sequence is rank 0's: its pages in rank 0's pool only
grep -Eq "^rank 0: KV pages: at most [1-9][0-9]* of [0-9]+ in use \(its own sequences\)$" "$work/stats4" ||
        bad "--stats, rank 0's KV pages: $(grep 'KV pages' "$work/stats4")"
for r in 1 2 3; do
        grep -Eq "^rank $r: KV pages: at most 0 of [0-9]+ in use \(its own sequences\)$" "$work/stats4" ||
                bad "--stats, rank $r holds KV pages of a sequence it does not own: $(grep 'KV pages' "$work/stats4")"
done
one=$(sed -n 's/^loaded [^:]*: \([0-9.]*\) MB.*/\1/p' "$work/stats1")
four=$(sed -n 's/^loaded [^:]*: \([0-9.]*\) MB.*/\1/p' "$work/stats4")
awk -v a="$one" -v b="$four" 'BEGIN { exit !(b > 0 && b < a) }' || bad "rank 0 of 4 loaded $four MB, one rank $one MB"
# ep,tp: each rank reads less than the same rank of ep,dp (its shares of the split tensors)
"$run" --model "$work/tiny" --tokens 1,2 --generate 1 --threads 2 --ranks 4 --parallel ep,tp --stats 2>"$work/stats4tp" >/dev/null
for r in 0 1 2 3; do
        dp=$(sed -n "s/^rank $r: \([0-9]*\) tensor bytes read.*/\1/p" "$work/stats4")
        tp=$(sed -n "s/^rank $r: \([0-9]*\) tensor bytes read, routed experts $((r * 4))-$((r * 4 + 3)) of 16$/\1/p" "$work/stats4tp")
        [ -n "$tp" ] && [ -n "$dp" ] && [ "$tp" -lt "$dp" ] || bad "--stats, ep,tp rank $r read ${tp:-?} bytes, ep,dp ${dp:-?}"
done

# refusals
. "$(dirname "$0")/../expect-fail.sh"
expect_fail 2 "needs a layout: --parallel ep,dp or ep,tp" --model "$work/tiny" --tokens 1,2 --ranks 2
expect_fail 2 "tp: this layout is not implemented yet" --model "$work/tiny" --tokens 1,2 --ranks 2 --parallel tp
expect_fail 1 "rank 0: .*4 attention heads do not split over 3 tensor-parallel ranks" --model "$work/tiny" --tokens 1,2 \
        --ranks 3 --parallel ep,tp
expect_fail 2 "runs CPU ranks only" --model "$work/tiny" --tokens 1,2 --ranks 2 --parallel ep,tp --backend cuda
expect_fail 2 "unknown layout" --model "$work/tiny" --tokens 1,2 --ranks 2 --parallel pp
expect_fail 2 "\-\-ranks needs 1..256" --model "$work/tiny" --tokens 1,2 --ranks 0
expect_fail 2 "runs CPU ranks only" --model "$work/tiny" --tokens 1,2 --ranks 2 --parallel ep,dp --backend cuda
expect_fail 1 "rank 0: .*at most one rank per expert" --model "$work/tiny" --tokens 1,2 --ranks 17 --parallel ep,dp
expect_fail 1 "rank 0: token 5000 is outside the vocabulary" --model "$work/tiny" --tokens 1,5000 --ranks 2 --parallel ep,dp
# --ranks 1 with the layout named is one rank
out=$("$run" --model "$work/tiny" --tokens $prompt --generate 12 --threads 2 --ranks 1 --parallel ep,dp)
[ "$out" = "$("$run" --model "$work/tiny" --tokens $prompt --generate 12 --threads 2)" ] ||
        bad "--ranks 1 --parallel ep,dp printed $out"
exit $fail
