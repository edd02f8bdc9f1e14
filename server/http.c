/* http.c - HTTP/1.1 on libuv + llhttp: connections, limits, framing. See http.h.
 *
 * A connection is the state machine below; every change of state goes through
 * conn_set_state. Unparsed input (pipelined requests) waits in conn->in while a request is
 * handled; reading continues so a disconnect is seen at once, but stops when that backlog
 * exceeds one maximal request. Requests are parsed and dispatched only from the loop's own
 * callbacks (input arrived, writes completed, the resume handle): never from inside the
 * call that ends a response, where the handler still holds its request and a pipeline of
 * thousands of requests would nest one call per request. */
#include "server/http.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>

#include <llhttp.h>

#include "common/common.h"

typedef struct tm_buf {
    char *p;    /* NUL-terminated bytes (NULL while empty and never grown) */
    size_t n;   /* bytes used */
    size_t cap; /* bytes allocated */
} tm_buf;

/* The states of a connection, and what each means for its input, output and timer:
 *
 *   IDLE        No request in progress: waiting for one. The timer is the idle timeout.
 *               Input may wait unparsed: behind 1 MiB of unsent answers (see
 *               write_backlogged), or for the resume handle after a response ended.
 *   READING     A request has begun (its first byte was parsed). The timer armed in
 *               IDLE runs on: a request not complete in time gets 408.
 *   HANDLING    A complete request is with the handler, which owes the response. The
 *               parser is paused; input is buffered unparsed. No timer: a generation may
 *               take long, and a disconnect ends it at once.
 *   STREAMING   The handler began a streamed response and owes its end.
 *   FLUSHING    The last response is queued; the connection closes once it is written.
 *               Input is discarded (nothing after a "Connection: close" is served). The
 *               timer drops a client that stops reading.
 *   ERROR_SENT  An error the HTTP layer answered itself (400, 408, 413, 503) is going
 *               out. Input is discarded: the parser is in its error state, and parsing
 *               more would answer the same broken request again. The timer drops a client
 *               that does not read.
 *   LINGERING   That error is written and the write side shut down; input is discarded
 *               until EOF or 2 s, then the connection closes. Closing with unread input
 *               would make the kernel send RST, and the client could lose the answer (as
 *               nginx's lingering_close).
 *   CLOSED      uv_close was called; freed once its handles are closed. Terminal.
 *
 * Allowed transitions (conn_set_state asserts them in debug builds):
 *   IDLE       -> READING      a request's first byte is parsed
 *   READING    -> HANDLING     the request is complete and handed to the handler
 *   HANDLING   -> STREAMING    tm_http_stream_begin
 *   HANDLING,
 *   STREAMING  -> IDLE         the response ended, keep-alive
 *              -> FLUSHING     the response ended, and the connection closes after it
 *   IDLE       -> FLUSHING     the server stops accepting while answers still go out
 *   IDLE,
 *   READING    -> ERROR_SENT   malformed (400), too large (413), too slow (408), or one
 *                              connection too many (503, at accept)
 *   ERROR_SENT -> LINGERING    its last write is done
 *   any but
 *   CLOSED     -> CLOSED       EOF, a socket error, a timeout, a write failure or a client
 *                              that reads nothing, shutdown; from HANDLING or STREAMING
 *                              the handler hears on_gone */
typedef enum conn_state {
    S_IDLE,
    S_READING,
    S_HANDLING,
    S_STREAMING,
    S_FLUSHING,
    S_ERROR_SENT,
    S_LINGERING,
    S_CLOSED,
    S_N_STATES
} conn_state;

