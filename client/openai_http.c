/* openai_http.c: the HTTP side of dsv32-openai on libmicrohttpd: routing (which path takes
 * which method), bearer API keys for the /v1/ paths, request bodies and their size limit, the JSON
 * and server-sent-event responses, and the small endpoints (/health, /v1/models, /metrics).
 * libmicrohttpd runs a thread per connection (MHD_USE_THREAD_PER_CONNECTION), so a handler
 * may block on the daemon; generation itself is openai_gen.c. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <microhttpd.h>

#include "client/openai.h"
#include "client/openai_http.h"

struct conn {
        struct oai_buf body;
        bool too_big;
};

enum route {
        ROUTE_NONE = 0,
        ROUTE_CHAT,
        ROUTE_COMPLETIONS,
        ROUTE_MODELS,
        ROUTE_MODEL, /* /v1/models/{id} */
        ROUTE_HEALTH,
        ROUTE_METRICS,
};

static enum route route_of(const char *url, const char **allow) {
        static const struct {
                const char *path;
                enum route route;
                const char *method;
        } routes[] = {
                {"/v1/chat/completions", ROUTE_CHAT, "POST"}, {"/v1/completions", ROUTE_COMPLETIONS, "POST"},
                {"/v1/models", ROUTE_MODELS, "GET"},          {"/health", ROUTE_HEALTH, "GET"},
                {"/metrics", ROUTE_METRICS, "GET"},
        };
        for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
                if (strcmp(url, routes[i].path) == 0) {
                        *allow = routes[i].method;
                        return routes[i].route;
                }
        if (strncmp(url, "/v1/models/", 11) == 0 && url[11]) {
                *allow = "GET";
                return ROUTE_MODEL;
        }
        return ROUTE_NONE;
}

static enum MHD_Result respond(struct MHD_Connection *conn, unsigned status, const char *type, const char *body,
                               size_t len, const char *allow) {
        struct MHD_Response *resp = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
        if (!resp)
                return MHD_NO;
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
        if (allow)
                MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
        if (status == 401)
                MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
        enum MHD_Result r = MHD_queue_response(conn, status, resp);
        MHD_destroy_response(resp);
        oai_metrics_http(status);
        return r;
}

static enum MHD_Result respond_json(struct MHD_Connection *conn, unsigned status, json_t *j, const char *allow) {
        char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
        if (!s)
                return MHD_NO;
        enum MHD_Result r = respond(conn, status, "application/json", s, strlen(s), allow);
        free(s);
        return r;
}

static enum MHD_Result respond_error(struct MHD_Connection *conn, const struct oai_error *e, const char *allow) {
        if (e->status == 499) { /* the client went away: nobody to answer */
                oai_metrics_http(499);
                return MHD_NO;
        }
        return respond_json(conn, e->status, oai_error_json(e), allow);
}

int oai_connect(const struct oai_config *cfg, dsv32_client **ret, struct oai_error *e) {
        struct dsv32_connect_opts o = {.struct_size = sizeof(o), .socket_path = cfg->socket_path,
                                       .client_name = "dsv32-openai", .timeout_ms = (int)cfg->connect_timeout_ms};
        int err = dsv32_connect(&o, ret);
        if (err < 0)
                oai_error_from_dsv32(e, err, "connecting to dsv32d", dsv32_last_error(NULL));
        return err;
}

/* Constant time in the key's contents, so a wrong key says nothing about the right ones. */
static bool key_matches(const char *given, size_t len, const char *key) {
        size_t klen = strlen(key);
        unsigned char diff = klen != len;
        for (size_t i = 0; i < klen; i++)
                diff |= (unsigned char)(key[i] ^ (i < len ? given[i] : 0));
        return diff == 0;
}

static bool authorized(const struct oai_config *cfg, struct MHD_Connection *conn) {
        if (!cfg->api_keys)
                return true;
        const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
        if (!h || strncasecmp(h, "Bearer ", 7) != 0)
                return false;
        h += 7;
        while (*h == ' ')
                h++;
        bool ok = false;
        for (size_t i = 0; i < cfg->n_api_keys; i++)
                ok |= key_matches(h, strlen(h), cfg->api_keys[i]);
        return ok;
}

