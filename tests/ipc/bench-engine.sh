#!/bin/bash
# make bench: the serving engine through the real IPC path (dsv32d + the dsv32 CLI) on the
# `small` preset, each figure against its baseline measured in the same run:
#   1. generated tokens/s with 1, 8 and 32 clients at once (GEN tokens each, distinct
#      16-token prompts), against 1 client;
#   2. time to first token of a 1,000-token prompt cold vs a second prompt that shares its
#      first 1,000 tokens (prefix-cache hit), and the prompt tokens DONE says were reused;
#   3. restart to first token with 8 sessions of 500 tokens restored from the state
#      directory vs the same 8 conversations recomputed by a daemon without them (wall time
#      from the daemon's start to the 8th first token, the model's load included in both).
# THREADS (default: all CPUs) is dsv32d's --threads.
set -euo pipefail
: "${top_builddir:?}"
GEN=${GEN:-32}
cli="$top_builddir/dsv32"
model="$top_builddir/tests/tmp/bench-small"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dsv32-bench-engine-XXXXXX")
: >"$tmp/empty.conf"
pid=
cleanup() {
        [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
        rm -rf "$tmp"
}
trap cleanup EXIT
if [ ! -f "$model/model.safetensors.index.json" ]; then
        echo "generating the small checkpoint in $model ..."
        "$top_builddir/dsv32-mkmodel" --preset small --out "$model" >/dev/null
fi
now_ms() { date +%s%3N; }
ids() { seq -s, "$1" "$2" $(($1 + $2 * ($3 - 1))); } # first step count
start() { # extra dsv32d options...
        t_start=$(now_ms)
        "$top_builddir/dsv32d" --config "$tmp/empty.conf" --model "$model" --socket "$tmp/d.sock" \
                ${THREADS:+--threads "$THREADS"} "$@" 2>>"$tmp/daemon.log" &
        pid=$!
        for _ in $(seq 3000); do
                [ -S "$tmp/d.sock" ] && "$cli" --socket "$tmp/d.sock" ping --count 1 >/dev/null 2>&1 && return 0
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.02
        done
        echo "dsv32d did not start:" >&2
        cat "$tmp/daemon.log" >&2
        exit 1
}
stop() {
        kill "$pid"
        wait "$pid" || true
        pid=
}
gen() { # prompt-ids max-tokens [session]: the DONE line of --json
        "$cli" --socket "$tmp/d.sock" generate --json --ids --ignore-eos --tokens "$1" --max-tokens "$2" \
                ${3:+--session "$3"} 2>>"$tmp/cli.err" | tail -1 # ("waiting for dsv32d to load" goes to cli.err)
}
field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])["usage"][sys.argv[2]])' "$1" "$2"; }

echo "--- concurrent clients (small preset, $GEN generated tokens each)"
start
gen "$(ids 5 3 16)" 4 >/dev/null # warm up
base=
for n in 1 8 32; do
        t0=$(now_ms)
        jobs_=()
        for ((i = 0; i < n; i++)); do
                gen "$(ids $((11 + 7 * i)) $((3 + i)) 16)" "$GEN" >"$tmp/c$i" &
                jobs_+=($!)
        done
        wait "${jobs_[@]}" # not the daemon
        t1=$(now_ms)
        tps=$(awk -v n="$n" -v g="$GEN" -v ms=$((t1 - t0)) 'BEGIN { printf "%.1f", n * g / (ms / 1000) }')
        [ -z "$base" ] && base=$tps
        echo "$n client(s): $tps generated tok/s ($(awk -v a="$tps" -v b="$base" 'BEGIN { printf "%.2f", a / b }')x one client)"
done

echo "--- prefix cache: 1,000-token prompt, cold vs a prompt sharing those 1,000 tokens"
long=$(ids 40 5 1000)
cold=$(gen "$long" 1)
hit=$(gen "$long,7,8,9,10,11,12,13,14" 1)
c_us=$(( $(field "$cold" queue_us) + $(field "$cold" prefill_us) ))
h_us=$(( $(field "$hit" queue_us) + $(field "$hit" prefill_us) ))
echo "cold: first token after $((c_us / 1000)) ms; hit: $((h_us / 1000)) ms, $(field "$hit" cached_tokens) of 1008 prompt tokens reused" \
        "($(awk -v a="$c_us" -v b="$h_us" 'BEGIN { printf "%.1f", a / (b > 0 ? b : 1) }')x faster)"
stop

echo "--- restart to first token: 8 sessions of 500 tokens restored vs recomputed"
mkdir -p "$tmp/state" "$tmp/empty-state"
start --state-directory "$tmp/state"
for i in $(seq 8); do gen "$(ids $((100 + i)) $((i + 2)) 500)" 1 "s$i" >/dev/null; done
stop
for mode in restored recomputed; do
        if [ $mode = restored ]; then start --state-directory "$tmp/state"; else start --state-directory "$tmp/empty-state"; fi
        jobs_=()
        for i in $(seq 8); do
                # the conversation goes on: its 500 tokens (from the session, or recomputed), then 8 new ones
                gen "$(ids $((100 + i)) $((i + 2)) 500),1,2,3,4,5,6,7,8" 1 "s$i" >"$tmp/r$i" &
                jobs_+=($!)
        done
        wait "${jobs_[@]}"
        t1=$(now_ms)
        reused=0
        for i in $(seq 8); do reused=$((reused + $(field "$(cat "$tmp/r$i")" cached_tokens))); done
        eval "ms_$mode=$((t1 - t_start))"
        echo "$mode: 8 first tokens $((t1 - t_start)) ms after the daemon's start ($reused prompt tokens reused)"
        stop
done
echo "restored sessions: $(awk -v a="$ms_recomputed" -v b="$ms_restored" 'BEGIN { printf "%.2f", a / b }')x faster to the 8th first token"
