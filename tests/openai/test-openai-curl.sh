#!/bin/bash
# dsv32-openai end to end with curl: dsv32d on the tiny model, the gateway on a free port
# (--listen 127.0.0.1:0, the port read from its start line), and every endpoint driven over
# HTTP. Completions (streamed and not, greedy and seeded) give the text of the same tokens
# as `dsv32 generate --ids`; chat streamed == chat not streamed; /v1/models, /health and
# /metrics (parsed as Prometheus text); the errors (bad JSON, a wrong type naming the field,
# n=2, too many stop strings, unknown path, wrong method, bodies over the limit with and without
# Content-Length, missing and wrong API keys, out-of-range penalties and logit bias); stop
# strings cut the completion, streamed or not; penalties and logit bias as dsv32 generate;
# logprobs (chat and completions shapes, the values dsv32 generate --logprobs prints, streamed
# == not streamed, out-of-range N refused); a client that hangs up mid-stream cancels
# its generation (the daemon's STATS show nothing running and far fewer tokens than asked
# for); with the daemon gone /health and generation answer 503; SIGTERM stops the gateway
# with status 0. Needs curl and python3 (exit 77 without). About 10 s.
set -uo pipefail
TMPNAME=dsv32-openai
. "$(dirname "$0")/gwlib.sh"
command -v curl >/dev/null || { echo "SKIP: no curl (Debian package curl)"; exit 77; }
command -v python3 >/dev/null || { echo "SKIP: no python3"; exit 77; }
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
# json FILE EXPR: a Python expression over the parsed file `j` (prints its value)
json() { python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"; }
dsv() { "$b/dsv32" --socket "$tmp/d.sock" "$@"; }

# the program's own interface
out=$("$b/dsv32-openai" --version) && [[ $out == "dsv32-openai "* ]] || fail "--version: '$out'"
"$b/dsv32-openai" --help | grep -q -- "--listen HOST:PORT" || fail "--help does not show --listen"
err=$("$b/dsv32-openai" --listen nowhere 2>&1); rc=$?
[ $rc -eq 2 ] && [[ $err == *"--listen takes HOST:PORT"* ]] || fail "--listen nowhere: exit $rc, '$err'"
err=$("$b/dsv32-openai" --api-keys "$tmp/none" 2>&1); rc=$?
[ $rc -eq 1 ] && [[ $err == *"cannot read the API keys from $tmp/none"* ]] || fail "--api-keys missing file: exit $rc, '$err'"

"$b/dsv32-mkmodel" --preset tiny --out "$tmp/model" >/dev/null || die "dsv32-mkmodel"
"$b/dsv32d" --config /dev/null --model "$tmp/model" --socket "$tmp/d.sock" --threads 1 2>"$tmp/daemon.log" &
dpid=$!

# start_gateway LOG ARGS...: starts dsv32-openai on a free port; sets gpid (or kpid) and port
start_gateway() {
  local log=$1 var=$2; shift 2
  "$b/dsv32-openai" --listen 127.0.0.1:0 --socket "$tmp/d.sock" "$@" 2>"$log" &
  printf -v "$var" %s $!
  for _ in $(seq 200); do grep -q "(port [0-9]*)" "$log" && break; sleep 0.05; done
  port=$(sed -n 's/.*listening on .*(port \([0-9]*\)).*/\1/p' "$log")
  [ -n "$port" ] || die "dsv32-openai did not say which port it listens on: $(cat "$log")"
}
start_gateway "$tmp/gw.log" gpid --max-body-bytes 65536
url=http://127.0.0.1:$port
# /health: 503 until the daemon answers ready
for _ in $(seq 400); do [ "$(curl -s -o /dev/null -w '%{http_code}' "$url/health")" = 200 ] && break; sleep 0.05; done
# post PATH BODY OUT: prints the HTTP status, the body goes to OUT
post() { curl -s -o "$3" -w '%{http_code}' -H 'Content-Type: application/json' --data-binary "$2" "$url$1"; }

# /health, /v1/models
[ "$(curl -s -o "$tmp/h.json" -w '%{http_code}' "$url/health")" = 200 ] || fail "/health: not 200: $(cat "$tmp/h.json")"
[ "$(json "$tmp/h.json" 'j["status"]')" = ok ] || fail "/health: $(cat "$tmp/h.json")"
[ "$(curl -s -o "$tmp/m.json" -w '%{http_code}' "$url/v1/models")" = 200 ] || fail "/v1/models not 200"
[ "$(json "$tmp/m.json" 'j["object"] + " " + j["data"][0]["id"] + " " + j["data"][0]["object"]')" = "list model model" ] ||
  fail "/v1/models: $(cat "$tmp/m.json")"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$url/v1/models/model")" = 200 ] || fail "/v1/models/model not 200"
