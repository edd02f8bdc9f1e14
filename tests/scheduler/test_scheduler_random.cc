// Randomized stress of the scheduler + block manager on a fake model runner. Fixed seeds:
// every run is the same. (The engine's randomized stress, on the real default model, is
// test_engine_stress.cc.)
//
// The fake runner keeps a fake KV pool: computing token t at position j
// of a sequence with cache-salt key s writes cell(j, t, s) into the page slot its block
// table gives, and the next token is a hash over what its pages hold for positions
// 0..n-1. A wrong prefix hit (other tokens or another tenant's salt), a page reused while
// still referenced or a lost preemption changes the output; the reference output is the
// same hash over the true token list, i.e. the request's solo run.
//
// Each scenario draws a config (page size, a pool barely larger than the largest request,
// seq cap, token budget down to the cap, cache on/off) and a stream of requests (shared
// prefixes, salts, duplicate prompts, priorities, stop tokens, sizes up to exactly the
// pool) arriving at random steps, with aborts at random steps of requests in any state
// (waiting, preempted, prefilling, decoding, finished; twice). Invariants are checked
// after every step; at the end every request finished once with the right reason and
// output, and every page is free again.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "scheduler_test_util.h"

extern "C" {
#include "common/common.h"
#include "scheduler/block_manager.h"
#include "scheduler/scheduler.h"
}

namespace {

const int kVocab = 64; // small, so random stop tokens are hit now and then

uint64_t cell(uint64_t pos, uint64_t tok, uint64_t salt) { return fake_kv_cell(pos, tok, salt); }

int32_t next_from(const std::vector<uint64_t> &cells) { return fake_next_token(cells, kVocab); }

enum class Fin { NONE, STOP, LENGTH, ABORT };

const char *fin_name(Fin f) {
    switch (f) {
    case Fin::NONE: return "none";
    case Fin::STOP: return "stop";
    case Fin::LENGTH: return "length";
    case Fin::ABORT: return "abort";
    }
    return "?";
}

struct Req {
    std::vector<int32_t> prompt;
    int max_tokens = 1;
    int priority = 0;
    std::string salt;              // "" = none
    std::vector<int32_t> stop_ids; // generation ends (STOP) after emitting one of these
};

bool is_stop(const Req &r, int32_t t) {
    return std::find(r.stop_ids.begin(), r.stop_ids.end(), t) != r.stop_ids.end();
}

// The solo run: generated tokens and finish reason from the true token list.
std::vector<int32_t> solo_output(const Req &r, Fin *fin) {
    uint64_t salt = tm_bm_salt_key(r.salt.c_str()).lo;
    std::vector<int32_t> t = r.prompt;
    std::vector<uint64_t> cells;
    for (size_t j = 0; j < t.size(); j++) cells.push_back(cell(j, t[j], salt));
    *fin = Fin::LENGTH;
    for (int i = 0; i < r.max_tokens; i++) {
        int32_t next = next_from(cells);
        cells.push_back(cell(t.size(), next, salt));
        t.push_back(next);
        if (is_stop(r, next)) {
            *fin = Fin::STOP;
            break;
        }
    }
    return std::vector<int32_t>(t.begin() + r.prompt.size(), t.end());
}

// What state a request was in when it was aborted (for coverage counts).
enum AbortKind { AB_WAITING, AB_PREEMPTED, AB_PREFILL, AB_DECODE, AB_FINISHED, AB_TWICE, AB_N };
const char *kAbortNames[AB_N] = {"waiting", "preempted", "prefilling", "decoding", "finished",
                                 "twice"};

struct Item : SeqBuffers {       // one request and the tm_seq the test owns for it
    Req req;
    int arrive = 0;              // step at which it is submitted
    bool added = false;          // handed to the scheduler
    int add_order = 0;           // position in the order of tm_sched_add calls
    Fin fin = Fin::NONE;         // set exactly once
    int n_finish = 0;            // times a finish reason was set (must end at 1)
    int abort_at = -1;           // step before which it is aborted, -1 never
    bool abort_twice = false;    // abort it again right after

