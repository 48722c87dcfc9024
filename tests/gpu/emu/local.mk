# tests/gpu/emu/: the CPU emulation of CUDA, and the CUDA backend plugin built on it from the
# very sources of kernels/cuda (launches rewritten by cu2cc.pl, then g++):
#   tests/gpu/emu/dsv32-backend-cuda.so   in every configuration, for `make check` (the GPU
#                                         tests use it when no device is present)
#   kernels/cuda/dsv32-backend-cuda.so    the same file, with ./configure --with-cuda=emulate,
#                                         so dsv32-run/dsv32d --backend cuda run through it
# It is a test double: never installed, never packaged.
EMU_HDR = \
	tests/gpu/emu/cuda_emu.h tests/gpu/emu/cuda_runtime.h tests/gpu/emu/emu_runtime.h \
	tests/gpu/emu/cuda.h tests/gpu/emu/library_types.h tests/gpu/emu/cublas_v2.h tests/gpu/emu/cublasLt.h \
	tests/gpu/emu/cub/cub.cuh
EXTRA_DIST += $(EMU_HDR) tests/gpu/emu/runtime.cc tests/gpu/emu/blas.cc tests/gpu/emu/cu2cc.pl tests/gpu/emu/README.md

EMU_PLUGIN = tests/gpu/emu/dsv32-backend-cuda.so
EMU_OBJ = \
	tests/gpu/emu/obj/backend_cuda.o tests/gpu/emu/obj/elementwise.o tests/gpu/emu/obj/norm.o \
	tests/gpu/emu/obj/linear.o tests/gpu/emu/obj/kv.o tests/gpu/emu/obj/indexer.o tests/gpu/emu/obj/mla.o \
	tests/gpu/emu/obj/moe.o tests/gpu/emu/obj/sample.o tests/gpu/emu/obj/fill.o tests/gpu/emu/obj/runtime.o tests/gpu/emu/obj/blas.o
check_SCRIPTS += $(EMU_PLUGIN)
CLEANFILES += $(EMU_PLUGIN) $(EMU_OBJ) $(EMU_OBJ:.o=.cc)

# The kernels' own flags (separate fp32 operations, as __fmul_rn/__fadd_rn promise) plus the
# sanitizers of this build: a test program built with ASan loads an ASan plugin. fmaf() inline
# where this machine has FMA (EMU_ARCH_CFLAGS, configure.ac); -ffp-contract=off keeps every
# other a * b + c two roundings.
EMU_CXXFLAGS = -std=gnu++17 -g -O2 -fPIC -fvisibility=hidden -ffp-contract=off -fno-strict-aliasing $(EMU_ARCH_CFLAGS) $(SAN_CFLAGS) \
	-Wall -Wextra -Werror -Wno-missing-field-initializers -Wno-unused-parameter -Wno-unknown-pragmas \
	-I$(top_srcdir)/tests/gpu/emu -I$(top_srcdir) -I$(top_builddir) $(CXXFLAGS)
EMU_DEPS = $(CUDA_DEPS) $(srcdir)/tests/gpu/emu/cuda_emu.h $(srcdir)/tests/gpu/emu/cuda_runtime.h \
	$(srcdir)/tests/gpu/emu/emu_runtime.h $(srcdir)/tests/gpu/emu/cuda.h $(srcdir)/tests/gpu/emu/library_types.h \
	$(srcdir)/tests/gpu/emu/cublas_v2.h $(srcdir)/tests/gpu/emu/cublasLt.h $(srcdir)/tests/gpu/emu/cub/cub.cuh \
	$(srcdir)/tests/gpu/emu/cu2cc.pl
EMU_V = $(EMU_V_@AM_V@)
EMU_V_ = $(EMU_V_@AM_DEFAULT_V@)
EMU_V_0 = @echo "  EMUCXX  " $@;
EMU_V_1 =
# cu2cc.pl IN.cu OUT.cc, then the C++ compiler
EMU_CU = $(MKDIR_P) tests/gpu/emu/obj && $(PERL) $(srcdir)/tests/gpu/emu/cu2cc.pl
EMU_CXX = $(CXX) $(EMU_CXXFLAGS) -c -o

$(EMU_PLUGIN): $(EMU_OBJ)
	$(AM_V_CXXLD)$(CXX) -shared -Wl,--no-undefined -Wl,-soname,dsv32-backend-cuda.so $(SAN_CFLAGS) -pthread -o $@ $(EMU_OBJ)

tests/gpu/emu/obj/backend_cuda.o: $(srcdir)/kernels/cuda/backend_cuda.cu $(EMU_DEPS)
	$(EMU_V)$(EMU_CU) $(srcdir)/kernels/cuda/backend_cuda.cu tests/gpu/emu/obj/backend_cuda.cc && $(EMU_CXX) $@ tests/gpu/emu/obj/backend_cuda.cc
