# client/: libdsv32 (the public client library, dsv32.h, dsv32.pc) and the dsv32 CLI.
lib_LTLIBRARIES += libdsv32.la
include_HEADERS += client/dsv32.h
dist_man_MANS += man/libdsv32.3
pkgconfig_DATA += client/dsv32.pc
libdsv32_la_SOURCES = client/dsv32.h client/libdsv32.c client/abi_v0.h client/abi_v0.c
libdsv32_la_CFLAGS = $(AM_CFLAGS) -fvisibility=hidden $(MSGPACK_CFLAGS)
libdsv32_la_LIBADD = libdsv32ipc.la $(MSGPACK_LIBS)
# current:revision:age of the library interface (libtool versioning): soname libdsv32.so.0.
# 1:0:1 added the *_sized entry points and dsv32_session_list (client/abi_v0.c keeps 0's).
libdsv32_la_LDFLAGS = $(AM_LDFLAGS) -version-info 1:0:1 -export-symbols-regex '^dsv32_' -no-undefined

bin_PROGRAMS += dsv32
dist_man_MANS += man/dsv32.1
dsv32_SOURCES = client/cli.h client/cli.c client/cli_chat.c client/cli_out.c ipc/idlist.h ipc/idlist.c
dsv32_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS)
dsv32_LDADD = libdsv32.la $(JANSSON_LIBS) -lm

# dsv32-openai: the OpenAI-compatible HTTP gateway (libmicrohttpd + jansson over libdsv32)
bin_PROGRAMS += dsv32-openai
dist_man_MANS += man/dsv32-openai.1
dsv32_openai_SOURCES = client/openai.h client/openai_main.c client/openai_http.h client/openai_http.c \
	client/openai_req.c client/openai_gen.c client/openai_metrics.c client/openai_util.c
dsv32_openai_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS) $(MHD_CFLAGS) $(AX_PTHREAD_CFLAGS)
dsv32_openai_LDADD = libdsv32.la $(JANSSON_LIBS) $(MHD_LIBS)
dsv32_openai_LDFLAGS = $(AM_LDFLAGS) $(AX_PTHREAD_CFLAGS)
