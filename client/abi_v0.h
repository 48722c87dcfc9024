/* The layouts of the structs libdsv32 fills, as libdsv32.so.0 first shipped them (dsv32.h
 * of version 0.1.0, kept whole in tests/abi/dsv32-v0.h). A program built against that
 * header calls the unsized entry points (dsv32_stats, dsv32_poll_events, ...) with these
 * sizes; abi_v0.c forwards them to the *_sized functions. These definitions never change:
 * the current structs must start with exactly these fields (checked below). */
#pragma once

#include <assert.h>
#include <stddef.h>

#include "client/dsv32.h"

struct dsv32_v0_info {
        char daemon_version[32];
        uint32_t protocol_major, protocol_minor;
        uint32_t daemon_pid;
        enum dsv32_state state;
        char model[256];
        int32_t vocab_size, bos_id, eos_id, max_context;
        uint32_t features;
        uint32_t max_tokens_limit, max_prompt_bytes;
        uint32_t max_request_bytes, max_reply_bytes;
};

struct dsv32_v0_wait_stats {
        uint64_t waits, spins_won, sleeps, doorbells;
};

struct dsv32_v0_result {
        enum dsv32_finish finish;
        struct dsv32_usage usage;
};

struct dsv32_v0_event {
        enum dsv32_event_type type;
        uint64_t id;
        const int32_t *tokens;
        size_t n_tokens;
        const char *text;
        size_t text_len;
        enum dsv32_finish finish;
        struct dsv32_usage usage;
        int error;
        const char *message;
};

struct dsv32_v0_session_info {
        uint32_t flags, n_tokens, n_pages;
};

struct dsv32_v0_stats {
        enum dsv32_state state;
        uint32_t daemon_pid;
        uint64_t uptime_ms;
        uint32_t load_permille;
        char daemon_version[32];
        char model[256];
        char backend[16];
        char numerics[16];
        uint32_t threads;
        int32_t vocab_size, n_layers, max_context;
        uint64_t weight_bytes;
        uint64_t kv_pages_total, kv_pages_used, kv_page_tokens, kv_bytes_per_token;
        uint64_t rss_bytes;
        uint32_t clients, requests_running, requests_waiting, requests_parked;
        uint64_t requests_total, prompt_tokens_total, generated_tokens_total, steps_total;
        float prefill_tokens_per_s, decode_tokens_per_s;
        uint64_t loop_wakeups, loop_sleeps, doorbells_sent, doorbells_received;
        uint32_t spin_us;
        uint32_t features;
        uint32_t sessions, sessions_pinned;
        uint64_t session_pages;
        uint64_t cached_tokens_total;
        uint64_t sessions_evicted;
};

#define DSV32_V0_SIZE_INFO sizeof(struct dsv32_v0_info)
#define DSV32_V0_SIZE_WAIT_STATS sizeof(struct dsv32_v0_wait_stats)
#define DSV32_V0_SIZE_RESULT sizeof(struct dsv32_v0_result)
#define DSV32_V0_SIZE_EVENT sizeof(struct dsv32_v0_event)
#define DSV32_V0_SIZE_SESSION_INFO sizeof(struct dsv32_v0_session_info)
#define DSV32_V0_SIZE_STATS sizeof(struct dsv32_v0_stats)

/* the current structs begin with the v0 layout */
#define DSV32_V0_PREFIX(cur, v0, last)                                                                 \
        static_assert(sizeof(struct v0) <= sizeof(struct cur) &&                                       \
                              offsetof(struct v0, last) == offsetof(struct cur, last),                 \
                      #cur " must start with the layout of libdsv32.so.0 0.1.0")
DSV32_V0_PREFIX(dsv32_info, dsv32_v0_info, max_reply_bytes);
DSV32_V0_PREFIX(dsv32_wait_stats, dsv32_v0_wait_stats, doorbells);
DSV32_V0_PREFIX(dsv32_result, dsv32_v0_result, usage);
DSV32_V0_PREFIX(dsv32_event, dsv32_v0_event, message);
DSV32_V0_PREFIX(dsv32_session_info, dsv32_v0_session_info, n_pages);
DSV32_V0_PREFIX(dsv32_stats, dsv32_v0_stats, sessions_evicted);
DSV32_V0_PREFIX(dsv32_stats, dsv32_v0_stats, prefill_tokens_per_s);
DSV32_V0_PREFIX(dsv32_event, dsv32_v0_event, usage);

/* The entry points of 0.1.0 (the names dsv32.h now defines as macros), for abi_v0.c. */
int(dsv32_get_info)(dsv32_client *c, struct dsv32_info *ret);
int(dsv32_get_wait_stats)(dsv32_client *c, struct dsv32_wait_stats *ret);
int(dsv32_generate)(dsv32_client *c, const struct dsv32_request *req, dsv32_token_cb cb, void *userdata,
                    struct dsv32_result *result);
int(dsv32_poll_events)(dsv32_client *c, struct dsv32_event *events, size_t max);
int(dsv32_session_open)(dsv32_client *c, const char *name, uint32_t flags, struct dsv32_session_info *ret);
int(dsv32_session_close)(dsv32_client *c, const char *name, struct dsv32_session_info *ret);
int(dsv32_session_pin)(dsv32_client *c, const char *name, int pin, struct dsv32_session_info *ret);
int(dsv32_stats)(dsv32_client *c, struct dsv32_stats *ret);
