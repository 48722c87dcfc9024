/* libFuzzer target: the cluster bootstrap's frame decoder (daemon/cluster/wire.c), fed the
 * bytes a hostile peer could send, frame after frame as the monitor consumes them. */
#include "config.h"

#include <string.h>

#include "daemon/cluster/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        struct dsv_wire_msg m;
        size_t off = 0;
        while (off < size) {
                int d = dsv_wire_decode(data + off, size - off, &m);
                if (d <= 0)
                        break;
                if ((size_t)d > size - off)
                        __builtin_trap(); /* a frame longer than the bytes it came from */
                /* what the caller reads stays inside the frame */
                const uint8_t *end = data + off + (size_t)d;
                if (m.type == DSV_WIRE_HELLO && (m.hello.config + m.hello.config_len > (const char *)end ||
                                                 m.hello.fingerprint + DSV_FINGERPRINT_BYTES > end))
                        __builtin_trap();
                if (m.type == DSV_WIRE_WELCOME && m.welcome.id + m.welcome.id_len > end)
                        __builtin_trap();
                if (m.type == DSV_WIRE_REFUSE && memchr(m.refuse.text, 0, m.refuse.text_len))
                        __builtin_trap();
                off += (size_t)d;
        }
        return 0;
}
