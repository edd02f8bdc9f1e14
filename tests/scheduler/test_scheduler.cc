// Scheduler + block manager driven by a fake model runner (no model involved).
//
// The fake runner keeps a fake KV pool: computing token t at position j of a sequence
// writes mix(j, t) into the page slot the block table gives. The "next token" of a
// sequence is a hash of what its pages hold for positions 0..n-1, so a wrong page (a bad
// prefix hit, a page reused while still referenced, a lost preemption) changes the
// output, and the reference output is the same hash over the true token list.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <random>
#include <vector>

#include "scheduler_test_util.h"

extern "C" {
#include "common/common.h"
#include "scheduler/scheduler.h"
}

namespace {

const int kVocab = 1000;

uint64_t mix(uint64_t pos, uint64_t tok) { return fake_kv_cell(pos, tok, 0); }

int32_t next_from(const std::vector<uint64_t> &cells) { return fake_next_token(cells, kVocab); }

// Reference: the sequence's next token from its true token list.
int32_t reference_next(const int32_t *tokens, int n) {
    std::vector<uint64_t> cells(n);
    for (int j = 0; j < n; j++) cells[j] = mix(j, tokens[j]);
    return next_from(cells);
}

struct Req {
    std::vector<int32_t> prompt;
    int max_tokens;
    int priority = 0;
};

struct SeqHolder : SeqBuffers {         // owns one tm_seq's arrays
    SeqHolder(uint64_t id, const Req &r, int bs) { init(id, r.prompt, r.max_tokens, r.priority, bs); }
};

struct Sim {
    tm_block_manager *bm = nullptr;
    tm_scheduler *sched = nullptr;
    int bs, n_blocks;
    tm_sched_config cfg;
    std::vector<uint64_t> kv;                       // fake KV pool, one cell per slot
    std::map<uint64_t, std::unique_ptr<SeqHolder>> live;
    std::map<uint64_t, std::vector<int32_t>> done;  // id -> generated tokens
    std::map<uint64_t, int> cached;                 // id -> n_cached at finish
    uint64_t next_id = 1;
    int steps = 0, max_step_tokens = 0, max_step_seqs = 0;

    Sim(int n_blocks_, int bs_, int max_seqs, int budget, int cache = 1)
        : bs(bs_), n_blocks(n_blocks_) {
        cfg.max_num_seqs = max_seqs;
        cfg.max_num_batched_tokens = budget;
        EXPECT_EQ(tm_bm_create(n_blocks, bs, cache, &bm), TM_OK);
        EXPECT_EQ(tm_sched_create(&cfg, bm, &sched), TM_OK);
        kv.assign((size_t)n_blocks * bs, 0);
    }
    ~Sim() {
        tm_sched_destroy(sched);
        tm_bm_destroy(bm);
    }

    uint64_t submit(const Req &r) {
        uint64_t id = next_id++;
        live[id] = std::make_unique<SeqHolder>(id, r, bs);
        tm_sched_add(sched, &live[id]->seq);
        return id;
    }

    void finish(tm_seq *s) {
        tm_sched_finish(sched, s);
        done[s->id] = std::vector<int32_t>(s->tokens + s->n_prompt, s->tokens + s->n_tokens);
        cached[s->id] = s->n_cached;
        live.erase(s->id);
    }

    // Invariants after every step: pages, refcounts, budget, cap, ordering.
    void check(const tm_schedule &sc) {
        check_step_limits(bm, sched, cfg, sc);
        if (::testing::Test::HasFatalFailure()) return;
        int sum = 0;
        for (int i = 0; i < sc.n_seqs; i++) {
            sum += sc.n_new[i];
            ASSERT_GE(sc.n_new[i], 1);
            if (i < sc.n_decodes) {
                ASSERT_EQ(sc.n_new[i], 1);
            }
            tm_seq *s = sc.seqs[i];
            ASSERT_EQ(s->status, TM_SEQ_RUNNING);
            ASSERT_GE(s->n_blocks * bs, sc.start[i] + sc.n_new[i]);
            ASSERT_EQ(sc.sample[i] != 0, sc.start[i] + sc.n_new[i] == s->n_tokens);
            for (int j = i + 1; j < sc.n_seqs; j++) ASSERT_NE(sc.seqs[j], s);
        }
        ASSERT_EQ(sum, sc.n_tokens);
        std::vector<int> refs(n_blocks, 0);
        for (auto &kvp : live) {
            tm_seq &s = kvp.second->seq;
            if (s.status != TM_SEQ_RUNNING) {
                ASSERT_EQ(s.n_blocks, 0) << "waiting seq holds pages";
            }
            for (int b = 0; b < s.n_blocks; b++) refs[s.block_table[b]]++;
        }
        check_page_refs(bm, refs);
    }

