/* generate.c - `tokenmill generate`: submits one request to the engine and prints its
 * events as they arrive, as serve does for a streamed completion. Batching, chunked
 * prefill, sampling, detokenization, stop strings and end-of-generation tokens all
 * happen in the engine, so generate and serve share one generation path.
 *
 * Output contract: stdout gets exactly the generated text (no trailing newline); stderr
 * gets the prompt, errors and one line of timings. */
#include "server/generate.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/common.h"
#include "models/model.h"
#include "models/sampler.h"
#include "scheduler/engine.h"
#include "server/cli_args.h"
#include "server/cli_backend.h"

typedef struct gen_opts {
    const char *model;             /* GGUF path, or NULL for the default model */
    const char *synthetic;         /* --synthetic PRESET:TYPE, or NULL */
    const char *device;            /* --device: cpu, cuda or auto */
    const char *prompt;            /* the text to continue */
    long n_predict;                /* tokens to generate at most */
    long threads;                  /* CPU workers, 0 = one per CPU */
    tm_sampling_params sampling;   /* --temp, --top-p, ... and the seed */
    const char *stop[TM_MAX_STOP]; /* (n_stop) --stop strings, borrowed from argv */
    int n_stop;
} gen_opts;

/* The engine thread's wake-up: on_event sets pending, the main thread waits for it. */
typedef struct gen_wake {
    pthread_mutex_t mu;  /* guards pending */
    pthread_cond_t cv;   /* signalled when pending is set */
    int pending;         /* events were queued since the last wait */
} gen_wake;

enum { WAIT_MS = 100 }; /* one wait's bound; a lost wake-up costs at most this */

static void usage(FILE *f) {
    fprintf(f,
            "usage: tokenmill generate -p TEXT [options]\n"
            "  -m, --model PATH        GGUF model (the default model)\n"
            "  --synthetic PRESET:TYPE random weights of a real shape, built in memory, for\n"
            "                          speed tests (the text is meaningless)\n"
            "  --device auto|cpu|cuda  where to run (auto: CUDA when usable, else CPU)\n"
            "  -p, --prompt TEXT       the text to continue (required)\n"
            "  -n, --n-predict N       tokens to generate at most (128)\n"
            "  --stop STR              end before STR; repeatable, up to %d\n"
            "  --temp T                temperature, 0 = greedy (0.8)\n"
            "  --top-p P               nucleus sampling (0.95)\n"
            "  --top-k K               top-k sampling, 0 = off (40)\n"
            "  --min-p P               min-p sampling (0.05)\n"
            "  --repeat-penalty R      repetition penalty (1 = off)\n"
            "  --seed S                sampling seed (the time)\n"
            "  -t, --threads N         CPU threads (one per CPU)\n"
            "stdout gets exactly the generated text; the prompt and timings go to stderr.\n",
            TM_MAX_STOP);
}

