# tests/gpu/: the CUDA backend against the CPU reference (one program per op family, on a GPU
# or else on the CPU emulation of CUDA in tests/gpu/emu), CPU checks of the CUDA index
# arithmetic and of the plugin loader, and run-device.sh for a machine with a GPU.

# ---------------------------------------------------------------- always
check_PROGRAMS += tests/gpu/test-cuda-plan tests/gpu/test-backend-plugin
tests_gpu_test_cuda_plan_SOURCES = tests/gpu/test-cuda-plan.c
tests_gpu_test_cuda_plan_LDADD = libdsv32core.la
tests_gpu_test_backend_plugin_SOURCES = tests/gpu/test-backend-plugin.c
tests_gpu_test_backend_plugin_LDADD = libdsv32plugin.la libdsv32core.la
TESTS += tests/gpu/test-cuda-plan tests/gpu/test-backend-plugin

# the kernels themselves, run on the CPU by a small emulation of CUDA (tests/gpu/emu)
check_PROGRAMS += tests/gpu/test-cuda-emu
tests_gpu_test_cuda_emu_SOURCES = tests/gpu/test-cuda-emu.cc tests/gpu/emu/cuda_emu.h tests/gpu/emu/cuda_runtime.h
tests_gpu_test_cuda_emu_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/tests/gpu/emu
tests_gpu_test_cuda_emu_CXXFLAGS = $(AM_CXXFLAGS) -std=gnu++17 -O2 -ffp-contract=off -fno-strict-aliasing $(OPENMP_CFLAGS) \
	-Wall -Wextra -Werror -Wno-missing-field-initializers -Wno-unused-parameter -Wno-unknown-pragmas
tests_gpu_test_cuda_emu_LDADD = libdsv32core.la
TESTS += tests/gpu/test-cuda-emu

# three fake plugins the loader test opens (plain shared objects, built by these rules)
FAKE_PLUGINS = tests/gpu/dsv32-backend-fake.so tests/gpu/dsv32-backend-fake2.so tests/gpu/dsv32-backend-badabi.so
check_SCRIPTS += $(FAKE_PLUGINS)
CLEANFILES += $(FAKE_PLUGINS)
FAKE_PLUGIN_BUILD = $(MKDIR_P) tests/gpu && $(CC) $(DEFS) $(DEFAULT_INCLUDES) $(AM_CPPFLAGS) $(CPPFLAGS) $(AM_CFLAGS) $(CFLAGS) \
	-fPIC -shared
FAKE_PLUGIN_DEPS = $(srcdir)/tests/gpu/fake_plugin.c $(srcdir)/kernels/backend_plugin.h $(srcdir)/kernels/backend.h
tests/gpu/dsv32-backend-fake.so: $(FAKE_PLUGIN_DEPS)
	$(AM_V_CC)$(FAKE_PLUGIN_BUILD) -o $@ $(srcdir)/tests/gpu/fake_plugin.c
tests/gpu/dsv32-backend-fake2.so: $(FAKE_PLUGIN_DEPS)
	$(AM_V_CC)$(FAKE_PLUGIN_BUILD) -DDSV_FAKE_SECOND -o $@ $(srcdir)/tests/gpu/fake_plugin.c
tests/gpu/dsv32-backend-badabi.so: $(FAKE_PLUGIN_DEPS)
	$(AM_V_CC)$(FAKE_PLUGIN_BUILD) -DDSV_FAKE_BAD_ABI -o $@ $(srcdir)/tests/gpu/fake_plugin.c

EXTRA_DIST += tests/gpu/gputest.h tests/gpu/run-device.sh tests/gpu/README.md tests/gpu/notify-listen.py tests/gpu/fake_plugin.c

# ---------------------------------------------------------------- the CUDA backend
# On a GPU when there is one, else on the CPU emulation of CUDA (tests/gpu/emu), in every
# configuration; plain C programs that open the plugin through the loader.
# The op families' programs (GPU_OP_FAMILIES) are built for focused runs
# (make check TESTS=tests/gpu/test-gpu-mla); make check runs them all at once as the
# conformance program test-gpu-ops, which also fails when an op of the table has no case.
GPU_OP_FAMILIES = \
	tests/gpu/test-gpu-elementwise tests/gpu/test-gpu-norm tests/gpu/test-gpu-linear tests/gpu/test-gpu-kv \
	tests/gpu/test-gpu-indexer tests/gpu/test-gpu-mla tests/gpu/test-gpu-moe
GPU_TESTS = \
	tests/gpu/test-gpu-backend tests/gpu/test-gpu-ops tests/gpu/test-gpu-sample tests/gpu/test-gpu-model \
	tests/gpu/test-gpu-load tests/gpu/test-gpu-graphs