struct tm_http_conn {
    uv_tcp_t tcp;            /* the socket; tcp.data = this */
    uv_timer_t timer;        /* idle / slow-request / non-reader timeout; linger */
    uv_idle_t resume;        /* active while pipelined input waits for the loop to parse
                                it after a response ended */
    tm_http_server *srv;     /* owner */
    tm_http_conn *prev, *next; /* srv->conns list */
    conn_state state;        /* see above; changed only by conn_set_state */
    int reading;             /* uv_read_start is in effect (stopped for backpressure) */
    int n_handles;           /* handles still to be closed before free */
    int n_writes;            /* writes in flight */
    size_t write_queued;     /* bytes in flight */
    size_t unsent_at_arm;    /* response bytes not yet handed to the kernel when the timer
                                was armed (fewer when it fires: the client is reading) */
    uv_shutdown_t shutdown_req; /* for LINGERING */
    llhttp_t parser;         /* request parser; parser.data = this */
    tm_buf in;               /* received, not yet parsed bytes start at in_off */
    size_t in_off;
    /* The request being parsed (reset when a request begins), then handled. */
    tm_buf method, url, field, value, auth, ctype, body;
    size_t header_bytes;     /* URL + header bytes so far */
    int has_len;             /* Content-Length or chunked */
    int expect_continue;     /* "Expect: 100-continue": the client waits before its body */
    int err_status;          /* set by a callback that rejected the request (413, 400) */
    const char *err_msg;     /* its message (static), or NULL for the parser's */
    int n_auth;              /* Authorization headers in this request */
    double t_start;          /* first byte of this request */
    tm_http_request req;     /* what the handler sees, from dispatch to the response's end */
    /* Framing of the response, fixed when the request is complete. */
    int keep_alive;          /* keep the connection after this response */
    int http11;              /* the request was HTTP/1.1 or later: chunked framing allowed */
    int chunked;             /* the open stream is chunked (else it ends at the close) */
};

struct tm_http_server {
    uv_loop_t *loop;         /* borrowed */
    uv_tcp_t listener;       /* listening socket */
    tm_http_config cfg;      /* limits */
    tm_http_handlers h;      /* callbacks */
    llhttp_settings_t settings; /* parser callbacks (shared by every connection) */
    int port;                /* bound port */
    int listening;           /* listener open */
    int destroying;          /* tm_http_destroy called; free when all handles closed */
    int n_conns;             /* open connections */
    int n_handles;           /* listener (1) + connection handles still open */
    tm_http_conn *conns;     /* list of open connections */
    uint64_t n_requests;     /* requests dispatched so far (tm_http_request.seq) */
};

void tm_http_config_default(tm_http_config *c) {
    c->max_header_bytes = 16 * 1024;
    c->max_body_bytes = 8u << 20;
    c->timeout_ms = 30000;
    c->max_connections = 1024;
    c->max_write_queue = 16u << 20;
}

const char *tm_http_reason(int s) {
    switch (s) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Unknown";
    }
}

/* ---- buffers ---- */

static int buf_add(tm_buf *b, const char *p, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) return TM_ENOMEM;
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}
static void buf_clear(tm_buf *b) {
    b->n = 0;
    if (b->p) b->p[0] = 0;
}
static void buf_free(tm_buf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}
static const char *buf_str(const tm_buf *b) { return b->p ? b->p : ""; }

/* ---- states ---- */

static const char *const k_state_name[S_N_STATES] = {
    "IDLE", "READING", "HANDLING", "STREAMING", "FLUSHING", "ERROR_SENT", "LINGERING", "CLOSED",
};

#define B(st) (1u << (st))
/* k_next[s]: the states s may change to (the table in the comment at conn_state). */
static const unsigned k_next[S_N_STATES] = {
    [S_IDLE] = B(S_READING) | B(S_FLUSHING) | B(S_ERROR_SENT) | B(S_CLOSED),
    [S_READING] = B(S_HANDLING) | B(S_ERROR_SENT) | B(S_CLOSED),
    [S_HANDLING] = B(S_STREAMING) | B(S_IDLE) | B(S_FLUSHING) | B(S_CLOSED),
    [S_STREAMING] = B(S_IDLE) | B(S_FLUSHING) | B(S_CLOSED),
    [S_FLUSHING] = B(S_CLOSED),
    [S_ERROR_SENT] = B(S_LINGERING) | B(S_CLOSED),
    [S_LINGERING] = B(S_CLOSED),
    [S_CLOSED] = 0,
};
#undef B

static int owes_response(const tm_http_conn *c) {
    return c->state == S_HANDLING || c->state == S_STREAMING;
}

static void timer_arm(tm_http_conn *c);
static void on_linger_timeout(uv_timer_t *t);

/* The one place a connection changes state. Entering a state sets its timer as the table
 * at conn_state says; everything else a change implies is done by the caller. */
