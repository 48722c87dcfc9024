# tests/tokenizer: the tokenizer, the streaming detokenizer, the DeepSeek-V3.2 chat format;
# exactness against Hugging Face (oracle.sh, needs the npm oracle of setup-hook.sh, else
# skips); fuzz corpora replayed; `make bench` figures (bench.sh).
TOK_TEST_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS) $(PCRE2_CFLAGS)
TOK_TEST_LIBS = libdsv32tok.la libdsv32core.la $(JANSSON_LIBS)

tok_tests = \
	tests/tokenizer/test-tok-basic tests/tokenizer/test-tok-stream tests/tokenizer/test-tok-hostile \
	tests/tokenizer/test-tok-load tests/tokenizer/test-chat-golden tests/tokenizer/test-chat-parse
check_PROGRAMS += $(tok_tests) tests/tokenizer/tok-bench
TESTS += $(tok_tests) tests/tokenizer/oracle.sh tests/tokenizer/fuzz-replay.sh

tests_tokenizer_test_tok_basic_SOURCES = tests/tokenizer/test-tok-basic.c tests/tokenizer/tok-test.h
tests_tokenizer_test_tok_basic_CFLAGS = $(TOK_TEST_CFLAGS)
tests_tokenizer_test_tok_basic_LDADD = $(TOK_TEST_LIBS)
tests_tokenizer_test_tok_stream_SOURCES = tests/tokenizer/test-tok-stream.c tests/tokenizer/tok-test.h
tests_tokenizer_test_tok_stream_CFLAGS = $(TOK_TEST_CFLAGS)
tests_tokenizer_test_tok_stream_LDADD = $(TOK_TEST_LIBS)
tests_tokenizer_test_tok_hostile_SOURCES = tests/tokenizer/test-tok-hostile.c tests/tokenizer/tok-test.h
tests_tokenizer_test_tok_hostile_CFLAGS = $(TOK_TEST_CFLAGS)
tests_tokenizer_test_tok_hostile_LDADD = $(TOK_TEST_LIBS)
tests_tokenizer_test_tok_load_SOURCES = tests/tokenizer/test-tok-load.c tests/tokenizer/tok-test.h
tests_tokenizer_test_tok_load_CFLAGS = $(TOK_TEST_CFLAGS)
tests_tokenizer_test_tok_load_LDADD = $(TOK_TEST_LIBS)
tests_tokenizer_test_chat_golden_SOURCES = tests/tokenizer/test-chat-golden.c tests/tokenizer/tok-test.h
tests_tokenizer_test_chat_golden_CFLAGS = $(TOK_TEST_CFLAGS)
tests_tokenizer_test_chat_golden_LDADD = $(TOK_TEST_LIBS)
tests_tokenizer_test_chat_parse_SOURCES = tests/tokenizer/test-chat-parse.c tests/tokenizer/tok-test.h
tests_tokenizer_test_chat_parse_CFLAGS = $(TOK_TEST_CFLAGS)
tests_tokenizer_test_chat_parse_LDADD = $(TOK_TEST_LIBS)
tests_tokenizer_tok_bench_SOURCES = tests/tokenizer/tok-bench.c
tests_tokenizer_tok_bench_CFLAGS = $(TOK_TEST_CFLAGS) -O2
tests_tokenizer_tok_bench_LDADD = $(TOK_TEST_LIBS)