    void init(uint64_t id, int bs) {
        SeqBuffers::init(id, req.prompt, req.max_tokens, req.priority, bs);
        seq.salt = tm_bm_salt_key(req.salt.c_str());
    }
};

struct Scenario {
    int bs = 4;                  // tokens per page
    int n_blocks = 8;            // pages in the pool
    int max_seqs = 2;            // scheduler's seq cap
    int budget = 8;              // scheduler's token budget
    int cache = 1;               // prefix cache on
    bool roomy = false;          // pool holds every request at once: no eviction
    std::vector<Req> reqs;       // the requests, id = index + 1
    std::vector<int> arrive;     // (reqs) step at which each is submitted
    std::vector<int> abort_at;   // (reqs) step before which each is aborted, -1 never
    std::vector<bool> abort_twice; // (reqs) aborted a second time right after
};

struct Sim {
    const Scenario &sc0;
    tm_block_manager *bm = nullptr;
    tm_scheduler *sched = nullptr;
    int bs, n_blocks;
    tm_sched_config cfg{};
    std::vector<uint64_t> kv;    // fake KV pool, one cell per slot
    std::vector<std::unique_ptr<Item>> items;
    int n_live = 0;              // added and not finished
    int n_added = 0;             // tm_sched_add calls so far
    int steps = 0;
    int abort_counts[AB_N] = {};
    uint64_t n_preempted_seen = 0;
    // Every (salt, token prefix ending at a page boundary) whose page was computed: what
    // the prefix cache may serve. Without eviction it must serve all of it.
    std::set<std::pair<std::string, std::vector<int32_t>>> computed;
    int n_exact_cached = 0;      // first admissions whose hit was checked for equality

    explicit Sim(const Scenario &s) : sc0(s), bs(s.bs), n_blocks(s.n_blocks) {
        cfg.max_num_seqs = s.max_seqs;
        cfg.max_num_batched_tokens = s.budget;
        EXPECT_EQ(tm_bm_create(n_blocks, bs, s.cache, &bm), TM_OK);
        EXPECT_EQ(tm_sched_create(&cfg, bm, &sched), TM_OK);
        kv.assign((size_t)n_blocks * bs, 0);
        for (size_t i = 0; i < s.reqs.size(); i++) {
            auto it = std::make_unique<Item>();
            it->req = s.reqs[i];
            it->arrive = s.arrive[i];
            it->abort_at = s.abort_at[i];
            it->abort_twice = s.abort_twice[i];
            it->init(i + 1, bs);
            items.push_back(std::move(it));
        }
    }
    ~Sim() {
        tm_sched_destroy(sched);
        tm_bm_destroy(bm);
    }

    void set_fin(Item &it, Fin f) {
        it.n_finish++;
        if (it.fin == Fin::NONE) it.fin = f;
    }

    // Aborts it in whatever state it is in (the engine calls tm_sched_finish for this).
    void abort(Item &it) {
        tm_seq &s = it.seq;
        AbortKind k;
        if (it.fin != Fin::NONE) k = AB_FINISHED;
        else if (s.status == TM_SEQ_WAITING) k = s.admitted_once ? AB_PREEMPTED : AB_WAITING;
        else k = s.n_computed < s.n_prompt ? AB_PREFILL : AB_DECODE;
        abort_counts[k]++;
        tm_sched_finish(sched, &s);
        ASSERT_EQ(s.status, TM_SEQ_FINISHED);
        ASSERT_EQ(s.n_blocks, 0);
        if (it.fin == Fin::NONE) {
            set_fin(it, Fin::ABORT);
            n_live--;
        }
    }

