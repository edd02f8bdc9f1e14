// JSON Schema front end: on the golden texts (scripts/golden_schema.py, labelled by
// Python's json + jsonschema) the grammar never accepts an invalid text, and accepts every
// valid instance written canonically (schema key order, the usual separators or indent=2);
// unsupported schemas are refused with the feature named; JSON mode accepts exactly the
// objects jansson parses, on mutated documents.
#include <gtest/gtest.h>
#include <jansson.h>

#include <cstdlib>
#include <cstring>
#include <random>
#include <string>

extern "C" {
#include "common/common.h"
#include "models/grammar.h"
#include "server/json_schema.h"
}

namespace {

std::string source_dir() {
    const char *env = std::getenv("TM_SOURCE_DIR");
    return env && *env ? env : TM_SOURCE_DIR;
}

tm_grammar *compile(const json_t *schema, int compact, std::string *gbnf = nullptr) {
    char *g = nullptr, err[512] = "";
    int rc = tm_json_schema_gbnf(schema, compact, &g, err, sizeof err);
    EXPECT_EQ(rc, 0) << err;
    if (rc) return nullptr;
    tm_grammar *gr = nullptr;
    rc = tm_grammar_parse(g, strlen(g), nullptr, &gr, err, sizeof err);
    EXPECT_EQ(rc, 0) << g << "\n" << err;
    if (gbnf) *gbnf = g;
    free(g);
    return gr;
}

TEST(JsonSchemaGbnf, SoundOnGoldenTextsAndCompleteOnCanonicalInstances) {
    std::string path = source_dir() + "/tests/server/data/schema_golden.json";
    json_error_t je;
    json_t *root = json_load_file(path.c_str(), JSON_ALLOW_NUL, &je);
    ASSERT_NE(root, nullptr) << path << ": " << je.text;
    int n_valid = 0, n_accepted = 0, n_canonical = 0;
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(root, "cases"), i, c) {
        const char *name = json_string_value(json_object_get(c, "name"));
        std::string gbnf;
        tm_grammar *g = compile(json_object_get(c, "schema"), 0, &gbnf);
        ASSERT_NE(g, nullptr) << name;
        size_t k;
        json_t *t;
        json_array_foreach(json_object_get(c, "texts"), k, t) {
            json_t *tx = json_object_get(t, "text");
            std::string s(json_string_value(tx), json_string_length(tx));
            bool valid = json_is_true(json_object_get(t, "valid"));
            bool canonical = json_is_true(json_object_get(t, "canonical"));
            bool ours = tm_grammar_accepts(g, s.data(), s.size());
            EXPECT_TRUE(!ours || valid) << name << ": accepted an invalid text: " << s << "\n" << gbnf;
            if (canonical) { EXPECT_TRUE(ours) << name << ": refused a canonical instance: " << s << "\n" << gbnf; }
            n_valid += valid;
            n_accepted += ours;
            n_canonical += canonical;
        }
        tm_grammar_destroy(g);
    }
    json_decref(root);
    EXPECT_GT(n_canonical, 100);
    EXPECT_GE(n_accepted, n_canonical);
    EXPECT_GT(n_valid, n_canonical);  // mutations found valid texts too
}

TEST(JsonSchemaGbnf, CompactModeHasNoOptionalWhitespace) {
    json_t *s = json_loads(R"({"type":"object","properties":{"a":{"type":"array","items":{"type":"integer"}}},"required":["a"]})", 0, nullptr);
    tm_grammar *g = compile(s, 1);
    ASSERT_NE(g, nullptr);
    EXPECT_TRUE(tm_grammar_accepts(g, "{\"a\":[1,2]}", 11));
    EXPECT_FALSE(tm_grammar_accepts(g, "{\"a\": [1,2]}", 12));
    EXPECT_FALSE(tm_grammar_accepts(g, "{ \"a\":[1,2]}", 12));
    tm_grammar_destroy(g);
    json_decref(s);
}

