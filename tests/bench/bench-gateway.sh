#!/bin/bash
# make bench: what the OpenAI gateway adds, per request and per streamed token, against
# libdsv32 directly, in the same run (tests/bench/bench-gateway.c says what is timed): dsv32d
# on the tiny model, dsv32-openai in front of it on loopback, REQUESTS requests each way.
set -euo pipefail
: "${top_builddir:?}"
b=$top_builddir
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dsv32-bench-gateway-XXXXXX")
dpid= gpid=
cleanup() {
        for p in $gpid $dpid; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
        rm -rf "$tmp"
}
trap cleanup EXIT
"$b/dsv32-mkmodel" --preset tiny --out "$tmp/model" >/dev/null
"$b/dsv32d" --config /dev/null --model "$tmp/model" --socket "$tmp/d.sock" --threads 1 2>"$tmp/daemon.log" &
dpid=$!
"$b/dsv32-openai" --listen 127.0.0.1:0 --socket "$tmp/d.sock" 2>"$tmp/gw.log" &
gpid=$!
port=
for _ in $(seq 400); do
        port=$(sed -n 's/.*listening on .*(port \([0-9]*\)).*/\1/p' "$tmp/gw.log")
        [ -n "$port" ] && "$b/dsv32" --socket "$tmp/d.sock" ping --count 1 >/dev/null 2>&1 && break
        sleep 0.05
done
[ -n "$port" ] || { echo "dsv32-openai did not start: $(cat "$tmp/gw.log")"; exit 1; }
"$b/tests/bench/bench-gateway" --socket "$tmp/d.sock" --port "$port" --requests "${REQUESTS:-50}" --tokens "${GEN:-32}"
