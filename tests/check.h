/* The checks every C test uses. A failed check prints "file:line: FAIL: condition: message"
 * to stderr. CHECK counts the failure and goes on (a header may define TEST_ON_FAIL() before
 * including this one to do something else, e.g. clean up and exit); REQUIRE exits 1 at once.
 * Tests exit 0 (pass), 1 (fail) or 77 (skip). */
#pragma once

#include <stdio.h>
#include <stdlib.h>

static int test_failures __attribute__((unused));
static int test_checks __attribute__((unused));

#ifndef TEST_ON_FAIL
#define TEST_ON_FAIL() (test_failures++)
#endif

#define TEST_REPORT(tag, cond_text, ...)                                                   \
        do {                                                                               \
                fprintf(stderr, "%s:%d: %s: %s: ", __FILE__, __LINE__, tag, cond_text);    \
                fprintf(stderr, __VA_ARGS__);                                              \
                fputc('\n', stderr);                                                       \
        } while (0)

#define CHECK(cond, ...)                                                                   \
        do {                                                                               \
                test_checks++;                                                             \
                if (!(cond)) {                                                             \
                        TEST_REPORT("FAIL", #cond, __VA_ARGS__);                           \
                        TEST_ON_FAIL();                                                    \
                }                                                                          \
        } while (0)

/* a check whose condition says it all */
#define EXPECT(cond) CHECK(cond, "expected to hold")

#define REQUIRE(cond, ...)                                                                 \
        do {                                                                               \
                if (!(cond)) {                                                             \
                        TEST_REPORT("fatal", #cond, __VA_ARGS__);                          \
                        exit(1);                                                           \
                }                                                                          \
        } while (0)

/* The exit code after the last check, with a summary line. */
static inline int test_result(const char *name) {
        if (test_failures) {
                fprintf(stderr, "%s: %d of %d checks failed\n", name, test_failures, test_checks);
                return 1;
        }
        printf("%s: all %d checks passed\n", name, test_checks);
        return 0;
}
