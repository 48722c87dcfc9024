#!/bin/bash
# Builds the Debian (deb) or RPM (rpm) packages of dsv32d from a `make dist` tarball, in a
# fresh directory, so that nothing of the developer's build tree can get into them, and
# moves them to OUTDIR. Called by `make deb`, `make rpm` and `make check-packaging`.
#   build.sh deb|rpm TARBALL OUTDIR cuda|nocuda
# deb: dpkg-buildpackage -b with packaging/debian as debian/ (profile nocuda leaves out
# dsv32d-cuda); DEB_BUILD_OPTIONS defaults to "nocheck parallel=2" (set it to run the
# suite). rpm: rpmbuild -bb on packaging/rpm/dsv32d.spec (--without cuda); on a system
# without an RPM database (Debian) with --nodeps, as BuildRequires cannot be checked there.
set -euo pipefail
kind=${1:?usage: build.sh deb|rpm TARBALL OUTDIR cuda|nocuda}
tarball=$(realpath "${2:?no tarball}")
outdir=$(realpath "${3:?no output directory}")
cuda=${4:-cuda}
need() { command -v "$1" >/dev/null || { echo "build.sh: $1 not found: apt-get install $2 (or run .ci/setup)" >&2; exit 1; }; }
top=$(basename "$tarball" .tar.gz)
version=${top#dsv32d-}
work=$(mktemp -d "${TMPDIR:-/tmp}/dsv32d-$kind.XXXXXX")
trap 'rm -rf "$work"' EXIT

case $kind in
deb)
  need dpkg-buildpackage dpkg-dev
  need dh debhelper
  tar -C "$work" -xzf "$tarball"
  src=$work/$top
  cp -r "$src/packaging/debian" "$src/debian"
  debver=$(cd "$src" && dpkg-parsechangelog -S Version)
  if [ "${debver%-*}" != "$version" ]; then
    echo "build.sh: packaging/debian/changelog is at $debver but the source is $version:" \
         "add an entry (dch -v $version-1) to packaging/debian/changelog" >&2
    exit 1
  fi
  profile=
  [ "$cuda" = cuda ] || profile=-Pnocuda
  (cd "$src" && DEB_BUILD_OPTIONS=${DEB_BUILD_OPTIONS-nocheck parallel=2} dpkg-buildpackage --no-sign -b $profile)
  mv "$work"/*.deb "$work"/*.changes "$work"/*.buildinfo "$outdir/"
  ;;
rpm)
  need rpmbuild rpm
  mkdir -p "$work"/{SOURCES,SPECS,BUILD,RPMS,SRPMS}
  cp "$tarball" "$work/SOURCES/"
  tar -xzOf "$tarball" "$top/systemd/sysusers.conf" > "$work/SOURCES/dsv32d.sysusers"
  tar -xzOf "$tarball" "$top/packaging/rpm/dsv32d.spec" > "$work/SPECS/dsv32d.spec"
  opts=(--define "_topdir $work")
  [ "$cuda" = cuda ] || opts+=(--without cuda)
  if ! rpm -q rpm >/dev/null 2>&1; then
    # rpmbuild on a host that is not an RPM distribution (Debian): no RPM database to check
    # BuildRequires against; its brp-compress needs bash but says /bin/sh, and its brp-strip
    # leaves the symbol tables (find-debuginfo strips them on an RPM distribution)
    opts+=(--nodeps --define '__os_install_post bash /usr/lib/rpm/brp-compress /usr; for f in $(find "$RPM_BUILD_ROOT" -type f); do case $(file -b "$f") in ELF*"not stripped"*) strip --strip-unneeded "$f" ;; esac; done; /usr/lib/rpm/brp-remove-la-files')
  fi
  rpmbuild -bb "${opts[@]}" "$work/SPECS/dsv32d.spec"
  mv "$work"/RPMS/*/*.rpm "$outdir/"
  ;;
*)
  echo "build.sh: unknown kind '$kind' (deb or rpm)" >&2
  exit 2
  ;;
esac
