# daemon/tokenizer
