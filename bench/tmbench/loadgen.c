/* loadgen.c - the libuv load generator (see loadgen.h).
 *
 * One connection carries one request at a time. Its lifetime: created (or taken from the
 * idle list) -> connect -> write the request -> read: llhttp splits the response, the
 * 200 body goes through the SSE parser, each event is decoded with jansson and stamped
 * with the time of the read that brought it -> the message completes -> the record is
 * filled, the connection goes back to the idle list (keep-alive) or is closed. */
#include "bench/tmbench/loadgen.h"

#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <llhttp.h>
#include <uv.h>

#include "bench/tmbench/rng.h"
#include "bench/tmbench/sse.h"
#include "common/common.h"

#define SSE_MAX_BYTES (8u << 20) /* one SSE line or event at most */
#define ERRBODY_MAX 2048         /* bytes of a non-200 body kept for the message */

typedef struct loadgen loadgen;

typedef struct conn {
    uv_tcp_t tcp;                   /* the socket */
    uv_timer_t timer;               /* the request's deadline */
    uv_connect_t connect_req;       /* the pending connect */
    uv_write_t write_req;           /* the pending write */
    llhttp_t http;                  /* response parser, re-initialized per request */
    tm_sse sse;                     /* event-stream parser for a 200 body */
    loadgen *g;                     /* owner */
    struct conn *prev, *next;       /* the list of all connections */
    struct conn *idle_prev, *idle_next; /* the idle list, when idle */
    int is_idle;                    /* on the idle list */
    int open_handles;               /* tcp + timer not yet closed */
    int closing;                    /* uv_close was called */
    int connected;                  /* the socket is connected */
    int req;                        /* request in flight, -1 when idle */
    int reused;                     /* this request came on a used connection */
    int got_bytes;                  /* a response byte came for this request */
    int msg_done;                   /* the response message is complete */
    int status;                     /* HTTP status of the response */
    double start_t;                 /* when the request was sent (tm_time_s) */
    double now;                     /* when the bytes being parsed were read */
    double first_choice_t;          /* first event with a choice (0: none yet) */
    double last_choice_t;           /* last event with a choice */
    double last_content_t;          /* last event with output text */
    int cache_n;                    /* llama.cpp's timings.cache_n, -1 if absent */
    char errmsg[512];               /* why this request fails ("" while fine) */
    char errbody[ERRBODY_MAX];      /* a non-200 body (prefix) */
    size_t errbody_len;             /* bytes in errbody */
    char hdr[1536];                 /* the request's header block */
    size_t hdr_len;                 /* bytes in hdr */
    char rbuf[65536];               /* read buffer */
} conn;

struct loadgen {
    const tm_bench_load *cfg;
    uv_loop_t loop;
    uv_timer_t arrival_timer;       /* fires at the next scheduled arrival */
    uv_timer_t progress_timer;      /* redraws the progress bar */
    llhttp_settings_t http_cbs;     /* shared by all parsers */
    tm_bench_spec *specs;           /* (n_total,) initial ones, then follow-ups */
    tm_bench_record *recs;          /* (n_total,) */
    double *arrival;                /* (n_initial,) scheduled offsets, s */
    unsigned char *retried;         /* (n_total,) a request was re-sent once already */
    int *queue;                     /* (n_total,) FIFO of arrived, unsent requests */
    int q_head, q_tail;             /* queue[q_head..q_tail) */
    int n_initial, n_total, n_specs;/* scheduled / capacity / specs so far */
    int next_arrival;               /* the next scheduled request not yet arrived */
    int in_flight, finished;        /* requests sent and unfinished / finished */
    int n_failed;                   /* finished and failed */
    long long n_chunks;             /* output chunks so far, for the progress bar */
    double t0, t_end;               /* run start, last completion (tm_time_s) */
    conn *all;                      /* every open connection */
    conn *idle;                     /* idle connections, most recent first */
    int stopping;                   /* everything finished; handles are closing */
    int fatal;                      /* an allocation failed in the loop */
};

/* ---- connections ---- */

