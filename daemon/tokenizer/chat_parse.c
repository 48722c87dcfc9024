/* DeepSeek-V3.2 output parser: parse_message_from_completion_text() of the official encoder
 * turned into a streaming state machine. Every decision depends only on the text, never on
 * where chunks end: text that might be the start of a marker is held back until it is
 * certain, a tool call is reported when its invoke block closes. Departures from the
 * official parser, which raises on any deviation: the end of the input counts as the end of
 * the message (the daemon stops on the EOS token and does not print it); a malformed invoke
 * is reported as an error event and parsing goes on; a broken block is reported with its
 * raw text; function calls that start inside the reasoning end it (and are reported). */
#include "config.h"

#include "daemon/tokenizer/chat.h"
#include "daemon/tokenizer/chat_tokens.h"
#include "daemon/tokenizer/pyjson.h"

#define TC_START "\n\n<" DSML "function_calls"
#define TC_END "</" DSML "function_calls>"
#define INVOKE "<" DSML "invoke"
#define INVOKE_END "</" DSML "invoke"
#define PARAM "<" DSML "parameter"
#define PARAM_END "/" DSML "parameter"

enum pstate {
        P_REASONING,   /* until </think> */
        P_CONTENT,     /* until EOS or the function calls block */
        P_TC_BETWEEN,  /* expects ">\n" then an invoke or the block's end */
        P_INVOKE_NAME, /* ` name="...">\n` until a parameter or the invoke's end */
        P_PARAM,       /* ` name="k" string="true|false">v<` until "/｜DSML｜parameter" */
        P_PARAM_AFTER, /* expects ">\n" then a parameter or the invoke's end */
        P_TC_AFTER,    /* after the block: only EOS may follow */
        P_DONE,        /* after EOS: nothing may follow */
        P_FAILED,      /* a broken block: the rest is its raw text */
};

struct dsv_chat_parser {
        enum dsv_chat_mode mode;
        enum pstate st;
        struct dsv_strbuf buf; /* text not consumed yet */
        size_t scan;           /* no stop marker starts before buf.p + scan */
        bool finished, reasoning_open;

        /* the invoke being parsed */
        struct dsv_strbuf raw;  /* its text so far (for error reports) */
        struct dsv_strbuf name;
        struct dsv_strbuf args; /* `"k": v, ...` */
        struct dsv_strbuf keys; /* parameter names, NUL-separated */
        bool dup;
        size_t n_calls;

        const char *fail_msg;
        struct dsv_strbuf fail_raw;
};

int dsv_chat_parser_new(enum dsv_chat_mode mode, struct dsv_chat_parser **ret) {
        struct dsv_chat_parser *p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        p->mode = mode;
        p->st = mode == DSV_CHAT_MODE_THINKING ? P_REASONING : P_CONTENT;
        *ret = p;
        return 0;
}

void dsv_chat_parser_free(struct dsv_chat_parser *p) {
        if (!p)
                return;
        dsv_strbuf_done(&p->buf);
        dsv_strbuf_done(&p->raw);
        dsv_strbuf_done(&p->name);
        dsv_strbuf_done(&p->args);
        dsv_strbuf_done(&p->keys);
        dsv_strbuf_done(&p->fail_raw);
        free(p);
}

bool dsv_chat_parser_reasoning_open(const struct dsv_chat_parser *p) { return p->reasoning_open; }

static void consume(struct dsv_chat_parser *p, size_t n) {
        memmove(p->buf.p, p->buf.p + n, p->buf.n - n);
        p->buf.n -= n;
        p->buf.p[p->buf.n] = 0;
        p->scan = 0;
}

/* Earliest occurrence of any stop in buf (from scan on): its position and index, or -1. */
static int find_stop(struct dsv_chat_parser *p, const char *const *stops, size_t n_stops, size_t *pos) {
        size_t best = SIZE_MAX, maxlen = 0;
        int which = -1;
        for (size_t k = 0; k < n_stops; k++) {
                size_t l = strlen(stops[k]);
                maxlen = MAX(maxlen, l);
                if (p->buf.n < p->scan + l)
                        continue;
                const char *f = memmem(p->buf.p + p->scan, p->buf.n - p->scan, stops[k], l);
                if (f && (size_t)(f - p->buf.p) < best) {
                        best = (size_t)(f - p->buf.p);
                        which = (int)k;
                }
        }
        if (which >= 0) {
                *pos = best;
                return which;
        }
        if (p->buf.n >= maxlen)
                p->scan = MAX(p->scan, p->buf.n - maxlen + 1);
        return -1;
}

