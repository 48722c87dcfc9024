#!/usr/bin/env node
// Reproducible tokenizer test corpus: one string per line, written with the escapes of
// dsv32-tokenize (\\ \n \r \t \xHH; valid non-ASCII UTF-8 as is, invalid bytes as \xHH).
//   node gen-corpus.js [--seed N] [--count N]     the oracle test's corpus (all categories)
//   node gen-corpus.js --bytes N [--seed N]        ~N bytes of mixed realistic text (bench)
// Same arguments, same bytes, on any node >= 18 (no Math.random, no locale).
'use strict';

const { escape } = require('./lines.js');

function rng(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const R = {
    f: next,
    int: (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)), // inclusive
    pick: (arr) => arr[Math.floor(next() * arr.length)],
    chance: (p) => next() < p,
  };
  return R;
}

const WORDS = (
  'the of and to in is was that for it with as his on be at by had are but from or have an they which ' +
  'one you were her all she there would their we him been has when who will more no if out so said what up ' +
  'its about into than them can only other new some could time these two may then do first any my now such ' +
  'like our over man me even most made after also did many before must through back years where much your ' +
  'way well down should because each just those people how too little state good very make world still own ' +
  'see men work long get here between both life being under never day same another know while last might us ' +
  'great old year off come since against go came right used take three tokenizer daemon inference model ' +
  'kernel attention sparse expert routing latency throughput gradient quantization benchmark Wikipedia ' +
  "naïve café résumé coöperate façade jalapeño Zürich Ångström O'Brien don't can't won't it's we're they've " +
  "I'm you'll she'd HELLO World CamelCase snake_case kebab-case e.g. i.e. etc. Mr. Dr. U.S.A. x86_64 " +
  'aarch64 GPT-4 DeepSeek-V3.2 H100 NVLink PCIe 3D COVID-19 co-operate re-enter well-known state-of-the-art'
).split(' ');

const PUNCT = ['.', ',', ';', ':', '!', '?', '...', ' -', ' —', ' –', '"', "'", '(', ')', '[', ']', '…', '!!', '?!'];

function sentence(R) {
  const n = R.int(3, 18);
  const w = [];
  for (let i = 0; i < n; i++) {
    let x = R.pick(WORDS);
    if (i === 0) x = x.charAt(0).toUpperCase() + x.slice(1);
    if (R.chance(0.08)) x = '"' + x + '"';
    if (R.chance(0.05)) x = '(' + x + ')';
    if (R.chance(0.06)) x += R.pick([',', ';', ':']);
    if (R.chance(0.04)) x = String(R.int(0, 100000));
    w.push(x);
  }
  return w.join(' ') + R.pick(['.', '.', '.', '!', '?', '...', '."', ".'", '?)']);
}

function prose(R) {
  const n = R.int(1, 6);
  const s = [];
  for (let i = 0; i < n; i++) s.push(sentence(R));
  let t = s.join(R.pick([' ', ' ', '  ', '\n', '\n\n', ' \n']));
  if (R.chance(0.2)) t = '    ' + t;
  return t;
}

const IDENTS = ['x', 'i', 'n', 'buf', 'len', 'ctx', 'self', 'result', 'tokens', 'vocab_size', 'maxLen', 'kv_cache',
  'HttpRequest', 'std', 'fmt', 'err', 'value', 'items', 'data', '_private', '__init__', 'main', 'argc', 'argv'];

function ident(R) {
  let s = R.pick(IDENTS);
  if (R.chance(0.3)) s += String(R.int(0, 99));
  return s;
}

