/* The communicator API around the implementations (kernels/comm.c, backend_plugin.c):
 * argument checks with no communicator or a NULL one, creating groups with bad sizes, the
 * plugin entry points on a backend that has no communicator (the CPU backend), and the
 * host reduction both host communicators share: a BF16 sum rounds once (not after every
 * rank), integers wrap, maximum of negative values. */
#include "config.h"

#include "kernels/backend_plugin.h"
#include "kernels/comm.h"
#include "kernels/numerics.h"
#include "tests/check.h"

int main(void) {
        struct dsv_comm *comms[4] = {0};
        struct dsv_backend *be = NULL;
        struct dsv_error err = {{0}};
        unsigned char id[256];
        size_t len = 0, counts[2] = {1, 1};
        float f = 0;

        CHECK(dsv_comm_local_group_new(0, 100, comms) == -EINVAL, "a group of 0 ranks");
        CHECK(dsv_comm_local_group_new(2, 0, comms) == -EINVAL, "a timeout of 0");
        CHECK(dsv_comm_local_group_new(2, 100, NULL) == -EINVAL, "no output array");
        CHECK(comms[0] == NULL, "nothing written on failure");

        CHECK(dsv_comm_all_reduce(NULL, &f, &f, 1, DSV_F32, DSV_REDUCE_SUM) == -EINVAL, "all_reduce without a communicator");
        CHECK(dsv_comm_all_gather(NULL, &f, &f, 1, DSV_F32) == -EINVAL, "all_gather without a communicator");
        CHECK(dsv_comm_reduce_scatter(NULL, &f, &f, 1, DSV_F32, DSV_REDUCE_SUM) == -EINVAL, "reduce_scatter without one");
        CHECK(dsv_comm_send_recv(NULL, NULL, 0, NULL, 0, DSV_F32) == -EINVAL, "send_recv without one");
        CHECK(dsv_comm_barrier(NULL) == -EINVAL, "barrier without one");
        CHECK(dsv_comm_status(NULL) == -EINVAL, "status without one");
        CHECK(dsv_comm_all_to_allv(NULL, &f, counts, counts, &f, counts, counts, DSV_F32) == -EINVAL, "all_to_allv without one");
        dsv_comm_abort(NULL);
        dsv_comm_free(NULL);
        CHECK(strcmp(dsv_reduce_name(DSV_REDUCE_SUM), "sum") == 0 && strcmp(dsv_reduce_name(DSV_REDUCE_LARGEST), "max") == 0,
              "reduction names");
        CHECK(dsv_comm_dtype_ok(DSV_F32) && dsv_comm_dtype_ok(DSV_BF16) && dsv_comm_dtype_ok(DSV_I32) && dsv_comm_dtype_ok(DSV_U8) &&
                      !dsv_comm_dtype_ok(DSV_F16) && !dsv_comm_dtype_ok(DSV_I64) && !dsv_comm_dtype_ok(DSV_F8_E4M3),
              "the dtypes every communicator supports");

        REQUIRE(dsv_comm_local_group_new(1, 100, comms) == 0, "a group of one");
        CHECK(dsv_comm_all_to_allv(comms[0], &f, NULL, counts, &f, counts, counts, DSV_F32) == -EINVAL, "all_to_allv without counts");
        CHECK(dsv_comm_all_to_allv(comms[0], &f, counts, counts, &f, counts, counts, DSV_F16) == -EINVAL, "all_to_allv of F16");
        dsv_comm_free(comms[0]);

        /* the CPU backend has no plugin communicator */
        REQUIRE(dsv_backend_cpu_new(1, &be) == 0, "CPU backend");
        CHECK(dsv_comm_plugin_unique_id(be, id, sizeof(id), &len) == -EOPNOTSUPP, "no unique id from the CPU backend");
        CHECK(dsv_comm_open_plugin(be, id, 128, 2, 0, 1000, &comms[0], &err) == -EOPNOTSUPP && strstr(err.msg, "no communicator"),
              "no plugin communicator on the CPU backend: %s", err.msg);
        CHECK(dsv_comm_open_plugin(be, id, 128, 2, 2, 1000, &comms[0], &err) == -EINVAL && strstr(err.msg, "rank 2 of 2"),
              "rank 2 of 2: %s", err.msg);
        CHECK(dsv_comm_open_plugin(be, id, 128, 2, 0, 0, &comms[0], &err) == -EINVAL, "timeout 0: %s", err.msg);
        dsv_backend_free(be);

        {
                /* BF16: 1 + 3 x 2^-9 rounds once to 1 + 2^-7; rounding after each rank would stay at 1 */
                uint16_t rows[4] = {dsv_f32_to_bf16(1.0f), dsv_f32_to_bf16(0x1p-9f), dsv_f32_to_bf16(0x1p-9f),
                                    dsv_f32_to_bf16(0x1p-9f)},
                         out = 0;
                const void *srcs[4] = {&rows[0], &rows[1], &rows[2], &rows[3]};
                dsv_comm_reduce_rows(&out, srcs, 4, 1, DSV_BF16, DSV_REDUCE_SUM);
                CHECK(out == dsv_f32_to_bf16(1.0f + 0x1p-7f), "bf16 sum rounded once: 0x%04x", out);
        }
        {
                int32_t a = INT32_MAX, b = 1, m1 = -5, m2 = -3, out = 0;
                const void *s1[2] = {&a, &b}, *s2[2] = {&m1, &m2};
                dsv_comm_reduce_rows(&out, s1, 2, 1, DSV_I32, DSV_REDUCE_SUM);
                CHECK(out == INT32_MIN, "I32 sum wraps: %d", out);
                dsv_comm_reduce_rows(&out, s2, 2, 1, DSV_I32, DSV_REDUCE_LARGEST);
                CHECK(out == -3, "I32 maximum of negatives: %d", out);
                uint8_t x = 200, y = 100, o = 0;
                const void *s3[2] = {&x, &y};
                dsv_comm_reduce_rows(&o, s3, 2, 1, DSV_U8, DSV_REDUCE_SUM);
                CHECK(o == 44, "U8 sum wraps: %u", o);
                float p = -2.0f, q = -7.0f, r = 0;
                const void *s4[2] = {&p, &q};
                dsv_comm_reduce_rows(&r, s4, 2, 1, DSV_F32, DSV_REDUCE_LARGEST);
                CHECK(r == -2.0f, "F32 maximum of negatives: %g", r);
        }
        return test_result("test-comm-api");
}
