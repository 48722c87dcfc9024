#!/bin/bash
# Socket activation: systemd-socket-activate holds a SOCK_SEQPACKET socket and starts
# dsv32d on the first connection, passing the socket (LISTEN_FDS); the client's first
# request is served by the daemon it caused to start. Exit 77 without the tool.
set -uo pipefail
: "${top_builddir:?}"
command -v systemd-socket-activate >/dev/null || { echo "SKIP: systemd-socket-activate not installed (package systemd)"; exit 77; }
grep -q -- --seqpacket <<< "$(systemd-socket-activate --help 2>&1)" || { echo "SKIP: systemd-socket-activate lacks --seqpacket"; exit 77; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dsv32-activation-XXXXXX")
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; sleep 0.2; [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; echo "--- log"; cat "$tmp/log"; exit 1; }
: > "$tmp/empty.conf"
"$top_builddir/dsv32-mkmodel" --preset tiny --out "$tmp/model" >/dev/null || fail "dsv32-mkmodel"
# --socket names a path the daemon must NOT create: it has to use the passed socket
systemd-socket-activate --seqpacket -l "$tmp/act.sock" \
    "$(cd "$top_builddir" && pwd)/dsv32d" --config "$tmp/empty.conf" --model "$tmp/model" \
    --socket "$tmp/not-used.sock" --threads 1 >"$tmp/log" 2>&1 &
pid=$!
for _ in $(seq 100); do [ -S "$tmp/act.sock" ] && break; sleep 0.05; done
[ -S "$tmp/act.sock" ] || fail "systemd-socket-activate did not create the socket"
out=$("$top_builddir/dsv32" --socket "$tmp/act.sock" generate --ids --tokens 0,5,6,7 --max-tokens 10 2>"$tmp/cli.err") ||
  fail "generate through the activated socket: $out $(cat "$tmp/cli.err")"
# the first client usually finds the daemon still loading and says so
cat "$tmp/cli.err"
ref=$("$top_builddir/dsv32-run" --model "$tmp/model" --tokens 0,5,6,7 --generate 10 --threads 1)
[ "$out" = "$ref" ] || fail "tokens '$out', dsv32-run says '$ref'"
grep -q "Using the socket passed by systemd" "$tmp/log" || fail "the daemon did not take the socket from LISTEN_FDS"
[ ! -e "$tmp/not-used.sock" ] || fail "the daemon created its own socket although one was passed"
"$top_builddir/dsv32" --socket "$tmp/act.sock" status | grep -q "ready" || fail "status"
echo "PASS: started by the first connection, served it on the passed socket"
