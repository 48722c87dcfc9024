/* JSON schema to grammar nodes (see grammar.h for what is supported and the output it
 * allows). The schema is parsed with jansson; each sub-schema becomes one node, the errors
 * name the keyword and its JSON pointer. After the walk, a fixed point gives every node the
 * set of bytes its values begin with, and anyOf alternatives are checked to be disjoint by
 * that set (and free of cycles that consume nothing), so the matcher never has to guess. */
#include "config.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/grammar/internal.h"

struct defref {
        char *ref;
        struct gnode *node; /* a G_REF whose target is the definition */
};

struct cctx {
        struct dsv_grammar *g;
        json_t *root;
        struct gnode *any;
        struct defref *defs;
        size_t n_defs;
        char path[512];
        struct dsv_error *err;
        int rc;
};

static const char *const annotations[] = {"title",   "description", "$schema",  "$id",       "$comment", "default",
                                          "examples", "deprecated", "readOnly", "writeOnly", "$defs",    "definitions"};
static const char *const supported[] = {"type",      "properties", "required", "additionalProperties",
                                        "items",     "minItems",   "maxItems", "minLength",
                                        "maxLength", "enum",       "const",    "anyOf",
                                        "oneOf",     "$ref"};

static bool in_list(const char *k, const char *const *l, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (strcmp(k, l[i]) == 0)
                        return true;
        return false;
}

#define FAIL(c, e, ...)                                                                      \
        do {                                                                               \
                char _m[700];                                                              \
                snprintf(_m, sizeof(_m), __VA_ARGS__);                                     \
                (c)->rc = dsv_error_set((c)->err, (e), "schema%s%s: %s", *(c)->path ? " at " : "", (c)->path, _m); \
                return NULL;                                                               \
        } while (0)

static struct gnode *new_node(struct cctx *c, enum gkind kind) {
        struct gnode *n, **nn;
        if (c->g->n_nodes >= DSV_GRAMMAR_NODES_MAX) {
                c->rc = dsv_error_set(c->err, E2BIG, "schema: more than %d schemas", DSV_GRAMMAR_NODES_MAX);
                return NULL;
        }
        if (!(n = calloc(1, sizeof(*n))) ||
            !(nn = realloc(c->g->nodes, (c->g->n_nodes + 1) * sizeof(*nn)))) {
                free(n);
                c->rc = dsv_error_set(c->err, ENOMEM, "schema: out of memory");
                return NULL;
        }
        c->g->nodes = nn;
        nn[c->g->n_nodes++] = n;
        n->kind = kind;
        n->max_items = n->max_len = UINT32_MAX;
        return n;
}

static int lit_cmp(const void *a, const void *b) {
        const struct glit *x = a, *y = b;
        int r = memcmp(x->s, y->s, x->len < y->len ? x->len : y->len);
        return r ? r : (x->len > y->len) - (x->len < y->len);
}

/* Adds the compact text of v to a literals node (no duplicates; sorted by finish_literals). */
static int add_literal(struct cctx *c, struct gnode *n, const json_t *v) {
        char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        struct glit *l;
        if (!s)
                return dsv_error_set(c->err, ENOMEM, "schema: out of memory");
        for (uint32_t i = 0; i < n->n_lits; i++)
                if (strcmp(n->lits[i].s, s) == 0) {
                        free(s);
                        return 0;
                }
        if (!(l = realloc(n->lits, (n->n_lits + 1) * sizeof(*l)))) {
                free(s);
                return dsv_error_set(c->err, ENOMEM, "schema: out of memory");
        }
        n->lits = l;
        l[n->n_lits++] = (struct glit){.s = s, .len = (uint32_t)strlen(s)};
        return 0;
}

static struct gnode *literals(struct cctx *c, const char *const *texts, size_t n) {
        struct gnode *node = new_node(c, G_LITERALS);
        for (size_t i = 0; node && i < n; i++) {
                json_t *v = json_loads(texts[i], JSON_DECODE_ANY, NULL);
                int rc = v ? add_literal(c, node, v) : dsv_error_set(c->err, ENOMEM, "schema: out of memory");
                json_decref(v);
                if (rc < 0) {
                        c->rc = rc;
                        return NULL;
                }
        }
        return node;
}

