// Structured-output request fields -> grammar text (every form OpenAI and vLLM define,
// and the errors that name the field and feature), and the compile cache.
#include <gtest/gtest.h>
#include <jansson.h>

#include <cstring>
#include <string>
#include <vector>

extern "C" {
#include "common/common.h"
#include "models/grammar.h"
#include "server/grammar_cache.h"
#include "server/structured.h"
}

namespace {

struct Parsed {
    tm_so_spec spec{};
    int rc = 0;
    const char *param = "";
    char err[512] = "";
    tm_grammar *g = nullptr;
    explicit Parsed(const char *body) {
        json_error_t je;
        json_t *root = json_loads(body, 0, &je);
        EXPECT_NE(root, nullptr) << body << ": " << je.text;
        rc = tm_structured_parse(root, &spec, &param, err, sizeof err);
        json_decref(root);
        if (rc == 0 && spec.gbnf) {
            char e2[512];
            EXPECT_EQ(tm_grammar_parse(spec.gbnf, strlen(spec.gbnf), nullptr, &g, e2, sizeof e2), 0) << spec.gbnf << e2;
        }
    }
    ~Parsed() {
        tm_grammar_destroy(g);
        tm_so_spec_free(&spec);
    }
    bool accepts(const std::string &s) const { return g && tm_grammar_accepts(g, s.data(), s.size()); }
};

TEST(Structured, EveryRequestFormBecomesItsGrammar) {
    {
        Parsed p(R"({"response_format":{"type":"json_schema","json_schema":{"name":"x","strict":true,
                    "schema":{"type":"object","properties":{"a":{"type":"integer"}},"required":["a"],
                    "additionalProperties":false}}}})");
        ASSERT_EQ(p.rc, 0) << p.err;
        EXPECT_EQ(p.spec.kind, TM_SO_JSON_SCHEMA);
        EXPECT_STREQ(p.spec.param, "response_format");
        EXPECT_TRUE(p.accepts("{\"a\": 3}"));
        EXPECT_FALSE(p.accepts("{\"a\": \"3\"}"));
    }
    {
        Parsed p(R"({"response_format":{"type":"json_object"}})");
        ASSERT_EQ(p.rc, 0) << p.err;
        EXPECT_EQ(p.spec.kind, TM_SO_JSON_OBJECT);
        EXPECT_TRUE(p.accepts("{\"any\": [1, {\"b\": null}]}"));
        EXPECT_FALSE(p.accepts("[1]"));
    }
    {
        Parsed p(R"({"response_format":{"type":"text"}})");
        ASSERT_EQ(p.rc, 0) << p.err;
        EXPECT_EQ(p.spec.kind, TM_SO_NONE);
        EXPECT_EQ(p.spec.gbnf, nullptr);
    }
    {
        Parsed p(R"({"structured_outputs":{"json":"{\"type\":\"array\",\"items\":{\"type\":\"boolean\"}}",
                    "disable_any_whitespace":true}})");
        ASSERT_EQ(p.rc, 0) << p.err;
        EXPECT_EQ(p.spec.kind, TM_SO_JSON_SCHEMA);
        EXPECT_TRUE(p.accepts("[true,false]"));
        EXPECT_FALSE(p.accepts("[true, false]"));
    }
    {
        Parsed p(R"({"structured_outputs":{"regex":"\\w+@\\w+\\.com\\n"}})");
        ASSERT_EQ(p.rc, 0) << p.err;
        EXPECT_EQ(p.spec.kind, TM_SO_REGEX);
        EXPECT_TRUE(p.accepts("alan@enigma.com\n"));
        EXPECT_FALSE(p.accepts("alan@enigma.org\n"));
    }
    {
        Parsed p(R"({"structured_outputs":{"choice":["positive","negative \"x\""]}})");
        ASSERT_EQ(p.rc, 0) << p.err;
        EXPECT_EQ(p.spec.kind, TM_SO_CHOICE);
        EXPECT_TRUE(p.accepts("positive"));
        EXPECT_TRUE(p.accepts("negative \"x\""));
        EXPECT_FALSE(p.accepts("neutral"));
    }
    {
        Parsed p(R"({"structured_outputs":{"grammar":"root ::= \"SELECT \" col\ncol ::= \"a\" | \"b\""}})");
        ASSERT_EQ(p.rc, 0) << p.err;
        EXPECT_EQ(p.spec.kind, TM_SO_GRAMMAR);
        EXPECT_TRUE(p.accepts("SELECT b"));
    }
    {
        Parsed p(R"({"structured_outputs":{"json_object":true}})");
        ASSERT_EQ(p.rc, 0) << p.err;
        EXPECT_EQ(p.spec.kind, TM_SO_JSON_OBJECT);
    }
    {  // vLLM before 0.12
        Parsed a(R"({"guided_choice":["yes","no"]})");
        EXPECT_TRUE(a.accepts("no"));
        Parsed b(R"({"guided_regex":"[0-9]{3}"})");
        EXPECT_TRUE(b.accepts("123"));
        Parsed c(R"({"guided_json":{"type":"string","enum":["x"]}})");
        EXPECT_TRUE(c.accepts("\"x\""));
        Parsed d(R"({"guided_grammar":"root ::= \"ok\""})");
        EXPECT_TRUE(d.accepts("ok"));
        EXPECT_STREQ(d.spec.param, "guided_grammar");
    }
    {
        Parsed p(R"({"messages":[]})");
        EXPECT_EQ(p.rc, 0);
        EXPECT_EQ(p.spec.kind, TM_SO_NONE);
    }
}

