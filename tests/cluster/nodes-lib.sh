# Sourced by the tests of dsv32d --nodes N (daemon-nodes.sh, daemon-nodes-faults.sh) after
# tests/comm/mpi-env.sh and tests/daemon-lib.sh: free_port, start_nodes (nodes 1..n-1 in the
# background, their pids in $followers, then node 0 as start does) and wait_followers (their
# exit statuses in $statuses); the followers are killed on exit. finish_nodes: finish, after
# failing on an ASan/UBSan report in any log (a sanitizer build: the daemons run on after a
# UBSan report).
followers=()
cleanup_nodes() {
        local p
        for p in "${followers[@]}"; do kill -9 "$p" 2>/dev/null || true; done
        cleanup
}
trap cleanup_nodes EXIT

free_port() { "$PYTHON3" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

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
        wait_serving "$name" 1200 "node 0"
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


finish_nodes() {
        local l
        for l in "$work"/*.log; do
                grep -Eq "ERROR: AddressSanitizer|runtime error:" "$l" &&
                        bad "a sanitizer report in $l: $(grep -E -A8 "ERROR: AddressSanitizer|runtime error:" "$l" | head -20)"
        done
        finish
}
