# daemon/cluster/: the multi-node bootstrap (node 0 admits the other nodes, hands out the
# group id, heartbeats), the model fingerprint it compares, and the group of hosts dsv32d
# --nodes N forms on it (nodes.c: the Open MPI communicators).
noinst_LTLIBRARIES += libdsv32cluster.la
libdsv32cluster_la_SOURCES = \
	daemon/cluster/cluster.h daemon/cluster/bootstrap.c \
	daemon/cluster/wire.h daemon/cluster/wire.c \
	daemon/cluster/fingerprint.h daemon/cluster/fingerprint.c \
	daemon/cluster/nodes.h daemon/cluster/nodes.c
libdsv32cluster_la_CFLAGS = $(AM_CFLAGS) $(GCRYPT_CFLAGS)
if HAVE_MPI
# nodes.c: the nodes compute over the Open MPI communicator
libdsv32cluster_la_LIBADD = libdsv32commmpi.la libdsv32core.la $(GCRYPT_LIBS)
else
libdsv32cluster_la_LIBADD = libdsv32core.la $(GCRYPT_LIBS)
endif
