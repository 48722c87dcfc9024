#!/usr/bin/env node
// Writes the small hand-made tokenizer.json files of test-tok-mini (one per Split behavior,
// plus lstrip/rstrip, two-pass added tokens, merges as pairs, ignore_merges) and
// mini-expected.txt: what Hugging Face tokenizers (the oracle, ../oracle) encodes for each
// test string. Run from this folder after ../setup-hook.sh:  node make-mini.js
'use strict';
const fs = require('fs');
const path = require('path');
const { Tokenizer } = require(path.join(__dirname, '../oracle/node_modules/tokenizers'));
const { escape } = require('../lines.js');

function byteChars() {
  const bs = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const cs = bs.slice();
  let n = 0;
  for (let b = 0; b < 256; b++) if (!bs.includes(b)) { bs.push(b); cs.push(256 + n++); }
  const map = {};
  bs.forEach((b, i) => { map[b] = String.fromCodePoint(cs[i]); });
  return map;
}
const BC = byteChars();
const bl = (s) => Array.from(Buffer.from(s, 'utf8')).map((b) => BC[b]).join('');

function make({ behavior = 'Isolated', invert = false, pairs = false, ignoreMerges = false, extraSplit = true }) {
  const vocab = {};
  for (let b = 0; b < 256; b++) vocab[BC[b]] = b;
  const merges = [];
  const add = (a, b) => {
    const t = a + b;
    if (!(t in vocab)) vocab[t] = Object.keys(vocab).length;
    merges.push(pairs ? [a, b] : a + ' ' + b);
  };
  add('a', 'b'); add('ab', 'c'); add('Ġ', 'a'); add('c', 'd'); add('ab', 'cd'); add('a', 'a');
  add('aa', 'aa'); add('Ġ', 'Ġ'); add('-', '-'); add('x', 'y');
  vocab[bl('abcabc')] = Object.keys(vocab).length; // reachable only with ignore_merges
  const pre = [];
  if (extraSplit) pre.push({ type: 'Split', pattern: { String: '-' }, behavior, invert });
  pre.push({ type: 'Split', pattern: { Regex: '\\s+|[0-9]{1,2}' }, behavior: 'Isolated', invert: false });
  pre.push({ type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false });
  const base = Object.keys(vocab).length;
  const at = (id, content, o) => Object.assign({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: false }, o);
  return {
    version: '1.0', truncation: null, padding: null,
    added_tokens: [
      at(base, '<s>', { special: true }),
      at(base + 1, '[X]', { lstrip: true, rstrip: true, normalized: true }),
      at(base + 2, 'XY', { normalized: true }),
      at(base + 3, 'Y', { normalized: false }),
      at(base + 4, 'abcd', { normalized: true }),
      at(base + 5, '<s>x', { special: true }),
    ],
    normalizer: { type: 'Sequence', normalizers: [] },
    pre_tokenizer: { type: 'Sequence', pretokenizers: pre },
    post_processor: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: false, byte_fallback: false, ignore_merges: ignoreMerges, vocab, merges },
  };
}

const variants = {
  'mini-isolated': {},
  'mini-removed': { behavior: 'Removed' },
  'mini-removed-invert': { behavior: 'Removed', invert: true },
  'mini-contiguous': { behavior: 'Contiguous' },
  'mini-mwp': { behavior: 'MergedWithPrevious' },
  'mini-mwn': { behavior: 'MergedWithNext' },
  'mini-pairs': { pairs: true },
  'mini-ignore-merges': { ignoreMerges: true },
};
const inputs = ['', 'abc', 'abcabc', 'a-b--c---d', '-abc-', '--', 'aaaaaaa', 'aaaaaaaaa', ' a  b   c', 'x-y-xy',
  'abcd', 'xabcdx', 'XY', 'XXYY', '<s>', '<s>x', '<s>xy', 'a [X] b', 'a   [X]   b', '[X][X]', '\t[X]\n', 'a\u3000[X]\u00a0b',
  '12345', 'ab12cd', '<s>[X]XYabcd-Y', 'é-ü', '\u0000-\u0001'];
for (const [name, opts] of Object.entries(variants))
  fs.writeFileSync(path.join(__dirname, name + ".json"), JSON.stringify(make(opts), null, 1) + "\n");
(async () => {
  const out = [];
  for (const [name] of Object.entries(variants)) {
    const tok = Tokenizer.fromFile(path.join(__dirname, name + '.json'));
    for (const s of inputs) {
      const e = await tok.encode(s, null, { addSpecialTokens: false });
      out.push(name + '\t' + escape(Buffer.from(s)) + '\t' + Array.from(e.getIds()).join(' '));
    }
  }
  fs.writeFileSync(path.join(__dirname, 'mini-expected.txt'),
    '# file<TAB>escaped input<TAB>ids from Hugging Face tokenizers 0.23.2 (make-mini.js)\n' + out.join('\n') + '\n');
})();
