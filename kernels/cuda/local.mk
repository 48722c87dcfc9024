# kernels/cuda/: the CUDA backend plugin dsv32-backend-cuda.so (built when configure found
# nvcc: the HAVE_CUDA conditional), the backend loader that dlopens it (always built), and
# the kernel harnesses of kernels/dev/ (built by `make check` when CUDA is there).

# ---------------------------------------------------------------- the loader
# Link libdsv32plugin.la next to libdsv32core.la (or libdsv32kernels.la, which has the CPU
# backend it falls back to) into whatever opens backends by name; dlopen comes from LIBS
# (configure's AC_SEARCH_LIBS([dlopen], [dl])).
noinst_LTLIBRARIES += libdsv32plugin.la
libdsv32plugin_la_SOURCES = kernels/backend_plugin.h kernels/backend_plugin.c
libdsv32plugin_la_CPPFLAGS = $(AM_CPPFLAGS) -DDSV_PLUGIN_DIR='"$(pkglibdir)"' \
	-DDSV_PLUGIN_BUILDDIR='"$(PLUGIN_BUILDDIR)"'

# ---------------------------------------------------------------- the plugin
CUDA_PLUGIN_SRC = \
	kernels/cuda/backend_cuda.cu kernels/cuda/elementwise.cu kernels/cuda/norm.cu \
	kernels/cuda/linear.cu kernels/cuda/kv.cu kernels/cuda/indexer.cu kernels/cuda/mla.cu \
	kernels/cuda/moe.cu kernels/cuda/sample.cu kernels/cuda/fill.cu
CUDA_PLUGIN_HDR = \
	kernels/cuda/common.cuh kernels/cuda/reduce.cuh kernels/cuda/linear.cuh \
	kernels/cuda/indexer.cuh kernels/cuda/topk.cuh kernels/cuda/mla.cuh \
	kernels/cuda/elementwise.cuh kernels/cuda/norm.cuh kernels/cuda/kv.cuh kernels/cuda/quant.cuh \
	kernels/cuda/moe.cuh kernels/cuda/numerics_cu.h kernels/cuda/plan.h kernels/cuda/fill.cuh
CUDA_DEV_SRC = \
	kernels/dev/harness.cuh kernels/dev/fp8_gemm.cu kernels/dev/indexer_scores.cu \
	kernels/dev/topk.cu kernels/dev/mla_decode.cu kernels/dev/README.md
EXTRA_DIST += $(CUDA_PLUGIN_SRC) $(CUDA_PLUGIN_HDR) $(CUDA_DEV_SRC)

# sm_90a machine code (wgmma-capable Hopper) plus compute_90 PTX the driver can JIT elsewhere.
# Host code: the project's warnings as errors; device code: nvcc's own warnings as errors.
NVCC_ARCH = -gencode=arch=compute_90a,code=sm_90a -gencode=arch=compute_90,code=compute_90
NVCC_WARN = -Werror all-warnings \
	-Xcompiler -Wall,-Wextra,-Werror,-Wno-missing-field-initializers,-Wno-unused-parameter
DSV_NVCCFLAGS = -std=c++17 -O3 $(NVCC_ARCH) $(NVCC_WARN) -Xcompiler -fPIC,-fvisibility=hidden \
	-I$(top_srcdir) -I$(top_builddir) $(NVCCFLAGS)
CUDA_DEPS = \
	$(srcdir)/kernels/cuda/common.cuh $(srcdir)/kernels/cuda/reduce.cuh $(srcdir)/kernels/cuda/linear.cuh \
	$(srcdir)/kernels/cuda/indexer.cuh $(srcdir)/kernels/cuda/topk.cuh $(srcdir)/kernels/cuda/mla.cuh \
	$(srcdir)/kernels/cuda/elementwise.cuh $(srcdir)/kernels/cuda/norm.cuh $(srcdir)/kernels/cuda/kv.cuh $(srcdir)/kernels/cuda/quant.cuh \
	$(srcdir)/kernels/cuda/moe.cuh $(srcdir)/kernels/cuda/fill.cuh $(srcdir)/kernels/fill_random.h \
	$(srcdir)/kernels/cuda/numerics_cu.h $(srcdir)/kernels/cuda/plan.h $(srcdir)/kernels/backend.h \
	$(srcdir)/kernels/dtype.h $(srcdir)/kernels/numerics.h $(srcdir)/kernels/backend_plugin.h $(srcdir)/kernels/base.h
