// Block manager: page pool, refcounts, prefix cache, LRU eviction.
#include <gtest/gtest.h>

#include <algorithm>
#include <list>
#include <map>
#include <random>
#include <set>
#include <vector>

extern "C" {
#include "common/common.h"
#include "scheduler/block_manager.h"
}

namespace {

const tm_hash128 kNoSalt = {0, 0};

struct Owner {                      // one fake block table
    std::vector<int32_t> pages;     // page ids in order
    std::vector<int32_t> tokens;    // tokens the pages hold
    tm_hash128 salt;                // cache salt key
    std::vector<tm_hash128> keys;   // keys of its registered leading pages
};

// Shadow model of what the pool must look like, checked after every operation.
struct Harness {
    tm_block_manager *bm = nullptr;
    int n_blocks, bs;
    std::map<int, Owner> owners;                // live block tables
    std::set<int32_t> free_unkeyed;             // free pages without a key
    std::list<int32_t> lru;                     // free keyed pages, least recent first
    std::map<int32_t, std::vector<int32_t>> content; // keyed page -> tokens it holds
    int next_owner = 0;

    Harness(int n, int b) : n_blocks(n), bs(b) {
        EXPECT_EQ(tm_bm_create(n, b, 1, &bm), TM_OK);
        for (int p = 0; p < n; p++) free_unkeyed.insert(p);
    }
    ~Harness() { tm_bm_destroy(bm); }

    void check() {
        char err[256] = "";
        ASSERT_EQ(tm_bm_check(bm, err, sizeof err), TM_OK) << err;
        std::vector<int> refs(n_blocks, 0);
        for (auto &o : owners)
            for (int32_t p : o.second.pages) refs[p]++;
        int used = 0;
        for (int p = 0; p < n_blocks; p++) {
            ASSERT_EQ(tm_bm_refcount(bm, p), refs[p]) << "page " << p;
            used += refs[p] > 0;
            bool in_free = free_unkeyed.count(p) ||
                           std::find(lru.begin(), lru.end(), p) != lru.end();
            ASSERT_EQ(in_free, refs[p] == 0) << "page " << p << " both free and used, or neither";
            ASSERT_EQ(tm_bm_is_cached(bm, p) != 0, content.count(p) != 0) << "page " << p;
        }
        ASSERT_EQ(tm_bm_n_used(bm), used);
        ASSERT_EQ(tm_bm_n_free(bm) + tm_bm_n_used(bm), tm_bm_n_total(bm));
        ASSERT_EQ(tm_bm_n_cached(bm), (int)lru.size());
    }

    // Allocates a page and checks the pool chose an empty page first, else the LRU one.
    int32_t alloc() {
        int32_t p = -1;
        if (free_unkeyed.empty() && lru.empty()) {
            EXPECT_EQ(tm_bm_alloc(bm, &p), TM_EBUSY);
            return -1;
        }
        EXPECT_EQ(tm_bm_alloc(bm, &p), TM_OK);
        if (!free_unkeyed.empty()) {
            EXPECT_EQ(free_unkeyed.count(p), 1u) << "a cached page was evicted while empty ones were free";
            free_unkeyed.erase(p);
        } else {
            EXPECT_EQ(p, lru.front()) << "eviction did not take the least recently used page";
            lru.pop_front();
            content.erase(p);
        }
        return p;
    }

    void ref(int32_t p) {
        if (tm_bm_refcount(bm, p) == 0) lru.remove(p); // only keyed pages can be hits
        tm_bm_ref(bm, p);
    }

    void unref(int32_t p) {
        tm_bm_unref(bm, p);
        if (tm_bm_refcount(bm, p) > 0) return;
        if (content.count(p)) lru.push_back(p);
        else free_unkeyed.insert(p);
    }

