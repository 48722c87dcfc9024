#!/bin/bash
# The IPC suite's own tests against dsv32d --backend cuda (a device, or the CPU emulation of
# CUDA built by tests/gpu/emu), their references still from dsv32-run on the CPU backend:
#   - test-daemon-session: session reuse (later turns prefill only what follows the previous
#     prompt, greedy and seeded outputs as without the session, REUSE_OUTPUT)
#   - test-daemon-generate: concurrent clients, each the tokens dsv32-run gives alone
#   - test-daemon-logprobs: batch invariance (a request's logprobs alone and among 5 others)
# The harness starts every daemon with --backend cuda (DSV32_TEST_BACKEND) and fails one whose
# log does not say it serves from cuda; an emulated backend (~50x slower than the CPU backend)
# runs 1 of the 6 conversations and 8 of the 16 clients: about 80 s here, ~8 min under ASan
# beside the rest of make check (CI's ASan stage: reuse 171 s, 8 clients 154 s, batched 135 s).
# Exit 77 when the cuda backend cannot start at all.
set -uo pipefail
: "${top_builddir:?}"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dsv32-gpu-ipc-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
export DSV32_BACKEND_PATH="${DSV32_BACKEND_PATH:-$top_builddir/kernels/cuda:$top_builddir/tests/gpu/emu}"
export DSV32_TEST_BACKEND=cuda
B=$top_builddir

"$B/dsv32-mkmodel" --preset tiny --out "$tmp/model" >/dev/null || { echo "FAIL: dsv32-mkmodel"; exit 1; }
if ! "$B/dsv32-run" --model "$tmp/model" --tokens 1,2 --generate 1 --backend cuda >/dev/null 2>"$tmp/probe.log"; then
        if grep -q "could not" "$tmp/probe.log"; then
                echo "SKIP: the cuda backend does not start: $(cat "$tmp/probe.log")"
                exit 77
        fi
        cat "$tmp/probe.log"
        echo "FAIL: dsv32-run --backend cuda"
        exit 1
fi

rc=0
run() { # program parts
        local t0=$SECONDS
        echo "=== $1 ($2) on --backend cuda"
        if DSV32_TEST_ONLY=$2 "$B/tests/ipc/$1"; then
                echo "=== $1: ok in $((SECONDS - t0)) s"
        else
                echo "FAIL: $1 ($2) on --backend cuda"
                rc=1
        fi
}
run test-daemon-session test_reuse
run test-daemon-generate test_concurrent
run test-daemon-logprobs test_batched
exit $rc
