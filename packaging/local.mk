# packaging/: `make deb` and `make rpm` build the distribution packages from `make dist`
# output (packaging/build.sh) into the build directory; `make check-packaging` builds both
# from a clean tree and installs, runs and purges the .debs (tests/packaging/, needs root).
# The Debian files are in packaging/debian (copied in as debian/), the RPM spec is
# packaging/rpm/dsv32d.spec, written by configure with the version.
PACKAGING_DEBIAN = \
	packaging/debian/changelog packaging/debian/control packaging/debian/copyright \
	packaging/debian/rules packaging/debian/source/format packaging/debian/not-installed \
	packaging/debian/dsv32d.install packaging/debian/dsv32d.docs packaging/debian/dsv32d.postinst \
	packaging/debian/dsv32d.prerm packaging/debian/dsv32d.postrm \
	packaging/debian/libdsv32-0.install packaging/debian/libdsv32-0.symbols \
	packaging/debian/libdsv32-dev.install packaging/debian/dsv32d-cuda.install \
	packaging/debian/dsv32d.lintian-overrides packaging/debian/libdsv32-0.lintian-overrides \
	packaging/debian/libdsv32-dev.lintian-overrides packaging/debian/dsv32d-cuda.lintian-overrides
EXTRA_DIST += packaging/build.sh $(PACKAGING_DEBIAN) packaging/rpm/dsv32d.spec.in \
	packaging/rpm/dsv32d.spec

if HAVE_CUDA
PACKAGING_CUDA = cuda
else
PACKAGING_CUDA = nocuda
endif

deb: dist-gzip
	$(BASH_PROG) $(srcdir)/packaging/build.sh deb $(distdir).tar.gz . $(PACKAGING_CUDA)
rpm: dist-gzip
	$(BASH_PROG) $(srcdir)/packaging/build.sh rpm $(distdir).tar.gz . $(PACKAGING_CUDA)
.PHONY: deb rpm
CLEANFILES += dsv32d_*.deb dsv32d-cuda_*.deb libdsv32-0_*.deb libdsv32-dev_*.deb \
	dsv32d_*.changes dsv32d_*.buildinfo dsv32d-*.rpm libdsv32-*.rpm

# `make check-packaging`: as root on Debian; it prints the time of each step (18 minutes in
# all measured on 2 cores shared with other builds, nearly all of it the two builds). Not in
# `make check`: it needs root and builds the project twice.
check-packaging: all dist-gzip
	top_builddir='$(abs_top_builddir)' top_srcdir='$(abs_top_srcdir)' \
	TARBALL='$(abs_top_builddir)/$(distdir).tar.gz' PACKAGING_CUDA=$(PACKAGING_CUDA) \
	dsv_programs='$(bin_PROGRAMS) $(sbin_PROGRAMS)' dsv_man_pages='$(dist_man_MANS)' \
	$(BASH_PROG) $(abs_top_srcdir)/tests/packaging/check-packaging.sh
.PHONY: check-packaging
EXTRA_DIST += packaging/rpm/dsv32d.rpmlintrc packaging/rpm/dsv32d-cuda.rpmlintrc tests/packaging/check-packaging.sh