static void conn_set_state(tm_http_conn *c, conn_state next) {
    if (!(k_next[c->state] & (1u << next))) {
        TM_ERRORF("http: illegal connection state change %s -> %s", k_state_name[c->state],
                  k_state_name[next]);
        assert(!"illegal connection state change");
    }
    c->state = next;
    switch (next) {
    case S_IDLE:
    case S_FLUSHING:
    case S_ERROR_SENT:
        timer_arm(c); /* no-op while it runs: a slow request is timed from IDLE */
        break;
    case S_HANDLING:
        uv_timer_stop(&c->timer);
        break;
    case S_LINGERING:
        uv_timer_stop(&c->timer);
        uv_timer_start(&c->timer, on_linger_timeout, 2000, 0);
        break;
    default:
        break;
    }
}

/* ---- closing ---- */

static void server_maybe_free(tm_http_server *s) {
    if (s->destroying && s->n_handles == 0) free(s);
}

static void on_conn_handle_closed(uv_handle_t *h) {
    tm_http_conn *c = h->data;
    if (--c->n_handles > 0) return;
    tm_http_server *s = c->srv;
    buf_free(&c->in);
    buf_free(&c->method), buf_free(&c->url), buf_free(&c->field), buf_free(&c->value);
    buf_free(&c->auth), buf_free(&c->ctype), buf_free(&c->body);
    free(c);
    s->n_handles--;
    server_maybe_free(s);
}

/* Closes c now; if a response was owed the handler hears on_gone. Idempotent. */
static void conn_close(tm_http_conn *c) {
    if (c->state == S_CLOSED) return;
    const int owed = owes_response(c);
    conn_set_state(c, S_CLOSED);
    tm_http_server *s = c->srv;
    if (c->prev) c->prev->next = c->next;
    else s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    s->n_conns--;
    if (owed && s->h.on_gone) s->h.on_gone(s->h.arg, &c->req);
    c->req.user = NULL;
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->resume, on_conn_handle_closed);
}

/* ---- writing ---- */

static void conn_read_start(tm_http_conn *c);
static void conn_parse(tm_http_conn *c);

typedef struct tm_write {
    uv_write_t req;     /* req.data = conn */
    size_t len;         /* bytes in data */
    char data[];        /* payload */
} tm_write;

static void on_linger_timeout(uv_timer_t *t) { conn_close(t->data); }
static void on_shutdown(uv_shutdown_t *req, int status) { (void)req, (void)status; }

/* ERROR_SENT -> LINGERING: shut down writing, discard input until EOF or 2 s, close. */
static void conn_linger(tm_http_conn *c) {
    conn_set_state(c, S_LINGERING);
    if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
        conn_close(c);
        return;
    }
    if (!c->reading) conn_read_start(c);
}

/* Parsing pauses while this many response bytes wait to go out, and resumes when they
 * are out: a long pipeline of requests answered at once (GET /health) is answered as
 * the client reads, about 1 MiB per turn of the loop, instead of all in one turn,
 * which held every other connection and filled the write queue until its limit closed
 * a client that was reading. */
static int write_backlogged(const tm_http_conn *c) {
    return c->write_queued > TM_MIN(c->srv->cfg.max_write_queue / 2, (size_t)1 << 20);
}

static void on_written(uv_write_t *req, int status) {
    tm_write *w = (tm_write *)req;
    tm_http_conn *c = req->data;
    c->n_writes--;
    c->write_queued -= w->len;
    free(w);
    if (c->state == S_CLOSED) return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (c->n_writes > 0) return;
    if (c->state == S_FLUSHING) {
        conn_close(c);
    } else if (c->state == S_ERROR_SENT) {
        conn_linger(c);
    } else if (c->state == S_IDLE && c->in_off < c->in.n) {
        /* Resume a pipeline paused on its answers once all of them went out: resuming
         * earlier, each later write callback of the same turn would parse more. */
        if (!c->reading) conn_read_start(c);
        conn_parse(c);
    }
}

