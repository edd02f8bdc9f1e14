/* engine.c - the engine thread: inbox of submits and aborts, the step loop
 * (schedule -> ragged batch -> forward -> sample -> output), outbox of events. */
#define _GNU_SOURCE /* pthread_setname_np */
#include "scheduler/engine.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/common.h"
#include "scheduler/block_manager.h"
#include "scheduler/scheduler.h"
#include "scheduler/sequence.h"

/* Invariants:
 * - Fields under "shared" are read and written only with mu held; everything else
 *   belongs to the engine thread after create (or is immutable).
 * - A sequence is in exactly one place: the inbox, the scheduler, or freed (after its
 *   finishing event was queued).
 * - Batch buffers hold max_num_batched_tokens tokens and max_num_seqs sequences, which
 *   the scheduler never exceeds, so a step allocates nothing but event texts. */
struct tm_engine {
    tm_model *model;              /* borrowed */
    tm_engine_config cfg;         /* copied at create */
    const tm_tokenizer *tok;      /* the model's, immutable */
    int n_vocab;                  /* logits per row */
    int n_ctx;                    /* longest prompt + max_tokens accepted */
    size_t max_piece;             /* longest token piece in bytes */
    int n_blocks;                 /* KV pages in the pool */
    int max_blocks;               /* block-table row stride: ceil(n_ctx / block_size) */
    tm_kv_cache *kv;              /* the model's paged KV pool */
    tm_block_manager *bm;         /* page ids, refcounts, prefix cache */
    tm_scheduler *sched;          /* queues and policy */

    int32_t *b_tokens;            /* (max_num_batched_tokens) batch token ids */
    int32_t *b_pos;               /* (max_num_batched_tokens) positions */
    int32_t *b_slots;             /* (max_num_batched_tokens) KV slots */
    int32_t *b_seq_start;         /* (max_num_seqs + 1) token offsets */
    int32_t *b_ctx_len;           /* (max_num_seqs) context after the step */
    int32_t *b_block_table;       /* (max_num_seqs, max_blocks) page ids */
    int32_t *b_logit_rows;        /* (max_num_seqs) rows that are sampled */
    int32_t *greedy;              /* (max_num_seqs) argmax of each logits row of the step */
    float *raw;                   /* (n_vocab) a row before sampling, for logprobs */
    void *sample_scratch;         /* tm_sampler_scratch_bytes(n_vocab) */
    uint64_t *aborts_work;        /* (cap_aborts_work) ids being applied this round */
    int cap_aborts_work;          /* its capacity */
    uint64_t n_prompt_computed;   /* prompt tokens prefilled (stats) */
    uint64_t n_generated;         /* tokens generated (stats) */
    int n_pushed;                 /* events queued since on_event was last called */

    pthread_t thread;             /* the engine thread */
    int started;                  /* thread was created */
    pthread_mutex_t mu;           /* guards the shared fields below */
    pthread_cond_t cv;            /* signalled on submit, abort and stop */
    /* shared */
    tm_seq *inbox_head, *inbox_tail; /* submitted, not yet seen by the engine (via next) */
    /* Requests accepted by submit whose final event is not yet queued: the admission
     * count. It lives here, under mu, because both of its ends happen under mu: submit
     * (any thread) counts a request as it queues it, push_event (engine thread) uncounts
     * it as it queues its last event, just before the sequence is freed. So it is exact at
     * every instant, where the stats snapshot lags a whole step, and a caller that keeps
     * its own count would lag until it drains the events. */
    int n_inflight;
    uint64_t *aborts;             /* (cap_aborts) ids to abort */
    int n_aborts, cap_aborts;     /* pending aborts, capacity */
    int stopping;                 /* destroy was called */
    uint64_t next_id;             /* last id handed out */
    tm_event *events;             /* (cap_events) outbox, oldest first */
    int n_events, cap_events;     /* queued events, capacity */
    tm_engine_stats stats;        /* snapshot published after each step */
};

void tm_engine_config_default(tm_engine_config *c) {
    memset(c, 0, sizeof *c);
    c->kv_cache_bytes = (size_t)256 << 20;
    c->block_size = 16;
    c->max_num_seqs = 64;
    c->max_num_batched_tokens = 2048;
    c->max_queue = 1024;
    c->enable_prefix_cache = 1;
}

