#!/bin/bash
# dsv32d --nodes N (daemon/cluster/nodes.h), what daemon-nodes.sh does not cover: speculative
# decoding through 2 nodes (the MTP layer's passes carry its hidden input) gives one
# process's tokens; killing a node mid-generation gives the client an ERROR naming the broken
# group and makes every other node exit non-zero within the cluster timeout (2 s here); so do a
# stalled node (SIGSTOP: node 0 finds it silent; continued, it exits saying why) and a killed
# node 0 (the others exit saying they lost it, the client loses its connection); a node
# with another model, or another layout (--parallel), is refused by the bootstrap (the logs
# say so, node 0 never serves and gives up at its join timeout); a preset model (no
# directory) through 2 nodes gives one process's tokens, and a node with another model than
# node 0's preset is refused; settings it cannot serve are refused at start. Skips (77) without Open MPI. About 36 s here.
set -euo pipefail
: "${top_builddir:?}" "${top_srcdir:?}"
. "$top_srcdir/tests/comm/mpi-env.sh"
NAME=daemon-nodes-faults
DAEMON_ARGS=(--threads 1 --kv-cache-mb 32 --snapshot-interval 0 --cluster-heartbeat-ms 100 --cluster-timeout-ms 2000
        --cluster-join-timeout 60)
. "$top_srcdir/tests/daemon-lib.sh"
. "$top_srcdir/tests/cluster/nodes-lib.sh"

P=$(seq -s, 1 150)
# long_gen name: a long generation from node 0 of group name in the background ($client),
# once its first tokens have come
long_gen() {
        "$cli" --socket "$work/$1.sock" generate --ids --max-tokens 4000 --tokens 5,6,7 >"$work/$1.out" 2>"$work/$1.err" &
        client=$!
        for _ in $(seq 100); do [ -s "$work/$1.out" ] && break; sleep 0.05; done
}
# client_broken name n: that client ended non-zero with an ERROR naming the broken group of n
client_broken() {
        local rc=0
        wait "$client" || rc=$?
        [ $rc -ne 0 ] || bad "$1: the client ended with status 0: $(cat "$work/$1.err")"
        grep -q "the request failed: .*the group of $2 nodes is broken" "$work/$1.err" ||
                bad "$1: the client got no ERROR naming the group: $(cat "$work/$1.err")"
}
# refused_join name model1 [node 1's args]: node 1 (model1, its args) tries to join node 0
# (tiny, no args); both exit non-zero, node 0 at its join timeout without serving
refused_join() {
        local name=$1 model1=$2 port rc=0 n1
        shift 2
        port=$(free_port)
        "$d" --model "$model1" --socket "$work/$name-n1.sock" "${DAEMON_ARGS[@]}" "$@" --nodes 2 --node-rank 1 \
                --coordinator "127.0.0.1:$port" 2>"$work/$name-n1.log" &
        n1=$!
        timeout 60 "$d" --model "$work/tiny" --socket "$work/$name.sock" "${DAEMON_ARGS[@]}" --cluster-join-timeout 3 \
                --nodes 2 --node-rank 0 --coordinator "127.0.0.1:$port" 2>"$work/$name.log" || rc=$?
        [ $rc -ne 0 ] && [ $rc -ne 124 ] || bad "$name: node 0 exited with $rc"
        rc=0
        wait "$n1" || rc=$?
        [ $rc -ne 0 ] || bad "$name: node 1 exited with status 0"
        grep -q "Ready: serving" "$work/$name.log" && bad "$name: node 0 served"
        return 0
}
OMP_NUM_THREADS=1 "$top_builddir/dsv32-mkmodel" --preset tiny --seed 5 --out "$work/tiny" >/dev/null
t0=$(date +%s.%N)
# speculative decoding through 2 nodes (the MTP layer's passes carry its hidden input): with a
# predictable MTP layer and mtp = on, the same tokens as one process, and drafts accepted
OMP_NUM_THREADS=1 "$top_builddir/dsv32-mkmodel" --preset tiny --seed 5 --mtp-predictable --out "$work/tiny-mtp" >/dev/null
mtp() { # name
        "$cli" --socket "$work/$1.sock" generate --ids --max-tokens 16 --tokens "$P,200" >"$work/$1.out" &&
                "$cli" --socket "$work/$1.sock" generate --ids --max-tokens 12 --temperature 0.9 --seed 3 --tokens 5,6,7 \
                        >>"$work/$1.out" || bad "$1: a client failed"
}
start mtp-1 "$work/tiny-mtp" --log-level debug --mtp on --mtp-draft 2 && mtp mtp-1
stop || bad "mtp-1: dsv32d exit status $? after SIGTERM"
if start_nodes mtp-2 2 "$work/tiny-mtp" --log-level debug --mtp on --mtp-draft 2; then
        mtp mtp-2
        stop || bad "mtp-2: node 0's exit status $? after SIGTERM"
        wait_followers mtp-2 10
        acc=$(grep -o "the MTP layer drafted [0-9]* tokens, [0-9]* accepted" "$work/mtp-2.log" | awk '{ d += $5; a += $7 } END { print d + 0, a + 0 }')
        [ "${acc#* }" -gt 0 ] || bad "mtp on, 2 nodes: no draft accepted (drafted, accepted: $acc)"
        cmp -s "$work/mtp-1.out" "$work/mtp-2.out" || bad "mtp on, 2 nodes: $(diff "$work/mtp-1.out" "$work/mtp-2.out")"
        echo "mtp on, 2 nodes: $(tr , ' ' <"$work/mtp-2.out" | wc -w) tokens as one process; drafted, accepted: $acc"
fi

