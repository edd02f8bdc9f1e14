/* http.h - a small HTTP/1.1 server on libuv + llhttp.
 *
 * Knows sockets, parsing, limits and response framing; knows nothing of the API. One
 * request per connection is handled at a time: when a request is complete the parser
 * pauses, and the next pipelined request is parsed only after the current response has
 * ended, by the loop (never from inside the call that ends a response), so responses
 * always leave in request order and a handler's request stays intact while it answers.
 *
 * Limits: header bytes (URL + header fields/values) and body bytes are bounded (413 when
 * exceeded, then the connection closes); a connection that sends nothing, or does not
 * finish its request, within timeout_ms is closed (408 if a request had begun); at most
 * max_connections are open (one more is answered 503 and closed).
 *
 * Every function here is for the loop thread only. */
#ifndef TM_HTTP_H
#define TM_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tm_http_server tm_http_server;
typedef struct tm_http_conn tm_http_conn;

/* One request, from the moment it is complete until its response ends. The HTTP layer
 * owns it (one per connection); the handler borrows it. It and every string it points to
 * stay valid while on_request runs, and after that until the call that ends the response
 * (tm_http_respond, tm_http_stream_end) has returned, or on_gone has. body is
 * NUL-terminated. */
typedef struct tm_http_request {
    tm_http_conn *conn;        /* answer with tm_http_respond or tm_http_stream_* on this */
    uint64_t seq;              /* requests dispatched by this server so far, this one
                                  included (1, 2, ...): a name for logs */
    const char *method;        /* "GET", "POST", ... */
    const char *path;          /* URL path without the query string */
    const char *authorization; /* Authorization header value, or NULL */
    const char *content_type;  /* Content-Type header value, or NULL */
    int has_body_length;       /* Content-Length or chunked framing was present */
    const char *body;          /* body bytes (NUL-terminated) */
    size_t body_len;           /* bytes in body */
    double t_start;            /* tm_time_s() when the request's first byte was parsed */
    void *user;                /* the handler's, for this request (NULL at dispatch) */
} tm_http_request;

typedef struct tm_http_handlers {
    /* A complete request. The handler must eventually call tm_http_respond or
     * tm_http_stream_begin ... tm_http_stream_end on req->conn, now or later. */
    void (*on_request)(void *arg, tm_http_request *req);
    /* The connection closed while the handler still owed req a response (req->user is
     * what the handler left there). Neither req nor its conn may be used after this. */
    void (*on_gone)(void *arg, tm_http_request *req);
    /* Renders an error body for a status the HTTP layer answers on its own (400, 408,
     * 413, 503); returns a malloc'd JSON string. Called once per such response, so the
     * handler may count and log it here. */
    char *(*error_body)(void *arg, int status, const char *message);
    void *arg;
} tm_http_handlers;

typedef struct tm_http_config {
    size_t max_header_bytes; /* URL + header names and values of one request */
    size_t max_body_bytes;   /* body of one request */
    int timeout_ms;          /* idle / slow-request timeout */
    int max_connections;     /* open connections at most */
    size_t max_write_queue;  /* unsent bytes before a slow reader is dropped (one response
                                alone may exceed it) */
} tm_http_config;

/* 16 KiB headers, 8 MiB body, 30 s timeout, 1024 connections, 16 MiB write queue. */
void tm_http_config_default(tm_http_config *c);

/* Binds host:port and starts listening on loop. port 0 picks a free port (see
 * tm_http_port). Errors: TM_EINVAL (bad address), TM_EIO (bind/listen), with err. */
int tm_http_create(uv_loop_t *loop, const char *host, int port, const tm_http_config *cfg,
                   const tm_http_handlers *h, tm_http_server **out, char *err, size_t err_len);
int tm_http_port(const tm_http_server *s);
/* Stops accepting new connections; idle keep-alive connections are closed, busy ones are
 * closed as soon as their response ends. */
void tm_http_stop_accepting(tm_http_server *s);
/* Connections still open. */
int tm_http_n_connections(const tm_http_server *s);
/* Closes every connection (on_gone for those owing a response) and the listener; the
 * server is freed once libuv has closed all handles (run the loop afterwards). */
void tm_http_destroy(tm_http_server *s);

/* Sends a complete response and ends the request. extra_headers: "" or lines each ending
 * in "\r\n". Copies body; leaves it out (Content-Length stays) for a HEAD request. */
void tm_http_respond(tm_http_conn *c, int status, const char *content_type,
                     const char *extra_headers, const char *body, size_t len);
/* Starts a streamed response (e.g. text/event-stream); then write chunks and end. Chunked
 * for HTTP/1.1 clients; an HTTP/1.0 client gets the bytes as they are and the connection
 * closes at the end. */
void tm_http_stream_begin(tm_http_conn *c, int status, const char *content_type);
/* Returns 0, or TM_EBUSY when the client is not reading and the queue limit is hit (the
 * connection is then closed and on_gone follows). Copies data. */
int tm_http_stream_write(tm_http_conn *c, const char *data, size_t len);
void tm_http_stream_end(tm_http_conn *c);

/* "Not Found" etc. for a status code. */
const char *tm_http_reason(int status);

#ifdef __cplusplus
}
#endif
#endif
