/* One log line per request (see reqlog.h). */
#include "config.h"

#include "daemon/server/reqlog.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <systemd/sd-journal.h>

#include "daemon/util.h"
#include "ipc/proto.h"

void dsv_reqlog(const struct dsv_reqlog *r) {
        const char *session = r->session && r->session[0] ? r->session : NULL;
        char line[1600], who[200], outcome[1200];

        if (DSV_LOG_INFO > dsv_log_max_level)
                return;
        snprintf(who, sizeof(who), "Request %llu of pid %d uid %u (%s)%s%s", (unsigned long long)r->id, (int)r->pid,
                 (unsigned)r->uid, r->client && r->client[0] ? r->client : "unnamed", session ? " on session " : "",
                 session ? session : "");
        if (r->refused)
                snprintf(outcome, sizeof(outcome), "refused, %s: %s", dsv_errno_name(r->error), r->message ? r->message : "");
        else if (r->error)
                snprintf(outcome, sizeof(outcome), "failed, %s: %s", dsv_errno_name(r->error), r->message ? r->message : "");
        else
                snprintf(outcome, sizeof(outcome), "finished (%s)", dsv_finish_name(r->finish));
        if (r->refused)
                snprintf(line, sizeof(line), "%s: %s", who, outcome);
        else
                snprintf(line, sizeof(line),
                         "%s: %s; %u prompt tokens (%u reused), %u generated; queued %.1f ms, prefill %.1f ms, decode %.1f ms",
                         who, outcome, r->prompt_tokens, r->cached_tokens, r->generated_tokens, r->queue_us / 1e3,
                         r->prefill_us / 1e3, r->decode_us / 1e3);
        /* under systemd: the journal, with the values as fields; else (or if that fails) stderr */
        if (getenv("JOURNAL_STREAM") &&
            sd_journal_send("MESSAGE=%s", line, "PRIORITY=%d", DSV_LOG_INFO, "SYSLOG_IDENTIFIER=dsv32d", "DSV32_UID=%u",
                            (unsigned)r->uid, "DSV32_PID=%d", (int)r->pid, "DSV32_CLIENT=%s", r->client ? r->client : "",
                            "DSV32_REQUEST_ID=%llu", (unsigned long long)r->id, "DSV32_SESSION=%s", session ? session : "",
                            "DSV32_PROMPT_TOKENS=%u", r->prompt_tokens, "DSV32_CACHED_TOKENS=%u", r->cached_tokens,
                            "DSV32_GENERATED_TOKENS=%u", r->generated_tokens, "DSV32_QUEUE_US=%llu",
                            (unsigned long long)r->queue_us, "DSV32_PREFILL_US=%llu", (unsigned long long)r->prefill_us,
                            "DSV32_DECODE_US=%llu", (unsigned long long)r->decode_us, "DSV32_OUTCOME=%s",
                            r->refused ? "refused" : r->error ? "failed" : dsv_finish_name(r->finish), "DSV32_ERROR=%s",
                            r->error ? dsv_errno_name(r->error) : "", NULL) >= 0)
                return;
        dsv_log(DSV_LOG_INFO, "%s", line);
}
