/* chat_template.c - template family detection and rendering. See chat_template.h. */
#include "server/chat_template.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"

static const struct {
    const char *name;
    tm_chat_format format;
} k_names[] = {
    {"chatml", TM_CHAT_CHATML}, {"llama3", TM_CHAT_LLAMA3}, {"llama2", TM_CHAT_LLAMA2},
    {"mistral", TM_CHAT_MISTRAL}, {"gemma", TM_CHAT_GEMMA},
};

const char *tm_chat_format_name(tm_chat_format f) {
    for (size_t i = 0; i < TM_ARRAY_LEN(k_names); i++)
        if (k_names[i].format == f) return k_names[i].name;
    return "unknown";
}

int tm_chat_template_from_name(const char *name, tm_chat_template *out) {
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < TM_ARRAY_LEN(k_names); i++)
        if (!strcmp(k_names[i].name, name)) {
            out->format = k_names[i].format;
            return 0;
        }
    return TM_ENOTFOUND;
}

/* ChatML templates of SmolLM2 and Qwen2 write a literal default system turn, e.g.
 * '<|im_start|>system\nYou are ...<|im_end|>\n', when messages[0] is not a system one.
 * Copies its text (with Jinja's \n escapes undone) into out, or leaves out empty. */
static void chatml_default_system(const char *jinja, char *out, size_t cap) {
    out[0] = 0;
    if (!strstr(jinja, "!= 'system'") && !strstr(jinja, "!= \"system\"")) return;
    const char *marks[] = {"<|im_start|>system\\n", "<|im_start|>system\n"};
    for (int m = 0; m < 2; m++) {
        const char *p = strstr(jinja, marks[m]);
        if (!p) continue;
        p += strlen(marks[m]);
        const char *end = strstr(p, "<|im_end|>");
        if (!end) return;
        /* Only a literal: a Jinja expression ({{, ', +) here means the text is computed. */
        size_t n = 0;
        for (const char *q = p; q < end && n + 1 < cap; q++) {
            if (*q == '\'' || *q == '"' || *q == '{' || *q == '}') {
                out[0] = 0;
                return;
            }
            if (q[0] == '\\' && q + 1 < end && q[1] == 'n') {
                out[n++] = '\n';
                q++;
            } else {
                out[n++] = *q;
            }
        }
        out[n] = 0;
        return;
    }
}

int tm_chat_template_detect(const char *jinja, tm_chat_template *out, char *err,
                            size_t err_len) {
    memset(out, 0, sizeof *out);
    if (!jinja || !*jinja)
        return tm_fail(err, err_len, TM_EUNSUPPORTED,
                       "the model has no chat template; pass --chat-template "
                       "chatml|llama3|llama2|mistral|gemma");
    if (strstr(jinja, "<|im_start|>")) {
        out->format = TM_CHAT_CHATML;
        chatml_default_system(jinja, out->default_system, sizeof out->default_system);
    } else if (strstr(jinja, "<|start_header_id|>")) {
        out->format = TM_CHAT_LLAMA3;
    } else if (strstr(jinja, "<start_of_turn>")) {
        out->format = TM_CHAT_GEMMA;
    } else if (strstr(jinja, "[INST]")) {
        out->format = strstr(jinja, "<<SYS>>") ? TM_CHAT_LLAMA2 : TM_CHAT_MISTRAL;
    } else {
        return tm_fail(err, err_len, TM_EUNSUPPORTED,
                       "unrecognised chat template (not ChatML, Llama 3, Llama 2/Mistral or "
                       "Gemma); pass --chat-template chatml|llama3|llama2|mistral|gemma");
    }
    return 0;
}

const char *const *tm_chat_template_end_tokens(tm_chat_format f) {
    static const char *const chatml[] = {"<|im_end|>", NULL};
    static const char *const llama3[] = {"<|eot_id|>", "<|eom_id|>", NULL};
    static const char *const llama2[] = {"</s>", NULL};
    static const char *const gemma[] = {"<end_of_turn>", NULL};
    static const char *const none[] = {NULL};
    switch (f) {
    case TM_CHAT_CHATML: return chatml;
    case TM_CHAT_LLAMA3: return llama3;
    case TM_CHAT_LLAMA2:
    case TM_CHAT_MISTRAL: return llama2;
    case TM_CHAT_GEMMA: return gemma;
    default: return none;
    }
}