static void set_err(conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_err(conn *c, const char *fmt, ...) {
    if (c->errmsg[0]) return; /* the first cause is the one worth telling */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->errmsg, sizeof c->errmsg, fmt, ap);
    va_end(ap);
}

static void idle_remove(loadgen *g, conn *c) {
    if (!c->is_idle) return;
    if (c->idle_prev) c->idle_prev->idle_next = c->idle_next;
    else g->idle = c->idle_next;
    if (c->idle_next) c->idle_next->idle_prev = c->idle_prev;
    c->idle_prev = c->idle_next = NULL;
    c->is_idle = 0;
}

static void idle_push(loadgen *g, conn *c) {
    c->idle_prev = NULL;
    c->idle_next = g->idle;
    if (g->idle) g->idle->idle_prev = c;
    g->idle = c;
    c->is_idle = 1;
}

static void on_handle_closed(uv_handle_t *h) {
    conn *c = h->data;
    if (--c->open_handles) return;
    tm_sse_deinit(&c->sse);
    free(c);
}

static void conn_close(conn *c) {
    if (c->closing) return;
    loadgen *g = c->g;
    c->closing = 1;
    idle_remove(g, c);
    if (c->prev) c->prev->next = c->next;
    else g->all = c->next;
    if (c->next) c->next->prev = c->prev;
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

static int on_event(void *user, const char *data, size_t len);

static conn *conn_new(loadgen *g) {
    conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->g = g;
    c->req = -1;
    if (uv_tcp_init(&g->loop, &c->tcp)) {
        free(c);
        return NULL;
    }
    c->tcp.data = c;
    c->open_handles = 1;
    uv_timer_init(&g->loop, &c->timer);
    c->timer.data = c;
    c->open_handles = 2;
    tm_sse_init(&c->sse, SSE_MAX_BYTES, on_event, c);
    c->next = g->all;
    if (g->all) g->all->prev = c;
    g->all = c;
    return c;
}

/* ---- the run's bookkeeping ---- */

static void start_request(loadgen *g, int idx, int fresh);

static void dispatch_pending(loadgen *g) {
    const int cap = g->cfg->max_concurrency;
    while (g->q_head < g->q_tail && (cap <= 0 || g->in_flight < cap)) start_request(g, g->queue[g->q_head++], 0);
}

static void maybe_stop(loadgen *g) {
    if (g->stopping || g->in_flight || g->q_head < g->q_tail || g->next_arrival < g->n_initial ||
        g->finished < g->n_specs)
        return;
    g->stopping = 1;
    uv_close((uv_handle_t *)&g->arrival_timer, NULL);
    uv_close((uv_handle_t *)&g->progress_timer, NULL);
    while (g->all) conn_close(g->all);
}

static void enqueue(loadgen *g, int idx, double arrival_s) {
    g->recs[idx].arrival_s = arrival_s;
    g->queue[g->q_tail++] = idx;
}

/* The request on c is over: fill its record, hand the connection back or close it, and
 * let the next requests go. c may be freed when this returns (keep == 0). */
static void finish_request(conn *c, int keep) {
    loadgen *g = c->g;
    const int idx = c->req;
    tm_bench_record *r = &g->recs[idx];
    uv_timer_stop(&c->timer);
    if (!c->errmsg[0] && c->status != 200) {
        char msg[400];
        tm_bench_error_text(c->errbody, c->errbody_len, msg, sizeof msg);
        set_err(c, "HTTP %d: %s", c->status, msg);
    }
    /* Tokens whose text is empty (a synthetic model's padding pieces, control tokens) still
     * count when the server's usage says it generated them: TTFT is then the first choice
     * event. Without text and without such usage the request failed. */
    if (!c->errmsg[0] && r->n_chunks == 0) {
        if (r->output_tokens > 0 && c->first_choice_t > 0) r->ttft_s = c->first_choice_t - c->start_t;
        else set_err(c, "the stream carried no output text");
    }
    r->ok = !c->errmsg[0];
    if (r->ok) {
        double last = fmax(c->last_choice_t, c->last_content_t);
        r->latency_s = last - c->start_t;
        if (r->output_tokens <= 0) r->output_tokens = r->n_chunks;
        if (r->cached_tokens < 0 && c->cache_n >= 0) r->cached_tokens = c->cache_n;
    } else {
        r->error = strdup(c->errmsg);
        g->n_failed++;
    }
    c->req = -1;
    g->in_flight--;
    g->finished++;
    g->t_end = tm_time_s();
    if (keep) idle_push(g, c);
    else conn_close(c);

    const tm_bench_load *cfg = g->cfg;
    if (cfg->followup && g->n_specs < g->n_total) {
        tm_bench_spec next = {0};
        int rc = cfg->followup(cfg->followup_user, idx, &g->specs[idx], r, &next);
        if (rc == 1) {
            g->specs[g->n_specs] = next;
            enqueue(g, g->n_specs++, tm_time_s() - g->t0);
        }
    }
    dispatch_pending(g);
    maybe_stop(g);
}

/* Fails the request on c and closes c. */
static void fail_and_close(conn *c) { finish_request(c, 0); }

/* ---- HTTP and SSE callbacks ---- */

static int on_headers_complete(llhttp_t *p) {
    conn *c = p->data;
    c->status = p->status_code;
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n) {
    conn *c = p->data;
    if (c->status != 200) {
        size_t room = sizeof c->errbody - c->errbody_len;
        size_t k = n < room ? n : room;
        memcpy(c->errbody + c->errbody_len, at, k);
        c->errbody_len += k;
        return 0;
    }
    int rc = tm_sse_feed(&c->sse, at, n);
    if (rc == TM_ERANGE) set_err(c, "an SSE line or event longer than %u bytes", SSE_MAX_BYTES);
    else if (rc == TM_ENOMEM) set_err(c, "out of memory reading the stream");
    return rc ? -1 : 0;
}

static int on_message_complete(llhttp_t *p) {
    conn *c = p->data;
    if (c->status == 200 && tm_sse_finish(&c->sse)) return -1;
    c->msg_done = 1;
    return HPE_PAUSED;
}

static int append_text(tm_bench_record *r, const char *s, size_t n) {
    char *t = realloc(r->text, r->text_len + n + 1);
    if (!t) return -1;
    memcpy(t + r->text_len, s, n);
    r->text_len += n;
    t[r->text_len] = 0;
    r->text = t;
    return 0;
}

static int json_int(json_t *obj, const char *key, int fallback) {
    json_t *v = json_object_get(obj, key);
    return json_is_integer(v) ? (int)json_integer_value(v) : fallback;
}

/* One SSE event of a 200 stream. */
static int on_event(void *user, const char *data, size_t len) {
    conn *c = user;
    loadgen *g = c->g;
    if (len == 6 && !memcmp(data, "[DONE]", 6)) return 0;
    json_error_t je;
    json_t *j = json_loadb(data, len, 0, &je);
    if (!json_is_object(j)) {
        set_err(c, "malformed SSE event (%s): %.*s", j ? "not an object" : je.text, (int)(len < 80 ? len : 80), data);
        json_decref(j);
        return -1;
    }
    tm_bench_record *r = &g->recs[c->req];
    json_t *e = json_object_get(j, "error");
    if (e && !json_is_null(e)) {
        char msg[400];
        tm_bench_error_text(data, len, msg, sizeof msg);
        set_err(c, "error in the stream: %s", msg);
        json_decref(j);
        return -1;
    }
    json_t *choices = json_object_get(j, "choices");
    if (json_is_array(choices) && json_array_size(choices) > 0) {
        json_t *ch = json_array_get(choices, 0), *t;
        if (g->cfg->chat) {
            json_t *delta = json_object_get(ch, "delta");
            t = json_object_get(delta, "content");
            if (!json_is_string(t) || json_string_length(t) == 0) t = json_object_get(delta, "reasoning_content");
        } else {
            t = json_object_get(ch, "text");
        }
        if (c->first_choice_t == 0) c->first_choice_t = c->now;
        c->last_choice_t = c->now;
        if (json_is_string(t) && json_string_length(t) > 0) {
            if (r->n_chunks == 0) r->ttft_s = c->now - c->start_t;
            else if (tm_bench_record_add_itl(r, c->now - c->last_content_t)) set_err(c, "out of memory");
            c->last_content_t = c->now;
            r->n_chunks++;
            g->n_chunks++;
            if (g->cfg->keep_text && append_text(r, json_string_value(t), json_string_length(t)))
                set_err(c, "out of memory");
        }
    }
    json_t *u = json_object_get(j, "usage");
    if (json_is_object(u)) {
        r->output_tokens = json_int(u, "completion_tokens", r->output_tokens);
        r->prompt_tokens = json_int(u, "prompt_tokens", r->prompt_tokens);
        json_t *d = json_object_get(u, "prompt_tokens_details");
        if (json_is_object(d)) r->cached_tokens = json_int(d, "cached_tokens", r->cached_tokens);
    }
    json_t *tim = json_object_get(j, "timings"); /* llama.cpp's own fields */
    if (json_is_object(tim)) c->cache_n = json_int(tim, "cache_n", c->cache_n);
    json_decref(j);
    return c->errmsg[0] ? -1 : 0;
}

/* ---- libuv callbacks ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    conn *c = h->data;
    buf->base = c->rbuf;
    buf->len = sizeof c->rbuf;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    conn *c = s->data;
    if (c->closing || nread == 0) return;
    if (c->req < 0) { /* an idle connection: the server closed it (or babbled) */
        conn_close(c);
        return;
    }
    if (nread > 0) {
        c->now = tm_time_s();
        c->got_bytes = 1;
        llhttp_errno_t e = llhttp_execute(&c->http, buf->base, (size_t)nread);
        if (c->errmsg[0]) {
            fail_and_close(c);
        } else if (e == HPE_PAUSED && c->msg_done) {
            const char *pos = llhttp_get_error_pos(&c->http);
            int trailing = pos && pos < buf->base + nread; /* bytes after the response */
            finish_request(c, !trailing && llhttp_should_keep_alive(&c->http));
        } else if (e != HPE_OK) {
            set_err(c, "malformed HTTP response: %s", llhttp_get_error_reason(&c->http));
            fail_and_close(c);
        }
        return;
    }
    /* the connection ended */
    c->now = tm_time_s();
    if (nread == UV_EOF && c->got_bytes) {
        llhttp_finish(&c->http); /* completes a body that ends at the close */
        if (!c->errmsg[0] && c->msg_done) {
            finish_request(c, 0);
            return;
        }
    }
    loadgen *g = c->g;
    if (c->reused && !c->got_bytes && !g->retried[c->req]) {
        /* the server had closed this idle keep-alive connection: send again, once */
        int idx = c->req;
        g->retried[idx] = 1;
        c->req = -1;
        uv_timer_stop(&c->timer);
        conn_close(c);
        g->in_flight--;
        start_request(g, idx, 1);
        return;
    }
    if (nread == UV_EOF)
        set_err(c, "the server closed the connection %s (%d output chunks received)",
                c->got_bytes ? "mid-response" : "before answering", g->recs[c->req].n_chunks);
    else
        set_err(c, "read: %s (%d output chunks received)", uv_strerror((int)nread), g->recs[c->req].n_chunks);
    fail_and_close(c);
}

