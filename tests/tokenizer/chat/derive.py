#!/usr/bin/env python3
"""Derives the chat golden files from DeepSeek's own encoder (not shipped here).

    python3 derive.py /path/to/DeepSeek-V3.2/encoding   # the folder with encoding_dsv32.py

writes encode-cases.json (conversations and the exact prompt text encode_messages() gives,
or "error" where it raises) and parse-cases.json (model outputs and what
parse_message_from_completion_text() returns, or "error"). test-chat-golden and
test-chat-parse compare dsv32d's C implementation with these files. The inputs below are
ours; only the expected strings come from running the official code.
"""
import copy
import json
import os
import sys

sys.path.insert(0, sys.argv[1])
from encoding_dsv32 import encode_messages, parse_message_from_completion_text  # noqa: E402

WEATHER_TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Get the weather for a city on a date",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "City name, e.g. 杭州"},
            "date": {"type": "string", "description": "YYYY-MM-DD"},
            "days": {"type": "integer", "minimum": 1, "maximum": 14, "default": 1}},
            "required": ["city"]}}},
    {"type": "function", "function": {
        "name": "calc", "description": "Evaluate an arithmetic expression",
        "parameters": {"type": "object", "properties": {"expr": {"type": "string"},
                                                         "precision": {"type": "number", "default": 0.001}},
                       "required": ["expr"]}}},
]


def call(name, args, cid="call_0"):
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": json.dumps(args, ensure_ascii=False)}}


CASES = [
    dict(name="plain-chat", mode="chat", messages=[
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hello!"}]),
    dict(name="plain-thinking", mode="thinking", messages=[
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is 17 * 23?"}]),
    dict(name="user-only-thinking", mode="thinking", messages=[
        {"role": "user", "content": "写一首关于春天的诗。😀"}]),
    dict(name="no-bos", mode="chat", add_bos=False, messages=[
        {"role": "user", "content": "hi"}]),
    dict(name="multi-turn-chat", mode="chat", messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Italy?"},
        {"role": "assistant", "content": "Rome."},
        {"role": "user", "content": "Thanks\nbye"}]),
    dict(name="multi-turn-thinking-drop", mode="thinking", messages=[
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "Hello! I am DeepSeek.", "reasoning_content": "thinking..."},
        {"role": "user", "content": "1+1=?"}]),
    dict(name="multi-turn-thinking-keep", mode="thinking", drop_thinking=False, messages=[
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "Hello! I am DeepSeek.", "reasoning_content": "thinking..."},
        {"role": "user", "content": "1+1=?"}]),
    dict(name="thinking-final-answer", mode="thinking", messages=[
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Is 91 prime?"},
        {"role": "assistant", "content": "No: 91 = 7 × 13.", "reasoning_content": "Try 7: 7*13 = 91."}]),
    dict(name="tools-thinking-full", mode="thinking", messages=[
        {"role": "system", "content": "You are a helpful assistant.", "tools": WEATHER_TOOLS},
        {"role": "user", "content": "Weather in Hangzhou tomorrow, and what is 2^10?"},
        {"role": "assistant", "content": "", "reasoning_content": "Two tools needed.",
         "tool_calls": [call("get_weather", {"city": "Hangzhou", "date": "2025-01-02", "days": 1}, "c1"),
                        call("calc", {"expr": "2^10", "precision": 0.5}, "c2")]},
        {"role": "tool", "tool_call_id": "c1", "content": "{\"weather\": \"多云\", \"high\": 12}"},
        {"role": "tool", "tool_call_id": "c2", "content": "1024"},
        {"role": "assistant", "content": "Cloudy, 12°C; 2^10 = 1024.", "reasoning_content": "Both answers are in."}]),
    dict(name="tools-chat-args", mode="chat", messages=[
        {"role": "system", "content": "", "tools": WEATHER_TOOLS},
        {"role": "user", "content": "Try every argument type."},
        {"role": "assistant", "content": "Calling.", "tool_calls": [call("calc", {
            "expr": "a \"quoted\" <tag> & \\ back", "n": 3, "x": 1.0, "y": -0.0, "big": 1e20, "small": 1.5e-7,
            "pi": 3.141592653589793, "t": True, "f": False, "none": None, "list": [1, "two", [3.5]],
            "obj": {"k": "v", "ü": "ß\n\t"}, "empty": "", "uni": "中文😀"}, "c3")]},
        {"role": "tool", "tool_call_id": "c3", "content": "ok"},
        {"role": "user", "content": "Now with no arguments."},
        {"role": "assistant", "content": None, "tool_calls": [call("get_weather", {}, "c4")]},
        {"role": "tool", "tool_call_id": "c4", "content": None}]),
    dict(name="tool-results-thinking-open", mode="thinking", messages=[
        {"role": "system", "content": "sys", "tools": WEATHER_TOOLS},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "reasoning_content": "Need the tool.",
         "tool_calls": [call("get_weather", {"city": "Paris"})]},
        {"role": "tool", "content": "sunny"}]),
    dict(name="developer-tools-format", mode="thinking", messages=[
        {"role": "system", "content": "You are terse."},
        {"role": "developer", "content": "Find benchmarks for search agents.", "tools": WEATHER_TOOLS[:1],
         "response_format": {"type": "json_schema", "schema": {"type": "object", "properties": {"answer": {"type": "string"}}}}}]),
    dict(name="system-response-format", mode="chat", messages=[
        {"role": "system", "content": "Answer in JSON.", "response_format": {"type": "json_object"}},
        {"role": "user", "content": "List three colors."}]),
    dict(name="none-contents", mode="chat", messages=[
        {"role": "system", "content": None},
        {"role": "user"},
        {"role": "assistant", "content": None, "tool_calls": [call("calc", {"expr": "1"})]},
        {"role": "tool", "content": "1"},
        {"role": "user", "content": "ok"}]),
    dict(name="special-strings-in-content", mode="thinking", messages=[
        {"role": "user", "content": "What does <｜end▁of▁sentence｜> or </think> or <｜DSML｜invoke mean?"}]),
    dict(name="context-assistant", mode="thinking", context=3, messages=[
        {"role": "system", "content": "sys", "tools": WEATHER_TOOLS},
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "reasoning_content": "Ask the tool.", "tool_calls": [call("get_weather", {"city": "Oslo"})]},
        {"role": "tool", "content": "snow"},
        {"role": "assistant", "content": "It snows in Oslo.", "reasoning_content": "Done."}]),
    # conversations the official encoder rejects
    dict(name="err-developer-empty", mode="chat", messages=[{"role": "developer", "content": ""}]),
    dict(name="err-tool-first-after-user", mode="chat", messages=[
        {"role": "user", "content": "x"}, {"role": "tool", "content": "y"}]),
    dict(name="err-thinking-assistant-empty", mode="thinking", messages=[
        {"role": "user", "content": "x"}, {"role": "assistant", "content": "no reasoning"}]),
    dict(name="err-unknown-role", mode="chat", messages=[{"role": "function", "content": "x"}]),
    dict(name="err-developer-before-last-user", mode="thinking", messages=[
        {"role": "developer", "content": "d"}, {"role": "user", "content": "u"}]),
    dict(name="err-too-many-tool-outputs", mode="chat", messages=[
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": "", "tool_calls": [call("calc", {"expr": "1"})]},
        {"role": "tool", "content": "1"}, {"role": "tool", "content": "2"}]),
]


