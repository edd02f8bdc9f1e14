// Engine on the real default model: batch invariance (with and without preemption),
// prefix cache, aborts, submit-time refusals. Skips when the model file is absent.
#include <gtest/gtest.h>

#include <cmath>

#include <algorithm>

#include "../test_env.h"
#include "scheduler_test_util.h"

#include <dirent.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <cstring>
#include <ctime>
#include <thread>
#include <condition_variable>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <vector>

extern "C" {
#include "common/common.h"
#include "kernels/backend.h"
#include "kernels/cpu/simd.h"
#include "models/model.h"
#include "scheduler/engine.h"
}

namespace {

using Result = EngineOutput; // everything one request produced

class EngineTest : public DefaultModelTest {
  protected:
    static tm_engine_config config(size_t kv_bytes, int cache, Waiter *w, tm_kv_dtype dtype = TM_KV_F16) {
        tm_engine_config c;
        tm_engine_config_default(&c);
        c.kv_cache_bytes = kv_bytes;
        c.kv_dtype = dtype;
        c.enable_prefix_cache = cache;
        c.max_num_seqs = 16;
        c.max_num_batched_tokens = 512;
        c.on_event = on_event;
        c.on_event_arg = w;
        return c;
    }

    static tm_request greedy(const std::vector<int32_t> &prompt, int max_tokens) {
        tm_request r;
        memset(&r, 0, sizeof r);
        r.prompt = prompt.data();
        r.n_prompt = (int)prompt.size();
        r.max_tokens = max_tokens;
        tm_sampling_params_default(&r.sampling);
        r.sampling.temperature = 0;
        r.ignore_eos = 1; // fixed lengths: the comparison covers every token
        return r;
    }

    // Submits all requests at once and waits (bounded) until each has finished.
    static std::vector<Result> run(const tm_engine_config &c, const std::vector<tm_request> &reqs,
                                   tm_engine_stats *stats_out = nullptr) {
        return run_engine(model, c, reqs, stats_out);
    }

    static std::vector<int32_t> prompt_of(int len, uint32_t seed) {
        int n_vocab = tm_model_get_config(model)->n_vocab;
        std::vector<int32_t> p(len);
        uint32_t x = seed * 2654435761u + 12345u;
        for (int i = 0; i < len; i++) {
            x = x * 1664525u + 1013904223u;
            p[i] = 100 + (int32_t)((x >> 8) % (uint32_t)(n_vocab - 200));
        }
        return p;
    }