/* Returns 0, 1 after printing the usage, or 2 on a usage error (reported). */
static int parse_opts(int argc, char **argv, gen_opts *o) {
    memset(o, 0, sizeof *o);
    o->n_predict = 128;
    o->device = "auto";
    long top_k = 40;
    tm_sampling_params *sp = &o->sampling;
    tm_sampling_params_default(sp);
    sp->temperature = 0.8f;
    sp->top_p = 0.95f;
    sp->min_p = 0.05f;
    sp->seed = (uint64_t)time(NULL);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 1;
        }
        if (!v) {
            fprintf(stderr, "tokenmill generate: %s needs a value\n", a);
            return 2;
        }
        long lv;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            o->model = v;
        } else if (!strcmp(a, "--synthetic")) {
            o->synthetic = v;
        } else if (!strcmp(a, "--device")) {
            if (!tm_cli_device_ok(v)) {
                fprintf(stderr, "tokenmill generate: --device must be auto, cpu or cuda, not '%s'\n", v);
                return 2;
            }
            o->device = v;
        } else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) {
            o->prompt = v;
        } else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) {
            if (tm_cli_long("generate", a, v, 1, 1 << 20, &o->n_predict)) return 2;
        } else if (!strcmp(a, "--threads") || !strcmp(a, "-t")) {
            if (tm_cli_long("generate", a, v, 1, 1024, &o->threads)) return 2;
        } else if (!strcmp(a, "--stop")) {
            if (!v[0]) {
                fprintf(stderr, "tokenmill generate: --stop needs a non-empty string\n");
                return 2;
            }
            if (o->n_stop == TM_MAX_STOP) {
                fprintf(stderr, "tokenmill generate: at most %d --stop strings\n", TM_MAX_STOP);
                return 2;
            }
            o->stop[o->n_stop++] = v;
        } else if (!strcmp(a, "--temp")) {
            if (tm_cli_float("generate", a, v, 0.0f, 100.0f, &sp->temperature)) return 2;
        } else if (!strcmp(a, "--top-p")) {
            if (tm_cli_float("generate", a, v, 0.0f, 1.0f, &sp->top_p)) return 2;
        } else if (!strcmp(a, "--min-p")) {
            if (tm_cli_float("generate", a, v, 0.0f, 1.0f, &sp->min_p)) return 2;
        } else if (!strcmp(a, "--top-k")) {
            if (tm_cli_long("generate", a, v, 0, 1 << 24, &top_k)) return 2;
        } else if (!strcmp(a, "--repeat-penalty")) {
            if (tm_cli_float("generate", a, v, 0.01f, 100.0f, &sp->repetition_penalty)) return 2;
        } else if (!strcmp(a, "--seed")) {
            if (tm_cli_long("generate", a, v, 0, 0x7fffffffL, &lv)) return 2;
            sp->seed = (uint64_t)lv;
        } else {
            fprintf(stderr, "tokenmill generate: unknown option '%s' (see tokenmill generate --help)\n", a);
            return 2;
        }
        i++;
    }
    if (!o->prompt) {
        fprintf(stderr, "tokenmill generate: -p TEXT is required\n");
        return 2;
    }
    if (tm_cli_model_source_check("generate", "-m", o->model, o->synthetic)) return 2;
    sp->top_k = (int)top_k;
    return 0;
}

/* Engine thread, after it queued events. */
static void on_event(void *arg) {
    gen_wake *w = arg;
    pthread_mutex_lock(&w->mu);
    w->pending = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Returns once events were queued since the last call, or after WAIT_MS. */
static void wait_for_events(gen_wake *w) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += WAIT_MS * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&w->mu);
    int rc = 0;
    while (!w->pending && rc != ETIMEDOUT) rc = pthread_cond_timedwait(&w->cv, &w->mu, &until);
    w->pending = 0;
    pthread_mutex_unlock(&w->mu);
}

/* An engine for one request of n_tokens (prompt + -n): one sequence and a KV pool of
 * exactly the pages it needs, as the old private cache had. A request over the context
 * gets a pool for the context only; the engine's submit refuses it with the reason. */
static int create_engine(tm_model *m, int n_tokens, gen_wake *w, tm_engine **out) {
    tm_engine_config ec;
    tm_engine_config_default(&ec);
    const int n_ctx = tm_model_get_config(m)->n_ctx_train;
    if (n_ctx > 0) n_tokens = TM_MIN(n_tokens, n_ctx);
    size_t n_pages = (size_t)(n_tokens + ec.block_size - 1) / (size_t)ec.block_size;
    ec.kv_cache_bytes = n_pages * tm_model_kv_bytes_per_block(m, ec.block_size, ec.kv_dtype);
    ec.max_num_seqs = 1;
    ec.max_queue = 1;
    ec.enable_prefix_cache = 0; /* nothing to share with */
    ec.on_event = on_event;
    ec.on_event_arg = w;
    char err[512];
    if (tm_engine_create(m, &ec, out, err, sizeof err)) {
        fprintf(stderr, "tokenmill: engine: %s\n", err);
        return -1;
    }
    return 0;
}

