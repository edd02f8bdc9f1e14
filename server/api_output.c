/* api_output.c - engine events -> OpenAI responses: SSE chunks while streaming, one JSON
 * body otherwise; metrics and the access log line at the end of each request. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "models/tokenizer.h"
#include "server/api_internal.h"

static const char *finish_name(tm_finish f) {
    switch (f) {
    case TM_FINISH_STOP: return "stop";
    case TM_FINISH_LENGTH: return "length";
    case TM_FINISH_ABORT: return "abort";
    default: return NULL;
    }
}

/* ---- logprobs ---- */

static json_t *token_json(const tm_api *a, int32_t id) {
    size_t len = 0;
    const char *p = tm_tokenizer_piece(a->tok, id, &len);
    return tm_json_text(p, len);
}

static json_t *token_bytes(const tm_api *a, int32_t id) {
    size_t len = 0;
    const char *p = tm_tokenizer_piece(a->tok, id, &len);
    json_t *arr = json_array();
    for (size_t i = 0; i < len; i++) json_array_append_new(arr, json_integer((unsigned char)p[i]));
    return arr;
}

/* Chat format: {"content":[{"token","logprob","bytes","top_logprobs":[...]}]}. */
static json_t *chat_lp_entry(const tm_api *a, const tm_event *ev) {
    json_t *top = json_array();
    for (int i = 0; i < ev->n_top; i++)
        json_array_append_new(top, json_pack("{s:o, s:f, s:o}", "token", token_json(a, ev->top_ids[i]),
                                             "logprob", (double)ev->top_logprobs[i], "bytes",
                                             token_bytes(a, ev->top_ids[i])));
    return json_pack("{s:o, s:f, s:o, s:o}", "token", token_json(a, ev->token), "logprob",
                     (double)ev->logprob, "bytes", token_bytes(a, ev->token), "top_logprobs", top);
}

/* Appends ev's token to a logprobs object of the job's format (created on first use). */
static void lp_append(tm_job *j, json_t **lp, const tm_event *ev, size_t text_offset) {
    const tm_api *a = j->api;
    if (j->kind == TM_API_CHAT) {
        if (!*lp) *lp = json_pack("{s:[]}", "content");
        json_array_append_new(json_object_get(*lp, "content"), chat_lp_entry(a, ev));
        return;
    }
    if (!*lp)
        *lp = json_pack("{s:[], s:[], s:[], s:[]}", "tokens", "token_logprobs", "top_logprobs",
                        "text_offset");
    json_array_append_new(json_object_get(*lp, "tokens"), token_json(a, ev->token));
    json_array_append_new(json_object_get(*lp, "token_logprobs"), json_real(ev->logprob));
    json_t *top = json_object();
    for (int i = 0; i < ev->n_top; i++) {
        size_t len = 0;
        const char *p = tm_tokenizer_piece(a->tok, ev->top_ids[i], &len);
        json_t *key = tm_json_text(p, len);
        json_object_set_new(top, json_string_value(key), json_real(ev->top_logprobs[i]));
        json_decref(key);
    }
    json_array_append_new(json_object_get(*lp, "top_logprobs"), top);
    json_array_append_new(json_object_get(*lp, "text_offset"), json_integer((json_int_t)text_offset));
}

/* ---- shapes ---- */

static json_t *usage_json(int prompt, int completion, int cached) {
    return json_pack("{s:i, s:i, s:i, s:{s:i}}", "prompt_tokens", prompt, "completion_tokens",
                     completion, "total_tokens", prompt + completion, "prompt_tokens_details",
                     "cached_tokens", cached);
}

/* A chunk or response envelope with one choice. */
static json_t *envelope(const tm_job *j, const char *object, json_t *choice) {
    json_t *choices = json_array();
    if (choice) json_array_append_new(choices, choice);
    return json_pack("{s:s, s:s, s:I, s:s, s:o}", "id", j->id, "object", object, "created",
                     (json_int_t)j->created, "model", j->api->model_name, "choices", choices);
}

