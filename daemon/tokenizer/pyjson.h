/* JSON text exactly as Python's json.dumps(value, ensure_ascii=False) writes it (what the
 * DeepSeek-V3.2 encoder puts into prompts): ", " and ": " separators, key order kept, floats
 * in repr() form, non-ASCII as is, control characters as \uXXXX. */
#pragma once

#include <jansson.h>
#include <stddef.h>

#include "daemon/util.h"


/* Appends json.dumps(v) to b. Returns 0 or -ENOMEM (-EINVAL for a NULL value). */
int dsv_pyjson_dump(struct dsv_strbuf *b, const json_t *v);
/* Appends json.dumps(str) for the UTF-8 string s[0..n). */
int dsv_pyjson_string(struct dsv_strbuf *b, const char *s, size_t n);
/* Python's repr() of a float. */
void dsv_pyjson_float(double d, char out[32]);
