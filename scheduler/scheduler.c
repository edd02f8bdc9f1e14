/* scheduler.c - waiting queue, running set, budget, chunked prefill, preemption. */
#include "scheduler/scheduler.h"

#include <stdlib.h>
#include <string.h>

#include "common/common.h"

/* Invariants:
 * - running[0..n_running) are the RUNNING sequences in admission order (the last is the
 *   first preemption victim); n_running <= max_num_seqs.
 * - The waiting list (head..tail through seq->prev/next) holds the WAITING sequences,
 *   ordered by priority, FCFS within a priority except that preempted ones go first.
 * - Only RUNNING sequences hold pages. */
struct tm_scheduler {
    tm_sched_config cfg;     /* copied at create */
    tm_block_manager *bm;    /* borrowed page pool */
    int block_size;          /* tokens per page */
    tm_seq **running;        /* (max_num_seqs) running set */
    int n_running;           /* sequences in it */
    tm_seq *head, *tail;     /* waiting list */
    int n_waiting;           /* its length */
    tm_schedule sched;       /* arrays handed out by tm_sched_schedule */
    tm_sched_counters counters; /* prefix-cache and preemption counts */
};

static int blocks_for(const tm_scheduler *s, int n_tokens) {
    return (n_tokens + s->block_size - 1) / s->block_size;
}

int tm_sched_create(const tm_sched_config *c, tm_block_manager *bm, tm_scheduler **out) {
    *out = NULL;
    if (c->max_num_seqs < 1 || c->max_num_batched_tokens < c->max_num_seqs) return TM_EINVAL;
    tm_scheduler *s = calloc(1, sizeof *s);
    if (!s) return TM_ENOMEM;
    s->cfg = *c;
    s->bm = bm;
    s->block_size = tm_bm_block_size(bm);
    size_t n = (size_t)c->max_num_seqs;
    s->running = calloc(n, sizeof *s->running);
    s->sched.seqs = calloc(n, sizeof *s->sched.seqs);
    s->sched.start = calloc(n, sizeof *s->sched.start);
    s->sched.n_new = calloc(n, sizeof *s->sched.n_new);
    s->sched.sample = calloc(n, sizeof *s->sched.sample);
    if (!s->running || !s->sched.seqs || !s->sched.start || !s->sched.n_new || !s->sched.sample) {
        tm_sched_destroy(s);
        return TM_ENOMEM;
    }
    *out = s;
    return TM_OK;
}

void tm_sched_destroy(tm_scheduler *s) {
    if (!s) return;
    free(s->running);
    free(s->sched.seqs);
    free(s->sched.start);
    free(s->sched.n_new);
    free(s->sched.sample);
    free(s);
}

/* ---- waiting list ---- */

static void waiting_insert_before(tm_scheduler *s, tm_seq *seq, tm_seq *at) {
    seq->next = at;
    seq->prev = at ? at->prev : s->tail;
    if (seq->prev) seq->prev->next = seq; else s->head = seq;
    if (at) at->prev = seq; else s->tail = seq;
    s->n_waiting++;
    seq->status = TM_SEQ_WAITING;
}

static void waiting_remove(tm_scheduler *s, tm_seq *seq) {
    if (seq->prev) seq->prev->next = seq->next; else s->head = seq->next;
    if (seq->next) seq->next->prev = seq->prev; else s->tail = seq->prev;
    seq->prev = seq->next = NULL;
    s->n_waiting--;
}

void tm_sched_add(tm_scheduler *s, tm_seq *seq) {
    /* Behind everything of equal or higher priority (lower number). */
    tm_seq *at = s->tail;
    while (at && at->priority > seq->priority) at = at->prev;
    waiting_insert_before(s, seq, at ? at->next : s->head);
}

static void requeue_front(tm_scheduler *s, tm_seq *seq) {
    tm_seq *at = s->head;
    while (at && at->priority < seq->priority) at = at->next;
    waiting_insert_before(s, seq, at);
}

/* ---- pages ---- */

static void free_pages(tm_scheduler *s, tm_seq *seq) {
    /* Last page first: the shared prefix pages become the most recently released and
     * are evicted last. */
    for (int i = seq->n_blocks - 1; i >= 0; i--) tm_bm_unref(s->bm, seq->block_table[i]);
    seq->n_blocks = 0;
    seq->n_hashed = 0;
    seq->n_computed = 0;
}