NVCC_V = $(NVCC_V_@AM_V@)
NVCC_V_ = $(NVCC_V_@AM_DEFAULT_V@)
NVCC_V_0 = @echo "  NVCC    " $@;
NVCC_V_1 =

if !HAVE_CUDA
if CUDA_EMULATE
# ./configure --with-cuda=emulate: the plugin is the CPU-emulated build (tests/gpu/emu/local.mk),
# found in this directory by the loader like the real one; never installed
noinst_DATA += kernels/cuda/dsv32-backend-cuda.so
CLEANFILES += kernels/cuda/dsv32-backend-cuda.so
kernels/cuda/dsv32-backend-cuda.so: $(EMU_PLUGIN)
	$(AM_V_GEN)$(MKDIR_P) kernels/cuda && cp $(EMU_PLUGIN) $@
endif
endif

if HAVE_CUDA
CUDA_PLUGIN_OBJ = \
	kernels/cuda/backend_cuda.o kernels/cuda/elementwise.o kernels/cuda/norm.o \
	kernels/cuda/linear.o kernels/cuda/kv.o kernels/cuda/indexer.o kernels/cuda/mla.o \
	kernels/cuda/moe.o kernels/cuda/sample.o kernels/cuda/fill.o
cudaplugindir = $(pkglibdir)
cudaplugin_DATA = kernels/cuda/dsv32-backend-cuda.so
CUDA_DEV_BIN = kernels/dev/fp8_gemm kernels/dev/indexer_scores kernels/dev/topk kernels/dev/mla_decode
check_SCRIPTS += $(CUDA_DEV_BIN)
CLEANFILES += $(CUDA_PLUGIN_OBJ) kernels/cuda/dsv32-backend-cuda.so $(CUDA_DEV_BIN) \
	kernels/dev/fp8_gemm.o kernels/dev/indexer_scores.o kernels/dev/topk.o kernels/dev/mla_decode.o

kernels/cuda/dsv32-backend-cuda.so: $(CUDA_PLUGIN_OBJ)
	$(AM_V_CCLD)$(CXX) -shared -Wl,--no-undefined -Wl,-soname,dsv32-backend-cuda.so -o $@ \
		$(CUDA_PLUGIN_OBJ) $(CUDA_LIBS)

kernels/cuda/backend_cuda.o: $(srcdir)/kernels/cuda/backend_cuda.cu $(CUDA_DEPS)
	$(NVCC_V)$(MKDIR_P) kernels/cuda && $(NVCC) $(DSV_NVCCFLAGS) -c -o $@ $(srcdir)/kernels/cuda/backend_cuda.cu
kernels/cuda/elementwise.o: $(srcdir)/kernels/cuda/elementwise.cu $(CUDA_DEPS)
	$(NVCC_V)$(MKDIR_P) kernels/cuda && $(NVCC) $(DSV_NVCCFLAGS) -c -o $@ $(srcdir)/kernels/cuda/elementwise.cu
kernels/cuda/norm.o: $(srcdir)/kernels/cuda/norm.cu $(CUDA_DEPS)
	$(NVCC_V)$(MKDIR_P) kernels/cuda && $(NVCC) $(DSV_NVCCFLAGS) -c -o $@ $(srcdir)/kernels/cuda/norm.cu
kernels/cuda/linear.o: $(srcdir)/kernels/cuda/linear.cu $(CUDA_DEPS)
	$(NVCC_V)$(MKDIR_P) kernels/cuda && $(NVCC) $(DSV_NVCCFLAGS) -c -o $@ $(srcdir)/kernels/cuda/linear.cu
kernels/cuda/kv.o: $(srcdir)/kernels/cuda/kv.cu $(CUDA_DEPS)
	$(NVCC_V)$(MKDIR_P) kernels/cuda && $(NVCC) $(DSV_NVCCFLAGS) -c -o $@ $(srcdir)/kernels/cuda/kv.cu
kernels/cuda/indexer.o: $(srcdir)/kernels/cuda/indexer.cu $(CUDA_DEPS)
	$(NVCC_V)$(MKDIR_P) kernels/cuda && $(NVCC) $(DSV_NVCCFLAGS) -c -o $@ $(srcdir)/kernels/cuda/indexer.cu
