# daemon/server/: the dsv32d process (settings, access policy, event loop, engine thread,
# scheduler, sampler, text adapter) over the engine core and the ipc library.
noinst_LTLIBRARIES += libdsv32server.la
libdsv32server_la_SOURCES = \
	daemon/server/settings.h daemon/server/settings.c \
	daemon/server/access.h daemon/server/access.c \
	daemon/server/sampler.h daemon/server/sampler.c \
	daemon/server/text.h daemon/server/text.c \
	daemon/server/conn.h daemon/server/conn.c \
	daemon/server/rates.h daemon/server/rates.c \
	daemon/server/reqlog.h daemon/server/reqlog.c \
	daemon/server/engine.h daemon/server/engine.c \
	daemon/server/server.h daemon/server/server.c
# DSV_WITH_TOKENIZER: text prompts, TOKENIZE/DETOKENIZE and chat through daemon/tokenizer
# (daemon/server/text.c is the only file that knows it).
libdsv32server_la_CPPFLAGS = $(AM_CPPFLAGS) -DDSV_WITH_TOKENIZER
libdsv32server_la_CFLAGS = $(AM_CFLAGS) $(MSGPACK_CFLAGS) $(SYSTEMD_CFLAGS) $(JANSSON_CFLAGS)
libdsv32server_la_LIBADD = libdsv32core.la libdsv32plugin.la libdsv32tok.la libdsv32ipc.la $(SYSTEMD_LIBS) $(MSGPACK_LIBS)

sbin_PROGRAMS += dsv32d
dist_man_MANS += man/dsv32d.8
dsv32d_SOURCES = daemon/server/main.c
dsv32d_LDADD = libdsv32server.la
