/* api.h - the OpenAI-compatible API over tm_http and the engine.
 *
 * Routes: POST /v1/completions, POST /v1/chat/completions, GET /v1/models[/{id}],
 * GET /health, GET /metrics, POST /tokenize, POST /detokenize. A generation request is
 * validated, templated and tokenized on the loop thread (a structured-output grammar not
 * yet cached compiles on the loop's thread pool meanwhile, then the request is handled
 * again), submitted to the engine, and answered from engine events drained by
 * tm_api_drain. Loop thread only, except where said. */
#ifndef TM_API_H
#define TM_API_H

#include <stddef.h>

#include <uv.h>

#include "scheduler/engine.h"
#include "server/chat_template.h"
#include "server/http.h"
#include "server/tool_parser.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tm_api_config {
    const char *served_model_name; /* the one name `model` must match (copied) */
    const char *api_key;           /* Bearer key for /v1, /tokenize, /detokenize; NULL = open */
    tm_chat_template chat;         /* rendering of chat messages */
    tm_tool_format tool_format;    /* how the model writes tool calls (NONE: tools refused) */
    uv_loop_t *loop;               /* the loop thread's loop: grammars compile on its thread
                                      pool; NULL: on the loop thread itself */
} tm_api_config;

typedef struct tm_api tm_api;

/* engine is borrowed and must outlive the api. */
int tm_api_create(tm_engine *engine, const tm_api_config *cfg, tm_api **out, char *err,
                  size_t err_len);
/* Frees the api and any request state left (call after the engine is destroyed). */
void tm_api_destroy(tm_api *a);

/* The handlers to give tm_http_create. */
void tm_api_http_handlers(tm_api *a, tm_http_handlers *h);

/* Moves every queued engine event to its request (call from the uv_async callback). */
void tm_api_drain(tm_api *a);

/* Requests submitted to the engine and not yet finished. */
int tm_api_n_inflight(const tm_api *a);
/* New generation requests are refused with 503 from now on. */
void tm_api_set_draining(tm_api *a);
/* Aborts every in-flight request (they finish with finish_reason "abort"). */
void tm_api_abort_all(tm_api *a);

#ifdef __cplusplus
}
#endif
#endif
