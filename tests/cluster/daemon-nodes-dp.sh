#!/bin/bash
# dsv32d --nodes N --parallel ep,dp (daemon/runtime/ranks.h): attention data-parallel over
# the nodes, each node's KV pool holding only the pages of the sequences placed on it. 2 and
# 3 dsv32d processes on loopback serve concurrent clients (prompts of one to several KV
# pages, two sharing a prefix, seeded sampling, a session cut back into a shared page: a
# copy-on-write copy in the pool of the node holding it) with one process's output, token
# for token. How the placement is checked: while two long generations run, dsv32 status
# shows pages in use in two nodes' pools (node 0 keeps every node's page tables); the log
# names each request's rank and the concurrent clients ran on more than one; session talk's
# two requests ran on one rank; each follower node says at its end how many tokens of its
# own sequences it ran (some). With 2 nodes and a state directory, the
# sessions saved at SIGTERM (a remote session's pages read back from its node) are restored
# by the group's next start (uploaded into the pool of the node they are placed on), the
# Loaded line lists each node's pool with the restored sessions' pages that dsv32 session
# list places there, and the restored session goes on with one process's tokens. A follower
# killed mid-generation gives the client an ERROR naming the broken group and node 0 exits
# non-zero. Skips (77) without Open MPI. About 40 s here.
set -euo pipefail
: "${top_builddir:?}" "${top_srcdir:?}"
. "$top_srcdir/tests/comm/mpi-env.sh"
NAME=daemon-nodes-dp
DAEMON_ARGS=(--threads 1 --kv-cache-mb 32 --snapshot-interval 0 --cluster-heartbeat-ms 100 --cluster-timeout-ms 2000
        --cluster-join-timeout 60)
. "$top_srcdir/tests/daemon-lib.sh"
. "$top_srcdir/tests/cluster/nodes-lib.sh"

P=$(seq -s, 1 150)
P40=$(seq -s, 1 40)
P100=$(seq -s, 1 100)
clients() { # name: writes $work/$name.out
        local name=$1 s="$work/$1.sock" pids=()
        gen() { "$cli" --socket "$s" generate --ids "$@"; }
        gen --max-tokens 12 --tokens 5,6,7 >"$work/$name.c1" & pids+=($!)
        gen --max-tokens 10 --tokens "$P,200,201" >"$work/$name.c2" & pids+=($!)
        gen --max-tokens 10 --tokens "$P,300" >"$work/$name.c3" & pids+=($!)
        gen --max-tokens 16 --temperature 0.9 --top-p 0.95 --seed 7 --tokens "$(seq -s, 9 40)" >"$work/$name.c4" & pids+=($!)
        gen --max-tokens 8 --session talk --tokens "$P,$(seq -s, 400 409)" >"$work/$name.c5" & pids+=($!)
        for p in "${pids[@]}"; do wait "$p" || bad "$name: a client failed"; done
        # three sessions at once, prompts no pool has cached: placed by load, on several nodes
        pids=()
        for k in 1 2 3; do
                gen --max-tokens 8 --session "s$k" --tokens "$(seq -s, $((1000 * k)) $((1000 * k + 70)))" >"$work/$name.s$k" &
                pids+=($!)
        done
        for p in "${pids[@]}"; do wait "$p" || bad "$name: a session client failed"; done
        gen --max-tokens 6 --session other --tokens "$P100,500" >"$work/$name.c6" || bad "$name: session other failed"
        gen --max-tokens 8 --session talk --tokens "$P40,600" >"$work/$name.c7" || bad "$name: talk's second turn failed"
        "$cli" --socket "$s" session pin talk >/dev/null || bad "$name: session pin"
        cat "$work/$name".c[1-7] "$work/$name".s[1-3] >"$work/$name.out"
}
restored() { # name: a request on each restored session (a remote one's included)
        local k
        "$cli" --socket "$work/$1.sock" generate --ids --max-tokens 8 --session talk --tokens "$P40,600,$(seq -s, 700 720)" \
                >"$work/$1.rest" || bad "$1: the request on the restored session failed"
        for k in 1 2 3; do
                "$cli" --socket "$work/$1.sock" generate --ids --max-tokens 6 --session "s$k" \
                        --tokens "$(seq -s, $((1000 * k)) $((1000 * k + 70))),$((1000 * k + 80))" >>"$work/$1.rest" ||
                        bad "$1: the request on restored session s$k failed"
        done
}

