/* Structured output: a JSON schema compiled into a matcher over bytes, and the mask of the
 * vocabulary's tokens that the matcher can accept from its current state.
 *
 * What the compiled grammar lets the model write (the output language, decided here):
 *   - compact JSON: no whitespace anywhere (not between tokens, not around the value);
 *   - objects with declared properties: only those properties, each at most once, in any
 *     order, every required one before the closing brace (additionalProperties absent or
 *     true still writes only declared ones, which any validator accepts); an object with no
 *     properties takes any keys with values of additionalProperties' schema (any JSON when
 *     absent or true, none when false);
 *   - arrays of items (minItems / maxItems); strings (minLength / maxLength in characters,
 *     valid UTF-8 only, no control characters, escapes \" \\ \/ \b \f \n \r \t \uXXXX but
 *     no \u surrogate halves, so a character is counted once whatever writes it);
 *   - numbers of at most 15 integer digits, 15 fraction digits and a 2-digit exponent;
 *     integers of at most 15 digits, no fraction or exponent;
 *   - enum / const (any JSON values, written compactly as the schema spells them, keys in
 *     the schema's order), true / false / null;
 *   - anyOf / oneOf / a list of types whose alternatives begin with different characters
 *     (enum and const alternatives are merged, integer with number is number), so the
 *     first byte decides the alternative and oneOf's "exactly one" holds;
 *   - $ref to "#/$defs/NAME" or "#/definitions/NAME" (recursion allowed), "#" (the root);
 *   - {} or true: any JSON value (containers nested at most DSV_GRAMMAR_STACK_MAX deep).
 * Annotations (title, description, $schema, $id, $comment, default, examples, deprecated,
 * readOnly, writeOnly) are ignored; every other keyword is refused with an error naming it
 * and where it is (pattern, format, minimum, ...). A schema may nest at most
 * DSV_GRAMMAR_DEPTH_MAX levels and hold at most DSV_GRAMMAR_NODES_MAX schemas.
 *
 * The matcher is a pushdown automaton: a stack of frames, one per open value, each a few
 * words, so a state is cheap to copy (the mask walk copies one per trie edge it follows). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/util.h"

#define DSV_GRAMMAR_DEPTH_MAX 64     /* schema nesting */
#define DSV_GRAMMAR_NODES_MAX 4096   /* schemas (nodes) in one grammar */
#define DSV_GRAMMAR_PROPS_MAX 64     /* properties of one object */
#define DSV_GRAMMAR_STACK_MAX 64     /* open values while matching */
#define DSV_GRAMMAR_SCHEMA_MAX (256u << 10) /* bytes of schema text */

struct dsv_grammar;

/* Compiles a schema given as JSON text (len bytes, not necessarily NUL-terminated).
 * -EINVAL with err naming the problem ("schema: /properties/a: unsupported keyword
 * \"pattern\"", "schema is not valid JSON: ..."), -E2BIG for a schema over the limits,
 * -ENOMEM. */
int dsv_grammar_compile(const char *text, size_t len, struct dsv_grammar **ret, struct dsv_error *err);
void dsv_grammar_free(struct dsv_grammar *g);

/* A matcher state (fixed size; copy with dsv_gmatch_copy, which copies only the open
 * frames). */
struct dsv_gmatch;
size_t dsv_gmatch_size(void);
int dsv_gmatch_new(const struct dsv_grammar *g, struct dsv_gmatch **ret);
void dsv_gmatch_free(struct dsv_gmatch *m);
void dsv_gmatch_reset(struct dsv_gmatch *m, const struct dsv_grammar *g);
void dsv_gmatch_copy(struct dsv_gmatch *dst, const struct dsv_gmatch *src);
/* Feeds bytes: 0 when every byte was accepted, -EINVAL at the first that was not (the
 * state is then undefined: feed a copy when testing). */
int dsv_gmatch_feed(struct dsv_gmatch *m, const void *p, size_t n);
/* The value is complete and nothing can follow it. */
bool dsv_gmatch_done(const struct dsv_gmatch *m);
/* The value could end here (done, or a number / enum number that may still grow). */
bool dsv_gmatch_can_end(const struct dsv_gmatch *m);

/* The vocabulary as a trie of token bytes, for masks. */
struct dsv_gvocab;
/* bytes(ud, id, &p, &n) gives token id's bytes and returns true, or false for a token the
 * output may never contain (special tokens, ids that name nothing); eos_id is allowed
 * exactly where the value can end. */
typedef bool (*dsv_gvocab_bytes_fn)(void *ud, int32_t id, const char **p, size_t *n);
int dsv_gvocab_new(int32_t n_vocab, int32_t eos_id, dsv_gvocab_bytes_fn bytes, void *ud, struct dsv_gvocab **ret);
void dsv_gvocab_free(struct dsv_gvocab *v);
/* Words of a mask: one bit per id, (n_vocab + 31) / 32. */
size_t dsv_gvocab_mask_words(const struct dsv_gvocab *v);
/* Sets bit id of mask (mask_words words) for every token m can accept next (eos where the
 * value can end); returns how many are allowed. Walks the trie depth-first from m's state,
 * copying the state once per edge it follows, so tokens that share a prefix walk it once. */
int32_t dsv_gvocab_mask(struct dsv_gvocab *v, const struct dsv_gmatch *m, uint32_t *mask);