/* Queues len bytes from up to three pieces. Returns 0 or TM_EBUSY/TM_ENOMEM (closed). */
static int conn_write3(tm_http_conn *c, const char *a, size_t na, const char *b, size_t nb,
                       const char *d, size_t nd) {
    if (c->state == S_CLOSED) return TM_EBUSY;
    size_t len = na + nb + nd;
    /* The limit bounds a backlog of unread bytes; one response larger than the limit on
     * its own (a /tokenize answer for a large prompt) still goes out when nothing waits
     * before it, else a valid request would be answered by a closed connection. */
    if (c->write_queued > 0 && c->write_queued + len > c->srv->cfg.max_write_queue) {
        TM_WARNF("http: client not reading (%zu bytes queued); closing", c->write_queued);
        conn_close(c);
        return TM_EBUSY;
    }
    tm_write *w = malloc(sizeof *w + len);
    if (!w) {
        conn_close(c);
        return TM_ENOMEM;
    }
    w->len = len;
    if (na) memcpy(w->data, a, na);
    if (nb) memcpy(w->data + na, b, nb);
    if (nd) memcpy(w->data + na + nb, d, nd);
    w->req.data = c;
    uv_buf_t ub = uv_buf_init(w->data, (unsigned)len);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &ub, 1, on_written) != 0) {
        free(w);
        conn_close(c);
        return TM_EBUSY;
    }
    c->n_writes++;
    c->write_queued += len;
    return 0;
}

/* content_length: the body's bytes; -1: chunked; -2: none, the body ends at the close. */
static int format_head(tm_http_conn *c, char *out, size_t cap, int status, const char *ctype,
                       const char *extra, long long content_length) {
    char len_line[64] = "Transfer-Encoding: chunked\r\n";
    if (content_length == -2)
        len_line[0] = 0;
    else if (content_length >= 0)
        snprintf(len_line, sizeof len_line, "Content-Length: %lld\r\n", content_length);
    int n = snprintf(out, cap, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n%s%sConnection: %s\r\n\r\n",
                     status, tm_http_reason(status), ctype, len_line, extra ? extra : "",
                     c->keep_alive ? "keep-alive" : "close");
    return n < (int)cap ? n : (int)cap - 1;
}

/* Queues a complete response; returns conn_write3's result. */
static int send_response(tm_http_conn *c, int status, const char *ctype, const char *extra,
                         const char *body, size_t len) {
    char head[1024];
    int n = format_head(c, head, sizeof head, status, ctype, extra, (long long)len);
    /* A HEAD response has the GET response's headers and never a body (RFC 9110 9.3.2):
     * the client reads none, and sent bytes would corrupt the next response. */
    size_t n_body = strcmp(buf_str(&c->method), "HEAD") ? len : 0;
    return conn_write3(c, head, (size_t)n, body, n_body, NULL, 0);
}

static void on_resume(uv_idle_t *h) { conn_parse(h->data); }

/* HANDLING or STREAMING: the response has been queued entirely. */
static void end_request(tm_http_conn *c) {
    c->req.user = NULL;
    if (!c->keep_alive || !c->srv->listening) {
        conn_set_state(c, S_FLUSHING);
        if (c->n_writes == 0) conn_close(c);
        return;
    }
    conn_set_state(c, S_IDLE);
    if (!c->reading) conn_read_start(c);
    /* The next pipelined request is the loop's to parse, on its next turn (or at once
     * by conn_parse's loop when this response was sent from inside it). */
    if (c->in_off < c->in.n) uv_idle_start(&c->resume, on_resume);
}

void tm_http_respond(tm_http_conn *c, int status, const char *ctype, const char *extra,
                     const char *body, size_t len) {
    assert(c->state == S_HANDLING || c->state == S_CLOSED);
    if (c->state != S_HANDLING) return; /* the client is gone (on_gone said so) */
    if (send_response(c, status, ctype, extra, body, len) == 0) end_request(c);
}

void tm_http_stream_begin(tm_http_conn *c, int status, const char *ctype) {
    assert(c->state == S_HANDLING || c->state == S_CLOSED);
    if (c->state != S_HANDLING) return;
    char head[512];
    /* An HTTP/1.0 client cannot read chunked framing (RFC 9112 7.1 forbids sending it):
     * the stream goes out as is and the close ends it, as h11 (vLLM's uvicorn) does. */
    c->chunked = c->http11;
    if (!c->chunked) c->keep_alive = 0;
    int n = format_head(c, head, sizeof head, status, ctype,
                        "Cache-Control: no-cache\r\n", c->chunked ? -1 : -2);
    conn_set_state(c, S_STREAMING);
    conn_write3(c, head, (size_t)n, NULL, 0, NULL, 0);
}

