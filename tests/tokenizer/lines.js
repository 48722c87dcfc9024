// The escaped-line format of dsv32-tokenize, shared by the corpus generator and the oracle.
'use strict';

function escape(buf) {
  // Canonical form shared with dsv32-tokenize --decode: backslash and control bytes escaped,
  // valid non-ASCII UTF-8 as is, bytes that are not part of valid UTF-8 as \xHH.
  let out = '';
  let i = 0;
  const hex = (b) => '\\x' + b.toString(16).padStart(2, '0');
  while (i < buf.length) {
    const b = buf[i];
    if (b < 0x80) {
      if (b === 0x5c) out += '\\\\';
      else if (b === 0x0a) out += '\\n';
      else if (b === 0x0d) out += '\\r';
      else if (b === 0x09) out += '\\t';
      else if (b < 0x20 || b === 0x7f) out += hex(b);
      else out += String.fromCharCode(b);
      i++;
      continue;
    }
    const len = validLen(buf, i);
    if (len) {
      out += buf.slice(i, i + len).toString('utf8');
      i += len;
    } else {
      out += hex(b);
      i++;
    }
  }
  return out;
}

function validLen(b, i) {
  const c = b[i];
  let n, lo = 0x80, hi = 0xbf;
  if (c >= 0xc2 && c <= 0xdf) n = 1;
  else if (c >= 0xe0 && c <= 0xef) { n = 2; if (c === 0xe0) lo = 0xa0; if (c === 0xed) hi = 0x9f; }
  else if (c >= 0xf0 && c <= 0xf4) { n = 3; if (c === 0xf0) lo = 0x90; if (c === 0xf4) hi = 0x8f; }
  else return 0;
  for (let k = 1; k <= n; k++) {
    if (i + k >= b.length || b[i + k] < lo || b[i + k] > hi) return 0;
    lo = 0x80; hi = 0xbf;
  }
  return n + 1;
}

function unescape(line) {
  // line: Buffer without the newline; returns the Buffer it stands for.
  const out = Buffer.alloc(line.length);
  let k = 0;
  for (let i = 0; i < line.length; i++) {
    const b = line[i];
    if (b !== 0x5c) { out[k++] = b; continue; }
    const c = line[++i];
    if (c === 0x5c) out[k++] = 0x5c;
    else if (c === 0x6e) out[k++] = 0x0a;
    else if (c === 0x72) out[k++] = 0x0d;
    else if (c === 0x74) out[k++] = 0x09;
    else if (c === 0x78) { out[k++] = parseInt(line.slice(i + 1, i + 3).toString('latin1'), 16); i += 2; }
    else throw new Error('bad escape');
  }
  return out.slice(0, k);
}

function readLines(buf) {
  // Splits a Buffer on \n; a final newline does not start another line.
  const lines = [];
  let s = 0;
  for (let i = 0; i < buf.length; i++) if (buf[i] === 0x0a) { lines.push(buf.slice(s, i)); s = i + 1; }
  if (s < buf.length) lines.push(buf.slice(s));
  return lines;
}

module.exports = { escape, unescape, validLen, readLines };
