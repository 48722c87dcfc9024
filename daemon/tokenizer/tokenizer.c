/* tokenizer.json loading: validates every component against what the encoder implements,
 * builds the BPE merge table, the per-id decoded bytes, the added-token tries and the
 * compiled pre-tokenizer regexes. Also the byte-level alphabet and small shared helpers. */
#include "config.h"

#include <jansson.h>

#include "daemon/tokenizer/tok_internal.h"
#include "daemon/tokenizer/tok_ucd16.h"

/* ------------------------------------------------------------------ UTF-8 */

size_t tok_utf8_next(const uint8_t *s, size_t n, uint32_t *cp, size_t *bad) {
        uint8_t c = s[0];
        if (c < 0x80) {
                *cp = c;
                return 1;
        }
        /* Unicode's "maximal subpart" rule (also WHATWG, Python, Rust): the bad run ends at
         * the first byte that cannot continue a well-formed sequence. */
        size_t need;
        uint8_t lo = 0x80, hi = 0xbf;
        uint32_t v;
        if (c >= 0xc2 && c <= 0xdf) {
                need = 1;
                v = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
                need = 2;
                v = c & 0x0f;
                if (c == 0xe0)
                        lo = 0xa0;
                else if (c == 0xed)
                        hi = 0x9f;
        } else if (c >= 0xf0 && c <= 0xf4) {
                need = 3;
                v = c & 0x07;
                if (c == 0xf0)
                        lo = 0x90;
                else if (c == 0xf4)
                        hi = 0x8f;
        } else {
                *bad = 1;
                return 0;
        }
        size_t i = 1;
        for (; i <= need; i++) {
                if (i >= n) {
                        *bad = i;
                        return 0;
                }
                uint8_t d = s[i];
                if (d < lo || d > hi) {
                        *bad = i;
                        return 0;
                }
                lo = 0x80;
                hi = 0xbf;
                v = (v << 6) | (d & 0x3f);
        }
        *cp = v;
        return need + 1;
}

size_t tok_utf8_valid_prefix(const uint8_t *s, size_t n) {
        size_t i = 0;
        while (i < n) {
                /* ASCII fast path, 8 bytes at a time */
                while (i + 8 <= n) {
                        uint64_t w;
                        memcpy(&w, s + i, 8);
                        if (w & 0x8080808080808080ull)
                                break;
                        i += 8;
                }
                if (i >= n)
                        break;
                if (s[i] < 0x80) {
                        i++;
                        continue;
                }
                uint32_t cp;
                size_t bad, k = tok_utf8_next(s + i, n - i, &cp, &bad);
                if (k == 0)
                        return i;
                i += k;
        }
        return n;
}

size_t tok_utf8_put(uint32_t cp, char *o) {
        if (cp < 0x80) {
                o[0] = (char)cp;
                return 1;
        }
        if (cp < 0x800) {
                o[0] = (char)(0xc0 | (cp >> 6));
                o[1] = (char)(0x80 | (cp & 0x3f));
                return 2;
        }
        if (cp < 0x10000) {
                o[0] = (char)(0xe0 | (cp >> 12));
                o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
                o[2] = (char)(0x80 | (cp & 0x3f));
                return 3;
        }
        o[0] = (char)(0xf0 | (cp >> 18));
        o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[3] = (char)(0x80 | (cp & 0x3f));
        return 4;
}

