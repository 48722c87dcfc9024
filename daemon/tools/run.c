/* dsv32-run: the offline runner. Loads a checkpoint, prefills the given token ids and
 * prints the continuation (greedy, or sampled by seed), with speculative decoding through the
 * checkpoint's MTP layer when it has one; optionally dumps every position's logits. For
 * debugging, for outside checks against other implementations, and for speed figures. */
#include "config.h"

#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <unistd.h>

#include "daemon/preset_model.h"
#include "daemon/runtime/generate.h"
#include "ipc/idlist.h"

static void help(void) {
        printf("Usage: dsv32-run --model DIR|preset:NAME --tokens ID,ID,... [options]\n"
               "Run a DeepSeek-V3.2 checkpoint and print the continuation ids (comma-separated,\n"
               "one line): greedy unless --temperature is given.\n\n"
               "Options:\n"
               "  --model DIR            checkpoint directory (config.json + safetensors), or a\n"
               "                         preset with random weights made by the backend, no disk:\n"
               "                         preset:NAME (tiny, small, m474, v32, v32-layers:N; the\n"
               "                         bare name when no such file or directory exists)\n"
               "  --tokens LIST          prompt token ids, separated by commas and/or spaces\n"
               "  --generate N           tokens to generate (default 16; 0: prompt only)\n"
               "  --dump-logits FILE     write little-endian float32 logits, one row of vocab_size\n"
               "                         per prompt position, then one per generated token (the\n"
               "                         logits after feeding it), in order\n"
               "  --decode-one-by-one    feed the prompt one token at a time (decode path)\n"
               "  --chunk N              prefill the prompt in chunks of N tokens\n"
               "  --numerics MODE        faithful (default: the reference's bf16/FP8 rounding) or\n"
               "                         exact (FP8 weights dequantized, fp32 everywhere else)\n"
               "  --mtp on|off|auto      speculative decoding with the checkpoint's multi-token-\n"
               "                         prediction layer: it drafts, the model verifies the draft\n"
               "                         in the next step's pass (default auto: on when the\n"
               "                         checkpoint has the layer). Greedy output is the same token\n"
               "                         for token; sampled output has the same distribution\n"
               "  --draft N              drafts per step, the MTP layer reused on its own output\n"
               "                         (default 1, what V3.2 ships; 1..16)\n"
               "  --temperature T        sample at temperature T (default 0: greedy)\n"
               "  --top-k K, --top-p P, --min-p P\n"
               "                         sampling filters (default off)\n"
               "  --seed N               sampling seed (default 0); same seed, same tokens\n"
               "  --repetition-penalty R, --frequency-penalty F, --presence-penalty P,\n"
               "  --logit-bias ID:BIAS   penalties and logit bias, as dsv32 generate has them\n"
               "                         (repeat --logit-bias for more tokens; greedy honours them)\n"
               "  --pass-tokens N        tokens in one forward pass (16..65536): a longer prompt\n"
               "                         is prefilled in several passes, same results bit for\n"
               "                         bit (default: the most whose activations stay within\n"
               "                         1/32 of the weights' bytes)\n"
               "  --threads N            CPU threads in all, split between the ranks (default: all)\n"
               "  --ranks N              run N ranks in this process (default 1): CPU ranks as\n"
               "                         threads joined by the in-process communicator, the\n"
               "                         layout given by --parallel; output and logits are\n"
               "                         those of one rank (ep,dp: bit for bit; ep,tp: the same\n"
               "                         greedy tokens, logits within summation order)\n"
               "  --parallel LAYOUT      the layout of the ranks:\n"
               "                         ep,dp: routed experts split over the ranks in contiguous\n"
               "                         blocks, each rank reading only its own; attention data-\n"
               "                         parallel: each rank runs attention, dense layers and\n"
               "                         lm_head for the sequences it owns (their KV pages in its\n"
               "                         pool only; dsv32-run's one sequence is rank 0's) and\n"
               "                         each MoE layer sends the tokens' rows to their experts'\n"
               "                         ranks (all-to-all) and back\n"
               "                         ep,tp: the same experts, and tensor-parallel attention\n"
               "                         (each rank its share of the heads: the ranks must divide\n"
               "                         them), dense layers and shared expert (their intermediate\n"
               "                         dimension in 128-blocks) and lm_head (its vocabulary),\n"
               "                         each rank reading only its shares; the MLA latent, KV\n"
               "                         cache and indexer stay replicated (they are per token)\n"
               "  --backend NAME         cpu (default), cuda (the dsv32-backend-cuda.so plugin) or auto\n"
               "  --device N             GPU index for the cuda backend (default 0)\n"
               "  --cuda-graphs yes|no   GPU backends: each decode step (batch padded to 1, 2, 4,\n"
               "                         ... 512 rows) as a graph, recorded on the second step of\n"
               "                         its size and replayed after (default yes; same output;\n"
               "                         no: kernels launched one by one, for debugging)\n"
               "  --stats                print load, speed, draft acceptance and graph figures\n"
               "                         (captures, replays) to stderr\n"
               "  --version              print the version\n"
               "  -h, --help             this text\n");
}

