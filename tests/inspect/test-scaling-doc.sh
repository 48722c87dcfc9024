#!/bin/bash
# docs/scaling.md quotes dsv32-inspect --plan: each figure below must be both in the tool's
# output for its command and in the page, so that a change to the plan model (daemon/plan.c)
# that moves a number fails here until the page is updated.
set -u
tool=$top_builddir/dsv32-inspect
doc=$top_srcdir/docs/scaling.md
fail=0
check() { # check "ARGS" "FIGURE AS PRINTED" ["FIGURE AS THE PAGE WRITES IT"]
        local out quoted=${3:-$2}
        out=$("$tool" --preset v32 $1 2>&1)
        if ! grep -qF -- "$2" <<<"$out"; then
                echo "FAIL: dsv32-inspect --preset v32 $1 does not print '$2'"; fail=1
        fi
        if ! grep -qF -- "$quoted" "$doc"; then
                echo "FAIL: docs/scaling.md does not quote '$quoted' (from: $1)"; fail=1
        fi
}
check "--plan 8xH200" "88.66 GiB"
check "--plan 8xH200" "770,752 tokens"
check "--plan 8xH200" "6,166,016"
check "--plan 8xH200 --context 4K --context 32K --context 128K" "1,504 at 4,096 tokens, 184 at 32,768 tokens, 40 at 131,072" "1,504 / 184 / 40"
check "--plan 2x8xH200 --context 4K --context 32K --context 128K" "6,320 at 4,096 tokens, 784 at 32,768 tokens, 192 at 131,072" "6,320 / 784 / 192"
check "--plan 2x8xH200" "50.59 GiB"
check "--plan 2x8xH200" "1,621,248 tokens"
check "--plan 2x8xH200" "25,939,968"
check "--plan 8xH200 --parallel ep,tp" "80.11 GiB"
check "--plan 8xH200 --parallel ep,tp" "961,792 tokens"
check "--plan 8xH100" "67.28 GiB"
check "--plan 2x8xH100" "372,672 tokens"
check "--plan 8xH200 --batch 1 --context 4K" "14.79 GiB"
check "--plan 8xH200 --batch 1 --context 4K" "3.83 MiB"
check "--plan 8xH200 --batch 64 --context 4K" "79.32 GiB"
check "--plan 8xH200 --batch 64 --context 4K" "30.62 MiB"
check "--plan 8xH200 --batch 256 --context 4K" "11780" "11,780"
check "--plan 8xH200 --batch 256 --context 4K" "122.48 MiB"
check "--plan 2x8xH200 --batch 1 --context 4K" "3.22 MiB"
check "--plan 2x8xH200 --batch 64 --context 4K" "45.81 GiB"
check "--plan 2x8xH200 --batch 256 --context 4K" "51.49 MiB"
check "--plan 2x8xH200 --batch 256 --context 4K" "19272" "19,272"
check "--plan 2x8xH200 --batch 512 --context 4K" "33456" "33,456"
check "--plan 8xH200 --batch 64 --context 128K" "3241" "3,241"
[ $fail -eq 0 ] && echo "docs/scaling.md: every quoted figure matches dsv32-inspect"
exit $fail
