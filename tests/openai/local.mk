# tests/openai/: dsv32-openai, the OpenAI-compatible gateway, end to end over HTTP against
# dsv32d on the tiny model: with curl (every endpoint and error) and with the official
# `openai` npm SDK (sdk.sh; skips without node or the SDK of setup-hook.sh); structured output
# with the SDK and ajv (test-openai-schema.sh).
TESTS += tests/openai/test-openai-curl.sh tests/openai/test-openai-tools.sh tests/openai/sdk.sh tests/openai/test-openai-schema.sh
EXTRA_DIST += tests/openai/gwlib.sh tests/openai/test-openai-curl.sh tests/openai/test-openai-tools.sh tests/openai/httpjson.py tests/openai/sdk.sh tests/openai/setup-hook.sh \
	tests/openai/sdk/package.json tests/openai/sdk/package-lock.json tests/openai/sdk/check.mjs tests/openai/sdk/sdk-check.mjs tests/openai/sdk/sdk-tools.mjs tests/openai/sdk/sdk-schema.mjs tests/openai/test-openai-schema.sh tests/openai/tool-call-answer.txt tests/openai/tool-call-malformed.txt
