// Regex front end: every golden string (scripts/golden_regex.py, labelled by Python's
// re.fullmatch) is accepted by the grammar only if Python matches it, and - for ASCII
// strings, where the grammar's \d \w \s are Python's - exactly when Python matches it;
// the same for the JSON-escaped text in JSON-string mode; refused features named.
#include <gtest/gtest.h>
#include <jansson.h>

#include <cstdlib>
#include <cstring>
#include <string>

extern "C" {
#include "common/common.h"
#include "models/grammar.h"
#include "server/gbnf_text.h"
#include "server/regex_gbnf.h"
}

namespace {

std::string source_dir() {
    const char *env = std::getenv("TM_SOURCE_DIR");
    return env && *env ? env : TM_SOURCE_DIR;
}

// GBNF "root ::= <expr>" for re; "" with the failure recorded when it does not translate.
std::string grammar_of(const std::string &re, bool json, int *rc_out = nullptr, std::string *err_out = nullptr) {
    tm_gtext t = {};
    tm_gtext_puts(&t, "root ::= ");
    char err[256] = "";
    int rc = tm_regex_to_gbnf(re.data(), re.size(), json, &t, err, sizeof err);
    if (rc_out) *rc_out = rc;
    if (err_out) *err_out = err;
    char *s = tm_gtext_take(&t);
    std::string g = rc == 0 && s ? s : "";
    free(s);
    return g;
}

std::string json_escape(const std::string &s) {  // as Python's json.dumps(ensure_ascii=False)
    std::string o;
    for (unsigned char c : s) {
        switch (c) {
        case '"': o += "\\\""; break;
        case '\\': o += "\\\\"; break;
        case '\b': o += "\\b"; break;
        case '\f': o += "\\f"; break;
        case '\n': o += "\\n"; break;
        case '\r': o += "\\r"; break;
        case '\t': o += "\\t"; break;
        default:
            if (c < 0x20) {
                char b[8];
                snprintf(b, sizeof b, "\\u%04x", c);
                o += b;
            } else {
                o += (char)c;
            }
        }
    }
    return o;
}

bool ascii(const std::string &s) {
    for (unsigned char c : s)
        if (c >= 0x80) return false;
    return true;
}

TEST(RegexGbnf, AgreesWithPythonOnTheGoldenStrings) {
    std::string path = source_dir() + "/tests/server/data/regex_golden.json";
    json_error_t je;
    json_t *root = json_load_file(path.c_str(), JSON_ALLOW_NUL, &je);
    ASSERT_NE(root, nullptr) << path << ": " << je.text;
    int n_match = 0, n_ours = 0, n_strings = 0;
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(root, "cases"), i, c) {
        std::string re = json_string_value(json_object_get(c, "re"));
        for (int json = 0; json < 2; json++) {
            std::string g = grammar_of(re, json);
            ASSERT_FALSE(g.empty()) << re;
            tm_grammar *gr = nullptr;
            char err[512];
            ASSERT_EQ(tm_grammar_parse(g.data(), g.size(), nullptr, &gr, err, sizeof err), 0) << re << "\n" << g << "\n" << err;
            size_t k;
            json_t *e;
            json_array_foreach(json_object_get(c, "strings"), k, e) {
                json_t *str = json_array_get(e, 0);
                std::string s(json_string_value(str), json_string_length(str));
                bool py = json_is_true(json_array_get(e, 1));
                std::string text = json ? json_escape(s) : s;
                bool ours = tm_grammar_accepts(gr, text.data(), text.size());
                EXPECT_TRUE(!ours || py) << "accepted what Python rejects: /" << re << "/ '" << s << "' json=" << json << "\n" << g;
                if (ascii(s)) { EXPECT_EQ(ours, py) << "/" << re << "/ '" << s << "' json=" << json << "\n" << g; }
                n_match += py;
                n_ours += ours;
                n_strings++;
            }
            tm_grammar_destroy(gr);
        }
    }
    json_decref(root);
    EXPECT_GT(n_strings, 4000);
    EXPECT_GT(n_ours, n_match * 9 / 10);  // ASCII exactness covers most of them
}

TEST(RegexGbnf, RefusesWhatItCannotGenerateAndNamesIt) {
    struct Case {
        const char *re;
        int rc;
        const char *what;
    } cases[] = {
        {"a(?=b)", TM_EUNSUPPORTED, "lookaround"},
        {"a(?!b)", TM_EUNSUPPORTED, "lookaround"},
        {"(?<=a)b", TM_EUNSUPPORTED, "lookaround"},
        {"(a)\\1", TM_EUNSUPPORTED, "backreference"},
        {"(?P<x>a)(?P=x)", TM_EUNSUPPORTED, "backreference"},
        {"\\bword\\b", TM_EUNSUPPORTED, "word boundary"},
        {"(?i)abc", TM_EUNSUPPORTED, "inline flags"},
        {"a^b", TM_EUNSUPPORTED, "anchor inside"},
        {"a$b", TM_EUNSUPPORTED, "anchor inside"},
        {"(^a)", TM_EUNSUPPORTED, "anchor inside"},
        {"a++", TM_EUNSUPPORTED, "possessive"},
        {"(?(1)a|b)", TM_EUNSUPPORTED, "conditional"},
        {"\\N{DIGIT ONE}", TM_EUNSUPPORTED, "named characters"},
        {"a{1001}", TM_EUNSUPPORTED, "repetition count above 1000"},
        {"(a", TM_EINVAL, "missing )"},
        {"a)", TM_EINVAL, "unbalanced )"},
        {"[a-", TM_EINVAL, "unterminated character class"},
        {"[z-a]", TM_EINVAL, "out of order"},
        {"*a", TM_EINVAL, "nothing to repeat"},
        {"a**", TM_EINVAL, "multiple repeat"},
        {"\\q", TM_EINVAL, "unknown escape"},
        {"a\\", TM_EINVAL, "trailing backslash"},
        {"a{3,2}", TM_EINVAL, "n < m"},
    };
    for (const Case &c : cases) {
        int rc = 0;
        std::string err;
        grammar_of(c.re, false, &rc, &err);
        EXPECT_EQ(rc, c.rc) << c.re << ": " << err;
        EXPECT_NE(err.find(c.what), std::string::npos) << c.re << ": '" << err << "' lacks '" << c.what << "'";
    }
}

}  // namespace
