/* dsv32-run: the offline runner. Loads a checkpoint, prefills the given token ids and
 * prints the greedy continuation; optionally dumps every position's logits. For debugging
 * and for outside checks against other implementations. */
#include "config.h"

#include <getopt.h>
#include <math.h>

#include "daemon/model.h"
#include "ipc/idlist.h"
#include "kernels/backend_plugin.h"

static void help(void) {
        printf("Usage: dsv32-run --model DIR --tokens ID,ID,... [options]\n"
               "Run a DeepSeek-V3.2 checkpoint on the CPU and print the greedy continuation ids\n"
               "(comma-separated, one line).\n\n"
               "Options:\n"
               "  --model DIR            checkpoint directory (config.json + safetensors)\n"
               "  --tokens LIST          prompt token ids, separated by commas and/or spaces\n"
               "  --generate N           tokens to generate (default 16; 0: prompt only)\n"
               "  --dump-logits FILE     write little-endian float32 logits, one row of vocab_size\n"
               "                         per prompt position, then one per generated token (the\n"
               "                         logits after feeding it), in order\n"
               "  --decode-one-by-one    feed the prompt one token at a time (decode path)\n"
               "  --chunk N              prefill the prompt in chunks of N tokens\n"
               "  --numerics MODE        faithful (default: the reference's bf16/FP8 rounding) or\n"
               "                         exact (FP8 weights dequantized, fp32 everywhere else)\n"
               "  --threads N            CPU threads (default: all)\n"
               "  --backend NAME         cpu (default), cuda (the dsv32-backend-cuda.so plugin) or auto\n"
               "  --stats                print load and speed figures to stderr\n"
               "  --version              print the version\n"
               "  -h, --help             this text\n");
}

static int argmax(const float *v, int n) {
        int best = 0;
        for (int i = 1; i < n; i++)
                if (v[i] > v[best])
                        best = i;
        return best;
}

