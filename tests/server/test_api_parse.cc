// Request validation for /v1/completions and /v1/chat/completions (server/api_parse.h).
#include <gtest/gtest.h>

#include <string>

extern "C" {
#include "common/common.h"
#include "server/api_error.h"
#include "server/api_parse.h"
}

namespace {

struct Parsed {
    tm_api_params p;
    int rc;
    std::string err;
    std::string param;
    Parsed(tm_api_kind kind, const std::string &body) {
        char e[512] = "";
        const char *par = "";
        rc = tm_api_parse(kind, body.data(), body.size(), &p, &par, e, sizeof e);
        err = e;
        param = par;
    }
    ~Parsed() { tm_api_params_free(&p); }
};

// Asserts a 400-class rejection naming `param` and mentioning `needle` in the message.
void ExpectReject(tm_api_kind kind, const std::string &body, const std::string &param,
                  const std::string &needle) {
    Parsed x(kind, body);
    EXPECT_EQ(x.rc, TM_EINVAL) << body;
    EXPECT_EQ(x.param, param) << body << " -> " << x.err;
    EXPECT_NE(x.err.find(needle), std::string::npos) << body << " -> " << x.err;
}

TEST(ApiParse, CompletionDefaultsAndFields) {
    Parsed x(TM_API_COMPLETION,
             R"({"model":"m","prompt":"hi","max_tokens":7,"temperature":0.5,"top_p":0.9,)"
             R"("top_k":40,"min_p":0.05,"seed":42,"stop":["a","b"],"presence_penalty":1,)"
             R"("frequency_penalty":-1,"repetition_penalty":1.1,"ignore_eos":true,)"
             R"("logprobs":3,"stream":true,"stream_options":{"include_usage":true},)"
             R"("user":"u","cache_salt":"s","unknown_field":{"x":1}})");
    ASSERT_EQ(x.rc, 0) << x.err;
    EXPECT_STREQ(x.p.model, "m");
    EXPECT_STREQ(x.p.prompt, "hi");
    EXPECT_EQ(x.p.max_tokens, 7);
    EXPECT_FLOAT_EQ(x.p.sampling.temperature, 0.5f);
    EXPECT_FLOAT_EQ(x.p.sampling.top_p, 0.9f);
    EXPECT_EQ(x.p.sampling.top_k, 40);
    EXPECT_FLOAT_EQ(x.p.sampling.min_p, 0.05f);
    EXPECT_EQ(x.p.sampling.seed, 42u);
    EXPECT_TRUE(x.p.has_seed);
    ASSERT_EQ(x.p.n_stop, 2);
    EXPECT_STREQ(x.p.stop[1], "b");
    EXPECT_FLOAT_EQ(x.p.sampling.presence_penalty, 1.f);
    EXPECT_FLOAT_EQ(x.p.sampling.frequency_penalty, -1.f);
    EXPECT_FLOAT_EQ(x.p.sampling.repetition_penalty, 1.1f);
    EXPECT_TRUE(x.p.ignore_eos);
    EXPECT_TRUE(x.p.logprobs);
    EXPECT_EQ(x.p.top_logprobs, 3);
    EXPECT_TRUE(x.p.stream);
    EXPECT_TRUE(x.p.include_usage);
    EXPECT_STREQ(x.p.cache_salt, "s");
}

TEST(ApiParse, NullMeansAbsent) {
    Parsed x(TM_API_COMPLETION, R"({"prompt":"hi","max_tokens":null,"temperature":null,"stop":null})");
    ASSERT_EQ(x.rc, 0) << x.err;
    EXPECT_EQ(x.p.max_tokens, -1);
    EXPECT_FLOAT_EQ(x.p.sampling.temperature, 1.f);
    EXPECT_EQ(x.p.n_stop, 0);
    EXPECT_FALSE(x.p.has_seed);
    EXPECT_EQ(x.p.model, nullptr);
}

TEST(ApiParse, PromptForms) {
    Parsed ids(TM_API_COMPLETION, R"({"prompt":[1,2,3]})");
    ASSERT_EQ(ids.rc, 0) << ids.err;
    ASSERT_EQ(ids.p.n_prompt_ids, 3);
    EXPECT_EQ(ids.p.prompt_ids[2], 3);
    Parsed one(TM_API_COMPLETION, R"({"prompt":["only"]})");
    ASSERT_EQ(one.rc, 0) << one.err;
    EXPECT_STREQ(one.p.prompt, "only");
    ExpectReject(TM_API_COMPLETION, R"({"prompt":["a","b"]})", "prompt", "batched");
    ExpectReject(TM_API_COMPLETION, R"({"prompt":[[1],[2]]})", "prompt", "batched");
    ExpectReject(TM_API_COMPLETION, R"({"prompt":""})", "prompt", "empty");
    ExpectReject(TM_API_COMPLETION, R"({"prompt":[]})", "prompt", "empty");
    ExpectReject(TM_API_COMPLETION, R"({"prompt":[1,-2]})", "prompt", "non-negative");
    ExpectReject(TM_API_COMPLETION, R"({"prompt":12})", "prompt", "string");
    ExpectReject(TM_API_COMPLETION, R"({"max_tokens":3})", "prompt", "required");
}

TEST(ApiParse, ChatMessages) {
    Parsed x(TM_API_CHAT,
             R"({"messages":[{"role":"system","content":"s"},{"role":"user","content":)"
             R"([{"type":"text","text":"a"},{"type":"text","text":"b"}]},)"
             R"({"role":"assistant","content":null},{"role":"developer","content":"d"}],)"
             R"("logprobs":true,"top_logprobs":2,"max_completion_tokens":9})");
    ASSERT_EQ(x.rc, 0) << x.err;
    ASSERT_EQ(x.p.n_messages, 4);
    EXPECT_EQ(x.p.messages[0].role, TM_ROLE_SYSTEM);
    EXPECT_STREQ(x.p.messages[1].content, "a\nb"); // text parts joined as vLLM joins them
    EXPECT_EQ(x.p.messages[2].role, TM_ROLE_ASSISTANT);
    EXPECT_STREQ(x.p.messages[2].content, "");
    EXPECT_EQ(x.p.messages[3].role, TM_ROLE_SYSTEM);
    EXPECT_TRUE(x.p.logprobs);
    EXPECT_EQ(x.p.top_logprobs, 2);
    EXPECT_EQ(x.p.max_tokens, 9);
}

TEST(ApiParse, ChatRejections) {
    ExpectReject(TM_API_CHAT, R"({"messages":[]})", "messages", "empty");
    ExpectReject(TM_API_CHAT, R"({})", "messages", "required");
    ExpectReject(TM_API_CHAT, R"({"messages":"hi"})", "messages", "list");
    ExpectReject(TM_API_CHAT, R"({"messages":[3]})", "messages", "object");
    ExpectReject(TM_API_CHAT, R"({"messages":[{"content":"x"}]})", "messages", "role");
    ExpectReject(TM_API_CHAT, R"({"messages":[{"role":"function","content":"x"}]})", "messages", "role");
    ExpectReject(TM_API_CHAT, R"({"messages":[{"role":"user"}]})", "messages", "required");
    ExpectReject(TM_API_CHAT, R"({"messages":[{"role":"user","content":5}]})", "messages", "string");
    ExpectReject(TM_API_CHAT,
                 R"({"messages":[{"role":"user","content":[{"type":"image_url","image_url":{}}]}]})",
                 "messages", "text");
    ExpectReject(TM_API_CHAT, R"({"messages":[{"role":"user","content":"x"}],"top_logprobs":2})",
                 "top_logprobs", "requires");
    ExpectReject(TM_API_CHAT, R"({"messages":[{"role":"user","content":"x"}],"logprobs":1})",
                 "logprobs", "boolean");
}

TEST(ApiParse, TypesAndRanges) {
    const std::string pre = R"({"prompt":"x",)";
    ExpectReject(TM_API_COMPLETION, pre + R"("max_tokens":"5"})", "max_tokens", "integer");
    ExpectReject(TM_API_COMPLETION, pre + R"("max_tokens":0})", "max_tokens", "between");
    ExpectReject(TM_API_COMPLETION, pre + R"("max_tokens":1.5})", "max_tokens", "integer");
    ExpectReject(TM_API_COMPLETION, pre + R"("temperature":2.5})", "temperature", "between");
    ExpectReject(TM_API_COMPLETION, pre + R"("temperature":"hot"})", "temperature", "number");
    ExpectReject(TM_API_COMPLETION, pre + R"("top_p":0})", "top_p", "> 0");
    ExpectReject(TM_API_COMPLETION, pre + R"("top_p":1.01})", "top_p", "between");
    ExpectReject(TM_API_COMPLETION, pre + R"("presence_penalty":3})", "presence_penalty", "between");
    ExpectReject(TM_API_COMPLETION, pre + R"("frequency_penalty":-2.1})", "frequency_penalty", "between");
    ExpectReject(TM_API_COMPLETION, pre + R"("repetition_penalty":0})", "repetition_penalty", "> 0");
    ExpectReject(TM_API_COMPLETION, pre + R"("top_k":-2})", "top_k", "between");
    ExpectReject(TM_API_COMPLETION, pre + R"("min_p":1.5})", "min_p", "between");
    ExpectReject(TM_API_COMPLETION, pre + R"("seed":"1"})", "seed", "integer");
    ExpectReject(TM_API_COMPLETION, pre + R"("stream":"yes"})", "stream", "boolean");
    ExpectReject(TM_API_COMPLETION, pre + R"("stream_options":{"include_usage":true}})",
                 "stream_options", "only allowed");
    ExpectReject(TM_API_COMPLETION, pre + R"("stream":true,"stream_options":{"include_usage":1}})",
                 "stream_options", "boolean");
    ExpectReject(TM_API_COMPLETION, pre + R"("stop":["a","b","c","d","e"]})", "stop", "at most 4");
    ExpectReject(TM_API_COMPLETION, pre + R"("stop":[1]})", "stop", "string");
    ExpectReject(TM_API_COMPLETION, pre + R"("n":129})", "n", "between 1 and 128");
    ExpectReject(TM_API_COMPLETION, pre + R"("logprobs":21})", "logprobs", "between");
    ExpectReject(TM_API_COMPLETION, pre + R"("model":7})", "model", "string");
    ExpectReject(TM_API_COMPLETION, pre + R"("ignore_eos":1})", "ignore_eos", "boolean");
    ExpectReject(TM_API_COMPLETION, pre + R"("echo":true})", "echo", "not supported");
    ExpectReject(TM_API_COMPLETION, pre + R"("cache_salt":5})", "cache_salt", "string");
}

// A positive value too small for a float used to round to 0 and be refused as "must be
// > 0" (0 turns top_p and repetition_penalty off, so 0 is refused), though the client
// sent a valid value; it now stays positive.
TEST(ApiParse, TinyPositiveFloatsStayPositive) {
    Parsed x(TM_API_COMPLETION, R"({"prompt":"x","top_p":1e-300,"repetition_penalty":5e-324,)"
                                R"("temperature":1e-300})");
    ASSERT_EQ(x.rc, 0) << x.err;
    EXPECT_GT(x.p.sampling.top_p, 0.f);
    EXPECT_GT(x.p.sampling.repetition_penalty, 0.f);
    EXPECT_GT(x.p.sampling.temperature, 0.f);
    ExpectReject(TM_API_COMPLETION, R"({"prompt":"x","top_p":-1e-300})", "top_p", "between");
    ExpectReject(TM_API_COMPLETION, R"({"prompt":"x","top_p":-0.0})", "top_p", "> 0");
}

TEST(ApiParse, UnsupportedFeaturesAreRefusedNotIgnored) {
    const std::string pre = R"({"messages":[{"role":"user","content":"x"}],)";
    ExpectReject(TM_API_CHAT, pre + R"("functions":[{"name":"f"}]})", "functions", "not supported");
    // Structured output is supported (tests/server/test_structured.cc); what it cannot honour
    // is refused by name, never served unconstrained.
    ExpectReject(TM_API_CHAT, pre + R"("response_format":{"type":"structural_tag"}})",
                 "response_format", "not supported");
    ExpectReject(TM_API_CHAT, pre + R"("response_format":{"type":"json_schema","json_schema":)"
                                    R"({"schema":{"type":"array","uniqueItems":true}}}})",
                 "response_format.json_schema.schema", "'uniqueItems' is not supported");
    ExpectReject(TM_API_CHAT, pre + R"("response_format":{"type":"json_object"},"ignore_eos":true})",
                 "ignore_eos", "structured output");
    Parsed so(TM_API_CHAT, pre + R"("response_format":{"type":"json_object"}})");
    EXPECT_EQ(so.rc, 0) << so.err;
    EXPECT_EQ(so.p.so.kind, TM_SO_JSON_OBJECT);
    EXPECT_NE(so.p.so.gbnf, nullptr);
    ExpectReject(TM_API_COMPLETION, R"({"prompt":"x","suffix":5})", "suffix", "string");
    Parsed fim(TM_API_COMPLETION, R"({"prompt":"def f(","suffix":"\n  return x"})");
    ASSERT_EQ(fim.rc, 0) << fim.err; // served where the model has fill-in-the-middle tokens
    EXPECT_EQ(std::string(fim.p.suffix, fim.p.suffix_len), "\n  return x");
    // Default values (what clients send when the feature is off) are accepted.
    Parsed ok(TM_API_CHAT, pre + R"("tools":[],"tool_choice":"none","functions":null,)"
                                 R"("response_format":{"type":"text"},"logit_bias":{},)"
                                 R"("suffix":"","some_unknown_field":{"a":1}})");
    EXPECT_EQ(ok.rc, 0) << ok.err;
}

TEST(ApiParse, MalformedBodies) {
    ExpectReject(TM_API_COMPLETION, "", "", "empty");
    ExpectReject(TM_API_COMPLETION, "{\"prompt\":", "", "malformed JSON");
    ExpectReject(TM_API_COMPLETION, "[1,2]", "", "JSON object");
    ExpectReject(TM_API_COMPLETION, R"({"prompt":"a","prompt":"b"})", "", "malformed JSON");
    // Invalid UTF-8 inside a JSON string is malformed JSON, never a crash.
    ExpectReject(TM_API_COMPLETION, "{\"prompt\":\"\xff\xfe\"}", "", "malformed JSON");
    ExpectReject(TM_API_COMPLETION, "{\"prompt\":\"\xc0\xaf\"}", "", "malformed JSON");
}

TEST(ApiError, ShapeAndStatusMapping) {
    EXPECT_EQ(tm_api_status_of(TM_EINVAL), 400);
    EXPECT_EQ(tm_api_status_of(TM_ERANGE), 400);
    EXPECT_EQ(tm_api_status_of(TM_ENOTFOUND), 404);
    EXPECT_EQ(tm_api_status_of(TM_EBUSY), 503);
    EXPECT_EQ(tm_api_status_of(TM_ENOMEM), 500);
    char *s = tm_api_error_json(404, "The model 'x' does not exist", "model", "model_not_found");
    ASSERT_NE(s, nullptr);
    EXPECT_STREQ(s, R"({"error":{"message":"The model 'x' does not exist",)"
                    R"("type":"invalid_request_error","param":"model","code":"model_not_found"}})");
    free(s);
    s = tm_api_error_json(500, "\xff bad bytes", nullptr, nullptr);  // never NULL on bad UTF-8
    ASSERT_NE(s, nullptr);
    EXPECT_NE(std::string(s).find("\"type\":\"server_error\""), std::string::npos);
    EXPECT_NE(std::string(s).find("\"param\":null"), std::string::npos);
    free(s);
}

}  // namespace

namespace {

// The conversation a Jinja template sees: vLLM's shape, tool calls' arguments parsed.
TEST(ApiParse, ChatConversationForTheTemplate) {
    Parsed x(TM_API_CHAT,
             R"({"messages":[{"role":"user","content":"weather?","name":"ann"},)"
             R"({"role":"assistant","content":null,"tool_calls":[{"id":"call1","type":"function",)"
             R"("function":{"name":"get_weather","arguments":"{\"city\": \"Paris\", \"n\": 2}"}}]},)"
             R"({"role":"tool","content":"22 C","tool_call_id":"call1"}],)"
             R"("tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}],)"
             R"("chat_template_kwargs":{"enable_thinking":false}})");
    ASSERT_EQ(x.rc, 0) << x.err;
    char *conv = json_dumps(x.p.conversation, JSON_COMPACT);
    EXPECT_STREQ(conv, R"([{"role":"user","content":"weather?","name":"ann"},)"
                       R"({"role":"assistant","content":"","tool_calls":[{"id":"call1","type":"function",)"
                       R"("function":{"name":"get_weather","arguments":{"city":"Paris","n":2}}}]},)"
                       R"({"role":"tool","content":"22 C","tool_call_id":"call1"}])");
    free(conv);
    char *tools = json_dumps(x.p.tools, JSON_COMPACT);
    EXPECT_STREQ(tools, R"([{"type":"function","function":{"name":"get_weather","description":null,)"
                        R"("parameters":{"type":"object"}}}])");
    free(tools);
    EXPECT_EQ(x.p.tool_choice, TM_TOOL_AUTO); // the default with tools
    EXPECT_TRUE(json_is_false(json_object_get(x.p.template_kwargs, "enable_thinking")));
    EXPECT_EQ(x.p.messages[2].role, TM_ROLE_TOOL);
}

