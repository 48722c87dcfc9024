#!/bin/bash
# make bench: loader and CPU engine speed on the `small` preset (generated once into the build tree).
set -euo pipefail
: "${top_builddir:?}"
model="$top_builddir/tests/tmp/bench-small"
if [ ! -f "$model/model.safetensors.index.json" ]; then
        echo "generating the small checkpoint in $model ..."
        "$top_builddir/dsv32-mkmodel" --preset small --out "$model"
fi
exec "$top_builddir/tests/bench/bench-core" "$model"
