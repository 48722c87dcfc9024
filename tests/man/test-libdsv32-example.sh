#!/bin/bash
# libdsv32(3)'s EXAMPLE, built from the page itself (tests/man/libdsv32-example, see
# local.mk), against a dsv32d on the tiny model: it streams the same text as
# `dsv32 generate` for the same greedy request and reports 32 tokens finished by length.
# Bad input: no prompt is a usage error (2); a socket with no daemon fails with exit 1 and
# the library's reason (the socket path and "No such file").
set -uo pipefail
: "${top_builddir:?}"
ex=$top_builddir/tests/man/libdsv32-example
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dsv32-libex-XXXXXX")
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; [ -f "$tmp/daemon.log" ] && { echo "--- daemon log"; cat "$tmp/daemon.log"; }; exit 1; }
[ -x "$ex" ] || fail "$ex was not built"

"$ex" >/dev/null 2>&1; rc=$?
[ "$rc" -eq 2 ] || fail "no prompt: exit $rc, want 2"
out=$("$ex" "hello" "$tmp/nobody-here.sock" 2>&1); rc=$?
[ "$rc" -eq 1 ] || fail "no daemon: exit $rc, want 1 ($out)"
grep -q "cannot connect to dsv32d: .*$tmp/nobody-here.sock" <<< "$out" || fail "no daemon: the message does not name the socket: $out"

"$top_builddir/dsv32-mkmodel" --preset tiny --out "$tmp/model" >/dev/null || fail "dsv32-mkmodel"
: > "$tmp/empty.conf"
"$top_builddir/dsv32d" --config "$tmp/empty.conf" --model "$tmp/model" --socket "$tmp/d.sock" --threads 1 \
    2>"$tmp/daemon.log" &
pid=$!
for _ in $(seq 200); do "$top_builddir/dsv32" --socket "$tmp/d.sock" ping --count 1 >/dev/null 2>&1 && break; sleep 0.05; done

prompt="Once upon a time"
"$ex" "$prompt" "$tmp/d.sock" >"$tmp/ex.out" 2>"$tmp/ex.err" || fail "the example failed: $(cat "$tmp/ex.err")"
"$top_builddir/dsv32" --socket "$tmp/d.sock" generate --max-tokens 32 --temperature 0 "$prompt" >"$tmp/cli.out" 2>"$tmp/cli.err" ||
  fail "dsv32 generate: $(cat "$tmp/cli.err")"
echo "example: $(cat "$tmp/ex.err")"
[ -s "$tmp/ex.out" ] || fail "the example printed no text"
cmp -s "$tmp/ex.out" "$tmp/cli.out" || { od -c "$tmp/ex.out" | head; od -c "$tmp/cli.out" | head; fail "the example's text differs from dsv32 generate's"; }
grep -q "^32 tokens after a [0-9]*-token prompt, finished by length$" "$tmp/ex.err" || fail "unexpected report: $(cat "$tmp/ex.err")"
kill "$pid"; wait "$pid"; rc=$?; pid=
[ "$rc" -eq 0 ] || fail "dsv32d exit status $rc"
echo "PASS: the man page's example builds, streams what dsv32 generate prints, and fails clearly"