static void on_write(uv_write_t *w, int status) {
    conn *c = w->data;
    if (status == UV_ECANCELED || c->closing || c->req < 0) return;
    if (status < 0) {
        set_err(c, "send: %s", uv_strerror(status));
        fail_and_close(c);
    }
}

static void write_request(conn *c) {
    const tm_bench_spec *sp = &c->g->specs[c->req];
    uv_buf_t bufs[2] = {uv_buf_init(c->hdr, (unsigned)c->hdr_len), uv_buf_init(sp->body, (unsigned)sp->body_len)};
    c->write_req.data = c;
    int rc = uv_write(&c->write_req, (uv_stream_t *)&c->tcp, bufs, 2, on_write);
    if (rc) {
        set_err(c, "send: %s", uv_strerror(rc));
        fail_and_close(c);
    }
}

static void on_connect(uv_connect_t *req, int status) {
    conn *c = req->data;
    if (status == UV_ECANCELED || c->closing || c->req < 0) return;
    if (status < 0) {
        set_err(c, "cannot connect to %s: %s", c->g->cfg->target->base_url, uv_strerror(status));
        fail_and_close(c);
        return;
    }
    c->connected = 1;
    uv_tcp_nodelay(&c->tcp, 1);
    int rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (rc) {
        set_err(c, "read: %s", uv_strerror(rc));
        fail_and_close(c);
        return;
    }
    write_request(c);
}