[ "$(curl -s -o "$tmp/e.json" -w '%{http_code}' "$url/v1/models/other")" = 404 ] || fail "/v1/models/other not 404"

# completions: the text of the tokens `dsv32 generate` gives, greedy and seeded
expect_text() { # ARGS of dsv32 generate -> the text of its tokens in $tmp/want
  local ids
  ids=$(dsv generate --tokens 0,5,6,7 --max-tokens 8 --ids "$@") || die "dsv32 generate $*"
  dsv detokenize "$ids" > "$tmp/want" || die "dsv32 detokenize $ids"
}
# sse_text FILE KIND: the concatenated text (completion) or content (chat) of an event stream
sse_text() {
  python3 - "$1" "$2" <<'PY'
import json, sys
events = [l[6:] for l in open(sys.argv[1]).read().split("\n") if l.startswith("data: ")]
assert events and events[-1] == "[DONE]", "the stream does not end with data: [DONE]"
text, finish, usage = "", None, None
for e in events[:-1]:
    c = json.loads(e)
    assert "error" not in c, c
    if c.get("usage"):
        usage = c["usage"]
    for ch in c["choices"]:
        if sys.argv[2] == "chat":
            assert c["object"] == "chat.completion.chunk", c
            text += ch["delta"].get("content", "") or ""
        else:
            assert c["object"] == "text_completion", c
            text += ch["text"]
        finish = ch["finish_reason"] or finish
sys.stdout.write(json.dumps({"text": text, "finish": finish, "usage": usage}))
PY
}
expect_text
code=$(post /v1/completions '{"model":"x","prompt":[0,5,6,7],"max_tokens":8,"temperature":0}' "$tmp/c.json")
[ "$code" = 200 ] || fail "completions: $code $(cat "$tmp/c.json")"
python3 - "$tmp/c.json" "$tmp/want" <<'PY' || fail "greedy completion differs from dsv32 generate: $(cat "$tmp/c.json")"
import json, sys
j = json.load(open(sys.argv[1])); want = open(sys.argv[2]).read().rstrip("\n")
c = j["choices"][0]
assert j["object"] == "text_completion" and j["model"] == "model", j
assert c["text"] == want, (c["text"], want)
assert c["finish_reason"] == "length", c
assert j["usage"] == {"prompt_tokens": 4, "completion_tokens": 8, "total_tokens": 12, "prompt_tokens_details": {"cached_tokens": 0}}, j["usage"]
PY
code=$(post /v1/completions '{"prompt":[0,5,6,7],"max_tokens":8,"temperature":0,"stream":true}' "$tmp/cs.sse")
[ "$code" = 200 ] || fail "streamed completions: $code"
s=$(sse_text "$tmp/cs.sse" completion) || fail "streamed completions: $(cat "$tmp/cs.sse")"
python3 -c 'import json,sys; s=json.loads(sys.argv[1]); w=open(sys.argv[2]).read().rstrip("\n"); assert s["text"]==w and s["finish"]=="length" and s["usage"] is None, (s,w)' "$s" "$tmp/want" ||
  fail "streamed completion differs from dsv32 generate: $s"