# placed name n: the sequences went to several nodes, each node's pool holding its own
placed() {
        local name=$1 n=$2 st busy=0 g1 g2 talk
        "$cli" --socket "$work/$name.sock" generate --ids --max-tokens 1500 --tokens 5,6,7 >/dev/null & g1=$!
        "$cli" --socket "$work/$name.sock" generate --ids --max-tokens 1500 --tokens 8,9,10 >/dev/null & g2=$!
        for _ in $(seq 100); do
                st=$("$cli" --socket "$work/$name.sock" status) || bad "$name: dsv32 status failed"
                busy=$(grep -o "rank [0-9]* [0-9]*/[0-9]*/[0-9]*" <<<"$st" | awk '{ split($3, p, "/"); if (p[1] > 0) k++ } END { print k + 0 }')
                [ "$busy" -ge 2 ] && break
                sleep 0.05
        done
        wait "$g1" && wait "$g2" || bad "$name: a long generation failed"
        [ "$busy" -ge 2 ] || bad "$name: two concurrent generations never held pages on two nodes: $st"
        [ "$(grep -o "rank [0-9]* [0-9]*/[0-9]*/[0-9]*" <<<"$st" | wc -l)" -eq "$n" ] ||
                bad "$name: dsv32 status does not list the pages of $n nodes: $st"
        [ "$(grep -o "runs on rank [0-9]*" "$work/$name.log" | sort -u | wc -l)" -ge 2 ] ||
                bad "$name: every request ran on one node: $(grep 'runs on rank' "$work/$name.log")"
        grep -q "Nodes: $n nodes of one CPU rank each, layout ep,dp (.*attention data-parallel: each sequence and its session placed on one rank" \
                "$work/$name.log" || bad "$name: the start log does not say attention is data-parallel: $(grep Nodes "$work/$name.log")"
        talk=$(grep -o "runs on rank [0-9]* with session 'talk'" "$work/$name.log" | sort | uniq -c)
        [ "$(wc -l <<<"$talk")" -eq 1 ] && [ "$(awk '{ print $1 }' <<<"$talk")" -eq 2 ] ||
                bad "$name: session talk's two requests did not run on one node: $talk"
        echo "$name: pages (used/free/cached) $(grep -o "rank [0-9]* [0-9]*/[0-9]*/[0-9]*" <<<"$st" | tr '\n' ' '); talk: $talk"
}

# own_tokens name n: each follower ran some of the tokens, not all (its end's log line)
own_tokens() {
        local name=$1 n=$2 r line
        for ((r = 1; r < n; r++)); do
                line=$(grep -o "ran [0-9]* tokens of its own sequences in [0-9]* passes" "$work/$name-n$r.log") ||
                        { bad "$name: node $r does not say what it ran: $(tail -3 "$work/$name-n$r.log")"; continue; }
                awk -v t="$(awk '{ print $2 }' <<<"$line")" -v p="$(awk '{ print $9 }' <<<"$line")" 'BEGIN { exit !(t > 0 && p > 0) }' ||
                        bad "$name: node $r ran none of the sequences: $line"
                echo "$name: node $r $line"
        done
}

OMP_NUM_THREADS=1 "$top_builddir/dsv32-mkmodel" --preset tiny --seed 5 --out "$work/tiny" >/dev/null
t0=$(date +%s.%N)
mkdir -p "$work/state-one" "$work/state-dp-2"
start one "$work/tiny" --state-directory "$work/state-one"
clients one
stop || bad "one: dsv32d exit status $? after SIGTERM"
start one "$work/tiny" --state-directory "$work/state-one"
restored one
stop || bad "one: dsv32d exit status $? after SIGTERM"
[ -s "$work/one.out" ] && [ -s "$work/one.rest" ] || bad "no output from one process"