bool tok_is_white_space(uint32_t c) {
        return (c >= 0x09 && c <= 0x0d) || c == 0x20 || c == 0x85 || c == 0xa0 || c == 0x1680 ||
               (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f ||
               c == 0x3000;
}

/* ------------------------------------------------------------------ hash maps */

uint64_t tok_hash_bytes(const void *p, size_t n) {
        const uint8_t *s = p;
        uint64_t h = 0x9e3779b97f4a7c15ull ^ (n * 0xff51afd7ed558ccdull);
        while (n >= 8) {
                uint64_t w;
                memcpy(&w, s, 8);
                h = (h ^ tok_hash64(w)) * 0xc4ceb9fe1a85ec53ull;
                s += 8;
                n -= 8;
        }
        uint64_t w = 0;
        memcpy(&w, s, n);
        h = (h ^ tok_hash64(w ^ n)) * 0xc4ceb9fe1a85ec53ull;
        return tok_hash64(h);
}

int tok_map64_init(struct tok_map64 *m, size_t expected) {
        size_t cap = 16;
        while (cap < expected * 2 + 16)
                cap <<= 1;
        m->keys = malloc(cap * sizeof(uint64_t));
        m->vals = malloc(cap * sizeof(uint64_t));
        if (!m->keys || !m->vals) {
                tok_map64_done(m);
                return -ENOMEM;
        }
        memset(m->keys, 0xff, cap * sizeof(uint64_t));
        m->mask = cap - 1;
        m->n = 0;
        return 0;
}

void tok_map64_done(struct tok_map64 *m) {
        free(m->keys);
        free(m->vals);
        m->keys = m->vals = NULL;
        m->mask = m->n = 0;
}

static int map64_grow(struct tok_map64 *m) {
        struct tok_map64 g;
        int r = tok_map64_init(&g, (m->mask + 1));
        if (r < 0)
                return r;
        for (size_t i = 0; i <= m->mask; i++)
                if (m->keys[i] != UINT64_MAX)
                        tok_map64_put(&g, m->keys[i], m->vals[i]);
        tok_map64_done(m);
        *m = g;
        return 0;
}

int tok_map64_put(struct tok_map64 *m, uint64_t key, uint64_t val) {
        if (key == UINT64_MAX)
                return -EINVAL;
        if ((m->n + 1) * 2 > m->mask + 1) {
                int r = map64_grow(m);
                if (r < 0)
                        return r;
        }
        size_t i = tok_hash64(key) & m->mask;
        for (;;) {
                if (m->keys[i] == key) {
                        m->vals[i] = val;
                        return 1;
                }
                if (m->keys[i] == UINT64_MAX) {
                        m->keys[i] = key;
                        m->vals[i] = val;
                        m->n++;
                        return 0;
                }
                i = (i + 1) & m->mask;
        }
}

static int strmap_init(struct tok_strmap *m, size_t expected) {
        size_t cap = 16;
        while (cap < expected * 2 + 16)
                cap <<= 1;
        m->slots = calloc(cap, sizeof(uint32_t));
        if (!m->slots)
                return -ENOMEM;
        m->mask = cap - 1;
        return 0;
}

/* Inserts id keyed by its decoded bytes unless those bytes are already present. */
static void strmap_put(struct dsv_tok *tok, int32_t id) {
        const char *p;
        size_t n;
        if (!tok_id_bytes(tok, id, &p, &n))
                return;
        size_t i = tok_hash_bytes(p, n) & tok->bytes_to_id.mask;
        for (;;) {
                uint32_t s = tok->bytes_to_id.slots[i];
                if (s == 0) {
                        tok->bytes_to_id.slots[i] = (uint32_t)id + 1;
                        return;
                }
                const char *q = NULL;
                size_t m = 0;
                tok_id_bytes(tok, (int32_t)s - 1, &q, &m);
                if (m == n && memcmp(p, q, n) == 0)
                        return;
                i = (i + 1) & tok->bytes_to_id.mask;
        }
}

int32_t tok_strmap_get(const struct dsv_tok *tok, const char *s, size_t n) {
        size_t i = tok_hash_bytes(s, n) & tok->bytes_to_id.mask;
        for (;;) {
                uint32_t v = tok->bytes_to_id.slots[i];
                if (v == 0)
                        return -ENOENT;
                const char *q = NULL;
                size_t m = 0;
                tok_id_bytes(tok, (int32_t)v - 1, &q, &m);
                if (m == n && memcmp(s, q, n) == 0)
                        return (int32_t)v - 1;
                i = (i + 1) & tok->bytes_to_id.mask;
        }
}

/* ------------------------------------------------------------------ ids */

void dsv_tok_ids_done(struct dsv_tok_ids *ids) {
        free(ids->v);
        ids->v = NULL;
        ids->n = ids->cap = 0;
}

int dsv_tok_ids_push(struct dsv_tok_ids *ids, int32_t id) {
        if (ids->n == ids->cap) {
                size_t cap = ids->cap ? ids->cap * 2 : 64;
                int32_t *v = realloc(ids->v, cap * sizeof(int32_t));
                if (!v)
                        return -ENOMEM;
                ids->v = v;
                ids->cap = cap;
        }
        ids->v[ids->n++] = id;
        return 0;
}

/* ------------------------------------------------------------------ loading */

#define MAX_IDS (1 << 24)
#define MAX_TOKEN_BYTES 4096
#define MAX_PATTERN_BYTES 65536

struct loader {
        struct dsv_tok *tok;
        struct dsv_error *err;
        char *arena;
        size_t arena_n, arena_cap;
};

static int arena_add(struct loader *L, const void *p, size_t n, uint64_t *off) {
        if (L->arena_n + n > L->arena_cap) {
                size_t cap = L->arena_cap ? L->arena_cap : 1 << 16;
                while (cap < L->arena_n + n)
                        cap *= 2;
                if (cap >= ((uint64_t)1 << 40))
                        return -ENOMEM;
                char *a = realloc(L->arena, cap);
                if (!a)
                        return -ENOMEM;
                L->arena = a;
                L->arena_cap = cap;
        }
        memcpy(L->arena + L->arena_n, p, n);
        *off = ((uint64_t)L->arena_n << 24) | n;
        L->arena_n += n;
        return 0;
}

/* Hugging Face's ByteLevel decoder, per token: when every character belongs to the
 * byte-level alphabet the token stands for those bytes, otherwise for its own UTF-8. Writes
 * to out (capacity >= n); returns the decoded length. */
static size_t bytelevel_decode(const char *s, size_t n, char *out) {
        size_t i = 0, k = 0;
        while (i < n) {
                uint32_t cp;
                size_t bad, c = tok_utf8_next((const uint8_t *)s + i, n - i, &cp, &bad);
                int b = c ? tok_cp_byte(cp) : -1;
                if (b < 0) {
                        memcpy(out, s, n);
                        return n;
                }
                out[k++] = (char)b;
                i += c;
        }
        return k;
}

/* Whether the token string is made only of byte-level alphabet characters. */
static bool is_bytelevel(const char *s, size_t n) {
        size_t i = 0;
        while (i < n) {
                uint32_t cp;
                size_t bad, c = tok_utf8_next((const uint8_t *)s + i, n - i, &cp, &bad);
                if (!c || tok_cp_byte(cp) < 0)
                        return false;
                i += c;
        }
        return true;
}

static int get_bool(json_t *o, const char *key, bool def, bool *out, const char *what, struct dsv_error *err) {
        json_t *v = json_object_get(o, key);
        if (!v || json_is_null(v)) {
                *out = def;
                return 0;
        }
        if (!json_is_boolean(v))
                return dsv_error_set(err, EINVAL, "tokenizer.json: %s: \"%s\" must be true or false", what, key);
        *out = json_is_true(v);
        return 0;
}

static const char *type_of(json_t *o) {
        json_t *t = json_object_get(o, "type");
        return json_is_string(t) ? json_string_value(t) : NULL;
}

static int check_normalizer(json_t *n, struct dsv_error *err) {
        if (!n || json_is_null(n))
                return 0;
        if (!json_is_object(n))
                return dsv_error_set(err, EINVAL, "tokenizer.json: normalizer must be an object or null");
        const char *t = type_of(n);
        if (!t)
                return dsv_error_set(err, EINVAL, "tokenizer.json: normalizer has no \"type\"");
        if (strcmp(t, "Sequence") != 0)
                return dsv_error_set(err, EOPNOTSUPP,
                                     "tokenizer.json: normalizer type \"%s\" is not supported (only an empty Sequence)", t);
        json_t *list = json_object_get(n, "normalizers");
        if (!json_is_array(list))
                return dsv_error_set(err, EINVAL, "tokenizer.json: normalizer Sequence needs a \"normalizers\" array");
        size_t i;
        json_t *c;
        json_array_foreach(list, i, c) {
                int r = check_normalizer(c, err);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* ------------------------------------------------------------------ regex translation */

static uint32_t ucd16_lo[ARRAY_SIZE(tok_ucd16_added)], ucd16_hi[ARRAY_SIZE(tok_ucd16_added)];
static size_t ucd16_n;
static pthread_once_t ucd16_once = PTHREAD_ONCE_INIT;

static void ucd16_init(void) {
        /* all categories' ranges, sorted by start (insertion sort: 104 entries) */
        for (size_t i = 0; i < ARRAY_SIZE(tok_ucd16_added); i++) {
                size_t j = ucd16_n++;
                while (j > 0 && ucd16_lo[j - 1] > tok_ucd16_added[i].lo) {
                        ucd16_lo[j] = ucd16_lo[j - 1];
                        ucd16_hi[j] = ucd16_hi[j - 1];
                        j--;
                }
                ucd16_lo[j] = tok_ucd16_added[i].lo;
                ucd16_hi[j] = tok_ucd16_added[i].hi;
        }
}

bool tok_has_ucd16(const uint8_t *s, size_t n) {
        pthread_once(&ucd16_once, ucd16_init);
        for (size_t i = 0; i < n;) {
                if (s[i] < 0xe1) { /* everything below U+1000 is unaffected */
                        i += s[i] < 0x80 ? 1 : s[i] < 0xe0 ? 2 : 3;
                        continue;
                }
                uint32_t cp;
                size_t bad, k = tok_utf8_next(s + i, n - i, &cp, &bad);
                if (!k)
                        return true; /* not UTF-8: be safe */
                i += k;
                if (cp < ucd16_lo[0])
                        continue;
                size_t lo = 0, hi = ucd16_n;
                while (hi - lo > 1) {
                        size_t mid = (lo + hi) / 2;
                        if (ucd16_lo[mid] <= cp)
                                lo = mid;
                        else
                                hi = mid;
                }
                if (cp <= ucd16_hi[lo])
                        return true;
        }
        return false;
}

/* The category letter a \p name stands for (L M N P S), or 0 for others. */
static char category_of(const char *name, size_t n) {
        static const struct {
                const char *name;
                char cat;
        } names[] = {
                {"L", 'L'}, {"Letter", 'L'}, {"M", 'M'}, {"Mark", 'M'}, {"Combining_Mark", 'M'}, {"N", 'N'},
                {"Number", 'N'}, {"P", 'P'}, {"Punctuation", 'P'}, {"S", 'S'}, {"Symbol", 'S'},
        };
        for (size_t i = 0; i < ARRAY_SIZE(names); i++)
                if (strlen(names[i].name) == n && memcmp(names[i].name, name, n) == 0)
                        return names[i].cat;
        return 0;
}

static int add_ranges(struct dsv_strbuf *b, char cat) {
        char x[48];
        for (size_t i = 0; i < ARRAY_SIZE(tok_ucd16_added); i++) {
                if (tok_ucd16_added[i].cat != cat)
                        continue;
                int k = snprintf(x, sizeof(x), "\\x{%X}-\\x{%X}", tok_ucd16_added[i].lo, tok_ucd16_added[i].hi);
                int r = dsv_strbuf_add(b, x, (size_t)k);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* Hugging Face's regexes run on Oniguruma with Unicode 16.0 tables, PCRE2 10.42 has
 * Unicode 14.0: \p{L}, \p{M}, \p{N}, \p{P}, \p{S} (and their long names) get the code
 * points added since, as ranges in the same class (\p{L} outside brackets becomes
 * [\p{L}...], negated forms [^\p{L}...]). A negated property inside brackets stays as
 * it is. Everything else is passed through: the syntax of tokenizer patterns is common to
 * both engines. */
static int translate_pattern(const char *p, size_t n, struct dsv_strbuf *out) {
        bool in_class = false;
        size_t class_start = 0;
        int r = dsv_strbuf_add(out, "", 0);
        for (size_t i = 0; i < n && r >= 0;) {
                char c = p[i];
                if (c == '\\' && i + 1 < n && p[i + 1] == 'Q') {
                        const char *e = NULL;
                        for (size_t j = i + 2; j + 1 < n; j++)
                                if (p[j] == '\\' && p[j + 1] == 'E') {
                                        e = p + j + 2;
                                        break;
                                }
                        size_t k = e ? (size_t)(e - (p + i)) : n - i;
                        r = dsv_strbuf_add(out, p + i, k);
                        i += k;
                        continue;
                }
                if (c == '\\' && i + 2 < n && (p[i + 1] == 'p' || p[i + 1] == 'P')) {
                        bool neg = p[i + 1] == 'P';
                        const char *name = p + i + 2;
                        size_t nl = 1, total = 3;
                        if (p[i + 2] == '{') {
                                const char *close = memchr(p + i + 3, '}', n - i - 3);
                                if (!close)
                                        return dsv_strbuf_add(out, p + i, n - i);
                                name = p + i + 3;
                                nl = (size_t)(close - name);
                                total = nl + 4;
                                if (nl > 0 && name[0] == '^') {
                                        neg = !neg;
                                        name++;
                                        nl--;
                                }
                        }
                        char cat = category_of(name, nl);
                        if (!cat || (neg && in_class)) {
                                r = dsv_strbuf_add(out, p + i, total);
                        } else {
                                char prop[8] = {'\\', 'p', '{', cat, '}', 0};
                                if (!in_class)
                                        r = dsv_strbuf_add(out, neg ? "[^" : "[", neg ? 2 : 1);
                                if (r >= 0)
                                        r = dsv_strbuf_add(out, prop, 5);
                                if (r >= 0)
                                        r = add_ranges(out, cat);
                                if (r >= 0 && !in_class)
                                        r = dsv_strbuf_add(out, "]", 1);
                        }
                        i += total;
                        continue;
                }
                if (c == '\\') {
                        r = dsv_strbuf_add(out, p + i, MIN((size_t)2, n - i));
                        i += 2;
                        continue;
                }
                if (!in_class && c == '[') {
                        in_class = true;
                        r = dsv_strbuf_add(out, "[", 1);
                        i++;
                        if (i < n && p[i] == '^') {
                                r = r < 0 ? r : dsv_strbuf_add(out, "^", 1);
                                i++;
                        }
                        class_start = i;
                        if (i < n && p[i] == ']') { /* a leading ] is literal */
                                r = r < 0 ? r : dsv_strbuf_add(out, "]", 1);
                                i++;
                        }
                        continue;
                }
                if (in_class && c == '[' && i + 1 < n && p[i + 1] == ':') {
                        const char *e = strstr(p + i, ":]");
                        size_t k = e && (size_t)(e - p) < n ? (size_t)(e - (p + i)) + 2 : n - i;
                        r = dsv_strbuf_add(out, p + i, k);
                        i += k;
                        continue;
                }
                if (in_class && c == ']' && i > class_start)
                        in_class = false;
                r = dsv_strbuf_add(out, p + i, 1);
                i++;
        }
        return r;
}

static int add_split(struct loader *L, const char *pattern, size_t plen, bool literal,
                     enum tok_split_behavior behavior, bool invert) {
        struct dsv_tok *tok = L->tok;
        struct tok_split *s = realloc(tok->splits, (tok->n_splits + 1) * sizeof(*s));
        if (!s)
                return -ENOMEM;
        tok->splits = s;
        s = &tok->splits[tok->n_splits];
        *s = (struct tok_split){.behavior = behavior, .invert = invert};
        if (plen == 0)
                return dsv_error_set(L->err, EINVAL, "tokenizer.json: Split pattern is empty");
        if (plen > MAX_PATTERN_BYTES)
                return dsv_error_set(L->err, E2BIG, "tokenizer.json: Split pattern is longer than %d bytes",
                                     MAX_PATTERN_BYTES);
        if (literal) {
                s->literal = malloc(plen);
                if (!s->literal)
                        return -ENOMEM;
                memcpy(s->literal, pattern, plen);
                s->literal_len = plen;
        } else {
                int ec;
                PCRE2_SIZE eo;
                struct dsv_strbuf t = {0};
                int r = translate_pattern(pattern, plen, &t);
                if (r < 0) {
                        free(t.p);
                        return r;
                }
                s->re = pcre2_compile((PCRE2_SPTR)pattern, plen, PCRE2_UTF | PCRE2_UCP | PCRE2_NEVER_BACKSLASH_C, &ec, &eo,
                                      NULL);
                if (!s->re) {
                        free(t.p);
                        PCRE2_UCHAR msg[256];
                        pcre2_get_error_message(ec, msg, sizeof(msg));
                        return dsv_error_set(L->err, EINVAL, "tokenizer.json: Split regex /%.200s/ at offset %zu: %s",
                                             pattern, (size_t)eo, (const char *)msg);
                }
                s->jit = pcre2_jit_compile(s->re, PCRE2_JIT_COMPLETE) == 0;
                if (t.n != plen || memcmp(t.p, pattern, plen) != 0) {
                        s->re16 = pcre2_compile((PCRE2_SPTR)t.p, t.n, PCRE2_UTF | PCRE2_UCP | PCRE2_NEVER_BACKSLASH_C, &ec,
                                                &eo, NULL);
                        if (s->re16) {
                                s->jit16 = pcre2_jit_compile(s->re16, PCRE2_JIT_COMPLETE) == 0;
                                L->tok->has_re16 = true;
                        }
                }
                free(t.p);
        }
        tok->n_splits++;
        return 0;
}

static const char gpt2_pattern[] =
        "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static int parse_pre_tokenizer(struct loader *L, json_t *p, bool *byte_level) {
        struct dsv_error *err = L->err;
        if (!json_is_object(p))
                return dsv_error_set(err, EINVAL, "tokenizer.json: pre_tokenizer must be an object");
        if (*byte_level)
                return dsv_error_set(err, EOPNOTSUPP, "tokenizer.json: pre_tokenizer: ByteLevel must come last");
        const char *t = type_of(p);
        if (!t)
                return dsv_error_set(err, EINVAL, "tokenizer.json: pre_tokenizer has no \"type\"");
        if (strcmp(t, "Sequence") == 0) {
                json_t *list = json_object_get(p, "pretokenizers"), *c;
                size_t i;
                if (!json_is_array(list))
                        return dsv_error_set(err, EINVAL, "tokenizer.json: pre_tokenizer Sequence needs a \"pretokenizers\" array");
                json_array_foreach(list, i, c) {
                        int r = parse_pre_tokenizer(L, c, byte_level);
                        if (r < 0)
                                return r;
                }
                return 0;
        }
        if (strcmp(t, "Split") == 0) {
                json_t *pat = json_object_get(p, "pattern"), *v;
                const char *beh = json_string_value(json_object_get(p, "behavior"));
                enum tok_split_behavior b;
                bool invert = false, literal;
                int r;
                if (!json_is_object(pat))
                        return dsv_error_set(err, EINVAL, "tokenizer.json: Split needs a \"pattern\" object");
                if ((v = json_object_get(pat, "Regex")) && json_is_string(v))
                        literal = false;
                else if ((v = json_object_get(pat, "String")) && json_is_string(v))
                        literal = true;
                else
                        return dsv_error_set(err, EINVAL, "tokenizer.json: Split pattern must be {\"Regex\": ...} or {\"String\": ...}");
                if (!beh)
                        return dsv_error_set(err, EINVAL, "tokenizer.json: Split needs a \"behavior\"");
                if (strcmp(beh, "Isolated") == 0)
                        b = TOK_SPLIT_ISOLATED;
                else if (strcmp(beh, "Removed") == 0)
                        b = TOK_SPLIT_REMOVED;
                else if (strcmp(beh, "Contiguous") == 0)
                        b = TOK_SPLIT_CONTIGUOUS;
                else if (strcmp(beh, "MergedWithPrevious") == 0)
                        b = TOK_SPLIT_MERGED_WITH_PREVIOUS;
                else if (strcmp(beh, "MergedWithNext") == 0)
                        b = TOK_SPLIT_MERGED_WITH_NEXT;
                else
                        return dsv_error_set(err, EOPNOTSUPP, "tokenizer.json: Split behavior \"%s\" is not supported", beh);
                r = get_bool(p, "invert", false, &invert, "Split", err);
                if (r < 0)
                        return r;
                return add_split(L, json_string_value(v), json_string_length(v), literal, b, invert);
        }
        if (strcmp(t, "ByteLevel") == 0) {
                bool aps = false, use_regex = true;
                int r = get_bool(p, "add_prefix_space", false, &aps, "ByteLevel", err);
                if (r < 0)
                        return r;
                r = get_bool(p, "use_regex", true, &use_regex, "ByteLevel", err);
                if (r < 0)
                        return r;
                if (aps)
                        return dsv_error_set(err, EOPNOTSUPP, "tokenizer.json: ByteLevel add_prefix_space=true is not supported");
                if (use_regex) {
                        r = add_split(L, gpt2_pattern, sizeof(gpt2_pattern) - 1, false, TOK_SPLIT_ISOLATED, false);
                        if (r < 0)
                                return r;
                }
                *byte_level = true;
                return 0;
        }
        return dsv_error_set(err, EOPNOTSUPP, "tokenizer.json: pre_tokenizer type \"%s\" is not supported", t);
}

static int check_bytelevel_component(json_t *d, const char *what, bool allow_null, struct dsv_error *err) {
        if (!d || json_is_null(d)) {
                if (allow_null)
                        return 0;
                return dsv_error_set(err, EOPNOTSUPP, "tokenizer.json: %s is missing (only ByteLevel is supported)", what);
        }
        if (!json_is_object(d))
                return dsv_error_set(err, EINVAL, "tokenizer.json: %s must be an object", what);
        const char *t = type_of(d);
        if (!t)
                return dsv_error_set(err, EINVAL, "tokenizer.json: %s has no \"type\"", what);
        if (strcmp(t, "ByteLevel") != 0)
                return dsv_error_set(err, EOPNOTSUPP, "tokenizer.json: %s type \"%s\" is not supported (only ByteLevel)",
                                     what, t);
        return 0;
}

static int vocab_string_id(json_t *vocab, const char *s, size_t n, int32_t *id) {
        char key[MAX_TOKEN_BYTES * 4 + 1];
        json_t *v;
        if (n >= sizeof(key) || memchr(s, 0, n))
                return -ENOENT;
        memcpy(key, s, n);
        key[n] = 0;
        v = json_object_get(vocab, key);
        if (!v)
                return -ENOENT;
        *id = (int32_t)json_integer_value(v);
        return 0;
}

static int parse_model(struct loader *L, json_t *m, json_t **ret_vocab) {
        struct dsv_tok *tok = L->tok;
        struct dsv_error *err = L->err;
        if (!json_is_object(m))
                return dsv_error_set(err, EINVAL, "tokenizer.json: \"model\" is missing or not an object");
        const char *t = type_of(m);
        if (t && strcmp(t, "BPE") != 0)
                return dsv_error_set(err, EOPNOTSUPP, "tokenizer.json: model type \"%s\" is not supported (only BPE)", t);
        json_t *vocab = json_object_get(m, "vocab"), *merges = json_object_get(m, "merges"), *v;
        if (!json_is_object(vocab))
                return dsv_error_set(err, EINVAL, "tokenizer.json: model.vocab must be an object");
        if (!json_is_array(merges))
                return dsv_error_set(err, EINVAL, "tokenizer.json: model.merges must be an array");
        if ((v = json_object_get(m, "dropout")) && !json_is_null(v))
                return dsv_error_set(err, EOPNOTSUPP, "tokenizer.json: BPE dropout is not supported");
        if ((v = json_object_get(m, "unk_token")) && !json_is_null(v))
                return dsv_error_set(err, EOPNOTSUPP, "tokenizer.json: BPE unk_token is not supported");
        if ((v = json_object_get(m, "continuing_subword_prefix")) && !json_is_null(v))
                return dsv_error_set(err, EOPNOTSUPP, "tokenizer.json: BPE continuing_subword_prefix is not supported");
        if ((v = json_object_get(m, "end_of_word_suffix")) && !json_is_null(v))
                return dsv_error_set(err, EOPNOTSUPP, "tokenizer.json: BPE end_of_word_suffix is not supported");
        bool bf = false;
        int r = get_bool(m, "byte_fallback", false, &bf, "model", err);
        if (r < 0)
                return r;
        if (bf)
                return dsv_error_set(err, EOPNOTSUPP, "tokenizer.json: BPE byte_fallback is not supported");
        r = get_bool(m, "ignore_merges", false, &tok->ignore_merges, "model", err);
        if (r < 0)
                return r;

        const char *key;
        json_t *val;
        int32_t max_id = -1;
        json_object_foreach(vocab, key, val) {
                if (!json_is_integer(val) || json_integer_value(val) < 0 || json_integer_value(val) >= MAX_IDS)
                        return dsv_error_set(err, EINVAL, "tokenizer.json: vocab entry \"%.100s\" needs an id in [0, %d)", key,
                                             MAX_IDS);
                max_id = MAX(max_id, (int32_t)json_integer_value(val));
        }
        tok->n_ids = max_id + 1;
        *ret_vocab = vocab;

        r = tok_map64_init(&tok->merges, json_array_size(merges));
        if (r < 0)
                return r;
        size_t i;
        json_array_foreach(merges, i, v) {
                const char *a, *b;
                size_t na, nb;
                if (json_is_string(v)) {
                        const char *s = json_string_value(v), *sp = memchr(s, ' ', json_string_length(v));
                        if (!sp || memchr(sp + 1, ' ', json_string_length(v) - (size_t)(sp + 1 - s)))
                                return dsv_error_set(err, EINVAL, "tokenizer.json: merge %zu \"%.100s\" is not two tokens separated by one space",
                                                     i, s);
                        a = s;
                        na = (size_t)(sp - s);
                        b = sp + 1;
                        nb = json_string_length(v) - na - 1;
                } else if (json_is_array(v) && json_array_size(v) == 2 && json_is_string(json_array_get(v, 0)) &&
                           json_is_string(json_array_get(v, 1))) {
                        a = json_string_value(json_array_get(v, 0));
                        na = json_string_length(json_array_get(v, 0));
                        b = json_string_value(json_array_get(v, 1));
                        nb = json_string_length(json_array_get(v, 1));
                } else
                        return dsv_error_set(err, EINVAL, "tokenizer.json: merge %zu must be \"a b\" or [\"a\", \"b\"]", i);
                if (na + nb > MAX_TOKEN_BYTES * 4)
                        return dsv_error_set(err, E2BIG, "tokenizer.json: merge %zu is too long", i);
                int32_t ia, ib, in;
                char buf[MAX_TOKEN_BYTES * 4];
                if (vocab_string_id(vocab, a, na, &ia) < 0)
                        return dsv_error_set(err, EINVAL, "tokenizer.json: merge %zu: \"%.*s\" is not in the vocabulary", i,
                                             (int)MIN(na, 100), a);
                if (vocab_string_id(vocab, b, nb, &ib) < 0)
                        return dsv_error_set(err, EINVAL, "tokenizer.json: merge %zu: \"%.*s\" is not in the vocabulary", i,
                                             (int)MIN(nb, 100), b);
                memcpy(buf, a, na);
                memcpy(buf + na, b, nb);
                if (vocab_string_id(vocab, buf, na + nb, &in) < 0)
                        return dsv_error_set(err, EINVAL, "tokenizer.json: merge %zu: \"%.*s\" is not in the vocabulary", i,
                                             (int)MIN(na + nb, 100), buf);
                /* Merges of tokens outside the byte-level alphabet can never apply. */
                if (!is_bytelevel(a, na) || !is_bytelevel(b, nb))
                        continue;
                r = tok_map64_put(&tok->merges, ((uint64_t)(uint32_t)ia << 32) | (uint32_t)ib,
                                  ((uint64_t)i << 32) | (uint32_t)in);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* Hugging Face does not take added-token ids from the file (it only warns when they differ):
 * AddedVocabulary::add_tokens gives a token whose content is a vocabulary entry that
 * entry's id, and any other token the next id after the largest so far (at least the
 * vocabulary's size), in file order; a content seen before is skipped. */
static int parse_added(struct loader *L, json_t *list, json_t *vocab) {
        struct dsv_tok *tok = L->tok;
        struct dsv_error *err = L->err;
        int32_t model_size = (int32_t)json_object_size(vocab), max_added = -1;
        if (!list || json_is_null(list))
                return 0;
        if (!json_is_array(list))
                return dsv_error_set(err, EINVAL, "tokenizer.json: added_tokens must be an array");
        tok->added = calloc(json_array_size(list) + 1, sizeof(struct tok_added));
        if (!tok->added)
                return -ENOMEM;
        size_t i;
        json_t *a;
        json_array_foreach(list, i, a) {
                struct tok_added *t = &tok->added[tok->n_added];
                json_t *id = json_object_get(a, "id"), *content = json_object_get(a, "content");
                bool single_word = false, dup = false;
                int r;
                if (!json_is_object(a) || !json_is_integer(id) || !json_is_string(content))
                        return dsv_error_set(err, EINVAL, "tokenizer.json: added_tokens[%zu] needs an integer \"id\" and a string \"content\"", i);
                if (json_string_length(content) > MAX_TOKEN_BYTES)
                        return dsv_error_set(err, EINVAL, "tokenizer.json: added_tokens[%zu]: content is longer than %d bytes", i,
                                             MAX_TOKEN_BYTES);
                if ((r = get_bool(a, "special", false, &t->special, "added token", err)) < 0 ||
                    (r = get_bool(a, "lstrip", false, &t->lstrip, "added token", err)) < 0 ||
                    (r = get_bool(a, "rstrip", false, &t->rstrip, "added token", err)) < 0 ||
                    (r = get_bool(a, "normalized", !t->special, &t->normalized, "added token", err)) < 0 ||
                    (r = get_bool(a, "single_word", false, &single_word, "added token", err)) < 0)
                        return r;
                if (single_word)
                        return dsv_error_set(err, EOPNOTSUPP, "tokenizer.json: added token \"%.100s\": single_word is not supported",
                                             json_string_value(content));
                t->len = json_string_length(content);
                for (size_t k = 0; k < tok->n_added && !dup; k++)
                        dup = tok->added[k].len == t->len && memcmp(tok->added[k].content, json_string_value(content), t->len) == 0;
                if (t->len == 0 || dup) {
                        *t = (struct tok_added){0};
                        continue;
                }
                int32_t vid;
                if (vocab_string_id(vocab, json_string_value(content), t->len, &vid) == 0)
                        t->id = vid;
                else if (max_added >= model_size || model_size == 0)
                        t->id = max_added + 1;
                else
                        t->id = model_size;
                if (t->id >= MAX_IDS)
                        return dsv_error_set(err, EINVAL, "tokenizer.json: added_tokens[%zu]: id out of range", i);
                max_added = MAX(max_added, t->id);
                t->content = malloc(t->len);
                if (!t->content)
                        return -ENOMEM;
                memcpy(t->content, json_string_value(content), t->len);
                tok->n_ids = MAX(tok->n_ids, t->id + 1);
                tok->n_added++;
        }
        return 0;
}

static int trie_node(struct tok_trie *t, uint8_t byte) {
        if (t->n == t->cap) {
                size_t cap = t->cap ? t->cap * 2 : 256;
                struct tok_trie_node *n = realloc(t->nodes, cap * sizeof(*n));
                if (!n)
                        return -ENOMEM;
                t->nodes = n;
                t->cap = cap;
        }
        t->nodes[t->n] = (struct tok_trie_node){.child = -1, .sibling = -1, .token = -1, .byte = byte};
        return (int)t->n++;
}

static int trie_add(struct tok_trie *t, const struct tok_added *tokens, int32_t index) {
        const struct tok_added *a = &tokens[index];
        int r;
        if (t->n == 0 && (r = trie_node(t, 0)) < 0)
                return r;
        int32_t node = 0;
        for (size_t i = 0; i < a->len; i++) {
                uint8_t b = (uint8_t)a->content[i];
                int32_t c = t->nodes[node].child, prev = -1;
                while (c >= 0 && t->nodes[c].byte != b) {
                        prev = c;
                        c = t->nodes[c].sibling;
                }
                if (c < 0) {
                        if ((r = trie_node(t, b)) < 0)
                                return r;
                        c = r;
                        if (prev < 0)
                                t->nodes[node].child = c;
                        else
                                t->nodes[prev].sibling = c;
                }
                node = c;
        }
        t->nodes[node].token = index;
        t->first[(uint8_t)a->content[0]] = 1;
        t->empty = false;
        return 0;
}

static int build_ids(struct loader *L, json_t *vocab) {
        struct dsv_tok *tok = L->tok;
        const char *key;
        json_t *val;
        char buf[MAX_TOKEN_BYTES * 4];
        int r;

        tok->id_off = malloc((size_t)tok->n_ids * sizeof(uint64_t));
        tok->id_flags = calloc((size_t)tok->n_ids, 1);
        if (!tok->id_off || !tok->id_flags)
                return -ENOMEM;
        for (int32_t i = 0; i < tok->n_ids; i++)
                tok->id_off[i] = UINT64_MAX;

        json_object_foreach(vocab, key, val) {
                int32_t id = (int32_t)json_integer_value(val);
                size_t n = strlen(key);
                if (n > sizeof(buf))
                        return dsv_error_set(L->err, E2BIG, "tokenizer.json: vocab entry \"%.100s\" is too long", key);
                if (tok->id_flags[id] & TOK_ID_EXISTS)
                        continue;
                size_t k = bytelevel_decode(key, n, buf);
                if ((r = arena_add(L, buf, k, &tok->id_off[id])) < 0)
                        return r;
                tok->id_flags[id] = TOK_ID_EXISTS;
        }
        /* Added tokens decode to their content (Hugging Face looks them up first). */
        for (size_t i = 0; i < tok->n_added; i++) {
                struct tok_added *a = &tok->added[i];
                size_t k = bytelevel_decode(a->content, a->len, buf);
                if ((r = arena_add(L, buf, k, &tok->id_off[a->id])) < 0)
                        return r;
                tok->id_flags[a->id] = (uint8_t)(TOK_ID_EXISTS | TOK_ID_ADDED | (a->special ? TOK_ID_SPECIAL : 0));
        }
        tok->id_arena = L->arena;
        L->arena = NULL;

        /* Initial BPE symbols: the vocabulary entry of each byte's alphabet character. */
        for (int b = 0; b < 256; b++) {
                char s[4];
                size_t n = tok_utf8_put(tok_byte_cp((uint8_t)b), s);
                int32_t id;
                tok->byte_id[b] = vocab_string_id(vocab, s, n, &id) < 0 ? -1 : id;
        }

        if ((r = strmap_init(&tok->bytes_to_id, json_object_size(vocab))) < 0)
                return r;
        json_object_foreach(vocab, key, val) {
                size_t n = strlen(key);
                if (is_bytelevel(key, n))
                        strmap_put(tok, (int32_t)json_integer_value(val));
        }

        for (size_t i = 0; i < tok->n_added; i++) {
                struct tok_trie *t = tok->added[i].normalized ? &tok->trie_norm : &tok->trie_raw;
                if ((r = trie_add(t, tok->added, (int32_t)i)) < 0)
                        return r;
                if (tok->added[i].special)
                        tok->has_special = true;
        }
        return 0;
}

static int32_t token_id_from_config(const struct dsv_tok *tok, json_t *v) {
        if (json_is_object(v))
                v = json_object_get(v, "content");
        if (!json_is_string(v))
                return -ENOENT;
        return dsv_tok_token_to_id(tok, json_string_value(v), json_string_length(v));
}

static int parse_config(struct dsv_tok *tok, const char *config, size_t len, struct dsv_error *err) {
        json_error_t je;
        json_t *c = json_loadb(config, len, 0, &je), *v;
        int r = 0;
        if (!c)
                return dsv_error_set(err, EINVAL, "tokenizer_config.json: line %d: %s", je.line, je.text);
        if (!json_is_object(c)) {
                r = dsv_error_set(err, EINVAL, "tokenizer_config.json: not a JSON object");
                goto out;
        }
        if ((r = get_bool(c, "add_bos_token", false, &tok->add_bos, "tokenizer_config.json", err)) < 0 ||
            (r = get_bool(c, "add_eos_token", false, &tok->add_eos, "tokenizer_config.json", err)) < 0)
                goto out;
        if ((v = json_object_get(c, "bos_token")) && !json_is_null(v)) {
                tok->bos_id = token_id_from_config(tok, v);
                if (tok->bos_id < 0) {
                        r = dsv_error_set(err, EINVAL, "tokenizer_config.json: bos_token is not a token of tokenizer.json");
                        goto out;
                }
        }
        if ((v = json_object_get(c, "eos_token")) && !json_is_null(v)) {
                tok->eos_id = token_id_from_config(tok, v);
                if (tok->eos_id < 0) {
                        r = dsv_error_set(err, EINVAL, "tokenizer_config.json: eos_token is not a token of tokenizer.json");
                        goto out;
                }
        }
        if (tok->add_bos && tok->bos_id < 0) {
                r = dsv_error_set(err, EINVAL, "tokenizer_config.json: add_bos_token without a bos_token");
                goto out;
        }
        if (tok->add_eos && tok->eos_id < 0)
                r = dsv_error_set(err, EINVAL, "tokenizer_config.json: add_eos_token without an eos_token");
out:
        json_decref(c);
        return r;
}

void dsv_tok_free(struct dsv_tok *tok) {
        if (!tok)
                return;
        tok_encoder_free(tok->shared);
        pthread_mutex_destroy(&tok->lock);
        tok_map64_done(&tok->merges);
        free(tok->id_arena);
        free(tok->id_off);
        free(tok->id_flags);
        free(tok->bytes_to_id.slots);
        for (size_t i = 0; i < tok->n_splits; i++) {
                pcre2_code_free(tok->splits[i].re);
                pcre2_code_free(tok->splits[i].re16);
                free(tok->splits[i].literal);
        }
        free(tok->splits);
        for (size_t i = 0; i < tok->n_added; i++)
                free(tok->added[i].content);
        free(tok->added);
        free(tok->trie_raw.nodes);
        free(tok->trie_norm.nodes);
        free(tok);
}

int dsv_tok_load_buffer(const char *json, size_t len, const char *config, size_t config_len,
                        struct dsv_tok **ret, struct dsv_error *err) {
        struct dsv_tok *tok;
        struct loader L = {.err = err};
        json_error_t je;
        json_t *root, *v, *vocab = NULL;
        bool byte_level = false;
        int r;

        tok = calloc(1, sizeof(*tok));
        if (!tok)
                return -ENOMEM;
        pthread_mutex_init(&tok->lock, NULL);
        tok->bos_id = tok->eos_id = -1;
        tok->trie_raw.empty = tok->trie_norm.empty = true;
        L.tok = tok;

        root = json_loadb(json, len, 0, &je);
        if (!root) {
                r = dsv_error_set(err, EINVAL, "tokenizer.json: line %d column %d: %s", je.line, je.column, je.text);
                goto fail;
        }
        if (!json_is_object(root)) {
                r = dsv_error_set(err, EINVAL, "tokenizer.json: not a JSON object");
                goto fail;
        }
        if ((v = json_object_get(root, "truncation")) && !json_is_null(v)) {
                r = dsv_error_set(err, EOPNOTSUPP, "tokenizer.json: truncation is not supported (must be null)");
                goto fail;
        }
        if ((r = check_normalizer(json_object_get(root, "normalizer"), err)) < 0)
                goto fail;
        v = json_object_get(root, "pre_tokenizer");
        if (v && !json_is_null(v) && (r = parse_pre_tokenizer(&L, v, &byte_level)) < 0)
                goto fail;
        if (!byte_level) {
                r = dsv_error_set(err, EOPNOTSUPP, "tokenizer.json: pre_tokenizer has no ByteLevel step (only byte-level BPE is supported)");
                goto fail;
        }
        if ((r = check_bytelevel_component(json_object_get(root, "decoder"), "decoder", false, err)) < 0 ||
            (r = check_bytelevel_component(json_object_get(root, "post_processor"), "post_processor", true, err)) < 0)
                goto fail;
        if ((r = parse_model(&L, json_object_get(root, "model"), &vocab)) < 0 ||
            (r = parse_added(&L, json_object_get(root, "added_tokens"), vocab)) < 0 || (r = build_ids(&L, vocab)) < 0)
                goto fail;
        if (tok->n_ids == 0) {
                r = dsv_error_set(err, EINVAL, "tokenizer.json: no tokens");
                goto fail;
        }
        json_decref(root);
        root = NULL;
        if (config && (r = parse_config(tok, config, config_len, err)) < 0)
                goto fail;
        *ret = tok;
        return 0;
fail:
        if (r == -ENOMEM)
                dsv_error_set(err, ENOMEM, "tokenizer.json: out of memory");
        free(L.arena);
        json_decref(root);
        dsv_tok_free(tok);
        return r;
}

int dsv_tok_load(const char *path, const char *config_path, struct dsv_tok **ret, struct dsv_error *err) {
        _cleanup_free_ char *json = NULL, *config = NULL, *cpath = NULL;
        size_t n = 0, cn = 0;
        int r = dsv_read_file(path, DSV_TOK_MAX_FILE, &json, &n);
        if (r < 0)
                return dsv_error_set(err, r, "Failed to read %s: %s", path, strerror(-r));
        if (!config_path) {
                const char *slash = strrchr(path, '/');
                size_t dl = slash ? (size_t)(slash - path) + 1 : 0;
                cpath = malloc(dl + sizeof("tokenizer_config.json"));
                if (!cpath)
                        return -ENOMEM;
                memcpy(cpath, path, dl);
                strcpy(cpath + dl, "tokenizer_config.json");
                r = dsv_read_file(cpath, DSV_TOK_MAX_FILE, &config, &cn);
                if (r < 0 && r != -ENOENT)
                        return dsv_error_set(err, r, "Failed to read %s: %s", cpath, strerror(-r));
        } else {
                r = dsv_read_file(config_path, DSV_TOK_MAX_FILE, &config, &cn);
                if (r < 0)
                        return dsv_error_set(err, r, "Failed to read %s: %s", config_path, strerror(-r));
        }
        r = dsv_tok_load_buffer(json, n, config, cn, ret, err);
        if (r < 0) {
                /* Prefix the file name so the message says which file. */
                if (err) {
                        char msg[sizeof(err->msg)];
                        size_t pl = strnlen(path, sizeof(msg) / 2), ml = strnlen(err->msg, sizeof(msg) - pl - 3);
                        memcpy(msg, path, pl);
                        memcpy(msg + pl, ": ", 2);
                        memcpy(msg + pl + 2, err->msg, ml);
                        msg[pl + 2 + ml] = 0;
                        memcpy(err->msg, msg, sizeof(msg));
                }
        }
        return r;
}

int32_t dsv_tok_vocab_size(const struct dsv_tok *tok) { return tok->n_ids; }
int32_t dsv_tok_bos_id(const struct dsv_tok *tok) { return tok->bos_id; }
int32_t dsv_tok_eos_id(const struct dsv_tok *tok) { return tok->eos_id; }

bool dsv_tok_id_bytes(const struct dsv_tok *tok, int32_t id, const char **p, size_t *n) {
        return tok_id_bytes(tok, id, p, n);
}

bool dsv_tok_is_special(const struct dsv_tok *tok, int32_t id) {
        return id >= 0 && id < tok->n_ids && (tok->id_flags[id] & TOK_ID_SPECIAL);
}

int32_t dsv_tok_token_to_id(const struct dsv_tok *tok, const char *text, size_t len) {
        for (size_t i = tok->n_added; i-- > 0;)
                if (tok->added[i].len == len && memcmp(tok->added[i].content, text, len) == 0)
                        return tok->added[i].id;
        return tok_strmap_get(tok, text, len);
}
