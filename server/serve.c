/* serve.c - `tokenmill serve`: options, startup (backend, model, chat template, engine,
 * HTTP), the loop, and graceful shutdown.
 *
 * Shutdown: the first SIGINT/SIGTERM stops accepting connections and refuses new work;
 * requests in flight may finish for --shutdown-timeout seconds, then they are aborted
 * (streams end with finish_reason "abort"); after at most 2 more seconds every
 * connection is closed and the process exits 0. A second signal skips the wait. */
#include "server/serve.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "common/common.h"
#include "kernels/backend.h"
#include "models/model.h"
#include "scheduler/engine.h"
#include "server/api.h"
#include "server/chat_template.h"
#include "server/cli_args.h"
#include "server/cli_backend.h"
#include "server/http.h"

typedef struct serve_opts {
    const char *model;          /* GGUF path, or NULL for the default model */
    const char *synthetic;      /* --synthetic PRESET:TYPE, or NULL */
    const char *host;           /* bind address */
    int port;                   /* 0 picks a free port */
    const char *api_key;        /* or NULL */
    const char *served_name;    /* or NULL: the file name without .gguf */
    const char *device;         /* auto, cpu, cuda */
    long kv_mib;                /* KV pool size, 0 = engine default */
    const char *kv_dtype;       /* KV element type name, or NULL for f16 */
    long max_num_seqs, max_batched, max_queue; /* 0 = engine default */
    const char *chat_template;  /* override: name or file, or NULL */
    const char *tool_call_parser; /* hermes, llama3_json, mistral, or NULL: from the template */
    long threads;               /* CPU workers, 0 = one per CPU */
    long http_timeout_s;        /* idle / slow-request timeout */
    long max_connections;       /* open connections at most */
    long max_body_mib;          /* request body limit */
    double shutdown_timeout_s;  /* grace period for in-flight requests */
} serve_opts;

typedef struct serve_state {
    uv_loop_t loop;             /* the loop thread's loop (this thread) */
    uv_async_t wake;            /* engine -> loop: events are queued */
    uv_signal_t sigint, sigterm;
    uv_timer_t shutdown_timer;  /* polls the drain during shutdown */
    tm_api *api;
    tm_http_server *http;
    double shutdown_t0;         /* when the first signal came (0: running) */
    double shutdown_timeout_s;
    int aborted;                /* in-flight requests were aborted */
} serve_state;

static void usage(FILE *f) {
    fprintf(f,
            "usage: tokenmill serve [MODEL | --synthetic PRESET:TYPE] [options]\n"
            "  --synthetic PRESET:TYPE     random weights of a real shape built in memory, for\n"
            "                              speed tests (answers are meaningless; tokenmill synth\n"
            "                              --help lists presets and types)\n"
            "  --host ADDR                 bind address (127.0.0.1)\n"
            "  --port N                    port (8000; 0 picks a free one)\n"
            "  --api-key KEY               require 'Authorization: Bearer KEY' on /v1\n"
            "  --served-model-name NAME    the model name clients use (file name)\n"
            "  --device auto|cpu|cuda      (auto: CUDA if available, else CPU)\n"
            "  --kv-cache-mem MIB          KV-cache pool size (CPU: 256; CUDA: 0.9 of the device\n"
            "                              memory free after weights and activations)\n"
            "  --kv-cache-dtype f16|int8   KV element type (f16; int8 holds ~1.9x the tokens, CPU only)\n"
            "  --max-num-seqs N            running sequences at most\n"
            "  --max-num-batched-tokens N  tokens per engine step\n"
            "  --max-queue N               requests waiting beyond --max-num-seqs before 503 (1024)\n"
            "  --chat-template NAME|FILE   chatml, llama3, llama2, mistral, gemma, or a Jinja file\n"
            "  --tool-call-parser NAME     hermes, llama3_json or mistral (default: from the template)\n"
            "  --threads N                 CPU backend threads (one per CPU)\n"
            "  --http-timeout S            idle/slow-request timeout (30)\n"
            "  --max-connections N         open connections at most (1024)\n"
            "  --max-body-mib N            request body limit (8)\n"
            "  --shutdown-timeout S        grace period for requests on SIGTERM (10)\n");
}

