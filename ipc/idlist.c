/* Token-id lists as command-line text (see idlist.h). */
#include "config.h"

#include "ipc/idlist.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

int dsv_parse_id_list(const char *s, int32_t **ret, size_t *n) {
        size_t cap = 16, k = 0;
        int32_t *v = malloc(cap * sizeof(*v));
        bool need = false; /* a comma was read: an id must follow */
        if (!v)
                return -ENOMEM;
        for (;;) {
                char *end;
                long x;
                while (isspace((unsigned char)*s))
                        s++;
                if (!*s && !need)
                        break;
                errno = 0;
                x = isdigit((unsigned char)*s) ? strtol(s, &end, 10) : (end = (char *)s, 0);
                if (errno || end == s || x > INT32_MAX) {
                        free(v);
                        return -EINVAL;
                }
                if (k == cap) {
                        int32_t *v2 = realloc(v, (cap *= 2) * sizeof(*v));
                        if (!v2) {
                                free(v);
                                return -ENOMEM;
                        }
                        v = v2;
                }
                v[k++] = (int32_t)x;
                s = end;
                /* separators: a comma, white space, or both ("1, 2") */
                need = false;
                if (*s && !isspace((unsigned char)*s) && *s != ',') {
                        free(v);
                        return -EINVAL;
                }
                while (isspace((unsigned char)*s))
                        s++;
                if (*s == ',') {
                        s++;
                        need = true;
                }
        }
        *ret = v;
        *n = k;
        return 0;
}
