/* The CPU ranks of one process (dsv32d --ranks N --parallel ep,dp or ep,tp): N runtimes joined
 * by the in-process communicator. Rank 0's runtime is driven by the caller (dsv32d's engine thread,
 * which schedules for the group: with data-parallel attention it places each sequence on a rank
 * and keeps every rank's pool, daemon/engine/core.h); ranks 1..N-1 are threads that follow rank
 * 0's passes.
 * Each rank holds its own model (its routed experts only, dsv_expert_owner; attention, dense
 * layers and lm_head whole in ep,dp, split in ep,tp: dsv_model_opts.tp, where every follower
 * also computes the logits rank 0 wants, as lm_head's gather is collective) and a KV pool of
 * rank 0's geometry. dsv_rank_group_forward and
 * dsv_rank_group_mtp hand every follower the batch rank 0 runs (tokens, positions, the
 * sequences' lengths and page tables), run rank 0's pass, and return once every rank has
 * finished it: the collectives pair up, and between passes the followers are idle, so rank
 * 0's pool may write their pools (copy-on-write copies, restored sessions: the pool's mirrors,
 * daemon/kv_cache.h). The MLA latent is replicated (ep,tp splits heads, not the per-token
 * latent), so rank 0's KV pool holds the whole state (a
 * session snapshot is rank 0's pages) and the followers' pools are copies of it. With
 * data-parallel attention (ro->dp) instead, each rank owns whole sequences: its pool holds
 * only their pages (no mirrors), a pass hands each rank its part of the batch and the MoE
 * layers dispatch rows by all-to-all (dsv_rank_group_forward_dp below).
 *
 * A rank whose pass fails aborts the communicator (the others stop at their next collective)
 * and the group is broken for good: every later pass fails at once, and dsv_rank_group_error
 * names the first failure (the caller must stop serving). With N = 1 the group is the runtime
 * alone: no thread, no communicator. Not thread-safe: one thread drives it. */
#pragma once

#include "daemon/runtime/runtime.h"

struct dsv_rank_group;

/* The layouts dsv32d and dsv32-run know, and whether they are implemented: 0 for ep,dp
 * (routed experts split over the ranks, the rest replicated) and ep,tp (the same, with
 * attention heads, dense layers and lm_head split: ro->tp); -EOPNOTSUPP for a known layout
 * not implemented yet (ep, dp, tp, tp,dp, dp,tp), with why; -EINVAL for an unknown one. */
int dsv_parallel_layout_check(const char *layout, const char **why);

/* Opens n_ranks runtimes of ro (ro->ep must be NULL; ro->where.threads, 0 meaning every
 * core, is split between the ranks; the KV pool is rank 0's: ro's size, an automatic size
 * sharing the host memory between the ranks' pools). The models load in parallel, each
 * rank's loader reading only its bytes. timeout_ms: how long a rank waits for the others at a
 * collective. Refuses (-EINVAL, err says why) more ranks than the model has routed experts,
 * with ro->tp a rank count that does not divide the attention heads, or ranks > 1 on another
 * backend than cpu. */
int dsv_rank_group_open(const struct dsv_runtime_opts *ro, int n_ranks, int timeout_ms, struct dsv_rank_group **ret,
                        struct dsv_error *err);
void dsv_rank_group_free(struct dsv_rank_group *g);

int dsv_rank_group_size(const struct dsv_rank_group *g);
/* Rank r's runtime (0: the one the caller drives; its kv is the group's state). */
struct dsv_runtime *dsv_rank_group_runtime(const struct dsv_rank_group *g, int rank);
/* The routed experts rank r owns: [*first, *last] of the model's n_routed_experts. */
void dsv_rank_group_experts(const struct dsv_rank_group *g, int rank, int *first, int *last);

/* dsv_runtime_forward_hidden and dsv_runtime_mtp on every rank (see above); the logits and
 * hidden states are rank 0's. A failure breaks the group: -ENOTRECOVERABLE, err naming the
 * rank that failed first and why. */
int dsv_rank_group_forward(struct dsv_rank_group *g, const struct dsv_batch *b, float *logits, float *hidden,
                           struct dsv_error *err);
int dsv_rank_group_mtp(struct dsv_rank_group *g, const struct dsv_batch *b, const float *hidden_in, float *logits,
                       float *hidden_out, struct dsv_error *err);
