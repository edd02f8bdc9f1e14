// Prometheus rendering (server/metrics.h): names, labels, cumulative buckets.
#include <gtest/gtest.h>

#include <string>

extern "C" {
#include "server/metrics.h"
}

TEST(Metrics, RendersGaugesCountersAndCumulativeHistograms) {
    tm_metrics m;
    tm_metrics_init(&m);
    tm_histogram_observe(&m.ttft, 0.003);  // le 0.005
    tm_histogram_observe(&m.ttft, 0.003);
    tm_histogram_observe(&m.ttft, 1000);   // +Inf only
    m.success[1] = 5;
    tm_engine_stats st = {};
    st.n_running = 2, st.n_waiting = 3, st.n_blocks_total = 100, st.n_blocks_used = 25;
    st.prefix_queries = 64, st.prefix_hits = 32, st.prompt_tokens = 10, st.generation_tokens = 11;
    size_t len = 0;
    char *text = tm_metrics_render(&m, &st, "my\"model", &len);
    ASSERT_NE(text, nullptr);
    std::string s(text, len);
    free(text);
    const std::string L = "model_name=\"my\\\"model\"";
    auto has = [&](const std::string &line) {
        EXPECT_NE(s.find(line + "\n"), std::string::npos) << "missing: " << line << "\n" << s;
    };
    has("tokenmill:num_requests_running{" + L + "} 2");
    has("tokenmill:num_requests_waiting{" + L + "} 3");
    has("tokenmill:kv_cache_usage_perc{" + L + "} 0.25");
    has("tokenmill:prefix_cache_queries_total{" + L + "} 64");
    has("tokenmill:prefix_cache_hits_total{" + L + "} 32");
    has("tokenmill:prompt_tokens_total{" + L + "} 10");
    has("tokenmill:generation_tokens_total{" + L + "} 11");
    has("tokenmill:request_success_total{" + L + ",finished_reason=\"stop\"} 5");
    has("tokenmill:time_to_first_token_seconds_bucket{" + L + ",le=\"0.001\"} 0");
    has("tokenmill:time_to_first_token_seconds_bucket{" + L + ",le=\"0.005\"} 2");
    has("tokenmill:time_to_first_token_seconds_bucket{" + L + ",le=\"80\"} 2");
    has("tokenmill:time_to_first_token_seconds_bucket{" + L + ",le=\"+Inf\"} 3");
    has("tokenmill:time_to_first_token_seconds_count{" + L + "} 3");
    has("# TYPE tokenmill:inter_token_latency_seconds histogram");
    has("# TYPE tokenmill:e2e_request_latency_seconds histogram");
}
