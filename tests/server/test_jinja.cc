// test_jinja.cc - the Jinja interpreter (server/jinja.h) against Python's jinja2.
//
// tests/golden/chat_templates.json comes from scripts/golden_chat_templates.py: the chat
// templates of real model families rendered by jinja2 (set up as transformers sets it up)
// over conversations with and without tools, and small one-feature templates. Each must
// render to exactly the same bytes here, or fail where jinja2 fails (with the same message
// when the template itself raised). Then the limits: steps, output, memory and nesting.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>

#include <jansson.h>

extern "C" {
#include "common/common.h"
#include "server/jinja.h"
}

namespace {

std::string source_dir() {
    const char *src = std::getenv("TM_SOURCE_DIR");
    return src ? src : TM_SOURCE_DIR;
}

json_t *load_golden() {
    json_error_t je;
    std::string path = source_dir() + "/tests/golden/chat_templates.json";
    json_t *j = json_load_file(path.c_str(), 0, &je);
    EXPECT_NE(j, nullptr) << path << ": " << je.text;
    return j;
}

std::string read_file(const std::string &path) {
    FILE *f = fopen(path.c_str(), "rb");
    EXPECT_NE(f, nullptr) << path;
    if (!f) return "";
    std::string s;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
    fclose(f);
    return s;
}

// The instant the golden file was rendered at (strftime_now), as UTC fields.
struct tm golden_now(json_t *doc) {
    struct tm t = {};
    const char *s = json_string_value(json_object_get(doc, "now_utc"));
    EXPECT_NE(s, nullptr);
    if (s) strptime(s, "%Y-%m-%dT%H:%M:%S", &t);
    time_t tt = timegm(&t);
    struct tm out;
    gmtime_r(&tt, &out);
    return out;
}

struct Result {
    int rc = 0;
    tm_jinja_failure failure = TM_JINJA_OK;
    std::string text, err;
};

Result render(const std::string &src, json_t *vars, const struct tm *now,
              const tm_jinja_limits *lim = nullptr) {
    Result r;
    char err[512] = "";
    tm_jinja *t = nullptr;
    r.rc = tm_jinja_parse(src.data(), src.size(), lim, &t, err, sizeof err);
    if (r.rc) {
        r.err = err;
        r.failure = TM_JINJA_ERROR;
        return r;
    }
    char *out = nullptr;
    size_t len = 0;
    r.rc = tm_jinja_render(t, vars, lim, now, &out, &len, &r.failure, err, sizeof err);
    if (r.rc == 0) {
        r.text.assign(out, len);
        EXPECT_EQ(strlen(out), len) << "no NUL in these outputs, and the text is terminated";
    } else {
        r.err = err;
        EXPECT_EQ(out, nullptr);
    }
    free(out);
    tm_jinja_destroy(t);
    return r;
}

// jinja2 raised: the same failure here; raise_exception's message exactly.
void expect_failure(const Result &r, json_t *c, const std::string &what) {
    EXPECT_NE(r.rc, 0) << what << " rendered " << r.text;
    EXPECT_FALSE(r.err.empty()) << what;
    if (json_is_true(json_object_get(c, "raised"))) {
        EXPECT_EQ(r.failure, TM_JINJA_RAISED) << what << ": " << r.err;
        EXPECT_EQ(r.err, json_string_value(json_object_get(c, "error"))) << what;
    }
}

TEST(JinjaGolden, ModelTemplatesMatchJinja2) {
    json_t *doc = load_golden();
    ASSERT_NE(doc, nullptr);
    struct tm now = golden_now(doc);
    json_t *convs = json_object_get(doc, "conversations"), *special = json_object_get(doc, "special_tokens");
    size_t i, n_ok = 0;
    json_t *c;
    json_array_foreach(json_object_get(doc, "cases"), i, c) {
        std::string family = json_string_value(json_object_get(c, "template"));
        std::string conv = json_string_value(json_object_get(c, "conversation"));
        std::string src = read_file(source_dir() + "/tests/golden/chat_templates/" + family + ".jinja");
        json_t *vars = json_pack("{s:n, s:n}", "tools", "documents");
        json_object_update(vars, json_object_get(special, family.c_str()));
        json_object_update(vars, json_object_get(convs, conv.c_str()));
        Result r = render(src, vars, &now);
        std::string what = family + " / " + conv;
        if (json_t *want = json_object_get(c, "expected")) {
            ASSERT_EQ(r.rc, 0) << what << ": " << r.err;
            EXPECT_EQ(r.text, std::string(json_string_value(want), json_string_length(want))) << what;
            n_ok += r.text == json_string_value(want);
        } else {
            expect_failure(r, c, what);
        }
        json_decref(vars);
    }
    EXPECT_GE(i, 90u) << "the golden file lost its cases";
    EXPECT_GE(n_ok, 80u);
    json_decref(doc);
}

TEST(JinjaGolden, SnippetsMatchJinja2) {
    json_t *doc = load_golden();
    ASSERT_NE(doc, nullptr);
    struct tm now = golden_now(doc);
    json_t *vars = json_object_get(doc, "snippet_vars"), *c;
    size_t i;
    json_array_foreach(json_object_get(doc, "snippets"), i, c) {
        std::string src = json_string_value(json_object_get(c, "source"));
        Result r = render(src, vars, &now);
        if (json_t *want = json_object_get(c, "expected")) {
            ASSERT_EQ(r.rc, 0) << src << ": " << r.err;
            EXPECT_EQ(r.text, std::string(json_string_value(want), json_string_length(want))) << src;
        } else {
            expect_failure(r, c, src);
        }
    }
    EXPECT_GE(i, 60u);
    json_decref(doc);
}

// ---- behaviour the golden file cannot show ----

Result render_str(const std::string &src, const char *vars_json = "{}", const tm_jinja_limits *lim = nullptr) {
    json_error_t je;
    json_t *vars = json_loads(vars_json, 0, &je);
    EXPECT_NE(vars, nullptr) << je.text;
    Result r = render(src, vars, nullptr, lim);
    json_decref(vars);
    return r;
}

TEST(Jinja, KeepsNulBytesAndLengths) {
    json_t *vars = json_pack("{s:s#}", "p", "a\0b", (size_t)3);
    Result r;
    char err[256];
    tm_jinja *t = nullptr;
    const char src[] = "[{{ p }}|{{ p|length }}|{{ p|tojson }}]";
    ASSERT_EQ(tm_jinja_parse(src, sizeof src - 1, nullptr, &t, err, sizeof err), 0) << err;
    char *out = nullptr;
    size_t len = 0;
    ASSERT_EQ(tm_jinja_render(t, vars, nullptr, nullptr, &out, &len, nullptr, err, sizeof err), 0) << err;
    EXPECT_EQ(std::string(out, len), std::string("[a\0b|3|\"a\\u0000b\"]", 18));
    free(out);
    tm_jinja_destroy(t);
    json_decref(vars);
}

TEST(Jinja, StepLimitStopsLoops) {
    tm_jinja_limits lim;
    tm_jinja_limits_default(&lim);
    lim.max_steps = 100000;
    Result r = render_str("{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}", "{}", &lim);
    EXPECT_EQ(r.rc, TM_ERANGE);
    EXPECT_EQ(r.failure, TM_JINJA_LIMIT);
    EXPECT_NE(r.err.find("steps"), std::string::npos) << r.err;
}

TEST(Jinja, OutputAndMemoryLimits) {
    tm_jinja_limits lim;
    tm_jinja_limits_default(&lim);
    lim.max_output_bytes = 1000;
    Result r = render_str("{% for i in range(2000) %}x{% endfor %}", "{}", &lim);
    EXPECT_EQ(r.rc, TM_ERANGE);
    EXPECT_NE(r.err.find("output"), std::string::npos) << r.err;
    r = render_str("{{ 'x' * 100000 }}", "{}", &lim);
    EXPECT_EQ(r.rc, TM_ERANGE) << r.err;
    // doubling a string inside a namespace: caught by the size limits, not the machine
    tm_jinja_limits_default(&lim);
    lim.max_memory_bytes = 1 << 20;
    r = render_str("{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
                   "{}", &lim);
    EXPECT_EQ(r.rc, TM_ERANGE) << r.err;
    r = render_str("{% set ns = namespace(l=[1]) %}{% for i in range(64) %}{% set ns.l = ns.l + ns.l %}{% endfor %}", "{}", &lim);
    EXPECT_EQ(r.rc, TM_ERANGE) << r.err;
}

TEST(Jinja, NestingLimits) {
    std::string deep = "{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}";
    Result r = render_str(deep);
    EXPECT_NE(r.rc, 0);
    std::string ifs;
    for (int i = 0; i < 500; i++) ifs += "{% if true %}";
    for (int i = 0; i < 500; i++) ifs += "{% endif %}";
    r = render_str(ifs);
    EXPECT_EQ(r.rc, TM_ERANGE) << r.err;
    r = render_str("{{ " + std::string(3000, '-') + "1 }}");
    EXPECT_EQ(r.rc, TM_ERANGE) << r.err;
    r = render_str("{{ x" + std::string(1000, '|').insert(0, "") + " }}");
    EXPECT_NE(r.rc, 0);
    // unbounded macro recursion ends at max_depth
    r = render_str("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
    EXPECT_EQ(r.rc, TM_ERANGE) << r.err;
    EXPECT_NE(r.err.find("macro"), std::string::npos) << r.err;
    // a value nested by the template itself prints or fails, never overflows the stack
    r = render_str("{% set ns = namespace(v=1) %}{% for i in range(20000) %}{% set ns.v = [ns.v] %}{% endfor %}{{ ns.v|tojson|length }}");
    EXPECT_EQ(r.rc, TM_ERANGE) << r.err;
}

// Inputs the coverage-guided fuzzer (tests/fuzz/fuzz_jinja.cc) found crashing, kept.
TEST(Jinja, FuzzFindingsStayFixed) {
    // a slice inside a tuple subscript reached the evaluator without its object
    Result r = render_str("{{ u[1:8,2] }}{{ xs[::1, 0] }}", "{\"u\": \"abc\", \"xs\": [1]}");
    EXPECT_EQ(r.rc, TM_EINVAL);
    EXPECT_NE(r.err.find("slice"), std::string::npos) << r.err;
    // filters and methods called without their argument returned success and no value
    for (const char *src : {"{{ 'a'|attr|reverse }}", "{{ [1]|batch|list }}", "{{ 'a'.find()|list }}",
                            "{{ 'ab'.removeprefix()|list }}"}) {
        r = render_str(src);
        EXPECT_EQ(r.rc, TM_EINVAL) << src;
        EXPECT_NE(r.err.find("argument"), std::string::npos) << src << ": " << r.err;
    }
}

TEST(Jinja, RaiseExceptionIsReportedAsRaised) {
    Result r = render_str("{% if messages|length == 0 %}{{ raise_exception('No messages: ' ~ n) }}{% endif %}",
                          "{\"messages\": [], \"n\": 3}");
    EXPECT_EQ(r.rc, TM_EINVAL);
    EXPECT_EQ(r.failure, TM_JINJA_RAISED);
    EXPECT_EQ(r.err, "No messages: 3");
}

TEST(Jinja, ParseErrorsNameTheLine) {
    Result r = render_str("a\nb\n{% if x %}\n{{ x | }}\n{% endif %}");
    EXPECT_EQ(r.rc, TM_EINVAL);
    EXPECT_EQ(r.err.rfind("line 4:", 0), 0u) << r.err;
}

TEST(Jinja, TemplateIsSharedByRenders) {
    // one parsed template, different variables: nothing of one render leaks into the next
    char err[256];
    tm_jinja *t = nullptr;
    const std::string src = "{% set ns = namespace(c=0) %}{% for m in messages %}{% set ns.c = ns.c + 1 %}{% endfor %}{{ ns.c }}";
    ASSERT_EQ(tm_jinja_parse(src.data(), src.size(), nullptr, &t, err, sizeof err), 0) << err;
    for (int n = 0; n < 5; n++) {
        json_t *msgs = json_array();
        for (int i = 0; i < n; i++) json_array_append_new(msgs, json_object());
        json_t *vars = json_pack("{s:o}", "messages", msgs);
        char *out = nullptr;
        size_t len;
        ASSERT_EQ(tm_jinja_render(t, vars, nullptr, nullptr, &out, &len, nullptr, err, sizeof err), 0) << err;
        EXPECT_EQ(std::string(out), std::to_string(n));
        free(out);
        json_decref(vars);
    }
    tm_jinja_destroy(t);
}

}  // namespace