# a node killed mid-generation: the client gets an ERROR; node 0 and the other node exit
# non-zero within the cluster timeout (2 s) plus slack
start_nodes kill 3 "$work/tiny" || true
long_gen kill
victim=${followers[1]}
kill -9 "$victim"
t_kill=$(date +%s.%N)
client_broken kill 3
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

# a stalled node (SIGSTOP mid-generation): node 0's heartbeat check finds it silent, the
# client gets an ERROR and node 0 exits non-zero within the cluster timeout plus slack; the
# node, continued, finds the group gone, says so and exits non-zero
start_nodes stall 2 "$work/tiny" || true
long_gen stall
kill -STOP "${followers[0]}"
t_kill=$(date +%s.%N)
client_broken stall 2
rc=0
wait "$pid" || rc=$?
pid=
secs=$(awk -v a="$t_kill" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
[ $rc -ne 0 ] || bad "stall: node 0 exited with status 0"
awk -v s="$secs" 'BEGIN { exit !(s < 8) }' || bad "stall: node 0 took $secs s to exit (cluster-timeout-ms 2000)"
grep -q "node 1 .* sent nothing for" "$work/stall.log" || bad "stall: node 0's log does not name the silent node: $(tail -5 "$work/stall.log")"
kill -CONT "${followers[0]}"
wait_followers stall 10
[ "$statuses" != "0 " ] || bad "stall: the stopped node exited with status 0 once continued"
grep -q "Node 1 of 2: exiting: the group of nodes is broken" "$work/stall-n1.log" ||
        bad "stall: the continued node does not say why it exits: $(tail -3 "$work/stall-n1.log")"
echo "stall: the client got: $(head -c 160 "$work/stall.err"); node 0 exited $rc after $secs s, node 1 $statuses"

# node 0 killed mid-generation: the client loses its connection (no hang) and every other
# node exits non-zero within the cluster timeout plus slack, saying it lost node 0
start_nodes kill0 3 "$work/tiny" || true
long_gen kill0
kill -9 "$pid"
t_kill=$(date +%s.%N)
wait "$pid" 2>/dev/null || true
pid=
rc=0
wait "$client" || rc=$?
[ $rc -ne 0 ] || bad "kill0: the client ended with status 0: $(cat "$work/kill0.err")"
wait_followers kill0 10
secs=$(awk -v a="$t_kill" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
for st in $statuses; do [ "$st" -ne 0 ] || bad "kill0: a node exited with status 0 ($statuses)"; done
for n in 1 2; do
        grep -q "Node $n of 3: exiting: the group of nodes is broken: lost node 0" "$work/kill0-n$n.log" ||
                bad "kill0: node $n does not say it lost node 0: $(tail -3 "$work/kill0-n$n.log")"
done
awk -v s="$secs" 'BEGIN { exit !(s < 8) }' || bad "kill0: the nodes took $secs s to exit (cluster-timeout-ms 2000)"
echo "kill0: the client got: $(head -c 120 "$work/kill0.err"); nodes 1 and 2 exited $statuses within $secs s"

# another model: the bootstrap refuses the node (it exits non-zero), node 0 says so and
# gives up at its join timeout
OMP_NUM_THREADS=1 "$top_builddir/dsv32-mkmodel" --preset tiny --seed 6 --out "$work/other" >/dev/null
refused_join other "$work/other"
grep -qi "fingerprint" "$work/other-n1.log" || bad "another model: the node's log: $(cat "$work/other-n1.log")"
grep -qi "fingerprint" "$work/other.log" || bad "another model: node 0's log: $(cat "$work/other.log")"

# another layout (node 1 with --parallel ep,tp, node 0 ep,dp): the passes would not pair up,
# the bootstrap refuses the node naming both configurations
refused_join layout "$work/tiny" --parallel ep,tp
grep -q "another configuration (theirs .*parallel=ep,tp" "$work/layout.log" ||
        bad "another layout: node 0's log: $(tail -3 "$work/layout.log")"

# a preset model (weights made by fill_random, no directory: token ids only) through 2 nodes
# gives one process's tokens; a node of another preset, or with the tiny checkpoint against
# preset:tiny, is refused by the bootstrap (another fingerprint)
pre() { # name
        "$cli" --socket "$work/$1.sock" generate --ids --max-tokens 12 --tokens 5,6,7 >"$work/$1.out" &&
                "$cli" --socket "$work/$1.sock" generate --ids --max-tokens 8 --temperature 0.9 --seed 3 --tokens "$P" \
                        >>"$work/$1.out" || bad "$1: a client failed"
}
start pre-1 preset:tiny && pre pre-1
stop || bad "pre-1: dsv32d exit status $? after SIGTERM"
if start_nodes pre-2 2 preset:tiny; then
        pre pre-2
        stop || bad "pre-2: node 0's exit status $? after SIGTERM"
        wait_followers pre-2 10
        [ "$statuses" = "0 " ] || bad "pre-2: node 1 exited $statuses"
        [ -s "$work/pre-1.out" ] && cmp -s "$work/pre-1.out" "$work/pre-2.out" ||
                bad "preset:tiny, 2 nodes: $(diff "$work/pre-1.out" "$work/pre-2.out")"
        echo "preset:tiny, 2 nodes: $(tr , ' ' <"$work/pre-2.out" | wc -w) tokens as one process"
fi
refused_join preset "preset:tiny"
grep -qi "fingerprint" "$work/preset.log" || bad "preset:tiny against the tiny checkpoint: node 0's log: $(tail -3 "$work/preset.log")"

# refusals at start
refuse 2 "coordinator must be" "$work/tiny" --nodes 2
refuse 2 "use backend cpu" "$work/tiny" --nodes 2 --coordinator 127.0.0.1:1 --backend cuda
echo "in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s"
finish_nodes
