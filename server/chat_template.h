/* chat_template.h - chat messages -> prompt text for the common template families.
 *
 * tokenmill does not run Jinja. It recognises the family of a model's
 * `tokenizer.chat_template` by its marker tokens and renders that family's format in C:
 *   chatml  <|im_start|>role\n...<|im_end|>\n          (SmolLM2, Qwen, ...)
 *   llama3  <|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|>
 *   llama2  [INST] <<SYS>>\n...\n<</SYS>>\n\n... [/INST] ... </s><s>
 *   mistral [INST] ... [/INST]...</s>           (system text joins the first user turn)
 *   gemma   <start_of_turn>user\n...<end_of_turn>\n     (assistant is "model")
 * A ChatML template that injects a default system message when none is given (SmolLM2,
 * Qwen2) keeps doing so: the literal is taken from the template text.
 *
 * The rendered text contains the template's special tokens as text, so it must be encoded
 * with parse_special; BOS is not written (the tokenizer adds it when the model wants). */
#ifndef TM_CHAT_TEMPLATE_H
#define TM_CHAT_TEMPLATE_H

#include <stddef.h>

#include "server/api_parse.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum tm_chat_format {
    TM_CHAT_UNKNOWN = 0,
    TM_CHAT_CHATML,
    TM_CHAT_LLAMA3,
    TM_CHAT_LLAMA2,
    TM_CHAT_MISTRAL,
    TM_CHAT_GEMMA,
} tm_chat_format;

typedef struct tm_chat_template {
    tm_chat_format format;      /* family */
    char default_system[512];   /* chatml: system text used when none is given, or "" */
} tm_chat_template;

/* Recognises the family of a Jinja template text. TM_EUNSUPPORTED when it is none of the
 * above (err says so and lists the --chat-template names). */
int tm_chat_template_detect(const char *jinja, tm_chat_template *out, char *err, size_t err_len);
/* By name: "chatml", "llama3", "llama2", "mistral", "gemma". TM_ENOTFOUND otherwise. */
int tm_chat_template_from_name(const char *name, tm_chat_template *out);
const char *tm_chat_format_name(tm_chat_format f);

/* Renders messages followed by the assistant's generation prompt into a malloc'd string.
 * Returns 0, TM_ENOMEM, or TM_EINVAL (with err) for a sequence the format cannot express
 * (e.g. no user message). */
int tm_chat_template_render(const tm_chat_template *t, const tm_api_message *msgs, int n,
                            char **out, char *err, size_t err_len);

/* The special-token texts that end an assistant turn in this format (NULL-terminated
 * static list), e.g. {"<|im_end|>", NULL}. The server maps each to an id and uses it as a
 * stop token. */
const char *const *tm_chat_template_end_tokens(tm_chat_format f);

#ifdef __cplusplus
}
#endif
#endif
