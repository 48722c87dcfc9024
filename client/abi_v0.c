/* The unsized entry points of libdsv32.so.0 as version 0.1.0 exported them, for programs
 * built against that dsv32.h (see abi_v0.h): each fills the struct at its 0.1.0 size. The
 * parentheses around the names keep dsv32.h's macros of the same names from expanding. */
#include "config.h"

#include "client/abi_v0.h"

#define API __attribute__((visibility("default")))

API int(dsv32_get_info)(dsv32_client *c, struct dsv32_info *ret) { return dsv32_get_info_sized(c, ret, DSV32_V0_SIZE_INFO); }

API int(dsv32_get_wait_stats)(dsv32_client *c, struct dsv32_wait_stats *ret) {
        return dsv32_get_wait_stats_sized(c, ret, DSV32_V0_SIZE_WAIT_STATS);
}

API int(dsv32_generate)(dsv32_client *c, const struct dsv32_request *req, dsv32_token_cb cb, void *userdata,
                        struct dsv32_result *result) {
        return dsv32_generate_sized(c, req, cb, userdata, result, DSV32_V0_SIZE_RESULT);
}

API int(dsv32_poll_events)(dsv32_client *c, struct dsv32_event *events, size_t max) {
        return dsv32_poll_events_sized(c, events, max, DSV32_V0_SIZE_EVENT);
}

API int(dsv32_session_open)(dsv32_client *c, const char *name, uint32_t flags, struct dsv32_session_info *ret) {
        return dsv32_session_open_sized(c, name, flags, ret, DSV32_V0_SIZE_SESSION_INFO);
}

API int(dsv32_session_close)(dsv32_client *c, const char *name, struct dsv32_session_info *ret) {
        return dsv32_session_close_sized(c, name, ret, DSV32_V0_SIZE_SESSION_INFO);
}

API int(dsv32_session_pin)(dsv32_client *c, const char *name, int pin, struct dsv32_session_info *ret) {
        return dsv32_session_pin_sized(c, name, pin, ret, DSV32_V0_SIZE_SESSION_INFO);
}

API int(dsv32_stats)(dsv32_client *c, struct dsv32_stats *ret) { return dsv32_stats_sized(c, ret, DSV32_V0_SIZE_STATS); }