/* Start of the longest suffix of buf that is a proper prefix of a stop (buf.n if none). */
static size_t holdback(const struct dsv_chat_parser *p, const char *const *stops, size_t n_stops) {
        size_t n = p->buf.n;
        for (size_t start = n >= 32 ? n - 32 : 0; start < n; start++)
                for (size_t k = 0; k < n_stops; k++) {
                        size_t l = strlen(stops[k]);
                        if (n - start < l && memcmp(p->buf.p + start, stops[k], n - start) == 0)
                                return start;
                }
        return n;
}

static int emit_text(struct dsv_chat_parser *p, enum dsv_chat_event_type type, size_t n, dsv_chat_event_fn cb,
                     void *ud) {
        if (n == 0)
                return 0;
        struct dsv_chat_event ev = {.type = type, .text = p->buf.p, .len = n};
        int r = cb(ud, &ev);
        if (r < 0)
                return r;
        consume(p, n);
        return 0;
}

static int emit_error(dsv_chat_event_fn cb, void *ud, const char *msg, const char *raw, size_t raw_len) {
        struct dsv_chat_event ev = {.type = DSV_CHAT_EVENT_ERROR, .text = msg, .len = strlen(msg), .raw = raw,
                                    .raw_len = raw_len};
        return cb(ud, &ev);
}

/* Moves the current element's raw text and the unconsumed text into the failure report; the
 * rest of the input will follow, and the error is reported at finish. */
static int fail(struct dsv_chat_parser *p, const char *msg) {
        int r;
        p->fail_msg = msg;
        p->st = P_FAILED;
        if ((r = dsv_strbuf_add(&p->fail_raw, p->raw.p ? p->raw.p : "", p->raw.n)) < 0 ||
            (r = dsv_strbuf_add(&p->fail_raw, p->buf.p ? p->buf.p : "", p->buf.n)) < 0)
                return r;
        p->raw.n = 0;
        if (p->buf.n)
                consume(p, p->buf.n);
        return 0;
}

/* Consumes n bytes of buf into the current element's raw text. */
static int take(struct dsv_chat_parser *p, size_t n) {
        int r = dsv_strbuf_add(&p->raw, p->buf.p, n);
        if (r < 0)
                return r;
        consume(p, n);
        return 0;
}

/* For the states that expect fixed text: 1 when buf starts with alternative *which,
 * 0 when more text is needed, -1 when no alternative can match. */
static int expect(const struct dsv_chat_parser *p, const char *const *alts, size_t n_alts, int *which) {
        bool maybe = false;
        for (size_t k = 0; k < n_alts; k++) {
                size_t l = strlen(alts[k]);
                if (p->buf.n >= l && memcmp(p->buf.p, alts[k], l) == 0) {
                        *which = (int)k;
                        return 1;
                }
                if (p->buf.n < l && memcmp(p->buf.p, alts[k], p->buf.n) == 0)
                        maybe = true;
        }
        return maybe ? 0 : -1;
}

/* `^\s*name="(.*?)">\n$` (DOTALL; Python's $ also matches before a final newline). */
static bool parse_name(const char *s, size_t n, struct dsv_strbuf *name) {
        size_t i = 0;
        while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r' || s[i] == '\f' || s[i] == '\v'))
                i++;
        if (n - i < 6 || memcmp(s + i, "name=\"", 6) != 0)
                return false;
        i += 6;
        size_t rest = n - i, len;
        if (rest >= 4 && memcmp(s + n - 4, "\">\n\n", 4) == 0)
                len = rest - 4;
        else if (rest >= 3 && memcmp(s + n - 3, "\">\n", 3) == 0)
                len = rest - 3;
        else
                return false;
        name->n = 0;
        return dsv_strbuf_add(name, s + i, len) >= 0;
}