static int parse_opts(int argc, char **argv, serve_opts *o) {
    memset(o, 0, sizeof *o);
    o->host = "127.0.0.1";
    o->port = 8000;
    o->device = "auto";
    o->http_timeout_s = 30;
    o->max_connections = 1024;
    o->max_body_mib = 8;
    o->shutdown_timeout_s = 10;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long n = 0;
#define STR_OPT(name, field) if (!strcmp(a, name)) { if (!v) goto missing; o->field = v; i++; continue; }
#define NUM_OPT(name, field, lo, hi) if (!strcmp(a, name)) { if (tm_cli_long("serve", a, v, lo, hi, &n)) return 2; o->field = n; i++; continue; }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 1;
        }
        STR_OPT("--host", host)
        STR_OPT("--api-key", api_key)
        STR_OPT("--served-model-name", served_name)
        STR_OPT("--device", device)
        STR_OPT("--synthetic", synthetic)
        STR_OPT("--chat-template", chat_template)
        STR_OPT("--tool-call-parser", tool_call_parser)
        STR_OPT("--kv-cache-dtype", kv_dtype)
        NUM_OPT("--port", port, 0, 65535)
        NUM_OPT("--kv-cache-mem", kv_mib, 1, 1L << 24)
        NUM_OPT("--max-num-seqs", max_num_seqs, 1, 1 << 16)
        NUM_OPT("--max-num-batched-tokens", max_batched, 1, 1 << 24)
        NUM_OPT("--max-queue", max_queue, 1, 1 << 24)
        NUM_OPT("--threads", threads, 1, 4096)
        NUM_OPT("--http-timeout", http_timeout_s, 1, 86400)
        NUM_OPT("--max-connections", max_connections, 1, 1 << 20)
        NUM_OPT("--max-body-mib", max_body_mib, 1, 4096)
        if (!strcmp(a, "--shutdown-timeout")) {
            if (tm_cli_long("serve", a, v, 0, 3600, &n)) return 2;
            o->shutdown_timeout_s = (double)n;
            i++;
            continue;
        }
        if (a[0] == '-') {
            fprintf(stderr, "tokenmill serve: unknown option %s (see --help)\n", a);
            return 2;
        }
        if (o->model) {
            fprintf(stderr, "tokenmill serve: more than one MODEL given ('%s', '%s')\n", o->model, a);
            return 2;
        }
        o->model = a;
        continue;
    missing:
        fprintf(stderr, "tokenmill serve: %s needs a value\n", a);
        return 2;
#undef STR_OPT
#undef NUM_OPT
    }
    if (!tm_cli_device_ok(o->device)) {
        fprintf(stderr, "tokenmill serve: --device must be auto, cpu or cuda, not '%s'\n", o->device);
        return 2;
    }
    if (tm_cli_model_source_check("serve", "MODEL", o->model, o->synthetic)) return 2;
    if (o->kv_dtype && tm_kv_dtype_from_name(o->kv_dtype) < 0) {
        fprintf(stderr, "tokenmill serve: --kv-cache-dtype must be f16 or int8, not '%s'\n", o->kv_dtype);
        return 2;
    }
    return 0;
}

/* The text of token id, NUL-terminated in buf ("" when id < 0). */
static const char *token_text(const tm_tokenizer *tok, int32_t id, char *buf, size_t cap) {
    size_t n = 0;
    const char *p = id >= 0 ? tm_tokenizer_piece(tok, id, &n) : "";
    snprintf(buf, cap, "%.*s", (int)TM_MIN(n, cap - 1), p ? p : "");
    return buf;
}

/* The chat template: --chat-template NAME (a built-in family) or FILE (a Jinja template),
 * else the model's own tokenizer.chat_template, rendered by the Jinja interpreter. A model
 * without one, or with one that does not parse, falls back to its recognised family. */
