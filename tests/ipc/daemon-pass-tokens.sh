#!/bin/bash
# dsv32d's pass-tokens setting (daemon/model/passes.c: the tokens of one forward pass at
# most), tiny preset: with --pass-tokens 16 (every prompt here is cut into passes of 16
# tokens) and with --pass-tokens 4096 (nothing is cut), four clients at once, prompts of 5 to
# 300 token ids and a seeded sampled one, get the same tokens; the start log names the cap in
# use (the setting, or auto's choice); values below 16 or above 65536 are refused at start,
# from the command line and from the settings file.
set -euo pipefail
: "${top_builddir:?}" "${top_srcdir:?}"
NAME=daemon-pass-tokens
DAEMON_ARGS=(--threads 2 --kv-cache-mb 32 --batch-tokens 1024)
. "$top_srcdir/tests/daemon-lib.sh"

"$top_builddir/dsv32-mkmodel" --preset tiny --seed 9 --out "$work/tiny" >/dev/null

serve() { # name args...: starts dsv32d, runs the clients into $work/name.out, stops it
        local name=$1 s="$work/$1.sock" pids=() i
        shift
        start "$name" "$work/tiny" "$@" || return 0
        gen() { "$cli" --socket "$s" generate --ids "$@"; }
        gen --max-tokens 12 --tokens 5,6,7 >"$work/$name.c1" & pids+=($!)
        gen --max-tokens 10 --tokens "$(seq -s, 1 300)" >"$work/$name.c2" & pids+=($!)
        gen --max-tokens 10 --tokens "$(seq -s, 40 150)" >"$work/$name.c3" & pids+=($!)
        gen --max-tokens 16 --temperature 0.9 --seed 3 --tokens "$(seq -s, 9 90)" >"$work/$name.c4" & pids+=($!)
        for i in "${pids[@]}"; do wait "$i" || bad "$name: a client failed"; done
        cat "$work/$name".c[1-4] >"$work/$name.out"
        stop || bad "$name: dsv32d exit status $? after SIGTERM"
}

serve cut16 --pass-tokens 16
serve whole --pass-tokens 4096
serve auto
[ -s "$work/cut16.out" ] || bad "no output with --pass-tokens 16"
cmp -s "$work/cut16.out" "$work/whole.out" || bad "passes of 16 tokens and of 4096 differ: $(diff "$work/cut16.out" "$work/whole.out" | head)"
cmp -s "$work/cut16.out" "$work/auto.out" || bad "pass-tokens auto differs: $(diff "$work/cut16.out" "$work/auto.out" | head)"
grep -q "Forward passes of at most 16 tokens (pass-tokens set)" "$work/cut16.log" || bad "cut16: the cap is not logged: $(cat "$work/cut16.log")"
grep -q "Forward passes of at most 4096 tokens (pass-tokens set)" "$work/whole.log" || bad "whole: the cap is not logged"
grep -Eq "Forward passes of at most [0-9]+ tokens \(pass-tokens auto\)" "$work/auto.log" || bad "auto: the cap is not logged"
echo "the same $(tr , ' ' <"$work/cut16.out" | wc -w) tokens with passes of 16 tokens, of 4096 and auto ($(grep -o "at most [0-9]* tokens" "$work/auto.log"))"

refuse 2 "pass-tokens 8: must be auto (0) or 16..65536" "$work/tiny" --pass-tokens 8
refuse 2 "pass-tokens" "$work/tiny" --pass-tokens 65537
refuse 2 "pass-tokens" "$work/tiny" --pass-tokens lots
printf 'pass-tokens = 15\n' >"$work/bad.conf"
refuse 2 "pass-tokens 15: must be auto (0) or 16..65536" "$work/tiny" --config "$work/bad.conf"

finish
