#!/bin/bash
# Whole-model golden test: the C engine (tests/unit/golden-dump) against our independent numpy
# implementation (tests/ref/ref_model.py) on a generated tiny checkpoint (with its MTP layer) and a
# 60-token prompt; the MTP layer's drafts over the prompt (next token from the prompt, the main
# model's hidden states) are compared the same way (mtp/ subdirectories).
#   exact:    logits and every layer's residual stream within tight tolerances, identical
#             indexer and expert selections;
#   faithful: with the reference's selections forced (so a discrete flip cannot cascade), logits
#             and layers within bf16/FP8 rounding tolerances; then unforced, report how many
#             selections differ, and how faithful selections differ from exact ones.
set -euo pipefail
: "${top_srcdir:?}" "${top_builddir:?}"
if [ -z "${PYTHON3:-}" ] || ! "$PYTHON3" -c 'import numpy' 2>/dev/null; then
        echo "SKIP: needs python3 with numpy (Debian: python3-numpy; run .ci/setup)"
        exit 77
fi
ref="$top_srcdir/tests/ref"
dump="$top_builddir/tests/unit/golden-dump"
work="${GOLDEN_WORK:-$top_builddir/tests/tmp/golden}" # a caller running it beside the suite picks its own
model="$work/tiny"
rm -rf "$work"
mkdir -p "$work"
"$top_builddir/dsv32-mkmodel" --preset tiny --seed 1 --mtp --out "$model"
# 60 fixed token ids (a mix of small and large ids, one repeat)
tokens=0,17,4051,233,1024,77,3999,512,8,2048,1500,42,42,901,3071,64,128,2500,333,4095,1,909,1234,2222,3333,444,555,666,777,888,999,1111,1212,1313,1414,1515,1616,1717,1818,1919,2020,2121,2323,2424,2525,2626,2727,2828,2929,3030,3131,3232,3434,3535,3636,3737,3838,3939,4040,100

echo "== exact numerics: C vs numpy"
"$PYTHON3" "$ref/ref_model.py" --model "$model" --tokens "$tokens" --numerics exact --out "$work/ref-exact" --mtp
"$dump" --model "$model" --tokens "$tokens" --numerics exact --out "$work/c-exact" --mtp
"$PYTHON3" "$ref/compare.py" "$work/ref-exact" "$work/c-exact" --logits-atol 1e-5 --logits-rtol 1e-5 \
        --layers-atol 1e-5 --layers-rtol 1e-5 --require-selections-equal
echo "== exact numerics, MTP layer: C vs numpy"
"$PYTHON3" "$ref/compare.py" "$work/ref-exact/mtp" "$work/c-exact/mtp" --logits-atol 1e-5 --logits-rtol 1e-5 \
        --layers-atol 1e-5 --layers-rtol 1e-5 --require-selections-equal

echo "== faithful numerics, reference selections forced: C vs numpy"
"$PYTHON3" "$ref/ref_model.py" --model "$model" --tokens "$tokens" --numerics faithful --out "$work/ref-faithful" --mtp
"$dump" --model "$model" --tokens "$tokens" --numerics faithful --force "$work/ref-faithful" --out "$work/c-faithful-forced" --mtp
"$PYTHON3" "$ref/compare.py" "$work/ref-faithful" "$work/c-faithful-forced" --logits-atol 1e-3 --logits-rtol 2e-2 \
        --layers-atol 1e-3 --layers-rtol 2e-2 --require-selections-equal
echo "== faithful numerics, MTP layer (the reference's decode rounding points), selections forced: C vs numpy"
"$PYTHON3" "$ref/compare.py" "$work/ref-faithful/mtp" "$work/c-faithful-forced/mtp" --logits-atol 1e-3 --logits-rtol 2e-2 \
        --layers-atol 1e-3 --layers-rtol 2e-2 --require-selections-equal

echo "== faithful numerics, own selections: C vs numpy (report)"
"$dump" --model "$model" --tokens "$tokens" --numerics faithful --out "$work/c-faithful"
"$PYTHON3" "$ref/compare.py" "$work/ref-faithful" "$work/c-faithful" --report-only

echo "== faithful vs exact in the C engine: the same selections (margins clear of FP8 noise), logits within FP8/bf16 error"
"$PYTHON3" "$ref/compare.py" "$work/c-exact" "$work/c-faithful" --logits-atol 0.05 --logits-rtol 0.1 \
        --layers-atol 0.05 --layers-rtol 0.1 --require-selections-equal
