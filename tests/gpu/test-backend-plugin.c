/* The backend loader (kernels/backend_plugin.c) without a GPU: "cpu" opens the reference
 * backend, "auto" falls back to it when no GPU plugin starts and never picks the CPU
 * emulation of CUDA (saying why), a plugin is found through DSV32_BACKEND_PATH (directory or
 * file), a candidate without the device hands over to the next one, its optional entries are
 * resolved, an ABI mismatch and a missing plugin give errors that say what was tried and what
 * to do, and bad names are refused. The fake plugins are built by tests/gpu/local.mk, the
 * emulated CUDA plugin by tests/gpu/emu/local.mk. */
#include "config.h"

#include "kernels/backend_plugin.h"
#include "tests/unit/testutil.h"

int main(void) {
        struct dsv_backend *be = NULL;
        struct dsv_error err;
        const char *b = getenv("top_builddir");
        char dir[4096], file[8400];
        int r;

        snprintf(dir, sizeof(dir), "%s/tests/gpu", b ? b : ".");
        r = dsv_backend_open("cpu", &(struct dsv_backend_opts){.threads = 1}, &be, &err);
        CHECK(r == 0 && be && strcmp(be->ops->name, "cpu") == 0, "cpu backend: %d %s", r, err.msg);
        CHECK(dsv_backend_sample(be, NULL, NULL, 0, NULL) == -EOPNOTSUPP, "no device sampler on the CPU");
        /* the CPU backend describes its threads and kernels (kernels/cpu/gemm_isa.c) */
        CHECK(strstr(dsv_backend_describe(be), "1 thread, ") == dsv_backend_describe(be) &&
                      strstr(dsv_backend_describe(be), " kernels") != NULL,
              "describe cpu: %s", dsv_backend_describe(be));
        dsv_backend_free(be);

        /* auto: cuda when it starts, else cpu; on this machine either is fine, but it must open */
        be = NULL;
        r = dsv_backend_open("auto", NULL, &be, &err);
        CHECK(r == 0 && be, "auto: %d %s", r, err.msg);
        if (be)
                printf("auto opened: %s\n", dsv_backend_describe(be));
        dsv_backend_free(be);
        /* regression: auto gives the GPU backend the device and the CPU backend the threads (the
         * thread count went to the plugin as a device index and the CPU got all cores), and says
         * why the GPU backend was not used */
        be = NULL;
        r = dsv_backend_open("auto", &(struct dsv_backend_opts){.device = 0, .threads = 3}, &be, &err);
        CHECK(r == 0 && be, "auto with threads: %d %s", r, err.msg);
        if (be && strcmp(be->ops->name, "cpu") == 0) {
                CHECK(be->n_threads == 3, "auto fell back to the CPU with %d threads, asked for 3", be->n_threads);
                CHECK(err.msg[0] != 0, "auto fell back to the CPU without saying why");
                printf("auto fell back: %s\n", err.msg);
        }
        dsv_backend_free(be);
        CHECK(dsv_backend_open("cpu", &(struct dsv_backend_opts){.device = -1}, &be, &err) == -EINVAL, "negative device");

        /* a plugin through DSV32_BACKEND_PATH: a missing directory first, then the plugin's file
         * (a loaded plugin stays loaded: later opens of "fake" reuse it) */
        snprintf(file, sizeof(file), "/nonexistent/dsv32:%s/dsv32-backend-fake.so", dir);
        setenv("DSV32_BACKEND_PATH", file, 1);
        be = NULL;
        r = dsv_backend_open("fake", &(struct dsv_backend_opts){.device = 0}, &be, &err);
        CHECK(r == 0 && be && strcmp(be->ops->name, "fake") == 0, "fake plugin: %d %s", r, err.msg);
        if (be) {
                CHECK(strcmp(dsv_backend_describe(be), "fake backend for tests") == 0, "describe resolved");
                CHECK(strcmp(dsv_backend_last_error(be), "the fake backend has no device") == 0, "last_error resolved");
                CHECK(dsv_backend_sample(be, NULL, NULL, 0, NULL) == -EOPNOTSUPP, "no sampler in the fake plugin");
                dsv_backend_free(be);
        }
        r = dsv_backend_open("fake", &(struct dsv_backend_opts){.device = 1, .threads = 0}, &be, &err);
        CHECK(r == -ENODEV, "a plugin's -ENODEV comes through: %d", r);
        printf("fake on device 1: %s\n", err.msg);
        CHECK(strstr(err.msg, "has no device") != NULL, "the plugin's own reason is in the message: %s", err.msg);

        /* a candidate without the device hands over to the next one on the path */
        snprintf(file, sizeof(file), "%s/dsv32-backend-fake.so:%s/dsv32-backend-fake2.so", dir, dir);
        setenv("DSV32_BACKEND_PATH", file, 1);
        be = NULL;
        r = dsv_backend_open("fake", &(struct dsv_backend_opts){.device = 0}, &be, &err);
        CHECK(r == 0 && be && strcmp(dsv_backend_describe(be), "fake backend for tests") == 0 && !dsv_backend_is_emulated(be),
              "device 0: the first candidate: %d %s", r, err.msg);
        dsv_backend_free(be);
        be = NULL;
        r = dsv_backend_open("fake", &(struct dsv_backend_opts){.device = 1}, &be, &err);
        CHECK(r == 0 && be && strcmp(dsv_backend_describe(be), "second fake backend, an emulation") == 0 && dsv_backend_is_emulated(be),
              "device 1: the second candidate: %d %s", r, err.msg);
        dsv_backend_free(be);
        r = dsv_backend_open("fake", &(struct dsv_backend_opts){.device = 2}, &be, &err);
        CHECK(r == -ENODEV && strstr(err.msg, "fake2"), "device 2: both tried: %d %s", r, err.msg);

        /* auto never picks the CPU emulation of CUDA, and says why it chose the CPU */
        snprintf(file, sizeof(file), "%s/tests/gpu/emu", b ? b : ".");
        setenv("DSV32_BACKEND_PATH", file, 1);
        be = NULL;
        memset(&err, 0, sizeof(err));
        r = dsv_backend_open("auto", &(struct dsv_backend_opts){.device = 0}, &be, &err);
        CHECK(r == 0 && be && strcmp(be->ops->name, "cpu") == 0, "auto: %d %s", r, err.msg);
        CHECK(strstr(err.msg, "emulation") != NULL, "auto says why it chose the CPU: %s", err.msg);
        printf("auto with only the emulation: %s\n", err.msg);
        dsv_backend_free(be);
        be = NULL;
        r = dsv_backend_open("cuda", &(struct dsv_backend_opts){.device = 0}, &be, &err);
        CHECK(r == 0 && be && dsv_backend_is_emulated(be), "cuda opens the emulation when asked by name: %d %s", r, err.msg);
        if (be)
                printf("cuda: %s\n", dsv_backend_describe(be));
        dsv_backend_free(be);

        /* ABI mismatch, found by directory */
        setenv("DSV32_BACKEND_PATH", dir, 1);
        r = dsv_backend_open("badabi", &(struct dsv_backend_opts){.device = 0}, &be, &err);
        CHECK(r == -ENOENT && strstr(err.msg, "ABI"), "ABI mismatch refused: %d %s", r, err.msg);
        printf("badabi: %s\n", err.msg);

        /* not found at all */
        setenv("DSV32_BACKEND_PATH", "/nonexistent", 1);
        r = dsv_backend_open("nosuch", &(struct dsv_backend_opts){.device = 0}, &be, &err);
        CHECK(r == -ENOENT && strstr(err.msg, "DSV32_BACKEND_PATH") && strstr(err.msg, "dsv32-backend-nosuch.so"),
              "missing plugin: %d %s", r, err.msg);
        printf("nosuch: %s\n", err.msg);

        /* names */
        CHECK(dsv_backend_open("../evil", 0, &be, &err) == -EINVAL, "path-like name refused");
        CHECK(dsv_backend_open("averyveryverylongname", &(struct dsv_backend_opts){.device = 0}, &be, &err) == -EINVAL, "long name refused");
        CHECK(dsv_backend_open(NULL, 0, &be, &err) == -EINVAL, "no name");
        return test_result("test-backend-plugin");
}
