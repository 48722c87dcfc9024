#!/bin/bash
# The conformance suite on the Open MPI communicator of processes started on their own (not
# by mpirun), joined at run time through an ompi-server (dsv_comm_mpi_join, the way the
# nodes of dsv32d --nodes N form their group): 2, 3 and 4 processes on this machine. Skips (77)
# without Open MPI.
set -u
. "$top_srcdir/tests/comm/mpi-env.sh"
conf=$top_builddir/tests/comm/comm-conformance
tmp=$top_builddir/tests/comm/mpi-join.tmp
rm -rf "$tmp" && mkdir -p "$tmp" || exit 1
trap 'stop_ompi_server' EXIT
start_ompi_server "$tmp" || exit 1
rc=0
for n in 2 3 4; do
        rm -f "$tmp/port"
        pids=()
        for ((r = 0; r < n; r++)); do
                timeout 300 "$conf" --impl mpi --join "$tmp/port" --nodes $n --node-rank $r >"$tmp/node$r.log" 2>&1 &
                pids+=($!)
        done
        for ((r = 0; r < n; r++)); do
                if ! wait "${pids[$r]}"; then
                        echo "FAIL: node $r of $n failed:"; cat "$tmp/node$r.log"
                        rc=1
                fi
        done
        cat "$tmp/node0.log"
        # rank 0 prints the group's verdict: every process took part, nothing failed
        if ! grep -q "^mpi, $n rank(s): [1-9][0-9]* checks, 0 failed" "$tmp/node0.log"; then
                echo "FAIL: no passing verdict of $n joined processes"
                rc=1
        fi
done
[ $rc = 0 ] && rm -rf "$tmp"
exit $rc
