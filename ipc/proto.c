/* The table-driven msgpack codec of every message (see proto.h and ipc/PROTOCOL.md). */
#include "config.h"

#include "ipc/proto.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ipc/ring.h"

/* ------------------------------------------------------------------ output buffer */

void dsv_wbuf_fixed(struct dsv_wbuf *b, void *mem, size_t cap) {
        b->data = mem;
        b->len = 0;
        b->cap = cap;
        b->fixed = true;
        b->err = 0;
}

void dsv_wbuf_free(struct dsv_wbuf *b) {
        if (b && !b->fixed) {
                free(b->data);
                b->data = NULL;
                b->len = b->cap = 0;
        }
}

static int wbuf_write(void *ud, const char *buf, size_t len) {
        struct dsv_wbuf *b = ud;
        if (b->err)
                return -1;
        if (b->cap - b->len < len) {
                size_t ncap;
                uint8_t *nd;
                if (b->fixed) {
                        b->err = -ENOBUFS;
                        return -1;
                }
                ncap = b->cap ? b->cap : 256;
                while (ncap - b->len < len)
                        ncap *= 2;
                nd = realloc(b->data, ncap);
                if (!nd) {
                        b->err = -ENOMEM;
                        return -1;
                }
                b->data = nd;
                b->cap = ncap;
        }
        memcpy(b->data + b->len, buf, len);
        b->len += len;
        return 0;
}

/* ------------------------------------------------------------------ field tables */

enum ftype {
        F_U64,
        F_U32,
        F_I32,
        F_F32,
        F_STR,    /* const char * + uint32_t length at len_off */
        F_NAME,   /* char[cap + 1], NUL-terminated, no embedded NUL */
        F_TOKENS, /* const int32_t * + uint32_t count at len_off, each >= 0 */
        F_CHAT,   /* const struct dsv_chat_msg * + uint32_t count at len_off */
        F_SESSIONS, /* const struct dsv_session_row * + uint32_t count at len_off */
        F_BIAS,   /* const struct dsv_bias * + uint32_t count at len_off: a map {id: number} */
        F_STRS,   /* const struct dsv_str * + uint32_t count at len_off; each 1..DSV_MAX_STOP_STRING_BYTES */
        F_OPT_U32, /* uint32_t + bool at len_off: whether the field is present */
        F_F32S,   /* const float * + uint32_t count at len_off, each finite */
        F_TOOLS,  /* const struct dsv_tool * + uint32_t count at len_off: maps {0 name (R), 1, 2} of strings */
};

struct field {
        uint8_t key;
        uint8_t type;
        bool required;
        uint16_t off;
        uint16_t len_off;
        uint32_t cap;
        float def;
        const char *name;
};

struct desc {
        uint16_t type;
        const char *name;
        const struct field *fields;
        size_t n_fields;
};

#define U64(k, S, f, req) {k, F_U64, req, offsetof(S, f), 0, 0, 0, #f}
#define U32(k, S, f, req) {k, F_U32, req, offsetof(S, f), 0, 0, 0, #f}
#define U32D(k, S, f, d) {k, F_U32, false, offsetof(S, f), 0, 0, d, #f}
#define I32(k, S, f, req) {k, F_I32, req, offsetof(S, f), 0, 0, 0, #f}
#define I32D(k, S, f, d) {k, F_I32, false, offsetof(S, f), 0, 0, d, #f}
#define F32(k, S, f, d) {k, F_F32, false, offsetof(S, f), 0, 0, d, #f}
#define STR(k, S, f, lf, cap, req) {k, F_STR, req, offsetof(S, f), offsetof(S, lf), cap, 0, #f}
#define NAME(k, S, f, req) {k, F_NAME, req, offsetof(S, f), 0, sizeof(((S *)0)->f) - 1, 0, #f}
#define TOKENS(k, S, f, nf, cap, req) {k, F_TOKENS, req, offsetof(S, f), offsetof(S, nf), cap, 0, #f}
#define CHAT(k, S, f, nf, cap) {k, F_CHAT, false, offsetof(S, f), offsetof(S, nf), cap, 0, #f}
#define SESSIONS(k, S, f, nf, cap) {k, F_SESSIONS, false, offsetof(S, f), offsetof(S, nf), cap, 0, #f}
#define BIAS(k, S, f, nf, cap) {k, F_BIAS, false, offsetof(S, f), offsetof(S, nf), cap, 0, #f}
#define STRS(k, S, f, nf, cap) {k, F_STRS, false, offsetof(S, f), offsetof(S, nf), cap, 0, #f}
#define OPTU32(k, S, f, hf) {k, F_OPT_U32, false, offsetof(S, f), offsetof(S, hf), 0, 0, #f}
#define F32S(k, S, f, nf, cap) {k, F_F32S, false, offsetof(S, f), offsetof(S, nf), cap, 0, #f}
#define TOOLS(k, S, f, nf, cap) {k, F_TOOLS, false, offsetof(S, f), offsetof(S, nf), cap, 0, #f}

typedef struct dsv_msg_hello hello_t;
static const struct field f_hello[] = {
        U32(0, hello_t, version_major, true), U32(1, hello_t, version_minor, false), NAME(2, hello_t, name, false),
        U32(3, hello_t, sub_bytes, false),    U32(4, hello_t, comp_bytes, false),    U32(5, hello_t, flags, false),
};

typedef struct dsv_msg_welcome welcome_t;
static const struct field f_welcome[] = {
        U32(0, welcome_t, version_major, true), U32(1, welcome_t, version_minor, false),
        NAME(2, welcome_t, daemon_version, false), U32(3, welcome_t, pid, false),
        U32(4, welcome_t, state, false),        NAME(5, welcome_t, model, false),
        I32(6, welcome_t, vocab_size, false),   I32D(7, welcome_t, bos_id, -1),
        I32D(8, welcome_t, eos_id, -1),         I32(9, welcome_t, max_context, false),
        U32(10, welcome_t, features, false),    U64(11, welcome_t, shm_size, true),
        U32(12, welcome_t, max_tokens_limit, false), U32(13, welcome_t, max_prompt_bytes, false),
};

typedef struct dsv_msg_ping ping_t;
static const struct field f_ping[] = {
        U64(0, ping_t, id, true),
        U64(1, ping_t, t_ns, false),
};
static const struct field f_pong[] = {
        U64(0, ping_t, id, true),
        U64(1, ping_t, t_ns, false),
        U64(2, ping_t, t_daemon_ns, false),
};

typedef struct dsv_msg_generate gen_t;
static const struct field f_generate[] = {
        U64(0, gen_t, id, true),
        STR(1, gen_t, text, text_len, DSV_MAX_TEXT, false),
        TOKENS(2, gen_t, tokens, n_tokens, DSV_MAX_TOKENS_ARRAY, false),
        CHAT(3, gen_t, messages, n_messages, DSV_MAX_CHAT_MESSAGES),
        U32D(4, gen_t, max_tokens, 256),
        F32(5, gen_t, temperature, 1.0f),
        F32(6, gen_t, top_p, 1.0f),
        I32D(7, gen_t, top_k, 0),
        U64(8, gen_t, seed, false),
        U32(9, gen_t, flags, false),
        TOKENS(10, gen_t, stop_tokens, n_stop_tokens, DSV_MAX_STOP_TOKENS, false),
        NAME(11, gen_t, session, false),
        F32(12, gen_t, min_p, 0.0f),
        I32D(13, gen_t, priority, 0),
        STRS(14, gen_t, stop_strings, n_stop_strings, DSV_MAX_STOP_STRINGS),
        F32(15, gen_t, repetition_penalty, 1.0f),
        F32(16, gen_t, frequency_penalty, 0.0f),
        F32(17, gen_t, presence_penalty, 0.0f),
        BIAS(18, gen_t, logit_bias, n_logit_bias, DSV_MAX_LOGIT_BIAS),
        OPTU32(19, gen_t, logprobs, has_logprobs),
        TOOLS(20, gen_t, tools, n_tools, DSV_MAX_TOOLS),
        STR(21, gen_t, schema, schema_len, DSV_MAX_SCHEMA, false),
};

