// test_tool_parser.cc - tool-call parsing (server/tool_parser.h) on fixed model outputs.
//
// Each output is fed whole, and again split at every byte (as a stream delivers it): the
// content and the calls must be the same both ways, the content must never hold call
// markup, and arguments come out as Python's json.dumps writes them (what vLLM sends).
#include <gtest/gtest.h>

#include <string>
#include <vector>

extern "C" {
#include "common/common.h"
#include "server/tool_parser.h"
}

namespace {

struct Call {
    std::string name, arguments, id;
    int index;
};

struct Parsed {
    std::string content;
    std::vector<Call> calls;
    std::vector<int> fragments;  // deltas per call
};

// Feeds text in pieces of `step` bytes (0: all at once), then the final empty feed.
Parsed run(tm_tool_format f, const std::string &text, size_t step) {
    tm_tool_parser *p = nullptr;
    EXPECT_EQ(tm_tool_parser_create(f, 42, &p), 0);
    Parsed r;
    auto take = [&](tm_tool_delta *d, int n) {
        for (int i = 0; i < n; i++) {
            if (d[i].is_call && d[i].name) {
                r.calls.push_back({d[i].name, d[i].arguments, d[i].id, d[i].index});
                r.fragments.push_back(1);
            } else if (d[i].is_call) {  // more of the last call's arguments
                EXPECT_FALSE(r.calls.empty());
                if (r.calls.empty()) continue;
                EXPECT_EQ(d[i].index, r.calls.back().index);
                EXPECT_EQ(std::string(d[i].id), r.calls.back().id);
                r.calls.back().arguments += d[i].arguments;
                r.fragments.back()++;
            } else {
                r.content.append(d[i].text, d[i].text_len);
            }
            tm_tool_delta_free(&d[i]);
        }
        free(d);
    };
    size_t at = 0;
    while (at < text.size()) {
        size_t k = step ? std::min(step, text.size() - at) : text.size();
        tm_tool_delta *d = nullptr;
        int n = 0;
        EXPECT_EQ(tm_tool_parser_feed(p, text.data() + at, k, 0, &d, &n), 0);
        take(d, n);
        at += k;
    }
    tm_tool_delta *d = nullptr;
    int n = 0;
    EXPECT_EQ(tm_tool_parser_feed(p, "", 0, 1, &d, &n), 0);
    take(d, n);
    EXPECT_EQ(tm_tool_parser_n_calls(p), (int)r.calls.size());
    tm_tool_parser_destroy(p);
    return r;
}

void expect(tm_tool_format f, const std::string &text, const std::string &content,
            const std::vector<std::pair<std::string, std::string>> &calls) {
    for (size_t step : {(size_t)0, (size_t)1, (size_t)3, (size_t)7}) {
        Parsed r = run(f, text, step);
        std::string what = std::string(tm_tool_format_name(f)) + " step " + std::to_string(step) + ": " + text;
        EXPECT_EQ(r.content, content) << what;
        ASSERT_EQ(r.calls.size(), calls.size()) << what;
        for (size_t i = 0; i < calls.size(); i++) {
            EXPECT_EQ(r.calls[i].name, calls[i].first) << what;
            EXPECT_EQ(r.calls[i].arguments, calls[i].second) << what;
            EXPECT_EQ(r.calls[i].index, (int)i);
            EXPECT_FALSE(r.calls[i].id.empty());
        }
    }
}

TEST(ToolParser, Hermes) {
    const tm_tool_format H = TM_TOOLS_HERMES;
    expect(H, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"n\": 2.50}}\n</tool_call>",
           "", {{"get_weather", "{\"city\": \"Paris\", \"n\": 2.5}"}});
    expect(H, "Let me check.\n<tool_call>\n{\"name\":\"a\",\"arguments\":{}}\n</tool_call>\n<tool_call>\n"
              "{\"name\":\"b\",\"arguments\":{\"x\":[1,true,null,\"\\u00e9\"]}}\n</tool_call>",
           "Let me check.\n", {{"a", "{}"}, {"b", "{\"x\": [1, true, null, \"\xc3\xa9\"]}"}});
    // no call: everything is content, including a '<' that looked like the start of one
    expect(H, "2 < 3 and <tool is not a call", "2 < 3 and <tool is not a call", {});
    // a call that does not parse is content (vLLM does the same)
    expect(H, "x<tool_call>\n{\"name\": broken}\n</tool_call>", "x<tool_call>\n{\"name\": broken}\n</tool_call>", {});
    // an unclosed call at the end still counts once its JSON is complete
    expect(H, "<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": 1}}", "", {{"f", "{\"a\": 1}"}});
}