void tm_event_free(tm_event *ev) {
    if (!ev) return;
    free(ev->text);
    ev->text = NULL;
    ev->text_len = 0;
}

/* ---- outbox ---- */

static void push_event(tm_engine *e, tm_event *ev) {
    pthread_mutex_lock(&e->mu);
    if (e->n_events == e->cap_events) {
        /* Grows rarely (only while the consumer lags); events are never dropped. */
        int cap = e->cap_events ? 2 * e->cap_events : 256;
        tm_event *p = realloc(e->events, (size_t)cap * sizeof *p);
        if (!p) {
            if (ev->finish != TM_FINISH_NONE) e->n_inflight--; /* it ends all the same */
            pthread_mutex_unlock(&e->mu);
            TM_ERRORF("engine: out of memory queueing an event for request %llu",
                      (unsigned long long)ev->id);
            tm_event_free(ev);
            return;
        }
        e->events = p;
        e->cap_events = cap;
    }
    e->events[e->n_events++] = *ev;
    if (ev->finish != TM_FINISH_NONE) e->n_inflight--;
    pthread_mutex_unlock(&e->mu);
    e->n_pushed++;
}

static char *dup_text(const char *s, size_t n) {
    char *t = malloc(n + 1);
    if (!t) return NULL;
    memcpy(t, s, n);
    t[n] = '\0';
    return t;
}

static void fill_usage(tm_event *ev, const tm_seq *s) {
    ev->prompt_tokens = s->n_prompt;
    ev->completion_tokens = s->n_tokens - s->n_prompt;
    ev->cached_tokens = s->n_cached;
    ev->t_arrival = s->t_arrival;
    ev->t_scheduled = s->t_scheduled;
    ev->t_first_token = s->t_first_token;
    ev->t_last_token = s->t_last_token;
}

/* Queues the final event of s with no token, frees its pages and s. */
static void finish_abort(tm_engine *e, tm_seq *s) {
    tm_event ev;
    memset(&ev, 0, sizeof ev);
    ev.id = s->id;
    ev.user = s->user;
    ev.text = dup_text("", 0);
    ev.token = -1;
    ev.finish = TM_FINISH_ABORT;
    fill_usage(&ev, s);
    push_event(e, &ev);
    tm_sched_finish(e->sched, s);
    tm_seq_destroy(s);
}

/* ---- one step ---- */

/* Flattens the schedule into the ragged batch. */
static void build_batch(tm_engine *e, const tm_schedule *sc, tm_batch *b) {
    int bs = e->cfg.block_size, t = 0, n_logits = 0;
    for (int i = 0; i < sc->n_seqs; i++) {
        const tm_seq *s = sc->seqs[i];
        e->b_seq_start[i] = t;
        for (int p = sc->start[i]; p < sc->start[i] + sc->n_new[i]; p++, t++) {
            e->b_tokens[t] = s->tokens[p];
            e->b_pos[t] = p;
            e->b_slots[t] = s->block_table[p / bs] * bs + p % bs;
        }
        e->b_ctx_len[i] = sc->start[i] + sc->n_new[i];
        memcpy(e->b_block_table + (size_t)i * e->max_blocks, s->block_table,
               (size_t)s->n_blocks * sizeof *s->block_table);
        if (sc->sample[i]) e->b_logit_rows[n_logits++] = t - 1;
        /* Positions below n_prompt are prompt prefill, the rest recompute/decode. */
        int prompt_end = TM_MIN(s->n_prompt, sc->start[i] + sc->n_new[i]);
        if (prompt_end > sc->start[i]) e->n_prompt_computed += (uint64_t)(prompt_end - sc->start[i]);
    }
    e->b_seq_start[sc->n_seqs] = t;
    b->n_tokens = t;
    b->n_seqs = sc->n_seqs;
    b->tokens = e->b_tokens;
    b->pos = e->b_pos;
    b->seq_start = e->b_seq_start;
    b->ctx_len = e->b_ctx_len;
    b->block_table = e->b_block_table;
    b->max_blocks = e->max_blocks;
    b->slots = e->b_slots;
    b->n_logits = n_logits;
    b->logit_rows = e->b_logit_rows;
}

