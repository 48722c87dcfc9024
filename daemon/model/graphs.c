/* Decode steps as graphs (see internal.h and model.h): a forward pass whose tokens are all
 * decode rows is padded to a power-of-two bucket of rows, and its layers (embedding to final
 * norm) run as one graph of the backend per bucket, recorded the second time the bucket is
 * used and relaunched after that. The lm_head and the logits' download stay eager (they take
 * the pass's wanted rows only).
 *
 * Why a replay computes the new step: every input the ops read lives in the workspace at an
 * address that depends only on its bucket (workspace.c): token ids, positions, sequences,
 * cache slots and the page table (as wide as the bucket) are uploaded there before the
 * launch, the kernels read lengths and pages from them, and the indexer and attention grids
 * follow the bucket's widths, not the step's. A graph is kept with what it was recorded
 * against (the workspace's buffer and bucket, the KV pool); when any of it changed, the
 * bucket starts over (eager once, then recorded again).
 *
 * A capture that fails turns graphs off for the model's life (logged), except when it ran out
 * of device memory (-ENOMEM: the device stays usable, and memory may be free again later):
 * then only that step runs op by op and its bucket is recorded again on its next use, up to
 * DSV_GRAPH_OOM_RETRIES failures in a row.
 *
 * Padding rows repeat the pass's first row (token, position, sequence, slot): every op works
 * row by row, so they change no real row, and their cache write is the first row's own,
 * same bytes to the same slot. */
#include "config.h"

#include "daemon/model/internal.h"

/* The plugin loader's description of a backend's last failure (kernels/backend_plugin.h):
 * programs that open plugins link it, the core library does not, so it is looked up weakly. */
extern const char *dsv_backend_last_error(struct dsv_backend *be) __attribute__((weak));

static const char *why_failed(struct dsv_backend *be, int r) {
        const char *s = dsv_backend_last_error ? dsv_backend_last_error(be) : "";
        return s && s[0] ? s : strerror(-r);
}

static bool hooked(const struct dsv_model_hooks *h) {
        return h->force_topk || h->force_experts || h->on_topk || h->on_experts || h->on_embed || h->on_layer ||
               h->on_expert_row || h->want_index_scores || h->want_router_scores || h->force_dense;
}

static int bucket_index(int rows) {
        int i = 0;
        while ((1 << i) < rows)
                i++;
        return i;
}

int dsv_graph_rows(struct fwd *F, bool eh) {
        struct dsv_model *m = F->m;
        const int n = F->p->n_rows;
        F->graph = false;
        /* only plain decode steps of the main model: no prefill chunk, no test hook reading
         * or replacing values mid-pass, no expert-parallel exchange (host work per layer) */
        if (eh || m->graphs.off || m->graphs.probing || !dsv_backend_has_graphs(m->be) || hooked(&m->hooks) || m->ep ||
            F->p->n_chunks > 0 || n < 1 || n > DSV_GRAPH_MAX_ROWS)
                return n;
        if (m->graphs.broken) {
                m->graphs.st.eager++;
                return n;
        }
        F->graph = true;
        return 1 << bucket_index(n);
}

static struct graph_slot key_of(const struct fwd *F) {
        const struct ws *w = &F->m->ws;
        return (struct graph_slot){.ws_buf = w->buf, .ws_bucket = w->bucket, .K = w->d.K, .kv_base = F->kv->base,
                                   .kv_page_tokens = F->kv->layout.page_tokens, .kv_layers = F->kv->layout.n_layers,
                                   .kv_layer_page_bytes = F->kv->layout.layer_page_bytes};
}

/* The bucket's context width only sizes the index scores the test hooks read (never in a
 * graph), carved after everything a graph touches: a longer context keeps the graph. */
