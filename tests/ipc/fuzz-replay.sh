#!/bin/bash
# Replays the seed corpora of the wire-protocol fuzz targets (message decoders, frames).
set -euo pipefail
: "${top_srcdir:?}" "${top_builddir:?}"
"$top_builddir/tests/fuzz/fuzz-ipc-msg-replay" "$top_srcdir/tests/fuzz/corpus/ipc-msg"
"$top_builddir/tests/fuzz/fuzz-ipc-frame-replay" "$top_srcdir/tests/fuzz/corpus/ipc-frame"
