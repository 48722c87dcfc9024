/* The structured-output grammar (daemon/grammar): for each kind of schema, texts the matcher
 * must accept (whole, and complete where the value is) and refuse; bad and hostile schemas
 * refused with the keyword named (a schema 10^4 levels deep is an error, not a crash); and
 * the token mask equals a brute-force check of every token (feeding its bytes to a copy of
 * the state) on random states reached by random walks through masks, over a generated
 * byte-level BPE vocabulary (dsv_tok_synth_write, the tiny model's) plus tokens that end
 * inside escapes and UTF-8 characters. Every walk that completes its value parses as JSON. */
#include "config.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/grammar/grammar.h"
#include "daemon/rng.h"
#include "daemon/tokenizer/tokenizer.h"
#include "tests/check.h"

static struct dsv_grammar *compile_ok(const char *schema) {
        struct dsv_grammar *g = NULL;
        struct dsv_error err = {{0}};
        int rc = dsv_grammar_compile(schema, strlen(schema), &g, &err);
        CHECK(rc == 0, "%s: %s", schema, err.msg);
        return rc == 0 ? g : NULL;
}

/* expect: 0 refused, 1 accepted but not complete, 2 accepted and may end, 3 done */
static void text_case(const char *schema, const char *text, int expect) {
        struct dsv_grammar *g = compile_ok(schema);
        struct dsv_gmatch *m;
        int got;
        if (!g)
                return;
        REQUIRE(dsv_gmatch_new(g, &m) == 0, "new");
        if (dsv_gmatch_feed(m, text, strlen(text)) < 0)
                got = 0;
        else
                got = dsv_gmatch_done(m) ? 3 : dsv_gmatch_can_end(m) ? 2 : 1;
        CHECK(got == expect, "schema %s text %s: got %d, expected %d", schema, text, got, expect);
        dsv_gmatch_free(m);
        dsv_grammar_free(g);
}

static void refused(const char *schema, const char *needle) {
        struct dsv_grammar *g = NULL;
        struct dsv_error err = {{0}};
        int rc = dsv_grammar_compile(schema, strlen(schema), &g, &err);
        CHECK(rc < 0, "%.80s: compiled", schema);
        CHECK(rc >= 0 || strstr(err.msg, needle), "%.80s: message \"%s\" lacks \"%s\"", schema, err.msg, needle);
        if (rc == 0)
                dsv_grammar_free(g);
}