typedef struct dsv_msg_id id_t_;
static const struct field f_id[] = {
        U64(0, id_t_, id, true),
};

typedef struct dsv_msg_tokenize tokenize_t;
static const struct field f_tokenize[] = {
        U64(0, tokenize_t, id, true),
        STR(1, tokenize_t, text, text_len, DSV_MAX_TEXT, true),
        U32(2, tokenize_t, flags, false),
};

typedef struct dsv_msg_tokens tokens_t;
static const struct field f_detokenize[] = {
        U64(0, tokens_t, id, true),
        TOKENS(1, tokens_t, tokens, n_tokens, DSV_MAX_TOKENS_ARRAY, true),
};
static const struct field f_tokens[] = {
        U64(0, tokens_t, id, true),
        TOKENS(1, tokens_t, tokens, n_tokens, DSV_MAX_TOKENS_ARRAY, true),
        STR(2, tokens_t, text, text_len, DSV_MAX_TEXT, false),
        F32S(3, tokens_t, logprobs, n_logprobs, DSV_MAX_TOKENS_ARRAY),
        TOKENS(4, tokens_t, top_ids, n_top, DSV_MAX_TOKENS_ARRAY, false),
        F32S(5, tokens_t, top_logprobs, n_top_logprobs, DSV_MAX_TOKENS_ARRAY),
};

typedef struct dsv_msg_session session_t;
static const struct field f_session[] = {
        U64(0, session_t, id, true),
        NAME(1, session_t, name, true),
        U32(2, session_t, flags, false),
};
static const struct field f_session_reply[] = {
        U64(0, session_t, id, true),
        NAME(1, session_t, name, false),
        U32(2, session_t, flags, false),
        U32(3, session_t, n_tokens, false),
        U32(4, session_t, n_pages, false),
};

typedef struct dsv_msg_session_list session_list_t;
static const struct field f_session_list_reply[] = {
        U64(0, session_list_t, id, true),
        SESSIONS(1, session_list_t, rows, n_rows, DSV_MAX_SESSION_ROWS),
        U32(2, session_list_t, n_total, false),
};

typedef struct dsv_msg_done done_t;
static const struct field f_done[] = {
        U64(0, done_t, id, true),         U32(1, done_t, reason, true),      U32(2, done_t, prompt_tokens, false),
        U32(3, done_t, completion_tokens, false), U32(4, done_t, cached_tokens, false), U64(5, done_t, queue_us, false),
        U64(6, done_t, prefill_us, false), U64(7, done_t, decode_us, false),
        U32(8, done_t, preempted, false), U32(9, done_t, spec_drafted, false), U32(10, done_t, spec_accepted, false),
        U32(11, done_t, stop_index, false),
};

typedef struct dsv_msg_chat_event chat_event_t;
static const struct field f_chat_event[] = {
        U64(0, chat_event_t, id, true),
        U32(1, chat_event_t, type, true),
        STR(2, chat_event_t, text, text_len, DSV_MAX_TEXT, false),
        U32(3, chat_event_t, index, false),
        NAME(4, chat_event_t, call_id, false),
        STR(5, chat_event_t, name, name_len, 4 * DSV_MAX_TOOL_NAME, false),
        STR(6, chat_event_t, message, message_len, DSV_ERROR_MESSAGE_MAX, false),
};

typedef struct dsv_msg_error error_t_;
static const struct field f_error[] = {
        U64(0, error_t_, id, true),
        I32(1, error_t_, code, true),
        STR(2, error_t_, message, message_len, DSV_ERROR_MESSAGE_MAX, false),
};

typedef struct dsv_msg_detokenize_reply detok_t;
static const struct field f_detok_reply[] = {
        U64(0, detok_t, id, true),
        STR(1, detok_t, text, text_len, DSV_MAX_TEXT, true),
};

typedef struct dsv_msg_stats_reply stats_t;
static const struct field f_stats_reply[] = {
        U64(0, stats_t, id, true),
        U32(1, stats_t, state, false),
        U32(2, stats_t, pid, false),
        U64(3, stats_t, uptime_ms, false),
        U32(4, stats_t, load_permille, false),
        NAME(5, stats_t, daemon_version, false),
        NAME(6, stats_t, model, false),
        NAME(7, stats_t, backend, false),
        NAME(8, stats_t, numerics, false),
        U32(9, stats_t, threads, false),
        I32(10, stats_t, vocab_size, false),
        I32(11, stats_t, n_layers, false),
        I32(12, stats_t, max_context, false),
        U64(13, stats_t, weight_bytes, false),
        U64(14, stats_t, kv_pages_total, false),
        U64(15, stats_t, kv_pages_used, false),
        U64(16, stats_t, kv_page_tokens, false),
        U64(17, stats_t, kv_bytes_per_token, false),
        U64(18, stats_t, rss_bytes, false),
        U32(19, stats_t, clients, false),
        U32(20, stats_t, requests_running, false),
        U32(21, stats_t, requests_waiting, false),
        U32(22, stats_t, requests_parked, false),
        U64(23, stats_t, requests_total, false),
        U64(24, stats_t, prompt_tokens_total, false),
        U64(25, stats_t, generated_tokens_total, false),
        U64(26, stats_t, steps_total, false),
        F32(27, stats_t, prefill_tok_s, 0.0f),
        F32(28, stats_t, decode_tok_s, 0.0f),
        U64(29, stats_t, loop_wakeups, false),
        U64(30, stats_t, loop_sleeps, false),
        U64(31, stats_t, doorbells_sent, false),
        U64(32, stats_t, doorbells_received, false),
        U32(33, stats_t, spin_us, false),
        U32(34, stats_t, features, false),
        U32(35, stats_t, sessions, false),
        U32(36, stats_t, sessions_pinned, false),
        U64(37, stats_t, session_pages, false),
        U64(38, stats_t, cached_tokens_total, false),
        U64(39, stats_t, sessions_evicted, false),
        U32(40, stats_t, requests_prefilling, false),
        U32(41, stats_t, rate_window_ms, false),
        U64(42, stats_t, prefilled_tokens_total, false),
        U64(43, stats_t, preemptions_total, false),
        U64(44, stats_t, prefix_cache_tokens_total, false),
        U64(45, stats_t, spec_drafted_total, false),
        U64(46, stats_t, spec_accepted_total, false),
        U64(47, stats_t, kv_pages_cached, false),
        U64(48, stats_t, requests_done_total, false),
        U64(49, stats_t, queue_us_total, false),
        U64(50, stats_t, ttft_us_total, false),
        U64(51, stats_t, decode_us_total, false),
        U64(52, stats_t, decode_tokens_total, false),
        NAME(53, stats_t, device, false),
        U64(54, stats_t, device_memory_total, false),
        U64(55, stats_t, device_memory_free, false),
        U64(56, stats_t, device_weight_bytes, false),
        U64(57, stats_t, device_kv_bytes, false),
        U32(60, stats_t, ranks, false),
        NAME(61, stats_t, layout, false),
        U64(62, stats_t, rank_weight_min, false),
        U64(63, stats_t, rank_weight_max, false),
        TOKENS(64, stats_t, rank_pages, n_rank_pages, DSV_MAX_RANK_PAGES, false),
        U64(65, stats_t, session_moves_total, false),
};
/* the decoder tracks the fields it saw in one 64-bit mask */
_Static_assert(sizeof(f_stats_reply) / sizeof(f_stats_reply[0]) <= 64, "STATS_REPLY has more than 64 fields");

