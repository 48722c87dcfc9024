#!/bin/bash
# The programs agree with each other and say what is wrong in words a user can act on:
# every one has --version and refuses an unknown option with its own name (no build-tree
# path); every one takes --model DIR; token-id lists take commas and/or spaces; dsv32d
# explains a --model that points at config.json, a model_type that is not DeepSeek-V3.2
# and a broken tokenizer.json (and refuses to start on the last two); the README points
# only inside the tree. About 3 s.
set -uo pipefail
: "${top_builddir:?}" "${top_srcdir:?}"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dsv32-programs-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
b=$top_builddir

version=$("$b/dsv32" --version | sed -n 's/^dsv32 \([^ ]*\).*/\1/p')
[ -n "$version" ] || fail "dsv32 --version: no version"
for p in dsv32 dsv32d dsv32-run dsv32-mkmodel dsv32-inspect dsv32-tokenize dsv32-openai; do
  out=$("$b/$p" --version 2>&1); rc=$?
  [ $rc -eq 0 ] && [[ "$out" == "$p $version"* ]] || fail "$p --version: exit $rc, '$out'"
  err=$("$b/$p" --no-such-option 2>&1 >/dev/null); rc=$?
  [ $rc -eq 2 ] || fail "$p --no-such-option: exit $rc, want 2"
  [[ "$err" == "$p:"* || "$err" == "$p "* ]] || fail "$p: the error does not start with the program's name: '$err'"
  case "$err" in *.libs*|*lt-*|*/*) fail "$p: the error shows a path: '$err'";; esac
done

"$b/dsv32-mkmodel" --preset tiny --model "$tmp/m" >/dev/null || fail "dsv32-mkmodel --model"
[ -f "$tmp/m/config.json" ] || fail "dsv32-mkmodel --model DIR wrote no config.json"
grep -q "3 layers" <<< "$("$b/dsv32-inspect" --model "$tmp/m")" || fail "dsv32-inspect --model"
bos=$(echo hello | "$b/dsv32-tokenize" --model "$tmp/m" --bos | cut -d' ' -f1)
[ "$bos" = 0 ] || fail "dsv32-tokenize --model DIR --bos: first id '$bos', want BOS 0"
a=$("$b/dsv32-run" --model "$tmp/m" --threads 1 --tokens "0, 5 6,7" --generate 2) || fail "dsv32-run with '0, 5 6,7'"
c=$("$b/dsv32-run" --model "$tmp/m" --threads 1 --tokens 0,5,6,7 --generate 2)
[ -n "$a" ] && [ "$a" = "$c" ] || fail "token-id spellings differ: '$a' vs '$c'"
# a 66-token prompt in passes of 16 tokens (--pass-tokens): the same logits, byte for byte,
# as in one pass, and --stats says how it was cut
P=$(seq -s, 1 66)
"$b/dsv32-run" --model "$tmp/m" --threads 1 --tokens "$P" --generate 1 --pass-tokens 65536 \
  --dump-logits "$tmp/whole.f32" >/dev/null 2>&1 || fail "dsv32-run --pass-tokens 65536"
st=$("$b/dsv32-run" --model "$tmp/m" --threads 1 --tokens "$P" --generate 1 --pass-tokens 16 --stats \
  --dump-logits "$tmp/cut.f32" 2>&1 >/dev/null) || fail "dsv32-run --pass-tokens 16"
cmp -s "$tmp/whole.f32" "$tmp/cut.f32" || fail "66 tokens in passes of 16: logits differ from one pass"
[[ "$st" == *"at most 16 tokens in one (cap 16)"* ]] || fail "--stats has no passes line of cap 16: '$st'"

err=$("$b/dsv32d" --model "$tmp/m/config.json" --config /dev/null 2>&1); rc=$?
[ $rc -eq 1 ] && [[ "$err" == *"--model $tmp/m"* ]] && [[ "$err" != *"--out $tmp/m/config.json"* ]] ||
  fail "dsv32d --model DIR/config.json: exit $rc, '$err'"

cp -r "$tmp/m" "$tmp/llama"
sed -i 's/"model_type": "deepseek_v32"/"model_type": "llama"/' "$tmp/llama/config.json"
err=$(timeout 30 "$b/dsv32d" --model "$tmp/llama" --socket "$tmp/l.sock" --config /dev/null --threads 1 2>&1); rc=$?
[ $rc -eq 1 ] && [[ "$err" == *'model_type "llama" is not DeepSeek-V3.2'* ]] || fail "model_type llama: exit $rc, '$err'"
[ "$(grep -o "$tmp/llama/config.json" <<<"$err" | wc -l)" -le 1 ] || fail "config.json named twice: '$err'"

cp -r "$tmp/m" "$tmp/badtok"
echo '{"model": {' > "$tmp/badtok/tokenizer.json"
err=$(timeout 30 "$b/dsv32d" --model "$tmp/badtok" --socket "$tmp/t.sock" --config /dev/null --threads 1 2>&1); rc=$?
[ $rc -eq 1 ] && [[ "$err" == *"tokenizer.json cannot be used"* ]] && [[ "$err" == *"move it away"* ]] ||
  fail "a broken tokenizer.json: exit $rc, '$err'"

# sampling options out of range: usage errors (exit 2) that say the range, before any connection
badopt() { # WANT-IN-MESSAGE PROGRAM ARGS...
  local want=$1; shift
  err=$("$@" 2>&1); rc=$?
  [ $rc -eq 2 ] && [[ "$err" == *"$want"* ]] || fail "$*: exit $rc, '$err'"
}
badopt "(0, 10]" "$b/dsv32" generate --socket "$tmp/none" --repetition-penalty 11 --tokens 1
badopt "[-2, 2]" "$b/dsv32" generate --socket "$tmp/none" --frequency-penalty 3 --tokens 1
badopt "[-2, 2]" "$b/dsv32" generate --socket "$tmp/none" --presence-penalty -2.5 --tokens 1
badopt "ID:BIAS" "$b/dsv32" generate --socket "$tmp/none" --logit-bias 5 --tokens 1
badopt "ID:BIAS" "$b/dsv32" generate --socket "$tmp/none" --logit-bias 5:101 --tokens 1
badopt "0..20" "$b/dsv32" generate --socket "$tmp/none" --logprobs 21 --tokens 1
badopt "0..20" "$b/dsv32" generate --socket "$tmp/none" --logprobs x --tokens 1
badopt "1..64 bytes" "$b/dsv32" generate --socket "$tmp/none" --stop-string "" --tokens 1
badopt "at most 8" "$b/dsv32" generate --socket "$tmp/none" --stop-string a --stop-string b --stop-string c --stop-string d \
  --stop-string e --stop-string f --stop-string g --stop-string h --stop-string i --tokens 1
badopt "[-100, 100]" "$b/dsv32-run" --model "$tmp/m" --logit-bias 5:-101
badopt "[-2, 2]" "$b/dsv32-run" --model "$tmp/m" --presence-penalty 9
badopt "16..65536" "$b/dsv32-run" --model "$tmp/m" --pass-tokens 8

grep -n '](\.\./\|`\.\./' "$top_srcdir/README.md" && fail "README.md points outside the tree"

[ $fails -eq 0 ] && echo "PASS: --version, option errors, --model, id lists, dsv32d's model messages" || exit 1