static int pick_template(const serve_opts *o, const tm_model *m, tm_chat_template *t,
                         tm_tool_format *tools) {
    char err[600], bos[64], eos[64];
    const tm_tokenizer *tok = tm_model_tokenizer(m);
    token_text(tok, tm_tokenizer_bos(tok), bos, sizeof bos);
    token_text(tok, tm_tokenizer_eos(tok), eos, sizeof eos);
    if (o->chat_template) {
        if (tm_chat_template_from_name(o->chat_template, t) == 0) return 0;
        FILE *f = fopen(o->chat_template, "rb");
        if (!f) {
            fprintf(stderr, "tokenmill serve: --chat-template '%s' is neither chatml, llama3, "
                    "llama2, mistral, gemma nor a readable file\n", o->chat_template);
            return -1;
        }
        char *text = malloc(1 << 20);
        size_t n = text ? fread(text, 1, 1 << 20, f) : 0;
        int too_big = text && n == (1 << 20) && fgetc(f) != EOF;
        fclose(f);
        int rc = !text ? TM_ENOMEM : too_big ? TM_ERANGE
                 : tm_chat_template_from_jinja(text, n, bos, eos, t, err, sizeof err);
        if (text) *tools = tm_tool_format_detect(text, n);
        if (too_big) snprintf(err, sizeof err, "the template is larger than 1 MiB");
        free(text);
        if (rc) fprintf(stderr, "tokenmill serve: %s: %s\n", o->chat_template, err);
        return rc ? -1 : 0;
    }
    const char *jinja = NULL;
    size_t len = 0;
    tm_gguf_get_str(tm_model_gguf(m), "tokenizer.chat_template", &jinja, &len);
    *tools = tm_tool_format_detect(jinja, len);
    if (jinja && len && tm_chat_template_from_jinja(jinja, len, bos, eos, t, err, sizeof err) == 0)
        return 0;
    if (jinja && len) TM_WARNF("serve: %s; using the built-in format of its family", err);
    if (!jinja || !len) {
        /* no template in the file (the Gemma 3 270M GGUF on PyPI has none): the format its
         * architecture's models are trained on, where that is one family */
        const char *arch = tm_model_get_config(m)->arch;
        const char *family = !strncmp(arch, "gemma", 5) ? "gemma" : !strncmp(arch, "qwen", 4) ? "chatml" : NULL;
        if (family && tm_chat_template_from_name(family, t) == 0) {
            fprintf(stderr, "tokenmill serve: the model has no chat template; using %s's (%s)\n", arch, family);
            return 0;
        }
    }
    char *text = jinja ? strndup(jinja, len) : NULL;
    int rc = tm_chat_template_detect(text, t, err, sizeof err);
    free(text);
    if (rc) {
        fprintf(stderr, "tokenmill serve: %s\n", err);
        return -1;
    }
    return 0;
}

/* ---- loading progress ---- */

typedef struct load_progress {
    int tty;      /* stderr is a terminal: redraw one bar with \r */
    double t0;    /* load start */
    int logged;   /* quarters already logged (plain mode) */
    int open;     /* the bar's line has no newline yet (tty mode) */
} load_progress;

/* Called once per loaded block. A terminal gets a bar redrawn in place; a log file gets
 * a line per quarter, so logs stay short and grep-able. */
static void on_load_progress(void *arg, int done, int total) {
    load_progress *p = arg;
    double dt = tm_time_s() - p->t0;
    if (total <= 0) return;
    if (p->tty) {
        enum { W = 30 };
        char bar[W + 1];
        int fill = (int)((long)done * W / total);
        for (int i = 0; i < W; i++) bar[i] = i < fill ? '#' : '-';
        bar[W] = 0;
        fprintf(stderr, "\rloading [%s] %3d%% %d/%d layers %.1f s", bar, done * 100 / total,
                done, total, dt);
        p->open = done < total;
        if (!p->open) fputc('\n', stderr);
        fflush(stderr);
        return;
    }
    int quarter = (int)((long)done * 4 / total);
    if (quarter > p->logged && done < total) {
        p->logged = quarter;
        TM_INFOF("serve: loading: %d/%d layers (%.1f s)", done, total, dt);
    }
}

/* ---- loop callbacks ---- */

static void on_wake(uv_async_t *h) { tm_api_drain(((serve_state *)h->data)->api); }

/* Engine thread: events are queued. uv_async_send is the one thread-safe libuv call. */
static void notify_loop(void *arg) { uv_async_send(arg); }

static void close_all(serve_state *s) {
    tm_http_destroy(s->http);
    s->http = NULL;
    uv_close((uv_handle_t *)&s->wake, NULL);
    uv_close((uv_handle_t *)&s->sigint, NULL);
    uv_close((uv_handle_t *)&s->sigterm, NULL);
    uv_close((uv_handle_t *)&s->shutdown_timer, NULL);
}

static void on_shutdown_tick(uv_timer_t *t) {
    serve_state *s = t->data;
    tm_api_drain(s->api);
    double waited = tm_time_s() - s->shutdown_t0;
    if (tm_api_n_inflight(s->api) == 0 || waited > s->shutdown_timeout_s + 2.0) {
        TM_INFOF("serve: stopped (%d requests left)", tm_api_n_inflight(s->api));
        uv_timer_stop(t);
        close_all(s);
        return;
    }
    if (!s->aborted && waited >= s->shutdown_timeout_s) {
        TM_INFOF("serve: aborting %d requests still running", tm_api_n_inflight(s->api));
        s->aborted = 1;
        tm_api_abort_all(s->api);
    }
}