static struct gnode *scalar(struct cctx *c, enum gkind kind) { return new_node(c, kind); }

/* "Any JSON": one node per grammar, an anyOf of every kind, its containers holding any JSON. */
static struct gnode *any_node(struct cctx *c) {
        static const char *const lits[] = {"true", "false", "null"};
        struct gnode *a, *alts[5];
        if (c->any)
                return c->any;
        if (!(a = new_node(c, G_ANYOF)) || !(a->alts = calloc(5, sizeof(*a->alts))))
                FAIL(c, ENOMEM, "out of memory");
        c->any = a;
        if (!(alts[0] = new_node(c, G_OBJECT)) || !(alts[1] = new_node(c, G_ARRAY)) || !(alts[2] = scalar(c, G_STRING)) ||
            !(alts[3] = scalar(c, G_NUMBER)) || !(alts[4] = literals(c, lits, 3)))
                return NULL;
        alts[0]->additional = a;
        alts[1]->items = a;
        memcpy(a->alts, alts, sizeof(alts));
        a->n_alts = 5;
        return a;
}

static bool type_matches(const json_t *v, const char *t) {
        if (strcmp(t, "string") == 0)
                return json_is_string(v);
        if (strcmp(t, "number") == 0)
                return json_is_number(v);
        if (strcmp(t, "integer") == 0)
                return json_is_integer(v) || (json_is_real(v) && json_real_value(v) == (double)(long long)json_real_value(v));
        if (strcmp(t, "boolean") == 0)
                return json_is_boolean(v);
        if (strcmp(t, "null") == 0)
                return json_is_null(v);
        if (strcmp(t, "object") == 0)
                return json_is_object(v);
        if (strcmp(t, "array") == 0)
                return json_is_array(v);
        return false;
}

static bool is_type_name(const char *t) {
        static const char *const names[] = {"string", "number", "integer", "boolean", "null", "object", "array"};
        return in_list(t, names, 7);
}

static struct gnode *compile(struct cctx *c, const json_t *s, int depth);

/* A path component appended for the duration of a sub-compile. */
static size_t path_push(struct cctx *c, const char *a, const char *b) {
        size_t at = strlen(c->path);
        snprintf(c->path + at, sizeof(c->path) - at, "/%s%s%s", a, b ? "/" : "", b ? b : "");
        return at;
}

static struct gnode *sub(struct cctx *c, const json_t *s, int depth, const char *a, const char *b) {
        size_t at = path_push(c, a, b);
        struct gnode *n = compile(c, s, depth + 1);
        if (n)
                c->path[at] = 0;
        return n;
}

static int count_kw(struct cctx *c, const json_t *s, const char *k, uint32_t *out) {
        const json_t *v = json_object_get(s, k);
        if (!v)
                return 0;
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > UINT32_MAX - 1) {
                char m[160];
                snprintf(m, sizeof(m), "\"%s\" must be a non-negative integer", k);
                return c->rc = dsv_error_set(c->err, EINVAL, "schema%s%s: %s", *c->path ? " at " : "", c->path, m);
        }
        *out = (uint32_t)json_integer_value(v);
        return 1;
}

static struct gnode *object_node(struct cctx *c, const json_t *s, int depth) {
        const json_t *props = json_object_get(s, "properties"), *req = json_object_get(s, "required"),
                     *add = json_object_get(s, "additionalProperties");
        struct gnode *n = new_node(c, G_OBJECT);
        const char *k;
        json_t *v;
        size_t i;