/* Takes s's next token (picked: its row's argmax when its sampler is plain greedy, else
 * -1 and the sampler runs on row), runs output processing, queues the event and retires
 * s when it finished. row (host memory) may be NULL when picked >= 0 and s wants no
 * logprobs. */
static void emit_token(tm_engine *e, tm_seq *s, float *row, int32_t picked) {
    tm_event ev;
    memset(&ev, 0, sizeof ev);
    if (s->logprobs) memcpy(e->raw, row, (size_t)e->n_vocab * sizeof *row);
    int32_t tok = picked >= 0 ? picked
                              : tm_sampler_sample(&s->sampler, row, e->n_vocab, s->tokens, s->n_prompt,
                                                  s->tokens + s->n_prompt, s->n_tokens - s->n_prompt,
                                                  e->sample_scratch);
    if (tok < 0) { /* a logit processor failed or forbade every token */
        TM_WARNF("engine: request %llu ends: its logit processors left no token (%s)",
                 (unsigned long long)s->id, tm_strerror(tok));
        finish_abort(e, s);
        return;
    }
    s->tokens[s->n_tokens++] = tok;
    e->n_generated++;
    s->t_last_token = tm_time_s();
    if (s->t_first_token == 0) s->t_first_token = s->t_last_token;
    ev.id = s->id;
    ev.user = s->user;
    ev.token = tok;
    if (s->logprobs) {
        ev.logprob = tm_logprob_of(e->raw, e->n_vocab, tok);
        if (s->top_logprobs > 0) {
            tm_logprobs_top(e->raw, e->n_vocab, s->top_logprobs, ev.top_ids, ev.top_logprobs);
            ev.n_top = s->top_logprobs;
        }
    }
    size_t n = tm_output_push_token(&s->out, tok, s->delta, &ev.finish);
    if (ev.finish == TM_FINISH_NONE && s->n_tokens >= s->cap_tokens)
        ev.finish = TM_FINISH_LENGTH; /* unreachable: max_tokens ends it first */
    ev.text = dup_text(s->delta, n);
    ev.text_len = ev.text ? n : 0;
    if (ev.finish != TM_FINISH_NONE) fill_usage(&ev, s);
    push_event(e, &ev);
    if (ev.finish != TM_FINISH_NONE) {
        tm_sched_finish(e->sched, s);
        tm_seq_destroy(s);
    }
}

/* Returns the number of sequences that ran. */
static int step(tm_engine *e) {
    tm_schedule sc;
    if (tm_sched_schedule(e->sched, &sc) == 0) return 0;
    tm_batch b;
    const double now = tm_time_s();
    for (int i = 0; i < sc.n_seqs; i++)
        if (sc.seqs[i]->t_scheduled == 0) sc.seqs[i]->t_scheduled = now; /* queue time ends */
    build_batch(e, &sc, &b);
    char err[256] = "";
    int rc = tm_model_forward(e->model, e->kv, &b, NULL, err, sizeof err);
    /* Greedy rows take their token from one argmax over the step's logits on the backend
     * (sampled one row at a time it took 462-531 us of a 16-sequence CPU step, 266-323 as
     * one op; a device backend copies only the token ids). Rows that sample or report
     * logprobs need their logits in host memory. */
    int n_rows = 0, n_greedy = 0, need_host = 0;
    for (int i = 0; i < sc.n_seqs; i++) {
        if (!sc.sample[i]) continue;
        /* A greedy row under a mask (a grammar) takes the argmax too when the mask allows
         * it; only a refused one is sampled from its processed row on the host. */
        const int greedy = tm_sampler_is_checked_argmax(&sc.seqs[i]->sampler);
        n_rows++;
        n_greedy += greedy;
        need_host |= !greedy || sc.seqs[i]->logprobs;
    }
    if (rc == TM_OK && n_greedy > 0 && (rc = tm_model_logits_argmax(e->model, n_rows, e->greedy)))
        snprintf(err, sizeof err, "reading the greedy tokens failed");
    float *logits = NULL;
    if (rc == TM_OK && need_host && !(logits = tm_model_logits_host(e->model))) {
        rc = TM_EIO;
        snprintf(err, sizeof err, "copying the logits to the host failed");
    }
    if (rc != TM_OK) {
        /* The step's results are unusable; end its requests rather than retry forever. */
        TM_ERRORF("engine: forward failed (%s): %s; aborting %d requests", tm_strerror(rc), err,
                  sc.n_seqs);
        for (int i = 0; i < sc.n_seqs; i++) finish_abort(e, sc.seqs[i]);
        return sc.n_seqs;
    }
    tm_sched_update(e->sched, &sc);
    for (int i = 0, next_row = 0; i < sc.n_seqs; i++) {
        if (!sc.sample[i]) continue;
        const int row = next_row++;
        tm_seq *s = sc.seqs[i];
        int32_t picked = -1;
        if (tm_sampler_is_checked_argmax(&s->sampler)) {
            picked = e->greedy[row];
            if (s->sampler.n_procs > 0 &&
                !tm_sampler_allows(&s->sampler, picked, s->tokens + s->n_prompt, s->n_tokens - s->n_prompt))
                picked = -1;
        }
        if (picked < 0 && !logits && !(logits = tm_model_logits_host(e->model))) {
            TM_ERRORF("engine: copying the logits to the host failed; request %llu ends",
                      (unsigned long long)s->id);
            finish_abort(e, s);
            continue;
        }
        emit_token(e, s, logits ? logits + (size_t)row * e->n_vocab : NULL, picked);
    }
    return sc.n_seqs;
}

