/* dsv32-tokenize: the tokenizer on the command line, for checks from outside (the Hugging
 * Face oracle test, fuzzing by hand). Line protocol, one string per line both ways:
 *   encode (default): each input line is a string written with backslash escapes
 *     (\\ \n \r \t \xHH), each output line its token ids separated by spaces;
 *   --decode: each input line is ids separated by spaces, each output line the text with
 *     the same escapes (control bytes and backslash escaped, other UTF-8 as is).
 * --synthesize DIR writes the generated tokenizer of tiny checkpoints (dsv_tok_synth_write). */
#include "config.h"

#include <getopt.h>

#include "daemon/tokenizer/tokenizer.h"

static int unescape(const char *s, size_t n, char *out, size_t *ret) {
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
                if (s[i] != '\\') {
                        out[k++] = s[i];
                        continue;
                }
                if (++i >= n)
                        return -EINVAL;
                switch (s[i]) {
                case '\\':
                        out[k++] = '\\';
                        break;
                case 'n':
                        out[k++] = '\n';
                        break;
                case 'r':
                        out[k++] = '\r';
                        break;
                case 't':
                        out[k++] = '\t';
                        break;
                case 'x': {
                        int v = 0;
                        if (i + 2 >= n)
                                return -EINVAL;
                        for (int j = 1; j <= 2; j++) {
                                char c = s[i + j];
                                int d = c >= '0' && c <= '9' ? c - '0'
                                        : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                        : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                                               : -1;
                                if (d < 0)
                                        return -EINVAL;
                                v = v * 16 + d;
                        }
                        out[k++] = (char)v;
                        i += 2;
                        break;
                }
                default:
                        return -EINVAL;
                }
        }
        *ret = k;
        return 0;
}

static void escape(FILE *f, const char *s, size_t n) {
        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char)s[i];
                if (c == '\\')
                        fputs("\\\\", f);
                else if (c == '\n')
                        fputs("\\n", f);
                else if (c == '\r')
                        fputs("\\r", f);
                else if (c == '\t')
                        fputs("\\t", f);
                else if (c < 0x20 || c == 0x7f)
                        fprintf(f, "\\x%02x", c);
                else
                        putc(c, f);
        }
}

static void help(void) {
        printf("Usage: dsv32-tokenize --tokenizer FILE|--model DIR [--decode] [--bos] [--skip-special]\n"
               "Encodes stdin line by line (backslash escapes \\\\ \\n \\r \\t \\xHH) to token ids,\n"
               "or with --decode ids to escaped text.\n"
               "  --tokenizer FILE   tokenizer.json (tokenizer_config.json is read next to it)\n"
               "  --model DIR        the checkpoint directory: DIR/tokenizer.json\n"
               "  --decode           read id lines, write text lines\n"
               "  --bos              add the special tokens tokenizer_config.json asks for (BOS for\n"
               "                     DeepSeek; as dsv32 tokenize --bos); also --add-special\n"
               "  --skip-special     with --decode, leave out special tokens\n"
               "  --synthesize DIR   write a generated tokenizer.json + tokenizer_config.json to DIR\n"
               "                     (--vocab-size N, default 4096; --bos-id ID, default 0; --eos-id ID,\n"
               "                     default 1; --seed S, default 1)\n"
               "  --version          print the version\n");
}

