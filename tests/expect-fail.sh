# Sourced by the dsv32-run scripts (tests/mtp-run.sh, tests/layouts/ep-run.sh): one helper that
# runs "$run" with arguments expected to fail and checks the exit status and message; a
# mismatch calls the script's own bad(). Needs $run and bad() defined by the caller.
expect_fail() { # expected-status message-fragment args...
        local want=$1 msg=$2 out rc
        shift 2
        set +e
        out=$("$run" "$@" 2>&1)
        rc=$?
        set -e
        [ $rc -eq "$want" ] && grep -q -- "$msg" <<<"$out" || bad "dsv32-run $*: status $rc, said: $out"
}