TEST(ToolParser, StreamedArgumentsComeInFragmentsThatAddUpToTheWholeCall) {
    // Spacing, escapes and number spellings are re-serialized token by token as
    // json.dumps writes the whole value, so the fragments join to the same text.
    const std::string call = "{\"name\" : \"f\",\n \"arguments\":{ \"s\": \"a\\/b\\u00e9\\\"\" , \"n\":1E2,"
                             "\"m\":-0.50, \"l\": [ ], \"o\": {\"k\" :false, \"z\": null}}}";
    const std::string args = "{\"s\": \"a/b\xc3\xa9\\\"\", \"n\": 100.0, \"m\": -0.5, \"l\": [], "
                             "\"o\": {\"k\": false, \"z\": null}}";
    expect(TM_TOOLS_HERMES, "<tool_call>\n" + call + "\n</tool_call>", "", {{"f", args}});
    expect(TM_TOOLS_LLAMA3_JSON, call, "", {{"f", args}});
    EXPECT_EQ(run(TM_TOOLS_HERMES, "<tool_call>\n" + call + "\n</tool_call>", 0).fragments, std::vector<int>{1});
    Parsed r = run(TM_TOOLS_HERMES, "<tool_call>\n" + call + "\n</tool_call><tool_call>" + call + "</tool_call>", 1);
    ASSERT_EQ(r.calls.size(), 2u);
    EXPECT_GT(r.fragments[0], 10) << "a byte at a time, the arguments stream token by token";
    EXPECT_GT(r.fragments[1], 10);
    // a stream cut inside the arguments keeps what was sent (the head went out)
    r = run(TM_TOOLS_HERMES, "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": [1, 2", 1);
    ASSERT_EQ(r.calls.size(), 1u);
    EXPECT_EQ(r.calls[0].arguments, "{\"a\": [1, ");
    // keys in another order: the call comes whole when it is complete
    r = run(TM_TOOLS_HERMES, "<tool_call>{\"arguments\": {\"a\": 1}, \"name\": \"g\"}</tool_call>", 1);
    ASSERT_EQ(r.calls.size(), 1u);
    EXPECT_EQ(r.calls[0].arguments, "{\"a\": 1}");
    EXPECT_EQ(r.fragments[0], 1);
}

TEST(ToolParser, Llama3Json) {
    const tm_tool_format L = TM_TOOLS_LLAMA3_JSON;
    expect(L, "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}", "",
           {{"get_weather", "{\"city\": \"Paris\"}"}});
    expect(L, "<|python_tag|>{\"name\": \"a\", \"parameters\": {}}; {\"name\": \"b\", \"parameters\": {\"k\": 1}}",
           "", {{"a", "{}"}, {"b", "{\"k\": 1}"}});
    expect(L, "  \n{\"name\": \"f\", \"arguments\": {\"q\": \"x\"}}", "  \n", {{"f", "{\"q\": \"x\"}"}});
    expect(L, "The answer is {not json", "The answer is {not json", {});
    expect(L, "{\"not\": \"a call\"}", "{\"not\": \"a call\"}", {});
    expect(L, "plain text", "plain text", {});
}

TEST(ToolParser, Mistral) {
    const tm_tool_format M = TM_TOOLS_MISTRAL;
    expect(M, "[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}, "
              "{\"name\": \"search\", \"arguments\": {\"q\": \"x\"}}]",
           "", {{"get_weather", "{\"city\": \"Paris\"}"}, {"search", "{\"q\": \"x\"}"}});
    expect(M, "Sure. [TOOL_CALLS]get_weather[ARGS]{\"city\": \"Paris\"}", "Sure. ",
           {{"get_weather", "{\"city\": \"Paris\"}"}});
    expect(M, "no [TOOL call here", "no [TOOL call here", {});
    Parsed r = run(M, "[TOOL_CALLS][{\"name\": \"f\", \"arguments\": {}}]", 0);
    ASSERT_EQ(r.calls.size(), 1u);
    EXPECT_EQ(r.calls[0].id.size(), 9u) << "Mistral's templates check for 9-character ids";
}

TEST(ToolParser, FormatsByNameAndFromTemplates) {
    tm_tool_format f;
    EXPECT_EQ(tm_tool_format_from_name("hermes", &f), 0);
    EXPECT_EQ(f, TM_TOOLS_HERMES);
    EXPECT_EQ(tm_tool_format_from_name("llama3_json", &f), 0);
    EXPECT_EQ(f, TM_TOOLS_LLAMA3_JSON);
    EXPECT_EQ(tm_tool_format_from_name("mistral", &f), 0);
    EXPECT_EQ(tm_tool_format_from_name("pythonic", &f), TM_ENOTFOUND);
    std::string q = "... <tool_call>\\n{\"name\": <function-name> ...";
    EXPECT_EQ(tm_tool_format_detect(q.data(), q.size()), TM_TOOLS_HERMES);
    std::string l = "{{- \"Environment: ipython\\n\" }}";
    EXPECT_EQ(tm_tool_format_detect(l.data(), l.size()), TM_TOOLS_LLAMA3_JSON);
    std::string m = "{{- \"[TOOL_CALLS][\" }}";
    EXPECT_EQ(tm_tool_format_detect(m.data(), m.size()), TM_TOOLS_MISTRAL);
    std::string s = "{{ '<|im_start|>' + message['role'] }}";
    EXPECT_EQ(tm_tool_format_detect(s.data(), s.size()), TM_TOOLS_NONE);
}

TEST(ToolParser, IdsDifferPerCallAndPerSeed) {
    tm_tool_parser *a = nullptr, *b = nullptr;
    ASSERT_EQ(tm_tool_parser_create(TM_TOOLS_HERMES, 1, &a), 0);
    ASSERT_EQ(tm_tool_parser_create(TM_TOOLS_HERMES, 2, &b), 0);
    std::string t = "<tool_call>{\"name\":\"f\"}</tool_call><tool_call>{\"name\":\"g\"}</tool_call>";
    tm_tool_delta *da = nullptr, *db = nullptr;
    int na = 0, nb = 0;
    ASSERT_EQ(tm_tool_parser_feed(a, t.data(), t.size(), 1, &da, &na), 0);
    ASSERT_EQ(tm_tool_parser_feed(b, t.data(), t.size(), 1, &db, &nb), 0);
    ASSERT_EQ(na, 2);
    ASSERT_EQ(nb, 2);
    EXPECT_STRNE(da[0].id, da[1].id);
    EXPECT_STRNE(da[0].id, db[0].id);
    EXPECT_EQ(std::string(da[0].id).rfind("chatcmpl-tool-", 0), 0u);
    EXPECT_STREQ(da[0].arguments, "{}"); // a call without arguments has empty ones
    for (int i = 0; i < 2; i++) tm_tool_delta_free(&da[i]), tm_tool_delta_free(&db[i]);
    free(da);
    free(db);
    tm_tool_parser_destroy(a);
    tm_tool_parser_destroy(b);
}

}  // namespace
