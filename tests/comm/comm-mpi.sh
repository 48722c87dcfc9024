#!/bin/bash
# The conformance suite on the Open MPI communicator: 2, 3 and 4 processes started by
# mpirun on this machine, talking over shared memory only (no network). Skips (77) when
# the build has no Open MPI.
set -u
conf=$top_builddir/tests/comm/comm-conformance
if [ -z "${MPIRUN:-}" ]; then
        echo "SKIP: built without Open MPI (Debian: apt-get install libopenmpi-dev openmpi-bin, then ./configure)"
        exit 77
fi
# root (CI containers) needs the two opt-ins; 4 ranks on 2 cores need oversubscription;
# the byte transfer layers: self and shared memory (vader) without single-copy (ptrace is
# often forbidden in containers); the launcher's own channel stays on loopback
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none
export OMPI_MCA_oob_tcp_if_include=lo OMPI_MCA_plm_rsh_agent=false
# Under ASan: no leak report. Open MPI keeps allocations until exit in components it dlopens
# and unloads at MPI_Finalize, so LeakSanitizer cannot even name their library (a suppression
# file cannot match them); the other ASan/UBSan checks stay on, and the communicator code the
# MPI one shares with the local one (kernels/comm.c) is leak-checked by comm-local.sh.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
rc=0
for n in 2 3 4; do
        if ! timeout 300 "$MPIRUN" -np $n "$conf" --impl mpi; then
                echo "FAIL: the suite failed with $n processes"
                rc=1
        fi
done
exit $rc