int tm_http_stream_write(tm_http_conn *c, const char *data, size_t len) {
    if (c->state != S_STREAMING) return TM_EBUSY;
    if (len == 0) return 0;
    if (!c->chunked) return conn_write3(c, data, len, NULL, 0, NULL, 0);
    char size_line[32];
    int n = snprintf(size_line, sizeof size_line, "%zx\r\n", len);
    return conn_write3(c, size_line, (size_t)n, data, len, "\r\n", 2);
}

void tm_http_stream_end(tm_http_conn *c) {
    if (c->state != S_STREAMING) return;
    if (!c->chunked || conn_write3(c, "0\r\n\r\n", 5, NULL, 0, NULL, 0) == 0) end_request(c);
}

/* IDLE or READING: an error the HTTP layer answers itself; the connection lingers and
 * closes afterwards. */
static void respond_error(tm_http_conn *c, int status, const char *msg) {
    tm_http_server *s = c->srv;
    char *body = s->h.error_body ? s->h.error_body(s->h.arg, status, msg) : NULL;
    c->keep_alive = 0;
    conn_set_state(c, S_ERROR_SENT);
    const char *extra = status == 503 ? "Retry-After: 1\r\n" : "";
    send_response(c, status, "application/json", extra, body ? body : "{}",
                  body ? strlen(body) : 2);
    free(body);
    TM_DEBUGF("http: %d %s", status, msg); /* the access line comes from error_body */
}

/* ---- parser callbacks ---- */

static tm_http_conn *conn_of(llhttp_t *p) { return p->data; }

static int count_header(tm_http_conn *c, size_t n) {
    c->header_bytes += n;
    if (c->header_bytes > c->srv->cfg.max_header_bytes) {
        c->err_status = 413;
        return HPE_USER;
    }
    return 0;
}

