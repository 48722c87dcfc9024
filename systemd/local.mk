# systemd/: the units (dsv32d.service from a template that gets the install paths,
# dsv32d.socket), the sysusers.d and tmpfiles.d entries, the drop-ins for GPU hosts (installed
# with the CUDA plugin) and several nodes (an example), and the default settings file, which
# is generated from dsv32d's settings table (dsv32d --print-default-config) so that it lists
# exactly the settings this dsv32d has.
SYSTEMD_SRC = systemd/dsv32d.service.in systemd/dsv32d.socket systemd/sysusers.conf \
	systemd/tmpfiles.conf systemd/cuda.conf systemd/multi-node.conf systemd/dsv32-openai.service.in
EXTRA_DIST += $(SYSTEMD_SRC)

systemdsystemunit_DATA = systemd/dsv32d.service systemd/dsv32d.socket systemd/dsv32-openai.service
CLEANFILES += systemd/dsv32d.service systemd/dsv32d.conf systemd/dsv32-openai.service
systemd/dsv32d.service: $(srcdir)/systemd/dsv32d.service.in Makefile
	$(AM_V_GEN)$(MKDIR_P) systemd && \
	$(SED) -e 's|@sbindir[@]|$(sbindir)|g' -e 's|@sysconfdir[@]|$(sysconfdir)|g' \
		$(srcdir)/systemd/dsv32d.service.in > $@.tmp && mv $@.tmp $@
# the HTTP gateway (dsv32-openai), with the path of the program
systemd/dsv32-openai.service: $(srcdir)/systemd/dsv32-openai.service.in Makefile
	$(AM_V_GEN)$(MKDIR_P) systemd && \
	$(SED) -e 's|@bindir[@]|$(bindir)|g' $(srcdir)/systemd/dsv32-openai.service.in > $@.tmp && mv $@.tmp $@

# the settings file, from the dsv32d just built (it reads no file to print it)
systemd/dsv32d.conf: dsv32d$(EXEEXT)
	$(AM_V_GEN)$(MKDIR_P) systemd && ./dsv32d$(EXEEXT) --print-default-config > $@.tmp && mv $@.tmp $@
noinst_DATA += systemd/dsv32d.conf
dsv32dconfdir = $(sysconfdir)/dsv32d

# sysusers.d and tmpfiles.d want <package>.conf
install-data-local: install-systemd-data
uninstall-local: uninstall-systemd-data
install-systemd-data: systemd/dsv32d.conf
	$(MKDIR_P) '$(DESTDIR)$(sysusersdir)' '$(DESTDIR)$(tmpfilesdir)' '$(DESTDIR)$(dsv32dconfdir)' \
		'$(DESTDIR)$(docdir)/examples'
	$(INSTALL_DATA) $(srcdir)/systemd/sysusers.conf '$(DESTDIR)$(sysusersdir)/dsv32d.conf'
	$(INSTALL_DATA) $(srcdir)/systemd/tmpfiles.conf '$(DESTDIR)$(tmpfilesdir)/dsv32d.conf'
	$(INSTALL_DATA) $(srcdir)/systemd/multi-node.conf '$(DESTDIR)$(docdir)/examples/multi-node.conf'
	@# an operator's settings file is never overwritten by `make install`
	@if test -e '$(DESTDIR)$(dsv32dconfdir)/dsv32d.conf'; then \
	  echo "keeping $(DESTDIR)$(dsv32dconfdir)/dsv32d.conf (the defaults are in dsv32d --print-default-config)"; \
	else \
	  echo " $(INSTALL_DATA) systemd/dsv32d.conf '$(DESTDIR)$(dsv32dconfdir)/dsv32d.conf'"; \
	  $(INSTALL_DATA) systemd/dsv32d.conf '$(DESTDIR)$(dsv32dconfdir)/dsv32d.conf'; \
	fi
uninstall-systemd-data:
	rm -f '$(DESTDIR)$(sysusersdir)/dsv32d.conf' '$(DESTDIR)$(tmpfilesdir)/dsv32d.conf' \
		'$(DESTDIR)$(docdir)/examples/multi-node.conf'
	@# only the file `make install` wrote, not one an operator changed
	@if test -f systemd/dsv32d.conf && cmp -s systemd/dsv32d.conf '$(DESTDIR)$(dsv32dconfdir)/dsv32d.conf'; then \
	  rm -f '$(DESTDIR)$(dsv32dconfdir)/dsv32d.conf'; fi
.PHONY: install-systemd-data uninstall-systemd-data

if HAVE_CUDA
# the GPU drop-in comes with the plugin (packaged together in dsv32d-cuda)
cudadropindir = $(systemdsystemunitdir)/dsv32d.service.d
cudadropin_DATA = systemd/cuda.conf
endif

# the directories `make distcheck` may write to
AM_DISTCHECK_CONFIGURE_FLAGS = \
	--with-systemdsystemunitdir='$${libdir}/systemd/system' \
	--with-sysusersdir='$${libdir}/sysusers.d' \
	--with-tmpfilesdir='$${libdir}/tmpfiles.d'
