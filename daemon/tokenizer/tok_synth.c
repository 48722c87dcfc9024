/* A tokenizer for generated checkpoints: deterministic text from a seed (pseudo-words,
 * English, code, numbers, Chinese, the chat format's own markup), pre-tokenized with
 * DeepSeek's pre-tokenizer, a tiny byte-level BPE trainer (most frequent pair first, ties
 * by the lower ids), DeepSeek's special tokens, written as tokenizer.json +
 * tokenizer_config.json in the same layout as DeepSeek-V3's. */
#include "config.h"

#include <jansson.h>

#include "daemon/rng.h"
#include "daemon/tokenizer/tok_internal.h"

/* DeepSeek-V3's pre-tokenizer (tokenizer.json), as the JSON strings hold it. */
static const char *const ds_patterns[] = {
        "\\p{N}{1,3}",
        "[\xe4\xb8\x80-\xe9\xbe\xa5\xe3\x81\x80-\xe3\x82\x9f\xe3\x82\xa0-\xe3\x83\xbf]+",
        ("[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| "
         "?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"),
};

struct special {
        const char *content;
        bool special, normalized;
};

/* After BOS and EOS, which take the ids the caller asks for. */
static const struct special other_specials[] = {
        {"<\xef\xbd\x9c\xe2\x96\x81pad\xe2\x96\x81\xef\xbd\x9c>", true, false},
        {"<\xef\xbd\x9cUser\xef\xbd\x9c>", false, true},
        {"<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>", false, true},
        {"<think>", false, true},
        {"</think>", false, true},
        {"\xef\xbd\x9c" "DSML\xef\xbd\x9c", false, true},
        {"<\xef\xbd\x9c" "fim\xe2\x96\x81hole\xef\xbd\x9c>", false, true},
        {"<\xef\xbd\x9c" "fim\xe2\x96\x81" "begin\xef\xbd\x9c>", false, true},
        {"<\xef\xbd\x9c" "fim\xe2\x96\x81" "end\xef\xbd\x9c>", false, true},
        {"<|EOT|>", true, true},
        {"<\xef\xbd\x9ctool\xe2\x96\x81" "calls\xe2\x96\x81" "begin\xef\xbd\x9c>", false, true},
        {"<\xef\xbd\x9ctool\xe2\x96\x81" "calls\xe2\x96\x81" "end\xef\xbd\x9c>", false, true},
        {"<\xef\xbd\x9ctool\xe2\x96\x81" "call\xe2\x96\x81" "begin\xef\xbd\x9c>", false, true},
        {"<\xef\xbd\x9ctool\xe2\x96\x81" "call\xe2\x96\x81" "end\xef\xbd\x9c>", false, true},
        {"<\xef\xbd\x9ctool\xe2\x96\x81outputs\xe2\x96\x81" "begin\xef\xbd\x9c>", false, true},
        {"<\xef\xbd\x9ctool\xe2\x96\x81outputs\xe2\x96\x81" "end\xef\xbd\x9c>", false, true},
        {"<\xef\xbd\x9ctool\xe2\x96\x81output\xe2\x96\x81" "begin\xef\xbd\x9c>", false, true},
        {"<\xef\xbd\x9ctool\xe2\x96\x81output\xe2\x96\x81" "end\xef\xbd\x9c>", false, true},
        {"<\xef\xbd\x9ctool\xe2\x96\x81sep\xef\xbd\x9c>", false, true},
};
#define BOS_CONTENT "<\xef\xbd\x9c" "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"
#define EOS_CONTENT "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"
#define N_SPECIALS (2 + ARRAY_SIZE(other_specials))

/* ------------------------------------------------------------------ training text */

struct text {
        char *p;
        size_t n, cap;
        uint64_t key, ctr;
};

static int put(struct text *t, const char *s, size_t n) {
        if (t->n + n + 1 > t->cap) {
                size_t cap = t->cap ? t->cap : 1 << 16;
                while (cap < t->n + n + 1)
                        cap *= 2;
                char *p = realloc(t->p, cap);
                if (!p)
                        return -ENOMEM;
                t->p = p;
                t->cap = cap;
        }
        memcpy(t->p + t->n, s, n);
        t->n += n;
        t->p[t->n] = 0;
        return 0;
}
static int puts_(struct text *t, const char *s) { return put(t, s, strlen(s)); }
static uint32_t rnd(struct text *t, uint32_t n) { return (uint32_t)(dsv_rand_u01(t->key, t->ctr++) * n); }