/* ---- the thread ---- */

static int has_work(const tm_engine *e) {
    return tm_sched_n_running(e->sched) + tm_sched_n_waiting(e->sched) > 0;
}

static void publish_stats(tm_engine *e) {
    tm_sched_counters c;
    tm_sched_get_counters(e->sched, &c);
    pthread_mutex_lock(&e->mu);
    tm_engine_stats *st = &e->stats;
    st->n_running = tm_sched_n_running(e->sched);
    st->n_waiting = tm_sched_n_waiting(e->sched);
    st->n_blocks_total = tm_bm_n_total(e->bm);
    st->n_blocks_used = tm_bm_n_used(e->bm);
    st->n_blocks_cached = tm_bm_n_cached(e->bm);
    st->prefix_queries = c.prefix_queries;
    st->prefix_hits = c.prefix_hits;
    st->prompt_tokens = e->n_prompt_computed;
    st->generation_tokens = e->n_generated;
    st->n_preemptions = c.n_preemptions;
    pthread_mutex_unlock(&e->mu);
    /* Once per round with new events; the consumer drains everything on each call. */
    if (e->n_pushed > 0 && e->cfg.on_event) e->cfg.on_event(e->cfg.on_event_arg);
    e->n_pushed = 0;
}

static void *engine_main(void *arg) {
    tm_engine *e = arg;
    pthread_setname_np(pthread_self(), "tm-engine"); /* visible in top -H and /proc */
    for (;;) {
        pthread_mutex_lock(&e->mu);
        while (!e->stopping && !e->inbox_head && e->n_aborts == 0 && !has_work(e))
            pthread_cond_wait(&e->cv, &e->mu); /* idle: sleep, no spin */
        tm_seq *in = e->inbox_head;
        e->inbox_head = e->inbox_tail = NULL;
        /* Swap the abort arrays so callers keep appending while we apply these. */
        uint64_t *ids = e->aborts;
        int n_ids = e->n_aborts, cap = e->cap_aborts;
        e->aborts = e->aborts_work;
        e->cap_aborts = e->cap_aborts_work;
        e->n_aborts = 0;
        e->aborts_work = ids;
        e->cap_aborts_work = cap;
        int stopping = e->stopping;
        pthread_mutex_unlock(&e->mu);

        while (in) {
            tm_seq *next = in->next;
            in->next = in->prev = NULL;
            tm_sched_add(e->sched, in);
            in = next;
        }
        for (int i = 0; i < n_ids; i++) {
            tm_seq *s = tm_sched_find(e->sched, ids[i]);
            if (s) finish_abort(e, s);
        }
        if (stopping) break;
        int ran = has_work(e) ? step(e) : 0;
        publish_stats(e);
        if (ran == 0 && has_work(e)) {
            /* Work that cannot be scheduled should not exist (submit refuses what can
             * never fit); if it does, back off instead of spinning. */
            TM_WARNF("engine: %d waiting requests cannot be scheduled",
                     tm_sched_n_waiting(e->sched));
            pthread_mutex_lock(&e->mu);
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 10 * 1000 * 1000;
            if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
            if (!e->stopping && e->n_aborts == 0) pthread_cond_timedwait(&e->cv, &e->mu, &ts);
            pthread_mutex_unlock(&e->mu);
        }
    }
    /* Shutdown: everything still in flight ends with ABORT. */
    tm_seq *s;
    while ((s = tm_sched_running(e->sched, 0)) || (s = tm_sched_waiting_head(e->sched)))
        finish_abort(e, s);
    publish_stats(e);
    return NULL;
}

