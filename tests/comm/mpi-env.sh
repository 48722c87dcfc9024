# Sourced by the tests that join Open MPI processes started on their own (comm-mpi-join.sh,
# tests/cluster/daemon-nodes.sh): skips (77) without Open MPI or ompi-server; sets the
# environment every such process needs on this machine, and starts_ompi_server DIR
# starts one (its URI in $OMPI_MCA_pmix_server_uri, stopped at exit by stop_ompi_server).
if [ -z "${MPIRUN:-}" ]; then
        echo "SKIP: built without Open MPI (Debian: apt-get install libopenmpi-dev openmpi-bin, then ./configure)"
        exit 77
fi
OMPI_SERVER=$(dirname "$MPIRUN")/ompi-server
[ -x "$OMPI_SERVER" ] || OMPI_SERVER=$(command -v ompi-server || true)
if [ -z "$OMPI_SERVER" ]; then
        echo "SKIP: no ompi-server next to $MPIRUN (Debian: openmpi-bin)"
        exit 77
fi
# root (CI containers) needs the two opt-ins; everything on loopback (the launcher's channel
# and the byte transfers: self, shared memory without single-copy, TCP on lo)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_oob_tcp_if_include=lo OMPI_MCA_btl_tcp_if_include=lo OMPI_MCA_btl=self,vader,tcp
export OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_plm_rsh_agent=false
# see comm-mpi.sh: Open MPI's own allocations are not ours to report
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"

ompi_server_pid=
start_ompi_server() {
        local dir=$1
        rm -f "$dir/ompi-server.uri"
        "$OMPI_SERVER" --no-daemonize -r "$dir/ompi-server.uri" >"$dir/ompi-server.log" 2>&1 &
        ompi_server_pid=$!
        for _ in $(seq 100); do
                [ -s "$dir/ompi-server.uri" ] && break
                sleep 0.1
        done
        if [ ! -s "$dir/ompi-server.uri" ]; then
                echo "FAIL: ompi-server wrote no URI in 10 s:"; cat "$dir/ompi-server.log"
                return 1
        fi
        OMPI_MCA_pmix_server_uri=$(cat "$dir/ompi-server.uri")
        export OMPI_MCA_pmix_server_uri
}
stop_ompi_server() {
        if [ -n "$ompi_server_pid" ]; then
                kill "$ompi_server_pid" 2>/dev/null
                wait "$ompi_server_pid" 2>/dev/null
                ompi_server_pid=
        fi
}