expect_text --temperature 0.8 --seed 42
code=$(post /v1/completions '{"prompt":[0,5,6,7],"max_tokens":8,"temperature":0.8,"seed":42,"stream":true}' "$tmp/cs2.sse")
s=$(sse_text "$tmp/cs2.sse" completion) || fail "seeded stream: $(cat "$tmp/cs2.sse")"
python3 -c 'import json,sys; s=json.loads(sys.argv[1]); w=open(sys.argv[2]).read().rstrip("\n"); assert s["text"]==w, (s,w)' "$s" "$tmp/want" ||
  fail "seeded completion (temperature 0.8, seed 42) differs from dsv32 generate: $s"

# chat: streamed == not streamed, usage on request
chat='"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"Hello"}]}],"max_completion_tokens":12,"temperature":0'
code=$(post /v1/chat/completions "{$chat}" "$tmp/chat.json")
[ "$code" = 200 ] || fail "chat: $code $(cat "$tmp/chat.json")"
code=$(post /v1/chat/completions "{$chat,\"stream\":true,\"stream_options\":{\"include_usage\":true}}" "$tmp/chat.sse")
[ "$code" = 200 ] || fail "streamed chat: $code"
s=$(sse_text "$tmp/chat.sse" chat) || fail "streamed chat: $(cat "$tmp/chat.sse")"
head -1 "$tmp/chat.sse" | grep -q '"delta":{"role":"assistant"' || fail "the first chat chunk does not carry the role: $(head -1 "$tmp/chat.sse")"
python3 - "$tmp/chat.json" "$s" <<'PY' || fail "chat streamed != not streamed: $(cat "$tmp/chat.json") vs $s"
import json, sys
j = json.load(open(sys.argv[1])); s = json.loads(sys.argv[2])
c = j["choices"][0]
assert j["object"] == "chat.completion" and c["message"]["role"] == "assistant", j
assert c["message"]["content"] == s["text"] and c["finish_reason"] == s["finish"], (c, s)
assert s["usage"] == j["usage"] and j["usage"]["completion_tokens"] <= 12 and j["usage"]["prompt_tokens"] > 2, (s, j)
PY

# errors: status, OpenAI error object, the field named
check_error() { # STATUS PARAM PATH BODY [curl args]
  local want=$1 param=$2 path=$3 body=$4; shift 4
  local code
  code=$(curl -s -o "$tmp/err.json" -w '%{http_code}' "$@" --data-binary "$body" "$url$path")
  [ "$code" = "$want" ] || { fail "$path $body: status $code, want $want: $(head -c 300 "$tmp/err.json")"; return; }
  python3 -c 'import json,sys; e=json.load(open(sys.argv[1]))["error"]; p=None if sys.argv[2]=="null" else sys.argv[2]; assert e["message"] and e["type"] and e["param"]==p, e' \
    "$tmp/err.json" "$param" || fail "$path $body: error object $(cat "$tmp/err.json"), want param $param"
}
check_error 400 null /v1/chat/completions '{"messages": [}'
check_error 400 null /v1/chat/completions '[1, 2]'
check_error 400 temperature /v1/chat/completions '{"messages":[{"role":"user","content":"hi"}],"temperature":"hot"}'
check_error 400 temperature /v1/chat/completions '{"messages":[{"role":"user","content":"hi"}],"temperature":7}'
check_error 400 max_tokens /v1/completions '{"prompt":"hi","max_tokens":0}'
check_error 400 n /v1/chat/completions '{"messages":[{"role":"user","content":"hi"}],"n":2}'
check_error 400 messages /v1/chat/completions '{"prompt":"hi"}'
check_error 400 'messages[1].role' /v1/chat/completions '{"messages":[{"role":"user","content":"hi"},{"role":"robot","content":"x"}]}'
check_error 400 'messages[0].content' /v1/chat/completions '{"messages":[{"role":"user","content":42}]}'
check_error 400 prompt /v1/completions '{"prompt":{"a":1}}'
check_error 400 prompt /v1/completions '{"prompt":[1,-2]}'
check_error 400 stream /v1/completions '{"prompt":"hi","stream":"yes"}'
check_error 400 response_format.type /v1/chat/completions '{"messages":[{"role":"user","content":"hi"}],"response_format":{"type":"grammar"}}'
check_error 400 response_format.json_schema.name /v1/chat/completions '{"messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_schema","json_schema":{"schema":{}}}}'
check_error 400 response_format.json_schema.schema /v1/chat/completions '{"messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_schema","json_schema":{"name":"s","schema":{"type":"string","pattern":"a"}}}}'
check_error 400 "tools[0].function" /v1/chat/completions '{"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function"}]}'
check_error 400 null /v1/completions '{"prompt":[0,4096]}' # a token outside the vocabulary: the daemon refuses it
check_error 404 null /v1/nothing '{}'
check_error 405 null /v1/models '{}'
grep -qi '^Allow: GET' < <(curl -si -X POST "$url/v1/models") || fail "405 without an Allow header"
big=$(python3 -c 'print("{\"prompt\":\"" + "a" * 70000 + "\"}")')
check_error 413 null /v1/completions "$big"
check_error 413 null /v1/completions "$big" -H 'Transfer-Encoding: chunked'
kill -0 "$gpid" || die "dsv32-openai died"