/* `^ name="(.*?)" string="(true|false)">(.*?)<$` (DOTALL, lazy, Python's $). */
static bool parse_param(const char *s, size_t n, const char **key, size_t *key_len, bool *is_str, const char **val,
                        size_t *val_len) {
        if (n < 7 || memcmp(s, " name=\"", 7) != 0)
                return false;
        size_t vend;
        if (n >= 2 && s[n - 2] == '<' && s[n - 1] == '\n')
                vend = n - 2;
        else if (n >= 1 && s[n - 1] == '<')
                vend = n - 1;
        else
                return false;
        for (size_t i = 7; i < n; i++) {
                static const char t[] = "\" string=\"true\">", f[] = "\" string=\"false\">";
                size_t lt = sizeof(t) - 1, lf = sizeof(f) - 1, l;
                if (i + lt <= vend && memcmp(s + i, t, lt) == 0) {
                        *is_str = true;
                        l = lt;
                } else if (i + lf <= vend && memcmp(s + i, f, lf) == 0) {
                        *is_str = false;
                        l = lf;
                } else
                        continue;
                *key = s + 7;
                *key_len = i - 7;
                *val = s + i + l;
                *val_len = vend - (i + l);
                return true;
        }
        return false;
}

static int begin_invoke(struct dsv_chat_parser *p) {
        p->raw.n = 0;
        p->name.n = 0;
        p->args.n = 0;
        p->keys.n = 0;
        p->dup = false;
        return dsv_strbuf_adds(&p->raw, INVOKE);
}

static int end_invoke(struct dsv_chat_parser *p, dsv_chat_event_fn cb, void *ud) {
        struct dsv_strbuf a = {0};
        int r = dsv_strbuf_add(&a, "{", 1);
        if (r >= 0)
                r = dsv_strbuf_add(&a, p->args.p ? p->args.p : "", p->args.n);
        if (r >= 0)
                r = dsv_strbuf_add(&a, "}", 1);
        if (r < 0)
                goto out;
        json_error_t je;
        json_t *j = p->dup ? NULL : json_loadb(a.p, a.n, 0, &je);
        if (!j)
                r = emit_error(cb, ud, p->dup ? "tool call has a duplicate parameter name"
                                              : "tool call parameter with string=\"false\" is not JSON",
                               p->raw.p, p->raw.n);
        else {
                json_decref(j);
                struct dsv_chat_event ev = {.type = DSV_CHAT_EVENT_TOOL_CALL, .name = p->name.p ? p->name.p : "",
                                            .name_len = p->name.n, .arguments = a.p, .arguments_len = a.n,
                                            .index = p->n_calls++};
                r = cb(ud, &ev);
        }
out:
        dsv_strbuf_done(&a);
        p->raw.n = 0;
        return r;
}

static int add_param(struct dsv_chat_parser *p, const char *k, size_t kl, bool is_str, const char *v, size_t vl) {
        /* duplicate names: the official parser rejects the message */
        for (size_t i = 0; i < p->keys.n;) {
                size_t l = strlen(p->keys.p + i);
                if (l == kl && memcmp(p->keys.p + i, k, kl) == 0)
                        p->dup = true;
                i += l + 1;
        }
        int r = dsv_strbuf_add(&p->keys, k, kl);
        if (r >= 0)
                r = dsv_strbuf_add(&p->keys, "", 1); /* keeps the NUL as separator */
        if (r >= 0 && p->args.n)
                r = dsv_strbuf_add(&p->args, ", ", 2);
        if (r >= 0)
                r = dsv_pyjson_string(&p->args, k, kl);
        if (r >= 0)
                r = dsv_strbuf_add(&p->args, ": ", 2);
        if (r >= 0)
                r = is_str ? dsv_pyjson_string(&p->args, v, vl) : dsv_strbuf_add(&p->args, v, vl);
        return r;
}

