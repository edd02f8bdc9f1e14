/* api_parse_chat.c - the chat-only fields of a request: messages (as the C renderer's
 * list and as the conversation the Jinja template sees), tools, tool_choice and
 * chat_template_kwargs.
 *
 * The conversation is what vLLM passes to the template: content as one string (text parts
 * joined with "\n", null content as ""), assistant tool_calls with their arguments parsed
 * from JSON text into objects, tool_call_id on tool messages, name when given. Tools are
 * passed as {"type": "function", "function": {"name", "description", "parameters"}}, absent
 * fields as null (pydantic's model_dump). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "server/api_parse_internal.h"

/* content: a string, or a list of {"type":"text","text":...} parts joined with "\n". */
static int parse_content(pctx *x, json_t *c, tm_api_role role, char **out, json_t **text) {
    if (!c) {
        if (role != TM_ROLE_ASSISTANT) return FAIL(x, "messages", "message 'content' is required");
        *text = json_string("");
        return (*out = strdup("")) && *text ? 0 : TM_ENOMEM;
    }
    if (json_is_string(c)) {
        *text = json_incref(c);
        return (*out = strdup(json_string_value(c))) ? 0 : TM_ENOMEM;
    }
    if (!json_is_array(c))
        return FAIL(x, "messages", "message 'content' must be a string or a list of text parts");
    size_t total = 1, i;
    json_t *part;
    json_array_foreach(c, i, part) {
        json_t *type = json_object_get(part, "type"), *t = json_object_get(part, "text");
        if (!json_is_string(type) || strcmp(json_string_value(type), "text") != 0)
            return FAIL(x, "messages", "only content parts of type 'text' are supported");
        if (!json_is_string(t)) return FAIL(x, "messages", "a text content part needs a string 'text'");
        total += json_string_length(t) + 1;
    }
    char *s = malloc(total), *w = s;
    if (!s) return TM_ENOMEM;
    json_array_foreach(c, i, part) {
        json_t *t = json_object_get(part, "text");
        if (i) *w++ = '\n';
        memcpy(w, json_string_value(t), json_string_length(t));
        w += json_string_length(t);
    }
    *w = 0;
    *text = json_stringn(s, (size_t)(w - s));
    *out = s;
    return *text ? 0 : TM_ENOMEM;
}

