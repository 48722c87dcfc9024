/* The server's side of the engine's sink (daemon/engine/engine.h): engine events become
 * completion-ring records of the client's connection (TOKENS, DONE, ERROR, SESSION_REPLY),
 * a client is a struct dsv_conn, and a request's end is counted against its uid. Each
 * finished request also gets one log line (info: uid, pid, id, tokens, durations, reason). */
#pragma once

#include "daemon/engine/engine.h"

/* The sink over connections (ud unused). */
extern const struct dsv_engine_sink dsv_server_sink;

/* The wire's finish reason of an engine finish reason. */
unsigned dsv_sink_finish_reason(enum dsv_engine_finish f);
