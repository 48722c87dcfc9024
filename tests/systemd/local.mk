# tests/systemd/: the units and the packaged settings file as the build made them (a few
# seconds; the packages themselves are checked by `make check-packaging`, packaging/local.mk).
TESTS += tests/systemd/test-default-config.sh tests/systemd/test-units.sh
EXTRA_DIST += tests/systemd/test-default-config.sh tests/systemd/test-units.sh
# both read the generated files
check_SCRIPTS += systemd/dsv32d.service systemd/dsv32d.conf