int main(int argc, char **argv) {
        static const struct option opts[] = {
                {"tokenizer", required_argument, NULL, 't'}, {"decode", no_argument, NULL, 'd'},
                {"add-special", no_argument, NULL, 'a'},     {"skip-special", no_argument, NULL, 's'},
                {"help", no_argument, NULL, 'h'},            {"synthesize", required_argument, NULL, 'S'},
                {"vocab-size", required_argument, NULL, 'V'}, {"bos-id", required_argument, NULL, 'B'},
                {"eos-id", required_argument, NULL, 'E'},    {"seed", required_argument, NULL, 'R'},
                {"bos", no_argument, NULL, 'a'},             {"model", required_argument, NULL, 'M'},
                {"version", no_argument, NULL, 'v'},         {},
        };
        const char *path = NULL, *synth = NULL;
        _cleanup_free_ char *model_path = NULL;
        long vocab = 4096, bos = 0, eos = 1, seed = 1;
        bool decode = false;
        unsigned flags = 0;
        int c;
        argv[0] = (char *)"dsv32-tokenize"; /* getopt's messages: not the build tree's libtool path */
        while ((c = getopt_long(argc, argv, "t:dash", opts, NULL)) >= 0)
                switch (c) {
                case 't':
                        path = optarg;
                        break;
                case 'M':
                        free(model_path);
                        if (asprintf(&model_path, "%s/tokenizer.json", optarg) < 0)
                                return 1;
                        path = model_path;
                        break;
                case 'v':
                        printf("dsv32-tokenize %s\n", PACKAGE_VERSION);
                        return 0;
                case 'd':
                        decode = true;
                        break;
                case 'a':
                        flags |= DSV_TOK_ADD_SPECIAL;
                        break;
                case 's':
                        flags |= DSV_TOK_SKIP_SPECIAL;
                        break;
                case 'h':
                        help();
                        return 0;
                case 'S':
                        synth = optarg;
                        break;
                case 'V':
                case 'B':
                case 'E':
                case 'R': {
                        long *dst = c == 'V' ? &vocab : c == 'B' ? &bos : c == 'E' ? &eos : &seed;
                        if (dsv_parse_int(optarg, 0, INT32_MAX, dst) < 0) {
                                fprintf(stderr, "dsv32-tokenize: invalid number: %s\n", optarg);
                                return 2;
                        }
                        break;
                }
                default:
                        fprintf(stderr, "Try 'dsv32-tokenize --help'.\n");
                        return 2;
                }
        struct dsv_error err = {{0}};
        if (synth) {
                if (dsv_tok_synth_write(synth, (int)vocab, (int)bos, (int)eos, (uint64_t)seed, &err) < 0) {
                        fprintf(stderr, "dsv32-tokenize: %s\n", err.msg);
                        return 1;
                }
                return 0;
        }
        if (!path || optind != argc) {
                help();
                return 2;
        }

        _cleanup_tok_ struct dsv_tok *tok = NULL;
        int r = dsv_tok_load(path, NULL, &tok, &err);
        if (r < 0) {
                fprintf(stderr, "dsv32-tokenize: %s\n", err.msg);
                return 1;
        }

        static char obuf[1 << 16];
        setvbuf(stdout, obuf, _IOFBF, sizeof(obuf));
        _cleanup_free_ char *line = NULL, *text = NULL;
        size_t cap = 0, text_cap = 0;
        ssize_t n;
        unsigned long lineno = 0;
        struct dsv_tok_ids ids = {0};
        int ret = 0;
        while ((n = getline(&line, &cap, stdin)) >= 0) {
                lineno++;
                if (n > 0 && line[n - 1] == '\n')
                        n--;
                if (!decode) {
                        size_t len;
                        if ((size_t)n + 1 > text_cap) {
                                free(text);
                                text_cap = (size_t)n + 1;
                                text = malloc(text_cap);
                                if (!text) {
                                        fprintf(stderr, "dsv32-tokenize: out of memory\n");
                                        ret = 1;
                                        break;
                                }
                        }
                        if (unescape(line, (size_t)n, text, &len) < 0) {
                                fprintf(stderr, "dsv32-tokenize: line %lu: bad escape\n", lineno);
                                ret = 1;
                                break;
                        }
                        ids.n = 0;
                        r = dsv_tok_encode(tok, text, len, flags & DSV_TOK_ADD_SPECIAL, &ids);
                        if (r < 0) {
                                fprintf(stderr, "dsv32-tokenize: line %lu: %s\n", lineno, strerror(-r));
                                ret = 1;
                                break;
                        }
                        for (size_t i = 0; i < ids.n; i++)
                                printf(i ? " %d" : "%d", ids.v[i]);
                        putchar('\n');
                } else {
                        char *p = line, *end;
                        line[n] = 0;
                        ids.n = 0;
                        for (;;) {
                                while (*p == ' ' || *p == '\t' || *p == '\r')
                                        p++;
                                if (!*p)
                                        break;
                                errno = 0;
                                long v = strtol(p, &end, 10);
                                if (end == p || errno || v < INT32_MIN || v > INT32_MAX) {
                                        fprintf(stderr, "dsv32-tokenize: line %lu: bad id\n", lineno);
                                        ret = 1;
                                        goto out;
                                }
                                if (dsv_tok_ids_push(&ids, (int32_t)v) < 0) {
                                        ret = 1;
                                        goto out;
                                }
                                p = end;
                        }
                        _cleanup_free_ char *s = NULL;
                        size_t len;
                        r = dsv_tok_decode(tok, ids.v, ids.n, flags & DSV_TOK_SKIP_SPECIAL, &s, &len);
                        if (r < 0) {
                                fprintf(stderr, "dsv32-tokenize: line %lu: %s\n", lineno, strerror(-r));
                                ret = 1;
                                break;
                        }
                        escape(stdout, s, len);
                        putchar('\n');
                }
        }
out:
        dsv_tok_ids_done(&ids);
        if (fflush(stdout) != 0) {
                fprintf(stderr, "dsv32-tokenize: write error: %m\n");
                ret = 1;
        }
        return ret;
}
