/* The engine's threads, queues and step loop (see engine.h), and the core step (core.h).
 *
 * Two threads: the intake thread encodes text and chat prompts in the order requests came
 * (intake.c), and the engine thread loads the model, then loops: take what the intake and
 * the event loop queued (requests and cancellations, in order), run one step of the core,
 * sleep when nothing is runnable. A request that needs no encoding skips the intake thread
 * when nothing is queued before it. */
#include "config.h"

#include "daemon/engine/engine.h"

#include <pthread.h>

#include "daemon/engine/core.h"
#include "daemon/engine/intake.h"
#include "daemon/engine/snapshot.h"
#include "daemon/engine/text.h"
#include "daemon/preset_model.h"
#include "daemon/runtime/ranks.h"
#include "daemon/runtime/runtime.h"

/* ------------------------------------------------------------------ the core */

/* DSV32_TEST_FORCE_TOKENS (tests only: a scripted model output, for the chat parser end to
 * end): ids separated by commas; anything unparsable ends the list. */
static int forced_tokens(struct dsv_core *c) {
        const char *e = getenv("DSV32_TEST_FORCE_TOKENS");
        size_t cap = 0;
        while (e && *e) {
                char *end;
                long v = strtol(e, &end, 10);
                if (end == e || v < 0 || v >= c->p.vocab_size)
                        break;
                if (DSV_GROW(&c->forced, &cap, c->n_forced + 1) < 0)
                        return -ENOMEM;
                c->forced[c->n_forced++] = (int32_t)v;
                e = *end == ',' ? end + 1 : end;
        }
        if (c->n_forced)
                log_warning("DSV32_TEST_FORCE_TOKENS is set: every generation emits its %zu tokens, whatever the model says "
                            "(for tests only)",
                            c->n_forced);
        return 0;
}

int dsv_core_init(struct dsv_core *c, const struct dsv_core_params *p, struct dsv_kv_pool *const *kv, int n_kv,
                  const struct dsv_exec *exec, const struct dsv_text *text, const struct dsv_engine_sink *sink,
                  struct dsv_metrics_live *metrics) {
        memset(c, 0, sizeof(*c));
        if (n_kv < 1 || !kv)
                return -EINVAL;
        for (int i = 0; i < n_kv; i++)
                if (!kv[i] || kv[i]->n_pages != kv[0]->n_pages || kv[i]->page_bytes != kv[0]->page_bytes)
                        return -EINVAL;
        if (!(c->kv = malloc((size_t)n_kv * sizeof(*c->kv))))
                return -ENOMEM;
        memcpy(c->kv, kv, (size_t)n_kv * sizeof(*c->kv));
        c->n_kv = n_kv;
        c->p = *p;
        c->exec = *exec;
        c->text = text;
        c->sink = *sink;
        c->metrics = metrics;
        if (forced_tokens(c) < 0)
                return -ENOMEM;
        if (exec->mtp && (p->hidden_size <= 0 || dsv_speculator_init(&c->spec, p->vocab_size) < 0))
                return exec->mtp && p->hidden_size <= 0 ? -EINVAL : -ENOMEM;
        return dsv_sampler_init(&c->sampler, p->vocab_size);
}

void dsv_core_done(struct dsv_core *c) {
        for (size_t i = 0; i < c->n_reqs; i++)
                request_free(c, c->reqs[i]);
        c->n_reqs = 0;
        sessions_free_all(c);
        free(c->reqs);
        free(c->kv);
        free(c->forced);
        constrain_free(c);
        free(c->uids);
        free(c->logits);
        free(c->b_tok);
        free(c->b_pos);
        free(c->b_seq);
        free(c->b_want);
        free(c->b_seqs);
        free(c->b_req);
        free(c->b_row);
        free(c->b_nrows);
        free(c->b_first);
        free(c->b_dec);
        free(c->hidden);
        free(c->m.tok);
        free(c->m.pos);
        free(c->m.seq);
        free(c->m.want);
        free(c->m.hin);
        free(c->m.hout);
        free(c->m.logits);
        free(c->m.seqs);
        free(c->m.req);
        free(c->m.row);
        dsv_speculator_done(&c->spec);
        dsv_sampler_done(&c->sampler);
        memset(c, 0, sizeof(*c));
}

bool dsv_core_idle(const struct dsv_core *c) { return c->n_reqs == 0; }

int core_pages_in_use(const struct dsv_core *c) {
        int n = 0;
        for (int k = 0; k < c->n_kv; k++)
                n += dsv_kv_pool_in_use(c->kv[k]);
        return n;
}

int core_pages_cached(const struct dsv_core *c) {
        int n = 0;
        for (int k = 0; k < c->n_kv; k++)
                n += c->kv[k]->n_cached;
        return n;
}

int core_pages_total(const struct dsv_core *c) {
        int n = 0;
        for (int k = 0; k < c->n_kv; k++)
                n += c->kv[k]->n_pages;
        return n;
}

/* Checks a new request's prompt and makes room for what it generates; false (the request
 * finishing with an error) when it cannot run. */
