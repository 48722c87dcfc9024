#!/bin/bash
# Structured output end to end (issue 15): dsv32d on the random-weight tiny model behind
# dsv32-openai, driven by the official `openai` SDK with ajv as the validator
# (sdk/sdk-schema.mjs: 200 random schemas, every output stops, parses and validates; same
# seed, same output; json_object; hostile schemas get a 400 naming the field and both serve
# on); then `dsv32 generate --schema` straight on the daemon: an invalid JSON file and an
# unsupported keyword and a schema 10^4 levels deep are clear errors, thinking with a schema
# is refused, and it serves on.
# Skips (77) without node, the SDK or ajv (tests/openai/setup-hook.sh, run by .ci/setup).
# About 25 s on 2 busy cores (the 200 schemas ~15 s of it).
set -uo pipefail
: "${top_srcdir:?}" "${top_builddir:?}"
TMPNAME=dsv32-openai-schema
. "$(dirname "$0")/gwlib.sh"
sdk_needs openai ajv
serve_with_key 2
"$node" "$sdk/sdk-schema.mjs" "http://127.0.0.1:$port/v1" sk-dsv32-test || die "the structured-output SDK check failed"

# the CLI, straight on the daemon
cli() { "$b/dsv32" --socket "$tmp/d.sock" "$@"; }
printf '{"type":"object",' > "$tmp/broken.json"
out=$(cli generate --schema "$tmp/broken.json" --max-tokens 8 Hi 2>&1) && die "an invalid schema was accepted: $out"
grep -q 'schema is not valid JSON' <<<"$out" || die "invalid JSON: $out"
"$PYTHON3" -c 'print("{\"type\":\"array\",\"items\":" * 10000 + "{}" + "}" * 10000)' > "$tmp/deep.json"
out=$(cli generate --schema "$tmp/deep.json" --max-tokens 8 Hi 2>&1) && die "a 10^4-deep schema was accepted: $out"
grep -q 'maximum parsing depth' <<<"$out" || die "deep: $out"
printf '{"type":"string","format":"email"}' > "$tmp/format.json"
out=$(cli generate --schema "$tmp/format.json" --max-tokens 8 Hi 2>&1) && die "format was accepted: $out"
grep -q 'unsupported keyword "format"' <<<"$out" || die "format: $out"
printf '{"type":"object","properties":{"n":{"type":"integer"},"ok":{"type":"boolean"}},"required":["n","ok"]}' > "$tmp/s.json"
out=$(printf 'hi\n' | cli chat --no-session --think --schema "$tmp/s.json" 2>&1) && die "chat --think --schema was accepted: $out"
grep -q 'do not go together' <<<"$out" || die "chat --think --schema: $out"
out=$(cli generate --schema "$tmp/s.json" --max-tokens 64 --temperature 1 --seed 3 --json Hi) || die "generate --schema: $out"
grep -q '"finish":"stop"' <<<"$out" || die "generate --schema did not stop: $out"
text=$(cli generate --schema "$tmp/s.json" --max-tokens 64 --temperature 1 --seed 3 Hi) || die "generate --schema"
python3 -c 'import json,sys; v=json.loads(sys.argv[1]); assert isinstance(v["n"], int) and isinstance(v["ok"], bool), v' "$text" ||
  die "generate --schema: $text"
out=$(printf 'hi\n' | cli chat --no-session --schema "$tmp/s.json" --max-tokens 64 --seed 1 2>&1) || die "chat --schema: $out"
python3 -c 'import json,sys; v=json.loads(sys.argv[1].strip().splitlines()[-1]); assert set(v) == {"n", "ok"}, v' "$out" ||
  die "chat --schema: $out"
# with --ignore-eos, EOS is never sampled into a top-level number: it closes at its digit limits
printf '{"type":"number"}' > "$tmp/n.json"
out=$(cli generate --schema "$tmp/n.json" --ignore-eos --max-tokens 64 --temperature 1 --seed 2 --json Hi) || die "number: $out"
grep -q '"finish":"stop"' <<<"$out" || die "number with --ignore-eos did not stop: $out"
num=$(cli generate --schema "$tmp/n.json" --ignore-eos --max-tokens 64 --temperature 1 --seed 2 Hi) || die "number"
python3 -c 'import json,sys; v=json.loads(sys.argv[1]); assert isinstance(v, (int, float)), v' "$num" || die "number: $num"
kill -0 "$dpid" || die "dsv32d exited"
echo "PASS: structured output ($text)"
