// Sampler: greedy ties, seeded reproducibility, each filter against an exact expectation,
// penalties, and the distribution of draws against the softmax it samples from.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <vector>

extern "C" {
#include "common/common.h"
#include "models/sampler.h"
}

namespace {

struct Sampler {
    explicit Sampler(int n_vocab) : scratch(tm_sampler_scratch_bytes(n_vocab)) {}
    int32_t sample(const tm_sampling_params &p, std::vector<float> logits,
                   const std::vector<int32_t> &prompt = {},
                   const std::vector<int32_t> &output = {}) {
        if (!init) {
            tm_sampler_init(&s, &p);
            init = true;
        }
        return tm_sampler_sample(&s, logits.data(), (int)logits.size(), prompt.data(),
                                 (int)prompt.size(), output.data(), (int)output.size(),
                                 scratch.data());
    }
    tm_sampler s{};
    bool init = false;
    std::vector<unsigned char> scratch;
};

tm_sampling_params params() {
    tm_sampling_params p;
    tm_sampling_params_default(&p);
    return p;
}

std::vector<float> random_logits(int n, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> d(0.0f, 3.0f);
    std::vector<float> v(n);
    for (auto &x : v) x = d(rng);
    return v;
}

TEST(Sampler, GreedyPicksMaxAndBreaksTiesLow) {
    auto p = params();
    p.temperature = 0.0f;
    Sampler s(8);
    EXPECT_EQ(s.sample(p, {0, 1, 5, 2, 5, 1, 0, -1}), 2);
    auto big = random_logits(50000, 1);
    int32_t want = 0;
    for (int i = 1; i < (int)big.size(); i++)
        if (big[i] > big[want]) want = i;
    Sampler s2(50000);
    EXPECT_EQ(s2.sample(p, big), want);
    // The vectorized argmax: ties across SIMD lanes and the scalar tail, NaN, -inf.
    const int n = 37; // two 16-lane passes plus a 5-value tail
    Sampler s3(n);
    std::vector<float> v(n, -1.0f);
    v[36] = 4.0f;
    EXPECT_EQ(s3.sample(p, v), 36);
    v[20] = 4.0f; // same value in another lane, lower id
    EXPECT_EQ(s3.sample(p, v), 20);
    v[3] = 4.0f;
    EXPECT_EQ(s3.sample(p, v), 3);
    v[0] = NAN, v[1] = NAN; // NaN never wins
    EXPECT_EQ(s3.sample(p, v), 3);
    std::vector<float> ninf(n, -INFINITY);
    EXPECT_EQ(s3.sample(p, ninf), 0);
    ninf[33] = -1e30f;
    EXPECT_EQ(s3.sample(p, ninf), 33);
}

// tm_argmax is what a greedy sampler returns, and tm_sampler_is_argmax says exactly when
// the engine may take a batched argmax instead of sampling.
TEST(Sampler, ArgmaxIsTheGreedyPickAndSaysWhenItApplies) {
    for (uint32_t seed = 0; seed < 4; seed++) {
        auto v = random_logits(1000, 70 + seed);
        auto p = params();
        p.temperature = 0.0f;
        Sampler s(1000);
        EXPECT_EQ(tm_argmax(v.data(), 1000), s.sample(p, v));
    }
    std::vector<float> nan(9, NAN);
    EXPECT_EQ(tm_argmax(nan.data(), 9), 0);
    const auto is_argmax = [](tm_sampling_params p) {
        tm_sampler s;
        tm_sampler_init(&s, &p);
        return tm_sampler_is_argmax(&s);
    };
    auto p = params();
    p.temperature = 0.0f;
    EXPECT_TRUE(is_argmax(p));
    p.temperature = 0.7f;
    EXPECT_FALSE(is_argmax(p));
    p.top_k = 1; // greedy whatever the temperature
    EXPECT_TRUE(is_argmax(p));
    for (int which = 0; which < 3; which++) { // any penalty changes the logits first
        auto q = params();
        q.temperature = 0.0f;
        if (which == 0) q.repetition_penalty = 1.1f;
        if (which == 1) q.presence_penalty = 0.5f;
        if (which == 2) q.frequency_penalty = -0.5f;
        EXPECT_FALSE(is_argmax(q)) << which;
    }
    auto q = params();
    q.temperature = 0.0f;
    q.repetition_penalty = 0.0f; // <= 0 is off (as in apply_penalties)
    EXPECT_TRUE(is_argmax(q));
}

TEST(Sampler, SameSeedSameTokensDifferentSeedDiffers) {
    auto logits = random_logits(1000, 2);
    auto p = params();
    p.temperature = 1.5f;
    p.seed = 42;
    Sampler a(1000), b(1000);
    std::vector<int32_t> ta, tb;
    for (int i = 0; i < 64; i++) {
        ta.push_back(a.sample(p, logits));
        tb.push_back(b.sample(p, logits));
    }
    EXPECT_EQ(ta, tb);
    p.seed = 43;
    Sampler c(1000);
    std::vector<int32_t> tc;
    for (int i = 0; i < 64; i++) tc.push_back(c.sample(p, logits));
    EXPECT_NE(ta, tc);
}

TEST(Sampler, TopKOneIsGreedyAndTopKRestricts) {
    auto logits = random_logits(500, 3);
    std::vector<int> order(500);
    for (int i = 0; i < 500; i++) order[i] = i;
    std::sort(order.begin(), order.end(), [&](int a, int b) { return logits[a] > logits[b]; });
    auto p = params();
    p.temperature = 5.0f; // flat: without top-k almost anything could come out
    p.top_k = 3;
    Sampler s(500);
    std::map<int, int> seen;
    for (int i = 0; i < 2000; i++) seen[s.sample(p, logits)]++;
    EXPECT_LE(seen.size(), 3u);
    for (auto &kv : seen)
        EXPECT_TRUE(kv.first == order[0] || kv.first == order[1] || kv.first == order[2]);
    EXPECT_EQ(seen.size(), 3u); // at temperature 5 all three show up in 2000 draws
}

TEST(Sampler, TopPKeepsSmallestPrefixReachingP) {
    // probabilities 0.5, 0.3, 0.15, 0.05 -> top_p 0.7 keeps the first two
    std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
    auto p = params();
    p.top_p = 0.7f;
    p.seed = 7;
    Sampler s(4);
    int counts[4] = {0};
    for (int i = 0; i < 4000; i++) counts[s.sample(p, logits)]++;
    EXPECT_EQ(counts[2] + counts[3], 0);
    // renormalized 0.625 / 0.375
    EXPECT_NEAR(counts[0] / 4000.0, 0.625, 0.04);
}

TEST(Sampler, MinPDropsTokensBelowFractionOfBest) {
    std::vector<float> logits = {std::log(0.6f), std::log(0.25f), std::log(0.1f), std::log(0.05f)};
    auto p = params();
    p.min_p = 0.2f; // floor 0.12: keeps 0.6 and 0.25
    p.seed = 9;
    Sampler s(4);
    int counts[4] = {0};
    for (int i = 0; i < 4000; i++) counts[s.sample(p, logits)]++;
    EXPECT_EQ(counts[2] + counts[3], 0);
    EXPECT_GT(counts[1], 0);
}

TEST(Sampler, DrawsFollowTheSoftmax) {
    std::vector<float> logits = {1.0f, 2.0f, 0.5f, -1.0f, 1.5f};
    auto p = params();
    p.temperature = 0.7f;
    p.seed = 11;
    Sampler s(5);
    const int n = 20000;
    int counts[5] = {0};
    for (int i = 0; i < n; i++) counts[s.sample(p, logits)]++;
    double z = 0;
    for (float l : logits) z += std::exp(l / 0.7);
    for (int i = 0; i < 5; i++) {
        double want = std::exp(logits[i] / 0.7) / z;
        EXPECT_NEAR(counts[i] / (double)n, want, 0.015) << "token " << i;
    }
}

TEST(Sampler, PenaltiesChangeTheGreedyChoice) {
    auto p = params();
    p.temperature = 0.0f;
    std::vector<float> logits = {3.0f, 2.9f, 1.0f};
    Sampler s(3);
    EXPECT_EQ(s.sample(p, logits), 0);
    p.repetition_penalty = 1.2f; // 3.0 / 1.2 = 2.5 < 2.9
    Sampler r(3);
    EXPECT_EQ(r.sample(p, logits, {0}, {}), 1);
    p.repetition_penalty = 1.0f;
    p.frequency_penalty = 0.05f; // token 0 seen 3 times in the output: 3.0 - 0.15 < 2.9
    Sampler f(3);
    EXPECT_EQ(f.sample(p, logits, {}, {0, 0, 0}), 1);
    p.frequency_penalty = 0.0f;
    p.presence_penalty = 0.2f; // once is enough
    Sampler pr(3);
    EXPECT_EQ(pr.sample(p, logits, {}, {0}), 1);
    // presence/frequency look at the output only
    Sampler pr2(3);
    EXPECT_EQ(pr2.sample(p, logits, {0}, {}), 0);
}

// The API accepts any repetition_penalty in (0, 2]. 3 / 1e-38 overflows a float: the
// penalized logit must stay finite, or the softmax turns into NaN.
TEST(Sampler, TinyRepetitionPenaltyStaysFinite) {
    for (uint64_t seed = 1; seed <= 20; seed++) {
        auto p = params();
        p.temperature = 1.0f;
        p.seed = seed;
        p.repetition_penalty = 1e-38f;
        std::vector<float> logits = {3.0f, 2.0f, -1.0f, 0.5f};
        Sampler s(4);
        EXPECT_EQ(s.sample(p, logits, {0, 2}, {}), 0) << "seed " << seed;
    }
}

TEST(Sampler, LogprobsMatchLogSoftmax) {
    auto logits = random_logits(300, 5);
    double mx = *std::max_element(logits.begin(), logits.end()), z = 0;
    for (float l : logits) z += std::exp(l - mx);
    for (int t : {0, 17, 299})
        EXPECT_NEAR(tm_logprob_of(logits.data(), 300, t), logits[t] - mx - std::log(z), 1e-4);
    int32_t ids[5];
    float lps[5];
    tm_logprobs_top(logits.data(), 300, 5, ids, lps);
    std::vector<int> order(300);
    for (int i = 0; i < 300; i++) order[i] = i;
    std::sort(order.begin(), order.end(), [&](int a, int b) { return logits[a] > logits[b]; });
    for (int i = 0; i < 5; i++) {
        EXPECT_EQ(ids[i], order[i]);
        EXPECT_NEAR(lps[i], logits[order[i]] - mx - std::log(z), 1e-4);
    }
}

} // namespace