static int dump_row(void *ud, int pos, const float *logits, int n_vocab) {
        return fwrite(logits, sizeof(float), (size_t)n_vocab, ud) == (size_t)n_vocab ? 0 : -EIO;
}

static int parse_float(const char *opt, const char *arg, double lo, double hi, float *ret) {
        double v;
        if (dsv_parse_double(arg, &v) < 0 || !(v >= lo && v <= hi)) {
                fprintf(stderr, "dsv32-run: %s needs a number in [%g, %g]\n", opt, lo, hi);
                return -EINVAL;
        }
        *ret = (float)v;
        return 0;
}

/* ep,tp ranks other than 0 with --dump-logits: the head's all-gather pairs up the rows every
 * rank asks for, so they ask for rank 0's rows (every position) and drop them. */
static int drop_row(void *ud, int pos, const float *logits, int n_vocab) { return 0; }

/* One rank: its runtime and its generation. Every rank runs the same prompt with the same
 * options (the collectives of the layout pair up); rank 0 alone dumps the logits. */
struct rank_job {
        int rank, n_ranks;
        struct dsv_runtime_opts ro;
        struct dsv_generate_opts go;
        const int32_t *prompt;
        int n_prompt;
        long n_gen;
        int32_t *gen;
        struct dsv_generate_stats gs;
        struct dsv_error err;
        struct dsv_runtime *rt;
        uint64_t load_ns;
        int r;
};

static int run_rank(struct rank_job *j) {
        int r;
        uint64_t t0 = dsv_now_ns();
        if ((r = dsv_runtime_open(&j->ro, &j->rt, &j->err)) < 0)
                return r;
        j->load_ns = dsv_now_ns() - t0;
        const struct dsv_model_config *cfg = j->rt->cfg;
        for (uint32_t i = 0; i < j->go.sampling.n_bias; i++)
                if (j->go.sampling.bias[i].id >= cfg->vocab_size)
                        return dsv_error_set(&j->err, EINVAL, "--logit-bias: token %d is outside the vocabulary (%d ids)",
                                             j->go.sampling.bias[i].id, cfg->vocab_size);
        for (int i = 0; i < j->n_prompt; i++)
                if (j->prompt[i] >= cfg->vocab_size)
                        return dsv_error_set(&j->err, EINVAL, "token %d is outside the vocabulary (%d ids)", j->prompt[i],
                                             cfg->vocab_size);
        if ((int64_t)j->n_prompt + j->n_gen + 1 > cfg->max_position_embeddings)
                return dsv_error_set(&j->err, EINVAL, "%d prompt + %ld generated tokens exceed max_position_embeddings (%d)",
                                     j->n_prompt, j->n_gen, cfg->max_position_embeddings);
        if (!(j->gen = malloc(((size_t)j->n_gen + 1) * sizeof(int32_t))))
                return dsv_error_set(&j->err, ENOMEM, "out of memory");
        j->go.speculate = dsv_model_has_mtp(j->rt->model);
        j->go.n_gen = (int)j->n_gen;
        return dsv_runtime_generate(j->rt, j->prompt, j->n_prompt, &j->go, j->gen, &j->gs, &j->err);
}

/* Data-parallel attention (ep,dp): the one sequence is rank 0's; the other ranks hold none
 * and follow rank 0's passes, taking part in every MoE layer's dispatch, until it ends. */
