/* Speculative decoding's acceptance rule (see speculate.h). */
#include "config.h"

#include "daemon/runtime/speculate.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/util.h"

/* streams of dsv_sample_u01 (0 is plain sampling's) */
enum {
        STREAM_DRAFT = 0xd7af7,
        STREAM_ACCEPT = 0xacc3b7,
        STREAM_RESIDUAL = 0x7e51d,
};

int dsv_speculator_init(struct dsv_speculator *sp, int n_vocab) {
        sp->n_vocab = n_vocab;
        sp->q = calloc((size_t)n_vocab, sizeof(float));
        return sp->q ? 0 : -ENOMEM;
}

void dsv_speculator_done(struct dsv_speculator *sp) {
        free(sp->q);
        sp->q = NULL;
}

void dsv_draft_done(struct dsv_draft *d) {
        free(d->cand);
        memset(d, 0, sizeof(*d));
}

int dsv_spec_draft(struct dsv_sampler *s, const float *draft_logits, const struct dsv_sampling *p, uint64_t step,
                   struct dsv_draft *d) {
        struct dsv_dist q;
        dsv_sampler_dist(s, draft_logits, p, &q);
        if (q.n > d->cap) {
                struct dsv_cand *c = realloc(d->cand, (size_t)q.n * sizeof(*c));
                if (!c)
                        return -ENOMEM;
                d->cand = c;
                d->cap = q.n;
        }
        memcpy(d->cand, q.c, (size_t)q.n * sizeof(*q.c));
        d->n = q.n;
        d->sum = q.sum;
        d->token = q.n == 1 ? q.c[0].id : dsv_dist_draw(&q, dsv_sample_u01(p->seed, STREAM_DRAFT, step));
        return 0;
}

bool dsv_spec_verify(struct dsv_speculator *sp, struct dsv_sampler *s, const float *logits, const struct dsv_sampling *p,
                     uint64_t step, const struct dsv_draft *d, int32_t *token) {
        struct dsv_dist t;
        double pd = 0, qd = 0, resid = 0;
        bool accept;

        dsv_sampler_dist(s, logits, p, &t);
        for (int i = 0; i < d->n; i++) {
                sp->q[d->cand[i].id] = (float)(d->cand[i].p / d->sum);
                if (d->cand[i].id == d->token)
                        qd = d->cand[i].p / d->sum;
        }
        for (int i = 0; i < t.n; i++)
                if (t.c[i].id == d->token)
                        pd = t.c[i].p / t.sum;
        /* qd > 0: the draft came from q. p >= q always accepts without a draw's help */
        accept = pd >= qd || dsv_sample_u01(p->seed, STREAM_ACCEPT, step) * qd < pd;
        if (accept) {
                *token = d->token;
        } else {
                /* the residual over p's candidates (max(0, p - q) is 0 outside them), in p's order */
                for (int i = 0; i < t.n; i++)
                        resid += MAX(0.0, t.c[i].p / t.sum - sp->q[t.c[i].id]);
                double x = dsv_sample_u01(p->seed, STREAM_RESIDUAL, step) * resid, acc = 0;
                *token = -1;
                for (int i = 0; i < t.n && *token < 0; i++) {
                        double r = MAX(0.0, t.c[i].p / t.sum - sp->q[t.c[i].id]);
                        acc += r;
                        if (r > 0 && x < acc)
                                *token = t.c[i].id;
                }
                /* rounding left no mass past x: the last token with any residual (there is one:
                 * a rejection means p(d) < q(d), so p exceeds q somewhere) */
                for (int i = t.n - 1; i >= 0 && *token < 0; i--)
                        if (t.c[i].p / t.sum > sp->q[t.c[i].id])
                                *token = t.c[i].id;
                if (*token < 0)
                        *token = t.c[0].id;
        }
        for (int i = 0; i < d->n; i++)
                sp->q[d->cand[i].id] = 0;
        return accept;
}
