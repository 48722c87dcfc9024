#!/bin/bash
# `make check-packaging` (as root, on a Debian host; not part of `make check`): builds the
# .deb and .rpm packages from the `make dist` tarball in clean directories, checks what goes
# in which package (and that nothing of a build tree does), lints both kinds, then installs
# the .debs on this machine and runs the daemon exactly as the units would: as user dsv32d,
# on a socket held by systemd-socket-activate at the unit's path with the unit's group and
# mode, NOTIFY_SOCKET at a listener of ours that must see READY=1, WATCHDOG=1 and STOPPING=1.
# A member of group dsv32 is served, a non-member refused; SIGTERM ends it cleanly. Then
# remove (settings, state and cache stay) and purge (they go; the user and group stay, as
# Debian does for system users), and nothing else named dsv32 is left on the machine.
# Refuses to run where dsv32d is installed or its directories exist: a purge would delete
# an operator's settings and models. Prints the time of each step.
set -uo pipefail
: "${top_builddir:?}" "${top_srcdir:?}" "${TARBALL:?}" "${PACKAGING_CUDA:?}" "${dsv_programs:?}" "${dsv_man_pages:?}"
t0=$(date +%s)
step() { echo "=== $* (at $(($(date +%s) - t0)) s)"; }
errors=0
bad() { echo "FAIL: $*"; errors=$((errors + 1)); }
die() { echo "FAIL: $*"; exit 1; }
pkgs="dsv32d libdsv32-0 libdsv32-dev dsv32d-cuda"
# libdsv32's real file name follows libtool's -version-info C:R:A in client/local.mk:
# libdsv32.so.(C-A).A.R; the SONAME libdsv32.so.0 (C-A) is what the package name promises.
vi=$(sed -n 's/.*-version-info \([0-9]*:[0-9]*:[0-9]*\).*/\1/p' "$top_srcdir/client/local.mk")
IFS=: read -r lt_c lt_r lt_a <<< "$vi"
[ -n "$lt_a" ] || die "no -version-info C:R:A for libdsv32 in client/local.mk"
[ $((lt_c - lt_a)) -eq 0 ] || die "libdsv32's -version-info $vi gives SONAME libdsv32.so.$((lt_c - lt_a)): rename the package libdsv32-0 and its symbols file first"
libreal="libdsv32.so.0.$lt_a.$lt_r"

# ---------------------------------------------------------------- preconditions
[ "$(id -u)" -eq 0 ] || die "check-packaging installs packages and starts the daemon as user dsv32d: run it as root"
for t in dpkg-buildpackage:dpkg-dev dh:debhelper lintian:lintian rpmbuild:rpm rpmlint:rpmlint rpm2cpio:rpm \
         cpio:cpio systemd-analyze:systemd systemd-socket-activate:systemd setpriv:util-linux python3:python3 \
         man:man-db apt-get:apt; do
  command -v "${t%%:*}" >/dev/null || die "${t%%:*} not found: apt-get install ${t#*:} (or run .ci/setup)"
done
for p in $pkgs; do
  st=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null)
  case $st in ""|"un "*|"pn "*) ;; *) die "package $p is on this machine ($st): check-packaging would purge it; remove it first" ;; esac
done
for d in /etc/dsv32d /var/lib/dsv32d /var/cache/dsv32d /run/dsv32d; do
  [ ! -e "$d" ] || die "$d exists: check-packaging would delete it with the purge; move it away first"
done
tarball=$(realpath "$TARBALL")
[ -f "$tarball" ] || die "no tarball $TARBALL"

work=$(mktemp -d /tmp/dsv32d-pkgcheck.XXXXXX)
chmod 0755 "$work"
installed=
daemon_pid=
listener_pid=
cleanup() {
  [ -n "$daemon_pid" ] && kill -KILL "$daemon_pid" 2>/dev/null
  [ -n "$listener_pid" ] && kill "$listener_pid" 2>/dev/null
  wait 2>/dev/null
  if [ -n "$installed" ]; then
    dpkg --purge $pkgs >/dev/null 2>&1
  fi
  rm -rf /run/dsv32d "$work"
}
trap cleanup EXIT
mkdir -p "$work/deb" "$work/rpm"
scan_roots() {
  find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /run -o -path /tmp -o -path /var/tmp \
       -o -path /var/cache/man -o -path /work -o -path /root -o -path /home -o -path "$(realpath "$top_builddir")" -o -path "$(realpath "$top_srcdir")" \) \
       -prune -o -name '*dsv32*' -print 2>/dev/null | sort
}
scan_roots > "$work/before.list"