namespace {

// Processors run before everything else, on every draw, and may forbid tokens.
TEST(SamplerProcessors, LogitBiasMovesGreedyAndSampledDraws) {
    const int V = 50;
    std::vector<unsigned char> scratch(tm_sampler_scratch_bytes(V));
    for (float temp : {0.0f, 1.0f}) {
        tm_sampling_params p;
        tm_sampling_params_default(&p);
        p.temperature = temp;
        p.seed = 9;
        tm_sampler s;
        tm_sampler_init(&s, &p);
        EXPECT_EQ(tm_sampler_is_argmax(&s), temp == 0.0f);
        int32_t ids[2] = {3, 40};
        float bias[2] = {-100.0f, 100.0f};
        tm_logit_processor lb;
        ASSERT_EQ(tm_logit_bias_create(ids, bias, 2, &lb), TM_OK);
        ASSERT_EQ(tm_sampler_add_processor(&s, &lb), TM_OK);
        EXPECT_EQ(tm_sampler_is_argmax(&s), 0) << "a processor needs the logits on the host";
        for (int draw = 0; draw < 20; draw++) {
            std::vector<float> logits(V, 0.0f);
            logits[3] = 10.0f; // the favourite, until the bias
            int32_t t = tm_sampler_sample(&s, logits.data(), V, nullptr, 0, nullptr, 0, scratch.data());
            EXPECT_EQ(t, 40) << "temperature " << temp;
        }
        tm_sampler_deinit(&s);
        EXPECT_EQ(s.n_procs, 0);
    }
}

TEST(SamplerProcessors, ForbiddingEveryTokenIsAnErrorNotAPick) {
    const int V = 8;
    std::vector<unsigned char> scratch(tm_sampler_scratch_bytes(V));
    struct Forbid {
        static int apply(void *ctx, float *l, int n, const int32_t *, int) {
            for (int i = 0; i < n; i++)
                if (i != *(int *)ctx) l[i] = -INFINITY;
            return TM_OK;
        }
    };
    for (float temp : {0.0f, 0.7f}) {
        for (int allowed : {-1, 5}) {
            tm_sampling_params p;
            tm_sampling_params_default(&p);
            p.temperature = temp;
            p.top_k = 3;
            p.repetition_penalty = 1.3f;
            tm_sampler s;
            tm_sampler_init(&s, &p);
            tm_logit_processor f = {Forbid::apply, nullptr, &allowed, nullptr};
            ASSERT_EQ(tm_sampler_add_processor(&s, &f), TM_OK);
            std::vector<float> logits = {5, 4, 3, 2, 1, 0, -1, -2};
            int32_t prompt[1] = {5};
            int32_t t = tm_sampler_sample(&s, logits.data(), V, prompt, 1, nullptr, 0, scratch.data());
            if (allowed < 0) EXPECT_EQ(t, TM_EINVAL);
            else EXPECT_EQ(t, allowed) << "only the allowed token may come out";
            tm_sampler_deinit(&s);
        }
    }
}

TEST(SamplerProcessors, HoldsAtMostTheLimitAndFailuresEndTheDraw) {
    tm_sampling_params p;
    tm_sampling_params_default(&p);
    tm_sampler s;
    tm_sampler_init(&s, &p);
    struct Fail {
        static int apply(void *, float *, int, const int32_t *, int) { return TM_EUNSUPPORTED; }
    };
    tm_logit_processor f = {Fail::apply, nullptr, nullptr, nullptr};
    for (int i = 0; i < TM_SAMPLER_MAX_PROCESSORS; i++) EXPECT_EQ(tm_sampler_add_processor(&s, &f), TM_OK);
    EXPECT_EQ(tm_sampler_add_processor(&s, &f), TM_ERANGE);
    std::vector<float> logits(4, 1.0f);
    std::vector<unsigned char> scratch(tm_sampler_scratch_bytes(4));
    EXPECT_EQ(tm_sampler_sample(&s, logits.data(), 4, nullptr, 0, nullptr, 0, scratch.data()), TM_EUNSUPPORTED);
    tm_sampler_deinit(&s);
}

}  // namespace

