// Base-URL parsing and the error text of an answer, as the bench reports them.
#include <gtest/gtest.h>

#include <string>

extern "C" {
#include "bench/tmbench/client.h"
#include "common/common.h"
}

namespace {

TEST(BenchClient, BaseUrlWithPortAndPrefix) {
    tm_bench_target t;
    char err[256] = "";
    ASSERT_EQ(tm_bench_target_init(&t, "http://127.0.0.1:8123/api/", "k1", err, sizeof err), 0) << err;
    EXPECT_STREQ(t.host, "127.0.0.1");
    EXPECT_EQ(t.port, 8123);
    EXPECT_STREQ(t.prefix, "/api");
    EXPECT_STREQ(t.base_url, "http://127.0.0.1:8123/api");
    EXPECT_STREQ(t.auth_header, "Authorization: Bearer k1\r\n");
    ASSERT_EQ(tm_bench_target_init(&t, "http://127.0.0.1", nullptr, err, sizeof err), 0) << err;
    EXPECT_EQ(t.port, 80);
    EXPECT_STREQ(t.prefix, "");
    EXPECT_STREQ(t.auth_header, "");
    ASSERT_EQ(tm_bench_target_init(&t, "http://[::1]:9000", "", err, sizeof err), 0) << err;
    EXPECT_STREQ(t.host, "::1");
    EXPECT_EQ(t.port, 9000);
}

TEST(BenchClient, BadBaseUrlsSayWhy) {
    tm_bench_target t;
    char err[256];
    EXPECT_EQ(tm_bench_target_init(&t, "https://127.0.0.1:8000", nullptr, err, sizeof err), TM_EINVAL);
    EXPECT_NE(std::string(err).find("http://"), std::string::npos) << err;
    EXPECT_EQ(tm_bench_target_init(&t, "http://127.0.0.1:99999", nullptr, err, sizeof err), TM_EINVAL);
    EXPECT_NE(std::string(err).find("port"), std::string::npos) << err;
    EXPECT_EQ(tm_bench_target_init(&t, "http://", nullptr, err, sizeof err), TM_EINVAL);
    EXPECT_EQ(tm_bench_target_init(&t, "http://127.0.0.1:8000", "bad\r\nkey", err, sizeof err), TM_EINVAL);
}

TEST(BenchClient, ErrorTextPrefersTheOpenAiMessage) {
    char out[64];
    const std::string j = "{\"error\": {\"message\": \"Invalid\\nAPI key\", \"type\": \"x\"}}";
    tm_bench_error_text(j.data(), j.size(), out, sizeof out);
    EXPECT_STREQ(out, "Invalid API key");
    const std::string plain = "Bad Gateway";
    tm_bench_error_text(plain.data(), plain.size(), out, sizeof out);
    EXPECT_STREQ(out, "Bad Gateway");
    tm_bench_error_text(nullptr, 0, out, sizeof out);
    EXPECT_STREQ(out, "");
}

}  // namespace
