/* Engine events to the wire (see sink.h). */
#include "config.h"

#include "daemon/server/sink.h"

#include "daemon/server/conn.h"
#include "daemon/server/reqlog.h"
#include "daemon/util.h"
#include "ipc/proto.h"

unsigned dsv_sink_finish_reason(enum dsv_engine_finish f) {
        switch (f) {
        case DSV_ENGINE_FINISH_STOP:
                return DSV_FINISH_STOP;
        case DSV_ENGINE_FINISH_LENGTH:
                return DSV_FINISH_LENGTH;
        case DSV_ENGINE_FINISH_CANCELLED:
                return DSV_FINISH_CANCELLED;
        case DSV_ENGINE_FINISH_CONTEXT:
                return DSV_FINISH_CONTEXT;
        case DSV_ENGINE_FINISH_STOP_STRING:
                return DSV_FINISH_STOP_STRING;
        case DSV_ENGINE_FINISH_TOOL_CALLS:
                return DSV_FINISH_TOOL_CALLS;
        case DSV_ENGINE_FINISH_SHUTDOWN:
        default:
                return DSV_FINISH_SHUTDOWN;
        }
}

/* The longest prefix of text[0, n) that ends on a UTF-8 character boundary (at least one
 * byte when n > 0: a malformed run is cut anywhere). */
static uint32_t utf8_cut(const char *text, uint32_t n) {
        uint32_t k = n;
        while (k > 0 && n - k < 4 && ((unsigned char)text[k] & 0xc0) == 0x80)
                k--;
        return k ? k : n;
}

/* TOKENS records of at most max_record bytes each: as many ids per record as fit with their
 * text (a msgpack id takes at most 5 bytes; 64 covers the map and the other fields) and,
 * when the request asked for logprobs, their logprob and alternatives (a float32 takes 5
 * bytes, an alternative 10; 15 more for the three array headers). */
static int emit_tokens(struct dsv_conn *c, uint64_t id, const struct dsv_engine_event *ev) {
        const uint32_t n = ev->tokens.n, text_len = ev->tokens.text_len, max = c->shm.comp.max_record;
        const uint32_t *end = ev->tokens.text_end;
        const bool lp = ev->tokens.logprobs != NULL;
        const uint32_t tn = lp ? ev->tokens.top_n : 0, per = 5 + (lp ? 5 + 10 * tn : 0), base = 64 + (lp ? 15 : 0);
        int32_t *top_ids = NULL;
        float *top_lp = NULL;
        uint32_t sent = 0, tsent = 0;
        int rc = 0;

        if (max <= base + per)
                return -EMSGSIZE;
        if (tn && n) {
                /* the wire's two parallel arrays of the alternatives */
                top_ids = malloc((size_t)n * tn * sizeof(*top_ids));
                top_lp = malloc((size_t)n * tn * sizeof(*top_lp));
                if (!top_ids || !top_lp) {
                        free(top_ids);
                        free(top_lp);
                        return -EAGAIN; /* retried at the next kick */
                }
                for (size_t i = 0; i < (size_t)n * tn; i++) {
                        top_ids[i] = ev->tokens.top[i].id;
                        top_lp[i] = ev->tokens.top[i].lp;
                }
        }
        while (sent < n || tsent < text_len) {
                uint32_t k = 0, tend, room;
                while (sent + k < n && base + per * (k + 1) + (end[sent + k] - tsent) <= max)
                        k++;
                if (k == 0 && sent < n) {
                        /* the text of the next token alone is larger than a record: a text-only
                         * record with a part of it, its id follows */
                        room = max - base;
                        tend = tsent + utf8_cut(ev->tokens.text + tsent, MIN(room, end[sent] - tsent));
                } else {
                        tend = k ? end[sent + k - 1] : tsent;
                        if (sent + k == n && tend < text_len) {
                                room = max - base - per * k - (tend - tsent);
                                tend += text_len - tend <= room ? text_len - tend : utf8_cut(ev->tokens.text + tend, room);
                        }
                }
                struct dsv_msg m = {.type = DSV_MSG_TOKENS};
                m.u.tokens.id = id;
                m.u.tokens.tokens = ev->tokens.ids + sent;
                m.u.tokens.n_tokens = k;
                m.u.tokens.text = tend > tsent ? ev->tokens.text + tsent : NULL;
                m.u.tokens.text_len = tend - tsent;
                if (lp && k) {
                        m.u.tokens.logprobs = ev->tokens.logprobs + sent;
                        m.u.tokens.n_logprobs = k;
                        m.u.tokens.top_ids = tn ? top_ids + (size_t)sent * tn : NULL;
                        m.u.tokens.top_logprobs = tn ? top_lp + (size_t)sent * tn : NULL;
                        m.u.tokens.n_top = m.u.tokens.n_top_logprobs = k * tn;
                }
                rc = dsv_conn_send(c, &m, true);
                if (rc < 0)
                        break;
                sent += k;
                tsent = tend;
        }
        free(top_ids);
        free(top_lp);
        *ev->tokens.text_sent = tsent;
        if (rc < 0 && rc != -EAGAIN)
                return rc; /* gone: nothing more matters */
        if (rc == -EAGAIN && sent == 0 && tsent == 0)
                return -EAGAIN;
        return (int)sent;
}