for n in 2 3; do
        name=dp-$n
        state=()
        [ $n = 2 ] && state=(--state-directory "$work/state-$name")
        start_nodes "$name" $n "$work/tiny" --parallel ep,dp "${state[@]}" || continue
        clients "$name"
        if cmp -s "$work/one.out" "$work/$name.out"; then
                echo "$n nodes, ep,dp: the same $(tr , ' ' <"$work/one.out" | wc -w) tokens as one process"
        else
                bad "$n nodes, ep,dp: $(diff "$work/one.out" "$work/$name.out" | head -20)"
        fi
        placed "$name" $n
        if [ $n = 2 ]; then # a session on node 1 is saved at SIGTERM: its pages read back from there
                remote=$("$cli" --socket "$work/$name.sock" session list --json | grep -o '"name":"[a-z0-9]*"[^}]*"rank":1' |
                        grep -o '"name":"[a-z0-9]*"' | tr '\n' ' ')
                [ -n "$remote" ] || bad "$name: no session on node 1: $("$cli" --socket "$work/$name.sock" session list)"
        fi
        stop || bad "$name: node 0's exit status $? after SIGTERM"
        wait_followers "$name" 10
        [ "$statuses" = "$(printf '0 %.0s' $(seq $((n - 1))))" ] || bad "$name: the other nodes exited with $statuses"
        own_tokens "$name" $n
        [ $n = 2 ] || continue
        sent=$(grep -o "[0-9]* KV pages sent back" "$work/$name-n1.log" | awk '{ print $1 }')
        [ "${sent:-0}" -gt 0 ] || bad "$name: node 1 sent no KV pages back for the snapshot of its sessions ($remote)"
        echo "$name: sessions on node 1 at SIGTERM: $remote; it sent back ${sent:-0} KV pages"
        # the saved sessions, restored by the next start of the group
        mv "$work/$name.log" "$work/$name-first.log"
        start_nodes "$name" $n "$work/tiny" --parallel ep,dp "${state[@]}" || continue
        grep -q "Session 'talk' of uid [0-9]* restored" "$work/$name.log" || bad "$name: the session was not restored"
        loaded=$(grep -o "in each rank's own pool (used/free/cached pages):.*" "$work/$name.log") ||
                bad "$name: the Loaded line does not list the nodes' pools: $(grep Loaded "$work/$name.log")"
        list=$("$cli" --socket "$work/$name.sock" session list --json) || bad "$name: dsv32 session list failed"
        rows=$(grep -o '"name":"[a-z0-9]*".*"kv_pages":[0-9]*.*"rank":[0-9]*' <<<"$list" |
                sed 's/.*"name":"\([a-z0-9]*\)".*"kv_pages":\([0-9]*\).*"rank":\([0-9]*\).*/\1 \2 \3/')
        for k in 0 1; do
                want=$(awk -v k="$k" '$3 == k { p += $2 } END { print p + 0 }' <<<"$rows")
                got=$(grep -o "rank $k [0-9]*/" <<<"$loaded" | awk '{ print $3 }' | tr -d /)
                [ "$got" = "$want" ] || bad "$name: node $k's pool: ${got:-?} pages in use at start, its restored sessions hold $want: $loaded; $list"
        done
        talk_rank=$(awk '$1 == "talk" { print $3 }' <<<"$rows")
        restored "$name"
        cmp -s "$work/one.rest" "$work/$name.rest" || bad "$name: restored session: $(cat "$work/$name.rest") vs $(cat "$work/one.rest")"
        grep -q "Request [0-9]* of uid [0-9]* runs on rank ${talk_rank:-x} with session 'talk' ([1-9]" "$work/$name.log" ||
                bad "$name: the restored session did not run on node ${talk_rank:-?}: $(grep 'runs on rank' "$work/$name.log")"
        echo "$name: restored: $(tr '\n' ' ' <<<"$rows")(name, pages, node); $loaded"
        stop || bad "$name: node 0's exit status $? after SIGTERM"
        wait_followers "$name" 10
        [ "$statuses" = "0 " ] || bad "$name: node 1 exited with $statuses after the restart"
done

# a follower killed mid-generation: the client gets an ERROR naming the broken group; node 0
# exits non-zero
if start_nodes kill 2 "$work/tiny" --parallel ep,dp; then
        "$cli" --socket "$work/kill.sock" generate --ids --max-tokens 4000 --tokens 5,6,7 >"$work/kill.out" 2>"$work/kill.err" &
        client=$!
        for _ in $(seq 100); do [ -s "$work/kill.out" ] && break; sleep 0.05; done
        kill -9 "${followers[0]}"
        rc=0
        wait "$client" || rc=$?
        [ $rc -ne 0 ] || bad "kill: the client ended with status 0"
        grep -q "the group of 2 nodes is broken" "$work/kill.err" || bad "kill: the client got no ERROR naming the group: $(cat "$work/kill.err")"
        rc=0
        for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
        wait "$pid" || rc=$?
        pid=
        [ $rc -ne 0 ] || bad "kill: node 0 exited with status 0"
        wait_followers kill 10
        echo "kill: the client got: $(head -c 160 "$work/kill.err"); node 0 exited $rc"
fi

echo "in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s"
finish_nodes