#define D(t, n, f) {t, n, f, sizeof(f) / sizeof(f[0])}
static const struct desc descs[] = {
        D(DSV_MSG_HELLO, "HELLO", f_hello),
        D(DSV_MSG_WELCOME, "WELCOME", f_welcome),
        D(DSV_MSG_PING, "PING", f_ping),
        D(DSV_MSG_GENERATE, "GENERATE", f_generate),
        D(DSV_MSG_CANCEL, "CANCEL", f_id),
        D(DSV_MSG_TOKENIZE, "TOKENIZE", f_tokenize),
        D(DSV_MSG_DETOKENIZE, "DETOKENIZE", f_detokenize),
        D(DSV_MSG_STATS, "STATS", f_id),
        D(DSV_MSG_SESSION_OPEN, "SESSION_OPEN", f_session),
        D(DSV_MSG_SESSION_CLOSE, "SESSION_CLOSE", f_session),
        D(DSV_MSG_SESSION_PIN, "SESSION_PIN", f_session),
        D(DSV_MSG_SESSION_LIST, "SESSION_LIST", f_id),
        D(DSV_MSG_SESSION_SAVE, "SESSION_SAVE", f_id),
        D(DSV_MSG_PONG, "PONG", f_pong),
        D(DSV_MSG_TOKENS, "TOKENS", f_tokens),
        D(DSV_MSG_DONE, "DONE", f_done),
        D(DSV_MSG_ERROR, "ERROR", f_error),
        D(DSV_MSG_STATS_REPLY, "STATS_REPLY", f_stats_reply),
        D(DSV_MSG_TOKENIZE_REPLY, "TOKENIZE_REPLY", f_detokenize),
        D(DSV_MSG_DETOKENIZE_REPLY, "DETOKENIZE_REPLY", f_detok_reply),
        D(DSV_MSG_SESSION_REPLY, "SESSION_REPLY", f_session_reply),
        D(DSV_MSG_SESSION_LIST_REPLY, "SESSION_LIST_REPLY", f_session_list_reply),
        D(DSV_MSG_CHAT_EVENT, "CHAT_EVENT", f_chat_event),
};

static const struct desc *desc_of(unsigned type) {
        for (size_t i = 0; i < sizeof(descs) / sizeof(descs[0]); i++)
                if (descs[i].type == type)
                        return &descs[i];
        return NULL;
}

const char *dsv_msg_type_name(unsigned type) {
        const struct desc *d = desc_of(type);
        return d ? d->name : NULL;
}

const char *dsv_finish_name(unsigned reason) {
        static const char *const names[DSV_FINISH_MAX] = {"stop", "length", "cancelled", "context", "shutdown",
                                                           "stop string", "tool calls"};
        return reason < DSV_FINISH_MAX ? names[reason] : "unknown";
}

const char *dsv_state_name(unsigned state) {
        static const char *const names[DSV_STATE_MAX] = {"loading", "ready", "draining", "failed"};
        return state < DSV_STATE_MAX ? names[state] : "unknown";
}

const char *dsv_errno_name(int err) {
        static const struct {
                int e;
                const char *name;
        } names[] = {
                {EINVAL, "EINVAL"},       {E2BIG, "E2BIG"},         {ENOENT, "ENOENT"},     {EACCES, "EACCES"},
                {EPERM, "EPERM"},         {EMSGSIZE, "EMSGSIZE"},   {EAGAIN, "EAGAIN"},     {ENOTSUP, "ENOTSUP"},
                {ESHUTDOWN, "ESHUTDOWN"}, {EBUSY, "EBUSY"},         {EDQUOT, "EDQUOT"},     {ENOSPC, "ENOSPC"},
                {EEXIST, "EEXIST"},       {EIO, "EIO"},             {ENOMEM, "ENOMEM"},     {EPROTO, "EPROTO"},
                {EBADMSG, "EBADMSG"},     {EUSERS, "EUSERS"},       {ECONNRESET, "ECONNRESET"},
                {ECONNREFUSED, "ECONNREFUSED"}, {ETIMEDOUT, "ETIMEDOUT"}, {ENOSYS, "ENOSYS"},
                {EPROTONOSUPPORT, "EPROTONOSUPPORT"}, {EPIPE, "EPIPE"}, {EINTR, "EINTR"}, {ENAMETOOLONG, "ENAMETOOLONG"},
        };
        if (err < 0)
                err = -err;
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
                if (names[i].e == err)
                        return names[i].name;
        return "EUNKNOWN";
}

/* ------------------------------------------------------------------ encoder */

#define AT(base, off, T) ((T *)((uint8_t *)(base) + (off)))
#define CAT(base, off, T) ((const T *)((const uint8_t *)(base) + (off)))

static bool field_present(const void *s, const struct field *f) {
        switch (f->type) {
        case F_STR:
                return *CAT(s, f->off, char *) != NULL;
        case F_NAME: /* a required one is written even when empty, so it decodes again */
                return f->required || CAT(s, f->off, char)[0] != 0;
        case F_TOKENS:
        case F_CHAT:
        case F_SESSIONS:
        case F_STRS:
        case F_BIAS:
        case F_F32S:
        case F_TOOLS:
                return f->required || *CAT(s, f->len_off, uint32_t) > 0;
        case F_OPT_U32:
                return *CAT(s, f->len_off, bool);
        default:
                return true;
        }
}

static int pack_str(msgpack_packer *pk, const char *p, size_t n) {
        if (msgpack_pack_str(pk, n) < 0 || msgpack_pack_str_body(pk, p, n) < 0)
                return -1;
        return 0;
}

/* n entries of three strings each (struct dsv_tool_call, struct dsv_tool): an array of maps
 * {0, 1, 2}, a key left out when its string is NULL (key 0 always written). */
_Static_assert(sizeof(struct dsv_tool_call) == 3 * sizeof(struct dsv_str) &&
                       sizeof(struct dsv_tool) == 3 * sizeof(struct dsv_str),
               "tool calls and tools are three strings");
static void pack_str3s(msgpack_packer *pk, const struct dsv_str *v, uint32_t n) {
        msgpack_pack_array(pk, n);
        for (uint32_t j = 0; j < n; j++, v += 3) {
                msgpack_pack_map(pk, 1 + (v[1].p != NULL) + (v[2].p != NULL));
                for (unsigned k = 0; k < 3; k++) {
                        if (k && !v[k].p)
                                continue;
                        msgpack_pack_uint8(pk, (uint8_t)k);
                        pack_str(pk, v[k].p ? v[k].p : "", v[k].p ? v[k].len : 0);
                }
        }
}