static const char *const english[] = {
        "the", "of", "and", "to", "in", "is", "was", "that", "for", "it", "with", "as", "on", "be", "at", "by",
        "this", "had", "not", "are", "but", "from", "or", "have", "an", "they", "which", "one", "you", "were",
        "all", "we", "can", "there", "their", "what", "will", "would", "about", "if", "up", "out", "time", "so",
        "model", "token", "daemon", "request", "stream", "weather", "today", "tomorrow", "answer", "question",
        "function", "result", "value", "number", "string", "think", "reason", "hello", "world", "user",
        "assistant", "system", "tool", "call", "search", "file", "line", "error", "return", "data",
};
static const char *const code_bits[] = {
        "def ", "return ", "if ", "else:", "for ", " in range(", "):", "int ", "const ", "char *", "void ",
        "struct ", "{", "}", "(", ")", "[", "]", ";", " = ", " == ", " != ", "++", "->", "::", "#include <",
        ".h>", "import ", "from ", "print(", "self.", "None", "True", "False", "null", "true", "false",
        "\"name\": ", "\"arguments\": ", "\"type\": \"string\"", "</", "/>", "<div>", "https://", ".com/",
};
static const char *const markup[] = {
        "## Tools\n\n", "<function_results>\n", "</function_results>\n", "<result>", "</result>",
        "function_calls>\n", "invoke name=\"", "parameter name=\"", "\" string=\"true\">", "\" string=\"false\">",
        "\">\n", "{\"name\": \"", "\"description\": \"", "\"parameters\": {\"type\": \"object\", ",
        "# The user's message is: ", "## Response Format:\n\n",
};
static const char *const cons[] = {"b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s",
                                   "t", "v", "w", "y", "z", "th", "ch", "sh", "st", "tr", "pr", "qu"};
static const char *const vows[] = {"a", "e", "i", "o", "u", "ai", "ea", "ou", "io", "y", "ee", "oa"};
/* 200 common Chinese characters, UTF-8 */
static const char hanzi[] =
        "的一是不了人我在有他这中大来上个国到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里"
        "后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动"
        "两长知民样现分将外但身些与高意进把法此实回二理美点月明其种声全工己话儿者向情部正名定女问力机给等几"
        "很业最间新什打便位因重被走电四第门相次东政海口使教西再平真听世气信北少关并内加化由却代军产入先山五";

static int gen_word(struct text *t, char *w, size_t cap) {
        size_t n = 0;
        uint32_t syl = 1 + rnd(t, 3);
        for (uint32_t i = 0; i < syl; i++) {
                const char *c = cons[rnd(t, ARRAY_SIZE(cons))], *v = vows[rnd(t, ARRAY_SIZE(vows))];
                if (n + strlen(c) + strlen(v) + 2 >= cap)
                        break;
                memcpy(w + n, c, strlen(c));
                n += strlen(c);
                memcpy(w + n, v, strlen(v));
                n += strlen(v);
                if (rnd(t, 4) == 0)
                        w[n++] = "nrstlm"[rnd(t, 6)];
        }
        w[n] = 0;
        return (int)n;
}

/* A skewed pick from [0, n): nested uniform draws, so small indices come much more often
 * (density about log^2(n/k)); integer-exact, hence the same on every libm. */
static uint32_t zipf(struct text *t, uint32_t n) {
        return rnd(t, 1 + rnd(t, 1 + rnd(t, n)));
}

static int gen_text(struct text *t, size_t target, char (*lex)[32], uint32_t n_lex) {
        int r = 0;
        char buf[64];
        while (t->n < target && r >= 0) {
                uint32_t kind = rnd(t, 20);
                if (kind < 10) { /* prose of pseudo-words and English */
                        uint32_t n = 4 + rnd(t, 14);
                        for (uint32_t i = 0; i < n && r >= 0; i++) {
                                const char *w = rnd(t, 3) == 0 ? english[rnd(t, ARRAY_SIZE(english))] : lex[zipf(t, n_lex)];
                                if (i > 0)
                                        r = puts_(t, " ");
                                if (i == 0 && rnd(t, 2) == 0) {
                                        snprintf(buf, sizeof(buf), "%s", w);
                                        buf[0] = (char)(buf[0] >= 'a' && buf[0] <= 'z' ? buf[0] - 32 : buf[0]);
                                        r = puts_(t, buf);
                                } else
                                        r = puts_(t, w);
                                if (r >= 0 && rnd(t, 9) == 0)
                                        r = puts_(t, ",");
                        }
                        if (r >= 0)
                                r = puts_(t, rnd(t, 5) == 0 ? "?\n" : ".\n");
                } else if (kind < 13) { /* code */
                        uint32_t n = 3 + rnd(t, 10);
                        r = puts_(t, rnd(t, 2) ? "    " : "\t");
                        for (uint32_t i = 0; i < n && r >= 0; i++)
                                r = rnd(t, 2) ? puts_(t, code_bits[rnd(t, ARRAY_SIZE(code_bits))]) : puts_(t, lex[zipf(t, n_lex)]);
                        if (r >= 0)
                                r = puts_(t, "\n");
                } else if (kind < 15) { /* numbers */
                        snprintf(buf, sizeof(buf), "%u %u.%u %u%% ", rnd(t, 100000), rnd(t, 1000), rnd(t, 100), rnd(t, 100));
                        r = puts_(t, buf);
                } else if (kind < 17) { /* Chinese */
                        uint32_t n = 2 + rnd(t, 12);
                        for (uint32_t i = 0; i < n && r >= 0; i++) {
                                /* skewed towards the first characters */
                                uint32_t c = zipf(t, (sizeof(hanzi) - 1) / 3);
                                r = put(t, hanzi + 3 * c, 3);
                        }
                        if (r >= 0)
                                r = puts_(t, rnd(t, 2) ? "\xe3\x80\x82" : "\xef\xbc\x8c");
                } else /* the chat format's own markup */
                        r = puts_(t, markup[rnd(t, ARRAY_SIZE(markup))]);
        }
        return r;
}