/* ---- API ---- */

static size_t longest_piece(const tm_tokenizer *tok, int n_vocab) {
    size_t best = 0;
    for (int32_t id = 0; id < n_vocab; id++) {
        size_t n = 0;
        tm_tokenizer_piece(tok, id, &n);
        best = TM_MAX(best, n);
    }
    return best;
}

int tm_engine_create(tm_model *model, const tm_engine_config *config, tm_engine **out,
                     char *err, size_t err_len) {
    *out = NULL;
    const tm_engine_config *c = config;
    if (c->block_size < 1 || c->max_num_seqs < 1 || c->max_queue < 1 ||
        c->max_num_batched_tokens < c->max_num_seqs)
        return tm_fail(err, err_len, TM_EINVAL,
                       "engine config: need block_size, max_num_seqs, max_queue >= 1 and "
                       "max_num_batched_tokens (%d) >= max_num_seqs (%d)",
                       c->max_num_batched_tokens, c->max_num_seqs);
    if (!tm_kv_dtype_name(c->kv_dtype))
        return tm_fail(err, err_len, TM_EINVAL, "engine config: unknown KV cache dtype %d", (int)c->kv_dtype);
    const int head_dim = tm_model_get_config(model)->head_dim;
    if (c->kv_dtype == TM_KV_INT8 && (head_dim % 4 != 0 || head_dim > TM_KV_INT8_MAX_HEAD_DIM))
        return tm_fail(err, err_len, TM_EUNSUPPORTED,
                       "an int8 KV cache needs head_dim divisible by 4 and at most 1024; this model has %d "
                       "(use --kv-cache-dtype f16)", head_dim);
    size_t per_block = tm_model_kv_bytes_per_block(model, c->block_size, c->kv_dtype);
    if (per_block == 0 || c->kv_cache_bytes / per_block < 1)
        return tm_fail(err, err_len, TM_EINVAL, "KV cache of %zu bytes holds no page of %zu bytes",
                       c->kv_cache_bytes, per_block);
    if (c->kv_cache_bytes / per_block > INT32_MAX / (size_t)c->block_size)
        return tm_fail(err, err_len, TM_ERANGE, "KV cache too large");

    tm_engine *e = calloc(1, sizeof *e);
    if (!e) return tm_fail(err, err_len, TM_ENOMEM, "out of memory");
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    e->model = model;
    e->cfg = *c;
    e->tok = tm_model_tokenizer(model);
    const tm_model_config *mc = tm_model_get_config(model);
    e->n_vocab = mc->n_vocab;
    e->n_ctx = mc->n_ctx_train > 0 ? mc->n_ctx_train : 2048;
    e->max_piece = longest_piece(e->tok, tm_tokenizer_n_vocab(e->tok));
    e->n_blocks = (int)(c->kv_cache_bytes / per_block);
    e->max_blocks = (e->n_ctx + c->block_size - 1) / c->block_size;

    char why[256] = "";
    int rc = tm_model_kv_create(model, e->n_blocks, c->block_size, c->kv_dtype, &e->kv, why, sizeof why);
    if (rc != TM_OK) {
        tm_fail(err, err_len, rc, "KV cache of %d pages: %s", e->n_blocks, why);
        goto fail;
    }
    rc = tm_model_reserve(model, c->max_num_batched_tokens, c->max_num_seqs);
    if (rc != TM_OK) {
        tm_fail(err, err_len, rc, "reserving activations: %s", tm_strerror(rc));
        goto fail;
    }
    tm_sched_config sc = {c->max_num_seqs, c->max_num_batched_tokens};
    if ((rc = tm_bm_create(e->n_blocks, c->block_size, c->enable_prefix_cache, &e->bm)) != TM_OK ||
        (rc = tm_sched_create(&sc, e->bm, &e->sched)) != TM_OK) {
        tm_fail(err, err_len, rc, "block manager / scheduler: %s", tm_strerror(rc));
        goto fail;
    }
    size_t nt = (size_t)c->max_num_batched_tokens, ns = (size_t)c->max_num_seqs;
    e->b_tokens = malloc(nt * sizeof(int32_t));
    e->b_pos = malloc(nt * sizeof(int32_t));
    e->b_slots = malloc(nt * sizeof(int32_t));
    e->b_seq_start = malloc((ns + 1) * sizeof(int32_t));
    e->b_ctx_len = malloc(ns * sizeof(int32_t));
    e->b_block_table = malloc(ns * (size_t)e->max_blocks * sizeof(int32_t));
    e->b_logit_rows = malloc(ns * sizeof(int32_t));
    e->raw = malloc((size_t)e->n_vocab * sizeof(float));
    e->sample_scratch = malloc(tm_sampler_scratch_bytes(e->n_vocab));
    e->greedy = malloc(ns * sizeof(int32_t));
    if (!e->b_tokens || !e->b_pos || !e->b_slots || !e->b_seq_start || !e->b_ctx_len ||
        !e->b_block_table || !e->b_logit_rows || !e->raw || !e->sample_scratch ||
        !e->greedy) {
        rc = tm_fail(err, err_len, TM_ENOMEM, "out of memory for batch buffers");
        goto fail;
    }
    publish_stats(e); /* before the thread exists, so callers see the pool size at once */
    if (pthread_create(&e->thread, NULL, engine_main, e) != 0) {
        rc = tm_fail(err, err_len, TM_ENOMEM, "cannot start the engine thread");
        goto fail;
    }
    e->started = 1;
    *out = e;
    return TM_OK;
fail:
    tm_engine_destroy(e);
    return rc;
}