static void on_signal(uv_signal_t *h, int signum) {
    serve_state *s = h->data;
    if (s->shutdown_t0 == 0) {
        TM_INFOF("serve: %s: stopping; %d requests in flight get %.0f s to finish",
                 signum == SIGINT ? "SIGINT" : "SIGTERM", tm_api_n_inflight(s->api),
                 s->shutdown_timeout_s);
        s->shutdown_t0 = tm_time_s();
        tm_api_set_draining(s->api);
        tm_http_stop_accepting(s->http);
        uv_timer_start(&s->shutdown_timer, on_shutdown_tick, 0, 50);
    } else if (!s->aborted) {
        TM_INFOF("serve: second signal: aborting everything now");
        s->shutdown_timeout_s = tm_time_s() - s->shutdown_t0; /* abort at the next tick */
    }
}

/* Fraction of the device memory still free once the weights and the activations for the
 * largest step are allocated that the KV cache takes by default, as vLLM's
 * --gpu-memory-utilization 0.9 (which counts all of the device's memory; counting what is
 * free leaves other processes on the device alone). The 10% left covers the CUDA context,
 * library workspaces and allocator slack. */
#define DEVICE_KV_FRACTION 0.9

/* On a backend with its own memory (memory_info), sets *bytes to DEVICE_KV_FRACTION of
 * what is free after reserving the engine's activations; returns 0 (nothing set) for a
 * host backend or when the query fails. */
static int device_kv_default(tm_model *m, const tm_engine_config *ec, size_t *bytes) {
    tm_backend *be = tm_model_backend(m);
    size_t free_b = 0, total_b = 0;
    if (!be->memory_info) return 0;
    /* the engine reserves the same at create; doing it first makes it count as used */
    if (tm_model_reserve(m, ec->max_num_batched_tokens, ec->max_num_seqs) != 0) return 0;
    if (be->memory_info(be, &free_b, &total_b) != 0 || free_b == 0) return 0;
    *bytes = (size_t)((double)free_b * DEVICE_KV_FRACTION);
    return 1;
}

