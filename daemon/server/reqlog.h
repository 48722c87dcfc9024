/* One log line per generation request, at info level: who asked (uid, pid, client name,
 * request id, session), what it cost (prompt, reused and generated tokens; queue, prefill
 * and decode time) and how it ended (finish reason, or the error and its message, or the
 * refusal by the event loop). Under systemd (JOURNAL_STREAM set) the line goes to the
 * journal with each value as a field too (DSV32_UID=, DSV32_PROMPT_TOKENS=, ...; see
 * dsv32d(8)), so `journalctl DSV32_UID=1000` finds one user's requests. Called from the
 * event loop (refusals) and the engine thread (the rest): thread-safe. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct dsv_reqlog {
        uid_t uid;
        pid_t pid;
        const char *client;  /* the client's name from HELLO */
        uint64_t id;         /* the request id on its connection */
        const char *session; /* "" or NULL: none */
        uint32_t prompt_tokens, cached_tokens, generated_tokens;
        uint64_t queue_us, prefill_us, decode_us;
        uint32_t finish;     /* enum dsv_finish, when error == 0 */
        int error;           /* positive errno: the request failed (refused: it never ran) */
        bool refused;        /* refused by the event loop before the engine saw it */
        const char *message; /* the error's text */
};

void dsv_reqlog(const struct dsv_reqlog *r);
