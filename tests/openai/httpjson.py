# JSON over HTTP for test-openai-curl.sh's Python checks: request(path, body) posts body as
# JSON to the gateway at `url` (set by the caller: httpjson.url = ...) and returns (status,
# text); post(path, body) asserts a 200 and returns the text.
import json
import urllib.error
import urllib.request

url = None


def request(path, body):
    q = urllib.request.Request(url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        return 200, urllib.request.urlopen(q).read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def post(path, body):
    code, text = request(path, body)
    assert code == 200, (path, body, code, text)
    return text