    // Registers owner's page i (full) and records what it holds.
    void register_page(Owner &o, size_t i) {
        tm_hash128 parent = i > 0 ? o.keys[i - 1] : kNoSalt;
        const int32_t *t = o.tokens.data() + i * bs;
        bool was = tm_bm_is_cached(bm, o.pages[i]);
        tm_hash128 k = tm_bm_register(bm, o.pages[i], parent, o.salt, t);
        o.keys.push_back(k);
        if (!was && tm_bm_is_cached(bm, o.pages[i]))
            content[o.pages[i]] = std::vector<int32_t>(t, t + bs);
    }

    // A new block table for tokens: prefix hits first, then fresh pages. false if the
    // pool ran out (everything taken is released again).
    bool allocate(const std::vector<int32_t> &tokens, tm_hash128 salt, int *n_hit_out) {
        Owner o;
        o.tokens = tokens;
        o.salt = salt;
        int n_pages = (int)(tokens.size() + bs - 1) / bs;
        std::vector<int32_t> hit(n_pages);
        std::vector<tm_hash128> keys(n_pages);
        int n_hit = tm_bm_lookup(bm, tokens.data(), (int)tokens.size(), n_pages, salt,
                                 hit.data(), keys.data());
        *n_hit_out = n_hit;
        for (int i = 0; i < n_hit; i++) {
            // Every hit must hold exactly the tokens asked for.
            EXPECT_TRUE(content.count(hit[i]));
            EXPECT_EQ(content[hit[i]],
                      std::vector<int32_t>(tokens.begin() + i * bs, tokens.begin() + (i + 1) * bs));
            ref(hit[i]);
            o.pages.push_back(hit[i]);
            o.keys.push_back(keys[i]);
        }
        int id = next_owner++;
        owners[id] = o;
        Owner &ow = owners[id];
        for (int i = n_hit; i < n_pages; i++) {
            int32_t p = alloc();
            if (p < 0) {
                release(id);
                return false;
            }
            ow.pages.push_back(p);
            if ((size_t)(i + 1) * bs <= ow.tokens.size()) register_page(ow, i);
        }
        return true;
    }