static void on_timeout(uv_timer_t *t) {
    conn *c = t->data;
    if (c->closing || c->req < 0) return;
    set_err(c, "no complete response within %.0f s (%d output chunks received)", c->g->cfg->timeout_s,
            c->g->recs[c->req].n_chunks);
    fail_and_close(c);
}

/* Sends request idx, on an idle connection unless fresh is set. */
static void start_request(loadgen *g, int idx, int fresh) {
    const tm_bench_load *cfg = g->cfg;
    conn *c = fresh ? NULL : g->idle;
    if (c) idle_remove(g, c);
    else c = conn_new(g);
    tm_bench_record *r = &g->recs[idx];
    double arrival = r->arrival_s;
    int prompt = g->specs[idx].prompt_tokens;
    tm_bench_record_clear(r); /* a re-sent request starts over */
    r->arrival_s = arrival;
    r->prompt_tokens = prompt;
    r->cached_tokens = -1;
    g->in_flight++;
    if (!c) {
        r->ok = 0;
        r->error = strdup("cannot create a connection");
        g->in_flight--;
        g->finished++;
        g->n_failed++;
        return;
    }
    c->req = idx;
    c->reused = c->connected;
    c->got_bytes = c->msg_done = c->status = 0;
    c->errmsg[0] = 0;
    c->errbody_len = 0;
    c->cache_n = -1;
    c->first_choice_t = c->last_choice_t = c->last_content_t = 0;
    llhttp_init(&c->http, HTTP_RESPONSE, &g->http_cbs);
    c->http.data = c;
    tm_sse_reset(&c->sse);
    const tm_bench_target *t = cfg->target;
    int n = snprintf(c->hdr, sizeof c->hdr,
                     "POST %s%s HTTP/1.1\r\nHost: %s:%d\r\n%sContent-Type: application/json\r\n"
                     "Accept: text/event-stream\r\nContent-Length: %zu\r\n\r\n",
                     t->prefix, cfg->path, t->host, t->port, t->auth_header, g->specs[idx].body_len);
    c->hdr_len = (size_t)(n < (int)sizeof c->hdr ? n : (int)sizeof c->hdr - 1);
    c->start_t = tm_time_s();
    r->start_s = c->start_t - g->t0;
    uv_timer_start(&c->timer, on_timeout, (uint64_t)(cfg->timeout_s * 1000.0), 0);
    if (c->connected) {
        write_request(c);
        return;
    }
    c->connect_req.data = c;
    int rc = uv_tcp_connect(&c->connect_req, &c->tcp, (const struct sockaddr *)&t->addr, on_connect);
    if (rc) {
        set_err(c, "cannot connect to %s: %s", t->base_url, uv_strerror(rc));
        fail_and_close(c);
    }
}

