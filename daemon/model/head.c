/* The head: the rows whose logits are wanted go through lm_head (fp32; the MTP layer's
 * shared_head.head for drafts) and come back to the caller in batch order. The final RMSNorm
 * is the forward pass's last layer call. With tensor parallelism each rank computes the
 * logits of its vocabulary rows and the group gathers them (tp.c). */
#include "config.h"

#include "daemon/model/internal.h"

int dsv_fwd_head(struct fwd *F, const struct dsv_tensor *head, float *logits) {
        struct dsv_model *m = F->m;
        struct ws *w = &m->ws;
        const struct dsv_batch_plan *p = F->p;
        const size_t V = (size_t)m->cfg.vocab_size;
        struct dsv_tensor hout = dsv_view_rows(&w->hout, 0, p->n_out), lg = dsv_view_rows(&w->logits, 0, p->n_out);
        struct dsv_op op = {.type = DSV_OP_GET_ROWS};
        float *tmp;
        int r;

        if (p->n_out == 0)
                return 0;
        op.get_rows = (struct dsv_op_get_rows){.out = &hout, .x = &w->h, .rows = &w->out_rows};
        if ((r = dsv_fwd_run(F, &op)) < 0)
                return r;
        if (m->tp)
                lg = dsv_view_cols(&lg, 0, head->ne[1]); /* this rank's rows of the vocabulary */
        op = (struct dsv_op){.type = DSV_OP_LINEAR};
        op.linear = (struct dsv_op_linear){.out = &lg, .x = &hout, .w = head};
        if (head->ne[1] > 0 && (r = dsv_fwd_run(F, &op)) < 0)
                return r;
        /* out_rows ascend in internal rows; out_dest says where each goes. In the caller's
         * order already (a decode batch, one prompt), they come straight into logits: a
         * staging copy would be one more n_out x vocab floats at the peak (2.1 MB at 32
         * rows on the small preset, of issue 16's 1.1x RSS budget). */
        bool in_order = !m->tp;
        for (int j = 0; j < p->n_out && in_order; j++)
                in_order = p->out_dest[j] == j;
        if (in_order)
                return dsv_fwd_download(F, logits, w->logits.data, (size_t)p->n_out * V * sizeof(float));
        tmp = malloc((size_t)p->n_out * V * sizeof(float));
        if (!tmp)
                return -ENOMEM;
        r = dsv_fwd_download(F, tmp, w->logits.data, (size_t)p->n_out * V * sizeof(float));
        if (r >= 0 && m->tp)
                r = dsv_tp_gather_logits(F, tmp, p->n_out, logits);
        else if (r >= 0)
                for (int j = 0; j < p->n_out; j++)
                        memcpy(logits + (size_t)p->out_dest[j] * V, tmp + (size_t)j * V, V * sizeof(float));
        free(tmp);
        return r;
}
