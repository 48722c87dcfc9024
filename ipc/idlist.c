/* Token-id lists as command-line text (see idlist.h). */
#include "config.h"

#include "ipc/idlist.h"

#include <errno.h>
#include <stdlib.h>

int dsv_parse_id_list(const char *s, int32_t **ret, size_t *n) {
        size_t cap = 16, k = 0;
        int32_t *v = malloc(cap * sizeof(*v));
        if (!v)
                return -ENOMEM;
        while (*s) {
                char *end;
                long x;
                errno = 0;
                x = strtol(s, &end, 10);
                if (errno || end == s || x < 0 || x > INT32_MAX || (*end && *end != ',' && *end != ' ')) {
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
                s = *end ? end + 1 : end;
        }
        *ret = v;
        *n = k;
        return 0;
}
