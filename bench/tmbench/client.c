/* client.c - URL parsing, name resolution and the blocking pre-run HTTP call. */
#include "bench/tmbench/client.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <llhttp.h>

#include "common/common.h"

int tm_bench_target_init(tm_bench_target *t, const char *url, const char *api_key, char *err,
                         size_t err_len) {
    memset(t, 0, sizeof *t);
    if (strncmp(url, "http://", 7) != 0)
        return tm_fail(err, err_len, TM_EINVAL, "the base URL must start with http:// (got '%s'; "
                       "https is not supported)", url);
    if (strlen(url) >= sizeof t->base_url)
        return tm_fail(err, err_len, TM_EINVAL, "the base URL is too long");
    snprintf(t->base_url, sizeof t->base_url, "%s", url);
    size_t n = strlen(t->base_url);
    while (n > 7 && t->base_url[n - 1] == '/') t->base_url[--n] = 0;
    const char *h = t->base_url + 7, *slash = strchr(h, '/');
    size_t hp_len = slash ? (size_t)(slash - h) : strlen(h);
    snprintf(t->prefix, sizeof t->prefix, "%s", slash ? slash : "");
    char hostport[256];
    if (hp_len == 0 || hp_len >= sizeof hostport)
        return tm_fail(err, err_len, TM_EINVAL, "no host in the base URL '%s'", url);
    memcpy(hostport, h, hp_len);
    hostport[hp_len] = 0;
    t->port = 80;
    char *colon = strrchr(hostport, ':');
    if (hostport[0] == '[') { /* [IPv6]:port */
        char *close = strchr(hostport, ']');
        if (!close) return tm_fail(err, err_len, TM_EINVAL, "bad IPv6 address in '%s'", url);
        *close = 0;
        snprintf(t->host, sizeof t->host, "%s", hostport + 1);
        colon = close[1] == ':' ? close + 1 : NULL;
    } else {
        if (colon) *colon = 0;
        snprintf(t->host, sizeof t->host, "%s", hostport);
    }
    if (colon) {
        char *end;
        long p = strtol(colon + 1, &end, 10);
        if (*end || p < 1 || p > 65535)
            return tm_fail(err, err_len, TM_EINVAL, "bad port in the base URL '%s'", url);
        t->port = (int)p;
    }
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_socktype = SOCK_STREAM;
    char port[16];
    snprintf(port, sizeof port, "%d", t->port);
    int rc = getaddrinfo(t->host, port, &hints, &res);
    if (rc || !res)
        return tm_fail(err, err_len, TM_ENOTFOUND, "cannot resolve '%s': %s", t->host, gai_strerror(rc));
    memcpy(&t->addr, res->ai_addr, res->ai_addrlen);
    t->addr_len = res->ai_addrlen;
    freeaddrinfo(res);
    if (api_key && *api_key) {
        if (strlen(api_key) > 500 || strpbrk(api_key, "\r\n"))
            return tm_fail(err, err_len, TM_EINVAL, "the API key is too long or holds a line break");
        snprintf(t->auth_header, sizeof t->auth_header, "Authorization: Bearer %s\r\n", api_key);
    }
    return 0;
}

void tm_bench_error_text(const char *body, size_t len, char *out, size_t out_len) {
    if (out_len == 0) return;
    out[0] = 0;
    json_t *j = body && len ? json_loadb(body, len, 0, NULL) : NULL;
    json_t *e = j ? json_object_get(j, "error") : NULL;
    const char *msg = json_is_object(e) ? json_string_value(json_object_get(e, "message"))
                      : json_is_string(e) ? json_string_value(e) : NULL;
    if (msg) snprintf(out, out_len, "%s", msg);
    else if (body) snprintf(out, out_len, "%.*s", (int)(len < 200 ? len : 200), body);
    json_decref(j);
    for (char *p = out; *p; p++)
        if (*p == '\n' || *p == '\r' || *p == '\t') *p = ' ';
}

/* ---- the blocking call ---- */

typedef struct call_state {
    char *body;       /* response body so far */
    size_t len, cap;  /* bytes used / allocated */
    int done;         /* the message is complete */
    int oom;          /* an allocation failed */
} call_state;

static int on_body(llhttp_t *p, const char *at, size_t n) {
    call_state *s = p->data;
    if (s->len + n + 1 > s->cap) {
        size_t c = s->cap ? s->cap : 4096;
        while (c < s->len + n + 1) c *= 2;
        if (c > (64u << 20)) { /* 64 MiB: no pre-run answer is that large */
            s->oom = 1;
            return -1;
        }
        char *b = realloc(s->body, c);
        if (!b) {
            s->oom = 1;
            return -1;
        }
        s->body = b;
        s->cap = c;
    }
    memcpy(s->body + s->len, at, n);
    s->len += n;
    return 0;
}

