// Randomized stress of the engine on the real default model (skipped when absent):
// random traffic into a pool of a few pages with chunked prefill, preemption, the prefix
// cache, cache salts, priorities, stop tokens and seeded sampling, with aborts in every
// state from the test thread. Each request ends exactly once; outputs equal the solo runs
// (prefixes of them when aborted); usage adds up; every page comes back; requests that
// can never run are refused at submit; the waiting-queue cap holds while the engine is
// busy. Fixed seeds: every run is the same. (The scheduler's own randomized stress, on a
// fake model runner, is test_scheduler_random.cc.)
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "../test_env.h"
#include "scheduler_test_util.h"

extern "C" {
#include "common/common.h"
#include "models/model.h"
#include "scheduler/engine.h"
}

namespace {

struct ERes {                    // what one request produced
    std::vector<int32_t> tokens;
    tm_finish finish = TM_FINISH_NONE;
    int n_finish = 0;            // final events seen (must be 1)
    int n_after_finish = 0;      // events after the final one (must be 0)
    int prompt_tokens = 0, completion_tokens = 0, cached_tokens = 0;
};

struct EReq {
    std::vector<int32_t> prompt;
    int max_tokens = 1;
    std::string salt;
    int priority = 0;
    float temperature = 0;
    uint64_t seed = 0;
    std::vector<int32_t> stop_ids;
};

tm_request to_request(const EReq &q) {
    tm_request r;
    memset(&r, 0, sizeof r);
    r.prompt = q.prompt.data();
    r.n_prompt = (int)q.prompt.size();
    r.max_tokens = q.max_tokens;
    tm_sampling_params_default(&r.sampling);
    r.sampling.temperature = q.temperature;
    r.sampling.seed = q.seed;
    r.ignore_eos = 1; // lengths fixed by max_tokens and stop_ids only
    r.stop_ids = q.stop_ids.empty() ? nullptr : q.stop_ids.data();
    r.n_stop_ids = (int)q.stop_ids.size();
    r.cache_salt = q.salt.empty() ? nullptr : q.salt.c_str();
    r.priority = q.priority;
    return r;
}

// ASan/UBSan build (scripts/test-all also says so through TM_SANITIZED).
bool sanitized_build() {
#if defined(__SANITIZE_ADDRESS__)
    return true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
    return true;
#endif
#endif
    return tm_test_sanitized();
}

class EngineRandom : public DefaultModelTest {
  protected:
    static tm_engine_config config(int block_size, int n_pages, int max_seqs, int budget, int cache,
                                   Waiter *w) {
        tm_engine_config c;
        tm_engine_config_default(&c);
        c.block_size = block_size;
        c.kv_cache_bytes = tm_model_kv_bytes_per_block(model, block_size, TM_KV_F16) * (size_t)n_pages;
        c.max_num_seqs = max_seqs;
        c.max_num_batched_tokens = budget;
        c.enable_prefix_cache = cache;
        c.on_event = on_event;
        c.on_event_arg = w;
        return c;
    }

    // Drains events into res (by id) until every id in want has finished or time is up.
    static void collect(tm_engine *e, Waiter &w, std::map<uint64_t, ERes> &res, size_t n_want,
                        size_t *n_done, std::chrono::steady_clock::time_point deadline) {
        tm_event evs[32];
        while (*n_done < n_want && std::chrono::steady_clock::now() < deadline) {
            int n = tm_engine_poll(e, evs, 32);
            if (n == 0) {
                std::unique_lock<std::mutex> lk(w.mu);
                w.cv.wait_for(lk, std::chrono::milliseconds(20));
                continue;
            }
            for (int i = 0; i < n; i++) absorb(res, evs[i], n_done);
        }
    }

    static void absorb(std::map<uint64_t, ERes> &res, tm_event &ev, size_t *n_done) {
        ERes &r = res[ev.id];
        if (r.n_finish > 0) r.n_after_finish++;
        if (ev.token >= 0) r.tokens.push_back(ev.token);
        if (ev.finish != TM_FINISH_NONE) {
            if (r.n_finish++ == 0) (*n_done)++;
            r.finish = ev.finish;
            r.prompt_tokens = ev.prompt_tokens;
            r.completion_tokens = ev.completion_tokens;
            r.cached_tokens = ev.cached_tokens;
        }
        tm_event_free(&ev);
    }

