#!/bin/bash
# dsv32d --nodes N --node-rank R --coordinator HOST:PORT (daemon/cluster/nodes.h): 2 and 4
# dsv32d processes on loopback, joined through the bootstrap and an ompi-server node 0
# starts, serve the same clients as one process with the same output, token for token
# (concurrent prompts of one to several KV pages, seeded sampling, a session cut back into a
# shared page: a copy-on-write copy the other nodes replay; a session saved at SIGTERM and
# restored by the group's next start: its pages uploaded on node 0 and replayed on the
# others); the start log names every node's experts, dsv32 status the ranks. Node 0's SIGTERM ends every node with status 0. Killing a node
# mid-generation gives the client an ERROR and makes every other node exit non-zero within
# the cluster timeout; a node with another model is refused by the bootstrap (both logs say
# so). Skips (77) without Open MPI. About 20 s here.
set -euo pipefail
: "${top_builddir:?}" "${top_srcdir:?}"
. "$top_srcdir/tests/comm/mpi-env.sh"
NAME=daemon-nodes
DAEMON_ARGS=(--threads 1 --kv-cache-mb 32 --snapshot-interval 0 --cluster-heartbeat-ms 100 --cluster-timeout-ms 2000
        --cluster-join-timeout 60)
. "$top_srcdir/tests/daemon-lib.sh"
followers=()
cleanup_nodes() {
        local p
        for p in "${followers[@]}"; do kill -9 "$p" 2>/dev/null || true; done
        cleanup
}
trap cleanup_nodes EXIT

free_port() { "$PYTHON3" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

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

# start_nodes name n model [args]: nodes 1..n-1 in the background, then node 0 (start)
start_nodes() {
        local name=$1 n=$2 model=$3 port
        shift 3
        port=$(free_port)
        followers=()
        for ((r = 1; r < n; r++)); do
                "$d" --model "$model" --socket "$work/$name-n$r.sock" "${DAEMON_ARGS[@]}" --nodes "$n" --node-rank $r \
                        --coordinator "127.0.0.1:$port" "$@" 2>"$work/$name-n$r.log" &
                followers+=($!)
        done
        # node 0 (start, but waiting longer: the nodes load and join one after the other)
        "$d" --model "$model" --socket "$work/$name.sock" "${DAEMON_ARGS[@]}" --nodes "$n" --node-rank 0 \
                --coordinator "127.0.0.1:$port" "$@" 2>"$work/$name.log" &
        pid=$!
        for _ in $(seq 1200); do
                grep -q "Ready: serving" "$work/$name.log" && return 0
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.05
        done
        bad "$name: node 0 did not start: $(cat "$work/$name.log")"
        return 1
}

# wait_followers name seconds: every follower's exit status, space-separated, in $statuses
wait_followers() {
        local name=$1 limit=$2 p rc
        statuses=
        for p in "${followers[@]}"; do
                for _ in $(seq $((limit * 20))); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
                if kill -0 "$p" 2>/dev/null; then
                        bad "$name: node pid $p still runs after $limit s"
                        kill -9 "$p"
                fi
                rc=0
                wait "$p" || rc=$?
                statuses+="$rc "
        done
        followers=()
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

# a node killed mid-generation: the client gets an ERROR; node 0 and the other node exit
# non-zero within the cluster timeout (2 s) plus slack
start_nodes kill 3 "$work/tiny" || true
"$cli" --socket "$work/kill.sock" generate --ids --max-tokens 4000 --tokens 5,6,7 >"$work/kill.out" 2>"$work/kill.err" &
client=$!
for _ in $(seq 100); do [ -s "$work/kill.out" ] && break; sleep 0.05; done
victim=${followers[1]}
kill -9 "$victim"
t_kill=$(date +%s.%N)
rc=0
wait "$client" || rc=$?
[ $rc -ne 0 ] || bad "kill: the client ended with status 0: $(cat "$work/kill.err")"
grep -q "the request failed: .*the group of 3 nodes is broken" "$work/kill.err" ||
        bad "kill: the client got no ERROR naming the group: $(cat "$work/kill.err")"
rc=0
wait "$pid" || rc=$?
pid=
t_exit=$(date +%s.%N)
[ $rc -ne 0 ] || bad "kill: node 0 exited with status 0"
followers=("${followers[0]}")
wait_followers kill 10
[ "$statuses" != "0 " ] || bad "kill: node 1 exited with status 0"
wait "$victim" 2>/dev/null || true
secs=$(awk -v a="$t_kill" -v b="$t_exit" 'BEGIN { printf "%.1f", b - a }')
awk -v s="$secs" 'BEGIN { exit !(s < 8) }' || bad "kill: node 0 took $secs s to exit (cluster-timeout-ms 2000)"
grep -q "group of nodes is broken" "$work/kill.log" || bad "kill: node 0's log does not say the group broke: $(tail -5 "$work/kill.log")"
echo "kill: the client got: $(head -c 200 "$work/kill.err"); node 0 exited $rc after $secs s, node 1 $statuses"

# another model: the bootstrap refuses the node (it exits non-zero), node 0 says so and
# gives up at its join timeout
OMP_NUM_THREADS=1 "$top_builddir/dsv32-mkmodel" --preset tiny --seed 6 --out "$work/other" >/dev/null
port=$(free_port)
rc=0
"$d" --model "$work/other" --socket "$work/other-n1.sock" "${DAEMON_ARGS[@]}" --nodes 2 --node-rank 1 \
        --coordinator "127.0.0.1:$port" 2>"$work/other-n1.log" &
other=$!
timeout 60 "$d" --model "$work/tiny" --socket "$work/other.sock" "${DAEMON_ARGS[@]}" --cluster-join-timeout 3 --nodes 2 \
        --node-rank 0 --coordinator "127.0.0.1:$port" 2>"$work/other.log" || rc=$?
[ $rc -ne 0 ] && [ $rc -ne 124 ] || bad "another model: node 0 exited with $rc"
rc=0
wait "$other" || rc=$?
[ $rc -ne 0 ] || bad "another model: the node exited with status 0"
grep -qi "fingerprint" "$work/other-n1.log" || bad "another model: the node's log: $(cat "$work/other-n1.log")"
grep -qi "fingerprint" "$work/other.log" || bad "another model: node 0's log: $(cat "$work/other.log")"
grep -q "Ready: serving" "$work/other.log" && bad "another model: node 0 served"

# refusals at start
refuse 2 "coordinator must be" "$work/tiny" --nodes 2
refuse 2 "use backend cpu" "$work/tiny" --nodes 2 --coordinator 127.0.0.1:1 --backend cuda
echo "in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s"
finish