/* Runs the state machine over buf as far as the text allows. */
static int step(struct dsv_chat_parser *p, dsv_chat_event_fn cb, void *ud) {
        static const char *const reasoning_stops[] = {THINK_END, TC_START};
        static const char *const content_stops[] = {EOS, TC_START};
        static const char *const between[] = {">\n" INVOKE, ">\n" TC_END};
        static const char *const name_stops[] = {PARAM, INVOKE_END};
        static const char *const param_stops[] = {PARAM_END};
        static const char *const after_param[] = {">\n" PARAM, ">\n" INVOKE_END};
        static const char *const after_block[] = {EOS};
        int r, w;
        size_t pos;

        for (;;) {
                switch (p->st) {
                case P_REASONING:
                case P_CONTENT: {
                        bool rs = p->st == P_REASONING;
                        const char *const *stops = rs ? reasoning_stops : content_stops;
                        enum dsv_chat_event_type type = rs ? DSV_CHAT_EVENT_REASONING : DSV_CHAT_EVENT_CONTENT;
                        w = find_stop(p, stops, 2, &pos);
                        if (w < 0) {
                                size_t n = p->finished ? p->buf.n : holdback(p, stops, 2);
                                if ((r = emit_text(p, type, n, cb, ud)) < 0)
                                        return r;
                                if (p->finished && rs)
                                        p->reasoning_open = true;
                                return 0;
                        }
                        if ((r = emit_text(p, type, pos, cb, ud)) < 0)
                                return r;
                        consume(p, strlen(stops[w]));
                        if (w == 0) {
                                p->st = rs ? P_CONTENT : P_DONE;
                                break;
                        }
                        if (rs && (r = emit_error(cb, ud, "function calls inside the reasoning (no </think> before them)",
                                                  TC_START, strlen(TC_START))) < 0)
                                return r;
                        p->raw.n = 0;
                        if ((r = dsv_strbuf_adds(&p->raw, TC_START)) < 0)
                                return r;
                        p->st = P_TC_BETWEEN;
                        break;
                }
                case P_TC_BETWEEN:
                case P_PARAM_AFTER: {
                        bool tb = p->st == P_TC_BETWEEN;
                        int e = expect(p, tb ? between : after_param, 2, &w);
                        if (e == 0 && !p->finished)
                                return 0;
                        if (e <= 0)
                                return fail(p, p->finished && e == 0 ? "tool call block ends early"
                                                                      : "tool call block: expected \">\\n\" and a DSML tag");
                        if (tb && w == 0) { /* an invoke */
                                p->raw.n = 0;
                                consume(p, strlen(between[0]));
                                if ((r = begin_invoke(p)) < 0)
                                        return r;
                                p->st = P_INVOKE_NAME;
                        } else if (tb) { /* the block's end */
                                consume(p, strlen(between[1]));
                                p->raw.n = 0;
                                p->st = P_TC_AFTER;
                        } else if (w == 0) { /* another parameter */
                                if ((r = take(p, strlen(after_param[0]))) < 0)
                                        return r;
                                p->st = P_PARAM;
                        } else {
                                if ((r = take(p, strlen(after_param[1]))) < 0 || (r = end_invoke(p, cb, ud)) < 0)
                                        return r;
                                p->st = P_TC_BETWEEN;
                        }
                        break;
                }
                case P_INVOKE_NAME:
                        w = find_stop(p, name_stops, 2, &pos);
                        if (w < 0)
                                return p->finished ? fail(p, "tool call block ends early") : 0;
                        if (!parse_name(p->buf.p, pos, &p->name))
                                return fail(p, "tool call: malformed invoke name");
                        if ((r = take(p, pos + strlen(name_stops[w]))) < 0)
                                return r;
                        if (w == 0)
                                p->st = P_PARAM;
                        else {
                                if ((r = end_invoke(p, cb, ud)) < 0)
                                        return r;
                                p->st = P_TC_BETWEEN;
                        }
                        break;
                case P_PARAM: {
                        const char *k, *v;
                        size_t kl, vl;
                        bool is_str;
                        w = find_stop(p, param_stops, 1, &pos);
                        if (w < 0)
                                return p->finished ? fail(p, "tool call block ends early") : 0;
                        if (!parse_param(p->buf.p, pos, &k, &kl, &is_str, &v, &vl))
                                return fail(p, "tool call: malformed parameter");
                        if ((r = add_param(p, k, kl, is_str, v, vl)) < 0 || (r = take(p, pos + strlen(PARAM_END))) < 0)
                                return r;
                        p->st = P_PARAM_AFTER;
                        break;
                }
                case P_TC_AFTER: {
                        int e = expect(p, after_block, 1, &w);
                        if (e == 0 && (!p->finished || p->buf.n == 0))
                                return 0;
                        if (e <= 0)
                                return fail(p, "text after the tool call block");
                        consume(p, strlen(EOS));
                        p->st = P_DONE;
                        break;
                }
                case P_DONE:
                        if (p->buf.n == 0)
                                return 0;
                        return fail(p, "text after the end of the message");
                case P_FAILED:
                        if ((r = dsv_strbuf_add(&p->fail_raw, p->buf.p ? p->buf.p : "", p->buf.n)) < 0)
                                return r;
                        if (p->buf.n)
                                consume(p, p->buf.n);
                        return 0;
                }
        }
}

