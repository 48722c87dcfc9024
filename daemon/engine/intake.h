/* Prompt intake: a request's text or chat messages become token ids. Runs on the engine's
 * intake thread (engine.c), never on the thread that runs the batch: a 256 KiB prompt takes
 * milliseconds to tokenize. A request's JSON schema is compiled here too. */
#pragma once

#include <stddef.h>

#include "daemon/engine/engine.h"

struct dsv_text;

/* True when r's prompt must be encoded (text or chat messages) or its schema compiled. */
bool dsv_intake_needed(const struct dsv_engine_request *r);
/* Compiles r's schema into r->grammar (freeing the text) and encodes r's prompt into
 * r->tokens (freeing its text or messages). 0, or a negative errno
 * with a message for the client in msg (text is NULL: the model has no tokenizer). */
/* Compiles r's schema (when it has one and no grammar yet) into r->grammar, freeing the text;
 * a refusal says why in msg (the keyword and where, grammar.h). */
int dsv_intake_schema(struct dsv_engine_request *r, char *msg, size_t cap);
int dsv_intake_encode(const struct dsv_text *text, struct dsv_engine_request *r, char *msg, size_t cap);
