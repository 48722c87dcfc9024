/* The text layer's tokenizer: a Hugging Face tokenizer.json of the byte-level BPE kind that
 * DeepSeek uses, loaded into an immutable object that encodes text to token ids and decodes
 * ids to text exactly as Hugging Face `tokenizers` does, plus a streaming detokenizer and a
 * tiny trainer that gives generated checkpoints a tokenizer of their own.
 *
 * What a tokenizer.json may contain (anything else is an error at load, never a silent
 * difference):
 *   normalizer     null, or Sequence (recursively) of nothing
 *   pre_tokenizer  Sequence of Split (Regex or String pattern; Isolated, Removed, Contiguous,
 *                  MergedWithPrevious, MergedWithNext; invert) ending with ByteLevel
 *                  (add_prefix_space false; use_regex true adds the GPT-2 split)
 *   model          BPE: vocab, merges ("a b" strings or [a, b] pairs), ignore_merges; no
 *                  dropout, no unk token, no byte fallback, no subword prefix/suffix
 *   added_tokens   id, content, special, lstrip, rstrip, normalized (single_word false)
 *   decoder        ByteLevel
 *   post_processor null or ByteLevel (BOS/EOS come from tokenizer_config.json)
 *
 * Text is bytes: invalid UTF-8 is encoded as if each maximal invalid subsequence were
 * U+FFFD (what Hugging Face sees after any lossy conversion, e.g. Python's
 * errors="replace" or JavaScript's TextDecoder), and decode replaces byte sequences that
 * are not UTF-8 the same way (Rust's String::from_utf8_lossy).
 *
 * Regular expressions are PCRE2 with UTF+UCP and JIT. Hugging Face runs them on Oniguruma
 * with Unicode 16.0 tables; \p{L}, \p{M}, \p{N}, \p{P}, \p{S} get the code points PCRE2's
 * older tables lack (tok_ucd16.h), other classes (\w, \d, \p{Lu}, ...) use PCRE2's own.
 * Each match runs under a match limit and a bounded JIT stack, so a hostile pattern fails
 * with -EOVERFLOW instead of running away. Encode is linear in the input for DeepSeek's patterns (BPE of one pre-token of
 * length m is O(m log m) with a heap; pre-tokens up to 128 bytes are cached) and needs
 * O(input) memory. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/util.h"

struct dsv_tok;

/* A growable array of token ids; encode appends to it. Zero-initialise; free with
 * dsv_tok_ids_done(). */
struct dsv_tok_ids {
        int32_t *v;
        size_t n, cap;
};
void dsv_tok_ids_done(struct dsv_tok_ids *ids);
int dsv_tok_ids_push(struct dsv_tok_ids *ids, int32_t id);

/* Largest tokenizer.json / tokenizer_config.json accepted. */
#define DSV_TOK_MAX_FILE (256u << 20)

/* Loads tokenizer.json from path; tokenizer_config.json is read from config_path, or when
 * config_path is NULL from the same directory if it exists there. */
int dsv_tok_load(const char *path, const char *config_path, struct dsv_tok **ret, struct dsv_error *err);
/* Same from memory; config may be NULL. */
int dsv_tok_load_buffer(const char *json, size_t len, const char *config, size_t config_len,
                        struct dsv_tok **ret, struct dsv_error *err);
void dsv_tok_free(struct dsv_tok *tok);
static inline void dsv_tok_freep(struct dsv_tok **t) { dsv_tok_free(*t); }
#define _cleanup_tok_ _cleanup_(dsv_tok_freep)

/* Number of ids (largest id + 1, vocabulary and added tokens together). */
int32_t dsv_tok_vocab_size(const struct dsv_tok *tok);
/* BOS / EOS ids from tokenizer_config.json (-1 when not declared). */
int32_t dsv_tok_bos_id(const struct dsv_tok *tok);
int32_t dsv_tok_eos_id(const struct dsv_tok *tok);
/* Id of an added token or a vocabulary entry given as text (its decoded form, e.g.
 * "<think>" or " the"); -ENOENT when there is none. */
int32_t dsv_tok_token_to_id(const struct dsv_tok *tok, const char *text, size_t len);
/* The bytes id decodes to (without DSV_TOK_SKIP_SPECIAL), valid as long as tok; false for
 * an id that names no token. */
bool dsv_tok_id_bytes(const struct dsv_tok *tok, int32_t id, const char **p, size_t *n);
/* Whether id is an added token marked special (skipped by DSV_TOK_SKIP_SPECIAL). */
bool dsv_tok_is_special(const struct dsv_tok *tok, int32_t id);

enum {
        /* Encode: prepend BOS / append EOS as tokenizer_config.json's add_bos_token /
         * add_eos_token say (transformers' add_special_tokens=True). */
        DSV_TOK_ADD_SPECIAL = 1u << 0,
        /* Encode: text that spells a special added token is ordinary text (Hugging Face's
         * encode_special_tokens); non-special added tokens still match. */
        DSV_TOK_SPECIAL_AS_TEXT = 1u << 1,
        /* Decode: leave out added tokens marked special. */
        DSV_TOK_SKIP_SPECIAL = 1u << 2,
};

/* Appends the ids of text[0..len) to out. Thread-safe; concurrent callers each get their
 * own scratch state. Returns 0, -ENOMEM, or -EOVERFLOW when a regular expression exceeded
 * its match limit (only possible with a hostile pattern). */
int dsv_tok_encode(const struct dsv_tok *tok, const void *text, size_t len, unsigned flags,
                   struct dsv_tok_ids *out);

/* Decodes ids into a NUL-terminated UTF-8 string (caller frees). Ids that name no token are
 * skipped, as Hugging Face does. */
int dsv_tok_decode(const struct dsv_tok *tok, const int32_t *ids, size_t n, unsigned flags, char **ret,
                   size_t *ret_len);

/* Streaming detokenizer: fed one id at a time, returns the text that became complete
 * (never part of a UTF-8 character). The concatenation of every push and the final flush
 * equals dsv_tok_decode() of the same ids with the same flags. The returned pointer stays
 * valid until the next call on the stream. */
struct dsv_tok_stream;
int dsv_tok_stream_new(const struct dsv_tok *tok, unsigned flags, struct dsv_tok_stream **ret);
void dsv_tok_stream_free(struct dsv_tok_stream *s);
int dsv_tok_stream_push(struct dsv_tok_stream *s, int32_t id, const char **text, size_t *len);
/* End of generation: bytes still pending become U+FFFD. The stream may be reused. */
int dsv_tok_stream_flush(struct dsv_tok_stream *s, const char **text, size_t *len);

/* Writes dir/tokenizer.json and dir/tokenizer_config.json for a generated checkpoint: a
 * byte-level BPE with DeepSeek's pre-tokenizer, trained by a tiny trainer on text generated
 * from seed, plus DeepSeek's special tokens, BOS at bos_id and EOS at eos_id. The file's ids
 * are exactly 0..vocab_size-1. Deterministic: same arguments, same bytes. vocab_size must be
 * in [512, 1 << 20]. */
int dsv_tok_synth_write(const char *dir, int vocab_size, int bos_id, int eos_id, uint64_t seed,
                        struct dsv_error *err);