static void send_sse(tm_job *j, json_t *chunk) {
    if (!j->req) { /* the client went away during this response */
        json_decref(chunk);
        return;
    }
    if (j->include_usage && !json_object_get(chunk, "usage"))
        json_object_set_new(chunk, "usage", json_null());
    char *s = json_dumps(chunk, JSON_COMPACT);
    json_decref(chunk);
    if (!s) return;
    size_t n = strlen(s);
    char *msg = malloc(n + 8);
    if (msg) {
        memcpy(msg, "data: ", 6);
        memcpy(msg + 6, s, n);
        memcpy(msg + 6 + n, "\n\n", 2);
        /* a failed write closes the connection; on_gone then clears j->req */
        tm_http_stream_write(j->req->conn, msg, n + 8);
        free(msg);
    }
    free(s);
}

static json_t *stream_choice(const tm_job *j, json_t *delta_or_text, json_t *lp, const char *finish) {
    json_t *fin = finish ? json_string(finish) : json_null();
    if (!lp) lp = json_null();
    if (j->kind == TM_API_CHAT)
        return json_pack("{s:i, s:o, s:o, s:o}", "index", j->index, "delta", delta_or_text, "logprobs",
                         lp, "finish_reason", fin);
    return json_pack("{s:i, s:o, s:o, s:o}", "index", j->index, "text", delta_or_text, "logprobs", lp,
                     "finish_reason", fin);
}

static const char *chunk_object(const tm_job *j) {
    return j->kind == TM_API_CHAT ? "chat.completion.chunk" : "text_completion";
}

void tm_job_stream_start(tm_job *j) {
    tm_http_stream_begin(j->req->conn, 200, "text/event-stream");
    if (j->kind != TM_API_CHAT) return;
    /* a role chunk for every choice (those of a group share the request's id) */
    int n = j->group ? j->group->n : 1;
    for (int i = 0; i < n; i++) {
        tm_job *m = j->group ? j->group->jobs[i] : j;
        json_t *delta = json_pack("{s:s, s:s}", "role", "assistant", "content", "");
        send_sse(j, envelope(j, chunk_object(j), stream_choice(m, delta, NULL, NULL)));
    }
}

/* The first delta of a streamed tool call: its index, id, type and name, no arguments. */
static void stream_tool_head(tm_job *j, int index, const char *id, const char *name) {
    json_t *first = json_pack("{s:[{s:i, s:s, s:s, s:{s:s, s:s}}]}", "tool_calls", "index", index,
                              "id", id, "type", "function", "function", "name", name, "arguments", "");
    send_sse(j, envelope(j, chunk_object(j), stream_choice(j, first, NULL, NULL)));
    j->tool_finish = 1;
}

/* A fragment of a streamed call's arguments (clients concatenate them), with lp if any. */
static void stream_tool_args(tm_job *j, int index, const char *text, size_t n, json_t *lp) {
    json_t *args = json_pack("{s:[{s:i, s:{s:o}}]}", "tool_calls", "index", index, "function",
                             "arguments", tm_json_text(text, n));
    send_sse(j, envelope(j, chunk_object(j), stream_choice(j, args, lp, NULL)));
}

/* The id of a named tool_choice's call (one per choice). */
static void named_call_id(const tm_job *j, char *id, size_t cap) {
    snprintf(id, cap, "chatcmpl-tool-%s", j->id + 9);
}

/* Streams a text delta through the tool parser: content as content, calls as tool_calls,
 * and the token's logprobs (if asked) with the first chunk. */
static void stream_through_tools(tm_job *j, const char *text, size_t n, int final, json_t *lp) {
    tm_tool_delta *d = NULL;
    int nd = 0;
    if (tm_tool_parser_feed(j->tools, text, n, final, &d, &nd) != 0) nd = 0;
    for (int i = 0; i < nd; i++) {
        if (d[i].is_call) {
            if (d[i].name) stream_tool_head(j, d[i].index, d[i].id, d[i].name);
            if (*d[i].arguments) stream_tool_args(j, d[i].index, d[i].arguments, strlen(d[i].arguments), NULL);
        } else {
            json_t *body = json_pack("{s:o}", "content", tm_json_text(d[i].text, d[i].text_len));
            send_sse(j, envelope(j, chunk_object(j), stream_choice(j, body, lp, NULL)));
            lp = NULL;
        }
        tm_tool_delta_free(&d[i]);
    }
    free(d);
    if (lp) /* the text was held back: the logprobs go alone */
        send_sse(j, envelope(j, chunk_object(j), stream_choice(j, json_object(), lp, NULL)));
}