static bool intake_check(struct dsv_core *c, struct request *r) {
        struct dsv_engine_request *in = r->in;
        const size_t n = in->n_tokens;

        for (size_t i = 0; i < c->n_reqs; i++)
                if (c->reqs[i] != r && c->reqs[i]->client == r->client && c->reqs[i]->id == r->id &&
                    c->reqs[i]->state != REQ_FINISHING) {
                        request_fail(r, EEXIST, "request id %llu is already in flight on this connection", (unsigned long long)r->id);
                        return false;
                }
        if (in->kind != DSV_REQUEST_GENERATE) {
                sessions_op(c, r);
                return false;
        }
        if (in->schema && !in->grammar) { /* not compiled by the intake thread (a test's core) */
                char msg[1024];
                int rc = dsv_intake_schema(in, msg, sizeof(msg));
                if (rc < 0) {
                        request_fail(r, -rc, "%s", msg);
                        return false;
                }
        }
        r->tokens = TAKE_PTR(in->tokens);
        r->n_prompt = r->n_tokens = r->cap = (int)n;
        if (n == 0) {
                request_fail(r, EINVAL, "the prompt is empty");
                return false;
        }
        for (size_t i = 0; i < n; i++)
                if (r->tokens[i] < 0 || r->tokens[i] >= c->p.vocab_size) {
                        request_fail(r, EINVAL, "token %d at position %zu is outside the vocabulary (%d ids)", r->tokens[i], i,
                                     c->p.vocab_size);
                        return false;
                }
        if ((int64_t)n + 1 > c->p.max_context) {
                request_fail(r, E2BIG, "the prompt has %zu tokens; the context window holds %d", n, c->p.max_context);
                return false;
        }
        for (uint32_t i = 0; i < in->sampling.n_bias; i++)
                if (in->sampling.bias[i].id >= c->p.vocab_size) {
                        request_fail(r, EINVAL, "logit_bias: token %d is outside the vocabulary (%d ids)",
                                     in->sampling.bias[i].id, c->p.vocab_size);
                        return false;
                }
        r->total = (int)MIN((int64_t)n + in->max_tokens, (int64_t)c->p.max_context);
        /* a sequence lives in one rank's pool: that is the most it may hold */
        if ((uint64_t)r->total > (uint64_t)c->kv[0]->n_pages * c->p.kv_page_tokens) {
                request_fail(r, ENOSPC, "the request needs %d tokens of KV cache; the pool holds %llu (kv-cache-mb)", r->total,
                             (unsigned long long)((uint64_t)c->kv[0]->n_pages * c->p.kv_page_tokens));
                return false;
        }
        /* room for the generated tokens */
        int32_t *v = realloc(r->tokens, (size_t)r->total * sizeof(int32_t) + sizeof(int32_t));
        if (!v) {
                request_fail(r, ENOMEM, "out of memory");
                return false;
        }
        r->tokens = v;
        r->cap = r->total + 1;
        if (in->session[0] && c->tun.max_sessions > 0 && !sessions_attach(c, r))
                return false;
        if (c->text && dsv_text_stream_new(c->text, &r->stream) < 0)
                r->stream = NULL;
        if (in->n_stop_strings) {
                const char *s[DSV_ENGINE_MAX_STOP_STRINGS];
                _Static_assert(DSV_ENGINE_MAX_STOP_STRINGS == DSV_STOP_MAX_STRINGS &&
                                       DSV_ENGINE_STOP_STRING_MAX == DSV_STOP_MAX_BYTES,
                               "the engine's stop-string caps are the matcher's");
                if (!r->stream) {
                        request_fail(r, ENOTSUP, "stop strings need the output text: %s", dsv_text_unavailable());
                        return false;
                }
                for (uint32_t i = 0; i < in->n_stop_strings; i++)
                        s[i] = in->stop_strings[i];
                if (!(r->stop = malloc(sizeof(*r->stop)))) {
                        request_fail(r, ENOMEM, "out of memory");
                        return false;
                }
                if (dsv_stop_init(r->stop, s, in->stop_string_len, in->n_stop_strings) < 0) {
                        request_fail(r, EINVAL, "stop strings: at most %d, each 1..%d bytes", DSV_STOP_MAX_STRINGS,
                                     DSV_STOP_MAX_BYTES);
                        return false;
                }
        }
        if (in->chat_events) {
                if (!r->stream || dsv_text_parser_new(in->thinking, &r->parser) < 0) {
                        request_fail(r, r->stream ? ENOMEM : ENOTSUP, "chat events need the output text: %s",
                                     r->stream ? "out of memory" : dsv_text_unavailable());
                        return false;
                }
                /* FNV-1a of the prompt: the same request gets the same tool call ids, streamed or
                 * not, and another turn of the conversation other ones */
                r->call_key = 0xcbf29ce484222325ull;
                for (size_t i = 0; i < n; i++)
                        r->call_key = (r->call_key ^ (uint32_t)r->tokens[i]) * 0x100000001b3ull;
        }
        if (!constrain_admit(c, r))
                return false;
        DSV_METRIC_ADD(c->metrics, prompt_tokens_total, n);
        return true;
}

int dsv_core_add(struct dsv_core *c, struct dsv_engine_request *in, int err_code, const char *err_msg) {
        struct request *r = calloc(1, sizeof(*r));
        int rc;
        if (!r || (rc = DSV_GROW(&c->reqs, &c->cap_reqs, c->n_reqs + 1)) < 0) {
                free(r);
                return -ENOMEM;
        }
        r->in = in;
        r->client = in->client;
        r->id = in->id;
        r->uid = in->uid;
        r->state = REQ_WAITING;
        r->t_submit = in->t_submit_ns;
        r->sp = in->sampling;
        r->priority = in->priority;
        c->reqs[c->n_reqs++] = r;
        if (in->kind == DSV_REQUEST_GENERATE)
                DSV_METRIC_ADD(c->metrics, requests_total, 1);
        if (err_code)
                request_fail(r, err_code, "%s", err_msg);
        else
                intake_check(c, r);
        return 0;
}

void dsv_core_cancel(struct dsv_core *c, void *client, uint64_t id) {
        for (size_t i = 0; i < c->n_reqs; i++)
                if (c->reqs[i]->client == client && c->reqs[i]->id == id)
                        c->reqs[i]->cancel = true;
}

bool dsv_core_lost(const struct dsv_core *c) { return c->lost; }

/* The device failed for good: every request that has not ended gets lost_msg as its ERROR
 * (its pending tokens go first), queued ones and later ones too (dsv_core_step). */
static void fail_all_lost(struct dsv_core *c) {
        for (size_t i = 0; i < c->n_reqs; i++) {
                struct request *r = c->reqs[i];
                if (r->state != REQ_FINISHING)
                        request_fail(r, EIO, "%s", c->lost_msg);
        }
        requests_remove_finished(c);
}

/* After a failed pass: whether the device is gone (then everything ends, see fail_all_lost). */
static bool check_lost(struct dsv_core *c, const char *what) {
        const char *why = c->exec.device_error ? c->exec.device_error(c->exec.ud) : NULL;
        if (!why || !why[0])
                return false;
        if (!c->lost) {
                c->lost = true;
                snprintf(c->lost_msg, sizeof(c->lost_msg), "%s failed: %.900s; dsv32d is exiting", what, why);
                log_error("Engine: %s", c->lost_msg);
        }
        fail_all_lost(c);
        return true;
}