int dsv_msg_encode(const struct dsv_msg *m, struct dsv_wbuf *out) {
        const struct desc *d = desc_of(m->type);
        const void *s = &m->u;
        msgpack_packer pk;
        size_t n = 0;

        if (!d)
                return -EINVAL;
        msgpack_packer_init(&pk, out, wbuf_write);
        for (size_t i = 0; i < d->n_fields; i++)
                n += field_present(s, &d->fields[i]);
        msgpack_pack_map(&pk, n);
        for (size_t i = 0; i < d->n_fields && !out->err; i++) {
                const struct field *f = &d->fields[i];
                uint32_t cnt;
                if (!field_present(s, f))
                        continue;
                msgpack_pack_uint8(&pk, f->key);
                switch (f->type) {
                case F_U64:
                        msgpack_pack_uint64(&pk, *CAT(s, f->off, uint64_t));
                        break;
                case F_U32:
                case F_OPT_U32:
                        msgpack_pack_uint32(&pk, *CAT(s, f->off, uint32_t));
                        break;
                case F_I32:
                        msgpack_pack_int32(&pk, *CAT(s, f->off, int32_t));
                        break;
                case F_F32:
                        msgpack_pack_float(&pk, *CAT(s, f->off, float));
                        break;
                case F_STR:
                        cnt = *CAT(s, f->len_off, uint32_t);
                        if (cnt > f->cap)
                                return -EINVAL;
                        pack_str(&pk, *CAT(s, f->off, char *), cnt);
                        break;
                case F_NAME: {
                        const char *name = CAT(s, f->off, char);
                        pack_str(&pk, name, strnlen(name, f->cap));
                        break;
                }
                case F_TOKENS: {
                        const int32_t *t = *CAT(s, f->off, int32_t *);
                        cnt = *CAT(s, f->len_off, uint32_t);
                        if (cnt > f->cap || (cnt && !t))
                                return -EINVAL;
                        msgpack_pack_array(&pk, cnt);
                        for (uint32_t j = 0; j < cnt; j++)
                                msgpack_pack_int32(&pk, t[j]);
                        break;
                }
                case F_F32S: {
                        const float *v = *CAT(s, f->off, float *);
                        cnt = *CAT(s, f->len_off, uint32_t);
                        if (cnt > f->cap || (cnt && !v))
                                return -EINVAL;
                        msgpack_pack_array(&pk, cnt);
                        for (uint32_t j = 0; j < cnt; j++)
                                msgpack_pack_float(&pk, v[j]);
                        break;
                }
                case F_CHAT: {
                        const struct dsv_chat_msg *c = *CAT(s, f->off, struct dsv_chat_msg *);
                        cnt = *CAT(s, f->len_off, uint32_t);
                        if (cnt > f->cap || (cnt && !c))
                                return -EINVAL;
                        msgpack_pack_array(&pk, cnt);
                        for (uint32_t j = 0; j < cnt; j++) {
                                /* keys 2..4 only when set: an older daemon sees the 1.2 message */
                                bool rs = c[j].reasoning.p != NULL, tc = c[j].n_tool_calls > 0, id = c[j].tool_call_id.p != NULL;
                                if (c[j].n_tool_calls > DSV_MAX_TOOL_CALLS || (tc && !c[j].tool_calls))
                                        return -EINVAL;
                                msgpack_pack_map(&pk, 2 + rs + tc + id);
                                msgpack_pack_uint8(&pk, 0);
                                pack_str(&pk, c[j].role ? c[j].role : "", c[j].role ? c[j].role_len : 0);
                                msgpack_pack_uint8(&pk, 1);
                                pack_str(&pk, c[j].content ? c[j].content : "", c[j].content ? c[j].content_len : 0);
                                if (rs) {
                                        msgpack_pack_uint8(&pk, 2);
                                        pack_str(&pk, c[j].reasoning.p, c[j].reasoning.len);
                                }
                                if (tc) {
                                        msgpack_pack_uint8(&pk, 3);
                                        pack_str3s(&pk, &c[j].tool_calls[0].id, c[j].n_tool_calls);
                                }
                                if (id) {
                                        msgpack_pack_uint8(&pk, 4);
                                        pack_str(&pk, c[j].tool_call_id.p, c[j].tool_call_id.len);
                                }
                        }
                        break;
                }
                case F_TOOLS: {
                        const struct dsv_tool *t = *CAT(s, f->off, struct dsv_tool *);
                        cnt = *CAT(s, f->len_off, uint32_t);
                        if (cnt > f->cap || (cnt && !t))
                                return -EINVAL;
                        pack_str3s(&pk, &t[0].name, cnt);
                        break;
                }
                case F_BIAS: {
                        const struct dsv_bias *v = *CAT(s, f->off, struct dsv_bias *);
                        cnt = *CAT(s, f->len_off, uint32_t);
                        if (cnt > f->cap || (cnt && !v))
                                return -EINVAL;
                        msgpack_pack_map(&pk, cnt);
                        for (uint32_t j = 0; j < cnt; j++) {
                                if (v[j].id < 0)
                                        return -EINVAL;
                                msgpack_pack_uint32(&pk, (uint32_t)v[j].id);
                                msgpack_pack_float(&pk, v[j].bias);
                        }
                        break;
                }
                case F_STRS: {
                        const struct dsv_str *v = *CAT(s, f->off, struct dsv_str *);
                        cnt = *CAT(s, f->len_off, uint32_t);
                        if (cnt > f->cap || (cnt && !v))
                                return -EINVAL;
                        for (uint32_t j = 0; j < cnt; j++)
                                if (v[j].len == 0 || v[j].len > DSV_MAX_STOP_STRING_BYTES || !v[j].p)
                                        return -EINVAL;
                        msgpack_pack_array(&pk, cnt);
                        for (uint32_t j = 0; j < cnt; j++)
                                pack_str(&pk, v[j].p, v[j].len);
                        break;
                }
                case F_SESSIONS: {
                        const struct dsv_session_row *row = *CAT(s, f->off, struct dsv_session_row *);
                        cnt = *CAT(s, f->len_off, uint32_t);
                        if (cnt > f->cap || (cnt && !row))
                                return -EINVAL;
                        msgpack_pack_array(&pk, cnt);
                        for (uint32_t j = 0; j < cnt; j++) {
                                if (row[j].has_rank && row[j].rank >= DSV_MAX_RANKS)
                                        return -EINVAL;
                                msgpack_pack_map(&pk, row[j].has_rank ? 6 : 5);
                                msgpack_pack_uint8(&pk, 0);
                                pack_str(&pk, row[j].name, strnlen(row[j].name, DSV_NAME_MAX));
                                msgpack_pack_uint8(&pk, 1);
                                msgpack_pack_uint32(&pk, row[j].flags);
                                msgpack_pack_uint8(&pk, 2);
                                msgpack_pack_uint32(&pk, row[j].n_tokens);
                                msgpack_pack_uint8(&pk, 3);
                                msgpack_pack_uint32(&pk, row[j].n_pages);
                                msgpack_pack_uint8(&pk, 4);
                                msgpack_pack_uint64(&pk, row[j].idle_ms);
                                if (row[j].has_rank) {
                                        msgpack_pack_uint8(&pk, 5);
                                        msgpack_pack_uint32(&pk, row[j].rank);
                                }
                        }
                        break;
                }
                }
        }
        return out->err;
}

int dsv_ring_write_msg(struct dsv_ring *r, const struct dsv_msg *m, struct dsv_wbuf *scratch) {
        int e;
        scratch->len = 0;
        scratch->err = 0;
        e = dsv_msg_encode(m, scratch);
        if (e < 0)
                return e == -ENOBUFS ? -EMSGSIZE : e;
        if (scratch->len > UINT32_MAX)
                return -EMSGSIZE;
        return dsv_ring_write(r, m->type, 0, scratch->data, (uint32_t)scratch->len);
}