    // Requests with prompts of these lengths give the same greedy tokens alone, together,
    // and together in a pool so small that sequences are preempted.
    static void check_batch_invariance(const std::vector<int> &lens, tm_kv_dtype dtype);
    // The second of two requests sharing a 1,000-token prefix reuses its pages and gives
    // the tokens it gives without the cache.
    static void check_prefix_cache(tm_kv_dtype dtype);
};

void EngineTest::check_batch_invariance(const std::vector<int> &lens, tm_kv_dtype dtype) {
    const int n = (int)lens.size();
    const int longest = *std::max_element(lens.begin(), lens.end());
    std::vector<std::vector<int32_t>> prompts;
    std::vector<tm_request> reqs;
    for (int i = 0; i < n; i++) prompts.push_back(prompt_of(lens[i], (uint32_t)i + 1));
    for (int i = 0; i < n; i++) reqs.push_back(greedy(prompts[i], 3 + (i * 5) % 9));
    size_t per_block = tm_model_kv_bytes_per_block(model, 16, dtype);

    // Alone: one request per engine run, no prefix cache.
    std::vector<Result> alone;
    for (int i = 0; i < n; i++) {
        auto r = run(config(per_block * 200, 0, nullptr, dtype), {reqs[i]});
        ASSERT_EQ(r.size(), 1u);
        alone.push_back(r[0]);
        ASSERT_EQ((int)alone[i].tokens.size(), reqs[i].max_tokens);
        EXPECT_EQ(alone[i].finish, TM_FINISH_LENGTH);
        EXPECT_EQ(alone[i].prompt_tokens, lens[i]);
    }
    // Together, plenty of pages.
    tm_engine_stats st;
    auto together = run(config(per_block * 1024, 1, nullptr, dtype), reqs, &st);
    for (int i = 0; i < n; i++)
        EXPECT_EQ(together[i].tokens, alone[i].tokens) << "request " << i << " (" << lens[i] << " tokens)";
    EXPECT_EQ(st.n_preemptions, 0u);

    // Together in a pool barely larger than the biggest request: preemption must happen
    // and change nothing.
    int biggest = (longest + 11 + 15) / 16;
    auto tight = run(config(per_block * (biggest + 8), 1, nullptr, dtype), reqs, &st);
    EXPECT_GT(st.n_preemptions, 0u) << "pool not small enough to preempt: test is too weak";
    for (int i = 0; i < n; i++) {
        EXPECT_EQ(tight[i].tokens, alone[i].tokens) << "request " << i << " under preemption";
        EXPECT_EQ(tight[i].text, alone[i].text);
        EXPECT_EQ(tight[i].completion_tokens, reqs[i].max_tokens);
    }
}

TEST_F(EngineTest, BatchInvarianceWithAndWithoutPreemption) {
    std::vector<int> lens = {5, 8, 13, 21, 34, 40, 55, 70, 89, 144, 233, 377, 610, 987, 1200, 1500};
    if (tm_test_sanitized()) lens = {5, 13, 34, 89, 144, 233, 377, 610}; // same checks, less compute
    check_batch_invariance(lens, TM_KV_F16);
}

void EngineTest::check_prefix_cache(tm_kv_dtype dtype) {
    std::vector<int32_t> prefix = prompt_of(1000, 77);
    std::vector<int32_t> a = prefix, b = prefix;
    for (int32_t t : prompt_of(24, 5)) a.push_back(t);
    for (int32_t t : prompt_of(20, 6)) b.push_back(t);
    size_t per_block = tm_model_kv_bytes_per_block(model, 16, dtype);

    // One engine: a, then b.
    Waiter w;
    tm_engine_config c = config(per_block * 256, 1, &w, dtype);
    tm_engine *e = nullptr;
    char err[256] = "";
    ASSERT_EQ(tm_engine_create(model, &c, &e, err, sizeof err), TM_OK) << err;
    std::vector<Result> res;
    for (auto *p : {&a, &b}) {
        tm_request r = greedy(*p, 6);
        uint64_t id;
        ASSERT_EQ(tm_engine_submit(e, &r, &id, err, sizeof err), TM_OK) << err;
        Result out;
        tm_event ev;
        for (int spin = 0; spin < 6000 && out.finish == TM_FINISH_NONE; spin++) {
            if (tm_engine_poll(e, &ev, 1) == 0) {
                std::this_thread::sleep_for(std::chrono::milliseconds(10));
                continue;
            }
            if (ev.token >= 0) out.tokens.push_back(ev.token);
            out.finish = ev.finish;
            out.cached_tokens = ev.cached_tokens;
            tm_event_free(&ev);
        }
        ASSERT_NE(out.finish, TM_FINISH_NONE);
        res.push_back(out);
    }
    tm_engine_stats st;
    tm_engine_get_stats(e, &st);
    tm_engine_destroy(e);
    EXPECT_EQ(res[0].cached_tokens, 0);
    EXPECT_GE(res[1].cached_tokens, 992);
    EXPECT_GE(st.prefix_hits, 992u);

    // b without the cache gives the same tokens.
    auto ref = run(config(per_block * 256, 0, nullptr, dtype), {greedy(b, 6)});
    EXPECT_EQ(ref[0].cached_tokens, 0);
    EXPECT_EQ(res[1].tokens, ref[0].tokens);
}

TEST_F(EngineTest, PrefixCacheServesSharedPrefix) { check_prefix_cache(TM_KV_F16); }

// --kv-cache-dtype int8: a page takes about half the bytes, and batching, preemption and
// the prefix cache keep their guarantees (kv_store rounds the same values the same way).
TEST_F(EngineTest, Int8KvCacheHoldsTwiceThePagesWithTheSameGuarantees) {
    const size_t f16 = tm_model_kv_bytes_per_block(model, 16, TM_KV_F16);
    const size_t i8 = tm_model_kv_bytes_per_block(model, 16, TM_KV_INT8);
    EXPECT_LT(i8 * 100, f16 * 54); // 1,088 of 2,048 bytes per (layer, kv head, K or V)
    tm_engine_config c = config(f16 * 100, 1, nullptr, TM_KV_INT8);
    tm_engine *e = nullptr;
    char err[256] = "";
    ASSERT_EQ(tm_engine_create(model, &c, &e, err, sizeof err), TM_OK) << err;
    tm_engine_stats st;
    tm_engine_get_stats(e, &st);
    EXPECT_EQ(st.n_blocks_total, (int)(f16 * 100 / i8));
    tm_engine_destroy(e);
    c.kv_dtype = (tm_kv_dtype)7; // not a KV dtype: refused with a message
    EXPECT_EQ(tm_engine_create(model, &c, &e, err, sizeof err), TM_EINVAL);
    EXPECT_NE(std::string(err).find("unknown KV cache dtype"), std::string::npos) << err;

    std::vector<int> lens = {5, 34, 144, 377, 700};
    if (tm_test_sanitized()) lens = {5, 34, 144, 377}; // same checks, less compute
    check_batch_invariance(lens, TM_KV_INT8);
    check_prefix_cache(TM_KV_INT8);
}

TEST_F(EngineTest, AbortFreesPagesAndEndsWithAbort) {
    Waiter w;
    size_t per_block = tm_model_kv_bytes_per_block(model, 16, TM_KV_F16);
    tm_engine_config c = config(per_block * 256, 1, &w);
    tm_engine *e = nullptr;
    char err[256] = "";
    ASSERT_EQ(tm_engine_create(model, &c, &e, err, sizeof err), TM_OK) << err;
    std::vector<int32_t> p = prompt_of(300, 9);
    tm_request r = greedy(p, 2000);
    uint64_t id;
    ASSERT_EQ(tm_engine_submit(e, &r, &id, err, sizeof err), TM_OK) << err;
    tm_event ev;
    int n_tokens = 0;
    for (int spin = 0; spin < 3000 && n_tokens < 2; spin++) { // wait until it decodes
        if (tm_engine_poll(e, &ev, 1) == 0) {
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
            continue;
        }
        n_tokens++;
        tm_event_free(&ev);
    }
    ASSERT_EQ(n_tokens, 2);
    tm_engine_abort(e, id);
    tm_finish fin = TM_FINISH_NONE;
    for (int spin = 0; spin < 3000 && fin == TM_FINISH_NONE; spin++) {
        if (tm_engine_poll(e, &ev, 1) == 0) {
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
            continue;
        }
        fin = ev.finish;
        if (fin != TM_FINISH_NONE) {
            EXPECT_EQ(ev.token, -1);
            EXPECT_EQ(ev.prompt_tokens, 300);
            EXPECT_GE(ev.completion_tokens, 2);
        }
        tm_event_free(&ev);
    }
    EXPECT_EQ(fin, TM_FINISH_ABORT);
    tm_engine_stats st;
    for (int i = 0; i < 100; i++) {
        tm_engine_get_stats(e, &st);
        if (st.n_blocks_used == 0) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_EQ(st.n_blocks_used, 0);
    EXPECT_EQ(st.n_running, 0);
    EXPECT_GT(st.n_blocks_cached, 0); // its full pages stay cached
    tm_engine_abort(e, id);            // finished id: ignored
    tm_engine_abort(e, 999999);        // unknown id: ignored
    tm_engine_destroy(e);
}

// A logit processor, counted: every generated token of its request passes through it,
// greedy requests included, and the engine destroys it with the request.
struct CountingBias {
    int32_t token;          // pushed up by +1000
    int calls = 0;          // apply() calls
    int last_n_output = -1; // the n_output the last call saw
    bool destroyed = false;
};

int counting_apply(void *ctx, float *logits, int n_vocab, const int32_t *, int n_output) {
    auto *c = static_cast<CountingBias *>(ctx);
    EXPECT_EQ(n_output, c->last_n_output + 1) << "one call per generated token, in order";
    c->last_n_output = n_output;
    c->calls++;
    if (c->token < n_vocab) logits[c->token] += 1000.0f;
    return TM_OK;
}

void counting_destroy(void *ctx) { static_cast<CountingBias *>(ctx)->destroyed = true; }

TEST_F(EngineTest, LogitProcessorsShapeEverySampledToken) {
    Waiter w;
    size_t per_block = tm_model_kv_bytes_per_block(model, 16, TM_KV_F16);
    tm_engine_config c = config(per_block * 64, 1, &w);
    std::vector<int32_t> p = prompt_of(20, 3);
    // greedy and sampled requests, each with its own processor; a third without one
    CountingBias a{77}, b{1234};
    tm_logit_processor pa = {counting_apply, counting_destroy, &a, nullptr}, pb = {counting_apply, counting_destroy, &b, nullptr};
    tm_request ra = greedy(p, 9), rb = greedy(p, 7), rc = greedy(p, 5);
    rb.sampling.temperature = 0.8f;
    rb.sampling.seed = 5;
    ra.processors = &pa, ra.n_processors = 1;
    rb.processors = &pb, rb.n_processors = 1;
    std::vector<Result> out = run(c, {ra, rb, rc});
    ASSERT_EQ(out.size(), 3u);
    EXPECT_EQ(out[0].tokens, std::vector<int32_t>(9, 77));
    EXPECT_EQ(out[1].tokens, std::vector<int32_t>(7, 1234));
    EXPECT_EQ(a.calls, 9);
    EXPECT_EQ(b.calls, 7);
    EXPECT_TRUE(a.destroyed && b.destroyed);
    EXPECT_NE(out[2].tokens, std::vector<int32_t>(5, 77)); // the others are untouched
    // a processor that forbids everything ends its request (abort), not the engine
    struct Forbid {
        static int apply(void *, float *l, int n, const int32_t *, int) {
            for (int i = 0; i < n; i++) l[i] = -INFINITY;
            return TM_OK;
        }
    };
    tm_logit_processor pf = {Forbid::apply, nullptr, nullptr, nullptr};
    tm_request rf = greedy(p, 4);
    rf.processors = &pf, rf.n_processors = 1;
    out = run(c, {rf, rc});
    EXPECT_EQ(out[0].finish, TM_FINISH_ABORT);
    EXPECT_TRUE(out[0].tokens.empty());
    EXPECT_EQ(out[1].tokens.size(), 5u);
}

TEST_F(EngineTest, SubmitRefusesWhatCanNeverRun) {
    Waiter w;
    size_t per_block = tm_model_kv_bytes_per_block(model, 16, TM_KV_F16);
    tm_engine_config c = config(per_block * 8, 1, &w); // 8 pages = 128 tokens
    tm_engine *e = nullptr;
    char err[256] = "";
    ASSERT_EQ(tm_engine_create(model, &c, &e, err, sizeof err), TM_OK) << err;
    tm_engine_stats st;
    tm_engine_get_stats(e, &st);
    EXPECT_EQ(st.n_blocks_total, 8);
    uint64_t id;
    std::vector<int32_t> p = prompt_of(100, 1);
    tm_request r = greedy(p, 29); // 129 tokens: 9 pages
    EXPECT_EQ(tm_engine_submit(e, &r, &id, err, sizeof err), TM_ERANGE);
    EXPECT_NE(std::string(err).find("pages"), std::string::npos) << err;
    r.max_tokens = tm_model_get_config(model)->n_ctx_train; // over the context
    EXPECT_EQ(tm_engine_submit(e, &r, &id, err, sizeof err), TM_ERANGE);
    r.max_tokens = 0;
    EXPECT_EQ(tm_engine_submit(e, &r, &id, err, sizeof err), TM_EINVAL);
    r.max_tokens = 4;
    r.n_prompt = 0;
    EXPECT_EQ(tm_engine_submit(e, &r, &id, err, sizeof err), TM_EINVAL);
    std::vector<int32_t> bad = {1, -3, 2};
    tm_request rb = greedy(bad, 4);
    EXPECT_EQ(tm_engine_submit(e, &rb, &id, err, sizeof err), TM_EINVAL);
    const char *empty = "";
    tm_request rs = greedy(p, 4);
    rs.stop[0] = empty;
    rs.n_stop = 1;
    EXPECT_EQ(tm_engine_submit(e, &rs, &id, err, sizeof err), TM_EINVAL);
    tm_engine_destroy(e);
}

TEST_F(EngineTest, StopStringEndsGenerationWithoutLeaking) {
    // Generate freely, pick a stop string from the middle of the output, run again.
    std::vector<int32_t> p = prompt_of(40, 3);
    size_t per_block = tm_model_kv_bytes_per_block(model, 16, TM_KV_F16);
    auto free_run = run(config(per_block * 64, 0, nullptr), {greedy(p, 24)});
    std::string text = free_run[0].text;
    ASSERT_GT(text.size(), 12u);
    std::string stop = text.substr(text.size() / 2, 3);
    size_t cut = text.find(stop);
    tm_request r = greedy(p, 24);
    r.stop[0] = stop.c_str();
    r.n_stop = 1;
    auto stopped = run(config(per_block * 64, 0, nullptr), {r});
    EXPECT_EQ(stopped[0].finish, TM_FINISH_STOP);
    EXPECT_EQ(stopped[0].text, text.substr(0, cut));
    EXPECT_LT(stopped[0].completion_tokens, 24);
}

// CPU ticks (user + system) used so far by the thread named "tm-engine", or -1.
long engine_thread_ticks() {
    DIR *d = opendir("/proc/self/task");
    if (!d) return -1;
    long ticks = -1;
    while (struct dirent *de = readdir(d)) {
        std::string base = std::string("/proc/self/task/") + de->d_name;
        std::ifstream comm(base + "/comm");
        std::string name;
        if (!std::getline(comm, name) || name != "tm-engine") continue;
        std::ifstream stat(base + "/stat");
        std::string line;
        std::getline(stat, line);
        std::istringstream rest(line.substr(line.rfind(')') + 2)); // fields from 3 on
        std::string f;
        long utime = 0, stime = 0;
        for (int i = 3; i <= 15 && rest >> f; i++) {
            if (i == 14) utime = atol(f.c_str());
            if (i == 15) stime = atol(f.c_str());
        }
        ticks = utime + stime;
    }
    closedir(d);
    return ticks;
}

TEST_F(EngineTest, IdleEngineSleeps) {
    Waiter w;
    size_t per_block = tm_model_kv_bytes_per_block(model, 16, TM_KV_F16);
    tm_engine_config c = config(per_block * 16, 1, &w);
    tm_engine *e = nullptr;
    char err[256] = "";
    ASSERT_EQ(tm_engine_create(model, &c, &e, err, sizeof err), TM_OK) << err;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    long t0 = engine_thread_ticks();
    ASSERT_GE(t0, 0) << "engine thread not found in /proc/self/task";
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    long t1 = engine_thread_ticks();
    EXPECT_LE(t1 - t0, 2) << "engine thread burns CPU while idle (" << (t1 - t0) << " ticks in 0.5 s)";
    tm_engine_destroy(e);
}

} // namespace