/* Runs the request on a private engine and streams its text; returns the exit status. */
static int generate(tm_model *m, const gen_opts *o) {
    const tm_tokenizer *tok = tm_model_tokenizer(m);
    int32_t *ids = NULL;
    int n_prompt = 0, status = 1;
    tm_engine *e = NULL;
    gen_wake w = {.pending = 0};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);

    if (tm_tokenizer_encode(tok, o->prompt, strlen(o->prompt), 1, 1, &ids, &n_prompt) ||
        n_prompt == 0) {
        fprintf(stderr, "tokenmill: the prompt is empty after tokenization\n");
        goto done;
    }
    if (create_engine(m, n_prompt + (int)o->n_predict, &w, &e)) goto done;

    tm_request req;
    memset(&req, 0, sizeof req);
    req.prompt = ids;
    req.n_prompt = n_prompt;
    req.max_tokens = (int)o->n_predict;
    req.sampling = o->sampling;
    for (int i = 0; i < o->n_stop; i++) req.stop[i] = o->stop[i];
    req.n_stop = o->n_stop;
    char err[512];
    double t_submit = tm_time_s();
    int rc = tm_engine_submit(e, &req, NULL, err, sizeof err);
    if (rc) {
        if (rc == TM_ERANGE) fprintf(stderr, "tokenmill: -n %ld: %s\n", o->n_predict, err);
        else fprintf(stderr, "tokenmill: %s\n", err);
        goto done;
    }
    fputs(o->prompt, stderr);

    /* The engine always ends a request with one finishing event (max_tokens bounds it,
     * and a failed step aborts it), so this loop ends. */
    double t_first = 0, t_last = 0;
    tm_event last;
    memset(&last, 0, sizeof last);
    while (last.finish == TM_FINISH_NONE) {
        tm_event evs[16];
        int n = tm_engine_poll(e, evs, 16);
        if (n == 0) {
            wait_for_events(&w);
            continue;
        }
        for (int i = 0; i < n; i++) {
            if (evs[i].token >= 0) {
                t_last = tm_time_s();
                if (t_first == 0) t_first = t_last;
            }
            if (evs[i].text_len > 0) fwrite(evs[i].text, 1, evs[i].text_len, stdout);
            if (evs[i].finish != TM_FINISH_NONE) last = evs[i];
            tm_event_free(&evs[i]);
        }
        fflush(stdout);
    }
    if (last.finish == TM_FINISH_ABORT) {
        fprintf(stderr, "\ntokenmill: generation was aborted (see the error above)\n");
        goto done;
    }
    /* The stats line follows the prompt echo, and maybe the text on a shared terminal. */
    double ttft = t_first - t_submit, decode = t_last - t_first;
    int n_gen = last.completion_tokens;
    fprintf(stderr,
            "\ntokenmill: prompt %d tokens, first token after %.3f s (%.1f tok/s); generated %d "
            "tokens in %.3f s (%.1f tok/s)\n",
            n_prompt, ttft, n_prompt / (ttft + 1e-12), n_gen, decode,
            n_gen > 1 ? (n_gen - 1) / (decode + 1e-12) : 0.0);
    status = 0;
done:
    tm_engine_destroy(e);
    free(ids);
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
    return status;
}

int tm_generate_main(int argc, char **argv) {
    gen_opts o;
    int rc = parse_opts(argc, argv, &o);
    if (rc) return rc == 1 ? 0 : rc;
    tm_backend *be = tm_cli_backend_create("generate", o.device, (int)o.threads, 1);
    if (!be) return 1;
    tm_model *m = NULL;
    char err[512];
    int status = 1;
    rc = tm_cli_model_open("generate", o.model, o.synthetic, be, NULL, NULL, &m, err, sizeof err);
    if (rc) {
        fprintf(stderr, "tokenmill generate: %s\n", err);
        tm_cli_model_hint(rc, o.model, o.synthetic);
    } else {
        status = generate(m, &o);
    }
    tm_model_destroy(m);
    be->destroy(be);
    return status;
}