# ---------------------------------------------------------------- build
step "deb: dpkg-buildpackage from $(basename "$tarball") ($PACKAGING_CUDA)"
bash "$top_srcdir/packaging/build.sh" deb "$tarball" "$work/deb" "$PACKAGING_CUDA" > "$work/deb.log" 2>&1 ||
  { tail -40 "$work/deb.log"; die "the .deb build failed (log above)"; }
grep -i "dpkg-gensymbols: warning" -A20 "$work/deb.log" && bad "libdsv32's exported symbols differ from packaging/debian/libdsv32-0.symbols (diff above): add new symbols with the version that adds them"
step "rpm: rpmbuild -bb from $(basename "$tarball") ($PACKAGING_CUDA)"
bash "$top_srcdir/packaging/build.sh" rpm "$tarball" "$work/rpm" "$PACKAGING_CUDA" > "$work/rpm.log" 2>&1 ||
  { tail -40 "$work/rpm.log"; die "the .rpm build failed (log above)"; }
ls "$work/deb" "$work/rpm"

# ---------------------------------------------------------------- file lists
step "file lists"
arch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
version=$(basename "$tarball" .tar.gz); version=${version#dsv32d-}
# every path each package must hold (the programs and pages from the Makefile's lists)
expect_deb() {
  echo "dsv32d usr/sbin/dsv32d"
  for p in $dsv_programs; do p=$(basename "$p"); [ "$p" = dsv32d ] || echo "dsv32d usr/bin/$p"; done
  for m in $dsv_man_pages; do
    m=$(basename "$m"); s=${m##*.}
    if [ "$m" = libdsv32.3 ]; then echo "libdsv32-dev usr/share/man/man$s/$m.gz"; else echo "dsv32d usr/share/man/man$s/$m.gz"; fi
  done
  cat <<EOF
dsv32d etc/dsv32d/dsv32d.conf
dsv32d lib/systemd/system/dsv32d.service
dsv32d lib/systemd/system/dsv32d.socket
dsv32d lib/systemd/system/dsv32-openai.service
dsv32d usr/lib/sysusers.d/dsv32d.conf
dsv32d usr/lib/tmpfiles.d/dsv32d.conf
dsv32d usr/share/doc/dsv32d/examples/multi-node.conf
libdsv32-0 usr/lib/$arch/libdsv32.so.0
libdsv32-0 usr/lib/$arch/$libreal
libdsv32-dev usr/include/dsv32.h
libdsv32-dev usr/lib/$arch/libdsv32.so
libdsv32-dev usr/lib/$arch/pkgconfig/dsv32.pc
EOF
  if [ "$PACKAGING_CUDA" = cuda ]; then
    echo "dsv32d-cuda usr/lib/$arch/dsv32d/dsv32-backend-cuda.so"
    echo "dsv32d-cuda lib/systemd/system/dsv32d.service.d/cuda.conf"
  fi
}
: > "$work/deb.files"
for deb in "$work"/deb/*.deb; do
  p=$(dpkg-deb -f "$deb" Package)
  # owners: everything root
  dpkg-deb -c "$deb" | awk '$2 != "root/root" { print }' | grep . && bad "$p: files not owned by root (above)"
  dpkg-deb -c "$deb" | awk '$1 !~ /^d/ { sub(/^\.\//, "", $6); print $6 }' | sed "s|^|$p |" >> "$work/deb.files"
done
expect_deb | sort > "$work/deb.expected"
while read -r p f; do
  grep -qx "$p $f" "$work/deb.files" || bad "$f is not in package $p ($(grep " $f\$" "$work/deb.files" | cut -d' ' -f1 | tr '\n' ' '))"
done < "$work/deb.expected"
# anything else must be package bookkeeping: docs, lintian overrides, debug symbols
while read -r p f; do
  grep -qx "$p $f" "$work/deb.expected" && continue
  case $f in
    usr/share/doc/$p/copyright|usr/share/doc/$p/changelog.Debian.gz|usr/share/doc/dsv32d/README.md*) ;;
    usr/share/lintian/overrides/$p) ;;
    usr/lib/debug/*) case $p in *-dbgsym) ;; *) bad "$p: $f outside a -dbgsym package" ;; esac ;;
    usr/share/doc/$p) ;; # the -dbgsym packages' doc link
    *) bad "$p: unexpected file $f (build-tree leftover, or a new file: add it to tests/packaging/check-packaging.sh)" ;;
  esac
done < "$work/deb.files"
[ "$PACKAGING_CUDA" = cuda ] || ! ls "$work"/deb/dsv32d-cuda_*.deb >/dev/null 2>&1 || bad "a dsv32d-cuda package was built without CUDA"
dpkg-deb -f "$work"/deb/dsv32d_*.deb Depends | grep -q 'libdsv32-0' || bad "dsv32d does not depend on libdsv32-0"
dpkg-deb -I "$work"/deb/dsv32d_*.deb conffiles | grep -qx /etc/dsv32d/dsv32d.conf || bad "/etc/dsv32d/dsv32d.conf is not a conffile"
if [ "$PACKAGING_CUDA" = cuda ]; then
  dpkg-deb -f "$work"/deb/dsv32d-cuda_*.deb Depends | grep -q 'cuda-cudart-[0-9]*-[0-9]*, libcublas-[0-9]*-[0-9]*' ||
    bad "dsv32d-cuda does not depend on NVIDIA's CUDA runtime packages: $(dpkg-deb -f "$work"/deb/dsv32d-cuda_*.deb Depends)"
fi
# contents: no path of a build tree anywhere (the daemon once searched its build tree for plugins)
mkdir -p "$work/x"
for deb in "$work"/deb/*.deb; do
  case $deb in *-dbgsym_*) continue ;; esac
  dpkg-deb -x "$deb" "$work/x/deb"
done
(cd "$work/rpm" && for r in *.rpm; do case $r in *debuginfo*|*debugsource*) continue ;; esac
  mkdir -p "$work/x/rpm" && (cd "$work/x/rpm" && rpm2cpio "$work/rpm/$r" | cpio -idm --quiet); done)
leaks=$(grep -rlE "/tmp/dsv32d-(deb|rpm)\.|$(realpath "$top_builddir")|$(realpath "$top_srcdir")|/rpmbuild/BUILD" "$work/x" 2>/dev/null)
[ -z "$leaks" ] || bad "build-tree paths inside packaged files: $leaks"
soname=$(objdump -p "$work/x/deb/usr/lib/$arch/$libreal" | awk '$1 == "SONAME" { print $2 }')
[ "$soname" = libdsv32.so.0 ] || bad "libdsv32's SONAME is '$soname', the package libdsv32-0 says libdsv32.so.0"
grep -qx "libdir=/usr/lib/$arch" "$work/x/deb/usr/lib/$arch/pkgconfig/dsv32.pc" || grep -q '^libdir=${prefix}/lib/'"$arch"'$' "$work/x/deb/usr/lib/$arch/pkgconfig/dsv32.pc" ||
  bad "dsv32.pc: $(grep ^libdir "$work/x/deb/usr/lib/$arch/pkgconfig/dsv32.pc")"
grep -qx 'ExecStart=/usr/sbin/dsv32d --config /etc/dsv32d/dsv32d.conf' "$work/x/deb/lib/systemd/system/dsv32d.service" ||
  bad "packaged unit: $(grep ^ExecStart "$work/x/deb/lib/systemd/system/dsv32d.service")"

# rpm: the same split, under RPM's names and directories
expect_rpm() {
  expect_deb | sed -e "s|^libdsv32-0 |libdsv32 |; s|^libdsv32-dev |libdsv32-devel |; s|^dsv32d-cuda |dsv32d-cuda |" \
    -e "s| usr/lib/$arch/| usr/lib64/|; s| lib/systemd/| usr/lib/systemd/|" \
    -e "s|usr/share/doc/dsv32d/examples/multi-node.conf|usr/share/doc/dsv32d[^/]*/multi-node.conf|" \
    -e 's|\.gz$||'
  echo "dsv32d var/lib/dsv32d"
  echo "dsv32d var/cache/dsv32d"
}
: > "$work/rpm.files"
for r in "$work"/rpm/*.rpm; do
  n=$(rpm -qp --qf '%{NAME}' "$r" 2>/dev/null)
  # man pages compressed or not, as the distribution's rpm does it
  rpm -qlp "$r" 2>/dev/null | sed -E "s|^/||; s/\.(gz|bz2|xz|zst)$//; s|^|$n |" >> "$work/rpm.files"
done
while read -r p f; do
  grep -qxE "$p $f" "$work/rpm.files" || bad "rpm: $f is not in package $p ($(grep " $f\$" "$work/rpm.files" | cut -d' ' -f1 | tr '\n' ' '))"
done < <(expect_rpm)
r=$(ls "$work"/rpm/dsv32d-"$version"-*.rpm | grep -v -e cuda -e debug | head -1)
rpm -qcp "$r" 2>/dev/null | grep -qx /etc/dsv32d/dsv32d.conf || bad "rpm: /etc/dsv32d/dsv32d.conf is not %config"
rpm -qlvp "$r" 2>/dev/null | grep -q '^drwxr-x--- .* dsv32d *dsv32d .* /var/lib/dsv32d$' || bad "rpm: /var/lib/dsv32d is not dsv32d:dsv32d 0750: $(rpm -qlvp "$r" | grep /var/lib/dsv32d)"
rpm -qp --scripts "$r" 2>/dev/null | grep -q 'sysusers' || bad "rpm: %pre does not create the user through sysusers"
rpm -qp --scripts "$r" 2>/dev/null | grep -q 'try-restart\|condrestart' && bad "rpm: a scriptlet restarts the daemon on upgrade"
awk '{print $2}' "$work/deb.files" | grep -E '\.(la|a|o)$|(^|/)tests?/' && bad "libtool archives, objects or tests packaged (above)"
awk '{print $2}' "$work/rpm.files" | grep -E '\.(la|a|o)$|(^|/)tests?/' && bad "rpm: libtool archives, objects or tests packaged (above)"

# ---------------------------------------------------------------- lint
step "lintian"
lintian --fail-on error,warning "$work"/deb/*.changes > "$work/lintian.log" 2>&1 || bad "lintian: $(grep -E '^[EW]:' "$work/lintian.log")"
grep -E '^[EWI]:' "$work/lintian.log"
step "rpmlint"
cat "$top_srcdir/packaging/rpm/dsv32d.rpmlintrc" > "$work/rpmlintrc"
[ "$PACKAGING_CUDA" = nocuda ] || cat "$top_srcdir/packaging/rpm/dsv32d-cuda.rpmlintrc" >> "$work/rpmlintrc"
rpmlint -r "$work/rpmlintrc" "$work"/rpm/*.rpm > "$work/rpmlint.log" 2>&1
tail -1 "$work/rpmlint.log"
grep -qE ' 0 errors, 0 warnings' "$work/rpmlint.log" || bad "rpmlint: $(grep -E ': [EW]: ' "$work/rpmlint.log")"

# ---------------------------------------------------------------- install
step "install the .debs"
debs=$(ls "$work"/deb/*.deb | grep -v -e dbgsym -e dsv32d-cuda_)
installed=yes
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $debs > "$work/install.log" 2>&1 ||
  { cat "$work/install.log"; die "apt-get install of the packages failed"; }
getent passwd dsv32d > "$work/passwd" || die "no user dsv32d after the installation"
IFS=: read -r _ _ uid gid _ home shell < "$work/passwd"
[ "$uid" -lt 1000 ] || bad "dsv32d is not a system user (uid $uid)"
case $shell in */nologin|/bin/false) ;; *) bad "dsv32d has a login shell ($shell)" ;; esac
dsv32_gid=$(getent group dsv32 | cut -d: -f3)
[ -n "$dsv32_gid" ] || die "no group dsv32 after the installation"
echo "user dsv32d: uid $uid gid $gid home $home shell $shell; group dsv32: gid $dsv32_gid"
mode_is() { local m; m=$(stat -c '%U:%G %a' "$1" 2>&1); [ "$m" = "$2" ] || bad "$1: $m, want $2"; }
mode_is /usr/sbin/dsv32d "root:root 755"
mode_is /usr/bin/dsv32 "root:root 755"
mode_is /etc/dsv32d/dsv32d.conf "root:root 644"
mode_is /lib/systemd/system/dsv32d.service "root:root 644"
mode_is /lib/systemd/system/dsv32d.socket "root:root 644"
mode_is "/usr/lib/$arch/$libreal" "root:root 644"
mode_is /var/lib/dsv32d "dsv32d:dsv32d 750"
mode_is /var/cache/dsv32d "dsv32d:dsv32d 750"
cmp -s /etc/dsv32d/dsv32d.conf "$top_builddir/systemd/dsv32d.conf" || bad "the installed dsv32d.conf is not what dsv32d --print-default-config prints"

