#!/bin/bash
# The conformance suite on the in-process communicator: 1, 2, 3, 4 and 8 ranks (threads).
set -eu
exec "$top_builddir/tests/comm/comm-conformance" --impl local --ranks 1,2,3,4,8