bool dsv_core_step(struct dsv_core *c) {
        struct dsv_error err = {{0}};
        int n_tok, rc;

        if (c->lost) { /* requests that came after the fault, and ERRORs still to deliver */
                fail_all_lost(c);
                return false;
        }

        /* 0. snapshots: completed writes, then the periodic save */
        if (c->snap) {
                int failed = 0;
                dsv_snapshots_reap(c->snap, &failed);
                if (c->tun.snapshot_interval_s > 0 &&
                    dsv_now_ns() - c->last_snapshot_ns >= (uint64_t)c->tun.snapshot_interval_s * 1000000000ull) {
                        sessions_save(c, (uid_t)-1, true);
                        c->last_snapshot_ns = dsv_now_ns();
                }
        }
        /* 1. dead clients, cancellations, a drain past its deadline; saves that completed */
        for (size_t i = 0; i < c->n_reqs; i++) {
                struct request *r = c->reqs[i];
                if (r->state == REQ_FINISHING)
                        continue;
                if (r->save_wait) {
                        if (dsv_snapshots_pending(c->snap) == 0) {
                                r->save_wait = false;
                                request_finish(r, DSV_ENGINE_FINISH_STOP);
                        }
                        continue;
                }
                if (r->cancel || c->sink.gone(c->sink.ud, r->client)) {
                        request_finish(r, DSV_ENGINE_FINISH_CANCELLED);
                } else if (c->drain_expired) {
                        request_finish(r, DSV_ENGINE_FINISH_SHUTDOWN);
                        c->drain_cut++;
                }
        }
        /* 2. pending output of parked streams */
        for (size_t i = 0; i < c->n_reqs; i++)
                if (c->reqs[i]->state == REQ_RUNNING && c->reqs[i]->n_out)
                        request_flush(c, c->reqs[i]);
        requests_remove_finished(c);
        if (c->s_head && dsv_now_ns() - c->last_sweep_ns >= 1000000000ull) {
                sessions_sweep(c);
                sessions_publish(c);
        }

        /* 3. the batch */
        n_tok = sched_build(c);
        if (n_tok == 0) {
                requests_remove_finished(c); /* requests that failed admission */
                return false;
        }

        /* 4. forward (the hidden states for the MTP layer's pass) */
        struct dsv_batch b = {.n_tokens = n_tok, .token = c->b_tok, .pos = c->b_pos, .seq = c->b_seq, .want_logits = c->b_want,
                              .n_seqs = c->b_n_seqs, .seqs = c->b_seqs, .as_decode = c->b_dec};
        rc = c->exec.forward(c->exec.ud, &b, c->logits, c->exec.mtp ? c->hidden : NULL, &err);
        DSV_METRIC_ADD(c->metrics, steps_total, 1);
        if (rc < 0 && check_lost(c, "the forward pass"))
                return true;
        if (rc < 0) {
                log_error("Engine: forward pass failed: %s", err.msg[0] ? err.msg : strerror(-rc));
                for (int s = 0; s < c->b_n_seqs; s++)
                        request_fail(c->b_req[s], EIO, "the forward pass failed: %s", err.msg[0] ? err.msg : strerror(-rc));
                requests_remove_finished(c);
                return true;
        }
        {
                int n_decode = 0;
                uint64_t now = dsv_now_ns(), g0 = __atomic_load_n(&c->metrics->generated_tokens_total, __ATOMIC_RELAXED);
                for (int s = 0; s < c->b_n_seqs; s++)
                        if (c->b_dec[s])
                                n_decode += s + 1 < c->b_n_seqs ? c->b_first[s + 1] - c->b_first[s] : n_tok - c->b_first[s];
                dsv_rate_add(c->metrics, &c->metrics->prefill_tok_s, n_tok - n_decode, now);
                DSV_METRIC_ADD(c->metrics, prefilled_tokens_total, (uint64_t)(n_tok - n_decode));

                /* 5. sample (or verify drafts), stream, finish; the MTP layer drafts; the pages a
                 * prefill completed go to the prefix cache */
                output_step(c);
                dsv_rate_add(c->metrics, &c->metrics->decode_tok_s,
                             (double)(__atomic_load_n(&c->metrics->generated_tokens_total, __ATOMIC_RELAXED) - g0), now);
        }
        draft_step(c);
        if (check_lost(c, "the MTP layer's pass")) /* its failure ended only its own requests */
                return true;
        for (int s = 0; s < c->b_n_seqs; s++)
                if (c->b_req[s]->state != REQ_FINISHING || !c->b_req[s]->final_error)
                        prefix_register(c, c->b_req[s]);
        requests_remove_finished(c);
        return true;
}

/* ------------------------------------------------------------------ the threads */

/* A queued request (with its encoding's outcome) or cancellation, in arrival order. */
struct item {
        struct item *next;
        struct dsv_engine_request *req; /* NULL: a cancellation of (client, id) */
        void *client;
        uint64_t id;
        int err;
        char msg[512];
};

struct queue {
        struct item *head, *tail;
};

static void queue_push(struct queue *q, struct item *it) {
        it->next = NULL;
        if (q->tail)
                q->tail->next = it;
        else
                q->head = it;
        q->tail = it;
}

static struct item *queue_take_all(struct queue *q) {
        struct item *h = q->head;
        q->head = q->tail = NULL;
        return h;
}

struct dsv_engine {
        struct dsv_engine_opts opts;
        char *model_dir, *backend_name, *numerics_name, *state_dir, *mtp_name;
        struct dsv_engine_sink sink;
        pthread_t thread, intake_thread;
        bool thread_started, intake_started;
        pthread_mutex_t lock;
        pthread_cond_t cond, intake_cond;
        /* under lock */
        struct queue intake, incoming;
        bool intake_busy;
        bool stop, kicked, draining;
        uint64_t drain_deadline_ns;
        struct dsv_engine_tunables tun;
        /* engine thread, while loading: when progress was last logged, and at which tenth */
        uint64_t load_logged_ns;
        unsigned load_logged_tenth;
        /* atomics */
        int state;
        unsigned load_permille;
        uint64_t load_read, load_total, load_elapsed_ns, load_uploaded, load_upload_ns; /* dsv_engine_load_figures */
        uint64_t heartbeat_ns;
        bool idle;
        uint64_t drain_cut;
        struct dsv_metrics_live metrics;
        /* engine thread (info and text published before state READY); rt is rank 0's of ranks */
        struct dsv_rank_group *ranks;
        struct dsv_runtime *rt;
        struct dsv_kv_pool **pools; /* the core's: every rank's with data-parallel attention, else rank 0's */
        int n_pools;
        int *seq_rank; /* a batch's sequences' ranks (exec_forward) */
        int cap_seq_rank;
        struct dsv_text *text;
        struct dsv_engine_info info;
        struct dsv_core core;
        bool core_ready;
        char error[1600];
};

