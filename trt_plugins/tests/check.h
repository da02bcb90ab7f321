// The checks shared by the C++ tests: a failed CHECK / CHECK_MSG prints where and what, and counts;
// mdqe_test::finish() prints the summary and gives main's exit code (1 if any check failed).
#pragma once

#include <cstdio>

namespace mdqe_test {

inline int g_failures = 0;

inline int finish(const char* all_passed_message) {
    if (g_failures) {
        std::printf("%d check(s) failed\n", g_failures);
        return 1;
    }
    std::printf("%s\n", all_passed_message);
    return 0;
}

}  // namespace mdqe_test

#define CHECK(cond)                                                    \
    do {                                                               \
        if (!(cond)) {                                                 \
            ++mdqe_test::g_failures;                                   \
            std::printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); \
        }                                                              \
    } while (0)

// CHECK with a printf-style explanation.
#define CHECK_MSG(cond, ...)                                            \
    do {                                                                \
        if (!(cond)) {                                                  \
            ++mdqe_test::g_failures;                                    \
            std::printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            std::printf(__VA_ARGS__);                                   \
            std::printf("\n");                                          \
        }                                                               \
    } while (0)
