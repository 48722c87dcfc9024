/* openai_http.h: the libmicrohttpd callbacks of dsv32-openai (openai_http.c), for main. */
#pragma once

#include <microhttpd.h>

/* The access handler; cls is the struct oai_config. */
enum MHD_Result oai_http_handler(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                 const char *version, const char *upload_data, size_t *upload_data_size,
                                 void **con_cls);
/* MHD_OPTION_NOTIFY_COMPLETED: frees the per-request state. */
void oai_http_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe);
