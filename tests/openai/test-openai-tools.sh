#!/bin/bash
# dsv32-openai's tools end to end with curl: dsv32d on the tiny model with its output scripted
# (DSV32_TEST_FORCE_TOKENS: the token ids of a V3.2 answer in thinking mode with reasoning,
# content and two DSML tool calls), so that the model "calls" get_weather and get_time every
# time. Non-streamed: message.reasoning_content, message.content, message.tool_calls[] (ids
# call_ + 16 hex, distinct; type function; name; arguments a JSON string of the parsed
# parameters), finish_reason tool_calls. Streamed: the role first, delta.reasoning_content
# and delta.content joined equal the non-streamed ones, delta.tool_calls[] with index, the id,
# type and name only in a call's first chunk, argument fragments after that join to the
# non-streamed arguments byte for byte, the same ids. A follow-up turn (the assistant's tool
# calls and two tool messages) is encoded (more prompt tokens); tool_choice "none" keeps the
# tools out of the prompt. Bad tools and tool messages get a 400 naming the field, and the
# gateway and daemon keep serving. A malformed call (a parameter named twice) comes back as
# content, streamed the same, without tool_calls. Needs curl and python3 (exit 77 without).
# About 5 s (18 s beside a parallel build).
set -uo pipefail
TMPNAME=dsv32-openai-tools
. "$(dirname "$0")/gwlib.sh"
command -v curl >/dev/null || { echo "SKIP: no curl (Debian package curl)"; exit 77; }
command -v python3 >/dev/null || { echo "SKIP: no python3"; exit 77; }

"$b/dsv32-mkmodel" --preset tiny --out "$tmp/model" >/dev/null || die "dsv32-mkmodel"
# start_daemon [ENV...]: dsv32d on $tmp/d.sock, ready
start_daemon() {
  env "$@" "$b/dsv32d" --config /dev/null --model "$tmp/model" --socket "$tmp/d.sock" --threads 1 2>"$tmp/daemon.log" &
  dpid=$!
  for _ in $(seq 400); do "$b/dsv32" --socket "$tmp/d.sock" ping >/dev/null 2>&1 && return; sleep 0.05; done
  die "dsv32d did not answer"
}
# the scripted answer (tool-call-answer.txt, as tests/ipc/test-daemon-chat-events.c's) and its token ids
# and an answer whose tool call is malformed (tool-call-malformed.txt: a parameter named
# twice): the parser reports it, and the gateway sends that output as content
start_daemon
ids=$("$b/dsv32" --socket "$tmp/d.sock" tokenize < "$here/tool-call-answer.txt") || die "dsv32 tokenize"
bad=$("$b/dsv32" --socket "$tmp/d.sock" tokenize < "$here/tool-call-malformed.txt") || die "dsv32 tokenize"
kill "$dpid"; wait "$dpid" 2>/dev/null
start_daemon DSV32_TEST_FORCE_TOKENS="$ids"
"$b/dsv32-openai" --listen 127.0.0.1:0 --socket "$tmp/d.sock" 2>"$tmp/gw.log" &
gpid=$!
for _ in $(seq 200); do grep -q "(port [0-9]*)" "$tmp/gw.log" && break; sleep 0.05; done
port=$(sed -n 's/.*listening on .*(port \([0-9]*\)).*/\1/p' "$tmp/gw.log")
[ -n "$port" ] || die "dsv32-openai did not say which port it listens on"
for _ in $(seq 400); do [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health")" = 200 ] && break; sleep 0.05; done

python3 - "http://127.0.0.1:$port" <<'PY' || die "tools"
import httpjson, json, re, sys
httpjson.url = sys.argv[1]
request, post = httpjson.request, httpjson.post
tools = [{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}},
         {"type": "function", "function": {"name": "get_time", "description": "The time in a time zone",
                                           "parameters": {"type": "object", "properties": {"tz": {"type": "string"},
                                                                                           "verbose": {"type": "boolean"}}}}}]
user = [{"role": "user", "content": "What is the weather in Paris, and the time?"}]
req = {"messages": user, "tools": tools, "tool_choice": "auto", "chat_template_kwargs": {"thinking": True}}