static void notify_loop(struct dsv_engine *e) {
        uint64_t one = 1;
        if (e->opts.notify_fd >= 0 && write(e->opts.notify_fd, &one, sizeof(one)) < 0) {
                /* the counter cannot overflow in practice; nothing else to do */
        }
}

static void set_state(struct dsv_engine *e, enum dsv_engine_state s) {
        pthread_mutex_lock(&e->lock);
        __atomic_store_n(&e->state, (int)s, __ATOMIC_RELEASE);
        pthread_cond_broadcast(&e->intake_cond);
        pthread_mutex_unlock(&e->lock);
        notify_loop(e);
}

static void heartbeat(struct dsv_engine *e) { __atomic_store_n(&e->heartbeat_ns, dsv_now_ns(), __ATOMIC_RELAXED); }

/* A request that never reaches the core (stopping, the model failed, no memory): with a
 * message, its client gets an ERROR; its accounting and reference end. */
static void request_drop(struct dsv_engine *e, struct dsv_engine_request *r, int code, const char *msg) {
        if (msg) {
                struct dsv_engine_event ev = {.type = DSV_ENGINE_EVENT_ERROR, .id = r->id};
                ev.error.code = code;
                ev.error.message = msg;
                ev.error.uid = r->uid;
                e->sink.emit(e->sink.ud, r->client, &ev);
        }
        e->sink.request_end(e->sink.ud, r->client);
        e->sink.unref(e->sink.ud, r->client);
        free(r->tokens);
        free(r->text);
        free(r->messages);
        free(r);
}

/* A queued item that never reaches the core (see request_drop). */
static void item_drop(struct dsv_engine *e, struct item *it, int code, const char *msg) {
        if (it->req)
                request_drop(e, it->req, code, msg);
        else
                e->sink.unref(e->sink.ud, it->client);
        free(it);
}

/* Each batch sequence's rank (its dsv_kv_seq.rank: data-parallel attention), in seq_rank
 * (grown as needed). */
static int seq_ranks(const struct dsv_batch *b, int **seq_rank, int *cap, struct dsv_error *err) {
        if (b->n_seqs > *cap) {
                int *v = realloc(*seq_rank, (size_t)b->n_seqs * sizeof(*v));
                if (!v)
                        return dsv_error_set(err, ENOMEM, "out of memory");
                *seq_rank = v;
                *cap = b->n_seqs;
        }
        for (int s = 0; s < b->n_seqs; s++)
                (*seq_rank)[s] = b->seqs[s]->rank;
        return 0;
}

/* The passes run on every rank of the group (one rank: its runtime alone); with data-parallel
 * attention each rank runs the sequences placed on it. */
static int exec_forward(void *ud, const struct dsv_batch *b, float *logits, float *hidden, struct dsv_error *err) {
        struct dsv_engine *e = ud;
        int r;
        if (!dsv_rank_group_dp(e->ranks))
                return dsv_rank_group_forward(e->ranks, b, logits, hidden, err);
        if ((r = seq_ranks(b, &e->seq_rank, &e->cap_seq_rank, err)) < 0)
                return r;
        return dsv_rank_group_forward_dp(e->ranks, b, e->seq_rank, logits, hidden, err);
}

static const char *exec_device_error(void *ud) { return dsv_rank_group_error(((struct dsv_engine *)ud)->ranks); }

static int exec_mtp(void *ud, const struct dsv_batch *b, const float *hidden_in, float *logits, float *hidden_out,
                    struct dsv_error *err) {
        struct dsv_engine *e = ud;
        int r;
        if (!dsv_rank_group_dp(e->ranks))
                return dsv_rank_group_mtp(e->ranks, b, hidden_in, logits, hidden_out, err);
        if ((r = seq_ranks(b, &e->seq_rank, &e->cap_seq_rank, err)) < 0)
                return r;
        return dsv_rank_group_mtp_dp(e->ranks, b, e->seq_rank, hidden_in, logits, hidden_out, err);
}

/* The plan of the ranks: the layout, then each rank's experts, weight bytes and threads. */
static void log_ranks(struct dsv_engine *e) {
        const int n = dsv_rank_group_size(e->ranks);
        char line[4096];
        size_t off = 0;
        const bool nodes = dsv_rank_group_nodes(e->ranks);
        if (n == 1)
                return;
        if (dsv_rank_group_dp(e->ranks))
                off += (size_t)snprintf(line, sizeof(line),
                                        "%s: %d %s, layout %s (routed experts in contiguous blocks per rank; "
                                        "attention data-parallel: each sequence and its session placed on one rank, "
                                        "whose own KV pool of %d pages holds its pages (%d pages in all); dense layers "
                                        "and lm_head replicated)",
                                        nodes ? "Nodes" : "Ranks", n, nodes ? "nodes of one CPU rank each" : "CPU ranks",
                                        e->info.layout, e->rt->kv->n_pages, e->rt->kv->n_pages * n);
        else
                off += (size_t)snprintf(line, sizeof(line),
                                        "%s: %d %s, layout %s (routed experts in contiguous blocks per rank; %s; KV pool of "
                                        "%d pages on every rank, replicated)",
                                        nodes ? "Nodes" : "Ranks", n, nodes ? "nodes of one CPU rank each" : "CPU ranks",
                                        e->info.layout,
                                        e->opts.tp ? "attention heads, the dense layers' and shared expert's intermediate "
                                                     "dimension and lm_head's vocabulary split over the ranks, the MLA latent "
                                                     "and the indexer replicated"
                                                   : "attention, dense layers and lm_head replicated",
                                        e->rt->kv->n_pages);
        for (int r = 0; r < n && off < sizeof(line); r++) {
                int first, last;
                dsv_rank_group_experts(e->ranks, r, &first, &last);
                off += (size_t)snprintf(line + off, sizeof(line) - off, "; %s %d: experts %d-%d of %d, %llu weight bytes, %d threads",
                                        nodes ? "node" : "rank", r, first, last, e->rt->cfg->n_routed_experts,
                                        (unsigned long long)dsv_rank_group_weight_bytes(e->ranks, r),
                                        dsv_rank_group_threads(e->ranks, r));
        }
        log_info("%s", line);
}

static double gbs(uint64_t bytes, uint64_t ns) { return ns ? (double)bytes / (double)ns : 0.0; }

/* The loader's progress: for the status (atomics) and, every tenth of the bytes or every 2 s,
 * a log line with the rates from disk and into device memory. */
