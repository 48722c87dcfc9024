#!/bin/bash
# Replays the seed corpora of the tokenizer fuzz targets (tokenizer.json loader, encode /
# decode / stream, chat parser and encoder) through the standalone driver.
set -euo pipefail
: "${top_srcdir:?}" "${top_builddir:?}"
for t in load encode chat; do
  "$top_builddir/tests/fuzz/fuzz-tok-$t-replay" "$top_srcdir/tests/fuzz/corpus/tok-$t"
done
