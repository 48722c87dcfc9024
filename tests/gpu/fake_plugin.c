/* A backend plugin for test-backend-plugin: exports the plugin entry points with a vtable
 * whose ops all fail, so the loader's search, ABI check and symbol lookup can be tested on
 * machines without a GPU. Built three times: as "fake" (matching ABI, device 0 only), with
 * -DDSV_FAKE_SECOND as a second "fake" (devices 0 and 1, says it is an emulation: the loader
 * must fall through to it from the first on -ENODEV) and, with -DDSV_FAKE_BAD_ABI, as
 * "badabi" (an ABI the loader must refuse). */
#include "config.h"

#include <errno.h>
#include <stdlib.h>

#include "kernels/backend_plugin.h"

#ifdef DSV_FAKE_BAD_ABI
#define NAME(x) dsv_backend_badabi_##x
#define ABI (DSV_BACKEND_ABI ^ 1u)
#else
#define NAME(x) dsv_backend_fake_##x
#define ABI DSV_BACKEND_ABI
#endif
#ifdef DSV_FAKE_SECOND
#define MAX_DEVICE 1
#define DESCRIPTION "second fake backend, an emulation"
#else
#define MAX_DEVICE 0
#define DESCRIPTION "fake backend for tests"
#endif

static void fake_free(struct dsv_backend *be) { free(be); }
static int fake_alloc(struct dsv_backend *be, size_t size, void **ret) { return -ENOMEM; }
static void fake_dealloc(struct dsv_backend *be, void *p, size_t size) {}
static int fake_copy(struct dsv_backend *be, void *dst, const void *src, size_t n) { return -EIO; }
static int fake_fill(struct dsv_backend *be, void *dst, int byte, size_t n) { return -EIO; }
static int fake_sync(struct dsv_backend *be) { return 0; }
static bool fake_supports(struct dsv_backend *be, const struct dsv_op *op) { return false; }
static int fake_compute(struct dsv_backend *be, const struct dsv_op *op) { return -EOPNOTSUPP; }

static const struct dsv_backend_ops fake_ops = {
        .name = "fake",
        .free = fake_free,
        .alloc = fake_alloc,
        .dealloc = fake_dealloc,
        .upload = fake_copy,
        .download = fake_copy,
        .fill = fake_fill,
        .synchronize = fake_sync,
        .supports_op = fake_supports,
        .compute = fake_compute,
};

uint32_t dsv_backend_plugin_abi(void);
uint32_t dsv_backend_plugin_abi(void) { return ABI; }

int NAME(new)(int device, struct dsv_backend **ret);
int NAME(new)(int device, struct dsv_backend **ret) {
        if (device < 0 || device > MAX_DEVICE)
                return -ENODEV;
        struct dsv_backend *be = calloc(1, sizeof(*be));
        if (!be)
                return -ENOMEM;
        be->ops = &fake_ops;
        *ret = be;
        return 0;
}

const char *NAME(last_error)(void);
const char *NAME(last_error)(void) { return "the fake backend has no device"; }

const char *NAME(describe)(struct dsv_backend *be);
const char *NAME(describe)(struct dsv_backend *be) { return DESCRIPTION; }

#ifdef DSV_FAKE_SECOND
bool NAME(emulated)(void);
bool NAME(emulated)(void) { return true; }
#endif
