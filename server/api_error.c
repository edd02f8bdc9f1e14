/* api_error.c - OpenAI error objects from HTTP statuses and TM_E* codes, and JSON text
 * from bytes that may not be valid UTF-8. */
#include "server/api_error.h"

#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/common.h"

int tm_api_status_of(int code) {
    switch (code) {
    case TM_EINVAL:
    case TM_ERANGE: return 400;
    case TM_ENOTFOUND: return 404;
    case TM_EBUSY: return 503;
    default: return 500;
    }
}

const char *tm_api_error_type(int status) {
    return status >= 500 ? "server_error" : "invalid_request_error";
}

json_t *tm_json_text(const char *s, size_t n) {
    json_t *j = json_stringn(s, n);
    if (j) return j;
    char *buf = malloc(n * 3 + 1), *w = buf; /* each bad byte becomes U+FFFD (3 bytes) */
    if (!buf) return json_string("");
    for (size_t i = 0; i < n;) {
        size_t len = tm_utf8_char_len((const uint8_t *)s + i, n - i);
        if (len) {
            memcpy(w, s + i, len), w += len, i += len;
        } else {
            memcpy(w, "\xEF\xBF\xBD", 3), w += 3, i += 1;
        }
    }
    j = json_stringn(buf, (size_t)(w - buf));
    free(buf);
    return j ? j : json_string("");
}

/* A default code when the caller gives none, so clients can branch on it. */
static const char *default_code(int status) {
    switch (status) {
    case 401: return "invalid_api_key";
    case 404: return "not_found";
    case 405: return "method_not_allowed";
    case 408: return "timeout";
    case 413: return "payload_too_large";
    case 429: return "rate_limit_exceeded";
    case 503: return "server_overloaded";
    case 500: return "internal_error";
    default: return NULL;
    }
}

char *tm_api_error_json(int status, const char *message, const char *param, const char *code) {
    if (!code) code = default_code(status);
    /* message may hold client bytes cut short by a %.Ns (a model name or a path cut
     * inside a UTF-8 sequence): keep the message, with U+FFFD for the broken bytes */
    json_t *msg = message ? tm_json_text(message, strlen(message)) : json_string("");
    json_t *par = param ? json_string(param) : json_null();
    if (!par) par = json_null();
    json_t *err = json_pack("{s:o, s:s, s:o, s:o}", "message", msg, "type",
                            tm_api_error_type(status), "param", par, "code",
                            code ? json_string(code) : json_null());
    json_t *root = json_pack("{s:o}", "error", err);
    char *s = root ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    return s;
}