TEST(Structured, ErrorsNameTheFieldAndTheFeature) {
    struct Case {
        const char *body;
        int rc;
        const char *param;
        const char *what;
    } cases[] = {
        {R"({"response_format":{"type":"json_object"},"guided_regex":"a"})", TM_EINVAL, "guided_regex", "one structured output constraint"},
        {R"({"structured_outputs":{"regex":"a","choice":["a"]}})", TM_EINVAL, "structured_outputs", "takes one constraint"},
        {R"({"structured_outputs":{"structural_tag":"{}"}})", TM_EUNSUPPORTED, "structured_outputs", "structural_tag"},
        {R"({"structured_outputs":{"json":{},"whitespace_pattern":" *"}})", TM_EUNSUPPORTED, "structured_outputs", "whitespace_pattern"},
        {R"({"guided_whitespace_pattern":" *","guided_json":{}})", TM_EUNSUPPORTED, "guided_whitespace_pattern", "not supported"},
        {R"({"response_format":{"type":"structural_tag"}})", TM_EUNSUPPORTED, "response_format", "type 'structural_tag'"},
        {R"({"response_format":{"type":"json_schema","json_schema":{"name":"x"}}})", TM_EINVAL, "response_format", "schema' is required"},
        {R"({"response_format":{"type":"json_schema","json_schema":{"schema":{"type":"object","properties":{"a":{"not":{}}}}}}})",
         TM_EUNSUPPORTED, "response_format.json_schema.schema", "the keyword 'not' is not supported"},
        {R"({"response_format":"json"})", TM_EINVAL, "response_format", "must be an object"},
        {R"({"structured_outputs":{"choice":[]}})", TM_EINVAL, "structured_outputs.choice", "non-empty list"},
        {R"({"structured_outputs":{"regex":"(?<=a)b"}})", TM_EUNSUPPORTED, "structured_outputs.regex", "lookaround"},
        {R"({"structured_outputs":{"json":"{not json"}})", TM_EINVAL, "structured_outputs.json", "not valid JSON"},
        {R"({"guided_grammar":""})", TM_EINVAL, "guided_grammar", "non-empty string"},
    };
    for (const Case &c : cases) {
        Parsed p(c.body);
        EXPECT_EQ(p.rc, c.rc) << c.body << ": " << p.err;
        EXPECT_STREQ(p.param, c.param) << c.body;
        EXPECT_NE(strstr(p.err, c.what), nullptr) << c.body << ": '" << p.err << "' lacks '" << c.what << "'";
    }
}

TEST(Structured, ToolCallGrammarForcedOrAnyFunction) {
    json_t *tools = json_loads(R"([
        {"type":"function","function":{"name":"get_weather","parameters":{"type":"object",
         "properties":{"city":{"type":"string"},"unit":{"enum":["c","f"]}},"required":["city"],
         "additionalProperties":false}}},
        {"type":"function","function":{"name":"add_item","strict":true,"parameters":{
         "$defs":{"Item":{"type":"object","properties":{"sku":{"type":"string"},"qty":{"type":"integer"}},
         "required":["sku","qty"],"additionalProperties":false}},
         "type":"object","properties":{"item":{"$ref":"#/$defs/Item"}},"required":["item"],
         "additionalProperties":false}}}])", 0, nullptr);
    ASSERT_NE(tools, nullptr);
    char *g = nullptr, err[512] = "";
    tm_tool_markup hermes, llama3, mistral;
    ASSERT_EQ(tm_tool_format_markup(TM_TOOLS_HERMES, &hermes), 0);
    ASSERT_EQ(tm_tool_format_markup(TM_TOOLS_LLAMA3_JSON, &llama3), 0);
    ASSERT_EQ(tm_tool_format_markup(TM_TOOLS_MISTRAL, &mistral), 0);
    EXPECT_EQ(tm_tool_format_markup(TM_TOOLS_NONE, &mistral), TM_EINVAL);
    ASSERT_EQ(tm_structured_tool_gbnf(tools, nullptr, &hermes, TM_TOOL_GRAMMAR_FORCED, &g, err, sizeof err), 0) << err;
    tm_grammar *gr = nullptr;
    ASSERT_EQ(tm_grammar_parse(g, strlen(g), nullptr, &gr, err, sizeof err), 0) << g << err;
    auto acc = [&](const std::string &s) { return (bool)tm_grammar_accepts(gr, s.data(), s.size()); };
    const std::string w = "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}";
    const std::string add = "{\"name\": \"add_item\", \"arguments\": {\"item\": {\"sku\": \"a\", \"qty\": 2}}}";
    EXPECT_TRUE(acc("<tool_call>\n" + w + "\n</tool_call>"));
    EXPECT_TRUE(acc("<tool_call>\n" + add + "\n</tool_call>"));
    // Hermes writes several calls as several blocks
    EXPECT_TRUE(acc("<tool_call>\n" + w + "\n</tool_call>\n<tool_call>\n" + add + "\n</tool_call>"));
    EXPECT_FALSE(acc("<tool_call>\n{\"name\": \"add_item\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"));
    EXPECT_FALSE(acc(w));
    EXPECT_FALSE(acc("Sure. <tool_call>\n" + w + "\n</tool_call>"));  // forced: no text
    EXPECT_FALSE(acc(""));
    tm_grammar_destroy(gr);
    free(g);
    // A forced function: only it (Llama 3.1 names the arguments "parameters").
    ASSERT_EQ(tm_structured_tool_gbnf(tools, "get_weather", &llama3, TM_TOOL_GRAMMAR_FORCED, &g, err, sizeof err), 0) << err;
    ASSERT_EQ(tm_grammar_parse(g, strlen(g), nullptr, &gr, err, sizeof err), 0) << g << err;
    EXPECT_TRUE(acc("{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\", \"unit\": \"c\"}}"));
    EXPECT_TRUE(acc("{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}; "
                    "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Rome\"}}"));
    EXPECT_FALSE(acc("{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}"));
    EXPECT_FALSE(acc("{\"name\": \"add_item\", \"parameters\": {\"item\": {\"sku\": \"a\", \"qty\": 2}}}"));
    tm_grammar_destroy(gr);
    free(g);
    // Mistral: one list of calls.
    ASSERT_EQ(tm_structured_tool_gbnf(tools, nullptr, &mistral, TM_TOOL_GRAMMAR_FORCED, &g, err, sizeof err), 0) << err;
    ASSERT_EQ(tm_grammar_parse(g, strlen(g), nullptr, &gr, err, sizeof err), 0) << g << err;
    EXPECT_TRUE(acc("[TOOL_CALLS][" + w + ", " + add + "]"));
    EXPECT_FALSE(acc("[TOOL_CALLS]" + w));
    tm_grammar_destroy(gr);
    free(g);
    // Optional (auto with a strict function): text that never spells the trigger, then
    // calls or nothing; only the strict function is held to its parameters.
    ASSERT_EQ(tm_structured_tool_gbnf(tools, nullptr, &hermes, TM_TOOL_GRAMMAR_OPTIONAL, &g, err, sizeof err), 0) << err;
    ASSERT_EQ(tm_grammar_parse(g, strlen(g), nullptr, &gr, err, sizeof err), 0) << g << err;
    EXPECT_TRUE(acc(""));
    EXPECT_TRUE(acc("It is sunny <b>today</b>, 1 < 2, <tool_call"));
    EXPECT_TRUE(acc("Let me check.\n<tool_call>\n" + add + "\n</tool_call>"));
    EXPECT_TRUE(acc("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"anything\": [1]}}\n</tool_call>"));
    EXPECT_FALSE(acc("<tool_call>\n{\"name\": \"add_item\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"));
    EXPECT_FALSE(acc("text <tool_call> more text"));
    EXPECT_FALSE(acc("<tool_call>\n" + w + "\n</tool_call> and then talk"));
    // The free text against a reference: random texts built from pieces of the trigger are
    // accepted exactly when they do not contain it (a call never parses out of them).
    const char *pieces[] = {"<", "<tool", "<tool_call", "<tool_call>", "tool_call>", "_call>", "t", ">", "x", "\n"};
    uint64_t rng = 42;
    for (int it = 0; it < 3000; it++) {
        std::string s;
        for (int n = (int)(rng % 7); n >= 0; n--) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            s += pieces[(rng >> 33) % (sizeof pieces / sizeof *pieces)];
        }
        EXPECT_EQ(acc(s), s.find("<tool_call>") == std::string::npos) << s;
    }
    tm_grammar_destroy(gr);
    free(g);
    EXPECT_EQ(tm_structured_tool_gbnf(tools, nullptr, &llama3, TM_TOOL_GRAMMAR_OPTIONAL, &g, err, sizeof err), TM_EINVAL);
    EXPECT_EQ(tm_structured_tools_strict(tools), 1);
    EXPECT_EQ(tm_structured_tool_gbnf(tools, "nope", &hermes, TM_TOOL_GRAMMAR_FORCED, &g, err, sizeof err), TM_EINVAL);
    EXPECT_NE(strstr(err, "no function named 'nope'"), nullptr) << err;
    // The arguments alone, for a named tool_choice.
    ASSERT_EQ(tm_structured_tool_args_gbnf(tools, "add_item", &g, err, sizeof err), 0) << err;
    ASSERT_EQ(tm_grammar_parse(g, strlen(g), nullptr, &gr, err, sizeof err), 0) << g << err;
    EXPECT_TRUE(acc("{\"item\": {\"sku\": \"a\", \"qty\": 2}}"));
    EXPECT_FALSE(acc("{\"item\": {\"sku\": \"a\"}}"));
    tm_grammar_destroy(gr);
    free(g);
    EXPECT_EQ(tm_structured_tool_args_gbnf(tools, "nope", &g, err, sizeof err), TM_EINVAL);
    json_t *bad = json_loads(R"([{"type":"function","function":{"name":"f","parameters":{"type":"object",
        "properties":{"a":{"type":"array","uniqueItems":true}}}}},
        {"type":"function","function":{"name":"ok","parameters":{"type":"object"}}}])", 0, nullptr);
    EXPECT_EQ(tm_structured_tool_gbnf(bad, nullptr, &hermes, TM_TOOL_GRAMMAR_FORCED, &g, err, sizeof err), TM_EUNSUPPORTED);
    EXPECT_NE(strstr(err, "uniqueItems"), nullptr) << err;
    EXPECT_NE(strstr(err, "tool 'f'"), nullptr) << err;
    EXPECT_EQ(tm_structured_tool_args_gbnf(bad, "f", &g, err, sizeof err), TM_EUNSUPPORTED);
    EXPECT_NE(strstr(err, "uniqueItems"), nullptr) << err;
    // not forced and not strict: its schema is not compiled, so it cannot fail
    ASSERT_EQ(tm_structured_tool_gbnf(bad, nullptr, &hermes, TM_TOOL_GRAMMAR_OPTIONAL, &g, err, sizeof err), 0) << err;
    free(g);
    ASSERT_EQ(tm_structured_tool_gbnf(bad, "ok", &hermes, TM_TOOL_GRAMMAR_FORCED, &g, err, sizeof err), 0) << err;
    free(g);
    json_decref(bad);
    json_decref(tools);
}