/* ------------------------------------------------------------------ BPE trainer */

struct word {
        int32_t *sym;
        uint32_t len;
        uint64_t count;
        uint32_t stamp;
};

struct pair {
        int32_t a, b;
        int64_t count;
        uint32_t *occ; /* words that had this pair (may repeat or be stale) */
        uint32_t n_occ, cap_occ;
        uint32_t stamp;
};

struct trainer {
        struct word *words;
        uint32_t n_words, cap_words;
        struct tok_map64 word_index; /* hash of bytes -> word (collisions checked) */
        uint8_t **tok_bytes;         /* per internal token */
        uint32_t *tok_len;
        uint32_t n_tok, cap_tok;
        struct tok_map64 tok_index;  /* hash of bytes -> token (collisions probed) */
        struct pair *pairs;
        uint32_t n_pairs, cap_pairs;
        struct tok_map64 pair_index; /* a << 32 | b -> pair */
        uint64_t *heap;              /* count << 32 | pair (max-heap, see heap_less) */
        size_t n_heap, cap_heap;
        uint32_t stamp;
        uint32_t *touched;
        size_t n_touched, cap_touched;
};

static int grow_arr(void **p, uint32_t *cap, uint32_t need, size_t elem) {
        if (need <= *cap)
                return 0;
        uint32_t c = *cap ? *cap : 16;
        while (c < need)
                c *= 2;
        void *q = realloc(*p, (size_t)c * elem);
        if (!q)
                return -ENOMEM;
        *p = q;
        *cap = c;
        return 0;
}

/* Heap entries rank by count (higher first), then by the pair's ids (lower first). */
static bool heap_before(struct trainer *T, uint64_t x, uint64_t y) {
        uint64_t cx = x >> 32, cy = y >> 32;
        if (cx != cy)
                return cx > cy;
        struct pair *px = &T->pairs[(uint32_t)x], *py = &T->pairs[(uint32_t)y];
        if (px->a != py->a)
                return px->a < py->a;
        return px->b < py->b;
}

static int heap_add(struct trainer *T, uint32_t p) {
        if (T->n_heap == T->cap_heap) {
                size_t cap = T->cap_heap ? T->cap_heap * 2 : 1024;
                uint64_t *h = realloc(T->heap, cap * sizeof(uint64_t));
                if (!h)
                        return -ENOMEM;
                T->heap = h;
                T->cap_heap = cap;
        }
        uint64_t it = ((uint64_t)T->pairs[p].count << 32) | p;
        size_t i = T->n_heap++;
        while (i > 0) {
                size_t up = (i - 1) / 2;
                if (!heap_before(T, it, T->heap[up]))
                        break;
                T->heap[i] = T->heap[up];
                i = up;
        }
        T->heap[i] = it;
        return 0;
}

static uint64_t heap_take(struct trainer *T) {
        uint64_t top = T->heap[0], last = T->heap[--T->n_heap];
        size_t i = 0;
        for (;;) {
                size_t c = 2 * i + 1;
                if (c >= T->n_heap)
                        break;
                if (c + 1 < T->n_heap && heap_before(T, T->heap[c + 1], T->heap[c]))
                        c++;
                if (!heap_before(T, T->heap[c], last))
                        break;
                T->heap[i] = T->heap[c];
                i = c;
        }
        T->heap[i] = last;
        return top;
}

