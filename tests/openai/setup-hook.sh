#!/bin/sh
# Installs the official `openai` npm SDK and the ajv JSON-schema validator (test-only, pinned
# in sdk/package-lock.json) into tests/openai/sdk/node_modules for tests/openai/sdk.sh and
# test-openai-schema.sh. Run by .ci/setup from the repository
# root; POSIX sh; idempotent: does nothing when the pinned version is already there.
set -eu
dir=$(cd "$(dirname "$0")" && pwd)/sdk
stamp="$dir/node_modules/.dsv32d-installed"

if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
  echo "openai SDK: node/npm not found; tests/openai/sdk.sh will be skipped" >&2
  exit 0
fi
if [ -f "$stamp" ] && cmp -s "$dir/package-lock.json" "$stamp"; then
  echo "openai SDK: already installed"
  exit 0
fi
echo "openai SDK: npm ci in $dir"
(cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
(cd "$dir" && node --input-type=module -e 'import OpenAI from "openai"; new OpenAI({ apiKey: "x" })')
cp "$dir/package-lock.json" "$stamp"
echo "openai SDK: installed"