int tm_serve_main(int argc, char **argv) {
    serve_opts o;
    int rc = parse_opts(argc, argv, &o);
    if (rc) return rc == 1 ? 0 : rc;
    signal(SIGPIPE, SIG_IGN);

    int status = 1;
    char err[512], buf[1024];
    tm_backend *be = NULL;
    tm_model *model = NULL;
    tm_engine *engine = NULL;
    tm_api_config ac = {0}; /* here: `done` frees its chat template */
    serve_state s;
    memset(&s, 0, sizeof s);
    s.shutdown_timeout_s = o.shutdown_timeout_s;
    uv_loop_init(&s.loop);

    const char *path = o.synthetic ? o.synthetic : o.model ? o.model : tm_model_default_path(buf, sizeof buf);
    if (!(be = tm_cli_backend_create("serve", o.device, (int)o.threads, 1))) goto done;
    if (!o.synthetic) TM_INFOF("serve: loading %s", path);
    double t0 = tm_time_s();
    load_progress lp = {.tty = isatty(STDERR_FILENO), .t0 = t0};
    if ((rc = tm_cli_model_open("serve", o.model, o.synthetic, be, on_load_progress, &lp, &model, err,
                                sizeof err))) {
        if (lp.open) fputc('\n', stderr); /* do not print the error on the bar's line */
        fprintf(stderr, "tokenmill serve: %s\n", err);
        tm_cli_model_hint(rc, o.model, o.synthetic);
        goto done;
    }
    const tm_model_config *mc = tm_model_get_config(model);
    TM_INFOF("serve: loaded %s (%s, %d layers, context %d) in %.1f s", mc->name, mc->arch,
             mc->n_layers, mc->n_ctx_train, tm_time_s() - t0);
    const char *synthetic = tm_cli_model_synthetic(model);

    if (pick_template(&o, model, &ac.chat, &ac.tool_format)) goto done;
    if (o.tool_call_parser && tm_tool_format_from_name(o.tool_call_parser, &ac.tool_format)) {
        fprintf(stderr, "tokenmill serve: --tool-call-parser must be hermes, llama3_json or mistral\n");
        goto done;
    }
    char name[256];
    if (!o.served_name && o.synthetic) {
        o.served_name = o.synthetic;
    } else if (!o.served_name) { /* the file name without its directory and .gguf */
        const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
        snprintf(name, sizeof name, "%s", base);
        size_t n = strlen(name);
        if (n > 5 && !strcmp(name + n - 5, ".gguf")) name[n - 5] = 0;
        o.served_name = name;
    }
    ac.served_model_name = o.served_name;
    ac.api_key = o.api_key;

    uv_async_init(&s.loop, &s.wake, on_wake);
    s.wake.data = &s;
    tm_engine_config ec;
    tm_engine_config_default(&ec);
    if (o.kv_dtype) ec.kv_dtype = (tm_kv_dtype)tm_kv_dtype_from_name(o.kv_dtype);
    if (o.max_num_seqs) ec.max_num_seqs = (int)o.max_num_seqs;
    if (o.max_batched) ec.max_num_batched_tokens = (int)o.max_batched;
    if (o.max_queue) ec.max_queue = (int)o.max_queue;
    const char *kv_how = "--kv-cache-mem";
    if (o.kv_mib) {
        ec.kv_cache_bytes = (size_t)o.kv_mib << 20;
    } else if (device_kv_default(model, &ec, &ec.kv_cache_bytes)) {
        kv_how = "0.9 of free device memory";
    } else {
        kv_how = "default";
    }
    ec.on_event = notify_loop;
    ec.on_event_arg = &s.wake;
    if ((rc = tm_engine_create(model, &ec, &engine, err, sizeof err))) {
        fprintf(stderr, "tokenmill serve: engine: %s\n", err);
        uv_close((uv_handle_t *)&s.wake, NULL);
        goto done;
    }
    ac.loop = &s.loop;
    if ((rc = tm_api_create(engine, &ac, &s.api, err, sizeof err))) {
        fprintf(stderr, "tokenmill serve: %s\n", err);
        uv_close((uv_handle_t *)&s.wake, NULL);
        goto done;
    }
    tm_http_config hc;
    tm_http_config_default(&hc);
    hc.timeout_ms = (int)o.http_timeout_s * 1000;
    hc.max_connections = (int)o.max_connections;
    hc.max_body_bytes = (size_t)o.max_body_mib << 20;
    tm_http_handlers hh;
    tm_api_http_handlers(s.api, &hh);
    if ((rc = tm_http_create(&s.loop, o.host, o.port, &hc, &hh, &s.http, err, sizeof err))) {
        fprintf(stderr, "tokenmill serve: %s\n", err);
        uv_close((uv_handle_t *)&s.wake, NULL);
        goto done;
    }
    uv_signal_init(&s.loop, &s.sigint);
    uv_signal_init(&s.loop, &s.sigterm);
    uv_timer_init(&s.loop, &s.shutdown_timer);
    s.sigint.data = s.sigterm.data = s.shutdown_timer.data = &s;
    uv_signal_start(&s.sigint, on_signal, SIGINT);
    uv_signal_start(&s.sigterm, on_signal, SIGTERM);

    TM_INFOF("serve: chat template %s%s; KV cache %zu MiB %s (%s); %s",
             ac.chat.jinja ? "jinja, family " : "", tm_chat_format_name(ac.chat.format),
             ec.kv_cache_bytes >> 20, tm_kv_dtype_name(ec.kv_dtype), kv_how,
             o.api_key ? "API key required" : "no API key");
    if (synthetic)
        printf("tokenmill: serving %s on http://%s:%d (synthetic model %s: random weights, answers "
               "are meaningless)\n", o.served_name, o.host, tm_http_port(s.http), synthetic);
    else
        printf("tokenmill: serving %s on http://%s:%d\n", o.served_name, o.host, tm_http_port(s.http));
    fflush(stdout);
    uv_run(&s.loop, UV_RUN_DEFAULT);
    status = 0;
done:
    /* The engine may still call notify_loop while it aborts; the loop (and the fd behind
     * uv_async_send) stays valid until uv_loop_close below. */
    if (engine) tm_engine_destroy(engine);
    tm_api_destroy(s.api);
    tm_chat_template_deinit(&ac.chat);
    uv_run(&s.loop, UV_RUN_NOWAIT);
    if (uv_loop_close(&s.loop) != 0) TM_WARNF("serve: loop closed with handles open");
    tm_model_destroy(model);
    if (be) be->destroy(be);
    return status;
}
