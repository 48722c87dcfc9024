# kernels/: the backend interface and the CPU reference backend.
noinst_LTLIBRARIES += libdsv32kernels.la
libdsv32kernels_la_SOURCES = \
	kernels/base.h kernels/backend.h kernels/dtype.h kernels/numerics.h kernels/fill_random.h \
	kernels/cpu/fill.c \
	kernels/cpu/cpu.h kernels/cpu/cpu_backend.c kernels/cpu/elementwise.c kernels/cpu/norm.c \
	kernels/cpu/linear.c kernels/cpu/rope.c kernels/cpu/hadamard.c kernels/cpu/kv.c \
	kernels/cpu/indexer.c kernels/cpu/mla.c kernels/cpu/moe.c kernels/cpu/pool.h kernels/cpu/pool.c \
	kernels/cpu/gemm.h kernels/cpu/gemm_generic.h kernels/cpu/gemm_isa.c kernels/cpu/gemm_portable.c \
	kernels/cpu/gemm_avx2.c kernels/cpu/gemm_avx512.c kernels/cpu/gemm_avx512bf16.c kernels/cpu/gemm_avx512bf16_tile.h \
	kernels/cpu/gemm_avx512bf16_wide.h kernels/cpu/fp8_rows.h kernels/cpu/fp8_rows.c
# -ffp-contract=off: a product and a sum are never fused behind our back, so every kernel
# path computes the same bits (gemm.h)
libdsv32kernels_la_CFLAGS = $(AM_CFLAGS) -O3 -fopenmp-simd -ffp-contract=off
libdsv32kernels_la_LIBADD = -lm

# the communicator interface (kernels/comm.h) and its in-process implementation
libdsv32kernels_la_SOURCES += kernels/comm.h kernels/comm.c kernels/comm_local.c

# the MoE combine on host memory (expert-parallel layouts)

# the Open MPI communicator (kernels/comm.h), for programs that run CPU ranks in several
# processes (mpirun); only when configure found Open MPI
if HAVE_MPI
noinst_LTLIBRARIES += libdsv32commmpi.la
libdsv32commmpi_la_SOURCES = kernels/comm_mpi.c
libdsv32commmpi_la_CFLAGS = $(AM_CFLAGS) $(MPI_CFLAGS)
# its callers link libdsv32core.la after it (comm.c, util.c)
libdsv32commmpi_la_LIBADD = $(MPI_LIBS)
endif
