/* api_error.h - the one place where failures become OpenAI error objects.
 *
 * Body shape: {"error":{"message":..., "type":..., "param":..., "code":...}}. The type
 * follows from the HTTP status; code is a short machine-readable string or null. */
#ifndef TM_API_ERROR_H
#define TM_API_ERROR_H

#include <stddef.h>

#include <jansson.h>

#ifdef __cplusplus
extern "C" {
#endif

/* HTTP status for a TM_E* code from a request's processing (TM_EINVAL/TM_ERANGE 400,
 * TM_ENOTFOUND 404, TM_EBUSY 503, anything else 500). */
int tm_api_status_of(int tm_code);
/* "invalid_request_error" (4xx), "server_error" (5xx). */
const char *tm_api_error_type(int status);
/* malloc'd JSON error body; param and code may be NULL (JSON null). Never returns NULL
 * unless memory is exhausted. */
char *tm_api_error_json(int status, const char *message, const char *param, const char *code);
/* A JSON string from n bytes that may not be valid UTF-8 (client bytes, token pieces, a
 * message cut inside a sequence): each invalid byte becomes U+FFFD. Returns a new
 * reference; "" (or NULL) only when memory is exhausted. */
json_t *tm_json_text(const char *s, size_t n);

#ifdef __cplusplus
}
#endif
#endif
