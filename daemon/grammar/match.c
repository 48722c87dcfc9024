/* The byte matcher of a compiled schema (see grammar.h): a stack of frames, the top one
 * the value being written. Each byte goes to the top frame, which consumes it, refuses it,
 * pushes a child that should take it, or (a number or an enum number that could end here)
 * says it is complete without it, and is popped so that its parent sees the byte. A frame
 * that is complete and can take nothing more is popped at once, so a value is done at its
 * last byte. */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/grammar/internal.h"

#define NUM_INT_MAX 15
#define NUM_FRAC_MAX 15
#define NUM_EXP_MAX 2

enum step {
        STEP_OK,     /* consumed */
        STEP_DONE,   /* consumed, and the value is complete: pop */
        STEP_POP,    /* complete without this byte: pop and give it to the parent */
        STEP_REFEED, /* the frames changed (a child pushed, an alternative chosen): again */
        STEP_REJECT,
};

enum { OB_OPEN, OB_FIRST, OB_KEY_START, OB_KEY, OB_COLON, OB_VALUE, OB_AFTER };
enum { AR_OPEN, AR_FIRST, AR_AFTER, AR_ITEM };
enum { NU_START, NU_MINUS, NU_ZERO, NU_INT, NU_DOT, NU_FRAC, NU_E, NU_ESIGN, NU_EXP };

static bool push(struct dsv_gmatch *m, const struct gnode *n, uint8_t phase) {
        if (m->depth == DSV_GRAMMAR_STACK_MAX)
                return false;
        n = gresolve(n);
        m->f[m->depth++] = (struct gframe){.n = n, .phase = phase, .b = n->kind == G_LITERALS ? n->n_lits : 0};
        return true;
}

static uint64_t all_props(const struct gnode *n) {
        return n->n_props == 64 ? UINT64_MAX : (UINT64_C(1) << n->n_props) - 1;
}

static enum step object_step(struct dsv_gmatch *m, struct gframe *f, uint8_t b) {
        const struct gnode *n = f->n;
        switch (f->phase) {
        case OB_OPEN:
                if (b != '{')
                        return STEP_REJECT;
                f->phase = OB_FIRST;
                return STEP_OK;
        case OB_FIRST:
                if (b == '}')
                        return (n->required & ~f->a) == 0 ? STEP_DONE : STEP_REJECT;
                if (n->n_props == 0 && !n->additional)
                        return STEP_REJECT;
                /* fall through */
        case OB_KEY_START:
                if (b != '"')
                        return STEP_REJECT;
                if (n->n_props == 0) {
                        f->phase = OB_COLON;
                        return push(m, m->g->key, ST_BODY) ? STEP_OK : STEP_REJECT;
                }
                f->b = all_props(n) & ~f->a;
                f->pos = 0;
                f->phase = OB_KEY;
                return STEP_OK;
        case OB_KEY: {
                uint64_t keep = 0;
                for (uint64_t c = f->b; c; c &= c - 1) {
                        uint32_t i = (uint32_t)__builtin_ctzll(c);
                        const struct gprop *p = &n->props[i];
                        if (b == '"' && p->key_len == f->pos) {
                                f->a |= UINT64_C(1) << i;
                                f->count = i;
                                f->phase = OB_COLON;
                                return STEP_OK;
                        }
                        if (p->key_len > f->pos && (uint8_t)p->key[f->pos] == b)
                                keep |= UINT64_C(1) << i;
                }
                if (!keep)
                        return STEP_REJECT;
                f->b = keep;
                f->pos++;
                return STEP_OK;
        }
        case OB_COLON:
                if (b != ':')
                        return STEP_REJECT;
                f->phase = OB_VALUE;
                return STEP_OK;
        case OB_VALUE:
                f->phase = OB_AFTER;
                return push(m, n->n_props ? n->props[f->count].value : n->additional, 0) ? STEP_REFEED : STEP_REJECT;
        case OB_AFTER:
                if (b == '}')
                        return (n->required & ~f->a) == 0 ? STEP_DONE : STEP_REJECT;
                if (b != ',' || (n->n_props && (all_props(n) & ~f->a) == 0))
                        return STEP_REJECT;
                f->phase = OB_KEY_START;
                return STEP_OK;
        }
        return STEP_REJECT;
}