kernels/cuda/mla.o: $(srcdir)/kernels/cuda/mla.cu $(CUDA_DEPS)
	$(NVCC_V)$(MKDIR_P) kernels/cuda && $(NVCC) $(DSV_NVCCFLAGS) -c -o $@ $(srcdir)/kernels/cuda/mla.cu
kernels/cuda/moe.o: $(srcdir)/kernels/cuda/moe.cu $(CUDA_DEPS)
	$(NVCC_V)$(MKDIR_P) kernels/cuda && $(NVCC) $(DSV_NVCCFLAGS) -c -o $@ $(srcdir)/kernels/cuda/moe.cu
kernels/cuda/sample.o: $(srcdir)/kernels/cuda/sample.cu $(CUDA_DEPS)
	$(NVCC_V)$(MKDIR_P) kernels/cuda && $(NVCC) $(DSV_NVCCFLAGS) -c -o $@ $(srcdir)/kernels/cuda/sample.cu
kernels/cuda/fill.o: $(srcdir)/kernels/cuda/fill.cu $(CUDA_DEPS)
	$(NVCC_V)$(MKDIR_P) kernels/cuda && $(NVCC) $(DSV_NVCCFLAGS) -c -o $@ $(srcdir)/kernels/cuda/fill.cu

# the harnesses: standalone programs around the backend's kernels (kernels/dev/README.md);
# compiled by nvcc, linked by the C++ compiler against the shared CUDA libraries
DEV_NVCCFLAGS = -std=c++17 -O3 $(NVCC_ARCH) $(NVCC_WARN) -I$(top_srcdir) -I$(top_builddir) $(NVCCFLAGS)
DEV_DEPS = $(CUDA_DEPS) $(srcdir)/kernels/dev/harness.cuh
kernels/dev/fp8_gemm: $(srcdir)/kernels/dev/fp8_gemm.cu $(DEV_DEPS)
	$(NVCC_V)$(MKDIR_P) kernels/dev && $(NVCC) $(DEV_NVCCFLAGS) -c -o $@.o $(srcdir)/kernels/dev/fp8_gemm.cu && \
		$(CXX) -o $@ $@.o $(CUDA_LIBS)
kernels/dev/indexer_scores: $(srcdir)/kernels/dev/indexer_scores.cu $(DEV_DEPS)
	$(NVCC_V)$(MKDIR_P) kernels/dev && $(NVCC) $(DEV_NVCCFLAGS) -c -o $@.o $(srcdir)/kernels/dev/indexer_scores.cu && \
		$(CXX) -o $@ $@.o $(CUDA_LIBS)
kernels/dev/topk: $(srcdir)/kernels/dev/topk.cu $(DEV_DEPS)
	$(NVCC_V)$(MKDIR_P) kernels/dev && $(NVCC) $(DEV_NVCCFLAGS) -c -o $@.o $(srcdir)/kernels/dev/topk.cu && \
		$(CXX) -o $@ $@.o $(CUDA_LIBS)
kernels/dev/mla_decode: $(srcdir)/kernels/dev/mla_decode.cu $(DEV_DEPS)
	$(NVCC_V)$(MKDIR_P) kernels/dev && $(NVCC) $(DEV_NVCCFLAGS) -c -o $@.o $(srcdir)/kernels/dev/mla_decode.cu && \
		$(CXX) -o $@ $@.o $(CUDA_LIBS)
endif

# ---------------------------------------------------------------- NCCL
# The communicator of the plugin (kernels/cuda/comm_nccl.cu), when configure found NCCL
# (HAVE_NCCL; its library is then part of CUDA_LIBS).
EXTRA_DIST += kernels/cuda/comm_nccl.cu
CUDA_DEPS += $(srcdir)/kernels/comm.h
if HAVE_CUDA
if HAVE_NCCL
CUDA_PLUGIN_OBJ += kernels/cuda/comm_nccl.o
CLEANFILES += kernels/cuda/comm_nccl.o
kernels/cuda/comm_nccl.o: $(srcdir)/kernels/cuda/comm_nccl.cu $(CUDA_DEPS)
	$(NVCC_V)$(MKDIR_P) kernels/cuda && $(NVCC) $(DSV_NVCCFLAGS) -c -o $@ $(srcdir)/kernels/cuda/comm_nccl.cu
endif
endif
