# Sourced by the gateway's shell tests (test-openai-curl.sh, test-openai-tools.sh, sdk.sh,
# test-openai-schema.sh):
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

# The SDK scripts' (sdk.sh, test-openai-schema.sh) prerequisites: node and these npm packages in
# tests/openai/sdk/node_modules (setup-hook.sh installs them), else skip (77). Sets $node, $sdk.
sdk_needs() {
  sdk="$top_srcdir/tests/openai/sdk"
  node="${NODE:-}"
  [ -n "$node" ] || node=$(command -v node || true)
  [ -n "$node" ] || { echo "SKIP: node not found (install nodejs, then run tests/openai/setup-hook.sh)"; exit 77; }
  local m
  for m in "$@"; do
    [ -f "$sdk/node_modules/$m/package.json" ] ||
      { echo "SKIP: $m is not installed in $sdk/node_modules (run tests/openai/setup-hook.sh)"; exit 77; }
  done
}

# wait_health: until the gateway at $port answers /health with 200 (the daemon is ready).
wait_health() {
  for _ in $(seq 400); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health")" = 200 ] && break
    sleep 0.05
  done
}

# serve_with_key THREADS: the tiny model in $tmp/model, dsv32d on it ($dpid, --threads THREADS)
# and the gateway in front with the API key sk-dsv32-test ($gpid, on a free port: $port), once
# /health says 200.
serve_with_key() {
  "$b/dsv32-mkmodel" --preset tiny --out "$tmp/model" >/dev/null || die "dsv32-mkmodel"
  "$b/dsv32d" --config /dev/null --model "$tmp/model" --socket "$tmp/d.sock" --threads "$1" 2>"$tmp/daemon.log" &
  dpid=$!
  printf '# the key the SDK scripts use\nsk-dsv32-test\n' > "$tmp/keys"
  "$b/dsv32-openai" --listen 127.0.0.1:0 --socket "$tmp/d.sock" --api-keys "$tmp/keys" 2>"$tmp/gw.log" &
  gpid=$!
  port=
  for _ in $(seq 200); do
    port=$(sed -n 's/.*listening on .*(port \([0-9]*\)).*/\1/p' "$tmp/gw.log")
    [ -n "$port" ] && break
    sleep 0.05
  done
  [ -n "$port" ] || die "dsv32-openai did not say which port it listens on"
  wait_health
}