static void stream_delta(tm_job *j, const tm_event *ev) {
    json_t *lp = NULL;
    if (j->tool_named) { /* the output is the arguments: streamed as they come */
        if (j->logprobs && ev->token >= 0) lp_append(j, &lp, ev, 0);
        if (!j->tool_finish) {
            char id[48];
            named_call_id(j, id, sizeof id);
            stream_tool_head(j, 0, id, j->tool_named);
        }
        stream_tool_args(j, 0, ev->text ? ev->text : "", ev->text_len, lp);
        return;
    }
    if (j->tools) {
        if (j->logprobs && ev->token >= 0) lp_append(j, &lp, ev, j->text_len);
        stream_through_tools(j, ev->text ? ev->text : "", ev->text_len, 0, lp);
        return;
    }
    if (j->logprobs && ev->token >= 0) lp_append(j, &lp, ev, j->text_len);
    j->text_len += ev->text_len; /* running offset for completions' text_offset */
    json_t *text = tm_json_text(ev->text ? ev->text : "", ev->text_len);
    json_t *body = j->kind == TM_API_CHAT ? json_pack("{s:o}", "content", text) : text;
    send_sse(j, envelope(j, chunk_object(j), stream_choice(j, body, lp, NULL)));
}

static const char *finish_of(const tm_job *j, const tm_event *ev) {
    return j->tool_finish && ev->finish == TM_FINISH_STOP ? "tool_calls" : finish_name(ev->finish);
}

static void stream_finish(tm_job *j, const tm_event *ev) {
    if (j->tools) stream_through_tools(j, "", 0, 1, NULL); /* what was held back */
    if (j->tool_named && !j->tool_finish) { /* no output at all: the call, with empty arguments */
        char id[48];
        named_call_id(j, id, sizeof id);
        stream_tool_head(j, 0, id, j->tool_named);
    }
    json_t *body = j->kind == TM_API_CHAT ? json_object() : json_string("");
    send_sse(j, envelope(j, chunk_object(j), stream_choice(j, body, NULL, finish_of(j, ev))));
    tm_group *g = j->group;
    if (g && g->n_finished < g->n) return; /* the last choice ends the stream */
    if (j->include_usage) {
        json_t *u = envelope(j, chunk_object(j), NULL);
        json_object_set_new(u, "usage", g ? usage_json(g->prompt_tokens, g->completion_tokens, g->cached_tokens)
                                          : usage_json(ev->prompt_tokens, ev->completion_tokens,
                                                       ev->cached_tokens));
        send_sse(j, u);
    }
    if (j->req) tm_http_stream_write(j->req->conn, "data: [DONE]\n\n", 14);
    if (j->req) tm_http_stream_end(j->req->conn);
}

/* The tool calls of a finished, non-streamed chat (NULL when tools were not asked for);
 * *content becomes the text left around them (null when there is none). */
static json_t *tool_calls_of(tm_job *j, json_t **content) {
    if (!j->tools && !j->tool_named) return NULL;
    json_t *calls = json_array();
    if (j->tool_named) { /* the whole output is the named function's arguments (vLLM's shape) */
        char id[48];
        named_call_id(j, id, sizeof id);
        json_array_append_new(calls, json_pack("{s:s, s:s, s:{s:s, s:o}}", "id", id, "type", "function",
                                               "function", "name", j->tool_named, "arguments", *content));
        *content = json_string("");
        j->tool_finish = 1;
        return calls;
    }
    tm_tool_delta *d = NULL;
    int nd = 0;
    if (tm_tool_parser_feed(j->tools, j->text ? j->text : "", j->text_len, 1, &d, &nd) != 0) nd = 0;
    char *text = NULL;
    size_t len = 0;
    for (int i = 0; i < nd; i++) {
        json_t *last = json_array_get(calls, json_array_size(calls) - 1);
        if (d[i].is_call && !d[i].name && last) { /* more of the last call's arguments */
            json_t *fn = json_object_get(last, "function");
            size_t had = json_string_length(json_object_get(fn, "arguments"));
            char *all = malloc(had + strlen(d[i].arguments) + 1);
            if (all) {
                memcpy(all, json_string_value(json_object_get(fn, "arguments")), had);
                strcpy(all + had, d[i].arguments);
                json_object_set_new(fn, "arguments", tm_json_text(all, strlen(all)));
                free(all);
            }
        } else if (d[i].is_call && d[i].name) {
            json_array_append_new(calls, json_pack("{s:s, s:s, s:{s:s, s:o}}", "id", d[i].id, "type",
                                                   "function", "function", "name", d[i].name, "arguments",
                                                   tm_json_text(d[i].arguments, strlen(d[i].arguments))));
            j->tool_finish = 1;
        } else if (!d[i].is_call) {
            char *q = realloc(text, len + d[i].text_len + 1);
            if (q) memcpy(q + len, d[i].text, d[i].text_len), len += d[i].text_len, q[len] = 0, text = q;
        }
        tm_tool_delta_free(&d[i]);
    }
    free(d);
    if (j->tool_finish) { /* the content is what is left around the calls */
        json_decref(*content);
        *content = len ? tm_json_text(text, len) : json_null();
    }
    free(text);
    return calls;
}