# fuzz targets: replayed over their seed corpora by fuzz-replay.sh (standalone driver);
# real libFuzzer binaries with --enable-fuzzers (clang)
tok_fuzz_replay = tests/fuzz/fuzz-tok-load-replay tests/fuzz/fuzz-tok-encode-replay tests/fuzz/fuzz-tok-chat-replay
check_PROGRAMS += $(tok_fuzz_replay)
tests_fuzz_fuzz_tok_load_replay_SOURCES = tests/fuzz/fuzz-tok-load.c tests/fuzz/standalone.c
tests_fuzz_fuzz_tok_load_replay_CFLAGS = $(TOK_TEST_CFLAGS)
tests_fuzz_fuzz_tok_load_replay_LDADD = $(TOK_TEST_LIBS)
tests_fuzz_fuzz_tok_encode_replay_SOURCES = tests/fuzz/fuzz-tok-encode.c tests/fuzz/standalone.c
tests_fuzz_fuzz_tok_encode_replay_CFLAGS = $(TOK_TEST_CFLAGS)
tests_fuzz_fuzz_tok_encode_replay_LDADD = $(TOK_TEST_LIBS)
tests_fuzz_fuzz_tok_chat_replay_SOURCES = tests/fuzz/fuzz-tok-chat.c tests/fuzz/standalone.c
tests_fuzz_fuzz_tok_chat_replay_CFLAGS = $(TOK_TEST_CFLAGS)
tests_fuzz_fuzz_tok_chat_replay_LDADD = $(TOK_TEST_LIBS)
if ENABLE_FUZZERS
noinst_PROGRAMS += tests/fuzz/fuzz-tok-load tests/fuzz/fuzz-tok-encode tests/fuzz/fuzz-tok-chat
tests_fuzz_fuzz_tok_load_SOURCES = tests/fuzz/fuzz-tok-load.c
tests_fuzz_fuzz_tok_load_CFLAGS = $(TOK_TEST_CFLAGS) $(FUZZ_CFLAGS)
tests_fuzz_fuzz_tok_load_LDFLAGS = $(AM_LDFLAGS) $(FUZZ_CFLAGS)
tests_fuzz_fuzz_tok_load_LDADD = $(TOK_TEST_LIBS)
tests_fuzz_fuzz_tok_encode_SOURCES = tests/fuzz/fuzz-tok-encode.c
tests_fuzz_fuzz_tok_encode_CFLAGS = $(TOK_TEST_CFLAGS) $(FUZZ_CFLAGS)
tests_fuzz_fuzz_tok_encode_LDFLAGS = $(AM_LDFLAGS) $(FUZZ_CFLAGS)
tests_fuzz_fuzz_tok_encode_LDADD = $(TOK_TEST_LIBS)
tests_fuzz_fuzz_tok_chat_SOURCES = tests/fuzz/fuzz-tok-chat.c
tests_fuzz_fuzz_tok_chat_CFLAGS = $(TOK_TEST_CFLAGS) $(FUZZ_CFLAGS)
tests_fuzz_fuzz_tok_chat_LDFLAGS = $(AM_LDFLAGS) $(FUZZ_CFLAGS)
tests_fuzz_fuzz_tok_chat_LDADD = $(TOK_TEST_LIBS)
endif

bench_scripts += tests/tokenizer/bench.sh

EXTRA_DIST += tests/tokenizer/utf8-check.h \
	tests/tokenizer/README.md tests/tokenizer/oracle.sh tests/tokenizer/fuzz-replay.sh tests/tokenizer/bench.sh \
	tests/tokenizer/setup-hook.sh tests/tokenizer/gen-corpus.js tests/tokenizer/lines.js \
	tests/tokenizer/oracle/package.json tests/tokenizer/oracle/package-lock.json tests/tokenizer/oracle/oracle.js \
	tests/tokenizer/data/make-mini.js tests/tokenizer/data/gen-ucd16.sh tests/tokenizer/data/mini-expected.txt \
	tests/tokenizer/data/mini-isolated.json tests/tokenizer/data/mini-removed.json \
	tests/tokenizer/data/mini-removed-invert.json tests/tokenizer/data/mini-contiguous.json \
	tests/tokenizer/data/mini-mwp.json tests/tokenizer/data/mini-mwn.json tests/tokenizer/data/mini-pairs.json \
	tests/tokenizer/data/mini-ignore-merges.json \
	tests/tokenizer/chat/derive.py tests/tokenizer/chat/encode-cases.json tests/tokenizer/chat/parse-cases.json \
	tests/fuzz/corpus/tok-load tests/fuzz/corpus/tok-encode tests/fuzz/corpus/tok-chat