static void load_progress(void *ud, const struct dsv_load_progress *p) {
        struct dsv_engine *e = ud;
        const unsigned tenth = p->total ? (unsigned)(p->done * 10 / p->total) : 0;
        if (p->total)
                __atomic_store_n(&e->load_permille, (unsigned)(p->done * 999 / p->total), __ATOMIC_RELAXED);
        __atomic_store_n(&e->load_read, p->bytes_read, __ATOMIC_RELAXED);
        __atomic_store_n(&e->load_total, p->total, __ATOMIC_RELAXED);
        __atomic_store_n(&e->load_elapsed_ns, p->elapsed_ns, __ATOMIC_RELAXED);
        __atomic_store_n(&e->load_uploaded, p->device ? p->bytes_uploaded : 0, __ATOMIC_RELAXED);
        __atomic_store_n(&e->load_upload_ns, p->device ? p->upload_ns : 0, __ATOMIC_RELAXED);
        heartbeat(e);
        if (p->final || (tenth <= e->load_logged_tenth && p->elapsed_ns - e->load_logged_ns < 2000000000ull))
                return; /* the last figures go in the "Loaded" line */
        e->load_logged_tenth = tenth;
        e->load_logged_ns = p->elapsed_ns;
        if (p->device)
                log_info("Loading %s: %u%% of %.1f MB, %.1f MB read from disk at %.2f GB/s, into device memory at %.2f GB/s",
                         e->model_dir, (unsigned)(p->total ? p->done * 100 / p->total : 0), p->total / 1e6,
                         p->bytes_read / 1e6, gbs(p->bytes_read, p->elapsed_ns), gbs(p->bytes_uploaded, p->upload_ns));
        else
                log_info("Loading %s: %u%% of %.1f MB, %.1f MB read from disk at %.2f GB/s", e->model_dir,
                         (unsigned)(p->total ? p->done * 100 / p->total : 0), p->total / 1e6, p->bytes_read / 1e6,
                         gbs(p->bytes_read, p->elapsed_ns));
}

void dsv_engine_load_figures(const struct dsv_engine *e, struct dsv_engine_load_figures *f) {
        f->bytes_read = __atomic_load_n(&e->load_read, __ATOMIC_RELAXED);
        f->total = __atomic_load_n(&e->load_total, __ATOMIC_RELAXED);
        f->disk_gbs = gbs(f->bytes_read, __atomic_load_n(&e->load_elapsed_ns, __ATOMIC_RELAXED));
        f->device_gbs = gbs(__atomic_load_n(&e->load_uploaded, __ATOMIC_RELAXED),
                            __atomic_load_n(&e->load_upload_ns, __ATOMIC_RELAXED));
}

