/* scheduler.h - the scheduling policy: waiting queue, running set, token budget,
 * sequence cap, chunked prefill and preemption by recompute. It decides which sequences
 * compute how many tokens each step and keeps their block tables filled; it never sees
 * a model. The engine turns a tm_schedule into a tm_batch; tests drive it with a fake
 * runner.
 *
 * A step: tm_sched_schedule -> run the model on the scheduled tokens -> tm_sched_update
 * -> append one sampled token to every entry with sample set -> tm_sched_finish on the
 * sequences that ended. Engine thread only. No allocation after create. */
#ifndef TM_SCHEDULER_H
#define TM_SCHEDULER_H

#include <stdint.h>

#include "scheduler/block_manager.h"
#include "scheduler/sequence.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tm_sched_config {
    int max_num_seqs;           /* cap on the running set (and on entries per step) */
    int max_num_batched_tokens; /* token budget per step (>= max_num_seqs) */
} tm_sched_config;

/* One step's work. Entry i computes tokens [start[i], start[i] + n_new[i]) of seqs[i].
 * Invariants: entries [0, n_decodes) are decodes (n_new 1), the rest prefill chunks;
 * n_seqs <= max_num_seqs; n_tokens = sum(n_new) <= max_num_batched_tokens; every seq
 * has pages for start + n_new tokens; sample[i] iff start + n_new == seq->n_tokens. */
typedef struct tm_schedule {
    int n_seqs;       /* entries */
    int n_decodes;    /* leading entries that are decodes */
    int n_tokens;     /* tokens over all entries */
    int n_preempted;  /* sequences preempted while forming this step */
    tm_seq **seqs;    /* (max_num_seqs) scheduled sequences */
    int32_t *start;   /* (max_num_seqs) first position computed (seq->n_computed) */
    int32_t *n_new;   /* (max_num_seqs) tokens computed this step */
    uint8_t *sample;  /* (max_num_seqs) this step ends at the last token: sample one */
} tm_schedule;

typedef struct tm_scheduler tm_scheduler;

/* bm is borrowed and must outlive the scheduler. TM_EINVAL for a bad config, TM_ENOMEM. */
int tm_sched_create(const tm_sched_config *c, tm_block_manager *bm, tm_scheduler **out);
void tm_sched_destroy(tm_scheduler *s); /* NULL is a no-op; sequences are not freed */

/* Queues seq (status WAITING, no pages) behind the waiting requests of its priority.
 * The scheduler borrows seq until tm_sched_finish. */
void tm_sched_add(tm_scheduler *s, tm_seq *seq);
/* Forms the next step into out (whose arrays the scheduler owns; valid until the next
 * call). Running decodes first, then prefill chunks of running sequences, then new
 * admissions from the waiting queue, all within the budget and the cap. When pages run
 * out the most recently admitted running sequence is preempted (pages freed, requeued
 * at the front; it recomputes later). Returns the number of entries. */
int tm_sched_schedule(tm_scheduler *s, tm_schedule *out);
/* After the model ran out: advances n_computed and registers newly filled pages in the
 * prefix cache. */
void tm_sched_update(tm_scheduler *s, const tm_schedule *out);
/* Removes seq from its queue and frees its pages; status FINISHED. */
void tm_sched_finish(tm_scheduler *s, tm_seq *seq);

int tm_sched_n_running(const tm_scheduler *s);
int tm_sched_n_waiting(const tm_scheduler *s);
/* Running sequence i in admission order, or NULL. */
tm_seq *tm_sched_running(const tm_scheduler *s, int i);
/* The first waiting sequence, or NULL. */
tm_seq *tm_sched_waiting_head(const tm_scheduler *s);
/* A running or waiting sequence with this id, or NULL. */
tm_seq *tm_sched_find(const tm_scheduler *s, uint64_t id);

typedef struct tm_sched_counters {
    uint64_t prefix_queries; /* prompt tokens looked up at admission */
    uint64_t prefix_hits;    /* of those, found in the cache */
    uint64_t n_preemptions;  /* sequences preempted so far */
} tm_sched_counters;
void tm_sched_get_counters(const tm_scheduler *s, tm_sched_counters *out);

#ifdef __cplusplus
}
#endif
#endif
