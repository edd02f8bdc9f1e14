// test_env.h - facts about the environment a test runs in.
#pragma once

#include <cstdlib>

// scripts/test-all sets TM_SANITIZED=1 for the ASan+UBSan run. Real-model tests, whose
// forward passes run ~10x slower there, shrink their workloads (never their assertions).
inline bool tm_test_sanitized() {
    const char *s = std::getenv("TM_SANITIZED");
    return s && *s && *s != '0';
}