TEST(ApiParse, ToolErrorsAreTheRequestsFault) {
    const std::string pre = R"({"messages":[{"role":"user","content":"x"}],)";
    const std::string f = R"("tools":[{"type":"function","function":{"name":"f"}}])";
    ExpectReject(TM_API_CHAT, pre + R"("tools":5})", "tools", "list");
    ExpectReject(TM_API_CHAT, pre + R"("tools":[{"type":"retrieval"}]})", "tools", "function");
    ExpectReject(TM_API_CHAT, pre + R"("tools":[{"type":"function","function":{"description":"d"}}]})",
                 "tools", "name");
    ExpectReject(TM_API_CHAT, pre + R"("tools":[{"type":"function","function":{"name":"f","parameters":[1]}}]})",
                 "tools", "parameters");
    ExpectReject(TM_API_CHAT, pre + R"("tool_choice":"required"})", "tool_choice", "`tools` must be set");
    ExpectReject(TM_API_CHAT, pre + f + R"(,"tool_choice":"sometimes"})", "tool_choice", "required");
    ExpectReject(TM_API_CHAT, pre + f + R"(,"tool_choice":{"type":"function","function":{"name":"g"}}})",
                 "tool_choice", "Tool 'g' has not been passed in `tools`.");
    ExpectReject(TM_API_CHAT, R"({"messages":[{"role":"assistant","tool_calls":[{"id":"1","type":"function",)"
                              R"("function":{"name":"f","arguments":"{not json"}}]}]})",
                 "messages", "not valid JSON");
    for (const char *tc : {R"("none")", R"("auto")", R"("required")",
                           R"({"type":"function","function":{"name":"f"}})"}) {
        Parsed ok(TM_API_CHAT, pre + f + R"(,"tool_choice":)" + tc + "}");
        EXPECT_EQ(ok.rc, 0) << tc << ": " << ok.err;
    }
    Parsed named(TM_API_CHAT, pre + f + R"(,"tool_choice":{"type":"function","function":{"name":"f"}}})");
    EXPECT_EQ(named.p.tool_choice, TM_TOOL_NAMED);
    EXPECT_STREQ(named.p.tool_choice_name, "f");
}

TEST(ApiParse, LogitBiasNulAndCacheSalt) {
    Parsed b(TM_API_COMPLETION, R"({"prompt":"x","logit_bias":{"7":250,"11":-3.5}})");
    ASSERT_EQ(b.rc, 0) << b.err;
    ASSERT_EQ(b.p.n_bias, 2);
    EXPECT_EQ(b.p.bias_ids[0], 7);
    EXPECT_EQ(b.p.bias_vals[0], 100.0f); // clamped, as vLLM does
    EXPECT_EQ(b.p.bias_ids[1], 11);
    EXPECT_EQ(b.p.bias_vals[1], -3.5f);
    ExpectReject(TM_API_COMPLETION, R"({"prompt":"x","logit_bias":{"a":1}})", "logit_bias", "token ids");
    ExpectReject(TM_API_COMPLETION, R"({"prompt":"x","logit_bias":{"-1":1}})", "logit_bias", "token ids");
    ExpectReject(TM_API_COMPLETION, R"({"prompt":"x","logit_bias":{"1":"x"}})", "logit_bias", "numbers");
    ExpectReject(TM_API_COMPLETION, R"({"prompt":"x","logit_bias":true})", "logit_bias", "object");
    // "\u0000" is JSON text like any other character: kept, with the length
    Parsed n(TM_API_COMPLETION, R"({"prompt":"a\u0000b"})");
    ASSERT_EQ(n.rc, 0) << n.err;
    EXPECT_EQ(n.p.prompt_len, 3u);
    EXPECT_EQ(std::string(n.p.prompt, n.p.prompt_len), std::string("a\0b", 3));
    // an empty cache_salt is refused, as vLLM refuses it
    ExpectReject(TM_API_COMPLETION, R"({"prompt":"x","cache_salt":""})", "cache_salt", "non-empty");
}

}  // namespace
