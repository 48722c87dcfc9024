# ipc/: the shared-memory rings, the wire protocol and its msgpack codec, shared by the
# daemon and libdsv32 (a convenience library linked into both).
noinst_LTLIBRARIES += libdsv32ipc.la
libdsv32ipc_la_SOURCES = ipc/layout.h ipc/ring.h ipc/ring.c ipc/proto.h ipc/proto.c
libdsv32ipc_la_CFLAGS = $(AM_CFLAGS) -fvisibility=hidden $(MSGPACK_CFLAGS)
libdsv32ipc_la_LIBADD = $(MSGPACK_LIBS) -lm
EXTRA_DIST += ipc/PROTOCOL.md