        if (!n)
                return NULL;
        if (props && !json_is_object(props))
                FAIL(c, EINVAL, "\"properties\" must be an object");
        if (props && json_object_size(props) > DSV_GRAMMAR_PROPS_MAX)
                FAIL(c, E2BIG, "more than %d properties", DSV_GRAMMAR_PROPS_MAX);
        if (add && !json_is_boolean(add) && !json_is_object(add))
                FAIL(c, EINVAL, "\"additionalProperties\" must be a boolean or a schema");
        if (props && json_object_size(props) > 0) {
                if (json_is_object(add))
                        FAIL(c, EINVAL, "unsupported: \"additionalProperties\" as a schema next to \"properties\"");
                if (!(n->props = calloc(json_object_size(props), sizeof(*n->props))))
                        FAIL(c, ENOMEM, "out of memory");
                json_object_foreach((json_t *)props, k, v) {
                        struct gprop *p = &n->props[n->n_props];
                        json_t *name = json_string(k);
                        char *q = name ? json_dumps(name, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
                        json_decref(name);
                        if (!q)
                                FAIL(c, ENOMEM, "out of memory");
                        p->key_len = (uint32_t)strlen(q) - 2;
                        memmove(q, q + 1, p->key_len);
                        q[p->key_len] = 0;
                        p->key = q;
                        n->n_props++;
                        if (!(p->value = sub(c, v, depth, "properties", k)))
                                return NULL;
                }
        } else if (!add || json_is_true(add)) {
                if (!(n->additional = any_node(c)))
                        return NULL;
        } else if (json_is_object(add)) {
                if (!(n->additional = sub(c, add, depth, "additionalProperties", NULL)))
                        return NULL;
        }
        if (req) {
                if (!json_is_array(req))
                        FAIL(c, EINVAL, "\"required\" must be an array of property names");
                json_array_foreach(req, i, v) {
                        uint32_t j = 0;
                        if (!json_is_string(v))
                                FAIL(c, EINVAL, "\"required\" must be an array of property names");
                        /* find the property's index: properties keep the schema's order */
                        {
                                const char *pk;
                                json_t *pv;
                                bool found = false;
                                j = 0;
                                if (props)
                                        json_object_foreach((json_t *)props, pk, pv) {
                                                if (strcmp(pk, json_string_value(v)) == 0) {
                                                        found = true;
                                                        break;
                                                }
                                                j++;
                                        }
                                if (!found)
                                        FAIL(c, EINVAL, "\"required\" names \"%s\", which \"properties\" does not declare",
                                             json_string_value(v));
                        }
                        n->required |= UINT64_C(1) << j;
                }
        }
        return n;
}

static struct gnode *array_node(struct cctx *c, const json_t *s, int depth) {
        const json_t *items = json_object_get(s, "items");
        struct gnode *n = new_node(c, G_ARRAY);
        if (!n || count_kw(c, s, "minItems", &n->min_items) < 0 || count_kw(c, s, "maxItems", &n->max_items) < 0)
                return NULL;
        if (n->min_items > n->max_items)
                FAIL(c, EINVAL, "\"minItems\" is larger than \"maxItems\"");
        if (items && !json_is_object(items) && !json_is_boolean(items))
                FAIL(c, EINVAL, "unsupported: \"items\" that is not one schema (tuples: prefixItems)");
        n->items = items ? sub(c, items, depth, "items", NULL) : any_node(c);
        return n->items ? n : NULL;
}

static struct gnode *string_node(struct cctx *c, const json_t *s) {
        struct gnode *n = new_node(c, G_STRING);
        if (!n || count_kw(c, s, "minLength", &n->min_len) < 0 || count_kw(c, s, "maxLength", &n->max_len) < 0)
                return NULL;
        if (n->min_len > n->max_len)
                FAIL(c, EINVAL, "\"minLength\" is larger than \"maxLength\"");
        return n;
}

static struct gnode *type_node(struct cctx *c, const json_t *s, const char *t, int depth) {
        static const char *const bools[] = {"false", "true"}, *const nul[] = {"null"};
        if (strcmp(t, "object") == 0)
                return object_node(c, s, depth);
        if (strcmp(t, "array") == 0)
                return array_node(c, s, depth);
        if (strcmp(t, "string") == 0)
                return string_node(c, s);
        if (strcmp(t, "number") == 0)
                return scalar(c, G_NUMBER);
        if (strcmp(t, "integer") == 0)
                return scalar(c, G_INTEGER);
        if (strcmp(t, "boolean") == 0)
                return literals(c, bools, 2);
        return literals(c, nul, 1);
}

/* An anyOf of already compiled alternatives: literals merged into one node, an integer
 * dropped next to a number. */
static struct gnode *anyof_of(struct cctx *c, struct gnode **alts, uint32_t n_alts) {
        struct gnode *n, *lit = NULL;
        bool has_number = false;
        if (n_alts == 1)
                return alts[0];
        for (uint32_t i = 0; i < n_alts; i++)
                has_number |= alts[i]->kind == G_NUMBER;
        if (!(n = new_node(c, G_ANYOF)) || !(n->alts = calloc(n_alts, sizeof(*n->alts))))
                FAIL(c, ENOMEM, "out of memory");
        for (uint32_t i = 0; i < n_alts; i++) {
                struct gnode *a = alts[i];
                if (a->kind == G_INTEGER && has_number)
                        continue;
                if (a->kind == G_LITERALS) {
                        /* into one node, a copy: the alternative's node may be shared (a $ref) */
                        const bool first = !lit;
                        if (first && !(lit = new_node(c, G_LITERALS)))
                                return NULL;
                        for (uint32_t j = 0; j < a->n_lits; j++) {
                                json_t *v = json_loads(a->lits[j].s, JSON_DECODE_ANY, NULL);
                                int rc = v ? add_literal(c, lit, v) : -ENOMEM;
                                json_decref(v);
                                if (rc < 0)
                                        FAIL(c, ENOMEM, "out of memory");
                        }
                        if (!first)
                                continue;
                        a = lit;
                }
                n->alts[n->n_alts++] = a;
        }
        return n->n_alts == 1 ? n->alts[0] : n;
}

static struct gnode *ref_node(struct cctx *c, const char *ref, int depth) {
        const json_t *target = NULL;
        struct gnode *r;
        struct defref *d;
        for (size_t i = 0; i < c->n_defs; i++)
                if (strcmp(c->defs[i].ref, ref) == 0)
                        return c->defs[i].node;
        if (strcmp(ref, "#") == 0)
                target = c->root;
        else if (strncmp(ref, "#/$defs/", 8) == 0)
                target = json_object_get(json_object_get(c->root, "$defs"), ref + 8);
        else if (strncmp(ref, "#/definitions/", 14) == 0)
                target = json_object_get(json_object_get(c->root, "definitions"), ref + 14);
        else
                FAIL(c, EINVAL, "unsupported \"$ref\" \"%s\" (only \"#\", \"#/$defs/NAME\", \"#/definitions/NAME\")", ref);
        if (!target)
                FAIL(c, EINVAL, "\"$ref\" \"%s\" names no definition", ref);
        if (!(r = new_node(c, G_REF)) || !(d = realloc(c->defs, (c->n_defs + 1) * sizeof(*d))))
                FAIL(c, ENOMEM, "out of memory");
        c->defs = d;
        if (!(d[c->n_defs].ref = strdup(ref)))
                FAIL(c, ENOMEM, "out of memory");
        d[c->n_defs++].node = r;
        {
                char saved[sizeof(c->path)];
                memcpy(saved, c->path, sizeof(saved));
                snprintf(c->path, sizeof(c->path), "%s", ref + 1);
                r->target = compile(c, target, depth + 1);
                if (!r->target)
                        return NULL;
                memcpy(c->path, saved, sizeof(saved));
        }
        return r;
}

static struct gnode *compile(struct cctx *c, const json_t *s, int depth) {
        const json_t *type, *en, *cn, *alts;
        const char *k, *which = NULL;
        json_t *v;
        size_t i;