# not streamed
j = json.loads(post("/v1/chat/completions", req))
c = j["choices"][0]
m = c["message"]
assert c["finish_reason"] == "tool_calls", c
assert m["role"] == "assistant", m
assert m["reasoning_content"] == "The user wants the weather in Paris and the time. I should call both tools.", m
assert m["content"].strip() == "I will call two tools.", m
calls = m["tool_calls"]
assert len(calls) == 2, calls
for call, name, args in zip(calls, ["get_weather", "get_time"], [{"city": "Paris"}, {"tz": "CET", "verbose": True}]):
    assert set(call) == {"id", "type", "function"} and call["type"] == "function", call
    assert re.fullmatch(r"call_[0-9a-f]{16}", call["id"]), call
    assert call["function"]["name"] == name, call
    assert isinstance(call["function"]["arguments"], str) and json.loads(call["function"]["arguments"]) == args, call
assert calls[0]["id"] != calls[1]["id"], calls
prompt_tokens = j["usage"]["prompt_tokens"]

# streamed: the same message, reassembled
text = post("/v1/chat/completions", dict(req, stream=True))
chunks = [json.loads(l[6:]) for l in text.split("\n") if l.startswith("data: {")]
assert text.rstrip("\n").endswith("data: [DONE]"), text[-200:]
assert chunks[0]["choices"][0]["delta"].get("role") == "assistant", chunks[0]
reasoning, content, finish, got = "", "", None, {}
for ch in chunks:
    assert ch["object"] == "chat.completion.chunk", ch
    d = ch["choices"][0]["delta"]
    reasoning += d.get("reasoning_content") or ""
    content += d.get("content") or ""
    finish = ch["choices"][0]["finish_reason"] or finish
    for t in d.get("tool_calls") or []:
        i = t["index"]
        if i not in got:  # a call's first chunk: id, type, name
            assert i == len(got) and t["type"] == "function" and t["id"] and t["function"]["name"], t
            got[i] = {"id": t["id"], "type": "function", "function": {"name": t["function"]["name"], "arguments": ""}}
        else:  # after it: argument fragments only
            assert set(t) == {"index", "function"} and set(t["function"]) == {"arguments"}, t
        got[i]["function"]["arguments"] += t["function"].get("arguments", "")
assert finish == "tool_calls", finish
assert reasoning == m["reasoning_content"] and content == m["content"], (reasoning, content, m)
assert [got[i] for i in sorted(got)] == calls, (got, calls)
assert sum(1 for ch in chunks if ch["choices"][0]["delta"].get("tool_calls")) > 2, "the arguments came in one piece"
print("tool calls: %s, streamed == not streamed (ids %s)" % ([c["function"]["arguments"] for c in calls], [c["id"] for c in calls]))

# a follow-up turn with the tools' results; tool_choice "none" keeps the tools out of the prompt
follow = user + [{"role": "assistant", "content": m["content"], "reasoning_content": m["reasoning_content"], "tool_calls": calls},
                 {"role": "tool", "tool_call_id": calls[0]["id"], "content": "sunny, 21 C"},
                 {"role": "tool", "tool_call_id": calls[1]["id"], "content": "14:05"}]
j2 = json.loads(post("/v1/chat/completions", dict(req, messages=follow)))
assert j2["usage"]["prompt_tokens"] > prompt_tokens + 10, (j2["usage"], prompt_tokens)
j3 = json.loads(post("/v1/chat/completions", dict(req, tool_choice="none")))
assert j3["usage"]["prompt_tokens"] < prompt_tokens, (j3["usage"], prompt_tokens)
print("follow-up turn: %d prompt tokens (first turn %d, without tools %d)" %
      (j2["usage"]["prompt_tokens"], prompt_tokens, j3["usage"]["prompt_tokens"]))

