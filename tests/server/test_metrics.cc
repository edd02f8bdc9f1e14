// Prometheus rendering (server/metrics.h): names, labels, cumulative buckets.
#include <gtest/gtest.h>

#include <cstring>
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

namespace {

// vLLM's per-request histograms: phases from the last event's engine times, token counts
// in 1-2-5 buckets up to the context length.
TEST(Metrics, PerRequestPhasesAndTokenCounts) {
    tm_metrics m;
    tm_metrics_init(&m);
    tm_metrics_set_max_model_len(&m, 8192);
    EXPECT_EQ(m.prompt_tokens.n_bounds, 12); // 1 2 5 10 ... 5000
    EXPECT_EQ(m.token_bounds[11], 5000.0);
    tm_event ev;
    memset(&ev, 0, sizeof ev);
    ev.prompt_tokens = 30;
    ev.completion_tokens = 7;
    ev.t_arrival = 100.0, ev.t_scheduled = 100.25, ev.t_first_token = 100.75, ev.t_last_token = 102.0;
    tm_metrics_observe_request(&m, &ev);
    // a request aborted while it waited: only its (zero) token counts are observed
    tm_event waited;
    memset(&waited, 0, sizeof waited);
    waited.t_arrival = 5.0;
    tm_metrics_observe_request(&m, &waited);
    EXPECT_EQ(m.queue.count, 1u);
    EXPECT_DOUBLE_EQ(m.queue.sum, 0.25);
    EXPECT_DOUBLE_EQ(m.prefill.sum, 0.5);
    EXPECT_DOUBLE_EQ(m.decode.sum, 1.25);
    EXPECT_DOUBLE_EQ(m.inference.sum, 1.75);
    EXPECT_EQ(m.prompt_tokens.count, 2u);
    EXPECT_DOUBLE_EQ(m.prompt_tokens.sum, 30.0);
    tm_engine_stats st;
    memset(&st, 0, sizeof st);
    size_t len = 0;
    char *text = tm_metrics_render(&m, &st, "m", &len);
    ASSERT_NE(text, nullptr);
    std::string s(text, len);
    free(text);
    for (const char *name : {"request_queue_time_seconds", "request_prefill_time_seconds",
                             "request_decode_time_seconds", "request_inference_time_seconds",
                             "request_prompt_tokens", "request_generation_tokens"})
        EXPECT_NE(s.find(std::string("# TYPE tokenmill:") + name + " histogram"), std::string::npos) << name;
    EXPECT_NE(s.find("tokenmill:request_prompt_tokens_bucket{model_name=\"m\",le=\"50\"} 2"), std::string::npos) << s;
    EXPECT_NE(s.find("tokenmill:request_prompt_tokens_bucket{model_name=\"m\",le=\"20\"} 1"), std::string::npos);
}

}  // namespace
