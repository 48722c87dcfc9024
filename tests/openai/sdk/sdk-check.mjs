// tests/openai/sdk/sdk-check.mjs: drives dsv32-openai with the official `openai` npm SDK (the
// client most applications use) and checks what the SDK sees. Arguments: BASE_URL API_KEY
// WANT_FILE, where WANT_FILE holds the text `dsv32 generate --tokens 0,5,6,7 --max-tokens 8`
// gives greedily. Prints one line per check; exits 1 on the first failure with its cause. The
// last check aborts a long stream mid-way and reads /metrics until the daemon runs nothing.
import OpenAI from "openai";
import { check, makeClient } from "./check.mjs";
import { readFileSync } from "node:fs";

const [baseURL, apiKey, wantFile] = process.argv.slice(2);
const want = readFileSync(wantFile, "utf8").replace(/\n$/, "");
const client = makeClient(baseURL, apiKey);

const models = await client.models.list();
const ids = models.data.map((m) => m.id);
check(ids.length === 1 && typeof ids[0] === "string", "models.list gives the one model", ids);

const c = await client.completions.create({ model: ids[0], prompt: [0, 5, 6, 7], max_tokens: 8, temperature: 0 });
check(c.choices[0].text === want && c.choices[0].finish_reason === "length",
      "completions.create: the text dsv32 generate gives", [c.choices[0], want]);
check(c.usage.prompt_tokens === 4 && c.usage.completion_tokens === 8 && c.usage.total_tokens === 12,
      "completions.create: usage", c.usage);

let text = "", finish = null;
for await (const chunk of await client.completions.create({ model: ids[0], prompt: [0, 5, 6, 7], max_tokens: 8,
                                                             temperature: 0, stream: true })) {
  text += chunk.choices[0]?.text ?? "";
  finish = chunk.choices[0]?.finish_reason ?? finish;
}
check(text === want && finish === "length", "completions.create stream: the same text", [text, finish]);

const messages = [{ role: "system", content: "Be brief." }, { role: "user", content: "Hello" }];
const r = await client.chat.completions.create({ model: ids[0], messages, max_completion_tokens: 12, temperature: 0 });
const m = r.choices[0].message;
check(r.object === "chat.completion" && m.role === "assistant" && typeof m.content === "string" &&
      ["stop", "length"].includes(r.choices[0].finish_reason) && r.usage.completion_tokens <= 12,
      "chat.completions.create", r);

let content = "", usage = null, chatFinish = null, role = null;
const stream = await client.chat.completions.create({ model: ids[0], messages, max_completion_tokens: 12, temperature: 0,
                                                      stream: true, stream_options: { include_usage: true } });
for await (const chunk of stream) {
  if (chunk.usage) usage = chunk.usage;
  const ch = chunk.choices[0];
  if (!ch) continue;
  role = ch.delta.role ?? role;
  content += ch.delta.content ?? "";
  chatFinish = ch.finish_reason ?? chatFinish;
}
check(role === "assistant" && content === m.content && chatFinish === r.choices[0].finish_reason &&
      JSON.stringify(usage) === JSON.stringify(r.usage),
      "chat.completions.create stream: the same message and usage", { role, content, chatFinish, usage });

// the SDK's own helper that accumulates a streamed message
const runner = client.chat.completions.stream({ model: ids[0], messages, max_completion_tokens: 12, temperature: 0 });
const final = await runner.finalChatCompletion();
check(final.choices[0].message.content === m.content, "chat.completions.stream().finalChatCompletion()", final);

// logprobs as the SDK types them: chat's choices[].logprobs.content[], streamed the same
const lpReq = { model: ids[0], messages, max_completion_tokens: 8, temperature: 0, logprobs: true, top_logprobs: 3 };
const lr = await client.chat.completions.create(lpReq);
const lc = lr.choices[0].logprobs?.content ?? [];
check(lc.length === lr.usage.completion_tokens && lc.length > 0 &&
      lc.every((e) => typeof e.token === "string" && e.logprob <= 0 && Array.isArray(e.bytes) &&
               e.top_logprobs.length === 3 && e.top_logprobs[0].logprob === e.logprob &&
               e.top_logprobs[1].logprob <= e.top_logprobs[0].logprob),
      "chat.completions.create with logprobs: content[] of {token, logprob, bytes, top_logprobs}", lr.choices[0]);
let lpStreamed = [];
for await (const chunk of await client.chat.completions.create({ ...lpReq, stream: true }))
  lpStreamed = lpStreamed.concat(chunk.choices[0]?.logprobs?.content ?? []);
check(JSON.stringify(lpStreamed) === JSON.stringify(lc), "chat logprobs streamed: the same entries", lpStreamed);
try {
  await client.chat.completions.create({ ...lpReq, top_logprobs: 21 });
  check(false, "top_logprobs 21 is refused", "accepted");
} catch (e) {
  check(e instanceof OpenAI.BadRequestError && e.param === "top_logprobs", "top_logprobs 21: BadRequestError naming it",
        { name: e.name, status: e.status, param: e.param });
}

// errors arrive as the SDK's typed exceptions, with the field named
try {
  await client.chat.completions.create({ model: ids[0], messages, n: 2 });
  check(false, "n=2 is refused", "accepted");
} catch (e) {
  check(e instanceof OpenAI.BadRequestError && e.status === 400 && e.param === "n", "n=2: BadRequestError naming n",
        { name: e.name, status: e.status, param: e.param, message: e.message });
}
try {
  await new OpenAI({ baseURL, apiKey: "wrong", maxRetries: 0 }).models.list();
  check(false, "a wrong API key is refused", "accepted");
} catch (e) {
  check(e instanceof OpenAI.AuthenticationError && e.status === 401, "a wrong API key: AuthenticationError",
        { name: e.name, status: e.status });
}

// a client that stops reading mid-stream (the SDK aborts its request) cancels its generation:
// the daemon's gauges in /metrics fall to nothing running, far short of the 4000 tokens asked
const metric = async (name) => {
  const text = await (await fetch(baseURL.replace(/\/v1\/?$/, "") + "/metrics")).text();
  const m = text.match(new RegExp("^" + name + " ([0-9.e+-]+)$", "m"));
  return m ? Number(m[1]) : NaN;
};
const before = await metric("dsv32_generated_tokens_total");
const long = await client.completions.create({ model: ids[0], prompt: [0, 5, 6, 7], max_tokens: 4000, ignore_eos: true,
                                               temperature: 0, stream: true });
let chunks = 0;
for await (const chunk of long) {
  if (++chunks >= 3) break;
}
long.controller.abort();
let running = NaN;
for (let i = 0; i < 100; i++) {
  running = (await metric("dsv32_requests_running")) + (await metric("dsv32_requests_waiting")) +
            (await metric("dsv32_requests_prefilling"));
  if (running === 0) break;
  await new Promise((r) => setTimeout(r, 50));
}
const generated = (await metric("dsv32_generated_tokens_total")) - before;
check(chunks === 3 && running === 0 && generated < 4000,
      "a stream the client aborts after 3 chunks: its generation is cancelled", { chunks, running, generated });