    void release(int id) {
        Owner &o = owners[id];
        for (int i = (int)o.pages.size() - 1; i >= 0; i--) unref(o.pages[i]);
        owners.erase(id);
    }
};

std::vector<int32_t> make_prompt(std::mt19937 &rng, int family, int len) {
    std::vector<int32_t> t(len);
    for (int i = 0; i < len; i++) t[i] = (int32_t)((family * 7919 + i * 31) % 500); // shared per family
    int diverge = (int)(rng() % (len + 1));
    for (int i = diverge; i < len; i++) t[i] = (int32_t)(rng() % 500);
    return t;
}

TEST(BlockManager, RandomizedOpsKeepInvariants) {
    for (int seed = 1; seed <= 4; seed++) {
        std::mt19937 rng(seed);
        int bs = 1 + seed % 4 * 4; // 1, 5, 9, 13... mixed page sizes
        Harness h(48, bs);
        int hits = 0, evictions = 0, refusals = 0;
        for (int step = 0; step < 3000; step++) {
            int op = (int)(rng() % 10);
            if (op < 4) { // allocate
                int n_hit = 0;
                auto t = make_prompt(rng, (int)(rng() % 4), 1 + (int)(rng() % (6 * bs)));
                tm_hash128 salt = rng() % 5 == 0 ? tm_bm_salt_key("tenant-b") : kNoSalt;
                if (!h.allocate(t, salt, &n_hit)) refusals++;
                hits += n_hit;
            } else if (op < 6 && !h.owners.empty()) { // extend by one page
                auto it = h.owners.begin();
                std::advance(it, rng() % h.owners.size());
                Owner &o = it->second;
                int32_t p = h.alloc();
                if (p >= 0) {
                    // Fill the partial last page, then add a full new page.
                    while (o.tokens.size() < o.pages.size() * (size_t)bs) o.tokens.push_back((int32_t)(rng() % 500));
                    if (o.keys.size() < o.pages.size()) h.register_page(o, o.pages.size() - 1);
                    o.pages.push_back(p);
                    for (int i = 0; i < bs; i++) o.tokens.push_back((int32_t)(rng() % 500));
                    h.register_page(o, o.pages.size() - 1);
                }
            } else if (op < 9 && !h.owners.empty()) { // free
                auto it = h.owners.begin();
                std::advance(it, rng() % h.owners.size());
                h.release(it->first);
            } else { // evict the LRU cached page
                int32_t expect = h.lru.empty() ? -1 : h.lru.front();
                int32_t p = tm_bm_evict_lru(h.bm);
                ASSERT_EQ(p, expect);
                if (p >= 0) {
                    h.lru.pop_front();
                    h.content.erase(p);
                    h.free_unkeyed.insert(p);
                    evictions++;
                }
            }
            h.check();
            if (HasFatalFailure() || HasFailure()) FAIL() << "seed " << seed << " step " << step;
        }
        while (!h.owners.empty()) h.release(h.owners.begin()->first);
        h.check();
        EXPECT_EQ(tm_bm_n_used(h.bm), 0);
        EXPECT_GT(hits, 0) << "the random workload never hit the cache: test is too weak";
        EXPECT_GT(evictions, 0);
        EXPECT_GT(refusals + (int)h.content.size(), 0);
    }
}

TEST(BlockManager, FinishedPromptGivesHitsToNext) {
    Harness h(32, 4);
    std::vector<int32_t> prompt(22);
    for (int i = 0; i < 22; i++) prompt[i] = 100 + i;
    int n_hit = -1;
    ASSERT_TRUE(h.allocate(prompt, kNoSalt, &n_hit));
    EXPECT_EQ(n_hit, 0);
    std::vector<int32_t> first_pages = h.owners.begin()->second.pages;
    h.release(h.owners.begin()->first);
    h.check();
    EXPECT_EQ(tm_bm_n_used(h.bm), 0);
    EXPECT_EQ(tm_bm_n_cached(h.bm), 5); // 5 full pages of 4; the partial one is not cached

    // Same prompt: the 5 full pages hit, and they are the very pages of the first run.
    ASSERT_TRUE(h.allocate(prompt, kNoSalt, &n_hit));
    EXPECT_EQ(n_hit, 5);
    std::vector<int32_t> second_pages = h.owners.begin()->second.pages;
    for (int i = 0; i < 5; i++) EXPECT_EQ(second_pages[i], first_pages[i]);
    h.release(h.owners.begin()->first);

    // A prompt that differs in page 3 hits pages 0..2 only.
    std::vector<int32_t> other = prompt;
    other[13] = 7;
    ASSERT_TRUE(h.allocate(other, kNoSalt, &n_hit));
    EXPECT_EQ(n_hit, 3);
    h.release(h.owners.begin()->first);

    // Another tenant's salt sees nothing.
    ASSERT_TRUE(h.allocate(prompt, tm_bm_salt_key("tenant-b"), &n_hit));
    EXPECT_EQ(n_hit, 0);
    h.release(h.owners.begin()->first);
    h.check();
}

TEST(BlockManager, EvictionTakesLeastRecentlyUsedFirst) {
    const int bs = 4;
    Harness h(12, bs);
    std::vector<int32_t> a(8), b(8), c(8);
    for (int i = 0; i < 8; i++) { a[i] = i; b[i] = 50 + i; c[i] = 90 + i; }
    int n_hit;
    ASSERT_TRUE(h.allocate(a, kNoSalt, &n_hit));
    int ida = h.next_owner - 1;
    ASSERT_TRUE(h.allocate(b, kNoSalt, &n_hit));
    int idb = h.next_owner - 1;
    ASSERT_TRUE(h.allocate(c, kNoSalt, &n_hit));
    int idc = h.next_owner - 1;
    h.release(ida); // released first: least recently used
    h.release(idc);
    h.release(idb);
    h.check();
    ASSERT_EQ(tm_bm_n_cached(h.bm), 6);
    // 6 empty pages go first, then two evictions: both must come from a.
    std::vector<int32_t> &taken = h.owners[-1].pages; // holder of plain allocations
    for (int i = 0; i < 8; i++) {
        int32_t p = h.alloc();
        ASSERT_GE(p, 0);
        taken.push_back(p);
    }
    h.check();
    std::vector<int32_t> pages(2);
    std::vector<tm_hash128> keys(2);
    EXPECT_EQ(tm_bm_lookup(h.bm, a.data(), 8, 2, kNoSalt, pages.data(), keys.data()), 0);
    EXPECT_EQ(tm_bm_lookup(h.bm, b.data(), 8, 2, kNoSalt, pages.data(), keys.data()), 2);
    EXPECT_EQ(tm_bm_lookup(h.bm, c.data(), 8, 2, kNoSalt, pages.data(), keys.data()), 2);
    // A hit refreshes c: after b's pages are taken next, c survives.
    ASSERT_EQ(tm_bm_lookup(h.bm, c.data(), 8, 2, kNoSalt, pages.data(), keys.data()), 2);
    for (int32_t p : pages) h.ref(p);
    for (int i = 1; i >= 0; i--) h.unref(pages[i]);
    for (int i = 0; i < 2; i++) {
        taken.push_back(h.alloc());
        ASSERT_GE(taken.back(), 0);
    }
    EXPECT_EQ(tm_bm_lookup(h.bm, b.data(), 8, 2, kNoSalt, pages.data(), keys.data()), 0);
    EXPECT_EQ(tm_bm_lookup(h.bm, c.data(), 8, 2, kNoSalt, pages.data(), keys.data()), 2);
    h.check();
    int32_t p;
    for (int i = 0; i < 2; i++) {
        taken.push_back(h.alloc());
        ASSERT_GE(taken.back(), 0);
    }
    EXPECT_EQ(tm_bm_alloc(h.bm, &p), TM_EBUSY); // pool exhausted: an error, not a crash
}

TEST(BlockManager, DisabledCacheNeverHits) {
    tm_block_manager *bm;
    ASSERT_EQ(tm_bm_create(8, 4, 0, &bm), TM_OK);
    int32_t toks[8] = {1, 2, 3, 4, 5, 6, 7, 8}, p, pages[2];
    tm_hash128 keys[2];
    ASSERT_EQ(tm_bm_alloc(bm, &p), TM_OK);
    tm_bm_register(bm, p, kNoSalt, kNoSalt, toks);
    tm_bm_unref(bm, p);
    EXPECT_EQ(tm_bm_lookup(bm, toks, 8, 2, kNoSalt, pages, keys), 0);
    EXPECT_EQ(tm_bm_n_cached(bm), 0);
    tm_bm_destroy(bm);
}

TEST(BlockManager, DuplicateContentKeepsOneEntry) {
    tm_block_manager *bm;
    ASSERT_EQ(tm_bm_create(8, 2, 1, &bm), TM_OK);
    int32_t toks[2] = {9, 9}, p, q, pages[1];
    tm_hash128 keys[1];
    ASSERT_EQ(tm_bm_alloc(bm, &p), TM_OK);
    ASSERT_EQ(tm_bm_alloc(bm, &q), TM_OK);
    tm_hash128 kp = tm_bm_register(bm, p, kNoSalt, kNoSalt, toks);
    tm_hash128 kq = tm_bm_register(bm, q, kNoSalt, kNoSalt, toks);
    EXPECT_EQ(kp.lo, kq.lo); // same content, same key for chaining
    EXPECT_TRUE(tm_bm_is_cached(bm, p));
    EXPECT_FALSE(tm_bm_is_cached(bm, q));
    EXPECT_EQ(tm_bm_lookup(bm, toks, 2, 1, kNoSalt, pages, keys), 1);
    EXPECT_EQ(pages[0], p);
    char err[128];
    EXPECT_EQ(tm_bm_check(bm, err, sizeof err), TM_OK) << err;
    tm_bm_unref(bm, p);
    tm_bm_unref(bm, q);
    EXPECT_EQ(tm_bm_n_used(bm), 0);
    tm_bm_destroy(bm);
}

} // namespace