static int load(struct dsv_engine *e) {
        struct dsv_runtime_opts ro = {0};
        struct dsv_error err = {{0}};
        const struct dsv_model_config *cfg;
        int rc;

        rc = dsv_numerics_from_name(e->numerics_name);
        ro.numerics = rc < 0 ? DSV_NUMERICS_FAITHFUL : (enum dsv_numerics)rc;
        ro.model_dir = e->model_dir;
        ro.backend = e->backend_name;
        ro.where = (struct dsv_backend_opts){.device = e->opts.device, .threads = e->opts.threads};
        ro.kv_bytes = e->opts.kv_cache_bytes; /* 0: sized from the backend's memory */
        ro.mtp = !e->mtp_name || strcmp(e->mtp_name, "auto") == 0 ? DSV_MTP_AUTO
                 : strcmp(e->mtp_name, "on") == 0                 ? DSV_MTP_ON
                                                                  : DSV_MTP_OFF;
        ro.mtp_auto_not_cpu = true;
        ro.graphs_off = e->opts.graphs_off;
        ro.max_pass_tokens = e->opts.max_pass_tokens;
        ro.tp = e->opts.tp;
        /* ep,dp in one process, and over nodes when asked (node_dp): attention data-parallel,
         * each rank's pool its sequences'; else over nodes the group replicates attention (node
         * 0's pool is mirrored by the others) */
        ro.dp = !e->opts.tp && (e->opts.node_ep ? e->opts.node_dp : e->opts.ranks > 1);
        ro.load.progress = load_progress;
        ro.load.ud = e;
        if (e->opts.node_ep)
                rc = dsv_rank_group_open_nodes(&ro, e->opts.node_ep, e->opts.node_ctl, &e->ranks, &err);
        else
                rc = dsv_rank_group_open(&ro, MAX(e->opts.ranks, 1), DSV_ENGINE_RANK_TIMEOUT_MS, &e->ranks, &err);
        if (rc < 0) {
                snprintf(e->error, sizeof(e->error), "%s", err.msg[0] ? err.msg : strerror(-rc));
                return rc;
        }
        e->rt = dsv_rank_group_runtime(e->ranks, 0);
        e->info.ranks = dsv_rank_group_size(e->ranks);
        e->n_pools = dsv_rank_group_dp(e->ranks) ? e->info.ranks : 1;
        if (!(e->pools = calloc((size_t)e->n_pools, sizeof(*e->pools)))) {
                snprintf(e->error, sizeof(e->error), "out of memory");
                return -ENOMEM;
        }
        for (int r = 0; r < e->n_pools; r++)
                e->pools[r] = dsv_rank_group_pool(e->ranks, r);
        snprintf(e->info.layout, sizeof(e->info.layout), "%s", e->info.ranks <= 1 ? "" : ro.tp ? "ep,tp" : "ep,dp");
        e->info.rank_weight_min = UINT64_MAX;
        for (int r = 0; r < e->info.ranks; r++) {
                const uint64_t b = dsv_rank_group_weight_bytes(e->ranks, r);
                e->info.rank_weight_min = MIN(e->info.rank_weight_min, b);
                e->info.rank_weight_max = MAX(e->info.rank_weight_max, b);
        }
        log_ranks(e);
        if (e->rt->kv_note[0])
                log_info("%s", e->rt->kv_note);
        if (e->rt->backend_note[0])
                log_notice("Backend auto: using %s, not the GPU: %s", e->rt->be->ops->name, e->rt->backend_note);
        log_info("Backend %s: %s", e->rt->be->ops->name, dsv_backend_describe(e->rt->be));
        cfg = e->rt->cfg;
        rc = dsv_text_open(e->model_dir, &e->text, &err);
        if (rc == -ENOENT || rc == -ENOTSUP) { /* no tokenizer.json, or built without: token ids only */
                e->text = NULL;
                log_warning("Text prompts are not available: %s", err.msg);
        } else if (rc < 0) { /* the file is there but does not load: fail, with the file and why */
                snprintf(e->error, sizeof(e->error), "%s", err.msg);
                return rc;
        }
        snprintf(e->info.model, sizeof(e->info.model), "%s (%s, %d layers, vocab %d)", e->model_dir,
                 cfg->model_type[0] ? cfg->model_type : "deepseek_v32", cfg->num_hidden_layers, cfg->vocab_size);
        e->info.vocab_size = cfg->vocab_size;
        e->info.bos_id = cfg->bos_token_id;
        e->info.eos_id = cfg->eos_token_id;
        e->info.max_context = cfg->max_position_embeddings;
        e->info.n_layers = cfg->num_hidden_layers;
        e->info.weight_bytes = dsv_model_weight_bytes(e->rt->model);
        e->info.text = e->text != NULL;
        e->info.chat = e->text && dsv_text_has_chat(e->text);
        e->info.backend = e->rt->be->ops->name;
        e->info.backend_note = e->rt->backend_note;
        e->info.mtp = dsv_model_has_mtp(e->rt->model);
        e->info.mtp_note = e->rt->mtp_note;
        if (e->info.mtp)
                log_info("Speculative decoding with the checkpoint's MTP layer (mtp-draft drafts per step)");
        else
                log_info("Speculative decoding off: %s", e->rt->mtp_note);
        log_info("Forward passes of at most %d tokens (pass-tokens %s)", dsv_model_pass_tokens(e->rt->model),
                 e->opts.max_pass_tokens ? "set" : "auto");
        e->info.numerics = e->numerics_name;
        e->info.threads = e->rt->be->n_threads; /* resolved: 0 means "all cores" in the settings */
        e->info.kv_pages_total = (uint64_t)e->rt->kv->n_pages * (uint64_t)e->n_pools;
        e->info.kv_page_tokens = DSV_KV_PAGE_TOKENS;
        e->info.kv_bytes_per_token = e->rt->kv_bytes_per_token;
        if (!e->rt->be->host_memory) {
                const char *d = dsv_backend_describe(e->rt->be);
                snprintf(e->info.device, sizeof(e->info.device), "%.*s", (int)strcspn(d, ";"), d);
                e->info.device_weight_bytes = e->info.weight_bytes;
                e->info.device_kv_bytes = e->info.kv_pages_total * e->rt->kv_page_bytes;
        }
        {
                struct dsv_core_params p = {.vocab_size = cfg->vocab_size, .eos_id = cfg->eos_token_id,
                                            .max_context = cfg->max_position_embeddings, .hidden_size = cfg->hidden_size,
                                            .kv_page_tokens = DSV_KV_PAGE_TOKENS, .model_fingerprint = e->rt->fingerprint};
                struct dsv_exec ex = {.ud = e, .forward = exec_forward, .mtp = e->info.mtp ? exec_mtp : NULL,
                                      .device_error = exec_device_error};
                if ((rc = dsv_core_init(&e->core, &p, e->pools, e->n_pools, &ex, e->text, &e->sink, &e->metrics)) < 0) {
                        snprintf(e->error, sizeof(e->error), "out of memory");
                        return rc;
                }
                e->core_ready = true;
                sessions_publish(&e->core); /* the pools' pages, for the status before the first step */
        }
        if (e->opts.state_dir && e->opts.state_dir[0]) {
                struct dsv_snapshot_opts so = {.dir = e->opts.state_dir, .max_bytes = e->opts.snapshot_max_bytes,
                                               .fingerprint = e->rt->fingerprint};
                e->core.tun = e->tun;
                if ((rc = dsv_snapshots_open(&so, e->pools, e->n_pools, &e->core.snap)) < 0) {
                        snprintf(e->error, sizeof(e->error), "cannot use the state directory %s: %s", e->opts.state_dir,
                                 strerror(-rc));
                        return rc;
                }
                rc = sessions_restore(&e->core);
                log_info("State directory %s: %d sessions restored", e->opts.state_dir, MAX(rc, 0));
                e->core.last_snapshot_ns = dsv_now_ns();
        }
        {
                const struct dsv_load_stats *ls = dsv_model_load_stats(e->rt->model);
                char dev[160] = "", pools[4096] = "";
                size_t off = 0;
                /* data-parallel attention: each rank's own pool, after the restored sessions took
                 * their pages */
                for (int r = 0; e->n_pools > 1 && r < e->n_pools && off < sizeof(pools); r++) {
                        const struct dsv_kv_pool *kv = e->pools[r];
                        off += (size_t)snprintf(pools + off, sizeof(pools) - off, "%s rank %d %d/%d/%d",
                                                r ? "," : " in each rank's own pool (used/free/cached pages):", r,
                                                dsv_kv_pool_in_use(kv), kv->n_free, kv->n_cached);
                }
                if (!e->rt->be->host_memory)
                        snprintf(dev, sizeof(dev), ", %llu bytes into %s memory at %.2f GB/s",
                                 (unsigned long long)ls->bytes_uploaded, e->rt->be->ops->name,
                                 gbs(ls->bytes_uploaded, ls->upload_ns));
                log_info("Loaded %s: %llu tensor bytes (%.1f MB) in %.2f s (%s): %llu bytes read from disk at %.2f GB/s%s; "
                         "KV cache %d pages of %d tokens (%llu bytes/token)%s",
                         e->model_dir, (unsigned long long)ls->bytes_tensors, ls->bytes_tensors / 1e6, ls->elapsed_ns / 1e9,
                         dsv_checkpoint_is_preset(dsv_model_get_checkpoint(e->rt->model)) ? "made by the backend's fill_random op"
                         : ls->uring                                                     ? "io_uring"
                                                                                         : "pread",
                         (unsigned long long)ls->bytes_read,
                         gbs(ls->bytes_read, ls->elapsed_ns), dev, e->rt->kv->n_pages, DSV_KV_PAGE_TOKENS,
                         (unsigned long long)e->rt->kv_bytes_per_token, pools);
        }
        return 0;
}

/* The intake thread: encodes queued prompts in order once the model (and its tokenizer) is
 * loaded, and moves each item to the engine's queue. */
