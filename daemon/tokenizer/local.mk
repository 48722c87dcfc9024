# daemon/tokenizer: tokenizer.json (byte-level BPE), streaming detokenizer, the DeepSeek-V3.2
# chat format and its output parser, the tiny-checkpoint tokenizer trainer; dsv32-tokenize.
noinst_LTLIBRARIES += libdsv32tok.la
libdsv32tok_la_SOURCES = \
	daemon/tokenizer/tokenizer.h daemon/tokenizer/tok_internal.h daemon/tokenizer/tok_ucd16.h \
	daemon/tokenizer/tokenizer.c daemon/tokenizer/tok_encode.c daemon/tokenizer/tok_decode.c \
	daemon/tokenizer/tok_synth.c \
	daemon/tokenizer/chat.h daemon/tokenizer/chat_tokens.h daemon/tokenizer/chat.c \
	daemon/tokenizer/chat_parse.c daemon/tokenizer/pyjson.h daemon/tokenizer/pyjson.c
libdsv32tok_la_CFLAGS = $(AM_CFLAGS) -O2 $(PCRE2_CFLAGS) $(JANSSON_CFLAGS)
# Programs link libdsv32core.la too (util.c); it is not added here so that one program can
# link both convenience libraries without duplicate objects.
libdsv32tok_la_LIBADD = $(PCRE2_LIBS) $(JANSSON_LIBS)

bin_PROGRAMS += dsv32-tokenize
dist_man_MANS += man/dsv32-tokenize.1
dsv32_tokenize_SOURCES = daemon/tokenizer/dsv32-tokenize.c
dsv32_tokenize_LDADD = libdsv32tok.la libdsv32core.la
