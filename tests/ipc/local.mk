# tests/ipc/: the rings and the codec in isolation, the daemon's units, and dsv32d end to
# end with real processes, sockets and shared memory (each test builds the tiny model and
# runs its own daemon on a socket in a temporary directory).
IPC_TEST_LIBS = libdsv32ipc.la
DAEMON_TEST_LIBS = libdsv32.la libdsv32ipc.la
HARNESS = tests/ipc/harness.h tests/ipc/harness.c
RAW_CLIENT = tests/ipc/raw.h tests/ipc/raw.c

check_PROGRAMS += tests/ipc/test-ipc-ring
tests_ipc_test_ipc_ring_SOURCES = tests/ipc/test-ipc-ring.c
tests_ipc_test_ipc_ring_LDADD = $(IPC_TEST_LIBS)
TESTS += tests/ipc/test-ipc-ring

check_PROGRAMS += tests/ipc/test-ipc-proto
tests_ipc_test_ipc_proto_SOURCES = tests/ipc/test-ipc-proto.c ipc/idlist.h ipc/idlist.c
tests_ipc_test_ipc_proto_CFLAGS = $(AM_CFLAGS) $(MSGPACK_CFLAGS)
tests_ipc_test_ipc_proto_LDADD = $(IPC_TEST_LIBS)
TESTS += tests/ipc/test-ipc-proto

check_PROGRAMS += tests/ipc/test-server-units
tests_ipc_test_server_units_SOURCES = tests/ipc/test-server-units.c
tests_ipc_test_server_units_CFLAGS = $(AM_CFLAGS) $(MSGPACK_CFLAGS)
tests_ipc_test_server_units_LDADD = libdsv32server.la
TESTS += tests/ipc/test-server-units

check_PROGRAMS += tests/ipc/test-daemon-generate
tests_ipc_test_daemon_generate_SOURCES = tests/ipc/test-daemon-generate.c $(HARNESS)
tests_ipc_test_daemon_generate_LDADD = $(DAEMON_TEST_LIBS)
TESTS += tests/ipc/test-daemon-generate

check_PROGRAMS += tests/ipc/test-daemon-logprobs
tests_ipc_test_daemon_logprobs_SOURCES = tests/ipc/test-daemon-logprobs.c $(HARNESS) $(RAW_CLIENT)
tests_ipc_test_daemon_logprobs_CFLAGS = $(AM_CFLAGS) $(MSGPACK_CFLAGS)
tests_ipc_test_daemon_logprobs_LDADD = $(DAEMON_TEST_LIBS)
TESTS += tests/ipc/test-daemon-logprobs

check_PROGRAMS += tests/ipc/test-daemon-chat-events
tests_ipc_test_daemon_chat_events_SOURCES = tests/ipc/test-daemon-chat-events.c $(HARNESS)
tests_ipc_test_daemon_chat_events_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS)
tests_ipc_test_daemon_chat_events_LDADD = $(DAEMON_TEST_LIBS) libdsv32tok.la libdsv32core.la $(JANSSON_LIBS)
TESTS += tests/ipc/test-daemon-chat-events

check_PROGRAMS += tests/ipc/test-client-hostile-tokens
tests_ipc_test_client_hostile_tokens_SOURCES = tests/ipc/test-client-hostile-tokens.c $(HARNESS) $(RAW_CLIENT)
tests_ipc_test_client_hostile_tokens_CFLAGS = $(AM_CFLAGS) $(MSGPACK_CFLAGS)
tests_ipc_test_client_hostile_tokens_LDADD = $(DAEMON_TEST_LIBS)
TESTS += tests/ipc/test-client-hostile-tokens

# the public header compiles as C++ (and links)
check_PROGRAMS += tests/ipc/test-header-cxx
tests_ipc_test_header_cxx_SOURCES = tests/ipc/test-header-cxx.cc
tests_ipc_test_header_cxx_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/client
tests_ipc_test_header_cxx_CXXFLAGS = $(AM_CXXFLAGS) -Wall -Wextra -Werror -pedantic
tests_ipc_test_header_cxx_LDADD = libdsv32.la
TESTS += tests/ipc/test-header-cxx

