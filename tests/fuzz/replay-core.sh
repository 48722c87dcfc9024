#!/bin/bash
# Replays the seed corpora of the engine-core fuzz targets (safetensors header, config.json).
set -euo pipefail
: "${top_srcdir:?}" "${top_builddir:?}"
"$top_builddir/tests/fuzz/fuzz-safetensors-replay" "$top_srcdir/tests/fuzz/corpus/safetensors"
"$top_builddir/tests/fuzz/fuzz-config-replay" "$top_srcdir/tests/fuzz/corpus/config"
