#!/bin/bash
# dsv32 chat with the daemon's chat events: dsv32d on the tiny model with its output scripted
# (DSV32_TEST_FORCE_TOKENS: tests/openai/tool-call-answer.txt, a V3.2 answer in thinking
# mode with reasoning, content and calls of get_weather and get_time). --think --json: one
# object per event, in order: reasoning (the text before </think>), content, then per call
# tool_call (index, id call_ + 16 hex, name), tool_call_arguments (joined: the JSON of the
# parameters), tool_call_end; done with finish "tool calls"; the tokens events still there.
# Plain text in a pipe: "(thinking) " before the reasoning, the answer, one "[tool call ID:
# NAME ARGUMENTS]" line per call, and no escape codes; on a terminal (script(1), when it
# can open one) the reasoning is dimmed. A second turn sends the first reply back (more prompt
# tokens). A malformed call (tool-call-malformed.txt) gives a parse_error event (message, the
# raw text), no tool_call, and in plain text the raw output plus a word on stderr. --help
# names --think. Needs python3 (exit 77 without). About 5 s (11 s beside a parallel build).
set -uo pipefail
: "${top_srcdir:?}" "${top_builddir:?}"
command -v "${PYTHON3:-python3}" >/dev/null || { echo "SKIP: no python3"; exit 77; }
py() { command "${PYTHON3:-python3}" "$@"; }
b=$(cd "$top_builddir" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dsv32-cli-chat-XXXXXX")
dpid=
cleanup() {
  [ -n "$dpid" ] && kill -9 "$dpid" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
die() { echo "FAIL: $*"; echo "--- daemon log"; cat "$tmp/daemon.log"; exit 1; }
dsv() { "$b/dsv32" --socket "$tmp/d.sock" "$@"; }
start_daemon() { # [ENV...]
  env "$@" "$b/dsv32d" --config /dev/null --model "$tmp/model" --socket "$tmp/d.sock" --threads 1 2>"$tmp/daemon.log" &
  dpid=$!
  for _ in $(seq 400); do dsv ping --count 1 >/dev/null 2>&1 && return; sleep 0.05; done
  die "dsv32d did not answer"
}

out=$("$b/dsv32" chat --help) || fail "chat --help"
grep -q -- "--think" <<<"$out" || fail "chat --help does not name --think: $out"

"$b/dsv32-mkmodel" --preset tiny --out "$tmp/model" >/dev/null || die "dsv32-mkmodel"
start_daemon
ids=$(dsv tokenize < "$top_srcdir/tests/openai/tool-call-answer.txt") || die "dsv32 tokenize"
bad=$(dsv tokenize < "$top_srcdir/tests/openai/tool-call-malformed.txt") || die "dsv32 tokenize"
kill "$dpid"; wait "$dpid" 2>/dev/null
start_daemon DSV32_TEST_FORCE_TOKENS="$ids"

# --json: the events of two turns
printf 'What is the weather in Paris, and the time?\nAnd now?\n' | dsv chat --think --json --no-session > "$tmp/chat.jsonl" 2>"$tmp/chat.err" ||
  fail "chat --think --json: exit $?: $(cat "$tmp/chat.err")"
py - "$tmp/chat.jsonl" <<'PY' || fail "chat --json events: $(head -c 2000 "$tmp/chat.jsonl")"
import json, re, sys
ev = [json.loads(l) for l in open(sys.argv[1])]
turns = {}
for e in ev:
    turns.setdefault(e["turn"], []).append(e)
assert sorted(turns) == [1, 2], sorted(turns)
prompt = []
for t, es in sorted(turns.items()):
    kinds = [e["event"] for e in es if e["event"] != "tokens"]
    # adjacent deltas of a kind merged: reasoning, content, (tool_call, arguments, end) x 2, done
    merged = [k for i, k in enumerate(kinds) if i == 0 or k != kinds[i - 1] or k not in ("reasoning", "content", "tool_call_arguments")]
    assert merged == ["reasoning", "content", "tool_call", "tool_call_arguments", "tool_call_end",
                      "tool_call", "tool_call_arguments", "tool_call_end", "done"], merged
    assert any(e["event"] == "tokens" for e in es), "no tokens events"
    text = lambda k: "".join(e["text"] for e in es if e["event"] == k)
    assert text("reasoning") == "The user wants the weather in Paris and the time. I should call both tools.", text("reasoning")
    assert text("content").strip() == "I will call two tools.", text("content")
    calls = [e for e in es if e["event"] == "tool_call"]
    assert [c["index"] for c in calls] == [0, 1] and [c["name"] for c in calls] == ["get_weather", "get_time"], calls
    assert all(re.fullmatch(r"call_[0-9a-f]{16}", c["id"]) for c in calls) and calls[0]["id"] != calls[1]["id"], calls
    args = ["".join(e["text"] for e in es if e["event"] == "tool_call_arguments" and e["index"] == i) for i in (0, 1)]
    assert [json.loads(a) for a in args] == [{"city": "Paris"}, {"tz": "CET", "verbose": True}], args
    assert [e["index"] for e in es if e["event"] == "tool_call_end"] == [0, 1]
    done = es[-1]
    assert done["event"] == "done" and done["finish"] == "tool calls", done
    prompt.append(done["usage"]["prompt_tokens"])
assert prompt[1] > prompt[0] + 8, ("the second turn did not send the first reply back", prompt)
print("chat --json: events of 2 turns, prompt tokens %s" % prompt)
PY

# plain text in a pipe
printf 'What is the weather in Paris, and the time?\n' | dsv chat --think --no-session > "$tmp/chat.txt" 2>"$tmp/chat.err" ||
  fail "chat --think: exit $?: $(cat "$tmp/chat.err")"
py - "$tmp/chat.txt" <<'PY' || fail "chat --think, plain: $(cat "$tmp/chat.txt")"
import re, sys
out = open(sys.argv[1], encoding="utf-8").read()
assert "\x1b" not in out, "escape codes in a pipe"
lines = out.split("\n")
assert lines[0] == "(thinking) The user wants the weather in Paris and the time. I should call both tools.", lines
assert "I will call two tools." in out, out
calls = re.findall(r"^\[tool call (call_[0-9a-f]{16}): (\S+) (.*)\]$", out, re.M)
assert [c[1] for c in calls] == ["get_weather", "get_time"], out
assert "DSML" not in out and "</think>" not in out, out
PY

# on a terminal the reasoning is dimmed
if command -v script >/dev/null && script -qec true /dev/null >/dev/null 2>&1; then
  printf 'weather?\n' > "$tmp/in"
  DSV32_SOCKET="$tmp/d.sock" script -qec "$b/dsv32 chat --think --no-session < $tmp/in" /dev/null > "$tmp/tty.txt" 2>&1 ||
    fail "chat on a terminal: $(cat "$tmp/tty.txt")"
  grep -q $'\x1b\[2mThe user wants' "$tmp/tty.txt" || fail "the reasoning is not dimmed on a terminal: $(cat -v "$tmp/tty.txt")"
  grep -q $'\x1b\[0m' "$tmp/tty.txt" || fail "the dimming is not ended: $(cat -v "$tmp/tty.txt")"
else
  echo "note: no script(1), or it cannot open a pseudo-terminal (no /dev/pts): the terminal check is skipped"
fi

# a malformed tool call (a parameter named twice): a parse_error event with the raw output,
# no tool call; in plain text the output is shown as it came and stderr says why
kill "$dpid"; wait "$dpid" 2>/dev/null
start_daemon DSV32_TEST_FORCE_TOKENS="$bad"
printf 'weather?\n' | dsv chat --think --json --no-session > "$tmp/bad.jsonl" 2>"$tmp/bad.err" || fail "chat --json, malformed: exit $?"
py - "$tmp/bad.jsonl" <<'PY' || fail "chat --json, malformed call: $(cat "$tmp/bad.jsonl")"
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1])]
kinds = [e["event"] for e in ev]
assert "tool_call" not in kinds and kinds.count("parse_error") == 1, kinds
pe = ev[kinds.index("parse_error")]
assert pe["message"] and "Rome" in pe["text"], pe
assert ev[-1]["event"] == "done" and ev[-1]["finish"] == "stop", ev[-1]
PY
out=$(printf 'weather?\n' | dsv chat --think --no-session 2>"$tmp/bad.err") || fail "chat, malformed: exit $?"
grep -q "Rome" <<<"$out" || fail "chat, malformed call: the raw output is not shown: $out"
grep -q "could not be read" "$tmp/bad.err" || fail "chat, malformed call: no word on stderr: $(cat "$tmp/bad.err")"

kill "$dpid"; wait "$dpid" 2>/dev/null; dpid=
[ "$fails" -eq 0 ] || exit 1
echo "PASS: dsv32 chat shows reasoning and tool calls (text, terminal, --json)"
