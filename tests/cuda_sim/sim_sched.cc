/* sim_sched.cc - launches, the block scheduler, the block barrier and refusals.
 *
 * A launch runs its blocks one after another in blockIdx order (x fastest). Each block
 * starts every thread as a ready fiber; the running fiber continues until it waits or
 * exits, then hands over to the next ready one. A barrier completes when the last thread
 * of the block arrives at the same call site; that thread wakes the others and goes on. */
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "sim_internal.h"

namespace tm_sim {

state &g = *new state();
uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

const char *const coll_names[TM_SIM_N_COLL_KINDS] = {
    "__syncwarp",        "__shfl_sync",       "__shfl_up_sync",    "__shfl_down_sync",  "__shfl_xor_sync",
    "__ballot_sync",     "__any_sync",        "__all_sync",        "__match_any_sync",  "__match_all_sync",
    "__reduce_add_sync", "__reduce_min_sync", "__reduce_max_sync", "__reduce_min_sync", "__reduce_max_sync",
    "__reduce_and_sync", "__reduce_or_sync",  "__reduce_xor_sync", "mma.m16n8k16 (f16)", "mma.m16n8k32 (s8)",
    "ldmatrix"};

static const char *const bar_names[] = {"__syncthreads", "__syncthreads_count", "__syncthreads_and",
                                        "__syncthreads_or"};

const char *thread_name(const fiber *f, char *buf, size_t n) {
    snprintf(buf, n, "(%u,%u,%u)", f->tid.x, f->tid.y, f->tid.z);
    return buf;
}

static fiber *in_kernel(const char *what) {
    if (!g.cur) {
        fprintf(stderr, "tm_sim: %s called outside a kernel launch\n", what);
        abort();
    }
    return g.cur;
}

static void fill_msg(cudaError_t code, const fiber *who, const char *fmt, va_list ap) {
    char what[768], t[48];
    vsnprintf(what, sizeof what, fmt, ap);
    snprintf(g.msg, sizeof g.msg, "kernel '%s' block (%u,%u,%u) thread %s: %s", g.kernel, blockIdx.x, blockIdx.y,
             blockIdx.z, who ? thread_name(who, t, sizeof t) : "-", what);
    g.failed = true;
    g.err = code;
}

void refuse(cudaError_t code, const fiber *who, const char *fmt, ...) {
    fiber *f = in_kernel("a refusal");
    va_list ap;
    va_start(ap, fmt);
    fill_msg(code, who ? who : f, fmt, ap);
    va_end(ap);
    f->dirty = true; /* even if it had exited: its context is inside this call */
    transfer(nullptr, true); /* main abandons the block; this fiber is never resumed */
    __builtin_unreachable();
}

void fail_block(cudaError_t code, const fiber *who, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fill_msg(code, who, fmt, ap);
    va_end(ap);
}

/* ---- run queue ---------------------------------------------------------------------- */

void ready(fiber *f) {
    f->state = F_READY;
    int at = g.rq_head + g.rq_n;
    if (at >= g.n_threads) at -= g.n_threads;
    g.runq[(size_t)at] = f->linear;
    g.rq_n++;
}

static fiber *next_ready() {
    if (g.rq_n == 0) return nullptr;
    int i = g.runq[(size_t)g.rq_head];
    if (++g.rq_head == g.n_threads) g.rq_head = 0;
    g.rq_n--;
    return g.fibers[(size_t)i];
}

void yield_blocked() { transfer(next_ready(), false); }

void thread_finished() {
    fiber *f = g.cur;
    cp_async_flush(f, -1);
    f->state = F_EXITED;
    g.n_exited++;
    g.warps[(size_t)f->warp].live &= ~(1u << f->lane);
    if (g.bar_waiting > 0)
        refuse(cudaErrorLaunchFailure, f,
               "exited while %d other threads wait at %s (%s:%d); every thread of the block must reach a "
               "barrier",
               g.bar_waiting, bar_names[g.bar_kind], g.bar_file, g.bar_line);
    coll_check_exit(f);
    transfer(next_ready(), false); /* parks here until a later block needs this fiber */
}

/* ---- the block barrier ---------------------------------------------------------------- */

static bool same_site(const char *f1, int l1, const char *f2, int l2) {
    return l1 == l2 && (f1 == f2 || strcmp(f1, f2) == 0);
}

int sync_block(int kind, int pred, const char *file, int line) {
    fiber *f = in_kernel(bar_names[kind]);
    if (g.n_exited > 0) {
        for (int i = 0; i < g.n_threads; i++) {
            fiber *e = g.fibers[(size_t)i];
            char t[48];
            if (e->state == F_EXITED)
                refuse(cudaErrorLaunchFailure, f,
                       "waits at %s (%s:%d), which can never complete: thread %s has exited", bar_names[kind], file,
                       line, thread_name(e, t, sizeof t));
        }
    }
    if (g.bar_waiting > 0 && (kind != g.bar_kind || !same_site(file, line, g.bar_file, g.bar_line))) {
        char t[48];
        refuse(cudaErrorLaunchFailure, f,
               "waits at %s (%s:%d) while %d threads (the first %s) wait at %s (%s:%d); all threads of a "
               "block must reach the same barrier",
               bar_names[kind], file, line, g.bar_waiting, thread_name(g.fibers[(size_t)g.bar_first], t, sizeof t),
               bar_names[g.bar_kind], g.bar_file, g.bar_line);
    }
    coll_check_barrier(f, file, line);
    if (g.bar_waiting == 0) {
        g.bar_kind = kind;
        g.bar_file = file;
        g.bar_line = line;
        g.bar_first = f->linear;
        g.bar_acc = kind == TM_SIM_BAR_AND ? 1 : 0;
    }
    if (kind == TM_SIM_BAR_COUNT) g.bar_acc += pred != 0;
    if (kind == TM_SIM_BAR_AND) g.bar_acc &= pred != 0;
    if (kind == TM_SIM_BAR_OR) g.bar_acc |= pred != 0;
    if (++g.bar_waiting == g.n_threads) { /* the last one: release everyone, go on */
        g.bar_waiting = 0;
        for (int i = 0; i < g.n_threads; i++) {
            fiber *w = g.fibers[(size_t)i];
            if (w->state == F_BARRIER) {
                w->bar_result = g.bar_acc;
                ready(w);
            }
        }
        return g.bar_acc;
    }
    f->state = F_BARRIER;
    f->wait_file = file;
    f->wait_line = line;
    yield_blocked();
    return f->bar_result;
}

unsigned active_mask() {
    fiber *f = in_kernel("__activemask");
    return g.warps[(size_t)f->warp].live;
}

void trap(const char *file, int line) {
    in_kernel("__trap");
    refuse(cudaErrorLaunchFailure, nullptr, "__trap() at %s:%d", file, line);
}

/* ---- a block ---------------------------------------------------------------------------- */

/* Called in main when no fiber is ready but some have not finished. The checks at each
 * arrival catch the deadlocks fibers can produce; this names what is left. */
static void report_stall() {
    for (int i = 0; i < g.n_threads; i++) {
        fiber *f = g.fibers[(size_t)i];
        if (f->state == F_BARRIER) {
            fail_block(cudaErrorLaunchFailure, f, "waits at %s (%s:%d) forever (%d of %d threads arrived)",
                           bar_names[g.bar_kind], f->wait_file, f->wait_line, g.bar_waiting, g.n_threads);
            return;
        }
        if (f->state == F_WARP) {
            coll *c = f->waiting_in;
            fail_block(cudaErrorLaunchFailure, f,
                           "waits in %s (%s:%d) forever: mask %#x, lanes arrived %#x", coll_names[c->kind],
                           f->wait_file, f->wait_line, c->mask, c->arrived);
            return;
        }
    }
    fail_block(cudaErrorLaunchFailure, nullptr, "the block stalled");
}

static void run_block(uint3 b) {
    blockIdx = b;
    g.n_exited = 0;
    g.bar_waiting = 0;
    g.rq_head = 0;
    g.rq_n = 0;
    for (int w = 0; w < g.n_warps; w++) {
        warp_state &ws = g.warps[(size_t)w];
        int n = g.n_threads - 32 * w;
        ws.exists = n >= 32 ? 0xffffffffu : (1u << n) - 1;
        ws.live = ws.exists;
        ws.n_active = 0;
        ws.n_slots = 0;
        for (coll &c : ws.colls) c.active = false;
    }
    for (int i = 0; i < g.n_threads; i++) {
        fiber *f = g.fibers[(size_t)i];
        fiber_prepare(f);
        f->linear = i;
        f->tid = uint3{(unsigned)i % g.block.x, (unsigned)i / g.block.x % g.block.y,
                       (unsigned)i / (g.block.x * g.block.y)};
        f->warp = i / 32;
        f->lane = i % 32;
        f->waiting_in = nullptr;
        f->cp.clear();
        f->cp_groups = 0;
        ready(f);
    }
    smem_begin_block();
    transfer(next_ready(), false);
    if (!g.failed && g.n_exited < g.n_threads) report_stall();
    if (g.failed) {
        for (int i = 0; i < g.n_threads; i++)
            if (g.fibers[(size_t)i]->state != F_EXITED) g.fibers[(size_t)i]->dirty = true;
        return;
    }
    smem_end_block();
}

static std::mutex launch_mu;

cudaError_t launch(const char *name, const void *kernel, dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                   body_fn body, void *ctx) {
    (void)stream;
    if (g.cur) {
        fprintf(stderr, "tm_sim: kernel '%s' launched from inside a kernel\n", name);
        abort();
    }
    std::lock_guard<std::mutex> lock(launch_mu);
    unsigned long long n = (unsigned long long)block.x * block.y * block.z;
    if (grid.x == 0 || grid.y == 0 || grid.z == 0 || block.x == 0 || block.y == 0 || block.z == 0 ||
        grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535 || block.x > 1024 || block.y > 1024 ||
        block.z > 64 || n > 1024) {
        set_error(cudaErrorInvalidConfiguration, "kernel '%s': invalid launch configuration grid (%u,%u,%u) block (%u,%u,%u)",
                  name, grid.x, grid.y, grid.z, block.x, block.y, block.z);
        return cudaErrorInvalidConfiguration;
    }
    size_t limit = func_max_dyn_smem(kernel);
    if (smem > limit) {
        set_error(cudaErrorInvalidValue,
                  "kernel '%s': %zu bytes of dynamic shared memory, above the %zu allowed%s", name, smem, limit,
                  limit == (size_t)48 << 10 ? " without cudaFuncSetAttribute(MaxDynamicSharedMemorySize)" : "");
        return cudaErrorInvalidValue;
    }
    smem_install_handler();
    main_stack_bounds();
    g.kernel = name;
    g.grid = grid;
    g.block = block;
    g.smem = smem;
    g.body = body;
    g.body_ctx = ctx;
    g.n_threads = (int)n;
    g.n_warps = (int)((n + 31) / 32);
    g.warps.resize((size_t)g.n_warps);
    g.runq.resize((size_t)n);
    g.failed = false;
    g.cur = nullptr;
    for (int i = 0; i < g.n_threads; i++) fiber_get(i);
    gridDim = grid;
    blockDim = block;
    smem_begin_launch(smem);
    for (unsigned z = 0; z < grid.z && !g.failed; z++)
        for (unsigned y = 0; y < grid.y && !g.failed; y++)
            for (unsigned x = 0; x < grid.x && !g.failed; x++) run_block(uint3{x, y, z});
    if (g.failed) {
        set_error(g.err, "%s", g.msg);
        return g.err;
    }
    return cudaSuccess;
}

} // namespace tm_sim
