# tests/openai/: dsv32-openai, the OpenAI-compatible gateway, end to end over HTTP against
# dsv32d on the tiny model.
TESTS += tests/openai/test-openai-curl.sh
EXTRA_DIST += tests/openai/test-openai-curl.sh