    // Invariants of the step just formed, before the model runs.
    void check(const tm_schedule &sc) {
        check_step_limits(bm, sched, cfg, sc);
        if (::testing::Test::HasFatalFailure()) return;
        ASSERT_LE(sc.n_decodes, sc.n_seqs);
        ASSERT_EQ(tm_sched_n_running(sched) + tm_sched_n_waiting(sched), n_live);
        if (n_live > 0) {
            ASSERT_GT(sc.n_seqs, 0) << "nothing scheduled with " << n_live << " requests live";
        }
        int sum = 0;
        for (int i = 0; i < sc.n_seqs; i++) {
            tm_seq *s = sc.seqs[i];
            sum += sc.n_new[i];
            ASSERT_GE(sc.n_new[i], 1);
            if (i < sc.n_decodes) {
                ASSERT_EQ(sc.n_new[i], 1);
            }
            ASSERT_EQ(s->status, TM_SEQ_RUNNING);
            ASSERT_EQ(items[s->id - 1]->fin, Fin::NONE) << "finished request scheduled";
            ASSERT_EQ(sc.start[i], s->n_computed);
            ASSERT_LE(sc.start[i] + sc.n_new[i], s->n_tokens);
            ASSERT_GE(s->n_blocks * bs, sc.start[i] + sc.n_new[i]);
            ASSERT_EQ(sc.sample[i] != 0, sc.start[i] + sc.n_new[i] == s->n_tokens);
            for (int j = i + 1; j < sc.n_seqs; j++) ASSERT_NE(sc.seqs[j], s);
            // Pages written this step belong to this sequence alone and are not in the
            // prefix cache (a keyed page is immutable: others may hit it any time).
            for (int b = sc.start[i] / bs; b <= (sc.start[i] + sc.n_new[i] - 1) / bs; b++) {
                int32_t p = s->block_table[b];
                ASSERT_EQ(tm_bm_refcount(bm, p), 1) << "writing shared page " << p;
                ASSERT_FALSE(tm_bm_is_cached(bm, p)) << "writing keyed page " << p;
            }
        }
        ASSERT_EQ(sum, sc.n_tokens);
        // Decodes first: every running sequence one token short is in the step.
        for (int r = 0; r < tm_sched_n_running(sched); r++) {
            tm_seq *s = tm_sched_running(sched, r);
            if (s->n_tokens - s->n_computed != 1) continue;
            bool in = false;
            for (int i = 0; i < sc.n_seqs; i++) in |= sc.seqs[i] == s;
            ASSERT_TRUE(in) << "decode of request " << s->id << " skipped";
        }
        // Waiting list: priority order; within a priority preempted ones first, then new
        // ones first come, first served.
        int prio = 0, n_wait = 0, seen_new = 0, last_new = -1;
        for (tm_seq *q = tm_sched_waiting_head(sched); q; q = q->next, n_wait++) {
            ASSERT_LE(n_wait, n_live);
            ASSERT_EQ(q->status, TM_SEQ_WAITING);
            ASSERT_GE(q->priority, prio) << "waiting list out of priority order";
            if (q->priority != prio) seen_new = 0, last_new = -1;
            prio = q->priority;
            if (q->admitted_once) {
                ASSERT_FALSE(seen_new) << "preempted request " << q->id << " queued behind a new one";
            } else {
                ASSERT_GT(items[q->id - 1]->add_order, last_new) << "new requests out of FCFS order";
                last_new = items[q->id - 1]->add_order;
            }
            seen_new |= !q->admitted_once;
        }
        ASSERT_EQ(n_wait, tm_sched_n_waiting(sched));
        // Reference counts equal the block tables that hold each page.
        std::vector<int> refs(n_blocks, 0);
        for (auto &it : items) {
            tm_seq &s = it->seq;
            if (s.status != TM_SEQ_RUNNING) {
                ASSERT_EQ(s.n_blocks, 0) << "request " << s.id << " holds pages while not running";
                continue;
            }
            ASSERT_LE(s.n_computed, s.n_blocks * bs);
            ASSERT_LE(s.n_hashed, s.n_blocks);
            ASSERT_LE(s.n_blocks, s.cap_blocks);
            for (int b = 0; b < s.n_blocks; b++) {
                ASSERT_GE(s.block_table[b], 0);
                ASSERT_LT(s.block_table[b], n_blocks);
                refs[s.block_table[b]]++;
            }
        }
        check_page_refs(bm, refs);
        ASSERT_LE(tm_bm_n_cached(bm), tm_bm_n_free(bm));
    }

