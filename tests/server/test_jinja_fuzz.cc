// test_jinja_fuzz.cc - bounded, deterministic fuzzing of the Jinja interpreter.
//
// The real chat templates and the golden snippets are mutated (bytes flipped, Jinja
// tokens inserted, ranges deleted, duplicated or spliced from another template) and
// random token soups are generated; each is parsed and rendered against a conversation
// with tools. Every one must end in text within the limits or in a clean error (see
// jinja_fuzz_util.h); crashes and memory errors are for the ASan+UBSan build to catch.
// The longer, coverage-guided run is tests/fuzz/fuzz_jinja.cc (libFuzzer).
#include <gtest/gtest.h>

#include <chrono>
#include <dirent.h>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "tests/server/jinja_fuzz_util.h"
#include "tests/test_env.h"

namespace {

std::string source_dir() {
    const char *src = std::getenv("TM_SOURCE_DIR");
    return src ? src : TM_SOURCE_DIR;
}

std::vector<std::string> corpus() {
    std::vector<std::string> out;
    std::string dir = source_dir() + "/tests/golden/chat_templates";
    DIR *d = opendir(dir.c_str());
    EXPECT_NE(d, nullptr) << dir;
    if (!d) return out;
    while (struct dirent *e = readdir(d)) {
        std::string name = e->d_name;
        if (name.size() < 6 || name.substr(name.size() - 6) != ".jinja") continue;
        std::ifstream f(dir + "/" + name, std::ios::binary);
        std::stringstream ss;
        ss << f.rdbuf();
        out.push_back(ss.str());
    }
    closedir(d);
    std::sort(out.begin(), out.end()); // readdir order is not fixed
    json_error_t je;
    json_t *g = json_load_file((source_dir() + "/tests/golden/chat_templates.json").c_str(), 0, &je);
    EXPECT_NE(g, nullptr) << je.text;
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(g, "snippets"), i, c)
        out.push_back(json_string_value(json_object_get(c, "source")));
    json_decref(g);
    return out;
}

const char *const kTokens[] = {
    "{%", "%}", "{{", "}}", "{#", "#}", "{%-", "-%}", "{{-", "-}}", "{%+", "+%}", "(", ")", "[",
    "]", "{", "}", "'", "\"", "\\", "|", " is ", " not ", " in ", " and ", " or ", "for ", "endfor",
    "if ", "elif ", "else", "endif", "set ", "endset", "macro ", "endmacro", "loop.", "loop.cycle(",
    "namespace(", "range(", "raise_exception(", "strftime_now(", "|tojson", "|items", "|trim",
    "|map(attribute='x')", "|selectattr(", "|join(", "|length", "|default(", "|indent(", "|sort",
    ".", ",", ":", "*", "**", "//", "%", "~", "=", "==", "\n", " ", "  ", "\t", "\xc3", "\xe9",
    "" /* a NUL byte */, "999999999999999999999", "1e999", "-9223372036854775808",
    "recursive", "break", "continue", "raw", "endraw", "filter ", "endfilter", "with ", "endwith",
    "messages", "message", "tools", "[0]", "[-1]", "[::-1]", "[1:]", ".content", ".role",
    "true", "none", "x", "ns.x", "'\\u00e9'", "'\\x'", "'\\N{x}'", "\"\\", "\xff\xfe",
    "\xe2\x80\xa8", "\xc2\xa0",
};

std::string mutate(std::mt19937 &rng, const std::vector<std::string> &seeds) {
    auto pick = [&](size_t n) { return n ? std::uniform_int_distribution<size_t>(0, n - 1)(rng) : 0; };
    std::string s = seeds[pick(seeds.size())];
    int n = 1 + (int)pick(4);
    for (int k = 0; k < n; k++) {
        size_t at = pick(s.size() + 1);
        switch (pick(6)) {
        case 0: // flip a byte
            if (!s.empty()) s[pick(s.size())] ^= (char)(1 + pick(255));
            break;
        case 1: // insert a token
        case 2: {
            size_t t = pick(sizeof kTokens / sizeof *kTokens);
            std::string tok = kTokens[t][0] ? kTokens[t] : std::string("\0", 1);
            s.insert(at, tok);
            break;
        }
        case 3: // delete a range
            s.erase(at, pick(32));
            break;
        case 4: // duplicate a range
            if (at < s.size()) s.insert(at, s.substr(at, pick(64)));
            break;
        default: { // splice in part of another template
            const std::string &o = seeds[pick(seeds.size())];
            size_t from = pick(o.size() + 1);
            s.insert(at, o.substr(from, pick(200)));
        }
        }
    }
    return s;
}

std::string soup(std::mt19937 &rng) {
    std::string s;
    int n = std::uniform_int_distribution<int>(1, 60)(rng);
    for (int i = 0; i < n; i++) {
        size_t t = std::uniform_int_distribution<size_t>(0, sizeof kTokens / sizeof *kTokens - 1)(rng);
        s += kTokens[t][0] ? kTokens[t] : std::string("\0", 1);
    }
    return s;
}

TEST(JinjaFuzz, MutantsAndSoupsEndCleanly) {
    std::vector<std::string> seeds = corpus();
    ASSERT_GE(seeds.size(), 20u);
    json_t *vars = jinja_fuzz_vars();
    ASSERT_NE(vars, nullptr);
    std::mt19937 rng(20240726);
    // ~1.5 s in a Release build; the sanitized build runs a fifth of them
    const int n = tm_test_sanitized() ? 6000 : 30000;
    int rendered = 0;
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < n; i++) {
        std::string src = i % 4 == 3 ? soup(rng) : mutate(rng, seeds);
        std::string problem = jinja_fuzz_one(src.data(), src.size(), vars);
        ASSERT_EQ(problem, "") << "case " << i << ": " << src;
        // count the mutants that still render, so the test knows it reached the evaluator
        tm_jinja *t = nullptr;
        char err[64];
        if (tm_jinja_parse(src.data(), src.size(), nullptr, &t, err, sizeof err) == 0) rendered++;
        tm_jinja_destroy(t);
    }
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    printf("jinja fuzz: %d cases, %d parsed, %.2f s\n", n, rendered, s);
    EXPECT_GT(rendered, n / 10) << "most mutants never reached the evaluator";
    json_decref(vars);
}

}  // namespace
