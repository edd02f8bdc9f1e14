// Thread pool: every ith runs exactly once per run, runs are ordered (a run's effects are
// visible to the next), back-to-back runs and sleeping workers both work, destroy is clean.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

extern "C" {
#include "kernels/cpu/threadpool.h"
}

namespace {

struct Counts {
    std::vector<std::atomic<int>> hits; // (n_threads) times each ith ran in this run
    std::atomic<int> bad_nth{0};        // runs that saw nth != pool size
    int expect_nth = 0;
    explicit Counts(int n) : hits(n) {}
};

void count_fn(void *ctx, int ith, int nth) {
    auto *c = static_cast<Counts *>(ctx);
    if (nth != c->expect_nth || ith < 0 || ith >= nth) {
        c->bad_nth++;
        return;
    }
    c->hits[ith]++;
}

TEST(ThreadPool, CreateRejectsZeroThreads) {
    EXPECT_EQ(tm_threadpool_create(0), nullptr);
    tm_threadpool_destroy(nullptr); // no-op
}

TEST(ThreadPool, EveryIthOncePerRun) {
    for (int n = 1; n <= 4; n++) {
        tm_threadpool *p = tm_threadpool_create(n);
        ASSERT_NE(p, nullptr);
        EXPECT_EQ(tm_threadpool_size(p), n);
        Counts c(n);
        c.expect_nth = n;
        const int runs = 3000;
        for (int r = 0; r < runs; r++) {
            tm_threadpool_run(p, count_fn, &c);
            // Checked after every run: the pool must not return before all ith finished.
            for (int i = 0; i < n; i++) ASSERT_EQ(c.hits[i].load(), r + 1) << "n=" << n << " ith=" << i;
        }
        EXPECT_EQ(c.bad_nth.load(), 0);
        tm_threadpool_destroy(p);
    }
}

// Plain (non-atomic) writes by workers must be visible to the caller after run returns,
// and the caller's writes before run must be visible to the workers.
struct Chain {
    std::vector<long> slot; // (nth) written by ith only
    long round = 0;         // written by the caller between runs
    int errors = 0;         // written by ith 0 only
};

void chain_fn(void *ctx, int ith, int /*nth*/) {
    auto *c = static_cast<Chain *>(ctx);
    if (c->slot[ith] != c->round - 1) {
        if (ith == 0) c->errors++;
        else c->slot[ith] = -1000000; // poison so the caller notices
        return;
    }
    c->slot[ith] = c->round;
}

TEST(ThreadPool, RunsAreOrdered) {
    for (int n = 2; n <= 4; n++) {
        tm_threadpool *p = tm_threadpool_create(n);
        ASSERT_NE(p, nullptr);
        Chain c;
        c.slot.assign(n, -1);
        for (int r = 0; r < 2000; r++) {
            c.round = r;
            tm_threadpool_run(p, chain_fn, &c);
            for (int i = 0; i < n; i++) ASSERT_EQ(c.slot[i], r) << "n=" << n << " ith=" << i;
        }
        EXPECT_EQ(c.errors, 0);
        tm_threadpool_destroy(p);
    }
}

// A barrier inside a run: every thread writes its slot, meets the others, then must see
// every slot of this round (plain writes, ordered by the barrier alone). One thread is
// late in some rounds, so the others really wait.
struct Phases {
    std::vector<long> slot;      // (nth) written by ith only, before the barrier
    std::vector<int> seen_all;   // (nth) written by ith only, after it
    long round = 0;
    tm_pool_barrier barrier = {0};
};

void phases_fn(void *ctx, int ith, int nth) {
    auto *c = static_cast<Phases *>(ctx);
    if (ith == nth - 1 && c->round % 50 == 0) std::this_thread::sleep_for(std::chrono::microseconds(300));
    c->slot[ith] = c->round;
    tm_pool_barrier_wait(&c->barrier, nth);
    int ok = 1;
    for (int i = 0; i < nth; i++) ok &= c->slot[i] == c->round;
    c->seen_all[ith] = ok;
}

TEST(ThreadPool, BarrierInsideARun) {
    for (int n = 1; n <= 4; n++) {
        tm_threadpool *p = tm_threadpool_create(n);
        ASSERT_NE(p, nullptr);
        Phases c;
        c.slot.assign(n, -1);
        c.seen_all.assign(n, 0);
        for (int r = 0; r < 1000; r++) {
            c.round = r;
            c.barrier = {0};
            tm_threadpool_run(p, phases_fn, &c);
            for (int i = 0; i < n; i++) ASSERT_EQ(c.seen_all[i], 1) << "n=" << n << " ith=" << i << " round " << r;
        }
        tm_threadpool_destroy(p);
    }
}

// Jobs longer than the spin window make the caller sleep; pauses between runs make the
// workers sleep. Both paths must still count every ith once.
void slow_fn(void *ctx, int ith, int nth) { // sleeps past the caller's spin window
    auto *c = static_cast<Counts *>(ctx);
    if (ith == nth - 1) std::this_thread::sleep_for(std::chrono::milliseconds(3));
    c->hits[ith]++;
}

TEST(ThreadPool, SleepingWorkersAndCaller) {
    const int n = 3;
    tm_threadpool *p = tm_threadpool_create(n);
    ASSERT_NE(p, nullptr);
    Counts c(n);
    c.expect_nth = n;
    for (int r = 0; r < 20; r++) {
        tm_threadpool_run(p, r % 2 ? slow_fn : count_fn, &c);
        for (int i = 0; i < n; i++) ASSERT_EQ(c.hits[i].load(), r + 1);
        if (r % 5 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(5)); // workers sleep
    }
    tm_threadpool_destroy(p);
}

TEST(ThreadPool, DestroyIdleAndFresh) {
    // Destroy right after create (workers may not have started) and after they fell asleep.
    for (int n = 1; n <= 4; n++) tm_threadpool_destroy(tm_threadpool_create(n));
    tm_threadpool *p = tm_threadpool_create(4);
    ASSERT_NE(p, nullptr);
    Counts c(4);
    c.expect_nth = 4;
    tm_threadpool_run(p, count_fn, &c);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    tm_threadpool_destroy(p);
    for (int i = 0; i < 4; i++) EXPECT_EQ(c.hits[i].load(), 1);
}

// Several pools at once (e.g. two backends) do not interfere.
TEST(ThreadPool, TwoPools) {
    tm_threadpool *a = tm_threadpool_create(2), *b = tm_threadpool_create(3);
    ASSERT_NE(a, nullptr);
    ASSERT_NE(b, nullptr);
    Counts ca(2), cb(3);
    ca.expect_nth = 2;
    cb.expect_nth = 3;
    for (int r = 0; r < 1000; r++) {
        tm_threadpool_run(a, count_fn, &ca);
        tm_threadpool_run(b, count_fn, &cb);
    }
    for (int i = 0; i < 2; i++) EXPECT_EQ(ca.hits[i].load(), 1000);
    for (int i = 0; i < 3; i++) EXPECT_EQ(cb.hits[i].load(), 1000);
    tm_threadpool_destroy(a);
    tm_threadpool_destroy(b);
}

} // namespace