# /metrics: Prometheus text that parses, with the daemon's and the gateway's series
curl -s -o "$tmp/metrics.txt" "$url/metrics" || fail "/metrics"
python3 - "$tmp/metrics.txt" <<'PY' || fail "/metrics: $(head -40 "$tmp/metrics.txt")"
import re, sys
series, typed = {}, {}
for line in open(sys.argv[1]).read().splitlines():
    if line.startswith("# TYPE "):
        _, _, name, t = line.split(" ")
        typed[name] = t
        continue
    if line.startswith("#") or not line:
        continue
    m = re.fullmatch(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? (\S+)', line)
    assert m, "not a sample line: " + line
    base = re.sub(r"_(bucket|sum|count)$", "", m.group(1))
    assert m.group(1) in typed or base in typed, "no TYPE for " + line
    series[m.group(1) + (m.group(2) or "")] = float(m.group(4))
for name in ["dsv32_up", "dsv32_requests_total", "dsv32_generated_tokens_total", "dsv32_prompt_tokens_total",
             "dsv32_kv_pages", "dsv32_kv_pages_used", "dsv32_sessions", "dsv32_cached_tokens_total",
             "dsv32_cache_hit_ratio", "dsv32_decode_tokens_per_second", "dsv32_prefill_tokens_per_second"]:
    assert name in series, "missing " + name
assert series["dsv32_up"] == 1 and series['dsv32_state{state="ready"}'] == 1
assert series["dsv32_requests_total"] >= 6 and series["dsv32_generated_tokens_total"] >= 40, series
assert series['dsv32_openai_http_responses_total{code="200"}'] >= 8, series
assert series['dsv32_openai_http_responses_total{code="413"}'] == 2, series
assert series["dsv32_openai_time_to_first_token_seconds_count"] == 3, series  # the streamed generations
assert series['dsv32_openai_time_to_first_token_seconds_bucket{le="+Inf"}'] == 3, series
assert typed["dsv32_openai_time_to_first_token_seconds"] == "histogram"
PY

# stop strings: a piece of the greedy completion ends it there, streamed or not, never shown;
# penalties and logit bias give what dsv32 generate gives with the same flags
first=$(dsv generate --tokens 0,5,6,7 --max-tokens 8 --ids) || die "dsv32 generate --ids"
first=${first%%,*}
expect_text --logit-bias "$first:-100" --logit-bias 9:3.5 --frequency-penalty 1.5 --presence-penalty 0.5 --repetition-penalty 1.3
mv "$tmp/want" "$tmp/want-pen"
pen="--logit-bias $first:-100 --logit-bias 9:3.5 --frequency-penalty 1.5 --presence-penalty 0.5 --repetition-penalty 1.3"
a=$(dsv generate --tokens 0,5,6,7 --max-tokens 8 --ids $pen) && c=$("$b/dsv32-run" --model "$tmp/model" --threads 1 --tokens 0,5,6,7 --generate 8 $pen) &&
  [ "$a" = "$c" ] || fail "dsv32-run $pen gave '$c', dsv32 generate '$a'"
expect_text
python3 - "$url" "$tmp/want" "$tmp/want-pen" "$first" <<'PY' || fail "stop strings, penalties, logit bias"
import httpjson, json, sys, urllib.request
url, want = sys.argv[1], open(sys.argv[2]).read().rstrip("\n")
want_pen, first = open(sys.argv[3]).read().rstrip("\n"), sys.argv[4]
assert len(want) >= 4, want
stop = want[2:4]
cut = want[:want.index(stop)]
httpjson.url = url
request, post = httpjson.request, httpjson.post
body = {"prompt": [0, 5, 6, 7], "max_tokens": 8, "temperature": 0, "stop": ["\u0001never", stop]}
c = json.loads(post("/v1/completions", body))["choices"][0]
assert c["text"] == cut and c["finish_reason"] == "stop", (c, want, stop)
body["stream"] = True
text, finish = "", None
for l in post("/v1/completions", body).split("\n"):
    if l.startswith("data: {"):
        ch = json.loads(l[6:])["choices"][0]
        text += ch["text"]
        finish = ch["finish_reason"] or finish
assert text == cut and finish == "stop", (text, finish, want, stop)
print("stop strings: %r in %r cut the completion to %r, streamed or not" % (stop, want, cut))
body = {"prompt": [0, 5, 6, 7], "max_tokens": 8, "temperature": 0, "logit_bias": {first: -100, "9": 3.5},
        "frequency_penalty": 1.5, "presence_penalty": 0.5, "repetition_penalty": 1.3}
c = json.loads(post("/v1/completions", body))["choices"][0]
assert c["text"] == want_pen and want_pen != want, (c["text"], want_pen, want)
print("penalties and logit bias: %r (greedy %r), as dsv32 generate gives" % (want_pen, want))
# bad stop strings, penalties and biases: 400 naming the field (batched here: a python3 start costs ~1 s)
chat = {"messages": [{"role": "user", "content": "hi"}]}
for param, path, body in [
        ("stop", "/v1/completions", {"prompt": "hi", "stop": list("abcdefghi")}),
        ("stop", "/v1/chat/completions", dict(chat, stop=["a", 7])),
        ("stop", "/v1/completions", {"prompt": "hi", "stop": "x" * 65}),
        ("frequency_penalty", "/v1/completions", {"prompt": "hi", "frequency_penalty": 2.5}),
        ("presence_penalty", "/v1/chat/completions", dict(chat, presence_penalty=-3)),
        ("repetition_penalty", "/v1/completions", {"prompt": "hi", "repetition_penalty": 0}),
        ("logit_bias", "/v1/completions", {"prompt": "hi", "logit_bias": {"x1": 5}}),
        ("logit_bias", "/v1/completions", {"prompt": "hi", "logit_bias": {"12": -101}}),
        ("logit_bias", "/v1/completions", {"prompt": "hi", "logit_bias": {str(i): 1 for i in range(301)}})]:
    code, text = request(path, body)
    err = json.loads(text)["error"]
    assert code == 400 and err["param"] == param and err["message"] and err["type"] == "invalid_request_error", (body, code, err)
PY

# logprobs: chat (logprobs + top_logprobs) and completions (logprobs N) in OpenAI's shapes, the
# values dsv32 generate --logprobs prints, streamed == not streamed; out-of-range N: 400
dsv generate --tokens 0,5,6,7 --max-tokens 8 --logprobs 3 > "$tmp/lp.txt" || die "dsv32 generate --logprobs 3"
python3 - "$url" "$tmp/lp.txt" <<'PY' || fail "logprobs"
import httpjson, json, sys, urllib.request
url = sys.argv[1]
cli = [l.split() for l in open(sys.argv[2]).read().splitlines()]
httpjson.url = url
request, post = httpjson.request, httpjson.post
def chunks(text):
    return [json.loads(l[6:]) for l in text.split("\n") if l.startswith("data: {")]
assert len(cli) == 8 and all(len(l) == 5 for l in cli), cli
# completions: tokens, token_logprobs, top_logprobs, text_offset
body = {"prompt": [0, 5, 6, 7], "max_tokens": 8, "temperature": 0, "logprobs": 3}
c = json.loads(post("/v1/completions", body))["choices"][0]
lp = c["logprobs"]
assert len(lp["tokens"]) == 8 and len(lp["token_logprobs"]) == 8 and len(lp["top_logprobs"]) == 8, lp
for i, l in enumerate(cli):
    assert abs(lp["token_logprobs"][i] - float(l[1])) < 1e-5, (i, lp["token_logprobs"][i], l)
    want = sorted(float(a.split(":")[1]) for a in l[2:])
    got = sorted(lp["top_logprobs"][i].values())
    assert len(got) <= 3 and all(any(abs(g - w) < 1e-5 for w in want) for g in got), (i, got, want)
    assert max(got) == lp["token_logprobs"][i], (i, got)  # greedy: the chosen token is the likeliest
off = 0
for i, t in enumerate(lp["tokens"]):
    assert lp["text_offset"][i] == off, (i, lp["text_offset"], lp["tokens"])
    off += len(t)
body["stream"] = True
joined = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
for ch in chunks(post("/v1/completions", body)):
    x = ch["choices"][0]["logprobs"]
    if x:
        for k in joined:
            joined[k] += x[k]
assert joined == lp, (joined, lp)
# chat: content[] = {token, logprob, bytes, top_logprobs[]}
chat = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 10, "temperature": 0, "logprobs": True,
        "top_logprobs": 4}
