// jinja_fuzz_util.h - shared by the bounded fuzz test (test_jinja_fuzz.cc) and the
// libFuzzer target (tests/fuzz/fuzz_jinja.cc): the variables every fuzzed template is
// rendered with, the limits, and the checks every render must pass.
#pragma once

#include <cstdlib>
#include <cstring>
#include <string>

#include <jansson.h>

extern "C" {
#include "common/common.h"
#include "server/jinja.h"
}

// A conversation with tools, tool calls, unicode and NUL, as the API passes it.
inline json_t *jinja_fuzz_vars() {
    static const char k[] =
        "{\"messages\":[{\"role\":\"system\",\"content\":\"sys \\u00e9\"},"
        "{\"role\":\"user\",\"content\":\"hi\\u0000 <think>x</think> \\ud83d\\ude42\"},"
        "{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"id\":\"abc123xyz\",\"type\":\"function\","
        "\"function\":{\"name\":\"f\",\"arguments\":{\"a\":[1,2.5,null,true],\"b\":{\"c\":\"d\"}}}}]},"
        "{\"role\":\"tool\",\"content\":\"42\",\"tool_call_id\":\"abc123xyz\"},"
        "{\"role\":\"user\",\"content\":\"again\"}],"
        "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"description\":\"d\","
        "\"parameters\":{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"array\",\"items\":{\"type\":\"number\"}}},"
        "\"required\":[\"a\"]}}}],"
        "\"add_generation_prompt\":true,\"bos_token\":\"<s>\",\"eos_token\":\"</s>\",\"n\":-7,\"f\":1e300}";
    json_error_t je;
    return json_loads(k, JSON_ALLOW_NUL, &je);
}

inline void jinja_fuzz_limits(tm_jinja_limits *l) {
    tm_jinja_limits_default(l);
    l->max_steps = 200000;
    l->max_output_bytes = 1 << 20;
    l->max_memory_bytes = 32 << 20;
    l->max_depth = 48;
}

// Parses and renders src; returns "" when all is well, else what went wrong (a crash is
// caught by the sanitizers instead).
inline std::string jinja_fuzz_one(const char *src, size_t len, json_t *vars) {
    tm_jinja_limits lim;
    jinja_fuzz_limits(&lim);
    char err[256];
    err[0] = 0;
    tm_jinja *t = nullptr;
    int rc = tm_jinja_parse(src, len, &lim, &t, err, sizeof err);
    if (rc) {
        if (rc != TM_EINVAL && rc != TM_ERANGE && rc != TM_ENOMEM) return "parse: unexpected code";
        if (!err[0]) return "parse: failed without a message";
        if (t) return "parse: failed but returned a template";
        return "";
    }
    char *out = nullptr;
    size_t n = 0;
    tm_jinja_failure f = TM_JINJA_OK;
    err[0] = 0;
    rc = tm_jinja_render(t, vars, &lim, nullptr, &out, &n, &f, err, sizeof err);
    std::string problem;
    if (rc == 0) {
        if (!out) problem = "render: success without text";
        else if (n > lim.max_output_bytes) problem = "render: output over the limit";
        else if (out[n] != 0) problem = "render: text not terminated";
    } else {
        if (rc != TM_EINVAL && rc != TM_ERANGE && rc != TM_ENOMEM) problem = "render: unexpected code";
        else if (f == TM_JINJA_OK) problem = "render: failed without a failure kind";
        else if (!err[0] && f != TM_JINJA_RAISED) problem = "render: failed without a message";
        else if (out) problem = "render: failed but returned text";
    }
    free(out);
    tm_jinja_destroy(t);
    return problem;
}
