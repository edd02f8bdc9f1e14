/* chat_template.h - chat messages -> prompt text.
 *
 * The model's own `tokenizer.chat_template` (or a Jinja file given by --chat-template) is
 * rendered by the Jinja interpreter (server/jinja.h) as vLLM renders it: the messages,
 * `tools`, `add_generation_prompt`, `bos_token`, `eos_token` and the request's
 * chat_template_kwargs are its variables. The family of the template is still recognised
 * by its marker tokens, for the tokens that end an assistant turn.
 *
 * Five families are also rendered by C code, the fallback for a model without a template
 * (or --chat-template NAME):
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

#include <jansson.h>

#include "server/api_parse.h"
#include "server/jinja.h"

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
    tm_chat_format format;      /* family (end tokens; the C renderer when jinja is NULL) */
    char default_system[512];   /* chatml: system text used when none is given, or "" */
    tm_jinja *jinja;            /* the Jinja template, or NULL: owned by whoever filled the
                                   struct (tm_chat_template_deinit); copies borrow it */
    char bos_token[64];         /* the template's bos_token and eos_token ("" if none) */
    char eos_token[64];
} tm_chat_template;

/* Parses a Jinja template (len bytes) into t (family detected from its text when
 * possible, TM_CHAT_UNKNOWN otherwise); bos/eos are the tokenizer's texts (may be NULL).
 * TM_EINVAL with err (the template does not parse). */
int tm_chat_template_from_jinja(const char *src, size_t len, const char *bos, const char *eos,
                                tm_chat_template *t, char *err, size_t err_len);
/* Frees t->jinja (t itself is the caller's). */
void tm_chat_template_deinit(tm_chat_template *t);

/* Renders a conversation for the model: with t->jinja, the template over conversation
 * (a JSON array of {role, content, [tool_calls], [tool_call_id], [name]}), tools (JSON
 * array or NULL) and kwargs (extra variables, or NULL), with add_generation_prompt on;
 * without it, the family's C renderer over msgs (n). *out is malloc'd text of *out_len
 * bytes. Fails with TM_EINVAL and err; *raised (may be NULL) is set when the template
 * itself called raise_exception (err is then its message). */
int tm_chat_template_render_conversation(const tm_chat_template *t, const tm_api_message *msgs,
                                         int n, const json_t *conversation, const json_t *tools,
                                         const json_t *kwargs, char **out, size_t *out_len,
                                         int *raised, char *err, size_t err_len);

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