static int on_done(llhttp_t *p) {
    ((call_state *)p->data)->done = 1;
    return HPE_PAUSED;
}

/* Waits for fd to be ready for events until deadline; 0, or -1 on timeout. */
static int wait_fd(int fd, short events, double deadline) {
    for (;;) {
        double left = deadline - tm_time_s();
        if (left <= 0) return -1;
        struct pollfd pfd = {.fd = fd, .events = events};
        int rc = poll(&pfd, 1, (int)(left * 1000) + 1);
        if (rc > 0) return 0;
        if (rc < 0 && errno != EINTR) return -1;
    }
}

int tm_bench_http_call(const tm_bench_target *t, const char *method, const char *path,
                       const char *body, size_t body_len, double timeout_s, int *status, char **resp,
                       size_t *resp_len, char *err, size_t err_len) {
    const double deadline = tm_time_s() + timeout_s;
    call_state st = {0};
    char *req = NULL;
    int rc = TM_EIO;
    *resp = NULL;
    int fd = socket(t->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return tm_fail(err, err_len, TM_EIO, "socket: %s", strerror(errno));
    if (connect(fd, (const struct sockaddr *)&t->addr, t->addr_len) < 0 && errno != EINPROGRESS) {
        tm_fail(err, err_len, TM_EIO, "cannot connect to %s: %s", t->base_url, strerror(errno));
        goto done;
    }
    if (wait_fd(fd, POLLOUT, deadline)) {
        tm_fail(err, err_len, TM_EIO, "cannot connect to %s: timed out", t->base_url);
        goto done;
    }
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
    if (soerr) {
        tm_fail(err, err_len, TM_EIO, "cannot connect to %s: %s", t->base_url, strerror(soerr));
        goto done;
    }
    size_t cap = 1024 + body_len + strlen(path) + strlen(t->prefix);
    req = malloc(cap);
    if (!req) {
        tm_fail(err, err_len, TM_EIO, "out of memory");
        goto done;
    }
    int hl = snprintf(req, cap, "%s %s%s HTTP/1.1\r\nHost: %s:%d\r\n%sContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\nConnection: close\r\n\r\n", method, t->prefix, path,
                      t->host, t->port, t->auth_header, body ? body_len : 0);
    if (body) memcpy(req + hl, body, body_len);
    size_t total = (size_t)hl + (body ? body_len : 0), sent = 0;
    while (sent < total) {
        ssize_t w = send(fd, req + sent, total - sent, MSG_NOSIGNAL);
        if (w > 0) {
            sent += (size_t)w;
        } else if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (wait_fd(fd, POLLOUT, deadline)) {
                tm_fail(err, err_len, TM_EIO, "%s %s: timed out sending", method, path);
                goto done;
            }
        } else {
            tm_fail(err, err_len, TM_EIO, "%s %s: send: %s", method, path, strerror(errno));
            goto done;
        }
    }
    llhttp_settings_t cbs;
    llhttp_settings_init(&cbs);
    cbs.on_body = on_body;
    cbs.on_message_complete = on_done;
    llhttp_t parser;
    llhttp_init(&parser, HTTP_RESPONSE, &cbs);
    parser.data = &st;
    char buf[16384];
    while (!st.done) {
        if (wait_fd(fd, POLLIN, deadline)) {
            tm_fail(err, err_len, TM_EIO, "%s %s: no complete answer within %.0f s", method, path, timeout_s);
            goto done;
        }
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
        llhttp_errno_t e = r > 0 ? llhttp_execute(&parser, buf, (size_t)r) : llhttp_finish(&parser);
        if (st.oom) {
            tm_fail(err, err_len, TM_EIO, "%s %s: the answer is too large", method, path);
            goto done;
        }
        if (e != HPE_OK && e != HPE_PAUSED) {
            tm_fail(err, err_len, TM_EIO, "%s %s: malformed HTTP answer (%s)", method, path,
                    llhttp_errno_name(e));
            goto done;
        }
        if (r <= 0 && !st.done) {
            tm_fail(err, err_len, TM_EIO, "%s %s: the server closed the connection %s", method, path,
                    r < 0 ? strerror(errno) : "before answering");
            goto done;
        }
    }
    *status = parser.status_code;
    if (!st.body && !(st.body = malloc(1))) goto done;
    st.body[st.len] = 0;
    *resp = st.body;
    if (resp_len) *resp_len = st.len;
    st.body = NULL;
    rc = 0;
done:
    close(fd);
    free(req);
    free(st.body);
    return rc;
}