/* ------------------------------------------------------------------ bounds scanner */

/* Reads a big-endian unsigned of n bytes at p[*i], advancing; false when short. */
static bool rd_be(const uint8_t *p, size_t len, size_t *i, unsigned n, uint64_t *v) {
        uint64_t x = 0;
        if (len - *i < n)
                return false;
        for (unsigned k = 0; k < n; k++)
                x = (x << 8) | p[*i + k];
        *i += n;
        *v = x;
        return true;
}

int dsv_msgpack_scan(const uint8_t *p, size_t len, unsigned max_depth) {
        uint64_t stack[DSV_MSGPACK_MAX_DEPTH + 1]; /* objects still expected per level */
        unsigned depth = 0;
        size_t i = 0;

        if (max_depth > DSV_MSGPACK_MAX_DEPTH)
                max_depth = DSV_MSGPACK_MAX_DEPTH;
        stack[0] = 1;
        while (true) {
                uint64_t v, cnt = 0, skip = 0;
                bool container = false;
                uint8_t b;

                while (depth > 0 && stack[depth] == 0)
                        depth--;
                if (depth == 0 && stack[0] == 0)
                        break;
                stack[depth]--;
                if (i >= len)
                        return -EBADMSG;
                b = p[i++];
                if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
                        continue;
                if ((b & 0xf0) == 0x80) {
                        container = true;
                        cnt = 2ull * (b & 0x0f);
                } else if ((b & 0xf0) == 0x90) {
                        container = true;
                        cnt = b & 0x0f;
                } else if ((b & 0xe0) == 0xa0) {
                        skip = b & 0x1f;
                } else {
                        switch (b) {
                        case 0xc4: case 0xd9: /* bin8, str8 */
                                if (!rd_be(p, len, &i, 1, &skip))
                                        return -EBADMSG;
                                break;
                        case 0xc5: case 0xda:
                                if (!rd_be(p, len, &i, 2, &skip))
                                        return -EBADMSG;
                                break;
                        case 0xc6: case 0xdb:
                                if (!rd_be(p, len, &i, 4, &skip))
                                        return -EBADMSG;
                                break;
                        case 0xca: skip = 4; break;
                        case 0xcb: skip = 8; break;
                        case 0xcc: case 0xd0: skip = 1; break;
                        case 0xcd: case 0xd1: skip = 2; break;
                        case 0xce: case 0xd2: skip = 4; break;
                        case 0xcf: case 0xd3: skip = 8; break;
                        case 0xdc: /* array16 */
                                if (!rd_be(p, len, &i, 2, &v))
                                        return -EBADMSG;
                                container = true;
                                cnt = v;
                                break;
                        case 0xdd:
                                if (!rd_be(p, len, &i, 4, &v))
                                        return -EBADMSG;
                                container = true;
                                cnt = v;
                                break;
                        case 0xde: /* map16 */
                                if (!rd_be(p, len, &i, 2, &v))
                                        return -EBADMSG;
                                container = true;
                                cnt = 2 * v;
                                break;
                        case 0xdf:
                                if (!rd_be(p, len, &i, 4, &v))
                                        return -EBADMSG;
                                container = true;
                                cnt = 2 * v;
                                break;
                        default: /* ext types and 0xc1 (never used) are not part of the protocol */
                                return -EBADMSG;
                        }
                }
                if (container) {
                        /* each element needs at least one byte: a count larger than what is
                         * left is a lie, refused before msgpack-c sizes an allocation by it */
                        if (cnt > len - i)
                                return -EBADMSG;
                        if (cnt == 0)
                                continue;
                        if (depth + 1 > max_depth)
                                return -EBADMSG;
                        stack[++depth] = cnt;
                } else if (skip) {
                        if (skip > len - i)
                                return -EBADMSG;
                        i += skip;
                }
        }
        return i == len ? 0 : -EBADMSG;
}

/* ------------------------------------------------------------------ decoder */

static int why_set(char *why, size_t n, int err, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int why_set(char *why, size_t n, int err, const char *fmt, ...) {
        if (why && n) {
                va_list ap;
                va_start(ap, fmt);
                vsnprintf(why, n, fmt, ap);
                va_end(ap);
        }
        return err;
}

static bool obj_u64(const msgpack_object *o, uint64_t *v) {
        if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
                *v = o->via.u64;
                return true;
        }
        return false;
}

static bool obj_i64(const msgpack_object *o, int64_t *v) {
        if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT64_MAX) {
                *v = (int64_t)o->via.u64;
                return true;
        }
        if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
                *v = o->via.i64;
                return true;
        }
        return false;
}

static bool obj_str(const msgpack_object *o, const char **p, uint32_t *n) {
        if (o->type == MSGPACK_OBJECT_STR) {
                *p = o->via.str.ptr; /* NULL for an empty string (msgpack-c) */
                *n = o->via.str.size;
                return true;
        }
        return false;
}

/* A field of n entries (an array, or for logit bias a map): checks the msgpack type (else "field
 * NAME must be WHAT") and the cap, allocates n elements of elem bytes in the zone (*ret NULL
 * when n is 0). */
static int decode_entries(const msgpack_object *o, const struct field *f, msgpack_object_type type, const char *what,
                          msgpack_zone *z, size_t elem, void **ret, uint32_t *ret_n, char *why, size_t wn) {
        uint32_t n;
        if (o->type != type)
                return why_set(why, wn, -EPROTO, "field %s must be %s", f->name, what);
        n = type == MSGPACK_OBJECT_MAP ? o->via.map.size : o->via.array.size;
        if (n > f->cap)
                return why_set(why, wn, -EPROTO, "field %s has %u entries, more than %u", f->name, n, f->cap);
        *ret = n ? msgpack_zone_malloc(z, (size_t)n * elem) : NULL;
        if (n && !*ret)
                return -ENOMEM;
        *ret_n = n;
        return 0;
}

/* An array (at most cap) of maps {0 (R), 1, 2} of strings into n entries of three struct
 * dsv_str (a missing one stays {NULL, 0}; an empty one is "", not NULL). what names the
 * field in errors, keys the three keys' names. */