step "systemd-analyze on the installed units"
out=$(SYSTEMD_LOG_COLOR=0 systemd-analyze verify /lib/systemd/system/dsv32d.socket /lib/systemd/system/dsv32d.service 2>&1)
[ -z "$out" ] || bad "systemd-analyze verify: $out"
out=$(SYSTEMD_COLORS=0 systemd-analyze security --offline=yes --no-pager /lib/systemd/system/dsv32d.service 2>&1)
score=$(echo "$out" | sed -n 's/.*Overall exposure level for dsv32d.service: \([0-9.]*\).*/\1/p')
echo "exposure of the installed dsv32d.service: ${score:-none}"
awk -v s="${score:-99}" 'BEGIN { exit !(s <= 2.0) }' || bad "exposure ${score:-unknown} > 2.0"

step "libdsv32-dev: the libdsv32(3) example against the installed header and library"
zcat /usr/share/man/man3/libdsv32.3.gz > "$work/libdsv32.3"
bash "$top_srcdir/tests/man/extract-example.sh" "$work/libdsv32.3" > "$work/hello.c" || bad "no example in the installed libdsv32(3)"
# shellcheck disable=SC2046
cc -Wall -Werror "$work/hello.c" $(pkg-config --cflags --libs dsv32) -o "$work/hello-dsv32" 2>&1 || bad "the example does not build with pkg-config dsv32"