void tm_engine_destroy(tm_engine *e) {
    if (!e) return;
    if (e->started) {
        pthread_mutex_lock(&e->mu);
        e->stopping = 1;
        pthread_cond_signal(&e->cv);
        pthread_mutex_unlock(&e->mu);
        pthread_join(e->thread, NULL);
    }
    /* Events nobody polled die with the engine. */
    for (int i = 0; i < e->n_events; i++) tm_event_free(&e->events[i]);
    free(e->events);
    free(e->aborts);
    free(e->aborts_work);
    tm_sched_destroy(e->sched);
    tm_bm_destroy(e->bm);
    if (e->kv) tm_model_kv_destroy(e->model, e->kv);
    free(e->b_tokens);
    free(e->b_pos);
    free(e->b_slots);
    free(e->b_seq_start);
    free(e->b_ctx_len);
    free(e->b_block_table);
    free(e->b_logit_rows);
    free(e->raw);
    free(e->sample_scratch);
    free(e->greedy);
    pthread_cond_destroy(&e->cv);
    pthread_mutex_destroy(&e->mu);
    free(e);
}

static int check_request(const tm_engine *e, const tm_request *r, char *err, size_t err_len) {
    if (!r->prompt || r->n_prompt < 1)
        return tm_fail(err, err_len, TM_EINVAL, "the prompt is empty");
    for (int i = 0; i < r->n_prompt; i++)
        if (r->prompt[i] < 0 || r->prompt[i] >= e->n_vocab)
            return tm_fail(err, err_len, TM_EINVAL, "prompt token %d at %d is not in the vocabulary",
                           r->prompt[i], i);
    if (r->max_tokens < 1) return tm_fail(err, err_len, TM_EINVAL, "max_tokens must be >= 1");
    if (r->n_stop < 0 || r->n_stop > TM_MAX_STOP)
        return tm_fail(err, err_len, TM_EINVAL, "at most %d stop strings", TM_MAX_STOP);
    for (int i = 0; i < r->n_stop; i++)
        if (!r->stop[i] || !r->stop[i][0])
            return tm_fail(err, err_len, TM_EINVAL, "stop strings must not be empty");
    if (r->n_stop_ids < 0 || (r->n_stop_ids > 0 && !r->stop_ids))
        return tm_fail(err, err_len, TM_EINVAL, "bad stop token ids");
    if (r->n_processors < 0 || r->n_processors > TM_SAMPLER_MAX_PROCESSORS ||
        (r->n_processors > 0 && !r->processors))
        return tm_fail(err, err_len, TM_EINVAL, "at most %d logit processors", TM_SAMPLER_MAX_PROCESSORS);
    for (int i = 0; i < r->n_processors; i++)
        if (!r->processors[i].apply) return tm_fail(err, err_len, TM_EINVAL, "a logit processor needs apply");
    if (r->top_logprobs < 0 || r->top_logprobs > TM_MAX_TOP_LOGPROBS)
        return tm_fail(err, err_len, TM_EINVAL, "top_logprobs must be in 0..%d", TM_MAX_TOP_LOGPROBS);
    if ((int64_t)r->n_prompt + r->max_tokens > e->n_ctx)
        return tm_fail(err, err_len, TM_ERANGE,
                       "prompt (%d tokens) + max_tokens (%d) exceeds the context of %d tokens",
                       r->n_prompt, r->max_tokens, e->n_ctx);
    int64_t pages = ((int64_t)r->n_prompt + r->max_tokens + e->cfg.block_size - 1) / e->cfg.block_size;
    if (pages > e->n_blocks)
        return tm_fail(err, err_len, TM_ERANGE,
                       "the request needs %lld KV pages but the cache has %d; raise --kv-cache-mem",
                       (long long)pages, e->n_blocks);
    return TM_OK;
}

