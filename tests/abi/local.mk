# tests/abi/: libdsv32.so.0 binary compatibility. test-abi-v0 is built against the frozen
# dsv32.h of version 0.1.0 (tests/abi/dsv32-v0.h) and runs against today's library.
check_PROGRAMS += tests/abi/test-abi-v0
tests_abi_test_abi_v0_SOURCES = tests/abi/test-abi-v0.c tests/abi/dsv32-v0.h $(HARNESS)
tests_abi_test_abi_v0_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/tests/abi
tests_abi_test_abi_v0_LDADD = $(DAEMON_TEST_LIBS)
TESTS += tests/abi/test-abi-v0