# ---------------------------------------------------------------- run as the units would
step "start dsv32d as dsv32d.socket + dsv32d.service would"
unit=/lib/systemd/system/dsv32d.service sockunit=/lib/systemd/system/dsv32d.socket
key() { sed -n "s/^$2=//p" "$1" | tail -1; }
exec_start=$(key "$unit" ExecStart)
run_user=$(key "$unit" User) run_group=$(key "$unit" Group)
sock=$(key "$sockunit" ListenSequentialPacket)
sock_group=$(key "$sockunit" SocketGroup) sock_mode=$(key "$sockunit" SocketMode)
rundir=/run/$(key "$unit" RuntimeDirectory) rundir_mode=$(key "$unit" RuntimeDirectoryMode)
echo "ExecStart=$exec_start User=$run_user Group=$run_group socket $sock ($sock_group, $sock_mode)"
dsv32-mkmodel --preset tiny --out /var/lib/dsv32d/model > /dev/null || die "dsv32-mkmodel (installed) failed"
chown -R "$run_user:$run_group" /var/lib/dsv32d/model
install -d -o "$run_user" -g "$run_group" -m "$rundir_mode" "$rundir"
mkdir -m 0755 "$work/notify"
python3 -c '
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
os.chmod(sys.argv[1], 0o777)
with open(sys.argv[2], "a", buffering=1) as f:
    while True:
        f.write(s.recv(65536).decode(errors="replace").replace("\n", ";") + "\n")
