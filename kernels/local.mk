# kernels/: the backend interface and the CPU reference backend.
noinst_LTLIBRARIES += libdsv32kernels.la
libdsv32kernels_la_SOURCES = \
	kernels/base.h kernels/backend.h kernels/dtype.h kernels/numerics.h \
	kernels/cpu/cpu.h kernels/cpu/cpu_backend.c kernels/cpu/elementwise.c kernels/cpu/norm.c \
	kernels/cpu/linear.c kernels/cpu/rope.c kernels/cpu/hadamard.c kernels/cpu/kv.c \
	kernels/cpu/indexer.c kernels/cpu/mla.c kernels/cpu/moe.c
libdsv32kernels_la_CFLAGS = $(AM_CFLAGS) -O3 -fopenmp-simd
libdsv32kernels_la_LIBADD = -lm