j = json.loads(post("/v1/chat/completions", chat))
c = j["choices"][0]
content = c["logprobs"]["content"]
assert len(content) == j["usage"]["completion_tokens"] > 0, (content, j["usage"])
for e in content:
    assert set(e) == {"token", "logprob", "bytes", "top_logprobs"} and e["logprob"] <= 0, e
    assert len(e["top_logprobs"]) == 4 and e["top_logprobs"][0]["logprob"] == e["logprob"], e
    assert e["top_logprobs"][0]["token"] == e["token"] and e["top_logprobs"][0]["bytes"] == e["bytes"], e
    lps = [a["logprob"] for a in e["top_logprobs"]]
    assert lps == sorted(lps, reverse=True), lps
joined = b"".join(bytes(e["bytes"]) for e in content).decode()
assert joined == "".join(e["token"] for e in content), content
if "\ufffd" not in joined:  # a token that is part of a character reads U+FFFD on its own
    assert joined == c["message"]["content"], (joined, c["message"]["content"])
chat["stream"] = True
streamed = []
for ch in chunks(post("/v1/chat/completions", chat)):
    x = ch["choices"][0]["logprobs"]
    if x:
        streamed += x["content"]
assert streamed == content, (streamed, content)
assert json.loads(post("/v1/chat/completions", dict(chat, stream=False, logprobs=False, top_logprobs=None)))["choices"][0]["logprobs"] is None
print("logprobs: completions and chat in OpenAI's shapes, %d + %d tokens, the values of dsv32 generate --logprobs, streamed == not" % (8, len(content)))
for param, path, body in [
        ("top_logprobs", "/v1/chat/completions", {"messages": chat["messages"], "logprobs": True, "top_logprobs": 21}),
        ("top_logprobs", "/v1/chat/completions", {"messages": chat["messages"], "top_logprobs": 2}),
        ("logprobs", "/v1/chat/completions", {"messages": chat["messages"], "logprobs": 3}),
        ("logprobs", "/v1/completions", {"prompt": "hi", "logprobs": 21}),
        ("logprobs", "/v1/completions", {"prompt": "hi", "logprobs": "x"})]:
    code, text = request(path, body)
    err = json.loads(text)["error"]
    assert code == 400 and err["param"] == param and err["message"], (body, code, err)
