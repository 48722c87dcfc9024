/* A request's life (see core.h): WAITING (its prompt is not all in the KV cache yet),
 * RUNNING (decoding), FINISHING (its final event is pending), then freed. Its output waits
 * here until the sink takes it: token ids, the text they decode to (with where each token's
 * text ends, so the sink may cut anywhere between tokens), and the final event.
 *
 * A chat request with chat_events runs the text that the stop strings let through into the
 * output parser (daemon/tokenizer/chat.h) and keeps the events it makes until the sink takes
 * them, ahead of the tokens they came from: reasoning and content deltas, and each tool call
 * as begin (index, id, name), its arguments, end. A delta that continues an undelivered one
 * of the same kind grows it, and the parser decides only on the text, so a request that is
 * not streamed gets the merged sequence of what a streamed one gets, however the output was
 * cut into tokens. Ending (EOS or a stop token) right after a tool call is finish reason
 * tool_calls. */
#include "config.h"

#include "daemon/engine/core.h"
#include "daemon/engine/text.h"
#include "daemon/grammar/grammar.h"

void request_finish(struct request *r, enum dsv_engine_finish reason) {
        r->reason = reason;
        r->state = REQ_FINISHING;
        r->t_end = dsv_now_ns();
}

void request_fail(struct request *r, int code, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->error_msg, sizeof(r->error_msg), fmt, ap);
        va_end(ap);
        r->final_error = true;
        r->error_code = code;
        r->state = REQ_FINISHING;
        r->t_end = dsv_now_ns();
}

int request_push_text(struct request *r, const char *s, size_t n) {
        return n ? dsv_strbuf_add(&r->text_out, s, n) : 0;
}

/* Text of the output stream, through the stop strings when there are any: a string that
 * completes ends the request (the token that completed it stays in its history). */
static int push_text(struct request *r, const char *s, size_t n) {
        int m;
        if (!r->stop)
                return request_push_text(r, s, n);
        if (r->stop->matched >= 0)
                return 0;
        m = dsv_stop_feed(r->stop, s, n, &r->text_out);
        if (m < -1)
                return m;
        if (m >= 0) {
                r->stop_index = (uint32_t)m;
                request_finish(r, DSV_ENGINE_FINISH_STOP_STRING);
        }
        return 0;
}

/* ------------------------------------------------------------------ chat events */

static bool is_delta(enum dsv_engine_chat_kind k) {
        return k == DSV_ENGINE_CHAT_REASONING || k == DSV_ENGINE_CHAT_CONTENT || k == DSV_ENGINE_CHAT_TOOL_ARGS;
}

/* One more pending event; name is the function's name (TOOL_BEGIN) or the message (ERROR). */
static int ev_add(struct request *r, enum dsv_engine_chat_kind kind, uint32_t index, const char *text, size_t len,
                  const char *name, size_t name_len, const char *call_id) {
        struct chat_ev *last = r->n_evs > r->ev_next ? &r->evs[r->n_evs - 1] : NULL;
        struct chat_ev *e;
        int rc;

        if (is_delta(kind) && len == 0)
                return 0;
        if (r->ev_text.n + len + name_len >= UINT32_MAX)
                return -E2BIG;
        if (last && is_delta(kind) && last->kind == kind && last->index == index && last->off + last->len == r->ev_text.n) {
                if ((rc = dsv_strbuf_add(&r->ev_text, text, len)) < 0)
                        return rc;
                last->len += (uint32_t)len;
                return 0;
        }
        if ((rc = DSV_GROW(&r->evs, &r->cap_evs, r->n_evs + 1)) < 0)
                return rc;
        e = &r->evs[r->n_evs];
        memset(e, 0, sizeof(*e));
        e->kind = kind;
        e->index = index;
        e->off = (uint32_t)r->ev_text.n;
        e->len = (uint32_t)len;
        if (len && (rc = dsv_strbuf_add(&r->ev_text, text, len)) < 0)
                return rc;
        e->name_off = (uint32_t)r->ev_text.n;
        e->name_len = (uint32_t)name_len;
        if (name_len && (rc = dsv_strbuf_add(&r->ev_text, name, name_len)) < 0)
                return rc;
        if (call_id)
                snprintf(e->call_id, sizeof(e->call_id), "%s", call_id);
        r->n_evs++;
        return 0;
}