# bad tools and tool messages: 400 naming the field
fn = tools[0]["function"]
call = calls[0]
for param, body in [
        ("tools", dict(req, tools={"type": "function"})),
        ("tools[0]", dict(req, tools=[{"type": "retrieval"}])),
        ("tools[0].function", dict(req, tools=[{"type": "function"}])),
        ("tools[0].function.name", dict(req, tools=[{"type": "function", "function": {"description": "x"}}])),
        ("tools[1].function.name", dict(req, tools=[tools[0], {"type": "function", "function": {"name": "bad name!"}}])),
        ("tools[1].function.name", dict(req, tools=[tools[0], tools[0]])),
        ("tools[0].function.parameters", dict(req, tools=[{"type": "function", "function": dict(fn, parameters=[1])}])),
        ("tools[0].function.parameters", dict(req, tools=[{"type": "function", "function": dict(fn, parameters={"description": "x" * 70000})}])),
        ("tools[0].function.description", dict(req, tools=[{"type": "function", "function": dict(fn, description=7)}])),
        ("tools", dict(req, tools=[{"type": "function", "function": {"name": "f%d" % i}} for i in range(129)])),
        ("tool_choice", dict(req, tool_choice="required")),
        ("tool_choice", dict(req, tool_choice={"type": "function", "function": {"name": "get_weather"}})),
        ("tool_choice", dict(req, tool_choice="sometimes")),
        ("messages[2].tool_call_id", dict(req, messages=follow[:2] + [{"role": "tool", "content": "x"}])),
        ("messages[1].tool_calls[0].function.arguments",
         dict(req, messages=user + [{"role": "assistant", "tool_calls": [dict(call, function={"name": "f", "arguments": "{\"a\": "})]}])),
        ("messages[1].tool_calls[0].id",
         dict(req, messages=user + [{"role": "assistant", "tool_calls": [{"type": "function", "function": call["function"]}]}])),
        ("messages[0].tool_calls", dict(req, messages=[dict(user[0], tool_calls=calls)])),
        ("tools", {"prompt": "hi", "tools": tools})]:
    code, text = request("/v1/completions" if "prompt" in body else "/v1/chat/completions", body)
    err = json.loads(text)["error"]
    assert code == 400 and err["param"] == param and err["message"] and err["type"] == "invalid_request_error", (param, code, err)
# a tool message naming no call: the daemon refuses it, a 400
code, text = request("/v1/chat/completions", dict(req, messages=follow[:2] + [{"role": "tool", "tool_call_id": "call_x", "content": "x"}]))
assert code == 400 and "names no tool call" in json.loads(text)["error"]["message"], (code, text)
assert json.loads(post("/v1/chat/completions", req))["choices"][0]["message"]["tool_calls"] == calls
print("bad tools: 400 naming the field; the gateway and dsv32d keep serving")
PY

# the malformed call: its output comes back as content, streamed or not, and no tool call
kill "$dpid"; wait "$dpid" 2>/dev/null
start_daemon DSV32_TEST_FORCE_TOKENS="$bad"
python3 - "http://127.0.0.1:$port" <<'PY' || die "a malformed tool call"
import httpjson, json, sys
httpjson.url = sys.argv[1]
req = {"messages": [{"role": "user", "content": "weather?"}], "chat_template_kwargs": {"thinking": True},
       "tools": [{"type": "function", "function": {"name": "get_weather"}}]}
j = json.loads(httpjson.post("/v1/chat/completions", req))
c = j["choices"][0]
m = c["message"]
assert "tool_calls" not in m and c["finish_reason"] == "stop", c
assert m["reasoning_content"] == "Thinking." and m["content"].startswith("Calling."), m
assert "Rome" in m["content"] and "invoke" in m["content"], m
text = httpjson.post("/v1/chat/completions", dict(req, stream=True))
content = "".join(json.loads(l[6:])["choices"][0]["delta"].get("content") or "" for l in text.split("\n") if l.startswith("data: {"))
assert content == m["content"], (content, m["content"])
print("a malformed tool call: sent as content (%d bytes), streamed the same" % len(content))
PY
kill "$gpid"; wait "$gpid"; rc=$?; gpid=
[ "$rc" -eq 0 ] || die "dsv32-openai: exit status $rc after SIGTERM"
echo "PASS: dsv32-openai tools: tool calls and reasoning in OpenAI's shapes, streamed == not streamed, follow-up turn, bad tools refused"
