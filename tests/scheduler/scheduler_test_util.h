// scheduler_test_util.h - what the scheduler and engine tests share: a tm_seq with the
// arrays it points into, and a fixture that loads the default model once per suite.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

extern "C" {
#include "common/common.h"
#include "kernels/backend.h"
#include "kernels/cpu/simd.h"
#include "models/model.h"
#include "scheduler/scheduler.h"
}

// One sequence the test owns: room for the prompt and max_tokens more.
struct SeqBuffers {
    tm_seq seq{};
    std::vector<int32_t> tokens, table;
    std::vector<tm_hash128> hashes;

    void init(uint64_t id, const std::vector<int32_t> &prompt, int max_tokens, int priority, int bs) {
        tokens.assign(prompt.size() + max_tokens, 0);
        std::copy(prompt.begin(), prompt.end(), tokens.begin());
        int cap_blocks = ((int)tokens.size() + bs - 1) / bs;
        table.assign(cap_blocks, -1);
        hashes.assign(cap_blocks, tm_hash128{0, 0});
        seq.id = id;
        seq.priority = priority;
        seq.tokens = tokens.data();
        seq.n_prompt = (int)prompt.size();
        seq.n_tokens = seq.n_prompt;
        seq.cap_tokens = (int)tokens.size();
        seq.max_tokens = max_tokens;
        seq.block_table = table.data();
        seq.cap_blocks = cap_blocks;
        seq.hashes = hashes.data();
    }
};

inline std::string default_model_path() {
    const char *home = getenv("HOME");
    return std::string(home ? home : "") + "/.cache/tokenmill/models/SmolLM2-135M-Instruct.Q4_1.gguf";
}

// The default model on the CPU backend, loaded once per suite; every test skips with the
// reason when it could not be loaded (scripts/fetch-model gets it).
class DefaultModelTest : public ::testing::Test {
  protected:
    inline static tm_backend *be = nullptr;
    inline static tm_model *model = nullptr;
    inline static std::string skip_reason;

    static void SetUpTestSuite() {
        std::string path = default_model_path();
        if (FILE *f = fopen(path.c_str(), "rb")) {
            fclose(f);
        } else {
            skip_reason = "default model not found at " + path + " (run scripts/fetch-model)";
            return;
        }
        char err[256] = "";
        be = tm_backend_cpu_create(0, TM_SIMD_AUTO, err, sizeof err);
        if (!be) {
            skip_reason = std::string("no CPU backend: ") + err;
            return;
        }
        if (tm_model_load(path.c_str(), be, &model, err, sizeof err) != TM_OK) {
            skip_reason = std::string("model load failed: ") + err;
            model = nullptr;
        }
    }
    static void TearDownTestSuite() {
        tm_model_destroy(model);
        model = nullptr;
        if (be) be->destroy(be);
        be = nullptr;
    }
    void SetUp() override {
        if (!model) GTEST_SKIP() << skip_reason;
    }
};
