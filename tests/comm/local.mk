# tests/comm/: the communicator conformance suite (one program, every implementation) and
# the scripts that run it: in-process ranks (threads), Open MPI processes (mpirun, skipped
# without MPI), NCCL (skipped without a GPU).
check_PROGRAMS += tests/comm/comm-conformance
tests_comm_comm_conformance_SOURCES = tests/comm/comm-conformance.c tests/comm/conformance.c tests/comm/conformance.h
if HAVE_MPI
tests_comm_comm_conformance_LDADD = libdsv32commmpi.la libdsv32plugin.la libdsv32core.la
else
tests_comm_comm_conformance_LDADD = libdsv32plugin.la libdsv32core.la
endif

check_PROGRAMS += tests/comm/test-comm-api
tests_comm_test_comm_api_SOURCES = tests/comm/test-comm-api.c
tests_comm_test_comm_api_LDADD = libdsv32plugin.la libdsv32core.la

TESTS += tests/comm/test-comm-api tests/comm/comm-local.sh tests/comm/comm-mpi.sh tests/comm/comm-mpi-join.sh tests/comm/comm-nccl.sh
EXTRA_DIST += tests/comm/comm-local.sh tests/comm/comm-mpi.sh tests/comm/comm-mpi-join.sh tests/comm/mpi-env.sh tests/comm/comm-nccl.sh tests/comm/.gitignore
