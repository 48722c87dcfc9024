#!/bin/bash
# The units as the build made them: `systemd-analyze verify` finds nothing to say about
# dsv32d.service and dsv32d.socket, alone and with each drop-in (cuda.conf for GPU hosts,
# multi-node.conf); `systemd-analyze security --offline=yes` rates each combination at an
# exposure of at most 2.0 (printed), and every setting it still counts against the service
# is named in a comment of the unit or of the drop-in, which says why it stays open.
# ExecStart points at the dsv32d of this build (verify checks that the program exists).
# dsv32-openai.service (the HTTP gateway) passes the same gate.
# Exit 77 without systemd-analyze or without --offline (systemd < 250).
set -uo pipefail
: "${top_builddir:?}" "${top_srcdir:?}"
command -v systemd-analyze >/dev/null || { echo "SKIP: no systemd-analyze (package systemd)"; exit 77; }
grep -q -- --offline <<< "$(systemd-analyze security --help 2>&1)" || { echo "SKIP: systemd-analyze lacks --offline (systemd < 250)"; exit 77; }
limit=2.0
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dsv32-units-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
dsv32d=$(cd "$top_builddir" && pwd)/dsv32d
[ -x "$dsv32d" ] || fail "no $dsv32d"
[ -f "$top_builddir/systemd/dsv32d.service" ] || fail "systemd/dsv32d.service was not built"
grep -q '^ExecStart=/.*/dsv32d --config /.*/dsv32d/dsv32d.conf$' "$top_builddir/systemd/dsv32d.service" ||
  fail "ExecStart of the built unit has no absolute paths: $(grep ^ExecStart "$top_builddir/systemd/dsv32d.service")"

# one unit directory per combination
check() {
  local name=$1; shift
  local dir=$tmp/$name out score
  mkdir -p "$dir/dsv32d.service.d"
  sed "s|^ExecStart=[^ ]*|ExecStart=$dsv32d|" "$top_builddir/systemd/dsv32d.service" > "$dir/dsv32d.service"
  cp "$top_srcdir/systemd/dsv32d.socket" "$dir/"
  for d in "$@"; do cp "$top_srcdir/systemd/$d" "$dir/dsv32d.service.d/"; done
  # verify prints nothing for clean units (it exits 0 on some warnings, so read its output)
  out=$(cd "$dir" && SYSTEMD_LOG_COLOR=0 systemd-analyze verify --man=no ./dsv32d.service ./dsv32d.socket 2>&1) ||
    fail "$name: systemd-analyze verify failed: $out"
  [ -z "$out" ] || fail "$name: systemd-analyze verify: $out"
  out=$(cd "$dir" && SYSTEMD_COLORS=0 systemd-analyze security --offline=yes --no-pager ./dsv32d.service 2>&1)
  score=$(echo "$out" | sed -n 's/.*Overall exposure level for dsv32d.service: \([0-9.]*\).*/\1/p')
  [ -n "$score" ] || fail "$name: no exposure level in: $out"
  echo "$name: exposure $score (limit $limit)"
  awk -v s="$score" -v l="$limit" 'BEGIN { exit !(s <= l) }' || { echo "$out" | grep '✗'; fail "$name: exposure $score > $limit"; }
  # each setting still counted against the service is justified in a comment
  local comments
  comments=$(cat "$dir/dsv32d.service" "$dir"/dsv32d.service.d/*.conf 2>/dev/null | grep '^#')
  while read -r setting; do
    echo "  open: $setting"
    grep -q -- "$setting" <<< "$comments" || fail "$name: $setting counts against the unit but no comment says why"
  done < <(echo "$out" | sed -n 's/^✗ \([A-Za-z]*\)=.*/\1/p' | sort -u)
}
check base
check gpu cuda.conf
check multi-node cuda.conf multi-node.conf

# the HTTP gateway's unit: the same gate, next to the daemon's units it is ordered after
gateway() {
  local dir=$tmp/gateway out score
  local prog
  prog=$(cd "$top_builddir" && pwd)/dsv32-openai
  [ -x "$prog" ] || fail "no $prog"
  [ -f "$top_builddir/systemd/dsv32-openai.service" ] || fail "systemd/dsv32-openai.service was not built"
  grep -q '^ExecStart=/.*/dsv32-openai --listen 127.0.0.1:8000 --socket /run/dsv32d/dsv32d.sock$' \
    "$top_builddir/systemd/dsv32-openai.service" || fail "ExecStart of dsv32-openai.service: $(grep ^ExecStart "$top_builddir/systemd/dsv32-openai.service")"
  mkdir -p "$dir"
  sed "s|^ExecStart=[^ ]*|ExecStart=$dsv32d|" "$top_builddir/systemd/dsv32d.service" > "$dir/dsv32d.service"
  sed "s|^ExecStart=[^ ]*|ExecStart=$prog|" "$top_builddir/systemd/dsv32-openai.service" > "$dir/dsv32-openai.service"
  cp "$top_srcdir/systemd/dsv32d.socket" "$dir/"
  out=$(cd "$dir" && SYSTEMD_LOG_COLOR=0 systemd-analyze verify --man=no ./dsv32-openai.service ./dsv32d.service ./dsv32d.socket 2>&1) ||
    fail "gateway: systemd-analyze verify failed: $out"
  [ -z "$out" ] || fail "gateway: systemd-analyze verify: $out"
  out=$(cd "$dir" && SYSTEMD_COLORS=0 systemd-analyze security --offline=yes --no-pager ./dsv32-openai.service 2>&1)
  score=$(echo "$out" | sed -n 's/.*Overall exposure level for dsv32-openai.service: \([0-9.]*\).*/\1/p')
  [ -n "$score" ] || fail "gateway: no exposure level in: $out"
  echo "gateway: exposure $score (limit $limit)"
  awk -v s="$score" -v l="$limit" 'BEGIN { exit !(s <= l) }' || { echo "$out" | grep '✗'; fail "gateway: exposure $score > $limit"; }
  local comments
  comments=$(grep '^#' "$dir/dsv32-openai.service")
  while read -r setting; do
    echo "  open: $setting"
    echo "$comments" | grep -q -- "$setting" || fail "gateway: $setting counts against the unit but no comment says why"
  done < <(echo "$out" | sed -n 's/^✗ \([A-Za-z]*\)=.*/\1/p' | sort -u)
}
gateway
echo "PASS: verify clean and exposure <= $limit with each drop-in and for dsv32-openai.service, open settings justified"
