// The cost report's arithmetic on hand-computed figures, and the price file reader.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>

extern "C" {
#include "bench/tmbench/cost.h"
#include "common/common.h"
}

namespace {

std::string write_tmp(const char *name, const std::string &text) {
    std::string path = testing::TempDir() + name;
    FILE *f = fopen(path.c_str(), "w");
    EXPECT_NE(f, nullptr);
    fputs(text.c_str(), f);
    fclose(f);
    return path;
}

TEST(BenchCost, HostCostPerMillionTokensAndBreakEven) {
    tm_bench_cost c;
    // $3.50/h; 3600 input and 1800 output tokens/s
    tm_bench_cost_compute(3.50, 3600, 1800, &c);
    EXPECT_NEAR(c.usd_per_mtok_output, 3.50 / (1800.0 * 3600) * 1e6, 1e-12);  // 0.540123...
    EXPECT_NEAR(c.usd_per_mtok_output, 0.5401234567901234, 1e-12);
    EXPECT_NEAR(c.usd_per_mtok_input, 0.2700617283950617, 1e-12);
    EXPECT_DOUBLE_EQ(c.input_per_output, 2.0);
    EXPECT_NEAR(c.monthly_usd, 2555.0, 1e-9);                      // 730 h
    EXPECT_NEAR(c.monthly_capacity_output, 1800.0 * 3600 * 730, 1e-3);  // 4.7304e9
    tm_bench_price p = {"t", "m", 1.0, 4.0};
    // an API bills 4 + 2 * 1 = 6 USD per 1M output tokens at this mix
    EXPECT_DOUBLE_EQ(tm_bench_cost_api_mix_usd(&c, &p), 6.0);
    // 2555 USD a month buys 2555 / 6 * 1e6 = 425.83M output tokens of the API
    EXPECT_NEAR(tm_bench_cost_breakeven_output(&c, &p), 2555.0 / 6.0 * 1e6, 1e-3);
    tm_bench_price no_out = {"t", "m", 1.0, -1};
    EXPECT_LT(tm_bench_cost_api_mix_usd(&c, &no_out), 0);
    EXPECT_LT(tm_bench_cost_breakeven_output(&c, &no_out), 0);
}

TEST(BenchCost, NothingGeneratedHasNoPerTokenCost) {
    tm_bench_cost c;
    tm_bench_cost_compute(2.0, 0, 0, &c);
    EXPECT_LT(c.usd_per_mtok_output, 0);
    EXPECT_LT(c.usd_per_mtok_input, 0);
    tm_bench_price p = {"t", "m", 1.0, 4.0};
    EXPECT_LT(tm_bench_cost_breakeven_output(&c, &p), 0);
}

TEST(BenchCost, PriceFileWithRangesBlanksAndComments) {
    std::string path = write_tmp("prices.tsv",
                                 "# a comment\n# as of: 2026-06\n"
                                 "tier\tmodel\tinput_usd_per_mtok\toutput_usd_per_mtok\n"
                                 "budget\tA\t0.75\t\n"
                                 "\n"
                                 "mid\t(range)\t1.00-1.50\t4.50-5.00\r\n"
                                 "top\tB\t3\t15\n");
    tm_bench_prices p;
    char err[256];
    ASSERT_EQ(tm_bench_prices_load(path.c_str(), &p, err, sizeof err), 0) << err;
    EXPECT_STREQ(p.as_of, "2026-06");
    ASSERT_EQ(p.n, 4);
    EXPECT_STREQ(p.rows[0].model, "A");
    EXPECT_DOUBLE_EQ(p.rows[0].in_usd, 0.75);
    EXPECT_LT(p.rows[0].out_usd, 0);
    EXPECT_STREQ(p.rows[1].model, "(range) (low)");
    EXPECT_DOUBLE_EQ(p.rows[1].in_usd, 1.0);
    EXPECT_DOUBLE_EQ(p.rows[1].out_usd, 4.5);
    EXPECT_STREQ(p.rows[2].model, "(range) (high)");
    EXPECT_DOUBLE_EQ(p.rows[2].out_usd, 5.0);
    EXPECT_STREQ(p.rows[3].tier, "top");
    EXPECT_DOUBLE_EQ(p.rows[3].out_usd, 15.0);
    tm_bench_prices_free(&p);
}

TEST(BenchCost, BadPriceFilesNameTheLine) {
    tm_bench_prices p;
    char err[256];
    EXPECT_EQ(tm_bench_prices_load("/nonexistent/prices.tsv", &p, err, sizeof err), TM_EIO);
    EXPECT_NE(std::string(err).find("/nonexistent/prices.tsv"), std::string::npos);
    std::string bad = write_tmp("bad.tsv", "tier\tmodel\tin\tout\nx\ty\tcheap\t1\n");
    EXPECT_EQ(tm_bench_prices_load(bad.c_str(), &p, err, sizeof err), TM_EFORMAT);
    EXPECT_NE(std::string(err).find(":2:"), std::string::npos) << err;
    std::string cols = write_tmp("cols.tsv", "tier\tmodel\tin\tout\nx\ty\t1\n");
    EXPECT_EQ(tm_bench_prices_load(cols.c_str(), &p, err, sizeof err), TM_EFORMAT);
    std::string backwards = write_tmp("back.tsv", "tier\tmodel\tin\tout\nx\ty\t2-1\t1\n");
    EXPECT_EQ(tm_bench_prices_load(backwards.c_str(), &p, err, sizeof err), TM_EFORMAT);
}

}  // namespace