/* ---- arrivals and progress ---- */

void tm_bench_arrivals(int n, double rate, double burstiness, uint64_t seed, double *out) {
    if (n <= 0) return;
    if (!(rate > 0) || isinf(rate) || !(burstiness > 0)) {
        for (int i = 0; i < n; i++) out[i] = 0;
        return;
    }
    tm_rng rng;
    tm_rng_seed(&rng, seed);
    double t = 0;
    for (int i = 0; i < n; i++) {
        t += isinf(burstiness) ? 1.0 / rate : tm_bench_rng_gamma(&rng, burstiness, 1.0 / (rate * burstiness));
        out[i] = t;
    }
    /* scale so the run's length does not depend on the draw (n requests in n / rate s) */
    if (out[n - 1] > 0) {
        double f = (n / rate) / out[n - 1];
        for (int i = 0; i < n; i++) out[i] *= f;
    }
}

static void on_arrival(uv_timer_t *t) {
    loadgen *g = t->data;
    double now = tm_time_s() - g->t0;
    while (g->next_arrival < g->n_initial && g->arrival[g->next_arrival] <= now + 5e-4) {
        enqueue(g, g->next_arrival, g->arrival[g->next_arrival]);
        g->next_arrival++;
    }
    dispatch_pending(g);
    if (g->next_arrival < g->n_initial) {
        double wait = g->arrival[g->next_arrival] - (tm_time_s() - g->t0);
        uv_timer_start(t, on_arrival, wait > 0 ? (uint64_t)ceil(wait * 1000.0) : 0, 0);
    }
    maybe_stop(g);
}

