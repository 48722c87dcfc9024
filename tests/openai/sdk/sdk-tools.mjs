// tests/openai/sdk/sdk-tools.mjs: tool calls through the official `openai` npm SDK against
// dsv32-openai, with dsv32d's output scripted (sdk.sh starts it with DSV32_TEST_FORCE_TOKENS:
// reasoning, content and calls of get_weather {"city": "Paris"} and get_time {"tz": "CET",
// "verbose": true}). Arguments: BASE_URL API_KEY. Checks: a non-streamed tool call (the
// SDK's typed message.tool_calls, arguments that JSON.parse to the parameters, finish_reason
// tool_calls, reasoning_content), a streamed one reassembled from delta.tool_calls by index
// equal to it (ids included), the SDK's stream helper's final message the same, a follow-up
// turn with the tools' results accepted, and tool_choice "required" refused as a
// BadRequestError naming tool_choice. Prints one line per check; exits 1 on a failure.
import OpenAI from "openai";
import { check, makeClient } from "./check.mjs";

const [baseURL, apiKey] = process.argv.slice(2);
const client = makeClient(baseURL, apiKey);

const tools = [
  { type: "function", function: { name: "get_weather", description: "The weather in a city",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] } } },
  { type: "function", function: { name: "get_time", description: "The time in a time zone",
    parameters: { type: "object", properties: { tz: { type: "string" }, verbose: { type: "boolean" } } } } },
];
const messages = [{ role: "user", content: "What is the weather in Paris, and the time?" }];
const req = { model: "model", messages, tools, tool_choice: "auto", chat_template_kwargs: { thinking: true } };

const r = await client.chat.completions.create(req);
const m = r.choices[0].message;
const calls = m.tool_calls ?? [];
check(r.choices[0].finish_reason === "tool_calls" && calls.length === 2 &&
      calls.every((c) => c.type === "function" && /^call_[0-9a-f]{16}$/.test(c.id)) && calls[0].id !== calls[1].id &&
      calls[0].function.name === "get_weather" && calls[1].function.name === "get_time" &&
      JSON.stringify(JSON.parse(calls[0].function.arguments)) === JSON.stringify({ city: "Paris" }) &&
      JSON.stringify(JSON.parse(calls[1].function.arguments)) === JSON.stringify({ tz: "CET", verbose: true }),
      "chat.completions.create with tools: message.tool_calls, finish_reason tool_calls", r.choices[0]);
check(typeof m.reasoning_content === "string" && m.reasoning_content.includes("call both tools"),
      "message.reasoning_content", m);

const streamed = [];
let reasoning = "", content = "", finish = null;
for await (const chunk of await client.chat.completions.create({ ...req, stream: true })) {
  const ch = chunk.choices[0];
  if (!ch) continue;
  reasoning += ch.delta.reasoning_content ?? "";
  content += ch.delta.content ?? "";
  finish = ch.finish_reason ?? finish;
  for (const t of ch.delta.tool_calls ?? []) {
    if (!streamed[t.index]) streamed[t.index] = { id: t.id, type: t.type, function: { name: t.function.name, arguments: "" } };
    streamed[t.index].function.arguments += t.function?.arguments ?? "";
  }
}
check(finish === "tool_calls" && JSON.stringify(streamed) === JSON.stringify(calls) && reasoning === m.reasoning_content &&
      content === (m.content ?? ""),
      "streamed: delta.tool_calls by index reassemble to the same calls (ids, names, arguments)", { streamed, calls });

const final = await client.chat.completions.stream(req).finalChatCompletion();
check(JSON.stringify(final.choices[0].message.tool_calls.map((c) => [c.id, c.function.name, c.function.arguments])) ===
      JSON.stringify(calls.map((c) => [c.id, c.function.name, c.function.arguments])),
      "chat.completions.stream().finalChatCompletion(): the same tool calls", final.choices[0].message);

const follow = [...messages, { role: "assistant", content: m.content, tool_calls: calls },
  { role: "tool", tool_call_id: calls[0].id, content: "sunny, 21 C" },
  { role: "tool", tool_call_id: calls[1].id, content: "14:05" }];
const r2 = await client.chat.completions.create({ ...req, messages: follow });
check(r2.usage.prompt_tokens > r.usage.prompt_tokens, "a follow-up turn with the tools' results",
      [r2.usage, r.usage]);

try {
  await client.chat.completions.create({ ...req, tool_choice: "required" });
  check(false, "tool_choice required is refused", "accepted");
} catch (e) {
  check(e instanceof OpenAI.BadRequestError && e.param === "tool_choice", "tool_choice required: BadRequestError naming it",
        { name: e.name, status: e.status, param: e.param });
}