static int pair_of(struct trainer *T, int32_t a, int32_t b, uint32_t *ret) {
        uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b, v;
        if (tok_map64_get(&T->pair_index, key, &v)) {
                *ret = (uint32_t)v;
                return 0;
        }
        int r = grow_arr((void **)&T->pairs, &T->cap_pairs, T->n_pairs + 1, sizeof(struct pair));
        if (r < 0)
                return r;
        T->pairs[T->n_pairs] = (struct pair){.a = a, .b = b};
        if ((r = tok_map64_put(&T->pair_index, key, T->n_pairs)) < 0)
                return r;
        *ret = T->n_pairs++;
        return 0;
}

/* Adds (sign +1) or removes (-1) the word's adjacent pairs from the counts. */
static int word_pairs(struct trainer *T, uint32_t w, int sign) {
        struct word *wd = &T->words[w];
        for (uint32_t i = 0; i + 1 < wd->len; i++) {
                uint32_t p;
                int r = pair_of(T, wd->sym[i], wd->sym[i + 1], &p);
                if (r < 0)
                        return r;
                struct pair *pp = &T->pairs[p];
                pp->count += sign * (int64_t)wd->count;
                if (sign > 0) {
                        if ((r = grow_arr((void **)&pp->occ, &pp->cap_occ, pp->n_occ + 1, sizeof(uint32_t))) < 0)
                                return r;
                        pp->occ[pp->n_occ++] = w;
                }
                if (pp->stamp != T->stamp) {
                        pp->stamp = T->stamp;
                        if ((r = grow_arr((void **)&T->touched, (uint32_t *)&T->cap_touched, (uint32_t)T->n_touched + 1,
                                          sizeof(uint32_t))) < 0)
                                return r;
                        T->touched[T->n_touched++] = p;
                }
        }
        return 0;
}

/* The token with these bytes, or -1. */
static int32_t find_token(struct trainer *T, const uint8_t *bytes, uint32_t len, uint64_t *slot) {
        uint64_t h = tok_hash_bytes(bytes, len) >> 1, v;
        for (;; h = (h + 1) & (UINT64_MAX >> 1)) {
                if (!tok_map64_get(&T->tok_index, h, &v))
                        break;
                if (T->tok_len[v] == len && memcmp(T->tok_bytes[v], bytes, len) == 0)
                        return (int32_t)v;
        }
        *slot = h;
        return -1;
}

static int add_token(struct trainer *T, const uint8_t *bytes, uint32_t len) {
        uint64_t slot = 0;
        int r;
        if (find_token(T, bytes, len, &slot) >= 0)
                return -EEXIST;
        if (T->n_tok == T->cap_tok) {
                uint32_t cap = T->cap_tok ? T->cap_tok * 2 : 512;
                uint8_t **b = realloc(T->tok_bytes, cap * sizeof(uint8_t *));
                if (!b)
                        return -ENOMEM;
                T->tok_bytes = b;
                uint32_t *l = realloc(T->tok_len, cap * sizeof(uint32_t));
                if (!l)
                        return -ENOMEM;
                T->tok_len = l;
                T->cap_tok = cap;
        }
        uint8_t *c = malloc(len ? len : 1);
        if (!c)
                return -ENOMEM;
        memcpy(c, bytes, len);
        T->tok_bytes[T->n_tok] = c;
        T->tok_len[T->n_tok] = len;
        if ((r = tok_map64_put(&T->tok_index, slot, T->n_tok)) < 0) {
                free(c);
                return r;
        }
        T->n_tok++;
        return 0;
}

static int count_word(void *ud, const uint8_t *p, size_t n) {
        struct trainer *T = ud;
        uint64_t h = tok_hash_bytes(p, n) & ~(1ull << 63), v;
        int r;
        /* Open hashing on the hash itself, probing by +1 on a collision of different words. */
        for (;; h = (h + 1) & ~(1ull << 63)) {
                if (!tok_map64_get(&T->word_index, h, &v))
                        break;
                struct word *w = &T->words[v];
                if (w->len == n) {
                        bool same = true;
                        for (size_t i = 0; i < n && same; i++)
                                same = w->sym[i] == p[i];
                        if (same) {
                                w->count++;
                                return 0;
                        }
                }
        }
        if (n > 256)
                return 0; /* a long run (spaces, one letter) teaches nothing */
        if ((r = grow_arr((void **)&T->words, &T->cap_words, T->n_words + 1, sizeof(struct word))) < 0)
                return r;
        struct word *w = &T->words[T->n_words];
        *w = (struct word){.len = (uint32_t)n, .count = 1};
        w->sym = malloc(n * sizeof(int32_t));
        if (!w->sym)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                w->sym[i] = p[i];
        if ((r = tok_map64_put(&T->word_index, h, T->n_words)) < 0) {
                free(w->sym);
                return r;
        }
        T->n_words++;
        return 0;
}

