/* Internals shared by the tokenizer's files: the loaded tokenizer, the per-thread encoder
 * (regex match state and BPE cache), the byte-level alphabet and UTF-8 helpers. */
#pragma once

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <assert.h>
#include <pthread.h>

#include "daemon/tokenizer/tokenizer.h"

/* GPT-2's byte-level alphabet (bytes_to_unicode): printable Latin-1 bytes stand for
 * themselves, the other 68 bytes take code points 256..323 in byte order. */
static inline bool tok_byte_is_printable(uint32_t b) {
        return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
}
static inline uint32_t tok_byte_cp(uint8_t b) {
        if (tok_byte_is_printable(b))
                return b;
        if (b <= 32)
                return 256u + b;
        if (b <= 160)
                return b + 162u; /* 127..160 -> 289..322 */
        return 323;              /* 173 */
}
/* Inverse: the byte a code point stands for, or -1. */
static inline int tok_cp_byte(uint32_t cp) {
        if (cp < 256)
                return tok_byte_is_printable(cp) ? (int)cp : -1;
        if (cp <= 288)
                return (int)(cp - 256);
        if (cp <= 322)
                return (int)(cp - 162);
        return cp == 323 ? 173 : -1;
}

/* Decodes one UTF-8 character at s[0..n); returns its length (1..4) and the code point,
 * or 0 when s does not start with a valid character (then *bad is the length of the
 * maximal invalid subpart, >= 1). */
size_t tok_utf8_next(const uint8_t *s, size_t n, uint32_t *cp, size_t *bad);
/* Length of the longest prefix of s[0..n) that is valid UTF-8. */
size_t tok_utf8_valid_prefix(const uint8_t *s, size_t n);
/* Appends the UTF-8 encoding of cp to out; returns bytes written (1..4). */
size_t tok_utf8_put(uint32_t cp, char *out);
/* Whether cp has the Unicode White_Space property (Rust's char::is_whitespace). */
bool tok_is_white_space(uint32_t cp);

/* Open-addressing map from a 64-bit key to a 64-bit value (merges: (left<<32|right) ->
 * (rank<<32|new id)). */
struct tok_map64 {
        uint64_t *keys; /* UINT64_MAX: empty */
        uint64_t *vals;
        size_t mask;
        size_t n;
};
int tok_map64_init(struct tok_map64 *m, size_t expected);
void tok_map64_done(struct tok_map64 *m);
int tok_map64_put(struct tok_map64 *m, uint64_t key, uint64_t val); /* 1 when replaced */
static inline uint64_t tok_hash64(uint64_t z) {
        z ^= z >> 33;
        z *= 0xff51afd7ed558ccdull;
        z ^= z >> 33;
        return z;
}
static inline bool tok_map64_get(const struct tok_map64 *m, uint64_t key, uint64_t *val) {
        size_t i = tok_hash64(key) & m->mask;
        for (;;) {
                uint64_t k = m->keys[i];
                if (k == key) {
                        *val = m->vals[i];
                        return true;
                }
                if (k == UINT64_MAX)
                        return false;
                i = (i + 1) & m->mask;
        }
}

uint64_t tok_hash_bytes(const void *p, size_t n);

/* Map from a byte string (stored in an external arena) to an id. */
struct tok_strmap {
        uint32_t *slots; /* id + 1, 0 empty */
        size_t mask;
};

enum tok_split_behavior {
        TOK_SPLIT_ISOLATED,
        TOK_SPLIT_REMOVED,
        TOK_SPLIT_CONTIGUOUS,
        TOK_SPLIT_MERGED_WITH_PREVIOUS,
        TOK_SPLIT_MERGED_WITH_NEXT,
};

struct tok_split {
        pcre2_code *re;   /* the pattern as written; NULL: literal */
        pcre2_code *re16; /* with Unicode 16.0 classes (tok_ucd16.h); NULL when the same */
        char *literal;
        size_t literal_len;
        enum tok_split_behavior behavior;
        bool invert;
        bool jit, jit16;
};

/* Whether valid UTF-8 text holds a code point of tok_ucd16.h (only then do the patched
 * patterns match differently, and they are slower). */
bool tok_has_ucd16(const uint8_t *s, size_t n);

struct tok_added {
        char *content;
        size_t len;
        int32_t id;
        bool special, lstrip, rstrip, normalized;
};

/* Trie over added-token contents for leftmost-longest matching. */
struct tok_trie_node {
        int32_t child;   /* first child index, -1 none */
        int32_t sibling; /* next sibling, -1 none */
        int32_t token;   /* index into added[], -1 none */
        uint8_t byte;
};
struct tok_trie {
        struct tok_trie_node *nodes;
        size_t n, cap;
        uint8_t first[256]; /* bytes that can start a token */
        bool empty;
};

struct dsv_tok_encoder;

struct dsv_tok {
        int32_t n_ids;        /* largest id + 1 */
        int32_t byte_id[256]; /* initial BPE symbol of each byte, -1 when missing */
        struct tok_map64 merges;
        bool ignore_merges;

        /* Per id: decoded bytes (Hugging Face's ByteLevel decoder rule) in one arena. */
        char *id_arena;
        uint64_t *id_off; /* offset << 24 | length; UINT64_MAX: no token */
        uint8_t *id_flags;
        struct tok_strmap bytes_to_id; /* vocabulary + added tokens, by decoded bytes */

        struct tok_split *splits;
        size_t n_splits;
        bool has_re16;

        struct tok_added *added;
        size_t n_added;
        struct tok_trie trie_raw;  /* non-normalized added tokens (matched first) */
        struct tok_trie trie_norm; /* normalized added tokens */
        bool has_special;          /* some special token in the tries */

        int32_t bos_id, eos_id;
        bool add_bos, add_eos;

        pthread_mutex_t lock;
        struct dsv_tok_encoder *shared; /* reused under lock */
};

enum {
        TOK_ID_EXISTS = 1,
        TOK_ID_SPECIAL = 2,
        TOK_ID_ADDED = 4,
};

static inline bool tok_id_bytes(const struct dsv_tok *tok, int32_t id, const char **p, size_t *n) {
        if (id < 0 || id >= tok->n_ids || !(tok->id_flags[id] & TOK_ID_EXISTS))
                return false;
        *p = tok->id_arena + (tok->id_off[id] >> 24);
        *n = (size_t)(tok->id_off[id] & 0xffffff);
        return true;
}

int tok_encoder_new(const struct dsv_tok *tok, struct dsv_tok_encoder **ret);
void tok_encoder_free(struct dsv_tok_encoder *e);
int tok_encoder_encode(struct dsv_tok_encoder *e, const uint8_t *text, size_t len, unsigned flags,
                       struct dsv_tok_ids *out);
/* Pre-tokenization only (the trainer uses it): calls cb for every pre-token. */
int tok_encoder_pretokenize(struct dsv_tok_encoder *e, const uint8_t *text, size_t len,
                            int (*cb)(void *ud, const uint8_t *p, size_t n), void *ud);

int32_t tok_strmap_get(const struct dsv_tok *tok, const char *s, size_t n);