static int on_message_begin(llhttp_t *p) {
    tm_http_conn *c = conn_of(p);
    buf_clear(&c->method), buf_clear(&c->url), buf_clear(&c->field), buf_clear(&c->value);
    buf_clear(&c->auth), buf_clear(&c->ctype), buf_clear(&c->body);
    c->header_bytes = 0;
    c->n_auth = 0;
    conn_set_state(c, S_READING);
    c->has_len = 0;
    c->expect_continue = 0;
    c->t_start = tm_time_s();
    return 0;
}
static int on_method(llhttp_t *p, const char *at, size_t n) {
    tm_http_conn *c = conn_of(p);
    return count_header(c, n) ? HPE_USER : buf_add(&c->method, at, n) ? HPE_USER : 0;
}
static int on_url(llhttp_t *p, const char *at, size_t n) {
    tm_http_conn *c = conn_of(p);
    return count_header(c, n) ? HPE_USER : buf_add(&c->url, at, n) ? HPE_USER : 0;
}
static int on_header_field(llhttp_t *p, const char *at, size_t n) {
    tm_http_conn *c = conn_of(p);
    return count_header(c, n) ? HPE_USER : buf_add(&c->field, at, n) ? HPE_USER : 0;
}
static int on_header_value(llhttp_t *p, const char *at, size_t n) {
    tm_http_conn *c = conn_of(p);
    return count_header(c, n) ? HPE_USER : buf_add(&c->value, at, n) ? HPE_USER : 0;
}
static int on_header_value_complete(llhttp_t *p) {
    tm_http_conn *c = conn_of(p);
    const char *f = buf_str(&c->field);
    tm_buf *dst = !strcasecmp(f, "authorization") ? &c->auth
                  : !strcasecmp(f, "content-type") ? &c->ctype : NULL;
    /* a field value excludes trailing whitespace (RFC 9110 5.5; llhttp keeps it) */
    size_t n = c->value.n;
    while (n > 0 && (c->value.p[n - 1] == ' ' || c->value.p[n - 1] == '\t')) n--;
    if (dst == &c->auth && ++c->n_auth > 1) {
        /* which one would count? the first and the last both have takers; refuse both */
        c->err_status = 400;
        c->err_msg = "more than one Authorization header";
        return HPE_USER;
    }
    if (dst) {
        buf_clear(dst);
        if (buf_add(dst, buf_str(&c->value), n)) return HPE_USER;
    }
    if (!strcasecmp(f, "expect") && n == 12 && !strncasecmp(buf_str(&c->value), "100-continue", 12))
        c->expect_continue = 1;
    buf_clear(&c->field);
    buf_clear(&c->value);
    return 0;
}
static int on_headers_complete(llhttp_t *p) {
    tm_http_conn *c = conn_of(p);
    /* Upgrades (h2c, websocket) and CONNECT tunnels are declined: the request is served
     * as plain HTTP/1.1 and the connection stays HTTP. Left set, llhttp would treat every
     * later byte as the other protocol and fail the next request on the connection. */
    p->upgrade = 0;
    c->has_len = (p->flags & (F_CONTENT_LENGTH | F_CHUNKED)) != 0;
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > c->srv->cfg.max_body_bytes) {
        c->err_status = 413;
        return HPE_USER;
    }
    /* The body is welcome: say so now, or the client waits (curl ~1 s) before sending it
     * (RFC 9110 10.1.1). Parsing runs only while no response is owed, so this interim
     * response cannot land inside another one. */
    if (c->expect_continue && c->has_len && p->http_major == 1 && p->http_minor >= 1) {
        static const char k_continue[] = "HTTP/1.1 100 Continue\r\n\r\n";
        /* fails when the client left a large earlier response unread: closed, so stop */
        if (conn_write3(c, k_continue, sizeof k_continue - 1, NULL, 0, NULL, 0)) return HPE_USER;
    }
    return 0;
}
/* A chunk announced larger than the body limit is refused before its bytes arrive. */
static int on_chunk_header(llhttp_t *p) {
    tm_http_conn *c = conn_of(p);
    if (p->content_length > c->srv->cfg.max_body_bytes - c->body.n) {
        c->err_status = 413;
        return HPE_USER;
    }
    return 0;
}
static int on_body(llhttp_t *p, const char *at, size_t n) {
    tm_http_conn *c = conn_of(p);
    if (c->body.n + n > c->srv->cfg.max_body_bytes) {
        c->err_status = 413;
        return HPE_USER;
    }
    return buf_add(&c->body, at, n) ? HPE_USER : 0;
}
static int on_message_complete(llhttp_t *p) {
    tm_http_conn *c = conn_of(p);
    c->keep_alive = llhttp_should_keep_alive(p);
    c->http11 = p->http_major > 1 || (p->http_major == 1 && p->http_minor >= 1);
    return HPE_PAUSED; /* one request at a time; conn_parse resumes after the response */
}

/* ---- reading and dispatch ---- */

/* READING -> HANDLING: hands the complete request to the handler. */
static void dispatch(tm_http_conn *c) {
    conn_set_state(c, S_HANDLING);
    char *q = c->url.p ? strchr(c->url.p, '?') : NULL;
    if (q) *q = 0;
    /* Every tm_buf is NUL-terminated (or empty), so the body is too. */
    c->req = (tm_http_request){
        .conn = c,
        .seq = ++c->srv->n_requests,
        .method = buf_str(&c->method),
        .path = buf_str(&c->url),
        .authorization = c->auth.n ? c->auth.p : NULL,
        .content_type = c->ctype.n ? c->ctype.p : NULL,
        .has_body_length = c->has_len,
        .body = buf_str(&c->body),
        .body_len = c->body.n,
        .t_start = c->t_start,
        .user = NULL,
    };
    c->srv->h.on_request(c->srv->h.arg, &c->req);
}

/* IDLE or READING: parses buffered input, dispatching each complete request, until one
 * is left with the handler, the input runs out, 1 MiB of answers waits unsent, or a
 * request is bad. Only the loop's callbacks call this: on_read, on_written, on_resume. */
