#!/bin/bash
# The conformance suite on the in-process communicator: 1, 2, 3, 4 and 8 ranks (threads).
# DSV32_COMM_LARGE sets the large case's size (make check-tsan makes it smaller: under
# ThreadSanitizer the big copies cost minutes and test no more of the synchronisation).
set -eu
exec "$top_builddir/tests/comm/comm-conformance" --impl local --ranks 1,2,3,4,8 ${DSV32_COMM_LARGE:+--large "$DSV32_COMM_LARGE"}