namespace {

// The slow reference of the filters: the whole candidate list sorted (value descending,
// ties by id), top_k, softmax, the shortest prefix reaching top_p, min_p of the best.
// Returns each survivor's probability (0 for the others).
std::vector<double> reference_filter(const std::vector<float> &logits, const tm_sampling_params &p) {
    const int n = (int)logits.size();
    std::vector<int> order(n);
    for (int i = 0; i < n; i++) order[i] = i;
    std::vector<float> v(n);
    for (int i = 0; i < n; i++) v[i] = logits[i] * (1.0f / p.temperature);
    std::sort(order.begin(), order.end(), [&](int a, int b) { return v[a] > v[b] || (v[a] == v[b] && a < b); });
    int keep = p.top_k > 0 && p.top_k < n ? p.top_k : n;
    std::vector<double> prob(keep);
    double z = 0;
    for (int i = 0; i < keep; i++) z += prob[i] = std::exp((double)v[order[i]] - v[order[0]]);
    for (auto &x : prob) x /= z;
    if (p.top_p > 0 && p.top_p < 1) {
        double cum = 0;
        for (int i = 0; i < keep; i++)
            if ((cum += prob[i]) >= p.top_p) {
                keep = i + 1;
                break;
            }
    }
    if (p.min_p > 0) {
        int k = 1;
        while (k < keep && prob[k] >= p.min_p * prob[0]) k++;
        keep = k;
    }
    std::vector<double> out(n, 0.0);
    double total = 0;
    for (int i = 0; i < keep; i++) total += prob[i];
    for (int i = 0; i < keep; i++) out[order[i]] = prob[i] / total;
    return out;
}

} // namespace