static void conn_parse(tm_http_conn *c) {
    while ((c->state == S_IDLE || c->state == S_READING) && c->in_off < c->in.n &&
           !write_backlogged(c)) {
        const char *start = c->in.p + c->in_off;
        llhttp_errno_t e = llhttp_execute(&c->parser, start, c->in.n - c->in_off);
        /* A callback closed c (the 100 Continue could not be queued): a request
         * completed in the same bytes must not reach the handler, which would keep c
         * after it is freed, as nothing would tell it the client is gone. */
        if (c->state == S_CLOSED) return;
        if (e == HPE_OK) {
            c->in_off = c->in.n;
        } else if (e == HPE_PAUSED) { /* on_message_complete: one request at a time */
            c->in_off = (size_t)(llhttp_get_error_pos(&c->parser) - c->in.p);
            llhttp_resume(&c->parser);
            dispatch(c);
        } else {
            int status = c->err_status ? c->err_status : 400;
            char msg[160];
            if (c->err_msg)
                snprintf(msg, sizeof msg, "%s", c->err_msg);
            else if (status == 413)
                snprintf(msg, sizeof msg, "request headers or body too large");
            else if (e == HPE_PAUSED_H2_UPGRADE)
                snprintf(msg, sizeof msg, "HTTP/2 is not supported; use HTTP/1.1");
            else
                snprintf(msg, sizeof msg, "malformed HTTP request: %s",
                         c->parser.reason ? c->parser.reason : llhttp_errno_name(e));
            respond_error(c, status, msg);
        }
    }
    if (c->state == S_CLOSED) return;
    /* Whatever stopped the loop has its own way back: more input (on_read), the answers
     * written (on_written), or a response that ends (end_request). */
    uv_idle_stop(&c->resume);
    if (c->in_off == c->in.n) {
        c->in_off = 0;
        buf_clear(&c->in);
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b) {
    static __thread char slab[65536]; /* loop thread only; data is copied at once */
    (void)h, (void)suggested;
    *b = uv_buf_init(slab, sizeof slab);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b) {
    tm_http_conn *c = st->data;
    if (c->state == S_CLOSED) return;
    if (nread < 0) { /* EOF or error: the client is gone */
        conn_close(c);
        return;
    }
    /* FLUSHING, ERROR_SENT and LINGERING discard input (see conn_state). */
    if (nread == 0 || c->state == S_FLUSHING || c->state == S_ERROR_SENT ||
        c->state == S_LINGERING)
        return;
    if (buf_add(&c->in, b->base, (size_t)nread)) {
        conn_close(c);
        return;
    }
    const tm_http_config *cfg = &c->srv->cfg;
    if ((owes_response(c) || write_backlogged(c)) &&
        c->in.n - c->in_off > cfg->max_header_bytes + cfg->max_body_bytes) {
        /* backpressure on a pipelining client; resumed by end_request or on_written */
        uv_read_stop(st);
        c->reading = 0;
    }
    if (c->state == S_IDLE || c->state == S_READING) conn_parse(c);
}

static void conn_read_start(tm_http_conn *c) {
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0) c->reading = 1;
}

/* Bytes the client sent that wait unread in the kernel (0 when unknown). */
static int conn_unread_bytes(tm_http_conn *c) {
    uv_os_fd_t fd;
    int n = 0;
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0 || ioctl(fd, FIONREAD, &n) != 0) return 0;
    return n;
}

/* IDLE, READING, FLUSHING or ERROR_SENT (the others stop the timer or replace it). */
static void on_timeout(uv_timer_t *t) {
    tm_http_conn *c = t->data;
    if (owes_response(c) || c->state == S_CLOSED) return;
    const int parsing = c->state == S_IDLE || c->state == S_READING;
    /* libuv runs timers before it polls: after a handler kept this thread busy longer
     * than the timeout, the client's bytes may be waiting unread. The delay was ours.
     * (Only while a request may be arriving: other states discard input unread.) */
    if (parsing && c->reading && conn_unread_bytes(c) > 0) {
        timer_arm(c);
        return;
    }
    /* A large response still going out to a client that reads it is not idleness: wait
     * on while it makes progress; one that read nothing for a whole timeout is dropped. */
    size_t unsent = uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
    if (c->n_writes > 0 && unsent < c->unsent_at_arm) {
        timer_arm(c);
        return;
    }
    /* Nothing was read: a 408 would never leave either. An error already answered
     * (ERROR_SENT) waits here for its writes, and used to wait forever: the timer that
     * closes a LINGERING connection starts only once they are done. */
    if (c->n_writes > 0 || !parsing) {
        conn_close(c);
        return;
    }
    if (c->state == S_READING || c->in.n > c->in_off)
        respond_error(c, 408, "request not received in time");
    else
        conn_close(c);
}

