#!/bin/bash
# Replays the grammar fuzz target's seed corpus (tests/fuzz/corpus/grammar: schema, NUL,
# bytes to match) through the standalone driver. Well under a second.
set -euo pipefail
: "${top_srcdir:?}" "${top_builddir:?}"
"$top_builddir/tests/fuzz/fuzz-grammar-replay" "$top_srcdir/tests/fuzz/corpus/grammar"
