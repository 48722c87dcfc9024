# tests/grammar: structured output's grammar engine (daemon/grammar).
check_PROGRAMS += tests/grammar/test-grammar
tests_grammar_test_grammar_SOURCES = tests/grammar/test-grammar.c
tests_grammar_test_grammar_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS)
tests_grammar_test_grammar_LDADD = libdsv32grammar.la libdsv32tok.la libdsv32core.la $(JANSSON_LIBS)
TESTS += tests/grammar/test-grammar
