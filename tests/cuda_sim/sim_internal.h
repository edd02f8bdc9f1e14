/* sim_internal.h - the harness runtime's shared state (tests/cuda_sim). One launch runs at
 * a time (a process-wide mutex), so the running block is one global, g.
 *
 * Execution: a block's threads are fibers with their own stacks. A fiber runs until it
 * waits (a barrier, a warp collective) or exits; it then switches directly to the next
 * fiber of the run queue, or to the launching thread ("main") when the queue is empty.
 * Whoever completes a barrier or collective computes everyone's results and puts the
 * waiters back on the run queue. A fiber that has finished its thread parks in its loop
 * and is resumed for the next block; one abandoned mid-kernel (after a refusal) gets a
 * fresh context. */
#ifndef TM_SIM_INTERNAL_H
#define TM_SIM_INTERNAL_H

#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <vector>

/* TM_SIM_UCONTEXT forces the portable switch (to compare, or to debug the other). */
#if defined(__x86_64__) && !defined(TM_SIM_UCONTEXT)
#define TM_SIM_ASM_SWITCH 1
#else
#include <ucontext.h>
#endif

#include "tm_sim/device.h"
#include "tm_sim/host.h"

namespace tm_sim {

/* A saved execution context. */
struct ctx {
#if TM_SIM_ASM_SWITCH
    void *sp; /* stack pointer with callee-saved registers pushed below it */
#else
    ucontext_t uc;
#endif
};

enum fiber_state { F_READY, F_BARRIER, F_WARP, F_EXITED };

/* A cp.async not yet performed: copies happen when the thread waits for their group. */
struct cp_op {
    void *dst;       /* shared memory */
    const void *src; /* global memory */
    int n_bytes;     /* 4, 8 or 16 */
    int group;       /* commit group; -1 while uncommitted */
};

struct coll;

struct fiber {
    ctx c;                 /* where it continues */
    char *stack_lo;        /* usable stack [stack_lo, stack_lo + stack_bytes), guard page below */
    size_t stack_bytes;    /* usable stack size */
    bool started;          /* has a context (parked in its loop between blocks) */
    bool dirty;            /* abandoned mid-kernel: needs a fresh context (and ASan unpoison) */
    void *asan_fake;       /* AddressSanitizer's fake stack while switched out */
    uint3 tid;             /* threadIdx */
    int linear;            /* x + y*bx + z*bx*by */
    int warp, lane;        /* linear / 32, linear % 32 */
    int state;             /* fiber_state */
    const char *wait_file; /* where it waits (F_BARRIER, F_WARP) */
    int wait_line;
    int bar_result;        /* __syncthreads_count/and/or result, set by the completer */
    coll *waiting_in;      /* F_WARP: the collective */
    std::vector<cp_op> cp; /* pending cp.async */
    int cp_groups;         /* committed groups so far */
};

/* A warp collective that some lanes of its mask are waiting in. */
struct coll {
    bool active;
    int kind, variant;  /* tm_sim_coll_kind; shuffle width, match size, ldmatrix shape */
    unsigned mask;      /* lanes that must arrive */
    unsigned arrived;   /* lanes that have */
    const char *file;   /* call site of the first lane */
    int line;
    int first_lane;     /* the first lane to arrive */
    void *payload[32];  /* each arrived lane's data (on its stack) */
};

struct warp_state {
    unsigned exists;     /* lanes of this warp that exist in the block */
    unsigned live;       /* ... and have not exited */
    int n_active;        /* collectives pending in colls */
    int n_slots;         /* colls[n_slots..] are all inactive (reset when none is pending) */
    coll colls[16];      /* pending collectives (some lanes wait in each) */
};

/* The launch and the block being run. */
struct state {
    /* launch */
    const char *kernel;    /* name as written in TM_LAUNCH */
    dim3 grid, block;
    size_t smem;           /* dynamic shared memory bytes */
    body_fn body;          /* runs one thread */
    void *body_ctx;
    int n_threads, n_warps;
    /* block */
    std::vector<fiber *> fibers; /* pool; [0, n_threads) in use */
    std::vector<warp_state> warps;
    std::vector<int> runq;       /* ring of ready fiber indices */
    int rq_head, rq_n;
    int n_exited;
    int bar_waiting;             /* threads waiting at the barrier */
    int bar_kind, bar_acc;
    const char *bar_file;
    int bar_line;
    int bar_first;               /* linear id of the first waiter */
    fiber *cur;                  /* running fiber, NULL: main */
    ctx main;                    /* the launching thread's context */
    void *main_asan_fake;
    const void *main_stack_lo;   /* its stack, for AddressSanitizer */
    size_t main_stack_bytes;
    bool failed;                 /* a refusal ended the block */
    cudaError_t err;
    char msg[1024];              /* the refusal */
};
/* Never destroyed: parked fibers and pooled stacks live until the process ends (and stay
 * reachable for LeakSanitizer, which checks after static destructors ran). */
extern state &g;

/* ---- sim_fiber.cc ---- */
fiber *fiber_get(int i);                 /* pool slot i (allocating its stack) */
void fiber_prepare(fiber *f);            /* fresh context at the fiber loop if needed */
void transfer(fiber *to, bool forever);  /* from g.cur (or main) to `to` (or main if NULL) */
void main_stack_bounds();                /* record the launching thread's stack */
bool in_fiber_stack_guard(const fiber *f, const void *addr);

/* ---- sim_sched.cc ---- */
void ready(fiber *f);                    /* put on the run queue */
void yield_blocked();                    /* current fiber waits; runs others until it is ready */
void thread_finished();                  /* body returned: exit checks, then run the next */
/* Ends the block: formats "kernel 'k' block (..) thread (..): what", abandons every fiber
 * and returns to main. who: the thread to name (NULL: the current one). */
[[noreturn]] void refuse(cudaError_t code, const fiber *who, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The same from main (the block is over): records the failure only. */
void fail_block(cudaError_t code, const fiber *who, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
const char *thread_name(const fiber *f, char *buf, size_t n); /* "(x,y,z)" */
void set_error(cudaError_t code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
extern const char *const coll_names[TM_SIM_N_COLL_KINDS];

/* ---- sim_api.cc ---- */
size_t func_max_dyn_smem(const void *kernel); /* cudaFuncSetAttribute's value, or 48 KiB */

/* ---- sim_warp.cc ---- */
void coll_check_exit(fiber *f);          /* a lane exits: refuse collectives waiting on it */
void coll_check_barrier(fiber *f, const char *file, int line); /* ... waits at the barrier: same */

/* ---- sim_ptx.cc ---- */
void coll_compute_ptx(coll *c);          /* MMA and ldmatrix results for every lane */
void cp_async_flush(fiber *f, int keep_groups);

/* ---- sim_smem.cc ---- */
void smem_install_handler();
void smem_begin_launch(size_t smem);     /* place the dynamic shared memory below the guard */
void smem_begin_block();                 /* poison static and dynamic shared memory */
void smem_end_block();                   /* check the canaries around dynamic shared memory */
int is_shared_range(const void *p, size_t n);

} // namespace tm_sim

#endif
