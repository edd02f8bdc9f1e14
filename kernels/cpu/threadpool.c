/* threadpool.c - persistent workers for the CPU backend.
 *
 * Protocol. The caller publishes (fn, ctx), sets `pending` to the number of workers and
 * bumps `gen` (release). A worker that sees a new gen (acquire) runs fn and decrements
 * `pending` (acq_rel); the caller runs ith 0 itself, then waits for pending == 0. Both
 * sides spin with a pause instruction for about TM_POOL_SPIN_US before sleeping on a
 * condition variable, so back-to-back runs (~300 per token) never sleep while an idle
 * server burns no CPU.
 *
 * Lost wake-ups are impossible because each side announces that it is about to sleep
 * (`n_sleeping` / `caller_sleeping`, seq_cst) and re-checks its condition under the
 * mutex; the other side publishes (seq_cst), then reads the announcement and, if set,
 * takes the mutex to broadcast. In the seq_cst order one of the two sees the other. */
#define _GNU_SOURCE
#include "kernels/cpu/threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TM_PAUSE() _mm_pause()
#elif defined(__aarch64__)
#define TM_PAUSE() __asm__ __volatile__("yield")
#else
#define TM_PAUSE() ((void)0)
#endif

enum {
    TM_POOL_SPIN_US = 200, /* spin this long before sleeping: covers the gaps between ops */
    TM_CACHE_LINE = 64,
};

typedef struct tm_worker {
    struct tm_threadpool *pool; /* owner */
    pthread_t thread;           /* the worker thread */
    int ith;                    /* 1..n_threads-1 */
} tm_worker;

struct tm_threadpool {
    int n_threads;        /* workers + the caller */
    tm_worker *workers;   /* (n_threads - 1) */
    tm_pool_fn fn;        /* job of the current generation; written before gen is bumped */
    void *ctx;            /* its argument */
    pthread_mutex_t mu;   /* guards sleeping on the two condvars */
    pthread_cond_t wake;  /* workers sleep here waiting for a new gen */
    pthread_cond_t done;  /* the caller sleeps here waiting for pending == 0 */

    /* Each hot counter on its own cache line: workers poll gen while they decrement pending. */
    _Alignas(TM_CACHE_LINE) atomic_uint gen;  /* job generation, bumped once per run */
    _Alignas(TM_CACHE_LINE) atomic_int pending; /* workers that have not finished this gen */
    _Alignas(TM_CACHE_LINE) atomic_int n_sleeping; /* workers asleep (or about to be) on wake */
    atomic_int caller_sleeping;                  /* 1 while the caller sleeps on done */
    atomic_int stop;                             /* set by destroy */
};

static double tm_now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec * 1e-3;
}

/* Step i of a spin-wait: a pause, and every 64 pauses a yield, so that on an
 * oversubscribed machine the threads still owing work for this run get the core. With t0
 * (0.0 at the start) it also reads the clock then, and returns 1 once the wait has spun
 * for TM_POOL_SPIN_US: time to sleep instead. */
static int tm_spin(unsigned i, double *t0) {
    TM_PAUSE();
    if ((i & 63) != 63) return 0;
    sched_yield();
    if (!t0) return 0;
    if (*t0 == 0.0) *t0 = tm_now_us();
    else if (tm_now_us() - *t0 > TM_POOL_SPIN_US) return 1;
    return 0;
}

/* Waits for gen != seen (or stop). Returns the new gen. */
static unsigned tm_worker_wait(tm_threadpool *p, unsigned seen) {
    double t0 = 0.0;
    for (unsigned i = 0;; i++) {
        unsigned g = atomic_load_explicit(&p->gen, memory_order_acquire);
        if (g != seen) return g;
        if (tm_spin(i, &t0)) break;
    }
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add(&p->n_sleeping, 1);
    unsigned g;
    while ((g = atomic_load(&p->gen)) == seen) pthread_cond_wait(&p->wake, &p->mu);
    atomic_fetch_sub(&p->n_sleeping, 1);
    pthread_mutex_unlock(&p->mu);
    return g;
}