function code(R) {
  const indent = R.pick(['    ', '  ', '\t', '        ', '\t\t']);
  const nl = R.chance(0.15) ? '\r\n' : '\n';
  const a = ident(R), b = ident(R), c = ident(R), k = R.int(0, 1000);
  const t = [
    `def ${a}(${b}, ${c}=None):${nl}${indent}"""Return ${b} + ${c}."""${nl}${indent}if ${c} is None:${nl}${indent}${indent}return ${b}${nl}${indent}return ${b} + ${c}  # sum${nl}`,
    `int ${a}(const char *${b}, size_t ${c}) {${nl}${indent}for (size_t i = 0; i < ${c}; i++)${nl}${indent}${indent}if (${b}[i] == '\\\\') return -EINVAL;${nl}${indent}return ${k};${nl}}${nl}`,
    `const ${a} = async (${b}) => {${nl}${indent}const { ${c} } = await fetch(\`/api/v1/\${${b}}?q=${k}\`);${nl}${indent}return ${c}?.map((x) => x * 2) ?? [];${nl}};`,
    `fn ${a}<'a>(${b}: &'a [u8]) -> Result<Vec<u32>, Box<dyn std::error::Error>> {${nl}${indent}let mut ${c} = Vec::with_capacity(${k});${nl}${indent}Ok(${c})${nl}}`,
    `func (s *Server) ${a}(ctx context.Context, ${b} []byte) (int, error) {${nl}${indent}if len(${b}) > ${k} {${nl}${indent}${indent}return 0, fmt.Errorf("too long: %d", len(${b}))${nl}${indent}}${nl}${indent}return len(${b}), nil${nl}}`,
    `SELECT ${a}.id, COUNT(*) AS n FROM ${b} ${a} LEFT JOIN ${c} ON ${c}.${a}_id = ${a}.id WHERE ${a}.score >= ${k} GROUP BY 1 ORDER BY n DESC;`,
    `<div class="${a}" id="${b}-${k}"><a href="https://example.com/${c}?x=1&amp;y=2">${sentence(R)}</a></div>`,
    `#!/bin/sh${nl}set -eu${nl}for f in "$@"; do${nl}${indent}[ -f "$f" ] || continue${nl}${indent}grep -c '${a}' "$f" | awk '{s+=$1} END {print s}'${nl}done`,
    `{"${a}": ${k}, "${b}": [1, 2.5, -3e-7, true, null], "${c}": {"nested": "va\\"lue", "emoji": "😀"}}`,
    `    ${a}[${k}] = ${b}->${c} << 3 | 0x${k.toString(16)}u; /* ${sentence(R)} */`,
    `#include <stdio.h>${nl}${nl}int main(void)${nl}{${nl}${indent}printf("%s\\n", "${a}");${nl}${indent}return 0;${nl}}${nl}`,
    `class ${a.charAt(0).toUpperCase() + a.slice(1)}(nn.Module):${nl}${indent}def forward(self, x: torch.Tensor) -> torch.Tensor:${nl}${indent}${indent}return F.softmax(x @ self.w.T / ${k}**0.5, dim=-1)`,
  ];
  return R.pick(t);
}

function digits(R, n) {
  let s = String(R.int(1, 9));
  for (let i = 1; i < n; i++) s += String(R.int(0, 9));
  return s;
}

function numbers(R) {
  const t = R.int(0, 13);
  switch (t) {
    case 0: return digits(R, R.int(1, 40));
    case 1: return digits(R, R.int(1, 4)) + '.' + digits(R, R.int(1, 8));
    case 2: return '-' + digits(R, R.int(1, 12)) + ' and +' + digits(R, R.int(1, 5));
    case 3: { const d = digits(R, R.int(4, 13)); return d.replace(/\B(?=(\d{3})+(?!\d))/g, ','); }
    case 4: return `${R.int(1, 9)}.${digits(R, 3)}e${R.pick(['+', '-', ''])}${R.int(0, 300)}`;
    case 5: return `0x${R.int(0, 0xffffffff).toString(16)} 0b${R.int(0, 255).toString(2)} 0o${R.int(0, 511).toString(8)}`;
    case 6: return `${R.int(1990, 2030)}-${String(R.int(1, 12)).padStart(2, '0')}-${String(R.int(1, 28)).padStart(2, '0')}T${R.int(0, 23)}:${R.int(10, 59)}:${R.int(10, 59)}Z`;
    case 7: return `+1 (${digits(R, 3)}) ${digits(R, 3)}-${digits(R, 4)}`;
    case 8: return `v${R.int(0, 20)}.${R.int(0, 99)}.${R.int(0, 999)}-rc${R.int(1, 9)}`;
    case 9: return '٠١٢٣٤٥٦٧٨٩ ०१२३४५६७८९ １２３４５ ' + digits(R, R.int(1, 7));
    case 10: return '½ ¾ ² ³ ⅓ Ⅻ ⅷ ① ⑳ ' + digits(R, 2) + '²';
    case 11: return digits(R, R.int(100, 3000));
    case 12: return `${digits(R, 2)}%, $${digits(R, 3)}.${digits(R, 2)}, €${digits(R, 4)}, ¥${digits(R, 5)}, ${digits(R, 1)}°C`;
    default: return `Chapter ${R.int(1, 99)}, page ${R.int(1, 999)}: ${digits(R, 6)}abc${digits(R, 5)}`;
  }
}