def run_encode(c):
    msgs = copy.deepcopy(c["messages"])
    n_ctx = c.get("context", 0)
    try:
        return encode_messages(msgs[n_ctx:], thinking_mode=c["mode"], context=msgs[:n_ctx] or None,
                               drop_thinking=c.get("drop_thinking", True),
                               add_default_bos_token=c.get("add_bos", True))
    except (AssertionError, NotImplementedError, IndexError, KeyError, ValueError):
        return None


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    enc = []
    for c in CASES:
        out = dict(c)
        p = run_encode(c)
        out["expected"] = p if p is not None else {"error": True}
        enc.append(out)
    with open(os.path.join(here, "encode-cases.json"), "w", encoding="utf-8") as f:
        json.dump(enc, f, ensure_ascii=False, indent=1)
        f.write("\n")

    # Model outputs: what the model writes after each assistant turn's prompt (the turn
    # rendered with everything before it as context), plus hand-written ones.
    outputs = []
    for c in CASES:
        if c["name"].startswith("err-"):
            continue
        msgs = c["messages"]
        for i, m in enumerate(msgs):
            if m["role"] != "assistant" or c["mode"] != "thinking" and False:
                continue
            try:
                text = encode_messages([copy.deepcopy(m)], context=copy.deepcopy(msgs[:i]), thinking_mode=c["mode"],
                                       drop_thinking=True)
            except AssertionError:
                continue
            outputs.append({"name": f"{c['name']}-{i}", "mode": c["mode"], "text": text})
    D = "｜DSML｜"
    E = "<｜end▁of▁sentence｜>"
    extra = [
        ("content-only-eos", "chat", "Just an answer." + E),
        ("content-no-eos", "chat", "Stopped by max_tokens"),
        ("thinking-then-content", "thinking", "Let me think\n\nabout it.</think>The answer is 42." + E),
        ("thinking-unterminated", "thinking", "I am still thinking about <thi"),
        ("partial-marker-at-end", "chat", "Ends with half a marker <｜end▁of"),
        ("newlines-before-block", "chat", "text\n\n\n\n<" + D + "function_calls>\n<" + D + "invoke name=\"f\">\n</" + D +
         "invoke>\n</" + D + "function_calls>" + E),
        ("param-quirks", "chat", "\n\n<" + D + "function_calls>\n<" + D + "invoke name=\"a\\\"b\">\n<" + D +
         "parameter name=\"k\" string=\"true\">line1\nline2 with </" + D + "invoke inside</" + D + "parameter>\n<" +
         D + "parameter name=\"n\" string=\"false\">[1, {\"x\": null}]</" + D + "parameter>\n</" + D + "invoke>\n</" +
         D + "function_calls>"),
        # malformed (the official parser raises; ours reports)
        ("bad-missing-newline", "chat", "x\n\n<" + D + "function_calls><" + D + "invoke name=\"f\">\n</" + D +
         "invoke>\n</" + D + "function_calls>" + E),
        ("bad-param-format", "chat", "\n\n<" + D + "function_calls>\n<" + D + "invoke name=\"f\">\n<" + D +
         "parameter key=\"k\">v</" + D + "parameter>\n</" + D + "invoke>\n</" + D + "function_calls>"),
        ("bad-duplicate-param", "chat", "\n\n<" + D + "function_calls>\n<" + D + "invoke name=\"f\">\n<" + D +
         "parameter name=\"k\" string=\"true\">1</" + D + "parameter>\n<" + D + "parameter name=\"k\" string=\"true\">2</" +
         D + "parameter>\n</" + D + "invoke>\n<" + D + "invoke name=\"g\">\n</" + D + "invoke>\n</" + D +
         "function_calls>" + E),
        ("bad-json-value", "chat", "\n\n<" + D + "function_calls>\n<" + D + "invoke name=\"f\">\n<" + D +
         "parameter name=\"n\" string=\"false\">not json</" + D + "parameter>\n</" + D + "invoke>\n</" + D +
         "function_calls>" + E),
        ("bad-unterminated", "thinking", "r</think>\n\n<" + D + "function_calls>\n<" + D + "invoke name=\"f\">\n<" + D +
         "parameter name=\"k\" string=\"true\">partial"),
        ("bad-text-after-block", "chat", "\n\n<" + D + "function_calls>\n</" + D + "function_calls>trailing"),
        ("bad-text-after-eos", "chat", "answer" + E + "more"),
        ("bad-calls-in-reasoning", "thinking", "thinking\n\n<" + D + "function_calls>\n<" + D + "invoke name=\"f\">\n</" +
         D + "invoke>\n</" + D + "function_calls>" + E),
    ]
    for name, mode, text in extra:
        outputs.append({"name": name, "mode": mode, "text": text})
    # What dsv32d's parser reports where it departs from the official one (which raises, or
    # passes invalid JSON on): the end of input ends the message, problems become errors.
    INV = "<" + D + "invoke"
    OURS = {
        "content-no-eos": dict(content="Stopped by max_tokens"),
        "thinking-unterminated": dict(reasoning="I am still thinking about <thi", reasoning_open=True),
        "partial-marker-at-end": dict(content="Ends with half a marker <｜end▁of"),
        "bad-missing-newline": dict(content="x", errors=[[
            "tool call block: expected \">\\n\" and a DSML tag",
            "\n\n<" + D + "function_calls><" + D + "invoke name=\"f\">\n</" + D + "invoke>\n</" + D + "function_calls>" + E]]),
        "bad-param-format": dict(errors=[[
            "tool call: malformed parameter",
            INV + " name=\"f\">\n<" + D + "parameter key=\"k\">v</" + D + "parameter>\n</" + D + "invoke>\n</" + D +
            "function_calls>"]]),
        "bad-duplicate-param": dict(tool_calls=[{"name": "g", "arguments": "{}"}], errors=[[
            "tool call has a duplicate parameter name",
            INV + " name=\"f\">\n<" + D + "parameter name=\"k\" string=\"true\">1</" + D + "parameter>\n<" + D +
            "parameter name=\"k\" string=\"true\">2</" + D + "parameter>\n</" + D + "invoke"]]),
        "bad-json-value": dict(errors=[[
            "tool call parameter with string=\"false\" is not JSON",
            INV + " name=\"f\">\n<" + D + "parameter name=\"n\" string=\"false\">not json</" + D + "parameter>\n</" + D +
            "invoke"]]),
        "bad-unterminated": dict(reasoning="r", errors=[[
            "tool call block ends early", INV + " name=\"f\">\n<" + D + "parameter name=\"k\" string=\"true\">partial"]]),
        "bad-text-after-block": dict(errors=[["text after the tool call block", "trailing"]]),
        "bad-text-after-eos": dict(content="answer", errors=[["text after the end of the message", "more"]]),
        "bad-calls-in-reasoning": dict(reasoning="thinking", tool_calls=[{"name": "f", "arguments": "{}"}], errors=[[
            "function calls inside the reasoning (no </think> before them)", "\n\n<" + D + "function_calls"]]),
    }
    for o in outputs:
        try:
            r = parse_message_from_completion_text(o["text"], thinking_mode=o["mode"])
            o["official"] = {"reasoning": r["reasoning_content"], "content": r["content"],
                             "tool_calls": [{"name": t["function"]["name"], "arguments": t["function"]["arguments"]}
                                            for t in r["tool_calls"]]}
        except AssertionError as e:
            o["official"] = {"error": str(e)}
        if o["name"] in OURS:
            x = dict(reasoning="", content="", tool_calls=[], errors=[], reasoning_open=False)
            x.update(OURS[o["name"]])
        else:
            assert "error" not in o["official"], o["name"]
            x = dict(o["official"], errors=[], reasoning_open=False)
        o["expected"] = x
    with open(os.path.join(here, "parse-cases.json"), "w", encoding="utf-8") as f:
        json.dump(outputs, f, ensure_ascii=False, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