/* One CHAT_EVENT record: a text longer than a record holds is cut at a UTF-8 boundary
 * (the engine sends the rest as the next delta); returns the text bytes delivered. */
static int emit_chat(struct dsv_conn *c, uint64_t id, const struct dsv_engine_event *ev) {
        _Static_assert((int)DSV_ENGINE_CHAT_REASONING == DSV_CHAT_EV_REASONING &&
                               (int)DSV_ENGINE_CHAT_CONTENT == DSV_CHAT_EV_CONTENT &&
                               (int)DSV_ENGINE_CHAT_TOOL_BEGIN == DSV_CHAT_EV_TOOL_BEGIN &&
                               (int)DSV_ENGINE_CHAT_TOOL_ARGS == DSV_CHAT_EV_TOOL_ARGS &&
                               (int)DSV_ENGINE_CHAT_TOOL_END == DSV_CHAT_EV_TOOL_END &&
                               (int)DSV_ENGINE_CHAT_ERROR == DSV_CHAT_EV_PARSE_ERROR,
                       "the engine's chat event kinds are the wire's");
        /* the map, id, type, index, and the headers of the strings: under 64 bytes */
        const uint32_t max = c->shm.comp.max_record, name = MIN(ev->chat.name_len, 4u * DSV_MAX_TOOL_NAME),
                       msg = MIN(ev->chat.message_len, (uint32_t)DSV_ERROR_MESSAGE_MAX);
        struct dsv_msg m = {.type = DSV_MSG_CHAT_EVENT};
        uint32_t room, len = ev->chat.len;
        int rc;

        if (max <= 64 + DSV_NAME_MAX + name + msg + 4)
                return -EMSGSIZE;
        room = max - 64 - DSV_NAME_MAX - name - msg;
        if (len > room)
                len = utf8_cut(ev->chat.text, room);
        m.u.chat_event.id = id;
        m.u.chat_event.type = (uint32_t)ev->chat.kind;
        m.u.chat_event.text = len ? ev->chat.text : NULL;
        m.u.chat_event.text_len = len;
        m.u.chat_event.index = ev->chat.index;
        if (ev->chat.call_id)
                snprintf(m.u.chat_event.call_id, sizeof(m.u.chat_event.call_id), "%s", ev->chat.call_id);
        m.u.chat_event.name = ev->chat.name;
        m.u.chat_event.name_len = name;
        m.u.chat_event.message = ev->chat.message;
        m.u.chat_event.message_len = msg;
        rc = dsv_conn_send(c, &m, true);
        return rc < 0 ? rc : (int)len;
}

/* The request log line (daemon/server/reqlog.c) of a request's final event. */
static void log_request(struct dsv_conn *c, const struct dsv_engine_event *ev) {
        struct dsv_reqlog l = {.pid = c->peer.pid, .client = c->name, .id = ev->id};
        if (ev->type == DSV_ENGINE_EVENT_DONE) {
                l.uid = ev->done.uid;
                l.prompt_tokens = ev->done.prompt_tokens;
                l.cached_tokens = ev->done.cached_tokens;
                l.generated_tokens = ev->done.completion_tokens;
                l.queue_us = ev->done.queue_us;
                l.prefill_us = ev->done.prefill_us;
                l.decode_us = ev->done.decode_us;
                l.finish = dsv_sink_finish_reason(ev->done.reason);
        } else if (ev->type == DSV_ENGINE_EVENT_ERROR) {
                l.uid = ev->error.uid;
                l.error = ev->error.code;
                l.message = ev->error.message;
        } else {
                return;
        }
        dsv_reqlog(&l);
}