static enum step array_step(struct dsv_gmatch *m, struct gframe *f, uint8_t b) {
        const struct gnode *n = f->n;
        switch (f->phase) {
        case AR_OPEN:
                if (b != '[')
                        return STEP_REJECT;
                f->phase = AR_FIRST;
                return STEP_OK;
        case AR_FIRST:
                if (b == ']')
                        return n->min_items == 0 ? STEP_DONE : STEP_REJECT;
                if (n->max_items == 0)
                        return STEP_REJECT;
                break;
        case AR_AFTER:
                if (b == ']')
                        return f->count >= n->min_items ? STEP_DONE : STEP_REJECT;
                if (b != ',' || f->count >= n->max_items)
                        return STEP_REJECT;
                f->phase = AR_ITEM;
                return STEP_OK;
        case AR_ITEM:
                break;
        default:
                return STEP_REJECT;
        }
        f->count++;
        f->phase = AR_AFTER;
        return push(m, n->items, 0) ? STEP_REFEED : STEP_REJECT;
}

static bool is_hex(uint8_t b) { return (b >= '0' && b <= '9') || ((b | 0x20) >= 'a' && (b | 0x20) <= 'f'); }

/* pos of a string frame: the bounds of the next UTF-8 continuation byte (lo | hi << 8), or
 * during \u the first hex digit */
static enum step string_step(struct gframe *f, uint8_t b) {
        const struct gnode *n = f->n;
        switch (f->phase) {
        case ST_OPEN:
                if (b != '"')
                        return STEP_REJECT;
                f->phase = ST_BODY;
                return STEP_OK;
        case ST_BODY:
                if (b == '"')
                        return f->count >= n->min_len ? STEP_DONE : STEP_REJECT;
                if (b < 0x20 || f->count >= n->max_len || (b >= 0x80 && b < 0xc2) || b > 0xf4)
                        return STEP_REJECT;
                f->count++;
                if (b == '\\')
                        f->phase = ST_ESC;
                else if (b >= 0x80) {
                        uint8_t lo, hi;
                        f->aux = gutf8_lead(b, &lo, &hi);
                        f->pos = (uint16_t)(lo | hi << 8);
                        f->phase = ST_UTF8;
                }
                return STEP_OK;
        case ST_UTF8:
                if (b < (f->pos & 0xff) || b > f->pos >> 8)
                        return STEP_REJECT;
                f->pos = 0x80 | 0xbf << 8;
                if (--f->aux == 0)
                        f->phase = ST_BODY;
                return STEP_OK;
        case ST_ESC:
                if (b == 'u') {
                        f->phase = ST_HEX;
                        f->aux = 4;
                        return STEP_OK;
                }
                if (!strchr("\"\\/bfnrt", b) || b == 0)
                        return STEP_REJECT;
                f->phase = ST_BODY;
                return STEP_OK;
        case ST_HEX:
                if (!is_hex(b))
                        return STEP_REJECT;
                if (f->aux == 4)
                        f->pos = b | 0x20;
                else if (f->aux == 3 && f->pos == 'd' && !(b >= '0' && b <= '7'))
                        return STEP_REJECT; /* \uD800-\uDFFF: a surrogate half */
                if (--f->aux == 0)
                        f->phase = ST_BODY;
                return STEP_OK;
        }
        return STEP_REJECT;
}

static bool number_complete(const struct gframe *f) {
        return f->phase == NU_ZERO || f->phase == NU_INT || f->phase == NU_FRAC || f->phase == NU_EXP;
}

/* Whether a complete number can take no more bytes. */
static bool number_closed(const struct gframe *f) {
        bool integer = f->n->kind == G_INTEGER;
        switch (f->phase) {
        case NU_ZERO:
                return integer;
        case NU_INT:
                return integer && f->count >= NUM_INT_MAX;
        case NU_EXP:
                return f->count >= NUM_EXP_MAX;
        default:
                return false;
        }
}

static enum step number_step(struct gframe *f, uint8_t b) {
        bool digit = b >= '0' && b <= '9', integer = f->n->kind == G_INTEGER;
        switch (f->phase) {
        case NU_START:
                if (b == '-') {
                        f->phase = NU_MINUS;
                        return STEP_OK;
                }
                /* fall through */
        case NU_MINUS:
                if (!digit)
                        return STEP_REJECT;
                f->phase = b == '0' ? NU_ZERO : NU_INT;
                f->count = 1;
                break;
        case NU_ZERO:
        case NU_INT:
                if (digit && f->phase == NU_INT && f->count < NUM_INT_MAX) {
                        f->count++;
                        break;
                }
                if (b == '.' && !integer) {
                        f->phase = NU_DOT;
                        return STEP_OK;
                }
                if ((b | 0x20) == 'e' && !integer) {
                        f->phase = NU_E;
                        return STEP_OK;
                }
                return STEP_POP;
        case NU_DOT:
                if (!digit)
                        return STEP_REJECT;
                f->phase = NU_FRAC;
                f->count = 1;
                break;
        case NU_FRAC:
                if (digit && f->count < NUM_FRAC_MAX) {
                        f->count++;
                        break;
                }
                if ((b | 0x20) == 'e') {
                        f->phase = NU_E;
                        return STEP_OK;
                }
                return STEP_POP;
        case NU_E:
                if (b == '+' || b == '-') {
                        f->phase = NU_ESIGN;
                        return STEP_OK;
                }
                /* fall through */
        case NU_ESIGN:
                if (!digit)
                        return STEP_REJECT;
                f->phase = NU_EXP;
                f->count = 1;
                break;
        case NU_EXP:
                if (digit && f->count < NUM_EXP_MAX) {
                        f->count++;
                        break;
                }
                return STEP_POP;
        default:
                return STEP_REJECT;
        }
        return number_closed(f) ? STEP_DONE : STEP_OK;
}

