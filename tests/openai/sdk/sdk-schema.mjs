// tests/openai/sdk/sdk-schema.mjs BASE_URL API_KEY: structured output through dsv32-openai and
// dsv32d on a random-weight model. 200 random schemas (objects with required and optional
// properties, arrays, enums, consts, strings, numbers, integers, booleans, nulls, type lists,
// nested up to 3 levels), sampled at temperature 1, 16 requests at a time: every answer ends
// with finish_reason "stop", parses, and validates against its schema with ajv. How "every
// output parses" is guaranteed: each schema's longest value is bounded (strings maxLength <= 6,
// arrays maxItems <= 3, numbers at most 36 bytes: grammar.h) and max_tokens is that bound in
// bytes + 1 (a token is at least one byte; + 1 for the EOS that ends a top-level number), so a
// value can never be cut short; a cut one would show as finish_reason "length" and fail here.
// Then: the same seed gives the same output (10 schemas again); the SDK's json_object; hostile
// schemas (10^4 levels deep, an unsupported keyword, false, a bad $ref) get a 400 naming
// response_format.json_schema.schema, and the gateway and dsv32d serve on.
import Ajv from "ajv";
import { check, makeClient } from "./check.mjs";

const [baseURL, apiKey] = process.argv.slice(2);
const client = makeClient(baseURL, apiKey);
const ajv = new Ajv({ strict: false, allErrors: true });
// a check that prints only when it fails (200 schemas: one line for all of them)
const must = (cond, what, got) => cond || check(false, what, got);

let state = 12345;
const rnd = (n) => {
  state = (state * 1103515245 + 12345) % 2147483648;
  return Math.floor((state / 2147483648) * n);
};
const pick = (a) => a[rnd(a.length)];
const WORDS = ["red", "green", "blue", "x", "été", "a\"b", "tab\tt", "", "long word here"];

function scalar() {
  switch (rnd(8)) {
    case 0: return { type: "string", maxLength: 1 + rnd(6) };
    case 1: return { type: "string", minLength: 1, maxLength: 1 + rnd(4) };
    case 2: return { type: "integer" };
    case 3: return { type: "number" };
    case 4: return { type: "boolean" };
    case 5: return { enum: [...new Set([pick(WORDS), pick(WORDS), rnd(100), null])] };
    case 6: return { const: pick([pick(WORDS), rnd(50), true]) };
    default: return { type: pick([["string", "null"], ["integer", "null"], ["boolean", "string"]]), maxLength: 3 };
  }
}

function schema(depth) {
  const r = depth >= 3 ? 9 : rnd(10);
  if (r < 4) {
    const n = 1 + rnd(4), properties = {}, required = [];
    for (let i = 0; i < n; i++) {
      const k = pick(["id", "name", "x", "y", "tags", "n", "é", "a b"]) + i;
      properties[k] = schema(depth + 1);
      if (rnd(2)) required.push(k);
    }
    const s = { type: "object", properties, required };
    if (rnd(2)) s.additionalProperties = false;
    return s;
  }
  if (r < 6) {
    const s = { type: "array", items: schema(depth + 1), maxItems: 1 + rnd(3) };
    if (rnd(3) === 0) s.minItems = 1;
    return s;
  }
  return scalar();
}

// An upper bound on the bytes of a value the grammar allows (compact JSON).
function maxBytes(s) {
  if (s.enum || s.const !== undefined)
    return Math.max(...(s.enum || [s.const]).map((v) => Buffer.byteLength(JSON.stringify(v)) * 2));
  const types = Array.isArray(s.type) ? s.type : [s.type];
  let m = 0;
  for (const t of types) {
    if (t === "object")
      m = Math.max(m, 2 + Object.entries(s.properties).reduce((a, [k, v]) => a + Buffer.byteLength(JSON.stringify(k)) * 6 + 2 + maxBytes(v), 0));
    else if (t === "array") m = Math.max(m, 2 + s.maxItems * (maxBytes(s.items) + 1));
    else if (t === "string") m = Math.max(m, 2 + 6 * (s.maxLength ?? 64));
    else if (t === "integer") m = Math.max(m, 16);
    else if (t === "number") m = Math.max(m, 36);
    else m = Math.max(m, 5);
  }
  return m;
}

const ask = (s, i, seed) =>
  client.chat.completions.create({
    model: "tiny",
    messages: [{ role: "user", content: `Answer ${i} as JSON.` }],
    response_format: { type: "json_schema", json_schema: { name: `s${i}`, schema: s, strict: true } },
    max_tokens: maxBytes(s) + 1,
    temperature: 1,
    seed,
  });

