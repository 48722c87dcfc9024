#!/bin/bash
# Replays the seed corpus of the cluster wire decoder's fuzz target.
set -euo pipefail
: "${top_srcdir:?}" "${top_builddir:?}"
exec "$top_builddir/tests/fuzz/fuzz-cluster-wire-replay" "$top_srcdir/tests/fuzz/corpus/cluster-wire"
