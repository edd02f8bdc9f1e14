/* sim_fiber.cc - fiber stacks and the context switch of the CPU harness.
 *
 * On x86-64 the switch is a few instructions that save the callee-saved registers and
 * the FP control words on the old stack and restore them from the new one (glibc's
 * swapcontext also saves the signal mask, a system call that made it ~0.5 us per switch).
 * Elsewhere it is ucontext. Under AddressSanitizer every switch is announced with
 * __sanitizer_start/finish_switch_fiber so that ASan knows which stack is live. */
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "sim_internal.h"

#if defined(__SANITIZE_ADDRESS__)
#define TM_SIM_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TM_SIM_ASAN 1
#endif
#endif
#if TM_SIM_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#if TM_SIM_ASM_SWITCH
/* tm_sim_ctx_switch(void **save_sp, void *new_sp): push rbp rbx r12-r15 and MXCSR/x87
 * control word, store rsp in *save_sp, load new_sp, pop the same, return into the new
 * context. */
extern "C" void tm_sim_ctx_switch(void **save_sp, void *new_sp);
asm(R"(
    .text
    .globl tm_sim_ctx_switch
    .hidden tm_sim_ctx_switch
    .type tm_sim_ctx_switch, @function
tm_sim_ctx_switch:
    .cfi_startproc
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .cfi_endproc
    .size tm_sim_ctx_switch, .-tm_sim_ctx_switch
)");
#endif

namespace tm_sim {

/* Per-thread stack: kernels keep small arrays in registers on the GPU, which are stack
 * here; ASan's redzones make frames larger still. Only touched pages cost memory. */
static const size_t k_stack_bytes = (size_t)256 << 10;
static size_t page_bytes() { return (size_t)sysconf(_SC_PAGESIZE); }

fiber *fiber_get(int i) {
    if ((size_t)i < g.fibers.size() && g.fibers[i]) return g.fibers[i];
    if ((size_t)i >= g.fibers.size()) g.fibers.resize((size_t)i + 1, nullptr);
    size_t pg = page_bytes();
    char *m = (char *)mmap(nullptr, k_stack_bytes + pg, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (m == MAP_FAILED) {
        fprintf(stderr, "tm_sim: cannot map a %zu KiB fiber stack\n", k_stack_bytes >> 10);
        abort();
    }
    mprotect(m, pg, PROT_NONE); /* guard: a stack overflow faults instead of corrupting */
    fiber *f = new fiber();
    f->stack_lo = m + pg;
    f->stack_bytes = k_stack_bytes;
    g.fibers[i] = f;
    return f;
}

bool in_fiber_stack_guard(const fiber *f, const void *addr) {
    const char *a = (const char *)addr;
    return f && a < f->stack_lo && a >= f->stack_lo - page_bytes();
}

/* Every fiber runs this: one thread of a block per iteration, parked in between. */
[[noreturn]] static void fiber_loop() {
#if TM_SIM_ASAN
    __sanitizer_finish_switch_fiber(nullptr, nullptr, nullptr);
#endif
    for (;;) {
        g.body(g.body_ctx);
        thread_finished(); /* returns when resumed for a thread of a later block */
    }
}

#if !TM_SIM_ASM_SWITCH
static void fiber_loop_uc() { fiber_loop(); }
#endif

void fiber_prepare(fiber *f) {
    if (f->started && !f->dirty) return;
#if TM_SIM_ASAN
    /* frames abandoned mid-kernel left their redzones poisoned */
    if (f->dirty) __asan_unpoison_memory_region(f->stack_lo, f->stack_bytes);
#endif
#if TM_SIM_ASM_SWITCH
    /* Stacks are 256 KiB apart, so their tops would all map to the same cache sets;
     * start each a different number of cache lines below its top. */
    size_t stagger = (size_t)(((uintptr_t)f->stack_lo / k_stack_bytes) % 61) * 64;
    uintptr_t top = ((uintptr_t)(f->stack_lo + f->stack_bytes - stagger)) & ~(uintptr_t)15;
    uint64_t *sp = (uint64_t *)top;
    *--sp = 0;                          /* fiber_loop's "return address": it never returns */
    *--sp = (uint64_t)(uintptr_t)&fiber_loop; /* popped by ret */
    for (int r = 0; r < 6; r++) *--sp = 0; /* rbp rbx r12-r15 */
    *--sp = 0x037f00001f80ull;          /* MXCSR 0x1f80 (low), x87 control word 0x037f */
    f->c.sp = sp;
#else
    getcontext(&f->c.uc);
    f->c.uc.uc_stack.ss_sp = f->stack_lo;
    f->c.uc.uc_stack.ss_size = f->stack_bytes;
    f->c.uc.uc_link = nullptr;
    makecontext(&f->c.uc, fiber_loop_uc, 0);
#endif
    f->started = true;
    f->dirty = false;
}

void main_stack_bounds() {
#if TM_SIM_ASAN
    pthread_attr_t a;
    void *lo = nullptr;
    size_t n = 0;
    if (pthread_getattr_np(pthread_self(), &a) == 0) {
        pthread_attr_getstack(&a, &lo, &n);
        pthread_attr_destroy(&a);
    }
    g.main_stack_lo = lo;
    g.main_stack_bytes = n;
#endif
}

void transfer(fiber *to, bool forever) {
    fiber *from = g.cur;
    ctx *from_c = from ? &from->c : &g.main;
    g.cur = to;
    if (to) threadIdx = to->tid;
#if TM_SIM_ASAN
    void **fake = forever ? nullptr : (from ? &from->asan_fake : &g.main_asan_fake);
    if (to)
        __sanitizer_start_switch_fiber(fake, to->stack_lo, to->stack_bytes);
    else
        __sanitizer_start_switch_fiber(fake, g.main_stack_lo, g.main_stack_bytes);
#else
    (void)forever;
#endif
#if TM_SIM_ASM_SWITCH
    tm_sim_ctx_switch(&from_c->sp, to ? to->c.sp : g.main.sp);
#else
    swapcontext(&from_c->uc, to ? &to->c.uc : &g.main.uc);
#endif
#if TM_SIM_ASAN
    __sanitizer_finish_switch_fiber(from ? from->asan_fake : g.main_asan_fake, nullptr, nullptr);
#endif
}

} // namespace tm_sim
