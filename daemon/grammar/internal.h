/* What schema.c, match.c and vocab.c share: the compiled nodes and the matcher's frames.
 * A grammar owns its nodes in one array (nodes may point at each other in cycles: $ref and
 * "any JSON" recurse). */
#pragma once

#include "daemon/grammar/grammar.h"

enum gkind {
        G_OBJECT,
        G_ARRAY,
        G_STRING,
        G_NUMBER,
        G_INTEGER,
        G_LITERALS, /* enum, const, true/false/null: sorted byte strings */
        G_ANYOF,    /* alternatives with disjoint first bytes */
        G_REF,      /* target, resolved when pushed */
};

struct gprop {
        char *key; /* JSON-escaped, without quotes */
        uint32_t key_len;
        struct gnode *value;
};

struct glit {
        char *s;
        uint32_t len;
};

struct gnode {
        enum gkind kind;
        uint32_t first[8]; /* bytes a value of this node can begin with */
        /* G_OBJECT: n_props > 0: those keys only; else keys are any strings whose values
         * are `additional` (NULL: no keys at all) */
        struct gprop *props;
        uint32_t n_props;
        uint64_t required;
        struct gnode *additional;
        /* G_ARRAY */
        struct gnode *items;
        uint32_t min_items, max_items;
        /* G_STRING (characters) */
        uint32_t min_len, max_len;
        /* G_LITERALS */
        struct glit *lits;
        uint32_t n_lits;
        /* G_ANYOF */
        struct gnode **alts;
        uint32_t n_alts;
        /* G_REF */
        struct gnode *target;
        uint32_t mark; /* schema.c's cycle search */
};

struct dsv_grammar {
        struct gnode *root;
        struct gnode *key; /* the string of a free object key */
        struct gnode **nodes;
        uint32_t n_nodes;
};

struct gframe {
        const struct gnode *n;
        uint64_t a, b; /* object: seen, candidate keys; literals: range [a, b) */
        uint32_t count; /* object: chosen key; array: items; string: characters; number: digits;
                           literals: bytes matched */
        uint16_t pos;   /* object: key bytes matched; string: UTF-8 / \u bounds */
        uint8_t phase, aux;
};

/* a string frame's phases (vocab.c's shortcut reads ST_BODY: between characters) */
enum { ST_OPEN, ST_BODY, ST_UTF8, ST_ESC, ST_HEX };

struct dsv_gmatch {
        const struct dsv_grammar *g;
        uint32_t depth;
        struct gframe f[DSV_GRAMMAR_STACK_MAX];
};

/* A UTF-8 lead byte b in 0xc2..0xf4: how many continuation bytes follow (1-3), and the range
 * [*lo, *hi] the first of them must be in (narrower after e0, ed, f0 and f4: no overlong forms,
 * no surrogates, nothing above U+10FFFF; the others take 80..bf). */
static inline uint32_t gutf8_lead(uint8_t b, uint8_t *lo, uint8_t *hi) {
        *lo = b == 0xe0 ? 0xa0 : b == 0xf0 ? 0x90 : 0x80;
        *hi = b == 0xed ? 0x9f : b == 0xf4 ? 0x8f : 0xbf;
        return b < 0xe0 ? 1 : b < 0xf0 ? 2 : 3;
}

static inline bool gfirst_has(const uint32_t *set, uint8_t b) { return set[b >> 5] >> (b & 31) & 1; }
static inline void gfirst_add(uint32_t *set, uint8_t b) { set[b >> 5] |= 1u << (b & 31); }

static inline const struct gnode *gresolve(const struct gnode *n) {
        while (n->kind == G_REF) /* compile refuses cycles of $ref alone */
                n = n->target;
        return n;
}
