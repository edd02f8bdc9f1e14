// fuzz_jinja.cc - libFuzzer target for the Jinja interpreter: the input is a template,
// rendered against a conversation with tools under small limits. Built by
// -DTM_FUZZ=ON with clang (see README "Fuzzing"); the bounded run in CI is
// tests/server/test_jinja_fuzz.cc.
//
//   build-fuzz/fuzz_jinja -max_total_time=600 -dict=tests/fuzz/jinja.dict corpus/
#include <cstdio>
#include <cstdlib>

#include "tests/server/jinja_fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static json_t *vars = jinja_fuzz_vars();
    std::string problem = jinja_fuzz_one((const char *)data, size, vars);
    if (!problem.empty()) {
        fprintf(stderr, "fuzz_jinja: %s\n", problem.c_str());
        abort();
    }
    return 0;
}