' "$work/notify/sock" "$work/notify.log" &
listener_pid=$!
for _ in $(seq 50); do [ -S "$work/notify/sock" ] && break; sleep 0.1; done
# shellcheck disable=SC2086
systemd-socket-activate --seqpacket -l "$sock" -E NOTIFY_SOCKET="$work/notify/sock" -E WATCHDOG_USEC=2000000 \
  setpriv --reuid="$run_user" --regid="$run_group" --init-groups --no-new-privs --bounding-set=-all -- \
  $exec_start > "$work/daemon.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
[ -S "$sock" ] || die "no socket at $sock"
chgrp "$sock_group" "$sock" && chmod "$sock_mode" "$sock"

step "connect as a member of $sock_group, then as a non-member"
member() { setpriv --reuid=64321 --regid=64321 --groups="$dsv32_gid" -- "$@"; }
stranger() { setpriv --reuid=64322 --regid=64322 --clear-groups -- "$@"; }
out=$(member dsv32 --socket "$sock" generate --ids --tokens 0,5,6,7 --max-tokens 8 2>"$work/member.err") ||
  bad "a member of $sock_group was not served: $(cat "$work/member.err"; cat "$work/daemon.log")"
ref=$(dsv32-run --model /var/lib/dsv32d/model --tokens 0,5,6,7 --generate 8 --threads 1)
[ "$out" = "$ref" ] || bad "served '$out', dsv32-run says '$ref'"
echo "member (uid 64321, group $sock_group): $out"
member "$work/hello-dsv32" "Once upon a time" "$sock" > "$work/hello.out" 2>&1 || bad "the libdsv32(3) example as a member: $(cat "$work/hello.out")"
out=$(stranger dsv32 --socket "$sock" ping --count 1 2>&1); rc=$?
echo "non-member (uid 64322): exit $rc: $out"
[ "$rc" -eq 4 ] || bad "a non-member got exit status $rc, want 4 (permission denied)"
ps -o user= -p "$daemon_pid" | grep -qx "$run_user" || bad "the daemon runs as $(ps -o user= -p "$daemon_pid"), not $run_user"
grep -q "Using the socket passed by systemd" "$work/daemon.log" || bad "the daemon did not take the socket from LISTEN_FDS"
sleep 1.5 # a watchdog period

