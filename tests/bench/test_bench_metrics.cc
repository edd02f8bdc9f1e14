// The metric definitions of `tokenmill bench` (vllm bench serve's) on synthetic timelines
// whose answers are worked out by hand in the comments.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

extern "C" {
#include "bench/tmbench/loadgen.h"
#include "bench/tmbench/metrics.h"
}

namespace {

// A completed request sent at `start` whose output chunks arrive at the absolute times
// `chunks`, ending at `end`, with `tokens` output tokens by usage.
tm_bench_record make(double start, std::vector<double> chunks, double end, int tokens, int prompt = 10,
                     int cached = -1) {
    tm_bench_record r;
    memset(&r, 0, sizeof r);
    r.ok = 1;
    r.start_s = start;
    r.ttft_s = chunks[0] - start;
    for (size_t i = 1; i < chunks.size(); i++) EXPECT_EQ(tm_bench_record_add_itl(&r, chunks[i] - chunks[i - 1]), 0);
    r.n_chunks = (int)chunks.size();
    r.latency_s = end - start;
    r.output_tokens = tokens;
    r.prompt_tokens = prompt;
    r.cached_tokens = cached;
    return r;
}

tm_bench_record failed() {
    tm_bench_record r;
    memset(&r, 0, sizeof r);
    r.error = strdup("HTTP 500: boom");
    r.cached_tokens = -1;
    return r;
}

struct Recs {
    std::vector<tm_bench_record> v;
    ~Recs() {
        for (auto &r : v) tm_bench_record_clear(&r);
    }
};

const double kPcts[] = {50, 90, 99};
const tm_bench_slo kNoSlo = {-1, -1, -1};

TEST(BenchMetrics, PercentileInterpolatesLikeNumpy) {
    const double x[] = {1, 2, 3, 4};
    // rank = p/100 * (n - 1): p50 -> 1.5 -> 2.5; p90 -> 2.7 -> 3.7; p99 -> 2.97 -> 3.97
    EXPECT_DOUBLE_EQ(tm_bench_percentile(x, 4, 50), 2.5);
    EXPECT_NEAR(tm_bench_percentile(x, 4, 90), 3.7, 1e-12);
    EXPECT_NEAR(tm_bench_percentile(x, 4, 99), 3.97, 1e-12);
    EXPECT_DOUBLE_EQ(tm_bench_percentile(x, 4, 0), 1);
    EXPECT_DOUBLE_EQ(tm_bench_percentile(x, 4, 100), 4);
    const double one[] = {7};
    EXPECT_DOUBLE_EQ(tm_bench_percentile(one, 1, 99), 7);
    EXPECT_DOUBLE_EQ(tm_bench_percentile(nullptr, 0, 99), 0);
}

TEST(BenchMetrics, TtftTpotItlE2elOfOneRequest) {
    Recs r;
    // sent at 1.0; chunks at 1.2, 1.3, 1.5; ends at 1.5; 3 tokens
    r.v.push_back(make(1.0, {1.2, 1.3, 1.5}, 1.5, 3));
    tm_bench_summary s;
    ASSERT_EQ(tm_bench_summarize(r.v.data(), 1, 2.0, kPcts, 3, &kNoSlo, &s), 0);
    EXPECT_EQ(s.completed, 1);
    EXPECT_NEAR(s.ttft.mean, 200.0, 1e-9);                  // 1.2 - 1.0
    EXPECT_NEAR(s.tpot.mean, (500.0 - 200.0) / 2, 1e-9);   // (E2EL - TTFT) / (3 - 1) = 150
    EXPECT_EQ(s.itl.n, 2);                                  // 0.1 and 0.2
    EXPECT_NEAR(s.itl.mean, 150.0, 1e-9);
    EXPECT_NEAR(s.itl.median, 150.0, 1e-9);
    EXPECT_NEAR(s.itl.std, 50.0, 1e-9);                     // population std of {100, 200}
    EXPECT_NEAR(s.e2el.mean, 500.0, 1e-9);
    EXPECT_NEAR(s.output_throughput, 1.5, 1e-12);           // 3 tokens / 2 s
    EXPECT_NEAR(s.total_token_throughput, 6.5, 1e-12);      // (10 + 3) / 2
    EXPECT_NEAR(s.request_throughput, 0.5, 1e-12);
}

TEST(BenchMetrics, SeveralTokensInOneEventGiveOneItlButCountInTpot) {
    Recs r;
    // 2 events carrying 8 tokens: events at 0.1 and 0.5 (the second holds 7 tokens)
    r.v.push_back(make(0.0, {0.1, 0.5}, 0.5, 8));
    tm_bench_summary s;
    ASSERT_EQ(tm_bench_summarize(r.v.data(), 1, 1.0, kPcts, 3, &kNoSlo, &s), 0);
    EXPECT_EQ(s.itl.n, 1);                                  // one gap per chunk, not per token
    EXPECT_NEAR(s.itl.mean, 400.0, 1e-9);
    EXPECT_NEAR(s.tpot.mean, 400.0 / 7, 1e-9);              // (0.5 - 0.1) / (8 - 1)
    EXPECT_EQ(s.total_output, 8);                           // usage, not the chunk count
}

TEST(BenchMetrics, P99WithFewSamplesAndFailuresLeftOut) {
    Recs r;
    r.v.push_back(make(0, {0.010}, 0.010, 1));
    r.v.push_back(make(0, {0.020}, 0.020, 1));
    r.v.push_back(failed());
    r.v.push_back(make(0, {0.100}, 0.100, 1));
    tm_bench_summary s;
    ASSERT_EQ(tm_bench_summarize(r.v.data(), 4, 1.0, kPcts, 3, &kNoSlo, &s), 0);
    EXPECT_EQ(s.completed, 3);
    EXPECT_EQ(s.failed, 1);
    // TTFTs 10, 20, 100 ms: p99 rank 1.98 -> 20 + 0.98 * 80 = 98.4; p90 rank 1.8 -> 84
    EXPECT_NEAR(s.ttft.pct[2], 98.4, 1e-9);
    EXPECT_NEAR(s.ttft.pct[1], 84.0, 1e-9);
    EXPECT_NEAR(s.ttft.median, 20.0, 1e-9);
    EXPECT_EQ(s.tpot.n, 0);                                 // one-token requests have no TPOT
    EXPECT_EQ(s.tpot.mean, 0);
    EXPECT_EQ(s.itl.n, 0);
}

TEST(BenchMetrics, GoodputCountsRequestsMeetingEverySlo) {
    Recs r;
    r.v.push_back(make(0, {0.05, 0.07, 0.09}, 0.09, 3));   // TTFT 50, TPOT 20: good
    r.v.push_back(make(0, {0.30, 0.32, 0.34}, 0.34, 3));   // TTFT 300: too slow
    r.v.push_back(make(0, {0.05, 0.15, 0.25}, 0.25, 3));   // TPOT 100: too slow
    r.v.push_back(make(0, {0.08}, 0.08, 1));               // 1 token: TPOT 0, TTFT 80: good
    r.v.push_back(failed());                                // never good
    tm_bench_summary s;
    tm_bench_slo slo = {100, 50, -1};
    ASSERT_EQ(tm_bench_summarize(r.v.data(), 5, 2.0, kPcts, 3, &slo, &s), 0);
    EXPECT_TRUE(s.has_slo);
    EXPECT_EQ(s.n_good, 2);
    EXPECT_NEAR(s.request_goodput, 1.0, 1e-12);             // 2 good / 2 s
    tm_bench_slo e2el_only = {-1, -1, 100};                 // E2EL <= 100 ms: the 1st and 4th
    ASSERT_EQ(tm_bench_summarize(r.v.data(), 5, 2.0, kPcts, 3, &e2el_only, &s), 0);
    EXPECT_EQ(s.n_good, 2);
    ASSERT_EQ(tm_bench_summarize(r.v.data(), 5, 2.0, kPcts, 3, &kNoSlo, &s), 0);
    EXPECT_FALSE(s.has_slo);
    EXPECT_EQ(s.request_goodput, 0);
}

TEST(BenchMetrics, PeakConcurrencyTreatsIntervalsAsHalfOpen) {
    Recs r;
    r.v.push_back(make(0.0, {0.1}, 1.0, 1));  // [0, 1)
    r.v.push_back(make(1.0, {1.1}, 2.0, 1));  // [1, 2): starts as the first ends
    r.v.push_back(make(0.5, {0.6}, 1.5, 1));  // [0.5, 1.5)
    tm_bench_summary s;
    ASSERT_EQ(tm_bench_summarize(r.v.data(), 3, 2.0, kPcts, 3, &kNoSlo, &s), 0);
    EXPECT_EQ(s.max_concurrent_requests, 2);
}

TEST(BenchMetrics, PeakOutputChunksPerSecondBucketsFromTheFirstStart) {
    Recs r;
    r.v.push_back(make(0.0, {0.2, 0.4, 0.9, 1.2}, 1.2, 4));  // bucket 0: 3 chunks, bucket 1: 1
    r.v.push_back(make(0.5, {0.7, 1.1, 1.3}, 1.3, 3));       // bucket 0: 1, bucket 1: 2
    tm_bench_summary s;
    ASSERT_EQ(tm_bench_summarize(r.v.data(), 2, 2.0, kPcts, 3, &kNoSlo, &s), 0);
    EXPECT_EQ(s.max_output_tokens_per_s, 4.0);
}

TEST(BenchMetrics, PrefixCacheHitRateFromTheRequestsThatReportIt) {
    Recs r;
    r.v.push_back(make(0, {0.1}, 0.1, 1, 100, 0));
    r.v.push_back(make(0, {0.1}, 0.1, 1, 100, 80));
    r.v.push_back(make(0, {0.1}, 0.1, 1, 100, -1));  // no usage details: left out
    tm_bench_summary s;
    ASSERT_EQ(tm_bench_summarize(r.v.data(), 3, 1.0, kPcts, 3, &kNoSlo, &s), 0);
    EXPECT_NEAR(s.prefix_cache_hit_rate, 0.4, 1e-12);  // 80 of 200
    EXPECT_EQ(s.total_cached, 80);
    Recs none;
    none.v.push_back(make(0, {0.1}, 0.1, 1, 100, -1));
    ASSERT_EQ(tm_bench_summarize(none.v.data(), 1, 1.0, kPcts, 3, &kNoSlo, &s), 0);
    EXPECT_LT(s.prefix_cache_hit_rate, 0);
}

TEST(BenchMetrics, BadArgumentsAreRefused) {
    tm_bench_summary s;
    const double bad_pct[] = {101};
    EXPECT_NE(tm_bench_summarize(nullptr, 0, 1.0, bad_pct, 1, &kNoSlo, &s), 0);
    EXPECT_NE(tm_bench_summarize(nullptr, 0, 0.0, kPcts, 3, &kNoSlo, &s), 0);
    EXPECT_EQ(tm_bench_summarize(nullptr, 0, 1.0, kPcts, 3, &kNoSlo, &s), 0);  // empty run: zeros
    EXPECT_EQ(s.ttft.mean, 0);
}

TEST(BenchArrivals, SeededPoissonIsReproducibleAndKeepsTheRate) {
    const int n = 2000;
    std::vector<double> a(n), b(n), c(n);
    tm_bench_arrivals(n, 10.0, 1.0, 42, a.data());
    tm_bench_arrivals(n, 10.0, 1.0, 42, b.data());
    tm_bench_arrivals(n, 10.0, 1.0, 43, c.data());
    EXPECT_EQ(a, b);
    EXPECT_NE(a, c);
    EXPECT_NEAR(a[n - 1], n / 10.0, 1e-9);  // scaled: the last arrival at n / rate
    double mean = 0, var = 0;
    for (int i = 0; i < n; i++) {
        double gap = a[i] - (i ? a[i - 1] : 0);
        ASSERT_GE(gap, 0);
        mean += gap;
    }
    mean /= n;
    for (int i = 0; i < n; i++) {
        double gap = a[i] - (i ? a[i - 1] : 0);
        var += (gap - mean) * (gap - mean);
    }
    var /= n;
    // exponential gaps: coefficient of variation 1 (gamma shape k: 1/sqrt(k))
    EXPECT_NEAR(std::sqrt(var) / mean, 1.0, 0.1);
    tm_bench_arrivals(n, 10.0, 4.0, 42, c.data());
    double m4 = c[n - 1] / n, v4 = 0;
    for (int i = 0; i < n; i++) {
        double gap = c[i] - (i ? c[i - 1] : 0);
        v4 += (gap - m4) * (gap - m4);
    }
    EXPECT_NEAR(std::sqrt(v4 / n) / m4, 0.5, 0.07);
}

TEST(BenchArrivals, InfiniteRateSendsEverythingAtOnce) {
    std::vector<double> a(5, -1);
    tm_bench_arrivals(5, INFINITY, 1.0, 1, a.data());
    for (double t : a) EXPECT_EQ(t, 0);
    tm_bench_arrivals(5, 0, 1.0, 1, a.data());
    for (double t : a) EXPECT_EQ(t, 0);
}

}  // namespace