tests/gpu/emu/obj/elementwise.o: $(srcdir)/kernels/cuda/elementwise.cu $(EMU_DEPS)
	$(EMU_V)$(EMU_CU) $(srcdir)/kernels/cuda/elementwise.cu tests/gpu/emu/obj/elementwise.cc && $(EMU_CXX) $@ tests/gpu/emu/obj/elementwise.cc
tests/gpu/emu/obj/norm.o: $(srcdir)/kernels/cuda/norm.cu $(EMU_DEPS)
	$(EMU_V)$(EMU_CU) $(srcdir)/kernels/cuda/norm.cu tests/gpu/emu/obj/norm.cc && $(EMU_CXX) $@ tests/gpu/emu/obj/norm.cc
tests/gpu/emu/obj/linear.o: $(srcdir)/kernels/cuda/linear.cu $(EMU_DEPS)
	$(EMU_V)$(EMU_CU) $(srcdir)/kernels/cuda/linear.cu tests/gpu/emu/obj/linear.cc && $(EMU_CXX) $@ tests/gpu/emu/obj/linear.cc
tests/gpu/emu/obj/kv.o: $(srcdir)/kernels/cuda/kv.cu $(EMU_DEPS)
	$(EMU_V)$(EMU_CU) $(srcdir)/kernels/cuda/kv.cu tests/gpu/emu/obj/kv.cc && $(EMU_CXX) $@ tests/gpu/emu/obj/kv.cc
tests/gpu/emu/obj/indexer.o: $(srcdir)/kernels/cuda/indexer.cu $(EMU_DEPS)
	$(EMU_V)$(EMU_CU) $(srcdir)/kernels/cuda/indexer.cu tests/gpu/emu/obj/indexer.cc && $(EMU_CXX) $@ tests/gpu/emu/obj/indexer.cc
tests/gpu/emu/obj/mla.o: $(srcdir)/kernels/cuda/mla.cu $(EMU_DEPS)
	$(EMU_V)$(EMU_CU) $(srcdir)/kernels/cuda/mla.cu tests/gpu/emu/obj/mla.cc && $(EMU_CXX) $@ tests/gpu/emu/obj/mla.cc
tests/gpu/emu/obj/moe.o: $(srcdir)/kernels/cuda/moe.cu $(EMU_DEPS)
	$(EMU_V)$(EMU_CU) $(srcdir)/kernels/cuda/moe.cu tests/gpu/emu/obj/moe.cc && $(EMU_CXX) $@ tests/gpu/emu/obj/moe.cc
tests/gpu/emu/obj/sample.o: $(srcdir)/kernels/cuda/sample.cu $(EMU_DEPS)
	$(EMU_V)$(EMU_CU) $(srcdir)/kernels/cuda/sample.cu tests/gpu/emu/obj/sample.cc && $(EMU_CXX) $@ tests/gpu/emu/obj/sample.cc
tests/gpu/emu/obj/fill.o: $(srcdir)/kernels/cuda/fill.cu $(EMU_DEPS)
	$(EMU_V)$(EMU_CU) $(srcdir)/kernels/cuda/fill.cu tests/gpu/emu/obj/fill.cc && $(EMU_CXX) $@ tests/gpu/emu/obj/fill.cc
tests/gpu/emu/obj/runtime.o: $(srcdir)/tests/gpu/emu/runtime.cc $(EMU_DEPS)
	$(EMU_V)$(MKDIR_P) tests/gpu/emu/obj && $(EMU_CXX) $@ $(srcdir)/tests/gpu/emu/runtime.cc
tests/gpu/emu/obj/blas.o: $(srcdir)/tests/gpu/emu/blas.cc $(EMU_DEPS)
	$(EMU_V)$(MKDIR_P) tests/gpu/emu/obj && $(EMU_CXX) $@ $(srcdir)/tests/gpu/emu/blas.cc

# the emulation's own test, written as CUDA and built the same way
EMU_TEST = tests/gpu/emu/test-emu-runtime
check_SCRIPTS += $(EMU_TEST)
TESTS += $(EMU_TEST)
CLEANFILES += $(EMU_TEST) tests/gpu/emu/obj/test-emu-runtime.o tests/gpu/emu/obj/test-emu-runtime.cc
EXTRA_DIST += tests/gpu/emu/test-emu-runtime.cu
tests/gpu/emu/obj/test-emu-runtime.o: $(srcdir)/tests/gpu/emu/test-emu-runtime.cu $(EMU_DEPS)
	$(EMU_V)$(EMU_CU) $(srcdir)/tests/gpu/emu/test-emu-runtime.cu tests/gpu/emu/obj/test-emu-runtime.cc && \
		$(EMU_CXX) $@ tests/gpu/emu/obj/test-emu-runtime.cc
$(EMU_TEST): tests/gpu/emu/obj/test-emu-runtime.o tests/gpu/emu/obj/runtime.o tests/gpu/emu/obj/blas.o
	$(AM_V_CXXLD)$(CXX) $(SAN_CFLAGS) -pthread -o $@ tests/gpu/emu/obj/test-emu-runtime.o tests/gpu/emu/obj/runtime.o \
		tests/gpu/emu/obj/blas.o
