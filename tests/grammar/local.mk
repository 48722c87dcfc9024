# tests/grammar: structured output's grammar engine (daemon/grammar).
check_PROGRAMS += tests/grammar/test-grammar
tests_grammar_test_grammar_SOURCES = tests/grammar/test-grammar.c
tests_grammar_test_grammar_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS)
tests_grammar_test_grammar_LDADD = libdsv32grammar.la libdsv32tok.la libdsv32core.la $(JANSSON_LIBS)
TESTS += tests/grammar/test-grammar

# the grammar's fuzz target: replayed over its seed corpus (standalone driver); a libFuzzer
# binary with --enable-fuzzers
check_PROGRAMS += tests/fuzz/fuzz-grammar-replay
tests_fuzz_fuzz_grammar_replay_SOURCES = tests/fuzz/fuzz-grammar.c tests/fuzz/standalone.c
tests_fuzz_fuzz_grammar_replay_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS)
tests_fuzz_fuzz_grammar_replay_LDADD = libdsv32grammar.la libdsv32core.la $(JANSSON_LIBS)
TESTS += tests/grammar/fuzz-replay.sh
EXTRA_DIST += tests/grammar/fuzz-replay.sh tests/fuzz/corpus/grammar
if ENABLE_FUZZERS
noinst_PROGRAMS += tests/fuzz/fuzz-grammar
tests_fuzz_fuzz_grammar_SOURCES = tests/fuzz/fuzz-grammar.c
tests_fuzz_fuzz_grammar_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS) $(FUZZ_CFLAGS)
tests_fuzz_fuzz_grammar_LDFLAGS = $(AM_LDFLAGS) $(FUZZ_CFLAGS)
tests_fuzz_fuzz_grammar_LDADD = libdsv32grammar.la libdsv32core.la $(JANSSON_LIBS)
endif
