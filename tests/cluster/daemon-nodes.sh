#!/bin/bash
# dsv32d --nodes N --node-rank R --coordinator HOST:PORT (daemon/cluster/nodes.h): 2 and 4
# dsv32d processes on loopback, joined through the bootstrap and an ompi-server node 0
# starts, serve the same clients as one process with the same output, token for token
# (concurrent prompts of one to several KV pages, seeded sampling, a session cut back into a
# shared page: a copy-on-write copy the other nodes replay; a session saved at SIGTERM and
# restored by the group's next start: its pages uploaded on node 0 and replayed on the
# others); the start log names every node's experts, dsv32 status the ranks. Node 0's
# SIGTERM ends every node with status 0; 2 nodes of the ep,tp layout give the same tokens.
# Failures and the MTP layer: daemon-nodes-faults.sh.
# Skips (77) without Open MPI. About 32 s here.
set -euo pipefail
: "${top_builddir:?}" "${top_srcdir:?}"
. "$top_srcdir/tests/comm/mpi-env.sh"
NAME=daemon-nodes
DAEMON_ARGS=(--threads 1 --kv-cache-mb 32 --snapshot-interval 0 --cluster-heartbeat-ms 100 --cluster-timeout-ms 2000
        --cluster-join-timeout 60)
. "$top_srcdir/tests/daemon-lib.sh"
. "$top_srcdir/tests/cluster/nodes-lib.sh"

P=$(seq -s, 1 150)
P40=$(seq -s, 1 40)
clients() { # name: writes $work/$name.out
        local name=$1 s="$work/$1.sock" pids=()
        gen() { "$cli" --socket "$s" generate --ids "$@"; }
        gen --max-tokens 12 --tokens 5,6,7 >"$work/$name.c1" & pids+=($!)
        gen --max-tokens 10 --tokens "$P,200,201" >"$work/$name.c2" & pids+=($!)
        gen --max-tokens 12 --temperature 0.9 --top-p 0.95 --seed 7 --tokens "$(seq -s, 9 40)" >"$work/$name.c3" & pids+=($!)
        gen --max-tokens 8 --session talk --tokens "$P,$(seq -s, 400 409)" >"$work/$name.c4" & pids+=($!)
        for p in "${pids[@]}"; do wait "$p" || bad "$name: a client failed"; done
        gen --max-tokens 6 --session other --tokens "$(seq -s, 1 100),500" >"$work/$name.c5" || bad "$name: session other failed"
        gen --max-tokens 8 --session talk --tokens "$P40,600" >"$work/$name.c6" || bad "$name: talk's second turn failed"
        "$cli" --socket "$s" session pin talk >/dev/null || bad "$name: session pin"
        cat "$work/$name".c[1-6] >"$work/$name.out"
}
# after a restart: the restored session (its pages uploaded on node 0, replayed on the others)
restored() { # name
        "$cli" --socket "$work/$1.sock" generate --ids --max-tokens 8 --session talk --tokens "$P40,600,$(seq -s, 700 720)" \
                >"$work/$1.rest" || bad "$1: the request on the restored session failed"
}

OMP_NUM_THREADS=1 "$top_builddir/dsv32-mkmodel" --preset tiny --seed 5 --out "$work/tiny" >/dev/null
t0=$(date +%s.%N)
mkdir -p "$work/state-one" "$work/state-nodes-2"
start one "$work/tiny" --state-directory "$work/state-one"
clients one
stop || bad "one: dsv32d exit status $? after SIGTERM"
start one "$work/tiny" --state-directory "$work/state-one"
restored one
stop || bad "one: dsv32d exit status $? after SIGTERM"
[ -s "$work/one.out" ] && [ -s "$work/one.rest" ] || bad "no output from one process"
for n in 2 4; do
        name=nodes-$n
        state=()
        [ $n = 2 ] && state=(--state-directory "$work/state-$name")
        start_nodes "$name" $n "$work/tiny" "${state[@]}" || continue
        clients "$name"
        if cmp -s "$work/one.out" "$work/$name.out"; then
                echo "$n nodes: the same $(tr , ' ' <"$work/one.out" | wc -w) tokens as one process"
        else
                bad "$n nodes: $(diff "$work/one.out" "$work/$name.out" | head -20)"
        fi
        if [ $n = 2 ]; then
                st=$("$cli" --socket "$work/$name.sock" status)
                grep -q "ranks: *2 CPU ranks, layout ep,dp" <<<"$st" || bad "$name: dsv32 status does not show the nodes: $st"
        fi
        stop || bad "$name: node 0's exit status $? after SIGTERM"
        wait_followers "$name" 10
        [ "$statuses" = "$(printf '0 %.0s' $(seq $((n - 1))))" ] || bad "$name: the other nodes exited with $statuses"
        if [ $n = 2 ]; then # the saved session, restored by the next start of the group
                mv "$work/$name.log" "$work/$name-first.log"
                start_nodes "$name" $n "$work/tiny" "${state[@]}" || continue
                grep -q "Session 'talk' of uid [0-9]* restored" "$work/$name.log" || bad "$name: the session was not restored"
                restored "$name"
                cmp -s "$work/one.rest" "$work/$name.rest" ||
                        bad "$name: restored session: $(cat "$work/$name.rest") vs $(cat "$work/one.rest")"
                stop || bad "$name: node 0's exit status $? after SIGTERM"
                wait_followers "$name" 10
                mv "$work/$name.log" "$work/$name-restart.log"
                mv "$work/$name-first.log" "$work/$name.log"
        fi
        grep -q "Nodes: $n nodes of one CPU rank each, layout ep,dp" "$work/$name.log" ||
                bad "$name: no plan line: $(grep -E 'Nodes|Ranks' "$work/$name.log")"
        for ((r = 0; r < n; r++)); do
                e=$((16 / n))
                grep -Eq "node $r: experts $((r * e))-$((r * e + e - 1)) of 16, [1-9][0-9]* weight bytes" "$work/$name.log" ||
                        bad "$name: the start log does not name node $r's share: $(grep Nodes "$work/$name.log")"
        done
done

# ep,tp over 2 nodes (every node with --parallel ep,tp: heads, dense layers and lm_head split,
# the passes carry the logits' rows node 0 wants): the same tokens as one process (tiny's
# sums reorder without changing a bit)
if start_nodes tp-2 2 "$work/tiny" --parallel ep,tp; then
        clients tp-2
        cmp -s "$work/one.out" "$work/tp-2.out" || bad "ep,tp, 2 nodes: $(diff "$work/one.out" "$work/tp-2.out" | head -20)"
        st=$("$cli" --socket "$work/tp-2.sock" status)
        grep -q "ranks: *2 CPU ranks, layout ep,tp" <<<"$st" || bad "tp-2: dsv32 status does not show the layout: $st"
        grep -q "Nodes: 2 nodes of one CPU rank each, layout ep,tp" "$work/tp-2.log" ||
                bad "tp-2: no plan line: $(grep -E 'Nodes|Ranks' "$work/tp-2.log")"
        stop || bad "tp-2: node 0's exit status $? after SIGTERM"
        wait_followers tp-2 10
        [ "$statuses" = "0 " ] || bad "tp-2: node 1 exited with $statuses"
        echo "ep,tp, 2 nodes: the same $(tr , ' ' <"$work/tp-2.out" | wc -w) tokens as one process"
fi

echo "in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s"
finish_nodes