static bool same_key(const struct graph_slot *a, const struct graph_slot *b) {
        const struct ws_dims *x = &a->ws_bucket, *y = &b->ws_bucket;
        return a->ws_buf == b->ws_buf && x->T == y->T && x->eh == y->eh && x->C == y->C && x->K == y->K &&
               x->n_out == y->n_out && x->n_seqs == y->n_seqs && x->max_pages == y->max_pages && a->K == b->K &&
               a->kv_base == b->kv_base && a->kv_page_tokens == b->kv_page_tokens && a->kv_layers == b->kv_layers &&
               a->kv_layer_page_bytes == b->kv_layer_page_bytes;
}

static int launch(struct fwd *F, void *graph) {
        struct dsv_backend *be = F->m->be;
        int r = be->ops->graph_launch(be, graph);
        if (r < 0)
                return dsv_error_set(F->err, r, "%s backend: launching the decode graph of %d rows failed: %s", be->ops->name, F->T,
                                     why_failed(be, r));
        return 0;
}

int dsv_graph_run(struct fwd *F, int (*layers)(struct fwd *F)) {
        struct dsv_model *m = F->m;
        struct dsv_backend *be = m->be;
        struct graphs *G = &m->graphs;
        struct graph_slot *s = &G->slot[bucket_index(F->T)];
        const struct graph_slot key = key_of(F);
        void *graph = NULL;
        int r;

        if (s->graph && same_key(s, &key)) {
                if ((r = launch(F, s->graph)) < 0)
                        return r;
                G->st.replays++;
                if (!s->replayed)
                        log_debug("Replayed the decode graph of %d rows (%llu replays so far)", F->T,
                                  (unsigned long long)G->st.replays);
                s->replayed = true;
                return 0;
        }
        if (!s->seen || !same_key(s, &key)) {
                /* first use (or the workspace or pool moved): eager, recorded next time */
                be->ops->graph_free(be, s->graph);
                *s = key;
                s->seen = true;
                G->st.eager++;
                return layers(F);
        }
        if ((r = be->ops->graph_begin(be)) >= 0) {
                r = layers(F);
                int re = be->ops->graph_end(be, r >= 0, &graph);
                if (r >= 0)
                        r = re;
        }
        if (r < 0) {
                /* nothing ran: the same step eagerly; no capture again, or (out of memory)
                 * this bucket recorded again on its next use */
                const char *why = F->err && F->err->msg[0] ? F->err->msg : why_failed(be, r);
                if (r == -ENOMEM && ++G->oom_fails <= DSV_GRAPH_OOM_RETRIES)
                        log_warning("Recording the decode step of %d rows on the %s backend ran out of memory (%s); this step "
                                    "runs op by op, and the next of its size is recorded again (%d of %d tries)",
                                    F->T, be->ops->name, why, G->oom_fails, DSV_GRAPH_OOM_RETRIES);
                else {
                        log_warning("CUDA graphs off: recording the decode step of %d rows on the %s backend failed (%s); "
                                    "decode steps run op by op from now on",
                                    F->T, be->ops->name, why);
                        G->broken = true;
                }
                if (F->err)
                        F->err->msg[0] = 0;
                G->st.failed++;
                G->st.eager++;
                return layers(F);
        }
        G->oom_fails = 0;
        s->graph = graph;
        G->st.captures++;
        log_debug("Captured the decode step of %d rows as a graph (%llu captures, %llu replays so far)", F->T,
                  (unsigned long long)G->st.captures, (unsigned long long)G->st.replays);
        return launch(F, graph);
}

void dsv_graphs_free(struct dsv_model *m) {
        for (int i = 0; i < DSV_GRAPH_BUCKETS; i++)
                if (m->graphs.slot[i].graph)
                        m->be->ops->graph_free(m->be, m->graphs.slot[i].graph);
        memset(m->graphs.slot, 0, sizeof(m->graphs.slot));
}

void dsv_model_graph_stats(const struct dsv_model *m, struct dsv_graph_stats *st) { *st = m->graphs.st; }
