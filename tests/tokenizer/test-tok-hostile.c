/* Hostile input: megabytes of one character, invalid UTF-8, NULs, almost-special-token
 * runs. Encode must succeed, take time linear in the input (8x the input may take at most
 * 32x the CPU time, best of three runs) and memory bounded by a small multiple of it (peak RSS,
 * not checked under sanitizers). On the generated tokenizer (DeepSeek's pre-tokenizer) and
 * on the real DeepSeek-V3 tokenizer when installed. */
#include "tests/tokenizer/tok-test.h"

#include <sys/resource.h>
#include <time.h>

#include "daemon/rng.h"

struct pattern {
        const char *name;
        const char *unit;
        size_t unit_len;
};

static const struct pattern patterns[] = {
        {"letter", "a", 1},
        {"space", " ", 1},
        {"newline", "\n", 1},
        {"crlf", "\r\n", 2},
        {"digit", "7", 1},
        {"punct", "!", 1},
        {"nul", "\0", 1},
        {"invalid", "\x80", 1},
        {"surrogates", "\xed\xa0\x80", 3},
        {"han", "\xe4\xb8\xad", 3},
        {"e-acute", "\xc3\xa9", 2},
        {"combining", "\xcc\x81", 2},
        {"space-letter", " a", 2},
        {"letter-space", "a ", 2},
        {"spaces-x", "   x", 4},
        {"almost-special", "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c", 26},
        {"special-prefix", "<\xef\xbd\x9c", 4},
        {"emoji-zwj", "\xf0\x9f\x91\xa8\xe2\x80\x8d", 7},
        {"random-bytes", NULL, 0},
};

static char *make(const struct pattern *p, size_t len) {
        char *s = malloc(len + 8);
        if (!s)
                exit(1);
        if (!p->unit) {
                for (size_t i = 0; i < len; i++)
                        s[i] = (char)(dsv_mix64(i * 0x9e3779b97f4a7c15ull) & 0xff);
                return s;
        }
        for (size_t i = 0; i < len; i += p->unit_len)
                memcpy(s + i, p->unit, MIN(p->unit_len, len - i));
        return s;
}

static _unused_ long peak_kib(void) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        return ru.ru_maxrss;
}

/* CPU time of this thread: other processes on a busy machine do not count (wall-clock time
 * made the linearity check fail when the machine was loaded) */
static uint64_t cpu_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double time_encode(const struct dsv_tok *tok, const char *s, size_t n, size_t *tokens) {
        double best = 1e9;
        for (int rep = 0; rep < 3; rep++) {
                struct dsv_tok_ids ids = {0};
                uint64_t t0 = cpu_ns();
                int r = dsv_tok_encode(tok, s, n, 0, &ids);
                double dt = (double)(cpu_ns() - t0) / 1e9;
                CHECK(r == 0, "encode: %s", strerror(-r));
                best = MIN(best, dt);
                *tokens = ids.n;
                dsv_tok_ids_done(&ids);
        }
        return best;
}

static void run(const struct dsv_tok *tok, const char *which) {
        const size_t small = 256u << 10, big = 2u << 20;
#ifndef DSV_SANITIZERS
        long base = peak_kib();
#endif
        for (size_t i = 0; i < ARRAY_SIZE(patterns); i++) {
                const struct pattern *p = &patterns[i];
                char *s = make(p, big);
                size_t n_small, n_big;
                double t_small = time_encode(tok, s, small, &n_small);
                double t_big = time_encode(tok, s, big, &n_big);
                printf("%s %-15s %4zu KiB %.4f s, %5zu KiB %.4f s (%zu tokens), ratio %.1f\n", which, p->name, small >> 10,
                       t_small, big >> 10, t_big, n_big, t_big / MAX(t_small, 1e-4));
                /* 8x the input: linear is ~8x; allow for a busy machine, never the 64x of quadratic */
                CHECK(t_big <= 32 * MAX(t_small, 5e-3), "%s: %s is not linear: %.4f s vs %.4f s", which, p->name, t_big,
                       t_small);
                EXPECT(n_big > 0);
#ifndef DSV_SANITIZERS
                long grown = peak_kib() - base;
                CHECK(grown <= (long)(32 * big / 1024) + 32 * 1024, "%s: %s: peak memory grew by %ld KiB", which, p->name,
                       grown);
#endif
                free(s);
        }
}

int main(void) {
        char path[8192];
        struct dsv_tok *tok = tt_synth(4096, 0, 1, path, sizeof(path));
        run(tok, "synthetic");
        dsv_tok_free(tok);
        if (tt_deepseek_path(path, sizeof(path))) {
                struct dsv_error err = {{0}};
                CHECK(dsv_tok_load(path, NULL, &tok, &err) == 0, "%s", err.msg);
                if (tok) {
                        run(tok, "deepseek");
                        dsv_tok_free(tok);
                }
        } else
                printf("DeepSeek-V3 tokenizer.json not installed: synthetic tokenizer only\n");
        return test_result("test-tok-hostile");
}
