/* dsv32-mkmodel: writes a deterministic random DeepSeek-V3.2 checkpoint in the real Hugging
 * Face layout (see daemon/synth.h). */
#include "config.h"

#include <getopt.h>

#include "daemon/synth.h"
#include "daemon/tokenizer/tokenizer.h"

static void help(void) {
        printf("Usage: dsv32-mkmodel --preset NAME --out DIR [options]   (--model DIR: the same as --out)\n"
               "Write a deterministic random DeepSeek-V3.2 checkpoint in the Hugging Face layout.\n\n"
               "Presets:\n"
               "  tiny            3 layers (1 dense + 2 MoE), hidden 256, 16 experts in 4 groups,\n"
               "                  index_topk 8; runs in milliseconds (tests, the demo)\n"
               "  small           4 layers, hidden 1024, 64 experts, ~200 MB (CPU benchmarks)\n"
               "  m474            8 layers, hidden 1024, 32 experts top-4, vocab 32768: 474M\n"
               "                  parameters, ~0.55 GB (CPU speed against other CPU engines)\n"
               "  v32-layers:N    the real 671B widths and expert counts with N layers (GPU work;\n"
               "                  use --config-only on small machines)\n"
               "  v32             the full 61-layer configuration (use with --config-only)\n\n"
               "Options:\n"
               "  --out DIR       output directory (created)\n"
               "  --seed N        random seed (default 1); same seed, same bytes\n"
               "  --shards N      number of .safetensors shards (default 2)\n"
               "  --mtp           include the multi-token-prediction layer (speculative decoding)\n"
               "  --mtp-predictable\n"
               "                  include an MTP layer that drafts well, so that speculative\n"
               "                  decoding's acceptance can be measured: it passes the next token's\n"
               "                  embedding through eh_proj into a copy of the last main layer\n"
               "                  (the random --mtp layer's drafts are almost never accepted)\n"
               "  --config-only   write config.json only\n"
               "  --no-tokenizer  do not write tokenizer.json / tokenizer_config.json (by default a\n"
               "                  small byte-level BPE with the DeepSeek special tokens is trained)\n"
               "  --version       print the version\n"
               "  -h, --help      this text\n");
}

int main(int argc, char **argv) {
        static const struct option opts[] = {
                {"preset", required_argument, NULL, 'p'}, {"out", required_argument, NULL, 'o'},
                {"seed", required_argument, NULL, 's'},   {"shards", required_argument, NULL, 'n'},
                {"mtp", no_argument, NULL, 'm'},          {"config-only", no_argument, NULL, 'c'},
                {"mtp-predictable", no_argument, NULL, 'P'},
                {"no-tokenizer", no_argument, NULL, 'T'}, {"model", required_argument, NULL, 'o'},
                {"version", no_argument, NULL, 'v'},      {"help", no_argument, NULL, 'h'}, {0},
        };
        struct dsv_synth_opts so = {.seed = 1, .n_shards = 2};
        struct dsv_model_config cfg;
        struct dsv_error err = {{0}};
        const char *preset = NULL, *out = NULL;
        bool no_tokenizer = false;
        long v;
        int c, r;

        argv[0] = (char *)"dsv32-mkmodel"; /* getopt's messages: not the build tree's libtool path */
        while ((c = getopt_long(argc, argv, "h", opts, NULL)) >= 0) {
                switch (c) {
                case 'p':
                        preset = optarg;
                        break;
                case 'v':
                        printf("dsv32-mkmodel %s\n", PACKAGE_VERSION);
                        return 0;
                case 'o':
                        out = optarg;
                        break;
                case 's':
                        if (dsv_parse_int(optarg, 0, LONG_MAX, &v) < 0) {
                                fprintf(stderr, "dsv32-mkmodel: --seed needs a non-negative integer\n");
                                return 2;
                        }
                        so.seed = (uint64_t)v;
                        break;
                case 'n':
                        if (dsv_parse_int(optarg, 1, 64, &v) < 0) {
                                fprintf(stderr, "dsv32-mkmodel: --shards needs 1..64\n");
                                return 2;
                        }
                        so.n_shards = (int)v;
                        break;
                case 'm':
                        so.mtp = true;
                        break;
                case 'P':
                        so.mtp = so.mtp_predictable = true;
                        break;
                case 'c':
                        so.config_only = true;
                        break;
                case 'T':
                        no_tokenizer = true;
                        break;
                case 'h':
                        help();
                        return 0;
                default:
                        fprintf(stderr, "Try 'dsv32-mkmodel --help'.\n");
                        return 2;
                }
        }
        if (!preset || !out || optind != argc) {
                fprintf(stderr, "dsv32-mkmodel: --preset and --out are required (try --help)\n");
                return 2;
        }
        if (dsv_model_config_preset(preset, &cfg, &err) < 0) {
                fprintf(stderr, "dsv32-mkmodel: %s\n", err.msg);
                return 2;
        }
        if (so.mtp && cfg.num_nextn_predict_layers < 1)
                cfg.num_nextn_predict_layers = 1;
        r = dsv_synth_write(out, &cfg, &so, &err);
        if (r < 0) {
                fprintf(stderr, "dsv32-mkmodel: %s\n", err.msg[0] ? err.msg : strerror(-r));
                return 1;
        }
        /* a byte-level BPE tokenizer with the DeepSeek special tokens and exactly vocab_size ids */
        if (!so.config_only && !no_tokenizer) {
                r = dsv_tok_synth_write(out, cfg.vocab_size, cfg.bos_token_id, cfg.eos_token_id, so.seed, &err);
                if (r < 0) {
                        fprintf(stderr, "dsv32-mkmodel: Failed to write the tokenizer to %s: %s\n", out,
                                err.msg[0] ? err.msg : strerror(-r));
                        return 1;
                }
        }
        return 0;
}
