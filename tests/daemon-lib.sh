# Sourced by the shell tests that start dsv32d (tests/layouts/daemon-ranks.sh,
# tests/ipc/daemon-pass-tokens.sh): the programs, a fresh work directory, a dsv32d killed on
# exit, failures counted, and starting, stopping and refusals. Before sourcing, set NAME (the
# work directory's name under tests/tmp) and DAEMON_ARGS (an array of arguments every start
# gets). Provides $d $cli $work $pid $fail, bad, start, stop, refuse, finish.
: "${top_builddir:?}" "${NAME:?}"
d="$top_builddir/dsv32d"
cli="$top_builddir/dsv32"
work="$top_builddir/tests/tmp/$NAME"
rm -rf "$work"
mkdir -p "$work"
pid=
fail=0
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT
bad() { echo "FAIL: $*"; fail=1; }

wait_serving() { # name tries what: until dsv32d $pid logs "Ready: serving" in $work/name.log
        local name=$1 tries=$2 what=$3
        for _ in $(seq "$tries"); do
                grep -q "Ready: serving" "$work/$name.log" && return 0
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.05
        done
        bad "$name: $what did not start: $(cat "$work/$name.log")"
        return 1
}

start() { # name model args...: starts dsv32d on $work/name.sock (log $work/name.log), waits until it serves
        local name=$1 model=$2
        shift 2
        "$d" --model "$model" --socket "$work/$name.sock" "${DAEMON_ARGS[@]}" "$@" 2>"$work/$name.log" &
        pid=$!
        wait_serving "$name" 400 dsv32d
}

stop() { # SIGTERM, then its exit status
        local rc=0
        kill "$pid"
        wait "$pid" || rc=$?
        pid=
        return $rc
}

refuse() { # status message model args...: dsv32d exits with status at start, saying message
        local want=$1 msg=$2 model=$3 out rc=0
        shift 3
        out=$("$d" --model "$model" --socket "$work/refuse.sock" "$@" 2>&1) || rc=$?
        [ $rc -eq "$want" ] && grep -q -- "$msg" <<<"$out" || bad "dsv32d $*: status $rc, said: $out"
}

finish() { # under ThreadSanitizer (make check-tsan) a report in any dsv32d log fails the test
        local l
        for l in "$work"/*.log; do
                grep -q "WARNING: ThreadSanitizer" "$l" && bad "ThreadSanitizer in $l: $(grep -A12 "WARNING: ThreadSanitizer" "$l" | head -40)"
        done
        [ $fail -eq 0 ] && echo "PASS"
        exit $fail
}