static int on_chat(void *ud, const struct dsv_text_chat_event *x) {
        struct request *r = ud;
        char id[24];
        uint64_t h;
        int rc;

        switch (x->kind) {
        case DSV_TEXT_CHAT_REASONING:
        case DSV_TEXT_CHAT_CONTENT:
                if (x->len)
                        r->last_was_call = false;
                return ev_add(r, x->kind == DSV_TEXT_CHAT_REASONING ? DSV_ENGINE_CHAT_REASONING : DSV_ENGINE_CHAT_CONTENT, 0,
                              x->text, x->len, NULL, 0, NULL);
        case DSV_TEXT_CHAT_TOOL_CALL:
                /* splitmix64 of the prompt's hash and the call's index */
                h = r->call_key + 0x9e3779b97f4a7c15ull * (r->n_calls + 1);
                h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
                h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
                h ^= h >> 31;
                snprintf(id, sizeof(id), "call_%016llx", (unsigned long long)h);
                if ((rc = ev_add(r, DSV_ENGINE_CHAT_TOOL_BEGIN, r->n_calls, NULL, 0, x->name, x->name_len, id)) < 0 ||
                    (rc = ev_add(r, DSV_ENGINE_CHAT_TOOL_ARGS, r->n_calls, x->text, x->len, NULL, 0, NULL)) < 0 ||
                    (rc = ev_add(r, DSV_ENGINE_CHAT_TOOL_END, r->n_calls, NULL, 0, NULL, 0, NULL)) < 0)
                        return rc;
                r->n_calls++;
                r->last_was_call = true;
                return 0;
        case DSV_TEXT_CHAT_ERROR:
        default:
                r->last_was_call = false;
                return ev_add(r, DSV_ENGINE_CHAT_ERROR, 0, x->text, x->len, x->message, x->message ? strlen(x->message) : 0,
                              NULL);
        }
}

/* The parser over text_out[from, end): what the last push added. */
static int parse_new(struct request *r, size_t from) {
        if (!r->parser || r->text_out.n <= from)
                return 0;
        return dsv_text_parser_feed(r->parser, r->text_out.p + from, r->text_out.n - from, on_chat, r);
}

/* Hands the pending chat events to the sink: true when all went, false on -EAGAIN (the
 * rest at the next flush), and true too when the client is gone (*gone set). */
static bool flush_chat(struct dsv_core *c, struct request *r, bool *gone) {
        while (r->ev_next < r->n_evs) {
                const struct chat_ev *e = &r->evs[r->ev_next];
                struct dsv_engine_event ev = {.type = DSV_ENGINE_EVENT_CHAT, .id = r->id};
                int rc;
                ev.chat.kind = e->kind;
                ev.chat.index = e->index;
                ev.chat.text = r->ev_text.p ? r->ev_text.p + e->off + r->ev_sent : "";
                ev.chat.len = e->len - r->ev_sent;
                if (e->kind == DSV_ENGINE_CHAT_TOOL_BEGIN) {
                        ev.chat.call_id = e->call_id;
                        ev.chat.name = r->ev_text.p ? r->ev_text.p + e->name_off : "";
                        ev.chat.name_len = e->name_len;
                } else if (e->kind == DSV_ENGINE_CHAT_ERROR) {
                        ev.chat.message = r->ev_text.p ? r->ev_text.p + e->name_off : "";
                        ev.chat.message_len = e->name_len;
                }
                rc = c->sink.emit(c->sink.ud, r->client, &ev);
                if (rc == -EAGAIN)
                        return false;
                if (rc < 0) {
                        *gone = true;
                        return true;
                }
                r->ev_sent += (uint32_t)rc;
                if (r->ev_sent >= e->len) {
                        r->ev_next++;
                        r->ev_sent = 0;
                }
        }
        r->n_evs = r->ev_next = 0;
        r->ev_sent = 0;
        r->ev_text.n = 0;
        return true;
}

int request_push_token(struct dsv_core *c, struct request *r, int32_t tok, float lp, const struct dsv_logprob *top) {
        const size_t nt = r->in->top_logprobs;
        int rc;
        if ((size_t)r->n_out == r->cap_out) {
                size_t c1 = r->cap_out, c2 = r->cap_out;
                if ((rc = DSV_GROW(&r->out, &c1, (size_t)r->n_out + 1)) < 0 || (rc = DSV_GROW(&r->out_text_end, &c2, c1)) < 0)
                        return rc;
                if (r->in->logprobs) {
                        float *l = realloc(r->out_lp, c1 * sizeof(*l));
                        if (!l)
                                return -ENOMEM;
                        r->out_lp = l;
                        if (nt) {
                                struct dsv_logprob *t = realloc(r->out_top, c1 * nt * sizeof(*t));
                                if (!t)
                                        return -ENOMEM;
                                r->out_top = t;
                        }
                }
                r->cap_out = c1;
        }
        if (r->in->logprobs) {
                r->out_lp[r->n_out] = lp;
                if (nt)
                        memcpy(r->out_top + (size_t)r->n_out * nt, top, nt * sizeof(*top));
        }
        r->out[r->n_out++] = tok;
        if (r->stream) {
                const char *txt;
                size_t n, before = r->text_out.n;
                if (dsv_text_stream_push(r->stream, tok, &txt, &n) == 0 && (rc = push_text(r, txt, n)) < 0)
                        return rc;
                if ((rc = parse_new(r, before)) < 0)
                        return rc;
        }
        r->out_text_end[r->n_out - 1] = (uint32_t)r->text_out.n;
        (void)c;
        return 0;
}