# fuzz targets of the wire protocol: frame decoder and every message decoder
check_PROGRAMS += tests/fuzz/fuzz-ipc-msg-replay tests/fuzz/fuzz-ipc-frame-replay
tests_fuzz_fuzz_ipc_msg_replay_SOURCES = tests/fuzz/fuzz-ipc-msg.c tests/fuzz/standalone.c
tests_fuzz_fuzz_ipc_msg_replay_CFLAGS = $(AM_CFLAGS) $(MSGPACK_CFLAGS)
tests_fuzz_fuzz_ipc_msg_replay_LDADD = $(IPC_TEST_LIBS)
tests_fuzz_fuzz_ipc_frame_replay_SOURCES = tests/fuzz/fuzz-ipc-frame.c tests/fuzz/standalone.c
tests_fuzz_fuzz_ipc_frame_replay_CFLAGS = $(AM_CFLAGS) $(MSGPACK_CFLAGS)
tests_fuzz_fuzz_ipc_frame_replay_LDADD = $(IPC_TEST_LIBS)
TESTS += tests/ipc/fuzz-replay.sh
EXTRA_DIST += tests/ipc/fuzz-replay.sh tests/fuzz/corpus/ipc-msg tests/fuzz/corpus/ipc-frame
if ENABLE_FUZZERS
noinst_PROGRAMS += tests/fuzz/fuzz-ipc-msg tests/fuzz/fuzz-ipc-frame
tests_fuzz_fuzz_ipc_msg_SOURCES = tests/fuzz/fuzz-ipc-msg.c
tests_fuzz_fuzz_ipc_msg_CFLAGS = $(AM_CFLAGS) $(MSGPACK_CFLAGS) $(FUZZ_CFLAGS)
tests_fuzz_fuzz_ipc_msg_LDFLAGS = $(AM_LDFLAGS) $(FUZZ_CFLAGS)
tests_fuzz_fuzz_ipc_msg_LDADD = $(IPC_TEST_LIBS)
tests_fuzz_fuzz_ipc_frame_SOURCES = tests/fuzz/fuzz-ipc-frame.c
tests_fuzz_fuzz_ipc_frame_CFLAGS = $(AM_CFLAGS) $(MSGPACK_CFLAGS) $(FUZZ_CFLAGS)
tests_fuzz_fuzz_ipc_frame_LDFLAGS = $(AM_LDFLAGS) $(FUZZ_CFLAGS)
tests_fuzz_fuzz_ipc_frame_LDADD = $(IPC_TEST_LIBS)
endif

# `make bench`: ping latency over the rings against a Unix socketpair
bench_scripts += tests/ipc/bench.sh
EXTRA_DIST += tests/ipc/bench.sh
# `make bench`: decode tokens/s through dsv32d with mtp = on vs off (speculative decoding)
bench_scripts += tests/ipc/bench-mtp.sh
EXTRA_DIST += tests/ipc/bench-mtp.sh
# `make bench`: the engine through IPC: 1/8/32 clients, prefix-cache TTFT, restart with sessions
bench_scripts += tests/ipc/bench-engine.sh
EXTRA_DIST += tests/ipc/bench-engine.sh

# libdsv32's pollable descriptor under infinite poll/epoll waits, cancel of unknown ids
check_PROGRAMS += tests/ipc/test-client-fd
tests_ipc_test_client_fd_SOURCES = tests/ipc/test-client-fd.c $(HARNESS)
tests_ipc_test_client_fd_LDADD = $(DAEMON_TEST_LIBS)
TESTS += tests/ipc/test-client-fd

# the dsv32 command line: options, --json, exit codes, write errors, signals, chat
check_PROGRAMS += tests/ipc/test-cli
tests_ipc_test_cli_SOURCES = tests/ipc/test-cli.c $(HARNESS)
tests_ipc_test_cli_LDADD = $(DAEMON_TEST_LIBS)
TESTS += tests/ipc/test-cli

