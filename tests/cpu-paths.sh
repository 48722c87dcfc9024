#!/bin/bash
# Every CPU kernel path this machine runs, forced with DSV32_CPU_KERNELS, through the model
# invariants (prefill == decode, chunked == whole, batch == alone, ...) and the golden test
# against the numpy reference; and an unusable DSV32_CPU_KERNELS value is reported, not
# followed. The default path (the best one) already runs both in the plain suite.
set -euo pipefail
: "${top_srcdir:?}" "${top_builddir:?}"
kernels="$top_builddir/tests/unit/test-cpu-kernels"
best=$(DSV32_CPU_KERNELS= "$kernels" --supported | tail -n 1)
for v in bogus avx512bf16; do
        echo "== DSV32_CPU_KERNELS=$v"
        DSV32_CPU_KERNELS=$v "$kernels" >/dev/null || { echo "FAIL: test-cpu-kernels with DSV32_CPU_KERNELS=$v"; exit 1; }
done
for path in $("$kernels" --supported); do
        [ "$path" = "$best" ] && continue
        echo "== $path kernels: model invariants, golden test"
        # their own scratch directories: the same tests run beside this one in the suite
        own="$top_builddir/tests/tmp/cpu-paths-$path"
        mkdir -p "$own"
        DSV32_TEST_TMP=$own DSV32_CPU_KERNELS=$path "$top_builddir/tests/unit/test-model-invariants" | tail -n 3
        GOLDEN_WORK=$own/golden DSV32_CPU_KERNELS=$path bash "$top_srcdir/tests/golden.sh" >"$top_builddir/tests/tmp/cpu-paths-golden-$path.out" 2>&1 ||
                { tail -n 30 "$top_builddir/tests/tmp/cpu-paths-golden-$path.out"; echo "FAIL: golden test on the $path kernels"; exit 1; }
        echo "golden test passed on the $path kernels"
done
