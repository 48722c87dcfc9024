# tests/inspect: dsv32-inspect, its accounting library, and their tests.
# The library (daemon/inspect.c) is kept apart from libdsv32core until the daemon needs it.
noinst_LTLIBRARIES += libdsv32inspect.la
libdsv32inspect_la_SOURCES = daemon/inspect.h daemon/inspect.c daemon/plan.h daemon/plan.c
libdsv32inspect_la_LIBADD = libdsv32core.la -lm

bin_PROGRAMS += dsv32-inspect
dsv32_inspect_SOURCES = daemon/tools/inspect.c
dsv32_inspect_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS)
dsv32_inspect_LDADD = libdsv32inspect.la $(JANSSON_LIBS) -lm
dist_man_MANS += man/dsv32-inspect.1

inspect_tests = \
	tests/inspect/test-inspect-v32 \
	tests/inspect/test-inspect-tiny \
	tests/inspect/test-inspect-kvpool \
	tests/inspect/test-inspect-cli \
	tests/inspect/test-inspect-plan
check_PROGRAMS += $(inspect_tests)
TESTS += $(inspect_tests)

inspect_test_cflags = $(AM_CFLAGS) $(JANSSON_CFLAGS)
inspect_test_ldadd = libdsv32inspect.la $(JANSSON_LIBS) -lm

tests_inspect_test_inspect_v32_SOURCES = tests/inspect/test-inspect-v32.c tests/inspect/inspect-test.h
tests_inspect_test_inspect_v32_CFLAGS = $(inspect_test_cflags)
tests_inspect_test_inspect_v32_LDADD = $(inspect_test_ldadd)

tests_inspect_test_inspect_tiny_SOURCES = tests/inspect/test-inspect-tiny.c tests/inspect/inspect-test.h
tests_inspect_test_inspect_tiny_CFLAGS = $(inspect_test_cflags)
tests_inspect_test_inspect_tiny_LDADD = $(inspect_test_ldadd)

tests_inspect_test_inspect_kvpool_SOURCES = tests/inspect/test-inspect-kvpool.c tests/inspect/inspect-test.h
tests_inspect_test_inspect_kvpool_CFLAGS = $(inspect_test_cflags)
tests_inspect_test_inspect_kvpool_LDADD = $(inspect_test_ldadd)

tests_inspect_test_inspect_cli_SOURCES = tests/inspect/test-inspect-cli.c tests/inspect/inspect-test.h
tests_inspect_test_inspect_cli_CFLAGS = $(inspect_test_cflags)
tests_inspect_test_inspect_cli_LDADD = $(inspect_test_ldadd)

tests_inspect_test_inspect_plan_SOURCES = tests/inspect/test-inspect-plan.c tests/inspect/inspect-test.h
tests_inspect_test_inspect_plan_CFLAGS = $(inspect_test_cflags)
tests_inspect_test_inspect_plan_LDADD = $(inspect_test_ldadd)

# docs/scaling.md quotes dsv32-inspect --plan; this test keeps the two in step
TESTS += tests/inspect/test-scaling-doc.sh
EXTRA_DIST += tests/inspect/test-scaling-doc.sh docs/scaling.md
