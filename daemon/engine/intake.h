/* Prompt intake: a request's text or chat messages become token ids. Runs on the engine's
 * intake thread (engine.c), never on the thread that runs the batch: a 256 KiB prompt takes
 * milliseconds to tokenize. */
#pragma once

#include <stddef.h>

#include "daemon/engine/engine.h"

struct dsv_text;

/* True when r's prompt must be encoded (text or chat messages). */
bool dsv_intake_needed(const struct dsv_engine_request *r);
/* Encodes r's prompt into r->tokens (freeing its text or messages). 0, or a negative errno
 * with a message for the client in msg (text is NULL: the model has no tokenizer). */
int dsv_intake_encode(const struct dsv_text *text, struct dsv_engine_request *r, char *msg, size_t cap);
