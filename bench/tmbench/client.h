/* client.h - where the benchmark sends its requests, and a blocking HTTP/1.1 call for
 * the few requests made before a run (the model list, /tokenize, /detokenize). The
 * streamed requests of the run itself go through loadgen.h on libuv. Plain HTTP only. */
#ifndef TM_BENCH_CLIENT_H
#define TM_BENCH_CLIENT_H

#include <stddef.h>
#include <sys/socket.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tm_bench_target {
    char base_url[512];            /* as given, without a trailing '/' */
    char host[256];                /* host name or address from the URL */
    int port;                      /* from the URL, 80 by default */
    char prefix[256];              /* the URL's path ("" or "/something"), prepended to paths */
    struct sockaddr_storage addr;  /* resolved once, before the run */
    socklen_t addr_len;            /* bytes of addr in use */
    char auth_header[600];         /* "Authorization: Bearer KEY\r\n" or "" */
} tm_bench_target;

/* Parses "http://HOST[:PORT][/PREFIX]" and resolves HOST. api_key may be NULL or "".
 * Returns 0, or TM_EINVAL / TM_ENOTFOUND with err saying why. */
int tm_bench_target_init(tm_bench_target *t, const char *url, const char *api_key, char *err,
                         size_t err_len);

/* One request on a fresh connection, waiting at most timeout_s in all. method "GET" or
 * "POST"; body may be NULL. On success (any HTTP status) returns 0 with *status and the
 * response body in *resp (NUL-terminated, caller frees). Otherwise TM_EIO with err saying
 * what failed ("connection refused", "timed out", "malformed response"). */
int tm_bench_http_call(const tm_bench_target *t, const char *method, const char *path,
                       const char *body, size_t body_len, double timeout_s, int *status, char **resp,
                       size_t *resp_len, char *err, size_t err_len);

/* The message of an OpenAI error body ({"error": {"message": ...}}), else the body's
 * first bytes, as one printable line in out. */
void tm_bench_error_text(const char *body, size_t len, char *out, size_t out_len);

#ifdef __cplusplus
}
#endif
#endif