/* An assistant message's tool_calls, with each function's arguments parsed. */
static int parse_tool_calls(pctx *x, json_t *calls, json_t **out) {
    if (!json_is_array(calls)) return FAIL(x, "messages", "'tool_calls' must be a list");
    json_t *list = json_array();
    *out = list;
    size_t i;
    json_t *c;
    json_array_foreach(calls, i, c) {
        json_t *fn = json_object_get(c, "function"), *id = json_object_get(c, "id");
        json_t *name = json_object_get(fn, "name"), *args = json_object_get(fn, "arguments");
        if (!json_is_object(c) || !json_is_object(fn) || !json_is_string(name))
            return FAIL(x, "messages", "each tool call needs a 'function' with a string 'name'");
        if (id && !json_is_null(id) && !json_is_string(id))
            return FAIL(x, "messages", "a tool call 'id' must be a string");
        json_t *parsed;
        if (json_is_string(args)) {
            json_error_t je;
            parsed = json_loadb(json_string_value(args), json_string_length(args),
                                JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
            if (!parsed)
                return FAIL(x, "messages", "the arguments of tool call '%.100s' are not valid JSON: %s",
                            json_string_value(name), je.text);
        } else if (json_is_object(args)) {
            parsed = json_incref(args);
        } else {
            return FAIL(x, "messages", "a tool call's 'arguments' must be a JSON string");
        }
        json_t *item = json_pack("{s:O?, s:s, s:{s:O, s:o}}", "id", id, "type", "function", "function",
                                 "name", name, "arguments", parsed);
        if (!item || json_array_append_new(list, item)) return TM_ENOMEM;
    }
    return 0;
}

static int parse_role(pctx *x, json_t *r, tm_api_role *role, const char **name) {
    if (!json_is_string(r)) return FAIL(x, "messages", "each message needs a string 'role'");
    const char *rs = json_string_value(r);
    if (!strcmp(rs, "system") || !strcmp(rs, "developer")) *role = TM_ROLE_SYSTEM, *name = "system";
    else if (!strcmp(rs, "user")) *role = TM_ROLE_USER, *name = "user";
    else if (!strcmp(rs, "assistant")) *role = TM_ROLE_ASSISTANT, *name = "assistant";
    else if (!strcmp(rs, "tool")) *role = TM_ROLE_TOOL, *name = "tool";
    else return FAIL(x, "messages", "message role must be system, developer, user, assistant or tool");
    return 0;
}

int tm_api_parse_messages(pctx *x, tm_api_params *p) {
    json_t *v = get(x, "messages");
    if (!v) return FAIL(x, "messages", "'messages' is required");
    if (!json_is_array(v)) return FAIL(x, "messages", "'messages' must be a list");
    size_t n = json_array_size(v);
    if (n == 0) return FAIL(x, "messages", "'messages' must not be empty");
    p->messages = calloc(n, sizeof *p->messages);
    p->conversation = json_array();
    if (!p->messages || !p->conversation) return TM_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(v, i);
        if (!json_is_object(m)) return FAIL(x, "messages", "each message must be an object");
        tm_api_role role = TM_ROLE_USER;
        const char *role_name = "user";
        int rc;
        if ((rc = parse_role(x, json_object_get(m, "role"), &role, &role_name))) return rc;
        p->messages[i].role = role;
        json_t *c = json_object_get(m, "content"), *text = NULL;
        rc = parse_content(x, json_is_null(c) ? NULL : c, role, &p->messages[i].content, &text);
        p->n_messages = (int)i + 1;
        json_t *msg = json_pack("{s:s, s:o}", "role", role_name, "content", text ? text : json_null());
        if (!msg || json_array_append_new(p->conversation, msg)) return TM_ENOMEM;
        if (rc) return rc;
        json_t *calls = json_object_get(m, "tool_calls"), *call_id = json_object_get(m, "tool_call_id");
        json_t *name = json_object_get(m, "name");
        if (role == TM_ROLE_ASSISTANT && calls && !json_is_null(calls)) {
            json_t *list = NULL;
            rc = parse_tool_calls(x, calls, &list);
            if (list) json_object_set_new(msg, "tool_calls", list);
            if (rc) return rc;
        }
        if (role == TM_ROLE_TOOL) {
            if (call_id && !json_is_null(call_id) && !json_is_string(call_id))
                return FAIL(x, "messages", "'tool_call_id' must be a string");
            if (json_is_string(call_id)) json_object_set(msg, "tool_call_id", call_id);
        }
        if (json_is_string(name)) json_object_set(msg, "name", name);
    }
    return 0;
}

/* ---- tools ---- */

