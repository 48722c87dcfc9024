#!/bin/bash
# make bench: loader and CPU engine speed on the `small` preset, then the engine on `m474`
# (474M parameters, the size issue 16 compares CPU engines on; a 128-token prompt). Both
# are generated once into the build tree. DSV32_BENCH_M474=0 skips m474.
set -euo pipefail
: "${top_builddir:?}"
for preset in small m474; do
        [ "$preset" = m474 ] && [ "${DSV32_BENCH_M474:-1}" = 0 ] && continue
        model="$top_builddir/tests/tmp/bench-$preset"
        if [ ! -f "$model/model.safetensors.index.json" ]; then
                echo "generating the $preset checkpoint in $model ..."
                "$top_builddir/dsv32-mkmodel" --preset "$preset" --out "$model"
        fi
        if [ "$preset" = small ]; then
                "$top_builddir/tests/bench/bench-core" "$model"
        else
                "$top_builddir/tests/bench/bench-core" "$model" --engine-only --prompt 128
        fi
done
