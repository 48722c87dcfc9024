#!/bin/bash
# An unauthorized uid is refused with a clear message: dsv32d runs as root with a socket
# anybody may open (mode 0666), and `dsv32 ping` run as `nobody` (setpriv, else runuser)
# must be turned away by the SO_PEERCRED policy: exit status 4 and a message naming the
# uid and the way in (group dsv32). The daemon logs the refusal with uid and pid. Then
# allow-users is extended by SIGHUP and the same command succeeds. Needs root (exit 77
# otherwise) and a `nobody` user.
set -uo pipefail
: "${top_builddir:?}"
[ "$(id -u)" -eq 0 ] || { echo "SKIP: needs root to run a client as nobody"; exit 77; }
id nobody >/dev/null 2>&1 || { echo "SKIP: no user nobody"; exit 77; }
if command -v setpriv >/dev/null; then
  as_nobody() { setpriv --reuid=nobody --regid="$(id -g nobody)" --clear-groups -- "$@"; }
elif command -v runuser >/dev/null; then
  as_nobody() { runuser -u nobody -- "$@"; }
else
  echo "SKIP: neither setpriv nor runuser (util-linux)"; exit 77
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dsv32-access-XXXXXX")
pid=
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
chmod 0755 "$tmp"
fail() { echo "FAIL: $*"; echo "--- daemon log"; cat "$tmp/daemon.log"; exit 1; }

# nobody may not be able to read the build tree: give it its own copy of the CLI
if [ -x "$top_builddir/.libs/dsv32" ]; then
  cp "$top_builddir/.libs/dsv32" "$tmp/dsv32"
  cp -P "$top_builddir"/.libs/libdsv32.so* "$tmp/"
else
  cp "$top_builddir/dsv32" "$tmp/dsv32"
fi
chmod 0755 "$tmp"/dsv32 "$tmp"/libdsv32.so* 2>/dev/null
"$top_builddir/dsv32-mkmodel" --preset tiny --out "$tmp/model" >/dev/null || fail "dsv32-mkmodel"
printf 'allow-users = root\nallow-groups = \n' > "$tmp/dsv32d.conf"
"$top_builddir/dsv32d" --config "$tmp/dsv32d.conf" --model "$tmp/model" --socket "$tmp/d.sock" \
    --socket-mode 0666 --threads 1 2>"$tmp/daemon.log" &
pid=$!
for _ in $(seq 200); do "$top_builddir/dsv32" --socket "$tmp/d.sock" ping --count 1 >/dev/null 2>&1 && break; sleep 0.05; done
"$top_builddir/dsv32" --socket "$tmp/d.sock" ping --count 1 >/dev/null || fail "root cannot use the daemon"

out=$(as_nobody env LD_LIBRARY_PATH="$tmp" "$tmp/dsv32" --socket "$tmp/d.sock" ping --count 1 2>&1)
rc=$?
echo "as nobody: rc=$rc: $out"
[ "$rc" -eq 4 ] || fail "exit status $rc, want 4 (permission denied)"
grep -q "permission denied: uid $(id -u nobody) (nobody) may not use dsv32d" <<< "$out" || fail "unclear message: $out"
grep -q "group dsv32" <<< "$out" || fail "the message does not say how to get access: $out"
grep -q "Refused connection from uid $(id -u nobody) (nobody), pid [0-9]" "$tmp/daemon.log" || fail "the refusal is not logged with uid and pid"
kill -0 "$pid" || fail "dsv32d died"

# allowed after a reload
printf 'allow-users = root,nobody\nallow-groups = \n' > "$tmp/dsv32d.conf"
kill -HUP "$pid"
for _ in $(seq 100); do grep -q "allow-users = root,nobody" "$tmp/daemon.log" && break; sleep 0.05; done
as_nobody env LD_LIBRARY_PATH="$tmp" "$tmp/dsv32" --socket "$tmp/d.sock" ping --count 1 || fail "nobody is still refused after the reload"
kill "$pid"; wait "$pid"; rc=$?; pid=
[ "$rc" -eq 0 ] || fail "dsv32d exit status $rc"
echo "PASS: nobody refused with a clear message, then allowed after SIGHUP"