static void *tm_worker_main(void *arg) {
    tm_worker *w = arg;
    tm_threadpool *p = w->pool;
    unsigned seen = 0; /* gen at creation; a run may bump it before this thread starts */
    for (;;) {
        seen = tm_worker_wait(p, seen);
        if (atomic_load_explicit(&p->stop, memory_order_acquire)) break;
        p->fn(p->ctx, w->ith, p->n_threads);
        /* seq_cst: pairs with the caller's caller_sleeping store (see top of file). */
        if (atomic_fetch_sub(&p->pending, 1) == 1 &&
            atomic_load(&p->caller_sleeping)) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->mu);
        }
    }
    return NULL;
}

/* Bumps gen so that every worker leaves its wait, waking sleepers if there are any. */
static void tm_pool_publish(tm_threadpool *p) {
    atomic_fetch_add(&p->gen, 1); /* seq_cst: ordered before the n_sleeping read below */
    if (atomic_load(&p->n_sleeping) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->mu);
    }
}

tm_threadpool *tm_threadpool_create(int n_threads) {
    if (n_threads < 1) return NULL;
    tm_threadpool *p = aligned_alloc(TM_CACHE_LINE, (sizeof *p + TM_CACHE_LINE - 1) /
                                                        TM_CACHE_LINE * TM_CACHE_LINE);
    if (!p) return NULL;
    *p = (tm_threadpool){.n_threads = 1};
    atomic_init(&p->gen, 0);
    atomic_init(&p->pending, 0);
    atomic_init(&p->n_sleeping, 0);
    atomic_init(&p->caller_sleeping, 0);
    atomic_init(&p->stop, 0);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    if (n_threads > 1) {
        p->workers = calloc((size_t)n_threads - 1, sizeof *p->workers);
        if (!p->workers) goto error;
        for (int i = 1; i < n_threads; i++) {
            tm_worker *w = &p->workers[i - 1];
            w->pool = p;
            w->ith = i;
            if (pthread_create(&w->thread, NULL, tm_worker_main, w) != 0) goto error;
            p->n_threads = i + 1; /* counts started workers so destroy joins only those */
        }
    }
    return p;
error:
    tm_threadpool_destroy(p);
    return NULL;
}

void tm_threadpool_destroy(tm_threadpool *p) {
    if (!p) return;
    atomic_store(&p->stop, 1);
    tm_pool_publish(p);
    /* A worker asleep before the publish was woken by it; one that checks later sees gen. */
    for (int i = 1; i < p->n_threads; i++) pthread_join(p->workers[i - 1].thread, NULL);
    free(p->workers);
    pthread_cond_destroy(&p->done);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

int tm_threadpool_size(const tm_threadpool *p) { return p->n_threads; }

void tm_threadpool_run(tm_threadpool *p, tm_pool_fn fn, void *ctx) {
    if (p->n_threads == 1) {
        fn(ctx, 0, 1);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    atomic_store_explicit(&p->pending, p->n_threads - 1, memory_order_relaxed);
    tm_pool_publish(p); /* release: fn, ctx and pending are visible to whoever sees gen */
    fn(ctx, 0, p->n_threads);

    double t0 = 0.0;
    for (unsigned i = 0;; i++) {
        if (atomic_load_explicit(&p->pending, memory_order_acquire) == 0) return;
        if (tm_spin(i, &t0)) break;
    }
    /* A long job (a big prefill matmul): stop burning a core the workers may need. */
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->caller_sleeping, 1);
    while (atomic_load(&p->pending) != 0) pthread_cond_wait(&p->done, &p->mu);
    atomic_store(&p->caller_sleeping, 0);
    pthread_mutex_unlock(&p->mu);
}

void tm_pool_barrier_wait(tm_pool_barrier *b, int nth) {
    /* acq_rel / acquire: what each thread wrote before arriving is seen after the wait */
    if (__atomic_add_fetch(&b->arrived, 1, __ATOMIC_ACQ_REL) == nth) return;
    for (unsigned i = 0; __atomic_load_n(&b->arrived, __ATOMIC_ACQUIRE) < nth; i++) tm_spin(i, NULL);
}