static int decode_str3s(const msgpack_object *o, uint32_t cap, msgpack_zone *z, const char *what,
                        const char *const keys[3], struct dsv_str **ret, uint32_t *ret_n, char *why, size_t wn) {
        struct dsv_str *v;
        uint32_t n;
        if (o->type != MSGPACK_OBJECT_ARRAY)
                return why_set(why, wn, -EPROTO, "%s must be an array of maps", what);
        n = o->via.array.size;
        if (n > cap)
                return why_set(why, wn, -EPROTO, "%s has %u entries, more than %u", what, n, cap);
        v = n ? msgpack_zone_malloc(z, (size_t)n * 3 * sizeof(*v)) : NULL;
        if (n && !v)
                return -ENOMEM;
        for (uint32_t j = 0; j < n; j++) {
                const msgpack_object *e = &o->via.array.ptr[j];
                struct dsv_str *x = v + 3 * j;
                unsigned seen = 0;
                memset(x, 0, 3 * sizeof(*x));
                if (e->type != MSGPACK_OBJECT_MAP)
                        return why_set(why, wn, -EPROTO, "%s[%u] must be a map", what, j);
                for (uint32_t k = 0; k < e->via.map.size; k++) {
                        const msgpack_object_kv *kv = &e->via.map.ptr[k];
                        uint64_t key;
                        if (!obj_u64(&kv->key, &key))
                                return why_set(why, wn, -EPROTO, "%s[%u] has a key that is not an unsigned integer", what, j);
                        if (key >= 128)
                                return why_set(why, wn, -EOPNOTSUPP, "%s[%u] has unknown required field %u", what, j,
                                               (unsigned)key);
                        if (key > 2)
                                continue;
                        if (seen & (1u << key))
                                return why_set(why, wn, -EPROTO, "%s[%u] repeats key %u", what, j, (unsigned)key);
                        seen |= 1u << key;
                        if (!obj_str(&kv->val, &x[key].p, &x[key].len))
                                return why_set(why, wn, -EPROTO, "%s[%u].%s must be a string", what, j, keys[key]);
                        if (x[key].len > DSV_MAX_TEXT)
                                return why_set(why, wn, -EPROTO, "%s[%u].%s is over %u bytes", what, j, keys[key],
                                               DSV_MAX_TEXT);
                        if (!x[key].p)
                                x[key].p = "";
                }
                if (!(seen & 1u))
                        return why_set(why, wn, -EPROTO, "%s[%u] needs %s (0)", what, j, keys[0]);
        }
        *ret = v;
        *ret_n = n;
        return 0;
}

static int decode_chat(const msgpack_object *o, const struct field *f, msgpack_zone *z, void *s, char *why,
                       size_t wn) {
        struct dsv_chat_msg *out;
        uint32_t n;
        int r = decode_entries(o, f, MSGPACK_OBJECT_ARRAY, "an array of maps", z, sizeof(*out), (void **)&out, &n, why,
                               wn);

        if (r < 0)
                return r;
        for (uint32_t j = 0; j < n; j++) {
                const msgpack_object *e = &o->via.array.ptr[j];
                bool have_role = false, have_content = false;
                unsigned seen = 0; /* keys 2..4 */
                memset(&out[j], 0, sizeof(out[j]));
                if (e->type != MSGPACK_OBJECT_MAP)
                        return why_set(why, wn, -EPROTO, "%s[%u] must be a map", f->name, j);
                for (uint32_t k = 0; k < e->via.map.size; k++) {
                        const msgpack_object_kv *kv = &e->via.map.ptr[k];
                        uint64_t key;
                        if (!obj_u64(&kv->key, &key))
                                return why_set(why, wn, -EPROTO, "%s[%u] has a key that is not an unsigned integer", f->name, j);
                        if (key == 0 || key == 1) {
                                const char **pp = key == 0 ? &out[j].role : &out[j].content;
                                uint32_t *pl = key == 0 ? &out[j].role_len : &out[j].content_len;
                                bool *have = key == 0 ? &have_role : &have_content;
                                if (*have)
                                        return why_set(why, wn, -EPROTO, "%s[%u] repeats key %u", f->name, j, (unsigned)key);
                                if (!obj_str(&kv->val, pp, pl))
                                        return why_set(why, wn, -EPROTO, "%s[%u].%s must be a string", f->name, j,
                                                       key == 0 ? "role" : "content");
                                if (!*pp)
                                        *pp = ""; /* an empty reply is a message; its copy must not read NULL */
                                if (key == 0 && *pl > 32)
                                        return why_set(why, wn, -EPROTO, "%s[%u].role is longer than 32 bytes", f->name, j);
                                *have = true;
                        } else if (key == 2 || key == 4) {
                                struct dsv_str *v = key == 2 ? &out[j].reasoning : &out[j].tool_call_id;
                                const char *what = key == 2 ? "reasoning_content" : "tool_call_id";
                                if (seen & (1u << key))
                                        return why_set(why, wn, -EPROTO, "%s[%u] repeats key %u", f->name, j, (unsigned)key);
                                seen |= 1u << key;
                                if (!obj_str(&kv->val, &v->p, &v->len))
                                        return why_set(why, wn, -EPROTO, "%s[%u].%s must be a string", f->name, j, what);
                                if (!v->p)
                                        v->p = "";
                        } else if (key == 3) {
                                static const char *const keys[3] = {"id", "name", "arguments"};
                                char what[64];
                                struct dsv_str *v;
                                int r2;
                                if (seen & (1u << key))
                                        return why_set(why, wn, -EPROTO, "%s[%u] repeats key 3", f->name, j);
                                seen |= 1u << key;
                                snprintf(what, sizeof(what), "%s[%u].tool_calls", f->name, j);
                                r2 = decode_str3s(&kv->val, DSV_MAX_TOOL_CALLS, z, what, keys, &v, &out[j].n_tool_calls, why,
                                                  wn);
                                if (r2 < 0)
                                        return r2;
                                out[j].tool_calls = (const struct dsv_tool_call *)v;
                        } else if (key >= 128) {
                                return why_set(why, wn, -EOPNOTSUPP, "%s[%u] has unknown required field %u", f->name, j,
                                               (unsigned)key);
                        }
                }
                if (!have_role || !have_content)
                        return why_set(why, wn, -EPROTO, "%s[%u] needs role (0) and content (1)", f->name, j);
        }
        *AT(s, f->off, const struct dsv_chat_msg *) = out;
        *AT(s, f->len_off, uint32_t) = n;
        return 0;
}

/* SESSION_LIST_REPLY rows: maps {0 name (R), 1 flags, 2 n_tokens, 3 n_pages, 4 idle_ms, 5 rank}. */
static int decode_sessions(const msgpack_object *o, const struct field *f, msgpack_zone *z, void *s, char *why,
                           size_t wn) {
        struct dsv_session_row *out;
        uint32_t n;
        int r = decode_entries(o, f, MSGPACK_OBJECT_ARRAY, "an array of maps", z, sizeof(*out), (void **)&out, &n, why,
                               wn);

        if (r < 0)
                return r;
        for (uint32_t j = 0; j < n; j++) {
                const msgpack_object *e = &o->via.array.ptr[j];
                unsigned seen = 0;
                memset(&out[j], 0, sizeof(out[j]));
                if (e->type != MSGPACK_OBJECT_MAP)
                        return why_set(why, wn, -EPROTO, "%s[%u] must be a map", f->name, j);
                for (uint32_t k = 0; k < e->via.map.size; k++) {
                        const msgpack_object_kv *kv = &e->via.map.ptr[k];
                        const char *p;
                        uint64_t key, u;
                        uint32_t len;
                        if (!obj_u64(&kv->key, &key))
                                return why_set(why, wn, -EPROTO, "%s[%u] has a key that is not an unsigned integer", f->name, j);
                        if (key >= 128)
                                return why_set(why, wn, -EOPNOTSUPP, "%s[%u] has unknown required field %u", f->name, j,
                                               (unsigned)key);
                        if (key > 5)
                                continue;
                        if (seen & (1u << key))
                                return why_set(why, wn, -EPROTO, "%s[%u] repeats key %u", f->name, j, (unsigned)key);
                        seen |= 1u << key;
                        if (key == 0) {
                                if (!obj_str(&kv->val, &p, &len) || len > DSV_NAME_MAX || (len && memchr(p, 0, len)))
                                        return why_set(why, wn, -EPROTO, "%s[%u].name must be a name of at most %d bytes",
                                                       f->name, j, DSV_NAME_MAX);
                                if (len)
                                        memcpy(out[j].name, p, len);
                                out[j].name[len] = 0;
                        } else if (!obj_u64(&kv->val, &u) || (key < 4 && u > UINT32_MAX)) {
                                return why_set(why, wn, -EPROTO, "%s[%u] field %u must be an unsigned integer", f->name, j,
                                               (unsigned)key);
                        } else if (key == 1) {
                                out[j].flags = (uint32_t)u;
                        } else if (key == 2) {
                                out[j].n_tokens = (uint32_t)u;
                        } else if (key == 3) {
                                out[j].n_pages = (uint32_t)u;
                        } else if (key == 5) {
                                if (u >= DSV_MAX_RANKS)
                                        return why_set(why, wn, -EPROTO, "%s[%u].rank must be below %u", f->name, j,
                                                       DSV_MAX_RANKS);
                                out[j].has_rank = true;
                                out[j].rank = (uint32_t)u;
                        } else {
                                out[j].idle_ms = u;
                        }
                }
                if (!(seen & 1u))
                        return why_set(why, wn, -EPROTO, "%s[%u] needs a name (0)", f->name, j);
        }
        *AT(s, f->off, const struct dsv_session_row *) = out;
        *AT(s, f->len_off, uint32_t) = n;
        return 0;
}

