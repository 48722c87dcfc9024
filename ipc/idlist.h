/* Token-id lists as command-line text ("3,17,42", "3 17 42", "3, 17, 42"): the one spelling
 * every program accepts (the dsv32 CLI and the offline tools). */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* Parses non-negative ids (each <= INT32_MAX) separated by a comma, white space, or both
 * ("1,2", "1 2", "1, 2") into a malloc'ed array (*ret, *n; an empty or all-blank string
 * gives n == 0). Two commas in a row, a trailing comma, a sign or any other character is
 * -EINVAL (the partial result is freed); -ENOMEM. */
int dsv_parse_id_list(const char *s, int32_t **ret, size_t *n);