static int merge_pair(struct trainer *T, uint32_t p, int32_t new_tok) {
        int32_t a = T->pairs[p].a, b = T->pairs[p].b;
        int r;
        T->stamp++;
        T->n_touched = 0;
        for (uint32_t k = 0; k < T->pairs[p].n_occ; k++) {
                uint32_t w = T->pairs[p].occ[k];
                struct word *wd = &T->words[w];
                if (wd->stamp == T->stamp)
                        continue;
                wd->stamp = T->stamp;
                bool has = false;
                for (uint32_t i = 0; i + 1 < wd->len && !has; i++)
                        has = wd->sym[i] == a && wd->sym[i + 1] == b;
                if (!has)
                        continue;
                if ((r = word_pairs(T, w, -1)) < 0)
                        return r;
                uint32_t o = 0;
                for (uint32_t i = 0; i < wd->len; i++) {
                        if (i + 1 < wd->len && wd->sym[i] == a && wd->sym[i + 1] == b) {
                                wd->sym[o++] = new_tok;
                                i++;
                        } else
                                wd->sym[o++] = wd->sym[i];
                }
                wd->len = o;
                if ((r = word_pairs(T, w, +1)) < 0)
                        return r;
        }
        for (size_t i = 0; i < T->n_touched; i++)
                if (T->pairs[T->touched[i]].count > 0 && (r = heap_add(T, T->touched[i])) < 0)
                        return r;
        return 0;
}

static void trainer_done(struct trainer *T) {
        for (uint32_t i = 0; i < T->n_words; i++)
                free(T->words[i].sym);
        free(T->words);
        for (uint32_t i = 0; i < T->n_tok; i++)
                free(T->tok_bytes[i]);
        free(T->tok_bytes);
        free(T->tok_len);
        for (uint32_t i = 0; i < T->n_pairs; i++)
                free(T->pairs[i].occ);
        free(T->pairs);
        free(T->heap);
        free(T->touched);
        tok_map64_done(&T->word_index);
        tok_map64_done(&T->pair_index);
        tok_map64_done(&T->tok_index);
}

struct merges {
        int32_t *a, *b;
        uint32_t n, cap;
};

static int merges_add(struct merges *M, int32_t a, int32_t b) {
        if (M->n == M->cap) {
                uint32_t cap = M->cap ? M->cap * 2 : 1024;
                int32_t *na = realloc(M->a, cap * sizeof(int32_t));
                if (!na)
                        return -ENOMEM;
                M->a = na;
                int32_t *nb = realloc(M->b, cap * sizeof(int32_t));
                if (!nb)
                        return -ENOMEM;
                M->b = nb;
                M->cap = cap;
        }
        M->a[M->n] = a;
        M->b[M->n] = b;
        M->n++;
        return 0;
}

/* Learns merges until there are n_tokens tokens (256 bytes + one per new string; two merges
 * may make the same string, as in Hugging Face's trainer). When the text runs out of pairs,
 * the remaining tokens join existing ones deterministically (valid entries that the text
 * never uses, so the vocabulary has its size). */
static int train(struct trainer *T, uint32_t n_tokens, struct merges *M) {
        uint8_t buf[2 * 4096];
        int r;
        if ((r = tok_map64_init(&T->tok_index, n_tokens)) < 0)
                return r;
        for (int b = 0; b < 256; b++) {
                uint8_t c = (uint8_t)b;
                if ((r = add_token(T, &c, 1)) < 0)
                        return r;
        }
        T->stamp++;
        T->n_touched = 0;
        for (uint32_t w = 0; w < T->n_words; w++)
                if ((r = word_pairs(T, w, +1)) < 0)
                        return r;
        for (size_t i = 0; i < T->n_touched; i++)
                if ((r = heap_add(T, T->touched[i])) < 0)
                        return r;

        uint32_t fa = 0, fb = 0;
        while (T->n_tok < n_tokens) {
                int32_t a, b, id;
                uint64_t slot;
                bool from_text = T->n_heap > 0;
                if (from_text) {
                        uint64_t top = heap_take(T);
                        uint32_t p = (uint32_t)top;
                        if ((int64_t)(top >> 32) != T->pairs[p].count || T->pairs[p].count <= 0)
                                continue;
                        a = T->pairs[p].a;
                        b = T->pairs[p].b;
                        uint32_t la = T->tok_len[a], lb = T->tok_len[b];
                        memcpy(buf, T->tok_bytes[a], la);
                        memcpy(buf + la, T->tok_bytes[b], lb);
                        id = find_token(T, buf, la + lb, &slot);
                        if (id < 0) {
                                if ((r = add_token(T, buf, la + lb)) < 0)
                                        return r;
                                id = (int32_t)T->n_tok - 1;
                        }
                        if ((r = merge_pair(T, p, id)) < 0)
                                return r;
                } else {
                        if (fa >= T->n_tok)
                                return -EILSEQ; /* cannot happen: n_tok^2 candidates */
                        a = (int32_t)fa;
                        b = (int32_t)fb;
                        if (++fb >= T->n_tok) {
                                fb = 0;
                                fa++;
                        }
                        uint32_t la = T->tok_len[a], lb = T->tok_len[b];
                        if (la + lb > sizeof(buf))
                                continue;
                        memcpy(buf, T->tok_bytes[a], la);
                        memcpy(buf + la, T->tok_bytes[b], lb);
                        if (find_token(T, buf, la + lb, &slot) >= 0)
                                continue;
                        if ((r = add_token(T, buf, la + lb)) < 0)
                                return r;
                }
                if ((r = merges_add(M, a, b)) < 0)
                        return r;
        }
        return 0;
}