int dsv_chat_parser_feed(struct dsv_chat_parser *p, const char *text, size_t len, dsv_chat_event_fn cb,
                         void *userdata) {
        if (!p || (!text && len) || !cb || p->finished)
                return -EINVAL;
        int r = dsv_strbuf_add(&p->buf, text, len);
        if (r < 0)
                return r;
        return step(p, cb, userdata);
}

int dsv_chat_parser_finish(struct dsv_chat_parser *p, dsv_chat_event_fn cb, void *userdata) {
        if (!p || !cb || p->finished)
                return -EINVAL;
        p->finished = true;
        int r = dsv_strbuf_add(&p->buf, "", 0);
        if (r < 0 || (r = step(p, cb, userdata)) < 0)
                return r;
        if (p->st == P_FAILED)
                return emit_error(cb, userdata, p->fail_msg, p->fail_raw.p ? p->fail_raw.p : "", p->fail_raw.n);
        return 0;
}

/* ------------------------------------------------------------------ results */

static char *dup_n(const char *s, size_t n) {
        char *d = malloc(n + 1);
        if (d) {
                if (n)
                        memcpy(d, s, n);
                d[n] = 0;
        }
        return d;
}

static int append(char **s, size_t *n, const char *t, size_t k) {
        char *q = realloc(*s, *n + k + 1);
        if (!q)
                return -ENOMEM;
        if (k)
                memcpy(q + *n, t, k);
        *n += k;
        q[*n] = 0;
        *s = q;
        return 0;
}

int dsv_chat_result_add(struct dsv_chat_result *r, const struct dsv_chat_event *ev) {
        switch (ev->type) {
        case DSV_CHAT_EVENT_REASONING:
                return append(&r->reasoning, &r->reasoning_len, ev->text, ev->len);
        case DSV_CHAT_EVENT_CONTENT:
                return append(&r->content, &r->content_len, ev->text, ev->len);
        case DSV_CHAT_EVENT_TOOL_CALL: {
                struct dsv_chat_tool_call *c = realloc(r->calls, (r->n_calls + 1) * sizeof(*c));
                if (!c)
                        return -ENOMEM;
                r->calls = c;
                c[r->n_calls].name = dup_n(ev->name, ev->name_len);
                c[r->n_calls].arguments = dup_n(ev->arguments, ev->arguments_len);
                r->n_calls++;
                return c[r->n_calls - 1].name && c[r->n_calls - 1].arguments ? 0 : -ENOMEM;
        }
        case DSV_CHAT_EVENT_ERROR: {
                struct dsv_chat_error *e = realloc(r->errors, (r->n_errors + 1) * sizeof(*e));
                if (!e)
                        return -ENOMEM;
                r->errors = e;
                e[r->n_errors].message = dup_n(ev->text, ev->len);
                e[r->n_errors].raw = dup_n(ev->raw, ev->raw_len);
                r->n_errors++;
                return e[r->n_errors - 1].message && e[r->n_errors - 1].raw ? 0 : -ENOMEM;
        }
        }
        return -EINVAL;
}

void dsv_chat_result_done(struct dsv_chat_result *r) {
        free(r->reasoning);
        free(r->content);
        for (size_t i = 0; i < r->n_calls; i++) {
                free(r->calls[i].name);
                free(r->calls[i].arguments);
        }
        free(r->calls);
        for (size_t i = 0; i < r->n_errors; i++) {
                free(r->errors[i].message);
                free(r->errors[i].raw);
        }
        free(r->errors);
        memset(r, 0, sizeof(*r));
}

static int result_cb(void *ud, const struct dsv_chat_event *ev) { return dsv_chat_result_add(ud, ev); }

int dsv_chat_parse(const char *text, size_t len, enum dsv_chat_mode mode, struct dsv_chat_result *ret) {
        struct dsv_chat_parser *p = NULL;
        struct dsv_chat_result res = {0};
        int r = dsv_chat_parser_new(mode, &p);
        if (r < 0)
                return r;
        if ((r = dsv_chat_parser_feed(p, text, len, result_cb, &res)) < 0 ||
            (r = dsv_chat_parser_finish(p, result_cb, &res)) < 0 || (r = append(&res.reasoning, &res.reasoning_len, "", 0)) < 0 ||
            (r = append(&res.content, &res.content_len, "", 0)) < 0) {
                dsv_chat_parser_free(p);
                dsv_chat_result_done(&res);
                return r;
        }
        res.reasoning_open = p->reasoning_open;
        dsv_chat_parser_free(p);
        *ret = res;
        return 0;
}