TEST(JsonSchemaGbnf, RefusesUnsupportedFeaturesByName) {
    struct Case {
        const char *schema;
        int rc;
        const char *what;
    } cases[] = {
        {R"({"not":{"type":"string"}})", TM_EUNSUPPORTED, "'not'"},
        {R"({"type":"object","patternProperties":{"^a":{}}})", TM_EUNSUPPORTED, "'patternProperties'"},
        {R"({"type":"array","uniqueItems":true})", TM_EUNSUPPORTED, "'uniqueItems'"},
        {R"({"type":"array","contains":{"type":"integer"}})", TM_EUNSUPPORTED, "'contains'"},
        {R"({"type":"object","minProperties":1})", TM_EUNSUPPORTED, "'minProperties'"},
        {R"({"if":{"type":"string"},"then":{"minLength":1}})", TM_EUNSUPPORTED, "'if'"},
        {R"({"type":"string","format":"credit-card"})", TM_EUNSUPPORTED, "format 'credit-card'"},
        {R"x({"type":"string","pattern":"a(?=b)"})x", TM_EUNSUPPORTED, "lookaround"},
        {R"({"oneOf":[{"type":"string"},{"type":"string","maxLength":2}]})", TM_EUNSUPPORTED, "'oneOf'"},
        {R"({"allOf":[{"type":"string"},{"maxLength":2}]})", TM_EUNSUPPORTED, "'allOf' with more than one"},
        {R"({"$ref":"https://example.com/s.json"})", TM_EUNSUPPORTED, "another document"},
        {R"({"type":"number","multipleOf":0.01})", TM_EUNSUPPORTED, "'multipleOf'"},
        {R"({"type":"string","minLength":1000})", TM_EUNSUPPORTED, "minLength above"},
        {R"({"type":"string","pattern":"[a-z]+","maxLength":3})", TM_EUNSUPPORTED, "'pattern' together with"},
        {R"({"anyOf":[{"type":"string"}],"type":"string"})", TM_EUNSUPPORTED, "'anyOf' together with 'type'"},
        {R"({"type":"integer","exclusiveMinimum":true})", TM_EUNSUPPORTED, "draft 4"},
        {R"({"$ref":"#/$defs/missing"})", TM_EINVAL, "points at nothing"},
        {R"({"type":"strin"})", TM_EINVAL, "unknown type 'strin'"},
        {R"({"type":"object","properties":{"a":false},"required":["a"]})", TM_EINVAL, "schema false"},
        {R"({"type":"integer","minimum":5,"maximum":4})", TM_EINVAL, "no integer"},
        {R"({"type":"array","minItems":3,"maxItems":2})", TM_EINVAL, "maxItems is below minItems"},
        {R"({"enum":[]})", TM_EINVAL, "non-empty list"},
        {R"(7)", TM_EINVAL, "object or a boolean"},
    };
    for (const Case &c : cases) {
        json_error_t je;
        json_t *s = json_loads(c.schema, JSON_DECODE_ANY, &je);
        ASSERT_NE(s, nullptr) << c.schema;
        char *g = nullptr, err[512] = "";
        int rc = tm_json_schema_gbnf(s, 0, &g, err, sizeof err);
        EXPECT_EQ(rc, c.rc) << c.schema << ": " << err;
        EXPECT_NE(strstr(err, c.what), nullptr) << c.schema << ": '" << err << "' lacks '" << c.what << "'";
        EXPECT_EQ(g, nullptr);
        free(g);
        json_decref(s);
    }
}

TEST(JsonSchemaGbnf, JsonObjectModeAgreesWithJanssonOnMutatedDocuments) {
    char *g = nullptr, err[256];
    ASSERT_EQ(tm_json_object_gbnf(0, &g, err, sizeof err), 0) << err;
    tm_grammar *gr = nullptr;
    ASSERT_EQ(tm_grammar_parse(g, strlen(g), nullptr, &gr, err, sizeof err), 0) << err;
    free(g);
    const char *docs[] = {"{\"a\": [1, 2.5, -3e4, true, false, null], \"b\": {\"c\": \"d\\n\\u00e9\"}}",
                          "{}", "{\"k\": \"v\", \"n\": {\"m\": [[], {}]}}", "{\n  \"x\": -0.5\n}"};
    std::mt19937 rng(7);
    const std::string alpha = " {}[]:,\"\\0123456789.-eE+trufalsn\n";
    int agree_valid = 0, checked = 0;
    for (int iter = 0; iter < 4000; iter++) {
        std::string s = docs[iter % 4];
        int edits = iter < 4 ? 0 : 1 + (int)(rng() % 2);
        for (int e = 0; e < edits; e++) {
            size_t pos = rng() % (s.size() + 1);
            int op = (int)(rng() % 3);
            if (op == 0) s.insert(pos, 1, alpha[rng() % alpha.size()]);
            else if (op == 1 && !s.empty()) s.erase(std::min(pos, s.size() - 1), 1);
            else if (!s.empty()) s[std::min(pos, s.size() - 1)] = alpha[rng() % alpha.size()];
        }
        json_error_t je;
        json_t *v = json_loadb(s.data(), s.size(), 0, &je);  // objects and arrays only by default
        bool ref = v && json_is_object(v);
        bool ours = tm_grammar_accepts(gr, s.data(), s.size());
        EXPECT_TRUE(!ours || ref) << "accepted invalid JSON: " << s;
        // Whitespace is bounded and placed, numbers have at most 15 digits per part: the
        // grammar may refuse other spellings of a valid document, never these.
        static const size_t styles[] = {JSON_COMPACT, 0, JSON_INDENT(2)};
        for (size_t f = 0; ref && f < 3; f++) {
            char *d = json_dumps(v, styles[f] | JSON_REAL_PRECISION(15));
            ASSERT_NE(d, nullptr);
            EXPECT_TRUE(tm_grammar_accepts(gr, d, strlen(d))) << "refused valid JSON: " << d;
            free(d);
        }
        json_decref(v);
        agree_valid += ref && ours;
        checked++;
    }
    EXPECT_GT(agree_valid, 200);
    tm_grammar_destroy(gr);
}

}  // namespace

namespace {

// Every schema of the corpus (scripts/make_schema_corpus.py) translates to a grammar that
// parses, or - for the ones written to use refused features - is refused naming it.
TEST(JsonSchemaGbnf, CorpusTranslatesOrIsRefusedByName) {
    std::string path = source_dir() + "/tests/server/data/schema_corpus.json";
    json_error_t je;
    json_t *root = json_load_file(path.c_str(), 0, &je);
    ASSERT_NE(root, nullptr) << path << ": " << je.text;
    int n_ok = 0, n_refused = 0;
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(root, "schemas"), i, c) {
        const char *name = json_string_value(json_object_get(c, "name"));
        std::string expect = json_string_value(json_object_get(c, "expect"));
        char *g = nullptr, err[512] = "";
        int rc = tm_json_schema_gbnf(json_object_get(c, "schema"), 0, &g, err, sizeof err);
        if (expect == "ok") {
            ASSERT_EQ(rc, 0) << name << ": " << err;
            tm_grammar *gr = nullptr;
            EXPECT_EQ(tm_grammar_parse(g, strlen(g), nullptr, &gr, err, sizeof err), 0) << name << ": " << err << "\n" << g;
            tm_grammar_destroy(gr);
            n_ok++;
        } else {
            std::string what = expect.substr(expect.find(':') + 1);
            EXPECT_EQ(rc, TM_EUNSUPPORTED) << name;
            EXPECT_NE(std::string(err).find(what), std::string::npos) << name << ": '" << err << "' lacks " << what;
            n_refused++;
        }
        free(g);
    }
    json_decref(root);
    EXPECT_GE(n_ok, 200);
    EXPECT_GE(n_refused, 10);
}

}  // namespace