/* ------------------------------------------------------------------ writing */

static char *bytelevel_string(const uint8_t *p, size_t n) {
        char *s = malloc(2 * n + 1), *o = s;
        if (!s)
                return NULL;
        for (size_t i = 0; i < n; i++)
                o += tok_utf8_put(tok_byte_cp(p[i]), o);
        *o = 0;
        return s;
}

static json_t *added_token(int32_t id, const char *content, bool special, bool normalized) {
        return json_pack("{s:i, s:s, s:b, s:b, s:b, s:b, s:b}", "id", (json_int_t)id, "content", content, "single_word", 0,
                         "lstrip", 0, "rstrip", 0, "normalized", normalized, "special", special);
}

static json_t *config_token(const char *content) {
        return json_pack("{s:s, s:s, s:b, s:b, s:b, s:b}", "__type", "AddedToken", "content", content, "lstrip", 0,
                         "normalized", 1, "rstrip", 0, "single_word", 0);
}

static int write_json(const char *dir, const char *name, json_t *root, struct dsv_error *err) {
        char *s = json_dumps(root, JSON_INDENT(2));
        char path[PATH_MAX];
        int r;
        if (!s)
                return dsv_error_set(err, ENOMEM, "Failed to serialize %s", name);
        if (snprintf(path, sizeof(path), "%s/%s", dir, name) >= (int)sizeof(path)) {
                free(s);
                return dsv_error_set(err, ENAMETOOLONG, "%s/%s: path too long", dir, name);
        }
        r = dsv_write_file(path, s, strlen(s));
        free(s);
        if (r < 0)
                return dsv_error_set(err, r, "Failed to write %s: %s", path, strerror(-r));
        return 0;
}