/* The finished choice of j, as the non-streamed answer lists it. */
static json_t *choice_json(tm_job *j, const tm_event *ev) {
    json_t *text = tm_json_text(j->text ? j->text : "", j->text_len);
    json_t *lp = j->lp ? j->lp : json_null();
    j->lp = NULL;
    json_t *calls = j->kind == TM_API_CHAT ? tool_calls_of(j, &text) : NULL;
    json_t *choice;
    if (j->kind == TM_API_CHAT)
        choice = json_pack("{s:i, s:{s:s, s:o, s:o}, s:o, s:s}", "index", j->index, "message", "role",
                           "assistant", "content", text, "tool_calls", calls ? calls : json_array(),
                           "logprobs", lp, "finish_reason", finish_of(j, ev));
    else
        choice = json_pack("{s:i, s:o, s:o, s:s}", "index", j->index, "text", text, "logprobs", lp,
                           "finish_reason", finish_name(ev->finish));
    return choice;
}

/* Sends the non-streamed answer (for a group, once its last choice ended); returns its
 * status, or 0 when the group still waits for choices. */
static int full_response(tm_job *j, const tm_event *ev) {
    tm_group *g = j->group;
    if (g) {
        json_array_set_new(g->choices, (size_t)j->index, choice_json(j, ev));
        if (g->n_finished < g->n) return 0;
    }
    if (g ? g->n_aborted == g->n : ev->finish == TM_FINISH_ABORT) {
        tm_api_send_error(j->api, j->req->conn, 503, "the request was aborted (server shutting down)",
                          NULL, "aborted");
        return 503;
    }
    json_t *body = envelope(j, j->kind == TM_API_CHAT ? "chat.completion" : "text_completion",
                            g ? NULL : choice_json(j, ev));
    if (g) json_object_set(body, "choices", g->choices);
    json_object_set_new(body, "usage", g ? usage_json(g->prompt_tokens, g->completion_tokens, g->cached_tokens)
                                         : usage_json(ev->prompt_tokens, ev->completion_tokens,
                                                      ev->cached_tokens));
    char *s = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    int status = s ? 200 : 500;
    if (s) tm_http_respond(j->req->conn, 200, "application/json", "", s, strlen(s));
    else tm_api_send_error(j->api, j->req->conn, 500, "out of memory", NULL, NULL);
    free(s);
    return status;
}

static int text_append(tm_job *j, const char *s, size_t n) {
    if (j->text_len + n + 1 > j->text_cap) {
        size_t cap = j->text_cap ? j->text_cap * 2 : 256;
        while (cap < j->text_len + n + 1) cap *= 2;
        char *q = realloc(j->text, cap);
        if (!q) return TM_ENOMEM;
        j->text = q;
        j->text_cap = cap;
    }
    memcpy(j->text + j->text_len, s, n);
    j->text_len += n;
    j->text[j->text_len] = 0;
    return 0;
}

