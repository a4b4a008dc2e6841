/*
 * check.h: the check macros of the C test programs (abi_check.c, rows_check.c). Each failed check prints the
 * file, line, call, the expected and actual codes and lm_last_error(); finish() returns the failure count.
 */
#ifndef LM_CHECK_H
#define LM_CHECK_H

#include <stdio.h>
#include <string.h>

#include "latentmas.h"

static int failures = 0;
static int checks = 0;

#define FAIL(...)                                                                                                  \
    do {                                                                                                           \
        fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                                                            \
        fprintf(stderr, __VA_ARGS__);                                                                              \
        fprintf(stderr, "\n");                                                                                     \
        failures++;                                                                                                \
    } while (0)

/* An int-returning call must return `want`, and the thread's last error must agree. */
#define CHECK_RC(call, want)                                                                                       \
    do {                                                                                                           \
        checks++;                                                                                                  \
        int rc_ = (call);                                                                                          \
        int code_ = lm_last_error_code();                                                                          \
        if (rc_ != (want) || code_ != (want))                                                                      \
            FAIL("%s: want %s, got %s (last error code %s): %s", #call, lm_status_name(want), lm_status_name(rc_), \
                 lm_status_name(code_), lm_last_error());                                                          \
        else if ((want) != LM_OK && lm_last_error()[0] == '\0')                                                    \
            FAIL("%s: failed with %s but lm_last_error() is empty", #call, lm_status_name(want));                  \
    } while (0)

/* A void or pointer-returning call must leave `want` as the last error code. */
#define CHECK_CODE(call, want)                                                                                     \
    do {                                                                                                           \
        checks++;                                                                                                  \
        (void)(call);                                                                                              \
        int code_ = lm_last_error_code();                                                                          \
        if (code_ != (want))                                                                                       \
            FAIL("%s: want last error %s, got %s: %s", #call, lm_status_name(want), lm_status_name(code_),         \
                 lm_last_error());                                                                                 \
    } while (0)

#define CHECK(cond)                                                                                                \
    do {                                                                                                           \
        checks++;                                                                                                  \
        if (!(cond)) FAIL("check failed: %s (last error: %s)", #cond, lm_last_error());                            \
    } while (0)

/* The last error must mention `needle` (the field or argument it is about). */
#define CHECK_MESSAGE(needle)                                                                                      \
    do {                                                                                                           \
        checks++;                                                                                                  \
        if (strstr(lm_last_error(), (needle)) == NULL)                                                             \
            FAIL("last error should mention \"%s\": %s", (needle), lm_last_error());                               \
    } while (0)

static int finish(const char *what) {
    printf("%s: %d checks, %d failed\n", what, checks, failures);
    return failures > 100 ? 100 : failures;
}

#endif /* LM_CHECK_H */