    // At first admission the cache served whole pages that were computed before under
    // the same salt, never more than the prompt minus its last token; all of them when
    // nothing can have been evicted.
    void check_first_hit(const Item &it) {
        const tm_seq &s = it.seq;
        int max_pages = sc0.cache ? (s.n_prompt - 1) / bs : 0, n = 0;
        while (n < max_pages &&
               computed.count({it.req.salt, std::vector<int32_t>(s.tokens, s.tokens + (n + 1) * bs)}))
            n++;
        ASSERT_EQ(s.n_cached % bs, 0);
        ASSERT_LE(s.n_cached, n * bs) << "request " << s.id << " hit pages never computed";
        if (sc0.roomy) {
            ASSERT_EQ(s.n_cached, n * bs) << "request " << s.id << " missed cached pages";
            n_exact_cached += n > 0;
        }
    }

    void run(const tm_schedule &sc, std::vector<int32_t> &sampled) { fake_model_run(sc, kv, bs, kVocab, sampled); }

    void step() {
        // Arrivals and aborts happen between steps, as in the engine.
        for (auto &it : items) {
            if (!it->added && it->arrive <= steps) {
                it->added = true;
                it->add_order = n_added++;
                n_live++;
                tm_sched_add(sched, &it->seq);
            }
        }
        for (auto &it : items) {
            if (!it->added || it->abort_at != steps) continue;
            abort(*it);
            if (it->abort_twice) {
                abort_counts[AB_TWICE]++;
                abort(*it);
            }
            if (::testing::Test::HasFatalFailure()) return;
        }
        std::vector<int> was_admitted(items.size());
        for (size_t i = 0; i < items.size(); i++) was_admitted[i] = items[i]->seq.admitted_once;
        tm_schedule sc;
        tm_sched_schedule(sched, &sc);
        n_preempted_seen += (uint64_t)sc.n_preempted;
        check(sc);
        if (::testing::Test::HasFatalFailure()) return;
        for (size_t i = 0; i < items.size(); i++)
            if (!was_admitted[i] && items[i]->seq.admitted_once) check_first_hit(*items[i]);
        if (::testing::Test::HasFatalFailure()) return;
        steps++;
        std::vector<int32_t> sampled;
        run(sc, sampled);
        tm_sched_update(sched, &sc);
        for (int i = 0; i < sc.n_seqs; i++) {
            tm_seq *s = sc.seqs[i];
            for (int k = sc.start[i] / bs; (k + 1) * bs <= s->n_computed; k++)
                computed.insert({items[s->id - 1]->req.salt,
                                 std::vector<int32_t>(s->tokens, s->tokens + (k + 1) * bs)});
        }
        for (int i = 0; i < sc.n_seqs; i++) {
            if (!sc.sample[i]) continue;
            tm_seq *s = sc.seqs[i];
            Item &it = *items[s->id - 1];
            ASSERT_LT(s->n_tokens, s->cap_tokens);
            s->tokens[s->n_tokens++] = sampled[i];
            Fin f = is_stop(it.req, sampled[i]) ? Fin::STOP
                    : s->n_tokens - s->n_prompt >= s->max_tokens ? Fin::LENGTH
                                                                 : Fin::NONE;
            if (f == Fin::NONE) continue;
            tm_sched_finish(sched, s);
            set_fin(it, f);
            n_live--;
        }
    }

    bool all_arrived() const {
        for (auto &it : items)
            if (!it->added) return false;
        return true;
    }

    void drain(int max_steps) {
        while (steps < max_steps && (n_live > 0 || !all_arrived())) {
            step();
            if (::testing::Test::HasFatalFailure()) return;
        }
        ASSERT_EQ(n_live, 0) << "not finished after " << steps << " steps (starved or stuck)";
        tm_schedule sc;
        ASSERT_EQ(tm_sched_schedule(sched, &sc), 0);
        char err[256] = "";
        ASSERT_EQ(tm_bm_check(bm, err, sizeof err), TM_OK) << err;
        ASSERT_EQ(tm_bm_n_used(bm), 0) << "pages left after the last request";
        ASSERT_EQ(tm_bm_n_free(bm), n_blocks);
        ASSERT_EQ(tm_sched_n_running(sched), 0);
        ASSERT_EQ(tm_sched_n_waiting(sched), 0);
        // Aborts after the end change nothing.
        for (auto &it : items) tm_sched_finish(sched, &it->seq);
        ASSERT_EQ(tm_bm_n_free(bm), n_blocks);
        ASSERT_EQ(tm_sched_n_waiting(sched), 0);
    }