const t0 = Date.now();
const schemas = Array.from({ length: 200 }, () => schema(0));
const answers = new Array(schemas.length);
for (let at = 0; at < schemas.length; at += 16) {
  const batch = schemas.slice(at, at + 16).map((s, j) => ask(s, at + j, at + j));
  (await Promise.all(batch)).forEach((a, j) => (answers[at + j] = a));
}
let kinds = { object: 0, array: 0, other: 0 }, tokens = 0;
schemas.forEach((s, i) => {
  const a = answers[i], text = a.choices[0].message.content;
  must(a.choices[0].finish_reason === "stop", `schema ${i}: finish_reason stop`, { schema: s, a: a.choices[0] });
  let v;
  try {
    v = JSON.parse(text);
  } catch (e) {
    must(false, `schema ${i}: the output parses`, { schema: s, text });
  }
  const ok = ajv.validate(s, v);
  must(ok, `schema ${i}: the output validates`, { schema: s, text, errors: ajv.errors });
  kinds[s.type === "object" ? "object" : s.type === "array" ? "array" : "other"]++;
  tokens += a.usage.completion_tokens;
});
check(true, `200 schemas (${JSON.stringify(kinds)}, ${tokens} tokens, ${Date.now() - t0} ms): every output stops, parses and validates`);
// examples, for the log
for (const i of [0, 1, 2]) console.log(`  ${JSON.stringify(schemas[i])} -> ${answers[i].choices[0].message.content}`);

// the same seed, the same output
const again = await Promise.all(schemas.slice(0, 10).map((s, i) => ask(s, i, i)));
again.forEach((a, i) =>
  must(a.choices[0].message.content === answers[i].choices[0].message.content, `schema ${i}: same seed, same output`,
       [a.choices[0].message.content, answers[i].choices[0].message.content]));
check(true, "10 schemas asked again with the same seeds: the same outputs");

// json_object: any JSON object
const jo = await client.chat.completions.create({
  model: "tiny", messages: [{ role: "user", content: "An object" }], response_format: { type: "json_object" },
  max_tokens: 400, temperature: 0,
});
const jt = jo.choices[0].message.content;
if (jo.choices[0].finish_reason === "stop") {
  const v = JSON.parse(jt);
  check(v !== null && typeof v === "object" && !Array.isArray(v), "json_object: a JSON object", jt);
} else {
  check(jo.choices[0].finish_reason === "length", "json_object: cut short only by max_tokens", jo.choices[0]);
}

// hostile schemas: a 400 naming the field; the gateway and dsv32d serve on. 10^4 levels: the
// SDK cannot even serialise that (its JSON.stringify runs out of stack), so it goes as text,
// and the gateway's JSON parser refuses the body (jansson's depth limit, 2048)
const deepText = '{"type":"array","items":'.repeat(10000) + "{}" + "}".repeat(10000);
const res = await fetch(`${baseURL}/chat/completions`, {
  method: "POST",
  headers: { "Content-Type": "application/json", Authorization: `Bearer ${apiKey}` },
  body: `{"model":"tiny","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema",` +
        `"json_schema":{"name":"deep","schema":${deepText}}}}`,
});
const deepErr = await res.json();
check(res.status === 400 && /depth/.test(deepErr.error.message), "a schema 10^4 levels deep: 400", [res.status, deepErr]);
let deep = {};
for (let i = 0; i < 100; i++) deep = { type: "array", items: deep };
const hostile = [
  [deep, /deeper than 64 levels/],
  [{ type: "string", pattern: "^a" }, /unsupported keyword "pattern"/],
  [{ type: "object", properties: { a: { type: "number", minimum: 0 } } }, /properties\/a.*"minimum"/],
  [false, /allows no value/],
  [{ $ref: "#/$defs/none" }, /names no definition/],
];
for (const [s, want] of hostile) {
  let err = null;
  try {
    await ask(s, 0, 1);
  } catch (e) {
    err = e;
  }
  check(err && err.status === 400 && err.param === "response_format.json_schema.schema" && want.test(err.message),
        `hostile schema refused: ${want}`, err && { status: err.status, param: err.param, message: err.message });
}
const after = await ask(schemas[0], 0, 0);
check(after.choices[0].message.content === answers[0].choices[0].message.content, "serves on after the refusals",
      after.choices[0].message.content);
