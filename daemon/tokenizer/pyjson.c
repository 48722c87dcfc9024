/* Python-compatible JSON output (see pyjson.h) and a small string builder. */
#include "config.h"

#include <math.h>

#include "daemon/tokenizer/pyjson.h"
#include "daemon/util.h"

int dsv_pyjson_string(struct dsv_strbuf *b, const char *s, size_t n) {
        int r = dsv_strbuf_add(b, "\"", 1);
        size_t run = 0;
        for (size_t i = 0; i < n && r >= 0; i++) {
                unsigned char c = (unsigned char)s[i];
                const char *esc = NULL;
                char u[8];
                if (c == '"')
                        esc = "\\\"";
                else if (c == '\\')
                        esc = "\\\\";
                else if (c == '\n')
                        esc = "\\n";
                else if (c == '\r')
                        esc = "\\r";
                else if (c == '\t')
                        esc = "\\t";
                else if (c == '\b')
                        esc = "\\b";
                else if (c == '\f')
                        esc = "\\f";
                else if (c < 0x20) {
                        snprintf(u, sizeof(u), "\\u%04x", c);
                        esc = u;
                }
                if (!esc) {
                        run++;
                        continue;
                }
                r = dsv_strbuf_add(b, s + i - run, run);
                run = 0;
                if (r >= 0)
                        r = dsv_strbuf_adds(b, esc);
        }
        if (r >= 0)
                r = dsv_strbuf_add(b, s + n - run, run);
        if (r >= 0)
                r = dsv_strbuf_add(b, "\"", 1);
        return r;
}

void dsv_pyjson_float(double d, char out[32]) {
        if (isnan(d)) {
                strcpy(out, "NaN");
                return;
        }
        if (isinf(d)) {
                strcpy(out, d > 0 ? "Infinity" : "-Infinity");
                return;
        }
        /* Shortest digits that read back as d (the repr() rule), via %.{p}e. */
        char e[40];
        int p;
        for (p = 1; p <= 17; p++) {
                snprintf(e, sizeof(e), "%.*e", p - 1, d);
                if (strtod(e, NULL) == d)
                        break;
        }
        /* e = [-]D[.DDD]e[+-]XX: split into sign, digits, decimal exponent */
        const char *q = e;
        bool neg = *q == '-';
        if (neg)
                q++;
        char digits[24];
        int nd = 0;
        for (; *q && *q != 'e'; q++)
                if (*q != '.')
                        digits[nd++] = *q;
        while (nd > 1 && digits[nd - 1] == '0')
                nd--;
        digits[nd] = 0;
        int exp10 = atoi(q + 1);
        int decpt = exp10 + 1; /* value = 0.DIGITS * 10^decpt */
        char *o = out;
        if (neg)
                *o++ = '-';
        if (decpt <= -4 || decpt > 16) {
                /* D[.DDD]e[+-]XX, at least two exponent digits */
                *o++ = digits[0];
                if (nd > 1) {
                        *o++ = '.';
                        memcpy(o, digits + 1, (size_t)nd - 1);
                        o += nd - 1;
                }
                snprintf(o, 8, "e%c%02d", exp10 < 0 ? '-' : '+', (exp10 < 0 ? -exp10 : exp10) % 1000);
                return;
        }
        if (decpt <= 0) {
                *o++ = '0';
                *o++ = '.';
                for (int i = 0; i < -decpt; i++)
                        *o++ = '0';
                memcpy(o, digits, (size_t)nd);
                o += nd;
        } else if (decpt >= nd) {
                memcpy(o, digits, (size_t)nd);
                o += nd;
                for (int i = nd; i < decpt; i++)
                        *o++ = '0';
                *o++ = '.';
                *o++ = '0';
        } else {
                memcpy(o, digits, (size_t)decpt);
                o += decpt;
                *o++ = '.';
                memcpy(o, digits + decpt, (size_t)(nd - decpt));
                o += nd - decpt;
        }
        *o = 0;
}

int dsv_pyjson_dump(struct dsv_strbuf *b, const json_t *v) {
        char num[40];
        int r = 0;
        if (!v)
                return -EINVAL;
        switch (json_typeof(v)) {
        case JSON_OBJECT: {
                const char *key;
                json_t *val;
                bool first = true;
                r = dsv_strbuf_add(b, "{", 1);
                json_object_foreach((json_t *)v, key, val) {
                        if (r >= 0 && !first)
                                r = dsv_strbuf_add(b, ", ", 2);
                        first = false;
                        if (r >= 0)
                                r = dsv_pyjson_string(b, key, strlen(key));
                        if (r >= 0)
                                r = dsv_strbuf_add(b, ": ", 2);
                        if (r >= 0)
                                r = dsv_pyjson_dump(b, val);
                        if (r < 0)
                                return r;
                }
                return dsv_strbuf_add(b, "}", 1);
        }
        case JSON_ARRAY: {
                size_t i;
                json_t *val;
                r = dsv_strbuf_add(b, "[", 1);
                json_array_foreach((json_t *)v, i, val) {
                        if (r >= 0 && i > 0)
                                r = dsv_strbuf_add(b, ", ", 2);
                        if (r >= 0)
                                r = dsv_pyjson_dump(b, val);
                        if (r < 0)
                                return r;
                }
                return dsv_strbuf_add(b, "]", 1);
        }
        case JSON_STRING:
                return dsv_pyjson_string(b, json_string_value(v), json_string_length(v));
        case JSON_INTEGER:
                snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
                return dsv_strbuf_adds(b, num);
        case JSON_REAL:
                dsv_pyjson_float(json_real_value(v), num);
                return dsv_strbuf_adds(b, num);
        case JSON_TRUE:
                return dsv_strbuf_add(b, "true", 4);
        case JSON_FALSE:
                return dsv_strbuf_add(b, "false", 5);
        case JSON_NULL:
                return dsv_strbuf_add(b, "null", 4);
        }
        return -EINVAL;
}