step "SIGTERM"
kill -TERM "$daemon_pid"
wait "$daemon_pid"; rc=$?; daemon_pid=
[ "$rc" -eq 0 ] || bad "dsv32d exited $rc after SIGTERM"
sleep 0.2
kill "$listener_pid" 2>/dev/null; wait "$listener_pid" 2>/dev/null; listener_pid=
echo "notifications: $(cut -c1-60 "$work/notify.log" | sort | uniq -c | sort -rn | awk '{$1=$1; print}' | tr '\n' '|')"
for m in READY=1 WATCHDOG=1 STOPPING=1 STATUS=; do
  grep -q "^$m\|;$m" "$work/notify.log" || bad "the notify listener never saw $m"
done
rm -rf "$rundir"

# ---------------------------------------------------------------- remove, purge
step "remove"
DEBIAN_FRONTEND=noninteractive apt-get remove -y -q $(echo "$debs" | xargs -n1 dpkg-deb -f | sed -n 's/^Package: //p') > "$work/remove.log" 2>&1 ||
  { cat "$work/remove.log"; bad "apt-get remove failed"; }
[ ! -e /usr/sbin/dsv32d ] || bad "/usr/sbin/dsv32d is still there after remove"
[ -f /etc/dsv32d/dsv32d.conf ] || bad "remove deleted the settings (/etc/dsv32d/dsv32d.conf)"
[ -f /var/lib/dsv32d/model/config.json ] || bad "remove deleted the state directory (the model in /var/lib/dsv32d)"
[ -d /var/cache/dsv32d ] || bad "remove deleted the cache directory"
dpkg-query -W -f='${db:Status-Abbrev}' dsv32d | grep -q '^rc' || bad "dsv32d is not in state config-files after remove"
step "purge"
dpkg --purge $pkgs > "$work/purge.log" 2>&1 || { cat "$work/purge.log"; bad "dpkg --purge failed"; }
installed=
for d in /etc/dsv32d /var/lib/dsv32d /var/cache/dsv32d; do [ ! -e "$d" ] || bad "$d is still there after purge"; done
getent passwd dsv32d >/dev/null && getent group dsv32 >/dev/null || bad "purge removed the user dsv32d or the group dsv32 (system users stay)"
scan_roots > "$work/after.list"
left=$(comm -13 "$work/before.list" "$work/after.list")
[ -z "$left" ] || bad "left after purge: $left"

step "done: $errors problem(s)"
[ "$errors" -eq 0 ] || exit 1
echo "PASS: check-packaging in $(($(date +%s) - t0)) s"