static json_t *build_tokenizer_json(const struct trainer *T, const struct merges *M, const int32_t *tok_id, const int32_t *special_id, int bos_id, int eos_id) {
        json_t *root = json_object(), *pre = json_array(), *vocab = json_object(), *merges = json_array(),
               *added = json_array();
        if (!root || !pre || !vocab || !merges || !added)
                goto fail;
        json_object_set_new(root, "version", json_string("1.0"));
        json_object_set_new(root, "truncation", json_null());
        json_object_set_new(root, "padding", json_null());

        /* added_tokens in id order */
        for (int32_t id = 0, left = (int32_t)N_SPECIALS; left > 0; id++) {
                if (id == bos_id) {
                        json_array_append_new(added, added_token(id, BOS_CONTENT, true, false));
                        left--;
                } else if (id == eos_id) {
                        json_array_append_new(added, added_token(id, EOS_CONTENT, true, false));
                        left--;
                } else
                        for (size_t k = 0; k < ARRAY_SIZE(other_specials); k++)
                                if (special_id[k] == id) {
                                        json_array_append_new(added, added_token(id, other_specials[k].content,
                                                                                 other_specials[k].special,
                                                                                 other_specials[k].normalized));
                                        left--;
                                }
        }
        json_object_set_new(root, "added_tokens", added);
        added = NULL;
        json_object_set_new(root, "normalizer", json_pack("{s:s, s:[]}", "type", "Sequence", "normalizers"));
        for (size_t i = 0; i < ARRAY_SIZE(ds_patterns); i++)
                json_array_append_new(pre, json_pack("{s:s, s:{s:s}, s:s, s:b}", "type", "Split", "pattern", "Regex",
                                                     ds_patterns[i], "behavior", "Isolated", "invert", 0));
        json_array_append_new(pre, json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0,
                                             "trim_offsets", 1, "use_regex", 0));
        json_object_set_new(root, "pre_tokenizer", json_pack("{s:s, s:o}", "type", "Sequence", "pretokenizers", pre));
        pre = NULL;
        json_object_set_new(root, "post_processor", json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel",
                                                              "add_prefix_space", 1, "trim_offsets", 0, "use_regex", 1));
        json_object_set_new(root, "decoder", json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 1,
                                                       "trim_offsets", 1, "use_regex", 1));

        /* The model's vocab: ids 0..V-1 where V is the lowest of the other special tokens'
         * ids, i.e. the BPE tokens plus BOS / EOS when their ids are below V (as in
         * DeepSeek's file, where 0..2 are in both). Hugging Face gives added tokens that are
         * not vocabulary entries the ids V, V+1, ... in file order, which are theirs. */
        int32_t V = INT32_MAX;
        for (size_t k = 0; k < ARRAY_SIZE(other_specials); k++)
                V = MIN(V, special_id[k]);
        int32_t *by_id = malloc((size_t)V * sizeof(int32_t));
        if (!by_id)
                goto fail;
        for (int32_t i = 0; i < V; i++)
                by_id[i] = -1;
        for (uint32_t t = 0; t < T->n_tok; t++)
                if (tok_id[t] < V)
                        by_id[tok_id[t]] = (int32_t)t;
        for (int32_t id = 0; id < V; id++) {
                if (id == bos_id)
                        json_object_set_new(vocab, BOS_CONTENT, json_integer(id));
                else if (id == eos_id)
                        json_object_set_new(vocab, EOS_CONTENT, json_integer(id));
                else if (by_id[id] >= 0) {
                        uint32_t t = (uint32_t)by_id[id];
                        char *s = bytelevel_string(T->tok_bytes[t], T->tok_len[t]);
                        if (!s) {
                                free(by_id);
                                goto fail;
                        }
                        json_object_set_new(vocab, s, json_integer(id));
                        free(s);
                }
        }
        free(by_id);
        for (uint32_t i = 0; i < M->n; i++) {
                char *a = bytelevel_string(T->tok_bytes[M->a[i]], T->tok_len[M->a[i]]);
                char *b = bytelevel_string(T->tok_bytes[M->b[i]], T->tok_len[M->b[i]]);
                if (!a || !b) {
                        free(a);
                        free(b);
                        goto fail;
                }
                json_array_append_new(merges, json_pack("[s, s]", a, b));
                free(a);
                free(b);
        }
        json_object_set_new(root, "model",
                            json_pack("{s:s, s:n, s:n, s:n, s:n, s:b, s:b, s:b, s:o, s:o}", "type", "BPE", "dropout",
                                      "unk_token", "continuing_subword_prefix", "end_of_word_suffix", "fuse_unk", 0,
                                      "byte_fallback", 0, "ignore_merges", 0, "vocab", vocab, "merges", merges));
        return root;
fail:
        json_decref(root);
        json_decref(pre);
        json_decref(vocab);
        json_decref(merges);
        json_decref(added);
        return NULL;
}

