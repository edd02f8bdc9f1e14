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

#ifdef __cplusplus
}
#endif
#endif
