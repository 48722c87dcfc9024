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

static inline bool gfirst_has(const uint32_t *set, uint8_t b) { return set[b >> 5] >> (b & 31) & 1; }
static inline void gfirst_add(uint32_t *set, uint8_t b) { set[b >> 5] |= 1u << (b & 31); }

static inline const struct gnode *gresolve(const struct gnode *n) {
        while (n->kind == G_REF) /* compile refuses cycles of $ref alone */
                n = n->target;
        return n;
}
