# daemon/: the engine core (config, checkpoint, loader, KV cache, model) as a convenience
# library shared by the daemon, the tools and the tests; tools in daemon/tools/.
noinst_LTLIBRARIES += libdsv32core.la
libdsv32core_la_SOURCES = \
	daemon/util.h daemon/util.c daemon/rng.h \
	daemon/model_config.h daemon/model_config.c \
	daemon/weights_spec.h daemon/weights_spec.c \
	daemon/checkpoint.h daemon/checkpoint.c \
	daemon/loader.h daemon/loader.c \
	daemon/kv_cache.h daemon/kv_cache.c \
	daemon/model/model.h daemon/model/internal.h daemon/model/plan.h daemon/model/plan.c \
	daemon/model/load.c daemon/model/workspace.c daemon/model/ops.c daemon/model/attention.c \
	daemon/model/ffn.c daemon/model/dp.c daemon/model/head.c daemon/model/forward.c daemon/model/passes.c daemon/model/graphs.c daemon/model/mtp.c daemon/model/tp.c \
	daemon/model/tensor_index.h daemon/model/tensor_index.c \
	daemon/synth.h daemon/synth.c \
	daemon/preset_model.h daemon/preset_model.c
libdsv32core_la_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS) $(LIBURING_CFLAGS)
libdsv32core_la_LIBADD = libdsv32kernels.la $(JANSSON_LIBS) $(LIBURING_LIBS) -lm

# daemon/runtime/: what runs the model (backend by name, model, KV pool, sampler), shared by
# the engine of dsv32d and by dsv32-run.
noinst_LTLIBRARIES += libdsv32runtime.la
libdsv32runtime_la_SOURCES = \
	daemon/runtime/runtime.h daemon/runtime/runtime.c \
	daemon/runtime/ranks.h daemon/runtime/ranks.c \
	daemon/runtime/sampler.h daemon/runtime/sampler.c \
	daemon/runtime/speculate.h daemon/runtime/speculate.c \
	daemon/runtime/generate.h daemon/runtime/generate.c
libdsv32runtime_la_LIBADD = libdsv32core.la libdsv32plugin.la -lm

bin_PROGRAMS += dsv32-mkmodel dsv32-run
dist_man_MANS += man/dsv32-mkmodel.1 man/dsv32-run.1
dsv32_mkmodel_SOURCES = daemon/tools/mkmodel.c
dsv32_mkmodel_LDADD = libdsv32tok.la libdsv32core.la
dsv32_run_SOURCES = daemon/tools/run.c ipc/idlist.h ipc/idlist.c
dsv32_run_LDADD = libdsv32runtime.la
