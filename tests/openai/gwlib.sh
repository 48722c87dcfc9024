# Sourced by the gateway's shell tests (test-openai-curl.sh, test-openai-tools.sh, sdk.sh):
# $b the build directory, $tmp a fresh directory removed on exit, the daemon's, gateway's and
# one more process ($dpid $gpid $kpid) killed on exit, die (the logs of both), and python3 as
# configure found it (Debian's; a pyenv shim on PATH costs ~0.8 s a start) with httpjson.py on
# its path. Before sourcing, set TMPNAME (the temporary directory's name).
: "${top_builddir:?}" "${TMPNAME:?}"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd) # httpjson.py
python3() { PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" command "${PYTHON3:-python3}" "$@"; }
b=$(cd "$top_builddir" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/$TMPNAME-XXXXXX")
dpid= gpid= kpid=
cleanup() {
  for p in $kpid $gpid $dpid; do kill -9 "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
die() { echo "FAIL: $*"; echo "--- daemon log"; cat "$tmp/daemon.log"; echo "--- gateway log"; cat "$tmp/gw.log" 2>/dev/null; exit 1; }