static void running_remove(tm_scheduler *s, tm_seq *seq) {
    for (int i = 0; i < s->n_running; i++) {
        if (s->running[i] != seq) continue;
        memmove(&s->running[i], &s->running[i + 1],
                (size_t)(s->n_running - i - 1) * sizeof *s->running);
        s->n_running--;
        return;
    }
}

/* Drops seq's entry from the step being formed, if it has one. */
static void unschedule(tm_schedule *sc, tm_seq *seq) {
    for (int i = 0; i < sc->n_seqs; i++) {
        if (sc->seqs[i] != seq) continue;
        sc->n_tokens -= sc->n_new[i];
        if (i < sc->n_decodes) sc->n_decodes--;
        int n_after = sc->n_seqs - i - 1;
        memmove(&sc->seqs[i], &sc->seqs[i + 1], (size_t)n_after * sizeof *sc->seqs);
        memmove(&sc->start[i], &sc->start[i + 1], (size_t)n_after * sizeof *sc->start);
        memmove(&sc->n_new[i], &sc->n_new[i + 1], (size_t)n_after * sizeof *sc->n_new);
        memmove(&sc->sample[i], &sc->sample[i + 1], (size_t)n_after * sizeof *sc->sample);
        sc->n_seqs--;
        return;
    }
}

static void preempt(tm_scheduler *s, tm_seq *seq) {
    unschedule(&s->sched, seq);
    running_remove(s, seq);
    free_pages(s, seq);
    requeue_front(s, seq);
    s->sched.n_preempted++;
    s->counters.n_preemptions++;
}

static int alloc_pages(tm_scheduler *s, tm_seq *seq, int n_tokens) {
    while (seq->n_blocks < blocks_for(s, n_tokens)) {
        int32_t p;
        if (tm_bm_alloc(s->bm, &p) != TM_OK) return TM_EBUSY;
        seq->block_table[seq->n_blocks++] = p;
    }
    return TM_OK;
}

static void add_entry(tm_schedule *sc, tm_seq *seq, int n_new) {
    int i = sc->n_seqs++;
    sc->seqs[i] = seq;
    sc->start[i] = seq->n_computed;
    sc->n_new[i] = n_new;
    sc->sample[i] = seq->n_computed + n_new == seq->n_tokens;
    sc->n_tokens += n_new;
}

/* ---- policy ---- */

/* Gives running seq pages for n_new more tokens, preempting the most recently admitted
 * sequences while pages are short. A prefill chunk first shrinks to the pages there are.
 * Returns the tokens granted (0 if seq itself was preempted). */
static int reserve_running(tm_scheduler *s, tm_seq *seq, int n_new) {
    for (;;) {
        int have = seq->n_blocks * s->block_size - seq->n_computed; /* room in held pages */
        int fits = have + tm_bm_n_free(s->bm) * s->block_size;
        if (fits >= n_new || (n_new > 1 && fits > 0)) {
            n_new = TM_MIN(n_new, fits);
            alloc_pages(s, seq, seq->n_computed + n_new); /* cannot fail: fits */
            return n_new;
        }
        tm_seq *victim = s->running[s->n_running - 1];
        preempt(s, victim);
        if (victim == seq) return 0;
    }
}

static void schedule_running(tm_scheduler *s, tm_schedule *sc, int decodes) {
    for (int i = 0; i < s->n_running; i++) {
        tm_seq *seq = s->running[i];
        int remaining = seq->n_tokens - seq->n_computed;
        if ((remaining == 1) != decodes || remaining < 1) continue;
        int n_new = TM_MIN(remaining, s->cfg.max_num_batched_tokens - sc->n_tokens);
        if (n_new <= 0) continue;
        n_new = reserve_running(s, seq, n_new);
        if (n_new == 0) {
            i--; /* seq left the running set; its successor moved into slot i */
            continue;
        }
        add_entry(sc, seq, n_new);
        if (decodes) sc->n_decodes++;
    }
}