check_PROGRAMS += $(GPU_TESTS) $(GPU_OP_FAMILIES)
TESTS += $(GPU_TESTS) tests/gpu/test-gpu-tools.sh tests/gpu/test-gpu-fit.sh tests/gpu/test-gpu-load-report.sh \
	tests/gpu/test-gpu-fault.sh tests/gpu/test-gpu-oom.sh tests/gpu/test-gpu-status.sh tests/gpu/test-gpu-daemon-graphs.sh \
	tests/gpu/test-gpu-ops-census.sh tests/gpu/test-gpu-preset.sh tests/gpu/test-preset-cpu.sh tests/gpu/test-gpu-ipc.sh
EXTRA_DIST += tests/gpu/test-gpu-ipc.sh tests/gpu/test-gpu-preset.sh tests/gpu/test-preset-cpu.sh tests/gpu/test-gpu-tools.sh tests/gpu/test-gpu-fit.sh tests/gpu/test-gpu-load-report.sh \
	tests/gpu/test-gpu-fault.sh tests/gpu/test-gpu-oom.sh tests/gpu/test-gpu-status.sh tests/gpu/daemon.sh \
	tests/gpu/test-gpu-daemon-graphs.sh tests/gpu/test-gpu-ops-census.sh
GPU_TEST_LIBS = libdsv32plugin.la libdsv32kernels.la
tests_gpu_test_gpu_backend_SOURCES = tests/gpu/test-gpu-backend.c tests/gpu/gputest.h
tests_gpu_test_gpu_backend_LDADD = $(GPU_TEST_LIBS)
tests_gpu_test_gpu_ops_SOURCES = tests/gpu/test-gpu-ops.c tests/gpu/gputest.h tests/gpu/test-gpu-elementwise.c \
	tests/gpu/test-gpu-norm.c tests/gpu/test-gpu-linear.c tests/gpu/test-gpu-kv.c tests/gpu/test-gpu-indexer.c \
	tests/gpu/test-gpu-mla.c tests/gpu/test-gpu-moe.c tests/gpu/test-gpu-sample.c daemon/runtime/sampler.c
tests_gpu_test_gpu_ops_CPPFLAGS = $(AM_CPPFLAGS) -DGT_CONFORMANCE
tests_gpu_test_gpu_ops_LDADD = $(GPU_TEST_LIBS)
tests_gpu_test_gpu_elementwise_SOURCES = tests/gpu/test-gpu-elementwise.c tests/gpu/gputest.h
tests_gpu_test_gpu_elementwise_LDADD = $(GPU_TEST_LIBS)
tests_gpu_test_gpu_norm_SOURCES = tests/gpu/test-gpu-norm.c tests/gpu/gputest.h
tests_gpu_test_gpu_norm_LDADD = $(GPU_TEST_LIBS)
tests_gpu_test_gpu_linear_SOURCES = tests/gpu/test-gpu-linear.c tests/gpu/gputest.h
tests_gpu_test_gpu_linear_LDADD = $(GPU_TEST_LIBS)
tests_gpu_test_gpu_kv_SOURCES = tests/gpu/test-gpu-kv.c tests/gpu/gputest.h
tests_gpu_test_gpu_kv_LDADD = $(GPU_TEST_LIBS)
tests_gpu_test_gpu_indexer_SOURCES = tests/gpu/test-gpu-indexer.c tests/gpu/gputest.h
tests_gpu_test_gpu_indexer_LDADD = $(GPU_TEST_LIBS)
tests_gpu_test_gpu_mla_SOURCES = tests/gpu/test-gpu-mla.c tests/gpu/gputest.h
tests_gpu_test_gpu_mla_LDADD = $(GPU_TEST_LIBS)
tests_gpu_test_gpu_moe_SOURCES = tests/gpu/test-gpu-moe.c tests/gpu/gputest.h
tests_gpu_test_gpu_moe_LDADD = $(GPU_TEST_LIBS)
tests_gpu_test_gpu_model_SOURCES = tests/gpu/test-gpu-model.c tests/gpu/gputest.h
tests_gpu_test_gpu_model_LDADD = libdsv32plugin.la libdsv32core.la
tests_gpu_test_gpu_graphs_SOURCES = tests/gpu/test-gpu-graphs.c tests/gpu/gputest.h
tests_gpu_test_gpu_graphs_LDADD = libdsv32plugin.la libdsv32core.la
tests_gpu_test_gpu_load_SOURCES = tests/gpu/test-gpu-load.c tests/gpu/gputest.h
tests_gpu_test_gpu_load_LDADD = libdsv32plugin.la libdsv32core.la
tests_gpu_test_gpu_sample_SOURCES = tests/gpu/test-gpu-sample.c tests/gpu/gputest.h daemon/runtime/sampler.c
tests_gpu_test_gpu_sample_CFLAGS = $(AM_CFLAGS)
tests_gpu_test_gpu_sample_LDADD = $(GPU_TEST_LIBS)
