/* Runs a libFuzzer target without libFuzzer: every file named on the command line (or every
 * file in a named directory) is fed to LLVMFuzzerTestOneInput once. `make check` uses it to
 * replay each target's seed corpus under the normal compiler (and ASan/UBSan builds); real
 * fuzzing uses --enable-fuzzers with clang. */
#include "config.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path) {
        FILE *f = fopen(path, "rbe");
        uint8_t *buf;
        long n;
        if (!f) {
                fprintf(stderr, "cannot open %s\n", path);
                return 1;
        }
        fseek(f, 0, SEEK_END);
        n = ftell(f);
        fseek(f, 0, SEEK_SET);
        buf = malloc(n > 0 ? (size_t)n : 1);
        if (!buf || (n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n)) {
                fclose(f);
                free(buf);
                fprintf(stderr, "cannot read %s\n", path);
                return 1;
        }
        fclose(f);
        LLVMFuzzerTestOneInput(buf, (size_t)(n > 0 ? n : 0));
        free(buf);
        return 0;
}

int main(int argc, char **argv) {
        int runs = 0, fails = 0;
        for (int i = 1; i < argc; i++) {
                struct stat st;
                if (stat(argv[i], &st) < 0) {
                        fprintf(stderr, "cannot stat %s\n", argv[i]);
                        return 1;
                }
                if (S_ISDIR(st.st_mode)) {
                        DIR *d = opendir(argv[i]);
                        struct dirent *de;
                        if (!d)
                                return 1;
                        while ((de = readdir(d))) {
                                char p[4096];
                                if (de->d_name[0] == '.')
                                        continue;
                                snprintf(p, sizeof(p), "%s/%s", argv[i], de->d_name);
                                fails += run_file(p);
                                runs++;
                        }
                        closedir(d);
                } else {
                        fails += run_file(argv[i]);
                        runs++;
                }
        }
        printf("%d inputs replayed\n", runs);
        return fails ? 1 : 0;
}