PY

# a client that hangs up mid-stream cancels its generation
before=$(dsv --json status | python3 -c 'import json,sys; print(json.load(sys.stdin)["generated_tokens_total"])')
curl -sN -H 'Content-Type: application/json' "$url/v1/completions" \
  -d '{"prompt":[0,5,6,7],"max_tokens":4000,"ignore_eos":true,"stream":true}' > "$tmp/cut.sse" &
kpid=$!
for _ in $(seq 200); do [ "$(grep -c '^data: ' "$tmp/cut.sse")" -ge 3 ] && break; sleep 0.05; done
[ "$(grep -c '^data: ' "$tmp/cut.sse")" -ge 3 ] || fail "the long stream did not start: $(head -c 300 "$tmp/cut.sse")"
kill "$kpid"; wait "$kpid" 2>/dev/null; kpid=
gone=
for _ in $(seq 60); do
  dsv --json status > "$tmp/st.json"
  [ "$(json "$tmp/st.json" 'j["requests_running"] + j["requests_waiting"] + j["requests_prefilling"]')" = 0 ] && { gone=1; break; }
  sleep 0.05
done
[ -n "$gone" ] || fail "the generation still runs after its client hung up: $(cat "$tmp/st.json")"
generated=$(( $(json "$tmp/st.json" 'j["generated_tokens_total"]') - before ))
echo "hang-up: the daemon generated $generated of the 4000 tokens asked for"
[ "$generated" -lt 4000 ] || fail "the generation ran to the end ($generated tokens) although its client hung up"
grep -q '^data: \[DONE\]' "$tmp/cut.sse" && fail "the cut stream has a [DONE]"

