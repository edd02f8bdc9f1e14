/* api_error.h - the one place where failures become OpenAI error objects.
 *
 * Body shape: {"error":{"message":..., "type":..., "param":..., "code":...}}. The type
 * follows from the HTTP status; code is a short machine-readable string or null. */
#ifndef TM_API_ERROR_H
#define TM_API_ERROR_H

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

#ifdef __cplusplus
}
#endif
#endif
