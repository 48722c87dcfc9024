# tests/layouts/: the parallel layouts on CPU ranks (threads over the in-process
# communicator): the model with expert parallelism against one rank, and dsv32-run --ranks.
check_PROGRAMS += tests/layouts/test-ep-model
tests_layouts_test_ep_model_SOURCES = tests/layouts/test-ep-model.c
tests_layouts_test_ep_model_LDADD = $(TEST_CORE_LIBS)

# the ep,tp layout at the model level: logits within a bound of one rank's, bytes per rank
check_PROGRAMS += tests/layouts/test-tp-model
tests_layouts_test_tp_model_SOURCES = tests/layouts/test-tp-model.c
tests_layouts_test_tp_model_LDADD = $(TEST_CORE_LIBS)

# data-parallel attention: each rank its own sequences, rows dispatched by all-to-all
check_PROGRAMS += tests/layouts/test-dp-model
tests_layouts_test_dp_model_SOURCES = tests/layouts/test-dp-model.c
tests_layouts_test_dp_model_LDADD = libdsv32runtime.la

# the same over nodes (dsv_rank_group_open_nodes/_follow), on threads and the in-process communicator
check_PROGRAMS += tests/layouts/test-node-dp
tests_layouts_test_node_dp_SOURCES = tests/layouts/test-node-dp.c
tests_layouts_test_node_dp_LDADD = libdsv32runtime.la

TESTS += tests/layouts/test-ep-model tests/layouts/test-tp-model tests/layouts/test-dp-model tests/layouts/test-node-dp tests/layouts/ep-run.sh
EXTRA_DIST += tests/layouts/ep-run.sh

# dsv32d --ranks N --parallel ep,dp: concurrent clients, sessions, snapshots, a rank's fault,
# refusals (daemon-ranks.sh)
TESTS += tests/layouts/daemon-ranks.sh
EXTRA_DIST += tests/layouts/daemon-ranks.sh
