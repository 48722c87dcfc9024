/* libFuzzer target: every message decoder of the wire protocol (ipc/proto.c). The first
 * byte picks the message type, the rest is the payload. A payload that decodes must encode
 * again, and that encoding must decode to the same encoding (the codec is a fixed point
 * after one round). */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ipc/proto.h"

static const uint16_t types[] = {
        DSV_MSG_HELLO,        DSV_MSG_WELCOME,       DSV_MSG_PING,           DSV_MSG_GENERATE,
        DSV_MSG_CANCEL,       DSV_MSG_TOKENIZE,      DSV_MSG_DETOKENIZE,     DSV_MSG_STATS,
        DSV_MSG_SESSION_OPEN, DSV_MSG_SESSION_CLOSE, DSV_MSG_SESSION_PIN,    DSV_MSG_PONG,
        DSV_MSG_TOKENS,       DSV_MSG_DONE,          DSV_MSG_ERROR,          DSV_MSG_STATS_REPLY,
        DSV_MSG_TOKENIZE_REPLY, DSV_MSG_DETOKENIZE_REPLY, DSV_MSG_SESSION_REPLY, 0x7777,
        /* appended: the corpus's first bytes keep their types */
        DSV_MSG_CHAT_EVENT,   DSV_MSG_SESSION_LIST,  DSV_MSG_SESSION_SAVE,   DSV_MSG_SESSION_LIST_REPLY,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        struct dsv_msg m, m2;
        struct dsv_wbuf w1 = {0}, w2 = {0};
        char why[256];
        uint16_t type;
        uint8_t *copy;

        if (size < 1)
                return 0;
        type = types[data[0] % (sizeof(types) / sizeof(types[0]))];
        /* decode from a private copy of exactly the payload, as the daemon does */
        copy = malloc(size - 1 ? size - 1 : 1);
        if (!copy)
                return 0;
        memcpy(copy, data + 1, size - 1);
        (void)dsv_msg_peek_id(copy, size - 1);
        if (dsv_msg_decode(type, copy, size - 1, &m, why, sizeof(why)) == 0) {
                if (dsv_msg_encode(&m, &w1) == 0) {
                        if (dsv_msg_decode(type, w1.data, w1.len, &m2, why, sizeof(why)) != 0)
                                abort();
                        if (dsv_msg_encode(&m2, &w2) != 0 || w1.len != w2.len || memcmp(w1.data, w2.data, w1.len) != 0)
                                abort();
                        dsv_msg_release(&m2);
                }
                dsv_msg_release(&m);
        }
        dsv_wbuf_free(&w1);
        dsv_wbuf_free(&w2);
        free(copy);
        return 0;
}
