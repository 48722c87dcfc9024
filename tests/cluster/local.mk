# tests/cluster/: the multi-node bootstrap (processes on loopback), its wire format, the
# model fingerprint, and the replay of the wire decoder's fuzz corpus.
cluster_tests = tests/cluster/test-cluster-wire tests/cluster/test-cluster-bootstrap tests/cluster/test-cluster-fingerprint
check_PROGRAMS += $(cluster_tests)
TESTS += $(cluster_tests)
tests_cluster_test_cluster_wire_SOURCES = tests/cluster/test-cluster-wire.c
tests_cluster_test_cluster_wire_LDADD = libdsv32cluster.la
tests_cluster_test_cluster_bootstrap_SOURCES = tests/cluster/test-cluster-bootstrap.c
tests_cluster_test_cluster_bootstrap_LDADD = libdsv32cluster.la
tests_cluster_test_cluster_fingerprint_SOURCES = tests/cluster/test-cluster-fingerprint.c
tests_cluster_test_cluster_fingerprint_LDADD = libdsv32cluster.la
check_PROGRAMS += tests/cluster/test-cluster-settings
TESTS += tests/cluster/test-cluster-settings
tests_cluster_test_cluster_settings_SOURCES = tests/cluster/test-cluster-settings.c
tests_cluster_test_cluster_settings_LDADD = libdsv32server.la

check_PROGRAMS += tests/fuzz/fuzz-cluster-wire-replay
tests_fuzz_fuzz_cluster_wire_replay_SOURCES = tests/fuzz/fuzz-cluster-wire.c tests/fuzz/standalone.c
tests_fuzz_fuzz_cluster_wire_replay_LDADD = libdsv32cluster.la
TESTS += tests/cluster/replay-wire.sh
EXTRA_DIST += tests/cluster/replay-wire.sh tests/fuzz/corpus/cluster-wire tests/cluster/.gitignore
if ENABLE_FUZZERS
noinst_PROGRAMS += tests/fuzz/fuzz-cluster-wire
tests_fuzz_fuzz_cluster_wire_SOURCES = tests/fuzz/fuzz-cluster-wire.c
tests_fuzz_fuzz_cluster_wire_CFLAGS = $(AM_CFLAGS) $(FUZZ_CFLAGS)
tests_fuzz_fuzz_cluster_wire_LDFLAGS = $(AM_LDFLAGS) $(FUZZ_CFLAGS)
tests_fuzz_fuzz_cluster_wire_LDADD = libdsv32cluster.la
endif

clean-local: clean-cluster-tmp
clean-cluster-tmp:
	-rm -rf tests/cluster/*.tmp
.PHONY: clean-cluster-tmp

# `make check-tsan`, in a tree configured --enable-tsan: the tests whose threads share
# memory (the in-process communicator's ranks, the bootstrap's monitor threads, and dsv32d
# serving through a group of CPU rank threads: tests/layouts/daemon-ranks.sh, and through a
# group of dsv32d processes: tests/cluster/daemon-nodes.sh; data-parallel attention's rank
# threads and followers: tests/layouts/test-dp-model, tiny only, and over nodes on threads:
# tests/layouts/test-node-dp; daemon-nodes-dp.sh is left out for CI time: it passed under
# TSan by hand, 487 s at load ~10, `make check-tsan TSAN_LOGS=tests/cluster/daemon-nodes-dp.log`) under
# ThreadSanitizer, without building the rest of the suite. Results in test-suite.log.
# tests/tsan.supp (TSAN_OPTIONS in Makefile.am) holds the reports that are not races.
# OMP_NUM_THREADS=1: the checkpoint generator's OpenMP loops (daemon/synth.c, the only OpenMP
# code; test-dp-model writes its fixtures with it) run in libgomp, whose barriers
# ThreadSanitizer does not see (as daemon-ranks.sh does for dsv32-mkmodel).
TSAN_TEST_BINS = tests/comm/comm-conformance tests/cluster/test-cluster-bootstrap tests/layouts/test-dp-model \
	tests/layouts/test-node-dp dsv32d dsv32 dsv32-mkmodel
TSAN_LOGS = tests/comm/comm-local.log tests/cluster/test-cluster-bootstrap.log tests/layouts/daemon-ranks.log \
	tests/layouts/test-dp-model.log tests/layouts/test-node-dp.log tests/cluster/daemon-nodes.log
if ENABLE_TSAN
check-tsan: $(TSAN_TEST_BINS)
	@rm -f $(TSAN_LOGS) $(TSAN_LOGS:.log=.trs) $(TEST_SUITE_LOG)
	@DSV32_COMM_LARGE=16384 DSV32_DP_SMALL=0 OMP_NUM_THREADS=1 $(MAKE) $(AM_MAKEFLAGS) $(TEST_SUITE_LOG) TEST_LOGS='$(TSAN_LOGS)'
else
check-tsan:
	@echo "check-tsan: configure with --enable-tsan first (./configure --enable-tsan --with-cuda=no)"; exit 1
endif
.PHONY: check-tsan

# dsv32d --nodes N: processes on loopback joined through the bootstrap and Open MPI (with
# --parallel ep,dp: attention data-parallel over them, daemon-nodes-dp.sh)
TESTS += tests/cluster/daemon-nodes.sh tests/cluster/daemon-nodes-faults.sh tests/cluster/daemon-nodes-dp.sh
EXTRA_DIST += tests/cluster/daemon-nodes.sh tests/cluster/daemon-nodes-faults.sh tests/cluster/daemon-nodes-dp.sh \
	tests/cluster/nodes-lib.sh
