/* libFuzzer target: the frame decoder, i.e. what the daemon does with a submission ring a
 * hostile client controls. The input is laid over a shared-memory image: its first 8 bytes
 * are the producer's tail, the next 8 the consumer's starting head, the rest fills the
 * header area and the 4096-byte ring. Every record found is copied out and decoded; the
 * header is also run through the layout validation a client does on attach. */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ipc/proto.h"
#include "ipc/ring.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static uint8_t image[DSV_IPC_DATA_OFFSET + 2 * DSV_IPC_RING_MIN] __attribute__((aligned(64)));
        static uint8_t buf[DSV_IPC_RING_MIN];
        struct dsv_ipc_ring_ctl *ctl = (struct dsv_ipc_ring_ctl *)(image + DSV_IPC_SUB_CTL_OFFSET);
        struct dsv_ring r = {.ctl = ctl, .data = image + DSV_IPC_DATA_OFFSET, .capacity = DSV_IPC_RING_MIN,
                             .max_record = DSV_IPC_RING_MIN / 2};
        struct dsv_ipc_record h;
        struct dsv_shm shm;
        uint64_t tail = 0, head = 0;

        memset(image, 0, sizeof(image));
        if (size >= 16) {
                memcpy(&tail, data, 8);
                memcpy(&head, data + 8, 8);
                data += 16;
                size -= 16;
        }
        /* the rest: the ring's bytes first (what matters most), then the header */
        memcpy(r.data, data, size < DSV_IPC_RING_MIN ? size : DSV_IPC_RING_MIN);
        if (size > DSV_IPC_RING_MIN)
                memcpy(image, data + DSV_IPC_RING_MIN,
                       size - DSV_IPC_RING_MIN < sizeof(struct dsv_ipc_header) ? size - DSV_IPC_RING_MIN
                                                                                 : sizeof(struct dsv_ipc_header));
        (void)dsv_shm_layout_check(image, sizeof(image), &shm);
        /* keep small heads mostly in range so that records get decoded, not just refused */
        r.pos = head % (4 * DSV_IPC_RING_MIN) & ~7ull;
        ctl->tail = tail < 64 * DSV_IPC_RING_MIN ? r.pos + tail : tail;
        for (int i = 0; i < 4096; i++) {
                struct dsv_msg m;
                int k = dsv_ring_read(&r, &h, buf, sizeof(buf));
                if (k <= 0)
                        break;
                if (dsv_msg_decode(h.type, buf, h.length, &m, NULL, 0) == 0)
                        dsv_msg_release(&m);
        }
        return 0;
}
