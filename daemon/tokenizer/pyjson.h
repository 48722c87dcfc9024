/* JSON text exactly as Python's json.dumps(value, ensure_ascii=False) writes it (what the
 * DeepSeek-V3.2 encoder puts into prompts): ", " and ": " separators, key order kept, floats
 * in repr() form, non-ASCII as is, control characters as \uXXXX. */
#pragma once

#include <jansson.h>
#include <stddef.h>

struct dsv_strbuf {
        char *p;
        size_t n, cap;
};
int dsv_strbuf_add(struct dsv_strbuf *b, const char *s, size_t n);
int dsv_strbuf_adds(struct dsv_strbuf *b, const char *s);
void dsv_strbuf_done(struct dsv_strbuf *b);

/* Appends json.dumps(v) to b. Returns 0 or -ENOMEM (-EINVAL for a NULL value). */
int dsv_pyjson_dump(struct dsv_strbuf *b, const json_t *v);
/* Appends json.dumps(str) for the UTF-8 string s[0..n). */
int dsv_pyjson_string(struct dsv_strbuf *b, const char *s, size_t n);
/* Python's repr() of a float. */
void dsv_pyjson_float(double d, char out[32]);
