#!/bin/bash
# The census of the conformance program test-gpu-ops: run with only the kv family
# (DSV_GPU_OPS_FAMILIES=kv), every other op of the backend's table has no case, and the program
# must fail naming them (20 of 22; moe_grouped, fill_random and sample among them) while kv_store and kv_gather count.
# Exit 77 when test-gpu-ops itself skips (no device, no emulation). About 3 s here.
set -uo pipefail
: "${top_builddir:?}"
out=$(DSV_GPU_OPS_FAMILIES=kv "$top_builddir/tests/gpu/test-gpu-ops" 2>&1)
rc=$?
[ $rc = 77 ] && { echo "SKIP: test-gpu-ops skips here"; exit 77; }
fail() { echo "FAIL: $*"; echo "$out" | tail -30; exit 1; }
[ $rc = 1 ] || fail "test-gpu-ops with one family: exit $rc, not 1"
grep -q "FAIL: 20 ops of the backend's table have no conformance case" <<<"$out" || fail "no census failure for the 20 ops without a case"
grep -Eq "^  moe_grouped +0  <- no case" <<<"$out" || fail "moe_grouped not named as without a case"
grep -Eq "^  fill_random +0  <- no case" <<<"$out" || fail "fill_random not named as without a case"
grep -Eq "^  sample +0  <- no case" <<<"$out" || fail "sample not named as without a case"
grep -Eq "^  kv_store +[1-9][0-9]*$" <<<"$out" || fail "kv_store's cases not counted"
echo "PASS: $(grep -c '<- no case' <<<"$out") ops named without a case"