    void run(const tm_schedule &sc, std::vector<int32_t> &sampled) { fake_model_run(sc, kv, bs, kVocab, sampled); }

    // One engine step; returns false when nothing was scheduled.
    bool step() {
        tm_schedule sc;
        tm_sched_schedule(sched, &sc);
        check(sc);
        if (::testing::Test::HasFatalFailure()) return false;
        steps++;
        max_step_tokens = std::max(max_step_tokens, sc.n_tokens);
        max_step_seqs = std::max(max_step_seqs, sc.n_seqs);
        if (sc.n_seqs == 0) return false;
        std::vector<int32_t> sampled;
        run(sc, sampled);
        tm_sched_update(sched, &sc);
        for (int i = 0; i < sc.n_seqs; i++) {
            if (!sc.sample[i]) continue;
            tm_seq *s = sc.seqs[i];
            s->tokens[s->n_tokens++] = sampled[i];
            if (s->n_tokens - s->n_prompt >= s->max_tokens) finish(s);
        }
        return true;
    }

    // Runs until every request is done; bounded.
    void drain(int max_steps = 200000) {
        for (int i = 0; i < max_steps && !live.empty(); i++) {
            bool progressed = step();
            if (::testing::Test::HasFatalFailure()) return;
            ASSERT_TRUE(progressed || live.empty()) << "stalled with work left";
        }
        ASSERT_TRUE(live.empty()) << "did not finish within the step bound";
        tm_schedule sc;
        tm_sched_schedule(sched, &sc);
        ASSERT_EQ(sc.n_seqs, 0);
        ASSERT_EQ(tm_bm_n_used(bm), 0) << "pages left after the last request";
        ASSERT_EQ(tm_sched_n_running(sched), 0);
        ASSERT_EQ(tm_sched_n_waiting(sched), 0);
    }
};

std::vector<int32_t> expected_output(const Req &r) {
    std::vector<int32_t> t = r.prompt;
    for (int i = 0; i < r.max_tokens; i++) t.push_back(reference_next(t.data(), (int)t.size()));
    return std::vector<int32_t>(t.begin() + r.prompt.size(), t.end());
}

Req random_req(std::mt19937 &rng, int max_prompt, int max_gen, int shared_prefix = 0) {
    Req r;
    int len = 1 + (int)(rng() % max_prompt);
    for (int i = 0; i < len; i++)
        r.prompt.push_back(i < shared_prefix ? (int32_t)(i * 13 % kVocab) : (int32_t)(rng() % kVocab));
    r.max_tokens = 1 + (int)(rng() % max_gen);
    return r;
}

TEST(Scheduler, BudgetAndCapRespectedEveryStep) {
    std::mt19937 rng(7);
    Sim sim(512, 16, 4, 64);
    std::map<uint64_t, Req> reqs;
    for (int i = 0; i < 24; i++) {
        Req r = random_req(rng, 300, 40);
        reqs[sim.submit(r)] = r;
    }
    sim.drain();
    EXPECT_EQ(sim.max_step_tokens, 64) << "the budget was never filled: test is too weak";
    EXPECT_EQ(sim.max_step_seqs, 4);
    for (auto &kv : reqs) EXPECT_EQ(sim.done[kv.first], expected_output(kv.second)) << kv.first;
}

TEST(Scheduler, DecodesNotStarvedByLongPrefill) {
    Sim sim(1024, 16, 8, 64);
    Req small{{1, 2, 3}, 60};
    uint64_t a = sim.submit(small);
    for (int i = 0; i < 4 && sim.live.count(a); i++) sim.step(); // a is decoding now
    Req big;
    for (int i = 0; i < 3000; i++) big.prompt.push_back(i % 777);
    big.max_tokens = 5;
    uint64_t b = sim.submit(big);
    int steps_with_prefill = 0;
    for (int i = 0; i < 1000 && sim.live.count(a); i++) {
        tm_seq *sa = &sim.live[a]->seq;
        int before = sa->n_tokens;
        bool b_prefilling = sim.live.count(b) && sim.live[b]->seq.n_tokens == (int)big.prompt.size();
        ASSERT_TRUE(sim.step());
        if (HasFatalFailure()) return;
        // Every step, a either advanced by one token or finished.
        if (sim.live.count(a)) {
            ASSERT_EQ(sa->n_tokens, before + 1) << "decode starved at step " << i;
        }
        steps_with_prefill += b_prefilling;
    }
    EXPECT_GT(steps_with_prefill, 10) << "the prefill did not overlap the decode";
    sim.drain();
    EXPECT_EQ(sim.done[a], expected_output(small));
    EXPECT_EQ(sim.done[b], expected_output(big));
}

TEST(Scheduler, PreemptionUnderTinyPoolCompletesEverything) {
    for (int seed = 1; seed <= 6; seed++) {
        std::mt19937 rng(seed);
        // 12 pages of 4 tokens: each request alone fits, together they do not.
        Sim sim(12, 4, 6, 32);
        std::map<uint64_t, Req> reqs;
        for (int i = 0; i < 10; i++) {
            Req r = random_req(rng, 25, 20, seed % 2 ? 8 : 0);
            ASSERT_LE((int)(r.prompt.size() + r.max_tokens + 3) / 4, 12);
            reqs[sim.submit(r)] = r;
        }
        sim.drain();
        if (HasFatalFailure()) return;
        tm_sched_counters c;
        tm_sched_get_counters(sim.sched, &c);
        EXPECT_GT(c.n_preemptions, 0u) << "pool not tight enough to preempt: test is too weak";
        for (auto &kv : reqs) EXPECT_EQ(sim.done[kv.first], expected_output(kv.second)) << "seed " << seed;
    }
}

TEST(Scheduler, PrefixCacheServesSecondRequest) {
    Sim sim(256, 16, 4, 128);
    Req a, b;
    for (int i = 0; i < 200; i++) a.prompt.push_back((i * 7) % kVocab);
    b.prompt = a.prompt;
    b.prompt.resize(180);
    for (int i = 0; i < 30; i++) b.prompt.push_back(900 + i);
    a.max_tokens = b.max_tokens = 8;
    uint64_t ia = sim.submit(a);
    sim.drain();
    uint64_t ib = sim.submit(b);
    sim.drain();
    EXPECT_EQ(sim.cached[ia], 0);
    EXPECT_EQ(sim.cached[ib], 176); // 11 full pages of the 180 shared tokens
    EXPECT_EQ(sim.done[ib], expected_output(b));
    // A prompt fully cached still computes its last token (to get logits).
    uint64_t ic = sim.submit(a);
    sim.drain();
    EXPECT_EQ(sim.cached[ic], 192);
    EXPECT_EQ(sim.done[ic], expected_output(a));
    tm_sched_counters c;
    tm_sched_get_counters(sim.sched, &c);
    EXPECT_EQ(c.prefix_hits, 176u + 192u);
}

TEST(Scheduler, PriorityAndAbortsInRandomTraffic) {
    for (int seed = 1; seed <= 4; seed++) {
        std::mt19937 rng(100 + seed);
        Sim sim(40, 8, 5, 48);
        std::map<uint64_t, Req> reqs;
        std::vector<uint64_t> aborted;
        for (int step = 0; step < 3000; step++) {
            if (step < 400 && rng() % 3 == 0) {
                Req r = random_req(rng, 120, 30, 40);
                r.priority = (int)(rng() % 2);
                if ((int)(r.prompt.size() + r.max_tokens + 7) / 8 <= 40) reqs[sim.submit(r)] = r;
            }
            if (!sim.live.empty() && rng() % 40 == 0) { // abort a random live request
                auto it = sim.live.begin();
                std::advance(it, rng() % sim.live.size());
                tm_seq *s = &it->second->seq;
                aborted.push_back(s->id);
                sim.finish(s);
            }
            if (!sim.live.empty()) sim.step();
            if (HasFatalFailure()) return;
        }
        sim.drain();
        if (HasFatalFailure()) return;
        EXPECT_FALSE(aborted.empty());
        for (auto &kv : reqs) {
            if (std::find(aborted.begin(), aborted.end(), kv.first) != aborted.end()) continue;
            EXPECT_EQ(sim.done[kv.first], expected_output(kv.second));
        }
    }
}

TEST(Scheduler, InteractiveAdmittedBeforeBatch) {
    Sim sim(256, 16, 1, 64);
    Req r{{1, 2, 3, 4}, 2};
    Req lo = r, hi = r;
    lo.priority = 1;
    uint64_t first = sim.submit(r);
    uint64_t ilo = sim.submit(lo);
    uint64_t ihi = sim.submit(hi);
    std::vector<uint64_t> order;
    for (int i = 0; i < 100 && !sim.live.empty(); i++) {
        sim.step();
        for (uint64_t id : {first, ilo, ihi})
            if (sim.done.count(id) && std::find(order.begin(), order.end(), id) == order.end())
                order.push_back(id);
    }
    ASSERT_EQ(order.size(), 3u);
    EXPECT_EQ(order[0], first);
    EXPECT_EQ(order[1], ihi);
    EXPECT_EQ(order[2], ilo);
}

TEST(Scheduler, RejectsBudgetBelowSeqCap) {
    tm_block_manager *bm;
    ASSERT_EQ(tm_bm_create(8, 4, 1, &bm), TM_OK);
    tm_sched_config c = {8, 4};
    tm_scheduler *s = nullptr;
    EXPECT_EQ(tm_sched_create(&c, bm, &s), TM_EINVAL);
    EXPECT_EQ(s, nullptr);
    tm_bm_destroy(bm);
}

} // namespace
