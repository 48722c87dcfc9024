/* Data-parallel attention's pass protocol (model.h, dsv_model_opts.dp): before every
 * collective call the ranks agree on its kind (forward, MTP, end) and the largest pass count,
 * so a rank with fewer passes or none runs idle ones (dsv_fwd_dp_idle, ffn.c: only the MoE
 * dispatches); a rank that holds no sequence follows the others until one ends. */
#include "config.h"

#include "daemon/model/internal.h"

int dsv_fwd_dp_agree(struct dsv_model *m, enum dp_kind kind, int n, enum dp_kind *agreed, struct dsv_error *err) {
        /* the largest passes, the largest kind, and minus the smallest kind of the callers */
        int32_t v[3] = {n, kind, kind == DP_FOLLOW ? INT32_MIN : -(int32_t)kind};
        int r = dsv_comm_all_reduce(m->ep, v, v, 3, DSV_I32, DSV_REDUCE_LARGEST);
        if (r < 0)
                return dsv_error_set(err, r, "data-parallel ranks cannot agree on the passes (rank %d of %d): %s", m->ep->rank,
                                     m->ep->size, dsv_comm_why(m->ep, r));
        if (v[1] == DP_FOLLOW || v[1] != -v[2] || v[1] > DP_END || v[0] < 0) {
                dsv_comm_abort(m->ep);
                return dsv_error_set(err, EPROTO, "data-parallel ranks made different calls (kinds %d and %d): the group is "
                                                  "out of step", v[1], v[2] == INT32_MIN ? 0 : -v[2]);
        }
        if (agreed)
                *agreed = (enum dp_kind)v[1];
        return v[0];
}

int dsv_model_dp_follow(struct dsv_model *m, struct dsv_error *err) {
        if (!m->dp)
                return dsv_error_set(err, EINVAL, "the model's attention is not data-parallel");
        for (;;) {
                enum dp_kind kind;
                int r, n = dsv_fwd_dp_agree(m, DP_FOLLOW, 0, &kind, err);
                if (n < 0)
                        return n;
                if (kind == DP_END)
                        return 0;
                const int first = kind == DP_MTP ? m->cfg.num_hidden_layers : 0,
                          last = kind == DP_MTP ? m->cfg.num_hidden_layers : m->cfg.num_hidden_layers - 1;
                for (int i = 0; i < n; i++)
                        if ((r = dsv_fwd_dp_idle(m, first, last, err)) < 0)
                                return r;
        }
}

int dsv_model_dp_end(struct dsv_model *m, struct dsv_error *err) {
        if (!m->dp)
                return dsv_error_set(err, EINVAL, "the model's attention is not data-parallel");
        int r = dsv_fwd_dp_agree(m, DP_END, 0, NULL, err);
        return r < 0 ? r : 0;
}