static void draw_progress(loadgen *g, int last) {
    const int width = 30;
    int total = g->n_specs > g->n_initial ? g->n_specs : g->n_initial;
    if (g->cfg->followup && g->n_total > total) total = g->n_total;
    int fill = total ? (int)((long long)g->finished * width / total) : width;
    char bar[64];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
    bar[width] = 0;
    double el = tm_time_s() - g->t0;
    fprintf(stderr, "\r[%s] %d/%d requests, %d failed, %.1f s, %.0f output chunks/s%s", bar, g->finished,
            total, g->n_failed, el, el > 0 ? g->n_chunks / el : 0.0, last ? "\n" : "");
    fflush(stderr);
}

static void on_progress(uv_timer_t *t) { draw_progress(t->data, 0); }

/* ---- the run ---- */

int tm_bench_load_run(const tm_bench_load *cfg, tm_bench_spec *specs, int n_initial, int n_total,
                      tm_bench_record *recs, int *n_done, double *duration_s, char *err,
                      size_t err_len) {
    if (n_initial < 0 || n_total < n_initial || !(cfg->timeout_s > 0))
        return tm_fail(err, err_len, TM_EINVAL, "bad load configuration");
    signal(SIGPIPE, SIG_IGN); /* a peer that closes mid-write must not kill the client */
    loadgen *g = calloc(1, sizeof *g);
    if (!g) return tm_fail(err, err_len, TM_ENOMEM, "out of memory");
    int rc = TM_ENOMEM;
    g->cfg = cfg;
    g->specs = specs;
    g->recs = recs;
    g->n_initial = g->n_specs = n_initial;
    g->n_total = n_total;
    g->arrival = malloc(sizeof(double) * (size_t)(n_initial + 1));
    g->queue = malloc(sizeof(int) * (size_t)(n_total + 1));
    g->retried = calloc((size_t)n_total + 1, 1);
    if (!g->arrival || !g->queue || !g->retried) {
        tm_fail(err, err_len, rc, "out of memory");
        goto done;
    }
    tm_bench_arrivals(n_initial, cfg->request_rate, cfg->burstiness, cfg->seed, g->arrival);
    memset(recs, 0, sizeof *recs * (size_t)n_total);
    llhttp_settings_init(&g->http_cbs);
    g->http_cbs.on_headers_complete = on_headers_complete;
    g->http_cbs.on_body = on_body;
    g->http_cbs.on_message_complete = on_message_complete;
    if (uv_loop_init(&g->loop)) {
        rc = tm_fail(err, err_len, TM_EIO, "cannot create an event loop");
        goto done;
    }
    uv_timer_init(&g->loop, &g->arrival_timer);
    uv_timer_init(&g->loop, &g->progress_timer);
    g->arrival_timer.data = g->progress_timer.data = g;
    g->t0 = g->t_end = tm_time_s();
    uv_timer_start(&g->arrival_timer, on_arrival, 0, 0);
    if (cfg->progress) uv_timer_start(&g->progress_timer, on_progress, 250, 250);
    if (n_initial == 0) maybe_stop(g);
    uv_run(&g->loop, UV_RUN_DEFAULT);
    if (cfg->progress) draw_progress(g, 1);
    uv_loop_close(&g->loop);
    *n_done = g->n_specs;
    *duration_s = g->t_end - g->t0;
    rc = 0;
done:
    free(g->arrival);
    free(g->queue);
    free(g->retried);
    free(g);
    return rc;
}
