#!/bin/bash
# The manual: every page the build installs formats without a warning from groff
# (`man --warnings`, as lintian runs it) and has a NAME section that lexgrog (mandb's
# whatis parser) reads, naming the page's own name; every installed program, the client
# library and the settings file have a page; and every setting of the daemon's settings
# table is described in dsv32d(8). The lists come from the Makefile (dsv_man_pages,
# dsv_programs). Exit 77 without man-db.
set -uo pipefail
: "${top_builddir:?}" "${top_srcdir:?}" "${dsv_man_pages:?}" "${dsv_programs:?}"
command -v man >/dev/null && command -v lexgrog >/dev/null || { echo "SKIP: man or lexgrog missing (package man-db)"; exit 77; }
errors=0
bad() { echo "FAIL: $*"; errors=$((errors + 1)); }

declare -A have
for page in $dsv_man_pages; do
  f=$top_srcdir/$page
  [ -f "$f" ] || { bad "$page is not in the source tree"; continue; }
  base=$(basename "$page")
  name=${base%.*} section=${base##*.}
  have[$name.$section]=1
  warn=$(LC_ALL=C.UTF-8 MANROFFSEQ='' MANWIDTH=80 man --warnings -E UTF-8 -l -Tutf8 -Z "$f" 2>&1 >/dev/null)
  [ -z "$warn" ] || bad "$page: $warn"
  what=$(lexgrog "$f" 2>&1) || bad "$page: lexgrog cannot read its NAME section: $what"
  case $what in
    *": \"$name - "*) ;;
    *) bad "$page: NAME does not start with '$name \\- ': $what" ;;
  esac
  grep -q "^\.TH ${name^^} $section " "$f" || bad "$page: .TH does not say '${name^^} $section'"
done

for p in $dsv_programs; do
  p=${p%${EXEEXT:-}}
  p=$(basename "$p")
  [ -n "${have[$p.1]:-}${have[$p.8]:-}" ] || bad "the installed program $p has no man page (man/$p.1 or .8 in dist_man_MANS)"
done
[ -n "${have[libdsv32.3]:-}" ] || bad "no libdsv32(3)"
[ -n "${have[dsv32d.conf.5]:-}" ] || bad "no dsv32d.conf(5)"

# every setting is in dsv32d(8)'s SETTINGS (as .BI/.BR name, dashes escaped)
settings=$("$top_builddir/dsv32d" --config /dev/null --print-config | sed -n 's/^\([a-z0-9-]*\) = .*/\1/p')
[ -n "$settings" ] || bad "dsv32d --print-config printed no settings"
documented=$(sed -n 's/^\.B[IR] \([a-z0-9\\-]*\).*/\1/p' "$top_srcdir/man/dsv32d.8" | sed 's/\\-/-/g')
for s in $settings; do
  grep -qx -- "$s" <<< "$documented" || bad "setting $s is not described in man/dsv32d.8 (SETTINGS: .BI $s ...)"
done

[ "$errors" -eq 0 ] || exit 1
echo "PASS: $(echo $dsv_man_pages | wc -w) pages clean, every program has one, $(echo $settings | wc -w) settings in dsv32d(8)"