static void *intake_main(void *ud) {
        struct dsv_engine *e = ud;
        pthread_mutex_lock(&e->lock);
        for (;;) {
                while (!e->stop && (!e->intake.head || dsv_engine_state(e) == DSV_ENGINE_LOADING))
                        pthread_cond_wait(&e->intake_cond, &e->lock);
                if (e->stop)
                        break;
                struct item *it = e->intake.head;
                e->intake.head = it->next;
                if (!e->intake.head)
                        e->intake.tail = NULL;
                e->intake_busy = true;
                pthread_mutex_unlock(&e->lock);
                if (it->req && dsv_intake_needed(it->req) && dsv_engine_state(e) == DSV_ENGINE_READY)
                        it->err = -dsv_intake_encode(e->text, it->req, it->msg, sizeof(it->msg));
                pthread_mutex_lock(&e->lock);
                queue_push(&e->incoming, it);
                e->intake_busy = e->intake.head != NULL;
                pthread_cond_signal(&e->cond);
        }
        pthread_mutex_unlock(&e->lock);
        return NULL;
}

static void take_items(struct dsv_engine *e, struct item *it) {
        while (it) {
                struct item *next = it->next;
                if (!it->req) {
                        if (e->core_ready)
                                dsv_core_cancel(&e->core, it->client, it->id);
                        item_drop(e, it, 0, NULL);
                } else if (dsv_engine_state(e) == DSV_ENGINE_FAILED) {
                        char msg[1800];
                        snprintf(msg, sizeof(msg), "the model failed to load: %s", e->error);
                        item_drop(e, it, EIO, msg);
                } else if (dsv_engine_state(e) == DSV_ENGINE_LOST) {
                        item_drop(e, it, EIO, e->error);
                } else if (dsv_core_add(&e->core, it->req, it->err, it->msg) < 0) {
                        log_error("Engine: out of memory accepting a request");
                        item_drop(e, it, ENOMEM, "out of memory");
                } else {
                        free(it); /* the core owns the request now */
                }
                it = next;
        }
}

static void *engine_main(void *ud) {
        struct dsv_engine *e = ud;
        bool saved_at_stop = false;
        heartbeat(e);
        if (load(e) < 0) {
                log_error("%s", e->error);
                set_state(e, DSV_ENGINE_FAILED);
                /* keep answering: queued requests get the reason */
        } else {
                __atomic_store_n(&e->load_permille, 1000, __ATOMIC_RELAXED);
                set_state(e, DSV_ENGINE_READY);
        }
        for (;;) {
                struct item *items;
                bool stop, draining, did = false;

                pthread_mutex_lock(&e->lock);
                items = queue_take_all(&e->incoming);
                stop = e->stop;
                draining = e->draining;
                e->kicked = false;
                if (e->core_ready) {
                        e->core.tun = e->tun;
                        e->core.drain_expired = e->draining && dsv_now_ns() >= e->drain_deadline_ns;
                }
                pthread_mutex_unlock(&e->lock);
                if (stop) {
                        while (items) {
                                struct item *next = items->next;
                                item_drop(e, items, 0, NULL);
                                items = next;
                        }
                        break;
                }
                take_items(e, items);
                if (e->core_ready) {
                        did = dsv_core_step(&e->core);
                        __atomic_store_n(&e->drain_cut, e->core.drain_cut, __ATOMIC_RELAXED);
                        if (dsv_core_lost(&e->core) && dsv_engine_state(e) != DSV_ENGINE_LOST) {
                                /* the ERRORs are queued; the server exits once they are out */
                                snprintf(e->error, sizeof(e->error), "%s", e->core.lost_msg);
                                saved_at_stop = true; /* nothing is saved from a poisoned device */
                                set_state(e, DSV_ENGINE_LOST);
                        }
                        /* a drain ends with the sessions written (what changed since the last save) */
                        if (draining && !saved_at_stop && dsv_core_idle(&e->core)) {
                                if (e->core.snap) {
                                        int n = sessions_save(&e->core, (uid_t)-1, true), failed = 0;
                                        dsv_snapshots_flush(e->core.snap);
                                        dsv_snapshots_reap(e->core.snap, &failed);
                                        log_info("Saved %d sessions to %s", n, e->opts.state_dir);
                                }
                                saved_at_stop = true;
                        }
                }
                heartbeat(e);
                {
                        bool idle = !e->core_ready || (dsv_core_idle(&e->core) && (!draining || saved_at_stop));
                        bool was = __atomic_exchange_n(&e->idle, idle, __ATOMIC_ACQ_REL);
                        if (idle && !was && (draining || dsv_engine_state(e) == DSV_ENGINE_LOST))
                                notify_loop(e); /* the server waits for this to exit */
                }
                if (did)
                        continue;
                /* nothing runnable: sleep until new work, a kick, or a short timeout when
                 * parked streams or a drain deadline may need a look */
                pthread_mutex_lock(&e->lock);
                if (!e->incoming.head && !e->stop && !e->kicked) {
                        struct timespec ts;
                        uint64_t wait_ns = e->core_ready && !dsv_core_idle(&e->core) ? 2000000ull : 500000000ull;
                        clock_gettime(CLOCK_REALTIME, &ts);
                        ts.tv_nsec += (long)(wait_ns % 1000000000ull);
                        ts.tv_sec += (time_t)(wait_ns / 1000000000ull) + ts.tv_nsec / 1000000000L;
                        ts.tv_nsec %= 1000000000L;
                        pthread_cond_timedwait(&e->cond, &e->lock, &ts);
                }
                pthread_mutex_unlock(&e->lock);
        }
        {
                struct dsv_snapshots *snap = e->core.snap;
                if (e->core_ready)
                        dsv_core_done(&e->core);
                dsv_snapshots_free(snap); /* after the sessions: its page references go last */
        }
        e->core_ready = false;
        return NULL;
}

int dsv_engine_start(const struct dsv_engine_opts *opts, const struct dsv_engine_tunables *tun,
                     const struct dsv_engine_sink *sink, struct dsv_engine **ret) {
        struct dsv_engine *e = calloc(1, sizeof(*e));
        int rc;

        if (!e)
                return -ENOMEM;
        e->opts = *opts;
        e->sink = *sink;
        e->model_dir = strdup(opts->model_dir);
        e->state_dir = opts->state_dir && opts->state_dir[0] ? strdup(opts->state_dir) : NULL;
        e->opts.state_dir = e->state_dir;
        e->backend_name = strdup(opts->backend ? opts->backend : "cpu");
        e->numerics_name = strdup(opts->numerics ? opts->numerics : "faithful");
        e->mtp_name = strdup(opts->mtp ? opts->mtp : "auto");
        e->tun = *tun;
        e->state = DSV_ENGINE_LOADING;
        e->idle = true;
        dsv_metrics_init(&e->metrics);
        pthread_mutex_init(&e->lock, NULL);
        pthread_cond_init(&e->cond, NULL);
        pthread_cond_init(&e->intake_cond, NULL);
        if (!e->model_dir || !e->backend_name || !e->numerics_name || !e->mtp_name) {
                dsv_engine_free(e);
                return -ENOMEM;
        }
        rc = -pthread_create(&e->intake_thread, NULL, intake_main, e);
        if (rc < 0) {
                dsv_engine_free(e);
                return rc;
        }
        e->intake_started = true;
        rc = -pthread_create(&e->thread, NULL, engine_main, e);
        if (rc < 0) {
                dsv_engine_free(e);
                return rc;
        }
        e->thread_started = true;
        *ret = e;
        return 0;
}