static void timer_arm(tm_http_conn *c) {
    if (uv_is_active((uv_handle_t *)&c->timer)) return;
    /* The loop's clock is cached at the start of its iteration; a handler that ran long
     * on this thread (tokenizing a large prompt) would leave the timer already expired. */
    uv_update_time(c->srv->loop);
    c->unsent_at_arm = uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
    uv_timer_start(&c->timer, on_timeout, (uint64_t)c->srv->cfg.timeout_ms, 0);
}

static void on_connection(uv_stream_t *l, int status) {
    tm_http_server *s = l->data;
    if (status < 0) return;
    tm_http_conn *c = calloc(1, sizeof *c);
    if (!c) return;
    c->srv = s;
    uv_tcp_init(s->loop, &c->tcp);
    uv_timer_init(s->loop, &c->timer);
    uv_idle_init(s->loop, &c->resume);
    c->tcp.data = c->timer.data = c->resume.data = c;
    c->state = S_IDLE;
    c->n_handles = 3;
    s->n_handles++;
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    s->n_conns++;
    llhttp_init(&c->parser, HTTP_REQUEST, &s->settings);
    c->parser.data = c;
    if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    if (s->n_conns > s->cfg.max_connections) {
        respond_error(c, 503, "too many connections");
        return;
    }
    conn_read_start(c);
    timer_arm(c);
}

/* ---- server ---- */

static void on_listener_closed(uv_handle_t *h) {
    tm_http_server *s = h->data;
    s->n_handles--;
    server_maybe_free(s);
}


int tm_http_create(uv_loop_t *loop, const char *host, int port, const tm_http_config *cfg,
                   const tm_http_handlers *h, tm_http_server **out, char *err, size_t err_len) {
    struct sockaddr_storage addr;
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&addr) != 0 &&
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)&addr) != 0)
        return tm_fail(err, err_len, TM_EINVAL, "invalid host address '%s'", host);
    tm_http_server *s = calloc(1, sizeof *s);
    if (!s) return tm_fail(err, err_len, TM_ENOMEM, "out of memory");
    s->loop = loop;
    s->cfg = *cfg;
    s->h = *h;
    llhttp_settings_init(&s->settings);
    s->settings.on_message_begin = on_message_begin;
    s->settings.on_method = on_method;
    s->settings.on_url = on_url;
    s->settings.on_header_field = on_header_field;
    s->settings.on_header_value = on_header_value;
    s->settings.on_header_value_complete = on_header_value_complete;
    s->settings.on_headers_complete = on_headers_complete;
    s->settings.on_chunk_header = on_chunk_header;
    s->settings.on_body = on_body;
    s->settings.on_message_complete = on_message_complete;
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    s->n_handles = 1;
    s->listening = 1;
    int rc = uv_tcp_bind(&s->listener, (const struct sockaddr *)&addr, 0);
    if (rc == 0) rc = uv_listen((uv_stream_t *)&s->listener, 511, on_connection);
    if (rc != 0) {
        tm_fail(err, err_len, TM_EIO, "cannot listen on %s:%d: %s", host, port, uv_strerror(rc));
        s->destroying = 1;
        s->listening = 0;
        uv_close((uv_handle_t *)&s->listener, on_listener_closed); /* frees s */
        uv_run(loop, UV_RUN_NOWAIT);
        *out = NULL;
        return TM_EIO;
    }
    struct sockaddr_storage bound;
    int len = sizeof bound;
    uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &len);
    s->port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
    *out = s;
    return 0;
}

int tm_http_port(const tm_http_server *s) { return s->port; }
int tm_http_n_connections(const tm_http_server *s) { return s->n_conns; }

void tm_http_stop_accepting(tm_http_server *s) {
    if (!s->listening) return;
    s->listening = 0;
    uv_close((uv_handle_t *)&s->listener, on_listener_closed);
    for (tm_http_conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (owes_response(c)) c->keep_alive = 0; /* end_request closes it */
        else if (c->state == S_IDLE && c->n_writes > 0) conn_set_state(c, S_FLUSHING);
        else if (c->n_writes == 0) conn_close(c);
    }
}

void tm_http_destroy(tm_http_server *s) {
    if (!s) return;
    tm_http_stop_accepting(s);
    while (s->conns) conn_close(s->conns);
    s->destroying = 1;
    server_maybe_free(s);
}
