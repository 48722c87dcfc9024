/* The stop-string matcher (see stop.h). */
#include "config.h"

#include "daemon/engine/stop.h"

#include <errno.h>
#include <string.h>

int dsv_stop_init(struct dsv_stop *m, const char *const *s, const uint32_t *len, uint32_t n) {
        if (n > DSV_STOP_MAX_STRINGS)
                return -EINVAL;
        for (uint32_t i = 0; i < n; i++)
                if (len[i] == 0 || len[i] > DSV_STOP_MAX_BYTES)
                        return -EINVAL;
        memset(m, 0, sizeof(*m));
        m->n = n;
        m->matched = -1;
        for (uint32_t i = 0; i < n; i++) {
                memcpy(m->s[i], s[i], len[i]);
                m->len[i] = (uint8_t)len[i];
        }
        return 0;
}

/* Byte k of the stream window: the held tail, then the new bytes. */
static inline char at(const struct dsv_stop *m, const char *p, size_t k) {
        return k < m->n_held ? m->held[k] : p[k - m->n_held];
}

static bool ends_with(const struct dsv_stop *m, const char *p, size_t end, uint32_t i) {
        size_t L = m->len[i];
        if (end < L)
                return false;
        for (size_t j = 0; j < L; j++)
                if (at(m, p, end - L + j) != m->s[i][j])
                        return false;
        return true;
}

/* Does the window's tail of k bytes (ending at w) begin some stop string? */
static bool tail_is_prefix(const struct dsv_stop *m, const char *p, size_t w, size_t k) {
        for (uint32_t i = 0; i < m->n; i++) {
                size_t j;
                if (m->len[i] <= k)
                        continue; /* a whole string would have matched */
                for (j = 0; j < k && at(m, p, w - k + j) == m->s[i][j]; j++)
                        ;
                if (j == k)
                        return true;
        }
        return false;
}

/* Appends window bytes [from, to) to out. */
static int emit(const struct dsv_stop *m, const char *p, size_t from, size_t to, struct dsv_strbuf *out) {
        int r;
        if (from < m->n_held && (r = dsv_strbuf_add(out, m->held + from, MIN(to, (size_t)m->n_held) - from)) < 0)
                return r;
        from = MAX(from, (size_t)m->n_held);
        return to > from ? dsv_strbuf_add(out, p + (from - m->n_held), to - from) : 0;
}

int dsv_stop_feed(struct dsv_stop *m, const char *p, size_t n, struct dsv_strbuf *out) {
        const size_t w = m->n_held + n;
        size_t k;
        int r;

        if (m->matched >= 0 || n == 0)
                return m->matched >= 0 ? m->matched : -1;
        if (m->n == 0)
                return (r = dsv_strbuf_add(out, p, n)) < 0 ? r : -1;
        /* the first end offset at which a string completes; at that end the longest one */
        for (size_t end = m->n_held + 1; end <= w; end++) {
                int best = -1;
                for (uint32_t i = 0; i < m->n; i++)
                        if (ends_with(m, p, end, i) && (best < 0 || m->len[i] > m->len[best]))
                                best = (int)i;
                if (best >= 0) {
                        if ((r = emit(m, p, 0, end - m->len[best], out)) < 0)
                                return r;
                        m->matched = best;
                        m->n_held = 0;
                        return best;
                }
        }
        /* no match: hold the longest tail that could still begin one */
        for (k = MIN(w, (size_t)DSV_STOP_MAX_BYTES - 1); k > 0 && !tail_is_prefix(m, p, w, k); k--)
                ;
        if ((r = emit(m, p, 0, w - k, out)) < 0)
                return r;
        {
                char tail[DSV_STOP_MAX_BYTES];
                for (size_t j = 0; j < k; j++)
                        tail[j] = at(m, p, w - k + j);
                memcpy(m->held, tail, k);
                m->n_held = (uint32_t)k;
        }
        return -1;
}

int dsv_stop_finish(struct dsv_stop *m, struct dsv_strbuf *out) {
        int r = 0;
        if (m->matched < 0 && m->n_held)
                r = dsv_strbuf_add(out, m->held, m->n_held);
        m->n_held = 0;
        return r < 0 ? r : 0;
}
