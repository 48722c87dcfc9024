# daemon/grammar: structured output: JSON schema -> byte matcher, and token masks over the
# vocabulary (grammar.h). Used by the engine's sampler step; tests in tests/grammar/.
noinst_LTLIBRARIES += libdsv32grammar.la
libdsv32grammar_la_SOURCES = \
	daemon/grammar/grammar.h daemon/grammar/internal.h \
	daemon/grammar/schema.c daemon/grammar/match.c daemon/grammar/vocab.c
libdsv32grammar_la_CFLAGS = $(AM_CFLAGS) -O2 $(JANSSON_CFLAGS)
libdsv32grammar_la_LIBADD = $(JANSSON_LIBS)