int main(int argc, char **argv) {
        static const struct option opts[] = {
                {"model", required_argument, NULL, 'm'},   {"tokens", required_argument, NULL, 't'},
                {"generate", required_argument, NULL, 'g'}, {"dump-logits", required_argument, NULL, 'd'},
                {"decode-one-by-one", no_argument, NULL, '1'}, {"chunk", required_argument, NULL, 'c'},
                {"numerics", required_argument, NULL, 'n'}, {"threads", required_argument, NULL, 'j'},
                {"stats", no_argument, NULL, 's'},          {"help", no_argument, NULL, 'h'},
                {"backend", required_argument, NULL, 'b'}, {"version", no_argument, NULL, 'V'},
                {0},
        };
        const char *model_dir = NULL, *tokens_arg = NULL, *dump = NULL, *backend = "cpu";
        long n_gen = 16, chunk = 0, threads = 0;
        bool one_by_one = false, stats = false;
        struct dsv_model_opts mo = {.numerics = DSV_NUMERICS_FAITHFUL};
        struct dsv_error err = {{0}};
        struct dsv_backend *be = NULL;
        struct dsv_model *m = NULL;
        struct dsv_kv_pool *kv = NULL;
        struct dsv_kv_seq seq = {0};
        int32_t *prompt = NULL, *gen = NULL;
        float *logits = NULL;
        FILE *df = NULL;
        int n_prompt = 0, c, r, ret = 1;
        uint64_t t0, t_prefill = 0, t_decode = 0;

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
                        mo.numerics = (enum dsv_numerics)r;
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
        if (dsv_parse_id_list(tokens_arg, &prompt, &n_ids) < 0 || n_ids == 0 || n_ids > INT32_MAX) {
                fprintf(stderr, "dsv32-run: --tokens must be a comma-separated list of token ids\n");
                free(prompt);
                return 2;
        }
        n_prompt = (int)n_ids;
        if ((r = dsv_backend_open(backend, strcmp(backend, "cuda") == 0 ? 0 : (int)threads, &be, &err)) < 0) {
                fprintf(stderr, "dsv32-run: cannot create the %s backend: %s\n", backend, err.msg);
                goto out;
        }
        t0 = dsv_now_ns();
        if ((r = dsv_model_load(model_dir, be, &mo, &m, &err)) < 0) {
                fprintf(stderr, "dsv32-run: %s\n", err.msg[0] ? err.msg : strerror(-r));
                goto out;
        }
        const struct dsv_model_config *cfg = dsv_model_get_config(m);
        if (stats) {
                const struct dsv_load_stats *ls = dsv_model_load_stats(m);
                fprintf(stderr, "loaded %s: %.1f MB in %.3f s (%.2f GB/s, %s%s), %s numerics\n", model_dir,
                        ls->bytes_tensors / 1e6, (dsv_now_ns() - t0) / 1e9,
                        ls->elapsed_ns ? ls->bytes_tensors / (double)ls->elapsed_ns : 0.0, ls->uring ? "io_uring" : "pread",
                        ls->direct ? ", O_DIRECT" : "", dsv_numerics_name(mo.numerics));
        }
        for (int i = 0; i < n_prompt; i++)
                if (prompt[i] >= cfg->vocab_size) {
                        fprintf(stderr, "dsv32-run: token %d is outside the vocabulary (%d ids)\n", prompt[i], cfg->vocab_size);
                        goto out;
                }
        if ((int64_t)n_prompt + n_gen + 1 > cfg->max_position_embeddings) {
                fprintf(stderr, "dsv32-run: %d prompt + %ld generated tokens exceed max_position_embeddings (%d)\n", n_prompt,
                        n_gen, cfg->max_position_embeddings);
                goto out;
        }
        int total = n_prompt + (int)n_gen + 1;
        if ((r = dsv_kv_pool_new(be, cfg, dsv_numerics_kv_format(mo.numerics), DIV_ROUND_UP(total, DSV_KV_PAGE_TOKENS), &kv)) < 0 ||
            (r = dsv_kv_seq_reserve(kv, &seq, total)) < 0) {
                fprintf(stderr, "dsv32-run: cannot allocate the KV cache: %s\n", strerror(-r));
                goto out;
        }
        if (dump && !(df = fopen(dump, "wbe"))) {
                fprintf(stderr, "dsv32-run: cannot create %s: %s\n", dump, strerror(errno));
                goto out;
        }
        logits = malloc((size_t)n_prompt * cfg->vocab_size * sizeof(float));
        gen = malloc(((size_t)n_gen + 1) * sizeof(int32_t));
        int32_t *pos = malloc((size_t)n_prompt * sizeof(int32_t)), *sq = calloc((size_t)n_prompt, sizeof(int32_t));
        bool *want = malloc((size_t)n_prompt);
        if (!logits || !gen || !pos || !sq || !want) {
                free(pos);
                free(sq);
                free(want);
                fprintf(stderr, "dsv32-run: out of memory\n");
                goto out;
        }
        struct dsv_kv_seq *seqs[1] = {&seq};
        int step = one_by_one ? 1 : (chunk > 0 ? (int)chunk : n_prompt);
        uint64_t tp = dsv_now_ns();
        float *last = NULL;
        for (int s = 0; s < n_prompt; s += step) {
                int n = MIN(step, n_prompt - s);
                for (int i = 0; i < n; i++) {
                        pos[i] = s + i;
                        want[i] = df || s + i == n_prompt - 1;
                }
                struct dsv_batch b = {.n_tokens = n, .token = prompt + s, .pos = pos, .seq = sq, .want_logits = want,
                                      .n_seqs = 1, .seqs = seqs};
                int n_out = 0;
                for (int i = 0; i < n; i++)
                        n_out += want[i];
                if ((r = dsv_model_forward(m, kv, &b, logits, &err)) < 0) {
                        fprintf(stderr, "dsv32-run: %s\n", err.msg);
                        break;
                }
                if (df && fwrite(logits, sizeof(float) * cfg->vocab_size, (size_t)n_out, df) != (size_t)n_out) {
                        fprintf(stderr, "dsv32-run: cannot write %s\n", dump);
                        r = -EIO;
                        break;
                }
                if (n_out)
                        memmove(logits, logits + (size_t)(n_out - 1) * cfg->vocab_size, cfg->vocab_size * sizeof(float));
                last = logits;
        }
        free(pos);
        free(sq);
        free(want);
        if (r < 0)
                goto out;
        t_prefill = dsv_now_ns() - tp;
        uint64_t td = dsv_now_ns();
        for (long g = 0; g < n_gen; g++) {
                gen[g] = argmax(last, cfg->vocab_size);
                if (g == n_gen - 1 && !df)
                        break;
                int32_t p = n_prompt + (int)g, s0 = 0;
                struct dsv_batch b = {.n_tokens = 1, .token = &gen[g], .pos = &p, .seq = &s0, .n_seqs = 1, .seqs = seqs};
                if ((r = dsv_model_forward(m, kv, &b, logits, &err)) < 0) {
                        fprintf(stderr, "dsv32-run: %s\n", err.msg);
                        goto out;
                }
                if (df && fwrite(logits, sizeof(float) * cfg->vocab_size, 1, df) != 1) {
                        fprintf(stderr, "dsv32-run: cannot write %s\n", dump);
                        goto out;
                }
        }
        t_decode = dsv_now_ns() - td;
        for (long g = 0; g < n_gen; g++)
                printf("%s%d", g ? "," : "", gen[g]);
        printf("\n");
        if (stats)
                fprintf(stderr, "prefill: %d tokens in %.3f s (%.1f tok/s); decode: %ld tokens in %.3f s (%.1f tok/s)\n", n_prompt,
                        t_prefill / 1e9, n_prompt / (t_prefill / 1e9), n_gen, t_decode / 1e9,
                        n_gen > 0 ? n_gen / (t_decode / 1e9) : 0.0);
        ret = 0;
out:
        if (df && fclose(df) != 0 && ret == 0) {
                fprintf(stderr, "dsv32-run: cannot write %s\n", dump);
                ret = 1;
        }
        if (kv)
                dsv_kv_seq_release(kv, &seq);
        dsv_kv_pool_free(kv);
        dsv_model_free(m);
        dsv_backend_free(be);
        free(prompt);
        free(gen);
        free(logits);
        return ret;
}