// The sampler hands out only the best few candidates (a heap, not a sort of the whole
// vocabulary): every filter and their combinations draw from exactly the reference's
// survivors, at the reference's probabilities. Logits rounded to quarter units make ties,
// some of them at the top_k boundary (the lower id wins there).
TEST(Sampler, FiltersMatchTheSortedReference) {
    struct Combo {
        int top_k;
        float top_p, min_p, temperature;
    };
    const Combo combos[] = {{0, 1, 0, 1},      {5, 1, 0, 1},     {50, 1, 0, 2},     {0, 0.5f, 0, 1},
                            {0, 0.9f, 0, 1.5f}, {0, 1, 0.05f, 1}, {20, 0.8f, 0, 1},  {0, 0.9f, 0.1f, 1},
                            {30, 0.95f, 0.02f, 1}, {7, 1, 0.3f, 0.8f}};
    int combo_no = 0;
    for (const Combo &c : combos) {
        std::vector<float> logits = random_logits(400, 100 + combo_no);
        for (auto &x : logits) x = std::round(x * 4) / 4;
        auto p = params();
        p.top_k = c.top_k, p.top_p = c.top_p, p.min_p = c.min_p, p.temperature = c.temperature;
        p.seed = 1000 + combo_no;
        std::vector<double> want = reference_filter(logits, p);
        Sampler s(400);
        const int draws = 20000;
        std::vector<int> got(400, 0);
        for (int i = 0; i < draws; i++) got[s.sample(p, logits)]++;
        for (int t = 0; t < 400; t++) {
            if (want[t] == 0) {
                EXPECT_EQ(got[t], 0) << "combo " << combo_no << ": token " << t << " is filtered out";
            } else {
                // 5 standard deviations of a binomial count, and one draw
                double sd = std::sqrt(draws * want[t] * (1 - want[t]));
                EXPECT_NEAR(got[t], draws * want[t], 5 * sd + 1) << "combo " << combo_no << ": token " << t;
            }
        }
        combo_no++;
    }
}
