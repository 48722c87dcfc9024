# tests/man/: the manual pages format cleanly (man --warnings, lexgrog) and cover every
# installed program, library and setting; libdsv32(3)'s example is built from the page and
# run against a daemon (a few seconds together).
AM_TESTS_ENVIRONMENT += \
	dsv_man_pages='$(dist_man_MANS)'; export dsv_man_pages; \
	dsv_programs='$(bin_PROGRAMS) $(sbin_PROGRAMS)'; export dsv_programs; \
	EXEEXT='$(EXEEXT)'; export EXEEXT;
TESTS += tests/man/test-man-pages.sh tests/man/test-libdsv32-example.sh
EXTRA_DIST += tests/man/test-man-pages.sh tests/man/test-libdsv32-example.sh tests/man/extract-example.sh

check_PROGRAMS += tests/man/libdsv32-example
nodist_tests_man_libdsv32_example_SOURCES = tests/man/libdsv32-example.c
tests_man_libdsv32_example_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/client
tests_man_libdsv32_example_LDADD = libdsv32.la
CLEANFILES += tests/man/libdsv32-example.c
tests/man/libdsv32-example.c: $(top_srcdir)/man/libdsv32.3 $(top_srcdir)/tests/man/extract-example.sh
	$(AM_V_GEN)$(MKDIR_P) tests/man && \
	$(BASH_PROG) $(top_srcdir)/tests/man/extract-example.sh $(top_srcdir)/man/libdsv32.3 > $@.tmp && mv $@.tmp $@