int tm_api_parse_tools(pctx *x, tm_api_params *p) {
    json_t *v = get(x, "tools");
    if (v && !json_is_array(v)) return FAIL(x, "tools", "'tools' must be a list of tools");
    if (v && json_array_size(v) > 0) {
        p->tools = json_array();
        if (!p->tools) return TM_ENOMEM;
        size_t i;
        json_t *t;
        json_array_foreach(v, i, t) {
            json_t *type = json_object_get(t, "type"), *fn = json_object_get(t, "function");
            if (!json_is_object(t) || !json_is_string(type) || strcmp(json_string_value(type), "function"))
                return FAIL(x, "tools", "tools[%zu]: 'type' must be \"function\"", i);
            if (!json_is_object(fn)) return FAIL(x, "tools", "tools[%zu]: 'function' must be an object", i);
            json_t *name = json_object_get(fn, "name"), *desc = json_object_get(fn, "description");
            json_t *params = json_object_get(fn, "parameters");
            if (!json_is_string(name) || json_string_length(name) == 0)
                return FAIL(x, "tools", "tools[%zu].function.name is required (a non-empty string)", i);
            if (desc && !json_is_null(desc) && !json_is_string(desc))
                return FAIL(x, "tools", "tools[%zu].function.description must be a string", i);
            if (params && !json_is_null(params) && !json_is_object(params))
                return FAIL(x, "tools", "tools[%zu].function.parameters must be a JSON Schema object", i);
            json_t *strict = json_object_get(fn, "strict");
            if (strict && !json_is_null(strict) && !json_is_boolean(strict))
                return FAIL(x, "tools", "tools[%zu].function.strict must be a boolean", i);
            json_t *d = json_pack("{s:s, s:{s:O, s:O?, s:O?}}", "type", "function", "function", "name",
                                  name, "description", desc, "parameters", params);
            if (!d || json_array_append_new(p->tools, d)) return TM_ENOMEM;
        }
        p->tool_specs = json_incref(v); /* strict is not passed to the template, as in vLLM */
    }
    json_t *ptc = get(x, "parallel_tool_calls");
    if (ptc && !json_is_boolean(ptc)) return FAIL(x, "parallel_tool_calls", "'parallel_tool_calls' must be a boolean");
    p->parallel_tool_calls = !json_is_false(ptc);
    /* tool_choice: "none" | "auto" | "required" | {"type": "function", "function": {"name"}} */
    json_t *tc = get(x, "tool_choice");
    p->tool_choice = p->tools ? TM_TOOL_AUTO : TM_TOOL_NONE;
    if (!tc) return 0;
    if (json_is_string(tc)) {
        const char *s = json_string_value(tc);
        if (!strcmp(s, "none")) p->tool_choice = TM_TOOL_NONE;
        else if (!strcmp(s, "auto")) p->tool_choice = TM_TOOL_AUTO;
        else if (!strcmp(s, "required")) p->tool_choice = TM_TOOL_REQUIRED;
        else return FAIL(x, "tool_choice", "'tool_choice' must be \"none\", \"auto\", \"required\" or "
                                           "{\"type\": \"function\", \"function\": {\"name\": ...}}");
    } else {
        json_t *fn = json_object_get(tc, "function"), *name = json_object_get(fn, "name");
        if (!json_is_object(tc) || !json_is_string(name))
            return FAIL(x, "tool_choice", "a named 'tool_choice' must be {\"type\": \"function\", "
                                          "\"function\": {\"name\": ...}}");
        p->tool_choice = TM_TOOL_NAMED;
        if (!(p->tool_choice_name = strdup(json_string_value(name)))) return TM_ENOMEM;
    }
    if (p->tool_choice != TM_TOOL_NONE && !v) /* as vLLM: an empty list counts as set */
        return FAIL(x, "tool_choice", "When using `tool_choice`, `tools` must be set.");
    if (p->tool_choice != TM_TOOL_NAMED && !p->tools) p->tool_choice = TM_TOOL_NONE;
    if (p->tool_choice == TM_TOOL_NAMED) {
        size_t i;
        json_t *t;
        json_array_foreach(p->tools, i, t)
            if (!strcmp(json_string_value(json_object_get(json_object_get(t, "function"), "name")),
                        p->tool_choice_name))
                return 0;
        return FAIL(x, "tool_choice", "Tool '%.200s' has not been passed in `tools`.", p->tool_choice_name);
    }
    return 0;
}

int tm_api_parse_template_kwargs(pctx *x, tm_api_params *p) {
    json_t *v = get(x, "chat_template_kwargs");
    if (!v) return 0;
    if (!json_is_object(v)) return FAIL(x, "chat_template_kwargs", "'chat_template_kwargs' must be an object");
    p->template_kwargs = json_deep_copy(v);
    return p->template_kwargs ? 0 : TM_ENOMEM;
}