static int follow_rank(struct rank_job *j) {
        int r;
        uint64_t t0 = dsv_now_ns();
        if ((r = dsv_runtime_open(&j->ro, &j->rt, &j->err)) < 0)
                return r;
        j->load_ns = dsv_now_ns() - t0;
        return dsv_model_dp_follow(j->rt->model, &j->err);
}

static void *rank_thread(void *arg) {
        struct rank_job *j = arg;
        if (j->ro.dp && j->rank > 0)
                j->r = follow_rank(j);
        else if ((j->r = run_rank(j)) >= 0 && j->ro.dp)
                j->r = dsv_model_dp_end(j->rt->model, &j->err);
        if (j->r < 0 && j->ro.ep)
                dsv_comm_abort(j->ro.ep); /* the other ranks stop at their next collective */
        return NULL;
}

int main(int argc, char **argv) {
        static const struct option opts[] = {
                {"model", required_argument, NULL, 'm'},   {"tokens", required_argument, NULL, 't'},
                {"generate", required_argument, NULL, 'g'}, {"dump-logits", required_argument, NULL, 'd'},
                {"decode-one-by-one", no_argument, NULL, '1'}, {"chunk", required_argument, NULL, 'c'},
                {"numerics", required_argument, NULL, 'n'}, {"threads", required_argument, NULL, 'j'},
                {"stats", no_argument, NULL, 's'},          {"help", no_argument, NULL, 'h'},
                {"backend", required_argument, NULL, 'b'}, {"device", required_argument, NULL, 'D'},
                {"mtp", required_argument, NULL, 'M'},      {"draft", required_argument, NULL, 'k'},
                {"temperature", required_argument, NULL, 'T'}, {"top-k", required_argument, NULL, 'K'},
                {"top-p", required_argument, NULL, 'P'},    {"min-p", required_argument, NULL, 'N'},
                {"seed", required_argument, NULL, 'S'},     {"version", no_argument, NULL, 'V'},
                {"ranks", required_argument, NULL, 'R'},    {"parallel", required_argument, NULL, 'L'},
                {"cuda-graphs", required_argument, NULL, 'G'},
                {"repetition-penalty", required_argument, NULL, 0x101}, {"frequency-penalty", required_argument, NULL, 0x102},
                {"presence-penalty", required_argument, NULL, 0x103}, {"logit-bias", required_argument, NULL, 0x104},
                {"pass-tokens", required_argument, NULL, 0x105},
                {0},
        };
        const char *model_dir = NULL, *tokens_arg = NULL, *dump = NULL, *backend = "cpu", *layout = NULL;
        long n_gen = 16, chunk = 0, threads = 0, device = 0, n_ranks = 1, v;
        bool one_by_one = false, stats = false;
        struct dsv_runtime_opts ro = {.numerics = DSV_NUMERICS_FAITHFUL, .mtp = DSV_MTP_AUTO};
        struct dsv_generate_opts go = {.n_draft = 1};
        static struct dsv_logit_bias bias[300];
        size_t n_bias = 0;
        struct dsv_generate_stats gs = {0};
        struct dsv_runtime *rt = NULL;
        struct rank_job *jobs = NULL;
        struct dsv_comm **comms = NULL;
        int32_t *prompt = NULL, *gen = NULL;
        FILE *df = NULL;
        int n_prompt = 0, c, r, ret = 1;

        argv[0] = (char *)"dsv32-run"; /* getopt's messages: not the build tree's libtool path */
        while ((c = getopt_long(argc, argv, "h", opts, NULL)) >= 0) {
                switch (c) {
                case 'V':
                        printf("dsv32-run %s\n", PACKAGE_VERSION);
                        return 0;
                case 'm':
                        model_dir = optarg;
                        break;
                case 't':
                        tokens_arg = optarg;
                        break;
                case 'g':
                        if (dsv_parse_int(optarg, 0, 1 << 20, &n_gen) < 0) {
                                fprintf(stderr, "dsv32-run: --generate needs 0..%d\n", 1 << 20);
                                return 2;
                        }
                        break;
                case 'd':
                        dump = optarg;
                        break;
                case '1':
                        one_by_one = true;
                        break;
                case 'c':
                        if (dsv_parse_int(optarg, 1, 1 << 20, &chunk) < 0) {
                                fprintf(stderr, "dsv32-run: --chunk needs a positive number\n");
                                return 2;
                        }
                        break;
                case 'n':
                        r = dsv_numerics_from_name(optarg);
                        if (r < 0) {
                                fprintf(stderr, "dsv32-run: --numerics must be faithful or exact\n");
                                return 2;
                        }
                        ro.numerics = (enum dsv_numerics)r;
                        break;
                case 'j':
                        if (dsv_parse_int(optarg, 1, 1024, &threads) < 0) {
                                fprintf(stderr, "dsv32-run: --threads needs 1..1024\n");
                                return 2;
                        }
                        break;
                case 's':
                        stats = true;
                        break;
                case 'b':
                        backend = optarg;
                        break;
                case 'D':
                        if (dsv_parse_int(optarg, 0, 1023, &device) < 0) {
                                fprintf(stderr, "dsv32-run: --device needs 0..1023\n");
                                return 2;
                        }
                        break;
                case 'G':
                        if (strcmp(optarg, "yes") != 0 && strcmp(optarg, "no") != 0) {
                                fprintf(stderr, "dsv32-run: --cuda-graphs must be yes or no\n");
                                return 2;
                        }
                        ro.graphs_off = strcmp(optarg, "no") == 0;
                        break;
                case 'M':
                        if (strcmp(optarg, "on") == 0)
                                ro.mtp = DSV_MTP_ON;
                        else if (strcmp(optarg, "off") == 0)
                                ro.mtp = DSV_MTP_OFF;
                        else if (strcmp(optarg, "auto") == 0)
                                ro.mtp = DSV_MTP_AUTO;
                        else {
                                fprintf(stderr, "dsv32-run: --mtp must be on, off or auto\n");
                                return 2;
                        }
                        break;
                case 'k':
                        if (dsv_parse_int(optarg, 1, 16, &v) < 0) {
                                fprintf(stderr, "dsv32-run: --draft needs 1..16\n");
                                return 2;
                        }
                        go.n_draft = (int)v;
                        break;
                case 'T':
                        if (parse_float("--temperature", optarg, 0, 100, &go.sampling.temperature) < 0)
                                return 2;
                        break;
                case 'K':
                        if (dsv_parse_int(optarg, 0, INT32_MAX, &v) < 0) {
                                fprintf(stderr, "dsv32-run: --top-k needs a non-negative integer\n");
                                return 2;
                        }
                        go.sampling.top_k = (int32_t)v;
                        break;
                case 'P':
                        if (parse_float("--top-p", optarg, 0, 1, &go.sampling.top_p) < 0)
                                return 2;
                        break;
                case 'N':
                        if (parse_float("--min-p", optarg, 0, 1, &go.sampling.min_p) < 0)
                                return 2;
                        break;
                case 0x101:
                        if (parse_float("--repetition-penalty", optarg, 0, 10, &go.sampling.repetition_penalty) < 0)
                                return 2;
                        break;
                case 0x102:
                        if (parse_float("--frequency-penalty", optarg, -2, 2, &go.sampling.frequency_penalty) < 0)
                                return 2;
                        break;
                case 0x103:
                        if (parse_float("--presence-penalty", optarg, -2, 2, &go.sampling.presence_penalty) < 0)
                                return 2;
                        break;
                case 0x104: {
                        char *colon = strchr(optarg, ':');
                        if (n_bias == sizeof(bias) / sizeof(bias[0])) {
                                fprintf(stderr, "dsv32-run: at most %zu --logit-bias options\n", n_bias);
                                return 2;
                        }
                        if (colon)
                                *colon = 0;
                        if (!colon || dsv_parse_int(optarg, 0, INT32_MAX, &v) < 0) {
                                fprintf(stderr, "dsv32-run: --logit-bias needs ID:BIAS, a token id and a number in [-100, 100]\n");
                                return 2;
                        }
                        if (parse_float("--logit-bias", colon + 1, -100, 100, &bias[n_bias].bias) < 0)
                                return 2;
                        bias[n_bias++].id = (int32_t)v;
                        go.sampling.bias = bias;
                        go.sampling.n_bias = (uint32_t)n_bias;
                        break;
                }
                case 0x105:
                        if (dsv_parse_int(optarg, DSV_MODEL_MIN_PASS_TOKENS, DSV_MODEL_MAX_PASS_TOKENS, &v) < 0) {
                                fprintf(stderr, "dsv32-run: --pass-tokens needs %d..%d\n", DSV_MODEL_MIN_PASS_TOKENS,
                                        DSV_MODEL_MAX_PASS_TOKENS);
                                return 2;
                        }
                        ro.max_pass_tokens = (int)v;
                        break;
                case 'S':
                        if (dsv_parse_int(optarg, 0, LONG_MAX, &v) < 0) {
                                fprintf(stderr, "dsv32-run: --seed needs a non-negative integer\n");
                                return 2;
                        }
                        go.sampling.seed = (uint64_t)v;
                        break;
                case 'R':
                        if (dsv_parse_int(optarg, 1, 256, &n_ranks) < 0) {
                                fprintf(stderr, "dsv32-run: --ranks needs 1..256\n");
                                return 2;
                        }
                        break;
                case 'L':
                        layout = optarg;
                        break;
                case 'h':
                        help();
                        return 0;
                default:
                        fprintf(stderr, "Try 'dsv32-run --help'.\n");
                        return 2;
                }
        }
        if (!model_dir || !tokens_arg || optind != argc) {
                fprintf(stderr, "dsv32-run: --model and --tokens are required (try --help)\n");
                return 2;
        }
        size_t n_ids = 0;
        if (dsv_parse_id_list(tokens_arg, &prompt, &n_ids) < 0 || n_ids == 0 || n_ids > INT32_MAX / 2) {
                fprintf(stderr, "dsv32-run: --tokens must be a comma-separated list of token ids\n");
                free(prompt);
                return 2;
        }
        n_prompt = (int)n_ids;
        if (layout && strcmp(layout, "ep,dp") != 0 && strcmp(layout, "ep,tp") != 0) {
                fprintf(stderr, "dsv32-run: --parallel %s: %s\n", layout,
                        strcmp(layout, "dp") == 0 || strcmp(layout, "tp") == 0 || strcmp(layout, "ep") == 0
                                ? "this layout is not implemented yet; ep,dp (routed experts split over the ranks, the "
                                  "rest replicated) and ep,tp (attention heads, dense layers and lm_head split too) are"
                                : "unknown layout (ep,dp: routed experts split over the ranks, the rest replicated; "
                                  "ep,tp: attention heads, dense layers and lm_head split too)");
                free(prompt);
                return 2;
        }
        if (n_ranks > 1 && !layout) {
                fprintf(stderr, "dsv32-run: --ranks %ld needs a layout: --parallel ep,dp or ep,tp\n", n_ranks);
                free(prompt);
                return 2;
        }
        if (n_ranks > 1 && strcmp(backend, "cpu") != 0) {
                fprintf(stderr, "dsv32-run: --ranks %ld runs CPU ranks only so far (the in-process communicator over "
                        "host memory): use --backend cpu or one rank\n", n_ranks);
                free(prompt);
                return 2;
        }
        if (dump && !(df = fopen(dump, "wbe"))) {
                fprintf(stderr, "dsv32-run: cannot create %s: %s\n", dump, strerror(errno));
                goto out;
        }
        /* the KV pool: the prompt, the generated tokens and the one fed after the last */
        ro.model_dir = model_dir;
        ro.backend = backend;
        ro.kv_tokens = (int64_t)n_prompt + n_gen + 1;
        go.chunk = one_by_one ? 1 : (int)chunk;
        go.feed_last = df != NULL; /* every rank: the same passes */
        if (n_ranks > 1) {
                long cpus = threads ? threads : sysconf(_SC_NPROCESSORS_ONLN);
                threads = MAX(1, cpus / n_ranks);
        }
        ro.where = (struct dsv_backend_opts){.device = (int)device, .threads = (int)threads};
        jobs = calloc((size_t)n_ranks, sizeof(*jobs));
        comms = calloc((size_t)n_ranks, sizeof(*comms));
        if (!jobs || !comms) {
                fprintf(stderr, "dsv32-run: out of memory\n");
                goto out;
        }
        /* a rank waits this long for the others at a collective (a rank stuck elsewhere) */
        if (n_ranks > 1 && (r = dsv_comm_local_group_new((int)n_ranks, 600000, comms)) < 0) {
                fprintf(stderr, "dsv32-run: cannot create the group of %ld ranks: %s\n", n_ranks, strerror(-r));
                goto out;
        }
        for (int i = 0; i < n_ranks; i++) {
                struct rank_job *j = &jobs[i];
                j->rank = i;
                j->n_ranks = (int)n_ranks;
                j->ro = ro;
                j->ro.ep = comms[i];
                j->ro.tp = n_ranks > 1 && strcmp(layout, "ep,tp") == 0;
                j->ro.dp = n_ranks > 1 && strcmp(layout, "ep,dp") == 0;
                j->go = go;
                j->go.on_logits = !df ? NULL : i == 0 ? dump_row : j->ro.tp ? drop_row : NULL;
                j->go.ud = i == 0 ? df : NULL;
                j->prompt = prompt;
                j->n_prompt = n_prompt;
                j->n_gen = n_gen;
        }
        if (n_ranks == 1)
                rank_thread(&jobs[0]);
        else {
                pthread_t *th = calloc((size_t)n_ranks, sizeof(*th));
                int started = 0;
                if (!th) {
                        fprintf(stderr, "dsv32-run: out of memory\n");
                        goto out;
                }
                for (; started < n_ranks; started++)
                        if ((r = pthread_create(&th[started], NULL, rank_thread, &jobs[started])) != 0) {
                                fprintf(stderr, "dsv32-run: cannot start rank %d: %s\n", started, strerror(r));
                                dsv_comm_abort(comms[0]);
                                break;
                        }
                for (int i = 0; i < started; i++)
                        pthread_join(th[i], NULL);
                free(th);
                if (started < n_ranks)
                        goto out;
        }
        /* the first rank's own failure, not the others' "group broken" that followed it */
        for (int pass = 0; pass < 2; pass++)
                for (int i = 0; i < n_ranks; i++) {
                        struct rank_job *j = &jobs[i];
                        if (j->r >= 0 || (pass == 0 && (j->r == -ECONNABORTED || j->r == -ECANCELED)))
                                continue;
                        if (n_ranks > 1)
                                fprintf(stderr, "dsv32-run: rank %d: %s\n", i, j->err.msg[0] ? j->err.msg : strerror(-j->r));
                        else
                                fprintf(stderr, "dsv32-run: %s\n", j->err.msg[0] ? j->err.msg : strerror(-j->r));
                        if (df && j->r == -EIO)
                                fprintf(stderr, "dsv32-run: cannot write %s\n", dump);
                        goto out;
                }
        rt = jobs[0].rt;
        gen = jobs[0].gen;
        gs = jobs[0].gs;
        go.speculate = jobs[0].go.speculate;
        for (int i = 1; i < n_ranks && !jobs[i].ro.dp; i++)
                if (memcmp(jobs[i].gen, gen, (size_t)n_gen * sizeof(int32_t)) != 0) {
                        fprintf(stderr, "dsv32-run: rank %d generated other tokens than rank 0: the layout is broken\n", i);
                        goto out;
                }
        if (rt->backend_note[0])
                fprintf(stderr, "dsv32-run: using the %s backend: %s\n", rt->be->ops->name, rt->backend_note);
        if (stats) {
                const struct dsv_load_stats *ls = dsv_model_load_stats(rt->model);
                fprintf(stderr, "loaded %s: %.1f MB in %.3f s (%.2f GB/s, %s%s), %s numerics, %s backend, MTP %s\n", model_dir,
                        ls->bytes_tensors / 1e6, jobs[0].load_ns / 1e9,
                        ls->elapsed_ns ? ls->bytes_tensors / (double)ls->elapsed_ns : 0.0,
                        dsv_checkpoint_is_preset(dsv_model_get_checkpoint(rt->model)) ? "made by the backend's fill_random op"
                        : ls->uring                                                    ? "io_uring"
                                                                                       : "pread",
                        ls->direct ? ", O_DIRECT" : "", dsv_numerics_name(rt->numerics), dsv_backend_describe(rt->be),
                        go.speculate ? "on" : dsv_model_get_checkpoint(rt->model)->has_mtp ? "off" : "absent");
                fprintf(stderr, "load: %llu tensor bytes, %llu bytes read from disk at %.2f GB/s", (unsigned long long)ls->bytes_tensors,
                        (unsigned long long)ls->bytes_read, ls->elapsed_ns ? ls->bytes_read / (double)ls->elapsed_ns : 0.0);
                if (!rt->be->host_memory)
                        fprintf(stderr, ", %llu bytes into %s memory at %.2f GB/s (%s staging, %u in flight)",
                                (unsigned long long)ls->bytes_uploaded, rt->be->ops->name,
                                ls->upload_ns ? ls->bytes_uploaded / (double)ls->upload_ns : 0.0, ls->pinned ? "pinned" : "pageable",
                                ls->queue_depth);
                fputc('\n', stderr);
                if (n_ranks > 1) {
                        const int E = rt->cfg->n_routed_experts;
                        for (int i = 0; i < n_ranks; i++) {
                                int e0 = -1, e1 = -1;
                                for (int e = 0; e < E; e++)
                                        if (dsv_expert_owner(e, E, (int)n_ranks) == i)
                                                e1 = e, e0 = e0 < 0 ? e : e0;
                                fprintf(stderr, "rank %d: %llu tensor bytes read, routed experts %d-%d of %d\n", i,
                                        (unsigned long long)dsv_model_load_stats(jobs[i].rt->model)->bytes_tensors, e0, e1, E);
                        }
                        /* each rank's KV pool: ep,dp holds only its own sequences' pages */
                        for (int i = 0; i < n_ranks; i++)
                                fprintf(stderr, "rank %d: KV pages: at most %d of %d in use (%s)\n", i,
                                        jobs[i].rt->kv->peak_in_use, jobs[i].rt->kv->n_pages,
                                        jobs[0].ro.dp ? "its own sequences" : "every sequence, replicated");
                }
        }
        for (long g = 0; g < n_gen; g++)
                printf("%s%d", g ? "," : "", gen[g]);
        printf("\n");
        if (stats) {
                fprintf(stderr, "prefill: %d tokens in %.3f s (%.1f tok/s); decode: %ld tokens in %.3f s (%.1f tok/s), %lld passes\n",
                        n_prompt, gs.prefill_ns / 1e9, n_prompt / (gs.prefill_ns / 1e9), n_gen, gs.decode_ns / 1e9,
                        n_gen > 0 && gs.decode_ns ? n_gen / (gs.decode_ns / 1e9) : 0.0, (long long)gs.forward_passes);
                if (go.speculate)
                        fprintf(stderr, "mtp: %d draft(s) per step, %lld drafted, %lld accepted (acceptance %.3f), %.2f tokens per pass\n",
                                go.n_draft, (long long)gs.drafted, (long long)gs.accepted,
                                gs.drafted ? (double)gs.accepted / (double)gs.drafted : 0.0,
                                gs.forward_passes ? (double)(n_gen - 1) / (double)gs.forward_passes : 0.0);
                struct dsv_graph_stats st;
                dsv_model_graph_stats(rt->model, &st);
                if (dsv_backend_has_graphs(rt->be))
                        fprintf(stderr, "graphs: %s, %llu captures, %llu replays, %llu decode steps eager, %llu failed captures\n",
                                ro.graphs_off ? "off (--cuda-graphs no)" : "on", (unsigned long long)st.captures,
                                (unsigned long long)st.replays, (unsigned long long)st.eager, (unsigned long long)st.failed);
                else
                        fprintf(stderr, "graphs: none (the %s backend has no graphs)\n", rt->be->ops->name);
                {
                        struct dsv_model_pass_stats ps = dsv_model_pass_stats(rt->model);
                        fprintf(stderr, "passes: %llu forward passes, at most %d tokens in one (cap %d)\n",
                                (unsigned long long)ps.passes, ps.largest, dsv_model_pass_tokens(rt->model));
                }
        }
        ret = 0;
out:
        if (df && fclose(df) != 0 && ret == 0) {
                fprintf(stderr, "dsv32-run: cannot write %s\n", dump);
                ret = 1;
        }
        for (int i = 0; jobs && i < n_ranks; i++) {
                dsv_runtime_free(jobs[i].rt);
                free(jobs[i].gen);
        }
        for (int i = 0; comms && i < n_ranks; i++)
                dsv_comm_free(comms[i]);
        free(jobs);
        free(comms);
        free(prompt);
        return ret;
}