const WS = [' ', '  ', '   ', '\t', '\t\t', '\n', '\n\n', '\r\n', '\r\n\r\n', '\r', ' \n', '\n ', ' \t ',
  '\u00a0', '\u3000', '\u0085', '\u2028', '\u2029', '\u200b', '\u2009', '\u202f', '\u000b', '\u000c', '\u1680', '\u205f'];

function whitespace(R) {
  let s = '';
  const n = R.int(1, 8);
  for (let i = 0; i < n; i++) {
    const w = R.pick(WS);
    s += R.chance(0.3) ? w.repeat(R.int(2, 40)) : w;
    if (R.chance(0.6)) s += R.pick(['a', 'word', 'X', '1', '.', '中', 'é', '😀', '']);
  }
  return s;
}

const CJK = [
  '我们今天去北京的天安门广场看升旗仪式，然后吃了烤鸭。', '深度学习模型的推理需要大量的计算资源和内存带宽。',
  '明天杭州和北京的天气怎么样？', '这是一个测试句子，包含标点符号：“引号”、《书名》和（括号）。',
  '東京都の天気は晴れのち曇りでしょう。', 'わたしはにほんごをべんきょうしています。', 'カタカナのテキスト、コンピューター。',
  'ﾊﾝｶｸｶﾀｶﾅ ﾃｽﾄ', '私は昨日、友達と一緒に映画を見に行きました。', '안녕하세요, 만나서 반갑습니다.',
  '한국어 형태소 분석기는 복잡합니다.', '龥龤龣 一丁七 ぁあぃ ゠ァア ヿ', '中文English混合text测试123个',
];
const SCRIPTS = [
  'مرحبا بالعالم، كيف حالك اليوم؟', 'اللُّغَةُ العَرَبِيَّةُ جَمِيلَةٌ', 'שלום עולם, מה שלומך?',
  'नमस्ते दुनिया, आप कैसे हैं?', 'हिन्दी में क्षत्रिय और ज्ञान शब्द', 'สวัสดีครับ ยินดีต้อนรับ',
  'Привет, мир! Как дела? Ёжик в тумане.', 'Γειά σου Κόσμε, τι κάνεις;', 'Tiếng Việt có dấu: Nguyễn, đường, phở.',
  'ქართული ენა', 'Հայերեն լեզու', 'বাংলা ভাষা', 'தமிழ் மொழி', 'ಕನ್ನಡ', 'ᠮᠣᠩᠭᠣᠯ', 'ꦗꦮ', 'ܣܘܪܝܝܐ', 'ދިވެހި',
  'Ελληνικά ᾯ ῷ', 'Ṁö̈ṫöṙḧëäḋ', 'ǅungla ǈ ǋ', 'ﬁﬂﬀ ﬃ', 'Ⓐⓑⓒ 🄰🄱', '𝕳𝖊𝖑𝖑𝖔 𝓦𝓸𝓻𝓵𝓭', '𐌰𐌱𐌲 𐍈',
];
const EMOJI = ['😀', '👍🏽', '👨‍👩‍👧‍👦', '🏳️‍🌈', '🇨🇳🇺🇸🇯🇵', '1️⃣', '#️⃣', '❤️', '🧑🏿‍💻', '👩‍❤️‍💋‍👨', '🫠', '🐉',
  '☕', '✨🔥💯', '🤷‍♂️', '🏴󠁧󠁢󠁳󠁣󠁴󠁿', '©️®️™️', '⌚⏰', '🀄🃏', '🦀🐍'];

function scripts(R) {
  const t = R.int(0, 3);
  if (t === 0) return R.pick(CJK) + (R.chance(0.5) ? R.pick(CJK) : '');
  if (t === 1) return R.pick(SCRIPTS) + ' ' + R.pick(SCRIPTS);
  if (t === 2) {
    let s = '';
    for (let i = R.int(1, 6); i > 0; i--) s += R.pick(EMOJI) + (R.chance(0.4) ? ' ' : '') + (R.chance(0.3) ? R.pick(WORDS) : '');
    return s;
  }
  return R.pick(SCRIPTS) + R.pick(EMOJI) + R.pick(CJK) + sentence(R);
}