    // Every request finished once, with its solo run's reason and tokens (a prefix of
    // them when aborted).
    void check_results() {
        for (auto &itp : items) {
            Item &it = *itp;
            tm_seq &s = it.seq;
            SCOPED_TRACE("request " + std::to_string(s.id));
            ASSERT_EQ(it.n_finish, 1);
            ASSERT_EQ(s.status, TM_SEQ_FINISHED);
            Fin want_fin;
            std::vector<int32_t> want = solo_output(it.req, &want_fin);
            std::vector<int32_t> got(s.tokens + s.n_prompt, s.tokens + s.n_tokens);
            if (it.fin == Fin::ABORT) {
                ASSERT_LE(got.size(), want.size());
                ASSERT_TRUE(std::equal(got.begin(), got.end(), want.begin())) << "aborted output diverged";
            } else {
                ASSERT_EQ(fin_name(it.fin), std::string(fin_name(want_fin)));
                ASSERT_EQ(got, want);
            }
            if (s.admitted_once) {
                ASSERT_EQ(s.n_cached % bs, 0);
                ASSERT_LT(s.n_cached, s.n_prompt);
                if (!sc0.cache) {
                    ASSERT_EQ(s.n_cached, 0);
                }
            }
        }
    }
};

std::vector<int32_t> random_tokens(std::mt19937 &rng, int n) {
    std::vector<int32_t> t(n);
    for (auto &x : t) x = (int32_t)(rng() % kVocab);
    return t;
}

// One random scenario. Requests fit the pool alone (some exactly); the pool holds only
// a few of them at once, so preemption is routine.
Scenario make_scenario(uint32_t seed) {
    std::mt19937 rng(seed);
    Scenario s;
    const int sizes[] = {1, 2, 3, 4, 8, 16};
    s.bs = sizes[rng() % 6];
    s.max_seqs = 1 + (int)(rng() % 6);
    s.budget = s.max_seqs + (rng() % 4 == 0 ? 0 : (int)(rng() % 40));
    s.cache = rng() % 5 != 0;
    int max_req = 8 + (int)(rng() % 56); // prompt + max_tokens, tokens
    int req_pages = (max_req + s.bs - 1) / s.bs;
    s.n_blocks = req_pages + (int)(rng() % (req_pages + 2));
    int pool_tokens = s.n_blocks * s.bs;
    // Shared system prompts, so the prefix cache hits; some a whole number of pages.
    std::vector<std::vector<int32_t>> prefixes;
    for (int i = 0; i < 3; i++) {
        int len = i == 0 ? s.bs * (1 + (int)(rng() % 3)) : 1 + (int)(rng() % (max_req / 2));
        prefixes.push_back(random_tokens(rng, std::min(len, max_req - 2)));
    }
    const char *salts[] = {"", "", "tenant-a", "tenant-b"};
    int n = 6 + (int)(rng() % 30);
    for (int i = 0; i < n; i++) {
        Req r;
        int kind = (int)(rng() % 10);
        if (kind < 2 && !s.reqs.empty()) {
            r = s.reqs[rng() % s.reqs.size()]; // a duplicate (maybe another salt)
            if (rng() % 2) r.salt = salts[rng() % 4];
        } else {
            if (kind < 6) r.prompt = prefixes[rng() % prefixes.size()];
            int tail = (int)(rng() % max_req);
            for (int32_t t : random_tokens(rng, tail)) r.prompt.push_back(t);
            if (r.prompt.empty()) r.prompt.push_back((int32_t)(rng() % kVocab));
            if ((int)r.prompt.size() > max_req - 1) r.prompt.resize(max_req - 1);
            int room = max_req - (int)r.prompt.size();
            // Some take every page the pool has: the largest request that fits.
            if (rng() % 8 == 0) room = pool_tokens - (int)r.prompt.size();
            r.max_tokens = 1 + (int)(rng() % room);
            r.salt = salts[rng() % 4];
            r.priority = rng() % 3 == 0 ? 1 : 0;
            if (rng() % 3 == 0) r.stop_ids = {(int32_t)(rng() % kVocab), (int32_t)(rng() % kVocab)};
        }
        s.reqs.push_back(r);
        s.arrive.push_back(rng() % 4 == 0 ? 0 : (int)(rng() % 150));
        bool ab = rng() % 4 == 0;
        s.abort_at.push_back(ab ? s.arrive.back() + (int)(rng() % 60) : -1);
        s.abort_twice.push_back(ab && rng() % 3 == 0);
    }
    // A quarter of the scenarios get a pool for all requests at once (no eviction, no
    // preemption), where the prefix cache must serve every computed page.
    if (rng() % 4 == 0) {
        s.roomy = true;
        s.n_blocks = 1;
        for (const Req &r : s.reqs) s.n_blocks += ((int)r.prompt.size() + r.max_tokens + s.bs - 1) / s.bs;
    }
    return s;
}

std::string describe(const Scenario &s, uint32_t seed) {
    return "seed " + std::to_string(seed) + ": bs " + std::to_string(s.bs) + ", pages " +
           std::to_string(s.n_blocks) + ", seqs " + std::to_string(s.max_seqs) + ", budget " +
           std::to_string(s.budget) + ", cache " + std::to_string(s.cache) + ", roomy " +
           std::to_string(s.roomy) + ", requests " +
           std::to_string(s.reqs.size());
}

TEST(SchedulerRandom, InvariantsAndSoloOutputsUnderRandomTraffic) {
    // TM_RANDOM_SEEDS widens the campaign by hand (the default keeps it fast).
    const char *env = getenv("TM_RANDOM_SEEDS");
    const uint32_t kSeeds = env && atoi(env) > 0 ? (uint32_t)atoi(env) : 400;
    int totals[AB_N] = {};
    uint64_t preemptions = 0, hits = 0;
    int n_requests = 0, n_stop = 0, n_length = 0, n_exact = 0;
    for (uint32_t seed = 1; seed <= kSeeds; seed++) {
        Scenario sc = make_scenario(seed);
        SCOPED_TRACE(describe(sc, seed));
        Sim sim(sc);
        sim.drain(20000);
        if (HasFatalFailure()) return;
        sim.check_results();
        if (HasFatalFailure()) return;
        tm_sched_counters c;
        tm_sched_get_counters(sim.sched, &c);
        ASSERT_EQ(c.n_preemptions, sim.n_preempted_seen);
        preemptions += c.n_preemptions;
        n_exact += sim.n_exact_cached;
        if (sc.roomy) {
            EXPECT_EQ(c.n_preemptions, 0u);
        }
        hits += c.prefix_hits;
        for (int k = 0; k < AB_N; k++) totals[k] += sim.abort_counts[k];
        for (auto &it : sim.items) {
            n_requests++;
            n_stop += it->fin == Fin::STOP;
            n_length += it->fin == Fin::LENGTH;
        }
    }
    // The campaign must reach every state it claims to test.
    for (int k = 0; k < AB_N; k++) EXPECT_GT(totals[k], 0) << "no abort while " << kAbortNames[k];
    EXPECT_GT(preemptions, 100u);
    EXPECT_GT(hits, 1000u);
    EXPECT_GT(n_stop, 50);
    EXPECT_GT(n_exact, 50) << "too few exact prefix-cache checks";
    EXPECT_GT(n_length, 500);
    printf("[ stats    ] %d requests, %llu preemptions, %llu prefix-hit tokens (%d exact checks), "
           "%d stop, %d length; aborts:", n_requests, (unsigned long long)preemptions,
           (unsigned long long)hits, n_exact, n_stop, n_length);
    for (int k = 0; k < AB_N; k++) printf(" %s %d", kAbortNames[k], totals[k]);
    printf("\n");
}

} // namespace