static void texts(void) {
        const char *obj = "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"ab\":{\"type\":\"string\"},"
                          "\"c\":{\"type\":\"boolean\"}},\"required\":[\"a\"],\"additionalProperties\":false}";
        text_case(obj, "{\"a\":1}", 3);
        text_case(obj, "{\"ab\":\"x\",\"a\":-12}", 3);
        text_case(obj, "{\"c\":true,\"a\":0,\"ab\":\"\"}", 3);
        text_case(obj, "{\"ab\":\"x\"}", 0);      /* a is required */
        text_case(obj, "{\"a\":1,\"a\":2}", 0);   /* no key twice */
        text_case(obj, "{\"d\":1}", 0);           /* undeclared */
        text_case(obj, "{\"a\": 1}", 0);          /* no whitespace */
        text_case(obj, "{\"a\":1.5}", 0);         /* integer */
        text_case(obj, "{\"a\":1", 1);
        text_case("{\"type\":\"object\"}", "{\"k\":[1,{\"x\":null}],\"\":\"v\"}", 3);
        text_case("{\"type\":\"object\",\"additionalProperties\":false}", "{}", 3);
        text_case("{\"type\":\"object\",\"additionalProperties\":false}", "{\"a\":1}", 0);
        text_case("{\"additionalProperties\":{\"type\":\"number\"}}", "{\"a\":1e5,\"b\":-0.25}", 3);
        text_case("{\"additionalProperties\":{\"type\":\"number\"}}", "{\"a\":\"x\"}", 0);
        /* arrays */
        const char *arr = "{\"type\":\"array\",\"items\":{\"type\":\"integer\"},\"minItems\":1,\"maxItems\":3}";
        text_case(arr, "[1,2,3]", 3);
        text_case(arr, "[]", 0);
        text_case(arr, "[1,2,3,4]", 0);
        text_case(arr, "[1,", 1);
        text_case("{\"type\":\"array\",\"maxItems\":0}", "[]", 3);
        text_case("{\"type\":\"array\",\"maxItems\":0}", "[1]", 0);
        /* strings */
        const char *str = "{\"type\":\"string\",\"minLength\":2,\"maxLength\":3}";
        text_case(str, "\"ab\"", 3);
        text_case(str, "\"a\"", 0);
        text_case(str, "\"abcd\"", 0);
        text_case(str, "\"\\u00e9\\n\"", 3);
        text_case(str, "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"", 3); /* 3 characters, 9 bytes */
        text_case(str, "\"\\ud83d\\ude00\"", 0);                      /* surrogate halves */
        text_case(str, "\"\xc0\xaf\"", 0);                            /* overlong */
        text_case(str, "\"\xed\xa0\x80\"", 0);                        /* UTF-8 surrogate */
        text_case(str, "\"a\tb\"", 0);                                /* control character */
        text_case(str, "\"\\x\"", 0);
        text_case("{\"type\":\"string\"}", "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"", 3);
        /* numbers */
        text_case("{\"type\":\"number\"}", "-0.5e+1", 2);
        text_case("{\"type\":\"number\"}", "-0.5e+10", 3); /* 2-digit exponent: closed */
        text_case("{\"type\":\"number\"}", "12", 2);
        text_case("{\"type\":\"number\"}", "01", 0);
        text_case("{\"type\":\"number\"}", "1.", 1);
        text_case("{\"type\":\"number\"}", "1e99", 3); /* 2-digit exponent: closed */
        text_case("{\"type\":\"number\"}", "1e999", 0);
        text_case("{\"type\":\"number\"}", "-", 1);
        text_case("{\"type\":\"integer\"}", "0", 3);
        text_case("{\"type\":\"integer\"}", "-7", 2);
        text_case("{\"type\":\"integer\"}", "123456789012345", 3);
        text_case("{\"type\":\"integer\"}", "1234567890123456", 0);
        text_case("{\"type\":\"integer\"}", "1e3", 0);
        /* literals */
        text_case("{\"enum\":[\"red\",\"green\",1,12,null,[1,2],{\"a\":true}]}", "\"green\"", 3);
        text_case("{\"enum\":[\"red\",\"green\",1,12,null,[1,2],{\"a\":true}]}", "1", 2);
        text_case("{\"enum\":[\"red\",\"green\",1,12,null,[1,2],{\"a\":true}]}", "12", 3);
        text_case("{\"enum\":[\"red\",\"green\",1,12,null,[1,2],{\"a\":true}]}", "[1,2]", 3);
        text_case("{\"enum\":[\"red\",\"green\",1,12,null,[1,2],{\"a\":true}]}", "{\"a\":true}", 3);
        text_case("{\"enum\":[\"red\",\"green\",1,12,null,[1,2],{\"a\":true}]}", "\"blue\"", 0);
        text_case("{\"type\":\"array\",\"items\":{\"enum\":[1,12]}}", "[12,1]", 3);
        text_case("{\"const\":\"x\"}", "\"x\"", 3);
        text_case("{\"type\":\"boolean\"}", "false", 3);
        text_case("{\"type\":\"boolean\"}", "fals", 1);
        text_case("{\"type\":\"null\"}", "null", 3);
        text_case("{\"type\":\"string\",\"enum\":[\"a\",1]}", "1", 0); /* 1 is not a string */
        /* alternatives */
        text_case("{\"type\":[\"string\",\"null\"]}", "null", 3);
        text_case("{\"type\":[\"string\",\"null\"]}", "\"s\"", 3);
        text_case("{\"type\":[\"string\",\"null\"]}", "1", 0);
        text_case("{\"anyOf\":[{\"type\":\"integer\"},{\"type\":\"array\",\"items\":{\"type\":\"integer\"}}]}", "[3]", 3);
        text_case("{\"oneOf\":[{\"const\":1},{\"const\":\"a\"},{\"enum\":[2]}]}", "2", 3);
        text_case("{\"type\":[\"integer\",\"number\"]}", "2.5", 2);
        /* references */
        const char *tree = "{\"$defs\":{\"t\":{\"type\":\"object\",\"properties\":{\"v\":{\"type\":\"integer\"},"
                           "\"kids\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/t\"}}},\"required\":[\"v\"]}},"
                           "\"$ref\":\"#/$defs/t\"}";
        text_case(tree, "{\"v\":1,\"kids\":[{\"v\":2},{\"v\":3,\"kids\":[]}]}", 3);
        text_case(tree, "{\"v\":1,\"kids\":[{}]}", 0);
        /* any JSON */
        text_case("{}", "{\"a\":[true,false,null,\"x\",-1.5e3,{}]}", 3);
        text_case("true", "[]", 3);
        text_case("{}", "3", 2);
        text_case("{\"title\":\"t\",\"description\":\"d\"}", "\"s\"", 3);
        text_case("{}", "{\"a\":1}x", 0); /* nothing after the value */
}

static void bad_schemas(void) {
        refused("{\"type\":\"string\",\"pattern\":\"^a\"}", "\"pattern\"");
        refused("{\"type\":\"string\",\"format\":\"date\"}", "\"format\"");
        refused("{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"number\",\"minimum\":3}}}", "/properties/a");
        refused("{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"number\",\"minimum\":3}}}", "\"minimum\"");
        refused("{\"type\":\"strin\"}", "unknown type \"strin\"");
        refused("{\"type\":\"object\",", "not valid JSON");
        refused("[1]", "must be an object or a boolean");
        refused("false", "allows no value");
        refused("{\"type\":\"object\",\"required\":[\"x\"]}", "\"x\"");
        refused("{\"type\":\"array\",\"minItems\":3,\"maxItems\":2}", "minItems");
        refused("{\"type\":\"string\",\"maxLength\":-1}", "maxLength");
        refused("{\"anyOf\":[{\"type\":\"object\"},{\"type\":\"object\",\"properties\":{}}]}", "begin with '{'");
        refused("{\"$ref\":\"#/$defs/nope\"}", "names no definition");
        refused("{\"$ref\":\"http://example.com/s.json\"}", "unsupported \"$ref\"");
        refused("{\"$defs\":{\"a\":{\"$ref\":\"#/$defs/b\"},\"b\":{\"$ref\":\"#/$defs/a\"}},\"$ref\":\"#/$defs/a\"}", "cycle");
        refused("{\"$defs\":{\"a\":{\"anyOf\":[{\"$ref\":\"#/$defs/a\"},{\"type\":\"null\"}]}},\"$ref\":\"#/$defs/a\"}",
                "anyOf");
        refused("{\"enum\":[]}", "enum");
        refused("{\"type\":\"string\",\"enum\":[1,2]}", "type");
        /* deep: jansson's parser depth limit or the grammar's, an error either way */
        for (int levels = 100; levels <= 10000; levels *= 100) {
                size_t cap = (size_t)levels * 40 + 64, n = 0;
                char *s = malloc(cap);
                REQUIRE(s, "malloc");
                for (int i = 0; i < levels; i++)
                        n += (size_t)snprintf(s + n, cap - n, "{\"type\":\"array\",\"items\":");
                n += (size_t)snprintf(s + n, cap - n, "{}");
                for (int i = 0; i < levels; i++)
                        s[n++] = '}';
                s[n] = 0;
                struct dsv_grammar *g = NULL;
                struct dsv_error err = {{0}};
                int rc = dsv_grammar_compile(s, n, &g, &err);
                CHECK(rc < 0 && (strstr(err.msg, "deeper") || strstr(err.msg, "depth") || strstr(err.msg, "bytes")),
                      "%d levels: rc %d, %s", levels, rc, err.msg);
                free(s);
        }
        /* huge: more properties than an object may have */
        {
                char *s = malloc(65536);
                size_t n = (size_t)sprintf(s, "{\"type\":\"object\",\"properties\":{");
                for (int i = 0; i < 100; i++)
                        n += (size_t)sprintf(s + n, "%s\"p%d\":{}", i ? "," : "", i);
                strcpy(s + n, "}}");
                refused(s, "more than 64 properties");
                free(s);
        }
}

/* The vocabulary: a generated BPE's tokens, plus pieces that end inside escapes and
 * multi-byte characters. */
struct vocab {
        int32_t n, eos;
        char **s;
        size_t *len;
};

static bool vocab_bytes(void *ud, int32_t id, const char **p, size_t *n) {
        const struct vocab *v = ud;
        if (id < 0 || id >= v->n || !v->s[id])
                return false;
        *p = v->s[id];
        *n = v->len[id];
        return true;
}

static void vocab_add(struct vocab *v, const char *p, size_t n) {
        v->s = realloc(v->s, (size_t)(v->n + 1) * sizeof(*v->s));
        v->len = realloc(v->len, (size_t)(v->n + 1) * sizeof(*v->len));
        REQUIRE(v->s && v->len, "realloc");
        v->s[v->n] = p ? malloc(n + 1) : NULL;
        if (p)
                memcpy(v->s[v->n], p, n);
        v->len[v->n++] = n;
}

static void make_vocab(struct vocab *v) {
        static const char *const extra[] = {"\\", "\\u", "\\u00", "e9", "\"\\", "\xc3", "\xa9", "\xe2\x82", "\xac\"",
                                            "\":", "\",\"", "\":\"", "},{", "\"}", "\"]", "1.", "e+", "-0", "null,",
                                            "true}", "\\ud8", "\xf0\x9f", "\x98\x80", "{\"", "[[", "]]", "\n"};
        char dir[] = "/tmp/test-grammar-XXXXXX", path[600];
        struct dsv_error err = {{0}};
        struct dsv_tok *tok;
        REQUIRE(mkdtemp(dir), "mkdtemp");
        REQUIRE(dsv_tok_synth_write(dir, 4096, 0, 1, 7, &err) == 0, "synth: %s", err.msg);
        snprintf(path, sizeof(path), "%s/tokenizer.json", dir);
        REQUIRE(dsv_tok_load(path, NULL, &tok, &err) == 0, "load: %s", err.msg);
        *v = (struct vocab){.eos = 1};
        for (int32_t id = 0; id < dsv_tok_vocab_size(tok); id++) {
                const char *p;
                size_t n;
                if (dsv_tok_is_special(tok, id) || !dsv_tok_id_bytes(tok, id, &p, &n))
                        vocab_add(v, NULL, 0);
                else
                        vocab_add(v, p, n);
        }
        for (size_t i = 0; i < sizeof(extra) / sizeof(*extra); i++)
                vocab_add(v, extra[i], strlen(extra[i]));
        vocab_add(v, extra[0], 1); /* a duplicate of a token's bytes */
        dsv_tok_free(tok);
        snprintf(path, sizeof(path), "%s/tokenizer.json", dir);
        unlink(path);
        snprintf(path, sizeof(path), "%s/tokenizer_config.json", dir);
        unlink(path);
        rmdir(dir);
}

static void masks(void) {
        static const char *const schemas[] = {
                "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":12},\"n\":{\"type\":"
                "\"integer\"},\"tags\":{\"type\":\"array\",\"items\":{\"enum\":[\"a\",\"bc\",7,null]},\"maxItems\":4},"
                "\"x\":{\"type\":[\"number\",\"null\"]}},\"required\":[\"name\",\"n\"]}",
                "{}",
                "{\"type\":\"array\",\"items\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":3},\"maxItems\":5}",
                "{\"type\":\"number\"}",
                "{\"anyOf\":[{\"type\":\"boolean\"},{\"type\":\"object\",\"additionalProperties\":{\"type\":\"integer\"}}]}",
        };
        struct vocab v;
        struct dsv_gvocab *gv;
        uint64_t rng = 42;
        int walks_done = 0, states = 0;

        make_vocab(&v);
        REQUIRE(dsv_gvocab_new(v.n, v.eos, vocab_bytes, &v, &gv) == 0, "vocab");
        size_t words = dsv_gvocab_mask_words(gv);
        uint32_t *mask = malloc(words * 4);
        struct dsv_gmatch *m, *t;
        for (size_t si = 0; si < sizeof(schemas) / sizeof(*schemas); si++) {
                struct dsv_grammar *g = compile_ok(schemas[si]);
                REQUIRE(g, "compile");
                REQUIRE(dsv_gmatch_new(g, &m) == 0 && dsv_gmatch_new(g, &t) == 0, "new");
                for (int walk = 0; walk < 12; walk++) {
                        char out[4096];
                        size_t n_out = 0;
                        dsv_gmatch_reset(m, g);
                        for (int step = 0; step < 200; step++) {
                                int32_t allowed = dsv_gvocab_mask(gv, m, mask), brute = 0, pick = -1, k;
                                states++;
                                for (int32_t id = 0; id < v.n; id++) {
                                        bool ok;
                                        if (id == v.eos)
                                                ok = dsv_gmatch_can_end(m);
                                        else if (!v.s[id])
                                                ok = false;
                                        else {
                                                dsv_gmatch_copy(t, m);
                                                ok = dsv_gmatch_feed(t, v.s[id], v.len[id]) == 0;
                                        }
                                        brute += ok;
                                        if (ok != (bool)(mask[id >> 5] >> (id & 31) & 1)) {
                                                CHECK(false, "schema %zu walk %d step %d token %d (%.*s): mask %d brute %d",
                                                      si, walk, step, id, (int)v.len[id], v.s[id] ? v.s[id] : "",
                                                      !ok, ok);
                                                break;
                                        }
                                }
                                CHECK(allowed == brute, "allowed %d brute %d", allowed, brute);
                                if (allowed == 0 || dsv_gmatch_done(m))
                                        break;
                                /* a random allowed token; towards the end, the first that may close */
                                k = (int32_t)(dsv_mix64(rng++) % (uint64_t)allowed);
                                for (int32_t id = 0; id < v.n && pick < 0; id++)
                                        if (mask[id >> 5] >> (id & 31) & 1 && k-- == 0)
                                                pick = id;
                                if (step > 150 && dsv_gmatch_can_end(m))
                                        pick = v.eos;
                                if (pick == v.eos)
                                        break;
                                REQUIRE(n_out + v.len[pick] < sizeof(out), "output too long");
                                memcpy(out + n_out, v.s[pick], v.len[pick]);
                                n_out += v.len[pick];
                                CHECK(dsv_gmatch_feed(m, v.s[pick], v.len[pick]) == 0, "allowed token refused");
                        }
                        if (dsv_gmatch_can_end(m)) {
                                json_error_t je;
                                json_t *j = json_loadb(out, n_out, JSON_DECODE_ANY, &je);
                                CHECK(j, "schema %zu: complete output does not parse: %.*s (%s)", si, (int)n_out, out,
                                      je.text);
                                json_decref(j);
                                walks_done++;
                        }
                }
                dsv_gmatch_free(m);
                dsv_gmatch_free(t);
                dsv_grammar_free(g);
        }
        CHECK(walks_done > 20, "only %d walks completed their value", walks_done);
        printf("masks: %d states checked against brute force, %d values completed\n", states, walks_done);
        free(mask);
        dsv_gvocab_free(gv);
        for (int32_t i = 0; i < v.n; i++)
                free(v.s[i]);
        free(v.s);
        free(v.len);
}

int main(void) {
        texts();
        bad_schemas();
        masks();
        return test_result("test-grammar");
}
