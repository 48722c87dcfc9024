/* Token-id lists as command-line text ("3,17,42" or "3 17 42"): shared by the dsv32 CLI and
 * the offline tools. */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* Parses non-negative ids (each <= INT32_MAX) separated by single commas or spaces into a
 * malloc'ed array (*ret, *n; an empty string gives n == 0). Returns 0, -EINVAL on anything
 * else (the partial result is freed), or -ENOMEM. */
int dsv_parse_id_list(const char *s, int32_t **ret, size_t *n);