function combining(R) {
  const bases = ['e', 'a', 'o', 'n', 'A', 'Z', 'ก', 'क', '中', ' ', '1', '!'];
  let s = '';
  for (let i = R.int(1, 12); i > 0; i--) {
    s += R.pick(bases);
    for (let k = R.int(0, 6); k > 0; k--) s += String.fromCodePoint(R.int(0x300, 0x36f));
    if (R.chance(0.2)) s += String.fromCodePoint(R.pick([0x20dd, 0x20e3, 0x1ab0, 0x1dc0, 0xfe0f, 0xfe0e, 0x200d, 0x200c]));
  }
  return s;
}

const SPECIAL = ['<｜begin▁of▁sentence｜>', '<｜end▁of▁sentence｜>', '<｜▁pad▁｜>', '<｜User｜>', '<｜Assistant｜>',
  '<|EOT|>', '<｜tool▁calls▁begin｜>', '<｜tool▁call▁begin｜>', '<｜tool▁sep｜>', '<｜tool▁call▁end｜>',
  '<｜tool▁calls▁end｜>', '<｜tool▁outputs▁begin｜>', '<｜tool▁output▁begin｜>', '<｜tool▁output▁end｜>',
  '<｜tool▁outputs▁end｜>', '<｜fim▁hole｜>', '<｜fim▁begin｜>', '<｜fim▁end｜>', '<｜place▁holder▁no▁0｜>',
  '<｜place▁holder▁no▁797｜>', '<｜place▁holder▁no▁42｜>', '<think>', '</think>', '<｜DSML｜function_calls>', '｜DSML｜'];

function special(R) {
  let s = '';
  for (let i = R.int(1, 5); i > 0; i--) {
    const sp = R.pick(SPECIAL);
    const t = R.int(0, 7);
    if (t === 0) s += sp;
    else if (t === 1) s += ' ' + sp + ' ';
    else if (t === 2) s += R.pick(WORDS) + sp + R.pick(WORDS);
    else if (t === 3) s += sp.slice(0, R.int(1, sp.length - 1)); // a prefix
    else if (t === 4) s += sp + sp;
    else if (t === 5) s += '\n' + sp + '\n';
    else if (t === 6) s += sp.replace('｜', '|');
    else s += sp.slice(R.int(1, sp.length - 1)) + sp.slice(0, R.int(1, sp.length));
  }
  return s;
}