/* literals a..b sorted by bytes: those equal to the bytes matched so far come first */
static bool literal_complete(const struct gframe *f) {
        return f->count > 0 && f->a < f->b && f->n->lits[f->a].len == f->count;
}

static enum step literal_step(struct gframe *f, uint8_t b) {
        const struct glit *l = f->n->lits;
        uint64_t lo = f->a, hi;
        while (lo < f->b && !(l[lo].len > f->count && (uint8_t)l[lo].s[f->count] == b))
                lo++;
        if (lo == f->b)
                return literal_complete(f) ? STEP_POP : STEP_REJECT;
        hi = lo + 1;
        while (hi < f->b && l[hi].len > f->count && (uint8_t)l[hi].s[f->count] == b)
                hi++;
        f->a = lo;
        f->b = hi;
        f->count++;
        return hi - lo == 1 && l[lo].len == f->count ? STEP_DONE : STEP_OK;
}

static enum step anyof_step(struct dsv_gmatch *m, struct gframe *f, uint8_t b) {
        const struct gnode *n = f->n;
        for (uint32_t i = 0; i < n->n_alts; i++)
                if (gfirst_has(n->alts[i]->first, b)) {
                        m->depth--; /* the alternative takes this frame's place */
                        push(m, n->alts[i], 0);
                        return STEP_REFEED;
                }
        return STEP_REJECT;
}

static int feed_byte(struct dsv_gmatch *m, uint8_t b) {
        for (;;) {
                struct gframe *f;
                enum step s;
                if (m->depth == 0)
                        return -EINVAL;
                f = &m->f[m->depth - 1];
                switch (f->n->kind) {
                case G_OBJECT:
                        s = object_step(m, f, b);
                        break;
                case G_ARRAY:
                        s = array_step(m, f, b);
                        break;
                case G_STRING:
                        s = string_step(f, b);
                        break;
                case G_NUMBER:
                case G_INTEGER:
                        s = number_step(f, b);
                        break;
                case G_LITERALS:
                        s = literal_step(f, b);
                        break;
                case G_ANYOF:
                        s = anyof_step(m, f, b);
                        break;
                default:
                        return -EINVAL;
                }
                switch (s) {
                case STEP_OK:
                        return 0;
                case STEP_DONE:
                        m->depth--;
                        return 0;
                case STEP_POP:
                        m->depth--;
                        continue;
                case STEP_REFEED:
                        continue;
                case STEP_REJECT:
                        return -EINVAL;
                }
        }
}

int dsv_gmatch_feed(struct dsv_gmatch *m, const void *p, size_t n) {
        const uint8_t *s = p;
        for (size_t i = 0; i < n; i++)
                if (feed_byte(m, s[i]) < 0)
                        return -EINVAL;
        return 0;
}

bool dsv_gmatch_done(const struct dsv_gmatch *m) { return m->depth == 0; }

bool dsv_gmatch_can_end(const struct dsv_gmatch *m) {
        const struct gframe *f = &m->f[0];
        if (m->depth == 0)
                return true;
        if (m->depth > 1)
                return false;
        if (f->n->kind == G_NUMBER || f->n->kind == G_INTEGER)
                return number_complete(f);
        return f->n->kind == G_LITERALS && literal_complete(f);
}

size_t dsv_gmatch_size(void) { return sizeof(struct dsv_gmatch); }

void dsv_gmatch_reset(struct dsv_gmatch *m, const struct dsv_grammar *g) {
        m->g = g;
        m->depth = 0;
        push(m, g->root, 0);
}

int dsv_gmatch_new(const struct dsv_grammar *g, struct dsv_gmatch **ret) {
        struct dsv_gmatch *m = malloc(sizeof(*m));
        if (!m)
                return -ENOMEM;
        dsv_gmatch_reset(m, g);
        *ret = m;
        return 0;
}

void dsv_gmatch_free(struct dsv_gmatch *m) { free(m); }

void dsv_gmatch_copy(struct dsv_gmatch *dst, const struct dsv_gmatch *src) {
        dst->g = src->g;
        dst->depth = src->depth;
        memcpy(dst->f, src->f, src->depth * sizeof(src->f[0]));
}