# status rates over wall time, prefilling, the request log, the shutdown line
check_PROGRAMS += tests/ipc/test-daemon-stats
tests_ipc_test_daemon_stats_SOURCES = tests/ipc/test-daemon-stats.c $(HARNESS)
tests_ipc_test_daemon_stats_LDADD = $(DAEMON_TEST_LIBS)
TESTS += tests/ipc/test-daemon-stats

check_PROGRAMS += tests/ipc/test-daemon-kill
tests_ipc_test_daemon_kill_SOURCES = tests/ipc/test-daemon-kill.c $(HARNESS)
tests_ipc_test_daemon_kill_LDADD = $(DAEMON_TEST_LIBS)
TESTS += tests/ipc/test-daemon-kill

check_PROGRAMS += tests/ipc/test-daemon-hostile
tests_ipc_test_daemon_hostile_SOURCES = tests/ipc/test-daemon-hostile.c $(HARNESS) $(RAW_CLIENT)
tests_ipc_test_daemon_hostile_CFLAGS = $(AM_CFLAGS) $(MSGPACK_CFLAGS)
tests_ipc_test_daemon_hostile_LDADD = $(DAEMON_TEST_LIBS)
TESTS += tests/ipc/test-daemon-hostile

check_PROGRAMS += tests/ipc/test-daemon-session
tests_ipc_test_daemon_session_SOURCES = tests/ipc/test-daemon-session.c $(HARNESS) $(RAW_CLIENT)
tests_ipc_test_daemon_session_CFLAGS = $(AM_CFLAGS) $(MSGPACK_CFLAGS)
tests_ipc_test_daemon_session_LDADD = $(DAEMON_TEST_LIBS)
TESTS += tests/ipc/test-daemon-session

check_PROGRAMS += tests/ipc/test-daemon-prefix
tests_ipc_test_daemon_prefix_SOURCES = tests/ipc/test-daemon-prefix.c $(HARNESS)
tests_ipc_test_daemon_prefix_LDADD = $(DAEMON_TEST_LIBS)
TESTS += tests/ipc/test-daemon-prefix

check_PROGRAMS += tests/ipc/test-daemon-restart
tests_ipc_test_daemon_restart_SOURCES = tests/ipc/test-daemon-restart.c $(HARNESS)
tests_ipc_test_daemon_restart_LDADD = $(DAEMON_TEST_LIBS)
TESTS += tests/ipc/test-daemon-restart

check_PROGRAMS += tests/ipc/test-daemon-signals
tests_ipc_test_daemon_signals_SOURCES = tests/ipc/test-daemon-signals.c $(HARNESS)
tests_ipc_test_daemon_signals_LDADD = $(DAEMON_TEST_LIBS)
TESTS += tests/ipc/test-daemon-signals

TESTS += tests/ipc/test-daemon-access.sh tests/ipc/test-daemon-activation.sh tests/ipc/test-programs.sh tests/ipc/test-cli-chat-events.sh
EXTRA_DIST += tests/ipc/test-daemon-access.sh tests/ipc/test-daemon-activation.sh tests/ipc/test-programs.sh tests/ipc/test-cli-chat-events.sh

check_PROGRAMS += tests/ipc/test-daemon-mtp
tests_ipc_test_daemon_mtp_SOURCES = tests/ipc/test-daemon-mtp.c $(HARNESS)
tests_ipc_test_daemon_mtp_LDADD = $(DAEMON_TEST_LIBS)
TESTS += tests/ipc/test-daemon-mtp

# dsv32d's pass-tokens setting: passes of 16 tokens, of 4096 and auto serve the same tokens;
# the cap in the start log; bad values refused (daemon-pass-tokens.sh, a few seconds)
TESTS += tests/ipc/daemon-pass-tokens.sh
EXTRA_DIST += tests/ipc/daemon-pass-tokens.sh
