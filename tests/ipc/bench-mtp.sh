#!/bin/bash
# make bench: speculative decoding in the daemon. Decode tokens/s of `dsv32 generate` through
# the real IPC path against dsv32d with mtp = on and mtp = off, on the `small` preset with an
# MTP layer that drafts well (dsv32-mkmodel --mtp-predictable) and with a random one (--mtp:
# drafts almost never right, the cost of speculation without its gain); greedy, a 64-token
# prompt, GEN (64) generated tokens, one request at a time and CONC (4) at once; each
# configuration REPS (3) times, on and off interleaved, reported as min-max. Decode tok/s is
# the generated tokens after the first over the decode time DONE reports; on a shared host
# that swings with the other tenants, so the daemon's CPU time per generated token
# (utime + stime from /proc, prefill included, the same prompts for on and off) is given too,
# the steadier figure. The acceptance comes from the daemon's debug log. THREADS (1) is
# dsv32d's --threads.
set -euo pipefail
: "${top_builddir:?}"
REPS=${REPS:-3}
GEN=${GEN:-64}
CONC=${CONC:-4}
THREADS=${THREADS:-1}
cli="$top_builddir/dsv32"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dsv32-bench-mtp-XXXXXX")
: >"$tmp/empty.conf"
pid=
cleanup() {
        [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
        rm -rf "$tmp"
}
trap cleanup EXIT
for kind in predictable random; do
        dir="$top_builddir/tests/tmp/bench-small-mtp-$kind"
        if [ ! -f "$dir/model.safetensors.index.json" ]; then
                echo "generating the small checkpoint with a $kind MTP layer in $dir ..."
                opt=--mtp
                [ $kind = predictable ] && opt=--mtp-predictable
                "$top_builddir/dsv32-mkmodel" --preset small $opt --no-tokenizer --out "$dir" >/dev/null
        fi
done
prompt=$(seq -s, 7 97 6200 | cut -d, -f1-64)

start() { # dir mtp
        "$top_builddir/dsv32d" --config "$tmp/empty.conf" --model "$1" --socket "$tmp/d.sock" --threads "$THREADS" \
                --mtp "$2" --log-level debug 2>"$tmp/daemon.log" &
        pid=$!
        for _ in $(seq 1200); do
                [ -S "$tmp/d.sock" ] && "$cli" --socket "$tmp/d.sock" ping --count 1 >/dev/null 2>&1 && return 0
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
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

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$pid/stat"; }

# decode tok/s of n requests at once (summed over them), and the daemon's CPU ms per
# generated token
measure() { # n
        local i c0 c1 hz
        hz=$(getconf CLK_TCK)
        c0=$(cpu_ticks)
        for ((i = 0; i < $1; i++)); do
                "$cli" --socket "$tmp/d.sock" -v generate --tokens "$prompt" --max-tokens "$GEN" --ignore-eos --ids \
                        >/dev/null 2>"$tmp/gen$i" &
        done
        wait
        c1=$(cpu_ticks)
        cat "$tmp"/gen* | sed -n 's/.* + \([0-9]*\) generated tokens;.* decode \([0-9.]*\) ms\]/\1 \2/p' |
                awk -v cpu=$((c1 - c0)) -v hz="$hz" '{ tok += $1 - 1; all += $1; if ($2 > ms) ms = $2 }
                        END { if (ms > 0 && all > 0) printf "%.1f %.1f\n", tok / (ms / 1000), cpu * 1000 / hz / all; else print "? ?" }'
        rm -f "$tmp"/gen*
}

for kind in predictable random; do
        dir="$top_builddir/tests/tmp/bench-small-mtp-$kind"
        for n in 1 "$CONC"; do
                off=() on=() offc=() onc=()
                for ((r = 0; r < REPS; r++)); do
                        for mode in off on; do
                                start "$dir" "$mode"
                                read -r t cpu < <(measure "$n")
                                if [ $mode = on ]; then
                                        on+=("$t")
                                        onc+=("$cpu")
                                        acc=$(sed -n 's/.*the MTP layer drafted \([0-9]*\) tokens, \([0-9]*\) accepted.*/\1 \2/p' \
                                                "$tmp/daemon.log" | awk '{ d += $1; a += $2 } END { if (d) printf "%.2f", a / d; else print "-" }')
                                else
                                        off+=("$t")
                                        offc+=("$cpu")
                                fi
                                stop
                        done
                done
                awk -v kind="$kind" -v n="$n" -v acc="$acc" -v off="${off[*]}" -v on="${on[*]}" -v offc="${offc[*]}" \
                        -v onc="${onc[*]}" -v gen="$GEN" '
                        function lo(s, x, k, i, m) { k = split(s, x, " "); m = x[1]; for (i = 2; i <= k; i++) if (x[i] < m) m = x[i]; return m }
                        function hi(s, x, k, i, m) { k = split(s, x, " "); m = x[1]; for (i = 2; i <= k; i++) if (x[i] > m) m = x[i]; return m }
                        BEGIN {
                        printf "dsv32d, small preset, %s MTP layer, %d request(s) at once, greedy, %d tokens each: decode %.1f-%.1f tok/s with mtp = on vs %.1f-%.1f with mtp = off (ratio %.2fx best vs best); daemon CPU %.1f-%.1f ms per generated token on vs %.1f-%.1f off (ratio %.2fx best vs best); acceptance %s\n",
                               kind, n, gen, lo(on), hi(on), lo(off), hi(off), (hi(off) > 0 ? hi(on) / hi(off) : 0),
                               lo(onc), hi(onc), lo(offc), hi(offc), (lo(onc) > 0 ? lo(offc) / lo(onc) : 0), acc }'
        done
done
