/* sim_smem.cc - shared memory of the CPU harness, and the fault handler.
 *
 * Static __shared__ arrays are statics gathered by shared.ld between tm_sim_shared_begin
 * and _end; dynamic shared memory is one mapping whose last page is PROT_NONE. A launch
 * places its dynamic bytes so that they end at that guard page (the start rounded down to
 * 16 bytes, as the GPU aligns it), so any access past them faults. Both are filled with
 * 0xff bytes (NaN as float and half, -1 as int) before every block, so that a read before
 * a write shows.
 *
 * The SIGSEGV/SIGBUS handler turns a fault inside a kernel's fiber into a refusal that
 * names the thread (the guard page: "beyond the dynamic shared memory"; a fiber's stack
 * guard: stack overflow; anything else: illegal address) and switches to the launching
 * thread; faults elsewhere go to the previous handler (AddressSanitizer's, or the default).
 *
 * Under AddressSanitizer the bytes between the end of the requested size and the guard
 * page (the up to 15 bytes of 16-byte rounding) and the bytes before the start are
 * poisoned, so ASan reports an access there (and aborts the test); without ASan they hold
 * canaries that are checked after every block, which catches writes but not reads. */
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

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
#endif

extern "C" {
__attribute__((visibility("hidden"))) extern char tm_sim_shared_begin[];
__attribute__((visibility("hidden"))) extern char tm_sim_shared_end[];
}

namespace tm_sim {

static const size_t k_max_dyn = (size_t)227 << 10; /* opt-in maximum per block */
static const size_t k_canary = 256;                 /* canary bytes checked before the start */
static const unsigned char k_poison = 0xff;

static char *dyn_base;  /* the mapping: [dyn_base, guard) usable, [guard, guard + page) not */
static char *guard;
static char *dyn;       /* this launch's dynamic shared memory: [dyn, dyn + g.smem) */
static size_t page;

static struct sigaction old_segv, old_bus;

static void chain(int sig, siginfo_t *si, void *uc) {
    struct sigaction *o = sig == SIGSEGV ? &old_segv : &old_bus;
    if (o->sa_flags & SA_SIGINFO) {
        o->sa_sigaction(sig, si, uc);
        return;
    }
    if (o->sa_handler == SIG_IGN) return;
    if (o->sa_handler == SIG_DFL) { /* re-raise with the default action: the fault repeats */
        signal(sig, SIG_DFL);
        return;
    }
    o->sa_handler(sig);
}

/* "reads" or "writes" where the fault context says (x86-64: the page-fault error code;
 * aarch64: the ESR record's WnR bit), else "accesses". */
static const char *fault_access(void *uc) {
#if defined(__x86_64__)
    return ((ucontext_t *)uc)->uc_mcontext.gregs[REG_ERR] & 2 ? "writes" : "reads";
#elif defined(__aarch64__)
    const unsigned char *p = ((ucontext_t *)uc)->uc_mcontext.__reserved;
    const unsigned char *end = p + sizeof(((ucontext_t *)uc)->uc_mcontext.__reserved);
    while (p + 8 <= end) {
        uint32_t magic, size;
        memcpy(&magic, p, 4);
        memcpy(&size, p + 4, 4);
        if (magic == 0 || size < 8) break;
        if (magic == 0x45535201u && size >= 16) { /* ESR_MAGIC: struct esr_context */
            uint64_t esr;
            memcpy(&esr, p + 8, 8);
            return (esr >> 6) & 1 ? "writes" : "reads";
        }
        p += size;
    }
    return "accesses";
#else
    (void)uc;
    return "accesses";
#endif
}

static void on_fault(int sig, siginfo_t *si, void *uc) {
    fiber *f = g.cur;
    if (!f) {
        chain(sig, si, uc);
        return;
    }
    char *a = (char *)si->si_addr;
    const char *access = fault_access(uc);
    if (a >= guard && a < guard + page)
        refuse(cudaErrorIllegalAddress, f,
               "%s byte %zu of dynamic shared memory, beyond the %zu bytes the launch asked for", access,
               (size_t)(a - dyn), g.smem);
    if (in_fiber_stack_guard(f, a))
        refuse(cudaErrorLaunchOutOfResources, f, "stack overflow: the thread used more than its %zu KiB of stack",
               f->stack_bytes >> 10);
    refuse(cudaErrorIllegalAddress, f, "%s address %p (%s)", access, (void *)a, sig == SIGSEGV ? "SIGSEGV" : "SIGBUS");
}

void smem_install_handler() {
    static std::once_flag once;
    std::call_once(once, [] {
        page = (size_t)sysconf(_SC_PAGESIZE);
        size_t n = (k_max_dyn + k_canary + page - 1) / page * page;
        dyn_base = (char *)mmap(nullptr, n + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (dyn_base == MAP_FAILED) {
            fprintf(stderr, "tm_sim: cannot map shared memory\n");
            abort();
        }
        guard = dyn_base + n;
        mprotect(guard, page, PROT_NONE);
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_fault;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGSEGV, &sa, &old_segv);
        sigaction(SIGBUS, &sa, &old_bus);
    });
    /* the handler must not run on a fiber stack that just overflowed */
    static thread_local bool alt;
    if (!alt) {
        stack_t cur;
        if (sigaltstack(nullptr, &cur) == 0 && (cur.ss_flags & SS_DISABLE)) {
            stack_t s;
            s.ss_size = (size_t)64 << 10;
            s.ss_sp = malloc(s.ss_size);
            s.ss_flags = 0;
            if (s.ss_sp) sigaltstack(&s, nullptr);
        }
        alt = true;
    }
}

void smem_begin_launch(size_t smem) {
    dyn = guard - ((smem + 15) & ~(size_t)15);
#if TM_SIM_ASAN
    __asan_unpoison_memory_region(dyn_base, (size_t)(guard - dyn_base));
    __asan_poison_memory_region(dyn_base, (size_t)(dyn - dyn_base));
    __asan_poison_memory_region(dyn + smem, (size_t)(guard - dyn - smem));
#endif
}

void smem_begin_block() {
    memset(tm_sim_shared_begin, k_poison, (size_t)(tm_sim_shared_end - tm_sim_shared_begin));
#if TM_SIM_ASAN
    memset(dyn, k_poison, g.smem);
#else
    char *lo = dyn - k_canary > dyn_base ? dyn - k_canary : dyn_base;
    memset(lo, k_poison, (size_t)(guard - lo));
#endif
}

void smem_end_block() {
#if !TM_SIM_ASAN
    char *lo = dyn - k_canary > dyn_base ? dyn - k_canary : dyn_base;
    for (char *p = lo; p < dyn; p++)
        if ((unsigned char)*p != k_poison) {
            fail_block(cudaErrorIllegalAddress, nullptr,
                       "a thread wrote %zu bytes before the start of dynamic shared memory", (size_t)(dyn - p));
            return;
        }
    for (char *p = dyn + g.smem; p < guard; p++)
        if ((unsigned char)*p != k_poison) {
            fail_block(cudaErrorIllegalAddress, nullptr,
                       "a thread wrote byte %zu of dynamic shared memory, beyond the %zu bytes the launch asked for",
                       (size_t)(p - dyn), g.smem);
            return;
        }
#endif
}

int is_shared_range(const void *p, size_t n) {
    const char *a = (const char *)p;
    if (a >= tm_sim_shared_begin && a + n <= tm_sim_shared_end) return 1;
    return a >= dyn && a + n <= dyn + g.smem;
}

int is_shared(const void *p) { return is_shared_range(p, 1); }

void *tm_sim_dyn_smem() { return dyn; }

} // namespace tm_sim