static enum MHD_Result health(const struct oai_config *cfg, struct MHD_Connection *conn) {
        static const char *states[] = {"loading", "ready", "draining", "failed"};
        dsv32_client *c = NULL;
        struct dsv32_stats s = {0};
        struct oai_error e;
        int err = oai_connect(cfg, &c, &e);
        if (err >= 0 && (err = dsv32_stats(c, &s)) < 0)
                oai_error_from_dsv32(&e, err, "asking dsv32d for its state", dsv32_last_error(c));
        dsv32_disconnect(c);
        if (err < 0)
                return respond_json(conn, 503, json_pack("{s:s,s:s}", "status", "unavailable", "message", e.message),
                                    NULL);
        const char *state = (unsigned)s.state < 4 ? states[s.state] : "unknown";
        return respond_json(conn, s.state == DSV32_STATE_READY ? 200 : 503,
                            json_pack("{s:s,s:s,s:s}", "status", s.state == DSV32_STATE_READY ? "ok" : state, "state",
                                      state, "model", s.model),
                            NULL);
}

static json_t *model_object(const char *id) {
        return json_pack("{s:s,s:s,s:i,s:s}", "id", id, "object", "model", "created", 0, "owned_by", "dsv32d");
}

static enum MHD_Result models(const struct oai_config *cfg, struct MHD_Connection *conn, const char *one) {
        dsv32_client *c = NULL;
        struct dsv32_info info = {0};
        struct oai_error e;
        int err = oai_connect(cfg, &c, &e);
        if (err >= 0 && (err = dsv32_get_info(c, &info)) < 0)
                oai_error_from_dsv32(&e, err, "asking dsv32d for its model", dsv32_last_error(c));
        dsv32_disconnect(c);
        if (err < 0)
                return respond_error(conn, &e, NULL);
        if (!info.model[0]) {
                oai_error_set(&e, 503, "server_error", NULL, "dsv32d is still loading its model");
                return respond_error(conn, &e, NULL);
        }
        char id[256];
        oai_model_id(info.model, id, sizeof(id));
        if (one) {
                if (strcmp(one, id) != 0) {
                        oai_error_set(&e, 404, "invalid_request_error", "model",
                                      "the model '%s' does not exist: this gateway serves '%s'", one, id);
                        e.code = "model_not_found";
                        return respond_error(conn, &e, NULL);
                }
                return respond_json(conn, 200, model_object(id), NULL);
        }
        return respond_json(conn, 200, json_pack("{s:s,s:[o]}", "object", "list", "data", model_object(id)), NULL);
}

static enum MHD_Result metrics(const struct oai_config *cfg, struct MHD_Connection *conn) {
        struct oai_buf b = {0};
        int err = oai_metrics_text(cfg, &b);
        enum MHD_Result r;
        if (err < 0) {
                struct oai_error e;
                oai_error_set(&e, 500, "server_error", NULL, "cannot format the metrics: %s", dsv32_strerror(err));
                r = respond_error(conn, &e, NULL);
        } else {
                r = respond(conn, 200, "text/plain; version=0.0.4; charset=utf-8", b.p ? b.p : "", b.len, NULL);
        }
        oai_buf_free(&b);
        return r;
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max) {
        (void)pos;
        long n = oai_gen_read(cls, buf, max);
        return n > 0 ? (ssize_t)n : n == 0 ? MHD_CONTENT_READER_END_OF_STREAM : MHD_CONTENT_READER_END_WITH_ERROR;
}

static void stream_free(void *cls) {
        oai_gen_free(cls);
}

static enum MHD_Result generate(const struct oai_config *cfg, struct MHD_Connection *conn, enum oai_kind kind,
                                const struct oai_buf *body) {
        struct oai_request r;
        struct oai_error e;
        struct oai_gen *g = NULL;

        if (oai_request_parse(kind, body->p ? body->p : "", body->len, &r, &e) < 0)
                return respond_error(conn, &e, NULL);
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (oai_gen_start(cfg, &r, ci ? ci->connect_fd : -1, &g, &e) < 0)
                return respond_error(conn, &e, NULL);
        if (!oai_gen_streaming(g)) {
                const char *s = oai_gen_body(g);
                enum MHD_Result ret = respond(conn, 200, "application/json", s, strlen(s), NULL);
                oai_gen_free(g);
                return ret;
        }
        struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_reader, g,
                                                                      stream_free);
        if (!resp) {
                oai_gen_free(g);
                return MHD_NO;
        }
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
        enum MHD_Result ret = MHD_queue_response(conn, 200, resp);
        MHD_destroy_response(resp); /* the response (and g with it) lives until it is sent */
        oai_metrics_http(200);
        return ret;
}