void dsv_engine_free(struct dsv_engine *e) {
        struct item *it;
        if (!e)
                return;
        pthread_mutex_lock(&e->lock);
        e->stop = true;
        pthread_cond_signal(&e->cond);
        pthread_cond_broadcast(&e->intake_cond);
        pthread_mutex_unlock(&e->lock);
        if (e->intake_started)
                pthread_join(e->intake_thread, NULL);
        if (e->thread_started)
                pthread_join(e->thread, NULL);
        it = queue_take_all(&e->intake);
        while (it) {
                struct item *next = it->next;
                item_drop(e, it, 0, NULL);
                it = next;
        }
        it = queue_take_all(&e->incoming);
        while (it) {
                struct item *next = it->next;
                item_drop(e, it, 0, NULL);
                it = next;
        }
        dsv_text_free(e->text);
        dsv_rank_group_free(e->ranks);
        free(e->pools);
        free(e->seq_rank);
        dsv_metrics_done(&e->metrics);
        pthread_cond_destroy(&e->cond);
        pthread_cond_destroy(&e->intake_cond);
        pthread_mutex_destroy(&e->lock);
        free(e->model_dir);
        free(e->state_dir);
        free(e->backend_name);
        free(e->numerics_name);
        free(e->mtp_name);
        free(e);
}

enum dsv_engine_state dsv_engine_state(const struct dsv_engine *e) {
        return (enum dsv_engine_state)__atomic_load_n(&e->state, __ATOMIC_ACQUIRE);
}
unsigned dsv_engine_load_permille(const struct dsv_engine *e) { return __atomic_load_n(&e->load_permille, __ATOMIC_RELAXED); }
const char *dsv_engine_error(const struct dsv_engine *e) { return e->error; }
uint64_t dsv_engine_heartbeat_ns(const struct dsv_engine *e) { return __atomic_load_n(&e->heartbeat_ns, __ATOMIC_RELAXED); }
uint64_t dsv_engine_drain_cut(const struct dsv_engine *e) { return __atomic_load_n(&e->drain_cut, __ATOMIC_RELAXED); }

static void submit_item(struct dsv_engine *e, struct item *it, bool needs_intake) {
        pthread_mutex_lock(&e->lock);
        if (!needs_intake && !e->intake.head && !e->intake_busy) {
                queue_push(&e->incoming, it);
                pthread_cond_signal(&e->cond);
        } else {
                queue_push(&e->intake, it);
                pthread_cond_signal(&e->intake_cond);
        }
        __atomic_store_n(&e->idle, false, __ATOMIC_RELEASE);
        pthread_mutex_unlock(&e->lock);
}

void dsv_engine_submit(struct dsv_engine *e, struct dsv_engine_request *r) {
        struct item *it = calloc(1, sizeof(*it));
        if (!it) {
                request_drop(e, r, ENOMEM, "out of memory");
                return;
        }
        it->req = r;
        submit_item(e, it, dsv_intake_needed(r));
}

void dsv_engine_cancel(struct dsv_engine *e, void *client, uint64_t id) {
        struct item *it = calloc(1, sizeof(*it));
        if (!it)
                return;
        e->sink.ref(e->sink.ud, client);
        it->client = client;
        it->id = id;
        submit_item(e, it, false);
}

void dsv_engine_kick(struct dsv_engine *e) {
        pthread_mutex_lock(&e->lock);
        e->kicked = true;
        pthread_cond_signal(&e->cond);
        pthread_mutex_unlock(&e->lock);
}

void dsv_engine_set_tunables(struct dsv_engine *e, const struct dsv_engine_tunables *tun) {
        pthread_mutex_lock(&e->lock);
        e->tun = *tun;
        pthread_mutex_unlock(&e->lock);
}

void dsv_engine_drain(struct dsv_engine *e, uint64_t deadline_ns) {
        pthread_mutex_lock(&e->lock);
        e->draining = true;
        e->drain_deadline_ns = deadline_ns;
        e->kicked = true;
        /* not idle until the engine thread has seen the drain (and saved the sessions): an
         * idle flag from before it would let the server exit first */
        __atomic_store_n(&e->idle, false, __ATOMIC_RELEASE);
        pthread_cond_signal(&e->cond);
        pthread_mutex_unlock(&e->lock);
}

bool dsv_engine_idle(struct dsv_engine *e) {
        bool idle;
        pthread_mutex_lock(&e->lock);
        idle = !e->incoming.head && !e->intake.head && !e->intake_busy && __atomic_load_n(&e->idle, __ATOMIC_ACQUIRE);
        pthread_mutex_unlock(&e->lock);
        return idle;
}

const struct dsv_engine_info *dsv_engine_info(const struct dsv_engine *e) {
        return dsv_engine_state(e) == DSV_ENGINE_READY ? &e->info : NULL;
}

const struct dsv_text *dsv_engine_text(const struct dsv_engine *e) {
        return dsv_engine_state(e) == DSV_ENGINE_READY ? e->text : NULL;
}

int dsv_engine_device_memory(const struct dsv_engine *e, uint64_t *free_bytes, uint64_t *total_bytes) {
        struct dsv_backend *be;
        if (dsv_engine_state(e) != DSV_ENGINE_READY && dsv_engine_state(e) != DSV_ENGINE_LOST)
                return -EAGAIN;
        be = e->rt->be;
        if (be->host_memory || !be->ops->mem_info)
                return -ENODEV;
        return be->ops->mem_info(be, free_bytes, total_bytes);
}

void dsv_engine_metrics(struct dsv_engine *e, struct dsv_engine_metrics *m) { dsv_metrics_read(&e->metrics, dsv_now_ns(), m); }