        if (depth > DSV_GRAMMAR_DEPTH_MAX)
                FAIL(c, E2BIG, "nested deeper than %d levels", DSV_GRAMMAR_DEPTH_MAX);
        if (json_is_true(s))
                return any_node(c);
        if (json_is_false(s))
                FAIL(c, EINVAL, "the schema false allows no value");
        if (!json_is_object(s))
                FAIL(c, EINVAL, "a schema must be an object or a boolean");
        json_object_foreach((json_t *)s, k, v) {
                if (!in_list(k, supported, sizeof(supported) / sizeof(*supported)) &&
                    !in_list(k, annotations, sizeof(annotations) / sizeof(*annotations)))
                        FAIL(c, EINVAL, "unsupported keyword \"%s\"", k);
        }
        type = json_object_get(s, "type");
        en = json_object_get(s, "enum");
        cn = json_object_get(s, "const");
        if ((alts = json_object_get(s, "anyOf")))
                which = "anyOf";
        if (json_object_get(s, "oneOf")) {
                if (alts)
                        FAIL(c, EINVAL, "unsupported: \"anyOf\" and \"oneOf\" together");
                alts = json_object_get(s, "oneOf");
                which = "oneOf";
        }
        if (type && !json_is_string(type) && !json_is_array(type))
                FAIL(c, EINVAL, "\"type\" must be a type name or an array of them");
        if (json_is_string(type) && !is_type_name(json_string_value(type)))
                FAIL(c, EINVAL, "unknown type \"%s\"", json_string_value(type));
        json_array_foreach(json_is_array(type) ? type : NULL, i, v) {
                if (!json_is_string(v) || !is_type_name(json_string_value(v)))
                        FAIL(c, EINVAL, "\"type\" must be a type name or an array of them");
        }
        if (json_object_get(s, "$ref")) {
                const json_t *r = json_object_get(s, "$ref");
                json_object_foreach((json_t *)s, k, v) {
                        if (strcmp(k, "$ref") != 0 && !in_list(k, annotations, sizeof(annotations) / sizeof(*annotations)))
                                FAIL(c, EINVAL, "unsupported: \"%s\" next to \"$ref\"", k);
                }
                if (!json_is_string(r))
                        FAIL(c, EINVAL, "\"$ref\" must be a string");
                return ref_node(c, json_string_value(r), depth);
        }
        if (en || cn) {
                struct gnode *n;
                if (en && cn)
                        FAIL(c, EINVAL, "unsupported: \"enum\" and \"const\" together");
                if (alts)
                        FAIL(c, EINVAL, "unsupported: \"%s\" next to \"%s\"", which, en ? "enum" : "const");
                if (en && (!json_is_array(en) || json_array_size(en) == 0))
                        FAIL(c, EINVAL, "\"enum\" must be a non-empty array");
                if (!(n = new_node(c, G_LITERALS)))
                        return NULL;
                for (i = 0; i < (en ? json_array_size(en) : 1); i++) {
                        const json_t *lv = en ? json_array_get(en, i) : cn;
                        bool ok = !type;
                        if (json_is_string(type))
                                ok = type_matches(lv, json_string_value(type));
                        for (size_t t = 0; json_is_array(type) && t < json_array_size(type); t++)
                                ok |= type_matches(lv, json_string_value(json_array_get(type, t)));
                        if (ok && (c->rc = add_literal(c, n, lv)) < 0)
                                return NULL;
                }
                if (n->n_lits == 0)
                        FAIL(c, EINVAL, "no value of \"%s\" has the schema's \"type\"", en ? "enum" : "const");
                return n;
        }
        if (alts) {
                struct gnode **a;
                uint32_t na;
                if (type)
                        FAIL(c, EINVAL, "unsupported: \"type\" next to \"%s\"", which);
                if (!json_is_array(alts) || json_array_size(alts) == 0)
                        FAIL(c, EINVAL, "\"%s\" must be a non-empty array of schemas", which);
                if (json_array_size(alts) > 64)
                        FAIL(c, E2BIG, "\"%s\" has more than 64 alternatives", which);
                na = (uint32_t)json_array_size(alts);
                if (!(a = calloc(na, sizeof(*a))))
                        FAIL(c, ENOMEM, "out of memory");
                for (uint32_t j = 0; j < na; j++) {
                        char idx[16];
                        snprintf(idx, sizeof(idx), "%u", j);
                        a[j] = sub(c, json_array_get(alts, j), depth, which, idx);
                        if (!a[j]) {
                                free(a);
                                return NULL;
                        }
                }
                {
                        struct gnode *n = anyof_of(c, a, na);
                        free(a);
                        return n;
                }
        }
        if (json_is_array(type)) {
                struct gnode *a[7];
                uint32_t na = 0;
                if (json_array_size(type) == 0 || json_array_size(type) > 7)
                        FAIL(c, EINVAL, "\"type\" must list 1 to 7 type names");
                json_array_foreach(type, i, v) {
                        if (!(a[na++] = type_node(c, s, json_string_value(v), depth)))
                                return NULL;
                }
                return anyof_of(c, a, na);
        }
        if (json_is_string(type))
                return type_node(c, s, json_string_value(type), depth);
        /* no type: what the keywords imply, else any JSON */
        if (json_object_get(s, "properties") || json_object_get(s, "required") || json_object_get(s, "additionalProperties"))
                return object_node(c, s, depth);
        if (json_object_get(s, "items") || json_object_get(s, "minItems") || json_object_get(s, "maxItems"))
                return array_node(c, s, depth);
        if (json_object_get(s, "minLength") || json_object_get(s, "maxLength"))
                return string_node(c, s);
        return any_node(c);
}

/* The first-byte sets, to a fixed point (references and any JSON make the graph cyclic). */
static void first_sets(struct dsv_grammar *g) {
        bool changed = true;
        for (uint32_t i = 0; i < g->n_nodes; i++) {
                struct gnode *n = g->nodes[i];
                memset(n->first, 0, sizeof(n->first));
                switch (n->kind) {
                case G_OBJECT:
                        gfirst_add(n->first, '{');
                        break;
                case G_ARRAY:
                        gfirst_add(n->first, '[');
                        break;
                case G_STRING:
                        gfirst_add(n->first, '"');
                        break;
                case G_NUMBER:
                case G_INTEGER:
                        gfirst_add(n->first, '-');
                        for (int d = '0'; d <= '9'; d++)
                                gfirst_add(n->first, (uint8_t)d);
                        break;
                case G_LITERALS:
                        for (uint32_t j = 0; j < n->n_lits; j++)
                                gfirst_add(n->first, (uint8_t)n->lits[j].s[0]);
                        break;
                default:
                        break;
                }
        }
        while (changed) {
                changed = false;
                for (uint32_t i = 0; i < g->n_nodes; i++) {
                        struct gnode *n = g->nodes[i];
                        uint32_t set[8];
                        memcpy(set, n->first, sizeof(set));
                        if (n->kind == G_REF)
                                for (int w = 0; w < 8; w++)
                                        set[w] |= n->target->first[w];
                        for (uint32_t j = 0; n->kind == G_ANYOF && j < n->n_alts; j++)
                                for (int w = 0; w < 8; w++)
                                        set[w] |= n->alts[j]->first[w];
                        if (memcmp(set, n->first, sizeof(set))) {
                                memcpy(n->first, set, sizeof(set));
                                changed = true;
                        }
                }
        }
}

/* Whether start is reachable from n through anyOf alternatives (mark: this search's stamp). */
static bool anyof_cycle(const struct gnode *n, const struct gnode *start, uint32_t stamp) {
        for (uint32_t j = 0; j < n->n_alts; j++) {
                struct gnode *t = (struct gnode *)gresolve(n->alts[j]);
                if (t->kind != G_ANYOF)
                        continue;
                if (t == start)
                        return true;
                if (t->mark == stamp)
                        continue;
                t->mark = stamp;
                if (anyof_cycle(t, start, stamp))
                        return true;
        }
        return false;
}

static int check_graph(struct dsv_grammar *g, struct dsv_error *err) {
        for (uint32_t i = 0; i < g->n_nodes; i++) {
                struct gnode *n = g->nodes[i];
                if (n->kind == G_REF) {
                        const struct gnode *t = n;
                        for (uint32_t hops = 0; t->kind == G_REF; hops++, t = t->target)
                                if (hops > g->n_nodes)
                                        return dsv_error_set(err, EINVAL, "schema: a cycle of \"$ref\" that allows no value");
                }
        }
        for (uint32_t i = 0; i < g->n_nodes; i++) {
                struct gnode *n = g->nodes[i];
                bool empty = true;
                for (int w = 0; w < 8; w++)
                        empty &= n->first[w] == 0;
                if (empty)
                        return dsv_error_set(err, EINVAL, "schema: a \"$ref\" or \"anyOf\" cycle that allows no value");
                if (n->kind != G_ANYOF)
                        continue;
                for (uint32_t a = 0; a < n->n_alts; a++)
                        for (uint32_t b = a + 1; b < n->n_alts; b++)
                                for (int ch = 0; ch < 256; ch++)
                                        if (gfirst_has(n->alts[a]->first, (uint8_t)ch) && gfirst_has(n->alts[b]->first, (uint8_t)ch))
                                                return dsv_error_set(err, EINVAL,
                                                                     "schema: unsupported: \"anyOf\"/\"oneOf\"/\"type\" alternatives "
                                                                     "that can both begin with '%c' (alternatives must differ in "
                                                                     "kind: object, array, string, number, or distinct literals)",
                                                                     ch);
        }
        /* an anyOf whose alternative leads back to it through anyOfs alone would choose forever */
        for (uint32_t i = 0; i < g->n_nodes; i++)
                if (g->nodes[i]->kind == G_ANYOF && anyof_cycle(g->nodes[i], g->nodes[i], i + 1))
                        return dsv_error_set(err, EINVAL, "schema: an \"anyOf\" that contains itself");
        return 0;
}

void dsv_grammar_free(struct dsv_grammar *g) {
        if (!g)
                return;
        for (uint32_t i = 0; i < g->n_nodes; i++) {
                struct gnode *n = g->nodes[i];
                for (uint32_t j = 0; j < n->n_props; j++)
                        free(n->props[j].key);
                for (uint32_t j = 0; j < n->n_lits; j++)
                        free(n->lits[j].s);
                free(n->props);
                free(n->lits);
                free(n->alts);
                free(n);
        }
        free(g->nodes);
        free(g);
}

int dsv_grammar_compile(const char *text, size_t len, struct dsv_grammar **ret, struct dsv_error *err) {
        struct cctx c = {.err = err};
        json_error_t jerr;
        int rc = 0;

        if (len > DSV_GRAMMAR_SCHEMA_MAX)
                return dsv_error_set(err, E2BIG, "schema: %zu bytes, more than %u", len, DSV_GRAMMAR_SCHEMA_MAX);
        if (!(c.root = json_loadb(text, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr)))
                return dsv_error_set(err, EINVAL, "schema is not valid JSON: %s (line %d, column %d)", jerr.text, jerr.line,
                                     jerr.column);
        if (!(c.g = calloc(1, sizeof(*c.g)))) {
                json_decref(c.root);
                return -ENOMEM;
        }
        c.g->root = json_is_object(c.root) || json_is_boolean(c.root) ? ref_node(&c, "#", 0) : NULL;
        if (!c.g->root && c.rc == 0)
                c.rc = dsv_error_set(err, EINVAL, "schema: a schema must be an object or a boolean");
        if (c.g->root && !(c.g->key = new_node(&c, G_STRING)))
                c.g->root = NULL;
        if (c.g->root) {
                for (uint32_t i = 0; i < c.g->n_nodes; i++) /* match.c narrows sorted ranges */
                        if (c.g->nodes[i]->kind == G_LITERALS)
                                qsort(c.g->nodes[i]->lits, c.g->nodes[i]->n_lits, sizeof(struct glit), lit_cmp);
                first_sets(c.g);
                c.rc = check_graph(c.g, err);
        }
        rc = c.g->root ? c.rc : (c.rc ? c.rc : -EINVAL);
        for (size_t i = 0; i < c.n_defs; i++)
                free(c.defs[i].ref);
        free(c.defs);
        json_decref(c.root);
        if (rc < 0) {
                dsv_grammar_free(c.g);
                return rc;
        }
        *ret = c.g;
        return 0;
}