void tm_job_free(tm_job *j) {
    tm_api *a = j->api;
    if (j->prev || a->jobs == j) { /* a group member the engine never had is not listed */
        if (j->prev) j->prev->next = j->next;
        else a->jobs = j->next;
        if (j->next) j->next->prev = j->prev;
        a->n_jobs--;
    }
    tm_group *g = j->group;
    if (j->req && j->req->user == j) {
        /* the request stays with a member still running, for on_gone */
        j->req->user = NULL;
        for (int i = 0; g && i < g->n && !j->req->user; i++)
            if (g->jobs[i] && g->jobs[i] != j && g->jobs[i]->req) j->req->user = g->jobs[i];
    }
    if (g) {
        g->jobs[j->index] = NULL;
        int any = 0;
        for (int i = 0; i < g->n; i++) any |= g->jobs[i] != NULL;
        if (!any) tm_group_free(g);
    }
    free(j->text);
    json_decref(j->lp);
    tm_tool_parser_destroy(j->tools);
    free(j->tool_named);
    free(j);
}

void tm_job_on_event(tm_job *j, const tm_event *ev) {
    tm_api *a = j->api;
    double now = tm_time_s();
    if (ev->token >= 0) {
        if (j->n_tokens++ == 0) {
            j->t_first = now;
            tm_histogram_observe(&a->metrics.ttft, now - j->t_start);
        } else {
            tm_histogram_observe(&a->metrics.itl, now - j->t_last);
        }
        j->t_last = now;
    }
    if (j->req) {
        int has_delta = ev->text_len > 0 || (j->logprobs && ev->token >= 0);
        if (j->stream && has_delta) {
            stream_delta(j, ev);
        } else if (!j->stream) {
            if (ev->text_len) text_append(j, ev->text, ev->text_len);
            if (j->logprobs && ev->token >= 0) lp_append(j, &j->lp, ev, j->text_len - ev->text_len);
        }
    }
    if (j->group && j->index == 0 && j->n_tokens == 1 && ev->token >= 0)
        tm_group_submit_rest(j->group); /* the prompt's pages are in the prefix cache now */
    if (ev->finish == TM_FINISH_NONE) return;
    tm_group *g = j->group;
    if (g) {
        g->n_finished++;
        g->completion_tokens += ev->completion_tokens;
        g->n_aborted += ev->finish == TM_FINISH_ABORT;
        if (j->index == 0) g->prompt_tokens = ev->prompt_tokens, g->cached_tokens = ev->cached_tokens;
    }
    tm_histogram_observe(&a->metrics.e2e, now - j->t_start);
    tm_metrics_observe_request(&a->metrics, ev);
    if (ev->finish >= 1 && ev->finish <= 3) a->metrics.success[ev->finish]++;
    int client = j->req != NULL, status = 200;
    if (j->req) {
        if (j->stream) stream_finish(j, ev);
        else status = full_response(j, ev);
    }
    if (g && j->index == 0 && g->n_submitted < g->n) {
        /* it ended before its first token (aborted): the rest never start */
        for (int i = 1; i < g->n; i++)
            if (g->jobs[i] && i >= g->n_submitted) tm_job_end_unsubmitted(g->jobs[i]);
        g->n_submitted = g->n;
    }
    if (g && g->n_finished < g->n) { /* the last choice answers and logs the request */
        tm_job_free(j);
        return;
    }
    j->req = NULL; /* it ended with the response */
    tm_access e = {.id = j->id, .method = "POST",
                   .path = j->kind == TM_API_CHAT ? "/v1/chat/completions" : "/v1/completions",
                   .status = !client ? 499 : j->stream ? 200 : status,
                   .prompt = g ? g->prompt_tokens : ev->prompt_tokens,
                   .cached = g ? g->cached_tokens : ev->cached_tokens,
                   .completion = g ? g->completion_tokens : ev->completion_tokens,
                   .ttft = j->t_first ? j->t_first - j->t_start : -1, .total = now - j->t_start,
                   .finish = finish_name(ev->finish)};
    tm_api_access_log(&e);
    tm_job_free(j);
}

void tm_job_end_unsubmitted(tm_job *j) {
    tm_event ev;
    memset(&ev, 0, sizeof ev);
    ev.token = -1;
    ev.finish = TM_FINISH_ABORT;
    ev.prompt_tokens = j->n_prompt;
    ev.user = j;
    tm_job_on_event(j, &ev);
}