int dsv_tok_synth_write(const char *dir, int vocab_size, int bos_id, int eos_id, uint64_t seed,
                        struct dsv_error *err) {
        struct trainer T = {0};
        struct text text = {0};
        struct dsv_tok *pre = NULL;
        struct dsv_tok_encoder *enc = NULL;
        char (*lex)[32] = NULL;
        struct merges M = {0};
        int32_t *tok_id = NULL;
        int32_t special_id[ARRAY_SIZE(other_specials)];
        json_t *root = NULL, *cfg = NULL;
        int r;

        if (!dir || vocab_size < 512 || vocab_size > (1 << 20))
                return dsv_error_set(err, EINVAL, "tokenizer: vocab_size %d is outside [512, %d]", vocab_size, 1 << 20);
        if (bos_id < 0 || bos_id >= vocab_size || eos_id < 0 || eos_id >= vocab_size || bos_id == eos_id)
                return dsv_error_set(err, EINVAL, "tokenizer: bos_id %d / eos_id %d must differ and lie in [0, %d)", bos_id,
                                     eos_id, vocab_size);
        uint32_t n_bpe = (uint32_t)vocab_size - (uint32_t)N_SPECIALS;

        /* A pre-tokenizer-only tokenizer: 256 byte tokens, DeepSeek's splits. */
        {
                json_t *j = json_object(), *v = json_object(), *p = json_array();
                for (int b = 0; b < 256; b++) {
                        char s[5];
                        s[tok_utf8_put(tok_byte_cp((uint8_t)b), s)] = 0;
                        json_object_set_new(v, s, json_integer(b));
                }
                for (size_t i = 0; i < ARRAY_SIZE(ds_patterns); i++)
                        json_array_append_new(p, json_pack("{s:s, s:{s:s}, s:s}", "type", "Split", "pattern", "Regex",
                                                           ds_patterns[i], "behavior", "Isolated"));
                json_array_append_new(p, json_pack("{s:s, s:b}", "type", "ByteLevel", "use_regex", 0));
                json_object_set_new(j, "pre_tokenizer", json_pack("{s:s, s:o}", "type", "Sequence", "pretokenizers", p));
                json_object_set_new(j, "decoder", json_pack("{s:s}", "type", "ByteLevel"));
                json_object_set_new(j, "model", json_pack("{s:s, s:o, s:[]}", "type", "BPE", "vocab", v, "merges"));
                char *s = json_dumps(j, JSON_COMPACT);
                json_decref(j);
                if (!s)
                        return dsv_error_set(err, ENOMEM, "tokenizer: out of memory");
                r = dsv_tok_load_buffer(s, strlen(s), NULL, 0, &pre, err);
                free(s);
                if (r < 0)
                        return r;
        }
        if ((r = tok_encoder_new(pre, &enc)) < 0)
                goto fail;

        /* Training text: a lexicon of pseudo-words (about one per vocabulary entry) used with
         * a Zipf law, so frequent words become single tokens and rare ones stay split. */
        text.key = dsv_mix64(seed ^ 0x746f6b656e697a65ull);
        uint32_t n_lex = (uint32_t)vocab_size;
        lex = malloc((size_t)n_lex * sizeof(*lex));
        if (!lex) {
                r = -ENOMEM;
                goto fail;
        }
        for (uint32_t i = 0; i < n_lex; i++)
                gen_word(&text, lex[i], sizeof(lex[i]));
        if ((r = gen_text(&text, (size_t)vocab_size * 160, lex, n_lex)) < 0)
                goto fail;

        if ((r = tok_map64_init(&T.word_index, 1 << 16)) < 0 || (r = tok_map64_init(&T.pair_index, 1 << 16)) < 0)
                goto fail;
        if ((r = tok_encoder_pretokenize(enc, (const uint8_t *)text.p, text.n, count_word, &T)) < 0)
                goto fail;

        tok_id = malloc(n_bpe * sizeof(int32_t));
        if (!tok_id) {
                r = -ENOMEM;
                goto fail;
        }
        if ((r = train(&T, n_bpe, &M)) < 0)
                goto fail;

        /* Ids: BOS and EOS where asked, the other special tokens at the top (as DeepSeek's
         * 128000..), the BPE tokens in learning order in the ids left. */
        {
                int32_t next = vocab_size - 1;
                for (size_t k = ARRAY_SIZE(other_specials); k-- > 0;) {
                        while (next == bos_id || next == eos_id)
                                next--;
                        special_id[k] = next--;
                }
                int32_t lo = 0;
                for (uint32_t t = 0; t < n_bpe; t++) {
                        for (;;) {
                                bool taken = lo == bos_id || lo == eos_id;
                                for (size_t k = 0; k < ARRAY_SIZE(other_specials) && !taken; k++)
                                        taken = special_id[k] == lo;
                                if (!taken)
                                        break;
                                lo++;
                        }
                        tok_id[t] = lo++;
                }
                assert(lo <= vocab_size);
        }
        root = build_tokenizer_json(&T, &M, tok_id, special_id, bos_id, eos_id);
        if (!root) {
                r = -ENOMEM;
                goto fail;
        }
        /* Same layout as DeepSeek's, without a chat template (V3.2 encodes chats in code). */
        cfg = json_pack("{s:b, s:b, s:o, s:b, s:o, s:b, s:i, s:o, s:n, s:s}", "add_bos_token", 1, "add_eos_token", 0,
                        "bos_token", config_token(BOS_CONTENT), "clean_up_tokenization_spaces", 0, "eos_token",
                        config_token(EOS_CONTENT), "legacy", 1, "model_max_length", (json_int_t)131072, "pad_token",
                        config_token(EOS_CONTENT), "unk_token", "tokenizer_class", "LlamaTokenizerFast");
        if (!cfg) {
                r = -ENOMEM;
                goto fail;
        }
        if ((r = dsv_mkdir_p(dir, 0755)) < 0) {
                r = dsv_error_set(err, r, "Failed to create %s: %s", dir, strerror(-r));
                goto fail;
        }
        if ((r = write_json(dir, "tokenizer.json", root, err)) < 0 ||
            (r = write_json(dir, "tokenizer_config.json", cfg, err)) < 0)
                goto fail;
        r = 0;
        goto out;
fail:
        if (r == -ENOMEM)
                dsv_error_set(err, ENOMEM, "tokenizer: out of memory");
        else if (r == -EILSEQ)
                dsv_error_set(err, EILSEQ, "tokenizer: training produced a duplicate token (hash collision)");
out:
        json_decref(root);
        json_decref(cfg);
        free(M.a);
        free(M.b);
        free(tok_id);
        free(lex);
        free(text.p);
        trainer_done(&T);
        tok_encoder_free(enc);
        dsv_tok_free(pre);
        return r;
}
