# tests/: unit tests (one program each), the golden-model test, fuzz replays, benchmarks.
TEST_CORE_LIBS = libdsv32core.la
EXTRA_DIST += tests/check.h tests/unit/testutil.h tests/unit/modelutil.h

check_PROGRAMS += tests/unit/test-model-invariants
tests_unit_test_model_invariants_SOURCES = tests/unit/test-model-invariants.c
tests_unit_test_model_invariants_LDADD = $(TEST_CORE_LIBS)
TESTS += tests/unit/test-model-invariants

check_PROGRAMS += tests/unit/test-model-passes
tests_unit_test_model_passes_SOURCES = tests/unit/test-model-passes.c
tests_unit_test_model_passes_LDADD = $(TEST_CORE_LIBS)
TESTS += tests/unit/test-model-passes

clean-local: clean-test-tmp
clean-test-tmp:
	-rm -rf tests/tmp
.PHONY: clean-test-tmp

# the C side of the golden-model test (tests/ref/ has the numpy side)
check_PROGRAMS += tests/unit/golden-dump
tests_unit_golden_dump_SOURCES = tests/unit/golden-dump.c
tests_unit_golden_dump_LDADD = $(TEST_CORE_LIBS)

check_PROGRAMS += tests/unit/test-numerics
tests_unit_test_numerics_SOURCES = tests/unit/test-numerics.c
tests_unit_test_numerics_LDADD = $(TEST_CORE_LIBS)
TESTS += tests/unit/test-numerics

check_PROGRAMS += tests/unit/test-ops
tests_unit_test_ops_SOURCES = tests/unit/test-ops.c
tests_unit_test_ops_LDADD = $(TEST_CORE_LIBS)
TESTS += tests/unit/test-ops

check_PROGRAMS += tests/unit/test-cpu-kernels
tests_unit_test_cpu_kernels_SOURCES = tests/unit/test-cpu-kernels.c
tests_unit_test_cpu_kernels_LDADD = $(TEST_CORE_LIBS)
TESTS += tests/unit/test-cpu-kernels

# an idle daemon (CPU backend, 2 threads) uses no CPU
TESTS += tests/daemon-idle-cpu.sh
EXTRA_DIST += tests/daemon-idle-cpu.sh tests/daemon-lib.sh

# the model invariants and the golden test on every other kernel path this CPU runs
TESTS += tests/cpu-paths.sh
EXTRA_DIST += tests/cpu-paths.sh

check_PROGRAMS += tests/unit/test-checkpoint
tests_unit_test_checkpoint_SOURCES = tests/unit/test-checkpoint.c
tests_unit_test_checkpoint_LDADD = $(TEST_CORE_LIBS)
TESTS += tests/unit/test-checkpoint

check_PROGRAMS += tests/unit/test-batch-plan
tests_unit_test_batch_plan_SOURCES = tests/unit/test-batch-plan.c
tests_unit_test_batch_plan_LDADD = libdsv32core.la
TESTS += tests/unit/test-batch-plan
check_PROGRAMS += tests/unit/test-sampler
tests_unit_test_sampler_SOURCES = tests/unit/test-sampler.c
tests_unit_test_sampler_LDADD = libdsv32runtime.la
TESTS += tests/unit/test-sampler
check_PROGRAMS += tests/unit/test-speculate
tests_unit_test_speculate_SOURCES = tests/unit/test-speculate.c
tests_unit_test_speculate_LDADD = libdsv32runtime.la
TESTS += tests/unit/test-speculate
check_PROGRAMS += tests/unit/test-mtp-generate
tests_unit_test_mtp_generate_SOURCES = tests/unit/test-mtp-generate.c
tests_unit_test_mtp_generate_LDADD = libdsv32runtime.la
TESTS += tests/unit/test-mtp-generate
check_PROGRAMS += tests/unit/test-engine-core
tests_unit_test_engine_core_SOURCES = tests/unit/test-engine-core.c
tests_unit_test_engine_core_LDADD = libdsv32engine.la
TESTS += tests/unit/test-engine-core
check_PROGRAMS += tests/unit/test-stop
tests_unit_test_stop_SOURCES = tests/unit/test-stop.c
tests_unit_test_stop_LDADD = libdsv32engine.la
TESTS += tests/unit/test-stop
check_PROGRAMS += tests/unit/test-tensor-index
tests_unit_test_tensor_index_SOURCES = tests/unit/test-tensor-index.c
tests_unit_test_tensor_index_LDADD = libdsv32core.la
TESTS += tests/unit/test-tensor-index
check_PROGRAMS += tests/unit/test-kv-cache
tests_unit_test_kv_cache_SOURCES = tests/unit/test-kv-cache.c
tests_unit_test_kv_cache_LDADD = $(TEST_CORE_LIBS)
TESTS += tests/unit/test-kv-cache