bool request_parked(const struct request *r) { return r->n_out > 0 && r->in->stream; }

bool request_going_away(const struct dsv_core *c, const struct request *r) {
        return r->state == REQ_FINISHING || r->cancel || c->sink.gone(c->sink.ud, r->client);
}

/* Drops the first k pending tokens and the first `text` bytes of pending text. */
static void consume(struct request *r, int k, size_t text) {
        text = MIN(text, r->text_out.n);
        if (r->n_out > k) {
                memmove(r->out, r->out + k, (size_t)(r->n_out - k) * sizeof(int32_t));
                memmove(r->out_text_end, r->out_text_end + k, (size_t)(r->n_out - k) * sizeof(uint32_t));
                if (r->out_lp)
                        memmove(r->out_lp, r->out_lp + k, (size_t)(r->n_out - k) * sizeof(float));
                if (r->out_top)
                        memmove(r->out_top, r->out_top + (size_t)k * r->in->top_logprobs,
                                (size_t)(r->n_out - k) * r->in->top_logprobs * sizeof(*r->out_top));
        }
        r->n_out -= k;
        for (int i = 0; i < r->n_out; i++)
                r->out_text_end[i] = r->out_text_end[i] > text ? r->out_text_end[i] - (uint32_t)text : 0;
        if (r->text_out.p) {
                memmove(r->text_out.p, r->text_out.p + text, r->text_out.n - text);
                r->text_out.n -= text;
                r->text_out.p[r->text_out.n] = 0;
        }
}

bool request_flush(struct dsv_core *c, struct request *r) {
        struct dsv_engine_event ev = {.id = r->id};
        uint32_t text_sent = 0;
        int rc;

        if (c->sink.gone(c->sink.ud, r->client))
                return true;
        if (r->state == REQ_FINISHING && r->stream && !r->final_error) {
                const char *t;
                size_t n, before = r->text_out.n;
                if (dsv_text_stream_flush(r->stream, &t, &n) == 0)
                        push_text(r, t, n);
                if (r->stop)
                        dsv_stop_finish(r->stop, &r->text_out); /* the tail held back, when nothing matched */
                dsv_text_stream_free(r->stream);
                r->stream = NULL;
                if (r->parser) {
                        if (parse_new(r, before) < 0 || dsv_text_parser_finish(r->parser, on_chat, r) < 0) {
                                request_fail(r, ENOMEM, "out of memory parsing the output");
                        } else if (r->reason == DSV_ENGINE_FINISH_STOP && r->last_was_call) {
                                r->reason = DSV_ENGINE_FINISH_TOOL_CALLS;
                        }
                        dsv_text_parser_free(r->parser);
                        r->parser = NULL;
                }
        }
        if (r->n_evs && (r->in->stream || r->state == REQ_FINISHING)) {
                bool gone = false;
                if (!flush_chat(c, r, &gone))
                        return false;
                if (gone)
                        return true;
        }
        if ((r->n_out || r->text_out.n) && (r->in->stream || r->state == REQ_FINISHING)) {
                ev.type = DSV_ENGINE_EVENT_TOKENS;
                ev.tokens.ids = r->out;
                ev.tokens.n = (uint32_t)r->n_out;
                ev.tokens.text = r->text_out.p;
                ev.tokens.text_end = r->out_text_end;
                ev.tokens.text_len = (uint32_t)r->text_out.n;
                ev.tokens.text_sent = &text_sent;
                if (r->in->logprobs) {
                        ev.tokens.logprobs = r->out_lp;
                        ev.tokens.top = r->out_top;
                        ev.tokens.top_n = r->in->top_logprobs;
                }
                rc = c->sink.emit(c->sink.ud, r->client, &ev);
                if (rc == -EAGAIN)
                        return false;
                if (rc < 0)
                        return true; /* gone, or it broke its ring */
                consume(r, MIN(rc, r->n_out), text_sent);
                if (r->n_out || r->text_out.n)
                        return false; /* the rest when the client has read */
        }
        if (r->state != REQ_FINISHING)
                return true;
        memset(&ev, 0, sizeof(ev));
        ev.id = r->id;
        if (r->final_error) {
                ev.type = DSV_ENGINE_EVENT_ERROR;
                ev.error.code = r->error_code;
                ev.error.message = r->error_msg;
                ev.error.uid = r->uid;
        } else if (r->in->kind == DSV_REQUEST_SESSION_LIST) {
                ev.type = DSV_ENGINE_EVENT_SESSION_LIST;
                ev.session_list.rows = r->rows;
                ev.session_list.n = r->n_rows;
        } else if (r->in->kind != DSV_REQUEST_GENERATE) {
                ev.type = DSV_ENGINE_EVENT_SESSION;
                ev.session.name = r->sreply.name;
                ev.session.flags = r->sreply.flags;
                ev.session.n_tokens = r->sreply.n_tokens;
                ev.session.n_pages = r->sreply.n_pages;
        } else {
                ev.type = DSV_ENGINE_EVENT_DONE;
                ev.done.reason = r->reason;
                ev.done.uid = r->uid;
                ev.done.prompt_tokens = (uint32_t)r->n_prompt;
                ev.done.completion_tokens = (uint32_t)(r->n_tokens - r->n_prompt);
                ev.done.cached_tokens = (uint32_t)r->n_cached;
                ev.done.queue_us = ((r->t_start ? r->t_start : r->t_end) - r->t_submit) / 1000;
                ev.done.prefill_us = r->t_first && r->t_start ? (r->t_first - r->t_start) / 1000 : 0;
                ev.done.decode_us = r->t_first ? (r->t_end - r->t_first) / 1000 : 0;
                ev.done.preempted = (uint32_t)r->n_preempted;
                ev.done.spec_drafted = r->spec_drafted;
                ev.done.spec_accepted = r->spec_accepted;
                ev.done.stop_index = r->stop_index;
        }
        rc = c->sink.emit(c->sink.ud, r->client, &ev);
        if (rc != -EAGAIN && ev.type == DSV_ENGINE_EVENT_DONE) {
                DSV_METRIC_ADD(c->metrics, requests_done_total, 1);
                if (ev.done.spec_drafted)
                        log_debug("Request %llu: the MTP layer drafted %u tokens, %u accepted",
                                  (unsigned long long)r->id, ev.done.spec_drafted, ev.done.spec_accepted);
                DSV_METRIC_ADD(c->metrics, queue_us_total, ev.done.queue_us);
                if (r->t_first) {
                        DSV_METRIC_ADD(c->metrics, ttft_us_total, (r->t_first - r->t_submit) / 1000);
                        DSV_METRIC_ADD(c->metrics, decode_us_total, ev.done.decode_us);
                        DSV_METRIC_ADD(c->metrics, decode_tokens_total, MAX(ev.done.completion_tokens, 1u) - 1);
                }
        }
        return rc != -EAGAIN;
}