enum MHD_Result oai_http_handler(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                 const char *version, const char *upload_data, size_t *upload_data_size,
                                 void **con_cls) {
        const struct oai_config *cfg = cls;
        struct conn *c = *con_cls;
        struct oai_error e;
        const char *allow = NULL;
        enum route route = route_of(url, &allow);
        (void)version;

        if (!c) {
                /* the headers are in: refuse what we can before reading a body */
                c = calloc(1, sizeof(*c));
                if (!c)
                        return MHD_NO;
                *con_cls = c;
                if (route == ROUTE_NONE) {
                        oai_error_set(&e, 404, "invalid_request_error", NULL, "no such path: %s %s", method, url);
                        e.code = "unknown_url";
                        return respond_error(conn, &e, NULL);
                }
                if (strcmp(method, allow) != 0 && !(strcmp(method, "HEAD") == 0 && strcmp(allow, "GET") == 0)) {
                        oai_error_set(&e, 405, "invalid_request_error", NULL, "%s takes %s, not %s", url, allow,
                                      method);
                        e.code = "method_not_allowed";
                        return respond_error(conn, &e, allow);
                }
                if (strncmp(url, "/v1/", 4) == 0 && !authorized(cfg, conn)) {
                        oai_error_set(&e, 401, "invalid_request_error", NULL,
                                      "missing or unknown API key: send the header 'Authorization: Bearer KEY' with a "
                                      "key from the gateway's --api-keys file");
                        e.code = "invalid_api_key";
                        return respond_error(conn, &e, NULL);
                }
                const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
                if (cl && strtoull(cl, NULL, 10) > cfg->max_body_bytes) {
                        oai_error_set(&e, 413, "invalid_request_error", NULL,
                                      "the request body has %s bytes; this gateway takes at most %zu (--max-body-bytes)",
                                      cl, cfg->max_body_bytes);
                        e.code = "request_too_large";
                        return respond_error(conn, &e, NULL);
                }
                return MHD_YES;
        }
        if (*upload_data_size) {
                /* a chunked body has no Content-Length: count as it comes */
                if (!c->too_big && c->body.len + *upload_data_size <= cfg->max_body_bytes) {
                        if (oai_buf_append(&c->body, upload_data, *upload_data_size) < 0)
                                return MHD_NO;
                } else {
                        c->too_big = true;
                        oai_buf_free(&c->body);
                }
                *upload_data_size = 0;
                return MHD_YES;
        }
        if (c->too_big) {
                oai_error_set(&e, 413, "invalid_request_error", NULL,
                              "the request body is over %zu bytes, this gateway's limit (--max-body-bytes)",
                              cfg->max_body_bytes);
                e.code = "request_too_large";
                return respond_error(conn, &e, NULL);
        }
        switch (route) {
        case ROUTE_CHAT:
                return generate(cfg, conn, OAI_CHAT, &c->body);
        case ROUTE_COMPLETIONS:
                return generate(cfg, conn, OAI_COMPLETION, &c->body);
        case ROUTE_MODELS:
                return models(cfg, conn, NULL);
        case ROUTE_MODEL:
                return models(cfg, conn, url + 11);
        case ROUTE_HEALTH:
                return health(cfg, conn);
        case ROUTE_METRICS:
                return metrics(cfg, conn);
        case ROUTE_NONE:
                break;
        }
        return MHD_NO;
}

void oai_http_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe) {
        struct conn *c = *con_cls;
        (void)cls;
        (void)conn;
        (void)toe;
        if (c) {
                oai_buf_free(&c->body);
                free(c);
                *con_cls = NULL;
        }
}
