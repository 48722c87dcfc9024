# daemon/cluster/: the multi-node bootstrap (node 0 admits the other nodes, hands out the
# group id, heartbeats) and the model fingerprint it compares; a library the daemon links
# when it serves from several hosts (with the parallel layouts), and the tests now.
noinst_LTLIBRARIES += libdsv32cluster.la
libdsv32cluster_la_SOURCES = \
	daemon/cluster/cluster.h daemon/cluster/bootstrap.c \
	daemon/cluster/wire.h daemon/cluster/wire.c \
	daemon/cluster/fingerprint.h daemon/cluster/fingerprint.c
libdsv32cluster_la_CFLAGS = $(AM_CFLAGS) $(GCRYPT_CFLAGS)
libdsv32cluster_la_LIBADD = libdsv32core.la $(GCRYPT_LIBS)