static void request_in_free(struct dsv_engine_request *in) {
        if (!in)
                return;
        free(in->tokens);
        free(in->text);
        free(in->messages);
        free(in->tools);
        free(in->schema);
        dsv_grammar_free(in->grammar);
        free(in);
}

void request_free(struct dsv_core *c, struct request *r) {
        if (!r)
                return;
        if (r->sess)
                sessions_return(c, r);
        dsv_kv_seq_release(core_pool(c, &r->seq), &r->seq);
        c->sink.request_end(c->sink.ud, r->client);
        c->sink.unref(c->sink.ud, r->client);
        dsv_text_stream_free(r->stream);
        constrain_report(r);
        dsv_gmatch_free(r->gm);
        dsv_text_parser_free(r->parser);
        free(r->evs);
        dsv_strbuf_done(&r->ev_text);
        free(r->stop);
        request_in_free(r->in);
        free(r->tokens);
        free(r->out);
        free(r->out_text_end);
        free(r->out_lp);
        free(r->out_top);
        free(r->rows);
        dsv_strbuf_done(&r->text_out);
        draft_free(r);
        free(r);
}

void requests_remove_finished(struct dsv_core *c) {
        size_t k = 0;
        bool freed = false;
        /* the KV cache of a finished request is free (or back in its session), and the
         * metrics say so, before its client hears DONE */
        for (size_t i = 0; i < c->n_reqs; i++) {
                struct request *r = c->reqs[i];
                if (r->state != REQ_FINISHING || (!r->sess && !r->seq.n_pages))
                        continue;
                if (r->sess)
                        sessions_return(c, r);
                dsv_kv_seq_release(core_pool(c, &r->seq), &r->seq);
                freed = true;
        }
        if (freed)
                sessions_publish(c);
        for (size_t i = 0; i < c->n_reqs; i++) {
                struct request *r = c->reqs[i];
                if (r->state == REQ_FINISHING && request_flush(c, r)) {
                        request_free(c, r);
                        continue;
                }
                c->reqs[k++] = r;
        }
        c->n_reqs = k;
}