static int decode_field(const msgpack_object *o, const struct field *f, msgpack_zone *z, void *s, char *why,
                        size_t wn) {
        uint64_t u;
        int64_t x;
        const char *p;
        uint32_t n;

        switch (f->type) {
        case F_U64:
                if (!obj_u64(o, &u))
                        return why_set(why, wn, -EPROTO, "field %s must be an unsigned integer", f->name);
                *AT(s, f->off, uint64_t) = u;
                return 0;
        case F_U32:
                if (!obj_u64(o, &u) || u > UINT32_MAX)
                        return why_set(why, wn, -EPROTO, "field %s must be an unsigned 32-bit integer", f->name);
                *AT(s, f->off, uint32_t) = (uint32_t)u;
                return 0;
        case F_OPT_U32:
                if (!obj_u64(o, &u) || u > UINT32_MAX)
                        return why_set(why, wn, -EPROTO, "field %s must be an unsigned 32-bit integer", f->name);
                *AT(s, f->off, uint32_t) = (uint32_t)u;
                *AT(s, f->len_off, bool) = true;
                return 0;
        case F_F32S: {
                float *v;
                int r = decode_entries(o, f, MSGPACK_OBJECT_ARRAY, "an array of numbers", z, sizeof(*v), (void **)&v, &n, why,
                                       wn);
                if (r < 0)
                        return r;
                for (uint32_t j = 0; j < n; j++) {
                        const msgpack_object *e = &o->via.array.ptr[j];
                        if ((e->type != MSGPACK_OBJECT_FLOAT32 && e->type != MSGPACK_OBJECT_FLOAT64) || !isfinite(e->via.f64) ||
                            fabs(e->via.f64) > 3.5e38)
                                return why_set(why, wn, -EPROTO, "%s[%u] must be a finite float", f->name, j);
                        v[j] = (float)e->via.f64;
                }
                *AT(s, f->off, const float *) = v;
                *AT(s, f->len_off, uint32_t) = n;
                return 0;
        }
        case F_I32:
                if (!obj_i64(o, &x) || x < INT32_MIN || x > INT32_MAX)
                        return why_set(why, wn, -EPROTO, "field %s must be a 32-bit integer", f->name);
                *AT(s, f->off, int32_t) = (int32_t)x;
                return 0;
        case F_F32: {
                double dv;
                if (o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64)
                        dv = o->via.f64;
                else if (obj_i64(o, &x))
                        dv = (double)x;
                else
                        return why_set(why, wn, -EPROTO, "field %s must be a number", f->name);
                if (!isfinite(dv) || fabs(dv) > 3.0e38)
                        return why_set(why, wn, -EPROTO, "field %s must be a finite number", f->name);
                *AT(s, f->off, float) = (float)dv;
                return 0;
        }
        case F_STR:
                if (!obj_str(o, &p, &n))
                        return why_set(why, wn, -EPROTO, "field %s must be a string", f->name);
                if (n > f->cap)
                        return why_set(why, wn, -EPROTO, "field %s is %u bytes, more than %u", f->name, n, f->cap);
                *AT(s, f->off, const char *) = p;
                *AT(s, f->len_off, uint32_t) = n;
                return 0;
        case F_NAME:
                if (!obj_str(o, &p, &n))
                        return why_set(why, wn, -EPROTO, "field %s must be a string", f->name);
                if (n > f->cap)
                        return why_set(why, wn, -EPROTO, "field %s is %u bytes, more than %u", f->name, n, f->cap);
                if (n && memchr(p, 0, n))
                        return why_set(why, wn, -EPROTO, "field %s contains a NUL byte", f->name);
                if (n)
                        memcpy(AT(s, f->off, char), p, n); /* p is NULL for "" */
                AT(s, f->off, char)[n] = 0;
                return 0;
        case F_TOKENS: {
                int32_t *t;
                int r = decode_entries(o, f, MSGPACK_OBJECT_ARRAY, "an array of token ids", z, sizeof(*t), (void **)&t, &n,
                                       why, wn);
                if (r < 0)
                        return r;
                for (uint32_t j = 0; j < n; j++) {
                        if (!obj_u64(&o->via.array.ptr[j], &u) || u > INT32_MAX)
                                return why_set(why, wn, -EPROTO, "%s[%u] must be a token id in 0..%d", f->name, j,
                                               INT32_MAX);
                        t[j] = (int32_t)u;
                }
                *AT(s, f->off, const int32_t *) = t;
                *AT(s, f->len_off, uint32_t) = n;
                return 0;
        }
        case F_CHAT:
                return decode_chat(o, f, z, s, why, wn);
        case F_TOOLS: {
                static const char *const keys[3] = {"name", "description", "parameters"};
                struct dsv_str *v;
                int r = decode_str3s(o, f->cap, z, f->name, keys, &v, &n, why, wn);
                if (r < 0)
                        return r;
                *AT(s, f->off, const struct dsv_tool *) = (const struct dsv_tool *)v;
                *AT(s, f->len_off, uint32_t) = n;
                return 0;
        }
        case F_SESSIONS:
                return decode_sessions(o, f, z, s, why, wn);
        case F_BIAS: {
                struct dsv_bias *v;
                int r = decode_entries(o, f, MSGPACK_OBJECT_MAP, "a map of token ids to numbers", z, sizeof(*v), (void **)&v,
                                       &n, why, wn);
                if (r < 0)
                        return r;
                for (uint32_t j = 0; j < n; j++) {
                        const msgpack_object_kv *kv = &o->via.map.ptr[j];
                        double dv;
                        if (!obj_u64(&kv->key, &u) || u > INT32_MAX)
                                return why_set(why, wn, -EPROTO, "%s: key %u must be a token id in 0..%d", f->name, j, INT32_MAX);
                        if (kv->val.type == MSGPACK_OBJECT_FLOAT32 || kv->val.type == MSGPACK_OBJECT_FLOAT64)
                                dv = kv->val.via.f64;
                        else if (obj_i64(&kv->val, &x))
                                dv = (double)x;
                        else
                                return why_set(why, wn, -EPROTO, "%s[%llu] must be a number", f->name, (unsigned long long)u);
                        if (!isfinite(dv) || fabs(dv) > 3.0e38)
                                return why_set(why, wn, -EPROTO, "%s[%llu] must be a finite number", f->name,
                                               (unsigned long long)u);
                        for (uint32_t i = 0; i < j; i++)
                                if (v[i].id == (int32_t)u)
                                        return why_set(why, wn, -EPROTO, "%s repeats token %llu", f->name, (unsigned long long)u);
                        v[j].id = (int32_t)u;
                        v[j].bias = (float)dv;
                }
                *AT(s, f->off, const struct dsv_bias *) = v;
                *AT(s, f->len_off, uint32_t) = n;
                return 0;
        }
        case F_STRS: {
                struct dsv_str *v;
                int r = decode_entries(o, f, MSGPACK_OBJECT_ARRAY, "an array of strings", z, sizeof(*v), (void **)&v, &n, why,
                                       wn);
                if (r < 0)
                        return r;
                for (uint32_t j = 0; j < n; j++) {
                        if (!obj_str(&o->via.array.ptr[j], &v[j].p, &v[j].len))
                                return why_set(why, wn, -EPROTO, "%s[%u] must be a string", f->name, j);
                        if (v[j].len == 0 || v[j].len > DSV_MAX_STOP_STRING_BYTES)
                                return why_set(why, wn, -EPROTO, "%s[%u] is %u bytes; each must be 1..%d", f->name, j,
                                               v[j].len, DSV_MAX_STOP_STRING_BYTES);
                }
                *AT(s, f->off, const struct dsv_str *) = v;
                *AT(s, f->len_off, uint32_t) = n;
                return 0;
        }
        }
        return -EPROTO;
}