# API keys: /v1/ needs one from the file, /health does not
printf '# keys of the gateway\nfirst-key\n\n  second-key  \n' > "$tmp/keys"
start_gateway "$tmp/gw-keys.log" kpid --api-keys "$tmp/keys"
kurl=http://127.0.0.1:$port
[ "$(curl -s -o "$tmp/k.json" -w '%{http_code}' "$kurl/v1/models")" = 401 ] || fail "no key: not 401"
python3 -c 'import json,sys; e=json.load(open(sys.argv[1]))["error"]; assert e["code"]=="invalid_api_key"' "$tmp/k.json" ||
  fail "no key: $(cat "$tmp/k.json")"
[ "$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer first-ke' "$kurl/v1/models")" = 401 ] || fail "a key's prefix: not 401"
[ "$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer first-key-2' "$kurl/v1/models")" = 401 ] || fail "a longer key: not 401"
[ "$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer second-key' "$kurl/v1/models")" = 200 ] || fail "the second key: not 200"
[ "$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer first-key' -d '{"prompt":"hi","max_tokens":2}' "$kurl/v1/completions")" = 200 ] ||
  fail "the first key: not 200"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$kurl/health")" = 200 ] || fail "/health with keys: not 200"
kill "$kpid"; wait "$kpid"; rc=$?; kpid=
[ "$rc" -eq 0 ] || fail "dsv32-openai --api-keys: exit status $rc after SIGTERM"

# the daemon gone: 503 everywhere, the gateway keeps serving
kill "$dpid"; wait "$dpid"; dpid=
[ "$(curl -s -o "$tmp/h.json" -w '%{http_code}' "$url/health")" = 503 ] || fail "/health without a daemon: not 503"
check_error 503 null /v1/chat/completions '{"messages":[{"role":"user","content":"hi"}]}'
grep -q '^dsv32_up 0$' < <(curl -s "$url/metrics") || fail "/metrics without a daemon: no dsv32_up 0"
kill "$gpid"; wait "$gpid"; rc=$?; gpid=
[ "$rc" -eq 0 ] || fail "dsv32-openai: exit status $rc after SIGTERM"

[ "$fails" -eq 0 ] || { echo "--- gateway log"; cat "$tmp/gw.log"; exit 1; }
echo "PASS: dsv32-openai: completions and chat (streamed and not) match dsv32, models, health, metrics, errors, keys, hang-up cancels"