TEST(GrammarCache, SameTextHitsOtherTextMissesBudgetEvicts) {
    std::vector<std::string> pieces = {"a", "b", "ab", "</s>"};
    std::vector<const char *> p;
    std::vector<size_t> lens;
    std::vector<uint8_t> text = {1, 1, 1, 0};
    for (auto &s : pieces) p.push_back(s.c_str()), lens.push_back(s.size());
    int32_t eog = 3;
    tm_grammar_vocab *v = nullptr;
    char err[256];
    ASSERT_EQ(tm_grammar_vocab_create_pieces(4, p.data(), lens.data(), text.data(), &eog, 1, 0, &v, err, sizeof err), 0);
    tm_grammar_cache *c = nullptr;
    ASSERT_EQ(tm_grammar_cache_create(v, 1 << 20, &c), 0);
    tm_grammar_vocab_destroy(v);  // the cache holds its own reference
    std::string g1 = "root ::= \"a\"+", g2 = "root ::= \"b\" \"a\"?";
    tm_grammar_compiled *x = nullptr, *y = nullptr, *z = nullptr;
    int hit = -1;
    ASSERT_EQ(tm_grammar_cache_get(c, g1.data(), g1.size(), &x, &hit, err, sizeof err), 0) << err;
    EXPECT_EQ(hit, 0);
    ASSERT_EQ(tm_grammar_cache_get(c, g1.data(), g1.size(), &y, &hit, err, sizeof err), 0);
    EXPECT_EQ(hit, 1);
    EXPECT_EQ(x, y);
    ASSERT_EQ(tm_grammar_cache_get(c, g2.data(), g2.size(), &z, &hit, err, sizeof err), 0);
    EXPECT_EQ(hit, 0);
    EXPECT_NE(z, x);
    std::string bad = "root ::= x";
    tm_grammar_compiled *w = nullptr;
    EXPECT_EQ(tm_grammar_cache_get(c, bad.data(), bad.size(), &w, &hit, err, sizeof err), TM_EINVAL);
    EXPECT_NE(strstr(err, "never defined"), nullptr) << err;
    tm_grammar_cache_stats st;
    tm_grammar_cache_get_stats(c, &st);
    EXPECT_EQ(st.hits, 1u);
    EXPECT_EQ(st.misses, 3u);
    EXPECT_EQ(st.n_entries, 2);
    tm_grammar_cache_destroy(c);
    // References outlive the cache: the grammar still works.
    tm_grammar_matcher *m = nullptr;
    ASSERT_EQ(tm_grammar_matcher_create(z, &m), 0);
    EXPECT_EQ(tm_grammar_matcher_accept_token(m, 1), 0);
    EXPECT_TRUE(tm_grammar_matcher_can_end(m));
    tm_grammar_matcher_destroy(m);
    tm_grammar_compiled_release(x);
    tm_grammar_compiled_release(y);
    tm_grammar_compiled_release(z);
    // A budget that holds one grammar: the older one goes.
    ASSERT_EQ(tm_grammar_vocab_create_pieces(4, p.data(), lens.data(), text.data(), &eog, 1, 0, &v, err, sizeof err), 0);
    ASSERT_EQ(tm_grammar_cache_create(v, 1, &c), 0);
    tm_grammar_vocab_destroy(v);
    ASSERT_EQ(tm_grammar_cache_get(c, g1.data(), g1.size(), &x, &hit, err, sizeof err), 0);
    ASSERT_EQ(tm_grammar_cache_get(c, g2.data(), g2.size(), &y, &hit, err, sizeof err), 0);
    ASSERT_EQ(tm_grammar_cache_get(c, g1.data(), g1.size(), &z, &hit, err, sizeof err), 0);
    EXPECT_EQ(hit, 0);  // evicted, compiled again
    tm_grammar_cache_get_stats(c, &st);
    EXPECT_EQ(st.n_entries, 1);
    tm_grammar_compiled_release(x);
    tm_grammar_compiled_release(y);
    tm_grammar_compiled_release(z);
    tm_grammar_cache_destroy(c);
}

}  // namespace