static void set_defaults(const struct desc *d, void *s) {
        for (size_t i = 0; i < d->n_fields; i++) {
                const struct field *f = &d->fields[i];
                if (f->def == 0)
                        continue;
                if (f->type == F_F32)
                        *AT(s, f->off, float) = f->def;
                else if (f->type == F_I32)
                        *AT(s, f->off, int32_t) = (int32_t)f->def;
                else if (f->type == F_U32)
                        *AT(s, f->off, uint32_t) = (uint32_t)f->def;
        }
}

/* TOKENS: the logprob arrays agree with the token count (see struct dsv_msg_tokens). */
static int check_tokens_logprobs(const struct dsv_msg_tokens *t, char *why, size_t wn) {
        if (t->n_logprobs && t->n_logprobs != t->n_tokens)
                return why_set(why, wn, -EPROTO, "TOKENS has %u logprobs for %u tokens", t->n_logprobs, t->n_tokens);
        if (t->n_top != t->n_top_logprobs)
                return why_set(why, wn, -EPROTO, "TOKENS has %u top_ids but %u top_logprobs", t->n_top, t->n_top_logprobs);
        if (t->n_top && (!t->n_logprobs || t->n_top % t->n_tokens || t->n_top / t->n_tokens > DSV_MAX_TOP_LOGPROBS))
                return why_set(why, wn, -EPROTO,
                               "TOKENS has %u top_ids for %u tokens (with %u logprobs): not 1..%d per token with a logprob",
                               t->n_top, t->n_tokens, t->n_logprobs, DSV_MAX_TOP_LOGPROBS);
        return 0;
}

int dsv_msg_decode(unsigned type, const void *payload, size_t len, struct dsv_msg *ret, char *why, size_t why_len) {
        const struct desc *d = desc_of(type);
        msgpack_unpacked up;
        msgpack_object *root;
        uint64_t seen = 0;
        size_t off = 0;
        int r;

        if (why && why_len)
                why[0] = 0;
        if (!d)
                return why_set(why, why_len, -ENOSYS, "unknown message type %u", type);
        if (len == 0 || dsv_msgpack_scan(payload, len, DSV_MSGPACK_MAX_DEPTH) < 0)
                return why_set(why, why_len, -EBADMSG, "%s payload is not one well-formed msgpack object", d->name);
        msgpack_unpacked_init(&up);
        if (msgpack_unpack_next(&up, payload, len, &off) != MSGPACK_UNPACK_SUCCESS || off != len) {
                msgpack_unpacked_destroy(&up);
                return why_set(why, why_len, -EBADMSG, "%s payload is not one well-formed msgpack object", d->name);
        }
        root = &up.data;
        memset(ret, 0, sizeof(*ret));
        ret->type = (uint16_t)type;
        set_defaults(d, &ret->u);
        if (root->type != MSGPACK_OBJECT_MAP) {
                r = why_set(why, why_len, -EPROTO, "%s payload must be a map", d->name);
                goto fail;
        }
        for (uint32_t k = 0; k < root->via.map.size; k++) {
                const msgpack_object_kv *kv = &root->via.map.ptr[k];
                const struct field *f = NULL;
                uint64_t key;
                if (!obj_u64(&kv->key, &key) || key > 255) {
                        r = why_set(why, why_len, -EPROTO, "%s has a key that is not an integer in 0..255", d->name);
                        goto fail;
                }
                for (size_t i = 0; i < d->n_fields; i++)
                        if (d->fields[i].key == key) {
                                f = &d->fields[i];
                                if (seen & (1ull << i)) {
                                        r = why_set(why, why_len, -EPROTO, "%s repeats field %s", d->name, f->name);
                                        goto fail;
                                }
                                seen |= 1ull << i;
                                break;
                        }
                if (!f) {
                        if (key >= 128) {
                                r = why_set(why, why_len, -EOPNOTSUPP, "%s has unknown required field %u", d->name,
                                            (unsigned)key);
                                goto fail;
                        }
                        continue; /* optional field of a newer peer */
                }
                r = decode_field(&kv->val, f, up.zone, &ret->u, why, why_len);
                if (r < 0)
                        goto fail;
        }
        for (size_t i = 0; i < d->n_fields; i++)
                if (d->fields[i].required && !(seen & (1ull << i))) {
                        r = why_set(why, why_len, -EPROTO, "%s lacks required field %s", d->name, d->fields[i].name);
                        goto fail;
                }
        if (type == DSV_MSG_TOKENS && (r = check_tokens_logprobs(&ret->u.tokens, why, why_len)) < 0)
                goto fail;
        ret->unpacked = up;
        ret->has_unpacked = true;
        return 0;
fail:
        msgpack_unpacked_destroy(&up);
        memset(ret, 0, sizeof(*ret));
        return r;
}

void dsv_msg_release(struct dsv_msg *m) {
        if (m && m->has_unpacked) {
                msgpack_unpacked_destroy(&m->unpacked);
                m->has_unpacked = false;
        }
}

uint64_t dsv_msg_peek_id(const void *payload, size_t len) {
        const uint8_t *p = payload;
        size_t i;
        uint64_t v;
        /* a map (fixmap, map16 or map32) whose first key is 0 and whose value is a positive
         * integer: every message this codec writes starts that way */
        if (len < 3)
                return 0;
        if ((p[0] & 0xf0) == 0x80)
                i = 1;
        else if (p[0] == 0xde)
                i = 3;
        else if (p[0] == 0xdf)
                i = 5;
        else
                return 0;
        if (len < i + 2 || p[i] != 0)
                return 0;
        v = p[i + 1];
        i += 2;
        if (v <= 0x7f)
                return v;
        switch (v) {
        case 0xcc:
                return rd_be(p, len, &i, 1, &v) ? v : 0;
        case 0xcd:
                return rd_be(p, len, &i, 2, &v) ? v : 0;
        case 0xce:
                return rd_be(p, len, &i, 4, &v) ? v : 0;
        case 0xcf:
                return rd_be(p, len, &i, 8, &v) ? v : 0;
        }
        return 0;
}
