// Chat template detection and rendering (server/chat_template.h).
#include <gtest/gtest.h>

#include <string>
#include <vector>

extern "C" {
#include "common/common.h"
#include "server/chat_template.h"
}

namespace {

std::string Render(const tm_chat_template &t, std::vector<tm_api_message> msgs, int *rc = nullptr) {
    char *out = nullptr;
    char err[256] = "";
    int r = tm_chat_template_render(&t, msgs.data(), (int)msgs.size(), &out, err, sizeof err);
    if (rc) *rc = r;
    std::string s = out ? out : std::string("ERR:") + err;
    free(out);
    return s;
}

tm_api_message M(tm_api_role r, const char *c) { return tm_api_message{r, (char *)c}; }

// SmolLM2-135M-Instruct's template, as stored in its GGUF.
const char *kSmolLM2 =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}";

TEST(ChatTemplate, DetectsFamilies) {
    tm_chat_template t;
    char err[256];
    ASSERT_EQ(tm_chat_template_detect(kSmolLM2, &t, err, sizeof err), 0);
    EXPECT_EQ(t.format, TM_CHAT_CHATML);
    EXPECT_STREQ(t.default_system, "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
    ASSERT_EQ(tm_chat_template_detect("{{ '<|start_header_id|>' + message['role'] }}", &t, err, sizeof err), 0);
    EXPECT_EQ(t.format, TM_CHAT_LLAMA3);
    ASSERT_EQ(tm_chat_template_detect("{{ '<start_of_turn>' + role }}", &t, err, sizeof err), 0);
    EXPECT_EQ(t.format, TM_CHAT_GEMMA);
    ASSERT_EQ(tm_chat_template_detect("{{ '[INST] <<SYS>>\\n' }}", &t, err, sizeof err), 0);
    EXPECT_EQ(t.format, TM_CHAT_LLAMA2);
    ASSERT_EQ(tm_chat_template_detect("{{ '[INST] ' + message['content'] + ' [/INST]' }}", &t, err, sizeof err), 0);
    EXPECT_EQ(t.format, TM_CHAT_MISTRAL);
    // Escaped "\n" in the Jinja literal is undone as well.
    ASSERT_EQ(tm_chat_template_detect("messages[0]['role'] != 'system' {{ '<|im_start|>system\\nBe brief.<|im_end|>\\n' }}",
                                      &t, err, sizeof err), 0);
    EXPECT_STREQ(t.default_system, "Be brief.");
    // A plain ChatML template (no injected system turn) keeps none.
    ASSERT_EQ(tm_chat_template_detect("{{'<|im_start|>' + message['role'] + '\\n'}}", &t, err, sizeof err), 0);
    EXPECT_STREQ(t.default_system, "");
}

TEST(ChatTemplate, UnknownIsAClearError) {
    tm_chat_template t;
    char err[256] = "";
    EXPECT_EQ(tm_chat_template_detect("{{ message['content'] }}", &t, err, sizeof err), TM_EUNSUPPORTED);
    EXPECT_NE(std::string(err).find("--chat-template"), std::string::npos) << err;
    EXPECT_EQ(tm_chat_template_detect(nullptr, &t, err, sizeof err), TM_EUNSUPPORTED);
    EXPECT_NE(std::string(err).find("no chat template"), std::string::npos) << err;
    EXPECT_EQ(tm_chat_template_from_name("vicuna", &t), TM_ENOTFOUND);
    EXPECT_EQ(tm_chat_template_from_name("gemma", &t), 0);
    EXPECT_EQ(t.format, TM_CHAT_GEMMA);
}

TEST(ChatTemplate, RendersChatMLWithDefaultSystem) {
    tm_chat_template t;
    char err[256];
    ASSERT_EQ(tm_chat_template_detect(kSmolLM2, &t, err, sizeof err), 0);
    EXPECT_EQ(Render(t, {M(TM_ROLE_USER, "Hi")}),
              "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
              "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    EXPECT_EQ(Render(t, {M(TM_ROLE_SYSTEM, "S"), M(TM_ROLE_USER, "Q"), M(TM_ROLE_ASSISTANT, "A"),
                         M(TM_ROLE_USER, "Q2")}),
              "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n"
              "<|im_start|>assistant\nA<|im_end|>\n<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\n");
}

TEST(ChatTemplate, RendersLlama3) {
    tm_chat_template t;
    ASSERT_EQ(tm_chat_template_from_name("llama3", &t), 0);
    EXPECT_EQ(Render(t, {M(TM_ROLE_SYSTEM, "S"), M(TM_ROLE_USER, "Q")}),
              "<|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
              "<|start_header_id|>user<|end_header_id|>\n\nQ<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(ChatTemplate, RendersLlama2MistralGemma) {
    tm_chat_template t;
    ASSERT_EQ(tm_chat_template_from_name("llama2", &t), 0);
    EXPECT_EQ(Render(t, {M(TM_ROLE_SYSTEM, "S"), M(TM_ROLE_USER, "Q"), M(TM_ROLE_ASSISTANT, "A"),
                         M(TM_ROLE_USER, "Q2")}),
              "[INST] <<SYS>>\nS\n<</SYS>>\n\nQ [/INST] A </s><s>[INST] Q2 [/INST]");
    ASSERT_EQ(tm_chat_template_from_name("mistral", &t), 0);
    EXPECT_EQ(Render(t, {M(TM_ROLE_SYSTEM, "S"), M(TM_ROLE_USER, "Q")}), "[INST] S\n\nQ [/INST]");
    ASSERT_EQ(tm_chat_template_from_name("gemma", &t), 0);
    EXPECT_EQ(Render(t, {M(TM_ROLE_SYSTEM, "S"), M(TM_ROLE_USER, "Q"), M(TM_ROLE_ASSISTANT, "A"),
                         M(TM_ROLE_USER, "Q2")}),
              "<start_of_turn>user\nS\n\nQ<end_of_turn>\n<start_of_turn>model\nA<end_of_turn>\n"
              "<start_of_turn>user\nQ2<end_of_turn>\n<start_of_turn>model\n");
    int rc = 0;
    Render(t, {M(TM_ROLE_SYSTEM, "S")}, &rc);
    EXPECT_EQ(rc, TM_EINVAL);  // no user turn
    Render(t, {M(TM_ROLE_USER, "Q"), M(TM_ROLE_SYSTEM, "late")}, &rc);
    EXPECT_EQ(rc, TM_EINVAL);  // system after a user turn cannot be expressed
}

TEST(ChatTemplate, EndTokens) {
    EXPECT_STREQ(tm_chat_template_end_tokens(TM_CHAT_CHATML)[0], "<|im_end|>");
    EXPECT_STREQ(tm_chat_template_end_tokens(TM_CHAT_LLAMA3)[0], "<|eot_id|>");
    EXPECT_STREQ(tm_chat_template_end_tokens(TM_CHAT_GEMMA)[0], "<end_of_turn>");
    EXPECT_STREQ(tm_chat_template_end_tokens(TM_CHAT_MISTRAL)[0], "</s>");
    EXPECT_EQ(tm_chat_template_end_tokens(TM_CHAT_UNKNOWN)[0], nullptr);
}

}  // namespace