/* ---- rendering ---- */

typedef struct sbuf {
    char *p;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_add(sbuf *b, const char *s) {
    size_t n = strlen(s);
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 1024;
        while (cap < b->n + n + 1) cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n + 1);
    b->n += n;
}

static const char *role_name(tm_api_role r, int gemma) {
    if (r == TM_ROLE_SYSTEM) return "system";
    if (r == TM_ROLE_USER) return "user";
    return gemma ? "model" : "assistant";
}

static void render_chatml(const tm_chat_template *t, const tm_api_message *m, int n, sbuf *b) {
    if (t->default_system[0] && m[0].role != TM_ROLE_SYSTEM) {
        sb_add(b, "<|im_start|>system\n");
        sb_add(b, t->default_system);
        sb_add(b, "<|im_end|>\n");
    }
    for (int i = 0; i < n; i++) {
        sb_add(b, "<|im_start|>"), sb_add(b, role_name(m[i].role, 0)), sb_add(b, "\n");
        sb_add(b, m[i].content), sb_add(b, "<|im_end|>\n");
    }
    sb_add(b, "<|im_start|>assistant\n");
}

static void render_llama3(const tm_api_message *m, int n, sbuf *b) {
    for (int i = 0; i < n; i++) {
        sb_add(b, "<|start_header_id|>"), sb_add(b, role_name(m[i].role, 0));
        sb_add(b, "<|end_header_id|>\n\n"), sb_add(b, m[i].content), sb_add(b, "<|eot_id|>");
    }
    sb_add(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

/* Llama 2 / Mistral / Gemma have no system turn: system text is folded into the first
 * user turn (Llama 2 inside <<SYS>>, the others as a paragraph before it). */
static int render_inst(const tm_chat_template *t, const tm_api_message *m, int n, sbuf *b,
                       char *err, size_t err_len) {
    const char *sys = NULL;
    int first_user = 1, gemma = t->format == TM_CHAT_GEMMA, saw_user = 0;
    for (int i = 0; i < n; i++) {
        if (m[i].role == TM_ROLE_SYSTEM) {
            if (sys || saw_user)
                return tm_fail(err, err_len, TM_EINVAL, "the %s chat format takes one system "
                               "message, before the first user message",
                               tm_chat_format_name(t->format));
            sys = m[i].content;
            continue;
        }
        if (m[i].role == TM_ROLE_USER) {
            saw_user = 1;
            if (gemma) sb_add(b, "<start_of_turn>user\n");
            else sb_add(b, first_user ? "[INST] " : "<s>[INST] ");
            if (first_user && sys) {
                if (t->format == TM_CHAT_LLAMA2)
                    sb_add(b, "<<SYS>>\n"), sb_add(b, sys), sb_add(b, "\n<</SYS>>\n\n");
                else
                    sb_add(b, sys), sb_add(b, "\n\n");
            }
            first_user = 0;
            sb_add(b, m[i].content);
            sb_add(b, gemma ? "<end_of_turn>\n" : " [/INST]");
        } else {
            if (gemma) {
                sb_add(b, "<start_of_turn>model\n"), sb_add(b, m[i].content);
                sb_add(b, "<end_of_turn>\n");
            } else {
                sb_add(b, " "), sb_add(b, m[i].content), sb_add(b, " </s>");
            }
        }
    }
    if (!saw_user)
        return tm_fail(err, err_len, TM_EINVAL, "the %s chat format needs a user message",
                       tm_chat_format_name(t->format));
    if (gemma) sb_add(b, "<start_of_turn>model\n");
    return 0;
}

int tm_chat_template_render(const tm_chat_template *t, const tm_api_message *msgs, int n,
                            char **out, char *err, size_t err_len) {
    sbuf b = {0};
    int rc = 0;
    *out = NULL;
    if (n <= 0) return tm_fail(err, err_len, TM_EINVAL, "no messages");
    switch (t->format) {
    case TM_CHAT_CHATML: render_chatml(t, msgs, n, &b); break;
    case TM_CHAT_LLAMA3: render_llama3(msgs, n, &b); break;
    case TM_CHAT_LLAMA2:
    case TM_CHAT_MISTRAL:
    case TM_CHAT_GEMMA: rc = render_inst(t, msgs, n, &b, err, err_len); break;
    default: rc = tm_fail(err, err_len, TM_EINVAL, "no chat template");
    }
    if (!rc && b.oom) rc = tm_fail(err, err_len, TM_ENOMEM, "out of memory");
    if (rc) {
        free(b.p);
        return rc;
    }
    *out = b.p;
    return 0;
}

/* ---- Jinja templates ---- */

int tm_chat_template_from_jinja(const char *src, size_t len, const char *bos, const char *eos,
                                tm_chat_template *t, char *err, size_t err_len) {
    memset(t, 0, sizeof *t);
    /* the family (for end tokens) when the text shows one; any template renders anyway */
    char *text = malloc(len + 1);
    if (!text) return tm_fail(err, err_len, TM_ENOMEM, "out of memory");
    memcpy(text, src, len);
    text[len] = 0;
    char ignored[256];
    if (tm_chat_template_detect(text, t, ignored, sizeof ignored)) t->format = TM_CHAT_UNKNOWN;
    free(text);
    snprintf(t->bos_token, sizeof t->bos_token, "%s", bos ? bos : "");
    snprintf(t->eos_token, sizeof t->eos_token, "%s", eos ? eos : "");
    char why[400];
    int rc = tm_jinja_parse(src, len, NULL, &t->jinja, why, sizeof why);
    if (rc) return tm_fail(err, err_len, rc, "the chat template does not parse: %s", why);
    return 0;
}

void tm_chat_template_deinit(tm_chat_template *t) {
    tm_jinja_destroy(t->jinja);
    t->jinja = NULL;
}

static int render_jinja(const tm_chat_template *t, const json_t *conversation, const json_t *tools,
                        const json_t *kwargs, char **out, size_t *out_len, int *raised, char *err,
                        size_t err_len) {
    json_t *vars = json_object();
    if (!vars) return tm_fail(err, err_len, TM_ENOMEM, "out of memory");
    /* kwargs first: the request may not replace what the server passes */
    if (kwargs) json_object_update(vars, (json_t *)kwargs);
    json_object_set(vars, "messages", (json_t *)conversation);
    json_object_set_new(vars, "tools", tools ? json_incref((json_t *)tools) : json_null());
    json_object_set_new(vars, "documents", json_null());
    json_object_set_new(vars, "add_generation_prompt", json_true());
    json_object_set_new(vars, "bos_token", json_string(t->bos_token));
    json_object_set_new(vars, "eos_token", json_string(t->eos_token));
    tm_jinja_failure why = TM_JINJA_OK;
    char msg[400] = "";
    int rc = tm_jinja_render(t->jinja, vars, NULL, NULL, out, out_len, &why, msg, sizeof msg);
    json_decref(vars);
    if (raised) *raised = why == TM_JINJA_RAISED;
    if (rc == 0) return 0;
    if (why == TM_JINJA_RAISED) return tm_fail(err, err_len, TM_EINVAL, "%s", msg);
    return tm_fail(err, err_len, rc == TM_ENOMEM ? TM_ENOMEM : TM_EINVAL,
                   "the chat template failed on this conversation: %s", msg);
}

int tm_chat_template_render_conversation(const tm_chat_template *t, const tm_api_message *msgs,
                                         int n, const json_t *conversation, const json_t *tools,
                                         const json_t *kwargs, char **out, size_t *out_len,
                                         int *raised, char *err, size_t err_len) {
    if (raised) *raised = 0;
    if (t->jinja) return render_jinja(t, conversation, tools, kwargs, out, out_len, raised, err, err_len);
    for (int i = 0; i < n; i++)
        if (msgs[i].role == TM_ROLE_TOOL)
            return tm_fail(err, err_len, TM_EINVAL, "the built-in %s chat format cannot express tool "
                           "messages; serve the model with its own Jinja chat template",
                           tm_chat_format_name(t->format));
    int rc = tm_chat_template_render(t, msgs, n, out, err, err_len);
    if (rc == 0) *out_len = strlen(*out);
    return rc;
}