/* Data-parallel attention (ro->dp, the ep,dp layout with each rank owning whole sequences):
 * whether this group runs it; then dsv_rank_group_forward/_mtp refuse (-EINVAL) and these
 * take the batch with seq_rank[s], the rank owning b->seqs[s] (its pages reserved in that
 * rank's pool, dsv_rank_group_runtime(g, r)->kv, which holds only its own sequences). Each
 * rank runs its part (its sequences, their tokens in batch order) and every rank takes part
 * in every MoE layer's dispatch, a rank with no sequence too (daemon/model, dsv_model_opts.dp);
 * logits and hidden rows come back in batch order, bit for bit one rank's in exact numerics.
 * A bad batch (-EINVAL: a rank out of range, a token of no sequence) runs nothing; a failed
 * pass breaks the group as above. */
bool dsv_rank_group_dp(const struct dsv_rank_group *g);
int dsv_rank_group_forward_dp(struct dsv_rank_group *g, const struct dsv_batch *b, const int *seq_rank, float *logits,
                              float *hidden, struct dsv_error *err);
int dsv_rank_group_mtp_dp(struct dsv_rank_group *g, const struct dsv_batch *b, const int *seq_rank, const float *hidden_in,
                          float *logits, float *hidden_out, struct dsv_error *err);
/* A group of hosts (dsv32d --nodes N): one rank per node, each a process. Node 0 (the
 * caller, ep and ctl of rank 0) opens its runtime with ep as its experts' group, and every
 * pass goes to the other nodes over ctl: the batch (tokens, positions, lengths, page tables,
 * the MTP layer's hidden input) with the KV pool's writes made since the last one (copy-on-
 * write copies, restored pages) before it. The nodes hold the experts as N ranks of ep,dp
 * would. Attention is replicated (node 0's pool mirrored on every node) unless ro->dp
 * (--parallel ep,dp): then each node owns whole sequences as the ranks of one process do
 * (dsv_rank_group_dp, dsv_rank_group_forward_dp), its pool holding only their pages, and
 * node 0 keeps every node's pool's bookkeeping (dsv_rank_group_pool: a remote pool, whose
 * writes go to the node with its next job, 8 bytes a copy and 8 + page_bytes an upload, and
 * whose reads, a snapshot or a session move, are a round trip over ctl of page_bytes a page);
 * a pass sends each node its part and takes back its logits (and hidden) rows. Nothing here notices a node that stops: the bootstrap (daemon/cluster) aborts ep
 * and ctl when one is lost, and the pass in flight fails (-ENOTRECOVERABLE, the group is
 * broken). Freeing the group tells the other nodes to end (dsv_rank_group_follow returns 0).
 * ep and ctl (dsv_comm_mpi_join, then a dup) stay the caller's. */
int dsv_rank_group_open_nodes(const struct dsv_runtime_opts *ro, struct dsv_comm *ep, struct dsv_comm *ctl,
                              struct dsv_rank_group **ret, struct dsv_error *err);
/* What a follower node did, for its last log line: passes run, tokens of them (with
 * data-parallel attention, of its own sequences only), KV writes node 0 sent it, KV pages it
 * sent back (reads). */
struct dsv_follow_stats {
        uint64_t passes, tokens, writes, pages_read;
};
/* Node R > 0: opens its runtime (ro as node 0's, its experts only; ro->dp and ro->tp as node
 * 0's) and runs node 0's passes until node 0 ends the group (0) or a job or pass fails (the
 * error; the caller must exit, the others learn through the bootstrap). A job this node
 * cannot take (a page outside its pool, a payload that does not add up, another layout's
 * pass) is -EPROTO. stats (optional) is filled in either case. */
int dsv_rank_group_follow(const struct dsv_runtime_opts *ro, struct dsv_comm *ep, struct dsv_comm *ctl,
                          struct dsv_follow_stats *stats, struct dsv_error *err);
/* Rank r's KV pool: its runtime's, or with data-parallel attention over nodes node r's as
 * node 0 keeps it (bookkeeping; its bytes are on node r, struct dsv_kv_remote). NULL for a
 * rank out of range, or another process's pool that is not kept here. */
struct dsv_kv_pool *dsv_rank_group_pool(const struct dsv_rank_group *g, int rank);
/* Whether the other ranks are nodes; a rank's weight bytes and threads (a node's as it
 * reported them; the runtime of a rank in another process is NULL). */
bool dsv_rank_group_nodes(const struct dsv_rank_group *g);
uint64_t dsv_rank_group_weight_bytes(const struct dsv_rank_group *g, int rank);
int dsv_rank_group_threads(const struct dsv_rank_group *g, int rank);

/* "" while every rank works, else what broke the group, said in full: "the group of N ranks
 * is broken: rank R: ..." or "the device is lost: cudaError... (...)" (rank 0's device error,
 * dsv_runtime_device_error). Called by the engine's thread only. */
const char *dsv_rank_group_error(struct dsv_rank_group *g);