int tm_engine_submit(tm_engine *e, const tm_request *req, uint64_t *id, char *err,
                     size_t err_len) {
    int rc = check_request(e, req, err, err_len);
    if (rc != TM_OK) return rc;
    tm_seq *s;
    rc = tm_seq_create(req, e->tok, e->max_piece, e->cfg.block_size, &s);
    if (rc != TM_OK) return tm_fail(err, err_len, rc, "cannot queue the request: %s", tm_strerror(rc));
    pthread_mutex_lock(&e->mu);
    /* max_queue bounds the requests that wait beyond what the batch takes. */
    const int cap = e->cfg.max_num_seqs + e->cfg.max_queue;
    if (e->stopping || e->n_inflight >= cap) {
        pthread_mutex_unlock(&e->mu);
        s->sampler.n_procs = 0; /* a failed submit leaves the processors to the caller */
        tm_seq_destroy(s);
        return tm_fail(err, err_len, TM_EBUSY, "the waiting queue is full: %d requests in flight "
                       "(max_num_seqs %d + max_queue %d)", cap, e->cfg.max_num_seqs, e->cfg.max_queue);
    }
    s->id = ++e->next_id;
    s->t_arrival = tm_time_s();
    if (e->inbox_tail) e->inbox_tail->next = s; else e->inbox_head = s;
    e->inbox_tail = s;
    e->n_inflight++;
    if (id) *id = s->id;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    return TM_OK;
}

void tm_engine_abort(tm_engine *e, uint64_t id) {
    pthread_mutex_lock(&e->mu);
    if (e->n_aborts == e->cap_aborts) {
        int cap = e->cap_aborts ? 2 * e->cap_aborts : 64;
        uint64_t *p = realloc(e->aborts, (size_t)cap * sizeof *p);
        if (!p) {
            pthread_mutex_unlock(&e->mu);
            TM_ERRORF("engine: out of memory recording abort of %llu", (unsigned long long)id);
            return;
        }
        e->aborts = p;
        e->cap_aborts = cap;
    }
    e->aborts[e->n_aborts++] = id;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

int tm_engine_poll(tm_engine *e, tm_event *out, int max) {
    pthread_mutex_lock(&e->mu);
    int n = TM_MIN(max, e->n_events);
    if (n > 0) {
        memcpy(out, e->events, (size_t)n * sizeof *out);
        memmove(e->events, e->events + n, (size_t)(e->n_events - n) * sizeof *out);
        e->n_events -= n;
    }
    pthread_mutex_unlock(&e->mu);
    return TM_MAX(n, 0);
}

void tm_engine_get_stats(tm_engine *e, tm_engine_stats *out) {
    pthread_mutex_lock(&e->mu);
    *out = e->stats;
    pthread_mutex_unlock(&e->mu);
}

const tm_model *tm_engine_model(const tm_engine *e) { return e->model; }
int tm_engine_n_ctx(const tm_engine *e) { return e->n_ctx; }
size_t tm_engine_max_piece_bytes(const tm_engine *e) { return e->max_piece; }