/* Admits the head of the waiting queue if its first chunk fits; returns 1 if it did. */
static int admit_one(tm_scheduler *s, tm_schedule *sc) {
    tm_seq *seq = s->head;
    int bs = s->block_size;
    /* Leave at least one token to compute: its logits give the next token. */
    int max_pages = (seq->n_tokens - 1) / bs;
    int n_hit = tm_bm_lookup(s->bm, seq->tokens, seq->n_tokens, max_pages, seq->salt,
                             seq->block_table, seq->hashes);
    int n_hit_free = 0;
    for (int i = 0; i < n_hit; i++) n_hit_free += tm_bm_refcount(s->bm, seq->block_table[i]) == 0;
    int avail = tm_bm_n_free(s->bm) - n_hit_free; /* pages left after taking the hits */
    int n_new = TM_MIN(seq->n_tokens - n_hit * bs, s->cfg.max_num_batched_tokens - sc->n_tokens);
    n_new = TM_MIN(n_new, avail * bs);
    if (n_new <= 0) return 0;
    if (!seq->admitted_once) {
        s->counters.prefix_queries += (uint64_t)seq->n_prompt;
        s->counters.prefix_hits += (uint64_t)n_hit * bs;
        seq->n_cached = n_hit * bs;
        seq->admitted_once = 1;
    }
    for (int i = 0; i < n_hit; i++) tm_bm_ref(s->bm, seq->block_table[i]);
    seq->n_blocks = n_hit;
    seq->n_hashed = n_hit;
    seq->n_computed = n_hit * bs;
    alloc_pages(s, seq, seq->n_computed + n_new); /* cannot fail: avail */
    waiting_remove(s, seq);
    seq->status = TM_SEQ_RUNNING;
    s->running[s->n_running++] = seq;
    add_entry(sc, seq, n_new);
    return 1;
}

int tm_sched_schedule(tm_scheduler *s, tm_schedule *out) {
    tm_schedule *sc = &s->sched;
    sc->n_seqs = sc->n_decodes = sc->n_tokens = sc->n_preempted = 0;
    schedule_running(s, sc, 1);
    schedule_running(s, sc, 0);
    /* After a preemption the pool is short: admitting more would only thrash. */
    while (sc->n_preempted == 0 && s->head && s->n_running < s->cfg.max_num_seqs &&
           sc->n_tokens < s->cfg.max_num_batched_tokens && admit_one(s, sc)) {
    }
    *out = *sc;
    return sc->n_seqs;
}

void tm_sched_update(tm_scheduler *s, const tm_schedule *out) {
    int bs = s->block_size;
    for (int i = 0; i < out->n_seqs; i++) {
        tm_seq *seq = out->seqs[i];
        seq->n_computed += out->n_new[i];
        while ((seq->n_hashed + 1) * bs <= seq->n_computed) {
            int k = seq->n_hashed;
            tm_hash128 parent = k > 0 ? seq->hashes[k - 1] : (tm_hash128){0, 0};
            seq->hashes[k] = tm_bm_register(s->bm, seq->block_table[k], parent, seq->salt,
                                            seq->tokens + (size_t)k * bs);
            seq->n_hashed++;
        }
    }
}

void tm_sched_finish(tm_scheduler *s, tm_seq *seq) {
    if (seq->status == TM_SEQ_RUNNING) {
        running_remove(s, seq);
        free_pages(s, seq);
    } else if (seq->status == TM_SEQ_WAITING) {
        waiting_remove(s, seq);
    }
    seq->status = TM_SEQ_FINISHED;
}

int tm_sched_n_running(const tm_scheduler *s) { return s->n_running; }
int tm_sched_n_waiting(const tm_scheduler *s) { return s->n_waiting; }
tm_seq *tm_sched_running(const tm_scheduler *s, int i) {
    return i >= 0 && i < s->n_running ? s->running[i] : NULL;
}
tm_seq *tm_sched_waiting_head(const tm_scheduler *s) { return s->head; }

tm_seq *tm_sched_find(const tm_scheduler *s, uint64_t id) {
    for (int i = 0; i < s->n_running; i++)
        if (s->running[i]->id == id) return s->running[i];
    for (tm_seq *q = s->head; q; q = q->next)
        if (q->id == id) return q;
    return NULL;
}

void tm_sched_get_counters(const tm_scheduler *s, tm_sched_counters *out) { *out = s->counters; }
