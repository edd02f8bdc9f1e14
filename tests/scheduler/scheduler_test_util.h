// scheduler_test_util.h - what the scheduler and engine tests share: a tm_seq with the
// arrays it points into, the fake model runner, a fixture that loads the default model
// once per suite, and the engine's on_event target that wakes a waiting test thread.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

extern "C" {
#include "common/common.h"
#include "kernels/backend.h"
#include "kernels/cpu/simd.h"
#include "models/model.h"
#include "scheduler/engine.h"
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

// The fake model runners' arithmetic: a KV cell is a hash of (position, token, salt) and
// the next token a hash of the cells a sequence attends to, in order, so a wrong page,
// a wrong order or another tenant's page changes the output.
inline uint64_t fake_kv_cell(uint64_t pos, uint64_t tok, uint64_t salt) {
    uint64_t x = pos * 0x9E3779B97F4A7C15ull ^ (tok + 0x632BE59BD9B4E019ull) ^ salt;
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    return x ^ (x >> 29);
}

inline int32_t fake_next_token(const std::vector<uint64_t> &cells, int vocab) {
    uint64_t h = 1469598103934665603ull;
    for (uint64_t c : cells) h = (h ^ c) * 1099511628211ull;
    return (int32_t)(h % (uint64_t)vocab);
}

// The fake model: stores a cell for every scheduled token through the block table, then
// gives every sequence the schedule samples its next token from the cells read back.
inline void fake_model_run(const tm_schedule &sc, std::vector<uint64_t> &kv, int bs, int vocab,
                           std::vector<int32_t> &sampled) {
    sampled.assign(sc.n_seqs, -1);
    for (int i = 0; i < sc.n_seqs; i++) {
        tm_seq *s = sc.seqs[i];
        for (int j = sc.start[i]; j < sc.start[i] + sc.n_new[i]; j++) {
            size_t slot = (size_t)s->block_table[j / bs] * bs + j % bs;
            kv[slot] = fake_kv_cell(j, s->tokens[j], s->salt.lo);
        }
        if (!sc.sample[i]) continue;
        int n = sc.start[i] + sc.n_new[i];
        std::vector<uint64_t> cells(n);
        for (int j = 0; j < n; j++) cells[j] = kv[(size_t)s->block_table[j / bs] * bs + j % bs];
        sampled[i] = fake_next_token(cells, vocab);
    }
}

// Every page's refcount equals refs[page] (the block tables holding it), the used count
// is the pages with refs, and used + free is the whole pool.
inline void check_page_refs(tm_block_manager *bm, const std::vector<int> &refs) {
    int used = 0;
    for (int p = 0; p < (int)refs.size(); p++) {
        ASSERT_EQ(tm_bm_refcount(bm, p), refs[p]) << "page " << p;
        used += refs[p] > 0;
    }
    ASSERT_EQ(tm_bm_n_used(bm), used);
    ASSERT_EQ(tm_bm_n_used(bm) + tm_bm_n_free(bm), (int)refs.size());
}

// What every formed step must respect: a consistent page pool, the token budget and the
// sequence cap (on the step and on the running set).
inline void check_step_limits(tm_block_manager *bm, tm_scheduler *sched, const tm_sched_config &cfg,
                              const tm_schedule &sc) {
    char err[256] = "";
    ASSERT_EQ(tm_bm_check(bm, err, sizeof err), TM_OK) << err;
    ASSERT_LE(sc.n_tokens, cfg.max_num_batched_tokens);
    ASSERT_LE(sc.n_seqs, cfg.max_num_seqs);
    ASSERT_LE(tm_sched_n_running(sched), cfg.max_num_seqs);
}

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

// tm_engine_config.on_event target (on_event_arg = &waiter): wakes the test thread, which
// waits on cv with a timeout between tm_engine_poll calls.
struct Waiter {
    std::mutex mu;               // guards nothing but the wait itself
    std::condition_variable cv;  // notified after the engine queued events
};

inline void on_event(void *arg) {
    Waiter *w = (Waiter *)arg;
    std::lock_guard<std::mutex> lk(w->mu);
    w->cv.notify_all();
}

// Everything one request produced on a real engine.
struct EngineOutput {
    std::vector<int32_t> tokens;
    std::vector<float> margins; // top-1 minus top-2 logprob at each token (0 unless the
                                // request asked for 2 or more top_logprobs)
    std::string text;
    tm_finish finish = TM_FINISH_NONE;
    int prompt_tokens = 0, completion_tokens = 0, cached_tokens = 0;
};

// Submits reqs at once to a fresh engine over model (c's on_event is set here), waits
// (bounded) until each has finished, and checks that every page and sequence came back
// after the last one. *stats gets the engine's stats at the end.
inline std::vector<EngineOutput> run_engine(tm_model *model, tm_engine_config c,
                                            const std::vector<tm_request> &reqs,
                                            tm_engine_stats *stats = nullptr) {
    Waiter w;
    c.on_event = on_event;
    c.on_event_arg = &w;
    tm_engine *e = nullptr;
    char err[256] = "";
    EXPECT_EQ(tm_engine_create(model, &c, &e, err, sizeof err), TM_OK) << err;
    if (!e) return {};
    std::map<uint64_t, size_t> index;
    for (size_t i = 0; i < reqs.size(); i++) {
        uint64_t id = 0;
        EXPECT_EQ(tm_engine_submit(e, &reqs[i], &id, err, sizeof err), TM_OK) << err;
        index[id] = i;
    }
    std::vector<EngineOutput> out(reqs.size());
    size_t n_done = 0;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(5);
    tm_event evs[64];
    while (n_done < reqs.size() && std::chrono::steady_clock::now() < deadline) {
        int n = tm_engine_poll(e, evs, 64);
        if (n == 0) {
            std::unique_lock<std::mutex> lk(w.mu);
            w.cv.wait_for(lk, std::chrono::milliseconds(20));
            continue;
        }
        for (int i = 0; i < n; i++) {
            EngineOutput &o = out[index.at(evs[i].id)];
            if (evs[i].token >= 0) {
                o.tokens.push_back(evs[i].token);
                o.margins.push_back(evs[i].n_top >= 2 ? evs[i].top_logprobs[0] - evs[i].top_logprobs[1] : 0.0f);
            }
            o.text.append(evs[i].text ? evs[i].text : "", evs[i].text_len);
            if (evs[i].finish != TM_FINISH_NONE) {
                o.finish = evs[i].finish;
                o.prompt_tokens = evs[i].prompt_tokens;
                o.completion_tokens = evs[i].completion_tokens;
                o.cached_tokens = evs[i].cached_tokens;
                n_done++;
            }
            tm_event_free(&evs[i]);
        }
    }
    EXPECT_EQ(n_done, reqs.size()) << "requests did not finish in time";
    // Pages return once the last request ended (stats are published after a step).
    tm_engine_stats st;
    for (int i = 0; i < 100; i++) {
        tm_engine_get_stats(e, &st);
        if (st.n_blocks_used == 0 && st.n_running == 0 && st.n_waiting == 0) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_EQ(st.n_blocks_used, 0);
    EXPECT_EQ(st.n_running + st.n_waiting, 0);
    if (stats) *stats = st;
    tm_engine_destroy(e);
    return out;
}
