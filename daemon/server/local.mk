# daemon/engine/: continuous batching, sessions, output, metrics over the runtime; knows no
# wire (events go to a sink the server implements).
noinst_LTLIBRARIES += libdsv32engine.la
libdsv32engine_la_SOURCES = \
	daemon/engine/engine.h daemon/engine/engine.c daemon/engine/core.h \
	daemon/engine/intake.h daemon/engine/intake.c daemon/engine/request.c \
	daemon/engine/sessions.c daemon/engine/scheduler.c daemon/engine/output.c daemon/engine/draft.c daemon/engine/prefix.c daemon/engine/snapshot.h daemon/engine/snapshot.c \
	daemon/engine/metrics.h daemon/engine/metrics.def daemon/engine/metrics.c \
	daemon/engine/text.h daemon/engine/text.c \
	daemon/engine/stop.h daemon/engine/stop.c daemon/engine/constrain.c
# DSV_WITH_TOKENIZER: text prompts, TOKENIZE/DETOKENIZE and chat through daemon/tokenizer
# (daemon/engine/text.c is the only file that knows it).
libdsv32engine_la_CPPFLAGS = $(AM_CPPFLAGS) -DDSV_WITH_TOKENIZER
libdsv32engine_la_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS) $(LIBURING_CFLAGS)
libdsv32engine_la_LIBADD = libdsv32runtime.la libdsv32tok.la libdsv32grammar.la $(LIBURING_LIBS) -lm

# daemon/server/: the dsv32d process (settings, access policy, event loop, the engine's sink)
# over the engine and the ipc library.
noinst_LTLIBRARIES += libdsv32server.la
libdsv32server_la_SOURCES = \
	daemon/server/settings.h daemon/server/settings.c \
	daemon/server/access.h daemon/server/access.c \
	daemon/server/conn.h daemon/server/conn.c \
	daemon/server/sink.h daemon/server/sink.c \
	daemon/server/rates.h daemon/server/rates.c \
	daemon/server/reqlog.h daemon/server/reqlog.c \
	daemon/server/server.h daemon/server/server.c
libdsv32server_la_CFLAGS = $(AM_CFLAGS) $(MSGPACK_CFLAGS) $(SYSTEMD_CFLAGS)
libdsv32server_la_LIBADD = libdsv32engine.la libdsv32cluster.la libdsv32ipc.la $(SYSTEMD_LIBS) $(MSGPACK_LIBS)

sbin_PROGRAMS += dsv32d
dist_man_MANS += man/dsv32d.8 man/dsv32d.conf.5
dsv32d_SOURCES = daemon/server/main.c
dsv32d_LDADD = libdsv32server.la