function longword(R) {
  const t = R.int(0, 7);
  const n = R.int(50, 3000);
  switch (t) {
    case 0: return R.pick(['a', 'z', 'é', '中', '!', 'ab', 'aab', 'xyz', '.-']).repeat(n);
    case 1: { let s = ''; for (let i = 0; i < n; i++) s += String.fromCharCode(97 + R.int(0, 25)); return s; }
    case 2: { let s = ''; const b = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'; for (let i = 0; i < n; i++) s += b[R.int(0, 63)]; return s + '=='; }
    case 3: return 'https://example.com/' + 'path/'.repeat(R.int(1, 30)) + '?q=' + 'x'.repeat(R.int(1, 200)) + '#frag';
    case 4: return 'Pneumonoultramicroscopicsilicovolcanoconiosis'.repeat(R.int(1, 40));
    case 5: { let s = ''; for (let i = 0; i < n; i++) s += R.int(0, 15).toString(16); return s; }
    case 6: return ' '.repeat(n) + 'x';
    default: return 'antidisestablishmentarianism' + '\u0301'.repeat(R.int(1, 300));
  }
}

function randomUnicode(R) {
  // Assigned, long-stable ranges: letters, marks, numbers, punctuation, symbols of many blocks.
  const ranges = [[0x20, 0x7e], [0xa1, 0x24f], [0x370, 0x3ff], [0x400, 0x4ff], [0x590, 0x5ff], [0x600, 0x6ff],
    [0x900, 0x97f], [0xe00, 0xe7f], [0x1100, 0x11ff], [0x1e00, 0x1eff], [0x2000, 0x206f], [0x20a0, 0x20bf],
    [0x2100, 0x214f], [0x2190, 0x23ff], [0x2500, 0x27bf], [0x3000, 0x30ff], [0x4e00, 0x9fa5], [0xac00, 0xd7a3],
    [0xff00, 0xffef], [0x1f300, 0x1f5ff], [0x1d400, 0x1d7ff]];
  let s = '';
  for (let i = R.int(1, 30); i > 0; i--) {
    const [lo, hi] = R.pick(ranges);
    s += String.fromCodePoint(R.int(lo, hi));
  }
  return s;
}

// Code points assigned in Unicode 15.0-17.0 (Hugging Face's Oniguruma has 16.0 tables, the
// system PCRE2 may have 14.0), mixed with letters, digits and spaces around them.
function newUnicode(R) {
  const ranges = [[0x1e030, 0x1e06d], [0x31350, 0x323af], [0x2ebf0, 0x2ee5d], [0x105c0, 0x105f3], [0x10d40, 0x10d8f],
    [0x16d40, 0x16d79], [0x1cc00, 0x1ceb3], [0x11f00, 0x11f59], [0x1e4d0, 0x1e4f9], [0x323b0, 0x3347f],
    [0x1fa70, 0x1faff], [0x11380, 0x113e2], [0x1c89, 0x1c8a], [0xa7c0, 0xa7dc], [0x2ffe, 0x2fff], [0x31ef, 0x31ef]];
  let s = '';
  for (let i = R.int(1, 12); i > 0; i--) {
    const [lo, hi] = R.pick(ranges);
    s += R.pick(['', ' ', 'a', '1', '.', '中']) + String.fromCodePoint(R.int(lo, hi));
  }
  return s;
}

// Invalid UTF-8 and control bytes, as raw byte arrays.
function invalid(R) {
  const frags = [[0x80], [0xbf], [0xc0, 0xaf], [0xc1, 0x81], [0xc2], [0xe2, 0x82], [0xe0, 0x80, 0x80],
    [0xed, 0xa0, 0x80], [0xed, 0xbf, 0xbf], [0xf0, 0x9f, 0x98], [0xf4, 0x90, 0x80, 0x80], [0xf5, 0x80],
    [0xf8, 0x88, 0x80, 0x80, 0x80], [0xfe], [0xff], [0xef, 0xbb, 0xbf], [0x00], [0x01, 0x1f, 0x7f],
    [0xc3, 0x28], [0xe2, 0x28, 0xa1], [0xf0, 0x28, 0x8c, 0xbc], [0xe1, 0x80], [0xf1, 0x80, 0x80]];
  const out = [];
  for (let i = R.int(1, 8); i > 0; i--) {
    if (R.chance(0.6)) out.push(...Buffer.from(R.pick(WORDS) + (R.chance(0.3) ? ' ' : '')));
    out.push(...R.pick(frags));
  }
  return Buffer.from(out);
}

function mixed(R) {
  const gens = [prose, code, numbers, whitespace, scripts, combining, special, randomUnicode];
  let s = '';
  for (let i = R.int(2, 6); i > 0; i--) s += R.pick(gens)(R) + R.pick(['', ' ', '\n', '\t']);
  return s;
}

function main() {
  const args = process.argv.slice(2);
  let seed = 1, count = 12000, bytes = 0;
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--seed') seed = Number(args[++i]);
    else if (args[i] === '--count') count = Number(args[++i]);
    else if (args[i] === '--bytes') bytes = Number(args[++i]);
    else { process.stderr.write(`gen-corpus: unknown argument ${args[i]}\n`); process.exit(2); }
  }
  const R = rng(seed);
  const lines = [];
  if (bytes > 0) {
    // Benchmark text: documents of realistic mix, weighted towards prose and code.
    const gens = [prose, prose, prose, code, code, scripts, numbers, mixed];
    let total = 0;
    while (total < bytes) {
      let doc = '';
      for (let k = R.int(3, 12); k > 0; k--) doc += R.pick(gens)(R) + '\n';
      const e = escape(Buffer.from(doc));
      lines.push(e);
      total += Buffer.byteLength(doc);
    }
  } else {
    // Fixed strings first (edge cases), then generated ones by category.
    const fixed = ['', ' ', '\n', 'a', '\u0000', 'hello world', 'Hello, World!', '  leading', 'trailing  ',
      '<｜begin▁of▁sentence｜>', '<｜User｜>hi<｜Assistant｜>', '1234567890', '\r\n\r\n', '\t\t\tx', '😀',
      'a\u0085b', 'x  \u0085\u0085y', '\ufffd', '\uffff', '\u{10ffff}', '\u{e0001}', '\u{f0000}'];
    for (const f of fixed) lines.push(escape(Buffer.from(f)));
    const gens = [prose, code, numbers, whitespace, scripts, combining, special, longword, randomUnicode, newUnicode, mixed];
    let i = 0;
    while (lines.length < count) {
      const g = gens[i % gens.length];
      i++;
      if (i % 11 === 0) { lines.push(escape(invalid(R))); continue; }
      lines.push(escape(Buffer.from(g(R))));
    }
  }
  process.stdout.write(lines.join('\n') + '\n');
}

main();
