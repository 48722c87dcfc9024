# tests/layouts/: the parallel layouts on CPU ranks (threads over the in-process
# communicator): the model with expert parallelism against one rank, and dsv32-run --ranks.
check_PROGRAMS += tests/layouts/test-ep-model
tests_layouts_test_ep_model_SOURCES = tests/layouts/test-ep-model.c
tests_layouts_test_ep_model_LDADD = $(TEST_CORE_LIBS)

TESTS += tests/layouts/test-ep-model tests/layouts/ep-run.sh
EXTRA_DIST += tests/layouts/ep-run.sh
