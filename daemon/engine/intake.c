/* Prompt intake (see intake.h). */
#include "config.h"

#include "daemon/engine/intake.h"

#include "daemon/engine/text.h"
#include "daemon/grammar/grammar.h"

bool dsv_intake_needed(const struct dsv_engine_request *r) {
        return r->kind == DSV_REQUEST_GENERATE && ((!r->tokens && (r->text || r->messages)) || (r->schema && !r->grammar));
}

int dsv_intake_schema(struct dsv_engine_request *r, char *msg, size_t cap) {
        struct dsv_error err = {{0}};
        int rc;
        if (!r->schema || r->grammar)
                return 0;
        if ((rc = dsv_grammar_compile(r->schema, r->schema_len, &r->grammar, &err)) < 0) {
                snprintf(msg, cap, "%s", err.msg[0] ? err.msg : strerror(-rc));
                return rc;
        }
        free(TAKE_PTR(r->schema));
        r->schema_len = 0;
        return 0;
}

int dsv_intake_encode(const struct dsv_text *text, struct dsv_engine_request *r, char *msg, size_t cap) {
        int32_t *ids = NULL;
        size_t n = 0;
        int rc;

        if (!dsv_intake_needed(r))
                return 0;
        if ((rc = dsv_intake_schema(r, msg, cap)) < 0)
                return rc;
        if (r->tokens)
                return 0;
        if (!text) {
                snprintf(msg, cap, "%s", dsv_text_unavailable());
                return -ENOTSUP;
        }
        if (r->text) {
                rc = dsv_text_encode(text, r->text, r->text_len, r->add_bos, &ids, &n);
                if (rc < 0) {
                        snprintf(msg, cap, "cannot tokenize the prompt: %s", strerror(-rc));
                        return rc;
                }
        } else {
                struct dsv_error err = {{0}};
                rc = dsv_text_chat(text, r->messages, r->n_messages, r->tools, r->n_tools, r->thinking, &ids, &n, &err);
                if (rc < 0) {
                        snprintf(msg, cap, "%s", err.msg[0] ? err.msg : strerror(-rc));
                        return rc;
                }
        }
        if (n > UINT32_MAX) {
                free(ids);
                snprintf(msg, cap, "the prompt has too many tokens");
                return -E2BIG;
        }
        r->tokens = ids;
        r->n_tokens = (uint32_t)n;
        free(TAKE_PTR(r->text));
        free(TAKE_PTR(r->messages));
        free(TAKE_PTR(r->tools));
        r->n_tools = 0;
        return 0;
}
