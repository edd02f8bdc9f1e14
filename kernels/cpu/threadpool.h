/* threadpool.h - persistent worker threads of the CPU backend.
 *
 * Workers spin briefly, then sleep on a condition variable, waiting for the next job, so
 * back-to-back ops in a forward pass cost no thread wake-up while an idle server uses no
 * CPU. One job runs at a time; the thread that calls tm_threadpool_run works as ith 0. */
#ifndef TM_CPU_THREADPOOL_H
#define TM_CPU_THREADPOOL_H

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tm_threadpool tm_threadpool;

/* fn runs once per thread with ith in [0, nth). */
typedef void (*tm_pool_fn)(void *ctx, int ith, int nth);

/* n_threads >= 1 (1 = no workers, everything on the caller). NULL on failure. */
tm_threadpool *tm_threadpool_create(int n_threads);
void tm_threadpool_destroy(tm_threadpool *p); /* NULL is a no-op */
int tm_threadpool_size(const tm_threadpool *p);
/* Runs fn on every thread and returns when all have finished. Caller: one thread at a time. */
void tm_threadpool_run(tm_threadpool *p, tm_pool_fn fn, void *ctx);

/* A barrier inside one run: every thread of the run calls fn, so all nth arrive. It
 * costs one counter instead of a second run (a publish and a wake-up) when a job has
 * two phases. Zero it before the run. */
typedef struct tm_pool_barrier {
    int arrived;
} tm_pool_barrier;
/* Returns once nth threads have called it; spins (yielding now and then). */
void tm_pool_barrier_wait(tm_pool_barrier *b, int nth);

#ifdef __cplusplus
}
#endif
#endif
