/* The CUDA backend's vtable outside the ops: memory (zero-size and odd-size buffers,
 * unaligned copies, pinned staging, asynchronous downloads ordered behind earlier work and
 * refused while a graph records), fill, errors a kernel can only see on the device
 * (an embedding id or a KV slot out of range reported by synchronize() as -EINVAL, cleared
 * afterwards, reported again the next time; by the event wait after a download_async), ops without their tensors refused, describe (the FP8
 * linear and MoE paths the start-up probes chose)/last_error. */
#include "config.h"

#include "tests/gpu/gputest.h"

static struct gt g;

int main(void) {
        int r = gt_open(&g, "test-gpu-backend");
        if (r)
                return r;
        struct dsv_backend *be = g.be[1];
        const char *desc = dsv_backend_describe(be);
        printf("backend: %s\n", desc);
        CHECK(!be->host_memory, "CUDA memory is not host memory");
        /* the start-up probes ran and say which paths serve; the emulation offers no FP8
         * block-scaled cuBLASLt algorithm, so the plugin's own kernels must be the ones named */
        CHECK(strstr(desc, "; FP8 linear: ") && strstr(desc, "; MoE: grouped FP8 kernel ("), "describe names the FP8 and MoE paths");
        if (g.emulated)
                CHECK(strstr(desc, "FP8 block-scaled batch: not offered)") != NULL,
                      "the emulated cuBLASLt offers no FP8 block-scaled batch to the MoE probe");

        /* memory round trips */
        void *z = NULL, *d = NULL, *h = NULL;
        CHECK(be->ops->alloc(be, 0, &z) == 0 && z, "zero-size alloc");
        be->ops->dealloc(be, z, 0);
        const size_t n = (3u << 20) + 13;
        uint8_t *src = malloc(n), *dst = malloc(n);
        REQUIRE(src && dst, "oom");
        for (size_t i = 0; i < n; i++)
                src[i] = (uint8_t)dsv_mix64(i);
        REQUIRE(be->ops->alloc(be, n + 64, &d) == 0, "alloc");
        CHECK(be->ops->fill(be, d, 0x5a, n + 64) == 0, "fill");
        CHECK(be->ops->upload(be, (uint8_t *)d + 7, src + 3, n - 3) == 0, "unaligned upload");
        memset(dst, 0, n);
        CHECK(be->ops->download(be, dst, d, 7) == 0, "download head");
        int head_ok = 1;
        for (int i = 0; i < 7; i++)
                head_ok &= dst[i] == 0x5a;
        CHECK(head_ok, "fill pattern before the upload kept");
        CHECK(be->ops->download(be, dst + 3, (uint8_t *)d + 7, n - 3) == 0, "unaligned download");
        CHECK(memcmp(dst + 3, src + 3, n - 3) == 0, "round trip");
        if (be->ops->alloc_host) {
                CHECK(be->ops->alloc_host(be, n, &h) == 0 && h, "alloc_host");
                if (h) {
                        memcpy(h, src, n);
                        CHECK(be->ops->upload(be, d, h, n) == 0, "upload from pinned memory");
                        memset(h, 0, n); /* upload returned: the source may be reused */
                        CHECK(be->ops->download(be, dst, d, n) == 0, "download");
                        CHECK(memcmp(dst, src, n) == 0, "pinned round trip");
                        be->ops->free_host(be, h, n);
                }
        }
        /* asynchronous downloads: queued behind the work before them (a fill here), the
         * bytes there once an event recorded after them has been waited for */
        CHECK(dsv_backend_has_async_download(be), "the CUDA backend downloads asynchronously");
        if (dsv_backend_has_async_download(be)) {
                void *ev = NULL;
                REQUIRE(be->ops->alloc_host(be, n, &h) == 0 && h && be->ops->event_new(be, &ev) == 0, "alloc_host, event");
                memset(h, 0, n);
                CHECK(be->ops->fill(be, (uint8_t *)d + 5, 0x33, n - 5) == 0, "fill before the download");
                CHECK(be->ops->download_async(be, h, d, n) == 0, "download_async");
                CHECK(be->ops->event_record(be, ev) == 0 && be->ops->event_wait(be, ev) == 0, "event after the download");
                int ok = memcmp(h, src, 5) == 0;
                for (size_t i = 5; i < n; i++)
                        ok &= ((uint8_t *)h)[i] == 0x33;
                CHECK(ok, "download_async saw the upload and then the fill queued before it");
                CHECK(be->ops->download_async(be, h, d, 0) == 0 && be->ops->event_record(be, ev) == 0 &&
                              be->ops->event_wait(be, ev) == 0,
                      "an empty download_async");
                /* nothing may wait for the device while a graph records */
                if (dsv_backend_has_graphs(be) && be->ops->graph_begin(be) == 0) {
                        void *graph = NULL;
                        CHECK(be->ops->download_async(be, h, d, 64) == -EBUSY, "download_async refused while recording");
                        CHECK(be->ops->event_record(be, ev) == -EBUSY, "event_record refused while recording");
                        be->ops->graph_end(be, false, &graph);
                        be->ops->graph_free(be, graph);
                }
                be->ops->free_host(be, h, n);
                h = NULL;
                be->ops->event_free(be, ev);
        }
        be->ops->dealloc(be, d, n + 64);

        /* device-side index errors */
        struct gbuf table, ids, out;
        uint16_t tb[4 * 8];
        int32_t bad_ids[3] = {1, 4, -1};
        for (int i = 0; i < 32; i++)
                tb[i] = dsv_f32_to_bf16((float)i);
        gb_new(&g, &table, DSV_BF16, 4, 8, 0);
        gb_new(&g, &ids, DSV_I32, 1, 3, 0);
        gb_new(&g, &out, DSV_F32, 3, 8, 0);
        gb_set(&g, &table, tb);
        gb_set(&g, &ids, bad_ids);
        struct dsv_op op = {.type = DSV_OP_EMBED};
        op.embed = (struct dsv_op_embed){.out = &out.t[1], .table = &table.t[1], .ids = &ids.t[1]};
        r = be->ops->compute(be, &op);
        int s = be->ops->synchronize(be);
        CHECK(r == -EINVAL || s == -EINVAL, "an embedding id out of range is reported (compute %d, synchronize %d)", r, s);
        printf("  reported as: %s\n", dsv_backend_last_error(be));
        /* at once a second time: clearing the error word must be ordered before the backend's
         * next kernels (on its stream, not left on another one) */
        r = be->ops->compute(be, &op);
        s = be->ops->synchronize(be);
        CHECK(r == -EINVAL || s == -EINVAL, "the same error right after is reported again (compute %d, synchronize %d)", r, s);
        CHECK(be->ops->synchronize(be) == 0, "the error is reported once");
        if (dsv_backend_has_async_download(be)) {
                /* the wait of an asynchronous download of what the failing op wrote reports it */
                void *ev = NULL, *hb = NULL;
                REQUIRE(be->ops->alloc_host(be, 4096, &hb) == 0 && be->ops->event_new(be, &ev) == 0, "alloc_host, event");
                r = be->ops->compute(be, &op);
                int dl = be->ops->download_async(be, hb, out.t[1].data, 3 * 8 * sizeof(float));
                int ew = be->ops->event_record(be, ev) == 0 ? be->ops->event_wait(be, ev) : -999;
                CHECK(r == -EINVAL || (dl == 0 && ew == -EINVAL),
                      "an embedding id out of range is reported by the download's event (compute %d, download_async %d, wait %d)", r, dl,
                      ew);
                CHECK(be->ops->synchronize(be) == 0, "and only there");
                be->ops->event_free(be, ev);
                be->ops->free_host(be, hb, 4096);
        }
        int32_t good_ids[3] = {0, 3, 2};
        gb_set(&g, &ids, good_ids);
        CHECK(be->ops->compute(be, &op) == 0 && be->ops->synchronize(be) == 0, "the backend works on after an error");
        float o[24];
        gb_get(&g, &out, 1, o, "embed");
        CHECK(o[8] == 24.0f && o[23] == 23.0f, "embedding rows %g %g", o[8], o[23]);

        gb_free(&g, &table);
        gb_free(&g, &ids);
        gb_free(&g, &out);

        /* an op without its tensors is refused, not run */
        struct dsv_op moe = {.type = DSV_OP_MOE_GROUPED};
        CHECK(!be->ops->supports_op(be, &moe), "an empty moe_grouped op not claimed");
        CHECK(be->ops->compute(be, &moe) == -EINVAL, "an empty moe_grouped op refused");
        struct dsv_op gate = {.type = DSV_OP_MOE_GATE};
        CHECK(!be->ops->supports_op(be, &gate) && be->ops->compute(be, &gate) == -EINVAL, "an empty moe_gate op refused");

        /* a second backend on the same device */
        struct dsv_backend *b2;
        struct dsv_error err;
        CHECK(dsv_backend_open("cuda", NULL, &b2, &err) == 0, "second backend: %s", err.msg);
        dsv_backend_free(b2);
        CHECK(dsv_backend_open("cuda", &(struct dsv_backend_opts){.device = 999}, &b2, &err) < 0, "device 999 refused");
        printf("  device 999: %s\n", err.msg);

        free(src);
        free(dst);
        gt_close(&g);
        return test_result("test-gpu-backend");
}
