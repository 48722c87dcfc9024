#!/bin/bash
# `make bench`: encode throughput of dsv32d's tokenizer and of Hugging Face tokenizers (npm,
# Rust) with the real DeepSeek-V3 tokenizer.json on the same ~10 MB generated corpus, in the
# same run: MB/s, tokens/s, ratio. Both single-threaded, one call per document; Hugging
# Face's encodeBatch (all cores) is shown for reference. Best of three passes each (both keep
# a cache of BPE results); dsv32d's first pass is shown too.
set -euo pipefail
: "${top_srcdir:?}" "${top_builddir:?}"
here="$top_srcdir/tests/tokenizer"
node="${NODE:-}"
[ -n "$node" ] || node=$(command -v node || true)
if [ -z "$node" ] || ! (cd "$here/oracle" && "$node" -e 'require("tokenizers")') 2>/dev/null; then
  echo "tokenizer bench skipped: node or the oracle (tests/tokenizer/setup-hook.sh) is missing"
  exit 0
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dsv32-tokbench-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
tj=$(cd "$here/oracle" && "$node" oracle.js path)
"$node" "$here/gen-corpus.js" --bytes 10000000 --seed 7 > "$tmp/corpus.txt"
ours=$("$top_builddir/tests/tokenizer/tok-bench" "$tj" "$tmp/corpus.txt")
theirs=$(cd "$here/oracle" && "$node" oracle.js bench "$tj" "$tmp/corpus.txt")
"$node" -e '
const o = JSON.parse(process.argv[1]), h = JSON.parse(process.argv[2]);
const row = (name, s, b, t) => console.log(`${name.padEnd(34)} ${(b / s / 1e6).toFixed(2).padStart(8)} MB/s ${(t / s / 1e6).toFixed(3).padStart(8)} Mtok/s`);
console.log(`corpus: ${(o.bytes / 1e6).toFixed(1)} MB in ${o.docs} documents, ${o.tokens} tokens`);
if (o.tokens !== h.tokens) console.log(`WARNING: token counts differ (ours ${o.tokens}, theirs ${h.tokens})`);
row("dsv32d (C, 1 thread)", o.seconds, o.bytes, o.tokens);
row("dsv32d, first pass (cold cache)", o.cold_seconds, o.bytes, o.tokens);
row("Hugging Face tokenizers (1 thread)", h.seconds, h.bytes, h.tokens);
row("Hugging Face encodeBatch (all cores)", h.batch_seconds, h.bytes, h.tokens);
console.log(`ratio: ${(h.seconds / o.seconds).toFixed(2)}x (ours / Hugging Face, single-threaded; target >= 1.0x)`);
console.log(`load: dsv32d ${o.load_seconds.toFixed(3)} s`);
' "$ours" "$theirs"
