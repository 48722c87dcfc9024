/* One backend op per call (see internal.h): the helpers every part of the forward pass
 * uses to issue ops and to name a failing op in the error. */
#include "config.h"

#include <errno.h>
#include <math.h>

#include "daemon/model/internal.h"
#include "kernels/numerics.h"

struct dsv_tensor dsv_view_rows(const struct dsv_tensor *t, int64_t r0, int64_t n) {
        struct dsv_tensor v = *t;
        v.data = (uint8_t *)t->data + (size_t)r0 * t->stride;
        v.ne[1] = n;
        return v;
}

int dsv_wkv_b_decode(const struct layer *l, bool direct, struct dsv_tensor *ret, struct dsv_tensor *scale_view) {
        const struct dsv_tp_slice *sl = &l->kv_sl;
        struct dsv_tensor w = direct ? *l->wkv_b : l->wkv_b_deq;
        if (sl->dim < 0) {
                *ret = w;
                return 0;
        }
        const int64_t r0 = sl->lo - sl->a0, n = sl->hi - sl->lo;
        if (w.type == DSV_F8_E4M3) {
                if (r0 % DSV_QBLOCK != 0 || !w.scale)
                        return -EINVAL;
                *scale_view = dsv_view_rows(w.scale, r0 / DSV_QBLOCK, (n + DSV_QBLOCK - 1) / DSV_QBLOCK);
                w.scale = scale_view;
        }
        *ret = dsv_view_rows(&w, r0, n);
        return 0;
}

struct dsv_tensor dsv_view_cols(const struct dsv_tensor *t, int64_t c0, int64_t n) {
        struct dsv_tensor v = *t;
        v.data = (uint8_t *)t->data + (size_t)c0 * dsv_dtype_size(t->type);
        v.ne[0] = n;
        return v;
}

int dsv_fwd_run(struct fwd *F, struct dsv_op *op) {
        op->faithful = F->f;
        int r = dsv_backend_compute(F->m->be, op);
        if (r < 0)
                return dsv_error_set(F->err, r, "%s backend: op %s failed: %s", F->m->be->ops->name, dsv_op_name(op->type),
                                     strerror(-r));
        return 0;
}

int dsv_fwd_linear(struct fwd *F, struct dsv_tensor *out, const struct dsv_tensor *x, const struct dsv_tensor *w) {
        struct dsv_op op = {.type = DSV_OP_LINEAR};
        op.linear = (struct dsv_op_linear){.out = out, .x = x, .w = w, .quant_in = F->f, .round_out = F->f};
        return dsv_fwd_run(F, &op);
}

int dsv_fwd_rmsnorm(struct fwd *F, struct dsv_tensor *out, struct dsv_tensor *res, const struct dsv_tensor *x,
                   const struct dsv_tensor *w) {
        struct dsv_op op = {.type = DSV_OP_RMSNORM};
        op.rmsnorm = (struct dsv_op_rmsnorm){.out = out, .res = res, .x = x, .w = w, .eps = (float)F->m->cfg.rms_norm_eps};
        return dsv_fwd_run(F, &op);
}

int dsv_fwd_rope(struct fwd *F, struct dsv_tensor *x, int n_heads, int stride, int offset, bool interleaved) {
        struct dsv_op op = {.type = DSV_OP_ROPE};
        op.rope = (struct dsv_op_rope){.x = x, .pos = &F->m->ws.pos, .inv_freq = &F->m->inv_freq, .n_heads = n_heads,
                                       .head_stride = stride, .offset = offset,
                                       .rope_dim = F->m->cfg.qk_rope_head_dim, .interleaved = interleaved};
        return dsv_fwd_run(F, &op);
}

int dsv_fwd_download(struct fwd *F, void *dst, const void *src, size_t n) {
        return F->m->be->ops->download(F->m->be, dst, src, n);
}
void dsv_fwd_fetch_free(struct dsv_model *m) {
        struct fetch_buf *b = &m->fetch;
        if (b->p && b->host)
                m->be->ops->free_host(m->be, b->p, b->bytes);
        else
                free(b->p);
        if (b->ev)
                m->be->ops->event_free(m->be, b->ev);
        memset(b, 0, sizeof(*b));
}

static int fetch_grow(struct dsv_model *m, size_t n) {
        struct fetch_buf *b = &m->fetch;
        struct dsv_backend *be = m->be;
        const bool host = dsv_backend_has_async_download(be);
        void *ev = b->ev;
        int r;
        if (b->p && n <= b->bytes)
                return 0;
        b->ev = NULL; /* kept across the regrowth */
        dsv_fwd_fetch_free(m);
        n = ALIGN_UP(n, (size_t)1 << 20);
        if (host) {
                if (!ev && (r = be->ops->event_new(be, &ev)) < 0)
                        return r;
                b->ev = ev;
                if ((r = be->ops->alloc_host(be, n, &b->p)) < 0) {
                        b->p = NULL;
                        return r;
                }
        } else if (!(b->p = malloc(n)))
                return -ENOMEM;
        b->bytes = n;
        b->host = host;
        return 0;
}

int dsv_fwd_fetch(struct fwd *F, const void *src, size_t n, const void **ret) {
        struct dsv_model *m = F->m;
        struct dsv_backend *be = m->be;
        int r;
        if (be->host_memory) {
                *ret = src;
                return 0;
        }
        if ((r = fetch_grow(m, n)) < 0)
                return r;
        if (!m->fetch.host)
                r = be->ops->download(be, m->fetch.p, src, n);
        else if ((r = be->ops->download_async(be, m->fetch.p, src, n)) >= 0 && (r = be->ops->event_record(be, m->fetch.ev)) >= 0)
                r = be->ops->event_wait(be, m->fetch.ev);
        if (r < 0)
                return r;
        *ret = m->fetch.p;
        return 0;
}

int dsv_fwd_upload(struct fwd *F, void *dst, const void *src, size_t n) {
        return F->m->be->ops->upload(F->m->be, dst, src, n);
}