# benchmarks (make bench), not tests
check_PROGRAMS += tests/bench/bench-gateway
tests_bench_bench_gateway_SOURCES = tests/bench/bench-gateway.c
tests_bench_bench_gateway_LDADD = libdsv32.la
bench_scripts += tests/bench/bench-gateway.sh
EXTRA_DIST += tests/bench/bench-gateway.sh
check_PROGRAMS += tests/bench/bench-core
tests_bench_bench_core_SOURCES = tests/bench/bench-core.c
tests_bench_bench_core_LDADD = libdsv32inspect.la -lm
bench_scripts += tests/bench/bench-core.sh tests/bench/bench-mtp.sh tests/bench/bench-schema.sh
check_PROGRAMS += tests/bench/bench-decode
tests_bench_bench_decode_SOURCES = tests/bench/bench-decode.c tests/bench/bench-runtime.h
tests_bench_bench_decode_LDADD = libdsv32runtime.la libdsv32inspect.la -lm
TESTS += tests/bench/bench-decode.sh
EXTRA_DIST += tests/bench/bench-decode.sh
check_PROGRAMS += tests/bench/bench-prefill
tests_bench_bench_prefill_SOURCES = tests/bench/bench-prefill.c tests/bench/bench-runtime.h
tests_bench_bench_prefill_LDADD = libdsv32runtime.la libdsv32inspect.la -lm
TESTS += tests/bench/bench-prefill.sh
EXTRA_DIST += tests/bench/bench-prefill.sh
check_PROGRAMS += tests/bench/bench-load
tests_bench_bench_load_SOURCES = tests/bench/bench-load.c tests/bench/bench-runtime.h
tests_bench_bench_load_LDADD = libdsv32runtime.la -lm
TESTS += tests/bench/bench-load.sh
EXTRA_DIST += tests/bench/bench-load.sh
check_PROGRAMS += tests/bench/bench-gemv
tests_bench_bench_gemv_SOURCES = tests/bench/bench-gemv.c
tests_bench_bench_gemv_LDADD = libdsv32inspect.la -lm
TESTS += tests/bench/bench-gemv.sh
EXTRA_DIST += tests/bench/bench-gemv.sh
check_PROGRAMS += tests/bench/bench-mla-decode
tests_bench_bench_mla_decode_SOURCES = tests/bench/bench-mla-decode.c
tests_bench_bench_mla_decode_LDADD = libdsv32inspect.la -lm
TESTS += tests/bench/bench-mla-decode.sh
bench_scripts += tests/bench/bench-mla-decode.sh
EXTRA_DIST += tests/bench/bench-mla-decode.sh
EXTRA_DIST += tests/bench/bench-core.sh tests/bench/bench-mtp.sh tests/bench/bench-schema.sh

# dsv32-run's speculative decoding (--mtp) from the command line
TESTS += tests/mtp-run.sh
EXTRA_DIST += tests/mtp-run.sh tests/expect-fail.sh

# whole-model golden test against the numpy reference
TESTS += tests/golden.sh
EXTRA_DIST += tests/golden.sh tests/ref/ref_model.py tests/ref/compare.py tests/ref/README.md

# fuzz targets: replayed over their seed corpora in `make check` (standalone driver); real
# libFuzzer binaries with --enable-fuzzers (clang)
FUZZ_CORE_TARGETS = fuzz-safetensors fuzz-config
check_PROGRAMS += tests/fuzz/fuzz-safetensors-replay tests/fuzz/fuzz-config-replay
tests_fuzz_fuzz_safetensors_replay_SOURCES = tests/fuzz/fuzz-safetensors.c tests/fuzz/standalone.c
tests_fuzz_fuzz_safetensors_replay_LDADD = $(TEST_CORE_LIBS)
tests_fuzz_fuzz_config_replay_SOURCES = tests/fuzz/fuzz-config.c tests/fuzz/standalone.c
tests_fuzz_fuzz_config_replay_LDADD = $(TEST_CORE_LIBS)
TESTS += tests/fuzz/replay-core.sh
EXTRA_DIST += tests/fuzz/replay-core.sh tests/fuzz/corpus/safetensors tests/fuzz/corpus/config
if ENABLE_FUZZERS
noinst_PROGRAMS += tests/fuzz/fuzz-safetensors tests/fuzz/fuzz-config
tests_fuzz_fuzz_safetensors_SOURCES = tests/fuzz/fuzz-safetensors.c
tests_fuzz_fuzz_safetensors_CFLAGS = $(AM_CFLAGS) $(FUZZ_CFLAGS)
tests_fuzz_fuzz_safetensors_LDFLAGS = $(AM_LDFLAGS) $(FUZZ_CFLAGS)
tests_fuzz_fuzz_safetensors_LDADD = $(TEST_CORE_LIBS)
tests_fuzz_fuzz_config_SOURCES = tests/fuzz/fuzz-config.c
tests_fuzz_fuzz_config_CFLAGS = $(AM_CFLAGS) $(FUZZ_CFLAGS)
tests_fuzz_fuzz_config_LDFLAGS = $(AM_LDFLAGS) $(FUZZ_CFLAGS)
tests_fuzz_fuzz_config_LDADD = $(TEST_CORE_LIBS)
endif
