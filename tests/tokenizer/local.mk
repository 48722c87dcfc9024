# tests/tokenizer