    // Solo runs: one engine, one sequence at a time, no prefix cache.
    static std::vector<ERes> solo(int block_size, const std::vector<EReq> &reqs) {
        Waiter w;
        tm_engine_config c = config(block_size, 256 / block_size, 1, 64, 0, &w);
        tm_engine *e = nullptr;
        char err[256] = "";
        EXPECT_EQ(tm_engine_create(model, &c, &e, err, sizeof err), TM_OK) << err;
        if (!e) return {};
        std::vector<uint64_t> ids;
        for (const EReq &q : reqs) {
            tm_request r = to_request(q);
            uint64_t id = 0;
            EXPECT_EQ(tm_engine_submit(e, &r, &id, err, sizeof err), TM_OK) << err;
            ids.push_back(id);
        }
        std::map<uint64_t, ERes> res;
        size_t n_done = 0;
        collect(e, w, res, reqs.size(), &n_done,
                std::chrono::steady_clock::now() + std::chrono::minutes(3));
        tm_engine_destroy(e);
        std::vector<ERes> out;
        for (uint64_t id : ids) out.push_back(res[id]);
        return out;
    }

    std::vector<int32_t> prompt_of(std::mt19937 &rng, int len) {
        int n_vocab = tm_model_get_config(model)->n_vocab;
        std::vector<int32_t> p(len);
        for (auto &t : p) t = 100 + (int32_t)(rng() % (uint32_t)(n_vocab - 200));
        return p;
    }
};

// Random traffic into a pool of a few pages, with aborts in every state from the test
// thread: each request ends exactly once, outputs equal the solo runs (prefixes of them
// when aborted), usage adds up, and every page comes back. Requests that can never run
// are refused at submit.
TEST_F(EngineRandom, RandomTrafficAbortsAndRefusals) {
    // Fewer rounds under sanitizers (same checks); TM_RANDOM_ROUNDS widens it by hand.
    const char *env = getenv("TM_RANDOM_ROUNDS");
    const int kRounds = env && atoi(env) > 0 ? atoi(env) : sanitized_build() ? 2 : 4;
    const int n_ctx = tm_model_get_config(model)->n_ctx_train;
    for (int round = 0; round < kRounds; round++) {
        SCOPED_TRACE("round " + std::to_string(round));
        // A pool of 48 tokens in pages of 4, 1, 16 or 8 tokens.
        const int bss[] = {4, 1, 16, 8};
        const int kBs = bss[round % 4], kPages = 48 / kBs;
        std::mt19937 rng(1000 + round);
        std::vector<std::vector<int32_t>> prefixes = {prompt_of(rng, std::min(2 * kBs, 16)),
                                                      prompt_of(rng, 11)};
        const char *salts[] = {"", "", "tenant-a"};
        std::vector<EReq> reqs;
        for (int i = 0; i < (sanitized_build() ? 8 : 12); i++) {
            EReq q;
            if (i > 0 && rng() % 5 == 0) {
                q = reqs[rng() % reqs.size()]; // a duplicate prompt
            } else {
                if (rng() % 2) q.prompt = prefixes[rng() % 2];
                for (int32_t t : prompt_of(rng, 1 + (int)(rng() % 24))) q.prompt.push_back(t);
                q.max_tokens = 1 + (int)(rng() % 6);
            }
            q.salt = salts[rng() % 3];
            q.priority = rng() % 4 == 0;
            q.temperature = rng() % 2 ? 0.8f : 0.0f; // seeded sampling must survive preemption
            q.seed = rng();
            reqs.push_back(q);
        }
        // The largest request that fits: every page of the pool.
        EReq big;
        big.prompt = prompt_of(rng, kPages * kBs - 5);
        big.max_tokens = 5;
        reqs.push_back(big);
        std::vector<ERes> alone = solo(kBs, reqs);
        ASSERT_EQ(alone.size(), reqs.size());
        for (size_t i = 0; i < reqs.size(); i++) {
            ASSERT_EQ(alone[i].finish, TM_FINISH_LENGTH) << "solo request " << i;
            ASSERT_EQ((int)alone[i].tokens.size(), reqs[i].max_tokens);
        }
        // A stop token taken from the solo output ends some requests early.
        std::vector<std::vector<int32_t>> want(reqs.size());
        std::vector<tm_finish> want_fin(reqs.size(), TM_FINISH_LENGTH);
        for (size_t i = 0; i < reqs.size(); i++) {
            want[i] = alone[i].tokens;
            if (rng() % 3 != 0) continue;
            int32_t stop = want[i][rng() % want[i].size()];
            reqs[i].stop_ids = {stop};
            want[i].resize(std::find(want[i].begin(), want[i].end(), stop) - want[i].begin() + 1);
            want_fin[i] = TM_FINISH_STOP;
        }

        // The stress engine: a pool of kPages pages, small cap and budget (chunked
        // prefill, preemption), prefix cache on.
        Waiter w;
        int max_seqs = 2 + round % 3;
        int budget = round % 2 ? max_seqs : max_seqs + 4 + (int)(rng() % 12);
        tm_engine_config c = config(kBs, kPages, max_seqs, budget, 1, &w);
        tm_engine *e = nullptr;
        char err[256] = "";
        ASSERT_EQ(tm_engine_create(model, &c, &e, err, sizeof err), TM_OK) << err;
        tm_engine_stats st;
        tm_engine_get_stats(e, &st);
        ASSERT_EQ(st.n_blocks_total, kPages);

        // Refused at submit, with a reason: no id, no events.
        std::vector<int32_t> p_over = prompt_of(rng, kPages * kBs - 3);
        EReq over;
        over.prompt = p_over;
        over.max_tokens = 4; // one token more than the pool holds
        tm_request r_over = to_request(over);
        uint64_t id_bad = 0;
        EXPECT_EQ(tm_engine_submit(e, &r_over, &id_bad, err, sizeof err), TM_ERANGE);
        EXPECT_NE(std::string(err).find("pages"), std::string::npos) << err;
        r_over.max_tokens = n_ctx;
        EXPECT_EQ(tm_engine_submit(e, &r_over, &id_bad, err, sizeof err), TM_ERANGE);
        r_over.n_prompt = 0;
        EXPECT_EQ(tm_engine_submit(e, &r_over, &id_bad, err, sizeof err), TM_EINVAL);
        EXPECT_EQ(id_bad, 0u);

        // Submit in random order over time; abort some at random moments: right after
        // submit (waiting), after some tokens (decoding / maybe preempted), after the end
        // (finished), twice, and ids that never existed.
        std::vector<size_t> order(reqs.size());
        for (size_t i = 0; i < order.size(); i++) order[i] = i;
        std::shuffle(order.begin(), order.end(), rng);
        std::map<uint64_t, size_t> index;
        std::map<uint64_t, ERes> res;
        std::map<uint64_t, int> abort_after; // id -> abort once this many tokens arrived
        size_t n_done = 0;
        auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(4);
        for (size_t k = 0; k < order.size(); k++) {
            tm_request r = to_request(reqs[order[k]]);
            uint64_t id = 0;
            ASSERT_EQ(tm_engine_submit(e, &r, &id, err, sizeof err), TM_OK) << err;
            index[id] = order[k];
            int pick = (int)((k + round) % 4);
            if (pick == 0) tm_engine_abort(e, id);                     // likely still waiting
            if (pick == 1) abort_after[id] = 1 + (int)(rng() % 3);     // mid-generation
            if (pick == 2) abort_after[id] = 1000;                     // after it finished
            if (rng() % 3 == 0) tm_engine_abort(e, 1000000 + rng() % 1000); // unknown
            // Drain what is there already, without waiting.
            tm_event evs[8];
            int n = tm_engine_poll(e, evs, 8);
            for (int i = 0; i < n; i++) absorb(res, evs[i], &n_done);
            for (auto &a : abort_after) {
                ERes &x = res[a.first];
                if ((int)x.tokens.size() >= a.second || (a.second == 1000 && x.n_finish)) {
                    tm_engine_abort(e, a.first);
                    if (rng() % 2) tm_engine_abort(e, a.first); // twice
                    a.second = 1 << 30;
                }
            }
        }
        while (n_done < reqs.size() && std::chrono::steady_clock::now() < deadline) {
            collect(e, w, res, std::min(reqs.size(), n_done + 1), &n_done, deadline);
            for (auto &a : abort_after) {
                ERes &x = res[a.first];
                if ((int)x.tokens.size() >= a.second || (a.second == 1000 && x.n_finish)) {
                    tm_engine_abort(e, a.first);
                    tm_engine_abort(e, a.first);
                    a.second = 1 << 30;
                }
            }
        }
        ASSERT_EQ(n_done, reqs.size()) << "requests did not finish in time";

        // Pages come back once the last request ended (stats follow each round).
        for (int i = 0; i < 200; i++) {
            tm_engine_get_stats(e, &st);
            if (st.n_blocks_used == 0 && st.n_running + st.n_waiting == 0) break;
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        EXPECT_EQ(st.n_blocks_used, 0);
        EXPECT_EQ(st.n_running + st.n_waiting, 0);
        EXPECT_LE(st.n_blocks_cached, kPages);
        // Late aborts of finished requests change nothing and produce no events.
        for (auto &x : index) tm_engine_abort(e, x.first);
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        tm_event ev;
        EXPECT_EQ(tm_engine_poll(e, &ev, 1), 0) << "event after the last finish";

        EXPECT_EQ(res.size(), index.size()) << "events for ids that were never handed out";
        int n_aborted = 0;
        for (auto &x : index) {
            size_t i = x.second;
            ERes &r = res[x.first];
            SCOPED_TRACE("request " + std::to_string(i) + " id " + std::to_string(x.first));
            EXPECT_EQ(r.n_finish, 1);
            EXPECT_EQ(r.n_after_finish, 0);
            EXPECT_EQ(r.prompt_tokens, (int)reqs[i].prompt.size());
            EXPECT_EQ(r.completion_tokens, (int)r.tokens.size());
            EXPECT_EQ(r.cached_tokens % kBs, 0);
            EXPECT_LT(r.cached_tokens, (int)reqs[i].prompt.size());
            if (r.finish == TM_FINISH_ABORT) {
                n_aborted++;
                EXPECT_LE(r.tokens.size(), want[i].size());
                EXPECT_TRUE(std::equal(r.tokens.begin(), r.tokens.end(), want[i].begin()))
                    << "aborted output diverged from the solo run";
            } else {
                EXPECT_EQ(r.finish, want_fin[i]);
                EXPECT_EQ(r.tokens, want[i]) << "output differs from the solo run";
            }
        }
        EXPECT_GT(n_aborted, 0);
        tm_engine_get_stats(e, &st);
        printf("[ stats    ] round %d: seqs %d budget %d, %d aborted, %llu preemptions, %llu "
               "prefix-hit tokens\n", round, max_seqs, budget, n_aborted,
               (unsigned long long)st.n_preemptions, (unsigned long long)st.prefix_hits);

        // Shutdown with work in flight: everything ends (ASan checks nothing leaks).
        for (int i = 0; i < 3; i++) {
            tm_request r = to_request(reqs[i]);
            EXPECT_EQ(tm_engine_submit(e, &r, nullptr, err, sizeof err), TM_OK) << err;
        }
        tm_engine_destroy(e);
        if (HasFailure()) return;
    }
}
// The waiting-queue cap holds while the engine is inside a step: submits that arrive
// during a forward pass must count the requests the engine has just taken from the inbox.
// One long request runs (cap 1 sequence); others are submitted in a tight loop across
// many steps; at no time may more than max_queue requests wait.
TEST_F(EngineRandom, QueueCapHoldsWhileEngineIsBusy) {
    const int kMaxQueue = 2;
    Waiter w;
    tm_engine_config c = config(16, 128, 1, 64, 1, &w);
    c.max_queue = kMaxQueue;
    tm_engine *e = nullptr;
    char err[256] = "";
    ASSERT_EQ(tm_engine_create(model, &c, &e, err, sizeof err), TM_OK) << err;
    std::mt19937 rng(5);
    std::vector<int32_t> p = prompt_of(rng, 32);
    EReq longq;
    longq.prompt = p;
    longq.max_tokens = 1000; // outlasts the test; aborted at the end
    tm_request rl = to_request(longq);
    uint64_t id_long = 0;
    ASSERT_EQ(tm_engine_submit(e, &rl, &id_long, err, sizeof err), TM_OK) << err;
    tm_engine_stats st;
    for (int i = 0; i < 1000; i++) { // until it runs
        tm_engine_get_stats(e, &st);
        if (st.n_running == 1) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    ASSERT_EQ(st.n_running, 1);
    EReq shortq;
    shortq.prompt = std::vector<int32_t>(p.begin(), p.begin() + 4);
    shortq.max_tokens = 1;
    tm_request rs = to_request(shortq);
    int accepted = 0, max_waiting = 0;
    std::vector<uint64_t> ids = {id_long};
    auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(300);
    while (std::chrono::steady_clock::now() < until) {
        uint64_t id = 0;
        int rc = tm_engine_submit(e, &rs, &id, err, sizeof err);
        ASSERT_TRUE(rc == TM_OK || rc == TM_EBUSY) << tm_strerror(rc);
        if (rc == TM_OK) {
            accepted++;
            ids.push_back(id);
        }
        tm_engine_get_stats(e, &st);
        max_waiting = std::max(max_waiting, st.n_waiting);
        std::this_thread::sleep_for(std::chrono::microseconds(500));
    }
    tm_engine_get_stats(e, &st);
    EXPECT_EQ(st.n_running, 1) << "the long request should still be running";
    EXPECT_LE(max_waiting, kMaxQueue);
    EXPECT_EQ(accepted, kMaxQueue) << "the queue should take exactly max_queue while one request runs";
    for (uint64_t id : ids) tm_engine_abort(e, id);
    std::map<uint64_t, ERes> res;
    size_t n_done = 0;
    collect(e, w, res, ids.size(), &n_done, std::chrono::steady_clock::now() + std::chrono::minutes(1));
    EXPECT_EQ(n_done, ids.size());
    tm_engine_destroy(e);
}

} // namespace
