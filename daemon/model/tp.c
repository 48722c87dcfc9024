/* Tensor parallelism (the tp of the ep,tp layout, model.h dsv_model_opts.tp): which share of
 * each split tensor a rank holds, and the two collectives that put the shares back together.
 *
 *   attention   heads [h0, h1) = [r*H/n, (r+1)*H/n) (H % n == 0, else refused): q_b_proj's
 *               rows h*(nope+rope), kv_b_proj's rows h*(nope+v), o_proj's columns h*v of
 *               those heads. The MLA latent (q_a, kv_a, their norms, the KV pages) and the
 *               indexer are per token, not per head: replicated.
 *   dense MLP   the intermediate dimension I in 128-blocks, B = ceil(I/128), rank r owning
 *   and shared  blocks [r*B/n, (r+1)*B/n): gate/up rows, down columns. Uneven when n does not
 *   expert      divide B (a rank may own none: it contributes zeros).
 *   lm_head     vocabulary rows [r*Vp, (r+1)*Vp), Vp = ceil(V/n) (the last share shorter).
 *
 * FP8 block scales cover 128x128 blocks, so an FP8 tensor's share is held from the 128-block
 * boundary at or below its first row/column to the one at or above its last (a0, a1): the
 * rows/columns of that frame outside the share are zeros, never read from disk, and the
 * frame's scales are read whole. Row splits then give bit for bit the rows one rank computes
 * (a share's outputs are placed at their global columns of the full-width workspace); a
 * column split's partial sums are all-reduced in fp32 (rank order) and rounded to bf16 once
 * (faithful numerics), where one rank sums the 128-blocks in one order: the sums are
 * reordered. Where a head share does not start on a 128 boundary (test configs only: the
 * 671B model's 16 heads x 128 per rank of 8 do) the rank's act_quant of o_proj's input sees
 * the block's other columns as zeros: its scale can differ from one rank's. */
#include "config.h"

#include <assert.h>

#include "daemon/model/internal.h"
#include "kernels/numerics.h"

#define TP_BLOCK 128

int dsv_model_tp_check(const struct dsv_model_config *c, int n, struct dsv_error *err) {
        if (n < 1 || c->num_attention_heads % n != 0)
                return dsv_error_set(err, EINVAL,
                                     "%d attention heads do not split over %d tensor-parallel ranks (ep,tp gives every rank "
                                     "the same number of heads): use a rank count that divides %d",
                                     c->num_attention_heads, n, c->num_attention_heads);
        return 0;
}

/* [lo, hi) of a dimension of length len split in 128-blocks over n ranks. */
static void block_share(int64_t len, int rank, int n, int64_t *lo, int64_t *hi) {
        const int64_t B = (len + TP_BLOCK - 1) / TP_BLOCK;
        *lo = MIN(B * rank / n * TP_BLOCK, len);
        *hi = MIN(B * (rank + 1) / n * TP_BLOCK, len);
}

void dsv_tp_vocab_share(const struct dsv_model *m, int64_t *lo, int64_t *hi, int64_t *per_rank) {
        const int64_t V = m->cfg.vocab_size, n = m->ep->size, Vp = (V + n - 1) / n;
        *lo = MIN(Vp * m->ep->rank, V);
        *hi = MIN(*lo + Vp, V);
        *per_rank = Vp;
}

/* The part of a spec's name after "model.layers.<i>.", or NULL outside the layers. */
static const char *layer_suffix(const char *name) {
        if (strncmp(name, "model.layers.", 13) != 0)
                return NULL;
        const char *p = strchr(name + 13, '.');
        return p ? p + 1 : NULL;
}

