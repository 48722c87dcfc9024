# Shell helpers of the tests that run dsv32d on the CPU emulation of CUDA (sourced, not run):
# a temporary directory whose daemons and clients are killed at exit, the emulated plugin,
# the tiny model, and starting a daemon and waiting for it to serve or to exit.
# The sourcing test sets B (the build directory) and name (for the temporary directory) first.
: "${B:?}" "${name:?}"
emu=$B/tests/gpu/emu
[ -f "$emu/dsv32-backend-cuda.so" ] || { echo "SKIP: $emu/dsv32-backend-cuda.so not built"; exit 77; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dsv32-$name-XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
[ -n "${KEEP:-}" ] && trap - EXIT
fail() { echo "FAIL: $*"; for l in "$tmp"/*.log "$tmp"/*.out; do [ -f "$l" ] && { echo "--- $l"; tail -40 "$l"; }; done; exit 1; }
export DSV32_BACKEND_PATH=$emu
"$B/dsv32-mkmodel" --preset tiny --out "$tmp/model" >/dev/null || fail "dsv32-mkmodel"

start() { # name socket args...: dsv32d in the background, its log in $tmp/name.log, its pid in $daemon
        local name=$1 sock=$2
        shift 2
        "$B/dsv32d" --model "$tmp/model" --socket "$sock" --threads 1 "$@" 2>"$tmp/$name.log" &
        daemon=$!
        pids+=($daemon)
}
wait_up() { # socket pid
        for _ in $(seq 600); do
                "$B/dsv32" --socket "$1" ping --count 1 >/dev/null 2>&1 && return 0
                kill -0 "$2" 2>/dev/null || return 1
                sleep 0.1
        done
        return 1
}
wait_exit() { # pid seconds: sets $rc; 1 when it did not exit in time
        local t
        for t in $(seq $(($2 * 10))); do
                kill -0 "$1" 2>/dev/null || {
                        wait "$1"
                        rc=$?
                        return 0
                }
                sleep 0.1
        done
        return 1
}
stop() { # pid: SIGTERM, then it must exit 0
        kill -TERM "$1"
        wait_exit "$1" 60 || fail "dsv32d did not exit on SIGTERM"
        [ "$rc" = 0 ] || fail "dsv32d exited $rc on SIGTERM, not 0"
}
