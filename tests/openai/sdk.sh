#!/bin/bash
# dsv32-openai as the official `openai` npm SDK sees it (sdk/sdk-check.mjs): dsv32d on the tiny
# model, the gateway on a free port with an API key; models.list, completions (greedy: the text
# `dsv32 generate` gives for the same token ids; streamed the same), chat streamed and not
# (same message and usage), the SDK's stream helper, chat logprobs (streamed the same), and errors as the SDK's typed exceptions
# (BadRequestError naming the field, AuthenticationError), a stream the SDK aborts mid-way
# (its generation cancelled in the daemon, seen in /metrics); then, with dsv32d's output scripted
# (DSV32_TEST_FORCE_TOKENS), tool calls streamed and not (sdk/sdk-tools.mjs). Skips (77) when node or the SDK is
# not installed (tests/openai/setup-hook.sh, run by .ci/setup). About 6 s (16 s beside a parallel build).
set -uo pipefail
: "${top_srcdir:?}" "${top_builddir:?}"
TMPNAME=dsv32-openai-sdk
. "$(dirname "$0")/gwlib.sh"
sdk_needs openai
serve_with_key 1
ids=$("$b/dsv32" --socket "$tmp/d.sock" generate --tokens 0,5,6,7 --max-tokens 8 --ids) || die "dsv32 generate"
"$b/dsv32" --socket "$tmp/d.sock" detokenize "$ids" > "$tmp/want" || die "dsv32 detokenize $ids"
"$node" "$sdk/sdk-check.mjs" "http://127.0.0.1:$port/v1" sk-dsv32-test "$tmp/want" || die "the openai SDK check failed"
# tool calls: dsv32d again on the same socket, its output scripted (a V3.2 answer calling two
# tools); the gateway connects per request and needs no restart
answer=$("$b/dsv32" --socket "$tmp/d.sock" tokenize < "$top_srcdir/tests/openai/tool-call-answer.txt") || die "dsv32 tokenize"
kill "$dpid"; wait "$dpid" 2>/dev/null
DSV32_TEST_FORCE_TOKENS=$answer "$b/dsv32d" --config /dev/null --model "$tmp/model" --socket "$tmp/d.sock" --threads 1 2>"$tmp/daemon.log" &
dpid=$!
wait_health
"$node" "$sdk/sdk-tools.mjs" "http://127.0.0.1:$port/v1" sk-dsv32-test || die "the openai SDK tools check failed"
kill -TERM "$gpid"
wait "$gpid" || die "dsv32-openai did not exit 0 on SIGTERM"
gpid=
echo "PASS: the openai SDK ($(sed -n 's/.*"version": "\(.*\)".*/\1/p' "$sdk/node_modules/openai/package.json")) against dsv32-openai"