static int sink_emit(void *ud, void *client, const struct dsv_engine_event *ev) {
        struct dsv_conn *c = client;
        struct dsv_msg m = {0};
        int rc;

        switch (ev->type) {
        case DSV_ENGINE_EVENT_TOKENS:
                return emit_tokens(c, ev->id, ev);
        case DSV_ENGINE_EVENT_CHAT:
                return emit_chat(c, ev->id, ev);
        case DSV_ENGINE_EVENT_DONE:
                m.type = DSV_MSG_DONE;
                m.u.done.id = ev->id;
                m.u.done.reason = dsv_sink_finish_reason(ev->done.reason);
                m.u.done.prompt_tokens = ev->done.prompt_tokens;
                m.u.done.completion_tokens = ev->done.completion_tokens;
                m.u.done.cached_tokens = ev->done.cached_tokens;
                m.u.done.queue_us = ev->done.queue_us;
                m.u.done.prefill_us = ev->done.prefill_us;
                m.u.done.decode_us = ev->done.decode_us;
                m.u.done.preempted = ev->done.preempted;
                m.u.done.spec_drafted = ev->done.spec_drafted;
                m.u.done.spec_accepted = ev->done.spec_accepted;
                m.u.done.stop_index = ev->done.stop_index;
                rc = dsv_conn_send(c, &m, true);
                break;
        case DSV_ENGINE_EVENT_ERROR:
                rc = dsv_conn_send_error(c, ev->id, ev->error.code, true, "%s", ev->error.message);
                break;
        case DSV_ENGINE_EVENT_SESSION:
                m.type = DSV_MSG_SESSION_REPLY;
                m.u.session.id = ev->id;
                snprintf(m.u.session.name, sizeof(m.u.session.name), "%s", ev->session.name);
                m.u.session.flags = ((ev->session.flags & DSV_ENGINE_SESSION_PINNED) ? DSV_SESSION_PINNED : 0) |
                                    ((ev->session.flags & DSV_ENGINE_SESSION_BUSY) ? DSV_SESSION_BUSY : 0) |
                                    ((ev->session.flags & DSV_ENGINE_SESSION_CREATED) ? DSV_SESSION_CREATED : 0);
                m.u.session.n_tokens = ev->session.n_tokens;
                m.u.session.n_pages = ev->session.n_pages;
                rc = dsv_conn_send(c, &m, true);
                break;
        case DSV_ENGINE_EVENT_SESSION_LIST: {
                /* as many rows as one completion record holds (about 100 bytes each) */
                uint32_t fit = (c->shm.comp.max_record - 64) / 100, n = ev->session_list.n < fit ? ev->session_list.n : fit;
                struct dsv_session_row *rows = n ? calloc(n, sizeof(*rows)) : NULL;
                if (n && !rows)
                        return dsv_conn_send_error(c, ev->id, ENOMEM, true, "out of memory");
                for (uint32_t i = 0; i < n; i++) {
                        const struct dsv_engine_session_row *x = &ev->session_list.rows[i];
                        snprintf(rows[i].name, sizeof(rows[i].name), "%s", x->name);
                        rows[i].flags = ((x->flags & DSV_ENGINE_SESSION_PINNED) ? DSV_SESSION_PINNED : 0) |
                                        ((x->flags & DSV_ENGINE_SESSION_BUSY) ? DSV_SESSION_BUSY : 0) |
                                        ((x->flags & DSV_ENGINE_SESSION_PRIVATE) ? DSV_SESSION_PRIVATE_ROW : 0);
                        rows[i].n_tokens = x->n_tokens;
                        rows[i].n_pages = x->n_pages;
                        rows[i].idle_ms = x->idle_ms;
                        rows[i].has_rank = x->rank >= 0;
                        rows[i].rank = x->rank >= 0 ? (uint32_t)x->rank : 0;
                }
                m.type = DSV_MSG_SESSION_LIST_REPLY;
                m.u.session_list.id = ev->id;
                m.u.session_list.rows = rows;
                m.u.session_list.n_rows = n;
                m.u.session_list.n_total = ev->session_list.n;
                rc = dsv_conn_send(c, &m, true);
                free(rows);
                break;
        }
        default:
                return -EINVAL;
        }
        if (rc != -EAGAIN)
                log_request(c, ev);
        return rc;
}

static bool sink_gone(void *ud, void *client) { return dsv_conn_is_dead(client); }
static void sink_ref(void *ud, void *client) { dsv_conn_ref(client); }
static void sink_unref(void *ud, void *client) { dsv_conn_unref(client); }

static void sink_request_end(void *ud, void *client) {
        struct dsv_conn *c = client;
        if (c->ue)
                __atomic_sub_fetch(&c->ue->requests, 1, __ATOMIC_RELAXED);
}

const struct dsv_engine_sink dsv_server_sink = {
        .emit = sink_emit,
        .gone = sink_gone,
        .ref = sink_ref,
        .unref = sink_unref,
        .request_end = sink_request_end,
};