void dsv_tp_slice_of(const struct dsv_model *m, const struct dsv_tensor_spec *s, enum dsv_dtype type,
                     struct dsv_tp_slice *sl) {
        const struct dsv_model_config *c = &m->cfg;
        const char *sfx = layer_suffix(s->name);
        *sl = (struct dsv_tp_slice){.dim = -1};
        if (!m->tp || s->ndim != 2)
                return;
        const int n = m->ep->size, rank = m->ep->rank, H = c->num_attention_heads;
        const int64_t h0 = (int64_t)H * rank / n, h1 = (int64_t)H * (rank + 1) / n;
        int64_t unit = 0;
        bool vocab = false;
        if (sfx && strcmp(sfx, "self_attn.q_b_proj.weight") == 0)
                sl->dim = 0, unit = dsv_cfg_qk_head_dim(c);
        else if (sfx && strcmp(sfx, "self_attn.kv_b_proj.weight") == 0)
                sl->dim = 0, unit = c->qk_nope_head_dim + c->v_head_dim;
        else if (sfx && strcmp(sfx, "self_attn.o_proj.weight") == 0)
                sl->dim = 1, unit = c->v_head_dim;
        else if (sfx && (strcmp(sfx, "mlp.gate_proj.weight") == 0 || strcmp(sfx, "mlp.up_proj.weight") == 0 ||
                         strcmp(sfx, "mlp.shared_experts.gate_proj.weight") == 0 ||
                         strcmp(sfx, "mlp.shared_experts.up_proj.weight") == 0))
                sl->dim = 0;
        else if (sfx && (strcmp(sfx, "mlp.down_proj.weight") == 0 || strcmp(sfx, "mlp.shared_experts.down_proj.weight") == 0))
                sl->dim = 1;
        else if (strcmp(s->name, "lm_head.weight") == 0 || (sfx && strcmp(sfx, "shared_head.head.weight") == 0)) {
                int64_t vp;
                sl->dim = 0;
                vocab = true;
                dsv_tp_vocab_share(m, &sl->lo, &sl->hi, &vp);
        } else
                return;
        const int64_t len = s->shape[sl->dim];
        if (unit)
                sl->lo = h0 * unit, sl->hi = h1 * unit;
        else if (!vocab)
                block_share(len, rank, n, &sl->lo, &sl->hi);
        sl->a0 = sl->lo;
        sl->a1 = sl->hi;
        if (type == DSV_F8_E4M3 && sl->hi > sl->lo) {
                sl->a0 = sl->lo / TP_BLOCK * TP_BLOCK;
                sl->a1 = MIN((sl->hi + TP_BLOCK - 1) / TP_BLOCK * TP_BLOCK, len);
        }
}

int dsv_tp_all_reduce(struct fwd *F, struct dsv_tensor *x, const char *what) {
        struct dsv_comm *g = F->m->ep;
        const size_t n = (size_t)F->T * (size_t)x->ne[0];
        int r;
        assert(x->type == DSV_F32 && x->stride == (size_t)x->ne[0] * sizeof(float));
        if ((r = dsv_comm_all_reduce(g, x->data, x->data, n, DSV_F32, DSV_REDUCE_SUM)) < 0)
                return dsv_error_set(F->err, r, "tensor-parallel sum of %s on rank %d of %d: %s", what,
                                     g->rank, g->size, dsv_comm_why(g, r));
        if (F->f) { /* the one rounding one rank's linear makes (round_out) */
                float *v = x->data;
                for (size_t i = 0; i < n; i++)
                        v[i] = dsv_round_bf16(v[i]);
        }
        return 0;
}

int dsv_tp_gather_logits(struct fwd *F, const float *part, int n_out, float *logits) {
        struct dsv_model *m = F->m;
        struct dsv_comm *g = m->ep;
        const int64_t V = m->cfg.vocab_size;
        int64_t lo, hi, Vp;
        int r;
        dsv_tp_vocab_share(m, &lo, &hi, &Vp);
        const size_t row = (size_t)Vp * sizeof(float);
        float *send = calloc((size_t)n_out * (size_t)Vp * ((size_t)g->size + 1), sizeof(float));
        if (!send)
                return -ENOMEM;
        float *recv = send + (size_t)n_out * (size_t)Vp;
        for (int j = 0; j < n_out; j++)
                memcpy(send + (size_t)j * Vp, part + (size_t)j * V, (size_t)(hi - lo) * sizeof(float));
        if ((r = dsv_comm_all_gather(g, send, recv, (size_t)n_out * Vp, DSV_F32)) < 0) {
                r = dsv_error_set(F->err, r, "tensor-parallel gather of the logits on rank %d of %d: %s", g->rank, g->size,
                                  dsv_comm_why(g, r));
                goto out;
        }
        /* recv is [rank][row j][Vp]; row j of the logits is every rank's part of it in order */
        for (int j = 0; j < n_out; j++)
                for (int q = 0; q < g->size; q++) {
                        const int64_t v0 = MIN(Vp * q, V), cnt = MIN(v0 + Vp, V) - v0;
                        memcpy(logits + (size_t)F->p->out_dest[j] * V + v0, (const uint8_t *)recv + ((size_t)q * n_out + j) * row,
                               (size_t)cnt * sizeof(float));
                }
out:
        free(send);
        return r;
}
